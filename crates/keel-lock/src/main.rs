//! `keel-lock`: status, lock, unlock and set-max of the fleet's reboot lock.
//! Everything is in the library (`keel_lock::cli`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keel_log::init("keel-lock");
    let cli = keel_lock::cli::Cli::parse();
    let mut out = std::io::stdout().lock();
    match keel_lock::cli::run(&cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-lock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

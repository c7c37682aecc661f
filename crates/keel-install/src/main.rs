//! `keel-install DEVICE --channel C | --image FILE [...]`: parse, set up
//! logging and Ctrl-C, call [`keel_install::install`], print the outcome.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use keel_install::args::{self, UsageError};
use keel_install::{device, place, FileTarget, ProgressPrinter};

fn main() -> ExitCode {
    let opts = match args::parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(UsageError::Help) => {
            print!("{}", args::HELP);
            return ExitCode::SUCCESS;
        }
        Err(UsageError::Bad(m)) => {
            eprintln!("keel-install: {m}");
            return ExitCode::from(2);
        }
    };
    keel_log::init("keel-install");
    let cancel = keel_install::sys::catch_interrupts();
    let tty_in = std::io::stdin().is_terminal();
    let mut printer = ProgressPrinter::new(std::io::stderr().is_terminal());
    let host = device::Real::default();
    let mut placer = place::Real {
        device: opts.device.clone(),
    };
    let mut open = |p: &std::path::Path, k: device::Kind| {
        FileTarget::open(p, k).map(|t| Box::new(t) as Box<dyn keel_install::write::Target>)
    };
    let mut ask = |q: &str| -> Option<String> {
        if !tty_in {
            return None;
        }
        eprint!("{q}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        Some(line)
    };
    let mut progress = |p| printer.print(p);
    let mut say = |s: &str| eprintln!("{s}");
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let fx = keel_install::Effects {
        host: &host,
        open: &mut open,
        placer: &mut placer,
        ask: &mut ask,
        progress: &mut progress,
        say: &mut say,
        cancel,
        workers,
    };
    match keel_install::install(&opts, fx) {
        Ok(r) => {
            let w = &r.written;
            eprintln!(
                "installed {} onto {}: {} written in {:.1} s{}",
                r.what,
                opts.device.display(),
                device::human(w.bytes),
                w.write_secs,
                if opts.verify {
                    format!(", read back and compared in {:.1} s", w.verify_secs)
                } else {
                    String::new()
                }
            );
            if !r.placed.is_empty() {
                eprintln!("{}", r.placed);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keel-install: {e:#}");
            ExitCode::FAILURE
        }
    }
}

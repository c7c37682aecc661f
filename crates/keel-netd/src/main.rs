//! keel-netd: the daemon (no arguments), `status [IFACE]`, `wait-online`,
//! `check [DIR…]`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use keel_netd::args::{self, Args, Cmd};
use keel_netd::{cli, daemon};

fn main() -> ExitCode {
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keel-netd: {e}\nTry 'keel-netd --help'.");
            return ExitCode::from(2);
        }
    };
    if let Cmd::Print(text) = &args.cmd {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    keel_log::init("keel-netd");
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-netd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        Cmd::Daemon => {
            let mut paths = daemon::Paths {
                state_dir: args.state_dir,
                run_dir: args.run_dir,
                hostname_file: args.hostname_file,
                ..Default::default()
            };
            if !args.network_dirs.is_empty() {
                paths.network_dirs = args.network_dirs;
            }
            daemon::run(paths).context("keel-netd daemon")
        }
        Cmd::Status { iface } => {
            print!("{}", cli::status(&args.run_dir, iface.as_deref())?);
            Ok(())
        }
        Cmd::WaitOnline {
            any,
            interfaces,
            timeout,
        } => {
            let specs = interfaces
                .iter()
                .map(|s| cli::parse_spec(s))
                .collect::<Result<Vec<_>, _>>()?;
            cli::wait_online(&args.run_dir, &specs, any, Duration::from_secs(timeout))?;
            Ok(())
        }
        Cmd::Check { dirs } => {
            for d in &dirs {
                anyhow::ensure!(d.is_dir(), "{}: not a directory", d.display());
            }
            let dirs = if !dirs.is_empty() {
                dirs
            } else if !args.network_dirs.is_empty() {
                args.network_dirs
            } else {
                keel_netd::config::load::DEFAULT_DIRS
                    .iter()
                    .map(std::path::PathBuf::from)
                    .collect()
            };
            let report = keel_netd::config::check::check(
                &dirs,
                &keel_netd::config::cond::HostFacts::detect(),
            );
            print!("{}", report.text);
            anyhow::ensure!(report.ok, "some network files are refused (see above)");
            Ok(())
        }
        Cmd::Print(text) => {
            print!("{text}");
            Ok(())
        }
    }
}

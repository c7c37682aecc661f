//! `keel-update`: the update agent's daemon and CLI. Arguments are parsed
//! by hand (a handful of flags; clap would add ~300 KiB to a binary with a
//! 4 MiB budget).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use keel_update::agent::Outcome;
use keel_update::config::Sources;
use keel_update::runtime::{self, Paths};

const HELP: &str = "\
keel-update: signed A/B updates of /usr and the kernel

usage: keel-update [OPTIONS] COMMAND

commands:
  status [--json]          state, versions, progress, last check and error, why no update,
                           reboot strategy and what the reboot waits for
  check [--dry-run]        check the channel now and apply what it offers
  apply PATH [--channel C] apply the newest version of a release tree (offline): a directory,
                           or a bundle (a tar of the tree) as a file or raw on a device
  daemon [--first-check SECONDS]
                           check periodically (keel-update.service)

options (for tests and unusual layouts):
  --disk DEV  --boot-record FILE  --os-release FILE  --keys DIR  --state-dir DIR
  --status-file FILE  --config-root DIR  --esp DIR  --no-esp  --no-bus  --lock FILE
  --read-timeout SECONDS  --save-every-chunk  --reboot-command 'PROG ARGS'
  --wall-command 'PROG ARGS'  --utmp FILE  --machine-id FILE  --lock-retry-max SECONDS
";

enum Cmd {
    Status {
        json: bool,
    },
    Check {
        dry_run: bool,
    },
    Apply {
        path: PathBuf,
        channel: Option<String>,
    },
    Daemon {
        first: Option<Duration>,
    },
}

fn parse(args: Vec<String>) -> Result<(Paths, Cmd), String> {
    let mut p = Paths::default();
    let mut it = args.into_iter();
    let mut cmd: Option<String> = None;
    let mut positional: Vec<String> = Vec::new();
    let (mut json, mut dry_run) = (false, false);
    let mut channel = None;
    let mut first = None;
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--json" => json = true,
            "--dry-run" => dry_run = true,
            "--no-esp" => p.use_esp = false,
            "--no-bus" => p.use_bus = false,
            "--save-every-chunk" => p.save_every = Duration::ZERO,
            "--channel" => channel = Some(val("--channel")?),
            "--disk" => p.disk = Some(val("--disk")?.into()),
            "--boot-record" => p.boot_record = val("--boot-record")?.into(),
            "--os-release" => p.os_release = val("--os-release")?.into(),
            "--keys" => p.keys = val("--keys")?.into(),
            "--state-dir" => p.state_dir = val("--state-dir")?.into(),
            "--status-file" => p.status_file = val("--status-file")?.into(),
            "--esp" => p.esp = Some(val("--esp")?.into()),
            "--lock" => p.lock = val("--lock")?.into(),
            "--reboot-command" => {
                p.reboot_cmd = val("--reboot-command")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            }
            "--wall-command" => {
                p.wall_cmd = val("--wall-command")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            }
            "--utmp" => p.utmp = val("--utmp")?.into(),
            "--machine-id" => p.machine_id = val("--machine-id")?.into(),
            "--lock-retry-max" => {
                let v = val("--lock-retry-max")?;
                let s: u64 = v
                    .parse()
                    .map_err(|_| format!("--lock-retry-max {v:?}: seconds"))?;
                p.lock_retry_max = Duration::from_secs(s.max(1));
            }
            "--config-root" => p.config = Sources::under(&PathBuf::from(val("--config-root")?)),
            "--read-timeout" => {
                let v = val("--read-timeout")?;
                let s: u64 = v
                    .parse()
                    .map_err(|_| format!("--read-timeout {v:?}: seconds"))?;
                p.timeouts.read = Duration::from_secs(s);
            }
            "--first-check" => {
                let v = val("--first-check")?;
                let s: u64 = v
                    .parse()
                    .map_err(|_| format!("--first-check {v:?}: seconds"))?;
                first = Some(Duration::from_secs(s));
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if cmd.is_none() => cmd = Some(s.to_string()),
            s => positional.push(s.to_string()),
        }
    }
    if p.status_file.to_str() == Some(keel_update::status::STATUS_FILE)
        && p.state_dir.to_str() != Some(keel_update::update::StateDir::DEFAULT)
    {
        // A test's state directory gets its own status and markers.
        p.status_file = p.state_dir.join("update.json");
        p.reboot_required = p.state_dir.join("reboot-required");
        p.lock = p.state_dir.join("update.lock");
    }
    let cmd = match cmd.as_deref() {
        Some("status") => Cmd::Status { json },
        Some("check") => Cmd::Check { dry_run },
        Some("apply") => {
            let path = positional
                .pop()
                .ok_or("apply needs a release tree: a directory, a bundle file or a device")?;
            Cmd::Apply {
                path: path.into(),
                channel,
            }
        }
        Some("daemon") => Cmd::Daemon { first },
        Some(c) => return Err(format!("unknown command {c}")),
        None => return Err("a command is needed".into()),
    };
    if !positional.is_empty() {
        return Err(format!("unexpected argument {}", positional[0]));
    }
    Ok((p, cmd))
}

fn main() -> ExitCode {
    let (paths, cmd) = match parse(std::env::args().skip(1).collect()) {
        Ok(x) => x,
        Err(e) if e.is_empty() => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("keel-update: {e}\nTry 'keel-update --help'.");
            return ExitCode::from(2);
        }
    };
    keel_log::init("keel-update");
    let r: anyhow::Result<()> = match cmd {
        Cmd::Status { json } => {
            let s = runtime::status(&paths);
            if json {
                match serde_json::to_string_pretty(&s) {
                    Ok(j) => println!("{j}"),
                    Err(e) => eprintln!("keel-update: {e}"),
                }
            } else {
                print!("{}", s.render());
            }
            Ok(())
        }
        Cmd::Check { dry_run } => runtime::check(&paths, dry_run).map(|o| report(&o)),
        Cmd::Apply { path, channel } => {
            runtime::apply(&paths, &path, channel.as_deref()).map(|o| report(&o))
        }
        Cmd::Daemon { first } => runtime::daemon(&paths, first),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-update: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(o: &Outcome) {
    match o {
        Outcome::Staged(v) | Outcome::AlreadyStaged(v) => {
            println!("{v} is staged: it boots next (reboot to use it)")
        }
        Outcome::NoUpdate => {}
    }
}

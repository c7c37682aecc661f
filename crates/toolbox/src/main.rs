//! `toolbox`: thin CLI over the `toolbox` library.
//!
//! ```text
//! toolbox [--image IMAGE] [--tag TAG] [-c CMD | [--] CMD ARGS…]
//! toolbox [--image IMAGE] [--tag TAG] pull|rm|list
//! ```
//!
//! Arguments are parsed by hand rather than with clap: like CoreOS's script,
//! everything after the first non-option word belongs to the command run in
//! the container (`toolbox ls -l` must not treat `-l` as toolbox's), and
//! `pull`, `rm`, `list` are subcommands only in that first position.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use toolbox::config::{self, Overrides, Settings};
use toolbox::progress::Progress;
use toolbox::run::{RealSpawner, Request};
use toolbox::store::{LockMode, Store};

const USAGE: &str = "usage: toolbox [--image IMAGE] [--tag TAG] [-c CMD | [--] CMD [ARGS...]]
       toolbox [--image IMAGE] [--tag TAG] pull | rm | list

Runs a privileged container from a full distribution image with the host's /
at /media/root. Without a command, starts a shell.

  pull       download and unpack the image again (refused while in use)
  rm         remove the toolbox tree (refused while in use)
  list       show toolbox trees, their images and whether they are in use
  -c CMD     run CMD with /bin/sh -c (toolbox as a login shell over SSH)
  --image    override TOOLBOX_DOCKER_IMAGE (registry name, oci:DIR,
             oci-archive:FILE, docker-archive:FILE)
  --tag      override TOOLBOX_DOCKER_TAG

Config: /usr/share/keel/toolbox, /etc/default/toolbox, ~/.toolboxrc";

#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Run(Request),
    Pull,
    Rm,
    List,
    Help,
}

fn parse_args(args: &[String]) -> Result<(Overrides, Cmd)> {
    let mut o = Overrides::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut value = |flag: &str| -> Result<String> {
            if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                return Ok(v.to_string());
            }
            i += 1;
            args.get(i)
                .cloned()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a {
            "-h" | "--help" => return Ok((o, Cmd::Help)),
            "--" => return Ok((o, Cmd::Run(command(&args[i + 1..])))),
            "-c" => {
                let c = args.get(i + 1).context("-c needs a command")?;
                if args.len() > i + 2 {
                    bail!("-c takes one argument (quote the command)\n{USAGE}");
                }
                return Ok((o, Cmd::Run(Request::ShellCommand(c.clone()))));
            }
            _ if a == "--image" || a.starts_with("--image=") => o.image = Some(value("--image")?),
            _ if a == "--tag" || a.starts_with("--tag=") => o.tag = Some(value("--tag")?),
            "pull" | "rm" | "list" => {
                if args.len() > i + 1 {
                    bail!("{a} takes no arguments (use --image/--tag; `toolbox -- {a} …` runs {a} in the container)");
                }
                let cmd = match a {
                    "pull" => Cmd::Pull,
                    "rm" => Cmd::Rm,
                    _ => Cmd::List,
                };
                return Ok((o, cmd));
            }
            _ if a.starts_with('-') => bail!("unknown option {a}\n{USAGE}"),
            _ => return Ok((o, Cmd::Run(command(&args[i..])))),
        }
        i += 1;
    }
    Ok((o, Cmd::Run(Request::Shell)))
}

fn command(rest: &[String]) -> Request {
    if rest.is_empty() {
        Request::Shell
    } else {
        Request::Command(rest.to_vec())
    }
}

fn invoking_user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "root".into())
}

fn settings(o: &Overrides) -> Result<Settings> {
    let home = std::env::var("HOME").ok();
    let user = invoking_user();
    let layers = config::load_standard(home.as_deref(), Some(&user))?;
    for w in &layers.warnings {
        tracing::warn!("{w}");
    }
    Ok(Settings::from_layers(&layers, o, &user)?)
}

const SUDO: &str = "/usr/bin/sudo";

/// The sudo command line that re-runs toolbox as root, keeping `HOME` (so
/// the user's `~/.toolboxrc` applies, as with CoreOS's `sudo --preserve-env`)
/// and `TERM`; sudo sets `SUDO_USER`, which names the toolbox.
fn sudo_argv(exe: &std::path::Path, args: &[String]) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec![
        SUDO.into(),
        "--preserve-env=HOME,TERM".into(),
        "--".into(),
        exe.into(),
    ];
    v.extend(args.iter().map(Into::into));
    v
}

/// Root is needed for nspawn and for unpacking with owners. A user (for
/// example one whose login shell is toolbox) is re-run through sudo when it
/// is installed, as CoreOS's script did.
fn need_root(what: &str, args: &[String]) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    if std::path::Path::new(SUDO).exists() && std::env::var_os("TOOLBOX_NO_SUDO").is_none() {
        let exe = std::env::current_exe().context("finding the toolbox binary")?;
        let argv = sudo_argv(&exe, args);
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("TOOLBOX_NO_SUDO", "1")
            .exec();
        return Err(err).with_context(|| format!("running {SUDO}"));
    }
    bail!("{what} needs root (systemd-nspawn and unpacking preserve owners); run it with sudo");
}

fn real_main() -> Result<u8> {
    let args: Vec<String> = std::env::args().collect();
    // As a login shell (argv[0] "-toolbox") sshd passes nothing or `-c CMD`,
    // which parse to a shell and a shell command.
    let rest = args.get(1..).unwrap_or_default();
    let (o, cmd) = parse_args(rest)?;
    match cmd {
        Cmd::Help => {
            println!("{USAGE}");
            Ok(0)
        }
        Cmd::List => {
            let s = settings(&o)?;
            let entries = Store::new(&s.directory).list()?;
            println!("{:<40} {:<8} {:<19} SOURCE", "NAME", "STATE", "DIGEST");
            for e in entries {
                let (digest, source) =
                    e.meta
                        .as_ref()
                        .map_or(("-".to_string(), "-".to_string()), |m| {
                            (
                                m.digest.short().to_string(),
                                format!("{} ({})", m.source, m.tag),
                            )
                        });
                let state = if e.in_use { "in use" } else { "idle" };
                println!("{:<40} {:<8} {:<19} {}", e.name, state, digest, source);
            }
            Ok(0)
        }
        Cmd::Rm => {
            need_root("toolbox rm", rest)?;
            let s = settings(&o)?;
            Store::new(&s.directory).remove(&s.name)?;
            eprintln!("removed toolbox {}", s.name);
            Ok(0)
        }
        Cmd::Pull => {
            need_root("toolbox pull", rest)?;
            let s = settings(&o)?;
            let store = Store::new(&s.directory);
            let _lock = store.lock(&s.name, LockMode::Exclusive, false)?;
            let meta = store.pull(&s, &mut Progress::stderr())?;
            eprintln!(
                "pulled {} ({}) from {} into {}",
                s.name,
                meta.digest,
                meta.source,
                store.tree(&s.name).display()
            );
            Ok(0)
        }
        Cmd::Run(req) => {
            need_root("toolbox", rest)?;
            let s = settings(&o)?;
            let code = toolbox::session(
                &s,
                &req,
                &mut RealSpawner,
                &mut Progress::stderr(),
                std::path::Path::new("/"),
            )?;
            Ok(u8::try_from(code).unwrap_or(255))
        }
    }
}

fn main() -> ExitCode {
    keel_log::init("toolbox");
    match real_main() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("toolbox: {e:#}");
            ExitCode::from(125)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<(Overrides, Cmd)> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn sudo_keeps_home_and_arguments() {
        let argv = sudo_argv(
            std::path::Path::new("/usr/bin/toolbox"),
            &["-c".into(), "ls -l".into()],
        );
        let argv: Vec<String> = argv.into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            argv,
            [
                "/usr/bin/sudo",
                "--preserve-env=HOME,TERM",
                "--",
                "/usr/bin/toolbox",
                "-c",
                "ls -l"
            ]
        );
    }

    #[test]
    fn argument_forms() {
        assert_eq!(p(&[]).unwrap().1, Cmd::Run(Request::Shell));
        assert_eq!(
            p(&["ls", "-l"]).unwrap().1,
            Cmd::Run(Request::Command(vec!["ls".into(), "-l".into()]))
        );
        assert_eq!(
            p(&["--", "pull"]).unwrap().1,
            Cmd::Run(Request::Command(vec!["pull".into()]))
        );
        assert_eq!(
            p(&["-c", "echo hi"]).unwrap().1,
            Cmd::Run(Request::ShellCommand("echo hi".into()))
        );
        let (o, c) = p(&["--image", "fedora", "--tag=39", "pull"]).unwrap();
        assert_eq!(
            (o.image.as_deref(), o.tag.as_deref(), c),
            (Some("fedora"), Some("39"), Cmd::Pull)
        );
        assert_eq!(p(&["list"]).unwrap().1, Cmd::List);
        assert_eq!(p(&["rm"]).unwrap().1, Cmd::Rm);
        assert!(p(&["--bogus"])
            .unwrap_err()
            .to_string()
            .starts_with("unknown option --bogus"));
        assert!(p(&["--image"]).is_err());
        assert!(p(&["rm", "x"]).is_err());
        assert!(p(&["-c", "a", "b"]).is_err());
    }
}

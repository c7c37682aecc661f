//! Command-line parsing for the `keel-netd` binary.
//!
//! Hand-written rather than clap: the command line is small and fixed, and
//! clap's share of the static binary (~200 KiB) is what keeps the daemon
//! with its D-Bus API within the 3 MiB budget. Accepts `--opt VALUE` and
//! `--opt=VALUE`; global options may come before or after the subcommand.

use std::ffi::OsString;
use std::path::PathBuf;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `--network-dir` (repeatable); empty: the default directories.
    pub network_dirs: Vec<PathBuf>,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub hostname_file: PathBuf,
    pub cmd: Cmd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Daemon,
    Status {
        iface: Option<String>,
    },
    WaitOnline {
        any: bool,
        interfaces: Vec<String>,
        timeout: u64,
    },
    /// `check [DIR…]`: the offline check of `.network`/`.netdev` files;
    /// empty: the `--network-dir`s, else the default directories.
    Check {
        dirs: Vec<PathBuf>,
    },
    /// Print this text and exit successfully (`--help`, `--version`).
    Print(String),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unknown option '{0}'")]
    UnknownOption(String),
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    #[error("'{0}' needs a value")]
    MissingValue(String),
    #[error("'{0}' takes no value")]
    UnexpectedValue(String),
    #[error("invalid value '{1}' for '{0}': {2}")]
    BadValue(String, String, String),
    #[error("unexpected argument '{0}'")]
    Extra(String),
}

pub const HELP: &str = "\
Keel's network configurator: links, addresses, routes, DHCPv4, DNS

Usage: keel-netd [OPTIONS] [COMMAND]

Commands:
  (none)        run the daemon
  status [IFACE]
                show each link's state, addresses, gateway, DNS and lease
                (asks the daemon over D-Bus, else reads the state files)
  wait-online   wait until the network is online (networkd-wait-online semantics)
  check [DIR]...
                read the .netdev and .network files the daemon would (or
                those in DIR..., lowest priority first) and print, per file,
                whether it is used, what it matches and what it does; exits
                1 when a file is refused. Host conditions are tested on
                this machine.

Options:
      --network-dir DIR   directory with .network and .netdev files, lowest
                          priority first (repeatable; default, merged:
                          /usr/lib/systemd/network, /usr/lib/keel/network,
                          /run/systemd/network, /run/keel/network,
                          /etc/systemd/network, /etc/keel/network)
      --state-dir DIR     where leases are kept [default: /var/lib/keel/netd]
      --run-dir DIR       runtime directory: netd/links/*.json, resolv.conf
                          [default: /run/keel]
      --hostname-file F   the admin's hostname file; a DHCP hostname is applied
                          only when it is absent or empty [default: /etc/hostname]
  -h, --help              print help (also `keel-netd wait-online --help`)
  -V, --version           print version
";

pub const WAIT_ONLINE_HELP: &str = "\
Wait until the network is online (networkd-wait-online semantics): every link
that is managed and RequiredForOnline= (or the -i links) reached its minimum
operational state and is configured.

Usage: keel-netd wait-online [--any] [-i NAME[:STATE]]... [--timeout SECS]

Options:
      --any                    online when any one link is (default: all)
  -i, --interface NAME[:STATE] only these links; STATE one of no-carrier,
                               carrier, degraded, routable (repeatable)
      --timeout SECS           seconds to wait; 0 waits forever [default: 120]
";

/// Parse the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, UsageError> {
    let mut out = Args {
        network_dirs: Vec::new(),
        state_dir: keel_contract::paths::NETD_STATE_DIR.into(),
        run_dir: keel_contract::paths::RUN_DIR.into(),
        hostname_file: "/etc/hostname".into(),
        cmd: Cmd::Daemon,
    };
    let mut sub: Option<String> = None;
    let mut positional: Vec<String> = Vec::new();
    let (mut any, mut interfaces, mut timeout) = (false, Vec::new(), 120u64);
    let mut help = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy().into_owned();
        let is_opt = text.starts_with('-') && text.len() > 1;
        if !is_opt {
            if sub.is_none() {
                match text.as_str() {
                    "status" | "wait-online" | "check" => sub = Some(text),
                    _ => return Err(UsageError::UnknownCommand(text)),
                }
            } else {
                positional.push(text);
            }
            continue;
        }
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(OsString::from(v))),
            _ => (text.clone(), None),
        };
        let mut value = |name: &str| -> Result<OsString, UsageError> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => Err(UsageError::MissingValue(name.to_string())),
            }
        };
        let wait = sub.as_deref() == Some("wait-online");
        match name.as_str() {
            "-h" | "--help" => help = true,
            "-V" | "--version" => {
                out.cmd = Cmd::Print(format!("keel-netd {}\n", env!("CARGO_PKG_VERSION")));
                return Ok(out);
            }
            "--network-dir" => out.network_dirs.push(value(&name)?.into()),
            "--state-dir" => out.state_dir = value(&name)?.into(),
            "--run-dir" => out.run_dir = value(&name)?.into(),
            "--hostname-file" => out.hostname_file = value(&name)?.into(),
            "--any" if wait => {
                if inline.is_some() {
                    return Err(UsageError::UnexpectedValue(name));
                }
                any = true;
            }
            "-i" | "--interface" if wait => {
                interfaces.push(value(&name)?.to_string_lossy().into_owned());
            }
            "--timeout" if wait => {
                let v = value(&name)?.to_string_lossy().into_owned();
                timeout = v.parse().map_err(|e: std::num::ParseIntError| {
                    UsageError::BadValue(name.clone(), v.clone(), e.to_string())
                })?;
            }
            _ => return Err(UsageError::UnknownOption(name)),
        }
    }
    if help {
        out.cmd = Cmd::Print(
            if sub.as_deref() == Some("wait-online") {
                WAIT_ONLINE_HELP
            } else {
                HELP
            }
            .to_string(),
        );
        return Ok(out);
    }
    out.cmd = match sub.as_deref() {
        None => Cmd::Daemon,
        Some("check") => Cmd::Check {
            dirs: positional.into_iter().map(PathBuf::from).collect(),
        },
        Some("status") => {
            if positional.len() > 1 {
                return Err(UsageError::Extra(positional.swap_remove(1)));
            }
            Cmd::Status {
                iface: positional.pop(),
            }
        }
        _ => {
            if let Some(p) = positional.into_iter().next() {
                return Err(UsageError::Extra(p));
            }
            Cmd::WaitOnline {
                any,
                interfaces,
                timeout,
            }
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn daemon_with_global_options() {
        let a = p(&[
            "--network-dir",
            "/a",
            "--network-dir=/b",
            "--state-dir=/s",
            "--run-dir",
            "/r",
            "--hostname-file",
            "/h",
        ])
        .unwrap();
        assert_eq!(a.cmd, Cmd::Daemon);
        assert_eq!(a.network_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(
            (a.state_dir, a.run_dir, a.hostname_file),
            ("/s".into(), "/r".into(), "/h".into())
        );
        let d = p(&[]).unwrap();
        assert_eq!(d.run_dir, PathBuf::from("/run/keel"));
        assert_eq!(d.state_dir, PathBuf::from("/var/lib/keel/netd"));
        assert!(d.network_dirs.is_empty());
    }

    #[test]
    fn subcommands() {
        assert_eq!(p(&["status"]).unwrap().cmd, Cmd::Status { iface: None });
        let a = p(&["status", "eth0", "--run-dir", "/r"]).unwrap();
        assert_eq!(
            a.cmd,
            Cmd::Status {
                iface: Some("eth0".into())
            }
        );
        assert_eq!(a.run_dir, PathBuf::from("/r"));
        assert_eq!(
            p(&["wait-online"]).unwrap().cmd,
            Cmd::WaitOnline {
                any: false,
                interfaces: vec![],
                timeout: 120
            }
        );
        assert_eq!(
            p(&[
                "--run-dir=/r",
                "wait-online",
                "--any",
                "-i",
                "eth0:routable",
                "--interface=eth1",
                "--timeout",
                "0"
            ])
            .unwrap()
            .cmd,
            Cmd::WaitOnline {
                any: true,
                interfaces: vec!["eth0:routable".into(), "eth1".into()],
                timeout: 0
            }
        );
    }

    #[test]
    fn check_takes_directories() {
        assert_eq!(p(&["check"]).unwrap().cmd, Cmd::Check { dirs: vec![] });
        assert_eq!(
            p(&["check", "/a", "/b"]).unwrap().cmd,
            Cmd::Check {
                dirs: vec!["/a".into(), "/b".into()]
            }
        );
    }

    #[test]
    fn help_version_and_errors() {
        assert!(
            matches!(p(&["--help"]).unwrap().cmd, Cmd::Print(h) if h.starts_with("Keel's network configurator"))
        );
        assert!(
            matches!(p(&["wait-online", "-h"]).unwrap().cmd, Cmd::Print(h) if h.contains("--timeout SECS"))
        );
        assert!(matches!(p(&["-V"]).unwrap().cmd, Cmd::Print(v) if v.starts_with("keel-netd ")));
        assert_eq!(
            p(&["frobnicate"]).unwrap_err().to_string(),
            "unknown command 'frobnicate'"
        );
        assert_eq!(
            p(&["--any"]).unwrap_err(),
            UsageError::UnknownOption("--any".into()),
            "--any belongs to wait-online"
        );
        assert_eq!(
            p(&["wait-online", "--timeout", "soon"])
                .unwrap_err()
                .to_string(),
            "invalid value 'soon' for '--timeout': invalid digit found in string"
        );
        assert_eq!(
            p(&["status", "--run-dir"]).unwrap_err().to_string(),
            "'--run-dir' needs a value"
        );
        assert_eq!(
            p(&["status", "a", "b"]).unwrap_err().to_string(),
            "unexpected argument 'b'"
        );
        assert_eq!(
            p(&["wait-online", "--any=yes"]).unwrap_err().to_string(),
            "'--any' takes no value"
        );
    }
}

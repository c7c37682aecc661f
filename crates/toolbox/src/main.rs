//! `toolbox`: thin CLI over the `toolbox` library.
//!
//! ```text
//! toolbox [--image IMAGE] [--tag TAG] [-c CMD | [--] CMD ARGS…]
//! toolbox [--image IMAGE] [--tag TAG] pull|rm|list|config
//! toolbox login [--username USER] [--password-stdin] REGISTRY
//! toolbox logout REGISTRY
//! ```
//!
//! Arguments are parsed by hand rather than with clap: like CoreOS's script,
//! everything after the first non-option word belongs to the command run in
//! the container (`toolbox ls -l` must not treat `-l` as toolbox's), and
//! `pull`, `rm`, `list`, `config`, `login`, `logout` are subcommands only
//! in that first position.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use toolbox::auth::{self, AuthFiles, Found, Secret};
use toolbox::config::{self, Overrides, Settings};
use toolbox::progress::Progress;
use toolbox::run::{RealSpawner, Request};
use toolbox::store::{LockMode, Store};

const USAGE: &str = "usage: toolbox [--image IMAGE] [--tag TAG] [-c CMD | [--] CMD [ARGS...]]
       toolbox [--image IMAGE] [--tag TAG] pull | rm | list | config
       toolbox login [--username USER] [--password-stdin] REGISTRY
       toolbox logout REGISTRY

Runs a privileged container from a full distribution image with the host's /
at /media/root. Without a command, starts a shell.

  pull       download and unpack the image again (refused while in use)
  rm         remove the toolbox tree (refused while in use)
  list       show toolbox trees, their images and whether they are in use
  config     show the effective settings and where each comes from
  login      check a user and password with REGISTRY and save them in the
             containers auth file (password prompted, or --password-stdin)
  logout     remove REGISTRY's entry from that file
  -c CMD     run CMD with /bin/sh -c (toolbox as a login shell over SSH)
  --image    override TOOLBOX_DOCKER_IMAGE (registry name, oci:DIR,
             oci-archive:FILE, docker-archive:FILE)
  --tag      override TOOLBOX_DOCKER_TAG

Config: /usr/share/keel/toolbox, /etc/default/toolbox, ~/.toolboxrc
Credentials: $REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json
(root: /run/containers/0/auth.json), ~/.config/containers/auth.json,
~/.docker/config.json";

#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Run(Request),
    Pull,
    Rm,
    List,
    Config,
    Login {
        registry: String,
        user: Option<String>,
        password_stdin: bool,
    },
    Logout(String),
    Help,
}

fn parse_login(args: &[String]) -> Result<Cmd> {
    let mut user = None;
    let mut password_stdin = false;
    let mut registry = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--password-stdin" => password_stdin = true,
            "-u" | "--username" => {
                i += 1;
                user = Some(args.get(i).cloned().context("--username needs a value")?);
            }
            _ if a.starts_with("--username=") => {
                user = a.strip_prefix("--username=").map(str::to_string);
            }
            "-p" | "--password" => {
                bail!("passwords are not taken as arguments (they show in ps and shell history): use the prompt or --password-stdin")
            }
            _ if a.starts_with('-') => bail!("unknown option {a}\n{USAGE}"),
            _ if registry.is_none() => registry = Some(a.to_string()),
            _ => bail!("login takes one REGISTRY\n{USAGE}"),
        }
        i += 1;
    }
    let registry = registry.with_context(|| format!("login needs a REGISTRY\n{USAGE}"))?;
    Ok(Cmd::Login {
        registry,
        user,
        password_stdin,
    })
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
            "login" => return Ok((o, parse_login(&args[i + 1..])?)),
            "logout" => {
                let [r] = &args[i + 1..] else {
                    bail!("logout takes one REGISTRY\n{USAGE}");
                };
                return Ok((o, Cmd::Logout(r.clone())));
            }
            "pull" | "rm" | "list" | "config" => {
                if args.len() > i + 1 {
                    bail!("{a} takes no arguments (use --image/--tag; `toolbox -- {a} …` runs {a} in the container)");
                }
                let cmd = match a {
                    "pull" => Cmd::Pull,
                    "rm" => Cmd::Rm,
                    "config" => Cmd::Config,
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
    invoking_user_from().0
}

/// The invoking user and the variable it came from.
fn invoking_user_from() -> (String, &'static str) {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (v, *k))
        })
        .unwrap_or_else(|| ("root".into(), "default"))
}

/// `toolbox config`: the effective settings, where each came from, the
/// environment that chose the files, and the credentials a pull would use
/// (where from, never the secret).
fn show_config(o: &Overrides) -> Result<()> {
    let home = std::env::var("HOME").ok();
    let (user, user_var) = invoking_user_from();
    let layers = config::load_standard(home.as_deref(), Some(&user))?;
    let (s, mut rows) = config::report(&layers, o, &user)?;
    rows.push(config::Row::new(
        "invoking user",
        user.clone(),
        format!("environment ({user_var})"),
    ));
    rows.push(config::Row::new(
        "home",
        home.clone().unwrap_or_else(|| "-".into()),
        "environment (HOME): ~/.toolboxrc and the auth files under it",
    ));
    let files = AuthFiles::from_env();
    for (i, f) in files.files.iter().enumerate() {
        let what = if i == 0 {
            "looked at first; `toolbox login` writes here"
        } else {
            "looked at"
        };
        rows.push(config::Row::new(
            "auth file",
            f.display().to_string(),
            what.to_string(),
        ));
    }
    if let toolbox::reference::ImageSource::Registry(r) = &s.image {
        let (value, from) = match files.lookup(&r.host, &r.repository) {
            Ok(Some(f)) => (r.host.clone(), f.to_string()),
            Ok(None) => (r.host.clone(), "none found (anonymous pull)".to_string()),
            Err(e) => (r.host.clone(), format!("error: {e}")),
        };
        rows.push(config::Row::new("credentials", value, from));
    }
    print!(
        "{}",
        config::render_report(&rows, &layers.files, &layers.warnings)
    );
    Ok(())
}

/// Read a password from the terminal without echo.
fn prompt_password(prompt: &str) -> Result<Secret> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    use std::io::{BufRead, Write};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to prompt for the password on (use --password-stdin)")?;
    let old = tcgetattr(&tty).context("reading the terminal settings")?;
    let mut quiet = old.clone();
    quiet.local_modes -= LocalModes::ECHO;
    tcsetattr(&tty, OptionalActions::Flush, &quiet).context("turning off echo")?;
    let mut line = String::new();
    let read = (|| -> std::io::Result<()> {
        let mut w = &tty;
        write!(w, "{prompt}")?;
        w.flush()?;
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        writeln!(w)
    })();
    let restored = tcsetattr(&tty, OptionalActions::Flush, &old);
    read.context("reading the password")?;
    restored.context("restoring the terminal")?;
    Ok(Secret::new(line.trim_end_matches(['\n', '\r'])))
}

fn login(registry: &str, user: Option<String>, password_stdin: bool) -> Result<()> {
    use std::io::{BufRead, Read};
    let key = auth::login_key(registry)?;
    let files = AuthFiles::from_env();
    let path = files.login_file()?.to_path_buf();
    let user = match user {
        Some(u) => u,
        None if password_stdin => bail!("--password-stdin needs --username"),
        None => {
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut u)
                .context("reading the user name")?;
            u.trim().to_string()
        }
    };
    let password = if password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .lock()
            .take(64 * 1024)
            .read_to_string(&mut p)
            .context("reading the password from stdin")?;
        Secret::new(p.trim_end_matches(['\n', '\r']))
    } else {
        prompt_password("Password: ")?
    };
    if password.expose().is_empty() {
        bail!("empty password");
    }
    let (host, repository) = key.split_once('/').unwrap_or((&key, ""));
    let r = toolbox::reference::RegistryRef {
        host: host.to_string(),
        repository: repository.to_string(),
        digest: None,
    };
    let found = Found {
        file: path.clone(),
        key: key.clone(),
        credential: auth::Credential {
            user: Some(user.clone()),
            password: Some(password.clone()),
            identity_token: None,
        },
    };
    let mut reg =
        toolbox::registry::Registry::new(&r).with_credentials(Some(found), files.describe());
    match reg.ping() {
        Ok(()) => {}
        Err(toolbox::registry::RegistryError::Denied { status, .. }) => bail!(
            "{host}: HTTP {status}: the registry refused user {user} (wrong user name or password); nothing saved"
        ),
        Err(e) => return Err(e).with_context(|| format!("logging in to {host}; nothing saved")),
    }
    auth::store(&path, &key, &user, &password)?;
    eprintln!(
        "login succeeded: credentials for {key} saved in {}",
        path.display()
    );
    Ok(())
}

fn logout(registry: &str) -> Result<()> {
    let key = auth::login_key(registry)?;
    let files = AuthFiles::from_env();
    let path = files.login_file()?;
    if auth::remove(path, &key)? {
        eprintln!("removed the credentials for {key} from {}", path.display());
        Ok(())
    } else {
        bail!("{}: no credentials for {key}", path.display())
    }
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
        Cmd::Config => {
            show_config(&o)?;
            Ok(0)
        }
        Cmd::Login {
            registry,
            user,
            password_stdin,
        } => {
            login(&registry, user, password_stdin)?;
            Ok(0)
        }
        Cmd::Logout(registry) => {
            logout(&registry)?;
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
        assert_eq!(p(&["config"]).unwrap().1, Cmd::Config);
        assert_eq!(
            p(&["login", "-u", "a", "--password-stdin", "reg:5000"])
                .unwrap()
                .1,
            Cmd::Login {
                registry: "reg:5000".into(),
                user: Some("a".into()),
                password_stdin: true
            }
        );
        assert!(p(&["login", "-p", "secret", "reg"])
            .unwrap_err()
            .to_string()
            .starts_with("passwords are not taken as arguments"));
        assert!(p(&["login"]).is_err());
        assert_eq!(p(&["logout", "reg"]).unwrap().1, Cmd::Logout("reg".into()));
        assert!(p(&["logout"]).is_err());
        assert!(p(&["--bogus"])
            .unwrap_err()
            .to_string()
            .starts_with("unknown option --bogus"));
        assert!(p(&["--image"]).is_err());
        assert!(p(&["rm", "x"]).is_err());
        assert!(p(&["-c", "a", "b"]).is_err());
    }
}

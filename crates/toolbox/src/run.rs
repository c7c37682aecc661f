//! Running the toolbox: the systemd-nspawn command line (pure, tested) and
//! the spawner that executes it (a trait, so tests record instead).
//!
//! Two sessions at once: nspawn normally takes a BSD lock on the tree and a
//! second nspawn fails with "Directory tree … is currently busy". toolbox
//! sets `SYSTEMD_NSPAWN_LOCK=0` (documented in systemd's
//! ENVIRONMENT-VARIABLES.md) and guards the tree with its own locks instead:
//! every session holds `.NAME.lock` shared, `pull`/`rm` need it exclusive.
//! Each session is its own container (own PID namespace) on the same tree.
//! Under systemd the first session registers with machined as `NAME`,
//! further ones as `NAME-PID`; without systemd (a build host) nothing is
//! registered (`--register=no --keep-unit`).

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::Command;

use crate::config::Settings;

/// systemd-nspawn, from Debian's systemd-container (merged /usr).
pub const NSPAWN: &str = "/usr/bin/systemd-nspawn";

/// What to run inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A login shell (no arguments).
    Shell,
    /// `toolbox CMD ARGS…`.
    Command(Vec<String>),
    /// `toolbox -c "CMD"` (toolbox as a login shell for SSH).
    ShellCommand(String),
}

/// How to register the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// With machined, under this name.
    Machined(String),
    /// Not registered (no systemd running).
    None(String),
}

/// A planned process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Program.
    pub program: OsString,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(OsString, OsString)>,
}

impl Plan {
    /// For messages: the command line.
    pub fn display(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// Whether systemd runs as PID 1 with machined reachable: `sd_booted()`'s
/// test, the machined binary, and the D-Bus system bus nspawn registers
/// through (without it, registration would fail the session).
pub fn machined_available(root: &Path) -> bool {
    root.join("run/systemd/system").is_dir()
        && (root.join("usr/lib/systemd/systemd-machined").exists()
            || root.join("lib/systemd/systemd-machined").exists())
        && root.join("run/dbus/system_bus_socket").exists()
}

/// Directories nspawn mounts over inside the tree: its API file systems and
/// the bind destinations whose source is a directory. toolbox creates them
/// before starting a session, because two first sessions starting at once
/// race in nspawn's own mkdir ("Failed to create mount point …: File exists").
pub fn mount_points(s: &Settings) -> Vec<String> {
    let mut out: Vec<String> = ["dev", "proc", "sys", "run", "tmp"]
        .iter()
        .map(|d| d.to_string())
        .collect();
    for b in &s.binds {
        let spec = b.spec.trim_start_matches('+');
        // nspawn escapes ':' as "\:"; such specs are left to nspawn.
        if spec.contains('\\') {
            continue;
        }
        let mut parts = spec.split(':');
        let src = parts.next().unwrap_or("");
        let dst = parts.next().filter(|d| !d.is_empty()).unwrap_or(src);
        if Path::new(src).is_dir() && dst.starts_with('/') && !dst.split('/').any(|c| c == "..") {
            let dst = dst.trim_start_matches('/');
            if !dst.is_empty() {
                out.push(dst.to_string());
            }
        }
    }
    out
}

/// Build the nspawn command line.
pub fn plan(
    s: &Settings,
    tree: &Path,
    reg: &Registration,
    req: &Request,
    interactive: bool,
) -> Plan {
    let mut args: Vec<OsString> = vec!["--quiet".into()];
    let mut dir = OsString::from("--directory=");
    dir.push(tree.as_os_str());
    args.push(dir);
    args.push("--capability=all".into());
    match reg {
        Registration::Machined(m) => args.push(format!("--machine={m}").into()),
        Registration::None(m) => {
            args.push(format!("--machine={m}").into());
            args.push("--register=no".into());
            args.push("--keep-unit".into());
        }
    }
    args.push(format!("--user={}", s.user).into());
    args.push(
        if interactive {
            "--console=interactive"
        } else {
            "--console=pipe"
        }
        .into(),
    );
    // A stub init as PID 1, so Ctrl-C and SIGTERM reach the command.
    args.push("--as-pid2".into());
    for b in &s.binds {
        args.push(b.arg().into());
    }
    for (k, v) in &s.env {
        args.push(format!("--setenv={k}={v}").into());
    }
    match req {
        Request::Shell => {}
        Request::Command(c) => {
            args.push("--".into());
            args.extend(c.iter().map(OsString::from));
        }
        Request::ShellCommand(c) => {
            args.push("--".into());
            args.push("/bin/sh".into());
            args.push("-c".into());
            args.push(c.into());
        }
    }
    Plan {
        // Absolute: toolbox runs as root, so no PATH lookup.
        program: NSPAWN.into(),
        args,
        env: vec![("SYSTEMD_NSPAWN_LOCK".into(), "0".into())],
    }
}

/// Runs a plan and returns the exit status to pass on.
pub trait Spawner {
    /// Run to completion.
    fn run(&mut self, plan: &Plan) -> io::Result<i32>;
}

/// Really runs the process.
#[derive(Debug, Default)]
pub struct RealSpawner;

impl Spawner for RealSpawner {
    fn run(&mut self, plan: &Plan) -> io::Result<i32> {
        let mut child = Command::new(&plan.program)
            .args(&plan.args)
            .envs(plan.env.iter().map(|(k, v)| (k, v)))
            .spawn()?;
        // After the spawn, so nspawn keeps default dispositions: toolbox
        // itself must outlive its session (it holds the in-use lock), so it
        // ignores the terminal's SIGINT/SIGQUIT like system(3) does.
        for sig in [
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGQUIT,
        ] {
            // SAFETY: SIG_IGN installs no handler code; nothing else in this
            // process relies on these signals' dispositions.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
        }
        let status = child.wait()?;
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layers, Overrides};

    fn settings() -> Settings {
        let mut l = Layers::new(None, None);
        l.add_text("rc", "TOOLBOX_ENV='A=1'\nTOOLBOX_USER=core\n")
            .unwrap();
        Settings::from_layers(&l, &Overrides::default(), "root").unwrap()
    }

    #[test]
    fn plans_match_golden() {
        let s = settings();
        let p = plan(
            &s,
            Path::new("/var/lib/toolbox/t"),
            &Registration::None("t".into()),
            &Request::Command(vec!["cat".into(), "/media/root/etc/os-release".into()]),
            false,
        );
        assert_eq!(
            p.display(),
            "/usr/bin/systemd-nspawn --quiet --directory=/var/lib/toolbox/t --capability=all --machine=t --register=no --keep-unit --user=core --console=pipe --as-pid2 --bind=/:/media/root --bind=/usr:/media/root/usr --bind=/run:/media/root/run --setenv=A=1 -- cat /media/root/etc/os-release"
        );
        assert_eq!(p.env, vec![("SYSTEMD_NSPAWN_LOCK".into(), "0".into())]);
        let p = plan(
            &s,
            Path::new("/t"),
            &Registration::Machined("t".into()),
            &Request::ShellCommand("ls -l".into()),
            true,
        );
        assert!(p.display().ends_with("--machine=t --user=core --console=interactive --as-pid2 --bind=/:/media/root --bind=/usr:/media/root/usr --bind=/run:/media/root/run --setenv=A=1 -- /bin/sh -c ls -l"));
        assert_eq!(p.args.last().unwrap(), "ls -l");
        let p = plan(
            &s,
            Path::new("/t"),
            &Registration::Machined("t".into()),
            &Request::Shell,
            true,
        );
        assert!(p.display().ends_with("--setenv=A=1"));
    }

    #[test]
    fn mount_points_cover_binds() {
        let mut l = Layers::new(None, None);
        l.add_text(
            "rc",
            "TOOLBOX_BIND='--bind=/:/media/root --bind-ro=/usr --bind=/nonexistent-src:/x --bind=/etc:/../y'\n",
        )
        .unwrap();
        let s = Settings::from_layers(&l, &Overrides::default(), "root").unwrap();
        assert_eq!(
            mount_points(&s),
            vec!["dev", "proc", "sys", "run", "tmp", "media/root", "usr"]
        );
    }

    #[test]
    fn machined_detection() {
        let t = tempfile::tempdir().unwrap();
        assert!(!machined_available(t.path()));
        std::fs::create_dir_all(t.path().join("run/systemd/system")).unwrap();
        assert!(!machined_available(t.path()));
        std::fs::create_dir_all(t.path().join("usr/lib/systemd")).unwrap();
        std::fs::write(t.path().join("usr/lib/systemd/systemd-machined"), b"").unwrap();
        assert!(!machined_available(t.path()));
        std::fs::create_dir_all(t.path().join("run/dbus")).unwrap();
        std::fs::write(t.path().join("run/dbus/system_bus_socket"), b"").unwrap();
        assert!(machined_available(t.path()));
    }

    /// A recording spawner, as the CLI layer's tests use it.
    #[derive(Default)]
    struct Record(Vec<Plan>);
    impl Spawner for Record {
        fn run(&mut self, plan: &Plan) -> io::Result<i32> {
            self.0.push(plan.clone());
            Ok(3)
        }
    }

    #[test]
    fn session_passes_exit_status() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layers::new(None, None);
        l.add_text(
            "rc",
            &format!("TOOLBOX_DIRECTORY={}\nTOOLBOX_NAME=t\n", t.path().display()),
        )
        .unwrap();
        let s = Settings::from_layers(&l, &Overrides::default(), "root").unwrap();
        std::fs::create_dir_all(t.path().join("t/etc")).unwrap();
        let mut rec = Record::default();
        let code = crate::session(
            &s,
            &Request::Command(vec!["false".into()]),
            &mut rec,
            &mut crate::progress::Progress::new(false),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(code, 3);
        assert!(rec.0[0].display().contains("--register=no"));
        // While the session ran, the tree was locked shared; now it is free.
        crate::store::Store::new(t.path()).remove("t").unwrap();
    }
}

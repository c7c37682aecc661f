//! The `keel-lock` command: locksmithctl's commands over the etcd v3 lock
//! (and lock/unlock over FleetLock).
//!
//! Options and environment variables are locksmithctl's, so scripts keep
//! working: `--endpoint`/`--endpoints` (`LOCKSMITHCTL_ENDPOINT`,
//! comma-separated), `--etcd-cafile` / `--etcd-certfile` / `--etcd-keyfile`
//! (`LOCKSMITHCTL_ETCD_CAFILE`, `_CERTFILE`, `_KEYFILE`),
//! `--etcd-username` / `--etcd-password` (`LOCKSMITHCTL_ETCD_USERNAME`,
//! `_PASSWORD`), `--group` (`LOCKSMITHCTL_GROUP`). The default holder id is
//! this host's machine id from `/etc/machine-id`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::etcd::{EtcdConfig, EtcdLock};
use crate::fleetlock::FleetLock;
use crate::semaphore::{LockChange, UnlockChange};
use crate::{acquire_blocking, Acquire, Backoff, RebootLock};

/// Inspect and change the fleet's reboot lock.
#[derive(Debug, Parser)]
#[command(name = "keel-lock", version, about)]
pub struct Cli {
    /// etcd endpoints, comma-separated or repeated (tried in order).
    #[arg(
        long = "endpoints",
        visible_alias = "endpoint",
        env = "LOCKSMITHCTL_ENDPOINT",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        global = true
    )]
    pub endpoints: Vec<String>,
    /// Lock group (default: the fleet-wide lock).
    #[arg(long, env = "LOCKSMITHCTL_GROUP", global = true)]
    pub group: Option<String>,
    /// CA bundle (PEM) that signed etcd's certificate.
    #[arg(long = "etcd-cafile", env = "LOCKSMITHCTL_ETCD_CAFILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(
        long = "etcd-certfile",
        env = "LOCKSMITHCTL_ETCD_CERTFILE",
        global = true
    )]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(
        long = "etcd-keyfile",
        env = "LOCKSMITHCTL_ETCD_KEYFILE",
        global = true
    )]
    pub key_file: Option<PathBuf>,
    /// etcd user name (v3 auth).
    #[arg(
        long = "etcd-username",
        env = "LOCKSMITHCTL_ETCD_USERNAME",
        global = true
    )]
    pub username: Option<String>,
    /// etcd password.
    #[arg(
        long = "etcd-password",
        env = "LOCKSMITHCTL_ETCD_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub password: Option<String>,
    /// Use a FleetLock server at this base URL instead of etcd (lock and unlock only).
    #[arg(long = "fleetlock", global = true)]
    pub fleetlock: Option<String>,
    /// Where this host's machine id is read.
    #[arg(long, default_value = "/etc/machine-id", global = true)]
    pub machine_id_file: PathBuf,
    /// Timeout of one request, in seconds.
    #[arg(long, default_value_t = 5, global = true)]
    pub timeout: u64,
    /// First pause of `lock --wait`, in milliseconds.
    #[arg(long, default_value_t = 500, hide = true, global = true)]
    pub backoff_initial_ms: u64,
    /// Longest pause of `lock --wait`, in milliseconds.
    #[arg(long, default_value_t = 10_000, hide = true, global = true)]
    pub backoff_max_ms: u64,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show the slots and who holds them.
    Status {
        /// Print the stored value as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take a slot for this host (or ID).
    Lock {
        /// Holder id (default: this host's machine id).
        id: Option<String>,
        /// Wait while every slot is taken or etcd is unreachable, retrying with backoff.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (default: wait forever).
        #[arg(long, requires = "wait")]
        wait_timeout: Option<u64>,
    },
    /// Give back the slot of this host (or ID).
    Unlock {
        /// Holder id (default: this host's machine id).
        id: Option<String>,
    },
    /// Set the number of slots.
    SetMax {
        /// New number of slots.
        max: i64,
    },
}

/// Read and check a machine id (32 lowercase hex digits, as machine-id(5)).
pub fn read_machine_id(path: &Path) -> Result<String> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("reading the machine id from {}", path.display()))?;
    let id = s.trim();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{}: not a machine id (32 hex digits): {:?}",
            path.display(),
            id
        );
    }
    Ok(id.to_ascii_lowercase())
}

impl Cli {
    fn etcd_config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: self
                .endpoints
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            group: self.group.clone(),
            timeout: Duration::from_secs(self.timeout.max(1)),
            ..EtcdConfig::default()
        }
    }

    fn holder(&self, id: &Option<String>) -> Result<String> {
        match id {
            Some(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
            _ => read_machine_id(&self.machine_id_file),
        }
    }

    fn etcd(&self, holder: &str) -> Result<EtcdLock> {
        EtcdLock::new(&self.etcd_config(), holder).context("setting up the etcd client")
    }
}

/// Run one command, writing its output to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<()> {
    if let Some(base) = &cli.fleetlock {
        return run_fleetlock(cli, base, out);
    }
    match &cli.cmd {
        Cmd::Status { json } => {
            let l = cli.etcd("")?;
            let r = l.read().context("reading the reboot lock")?;
            let since = l
                .holders_since()
                .context("reading since when the holders hold it")?;
            let s = r
                .value
                .clone()
                .unwrap_or_else(|| crate::semaphore::Semaphore::new(1));
            if *json {
                writeln!(out, "{}", s.to_json())?;
            } else {
                if r.value.is_none() {
                    writeln!(out, "(key {} absent: a fresh lock with one slot)", l.key())?;
                }
                writeln!(out, "Available: {}", s.semaphore)?;
                writeln!(out, "Max: {}", s.max)?;
                if !s.holders.is_empty() {
                    writeln!(out)?;
                    let w = s.holders.iter().map(|h| h.len()).max().unwrap_or(0).max(32);
                    writeln!(out, "{:<w$}  SINCE", "MACHINE ID")?;
                    for h in &s.holders {
                        let when = since.get(h).map(String::as_str).unwrap_or("?");
                        writeln!(out, "{h:<w$}  {when}")?;
                    }
                }
            }
        }
        Cmd::Lock {
            id,
            wait,
            wait_timeout,
        } => {
            let holder = cli.holder(id)?;
            let l = cli.etcd(&holder)?;
            if *wait {
                let backoff = Backoff {
                    initial: Duration::from_millis(cli.backoff_initial_ms.max(1)),
                    max: Duration::from_millis(cli.backoff_max_ms.max(1)),
                };
                let deadline = wait_timeout.map(|s| Instant::now() + Duration::from_secs(s));
                let got = acquire_blocking(&l, &backoff, deadline, &mut std::thread::sleep)
                    .with_context(|| format!("locking {} for {holder}", l.key()))?;
                match got {
                    Acquire::AlreadyHeld => writeln!(out, "{holder} already holds a slot")?,
                    _ => writeln!(out, "locked for {holder}")?,
                }
                return Ok(());
            }
            let (c, s) = l
                .lock_as(&holder)
                .with_context(|| format!("locking {} for {holder}", l.key()))?;
            match c {
                LockChange::Taken => writeln!(out, "locked for {holder}")?,
                LockChange::AlreadyHeld => writeln!(out, "{holder} already holds a slot")?,
                LockChange::Full => bail!(
                    "no free slot in {} (max {}, held by {})",
                    l.key(),
                    s.max,
                    s.holders.join(", ")
                ),
            }
        }
        Cmd::Unlock { id } => {
            let holder = cli.holder(id)?;
            let l = cli.etcd(&holder)?;
            let (c, s) = l
                .unlock_as(&holder)
                .with_context(|| format!("unlocking {} for {holder}", l.key()))?;
            match c {
                UnlockChange::Released => writeln!(out, "unlocked {holder}")?,
                UnlockChange::NotHeld => bail!(
                    "{holder} holds no slot in {} (holders: {})",
                    l.key(),
                    if s.holders.is_empty() {
                        "none".to_string()
                    } else {
                        s.holders.join(", ")
                    }
                ),
            }
        }
        Cmd::SetMax { max } => {
            let l = cli.etcd("")?;
            let old = l.read().context("reading the reboot lock")?;
            let s = l
                .set_max(*max)
                .with_context(|| format!("setting max of {}", l.key()))?;
            let old_max = old.value.map(|v| v.max).unwrap_or(1);
            writeln!(out, "Old: {old_max}")?;
            writeln!(out, "New: {}", s.max)?;
        }
    }
    Ok(())
}

fn run_fleetlock(cli: &Cli, base: &str, out: &mut dyn Write) -> Result<()> {
    let timeout = Duration::from_secs(cli.timeout.max(1));
    match &cli.cmd {
        Cmd::Lock { id, .. } => {
            let holder = cli.holder(id)?;
            let f = FleetLock::new(base, &holder, cli.group.as_deref(), timeout)?;
            f.acquire().context("FleetLock pre-reboot")?;
            writeln!(out, "locked for {holder}")?;
        }
        Cmd::Unlock { id } => {
            let holder = cli.holder(id)?;
            let f = FleetLock::new(base, &holder, cli.group.as_deref(), timeout)?;
            f.release().context("FleetLock steady-state")?;
            writeln!(out, "unlocked {holder}")?;
        }
        Cmd::Status { .. } | Cmd::SetMax { .. } => {
            bail!("the FleetLock protocol has only lock (pre-reboot) and unlock (steady-state)")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_is_checked() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("machine-id");
        std::fs::write(&p, "0123456789ABCDEF0123456789abcdef\n").expect("write");
        assert_eq!(
            read_machine_id(&p).expect("ok"),
            "0123456789abcdef0123456789abcdef"
        );
        std::fs::write(&p, "uninitialized\n").expect("write");
        let e = read_machine_id(&p).expect_err("bad");
        assert!(format!("{e:#}").contains("machine-id"), "{e:#}");
    }

    #[test]
    fn options_parse_like_locksmithctl() {
        let c = Cli::try_parse_from([
            "keel-lock",
            "--endpoint",
            "http://a:2379,https://b:2379",
            "--group",
            "workers",
            "unlock",
            "abc",
        ])
        .expect("parse");
        assert_eq!(c.endpoints, ["http://a:2379", "https://b:2379"]);
        assert_eq!(c.etcd_config().group.as_deref(), Some("workers"));
        assert!(matches!(c.cmd, Cmd::Unlock { id: Some(ref i) } if i == "abc"));
        let c = Cli::try_parse_from(["keel-lock", "set-max", "3", "--endpoints", "x:1"])
            .expect("parse");
        assert_eq!(c.endpoints, ["x:1"]);
        assert!(Cli::try_parse_from(["keel-lock", "lock", "--wait-timeout", "3"]).is_err());
    }
}

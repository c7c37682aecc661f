//! The real side: where things are on a Keel host, the machine's facts
//! (boot record, os-release, trusted keys), the boot disk and the ESP, the
//! status publisher (status file, `STATUS=`, `/run/reboot-required`, a
//! progress bar), the commands `check`, `apply`, `status`, and the daemon
//! loop.

use std::fs::File;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use keel_bootctl::slots::Slot;
use keel_contract::BootRecord;
use keel_release::{TrustedKeys, Version};
use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use crate::agent::{Agent, Effects, Outcome};
use crate::bus;
use crate::config::{self, RebootSettings, Settings, Sources};
use crate::disk::{GptSlots, SlotDisk};
use crate::esp::{BootDiskEsp, BootInstaller, NoEsp};
use crate::machine::{self, Blocked, BootOutcome, LockRelease, Pending, Schedule, State};
use crate::reboot::{self, Coordinator, LockRecord, Next, RebootHost};
use crate::source::{self, Dir, Source, Timeouts};
use crate::status::{self, Status};
use crate::update::{Machine, StateDir};

/// Every place the agent reads or writes; tests point them elsewhere.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Configuration files.
    pub config: Sources,
    /// keel-init's boot record.
    pub boot_record: PathBuf,
    /// The boot disk (default: the boot record's).
    pub disk: Option<PathBuf>,
    /// os-release of the running `/usr`.
    pub os_release: PathBuf,
    /// Trusted public keys.
    pub keys: PathBuf,
    /// Persistent state.
    pub state_dir: PathBuf,
    /// The status file.
    pub status_file: PathBuf,
    /// The kured marker.
    pub reboot_required: PathBuf,
    /// A mounted ESP (default: `/boot` or `/efi` when they hold loader
    /// entries; `None` after `--no-esp`: a direct-kernel machine).
    pub esp: Option<PathBuf>,
    /// Whether to look for an ESP at all.
    pub use_esp: bool,
    /// Serialises the daemon and the CLI.
    pub lock: PathBuf,
    /// HTTP timeouts.
    pub timeouts: Timeouts,
    /// Progress save interval.
    pub save_every: Duration,
    /// Whether the daemon serves `org.keel.Update1`.
    pub use_bus: bool,
    /// How to reboot (`systemctl reboot`).
    pub reboot_cmd: Vec<String>,
    /// How to warn logged-in users (`wall`; the message is the last argument).
    pub wall_cmd: Vec<String>,
    /// Who is logged in.
    pub utmp: PathBuf,
    /// This host's id as a lock holder.
    pub machine_id: PathBuf,
    /// Longest pause between attempts to take the reboot lock.
    pub lock_retry_max: Duration,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            config: Sources::default(),
            boot_record: keel_contract::paths::BOOT_RECORD.into(),
            disk: None,
            os_release: "/usr/lib/os-release".into(),
            keys: keel_release::sign::KEYS_DIR.into(),
            state_dir: StateDir::DEFAULT.into(),
            status_file: status::STATUS_FILE.into(),
            reboot_required: status::REBOOT_REQUIRED.into(),
            esp: None,
            use_esp: true,
            lock: "/run/keel/update.lock".into(),
            timeouts: Timeouts::default(),
            save_every: Duration::from_secs(1),
            use_bus: true,
            reboot_cmd: vec!["systemctl".into(), "reboot".into()],
            wall_cmd: vec!["wall".into()],
            utmp: "/run/utmp".into(),
            machine_id: "/etc/machine-id".into(),
            lock_retry_max: Duration::from_secs(60),
        }
    }
}

/// `IMAGE_VERSION=` (else `VERSION_ID=`) of an os-release file.
pub fn os_version(text: &str) -> Option<String> {
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').trim_matches('\'').to_string())
        })
    };
    get("IMAGE_VERSION")
        .or_else(|| get("VERSION_ID"))
        .filter(|v| !v.is_empty())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The machine's facts and the boot record.
pub fn machine(paths: &Paths) -> Result<(Machine, BootRecord)> {
    let rec = BootRecord::load(&paths.boot_record)
        .map_err(|e| anyhow!("{e}"))
        .context("which slot is running")?;
    let text = std::fs::read_to_string(&paths.os_release)
        .with_context(|| format!("reading {}", paths.os_release.display()))?;
    let v = os_version(&text).ok_or_else(|| {
        anyhow!(
            "{}: no IMAGE_VERSION= or VERSION_ID=",
            paths.os_release.display()
        )
    })?;
    let current = Version::parse(&v)
        .with_context(|| format!("the running version in {}", paths.os_release.display()))?;
    let keys = TrustedKeys::load_dir(&paths.keys)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("loading the trusted keys from {}", paths.keys.display()))?;
    let booted: Slot = rec
        .slot
        .to_string()
        .parse()
        .map_err(|e| anyhow!("{e}"))
        .context("the boot record's slot")?;
    Ok((
        Machine {
            current,
            booted,
            arch: std::env::consts::ARCH.into(),
            keys,
            boot_id: boot_id(),
            root_hash: Some(rec.usr_root_hash.clone()).filter(|h| !h.is_empty()),
        },
        rec,
    ))
}

fn installer(paths: &Paths, disk: &Path) -> Box<dyn BootInstaller> {
    if !paths.use_esp {
        return Box::new(NoEsp);
    }
    Box::new(BootDiskEsp::new(
        disk.to_path_buf(),
        paths.esp.clone(),
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
    ))
}

/// Publishes to the status file, systemd and, for the CLI, the terminal.
struct Publisher<'a> {
    paths: &'a Paths,
    daemon: bool,
    tty: bool,
    last_line: Option<u64>,
    bus: Option<(bus::Snapshot, bus::Conn)>,
}

impl Effects for Publisher<'_> {
    fn publish(&mut self, s: &Status) {
        let mut s = s.clone();
        s.source = if self.daemon { "daemon" } else { "cli" }.into();
        if let Err(e) = s.store(&self.paths.status_file) {
            warn!("writing {}: {e}", self.paths.status_file.display());
        }
        if matches!(s.state, State::Staged { .. }) {
            if let Err(e) = keel_contract::write_atomic(&self.paths.reboot_required, b"") {
                warn!("writing {}: {e}", self.paths.reboot_required.display());
            }
        }
        if self.daemon {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&s.one_line())]);
        }
        if let Some((snap, conn)) = &self.bus {
            bus::publish(snap, conn, &s);
        }
        if !self.daemon && !matches!(s.state, State::Downloading { .. }) {
            if self.tty {
                eprint!("\r\x1b[K");
            }
            eprintln!("{}", s.one_line());
        }
    }

    fn progress(&mut self, done: u64, total: u64) {
        if self.daemon {
            return;
        }
        if self.tty {
            eprint!("\r{}", status::bar(done, total, 30));
            let _ = std::io::stderr().flush();
        } else {
            // Plain lines, one per 10 %.
            let tenth = done.saturating_mul(10) / total.max(1);
            if self.last_line != Some(tenth) {
                self.last_line = Some(tenth);
                eprintln!("downloading: {}%", tenth * 10);
            }
        }
    }

    fn now(&self) -> u64 {
        now()
    }
}

/// The update lock is held by another keel-update: not a failure of the
/// check, only "not now" (the daemon tries again in [`BUSY_RETRY`] without
/// recording an error).
#[derive(Debug, thiserror::Error)]
#[error("{lock}: {errno}: another keel-update (the daemon or a CLI) is applying an update")]
pub struct Busy {
    lock: String,
    errno: nix::errno::Errno,
}

/// When the daemon looks again after finding the lock [`Busy`].
pub const BUSY_RETRY: Duration = Duration::from_secs(60);

fn lock(paths: &Paths) -> Result<Flock<File>> {
    if let Some(d) = paths.lock.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let f =
        File::create(&paths.lock).with_context(|| format!("opening {}", paths.lock.display()))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::Error::new(Busy {
            lock: paths.lock.display().to_string(),
            errno,
        })
    })
}

fn agent(paths: &Paths, settings: Settings) -> Result<(Agent, BootRecord)> {
    let (m, rec) = machine(paths)?;
    let state = StateDir {
        path: paths.state_dir.clone(),
        save_every: paths.save_every,
    };
    let mut a = Agent::new(settings, m, state);
    adopt_staged(&mut a);
    Ok((a, rec))
}

/// A version staged in this boot (by this process, an earlier run of the
/// agent, or `keel-update check`/`apply` while the daemon runs) is still
/// staged: never download it again over itself.
fn adopt_staged(a: &mut Agent) {
    if a.staged.is_some() {
        return;
    }
    if let Ok(Some(p)) = a.state.pending() {
        if p.boot_id == a.machine.boot_id {
            a.staged = Version::parse(&p.version).ok();
            a.status.new_version = Some(p.version.clone());
            a.status.state = State::Staged { version: p.version };
        }
    }
}

fn disk_of(paths: &Paths, rec: &BootRecord) -> PathBuf {
    paths
        .disk
        .clone()
        .unwrap_or_else(|| PathBuf::from(&rec.disk))
}

/// `keel-update check`: one check now, applying what the channel offers.
pub fn check(paths: &Paths, dry_run: bool) -> Result<Outcome> {
    let settings = config::load(&paths.config)?;
    let base = settings
        .base_url
        .clone()
        .ok_or_else(|| anyhow!("no release server configured (base_url in /etc/keel/update.d/*.toml, or SERVER= in /etc/flatcar/update.conf)"))?;
    let mut src = source::for_url(&base, paths.timeouts);
    let out = run_once(paths, settings, src.as_mut(), dry_run)?;
    hand_over(paths, &out);
    Ok(out)
}

/// After the CLI staged a version (its lock released), the running daemon
/// takes it on towards its reboot under the configured strategy.
fn hand_over(paths: &Paths, out: &Outcome) {
    if !matches!(out, Outcome::Staged(_)) || !paths.use_bus {
        return;
    }
    match crate::bus::tell_daemon() {
        Ok(()) => info!("the keel-update daemon takes it from here (reboot strategy)"),
        Err(e) => tracing::debug!("no keel-update daemon to hand over to: {e}"),
    }
}

/// `keel-update apply PATH`: the same from a release tree directory or a
/// bundle (a tar of the tree, as a file or raw on a block device).
pub fn apply(paths: &Paths, tree: &Path, channel: Option<&str>) -> Result<Outcome> {
    let mut settings = config::load(&paths.config)?;
    if let Some(c) = channel {
        settings.channel = c.to_string();
    }
    let want = format!("{}/{}", settings.channel, keel_release::CHANNEL_FILE);
    let missing = || {
        anyhow!(
            "{}: no {want} (a release tree has one directory per channel; --channel picks another)",
            tree.display(),
        )
    };
    let meta = std::fs::metadata(tree).with_context(|| format!("{}", tree.display()))?;
    let mut src: Box<dyn source::Source> = if meta.is_dir() {
        if !tree.join(&want).is_file() {
            return Err(missing());
        }
        settings.base_url = Some(format!("file://{}", tree.display()));
        Box::new(Dir::new(tree))
    } else {
        let b = source::Bundle::open(tree)?;
        if !b.has(&want) {
            return Err(missing());
        }
        settings.base_url = Some(format!("bundle:{}", tree.display()));
        Box::new(b)
    };
    let out = run_once(paths, settings, src.as_mut(), false)?;
    hand_over(paths, &out);
    Ok(out)
}

fn run_once(
    paths: &Paths,
    settings: Settings,
    src: &mut dyn Source,
    dry_run: bool,
) -> Result<Outcome> {
    let _lock = lock(paths)?;
    let (mut a, rec) = agent(paths, settings)?;
    let disk = disk_of(paths, &rec);
    // Settle what the last staging led to; never overwrite the fallback of
    // a slot still on trial.
    if let Some(p) = judge(&mut a, &rec) {
        if slot_state(&disk, a.machine.booted)?.successful {
            a.state.set_pending(None)?;
        } else {
            bail!(
                "{} in USR-{} is on trial until it is marked good; USR-{} is its fallback and is not overwritten until then",
                p.version,
                a.machine.booted,
                a.machine.booted.other()
            );
        }
    }
    let mut slots = GptSlots::open(&disk)?;
    let mut esp = installer(paths, &disk);
    let mut fx = Publisher {
        paths,
        daemon: false,
        tty: std::io::stderr().is_terminal(),
        last_line: None,
        bus: None,
    };
    let out = a.check(src, &mut slots, esp.as_mut(), &mut fx, dry_run);
    if fx.tty {
        eprintln!();
    }
    let out = out?;
    if let Outcome::NoUpdate = out {
        if let Some(v) = &a.status.new_version {
            if dry_run {
                eprintln!("{v} is available (dry run: nothing written)");
            }
        }
        eprintln!("no update: {}", a.status.why_no_update);
    }
    Ok(out)
}

/// `keel-update status`: the daemon's status file, or what can be said
/// without the daemon.
pub fn status(paths: &Paths) -> Status {
    if let Some(s) = Status::load(&paths.status_file) {
        return s;
    }
    let settings = config::load(&paths.config);
    let (channel, server, why) = match &settings {
        Ok(s) => (
            s.channel.clone(),
            s.base_url.clone(),
            "the keel-update daemon has not written a status (is keel-update.service running?)"
                .to_string(),
        ),
        Err(e) => (
            config::DEFAULT_CHANNEL.into(),
            None,
            format!("the configuration is invalid ({e})"),
        ),
    };
    let current = std::fs::read_to_string(&paths.os_release)
        .ok()
        .and_then(|t| os_version(&t))
        .unwrap_or_default();
    let mut s = Status::new(&current, &channel, server.as_deref());
    s.why_no_update = why;
    if let Ok(settings) = &settings {
        let id = keel_lock::cli::read_machine_id(&paths.machine_id).unwrap_or_default();
        let sched = schedule_for(&settings.reboot, &id);
        reboot::fill_static(&settings.reboot, sched.as_ref(), &mut s.reboot);
        reboot::fill_window(
            sched.as_ref().map(|x| x.state_at(jiff::Timestamp::now())),
            &mut s.reboot,
        );
    }
    s.reboot.users = RealHost { paths }.users();
    s.reboot.lock_held = LockRecord::load(&paths.state_dir.join(reboot::LOCK_RECORD)).is_some();
    let state = StateDir::new(&paths.state_dir);
    s.blocked = state.blocked().unwrap_or_default();
    if let Ok(Some(p)) = state.pending() {
        if p.boot_id == boot_id() {
            s.new_version = Some(p.version.clone());
            s.state = State::Staged { version: p.version };
        }
    }
    s
}

/// Judge the boot after a staging: blocked list and status.
/// Returns the pending record when this boot runs the updated slot for
/// the first time(s) and it is on trial.
fn judge(a: &mut Agent, rec: &BootRecord) -> Option<Pending> {
    let pending = a.state.pending().ok().flatten();
    let changed = pending
        .as_ref()
        .is_some_and(|p| p.boot_id != a.machine.boot_id);
    let failed: Vec<(String, String)> = rec
        .failed_slots
        .iter()
        .map(|f| (f.slot.to_string(), f.reason.clone()))
        .collect();
    let booted = a.machine.booted.to_string();
    match machine::judge_boot(
        pending.as_ref(),
        changed,
        Some(&booted),
        a.machine.current.as_str(),
        &failed,
    ) {
        BootOutcome::Nothing | BootOutcome::StillStaged => None,
        BootOutcome::Updated => {
            info!(
                "now running {} (updated); on trial until marked good",
                a.machine.current
            );
            pending
        }
        BootOutcome::RolledBack { version, why } => {
            warn!("{version} did not boot: {why}; blocking it until a newer version appears");
            let mut b = a.state.blocked().unwrap_or_default();
            if !b.iter().any(|x| x.version == version) {
                b.push(Blocked {
                    version: version.clone(),
                    why: why.clone(),
                    at: now(),
                });
            }
            if let Err(e) = a.state.set_blocked(&b) {
                warn!("{e}");
            }
            let _ = a.state.set_pending(None);
            a.status.blocked = b;
            a.status.state = State::RolledBack { version, why };
            None
        }
    }
}

/// Seconds since boot (CLOCK_BOOTTIME, as /proc/uptime counts it).
fn uptime() -> Duration {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or_default()
}

fn slot_state(disk: &Path, slot: Slot) -> Result<keel_bootctl::slots::SlotState> {
    let d = keel_bootctl::disk::Disk::open(disk, false)?;
    let states = keel_bootctl::slots::slot_states(&d.read()?.gpt)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("reading the slots on {}", disk.display()))?;
    states
        .into_iter()
        .find(|s| s.slot == slot)
        .ok_or_else(|| anyhow!("{}: no USR-{slot}", disk.display()))
}

fn reboot(paths: &Paths) -> Result<()> {
    let (prog, args) = paths
        .reboot_cmd
        .split_first()
        .ok_or_else(|| anyhow!("no reboot command"))?;
    let st = std::process::Command::new(prog)
        .args(args)
        .status()
        .with_context(|| format!("running {prog}"))?;
    if !st.success() {
        bail!("{} failed: {st}", paths.reboot_cmd.join(" "));
    }
    Ok(())
}

/// What keel-bootctl's boot check says of this boot now (the critical
/// units that failed, or the target not reached), so a rollback records
/// the cause and not only the timeout; `None` when it has nothing to say
/// or cannot tell.
fn boot_check_says() -> Option<String> {
    use keel_bootctl::health;
    let critical = health::load_critical(&health::dropin_dirs()).ok()?;
    health::check(&health::Systemctl, &critical)
        .err()
        .map(|e| format!("{e:#}"))
}

/// The health gate: the updated slot runs; wait until it is marked good
/// (keel-mark-successful after the boot checks) or until the timeout since
/// boot, then roll back: make it unbootable, record why, reboot into the
/// previous slot. No update checks meanwhile: the other slot is the
/// fallback and must not be overwritten.
fn trial_loop(a: &mut Agent, paths: &Paths, disk: &Path, mut p: Pending, fx: &mut dyn Effects) {
    let booted = a.machine.booted;
    loop {
        let st = match slot_state(disk, booted) {
            Ok(st) => st,
            Err(e) => {
                warn!("{e:#}; retrying");
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        let timeout = a.settings.health_timeout;
        match machine::trial(st.successful, uptime(), timeout) {
            machine::Trial::Proven => {
                info!("{} is marked good: the update is complete", p.version);
                let _ = a.state.set_pending(None);
                a.set_state(State::Idle, fx);
                return;
            }
            machine::Trial::Waiting(left) => {
                a.set_state(State::Idle, fx);
                a.status.why_no_update = format!(
                    "{} is on trial: it must be marked good within {} s of boot ({} s left) or the machine goes back to {}",
                    p.version,
                    timeout.as_secs(),
                    left.as_secs(),
                    p.from_version
                );
                fx.publish(&a.status);
                // Every second: the reboot lock is held until this
                // ends, so the fleet waits for this poll too.
                std::thread::sleep(left.min(Duration::from_secs(1)));
            }
            machine::Trial::Expired => {
                let why = format!(
                    "{} was not marked good within {} s of boot ({})",
                    p.version,
                    timeout.as_secs(),
                    boot_check_says().unwrap_or_else(|| {
                        "a critical unit failed or the boot did not complete".into()
                    })
                );
                match slot_state(disk, booted.other()) {
                    Ok(o) if o.bootable => {}
                    other => {
                        let msg = format!(
                            "{why}; not rolling back: USR-{} cannot boot ({other:?})",
                            booted.other()
                        );
                        warn!("{msg}");
                        a.status.last_error = Some(msg.clone());
                        a.set_state(State::Error { message: msg }, fx);
                        let _ = a.state.set_pending(None);
                        return;
                    }
                }
                warn!(
                    "{why}; rolling back to USR-{} ({})",
                    booted.other(),
                    p.from_version
                );
                p.why = Some(why.clone());
                let r = a
                    .state
                    .set_pending(Some(&p))
                    .map_err(anyhow::Error::from)
                    .and_then(|()| {
                        GptSlots::open(disk)
                            .and_then(|mut g| g.disable(booted))
                            .map_err(anyhow::Error::from)
                    })
                    .and_then(|()| {
                        // The firmware path: the slot's entry gets no tries.
                        installer(paths, disk)
                            .demote(booted)
                            .map_err(anyhow::Error::from)
                    });
                if let Err(e) = r {
                    let msg = format!("{why}; rolling back failed: {e:#}");
                    a.status.last_error = Some(msg.clone());
                    a.set_state(State::Error { message: msg }, fx);
                    return;
                }
                a.status.last_error = Some(why);
                a.set_state(
                    State::Rebooting {
                        version: p.from_version.clone(),
                    },
                    fx,
                );
                if let Err(e) = reboot(paths) {
                    let msg = format!("rolled back USR-{booted} but rebooting failed: {e:#}; reboot to return to {}", p.from_version);
                    warn!("{msg}");
                    a.status.last_error = Some(msg.clone());
                    a.set_state(State::Error { message: msg }, fx);
                }
                return;
            }
        }
    }
}

/// The reboot side's effects on the real machine.
struct RealHost<'a> {
    paths: &'a Paths,
}

impl RebootHost for RealHost<'_> {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }

    fn users(&self) -> Vec<String> {
        let data = std::fs::read(&self.paths.utmp).unwrap_or_default();
        reboot::utmp_users(&data, |pid| {
            pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
        })
    }

    fn wall(&mut self, message: &str) -> std::result::Result<(), String> {
        let (prog, args) = self
            .paths
            .wall_cmd
            .split_first()
            .ok_or_else(|| "no wall command".to_string())?;
        let st = std::process::Command::new(prog)
            .args(args)
            .arg(message)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("running {prog}: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("{prog} failed: {st}"))
        }
    }

    fn reboot(&mut self) -> std::result::Result<(), String> {
        reboot(self.paths).map_err(|e| format!("{e:#}"))
    }
}

/// The windows as this host sees them (its own offset inside each).
fn schedule_for(
    r: &std::result::Result<RebootSettings, config::ConfigError>,
    machine_id: &str,
) -> Option<keel_lock::window::Schedule> {
    let r = r.as_ref().ok()?;
    if r.strategy == config::RebootStrategy::Off {
        return None;
    }
    r.windows
        .as_ref()
        .map(|w| w.schedule.clone().for_host(machine_id))
}

/// The lock client of the settings, acting as `machine_id`.
fn lock_client(
    r: &std::result::Result<RebootSettings, config::ConfigError>,
    machine_id: &std::result::Result<String, String>,
) -> std::result::Result<Option<Box<dyn keel_lock::RebootLock>>, String> {
    let Ok(r) = r else {
        return Ok(None);
    };
    if !r.uses_lock() {
        return Ok(None);
    }
    let id = machine_id.as_ref().map_err(Clone::clone)?;
    if let Some(e) = &r.etcd {
        return keel_lock::etcd::EtcdLock::new(&e.client_config(), id)
            .map(|l| Some(Box::new(l) as Box<dyn keel_lock::RebootLock>))
            .map_err(|e| e.to_string());
    }
    if let Some(f) = &r.fleet_lock {
        return keel_lock::fleetlock::FleetLock::new(
            &f.base_url,
            id,
            f.group.as_deref(),
            Duration::from_secs(10),
        )
        .map(|l| Some(Box::new(l) as Box<dyn keel_lock::RebootLock>))
        .map_err(|e| e.to_string());
    }
    Ok(None)
}

/// One attempt to give back a lock held from before this boot: only once
/// the boot is good, never while a version is staged in this boot.
/// Returns when to try again (None: done).
fn release_step(
    a: &mut Agent,
    disk: &Path,
    record: &Path,
    machine_id: &std::result::Result<String, String>,
    failures: &mut u32,
    backoff_max: Duration,
) -> Option<Duration> {
    let held = LockRecord::load(record);
    let uses_lock = a
        .settings
        .reboot
        .as_ref()
        .is_ok_and(RebootSettings::uses_lock);
    if !uses_lock {
        if let Some(h) = held {
            let msg = format!(
                "this host took the {} lock as {} before and still holds it, but the reboot strategy no longer names a lock: release it with `keel-lock unlock {}`",
                h.strategy, h.id, h.id
            );
            warn!("{msg}");
            a.status.reboot.error = Some(msg);
            a.status.reboot.lock_held = true;
        }
        return None;
    }
    let staged = matches!(
        a.status.state,
        State::Staged { .. } | State::Rebooting { .. }
    );
    let good = slot_state(disk, a.machine.booted)
        .map(|s| s.successful)
        .unwrap_or(false);
    match machine::lock_release(staged, good) {
        LockRelease::Keep => None,
        LockRelease::WaitForGoodBoot => {
            a.status.reboot.waiting_for = "good_boot".into();
            Some(Duration::from_secs(5))
        }
        LockRelease::Release => {
            let lock = match lock_client(&a.settings.reboot, machine_id) {
                Ok(Some(l)) => l,
                Ok(None) => return None,
                Err(e) => {
                    a.status.reboot.error = Some(format!("releasing the reboot lock: {e}"));
                    return Some(backoff_max);
                }
            };
            match reboot::release(lock.as_ref(), record) {
                Ok(r) => {
                    info!(
                        "this boot is good; reboot lock given back ({})",
                        match r {
                            keel_lock::Release::Released => "released",
                            keel_lock::Release::NotHeld => "it held none",
                        }
                    );
                    if a.status.reboot.waiting_for == "good_boot" {
                        a.status.reboot.waiting_for.clear();
                    }
                    a.status.reboot.lock_held = false;
                    a.status.reboot.error = None;
                    *failures = 0;
                    None
                }
                Err(e) => {
                    warn!("releasing the reboot lock: {e}; retrying");
                    a.status.reboot.error = Some(format!("releasing the reboot lock: {e}"));
                    let b = keel_lock::Backoff {
                        initial: Duration::from_secs(1),
                        max: backoff_max,
                    };
                    let d = b.delay(*failures, fastrand::f64());
                    *failures = failures.saturating_add(1);
                    Some(d)
                }
            }
        }
    }
}

/// The daemon: first check a few minutes after start, then every interval
/// with jitter, backing off on errors; the configuration is re-read before
/// every check and a bad one keeps the last good settings.
pub fn daemon(paths: &Paths, first_delay: Option<Duration>) -> Result<()> {
    let (settings, mut config_error) = match config::load(&paths.config) {
        Ok(s) => (s, None),
        Err(e) => {
            warn!("{e}; not checking until the configuration is fixed");
            (
                Settings {
                    enabled: false,
                    ..Settings::default()
                },
                Some(e.to_string()),
            )
        }
    };
    let snapshot: bus::Snapshot = Default::default();
    let conn: bus::Conn = Default::default();
    let (check_now, check_rx) = std::sync::mpsc::channel();
    if paths.use_bus {
        bus::spawn_server(snapshot.clone(), conn.clone(), check_now);
    }
    let mut fx = Publisher {
        paths,
        daemon: true,
        tty: false,
        last_line: None,
        bus: Some((snapshot, conn)),
    };
    // Without the machine's facts (boot record, version, keys) there is
    // nothing to check against; say so and retry rather than fail the unit
    // (a failed keel-* unit would keep the boot from being marked good).
    let (mut a, rec) = loop {
        match agent(paths, settings.clone()) {
            Ok(x) => break x,
            Err(e) => {
                warn!("{e:#}; retrying in 60 s");
                let mut s = Status::new("", &settings.channel, settings.base_url.as_deref());
                s.last_error = Some(format!("{e:#}"));
                s.state = State::Error {
                    message: format!("{e:#}"),
                };
                s.why_no_update = format!("the agent cannot start: {e:#}");
                fx.publish(&s);
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    };
    a.config_error = config_error.clone();
    // What the reboot side shows from the start (the lock is kept while
    // the new slot is on trial).
    let record = paths.state_dir.join(reboot::LOCK_RECORD);
    reboot::fill_static(&a.settings.reboot, None, &mut a.status.reboot);
    a.status.reboot.lock_held = LockRecord::load(&record).is_some();
    if let Some(p) = judge(&mut a, &rec) {
        if a.status.reboot.lock_held {
            a.status.reboot.waiting_for = "good_boot".into();
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        trial_loop(&mut a, paths, &disk_of(paths, &rec), p, &mut fx);
    }
    let mut sched = Schedule::new(a.settings.interval);
    let wait = first_delay.unwrap_or_else(|| sched.first(fastrand::f64()));
    let mut check_at = std::time::Instant::now() + wait;
    a.status.next_check = Some(now() + wait.as_secs());
    let disk = disk_of(paths, &rec);
    let machine_id =
        keel_lock::cli::read_machine_id(&paths.machine_id).map_err(|e| format!("{e:#}"));
    let record = paths.state_dir.join(reboot::LOCK_RECORD);
    let backoff = keel_lock::Backoff {
        initial: Duration::from_secs(1),
        max: paths.lock_retry_max,
    };
    let mut coord = Coordinator::new(record.clone(), backoff);
    coord.lock_held =
        LockRecord::load(&record).is_some() && matches!(a.status.state, State::Staged { .. });
    // A version staged in this boot (before a restart of the agent) goes
    // on towards its reboot.
    let mut coord_at = matches!(a.status.state, State::Staged { .. }).then(std::time::Instant::now);
    let mut release_at = Some(std::time::Instant::now());
    let mut release_failures = 0u32;
    let mut rebooted = false;
    let mut host = RealHost { paths };
    let st = a.status.state.clone();
    a.set_state(st, &mut fx);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    loop {
        // Sleep until the next thing is due, or until `Check()` on the bus.
        let due = [Some(check_at), coord_at, release_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(check_at);
        let timeout = due.saturating_duration_since(std::time::Instant::now());
        let requested = match check_rx.recv_timeout(timeout) {
            Ok(()) => {
                info!("check requested over D-Bus");
                true
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                false
            }
        };
        match config::load(&paths.config) {
            Ok(s) => {
                if s != a.settings {
                    info!("configuration changed: {:?}", s.files);
                }
                if s.interval != a.settings.interval {
                    sched.interval = s.interval;
                }
                if let Err(e) = &s.reboot {
                    if a.settings.reboot.as_ref().err() != Some(e) {
                        warn!("{e}; updates are staged but the machine is not rebooted");
                    }
                }
                a.settings = s;
                config_error = None;
            }
            Err(e) => {
                warn!("{e}; keeping the last good configuration");
                config_error = Some(e.to_string());
            }
        }
        a.config_error = config_error.clone();
        let now_i = std::time::Instant::now();

        // Give back a lock held from before, once this boot is good.
        if release_at.is_some_and(|t| t <= now_i) {
            release_at = release_step(
                &mut a,
                &disk,
                &record,
                &machine_id,
                &mut release_failures,
                paths.lock_retry_max,
            )
            .map(|d| now_i + d);
        }

        // Towards the reboot into a staged version.
        let staged = match &a.status.state {
            State::Staged { version } => Some(version.clone()),
            _ => None,
        };
        let mut holding = false;
        if let (Some(v), false) = (&staged, rebooted) {
            if requested || coord_at.is_none_or(|t| t <= now_i) {
                let id = machine_id.clone().unwrap_or_default();
                let sched_w = schedule_for(&a.settings.reboot, &id);
                let next = match lock_client(&a.settings.reboot, &machine_id) {
                    Ok(lock) => coord.step(
                        v,
                        &a.settings.reboot,
                        sched_w.as_ref(),
                        lock.as_deref(),
                        &mut host,
                        &mut a.status.reboot,
                    ),
                    Err(e) => {
                        let msg = format!("cannot use the reboot lock: {e}");
                        warn!("{msg}");
                        a.status.reboot.error = Some(msg.clone());
                        coord.wait = format!("{msg}; never rebooting without it");
                        Next::After(paths.lock_retry_max)
                    }
                };
                a.reboot_wait = Some(coord.wait.clone());
                coord_at = match next {
                    // Re-read the settings now and then: the admin may
                    // turn the strategy on.
                    Next::Hold => Some(now_i + Duration::from_secs(60)),
                    Next::After(d) => Some(now_i + d),
                    Next::Rebooted => {
                        rebooted = true;
                        a.set_state(State::Rebooting { version: v.clone() }, &mut fx);
                        None
                    }
                };
                holding = matches!(next, Next::Hold);
            } else {
                holding = a
                    .settings
                    .reboot
                    .as_ref()
                    .map_or(true, |r| r.strategy == config::RebootStrategy::Off);
            }
        }

        // Checks go on while nothing waits to reboot; once the reboot
        // sequence runs, the staged slot is left alone.
        let may_check = !rebooted && (staged.is_none() || holding);
        if may_check && (requested || check_at <= now_i) {
            let base = match (&a.settings.base_url, a.settings.enabled) {
                (Some(b), true) => Some(b.clone()),
                _ => None,
            };
            let result = base.map(|base| {
                (|| -> Result<Outcome> {
                    let _lock = lock(paths)?;
                    adopt_staged(&mut a);
                    let mut src = source::for_url(&base, paths.timeouts);
                    let mut slots = GptSlots::open(&disk)?;
                    let mut esp = installer(paths, &disk);
                    Ok(a.check(src.as_mut(), &mut slots, esp.as_mut(), &mut fx, false)?)
                })()
            });
            let wait = match &result {
                None | Some(Ok(_)) => sched.after_success(fastrand::f64()),
                // A CLI `check`/`apply` is at work: its outcome is adopted
                // at the next look, and is nobody's error.
                Some(Err(e)) if e.downcast_ref::<Busy>().is_some() => {
                    info!("{e}; looking again in {}s", BUSY_RETRY.as_secs());
                    BUSY_RETRY
                }
                Some(Err(e)) => {
                    warn!("update check failed: {e:#}");
                    if !matches!(a.status.state, State::Error { .. }) {
                        a.status.last_error = Some(format!("{e:#}"));
                        a.set_state(
                            State::Error {
                                message: format!("{e:#}"),
                            },
                            &mut fx,
                        );
                    }
                    sched.after_error(fastrand::f64())
                }
            };
            check_at = std::time::Instant::now() + wait;
            a.status.next_check = Some(now() + wait.as_secs());
            match &result {
                Some(Ok(Outcome::Staged(v))) => {
                    info!("{v} staged in USR-{}", a.machine.booted.other());
                    // A new staging starts the reboot sequence from its
                    // start (a lock this host holds stays held).
                    let held = coord.lock_held;
                    coord = Coordinator::new(record.clone(), backoff);
                    coord.lock_held = held;
                    coord_at = Some(std::time::Instant::now());
                }
                // Staged by `keel-update check`/`apply` in this boot while
                // the daemon ran: on towards its reboot, as if staged here.
                Some(Ok(Outcome::AlreadyStaged(v))) if coord_at.is_none() => {
                    info!(
                        "{v} is staged in USR-{}; on towards its reboot",
                        a.machine.booted.other()
                    );
                    coord_at = Some(std::time::Instant::now());
                }
                _ => {}
            }
        }
        let st = a.status.state.clone();
        a.set_state(st, &mut fx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_update_lock_is_busy_not_a_failure() {
        let t = tempfile::tempdir().expect("tmp");
        let paths = Paths {
            lock: t.path().join("run/update.lock"),
            ..Paths::default()
        };
        let held = lock(&paths).expect("first lock");
        let e = lock(&paths).expect_err("held");
        let busy = e.downcast_ref::<Busy>().expect("a Busy error");
        assert!(busy.to_string().contains("another keel-update"), "{busy}");
        drop(held);
        lock(&paths).expect("free again");
    }

    #[test]
    fn version_from_os_release() {
        assert_eq!(
            os_version("NAME=Keel\nVERSION_ID=0.1.0\nIMAGE_VERSION=\"0.1.2\"\n").as_deref(),
            Some("0.1.2")
        );
        assert_eq!(os_version("VERSION_ID='3'\n").as_deref(), Some("3"));
        assert_eq!(os_version("NAME=x\n"), None);
        assert_eq!(os_version("VERSION_ID=\n"), None);
    }
}

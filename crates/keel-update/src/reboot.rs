//! Reboot coordination: the steps from "a version is staged" to the reboot
//! (window → lock → `wall` warning and grace period → reboot), and giving
//! the lock back once the next boot is good.
//!
//! The decisions are [`machine::reboot_step`] and [`machine::lock_release`]
//! (pure); this module carries them out through two small traits: the lock
//! ([`keel_lock::RebootLock`], etcd or FleetLock) and [`RebootHost`] (the
//! clock, who is logged in, `wall`, the reboot itself), each with a fake in
//! the tests below.
//!
//! Writes `reboot-lock.json` in the state directory while this host holds
//! the lock (strategy, holder id, version, since when), so `status` can say
//! so and a later boot knows it has a lock to give back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_lock::window::{Schedule, WindowState};
use keel_lock::{Acquire, Backoff, LockError, RebootLock, Release};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::{ConfigError, RebootSettings};
use crate::machine::{self, LockHold, RebootFacts, RebootStep};
use crate::status::RebootStatus;

/// The lock record's file name in the state directory.
pub const LOCK_RECORD: &str = "reboot-lock.json";

/// The effects of the reboot sequence other than the lock.
pub trait RebootHost {
    /// Now.
    fn now(&self) -> jiff::Timestamp;
    /// Users logged in ("core@pts/0").
    fn users(&self) -> Vec<String>;
    /// Send `message` to every logged-in user's terminal.
    fn wall(&mut self, message: &str) -> Result<(), String>;
    /// Reboot the machine (returns when the reboot was started).
    fn reboot(&mut self) -> Result<(), String>;
}

/// What this host recorded when it took the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// `etcd_lock` or `fleet_lock`.
    pub strategy: String,
    /// The holder id (machine id).
    pub id: String,
    /// The version the reboot was for.
    pub version: String,
    /// When it was taken (seconds since the epoch).
    pub at: u64,
}

impl LockRecord {
    /// Read the record (None when absent or unreadable).
    pub fn load(path: &Path) -> Option<LockRecord> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// Where the sequence stands after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Not rebooting (strategy off or invalid settings).
    Hold,
    /// Run the next step after this long.
    After(Duration),
    /// The reboot was started.
    Rebooted,
}

/// The reboot sequence's memory between steps (one per staged version).
#[derive(Debug)]
pub struct Coordinator {
    /// Whether this host holds the lock.
    pub lock_held: bool,
    /// When logged-in users were warned.
    pub warned: Option<u64>,
    /// Lock attempts that failed or found it busy, in a row.
    pub failures: u32,
    /// Pauses between lock attempts.
    pub backoff: Backoff,
    /// The lock record.
    pub record: PathBuf,
    /// A sentence: what the reboot waits for now.
    pub wait: String,
}

impl Coordinator {
    /// A sequence whose lock record is `record`; a record left by this boot
    /// means the lock is already held.
    pub fn new(record: PathBuf, backoff: Backoff) -> Coordinator {
        Coordinator {
            lock_held: false,
            warned: None,
            failures: 0,
            backoff,
            record,
            wait: String::new(),
        }
    }

    fn pause(&mut self) -> Duration {
        let d = self.backoff.delay(self.failures, fastrand::f64());
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// Take as many steps as can be taken now towards rebooting into
    /// `version`; fills `st` with what it waits for.
    pub fn step(
        &mut self,
        version: &str,
        reboot: &Result<RebootSettings, ConfigError>,
        schedule: Option<&Schedule>,
        lock: Option<&dyn RebootLock>,
        host: &mut dyn RebootHost,
        st: &mut RebootStatus,
    ) -> Next {
        fill_static(reboot, schedule, st);
        let uses_lock = reboot.as_ref().is_ok_and(RebootSettings::uses_lock);
        loop {
            let now = host.now();
            let window = schedule.map(|s| s.state_at(now));
            fill_window(window, st);
            let users = host.users();
            st.users = users.clone();
            st.lock_held = self.lock_held;
            let facts = RebootFacts {
                window,
                lock: match (uses_lock, self.lock_held) {
                    (false, _) => LockHold::NotNeeded,
                    (true, true) => LockHold::Held,
                    (true, false) => LockHold::NotHeld,
                },
                users,
                warned: self.warned,
                now: secs(now),
            };
            let step = machine::reboot_step(reboot, &facts);
            match step {
                RebootStep::Hold(why) => {
                    st.waiting_for.clear();
                    self.wait = why;
                    return Next::Hold;
                }
                RebootStep::WaitWindow { opens } => {
                    st.waiting_for = "window".into();
                    self.wait =
                        format!("waiting for the maintenance window, which opens at {opens}");
                    // Wake at the opening, and at least every 10 minutes
                    // (the clock may jump, the settings may change).
                    let d = opens
                        .duration_since(now)
                        .try_into()
                        .unwrap_or(Duration::ZERO)
                        .min(Duration::from_secs(600));
                    return Next::After(d.max(Duration::from_secs(1)));
                }
                RebootStep::TakeLock => {
                    let Some(lock) = lock else {
                        st.error = Some("no lock client (its settings are missing)".into());
                        return Next::After(self.pause());
                    };
                    st.waiting_for = "lock".into();
                    match lock.acquire() {
                        Ok(Acquire::Taken) | Ok(Acquire::AlreadyHeld) => {
                            info!(id = lock.id(), "took the reboot lock");
                            self.lock_held = true;
                            self.failures = 0;
                            st.error = None;
                            let rec = LockRecord {
                                strategy: reboot
                                    .as_ref()
                                    .map(|r| r.strategy.name())
                                    .unwrap_or("")
                                    .into(),
                                id: lock.id().into(),
                                version: version.into(),
                                at: secs(now),
                            };
                            if let Err(e) = store_record(&self.record, &rec) {
                                warn!("writing {}: {e}", self.record.display());
                            }
                            continue;
                        }
                        Ok(Acquire::Busy { detail }) => {
                            st.error = None;
                            if let Ok(s) = lock.status() {
                                st.lock_holders = s.holders;
                            }
                            self.wait = format!("waiting for the reboot lock ({detail})");
                            info!(%detail, "reboot lock busy; waiting");
                            return Next::After(self.pause());
                        }
                        Err(e) => {
                            let msg = describe(&e);
                            warn!("taking the reboot lock: {msg}; retrying");
                            self.wait = format!(
                                "waiting for the reboot lock ({msg}); never rebooting without it"
                            );
                            st.error = Some(msg);
                            return Next::After(self.pause());
                        }
                    }
                }
                RebootStep::Warn => {
                    let grace = reboot.as_ref().map(|r| r.grace_period).unwrap_or_default();
                    let msg = machine::wall_message(version, grace);
                    if let Err(e) = host.wall(&msg) {
                        warn!("warning the logged-in users: {e}");
                    }
                    info!(users = ?st.users, "warned logged-in users; rebooting in {} s", grace.as_secs());
                    self.warned = Some(secs(now));
                    continue;
                }
                RebootStep::Grace { until } => {
                    st.waiting_for = "users".into();
                    self.wait = format!(
                        "users are logged in ({}); they were warned and the machine reboots at {}",
                        st.users.join(", "),
                        jiff::Timestamp::from_second(i64::try_from(until).unwrap_or(0))
                            .unwrap_or(now)
                    );
                    let left = until.saturating_sub(secs(now));
                    return Next::After(Duration::from_secs(left.clamp(1, 60)));
                }
                RebootStep::Reboot => {
                    st.waiting_for.clear();
                    self.wait = format!("rebooting into {version}");
                    return match host.reboot() {
                        Ok(()) => Next::Rebooted,
                        Err(e) => {
                            warn!("rebooting: {e}");
                            st.error = Some(format!("rebooting failed: {e}"));
                            self.wait = format!("rebooting failed ({e}); trying again");
                            Next::After(self.pause())
                        }
                    };
                }
            }
        }
    }
}

fn secs(t: jiff::Timestamp) -> u64 {
    u64::try_from(t.as_second()).unwrap_or(0)
}

fn describe(e: &LockError) -> String {
    e.to_string()
}

fn store_record(path: &Path, rec: &LockRecord) -> std::io::Result<()> {
    let mut data = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
    data.push(b'\n');
    keel_contract::write_atomic(path, &data)
}

/// Give the lock back and forget the record.
pub fn release(lock: &dyn RebootLock, record: &Path) -> Result<Release, LockError> {
    let r = lock.release()?;
    match std::fs::remove_file(record) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("removing {}: {e}", record.display()),
    }
    Ok(r)
}

/// The parts of the reboot status that follow from the settings alone.
pub fn fill_static(
    reboot: &Result<RebootSettings, ConfigError>,
    schedule: Option<&Schedule>,
    st: &mut RebootStatus,
) {
    match reboot {
        Ok(r) => {
            st.strategy = r.strategy.name().into();
            st.lock = r.lock_name();
            if matches!(st.error.as_deref(), Some(e) if e.starts_with("invalid: ")) {
                st.error = None;
            }
        }
        Err(e) => {
            st.strategy = "invalid".into();
            st.lock = None;
            st.error = Some(format!("invalid: {e}"));
        }
    }
    st.window = schedule.map(Schedule::describe);
}

/// The window fields of the status.
pub fn fill_window(w: Option<WindowState>, st: &mut RebootStatus) {
    match w {
        None => {
            st.window_opens = None;
            st.window_closes = None;
        }
        Some(WindowState::Open { closes }) => {
            st.window_opens = None;
            st.window_closes = Some(closes.to_string());
        }
        Some(WindowState::Closed { opens }) => {
            st.window_opens = Some(opens.to_string());
            st.window_closes = None;
        }
    }
}

/// Users in a utmp file (glibc x86-64 layout: 384-byte records, `ut_type`
/// at 0, `ut_pid` at 4, `ut_line` at 8 (32 bytes), `ut_user` at 44 (32
/// bytes)): `USER_PROCESS` entries whose process `alive` says still runs,
/// as "user@line". The same entries `wall` writes to.
pub fn utmp_users(data: &[u8], alive: impl Fn(i32) -> bool) -> Vec<String> {
    const REC: usize = 384;
    const USER_PROCESS: i16 = 7;
    let cstr = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let mut out = Vec::new();
    for r in data.chunks_exact(REC) {
        let ty = i16::from_le_bytes([r[0], r[1]]);
        let pid = i32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        let line = cstr(&r[8..40]);
        let user = cstr(&r[44..76]);
        if ty == USER_PROCESS && !user.is_empty() && alive(pid) {
            out.push(format!("{user}@{line}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RebootStrategy, Windows};
    use keel_lock::LockStatus;
    use std::cell::RefCell;

    struct FakeLock {
        answers: RefCell<Vec<Result<Acquire, LockError>>>,
        log: RefCell<Vec<&'static str>>,
    }

    impl RebootLock for FakeLock {
        fn id(&self) -> &str {
            "m1"
        }
        fn acquire(&self) -> Result<Acquire, LockError> {
            self.log.borrow_mut().push("acquire");
            self.answers.borrow_mut().remove(0)
        }
        fn release(&self) -> Result<Release, LockError> {
            self.log.borrow_mut().push("release");
            Ok(Release::Released)
        }
        fn status(&self) -> Result<LockStatus, LockError> {
            Ok(LockStatus {
                source: "fake".into(),
                exists: true,
                max: 1,
                available: 0,
                holders: vec!["other".into()],
                since: vec![None],
            })
        }
    }

    struct FakeHost {
        now: i64,
        users: Vec<String>,
        log: Vec<String>,
    }

    impl RebootHost for FakeHost {
        fn now(&self) -> jiff::Timestamp {
            jiff::Timestamp::from_second(self.now).expect("ts")
        }
        fn users(&self) -> Vec<String> {
            self.users.clone()
        }
        fn wall(&mut self, m: &str) -> Result<(), String> {
            self.log.push(format!("wall {m}"));
            Ok(())
        }
        fn reboot(&mut self) -> Result<(), String> {
            self.log.push("reboot".into());
            Ok(())
        }
    }

    fn unreachable() -> LockError {
        keel_lock::etcd::EtcdError::Unreachable {
            reasons: vec!["http://e:2379: connection refused".into()],
        }
        .into()
    }

    /// Window, lock (busy, then etcd down, then taken), warning, grace,
    /// reboot: in that order, never a reboot without the lock.
    #[test]
    fn window_then_lock_then_warning_then_reboot() {
        let t = tempfile::tempdir().expect("tmp");
        let rec = t.path().join(LOCK_RECORD);
        // 2026-12-05 is a Saturday; window Sat 02:00 UTC for 2 h.
        let sched = Schedule::from_toml(
            "[[window]]\ndays = [\"Sat\"]\nstart_time = \"02:00\"\nlength_minutes = 120\n",
        )
        .expect("schedule");
        let settings = Ok(RebootSettings {
            strategy: RebootStrategy::EtcdLock,
            windows: Some(Windows {
                schedule: sched.clone(),
                path: "x".into(),
            }),
            grace_period: Duration::from_secs(300),
            ..RebootSettings::default()
        });
        let friday: i64 = "2026-12-04T23:00:00Z"
            .parse::<jiff::Timestamp>()
            .expect("ts")
            .as_second();
        let mut host = FakeHost {
            now: friday,
            users: vec!["core@pts/0".into()],
            log: vec![],
        };
        let lock = FakeLock {
            answers: RefCell::new(vec![
                Ok(Acquire::Busy {
                    detail: "1 of 1 slots taken by other".into(),
                }),
                Err(unreachable()),
                Ok(Acquire::Taken),
            ]),
            log: RefCell::new(vec![]),
        };
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
        };
        let mut c = Coordinator::new(rec.clone(), backoff);
        let mut st = RebootStatus::default();
        let step = |c: &mut Coordinator, host: &mut FakeHost, st: &mut RebootStatus| {
            c.step("0.2.0", &settings, Some(&sched), Some(&lock), host, st)
        };
        // Closed: wait (at most 10 min at a time), no lock attempt.
        assert_eq!(
            step(&mut c, &mut host, &mut st),
            Next::After(Duration::from_secs(600))
        );
        assert_eq!(st.waiting_for, "window");
        assert_eq!(st.window_opens.as_deref(), Some("2026-12-05T02:00:00Z"));
        assert!(
            c.wait.contains("opens at 2026-12-05T02:00:00Z"),
            "{}",
            c.wait
        );
        assert!(lock.log.borrow().is_empty());
        // Open: busy, then unreachable: wait and retry, no reboot.
        host.now = friday + 3 * 3600 + 60;
        assert!(matches!(step(&mut c, &mut host, &mut st), Next::After(_)));
        assert_eq!(st.waiting_for, "lock");
        assert_eq!(st.lock_holders, vec!["other".to_string()]);
        assert!(matches!(step(&mut c, &mut host, &mut st), Next::After(_)));
        assert!(st
            .error
            .as_deref()
            .unwrap_or("")
            .contains("etcd unreachable"));
        assert!(c.wait.contains("never rebooting without it"), "{}", c.wait);
        assert!(host.log.is_empty());
        assert!(!rec.exists());
        // Taken: record written, users warned, grace period.
        assert!(matches!(step(&mut c, &mut host, &mut st), Next::After(_)));
        assert!(c.lock_held && st.lock_held);
        assert_eq!(LockRecord::load(&rec).expect("record").version, "0.2.0");
        assert_eq!(host.log.len(), 1);
        assert!(
            host.log[0].starts_with("wall keel-update: this machine reboots into 0.2.0 in 5 min")
        );
        assert_eq!(st.waiting_for, "users");
        // The window closing during the grace period does not stop it.
        host.now += 2 * 3600;
        assert_eq!(step(&mut c, &mut host, &mut st), Next::Rebooted);
        assert_eq!(host.log.last().map(String::as_str), Some("reboot"));
        assert_eq!(*lock.log.borrow(), ["acquire", "acquire", "acquire"]);
        release(&lock, &rec).expect("release");
        assert!(!rec.exists());
    }

    #[test]
    fn nobody_logged_in_reboots_without_warning_and_off_holds() {
        let t = tempfile::tempdir().expect("tmp");
        let mut host = FakeHost {
            now: 1_000_000,
            users: vec![],
            log: vec![],
        };
        let mut c = Coordinator::new(t.path().join(LOCK_RECORD), Backoff::default());
        let mut st = RebootStatus::default();
        let imm = Ok(RebootSettings::default());
        assert_eq!(
            c.step("2", &imm, None, None, &mut host, &mut st),
            Next::Rebooted
        );
        assert_eq!(host.log, ["reboot"]);
        assert_eq!(st.strategy, "immediate");
        let off = Ok(RebootSettings::of(RebootStrategy::Off));
        assert_eq!(
            c.step("2", &off, None, None, &mut host, &mut st),
            Next::Hold
        );
        let bad = Err(ConfigError::Invalid {
            path: "/etc/keel/update.d/x.toml".into(),
            key: "reboot.strategy",
            message: "unknown reboot strategy \"later\"".into(),
        });
        assert_eq!(
            c.step("2", &bad, None, None, &mut host, &mut st),
            Next::Hold
        );
        assert_eq!(st.strategy, "invalid");
        assert!(c.wait.contains("x.toml: key reboot.strategy"), "{}", c.wait);
        assert_eq!(host.log, ["reboot"], "no second reboot");
    }

    #[test]
    fn utmp_user_process_entries() {
        let mut data = vec![0u8; 384 * 3];
        let mut rec = |i: usize, ty: i16, pid: i32, line: &str, user: &str| {
            let r = &mut data[i * 384..(i + 1) * 384];
            r[0..2].copy_from_slice(&ty.to_le_bytes());
            r[4..8].copy_from_slice(&pid.to_le_bytes());
            r[8..8 + line.len()].copy_from_slice(line.as_bytes());
            r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        };
        rec(0, 2, 0, "~", "reboot");
        rec(1, 7, 42, "pts/0", "core");
        rec(2, 7, 43, "pts/1", "gone");
        assert_eq!(utmp_users(&data, |p| p == 42), ["core@pts/0"]);
        assert!(utmp_users(&data[..100], |_| true).is_empty());
    }
}

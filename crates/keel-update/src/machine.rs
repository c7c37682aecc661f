//! The pure core: the agent's states, which version to apply and why not,
//! when to check next, and what a boot after staging means. No clock, no
//! network, no disk: callers pass in "now", the channel's versions and what
//! the boot record says, and get plain data back (as keel-bootctl's
//! `slots.rs` does for the GPT attributes).
//!
//! Generic over the version type so the rules are tested with plain
//! numbers; the agent uses `keel_release::Version`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use keel_lock::window::WindowState;

use crate::config::{ConfigError, RebootSettings, RebootStrategy, Settings};

/// First check after the agent starts (the boot settles first; Zincati and
/// update_engine wait a few minutes too).
pub const FIRST_CHECK_DELAY: Duration = Duration::from_secs(5 * 60);
/// First retry after a failed check.
pub const BACKOFF_BASE: Duration = Duration::from_secs(60);
/// Longest wait after failures (never longer than the interval either).
pub const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);
/// Random spread of each wait, as a fraction of it (so a fleet does not hit
/// the server in step).
pub const JITTER: f64 = 0.1;

/// What the agent is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Waiting for the next check.
    Idle,
    /// Asking the server for the channel.
    Checking,
    /// Fetching and writing chunks.
    Downloading {
        /// 0-100.
        percent: u8,
    },
    /// Re-reading what was written and comparing it with the manifest.
    Verifying,
    /// The new slot boots next; a reboot is needed.
    Staged {
        /// The version staged.
        version: String,
    },
    /// Rebooting into the staged version.
    Rebooting {
        /// The version staged.
        version: String,
    },
    /// The machine came back on the old slot after staging a version.
    RolledBack {
        /// The version that did not stick.
        version: String,
        /// Why.
        why: String,
    },
    /// The last attempt failed; the agent retries with backoff.
    Error {
        /// What failed.
        message: String,
    },
}

impl State {
    /// The short name `status` prints (`STATE=`), update_engine style.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Checking => "checking",
            State::Downloading { .. } => "downloading",
            State::Verifying => "verifying",
            State::Staged { .. } => "staged",
            State::Rebooting { .. } => "rebooting",
            State::RolledBack { .. } => "rolled_back",
            State::Error { .. } => "error",
        }
    }
}

/// A version this machine will not apply again (it was staged and the
/// machine came back on the old slot), until a newer one appears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// The version.
    pub version: String,
    /// Why it was blocked.
    pub why: String,
    /// When (seconds since the epoch).
    pub at: u64,
}

/// What to do with the channel's offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<V> {
    /// Nothing newer: the running version is the channel's newest.
    UpToDate {
        /// The newest version the channel lists (None: an empty channel).
        newest: Option<V>,
    },
    /// Already written and set to boot next.
    AlreadyStaged(V),
    /// Apply this version.
    Apply(V),
    /// The newest version is older than the running one.
    RefuseDowngrade {
        /// The channel's newest.
        offered: V,
    },
    /// The newest version rolled back here before.
    RefuseBlocked {
        /// The version.
        offered: V,
        /// Why it was blocked.
        why: String,
    },
}

/// Choose what to do: the channel's newest version is the target (a channel
/// moves forward; a rollback of the channel itself is a downgrade and needs
/// `allow_downgrade`).
pub fn decide<V: Ord + Clone + fmt::Display>(
    current: &V,
    offered: &[V],
    allow_downgrade: bool,
    blocked: &[Blocked],
    staged: Option<&V>,
) -> Decision<V> {
    let Some(newest) = offered.iter().max().cloned() else {
        return Decision::UpToDate { newest: None };
    };
    if &newest == current {
        return Decision::UpToDate {
            newest: Some(newest),
        };
    }
    if let Some(b) = blocked.iter().find(|b| b.version == newest.to_string()) {
        return Decision::RefuseBlocked {
            offered: newest,
            why: b.why.clone(),
        };
    }
    if &newest < current && !allow_downgrade {
        return Decision::RefuseDowngrade { offered: newest };
    }
    if staged == Some(&newest) {
        return Decision::AlreadyStaged(newest);
    }
    Decision::Apply(newest)
}

/// Why the manifest's own rule refuses the update.
pub fn check_min_version<V: Ord + fmt::Display>(
    current: &V,
    target: &V,
    min_from: Option<&V>,
) -> Result<(), String> {
    match min_from {
        Some(m) if current < m => Err(format!(
            "{target} updates only from {m} or newer; this machine runs {current} (update to an intermediate version first)"
        )),
        _ => Ok(()),
    }
}

/// When the next check is due (seconds on a monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Time between successful checks.
    pub interval: Duration,
    /// Consecutive failures so far.
    pub failures: u32,
}

impl Schedule {
    /// A schedule for `interval`, no failures.
    pub fn new(interval: Duration) -> Self {
        Schedule {
            interval,
            failures: 0,
        }
    }

    /// The wait before the first check after start.
    pub fn first(&self, rand01: f64) -> Duration {
        jitter(FIRST_CHECK_DELAY.min(self.interval), rand01)
    }

    /// The wait after a successful check.
    pub fn after_success(&mut self, rand01: f64) -> Duration {
        self.failures = 0;
        jitter(self.interval, rand01)
    }

    /// The wait after a failed one: 1 min, 2, 4, … up to the interval (and
    /// at most 6 h), each with jitter.
    pub fn after_error(&mut self, rand01: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let d = BACKOFF_BASE
            .saturating_mul(1u32 << exp)
            .min(BACKOFF_MAX)
            .min(self.interval.max(BACKOFF_BASE));
        jitter(d, rand01)
    }
}

/// `d` spread by ±[`JITTER`] according to `rand01` in [0, 1).
pub fn jitter(d: Duration, rand01: f64) -> Duration {
    let r = rand01.clamp(0.0, 1.0);
    let f = 1.0 + JITTER * (2.0 * r - 1.0);
    Duration::from_secs_f64(d.as_secs_f64() * f)
}

/// What the agent recorded when it set a slot to boot next, kept in
/// `/var/lib/keel/update/pending.json` until the next boot reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The version staged.
    pub version: String,
    /// The slot it was written into ("A" or "B").
    pub slot: String,
    /// The version that was running when it was staged.
    pub from_version: String,
    /// When (seconds since the epoch).
    pub at: u64,
    /// The boot it was staged in (`/proc/sys/kernel/random/boot_id`).
    #[serde(default)]
    pub boot_id: String,
    /// Why the agent itself rolled the version back (set before the
    /// rollback reboot, read by the next boot's judgement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// What a start of the agent concludes from a pending record and the boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOutcome {
    /// No update was pending.
    Nothing,
    /// Still before the reboot (same boot as the staging): staged.
    StillStaged,
    /// The machine runs the staged version: the update took.
    Updated,
    /// The machine came back on the old slot: block the version.
    RolledBack {
        /// The version.
        version: String,
        /// Why, for `status` and the blocked list.
        why: String,
    },
}

/// Judge a start of the agent. `boot_id_changed`: the pending record was
/// written in an earlier boot. `failed`: keel-init's reasons for slots it
/// tried and did not use this boot (`(slot, reason)`).
pub fn judge_boot(
    pending: Option<&Pending>,
    boot_id_changed: bool,
    booted_slot: Option<&str>,
    running_version: &str,
    failed: &[(String, String)],
) -> BootOutcome {
    let Some(p) = pending else {
        return BootOutcome::Nothing;
    };
    if !boot_id_changed {
        return BootOutcome::StillStaged;
    }
    if booted_slot == Some(p.slot.as_str()) && running_version == p.version {
        return BootOutcome::Updated;
    }
    let why = match failed.iter().find(|(s, _)| *s == p.slot) {
        _ if p.why.is_some() => p.why.clone().unwrap_or_default(),
        Some((s, r)) => format!("USR-{s} failed at boot: {r}"),
        None => format!(
            "the machine booted USR-{} ({running_version}) instead of USR-{} (the new kernel or /usr did not come up, or its try was used up)",
            booted_slot.unwrap_or("?"),
            p.slot
        ),
    };
    BootOutcome::RolledBack {
        version: p.version.clone(),
        why,
    }
}

/// An updated slot on trial: marked good in time, still waiting, or out of
/// time (roll back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trial {
    /// The slot was marked good (GPT successful).
    Proven,
    /// Not yet; this long is left.
    Waiting(Duration),
    /// Not marked good within the timeout since boot.
    Expired,
}

/// Judge a slot on trial: `successful` from its GPT attributes, `uptime`
/// since this boot, `timeout` from `[health] timeout`.
pub fn trial(successful: bool, uptime: Duration, timeout: Duration) -> Trial {
    if successful {
        Trial::Proven
    } else if uptime >= timeout {
        Trial::Expired
    } else {
        Trial::Waiting(timeout - uptime)
    }
}

/// The sentence `status` prints as `WHY_NO_UPDATE`: why the machine is not
/// on its way to a newer version right now (empty when it is).
pub fn why_no_update<V: fmt::Display>(
    settings: &Settings,
    state: &State,
    decision: Option<&Decision<V>>,
    current: &str,
    config_error: Option<&str>,
    reboot_wait: Option<&str>,
) -> String {
    if let Some(e) = config_error {
        return format!("the configuration is invalid ({e}); running with the last good one");
    }
    if !settings.enabled {
        return "updates are disabled (enabled = false)".into();
    }
    if settings.base_url.is_none() {
        return "no release server configured (base_url, or SERVER= in update.conf)".into();
    }
    match state {
        State::Staged { version } => {
            return match (&settings.reboot, reboot_wait) {
                (Err(e), _) => format!(
                    "{version} is staged; not rebooting: the reboot settings are invalid ({e})"
                ),
                (Ok(r), _) if r.strategy == RebootStrategy::Off => {
                    format!("{version} is staged; the reboot strategy is off: reboot to use it")
                }
                (Ok(_), Some(w)) if !w.is_empty() => format!("{version} is staged; {w}"),
                (Ok(_), _) => format!("{version} is staged; rebooting"),
            }
        }
        State::Rebooting { version } => return format!("rebooting into {version}"),
        State::Checking | State::Downloading { .. } | State::Verifying => return String::new(),
        State::Error { message } => {
            return format!("the last attempt failed: {message}; retrying with backoff")
        }
        State::Idle | State::RolledBack { .. } => {}
    }
    match decision {
        None => "no check yet".into(),
        Some(Decision::UpToDate { newest: None }) => format!(
            "channel {} lists no versions",
            settings.channel
        ),
        Some(Decision::UpToDate { newest: Some(_) }) => format!(
            "up to date: {current} is the newest version on channel {}",
            settings.channel
        ),
        Some(Decision::AlreadyStaged(v)) => format!("{v} is staged: reboot to use it"),
        Some(Decision::Apply(_)) => String::new(),
        Some(Decision::RefuseDowngrade { offered }) => format!(
            "channel {}'s newest version {offered} is older than the running {current} (allow_downgrade = false)",
            settings.channel
        ),
        Some(Decision::RefuseBlocked { offered, why }) => format!(
            "{offered} is blocked on this machine ({why}); waiting for a newer version"
        ),
    }
}

/// Whether this host holds the reboot lock, as far as the agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockHold {
    /// The strategy takes no lock.
    NotNeeded,
    /// Taken (now or before, in this boot).
    Held,
    /// Not taken yet.
    NotHeld,
}

/// What the agent knows while a version is staged and it considers rebooting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootFacts {
    /// The windows' state now (None: no windows configured).
    pub window: Option<WindowState>,
    /// The lock.
    pub lock: LockHold,
    /// Users logged in now.
    pub users: Vec<String>,
    /// When they were warned (seconds since the epoch), if they were.
    pub warned: Option<u64>,
    /// Now (seconds since the epoch).
    pub now: u64,
}

/// The next step towards the reboot into a staged version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootStep {
    /// Do not reboot (strategy off, or invalid reboot settings): why.
    Hold(String),
    /// Outside every window: wait until this host's part of the next opens.
    WaitWindow {
        /// When it opens.
        opens: jiff::Timestamp,
    },
    /// Inside a window (or none configured): take the lock.
    TakeLock,
    /// Users are logged in: send the `wall` warning now.
    Warn,
    /// Warned: wait for the grace period to end.
    Grace {
        /// When it ends (seconds since the epoch).
        until: u64,
    },
    /// Reboot now.
    Reboot,
}

/// The order of events after staging: window → lock → warning and grace
/// period (only when someone is logged in) → reboot. A lock already held
/// (taken earlier in this boot) skips the window: it was taken inside one,
/// and holding it while waiting would stall the fleet. A window closing
/// during the grace period does not stop a reboot whose users were warned.
pub fn reboot_step(reboot: &Result<RebootSettings, ConfigError>, f: &RebootFacts) -> RebootStep {
    let r = match reboot {
        Ok(r) => r,
        Err(e) => {
            return RebootStep::Hold(format!(
                "not rebooting: the reboot settings are invalid ({e})"
            ))
        }
    };
    if r.strategy == RebootStrategy::Off {
        return RebootStep::Hold("the reboot strategy is off: reboot to use it".into());
    }
    if f.lock != LockHold::Held {
        if let Some(WindowState::Closed { opens }) = f.window {
            return RebootStep::WaitWindow { opens };
        }
        if f.lock == LockHold::NotHeld {
            return RebootStep::TakeLock;
        }
    }
    if !f.users.is_empty() && !r.grace_period.is_zero() {
        let grace = r.grace_period.as_secs();
        match f.warned {
            None => return RebootStep::Warn,
            Some(t) if f.now < t.saturating_add(grace) => {
                return RebootStep::Grace {
                    until: t.saturating_add(grace),
                }
            }
            Some(_) => {}
        }
    }
    RebootStep::Reboot
}

/// Whether to give the reboot lock back now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockRelease {
    /// A version is staged in this boot: the lock is for its reboot.
    Keep,
    /// The boot is not good yet (its slot is not marked successful).
    WaitForGoodBoot,
    /// The boot is good: release.
    Release,
}

/// After a reboot (into the new version, or back after a rollback) the
/// lock is released only once this boot is good: its slot marked
/// successful, which keel-bootctl does after boot-complete.target. The
/// same holds for a host that starts holding a lock from before.
pub fn lock_release(staged_this_boot: bool, booted_slot_good: bool) -> LockRelease {
    if staged_this_boot {
        LockRelease::Keep
    } else if !booted_slot_good {
        LockRelease::WaitForGoodBoot
    } else {
        LockRelease::Release
    }
}

/// The `wall` message before a reboot.
pub fn wall_message(version: &str, grace: std::time::Duration) -> String {
    let m = grace.as_secs() / 60;
    let s = grace.as_secs() % 60;
    let when = match (m, s) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    };
    format!(
        "keel-update: this machine reboots into {version} in {when} to finish an update. Save your work and log out."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(v: &str) -> Blocked {
        Blocked {
            version: v.into(),
            why: "USR-B failed at boot: verity".into(),
            at: 1,
        }
    }

    #[test]
    fn newest_version_is_applied() {
        assert_eq!(decide(&1, &[1, 3, 2], false, &[], None), Decision::Apply(3));
        assert_eq!(
            decide(&3, &[1, 3, 2], false, &[], None),
            Decision::UpToDate { newest: Some(3) }
        );
        assert_eq!(
            decide::<u32>(&3, &[], false, &[], None),
            Decision::UpToDate { newest: None }
        );
        assert_eq!(
            decide(&1, &[2], false, &[], Some(&2)),
            Decision::AlreadyStaged(2)
        );
    }

    #[test]
    fn downgrade_refused_unless_allowed() {
        assert_eq!(
            decide(&5, &[3, 4], false, &[], None),
            Decision::RefuseDowngrade { offered: 4 }
        );
        assert_eq!(decide(&5, &[3, 4], true, &[], None), Decision::Apply(4));
    }

    #[test]
    fn blocked_until_a_newer_one_appears() {
        let b = [blocked("2")];
        assert_eq!(
            decide(&1, &[1, 2], false, &b, None),
            Decision::RefuseBlocked {
                offered: 2,
                why: "USR-B failed at boot: verity".into()
            }
        );
        assert_eq!(decide(&1, &[1, 2, 3], false, &b, None), Decision::Apply(3));
    }

    #[test]
    fn min_version() {
        assert!(check_min_version(&3, &5, Some(&2)).is_ok());
        assert!(check_min_version(&3, &5, None).is_ok());
        let e = check_min_version(&1, &5, Some(&2)).expect_err("too old");
        assert!(e.contains("5 updates only from 2 or newer"), "{e}");
    }

    #[test]
    fn schedule_first_check_interval_jitter_and_backoff() {
        let mut s = Schedule::new(Duration::from_secs(3600));
        assert_eq!(s.first(0.5), FIRST_CHECK_DELAY);
        assert_eq!(s.first(0.0), Duration::from_secs(270));
        assert_eq!(s.first(1.0), Duration::from_secs(330));
        assert_eq!(s.after_success(0.5), Duration::from_secs(3600));
        let waits: Vec<u64> = (0..8).map(|_| s.after_error(0.5).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(s.failures, 8);
        assert_eq!(s.after_success(0.5), Duration::from_secs(3600));
        assert_eq!(s.failures, 0);
        // A short interval caps the backoff; an interval shorter than the
        // boot delay brings the first check forward.
        let mut s = Schedule::new(Duration::from_secs(30));
        assert_eq!(s.first(0.5), Duration::from_secs(30));
        assert_eq!(s.after_error(0.5), Duration::from_secs(60));
        assert_eq!(s.after_error(0.5), Duration::from_secs(60));
        // Many failures never overflow.
        let mut s = Schedule::new(Duration::from_secs(86400 * 7));
        for _ in 0..100 {
            s.after_error(0.99);
        }
        assert!(s.after_error(0.5) <= BACKOFF_MAX);
    }

    fn pending() -> Pending {
        Pending {
            version: "0.2.0".into(),
            slot: "B".into(),
            from_version: "0.1.0".into(),
            at: 5,
            boot_id: "b1".into(),
            why: None,
        }
    }

    #[test]
    fn boot_after_staging() {
        let p = pending();
        assert_eq!(
            judge_boot(None, true, Some("A"), "0.1.0", &[]),
            BootOutcome::Nothing
        );
        assert_eq!(
            judge_boot(Some(&p), false, Some("A"), "0.1.0", &[]),
            BootOutcome::StillStaged
        );
        assert_eq!(
            judge_boot(Some(&p), true, Some("B"), "0.2.0", &[]),
            BootOutcome::Updated
        );
        let failed = [("B".to_string(), "dm-verity rejected the data".to_string())];
        assert_eq!(
            judge_boot(Some(&p), true, Some("A"), "0.1.0", &failed),
            BootOutcome::RolledBack {
                version: "0.2.0".into(),
                why: "USR-B failed at boot: dm-verity rejected the data".into()
            }
        );
        match judge_boot(Some(&p), true, Some("A"), "0.1.0", &[]) {
            BootOutcome::RolledBack { why, .. } => {
                assert!(
                    why.contains("booted USR-A (0.1.0) instead of USR-B"),
                    "{why}"
                )
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn trial_of_an_updated_slot() {
        let t = Duration::from_secs(600);
        assert_eq!(trial(true, Duration::from_secs(5000), t), Trial::Proven);
        assert_eq!(
            trial(false, Duration::from_secs(100), t),
            Trial::Waiting(Duration::from_secs(500))
        );
        assert_eq!(trial(false, Duration::from_secs(600), t), Trial::Expired);
        // The agent's own reason wins over a generic one.
        let mut p = pending();
        p.why = Some("0.2.0 was not marked good within 600 s".into());
        assert_eq!(
            judge_boot(Some(&p), true, Some("A"), "0.1.0", &[]),
            BootOutcome::RolledBack {
                version: "0.2.0".into(),
                why: "0.2.0 was not marked good within 600 s".into()
            }
        );
    }

    #[test]
    fn why_no_update_says_why() {
        let mut s = Settings {
            base_url: Some("https://u.example".into()),
            ..Settings::default()
        };
        let w = |s: &Settings, st: &State, d: Option<&Decision<u32>>| {
            why_no_update(s, st, d, "1", None, None)
        };
        assert_eq!(w(&s, &State::Idle, None), "no check yet");
        assert_eq!(
            w(
                &s,
                &State::Idle,
                Some(&Decision::UpToDate { newest: Some(1) })
            ),
            "up to date: 1 is the newest version on channel stable"
        );
        assert!(w(
            &s,
            &State::Idle,
            Some(&Decision::RefuseDowngrade { offered: 0 })
        )
        .contains("older than the running 1 (allow_downgrade = false)"));
        assert!(w(
            &s,
            &State::Idle,
            Some(&Decision::RefuseBlocked {
                offered: 2,
                why: "x".into()
            })
        )
        .starts_with("2 is blocked on this machine (x)"));
        assert_eq!(w(&s, &State::Downloading { percent: 3 }, None), "");
        s.reboot = Ok(RebootSettings::of(RebootStrategy::Off));
        assert_eq!(
            w(
                &s,
                &State::Staged {
                    version: "2".into()
                },
                None
            ),
            "2 is staged; the reboot strategy is off: reboot to use it"
        );
        assert!(w(
            &s,
            &State::Error {
                message: "timed out".into()
            },
            None
        )
        .contains("timed out"));
        s.enabled = false;
        assert_eq!(
            w(&s, &State::Idle, None),
            "updates are disabled (enabled = false)"
        );
        s.enabled = true;
        s.base_url = None;
        assert!(w(&s, &State::Idle, None).starts_with("no release server configured"));
        assert!(
            why_no_update::<u32>(&s, &State::Idle, None, "1", Some("bad"), None)
                .starts_with("the configuration is invalid (bad)")
        );
    }

    #[test]
    fn state_names_and_json() {
        let st = State::Downloading { percent: 40 };
        assert_eq!(st.name(), "downloading");
        assert_eq!(
            serde_json::to_string(&st).expect("json"),
            r#"{"state":"downloading","percent":40}"#
        );
    }

    fn facts(window: Option<WindowState>, lock: LockHold, users: &[&str]) -> RebootFacts {
        RebootFacts {
            window,
            lock,
            users: users.iter().map(|u| u.to_string()).collect(),
            warned: None,
            now: 1000,
        }
    }

    #[test]
    fn reboot_steps_in_order() {
        let ts = |s: i64| jiff::Timestamp::from_second(s).expect("ts");
        let lock = Ok(RebootSettings {
            grace_period: Duration::from_secs(60),
            ..RebootSettings::of(RebootStrategy::EtcdLock)
        });
        let closed = Some(WindowState::Closed { opens: ts(5000) });
        let open = Some(WindowState::Open { closes: ts(5000) });
        // Outside the window: wait, even for the lock.
        assert_eq!(
            reboot_step(&lock, &facts(closed, LockHold::NotHeld, &[])),
            RebootStep::WaitWindow { opens: ts(5000) }
        );
        // Inside (or no windows): the lock first.
        assert_eq!(
            reboot_step(&lock, &facts(open, LockHold::NotHeld, &["core@pts/0"])),
            RebootStep::TakeLock
        );
        assert_eq!(
            reboot_step(&lock, &facts(None, LockHold::NotHeld, &[])),
            RebootStep::TakeLock
        );
        // A lock already held skips the window.
        assert_eq!(
            reboot_step(&lock, &facts(closed, LockHold::Held, &[])),
            RebootStep::Reboot
        );
        // Users: warn, wait the grace period, then reboot.
        let mut f = facts(open, LockHold::Held, &["core@pts/0"]);
        assert_eq!(reboot_step(&lock, &f), RebootStep::Warn);
        f.warned = Some(1000);
        f.now = 1030;
        assert_eq!(reboot_step(&lock, &f), RebootStep::Grace { until: 1060 });
        f.now = 1060;
        assert_eq!(reboot_step(&lock, &f), RebootStep::Reboot);
        // A grace period of 0 never waits.
        let nowait = Ok(RebootSettings {
            grace_period: Duration::ZERO,
            ..RebootSettings::default()
        });
        assert_eq!(
            reboot_step(&nowait, &facts(None, LockHold::NotNeeded, &["u@tty1"])),
            RebootStep::Reboot
        );
        // Periodic: the window alone.
        let periodic = Ok(RebootSettings::of(RebootStrategy::Periodic));
        assert_eq!(
            reboot_step(&periodic, &facts(closed, LockHold::NotNeeded, &[])),
            RebootStep::WaitWindow { opens: ts(5000) }
        );
        assert_eq!(
            reboot_step(&periodic, &facts(open, LockHold::NotNeeded, &[])),
            RebootStep::Reboot
        );
        // Off and invalid settings hold.
        let off = Ok(RebootSettings::of(RebootStrategy::Off));
        assert!(matches!(
            reboot_step(&off, &facts(None, LockHold::NotNeeded, &[])),
            RebootStep::Hold(w) if w.contains("strategy is off")
        ));
        let bad = Err(ConfigError::Invalid {
            path: "/etc/flatcar/update.conf".into(),
            key: "REBOOT_STRATEGY",
            message: "unknown reboot strategy \"sometimes\"".into(),
        });
        assert!(matches!(
            reboot_step(&bad, &facts(None, LockHold::Held, &[])),
            RebootStep::Hold(w) if w.contains("/etc/flatcar/update.conf: key REBOOT_STRATEGY")
        ));
    }

    #[test]
    fn lock_released_only_after_a_good_boot() {
        assert_eq!(lock_release(true, true), LockRelease::Keep);
        assert_eq!(lock_release(true, false), LockRelease::Keep);
        assert_eq!(lock_release(false, false), LockRelease::WaitForGoodBoot);
        assert_eq!(lock_release(false, true), LockRelease::Release);
        assert_eq!(
            wall_message("0.2.0", Duration::from_secs(90)),
            "keel-update: this machine reboots into 0.2.0 in 1 min 30 s to finish an update. Save your work and log out."
        );
    }

    #[test]
    fn why_no_update_names_what_the_reboot_waits_for() {
        let mut s = Settings {
            base_url: Some("https://u.example".into()),
            ..Settings::default()
        };
        let st = State::Staged {
            version: "2".into(),
        };
        assert_eq!(
            why_no_update::<u32>(
                &s,
                &st,
                None,
                "1",
                None,
                Some("waiting for the maintenance window, which opens at X")
            ),
            "2 is staged; waiting for the maintenance window, which opens at X"
        );
        s.reboot = Err(ConfigError::Invalid {
            path: "/etc/keel/update.d/r.toml".into(),
            key: "reboot.strategy",
            message: "unknown reboot strategy \"later\"".into(),
        });
        assert!(why_no_update::<u32>(&s, &st, None, "1", None, None)
            .starts_with("2 is staged; not rebooting: the reboot settings are invalid (/etc/keel/update.d/r.toml: key reboot.strategy"));
    }
}

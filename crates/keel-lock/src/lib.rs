//! Fleet reboot coordination for Keel: when a host may reboot, and who else
//! is rebooting.
//!
//! Owns:
//! - [`window`]: maintenance windows of the `periodic` strategy (pure, fake
//!   clock in tests); reads locksmith's `LOCKSMITHD_REBOOT_WINDOW_START` /
//!   `_LENGTH` forms and a Zincati-style TOML form; zones from the system's
//!   tz database (`/usr/share/zoneinfo`).
//! - [`semaphore`]: locksmith's semaphore value and its operations.
//! - [`etcd`]: the `etcd_lock` strategy, a counting semaphore in etcd v3 over
//!   the HTTP/JSON gateway, at locksmith's key names.
//! - [`fleetlock`]: the `fleet_lock` strategy, the FleetLock HTTP protocol.
//! - [`RebootLock`]: what the update agent sees of either lock, and
//!   [`acquire_blocking`], the retry-with-backoff loop around it.
//! - [`cli`]: the `keel-lock` tool (status, lock, unlock, set-max), with
//!   locksmithctl's options and `LOCKSMITHCTL_*` environment variables;
//!   it reads `/etc/machine-id`.

pub mod cli;
pub mod etcd;
pub mod fleetlock;
pub mod semaphore;
pub mod window;

use std::time::{Duration, Instant};

/// Result of one attempt to take the reboot lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// This host took a slot now.
    Taken,
    /// This host already held a slot (e.g. from before its reboot).
    AlreadyHeld,
    /// Every slot is taken; `detail` says by whom.
    Busy { detail: String },
}

/// Result of giving the lock back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The slot was given back.
    Released,
    /// This host held no slot (nothing changed).
    NotHeld,
}

/// What a lock looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockStatus {
    /// Where it was read ("etcd key … at …").
    pub source: String,
    /// Whether the key exists (absent reads as a fresh semaphore of max 1).
    pub exists: bool,
    /// Slots in total.
    pub max: i64,
    /// Free slots (negative after `max` was lowered below the holders).
    pub available: i64,
    /// Who holds a slot.
    pub holders: Vec<String>,
    /// Since when each of `holders` holds it (RFC 3339), where recorded.
    pub since: Vec<Option<String>>,
}

/// Errors of either lock client.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// From the etcd client.
    #[error(transparent)]
    Etcd(#[from] etcd::EtcdError),
    /// From the FleetLock client.
    #[error(transparent)]
    FleetLock(#[from] fleetlock::FleetLockError),
    /// `acquire_blocking` ran out of time.
    #[error("no reboot lock after {waited:?} ({last})")]
    TimedOut { waited: Duration, last: String },
}

impl LockError {
    /// Whether trying again later may succeed (etcd down, a lost race, a
    /// server error); configuration errors and a foreign value are not.
    pub fn is_transient(&self) -> bool {
        match self {
            LockError::Etcd(e) => e.is_transient(),
            LockError::FleetLock(e) => e.is_transient(),
            LockError::TimedOut { .. } => false,
        }
    }
}

/// A reboot lock: the `etcd_lock` and `fleet_lock` strategies of the
/// update agent. Each call is one attempt; [`acquire_blocking`] retries.
pub trait RebootLock {
    /// The id this host holds the lock as.
    fn id(&self) -> &str;
    /// Try to take a slot (idempotent while holding one).
    fn acquire(&self) -> Result<Acquire, LockError>;
    /// Give the slot back (idempotent).
    fn release(&self) -> Result<Release, LockError>;
    /// Who holds it (etcd only; FleetLock has no status request).
    fn status(&self) -> Result<LockStatus, LockError>;
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First pause.
    pub initial: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The pause after `attempt` failures (0-based): `initial · 2^attempt`,
    /// capped at `max`, then a random point in its upper half, so hosts
    /// that failed together do not retry together. `r` is in [0, 1).
    pub fn delay(&self, attempt: u32, r: f64) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
            .min(self.max);
        base.mul_f64(0.5 + 0.5 * r.clamp(0.0, 1.0))
    }
}

/// Take the lock, waiting while it is busy and retrying transient errors
/// with `backoff`, until `deadline` (None = forever). `sleep` is the pause
/// (a fake in tests). Permanent errors return at once.
pub fn acquire_blocking(
    lock: &dyn RebootLock,
    backoff: &Backoff,
    deadline: Option<Instant>,
    sleep: &mut dyn FnMut(Duration),
) -> Result<Acquire, LockError> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let last = match lock.acquire() {
            Ok(Acquire::Busy { detail }) => {
                tracing::info!(%detail, "reboot lock busy; waiting");
                detail
            }
            Ok(done) => return Ok(done),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "taking the reboot lock failed; retrying");
                e.to_string()
            }
            Err(e) => return Err(e),
        };
        let pause = backoff.delay(attempt, fastrand::f64());
        attempt = attempt.saturating_add(1);
        if let Some(d) = deadline {
            if Instant::now() + pause > d {
                return Err(LockError::TimedOut {
                    waited: started.elapsed(),
                    last,
                });
            }
        }
        sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Scripted {
        answers: RefCell<Vec<Result<Acquire, LockError>>>,
    }

    impl RebootLock for Scripted {
        fn id(&self) -> &str {
            "m"
        }
        fn acquire(&self) -> Result<Acquire, LockError> {
            self.answers.borrow_mut().remove(0)
        }
        fn release(&self) -> Result<Release, LockError> {
            Ok(Release::Released)
        }
        fn status(&self) -> Result<LockStatus, LockError> {
            Err(fleetlock::FleetLockError::Unsupported("status").into())
        }
    }

    fn unreachable() -> LockError {
        etcd::EtcdError::Unreachable {
            reasons: vec!["x".into()],
        }
        .into()
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert_eq!(b.delay(0, 0.999_999).as_millis(), 999);
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(b.delay(4, 0.0), Duration::from_secs(5));
        assert_eq!(b.delay(40, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn blocking_waits_through_busy_and_outages() {
        let lock = Scripted {
            answers: RefCell::new(vec![
                Ok(Acquire::Busy {
                    detail: "1 of 1".into(),
                }),
                Err(unreachable()),
                Ok(Acquire::Taken),
            ]),
        };
        let mut slept = Vec::new();
        let got = acquire_blocking(&lock, &Backoff::default(), None, &mut |d| slept.push(d))
            .expect("taken");
        assert_eq!(got, Acquire::Taken);
        assert_eq!(slept.len(), 2);
        assert!(slept[1] >= Duration::from_secs(1));
    }

    #[test]
    fn blocking_stops_on_permanent_errors_and_deadline() {
        let lock = Scripted {
            answers: RefCell::new(vec![Err(etcd::EtcdError::Config("bad".into()).into())]),
        };
        let e = acquire_blocking(&lock, &Backoff::default(), None, &mut |_| {}).expect_err("perm");
        assert!(!e.is_transient());
        let lock = Scripted {
            answers: RefCell::new(vec![Err(unreachable())]),
        };
        let e = acquire_blocking(
            &lock,
            &Backoff::default(),
            Some(Instant::now()),
            &mut |_| {},
        )
        .expect_err("deadline");
        assert!(e.to_string().contains("no reboot lock"), "{e}");
    }
}

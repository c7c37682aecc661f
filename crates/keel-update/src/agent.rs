//! One check, as the daemon, `keel-update check` and `keel-update apply`
//! run it: the channel, the decision ([`machine::decide`]), the manifest's
//! own rules, the transfer ([`update::stage`]), and the status on the way.
//! Effects come in through [`Effects`] (status publishing) and the
//! [`Source`], [`SlotDisk`] and [`BootInstaller`] handed in, so the whole
//! path runs in tests against fakes.

use keel_release::Version;

use crate::config::Settings;
use crate::disk::SlotDisk;
use crate::esp::BootInstaller;
use crate::machine::{self, Decision, State};
use crate::source::Source;
use crate::status::Status;
use crate::update::{self, Machine, StateDir, Step, UpdateError};

/// Where status changes go (status file, `STATUS=`, a progress bar).
pub trait Effects {
    /// The status changed.
    fn publish(&mut self, s: &Status);
    /// Download progress (called often; throttle inside).
    fn progress(&mut self, _done: u64, _total: u64) {}
    /// Wall clock, seconds since the epoch.
    fn now(&self) -> u64;
}

/// The agent's memory between checks.
#[derive(Debug)]
pub struct Agent {
    /// Settings in force (the last good ones).
    pub settings: Settings,
    /// The current config error, if the files are bad now.
    pub config_error: Option<String>,
    /// The machine.
    pub machine: Machine,
    /// Persistent state.
    pub state: StateDir,
    /// What `status` shows.
    pub status: Status,
    /// The version staged in this boot, if any.
    pub staged: Option<Version>,
    /// The last decision.
    pub decision: Option<Decision<Version>>,
    /// What the reboot into the staged version waits for (a sentence).
    pub reboot_wait: Option<String>,
}

/// What a check ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (see `why_no_update`).
    NoUpdate,
    /// A version was written and boots next.
    Staged(String),
    /// Already staged before this check.
    AlreadyStaged(String),
}

impl Agent {
    /// An agent for `machine` with `settings`.
    pub fn new(settings: Settings, machine: Machine, state: StateDir) -> Agent {
        let status = Status::new(
            machine.current.as_str(),
            &settings.channel,
            settings.base_url.as_deref(),
        );
        let mut a = Agent {
            settings,
            config_error: None,
            machine,
            state,
            status,
            staged: None,
            decision: None,
            reboot_wait: None,
        };
        a.status.blocked = a.state.blocked().unwrap_or_default();
        a
    }

    /// Refresh the derived fields and publish.
    pub fn set_state(&mut self, st: State, fx: &mut dyn Effects) {
        self.status.state = st;
        self.status.channel = self.settings.channel.clone();
        self.status.server = self.settings.base_url.clone();
        self.status.why_no_update = machine::why_no_update(
            &self.settings,
            &self.status.state,
            self.decision.as_ref(),
            self.machine.current.as_str(),
            self.config_error.as_deref(),
            self.reboot_wait.as_deref(),
        );
        fx.publish(&self.status);
    }

    /// Check the channel in `src` and apply what it offers (unless
    /// `dry_run`). Errors leave the state at `Error` with the message.
    pub fn check(
        &mut self,
        src: &mut dyn Source,
        disk: &mut dyn SlotDisk,
        esp: &mut dyn BootInstaller,
        fx: &mut dyn Effects,
        dry_run: bool,
    ) -> Result<Outcome, UpdateError> {
        self.set_state(State::Checking, fx);
        let r = self.check_inner(src, disk, esp, fx, dry_run);
        self.status.last_check = Some(fx.now());
        match &r {
            Ok(Outcome::Staged(v)) | Ok(Outcome::AlreadyStaged(v)) => {
                self.status.last_error = None;
                self.status.progress = 1.0;
                self.set_state(State::Staged { version: v.clone() }, fx);
            }
            Ok(Outcome::NoUpdate) => {
                self.status.last_error = None;
                self.status.progress = 0.0;
                self.set_state(State::Idle, fx);
            }
            Err(e) => {
                let message = e.to_string();
                self.status.last_error = Some(message.clone());
                self.set_state(State::Error { message }, fx);
            }
        }
        r
    }

    fn check_inner(
        &mut self,
        src: &mut dyn Source,
        disk: &mut dyn SlotDisk,
        esp: &mut dyn BootInstaller,
        fx: &mut dyn Effects,
        dry_run: bool,
    ) -> Result<Outcome, UpdateError> {
        let channel_name = self.settings.channel.clone();
        let channel = update::fetch_channel(src, &self.machine, &channel_name)?;
        let offered: Vec<Version> = channel.versions.iter().map(|e| e.version.clone()).collect();
        let blocked = self.state.blocked()?;
        self.status.blocked = blocked.clone();
        let d = machine::decide(
            &self.machine.current,
            &offered,
            self.settings.allow_downgrade,
            &blocked,
            self.staged.as_ref(),
        );
        self.decision = Some(d.clone());
        let target = match d {
            Decision::Apply(v) => v,
            Decision::AlreadyStaged(v) => return Ok(Outcome::AlreadyStaged(v.to_string())),
            _ => return Ok(Outcome::NoUpdate),
        };
        let entry = channel
            .find(&target)
            .ok_or_else(|| UpdateError::Policy(format!("{target} vanished from the channel")))?
            .clone();
        let release = update::fetch_manifest(src, &self.machine, &channel_name, &entry)?;
        machine::check_min_version(
            &self.machine.current,
            &release.manifest.version,
            release.manifest.min_version.as_ref(),
        )
        .map_err(UpdateError::Policy)?;
        self.status.new_version = Some(target.to_string());
        if dry_run {
            return Ok(Outcome::NoUpdate);
        }
        self.status.progress = 0.0;
        self.set_state(State::Downloading { percent: 0 }, fx);
        let mut last_pct = 0u8;
        let now = fx.now();
        // The step callback holds the status and effects while `stage`
        // holds the state directory and machine: borrow the fields apart.
        let status = &mut self.status;
        let settings = &self.settings;
        let current = self.machine.current.clone();
        let decision = self.decision.clone();
        let config_error = self.config_error.clone();
        let mut on_step = |s: Step| {
            let st = match s {
                Step::Download { done, total } => {
                    fx.progress(done, total);
                    let pct = (done.saturating_mul(100) / total.max(1)).min(100) as u8;
                    status.progress = done as f64 / total.max(1) as f64;
                    if pct == last_pct {
                        return;
                    }
                    last_pct = pct;
                    State::Downloading { percent: pct }
                }
                Step::Verifying | Step::Installing => State::Verifying,
            };
            if st == status.state {
                return;
            }
            status.state = st.clone();
            status.why_no_update = machine::why_no_update(
                settings,
                &st,
                decision.as_ref(),
                current.as_str(),
                config_error.as_deref(),
                None,
            );
            fx.publish(status);
        };
        let p = update::stage(
            src,
            disk,
            esp,
            &self.state,
            &self.machine,
            &release,
            now,
            &mut on_step,
        )?;
        self.staged = Some(target);
        Ok(Outcome::Staged(p.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::NoEsp;
    use crate::machine::Blocked;
    use crate::source::Dir;
    use keel_bootctl::slots::Slot;
    use keel_release::write::SigningKey;
    use keel_release::TrustedKeys;

    use crate::testtree as tree;

    /// Records what was published; the clock is whatever the test sets.
    #[derive(Default)]
    struct Fx {
        seen: Vec<Status>,
        clock: u64,
    }

    impl Effects for Fx {
        fn publish(&mut self, s: &Status) {
            self.seen.push(s.clone());
        }
        fn now(&self) -> u64 {
            self.clock
        }
    }

    /// The smallest disk fake: just enough to stage.
    #[derive(Default)]
    struct Disk {
        data: std::collections::BTreeMap<(Slot, bool), Vec<u8>>,
        next: Option<Slot>,
    }
    impl SlotDisk for Disk {
        fn capacity(
            &mut self,
            _: Slot,
            _: crate::disk::Target,
        ) -> Result<u64, crate::disk::SlotDiskError> {
            Ok(1 << 20)
        }
        fn write_at(
            &mut self,
            s: Slot,
            t: crate::disk::Target,
            o: u64,
            d: &[u8],
        ) -> Result<(), crate::disk::SlotDiskError> {
            let v = self
                .data
                .entry((s, t == crate::disk::Target::Usr))
                .or_insert_with(|| vec![0; 1 << 20]);
            v[o as usize..o as usize + d.len()].copy_from_slice(d);
            Ok(())
        }
        fn read_at(
            &mut self,
            s: Slot,
            t: crate::disk::Target,
            o: u64,
            b: &mut [u8],
        ) -> Result<(), crate::disk::SlotDiskError> {
            // A slot never written reads as zeros (the running slot, when
            // the transfer looks for chunks it already holds).
            match self.data.get(&(s, t == crate::disk::Target::Usr)) {
                Some(v) => b.copy_from_slice(&v[o as usize..o as usize + b.len()]),
                None => b.fill(0),
            }
            Ok(())
        }
        fn sync(&mut self) -> Result<(), crate::disk::SlotDiskError> {
            Ok(())
        }
        fn disable(&mut self, _: Slot) -> Result<(), crate::disk::SlotDiskError> {
            Ok(())
        }
        fn set_next(&mut self, s: Slot) -> Result<(), crate::disk::SlotDiskError> {
            self.next = Some(s);
            Ok(())
        }
    }

    fn setup(current: &str, versions: &[&str]) -> (tempfile::TempDir, Agent) {
        let t = tempfile::tempdir().expect("tmp");
        let key = SigningKey::generate().expect("key");
        let mut public = String::new();
        for v in versions {
            public = tree::build(
                &t.path().join("tree"),
                "stable",
                v,
                3 * tree::CHUNK as usize,
                &key,
            )
            .public_key;
        }
        let mut keys = TrustedKeys::new();
        keys.add("k.pub", &public).expect("key");
        let settings = Settings {
            base_url: Some("file:///x".into()),
            ..Settings::default()
        };
        let agent = Agent::new(
            settings,
            Machine {
                current: Version::parse(current).expect("v"),
                booted: Slot::A,
                arch: std::env::consts::ARCH.into(),
                keys,
                boot_id: "boot1".into(),
                root_hash: None,
            },
            StateDir {
                path: t.path().join("state"),
                save_every: std::time::Duration::ZERO,
            },
        );
        (t, agent)
    }

    #[test]
    fn check_stages_the_newest_and_reports_each_state() {
        let (t, mut a) = setup("0.1.0", &["0.1.0", "0.2.0"]);
        let mut fx = Fx {
            clock: 1000,
            ..Fx::default()
        };
        let mut disk = Disk::default();
        let out = a
            .check(
                &mut Dir::new(t.path().join("tree")),
                &mut disk,
                &mut NoEsp,
                &mut fx,
                false,
            )
            .expect("check");
        assert_eq!(out, Outcome::Staged("0.2.0".into()));
        assert_eq!(disk.next, Some(Slot::B));
        let states: Vec<&str> = fx.seen.iter().map(|s| s.state.name()).collect();
        assert_eq!(states.first(), Some(&"checking"));
        assert!(
            states.contains(&"downloading") && states.contains(&"verifying"),
            "{states:?}"
        );
        assert_eq!(states.last(), Some(&"staged"));
        let last = fx.seen.last().expect("last");
        assert_eq!(last.last_check, Some(1000));
        assert_eq!(last.new_version.as_deref(), Some("0.2.0"));
        assert_eq!(last.why_no_update, "0.2.0 is staged; rebooting");
        // The next check finds it staged and does not write again.
        let mut disk2 = Disk::default();
        let out = a
            .check(
                &mut Dir::new(t.path().join("tree")),
                &mut disk2,
                &mut NoEsp,
                &mut fx,
                false,
            )
            .expect("again");
        assert_eq!(out, Outcome::AlreadyStaged("0.2.0".into()));
        assert!(disk2.data.is_empty());
    }

    #[test]
    fn up_to_date_downgrade_and_blocked_say_why() {
        let (t, mut a) = setup("0.2.0", &["0.1.0", "0.2.0"]);
        let mut fx = Fx::default();
        let tree_dir = t.path().join("tree");
        let out = a
            .check(
                &mut Dir::new(&tree_dir),
                &mut Disk::default(),
                &mut NoEsp,
                &mut fx,
                false,
            )
            .expect("check");
        assert_eq!(out, Outcome::NoUpdate);
        assert_eq!(
            a.status.why_no_update,
            "up to date: 0.2.0 is the newest version on channel stable"
        );

        let (t, mut a) = setup("0.3.0", &["0.1.0", "0.2.0"]);
        a.check(
            &mut Dir::new(t.path().join("tree")),
            &mut Disk::default(),
            &mut NoEsp,
            &mut fx,
            false,
        )
        .expect("check");
        assert!(
            a.status
                .why_no_update
                .contains("older than the running 0.3.0"),
            "{}",
            a.status.why_no_update
        );

        let (t, mut a) = setup("0.1.0", &["0.1.0", "0.2.0"]);
        a.state
            .set_blocked(&[Blocked {
                version: "0.2.0".into(),
                why: "USR-B failed at boot: verity".into(),
                at: 5,
            }])
            .expect("block");
        let mut disk = Disk::default();
        let out = a
            .check(
                &mut Dir::new(t.path().join("tree")),
                &mut disk,
                &mut NoEsp,
                &mut fx,
                false,
            )
            .expect("check");
        assert_eq!(out, Outcome::NoUpdate);
        assert!(disk.next.is_none() && disk.data.is_empty());
        assert_eq!(
            a.status.why_no_update,
            "0.2.0 is blocked on this machine (USR-B failed at boot: verity); waiting for a newer version"
        );
        assert_eq!(a.status.blocked.len(), 1);
    }

    #[test]
    fn an_unreachable_server_is_an_error_state_with_the_message() {
        let (t, mut a) = setup("0.1.0", &["0.2.0"]);
        let mut fx = Fx::default();
        let e = a
            .check(
                &mut Dir::new(t.path().join("nowhere")),
                &mut Disk::default(),
                &mut NoEsp,
                &mut fx,
                false,
            )
            .expect_err("no tree");
        assert!(e.to_string().contains("channel.json"), "{e}");
        assert_eq!(a.status.state.name(), "error");
        assert!(
            a.status
                .why_no_update
                .starts_with("the last attempt failed: "),
            "{}",
            a.status.why_no_update
        );
        assert!(a.status.last_error.is_some());
    }
}

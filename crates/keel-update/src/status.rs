//! What `keel-update status` shows and `/run/keel/update.json` holds: one
//! serde type, rendered as `KEY=VALUE` lines in the manner of
//! `update_engine_client -status` (with its `CURRENT_OP` names, so scripts
//! written for CoreOS/Flatcar that grep `UPDATE_STATUS_UPDATED_NEED_REBOOT`
//! keep working) or as JSON.

use std::fmt::Write as _;
use std::path::Path;

use keel_release::Timestamp;
use serde::{Deserialize, Serialize};

use crate::machine::{Blocked, State};

/// Default place of the status file.
pub const STATUS_FILE: &str = "/run/keel/update.json";
/// The kured convention: present when a reboot would apply an update.
pub const REBOOT_REQUIRED: &str = "/run/reboot-required";

/// The agent's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The state (tagged: `{"state":"downloading","percent":40}`).
    pub state: State,
    /// The running version.
    pub current_version: String,
    /// The version being applied or staged, if any.
    pub new_version: Option<String>,
    /// 0.0-1.0 while downloading.
    pub progress: f64,
    /// Last completed check (seconds since the epoch).
    pub last_check: Option<u64>,
    /// Next planned check (seconds since the epoch).
    pub next_check: Option<u64>,
    /// The last error, kept until a check succeeds.
    pub last_error: Option<String>,
    /// Why the machine is not on its way to a newer version (empty when it is).
    pub why_no_update: String,
    /// The channel followed.
    pub channel: String,
    /// The release server.
    pub server: Option<String>,
    /// Versions refused after a rollback.
    #[serde(default)]
    pub blocked: Vec<Blocked>,
    /// Who wrote it: `daemon`, `cli` (`check`/`apply`), or `offline`
    /// (`status` computed it without either).
    #[serde(default)]
    pub source: String,
    /// The reboot strategy and what the reboot waits for.
    #[serde(default)]
    pub reboot: RebootStatus,
}

/// The reboot side of the status: strategy, windows, lock, users.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebootStatus {
    /// `immediate`, `off`, `periodic`, `etcd_lock`, `fleet_lock`, or
    /// `invalid` (then `error` says why).
    pub strategy: String,
    /// What the reboot waits for now: `window`, `lock`, `users` (grace
    /// period), `good_boot` (to release the lock), or empty.
    pub waiting_for: String,
    /// The windows ("Sat,Sun 02:00 for 2h (Europe/Berlin)").
    pub window: Option<String>,
    /// When this host's part of the next window opens (RFC 3339), while closed.
    pub window_opens: Option<String>,
    /// When the open window closes (RFC 3339), while open.
    pub window_closes: Option<String>,
    /// The lock ("etcd … key …" or "FleetLock … group …").
    pub lock: Option<String>,
    /// Whether this host holds it.
    pub lock_held: bool,
    /// Who holds it (etcd only; FleetLock cannot say).
    pub lock_holders: Vec<String>,
    /// Users logged in (the `wall` warning and grace period are for them).
    pub users: Vec<String>,
    /// The last error of the reboot side (invalid settings, lock unreachable).
    pub error: Option<String>,
}

impl Status {
    /// A status for `current` with nothing happening yet.
    pub fn new(current: &str, channel: &str, server: Option<&str>) -> Status {
        Status {
            state: State::Idle,
            current_version: current.into(),
            new_version: None,
            progress: 0.0,
            last_check: None,
            next_check: None,
            last_error: None,
            why_no_update: String::new(),
            channel: channel.into(),
            server: server.map(str::to_string),
            blocked: vec![],
            source: "offline".into(),
            reboot: RebootStatus::default(),
        }
    }

    /// update_engine's name for the state.
    pub fn current_op(&self) -> &'static str {
        match self.state {
            State::Idle | State::RolledBack { .. } => "UPDATE_STATUS_IDLE",
            State::Checking => "UPDATE_STATUS_CHECKING_FOR_UPDATE",
            State::Downloading { .. } => "UPDATE_STATUS_DOWNLOADING",
            State::Verifying => "UPDATE_STATUS_VERIFYING",
            State::Staged { .. } => "UPDATE_STATUS_UPDATED_NEED_REBOOT",
            State::Rebooting { .. } => "UPDATE_STATUS_UPDATED_NEED_REBOOT",
            State::Error { .. } => "UPDATE_STATUS_REPORTING_ERROR_EVENT",
        }
    }

    /// The one-line `STATUS=` for systemd.
    pub fn one_line(&self) -> String {
        let s = match &self.state {
            State::Idle => format!("idle, {}", self.current_version),
            State::Checking => "checking for an update".into(),
            State::Downloading { percent } => format!(
                "downloading {} ({percent}%)",
                self.new_version.as_deref().unwrap_or("?")
            ),
            State::Verifying => format!("verifying {}", self.new_version.as_deref().unwrap_or("?")),
            State::Staged { version } => format!("{version} staged, reboot needed"),
            State::Rebooting { version } => format!("rebooting into {version}"),
            State::RolledBack { version, why } => format!("rolled back from {version}: {why}"),
            State::Error { message } => format!("error: {message}"),
        };
        // Staged and Error say it all already (the why of an error repeats
        // its message).
        if self.why_no_update.is_empty()
            || matches!(self.state, State::Staged { .. } | State::Error { .. })
        {
            s
        } else {
            format!("{s} ({})", self.why_no_update)
        }
    }

    /// `KEY=VALUE` lines.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut kv = |k: &str, v: &str| {
            let v: String = v
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = writeln!(o, "{k}={v}");
        };
        let time = |t: Option<u64>| t.map(|t| Timestamp(t).to_string()).unwrap_or_default();
        kv("STATE", self.state.name());
        kv("CURRENT_OP", self.current_op());
        kv("CURRENT_VERSION", &self.current_version);
        kv("NEW_VERSION", self.new_version.as_deref().unwrap_or(""));
        kv("PROGRESS", &format!("{:.6}", self.progress));
        kv("LAST_CHECKED_TIME", &time(self.last_check));
        kv("NEXT_CHECK_TIME", &time(self.next_check));
        kv("LAST_ERROR", self.last_error.as_deref().unwrap_or(""));
        kv("WHY_NO_UPDATE", &self.why_no_update);
        kv("CHANNEL", &self.channel);
        kv("SERVER", self.server.as_deref().unwrap_or(""));
        if let State::RolledBack { version, why } = &self.state {
            kv("ROLLED_BACK_VERSION", version);
            kv("ROLLED_BACK_WHY", why);
        }
        let blocked: Vec<&str> = self.blocked.iter().map(|b| b.version.as_str()).collect();
        kv("BLOCKED_VERSIONS", &blocked.join(" "));
        let r = &self.reboot;
        kv("REBOOT_STRATEGY", &r.strategy);
        kv("REBOOT_WAITING_FOR", &r.waiting_for);
        kv("REBOOT_WINDOW", r.window.as_deref().unwrap_or(""));
        kv(
            "REBOOT_WINDOW_OPENS",
            r.window_opens.as_deref().unwrap_or(""),
        );
        kv(
            "REBOOT_WINDOW_CLOSES",
            r.window_closes.as_deref().unwrap_or(""),
        );
        kv("REBOOT_LOCK", r.lock.as_deref().unwrap_or(""));
        kv("REBOOT_LOCK_HELD", if r.lock_held { "yes" } else { "no" });
        kv("REBOOT_LOCK_HOLDERS", &r.lock_holders.join(" "));
        kv("LOGGED_IN_USERS", &r.users.join(" "));
        kv("REBOOT_ERROR", r.error.as_deref().unwrap_or(""));
        kv(
            "SOURCE",
            match self.source.as_str() {
                "daemon" => "daemon",
                "cli" => "cli (the last keel-update check or apply; no daemon status since)",
                _ => "offline (no status from a keel-update daemon or command in /run/keel/update.json)",
            },
        );
        o
    }

    /// Write the status file atomically (readers see the old or the new one).
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let mut data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        data.push(b'\n');
        keel_contract::write_atomic(path, &data)
    }

    /// Read a status file.
    pub fn load(path: &Path) -> Option<Status> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// A text progress bar for a terminal: `[#####.....]  42%  12.0/28.5 MiB`.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let frac = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (frac * width as f64).round() as usize;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    format!(
        "[{}{}] {:3.0}%  {:.1}/{:.1} MiB",
        "#".repeat(filled),
        ".".repeat(width - filled.min(width)),
        frac * 100.0,
        mib(done),
        mib(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_says_its_message_once() {
        let mut s = Status::new("0.1.0", "stable", None);
        s.state = State::Error {
            message: "usr chunk 0: bad".into(),
        };
        s.why_no_update = "the last attempt failed: usr chunk 0: bad; retrying with backoff".into();
        assert_eq!(s.one_line(), "error: usr chunk 0: bad");
    }

    #[test]
    fn renders_update_engine_style_lines() {
        let mut s = Status::new("0.1.0", "stable", Some("https://u.example"));
        s.state = State::Downloading { percent: 42 };
        s.new_version = Some("0.2.0".into());
        s.progress = 0.42;
        s.last_check = Some(86400);
        s.source = "daemon".into();
        let text = s.render();
        assert!(text.starts_with(
            "STATE=downloading\nCURRENT_OP=UPDATE_STATUS_DOWNLOADING\nCURRENT_VERSION=0.1.0\nNEW_VERSION=0.2.0\nPROGRESS=0.420000\nLAST_CHECKED_TIME=1970-01-02T00:00:00Z\n"
        ), "{text}");
        assert!(text.contains("\nSOURCE=daemon\n"), "{text}");
        assert_eq!(s.one_line(), "downloading 0.2.0 (42%)");
        s.state = State::Staged {
            version: "0.2.0".into(),
        };
        assert!(s
            .render()
            .contains("CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT"));
        s.state = State::RolledBack {
            version: "0.2.0".into(),
            why: "USR-B failed\nat boot".into(),
        };
        let text = s.render();
        assert!(
            text.contains("ROLLED_BACK_WHY=USR-B failed at boot\n"),
            "{text}"
        );
        let json = serde_json::to_string(&s).expect("json");
        let back: Status = serde_json::from_str(&json).expect("back");
        assert_eq!(back, s);
    }

    #[test]
    fn status_file_round_trips() {
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("update.json");
        assert!(Status::load(&p).is_none());
        let s = Status::new("1", "beta", None);
        s.store(&p).expect("store");
        assert_eq!(Status::load(&p), Some(s));
    }

    #[test]
    fn progress_bar() {
        assert_eq!(bar(0, 100, 10), "[..........]   0%  0.0/0.0 MiB");
        assert_eq!(
            bar(50 << 20, 100 << 20, 10),
            "[#####.....]  50%  50.0/100.0 MiB"
        );
        assert_eq!(bar(5, 0, 4), "[####] 100%  0.0/0.0 MiB");
        assert_eq!(bar(200, 100, 4), "[####] 100%  0.0/0.0 MiB");
    }
}

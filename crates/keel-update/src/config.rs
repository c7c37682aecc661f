//! The agent's configuration: TOML drop-ins plus the CoreOS/Flatcar
//! `update.conf` files, in three steps (fragment → merged → settings).
//!
//! Order, later wins (same file name shadows, sorted by file name):
//!
//! 1. `/usr/lib/keel/update.d/*.toml` (vendor defaults, in the image)
//! 2. `/etc/coreos/update.conf`, then `/etc/flatcar/update.conf` (what
//!    existing Ignition/cloud-config files write: `GROUP=`, `SERVER=`,
//!    `REBOOT_STRATEGY=`)
//! 3. `/etc/keel/update.d/*.toml` (the admin)
//! 4. `/run/keel/update.d/*.toml` (runtime overrides)
//!
//! The drop-in order is Zincati's and the issue's (`/run` last, so a runtime
//! override wins for this boot); a name in a later directory shadows the same
//! name in an earlier one, and an empty file there masks it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_lock::window::{PeriodicConfig, Schedule};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The drop-in directories, earliest first.
pub const DROPIN_DIRS: [&str; 3] = [
    "/usr/lib/keel/update.d",
    "/etc/keel/update.d",
    "/run/keel/update.d",
];

/// The CoreOS/Flatcar files, read after the vendor drop-ins.
pub const LEGACY_FILES: [&str; 2] = ["/etc/coreos/update.conf", "/etc/flatcar/update.conf"];

/// Default interval between checks.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest interval accepted (a release server is not a status endpoint).
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Default time an updated slot has to be marked good after its boot.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(600);
/// Default channel.
pub const DEFAULT_CHANNEL: &str = "stable";

/// A configuration that cannot be used; every variant names the file.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Reading failed (other than "not there").
    #[error("reading {path}: {message}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// Not valid TOML, or a key this agent does not know.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error (key, line and column).
        message: String,
    },
    /// A `KEY=VALUE` file with a line that is neither.
    #[error("{path}: line {line}: {message}")]
    Legacy {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value outside what the key accepts.
    #[error("{path}: key {key}: {message}")]
    Invalid {
        /// The file that set it.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// An interval as written: seconds, or a string such as `"1h"`, `"30min"`,
/// `"1h30m"`, `"90s"`, `"2d"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntervalText {
    /// Seconds.
    Seconds(u64),
    /// With units.
    Text(String),
}

/// How the machine reboots into a staged update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootStrategy {
    /// Reboot as soon as the update is staged (inside the windows, when
    /// some are configured).
    Immediate,
    /// Never reboot: stage, say so, and leave the reboot to the admin.
    Off,
    /// Reboot only inside a maintenance window (at least one needed).
    Periodic,
    /// Take a slot of the etcd v3 reboot semaphore first (locksmith's).
    EtcdLock,
    /// Take the FleetLock server's lock first (Zincati's).
    FleetLock,
}

impl RebootStrategy {
    /// The TOML name.
    pub fn name(self) -> &'static str {
        match self {
            RebootStrategy::Immediate => "immediate",
            RebootStrategy::Off => "off",
            RebootStrategy::Periodic => "periodic",
            RebootStrategy::EtcdLock => "etcd_lock",
            RebootStrategy::FleetLock => "fleet_lock",
        }
    }

    /// The TOML name back to a strategy.
    pub fn from_name(s: &str) -> Option<RebootStrategy> {
        [
            RebootStrategy::Immediate,
            RebootStrategy::Off,
            RebootStrategy::Periodic,
            RebootStrategy::EtcdLock,
            RebootStrategy::FleetLock,
        ]
        .into_iter()
        .find(|x| x.name() == s)
    }
}

impl fmt::Display for RebootStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Default time logged-in users get between the `wall` warning and the reboot.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10 * 60);

/// `[reboot]` of a drop-in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootFragment {
    /// `"immediate"`, `"off"`, `"periodic"`, `"etcd_lock"` or
    /// `"fleet_lock"`; kept as text here so an unknown name is an error of
    /// the reboot settings alone (updates are still staged).
    pub strategy: Option<String>,
    /// Time between the `wall` warning and the reboot when users are
    /// logged in ("10m"; 0 = no wait).
    pub grace_period: Option<IntervalText>,
    /// Maintenance windows (Zincati's `updates.periodic` schema plus
    /// `random_offset_minutes`); they gate every strategy but `off`.
    pub periodic: Option<PeriodicConfig>,
    /// The etcd semaphore.
    pub etcd_lock: Option<EtcdFragment>,
    /// The FleetLock server.
    pub fleet_lock: Option<FleetLockFragment>,
    /// What a legacy `update.conf` set (not a TOML key).
    #[serde(skip)]
    pub legacy: Option<LegacyReboot>,
}

/// `[reboot.etcd_lock]`: how to reach the etcd semaphore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdFragment {
    /// Endpoint URLs (a bare `host:port` gets http, or https with TLS files).
    pub endpoints: Option<Vec<String>>,
    /// CA bundle (PEM) that signed etcd's certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    pub key_file: Option<PathBuf>,
    /// etcd user.
    pub username: Option<String>,
    /// etcd password.
    pub password: Option<String>,
    /// Lock group (`…/groups/<group>/semaphore`).
    pub group: Option<String>,
}

/// `[reboot.fleet_lock]`: the FleetLock server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetLockFragment {
    /// The server's base URL (`POST <base>/v1/pre-reboot`).
    pub base_url: Option<String>,
    /// The group ("default" when unset).
    pub group: Option<String>,
}

/// locksmith's settings from `update.conf` (`LOCKSMITHD_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyReboot {
    /// `LOCKSMITHD_REBOOT_WINDOW_START`.
    pub window_start: Option<String>,
    /// `LOCKSMITHD_REBOOT_WINDOW_LENGTH`.
    pub window_length: Option<String>,
    /// `REBOOT_STRATEGY=` as written (locksmith's names).
    pub strategy: Option<String>,
    /// `LOCKSMITHD_ENDPOINT` (comma-separated).
    pub endpoint: Option<String>,
    /// `LOCKSMITHD_ETCD_CAFILE`.
    pub ca_file: Option<String>,
    /// `LOCKSMITHD_ETCD_CERTFILE`.
    pub cert_file: Option<String>,
    /// `LOCKSMITHD_ETCD_KEYFILE`.
    pub key_file: Option<String>,
    /// `LOCKSMITHD_ETCD_USERNAME`.
    pub username: Option<String>,
    /// `LOCKSMITHD_ETCD_PASSWORD`.
    pub password: Option<String>,
    /// `LOCKSMITHD_GROUP`.
    pub group: Option<String>,
}

/// `[health]` of a drop-in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFragment {
    /// How long after boot an updated slot has to be marked good.
    pub timeout: Option<IntervalText>,
}

/// One drop-in file as written: every key optional, no unknown keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fragment {
    /// The release server: the directory holding `<channel>/channel.json`.
    pub base_url: Option<String>,
    /// The channel followed.
    pub channel: Option<String>,
    /// Whether the agent checks at all.
    pub enabled: Option<bool>,
    /// Time between checks.
    pub interval: Option<IntervalText>,
    /// Whether an older version may replace the running one.
    pub allow_downgrade: Option<bool>,
    /// Reboot policy.
    pub reboot: Option<RebootFragment>,
    /// The health gate of an updated slot.
    pub health: Option<HealthFragment>,
}

/// A value with the file that set it (so validation can name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub path: PathBuf,
}

/// Every fragment folded together, later files winning key by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    base_url: Option<From<String>>,
    channel: Option<From<String>>,
    enabled: Option<From<bool>>,
    interval: Option<From<IntervalText>>,
    allow_downgrade: Option<From<bool>>,
    health_timeout: Option<From<IntervalText>>,
    reboot: RebootMerged,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
}

/// A reboot setting with the file and key that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Set<T> {
    value: T,
    path: PathBuf,
    key: &'static str,
}

impl<T> Set<T> {
    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: self.key,
            message: message.into(),
        }
    }
}

/// Where the windows came from: a TOML table or locksmith's two variables.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WindowInput {
    Toml(Set<PeriodicConfig>),
    Locksmith {
        start: Option<Set<String>>,
        length: Option<Set<String>>,
    },
}

/// The `[reboot]` keys folded together, each with its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RebootMerged {
    strategy: Option<Set<String>>,
    grace: Option<Set<IntervalText>>,
    windows: Option<WindowInput>,
    endpoints: Option<Set<Vec<String>>>,
    ca_file: Option<Set<PathBuf>>,
    cert_file: Option<Set<PathBuf>>,
    key_file: Option<Set<PathBuf>>,
    username: Option<Set<String>>,
    password: Option<Set<String>>,
    etcd_group: Option<Set<String>>,
    fleet_url: Option<Set<String>>,
    fleet_group: Option<Set<String>>,
}

fn put<T: Clone>(slot: &mut Option<Set<T>>, v: &Option<T>, path: &Path, key: &'static str) {
    if let Some(v) = v {
        *slot = Some(Set {
            value: v.clone(),
            path: path.to_path_buf(),
            key,
        });
    }
}

impl RebootMerged {
    fn apply(&mut self, path: &Path, r: &RebootFragment) {
        put(&mut self.strategy, &r.strategy, path, "reboot.strategy");
        put(
            &mut self.grace,
            &r.grace_period,
            path,
            "reboot.grace_period",
        );
        if let Some(p) = &r.periodic {
            // A file's [reboot.periodic] replaces an earlier one whole, so
            // a window list never mixes two files.
            self.windows = Some(WindowInput::Toml(Set {
                value: p.clone(),
                path: path.to_path_buf(),
                key: "reboot.periodic",
            }));
        }
        if let Some(e) = &r.etcd_lock {
            put(
                &mut self.endpoints,
                &e.endpoints,
                path,
                "reboot.etcd_lock.endpoints",
            );
            put(
                &mut self.ca_file,
                &e.ca_file,
                path,
                "reboot.etcd_lock.ca_file",
            );
            put(
                &mut self.cert_file,
                &e.cert_file,
                path,
                "reboot.etcd_lock.cert_file",
            );
            put(
                &mut self.key_file,
                &e.key_file,
                path,
                "reboot.etcd_lock.key_file",
            );
            put(
                &mut self.username,
                &e.username,
                path,
                "reboot.etcd_lock.username",
            );
            put(
                &mut self.password,
                &e.password,
                path,
                "reboot.etcd_lock.password",
            );
            put(
                &mut self.etcd_group,
                &e.group,
                path,
                "reboot.etcd_lock.group",
            );
        }
        if let Some(f) = &r.fleet_lock {
            put(
                &mut self.fleet_url,
                &f.base_url,
                path,
                "reboot.fleet_lock.base_url",
            );
            put(
                &mut self.fleet_group,
                &f.group,
                path,
                "reboot.fleet_lock.group",
            );
        }
        if let Some(l) = &r.legacy {
            self.apply_legacy(path, l);
        }
    }

    fn apply_legacy(&mut self, path: &Path, l: &LegacyReboot) {
        put(&mut self.strategy, &l.strategy, path, "REBOOT_STRATEGY");
        if l.window_start.is_some() || l.window_length.is_some() {
            let (mut start, mut length) = match self.windows.take() {
                Some(WindowInput::Locksmith { start, length }) => (start, length),
                _ => (None, None),
            };
            put(
                &mut start,
                &l.window_start,
                path,
                "LOCKSMITHD_REBOOT_WINDOW_START",
            );
            put(
                &mut length,
                &l.window_length,
                path,
                "LOCKSMITHD_REBOOT_WINDOW_LENGTH",
            );
            self.windows = Some(WindowInput::Locksmith { start, length });
        }
        let endpoints = l.endpoint.as_ref().map(|e| {
            e.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
        put(&mut self.endpoints, &endpoints, path, "LOCKSMITHD_ENDPOINT");
        let p = |v: &Option<String>| v.as_ref().map(PathBuf::from);
        put(
            &mut self.ca_file,
            &p(&l.ca_file),
            path,
            "LOCKSMITHD_ETCD_CAFILE",
        );
        put(
            &mut self.cert_file,
            &p(&l.cert_file),
            path,
            "LOCKSMITHD_ETCD_CERTFILE",
        );
        put(
            &mut self.key_file,
            &p(&l.key_file),
            path,
            "LOCKSMITHD_ETCD_KEYFILE",
        );
        put(
            &mut self.username,
            &l.username,
            path,
            "LOCKSMITHD_ETCD_USERNAME",
        );
        put(
            &mut self.password,
            &l.password,
            path,
            "LOCKSMITHD_ETCD_PASSWORD",
        );
        put(&mut self.etcd_group, &l.group, path, "LOCKSMITHD_GROUP");
    }

    /// The reboot settings, validated. Errors here stop reboots only.
    fn validate(&self) -> Result<RebootSettings, ConfigError> {
        let (strategy, best_effort) = match &self.strategy {
            None => (RebootStrategy::Immediate, false),
            Some(s) => {
                let v = s.value.trim();
                let legacy = s.key == "REBOOT_STRATEGY";
                let known = if legacy {
                    match v {
                        "reboot" | "immediate" => Some(RebootStrategy::Immediate),
                        "etcd-lock" | "etcd_lock" => Some(RebootStrategy::EtcdLock),
                        "off" => Some(RebootStrategy::Off),
                        // locksmith: the etcd lock when etcd is there, else
                        // reboot; here: when an endpoint is configured.
                        "best-effort" => Some(if self.endpoints.is_some() {
                            RebootStrategy::EtcdLock
                        } else {
                            RebootStrategy::Immediate
                        }),
                        _ => None,
                    }
                } else {
                    RebootStrategy::from_name(v)
                };
                let known = known.ok_or_else(|| {
                    s.err(if legacy {
                        format!("unknown reboot strategy {v:?} (reboot, etcd-lock, best-effort, off); updates are staged but the machine is not rebooted until this is fixed")
                    } else {
                        format!("unknown reboot strategy {v:?} (immediate, off, periodic, etcd_lock, fleet_lock); updates are staged but the machine is not rebooted until this is fixed")
                    })
                })?;
                (known, legacy && v == "best-effort")
            }
        };
        let grace_period = match &self.grace {
            None => DEFAULT_GRACE_PERIOD,
            Some(g) => {
                let d = match &g.value {
                    IntervalText::Seconds(n) => Duration::from_secs(*n),
                    IntervalText::Text(t) => parse_duration(t).map_err(|m| g.err(m))?,
                };
                if d > Duration::from_secs(24 * 3600) {
                    return Err(g.err(format!("{} s: at most a day", d.as_secs())));
                }
                d
            }
        };
        let windows = self.windows()?;
        let strategy_err = |key: &'static str, message: String| match &self.strategy {
            Some(s) => ConfigError::Invalid {
                path: s.path.clone(),
                key,
                message,
            },
            None => ConfigError::Invalid {
                path: PathBuf::from("(defaults)"),
                key,
                message,
            },
        };
        if strategy == RebootStrategy::Periodic && windows.is_none() {
            return Err(strategy_err(
                "reboot.periodic",
                "strategy periodic needs at least one [[reboot.periodic.window]]".into(),
            ));
        }
        let etcd = if strategy == RebootStrategy::EtcdLock {
            Some(self.etcd()?)
        } else {
            None
        };
        let fleet_lock = if strategy == RebootStrategy::FleetLock {
            let Some(u) = &self.fleet_url else {
                return Err(strategy_err(
                    "reboot.fleet_lock.base_url",
                    "strategy fleet_lock needs the FleetLock server's base_url".into(),
                ));
            };
            let url = u.value.trim().trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(u.err(format!("{url:?} is not an http:// or https:// URL")));
            }
            let group = match &self.fleet_group {
                Some(g) => Some(check_group(g)?),
                None => None,
            };
            Some(FleetLockSettings {
                base_url: url.to_string(),
                group,
            })
        } else {
            None
        };
        Ok(RebootSettings {
            strategy,
            best_effort,
            windows,
            etcd,
            fleet_lock,
            grace_period,
        })
    }

    fn windows(&self) -> Result<Option<Windows>, ConfigError> {
        match &self.windows {
            None => Ok(None),
            Some(WindowInput::Toml(t)) => {
                if t.value.window.is_empty() {
                    return Ok(None);
                }
                let schedule = Schedule::from_config(&t.value).map_err(|e| t.err(e.to_string()))?;
                Ok(Some(Windows {
                    schedule,
                    path: t.path.clone(),
                }))
            }
            Some(WindowInput::Locksmith { start, length }) => {
                let (s, l) = match (start, length) {
                    (Some(s), Some(l)) => (s, l),
                    (Some(s), None) => {
                        return Err(s.err(
                            "LOCKSMITHD_REBOOT_WINDOW_LENGTH must be set too (both or neither)",
                        ))
                    }
                    (None, Some(l)) => {
                        return Err(l.err(
                            "LOCKSMITHD_REBOOT_WINDOW_START must be set too (both or neither)",
                        ))
                    }
                    (None, None) => return Ok(None),
                };
                let (days, st) = keel_lock::window::parse_locksmith_start(&s.value)
                    .map_err(|e| s.err(e.to_string()))?;
                let len =
                    keel_lock::window::parse_length(&l.value).map_err(|e| l.err(e.to_string()))?;
                // locksmithd read its window in the host's local zone.
                let tz = keel_lock::window::resolve_time_zone("localtime")
                    .map_err(|e| s.err(e.to_string()))?;
                let schedule = Schedule::new(
                    vec![keel_lock::window::Window {
                        days,
                        start: st,
                        length: len,
                    }],
                    tz,
                    "localtime",
                    jiff::SignedDuration::ZERO,
                )
                .map_err(|e| s.err(e.to_string()))?;
                Ok(Some(Windows {
                    schedule,
                    path: s.path.clone(),
                }))
            }
        }
    }

    fn etcd(&self) -> Result<EtcdSettings, ConfigError> {
        let mut endpoints = vec!["http://127.0.0.1:2379".to_string()];
        if let Some(e) = &self.endpoints {
            if e.value.is_empty() {
                return Err(e.err("no endpoint given"));
            }
            for ep in &e.value {
                let bare = ep
                    .strip_prefix("http://")
                    .or_else(|| ep.strip_prefix("https://"))
                    .unwrap_or(ep);
                if ep.contains("://") && !(ep.starts_with("http://") || ep.starts_with("https://"))
                {
                    return Err(e.err(format!("{ep:?}: only http:// and https:// endpoints")));
                }
                if bare.is_empty() || ep.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(e.err(format!("{ep:?} is not an endpoint URL or host:port")));
                }
            }
            endpoints = e.value.clone();
        }
        let abs = |f: &Option<Set<PathBuf>>| -> Result<Option<PathBuf>, ConfigError> {
            match f {
                Some(p) if !p.value.is_absolute() => {
                    Err(p.err(format!("{} is not an absolute path", p.value.display())))
                }
                Some(p) => Ok(Some(p.value.clone())),
                None => Ok(None),
            }
        };
        let ca_file = abs(&self.ca_file)?;
        let cert_file = abs(&self.cert_file)?;
        let key_file = abs(&self.key_file)?;
        match (&self.cert_file, &self.key_file) {
            (Some(c), None) => return Err(c.err("a client certificate needs its key file too")),
            (None, Some(k)) => return Err(k.err("a client key needs its certificate file too")),
            _ => {}
        }
        if let (Some(p), None) = (&self.password, &self.username) {
            return Err(p.err("a password needs a user name"));
        }
        let group = match &self.etcd_group {
            Some(g) => Some(check_group(g)?),
            None => None,
        };
        Ok(EtcdSettings {
            endpoints,
            ca_file,
            cert_file,
            key_file,
            username: self.username.as_ref().map(|u| u.value.clone()),
            password: self.password.as_ref().map(|p| p.value.clone()),
            group,
        })
    }
}

fn check_group(g: &Set<String>) -> Result<String, ConfigError> {
    let v = g.value.trim();
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !v.starts_with('.');
    if ok {
        Ok(v.to_string())
    } else {
        Err(g.err(format!(
            "{v:?}: a group is 1-64 of a-z, A-Z, 0-9, '-', '_', '.' (it is part of a key or URL)"
        )))
    }
}

/// Validated maintenance windows and the file that set them.
#[derive(Debug, Clone)]
pub struct Windows {
    /// The schedule (no host offset yet: see `Schedule::for_host`).
    pub schedule: Schedule,
    /// The file that set them.
    pub path: PathBuf,
}

impl PartialEq for Windows {
    fn eq(&self, o: &Windows) -> bool {
        self.path == o.path
            && self.schedule.windows() == o.schedule.windows()
            && self.schedule.describe() == o.schedule.describe()
    }
}

impl Eq for Windows {}

/// How to reach the etcd semaphore (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Endpoints.
    pub endpoints: Vec<String>,
    /// CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Client certificate.
    pub cert_file: Option<PathBuf>,
    /// Client key.
    pub key_file: Option<PathBuf>,
    /// etcd user.
    pub username: Option<String>,
    /// etcd password.
    pub password: Option<String>,
    /// Lock group.
    pub group: Option<String>,
}

impl EtcdSettings {
    /// keel-lock's client configuration.
    pub fn client_config(&self) -> keel_lock::etcd::EtcdConfig {
        keel_lock::etcd::EtcdConfig {
            endpoints: self.endpoints.clone(),
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            group: self.group.clone(),
            ..Default::default()
        }
    }
}

/// The FleetLock server (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLockSettings {
    /// Base URL, no trailing slash.
    pub base_url: String,
    /// Group (None = "default").
    pub group: Option<String>,
}

/// The validated `[reboot]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootSettings {
    /// The strategy.
    pub strategy: RebootStrategy,
    /// Whether it came from locksmith's `best-effort`.
    pub best_effort: bool,
    /// Maintenance windows (gate every strategy but `off`).
    pub windows: Option<Windows>,
    /// The etcd semaphore (`etcd_lock`).
    pub etcd: Option<EtcdSettings>,
    /// The FleetLock server (`fleet_lock`).
    pub fleet_lock: Option<FleetLockSettings>,
    /// Wait between the `wall` warning and the reboot.
    pub grace_period: Duration,
}

impl Default for RebootSettings {
    fn default() -> Self {
        RebootSettings {
            strategy: RebootStrategy::Immediate,
            best_effort: false,
            windows: None,
            etcd: None,
            fleet_lock: None,
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }
}

impl RebootSettings {
    /// Settings of one strategy with the defaults.
    pub fn of(strategy: RebootStrategy) -> RebootSettings {
        RebootSettings {
            strategy,
            ..Default::default()
        }
    }

    /// Whether a lock is taken before the reboot.
    pub fn uses_lock(&self) -> bool {
        matches!(
            self.strategy,
            RebootStrategy::EtcdLock | RebootStrategy::FleetLock
        )
    }

    /// One line describing the lock ("etcd http://… group g").
    pub fn lock_name(&self) -> Option<String> {
        if let Some(e) = &self.etcd {
            return Some(format!(
                "etcd {} key {}",
                e.endpoints.join(","),
                keel_lock::etcd::semaphore_key(e.group.as_deref())
            ));
        }
        self.fleet_lock.as_ref().map(|f| {
            format!(
                "FleetLock {} group {}",
                f.base_url,
                f.group
                    .as_deref()
                    .unwrap_or(keel_lock::fleetlock::DEFAULT_GROUP)
            )
        })
    }
}

fn set<T: Clone>(slot: &mut Option<From<T>>, v: &Option<T>, path: &Path) {
    if let Some(v) = v {
        *slot = Some(From {
            value: v.clone(),
            path: path.to_path_buf(),
        });
    }
}

impl Merged {
    /// Fold `f` (read from `path`) over what came before.
    pub fn apply(&mut self, path: &Path, f: &Fragment) {
        set(&mut self.base_url, &f.base_url, path);
        set(&mut self.channel, &f.channel, path);
        set(&mut self.enabled, &f.enabled, path);
        set(&mut self.interval, &f.interval, path);
        set(&mut self.allow_downgrade, &f.allow_downgrade, path);
        if let Some(r) = &f.reboot {
            self.reboot.apply(path, r);
        }
        if let Some(h) = &f.health {
            set(&mut self.health_timeout, &h.timeout, path);
        }
        self.files.push(path.to_path_buf());
    }

    /// Check every value and give it its real type.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let base_url = match &self.base_url {
            Some(b) => Some(validate_url(b)?),
            None => None,
        };
        let channel = match &self.channel {
            Some(c) => validate_channel(c)?,
            None => DEFAULT_CHANNEL.to_string(),
        };
        let interval = duration_key(&self.interval, "interval", DEFAULT_INTERVAL)?;
        let health_timeout = duration_key(
            &self.health_timeout,
            "health.timeout",
            DEFAULT_HEALTH_TIMEOUT,
        )?;
        Ok(Settings {
            base_url,
            channel,
            enabled: self.enabled.as_ref().is_none_or(|e| e.value),
            interval,
            allow_downgrade: self.allow_downgrade.as_ref().is_some_and(|a| a.value),
            reboot: self.reboot.validate(),
            health_timeout,
            files: self.files.clone(),
        })
    }
}

fn duration_key(
    v: &Option<From<IntervalText>>,
    key: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(i) = v else {
        return Ok(default);
    };
    let d = match &i.value {
        IntervalText::Seconds(s) => Duration::from_secs(*s),
        IntervalText::Text(t) => parse_duration(t).map_err(|message| ConfigError::Invalid {
            path: i.path.clone(),
            key,
            message,
        })?,
    };
    if d < MIN_INTERVAL {
        return Err(ConfigError::Invalid {
            path: i.path.clone(),
            key,
            message: format!(
                "{}s is too short (at least {}s)",
                d.as_secs(),
                MIN_INTERVAL.as_secs()
            ),
        });
    }
    Ok(d)
}

fn validate_url(b: &From<String>) -> Result<String, ConfigError> {
    let u = b.value.trim();
    let ok_scheme = ["http://", "https://", "file://"]
        .iter()
        .any(|s| u.len() > s.len() && u.starts_with(s));
    if !ok_scheme {
        return Err(ConfigError::Invalid {
            path: b.path.clone(),
            key: "base_url",
            message: format!("{u:?} is not an http://, https:// or file:// URL"),
        });
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::Invalid {
            path: b.path.clone(),
            key: "base_url",
            message: format!("{u:?} contains whitespace"),
        });
    }
    Ok(u.trim_end_matches('/').to_string())
}

fn validate_channel(c: &From<String>) -> Result<String, ConfigError> {
    let v = c.value.trim();
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !v.starts_with('.');
    if !ok {
        return Err(ConfigError::Invalid {
            path: c.path.clone(),
            key: "channel",
            message: format!(
                "{v:?}: a channel is 1-64 of a-z, 0-9, '-', '_', '.' (it is a path on the server)"
            ),
        });
    }
    Ok(v.to_string())
}

/// Parse `"1h30m"`, `"45min"`, `"90s"`, `"2d"`, `"600"` (seconds). Never
/// panics; the message says what is wrong.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(s) = t.parse::<u64>() {
        return Ok(Duration::from_secs(s));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{t:?}: expected a number at {rest:?}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{t:?}: number too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mul = match unit {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86400,
            "" => return Err(format!("{t:?}: a unit is needed after {n} (s, min, h, d)")),
            u => return Err(format!("{t:?}: unknown unit {u:?} (s, min, h, d)")),
        };
        total = n
            .checked_mul(mul)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{t:?}: too long"))?;
    }
    Ok(Duration::from_secs(total))
}

/// The validated settings the agent runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The release server (no trailing slash); `None` = nowhere to look.
    pub base_url: Option<String>,
    /// The channel followed.
    pub channel: String,
    /// Whether periodic checks run.
    pub enabled: bool,
    /// Time between checks.
    pub interval: Duration,
    /// Whether an older version may be applied.
    pub allow_downgrade: bool,
    /// Reboot policy, or why it is invalid (then updates are staged but
    /// the machine is never rebooted by the agent).
    pub reboot: Result<RebootSettings, ConfigError>,
    /// How long after boot an updated slot has to be marked good before
    /// the agent rolls back.
    pub health_timeout: Duration,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

impl Settings {
    /// The strategy in force (`off` while the reboot settings are invalid).
    pub fn strategy(&self) -> RebootStrategy {
        self.reboot
            .as_ref()
            .map_or(RebootStrategy::Off, |r| r.strategy)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            base_url: None,
            channel: DEFAULT_CHANNEL.into(),
            enabled: true,
            interval: DEFAULT_INTERVAL,
            allow_downgrade: false,
            reboot: Ok(RebootSettings::default()),
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            files: Vec::new(),
        }
    }
}

/// Parse one drop-in's text; `path` names it in errors.
pub fn parse_fragment(path: &Path, text: &str) -> Result<Fragment, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

/// Parse a CoreOS/Flatcar `update.conf` (`KEY=VALUE`, `#` comments, values
/// optionally quoted) into a fragment. Keys other than `GROUP`, `SERVER`,
/// `REBOOT_STRATEGY` and locksmith's `LOCKSMITHD_*` are accepted and ignored: those files carry
/// update_engine's own keys (`AUTHORITY`, `PCR_POLICY`, …) that mean nothing
/// here.
pub fn parse_legacy(path: &Path, text: &str) -> Result<Fragment, ConfigError> {
    let mut f = Fragment::default();
    let mut legacy = LegacyReboot::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| ConfigError::Legacy {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| err(format!("{line:?} is not KEY=VALUE")))?;
        let k = k.trim();
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v)
            .to_string();
        match k {
            "GROUP" => f.channel = Some(v),
            "SERVER" => f.base_url = Some(v),
            "REBOOT_STRATEGY" => legacy.strategy = Some(v),
            "LOCKSMITHD_REBOOT_WINDOW_START" => legacy.window_start = Some(v),
            "LOCKSMITHD_REBOOT_WINDOW_LENGTH" => legacy.window_length = Some(v),
            "LOCKSMITHD_ENDPOINT" => legacy.endpoint = Some(v),
            "LOCKSMITHD_ETCD_CAFILE" => legacy.ca_file = Some(v),
            "LOCKSMITHD_ETCD_CERTFILE" => legacy.cert_file = Some(v),
            "LOCKSMITHD_ETCD_KEYFILE" => legacy.key_file = Some(v),
            "LOCKSMITHD_ETCD_USERNAME" => legacy.username = Some(v),
            "LOCKSMITHD_ETCD_PASSWORD" => legacy.password = Some(v),
            "LOCKSMITHD_GROUP" => legacy.group = Some(v),
            _ => {}
        }
    }
    if legacy != LegacyReboot::default() {
        f.reboot = Some(RebootFragment {
            legacy: Some(legacy),
            ..Default::default()
        });
    }
    Ok(f)
}

/// Where the agent looks; tests point it at a temporary tree.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Drop-in directories, earliest first.
    pub dropin_dirs: Vec<PathBuf>,
    /// Which drop-in directory index the legacy files come before.
    pub legacy_before: usize,
    /// The `update.conf` files, earliest first.
    pub legacy_files: Vec<PathBuf>,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            dropin_dirs: DROPIN_DIRS.iter().map(PathBuf::from).collect(),
            legacy_before: 1,
            legacy_files: LEGACY_FILES.iter().map(PathBuf::from).collect(),
        }
    }
}

impl Sources {
    /// Everything under `root` (a test's fake `/`).
    pub fn under(root: &Path) -> Self {
        let d = Sources::default();
        let re = |p: &PathBuf| root.join(p.strip_prefix("/").unwrap_or(p));
        Sources {
            dropin_dirs: d.dropin_dirs.iter().map(re).collect(),
            legacy_before: d.legacy_before,
            legacy_files: d.legacy_files.iter().map(re).collect(),
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// The `*.toml` drop-ins of `dirs` by name, a later directory's file
/// shadowing an earlier one's of the same name.
fn dropins(dirs: &[PathBuf]) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let mut by_name = BTreeMap::new();
    for dir in dirs {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(ConfigError::Read {
                    path: dir.clone(),
                    message: e.to_string(),
                })
            }
        };
        for e in rd {
            let e = e.map_err(|e| ConfigError::Read {
                path: dir.clone(),
                message: e.to_string(),
            })?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".toml") && !name.starts_with('.') {
                by_name.insert(name, e.path());
            }
        }
    }
    Ok(by_name)
}

/// Read and merge everything `sources` names, then validate.
pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
    let mut m = Merged::default();
    let split = sources.legacy_before.min(sources.dropin_dirs.len());
    let (early, late) = sources.dropin_dirs.split_at(split);
    // Shadowing works across every drop-in directory, but the legacy files
    // sit between the vendor's and the admin's: a vendor name shadowed by an
    // admin file is skipped in the early pass.
    let all = dropins(&sources.dropin_dirs)?;
    let read_dropin = |m: &mut Merged, path: &Path| -> Result<(), ConfigError> {
        if let Some(text) = read_optional(path)? {
            m.apply(path, &parse_fragment(path, &text)?);
        }
        Ok(())
    };
    for path in all
        .values()
        .filter(|p| early.iter().any(|d| p.starts_with(d)))
    {
        read_dropin(&mut m, path)?;
    }
    for path in &sources.legacy_files {
        if let Some(text) = read_optional(path)? {
            m.apply(path, &parse_legacy(path, &text)?);
        }
    }
    for path in all
        .values()
        .filter(|p| late.iter().any(|d| p.starts_with(d)))
    {
        read_dropin(&mut m, path)?;
    }
    m.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn defaults_without_any_file() {
        let t = tempfile::tempdir().expect("tmp");
        let s = load(&Sources::under(t.path())).expect("load");
        assert_eq!(
            s,
            Settings {
                files: vec![],
                ..Settings::default()
            }
        );
    }

    #[test]
    fn later_directory_wins_and_same_name_shadows() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        write(
            r,
            "usr/lib/keel/update.d/10-vendor.toml",
            "base_url = \"https://vendor.example/keel\"\nchannel = \"stable\"\ninterval = \"2h\"\n",
        );
        write(
            r,
            "usr/lib/keel/update.d/50-extra.toml",
            "allow_downgrade = true\n",
        );
        // Same name as the vendor's: the vendor file is not read at all.
        write(r, "etc/keel/update.d/50-extra.toml", "channel = \"beta\"\n");
        write(
            r,
            "run/keel/update.d/99-now.toml",
            "[reboot]\nstrategy = \"off\"\nchannel = \"alpha\"\n",
        );
        let e = load(&Sources::under(r)).expect_err("strategy section has no channel");
        assert!(
            e.to_string().contains("99-now.toml") && e.to_string().contains("channel"),
            "{e}"
        );
        write(
            r,
            "run/keel/update.d/99-now.toml",
            "channel = \"alpha\"\n[reboot]\nstrategy = \"off\"\n",
        );
        let s = load(&Sources::under(r)).expect("load");
        assert_eq!(s.base_url.as_deref(), Some("https://vendor.example/keel"));
        assert_eq!(s.channel, "alpha");
        assert_eq!(s.interval, Duration::from_secs(7200));
        assert!(!s.allow_downgrade, "the shadowed vendor file is not read");
        assert_eq!(s.strategy(), RebootStrategy::Off);
        assert_eq!(s.files.len(), 3, "{:?}", s.files);
        assert_eq!(s.health_timeout, DEFAULT_HEALTH_TIMEOUT);
        write(
            r,
            "run/keel/update.d/99-now.toml",
            "[health]\ntimeout = \"90s\"\n",
        );
        assert_eq!(
            load(&Sources::under(r)).expect("load").health_timeout,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn an_empty_file_masks_the_vendor_one() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        write(r, "usr/lib/keel/update.d/10-v.toml", "enabled = false\n");
        write(r, "etc/keel/update.d/10-v.toml", "");
        assert!(load(&Sources::under(r)).expect("load").enabled);
    }

    #[test]
    fn flatcar_update_conf_between_vendor_and_admin() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        write(
            r,
            "usr/lib/keel/update.d/10-v.toml",
            "base_url = \"https://v.example\"\nchannel = \"stable\"\n",
        );
        write(
            r,
            "etc/coreos/update.conf",
            "GROUP=beta\nREBOOT_STRATEGY=off\n",
        );
        write(
            r,
            "etc/flatcar/update.conf",
            "# from Ignition\nGROUP=\"alpha\"\nSERVER=https://mirror.example/keel/\nPCR_POLICY=x\n",
        );
        let s = load(&Sources::under(r)).expect("load");
        assert_eq!(s.channel, "alpha");
        assert_eq!(s.base_url.as_deref(), Some("https://mirror.example/keel"));
        assert_eq!(s.strategy(), RebootStrategy::Off);
        write(
            r,
            "etc/keel/update.d/20-admin.toml",
            "channel = \"stable\"\n",
        );
        assert_eq!(load(&Sources::under(r)).expect("load").channel, "stable");
    }

    #[test]
    fn errors_name_file_and_key() {
        let p = Path::new("/etc/keel/update.d/x.toml");
        let e = parse_fragment(p, "chanel = \"beta\"\n").expect_err("unknown key");
        let s = e.to_string();
        assert!(s.starts_with("/etc/keel/update.d/x.toml: "), "{s}");
        assert!(s.contains("chanel"), "{s}");
        let e = parse_fragment(p, "interval = true\n").expect_err("type");
        assert!(e.to_string().contains("interval"), "{e}");
        let e = parse_fragment(p, "[reboot]\nstrategee = \"off\"\n").expect_err("key");
        assert!(e.to_string().contains("strategee"), "{e}");

        let mut m = Merged::default();
        m.apply(
            p,
            &parse_fragment(p, "interval = \"5s\"\n").expect("parses"),
        );
        assert_eq!(
            m.validate().expect_err("too short").to_string(),
            "/etc/keel/update.d/x.toml: key interval: 5s is too short (at least 10s)"
        );
        let mut m = Merged::default();
        m.apply(
            p,
            &parse_fragment(p, "base_url = \"ftp://x\"\n").expect("parses"),
        );
        let e = m.validate().expect_err("scheme").to_string();
        assert!(e.contains("key base_url"), "{e}");
        let mut m = Merged::default();
        m.apply(
            p,
            &parse_fragment(p, "channel = \"../etc\"\n").expect("parses"),
        );
        assert!(m.validate().is_err());

        let l = Path::new("/etc/flatcar/update.conf");
        let e = parse_legacy(l, "GROUP=stable\ngarbage\n").expect_err("line");
        assert_eq!(
            e.to_string(),
            "/etc/flatcar/update.conf: line 2: \"garbage\" is not KEY=VALUE"
        );
        let mut m = Merged::default();
        m.apply(
            l,
            &parse_legacy(l, "REBOOT_STRATEGY=sometimes\n").expect("parses"),
        );
        let s = m.validate().expect("the rest is valid");
        let e = s.reboot.expect_err("strategy");
        assert!(e.to_string().starts_with("/etc/flatcar/update.conf: key REBOOT_STRATEGY: unknown reboot strategy \"sometimes\""), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45 min"), Ok(Duration::from_secs(2700)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("999999999999999d").is_err());
    }

    fn reboot_of(root: &Path) -> Result<RebootSettings, ConfigError> {
        load(&Sources::under(root))
            .expect("the rest is valid")
            .reboot
    }

    #[test]
    fn reboot_strategies_in_toml() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        assert_eq!(reboot_of(r), Ok(RebootSettings::default()));
        write(
            r,
            "etc/keel/update.d/50-reboot.toml",
            r#"[reboot]
strategy = "etcd_lock"
grace_period = "2m"
[reboot.etcd_lock]
endpoints = ["https://10.0.0.1:2379", "10.0.0.2:2379"]
ca_file = "/etc/keel/etcd/ca.pem"
cert_file = "/etc/keel/etcd/client.pem"
key_file = "/etc/keel/etcd/client-key.pem"
username = "keel"
password = "secret"
group = "workers"
[reboot.periodic]
time_zone = "UTC"
random_offset_minutes = 30
[[reboot.periodic.window]]
days = ["Sat", "Sun"]
start_time = "02:00"
length_minutes = 120
"#,
        );
        let rs = reboot_of(r).expect("valid");
        assert_eq!(rs.strategy, RebootStrategy::EtcdLock);
        assert_eq!(rs.grace_period, Duration::from_secs(120));
        let e = rs.etcd.as_ref().expect("etcd");
        assert_eq!(e.endpoints, ["https://10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(e.group.as_deref(), Some("workers"));
        assert_eq!(e.username.as_deref(), Some("keel"));
        let c = e.client_config();
        assert_eq!(
            c.cert_file.as_deref(),
            Some(Path::new("/etc/keel/etcd/client.pem"))
        );
        let w = rs.windows.as_ref().expect("windows");
        assert_eq!(w.schedule.windows().len(), 1);
        assert_eq!(
            rs.lock_name().as_deref(),
            Some("etcd https://10.0.0.1:2379,10.0.0.2:2379 key coreos.com/updateengine/rebootlock/groups/workers/semaphore")
        );
        // A later file switches to FleetLock; the windows stay.
        write(
            r,
            "run/keel/update.d/60-fleet.toml",
            "[reboot]\nstrategy = \"fleet_lock\"\n[reboot.fleet_lock]\nbase_url = \"http://airlock:3333/\"\n",
        );
        let rs = reboot_of(r).expect("valid");
        assert_eq!(rs.strategy, RebootStrategy::FleetLock);
        assert_eq!(
            rs.fleet_lock,
            Some(FleetLockSettings {
                base_url: "http://airlock:3333".into(),
                group: None
            })
        );
        assert!(rs.windows.is_some() && rs.etcd.is_none());
        std::fs::remove_file(r.join("run/keel/update.d/60-fleet.toml")).expect("rm");
        write(
            r,
            "run/keel/update.d/60-p.toml",
            "[reboot]\nstrategy = \"periodic\"\n",
        );
        assert_eq!(
            reboot_of(r).expect("valid").strategy,
            RebootStrategy::Periodic
        );
    }

    #[test]
    fn bad_reboot_values_name_file_and_key_and_keep_updates() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        let cases: &[(&str, &str)] = &[
            ("[reboot]\nstrategy = \"later\"\n", "key reboot.strategy: unknown reboot strategy \"later\" (immediate, off, periodic, etcd_lock, fleet_lock)"),
            ("[reboot]\nstrategy = \"periodic\"\n", "key reboot.periodic: strategy periodic needs at least one"),
            ("[reboot]\nstrategy = \"fleet_lock\"\n", "key reboot.fleet_lock.base_url: strategy fleet_lock needs"),
            ("[reboot]\nstrategy = \"fleet_lock\"\n[reboot.fleet_lock]\nbase_url = \"airlock:3333\"\n", "key reboot.fleet_lock.base_url: \"airlock:3333\" is not an http"),
            ("[reboot]\nstrategy = \"etcd_lock\"\n[reboot.etcd_lock]\ncert_file = \"/c.pem\"\n", "key reboot.etcd_lock.cert_file: a client certificate needs its key file too"),
            ("[reboot]\nstrategy = \"etcd_lock\"\n[reboot.etcd_lock]\nca_file = \"ca.pem\"\n", "key reboot.etcd_lock.ca_file: ca.pem is not an absolute path"),
            ("[reboot]\nstrategy = \"etcd_lock\"\n[reboot.etcd_lock]\ngroup = \"a/b\"\n", "key reboot.etcd_lock.group: \"a/b\""),
            ("[reboot]\nstrategy = \"etcd_lock\"\n[reboot.etcd_lock]\nendpoints = [\"ftp://x\"]\n", "key reboot.etcd_lock.endpoints: \"ftp://x\": only http"),
            ("[reboot]\ngrace_period = \"2 weeks\"\n", "key reboot.grace_period:"),
            ("[reboot.periodic]\ntime_zone = \"Mars/Olympus\"\n[[reboot.periodic.window]]\nstart_time = \"02:00\"\nlength_minutes = 60\n", "key reboot.periodic: time zone \"Mars/Olympus\""),
            ("[reboot.periodic]\n[[reboot.periodic.window]]\nstart_time = \"25:00\"\nlength_minutes = 60\n", "key reboot.periodic: window start \"25:00\""),
            ("[reboot.periodic]\nrandom_offset_minutes = 90\n[[reboot.periodic.window]]\nstart_time = \"02:00\"\nlength_minutes = 60\n", "key reboot.periodic: random offset"),
        ];
        for (text, want) in cases {
            write(
                r,
                "etc/keel/update.d/50-reboot.toml",
                &format!("channel = \"beta\"\n{text}"),
            );
            let s = load(&Sources::under(r)).expect("the update settings stay valid");
            assert_eq!(s.channel, "beta");
            assert_eq!(s.strategy(), RebootStrategy::Off, "{text}");
            let e = s.reboot.expect_err(text).to_string();
            assert!(
                e.contains("50-reboot.toml: ") && e.contains(want),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn locksmith_settings_from_update_conf() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        write(
            r,
            "etc/coreos/update.conf",
            "REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_REBOOT_WINDOW_START=\"Thu 04:00\"\n",
        );
        write(
            r,
            "etc/flatcar/update.conf",
            "LOCKSMITHD_REBOOT_WINDOW_LENGTH=1h30m\nLOCKSMITHD_ENDPOINT=http://10.0.0.1:2379,http://10.0.0.2:2379\nLOCKSMITHD_ETCD_CAFILE=/etc/ssl/etcd/ca.pem\nLOCKSMITHD_ETCD_CERTFILE=/etc/ssl/etcd/c.pem\nLOCKSMITHD_ETCD_KEYFILE=/etc/ssl/etcd/k.pem\nLOCKSMITHD_GROUP=web\n",
        );
        let rs = reboot_of(r).expect("valid");
        assert_eq!(rs.strategy, RebootStrategy::EtcdLock);
        let e = rs.etcd.expect("etcd");
        assert_eq!(
            e.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(e.group.as_deref(), Some("web"));
        assert_eq!(
            e.ca_file.as_deref(),
            Some(Path::new("/etc/ssl/etcd/ca.pem"))
        );
        let w = rs.windows.expect("window");
        assert_eq!(
            w.schedule.windows()[0].length,
            jiff::SignedDuration::from_mins(90)
        );
        assert_eq!(w.schedule.time_zone_name(), "localtime");
        // best-effort: the lock when an endpoint is configured, else reboot.
        write(r, "etc/coreos/update.conf", "REBOOT_STRATEGY=best-effort\n");
        write(
            r,
            "etc/flatcar/update.conf",
            "LOCKSMITHD_ENDPOINT=http://10.0.0.1:2379\n",
        );
        let rs = reboot_of(r).expect("valid");
        assert!(rs.best_effort);
        assert_eq!(rs.strategy, RebootStrategy::EtcdLock);
        write(r, "etc/flatcar/update.conf", "");
        let rs = reboot_of(r).expect("valid");
        assert_eq!(rs.strategy, RebootStrategy::Immediate);
        write(r, "etc/coreos/update.conf", "REBOOT_STRATEGY=reboot\n");
        assert_eq!(
            reboot_of(r).expect("valid").strategy,
            RebootStrategy::Immediate
        );
        // Errors name the file and the variable.
        write(
            r,
            "etc/coreos/update.conf",
            "LOCKSMITHD_REBOOT_WINDOW_START=04:00\n",
        );
        let e = reboot_of(r).expect_err("half a window").to_string();
        assert!(e.starts_with(&format!("{}: key LOCKSMITHD_REBOOT_WINDOW_START: LOCKSMITHD_REBOOT_WINDOW_LENGTH must be set too", r.join("etc/coreos/update.conf").display())), "{e}");
        write(
            r,
            "etc/coreos/update.conf",
            "LOCKSMITHD_REBOOT_WINDOW_START=Thu 04:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=forever\n",
        );
        let e = reboot_of(r).expect_err("length").to_string();
        assert!(
            e.contains("key LOCKSMITHD_REBOOT_WINDOW_LENGTH: window length \"forever\""),
            "{e}"
        );
        write(
            r,
            "etc/coreos/update.conf",
            "REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_ENDPOINT=ftp://x\n",
        );
        let e = reboot_of(r).expect_err("endpoint").to_string();
        assert!(e.contains("key LOCKSMITHD_ENDPOINT: \"ftp://x\""), "{e}");
        // An admin drop-in's windows replace locksmith's.
        write(
            r,
            "etc/coreos/update.conf",
            "LOCKSMITHD_REBOOT_WINDOW_START=Thu 04:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=1h\n",
        );
        write(r, "etc/keel/update.d/50-w.toml", "[reboot.periodic]\n[[reboot.periodic.window]]\nstart_time = \"01:00\"\nlength_minutes = 30\n");
        let w = reboot_of(r).expect("valid").windows.expect("w");
        assert_eq!(
            w.schedule.windows()[0].length,
            jiff::SignedDuration::from_mins(30)
        );
        assert!(w.path.ends_with("50-w.toml"));
    }
}

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
//! The drop-in order is Zincati's and the (`/run` last, so a runtime
//! override wins for this boot); a name in a later directory shadows the same
//! name in an earlier one, and an empty file there masks it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
#[derive(Debug, Error, PartialEq, Eq)]
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

/// How the machine reboots into a staged update. Issue 17's coordination
/// strategies (periodic windows, etcd lock, FleetLock) extend this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootStrategy {
    /// Reboot as soon as the update is staged.
    Immediate,
    /// Never reboot: stage, say so, and leave the reboot to the admin.
    Off,
}

impl fmt::Display for RebootStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RebootStrategy::Immediate => "immediate",
            RebootStrategy::Off => "off",
        })
    }
}

/// `[reboot]` of a drop-in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootFragment {
    /// `"immediate"` or `"off"`.
    pub strategy: Option<RebootStrategy>,
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
    strategy: Option<From<RebootStrategy>>,
    health_timeout: Option<From<IntervalText>>,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
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
            set(&mut self.strategy, &r.strategy, path);
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
            strategy: self
                .strategy
                .as_ref()
                .map_or(RebootStrategy::Immediate, |s| s.value),
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// The release server (no trailing slash); `None` = nowhere to look.
    pub base_url: Option<String>,
    /// The channel followed.
    pub channel: String,
    /// Whether periodic checks run.
    pub enabled: bool,
    /// Time between checks.
    #[serde(serialize_with = "secs")]
    pub interval: Duration,
    /// Whether an older version may be applied.
    pub allow_downgrade: bool,
    /// Reboot policy.
    pub strategy: RebootStrategy,
    /// How long after boot an updated slot has to be marked good before
    /// the agent rolls back.
    #[serde(serialize_with = "secs")]
    pub health_timeout: Duration,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            base_url: None,
            channel: DEFAULT_CHANNEL.into(),
            enabled: true,
            interval: DEFAULT_INTERVAL,
            allow_downgrade: false,
            strategy: RebootStrategy::Immediate,
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
/// optionally quoted) into a fragment. Keys other than `GROUP`, `SERVER`
/// and `REBOOT_STRATEGY` are accepted and ignored: those files carry
/// update_engine's own keys (`AUTHORITY`, `PCR_POLICY`, …) that mean nothing
/// here.
pub fn parse_legacy(path: &Path, text: &str) -> Result<Fragment, ConfigError> {
    let mut f = Fragment::default();
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
            "REBOOT_STRATEGY" => {
                let s = match v.as_str() {
                    "reboot" | "best-effort" | "immediate" => RebootStrategy::Immediate,
                    "off" => RebootStrategy::Off,
                    other => {
                        return Err(ConfigError::Invalid {
                            path: path.to_path_buf(),
                            key: "REBOOT_STRATEGY",
                            message: format!(
                                "{other:?} is not supported (reboot, best-effort, off)"
                            ),
                        })
                    }
                };
                f.reboot = Some(RebootFragment { strategy: Some(s) });
            }
            _ => {}
        }
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
        assert_eq!(s.strategy, RebootStrategy::Off);
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
        assert_eq!(s.strategy, RebootStrategy::Off);
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
        let e = parse_fragment(p, "[reboot]\nstrategy = \"later\"\n").expect_err("variant");
        assert!(e.to_string().contains("later"), "{e}");

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
        let e = parse_legacy(l, "REBOOT_STRATEGY=sometimes\n").expect_err("strategy");
        assert!(e.to_string().contains("key REBOOT_STRATEGY"), "{e}");
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
}

//! Where keel-oem reads and writes, and the small persistent records:
//! run-once markers, each hook's last result, the runtime status file.
//!
//! Writes are atomic (temp file in the same directory, fsync, rename, fsync
//! the directory), so a power cut never leaves half a marker or result.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use keel_contract::{paths, BootRecord};
use serde::{Deserialize, Serialize};

/// Every path keel-oem touches; the defaults are the installed system's,
/// tests and `keel-oem --oem-dir …` point them elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The OEM tree (`/oem`): `oem.toml`, `oem-release`, `units/`, `bin/`.
    pub oem_dir: PathBuf,
    /// Persistent state (`/var/lib/keel/oem`): `done/<hook>`, `results.json`.
    pub state_dir: PathBuf,
    /// Runtime status (`/run/keel/oem`): `status.json`.
    pub run_dir: PathBuf,
    /// Platform facts (`/run/keel/metadata`).
    pub metadata: PathBuf,
    /// keel-init's boot record (`/run/keel/boot.json`).
    pub boot_json: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            oem_dir: PathBuf::from(paths::OEM_DIR),
            state_dir: PathBuf::from(paths::OEM_STATE_DIR),
            run_dir: PathBuf::from(paths::OEM_RUN_DIR),
            metadata: PathBuf::from(paths::METADATA),
            boot_json: PathBuf::from(paths::BOOT_RECORD),
        }
    }
}

impl Paths {
    /// `oem.toml`.
    pub fn manifest(&self) -> PathBuf {
        self.oem_dir.join("oem.toml")
    }
    /// `oem-release`.
    pub fn release(&self) -> PathBuf {
        self.oem_dir.join("oem-release")
    }
    /// The vendor's units.
    pub fn units(&self) -> PathBuf {
        self.oem_dir.join("units")
    }
    /// Run-once marker of a hook.
    pub fn marker(&self, hook: &str) -> PathBuf {
        self.state_dir.join("done").join(hook)
    }
    /// Every hook's last result, kept across boots.
    pub fn results(&self) -> PathBuf {
        self.state_dir.join("results.json")
    }
    /// This boot's status.
    pub fn status(&self) -> PathBuf {
        self.run_dir.join("status.json")
    }
}

/// Errors reading or writing state; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// "writing", "reading", …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A JSON record could not be decoded.
    #[error("decoding {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Write `data` to `path` atomically and durably, creating the parent
/// directory (`keel_contract::write_atomic`; on `/run`, a tmpfs, the fsyncs
/// cost nothing).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    keel_contract::write_atomic(path, data).map_err(|source| StateError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// Seconds since the epoch, now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (UTC). Hand-written (Howard
/// Hinnant's days-to-civil) to keep a date crate out of a boot binary.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How a hook's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Exit {
    /// Exited with a status code.
    Exited {
        /// The code.
        code: i32,
    },
    /// Killed by a signal it did not expect.
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// Ran past its timeout; the whole process group was killed.
    TimedOut {
        /// The timeout, in seconds.
        after_secs: u64,
    },
    /// Could not be started at all.
    SpawnFailed {
        /// Why.
        error: String,
    },
}

impl Exit {
    /// Success is exit status 0.
    pub fn success(&self) -> bool {
        matches!(self, Exit::Exited { code: 0 })
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Exited { code } => write!(f, "exited {code}"),
            Exit::Signaled { signal } => write!(f, "killed by signal {signal}"),
            Exit::TimedOut { after_secs } => write!(f, "timed out after {after_secs}s"),
            Exit::SpawnFailed { error } => write!(f, "failed to start: {error}"),
        }
    }
}

/// The last run of one hook (in `status.json` for this boot, `results.json` across boots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookResult {
    /// The stage it ran in.
    pub stage: String,
    /// Start, Unix seconds.
    pub started: u64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// How it ended.
    pub exit: Exit,
    /// Bytes of output forwarded to the journal.
    pub output_bytes: u64,
    /// Bytes of output dropped beyond the limit.
    pub output_dropped: u64,
    /// The last line it wrote to stderr (for failure reasons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stderr: Option<String>,
}

/// Every hook's last result from earlier stage runs (`results.json`).
pub fn read_results(paths: &Paths) -> Result<BTreeMap<String, HookResult>, StateError> {
    Ok(read_json(&paths.results())?.unwrap_or_default())
}

/// Persist every hook's last result, durably: written once per stage run.
pub fn write_results(
    paths: &Paths,
    results: &BTreeMap<String, HookResult>,
) -> Result<(), StateError> {
    write_json(&paths.results(), results)
}

/// A hook's last result: this boot's (`status.json`) if it ran, else the
/// persisted one; `None` when it never ran.
pub fn read_result(paths: &Paths, hook: &str) -> Result<Option<HookResult>, StateError> {
    if let Some(r) = read_status(paths)?.results.remove(hook) {
        return Ok(Some(r));
    }
    Ok(read_results(paths)?.remove(hook))
}

/// A run-once marker: when the hook first succeeded.
pub fn read_marker(paths: &Paths, hook: &str) -> Result<Option<u64>, StateError> {
    let path = paths.marker(hook);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().parse().unwrap_or(0))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Io {
            action: "reading",
            path,
            source: e,
        }),
    }
}

/// Mark a run-once hook done (only ever after it succeeded).
pub fn write_marker(paths: &Paths, hook: &str, when: u64) -> Result<(), StateError> {
    write_atomic(&paths.marker(hook), format!("{when}\n").as_bytes())
}

/// State of one stage in this boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStatus {
    /// "ok" or "failed".
    pub state: String,
    /// Start, Unix seconds.
    pub started: u64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Hooks run, skipped, failed: name → one-word outcome.
    pub hooks: BTreeMap<String, String>,
}

/// `/run/keel/oem/status.json`: this boot's stages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStatus {
    /// Whether keel-init said this is the first boot.
    pub first_boot: bool,
    /// `oem-release` ID.
    pub oem_id: String,
    /// Stage name → status.
    pub stages: BTreeMap<String, StageStatus>,
    /// Hook name → its result in this boot, updated after every hook.
    #[serde(default)]
    pub results: BTreeMap<String, HookResult>,
}

/// Read this boot's status (empty when no stage ran yet).
pub fn read_status(paths: &Paths) -> Result<RuntimeStatus, StateError> {
    Ok(read_json(&paths.status())?.unwrap_or_default())
}

/// Write this boot's status (atomic; not fsync'd: `/run` is a tmpfs).
pub fn write_status(paths: &Paths, s: &RuntimeStatus) -> Result<(), StateError> {
    write_json(&paths.status(), s)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| StateError::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), StateError> {
    let mut data = serde_json::to_vec_pretty(v).map_err(|source| StateError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    data.push(b'\n');
    write_atomic(path, &data)
}

/// Whether this is the first boot, from keel-init's `boot.json`. A missing or
/// unreadable file means "not first boot" (with a warning): running first-boot
/// hooks is guarded by markers anyway, this only feeds `KEEL_FIRST_BOOT`.
pub fn first_boot(paths: &Paths) -> bool {
    match BootRecord::load(&paths.boot_json) {
        Ok(r) => r.first_boot,
        Err(e) => {
            tracing::warn!("{e}; assuming this is not the first boot");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn atomic_write_and_records_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths {
            state_dir: d.path().join("state"),
            run_dir: d.path().join("run"),
            boot_json: d.path().join("boot.json"),
            ..Paths::default()
        };
        assert_eq!(read_marker(&paths, "h").unwrap(), None);
        write_marker(&paths, "h", 42).unwrap();
        assert_eq!(read_marker(&paths, "h").unwrap(), Some(42));
        let r = HookResult {
            stage: "late".into(),
            started: 1,
            duration_ms: 2,
            exit: Exit::TimedOut { after_secs: 3 },
            output_bytes: 4,
            output_dropped: 0,
            last_stderr: None,
        };
        let mut all = BTreeMap::new();
        all.insert("h".to_string(), r.clone());
        write_results(&paths, &all).unwrap();
        assert_eq!(read_result(&paths, "h").unwrap(), Some(r.clone()));
        // This boot's result wins over the persisted one.
        let mut newer = r.clone();
        newer.exit = Exit::Exited { code: 0 };
        let mut st = RuntimeStatus::default();
        st.results.insert("h".into(), newer.clone());
        write_status(&paths, &st).unwrap();
        assert_eq!(read_result(&paths, "h").unwrap(), Some(newer));
        assert_eq!(read_result(&paths, "other").unwrap(), None);
        // No stray temp files left behind.
        let mut names: Vec<_> = fs::read_dir(d.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["done", "results.json"]);
    }

    #[test]
    fn boot_json_first_boot() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths {
            boot_json: d.path().join("boot.json"),
            ..Paths::default()
        };
        assert!(!first_boot(&paths), "missing file means not first boot");
        let mut r = BootRecord::new(keel_contract::Slot::A, "/dev/vda");
        r.first_boot = true;
        r.store(&paths.boot_json).unwrap();
        assert!(first_boot(&paths));
        r.first_boot = false;
        r.store(&paths.boot_json).unwrap();
        assert!(!first_boot(&paths));
        fs::write(&paths.boot_json, "garbage").unwrap();
        assert!(!first_boot(&paths));
    }
}

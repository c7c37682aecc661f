//! Is this boot good enough to prove the booted slot?
//!
//! Good means: `multi-user.target` is active and none of the **critical
//! units** has failed. The critical units are unit names or globs from
//! `critical_units = [...]` in TOML drop-ins named `*.toml` in
//! `/usr/lib/keel/boot-check.d/`, `/run/keel/boot-check.d/` and
//! `/etc/keel/boot-check.d/` (a file of the same name in a later directory
//! replaces an earlier one, an empty file masks it; files are then read in
//! name order and the last `critical_units` given wins, so a drop-in states
//! the whole list). The image ships `10-keel.toml` with [`DEFAULT_CRITICAL`]
//! (sshd, keel-netd, the keel-oem stages); with no file at all the default
//! applies too.
//!
//! `keel-boot-check.service` runs the check before `boot-complete.target`
//! (systemd's boot assessment; RequiredBy it), and
//! `keel-mark-successful.service` proves the slot after that target: a
//! failed check leaves the slot unproven, its tries run out and the update
//! agent's health gate rolls back.
//!
//! systemd is asked through `systemctl` (its stable command-line interface)
//! rather than over D-Bus: this runs once per boot and keeps keel-bootctl
//! free of a D-Bus client.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The target that must be reached.
pub const TARGET: &str = "multi-user.target";
/// Critical units when no drop-in names any.
pub const DEFAULT_CRITICAL: &[&str] = &["sshd.socket", "keel-netd.service", "keel-oem-*.service"];
/// The drop-in directory name under `/usr/lib/keel`, `/run/keel`, `/etc/keel`.
pub const DROPIN_DIR: &str = "boot-check.d";

/// Unit suffixes systemd knows.
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".target",
    ".mount",
    ".automount",
    ".swap",
    ".path",
    ".timer",
    ".device",
    ".slice",
    ".scope",
];

/// What the good-boot check asks of systemd.
pub trait SystemState {
    /// `systemctl is-active UNIT` as a word ("active", "activating", …).
    fn active_state(&self, unit: &str) -> Result<String>;
    /// Failed units matching any of `patterns`.
    fn failed_units(&self, patterns: &[String]) -> Result<Vec<String>>;
}

/// Ok when the boot is good, else why not.
/// A failed critical unit is named first: it is usually why the target
/// was not reached.
pub fn check(sys: &impl SystemState, critical: &[String]) -> Result<()> {
    if !critical.is_empty() {
        let failed = sys.failed_units(critical)?;
        if !failed.is_empty() {
            bail!("critical units failed: {}", failed.join(", "));
        }
    }
    let state = sys.active_state(TARGET)?;
    if state != "active" {
        bail!("{TARGET} is {state}, not active");
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fragment {
    critical_units: Option<Vec<String>>,
}

/// A unit name or glob as a drop-in may give it.
fn valid_unit_pattern(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 255
        && UNIT_SUFFIXES
            .iter()
            .any(|s| u.ends_with(s) && u.len() > s.len())
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@*?[]".contains(&b))
}

/// The critical units from the drop-ins in `dirs` (lowest precedence
/// first); errors name the file and the entry.
pub fn load_critical(dirs: &[PathBuf]) -> Result<Vec<String>> {
    let mut files: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".toml") {
                files.insert(name, e.path());
            }
        }
    }
    let mut units: Option<Vec<String>> = None;
    for path in files.values() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        if text.trim().is_empty() {
            continue; // masked
        }
        let f: Fragment = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        if let Some(list) = f.critical_units {
            for u in &list {
                if !valid_unit_pattern(u) {
                    bail!(
                        "{}: critical_units: {u:?} is not a unit name or glob (e.g. \"ssh.service\", \"keel-oem-*.service\")",
                        path.display()
                    );
                }
            }
            units = Some(list);
        }
    }
    Ok(units.unwrap_or_else(|| DEFAULT_CRITICAL.iter().map(|s| s.to_string()).collect()))
}

/// The drop-in directories of the running system.
pub fn dropin_dirs() -> Vec<PathBuf> {
    keel_contract::paths::config_dirs(DROPIN_DIR).to_vec()
}

/// The drop-in directories under `root` (tests, `--root`).
pub fn dropin_dirs_under(root: &Path) -> Vec<PathBuf> {
    dropin_dirs()
        .iter()
        .map(|d| keel_contract::paths::under(root, &d.to_string_lossy()))
        .collect()
}

/// The running systemd, through systemctl.
#[derive(Debug, Default)]
pub struct Systemctl;

impl SystemState for Systemctl {
    fn active_state(&self, unit: &str) -> Result<String> {
        // is-active exits non-zero for every state but active: read stdout.
        let out = Command::new("systemctl")
            .args(["is-active", unit])
            .output()
            .context("running systemctl is-active")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn failed_units(&self, patterns: &[String]) -> Result<Vec<String>> {
        let out = Command::new("systemctl")
            .args([
                "list-units",
                "--all",
                "--state=failed",
                "--plain",
                "--no-legend",
                "--no-pager",
                "--",
            ])
            .args(patterns)
            .output()
            .context("running systemctl list-units")?;
        if !out.status.success() {
            bail!(
                "systemctl list-units: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(&'static str, Vec<String>);
    impl SystemState for Fake {
        fn active_state(&self, unit: &str) -> Result<String> {
            assert_eq!(unit, TARGET);
            Ok(self.0.into())
        }
        fn failed_units(&self, patterns: &[String]) -> Result<Vec<String>> {
            // What systemctl does with globs, for the fixed names here.
            Ok(self
                .1
                .iter()
                .filter(|u| {
                    patterns.iter().any(|p| match p.split_once('*') {
                        Some((a, b)) => u.starts_with(a) && u.ends_with(b),
                        None => *u == p,
                    })
                })
                .cloned()
                .collect())
        }
    }

    fn default() -> Vec<String> {
        DEFAULT_CRITICAL.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn good_only_when_multi_user_is_up_and_no_critical_unit_failed() {
        assert!(check(&Fake("active", vec![]), &default()).is_ok());
        let e = check(&Fake("activating", vec![]), &default()).expect_err("not yet");
        assert_eq!(e.to_string(), "multi-user.target is activating, not active");
        let e = check(
            &Fake("active", vec!["keel-netd.service".into()]),
            &default(),
        )
        .expect_err("failed");
        assert_eq!(e.to_string(), "critical units failed: keel-netd.service");
        let e = check(
            &Fake("active", vec!["keel-oem-late.service".into()]),
            &default(),
        )
        .expect_err("failed");
        assert_eq!(
            e.to_string(),
            "critical units failed: keel-oem-late.service"
        );
        // A unit not on the list does not stop the slot being proven.
        assert!(check(&Fake("active", vec!["foo.service".into()]), &default()).is_ok());
    }

    #[test]
    fn drop_ins_replace_the_list_in_name_order_and_mask_by_name() {
        let t = tempfile::tempdir().unwrap();
        let dirs = dropin_dirs_under(t.path());
        assert_eq!(load_critical(&dirs).unwrap(), default());
        let w = |dir: usize, name: &str, text: &str| {
            std::fs::create_dir_all(&dirs[dir]).unwrap();
            std::fs::write(dirs[dir].join(name), text).unwrap();
        };
        w(0, "10-keel.toml", "critical_units = [\"ssh.service\"]\n");
        assert_eq!(load_critical(&dirs).unwrap(), ["ssh.service"]);
        w(
            2,
            "50-site.toml",
            "critical_units = [\"ssh.service\", \"app@web.service\"]\n",
        );
        assert_eq!(
            load_critical(&dirs).unwrap(),
            ["ssh.service", "app@web.service"]
        );
        w(2, "50-site.toml", "");
        assert_eq!(load_critical(&dirs).unwrap(), ["ssh.service"]);
        w(2, "90-none.toml", "critical_units = []\n");
        assert!(load_critical(&dirs).unwrap().is_empty());
    }

    #[test]
    fn bad_drop_ins_name_the_file() {
        let t = tempfile::tempdir().unwrap();
        let dirs = dropin_dirs_under(t.path());
        std::fs::create_dir_all(&dirs[2]).unwrap();
        for (text, want) in [
            ("critical_units = [\"ssh\"]", "\"ssh\" is not a unit name"),
            ("critical_units = [\"../x.service\"]", "is not a unit name"),
            ("critical = []", "unknown field"),
            ("critical_units = \"ssh.service\"", "invalid type"),
        ] {
            std::fs::write(dirs[2].join("x.toml"), text).unwrap();
            let e = format!("{:#}", load_critical(&dirs).unwrap_err());
            assert!(e.contains("x.toml") && e.contains(want), "{text}: {e}");
        }
    }
}

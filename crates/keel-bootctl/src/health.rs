//! Is this boot good enough to prove the booted slot?
//!
//! Good means: `multi-user.target` is active and no Keel unit (`keel-*`)
//! has failed. Anything else — a failed network daemon, OEM hook runner or
//! provisioning unit — leaves the slot unproven so that its remaining tries
//! run out and keel-init goes back to the other slot.
//!
//! systemd is asked through `systemctl` (its stable command-line interface)
//! rather than over D-Bus: this runs once per boot and keeps keel-bootctl
//! free of a D-Bus client.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// The target that must be reached.
pub const TARGET: &str = "multi-user.target";
/// The units that must not have failed.
pub const KEEL_UNITS: &str = "keel-*";

/// What the good-boot check asks of systemd.
pub trait SystemState {
    /// `systemctl is-active UNIT` as a word ("active", "activating", …).
    fn active_state(&self, unit: &str) -> Result<String>;
    /// Failed units matching `pattern`.
    fn failed_units(&self, pattern: &str) -> Result<Vec<String>>;
}

/// Ok when the boot is good, else why not.
pub fn check(sys: &impl SystemState) -> Result<()> {
    let state = sys.active_state(TARGET)?;
    if state != "active" {
        bail!("{TARGET} is {state}, not active");
    }
    let failed = sys.failed_units(KEEL_UNITS)?;
    if !failed.is_empty() {
        bail!("Keel units failed: {}", failed.join(", "));
    }
    Ok(())
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

    fn failed_units(&self, pattern: &str) -> Result<Vec<String>> {
        let out = Command::new("systemctl")
            .args([
                "list-units",
                "--state=failed",
                "--plain",
                "--no-legend",
                "--no-pager",
                pattern,
            ])
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
        fn failed_units(&self, pattern: &str) -> Result<Vec<String>> {
            assert_eq!(pattern, KEEL_UNITS);
            Ok(self.1.clone())
        }
    }

    #[test]
    fn good_only_when_multi_user_is_up_and_no_keel_unit_failed() {
        assert!(check(&Fake("active", vec![])).is_ok());
        let e = check(&Fake("activating", vec![])).expect_err("not yet");
        assert_eq!(e.to_string(), "multi-user.target is activating, not active");
        let e = check(&Fake("active", vec!["keel-netd.service".into()])).expect_err("failed");
        assert_eq!(e.to_string(), "Keel units failed: keel-netd.service");
    }
}

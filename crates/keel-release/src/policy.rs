//! Which version may be installed over which: pure decisions the agent and
//! the installer share.

use crate::doc::Manifest;
use crate::version::Version;

/// How a target version relates to the running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Newer: an update.
    Upgrade,
    /// The same version: nothing to do.
    Same,
    /// Older: a downgrade, allowed only by configuration.
    Downgrade,
}

/// Why a version may not be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Older than the running version and downgrades are not allowed.
    #[error("{target} is older than the running {current} and downgrades are not allowed (allow_downgrade)")]
    Downgrade {
        /// Running version.
        current: Version,
        /// Offered version.
        target: Version,
    },
    /// The running version is older than the target's `min_version`.
    #[error("{target} updates only from {min} or newer, this host runs {current}: take an intermediate version first")]
    MinVersion {
        /// Running version.
        current: Version,
        /// Offered version.
        target: Version,
        /// Its minimum.
        min: Version,
    },
}

/// Compare a target with the running version.
pub fn direction(current: &Version, target: &Version) -> Direction {
    match target.cmp(current) {
        std::cmp::Ordering::Greater => Direction::Upgrade,
        std::cmp::Ordering::Equal => Direction::Same,
        std::cmp::Ordering::Less => Direction::Downgrade,
    }
}

/// Refuse a downgrade unless allowed.
pub fn check_downgrade(
    current: &Version,
    target: &Version,
    allow_downgrade: bool,
) -> Result<Direction, PolicyError> {
    match direction(current, target) {
        Direction::Downgrade if !allow_downgrade => Err(PolicyError::Downgrade {
            current: current.clone(),
            target: target.clone(),
        }),
        d => Ok(d),
    }
}

/// Refuse a target whose `min_version` the running version does not meet.
pub fn check_min_version(current: &Version, manifest: &Manifest) -> Result<(), PolicyError> {
    match &manifest.min_version {
        Some(min) if current < min => Err(PolicyError::MinVersion {
            current: current.clone(),
            target: manifest.version.clone(),
            min: min.clone(),
        }),
        _ => Ok(()),
    }
}

/// Both checks, as an update client makes them: `Ok(Same)` means nothing to do.
pub fn check_update(
    current: &Version,
    manifest: &Manifest,
    allow_downgrade: bool,
) -> Result<Direction, PolicyError> {
    let d = check_downgrade(current, &manifest.version, allow_downgrade)?;
    if d == Direction::Upgrade {
        check_min_version(current, manifest)?;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn downgrade_refused_unless_allowed() {
        let m = crate::doc::tests::manifest("1.0.0");
        assert_eq!(check_update(&v("0.9"), &m, false), Ok(Direction::Upgrade));
        assert_eq!(check_update(&v("1.0"), &m, false), Ok(Direction::Same));
        let e = check_update(&v("1.1"), &m, false).unwrap_err();
        assert!(matches!(e, PolicyError::Downgrade { .. }));
        assert!(
            e.to_string()
                .contains("1.0.0 is older than the running 1.1"),
            "{e}"
        );
        assert_eq!(check_update(&v("1.1"), &m, true), Ok(Direction::Downgrade));
    }

    #[test]
    fn min_version_not_met() {
        let mut m = crate::doc::tests::manifest("1.0.0");
        m.min_version = Some(v("0.5.0"));
        assert_eq!(check_update(&v("0.5.0"), &m, false), Ok(Direction::Upgrade));
        let e = check_update(&v("0.4.9"), &m, false).unwrap_err();
        assert!(matches!(e, PolicyError::MinVersion { .. }), "{e}");
        assert!(e.to_string().contains("updates only from 0.5.0"), "{e}");
    }
}

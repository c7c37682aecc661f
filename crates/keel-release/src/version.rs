//! Release versions: dotted decimal numbers (`1`, `0.2`, `2026.12.1`), compared
//! numerically component by component, a missing component counting as 0
//! (`1.2` == `1.2.0`). No pre-release or build suffixes: an update channel
//! orders its versions, and "1.2.0-rc1 < 1.2.0" is a rule clients would
//! have to agree on for nothing.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Most components a version may have.
pub const MAX_COMPONENTS: usize = 6;

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Empty string.
    #[error("empty version")]
    Empty,
    /// Too many dotted components.
    #[error("version {0:?} has more than {MAX_COMPONENTS} components")]
    TooLong(String),
    /// A component is empty, not decimal, has a leading zero or overflows.
    #[error("version {version:?}: component {index} ({component:?}) is not a decimal number without leading zeros")]
    BadComponent {
        /// The whole string.
        version: String,
        /// Zero-based component index.
        index: usize,
        /// The offending component.
        component: String,
    },
}

/// A release version.
#[derive(Debug, Clone)]
pub struct Version {
    parts: Box<[u64]>,
    text: Box<str>,
}

impl Version {
    /// Parse a dotted decimal version.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        if s.is_empty() {
            return Err(VersionError::Empty);
        }
        let mut parts = Vec::new();
        for (index, c) in s.split('.').enumerate() {
            if index >= MAX_COMPONENTS {
                return Err(VersionError::TooLong(s.to_string()));
            }
            let bad = || VersionError::BadComponent {
                version: s.to_string(),
                index,
                component: c.to_string(),
            };
            if c.is_empty()
                || !c.bytes().all(|b| b.is_ascii_digit())
                || (c.len() > 1 && c.starts_with('0'))
            {
                return Err(bad());
            }
            parts.push(c.parse::<u64>().map_err(|_| bad())?);
        }
        Ok(Version {
            parts: parts.into(),
            text: s.into(),
        })
    }

    /// The numeric components.
    pub fn components(&self) -> &[u64] {
        &self.parts
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn orders_numerically() {
        assert!(v("0.10.0") > v("0.9.9"));
        assert!(v("1") > v("0.99"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert!(v("2026.12.1") < v("2026.12.2"));
        assert_eq!(v("1.2.0").to_string(), "1.2.0");
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1..2",
            "v1.2",
            "1.2.3-rc1",
            "01.2",
            "1.2.3.4.5.6.7",
            "1 .2",
            "18446744073709551616",
            "+1",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = Version::parse("1.x.3").unwrap_err().to_string();
        assert!(e.contains("component 1") && e.contains("\"x\""), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = Version::parse(&s);
        }

        #[test]
        fn roundtrips(parts in proptest::collection::vec(0u64..100000, 1..MAX_COMPONENTS)) {
            let s = parts.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(".");
            let ver = Version::parse(&s).unwrap();
            proptest::prop_assert_eq!(ver.components(), &parts[..]);
            proptest::prop_assert_eq!(ver.to_string(), s);
        }
    }
}

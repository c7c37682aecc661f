//! The two `/usr` slots.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// One of the two `/usr` slots. In JSON (`boot.json`, `keel-bootctl status
/// --json`) a slot is the string `"A"` or `"B"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// USR-A (partition 2 on Keel's disk).
    A,
    /// USR-B (partition 4).
    B,
}

/// A name that is not a slot.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{0:?} is not a slot: use A or B")]
pub struct SlotNameError(pub String);

impl Slot {
    /// Both slots, in partition table order (the tie order of gptprio).
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The USR partition's GPT label.
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "USR-A",
            Slot::B => "USR-B",
        }
    }

    /// The label of the slot's dm-verity hash partition.
    pub fn verity_label(self) -> &'static str {
        match self {
            Slot::A => "USR-A-VERITY",
            Slot::B => "USR-B-VERITY",
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"A"` or `"B"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = SlotNameError;
    /// What a person types: `A`, `a` or `USR-A` (and the same for B).
    fn from_str(s: &str) -> Result<Self, SlotNameError> {
        match s {
            "A" | "a" | "USR-A" => Ok(Slot::A),
            "B" | "b" | "USR-B" => Ok(Slot::B),
            _ => Err(SlotNameError(s.to_string())),
        }
    }
}

impl Serialize for Slot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Slot {
    /// Records are written by programs: exactly `"A"` or `"B"`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "A" => Ok(Slot::A),
            "B" => Ok(Slot::B),
            other => Err(serde::de::Error::custom(format!(
                "slot {other:?} is not A or B"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!("usr-b".parse::<Slot>().ok(), None);
        assert_eq!("USR-B".parse::<Slot>(), Ok(Slot::B));
        assert_eq!("a".parse::<Slot>(), Ok(Slot::A));
        assert_eq!(
            "C".parse::<Slot>().unwrap_err().to_string(),
            r#""C" is not a slot: use A or B"#
        );
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::B.verity_label(), "USR-B-VERITY");
    }

    #[test]
    fn json_is_a_string() {
        assert_eq!(serde_json::to_string(&Slot::B).unwrap(), r#""B""#);
        assert_eq!(serde_json::from_str::<Slot>(r#""A""#).unwrap(), Slot::A);
        let e = serde_json::from_str::<Slot>(r#""a""#).unwrap_err();
        assert!(
            e.to_string().starts_with(r#"slot "a" is not A or B"#),
            "{e}"
        );
    }
}

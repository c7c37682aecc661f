//! keel-init's boot record, `/run/keel/boot.json`, as far as keel-bootctl
//! reads it.
//!
//! Declared here rather than shared with keel-init: keel-init only
//! serialises it and this side only reads it, unknown fields are ignored, so
//! the format is the contract (its `version` field), not a Rust type.

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The record format this reader understands.
pub const VERSION: u32 = 1;

/// Where keel-init writes it.
pub const DEFAULT_PATH: &str = "/run/keel/boot.json";

/// A slot keel-init tried and did not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotFailure {
    /// "A" or "B".
    pub slot: String,
    /// Why it was not used.
    pub reason: String,
}

/// What keel-init did this boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// Format version.
    pub version: u32,
    /// The booted slot ("A" or "B").
    pub slot: String,
    /// The boot disk, e.g. /dev/vda.
    pub disk: String,
    /// Whether this boot used up one of the slot's tries.
    #[serde(default)]
    pub consumed_try: bool,
    /// Slots tried before the booted one.
    #[serde(default)]
    pub failed_slots: Vec<SlotFailure>,
}

/// The record could not be used.
#[derive(Debug, Error)]
pub enum RecordError {
    /// Reading the file failed.
    #[error("{path}: {source} (was the system booted by keel-init?)")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a boot record.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The error (with line and column).
        source: serde_json::Error,
    },
    /// A record format this tool does not know.
    #[error("{path}: version {found}, this keel-bootctl reads version {VERSION}")]
    Version {
        /// The file.
        path: String,
        /// The version found.
        found: u32,
    },
    /// A slot name other than A or B.
    #[error("{path}: field slot: {found:?} is not A or B")]
    Slot {
        /// The file.
        path: String,
        /// The value found.
        found: String,
    },
}

impl BootRecord {
    /// Parse a record's text; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, RecordError> {
        let r: BootRecord = serde_json::from_str(text).map_err(|source| RecordError::Parse {
            path: path.into(),
            source,
        })?;
        if r.version != VERSION {
            return Err(RecordError::Version {
                path: path.into(),
                found: r.version,
            });
        }
        if r.slot != "A" && r.slot != "B" {
            return Err(RecordError::Slot {
                path: path.into(),
                found: r.slot,
            });
        }
        Ok(r)
    }

    /// Read and parse the record at `path`.
    pub fn load(path: &Path) -> Result<Self, RecordError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RecordError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&p, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keel_inits_record_and_ignores_other_fields() {
        let r = BootRecord::parse(
            "boot.json",
            r#"{"version":1,"slot":"B","first_boot":false,"disk":"/dev/vda",
                "usr_device":"/dev/vda5","consumed_try":true,
                "failed_slots":[{"slot":"A","reason":"bad"}],"timings":{"start":0.5}}"#,
        )
        .expect("parses");
        assert_eq!(r.slot, "B");
        assert_eq!(r.disk, "/dev/vda");
        assert!(r.consumed_try);
        assert_eq!(r.failed_slots[0].reason, "bad");
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = BootRecord::parse("x.json", r#"{"version":2,"slot":"A","disk":"d"}"#)
            .expect_err("version");
        assert_eq!(
            e.to_string(),
            "x.json: version 2, this keel-bootctl reads version 1"
        );
        let e = BootRecord::parse("x.json", r#"{"version":1,"slot":"C","disk":"d"}"#)
            .expect_err("slot");
        assert_eq!(e.to_string(), r#"x.json: field slot: "C" is not A or B"#);
        let e = BootRecord::parse("x.json", "{").expect_err("syntax");
        assert!(e.to_string().starts_with("x.json: "), "{e}");
    }
}

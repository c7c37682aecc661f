//! `/run/keel/boot.json`: keel-init's record of what this boot did.
//!
//! keel-init writes it once, just before switch_root; keel-bootctl (status,
//! mark-successful), keel-oem (`first_boot`) and the update agent read it,
//! all through [`BootRecord`].
//!
//! Compatibility rules:
//! - readers ignore fields they do not know, and every field after
//!   `version`, `slot` and `disk` has a default, so an older reader reads a
//!   newer record and a newer reader an older one;
//! - a new field is added here with `#[serde(default)]`, and keel-init
//!   writes every field (no field is skipped when empty), so a record is
//!   complete for whoever reads it;
//! - `version` changes only when a field changes meaning; a reader refuses
//!   a version it does not know ([`RecordError::Version`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Slot;

/// The record format written and read by this crate.
pub const VERSION: u32 = 1;

/// A slot keel-init tried and did not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotFailure {
    /// The slot.
    pub slot: Slot,
    /// Why it was not used (the error chain, one line).
    pub reason: String,
}

/// What ROOT's growth did this boot (`growth`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrowthRecord {
    /// ROOT's filesystem size before, in bytes.
    pub from_bytes: u64,
    /// ROOT's filesystem size after, in bytes.
    pub to_bytes: u64,
    /// ROOT partition size before, in bytes.
    pub partition_from_bytes: u64,
    /// ROOT partition size after, in bytes.
    pub partition_to_bytes: u64,
    /// Wall time of the whole step (table, kernel, filesystem, UUID), ms.
    pub ms: f64,
    /// Reading and writing the GPT, ms.
    pub table_ms: f64,
    /// Telling the kernel, ms.
    pub kernel_ms: f64,
    /// Growing ext4 online, ms.
    pub fs_ms: f64,
    /// How long keel-init waited for the filesystem steps, which run on
    /// their own thread while it opens USR; what growth added to the boot
    /// is `table_ms + kernel_ms + wait_ms`.
    pub wait_ms: f64,
}

/// The identity first boot gave the machine (`identity`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    /// The new disk GUID.
    pub disk_guid: String,
    /// The image's disk GUID it replaced.
    pub old_disk_guid: String,
    /// ROOT's new partition GUID.
    pub root_partuuid: String,
    /// ROOT's new filesystem UUID (null if the filesystem refused).
    pub root_fs_uuid: Option<String>,
}

/// `/run/keel/boot.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The booted USR slot.
    pub slot: Slot,
    /// The slot whose kernel and initramfs run this boot (`keel.usr=` of
    /// the loader entry); null on a direct `-kernel` boot.
    #[serde(default)]
    pub kernel_slot: Option<Slot>,
    /// Whether this boot did first-boot work.
    #[serde(default)]
    pub first_boot: bool,
    /// The boot disk, e.g. `/dev/vda`.
    pub disk: String,
    /// The USR partition used, e.g. `/dev/vda2`.
    #[serde(default)]
    pub usr_device: String,
    /// Its verity hash partition.
    #[serde(default)]
    pub usr_verity_device: String,
    /// The verity root hash it was checked against.
    #[serde(default)]
    pub usr_root_hash: String,
    /// Whether this boot used up one of the slot's tries (an unproven slot
    /// on trial).
    #[serde(default)]
    pub consumed_try: bool,
    /// Slots tried before the booted one, with reasons (a fallback in the
    /// same boot).
    #[serde(default)]
    pub failed_slots: Vec<SlotFailure>,
    /// Seconds since kernel start at the end of each step.
    #[serde(default)]
    pub timings: BTreeMap<String, f64>,
    /// ROOT growth this boot (null when nothing grew).
    #[serde(default)]
    pub growth: Option<GrowthRecord>,
    /// The identity first boot gave the machine (null on later boots).
    #[serde(default)]
    pub identity: Option<Identity>,
}

/// A record that could not be used; each names the file.
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
    /// The file is not a boot record (serde names the field, line and column).
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The error.
        source: serde_json::Error,
    },
    /// A record format this program does not know.
    #[error("{path}: boot record version {found}, this program reads version {VERSION}")]
    Version {
        /// The file.
        path: String,
        /// The version found.
        found: u32,
    },
}

impl BootRecord {
    /// A record of this format for `slot` on `disk`, every other field empty.
    pub fn new(slot: Slot, disk: &str) -> Self {
        BootRecord {
            version: VERSION,
            slot,
            kernel_slot: None,
            first_boot: false,
            disk: disk.to_string(),
            usr_device: String::new(),
            usr_verity_device: String::new(),
            usr_root_hash: String::new(),
            consumed_try: false,
            failed_slots: Vec::new(),
            timings: BTreeMap::new(),
            growth: None,
            identity: None,
        }
    }

    /// Parse a record's text; `path` names it in errors.
    pub fn parse(path: &str, text: &[u8]) -> Result<Self, RecordError> {
        let r: BootRecord = serde_json::from_slice(text).map_err(|source| RecordError::Parse {
            path: path.into(),
            source,
        })?;
        if r.version != VERSION {
            return Err(RecordError::Version {
                path: path.into(),
                found: r.version,
            });
        }
        Ok(r)
    }

    /// Read and parse the record at `path` ([`crate::paths::BOOT_RECORD`]
    /// on a running system).
    pub fn load(path: &Path) -> Result<Self, RecordError> {
        let p = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| RecordError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&p, &text)
    }

    /// The JSON keel-init writes: every field, pretty, with a final newline.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }

    /// Write the record to `path` atomically.
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let json = self.to_json().map_err(std::io::Error::other)?;
        crate::write_atomic(path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> BootRecord {
        let mut r = BootRecord::new(Slot::B, "/dev/vda");
        r.kernel_slot = Some(Slot::B);
        r.first_boot = true;
        r.usr_device = "/dev/vda4".into();
        r.usr_verity_device = "/dev/vda5".into();
        r.usr_root_hash = "ab".repeat(32);
        r.consumed_try = true;
        r.failed_slots.push(SlotFailure {
            slot: Slot::A,
            reason: "mounting /dev/dm-0: EIO".into(),
        });
        r.timings.insert("start".into(), 0.5);
        r.timings.insert("usr".into(), 1.25);
        r.growth = Some(GrowthRecord {
            from_bytes: 1 << 30,
            to_bytes: 1 << 33,
            partition_from_bytes: 1 << 30,
            partition_to_bytes: 1 << 33,
            ms: 12.5,
            table_ms: 1.5,
            kernel_ms: 0.25,
            fs_ms: 10.75,
            wait_ms: 3.0,
        });
        r.identity = Some(Identity {
            disk_guid: "g1".into(),
            old_disk_guid: "g0".into(),
            root_partuuid: "p1".into(),
            root_fs_uuid: None,
        });
        r
    }

    #[test]
    fn round_trip() {
        let r = full();
        let back = BootRecord::parse("boot.json", &r.to_json().unwrap()).unwrap();
        assert_eq!(back, r);
        let r = BootRecord::new(Slot::A, "/dev/sda");
        let back = BootRecord::parse("boot.json", &r.to_json().unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn writers_write_every_field() {
        let v: serde_json::Value =
            serde_json::from_slice(&BootRecord::new(Slot::A, "/dev/vda").to_json().unwrap())
                .unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in [
            "version",
            "slot",
            "disk",
            "first_boot",
            "usr_device",
            "usr_verity_device",
            "usr_root_hash",
            "consumed_try",
            "failed_slots",
            "timings",
            "growth",
            "identity",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    /// A record in the form keel-init wrote before this crate existed (its
    /// field order and pretty printing; a fallback boot after first boot
    /// grew ROOT).
    #[test]
    fn reads_the_records_keel_init_has_written() {
        let text = br#"{
  "version": 1,
  "slot": "A",
  "first_boot": true,
  "disk": "/dev/vda",
  "usr_device": "/dev/vda2",
  "usr_verity_device": "/dev/vda3",
  "usr_root_hash": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
  "consumed_try": false,
  "failed_slots": [
    {
      "slot": "B",
      "reason": "mounting /dev/dm-0 (dm-verity over /dev/vda4) on /sysroot/usr: EIO: I/O error (dm-verity rejected the data: it does not match the root hash)"
    }
  ],
  "timings": {
    "disk": 1.02,
    "start": 0.91
  },
  "growth": {
    "from_bytes": 268435456,
    "to_bytes": 8589934592,
    "partition_from_bytes": 268435456,
    "partition_to_bytes": 8589934592,
    "ms": 40.1,
    "table_ms": 2.2,
    "kernel_ms": 0.3,
    "fs_ms": 37.0,
    "wait_ms": 12.0
  },
  "identity": {
    "disk_guid": "5B3C0D1E-0000-4000-8000-000000000001",
    "old_disk_guid": "5B3C0D1E-0000-4000-8000-000000000000",
    "root_partuuid": "5B3C0D1E-0000-4000-8000-000000000002",
    "root_fs_uuid": null
  }
}"#;
        let r = BootRecord::parse("boot.json", text).unwrap();
        assert_eq!(r.slot, Slot::A);
        assert!(r.first_boot);
        assert_eq!(r.failed_slots[0].slot, Slot::B);
        assert_eq!(r.growth.as_ref().map(|g| g.to_bytes), Some(8589934592));
        assert_eq!(r.identity.and_then(|i| i.root_fs_uuid), None);
    }

    #[test]
    fn tolerant_of_unknown_and_missing_fields() {
        // A newer writer (the update agent's fields) and an older, smaller one.
        let r = BootRecord::parse(
            "boot.json",
            br#"{"version":1,"slot":"B","disk":"/dev/vda","update":{"from":"1.0"},
                "growth":{"ms":1.0,"new_field":2},"consumed_try":true}"#,
        )
        .unwrap();
        assert_eq!(r.slot, Slot::B);
        assert!(r.consumed_try && !r.first_boot);
        assert_eq!(r.growth.map(|g| g.ms), Some(1.0));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = BootRecord::parse("x.json", br#"{"version":2,"slot":"A","disk":"d"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.json: boot record version 2, this program reads version 1"
        );
        let e = BootRecord::parse("x.json", br#"{"version":1,"slot":"C","disk":"d"}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(r#"x.json: slot "C" is not A or B at line 1"#),
            "{e}"
        );
        let e = BootRecord::parse("x.json", br#"{"version":1,"slot":"A"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `disk`"), "{e}");
        let e = BootRecord::load(Path::new("/nonexistent/boot.json")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/boot.json: "), "{e}");
    }

    #[test]
    fn store_and_load() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("keel/boot.json");
        full().store(&p).unwrap();
        assert_eq!(BootRecord::load(&p).unwrap(), full());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = BootRecord::parse("p", s.as_bytes());
        }
    }
}

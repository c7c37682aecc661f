//! The effectful shell: the boot disk, opened and locked, its table read and
//! written back.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use keel_gpt::{Gpt, GptError, ReadReport};
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

/// The disk could not be used.
#[derive(Debug, Error)]
pub enum DiskError {
    /// Opening failed.
    #[error("opening {path}")]
    Open {
        /// The disk.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not allowed to open the disk.
    #[error("opening {path}: permission denied (the partition table is root's: use sudo)")]
    NeedsRoot {
        /// The disk.
        path: PathBuf,
    },
    /// Another process holds the lock.
    #[error("locking {path}")]
    Lock {
        /// The disk.
        path: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// The table is unreadable.
    #[error("the partition table of {path}")]
    Table {
        /// The disk.
        path: PathBuf,
        /// What is wrong, with the header and offset.
        source: GptError,
    },
    /// A header is damaged: no writes.
    #[error("{path}: refusing to write: {detail}; boot the system once more (keel-init reads the good copy) or repair the table first")]
    Damaged {
        /// The disk.
        path: PathBuf,
        /// Which header and why.
        detail: String,
    },
}

/// The boot disk, open and under an exclusive `flock` for as long as this
/// lives (keel-bootctl callers are serialised; keel-init runs before any).
#[derive(Debug)]
pub struct Disk {
    path: PathBuf,
    file: Flock<File>,
    sector_size: u64,
}

/// A table as read, with what was wrong with either header.
#[derive(Debug)]
pub struct Read {
    /// The table.
    pub gpt: Gpt,
    /// Human-readable problems (empty when both headers are good).
    pub warnings: Vec<String>,
}

fn warnings_of(r: &ReadReport) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(e) = &r.primary_error {
        w.push(format!(
            "primary GPT header damaged ({e}); using the backup"
        ));
    }
    if let Some(e) = &r.backup_error {
        w.push(format!("backup GPT header damaged ({e})"));
    }
    if r.backup_misplaced {
        w.push(
            "backup GPT header is not at the end of the disk (the disk grew; first boot moves it)"
                .into(),
        );
    }
    w
}

/// The logical sector size of a block device from sysfs, 512 for files.
fn sector_size(path: &Path, file: &File) -> u64 {
    let is_block = file.metadata().map(|m| m.file_type().is_block_device());
    if !matches!(is_block, Ok(true)) {
        return 512;
    }
    let name = std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    name.and_then(|n| {
        std::fs::read_to_string(format!("/sys/class/block/{n}/queue/logical_block_size")).ok()
    })
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(512)
}

impl Disk {
    /// Open `path` (read-write when `write`) and take the lock.
    pub fn open(path: &Path, write: bool) -> Result<Self, DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::PermissionDenied => DiskError::NeedsRoot { path: path.into() },
                _ => DiskError::Open {
                    path: path.into(),
                    source,
                },
            })?;
        let ss = sector_size(path, &file);
        let arg = if write {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let file = Flock::lock(file, arg).map_err(|(_, source)| DiskError::Lock {
            path: path.into(),
            source,
        })?;
        Ok(Disk {
            path: path.into(),
            file,
            sector_size: ss,
        })
    }

    /// The disk's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_report(&self) -> Result<(Gpt, ReadReport), DiskError> {
        Gpt::read(&*self.file, self.sector_size).map_err(|source| DiskError::Table {
            path: self.path.clone(),
            source,
        })
    }

    /// Read the table.
    pub fn read(&self) -> Result<Read, DiskError> {
        let (gpt, report) = self.read_report()?;
        let damaged = report.primary_error.is_some() || report.backup_error.is_some();
        let mut warnings = warnings_of(&report);
        if damaged {
            warnings.push("keel-bootctl will not write to this table".into());
        }
        Ok(Read { gpt, warnings })
    }

    /// Read the table for changing it: refuses a table with a damaged header.
    pub fn read_for_write(&self) -> Result<Gpt, DiskError> {
        let (gpt, report) = self.read_report()?;
        if let Some(e) = report
            .primary_error
            .as_ref()
            .or(report.backup_error.as_ref())
        {
            return Err(DiskError::Damaged {
                path: self.path.clone(),
                detail: e.to_string(),
            });
        }
        Ok(gpt)
    }

    /// Write both headers and entry arrays back (backup first, then primary,
    /// each synced: a crash leaves one good copy).
    pub fn write(&mut self, gpt: &Gpt) -> Result<(), DiskError> {
        gpt.write(&mut *self.file)
            .map_err(|source| DiskError::Table {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_gpt::{types, Partition, Uuid};

    fn image(dir: &Path) -> PathBuf {
        let path = dir.join("disk.img");
        let mut f = File::create(&path).expect("create");
        f.set_len(16 << 20).expect("size");
        let mut g = Gpt::new(16 << 20, 512).expect("table");
        g.set_partition(Partition {
            number: 1,
            type_guid: types::USR_X86_64,
            unique_guid: Uuid::new_v4(),
            first_lba: 2048,
            last_lba: 4095,
            attributes: 0,
            name: "USR-A".into(),
        })
        .expect("part");
        g.write(&mut f).expect("write");
        path
    }

    #[test]
    fn writes_round_trip_and_a_damaged_header_blocks_writes() {
        let d = tempfile::tempdir().expect("tmp");
        let path = image(d.path());
        {
            let mut disk = Disk::open(&path, true).expect("open");
            let mut g = disk.read_for_write().expect("read");
            crate::slots::mark_successful(&mut g, crate::slots::Slot::A).expect("mark");
            disk.write(&g).expect("write");
        }
        let disk = Disk::open(&path, false).expect("open ro");
        let r = disk.read().expect("read");
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_ne!(r.gpt.by_name("USR-A").expect("a").attributes, 0);
        drop(disk);

        // Break the primary header's CRC field.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[512 + 16] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let disk = Disk::open(&path, true).expect("open");
        let r = disk.read().expect("backup still reads");
        assert!(
            r.warnings[0].starts_with("primary GPT header damaged"),
            "{:?}",
            r.warnings
        );
        let e = disk.read_for_write().expect_err("refused");
        assert!(e.to_string().contains("refusing to write"), "{e}");
        drop(disk);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bytes,
            "nothing written"
        );
    }
}

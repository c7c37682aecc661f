//! The slots on the boot disk as the agent uses them: write and re-read
//! the inactive slot's USR and USR-VERITY partitions, make that slot
//! unbootable while it is being written, and `set-next` it at the end.
//!
//! Partitions are found by GPT label through keel-gpt and written through
//! the whole-disk device at their byte offset, so no partition device node
//! is needed (a loop device without partition scanning works the same).
//! Attribute changes go through keel-bootctl's `slots` and `disk` (its
//! flock, its refusal to write a table with a damaged header) and never
//! touch the running slot's attributes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use keel_bootctl::disk::{Disk, DiskError};
use keel_bootctl::slots::{self, Slot, SlotError};
use keel_gpt::prio::Prio;
use thiserror::Error;

/// Which partition of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The filesystem image.
    Usr,
    /// Its dm-verity hash tree.
    UsrVerity,
}

impl Target {
    /// The partition label for `slot`.
    pub fn label(self, slot: Slot) -> String {
        match self {
            Target::Usr => slot.label().to_string(),
            Target::UsrVerity => format!("{}-VERITY", slot.label()),
        }
    }
}

/// A slot operation failed.
#[derive(Debug, Error)]
pub enum SlotDiskError {
    /// The partition table.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The slot attributes.
    #[error("{disk}: {source}")]
    Slot {
        /// The disk.
        disk: PathBuf,
        /// What is wrong.
        source: SlotError,
    },
    /// A partition the update needs is not in the table.
    #[error("{disk}: no partition labelled {label}")]
    Missing {
        /// The disk.
        disk: PathBuf,
        /// The label.
        label: String,
    },
    /// Reading or writing data.
    #[error("{what} {label} at byte {offset} of {disk}: {source}")]
    Io {
        /// "writing", "reading", "syncing".
        what: &'static str,
        /// The partition.
        label: String,
        /// Offset inside the partition.
        offset: u64,
        /// The disk.
        disk: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A write beyond the partition's end.
    #[error("{label} on {disk} is {size} bytes; the update needs {need}")]
    TooSmall {
        /// The partition.
        label: String,
        /// The disk.
        disk: PathBuf,
        /// Its size.
        size: u64,
        /// What was asked.
        need: u64,
    },
}

/// What the agent does to the slots. The real side is [`GptSlots`]; tests
/// use an in-memory fake.
pub trait SlotDisk {
    /// Size in bytes of `t` of `slot`.
    fn capacity(&mut self, slot: Slot, t: Target) -> Result<u64, SlotDiskError>;
    /// Write `data` at `offset` into `t` of `slot`.
    fn write_at(
        &mut self,
        slot: Slot,
        t: Target,
        offset: u64,
        data: &[u8],
    ) -> Result<(), SlotDiskError>;
    /// Read `buf.len()` bytes at `offset` of `t` of `slot`, from the medium
    /// (not from what the page cache still holds of our own writes).
    fn read_at(
        &mut self,
        slot: Slot,
        t: Target,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), SlotDiskError>;
    /// Make everything written so far durable.
    fn sync(&mut self) -> Result<(), SlotDiskError>;
    /// Make `slot` unbootable (priority 0, no tries, not successful) before
    /// its contents change. Does nothing when it already is.
    fn disable(&mut self, slot: Slot) -> Result<(), SlotDiskError>;
    /// `set-next` `slot` with one try (keel-bootctl's policy).
    fn set_next(&mut self, slot: Slot) -> Result<(), SlotDiskError>;
}

/// The slots of a real disk (or an image file).
#[derive(Debug)]
pub struct GptSlots {
    path: PathBuf,
    data: File,
}

impl GptSlots {
    /// Open `disk` for reading and writing.
    pub fn open(disk: &Path) -> Result<GptSlots, SlotDiskError> {
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .open(disk)
            .map_err(|source| SlotDiskError::Io {
                what: "opening",
                label: "the disk".into(),
                offset: 0,
                disk: disk.into(),
                source,
            })?;
        Ok(GptSlots {
            path: disk.into(),
            data,
        })
    }

    /// `(first byte, size)` of the partition `t` of `slot`, from the table
    /// as it is now (read each time: short, and never stale).
    fn extent(&self, slot: Slot, t: Target) -> Result<(u64, u64), SlotDiskError> {
        let disk = Disk::open(&self.path, false)?;
        let gpt = disk.read()?.gpt;
        let label = t.label(slot);
        let p = gpt.by_name(&label).ok_or_else(|| SlotDiskError::Missing {
            disk: self.path.clone(),
            label: label.clone(),
        })?;
        Ok((p.first_lba * gpt.sector_size, p.sectors() * gpt.sector_size))
    }

    fn bounded(
        &self,
        slot: Slot,
        t: Target,
        offset: u64,
        len: usize,
    ) -> Result<u64, SlotDiskError> {
        let (start, size) = self.extent(slot, t)?;
        let need = offset.saturating_add(len as u64);
        if need > size {
            return Err(SlotDiskError::TooSmall {
                label: t.label(slot),
                disk: self.path.clone(),
                size,
                need,
            });
        }
        Ok(start + offset)
    }

    fn io(
        &self,
        what: &'static str,
        slot: Slot,
        t: Target,
        offset: u64,
    ) -> impl FnOnce(std::io::Error) -> SlotDiskError {
        let (label, disk) = (t.label(slot), self.path.clone());
        move |source| SlotDiskError::Io {
            what,
            label,
            offset,
            disk,
            source,
        }
    }

    fn change(
        &mut self,
        f: impl FnOnce(&mut keel_gpt::Gpt) -> Result<bool, SlotError>,
    ) -> Result<(), SlotDiskError> {
        let mut disk = Disk::open(&self.path, true)?;
        let mut gpt = disk.read_for_write()?;
        let changed = f(&mut gpt).map_err(|source| SlotDiskError::Slot {
            disk: self.path.clone(),
            source,
        })?;
        if changed {
            disk.write(&gpt)?;
        }
        Ok(())
    }
}

/// Make `slot` unbootable in `gpt`; whether anything changed.
pub fn disable_slot(gpt: &mut keel_gpt::Gpt, slot: Slot) -> Result<bool, SlotError> {
    let number = gpt
        .by_name(slot.label())
        .map(|p| p.number)
        .ok_or(SlotError::Missing(slot.label()))?;
    let part = gpt
        .by_number_mut(number)
        .map_err(|_| SlotError::Missing(slot.label()))?;
    let off = Prio {
        priority: 0,
        tries: 0,
        successful: false,
    };
    let attrs = off
        .apply(part.attributes)
        .map_err(|source| SlotError::Attribute {
            label: slot.label(),
            source,
        })?;
    let changed = attrs != part.attributes;
    part.attributes = attrs;
    Ok(changed)
}

impl SlotDisk for GptSlots {
    fn capacity(&mut self, slot: Slot, t: Target) -> Result<u64, SlotDiskError> {
        Ok(self.extent(slot, t)?.1)
    }

    fn write_at(
        &mut self,
        slot: Slot,
        t: Target,
        offset: u64,
        data: &[u8],
    ) -> Result<(), SlotDiskError> {
        let at = self.bounded(slot, t, offset, data.len())?;
        self.data
            .write_all_at(data, at)
            .map_err(self.io("writing", slot, t, offset))
    }

    fn read_at(
        &mut self,
        slot: Slot,
        t: Target,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), SlotDiskError> {
        let at = self.bounded(slot, t, offset, buf.len())?;
        self.data
            .read_exact_at(buf, at)
            .map_err(self.io("reading", slot, t, offset))
    }

    fn sync(&mut self) -> Result<(), SlotDiskError> {
        self.data.sync_data().map_err(|source| SlotDiskError::Io {
            what: "syncing",
            label: "the disk".into(),
            offset: 0,
            disk: self.path.clone(),
            source,
        })?;
        // Written pages are clean now; drop them so the re-read that
        // verifies the slot comes from the medium. Advisory: if the kernel
        // keeps them, the re-read still checks what the kernel will serve.
        let _ = nix::fcntl::posix_fadvise(
            &self.data,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        Ok(())
    }

    fn disable(&mut self, slot: Slot) -> Result<(), SlotDiskError> {
        self.change(|g| disable_slot(g, slot))
    }

    fn set_next(&mut self, slot: Slot) -> Result<(), SlotDiskError> {
        self.change(|g| slots::set_next(g, slot, 1))
    }
}

//! GUID Partition Tables for Keel: read, validate, modify and write them, and
//! interpret the gptprio A/B attributes on the USR partitions.
//!
//! Shared by `keel-image` (writes the table into an image file), `keel-init`
//! (reads it at boot, decrements tries) and `keel-bootctl` (status, set-next,
//! mark-successful). Reads no files by itself: callers hand it something that
//! implements [`BlockDevice`] (a `File` does).
//!
//! Written by hand rather than with the `gpt` crate because Keel needs, on
//! untrusted input: errors that name the byte offset and field that is wrong,
//! no panics, falling back to the backup header when the primary is corrupt,
//! and rewriting attributes while preserving every other byte of both tables.
//!
//! The A/B attribute layout (ChromeOS/CoreOS "gptprio", also used by Flatcar's
//! cgpt and Bottlerocket's signpost): bits 48–51 priority, 52–55 tries left,
//! 56 successful. See [`prio`].
//!
//! First-boot growth of the last partition (ROOT) to the end of a larger
//! disk, refusing damaged or unexpected tables without writing: [`grow`].

pub mod grow;
pub mod prio;
mod table;

pub use table::{
    BlockDevice, Gpt, GptError, Partition, ReadReport, Which, ENTRY_SIZE, NUM_ENTRIES,
};
pub use uuid::Uuid;

/// Partition type GUIDs Keel uses (Discoverable Partitions Specification where
/// one exists).
pub mod types {
    use uuid::{uuid, Uuid};
    /// EFI System Partition.
    pub const ESP: Uuid = uuid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    /// `/usr` for x86-64 (DPS).
    pub const USR_X86_64: Uuid = uuid!("8484680C-9521-48C6-9C11-B0720656F69E");
    /// `/usr` dm-verity hash tree for x86-64 (DPS).
    pub const USR_VERITY_X86_64: Uuid = uuid!("77FF5F63-E7B6-4633-ACF4-1565B864C0E6");
    /// Generic Linux data (used for OEM).
    pub const LINUX_DATA: Uuid = uuid!("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    /// Root for x86-64 (DPS).
    pub const ROOT_X86_64: Uuid = uuid!("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
}

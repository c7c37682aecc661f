//! keel-init: PID 1 of Keel's initramfs.
//!
//! Owns the boot from the kernel to systemd: mounts the API filesystems,
//! loads the modules listed in `/usr/lib/keel/initrd-modules` with their
//! dependencies from `modules.dep`, waits (bounded) for the disk carrying
//! Keel's GPT, mounts ROOT, chooses the USR slot by its gptprio attributes
//! (falling back to the other slot in the same boot), opens it through
//! dm-verity with the root hash from the kernel command line, mounts it
//! read-only at `/sysroot/usr`, OEM read-only at `/sysroot/oem`, assembles
//! `/etc` as an overlay over the factory defaults, writes
//! `/run/keel/boot.json`, and switches root into systemd.
//!
//! Reads: `/proc/cmdline` (`keel.usrhash.a=`, `keel.usrhash.b=`,
//! `keel.first_boot=`, `keel.disk_timeout=`), the boot disk's GPT, the verity
//! superblocks. Writes: the GPT (tries of an unproven slot; on a larger disk
//! the backup's place and ROOT's size; on first boot the disk GUID), ROOT's
//! ext4 (online growth, first-boot UUID), ROOT's `/.keel/` (the /etc upper
//! layer, the first-boot marker), `/run/keel/boot.json`.
//!
//! The kernel command line, `boot.json`, the places and the atomic write
//! are Keel's shared contracts, from `keel_contract`. Pure logic lives in
//! [`modules`], [`verity`], [`slot`] (the A/B decision, behind its `UsrSys`
//! trait), [`growth`] (behind its `GrowthSys` trait) and `keel_gpt`; the
//! effects are in [`boot`]; all unsafe code is in [`dm`] and [`blk`].

pub mod blk;
pub mod boot;
pub mod console;
pub mod dm;
pub mod growth;
pub mod modules;
pub mod slot;
pub mod verity;

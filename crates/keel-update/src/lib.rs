//! keel-update: the update agent of a Keel host. It follows a channel on a
//! static release tree (any web server, or a directory for offline
//! `apply`), downloads the next version's chunks with HTTP `Range`, checks
//! each against the signed manifest before it touches the disk, writes USR
//! and its verity tree into the **inactive** slot, re-reads and compares
//! what it wrote, installs the slot's kernel and initramfs on the ESP, and
//! only then makes the slot the next to boot (`set-next`, one try).
//!
//! Reads: `/usr/lib/keel/update.d/`, `/etc/coreos/update.conf`,
//! `/etc/flatcar/update.conf`, `/etc/keel/update.d/`, `/run/keel/update.d/`
//! ([`config`]); `/run/keel/boot.json` (the booted slot and disk);
//! `/usr/lib/os-release` (the running version); the trusted keys under
//! `/usr/share/keel/update-keys/`.
//! Writes: the inactive USR/USR-VERITY partitions, the ESP, the GPT
//! attributes (through keel-bootctl's `slots`), `/var/lib/keel/update/`
//! (resumable progress, blocked versions), `/run/keel/update.json`,
//! `/run/reboot-required`.
//!
//! Reboots into a staged version follow the configured strategy
//! ([`reboot`]: maintenance windows, the etcd or FleetLock reboot lock
//! through keel-lock, a `wall` warning; `/etc/machine-id` is the lock
//! holder id, `/run/utmp` says who is logged in).
//!
//! The decisions are pure code ([`machine`]: what to do next, when, and why
//! not); everything that touches the network, the disk or the clock sits
//! behind a small trait with a real and a fake side.

pub mod agent;
pub mod bus;
pub mod config;
pub mod disk;
pub mod esp;
pub mod machine;
pub mod reboot;
pub mod runtime;
pub mod source;
pub mod status;
pub mod update;

/// The synthetic release tree the unit and privileged tests share.
#[cfg(test)]
#[path = "../tests/common/tree.rs"]
pub(crate) mod testtree;

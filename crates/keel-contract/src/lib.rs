//! keel-contract: what Keel's binaries must agree on, in one place.
//!
//! - [`cmdline`]: the `keel.*` kernel command line parameters. One parser
//!   ([`Cmdline`]) and typed accessors; keel-init and keel-provision read
//!   the command line only through it, so a parameter means the same thing
//!   to every binary (a bare `keel.first_boot` is true everywhere).
//! - [`boot_record`]: `/run/keel/boot.json`, keel-init's record of the boot
//!   (one serde type, [`BootRecord`]): keel-init writes it, keel-bootctl,
//!   keel-oem and the update agent read it.
//! - [`paths`]: the runtime, state, vendor and admin places (`/run/keel`,
//!   `/var/lib/keel`, `/usr/lib/keel`, `/etc/keel`, …) and the files in
//!   them that more than one program names.
//! - [`atomic`]: replacing a file so that readers and a power cut see the
//!   old contents or the new ones, never a mix ([`write_atomic`]).
//! - [`Slot`]: the two `/usr` slots, A and B, as every binary names them.
//!
//! Binaries keep their own semantics on top (what keel-init does with a
//! root hash, how keel-bootctl explains a fallback); what they exchange is
//! defined here, with round-trip tests and fuzz targets (`fuzz/`).
//!
//! Floor 1 of the workspace: depends only on `serde`, `serde_json` and
//! `thiserror`, because keel-init (≤ 2 MiB) and keel-netd (≤ 3 MiB) link it.

pub mod atomic;
pub mod boot_record;
pub mod cmdline;
pub mod paths;
pub mod root;
mod slot;

pub use atomic::{write_atomic, AtomicWrite};
pub use boot_record::BootRecord;
pub use cmdline::{Cmdline, CmdlineError, KeelParams};
pub use slot::{Slot, SlotNameError};

//! The EFI system partition for UEFI disk boot through systemd-boot. The
//! layout (per-slot kernel, initramfs and loader entry, boot counting,
//! `loader.conf`) is keel-release's [`keel_release::esp`], shared with the
//! update agent so both write the same files; this module only adds where
//! the build host's systemd-boot comes from.

pub use keel_release::esp::*;

/// systemd-boot as shipped by Debian's `systemd-boot-efi` on the build host.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

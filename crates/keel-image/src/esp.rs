//! The EFI system partition's contents for UEFI disk boot through
//! systemd-boot: where each slot's kernel and initramfs live, and the
//! loader entries (Boot Loader Specification type #1) that carry the verity
//! root hash on the kernel command line.
//!
//! Layout (FAT, label EFI-SYSTEM):
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI            systemd-boot (removable-media path: no NVRAM entry needed)
//! EFI/systemd/systemd-bootx64.efi the same, where `bootctl` expects it
//! loader/loader.conf              default entry, no menu
//! loader/entries/keel-usr-a.conf  one entry per populated USR slot
//! keel/a/vmlinuz, keel/a/initramfs.img
//! keel/b/…                        written by an update that fills USR-B
//! ```
//!
//! An entry names its slot (`keel.usr=`) and carries the root hash of every
//! slot whose contents it knows, so keel-init can still fall back to the
//! other slot in the same boot. keel-init chooses the slot by the GPT
//! attributes either way; the entry only decides which kernel runs.

use keel_contract::cmdline::usrhash_arg;
use keel_contract::Slot;

/// systemd-boot as shipped by Debian's `systemd-boot-efi` on the build host.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// Directories created on the ESP, parents first.
pub const DIRS: &[&str] = &[
    "EFI",
    "EFI/BOOT",
    "EFI/systemd",
    "loader",
    "loader/entries",
    "keel",
    "keel/a",
];

/// One loader entry: a slot's kernel, initramfs and command line.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The USR slot this kernel belongs to (`a` or `b`).
    pub slot: char,
    /// Shown in the (normally hidden) menu.
    pub os_name: &'a str,
    /// The OS version of the slot.
    pub version: &'a str,
    /// The image's kernel command line, without root hashes.
    pub cmdline: &'a str,
    /// `(slot, verity root hash)` for every slot the entry may mount.
    pub root_hashes: &'a [(Slot, &'a str)],
}

impl Entry<'_> {
    /// The entry's file name under `loader/entries/`.
    pub fn file_name(&self) -> String {
        format!("keel-usr-{}.conf", self.slot)
    }

    /// Path of the entry file on the ESP.
    pub fn file_path(&self) -> String {
        format!("loader/entries/{}", self.file_name())
    }

    /// Path of the slot's kernel on the ESP.
    pub fn kernel_path(&self) -> String {
        format!("keel/{}/vmlinuz", self.slot)
    }

    /// Path of the slot's initramfs on the ESP.
    pub fn initrd_path(&self) -> String {
        format!("keel/{}/initramfs.img", self.slot)
    }

    /// The kernel command line the entry passes.
    pub fn options(&self) -> String {
        let mut o = self.cmdline.trim().to_string();
        for (slot, hash) in self.root_hashes {
            o.push(' ');
            o.push_str(&usrhash_arg(*slot, hash));
        }
        o
    }

    /// The entry file (Boot Loader Specification, type #1).
    pub fn render(&self) -> String {
        format!(
            "title {os} (USR-{slot_up})\nversion {ver}\nsort-key keel\nlinux /{kernel}\ninitrd /{initrd}\noptions {opts}\n",
            os = self.os_name,
            slot_up = self.slot.to_ascii_uppercase(),
            ver = self.version,
            kernel = self.kernel_path(),
            initrd = self.initrd_path(),
            opts = self.options(),
        )
    }
}

/// `loader/loader.conf`: boot `default` at once, no menu, no editor (the
/// command line carries the root hash; editing it must not be a shortcut
/// around verity on a machine with a console).
pub fn loader_conf(default: &Entry<'_>) -> String {
    format!(
        "default {}\ntimeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n",
        default.file_name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_carries_every_known_root_hash() {
        let e = Entry {
            slot: 'b',
            os_name: "Keel",
            version: "0.2.0",
            cmdline: "console=ttyS0 ",
            root_hashes: &[(Slot::A, "aa11"), (Slot::B, "bb22")],
        };
        assert_eq!(
            e.render(),
            "title Keel (USR-B)\nversion 0.2.0\nsort-key keel\nlinux /keel/b/vmlinuz\n\
             initrd /keel/b/initramfs.img\noptions console=ttyS0 keel.usrhash.a=aa11 keel.usrhash.b=bb22\n"
        );
        assert_eq!(e.file_path(), "loader/entries/keel-usr-b.conf");
        let conf = loader_conf(&e);
        assert!(conf.starts_with("default keel-usr-b.conf\ntimeout 0\neditor no\n"));
    }

    #[test]
    fn parents_come_before_children() {
        for (i, d) in DIRS.iter().enumerate() {
            if let Some((parent, _)) = d.rsplit_once('/') {
                assert!(DIRS[..i].contains(&parent), "{d} before its parent");
            }
        }
    }
}

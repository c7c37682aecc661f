//! The EFI system partition layout for UEFI boots through systemd-boot: one
//! Boot Loader Specification (type #1) entry per USR slot, each with that
//! slot's own kernel and initramfs, so a slot is always kernel, initramfs
//! and `/usr` together. keel-image writes slot A's files at build time; the
//! update agent writes a new slot's files with exactly these functions.
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI, EFI/systemd/systemd-bootx64.efi   systemd-boot
//! loader/loader.conf                      default keel-usr-*, no menu, no editor
//! loader/entries/keel-usr-a.conf          a proven slot (no counter)
//! loader/entries/keel-usr-b+1.conf        a new slot: one try (boot counting)
//! keel/a/vmlinuz, keel/a/initramfs.img    slot A's kernel and initramfs
//! keel/b/vmlinuz, keel/b/initramfs.img    slot B's
//! ```
//!
//! Which entry boots: `loader.conf` says `default keel-usr-*`, and
//! systemd-boot (252, Debian 12) takes the first entry matching it in its
//! sort order: entries with no tries left last, then by `sort-key`, then
//! by `version`, newest first. An entry's `version` is therefore not the
//! OS version alone but `GENERATION-OSVERSION`, where the generation is one
//! more than any Keel entry on the ESP has ([`Entry::generation`],
//! [`entry_generation`]): the slot staged last boots while it has tries,
//! also when it holds an older OS version (an allowed downgrade), which a
//! plain OS version would sort below the running one, booting the running
//! slot's kernel over the staged `/usr`. A new entry that used its try without being blessed
//! (`keel-usr-b+0-1.conf`) sorts last and the firmware path falls back to
//! the other slot's kernel. `systemd-bless-boot` renames a good entry to
//! `keel-usr-b.conf`. To boot the older slot on purpose (rollback), the
//! agent renames the newer entry to its bad name ([`EntryName::bad`]).
//!
//! An entry's command line names its slot (`keel.usr=`) and carries the
//! root hash of every slot it may mount (`keel.usrhash.a=`/`.b=`, so
//! keel-init's same-boot fallback still works when the kernels match).

use keel_contract::cmdline::{usr_slot_arg, usrhash_arg, USRHASH_A, USRHASH_B, USR_SLOT};
use keel_contract::Slot;

/// `loader/loader.conf`.
pub const LOADER_CONF: &str = "loader/loader.conf";
/// Where entries live.
pub const ENTRIES_DIR: &str = "loader/entries";
/// Where the firmware finds systemd-boot without an NVRAM entry, and where
/// `bootctl` expects it.
pub const SYSTEMD_BOOT_PATHS: [&str; 2] =
    ["EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi"];
/// Entry file names start with this, then the slot letter.
pub const ENTRY_PREFIX: &str = "keel-usr-";
/// `sort-key` of every Keel entry.
pub const SORT_KEY: &str = "keel";

/// Directories on the ESP, parents first (both slots' directories exist
/// from the start, so an update only writes files).
pub const DIRS: &[&str] = &[
    "EFI",
    "EFI/BOOT",
    "EFI/systemd",
    "loader",
    "loader/entries",
    "keel",
    "keel/a",
    "keel/b",
];

fn letter(slot: Slot) -> char {
    match slot {
        Slot::A => 'a',
        Slot::B => 'b',
    }
}

/// `keel/a`: the slot's directory.
pub fn slot_dir(slot: Slot) -> String {
    format!("keel/{}", letter(slot))
}

/// `keel/a/vmlinuz`.
pub fn kernel_path(slot: Slot) -> String {
    format!("{}/vmlinuz", slot_dir(slot))
}

/// `keel/a/initramfs.img`.
pub fn initrd_path(slot: Slot) -> String {
    format!("{}/initramfs.img", slot_dir(slot))
}

/// An entry's file name with its boot-counting state
/// (`keel-usr-b+LEFT-DONE.conf`, systemd's automatic boot assessment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    /// The slot.
    pub slot: Slot,
    /// Tries left; `None` = no counting (a proven entry).
    pub tries_left: Option<u32>,
    /// Tries done (only with `tries_left`).
    pub tries_done: Option<u32>,
}

impl EntryName {
    /// A proven entry (`keel-usr-a.conf`).
    pub fn proven(slot: Slot) -> EntryName {
        EntryName {
            slot,
            tries_left: None,
            tries_done: None,
        }
    }

    /// A new entry with `tries` tries (`keel-usr-b+1.conf`).
    pub fn counting(slot: Slot, tries: u32) -> EntryName {
        EntryName {
            slot,
            tries_left: Some(tries),
            tries_done: None,
        }
    }

    /// An entry with no tries left (`keel-usr-b+0.conf`): sorted last,
    /// never the default while another entry exists.
    pub fn bad(slot: Slot) -> EntryName {
        EntryName::counting(slot, 0)
    }

    /// The file name.
    pub fn file_name(&self) -> String {
        let mut s = format!("{ENTRY_PREFIX}{}", letter(self.slot));
        if let Some(l) = self.tries_left {
            s.push_str(&format!("+{l}"));
            if let Some(d) = self.tries_done {
                s.push_str(&format!("-{d}"));
            }
        }
        s.push_str(".conf");
        s
    }

    /// The path on the ESP.
    pub fn path(&self) -> String {
        format!("{ENTRIES_DIR}/{}", self.file_name())
    }

    /// Parse a file name in `loader/entries/`; `None` for anything that is
    /// not a Keel slot entry (so other entries are left alone).
    pub fn parse(name: &str) -> Option<EntryName> {
        let rest = name.strip_prefix(ENTRY_PREFIX)?.strip_suffix(".conf")?;
        let mut chars = rest.chars();
        let slot = match chars.next()? {
            'a' => Slot::A,
            'b' => Slot::B,
            _ => return None,
        };
        let counter = chars.as_str();
        if counter.is_empty() {
            return Some(EntryName::proven(slot));
        }
        let c = counter.strip_prefix('+')?;
        let num = |s: &str| -> Option<u32> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let (left, done) = match c.split_once('-') {
            Some((l, d)) => (num(l)?, Some(num(d)?)),
            None => (num(c)?, None),
        };
        Some(EntryName {
            slot,
            tries_left: Some(left),
            tries_done: done,
        })
    }

    /// Whether systemd-boot considers it bad (no tries left).
    pub fn is_bad(&self) -> bool {
        self.tries_left == Some(0)
    }
}

/// One slot's loader entry.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The slot whose kernel and initramfs it boots.
    pub slot: Slot,
    /// OS name for the title (`Keel`).
    pub os_name: &'a str,
    /// The slot's OS version (the title, and `version` after the
    /// generation).
    pub version: &'a str,
    /// Staging order on this ESP: the entry written last has the highest,
    /// and systemd-boot boots the highest with tries left first.
    pub generation: u64,
    /// The image's base command line, without Keel's slot parameters
    /// (see [`base_cmdline`]).
    pub cmdline: &'a str,
    /// `(slot, root hash)` of every slot the entry may mount; its own slot
    /// must be among them.
    pub root_hashes: &'a [(Slot, &'a str)],
}

impl Entry<'_> {
    /// The kernel command line.
    pub fn options(&self) -> String {
        let mut o = self.cmdline.trim().to_string();
        if !o.is_empty() {
            o.push(' ');
        }
        o.push_str(&usr_slot_arg(self.slot));
        for (slot, hash) in self.root_hashes {
            o.push(' ');
            o.push_str(&usrhash_arg(*slot, hash));
        }
        o
    }

    /// The entry file's text.
    pub fn render(&self) -> String {
        format!(
            "title {os} {ver} (USR-{slot})\nversion {gen}-{ver}\nsort-key {SORT_KEY}\nlinux /{kernel}\ninitrd /{initrd}\noptions {opts}\n",
            os = self.os_name,
            ver = self.version,
            gen = self.generation,
            slot = self.slot.as_str(),
            kernel = kernel_path(self.slot),
            initrd = initrd_path(self.slot),
            opts = self.options(),
        )
    }
}

/// The generation of an entry file's text: the digits before the first
/// `-` of its `version` line; 0 for an entry without one (written before
/// generations, or by hand), which then sorts below every Keel-written one.
pub fn entry_generation(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("version"))
        .and_then(|v| v.trim().split_once('-'))
        .and_then(|(g, _)| g.parse().ok())
        .unwrap_or(0)
}

/// `loader/loader.conf`: boot the first Keel entry in systemd-boot's order
/// at once, no menu, no editor (the command line carries the root hash: an
/// editor would be a way around verity on a machine with a console).
pub fn loader_conf() -> String {
    format!("default {ENTRY_PREFIX}*\ntimeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n")
}

/// A running system's command line without what an entry adds
/// (`keel.usr=`, `keel.usrhash.*=`) and what systemd-boot adds
/// (`initrd=`): the base for a new slot's entry.
pub fn base_cmdline(cmdline: &str) -> String {
    keel_contract::cmdline::words(cmdline)
        .into_iter()
        .filter(|w| {
            let key = w.split_once('=').map_or(w.as_str(), |(k, _)| k);
            ![USR_SLOT, USRHASH_A, USRHASH_B, "initrd"].contains(&key)
        })
        .map(|w| {
            if w.contains(char::is_whitespace) {
                format!("\"{w}\"")
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_renders_slot_and_hashes() {
        let e = Entry {
            slot: Slot::B,
            os_name: "Keel",
            version: "0.2.0",
            generation: 7,
            cmdline: "console=ttyS0 ",
            root_hashes: &[(Slot::A, "aa11"), (Slot::B, "bb22")],
        };
        assert_eq!(entry_generation(&e.render()), 7);
        assert_eq!(entry_generation("title x\nversion 0.2.0\n"), 0);
        assert_eq!(entry_generation("title x\nversion x-0.2.0\n"), 0);
        assert_eq!(entry_generation("title x\n"), 0);
        assert_eq!(
            e.render(),
            "title Keel 0.2.0 (USR-B)\nversion 7-0.2.0\nsort-key keel\nlinux /keel/b/vmlinuz\n\
             initrd /keel/b/initramfs.img\noptions console=ttyS0 keel.usr=b keel.usrhash.a=aa11 keel.usrhash.b=bb22\n"
        );
        assert_eq!(loader_conf().lines().next(), Some("default keel-usr-*"));
    }

    #[test]
    fn entry_names_with_boot_counting() {
        assert_eq!(
            EntryName::proven(Slot::A).path(),
            "loader/entries/keel-usr-a.conf"
        );
        assert_eq!(
            EntryName::counting(Slot::B, 1).file_name(),
            "keel-usr-b+1.conf"
        );
        assert_eq!(EntryName::bad(Slot::B).file_name(), "keel-usr-b+0.conf");
        for n in [
            "keel-usr-a.conf",
            "keel-usr-b+1.conf",
            "keel-usr-b+0-1.conf",
            "keel-usr-a+3-12.conf",
        ] {
            assert_eq!(EntryName::parse(n).unwrap().file_name(), n);
        }
        assert!(EntryName::parse("keel-usr-b+0-1.conf").unwrap().is_bad());
        assert!(!EntryName::parse("keel-usr-b+1.conf").unwrap().is_bad());
        for n in [
            "keel-usr-c.conf",
            "keel-usr-a+.conf",
            "keel-usr-a+1-.conf",
            "keel-usr-a-1.conf",
            "debian.conf",
            "keel-usr-a.conf~",
            "keel-usr-a+x.conf",
        ] {
            assert!(EntryName::parse(n).is_none(), "{n}");
        }
    }

    #[test]
    fn base_cmdline_drops_slot_parameters() {
        let running = "initrd=\\keel\\a\\initramfs.img console=ttyS0,115200 keel.usr=a keel.usrhash.a=aa keel.usrhash.b=bb panic=5 x=\"a b\"";
        assert_eq!(
            base_cmdline(running),
            "console=ttyS0,115200 panic=5 \"x=a b\""
        );
        let e = Entry {
            slot: Slot::A,
            os_name: "Keel",
            version: "1",
            generation: 1,
            cmdline: &base_cmdline(running),
            root_hashes: &[(Slot::A, "aa")],
        };
        assert_eq!(base_cmdline(&e.options()), base_cmdline(running));
    }

    #[test]
    fn parents_come_before_children() {
        for (i, d) in DIRS.iter().enumerate() {
            if let Some((parent, _)) = d.rsplit_once('/') {
                assert!(DIRS[..i].contains(&parent), "{d} before its parent");
            }
        }
        for s in Slot::ALL {
            assert!(DIRS.contains(&slot_dir(s).as_str()));
        }
    }
}

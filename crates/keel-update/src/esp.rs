//! Installing a slot's kernel and initramfs where the firmware path boots
//! them. The ESP layout is keel-image's (`keel/<slot>/vmlinuz`,
//! `keel/<slot>/initramfs.img`, `loader/entries/keel-usr-<slot>.conf`);
//! the agent goes through [`BootInstaller`] so the layout can move into a
//! shared contract (issue 15 §3: boot counting, per-slot entries) without
//! touching the transfer.
//!
//! [`EspDir`] writes into a mounted ESP directory: each file atomically
//! (temporary file, fsync, rename, fsync the directory — FAT has no
//! atomic rename guarantee across a power cut, but the slot these files
//! belong to is unbootable until `set-next`, so a torn file is never run).
//! The loader entry is derived from the running slot's entry: same command
//! line, this slot's root hash and version.

use std::path::{Path, PathBuf};

use keel_bootctl::slots::Slot;
use thiserror::Error;

/// What the installer is given.
#[derive(Debug)]
pub struct SlotBoot<'a> {
    /// The slot being filled.
    pub slot: Slot,
    /// The version it holds.
    pub version: &'a str,
    /// The verity root hash of its USR (lowercase hex).
    pub root_hash: &'a str,
    /// The kernel image.
    pub kernel: &'a [u8],
    /// The initramfs.
    pub initramfs: &'a [u8],
}

/// Installing failed.
#[derive(Debug, Error)]
pub enum EspError {
    /// Writing a file.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Puts a slot's kernel and initramfs where its boot path finds them.
pub trait BootInstaller {
    /// Install `b`; called after USR and USR-VERITY were verified and
    /// before `set-next`.
    fn install(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError>;
}

/// No firmware path (a direct `-kernel` boot): nothing to install.
#[derive(Debug, Default)]
pub struct NoEsp;

impl BootInstaller for NoEsp {
    fn install(&mut self, _b: &SlotBoot<'_>) -> Result<(), EspError> {
        Ok(())
    }
}

/// A mounted ESP.
#[derive(Debug)]
pub struct EspDir {
    /// The mount point.
    pub root: PathBuf,
}

fn slot_dir(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "a",
        Slot::B => "b",
    }
}

/// The entry for `slot` from the running slot's entry text: `linux`,
/// `initrd`, `version`, `title` and this slot's `keel.usrhash.<s>=` are
/// replaced, every other line and option kept.
pub fn derive_entry(template: Option<&str>, b: &SlotBoot<'_>) -> String {
    let s = slot_dir(b.slot);
    let hash_opt = format!("keel.usrhash.{s}=");
    let mut options = String::new();
    let mut others = Vec::new();
    for line in template.unwrap_or("").lines() {
        let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match k {
            "options" => {
                options = v
                    .split_whitespace()
                    .filter(|o| !o.starts_with(&hash_opt) && !o.starts_with("keel.usr="))
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            "title" | "version" | "linux" | "initrd" | "sort-key" | "" => {}
            _ => others.push(line.to_string()),
        }
    }
    let mut o = format!(
        "title Keel (USR-{up})\nversion {v}\nsort-key keel\nlinux /keel/{s}/vmlinuz\ninitrd /keel/{s}/initramfs.img\n",
        up = s.to_ascii_uppercase(),
        v = b.version
    );
    for l in others {
        o.push_str(&l);
        o.push('\n');
    }
    let sep = if options.is_empty() { "" } else { " " };
    o.push_str(&format!(
        "options {options}{sep}{hash_opt}{}\n",
        b.root_hash
    ));
    o
}

impl EspDir {
    fn write(&self, rel: &str, data: &[u8]) -> Result<(), EspError> {
        let path = self.root.join(rel);
        keel_contract::write_atomic(&path, data).map_err(|source| EspError::Write { path, source })
    }

    fn template(&self, slot: Slot) -> Option<String> {
        let p = |s: Slot| {
            self.root
                .join(format!("loader/entries/keel-usr-{}.conf", slot_dir(s)))
        };
        std::fs::read_to_string(p(slot.other()))
            .or_else(|_| std::fs::read_to_string(p(slot)))
            .ok()
    }
}

impl BootInstaller for EspDir {
    fn install(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError> {
        let s = slot_dir(b.slot);
        self.write(&format!("keel/{s}/vmlinuz"), b.kernel)?;
        self.write(&format!("keel/{s}/initramfs.img"), b.initramfs)?;
        let entry = derive_entry(self.template(b.slot).as_deref(), b);
        self.write(
            &format!("loader/entries/keel-usr-{s}.conf"),
            entry.as_bytes(),
        )
    }
}

/// Whether `dir` looks like a mounted ESP with Keel's loader.
pub fn is_esp(dir: &Path) -> bool {
    dir.join("loader/entries").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(slot: Slot) -> SlotBoot<'static> {
        SlotBoot {
            slot,
            version: "0.2.0",
            root_hash: "bb22",
            kernel: b"KERNEL",
            initramfs: b"INITRD",
        }
    }

    #[test]
    fn entry_from_the_running_one() {
        let running = "title Keel (USR-A)\nversion 0.1.0\nsort-key keel\nlinux /keel/a/vmlinuz\n\
                       initrd /keel/a/initramfs.img\noptions console=ttyS0 keel.usrhash.a=aa11 keel.usrhash.b=old\n";
        assert_eq!(
            derive_entry(Some(running), &boot(Slot::B)),
            "title Keel (USR-B)\nversion 0.2.0\nsort-key keel\nlinux /keel/b/vmlinuz\n\
             initrd /keel/b/initramfs.img\noptions console=ttyS0 keel.usrhash.a=aa11 keel.usrhash.b=bb22\n"
        );
        assert!(derive_entry(None, &boot(Slot::A)).ends_with("options keel.usrhash.a=bb22\n"));
    }

    #[test]
    fn installs_files_and_entry() {
        let t = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(t.path().join("loader/entries")).expect("mkdir");
        std::fs::write(
            t.path().join("loader/entries/keel-usr-a.conf"),
            "linux /keel/a/vmlinuz\noptions ro keel.usrhash.a=aa\n",
        )
        .expect("entry");
        assert!(is_esp(t.path()));
        let mut esp = EspDir {
            root: t.path().into(),
        };
        esp.install(&boot(Slot::B)).expect("install");
        assert_eq!(
            std::fs::read(t.path().join("keel/b/vmlinuz")).expect("kernel"),
            b"KERNEL"
        );
        assert_eq!(
            std::fs::read(t.path().join("keel/b/initramfs.img")).expect("initrd"),
            b"INITRD"
        );
        let e = std::fs::read_to_string(t.path().join("loader/entries/keel-usr-b.conf"))
            .expect("entry");
        assert!(
            e.contains("options ro keel.usrhash.a=aa keel.usrhash.b=bb22\n"),
            "{e}"
        );
        // The running slot's files are untouched.
        assert!(!t.path().join("keel/a").exists());
    }
}

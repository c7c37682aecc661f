//! Installing a slot's kernel and initramfs where the firmware path boots
//! them, in the ESP layout keel-release owns ([`keel_release::esp`]:
//! `keel/<slot>/vmlinuz`, `keel/<slot>/initramfs.img`, one loader entry per
//! slot with boot counting in its name, `loader.conf` defaulting to
//! `keel-usr-*`). The agent goes through [`BootInstaller`] so the transfer
//! does not care whether there is an ESP at all (a direct `-kernel` boot).
//!
//! Order, as issue 15 §3 asks (the entry is written last): the kernel and
//! initramfs go in before `set-next` (files of a slot that cannot boot yet,
//! harmless), the entry after it ([`BootInstaller::activate`]). Each file
//! is written atomically (temporary file, fsync, rename, fsync the
//! directory). A rollback renames the slot's entry to its bad name
//! ([`BootInstaller::demote`]) so the firmware boots the other slot's
//! kernel.

use std::path::{Path, PathBuf};

use keel_bootctl::slots::Slot;
use keel_release::esp::{self as layout, Entry, EntryName};
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
    /// The running slot's root hash, if known (so the new entry can still
    /// fall back to it in the same boot).
    pub other_root_hash: Option<&'a str>,
    /// The kernel image.
    pub kernel: &'a [u8],
    /// The initramfs.
    pub initramfs: &'a [u8],
}

/// Installing failed.
#[derive(Debug, Error)]
pub enum EspError {
    /// Writing, renaming or removing a file.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Finding or mounting the boot disk's ESP.
    #[error(transparent)]
    Open(#[from] keel_bootctl::esp::EspError),
}

/// Puts a slot's kernel and initramfs where its boot path finds them.
pub trait BootInstaller {
    /// Write the slot's kernel and initramfs (before `set-next`).
    fn install(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError>;
    /// Write the slot's loader entry (after `set-next`: the last step).
    fn activate(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError>;
    /// Give the slot's entry no tries left, so the firmware boots the
    /// other slot (a rollback).
    fn demote(&mut self, slot: Slot) -> Result<(), EspError>;
}

/// No firmware path (a direct `-kernel` boot): nothing to install.
#[derive(Debug, Default)]
pub struct NoEsp;

impl BootInstaller for NoEsp {
    fn install(&mut self, _b: &SlotBoot<'_>) -> Result<(), EspError> {
        Ok(())
    }
    fn activate(&mut self, _b: &SlotBoot<'_>) -> Result<(), EspError> {
        Ok(())
    }
    fn demote(&mut self, _slot: Slot) -> Result<(), EspError> {
        Ok(())
    }
}

/// A mounted ESP.
#[derive(Debug)]
pub struct EspDir {
    /// The mount point.
    pub root: PathBuf,
    /// The running kernel's command line (`/proc/cmdline`): the base of a
    /// new entry's options.
    pub cmdline: String,
}

/// Tries a new entry gets (keel-bootctl's `set-next` gives one too).
pub const NEW_ENTRY_TRIES: u32 = 1;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EspError {
    let path = path.to_path_buf();
    move |source| EspError::Io { what, path, source }
}

impl EspDir {
    fn write(&self, rel: &str, data: &[u8]) -> Result<(), EspError> {
        let path = self.root.join(rel);
        keel_contract::write_atomic(&path, data).map_err(io("writing", &path))
    }

    /// The slot's entries present now, by file name.
    fn entries_of(&self, slot: Slot) -> Result<Vec<(String, EntryName)>, EspError> {
        let dir = self.root.join(layout::ENTRIES_DIR);
        let rd = std::fs::read_dir(&dir).map_err(io("reading", &dir))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io("reading", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = EntryName::parse(&name) {
                if n.slot == slot {
                    out.push((name, n));
                }
            }
        }
        Ok(out)
    }

    fn sync_dir(&self, rel: &str) -> Result<(), EspError> {
        let d = self.root.join(rel);
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing", &d))
    }
}

/// The entry text for `b` over the running command line `cmdline`.
pub fn entry_text(cmdline: &str, b: &SlotBoot<'_>) -> String {
    let base = layout::base_cmdline(cmdline);
    let mut hashes: Vec<(Slot, &str)> = Vec::new();
    if let Some(h) = b.other_root_hash.filter(|h| !h.is_empty()) {
        hashes.push((b.slot.other(), h));
    }
    hashes.push((b.slot, b.root_hash));
    hashes.sort_by_key(|(s, _)| *s);
    Entry {
        slot: b.slot,
        os_name: "Keel",
        version: b.version,
        cmdline: &base,
        root_hashes: &hashes,
    }
    .render()
}

impl BootInstaller for EspDir {
    fn install(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError> {
        self.write(&layout::kernel_path(b.slot), b.kernel)?;
        self.write(&layout::initrd_path(b.slot), b.initramfs)
    }

    fn activate(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError> {
        let name = EntryName::counting(b.slot, NEW_ENTRY_TRIES);
        self.write(&name.path(), entry_text(&self.cmdline, b).as_bytes())?;
        // Older entries of this slot (its previous contents) go.
        for (file, n) in self.entries_of(b.slot)? {
            if n != name {
                let p = self.root.join(layout::ENTRIES_DIR).join(&file);
                std::fs::remove_file(&p).map_err(io("removing", &p))?;
            }
        }
        self.sync_dir(layout::ENTRIES_DIR)?;
        // An ESP made before per-slot entries names a fixed default.
        let conf = layout::loader_conf();
        let cur = std::fs::read_to_string(self.root.join(layout::LOADER_CONF)).unwrap_or_default();
        if cur != conf {
            self.write(layout::LOADER_CONF, conf.as_bytes())?;
        }
        Ok(())
    }

    fn demote(&mut self, slot: Slot) -> Result<(), EspError> {
        let bad = EntryName::bad(slot);
        for (file, n) in self.entries_of(slot)? {
            if n.is_bad() {
                continue;
            }
            let dir = self.root.join(layout::ENTRIES_DIR);
            let from = dir.join(&file);
            let to = dir.join(bad.file_name());
            std::fs::rename(&from, &to).map_err(io("renaming", &from))?;
        }
        self.sync_dir(layout::ENTRIES_DIR)
    }
}

/// The boot disk's ESP, opened (found, mounted on `/run/keel/esp` unless
/// an administrator mounted it) on first use and unmounted when dropped,
/// so a check that finds nothing to install never mounts it. A disk
/// without an ESP partition (a direct-kernel machine) installs nothing.
#[derive(Debug)]
pub struct BootDiskEsp {
    /// The boot disk.
    pub disk: PathBuf,
    /// `--esp DIR`: a mounted ESP to use instead.
    pub explicit: Option<PathBuf>,
    /// The running kernel's command line.
    pub cmdline: String,
    opened: Option<(keel_bootctl::esp::Esp, EspDir)>,
    absent: bool,
}

impl BootDiskEsp {
    /// Nothing opened yet.
    pub fn new(disk: PathBuf, explicit: Option<PathBuf>, cmdline: String) -> Self {
        BootDiskEsp {
            disk,
            explicit,
            cmdline,
            opened: None,
            absent: false,
        }
    }

    fn get(&mut self) -> Result<Option<&mut EspDir>, EspError> {
        if self.absent {
            return Ok(None);
        }
        if self.opened.is_none() {
            let esp = match &self.explicit {
                Some(d) => keel_bootctl::esp::Esp::at(d),
                None => match keel_bootctl::esp::Esp::open(&self.disk) {
                    Ok(e) => e,
                    Err(keel_bootctl::esp::EspError::NoEsp { disk }) => {
                        tracing::warn!("{}: no EFI System Partition: the new slot's kernel is not installed (a direct-kernel boot does not need it)", disk.display());
                        self.absent = true;
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            let dir = EspDir {
                root: esp.root().to_path_buf(),
                cmdline: self.cmdline.clone(),
            };
            self.opened = Some((esp, dir));
        }
        Ok(self.opened.as_mut().map(|(_, d)| d))
    }
}

impl BootInstaller for BootDiskEsp {
    fn install(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError> {
        match self.get()? {
            Some(d) => d.install(b),
            None => Ok(()),
        }
    }
    fn activate(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError> {
        match self.get()? {
            Some(d) => d.activate(b),
            None => Ok(()),
        }
    }
    fn demote(&mut self, slot: Slot) -> Result<(), EspError> {
        match self.get()? {
            Some(d) => d.demote(slot),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(slot: Slot) -> SlotBoot<'static> {
        SlotBoot {
            slot,
            version: "0.2.0",
            root_hash: "bb22",
            other_root_hash: Some("aa11"),
            kernel: b"KERNEL",
            initramfs: b"INITRD",
        }
    }

    #[test]
    fn entry_from_the_running_command_line() {
        let e = entry_text(
            "initrd=\\keel\\a\\initramfs.img console=ttyS0 keel.usr=a keel.usrhash.a=aa11 keel.usrhash.b=old",
            &boot(Slot::B),
        );
        assert!(
            e.ends_with(
                "options console=ttyS0 keel.usr=b keel.usrhash.a=aa11 keel.usrhash.b=bb22\n"
            ),
            "{e}"
        );
        assert!(e.contains("linux /keel/b/vmlinuz\n"), "{e}");
        assert!(e.contains("version 0.2.0\n"), "{e}");
    }

    #[test]
    fn installs_files_then_entry_then_demotes() {
        let t = tempfile::tempdir().expect("tmp");
        let entries = t.path().join("loader/entries");
        std::fs::create_dir_all(&entries).expect("mkdir");
        std::fs::write(entries.join("keel-usr-a.conf"), "linux /keel/a/vmlinuz\n").expect("a");
        std::fs::write(entries.join("keel-usr-b.conf"), "old b\n").expect("old b");
        std::fs::write(entries.join("other.conf"), "someone else's\n").expect("other");
        std::fs::write(
            t.path().join("loader/loader.conf"),
            "default keel-usr-a.conf\n",
        )
        .expect("conf");
        assert!(keel_bootctl::esp::is_keel_esp(t.path()));
        let mut esp = EspDir {
            root: t.path().into(),
            cmdline: "console=ttyS0 keel.usr=a keel.usrhash.a=aa11".into(),
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
        // Files only: the old entry still stands until activate.
        assert!(entries.join("keel-usr-b.conf").exists());
        esp.activate(&boot(Slot::B)).expect("activate");
        assert!(!entries.join("keel-usr-b.conf").exists());
        let e = std::fs::read_to_string(entries.join("keel-usr-b+1.conf")).expect("entry");
        assert!(
            e.contains("keel.usr=b keel.usrhash.a=aa11 keel.usrhash.b=bb22"),
            "{e}"
        );
        assert!(entries.join("keel-usr-a.conf").exists());
        assert!(entries.join("other.conf").exists());
        assert_eq!(
            std::fs::read_to_string(t.path().join("loader/loader.conf")).expect("conf"),
            layout::loader_conf()
        );
        // Rollback: B's entry gets no tries left.
        esp.demote(Slot::B).expect("demote");
        assert!(!entries.join("keel-usr-b+1.conf").exists());
        assert!(entries.join("keel-usr-b+0.conf").exists());
        // The running slot's files are untouched.
        assert!(!t.path().join("keel/a").exists());
    }
}

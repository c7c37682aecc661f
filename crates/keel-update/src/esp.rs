//! Installing a slot's kernel and initramfs where the firmware path boots
//! them, in the ESP layout keel-release owns ([`keel_release::esp`]:
//! `keel/<slot>/vmlinuz`, `keel/<slot>/initramfs.img`, one loader entry per
//! slot with boot counting in its name, `loader.conf` defaulting to
//! `keel-usr-*`). The agent goes through [`BootInstaller`] so the transfer
//! does not care whether there is an ESP at all (a direct `-kernel` boot).
//!
//! Order, as issue 15 §3 asks (the entry is written last): the kernel and
//! initramfs are streamed, chunk by verified chunk, into temporary files
//! beside their places (`keel/<slot>/.vmlinuz.part`, [`BootInstaller::begin`],
//! [`BootInstaller::append`], fsynced by [`BootInstaller::finish`] once the
//! whole file's hash matched), so the agent never holds a whole kernel in
//! memory; they are renamed into place before `set-next`
//! ([`BootInstaller::install`]: files of a slot that cannot boot yet,
//! harmless; the directory fsynced), and the entry is written after it
//! ([`BootInstaller::activate`], atomically). A refused download removes
//! its temporary files ([`BootInstaller::discard`]); a leftover of a cut is
//! truncated by the next `begin`. A rollback renames the slot's entry to
//! its bad name ([`BootInstaller::demote`]) so the firmware boots the other
//! slot's kernel.

use std::fs::File;
use std::io::Write;
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
}

/// One of a slot's boot files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFile {
    /// `keel/<slot>/vmlinuz`.
    Kernel,
    /// `keel/<slot>/initramfs.img`.
    Initramfs,
}

impl BootFile {
    /// Both, in the order they are fetched.
    pub const ALL: [BootFile; 2] = [BootFile::Kernel, BootFile::Initramfs];

    /// Its place on the ESP, relative to the root.
    pub fn path(self, slot: Slot) -> String {
        match self {
            BootFile::Kernel => layout::kernel_path(slot),
            BootFile::Initramfs => layout::initrd_path(slot),
        }
    }

    /// The temporary file it is streamed into: a fixed name beside its
    /// place, so a leftover of a cut is reused, not accumulated.
    pub fn part_path(self, slot: Slot) -> String {
        let p = self.path(slot);
        match p.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.{name}.part"),
            None => format!(".{p}.part"),
        }
    }
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
    /// A call out of order (a bug of the caller).
    #[error("{0}")]
    Order(String),
}

/// Puts a slot's kernel and initramfs where its boot path finds them.
pub trait BootInstaller {
    /// Start streaming `file` of `slot` into its temporary file (emptied).
    fn begin(&mut self, slot: Slot, file: BootFile) -> Result<(), EspError>;
    /// Append verified bytes to the file begun.
    fn append(&mut self, data: &[u8]) -> Result<(), EspError>;
    /// The file begun is complete and its hash matched: make it durable
    /// (still under its temporary name).
    fn finish(&mut self) -> Result<(), EspError>;
    /// Remove the slot's temporary files (a refused or failed download).
    fn discard(&mut self, slot: Slot) -> Result<(), EspError>;
    /// Rename the slot's finished kernel and initramfs into place (before
    /// `set-next`).
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
    fn begin(&mut self, _slot: Slot, _file: BootFile) -> Result<(), EspError> {
        Ok(())
    }
    fn append(&mut self, _data: &[u8]) -> Result<(), EspError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), EspError> {
        Ok(())
    }
    fn discard(&mut self, _slot: Slot) -> Result<(), EspError> {
        Ok(())
    }
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
    /// The temporary file being streamed.
    open: Option<(PathBuf, File)>,
}

/// Tries a new entry gets (keel-bootctl's `set-next` gives one too).
pub const NEW_ENTRY_TRIES: u32 = 1;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EspError {
    let path = path.to_path_buf();
    move |source| EspError::Io { what, path, source }
}

impl EspDir {
    /// The ESP mounted at `root`.
    pub fn new(root: PathBuf, cmdline: String) -> EspDir {
        EspDir {
            root,
            cmdline,
            open: None,
        }
    }

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

    /// One more than the highest generation of any Keel entry on the ESP
    /// (both slots, bad ones too), so the entry written now sorts first.
    fn next_generation(&self) -> Result<u64, EspError> {
        let dir = self.root.join(layout::ENTRIES_DIR);
        let rd = std::fs::read_dir(&dir).map_err(io("reading", &dir))?;
        let mut max = 0;
        for e in rd {
            let e = e.map_err(io("reading", &dir))?;
            if EntryName::parse(&e.file_name().to_string_lossy()).is_some() {
                let text = std::fs::read_to_string(e.path()).map_err(io("reading", &e.path()))?;
                max = max.max(layout::entry_generation(&text));
            }
        }
        Ok(max + 1)
    }

    fn sync_dir(&self, rel: &str) -> Result<(), EspError> {
        let d = self.root.join(rel);
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing", &d))
    }
}

/// The entry text for `b` over the running command line `cmdline`, with
/// `generation` (one more than any entry on the ESP has).
pub fn entry_text(cmdline: &str, b: &SlotBoot<'_>, generation: u64) -> String {
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
        generation,
        cmdline: &base,
        root_hashes: &hashes,
    }
    .render()
}

impl BootInstaller for EspDir {
    fn begin(&mut self, slot: Slot, file: BootFile) -> Result<(), EspError> {
        let path = self.root.join(file.part_path(slot));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        // A leftover of a cut (or a symlink someone put there) goes first:
        // create_new never follows a link.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing", &path)(e))
            }
            _ => {}
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("creating", &path))?;
        self.open = Some((path, f));
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> Result<(), EspError> {
        let Some((path, f)) = &mut self.open else {
            return Err(EspError::Order("append without begin".into()));
        };
        f.write_all(data).map_err(io("writing", path))
    }

    fn finish(&mut self) -> Result<(), EspError> {
        let Some((path, f)) = self.open.take() else {
            return Err(EspError::Order("finish without begin".into()));
        };
        f.sync_all().map_err(io("syncing", &path))
    }

    fn discard(&mut self, slot: Slot) -> Result<(), EspError> {
        self.open = None;
        for f in BootFile::ALL {
            let p = self.root.join(f.part_path(slot));
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("removing", &p)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn install(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError> {
        if self.open.is_some() {
            return Err(EspError::Order(
                "install before the last file finished".into(),
            ));
        }
        for f in BootFile::ALL {
            let from = self.root.join(f.part_path(b.slot));
            let to = self.root.join(f.path(b.slot));
            std::fs::rename(&from, &to).map_err(io("renaming", &from))?;
        }
        // Both renames survive a power cut before `set-next` follows.
        self.sync_dir(&layout::slot_dir(b.slot))
    }

    fn activate(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError> {
        let name = EntryName::counting(b.slot, NEW_ENTRY_TRIES);
        let generation = self.next_generation()?;
        self.write(
            &name.path(),
            entry_text(&self.cmdline, b, generation).as_bytes(),
        )?;
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
            let dir = EspDir::new(esp.root().to_path_buf(), self.cmdline.clone());
            self.opened = Some((esp, dir));
        }
        Ok(self.opened.as_mut().map(|(_, d)| d))
    }
}

impl BootInstaller for BootDiskEsp {
    fn begin(&mut self, slot: Slot, file: BootFile) -> Result<(), EspError> {
        match self.get()? {
            Some(d) => d.begin(slot, file),
            None => Ok(()),
        }
    }
    fn append(&mut self, data: &[u8]) -> Result<(), EspError> {
        match self.get()? {
            Some(d) => d.append(data),
            None => Ok(()),
        }
    }
    fn finish(&mut self) -> Result<(), EspError> {
        match self.get()? {
            Some(d) => d.finish(),
            None => Ok(()),
        }
    }
    fn discard(&mut self, slot: Slot) -> Result<(), EspError> {
        match self.get()? {
            Some(d) => d.discard(slot),
            None => Ok(()),
        }
    }
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
        }
    }

    /// The file names in `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Stream `data` as `file` of `slot` in two appends.
    fn stream(esp: &mut EspDir, slot: Slot, file: BootFile, data: &[u8]) {
        esp.begin(slot, file).expect("begin");
        let (a, b) = data.split_at(data.len() / 2);
        esp.append(a).expect("append");
        esp.append(b).expect("append");
        esp.finish().expect("finish");
    }

    #[test]
    fn entry_from_the_running_command_line() {
        let e = entry_text(
            "initrd=\\keel\\a\\initramfs.img console=ttyS0 keel.usr=a keel.usrhash.a=aa11 keel.usrhash.b=old",
            &boot(Slot::B),
            4,
        );
        assert!(
            e.ends_with(
                "options console=ttyS0 keel.usr=b keel.usrhash.a=aa11 keel.usrhash.b=bb22\n"
            ),
            "{e}"
        );
        assert!(e.contains("linux /keel/b/vmlinuz\n"), "{e}");
        assert!(e.contains("version 4-0.2.0\n"), "{e}");
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
        let mut esp = EspDir::new(
            t.path().into(),
            "console=ttyS0 keel.usr=a keel.usrhash.a=aa11".into(),
        );
        std::fs::create_dir_all(t.path().join("keel/b")).expect("mkdir");
        std::fs::write(t.path().join("keel/b/vmlinuz"), "old kernel").expect("old");
        // A leftover of a cut is replaced, not appended to.
        std::fs::write(t.path().join("keel/b/.vmlinuz.part"), "cut short").expect("cut");
        stream(&mut esp, Slot::B, BootFile::Kernel, b"KERNEL");
        stream(&mut esp, Slot::B, BootFile::Initramfs, b"INITRD");
        // Streamed under temporary names: the old kernel stands until install.
        assert_eq!(
            std::fs::read(t.path().join("keel/b/vmlinuz")).expect("kernel"),
            b"old kernel"
        );
        assert!(!t.path().join("keel/b/initramfs.img").exists());
        esp.install(&boot(Slot::B)).expect("install");
        assert_eq!(
            names_in(&t.path().join("keel/b")),
            ["initramfs.img", "vmlinuz"]
        );
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

    /// systemd-boot boots the entry with tries left whose `version` is
    /// newest: the slot staged last, also when it holds an older OS version
    /// (an allowed downgrade), never the running slot's kernel over it.
    #[test]
    fn the_entry_staged_last_sorts_first_also_for_a_downgrade() {
        let t = tempfile::tempdir().expect("tmp");
        let entries = t.path().join("loader/entries");
        std::fs::create_dir_all(&entries).expect("mkdir");
        std::fs::write(
            entries.join("keel-usr-a.conf"),
            "title Keel 0.1.0 (USR-A)\nversion 1-0.1.0\n",
        )
        .expect("a");
        std::fs::write(
            entries.join("keel-usr-b.conf"),
            "title Keel 0.3.0 (USR-B)\nversion 2-0.3.0\n",
        )
        .expect("b");
        let mut esp = EspDir::new(t.path().into(), "keel.usr=b".into());
        let older = SlotBoot {
            slot: Slot::A,
            version: "0.2.0",
            root_hash: "aa22",
            other_root_hash: Some("bb33"),
        };
        esp.activate(&older).expect("activate");
        let e = std::fs::read_to_string(entries.join("keel-usr-a+1.conf")).expect("entry");
        assert!(e.contains("\nversion 3-0.2.0\n"), "{e}");
        assert!(e.starts_with("title Keel 0.2.0 (USR-A)\n"), "{e}");
        // Without generations, 0.2.0 < 0.3.0 would boot B's kernel first.
        let b = std::fs::read_to_string(entries.join("keel-usr-b.conf")).expect("b");
        assert!(layout::entry_generation(&e) > layout::entry_generation(&b));
    }

    #[test]
    fn a_discarded_download_leaves_the_installed_files_alone() {
        let t = tempfile::tempdir().expect("tmp");
        let mut esp = EspDir::new(t.path().into(), String::new());
        stream(&mut esp, Slot::B, BootFile::Kernel, b"KERNEL");
        stream(&mut esp, Slot::B, BootFile::Initramfs, b"INITRD");
        esp.install(&boot(Slot::B)).expect("install");
        stream(&mut esp, Slot::B, BootFile::Kernel, b"NEWER KERNEL");
        esp.begin(Slot::B, BootFile::Initramfs).expect("begin");
        esp.append(b"half of it").expect("append");
        esp.discard(Slot::B).expect("discard");
        assert_eq!(
            names_in(&t.path().join("keel/b")),
            ["initramfs.img", "vmlinuz"]
        );
        assert_eq!(
            std::fs::read(t.path().join("keel/b/vmlinuz")).expect("kernel"),
            b"KERNEL"
        );
        // Nothing finished to install: refused, nothing renamed.
        assert!(esp.install(&boot(Slot::B)).is_err());
        assert_eq!(
            std::fs::read(t.path().join("keel/b/initramfs.img")).expect("initrd"),
            b"INITRD"
        );
    }
}

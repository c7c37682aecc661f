//! The boot disk's EFI System Partition, for the tools that write it (the
//! update agent installing a slot's kernel and entry, `mark-successful`
//! blessing the booted entry).
//!
//! Keel does not keep the ESP mounted: nothing on a running host needs it
//! between updates, and an unmounted vfat cannot be left half-written by a
//! power cut. [`Esp::open`] uses an ESP an administrator mounted on
//! `/boot`, `/efi` or `/boot/efi` (one with `loader/entries`); otherwise it
//! finds the ESP of the boot disk by its type GUID in the GPT, mounts it
//! on `/run/keel/esp` (nosuid, nodev, noexec, umask 0077) and unmounts it
//! when dropped. Finding the partition's device node goes through sysfs
//! (`/sys/class/block/<disk>/<part>/partition`), so `vda1`, `nvme0n1p1`
//! and `loop0p1` are all found the same way.
//!
//! [`bless`] is the pure-ish core of the boot-counting side: it renames the
//! booted slot's counted entry (`keel-usr-b+0-1.conf`) to its proven name
//! (`keel-usr-b.conf`), what `systemd-bless-boot` does, which the image
//! does not ship (it is in Debian's `systemd-boot` package).

use std::path::{Path, PathBuf};

use keel_contract::{paths, Slot};
use keel_release::esp::{EntryName, ENTRIES_DIR};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use thiserror::Error;
use tracing::{info, warn};

use crate::disk::{Disk, DiskError};

/// The ESP could not be found, mounted or written.
#[derive(Debug, Error)]
pub enum EspError {
    /// Reading the boot disk's table.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// No partition of the ESP type.
    #[error("{disk}: no EFI System Partition in the partition table")]
    NoEsp {
        /// The disk.
        disk: PathBuf,
    },
    /// sysfs has no node for the partition.
    #[error("{disk}: partition {number} has no device node in {sys} (is the partition table known to the kernel?)")]
    NoNode {
        /// The disk.
        disk: PathBuf,
        /// The partition number.
        number: u32,
        /// The sysfs directory searched.
        sys: PathBuf,
    },
    /// mount(2) failed.
    #[error("mounting {device} (vfat) on {target}: {source}")]
    Mount {
        /// The partition.
        device: PathBuf,
        /// The mount point.
        target: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// The mounted partition is not Keel's ESP.
    #[error("{device}: no {ENTRIES_DIR} on it: not an ESP with Keel's loader")]
    NotKeel {
        /// The partition.
        device: PathBuf,
    },
    /// A file operation.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EspError {
    let path = path.to_path_buf();
    move |source| EspError::Io { what, path, source }
}

/// An ESP ready to be written; unmounted on drop if this opened it.
#[derive(Debug)]
pub struct Esp {
    root: PathBuf,
    mounted_here: bool,
}

/// Whether `dir` is a mounted ESP with Keel's loader.
pub fn is_keel_esp(dir: &Path) -> bool {
    dir.join(ENTRIES_DIR).is_dir()
}

impl Esp {
    /// An ESP mounted elsewhere (`--esp DIR`, tests); never unmounted.
    pub fn at(root: &Path) -> Esp {
        Esp {
            root: root.to_path_buf(),
            mounted_here: false,
        }
    }

    /// The ESP of `disk`: an administrator's mount if there is one, else
    /// mounted on [`paths::ESP_MOUNT`] until dropped.
    pub fn open(disk: &Path) -> Result<Esp, EspError> {
        if let Some(d) = paths::ESP_DIRS
            .iter()
            .map(Path::new)
            .find(|d| is_keel_esp(d))
        {
            return Ok(Esp::at(d));
        }
        let number = esp_number(disk)?;
        let device = partition_node(Path::new("/sys/class/block"), disk, number)?;
        let target = PathBuf::from(paths::ESP_MOUNT);
        std::fs::create_dir_all(&target).map_err(io("creating", &target))?;
        mount(
            Some(&device),
            &target,
            Some("vfat"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("umask=0077"),
        )
        .map_err(|source| EspError::Mount {
            device: device.clone(),
            target: target.clone(),
            source,
        })?;
        let esp = Esp {
            root: target,
            mounted_here: true,
        };
        if !is_keel_esp(&esp.root) {
            return Err(EspError::NotKeel { device });
        }
        info!(
            "mounted the ESP {} on {}",
            device.display(),
            paths::ESP_MOUNT
        );
        Ok(esp)
    }

    /// Its mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Esp {
    fn drop(&mut self) {
        if !self.mounted_here {
            return;
        }
        // umount writes back vfat's dirty data; a busy mount (a shell
        // someone opened in it) is detached instead of staying around.
        if let Err(e) = umount2(&self.root, MntFlags::empty()) {
            warn!("unmounting {}: {e}; detaching it", self.root.display());
            let _ = umount2(&self.root, MntFlags::MNT_DETACH);
        }
    }
}

/// The ESP's partition number on `disk`.
pub fn esp_number(disk: &Path) -> Result<u32, EspError> {
    let gpt = Disk::open(disk, false)?.read()?.gpt;
    gpt.partitions
        .iter()
        .find(|p| p.type_guid == keel_gpt::types::ESP)
        .map(|p| p.number)
        .ok_or_else(|| EspError::NoEsp {
            disk: disk.to_path_buf(),
        })
}

/// `/dev/<name>` of partition `number` of `disk`, from `sys_block`
/// (`/sys/class/block`): the child directory of the disk whose
/// `partition` file says `number`.
pub fn partition_node(sys_block: &Path, disk: &Path, number: u32) -> Result<PathBuf, EspError> {
    let real = std::fs::canonicalize(disk).unwrap_or_else(|_| disk.to_path_buf());
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = sys_block.join(&name);
    let not_found = || EspError::NoNode {
        disk: disk.to_path_buf(),
        number,
        sys: dir.clone(),
    };
    let entries = std::fs::read_dir(&dir).map_err(|_| not_found())?;
    for e in entries.flatten() {
        let n = std::fs::read_to_string(e.path().join("partition")).unwrap_or_default();
        if n.trim().parse::<u32>().ok() == Some(number) {
            return Ok(Path::new("/dev").join(e.file_name()));
        }
    }
    Err(not_found())
}

/// Rename `slot`'s counted entries on the ESP at `root` to the proven name
/// (`keel-usr-b+0-1.conf` → `keel-usr-b.conf`), then sync the directory.
/// Returns the renames done (none when the entry is proven already or the
/// slot has no entry).
pub fn bless(root: &Path, slot: Slot) -> Result<Vec<(String, String)>, EspError> {
    let dir = root.join(ENTRIES_DIR);
    let proven = EntryName::proven(slot).file_name();
    let mut counted = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io("reading", &dir))? {
        let e = e.map_err(io("reading", &dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = EntryName::parse(&name) {
            if n.slot == slot && n.tries_left.is_some() {
                counted.push(name);
            }
        }
    }
    // The newest counter wins if there are several (there should be one);
    // rename is atomic on the directory entry, so a cut leaves either name.
    counted.sort();
    let mut done = Vec::new();
    if let Some(from) = counted.pop() {
        let src = dir.join(&from);
        std::fs::rename(&src, dir.join(&proven)).map_err(io("renaming", &src))?;
        done.push((from, proven.clone()));
        for stale in counted {
            let p = dir.join(&stale);
            std::fs::remove_file(&p).map_err(io("removing", &p))?;
        }
        std::fs::File::open(&dir)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing", &dir))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join(ENTRIES_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn bless_renames_the_booted_slot_s_counted_entry_only() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join(ENTRIES_DIR)).unwrap();
        for f in ["keel-usr-a.conf", "keel-usr-b+0-1.conf", "other+1.conf"] {
            std::fs::write(t.path().join(ENTRIES_DIR).join(f), f).unwrap();
        }
        let done = bless(t.path(), Slot::B).unwrap();
        assert_eq!(
            done,
            vec![("keel-usr-b+0-1.conf".into(), "keel-usr-b.conf".into())]
        );
        assert_eq!(
            entries(t.path()),
            ["keel-usr-a.conf", "keel-usr-b.conf", "other+1.conf"]
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join(ENTRIES_DIR).join("keel-usr-b.conf")).unwrap(),
            "keel-usr-b+0-1.conf"
        );
        // Proven already: nothing to do.
        assert!(bless(t.path(), Slot::B).unwrap().is_empty());
        assert!(bless(t.path(), Slot::A).unwrap().is_empty());
    }

    #[test]
    fn bless_without_an_entries_dir_names_it() {
        let t = tempfile::tempdir().unwrap();
        let e = bless(t.path(), Slot::A).unwrap_err().to_string();
        assert!(
            e.starts_with("reading ") && e.contains("loader/entries"),
            "{e}"
        );
    }

    #[test]
    fn partition_nodes_come_from_sysfs() {
        let t = tempfile::tempdir().unwrap();
        for (disk, parts) in [
            ("vda", vec![("vda1", 1), ("vda7", 7)]),
            ("nvme0n1", vec![("nvme0n1p1", 1), ("nvme0n1p2", 2)]),
        ] {
            for (p, n) in parts {
                let d = t.path().join(disk).join(p);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("partition"), format!("{n}\n")).unwrap();
            }
            std::fs::create_dir_all(t.path().join(disk).join("queue")).unwrap();
        }
        let node = |d: &str, n| partition_node(t.path(), Path::new(d), n);
        assert_eq!(node("/dev/vda", 1).unwrap(), Path::new("/dev/vda1"));
        assert_eq!(node("/dev/vda", 7).unwrap(), Path::new("/dev/vda7"));
        assert_eq!(
            node("/dev/nvme0n1", 1).unwrap(),
            Path::new("/dev/nvme0n1p1")
        );
        let e = node("/dev/vda", 3).unwrap_err().to_string();
        assert!(e.contains("partition 3 has no device node"), "{e}");
        let e = node("/dev/sdz", 1).unwrap_err().to_string();
        assert!(e.contains("/dev/sdz: partition 1"), "{e}");
    }
}

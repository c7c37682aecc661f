//! The side effects that need privileges, behind one small trait: mounting
//! a config drive and changing file ownership. [`Real`] does them with
//! rustix; [`Recording`] records them so tests run without root.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Privileged operations provisioning needs.
pub trait System {
    /// Mount block device `dev` read-only at `target` with file system
    /// type `fstype` (`iso9660` or `vfat`).
    fn mount_ro(&self, dev: &Path, fstype: &str, target: &Path) -> std::io::Result<()>;
    /// Unmount `target`.
    fn umount(&self, target: &Path) -> std::io::Result<()>;
    /// Change the owner of `path` without following a final symlink.
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> std::io::Result<()>;
}

/// The real system: mount(2), umount2(2), fchownat(2).
#[derive(Debug, Default, Clone, Copy)]
pub struct Real;

impl System for Real {
    fn mount_ro(&self, dev: &Path, fstype: &str, target: &Path) -> std::io::Result<()> {
        use rustix::mount::MountFlags;
        rustix::mount::mount(
            dev,
            target,
            fstype,
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )?;
        Ok(())
    }

    fn umount(&self, target: &Path) -> std::io::Result<()> {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty())?;
        Ok(())
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        // `from_raw_unchecked` (not `from_raw`, which debug-asserts): an id
        // of 0xffffffff read from an odd passwd line means "leave unchanged"
        // to chown(2), which is harmless.
        let (u, g) = (
            rustix::fs::Uid::from_raw_unchecked(uid),
            rustix::fs::Gid::from_raw_unchecked(gid),
        );
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            Some(u),
            Some(g),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }
}

/// A recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `mount_ro(dev, fstype, target)`.
    Mount(PathBuf, String, PathBuf),
    /// `umount(target)`.
    Umount(PathBuf),
    /// `lchown(path, uid, gid)`.
    Chown(PathBuf, u32, u32),
}

/// A fake that records calls. `mount_ro` of a device listed in `drives`
/// copies that directory's files into the mount point (standing in for the
/// drive's file system); `umount` removes them again.
#[derive(Debug, Default)]
pub struct Recording {
    /// Calls so far.
    pub calls: Mutex<Vec<Call>>,
    /// Device path → directory whose files the "mounted" drive shows.
    pub drives: Vec<(PathBuf, PathBuf)>,
    /// Make `lchown` fail (as an I/O error would) for paths containing this.
    pub fail_chown: Option<String>,
}

impl Recording {
    /// The calls made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, c: Call) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(c);
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&dest)?;
            copy_tree(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

impl System for Recording {
    fn mount_ro(&self, dev: &Path, fstype: &str, target: &Path) -> std::io::Result<()> {
        self.record(Call::Mount(dev.into(), fstype.into(), target.into()));
        match self.drives.iter().find(|(d, _)| d == dev) {
            Some((_, dir)) => copy_tree(dir, target),
            None => Err(std::io::Error::other("no such fake drive")),
        }
    }

    fn umount(&self, target: &Path) -> std::io::Result<()> {
        self.record(Call::Umount(target.into()));
        for entry in std::fs::read_dir(target)? {
            let p = entry?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(p)?;
            } else {
                std::fs::remove_file(p)?;
            }
        }
        Ok(())
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        self.record(Call::Chown(path.into(), uid, gid));
        match &self.fail_chown {
            Some(f) if path.to_string_lossy().contains(f.as_str()) => {
                Err(std::io::Error::other("injected failure"))
            }
            _ => Ok(()),
        }
    }
}

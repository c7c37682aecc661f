//! Replacing a file so that readers and a power cut see either the old
//! contents or the new ones, never a mix or nothing. Every Keel program
//! that keeps state writes through here (keel-init's boot record and
//! first-boot marker, keel-netd's leases and link state, keel-oem's
//! markers and status, keel-provision's result and marker, toolbox's store
//! records).
//!
//! The sequence: create a temporary file in the same directory
//! (`.NAME.tmpPID-N`), write, set the mode if asked, fsync it, rename it
//! over the target, fsync the directory (so the rename itself survives a
//! power cut). On any error before the rename the temporary file is
//! removed; the target is then unchanged.
//!
//! Written by hand rather than with the `atomic-write-file` crate: that
//! crate brings a second `nix` and `rand` into binaries with size budgets
//! (keel-init ≤ 2 MiB, keel-netd ≤ 3 MiB) for what is a few dozen lines.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// How to write: the default is durable, the mode from the umask, the
/// parent directory created if missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomicWrite {
    mode: Option<u32>,
    durable: bool,
}

impl Default for AtomicWrite {
    fn default() -> Self {
        Self::new()
    }
}

/// Tells two writers of one file in one process apart (threads).
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl AtomicWrite {
    /// Durable, mode from the umask.
    pub const fn new() -> Self {
        AtomicWrite {
            mode: None,
            durable: true,
        }
    }

    /// Give the file exactly this mode (not masked by the umask), set
    /// before the rename so the file never appears with another one.
    pub const fn mode(self, mode: u32) -> Self {
        AtomicWrite {
            mode: Some(mode),
            ..self
        }
    }

    /// Without durability, skip both fsyncs: still atomic for readers, but
    /// a power cut may lose the new contents. For a tmpfs, or a caller that
    /// syncs the whole filesystem itself afterwards (`syncfs`).
    pub const fn durable(self, durable: bool) -> Self {
        AtomicWrite { durable, ..self }
    }

    /// Replace `path` with `data`, creating its directory if needed.
    pub fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file path", path.display()),
            )
        })?;
        fs::create_dir_all(dir)?;
        // The pid keeps two processes (a daemon and its CLI) apart, the
        // counter two threads.
        let tmp = dir.join(format!(
            ".{}.tmp{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of a writer that had the same pid (keel-init is always
        // pid 1) before a power cut; create_new then never follows a link.
        let _ = fs::remove_file(&tmp);
        let written = (|| {
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            if let Some(m) = self.mode {
                opts.mode(m);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(data)?;
            if let Some(m) = self.mode {
                f.set_permissions(fs::Permissions::from_mode(m))?;
            }
            if self.durable {
                f.sync_all()?;
            }
            fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if self.durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Replace `path` with `data` atomically and durably, creating the parent
/// directory if needed ([`AtomicWrite::new`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    AtomicWrite::new().write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_and_leaves_no_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(entries(&t.path().join("sub")), ["f"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_cleans_up() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("d");
        // The target is a non-empty directory: the rename fails.
        fs::create_dir_all(p.join("x")).unwrap();
        assert!(write_atomic(&p, b"new").is_err());
        assert!(p.join("x").is_dir());
        assert_eq!(entries(t.path()), ["d"]);
    }

    #[test]
    fn rejects_a_path_without_a_file_name() {
        let e = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn mode_is_exact_and_not_durable_still_replaces() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("m");
        AtomicWrite::new().mode(0o640).write(&p, b"1").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        AtomicWrite::new()
            .mode(0o604)
            .durable(false)
            .write(&p, b"2")
            .unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o604
        );
        assert_eq!(fs::read(&p).unwrap(), b"2");
        assert_eq!(entries(t.path()), ["m"]);
    }

    #[test]
    fn a_leftover_temporary_file_or_link_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let p = t.path().join("f");
        // What the next write's temporary name will be in this process.
        let n = COUNTER.load(Ordering::Relaxed);
        for i in n..n + 8 {
            let tmp = t.path().join(format!(".f.tmp{}-{i}", std::process::id()));
            std::os::unix::fs::symlink(&victim, tmp).unwrap();
        }
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn threads_writing_one_file_do_not_collide() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, &[i; 64]).unwrap();
                    }
                });
            }
        });
        let d = fs::read(&p).unwrap();
        assert_eq!(d.len(), 64);
        assert!(d.iter().all(|b| *b == d[0]));
        assert_eq!(entries(t.path()), ["f"]);
    }
}

//! keel-fs: replacing a file so that readers and a power cut see either the
//! old contents or the new ones, never a mix or nothing. Shared by every Keel
//! binary that keeps state (keel-init's boot record, keel-netd's leases,
//! keel-oem's run-once markers).
//!
//! The sequence: write a temporary file in the same directory, fsync it,
//! rename it over the target, fsync the directory (so the rename itself
//! survives a power cut). On any error the temporary file is removed.
//!
//! Written by hand rather than with the `atomic-write-file` crate: that crate
//! brings a second `nix` and `rand` into binaries with size budgets (keel-init
//! ≤ 2 MiB, keel-netd ≤ 3 MiB) for what is a dozen lines here.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replace `path` with `data` atomically and durably, creating the parent
/// directory if needed.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    // The pid keeps two writers of the same file (a daemon and its CLI)
    // from sharing a temporary file.
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(t.path().join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_cleans_up() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("d");
        // The target is a non-empty directory: the rename fails.
        fs::create_dir_all(p.join("x")).unwrap();
        assert!(write_atomic(&p, b"new").is_err());
        assert!(p.join("x").is_dir());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn rejects_a_path_without_a_file_name() {
        let e = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

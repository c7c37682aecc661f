//! ROOT's skeleton: the directories and `/usr`-merge links every Keel root
//! filesystem has. keel-image makes a fresh ROOT with it, keel-init repairs
//! a wiped one at every boot; one definition so the two never differ.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// Directories (relative to ROOT) and their modes.
pub const DIRS: &[(&str, u32)] = &[
    ("usr", 0o755),
    ("oem", 0o755),
    ("etc", 0o755),
    ("var", 0o755),
    ("var/lib/keel", 0o755),
    ("home", 0o755),
    ("root", 0o700),
    ("srv", 0o755),
    ("tmp", 0o1777),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
    ("mnt", 0o755),
    ("media", 0o755),
    ("opt", 0o755),
    ("boot", 0o755),
    (".keel", 0o700),
];

/// The `/usr`-merge links (relative to ROOT) and their targets.
pub const LINKS: &[(&str, &str)] = &[
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

/// Make sure `root` has [`DIRS`] and [`LINKS`]; idempotent (a fresh or
/// wiped ROOT gets them, what exists is left as it is). Errors name the path.
pub fn prepare(root: &Path) -> io::Result<()> {
    let named = |p: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    for (d, mode) in DIRS {
        let p = root.join(d);
        if !p.exists() {
            fs::create_dir_all(&p).map_err(|e| named(&p, e))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).map_err(|e| named(&p, e))?;
        }
    }
    for (l, t) in LINKS {
        let p = root.join(l);
        if p.symlink_metadata().is_err() {
            symlink(t, &p).map_err(|e| named(&p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths;

    #[test]
    fn is_idempotent_and_matches_the_places() {
        let d = tempfile::tempdir().unwrap();
        prepare(d.path()).unwrap();
        assert_eq!(
            fs::read_link(d.path().join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        let m = fs::metadata(d.path().join("tmp")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o1777);
        fs::write(d.path().join("etc/keep"), "x").unwrap();
        prepare(d.path()).unwrap();
        assert_eq!(fs::read_to_string(d.path().join("etc/keep")).unwrap(), "x");
        assert!(paths::under(d.path(), paths::ROOT_STATE_DIR).is_dir());
        assert!(paths::under(d.path(), paths::STATE_DIR).is_dir());
    }
}

//! Search paths and drop-ins, as systemd.unit(5) and systemd.network(5)
//! describe them:
//!
//! - Directories are given lowest priority first (`/usr/lib/…`, `/run/…`,
//!   `/etc/…`). A file in a higher-priority directory replaces a file of the
//!   same name in a lower one; files are taken in lexical order of their
//!   names across all directories ([`list`]).
//! - A file that is empty or a symlink to `/dev/null` is masked
//!   ([`is_masked`]): it hides the lower-priority files of its name and is
//!   not itself read.
//! - Drop-ins are `*.conf` files in `NAME.d/` directories beside the file
//!   in any of the directories (for units also the unit type's `service.d/`,
//!   the `-`-truncated prefixes `foo-.service.d/` and the template's
//!   `foo@.service.d/`, see [`unit_dropin_dirs`]); they are applied in
//!   lexical order of their file names whatever directory they are in; the
//!   same file name in a higher-priority directory replaces a lower one
//!   (and, in the same directory level, a more specific `.d/` one a more
//!   generic one); a masked drop-in is dropped ([`dropins`]).
//!
//! Files and directories whose names start with `.` are not read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::name::UnitName;

/// Whether `path` masks: a symlink to `/dev/null`, or an empty file (also
/// through a symlink).
pub fn is_masked(path: &Path) -> bool {
    if std::fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null")) {
        return true;
    }
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// One file name found on the search path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file name.
    pub name: String,
    /// The highest-priority file of that name: the one that counts.
    pub path: PathBuf,
    /// Same-named files in lower-priority directories it replaces, lowest
    /// first.
    pub replaces: Vec<PathBuf>,
    /// Whether [`Found::path`] masks the name.
    pub masked: bool,
}

/// The file names in `dir` ending in `suffix`, sorted (none if `dir` cannot
/// be read).
fn names_in(dir: &Path, suffix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix) && n.len() > suffix.len() && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Every file ending in `suffix` in `dirs` (lowest priority first), one
/// per file name, in lexical order of names.
pub fn list(dirs: &[PathBuf], suffix: &str) -> Vec<Found> {
    let mut all: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for dir in dirs {
        for n in names_in(dir, suffix) {
            let p = dir.join(&n);
            all.entry(n).or_default().push(p);
        }
    }
    all.into_iter()
        .filter_map(|(name, mut paths)| {
            let path = paths.pop()?;
            Some(Found {
                masked: is_masked(&path),
                name,
                path,
                replaces: paths,
            })
        })
        .collect()
}

/// The drop-in directory names for a unit, most generic first:
/// `service.d`, then each `-`-truncated prefix (`foo-.service.d`,
/// `foo-bar-.service.d`), the template's (`foo-bar-baz@.service.d`) for an
/// instance, and the unit's own (`foo-bar-baz@x.service.d`).
pub fn unit_dropin_dirs(unit: &UnitName) -> Vec<String> {
    let ty = unit.unit_type();
    let mut out = vec![format!("{ty}.d")];
    let prefix = unit.prefix();
    for (i, _) in prefix.match_indices('-') {
        // `foo-.service` itself is a name whose prefix ends in `-`; its own
        // directory comes last, once.
        if i + 1 < prefix.len() || unit.instance().is_some() {
            out.push(format!("{}-.{ty}.d", &prefix[..i]));
        }
    }
    if unit.is_instance() {
        if let Some(t) = unit.template() {
            out.push(format!("{t}.d"));
        }
    }
    let own = format!("{unit}.d");
    if !out.contains(&own) {
        out.push(own);
    }
    out
}

/// The drop-ins (`*.conf`) in the directories `dir_names` (most generic
/// first, e.g. [`unit_dropin_dirs`], or just `["eth0.network.d"]`) under
/// each of `dirs` (lowest priority first): one per file name, the
/// highest-priority one, in lexical order of file names, masked ones left
/// out.
pub fn dropins(dirs: &[PathBuf], dir_names: &[String]) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        for d in dir_names {
            let sub = dir.join(d);
            for n in names_in(&sub, ".conf") {
                by_name.insert(n.clone(), sub.join(n));
            }
        }
    }
    by_name.into_values().filter(|p| !is_masked(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn names(v: &[PathBuf], root: &Path) -> Vec<String> {
        v.iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn unit_dropin_directories() {
        let u = |s| unit_dropin_dirs(&UnitName::parse(s).unwrap());
        assert_eq!(u("sshd.service"), ["service.d", "sshd.service.d"]);
        assert_eq!(
            u("foo-bar-baz.service"),
            [
                "service.d",
                "foo-.service.d",
                "foo-bar-.service.d",
                "foo-bar-baz.service.d"
            ]
        );
        assert_eq!(
            u("getty@tty1.service"),
            ["service.d", "getty@.service.d", "getty@tty1.service.d"]
        );
        assert_eq!(u("user-.slice"), ["slice.d", "user-.slice.d"]);
        assert_eq!(
            u("a-@.service"),
            ["service.d", "a-.service.d", "a-@.service.d"]
        );
    }

    #[test]
    fn search_path_override_and_masking() {
        let t = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = ["usr", "run", "etc"]
            .iter()
            .map(|d| t.path().join(d))
            .collect();
        for d in &dirs {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(dirs[0].join("10-a.network"), "[Match]\n").unwrap();
        fs::write(dirs[2].join("10-a.network"), "[Match]\nName=x\n").unwrap();
        fs::write(dirs[0].join("20-b.network"), "[Match]\n").unwrap();
        symlink("/dev/null", dirs[1].join("20-b.network")).unwrap();
        fs::write(dirs[0].join("30-c.network"), "[Match]\n").unwrap();
        fs::write(dirs[2].join("30-c.network"), "").unwrap();
        fs::write(dirs[1].join("05-d.network"), "[Match]\n").unwrap();
        fs::write(dirs[1].join(".hidden.network"), "[Match]\n").unwrap();
        fs::write(dirs[1].join("x.netdev"), "[NetDev]\n").unwrap();
        let l = list(&dirs, ".network");
        let got: Vec<(String, String, usize, bool)> = l
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    f.path.strip_prefix(t.path()).unwrap().display().to_string(),
                    f.replaces.len(),
                    f.masked,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("05-d.network".into(), "run/05-d.network".into(), 0, false),
                ("10-a.network".into(), "etc/10-a.network".into(), 1, false),
                ("20-b.network".into(), "run/20-b.network".into(), 1, true),
                ("30-c.network".into(), "etc/30-c.network".into(), 1, true),
            ]
        );
    }

    #[test]
    fn dropin_order_override_and_masking() {
        let t = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = ["usr", "run", "etc"]
            .iter()
            .map(|d| t.path().join(d))
            .collect();
        let w = |dir: usize, sub: &str, name: &str, text: &str| {
            let d = dirs[dir].join(sub);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(name), text).unwrap();
        };
        w(0, "foo-bar.service.d", "10-a.conf", "[Service]\n");
        w(2, "foo-bar.service.d", "10-a.conf", "[Service]\nX=1\n"); // replaces /usr's
        w(1, "foo-.service.d", "05-prefix.conf", "[Service]\n");
        w(0, "service.d", "50-all.conf", "[Service]\n");
        w(0, "foo-bar.service.d", "60-masked.conf", "[Service]\n");
        w(0, "foo-bar.service.d", "not-conf.txt", "x");
        let d = dirs[2].join("foo-bar.service.d");
        symlink("/dev/null", d.join("60-masked.conf")).unwrap();
        // Same name, same level: the more specific directory wins.
        w(1, "foo-bar.service.d", "05-prefix.conf", "[Service]\nY=1\n");
        let u = UnitName::parse("foo-bar.service").unwrap();
        let got = dropins(&dirs, &unit_dropin_dirs(&u));
        assert_eq!(
            names(&got, t.path()),
            [
                "run/foo-bar.service.d/05-prefix.conf",
                "etc/foo-bar.service.d/10-a.conf",
                "usr/service.d/50-all.conf"
            ]
        );
        // networkd: just NAME.d.
        w(0, "a.network.d", "z.conf", "[Network]\n");
        w(2, "a.network.d", "b.conf", "[Network]\n");
        assert_eq!(
            names(&dropins(&dirs, &["a.network.d".into()]), t.path()),
            ["etc/a.network.d/b.conf", "usr/a.network.d/z.conf"]
        );
        assert!(dropins(&[t.path().join("none")], &["x.d".into()]).is_empty());
    }
}

//! The initramfs: keel-init as `/init` and the kernel modules it loads, as a
//! newc cpio archive.
//!
//! The newc writer is hand-written (60 lines) rather than taken from a crate
//! because the archive must be reproducible: fixed owners (root), fixed
//! mtimes, sorted entries, and only directories, regular files and symlinks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use thiserror::Error;

/// Errors resolving modules.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModuleError {
    /// A requested module is not in modules.dep.
    #[error("module {0} not found in modules.dep")]
    NotFound(String),
    /// A malformed modules.dep line.
    #[error("modules.dep line {line}: {message}")]
    Malformed { line: usize, message: String },
}

/// `modules.dep`: module path → dependency paths (relative to the module dir).
#[derive(Debug, Default)]
pub struct ModulesDep {
    deps: BTreeMap<String, Vec<String>>,
}

/// The kernel's module name for a path: basename without `.ko*`, `-` → `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

impl ModulesDep {
    /// Parse modules.dep text.
    pub fn parse(text: &str) -> Result<Self, ModuleError> {
        let mut deps = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (m, rest) = line.split_once(':').ok_or_else(|| ModuleError::Malformed {
                line: i + 1,
                message: "missing ':'".into(),
            })?;
            deps.insert(
                m.trim().to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            );
        }
        Ok(ModulesDep { deps })
    }

    fn path_of(&self, name: &str) -> Option<&String> {
        let want = name.replace('-', "_");
        self.deps.keys().find(|p| module_name(p) == want)
    }

    /// The module paths needed for `names`, dependencies included.
    pub fn closure(&self, names: &[String]) -> Result<BTreeSet<String>, ModuleError> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<String> = Vec::new();
        for n in names {
            let p = self
                .path_of(n)
                .ok_or_else(|| ModuleError::NotFound(n.clone()))?;
            todo.push(p.clone());
        }
        while let Some(p) = todo.pop() {
            if out.insert(p.clone()) {
                if let Some(d) = self.deps.get(&p) {
                    todo.extend(d.iter().cloned());
                }
            }
        }
        Ok(out)
    }

    /// modules.dep text restricted to `paths`.
    pub fn render_subset(&self, paths: &BTreeSet<String>) -> String {
        let mut s = String::new();
        for p in paths {
            s.push_str(p);
            s.push(':');
            for d in self.deps.get(p).into_iter().flatten() {
                s.push(' ');
                s.push_str(d);
            }
            s.push('\n');
        }
        s
    }
}

/// One archive member.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory with a mode.
    Dir(u32),
    /// A regular file with a mode and contents.
    File(u32, Vec<u8>),
    /// A symlink to a target.
    Symlink(String),
    /// A character device node with a mode, major and minor.
    CharDev(u32, u32, u32),
}

/// Write a newc archive of `entries` (path → entry; parents must be listed).
pub fn write_newc(out: &mut impl Write, entries: &BTreeMap<String, Entry>) -> io::Result<()> {
    let mut ino = 1u32;
    let mut pos = 0usize;
    let mut put = |out: &mut dyn Write,
                   name: &str,
                   mode: u32,
                   data: &[u8],
                   rdev: (u32, u32)|
     -> io::Result<()> {
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime: fixed for reproducible archives
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        ino += 1;
        out.write_all(header.as_bytes())?;
        out.write_all(name.as_bytes())?;
        out.write_all(&[0])?;
        pos += header.len() + name.len() + 1;
        let pad = (4 - pos % 4) % 4;
        out.write_all(&[0u8; 3][..pad])?;
        pos += pad;
        out.write_all(data)?;
        pos += data.len();
        let pad = (4 - pos % 4) % 4;
        out.write_all(&[0u8; 3][..pad])?;
        pos += pad;
        Ok(())
    };
    for (path, e) in entries {
        let name = path.trim_start_matches('/');
        match e {
            Entry::Dir(mode) => put(out, name, 0o040000 | mode, &[], (0, 0))?,
            Entry::File(mode, data) => put(out, name, 0o100000 | mode, data, (0, 0))?,
            Entry::Symlink(t) => put(out, name, 0o120777, t.as_bytes(), (0, 0))?,
            Entry::CharDev(mode, major, minor) => {
                put(out, name, 0o020000 | mode, &[], (*major, *minor))?
            }
        }
    }
    put(out, "TRAILER!!!", 0, &[], (0, 0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str =
        "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko\n\
kernel/fs/jbd2/jbd2.ko:\n\
kernel/fs/mbcache.ko:\n\
kernel/lib/crc16.ko:\n\
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko\n\
kernel/drivers/md/dm-bufio.ko:\n\
kernel/drivers/md/dm-mod.ko:\n";

    #[test]
    fn closure_includes_dependencies() {
        let d = ModulesDep::parse(DEP).unwrap();
        let c = d.closure(&["dm_verity".into(), "ext4".into()]).unwrap();
        assert_eq!(c.len(), 7);
        assert!(c.contains("kernel/drivers/md/dm-mod.ko"));
        let sub = d.render_subset(&c);
        assert!(sub.contains("kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko"));
    }

    #[test]
    fn missing_module_named() {
        let d = ModulesDep::parse(DEP).unwrap();
        assert_eq!(
            d.closure(&["erofs".into()]).unwrap_err().to_string(),
            "module erofs not found in modules.dep"
        );
        assert_eq!(
            ModulesDep::parse("garbage\n").unwrap_err().to_string(),
            "modules.dep line 1: missing ':'"
        );
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/drivers/md/dm-verity.ko"), "dm_verity");
        assert_eq!(module_name("kernel/fs/erofs/erofs.ko.xz"), "erofs");
    }

    #[test]
    fn newc_layout() {
        let mut e = BTreeMap::new();
        e.insert("init".to_string(), Entry::File(0o755, b"abc".to_vec()));
        e.insert("lib".to_string(), Entry::Dir(0o755));
        let mut out = Vec::new();
        write_newc(&mut out, &e).unwrap();
        assert_eq!(&out[..6], b"070701");
        assert_eq!(out.len() % 4, 0);
        // name "init\0" right after the 110-byte header, data aligned to 4
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..119], b"abc");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}

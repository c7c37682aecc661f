//! Safe layer unpacking.
//!
//! Every path in a layer is resolved relative to the root directory fd with
//! `openat2(…, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses
//! (EXDEV) any resolution that would leave the root, whether through `..`, an
//! absolute symlink or a relative symlink climbing out. Keel chose BENEATH over
//! IN_ROOT on purpose: a layer that writes *through* a symlink pointing outside
//! the tree is refused with an error instead of being silently clamped, since
//! real image layers (produced by diffing a filesystem) never write through
//! symlinks. The final component is never followed: an existing entry is
//! unlinked and the new one created with `O_CREAT | O_EXCL | O_NOFOLLOW`,
//! `symlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`, or `mkdirat`.
//!
//! Lexically, entries with absolute paths or `..` components are refused before
//! touching the disk, as are hard links whose target is absolute or climbs out,
//! and device nodes (a toolbox has no business shipping them; the container
//! gets its own `/dev` from nspawn).
//!
//! Whiteouts follow the OCI image spec: `.wh.NAME` deletes `NAME` from lower
//! layers, `.wh..wh..opq` empties its directory of lower-layer content; both
//! leave entries of the same layer alone, whatever their order.
//!
//! The `tar` crate only parses headers (it handles GNU long names, PAX
//! records and sparse files); all writes are done here.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

/// An unpacking error; `layer` names the layer, `path` the tar entry and
/// `offset` its header's byte offset in the uncompressed layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar stream is broken.
    #[error("{layer}: reading tar: {source}")]
    Tar {
        /// Layer name.
        layer: String,
        /// Underlying error.
        source: io::Error,
    },
    /// An entry was refused for safety.
    #[error("{layer}: entry {path:?} at offset {offset}: {reason}; refused")]
    Refused {
        /// Layer name.
        layer: String,
        /// Entry path as in the tar.
        path: String,
        /// Header offset.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// A system call failed.
    #[error("{layer}: entry {path:?} at offset {offset}: {op}: {source}")]
    Io {
        /// Layer name.
        layer: String,
        /// Entry path.
        path: String,
        /// Header offset.
        offset: u64,
        /// What was being done.
        op: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// Opening the target directory failed.
    #[error("opening unpack target {path}: {source}")]
    Root {
        /// Target dir.
        path: String,
        /// Underlying error.
        source: io::Error,
    },
}

/// Why an entry is refused (before any write).
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Absolute,
    DotDot,
    Escape,
    LinkAbsolute(String),
    LinkDotDot(String),
    Device(&'static str),
    NotDir(String),
    Parent(String, String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Absolute => f.write_str("absolute path"),
            Refusal::DotDot => f.write_str("path contains '..'"),
            Refusal::Escape => f.write_str("path leads outside the root through a symlink"),
            Refusal::LinkAbsolute(t) => write!(f, "hard link to absolute path {t:?}"),
            Refusal::LinkDotDot(t) => write!(f, "hard link to {t:?} outside the root"),
            Refusal::Device(k) => write!(f, "{k} device node"),
            Refusal::NotDir(p) => write!(f, "parent {p:?} is not a directory"),
            Refusal::Parent(p, e) => write!(f, "cannot create parent {p:?}: {e}"),
        }
    }
}

/// Split a tar path into clean components: no empty or `.` parts; absolute
/// paths and `..` refused.
fn clean(raw: &[u8]) -> Result<Vec<&[u8]>, Refusal> {
    // A bare "/" (umoci writes one for the root) names the root itself and
    // cannot escape; any other absolute path is refused.
    if raw.starts_with(b"/") && raw.iter().any(|b| *b != b'/') {
        return Err(Refusal::Absolute);
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Refusal::DotDot),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT: &[u8] = b".wh.";

/// Directory metadata applied after a layer's children are written.
struct DirMeta {
    path: Vec<u8>,
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: u64,
}

/// Unpacks layers into one directory.
#[derive(Debug)]
pub struct Unpacker {
    root: OwnedFd,
    /// Apply owners (as root); off for unprivileged unit tests.
    owners: bool,
    xattr_warned: bool,
    buf: Vec<u8>,
}

impl std::fmt::Debug for DirMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirMeta").field("path", &self.path).finish()
    }
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Per-entry context for errors.
struct Ctx<'a> {
    layer: &'a str,
    path: String,
    offset: u64,
}

impl Ctx<'_> {
    fn io(&self, op: &'static str, e: impl Into<io::Error>) -> UnpackError {
        UnpackError::Io {
            layer: self.layer.to_string(),
            path: self.path.clone(),
            offset: self.offset,
            op,
            source: e.into(),
        }
    }
    fn refuse(&self, r: Refusal) -> UnpackError {
        UnpackError::Refused {
            layer: self.layer.to_string(),
            path: self.path.clone(),
            offset: self.offset,
            reason: r.to_string(),
        }
    }
}

fn ts(secs: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn uid(v: u64) -> Uid {
    Uid::from_raw(u32::try_from(v).unwrap_or(u32::MAX - 1))
}

fn gid(v: u64) -> Gid {
    Gid::from_raw(u32::try_from(v).unwrap_or(u32::MAX - 1))
}

impl Unpacker {
    /// Unpack into the directory `root` (which must exist).
    pub fn new(root: &std::path::Path, owners: bool) -> Result<Unpacker, UnpackError> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::Root {
            path: root.display().to_string(),
            source: e.into(),
        })?;
        Ok(Unpacker {
            root: fd,
            owners,
            xattr_warned: false,
            buf: vec![0; 256 * 1024],
        })
    }

    /// Make sure a directory exists below the root (same resolution rules
    /// as layer entries: nothing is created outside the root).
    pub fn ensure_dir(&self, path: &str) -> Result<(), UnpackError> {
        let comps = clean(path.as_bytes()).map_err(|r| self.refused_path(path, r))?;
        self.open_dir(&comps, true)
            .map(drop)
            .map_err(|r| self.refused_path(path, r))
    }

    fn refused_path(&self, path: &str, r: Refusal) -> UnpackError {
        UnpackError::Refused {
            layer: "mount point".into(),
            path: path.to_string(),
            offset: 0,
            reason: r.to_string(),
        }
    }

    /// Resolve a directory below the root; `create` makes missing ones (0755).
    fn open_dir(&self, comps: &[&[u8]], create: bool) -> Result<OwnedFd, Refusal> {
        self.open_dir_io(comps, create).map_err(|e| match e {
            DirErr::Refused(r) => r,
            DirErr::Io(e) => Refusal::Parent(
                String::from_utf8_lossy(&join(comps)).into_owned(),
                e.to_string(),
            ),
        })
    }

    fn open_dir_io(&self, comps: &[&[u8]], create: bool) -> Result<OwnedFd, DirErr> {
        let path: Vec<u8> = if comps.is_empty() {
            b".".to_vec()
        } else {
            join(comps)
        };
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut created = false;
        for _ in 0..8 {
            match rustix::fs::openat2(
                &self.root,
                OsStr::from_bytes(&path),
                flags,
                Mode::empty(),
                how,
            ) {
                Ok(fd) => return Ok(fd),
                Err(Errno::AGAIN) => continue,
                Err(Errno::XDEV) => return Err(DirErr::Refused(Refusal::Escape)),
                Err(Errno::NOENT) if create && !created && !comps.is_empty() => {
                    let Some((last, parent)) = comps.split_last() else {
                        return Err(DirErr::Refused(Refusal::NotDir(".".into())));
                    };
                    let pfd = self.open_dir_io(parent, true)?;
                    match rustix::fs::mkdirat(
                        &pfd,
                        OsStr::from_bytes(last),
                        Mode::from_raw_mode(0o755),
                    ) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(DirErr::Io(errno_io(e))),
                    }
                    created = true;
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    return Err(DirErr::Refused(Refusal::NotDir(
                        String::from_utf8_lossy(&path).into_owned(),
                    )))
                }
                Err(e) => return Err(DirErr::Io(errno_io(e))),
            }
        }
        Err(DirErr::Refused(Refusal::NotDir(
            String::from_utf8_lossy(&path).into_owned(),
        )))
    }

    /// Remove whatever is at `name` in `dir` (recursively for directories),
    /// never following symlinks.
    fn remove_at(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
        let name = OsStr::from_bytes(name);
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                let sub = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                Self::empty_dir(&sub, &|_| true)?;
                rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
            }
            Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty())?,
        }
        Ok(())
    }

    /// Remove the children of `dir` for which `keep_not` returns true.
    fn empty_dir(dir: &OwnedFd, remove: &dyn Fn(&[u8]) -> bool) -> io::Result<()> {
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(dir)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." && remove(n) {
                names.push(n.to_vec());
            }
        }
        for n in names {
            Self::remove_at(dir, &n)?;
        }
        Ok(())
    }

    /// Unpack one layer's uncompressed tar stream.
    pub fn unpack_layer<R: Read>(&mut self, layer: &str, tar: R) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(tar);
        let tar_err = |e: io::Error| UnpackError::Tar {
            layer: layer.to_string(),
            source: e,
        };
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut dirs: Vec<DirMeta> = Vec::new();
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            let raw = entry.path_bytes().into_owned();
            let ctx = Ctx {
                layer,
                path: String::from_utf8_lossy(&raw).into_owned(),
                offset: entry.raw_header_position(),
            };
            let kind = entry.header().entry_type();
            if matches!(
                kind,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                continue;
            }
            let comps = clean(&raw).map_err(|r| ctx.refuse(r))?;
            let Some((name, parent)) = comps.split_last() else {
                // The root itself ("./"): keep its metadata for the end.
                if kind.is_dir() {
                    dirs.push(
                        self.dir_meta(&entry, Vec::new())
                            .map_err(|e| ctx.io("reading header", e))?,
                    );
                }
                continue;
            };
            let name: &[u8] = name;
            // Whiteouts.
            if name == OPAQUE {
                let pfd = match self.open_dir(parent, false) {
                    Ok(fd) => fd,
                    Err(Refusal::Escape) => return Err(ctx.refuse(Refusal::Escape)),
                    Err(_) => continue,
                };
                let prefix = join(parent);
                let keep = |n: &[u8]| {
                    let mut p = prefix.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(n);
                    !seen.contains(&p)
                };
                let dir = rustix::fs::openat(
                    &pfd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| ctx.io("opening opaque directory", e))?;
                Self::empty_dir(&dir, &keep).map_err(|e| ctx.io("emptying opaque directory", e))?;
                continue;
            }
            if let Some(target) = name.strip_prefix(WHITEOUT) {
                if target.is_empty() || target == b"." || target == b".." {
                    return Err(ctx.refuse(Refusal::DotDot));
                }
                let mut full = parent.to_vec();
                full.push(target);
                if seen.contains(&join(&full)) {
                    continue;
                }
                match self.open_dir(parent, false) {
                    Ok(pfd) => Self::remove_at(&pfd, target)
                        .map_err(|e| ctx.io("removing whited-out path", e))?,
                    Err(Refusal::Escape) => return Err(ctx.refuse(Refusal::Escape)),
                    Err(_) => {}
                }
                continue;
            }
            // Lexical checks before touching the disk.
            let link_target = match kind {
                tar::EntryType::Block => return Err(ctx.refuse(Refusal::Device("block"))),
                tar::EntryType::Char => return Err(ctx.refuse(Refusal::Device("character"))),
                tar::EntryType::Link => {
                    let t = entry
                        .link_name_bytes()
                        .map(|c| c.into_owned())
                        .unwrap_or_default();
                    let shown = String::from_utf8_lossy(&t).into_owned();
                    match clean(&t) {
                        Err(Refusal::Absolute) => {
                            return Err(ctx.refuse(Refusal::LinkAbsolute(shown)))
                        }
                        Err(_) => return Err(ctx.refuse(Refusal::LinkDotDot(shown))),
                        Ok(c) if c.is_empty() => return Err(ctx.refuse(Refusal::LinkDotDot(shown))),
                        Ok(_) => Some(t),
                    }
                }
                tar::EntryType::Symlink => {
                    let t = entry
                        .link_name_bytes()
                        .map(|c| c.into_owned())
                        .unwrap_or_default();
                    if t.is_empty() {
                        return Err(ctx.refuse(Refusal::Device("empty symlink target; not a")));
                    }
                    Some(t)
                }
                _ => None,
            };
            let pfd = self.open_dir(parent, true).map_err(|r| ctx.refuse(r))?;
            let full = join(&comps);
            seen.insert(full.clone());
            let h = entry.header();
            let mode = h.mode().map_err(|e| ctx.io("reading mode", e))? & 0o7777;
            let (u, g) = (
                h.uid().map_err(|e| ctx.io("reading uid", e))?,
                h.gid().map_err(|e| ctx.io("reading gid", e))?,
            );
            let mtime = h.mtime().unwrap_or(0);
            let cname = OsStr::from_bytes(name);
            match kind {
                tar::EntryType::Directory => {
                    match rustix::fs::statat(&pfd, cname, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                        Ok(_) => {
                            Self::remove_at(&pfd, name)
                                .map_err(|e| ctx.io("replacing with directory", e))?;
                            rustix::fs::mkdirat(&pfd, cname, Mode::from_raw_mode(0o700))
                                .map_err(|e| ctx.io("mkdir", e))?;
                        }
                        Err(Errno::NOENT) => {
                            rustix::fs::mkdirat(&pfd, cname, Mode::from_raw_mode(0o700))
                                .map_err(|e| ctx.io("mkdir", e))?
                        }
                        Err(e) => return Err(ctx.io("stat", e)),
                    }
                    let xattrs =
                        pax_xattrs(&mut entry).map_err(|e| ctx.io("reading pax headers", e))?;
                    if !xattrs.is_empty() {
                        let d = rustix::fs::openat(
                            &pfd,
                            cname,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|e| ctx.io("open directory", e))?;
                        self.set_xattrs(&d, &xattrs, &ctx);
                    }
                    dirs.push(DirMeta {
                        path: full,
                        uid: u,
                        gid: g,
                        mode,
                        mtime,
                    });
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    Self::remove_at(&pfd, name).map_err(|e| ctx.io("removing old entry", e))?;
                    let xattrs =
                        pax_xattrs(&mut entry).map_err(|e| ctx.io("reading pax headers", e))?;
                    let fd = rustix::fs::openat(
                        &pfd,
                        cname,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                    .map_err(|e| ctx.io("create", e))?;
                    let mut file = std::fs::File::from(fd);
                    loop {
                        let n = entry.read(&mut self.buf).map_err(|e| UnpackError::Tar {
                            layer: layer.to_string(),
                            source: e,
                        })?;
                        if n == 0 {
                            break;
                        }
                        file.write_all(&self.buf[..n])
                            .map_err(|e| ctx.io("write", e))?;
                    }
                    if self.owners {
                        rustix::fs::fchown(&file, Some(uid(u)), Some(gid(g)))
                            .map_err(|e| ctx.io("chown", e))?;
                    }
                    // After chown, which clears setuid/setgid.
                    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                        .map_err(|e| ctx.io("chmod", e))?;
                    self.set_xattrs(file.as_fd(), &xattrs, &ctx);
                    rustix::fs::futimens(&file, &ts(mtime)).map_err(|e| ctx.io("set times", e))?;
                }
                tar::EntryType::Symlink => {
                    Self::remove_at(&pfd, name).map_err(|e| ctx.io("removing old entry", e))?;
                    let t = link_target.unwrap_or_default();
                    rustix::fs::symlinkat(OsStr::from_bytes(&t), &pfd, cname)
                        .map_err(|e| ctx.io("symlink", e))?;
                    if self.owners {
                        rustix::fs::chownat(
                            &pfd,
                            cname,
                            Some(uid(u)),
                            Some(gid(g)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| ctx.io("chown", e))?;
                    }
                    rustix::fs::utimensat(&pfd, cname, &ts(mtime), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| ctx.io("set times", e))?;
                }
                tar::EntryType::Link => {
                    let t = link_target.unwrap_or_default();
                    // `clean` succeeded above and the result was non-empty.
                    let tc = clean(&t).map_err(|r| ctx.refuse(r))?;
                    let Some((tname, tparent)) = tc.split_last() else {
                        return Err(ctx.refuse(Refusal::LinkDotDot(
                            String::from_utf8_lossy(&t).into_owned(),
                        )));
                    };
                    let tfd = self
                        .open_dir(tparent, false)
                        .map_err(|r| match r {
                            Refusal::Escape => {
                                Refusal::LinkDotDot(String::from_utf8_lossy(&t).into_owned())
                            }
                            other => other,
                        })
                        .map_err(|r| ctx.refuse(r))?;
                    if tc == comps {
                        continue;
                    }
                    Self::remove_at(&pfd, name).map_err(|e| ctx.io("removing old entry", e))?;
                    rustix::fs::linkat(
                        &tfd,
                        OsStr::from_bytes(tname),
                        &pfd,
                        cname,
                        AtFlags::empty(),
                    )
                    .map_err(|e| ctx.io("hard link", e))?;
                }
                tar::EntryType::Fifo => {
                    Self::remove_at(&pfd, name).map_err(|e| ctx.io("removing old entry", e))?;
                    rustix::fs::mknodat(&pfd, cname, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                        .map_err(|e| ctx.io("mkfifo", e))?;
                    if self.owners {
                        rustix::fs::chownat(
                            &pfd,
                            cname,
                            Some(uid(u)),
                            Some(gid(g)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| ctx.io("chown", e))?;
                    }
                    rustix::fs::chmodat(&pfd, cname, Mode::from_raw_mode(mode), AtFlags::empty())
                        .map_err(|e| ctx.io("chmod", e))?;
                }
                other => {
                    return Err(ctx.refuse(Refusal::Device(match other {
                        tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                            "stray GNU long-name header; not a"
                        }
                        _ => "unknown entry type; not a",
                    })))
                }
            }
        }
        // Directory metadata last (deepest first), so restrictive modes do
        // not get in the way of their children and mtimes stick.
        for d in dirs.iter().rev() {
            self.apply_dir_meta(d, layer)?;
        }
        Ok(())
    }

    fn dir_meta<R: Read>(&self, entry: &tar::Entry<'_, R>, path: Vec<u8>) -> io::Result<DirMeta> {
        let h = entry.header();
        Ok(DirMeta {
            path,
            uid: h.uid()?,
            gid: h.gid()?,
            mode: h.mode()? & 0o7777,
            mtime: h.mtime().unwrap_or(0),
        })
    }

    fn apply_dir_meta(&self, d: &DirMeta, layer: &str) -> Result<(), UnpackError> {
        let ctx = Ctx {
            layer,
            path: String::from_utf8_lossy(&d.path).into_owned(),
            offset: 0,
        };
        let comps: Vec<&[u8]> = d
            .path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        // The directory may have been removed or replaced later in the layer.
        let Ok(pfd) = self.open_dir(&comps, false) else {
            return Ok(());
        };
        let fd = match rustix::fs::openat(
            &pfd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(_) => return Ok(()),
        };
        if self.owners {
            rustix::fs::fchown(&fd, Some(uid(d.uid)), Some(gid(d.gid)))
                .map_err(|e| ctx.io("chown", e))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode)).map_err(|e| ctx.io("chmod", e))?;
        rustix::fs::futimens(&fd, &ts(d.mtime)).map_err(|e| ctx.io("set times", e))?;
        Ok(())
    }

    fn set_xattrs(&mut self, fd: impl AsFd, xattrs: &[(Vec<u8>, Vec<u8>)], ctx: &Ctx<'_>) {
        for (k, v) in xattrs {
            if let Err(e) = rustix::fs::fsetxattr(&fd, OsStr::from_bytes(k), v, XattrFlags::empty())
            {
                // "where the filesystem allows": warn once per layer run.
                if !self.xattr_warned {
                    tracing::warn!(
                        layer = ctx.layer,
                        path = ctx.path,
                        "cannot set xattr {}: {e} (further xattr errors are not reported)",
                        String::from_utf8_lossy(k)
                    );
                    self.xattr_warned = true;
                }
            }
        }
    }
}

enum DirErr {
    Refused(Refusal),
    Io(io::Error),
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// A tar entry for building test layers.
    pub enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a [u8], u32),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Char(&'a str),
        Fifo(&'a str),
    }

    /// Build a tar from entries, with raw paths (the `tar` builder would
    /// refuse `..`, so names are written into the header bytes directly).
    pub fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            let (path, data): (&str, &[u8]) = match e {
                E::Dir(p, m) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*m);
                    (p, b"")
                }
                E::File(p, d, m) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*m);
                    (p, d)
                }
                E::Sym(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    set_raw(&mut h, 157, t);
                    (p, b"")
                }
                E::Hard(p, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_mode(0o644);
                    set_raw(&mut h, 157, t);
                    (p, b"")
                }
                E::Char(p) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(0o666);
                    (p, b"")
                }
                E::Fifo(p) => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_mode(0o644);
                    (p, b"")
                }
            };
            set_raw(&mut h, 0, path);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn set_raw(h: &mut tar::Header, off: usize, s: &str) {
        let bytes = h.as_mut_bytes();
        bytes[off..off + 100].fill(0);
        bytes[off..off + s.len()].copy_from_slice(s.as_bytes());
    }

    fn unpack(root: &Path, layers: &[Vec<u8>]) -> Result<(), UnpackError> {
        let mut u = Unpacker::new(root, false)?;
        for (i, l) in layers.iter().enumerate() {
            u.unpack_layer(&format!("layer {}", i + 1), &l[..])?;
        }
        Ok(())
    }

    #[test]
    fn layers_whiteouts_opaque_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let l1 = layer(&[
            E::Dir("etc/", 0o755),
            E::File("etc/delete-me", b"x", 0o644),
            E::File("etc/replace-me", b"v1", 0o644),
            E::Dir("opt/", 0o755),
            E::Dir("opt/old/", 0o755),
            E::File("opt/old/a", b"a", 0o644),
            E::Dir("opt/old/sub/", 0o755),
            E::File("opt/old/sub/b", b"b", 0o644),
            E::File("bin/busybox", b"ELF", 0o755),
            E::Dir("gone/", 0o755),
            E::File("gone/f", b"f", 0o644),
        ]);
        let l2 = layer(&[
            E::File("etc/.wh.delete-me", b"", 0o644),
            E::File("etc/replace-me", b"v2", 0o600),
            E::File("opt/old/c", b"c", 0o644),
            E::File("opt/old/.wh..wh..opq", b"", 0o644),
            E::File("bin/su", b"SU", 0o4755),
            E::Sym("bin/sh", "busybox"),
            E::Hard("bin/cat", "bin/busybox"),
            E::File(".wh.gone", b"", 0o644),
            E::Fifo("run-fifo"),
        ]);
        unpack(&root, &[l1, l2]).unwrap();
        assert!(!root.join("etc/delete-me").exists());
        assert_eq!(std::fs::read(root.join("etc/replace-me")).unwrap(), b"v2");
        assert_eq!(
            std::fs::metadata(root.join("etc/replace-me"))
                .unwrap()
                .mode()
                & 0o7777,
            0o600
        );
        let mut old: Vec<_> = std::fs::read_dir(root.join("opt/old"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        old.sort();
        assert_eq!(old, vec!["c"]);
        assert_eq!(
            std::fs::metadata(root.join("bin/su")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let a = std::fs::metadata(root.join("bin/cat")).unwrap();
        let b = std::fs::metadata(root.join("bin/busybox")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert!(!root.join("gone").exists());
        assert_eq!(
            std::fs::metadata(root.join("etc/replace-me"))
                .unwrap()
                .mtime(),
            1_700_000_000
        );
    }

    #[test]
    fn root_entry_spelled_slash_is_the_root() {
        let t = tempfile::tempdir().unwrap();
        unpack(
            t.path(),
            &[layer(&[E::Dir("/", 0o751), E::File("f", b"1", 0o644)])],
        )
        .unwrap();
        assert_eq!(std::fs::metadata(t.path()).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(clean(b"//"), Ok(vec![]));
        assert_eq!(clean(b"/etc"), Err(Refusal::Absolute));
        assert_eq!(clean(b"./a//b/."), Ok(vec![&b"a"[..], &b"b"[..]]));
    }

    #[test]
    fn directory_replaces_file_and_symlink_replaced_by_dir() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let l1 = layer(&[E::File("a", b"x", 0o644), E::Sym("b", "/etc")]);
        let l2 = layer(&[
            E::Dir("a/", 0o755),
            E::File("a/f", b"1", 0o644),
            E::Dir("b/", 0o700),
        ]);
        unpack(root, &[l1, l2]).unwrap();
        assert!(root.join("a").is_dir());
        assert!(root.join("b").symlink_metadata().unwrap().is_dir());
    }

    /// Each security case: refused with this exact message, nothing written
    /// outside the root.
    #[test]
    fn security_fixtures() {
        let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
            (
                vec![layer(&[E::File("../evil", b"x", 0o644)])],
                "layer 1: entry \"../evil\" at offset 0: path contains '..'; refused",
            ),
            (
                vec![layer(&[E::Dir("a/", 0o755), E::File("a/../../evil", b"x", 0o644)])],
                "layer 1: entry \"a/../../evil\" at offset 512: path contains '..'; refused",
            ),
            (
                vec![layer(&[E::File("/evil", b"x", 0o644)])],
                "layer 1: entry \"/evil\" at offset 0: absolute path; refused",
            ),
            (
                vec![layer(&[E::Sym("link", "../outside"), E::File("link/evil", b"x", 0o644)])],
                "layer 1: entry \"link/evil\" at offset 512: path leads outside the root through a symlink; refused",
            ),
            (
                vec![
                    layer(&[E::Sym("abs", "/tmp")]),
                    layer(&[E::File("abs/evil", b"x", 0o644)]),
                ],
                "layer 2: entry \"abs/evil\" at offset 0: path leads outside the root through a symlink; refused",
            ),
            (
                vec![layer(&[E::Hard("h", "../outside/secret")])],
                "layer 1: entry \"h\" at offset 0: hard link to \"../outside/secret\" outside the root; refused",
            ),
            (
                vec![layer(&[E::Hard("h", "/etc/shadow")])],
                "layer 1: entry \"h\" at offset 0: hard link to absolute path \"/etc/shadow\"; refused",
            ),
            (
                vec![layer(&[E::Sym("l", "../outside"), E::Hard("h", "l/secret")])],
                "layer 1: entry \"h\" at offset 512: hard link to \"l/secret\" outside the root; refused",
            ),
            (
                vec![layer(&[E::Char("dev/mem")])],
                "layer 1: entry \"dev/mem\" at offset 0: character device node; refused",
            ),
            (
                vec![layer(&[E::File("f", b"x", 0o644), E::File("f/g", b"x", 0o644)])],
                "layer 1: entry \"f/g\" at offset 1024: parent \"f\" is not a directory; refused",
            ),
        ];
        for (layers, want) in cases {
            let t = tempfile::tempdir().unwrap();
            let outside = t.path().join("outside");
            std::fs::create_dir(&outside).unwrap();
            std::fs::write(outside.join("secret"), b"s").unwrap();
            let root = t.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let err = unpack(&root, &layers).unwrap_err();
            assert_eq!(err.to_string(), want);
            let mut names: Vec<_> = std::fs::read_dir(t.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            assert_eq!(names, vec!["outside", "root"], "{want}");
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "{want}");
            assert_eq!(
                std::fs::metadata(outside.join("secret")).unwrap().nlink(),
                1,
                "{want}"
            );
        }
    }

    #[test]
    fn pax_xattrs_are_applied() {
        let t = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.user.keel", &b"yes"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(1);
        h.set_path("f").unwrap();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        unpack(t.path(), &[tar]).unwrap();
        let mut buf = [0u8; 16];
        match rustix::fs::getxattr(t.path().join("f"), "user.keel", &mut buf) {
            Ok(n) => assert_eq!(&buf[..n], b"yes"),
            // tmpfs without user xattrs: the unpack must still succeed.
            Err(e) => assert!(matches!(e, Errno::NOTSUP | Errno::PERM), "{e}"),
        }
    }

    #[test]
    fn garbage_is_a_tar_error() {
        let t = tempfile::tempdir().unwrap();
        let err = unpack(t.path(), &[vec![7u8; 1024]]).unwrap_err();
        assert!(
            err.to_string().starts_with("layer 1: reading tar: "),
            "{err}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn random_bytes_never_panic_or_escape(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let t = tempfile::tempdir().unwrap();
            let root = t.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let _ = unpack(&root, &[bytes]);
            proptest::prop_assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        }

        #[test]
        fn random_entries_never_escape(names in proptest::collection::vec("[a./]{1,8}", 1..6), kinds in proptest::collection::vec(0u8..4, 6)) {
            let t = tempfile::tempdir().unwrap();
            let root = t.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let entries: Vec<E<'_>> = names.iter().zip(&kinds).map(|(n, k)| match k {
                0 => E::Dir(n, 0o755),
                1 => E::File(n, b"x", 0o644),
                2 => E::Sym(n, ".."),
                _ => E::Hard(n, "a"),
            }).collect();
            let _ = unpack(&root, &[layer(&entries)]);
            proptest::prop_assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        }
    }
}

//! The toolbox directory (`TOOLBOX_DIRECTORY`, default `/var/lib/toolbox`):
//! trees, locks, metadata, the download cache, and pulling into it.
//!
//! ```text
//! NAME/                 a complete tree (only ever created by rename)
//! .NAME.lock            flock: shared per running session, exclusive for pull/rm
//! .NAME.machine.lock    flock: held by the session registered as machine NAME
//! .NAME.json            what was pulled (image, digest, source, time)
//! .NAME.pull-PID/       a pull in progress (removed by the next pull if stale)
//! .cache/blobs/sha256/  verified registry blobs; kept until the unpack succeeds
//! ```

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, RenameFlags};

use crate::config::Settings;
use crate::oci::Compression;
use crate::progress::Progress;
use crate::reference::{Digest, ImageSource};
use crate::registry::{Registry, RegistryError};
use crate::source::{
    resolve_docker_archive, resolve_oci, DirFiles, Files, HashReader, Layer, Resolved, SourceError,
    TarFiles,
};
use crate::unpack::{UnpackError, Unpacker};

/// Errors of the store and of pulling.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system error on a path.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Error.
        source: io::Error,
    },
    /// The tree is in use.
    #[error("toolbox {name} is in use by a running session; exit it first")]
    InUse {
        /// Toolbox name.
        name: String,
    },
    /// No such tree.
    #[error("toolbox {name} does not exist in {dir}")]
    NotFound {
        /// Name.
        name: String,
        /// Directory.
        dir: String,
    },
    /// Source problem.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Registry problem.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Unpack problem.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// Layer verification.
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |e| StoreError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// A held flock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Lock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// A running session.
    Shared,
    /// pull / rm.
    Exclusive,
}

/// What was pulled, stored as `.NAME.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// The configured image.
    pub image: String,
    /// The tag.
    pub tag: String,
    /// The source actually used (differs when the local fallback was used).
    pub source: String,
    /// Manifest digest.
    pub digest: Digest,
    /// Unix time of the pull.
    pub pulled: u64,
}

/// One row of `toolbox list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name.
    pub name: String,
    /// Metadata, when present.
    pub meta: Option<Meta>,
    /// A session holds it.
    pub in_use: bool,
}

/// The toolbox directory.
#[derive(Debug, Clone)]
pub struct Store {
    /// Its path.
    pub dir: PathBuf,
}

impl Store {
    /// The store at `dir` (created on first pull).
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    /// Create the toolbox directory, mode 0700: the trees hold the image's
    /// setuid binaries, which host users must not be able to run.
    fn create_dir(&self) -> Result<(), StoreError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_at(&self.dir)(e)),
        }
    }

    /// Path of a tree.
    pub fn tree(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn hidden(&self, name: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!(".{name}.{suffix}"))
    }

    fn cache(&self) -> PathBuf {
        self.dir.join(".cache")
    }

    /// A tree is present when its directory exists (it only appears by rename).
    pub fn present(&self, name: &str) -> bool {
        self.tree(name).symlink_metadata().is_ok_and(|m| m.is_dir())
    }

    /// Take the per-name lock file (`wait`: block, else fail with `InUse`).
    pub fn lock(&self, name: &str, mode: LockMode, wait: bool) -> Result<Lock, StoreError> {
        self.lock_file(&self.hidden(name, "lock"), name, mode, wait)
    }

    /// The lock held by the session registered under the plain machine name.
    pub fn try_machine_lock(&self, name: &str) -> Option<Lock> {
        self.lock_file(
            &self.hidden(name, "machine.lock"),
            name,
            LockMode::Exclusive,
            false,
        )
        .ok()
    }

    fn lock_file(
        &self,
        path: &Path,
        name: &str,
        mode: LockMode,
        wait: bool,
    ) -> Result<Lock, StoreError> {
        self.create_dir()?;
        let f = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_at(path))?;
        let op = match (mode, wait) {
            (LockMode::Shared, true) => FlockOperation::LockShared,
            (LockMode::Shared, false) => FlockOperation::NonBlockingLockShared,
            (LockMode::Exclusive, true) => FlockOperation::LockExclusive,
            (LockMode::Exclusive, false) => FlockOperation::NonBlockingLockExclusive,
        };
        match rustix::fs::flock(&f, op) {
            Ok(()) => Ok(Lock { _file: f }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::InUse {
                name: name.to_string(),
            }),
            Err(e) => Err(io_at(path)(e.into())),
        }
    }

    /// Change a held lock's mode (flock converts in place).
    pub fn relock(&self, lock: &Lock, mode: LockMode) -> Result<(), StoreError> {
        let op = match mode {
            LockMode::Shared => FlockOperation::LockShared,
            LockMode::Exclusive => FlockOperation::LockExclusive,
        };
        rustix::fs::flock(lock._file.as_fd(), op).map_err(|e| io_at(&self.dir)(e.into()))
    }

    /// Whether a session holds the tree. Opens the lock file read-only and
    /// never creates it, so `toolbox list` works without root.
    pub fn in_use(&self, name: &str) -> bool {
        let Ok(f) = File::open(self.hidden(name, "lock")) else {
            return false;
        };
        rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive)
            == Err(rustix::io::Errno::WOULDBLOCK)
    }

    /// Read `.NAME.json`.
    pub fn meta(&self, name: &str) -> Option<Meta> {
        let bytes = std::fs::read(self.hidden(name, "json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// All trees.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_at(&self.dir)(e)),
        };
        for e in rd {
            let e = e.map_err(io_at(&self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let in_use = self.in_use(&name);
            out.push(Entry {
                meta: self.meta(&name),
                name,
                in_use,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Remove a tree (the caller holds no lock; this takes it exclusively
    /// and refuses while a session runs).
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let _lock = self.lock(name, LockMode::Exclusive, false)?;
        if !self.present(name) {
            return Err(StoreError::NotFound {
                name: name.to_string(),
                dir: self.dir.display().to_string(),
            });
        }
        let doomed = self.hidden(name, &format!("rm-{}", std::process::id()));
        std::fs::rename(self.tree(name), &doomed).map_err(io_at(&self.tree(name)))?;
        let _ = std::fs::remove_file(self.hidden(name, "json"));
        std::fs::remove_dir_all(&doomed).map_err(io_at(&doomed))?;
        Ok(())
    }

    /// Remove leftovers of interrupted pulls and removals of `name`.
    fn clean_stale(&self, name: &str) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!(".{name}.");
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = n.strip_prefix(&prefix) {
                if rest.starts_with("pull-") || rest.starts_with("old-") || rest.starts_with("rm-")
                {
                    tracing::info!("removing {} left by an interrupted run", e.path().display());
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Pull the configured image into tree `settings.name`; the caller holds
    /// the exclusive lock. Falls back to `TOOLBOX_LOCAL_IMAGE` when the
    /// registry cannot be reached, and says so.
    pub fn pull(&self, s: &Settings, progress: &mut Progress) -> Result<Meta, StoreError> {
        self.create_dir()?;
        self.clean_stale(&s.name);
        let (source, digest) = match self.pull_from(&s.image, &s.tag, &s.name, progress) {
            Ok(d) => (s.image.clone(), d),
            Err(StoreError::Registry(e)) if e.is_unreachable() && s.local_image.is_some() => {
                progress.clear();
                let local = s.local_image.clone().unwrap_or_else(|| s.image.clone());
                tracing::warn!("{e}; using the local image {local} instead (TOOLBOX_LOCAL_IMAGE)");
                self.clean_stale(&s.name);
                let d = self.pull_from(&local, &s.tag, &s.name, progress)?;
                (local, d)
            }
            Err(e) => return Err(e),
        };
        let meta = Meta {
            image: s.image.to_string(),
            tag: s.tag.clone(),
            source: source.to_string(),
            digest,
            pulled: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let path = self.hidden(&s.name, "json");
        let mut bytes = serde_json::to_vec_pretty(&meta).map_err(|e| io_at(&path)(e.into()))?;
        bytes.push(b'\n');
        keel_contract::write_atomic(&path, &bytes).map_err(io_at(&path))?;
        Ok(meta)
    }

    fn pull_from(
        &self,
        src: &ImageSource,
        tag: &str,
        name: &str,
        progress: &mut Progress,
    ) -> Result<Digest, StoreError> {
        progress.status(&format!("resolving {src}"));
        let (files, resolved): (Box<dyn Files>, Resolved) = match src {
            ImageSource::Registry(r) => {
                let files = crate::auth::AuthFiles::from_env();
                let found = files
                    .lookup(&r.host, &r.repository)
                    .map_err(RegistryError::from)?;
                if let Some(f) = &found {
                    tracing::info!("{}: using the {f}", r.host);
                }
                let mut reg = Registry::new(r).with_credentials(found, files.describe());
                let resolved = reg.resolve(r, tag)?;
                let blobs = self.cache().join("blobs/sha256");
                std::fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;
                let n = resolved.layers.len();
                for (i, l) in resolved.layers.iter().enumerate() {
                    let Some(d) = &l.digest else { continue };
                    let dest = blobs.join(d.hex());
                    if dest.exists() {
                        continue;
                    }
                    let label = format!("downloading layer {}/{n} {}", i + 1, d.short());
                    let total = l.size.unwrap_or(0);
                    reg.download(l, &dest, &mut |done| progress.bytes(&label, done, total))?;
                }
                (Box::new(DirFiles(self.cache())), resolved)
            }
            ImageSource::OciDir(p) => {
                let f = DirFiles(p.clone());
                let r = resolve_oci(&f, tag)?;
                (Box::new(f), r)
            }
            ImageSource::OciArchive(p) => {
                let f = TarFiles::open(p)?;
                let r = resolve_oci(&f, tag)?;
                (Box::new(f), r)
            }
            ImageSource::DockerArchive(p) => {
                let f = TarFiles::open(p)?;
                let r = resolve_docker_archive(&f, tag)?;
                (Box::new(f), r)
            }
        };
        let tmp = self.hidden(name, &format!("pull-{}", std::process::id()));
        std::fs::create_dir(&tmp).map_err(io_at(&tmp))?;
        let result = self.unpack_all(files.as_ref(), &resolved, &tmp, progress);
        if let Err(e) = result {
            progress.clear();
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.install(name, &tmp)?;
        if matches!(src, ImageSource::Registry(_)) {
            let blobs = self.cache().join("blobs/sha256");
            for l in &resolved.layers {
                if let Some(d) = &l.digest {
                    let _ = std::fs::remove_file(blobs.join(d.hex()));
                }
            }
            // Partial downloads of layers this image no longer has.
            for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().ends_with(".partial") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        progress.clear();
        Ok(resolved.manifest_digest)
    }

    fn unpack_all(
        &self,
        files: &dyn Files,
        resolved: &Resolved,
        tmp: &Path,
        progress: &mut Progress,
    ) -> Result<(), StoreError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(io_at(tmp))?;
        let owners = rustix::process::geteuid().is_root();
        let mut u = Unpacker::new(tmp, owners)?;
        let n = resolved.layers.len();
        for (i, l) in resolved.layers.iter().enumerate() {
            let name = format!(
                "layer {}/{n} ({})",
                i + 1,
                l.digest
                    .as_ref()
                    .map_or(l.member.clone(), |d| d.short().to_string())
            );
            progress.status(&format!("unpacking {name}"));
            let (r, _) = files.open(&l.member)?;
            unpack_verified(&mut u, &name, r, l)?;
        }
        ensure_os_release(tmp).map_err(io_at(tmp))?;
        // The tree must be on disk before it becomes visible under its name.
        let fd = File::open(tmp).map_err(io_at(tmp))?;
        rustix::fs::syncfs(&fd).map_err(|e| io_at(tmp)(e.into()))?;
        Ok(())
    }

    /// Rename a finished tree into place, swapping out an old one atomically.
    fn install(&self, name: &str, tmp: &Path) -> Result<(), StoreError> {
        let dest = self.tree(name);
        let dir = File::open(&self.dir).map_err(io_at(&self.dir))?;
        if self.present(name) {
            rustix::fs::renameat_with(&dir, tmp, &dir, &dest, RenameFlags::EXCHANGE)
                .map_err(|e| io_at(&dest)(e.into()))?;
            // `tmp` now holds the old tree.
            rustix::fs::fsync(&dir).map_err(|e| io_at(&self.dir)(e.into()))?;
            std::fs::remove_dir_all(tmp).map_err(io_at(tmp))?;
        } else {
            rustix::fs::renameat_with(&dir, tmp, &dir, &dest, RenameFlags::NOREPLACE)
                .map_err(|e| io_at(&dest)(e.into()))?;
            rustix::fs::fsync(&dir).map_err(|e| io_at(&self.dir)(e.into()))?;
        }
        Ok(())
    }
}

/// Unpack one layer from its blob, verifying the blob digest/size and the
/// uncompressed diff_id while streaming.
pub fn unpack_verified(
    u: &mut Unpacker,
    name: &str,
    blob: impl Read,
    l: &Layer,
) -> Result<(), StoreError> {
    let verr = |e: io::Error| {
        StoreError::Unpack(UnpackError::Tar {
            layer: name.to_string(),
            source: e,
        })
    };
    let mut outer = HashReader::new(blob);
    let mut buf = BufReader::with_capacity(256 * 1024, &mut outer);
    let compression = match l.compression {
        Some(c) => c,
        None => {
            let head = buf.fill_buf().map_err(verr)?;
            if head.starts_with(&[0x1f, 0x8b]) {
                Compression::Gzip
            } else if head.starts_with(&crate::zstd::MAGIC) {
                Compression::Zstd
            } else {
                Compression::None
            }
        }
    };
    let diff = match compression {
        Compression::Gzip => {
            let mut inner = HashReader::new(flate2::bufread::MultiGzDecoder::new(&mut buf));
            u.unpack_layer(name, &mut inner)?;
            inner.finish().map_err(verr)?.0
        }
        Compression::Zstd => {
            let mut inner = HashReader::new(crate::zstd::Decoder::new(&mut buf));
            u.unpack_layer(name, &mut inner)?;
            inner.finish().map_err(verr)?.0
        }
        Compression::None => {
            let mut inner = HashReader::new(&mut buf);
            u.unpack_layer(name, &mut inner)?;
            inner.finish().map_err(verr)?.0
        }
    };
    io::copy(&mut buf, &mut io::sink()).map_err(verr)?;
    drop(buf);
    let (blob_digest, count) = outer.finish().map_err(verr)?;
    if let Some(s) = l.size {
        if s != count {
            return Err(crate::oci::OciError::Size {
                what: name.to_string(),
                expected: s,
                actual: count,
            }
            .into());
        }
    }
    if let Some(d) = &l.digest {
        if *d != blob_digest {
            return Err(crate::oci::OciError::Digest {
                what: name.to_string(),
                expected: d.clone(),
                actual: blob_digest,
            }
            .into());
        }
    }
    if let Some(d) = &l.diff_id {
        if *d != diff {
            return Err(crate::oci::OciError::Digest {
                what: format!("{name} uncompressed"),
                expected: d.clone(),
                actual: diff,
            }
            .into());
        }
    }
    Ok(())
}

/// systemd-nspawn refuses a tree without an os-release; like CoreOS's
/// toolbox, create an empty `/etc/os-release` when the image has none.
fn ensure_os_release(root: &Path) -> io::Result<()> {
    let has = |p: &str| root.join(p).symlink_metadata().is_ok();
    if has("etc/os-release") || has("usr/lib/os-release") {
        return Ok(());
    }
    let etc = root.join("etc");
    match etc.symlink_metadata() {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(()),
        Err(_) => std::fs::create_dir(&etc)?,
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc_nofollow())
        .open(etc.join("os-release"))?;
    Ok(())
}

fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::unpack::tests::{layer, E};

    #[test]
    fn verified_unpack_rejects_wrong_digests() {
        let t = tempfile::tempdir().unwrap();
        let tar = layer(&[E::File("a", b"1", 0o644)]);
        let good = Layer {
            member: "x".into(),
            digest: Some(Digest::of(&tar)),
            size: Some(tar.len() as u64),
            diff_id: Some(Digest::of(&tar)),
            compression: Some(Compression::None),
        };
        let mut u = Unpacker::new(t.path(), false).unwrap();
        unpack_verified(&mut u, "layer 1/1", &tar[..], &good).unwrap();
        let bad = Layer {
            digest: Some(Digest::of(b"other")),
            ..good.clone()
        };
        let err = unpack_verified(&mut u, "layer 1/1", &tar[..], &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "layer 1/1: digest mismatch: expected {}, got {}",
                Digest::of(b"other"),
                Digest::of(&tar)
            )
        );
        let bad = Layer {
            diff_id: Some(Digest::of(b"other")),
            ..good.clone()
        };
        let err = unpack_verified(&mut u, "layer 1/1", &tar[..], &bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("layer 1/1 uncompressed: digest mismatch"),
            "{err}"
        );
    }

    #[test]
    fn gzip_is_sniffed_for_docker_archives() {
        let t = tempfile::tempdir().unwrap();
        let tar = layer(&[E::File("a", b"1", 0o644)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let l = Layer {
            member: "x".into(),
            digest: None,
            size: None,
            diff_id: Some(Digest::of(&tar)),
            compression: None,
        };
        let mut u = Unpacker::new(t.path(), false).unwrap();
        unpack_verified(&mut u, "l", &gz[..], &l).unwrap();
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"1");
    }

    #[test]
    fn zstd_layers_verify_and_are_sniffed() {
        let tar = layer(&[E::File("a", b"1", 0o644), E::File("b", b"22", 0o600)]);
        let z = ruzstd::encoding::compress_to_vec(
            &tar[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for compression in [Some(Compression::Zstd), None] {
            let t = tempfile::tempdir().unwrap();
            let l = Layer {
                member: "x".into(),
                digest: Some(Digest::of(&z)),
                size: Some(z.len() as u64),
                diff_id: Some(Digest::of(&tar)),
                compression,
            };
            let mut u = Unpacker::new(t.path(), false).unwrap();
            unpack_verified(&mut u, "l", &z[..], &l).unwrap();
            assert_eq!(std::fs::read(t.path().join("b")).unwrap(), b"22");
            // The same checks as gzip: uncompressed digest, blob size.
            let t = tempfile::tempdir().unwrap();
            let mut u = Unpacker::new(t.path(), false).unwrap();
            let bad = Layer {
                diff_id: Some(Digest::of(b"x")),
                ..l.clone()
            };
            let e = unpack_verified(&mut u, "l", &z[..], &bad).unwrap_err();
            assert!(
                e.to_string().starts_with("l uncompressed: digest mismatch"),
                "{e}"
            );
            let bad = Layer {
                size: Some(1),
                ..l.clone()
            };
            assert!(unpack_verified(&mut u, "l", &z[..], &bad).is_err());
        }
    }

    #[test]
    fn store_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(&t.path().join("var/lib/toolbox"));
        drop(s.lock("x", LockMode::Exclusive, false).unwrap());
        let mode = std::fs::metadata(&s.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn list_and_remove() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        assert!(s.list().unwrap().is_empty());
        std::fs::create_dir_all(t.path().join("tb/etc")).unwrap();
        let held = s.lock("tb", LockMode::Shared, false).unwrap();
        let l = s.list().unwrap();
        assert_eq!((l.len(), l[0].name.as_str(), l[0].in_use), (1, "tb", true));
        assert_eq!(
            s.remove("tb").unwrap_err().to_string(),
            "toolbox tb is in use by a running session; exit it first"
        );
        drop(held);
        s.remove("tb").unwrap();
        assert!(!s.present("tb"));
        assert!(matches!(s.remove("tb"), Err(StoreError::NotFound { .. })));
    }
}

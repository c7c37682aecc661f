//! Reading images from local sources (OCI layout directory, OCI archive,
//! docker archive) and resolving any source to a verified list of layers.
//!
//! Archives are plain tars: toolbox indexes the tar once (name → offset,
//! size) and then reads each blob by seeking into the file, so a multi-GiB
//! archive is never copied or unpacked to disk first.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::oci::{self, Compression, Document, OciError};
use crate::reference::Digest;

/// Errors reading a local source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// I/O on a file of the source.
    #[error("{path}: {source}")]
    Io {
        /// File (and member, for archives).
        path: String,
        /// Underlying error.
        source: io::Error,
    },
    /// A member is missing.
    #[error("{archive}: no {member} in the image")]
    Missing {
        /// Archive or directory.
        archive: String,
        /// Member name.
        member: String,
    },
    /// Bad document.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// docker-archive `manifest.json` problems.
    #[error("{archive}: manifest.json: {msg}")]
    DockerManifest {
        /// Archive.
        archive: String,
        /// What is wrong.
        msg: String,
    },
    /// Registry error.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// Something that holds named files: a directory or an indexed tar.
pub trait Files {
    /// Display name.
    fn name(&self) -> String;
    /// Open a member; returns the reader and its size.
    fn open(&self, member: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError>;
}

/// An OCI layout directory (or an unpacked docker archive).
#[derive(Debug)]
pub struct DirFiles(pub PathBuf);

impl Files for DirFiles {
    fn name(&self) -> String {
        self.0.display().to_string()
    }
    fn open(&self, member: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        if member.split('/').any(|c| c == "..") || member.starts_with('/') {
            return Err(SourceError::Missing {
                archive: self.name(),
                member: member.to_string(),
            });
        }
        let p = self.0.join(member);
        let f = File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SourceError::Missing {
                    archive: self.name(),
                    member: member.to_string(),
                }
            } else {
                SourceError::Io {
                    path: p.display().to_string(),
                    source: e,
                }
            }
        })?;
        let len = f
            .metadata()
            .map_err(|e| SourceError::Io {
                path: p.display().to_string(),
                source: e,
            })?
            .len();
        Ok((Box::new(f), len))
    }
}

/// A tar archive indexed by member name.
#[derive(Debug)]
pub struct TarFiles {
    path: PathBuf,
    members: HashMap<String, (u64, u64)>,
}

fn norm_member(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl TarFiles {
    /// Index the archive's regular files.
    pub fn open(path: &Path) -> Result<TarFiles, SourceError> {
        let io_err = |e: io::Error| SourceError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let mut f = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 2];
        if f.read(&mut magic).map_err(io_err)? == 2 && magic == [0x1f, 0x8b] {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidData,
                "compressed archives are not supported; decompress it first (skopeo writes plain tar)",
            )));
        }
        f.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut members = HashMap::new();
        let mut ar = tar::Archive::new(io::BufReader::new(f));
        for e in ar.entries().map_err(io_err)? {
            let e = e.map_err(io_err)?;
            if !matches!(
                e.header().entry_type(),
                tar::EntryType::Regular | tar::EntryType::Continuous
            ) {
                continue;
            }
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            members.insert(norm_member(&name), (e.raw_file_position(), e.size()));
        }
        Ok(TarFiles {
            path: path.to_path_buf(),
            members,
        })
    }
}

impl Files for TarFiles {
    fn name(&self) -> String {
        self.path.display().to_string()
    }
    fn open(&self, member: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        let Some(&(off, size)) = self.members.get(&norm_member(member)) else {
            return Err(SourceError::Missing {
                archive: self.name(),
                member: member.to_string(),
            });
        };
        let io_err = |e: io::Error| SourceError::Io {
            path: format!("{}:{member}", self.path.display()),
            source: e,
        };
        let mut f = File::open(&self.path).map_err(io_err)?;
        f.seek(SeekFrom::Start(off)).map_err(io_err)?;
        Ok((Box::new(f.take(size)), size))
    }
}

/// Read a small document fully (bounded).
pub fn read_document(files: &dyn Files, member: &str) -> Result<Vec<u8>, SourceError> {
    let (r, size) = files.open(member)?;
    if size > oci::MAX_DOCUMENT {
        return Err(SourceError::Io {
            path: format!("{}:{member}", files.name()),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{size} bytes is too large for a manifest or config"),
            ),
        });
    }
    let mut v = Vec::new();
    r.take(oci::MAX_DOCUMENT)
        .read_to_end(&mut v)
        .map_err(|e| SourceError::Io {
            path: format!("{}:{member}", files.name()),
            source: e,
        })?;
    Ok(v)
}

/// One layer to fetch and unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Where to read it: blob digest path or archive member.
    pub member: String,
    /// Compressed blob digest to verify, when the source is content-addressed.
    pub digest: Option<Digest>,
    /// Size from the descriptor.
    pub size: Option<u64>,
    /// Uncompressed digest from the config's `rootfs.diff_ids`.
    pub diff_id: Option<Digest>,
    /// From the media type; `None` means sniff (docker archives).
    pub compression: Option<Compression>,
}

/// An image resolved to verified documents and its layers.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The manifest's digest (identifies what was pulled).
    pub manifest_digest: Digest,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
}

/// The path of a blob in an OCI layout.
pub fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Turn a verified manifest and config into layers.
pub fn layers_from(
    what: &str,
    manifest: &oci::Manifest,
    config_bytes: &[u8],
) -> Result<Vec<Layer>, SourceError> {
    let cfg_what = format!("{what} config {}", manifest.config.digest.short());
    oci::verify(
        &cfg_what,
        config_bytes,
        &manifest.config.digest,
        Some(manifest.config.size),
    )?;
    let config = oci::parse_config(&cfg_what, config_bytes)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(OciError::LayerCount {
            what: cfg_what,
            diff_ids: config.rootfs.diff_ids.len(),
            layers: manifest.layers.len(),
        }
        .into());
    }
    if config.os.as_deref().is_some_and(|o| o != "linux")
        || config.architecture.as_deref().is_some_and(|a| a != "amd64")
    {
        tracing::warn!(
            "{what}: image is for {}/{}, this host is linux/amd64",
            config.os.as_deref().unwrap_or("?"),
            config.architecture.as_deref().unwrap_or("?")
        );
    }
    manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(d, diff)| {
            Ok(Layer {
                member: blob_member(&d.digest),
                digest: Some(d.digest.clone()),
                size: Some(d.size),
                diff_id: Some(diff.clone()),
                compression: Some(oci::layer_compression(
                    &format!("{what} layer {}", d.digest.short()),
                    &d.media_type,
                )?),
            })
        })
        .collect()
}

/// Resolve an OCI layout (directory or archive): `index.json` → the entry
/// named `tag` (or the only one) → nested index (platform) → manifest.
pub fn resolve_oci(files: &dyn Files, tag: &str) -> Result<Resolved, SourceError> {
    let what = files.name();
    let index_bytes = read_document(files, "index.json")?;
    let Document::Index(index) =
        oci::parse_document(&format!("{what}: index.json"), &index_bytes, None)?
    else {
        return Err(OciError::Unsupported {
            what: format!("{what}: index.json"),
            field: "document",
            value: "image manifest (expected an image index)".into(),
        }
        .into());
    };
    let mut desc = oci::select_ref(&format!("{what}: index.json"), &index, tag)?.clone();
    for _ in 0..4 {
        let doc_what = format!("{what}: manifest {}", desc.digest.short());
        let bytes = read_document(files, &blob_member(&desc.digest))?;
        oci::verify(&doc_what, &bytes, &desc.digest, Some(desc.size))?;
        match oci::parse_document(&doc_what, &bytes, Some(&desc.media_type))? {
            Document::Index(i) => desc = oci::select_platform(&doc_what, &i)?.clone(),
            Document::Manifest(m) => {
                let cfg = read_document(files, &blob_member(&m.config.digest))?;
                return Ok(Resolved {
                    manifest_digest: desc.digest.clone(),
                    layers: layers_from(&what, &m, &cfg)?,
                });
            }
        }
    }
    Err(OciError::Unsupported {
        what,
        field: "index nesting",
        value: "more than 4 levels".into(),
    }
    .into())
}

/// Resolve a `docker save` archive: `manifest.json` lists config and layer
/// members; layers are verified against the config's diff_ids, and the
/// config against its content-addressed name.
pub fn resolve_docker_archive(files: &dyn Files, tag: &str) -> Result<Resolved, SourceError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let what = files.name();
    let bad = |msg: String| SourceError::DockerManifest {
        archive: what.clone(),
        msg,
    };
    let bytes = read_document(files, "manifest.json")?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let entry = match entries.iter().find(|e| {
        e.repo_tags
            .iter()
            .flatten()
            .any(|t| t.rsplit_once(':').is_some_and(|(_, t)| t == tag))
    }) {
        Some(e) => e,
        None if entries.len() == 1 => &entries[0],
        None => {
            return Err(bad(format!(
                "{} images and none tagged {tag:?}",
                entries.len()
            )))
        }
    };
    let cfg = read_document(files, &entry.config)?;
    let cfg_digest = Digest::of(&cfg);
    // Classic archives name the config `<hex>.json`, new ones `blobs/sha256/<hex>`.
    let named = entry
        .config
        .rsplit('/')
        .next()
        .map(|n| n.trim_end_matches(".json").to_string())
        .unwrap_or_default();
    if named.len() == 64 && named != cfg_digest.hex() {
        return Err(OciError::Digest {
            what: format!("{what}: {}", entry.config),
            expected: Digest::parse(&format!("sha256:{named}")).map_err(|e| bad(e.to_string()))?,
            actual: cfg_digest,
        }
        .into());
    }
    let config = oci::parse_config(&format!("{what}: {}", entry.config), &cfg)?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(OciError::LayerCount {
            what: format!("{what}: {}", entry.config),
            diff_ids: config.rootfs.diff_ids.len(),
            layers: entry.layers.len(),
        }
        .into());
    }
    Ok(Resolved {
        manifest_digest: Digest::of(&bytes),
        layers: entry
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(m, d)| Layer {
                member: m.clone(),
                digest: None,
                size: None,
                diff_id: Some(d.clone()),
                compression: None,
            })
            .collect(),
    })
}

/// A reader that hashes what passes through it.
#[derive(Debug)]
pub struct HashReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    /// Wrap a reader.
    pub fn new(inner: R) -> Self {
        use sha2::Digest as _;
        HashReader {
            inner,
            hasher: sha2::Sha256::new(),
            count: 0,
        }
    }

    /// Keep hashing, now from `next` (resuming a download after the bytes
    /// already hashed).
    pub fn chain_to<S: Read>(self, next: S) -> HashReader<S> {
        HashReader {
            inner: next,
            hasher: self.hasher,
            count: self.count,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Read to the end, then return the digest and count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_archive_errors() {
        let t = tempfile::tempdir().unwrap();
        let files = DirFiles(t.path().to_path_buf());
        let name = t.path().display().to_string();
        assert_eq!(
            resolve_docker_archive(&files, "latest")
                .unwrap_err()
                .to_string(),
            format!("{name}: no manifest.json in the image")
        );
        std::fs::write(t.path().join("manifest.json"), b"{").unwrap();
        assert_eq!(
            resolve_docker_archive(&files, "latest")
                .unwrap_err()
                .to_string(),
            format!(
                "{name}: manifest.json: invalid type: map, expected a sequence at line 1 column 0"
            )
        );
        let cfg = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let wrong = "b".repeat(64);
        std::fs::write(t.path().join(format!("{wrong}.json")), cfg).unwrap();
        std::fs::write(
            t.path().join("manifest.json"),
            format!(r#"[{{"Config":"{wrong}.json","RepoTags":["x:latest"],"Layers":[]}}]"#),
        )
        .unwrap();
        assert_eq!(
            resolve_docker_archive(&files, "latest")
                .unwrap_err()
                .to_string(),
            format!(
                "{name}: {wrong}.json: digest mismatch: expected sha256:{wrong}, got {}",
                Digest::of(cfg)
            )
        );
    }

    #[test]
    fn dir_files_refuse_escapes() {
        let t = tempfile::tempdir().unwrap();
        let files = DirFiles(t.path().to_path_buf());
        assert!(matches!(
            files.open("../etc/passwd"),
            Err(SourceError::Missing { .. })
        ));
    }

    #[test]
    fn hash_reader_counts_and_hashes() {
        let r = HashReader::new(&b"hello"[..]);
        let (d, n) = r.finish().unwrap();
        assert_eq!((d, n), (Digest::of(b"hello"), 5));
    }
}

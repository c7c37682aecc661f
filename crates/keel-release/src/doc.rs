//! The two signed documents of a release tree, `channel.json` and
//! `manifest.json`: serde types, parsing with the failing field's path, and
//! validation of what serde cannot check (names, paths, chunk geometry).
//!
//! ```text
//! <base>/<channel>/channel.json           versions of the channel (+ .minisig)
//! <base>/<channel>/<version>/manifest.json one version (+ .minisig)
//! <base>/<channel>/<version>/usr.erofs.zst  artifact files: independent zstd
//!                                           frames, one per chunk, back to back
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::version::Version;

/// The schema version this library reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// `channel.json`.
pub const CHANNEL_FILE: &str = "channel.json";
/// `manifest.json`.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The static installer published with a version (`<channel>/<version>/`)
/// and, for the channel's newest version, in the channel directory.
pub const INSTALLER_FILE: &str = "keel-install";
/// Suffix of a detached minisign signature.
pub const SIG_SUFFIX: &str = ".minisig";
/// Default uncompressed chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Smallest chunk size a manifest may declare (64 KiB).
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
/// Largest chunk size a manifest may declare (64 MiB): bounds what a client
/// holds in memory for one chunk.
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;
/// Largest document a client should read (channel.json or manifest.json).
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    /// Not JSON, or JSON of the wrong shape; `path` is the field (`artifacts.usr.chunks[3].sha256`).
    #[error("{doc}: {path}: {msg}")]
    Json {
        /// Document name.
        doc: &'static str,
        /// Field path (`.` for the document itself).
        path: String,
        /// What serde said.
        msg: String,
    },
    /// A schema version this library does not know.
    #[error("{doc}: schema {found} is not supported (this client reads schema {SCHEMA_VERSION})")]
    UnknownSchema {
        /// Document name.
        doc: &'static str,
        /// The schema found.
        found: u32,
    },
    /// Well-formed JSON whose content is not valid.
    #[error("{doc}: {field}: {msg}")]
    Invalid {
        /// Document name.
        doc: &'static str,
        /// Field path.
        field: String,
        /// What is wrong.
        msg: String,
    },
}

fn invalid(doc: &'static str, field: impl Into<String>, msg: impl Into<String>) -> DocError {
    DocError::Invalid {
        doc,
        field: field.into(),
        msg: msg.into(),
    }
}

/// A SHA-256 digest, lowercase hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Digest of `data`.
    pub fn of(data: &[u8]) -> Sha256 {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(data).into())
    }

    /// Parse 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Sha256> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(Sha256(b))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256::from_hex(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a SHA-256 digest (64 hex digits)"))
        })
    }
}

/// `channel.json`: the versions a channel offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Channel name (`stable`, `beta`, …).
    pub channel: String,
    /// Architecture as `uname -m` says it (`x86_64`).
    pub arch: String,
    /// When this channel.json was written.
    pub issued: Timestamp,
    /// The versions, oldest first (sorted by version; unique).
    pub versions: Vec<ChannelEntry>,
}

/// One version in `channel.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEntry {
    /// The version.
    pub version: Version,
    /// Its manifest, relative to the channel directory (`0.2.0/manifest.json`).
    pub manifest: String,
    /// SHA-256 of that manifest.json's bytes (the manifest is also signed on
    /// its own; this ties the two so a mirror cannot mix them).
    pub manifest_sha256: Sha256,
    /// When the version was issued.
    pub issued: Timestamp,
}

/// `manifest.json`: one version of one channel and architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The version.
    pub version: Version,
    /// Channel name.
    pub channel: String,
    /// Architecture (`x86_64`).
    pub arch: String,
    /// When the version was issued.
    pub issued: Timestamp,
    /// The oldest running version that may update to this one directly;
    /// older hosts must take an intermediate version first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<Version>,
    /// Kernel release of the version's kernel (`uname -r`): the modules in
    /// its `/usr` are for this kernel only.
    pub kernel_release: String,
    /// Uncompressed size of every chunk but each artifact's last one.
    pub chunk_size: u64,
    /// The payloads.
    pub artifacts: Artifacts,
}

/// The payloads of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    /// The USR filesystem image (EROFS), written to the inactive USR slot.
    pub usr: Artifact,
    /// Its dm-verity hash tree (with superblock), written to the slot's verity partition.
    pub usr_verity: VerityArtifact,
    /// The kernel (bzImage), for the slot's ESP directory.
    pub kernel: Artifact,
    /// Keel's initramfs, for the slot's ESP directory.
    pub initramfs: Artifact,
    /// The full disk image, for keel-install (absent in trees made for updates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Artifact>,
}

/// Names of the artifacts, as in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// `usr`
    Usr,
    /// `usr_verity`
    UsrVerity,
    /// `kernel`
    Kernel,
    /// `initramfs`
    Initramfs,
    /// `disk`
    Disk,
}

impl ArtifactKind {
    /// Where the artifact sits in manifest.json (for error messages).
    pub fn json_path(self) -> &'static str {
        match self {
            ArtifactKind::Usr => "artifacts.usr",
            ArtifactKind::UsrVerity => "artifacts.usr_verity.tree",
            ArtifactKind::Kernel => "artifacts.kernel",
            ArtifactKind::Initramfs => "artifacts.initramfs",
            ArtifactKind::Disk => "artifacts.disk",
        }
    }

    /// The JSON key under `artifacts`.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Usr => "usr",
            ArtifactKind::UsrVerity => "usr_verity",
            ArtifactKind::Kernel => "kernel",
            ArtifactKind::Initramfs => "initramfs",
            ArtifactKind::Disk => "disk",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Artifacts {
    /// Every present artifact with its name, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (ArtifactKind, &Artifact)> {
        [
            (ArtifactKind::Usr, Some(&self.usr)),
            (ArtifactKind::UsrVerity, Some(&self.usr_verity.tree)),
            (ArtifactKind::Kernel, Some(&self.kernel)),
            (ArtifactKind::Initramfs, Some(&self.initramfs)),
            (ArtifactKind::Disk, self.disk.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, a)| a.map(|a| (k, a)))
    }

    /// One artifact by name.
    pub fn get(&self, kind: ArtifactKind) -> Option<&Artifact> {
        self.iter().find(|(k, _)| *k == kind).map(|(_, a)| a)
    }
}

/// One payload file, stored as back-to-back zstd frames, one per chunk (so
/// the whole file is also a valid multi-frame `.zst` that `zstd -d` reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// The compressed file, relative to the manifest's directory.
    pub file: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// SHA-256 of the uncompressed content.
    pub sha256: Sha256,
    /// Size of the compressed file.
    pub compressed_size: u64,
    /// The chunks in order; chunk `i` holds uncompressed bytes from `i × chunk_size`.
    pub chunks: Vec<Chunk>,
}

/// One independently compressed chunk of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Offset of the zstd frame in the compressed file (HTTP `Range` start).
    pub offset: u64,
    /// Length of the zstd frame in bytes.
    pub length: u64,
    /// SHA-256 of the compressed frame: checked before decompressing.
    pub compressed_sha256: Sha256,
    /// Uncompressed length: the decompressor's hard limit.
    pub size: u64,
    /// SHA-256 of the uncompressed bytes.
    pub sha256: Sha256,
}

impl Chunk {
    /// The HTTP `Range` header value for this chunk (`bytes=START-END`, inclusive).
    pub fn http_range(&self) -> String {
        format!(
            "bytes={}-{}",
            self.offset,
            self.offset + self.length.saturating_sub(1)
        )
    }
}

/// The verity hash tree artifact and what a client needs to check a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerityArtifact {
    /// The hash tree file (as `veritysetup format` writes it, superblock first).
    pub tree: Artifact,
    /// The dm-verity root hash of `usr` (what the kernel command line carries).
    pub root_hash: Sha256,
    /// Hash algorithm (`sha256`).
    pub hash_algorithm: String,
    /// Salt, hex (may be empty).
    pub salt: String,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Number of data blocks covered (`usr.size / data_block_size`).
    pub data_blocks: u64,
}

impl VerityArtifact {
    /// Where the top-level hash block sits in the tree file: right after
    /// the superblock, which takes one hash block (cryptsetup writes the
    /// levels top first).
    pub fn top_block_range(&self) -> std::ops::Range<u64> {
        let bs = u64::from(self.hash_block_size);
        bs..2 * bs
    }

    /// The root hash of a tree whose top-level block is `top_block`
    /// (format 1: SHA-256 of salt ‖ block); compare with [`Self::root_hash`].
    pub fn root_of(&self, top_block: &[u8]) -> Sha256 {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(hex::decode(&self.salt).unwrap_or_default());
        h.update(top_block);
        Sha256(h.finalize().into())
    }
}

/// Parse JSON, naming the failing field.
fn from_json<'a, T: Deserialize<'a>>(doc: &'static str, bytes: &'a [u8]) -> Result<T, DocError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(invalid(
            doc,
            ".",
            format!(
                "{} bytes, more than the {MAX_DOCUMENT_BYTES} allowed",
                bytes.len()
            ),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        DocError::Json {
            doc,
            path,
            msg: e.into_inner().to_string(),
        }
    })?;
    Ok(v)
}

/// Look at `schema` before the full parse, so a newer document says
/// "unknown schema" instead of failing on a field it added.
fn check_schema(doc: &'static str, bytes: &[u8]) -> Result<(), DocError> {
    #[derive(Deserialize)]
    struct Probe {
        schema: Option<u32>,
    }
    if let Ok(Probe {
        schema: Some(found),
    }) = serde_json::from_slice::<Probe>(bytes)
    {
        if found != SCHEMA_VERSION {
            return Err(DocError::UnknownSchema { doc, found });
        }
    }
    Ok(())
}

/// A channel or architecture name: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        })
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// A relative path inside the tree: `/`-separated components of
/// `[A-Za-z0-9._-]`, none empty, `.` or `..`, at most 255 bytes. Clients
/// join it to a base URL or directory, so it must not climb out of it.
pub fn valid_rel_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        })
}

impl Channel {
    /// Parse and validate `channel.json`.
    pub fn parse(bytes: &[u8]) -> Result<Channel, DocError> {
        check_schema(CHANNEL_FILE, bytes)?;
        let c: Channel = from_json(CHANNEL_FILE, bytes)?;
        c.validate()?;
        Ok(c)
    }

    /// Check what serde cannot: names, paths, order.
    pub fn validate(&self) -> Result<(), DocError> {
        let d = CHANNEL_FILE;
        if self.schema != SCHEMA_VERSION {
            return Err(DocError::UnknownSchema {
                doc: d,
                found: self.schema,
            });
        }
        if !valid_name(&self.channel) {
            return Err(invalid(
                d,
                "channel",
                format!("{:?} is not a valid channel name", self.channel),
            ));
        }
        if !valid_name(&self.arch) {
            return Err(invalid(
                d,
                "arch",
                format!("{:?} is not a valid architecture", self.arch),
            ));
        }
        for (i, e) in self.versions.iter().enumerate() {
            if !valid_rel_path(&e.manifest) {
                return Err(invalid(
                    d,
                    format!("versions[{i}].manifest"),
                    format!("{:?} is not a relative path inside the tree", e.manifest),
                ));
            }
            if i > 0 && self.versions[i - 1].version >= e.version {
                return Err(invalid(
                    d,
                    format!("versions[{i}].version"),
                    format!(
                        "{} does not come after {} (versions are sorted, oldest first, each once)",
                        e.version,
                        self.versions[i - 1].version
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The newest version, if any.
    pub fn latest(&self) -> Option<&ChannelEntry> {
        self.versions.last()
    }

    /// A version by number.
    pub fn find(&self, v: &Version) -> Option<&ChannelEntry> {
        self.versions.iter().find(|e| &e.version == v)
    }

    /// Add a version or replace the entry of the same version, keeping the
    /// list sorted (how a producer merges a new build into an existing tree).
    pub fn upsert(&mut self, entry: ChannelEntry) {
        match self
            .versions
            .binary_search_by(|e| e.version.cmp(&entry.version))
        {
            Ok(i) => self.versions[i] = entry,
            Err(i) => self.versions.insert(i, entry),
        }
    }

    /// Serialized form (pretty JSON with a final newline): what gets signed.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs to a Vec cannot fail: no maps with
    // non-string keys, no custom serializers that error.
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

impl Manifest {
    /// Parse and validate `manifest.json`.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, DocError> {
        check_schema(MANIFEST_FILE, bytes)?;
        let m: Manifest = from_json(MANIFEST_FILE, bytes)?;
        m.validate()?;
        Ok(m)
    }

    /// Serialized form (pretty JSON with a final newline): what gets signed.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Check what serde cannot: names, paths, chunk geometry, verity
    /// parameters.
    pub fn validate(&self) -> Result<(), DocError> {
        let d = MANIFEST_FILE;
        if self.schema != SCHEMA_VERSION {
            return Err(DocError::UnknownSchema {
                doc: d,
                found: self.schema,
            });
        }
        if !valid_name(&self.channel) {
            return Err(invalid(
                d,
                "channel",
                format!("{:?} is not a valid channel name", self.channel),
            ));
        }
        if !valid_name(&self.arch) {
            return Err(invalid(
                d,
                "arch",
                format!("{:?} is not a valid architecture", self.arch),
            ));
        }
        if let Some(min) = &self.min_version {
            if min > &self.version {
                return Err(invalid(
                    d,
                    "min_version",
                    format!("{min} is newer than the version itself ({})", self.version),
                ));
            }
        }
        if self.kernel_release.is_empty()
            || self.kernel_release.len() > 64
            || !self.kernel_release.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(
                d,
                "kernel_release",
                format!("{:?} is not a kernel release", self.kernel_release),
            ));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(invalid(
                d,
                "chunk_size",
                format!(
                    "{} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                    self.chunk_size
                ),
            ));
        }
        let mut files: Vec<&str> = Vec::new();
        for (kind, a) in self.artifacts.iter() {
            validate_artifact(d, kind.json_path(), a, self.chunk_size)?;
            if files.contains(&a.file.as_str()) {
                return Err(invalid(
                    d,
                    format!("{}.file", kind.json_path()),
                    format!("{:?} is used by another artifact", a.file),
                ));
            }
            files.push(&a.file);
        }
        let v = &self.artifacts.usr_verity;
        let f = "artifacts.usr_verity";
        if v.hash_algorithm != "sha256" {
            return Err(invalid(
                d,
                format!("{f}.hash_algorithm"),
                format!("{:?} is not supported (sha256)", v.hash_algorithm),
            ));
        }
        if v.salt.len() > 512 || hex::decode(&v.salt).is_err() {
            return Err(invalid(
                d,
                format!("{f}.salt"),
                "not hex, or longer than 256 bytes",
            ));
        }
        for (name, bs) in [
            ("data_block_size", v.data_block_size),
            ("hash_block_size", v.hash_block_size),
        ] {
            if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
                return Err(invalid(
                    d,
                    format!("{f}.{name}"),
                    format!("{bs} is not a power of two in 512..=65536"),
                ));
            }
        }
        let usr = self.artifacts.usr.size;
        if v.data_blocks.checked_mul(u64::from(v.data_block_size)) != Some(usr) {
            return Err(invalid(
                d,
                format!("{f}.data_blocks"),
                format!(
                    "{} blocks of {} bytes do not cover artifacts.usr ({usr} bytes)",
                    v.data_blocks, v.data_block_size
                ),
            ));
        }
        Ok(())
    }

    /// Uncompressed offset of chunk `index` of any artifact.
    pub fn chunk_position(&self, index: usize) -> u64 {
        index as u64 * self.chunk_size
    }

    /// The manifest's path in the tree relative to the channel directory.
    pub fn rel_path(&self) -> String {
        format!("{}/{MANIFEST_FILE}", self.version)
    }
}

fn validate_artifact(
    d: &'static str,
    f: &str,
    a: &Artifact,
    chunk_size: u64,
) -> Result<(), DocError> {
    if !valid_rel_path(&a.file) {
        return Err(invalid(
            d,
            format!("{f}.file"),
            format!("{:?} is not a relative path inside the tree", a.file),
        ));
    }
    let n = a.chunks.len() as u64;
    let want_chunks = a.size.div_ceil(chunk_size);
    if n != want_chunks {
        return Err(invalid(
            d,
            format!("{f}.chunks"),
            format!(
                "{n} chunks, but {} bytes in chunks of {chunk_size} need {want_chunks}",
                a.size
            ),
        ));
    }
    let (mut off, mut total) = (0u64, 0u64);
    for (i, c) in a.chunks.iter().enumerate() {
        let cf = format!("{f}.chunks[{i}]");
        if c.offset != off {
            return Err(invalid(
                d,
                format!("{cf}.offset"),
                format!("{} but the previous chunk ends at {off}", c.offset),
            ));
        }
        if c.length == 0 {
            return Err(invalid(d, format!("{cf}.length"), "empty chunk"));
        }
        let last = i + 1 == a.chunks.len();
        let want = if last { a.size - total } else { chunk_size };
        if c.size != want {
            return Err(invalid(
                d,
                format!("{cf}.size"),
                format!("{} but must be {want}", c.size),
            ));
        }
        off = off
            .checked_add(c.length)
            .ok_or_else(|| invalid(d, format!("{cf}.length"), "offset overflows"))?;
        total += c.size;
    }
    if off != a.compressed_size {
        return Err(invalid(
            d,
            format!("{f}.compressed_size"),
            format!("{} but the chunks end at {off}", a.compressed_size),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn artifact(file: &str, size: u64, chunk_size: u64) -> Artifact {
        let mut chunks = Vec::new();
        let (mut off, mut left) = (0, size);
        while left > 0 {
            let s = left.min(chunk_size);
            chunks.push(Chunk {
                offset: off,
                length: 100,
                compressed_sha256: Sha256([1; 32]),
                size: s,
                sha256: Sha256([2; 32]),
            });
            off += 100;
            left -= s;
        }
        Artifact {
            file: file.into(),
            size,
            sha256: Sha256([3; 32]),
            compressed_size: off,
            chunks,
        }
    }

    pub(crate) fn manifest(version: &str) -> Manifest {
        let cs = MIN_CHUNK_SIZE;
        Manifest {
            schema: 1,
            version: Version::parse(version).unwrap(),
            channel: "stable".into(),
            arch: "x86_64".into(),
            issued: Timestamp(1_796_169_600),
            min_version: None,
            kernel_release: "6.1.0-28-amd64".into(),
            chunk_size: cs,
            artifacts: Artifacts {
                usr: artifact("usr.erofs.zst", 4096 * 40, cs),
                usr_verity: VerityArtifact {
                    tree: artifact("usr.verity.zst", 8192, cs),
                    root_hash: Sha256([9; 32]),
                    hash_algorithm: "sha256".into(),
                    salt: "ab".repeat(32),
                    data_block_size: 4096,
                    hash_block_size: 4096,
                    data_blocks: 40,
                },
                kernel: artifact("vmlinuz.zst", 1000, cs),
                initramfs: artifact("initramfs.img.zst", cs * 2, cs),
                disk: None,
            },
        }
    }

    fn json_mutated(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value =
            serde_json::from_slice(&manifest("1.0.0").to_json()).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn manifest_roundtrips() {
        let m = manifest("1.2.3");
        let j = m.to_json();
        assert_eq!(Manifest::parse(&j).unwrap(), m);
        let s = String::from_utf8(j).unwrap();
        assert!(s.contains("\"issued\": \"2026-12-02T00:00:00Z\""), "{s}");
        assert!(s.contains("\"root_hash\": \"0909"), "{s}");
    }

    #[test]
    fn bad_json_names_the_field() {
        let j = json_mutated(|v| v["artifacts"]["usr"]["chunks"][1]["sha256"] = "xyz".into());
        let e = Manifest::parse(&j).unwrap_err().to_string();
        assert!(
            e.starts_with("manifest.json: artifacts.usr.chunks[1].sha256: "),
            "{e}"
        );
        assert!(e.contains("not a SHA-256"), "{e}");

        let j = json_mutated(|v| v["version"] = "1.0-beta".into());
        let e = Manifest::parse(&j).unwrap_err().to_string();
        assert!(e.starts_with("manifest.json: version: "), "{e}");

        let j = json_mutated(|v| v["artifacts"]["kernel"]["colour"] = "red".into());
        let e = Manifest::parse(&j).unwrap_err().to_string();
        assert!(
            e.contains("artifacts.kernel") && e.contains("colour"),
            "{e}"
        );

        let e = Manifest::parse(b"{\"schema\": 1, ")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("manifest.json: "), "{e}");
        let e = Channel::parse(b"[]").unwrap_err().to_string();
        assert!(e.starts_with("channel.json: "), "{e}");
    }

    #[test]
    fn unknown_schema_is_named() {
        let j = json_mutated(|v| {
            v["schema"] = 2.into();
            v["something_new"] = true.into();
        });
        assert_eq!(
            Manifest::parse(&j).unwrap_err(),
            DocError::UnknownSchema {
                doc: MANIFEST_FILE,
                found: 2
            }
        );
    }

    #[test]
    fn chunk_geometry_is_checked() {
        let j = json_mutated(|v| v["artifacts"]["usr"]["chunks"][2]["offset"] = 5.into());
        let e = Manifest::parse(&j).unwrap_err().to_string();
        assert!(e.contains("artifacts.usr.chunks[2].offset"), "{e}");

        let j = json_mutated(|v| v["artifacts"]["initramfs"]["chunks"][0]["size"] = 10.into());
        let e = Manifest::parse(&j).unwrap_err().to_string();
        assert!(e.contains("artifacts.initramfs.chunks[0].size"), "{e}");

        let j = json_mutated(|v| {
            v["artifacts"]["kernel"]["chunks"]
                .as_array_mut()
                .unwrap()
                .pop();
        });
        let e = Manifest::parse(&j).unwrap_err().to_string();
        assert!(e.contains("artifacts.kernel.chunks:"), "{e}");

        let j = json_mutated(|v| v["artifacts"]["kernel"]["compressed_size"] = 1.into());
        assert!(Manifest::parse(&j)
            .unwrap_err()
            .to_string()
            .contains("compressed_size"));

        let j = json_mutated(|v| v["artifacts"]["kernel"]["file"] = "../../etc/passwd".into());
        assert!(Manifest::parse(&j)
            .unwrap_err()
            .to_string()
            .contains("artifacts.kernel.file"));

        let j = json_mutated(|v| v["artifacts"]["usr_verity"]["data_blocks"] = 39.into());
        assert!(Manifest::parse(&j)
            .unwrap_err()
            .to_string()
            .contains("data_blocks"));

        let j = json_mutated(|v| v["min_version"] = "2.0".into());
        assert!(Manifest::parse(&j)
            .unwrap_err()
            .to_string()
            .contains("min_version"));

        let j = json_mutated(|v| v["chunk_size"] = 1.into());
        assert!(Manifest::parse(&j)
            .unwrap_err()
            .to_string()
            .contains("chunk_size"));
    }

    #[test]
    fn channel_sorted_and_upsert() {
        let e = |v: &str| ChannelEntry {
            version: Version::parse(v).unwrap(),
            manifest: format!("{v}/manifest.json"),
            manifest_sha256: Sha256([0; 32]),
            issued: Timestamp(0),
        };
        let mut c = Channel {
            schema: 1,
            channel: "stable".into(),
            arch: "x86_64".into(),
            issued: Timestamp(0),
            versions: vec![],
        };
        c.upsert(e("0.10.0"));
        c.upsert(e("0.2.0"));
        c.upsert(e("0.9.0"));
        c.upsert(e("0.2.0"));
        let vs: Vec<_> = c.versions.iter().map(|e| e.version.to_string()).collect();
        assert_eq!(vs, ["0.2.0", "0.9.0", "0.10.0"]);
        assert_eq!(Channel::parse(&c.to_json()).unwrap(), c);
        assert_eq!(c.latest().unwrap().version.to_string(), "0.10.0");

        c.versions.swap(0, 1);
        let e = Channel::parse(&c.to_json()).unwrap_err().to_string();
        assert!(e.contains("versions[1].version"), "{e}");
        c.versions.swap(0, 1);
        c.versions[0].manifest = "/abs/manifest.json".into();
        assert!(Channel::parse(&c.to_json())
            .unwrap_err()
            .to_string()
            .contains("versions[0].manifest"));
    }

    #[test]
    fn names_and_paths() {
        assert!(
            valid_name("stable")
                && valid_name("x86_64")
                && !valid_name("Stable")
                && !valid_name("-x")
                && !valid_name("")
        );
        assert!(
            valid_rel_path("0.2.0/manifest.json")
                && !valid_rel_path("a//b")
                && !valid_rel_path("a/../b")
                && !valid_rel_path("/a")
        );
    }
}

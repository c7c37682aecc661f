//! keel-release: the release contract between `keel-image release` (the
//! producer), `keel-update` (the agent) and `keel-install`.
//!
//! It owns the static release tree's formats and their checks:
//! - [`doc`]: `channel.json` and `manifest.json` (serde types, parsing that
//!   names the failing field, validation of names, paths and chunk geometry);
//! - [`sign`]: minisign/Ed25519 detached signatures (`*.minisig`) checked
//!   with `minisign-verify` against several trusted keys, the trusted
//!   comment binding a signature to document kind, channel, arch, version;
//! - [`chunk`]: verifying and decoding one chunk (compressed hash → bounded
//!   pure-Rust zstd decode → hash), and a whole artifact as a stream;
//! - [`esp`]: the EFI system partition layout (per-slot kernel, initramfs
//!   and loader entry with boot counting), shared by keel-image and the agent;
//! - [`version`], [`time`], [`policy`]: versions, issue times, downgrade and
//!   `min_version` decisions;
//! - [`write`] (feature `write`, host only): chunking + libzstd compression
//!   and minisign signing.
//!
//! Reads no files but the trusted key directory handed to
//! [`TrustedKeys::load_dir`] (the image ships [`sign::KEYS_DIR`]).

pub mod chunk;
pub mod doc;
pub mod esp;
pub mod policy;
pub mod sign;
pub mod time;
pub mod version;
#[cfg(feature = "write")]
pub mod write;

pub use chunk::{
    decode_chunk, decode_chunk_into, decode_stream, verify_compressed, verify_uncompressed,
    ChunkError, StreamError,
};
pub use doc::{
    Artifact, ArtifactKind, Artifacts, Channel, ChannelEntry, Chunk, DocError, Manifest, Sha256,
    VerityArtifact, CHANNEL_FILE, DEFAULT_CHUNK_SIZE, INSTALLER_FILE, MANIFEST_FILE,
    SCHEMA_VERSION, SIG_SUFFIX,
};
pub use policy::{
    check_downgrade, check_min_version, check_update, direction, Direction, PolicyError,
};
pub use sign::{
    verify_channel, verify_installer, verify_manifest, DocKind, Expect, SignError, SignedFor,
    TrustedKeys, VerifyError,
};
pub use time::Timestamp;
pub use version::{Version, VersionError};

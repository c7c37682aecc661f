//! Reading chunks: compressed bytes → SHA-256 of the compressed frame →
//! zstd decoding (pure Rust, `ruzstd`) with a hard limit at the declared
//! size → SHA-256 of the result. Nothing is decompressed before the
//! compressed hash matched, and nothing longer than the manifest says is
//! ever produced (no decompression bombs), so a client can check every
//! chunk before it touches the disk.

use std::io::Read;

use sha2::Digest;

use crate::doc::{Artifact, Chunk, Sha256};

/// Why a chunk was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// Fewer or more compressed bytes than the manifest says (a truncated download).
    #[error("{artifact} chunk {index}: {got} compressed bytes, the manifest says {want}")]
    CompressedLength {
        /// Artifact name.
        artifact: String,
        /// Chunk index.
        index: usize,
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        want: u64,
    },
    /// The compressed bytes are not the signed ones.
    #[error("{artifact} chunk {index}: compressed SHA-256 is {got}, the manifest says {want}")]
    CompressedHash {
        /// Artifact name.
        artifact: String,
        /// Chunk index.
        index: usize,
        /// Computed.
        got: Sha256,
        /// Expected.
        want: Sha256,
    },
    /// zstd refused the frame.
    #[error("{artifact} chunk {index}: zstd: {msg}")]
    Decode {
        /// Artifact name.
        artifact: String,
        /// Chunk index.
        index: usize,
        /// Decoder message.
        msg: String,
    },
    /// The frame decodes to another length than declared (more is cut off at the limit).
    #[error("{artifact} chunk {index}: decompresses to {got} bytes, the manifest says {want}")]
    Size {
        /// Artifact name.
        artifact: String,
        /// Chunk index.
        index: usize,
        /// Bytes produced (at most `want + 1`).
        got: u64,
        /// Bytes declared.
        want: u64,
    },
    /// The uncompressed bytes are not the signed ones.
    #[error("{artifact} chunk {index}: SHA-256 is {got}, the manifest says {want}")]
    Hash {
        /// Artifact name.
        artifact: String,
        /// Chunk index.
        index: usize,
        /// Computed.
        got: Sha256,
        /// Expected.
        want: Sha256,
    },
    /// Whole-artifact checks (streaming decode).
    #[error("{artifact}: {msg}")]
    Artifact {
        /// Artifact name.
        artifact: String,
        /// What is wrong.
        msg: String,
    },
}

/// Check a chunk's compressed bytes (length and SHA-256) without decoding.
pub fn verify_compressed(
    artifact: &str,
    index: usize,
    chunk: &Chunk,
    compressed: &[u8],
) -> Result<(), ChunkError> {
    if compressed.len() as u64 != chunk.length {
        return Err(ChunkError::CompressedLength {
            artifact: artifact.into(),
            index,
            got: compressed.len() as u64,
            want: chunk.length,
        });
    }
    let got = Sha256::of(compressed);
    if got != chunk.compressed_sha256 {
        return Err(ChunkError::CompressedHash {
            artifact: artifact.into(),
            index,
            got,
            want: chunk.compressed_sha256,
        });
    }
    Ok(())
}

/// Check uncompressed bytes against a chunk (for a chunk already present
/// locally, e.g. the same chunk in the running slot).
pub fn verify_uncompressed(
    artifact: &str,
    index: usize,
    chunk: &Chunk,
    data: &[u8],
) -> Result<(), ChunkError> {
    if data.len() as u64 != chunk.size {
        return Err(ChunkError::Size {
            artifact: artifact.into(),
            index,
            got: data.len() as u64,
            want: chunk.size,
        });
    }
    let got = Sha256::of(data);
    if got != chunk.sha256 {
        return Err(ChunkError::Hash {
            artifact: artifact.into(),
            index,
            got,
            want: chunk.sha256,
        });
    }
    Ok(())
}

/// Verify and decode one chunk into `out` (cleared first; reuse it across
/// chunks to keep memory flat). On success `out` holds exactly
/// `chunk.size` verified bytes.
pub fn decode_chunk_into(
    artifact: &str,
    index: usize,
    chunk: &Chunk,
    compressed: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ChunkError> {
    verify_compressed(artifact, index, chunk, compressed)?;
    out.clear();
    let decode_err = |msg: String| ChunkError::Decode {
        artifact: artifact.into(),
        index,
        msg,
    };
    decode_frame(chunk.size, compressed, out).map_err(decode_err)?;
    verify_uncompressed(artifact, index, chunk, out)
}

/// Pure-Rust decoding (the default): `ruzstd`, no C in the agent.
#[cfg(not(feature = "decode-libzstd"))]
fn decode_frame(size: u64, compressed: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    // The window never needs to exceed the frame's content; bound what a
    // frame header may make the decoder allocate.
    let max_window = size.max(1 << 20).saturating_mul(2);
    let mut src = compressed;
    let dec = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(&mut src, max_window)
        .map_err(|e| e.to_string())?;
    // Read at most one byte more than declared: enough to tell "too long"
    // without producing the rest.
    out.reserve(usize::try_from(size).unwrap_or(0));
    dec.take(size.saturating_add(1))
        .read_to_end(out)
        .map_err(|e| e.to_string())?;
    if !src.is_empty() {
        return Err(format!("{} bytes after the zstd frame", src.len()));
    }
    Ok(())
}

/// libzstd decoding (feature `decode-libzstd`, about 5× faster here, C
/// code and a larger binary): one-shot decompression into a buffer of the
/// declared size plus one byte, so a longer frame fails without producing
/// more and no window beyond that buffer is allocated.
#[cfg(feature = "decode-libzstd")]
fn decode_frame(size: u64, compressed: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let cap = usize::try_from(size.saturating_add(1)).map_err(|e| e.to_string())?;
    out.reserve(cap);
    let mut d = zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?;
    d.decompress_to_buffer(compressed, out)
        .map_err(|e| format!("{e} (more than the declared {size} bytes, or not one zstd frame)"))?;
    Ok(())
}

/// Verify and decode one chunk.
pub fn decode_chunk(
    artifact: &str,
    index: usize,
    chunk: &Chunk,
    compressed: &[u8],
) -> Result<Vec<u8>, ChunkError> {
    let mut out = Vec::new();
    decode_chunk_into(artifact, index, chunk, compressed, &mut out)?;
    Ok(out)
}

/// Decode a whole artifact file read sequentially (an offline tree, a
/// bundle, a plain HTTP body), verifying every chunk and the artifact's
/// SHA-256 at the end. `sink(offset, bytes)` receives each verified chunk
/// at its uncompressed offset, before the next one is read. Returns the
/// uncompressed size.
pub fn decode_stream<R: Read, E>(
    artifact: &str,
    a: &Artifact,
    mut input: R,
    mut sink: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<u64, StreamError<E>> {
    let mut whole = sha2::Sha256::new();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut pos = 0u64;
    for (i, c) in a.chunks.iter().enumerate() {
        buf.clear();
        let n = (&mut input)
            .take(c.length)
            .read_to_end(&mut buf)
            .map_err(StreamError::Read)?;
        if (n as u64) < c.length {
            return Err(StreamError::Chunk(ChunkError::CompressedLength {
                artifact: artifact.into(),
                index: i,
                got: n as u64,
                want: c.length,
            }));
        }
        decode_chunk_into(artifact, i, c, &buf, &mut out).map_err(StreamError::Chunk)?;
        whole.update(&out);
        sink(pos, &out).map_err(StreamError::Sink)?;
        pos += out.len() as u64;
    }
    let mut extra = [0u8; 1];
    if input.read(&mut extra).map_err(StreamError::Read)? != 0 {
        return Err(StreamError::Chunk(ChunkError::Artifact {
            artifact: artifact.into(),
            msg: format!(
                "the compressed file is longer than {} bytes",
                a.compressed_size
            ),
        }));
    }
    let got = Sha256(whole.finalize().into());
    if got != a.sha256 || pos != a.size {
        return Err(StreamError::Chunk(ChunkError::Artifact {
            artifact: artifact.into(),
            msg: format!(
                "{pos} bytes with SHA-256 {got}, the manifest says {} bytes with {}",
                a.size, a.sha256
            ),
        }));
    }
    Ok(pos)
}

/// Why [`decode_stream`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError<E> {
    /// Reading the input.
    #[error("reading: {0}")]
    Read(std::io::Error),
    /// A chunk or the whole artifact did not verify.
    #[error(transparent)]
    Chunk(ChunkError),
    /// The sink failed.
    #[error("writing: {0}")]
    Sink(E),
}

//! Where the image comes from, as a stream of verified [`Block`]s in disk
//! order: a signed release tree (HTTP(S) or `file://`; channel.json and
//! manifest.json checked with keel-release, the disk artifact read in one
//! sequential stream, each chunk's compressed SHA-256 checked before it is
//! decoded, the decode bounded at the declared size, the result's SHA-256
//! checked), or a local image file (raw or zstd; not signed, hashed as it
//! is read so the device can be compared afterwards).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use keel_release::{
    verify_channel, verify_compressed, verify_manifest, verify_uncompressed, Artifact, ChunkError,
    Expect, Manifest, Sha256, TrustedKeys, Version,
};

use crate::args::Keys;

/// Largest channel.json / manifest.json read.
const MAX_DOC: usize = keel_release::doc::MAX_DOCUMENT_BYTES;
/// Largest signature file read.
const MAX_SIG: usize = 4096;
/// Block size for image files (the release's chunks bring their own).
pub const FILE_BLOCK: usize = 4 << 20;

/// How a block is checked when the device is read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// All zeros.
    Zero,
    /// This SHA-256.
    Sha256(Sha256),
}

/// Verified bytes for one place of the disk.
#[derive(Debug)]
pub struct Block {
    /// Offset on the device.
    pub offset: u64,
    /// The bytes (shared: every all-zero chunk of a size is one buffer).
    pub data: Arc<Vec<u8>>,
    /// What reading them back must give.
    pub check: Check,
    /// Compressed bytes this block consumed (progress).
    pub compressed: u64,
}

/// Why the image could not be read or verified.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Transfer or file error.
    #[error("{what}: {message}")]
    Fetch {
        /// URL or file.
        what: String,
        /// What happened.
        message: String,
    },
    /// Trusted keys could not be loaded.
    #[error("trusted keys: {0}")]
    Keys(#[from] keel_release::SignError),
    /// A document or its signature was refused.
    #[error("{0}")]
    Verify(#[from] keel_release::VerifyError),
    /// A chunk did not verify.
    #[error("{0}")]
    Chunk(#[from] ChunkError),
    /// Anything else about the release.
    #[error("{0}")]
    Release(String),
}

fn fetch_err(what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Fetch {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// A release tree: small documents whole, the artifact as one stream.
pub trait Tree {
    /// A whole document, at most `max` bytes.
    fn get(&mut self, rel: &str, max: usize) -> Result<Vec<u8>, ImageError>;
    /// The whole file `rel`, which must be `len` bytes, as a stream.
    fn stream(&mut self, rel: &str, len: u64) -> Result<Box<dyn Read + Send>, ImageError>;
    /// For messages.
    fn describe(&self) -> String;
}

/// A tree on a web server.
#[derive(Debug)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    /// A client for `base`: connect 30 s, no byte for 60 s fails, proxies
    /// from the environment (as the update agent).
    pub fn new(base: &str) -> Http {
        let t = Duration::from_secs(60);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(t))
            .timeout_per_read(Some(t))
            .user_agent(concat!("keel-install/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Http {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{}", self.base, rel.trim_start_matches('/'))
    }
}

impl Tree for Http {
    fn get(&mut self, rel: &str, max: usize) -> Result<Vec<u8>, ImageError> {
        let url = self.url(rel);
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| fetch_err(&url, e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(fetch_err(&url, format!("HTTP {status}")));
        }
        let mut out = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| fetch_err(&url, e))?;
        if out.len() > max {
            return Err(fetch_err(&url, format!("more than {max} bytes")));
        }
        Ok(out)
    }

    fn stream(&mut self, rel: &str, len: u64) -> Result<Box<dyn Read + Send>, ImageError> {
        let url = self.url(rel);
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| fetch_err(&url, e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(fetch_err(&url, format!("HTTP {status}")));
        }
        if let Some(n) = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if n != len {
                return Err(fetch_err(
                    &url,
                    format!("{n} bytes, the signed manifest says {len}"),
                ));
            }
        }
        Ok(Box::new(resp.into_body().into_reader()))
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// A tree in a directory (`file://`).
#[derive(Debug)]
pub struct Dir(pub PathBuf);

impl Tree for Dir {
    fn get(&mut self, rel: &str, max: usize) -> Result<Vec<u8>, ImageError> {
        let p = self.0.join(rel);
        let f = File::open(&p).map_err(|e| fetch_err(&p.display().to_string(), e))?;
        let mut out = Vec::new();
        f.take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| fetch_err(&p.display().to_string(), e))?;
        if out.len() > max {
            return Err(fetch_err(
                &p.display().to_string(),
                format!("more than {max} bytes"),
            ));
        }
        Ok(out)
    }

    fn stream(&mut self, rel: &str, len: u64) -> Result<Box<dyn Read + Send>, ImageError> {
        let p = self.0.join(rel);
        let what = p.display().to_string();
        let f = File::open(&p).map_err(|e| fetch_err(&what, e))?;
        let n = f.metadata().map_err(|e| fetch_err(&what, e))?.len();
        if n != len {
            return Err(fetch_err(
                &what,
                format!("{n} bytes, the signed manifest says {len}"),
            ));
        }
        Ok(Box::new(f))
    }

    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// The tree for a base URL.
pub fn tree_for(base: &str) -> Box<dyn Tree> {
    match base.strip_prefix("file://") {
        Some(p) => Box::new(Dir(PathBuf::from(p))),
        None => Box::new(Http::new(base)),
    }
}

/// Load the trusted keys.
pub fn load_keys(k: &Keys) -> Result<TrustedKeys, ImageError> {
    match k {
        Keys::Dir(d) => Ok(TrustedKeys::load_dir(d)?),
        Keys::Files(files) => {
            let mut keys = TrustedKeys::new();
            for f in files {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| fetch_err(&f.display().to_string(), e))?;
                keys.add(&f.display().to_string(), &text)?;
            }
            Ok(keys)
        }
    }
}

/// A verified release and its disk artifact.
#[derive(Debug, Clone)]
pub struct Release {
    /// The manifest.
    pub manifest: Manifest,
    /// `artifacts.disk`.
    pub disk: Artifact,
    /// The artifact's path in the tree.
    pub rel: String,
}

/// Fetch and verify channel.json, choose the version, fetch and verify its
/// manifest (bound to channel, arch, version and the channel's SHA-256).
pub fn resolve(
    tree: &mut dyn Tree,
    keys: &TrustedKeys,
    channel: &str,
    version: Option<&str>,
) -> Result<Release, ImageError> {
    let arch = std::env::consts::ARCH;
    let expect = Expect { channel, arch };
    let crel = format!("{channel}/{}", keel_release::CHANNEL_FILE);
    let data = tree.get(&crel, MAX_DOC)?;
    let sig = tree.get(&format!("{crel}{}", keel_release::SIG_SUFFIX), MAX_SIG)?;
    let ch = verify_channel(keys, &data, &String::from_utf8_lossy(&sig), &expect)?;
    let entry = match version {
        Some(v) => {
            let v = Version::parse(v).map_err(|e| ImageError::Release(e.to_string()))?;
            ch.find(&v).ok_or_else(|| {
                ImageError::Release(format!(
                    "channel {channel} at {} has no version {v} (it has {})",
                    tree.describe(),
                    ch.versions
                        .iter()
                        .map(|e| e.version.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?
        }
        None => ch.latest().ok_or_else(|| {
            ImageError::Release(format!(
                "channel {channel} at {} lists no version",
                tree.describe()
            ))
        })?,
    };
    let mrel = format!("{channel}/{}", entry.manifest);
    let data = tree.get(&mrel, MAX_DOC)?;
    let sig = tree.get(&format!("{mrel}{}", keel_release::SIG_SUFFIX), MAX_SIG)?;
    let manifest = verify_manifest(
        keys,
        &data,
        &String::from_utf8_lossy(&sig),
        &expect,
        Some(entry),
    )?;
    let disk = manifest.artifacts.disk.clone().ok_or_else(|| {
        ImageError::Release(format!(
            "version {} of {channel} has no disk image (artifacts.disk; the tree was written with --no-disk)",
            manifest.version
        ))
    })?;
    let dir = mrel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let rel = format!("{dir}/{}", disk.file);
    Ok(Release {
        manifest,
        disk,
        rel,
    })
}

/// SHA-256 of `n` zero bytes.
fn zero_hash(n: u64) -> Sha256 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let z = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(z.len() as u64) as usize;
        h.update(&z[..k]);
        left -= k as u64;
    }
    Sha256(h.finalize().into())
}

/// All bytes zero (vectorises well).
pub fn is_zero(b: &[u8]) -> bool {
    let mut it = b.chunks_exact(16);
    let body = it.by_ref().all(|c| {
        let mut a = [0u8; 16];
        a.copy_from_slice(c);
        u128::from_ne_bytes(a) == 0
    });
    body && it.remainder().iter().all(|x| *x == 0)
}

/// Verify and decode one chunk. A chunk the manifest declares as zeros
/// (its SHA-256 is that of `size` zero bytes) and that decodes to exactly
/// `size` zero bytes matches by construction, so the second hash is not
/// computed for it (most of a fresh disk image is zeros).
pub fn decode(
    name: &str,
    index: usize,
    chunk: &keel_release::Chunk,
    compressed: &[u8],
    zero: &[(u64, Sha256)],
    out: &mut Vec<u8>,
) -> Result<Check, ChunkError> {
    verify_compressed(name, index, chunk, compressed)?;
    let size = usize::try_from(chunk.size).map_err(|_| ChunkError::Size {
        artifact: name.into(),
        index,
        got: 0,
        want: chunk.size,
    })?;
    // At least one byte of room more than declared, at most a chunk and
    // one byte (the buffer is reused): a longer frame fails or is caught by
    // the size check below, and libzstd allocates no window beyond it.
    out.clear();
    out.reserve(size + 1);
    let mut d = zstd::bulk::Decompressor::new().map_err(|e| ChunkError::Decode {
        artifact: name.into(),
        index,
        msg: e.to_string(),
    })?;
    d.decompress_to_buffer(compressed, out)
        .map_err(|e| ChunkError::Decode {
            artifact: name.into(),
            index,
            msg: format!("{e} (more than the declared {size} bytes, or not one zstd frame)"),
        })?;
    let declared_zero = zero
        .iter()
        .any(|(n, h)| *n == chunk.size && *h == chunk.sha256);
    if declared_zero && out.len() == size && is_zero(out) {
        return Ok(Check::Zero);
    }
    verify_uncompressed(name, index, chunk, out)?;
    Ok(Check::Sha256(chunk.sha256))
}

type Job = Result<(usize, Vec<u8>), ImageError>;
type Done = Result<Block, ImageError>;

/// The release's disk artifact as verified blocks, in order. One thread
/// reads the stream, `workers` threads verify and decode chunks
/// round-robin; the consumer takes them back in order. At most two chunks
/// per worker are in flight.
#[derive(Debug)]
pub struct ReleaseBlocks {
    outs: Vec<Receiver<Done>>,
    next: usize,
    total: usize,
}

impl ReleaseBlocks {
    /// Start reading `input` (the whole compressed artifact).
    pub fn start(
        name: &str,
        a: &Artifact,
        chunk_size: u64,
        input: Box<dyn Read + Send>,
        workers: usize,
    ) -> ReleaseBlocks {
        let workers = workers.max(1);
        let a = Arc::new(a.clone());
        let mut sizes: Vec<u64> = vec![chunk_size];
        if let Some(last) = a.chunks.last() {
            if last.size != chunk_size {
                sizes.push(last.size);
            }
        }
        let zero: Arc<Vec<(u64, Sha256)>> =
            Arc::new(sizes.iter().map(|n| (*n, zero_hash(*n))).collect());
        // One zero buffer per chunk size, shared by every zero chunk: no
        // allocation (and no page faults) for most of a fresh image.
        let zero_bufs: Arc<Vec<(u64, Arc<Vec<u8>>)>> = Arc::new(
            sizes
                .iter()
                .map(|n| (*n, Arc::new(vec![0u8; *n as usize])))
                .collect(),
        );
        let mut ins: Vec<SyncSender<Job>> = Vec::new();
        let mut outs = Vec::new();
        for _ in 0..workers {
            let (in_tx, in_rx) = sync_channel::<Job>(1);
            let (out_tx, out_rx) = sync_channel::<Done>(1);
            ins.push(in_tx);
            outs.push(out_rx);
            let (a, zero, name) = (a.clone(), zero.clone(), name.to_string());
            let zero_bufs = zero_bufs.clone();
            std::thread::spawn(move || {
                let mut scratch = Vec::new();
                for job in in_rx {
                    let r = job.and_then(|(i, bytes)| {
                        let c = &a.chunks[i];
                        let check = decode(&name, i, c, &bytes, &zero, &mut scratch)?;
                        let shared = zero_bufs.iter().find(|(n, _)| *n == c.size);
                        let data = match (check, shared) {
                            (Check::Zero, Some((_, z))) => z.clone(),
                            _ => Arc::new(scratch.clone()),
                        };
                        Ok(Block {
                            offset: i as u64 * chunk_size,
                            data,
                            check,
                            compressed: c.length,
                        })
                    });
                    let failed = r.is_err();
                    if out_tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
        }
        let name = name.to_string();
        let total = a.chunks.len();
        std::thread::spawn(move || {
            let mut input = input;
            let mut buf = Vec::new();
            for (i, c) in a.chunks.iter().enumerate() {
                buf.clear();
                let job = match (&mut input).take(c.length).read_to_end(&mut buf) {
                    Ok(n) if n as u64 == c.length => Ok((i, std::mem::take(&mut buf))),
                    Ok(n) => Err(ImageError::Chunk(ChunkError::CompressedLength {
                        artifact: name.clone(),
                        index: i,
                        got: n as u64,
                        want: c.length,
                    })),
                    Err(e) => Err(fetch_err(&format!("{name} chunk {i}"), e)),
                };
                let failed = job.is_err();
                if ins[i % workers].send(job).is_err() || failed {
                    break;
                }
            }
        });
        ReleaseBlocks {
            outs,
            next: 0,
            total,
        }
    }
}

impl Iterator for ReleaseBlocks {
    type Item = Done;

    fn next(&mut self) -> Option<Done> {
        if self.next >= self.total {
            return None;
        }
        let w = self.next % self.outs.len();
        let r = self.outs[w].recv().unwrap_or_else(|_| {
            Err(ImageError::Release(format!(
                "chunk {}: the verifying thread ended",
                self.next
            )))
        });
        self.next = if r.is_err() {
            self.total
        } else {
            self.next + 1
        };
        Some(r)
    }
}

/// A local image file: raw, or zstd (one or more frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// The file.
    pub path: PathBuf,
    /// zstd-compressed.
    pub zstd: bool,
    /// Uncompressed size.
    pub size: u64,
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Look at an image file: raw or zstd, and its uncompressed size (from the
/// frames' content sizes for zstd, read by walking the frame headers).
pub fn local_image(path: &Path) -> Result<LocalImage, ImageError> {
    let what = path.display().to_string();
    let mut f = File::open(path).map_err(|e| fetch_err(&what, e))?;
    let len = f.metadata().map_err(|e| fetch_err(&what, e))?.len();
    let mut magic = [0u8; 4];
    let is_zstd = len >= 4 && {
        f.read_exact(&mut magic).map_err(|e| fetch_err(&what, e))?;
        magic == ZSTD_MAGIC
    };
    if !is_zstd {
        return Ok(LocalImage {
            path: path.into(),
            zstd: false,
            size: len,
        });
    }
    let size = zstd_content_size(&mut File::open(path).map_err(|e| fetch_err(&what, e))?)
        .map_err(|m| fetch_err(&what, m))?;
    Ok(LocalImage {
        path: path.into(),
        zstd: true,
        size,
    })
}

/// Sum of the content sizes of a zstd stream's frames, without decoding:
/// frame header, then block headers skipped by their sizes (RFC 8878).
pub fn zstd_content_size(r: &mut impl Read) -> Result<u64, String> {
    let mut total = 0u64;
    let mut magic = [0u8; 4];
    loop {
        match read_full(r, &mut magic).map_err(|e| e.to_string())? {
            0 => return Ok(total),
            4 => {}
            n => return Err(format!("{n} stray bytes at the end")),
        }
        let m = u32::from_le_bytes(magic);
        if m & 0xffff_fff0 == 0x184d_2a50 {
            let mut l = [0u8; 4];
            r.read_exact(&mut l).map_err(|e| e.to_string())?;
            skip(r, u64::from(u32::from_le_bytes(l)))?;
            continue;
        }
        if magic != ZSTD_MAGIC {
            return Err("not a zstd frame".into());
        }
        let mut fhd = [0u8; 1];
        r.read_exact(&mut fhd).map_err(|e| e.to_string())?;
        let d = fhd[0];
        let fcs_flag = d >> 6;
        let single = d & 0x20 != 0;
        let checksum = d & 0x04 != 0;
        let did = [0usize, 1, 2, 4][usize::from(d & 3)];
        let fcs_len = match (fcs_flag, single) {
            (0, false) => 0,
            (0, true) => 1,
            (1, _) => 2,
            (2, _) => 4,
            _ => 8,
        };
        if fcs_len == 0 {
            return Err("a zstd frame without its content size (use zstd without --no-content-size, or a raw image)".into());
        }
        skip(r, u64::from(!single) + did as u64)?;
        let mut fcs = [0u8; 8];
        r.read_exact(&mut fcs[..fcs_len])
            .map_err(|e| e.to_string())?;
        let mut size = u64::from_le_bytes(fcs);
        if fcs_len == 2 {
            size += 256;
        }
        total += size;
        loop {
            let mut bh = [0u8; 3];
            r.read_exact(&mut bh).map_err(|e| e.to_string())?;
            let h = u32::from(bh[0]) | u32::from(bh[1]) << 8 | u32::from(bh[2]) << 16;
            let last = h & 1 != 0;
            let ty = (h >> 1) & 3;
            let bsize = u64::from(h >> 3);
            skip(r, if ty == 1 { 1 } else { bsize })?;
            if last {
                break;
            }
        }
        if checksum {
            skip(r, 4)?;
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn skip(r: &mut impl Read, n: u64) -> Result<(), String> {
    let got = io::copy(&mut r.take(n), &mut io::sink()).map_err(|e| e.to_string())?;
    if got != n {
        return Err("truncated zstd frame".into());
    }
    Ok(())
}

/// Blocks of a local image, hashed as read (a thread reads and decodes,
/// the consumer writes).
#[derive(Debug)]
pub struct FileBlocks {
    rx: Receiver<Done>,
}

impl FileBlocks {
    /// Start reading `img`.
    pub fn start(img: &LocalImage) -> Result<FileBlocks, ImageError> {
        let what = img.path.display().to_string();
        let f = File::open(&img.path).map_err(|e| fetch_err(&what, e))?;
        let mut input: Box<dyn Read + Send> = if img.zstd {
            Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| fetch_err(&what, e))?)
        } else {
            Box::new(f)
        };
        let size = img.size;
        let (tx, rx) = sync_channel::<Done>(2);
        std::thread::spawn(move || {
            let mut off = 0u64;
            loop {
                let mut data = vec![0u8; FILE_BLOCK];
                let n = match read_full(&mut input, &mut data) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(fetch_err(&what, e)));
                        return;
                    }
                };
                if n == 0 {
                    if off != size {
                        let _ = tx.send(Err(fetch_err(
                            &what,
                            format!("{off} bytes, {size} expected"),
                        )));
                    }
                    return;
                }
                data.truncate(n);
                let check = if is_zero(&data) {
                    Check::Zero
                } else {
                    Check::Sha256(Sha256::of(&data))
                };
                let b = Block {
                    offset: off,
                    compressed: n as u64,
                    data: Arc::new(data),
                    check,
                };
                off += n as u64;
                if tx.send(Ok(b)).is_err() {
                    return;
                }
            }
        });
        Ok(FileBlocks { rx })
    }
}

impl Iterator for FileBlocks {
    type Item = Done;

    fn next(&mut self) -> Option<Done> {
        self.rx.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 37]));
        let mut v = vec![0u8; 4099];
        assert!(is_zero(&v));
        v[4098] = 1;
        assert!(!is_zero(&v));
        v[4098] = 0;
        v[5] = 1;
        assert!(!is_zero(&v));
    }

    #[test]
    fn zstd_sizes_are_read_from_frame_headers() {
        let mut all = Vec::new();
        let mut want = 0u64;
        for (n, fill) in [(300_000usize, 0u8), (17, 7), (1 << 20, 3)] {
            let data: Vec<u8> = (0..n)
                .map(|i| fill.wrapping_add((i % 251) as u8 * (fill & 1)))
                .collect();
            all.extend(zstd::bulk::compress(&data, 3).expect("compress"));
            want += n as u64;
        }
        assert_eq!(zstd_content_size(&mut &all[..]).expect("size"), want);
        let e = zstd_content_size(&mut &all[..all.len() - 2]).expect_err("cut");
        assert!(e.contains("truncated") || e.contains("fill"), "{e}");
    }
}

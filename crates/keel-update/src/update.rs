//! One update, end to end: the signed channel, the signed manifest, every
//! chunk fetched with a Range request and verified (compressed hash → zstd
//! with a size limit → hash, by keel-release) **before** it is written into
//! the inactive slot, progress kept so a killed transfer resumes at the
//! first missing chunk, the written partitions re-read and compared with
//! the manifest, the kernel and initramfs installed, and only then
//! `set-next`.
//!
//! Chunks the running slot already holds (same offset, same SHA-256 of
//! the uncompressed bytes as the signed manifest says) are copied from it
//! instead of downloaded: a new version built from the same tree shares
//! most of its USR blocks with the old one. The copy is hashed before it is
//! written, exactly like a download, so a running slot that changed under
//! us (it cannot: it is read-only and verity-checked) would only cost a
//! download.
//!
//! Power-cut safety: the running slot's partitions and attributes are never
//! written; the inactive slot is made unbootable before its first byte
//! changes and becomes the next boot only by the last step. A cut anywhere
//! leaves the machine booting what it booted before, with the transfer
//! resumable from `progress.json`.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keel_bootctl::slots::Slot;
use keel_release::{
    decode_chunk_into, verify_channel, verify_manifest, Artifact, Channel, ChannelEntry,
    ChunkError, DocError, Expect, Manifest, Sha256, TrustedKeys, VerifyError, Version,
};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use thiserror::Error;

use crate::disk::{SlotDisk, SlotDiskError, Target};
use crate::esp::{BootFile, BootInstaller, EspError, SlotBoot};
use crate::machine::{Blocked, Pending};
use crate::source::{FetchError, Source};

/// Largest channel.json / manifest.json / signature fetched.
pub const MAX_DOC: usize = 16 << 20;
/// Largest signature file fetched.
pub const MAX_SIG: usize = 4096;

/// An update failed; nothing points at the partially written slot.
#[derive(Debug, Error)]
pub enum UpdateError {
    /// Fetching.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A signature or document check.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A document.
    #[error(transparent)]
    Doc(#[from] DocError),
    /// A chunk did not match the manifest: it was not written. Not a
    /// `#[source]`: the message already carries the chunk's, and a source
    /// would make error chains (`{:#}`) say it twice.
    #[error("refused before writing: {0}")]
    Chunk(ChunkError),
    /// The slots.
    #[error(transparent)]
    Disk(#[from] SlotDiskError),
    /// The ESP.
    #[error(transparent)]
    Esp(#[from] EspError),
    /// The state directory.
    #[error("{path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The update's rules refuse it.
    #[error("{0}")]
    Policy(String),
    /// What was written does not read back as the manifest says.
    #[error("{label}: {message}")]
    ReadBack {
        /// The partition.
        label: String,
        /// What differs.
        message: String,
    },
}

impl From<ChunkError> for UpdateError {
    fn from(e: ChunkError) -> Self {
        UpdateError::Chunk(e)
    }
}

/// What the caller wants to hear while an update runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Downloaded and written so far (compressed bytes of all artifacts).
    Download {
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Re-reading the written slot.
    Verifying,
    /// Installing the kernel and initramfs.
    Installing,
}

/// What a machine needs to know to check a release.
#[derive(Debug)]
pub struct Machine {
    /// The running version.
    pub current: Version,
    /// The running slot.
    pub booted: Slot,
    /// `uname -m`.
    pub arch: String,
    /// The trusted keys.
    pub keys: TrustedKeys,
    /// This boot's id (recorded with a staged update).
    pub boot_id: String,
    /// The running slot's verity root hash (for the new loader entry).
    pub root_hash: Option<String>,
}

/// Resumable transfer state, `progress.json`: which chunks of which
/// manifest are in which slot. Chunks are written in order, so a count per
/// artifact says it all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The version being written.
    pub version: String,
    /// SHA-256 of its manifest.json (a re-issued version starts over).
    pub manifest_sha256: String,
    /// The slot being written.
    pub slot: String,
    /// USR chunks written and synced.
    pub usr: usize,
    /// USR-VERITY chunks written and synced.
    pub usr_verity: usize,
}

/// The agent's persistent state directory (`/var/lib/keel/update`).
#[derive(Debug, Clone)]
pub struct StateDir {
    /// The directory.
    pub path: PathBuf,
    /// How often a transfer syncs the slot and records its progress (zero:
    /// after every chunk). A cut loses at most this much transfer.
    pub save_every: Duration,
}

impl StateDir {
    /// Default location.
    pub const DEFAULT: &'static str = "/var/lib/keel/update";

    /// The state directory at `path`, saving progress once a second.
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir {
            path: path.into(),
            save_every: Duration::from_secs(1),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn load<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, UpdateError> {
        let path = self.file(name);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| UpdateError::State {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(UpdateError::State {
                path,
                message: e.to_string(),
            }),
        }
    }

    fn save<T: Serialize>(&self, name: &str, v: &T) -> Result<(), UpdateError> {
        let path = self.file(name);
        let mut data = serde_json::to_vec_pretty(v).map_err(|e| UpdateError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        data.push(b'\n');
        keel_contract::write_atomic(&path, &data).map_err(|e| UpdateError::State {
            path,
            message: e.to_string(),
        })
    }

    fn remove(&self, name: &str) -> Result<(), UpdateError> {
        let path = self.file(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(UpdateError::State {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// The transfer in progress, if any.
    pub fn progress(&self) -> Result<Option<Progress>, UpdateError> {
        self.load("progress.json")
    }

    /// The staged update, if any.
    pub fn pending(&self) -> Result<Option<Pending>, UpdateError> {
        self.load("pending.json")
    }

    /// Record a staged update (with the boot id it was staged in).
    pub fn set_pending(&self, p: Option<&Pending>) -> Result<(), UpdateError> {
        match p {
            Some(p) => self.save("pending.json", p),
            None => self.remove("pending.json"),
        }
    }

    /// Versions refused after a rollback.
    pub fn blocked(&self) -> Result<Vec<Blocked>, UpdateError> {
        Ok(self.load("blocked.json")?.unwrap_or_default())
    }

    /// Replace the blocked list.
    pub fn set_blocked(&self, b: &[Blocked]) -> Result<(), UpdateError> {
        self.save("blocked.json", &b)
    }
}

/// The channel's directory in the tree.
pub fn channel_rel(channel: &str) -> String {
    format!("{channel}/{}", keel_release::CHANNEL_FILE)
}

/// Fetch and verify `channel.json`.
pub fn fetch_channel(
    src: &mut dyn Source,
    m: &Machine,
    channel: &str,
) -> Result<Channel, UpdateError> {
    let rel = channel_rel(channel);
    let data = src.get(&rel, MAX_DOC)?;
    let sig = src.get(&format!("{rel}{}", keel_release::SIG_SUFFIX), MAX_SIG)?;
    let sig = String::from_utf8_lossy(&sig);
    let expect = Expect {
        channel,
        arch: &m.arch,
    };
    Ok(verify_channel(&m.keys, &data, &sig, &expect)?)
}

/// A verified manifest and where its files are.
#[derive(Debug, Clone)]
pub struct Release {
    /// The manifest.
    pub manifest: Manifest,
    /// SHA-256 of its bytes.
    pub sha256: Sha256,
    /// Its directory, relative to the tree's base.
    pub dir: String,
}

impl Release {
    fn rel(&self, a: &Artifact) -> String {
        format!("{}/{}", self.dir, a.file)
    }
}

/// Fetch and verify the manifest `entry` of `channel` names.
pub fn fetch_manifest(
    src: &mut dyn Source,
    m: &Machine,
    channel: &str,
    entry: &ChannelEntry,
) -> Result<Release, UpdateError> {
    let rel = format!("{channel}/{}", entry.manifest);
    let data = src.get(&rel, MAX_DOC)?;
    let sig = src.get(&format!("{rel}{}", keel_release::SIG_SUFFIX), MAX_SIG)?;
    let sig = String::from_utf8_lossy(&sig);
    let expect = Expect {
        channel,
        arch: &m.arch,
    };
    let manifest = verify_manifest(&m.keys, &data, &sig, &expect, Some(entry))?;
    let dir = match rel.rsplit_once('/') {
        Some((d, _)) => d.to_string(),
        None => String::new(),
    };
    Ok(Release {
        manifest,
        sha256: Sha256::of(&data),
        dir,
    })
}

/// The dm-verity root hash of a hash tree as `veritysetup format` writes
/// it (format 1: superblock in the first hash block, the single top-level
/// block right after it, salt prepended): `SHA-256(salt ‖ top block)`.
/// Computed here so the signed root hash is checked against the bytes on
/// the disk, not only against the tree artifact's hash.
pub fn verity_root(salt_hex: &str, top_block: &[u8]) -> Option<Sha256> {
    let salt = hex::decode(salt_hex).ok()?;
    let mut h = sha2::Sha256::new();
    h.update(&salt);
    h.update(top_block);
    Some(Sha256(h.finalize().into()))
}

struct Job<'a> {
    src: &'a mut dyn Source,
    disk: &'a mut dyn SlotDisk,
    state: &'a StateDir,
    report: &'a mut dyn FnMut(Step),
    done: u64,
    total: u64,
    traffic: Traffic,
    /// The one chunk-sized buffer of decoded (or copied, or re-read) bytes,
    /// reused for every chunk of every artifact: the agent's peak memory is
    /// this, the compressed chunks in flight and little else.
    buf: Vec<u8>,
    /// A small buffer for probing the running slot piece by piece.
    probe: Vec<u8>,
    /// The manifest's chunk size (chunk i is at i × this).
    chunk_size: u64,
}

/// Probing the running slot for a chunk reads this much at a time.
const PROBE: usize = 256 << 10;

/// Where the chunks of one update came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Chunks fetched from the release server.
    pub fetched_chunks: u64,
    /// Compressed bytes fetched (chunks, kernel, initramfs).
    pub fetched_bytes: u64,
    /// Chunks copied from the running slot.
    pub local_chunks: u64,
    /// Their uncompressed bytes.
    pub local_bytes: u64,
}

/// A fetched chunk handed to the verifying thread with the decode buffer:
/// (index, compressed bytes, buffer).
type Work = (usize, Vec<u8>, Vec<u8>);
/// What comes back: the index, the buffer, and whether it verified.
type Done = (usize, Vec<u8>, Result<(), ChunkError>);

impl Job<'_> {
    fn write_artifact(
        &mut self,
        r: &Release,
        slot: Slot,
        t: Target,
        a: &Artifact,
        prog: &mut Progress,
    ) -> Result<(), UpdateError> {
        let name = match t {
            Target::Usr => "usr",
            Target::UsrVerity => "usr_verity",
        };
        let start = match t {
            Target::Usr => prog.usr,
            Target::UsrVerity => prog.usr_verity,
        };
        let cs = r.manifest.chunk_size;
        let rel = r.rel(a);
        let mut last_save = Instant::now();
        let chunks = &a.chunks;
        // A small pipeline: this thread fetches and writes, a worker
        // verifies and decodes, so the network overlaps the CPU. One
        // decode buffer goes back and forth (the worker decodes chunk i
        // into it while chunk i+1 is fetched; this thread writes it before
        // handing chunk i+1 over), so at most one decoded and two
        // compressed chunks are in memory. A chunk is written only after
        // the worker verified it.
        std::thread::scope(|scope| -> Result<(), UpdateError> {
            let (in_tx, in_rx) = mpsc::sync_channel::<Work>(1);
            let (out_tx, out_rx) = mpsc::sync_channel::<Done>(1);
            scope.spawn(move || {
                for (i, bytes, mut buf) in in_rx {
                    let r = decode_chunk_into(name, i, &chunks[i], &bytes, &mut buf);
                    // The compressed bytes go before the next fetch.
                    drop(bytes);
                    let failed = r.is_err();
                    if out_tx.send((i, buf, r)).is_err() || failed {
                        break;
                    }
                }
            });
            let mut buf = Some(std::mem::take(&mut self.buf));
            let mut at_worker = false;
            let mut todo = chunks.iter().enumerate().skip(start);
            let mut fetch_err: Option<UpdateError> = None;
            loop {
                // The next chunk, while the worker decodes the previous one.
                let mut fetched = None;
                if let (None, Some((i, c))) = (&fetch_err, todo.next()) {
                    let off = i as u64 * cs;
                    if self.held_by(slot.other(), t, off, c) {
                        // Copied through the decode buffer: take it back.
                        if at_worker {
                            buf = Some(self.collect(
                                &out_rx,
                                slot,
                                t,
                                chunks,
                                prog,
                                &mut last_save,
                                false,
                            )?);
                            at_worker = false;
                        }
                        let mut b = buf.take().unwrap_or_default();
                        let copied = self.copy_local(slot.other(), t, off, c, &mut b);
                        if copied {
                            self.traffic.local_chunks += 1;
                            self.traffic.local_bytes += c.size;
                            self.put(slot, t, i, &b, chunks, prog, &mut last_save, false)?;
                        }
                        buf = Some(b);
                        if copied {
                            continue;
                        }
                    }
                    match self.src.get_range(&rel, c.offset, c.length) {
                        Ok(bytes) => {
                            self.traffic.fetched_chunks += 1;
                            self.traffic.fetched_bytes += c.length;
                            fetched = Some((i, bytes));
                        }
                        // Write what is already verified, then fail.
                        Err(e) => fetch_err = Some(e.into()),
                    }
                }
                if at_worker {
                    let failing = fetch_err.is_some();
                    buf = Some(self.collect(
                        &out_rx,
                        slot,
                        t,
                        chunks,
                        prog,
                        &mut last_save,
                        failing,
                    )?);
                }
                let Some((i, bytes)) = fetched else { break };
                let b = buf.take().unwrap_or_default();
                if in_tx.send((i, bytes, b)).is_err() {
                    break;
                }
                at_worker = true;
            }
            if let Some(b) = buf {
                self.buf = b;
            }
            let written = match t {
                Target::Usr => prog.usr,
                Target::UsrVerity => prog.usr_verity,
            };
            match fetch_err {
                Some(e) => Err(e),
                None if written != chunks.len() => Err(UpdateError::Policy(format!(
                    "{name}: the transfer stopped after chunk {written} of {} (the verifying thread ended)",
                    chunks.len()
                ))),
                None => Ok(()),
            }
        })
    }

    /// The worker's chunk, verified, written; its buffer back.
    // The artifact's context, passed through to `put`.
    #[allow(clippy::too_many_arguments)]
    fn collect(
        &mut self,
        out_rx: &mpsc::Receiver<Done>,
        slot: Slot,
        t: Target,
        chunks: &[keel_release::Chunk],
        prog: &mut Progress,
        last_save: &mut Instant,
        failing: bool,
    ) -> Result<Vec<u8>, UpdateError> {
        let Ok((i, buf, res)) = out_rx.recv() else {
            return Err(UpdateError::Policy(format!(
                "{}: the verifying thread ended",
                t.label(slot)
            )));
        };
        // Verified (or refused) before anything reaches the disk.
        res?;
        self.put(slot, t, i, &buf, chunks, prog, last_save, failing)?;
        Ok(buf)
    }

    /// Write verified chunk `i`, record progress (synced at most once per
    /// `save_every`, after the last chunk and before failing).
    // The artifact's context: each argument is needed.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        slot: Slot,
        t: Target,
        i: usize,
        buf: &[u8],
        chunks: &[keel_release::Chunk],
        prog: &mut Progress,
        last_save: &mut Instant,
        failing: bool,
    ) -> Result<(), UpdateError> {
        self.disk
            .write_at(slot, t, i as u64 * self.chunk_size, buf)?;
        let n = i + 1;
        match t {
            Target::Usr => prog.usr = n,
            Target::UsrVerity => prog.usr_verity = n,
        }
        // The chunk is durable before progress says so. Once a second (and
        // after the last chunk) is enough: a cut loses at most a second of
        // transfer, and three fsyncs per 4 MiB chunk would cost throughput
        // on slow disks.
        if last_save.elapsed() >= self.state.save_every || n == chunks.len() || failing {
            self.disk.sync()?;
            self.state.save("progress.json", prog)?;
            *last_save = Instant::now();
        }
        self.done += chunks[i].length;
        (self.report)(Step::Download {
            done: self.done,
            total: self.total,
        });
        Ok(())
    }

    /// Whether the running slot `from` holds chunk `c` at `offset`: its
    /// bytes hashed piece by piece (no chunk-sized buffer; any read error:
    /// not there).
    fn held_by(&mut self, from: Slot, t: Target, offset: u64, c: &keel_release::Chunk) -> bool {
        let mut h = sha2::Sha256::new();
        self.probe.resize(PROBE, 0);
        let mut at = 0u64;
        while at < c.size {
            let n = (c.size - at).min(PROBE as u64) as usize;
            if self
                .disk
                .read_at(from, t, offset + at, &mut self.probe[..n])
                .is_err()
            {
                return false;
            }
            h.update(&self.probe[..n]);
            at += n as u64;
        }
        Sha256(h.finalize().into()) == c.sha256
    }

    /// Copy chunk `c` of the running slot into `buf` and hash it again:
    /// what is written is what was hashed.
    fn copy_local(
        &mut self,
        from: Slot,
        t: Target,
        offset: u64,
        c: &keel_release::Chunk,
        buf: &mut Vec<u8>,
    ) -> bool {
        let Ok(size) = usize::try_from(c.size) else {
            return false;
        };
        buf.resize(size, 0);
        self.disk.read_at(from, t, offset, buf).is_ok() && Sha256::of(buf) == c.sha256
    }

    /// Re-read `a` from the slot and compare chunk by chunk (so a mismatch
    /// names the chunk, and the next attempt rewrites from there).
    fn read_back(
        &mut self,
        r: &Release,
        slot: Slot,
        t: Target,
        a: &Artifact,
    ) -> Result<Result<(), (usize, String)>, UpdateError> {
        let cs = r.manifest.chunk_size;
        let mut whole = sha2::Sha256::new();
        let buf = &mut self.buf;
        for (i, c) in a.chunks.iter().enumerate() {
            buf.resize(usize::try_from(c.size).unwrap_or(0), 0);
            self.disk.read_at(slot, t, i as u64 * cs, buf)?;
            let got = Sha256::of(buf);
            if got != c.sha256 {
                return Ok(Err((
                    i,
                    format!(
                        "chunk {i} reads back with SHA-256 {got}, the manifest says {}",
                        c.sha256
                    ),
                )));
            }
            whole.update(&buf[..]);
        }
        let got = Sha256(whole.finalize().into());
        if got != a.sha256 {
            return Ok(Err((
                0,
                format!(
                    "reads back with SHA-256 {got}, the manifest says {}",
                    a.sha256
                ),
            )));
        }
        Ok(Ok(()))
    }

    /// A kernel or initramfs, every chunk verified, streamed into the
    /// slot's temporary file on the ESP (never held whole); finished
    /// (fsynced) only when the whole file's hash matches.
    fn stream_boot_file(
        &mut self,
        r: &Release,
        esp: &mut dyn BootInstaller,
        slot: Slot,
        file: BootFile,
    ) -> Result<(), UpdateError> {
        let a = &r.manifest.artifacts;
        let (name, a) = match file {
            BootFile::Kernel => ("kernel", &a.kernel),
            BootFile::Initramfs => ("initramfs", &a.initramfs),
        };
        let rel = r.rel(a);
        esp.begin(slot, file)?;
        let mut whole = sha2::Sha256::new();
        for (i, c) in a.chunks.iter().enumerate() {
            let bytes = self.src.get_range(&rel, c.offset, c.length)?;
            decode_chunk_into(name, i, c, &bytes, &mut self.buf)?;
            drop(bytes);
            whole.update(&self.buf);
            esp.append(&self.buf)?;
            self.done += c.length;
            (self.report)(Step::Download {
                done: self.done,
                total: self.total,
            });
        }
        let got = Sha256(whole.finalize().into());
        if got != a.sha256 {
            return Err(UpdateError::Policy(format!(
                "{name}: SHA-256 {got}, the manifest says {}",
                a.sha256
            )));
        }
        Ok(esp.finish()?)
    }
}

/// Re-read the written slot chunk by chunk and check the verity root hash
/// on the disk against the signed one.
fn verify_slot(
    job: &mut Job<'_>,
    r: &Release,
    slot: Slot,
    prog: &mut Progress,
) -> Result<(), UpdateError> {
    let state = job.state;
    let man = &r.manifest;
    let usr = &man.artifacts.usr;
    let tree = &man.artifacts.usr_verity.tree;
    for (t, art) in [(Target::Usr, usr), (Target::UsrVerity, tree)] {
        if let Err((first_bad, message)) = job.read_back(r, slot, t, art)? {
            match t {
                Target::Usr => prog.usr = first_bad,
                Target::UsrVerity => prog.usr_verity = first_bad,
            }
            state.save("progress.json", prog)?;
            return Err(UpdateError::ReadBack {
                label: t.label(slot),
                message,
            });
        }
    }
    let v = &man.artifacts.usr_verity;
    let hbs = u64::from(v.hash_block_size);
    let mut top = vec![0u8; usize::try_from(hbs).unwrap_or(4096)];
    if tree.size < 2 * hbs {
        return Err(UpdateError::ReadBack {
            label: Target::UsrVerity.label(slot),
            message: format!(
                "the hash tree is {} bytes, less than superblock + top block",
                tree.size
            ),
        });
    }
    job.disk.read_at(slot, Target::UsrVerity, hbs, &mut top)?;
    let root = verity_root(&v.salt, &top);
    if root != Some(v.root_hash) {
        return Err(UpdateError::ReadBack {
            label: Target::UsrVerity.label(slot),
            message: format!(
                "the verity root hash on disk is {}, the signed manifest says {}",
                root.map(|r| r.to_string())
                    .unwrap_or_else(|| "unreadable (bad salt)".into()),
                v.root_hash
            ),
        });
    }

    Ok(())
}

/// Write `r` into the slot that is not running, verify it, install its
/// kernel, and make it the next boot. Returns the pending record.
// Three effect handles, the state, the machine, the release, the time and
// the progress callback are each needed and of different kinds; a struct
// bundling them would only rename the argument list.
#[allow(clippy::too_many_arguments)]
pub fn stage(
    src: &mut dyn Source,
    disk: &mut dyn SlotDisk,
    esp: &mut dyn BootInstaller,
    state: &StateDir,
    m: &Machine,
    r: &Release,
    now: u64,
    report: &mut dyn FnMut(Step),
) -> Result<Pending, UpdateError> {
    let slot = m.booted.other();
    let man = &r.manifest;
    let usr = &man.artifacts.usr;
    let tree = &man.artifacts.usr_verity.tree;
    for (t, a) in [(Target::Usr, usr), (Target::UsrVerity, tree)] {
        let cap = disk.capacity(slot, t)?;
        if a.size > cap {
            return Err(UpdateError::Policy(format!(
                "{} is {cap} bytes, {} {} needs {}",
                t.label(slot),
                man.version,
                match t {
                    Target::Usr => "usr",
                    Target::UsrVerity => "usr_verity",
                },
                a.size
            )));
        }
    }
    let fresh = Progress {
        version: man.version.to_string(),
        manifest_sha256: r.sha256.to_string(),
        slot: slot.to_string(),
        usr: 0,
        usr_verity: 0,
    };
    let mut prog = match state.progress()? {
        Some(p)
            if p.version == fresh.version
                && p.manifest_sha256 == fresh.manifest_sha256
                && p.slot == fresh.slot
                && p.usr <= usr.chunks.len()
                && p.usr_verity <= tree.chunks.len() =>
        {
            tracing::info!(
                "resuming {} into USR-{slot} at usr chunk {}, usr_verity chunk {}",
                p.version,
                p.usr,
                p.usr_verity
            );
            p
        }
        _ => fresh,
    };
    // Recorded before the slot's first byte changes; a stale pending
    // record of an earlier staging is void from here on.
    state.save("progress.json", &prog)?;
    state.set_pending(None)?;
    disk.disable(slot)?;

    let a = &man.artifacts;
    let total = a.usr.compressed_size
        + a.usr_verity.tree.compressed_size
        + a.kernel.compressed_size
        + a.initramfs.compressed_size;
    let done = usr.chunks[..prog.usr].iter().map(|c| c.length).sum::<u64>()
        + tree.chunks[..prog.usr_verity]
            .iter()
            .map(|c| c.length)
            .sum::<u64>();
    let mut job = Job {
        src,
        disk,
        state,
        report,
        done,
        total,
        traffic: Traffic::default(),
        buf: Vec::new(),
        probe: Vec::new(),
        chunk_size: man.chunk_size,
    };
    job.write_artifact(r, slot, Target::Usr, usr, &mut prog)?;
    job.write_artifact(r, slot, Target::UsrVerity, tree, &mut prog)?;

    // The kernel and initramfs are downloads too: fetched (and verified)
    // into temporary files before the slot is re-read, so progress ends
    // before verifying; renamed into place only after it.
    let checked = (|| {
        for f in BootFile::ALL {
            job.stream_boot_file(r, esp, slot, f)?;
        }
        (job.report)(Step::Verifying);
        job.disk.sync()?;
        verify_slot(&mut job, r, slot, &mut prog)
    })();
    if let Err(e) = checked {
        if let Err(d) = esp.discard(slot) {
            tracing::warn!("{d}");
        }
        return Err(e);
    }
    // The chunk buffer is not needed any more.
    job.buf = Vec::new();

    (job.report)(Step::Installing);
    let version = man.version.to_string();
    let root_hash = man.artifacts.usr_verity.root_hash.to_string();
    let boot = SlotBoot {
        slot,
        version: &version,
        root_hash: &root_hash,
        other_root_hash: m.root_hash.as_deref(),
    };
    esp.install(&boot)?;
    job.disk.set_next(slot)?;
    // The loader entry last (issue 15 §3): until here the firmware path
    // boots what it booted before.
    esp.activate(&boot)?;
    let pending = Pending {
        version,
        slot: slot.to_string(),
        from_version: m.current.to_string(),
        at: now,
        boot_id: m.boot_id.clone(),
        why: None,
    };
    state.set_pending(Some(&pending))?;
    state.remove("progress.json")?;
    let t = job.traffic;
    tracing::info!(
        "{} staged in USR-{slot}: {} chunks ({} MiB) copied from USR-{}, {} chunks fetched, {} MiB downloaded in all",
        pending.version,
        t.local_chunks,
        t.local_bytes >> 20,
        m.booted,
        t.fetched_chunks,
        (t.fetched_bytes + a.kernel.compressed_size + a.initramfs.compressed_size) >> 20
    );
    Ok(pending)
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;

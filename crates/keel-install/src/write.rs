//! Writing the image: the order that keeps a disk either complete or
//! without a partition table.
//!
//! 1. Nothing is written before the first block verified. Then the device's
//!    first and last MiB are zeroed: the old partition table (primary and
//!    backup) is gone before any of the new image lands.
//! 2. Blocks are written in order as they arrive verified, except the
//!    image's first MiB (protective MBR and primary GPT), which is held in
//!    memory.
//! 3. The device is synced, its cache dropped, and every block read back
//!    and compared (zeros, or the signed SHA-256).
//! 4. `before_table` runs (the first-boot config goes onto OEM).
//! 5. The first MiB is written, synced and read back: only now does the
//!    disk have a partition table.
//!
//! Any failure or interruption after step 1 zeroes the first MiB, the
//! image's last MiB (its backup GPT) and the device's last MiB, so what is
//! left is never a half-written disk that a firmware or keel-init would
//! boot.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use keel_release::Sha256;

use crate::image::{is_zero, Block, Check, ImageError};

/// The image's head held back until the end: protective MBR, primary GPT
/// header and entries (partitions start at 1 MiB).
pub const HEAD: u64 = 1 << 20;

/// A [`Target`] seen as a read-only `keel_gpt::BlockDevice` of `size`
/// bytes (for reading the partition table through it).
#[derive(Debug)]
pub struct AsBlock<'a, 'b> {
    /// The target.
    pub t: std::cell::RefCell<&'a mut (dyn Target + 'b)>,
    /// Its size.
    pub size: u64,
}

impl keel_gpt::BlockDevice for AsBlock<'_, '_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.t.borrow_mut().read_at(offset, buf)
    }
    fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("read-only view"))
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The device (or file) written.
pub trait Target: std::fmt::Debug {
    /// Write all of `buf` at `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Make `len` bytes at `offset` read as zeros. The default writes
    /// `zeros` (at least `len` long); an image file punches a hole instead,
    /// so installing into a file costs only the disk its data needs.
    fn write_zeros(&mut self, offset: u64, len: u64, zeros: &[u8]) -> io::Result<()> {
        self.write_at(offset, &zeros[..len as usize])
    }
    /// Read exactly `buf.len()` bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Make everything written durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Forget cached pages, so the next read comes from the device.
    fn drop_cache(&mut self) -> io::Result<()>;
}

/// The step between the read-back and the partition table: gets the
/// image's first MiB and the device.
pub type BeforeTable<'a> = dyn FnMut(&[u8], &mut dyn Target) -> Result<(), String> + 'a;

/// What the writer is doing, for the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Fetching, verifying and writing.
    Write,
    /// Reading back.
    Verify,
}

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The phase.
    pub phase: Phase,
    /// Bytes done (uncompressed).
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// Why writing failed. The device's partition table was wiped unless
/// `Refused` (nothing written).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The image failed before anything was written.
    #[error("{0} (nothing was written to the device)")]
    Refused(ImageError),
    /// Interrupted before anything was written.
    #[error("interrupted (nothing was written to the device)")]
    InterruptedEarly,
    /// A failure after the first write; the table was wiped (or the wipe
    /// failed too, said in `wipe`).
    #[error("{cause}; {wipe}")]
    Failed {
        /// What went wrong.
        cause: String,
        /// What happened to the partition table.
        wipe: String,
    },
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Bytes.
    pub bytes: u64,
    /// Of those, all-zero blocks.
    pub zero_bytes: u64,
    /// Seconds writing (incl. fetch and verify of the stream).
    pub write_secs: f64,
    /// Seconds reading back (0 without verify).
    pub verify_secs: f64,
}

struct Rec {
    offset: u64,
    len: u64,
    check: Check,
}

/// The writer's inputs besides the target and the blocks.
pub struct Job<'a> {
    /// The image's uncompressed size.
    pub image_size: u64,
    /// The device's size.
    pub device_size: u64,
    /// Read back and compare.
    pub verify: bool,
    /// Set by SIGINT/SIGTERM.
    pub cancel: &'a AtomicBool,
    /// Progress reports.
    pub progress: &'a mut dyn FnMut(Progress),
    /// Runs after the read-back, before the partition table is written,
    /// with the image's first MiB and the device (to find partitions in).
    pub before_table: &'a mut BeforeTable<'a>,
}

impl std::fmt::Debug for Job<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("image_size", &self.image_size)
            .field("device_size", &self.device_size)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

fn interrupted(c: &AtomicBool) -> bool {
    c.load(Ordering::SeqCst)
}

/// Write `blocks` to `t` in the order described in the module docs.
pub fn write_image(
    t: &mut dyn Target,
    blocks: &mut dyn Iterator<Item = Result<Block, ImageError>>,
    mut job: Job<'_>,
) -> Result<Written, WriteError> {
    if job.image_size < HEAD {
        return Err(WriteError::Refused(ImageError::Release(format!(
            "the image is {} bytes, not a disk image",
            job.image_size
        ))));
    }
    let mut started = false;
    let r = write_inner(t, blocks, &mut job, &mut started);
    match r {
        Ok(w) => Ok(w),
        Err(Inner::Early(e)) => Err(e),
        Err(Inner::Late(cause)) => {
            let wipe = match wipe(t, job.image_size, job.device_size) {
                Ok(()) => "the partition table was wiped (the disk will not boot half-written)"
                    .to_string(),
                Err(e) => {
                    format!("wiping the partition table failed too: {e}; do not boot this disk")
                }
            };
            Err(WriteError::Failed { cause, wipe })
        }
    }
}

enum Inner {
    Early(WriteError),
    Late(String),
}

fn zero_range(t: &mut dyn Target, offset: u64, len: u64) -> io::Result<()> {
    let z = vec![0u8; len as usize];
    t.write_at(offset, &z)
}

/// Zero the first MiB, the image's last MiB and the device's last MiB.
pub fn wipe(t: &mut dyn Target, image_size: u64, device_size: u64) -> io::Result<()> {
    zero_range(t, 0, HEAD.min(device_size))?;
    for end in [image_size, device_size] {
        if end >= 2 * HEAD {
            zero_range(t, end - HEAD, HEAD)?;
        }
    }
    t.sync()
}

fn write_inner(
    t: &mut dyn Target,
    blocks: &mut dyn Iterator<Item = Result<Block, ImageError>>,
    job: &mut Job<'_>,
    started: &mut bool,
) -> Result<Written, Inner> {
    let late = |what: &str, e: &dyn std::fmt::Display| Inner::Late(format!("{what}: {e}"));
    let t0 = Instant::now();
    let mut head = vec![0u8; HEAD as usize];
    let mut recs: Vec<Rec> = Vec::new();
    let (mut pos, mut zero_bytes) = (0u64, 0u64);
    for b in blocks {
        if interrupted(job.cancel) {
            return Err(if *started {
                Inner::Late("interrupted".into())
            } else {
                Inner::Early(WriteError::InterruptedEarly)
            });
        }
        let b = match b {
            Ok(b) => b,
            Err(e) if !*started => return Err(Inner::Early(WriteError::Refused(e))),
            Err(e) => return Err(late("the image", &e)),
        };
        if b.offset != pos {
            return Err(Inner::Late(format!(
                "block at {} arrived, {pos} expected",
                b.offset
            )));
        }
        let len = b.data.len() as u64;
        if pos + len > job.image_size {
            return Err(Inner::Late(format!(
                "the image is longer than its declared {} bytes",
                job.image_size
            )));
        }
        if !*started {
            *started = true;
            // The old table goes before the first new byte lands.
            zero_range(t, 0, HEAD)
                .and_then(|()| {
                    if job.device_size >= 2 * HEAD {
                        zero_range(t, job.device_size - HEAD, HEAD)
                    } else {
                        Ok(())
                    }
                })
                .map_err(|e| late("wiping the old partition table", &e))?;
        }
        // The head goes to memory, the rest to the device.
        let mut data: &[u8] = &b.data;
        let mut off = b.offset;
        if off < HEAD {
            let k = (HEAD - off).min(len) as usize;
            head[off as usize..off as usize + k].copy_from_slice(&data[..k]);
            data = &data[k..];
            off += k as u64;
        }
        if !data.is_empty() {
            let r = if b.check == Check::Zero {
                t.write_zeros(off, data.len() as u64, data)
            } else {
                t.write_at(off, data)
            };
            r.map_err(|e| late(&format!("writing {len} bytes at offset {}", b.offset), &e))?;
        }
        if b.check == Check::Zero {
            zero_bytes += len;
        }
        recs.push(Rec {
            offset: b.offset,
            len,
            check: b.check,
        });
        pos += len;
        (job.progress)(Progress {
            phase: Phase::Write,
            done: pos,
            total: job.image_size,
        });
    }
    if interrupted(job.cancel) {
        return Err(Inner::Late("interrupted".into()));
    }
    if pos != job.image_size {
        let e = format!("the image ended after {pos} of {} bytes", job.image_size);
        return Err(if *started {
            Inner::Late(e)
        } else {
            Inner::Early(WriteError::Refused(ImageError::Release(e)))
        });
    }
    t.sync().map_err(|e| late("syncing the device", &e))?;
    let write_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    if job.verify {
        t.drop_cache()
            .map_err(|e| late("dropping the device's cache", &e))?;
        let mut buf = Vec::new();
        for r in &recs {
            if interrupted(job.cancel) {
                return Err(Inner::Late("interrupted".into()));
            }
            buf.resize(r.len as usize, 0);
            let (mut off, mut from) = (r.offset, 0usize);
            if off < HEAD {
                let k = (HEAD - off).min(r.len) as usize;
                buf[..k].copy_from_slice(&head[off as usize..off as usize + k]);
                from = k;
                off += k as u64;
            }
            if from < buf.len() {
                t.read_at(off, &mut buf[from..])
                    .map_err(|e| late(&format!("reading back at offset {off}"), &e))?;
            }
            let ok = match r.check {
                Check::Zero => is_zero(&buf),
                Check::Sha256(h) => Sha256::of(&buf) == h,
            };
            if !ok {
                return Err(Inner::Late(format!(
                    "the device reads back differently at bytes {}..{} than was written",
                    r.offset,
                    r.offset + r.len
                )));
            }
            (job.progress)(Progress {
                phase: Phase::Verify,
                done: r.offset + r.len,
                total: job.image_size,
            });
        }
    }
    let verify_secs = t1.elapsed().as_secs_f64();
    if interrupted(job.cancel) {
        return Err(Inner::Late("interrupted".into()));
    }
    (job.before_table)(&head, t).map_err(Inner::Late)?;
    if interrupted(job.cancel) {
        return Err(Inner::Late("interrupted".into()));
    }
    t.write_at(0, &head)
        .and_then(|()| t.sync())
        .map_err(|e| late("writing the partition table", &e))?;
    if job.verify {
        let mut back = vec![0u8; HEAD as usize];
        t.drop_cache()
            .and_then(|()| t.read_at(0, &mut back))
            .map_err(|e| late("reading back the partition table", &e))?;
        if back != head {
            return Err(Inner::Late(
                "the partition table reads back differently than was written".into(),
            ));
        }
    }
    Ok(Written {
        bytes: pos,
        zero_bytes,
        write_secs,
        verify_secs,
    })
}

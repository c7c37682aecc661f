//! `keel-install`: write Keel onto a disk from a signed release tree (or an
//! image file), with a first-boot config, from any Linux.
//!
//! # Order (nothing is written before step 5)
//! 1. the command line ([`args`]);
//! 2. the first-boot config, checked with keel-provision's code ([`config`]);
//! 3. the image: channel.json and manifest.json verified against the
//!    trusted keys, bound to channel, arch and version ([`image`]);
//! 4. the target: refused when it holds the running system, is a
//!    partition, is mounted or in use, or is smaller than the image
//!    ([`device`]); what is on it is shown and, unless `--yes`, confirmed
//!    on the terminal;
//! 5. the write ([`write`]): each chunk verified before it is written, the
//!    partition table last, the device read back; the config goes onto the
//!    new OEM partition before the table is written ([`place`]); a failure
//!    or Ctrl-C wipes the table.
//!
//! # What it reads and writes
//! Reads the release tree (`<base>/<channel>/channel.json`, the version's
//! `manifest.json`, their `.minisig`, `disk.img.zst`), the trusted keys
//! (`/usr/share/keel/update-keys/*.pub` or `--keys`/`--key`),
//! `/proc/self/mountinfo`, `/proc/swaps`, `/sys/dev/block`. Writes the
//! target device and, through a loop device, `config.ign` (Ignition) or
//! `user-data` (a cloud-config) on its OEM partition. Nothing else on the
//! host.

pub mod args;
pub mod config;
pub mod device;
pub mod image;
pub mod place;
pub mod sys;
pub mod write;

use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};

use crate::args::{Image, Options};
use crate::device::{human, DeviceFacts, Host, Kind};
use crate::image::{Block, ImageError};
use crate::write::{Phase, Progress, Target, Written};

/// The real device or file.
#[derive(Debug)]
pub struct FileTarget {
    /// The open device.
    pub file: File,
    /// A regular file (an image), not a block device.
    pub kind: Kind,
}

impl FileTarget {
    /// Open read-write; a block device exclusively (`O_EXCL`: the kernel
    /// refuses when a filesystem, device-mapper or md holds it).
    pub fn open(path: &Path, kind: Kind) -> io::Result<FileTarget> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true);
        if kind == Kind::Block {
            o.custom_flags(libc::O_EXCL);
        }
        Ok(FileTarget {
            file: o.open(path)?,
            kind,
        })
    }
}

impl Target for FileTarget {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn write_zeros(&mut self, offset: u64, len: u64, zeros: &[u8]) -> io::Result<()> {
        if self.kind == Kind::File {
            use rustix::fs::{fallocate, FallocateFlags};
            let how = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            match fallocate(&self.file, how, offset, len) {
                Ok(()) => return Ok(()),
                // A filesystem without holes gets the zeros written.
                Err(rustix::io::Errno::OPNOTSUPP) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.file.write_all_at(&zeros[..len as usize], offset)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
    fn drop_cache(&mut self) -> io::Result<()> {
        rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed)
            .map_err(io::Error::from)
    }
}

/// Opens the target for writing.
pub type OpenTarget<'a> = dyn FnMut(&Path, Kind) -> io::Result<Box<dyn Target>> + 'a;

/// The effects `install` uses, so tests can replace them.
pub struct Effects<'a> {
    /// Looks at the device.
    pub host: &'a dyn Host,
    /// Opens the device for writing.
    pub open: &'a mut OpenTarget<'a>,
    /// Writes into the new OEM partition.
    pub placer: &'a mut dyn place::Placer,
    /// Asks the operator; `None` when there is no terminal.
    pub ask: &'a mut dyn FnMut(&str) -> Option<String>,
    /// Progress reports.
    pub progress: &'a mut dyn FnMut(Progress),
    /// Lines for the operator (stderr).
    pub say: &'a mut dyn FnMut(&str),
    /// Set on SIGINT/SIGTERM.
    pub cancel: &'a AtomicBool,
    /// Decoding threads.
    pub workers: usize,
}

impl std::fmt::Debug for Effects<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects").finish_non_exhaustive()
    }
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was installed (`keel 0.1.0 (stable)`, or the file).
    pub what: String,
    /// The write.
    pub written: Written,
    /// What went onto OEM.
    pub placed: String,
}

/// The answer that lets the install go on.
pub const CONFIRM_WORD: &str = "yes";

/// Decide from `--yes`, the terminal and the answer. Pure.
pub fn confirmed(yes: bool, answer: Option<&str>) -> Result<(), String> {
    if yes {
        return Ok(());
    }
    match answer {
        None => Err("not asking without a terminal: pass --yes to overwrite the device".into()),
        Some(a) if a.trim() == CONFIRM_WORD => Ok(()),
        Some(_) => Err("not confirmed; nothing was written".into()),
    }
}

/// Install as `opts` says.
pub fn install(opts: &Options, fx: Effects<'_>) -> Result<Report> {
    let Effects {
        host,
        open,
        placer,
        ask,
        progress,
        say,
        cancel,
        workers,
    } = fx;
    // 1–2: the config, before anything else.
    let cfg = config::prepare(&opts.first_boot).context("first-boot config")?;
    if let Some(c) = &cfg {
        say(&format!("config: {}: valid", c.summary));
    }
    // 3: the image.
    enum Src {
        Release(Box<image::Release>),
        File(image::LocalImage),
    }
    let (src, what, size) = match &opts.image {
        Image::Release {
            base_url,
            channel,
            version,
        } => {
            let keys = image::load_keys(&opts.keys)?;
            let mut tree = image::tree_for(base_url);
            say(&format!("release: {base_url} channel {channel}"));
            let r = image::resolve(tree.as_mut(), &keys, channel, version.as_deref())
                .with_context(|| format!("release tree {base_url}"))?;
            let what = format!(
                "Keel {} ({channel}, {}, signed, disk image {} in {} chunks, {} compressed)",
                r.manifest.version,
                r.manifest.arch,
                human(r.disk.size),
                r.disk.chunks.len(),
                human(r.disk.compressed_size)
            );
            let size = r.disk.size;
            // The stream is opened after the device checks below.
            (Src::Release(Box::new(r)), what, size)
        }
        Image::File(p) => {
            let li = image::local_image(p)?;
            let what = format!(
                "{} ({}{}, not signed)",
                p.display(),
                human(li.size),
                if li.zstd { ", zstd" } else { ", raw" }
            );
            let size = li.size;
            (Src::File(li), what, size)
        }
    };
    say(&format!("image: {what}"));
    // 4: the device.
    let facts: DeviceFacts = host
        .inspect(&opts.device)
        .with_context(|| format!("looking at {}", opts.device.display()))?;
    device::check(&facts, size)?;
    let question = format!(
        "{} will be overwritten with {what}.\n{} holds: {}\nType '{CONFIRM_WORD}' to continue: ",
        opts.device.display(),
        opts.device.display(),
        facts.contents
    );
    let answer = if opts.yes { None } else { ask(&question) };
    if opts.yes {
        say(&format!(
            "{} holds: {}",
            opts.device.display(),
            facts.contents
        ));
    }
    if let Err(m) = confirmed(opts.yes, answer.as_deref()) {
        bail!("{m}");
    }
    // 5: the write.
    let mut blocks: Box<dyn Iterator<Item = Result<Block, ImageError>>> = match src {
        Src::Release(r) => {
            let Image::Release { base_url, .. } = &opts.image else {
                unreachable!("a release source comes from a release image");
            };
            let mut tree = image::tree_for(base_url);
            let input = tree.stream(&r.rel, r.disk.compressed_size)?;
            Box::new(image::ReleaseBlocks::start(
                "disk",
                &r.disk,
                r.manifest.chunk_size,
                input,
                workers,
            ))
        }
        Src::File(li) => Box::new(image::FileBlocks::start(&li)?),
    };
    let mut target = open(&opts.device, facts.kind)
        .with_context(|| format!("opening {} for writing", opts.device.display()))?;
    let req = place::Request {
        config: cfg,
        platform: opts.first_boot.platform.clone(),
    };
    let mut placed = String::new();
    let mut grows = None;
    let mut before_table = |head: &[u8], t: &mut dyn Target| -> Result<(), String> {
        let dev = write::AsBlock {
            t: std::cell::RefCell::new(t),
            size,
        };
        let l = place::layout(&place::HeadOver {
            head,
            dev: &dev,
            size,
        })?;
        grows = Some(l.root_grows);
        if req.config.is_some() || req.platform.is_some() {
            placed = placer.place(&l, &req)?;
        }
        Ok(())
    };
    let written = write::write_image(
        target.as_mut(),
        blocks.as_mut(),
        write::Job {
            image_size: size,
            device_size: facts.size,
            verify: opts.verify,
            cancel,
            progress,
            before_table: &mut before_table,
        },
    )?;
    match grows {
        Some(false) => say("warning: ROOT is not the last partition or lacks the grow-fs attribute: the first boot will not grow it"),
        Some(true) if facts.size > size => say(&format!(
            "the first boot grows ROOT by {} to the end of the disk",
            human(facts.size - size)
        )),
        _ => {}
    }
    Ok(Report {
        what,
        written,
        placed,
    })
}

/// Progress for people: a bar on a terminal, a line per 10 % otherwise.
#[derive(Debug)]
pub struct ProgressPrinter {
    tty: bool,
    last: Option<(Phase, u64)>,
    start: std::time::Instant,
}

impl ProgressPrinter {
    /// `tty`: stderr is a terminal.
    pub fn new(tty: bool) -> ProgressPrinter {
        ProgressPrinter {
            tty,
            last: None,
            start: std::time::Instant::now(),
        }
    }

    /// The text for `p`, if anything is to be printed.
    pub fn line(&mut self, p: Progress) -> Option<String> {
        let pct = (p.done.saturating_mul(100))
            .checked_div(p.total)
            .unwrap_or(100);
        let step = if self.tty { pct } else { pct / 10 * 10 };
        if self.last == Some((p.phase, step)) {
            return None;
        }
        if self.last.map(|l| l.0) != Some(p.phase) {
            self.start = std::time::Instant::now();
        }
        self.last = Some((p.phase, step));
        let what = match p.phase {
            Phase::Write => "writing",
            Phase::Verify => "verifying",
        };
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = p.done as f64 / secs / 1048576.0;
        if self.tty {
            let filled = (pct as usize * 30) / 100;
            Some(format!(
                "\r{what:9} [{}{}] {pct:3}% {} of {} {rate:.0} MiB/s\x1b[K",
                "#".repeat(filled),
                ".".repeat(30 - filled),
                human(p.done),
                human(p.total)
            ))
        } else {
            Some(format!(
                "{what} {step}% ({} of {})\n",
                human(p.done),
                human(p.total)
            ))
        }
    }

    /// Print to stderr.
    pub fn print(&mut self, p: Progress) {
        if let Some(l) = self.line(p) {
            let mut e = io::stderr().lock();
            let _ = e.write_all(l.as_bytes());
            if self.tty && p.done == p.total {
                let _ = e.write_all(b"\n");
            }
            let _ = e.flush();
        }
    }
}

#[cfg(test)]
mod install_tests;
#[cfg(test)]
mod write_tests;

//! First-boot ROOT growth and machine identity.
//!
//! A Keel image is written to (or cloned onto) a disk of any size. On every
//! boot, with ROOT mounted, keel-init checks from the disk itself whether
//! ROOT can grow, and on first boot it gives the machine its own identity:
//!
//! 1. **table**: move the backup GPT to the disk's end and extend ROOT (the
//!    last partition, if it has the DPS grow-fs attribute, bit 59) to the
//!    last usable LBA; on first boot also a new disk GUID and ROOT partition
//!    GUID. Both tables are written (backup first) only if something changes
//!    ([`keel_gpt::grow::grow_disk`]); a damaged table is never written.
//! 2. **kernel**: if the kernel's idea of ROOT's size is smaller than the
//!    table's, `BLKPG_RESIZE_PARTITION` (works while ROOT is mounted);
//!    `BLKRRPART` only as a fallback when nothing of the disk is in use.
//! 3. **filesystem**: if ext4 has fewer blocks than the partition holds,
//!    grow it online (`EXT4_IOC_RESIZE_FS`; the kernel journals the resize).
//! 4. **filesystem UUID** (first boot): a new random UUID, online
//!    (`EXT4_IOC_SETFSUUID`; the image's ROOT has `metadata_csum_seed`).
//!
//! Each step compares what is on disk with what should be there, so a power
//! cut anywhere leaves a disk the next boot completes; the first-boot
//! marker (written by the caller after provisioning) comes last. A failure
//! here is a warning: ROOT stays mounted at its old size, which is safe, and
//! the next boot tries again.
//!
//! The system calls are behind [`GrowthSys`]; [`Real`] is the kernel.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use keel_gpt::grow::{grow_disk, GrowError, GrowRequest};
use keel_gpt::{BlockDevice, Gpt, Uuid};
use thiserror::Error;
use tracing::{info, warn};

/// DPS attribute bit 59: the filesystem on this partition should grow to
/// fill it. keel-image sets it on ROOT; clearing it opts out of growth.
pub const GROW_FS: u64 = 1 << 59;
/// ROOT's label.
pub const ROOT_LABEL: &str = "ROOT";

const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// Errors of this module; each names the device.
#[derive(Debug, Error)]
pub enum GrowthError {
    /// The table step refused or failed (nothing was written if refused).
    #[error("{disk}: {source}")]
    Table {
        disk: String,
        #[source]
        source: GrowError,
    },
    /// Not an ext4 superblock.
    #[error("{device}: no ext4 superblock (magic {magic:#06x})")]
    NotExt4 { device: String, magic: u16 },
    /// An ext4 superblock claiming more than 2^64 bytes.
    #[error(
        "{device}: ext4 superblock: {blocks} blocks of {block_size} bytes is more than 2^64 bytes"
    )]
    TooLarge {
        device: String,
        blocks: u64,
        block_size: u64,
    },
    /// A system call failed.
    #[error("{what} {device}: {source}")]
    Sys {
        what: &'static str,
        device: String,
        #[source]
        source: io::Error,
    },
}

fn sys_err<'a>(what: &'static str, device: &'a str) -> impl FnOnce(io::Error) -> GrowthError + 'a {
    move |source| GrowthError::Sys {
        what,
        device: device.to_string(),
        source,
    }
}

/// The ext4 superblock fields growth needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4 {
    /// Block size in bytes.
    pub block_size: u64,
    /// Blocks in the filesystem.
    pub blocks: u64,
    /// Filesystem UUID.
    pub uuid: Uuid,
    /// The UUID can change without rewriting every checksum (no checksums,
    /// or `metadata_csum_seed`).
    pub uuid_changeable: bool,
}

impl Ext4 {
    /// Parse the 1024-byte superblock (read at byte 1024 of the device).
    pub fn parse(device: &str, sb: &[u8]) -> Result<Self, GrowthError> {
        let u16_at = |o: usize| {
            sb.get(o..o + 2)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |o: usize| {
            sb.get(o..o + 4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let magic = u16_at(0x38);
        let log = u32_at(0x18);
        if magic != EXT4_MAGIC || sb.len() < 1024 || log > 6 {
            return Err(GrowthError::NotExt4 {
                device: device.to_string(),
                magic,
            });
        }
        let incompat = u32_at(0x60);
        let ro_compat = u32_at(0x64);
        let hi = if incompat & INCOMPAT_64BIT != 0 {
            u64::from(u32_at(0x150))
        } else {
            0
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[0x68..0x78]);
        let checksums = ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0;
        let block_size = 1024u64 << log;
        let blocks = hi << 32 | u64::from(u32_at(0x04));
        // `bytes` must not overflow (docs/fuzzing.md, the superblocks target).
        if blocks.checked_mul(block_size).is_none() {
            return Err(GrowthError::TooLarge {
                device: device.to_string(),
                blocks,
                block_size,
            });
        }
        Ok(Ext4 {
            block_size,
            blocks,
            uuid: Uuid::from_bytes(uuid),
            uuid_changeable: !checksums || incompat & INCOMPAT_CSUM_SEED != 0,
        })
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks * self.block_size
    }
}

/// The system calls growth makes. Device arguments are nodes (`/dev/vda`).
pub trait GrowthSys {
    /// The kernel's size of a block device, in bytes.
    fn kernel_size(&self, device: &str) -> io::Result<u64>;
    /// `BLKPG_RESIZE_PARTITION` on `disk` (offsets in bytes).
    fn resize_partition(&self, disk: &str, number: u32, start: u64, length: u64) -> io::Result<()>;
    /// `BLKRRPART` on `disk`.
    fn reread_partitions(&self, disk: &str) -> io::Result<()>;
    /// Is anything of `disk` mounted or held (device-mapper)?
    fn disk_in_use(&self, disk: &str) -> io::Result<bool>;
    /// The 1024-byte ext4 superblock of `device`.
    fn superblock(&self, device: &str) -> io::Result<Vec<u8>>;
    /// Grow the ext4 mounted at `mountpoint` to `blocks`.
    fn resize_ext4(&self, mountpoint: &Path, blocks: u64) -> io::Result<()>;
    /// Set the UUID of the ext4 mounted at `mountpoint`.
    fn set_ext4_uuid(&self, mountpoint: &Path, uuid: Uuid) -> io::Result<()>;
    /// A fresh random UUID.
    fn new_uuid(&self) -> Uuid;
}

/// The kernel.
#[derive(Debug, Clone, Copy)]
pub struct Real;

fn sys_name(device: &str) -> &str {
    device.rsplit('/').next().unwrap_or(device)
}

impl GrowthSys for Real {
    fn kernel_size(&self, device: &str) -> io::Result<u64> {
        // /sys/class/block/*/size is in 512-byte units whatever the sector size.
        let p = format!("/sys/class/block/{}/size", sys_name(device));
        let s = fs::read_to_string(&p)?;
        s.trim()
            .parse::<u64>()
            .map(|n| n * 512)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{p}: {e}")))
    }
    fn resize_partition(&self, disk: &str, number: u32, start: u64, length: u64) -> io::Result<()> {
        crate::blk::resize_partition(&File::open(disk)?, number, start, length)
    }
    fn reread_partitions(&self, disk: &str) -> io::Result<()> {
        crate::blk::reread_partitions(&File::open(disk)?)
    }
    fn disk_in_use(&self, disk: &str) -> io::Result<bool> {
        let info = fs::read_to_string("/proc/self/mountinfo")?;
        if mounts_from(&info, disk) {
            return Ok(true);
        }
        let base = Path::new("/sys/class/block").join(sys_name(disk));
        for e in fs::read_dir(&base)?.flatten() {
            if let Ok(mut h) = fs::read_dir(e.path().join("holders")) {
                if h.next().is_some() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
    fn superblock(&self, device: &str) -> io::Result<Vec<u8>> {
        let mut sb = vec![0u8; 1024];
        FileExt::read_exact_at(&File::open(device)?, &mut sb, 1024)?;
        Ok(sb)
    }
    fn resize_ext4(&self, mountpoint: &Path, blocks: u64) -> io::Result<()> {
        crate::blk::resize_ext4(mountpoint, blocks)
    }
    fn set_ext4_uuid(&self, mountpoint: &Path, uuid: Uuid) -> io::Result<()> {
        crate::blk::set_ext4_uuid(mountpoint, *uuid.as_bytes())
    }
    fn new_uuid(&self) -> Uuid {
        Uuid::new_v4()
    }
}

/// Does `/proc/self/mountinfo` text show a mount from `disk` or one of its
/// partitions (`/dev/vda`, `/dev/vda7`, `/dev/nvme0n1p7`)?
pub fn mounts_from(mountinfo: &str, disk: &str) -> bool {
    mountinfo.lines().any(|l| {
        l.split_once(" - ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .is_some_and(|src| {
                src.strip_prefix(disk).is_some_and(|tail| {
                    let tail = tail.strip_prefix('p').unwrap_or(tail);
                    tail.chars().all(|c| c.is_ascii_digit())
                })
            })
    })
}

/// What growth did and the identity first boot gave the machine: fields
/// `growth` and `identity` of `/run/keel/boot.json` (the contract's types).
pub use keel_contract::boot_record::{GrowthRecord, Identity};

/// Where growth works.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The disk node (`/dev/vda`).
    pub disk: &'a str,
    /// ROOT's node (`/dev/vda7`).
    pub root: &'a str,
    /// Where ROOT is mounted (`/sysroot`).
    pub mountpoint: &'a Path,
    /// The table as keel-init read it (for ROOT's attributes).
    pub gpt: &'a Gpt,
    /// First boot: also randomise the disk GUID, ROOT's partition GUID and
    /// ROOT's filesystem UUID.
    pub first_boot: bool,
}

/// The result: what is on disk now, and what changed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The table now on disk, when the table step succeeded (the caller
    /// must use it from here on: the slot choice writes tries back).
    pub gpt: Option<Gpt>,
    /// Set when the partition or the filesystem grew.
    pub growth: Option<GrowthRecord>,
    /// Set on first boot when the disk GUID changed.
    pub identity: Option<Identity>,
    /// Steps that did not work (already logged as warnings).
    pub problems: Vec<String>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Run the growth and identity steps on `dev` (the disk opened read-write),
/// all of them on this thread. Never fails: what does not work is logged,
/// recorded in [`Outcome::problems`], and left for the next boot.
pub fn run(dev: &mut impl BlockDevice, sys: &impl GrowthSys, t: &Target<'_>) -> Outcome {
    let (mut out, job) = run_table(dev, sys, t);
    if let Some(job) = job {
        out.merge(job.run(sys));
    }
    out
}

/// Steps 1 and 2 (the table, the kernel). Returns the filesystem steps as a
/// job: they need only ROOT mounted, so keel-init runs them on a thread
/// while it opens USR, and joins before the first-boot marker.
pub fn run_table(
    dev: &mut impl BlockDevice,
    sys: &impl GrowthSys,
    t: &Target<'_>,
) -> (Outcome, Option<FsJob>) {
    let mut out = Outcome::default();
    match table_steps(dev, sys, t, &mut out) {
        Ok(job) => (out, Some(job)),
        Err(e) => {
            warn!("growth: {e}; ROOT keeps its size, the next boot tries again");
            out.problems.push(e.to_string());
            (out, None)
        }
    }
}

/// The filesystem half of growth: grow ext4 online to the partition, then
/// (first boot) give it a new UUID.
#[derive(Debug)]
pub struct FsJob {
    root: String,
    mountpoint: std::path::PathBuf,
    grow: bool,
    limit_bytes: u64,
    fs_uuid: Option<Uuid>,
    start: Instant,
    table_ms: f64,
    kernel_ms: f64,
    table_grew: bool,
    partition_from: u64,
    partition_to: u64,
}

/// What [`FsJob::run`] did.
#[derive(Debug, Default)]
pub struct FsOutcome {
    /// Set when the partition or the filesystem grew.
    pub growth: Option<GrowthRecord>,
    /// The new filesystem UUID.
    pub root_fs_uuid: Option<String>,
    /// What did not work (already logged).
    pub problems: Vec<String>,
}

impl Outcome {
    /// Take in the filesystem steps' results.
    pub fn merge(&mut self, fs: FsOutcome) {
        self.growth = fs.growth;
        if let Some(id) = self.identity.as_mut() {
            id.root_fs_uuid = fs.root_fs_uuid;
        }
        self.problems.extend(fs.problems);
    }
}

impl FsJob {
    /// Run steps 3 and 4. Never fails (see [`run`]).
    pub fn run(self, sys: &impl GrowthSys) -> FsOutcome {
        let mut out = FsOutcome::default();
        if let Err(e) = self.steps(sys, &mut out) {
            warn!("growth: {e}; the next boot tries again");
            out.problems.push(e.to_string());
        }
        out
    }

    fn steps(&self, sys: &impl GrowthSys, out: &mut FsOutcome) -> Result<(), GrowthError> {
        let root = self.root.as_str();
        // 3. The filesystem.
        let f = Instant::now();
        let sb = sys
            .superblock(root)
            .map_err(sys_err("reading the superblock of", root))?;
        let before = Ext4::parse(root, &sb)?;
        let want = self.limit_bytes / before.block_size;
        let mut after = before;
        if self.grow && want > before.blocks {
            sys.resize_ext4(&self.mountpoint, want)
                .map_err(sys_err("growing ext4 online (EXT4_IOC_RESIZE_FS) on", root))?;
            after.blocks = want;
            info!(
                "growth: ext4 on {root}: {} → {want} blocks of {} bytes ({:.1} ms)",
                before.blocks,
                before.block_size,
                ms(f)
            );
        }
        let fs_ms = ms(f);

        // 4. The filesystem UUID.
        if let Some(u) = self.fs_uuid {
            if before.uuid_changeable {
                match sys.set_ext4_uuid(&self.mountpoint, u) {
                    Ok(()) => {
                        info!("first boot: ROOT filesystem UUID {u} (was {})", before.uuid);
                        out.root_fs_uuid = Some(u.to_string());
                    }
                    Err(e) => {
                        let m = format!("setting the filesystem UUID of {root}: {e}");
                        warn!("first boot: {m}; keeping {}", before.uuid);
                        out.problems.push(m);
                    }
                }
            } else {
                let m = format!(
                    "{root}: ext4 has metadata_csum without metadata_csum_seed; its UUID cannot change while mounted"
                );
                warn!("first boot: {m}; keeping {}", before.uuid);
                out.problems.push(m);
            }
        }

        if self.table_grew || after.blocks > before.blocks {
            let r = GrowthRecord {
                from_bytes: before.bytes(),
                to_bytes: after.bytes(),
                partition_from_bytes: self.partition_from,
                partition_to_bytes: self.partition_to,
                ms: ms(self.start),
                table_ms: self.table_ms,
                kernel_ms: self.kernel_ms,
                fs_ms,
                wait_ms: 0.0,
            };
            info!(
                "growth: ROOT grew from {} to {} bytes in {:.1} ms",
                r.from_bytes, r.to_bytes, r.ms
            );
            out.growth = Some(r);
        }
        Ok(())
    }
}

fn table_steps(
    dev: &mut impl BlockDevice,
    sys: &impl GrowthSys,
    t: &Target<'_>,
    out: &mut Outcome,
) -> Result<FsJob, GrowthError> {
    let start = Instant::now();
    let ss = t.gpt.sector_size;
    let grow = t
        .gpt
        .by_name(ROOT_LABEL)
        .is_some_and(|p| p.attributes & GROW_FS != 0);
    if !grow {
        info!("growth: ROOT has no grow-fs attribute (GPT bit 59): not growing it");
    }
    let (disk_guid, part_guid, fs_uuid) = if t.first_boot {
        (
            Some(sys.new_uuid()),
            Some(sys.new_uuid()),
            Some(sys.new_uuid()),
        )
    } else {
        (None, None, None)
    };

    // 1. The table.
    let table = grow_disk(
        dev,
        ss,
        &GrowRequest {
            label: ROOT_LABEL,
            grow,
            disk_guid,
            partition_guid: part_guid,
        },
    )
    .map_err(|source| GrowthError::Table {
        disk: t.disk.to_string(),
        source,
    })?;
    let table_ms = ms(start);
    let part = table.partition.clone();
    let part_bytes = part.sectors() * ss;
    if table.wrote {
        match &table.growth {
            Some(g) => info!(
                "growth: GPT of {}: backup moved to the end, ROOT {} → {} bytes ({:.1} ms)",
                t.disk,
                g.old_bytes(),
                g.new_bytes(),
                table_ms
            ),
            None => info!("growth: GPT of {} written ({:.1} ms)", t.disk, table_ms),
        }
    }
    if let (Some(dg), Some(pg)) = (disk_guid, part_guid) {
        info!(
            "first boot: disk GUID {} (was {}), ROOT partition GUID {pg}",
            dg, table.old_disk_guid
        );
        out.identity = Some(Identity {
            disk_guid: dg.to_string(),
            old_disk_guid: table.old_disk_guid.to_string(),
            root_partuuid: pg.to_string(),
            root_fs_uuid: None,
        });
    }
    let partition_from = table.growth.as_ref().map_or(part_bytes, |g| g.old_bytes());
    out.gpt = Some(table.gpt);

    // 2. The kernel.
    let k = Instant::now();
    let kernel = sys
        .kernel_size(t.root)
        .map_err(sys_err("reading the kernel's size of", t.root))?;
    let kernel_grew = kernel < part_bytes;
    if kernel_grew {
        if let Err(e) = sys.resize_partition(t.disk, part.number, part.first_lba * ss, part_bytes) {
            let in_use = sys
                .disk_in_use(t.disk)
                .map_err(sys_err("checking the mounts of", t.disk))?;
            if in_use {
                return Err(GrowthError::Sys {
                    what: "BLKPG_RESIZE_PARTITION (and BLKRRPART is unsafe while the disk is in use) on",
                    device: t.disk.to_string(),
                    source: e,
                });
            }
            warn!(
                "growth: BLKPG_RESIZE_PARTITION on {}: {e}; re-reading the whole table",
                t.disk
            );
            sys.reread_partitions(t.disk)
                .map_err(sys_err("BLKRRPART on", t.disk))?;
        }
    }
    let kernel = sys
        .kernel_size(t.root)
        .map_err(sys_err("reading the kernel's size of", t.root))?;
    let kernel_ms = ms(k);
    if kernel_grew {
        info!(
            "growth: kernel: {} is {kernel} bytes ({kernel_ms:.1} ms)",
            t.root
        );
    }

    Ok(FsJob {
        root: t.root.to_string(),
        mountpoint: t.mountpoint.to_path_buf(),
        grow,
        limit_bytes: kernel.min(part_bytes),
        fs_uuid,
        start,
        table_ms,
        kernel_ms,
        table_grew: table.growth.is_some(),
        partition_from,
        partition_to: part_bytes,
    })
}

/// Open the disk read-write for [`run`].
pub fn open_disk(node: &str) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(node)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use keel_gpt::{types, Partition, Which};

    use super::*;

    const MIB: u64 = 1 << 20;
    const SS: u64 = 512;
    const ROOT_FIRST: u64 = 4096;

    fn image(grow_attr: bool, extra_after_root: bool) -> Vec<u8> {
        let size = 4 * MIB;
        let mut disk = vec![0u8; size as usize];
        let mut g = Gpt::new(size, SS).unwrap();
        let mut add = |number, name: &str, t, first, last, attributes| {
            g.set_partition(Partition {
                number,
                type_guid: t,
                unique_guid: Uuid::new_v4(),
                first_lba: first,
                last_lba: last,
                attributes,
                name: name.into(),
            })
            .unwrap();
        };
        add(2, "USR-A", types::USR_X86_64, 2048, 4095, 1 << 48 | 1 << 56);
        add(
            7,
            "ROOT",
            types::ROOT_X86_64,
            ROOT_FIRST,
            6143,
            if grow_attr { GROW_FS } else { 0 },
        );
        if extra_after_root {
            add(8, "EXTRA", types::LINUX_DATA, 6144, 7000, 0);
        }
        g.write_protective_mbr(&mut disk).unwrap();
        g.write(&mut disk).unwrap();
        disk
    }

    fn superblock(blocks: u64, seed: bool) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x04..0x08].copy_from_slice(&(blocks as u32).to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4096
        sb[0x38..0x3a].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        let incompat = INCOMPAT_64BIT | if seed { INCOMPAT_CSUM_SEED } else { 0 };
        sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        sb[0x64..0x68].copy_from_slice(&RO_COMPAT_METADATA_CSUM.to_le_bytes());
        sb[0x68..0x78].fill(0x11);
        sb[0x150..0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        sb
    }

    /// A kernel and an ext4 in memory; records every call.
    struct Fake {
        kernel: RefCell<BTreeMap<String, u64>>,
        blocks: RefCell<u64>,
        seed: bool,
        blkpg_fails: bool,
        in_use: bool,
        calls: RefCell<Vec<String>>,
        next: RefCell<u8>,
    }

    impl Fake {
        fn new(root_bytes: u64) -> Self {
            Fake {
                kernel: RefCell::new(BTreeMap::from([("/dev/vda7".to_string(), root_bytes)])),
                blocks: RefCell::new(root_bytes / 4096),
                seed: true,
                blkpg_fails: false,
                in_use: true,
                calls: RefCell::new(Vec::new()),
                next: RefCell::new(0),
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl GrowthSys for Fake {
        fn kernel_size(&self, device: &str) -> io::Result<u64> {
            Ok(self.kernel.borrow()[device])
        }
        fn resize_partition(&self, disk: &str, n: u32, start: u64, len: u64) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("blkpg {disk} {n} {start} {len}"));
            if self.blkpg_fails {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.kernel.borrow_mut().insert(format!("{disk}{n}"), len);
            Ok(())
        }
        fn reread_partitions(&self, disk: &str) -> io::Result<()> {
            self.calls.borrow_mut().push(format!("rrpart {disk}"));
            Ok(())
        }
        fn disk_in_use(&self, _disk: &str) -> io::Result<bool> {
            Ok(self.in_use)
        }
        fn superblock(&self, _device: &str) -> io::Result<Vec<u8>> {
            Ok(superblock(*self.blocks.borrow(), self.seed))
        }
        fn resize_ext4(&self, mp: &Path, blocks: u64) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("resize {} {blocks}", mp.display()));
            *self.blocks.borrow_mut() = blocks;
            Ok(())
        }
        fn set_ext4_uuid(&self, mp: &Path, uuid: Uuid) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("uuid {} {uuid}", mp.display()));
            Ok(())
        }
        fn new_uuid(&self) -> Uuid {
            let mut n = self.next.borrow_mut();
            *n += 1;
            Uuid::from_bytes([*n; 16])
        }
    }

    fn target<'a>(gpt: &'a Gpt, first_boot: bool) -> Target<'a> {
        Target {
            disk: "/dev/vda",
            root: "/dev/vda7",
            mountpoint: Path::new("/sysroot"),
            gpt,
            first_boot,
        }
    }

    fn grown(mut disk: Vec<u8>, to: u64) -> (Vec<u8>, Gpt) {
        disk.resize(to as usize, 0);
        let (g, _) = Gpt::read(&disk, SS).unwrap();
        (disk, g)
    }

    #[test]
    fn first_boot_grows_table_kernel_and_fs_and_randomises() {
        let (mut disk, g) = grown(image(true, false), 64 * MIB);
        let root_before = (6143 - ROOT_FIRST + 1) * SS;
        let sys = Fake::new(root_before);
        let out = run(&mut disk, &sys, &target(&g, true));
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let last = 64 * MIB / SS - 34;
        let new_bytes = (last - ROOT_FIRST + 1) * SS;
        assert_eq!(
            sys.calls(),
            vec![
                format!("blkpg /dev/vda 7 {} {new_bytes}", ROOT_FIRST * SS),
                format!("resize /sysroot {}", new_bytes / 4096),
                format!("uuid /sysroot {}", Uuid::from_bytes([3; 16])),
            ]
        );
        let r = out.growth.unwrap();
        assert_eq!(
            (r.from_bytes, r.to_bytes),
            (root_before, new_bytes / 4096 * 4096)
        );
        assert_eq!(
            (r.partition_from_bytes, r.partition_to_bytes),
            (root_before, new_bytes)
        );
        let id = out.identity.unwrap();
        assert_eq!(id.disk_guid, Uuid::from_bytes([1; 16]).to_string());
        assert_eq!(id.old_disk_guid, g.disk_guid.to_string());
        assert_eq!(id.root_fs_uuid, Some(Uuid::from_bytes([3; 16]).to_string()));
        // The table on disk is the one returned, grown, with the new GUIDs.
        let (d, rep) = Gpt::read(&disk, SS).unwrap();
        assert_eq!(rep.used, Which::Primary);
        assert!(!rep.backup_misplaced);
        assert_eq!(d.disk_guid, Uuid::from_bytes([1; 16]));
        let root = d.by_name("ROOT").unwrap();
        assert_eq!(root.last_lba, last);
        assert_eq!(root.unique_guid, Uuid::from_bytes([2; 16]));
        assert_eq!(out.gpt.unwrap().partitions, d.partitions);
    }

    #[test]
    fn second_boot_changes_nothing() {
        let (mut disk, g) = grown(image(true, false), 64 * MIB);
        let sys = Fake::new((6143 - ROOT_FIRST + 1) * SS);
        run(&mut disk, &sys, &target(&g, true));
        let after_first = disk.clone();
        let calls = sys.calls().len();
        let (g2, _) = Gpt::read(&disk, SS).unwrap();
        let out = run(&mut disk, &sys, &target(&g2, false));
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert!(out.growth.is_none() && out.identity.is_none());
        assert_eq!(sys.calls().len(), calls, "no system call changed anything");
        assert!(disk == after_first, "nothing written");
    }

    /// Power cut after the table was written (the kernel and the filesystem
    /// still small): the next boot sees the partition bigger than ext4 and
    /// grows only the filesystem.
    #[test]
    fn cut_after_the_table_is_completed() {
        let (mut disk, _) = grown(image(true, false), 64 * MIB);
        let small = (6143 - ROOT_FIRST + 1) * SS;
        let sys = Fake::new(small);
        keel_gpt::grow::grow_disk(
            &mut disk,
            SS,
            &GrowRequest {
                label: ROOT_LABEL,
                grow: true,
                disk_guid: None,
                partition_guid: None,
            },
        )
        .unwrap();
        // Reboot: the kernel reads the new table, ext4 is still small.
        let (g2, _) = Gpt::read(&disk, SS).unwrap();
        let root_bytes = g2.by_name("ROOT").unwrap().sectors() * SS;
        sys.kernel
            .borrow_mut()
            .insert("/dev/vda7".into(), root_bytes);
        let out = run(&mut disk, &sys, &target(&g2, false));
        assert_eq!(
            sys.calls(),
            vec![format!("resize /sysroot {}", root_bytes / 4096)]
        );
        let r = out.growth.unwrap();
        assert_eq!(r.from_bytes, small);
        assert_eq!(r.partition_from_bytes, root_bytes);
    }

    #[test]
    fn blkpg_failure_with_the_disk_in_use_stops_before_the_fs() {
        let (mut disk, g) = grown(image(true, false), 64 * MIB);
        let mut sys = Fake::new((6143 - ROOT_FIRST + 1) * SS);
        sys.blkpg_fails = true;
        let out = run(&mut disk, &sys, &target(&g, false));
        assert_eq!(sys.calls().len(), 1, "{:?}", sys.calls());
        assert!(out.growth.is_none());
        assert!(out.gpt.is_some(), "the table was written and must be used");
        assert!(
            out.problems[0].starts_with("BLKPG_RESIZE_PARTITION (and BLKRRPART is unsafe while the disk is in use) on /dev/vda"),
            "{:?}",
            out.problems
        );
    }

    #[test]
    fn blkpg_failure_falls_back_to_blkrrpart_when_nothing_is_mounted() {
        let (mut disk, g) = grown(image(true, false), 64 * MIB);
        let mut sys = Fake::new((6143 - ROOT_FIRST + 1) * SS);
        sys.blkpg_fails = true;
        sys.in_use = false;
        let out = run(&mut disk, &sys, &target(&g, false));
        assert!(sys.calls().contains(&"rrpart /dev/vda".to_string()));
        assert!(out.problems.is_empty(), "{:?}", out.problems);
    }

    #[test]
    fn root_not_last_is_a_warning_and_no_write() {
        let (mut disk, g) = grown(image(true, true), 64 * MIB);
        let before = disk.clone();
        let sys = Fake::new((6143 - ROOT_FIRST + 1) * SS);
        let out = run(&mut disk, &sys, &target(&g, true));
        assert!(out.gpt.is_none() && out.growth.is_none() && out.identity.is_none());
        assert!(sys.calls().is_empty());
        assert!(disk == before);
        assert_eq!(
            out.problems,
            vec![
                "/dev/vda: partition 7 (ROOT) is not the last partition: partition 8 (EXTRA) \
                 starts at LBA 6144, after it; only the last partition can grow"
            ]
        );
    }

    #[test]
    fn without_grow_fs_only_the_backup_moves() {
        let (mut disk, g) = grown(image(false, false), 64 * MIB);
        let sys = Fake::new((6143 - ROOT_FIRST + 1) * SS);
        let out = run(&mut disk, &sys, &target(&g, false));
        assert!(out.growth.is_none());
        assert!(sys.calls().is_empty());
        let (d, rep) = Gpt::read(&disk, SS).unwrap();
        assert!(!rep.backup_misplaced);
        assert_eq!(d.by_name("ROOT").unwrap().last_lba, 6143);
    }

    #[test]
    fn uuid_without_csum_seed_is_kept_with_a_warning() {
        let (mut disk, g) = grown(image(true, false), 4 * MIB);
        let mut sys = Fake::new((6143 - ROOT_FIRST + 1) * SS);
        sys.seed = false;
        let out = run(&mut disk, &sys, &target(&g, true));
        assert!(!sys.calls().iter().any(|c| c.starts_with("uuid")));
        assert!(out.problems[0].contains("without metadata_csum_seed"));
        assert_eq!(out.identity.unwrap().root_fs_uuid, None);
    }

    #[test]
    fn superblock_parse() {
        let e = Ext4::parse("/dev/vda7", &superblock(5 << 32 | 7, true)).unwrap();
        assert_eq!(e.block_size, 4096);
        assert_eq!(e.blocks, 5 << 32 | 7);
        assert!(e.uuid_changeable);
        assert_eq!(e.uuid, Uuid::from_bytes([0x11; 16]));
        assert!(
            !Ext4::parse("x", &superblock(1, false))
                .unwrap()
                .uuid_changeable
        );
        let err = Ext4::parse("/dev/vda7", &[0u8; 1024]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/vda7: no ext4 superblock (magic 0x0000)"
        );
        assert!(Ext4::parse("x", &[]).is_err());
    }

    /// A superblock whose blocks times block size passes 2^64 bytes is
    /// refused by name instead of overflowing in `bytes` (an overflow
    /// panic in a debug build, a wrapped size in release).
    #[test]
    fn superblock_size_past_u64_refused() {
        let mut sb = superblock(u64::MAX, true);
        sb[0x18..0x1c].copy_from_slice(&6u32.to_le_bytes()); // 65536
        let err = Ext4::parse("/dev/vda7", &sb).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/vda7: ext4 superblock: 18446744073709551615 blocks of 65536 bytes is more than 2^64 bytes"
        );
        // The largest that fits still parses, and its size is exact.
        let blocks = u64::MAX / 65536;
        let mut sb = superblock(blocks, true);
        sb[0x18..0x1c].copy_from_slice(&6u32.to_le_bytes());
        assert_eq!(Ext4::parse("x", &sb).unwrap().bytes(), blocks * 65536);
    }

    #[test]
    fn mountinfo_sources() {
        let info = "22 1 252:7 / /sysroot rw,relatime - ext4 /dev/vda7 rw\n\
                    23 22 0:5 / /dev rw - devtmpfs devtmpfs rw\n";
        assert!(mounts_from(info, "/dev/vda"));
        assert!(!mounts_from(info, "/dev/vdb"));
        assert!(!mounts_from(info, "/dev/vd"));
        let nvme = "1 1 259:1 / / rw - ext4 /dev/nvme0n1p7 rw\n";
        assert!(mounts_from(nvme, "/dev/nvme0n1"));
    }
}

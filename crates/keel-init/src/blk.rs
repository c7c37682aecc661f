//! Block-device and ext4 ioctls for first-boot growth: tell the kernel a
//! partition grew (`BLKPG_RESIZE_PARTITION`, `BLKRRPART`) or exists
//! (`BLKPG_ADD_PARTITION`, for a disk booted from its backup GPT), grow a mounted
//! ext4 (`EXT4_IOC_RESIZE_FS`) and give it a new UUID
//! (`EXT4_IOC_SETFSUUID`, Linux ≥ 6.0, needs `metadata_csum_seed` when
//! `metadata_csum` is on). All unsafe code of this domain is in this module.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

// <linux/fs.h>, <linux/blkpg.h>: _IO(0x12, 105), _IO(0x12, 95).
const BLKPG: u32 = 0x1269;
const BLKRRPART: u32 = 0x125f;
const BLKPG_ADD_PARTITION: i32 = 1;
const BLKPG_RESIZE_PARTITION: i32 = 3;
// fs/ext4/ext4.h: _IOW('f', 16, __u64) and _IOW('f', 44, struct fsuuid)
// (struct fsuuid is two __u32 and a flexible array: 8 bytes).
const EXT4_IOC_RESIZE_FS: u32 = 0x4008_6610;
const EXT4_IOC_SETFSUUID: u32 = 0x4008_662c;

/// `struct blkpg_partition`.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut BlkpgPartition,
}

/// `struct fsuuid` followed by its 16 UUID bytes.
#[repr(C)]
struct FsUuid {
    len: u32,
    flags: u32,
    uuid: [u8; 16],
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Tell the kernel partition `number` of `disk` now spans `length` bytes
/// from `start` (both in bytes). Works while the partition is mounted.
pub fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    blkpg(disk, BLKPG_RESIZE_PARTITION, number, start, length)
}

/// Tell the kernel about partition `number` of `disk` (offsets in bytes),
/// e.g. one its own GPT parser did not find.
pub fn add_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    blkpg(disk, BLKPG_ADD_PARTITION, number, start, length)
}

fn blkpg(disk: &File, op: i32, number: u32, start: u64, length: u64) -> io::Result<()> {
    let to_i64 =
        |v: u64| i64::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mut part = BlkpgPartition {
        start: to_i64(start)?,
        length: to_i64(length)?,
        pno: i32::try_from(number).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as i32,
        data: &mut part,
    };
    // SAFETY: `arg` and the `part` it points to are live, properly laid out
    // (#[repr(C)] mirrors <linux/blkpg.h>) and outlive the call; the kernel
    // reads `datalen` bytes from `data` and writes nothing; the fd is open.
    check(unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut arg) })
}

/// Ask the kernel to re-read the whole partition table (fails with EBUSY
/// while any partition of the disk is in use).
pub fn reread_partitions(disk: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the fd is an open block device.
    check(unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART as _, 0) })
}

/// Grow the ext4 mounted at `mountpoint` to `blocks` filesystem blocks.
pub fn resize_ext4(mountpoint: &Path, blocks: u64) -> io::Result<()> {
    let dir = File::open(mountpoint)?;
    let n: u64 = blocks;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one __u64 through the pointer, which
    // points to a live local; the fd is an open directory on the ext4.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS as _, &n) })
}

/// Give the ext4 mounted at `mountpoint` the UUID `uuid` (online).
pub fn set_ext4_uuid(mountpoint: &Path, uuid: [u8; 16]) -> io::Result<()> {
    let dir = File::open(mountpoint)?;
    let arg = FsUuid {
        len: 16,
        flags: 0,
        uuid,
    };
    // SAFETY: the kernel reads the 8-byte header and `len` (16) UUID bytes
    // that follow it, all inside `arg`, a live #[repr(C)] local; the fd is
    // an open directory on the ext4.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_SETFSUUID as _, &arg) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
        dir << 30 | (size as u32) << 16 | (ty as u32) << 8 | nr as u32
    }

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        assert_eq!(BLKPG, ioc(0, 0x12, 105, 0));
        assert_eq!(BLKRRPART, ioc(0, 0x12, 95, 0));
        assert_eq!(EXT4_IOC_RESIZE_FS, ioc(1, b'f', 16, 8));
        assert_eq!(EXT4_IOC_SETFSUUID, ioc(1, b'f', 44, 8));
    }

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
        assert_eq!(std::mem::size_of::<FsUuid>(), 24);
    }
}

//! The few system calls without a safe wrapper in rustix: loop devices
//! (attach a file or disk at an offset), `BLKRRPART`, and the SIGINT/SIGTERM
//! flag. Every `unsafe` block of the crate is here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const BLKRRPART: libc::c_ulong = 0x125F;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// A loop device over part of a file or disk; detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    file: File,
}

impl LoopDevice {
    /// Attach `len` bytes of `backing` from `offset` to a free loop device.
    pub fn attach(backing: &Path, offset: u64, len: u64) -> io::Result<LoopDevice> {
        let back = OpenOptions::new().read(true).write(true).open(backing)?;
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        // Another program may take the free device between the two calls:
        // then LOOP_SET_FD says EBUSY and the next free one is asked for.
        for _ in 0..16 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a
            // number or -1; the descriptor is open for the whole call.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            // SAFETY: LOOP_SET_FD takes a descriptor number by value; both
            // descriptors stay open for the call.
            let r = unsafe {
                libc::ioctl(
                    file.as_raw_fd(),
                    LOOP_SET_FD as _,
                    back.as_raw_fd() as libc::c_ulong,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EBUSY) {
                    continue;
                }
                return Err(e);
            }
            let mut info = LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: offset,
                lo_sizelimit: len,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            };
            let name = b"keel-install";
            info.lo_file_name[..name.len()].copy_from_slice(name);
            let dev = LoopDevice { path, file };
            // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`, which
            // `info` is (repr(C), same field order and sizes), alive for the call.
            let r = unsafe {
                libc::ioctl(
                    dev.file.as_raw_fd(),
                    LOOP_SET_STATUS64 as _,
                    &info as *const LoopInfo64,
                )
            };
            if r < 0 {
                // dropping `dev` detaches it
                return Err(io::Error::last_os_error());
            }
            return Ok(dev);
        }
        Err(io::Error::other("no free loop device after 16 tries"))
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // SAFETY: LOOP_CLR_FD takes no argument; the descriptor is open.
        // With autoclear the kernel detaches on the last close anyway.
        unsafe {
            libc::ioctl(self.file.as_raw_fd(), LOOP_CLR_FD as _, 0);
        }
    }
}

/// Ask the kernel to re-read a disk's partition table (block devices).
pub fn reread_partitions(f: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the descriptor is open.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART as _, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turn SIGINT, SIGTERM and SIGHUP into a flag the writer checks between
/// chunks, so Ctrl-C ends in the same cleanup as a failed write.
pub fn catch_interrupts() -> &'static AtomicBool {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only stores
        // to an atomic, which is async-signal-safe; `signal` installs it.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    &INTERRUPTED
}

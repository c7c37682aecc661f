//! Device-mapper through its ioctls on `/dev/mapper/control`.
//!
//! Hand-written instead of using the `devicemapper` crate: that crate
//! generates its bindings with bindgen (libclang on every build machine) and
//! brings a larger dependency tree into the initramfs, while keel-init needs
//! four stable ioctls of the kernel's dm-ioctl ABI (version 4): create a
//! device, load a table, resume it, remove it. All unsafe code of the
//! device-mapper domain is in this module.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use thiserror::Error;

const DM_IOCTL_SIZE: usize = 312;
const DM_SPEC_SIZE: usize = 40;
const DM_NAME_LEN: usize = 128;
// _IOWR(0xfd, nr, struct dm_ioctl): direction 3, size 312.
const fn dm_req(nr: u32) -> u32 {
    (3 << 30) | ((DM_IOCTL_SIZE as u32) << 16) | (0xfd << 8) | nr
}
const DM_DEV_CREATE: u32 = dm_req(3);
const DM_DEV_REMOVE: u32 = dm_req(4);
const DM_DEV_SUSPEND: u32 = dm_req(6);
const DM_TABLE_LOAD: u32 = dm_req(9);

const DM_READONLY_FLAG: u32 = 1 << 0;

/// A device-mapper failure.
#[derive(Debug, Error)]
pub enum DmError {
    /// Opening the control device.
    #[error("opening /dev/mapper/control: {0}")]
    Control(#[source] io::Error),
    /// An ioctl failed.
    #[error("device-mapper {op} of {name}: {source}")]
    Ioctl {
        op: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    /// Name or parameters too long for the ABI.
    #[error("device-mapper {name}: {what} too long")]
    TooLong { name: String, what: &'static str },
}

/// A created device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// The control device.
#[derive(Debug)]
pub struct Control {
    file: File,
}

fn header(name: &str, flags: u32, data_size: usize) -> Result<Vec<u8>, DmError> {
    if name.len() >= DM_NAME_LEN {
        return Err(DmError::TooLong {
            name: name.into(),
            what: "name",
        });
    }
    let mut b = vec![0u8; data_size.max(DM_IOCTL_SIZE)];
    b[0..4].copy_from_slice(&4u32.to_ne_bytes()); // version 4.0.0
    let len = b.len() as u32;
    b[12..16].copy_from_slice(&len.to_ne_bytes()); // data_size
    b[16..20].copy_from_slice(&(DM_IOCTL_SIZE as u32).to_ne_bytes()); // data_start
    b[28..32].copy_from_slice(&flags.to_ne_bytes());
    b[48..48 + name.len()].copy_from_slice(name.as_bytes());
    Ok(b)
}

/// Build the TABLE_LOAD buffer for one target (pure; tested).
pub fn table_load_buffer(
    name: &str,
    target: &str,
    sectors: u64,
    params: &str,
    read_only: bool,
) -> Result<Vec<u8>, DmError> {
    // Parameters are NUL-terminated and the spec padded to 8 bytes.
    let plen = (params.len() + 1).div_ceil(8) * 8;
    if target.len() >= 16 {
        return Err(DmError::TooLong {
            name: name.into(),
            what: "target type",
        });
    }
    let total = DM_IOCTL_SIZE + DM_SPEC_SIZE + plen;
    let flags = if read_only { DM_READONLY_FLAG } else { 0 };
    let mut b = header(name, flags, total)?;
    b[20..24].copy_from_slice(&1u32.to_ne_bytes()); // target_count
    let s = DM_IOCTL_SIZE;
    b[s..s + 8].copy_from_slice(&0u64.to_ne_bytes()); // sector_start
    b[s + 8..s + 16].copy_from_slice(&sectors.to_ne_bytes()); // length
    b[s + 20..s + 24].copy_from_slice(&((DM_SPEC_SIZE + plen) as u32).to_ne_bytes()); // next
    b[s + 24..s + 24 + target.len()].copy_from_slice(target.as_bytes());
    let p = s + DM_SPEC_SIZE;
    b[p..p + params.len()].copy_from_slice(params.as_bytes());
    Ok(b)
}

impl Control {
    /// Open `/dev/mapper/control` (or the misc device node devtmpfs made).
    pub fn open() -> Result<Self, DmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/mapper/control")
            .map_err(DmError::Control)?;
        Ok(Control { file })
    }

    fn ioctl(&self, req: u32, buf: &mut [u8], op: &'static str, name: &str) -> Result<(), DmError> {
        // SAFETY: `buf` is a live, exclusively borrowed buffer of at least
        // 312 bytes laid out as `struct dm_ioctl` (+ payload) whose
        // `data_size` field equals `buf.len()`, so the kernel reads and writes
        // only within it; the fd is a valid open control device.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), req as _, buf.as_mut_ptr()) };
        if rc < 0 {
            return Err(DmError::Ioctl {
                op,
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Create a read-only single-target device `name`, load `target` with
    /// `params` over `sectors`, and activate it. On failure the half-made
    /// device is removed.
    pub fn create_readonly(
        &self,
        name: &str,
        target: &str,
        sectors: u64,
        params: &str,
    ) -> Result<DevNum, DmError> {
        let mut b = header(name, DM_READONLY_FLAG, DM_IOCTL_SIZE)?;
        self.ioctl(DM_DEV_CREATE, &mut b, "create", name)?;
        let res = (|| {
            let mut t = table_load_buffer(name, target, sectors, params, true)?;
            self.ioctl(DM_TABLE_LOAD, &mut t, "table load", name)?;
            let mut r = header(name, 0, DM_IOCTL_SIZE)?;
            self.ioctl(DM_DEV_SUSPEND, &mut r, "resume", name)?;
            let dev = u64::from_ne_bytes(r[40..48].try_into().unwrap_or([0; 8]));
            // The kernel's huge_encode_dev.
            Ok(DevNum {
                major: ((dev >> 8) & 0xfff) as u32,
                minor: ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32,
            })
        })();
        if res.is_err() {
            let _ = self.remove(name);
        }
        res
    }

    /// Remove device `name`.
    pub fn remove(&self, name: &str) -> Result<(), DmError> {
        let mut b = header(name, 0, DM_IOCTL_SIZE)?;
        self.ioctl(DM_DEV_REMOVE, &mut b, "remove", name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        // Values from <linux/dm-ioctl.h> on x86-64.
        assert_eq!(DM_DEV_CREATE, 0xc138_fd03);
        assert_eq!(DM_TABLE_LOAD, 0xc138_fd09);
        assert_eq!(DM_DEV_SUSPEND, 0xc138_fd06);
    }

    #[test]
    fn table_buffer_layout() {
        let b = table_load_buffer("usr", "verity", 8000, "1 a b", true).unwrap();
        assert_eq!(b.len(), 312 + 40 + 8);
        assert_eq!(u32::from_ne_bytes(b[12..16].try_into().unwrap()), 360);
        assert_eq!(&b[48..52], b"usr\0");
        assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 1);
        assert_eq!(u64::from_ne_bytes(b[320..328].try_into().unwrap()), 8000);
        assert_eq!(&b[336..342], b"verity");
        assert_eq!(&b[352..358], b"1 a b\0");
        assert_eq!(u32::from_ne_bytes(b[28..32].try_into().unwrap()) & 1, 1);
    }

    #[test]
    fn long_names_refused() {
        let n = "x".repeat(200);
        assert!(matches!(
            table_load_buffer(&n, "verity", 1, "", true),
            Err(DmError::TooLong { .. })
        ));
    }
}

//! The on-disk superblocks keel-init reads at boot before anything is
//! verified: the dm-verity superblock of the hash partition and the ext4
//! superblock of the data partition, and /proc/self/mountinfo. Arbitrary
//! bytes must never panic, and whatever parses yields a table and a size.
#![no_main]
use libfuzzer_sys::fuzz_target;

use keel_init::{growth, verity};

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = verity::Superblock::parse("fuzz", data) {
        let _ = sb.data_bytes();
        let _ = sb.table("254:0", "254:1", "00");
    }
    if let Ok(e) = growth::Ext4::parse("fuzz", data) {
        let _ = e.bytes();
    }
    let _ = growth::mounts_from(&String::from_utf8_lossy(data), "/dev/vda");
});

//! Arbitrary bytes as a disk: the GPT reader (both headers, the backup
//! search, entry validation) and, on whatever it accepts, the first-boot
//! growth planner and writer on a larger copy. Neither may panic, and a
//! grown table must read back.
#![no_main]
use keel_gpt::grow::{grow_disk, GrowRequest};
use keel_gpt::Gpt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for ss in [512, 4096] {
        let disk = data.to_vec();
        let Ok((gpt, _)) = Gpt::read(&disk, ss) else {
            continue;
        };
        let Some(label) = gpt.partitions.last().map(|p| p.name.clone()) else {
            continue;
        };
        // The same disk, grown by a few sectors.
        let mut grown = disk.clone();
        grown.resize(disk.len() + 8 * ss as usize, 0);
        let req = GrowRequest {
            label: &label,
            grow: true,
            disk_guid: None,
            partition_guid: None,
        };
        if grow_disk(&mut grown, ss, &req).is_ok() {
            assert!(Gpt::read(&grown, ss).is_ok(), "a grown table reads back");
        }
    }
});

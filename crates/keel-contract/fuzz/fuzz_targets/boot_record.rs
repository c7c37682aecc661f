//! boot.json: any bytes, never a panic; a record that parses is written
//! back complete and parses again to the same slot, disk and flags.
#![no_main]
use keel_contract::BootRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = BootRecord::parse("fuzz", data) else {
        return;
    };
    let json = r.to_json().expect("a parsed record serialises");
    let back = BootRecord::parse("fuzz", &json).expect("a written record parses");
    assert_eq!(back.slot, r.slot);
    assert_eq!(back.disk, r.disk);
    assert_eq!(back.first_boot, r.first_boot);
    assert_eq!(back.consumed_try, r.consumed_try);
    assert_eq!(back.failed_slots, r.failed_slots);
    assert_eq!(back.identity, r.identity);
});

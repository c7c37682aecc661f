//! Config drive label probe (ISO9660 / FAT boot sector).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keel_provision::sources::probe(data);
});

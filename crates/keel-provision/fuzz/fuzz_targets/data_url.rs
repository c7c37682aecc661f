//! data: URL decoder, plain and base64, and the kernel command line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = keel_provision::dataurl::decode(s);
        let _ = keel_provision::dataurl::decode(&format!("data:;base64,{s}"));
        let _ = keel_provision::sources::cmdline(s);
    }
    let _ = keel_provision::dataurl::base64(data);
});

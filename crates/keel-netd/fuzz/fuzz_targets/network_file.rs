//! Arbitrary bytes as a `.network` file: must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = keel_netd::config::load::parse_text(std::path::Path::new("fuzz.network"), &text);
});

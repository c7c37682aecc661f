//! Fuzz the `oem-release` and metadata parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = keel_oem::release::parse_oem_release(Path::new("oem-release"), text) {
            assert!(e.to_string().starts_with("oem-release:"));
        }
        let _ = keel_oem::release::parse_metadata(text);
    }
});

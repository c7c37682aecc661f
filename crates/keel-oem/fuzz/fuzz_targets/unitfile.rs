//! Fuzz the unit file `[Install]` parser the generator uses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keel_oem::unitfile::parse_install(Path::new("x.service"), text);
    }
});

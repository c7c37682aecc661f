//! Fuzz the `oem.toml` parser: any bytes must give a manifest or an error
//! that names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match keel_oem::manifest::parse(Path::new("oem.toml"), text) {
            Ok(m) => {
                // A validated manifest keeps its promises.
                for h in &m.hooks {
                    assert!(h.command.starts_with("/oem/"));
                    assert!(!h.timeout.is_zero());
                }
            }
            Err(e) => assert!(e.to_string().starts_with("oem.toml")),
        }
    }
});

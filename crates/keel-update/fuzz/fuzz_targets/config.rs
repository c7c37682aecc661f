//! Arbitrary bytes as a drop-in, an update.conf and a duration: never panic,
//! and whatever parses merges and validates without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

use keel_update::config::{parse_duration, parse_fragment, parse_legacy, Merged};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut m = Merged::default();
    if let Ok(f) = parse_fragment(Path::new("fuzz.toml"), &text) {
        m.apply(Path::new("fuzz.toml"), &f);
    }
    if let Ok(f) = parse_legacy(Path::new("update.conf"), &text) {
        m.apply(Path::new("update.conf"), &f);
    }
    let _ = m.validate();
    let _ = parse_duration(&text);
});

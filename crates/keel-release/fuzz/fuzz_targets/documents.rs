//! channel.json / manifest.json parsing and validation never panic, and
//! what parses re-serializes to something that parses to the same value.
#![no_main]

use keel_release::{Channel, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(Manifest::parse(&m.to_json()).ok(), Some(m));
    }
    if let Ok(c) = Channel::parse(data) {
        assert_eq!(Channel::parse(&c.to_json()).ok(), Some(c));
    }
});

//! Fuzz what the generator reads from a vendor unit file (keel-unit's
//! syntax and `[Install]`, the OEM rules on top), as a plain unit and as a
//! template.
#![no_main]

use keel_unit::UnitName;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for name in ["x.service", "x@.service"] {
            let unit = UnitName::parse(name).expect("a valid name");
            let _ = keel_oem::unitfile::read_install(&unit, Path::new(name), text);
        }
    }
});

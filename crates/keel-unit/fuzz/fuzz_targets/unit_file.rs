//! Unit-file text: any bytes, never a panic; what parses renders back to
//! text that parses to the same sections; its `[Install]` section, read for
//! a plain unit, a template and an instance, gives links without a panic.
#![no_main]
use std::path::Path;

use keel_unit::{install::Install, syntax, UnitName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.service");
    let mut warnings = Vec::new();
    let Ok(sections) = syntax::parse(file, text, &mut warnings) else {
        return;
    };
    if syntax::renders_back(&sections) {
        let again = syntax::parse(file, &syntax::render(&sections), &mut Vec::new())
            .expect("rendered sections parse");
        let strip = |s: &[syntax::Section]| -> Vec<(String, Vec<(String, String)>)> {
            s.iter()
                .map(|x| {
                    let e = x.entries.iter().map(|e| (e.key.clone(), e.value.clone()));
                    (x.name.clone(), e.collect())
                })
                .collect()
        };
        assert_eq!(strip(&again), strip(&sections));
    }
    for unit in ["fuzz.service", "fuzz@.service", "fuzz@i.service"] {
        let unit = UnitName::parse(unit).expect("a valid name");
        if let Ok(i) = Install::from_sections(&unit, &sections, &mut warnings) {
            let _ = i.links(&unit, file);
        }
    }
});

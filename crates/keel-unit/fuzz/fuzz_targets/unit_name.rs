//! Unit names and escaping: any text, never a panic; a valid name keeps
//! its text, its template is a template, and what `escape` writes
//! unescapes back.
#![no_main]
use keel_unit::name::{escape, unescape, UnitName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = UnitName::parse(text) {
        assert_eq!(n.as_str(), text);
        if let Some(t) = n.template() {
            assert!(t.is_template());
            let _ = t.with_instance("x");
        }
    }
    let e = escape(text);
    assert_eq!(unescape(&e).expect("escaped text unescapes"), text.replace('/', "-"));
});

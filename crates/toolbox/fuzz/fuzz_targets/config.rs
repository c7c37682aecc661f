//! The KEY=value config parser and validation from random text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolbox::config::{Layers, Overrides, Settings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut layers = Layers::new(Some("/root"), Some("root"));
    if layers.add_text("fuzz", text).is_ok() {
        let _ = Settings::from_layers(&layers, &Overrides::default(), "root");
    }
    let _ = toolbox::config::split_words(text);
});

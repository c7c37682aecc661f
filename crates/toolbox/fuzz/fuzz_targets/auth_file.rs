//! The registry auth file parser (containers-auth.json, docker config.json)
//! and key matching never panic, and errors never repeat a secret.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = toolbox::auth::parse("auth.json", data) {
        let _ = e.to_string();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = toolbox::auth::normalize_key(s);
        let _ = toolbox::auth::key_matches(s, "registry.example.com", "team/image");
        let _ = toolbox::auth::login_key(s);
    }
});

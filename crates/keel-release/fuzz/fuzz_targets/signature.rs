//! Trusted-comment and .minisig parsing never panic.
#![no_main]

use keel_release::{Expect, SignedFor, TrustedKeys};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "untrusted comment: minisign public key\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = SignedFor::parse(s);
    let mut keys = TrustedKeys::new();
    let _ = keys.add("fuzz", s);
    let _ = keys.add("key", KEY);
    let expect = Expect { channel: "stable", arch: "x86_64" };
    let _ = keel_release::verify_channel(&keys, b"{}", s, &expect);
});

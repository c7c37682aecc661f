//! The kernel command line: any text, never a panic; what the typed
//! accessors accept survives being written back onto a command line.
#![no_main]
use keel_contract::cmdline::{usrhash_arg, Cmdline};
use keel_contract::{KeelParams, Slot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = Cmdline::parse(text);
    let _ = c.config_url();
    let _ = c.flag("quiet");
    if let Ok(p) = KeelParams::from_cmdline(&c) {
        for slot in Slot::ALL {
            if let Some(h) = p.usrhash(slot) {
                let again = Cmdline::parse(&usrhash_arg(slot, h));
                assert_eq!(again.usrhash(slot), Ok(Some(h.to_string())));
            }
        }
    }
    // A parameter's last occurrence wins: appending one decides it.
    let forced = Cmdline::parse(&format!("{text} keel.first_boot"));
    if !text.chars().filter(|c| *c == '"').count().is_multiple_of(2) {
        return; // an open quote swallows what follows
    }
    assert_eq!(forced.first_boot(), Ok(true));
});

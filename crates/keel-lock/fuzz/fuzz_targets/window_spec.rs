//! Arbitrary text as locksmith's window variables and as the TOML form:
//! parsing never panics, and a valid schedule answers for any instant.
#![no_main]
use keel_lock::window::{parse_length, parse_locksmith_start, Schedule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\n').unwrap_or((&text, "1h"));
    let _ = parse_locksmith_start(a);
    let _ = parse_length(b);
    let mut schedules = Vec::new();
    if let Ok(Some(s)) = Schedule::from_locksmith(Some(a), Some(b), "UTC") {
        schedules.push(s);
    }
    if let Ok(s) = Schedule::from_toml(&text) {
        schedules.push(s);
    }
    for s in schedules {
        let s = s.for_host("0123456789abcdef0123456789abcdef");
        for secs in [0i64, 1_700_000_000, 4_000_000_000, -1_000_000_000] {
            if let Ok(t) = jiff::Timestamp::from_second(secs) {
                let _ = s.state_at(t);
            }
        }
        let _ = s.describe();
    }
});

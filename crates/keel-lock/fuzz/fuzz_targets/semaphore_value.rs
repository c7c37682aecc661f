//! Arbitrary bytes as the value under a semaphore key: parsing never
//! panics, and a value that parses survives the operations and a round trip.
#![no_main]
use keel_lock::semaphore::Semaphore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut s) = Semaphore::from_json(data) else {
        return;
    };
    let again = Semaphore::from_json(s.to_json().as_bytes()).expect("round trip");
    assert_eq!(again, s);
    let _ = s.lock("fuzz");
    let _ = s.unlock("fuzz");
    s.set_max(s.max.saturating_add(1).min(1_000_000));
});

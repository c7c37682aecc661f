//! Ignition parser: any bytes, never a panic; a parsed config also plans
//! against an empty root without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((cfg, _)) = keel_provision::ignition::parse(data) {
        let _ =
            keel_provision::plan::plan(&cfg, std::path::Path::new("/nonexistent-keel-fuzz-root"));
    }
});

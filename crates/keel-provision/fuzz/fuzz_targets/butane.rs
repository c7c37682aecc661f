//! Butane / Container Linux Config reader: any bytes, with and without the
//! variant header, through translation and the Ignition reader.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = keel_provision::butane::Options::default();
    let _ = keel_provision::butane::translate(data, &opts);
    let _ = keel_provision::butane::parse(data, &opts);
    let mut text = b"variant: flatcar\nversion: 1.1.0\n".to_vec();
    text.extend_from_slice(data);
    let _ = keel_provision::butane::parse(&text, &opts);
    let _ = keel_provision::parse_config(&text);
    let _ = keel_provision::mime::parse(data);
});

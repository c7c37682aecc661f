//! cloud-config and meta-data parsers: any bytes after the header line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut text = b"#cloud-config\n".to_vec();
    text.extend_from_slice(data);
    let _ = keel_provision::cloudconfig::parse(&text);
    let _ = keel_provision::cloudconfig::meta_data_hostname(data);
    let _ = keel_provision::parse_config(data);
});

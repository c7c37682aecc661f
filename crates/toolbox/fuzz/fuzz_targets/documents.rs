//! Manifests, indexes, configs and auth challenges from random bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolbox::oci;

fuzz_target!(|data: &[u8]| {
    match oci::parse_document("fuzz", data, Some(oci::OCI_MANIFEST)) {
        Ok(oci::Document::Index(i)) => {
            let _ = oci::select_platform("fuzz", &i);
            let _ = oci::select_ref("fuzz", &i, "latest");
        }
        Ok(oci::Document::Manifest(m)) => {
            let _ = toolbox::source::layers_from("fuzz", &m, data);
        }
        Err(_) => {}
    }
    let _ = oci::parse_config("fuzz", data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = toolbox::registry::parse_challenge(s);
        let _ = toolbox::reference::ImageSource::parse(s);
    }
});

//! Random bytes as a layer (plain, and as gzip payload) through the verified
//! unpack path: must never panic, never write outside the target dir.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolbox::oci::Compression;
use toolbox::source::Layer;
use toolbox::unpack::Unpacker;

fuzz_target!(|data: &[u8]| {
    let Ok(tmp) = tempfile::tempdir() else { return };
    let root = tmp.path().join("root");
    if std::fs::create_dir(&root).is_err() {
        return;
    }
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let Ok(mut u) = Unpacker::new(&root, false) else { return };
        let layer = Layer {
            member: "fuzz".into(),
            digest: None,
            size: None,
            diff_id: None,
            compression: Some(compression),
        };
        let _ = toolbox::store::unpack_verified(&mut u, "fuzz", data, &layer);
    }
    let entries = std::fs::read_dir(tmp.path()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries, 1, "something was written next to the root");
});

//! Arbitrary bytes as an offline bundle (a tar of a release tree): the
//! index never panics, and every name it returns stays inside the tree.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = keel_update::source::index_tar(Cursor::new(data)) {
        for (name, (offset, size)) in index {
            assert!(!name.split('/').any(|c| c == ".."), "{name}");
            assert!(!name.starts_with('/'), "{name}");
            let _ = offset.checked_add(size);
        }
    }
});

//! The chunk verifier on arbitrary frames whose compressed hash matches
//! (so the decoder is reached): never panics, never yields more than the
//! declared size.
#![no_main]

use keel_release::{decode_chunk_into, Chunk, Sha256};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let size = u64::from(u16::from_le_bytes([data[0], data[1]])) * 64;
    let frame = &data[2..];
    let chunk = Chunk {
        offset: 0,
        length: frame.len() as u64,
        compressed_sha256: Sha256::of(frame),
        size,
        sha256: Sha256([0; 32]),
    };
    let mut out = Vec::new();
    let _ = decode_chunk_into("fuzz", 0, &chunk, frame, &mut out);
    assert!(out.len() as u64 <= size + 1);
});

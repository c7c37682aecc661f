//! Decoding speed of a release artifact, chunk by chunk: the verified
//! pure-Rust path (`decode_chunk_into`: hashes + ruzstd) against libzstd
//! alone on the same frames. `cargo run --release -p keel-release
//! --example decode_speed -- build/release/stable/0.1.0 usr`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let kind = args.get(2).map(String::as_str).unwrap_or("usr");
    let m =
        keel_release::Manifest::parse(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let (_, a) = m
        .artifacts
        .iter()
        .find(|(k, _)| k.name() == kind)
        .expect("artifact");
    let file = std::fs::read(dir.join(&a.file)).unwrap();
    let frames: Vec<&[u8]> = a
        .chunks
        .iter()
        .map(|c| &file[c.offset as usize..(c.offset + c.length) as usize])
        .collect();
    let mb = a.size as f64 / 1e6;

    let t = Instant::now();
    for f in &frames {
        std::hint::black_box(keel_release::Sha256::of(f));
    }
    let sha_c = t.elapsed().as_secs_f64();

    let mut out = Vec::new();
    let t = Instant::now();
    for (i, (c, f)) in a.chunks.iter().zip(&frames).enumerate() {
        keel_release::decode_chunk_into(kind, i, c, f, &mut out).unwrap();
    }
    let verified = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for (c, f) in a.chunks.iter().zip(&frames) {
        std::hint::black_box(zstd::bulk::decompress(f, c.size as usize).unwrap());
    }
    let libzstd = t.elapsed().as_secs_f64();

    println!(
        "{kind}: {mb:.0} MB in {} chunks; sha256(compressed) {:.0} MB/s; verified path ({}) {:.0} MB/s; libzstd decode alone {:.0} MB/s",
        a.chunks.len(),
        file.len() as f64 / 1e6 / sha_c,
        if cfg!(feature = "decode-libzstd") { "libzstd" } else { "ruzstd" },
        mb / verified,
        mb / libzstd
    );
}

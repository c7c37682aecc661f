//! Write a signed release tree around a raw disk image, for the benchmark
//! (`bench.sh`) when no image was built: `make_tree DISK OUT [CHUNK]`.
//! Writes `OUT/stable/0.0.1/` (tiny usr/verity/kernel/initramfs stand-ins,
//! the disk as `disk.img.zst`), `OUT/stable/channel.json`, their
//! signatures, and `OUT/key.pub` (a fresh key).

use std::path::PathBuf;

use keel_release::write::{compress_artifact, SigningKey};
use keel_release::{
    Artifacts, Channel, ChannelEntry, Manifest, Sha256, Timestamp, VerityArtifact, Version,
    SCHEMA_VERSION,
};

fn main() -> anyhow::Result<()> {
    let mut a = std::env::args().skip(1);
    let (Some(disk), Some(out)) = (a.next(), a.next()) else {
        anyhow::bail!("usage: make_tree DISK OUT [CHUNK_BYTES]");
    };
    let chunk: u64 = a.next().map(|s| s.parse()).transpose()?.unwrap_or(4 << 20);
    let out = PathBuf::from(out);
    let vdir = out.join("stable/0.0.1");
    std::fs::create_dir_all(&vdir)?;
    let art = |file: &str, data: &[u8]| -> anyhow::Result<keel_release::Artifact> {
        let f = std::fs::File::create(vdir.join(file))?;
        Ok(compress_artifact(file, data, f, chunk, 9, 2)?)
    };
    let small = vec![7u8; 8192];
    let disk_file = std::fs::File::open(&disk)?;
    let disk_art = {
        let f = std::fs::File::create(vdir.join("disk.img.zst"))?;
        compress_artifact("disk.img.zst", disk_file, f, chunk, 9, 2)?
    };
    let m = Manifest {
        schema: SCHEMA_VERSION,
        version: Version::parse("0.0.1")?,
        channel: "stable".into(),
        arch: std::env::consts::ARCH.into(),
        issued: Timestamp::now(),
        min_version: None,
        kernel_release: "bench".into(),
        chunk_size: chunk,
        artifacts: Artifacts {
            usr: art("usr.erofs.zst", &small)?,
            usr_verity: VerityArtifact {
                tree: art("usr.verity.zst", &small)?,
                root_hash: Sha256::of(b"bench"),
                hash_algorithm: "sha256".into(),
                salt: String::new(),
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: 2,
            },
            kernel: art("vmlinuz.zst", &small)?,
            initramfs: art("initramfs.img.zst", &small)?,
            disk: Some(disk_art),
        },
    };
    let key = SigningKey::generate()?;
    let (mj, ms) = key.sign_manifest(&m)?;
    std::fs::write(vdir.join("manifest.json"), &mj)?;
    std::fs::write(vdir.join("manifest.json.minisig"), ms)?;
    let ch = Channel {
        schema: SCHEMA_VERSION,
        channel: "stable".into(),
        arch: std::env::consts::ARCH.into(),
        issued: Timestamp::now(),
        versions: vec![ChannelEntry {
            version: m.version.clone(),
            manifest: "0.0.1/manifest.json".into(),
            manifest_sha256: Sha256::of(&mj),
            issued: Timestamp::now(),
        }],
    };
    let (cj, cs) = key.sign_channel(&ch)?;
    std::fs::write(out.join("stable/channel.json"), cj)?;
    std::fs::write(out.join("stable/channel.json.minisig"), cs)?;
    std::fs::write(out.join("key.pub"), key.public_key_file()?)?;
    Ok(())
}

//! A small synthetic release tree written with keel-release's writer, for
//! the unit tests (through `#[path]`) and the privileged test: a USR image
//! of a few chunks, a hash tree whose top block gives the signed root hash,
//! a kernel and an initramfs, signed with a fresh key.

#![allow(dead_code)]

use std::path::Path;

use keel_release::write::{compress_artifact, SigningKey};
use keel_release::{
    Artifacts, Channel, ChannelEntry, Manifest, Sha256, Timestamp, VerityArtifact, Version,
    SCHEMA_VERSION,
};

/// Smallest chunk size keel-release accepts: many chunks from little data.
pub const CHUNK: u64 = 64 << 10;
/// Hash block size of the synthetic tree.
pub const HBS: usize = 4096;
/// Salt of the synthetic tree.
pub const SALT: &str = "5a17";

/// What a test needs to know about the tree it built.
pub struct Built {
    /// The public key file text (for `TrustedKeys::add`).
    pub public_key: String,
    /// The uncompressed USR image.
    pub usr: Vec<u8>,
    /// The uncompressed hash tree.
    pub tree: Vec<u8>,
    /// The kernel.
    pub kernel: Vec<u8>,
    /// The initramfs.
    pub initramfs: Vec<u8>,
    /// The manifest written.
    pub manifest: Manifest,
}

/// Deterministic bytes that compress a little (not all zeros: a chunk
/// must change on a flipped byte).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|i| {
            if i % 7 == 0 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
            }
            (x >> (i % 4 * 8)) as u8 & 0x3f
        })
        .collect()
}

fn artifact(dir: &Path, file: &str, data: &[u8], chunk: u64) -> keel_release::Artifact {
    let out = std::fs::File::create(dir.join(file)).expect("create artifact");
    compress_artifact(file, data, out, chunk, 3, 1).expect("compress")
}

/// Write version `version` of `channel` under `base` (adding it to the
/// channel's list), USR of `usr_len` bytes (a multiple of 4096), signed
/// with `key`.
pub fn build(base: &Path, channel: &str, version: &str, usr_len: usize, key: &SigningKey) -> Built {
    build_with(base, channel, version, usr_len, CHUNK, key)
}

/// [`build`] with another chunk size (a benchmark uses keel-image's 4 MiB).
pub fn build_with(
    base: &Path,
    channel: &str,
    version: &str,
    usr_len: usize,
    chunk: u64,
    key: &SigningKey,
) -> Built {
    let seed = version.bytes().map(u32::from).sum::<u32>();
    let usr = pattern(usr_len, seed);
    // Superblock block, then the single top-level block.
    let mut tree = vec![0u8; HBS];
    tree[..6].copy_from_slice(b"verity");
    tree.extend(pattern(HBS, seed + 1));
    let top = &tree[HBS..2 * HBS];
    let root = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(hex::decode(SALT).expect("salt"));
        h.update(top);
        Sha256(h.finalize().into())
    };
    let kernel = pattern(100_000, seed + 2);
    let initramfs = pattern(70_000, seed + 3);
    let vdir = base.join(channel).join(version);
    std::fs::create_dir_all(&vdir).expect("mkdir");
    let manifest = Manifest {
        schema: SCHEMA_VERSION,
        version: Version::parse(version).expect("version"),
        channel: channel.into(),
        arch: std::env::consts::ARCH.into(),
        issued: Timestamp::now(),
        min_version: None,
        kernel_release: "6.1.0-keel".into(),
        chunk_size: chunk,
        artifacts: Artifacts {
            usr: artifact(&vdir, "usr.erofs.zst", &usr, chunk),
            usr_verity: VerityArtifact {
                tree: artifact(&vdir, "usr.verity.zst", &tree, chunk),
                root_hash: root,
                hash_algorithm: "sha256".into(),
                salt: SALT.into(),
                data_block_size: 4096,
                hash_block_size: HBS as u32,
                data_blocks: (usr_len / 4096) as u64,
            },
            kernel: artifact(&vdir, "vmlinuz.zst", &kernel, chunk),
            initramfs: artifact(&vdir, "initramfs.img.zst", &initramfs, chunk),
            disk: None,
        },
    };
    let (mjson, msig) = key.sign_manifest(&manifest).expect("sign manifest");
    std::fs::write(vdir.join("manifest.json"), &mjson).expect("manifest");
    std::fs::write(vdir.join("manifest.json.minisig"), msig).expect("manifest sig");

    let cpath = base.join(channel).join("channel.json");
    let mut ch = match std::fs::read(&cpath) {
        Ok(b) => Channel::parse(&b).expect("existing channel"),
        Err(_) => Channel {
            schema: SCHEMA_VERSION,
            channel: channel.into(),
            arch: std::env::consts::ARCH.into(),
            issued: Timestamp::now(),
            versions: vec![],
        },
    };
    ch.upsert(ChannelEntry {
        version: manifest.version.clone(),
        manifest: format!("{version}/manifest.json"),
        manifest_sha256: Sha256::of(&mjson),
        issued: Timestamp::now(),
    });
    let (cjson, csig) = key.sign_channel(&ch).expect("sign channel");
    std::fs::write(&cpath, cjson).expect("channel");
    std::fs::write(base.join(channel).join("channel.json.minisig"), csig).expect("channel sig");
    Built {
        public_key: key.public_key_file().expect("public key"),
        usr,
        tree,
        kernel,
        initramfs,
        manifest,
    }
}

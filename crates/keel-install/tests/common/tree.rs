//! A small synthetic Keel disk image and a signed release tree carrying
//! it, written with keel-release's writer: for the unit tests (through
//! `#[path]`) and the privileged test. The disk has Keel's partition
//! names (EFI-SYSTEM, USR-A, USR-A-VERITY, OEM, ROOT with the grow-fs
//! attribute); USR-A-VERITY holds a hash-tree-shaped file whose top block
//! gives the signed root hash.

#![allow(dead_code)]

use std::path::Path;

use keel_gpt::{types, Gpt, Partition, Uuid};
use keel_release::write::{compress_artifact, SigningKey};
use keel_release::{
    Artifacts, Channel, ChannelEntry, Manifest, Sha256, Timestamp, VerityArtifact, Version,
    SCHEMA_VERSION,
};

pub const MIB: u64 = 1 << 20;
/// Smallest chunk size keel-release accepts: many chunks from little data.
pub const CHUNK: u64 = 64 << 10;
pub const HBS: usize = 4096;
pub const SALT: &str = "5a17";

/// (number, name, first MiB, MiB)
pub const PARTS: [(u32, &str, u64, u64); 5] = [
    (1, "EFI-SYSTEM", 1, 1),
    (2, "USR-A", 2, 2),
    (3, "USR-A-VERITY", 4, 1),
    (6, "OEM", 5, 2),
    (7, "ROOT", 7, 2),
];

/// Deterministic bytes that compress a little.
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

pub struct Disk {
    pub bytes: Vec<u8>,
    pub usr: Vec<u8>,
    pub tree: Vec<u8>,
    pub root_hash: Sha256,
}

pub fn part(name: &str) -> (u64, u64) {
    let p = PARTS.iter().find(|p| p.1 == name).expect("partition");
    (p.2 * MIB, p.3 * MIB)
}

/// A 10 MiB disk image; `oem` is the OEM partition's content (an ext4
/// image for the privileged test; zeros when `None`). The last MiB holds
/// the backup GPT.
pub fn disk(oem: Option<&[u8]>) -> Disk {
    let size = 10 * MIB;
    let mut bytes = vec![0u8; size as usize];
    let mut g = Gpt::new(size, 512).expect("gpt");
    for (n, name, first, mib) in PARTS {
        let ty = match name {
            "EFI-SYSTEM" => types::ESP,
            "USR-A" => types::USR_X86_64,
            "USR-A-VERITY" => types::USR_VERITY_X86_64,
            "ROOT" => types::ROOT_X86_64,
            _ => types::LINUX_DATA,
        };
        let first_lba = first * MIB / 512;
        let last_lba = if name == "ROOT" {
            g.last_usable_lba
        } else {
            first_lba + mib * MIB / 512 - 1
        };
        g.set_partition(Partition {
            number: n,
            type_guid: ty,
            unique_guid: Uuid::new_v4(),
            first_lba,
            last_lba,
            attributes: if name == "ROOT" { 1 << 59 } else { 0 },
            name: name.into(),
        })
        .expect("partition");
    }
    g.write(&mut bytes).expect("gpt write");
    g.write_protective_mbr(&mut bytes).expect("mbr");
    let (uo, ul) = part("USR-A");
    let usr = pattern(ul as usize, 11);
    bytes[uo as usize..(uo + ul) as usize].copy_from_slice(&usr);
    let mut tree = vec![0u8; HBS];
    tree[..6].copy_from_slice(b"verity");
    tree.extend(pattern(HBS, 12));
    let root_hash = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(hex::decode(SALT).expect("salt"));
        h.update(&tree[HBS..2 * HBS]);
        Sha256(h.finalize().into())
    };
    let (vo, _) = part("USR-A-VERITY");
    bytes[vo as usize..vo as usize + tree.len()].copy_from_slice(&tree);
    let (eo, _) = part("EFI-SYSTEM");
    bytes[eo as usize..eo as usize + 100_000].copy_from_slice(&pattern(100_000, 13));
    if let Some(o) = oem {
        let (oo, ol) = part("OEM");
        assert!(o.len() as u64 <= ol);
        bytes[oo as usize..oo as usize + o.len()].copy_from_slice(o);
    }
    Disk {
        bytes,
        usr,
        tree,
        root_hash,
    }
}

fn artifact(dir: &Path, file: &str, data: &[u8], chunk: u64) -> keel_release::Artifact {
    let out = std::fs::File::create(dir.join(file)).expect("create artifact");
    compress_artifact(file, data, out, chunk, 3, 1).expect("compress")
}

/// Write version `version` of `channel` under `base` carrying `d`.
pub fn release(base: &Path, channel: &str, version: &str, d: &Disk, key: &SigningKey) -> Manifest {
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
        chunk_size: CHUNK,
        artifacts: Artifacts {
            usr: artifact(&vdir, "usr.erofs.zst", &d.usr, CHUNK),
            usr_verity: VerityArtifact {
                tree: artifact(&vdir, "usr.verity.zst", &d.tree, CHUNK),
                root_hash: d.root_hash,
                hash_algorithm: "sha256".into(),
                salt: SALT.into(),
                data_block_size: 4096,
                hash_block_size: HBS as u32,
                data_blocks: (d.usr.len() / 4096) as u64,
            },
            kernel: artifact(&vdir, "vmlinuz.zst", &pattern(50_000, 2), CHUNK),
            initramfs: artifact(&vdir, "initramfs.img.zst", &pattern(30_000, 3), CHUNK),
            disk: Some(artifact(&vdir, "disk.img.zst", &d.bytes, CHUNK)),
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
    std::fs::write(base.join("key.pub"), key.public_key_file().expect("pub")).expect("pub");
    manifest
}

/// Flip a byte inside compressed chunk `index` of `file` (a chunk the
/// signed manifest no longer matches).
pub fn tamper(base: &Path, channel: &str, version: &str, m: &Manifest, index: usize) {
    let disk = m.artifacts.disk.as_ref().expect("disk");
    let p = base.join(channel).join(version).join(&disk.file);
    let mut b = std::fs::read(&p).expect("read");
    let c = &disk.chunks[index];
    let at = (c.offset + c.length / 2) as usize;
    b[at] ^= 0x40;
    std::fs::write(&p, b).expect("write");
}

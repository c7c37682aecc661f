//! Producer → consumer round trips with real keys and real zstd frames, and
//! the negative cases a client must refuse.

#![allow(clippy::unwrap_used)]

use keel_release::doc::{Artifacts, VerityArtifact, MIN_CHUNK_SIZE};
use keel_release::write::{compress_artifact, SigningKey};
use keel_release::*;

fn data(len: usize, seed: u8) -> Vec<u8> {
    // Compressible but not trivial: a repeating ramp with a per-block twist.
    (0..len)
        .map(|i| (i / 7) as u8 ^ seed ^ ((i >> 12) as u8))
        .collect()
}

fn artifact_of(name: &str, content: &[u8]) -> (Artifact, Vec<u8>) {
    let mut out = Vec::new();
    let a = compress_artifact(name, content, &mut out, MIN_CHUNK_SIZE, 3, 2).unwrap();
    (a, out)
}

struct Release {
    manifest: Manifest,
    files: Vec<(ArtifactKind, Vec<u8>, Vec<u8>)>, // kind, content, compressed
}

fn release(version: &str, channel: &str, arch: &str) -> Release {
    let usr = data(4096 * 50, 1);
    let tree = data(8192, 2);
    let kernel = data(MIN_CHUNK_SIZE as usize * 2 + 17, 3);
    let initrd = data(1000, 4);
    let (ua, uc) = artifact_of("usr.erofs.zst", &usr);
    let (va, vc) = artifact_of("usr.verity.zst", &tree);
    let (ka, kc) = artifact_of("vmlinuz.zst", &kernel);
    let (ia, ic) = artifact_of("initramfs.img.zst", &initrd);
    let manifest = Manifest {
        schema: SCHEMA_VERSION,
        version: Version::parse(version).unwrap(),
        channel: channel.into(),
        arch: arch.into(),
        issued: Timestamp::parse("2026-12-02T18:00:00Z").unwrap(),
        min_version: None,
        kernel_release: "6.1.0-28-amd64".into(),
        chunk_size: MIN_CHUNK_SIZE,
        artifacts: Artifacts {
            usr: ua,
            usr_verity: VerityArtifact {
                tree: va,
                root_hash: Sha256([7; 32]),
                hash_algorithm: "sha256".into(),
                salt: "00ff".into(),
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: 50,
            },
            kernel: ka,
            initramfs: ia,
            disk: None,
        },
    };
    manifest.validate().unwrap();
    Release {
        manifest,
        files: vec![
            (ArtifactKind::Usr, usr, uc),
            (ArtifactKind::UsrVerity, tree, vc),
            (ArtifactKind::Kernel, kernel, kc),
            (ArtifactKind::Initramfs, initrd, ic),
        ],
    }
}

fn keys_for(k: &SigningKey) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add("test.pub", &k.public_key_file().unwrap()).unwrap();
    t
}

const EXPECT: Expect<'static> = Expect {
    channel: "stable",
    arch: "x86_64",
};

#[test]
fn signed_manifest_and_chunks_verify() {
    let key = SigningKey::generate().unwrap();
    let r = release("1.0.0", "stable", "x86_64");
    let (json, sig) = key.sign_manifest(&r.manifest).unwrap();
    let m = verify_manifest(&keys_for(&key), &json, &sig, &EXPECT, None).unwrap();
    assert_eq!(m, r.manifest);
    for (kind, content, compressed) in &r.files {
        let a = m.artifacts.get(*kind).unwrap();
        assert_eq!(a.compressed_size as usize, compressed.len());
        let mut got = Vec::new();
        for (i, c) in a.chunks.iter().enumerate() {
            let frame = &compressed[c.offset as usize..(c.offset + c.length) as usize];
            let bytes = decode_chunk(kind.name(), i, c, frame).unwrap();
            assert_eq!(m.chunk_position(i), got.len() as u64);
            got.extend_from_slice(&bytes);
        }
        assert_eq!(&got, content);
        // The whole file streams too, and is one valid multi-frame .zst.
        let mut streamed = Vec::new();
        decode_stream::<_, std::convert::Infallible>(kind.name(), a, &compressed[..], |off, b| {
            assert_eq!(off, streamed.len() as u64);
            streamed.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(&streamed, content);
        assert_eq!(&zstd::stream::decode_all(&compressed[..]).unwrap(), content);
    }
}

#[test]
fn channel_signed_and_rotated_keys() {
    let old = SigningKey::generate().unwrap();
    let new = SigningKey::generate().unwrap();
    let r = release("1.0.0", "stable", "x86_64");
    let (mjson, _) = new.sign_manifest(&r.manifest).unwrap();
    let mut c = Channel {
        schema: SCHEMA_VERSION,
        channel: "stable".into(),
        arch: "x86_64".into(),
        issued: Timestamp::now(),
        versions: vec![],
    };
    c.upsert(ChannelEntry {
        version: r.manifest.version.clone(),
        manifest: r.manifest.rel_path(),
        manifest_sha256: Sha256::of(&mjson),
        issued: r.manifest.issued,
    });
    let (cjson, csig) = new.sign_channel(&c).unwrap();
    let mut both = keys_for(&old);
    both.add("new.pub", &new.public_key_file().unwrap())
        .unwrap();
    assert_eq!(verify_channel(&both, &cjson, &csig, &EXPECT).unwrap(), c);

    let e = verify_channel(&keys_for(&old), &cjson, &csig, &EXPECT)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not among the 1 trusted keys") && e.contains(&new.key_id()),
        "{e}"
    );

    // the entry pins the manifest's bytes
    let (msig_json, msig) = new.sign_manifest(&r.manifest).unwrap();
    assert_eq!(msig_json, mjson);
    verify_manifest(&both, &mjson, &msig, &EXPECT, Some(&c.versions[0])).unwrap();
    let mut other = r.manifest.clone();
    other.kernel_release = "6.1.0-99-amd64".into();
    let (ojson, osig) = new.sign_manifest(&other).unwrap();
    let e = verify_manifest(&both, &ojson, &osig, &EXPECT, Some(&c.versions[0]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("SHA-256") && e.contains("channel.json"), "{e}");
}

#[test]
fn wrong_key_and_tampering_are_refused() {
    let key = SigningKey::generate().unwrap();
    let stranger = SigningKey::generate().unwrap();
    let r = release("1.0.0", "stable", "x86_64");
    let (json, sig) = key.sign_manifest(&r.manifest).unwrap();

    let e = verify_manifest(&keys_for(&stranger), &json, &sig, &EXPECT, None).unwrap_err();
    assert!(
        matches!(e, VerifyError::Signature(SignError::UnknownKey { .. })),
        "{e}"
    );

    let mut tampered = json.clone();
    let pos = tampered.windows(6).position(|w| w == b"6.1.0-").unwrap();
    tampered[pos] = b'7';
    let e = verify_manifest(&keys_for(&key), &tampered, &sig, &EXPECT, None).unwrap_err();
    assert!(
        matches!(e, VerifyError::Signature(SignError::Invalid { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("does not verify"), "{e}");

    // a forged trusted comment breaks the global signature
    let forged = sig.replace("channel=stable", "channel=beta");
    let e = verify_manifest(
        &keys_for(&key),
        &json,
        &forged,
        &Expect {
            channel: "beta",
            arch: "x86_64",
        },
        None,
    )
    .unwrap_err();
    assert!(
        matches!(e, VerifyError::Signature(SignError::Invalid { .. })),
        "{e}"
    );

    // truncated document and truncated signature file
    let e = verify_manifest(
        &keys_for(&key),
        &json[..json.len() / 2],
        &sig,
        &EXPECT,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(e, VerifyError::Signature(SignError::Invalid { .. })),
        "{e}"
    );
    let e =
        verify_manifest(&keys_for(&key), &json, &sig[..sig.len() / 2], &EXPECT, None).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Signature(SignError::BadSignatureFile { .. })
        ),
        "{e}"
    );
}

#[test]
fn signature_for_another_channel_or_arch_is_not_replayed() {
    let key = SigningKey::generate().unwrap();
    let keys = keys_for(&key);
    // a genuine beta manifest offered to a stable client
    let beta = release("2.0.0", "beta", "x86_64");
    let (json, sig) = key.sign_manifest(&beta.manifest).unwrap();
    let e = verify_manifest(&keys, &json, &sig, &EXPECT, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("channel") && e.contains("beta") && e.contains("the request"),
        "{e}"
    );
    // a genuine aarch64 manifest offered to an x86_64 client
    let arm = release("2.0.0", "stable", "aarch64");
    let (json, sig) = key.sign_manifest(&arm.manifest).unwrap();
    let e = verify_manifest(&keys, &json, &sig, &EXPECT, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("arch") && e.contains("aarch64"), "{e}");
    // a stable document whose signature was made for beta (a producer bug
    // or a signature copied next to the wrong file)
    let stable = release("2.0.0", "stable", "x86_64");
    let json = stable.manifest.to_json();
    let sig = key
        .sign(&json, &SignedFor::manifest(&beta.manifest).render())
        .unwrap();
    let e = verify_manifest(&keys, &json, &sig, &EXPECT, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the signature's channel"), "{e}");
    // a signature over another version of the same channel
    let sig = key
        .sign(
            &json,
            &SignedFor::manifest(&release("1.0.0", "stable", "x86_64").manifest).render(),
        )
        .unwrap();
    let e = verify_manifest(&keys, &json, &sig, &EXPECT, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("version") && e.contains("the signature"), "{e}");
    // a manifest signature presented as channel.json's
    let sig = key
        .sign(&json, &SignedFor::manifest(&stable.manifest).render())
        .unwrap();
    let e = verify_channel(&keys, &json, &sig, &EXPECT)
        .unwrap_err()
        .to_string();
    assert!(e.contains("document kind"), "{e}");
    // a comment that is not Keel's
    let sig = key
        .sign(&json, "timestamp:1700000000\tfile:manifest.json")
        .unwrap();
    let e = verify_manifest(&keys, &json, &sig, &EXPECT, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a Keel release signature"), "{e}");
}

#[test]
fn tampered_chunks_are_refused() {
    let r = release("1.0.0", "stable", "x86_64");
    let (kind, _, compressed) = &r.files[2];
    let a = r.manifest.artifacts.get(*kind).unwrap();
    let c = &a.chunks[1];
    let frame = &compressed[c.offset as usize..(c.offset + c.length) as usize];

    // tampered compressed bytes: refused before decoding
    let mut bad = frame.to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let e = decode_chunk("kernel", 1, c, &bad).unwrap_err();
    assert!(
        matches!(e, ChunkError::CompressedHash { index: 1, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("kernel chunk 1: compressed SHA-256"),
        "{e}"
    );

    // truncated
    let e = decode_chunk("kernel", 1, c, &frame[..frame.len() - 1]).unwrap_err();
    assert!(matches!(e, ChunkError::CompressedLength { .. }), "{e}");

    // a manifest whose compressed hash matches a frame that decodes to
    // other bytes (uncompressed hash catches it)
    let other = zstd::bulk::compress(&vec![0u8; c.size as usize], 3).unwrap();
    let mut c2 = c.clone();
    c2.length = other.len() as u64;
    c2.compressed_sha256 = Sha256::of(&other);
    let e = decode_chunk("kernel", 1, &c2, &other).unwrap_err();
    assert!(matches!(e, ChunkError::Hash { .. }), "{e}");

    // a decompression bomb with a huge window: refused by the frame header
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    let mut c3 = c.clone();
    c3.length = bomb.len() as u64;
    c3.compressed_sha256 = Sha256::of(&bomb);
    let e = decode_chunk("kernel", 1, &c3, &bomb).unwrap_err();
    assert!(matches!(e, ChunkError::Decode { .. }), "{e}");
    #[cfg(not(feature = "decode-libzstd"))]
    assert!(e.to_string().contains("window"), "{e}");

    // a bomb within the window: 1 MiB of zeros declared as 64 KiB, cut at the limit
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 19).unwrap();
    let mut c3 = c.clone();
    c3.length = bomb.len() as u64;
    c3.compressed_sha256 = Sha256::of(&bomb);
    let mut out = Vec::new();
    let e = decode_chunk_into("kernel", 1, &c3, &bomb, &mut out).unwrap_err();
    // ruzstd stops one byte past the limit; libzstd refuses the frame
    // once the buffer of the declared size (+1) is full.
    assert!(
        matches!(e, ChunkError::Size { got, want, .. } if got == want + 1)
            || (cfg!(feature = "decode-libzstd") && matches!(e, ChunkError::Decode { .. })),
        "{e}"
    );
    assert!(out.len() as u64 <= c3.size + 1);

    // garbage that is not zstd
    let junk = vec![0xAAu8; 40];
    let mut c4 = c.clone();
    c4.length = 40;
    c4.compressed_sha256 = Sha256::of(&junk);
    assert!(matches!(
        decode_chunk("kernel", 1, &c4, &junk).unwrap_err(),
        ChunkError::Decode { .. }
    ));

    // a truncated stream
    let e = decode_stream::<_, std::convert::Infallible>(
        "kernel",
        a,
        &compressed[..compressed.len() - 3],
        |_, _| Ok(()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("chunk 2"), "{e}");
}

#[test]
fn keys_load_from_a_directory_and_files_interoperate() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        TrustedKeys::load_dir(dir.path()).unwrap_err(),
        SignError::NoKeys(_)
    ));
    let k1 = SigningKey::generate().unwrap();
    let k2 = SigningKey::generate().unwrap();
    std::fs::write(dir.path().join("a.pub"), k1.public_key_file().unwrap()).unwrap();
    std::fs::write(dir.path().join("b.pub"), k2.public_key_file().unwrap()).unwrap();
    std::fs::write(dir.path().join("README"), "not a key").unwrap();
    let keys = TrustedKeys::load_dir(dir.path()).unwrap();
    assert_eq!(keys.keys().len(), 2);
    assert_eq!(keys.keys()[0].key_id, k1.key_id());

    // a secret key written and read back signs the same way
    let skf = dir.path().join("k.key");
    std::fs::write(&skf, k2.secret_key_file().unwrap()).unwrap();
    let k2b = SigningKey::load(&skf, None).unwrap();
    assert_eq!(k2b.key_id(), k2.key_id());
    let sig = k2b
        .sign(
            b"hello",
            "keel-release/1 channel channel=stable arch=x86_64",
        )
        .unwrap();
    assert_eq!(
        keys.verify("channel.json", b"hello", &sig).unwrap(),
        "keel-release/1 channel channel=stable arch=x86_64"
    );

    std::fs::write(
        dir.path().join("c.pub"),
        "untrusted comment: x\nnot base64!\n",
    )
    .unwrap();
    let e = TrustedKeys::load_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("c.pub"), "{e}");
}

/// Debian's minisign verifies what the writer signs (skipped when the
/// `minisign` tool is not installed).
#[test]
fn debian_minisign_verifies_our_signatures() {
    let Ok(out) = std::process::Command::new("minisign").arg("-v").output() else {
        eprintln!("minisign not installed: skipped");
        return;
    };
    assert!(out.status.success() || !out.stdout.is_empty() || !out.stderr.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap();
    let r = release("1.0.0", "stable", "x86_64");
    let (json, sig) = key.sign_manifest(&r.manifest).unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("manifest.json"), &json).unwrap();
    std::fs::write(p("manifest.json.minisig"), &sig).unwrap();
    std::fs::write(p("k.pub"), key.public_key_file().unwrap()).unwrap();
    let out = std::process::Command::new("minisign")
        .args(["-V", "-p"])
        .arg(p("k.pub"))
        .arg("-m")
        .arg(p("manifest.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("keel-release/1 manifest channel=stable arch=x86_64 version=1.0.0"),
        "{text}"
    );
}

/// A vendor signing with Debian's minisign (`minisign -S -t COMMENT`) is
/// verified by the reader (skipped when `minisign` is not installed).
#[test]
fn documents_signed_by_debian_minisign_verify() {
    if std::process::Command::new("minisign")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("minisign not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let st = std::process::Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(p("v.pub"))
        .arg("-s")
        .arg(p("v.key"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let r = release("3.0.0", "stable", "x86_64");
    let json = r.manifest.to_json();
    std::fs::write(p("manifest.json"), &json).unwrap();
    let st = std::process::Command::new("minisign")
        .args(["-S", "-s"])
        .arg(p("v.key"))
        .arg("-m")
        .arg(p("manifest.json"))
        .arg("-t")
        .arg(SignedFor::manifest(&r.manifest).render())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let sig = std::fs::read_to_string(p("manifest.json.minisig")).unwrap();
    let mut keys = TrustedKeys::new();
    keys.add("v.pub", &std::fs::read_to_string(p("v.pub")).unwrap())
        .unwrap();
    assert_eq!(
        verify_manifest(&keys, &json, &sig, &EXPECT, None).unwrap(),
        r.manifest
    );
    // and the writer reads the vendor's secret key file
    let k = SigningKey::load(&p("v.key"), None).unwrap();
    assert_eq!(k.key_id(), keys.keys()[0].key_id);
}

//! `keel-image release`: a static, signed release tree from a built image.
//!
//! ```text
//! <out>/<channel>/channel.json(.minisig)            every version of the channel
//! <out>/<channel>/<version>/manifest.json(.minisig)  one version
//! <out>/<channel>/<version>/{usr.erofs,usr.verity,vmlinuz,initramfs.img,disk.img}.zst
//! <out>/<channel>/<version>/keel-install(.minisig,.sha256)  the version's static installer
//! <out>/<channel>/keel-install(.minisig,.sha256)            the channel's newest one
//! ```
//!
//! The formats and checks are keel-release's; this module only gathers the
//! build's files (`image.json` names them), reads the verity parameters
//! from the hash tree's superblock, compresses, signs and merges the new
//! version into an existing `channel.json`. A version directory is written
//! under a temporary name and renamed into place, and `channel.json` last,
//! so a server never lists a version whose files are incomplete.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use keel_release::doc::{Artifacts, VerityArtifact};
use keel_release::write::{compress_artifact, SigningKey, DEFAULT_LEVEL};
use keel_release::{
    Channel, ChannelEntry, Manifest, Sha256, Timestamp, Version, SCHEMA_VERSION, SIG_SUFFIX,
};

use crate::Manifest as ImageManifest;

/// Environment variable holding the password of an encrypted `--key`.
pub const KEY_PASSWORD_ENV: &str = "KEEL_RELEASE_KEY_PASSWORD";

/// What `keel-image release` is asked to do.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// The build directory (`image.json` and the files it names).
    pub build: PathBuf,
    /// Root of the release tree.
    pub out: PathBuf,
    /// Channel name.
    pub channel: String,
    /// Signing key (minisign secret key); default: the build's development key.
    pub key: Option<PathBuf>,
    /// Uncompressed chunk size.
    pub chunk_size: u64,
    /// zstd level.
    pub level: i32,
    /// Leave the full disk image out (update-only tree).
    pub no_disk: bool,
    /// Oldest version that may update to this one.
    pub min_version: Option<String>,
}

impl ReleaseOptions {
    /// Defaults for a build directory.
    pub fn new(build: PathBuf, channel: &str) -> ReleaseOptions {
        ReleaseOptions {
            out: build.join("release"),
            build,
            channel: channel.to_string(),
            key: None,
            chunk_size: keel_release::DEFAULT_CHUNK_SIZE,
            level: DEFAULT_LEVEL,
            no_disk: false,
            min_version: None,
        }
    }
}

/// What a release run wrote.
#[derive(Debug, Clone)]
pub struct ReleaseSummary {
    /// The version directory.
    pub dir: PathBuf,
    /// The manifest written.
    pub manifest: Manifest,
    /// Bytes of the version directory (compressed artifacts + documents).
    pub bytes: u64,
    /// Uncompressed bytes of the artifacts.
    pub raw_bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// Key id that signed.
    pub key_id: String,
    /// Whether the version carries the signed static `keel-install`.
    pub installer: bool,
}

/// dm-verity parameters from the hash tree's superblock (cryptsetup's
/// `struct verity_sb`, written by `veritysetup format` at offset 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VeritySuperblock {
    /// Hash algorithm name.
    pub algorithm: String,
    /// Data block size.
    pub data_block_size: u32,
    /// Hash block size.
    pub hash_block_size: u32,
    /// Data blocks covered.
    pub data_blocks: u64,
    /// Salt.
    pub salt: Vec<u8>,
}

/// Parse a verity superblock.
pub fn parse_verity_superblock(b: &[u8]) -> Result<VeritySuperblock> {
    ensure!(
        b.len() >= 512,
        "verity superblock: {} bytes, need 512",
        b.len()
    );
    ensure!(
        &b[0..8] == b"verity\0\0",
        "verity superblock: no \"verity\" signature"
    );
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let version = u32_at(8);
    ensure!(
        version == 1,
        "verity superblock: version {version}, expected 1"
    );
    let hash_type = u32_at(12);
    ensure!(
        hash_type == 1,
        "verity superblock: hash type {hash_type}, expected 1 (normal)"
    );
    let alg = &b[32..64];
    let algorithm = String::from_utf8_lossy(&alg[..alg.iter().position(|&c| c == 0).unwrap_or(32)])
        .into_owned();
    let mut db = [0u8; 8];
    db.copy_from_slice(&b[72..80]);
    let salt_size = usize::from(u16::from_le_bytes([b[80], b[81]]));
    ensure!(
        salt_size <= 256,
        "verity superblock: salt size {salt_size} > 256"
    );
    Ok(VeritySuperblock {
        algorithm,
        data_block_size: u32_at(64),
        hash_block_size: u32_at(68),
        data_blocks: u64::from_le_bytes(db),
        salt: b[88..88 + salt_size].to_vec(),
    })
}

/// Read a file's size.
fn size(p: &Path) -> Result<u64> {
    Ok(fs::metadata(p)
        .with_context(|| format!("reading {}", p.display()))?
        .len())
}

/// Size of everything under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            dir_bytes(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}

/// Compress one build file into the version directory.
fn artifact(
    src: &Path,
    dst_dir: &Path,
    file: &str,
    opts: &ReleaseOptions,
) -> Result<keel_release::Artifact> {
    let t = Instant::now();
    let input = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let dst = dst_dir.join(file);
    let out = fs::File::create(&dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let a = compress_artifact(
        file,
        std::io::BufReader::with_capacity(1 << 20, input),
        &mut w,
        opts.chunk_size,
        opts.level,
        threads,
    )
    .with_context(|| format!("compressing {}", src.display()))?;
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", dst.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", dst.display()))?;
    eprintln!(
        "      {file}: {} MiB → {} MiB in {} chunks, {:.1}s",
        a.size >> 20,
        a.compressed_size >> 20,
        a.chunks.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(a)
}

/// Load the signing key: `--key` (password from [`KEY_PASSWORD_ENV`]) or
/// the build's development key.
fn load_key(opts: &ReleaseOptions, img: &ImageManifest) -> Result<SigningKey> {
    let path = match &opts.key {
        Some(p) => p.clone(),
        None => {
            let rel = img
                .dev_update_key
                .as_ref()
                .context("no --key given and the image has no development update key (image.toml: update.dev_key)")?;
            opts.build.join(rel)
        }
    };
    let pw = std::env::var(KEY_PASSWORD_ENV).ok();
    Ok(SigningKey::load(&path, pw)?)
}

/// Write the release tree for the image in `opts.build`.
pub fn release(opts: &ReleaseOptions) -> Result<ReleaseSummary> {
    let t0 = Instant::now();
    ensure!(
        keel_release::doc::valid_name(&opts.channel),
        "channel {:?} is not a valid channel name ([a-z0-9][a-z0-9._-]*)",
        opts.channel
    );
    let ij = opts.build.join("image.json");
    let img: ImageManifest = serde_json::from_slice(&fs::read(&ij).with_context(|| {
        format!(
            "reading {} (build the image first: ./run image)",
            ij.display()
        )
    })?)
    .with_context(|| format!("parsing {}", ij.display()))?;
    let version =
        Version::parse(&img.version).with_context(|| format!("{}: version", ij.display()))?;
    let min_version = opts
        .min_version
        .as_deref()
        .map(Version::parse)
        .transpose()
        .context("--min-version")?;
    let (Some(usr), Some(verity)) = (&img.usr, &img.usr_verity) else {
        bail!(
            "{} names no usr/usr_verity files: rebuild the image with this keel-image",
            ij.display()
        );
    };
    let key = load_key(opts, &img)?;
    if !img.update_key_ids.is_empty() && !img.update_key_ids.contains(&key.key_id()) {
        eprintln!(
            "warning: key {} is not among the keys this image trusts ({}); hosts running it will refuse this release",
            key.key_id(),
            img.update_key_ids.join(", ")
        );
    }

    let b = &opts.build;
    let usr_p = b.join(usr);
    let verity_p = b.join(verity);
    let mut sb = vec![0u8; 512];
    {
        use std::io::Read;
        fs::File::open(&verity_p)
            .and_then(|mut f| f.read_exact(&mut sb))
            .with_context(|| format!("reading the verity superblock of {}", verity_p.display()))?;
    }
    let sb = parse_verity_superblock(&sb).with_context(|| verity_p.display().to_string())?;
    let root_hash = Sha256::from_hex(&img.usr_root_hash)
        .with_context(|| format!("{}: usr_root_hash {:?}", ij.display(), img.usr_root_hash))?;

    let chan_dir = opts.out.join(&opts.channel);
    let final_dir = chan_dir.join(version.as_str());
    let tmp_dir = chan_dir.join(format!(".{}.part", version));
    let _ = fs::remove_dir_all(&tmp_dir);
    fs::create_dir_all(&tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;

    let usr_a = artifact(&usr_p, &tmp_dir, "usr.erofs.zst", opts)?;
    let verity_a = artifact(&verity_p, &tmp_dir, "usr.verity.zst", opts)?;
    let kernel_a = artifact(&b.join(&img.kernel), &tmp_dir, "vmlinuz.zst", opts)?;
    let initrd_a = artifact(&b.join(&img.initramfs), &tmp_dir, "initramfs.img.zst", opts)?;
    let disk_a = if opts.no_disk {
        None
    } else {
        Some(artifact(&b.join(&img.raw), &tmp_dir, "disk.img.zst", opts)?)
    };
    let top = {
        use std::io::{Read, Seek};
        let bs = u64::from(sb.hash_block_size);
        let mut f = fs::File::open(&verity_p)?;
        f.seek(std::io::SeekFrom::Start(bs))?;
        let mut top = vec![0u8; bs as usize];
        f.read_exact(&mut top)
            .with_context(|| format!("reading the top hash block of {}", verity_p.display()))?;
        top
    };
    ensure!(
        sb.data_blocks * u64::from(sb.data_block_size) == usr_a.size,
        "verity superblock covers {} blocks of {} bytes, but {} is {} bytes",
        sb.data_blocks,
        sb.data_block_size,
        usr_p.display(),
        usr_a.size
    );
    let raw_bytes = [&usr_a, &verity_a, &kernel_a, &initrd_a]
        .iter()
        .map(|a| a.size)
        .sum::<u64>()
        + disk_a.as_ref().map_or(0, |a| a.size);

    let issued = Timestamp::now();
    let manifest = Manifest {
        schema: SCHEMA_VERSION,
        version: version.clone(),
        channel: opts.channel.clone(),
        arch: img.arch.clone(),
        issued,
        min_version,
        kernel_release: img.kernel_release.clone(),
        chunk_size: opts.chunk_size,
        artifacts: Artifacts {
            usr: usr_a,
            usr_verity: VerityArtifact {
                tree: verity_a,
                root_hash,
                hash_algorithm: sb.algorithm,
                salt: hex::encode(&sb.salt),
                data_block_size: sb.data_block_size,
                hash_block_size: sb.hash_block_size,
                data_blocks: sb.data_blocks,
            },
            kernel: kernel_a,
            initramfs: initrd_a,
            disk: disk_a,
        },
    };
    manifest
        .validate()
        .context("the manifest this build would write")?;
    // The hash tree must be the one whose root image.json names: a stale
    // usr.verity would give every host an update that never verifies.
    let v = &manifest.artifacts.usr_verity;
    ensure!(
        v.root_of(&top) == v.root_hash,
        "{}: its root hash is {}, image.json says {}",
        verity_p.display(),
        v.root_of(&top),
        v.root_hash
    );
    let (mjson, msig) = key.sign_manifest(&manifest)?;
    let mfile = tmp_dir.join(keel_release::MANIFEST_FILE);
    keel_contract::atomic::write_atomic(&mfile, &mjson)
        .with_context(|| format!("writing {}", mfile.display()))?;
    let sfile = tmp_dir.join(format!("{}{SIG_SUFFIX}", keel_release::MANIFEST_FILE));
    keel_contract::atomic::write_atomic(&sfile, msig.as_bytes())
        .with_context(|| format!("writing {}", sfile.display()))?;

    let installer = match &img.installer {
        Some(rel) => {
            let src = b.join(rel);
            let data = fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            let sig = key.sign_installer(&data, &opts.channel, &manifest.arch, &version)?;
            write_installer(&tmp_dir, &data, &sig)?;
            Some((data, sig))
        }
        None => {
            eprintln!(
                "warning: {} names no keel-install (an image without it, or built by an older keel-image): this release publishes no installer",
                ij.display()
            );
            None
        }
    };

    // The version directory appears whole; a rebuilt version replaces the old one.
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)
            .with_context(|| format!("removing the old {}", final_dir.display()))?;
    }
    fs::rename(&tmp_dir, &final_dir)
        .with_context(|| format!("renaming {} to {}", tmp_dir.display(), final_dir.display()))?;

    // channel.json last: merge into the existing one.
    let cpath = chan_dir.join(keel_release::CHANNEL_FILE);
    let mut channel = match fs::read(&cpath) {
        Ok(bytes) => {
            let c =
                Channel::parse(&bytes).with_context(|| format!("existing {}", cpath.display()))?;
            ensure!(
                c.arch == manifest.arch,
                "{} is for arch {}, this image is {}",
                cpath.display(),
                c.arch,
                manifest.arch
            );
            ensure!(
                c.channel == opts.channel,
                "{} says channel {:?}",
                cpath.display(),
                c.channel
            );
            c
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Channel {
            schema: SCHEMA_VERSION,
            channel: opts.channel.clone(),
            arch: manifest.arch.clone(),
            issued,
            versions: Vec::new(),
        },
        Err(e) => return Err(e).with_context(|| format!("reading {}", cpath.display())),
    };
    // Drop entries whose directory is gone (pruned by hand).
    channel
        .versions
        .retain(|e| chan_dir.join(&e.manifest).exists());
    channel.issued = issued;
    channel.upsert(ChannelEntry {
        version: version.clone(),
        manifest: manifest.rel_path(),
        manifest_sha256: Sha256::of(&mjson),
        issued,
    });
    let (cjson, csig) = key.sign_channel(&channel)?;
    // The signature first: a reader between the two renames sees the old
    // channel.json with the new signature and retries; never a new list
    // under an old signature that a lenient client could half-trust.
    let csfile = chan_dir.join(format!("{}{SIG_SUFFIX}", keel_release::CHANNEL_FILE));
    keel_contract::atomic::write_atomic(&csfile, csig.as_bytes())
        .with_context(|| format!("writing {}", csfile.display()))?;
    keel_contract::atomic::write_atomic(&cpath, &cjson)
        .with_context(|| format!("writing {}", cpath.display()))?;
    // The channel's newest installer at a fixed place (`<channel>/keel-install`),
    // after the list that names its version; re-releasing an older version
    // leaves it alone.
    if let Some((data, sig)) = &installer {
        if channel.versions.last().map(|e| &e.version) == Some(&version) {
            write_installer(&chan_dir, data, sig)?;
        }
    }

    let bytes = dir_bytes(&final_dir)?;
    Ok(ReleaseSummary {
        dir: final_dir,
        manifest,
        bytes,
        raw_bytes,
        seconds: t0.elapsed().as_secs_f64(),
        key_id: key.key_id(),
        installer: installer.is_some(),
    })
}

/// Write `keel-install` (mode 0755), its `.minisig` and a `.sha256` in
/// `sha256sum` format into `dir`, each atomically; the signature and the
/// hash first, so a reader between the renames sees a pair that does not
/// verify (and fetches again), never a new binary it could half-trust.
fn write_installer(dir: &Path, data: &[u8], sig: &str) -> Result<()> {
    let name = keel_release::INSTALLER_FILE;
    let sum = format!("{}  {name}\n", Sha256::of(data));
    for (file, bytes, mode) in [
        (format!("{name}{SIG_SUFFIX}"), sig.as_bytes(), 0o644),
        (format!("{name}.sha256"), sum.as_bytes(), 0o644),
        (name.to_string(), data, 0o755),
    ] {
        let p = dir.join(file);
        keel_contract::atomic::AtomicWrite::new()
            .mode(mode)
            .write(&p, bytes)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Generate the build's development update key in `dir` unless present;
/// returns its public key file text.
pub fn ensure_dev_key(dir: &Path) -> Result<(String, String)> {
    let sk = dir.join(DEV_KEY);
    let pk = dir.join(DEV_PUB);
    if !sk.exists() {
        let k = SigningKey::generate()?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        keel_contract::atomic::AtomicWrite::new()
            .mode(0o600)
            .write(&sk, k.secret_key_file()?.as_bytes())
            .with_context(|| format!("writing {}", sk.display()))?;
        keel_contract::atomic::write_atomic(&pk, k.public_key_file()?.as_bytes())
            .with_context(|| format!("writing {}", pk.display()))?;
    }
    let k = SigningKey::load(&sk, None)?;
    Ok((k.public_key_file()?, k.key_id()))
}

/// The development key's secret half, in the build's `dev-update-key/`.
pub const DEV_KEY: &str = "update.key";
/// Its public half.
pub const DEV_PUB: &str = "update.pub";

/// File size helper re-exported for the build's summary.
pub fn file_size(p: &Path) -> Result<u64> {
    size(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256 as Hasher};

    /// A superblock as `veritysetup format` writes it (fields from
    /// cryptsetup's lib/verity/verity.c).
    pub(crate) fn superblock(data_blocks: u64, salt: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..8].copy_from_slice(b"verity\0\0");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&4096u32.to_le_bytes());
        b[68..72].copy_from_slice(&4096u32.to_le_bytes());
        b[72..80].copy_from_slice(&data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        b[88..88 + salt.len()].copy_from_slice(salt);
        b
    }

    /// A stand-in for the static binary, different per version.
    fn installer_bytes(version: &str) -> Vec<u8> {
        let mut b = b"\x7fELF".to_vec();
        b.extend(format!("keel-install {version} ").repeat(3000).bytes());
        b
    }

    fn fake_build(dir: &Path, version: &str, key_dir: &Path) -> ImageManifest {
        let (_, id) = ensure_dev_key(key_dir).unwrap();
        let blocks = 70u64;
        let usr: Vec<u8> = (0..blocks * 4096).map(|i| (i * 31 % 251) as u8).collect();
        fs::write(dir.join("usr.erofs"), &usr).unwrap();
        let mut tree = superblock(blocks, &[0x5a; 32]);
        tree.resize(4096, 0);
        tree.extend(std::iter::repeat_n(7u8, 8192));
        let root = {
            let mut h = Hasher::new();
            h.update([0x5a; 32]);
            h.update([7u8; 4096]);
            hex::encode(h.finalize())
        };
        fs::write(dir.join("usr.verity"), &tree).unwrap();
        fs::write(
            dir.join("vmlinuz"),
            format!("kernel {version}").repeat(5000),
        )
        .unwrap();
        fs::write(dir.join("initramfs.img"), vec![1u8; 100_000]).unwrap();
        let mut disk = vec![0u8; 3 << 20];
        disk[1000..1010].copy_from_slice(b"GPT-ish...");
        fs::write(dir.join("keel.img"), &disk).unwrap();
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/keel-install"), installer_bytes(version)).unwrap();
        let m = ImageManifest {
            name: "keel".into(),
            version: version.into(),
            kernel_release: "6.1.0-28-amd64".into(),
            kernel: "vmlinuz".into(),
            initramfs: "initramfs.img".into(),
            raw: "keel.img".into(),
            qcow2: "keel.qcow2".into(),
            cmdline: "console=ttyS0".into(),
            usr_root_hash: root,
            dev_ssh_key: None,
            arch: "x86_64".into(),
            usr: Some("usr.erofs".into()),
            usr_verity: Some("usr.verity".into()),
            dev_update_key: Some(key_dir.join(DEV_KEY).display().to_string()),
            update_key_ids: vec![id],
            installer: Some("bin/keel-install".into()),
            sizes: Default::default(),
            steps: vec![],
        };
        fs::write(dir.join("image.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        m
    }

    #[test]
    fn writes_a_tree_that_verifies_and_merges_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let key_dir = tmp.path().join("key");
        let build = tmp.path().join("build");
        fs::create_dir_all(&build).unwrap();
        let out = tmp.path().join("release");
        let mut opts = ReleaseOptions::new(build.clone(), "stable");
        opts.out = out.clone();
        opts.chunk_size = keel_release::doc::MIN_CHUNK_SIZE;
        opts.level = 3;

        fake_build(&build, "1.0.0", &key_dir);
        let s1 = release(&opts).unwrap();
        assert_eq!(s1.dir, out.join("stable/1.0.0"));
        fake_build(&build, "1.1.0", &key_dir);
        opts.min_version = Some("1.0.0".into());
        let s2 = release(&opts).unwrap();
        // rebuilding 1.0.0 replaces it in place, the list stays sorted
        fake_build(&build, "1.0.0", &key_dir);
        opts.min_version = None;
        opts.no_disk = true;
        release(&opts).unwrap();

        let mut keys = keel_release::TrustedKeys::new();
        keys.add("dev", &fs::read_to_string(key_dir.join(DEV_PUB)).unwrap())
            .unwrap();
        let expect = keel_release::Expect {
            channel: "stable",
            arch: "x86_64",
        };
        let cdir = out.join("stable");
        let c = keel_release::verify_channel(
            &keys,
            &fs::read(cdir.join("channel.json")).unwrap(),
            &fs::read_to_string(cdir.join("channel.json.minisig")).unwrap(),
            &expect,
        )
        .unwrap();
        let vs: Vec<String> = c.versions.iter().map(|e| e.version.to_string()).collect();
        assert_eq!(vs, ["1.0.0", "1.1.0"]);
        assert!(!cdir.join(".1.0.0.part").exists());

        let e = &c.versions[1];
        let mdir = cdir.join(&e.manifest);
        let m = keel_release::verify_manifest(
            &keys,
            &fs::read(&mdir).unwrap(),
            &fs::read_to_string(mdir.with_file_name("manifest.json.minisig")).unwrap(),
            &expect,
            Some(e),
        )
        .unwrap();
        assert_eq!(m, s2.manifest);
        assert_eq!(m.min_version.as_ref().unwrap().to_string(), "1.0.0");
        assert_eq!(m.artifacts.usr_verity.data_blocks, 70);
        assert_eq!(m.artifacts.usr_verity.salt, "5a".repeat(32));
        assert!(m.artifacts.disk.is_some());
        for (kind, a) in m.artifacts.iter() {
            let src = match kind {
                keel_release::ArtifactKind::Usr => "usr.erofs",
                keel_release::ArtifactKind::UsrVerity => "usr.verity",
                keel_release::ArtifactKind::Kernel => "vmlinuz",
                keel_release::ArtifactKind::Initramfs => "initramfs.img",
                keel_release::ArtifactKind::Disk => "keel.img",
            };
            let f = fs::File::open(mdir.with_file_name(&a.file)).unwrap();
            let mut got = Vec::new();
            keel_release::decode_stream::<_, std::convert::Infallible>(
                kind.name(),
                a,
                f,
                |_, b| {
                    got.extend_from_slice(b);
                    Ok(())
                },
            )
            .unwrap();
            if kind != keel_release::ArtifactKind::Kernel {
                assert_eq!(got, fs::read(build.join(src)).unwrap(), "{kind}");
            }
        }
        // the rebuilt 1.0.0 has no disk
        let m1 =
            keel_release::Manifest::parse(&fs::read(cdir.join("1.0.0/manifest.json")).unwrap())
                .unwrap();
        assert!(m1.artifacts.disk.is_none());
    }

    /// What a user does after downloading `dir/keel-install` and its
    /// `.minisig` (`minisign -Vm keel-install -p key.pub`, here with
    /// minisign-verify through keel-release); returns the signed version.
    fn verify_installer(dir: &Path, key_dir: &Path) -> Result<String, String> {
        let mut keys = keel_release::TrustedKeys::new();
        keys.add("dev", &fs::read_to_string(key_dir.join(DEV_PUB)).unwrap())
            .unwrap();
        let data = fs::read(dir.join("keel-install")).map_err(|e| e.to_string())?;
        let sig =
            fs::read_to_string(dir.join("keel-install.minisig")).map_err(|e| e.to_string())?;
        // Plain minisign first: the signature is an ordinary one.
        let pk = minisign_verify::PublicKey::from_base64(
            fs::read_to_string(key_dir.join(DEV_PUB))
                .unwrap()
                .lines()
                .nth(1)
                .unwrap(),
        )
        .unwrap();
        let s = minisign_verify::Signature::decode(&sig).map_err(|e| e.to_string())?;
        pk.verify(&data, &s, false).map_err(|e| e.to_string())?;
        let sum = fs::read_to_string(dir.join("keel-install.sha256")).map_err(|e| e.to_string())?;
        assert_eq!(sum, format!("{}  keel-install\n", Sha256::of(&data)));
        let expect = keel_release::Expect {
            channel: "stable",
            arch: "x86_64",
        };
        keel_release::verify_installer(&keys, &data, &sig, &expect)
            .map(|s| s.version.map(|v| v.to_string()).unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    /// The image's static installer is published with its version and,
    /// for the channel's newest version, at `<channel>/keel-install`,
    /// signed with the release key; a changed byte does not verify, and
    /// its signature is no manifest's.
    #[test]
    fn publishes_the_signed_installer_with_each_version() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let key_dir = tmp.path().join("key");
        let build = tmp.path().join("build");
        fs::create_dir_all(&build).unwrap();
        let mut opts = ReleaseOptions::new(build.clone(), "stable");
        opts.out = tmp.path().join("release");
        opts.chunk_size = keel_release::doc::MIN_CHUNK_SIZE;
        opts.level = 1;
        opts.no_disk = true;
        let cdir = opts.out.join("stable");
        for v in ["1.0.0", "1.1.0", "1.0.0"] {
            fake_build(&build, v, &key_dir);
            release(&opts).unwrap();
        }
        for v in ["1.0.0", "1.1.0"] {
            let dir = cdir.join(v);
            assert_eq!(
                fs::read(dir.join("keel-install")).unwrap(),
                installer_bytes(v)
            );
            assert_eq!(verify_installer(&dir, &key_dir).unwrap(), v);
            let mode = fs::metadata(dir.join("keel-install"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        // Re-releasing 1.0.0 left the channel's newest (1.1.0) in place.
        assert_eq!(
            fs::read(cdir.join("keel-install")).unwrap(),
            installer_bytes("1.1.0")
        );
        assert_eq!(verify_installer(&cdir, &key_dir).unwrap(), "1.1.0");
        // What the README tells a user to run, when Debian's minisign is here.
        match std::process::Command::new("minisign")
            .arg("-Vm")
            .arg(cdir.join("keel-install"))
            .arg("-p")
            .arg(key_dir.join(DEV_PUB))
            .output()
        {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{text}");
                assert!(
                    text.contains(
                        "keel-release/1 installer channel=stable arch=x86_64 version=1.1.0"
                    ),
                    "{text}"
                );
            }
            Err(_) => eprintln!("minisign not installed: its check skipped"),
        }
        // One changed byte: the signature no longer verifies.
        let mut evil = installer_bytes("1.1.0");
        evil[100] ^= 1;
        fs::write(cdir.join("keel-install"), &evil).unwrap();
        assert!(verify_installer(&cdir, &key_dir).is_err());
        // The installer's signature never passes for a manifest.
        let mut keys = keel_release::TrustedKeys::new();
        keys.add("dev", &fs::read_to_string(key_dir.join(DEV_PUB)).unwrap())
            .unwrap();
        let e = keel_release::verify_manifest(
            &keys,
            &fs::read(cdir.join("1.1.0/manifest.json")).unwrap(),
            &fs::read_to_string(cdir.join("1.1.0/keel-install.minisig")).unwrap(),
            &keel_release::Expect {
                channel: "stable",
                arch: "x86_64",
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("manifest.json"), "{e}");
        // A build without an installer still releases, without one; the
        // channel's copy stays the newest version's that had one.
        fs::write(cdir.join("keel-install"), installer_bytes("1.1.0")).unwrap();
        let mut m = fake_build(&build, "1.2.0", &key_dir);
        m.installer = None;
        fs::write(build.join("image.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        release(&opts).unwrap();
        assert!(cdir.join("1.2.0/manifest.json").exists());
        assert!(!cdir.join("1.2.0/keel-install").exists());
        assert_eq!(verify_installer(&cdir, &key_dir).unwrap(), "1.1.0");
    }

    #[test]
    fn refuses_a_tree_that_does_not_match_the_root_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let build = tmp.path().to_path_buf();
        let mut m = fake_build(&build, "1.0.0", &tmp.path().join("key"));
        m.usr_root_hash = "ab".repeat(32);
        fs::write(build.join("image.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        let e = format!(
            "{:#}",
            release(&ReleaseOptions::new(build, "stable")).unwrap_err()
        );
        assert!(e.contains("image.json says abab"), "{e}");
    }

    #[test]
    fn refuses_a_bad_channel_or_version() {
        let tmp = tempfile::tempdir().unwrap();
        let build = tmp.path().to_path_buf();
        fake_build(&build, "1.0.0", &tmp.path().join("key"));
        let opts = ReleaseOptions::new(build.clone(), "Stable!");
        assert!(release(&opts).unwrap_err().to_string().contains("channel"));
        let mut opts = ReleaseOptions::new(build, "stable");
        opts.min_version = Some("1.x".into());
        assert!(format!("{:#}", release(&opts).unwrap_err()).contains("--min-version"));
    }

    #[test]
    fn reads_the_verity_superblock() {
        let sb = parse_verity_superblock(&superblock(300, &[0xab; 32])).unwrap();
        assert_eq!(sb.algorithm, "sha256");
        assert_eq!(
            (sb.data_block_size, sb.hash_block_size, sb.data_blocks),
            (4096, 4096, 300)
        );
        assert_eq!(sb.salt, vec![0xab; 32]);
        let mut bad = superblock(1, &[]);
        bad[0] = b'x';
        assert!(parse_verity_superblock(&bad).is_err());
        assert!(parse_verity_superblock(&[0; 10]).is_err());
    }
}

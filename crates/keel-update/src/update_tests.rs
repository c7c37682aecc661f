//! `stage` against an in-memory disk and a tree served from a directory
//! through a source that can break off, corrupt and count requests.

use std::collections::BTreeMap;

use keel_release::write::SigningKey;

use super::*;
use crate::esp::NoEsp;
use crate::source::Dir;

use crate::testtree as tree;

/// A directory source with faults.
struct Faulty {
    inner: Dir,
    /// Range requests answered before the "server" goes away.
    budget: Option<usize>,
    /// (file suffix, byte offset) to flip in answers.
    corrupt: Option<(&'static str, u64)>,
    ranges: Vec<(String, u64)>,
}

impl Faulty {
    fn new(root: &std::path::Path) -> Faulty {
        Faulty {
            inner: Dir::new(root),
            budget: None,
            corrupt: None,
            ranges: vec![],
        }
    }
}

impl Source for Faulty {
    fn get(&mut self, rel: &str, max: usize) -> Result<Vec<u8>, FetchError> {
        self.inner.get(rel, max)
    }
    fn get_range(&mut self, rel: &str, offset: u64, len: u64) -> Result<Vec<u8>, FetchError> {
        if let Some(b) = &mut self.budget {
            if *b == 0 {
                return Err(FetchError::Transport {
                    url: rel.into(),
                    message: "connection reset".into(),
                });
            }
            *b -= 1;
        }
        self.ranges.push((rel.to_string(), offset));
        let mut data = self.inner.get_range(rel, offset, len)?;
        if let Some((suffix, at)) = self.corrupt {
            if rel.ends_with(suffix) && (offset..offset + len).contains(&at) {
                data[(at - offset) as usize] ^= 0x40;
            }
        }
        Ok(data)
    }
    fn describe(&self) -> String {
        "faulty".into()
    }
}

/// Two slots of two partitions each, in memory, plus their attributes.
#[derive(Default)]
struct MemDisk {
    parts: BTreeMap<(Slot, &'static str), Vec<u8>>,
    writes: Vec<(Slot, &'static str, u64)>,
    disabled: Vec<Slot>,
    next: Option<Slot>,
    flip_on_read: Option<u64>,
}

fn key(t: Target) -> &'static str {
    match t {
        Target::Usr => "usr",
        Target::UsrVerity => "verity",
    }
}

impl MemDisk {
    fn new(size: usize) -> MemDisk {
        let mut d = MemDisk::default();
        for s in Slot::ALL {
            d.parts.insert((s, "usr"), vec![0xAA; size]);
            d.parts.insert((s, "verity"), vec![0xAA; size / 8]);
        }
        d
    }
}

impl SlotDisk for MemDisk {
    fn capacity(&mut self, slot: Slot, t: Target) -> Result<u64, SlotDiskError> {
        Ok(self.parts[&(slot, key(t))].len() as u64)
    }
    fn write_at(
        &mut self,
        slot: Slot,
        t: Target,
        offset: u64,
        data: &[u8],
    ) -> Result<(), SlotDiskError> {
        self.writes.push((slot, key(t), offset));
        let p = self.parts.get_mut(&(slot, key(t))).expect("part");
        p[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn read_at(
        &mut self,
        slot: Slot,
        t: Target,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), SlotDiskError> {
        let p = &self.parts[&(slot, key(t))];
        buf.copy_from_slice(&p[offset as usize..offset as usize + buf.len()]);
        if let (Some(at), Target::Usr) = (self.flip_on_read, t) {
            if (offset..offset + buf.len() as u64).contains(&at) {
                buf[(at - offset) as usize] ^= 1;
            }
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<(), SlotDiskError> {
        Ok(())
    }
    fn disable(&mut self, slot: Slot) -> Result<(), SlotDiskError> {
        self.disabled.push(slot);
        Ok(())
    }
    fn set_next(&mut self, slot: Slot) -> Result<(), SlotDiskError> {
        self.next = Some(slot);
        Ok(())
    }
}

/// One install: slot, version, root hash, kernel, initramfs.
type Installed = (Slot, String, String, Vec<u8>, Vec<u8>);

/// An ESP in memory: the files streamed (by slot and file), those
/// installed, and the entries activated.
#[derive(Default)]
struct MemEsp {
    open: Option<(Slot, BootFile)>,
    parts: BTreeMap<(Slot, &'static str), Vec<u8>>,
    installed: Vec<Installed>,
    activated: Vec<Slot>,
    discarded: Vec<Slot>,
    /// The largest append (the transfer streams, never a whole file).
    largest_append: usize,
}

fn file_key(f: BootFile) -> &'static str {
    match f {
        BootFile::Kernel => "kernel",
        BootFile::Initramfs => "initramfs",
    }
}

impl BootInstaller for MemEsp {
    fn begin(&mut self, slot: Slot, file: BootFile) -> Result<(), EspError> {
        self.open = Some((slot, file));
        self.parts.insert((slot, file_key(file)), Vec::new());
        Ok(())
    }
    fn append(&mut self, data: &[u8]) -> Result<(), EspError> {
        let (slot, file) = self.open.expect("append after begin");
        self.largest_append = self.largest_append.max(data.len());
        self.parts
            .get_mut(&(slot, file_key(file)))
            .expect("part")
            .extend_from_slice(data);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), EspError> {
        self.open.take().expect("finish after begin");
        Ok(())
    }
    fn discard(&mut self, slot: Slot) -> Result<(), EspError> {
        self.open = None;
        self.parts.retain(|(s, _), _| *s != slot);
        self.discarded.push(slot);
        Ok(())
    }
    fn install(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError> {
        assert!(self.open.is_none(), "install with a file still open");
        let k = self
            .parts
            .remove(&(b.slot, "kernel"))
            .expect("kernel streamed");
        let i = self
            .parts
            .remove(&(b.slot, "initramfs"))
            .expect("initramfs streamed");
        self.installed
            .push((b.slot, b.version.to_string(), b.root_hash.to_string(), k, i));
        Ok(())
    }
    fn activate(&mut self, b: &SlotBoot<'_>) -> Result<(), EspError> {
        self.activated.push(b.slot);
        Ok(())
    }
    fn demote(&mut self, _slot: Slot) -> Result<(), EspError> {
        Ok(())
    }
}

struct World {
    _tmp: tempfile::TempDir,
    base: std::path::PathBuf,
    state: StateDir,
    machine: Machine,
    built: tree::Built,
}

const USR_LEN: usize = 10 * tree::CHUNK as usize + 8192;

fn world() -> World {
    let tmp = tempfile::tempdir().expect("tmp");
    let base = tmp.path().join("tree");
    let key = SigningKey::generate().expect("key");
    let built = tree::build(&base, "stable", "0.2.0", USR_LEN, &key);
    let mut keys = TrustedKeys::new();
    keys.add("test.pub", &built.public_key).expect("key");
    World {
        state: StateDir {
            path: tmp.path().join("state"),
            save_every: std::time::Duration::ZERO,
        },
        base,
        _tmp: tmp,
        machine: Machine {
            current: Version::parse("0.1.0").expect("v"),
            booted: Slot::A,
            arch: std::env::consts::ARCH.into(),
            keys,
            boot_id: "boot1".into(),
            root_hash: None,
        },
        built,
    }
}

fn release(w: &World, src: &mut dyn Source) -> Release {
    let ch = fetch_channel(src, &w.machine, "stable").expect("channel");
    let entry = ch.latest().expect("latest").clone();
    fetch_manifest(src, &w.machine, "stable", &entry).expect("manifest")
}

fn run(
    w: &World,
    src: &mut dyn Source,
    disk: &mut MemDisk,
    esp: &mut dyn BootInstaller,
) -> Result<Pending, UpdateError> {
    let r = release(w, src);
    let mut steps = Vec::new();
    let res = stage(src, disk, esp, &w.state, &w.machine, &r, 42, &mut |s| {
        steps.push(s)
    });
    if res.is_ok() {
        assert!(steps.contains(&Step::Verifying));
        let last_dl = steps.iter().rev().find_map(|s| match s {
            Step::Download { done, total } => Some((*done, *total)),
            _ => None,
        });
        let (done, total) = last_dl.expect("progress reported");
        assert_eq!(done, total);
    }
    res
}

#[test]
fn stages_into_the_inactive_slot_and_sets_it_next_last() {
    let w = world();
    let mut src = Faulty::new(&w.base);
    let mut disk = MemDisk::new(1 << 20);
    let mut esp = MemEsp::default();
    let p = run(&w, &mut src, &mut disk, &mut esp).expect("stage");
    assert_eq!(p.version, "0.2.0");
    assert_eq!(p.slot, "B");
    assert_eq!(p.from_version, "0.1.0");
    assert_eq!(&disk.parts[&(Slot::B, "usr")][..USR_LEN], &w.built.usr[..]);
    assert_eq!(
        &disk.parts[&(Slot::B, "verity")][..w.built.tree.len()],
        &w.built.tree[..]
    );
    // The running slot is never written.
    assert!(disk.writes.iter().all(|(s, _, _)| *s == Slot::B));
    assert!(disk.parts[&(Slot::A, "usr")].iter().all(|b| *b == 0xAA));
    assert_eq!(disk.disabled, vec![Slot::B]);
    assert_eq!(disk.next, Some(Slot::B));
    let root = w.built.manifest.artifacts.usr_verity.root_hash.to_string();
    assert_eq!(
        esp.installed,
        vec![(
            Slot::B,
            "0.2.0".into(),
            root,
            w.built.kernel.clone(),
            w.built.initramfs.clone()
        )]
    );
    assert_eq!(esp.activated, vec![Slot::B]);
    assert!(esp.parts.is_empty(), "temporary files left");
    // Streamed chunk by chunk, never a whole file in one piece.
    assert_eq!(esp.largest_append, tree::CHUNK as usize);
    assert_eq!(w.state.pending().expect("pending"), Some(p));
    assert_eq!(w.state.progress().expect("progress"), None);
}

#[test]
fn a_killed_transfer_resumes_at_the_first_missing_chunk() {
    let w = world();
    let mut disk = MemDisk::new(1 << 20);
    let mut src = Faulty::new(&w.base);
    src.budget = Some(4);
    let e = run(&w, &mut src, &mut disk, &mut NoEsp).expect_err("broken off");
    assert!(matches!(e, UpdateError::Fetch(_)), "{e}");
    assert_eq!(disk.next, None, "nothing points at a partial slot");
    // Saved after every chunk in this test (save_every = 0).
    let prog = w.state.progress().expect("read").expect("progress kept");
    assert_eq!(prog.usr, 4, "{prog:?}");
    let written = disk.writes.len();
    assert_eq!(written, 4);

    let mut src = Faulty::new(&w.base);
    run(&w, &mut src, &mut disk, &mut NoEsp).expect("resumed");
    let usr_chunks = &w.built.manifest.artifacts.usr.chunks;
    let first = src
        .ranges
        .iter()
        .find(|(f, _)| f.ends_with("usr.erofs.zst"))
        .expect("usr ranges");
    assert_eq!(
        first.1, usr_chunks[prog.usr].offset,
        "resumed at chunk {}",
        prog.usr
    );
    assert_eq!(&disk.parts[&(Slot::B, "usr")][..USR_LEN], &w.built.usr[..]);
    assert_eq!(disk.next, Some(Slot::B));
}

#[test]
fn resume_point_is_exact_when_progress_is_saved_per_chunk() {
    // Progress written by an earlier run that got 6 chunks in.
    let w = world();
    let mut src = Faulty::new(&w.base);
    let r = release(&w, &mut src);
    w.state
        .save(
            "progress.json",
            &Progress {
                version: "0.2.0".into(),
                manifest_sha256: r.sha256.to_string(),
                slot: "B".into(),
                usr: 6,
                usr_verity: 0,
            },
        )
        .expect("save");
    let mut disk = MemDisk::new(1 << 20);
    // The disk already holds those 6 chunks.
    let cs = tree::CHUNK as usize;
    disk.parts.get_mut(&(Slot::B, "usr")).expect("b")[..6 * cs]
        .copy_from_slice(&w.built.usr[..6 * cs]);
    let mut src = Faulty::new(&w.base);
    run(&w, &mut src, &mut disk, &mut NoEsp).expect("stage");
    let usr_writes: Vec<u64> = disk
        .writes
        .iter()
        .filter(|(_, p, _)| *p == "usr")
        .map(|(_, _, o)| *o / tree::CHUNK)
        .collect();
    assert_eq!(usr_writes, (6..11).collect::<Vec<u64>>());

    // A progress file for another manifest is ignored: start over.
    let w2 = world();
    w2.state
        .save(
            "progress.json",
            &Progress {
                version: "0.2.0".into(),
                manifest_sha256: "00".repeat(32),
                slot: "B".into(),
                usr: 6,
                usr_verity: 0,
            },
        )
        .expect("save");
    let mut disk = MemDisk::new(1 << 20);
    run(&w2, &mut Faulty::new(&w2.base), &mut disk, &mut NoEsp).expect("stage");
    assert_eq!(disk.writes[0], (Slot::B, "usr", 0));
}

#[test]
fn a_corrupted_chunk_is_refused_before_it_is_written() {
    let w = world();
    let bad = w.built.manifest.artifacts.usr.chunks[3].offset + 10;
    let mut src = Faulty::new(&w.base);
    src.corrupt = Some(("usr.erofs.zst", bad));
    let mut disk = MemDisk::new(1 << 20);
    let e = run(&w, &mut src, &mut disk, &mut NoEsp).expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.starts_with("refused before writing: usr chunk 3: compressed SHA-256"),
        "{msg}"
    );
    // The chain (as `keel-update` prints it) names the chunk once.
    let chain = format!("{:#}", anyhow::Error::new(e));
    assert_eq!(chain.matches("usr chunk 3").count(), 1, "{chain}");
    let offsets: Vec<u64> = disk.writes.iter().map(|(_, _, o)| *o).collect();
    assert_eq!(
        offsets,
        vec![0, tree::CHUNK, 2 * tree::CHUNK],
        "chunk 3 never written"
    );
    assert_eq!(disk.next, None);
    assert_eq!(w.state.progress().expect("p").map(|p| p.usr), Some(3));
}

#[test]
fn a_slot_that_reads_back_wrong_is_not_set_next_and_is_rewritten_from_there() {
    let w = world();
    let mut disk = MemDisk::new(1 << 20);
    disk.flip_on_read = Some(7 * tree::CHUNK + 5);
    let e = run(&w, &mut Faulty::new(&w.base), &mut disk, &mut NoEsp).expect_err("read-back");
    assert!(
        e.to_string().starts_with("USR-B: chunk 7 reads back"),
        "{e}"
    );
    assert_eq!(disk.next, None);
    assert_eq!(w.state.progress().expect("p").map(|p| p.usr), Some(7));
    disk.flip_on_read = None;
    disk.writes.clear();
    run(&w, &mut Faulty::new(&w.base), &mut disk, &mut NoEsp).expect("second try");
    assert_eq!(disk.writes[0], (Slot::B, "usr", 7 * tree::CHUNK));
    assert_eq!(disk.next, Some(Slot::B));
}

#[test]
fn a_wrong_verity_root_on_disk_is_refused() {
    let w = world();
    let mut src = Faulty::new(&w.base);
    let mut r = release(&w, &mut src);
    r.manifest.artifacts.usr_verity.root_hash = Sha256([7; 32]);
    let mut disk = MemDisk::new(1 << 20);
    let e = stage(
        &mut src,
        &mut disk,
        &mut NoEsp,
        &w.state,
        &w.machine,
        &r,
        1,
        &mut |_| {},
    )
    .expect_err("root hash");
    assert!(
        e.to_string().contains("the verity root hash on disk is"),
        "{e}"
    );
    assert_eq!(disk.next, None);
}

#[test]
fn too_small_a_slot_is_refused_before_any_write() {
    let w = world();
    let mut disk = MemDisk::new(256 << 10);
    let e = run(&w, &mut Faulty::new(&w.base), &mut disk, &mut NoEsp).expect_err("small");
    assert!(
        e.to_string()
            .starts_with("USR-B is 262144 bytes, 0.2.0 usr needs"),
        "{e}"
    );
    assert!(disk.writes.is_empty() && disk.disabled.is_empty());
}

#[test]
fn signatures_from_an_untrusted_key_are_refused() {
    let mut w = world();
    let other = SigningKey::generate().expect("key");
    let mut keys = TrustedKeys::new();
    keys.add("other.pub", &other.public_key_file().expect("pub"))
        .expect("add");
    w.machine.keys = keys;
    let e = fetch_channel(&mut Faulty::new(&w.base), &w.machine, "stable").expect_err("untrusted");
    assert!(matches!(e, UpdateError::Verify(_)), "{e}");
    // A channel asked for that the signature was not made for.
    std::fs::create_dir_all(w.base.join("beta")).expect("mkdir");
    for f in ["channel.json", "channel.json.minisig"] {
        std::fs::copy(w.base.join("stable").join(f), w.base.join("beta").join(f)).expect("copy");
    }
    let w2 = world();
    std::fs::create_dir_all(w2.base.join("beta")).expect("mkdir");
    for f in ["channel.json", "channel.json.minisig"] {
        std::fs::copy(w2.base.join("stable").join(f), w2.base.join("beta").join(f)).expect("copy");
    }
    let e =
        fetch_channel(&mut Faulty::new(&w2.base), &w2.machine, "beta").expect_err("other channel");
    assert!(e.to_string().contains("channel"), "{e}");
}

#[test]
fn verity_root_is_salt_then_top_block() {
    use sha2::Digest;
    let top = [3u8; 4096];
    let mut h = sha2::Sha256::new();
    h.update([0xab, 0xcd]);
    h.update(top);
    assert_eq!(verity_root("abcd", &top), Some(Sha256(h.finalize().into())));
    assert_eq!(verity_root("xyz", &top), None);
}

#[test]
fn chunks_the_running_slot_holds_are_copied_not_fetched() {
    let w = world();
    let mut src = Faulty::new(&w.base);
    let mut disk = MemDisk::new(1 << 20);
    // USR-A holds the new version except in chunks 3 and 7 (an older
    // version sharing most blocks); its verity tree is all different.
    let cs = tree::CHUNK as usize;
    let mut old = w.built.usr.clone();
    old[3 * cs + 17] ^= 1;
    old[7 * cs] ^= 1;
    disk.parts.get_mut(&(Slot::A, "usr")).expect("A")[..USR_LEN].copy_from_slice(&old);
    let mut esp = MemEsp::default();
    run(&w, &mut src, &mut disk, &mut esp).expect("stage");
    assert_eq!(&disk.parts[&(Slot::B, "usr")][..USR_LEN], &w.built.usr[..]);
    let usr_file = &w.built.manifest.artifacts.usr.file;
    let usr_chunks = &w.built.manifest.artifacts.usr.chunks;
    let fetched: Vec<usize> = src
        .ranges
        .iter()
        .filter(|(rel, _)| rel.ends_with(usr_file.as_str()))
        .map(|(_, off)| {
            usr_chunks
                .iter()
                .position(|c| c.offset == *off)
                .expect("a chunk's offset")
        })
        .collect();
    assert_eq!(
        fetched,
        vec![3, 7],
        "only the chunks that differ are fetched"
    );
    // The running slot is still only read.
    assert!(disk.writes.iter().all(|(s, _, _)| *s == Slot::B));
    assert_eq!(&disk.parts[&(Slot::A, "usr")][..USR_LEN], &old[..]);
}

#[test]
fn a_corrupted_kernel_is_discarded_and_nothing_is_set_next() {
    let w = world();
    let mut src = Faulty::new(&w.base);
    // A byte of the kernel's second chunk.
    let k = &w.built.manifest.artifacts.kernel;
    src.corrupt = Some(("vmlinuz.zst", k.chunks[1].offset + 10));
    let mut disk = MemDisk::new(1 << 20);
    let mut esp = MemEsp::default();
    let e = run(&w, &mut src, &mut disk, &mut esp).expect_err("refused");
    assert!(e.to_string().contains("kernel"), "{e}");
    assert_eq!(esp.discarded, vec![Slot::B]);
    assert!(esp.parts.is_empty(), "temporary files left");
    assert!(esp.installed.is_empty());
    assert!(esp.activated.is_empty());
    assert_eq!(disk.next, None);
    assert_eq!(w.state.pending().expect("pending"), None);
}

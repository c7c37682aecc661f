//! `install` end to end with fakes: a signed tree in a temp dir
//! (`file://`), a fake host, an in-memory device and a recording placer.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;

use keel_release::write::SigningKey;

use crate::args::{parse, Options};
use crate::device::{DeviceFacts, Host, Kind};
use crate::place::{Layout, Placer, Request};
use crate::write::Target;
use crate::write_tests::Fake;
use crate::{install, Effects, Report};

#[path = "../tests/common/tree.rs"]
mod tree;

#[derive(Debug, Clone)]
struct Shared(Rc<RefCell<Fake>>);

impl Target for Shared {
    fn write_at(&mut self, o: u64, b: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().write_at(o, b)
    }
    fn read_at(&mut self, o: u64, b: &mut [u8]) -> io::Result<()> {
        self.0.borrow_mut().read_at(o, b)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.borrow_mut().sync()
    }
    fn drop_cache(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct FakeHost(DeviceFacts);

impl Host for FakeHost {
    fn inspect(&self, _: &Path) -> io::Result<DeviceFacts> {
        Ok(self.0.clone())
    }
}

#[derive(Default)]
struct Recorder {
    calls: Vec<(Layout, Request)>,
}

impl Placer for Recorder {
    fn place(&mut self, l: &Layout, r: &Request) -> Result<String, String> {
        self.calls.push((l.clone(), r.clone()));
        Ok("placed".into())
    }
}

struct World {
    _dir: tempfile::TempDir,
    base: PathBuf,
    disk: tree::Disk,
    manifest: keel_release::Manifest,
    dev: Rc<RefCell<Fake>>,
    facts: DeviceFacts,
}

fn world(dev_size: u64) -> World {
    let dir = tempfile::tempdir().expect("tmp");
    let base = dir.path().join("tree");
    let key = SigningKey::generate().expect("key");
    let disk = tree::disk(None);
    let manifest = tree::release(&base, "stable", "1.0.0", &disk, &key);
    let dev = Rc::new(RefCell::new(Fake::new(dev_size, 0xee)));
    let facts = DeviceFacts {
        path: "/dev/fake".into(),
        kind: Kind::Block,
        size: dev_size,
        partition_of: None,
        mounted: vec![],
        in_use: vec![],
        running_system: None,
        contents: "16 MiB, GPT, 1 partition: 1 old-data".into(),
    };
    World {
        _dir: dir,
        base,
        disk,
        manifest,
        dev,
        facts,
    }
}

fn opts(w: &World, extra: &str) -> Options {
    let mut a = vec![
        "/dev/fake".to_string(),
        "--channel".into(),
        "stable".into(),
        "--base-url".into(),
        format!("file://{}", w.base.display()),
        "--key".into(),
        w.base.join("key.pub").display().to_string(),
    ];
    a.extend(extra.split_whitespace().map(str::to_string));
    parse(a).expect("args")
}

struct Run {
    result: anyhow::Result<Report>,
    opened: bool,
    asked: Option<String>,
    placed: Vec<(Layout, Request)>,
    said: Vec<String>,
}

fn run(w: &World, o: &Options, answer: Option<&str>) -> Run {
    let host = FakeHost(w.facts.clone());
    let mut opened = false;
    let dev = w.dev.clone();
    let mut open = |_: &Path, _: Kind| -> io::Result<Box<dyn Target>> {
        opened = true;
        Ok(Box::new(Shared(dev.clone())))
    };
    let mut placer = Recorder::default();
    let mut asked = None;
    let mut ask = |q: &str| {
        asked = Some(q.to_string());
        answer.map(str::to_string)
    };
    let mut said = Vec::new();
    let mut say = |s: &str| said.push(s.to_string());
    let cancel = AtomicBool::new(false);
    let result = install(
        o,
        Effects {
            host: &host,
            open: &mut open,
            placer: &mut placer,
            ask: &mut ask,
            progress: &mut |_| {},
            say: &mut say,
            cancel: &cancel,
            workers: 2,
        },
    );
    Run {
        result,
        opened,
        asked,
        placed: placer.calls,
        said,
    }
}

#[test]
fn installs_a_signed_release_and_places_the_config() {
    let w = world(16 * tree::MIB);
    let t = tempfile::tempdir().expect("tmp");
    let ign = t.path().join("c.ign");
    std::fs::write(&ign, r#"{"ignition":{"version":"3.4.0"}}"#).expect("ign");
    let o = opts(&w, &format!("--ignition {} --platform qemu", ign.display()));
    let r = run(&w, &o, Some("yes\n"));
    let rep = r.result.expect("install");
    assert_eq!(rep.written.bytes, w.disk.bytes.len() as u64);
    let dev = w.dev.borrow();
    assert_eq!(&dev.disk[..w.disk.bytes.len()], &w.disk.bytes[..]);
    let q = r.asked.expect("asked");
    assert!(
        q.contains("/dev/fake will be overwritten with Keel 1.0.0 (stable"),
        "{q}"
    );
    assert!(q.contains("1 old-data"), "{q}");
    assert_eq!(r.placed.len(), 1);
    let (l, req) = &r.placed[0];
    assert_eq!((l.oem_offset, l.oem_size), tree::part("OEM"));
    assert!(l.root_grows);
    assert_eq!(req.platform.as_deref(), Some("qemu"));
    assert_eq!(
        req.config.as_ref().map(|c| c.file),
        Some(crate::config::OEM_CONFIG)
    );
    assert!(
        r.said.iter().any(|s| s.contains("grows ROOT by 6 MiB")),
        "{:?}",
        r.said
    );
    assert_eq!(
        w.manifest.artifacts.disk.as_ref().map(|d| d.size),
        Some(10 * tree::MIB)
    );
}

#[test]
fn a_cloud_config_goes_to_oem_user_data_as_given() {
    let w = world(16 * tree::MIB);
    let t = tempfile::tempdir().expect("tmp");
    let cc = t.path().join("u.yml");
    let text = "#cloud-config\nhostname: node1\n";
    std::fs::write(&cc, text).expect("cc");
    let o = opts(&w, &format!("--cloud-config {} --yes", cc.display()));
    let r = run(&w, &o, None);
    r.result.expect("install");
    assert_eq!(r.placed.len(), 1);
    let c = r.placed[0].1.config.as_ref().expect("a config placed");
    assert_eq!(c.file, crate::config::OEM_USER_DATA);
    assert_eq!(c.data, text.as_bytes());
    assert!(
        r.said
            .iter()
            .any(|s| s.contains("config: cloud-config from") && s.ends_with("valid")),
        "{:?}",
        r.said
    );
}

#[test]
fn a_bad_config_is_refused_before_the_image_or_the_device_is_touched() {
    let w = world(16 * tree::MIB);
    let t = tempfile::tempdir().expect("tmp");
    let ign = t.path().join("bad.ign");
    std::fs::write(&ign, r#"{"ignition":{"version":"9.0.0"}}"#).expect("ign");
    let mut o = opts(&w, &format!("--ignition {} --yes", ign.display()));
    // even an unreachable tree is never asked
    o.image = crate::args::Image::Release {
        base_url: "http://127.0.0.1:9".into(),
        channel: "stable".into(),
        version: None,
    };
    let r = run(&w, &o, None);
    let e = format!("{:#}", r.result.expect_err("bad config"));
    assert!(
        e.contains("first-boot config") && e.contains("bad.ign"),
        "{e}"
    );
    assert!(!r.opened && r.asked.is_none());
    assert!(w.dev.borrow().writes.is_empty());
}

#[test]
fn refused_devices_are_never_opened() {
    for (what, mutate) in [
        (
            "mounted",
            Box::new(|f: &mut DeviceFacts| f.mounted = vec!["/dev/fake1 on /mnt".into()])
                as Box<dyn Fn(&mut DeviceFacts)>,
        ),
        (
            "running system",
            Box::new(|f: &mut DeviceFacts| f.running_system = Some("/".into())),
        ),
        (
            "smaller than the image",
            Box::new(|f: &mut DeviceFacts| f.size = 9 * tree::MIB),
        ),
    ] {
        let mut w = world(16 * tree::MIB);
        mutate(&mut w.facts);
        let r = run(&w, &opts(&w, "--yes"), None);
        let e = format!("{:#}", r.result.expect_err(what));
        assert!(e.contains(what), "{what}: {e}");
        assert!(!r.opened, "{what}");
    }
}

#[test]
fn no_terminal_without_yes_and_a_wrong_answer_write_nothing() {
    let w = world(16 * tree::MIB);
    let r = run(&w, &opts(&w, ""), None);
    let e = format!("{:#}", r.result.expect_err("no tty"));
    assert!(e.contains("pass --yes"), "{e}");
    assert!(!r.opened);
    let r = run(&w, &opts(&w, ""), Some("y\n"));
    assert!(format!("{:#}", r.result.expect_err("no")).contains("not confirmed"));
    assert!(!r.opened);
}

#[test]
fn a_tampered_chunk_stops_the_write_and_wipes_the_table() {
    let w = world(16 * tree::MIB);
    tree::tamper(&w.base, "stable", "1.0.0", &w.manifest, 40);
    let r = run(&w, &opts(&w, "--yes"), None);
    let e = format!("{:#}", r.result.expect_err("tampered"));
    assert!(e.contains("disk chunk 40: compressed SHA-256"), "{e}");
    assert!(e.contains("partition table was wiped"), "{e}");
    let dev = w.dev.borrow();
    let cut = (40 * tree::CHUNK) as usize;
    // nothing at or past the bad chunk but the wiped ends
    assert!(dev.disk[cut..15 * tree::MIB as usize]
        .iter()
        .zip(&w.disk.bytes[cut..])
        .all(|(d, _)| *d == 0xee || *d == 0));
    assert!(dev.disk[cut..cut + tree::CHUNK as usize]
        .iter()
        .all(|b| *b == 0xee));
    assert!(dev.disk[..1 << 20].iter().all(|b| *b == 0));
}

#[test]
fn a_tampered_first_chunk_or_signature_writes_nothing() {
    let w = world(16 * tree::MIB);
    tree::tamper(&w.base, "stable", "1.0.0", &w.manifest, 0);
    let r = run(&w, &opts(&w, "--yes"), None);
    let e = format!("{:#}", r.result.expect_err("tampered"));
    assert!(e.contains("nothing was written"), "{e}");
    assert!(w.dev.borrow().writes.is_empty());

    let w = world(16 * tree::MIB);
    let m = w.base.join("stable/1.0.0/manifest.json");
    let text = std::fs::read_to_string(&m)
        .expect("m")
        .replace("6.1.0-keel", "6.1.0-evil");
    std::fs::write(&m, text).expect("w");
    let r = run(&w, &opts(&w, "--yes"), None);
    let e = format!("{:#}", r.result.expect_err("tampered manifest"));
    assert!(e.contains("manifest.json"), "{e}");
    assert!(!r.opened);
}

#[test]
fn a_version_the_channel_does_not_list_is_named() {
    let w = world(16 * tree::MIB);
    let r = run(&w, &opts(&w, "--version 2.0 --yes"), None);
    let e = format!("{:#}", r.result.expect_err("no such version"));
    assert!(e.contains("no version 2.0") && e.contains("1.0.0"), "{e}");
}

#[test]
fn an_offline_zstd_image_installs_unsigned() {
    let w = world(16 * tree::MIB);
    let img = w.base.join("stable/1.0.0/disk.img.zst");
    let o = parse(vec![
        "/dev/fake".into(),
        "--image".into(),
        img.display().to_string(),
        "--yes".into(),
    ])
    .expect("args");
    let r = run(&w, &o, None);
    let rep = r.result.expect("install");
    assert!(rep.what.contains("zstd, not signed"), "{}", rep.what);
    assert_eq!(
        &w.dev.borrow().disk[..w.disk.bytes.len()],
        &w.disk.bytes[..]
    );
}

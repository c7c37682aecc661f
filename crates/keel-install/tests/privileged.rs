//! Privileged tests of keel-install (root; `./run test privileged`).
//!
//! Each test builds a small synthetic Keel disk (keel-gpt table, a real
//! ext4 OEM partition from `mkfs.ext4 -d` with an `oem-release`), a signed
//! release tree carrying it (keel-release's writer), serves the tree with
//! Debian's nginx started by the test on 127.0.0.1 (its own config and
//! logs in a temp dir; never the host's service), and runs the real
//! `keel-install` binary onto a loop device or a file. Every child is
//! killed, every loop device detached, every mount undone and every temp
//! dir removed on drop; every wait is bounded.

use std::net::TcpListener;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_gpt::Gpt;
use keel_release::write::SigningKey;

#[path = "common/tree.rs"]
mod tree;

use tree::MIB;

const BIN: &str = env!("CARGO_BIN_EXE_keel-install");
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxb0OBVJ0cFk9C2u6pZ2jJsJ8jQv2p3a0b7kH4o8zQ1 test@keel";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_bounded(cmd: &mut Command, secs: u64) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("waiting for child"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{cmd:?} did not finish within {secs}s");
        }
    }
}

fn sh(cmd: &mut Command) {
    let out = run_bounded(cmd, 60);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Nginx {
    port: u16,
    log: PathBuf,
    _child: Guard,
}

impl Nginx {
    fn start(dir: &Path, root: &Path, extra: &str) -> Nginx {
        let port = free_port();
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).expect("mkdir");
        let log = prefix.join("logs/access.log");
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {log};
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        {extra}
    }}
}}
"#,
            p = prefix.display(),
            log = log.display(),
            root = root.display(),
        );
        let cfg = prefix.join("nginx.conf");
        std::fs::write(&cfg, conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&cfg)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx (apt-get install nginx-light)");
        let n = Nginx {
            port,
            log,
            _child: Guard(child),
        };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requested(&self, file: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(file)
    }
}

/// A loop device over a file filled with 0xee.
struct Loop {
    dev: String,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn filled(path: &Path, size: u64) {
    std::fs::write(path, vec![0xeeu8; size as usize]).expect("backing file");
}

fn loop_over(path: &Path) -> Loop {
    let out = run_bounded(
        Command::new("losetup")
            .arg("--find")
            .arg("--show")
            .arg(path),
        30,
    );
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Loop {
        dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
    }
}

/// An ext4 OEM tree with `oem-release` ID=qemu, as bytes.
fn oem_ext4(dir: &Path) -> Vec<u8> {
    let tree = dir.join("oem-tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    std::fs::write(tree.join("oem-release"), "ID=qemu\nNAME=\"QEMU\"\n").expect("oem-release");
    let img = dir.join("oem.ext4");
    std::fs::write(&img, vec![0u8; 2 * MIB as usize]).expect("oem img");
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "OEM", "-d"])
        .arg(&tree)
        .arg(&img));
    std::fs::read(&img).expect("read oem")
}

struct World {
    dir: tempfile::TempDir,
    base: PathBuf,
    disk: tree::Disk,
    manifest: keel_release::Manifest,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tmp");
    let base = dir.path().join("tree");
    let key = SigningKey::generate().expect("key");
    let disk = tree::disk(Some(&oem_ext4(dir.path())));
    let manifest = tree::release(&base, "stable", "1.0.0", &disk, &key);
    World {
        dir,
        base,
        disk,
        manifest,
    }
}

impl World {
    fn install(&self, url: &str, dev: &str, extra: &[&str]) -> Output {
        let key = self.base.join("key.pub");
        run_bounded(
            Command::new(BIN)
                .args([dev, "--channel", "stable", "--base-url", url, "--key"])
                .arg(&key)
                .args(extra),
            120,
        )
    }

    fn ignition(&self) -> PathBuf {
        let p = self.dir.path().join("c.ign");
        std::fs::write(
            &p,
            r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/hostname","mode":420,"overwrite":true,"contents":{"source":"data:,keel-installed"}}]}}"#,
        )
        .expect("ign");
        p
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read_at(path: &str, offset: u64, len: u64) -> Vec<u8> {
    let f = std::fs::File::open(path).expect("open device");
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, offset).expect("read device");
    b
}

/// Mount the OEM partition of `dev` read-only and run `f` on the mount point.
fn with_oem<T>(dev: &str, f: impl FnOnce(&Path) -> T) -> T {
    let (off, len) = tree::part("OEM");
    let lo = {
        let out = run_bounded(
            Command::new("losetup").args([
                "--find",
                "--show",
                "--read-only",
                "--offset",
                &off.to_string(),
                "--sizelimit",
                &len.to_string(),
                dev,
            ]),
            30,
        );
        assert!(out.status.success(), "losetup: {}", stderr(&out));
        Loop {
            dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    };
    let mnt = tempfile::tempdir().expect("mnt");
    sh(Command::new("mount")
        .args(["-o", "ro", "-t", "ext4", &lo.dev])
        .arg(mnt.path()));
    // Unmounted even when `f` panics (an assertion inside it).
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Umount(mnt.path());
    f(mnt.path())
}

/// Mount the OEM partition of `dev` read-only and read `name` from it.
fn oem_file(dev: &str, name: &str) -> Option<(Vec<u8>, u32)> {
    with_oem(dev, |dir| {
        std::fs::read(dir.join(name)).ok().map(|d| {
            let mode = std::fs::metadata(dir.join(name))
                .expect("meta")
                .permissions()
                .mode();
            (d, mode & 0o777)
        })
    })
}

fn gpt_of(dev: &str) -> Result<Gpt, keel_gpt::GptError> {
    let f = std::fs::File::open(dev).expect("open");
    Gpt::read(&f, 512).map(|(g, _)| g)
}

#[test]
fn installs_from_nginx_onto_a_loop_device_with_ignition() {
    let w = world();
    let nginx = Nginx::start(w.dir.path(), &w.base, "");
    let backing = w.dir.path().join("disk");
    filled(&backing, 16 * MIB);
    let lo = loop_over(&backing);
    let ssh = w.dir.path().join("k.pub");
    std::fs::write(&ssh, format!("{KEY}\n")).expect("key");
    let ign = w.ignition();
    let out = w.install(
        &nginx.url(),
        &lo.dev,
        &[
            "--ignition",
            ign.to_str().expect("utf8"),
            "--ssh-key",
            ssh.to_str().expect("utf8"),
            "--platform",
            "qemu",
            "--yes",
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("installed Keel 1.0.0 (stable"), "{err}");
    assert!(err.contains("first-boot config in OEM config.ign"), "{err}");
    assert!(err.contains("grows ROOT by 6 MiB"), "{err}");
    assert!(nginx.requested("disk.img.zst"));

    // The table: the image's partitions, read back from the device.
    let g = gpt_of(&lo.dev).expect("a valid GPT");
    let names: Vec<&str> = g.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["EFI-SYSTEM", "USR-A", "USR-A-VERITY", "OEM", "ROOT"]
    );
    assert_eq!(
        g.by_name("ROOT").expect("root").attributes & (1 << 59),
        1 << 59
    );
    // USR-A and its verity root, as signed.
    let (uo, ul) = tree::part("USR-A");
    assert!(read_at(&lo.dev, uo, ul) == w.disk.usr, "USR-A differs");
    let (vo, _) = tree::part("USR-A-VERITY");
    let v = &w.manifest.artifacts.usr_verity;
    let top = read_at(&lo.dev, vo + v.top_block_range().start, tree::HBS as u64);
    assert_eq!(v.root_of(&top), v.root_hash);
    // Everything but OEM is the image, byte for byte.
    let (oo, ol) = tree::part("OEM");
    let all = read_at(&lo.dev, 0, w.disk.bytes.len() as u64);
    assert!(
        all[..oo as usize] == w.disk.bytes[..oo as usize],
        "before OEM differs"
    );
    assert!(
        all[(oo + ol) as usize..] == w.disk.bytes[(oo + ol) as usize..],
        "after OEM differs"
    );
    // The config, as keel-provision will read it on first boot.
    let (cfg, mode) = oem_file(&lo.dev, "config.ign").expect("config.ign placed");
    assert_eq!(mode, 0o600);
    let (c, format) = keel_provision::parse_config(&cfg)
        .expect("valid")
        .expect("not empty");
    assert_eq!(format.to_string(), "ignition 3.4.0");
    assert_eq!(c.files[0].node.path, "/etc/hostname");
    let core = c.users.iter().find(|u| u.name == "core").expect("core");
    assert_eq!(core.ssh_authorized_keys, vec![KEY.to_string()]);
}

#[test]
fn installs_an_offline_image_file_onto_a_file() {
    let w = world();
    let target = w.dir.path().join("vm.raw");
    filled(&target, 12 * MIB);
    let img = w.base.join("stable/1.0.0/disk.img.zst");
    let out = run_bounded(
        Command::new(BIN)
            .arg(&target)
            .arg("--image")
            .arg(&img)
            .arg("--yes"),
        120,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read(&target).expect("read");
    assert!(
        got[..w.disk.bytes.len()] == w.disk.bytes[..],
        "the file differs"
    );
    assert!(got[got.len() - MIB as usize..].iter().all(|b| *b == 0));
    assert_eq!(got.len() as u64, 12 * MIB);
}

/// `--cloud-config`: the file lands on the new disk's OEM partition as
/// `user-data`, byte for byte and root-only, beside no `config.ign`, and
/// keel-provision's first-boot loader reads it from there as the user
/// config. Installed from the release tree served by nginx onto a loop
/// device, as an operator would.
#[test]
fn installs_with_a_cloud_config_placed_as_oem_user_data() {
    let w = world();
    let nginx = Nginx::start(w.dir.path(), &w.base, "");
    let backing = w.dir.path().join("disk");
    filled(&backing, 16 * MIB);
    let lo = loop_over(&backing);
    let cc = w.dir.path().join("user.yml");
    let text = format!("#cloud-config\nhostname: installed-cc\nssh_authorized_keys:\n  - {KEY}\n");
    std::fs::write(&cc, &text).expect("cloud-config");
    let out = w.install(
        &nginx.url(),
        &lo.dev,
        &[
            "--cloud-config",
            cc.to_str().expect("utf8"),
            "--platform",
            "qemu",
            "--yes",
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("config: cloud-config from"), "{err}");
    assert!(err.contains("first-boot config in OEM user-data"), "{err}");
    assert!(gpt_of(&lo.dev).is_ok(), "a valid GPT");
    // Everything but OEM is the image, byte for byte.
    let (oo, ol) = tree::part("OEM");
    let all = read_at(&lo.dev, 0, w.disk.bytes.len() as u64);
    assert!(
        all[..oo as usize] == w.disk.bytes[..oo as usize]
            && all[(oo + ol) as usize..] == w.disk.bytes[(oo + ol) as usize..],
        "outside OEM differs"
    );
    let (data, mode) = oem_file(&lo.dev, "user-data").expect("user-data placed");
    assert_eq!(data, text.as_bytes());
    assert_eq!(mode, 0o600);
    assert!(oem_file(&lo.dev, "config.ign").is_none());
    // What the first boot makes of that OEM partition (keel-provision's
    // own loader, nothing else offered: no fw_cfg, drive or command line).
    let loaded = with_oem(&lo.dev, |oem| {
        let none = w.dir.path().join("none");
        let fb = keel_provision::FirstBoot {
            sysroot: none.join("sysroot"),
            cmdline: "quiet".into(),
            fw_cfg_root: none.join("fw_cfg"),
            block_dir: none.join("block"),
            dev_dir: none.join("dev"),
            oem_dir: oem.to_path_buf(),
            run_root: none.join("run"),
        };
        keel_provision::load(&fb, &keel_provision::sys::Real).expect("the boot reads it")
    });
    assert!(
        loaded.source.starts_with("OEM user-data "),
        "{}",
        loaded.source
    );
    assert_eq!(loaded.format, "cloud-config");
    let core = loaded
        .config
        .users
        .iter()
        .find(|u| u.name == "core")
        .expect("core");
    assert_eq!(core.ssh_authorized_keys, vec![KEY.to_string()]);
    assert!(
        loaded
            .config
            .files
            .iter()
            .any(|f| f.node.path == "/etc/hostname"),
        "hostname"
    );
}

#[test]
fn a_tampered_chunk_leaves_no_table_and_nothing_past_verified_data() {
    let w = world();
    // chunk 40 of 64 KiB: inside USR-A
    tree::tamper(&w.base, "stable", "1.0.0", &w.manifest, 40);
    let nginx = Nginx::start(w.dir.path(), &w.base, "");
    let backing = w.dir.path().join("disk");
    filled(&backing, 16 * MIB);
    let lo = loop_over(&backing);
    let out = w.install(&nginx.url(), &lo.dev, &["--yes"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("disk chunk 40: compressed SHA-256"), "{err}");
    assert!(err.contains("partition table was wiped"), "{err}");
    assert!(gpt_of(&lo.dev).is_err(), "a partition table survived");
    let cut = 40 * tree::CHUNK;
    let past = read_at(&lo.dev, cut, 15 * MIB - cut);
    assert!(past.iter().all(|b| *b == 0xee || *b == 0));
    assert!(past[..tree::CHUNK as usize].iter().all(|b| *b == 0xee));
    // verified chunks before it are there
    let (uo, _) = tree::part("USR-A");
    assert!(
        read_at(&lo.dev, uo, cut - uo) == w.disk.usr[..(cut - uo) as usize],
        "verified chunks are missing"
    );
}

#[test]
fn a_tampered_first_chunk_writes_nothing() {
    let w = world();
    tree::tamper(&w.base, "stable", "1.0.0", &w.manifest, 0);
    let nginx = Nginx::start(w.dir.path(), &w.base, "");
    let backing = w.dir.path().join("disk");
    filled(&backing, 16 * MIB);
    let lo = loop_over(&backing);
    let out = w.install(&nginx.url(), &lo.dev, &["--yes"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("nothing was written"), "{err}");
    assert!(read_at(&lo.dev, 0, 16 * MIB).iter().all(|b| *b == 0xee));
}

#[test]
fn a_mounted_device_is_refused() {
    let w = world();
    let backing = w.dir.path().join("disk");
    filled(&backing, 16 * MIB);
    let lo = loop_over(&backing);
    sh(Command::new("mkfs.ext4").args(["-q", "-F", &lo.dev]));
    let mnt = tempfile::tempdir().expect("mnt");
    sh(Command::new("mount").arg(&lo.dev).arg(mnt.path()));
    // The mounted filesystem writes its superblock; the last MiB (free
    // blocks) is what keel-install would have wiped first.
    let before = read_at(&lo.dev, 15 * MIB, MIB);
    let url = format!("file://{}", w.base.display());
    let out = w.install(&url, &lo.dev, &["--yes"]);
    let _ = Command::new("umount").arg(mnt.path()).status();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("is mounted") && err.contains(mnt.path().to_str().expect("utf8")),
        "{err}"
    );
    assert!(
        read_at(&lo.dev, 15 * MIB, MIB) == before,
        "the device was written"
    );
}

#[test]
fn a_too_small_device_is_refused() {
    let w = world();
    let backing = w.dir.path().join("disk");
    filled(&backing, 8 * MIB);
    let lo = loop_over(&backing);
    let url = format!("file://{}", w.base.display());
    let out = w.install(&url, &lo.dev, &["--yes"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("smaller than the image"), "{err}");
    assert!(read_at(&lo.dev, 0, 8 * MIB).iter().all(|b| *b == 0xee));
}

#[test]
fn a_bad_ignition_config_is_refused_before_anything_is_fetched_or_written() {
    let w = world();
    let nginx = Nginx::start(w.dir.path(), &w.base, "");
    let backing = w.dir.path().join("disk");
    filled(&backing, 16 * MIB);
    let lo = loop_over(&backing);
    let bad = w.dir.path().join("bad.ign");
    std::fs::write(
        &bad,
        r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"etc/relative"}]}}"#,
    )
    .expect("bad");
    let out = w.install(
        &nginx.url(),
        &lo.dev,
        &["--ignition", bad.to_str().expect("utf8"), "--yes"],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.ign") && err.contains("storage.files"),
        "{err}"
    );
    assert!(
        !nginx.requested("channel.json"),
        "fetched before validating"
    );
    assert!(read_at(&lo.dev, 0, 16 * MIB).iter().all(|b| *b == 0xee));
    // A bad cloud-config the same way, with keel-provision's message.
    let bad = w.dir.path().join("bad.yml");
    std::fs::write(&bad, "#cloud-config\nwrite_files:\n  - content: x\n").expect("bad");
    let out = w.install(
        &nginx.url(),
        &lo.dev,
        &["--cloud-config", bad.to_str().expect("utf8"), "--yes"],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("bad.yml: write_files[0].path"), "{err}");
    assert!(!nginx.requested("channel.json"));
    assert!(read_at(&lo.dev, 0, 16 * MIB).iter().all(|b| *b == 0xee));
}

#[test]
fn an_interrupted_write_leaves_no_partition_table() {
    let w = world();
    // slow enough to interrupt midway
    let nginx = Nginx::start(w.dir.path(), &w.base, "limit_rate 256k;");
    let backing = w.dir.path().join("disk");
    filled(&backing, 16 * MIB);
    let lo = loop_over(&backing);
    let key = w.base.join("key.pub");
    let child = Command::new(BIN)
        .args([
            &lo.dev,
            "--channel",
            "stable",
            "--base-url",
            &nginx.url(),
            "--key",
        ])
        .arg(&key)
        .arg("--yes")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(2500));
    sh(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("keel-install did not stop")
            .expect("wait")
    };
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("wiped"),
        "{err}"
    );
    assert!(gpt_of(&lo.dev).is_err(), "a partition table survived");
}

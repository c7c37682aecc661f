//! Privileged tests of keel-update (root; `./run test privileged`).
//!
//! Each test writes a small synthetic release tree with keel-release's
//! writer, serves it with Debian's nginx started by the test on 127.0.0.1
//! (random free port, its own config, prefix and logs in a temp dir; never
//! the host's service), and drives the real `keel-update` binary against a
//! loop device carrying a Keel-like GPT written by keel-gpt (USR-A,
//! USR-A-VERITY, USR-B, USR-B-VERITY). nginx's access log records every
//! Range header, so a resumed transfer can be checked chunk by chunk. Every
//! child is killed, every loop device detached and every temp dir removed
//! on drop; every wait is bounded.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_gpt::prio::Prio;
use keel_gpt::{types, Gpt, Partition, Uuid};
use keel_release::write::SigningKey;

#[path = "common/tree.rs"]
mod tree;

const BIN: &str = env!("CARGO_BIN_EXE_keel-update");
const MIB: u64 = 1 << 20;
/// 40 chunks of 64 KiB.
const USR_LEN: usize = 40 * tree::CHUNK as usize;

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// nginx serving `root` on 127.0.0.1, optionally rate-limited.
struct Nginx {
    port: u16,
    log: PathBuf,
    _child: Guard,
}

impl Nginx {
    /// `extra`: directives added to the server block.
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
    log_format ranges '$request_uri "$http_range" $status $body_bytes_sent';
    access_log {log} ranges;
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

    /// Start offsets of the Range requests for `file`, in order.
    fn ranges(&self, file: &str) -> Vec<u64> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(file))
            .filter_map(|l| {
                let r = l.split('"').nth(1)?;
                r.strip_prefix("bytes=")?.split('-').next()?.parse().ok()
            })
            .collect()
    }
}

/// A loop device over a sparse file with a Keel-like GPT.
struct Loop {
    dev: String,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

const PARTS: [(&str, u64); 4] = [
    ("USR-A", 4),
    ("USR-A-VERITY", 1),
    ("USR-B", 4),
    ("USR-B-VERITY", 1),
];

/// A sparse image file with a Keel-like GPT (USR-A proven, USR-B empty).
fn gpt_image(dir: &Path) -> PathBuf {
    let img = dir.join("disk.img");
    let size = 16 * MIB;
    let mut f = std::fs::File::create(&img).expect("image");
    f.set_len(size).expect("size");
    let mut g = Gpt::new(size, 512).expect("gpt");
    let mut lba = 2048;
    for (i, (name, mib)) in PARTS.iter().enumerate() {
        let sectors = mib * MIB / 512;
        let verity = name.ends_with("VERITY");
        let prio = if *name == "USR-A" {
            Prio {
                priority: 1,
                tries: 0,
                successful: true,
            }
        } else {
            Prio {
                priority: 0,
                tries: 0,
                successful: false,
            }
        };
        g.set_partition(Partition {
            number: i as u32 + 1,
            type_guid: if verity {
                types::USR_VERITY_X86_64
            } else {
                types::USR_X86_64
            },
            unique_guid: Uuid::new_v4(),
            first_lba: lba,
            last_lba: lba + sectors - 1,
            attributes: prio.apply(0).expect("attr"),
            name: (*name).into(),
        })
        .expect("partition");
        lba += sectors;
    }
    g.write(&mut f).expect("write gpt");
    drop(f);
    img
}

fn loop_disk(dir: &Path) -> Loop {
    let img = gpt_image(dir);
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&img)
        .output()
        .expect("losetup");
    assert!(out.status.success(), "losetup: {out:?}");
    Loop {
        dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
    }
}

fn read_part(dev: &str, label: &str, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(dev).expect("open loop");
    let (g, _) = Gpt::read(&f, 512).expect("gpt");
    let p = g.by_name(label).expect("partition");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, p.first_lba * 512).expect("read");
    buf
}

fn prio(dev: &str, label: &str) -> Prio {
    let f = std::fs::File::open(dev).expect("open loop");
    let (g, _) = Gpt::read(&f, 512).expect("gpt");
    Prio::from_attributes(g.by_name(label).expect("partition").attributes)
}

/// Everything one test needs: tree, server, disk, host files.
struct Host {
    dir: tempfile::TempDir,
    built: tree::Built,
    disk: Loop,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().expect("tmp");
        let key = SigningKey::generate().expect("key");
        let built = tree::build(&dir.path().join("tree"), "stable", "0.2.0", USR_LEN, &key);
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).expect("keys");
        std::fs::write(keys.join("test.pub"), &built.public_key).expect("pub");
        std::fs::write(
            dir.path().join("os-release"),
            "NAME=Keel\nVERSION_ID=0.1.0\n",
        )
        .expect("os-release");
        let disk = loop_disk(dir.path());
        std::fs::write(
            dir.path().join("boot.json"),
            format!(r#"{{"version":1,"slot":"A","disk":"{}"}}"#, disk.dev),
        )
        .expect("boot.json");
        Host { dir, built, disk }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn configure(&self, base_url: &str) {
        let d = self.p("root/etc/keel/update.d");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join("10-test.toml"),
            // Never "immediate" here: the daemon would reboot the test host.
            format!(
                "base_url = \"{base_url}\"\nchannel = \"stable\"\n[reboot]\nstrategy = \"off\"\n"
            ),
        )
        .expect("config");
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--disk")
            .arg(&self.disk.dev)
            .arg("--boot-record")
            .arg(self.p("boot.json"))
            .arg("--os-release")
            .arg(self.p("os-release"))
            .arg("--keys")
            .arg(self.p("keys"))
            .arg("--state-dir")
            .arg(self.p("state"))
            .arg("--config-root")
            .arg(self.p("root"))
            .args(["--save-every-chunk", "--read-timeout", "3"])
            .args(if args.contains(&"--esp") {
                &[][..]
            } else {
                &["--no-esp"][..]
            })
            .args(args)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("all_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env("KEEL_LOG", "info");
        c
    }

    fn progress_usr(&self) -> Option<usize> {
        let b = std::fs::read(self.p("state/progress.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
        v["usr"].as_u64().map(|n| n as usize)
    }

    fn assert_slot_b_holds_the_release(&self) {
        assert_eq!(
            read_part(&self.disk.dev, "USR-B", USR_LEN),
            self.built.usr,
            "USR-B"
        );
        assert_eq!(
            read_part(&self.disk.dev, "USR-B-VERITY", self.built.tree.len()),
            self.built.tree,
            "USR-B-VERITY"
        );
        assert_eq!(
            prio(&self.disk.dev, "USR-B"),
            Prio {
                priority: 2,
                tries: 1,
                successful: false
            }
        );
        self.assert_slot_a_untouched();
    }

    fn assert_slot_a_untouched(&self) {
        assert_eq!(
            prio(&self.disk.dev, "USR-A"),
            Prio {
                priority: 1,
                tries: 0,
                successful: true
            }
        );
        assert!(read_part(&self.disk.dev, "USR-A", 4 * MIB as usize)
            .iter()
            .all(|b| *b == 0));
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn check_stages_the_update_from_nginx_into_slot_b() {
    assert!(is_root(), "privileged tests run as root");
    let h = Host::new();
    let ng = Nginx::start(h.dir.path(), &h.p("tree"), "");
    h.configure(&ng.url());
    let out = run_bounded(&mut h.cmd(&["check"]), 120);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed: {err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0.2.0 is staged"),
        "{out:?}"
    );
    h.assert_slot_b_holds_the_release();
    // Every chunk came with its own Range request.
    let chunks = &h.built.manifest.artifacts.usr.chunks;
    let offsets: Vec<u64> = chunks.iter().map(|c| c.offset).collect();
    assert_eq!(ng.ranges("usr.erofs.zst"), offsets);

    let out = run_bounded(&mut h.cmd(&["status"]), 10);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("STATE=staged\n"), "{text}");
    assert!(
        text.contains("CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT\n"),
        "{text}"
    );
    assert!(text.contains("NEW_VERSION=0.2.0\n"), "{text}");
    assert!(h.p("state/reboot-required").exists());
    let out = run_bounded(&mut h.cmd(&["status", "--json"]), 10);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["state"]["state"], "staged");

    // Checking again does not download again.
    let out = run_bounded(&mut h.cmd(&["check"]), 60);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(ng.ranges("usr.erofs.zst").len(), chunks.len());
}

#[test]
fn a_killed_transfer_resumes_at_the_first_missing_chunk() {
    assert!(is_root(), "privileged tests run as root");
    let h = Host::new();
    // 256 KiB/s: 40 chunks of (compressed) tens of KiB take several seconds.
    let ng = Nginx::start(h.dir.path(), &h.p("tree"), "limit_rate 256k;");
    h.configure(&ng.url());
    let mut child = Guard(
        h.cmd(&["check"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let t = Instant::now();
    loop {
        if h.progress_usr().is_some_and(|n| n >= 8) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no progress recorded"
        );
        assert!(
            child.0.try_wait().expect("wait").is_none(),
            "finished too early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.0.wait();
    let k = h.progress_usr().expect("progress kept");
    assert!(k >= 8 && k < 40, "killed halfway: {k} chunks recorded");
    // A killed transfer points nothing at the slot.
    assert_eq!(prio(&h.disk.dev, "USR-B").priority, 0);
    h.assert_slot_a_untouched();
    let before = ng.ranges("usr.erofs.zst").len();

    let out = run_bounded(&mut h.cmd(&["check"]), 180);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = ng.ranges("usr.erofs.zst");
    let chunks = &h.built.manifest.artifacts.usr.chunks;
    assert_eq!(
        after[before], chunks[k].offset,
        "the second run starts at chunk {k}"
    );
    assert_eq!(after.len() - before, chunks.len() - k);
    h.assert_slot_b_holds_the_release();
}

#[test]
fn a_corrupted_chunk_on_the_server_is_refused_before_it_is_written() {
    assert!(is_root(), "privileged tests run as root");
    let h = Host::new();
    let chunks = &h.built.manifest.artifacts.usr.chunks;
    let file = h.p("tree/stable/0.2.0/usr.erofs.zst");
    let mut data = std::fs::read(&file).expect("read");
    data[chunks[3].offset as usize + 20] ^= 0x55;
    std::fs::write(&file, &data).expect("corrupt");
    let ng = Nginx::start(h.dir.path(), &h.p("tree"), "");
    h.configure(&ng.url());
    let out = run_bounded(&mut h.cmd(&["check"]), 60);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused before writing: usr chunk 3: compressed SHA-256"),
        "{err}"
    );
    let cs = tree::CHUNK as usize;
    let written = read_part(&h.disk.dev, "USR-B", 5 * cs);
    assert_eq!(
        &written[..3 * cs],
        &h.built.usr[..3 * cs],
        "chunks 0-2 written"
    );
    assert!(
        written[3 * cs..].iter().all(|b| *b == 0),
        "chunk 3 never written"
    );
    assert_eq!(prio(&h.disk.dev, "USR-B").priority, 0);
    h.assert_slot_a_untouched();
    let out = run_bounded(&mut h.cmd(&["status"]), 10);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("STATE=error\n"), "{text}");
    assert!(
        text.contains("LAST_ERROR=refused before writing: usr chunk 3"),
        "{text}"
    );
}

#[test]
fn a_server_that_stalls_is_timed_out() {
    assert!(is_root(), "privileged tests run as root");
    let h = Host::new();
    // nginx serves the documents; every chunk request goes to a server that
    // sends half a body and then nothing (nginx proxies it, as a CDN in
    // front of a hung origin would).
    let stall = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stall_port = stall.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in stall.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let (start, end) = req
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .and_then(|r| {
                        let (a, b) = r.trim().split_once('-')?;
                        Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
                    })
                    .unwrap_or((0, 99_999));
                let len = end - start + 1;
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {len}\r\nContent-Range: bytes {start}-{end}/10000000\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&vec![0u8; (len / 2) as usize]);
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    let ng = Nginx::start(
        h.dir.path(),
        &h.p("tree"),
        &format!(
            "location ~ \\.zst$ {{ proxy_pass http://127.0.0.1:{stall_port}; proxy_buffering off; }}"
        ),
    );
    h.configure(&ng.url());
    let t = Instant::now();
    let out = run_bounded(&mut h.cmd(&["check"]), 60);
    let took = t.elapsed();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("usr.erofs.zst"), "{err}");
    assert!(
        err.to_lowercase().contains("timeout") || err.to_lowercase().contains("timed out"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(30),
        "took {took:?} with a 3 s read timeout"
    );
    assert_eq!(prio(&h.disk.dev, "USR-B").priority, 0);
    h.assert_slot_a_untouched();
}

#[test]
fn apply_from_a_directory_verifies_the_same_way() {
    assert!(is_root(), "privileged tests run as root");
    let h = Host::new();
    h.configure("http://127.0.0.1:9");
    let tree_dir = h.p("tree");
    // A mounted ESP as keel-image lays it out (slot A's entry only).
    let esp = h.p("esp");
    std::fs::create_dir_all(esp.join("loader/entries")).expect("esp");
    std::fs::write(
        esp.join("loader/entries/keel-usr-a.conf"),
        "title Keel\nlinux /keel/a/vmlinuz\noptions console=ttyS0 keel.usr=a keel.usrhash.a=aa11\n",
    )
    .expect("entry a");
    let out = run_bounded(
        &mut h.cmd(&[
            "--esp",
            esp.to_str().expect("utf-8"),
            "apply",
            tree_dir.to_str().expect("utf-8"),
        ]),
        120,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.assert_slot_b_holds_the_release();
    assert_eq!(
        std::fs::read(esp.join("keel/b/vmlinuz")).expect("kernel"),
        h.built.kernel
    );
    assert_eq!(
        std::fs::read(esp.join("keel/b/initramfs.img")).expect("initramfs"),
        h.built.initramfs
    );
    let entry =
        std::fs::read_to_string(esp.join("loader/entries/keel-usr-b+1.conf")).expect("entry b");
    let root = h.built.manifest.artifacts.usr_verity.root_hash.to_string();
    assert!(
        entry.contains(&format!("keel.usr=b keel.usrhash.b={root}")),
        "{entry}"
    );
    assert!(esp.join("loader/entries/keel-usr-a.conf").exists());

    // A tampered manifest from a stick is refused, and nothing changes.
    let h = Host::new();
    h.configure("http://127.0.0.1:9");
    let m = h.p("tree/stable/0.2.0/manifest.json");
    let text = std::fs::read_to_string(&m).expect("manifest");
    std::fs::write(&m, text.replacen("6.1.0-keel", "6.1.0-evil", 1)).expect("tamper");
    let out = run_bounded(
        &mut h.cmd(&["apply", h.p("tree").to_str().expect("utf-8")]),
        60,
    );
    assert!(!out.status.success());
    assert!(read_part(&h.disk.dev, "USR-B", 4096)
        .iter()
        .all(|b| *b == 0));
    assert_eq!(prio(&h.disk.dev, "USR-B").priority, 0);
}

/// A private dbus-daemon configured like Debian's system bus (default deny
/// for method calls and names) plus the policy file the image ships.
struct Bus {
    addr: String,
    _child: Guard,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let policy = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../overlay/share/dbus-1/system.d/org.keel.Update1.conf"
        );
        let sock = dir.join("bus");
        let conf = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
            sock = sock.display(),
        );
        std::fs::write(dir.join("bus.conf"), conf).expect("bus.conf");
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon)");
        let t = Instant::now();
        while !sock.exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "no bus socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bus {
            addr: format!("unix:path={}", sock.display()),
            _child: Guard(child),
        }
    }

    /// `dbus-send` to org.keel.Update1, as root or as nobody.
    fn send(&self, nobody: bool, method: &str) -> (bool, String) {
        let mut c = if nobody {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "dbus-send",
            ]);
            c
        } else {
            Command::new("dbus-send")
        };
        c.arg(format!("--bus={}", self.addr)).args([
            "--print-reply",
            "--dest=org.keel.Update1",
            "/org/keel/Update1",
            &format!("org.keel.Update1.{method}"),
        ]);
        let out = run_bounded(&mut c, 20);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// The daemon serves GetStatus to anyone and Check to root only, and a
/// Check over the bus stages the update with StatusChanged signals on the
/// way.
#[test]
fn daemon_serves_status_and_check_over_dbus() {
    assert!(is_root(), "privileged tests run as root");
    let h = Host::new();
    // The bus socket must be reachable for `nobody`.
    std::fs::set_permissions(
        h.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let ng = Nginx::start(h.dir.path(), &h.p("tree"), "");
    h.configure(&ng.url());
    let bus = Bus::start(h.dir.path());
    let monitor = Guard(
        // Line-buffered: the monitor is killed, not asked to flush.
        Command::new("stdbuf")
            .args(["-oL", "dbus-monitor"])
            .args(["--address", &bus.addr])
            .arg("type='signal',interface='org.keel.Update1'")
            .stdout(std::fs::File::create(h.p("monitor.log")).expect("monitor log"))
            .stderr(std::fs::File::create(h.p("monitor.err")).expect("monitor err"))
            .spawn()
            .expect("dbus-monitor"),
    );
    let _daemon = Guard(
        h.cmd(&["daemon", "--first-check", "3600"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.addr)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(h.p("daemon.log")).expect("log"))
            .spawn()
            .expect("daemon"),
    );
    let t = Instant::now();
    let status = loop {
        let (ok, out) = bus.send(true, "GetStatus");
        if ok && out.contains("current_version") {
            break out;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "GetStatus never answered: {out}\n{}",
            std::fs::read_to_string(h.p("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.contains(r#"\"current_version\":\"0.1.0\""#)
            || status.contains(r#""current_version":"0.1.0""#),
        "{status}"
    );
    let (ok, out) = bus.send(true, "Check");
    assert!(
        !ok && out.contains("AccessDenied"),
        "nobody may not Check: {out}"
    );
    let (ok, out) = bus.send(false, "Check");
    assert!(ok, "root may Check: {out}");
    let t = Instant::now();
    loop {
        let (_, out) = bus.send(true, "GetStatus");
        if out.contains(r#""state":"staged""#) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not staged: {out}\n{}",
            std::fs::read_to_string(h.p("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    h.assert_slot_b_holds_the_release();
    std::thread::sleep(Duration::from_millis(300));
    drop(monitor);
    let log = std::fs::read_to_string(h.p("monitor.log")).unwrap_or_default();
    assert!(
        log.contains("member=StatusChanged"),
        "{log}{}",
        std::fs::read_to_string(h.p("monitor.err")).unwrap_or_default()
    );
    assert!(log.contains(r#""state":"downloading""#), "{log}");
    assert!(log.contains(r#""state":"staged""#), "{log}");
}

/// Put the disk and host files in the state "the machine booted USR-B
/// holding 0.2.0 after staging it from 0.1.0", B on trial (not successful).
fn booted_into_b(h: &Host, b_successful: bool) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&h.disk.dev)
        .expect("open loop");
    let (mut g, _) = Gpt::read(&f, 512).expect("gpt");
    let n = g.by_name("USR-B").expect("b").number;
    let part = g.by_number_mut(n).expect("b");
    part.attributes = Prio {
        priority: 2,
        tries: 0,
        successful: b_successful,
    }
    .apply(part.attributes)
    .expect("attr");
    let mut f = f;
    g.write(&mut f).expect("write gpt");
    drop(f);
    std::fs::write(
        h.p("boot.json"),
        format!(r#"{{"version":1,"slot":"B","disk":"{}"}}"#, h.disk.dev),
    )
    .expect("boot.json");
    std::fs::write(h.p("os-release"), "NAME=Keel\nVERSION_ID=0.2.0\n").expect("os-release");
    std::fs::create_dir_all(h.p("state")).expect("state");
    std::fs::write(
        h.p("state/pending.json"),
        r#"{"version":"0.2.0","slot":"B","from_version":"0.1.0","at":1,"boot_id":"an-earlier-boot"}"#,
    )
    .expect("pending");
}

/// An updated slot not marked good within `[health] timeout` of boot is
/// rolled back by the agent (made unbootable, reason recorded, reboot); a
/// slot marked good completes the update. The test host has been up longer
/// than the 10 s timeout, so the first case expires at once.
#[test]
fn an_updated_slot_not_marked_good_in_time_is_rolled_back() {
    assert!(is_root(), "privileged tests run as root");
    let h = Host::new();
    h.configure("http://127.0.0.1:9");
    let d = h.p("root/etc/keel/update.d");
    std::fs::write(d.join("20-health.toml"), "[health]\ntimeout = \"10s\"\n").expect("health");
    booted_into_b(&h, false);
    let marker = h.p("rebooted");
    let reboot = format!("touch {}", marker.display());
    let daemon = Guard(
        h.cmd(&[
            "daemon",
            "--no-bus",
            "--first-check",
            "3600",
            "--reboot-command",
            &reboot,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(h.p("daemon.log")).expect("log"))
        .spawn()
        .expect("daemon"),
    );
    let t = Instant::now();
    while !marker.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no rollback reboot: {}",
            std::fs::read_to_string(h.p("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(daemon);
    // USR-B can no longer boot; USR-A (proven) is next.
    assert_eq!(prio(&h.disk.dev, "USR-B").priority, 0);
    h.assert_slot_a_untouched();
    let pending = std::fs::read_to_string(h.p("state/pending.json")).expect("pending kept");
    assert!(
        pending.contains("was not marked good within 10 s of boot"),
        "{pending}"
    );

    // The next boot runs USR-A with 0.1.0: the version is blocked, and
    // status says why.
    std::fs::write(
        h.p("boot.json"),
        format!(r#"{{"version":1,"slot":"A","disk":"{}"}}"#, h.disk.dev),
    )
    .expect("boot.json");
    std::fs::write(h.p("os-release"), "NAME=Keel\nVERSION_ID=0.1.0\n").expect("os-release");
    let ng = Nginx::start(h.dir.path(), &h.p("tree"), "");
    h.configure(&ng.url());
    let out = run_bounded(&mut h.cmd(&["check"]), 60);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0.2.0 is blocked on this machine (0.2.0 was not marked good within 10 s"),
        "{err}"
    );
    assert!(ng.ranges("usr.erofs.zst").is_empty(), "nothing downloaded");
    let out = run_bounded(&mut h.cmd(&["status"]), 10);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BLOCKED_VERSIONS=0.2.0\n"), "{text}");

    // A slot that was marked good completes the update: no reboot, pending
    // cleared.
    let h = Host::new();
    h.configure("http://127.0.0.1:9");
    booted_into_b(&h, true);
    let marker = h.p("rebooted");
    let reboot = format!("touch {}", marker.display());
    let _daemon = Guard(
        h.cmd(&[
            "daemon",
            "--no-bus",
            "--first-check",
            "3600",
            "--reboot-command",
            &reboot,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon"),
    );
    let t = Instant::now();
    while h.p("state/pending.json").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "pending never cleared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "no reboot for a good slot");
    assert_eq!(prio(&h.disk.dev, "USR-B").priority, 2);
}

// ---------------------------------------------------------------------------
// Reboot coordination (issue 16): agents with a fake reboot action against a
// real etcd (Debian's etcd-server, started here on loopback with a temporary
// data directory) and against an in-test FleetLock server.

use keel_lock::etcd::{EtcdConfig, EtcdLock};

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One etcd member on 127.0.0.1 (free ports, its own data directory).
struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    fn start() -> Etcd {
        let mut e = Etcd {
            dir: tempfile::tempdir().expect("tmp"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        e.spawn();
        e
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("log");
        self.child = Some(
            Command::new("etcd")
                .arg("--name=keel-update-test")
                .arg(format!(
                    "--data-dir={}",
                    self.dir.path().join("data").display()
                ))
                .arg(format!("--listen-client-urls={}", self.endpoint()))
                .arg(format!("--advertise-client-urls={}", self.endpoint()))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster=keel-update-test={peer}"))
                .arg("--log-outputs=stderr")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("starting etcd (apt-get install etcd-server)"),
        );
        let cfg = self.config();
        wait_until("etcd", 30, || {
            EtcdLock::new(&cfg, "probe")
                .map(|l| l.read().is_ok())
                .unwrap_or(false)
        });
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint()],
            timeout: Duration::from_secs(3),
            ..EtcdConfig::default()
        }
    }

    fn client(&self) -> EtcdLock {
        EtcdLock::new(&self.config(), "test").expect("client")
    }

    fn holders(&self) -> Vec<String> {
        self.client()
            .read()
            .expect("read")
            .value
            .map(|v| v.holders)
            .unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn this_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot_id")
        .trim()
        .to_string()
}

/// Set USR-B's attributes on a GPT image.
fn set_b(disk: &Path, p: Prio) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .expect("open disk");
    let (mut g, _) = Gpt::read(&f, 512).expect("gpt");
    let n = g.by_name("USR-B").expect("b").number;
    let part = g.by_number_mut(n).expect("b");
    part.attributes = p.apply(part.attributes).expect("attr");
    let mut f = f;
    g.write(&mut f).expect("write gpt");
}

/// A host of a fleet on an image file: 0.2.0 staged in USR-B in this boot
/// (as `check` leaves it), a fake reboot action that appends to a shared
/// log, its own machine id, a fake utmp.
struct FleetHost {
    dir: tempfile::TempDir,
    id: String,
    disk: PathBuf,
    daemon: Option<Guard>,
    rebooted: bool,
}

impl FleetHost {
    fn new(n: usize, public_key: &str, reboot_toml: &str, events: &Path) -> FleetHost {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        let id = format!("{:032x}", 0x5eed_0000_u64 + n as u64);
        std::fs::write(d.join("machine-id"), format!("{id}\n")).expect("machine-id");
        std::fs::create_dir_all(d.join("keys")).expect("keys");
        std::fs::write(d.join("keys/test.pub"), public_key).expect("pub");
        std::fs::write(d.join("os-release"), "NAME=Keel\nVERSION_ID=0.1.0\n").expect("os");
        let disk = gpt_image(d);
        set_b(
            &disk,
            Prio {
                priority: 2,
                tries: 1,
                successful: false,
            },
        );
        std::fs::write(
            d.join("boot.json"),
            format!(r#"{{"version":1,"slot":"A","disk":"{}"}}"#, disk.display()),
        )
        .expect("boot.json");
        std::fs::create_dir_all(d.join("state")).expect("state");
        std::fs::write(
            d.join("state/pending.json"),
            format!(
                r#"{{"version":"0.2.0","slot":"B","from_version":"0.1.0","at":1,"boot_id":"{}"}}"#,
                this_boot_id()
            ),
        )
        .expect("pending");
        let conf = d.join("root/etc/keel/update.d");
        std::fs::create_dir_all(&conf).expect("conf");
        std::fs::write(
            conf.join("10-test.toml"),
            format!(
                "base_url = \"http://127.0.0.1:9\"\n[health]\ntimeout = \"3650d\"\n{reboot_toml}"
            ),
        )
        .expect("config");
        std::fs::write(
            d.join("reboot.sh"),
            format!(
                "echo \"reboot {id} $(date +%s.%N)\" >> {ev}\ntouch {m}\n",
                ev = events.display(),
                m = d.join("rebooted").display()
            ),
        )
        .expect("reboot.sh");
        std::fs::write(
            d.join("wall.sh"),
            format!(
                "echo \"wall $(date +%s.%N) $*\" >> {}\n",
                d.join("wall.log").display()
            ),
        )
        .expect("wall.sh");
        std::fs::write(d.join("utmp"), b"").expect("utmp");
        FleetHost {
            dir,
            id,
            disk,
            daemon: None,
            rebooted: false,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--disk")
            .arg(&self.disk)
            .arg("--boot-record")
            .arg(self.p("boot.json"))
            .arg("--os-release")
            .arg(self.p("os-release"))
            .arg("--keys")
            .arg(self.p("keys"))
            .arg("--state-dir")
            .arg(self.p("state"))
            .arg("--config-root")
            .arg(self.p("root"))
            .arg("--machine-id")
            .arg(self.p("machine-id"))
            .arg("--utmp")
            .arg(self.p("utmp"))
            .args(["--no-esp", "--no-bus", "--lock-retry-max", "1"])
            .arg("--reboot-command")
            .arg(format!("/bin/sh {}", self.p("reboot.sh").display()))
            .arg("--wall-command")
            .arg(format!("/bin/sh {}", self.p("wall.sh").display()))
            .args(args)
            .env("KEEL_LOG", "info");
        c
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.p("daemon.log"))
            .expect("log");
        self.daemon = Some(Guard(
            self.cmd(&["daemon", "--first-check", "3600"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("daemon"),
        ));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.p("daemon.log")).unwrap_or_default()
    }

    /// The fake reboot: stop the agent, then the next boot runs USR-B
    /// with 0.2.0, not yet marked good.
    fn reboot_into_b(&mut self) {
        self.daemon = None;
        let _ = std::fs::remove_file(self.p("rebooted"));
        set_b(
            &self.disk,
            Prio {
                priority: 2,
                tries: 0,
                successful: false,
            },
        );
        std::fs::write(
            self.p("boot.json"),
            format!(
                r#"{{"version":1,"slot":"B","disk":"{}"}}"#,
                self.disk.display()
            ),
        )
        .expect("boot.json");
        std::fs::write(self.p("os-release"), "NAME=Keel\nVERSION_ID=0.2.0\n").expect("os");
        let pending = std::fs::read_to_string(self.p("state/pending.json")).expect("pending");
        std::fs::write(
            self.p("state/pending.json"),
            pending.replace(&this_boot_id(), "an-earlier-boot"),
        )
        .expect("pending");
    }

    /// keel-mark-successful's part: the boot is good.
    fn mark_good(&self) {
        set_b(
            &self.disk,
            Prio {
                priority: 2,
                tries: 0,
                successful: true,
            },
        );
    }

    fn status(&self) -> String {
        let out = run_bounded(&mut self.cmd(&["status"]), 10);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A utmp record of `user` on `line` for the live process `pid`.
fn utmp_record(user: &str, line: &str, pid: i32) -> Vec<u8> {
    let mut r = vec![0u8; 384];
    r[0..2].copy_from_slice(&7i16.to_le_bytes());
    r[4..8].copy_from_slice(&pid.to_le_bytes());
    r[8..8 + line.len()].copy_from_slice(line.as_bytes());
    r[44..44 + user.len()].copy_from_slice(user.as_bytes());
    r
}

fn etcd_toml(e: &Etcd, grace: &str) -> String {
    format!(
        "[reboot]\nstrategy = \"etcd_lock\"\ngrace_period = \"{grace}\"\n[reboot.etcd_lock]\nendpoints = [\"{}\"]\n",
        e.endpoint()
    )
}

fn public_key() -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let key = SigningKey::generate().expect("key");
    tree::build(
        &dir.path().join("tree"),
        "stable",
        "0.2.0",
        4 * tree::CHUNK as usize,
        &key,
    )
    .public_key
}

/// Order of events on one host: lock → wall warning and grace period (a
/// user is logged in) → reboot; after the reboot the lock stays held while
/// the new slot is on trial and is released only once it is marked good.
/// A host that comes back on its old slot (a rollback) releases a lock it
/// holds once that boot is good.
#[test]
fn the_reboot_lock_is_released_only_after_a_good_boot() {
    assert!(is_root(), "privileged tests run as root");
    let e = Etcd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let events = dir.path().join("events");
    let key = public_key();
    let mut h = FleetHost::new(1, &key, &etcd_toml(&e, "2s"), &events);
    // Someone is logged in (this test process stands in for the session).
    std::fs::write(
        h.p("utmp"),
        utmp_record("core", "pts/7", std::process::id() as i32),
    )
    .expect("utmp");
    // Another host holds the only slot: no reboot until it is given back.
    let other = EtcdLock::new(&e.config(), "other").expect("client");
    other.lock_as("other").expect("lock");
    h.start();
    wait_until("the agent to wait for the lock", 30, || {
        h.status().contains("REBOOT_WAITING_FOR=lock\n")
    });
    let st = h.status();
    assert!(st.contains("REBOOT_STRATEGY=etcd_lock\n"), "{st}");
    assert!(st.contains("REBOOT_LOCK_HOLDERS=other\n"), "{st}");
    assert!(st.contains("LOGGED_IN_USERS=core@pts/7\n"), "{st}");
    assert!(
        st.contains("WHY_NO_UPDATE=0.2.0 is staged; waiting for the reboot lock"),
        "{st}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(!h.p("rebooted").exists(), "rebooted without the lock");
    other.unlock_as("other").expect("unlock");
    wait_until("the fake reboot", 30, || h.p("rebooted").exists());
    assert_eq!(e.holders(), [h.id.clone()]);
    let wall = std::fs::read_to_string(h.p("wall.log")).expect("wall was called");
    assert!(
        wall.contains("keel-update: this machine reboots into 0.2.0 in 2 s"),
        "{wall}"
    );
    let walled: f64 = wall
        .split_whitespace()
        .nth(1)
        .expect("t")
        .parse()
        .expect("t");
    let ev = std::fs::read_to_string(&events).expect("events");
    let rebooted: f64 = ev.split_whitespace().nth(2).expect("t").parse().expect("t");
    assert!(
        rebooted - walled >= 1.9,
        "grace period: {walled} → {rebooted}"
    );
    assert!(h.p("state/reboot-lock.json").exists());

    // The new boot: on trial, the lock stays held.
    h.reboot_into_b();
    h.start();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(e.holders(), [h.id.clone()], "{}", h.log());
    let st = h.status();
    assert!(st.contains("REBOOT_WAITING_FOR=good_boot\n"), "{st}");
    assert!(st.contains("REBOOT_LOCK_HELD=yes\n"), "{st}");
    assert!(st.contains("WHY_NO_UPDATE=0.2.0 is on trial"), "{st}");
    // Marked good: released.
    h.mark_good();
    wait_until("the release after the good boot", 30, || {
        e.holders().is_empty()
    });
    assert!(!h.p("state/reboot-lock.json").exists());
    assert!(!h.p("rebooted").exists(), "no second reboot");
    h.daemon = None;

    // A rollback boot: the host comes back on USR-A holding the lock; it
    // gives it back (USR-A is proven) and blocks the version.
    let mut r = FleetHost::new(2, &key, &etcd_toml(&e, "0"), &events);
    e.client().lock_as(&r.id).expect("lock");
    std::fs::write(
        r.p("state/pending.json"),
        r#"{"version":"0.2.0","slot":"B","from_version":"0.1.0","at":1,"boot_id":"an-earlier-boot"}"#,
    )
    .expect("pending");
    r.start();
    wait_until("the release after the rollback boot", 30, || {
        e.holders().is_empty()
    });
    let st = r.status();
    assert!(st.contains("BLOCKED_VERSIONS=0.2.0\n"), "{st}");
    assert!(!r.p("rebooted").exists());
}

/// Runs `n` agents against a semaphore of `max`, each rebooting (fakely),
/// coming back on USR-B and being marked good after `boot_ms`; a monitor
/// checks the holders never exceed max. With `outage`, etcd is killed
/// after the first reboot and restarted 3 s later. Returns the reboot order.
fn fleet(e: &mut Etcd, max: i64, n: usize, boot_ms: u64, outage: bool) -> Vec<String> {
    e.client().set_max(max).expect("set-max");
    let dir = tempfile::tempdir().expect("tmp");
    let events = dir.path().join("events");
    std::fs::write(&events, "").expect("events");
    let key = public_key();
    let mut hosts: Vec<FleetHost> = (0..n)
        .map(|i| FleetHost::new(100 * max as usize + i, &key, &etcd_toml(e, "0"), &events))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let monitor = {
        let (stop, most, cfg) = (stop.clone(), most.clone(), e.config());
        std::thread::spawn(move || {
            let l = EtcdLock::new(&cfg, "monitor").expect("client");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(Some(v)) = l.read().map(|r| r.value) {
                    assert!(
                        v.holders.len() as i64 <= v.max,
                        "more holders than max: {v:?}"
                    );
                    most.fetch_max(v.holders.len(), std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for h in &mut hosts {
        h.start();
    }
    let t = Instant::now();
    let mut back: Vec<(usize, Instant)> = Vec::new();
    let mut done = 0;
    let mut outage_at: Option<Instant> = None;
    while done < n {
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "the rollout did not finish: {done} of {n} hosts rebooted\n{}",
            hosts
                .iter()
                .map(|h| h.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        for (i, h) in hosts.iter_mut().enumerate() {
            if !h.rebooted && h.p("rebooted").exists() {
                h.rebooted = true;
                h.reboot_into_b();
                h.start();
                back.push((i, Instant::now()));
                if outage && outage_at.is_none() {
                    e.kill();
                    outage_at = Some(Instant::now());
                }
            }
        }
        if outage_at.is_some_and(|o| o.elapsed() > Duration::from_secs(3)) && e.child.is_none() {
            e.spawn();
        }
        back.retain(|(i, at)| {
            if at.elapsed() >= Duration::from_millis(boot_ms) {
                hosts[*i].mark_good();
                done += 1;
                false
            } else {
                true
            }
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    if e.child.is_none() {
        e.spawn();
    }
    wait_until("every lock released", 60, || e.holders().is_empty());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    monitor
        .join()
        .expect("the monitor saw more holders than max");
    let seen = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(seen as i64 <= max && seen >= 1, "most holders seen: {seen}");
    eprintln!(
        "fleet of {n}, max {max}: rollout {:.1} s, at most {seen} holders",
        t.elapsed().as_secs_f64()
    );
    std::fs::read_to_string(&events)
        .expect("events")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// N agent processes contend for a semaphore of max 1, then of max 2:
/// never more holders than max, every agent reboots exactly once, each
/// lock given back only after its host's (faked) good boot.
#[test]
fn a_fleet_of_agents_never_exceeds_the_semaphore() {
    assert!(is_root(), "privileged tests run as root");
    let mut e = Etcd::start();
    for max in [1, 2] {
        let order = fleet(&mut e, max, 4, 1500, false);
        assert_eq!(order.len(), 4, "{order:?}");
        let mut uniq = order.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 4, "each host reboots once: {order:?}");
    }
}

/// etcd killed after the first reboot and restarted 3 s later: the agents
/// waiting for the lock (and the one giving it back) retry and finish.
#[test]
fn agents_recover_from_an_etcd_restart() {
    assert!(is_root(), "privileged tests run as root");
    let mut e = Etcd::start();
    let order = fleet(&mut e, 1, 3, 1000, true);
    assert_eq!(order.len(), 3, "{order:?}");
}

/// A FleetLock server in the test that records every request and refuses
/// the first pre-reboot (its semaphore is full).
struct FleetServer {
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FleetServer {
    fn start() -> FleetServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let rec = requests.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                // Read the head, then Content-Length bytes of body.
                let (head, body) = loop {
                    let n = c.read(&mut tmp).unwrap_or(0);
                    if n == 0 {
                        break (String::new(), String::new());
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let head = text[..i].to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        while buf.len() < i + 4 + len {
                            let n = c.read(&mut tmp).unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&tmp[..n]);
                        }
                        let body = String::from_utf8_lossy(&buf[i + 4..]).into_owned();
                        break (head, body);
                    }
                };
                let mut r = rec.lock().expect("lock");
                let first = head.lines().next().unwrap_or("").to_string();
                let pre_reboots = r.iter().filter(|x| x.contains("pre-reboot")).count();
                let refuse = first.contains("/v1/pre-reboot") && pre_reboots == 0;
                r.push(format!("{first}\n{head}\n\n{body}"));
                drop(r);
                let (status, body) = if refuse {
                    (
                        "409 Conflict",
                        r#"{"kind":"failed_lock","value":"semaphore full"}"#,
                    )
                } else {
                    ("200 OK", "")
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FleetServer { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

/// FleetLock conformance of the agent: `POST <base>/v1/pre-reboot` with
/// `fleet-lock-protocol: true` and `{"client_params":{"id","group"}}`
/// before the reboot (a refusal is retried, never rebooted through), and
/// `/v1/steady-state` only once the new boot is good.
#[test]
fn fleet_lock_requests_follow_the_protocol() {
    assert!(is_root(), "privileged tests run as root");
    let srv = FleetServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let events = dir.path().join("events");
    let toml = format!(
        "[reboot]\nstrategy = \"fleet_lock\"\ngrace_period = 0\n[reboot.fleet_lock]\nbase_url = \"{}/\"\ngroup = \"workers\"\n",
        srv.url
    );
    let mut h = FleetHost::new(7, &public_key(), &toml, &events);
    h.start();
    wait_until("the fake reboot", 30, || h.p("rebooted").exists());
    let reqs = srv.requests();
    assert_eq!(
        reqs.len(),
        2,
        "one refused pre-reboot, one granted: {reqs:#?}"
    );
    for r in &reqs {
        assert!(r.starts_with("POST /v1/pre-reboot HTTP/1.1\n"), "{r}");
        let lower = r.to_ascii_lowercase();
        assert!(lower.contains("\nfleet-lock-protocol: true"), "{r}");
        let body = r.split("\n\n").last().expect("body");
        let v: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(
            v,
            serde_json::json!({"client_params": {"id": h.id, "group": "workers"}})
        );
    }
    h.reboot_into_b();
    h.start();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        srv.requests().len(),
        2,
        "no steady-state before the boot is good"
    );
    h.mark_good();
    wait_until("steady-state", 30, || srv.requests().len() >= 3);
    let reqs = srv.requests();
    assert!(
        reqs[2].starts_with("POST /v1/steady-state HTTP/1.1\n"),
        "{}",
        reqs[2]
    );
    assert!(
        reqs[2].contains(&format!("\"id\":\"{}\"", h.id)),
        "{}",
        reqs[2]
    );
}

/// The fleet simulation of the benchmark report (ignored by default):
/// `KEEL_FLEET_N` agents (default 20), `KEEL_FLEET_MAX` slots (default 5),
/// 2 s from each fake reboot to its good boot; prints the rollout time
/// against the ideal N/max × 2 s.
#[test]
#[ignore]
fn fleet_simulation() {
    assert!(is_root(), "privileged tests run as root");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, max) = (env("KEEL_FLEET_N", 20), env("KEEL_FLEET_MAX", 5));
    let mut e = Etcd::start();
    let t = Instant::now();
    let order = fleet(&mut e, max as i64, n, 2000, false);
    let took = t.elapsed().as_secs_f64();
    let ideal = (n as f64 / max as f64).ceil() * 2.0;
    eprintln!(
        "fleet simulation: {n} agents, max {max}: {took:.1} s against the ideal {ideal:.1} s ({:.2}x)",
        took / ideal
    );
    assert_eq!(order.len(), n);
}

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

fn loop_disk(dir: &Path) -> Loop {
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

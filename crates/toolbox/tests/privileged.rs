//! Privileged tests for toolbox (root; `./run test privileged`).
//!
//! Each test builds its own small multi-layer image from busybox-static (an
//! OCI layout written here), pushes it with skopeo to Debian's
//! `docker-registry` started by the test on 127.0.0.1 (random free port, own
//! config and storage in a temp dir), and drives the real `toolbox` binary
//! with `HOME` pointing at a temp dir whose `.toolboxrc` selects the image
//! and a temp `TOOLBOX_DIRECTORY`. Every child process is killed and every
//! temp dir removed on drop, also when an assertion fails; every wait is
//! bounded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

const TOOLBOX: &str = env!("CARGO_BIN_EXE_toolbox");
const BUSYBOX: &str = "/bin/busybox";

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// A child killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run with a deadline; kill on timeout and fail.
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

/// Debian's docker-registry on 127.0.0.1.
struct Registry {
    port: u16,
    child: Option<Guard>,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, None)
    }

    /// With `auth`, the registry asks for Basic credentials checked against
    /// an htpasswd file made here by Apache's `htpasswd -B` (bcrypt, the
    /// only hash docker-registry accepts; package apache2-utils).
    fn start_with(dir: &Path, auth: Option<(&str, &str)>) -> Registry {
        let port = free_port();
        let storage = dir.join("registry-storage");
        std::fs::create_dir_all(&storage).unwrap();
        let cfg = dir.join("registry.yml");
        let mut auth_cfg = String::new();
        if let Some((user, password)) = auth {
            let out = run_bounded(Command::new("htpasswd").args(["-nbB", user, password]), 60);
            assert!(
                out.status.success(),
                "htpasswd (apt-get install apache2-utils)"
            );
            let path = dir.join("htpasswd");
            std::fs::write(&path, &out.stdout).unwrap();
            auth_cfg = format!(
                "auth:\n  htpasswd:\n    realm: keel-test\n    path: {}\n",
                path.display()
            );
        }
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_cfg}",
                storage.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry (apt-get install docker-registry)");
        let r = Registry {
            port,
            child: Some(Guard(child)),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let want = if auth.is_some() {
                "HTTP/1.1 401"
            } else {
                "HTTP/1.1 200"
            };
            if http_get(port, "/v2/").is_some_and(|s| s.starts_with(want)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        self.child.take();
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// One tar entry of a test layer.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
    Owned(&'a str, &'a [u8], u32, u64, u64),
}

fn set_raw(h: &mut tar::Header, off: usize, s: &str) {
    let b = h.as_mut_bytes();
    b[off..off + 100].fill(0);
    b[off..off + s.len()].copy_from_slice(s.as_bytes());
}

/// A tar with raw names (so hostile `..` and absolute names can be written).
fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let (path, data): (&str, &[u8]) = match e {
            E::Dir(p, m) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*m);
                (p, b"")
            }
            E::File(p, d, m) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                (p, d)
            }
            E::Sym(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                set_raw(&mut h, 157, t);
                (p, b"")
            }
            E::Hard(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o755);
                set_raw(&mut h, 157, t);
                (p, b"")
            }
            E::Owned(p, d, m, u, g) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_uid(*u);
                h.set_gid(*g);
                (p, d)
            }
            E::Char(p) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                (p, b"")
            }
        };
        set_raw(&mut h, 0, path);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

/// Write an OCI layout with the given layers (tar bytes, gzipped here).
/// Returns the manifest digest hex.
fn write_layout(dir: &Path, tars: &[Vec<u8>]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers = Vec::new();
    let mut diffs = Vec::new();
    for t in tars {
        let gz = gzip(t);
        let d = sha(&gz);
        std::fs::write(blobs.join(&d), &gz).unwrap();
        layers.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{d}","size":{}}}"#,
            gz.len()
        ));
        diffs.push(format!("\"sha256:{}\"", sha(t)));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin:/usr/bin"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diffs.join(",")
    );
    let cd = sha(config.as_bytes());
    std::fs::write(blobs.join(&cd), &config).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cd}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layers.join(",")
    );
    let md = sha(manifest.as_bytes());
    std::fs::write(blobs.join(&md), &manifest).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    md
}

/// The test image: busybox, files deleted and replaced across layers, an
/// opaque directory, symlinks, a hard link, a setuid file, owners; `big`
/// adds a layer of incompressible data for the interruption test.
fn test_layers(big: usize) -> Vec<Vec<u8>> {
    let bb = std::fs::read(BUSYBOX).expect("busybox-static installed");
    let l1 = tar_of(&[
        E::Dir("bin/", 0o755),
        E::File("bin/busybox", &bb, 0o755),
        E::Sym("bin/sh", "busybox"),
        E::Sym("bin/true", "busybox"),
        E::Sym("bin/cat", "busybox"),
        E::Sym("bin/sleep", "busybox"),
        E::Sym("bin/id", "busybox"),
        E::Sym("bin/grep", "busybox"),
        E::Dir("etc/", 0o755),
        E::File(
            "etc/os-release",
            b"NAME=toolbox-test\nID=toolbox-test\n",
            0o644,
        ),
        E::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\ntbuser:x:1000:1000::/tmp:/bin/sh\n",
            0o644,
        ),
        E::File("etc/group", b"root:x:0:\ntbuser:x:1000:\n", 0o644),
        E::File("etc/delete-me", b"old\n", 0o644),
        E::File("etc/replace-me", b"v1\n", 0o644),
        E::Dir("opt/", 0o755),
        E::Dir("opt/old/", 0o750),
        E::File("opt/old/a", b"a\n", 0o644),
        E::Dir("opt/old/sub/", 0o755),
        E::File("opt/old/sub/b", b"b\n", 0o644),
        E::Dir("root/", 0o700),
        E::Dir("tmp/", 0o1777),
    ]);
    let l2 = tar_of(&[
        E::Dir("etc/", 0o755),
        E::File("etc/.wh.delete-me", b"", 0o644),
        E::File("etc/replace-me", b"v2 replaced\n", 0o600),
        E::Dir("opt/old/", 0o755),
        E::File("opt/old/.wh..wh..opq", b"", 0o644),
        E::File("opt/old/c", b"c\n", 0o644),
        E::File("bin/su", b"#!/bin/sh\necho su\n", 0o4755),
        E::Dir("usr/", 0o755),
        E::Dir("usr/bin/", 0o755),
        E::Hard("usr/bin/busybox-link", "bin/busybox"),
        E::Sym("usr/bin/env", "/bin/busybox"),
        // nspawn --user= resolves names with the container's /usr/bin/getent.
        E::File(
            "usr/bin/getent",
            b"#!/bin/sh\ncase $1 in\npasswd|group) exec grep \"^$2:\" \"/etc/$1\" ;;\ninitgroups) echo \"$2\" ;;\nesac\n",
            0o755,
        ),
        E::Dir("home/", 0o755),
        E::Owned("home/data", b"owned by 1000:100\n", 0o640, 1000, 100),
        E::Owned("bin/sgid", b"sgid\n", 0o2755, 0, 50),
    ]);
    let mut layers = vec![l1, l2];
    if big > 0 {
        // Incompressible: a simple xorshift stream.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let data: Vec<u8> = (0..big)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        layers.push(tar_of(&[E::File("opt/big", &data, 0o644)]));
    }
    layers
}

struct Env {
    tmp: tempfile::TempDir,
    home: PathBuf,
    store: PathBuf,
}

impl Env {
    fn new() -> Env {
        assert!(
            rustix::process::geteuid().is_root(),
            "privileged tests need root"
        );
        let tmp = tempfile::Builder::new()
            .prefix("toolbox-priv-")
            .tempdir()
            .unwrap();
        let home = tmp.path().join("home");
        let store = tmp.path().join("store");
        std::fs::create_dir_all(&home).unwrap();
        Env { tmp, home, store }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn rc(&self, extra: &str) {
        std::fs::write(
            self.home.join(".toolboxrc"),
            format!(
                "TOOLBOX_DIRECTORY={}\nTOOLBOX_NAME=t\n{extra}",
                self.store.display()
            ),
        )
        .unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(TOOLBOX);
        c.args(args)
            .env("HOME", &self.home)
            .env_remove("SUDO_USER")
            .env_remove("JOURNAL_STREAM")
            // Auth files only under the test's temp dir: root's
            // /run/containers/0/auth.json is never read or written.
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("SUDO_UID")
            .env("XDG_RUNTIME_DIR", self.tmp.path().join("xdg-run"))
            .env("KEEL_LOG", "info");
        c
    }

    fn toolbox(&self, args: &[&str]) -> Output {
        run_bounded(&mut self.cmd(args), 120)
    }

    /// Build the test image as an OCI layout and push it to the registry.
    fn push(&self, reg: &Registry, layers: &[Vec<u8>]) -> PathBuf {
        let layout = self.path("layout");
        write_layout(&layout, layers);
        let out = run_bounded(
            Command::new("skopeo").args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                &format!("oci:{}:v1", layout.display()),
                &format!("docker://127.0.0.1:{}/keel/test:v1", reg.port),
            ]),
            120,
        );
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        layout
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "toolbox failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "toolbox unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Everything a user would compare in two trees: type, mode (incl. setuid),
/// owner, content, link target, and which paths share an inode.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let m = e.path().symlink_metadata().unwrap();
            let key = r.display().to_string();
            let common = format!(
                "mode={:o} uid={} gid={}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            );
            let desc = if m.is_dir() {
                stack.push(r.clone());
                format!("dir {common}")
            } else if m.file_type().is_symlink() {
                format!(
                    "symlink -> {}",
                    std::fs::read_link(e.path()).unwrap().display()
                )
            } else if m.is_file() {
                if m.nlink() > 1 {
                    inodes.entry(m.ino()).or_default().push(key.clone());
                }
                format!(
                    "file {common} sha256={}",
                    sha(&std::fs::read(e.path()).unwrap())
                )
            } else {
                format!("other {common}")
            };
            out.insert(key, desc);
        }
    }
    for (_, mut paths) in inodes {
        paths.sort();
        out.insert(format!("hardlinks {}", paths[0]), paths.join(" = "));
    }
    out
}

fn umoci_unpack(env: &Env, layout: &Path) -> PathBuf {
    let bundle = env.path("umoci-bundle");
    let out = run_bounded(
        Command::new("umoci").args([
            "unpack",
            "--image",
            &format!("{}:v1", layout.display()),
            &bundle.display().to_string(),
        ]),
        120,
    );
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}

#[test]
fn registry_pull_matches_umoci_unpack() {
    let env = Env::new();
    let reg = Registry::start(env.tmp.path());
    let layout = env.push(&reg, &test_layers(0));
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n",
        reg.port
    ));
    ok(&env.toolbox(&["pull"]));
    let ours = snapshot(&env.store.join("t"));
    let theirs = snapshot(&umoci_unpack(&env, &layout));
    assert_eq!(ours, theirs);
    // The cases the image exercises, spelled out.
    assert!(!ours.contains_key("etc/delete-me"));
    assert!(ours["etc/replace-me"].starts_with("file mode=600"));
    assert!(
        !ours.contains_key("opt/old/a")
            && !ours.contains_key("opt/old/sub")
            && ours.contains_key("opt/old/c")
    );
    assert!(ours["bin/su"].starts_with("file mode=4755"));
    assert_eq!(
        ours["hardlinks bin/busybox"],
        "bin/busybox = usr/bin/busybox-link"
    );
    assert_eq!(ours["usr/bin/env"], "symlink -> /bin/busybox");
    assert!(ours["home/data"].starts_with("file mode=640 uid=1000 gid=100"));
    assert!(ours["bin/sgid"].starts_with("file mode=2755 uid=0 gid=50"));
    // list shows it with the digest that was pulled.
    let list = ok(&env.toolbox(&["list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("t ") && l.contains("idle") && l.contains("keel/test")),
        "{list}"
    );
    // The download cache is emptied after a successful pull.
    assert_eq!(
        std::fs::read_dir(env.store.join(".cache/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn cat_host_os_release_and_exit_status() {
    let env = Env::new();
    let reg = Registry::start(env.tmp.path());
    env.push(&reg, &test_layers(0));
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n",
        reg.port
    ));
    // No pull first: running pulls the missing image.
    let out = ok(&env.toolbox(&["cat", "/media/root/etc/os-release"]));
    assert_eq!(out, std::fs::read_to_string("/etc/os-release").unwrap());
    // The container's own os-release is the image's.
    assert_eq!(
        ok(&env.toolbox(&["cat", "/etc/os-release"])),
        "NAME=toolbox-test\nID=toolbox-test\n"
    );
    // Exit status passes through; -c works like a login shell's.
    let out = env.toolbox(&["sh", "-c", "exit 7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(&env.toolbox(&["-c", "echo hi; id -u"])), "hi\n0\n");
    // No argument: a shell, here reading its commands from a pipe.
    let mut child = Guard(
        env.cmd(&[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    child
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(b"cat /etc/os-release\nexit 3\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "shell session did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(
        (status.code(), stdout.as_str()),
        (Some(3), "NAME=toolbox-test\nID=toolbox-test\n")
    );
}

#[test]
fn two_concurrent_sessions_and_rm_refused_while_in_use() {
    let env = Env::new();
    let reg = Registry::start(env.tmp.path());
    env.push(&reg, &test_layers(0));
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n",
        reg.port
    ));
    ok(&env.toolbox(&["pull"]));
    let spawn = || {
        Guard(
            env.cmd(&["sh", "-c", "sleep 3; true"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let started = Instant::now();
    let mut a = spawn();
    let mut b = spawn();
    std::thread::sleep(Duration::from_millis(1000));
    // Both are running now: rm must refuse, list must say "in use".
    let rm = env.toolbox(&["rm"]);
    assert!(failed(&rm).contains("toolbox t is in use by a running session; exit it first"));
    assert!(ok(&env.toolbox(&["list"])).contains("in use"));
    let pull = env.toolbox(&["pull"]);
    assert!(failed(&pull).contains("toolbox t is in use by a running session; exit it first"));
    let wait = |g: &mut Guard| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = g.0.try_wait().unwrap() {
                let mut err = String::new();
                g.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                return (s, err);
            }
            assert!(Instant::now() < deadline, "session did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (sa, ea) = wait(&mut a);
    let (sb, eb) = wait(&mut b);
    assert!(sa.success(), "first session: {ea}");
    assert!(sb.success(), "second session: {eb}");
    // They overlapped: two 3 s sessions finished in well under 6 s.
    assert!(
        started.elapsed() < Duration::from_millis(5900),
        "sessions ran one after the other"
    );
    ok(&env.toolbox(&["rm"]));
    assert!(!env.store.join("t").exists());
}

/// A TCP proxy that slows the registry's answers down, so a pull can be
/// interrupted halfway through a layer.
fn slow_proxy(upstream: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            let Ok(u) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c2, mut u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
            let (mut c, mut u) = (c, u);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut u2);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = u.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = c.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, stop)
}

#[test]
fn interrupted_pull_then_rerun_succeeds() {
    let env = Env::new();
    let reg = Registry::start(env.tmp.path());
    let layout = env.push(&reg, &test_layers(8 << 20));
    let (proxy, stop) = slow_proxy(reg.port);
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{proxy}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n"
    ));
    let mut pull = Guard(
        env.cmd(&["pull"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until the big layer is partly downloaded, then kill the pull.
    let blobs = env.store.join(".cache/blobs/sha256");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(&blobs).ok().and_then(|rd| {
            rd.flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        });
        if partial.is_some_and(|n| n > 1 << 20) {
            break;
        }
        assert!(
            pull.0.try_wait().unwrap().is_none(),
            "pull finished before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "pull made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    pull.0.kill().unwrap();
    pull.0.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // No tree that looks complete.
    assert!(!env.store.join("t").exists());
    assert!(!ok(&env.toolbox(&["list"]))
        .lines()
        .any(|l| l.starts_with("t ")));
    // Rerun (straight to the registry this time, same toolbox name).
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n",
        reg.port
    ));
    let rerun = env.toolbox(&["pull"]);
    ok(&rerun);
    let err = String::from_utf8_lossy(&rerun.stderr);
    assert!(err.contains("resuming the download of sha256:"), "{err}");
    assert_eq!(
        snapshot(&env.store.join("t")),
        snapshot(&umoci_unpack(&env, &layout))
    );
    // Leftovers of the interrupted run are gone.
    let hidden: Vec<String> = std::fs::read_dir(&env.store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".pull-"))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
}

#[test]
fn oci_archive_works_with_registry_stopped() {
    let env = Env::new();
    let mut reg = Registry::start(env.tmp.path());
    let layout = env.push(&reg, &test_layers(0));
    let archive = env.path("toolbox.oci.tar");
    let out = run_bounded(
        Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            "--quiet",
            &format!("oci:{}:v1", layout.display()),
            &format!("oci-archive:{}:v1", archive.display()),
        ]),
        120,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = reg.port;
    reg.stop();
    // Configured registry unreachable, local archive configured: used, and said so.
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{port}/keel/test\nTOOLBOX_DOCKER_TAG=v1\nTOOLBOX_LOCAL_IMAGE=oci-archive:{}\n",
        archive.display()
    ));
    let out = env.toolbox(&["pull"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("registry unreachable")
            && err.contains(&format!(
                "using the local image oci-archive:{}",
                archive.display()
            )),
        "{err}"
    );
    assert_eq!(
        snapshot(&env.store.join("t")),
        snapshot(&umoci_unpack(&env, &layout))
    );
    assert_eq!(
        ok(&env.toolbox(&["cat", "/etc/os-release"])),
        "NAME=toolbox-test\nID=toolbox-test\n"
    );
    ok(&env.toolbox(&["rm"]));
    // And directly as the image, with --image.
    env.rc("");
    ok(&env.toolbox(&[
        "--image",
        &format!("oci-archive:{}", archive.display()),
        "--tag",
        "v1",
        "pull",
    ]));
    assert!(env.store.join("t/bin/busybox").exists());
    // Without a local fallback, the unreachable registry is a clear error.
    ok(&env.toolbox(&["rm"]));
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{port}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n"
    ));
    let err = failed(&env.toolbox(&["pull"]));
    assert!(
        err.contains(&format!(
            "http://127.0.0.1:{port}/v2/keel/test/manifests/v1: registry unreachable"
        )),
        "{err}"
    );
}

#[test]
fn docker_archive_source() {
    let env = Env::new();
    let layout = env.path("layout");
    write_layout(&layout, &test_layers(0));
    let archive = env.path("toolbox.docker.tar");
    let out = run_bounded(
        Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            "--quiet",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker-archive:{}:keel/test:v1", archive.display()),
        ]),
        120,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=docker-archive:{}\nTOOLBOX_DOCKER_TAG=v1\n",
        archive.display()
    ));
    ok(&env.toolbox(&["pull"]));
    assert_eq!(
        snapshot(&env.store.join("t")),
        snapshot(&umoci_unpack(&env, &layout))
    );
}

/// Security cases: a hostile image as an OCI layout; the pull is refused
/// with this message and nothing appears outside the toolbox directory.
fn hostile(layers: Vec<Vec<u8>>, want: &str) {
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    let layout = env.path("layout");
    write_layout(&layout, &layers);
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=oci:{}\nTOOLBOX_DOCKER_TAG=v1\n",
        layout.display()
    ));
    let before = snapshot(env.tmp.path());
    let err = failed(&env.toolbox(&["pull"]));
    assert!(err.contains(want), "expected {want:?} in:\n{err}");
    assert!(!env.store.join("t").exists());
    // Nothing changed outside the store (and no temp tree left inside it).
    let mut after = snapshot(env.tmp.path());
    after.retain(|k, _| !k.starts_with("store"));
    let mut before = before;
    before.retain(|k, _| !k.starts_with("store"));
    assert_eq!(before, after);
    assert!(!Path::new("/tmp/toolbox-evil").exists());
    let left: Vec<_> = std::fs::read_dir(&env.store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("pull-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn security_dotdot_path() {
    hostile(
        vec![tar_of(&[E::File("../../../outside/evil", b"x", 0o644)])],
        "entry \"../../../outside/evil\" at offset 0: path contains '..'; refused",
    );
}

#[test]
fn security_absolute_path() {
    hostile(
        vec![tar_of(&[E::File("/tmp/toolbox-evil", b"x", 0o644)])],
        "entry \"/tmp/toolbox-evil\" at offset 0: absolute path; refused",
    );
}

#[test]
fn security_write_through_symlink_outside() {
    let env_outside = "/tmp";
    hostile(
        vec![
            tar_of(&[E::Sym("escape", env_outside)]),
            tar_of(&[E::File("escape/toolbox-evil", b"x", 0o644)]),
        ],
        "entry \"escape/toolbox-evil\" at offset 0: path leads outside the root through a symlink; refused",
    );
    hostile(
        vec![tar_of(&[E::Sym("up", "../../.."), E::File("up/outside/evil", b"x", 0o644)])],
        "entry \"up/outside/evil\" at offset 512: path leads outside the root through a symlink; refused",
    );
}

#[test]
fn security_hard_link_outside() {
    hostile(
        vec![tar_of(&[E::Hard("stolen", "../../../outside/secret")])],
        "entry \"stolen\" at offset 0: hard link to \"../../../outside/secret\" outside the root; refused",
    );
    hostile(
        vec![tar_of(&[E::Hard("stolen", "/etc/shadow")])],
        "entry \"stolen\" at offset 0: hard link to absolute path \"/etc/shadow\"; refused",
    );
}

#[test]
fn security_device_node() {
    hostile(
        vec![tar_of(&[E::Dir("dev/", 0o755), E::Char("dev/mem")])],
        "entry \"dev/mem\" at offset 512: character device node; refused",
    );
}

#[test]
fn security_manifest_digest_mismatch() {
    let env = Env::new();
    let layout = env.path("layout");
    let md = write_layout(&layout, &test_layers(0));
    // Tamper with the manifest after its digest was recorded in index.json
    // (same length, so the digest check itself must catch it).
    let p = layout.join("blobs/sha256").join(&md);
    let m = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"schemaVersion\":2", "\"schemaVersion\":3");
    std::fs::write(&p, m).unwrap();
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=oci:{}\nTOOLBOX_DOCKER_TAG=v1\n",
        layout.display()
    ));
    let err = failed(&env.toolbox(&["pull"]));
    assert!(
        err.contains(&format!(
            "manifest sha256:{}: digest mismatch: expected sha256:{md}",
            &md[..12]
        )),
        "{err}"
    );
    assert!(!env.store.join("t").exists());
}

/// A fake registry answering every request with `answer`.
fn garbage_server(answer: &'static [u8]) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(answer);
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    });
    (port, stop)
}

#[test]
fn security_registry_answering_garbage() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n<html>oops!",
            "/keel/test@sha256:",
        ),
        (b"\x00\x01garbage that is not HTTP\r\n\r\n", "/v2/keel/test/manifests/v1: "),
        (
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "authentication: unsupported challenge scheme \"negotiate\" (Basic and Bearer are)",
        ),
    ];
    for (answer, want) in cases {
        let env = Env::new();
        let (port, stop) = garbage_server(answer);
        env.rc(&format!(
            "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{port}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n"
        ));
        let err = failed(&env.toolbox(&["pull"]));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(err.contains(want), "expected {want:?} in:\n{err}");
        if want.starts_with("/keel") {
            assert!(
                err.contains("not a valid manifest: expected value at line 1 column 1"),
                "{err}"
            );
        }
        assert!(!env.store.join("t").exists());
    }
}

/// A registry front that demands a Bearer token (Docker Hub's flow): 401 with
/// a `WWW-Authenticate: Bearer realm=…` challenge, a token endpoint, and the
/// real registry behind it for requests carrying the token.
fn token_auth_front(upstream: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let tokens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tokens2 = tokens.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            let tokens = tokens2.clone();
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let authorized = head
                    .lines()
                    .any(|l| l.eq_ignore_ascii_case("authorization: bearer sekrit"));
                if path.starts_with("/token?") {
                    let body = if path.contains("scope=repository%3Akeel%2Ftest%3Apull")
                        && path.contains("service=test-registry")
                    {
                        tokens.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        r#"{"token":"sekrit"}"#
                    } else {
                        r#"{"token":"wrong-scope"}"#
                    };
                    let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                } else if !authorized {
                    let _ = write!(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test-registry\",scope=\"repository:keel/test:pull\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                } else {
                    let Ok(mut u) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    let fwd: String = head
                        .lines()
                        .filter(|l| {
                            !l.is_empty()
                                && !l.to_ascii_lowercase().starts_with("authorization:")
                                && !l.to_ascii_lowercase().starts_with("connection:")
                        })
                        .map(|l| format!("{l}\r\n"))
                        .collect();
                    let _ = write!(u, "{fwd}Connection: close\r\n\r\n");
                    let _ = std::io::copy(&mut u, &mut c);
                }
                let _ = c.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, tokens)
}

#[test]
fn registry_with_bearer_token_auth() {
    let env = Env::new();
    let reg = Registry::start(env.tmp.path());
    let layout = env.push(&reg, &test_layers(0));
    let (front, tokens) = token_auth_front(reg.port);
    // The front refuses anonymous requests.
    assert!(http_get(front, "/v2/keel/test/manifests/v1")
        .unwrap()
        .starts_with("HTTP/1.1 401"));
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{front}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n"
    ));
    ok(&env.toolbox(&["pull"]));
    assert_eq!(
        tokens.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one token for the whole pull"
    );
    assert_eq!(
        snapshot(&env.store.join("t")),
        snapshot(&umoci_unpack(&env, &layout))
    );
}

/// Wrap the layout's manifest in an image index with an arm64 decoy first,
/// as multi-arch images on Docker Hub are.
fn make_multi_arch(layout: &Path, amd64_manifest: &str) {
    let blobs = layout.join("blobs/sha256");
    let m = std::fs::read(blobs.join(amd64_manifest)).unwrap();
    // The decoy: one layer only (no bin/su), config saying arm64.
    let manifest: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let first = manifest["layers"][0].clone();
    let diff0 = {
        let cfg = std::fs::read(
            blobs.join(
                manifest["config"]["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap();
        let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
        cfg["rootfs"]["diff_ids"][0].clone()
    };
    let cfg = serde_json::json!({"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[diff0]}}).to_string();
    let cd = sha(cfg.as_bytes());
    std::fs::write(blobs.join(&cd), &cfg).unwrap();
    let decoy = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cd}"), "size": cfg.len()},
        "layers": [first],
    })
    .to_string();
    let dd = sha(decoy.as_bytes());
    std::fs::write(blobs.join(&dd), &decoy).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{dd}"), "size": decoy.len(), "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{amd64_manifest}"), "size": m.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    })
    .to_string();
    let id = sha(index.as_bytes());
    std::fs::write(blobs.join(&id), &index).unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{id}"), "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}).to_string(),
    )
    .unwrap();
}

#[test]
fn multi_arch_index_picks_linux_amd64() {
    let env = Env::new();
    let reg = Registry::start(env.tmp.path());
    let layout = env.path("layout");
    let md = write_layout(&layout, &test_layers(0));
    make_multi_arch(&layout, &md);
    let out = run_bounded(
        Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            "--all",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://127.0.0.1:{}/keel/test:v1", reg.port),
        ]),
        120,
    );
    assert!(
        out.status.success(),
        "skopeo copy --all: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n",
        reg.port
    ));
    ok(&env.toolbox(&["pull"]));
    assert!(
        env.store.join("t/bin/su").exists(),
        "the arm64 decoy was unpacked"
    );
    let list = ok(&env.toolbox(&["list"]));
    assert!(list.contains(&format!("sha256:{}", &md[..12])), "{list}");
    // The local layout with the same nested index resolves the same way.
    ok(&env.toolbox(&["rm"]));
    ok(&env.toolbox(&["--image", &format!("oci:{}", layout.display()), "pull"]));
    assert!(env.store.join("t/bin/su").exists());
}

#[test]
fn pull_replaces_an_old_tree_atomically_with_progress_on_a_terminal() {
    let env = Env::new();
    let reg = Registry::start(env.tmp.path());
    env.push(&reg, &test_layers(0));
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=127.0.0.1:{}/keel/test\nTOOLBOX_DOCKER_TAG=v1\n",
        reg.port
    ));
    ok(&env.toolbox(&["pull"]));
    let old_digest = std::fs::read_to_string(env.store.join(".t.json")).unwrap();
    // A new version of the image under the same tag.
    let mut layers = test_layers(0);
    layers.push(tar_of(&[E::File("etc/version", b"2\n", 0o644)]));
    std::fs::remove_dir_all(env.path("layout")).unwrap();
    let layout = env.push(&reg, &layers);
    // Under a pseudo-terminal (script(1)), progress is shown.
    let typescript = env.path("typescript");
    let out = run_bounded(
        Command::new("script")
            .args([
                "-q",
                "-e",
                "-c",
                &format!("{TOOLBOX} pull"),
                &typescript.display().to_string(),
            ])
            .env("HOME", &env.home)
            .env_remove("SUDO_USER")
            .env_remove("JOURNAL_STREAM")
            // Auth files only under the test's temp dir: root's
            // /run/containers/0/auth.json is never read or written.
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("SUDO_UID")
            .env("XDG_RUNTIME_DIR", env.tmp.path().join("xdg-run")),
        120,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let shown = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(
        shown.contains("downloading layer 3/3") && shown.contains("unpacking layer 3/3"),
        "{shown}"
    );
    // The new tree replaced the old one; nothing of the old one is left.
    assert_eq!(
        std::fs::read_to_string(env.store.join("t/etc/version")).unwrap(),
        "2\n"
    );
    assert_eq!(
        snapshot(&env.store.join("t")),
        snapshot(&umoci_unpack(&env, &layout))
    );
    assert_ne!(
        std::fs::read_to_string(env.store.join(".t.json")).unwrap(),
        old_digest
    );
    let mut names: Vec<String> = std::fs::read_dir(&env.store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![".cache", ".t.json", ".t.lock", "t"]);
}

/// What the VM test does on a booted image, here on the build host: the
/// archive from `test-image.sh`, then a command reading the host's
/// `/usr/lib/os-release` through `/media/root`.
#[test]
fn test_image_script_archive_runs_host_os_release() {
    let env = Env::new();
    let archive = env.path("toolbox.tar");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/test-image.sh");
    let out = run_bounded(
        Command::new("bash").arg(script).arg(&archive).arg("test"),
        60,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=oci-archive:{}\nTOOLBOX_DOCKER_TAG=test\n",
        archive.display()
    ));
    let got = ok(&env.toolbox(&["cat", "/media/root/usr/lib/os-release"]));
    assert_eq!(got, std::fs::read_to_string("/usr/lib/os-release").unwrap());
}

/// The configured user, binds (quoted, with a space in the path) and
/// environment reach the container.
#[test]
fn config_user_binds_and_env_apply() {
    let env = Env::new();
    let layout = env.path("layout");
    write_layout(&layout, &test_layers(0));
    let shared = env.path("my data");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("file"), b"from the host\n").unwrap();
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=oci:{}\nTOOLBOX_DOCKER_TAG=v1\nTOOLBOX_USER=tbuser\n\
         TOOLBOX_BIND=\"--bind=/:/media/root --bind-ro='{}:/data'\"\n\
         TOOLBOX_ENV='--setenv=GREETING=\"hello world\" PLAIN=1'\n",
        layout.display(),
        shared.display()
    ));
    let out = ok(&env.toolbox(&["-c", "id -u; cat /data/file; echo \"$GREETING/$PLAIN\"; cat /media/root/etc/hostname >/dev/null && echo host"]));
    assert_eq!(out, "1000\nfrom the host\nhello world/1\nhost\n");
}

// --- private registries, credentials, zstd (issue 20) -------------------------

const REG_USER: &str = "keel";
const REG_PASSWORD: &str = "pw-Zq7-never-printed";

/// skopeo copy from the layout to the registry with extra arguments.
fn skopeo_push(layout: &Path, dest: &str, extra: &[&str]) {
    let src = format!("oci:{}:v1", layout.display());
    let mut args = vec![
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
    ];
    args.extend_from_slice(extra);
    args.push(&src);
    args.push(dest);
    let out = run_bounded(Command::new("skopeo").args(&args), 180);
    assert!(
        out.status.success(),
        "skopeo copy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A toolbox command logging at debug level (to show no secret is logged),
/// with `REGISTRY_AUTH_FILE` when `auth_file` is given.
fn auth_cmd(env: &Env, args: &[&str], auth_file: Option<&Path>) -> Command {
    let mut c = env.cmd(args);
    c.env("KEEL_LOG", "debug");
    if let Some(f) = auth_file {
        c.env("REGISTRY_AUTH_FILE", f);
    }
    c
}

fn no_secret(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains(REG_PASSWORD),
            "the password was printed: {text}"
        );
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn write_auth_file(path: &Path, key: &str, user: &str, password: &str, mode: u32) {
    std::fs::write(
        path,
        format!(
            r#"{{"auths":{{"{key}":{{"auth":"{}"}}}}}}"#,
            b64(&format!("{user}:{password}"))
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Nothing of a failed pull is left: no tree, no pull directory.
fn nothing_unpacked(env: &Env, name: &str) {
    assert!(!env.store.join(name).exists(), "tree {name} exists");
    if let Ok(rd) = std::fs::read_dir(&env.store) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(!n.contains(".pull-"), "left behind: {n}");
        }
    }
}

fn login(env: &Env, host: &str, password: &str) -> Output {
    let mut c = auth_cmd(
        env,
        &["login", "--username", REG_USER, "--password-stdin", host],
        None,
    );
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("toolbox login did not finish");
        }
    }
}

#[test]
fn private_registry_with_htpasswd_auth() {
    let env = Env::new();
    let reg = Registry::start_with(env.tmp.path(), Some((REG_USER, REG_PASSWORD)));
    let host = format!("127.0.0.1:{}", reg.port);
    let layout = env.path("layout");
    write_layout(&layout, &test_layers(0));
    skopeo_push(
        &layout,
        &format!("docker://{host}/keel/private:v1"),
        &["--dest-creds", &format!("{REG_USER}:{REG_PASSWORD}")],
    );
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE={host}/keel/private\nTOOLBOX_DOCKER_TAG=v1\n"
    ));
    let xdg_auth = env.path("xdg-run/containers/auth.json");

    // 1. No credentials: a 401 that names the registry and the files looked at.
    let out = run_bounded(&mut auth_cmd(&env, &["pull"], None), 120);
    let err = failed(&out);
    assert!(
        err.contains(&format!("{host}: HTTP 401 unauthorized: the registry needs credentials and none were found for {host}/keel/private in {}", xdg_auth.display())),
        "{err}"
    );
    assert!(
        err.contains(".docker/config.json") && err.contains(&format!("toolbox login {host}")),
        "{err}"
    );
    nothing_unpacked(&env, "t");

    // 2. A world-readable auth file is refused, without showing the secret.
    let file = env.path("auth.json");
    write_auth_file(&file, &host, REG_USER, REG_PASSWORD, 0o644);
    let out = run_bounded(&mut auth_cmd(&env, &["pull"], Some(&file)), 120);
    let err = failed(&out);
    no_secret(&out);
    assert!(
        err.contains(&format!(
            "{}: refusing an auth file other users can read (mode 0644)",
            file.display()
        )),
        "{err}"
    );
    nothing_unpacked(&env, "t");

    // 3. A wrong password: the registry's refusal, named, nothing unpacked.
    write_auth_file(&file, &host, REG_USER, "wrong-password", 0o600);
    let out = run_bounded(&mut auth_cmd(&env, &["pull"], Some(&file)), 120);
    let err = failed(&out);
    assert!(
        err.contains(&format!("{host}: HTTP 401 unauthorized: the registry refused the user {REG_USER} from {} (auths[\"{host}\"]): wrong user name or password", file.display())),
        "{err}"
    );
    assert!(!err.contains("wrong-password"), "{err}");
    nothing_unpacked(&env, "t");

    // 4. The right password in the file (namespace key): pulls.
    write_auth_file(
        &file,
        &format!("{host}/keel"),
        REG_USER,
        REG_PASSWORD,
        0o600,
    );
    let out = run_bounded(&mut auth_cmd(&env, &["pull"], Some(&file)), 120);
    ok(&out);
    no_secret(&out);
    let pulled = snapshot(&env.store.join("t"));
    assert_eq!(pulled, snapshot(&umoci_unpack(&env, &layout)));
    ok(&env.toolbox(&["rm"]));

    // 5. toolbox login: a wrong password saves nothing; the right one writes
    //    $XDG_RUNTIME_DIR/containers/auth.json 0600; then pull works.
    let out = login(&env, &host, "wrong-password");
    let err = failed(&out);
    assert!(err.contains(&format!("{host}: HTTP 401: the registry refused user {REG_USER} (wrong user name or password); nothing saved")), "{err}");
    assert!(!xdg_auth.exists());
    let out = login(&env, &host, REG_PASSWORD);
    ok(&out);
    no_secret(&out);
    let m = std::fs::metadata(&xdg_auth).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    let saved = std::fs::read_to_string(&xdg_auth).unwrap();
    assert!(
        saved.contains(&b64(&format!("{REG_USER}:{REG_PASSWORD}"))),
        "{saved}"
    );
    let out = run_bounded(&mut auth_cmd(&env, &["pull"], None), 120);
    ok(&out);
    no_secret(&out);
    assert_eq!(snapshot(&env.store.join("t")), pulled);

    // 6. toolbox config says where the credentials come from, not what they are.
    let out = run_bounded(&mut auth_cmd(&env, &["config"], None), 60);
    let text = ok(&out);
    no_secret(&out);
    assert!(
        text.lines().any(|l| l.starts_with("credentials")
            && l.contains(&host)
            && l.contains(&format!(
                "user {REG_USER} from {} (auths[\"{host}\"])",
                xdg_auth.display()
            ))),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}/.toolboxrc:3 (TOOLBOX_DOCKER_IMAGE)",
            env.home.display()
        )),
        "{text}"
    );

    // 7. logout removes the entry; the next pull is anonymous again and fails.
    ok(&run_bounded(
        &mut auth_cmd(&env, &["logout", &host], None),
        60,
    ));
    ok(&env.toolbox(&["rm"]));
    let err = failed(&run_bounded(&mut auth_cmd(&env, &["pull"], None), 120));
    assert!(err.contains("none were found"), "{err}");
    nothing_unpacked(&env, "t");
}

#[test]
fn zstd_image_unpacks_identical_to_gzip() {
    let env = Env::new();
    let reg = Registry::start(env.tmp.path());
    let host = format!("127.0.0.1:{}", reg.port);
    // The gzip image is the OCI layout written here (gzip layers); the zstd
    // image is the same one pushed by skopeo with zstd compression. skopeo
    // 1.9 keeps already-compressed layers as they are, so it pushes from an
    // uncompressed copy (dir: --dest-decompress). (A gzip copy pushed to
    // the same registry afterwards gets the zstd blobs substituted by
    // skopeo's blob-info cache, so the gzip side is not a registry tag.)
    let layout = env.path("layout");
    write_layout(&layout, &test_layers(0));
    let plain = env.path("plain");
    skopeo_push(
        &layout,
        &format!("dir:{}", plain.display()),
        &["--dest-decompress"],
    );
    let out = run_bounded(
        Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-compress-format",
            "zstd",
            &format!("dir:{}", plain.display()),
            &format!("docker://{host}/keel/test:zstd"),
        ]),
        180,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The registry really holds zstd layers.
    let out = run_bounded(
        Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/keel/test:zstd"),
        ]),
        60,
    );
    let z = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        z.contains("application/vnd.oci.image.layer.v1.tar+zstd") && !z.contains("tar+gzip"),
        "{z}"
    );
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE=oci:{}\nTOOLBOX_DOCKER_TAG=v1\nTOOLBOX_NAME=gz\n",
        layout.display()
    ));
    ok(&env.toolbox(&["pull"]));
    env.rc(&format!(
        "TOOLBOX_DOCKER_IMAGE={host}/keel/test\nTOOLBOX_DOCKER_TAG=zstd\nTOOLBOX_NAME=zs\n"
    ));
    ok(&env.toolbox(&["pull"]));
    let gz = snapshot(&env.store.join("gz"));
    let zs = snapshot(&env.store.join("zs"));
    assert!(gz.contains_key("bin/busybox"));
    assert_eq!(gz, zs);
    assert_eq!(zs, snapshot(&umoci_unpack(&env, &layout)));
    // And it runs.
    assert_eq!(ok(&env.toolbox(&["-c", "echo zstd ok"])), "zstd ok\n");
}

//! Tests of the reboot lock against a real etcd (Debian's `etcd-server`,
//! etcd 3.4): each test starts its own etcd on 127.0.0.1 with free ports
//! and a temporary data directory, and kills it in `Drop`. The clients are
//! `keel-lock` processes (the binary under test), as the agents of a fleet
//! would be. TLS material is made by `openssl` in a temporary directory;
//! v3 auth is set up with `etcdctl` (Debian's `etcd-client`).
//!
//! Nothing here needs root except that `./run test privileged` is where
//! real servers run; no host service is touched.
//!
//! Run: `cargo test -p keel-lock --test privileged -- --test-threads=1`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_lock::etcd::{EtcdConfig, EtcdLock};
use keel_lock::semaphore::Semaphore;

const BIN: &str = env!("CARGO_BIN_EXE_keel-lock");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// TLS files for an etcd that wants client certificates.
struct Tls {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

fn make_tls(dir: &Path) -> Tls {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=keel test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    for (name, cn) in [("server", "127.0.0.1"), ("client", "keel-lock test client")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
    Tls {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        other_ca: dir.join("other-ca.pem"),
    }
}

/// One etcd member on loopback, with its own data directory.
struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<Tls>,
    child: Option<Child>,
}

impl Etcd {
    fn start() -> Etcd {
        Etcd::start_with(false)
    }

    fn start_with(tls: bool) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = tls.then(|| {
            let d = dir.path().join("tls");
            std::fs::create_dir(&d).expect("tls dir");
            make_tls(&d)
        });
        let mut e = Etcd {
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            child: None,
        };
        e.spawn();
        e
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("log");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name=keel-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=keel-test={peer}"))
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.server_cert.display()))
                .arg(format!("--key-file={}", t.server_key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca.display()))
                .arg("--client-cert-auth");
        }
        self.child = Some(
            cmd.spawn()
                .expect("starting etcd (apt-get install etcd-server)"),
        );
        let ep = self.endpoint();
        let cfg = self.config();
        wait_for(&format!("etcd at {ep}"), Duration::from_secs(20), || {
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

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn config(&self) -> EtcdConfig {
        let mut c = EtcdConfig {
            endpoints: vec![self.endpoint()],
            timeout: Duration::from_secs(3),
            ..EtcdConfig::default()
        };
        if let Some(t) = &self.tls {
            c.ca_file = Some(t.ca.clone());
            c.cert_file = Some(t.client_cert.clone());
            c.key_file = Some(t.client_key.clone());
        }
        c
    }

    fn group_config(&self, group: &str) -> EtcdConfig {
        EtcdConfig {
            group: Some(group.into()),
            ..self.config()
        }
    }

    /// A `keel-lock` command for this etcd (environment variables for the
    /// endpoint, as locksmithctl users set them; a fast backoff).
    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("LOCKSMITHCTL_ENDPOINT", self.endpoint())
            .env("KEEL_LOG", "warn")
            .args(["--backoff-initial-ms", "50", "--backoff-max-ms", "500"]);
        if let Some(t) = &self.tls {
            c.env("LOCKSMITHCTL_ETCD_CAFILE", &t.ca)
                .env("LOCKSMITHCTL_ETCD_CERTFILE", &t.client_cert)
                .env("LOCKSMITHCTL_ETCD_KEYFILE", &t.client_key);
        }
        c
    }

    fn keel_lock(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running keel-lock")
    }

    fn value(&self, group: Option<&str>) -> Semaphore {
        let cfg = EtcdConfig {
            group: group.map(str::to_string),
            ..self.config()
        };
        EtcdLock::new(&cfg, "reader")
            .expect("client")
            .read()
            .expect("read")
            .value
            .unwrap_or_else(|| Semaphore::new(1))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("etcd log (last lines, newest first):\n{}", tail.join("\n"));
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A monitor thread reading the semaphore every few ms, recording the
/// largest number of holders it saw.
struct Monitor {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(usize, usize)>>,
}

impl Monitor {
    fn start(cfg: EtcdConfig) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let l = EtcdLock::new(&cfg, "monitor").expect("client");
            let (mut most, mut reads) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                if let Ok(r) = l.read() {
                    if let Some(v) = r.value {
                        most = most.max(v.holders.len());
                        assert!(
                            v.holders.len() as i64 <= v.max,
                            "more holders than max: {v:?}"
                        );
                        assert_eq!(v.semaphore, v.max - v.holders.len() as i64, "{v:?}");
                    }
                    reads += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (most, reads)
        });
        Monitor {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("handle")
            .join()
            .expect("monitor saw a violation")
    }
}

/// An agent: wait for the lock, "reboot" (hold it for `hold_ms`), release.
/// Appends "start ID" / "end ID" lines to `log`. A shell runs the
/// `keel-lock` processes, with the environment of [`Etcd::cmd`].
fn spawn_agent(e: &Etcd, id: &str, hold_ms: u64, log: &Path) -> Child {
    let kl = format!("{BIN} --backoff-initial-ms 50 --backoff-max-ms 500");
    let script = format!(
        "set -e\n{kl} lock --wait --wait-timeout 120 {id} >/dev/null\n\
         echo \"start {id}\" >> {log}\nsleep {secs}\necho \"end {id}\" >> {log}\n\
         {kl} unlock {id} >/dev/null\n",
        log = log.display(),
        secs = hold_ms as f64 / 1000.0
    );
    let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = e
        .cmd()
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_os_string(), v.to_os_string())))
        .collect();
    Command::new("/bin/sh")
        .env_clear()
        .envs(envs)
        .env("PATH", "/usr/bin:/bin")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .spawn()
        .expect("agent")
}

/// Largest number of "start … end" intervals open at once in the log.
fn max_overlap(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).expect("log");
    let (mut open, mut most, mut starts) = (0usize, 0usize, 0usize);
    for l in text.lines() {
        if l.starts_with("start ") {
            open += 1;
            starts += 1;
            most = most.max(open);
        } else if l.starts_with("end ") {
            open -= 1;
        }
    }
    (most, starts)
}

fn contend(e: &Etcd, max: i64, agents: usize, hold_ms: u64) {
    run_ok(e.cmd().args(["set-max", &max.to_string()]));
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("events");
    std::fs::write(&log, "").expect("log");
    let mon = Monitor::start(e.config());
    let started = Instant::now();
    let mut kids: Vec<Child> = (0..agents)
        .map(|i| spawn_agent(e, &format!("agent{max}-{i:02}"), hold_ms, &log))
        .collect();
    for k in &mut kids {
        let st = k.wait().expect("wait");
        assert!(st.success(), "an agent failed: {st}");
    }
    let took = started.elapsed();
    let (most_seen, reads) = mon.finish();
    let (overlap, starts) = max_overlap(&log);
    eprintln!(
        "max {max}: {agents} agents in {took:?}; monitor saw at most {most_seen} holders in {reads} reads; log overlap {overlap}"
    );
    assert_eq!(starts, agents, "every agent got the lock");
    assert!(
        overlap <= max as usize,
        "{overlap} holders at once, max {max}"
    );
    assert!(most_seen <= max as usize);
    assert!(most_seen >= 1 && reads > 10);
    if max > 1 {
        // With several slots and agents waiting, slots were shared at some point.
        assert!(overlap >= 2, "max {max} but never two holders at once");
    }
    let v = e.value(None);
    assert!(v.holders.is_empty(), "{v:?}");
    assert_eq!((v.semaphore, v.max), (max, max));
}

#[test]
fn agents_contend_for_max_1_then_max_2() {
    let e = Etcd::start();
    contend(&e, 1, 6, 300);
    contend(&e, 2, 8, 300);
}

#[test]
fn a_killed_holder_keeps_the_lock_until_unlocked() {
    let e = Etcd::start();
    let mut holder = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "LOCKSMITHCTL_ENDPOINT={} {BIN} lock victim && exec sleep 600",
            e.endpoint()
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("holder");
    wait_for("victim to hold the lock", Duration::from_secs(10), || {
        e.value(None).holders == ["victim"]
    });
    holder.kill().expect("kill");
    holder.wait().expect("wait");
    // Dead, and still holding: nothing in etcd expires the slot.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(e.value(None).holders, ["victim"]);
    let o = e.keel_lock(&["lock", "other"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no free slot") && stderr(&o).contains("victim"),
        "{}",
        stderr(&o)
    );
    let st = run_ok(e.cmd().arg("status"));
    assert!(
        st.contains("Available: 0") && st.contains("MACHINE ID"),
        "{st}"
    );
    // The holder line says since when (this test's day, UTC).
    let today = jiff::Timestamp::now().to_string()[..10].to_string();
    let line = st
        .lines()
        .find(|l| l.starts_with("victim"))
        .expect("holder line");
    assert!(line.contains(&today), "{st}");
    let l = EtcdLock::new(&e.config(), "reader").expect("client");
    assert_eq!(l.holders_since().expect("since").len(), 1);
    // The operator frees it.
    assert!(run_ok(e.cmd().args(["unlock", "victim"])).contains("unlocked victim"));
    assert!(
        l.holders_since().expect("since").is_empty(),
        "since key deleted with the unlock"
    );
    assert!(run_ok(e.cmd().args(["lock", "other"])).contains("locked for other"));
    // Unlocking someone who holds nothing says so.
    let o = e.keel_lock(&["unlock", "victim"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("victim holds no slot"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn clients_recover_when_etcd_restarts() {
    let mut e = Etcd::start();
    run_ok(e.cmd().args(["lock", "blocker"]));
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("events");
    std::fs::write(&log, "").expect("log");
    let mut kids: Vec<Child> = (0..3)
        .map(|i| spawn_agent(&e, &format!("r{i}"), 100, &log))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    e.kill();
    // Down for a while: the waiting agents see it unreachable and back off.
    std::thread::sleep(Duration::from_secs(2));
    let o = e.keel_lock(&["status"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("etcd unreachable"), "{}", stderr(&o));
    e.restart();
    assert_eq!(
        e.value(None).holders,
        ["blocker"],
        "the value survived the restart"
    );
    run_ok(e.cmd().args(["unlock", "blocker"]));
    for k in &mut kids {
        let st = k.wait().expect("wait");
        assert!(st.success(), "an agent did not recover: {st}");
    }
    let (overlap, starts) = max_overlap(&log);
    assert_eq!((overlap, starts), (1, 3));
    assert!(e.value(None).holders.is_empty());
}

#[test]
fn groups_are_separate() {
    let e = Etcd::start();
    run_ok(e.cmd().args(["--group", "g1", "lock", "a"]));
    run_ok(e.cmd().args(["--group", "g2", "lock", "b"]));
    let o = e
        .cmd()
        .env("LOCKSMITHCTL_GROUP", "g1")
        .args(["lock", "c"])
        .output()
        .expect("run");
    assert!(!o.status.success(), "g1 has one slot");
    // The fleet-wide lock is a third, independent key.
    run_ok(e.cmd().args(["lock", "c"]));
    assert_eq!(e.value(Some("g1")).holders, ["a"]);
    assert_eq!(e.value(Some("g2")).holders, ["b"]);
    assert_eq!(e.value(None).holders, ["c"]);
    let l = EtcdLock::new(&e.group_config("g2"), "x").expect("client");
    assert_eq!(
        l.key(),
        "coreos.com/updateengine/rebootlock/groups/g2/semaphore"
    );
    // A group's key holding something else is named in the error.
    run_ok(Command::new("etcdctl").env("ETCDCTL_API", "3").args([
        "--endpoints",
        &e.endpoint(),
        "put",
        "coreos.com/updateengine/rebootlock/groups/g3/semaphore",
        "not json",
    ]));
    let o = e.keel_lock(&["--group", "g3", "lock", "a"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("groups/g3/semaphore") && err.contains("holds something else"),
        "{err}"
    );
}

#[test]
fn lost_races_are_retried_by_threads() {
    // 16 threads take and give back slots of max 3 as fast as they can:
    // every compare-and-swap conflict is re-read and retried, and the
    // value stays consistent.
    let e = Etcd::start();
    let cfg = e.config();
    EtcdLock::new(&cfg, "x")
        .expect("client")
        .set_max(3)
        .expect("max");
    let mon = Monitor::start(cfg.clone());
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let cfg = EtcdConfig {
                cas_attempts: 200,
                ..cfg.clone()
            };
            std::thread::spawn(move || {
                let l = EtcdLock::new(&cfg, &format!("t{i}")).expect("client");
                let mut taken = 0;
                while taken < 3 {
                    let (c, _) = l.lock_as(&format!("t{i}")).expect("lock");
                    if c == keel_lock::semaphore::LockChange::Taken {
                        taken += 1;
                        l.unlock_as(&format!("t{i}")).expect("unlock");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let (most, _) = mon.finish();
    assert!(most <= 3);
    let v = e.value(None);
    assert_eq!((v.semaphore, v.max, v.holders.len()), (3, 3, 0));
}

#[test]
fn tls_with_client_certificates_and_a_wrong_ca() {
    let e = Etcd::start_with(true);
    assert!(run_ok(e.cmd().args(["lock", "m1"])).contains("locked for m1"));
    let st = run_ok(e.cmd().arg("status"));
    assert!(st.contains("m1"), "{st}");
    let t = e.tls.as_ref().expect("tls");
    // A CA that did not sign etcd's certificate.
    let o = e
        .cmd()
        .env("LOCKSMITHCTL_ETCD_CAFILE", &t.other_ca)
        .arg("status")
        .output()
        .expect("run");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("TLS failed") && err.contains("certificate"),
        "{err}"
    );
    eprintln!("wrong CA: {err}");
    // No client certificate: etcd refuses the handshake.
    let o = Command::new(BIN)
        .env_clear()
        .args(["--endpoints", &e.endpoint(), "--etcd-cafile"])
        .arg(&t.ca)
        .arg("status")
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("etcd unreachable"), "{}", stderr(&o));
    // A CA file that is not PEM is named.
    let o = e
        .cmd()
        .env("LOCKSMITHCTL_ETCD_CAFILE", &t.server_key)
        .arg("status")
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("server.key"), "{}", stderr(&o));
}

#[test]
fn user_and_password_auth() {
    let e = Etcd::start();
    let ctl = |args: &[&str]| {
        run_ok(
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &e.endpoint()])
                .args(args),
        )
    };
    ctl(&["user", "add", "root:rootpw"]);
    ctl(&["auth", "enable"]);
    let ok = run_ok(e.cmd().args([
        "--etcd-username",
        "root",
        "--etcd-password",
        "rootpw",
        "lock",
        "m1",
    ]));
    assert!(ok.contains("locked for m1"), "{ok}");
    let st = run_ok(
        e.cmd()
            .env("LOCKSMITHCTL_ETCD_USERNAME", "root")
            .env("LOCKSMITHCTL_ETCD_PASSWORD", "rootpw")
            .arg("status"),
    );
    assert!(st.contains("m1"), "{st}");
    let o = e.keel_lock(&[
        "--etcd-username",
        "root",
        "--etcd-password",
        "nope",
        "status",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("authentication"), "{}", stderr(&o));
    let o = e.keel_lock(&["status"]);
    assert!(!o.status.success(), "no credentials, auth on");
    assert!(stderr(&o).contains("auth is enabled"), "{}", stderr(&o));
}

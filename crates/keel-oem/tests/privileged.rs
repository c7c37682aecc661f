//! Privileged tests of the real runner: root, real processes, real
//! capabilities. Run with `./run test privileged` (as root):
//! `cargo test -p keel-oem --test privileged -- --test-threads=1`.
//!
//! Every test builds its own OEM tree and state directories in a temp dir and
//! passes them to the real `keel-oem` binary, so nothing under /oem, /run or
//! /var is touched. Every wait is bounded; temp dirs are removed on drop and
//! hooks' process groups are killed by the runner itself.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_keel-oem");

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "privileged tests must run as root"
    );
}

/// An OEM tree plus state directories, all in one temp dir.
struct Tree {
    tmp: tempfile::TempDir,
}

impl Tree {
    fn new(manifest: &str) -> Tree {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let t = Tree { tmp };
        fs::create_dir_all(t.oem().join("bin")).unwrap();
        fs::write(t.oem().join("oem-release"), "ID=test\nNAME=\"Test OEM\"\n").unwrap();
        fs::write(t.oem().join("oem.toml"), manifest).unwrap();
        t
    }
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn oem(&self) -> PathBuf {
        self.path("oem")
    }
    /// Install an executable shell script as /oem/bin/NAME.
    fn script(&self, name: &str, body: &str) {
        let p = self.oem().join("bin").join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fn args(&self) -> Vec<String> {
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        vec![
            "--oem-dir".into(),
            s(self.oem()),
            "--state-dir".into(),
            s(self.path("state")),
            "--run-dir".into(),
            s(self.path("run")),
            "--metadata".into(),
            s(self.path("metadata")),
            "--boot-json".into(),
            s(self.path("boot.json")),
            "--journal-socket".into(),
            s(self.path("journal.sock")),
        ]
    }
    /// Run `keel-oem ARGS` with this tree, killing it after 60 s.
    fn keel_oem(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(self.args())
            .args(args)
            .env("KEEL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_bounded(cmd, Duration::from_secs(60))
    }
    fn read(&self, p: &str) -> String {
        fs::read_to_string(self.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }
}

fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + limit;
    // Read pipes in threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keel-oem did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    }
}

fn hook(name: &str, stage: &str, extra: &str) -> String {
    format!(
        "[[hook]]\nname = \"{name}\"\nstage = \"{stage}\"\ncommand = [\"/oem/bin/{name}\"]\ntimeout = 10\n{extra}\n"
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn hooks_run_in_name_order_and_only_their_stage() {
    let m = format!(
        "version = 1\n{}{}{}{}",
        hook("c-third", "late", ""),
        hook("a-first", "late", ""),
        hook("b-second", "late", ""),
        hook("other", "early", "")
    );
    let t = Tree::new(&m);
    let log = t.path("order.log");
    for n in ["a-first", "b-second", "c-third", "other"] {
        t.script(n, &format!("echo {n} >> {}", log.display()));
    }
    let o = t.keel_oem(&["run", "late"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(t.read("order.log"), "a-first\nb-second\nc-third\n");
    let status: serde_json::Value = serde_json::from_str(&t.read("run/status.json")).unwrap();
    assert_eq!(status["stages"]["late"]["state"], "ok");
    assert_eq!(status["oem_id"], "test");
}

fn pid_alive(pid: i32) -> bool {
    // A zombie (reparented to a PID 1 that does not reap) counts as dead.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let m = format!(
        "version = 1\n{}{}",
        hook("hang", "late", "").replace("timeout = 10", "timeout = 1"),
        hook("zz-after", "late", "")
    );
    let t = Tree::new(&m);
    let pids = t.path("pids");
    // The hook starts a grandchild (a subshell running sleep) and hangs.
    t.script(
        "hang",
        &format!(
            "sh -c 'echo $$ >> {p}; exec sleep 1000' &\necho $$ >> {p}\nsleep 1000",
            p = pids.display()
        ),
    );
    t.script("zz-after", &format!("touch {}", t.path("after").display()));
    let start = Instant::now();
    let o = t.keel_oem(&["run", "late"]);
    let took = start.elapsed();
    assert!(
        o.status.success(),
        "an optional hook's timeout must not fail the stage: {}",
        stderr(&o)
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(t.path("after").exists(), "the next hook ran");
    let pids: Vec<i32> = t.read("pids").lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2);
    // Give the kernel a moment to tear the killed processes down.
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in pids {
        assert!(!pid_alive(p), "process {p} of the hook's group survived");
    }
    let result: serde_json::Value = serde_json::from_str(&t.read("state/results.json")).unwrap();
    let result = &result["hang"];
    assert_eq!(result["exit"]["kind"], "timed-out");
}

#[test]
fn leftover_background_processes_are_killed_when_the_hook_exits() {
    let t = Tree::new(&format!("version = 1\n{}", hook("bg", "late", "")));
    t.script(
        "bg",
        &format!("sleep 1000 &\necho $! > {}", t.path("pid").display()),
    );
    let start = Instant::now();
    let o = t.keel_oem(&["run", "late"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(5));
    let pid: i32 = t.read("pid").trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!pid_alive(pid), "background sleep {pid} survived");
}

/// Parse a `Cap*:` hex mask out of /proc status text.
fn mask(status: &str, key: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} missing in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn capabilities_are_really_dropped() {
    let m = format!(
        "version = 1\n{}{}",
        hook(
            "net",
            "early",
            "capabilities = [\"CAP_NET_ADMIN\", \"CAP_CHOWN\"]"
        ),
        hook("none", "early", "")
    );
    let t = Tree::new(&m);
    // The hook shell reads its own status ($$), not a child's.
    for n in ["net", "none"] {
        t.script(
            n,
            &format!(
                "while IFS= read -r l; do echo \"$l\"; done < /proc/$$/status > {}",
                t.path(n).display()
            ),
        );
    }
    let o = t.keel_oem(&["run", "early"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let net = t.read("net");
    let want = (1u64 << 12) | 1; // CAP_NET_ADMIN | CAP_CHOWN
    assert_eq!(mask(&net, "CapEff:"), want, "{net}");
    assert_eq!(mask(&net, "CapPrm:"), want);
    assert_eq!(mask(&net, "CapBnd:"), want);
    assert_eq!(mask(&net, "CapInh:"), want);
    assert_eq!(mask(&net, "CapAmb:"), 0);
    assert!(net.lines().any(|l| l == "NoNewPrivs:\t1"), "{net}");
    let none = t.read("none");
    assert_eq!(mask(&none, "CapEff:"), 0, "{none}");
    assert_eq!(mask(&none, "CapBnd:"), 0);
    // And the kernel enforces it: without CAP_CHOWN, chown to another user fails.
    let t2 = Tree::new(&format!(
        "version = 1\n{}",
        hook("chown", "late", "required = true")
    ));
    let f = t2.path("file");
    fs::write(&f, "x").unwrap();
    t2.script("chown", &format!("chown 500 {}", f.display()));
    let o = t2.keel_oem(&["run", "late"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::metadata(&f).unwrap().uid(), 0);
}

#[test]
fn run_once_survives_a_failure_then_succeeds_next_run() {
    let t = Tree::new(&format!(
        "version = 1\n{}",
        hook("once", "network", "run = \"first-boot\"")
    ));
    let flag = t.path("flag");
    let count = t.path("count");
    t.script(
        "once",
        &format!(
            "echo run >> {c}\n[ -e {f} ] || {{ echo 'flag missing' >&2; exit 7; }}",
            c = count.display(),
            f = flag.display()
        ),
    );
    let o = t.keel_oem(&["run", "network"]);
    assert!(o.status.success(), "optional: {}", stderr(&o));
    assert!(
        !t.path("state/done/once").exists(),
        "marker written after a failure"
    );
    let r: serde_json::Value = serde_json::from_str(&t.read("state/results.json")).unwrap();
    let r = &r["once"];
    assert_eq!(r["exit"]["code"], 7);
    assert_eq!(r["last_stderr"], "flag missing");

    fs::write(&flag, "").unwrap();
    assert!(t.keel_oem(&["run", "network"]).status.success());
    assert!(t.path("state/done/once").exists());
    assert!(t.keel_oem(&["run", "network"]).status.success());
    assert_eq!(t.read("count"), "run\nrun\n", "ran once more after success");
    let o = t.keel_oem(&["status"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("never (succeeded once)"), "{table}");
}

#[test]
fn environment_is_minimal_plus_keel_variables_and_metadata() {
    let t = Tree::new(&format!(
        "version = 1\n{}",
        hook("env", "network", "environment = { VENDOR = \"acme\" }")
    ));
    // Written through the contract type, as keel-init writes it.
    let mut record = keel_contract::BootRecord::new(keel_contract::Slot::A, "/dev/vda");
    record.first_boot = true;
    record.store(&t.path("boot.json")).unwrap();
    fs::write(
        t.path("metadata"),
        "KEEL_HOSTNAME=vm1\nKEEL_SSH_KEYS=ssh-ed25519 AAAA\n",
    )
    .unwrap();
    t.script("env", &format!("env > {}", t.path("env").display()));
    let o = t.keel_oem(&["run", "network"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut got: Vec<String> = t.read("env").lines().map(str::to_string).collect();
    got.retain(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="));
    got.sort();
    let s = |p: &str| t.path(p).to_string_lossy().into_owned();
    let mut want = vec![
        "HOME=/root".to_string(),
        "KEEL_FIRST_BOOT=1".into(),
        "KEEL_HOSTNAME=vm1".into(),
        format!("KEEL_METADATA={}", s("metadata")),
        format!("KEEL_OEM_DIR={}", s("oem")),
        "KEEL_OEM_ID=test".into(),
        "KEEL_SSH_KEYS=ssh-ed25519 AAAA".into(),
        "KEEL_STAGE=network".into(),
        "LANG=C.UTF-8".into(),
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "VENDOR=acme".into(),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn malformed_manifest_is_rejected_with_its_line() {
    let t = Tree::new("version = 1\n[[hook]]\nname = \"x\"\nstage = \"sometime\"\ncommand = [\"/oem/bin/x\"]\ntimeout = 0\n");
    let o = t.keel_oem(&["run", "early"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    let m = t.oem().join("oem.toml");
    assert!(
        e.contains(&format!(
            "{}:4: hook \"x\": key `stage`: unknown stage \"sometime\"",
            m.display()
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{}:6: hook \"x\": key `timeout`: must be at least 1 second, got 0",
            m.display()
        )),
        "{e}"
    );
    let o = Command::new(BIN)
        .arg("check")
        .arg(t.oem())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("key `stage`"), "{}", stderr(&o));
}

#[test]
fn required_failure_fails_the_stage_with_the_reason() {
    let m = format!(
        "version = 1\n{}{}",
        hook("a-req", "late", "required = true"),
        hook("b-next", "late", "")
    );
    let t = Tree::new(&m);
    t.script(
        "a-req",
        "echo 'cannot reach the metadata service' >&2; exit 2",
    );
    t.script("b-next", &format!("touch {}", t.path("b").display()));
    let o = t.keel_oem(&["run", "late"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "stage late failed: hook \"a-req\" exited 2: cannot reach the metadata service"
        ),
        "{}",
        stderr(&o)
    );
    assert!(
        !t.path("b").exists(),
        "hooks after a failed required hook do not run"
    );
}

/// A stand-in for journald's stream socket: records every connection.
fn fake_journal(path: &Path) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let listener = UnixListener::bind(path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        // Bounded: stop accepting after 60 s (the test is long over by then).
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let g = g.clone();
                    std::thread::spawn(move || {
                        s.set_nonblocking(false).unwrap();
                        let mut v = Vec::new();
                        let _ = s.read_to_end(&mut v);
                        g.lock().unwrap().push(v);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    got
}

#[test]
fn output_goes_to_the_journal_tagged_and_bounded() {
    let t = Tree::new(&format!("version = 1\n{}", hook("chatty", "late", "")));
    let journal = fake_journal(&t.path("journal.sock"));
    // 20 MB on stdout, one line on stderr.
    t.script(
        "chatty",
        "echo hello\necho 'to stderr' >&2\nyes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -c 20000000",
    );
    let start = Instant::now();
    let o = t.keel_oem(&["run", "late"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    let r: serde_json::Value = serde_json::from_str(&t.read("run/status.json")).unwrap();
    let r = &r["results"]["chatty"];
    assert_eq!(r["exit"]["code"], 0);
    let forwarded = r["output_bytes"].as_u64().unwrap();
    let dropped = r["output_dropped"].as_u64().unwrap();
    assert!(forwarded <= 1024 * 1024, "{forwarded}");
    assert!(forwarded + dropped >= 20_000_000, "{forwarded} + {dropped}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while journal.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let conns = journal.lock().unwrap().clone();
    assert_eq!(conns.len(), 2, "one stream per fd");
    let texts: Vec<String> = conns
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let out = texts
        .iter()
        .find(|t| t.starts_with("chatty\n\n6\n"))
        .expect("stdout stream at info");
    let err = texts
        .iter()
        .find(|t| t.starts_with("chatty\n\n4\n"))
        .expect("stderr stream at warning");
    assert!(
        out.starts_with("chatty\n\n6\n0\n0\n0\n0\nhello\n"),
        "{}",
        &out[..40]
    );
    assert!(out.len() < 1024 * 1024 + 100);
    assert!(err.contains("to stderr\n"));
    assert!(
        err.contains("bytes of output dropped beyond the 1048576 byte limit"),
        "{err}"
    );
}

#[test]
fn without_a_journal_output_is_prefixed_on_stderr() {
    let t = Tree::new(&format!("version = 1\n{}", hook("plain", "late", "")));
    t.script("plain", "echo from-the-hook");
    let o = t.keel_oem(&["run", "late"]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("plain: from-the-hook\n"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn generator_enables_vendor_units() {
    let t = Tree::new(&format!("version = 1\n{}", hook("a", "network", "")));
    fs::create_dir_all(t.oem().join("units")).unwrap();
    fs::write(
        t.oem().join("units/agent.service"),
        "[Service]\nExecStart=/oem/bin/agent\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let out = t.path("gen");
    let o = t.keel_oem(&["generate", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read_link(out.join("multi-user.target.wants/agent.service")).unwrap(),
        t.oem().join("units/agent.service")
    );
    assert!(
        fs::symlink_metadata(out.join("multi-user.target.wants/keel-oem-network.service")).is_ok()
    );
}

/// The QEMU platform's real hooks, through the real runner and capabilities,
/// with fw_cfg, the hostname and core's home redirected into the temp dir.
#[test]
fn qemu_tree_installs_fw_cfg_metadata_and_ssh_keys() {
    require_root();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../image/oem/qemu");
    let t = Tree::new("");
    let fwcfg = t.path("fw_cfg");
    let home = t.path("home/core");
    let env = format!(
        "environment = {{ KEEL_FW_CFG = \"{}\", KEEL_PROC_HOSTNAME = \"{}\", KEEL_ETC_HOSTNAME = \"{}\", KEEL_CORE_HOME = \"{}\" }}",
        fwcfg.display(),
        t.path("hostname").display(),
        t.path("etc-hostname").display(),
        home.display()
    );
    let manifest = fs::read_to_string(src.join("oem.toml")).unwrap().replace(
        "\nstage = \"early\"\n",
        &format!("\nstage = \"early\"\n{env}\n"),
    );
    fs::write(t.oem().join("oem.toml"), manifest).unwrap();
    fs::copy(src.join("oem-release"), t.oem().join("oem-release")).unwrap();
    for f in fs::read_dir(src.join("bin")).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), t.oem().join("bin").join(f.file_name())).unwrap();
    }
    let raw = fwcfg.join("by_name/opt/keel/metadata");
    fs::create_dir_all(&raw).unwrap();
    fs::write(
        raw.join("raw"),
        "KEEL_HOSTNAME=keel-vm\r\nKEEL_SSH_KEYS=ssh-ed25519 AAAAC3Nza first@host\nKEEL_SSH_KEYS=ssh-rsa AAAAB3Nza second@host\nnot a fact\n",
    )
    .unwrap();
    fs::write(t.path("metadata"), "OTHER=kept\nKEEL_HOSTNAME=old\n").unwrap();
    // core already has a key from Ignition, and its .ssh is locked down.
    fs::create_dir_all(home.join(".ssh")).unwrap();
    fs::write(
        home.join(".ssh/authorized_keys"),
        "ssh-ed25519 IGNITION admin\n",
    )
    .unwrap();
    for p in [
        home.join(".ssh/authorized_keys"),
        home.join(".ssh"),
        home.clone(),
    ] {
        std::os::unix::fs::chown(&p, Some(500), Some(500)).unwrap();
    }
    fs::set_permissions(home.join(".ssh"), fs::Permissions::from_mode(0o700)).unwrap();

    for round in 0..2 {
        let o = t.keel_oem(&["run", "early"]);
        assert!(o.status.success(), "round {round}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            !e.contains("WARN") || e.contains("not a fact") || e.contains("skipped"),
            "{e}"
        );
        for h in ["10-fw-cfg-metadata", "20-hostname", "30-ssh-keys"] {
            let r: serde_json::Value = serde_json::from_str(&t.read("state/results.json")).unwrap();
            assert_eq!(r[h]["exit"]["code"], 0, "{h}: {r} {e}");
        }
    }
    assert_eq!(
        t.read("metadata"),
        "OTHER=kept\nKEEL_HOSTNAME=keel-vm\nKEEL_SSH_KEYS=ssh-ed25519 AAAAC3Nza first@host\nKEEL_SSH_KEYS=ssh-rsa AAAAB3Nza second@host\n"
    );
    assert_eq!(t.read("hostname"), "keel-vm");
    let ak = home.join(".ssh/authorized_keys");
    assert_eq!(
        fs::read_to_string(&ak).unwrap(),
        "ssh-ed25519 IGNITION admin\n\
         # keel-oem qemu: platform keys (managed, do not edit)\n\
         ssh-ed25519 AAAAC3Nza first@host\n\
         ssh-rsa AAAAB3Nza second@host\n\
         # keel-oem qemu: end\n",
        "both rounds leave exactly one block"
    );
    let md = fs::metadata(&ak).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (500, 500, 0o600));
    let md = fs::metadata(home.join(".ssh")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (500, 0o700));
    let leftovers: Vec<_> = fs::read_dir(home.join(".ssh"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "authorized_keys")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn concurrent_runs_do_not_run_a_first_boot_hook_twice() {
    let t = Tree::new(&format!(
        "version = 1\n{}",
        hook("once", "late", "run = \"first-boot\"")
    ));
    t.script(
        "once",
        &format!("echo run >> {}\nsleep 1", t.path("count").display()),
    );
    let spawn = || {
        let mut cmd = Command::new(BIN);
        cmd.args(t.args())
            .args(["run", "late"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().unwrap()
    };
    let mut children = vec![spawn(), spawn()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !children.is_empty() {
        if Instant::now() > deadline {
            for c in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            panic!("concurrent runs did not finish");
        }
        let mut i = 0;
        while i < children.len() {
            if let Some(s) = children[i].try_wait().unwrap() {
                assert!(s.success());
                children.remove(i);
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(t.read("count"), "run\n");
}

/// Boot real systemd in a container (`systemd-nspawn --volatile=yes` over the
/// host's `/usr`: an empty tmpfs root, like a fresh Keel machine) with the
/// generator, the stage units and `oem` at `/oem`; `probe` (a shell script)
/// runs after multi-user.target, writes into `/results` and powers off.
/// Returns the results directory (in `tmp`) and the console output.
/// Deviation from the image: the binary lives in /opt/keel (the host's /usr
/// is read-only), units and the generator in /etc/systemd.
fn nspawn_boot(tmp: &Path, oem: &Path, probe: &str) -> (PathBuf, String) {
    require_root();
    let nspawn = Path::new("/usr/bin/systemd-nspawn");
    assert!(
        nspawn.exists(),
        "systemd-nspawn missing: apt-get install systemd-container"
    );
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tmp;
    let (sys, gens, opt, results) = (
        d.join("sys"),
        d.join("gen"),
        d.join("opt"),
        d.join("results"),
    );
    for p in [&sys, &gens, &opt, &results] {
        fs::create_dir_all(p).unwrap();
    }
    fs::copy(BIN, opt.join("keel-oem")).unwrap();
    fs::copy(BIN, gens.join("keel-oem-generator")).unwrap();
    for stage in ["early", "network", "late"] {
        let unit = format!("keel-oem-{stage}.service");
        let text = fs::read_to_string(crate_dir.join("../../units").join(&unit)).unwrap();
        fs::write(
            sys.join(&unit),
            text.replace("/usr/bin/keel-oem", "/opt/keel/keel-oem"),
        )
        .unwrap();
    }
    fs::write(opt.join("probe.sh"), probe).unwrap();
    fs::set_permissions(opt.join("probe.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        sys.join("keel-oem-probe.service"),
        "[Unit]\nAfter=multi-user.target keel-oem-late.service\n[Service]\nType=oneshot\nExecStart=/opt/keel/probe.sh\n",
    )
    .unwrap();
    fs::create_dir_all(sys.join("multi-user.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/keel-oem-probe.service",
        sys.join("multi-user.target.wants/keel-oem-probe.service"),
    )
    .unwrap();
    // An empty /etc would start the interactive first-boot wizard.
    std::os::unix::fs::symlink("/dev/null", sys.join("systemd-firstboot.service")).unwrap();

    let bind = |flag: &str, src: &Path, dst: &str| format!("--{flag}={}:{dst}", src.display());
    let mut cmd = Command::new(nspawn);
    cmd.args([
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--volatile=yes",
        "-D",
        "/",
    ])
    .arg(bind("bind-ro", &sys, "/etc/systemd/system"))
    .arg(bind("bind-ro", &gens, "/etc/systemd/system-generators"))
    .arg(bind("bind-ro", &opt, "/opt/keel"))
    .arg(bind("bind-ro", oem, "/oem"))
    .arg(bind("bind", &results, "/results"))
    .args(["--boot", "systemd.unit=multi-user.target"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = run_bounded(cmd, Duration::from_secs(150));
    let console = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    (results, console)
}

/// The VM tests' checks, on real systemd: the generator enabled the stages,
/// they ran in order around network-online.target, a hanging optional hook
/// was killed at its timeout with its grandchild, the boot reached multi-user.
#[test]
fn nspawn_boot_runs_the_stages_in_order() {
    require_root();
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let probe = r#"#!/bin/sh
r=/results
cp -r /var/lib/keel-oem-test/. $r/ 2>/dev/null
# One clock for all: systemd's monotonic timestamps (µs).
mono() { systemctl show -p "$2" --value "$1"; }
echo "$(mono keel-oem-early.service ActiveEnterTimestampMonotonic) $(mono network-online.target ActiveEnterTimestampMonotonic) $(mono keel-oem-network.service InactiveExitTimestampMonotonic) $(mono keel-oem-network.service ActiveEnterTimestampMonotonic) $(mono keel-oem-late.service InactiveExitTimestampMonotonic)" > $r/times
for s in early network late; do
  echo "$s $(systemctl show -p ActiveState --value keel-oem-$s.service) $(systemctl show -p Result --value keel-oem-$s.service)" >> $r/units
done
for p in $(cat /var/lib/keel-oem-test/hang.pid /var/lib/keel-oem-test/hang-grandchild.pid); do
  if kill -0 "$p" 2>/dev/null; then echo "alive $p"; else echo "dead $p"; fi >> $r/pids
done
systemctl is-failed keel-oem-early.service > $r/early-failed
/opt/keel/keel-oem status > $r/status 2>&1
cp /run/keel/oem/status.json $r/status.json
journalctl -t 10-stamp-early -o cat > $r/journal
ls -R /run/systemd/generator > $r/generator
echo done > $r/done
systemctl poweroff --no-block
"#;
    let (results, console) = nspawn_boot(tmp.path(), &crate_dir.join("test_data/vm-oem"), probe);
    let read = |n: &str| {
        fs::read_to_string(results.join(n))
            .unwrap_or_else(|e| panic!("{n}: {e}\nconsole:\n{console}"))
    };
    assert_eq!(read("done"), "done\n");
    assert_eq!(
        read("units"),
        "early active success\nnetwork active success\nlate active success\n"
    );
    assert_eq!(
        read("early-failed"),
        "active\n",
        "an optional timeout does not fail the stage"
    );
    // Hooks stamped in stage order ...
    let stamps = read("stamps");
    let order: Vec<&str> = stamps.lines().filter_map(|l| l.split(' ').next()).collect();
    // (late twice: 40-stamp-late and the first-boot hook 50-first-boot)
    assert_eq!(order, ["early", "network", "late", "late"], "{stamps}");
    // ... and the stage units ran around network-online.target:
    // early done <= network-online reached <= network started, network done <= late started.
    let times = read("times");
    let t: Vec<u64> = times
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(t.len(), 5, "{times}");
    assert!(t.iter().all(|&v| v > 0), "a unit never ran: {times}");
    assert!(t[0] <= t[1], "early finished after network-online: {times}");
    assert!(
        t[1] <= t[2],
        "network stage started before network-online: {times}"
    );
    assert!(
        t[3] <= t[4],
        "late stage started before the network stage finished: {times}"
    );
    assert!(stamps.contains("first_boot=0 oem=keel-test"), "{stamps}");
    let pids = read("pids");
    assert_eq!(pids.lines().count(), 2, "{pids}");
    assert!(pids.lines().all(|l| l.starts_with("dead ")), "{pids}");
    let status = read("status");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("20-hang") && l.contains("timed out after 5s")),
        "{status}"
    );
    assert!(read("journal").contains("stamped early at"));
    let generator = read("generator");
    for want in [
        "keel-oem-early.service",
        "keel-oem-network.service",
        "keel-oem-late.service",
    ] {
        assert!(
            generator.contains(want),
            "{want} not generated: {generator}"
        );
    }
}

/// A failed required hook fails its stage's unit, with the reason in the
/// unit's journal, and the boot still reaches multi-user.target.
#[test]
fn nspawn_required_failure_fails_the_stage_unit() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let t = Tree::new(&format!(
        "version = 1\n{}{}",
        hook("10-ok", "early", ""),
        hook("20-must", "late", "required = true")
    ));
    t.script("10-ok", "echo fine");
    t.script("20-must", "echo 'metadata service unreachable' >&2\nexit 4");
    let probe = r#"#!/bin/sh
r=/results
systemctl show -p ActiveState --value keel-oem-early.service > $r/early
echo "$(systemctl show -p ActiveState --value keel-oem-late.service) $(systemctl show -p Result --value keel-oem-late.service)" > $r/late
systemctl show -p ActiveState --value multi-user.target > $r/multi-user
journalctl -u keel-oem-late.service -o cat > $r/journal
journalctl -t 20-must -o cat > $r/hook-journal
echo done > $r/done
systemctl poweroff --no-block
"#;
    let (results, console) = nspawn_boot(tmp.path(), &t.oem(), probe);
    let read = |n: &str| {
        fs::read_to_string(results.join(n))
            .unwrap_or_else(|e| panic!("{n}: {e}\nconsole:\n{console}"))
    };
    assert_eq!(read("done"), "done\n");
    assert_eq!(read("early"), "active\n");
    assert_eq!(read("late").trim_end(), "failed exit-code");
    assert_eq!(read("multi-user"), "active\n");
    let journal = read("journal");
    assert!(
        journal
            .contains("stage late failed: hook \"20-must\" exited 4: metadata service unreachable"),
        "{journal}"
    );
    assert!(read("hook-journal").contains("metadata service unreachable"));
}

//! first_boot on temp-dir sysroots with the recording fake: golden plans,
//! what lands on disk, whole-or-nothing on errors, run-once.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys::{Call, Recording};
use crate::{first_boot, FirstBoot, Outcome};

struct Env {
    _tmp: tempfile::TempDir,
    fb: FirstBoot,
}

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// A sysroot like the image's: Debian's accounts, Keel's sysusers.d, a
/// vendor sshd unit, merged /usr (`/lib` → `usr/lib`).
fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let root = t.join("sysroot");
    put(
        &root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    );
    put(&root, "etc/group", "root:x:0:\ndaemon:x:1:\nsudo:x:27:\n");
    put(
        &root,
        "etc/shadow",
        "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
    );
    fs::set_permissions(root.join("etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    put(
        &root,
        "usr/lib/sysusers.d/keel.conf",
        "u core 500 \"Core user\" /home/core /bin/bash\ng docker 233\nm core adm\nm core dialout\n",
    );
    // adm has a fixed gid in sysusers.d; dialout is dynamic (sysusers adds it)
    put(
        &root,
        "usr/lib/sysusers.d/basic.conf",
        "g adm 4\ng dialout -\n",
    );
    put(
        &root,
        "usr/lib/systemd/system/sshd.service",
        "[Unit]\nDescription=OpenSSH\n[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\nAlias=ssh.service\n",
    );
    fs::create_dir_all(root.join("var")).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    fs::create_dir_all(t.join("oem")).unwrap();
    let fb = FirstBoot {
        sysroot: root,
        cmdline: "root=LABEL=ROOT quiet".into(),
        fw_cfg_root: t.join("fw_cfg"),
        block_dir: t.join("sys-block"),
        dev_dir: t.join("dev"),
        oem_dir: t.join("oem"),
        run_root: t.join("run"),
    };
    Env { _tmp: tmp, fb }
}

fn fw_cfg(env: &Env, key: &str, data: &str) {
    put(&env.fb.fw_cfg_root, &format!("{key}/raw"), data);
}

/// Every path below `root` with its type, mode and contents.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if m.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&p).unwrap().display()));
            } else if m.is_dir() {
                out.insert(rel, format!("dir {:o}", m.permissions().mode() & 0o7777));
                walk(root, &p, out);
            } else {
                out.insert(
                    rel,
                    format!(
                        "{:o} {}",
                        m.permissions().mode() & 0o7777,
                        String::from_utf8_lossy(&fs::read(&p).unwrap())
                    ),
                );
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q test@keel";

fn ign_fixture() -> String {
    format!(
        r#"{{"ignition":{{"version":"3.3.0"}},
  "passwd":{{"users":[{{"name":"core","sshAuthorizedKeys":["{KEY}"],"groups":["docker","sudo"]}},
                      {{"name":"alice","passwordHash":"$6$salt$hash","shell":"/bin/sh"}}]}},
  "storage":{{"files":[{{"path":"/home/core/secret.txt","mode":384,"user":{{"name":"core"}},"group":{{"name":"core"}},
                        "contents":{{"source":"data:,top%20secret%0A"}}}},
                       {{"path":"/lib/modules-load.d/x.conf","overwrite":false}}],
              "directories":[{{"path":"/var/lib/app","mode":448}}],
              "links":[{{"path":"/etc/localtime","target":"/usr/share/zoneinfo/UTC"}}]}},
  "systemd":{{"units":[{{"name":"hello.service","enabled":true,
     "contents":"[Service]\nType=oneshot\nExecStart=/bin/echo hello\n[Install]\nWantedBy=multi-user.target\n"}},
     {{"name":"sshd.service","enabled":true,"dropins":[{{"name":"10-keel.conf","contents":"[Service]\nEnvironment=X=1\n"}}]}},
     {{"name":"debug-shell.service","mask":true}}]}}}}"#
    )
}

#[test]
fn invalid_path_through_usr_symlink_is_rejected_before_any_write() {
    let env = env();
    fw_cfg(&env, "opt/org.flatcar-linux/config", &ign_fixture());
    let before = snapshot(&env.fb.sysroot);
    let err = first_boot(&env.fb, &Recording::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "fw_cfg opt/org.flatcar-linux/config: $.storage.files.1.path: /lib/modules-load.d/x.conf (as /usr/lib/modules-load.d/x.conf, through a symlink) is on the read-only USR partition, not on ROOT"
    );
    assert_eq!(snapshot(&env.fb.sysroot), before);
}

#[test]
fn ignition_from_fw_cfg_golden() {
    let env = env();
    let cfg = ign_fixture().replace(
        r#",
                       {"path":"/lib/modules-load.d/x.conf","overwrite":false}"#,
        "",
    );
    fw_cfg(&env, "opt/org.flatcar-linux/config", &cfg);
    let sys = Recording::default();
    let Outcome::Applied(report) = first_boot(&env.fb, &sys).unwrap() else {
        panic!("not applied")
    };
    assert_eq!(report.source, "fw_cfg opt/org.flatcar-linux/config");
    assert_eq!(report.format, "ignition 3.3.0");
    let root = &env.fb.sysroot;

    // the plan, against a fresh copy of the fixture (the state before apply)
    let fresh = self::env();
    let plan = crate::plan::plan(
        &crate::load(&env.fb, &sys).unwrap().config,
        &fresh.fb.sysroot,
    )
    .unwrap();
    // account files keep their owner: the fixture's is whoever runs the test
    let m = fs::metadata(fresh.fb.sysroot.join("etc/passwd")).unwrap();
    let me = format!(
        " {}:{} ",
        std::os::unix::fs::MetadataExt::uid(&m),
        std::os::unix::fs::MetadataExt::gid(&m)
    );
    let rendered: String = plan
        .render()
        .lines()
        .map(|l| {
            if l.starts_with("write /etc/passwd")
                || l.starts_with("write /etc/group")
                || l.starts_with("write /etc/shadow")
            {
                l.replace(&me, " 0:0 ")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    golden("ignition.plan", &rendered);

    let rd = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(
        rd("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         core:x:500:500:Core user:/home/core:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n"
    );
    assert_eq!(
        rd("etc/group"),
        "root:x:0:\ndaemon:x:1:\nsudo:x:27:core\ncore:x:500:\nadm:x:4:core\ndocker:x:233:core\nalice:x:1000:\n"
    );
    assert_eq!(
        rd("etc/shadow"),
        "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\ncore:*::0:99999:7:::\nalice:$6$salt$hash::0:99999:7:::\n"
    );
    assert_eq!(
        mode(&root.join("etc/shadow")),
        0o640,
        "account files keep their mode"
    );
    assert_eq!(rd("home/core/.ssh/authorized_keys"), format!("{KEY}\n"));
    assert_eq!(mode(&root.join("home/core/.ssh/authorized_keys")), 0o600);
    assert_eq!(mode(&root.join("home/core/.ssh")), 0o700);
    assert_eq!(rd("home/core/secret.txt"), "top secret\n");
    assert_eq!(mode(&root.join("home/core/secret.txt")), 0o600);
    assert_eq!(mode(&root.join("var/lib/app")), 0o700);
    assert_eq!(
        fs::read_link(root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    assert_eq!(
        fs::read_link(root.join("etc/systemd/system/multi-user.target.wants/hello.service"))
            .unwrap(),
        Path::new("/etc/systemd/system/hello.service")
    );
    assert_eq!(
        fs::read_link(root.join("etc/systemd/system/multi-user.target.wants/sshd.service"))
            .unwrap(),
        Path::new("/usr/lib/systemd/system/sshd.service")
    );
    assert_eq!(
        fs::read_link(root.join("etc/systemd/system/ssh.service")).unwrap(),
        Path::new("/usr/lib/systemd/system/sshd.service")
    );
    assert_eq!(
        rd("etc/systemd/system/sshd.service.d/10-keel.conf"),
        "[Service]\nEnvironment=X=1\n"
    );
    assert_eq!(
        fs::read_link(root.join("etc/systemd/system/debug-shell.service")).unwrap(),
        Path::new("/dev/null")
    );

    // ownership went through the System trait, numerically
    let chowns: Vec<(String, u32, u32)> = sys
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Chown(p, u, g) => Some((
                p.strip_prefix(root).ok()?.to_string_lossy().to_string(),
                u,
                g,
            )),
            _ => None,
        })
        .filter(|(_, u, _)| *u != 0)
        .collect();
    assert!(
        chowns.contains(&("home/core".into(), 500, 500)),
        "{chowns:?}"
    );
    assert!(
        chowns.contains(&("home/core/.ssh".into(), 500, 500)),
        "{chowns:?}"
    );
    assert!(
        chowns.contains(&("home/core/.ssh/.authorized_keys.keel-tmp".into(), 500, 500)),
        "{chowns:?}"
    );
    assert!(
        chowns.contains(&("home/core/.secret.txt.keel-tmp".into(), 500, 500)),
        "{chowns:?}"
    );
    assert!(
        chowns.contains(&("home/alice".into(), 1000, 1000)),
        "{chowns:?}"
    );

    // the result and the marker
    let r = crate::read_result(root).unwrap().unwrap();
    assert_eq!(r, *report);
    assert_eq!(r.applied.users, vec!["core", "alice"]);
    assert!(
        r.applied
            .units
            .contains(&"hello.service (written, enabled)".to_string()),
        "{:?}",
        r.applied.units
    );
    assert!(root.join("var/lib/keel/provisioned").is_file());
    // no temp files left behind
    assert!(!snapshot(root)
        .keys()
        .any(|k| k.to_string_lossy().contains("keel-tmp")));
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&path, got).unwrap();
    }
    let want = fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got,
        want,
        "golden {} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn run_once_and_forced_rerun() {
    let env = env();
    let cfg = ign_fixture().replace(
        r#",
                       {"path":"/lib/modules-load.d/x.conf","overwrite":false}"#,
        "",
    );
    fw_cfg(&env, "opt/keel/config", &cfg);
    let sys = Recording::default();
    assert!(matches!(
        first_boot(&env.fb, &sys).unwrap(),
        Outcome::Applied(_)
    ));
    let after_first = snapshot(&env.fb.sysroot);
    assert_eq!(
        first_boot(&env.fb, &sys).unwrap(),
        Outcome::AlreadyProvisioned
    );
    assert_eq!(
        snapshot(&env.fb.sysroot),
        after_first,
        "second boot changes nothing"
    );
    let mut forced = env.fb.clone();
    forced.cmdline.push_str(" keel.first_boot=1");
    let Outcome::Applied(r) = first_boot(&forced, &sys).unwrap() else {
        panic!("forced run did not apply")
    };
    assert_eq!(r.source, "fw_cfg opt/keel/config");
    let mut a = snapshot(&env.fb.sysroot);
    let mut b = after_first;
    for m in [&mut a, &mut b] {
        m.remove(Path::new("etc/.keel-provision-result.json"));
        m.remove(Path::new("var/lib/keel/provisioned"));
    }
    assert_eq!(
        a, b,
        "a forced re-run converges to the same tree (no duplicate entries)"
    );
}

/// The command line keel-init reads as "redo first boot" is the one
/// provisioning reads so too: a bare `keel.first_boot` re-applies, and a
/// bad value is an error, not a silent "already provisioned".
#[test]
fn bare_first_boot_reapplies_and_a_bad_value_is_named() {
    let env = env();
    fw_cfg(&env, "opt/keel/config", "#cloud-config\nhostname: one\n");
    let sys = Recording::default();
    assert!(matches!(
        first_boot(&env.fb, &sys).unwrap(),
        Outcome::Applied(_)
    ));
    let mut bare = env.fb.clone();
    bare.cmdline.push_str(" keel.first_boot");
    assert!(matches!(
        first_boot(&bare, &sys).unwrap(),
        Outcome::Applied(_)
    ));
    let mut bad = env.fb.clone();
    bad.cmdline.push_str(" keel.first_boot=maybe");
    assert_eq!(
        first_boot(&bad, &sys).unwrap_err().to_string(),
        "kernel command line: keel.first_boot=\"maybe\" is not 0 or 1"
    );
}

#[test]
fn cidata_drive_cloud_config() {
    let env = env();
    let t = env.fb.block_dir.parent().unwrap().to_path_buf();
    fs::create_dir_all(env.fb.block_dir.join("vda")).unwrap();
    fs::create_dir_all(env.fb.block_dir.join("sr0")).unwrap();
    put(&env.fb.dev_dir, "vda", "not a config drive");
    fs::write(
        env.fb.dev_dir.join("sr0"),
        crate::sources::tests::iso_header("cidata"),
    )
    .unwrap();
    let drive = t.join("drive");
    put(
        &drive,
        "user-data",
        &format!("#cloud-config\nhostname: web1\nssh_authorized_keys:\n  - {KEY}\ncoreos:\n  units:\n    - name: app.service\n      command: start\n      content: |\n        [Service]\n        ExecStart=/bin/true\n"),
    );
    put(
        &drive,
        "meta-data",
        "instance-id: iid-1\nlocal-hostname: from-meta\n",
    );
    let sys = Recording {
        drives: vec![(env.fb.dev_dir.join("sr0"), drive)],
        ..Default::default()
    };
    let Outcome::Applied(r) = first_boot(&env.fb, &sys).unwrap() else {
        panic!()
    };
    let dev = env.fb.dev_dir.join("sr0");
    assert_eq!(
        r.source,
        format!("config drive {} (cidata) user-data", dev.display())
    );
    assert_eq!(r.format, "cloud-config");
    let root = &env.fb.sysroot;
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "web1\n",
        "user-data's hostname wins over meta-data"
    );
    assert_eq!(
        fs::read_to_string(root.join("home/core/.ssh/authorized_keys")).unwrap(),
        format!("{KEY}\n")
    );
    assert_eq!(
        fs::read_link(
            env.fb
                .run_root
                .join("systemd/system/multi-user.target.wants/app.service")
        )
        .unwrap(),
        Path::new("/etc/systemd/system/app.service")
    );
    let mp = env.fb.run_root.join("keel/config-drive");
    let calls = sys.calls();
    assert_eq!(calls[0], Call::Mount(dev, "iso9660".into(), mp.clone()));
    assert_eq!(calls[1], Call::Umount(mp.clone()));
    assert!(!mp.exists(), "mount point removed");
}

#[test]
fn meta_data_hostname_alone() {
    let env = env();
    fs::create_dir_all(env.fb.block_dir.join("vdb")).unwrap();
    fs::create_dir_all(&env.fb.dev_dir).unwrap();
    fs::write(
        env.fb.dev_dir.join("vdb"),
        crate::sources::tests::fat_header("CIDATA", false),
    )
    .unwrap();
    let drive = env.fb.block_dir.parent().unwrap().join("drive");
    put(&drive, "user-data", "");
    put(&drive, "meta-data", "local-hostname: node7\n");
    let sys = Recording {
        drives: vec![(env.fb.dev_dir.join("vdb"), drive)],
        ..Default::default()
    };
    first_boot(&env.fb, &sys).unwrap();
    assert_eq!(
        fs::read_to_string(env.fb.sysroot.join("etc/hostname")).unwrap(),
        "node7\n"
    );
    assert!(matches!(&sys.calls()[0], Call::Mount(_, t, _) if t == "vfat"));
}

#[test]
fn no_config_is_a_valid_boot() {
    let env = env();
    let before = snapshot(&env.fb.sysroot);
    let Outcome::Applied(r) = first_boot(&env.fb, &Recording::default()).unwrap() else {
        panic!()
    };
    assert_eq!(
        (r.source.as_str(), r.format.as_str(), r.steps),
        ("none", "none", 0)
    );
    let mut after = snapshot(&env.fb.sysroot);
    assert!(after
        .remove(Path::new("etc/.keel-provision-result.json"))
        .is_some());
    assert!(after
        .remove(Path::new("var/lib/keel/provisioned"))
        .is_some());
    after.remove(Path::new("var/lib/keel"));
    after.remove(Path::new("var/lib"));
    assert_eq!(after, before);
}

#[test]
fn command_line_and_oem_base_merge() {
    let mut env = env();
    put(
        &env.fb.oem_dir,
        "config.ign",
        r#"{"ignition":{"version":"3.0.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 OEMKEY oem"]}]},
            "storage":{"files":[{"path":"/etc/oem-only","contents":{"source":"data:,oem"}},{"path":"/etc/both","contents":{"source":"data:,oem"}}]}}"#,
    );
    let user = "#cloud-config\nssh_authorized_keys: [\"ssh-ed25519 USERKEY user\"]\nwrite_files:\n  - path: /etc/both\n    content: user\n";
    let url: String = user.bytes().map(|b| format!("%{b:02X}")).collect();
    env.fb.cmdline = format!("quiet keel.config_url=data:,{url}");
    let Outcome::Applied(r) = first_boot(&env.fb, &Recording::default()).unwrap() else {
        panic!()
    };
    assert_eq!(r.source, "kernel command line keel.config_url");
    assert_eq!(
        r.oem_base.as_deref(),
        Some(env.fb.oem_dir.join("config.ign").to_str().unwrap())
    );
    let root = &env.fb.sysroot;
    assert_eq!(
        fs::read_to_string(root.join("etc/oem-only")).unwrap(),
        "oem"
    );
    assert_eq!(fs::read_to_string(root.join("etc/both")).unwrap(), "user");
    assert_eq!(
        fs::read_to_string(root.join("home/core/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 OEMKEY oem\nssh-ed25519 USERKEY user\n"
    );
}

#[test]
fn fw_cfg_wins_over_command_line() {
    let mut env = env();
    fw_cfg(
        &env,
        "opt/com.coreos/config",
        r#"{"ignition":{"version":"3.4.0"}}"#,
    );
    env.fb.cmdline = "keel.config_url=https://bad".into();
    let Outcome::Applied(r) = first_boot(&env.fb, &Recording::default()).unwrap() else {
        panic!()
    };
    assert_eq!(r.source, "fw_cfg opt/com.coreos/config");
}

fn oem_user_data(env: &Env, text: &str) -> PathBuf {
    put(&env.fb.oem_dir, "user-data", text);
    env.fb.oem_dir.join("user-data")
}

fn hostname(env: &Env) -> String {
    fs::read_to_string(env.fb.sysroot.join("etc/hostname")).unwrap()
}

/// The disk's own config (what `keel-install --cloud-config` places) is
/// used when the boot brings none, merged over the OEM base config, and
/// applied once.
#[test]
fn oem_user_data_is_used_when_the_boot_brings_no_config() {
    let env = env();
    put(
        &env.fb.oem_dir,
        "config.ign",
        r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/oem-only","contents":{"source":"data:,oem"}}]}}"#,
    );
    let path = oem_user_data(
        &env,
        &format!("#cloud-config\nhostname: from-disk\nssh_authorized_keys:\n  - {KEY}\n"),
    );
    let sys = Recording::default();
    let Outcome::Applied(r) = first_boot(&env.fb, &sys).unwrap() else {
        panic!("not applied")
    };
    assert_eq!(r.source, format!("OEM user-data {}", path.display()));
    assert_eq!(r.format, "cloud-config");
    assert_eq!(
        r.oem_base.as_deref(),
        Some(env.fb.oem_dir.join("config.ign").to_str().unwrap())
    );
    assert_eq!(hostname(&env), "from-disk\n");
    assert_eq!(
        fs::read_to_string(env.fb.sysroot.join("etc/oem-only")).unwrap(),
        "oem"
    );
    assert_eq!(
        fs::read_to_string(env.fb.sysroot.join("home/core/.ssh/authorized_keys")).unwrap(),
        format!("{KEY}\n")
    );
    assert!(
        !sys.calls()
            .iter()
            .any(|c| matches!(c, Call::Mount(..) | Call::Umount(_))),
        "nothing mounted: {:?}",
        sys.calls()
    );
    // Exactly once: the next boot finds the marker and leaves the tree as it is.
    fs::write(env.fb.sysroot.join("etc/hostname"), "changed-later\n").unwrap();
    let after = snapshot(&env.fb.sysroot);
    assert_eq!(
        first_boot(&env.fb, &sys).unwrap(),
        Outcome::AlreadyProvisioned
    );
    assert_eq!(snapshot(&env.fb.sysroot), after);
    // An empty file is "no config", as an empty config drive user-data is.
    let empty = self::env();
    oem_user_data(&empty, "\n");
    let Outcome::Applied(r) = first_boot(&empty.fb, &Recording::default()).unwrap() else {
        panic!("not applied")
    };
    assert_eq!((r.format.as_str(), r.steps), ("none", 0));
}

/// Every source the boot brings comes before the disk's user-data: the
/// command line, a config drive and fw_cfg each win over it.
#[test]
fn a_config_the_boot_brings_wins_over_oem_user_data() {
    let mut env = env();
    oem_user_data(&env, "#cloud-config\nhostname: from-disk\n");
    let url: String = "#cloud-config\nhostname: from-cmdline\n"
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    env.fb.cmdline = format!("quiet keel.config_url=data:,{url}");
    let boot = |fb: &FirstBoot, sys: &Recording| -> String {
        let mut fb = fb.clone();
        fb.cmdline.push_str(" keel.first_boot=1");
        let Outcome::Applied(r) = first_boot(&fb, sys).unwrap() else {
            panic!("not applied")
        };
        r.source
    };
    assert_eq!(
        boot(&env.fb, &Recording::default()),
        "kernel command line keel.config_url"
    );
    assert_eq!(hostname(&env), "from-cmdline\n");

    fs::create_dir_all(env.fb.block_dir.join("sr0")).unwrap();
    fs::create_dir_all(&env.fb.dev_dir).unwrap();
    fs::write(
        env.fb.dev_dir.join("sr0"),
        crate::sources::tests::iso_header("cidata"),
    )
    .unwrap();
    let drive = env.fb.block_dir.parent().unwrap().join("drive");
    put(&drive, "user-data", "#cloud-config\nhostname: from-drive\n");
    let sys = Recording {
        drives: vec![(env.fb.dev_dir.join("sr0"), drive)],
        ..Default::default()
    };
    assert!(boot(&env.fb, &sys).starts_with("config drive "));
    assert_eq!(hostname(&env), "from-drive\n");

    fw_cfg(
        &env,
        "opt/keel/config",
        "#cloud-config\nhostname: from-fw-cfg\n",
    );
    assert_eq!(boot(&env.fb, &sys), "fw_cfg opt/keel/config");
    assert_eq!(hostname(&env), "from-fw-cfg\n");
}

/// A bad OEM user-data stops the boot with `keel-provision validate`'s
/// message for the same bytes, naming the file, and writes nothing; a
/// config the boot brings is used without reading it at all.
#[test]
fn bad_oem_user_data_is_refused_as_validate_refuses_it() {
    let mut env = env();
    let bad = "#cloud-config\nwrite_files:\n  - content: x\n";
    let path = oem_user_data(&env, bad);
    let before = snapshot(&env.fb.sysroot);
    let err = first_boot(&env.fb, &Recording::default())
        .unwrap_err()
        .to_string();
    let v = crate::validate(
        bad.as_bytes(),
        "u.yml",
        crate::Base::None,
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    let what = v.strip_prefix("u.yml: ").unwrap();
    assert_eq!(err, format!("OEM user-data {}: {what}", path.display()));
    assert_eq!(snapshot(&env.fb.sysroot), before, "nothing written");
    env.fb.cmdline = "keel.config_url=data:,%23cloud-config%0Ahostname:%20ok%0A".into();
    first_boot(&env.fb, &Recording::default()).unwrap();
    assert_eq!(hostname(&env), "ok\n");
}

#[test]
fn symlinks_in_the_sysroot_stay_inside_it() {
    let env = env();
    let outside = env.fb.block_dir.parent().unwrap().join("outside");
    fs::create_dir_all(&outside).unwrap();
    // an absolute link is taken relative to the sysroot, as in a chroot
    symlink(&outside, env.fb.sysroot.join("var/escape")).unwrap();
    fw_cfg(
        &env,
        "opt/keel/config",
        r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/var/escape/f","contents":{"source":"data:,x"}}]}}"#,
    );
    first_boot(&env.fb, &Recording::default()).unwrap();
    assert!(
        !outside.join("f").exists(),
        "wrote through a symlink out of the sysroot"
    );
    let inside = env
        .fb
        .sysroot
        .join(outside.strip_prefix("/").unwrap())
        .join("f");
    assert_eq!(fs::read_to_string(inside).unwrap(), "x");
}

#[test]
fn errors_leave_no_trace() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"ignition":{"version":"3.9.0"}}"#,
            "fw_cfg opt/keel/config: $.ignition.version: unsupported Ignition spec version \"3.9.0\" (keel reads 3.0.0 to 3.4.0)",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/../../etc/x","contents":{"source":"data:,x"}}]}}"#,
            "fw_cfg opt/keel/config: $.storage.files.0.path: path \"/../../etc/x\" leaves / (contains \"..\")",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:;base64,%%%"}}]}}"#,
            "fw_cfg opt/keel/config: $.storage.files.0.contents.source: invalid percent-escape at offset 13",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:;base64,!!"}}]}}"#,
            "fw_cfg opt/keel/config: $.storage.files.0.contents.source: invalid base64 at offset 13: invalid byte '!'",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/ok","contents":{"source":"data:,x"}},{"path":"/etc/y","user":{"name":"nobody-here"}}]}}"#,
            "fw_cfg opt/keel/config: $.storage.files.1.user: no user \"nobody-here\" in /etc/passwd, the config or sysusers.d",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/passwd","contents":{"source":"data:,x"}}]}}"#,
            "fw_cfg opt/keel/config: $.storage.files.0.path: /etc/passwd already exists (set overwrite to replace it)",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"passwd":{"users":[{"name":"core","groups":["wheel"]}]}}"#,
            "fw_cfg opt/keel/config: $.passwd.users.0.groups.0: no group \"wheel\" in /etc/group, the config or sysusers.d",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"name":"nope.service","enabled":true}]}}"#,
            "fw_cfg opt/keel/config: $.systemd.units.0: unit nope.service has no contents in the config and no file in /etc/systemd/system or /usr/lib/systemd/system",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"name":"x.service","enabled":true,"contents":"[Service]\nExecStart=/bin/true\n"}]}}"#,
            "fw_cfg opt/keel/config: $.systemd.units.0: x.service cannot be enabled: its [Install] section has no WantedBy=, RequiredBy= or Alias=",
        ),
        // keel-unit's rules where the readers of unit files disagreed: an
        // Alias= of another type (linked before), a line systemd cannot read
        // (skipped before, so the link went missing without a word).
        (
            r#"{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"name":"x.service","enabled":true,"contents":"[Install]\nAlias=x.socket\n"}]}}"#,
            "fw_cfg opt/keel/config: $.systemd.units.0: /etc/systemd/system/x.service:2: Alias=x.socket: alias x.socket must have the unit's type .service",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"name":"x.service","enabled":true,"contents":"[Install]\nWantedBy multi-user.target\n"}]}}"#,
            "fw_cfg opt/keel/config: $.systemd.units.0: /etc/systemd/system/x.service:2: expected 'Key=Value' or '[Section]', found 'WantedBy multi-user.target'",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"name":"@x.service","enabled":true,"contents":"[Install]\nWantedBy=a.target\n"}]}}"#,
            "fw_cfg opt/keel/config: $.systemd.units.0.name: invalid unit name \"@x.service\"",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/usr/bin/x","contents":{"source":"data:,x"}}]}}"#,
            "fw_cfg opt/keel/config: $.storage.files.0.path: /usr/bin/x is on the read-only USR partition, not on ROOT",
        ),
        (
            r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"data:,x"}}],"links":[{"path":"/etc/a/b","target":"/x"}]}}"#,
            "fw_cfg opt/keel/config: $.storage.links.0.path: /etc/a is not a directory (it is created by fw_cfg opt/keel/config: $.storage.files.0)",
        ),
        ("#cloud-config\nusers: {a: 1}\n", "fw_cfg opt/keel/config: users: expected a list, found a mapping"),
    ];
    for (cfg, want) in cases {
        let env = env();
        fw_cfg(&env, "opt/keel/config", cfg);
        let before = snapshot(&env.fb.sysroot);
        let got = first_boot(&env.fb, &Recording::default())
            .expect_err(cfg)
            .to_string();
        assert_eq!(&got, want);
        assert_eq!(snapshot(&env.fb.sysroot), before, "ROOT changed for {cfg}");
        assert!(!env.fb.run_root.join("systemd").exists());
    }
}

#[test]
fn bad_oem_base_config_names_the_file() {
    let env = env();
    put(
        &env.fb.oem_dir,
        "config.ign",
        r#"{"ignition":{"version":"3.4.0"},"storage":{"raid":[{"name":"md0"}]}}"#,
    );
    let err = first_boot(&env.fb, &Recording::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "OEM base config {}: $.storage.raid: not supported by keel",
            env.fb.oem_dir.join("config.ign").display()
        )
    );
}

#[test]
fn validate_offline() {
    let (plan, f) = crate::validate(
        b"#cloud-config\nhostname: a\n",
        "user-data",
        crate::Base::None,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(f, crate::Format::CloudConfig);
    assert!(plan.steps.is_empty());
    let e = crate::validate(
        b"{\"ignition\":{\"version\":\"3.4.0\"},\"x\":1}",
        "c.ign",
        crate::Base::None,
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "c.ign: $.x: unknown field");
    assert_eq!(
        crate::validate(b"", "empty", crate::Base::None, &Default::default())
            .unwrap_err()
            .to_string(),
        "empty: line 1: empty config"
    );
    // against a sysroot, the planner's checks run too
    let env = env();
    assert!(crate::validate(
        ign_fixture().as_bytes(),
        "c.ign",
        crate::Base::None,
        &Default::default()
    )
    .is_ok());
    let e = crate::validate(
        ign_fixture().as_bytes(),
        "c.ign",
        crate::Base::Sysroot(&env.fb.sysroot),
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "c.ign: $.storage.files.1.path: /lib/modules-load.d/x.conf (as /usr/lib/modules-load.d/x.conf, through a symlink) is on the read-only USR partition, not on ROOT"
    );
}

#[test]
fn owner_names_resolve_through_sysusers_d() {
    // core (and its group) exist only as a sysusers.d declaration: created
    // by systemd-sysusers after provisioning, so files get 500:500 by number
    // and no passwd entry is written.
    let env = env();
    fw_cfg(
        &env,
        "opt/keel/config",
        r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[
            {"path":"/etc/f","user":{"name":"core"},"group":{"name":"core"},"contents":{"source":"data:,x"}},
            {"path":"/etc/g","group":{"name":"docker"},"contents":{"source":"data:,y"}}]}}"#,
    );
    let sys = Recording::default();
    first_boot(&env.fb, &sys).unwrap();
    let root = &env.fb.sysroot;
    let chowns: Vec<Call> = sys.calls();
    assert!(
        chowns.contains(&Call::Chown(root.join("etc/.f.keel-tmp"), 500, 500)),
        "{chowns:?}"
    );
    assert!(
        chowns.contains(&Call::Chown(root.join("etc/.g.keel-tmp"), 0, 233)),
        "{chowns:?}"
    );
    assert!(!fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .contains("core"));
}

/// Enabling reads unit files with keel-unit: an instance is enabled from
/// its template's file under its own name, a continuation with a comment
/// line inside keeps both targets, a quoted word is one target, and an
/// Alias= of a template is linked for the instance.
#[test]
fn enabling_templates_continuations_and_aliases() {
    let env = env();
    let root = &env.fb.sysroot;
    put(
        root,
        "usr/lib/systemd/system/serial@.service",
        "[Service]\nExecStart=/sbin/agetty %I\n[Install]\nWantedBy=getty.target \\\n# a comment inside\n  'multi-user.target'\nAlias=console@.service\n",
    );
    let cfg = r#"{"ignition":{"version":"3.4.0"},
      "systemd":{"units":[{"name":"serial@ttyS0.service","enabled":true}]}}"#;
    let (c, _) = crate::ignition::parse(cfg.as_bytes()).unwrap();
    let plan = crate::plan::plan(&c, root).unwrap();
    let links: Vec<String> = plan
        .render()
        .lines()
        .filter(|l| l.starts_with("symlink "))
        .map(str::to_string)
        .collect();
    assert_eq!(
        links,
        [
            "symlink /etc/systemd/system/getty.target.wants/serial@ttyS0.service -> /usr/lib/systemd/system/serial@.service 0:0",
            "symlink /etc/systemd/system/multi-user.target.wants/serial@ttyS0.service -> /usr/lib/systemd/system/serial@.service 0:0",
            "symlink /etc/systemd/system/console@ttyS0.service -> /usr/lib/systemd/system/serial@.service 0:0",
        ]
    );
}

#[test]
fn plan_edge_cases() {
    let env = env();
    let root = &env.fb.sysroot;
    put(root, "etc/gshadow", "root:*::\nsudo:*::\n");
    put(root, "etc/existing-file", "old");
    fs::create_dir_all(root.join("srv/data")).unwrap();
    put(root, "etc/shared", "same");
    symlink("/usr/share/zoneinfo/UTC", root.join("etc/localtime")).unwrap();
    put(
        root,
        "usr/lib/systemd/system/getty@.service",
        "[Service]\nExecStart=/sbin/agetty %I\n[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
    );
    fs::create_dir_all(root.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    symlink(
        "/usr/lib/systemd/system/old.service",
        root.join("etc/systemd/system/multi-user.target.wants/old.service"),
    )
    .unwrap();
    symlink("/dev/null", root.join("etc/systemd/system/masked.service")).unwrap();
    let cfg = r#"{"ignition":{"version":"3.4.0"},
      "passwd":{"users":[{"name":"bob","system":true,"groups":["sudo","docker"],"noCreateHome":true}],
                "groups":[{"name":"ops","gid":4000},{"name":"sys2","system":true}]},
      "storage":{
        "directories":[{"path":"/srv/data","mode":488,"group":{"name":"ops"}},
                       {"path":"/etc/existing-file","overwrite":true}],
        "files":[{"path":"/etc/shared","contents":{"source":"data:,same"}},
                 {"path":"/srv/data/big","contents":{"source":"data:;base64,H4sIAAAAAAAAA8tIzcnJBwCGphA2BQAAAA==","compression":"gzip"}}],
        "links":[{"path":"/etc/localtime","target":"/usr/share/zoneinfo/UTC"},
                 {"path":"/srv/hard","target":"/srv/data/big","hard":true}]},
      "systemd":{"units":[{"name":"getty@.service","enabled":true},
                          {"name":"old.service","enabled":false},
                          {"name":"masked.service","mask":false}]}}"#;
    let (c, _) = crate::ignition::parse(cfg.as_bytes()).unwrap();
    let plan = crate::plan::plan(&c, root).unwrap();
    let text: String = plan
        .render()
        .lines()
        .filter(|l| !l.starts_with("write /etc/"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        text,
        "remove /etc/existing-file\n\
         mkdir /etc/existing-file 0755 0:0\n\
         setattrs /srv/data 0750 -:4000\n\
         write /srv/data/big 0644 0:0 5 bytes\n\
         hardlink /srv/hard -> /srv/data/big\n\
         mkdir /etc/systemd/system/getty.target.wants 0755 0:0\n\
         symlink /etc/systemd/system/getty.target.wants/getty@tty1.service -> /usr/lib/systemd/system/getty@.service 0:0\n\
         remove /etc/systemd/system/multi-user.target.wants/old.service\n\
         remove /etc/systemd/system/masked.service\n"
    );
    let ws = |p: &str| {
        plan.steps
            .iter()
            .find(|s| s.action.path() == p)
            .map(|s| match &s.action {
                crate::plan::Action::Write { contents, .. } => {
                    String::from_utf8_lossy(contents).to_string()
                }
                _ => String::new(),
            })
    };
    // /etc/shared has the same contents already: rewritten, not an error;
    // the existing symlink with the same target is left alone
    assert_eq!(ws("/etc/shared").as_deref(), Some("same"));
    assert!(!plan
        .steps
        .iter()
        .any(|s| s.action.path() == "/etc/localtime"));
    // system user: uid from the top of 100..999, its user group the next
    // free system gid (999 went to the system group sys2);
    // groups from the config (fixed and system), docker from sysusers.d
    assert!(ws("/etc/passwd")
        .unwrap()
        .ends_with("bob:x:999:998::/home/bob:/bin/bash\n"));
    assert_eq!(
        ws("/etc/group").unwrap(),
        "root:x:0:\ndaemon:x:1:\nsudo:x:27:bob\nops:x:4000:\nsys2:x:999:\nbob:x:998:\ndocker:x:233:bob\n"
    );
    assert_eq!(
        ws("/etc/gshadow").unwrap(),
        "root:*::\nsudo:*::bob\nops:!::\nsys2:!::\nbob:!::\ndocker:!::bob\n"
    );
    // noCreateHome and no keys: no home directory
    assert!(!plan.steps.iter().any(|s| s.action.path() == "/home/bob"));
}

#[test]
fn io_failure_while_applying_leaves_no_trace() {
    let env = env();
    let cfg = ign_fixture().replace(
        r#",
                       {"path":"/lib/modules-load.d/x.conf","overwrite":false}"#,
        "",
    );
    fw_cfg(&env, "opt/keel/config", &cfg);
    let before = snapshot(&env.fb.sysroot);
    // the unit file is one of the last steps: accounts, homes, files and
    // directories are staged by then
    let sys = Recording {
        fail_chown: Some(".hello.service.keel-tmp".into()),
        ..Default::default()
    };
    let err = first_boot(&env.fb, &sys).unwrap_err().to_string();
    let tmp = env
        .fb
        .sysroot
        .join("etc/systemd/system/.hello.service.keel-tmp");
    assert_eq!(
        err,
        format!(
            "applying the config: writing {}: injected failure",
            tmp.display()
        )
    );
    assert!(sys.calls().len() > 5, "the failure came late");
    assert_eq!(snapshot(&env.fb.sysroot), before);
}

#[test]
fn cloud_config_sudo_and_locked_password() {
    let env = env();
    fw_cfg(
        &env,
        "opt/keel/config",
        "#cloud-config\nusers:\n  - name: ops\n    passwd: \"$6$s$h\"\n    lock_passwd: true\n    sudo: ['ALL=(ALL) NOPASSWD:ALL', 'ALL=(root) /bin/true']\n",
    );
    let sys = Recording::default();
    first_boot(&env.fb, &sys).unwrap();
    let root = &env.fb.sysroot;
    let sudoers = root.join("etc/sudoers.d/keel-provision-ops");
    assert_eq!(
        fs::read_to_string(&sudoers).unwrap(),
        "ops ALL=(ALL) NOPASSWD:ALL\nops ALL=(root) /bin/true\n"
    );
    assert_eq!(mode(&sudoers), 0o440);
    assert!(fs::read_to_string(root.join("etc/shadow"))
        .unwrap()
        .contains("\nops:!$6$s$h::0:99999:7:::\n"));
}

#[test]
fn butane_from_fw_cfg_at_first_boot() {
    let env = env();
    fw_cfg(
        &env,
        "opt/org.flatcar-linux/config",
        "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n    - path: /etc/hostname\n      mode: 0644\n      contents:\n        inline: bu-node\n",
    );
    let Outcome::Applied(r) = first_boot(&env.fb, &Recording::default()).unwrap() else {
        panic!("not applied")
    };
    assert_eq!(r.format, "butane flatcar 1.0.0 → ignition 3.3.0");
    assert_eq!(
        fs::read_to_string(env.fb.sysroot.join("etc/hostname")).unwrap(),
        "bu-node"
    );
    // local: contents have no files directory at boot: refused, nothing written
    let env = self::env();
    fw_cfg(
        &env,
        "opt/keel/config",
        "variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /etc/a\n      contents:\n        inline: a\n    - path: /etc/b\n      contents:\n        local: b.txt\n",
    );
    let e = first_boot(&env.fb, &Recording::default()).unwrap_err();
    assert!(
        e.to_string().starts_with("fw_cfg opt/keel/config: storage.files[1].contents.local (line 10): local contents refer to files beside the config"),
        "{e}"
    );
    assert!(!env.fb.sysroot.join("etc/a").exists());
    assert!(!env
        .fb
        .sysroot
        .join(crate::MARKER.trim_start_matches('/'))
        .exists());
}

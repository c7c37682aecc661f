//! Privileged tests (root): real config drives made with the tools users
//! make them with (genisoimage, mkfs.vfat + mcopy), attached to loop
//! devices, found by reading their labels from the device. Where the
//! running kernel can mount iso9660/vfat, the whole first boot runs with
//! the real `System` (mount, read, unmount, chown to uid 500).
//!
//! Run by `./run test privileged`:
//! `cargo test -p keel-provision --test privileged -- --test-threads=1`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_provision::sources;
use keel_provision::sys::Real;
use keel_provision::{first_boot, FirstBoot, Outcome};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q priv@keel";

/// A loop device, detached on drop (also when the test fails).
struct Loop(PathBuf);

impl Loop {
    fn attach(image: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(image)
            .output()
            .expect("running losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().to_string()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn user_data() -> String {
    format!("#cloud-config\nhostname: priv-host\nssh_authorized_keys:\n  - {KEY}\nwrite_files:\n  - path: /home/core/note\n    owner: core:core\n    permissions: '0600'\n    content: from the drive\n")
}

/// A NoCloud ISO exactly as the seeds build it.
fn cidata_iso(dir: &Path) -> PathBuf {
    let src = dir.join("iso-src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("user-data"), user_data()).unwrap();
    fs::write(
        src.join("meta-data"),
        "instance-id: priv-1\nlocal-hostname: from-meta\n",
    )
    .unwrap();
    let iso = dir.join("cidata.iso");
    run(Command::new("genisoimage")
        .args(["-quiet", "-output"])
        .arg(&iso)
        .args(["-volid", "cidata", "-joliet", "-rock"])
        .arg(src.join("user-data"))
        .arg(src.join("meta-data")));
    iso
}

/// A vfat config-2 drive (OpenStack layout).
fn config2_vfat(dir: &Path) -> PathBuf {
    let img = dir.join("config2.img");
    fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    run(Command::new("mkfs.vfat").args(["-n", "CONFIG-2"]).arg(&img));
    let ud = dir.join("user_data");
    fs::write(&ud, user_data()).unwrap();
    for d in ["::openstack", "::openstack/latest"] {
        run(Command::new("mmd").arg("-i").arg(&img).arg(d));
    }
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&img)
        .arg(&ud)
        .arg("::openstack/latest/user_data"));
    img
}

/// A /sys/class/block stand-in listing only our loop device, so the test
/// never reads the build machine's disks.
fn block_dir(dir: &Path, lo: &Loop) -> PathBuf {
    let b = dir.join("sys-class-block");
    fs::create_dir_all(b.join(lo.name())).unwrap();
    b
}

fn kernel_has(fs_name: &str) -> bool {
    fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some(fs_name))
    })
}

fn sysroot(dir: &Path) -> PathBuf {
    let root = dir.join("sysroot");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/lib/sysusers.d")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    fs::write(
        root.join("usr/lib/sysusers.d/keel.conf"),
        "u core 500 \"Core user\" /home/core /bin/bash\n",
    )
    .unwrap();
    root
}

#[test]
fn genisoimage_cidata_label_read_from_the_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let lo = Loop::attach(&cidata_iso(dir.path()));
    let mut buf = Vec::new();
    use std::io::Read;
    fs::File::open(&lo.0)
        .unwrap()
        .take(sources::PROBE_LEN as u64)
        .read_to_end(&mut buf)
        .unwrap();
    assert_eq!(
        sources::probe(&buf),
        Some(sources::Probe {
            fstype: "iso9660",
            label: "cidata".into()
        })
    );
}

#[test]
fn mkfs_vfat_config2_label_read_from_the_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let lo = Loop::attach(&config2_vfat(dir.path()));
    let mut buf = Vec::new();
    use std::io::Read;
    fs::File::open(&lo.0)
        .unwrap()
        .take(sources::PROBE_LEN as u64)
        .read_to_end(&mut buf)
        .unwrap();
    assert_eq!(
        sources::probe(&buf),
        Some(sources::Probe {
            fstype: "vfat",
            label: "CONFIG-2".into()
        })
    );
}

fn first_boot_from(image: fn(&Path) -> PathBuf, fs_name: &str, want_source: &str) {
    if !kernel_has(fs_name) {
        eprintln!("skipped: this kernel cannot mount {fs_name} (not in /proc/filesystems)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lo = Loop::attach(&image(dir.path()));
    let root = sysroot(dir.path());
    let fb = FirstBoot {
        sysroot: root.clone(),
        cmdline: "quiet".into(),
        fw_cfg_root: dir.path().join("no-fw-cfg"),
        block_dir: block_dir(dir.path(), &lo),
        dev_dir: "/dev".into(),
        oem_dir: dir.path().join("no-oem"),
        run_root: dir.path().join("run"),
    };
    let outcome = first_boot(&fb, &Real);
    let mp = fb.run_root.join("keel/config-drive");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(mp.to_str().unwrap()),
        "config drive left mounted"
    );
    let Outcome::Applied(r) = outcome.unwrap() else {
        panic!("not applied")
    };
    assert_eq!(
        r.source,
        format!("config drive {} {want_source}", lo.0.display())
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "priv-host\n"
    );
    let keys = root.join("home/core/.ssh/authorized_keys");
    assert_eq!(fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
    let m = fs::metadata(&keys).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (500, 500, 0o600));
    let m = fs::metadata(root.join("home/core/.ssh")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (500, 500, 0o700));
    let note = root.join("home/core/note");
    assert_eq!(fs::read_to_string(&note).unwrap(), "from the drive");
    let m = fs::metadata(&note).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (500, 500, 0o600));
}

#[test]
fn first_boot_from_a_cidata_iso() {
    first_boot_from(cidata_iso, "iso9660", "(cidata) user-data");
}

#[test]
fn first_boot_from_a_config2_vfat_drive() {
    first_boot_from(
        config2_vfat,
        "vfat",
        "(config-2) openstack/latest/user_data",
    );
}

#[test]
fn real_chown_applies_numeric_ids() {
    // The real System on a temp sysroot, from a data: URL on the command
    // line: ownership lands as uid/gid 500 without a core entry in passwd.
    let dir = tempfile::tempdir().unwrap();
    let root = sysroot(dir.path());
    let ign = r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/home/core/f","mode":384,"user":{"name":"core"},"group":{"id":500},"contents":{"source":"data:,x"}}]}}"#;
    let url: String = ign.bytes().map(|b| format!("%{b:02X}")).collect();
    let fb = FirstBoot {
        sysroot: root.clone(),
        cmdline: format!("keel.config_url=data:,{url}"),
        fw_cfg_root: dir.path().join("no-fw-cfg"),
        block_dir: dir.path().join("no-block"),
        dev_dir: "/dev".into(),
        oem_dir: dir.path().join("no-oem"),
        run_root: dir.path().join("run"),
    };
    assert!(matches!(
        first_boot(&fb, &Real).unwrap(),
        Outcome::Applied(_)
    ));
    let m = fs::metadata(root.join("home/core/f")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (500, 500, 0o600));
    assert!(root.join("var/lib/keel/provisioned").is_file());
}

#[path = "conformance.rs"]
mod conformance;

/// The conformance corpus again, applied with the real `System`: files end
/// up owned as the `owner` lines say (uid/gid from the image's passwd,
/// sysusers and the config's own accounts).
#[test]
fn conformance_corpus_with_real_chown() {
    let mut failures = Vec::new();
    for case in conformance::cases() {
        let bad = conformance::run_case(&case, &Real, true);
        if !bad.is_empty() {
            failures.push(format!("{}:\n  {}", case.display(), bad.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

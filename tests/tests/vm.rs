//! VM tests: boot the built image under QEMU and check what a user would.
//! Run with `./run test vm` (needs the image from `./run image`).

use std::time::Duration;

use anyhow::{ensure, Result};
use keel_tests::{fw_cfg, keypair, BootOptions, Image, Vm};

const BOOT: Duration = Duration::from_secs(300);

fn image() -> Image {
    Image::from_env().expect("the image is built (./run image)")
}

/// The foundation: multi-user and SSH; /usr read-only EROFS on dm-verity;
/// slot A; os-release says Keel; every Keel binary static. The same boot
/// checks the QEMU OEM platform (issue 5): fw_cfg `opt/keel/metadata` with
/// an SSH key and a hostname → SSH as core with that key works without any
/// Ignition config, and the hostname is set.
#[test]
fn boots_to_multi_user_with_verified_usr() -> Result<()> {
    let img = image();
    let dir = tempfile::tempdir()?;
    let (key, public) = keypair(dir.path(), "meta")?;
    let meta = dir.path().join("metadata");
    std::fs::write(
        &meta,
        format!("KEEL_HOSTNAME=keel-meta\nKEEL_SSH_KEYS={public}\n"),
    )?;
    let opts = BootOptions {
        qemu_args: fw_cfg("opt/keel/metadata", &meta),
        ssh_key: Some(key),
        ..Default::default()
    };
    let mut vm = Vm::boot("boots_to_multi_user", &img, opts)?;
    let state = vm.wait_ready(BOOT)?;
    ensure!(
        state == "running",
        "system state is {state:?}: {}",
        vm.ssh_ok("systemctl --failed --no-legend || true")?
    );
    ensure!(
        vm.ssh_ok("hostname")?.trim() == "keel-meta",
        "hostname not from metadata"
    );
    let facts = vm.ssh_ok("cat /run/keel/metadata")?;
    ensure!(
        facts.contains("KEEL_HOSTNAME=keel-meta"),
        "metadata: {facts}"
    );
    let st = vm.ssh_ok("keel-oem status")?;
    ensure!(st.contains("30-ssh-keys"), "status: {st}");

    let mnt = vm.ssh_ok("findmnt -n -o SOURCE,FSTYPE,OPTIONS /usr")?;
    let f: Vec<&str> = mnt.split_whitespace().collect();
    ensure!(f.len() == 3, "findmnt /usr: {mnt:?}");
    ensure!(f[1] == "erofs", "/usr is {} not erofs", f[1]);
    ensure!(
        f[2].split(',').any(|o| o == "ro"),
        "/usr not read-only: {}",
        f[2]
    );
    let dm = f[0].trim_start_matches("/dev/");
    ensure!(
        dm.starts_with("dm-"),
        "/usr is not on a device-mapper device: {}",
        f[0]
    );
    let table = vm.ssh_ok(&format!(
        "sudo cat /sys/block/{dm}/dm/name; ls /sys/block/{dm}/slaves"
    ))?;
    ensure!(table.lines().next() == Some("usr"), "dm name: {table}");
    ensure!(
        table.contains("vda2") && table.contains("vda3"),
        "dm-verity over USR-A + USR-A-VERITY: {table}"
    );
    // The kernel's own view of the mapping: a read-only verity target with
    // the root hash from the kernel command line.
    let target = vm.ssh_ok("sudo dmsetup table usr")?;
    ensure!(target.contains(" verity 1 "), "dm table of usr: {target}");
    let hash = img.manifest["usr_root_hash"].as_str().unwrap_or_default();
    ensure!(
        !hash.is_empty() && target.contains(hash),
        "verity table lacks root hash {hash}: {target}"
    );
    let ro = vm.ssh_ok(&format!("cat /sys/block/{dm}/ro"))?;
    ensure!(ro.trim() == "1", "dm device is writable");
    let wr = vm.ssh("sudo touch /usr/keel-write-test")?;
    ensure!(!wr.status.success(), "root could write to /usr");

    // podman-restart stays enabled but is skipped while podman has never
    // stored a container (it cost seconds of CPU at first boot).
    let pr = vm.ssh_ok(
        "systemctl is-enabled podman-restart.service; systemctl show -p ConditionResult --value podman-restart.service",
    )?;
    ensure!(
        pr.split_whitespace().collect::<Vec<_>>() == ["enabled", "no"],
        "podman-restart.service enabled and skipped: {pr:?}"
    );

    let boot: serde_json::Value = serde_json::from_str(&vm.ssh_ok("cat /run/keel/boot.json")?)?;
    ensure!(boot["slot"] == "A", "booted slot: {}", boot["slot"]);
    ensure!(
        boot["first_boot"] == true,
        "first boot not detected: {boot}"
    );
    ensure!(
        boot["usr_root_hash"] == img.manifest["usr_root_hash"],
        "root hash mismatch: {boot}"
    );

    // Issue 21: the image applied the presets, so systemd saw no first boot
    // of its own (no preset-all), yet the machine has its own id, kept in
    // the /etc overlay's upper layer, and ConditionFirstBoot= holds on
    // Keel's first boot (keel-first-boot-generator's flag).
    let fb = vm.ssh_ok(
        "cat /etc/machine-id; sudo cat /.keel/etc-upper/machine-id; \
         test -e /run/systemd/first-boot && echo flag; \
         sudo journalctl -b -o cat _PID=1 | grep -c -e 'Populated /etc with preset' -e 'Detected first boot' || true",
    )?;
    let l: Vec<&str> = fb.lines().map(str::trim).collect();
    ensure!(
        l.len() == 4
            && l[0].len() == 32
            && l[0].bytes().all(|b| b.is_ascii_hexdigit())
            && l[1] == l[0]
            && l[2] == "flag"
            && l[3] == "0",
        "machine-id, its copy on ROOT, the first-boot flag, systemd's own first-boot lines: {fb:?}"
    );
    let fbs = vm.ssh_ok("systemctl is-enabled systemd-firstboot.service || true")?;
    ensure!(fbs.trim() == "masked", "systemd-firstboot.service: {fbs}");

    let os = vm.ssh_ok(". /etc/os-release; echo \"$ID $NAME\"")?;
    ensure!(os.trim() == "keel Keel", "os-release: {os}");

    // Every Keel binary in /usr is static: copy each back and check its ELF.
    let bins: Vec<String> = img.manifest["sizes"]
        .as_object()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("bin/").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ensure!(!bins.is_empty(), "image.json lists no binaries");
    for b in bins {
        let out = vm.ssh(&format!("cat \"$(command -v {b} || echo /usr/bin/{b})\""))?;
        ensure!(out.status.success(), "{b} not found in the image");
        let data = out.stdout;
        ensure!(data.starts_with(b"\x7fELF"), "{b} is not an ELF file");
        let phoff = u64::from_le_bytes(data[32..40].try_into()?) as usize;
        let phentsize = u16::from_le_bytes([data[54], data[55]]) as usize;
        let phnum = u16::from_le_bytes([data[56], data[57]]) as usize;
        for i in 0..phnum {
            let o = phoff + i * phentsize;
            let t = u32::from_le_bytes(data[o..o + 4].try_into()?);
            ensure!(t != 3, "{b} has a PT_INTERP header: dynamically linked");
        }
    }
    vm.finish()?;
    Ok(())
}

/// A flipped byte in USR-A: dm-verity refuses the block, keel-init names the
/// verity failure and halts; the corrupted data is never mounted.
#[test]
fn corrupted_usr_is_refused_with_a_verity_error() -> Result<()> {
    let img = image();
    let dir = tempfile::tempdir()?;
    let disk = dir.path().join("disk.qcow2");
    keel_tests::overlay(&img.path("qcow2")?, &disk)?;
    let off = keel_tests::partition_offset(&img.path("raw")?, "USR-A")?;
    // The first 4 KiB block of USR-A holds the EROFS superblock.
    let out = std::process::Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            &format!("write -P 0x5a {} 512", off + 1024),
        ])
        .arg(&disk)
        .output()?;
    ensure!(
        out.status.success(),
        "qemu-io: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut vm = Vm::boot(
        "corrupted_usr",
        &img,
        BootOptions {
            disk: Some(disk),
            ..Default::default()
        },
    )?;
    keel_tests::expect_emergency(
        &mut vm,
        &[
            "device-mapper: verity",
            "is corrupted",
            "USR-A",
            "no USR slot could be verified and mounted",
        ],
    )?;
    vm.kill();
    vm.finish_allowing(&["keel-init emergency", "dm-verity error"])?;
    Ok(())
}

/// A disk without a ROOT partition: the message names the label.
#[test]
fn missing_partition_is_named() -> Result<()> {
    let img = image();
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("disk.img");
    keel_tests::raw_image_copy(&img, &raw)?;
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&raw)?;
        let (mut gpt, _) = keel_gpt::Gpt::read(&f, 512)?;
        gpt.partitions.retain(|p| p.name != "ROOT");
        gpt.write(&mut f)?;
    }
    let mut vm = Vm::boot(
        "missing_partition",
        &img,
        BootOptions {
            disk: Some(raw),
            ..Default::default()
        },
    )?;
    keel_tests::expect_emergency(
        &mut vm,
        &["mounting ROOT: /dev/vda: no partition labelled ROOT on /dev/vda"],
    )?;
    vm.kill();
    vm.finish_allowing(&["keel-init emergency"])?;
    Ok(())
}

/// No root hash on the kernel command line: USR is not mounted, and the
/// message says why.
#[test]
fn missing_root_hash_refuses_usr() -> Result<()> {
    let img = image();
    let cmdline: Vec<String> = img
        .cmdline()
        .split_whitespace()
        .filter(|w| !w.starts_with("keel.usrhash"))
        .map(str::to_string)
        .collect();
    let mut vm = Vm::boot(
        "missing_root_hash",
        &img,
        BootOptions {
            cmdline: Some(cmdline.join(" ")),
            ..Default::default()
        },
    )?;
    keel_tests::expect_emergency(
        &mut vm,
        &["no root hash for USR-A on the kernel command line (keel.usrhash.a=): refusing to mount unverified data"],
    )?;
    vm.kill();
    vm.finish_allowing(&["keel-init emergency"])?;
    Ok(())
}

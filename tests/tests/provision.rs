//! VM tests of first-boot provisioning (Ignition and cloud-config).
//! Run with `./run test vm`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use keel_tests::{expect_emergency, fw_cfg, keypair, BootOptions, Image, Vm};

const BOOT: Duration = Duration::from_secs(300);

fn image() -> Image {
    Image::from_env().expect("the image is built (./run image)")
}

fn ignition(pubkey: &str) -> String {
    serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [pubkey]}]},
        "storage": {"files": [{
            "path": "/home/core/secret.txt",
            "mode": 0o600,
            "overwrite": true,
            "user": {"name": "core"},
            "group": {"name": "core"},
            "contents": {"source": "data:,hello%20keel"}
        }]},
        "systemd": {"units": [{
            "name": "keel-hello.service",
            "enabled": true,
            "contents": "[Unit]\nDescription=Provisioned by Ignition\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo provisioned > /run/keel-hello'\n[Install]\nWantedBy=multi-user.target\n"
        }]}
    })
    .to_string()
}

/// fw_cfg Ignition: SSH key, an enabled unit, a 0600 file owned by core; the
/// second boot re-applies nothing; keel.first_boot=1 re-applies.
#[test]
fn ignition_from_fw_cfg_applies_once() -> Result<()> {
    let img = image();
    let dir = tempfile::tempdir()?;
    let (key, public) = keypair(dir.path(), "ign")?;
    let cfg = dir.path().join("config.ign");
    fs::write(&cfg, ignition(&public))?;
    let disk = dir.path().join("disk.qcow2");
    keel_tests::overlay(&img.path("qcow2")?, &disk)?;
    let opts = BootOptions {
        disk: Some(disk.clone()),
        qemu_args: fw_cfg("opt/org.flatcar-linux/config", &cfg),
        ssh_key: Some(key),
        ..Default::default()
    };

    let mut vm = Vm::boot("ignition_first", &img, opts.clone())?;
    let state = vm.wait_ready(BOOT)?;
    ensure!(state == "running", "system {state}");
    ensure!(
        vm.ssh_ok("systemctl is-active keel-hello.service")?.trim() == "active",
        "unit not active"
    );
    ensure!(
        vm.ssh_ok("cat /run/keel-hello")?.trim() == "provisioned",
        "unit did not run"
    );
    let st = vm.ssh_ok("stat -c '%a %U %G' /home/core/secret.txt; cat /home/core/secret.txt")?;
    ensure!(st == "600 core core\nhello keel", "file: {st:?}");
    let show = vm.ssh_ok("keel-provision show")?;
    ensure!(
        show.contains("fw_cfg opt/org.flatcar-linux/config"),
        "show: {show}"
    );
    let first = vm.ssh_ok("sudo cat /etc/.keel-provision-result.json")?;
    // Password login over SSH stays off.
    let pw = vm.ssh_ok(
        "sudo sshd -T | grep -E '^(passwordauthentication|kbdinteractiveauthentication) '",
    )?;
    ensure!(pw.lines().all(|l| l.ends_with(" no")), "sshd: {pw}");
    vm.finish()?;

    // Second boot: nothing re-applied.
    let mut vm = Vm::reboot_disk("ignition_second", &img, &disk, opts.clone())?;
    vm.wait_ready(BOOT)?;
    let boot: serde_json::Value = serde_json::from_str(&vm.ssh_ok("cat /run/keel/boot.json")?)?;
    ensure!(
        boot["first_boot"] == false,
        "second boot seen as first: {boot}"
    );
    ensure!(
        vm.ssh_ok("sudo cat /etc/.keel-provision-result.json")? == first,
        "result changed on the second boot"
    );
    vm.ssh_ok("echo changed > /home/core/secret.txt")?;
    vm.finish()?;

    // keel.first_boot=1: applied again (the file gets its config contents back).
    let mut vm = Vm::reboot_disk(
        "ignition_forced",
        &img,
        &disk,
        BootOptions {
            extra_cmdline: "keel.first_boot=1".into(),
            ..opts
        },
    )?;
    vm.wait_ready(BOOT)?;
    let again = vm.ssh_ok("sudo cat /etc/.keel-provision-result.json")?;
    ensure!(again != first, "keel.first_boot=1 did not re-apply");
    ensure!(
        vm.ssh_ok("cat /home/core/secret.txt")?.trim() == "hello keel",
        "file not re-applied"
    );
    vm.finish()?;
    Ok(())
}

/// A `cidata` ISO (genisoimage, as cloud-init users make them) with
/// ssh_authorized_keys and hostname.
#[test]
fn cloud_config_from_cidata_iso() -> Result<()> {
    let img = image();
    let dir = tempfile::tempdir()?;
    let (key, public) = keypair(dir.path(), "cc")?;
    let seed = dir.path().join("seed");
    fs::create_dir(&seed)?;
    fs::write(
        seed.join("user-data"),
        format!("#cloud-config\nhostname: keel-cloud\nssh_authorized_keys:\n  - {public}\n"),
    )?;
    fs::write(
        seed.join("meta-data"),
        "instance-id: keel-test\nlocal-hostname: from-meta\n",
    )?;
    let iso = dir.path().join("seed.iso");
    let out = Command::new("genisoimage")
        .args(["-quiet", "-output"])
        .arg(&iso)
        .args(["-volid", "cidata", "-joliet", "-rock"])
        .arg(seed.join("user-data"))
        .arg(seed.join("meta-data"))
        .output()?;
    ensure!(
        out.status.success(),
        "genisoimage: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut vm = Vm::boot(
        "cloud_config_cidata",
        &img,
        BootOptions {
            qemu_args: vec![
                "-drive".into(),
                format!("file={},if=virtio,format=raw,readonly=on", iso.display()),
            ],
            ssh_key: Some(key),
            ..Default::default()
        },
    )?;
    vm.wait_ready(BOOT)?;
    ensure!(
        vm.ssh_ok("hostname")?.trim() == "keel-cloud",
        "hostname not set"
    );
    vm.finish()?;
    Ok(())
}

fn invalid(name: &str, config: &str, message: &str, dir: &Path) -> Result<std::path::PathBuf> {
    let img = image();
    let cfg = dir.join(format!("{name}.ign"));
    fs::write(&cfg, config)?;
    let disk = dir.join(format!("{name}.qcow2"));
    keel_tests::overlay(&img.path("qcow2")?, &disk)?;
    let mut vm = Vm::boot(
        name,
        &img,
        BootOptions {
            disk: Some(disk.clone()),
            qemu_args: fw_cfg("opt/keel/config", &cfg),
            ..Default::default()
        },
    )?;
    expect_emergency(&mut vm, &["first-boot provisioning", message])?;
    vm.kill();
    vm.finish_allowing(&["keel-init emergency"])?;
    Ok(disk)
}

/// An invalid config stops the boot with a message naming the problem
/// (source, JSON path, offset), and ROOT carries no trace of it — not even
/// of its first, valid file. One boot: the other classes of bad input
/// (spec version, relative paths, …) and their messages are unit tests of
/// keel-provision (`parse_tests.rs`, `boot_tests.rs`), which run the same
/// code that stops this boot.
#[test]
fn invalid_configs_stop_the_boot_and_leave_no_trace() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = invalid(
        "invalid_base64",
        r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/keel-trace","contents":{"source":"data:,fine"}},{"path":"/etc/bad","contents":{"source":"data:;base64,@@@"}}]}}"#,
        "$.storage.files.1.contents.source: invalid base64 at offset 13: invalid byte '@'",
        dir.path(),
    )?;
    // Boot the same disk without a config: nothing of the bad one is there.
    let img = image();
    let mut vm = Vm::reboot_disk("invalid_then_clean", &img, &disk, BootOptions::default())?;
    vm.wait_ready(BOOT)?;
    let trace = vm.ssh_ok("ls /etc/keel-trace /etc/bad 2>&1 || true")?;
    ensure!(
        trace.matches("No such file").count() == 2,
        "traces of the invalid config: {trace}"
    );
    let show = vm.ssh_ok("keel-provision show")?;
    ensure!(
        show.contains("none"),
        "provisioning result after a clean boot: {show}"
    );
    vm.finish()?;
    Ok(())
}

/// The CoreOS-era way to move SSH: a Butane config (read directly at first
/// boot, no transpiler) with a drop-in for `sshd.socket` that resets
/// `ListenStream=` and listens on 2222. A check unit from the same config
/// reports on the console whether 2222 answers with an SSH banner and 22 is
/// closed. Its own boot: the harness's SSH goes to guest port 22, which
/// this config closes.
#[test]
fn butane_dropin_moves_ssh_to_port_2222() -> Result<()> {
    let img = image();
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("ssh-port.bu");
    fs::write(
        &cfg,
        r#"variant: flatcar
version: 1.0.0
systemd:
  units:
    - name: sshd.socket
      dropins:
        - name: 10-sshd-port.conf
          contents: |
            [Socket]
            ListenStream=
            ListenStream=2222
    - name: keel-ssh-port-check.service
      enabled: true
      contents: |
        [Unit]
        Description=Check that SSH listens on 2222 only
        Requires=sshd.socket
        After=sshd.socket
        [Service]
        Type=oneshot
        StandardOutput=journal+console
        ExecStart=/bin/bash -c 'ss -Hltn; if ss -Hltn "sport = :2222" | grep -q . && ! ss -Hltn "sport = :22" | grep -q . && (exec 3<>/dev/tcp/127.0.0.1/2222; head -c 8 <&3) | grep -q SSH-2.0; then echo KEEL-SSH-PORT-OK; else echo KEEL-SSH-PORT-BAD; fi'
        [Install]
        WantedBy=multi-user.target
"#,
    )?;
    let mut vm = Vm::boot(
        "butane_ssh_port_2222",
        &img,
        BootOptions {
            qemu_args: fw_cfg("opt/org.flatcar-linux/config", &cfg),
            ..Default::default()
        },
    )?;
    vm.wait_console("KEEL-SSH-PORT-", BOOT)?;
    let console = vm.console();
    ensure!(
        console.contains("KEEL-SSH-PORT-OK"),
        "SSH did not move to 2222:\n{}",
        keel_tests::tail(&console, 40)
    );
    vm.kill();
    vm.finish()?;
    Ok(())
}

//! VM test of keel-install (issue 17), as an operator runs it: a Keel
//! guest with a second, blank virtio disk runs its own `keel-install`
//! onto that disk from the release tree the host serves (nginx on
//! loopback, reached at 10.0.2.2), with an Ignition config (hostname) and
//! an SSH key for core; then a new guest boots **that disk** under UEFI
//! firmware and must come up provisioned and grown. Installing from the
//! build host onto a loop device is the privileged tier's.
//!
//! Needs the image (`./run image`) and its release tree with the disk image
//! (`./run release`, in `$KEEL_BUILD_DIR/release`), signed with the key the
//! image trusts (the build's development update key).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use keel_tests::serve::Nginx;
use keel_tests::{keypair, ssh_with_input, BootOptions, Image, Vm};

const BOOT: Duration = Duration::from_secs(480);
const HOSTNAME: &str = "keel-installed";

#[test]
fn installed_disk_boots_uefi_provisioned() -> Result<()> {
    let img = Image::from_env()?;
    let tree = img.dir.join("release");
    ensure!(
        tree.join("stable/channel.json").is_file(),
        "no release tree in {} (./run release)",
        tree.display()
    );
    let work = tempfile::Builder::new()
        .prefix("keel-install-vm-")
        .tempdir()?;

    // A blank disk 1 GiB larger than the image: the first boot grows ROOT.
    // QEMU turns the guest's zero writes into holes, so the file stays
    // sparse (the image is mostly zeros).
    let raw_size = std::fs::metadata(img.path("raw")?)?.len();
    let disk = work.path().join("installed.raw");
    std::fs::File::create(&disk)?.set_len(raw_size + (1 << 30))?;

    let (key, public) = keypair(work.path(), "install-test")?;
    let pubfile = work.path().join("core.pub");
    std::fs::write(&pubfile, format!("{public}\n"))?;
    let ign = work.path().join("config.ign");
    std::fs::write(
        &ign,
        format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"files":[{{"path":"/etc/hostname","mode":420,"overwrite":true,"contents":{{"source":"data:,{HOSTNAME}"}}}}]}}}}"#
        ),
    )?;

    let nginx = Nginx::serve(&tree)?;
    let installer = BootOptions {
        qemu_args: vec![
            "-drive".into(),
            format!(
                "if=virtio,file={},format=raw,discard=unmap,detect-zeroes=unmap",
                disk.display()
            ),
        ],
        ..BootOptions::default()
    };
    let mut vm = Vm::boot("install_from_keel", &img, installer)?;
    vm.wait_ready(BOOT)?;
    let blank = vm.ssh_ok("lsblk -dno NAME,SIZE /dev/vdb")?;
    eprintln!("install: the guest's second disk: {}", blank.trim());
    ssh_with_input(&vm, "cat > /tmp/config.ign", &ign)?;
    ssh_with_input(&vm, "cat > /tmp/core.pub", &pubfile)?;
    let t0 = Instant::now();
    let out = vm.ssh(&format!(
        "sudo keel-install /dev/vdb --channel stable --base-url {} \
         --ignition /tmp/config.ign --ssh-key /tmp/core.pub --platform qemu --yes",
        nginx.guest_url()
    ))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    ensure!(
        out.status.success(),
        "keel-install in the guest failed ({}): {stderr}",
        out.status
    );
    eprintln!("install: {:.1}s in the guest", t0.elapsed().as_secs_f64());
    ensure!(
        stderr.contains("first-boot config in OEM config.ign"),
        "{stderr}"
    );
    // What the guest's kernel sees on the new disk.
    let parts = vm.ssh_ok("ls /sys/class/block/vdb")?;
    let n = parts
        .split_whitespace()
        .filter(|p| p.starts_with("vdb"))
        .count();
    ensure!(n >= 7, "partitions the guest's kernel sees on vdb: {parts}");
    vm.finish()?;
    drop(nginx);

    // Boot the installed disk, not the image: SSH only with the key from
    // the installed config (the development key is not used).
    let opts = BootOptions {
        uefi: true,
        disk: Some(disk.clone()),
        ssh_key: Some(key),
        ..BootOptions::default()
    };
    let mut vm = Vm::boot("install_uefi", &img, opts)?;
    let ssh = vm.wait_ssh(BOOT)?;
    eprintln!(
        "installed disk: SSH with the config's key after {:.1}s",
        ssh.as_secs_f64()
    );
    let host = vm.ssh_ok("hostname")?;
    ensure!(host.trim() == HOSTNAME, "hostname {host:?}");
    let result = vm.ssh_ok("cat /etc/.keel-provision-result.json")?;
    ensure!(
        result.contains("/oem/config.ign"),
        "provisioning result: {result}"
    );
    let boot: serde_json::Value = serde_json::from_str(&vm.ssh_ok("cat /run/keel/boot.json")?)?;
    ensure!(boot["first_boot"] == true, "boot.json: {boot}");
    ensure!(!boot["growth"].is_null(), "ROOT did not grow: {boot}");
    let root_bytes: u64 = vm
        .ssh_ok("df -B1 --output=size / | tail -1")?
        .trim()
        .parse()
        .context("df")?;
    ensure!(
        root_bytes > 900 << 20,
        "ROOT is {root_bytes} bytes after growth"
    );
    vm.finish()?;
    Ok(())
}

//! VM tests: the raw disk boots under UEFI firmware (OVMF) through
//! systemd-boot and the ESP's loader entry, the way it boots on a real
//! machine or a cloud, instead of QEMU's direct `-kernel` fast path.
//! Run with `./run test vm` (needs the image from `./run image`).

use std::time::Duration;

use anyhow::{ensure, Result};
use keel_tests::{BootOptions, Image, Vm};

/// OVMF under TCG adds firmware time to the usual boot.
const BOOT: Duration = Duration::from_secs(420);

/// OVMF → systemd-boot → the USR-A entry → keel-init → systemd → SSH; the
/// command line came from the loader entry (with the root hash) and /usr is
/// the verified USR-A.
#[test]
fn uefi_disk_boot_reaches_ssh() -> Result<()> {
    let img = Image::from_env()?;
    let opts = BootOptions {
        uefi: true,
        ..BootOptions::default()
    };
    let mut vm = Vm::boot("uefi_disk_boot", &img, opts)?;
    let ssh = vm.wait_ssh(BOOT)?;
    eprintln!("uefi: SSH after {:.1}s", ssh.as_secs_f64());
    let state = vm.ssh_ok("systemctl is-system-running --wait || true")?;
    ensure!(state.trim() == "running", "system state {state:?}");

    ensure!(
        vm.ssh_ok("test -d /sys/firmware/efi && echo efi")?.trim() == "efi",
        "the kernel was not started by UEFI firmware"
    );
    // systemd-boot tells the OS which entry it booted (Boot Loader Interface).
    let entry = vm.ssh_ok(
        "cat /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f | tail -c +5 | tr -d '\\000'",
    )?;
    ensure!(
        entry.trim() == "keel-usr-a.conf",
        "LoaderEntrySelected is {entry:?}"
    );
    let hash = img.manifest["usr_root_hash"].as_str().unwrap_or_default();
    let cmdline = vm.ssh_ok("cat /proc/cmdline")?;
    ensure!(
        !hash.is_empty() && cmdline.contains(&format!("keel.usrhash.a={hash}")),
        "the loader entry's command line lacks USR-A's root hash: {cmdline}"
    );
    let table = vm.ssh_ok("sudo dmsetup table usr")?;
    ensure!(table.contains(hash), "verity table: {table}");
    let boot: serde_json::Value = serde_json::from_str(&vm.ssh_ok("cat /run/keel/boot.json")?)?;
    ensure!(boot["slot"] == "A", "boot.json: {boot}");
    vm.finish()?;
    Ok(())
}

//! VM tests of the A/B `/usr` slots and keel-bootctl (issue 7): an update
//! written to USR-B boots after `set-next B` and is proven by
//! keel-mark-successful.service; a USR-B whose data is then corrupted fails
//! dm-verity and the same boot falls back to USR-A, and `status` says why.
//! Run with `./run test vm`.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use keel_tests::{partition_offset, BootOptions, Image, Vm};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(420);

/// USR-A's root hash from the image's command line.
fn usr_a_hash(img: &Image) -> Result<String> {
    img.cmdline()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("keel.usrhash.a="))
        .map(str::to_string)
        .context("image command line has no keel.usrhash.a=")
}

fn boot_record(vm: &Vm) -> Result<Value> {
    Ok(serde_json::from_str(
        &vm.ssh_ok("cat /run/keel/boot.json")?,
    )?)
}

/// Guest seconds keel-init spent choosing the slot and setting up verity
/// (its `root` → `usr` timing marks), printed for the measurement.
fn report_slot_time(what: &str, rec: &Value) {
    let t = &rec["timings"];
    if let (Some(root), Some(usr)) = (t["root"].as_f64(), t["usr"].as_f64()) {
        eprintln!(
            "slots: {what}: slot choice + verity setup {:.3} s",
            usr - root
        );
    }
}

fn slot_json(status: &Value, slot: &str) -> Result<Value> {
    status["slots"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["slot"] == slot))
        .cloned()
        .with_context(|| format!("status has no slot {slot}: {status}"))
}

fn status_json(vm: &Vm) -> Result<Value> {
    Ok(serde_json::from_str(
        &vm.ssh_ok("sudo keel-bootctl status --json")?,
    )?)
}

#[test]
fn update_to_b_then_fallback_to_a() -> Result<()> {
    let img = Image::from_env()?;
    let hash = usr_a_hash(&img)?;
    let work = tempfile::tempdir()?;
    let disk = work.path().join("disk.qcow2");
    keel_tests::overlay(&img.path("qcow2")?, &disk)?;
    // USR-B will hold the same payload as USR-A, so the same root hash; on a
    // UEFI boot it comes from USR-B's loader entry.
    let opts = BootOptions {
        disk: Some(disk.clone()),
        extra_cmdline: format!("keel.usrhash.b={hash}"),
        ..BootOptions::default()
    };

    // Boot 1: USR-A. /usr cannot be written, even by root. Write the update
    // into USR-B the way an updater would, and make it the next slot.
    let mut vm = Vm::boot("slots_a", &img, opts.clone())?;
    let state = vm.wait_ready(BOOT)?;
    ensure!(state == "running", "system {state}");
    let rec = boot_record(&vm)?;
    ensure!(rec["slot"] == "A", "first boot not from A: {rec}");
    report_slot_time("successful USR-A", &rec);
    for (what, cmd) in [
        ("create a file", "sudo touch /usr/keel-write-test"),
        ("remount rw", "sudo mount -o remount,rw /usr"),
        (
            "write the dm device",
            "sudo dd if=/dev/zero of=$(findmnt -n -o SOURCE /usr) bs=4k count=1 conv=fsync",
        ),
    ] {
        let out = vm.ssh(cmd)?;
        ensure!(!out.status.success(), "root could {what} on /usr: {cmd}");
    }
    let st = status_json(&vm)?;
    ensure!(st["booted"] == "A" && st["next"] == "A", "status: {st}");
    for (src, dst) in [("USR-A", "USR-B"), ("USR-A-VERITY", "USR-B-VERITY")] {
        vm.ssh_ok(&format!(
            "sudo dd if=/dev/disk/by-partlabel/{src} of=/dev/disk/by-partlabel/{dst} bs=4M conv=fsync status=none"
        ))?;
    }
    vm.ssh_ok("sudo keel-bootctl set-next B")?;
    let st = status_json(&vm)?;
    let b = slot_json(&st, "B")?;
    ensure!(
        st["next"] == "B" && b["priority"] == 2 && b["tries"] == 1 && b["successful"] == false,
        "after set-next B: {st}"
    );
    ensure!(
        slot_json(&st, "A")?["priority"] == 1,
        "A is not the fallback: {st}"
    );
    vm.finish()?;

    // Boot 2: USR-B on trial, then proven once the boot is good.
    let mut vm = Vm::reboot_disk("slots_b", &img, &disk, opts.clone())?;
    let state = vm.wait_ready(BOOT)?;
    ensure!(state == "running", "system {state}");
    let rec = boot_record(&vm)?;
    ensure!(
        rec["slot"] == "B" && rec["consumed_try"] == true,
        "boot record: {rec}"
    );
    report_slot_time("unproven USR-B (try written to both headers)", &rec);
    let b_dev = vm.ssh_ok("readlink -f /dev/disk/by-partlabel/USR-B")?;
    let deps = vm.ssh_ok("sudo dmsetup deps -o devname usr")?;
    ensure!(
        deps.contains(&format!("({})", b_dev.trim().trim_start_matches("/dev/"))),
        "/usr is not verity over USR-B ({}): {deps}",
        b_dev.trim()
    );
    let unit = vm.ssh_ok("systemctl show -p ActiveState,Result keel-mark-successful.service")?;
    ensure!(
        unit.contains("ActiveState=active") && unit.contains("Result=success"),
        "keel-mark-successful: {unit}"
    );
    let st = status_json(&vm)?;
    let b = slot_json(&st, "B")?;
    ensure!(
        st["booted"] == "B" && b["successful"] == true && b["tries"] == 0,
        "B not proven: {st}"
    );
    let text = vm.ssh_ok("sudo keel-bootctl status")?;
    ensure!(
        text.contains("Booted: USR-B (an unproven slot on trial"),
        "status: {text}"
    );
    vm.finish()?;

    // Corrupt USR-B's data (its first 16 MiB, the EROFS superblock among
    // them) from the host, as a bad disk or a bad update would.
    keel_tests::damage_partition(&disk, &img.path("raw")?, "USR-B")?;

    // Boot 3: B still has the highest priority and fails verification;
    // keel-init falls back to A in the same boot and records why.
    let mut vm = Vm::reboot_disk("slots_fallback", &img, &disk, opts)?;
    // dm-verity's own complaints on the console are the point of this boot.
    vm.allow(&["dm-verity error"]);
    let state = vm.wait_ready(BOOT)?;
    ensure!(state == "running", "system {state}");
    let rec = boot_record(&vm)?;
    ensure!(rec["slot"] == "A", "did not fall back to A: {rec}");
    report_slot_time("USR-B rejected, fallback to USR-A", &rec);
    let failed = &rec["failed_slots"][0];
    ensure!(
        failed["slot"] == "B"
            && failed["reason"]
                .as_str()
                .is_some_and(|r| r.contains("dm-verity")),
        "boot record does not say why B failed: {rec}"
    );
    let text = vm.ssh_ok("sudo keel-bootctl status")?;
    ensure!(
        text.contains("Booted: USR-A (fallback in the same boot (USR-B failed:"),
        "status does not explain the fallback: {text}"
    );
    vm.finish()?;
    Ok(())
}

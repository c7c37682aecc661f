//! VM tests: first-boot ROOT growth, the machine's own identity, power cuts
//! during first boot, and a damaged primary GPT.
//! Run with `./run test vm` (needs the image from `./run image`).

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use keel_tests::{BootOptions, Image, Vm};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(420);
const GIB: u64 = 1 << 30;

fn image() -> Image {
    Image::from_env().expect("the image is built (./run image)")
}

/// What the guest says about its disk and ROOT.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    disk_bytes: u64,
    root_start_bytes: u64,
    root_bytes: u64,
    df_bytes: u64,
    disk_guid: String,
    root_partuuid: String,
    root_fs_uuid: String,
}

fn seen(vm: &Vm) -> Result<Seen> {
    let num = |cmd: &str| -> Result<u64> {
        let out = vm.ssh_ok(cmd)?;
        out.trim()
            .parse()
            .with_context(|| format!("`{cmd}` printed {out:?}"))
    };
    let word = |cmd: &str| -> Result<String> { Ok(vm.ssh_ok(cmd)?.trim().to_lowercase()) };
    Ok(Seen {
        disk_bytes: num("lsblk -bdno SIZE /dev/vda")?,
        root_start_bytes: num("cat /sys/class/block/vda7/start")? * 512,
        root_bytes: num("lsblk -bdno SIZE /dev/vda7")?,
        df_bytes: num("df -B1 --output=size / | tail -n 1")?,
        disk_guid: word("sudo blkid -p -o value -s PTUUID /dev/vda")?,
        root_partuuid: word("sudo blkid -p -o value -s PART_ENTRY_UUID /dev/vda7")?,
        root_fs_uuid: word("sudo blkid -p -o value -s UUID /dev/vda7")?,
    })
}

/// ROOT reaches the end of the disk (only the backup GPT after it) and
/// fills ≥ 95 % of the disk from where it starts (the image's fixed
/// partitions before it take 2.4 GiB), and ext4 fills the partition.
fn check_grown(s: &Seen) -> Result<()> {
    let end = s.root_start_bytes + s.root_bytes;
    ensure!(
        end + 34 * 512 >= s.disk_bytes && end <= s.disk_bytes,
        "ROOT ends at byte {end} of a {}-byte disk: {s:?}",
        s.disk_bytes
    );
    let room = s.disk_bytes - s.root_start_bytes;
    ensure!(
        s.root_bytes * 100 >= room * 95,
        "ROOT is {} bytes of the {room} from its start to the disk's end (< 95 %)",
        s.root_bytes
    );
    ensure!(
        s.df_bytes * 100 >= s.root_bytes * 90,
        "df shows {} bytes on / for a {}-byte ROOT: the filesystem did not grow",
        s.df_bytes,
        s.root_bytes
    );
    Ok(())
}

fn boot_json(vm: &Vm) -> Result<Value> {
    Ok(serde_json::from_str(
        &vm.ssh_ok("cat /run/keel/boot.json")?,
    )?)
}

/// The image's disk GUID and ROOT filesystem UUID, read from the raw image.
fn image_ids(img: &Image) -> Result<(String, String)> {
    let raw = img.path("raw")?;
    let f = fs::File::open(&raw)?;
    let (gpt, _) = keel_gpt::Gpt::read(&f, 512)?;
    let off = keel_tests::partition_offset(&raw, "ROOT")?;
    let mut uuid = [0u8; 16];
    f.read_exact_at(&mut uuid, off + 1024 + 0x68)?;
    Ok((
        gpt.disk_guid.to_string(),
        keel_gpt::Uuid::from_bytes(uuid).to_string(),
    ))
}

fn grown_overlay(img: &Image, dir: &Path) -> Result<std::path::PathBuf> {
    let disk = dir.join("disk.qcow2");
    keel_tests::overlay(&img.path("qcow2")?, &disk)?;
    keel_tests::resize_disk(&disk, 20 * GIB)?;
    Ok(disk)
}

/// A 20 GiB disk: the first boot grows ROOT to ≥ 95 % of it, online, and
/// gives the machine its own disk GUID and ROOT UUIDs; the second boot
/// changes nothing; the powered-off ROOT is fsck-clean.
#[test]
fn first_boot_grows_root_to_the_disk_and_second_boot_changes_nothing() -> Result<()> {
    let img = image();
    let (image_guid, image_fs_uuid) = image_ids(&img)?;
    let dir = tempfile::tempdir()?;
    let disk = grown_overlay(&img, dir.path())?;
    let opts = || BootOptions {
        disk: Some(disk.clone()),
        ..Default::default()
    };

    let mut vm = Vm::boot("growth_first", &img, opts())?;
    let state = vm.wait_ready(BOOT)?;
    ensure!(state == "running", "system state {state:?}");
    let first = seen(&vm)?;
    eprintln!("growth: first boot sees {first:?}");
    ensure!(first.disk_bytes == 20 * GIB, "disk: {first:?}");
    check_grown(&first)?;
    ensure!(
        first.disk_guid != image_guid,
        "disk GUID is still the image's {image_guid}"
    );
    ensure!(
        first.root_fs_uuid != image_fs_uuid,
        "ROOT's filesystem UUID is still the image's {image_fs_uuid}"
    );
    let b = boot_json(&vm)?;
    ensure!(b["first_boot"] == true, "boot.json: {b}");
    let g = &b["growth"];
    ensure!(
        g["to_bytes"].as_u64().unwrap_or(0) > g["from_bytes"].as_u64().unwrap_or(u64::MAX),
        "boot.json growth: {g}"
    );
    ensure!(
        b["identity"]["disk_guid"].as_str() == Some(first.disk_guid.as_str()),
        "boot.json identity {} vs the disk's {}",
        b["identity"],
        first.disk_guid
    );
    eprintln!(
        "growth: {} → {} bytes in {:.1} ms (table {:.1} ms, kernel {:.1} ms, ext4 {:.1} ms on its thread, waited {:.1} ms); timings {}",
        g["from_bytes"],
        g["to_bytes"],
        g["ms"].as_f64().unwrap_or(-1.0),
        g["table_ms"].as_f64().unwrap_or(-1.0),
        g["kernel_ms"].as_f64().unwrap_or(-1.0),
        g["fs_ms"].as_f64().unwrap_or(-1.0),
        g["wait_ms"].as_f64().unwrap_or(-1.0),
        b["timings"],
    );
    let log = vm
        .ssh_ok("sudo journalctl -b -o cat | grep -E 'keel-init: .*(growth|first boot)' || true")?;
    eprintln!("{log}");
    // Issue 21: the machine-id systemd wrote at first boot is the machine's
    // for good (empty factory file, no preset-all); ConditionFirstBoot=
    // holds on the first boot only.
    let id_first =
        vm.ssh_ok("cat /etc/machine-id; test -e /run/systemd/first-boot && echo flag")?;
    ensure!(
        id_first.lines().nth(1) == Some("flag"),
        "first boot: {id_first:?}"
    );
    vm.finish()?;

    let mut vm = Vm::reboot_disk("growth_second", &img, &disk, opts())?;
    let state = vm.wait_ready(BOOT)?;
    ensure!(state == "running", "system state {state:?}");
    let second = seen(&vm)?;
    ensure!(
        second == first,
        "the second boot changed the disk:\nfirst  {first:?}\nsecond {second:?}"
    );
    let b = boot_json(&vm)?;
    ensure!(b["first_boot"] == false, "boot.json: {b}");
    let id_second =
        vm.ssh_ok("cat /etc/machine-id; test -e /run/systemd/first-boot && echo flag || true")?;
    ensure!(
        id_second.lines().collect::<Vec<_>>() == id_first.lines().take(1).collect::<Vec<_>>(),
        "second boot: machine-id and first-boot flag {id_second:?}, first boot {id_first:?}"
    );
    ensure!(b["growth"].is_null(), "second boot grew: {}", b["growth"]);
    ensure!(
        b["identity"].is_null(),
        "second boot changed identity: {}",
        b["identity"]
    );
    vm.finish()?;

    let raw = dir.path().join("disk.raw");
    keel_tests::raw_copy(&disk, &raw)?;
    let f = fs::File::open(&raw)?;
    let (_, rep) = keel_gpt::Gpt::read(&f, 512)?;
    ensure!(
        rep.primary_error.is_none() && rep.backup_error.is_none() && !rep.backup_misplaced,
        "GPT after growth: {rep:?}"
    );
    keel_tests::fsck_partition(&raw, "ROOT")?;
    Ok(())
}

/// Power cuts in the middle of first boot (right after the growth step
/// wrote the table, then right at switch_root): the next boot completes the
/// growth, and the powered-off ROOT is fsck-clean.
#[test]
fn power_cut_during_first_boot_is_completed_by_the_next_boot() -> Result<()> {
    let img = image();
    let dir = tempfile::tempdir()?;
    let disk = grown_overlay(&img, dir.path())?;
    let opts = || BootOptions {
        disk: Some(disk.clone()),
        ..Default::default()
    };

    let mut vm = Vm::boot("growth_cut_table", &img, opts())?;
    let t = vm.kill_on_console("growth: GPT of", BOOT)?;
    eprintln!("growth: power cut after the table step at {t:?}");
    vm.finish()?;

    let mut vm = Vm::reboot_disk("growth_cut_switch_root", &img, &disk, opts())?;
    let t = vm.kill_on_console("switching root", BOOT)?;
    eprintln!("growth: power cut at switch_root at {t:?}");
    vm.finish()?;

    let mut vm = Vm::reboot_disk("growth_cut_complete", &img, &disk, opts())?;
    let state = vm.wait_ready(BOOT)?;
    ensure!(state == "running", "system state {state:?}");
    let s = seen(&vm)?;
    check_grown(&s)?;
    let (image_guid, _) = image_ids(&img)?;
    ensure!(
        s.disk_guid != image_guid,
        "the disk GUID is still the image's: {s:?}"
    );
    vm.finish()?;

    let raw = dir.path().join("disk.raw");
    keel_tests::raw_copy(&disk, &raw)?;
    let report = keel_tests::fsck_partition(&raw, "ROOT")?;
    eprintln!("{report}");
    Ok(())
}

/// A primary GPT header with a bad CRC: keel-init boots from the backup,
/// says so on the console, and does not write the disk (no growth, no new
/// disk GUID); the damage is still there afterwards for the operator.
#[test]
fn bad_primary_gpt_boots_from_the_backup_without_writing() -> Result<()> {
    let img = image();
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("disk.img");
    keel_tests::raw_image_copy(&img, &raw)?;
    {
        let f = fs::OpenOptions::new().read(true).write(true).open(&raw)?;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 512 + 60)?; // inside the disk GUID
        b[0] ^= 0xff;
        f.write_all_at(&b, 512 + 60)?;
        f.sync_all()?;
    }
    let before = {
        let f = fs::File::open(&raw)?;
        let mut v = vec![0u8; 34 * 512];
        f.read_exact_at(&mut v, 0)?;
        v
    };
    let mut vm = Vm::boot(
        "growth_bad_primary",
        &img,
        BootOptions {
            disk: Some(raw.clone()),
            ..Default::default()
        },
    )?;
    let state = vm.wait_ready(BOOT)?;
    // keel-bootctl (keel-mark-successful.service) refuses to write a
    // damaged table too; that is the only failure allowed here.
    let failed = vm.ssh_ok("systemctl --failed --no-legend --plain | awk '{print $1}'")?;
    let unexpected: Vec<&str> = failed
        .lines()
        .filter(|u| !u.is_empty() && *u != "keel-mark-successful.service")
        .collect();
    ensure!(
        (state == "running" || state == "degraded") && unexpected.is_empty(),
        "system state {state:?}, failed units: {failed}"
    );
    if !failed.trim().is_empty() {
        eprintln!("growth: bad primary GPT: failed units (expected): {failed}");
    }
    let b = boot_json(&vm)?;
    ensure!(b["growth"].is_null() && b["identity"].is_null(), "{b}");
    let text = vm.finish_allowing(&["keel-mark-successful"])?;
    for needle in [
        "using the backup GPT: primary GPT header at byte 512: header CRC32 is",
        "the primary GPT is damaged (primary GPT header at byte 512: header CRC32 is",
        "using the backup copy read-only and not writing the disk",
    ] {
        ensure!(
            text.contains(needle),
            "console lacks {needle:?}\n{}",
            keel_tests::tail(&text, 60)
        );
    }
    let f = fs::File::open(&raw)?;
    let mut after = vec![0u8; 34 * 512];
    f.read_exact_at(&mut after, 0)?;
    ensure!(after == before, "the primary GPT was written");
    let (_, rep) = keel_gpt::Gpt::read(&f, 512)?;
    ensure!(rep.primary_error.is_some(), "{rep:?}");
    Ok(())
}

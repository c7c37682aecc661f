//! VM tests of the OEM hooks runner (issue 5). Run with `./run test vm`.
//! The QEMU platform's fw_cfg metadata (SSH key, hostname) is checked on
//! the foundation boot in `vm.rs`, which needs no OEM tree of its own.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use keel_tests::{image_with_oem, BootOptions, Image, Vm};

const BOOT: Duration = Duration::from_secs(300);

fn image() -> Image {
    Image::from_env().expect("the image is built (./run image)")
}

fn stamps(text: &str) -> Result<Vec<(String, f64)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next().context("stamp line")?.to_string();
            let t: f64 = w.next().context("stamp time")?.parse()?;
            Ok((name, t))
        })
        .collect()
}

/// One hook per stage writing timestamps → stages ran in order relative to
/// network-online; a hanging optional hook is killed at its timeout and the
/// boot reaches multi-user; a run-once hook runs on the first boot only.
#[test]
fn stages_order_timeouts_and_run_once() -> Result<()> {
    let img = image();
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("disk.img");
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/keel-oem/test_data/vm-oem");
    image_with_oem(&img, &tree, &raw)?;
    let opts = BootOptions {
        disk: Some(raw.clone()),
        ..Default::default()
    };
    let mut vm = Vm::boot("oem_stages", &img, opts.clone())?;
    let state = vm.wait_ready(BOOT)?;
    ensure!(
        state == "running",
        "system {state}: {}",
        vm.ssh_ok("systemctl --failed --no-legend")?
    );

    let s = stamps(&vm.ssh_ok("cat /var/lib/keel-oem-test/stamps")?)?;
    let at = |n: &str| s.iter().find(|(k, _)| k == n).map(|(_, t)| *t);
    let (early, network, late) = (
        at("early").context("no early stamp")?,
        at("network").context("no network stamp")?,
        at("late").context("no late stamp")?,
    );
    let online_us: f64 = vm
        .ssh_ok("systemctl show -P ActiveEnterTimestampMonotonic network-online.target")?
        .trim()
        .parse()?;
    let online = online_us / 1e6;
    ensure!(
        early < online && online <= network && network <= late,
        "order: early {early} online {online} network {network} late {late}"
    );

    let st = vm.ssh_ok("keel-oem status")?;
    ensure!(
        st.contains("20-hang") && st.contains("timed out"),
        "status: {st}"
    );
    let alive = vm.ssh_ok("for f in /var/lib/keel-oem-test/hang.pid /var/lib/keel-oem-test/hang-grandchild.pid; do p=$(cat $f); [ -d /proc/$p ] && echo alive $p; done; true")?;
    ensure!(
        alive.trim().is_empty(),
        "hang hook survived its timeout: {alive}"
    );
    ensure!(
        vm.ssh_ok("systemctl is-active keel-oem-early.service")?
            .trim()
            == "active",
        "early stage failed"
    );
    // Two `late` hooks on the first boot: the every-boot one and the run-once one.
    let late_first = s.iter().filter(|(k, _)| k == "late").count();
    ensure!(
        late_first == 2,
        "late stamps on the first boot: {late_first}"
    );
    vm.finish()?;

    let mut vm = Vm::reboot_disk("oem_stages_second", &img, &raw, opts)?;
    vm.wait_ready(BOOT)?;
    let s = vm.ssh_ok("cat /var/lib/keel-oem-test/stamps")?;
    // Exactly one more `late` line: the every-boot hook, not the run-once one.
    let late = s.lines().filter(|l| l.starts_with("late")).count();
    ensure!(late == 3, "late stamps after the second boot: {s}");
    let second = s.lines().filter(|l| l.contains("first_boot=0")).count();
    ensure!(second == 3, "second boot stages: {s}");
    vm.finish()?;
    Ok(())
}

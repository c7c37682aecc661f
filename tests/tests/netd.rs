//! VM test of keel-netd (issue 3). Run with `./run test vm`.

use std::time::Duration;

use anyhow::{ensure, Result};
use keel_tests::{BootOptions, Image, Vm};

/// The image gets its address from QEMU's DHCP server through keel-netd (no
/// other network manager runs), SSH works, `keel-netd status` shows the lease.
#[test]
fn dhcp_from_qemu_and_status() -> Result<()> {
    let img = Image::from_env()?;
    let mut vm = Vm::boot("netd_dhcp", &img, BootOptions::default())?;
    let state = vm.wait_ready(Duration::from_secs(300))?;
    ensure!(
        state == "running",
        "system {state}: {}",
        vm.ssh_ok("systemctl --failed --no-legend")?
    );
    ensure!(
        vm.ssh_ok("systemctl is-active keel-netd.service")?.trim() == "active",
        "keel-netd not active"
    );
    let other = vm.ssh_ok("systemctl is-active systemd-networkd.service || true")?;
    ensure!(other.trim() != "active", "systemd-networkd is running too");
    let addr = vm.ssh_ok("ip -4 -o addr show scope global")?;
    ensure!(addr.contains("10.0.2.15/24"), "no DHCP address: {addr}");
    let route = vm.ssh_ok("ip -4 route show default")?;
    ensure!(route.contains("via 10.0.2.2"), "no default route: {route}");
    let status = vm.ssh_ok("keel-netd status")?;
    ensure!(
        status.contains("10.0.2.15"),
        "status lacks the address: {status}"
    );
    let resolv = vm.ssh_ok("cat /etc/resolv.conf")?;
    ensure!(
        resolv.contains("nameserver 10.0.2.3"),
        "resolv.conf: {resolv}"
    );
    vm.finish()?;
    Ok(())
}

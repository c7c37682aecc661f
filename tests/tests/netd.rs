//! VM test of keel-netd (issue 3). Run with `./run test vm`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use keel_tests::{BootOptions, Image, Vm};

/// Wait until `cmd` over SSH prints something `ok` accepts.
fn wait_ssh_until(
    vm: &Vm,
    cmd: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    let start = Instant::now();
    loop {
        let out = vm.ssh_ok(cmd)?;
        if ok(&out) {
            return Ok(out);
        }
        if start.elapsed() > timeout {
            bail!("`{cmd}` after {timeout:?}: {out}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The image gets its address from QEMU's DHCP server through keel-netd (no
/// other network manager runs), SSH works, `keel-netd status` shows the lease
/// and got it from the daemon over D-Bus, anyone can read link state with
/// `busctl`, and a hostname from DHCP (a second NIC whose QEMU DHCP server
/// sends one) becomes the hostname, through systemd-hostnamed once the bus
/// is up.
#[test]
fn dhcp_from_qemu_and_status() -> Result<()> {
    let img = Image::from_env()?;
    let opts = BootOptions {
        qemu_args: [
            "-netdev",
            "user,id=n1,net=10.0.3.0/24,hostname=keel-dhcp",
            "-device",
            "virtio-net-pci,netdev=n1",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let mut vm = Vm::boot("netd_dhcp", &img, opts)?;
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
    ensure!(addr.contains("10.0.3.15/24"), "second NIC: {addr}");
    let route = vm.ssh_ok("ip -4 route show default")?;
    ensure!(route.contains("via 10.0.2.2"), "no default route: {route}");
    let status = vm.ssh_ok("keel-netd status")?;
    ensure!(
        status.contains("10.0.2.15"),
        "status lacks the address: {status}"
    );
    ensure!(
        status.contains("Source: keel-netd over D-Bus (org.keel.Network1)"),
        "status did not come over D-Bus: {status}"
    );
    // As core, not root: the shipped bus policy lets anyone read.
    let bus =
        vm.ssh_ok("busctl call org.keel.Network1 /org/keel/Network1 org.keel.Network1 ListLinks")?;
    ensure!(bus.contains("10.0.2.15"), "ListLinks: {bus}");
    let resolv = vm.ssh_ok("cat /etc/resolv.conf")?;
    ensure!(
        resolv.contains("nameserver 10.0.2.3"),
        "resolv.conf: {resolv}"
    );

    // No /etc/hostname in the image: the DHCP hostname applies (at boot
    // possibly before the bus is up, through sethostname(2)).
    wait_ssh_until(&vm, "hostname", Duration::from_secs(30), |h| {
        h.trim() == "keel-dhcp"
    })?;
    // With the bus up, a fresh lease goes through systemd-hostnamed.
    vm.ssh_ok("sudo hostname localhost && sudo systemctl restart keel-netd.service")?;
    wait_ssh_until(&vm, "hostname", Duration::from_secs(60), |h| {
        h.trim() == "keel-dhcp"
    })?;
    let log = wait_ssh_until(
        &vm,
        "sudo journalctl -b -u keel-netd.service --no-pager -o cat",
        Duration::from_secs(20),
        |l| l.contains("hostname set to keel-dhcp from DHCP through systemd-hostnamed"),
    )?;
    // For the record (shown with --nocapture): what the daemon said about
    // the bus and the hostname during this boot.
    for l in log
        .lines()
        .filter(|l| l.contains("bus") || l.contains("hostname"))
    {
        eprintln!("keel-netd: {l}");
    }
    let prop = vm.ssh_ok(
        "busctl get-property org.freedesktop.hostname1 /org/freedesktop/hostname1 org.freedesktop.hostname1 Hostname",
    )?;
    ensure!(prop.trim() == "s \"keel-dhcp\"", "hostnamed: {prop}\n{log}");
    vm.finish()?;
    Ok(())
}

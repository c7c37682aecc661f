//! VM test of keel-netd (issues 3 and 18). Run with `./run test vm`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use keel_tests::{fw_cfg, keypair, BootOptions, Image, Vm};

/// A `data:` URL of `text` (RFC 2397, everything but unreserved characters
/// percent-encoded), as Butane writes inline contents.
fn data_url(text: &str) -> String {
    let mut out = String::from("data:,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The third NIC (static) and the second NIC (DHCP + a VLAN).
const STATIC_MAC: &str = "52:54:00:00:04:10";
const VLAN_MAC: &str = "52:54:00:00:03:10";

/// Issue 18's configuration, as a Flatcar user would write it with
/// Butane: networkd files in /etc/systemd/network, a static address
/// matched by MAC, and a VLAN on the second NIC. `Kind=!*`: a VLAN has its
/// parent's MAC address, so a MAC-only match would catch vlan42 too (as in
/// networkd; seen in this test's first run).
fn ignition(pubkey: &str) -> String {
    let files = [
        (
            "/etc/systemd/network/10-static.network",
            format!("[Match]\nMACAddress={STATIC_MAC}\nKind=!*\n\n[Network]\nAddress=10.0.4.10/24\n\n[Route]\nDestination=192.0.2.0/24\nGateway=10.0.4.2\n"),
        ),
        (
            "/etc/systemd/network/20-nic2.network",
            format!("[Match]\nMACAddress={VLAN_MAC}\nKind=!*\n\n[Network]\nDHCP=ipv4\nVLAN=vlan42\n"),
        ),
        (
            "/etc/systemd/network/30-vlan42.netdev",
            "[NetDev]\nName=vlan42\nKind=vlan\n\n[VLAN]\nId=42\n".to_string(),
        ),
        (
            "/etc/systemd/network/40-vlan42.network",
            "[Match]\nName=vlan42\n\n[Network]\nAddress=10.42.0.10/24\n".to_string(),
        ),
    ];
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|(path, text)| {
            serde_json::json!({
                "path": path,
                "mode": 0o644,
                "overwrite": true,
                "contents": {"compression": "", "source": data_url(text)}
            })
        })
        .collect();
    serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [pubkey]}]},
        "storage": {"files": files}
    })
    .to_string()
}

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
///
/// The same boot (issue 18): Ignition writes networkd files into
/// /etc/systemd/network, a static address with a route for a third NIC and
/// a VLAN on the second one (which keeps its DHCP lease), and the guest
/// comes up with them; `keel-netd check` says what each file does.
#[test]
fn dhcp_from_qemu_and_status() -> Result<()> {
    let img = Image::from_env()?;
    let dir = tempfile::tempdir()?;
    let (key, public) = keypair(dir.path(), "netd")?;
    let cfg = dir.path().join("config.ign");
    std::fs::write(&cfg, ignition(&public))?;
    let mut qemu_args: Vec<String> = [
        "-netdev",
        "user,id=n1,net=10.0.3.0/24,hostname=keel-dhcp",
        "-device",
        &format!("virtio-net-pci,netdev=n1,mac={VLAN_MAC}"),
        "-netdev",
        "user,id=n2,net=10.0.4.0/24",
        "-device",
        &format!("virtio-net-pci,netdev=n2,mac={STATIC_MAC}"),
    ]
    .map(String::from)
    .to_vec();
    qemu_args.extend(fw_cfg("opt/org.flatcar-linux/config", &cfg));
    let opts = BootOptions {
        qemu_args,
        ssh_key: Some(key),
        ..Default::default()
    };
    let mut vm = Vm::boot("netd_dhcp", &img, opts)?;
    let state = vm.wait_ready(Duration::from_secs(300))?;
    ensure!(
        state == "running",
        "system {state}: {}\n{}\n{}",
        vm.ssh_ok("systemctl --failed --no-legend")?,
        vm.ssh_ok("keel-netd status 2>&1; ip -br addr; ip -br link")?,
        vm.ssh_ok("sudo journalctl -b -u keel-netd.service -u keel-netd-wait-online.service --no-pager -o cat | tail -60")?
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

    // Issue 18: the files Ignition wrote into /etc/systemd/network.
    let nic3 = vm.ssh_ok(&format!(
        "ip -o link | awk -F': ' '/{STATIC_MAC}/ {{print $2}}'"
    ))?;
    let nic3 = nic3.trim();
    ensure!(!nic3.is_empty(), "no link with {STATIC_MAC}");
    wait_ssh_until(
        &vm,
        &format!("ip -4 -o addr show dev {nic3}"),
        Duration::from_secs(30),
        |a| a.contains("inet 10.0.4.10/24"),
    )?;
    let routes = vm.ssh_ok("ip -4 route")?;
    ensure!(
        routes.contains(&format!(
            "192.0.2.0/24 via 10.0.4.2 dev {nic3} proto static"
        )),
        "static route: {routes}"
    );
    let vlan = wait_ssh_until(
        &vm,
        "ip -d -4 addr show dev vlan42 2>&1",
        Duration::from_secs(30),
        |a| a.contains("inet 10.42.0.10/24"),
    )?;
    ensure!(
        vlan.contains("vlan protocol 802.1Q id 42"),
        "vlan42: {vlan}"
    );
    // vlan42 carries its parent's MAC: keep the physical link only.
    let nic2 = vm.ssh_ok(&format!(
        "ip -o link | awk -F': ' '/{VLAN_MAC}/ && $2 !~ /@/ {{print $2}}'"
    ))?;
    ensure!(
        vm.ssh_ok("ip -o link show vlan42")?
            .contains(&format!("vlan42@{}", nic2.trim())),
        "vlan42 is not on the second NIC ({nic2})"
    );
    ensure!(
        vm.ssh_ok(&format!("ip -4 -o addr show dev {}", nic2.trim()))?
            .contains("10.0.3.15/24"),
        "the second NIC lost its DHCP address"
    );
    let check = vm.ssh_ok("keel-netd check")?;
    for want in [
        "/etc/systemd/network/30-vlan42.netdev: creates vlan vlan42 id 42",
        &format!(
            "/etc/systemd/network/10-static.network: matches Kind=!*, MACAddress={STATIC_MAC}"
        ),
        "does: creates VLAN vlan42 on top; DHCPv4",
    ] {
        ensure!(
            check.contains(want),
            "keel-netd check lacks {want:?}:\n{check}"
        );
    }
    eprintln!("keel-netd check:\n{check}");

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

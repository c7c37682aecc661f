//! Privileged tests for keel-netd: root, network namespaces with veth
//! pairs, and dnsmasq (Debian's dnsmasq-base) as the DHCP server, started
//! by each test inside its own server namespace with a log file. Every
//! fixture is torn down in `Drop` (processes killed, namespaces deleted),
//! so a failing assertion still cleans up. Waits are bounded.
//!
//! keel-netd runs in its own UTS namespace (a DHCP hostname never reaches
//! the build machine) and sees `DBUS_SYSTEM_BUS_ADDRESS` pointing either
//! at a private `dbus-daemon` the test starts or at a path with no bus, so
//! no test talks to a real system bus.
//!
//! Run: `cargo test -p keel-netd --test privileged -- --test-threads=1`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Two namespaces ("server" and "client") joined by veth pairs, a dnsmasq
/// in the server namespace, and keel-netd in the client namespace.
struct Net {
    id: u32,
    srv: String,
    cli: String,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
    netd: Option<Child>,
    /// A private dbus-daemon ("system bus" for this test).
    bus: Option<Child>,
    /// Next veth pair number.
    pairs: u32,
}

impl Net {
    fn new() -> Net {
        assert_eq!(nix_uid(), 0, "privileged tests need root");
        let id = std::process::id() % 10000 * 10 + COUNTER.fetch_add(1, Ordering::SeqCst);
        let srv = format!("kns{id}");
        let cli = format!("knc{id}");
        let dir = tempfile::tempdir().unwrap();
        for d in ["net", "state", "run"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let net = Net {
            id,
            srv,
            cli,
            dir,
            dnsmasq: None,
            netd: None,
            bus: None,
            pairs: 0,
        };
        sh(&["ip", "netns", "add", &net.srv]);
        sh(&["ip", "netns", "add", &net.cli]);
        sh(&["ip", "-n", &net.srv, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &net.cli, "link", "set", "lo", "up"]);
        net
    }

    /// Add a veth pair: server end gets 10.<subnet>.0.1/24; returns the
    /// client-side name. `into_client`: move the client end now.
    fn pair(&mut self, subnet: u8, into_client: bool) -> String {
        let n = self.pairs;
        self.pairs += 1;
        let s = format!("kt{}s{n}", self.id);
        let c = format!("kt{}c{n}", self.id);
        sh(&["ip", "link", "add", &s, "type", "veth", "peer", "name", &c]);
        sh(&["ip", "link", "set", &s, "netns", &self.srv]);
        sh(&[
            "ip",
            "-n",
            &self.srv,
            "addr",
            "add",
            &format!("10.{subnet}.0.1/24"),
            "dev",
            &s,
        ]);
        sh(&["ip", "-n", &self.srv, "link", "set", &s, "up"]);
        if into_client {
            sh(&["ip", "link", "set", &c, "netns", &self.cli]);
        }
        c
    }

    fn server_if(&self, n: u32) -> String {
        format!("kt{}s{n}", self.id)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn network(&self, name: &str, text: &str) {
        std::fs::write(self.path("net").join(name), text).unwrap();
    }

    /// Start dnsmasq on server interface `n` with a range in 10.<subnet>.0.x.
    fn dnsmasq(&mut self, n: u32, subnet: u8, range: (u8, u8), extra: &[&str]) {
        let iface = self.server_if(n);
        let log = self.path("dnsmasq.log");
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.srv.clone(),
            "dnsmasq".into(),
            "--no-daemon".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            format!("--interface={iface}"),
            "--bind-interfaces".into(),
            format!(
                "--dhcp-range=10.{subnet}.0.{},10.{subnet}.0.{},2m",
                range.0, range.1
            ),
            format!("--dhcp-option=option:dns-server,10.{subnet}.0.53"),
            "--dhcp-option=option:domain-name,keel.test".into(),
            "--log-dhcp".into(),
            format!("--log-facility={}", log.display()),
            format!("--dhcp-leasefile={}", self.path("dnsmasq.leases").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.dnsmasq = Some(child);
        wait_for("dnsmasq to start", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("DHCP, IP range"))
        });
    }

    fn stop_dnsmasq(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.path("dnsmasq.log")).unwrap_or_default()
    }

    fn count(&self, what: &str) -> usize {
        self.dnsmasq_log().matches(what).count()
    }

    /// The address keel-netd and its CLI use as the system bus: the
    /// private bus once started, else a socket path that does not exist.
    fn bus_address(&self) -> String {
        let sock = if self.bus.is_some() { "bus" } else { "no-bus" };
        format!("unix:path={}", self.path(sock).display())
    }

    /// Start a private dbus-daemon configured like Debian's system bus
    /// (default deny for method calls and names) plus the policy file the
    /// image ships for org.keel.Network1 and `extra` policy elements.
    fn start_bus(&mut self, extra: &str) {
        let policy = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../overlay/share/dbus-1/system.d/org.keel.Network1.conf"
        );
        let conf = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
  </policy>
  <include>{policy}</include>
  {extra}
</busconfig>
"#,
            sock = self.path("bus").display(),
        );
        std::fs::write(self.path("bus.conf"), conf).unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", self.path("bus.conf").display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon) is installed");
        self.bus = Some(child);
        wait_for("the private bus", Duration::from_secs(10), || {
            self.path("bus").exists()
        });
    }

    fn stop_bus(&mut self) {
        if let Some(mut c) = self.bus.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.path("bus"));
    }

    fn start_netd(&mut self) {
        self.start_netd_dirs(&[self.path("net")]);
    }

    /// Start keel-netd reading `dirs` (lowest priority first).
    fn start_netd_dirs(&mut self, dirs: &[PathBuf]) {
        let bin = env!("CARGO_BIN_EXE_keel-netd");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("netd.log"))
            .unwrap();
        // unshare and ip exec in place: the child pid is keel-netd's.
        let mut cmd = Command::new("unshare");
        cmd.args(["--uts", "ip", "netns", "exec", &self.cli, bin]);
        for d in dirs {
            cmd.arg("--network-dir").arg(d);
        }
        let child = cmd
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--run-dir")
            .arg(self.path("run"))
            .arg("--hostname-file")
            .arg(self.path("hostname"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address())
            .env("KEEL_LOG", "debug")
            .env("NO_COLOR", "1")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.netd = Some(child);
    }

    /// Stop keel-netd with SIGTERM (as systemd does) and wait for it.
    fn stop_netd(&mut self) {
        if let Some(mut c) = self.netd.take() {
            // `unshare` and `ip netns exec` exec, so the child pid is keel-netd.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(st)) = c.try_wait() {
                    assert!(st.success(), "keel-netd exited with {st}");
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("keel-netd did not stop on SIGTERM");
        }
    }

    fn netd_log(&self) -> String {
        std::fs::read_to_string(self.path("netd.log")).unwrap_or_default()
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "-n", &self.cli];
        a.extend_from_slice(args);
        sh(&a)
    }

    /// `ip -n <client> ARGS` stdout, empty when it fails (a link that is
    /// not there yet).
    fn try_ip(&self, args: &[&str]) -> String {
        Command::new("ip")
            .args(["-n", &self.cli])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn addrs(&self, dev: &str) -> String {
        self.ip(&["-4", "-o", "addr", "show", "dev", dev])
    }

    fn routes(&self, dev: &str) -> String {
        self.ip(&["-4", "route", "show", "dev", dev])
    }

    fn cli_cmd(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_keel-netd"))
            .arg("--run-dir")
            .arg(self.path("run"))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn assert_alive(&mut self) {
        if let Some(c) = self.netd.as_mut() {
            assert!(
                c.try_wait().unwrap().is_none(),
                "keel-netd died; log:\n{}",
                self.netd_log()
            );
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(mut c) = self.netd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop_dnsmasq();
        self.stop_bus();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cli])
            .status();
        // A client end never moved into a namespace would stay in the host.
        for n in 0..self.pairs {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("kt{}c{n}", self.id)])
                .stderr(Stdio::null())
                .status();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- keel-netd log ---\n{}\n--- dnsmasq log ---\n{}",
                self.netd_log(),
                self.dnsmasq_log()
            );
        }
    }
}

fn nix_uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

const DHCP: &str = "[Match]\nName=kt*\n[Network]\nDHCP=yes\n";

fn has_addr_in(net: &Net, dev: &str, prefix: &str) -> bool {
    net.addrs(dev).contains(&format!("inet {prefix}"))
}

#[test]
fn dhcp_lease_with_route_and_dns() {
    let mut net = Net::new();
    let c = net.pair(71, true);
    net.network("50-dhcp.network", DHCP);
    net.dnsmasq(0, 71, (50, 60), &[]);
    net.start_netd();
    wait_for("a DHCP address", Duration::from_secs(20), || {
        has_addr_in(&net, &c, "10.71.0.")
    });
    wait_for("the default route", Duration::from_secs(5), || {
        net.routes(&c).contains("default via 10.71.0.1 proto dhcp")
    });
    let resolv = std::fs::read_to_string(net.path("run/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.71.0.53\n"), "{resolv}");
    assert!(resolv.contains("search keel.test\n"), "{resolv}");
    let (ok, out) = net.cli_cmd(&["wait-online", "--timeout", "10"]);
    assert!(ok, "wait-online: {out}");
    let (ok, out) = net.cli_cmd(&["status", &c]);
    assert!(ok, "{out}");
    assert!(out.contains("State: routable (configured)"), "{out}");
    assert!(out.contains("Gateway: 10.71.0.1"), "{out}");
    assert!(out.contains("DHCPv4 State: bound"), "{out}");
    assert!(
        out.contains("Network File:") && out.contains("50-dhcp.network"),
        "{out}"
    );
    assert!(
        net.path(&format!("state/{c}.lease")).exists(),
        "lease persisted"
    );
    // The kernel holds the address with the lease's lifetime.
    assert!(net.addrs(&c).contains("valid_lft"), "{}", net.addrs(&c));
    assert!(
        !net.addrs(&c).contains("valid_lft forever"),
        "{}",
        net.addrs(&c)
    );
    net.assert_alive();
}

#[test]
fn renews_at_t1() {
    let mut net = Net::new();
    let c = net.pair(72, true);
    net.network("50-dhcp.network", DHCP);
    net.dnsmasq(
        0,
        72,
        (50, 60),
        &["--dhcp-option=58,3", "--dhcp-option=59,6"],
    );
    net.start_netd();
    wait_for("a DHCP address", Duration::from_secs(20), || {
        has_addr_in(&net, &c, "10.72.0.")
    });
    let acks = net.count("DHCPACK");
    let addr = net.addrs(&c);
    // T1 is 3 s: a renewal REQUEST and its ACK must appear within ~6 s.
    wait_for(
        "a renewal at T1 in dnsmasq's log",
        Duration::from_secs(8),
        || net.count("DHCPACK") > acks,
    );
    assert_eq!(
        net.count("DHCPDISCOVER"),
        1,
        "a renewal is not a new discovery"
    );
    assert!(
        net.netd_log().contains("to=\"renewing\""),
        "{}",
        net.netd_log()
    );
    assert_eq!(
        net.addrs(&c).split("valid_lft").next(),
        addr.split("valid_lft").next(),
        "same address after renewal"
    );
    net.assert_alive();
}

#[test]
fn server_gone_keeps_address_until_expiry() {
    let mut net = Net::new();
    let c = net.pair(73, true);
    net.network("50-dhcp.network", DHCP);
    // Lease 2 min (dnsmasq's minimum), T1 5 s, T2 10 s.
    net.dnsmasq(
        0,
        73,
        (50, 60),
        &["--dhcp-option=58,5", "--dhcp-option=59,10"],
    );
    net.start_netd();
    wait_for("a DHCP address", Duration::from_secs(20), || {
        has_addr_in(&net, &c, "10.73.0.")
    });
    let bound = Instant::now();
    net.stop_dnsmasq();
    // Renewing and rebinding fail; the address stays until the lease ends.
    while bound.elapsed() < Duration::from_secs(105) {
        assert!(
            has_addr_in(&net, &c, "10.73.0."),
            "address removed early, after {:?}",
            bound.elapsed()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let log = net.netd_log();
    assert!(
        log.contains("to=\"rebinding\""),
        "went through REBINDING: {log}"
    );
    wait_for(
        "the address to go at expiry",
        Duration::from_secs(30),
        || !has_addr_in(&net, &c, "10.73.0."),
    );
    assert!(
        bound.elapsed() >= Duration::from_secs(110),
        "removed at {:?}, lease is 120 s",
        bound.elapsed()
    );
    assert!(!net.routes(&c).contains("default"), "{}", net.routes(&c));
    // The kernel drops the address at its lifetime (the lease time) and
    // keel-netd's own expiry timer fires moments later: wait for it.
    wait_for(
        "keel-netd to handle the expiry",
        Duration::from_secs(10),
        || net.netd_log().contains("lease expired"),
    );
    assert!(
        !net.path(&format!("state/{c}.lease")).exists(),
        "expired lease forgotten"
    );
    net.assert_alive();
}

#[test]
fn restart_uses_init_reboot() {
    let mut net = Net::new();
    let c = net.pair(74, true);
    net.network("50-dhcp.network", DHCP);
    net.dnsmasq(0, 74, (50, 60), &[]);
    net.start_netd();
    wait_for("a DHCP address", Duration::from_secs(20), || {
        has_addr_in(&net, &c, "10.74.0.")
    });
    let first = net.addrs(&c);
    net.stop_netd();
    assert!(
        has_addr_in(&net, &c, "10.74.0."),
        "address kept across a daemon restart"
    );
    let requests = net.count("DHCPREQUEST");
    net.start_netd();
    wait_for(
        "a REQUEST from the restarted daemon",
        Duration::from_secs(20),
        || net.count("DHCPREQUEST") > requests,
    );
    wait_for("the ACK", Duration::from_secs(10), || {
        net.netd_log().matches("lease bound").count() >= 2
    });
    assert_eq!(
        net.count("DHCPDISCOVER"),
        1,
        "INIT-REBOOT sends no DISCOVER:\n{}",
        net.dnsmasq_log()
    );
    assert!(
        net.netd_log().contains("to=\"init-reboot\""),
        "{}",
        net.netd_log()
    );
    assert_eq!(
        net.addrs(&c).split("valid_lft").next(),
        first.split("valid_lft").next()
    );
    net.assert_alive();
}

#[test]
fn nak_goes_back_to_init() {
    let mut net = Net::new();
    let c = net.pair(75, true);
    net.network("50-dhcp.network", DHCP);
    net.dnsmasq(0, 75, (50, 59), &[]);
    net.start_netd();
    wait_for("a DHCP address", Duration::from_secs(20), || {
        has_addr_in(&net, &c, "10.75.0.5")
    });
    // An address and a route keel-netd did not add must survive everything below.
    net.ip(&["addr", "add", "192.0.2.1/24", "dev", &c]);
    net.ip(&[
        "route",
        "add",
        "198.18.0.0/24",
        "via",
        "192.0.2.254",
        "dev",
        &c,
    ]);
    net.stop_netd();
    // The server now serves another range and forgets the old lease: it
    // must NAK the stored lease (authoritative), and the client starts over.
    net.stop_dnsmasq();
    std::fs::remove_file(net.path("dnsmasq.leases")).unwrap();
    net.dnsmasq(0, 75, (200, 209), &["--dhcp-authoritative"]);
    net.start_netd();
    wait_for("the new address", Duration::from_secs(30), || {
        has_addr_in(&net, &c, "10.75.0.20")
    });
    assert!(
        net.dnsmasq_log().contains("DHCPNAK"),
        "{}",
        net.dnsmasq_log()
    );
    let log = net.netd_log();
    assert!(log.contains("server sent NAK"), "{log}");
    wait_for("the old address to go", Duration::from_secs(5), || {
        !has_addr_in(&net, &c, "10.75.0.5")
    });
    assert!(
        net.routes(&c).contains("198.18.0.0/24 via 192.0.2.254"),
        "foreign route kept: {}",
        net.routes(&c)
    );
    assert!(
        has_addr_in(&net, &c, "192.0.2.1/24"),
        "foreign address kept"
    );
    net.assert_alive();
}

#[test]
fn static_addresses_and_routes() {
    let mut net = Net::new();
    let c = net.pair(76, true);
    net.network(
        "10-static.network",
        "[Match]\nName=kt*\n[Link]\nMTUBytes=1400\n[Network]\nAddress=10.76.0.10/24\nGateway=10.76.0.1\nDNS=10.76.0.53\nDomains=static.test\n\
         LinkLocalAddressing=no\nIPv6AcceptRA=no\n\
         [Address]\nAddress=10.76.0.11/24\n[Route]\nDestination=198.51.100.0/24\nGateway=10.76.0.254\nMetric=50\n",
    );
    net.start_netd();
    wait_for("static addresses", Duration::from_secs(10), || {
        let a = net.addrs(&c);
        a.contains("inet 10.76.0.10/24") && a.contains("inet 10.76.0.11/24")
    });
    wait_for("static routes", Duration::from_secs(5), || {
        let r = net.routes(&c);
        r.contains("default via 10.76.0.1 proto static")
            && r.contains("198.51.100.0/24 via 10.76.0.254 proto static metric 50")
    });
    assert!(net.ip(&["link", "show", "dev", &c]).contains("mtu 1400"));
    assert!(
        net.addrs(&c).contains("valid_lft forever"),
        "static addresses do not expire"
    );
    let resolv = std::fs::read_to_string(net.path("run/resolv.conf")).unwrap();
    assert!(
        resolv.contains("nameserver 10.76.0.53\n") && resolv.contains("search static.test\n"),
        "{resolv}"
    );
    // LinkLocalAddressing=no: no fe80:: address; IPv6AcceptRA=no.
    assert!(
        !net.ip(&["-6", "addr", "show", "dev", &c]).contains("fe80"),
        "{}",
        net.ip(&["-6", "addr", "show", "dev", &c])
    );
    let ra = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.cli,
            "cat",
            &format!("/proc/sys/net/ipv6/conf/{c}/accept_ra"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ra.stdout).trim(), "0");
    // The kernel routes through what keel-netd installed.
    let get = net.ip(&["route", "get", "203.0.113.5"]);
    assert!(get.contains(&format!("via 10.76.0.1 dev {c}")), "{get}");
    let get = net.ip(&["route", "get", "198.51.100.7"]);
    assert!(get.contains("via 10.76.0.254"), "{get}");
    let (ok, out) = net.cli_cmd(&[
        "wait-online",
        "-i",
        &format!("{c}:routable"),
        "--timeout",
        "5",
    ]);
    assert!(ok, "{out}");
    net.assert_alive();
}

#[test]
fn two_links_static_and_dhcp() {
    let mut net = Net::new();
    let d = net.pair(77, true);
    let s = net.pair(78, true);
    net.network(
        "10-static.network",
        &format!("[Match]\nName={s}\n[Network]\nAddress=10.78.0.10/24\n"),
    );
    net.network(
        "20-dhcp.network",
        &format!("[Match]\nName={d}\n[Network]\nDHCP=ipv4\n"),
    );
    net.dnsmasq(0, 77, (50, 60), &[]);
    net.start_netd();
    wait_for("DHCP on the first link", Duration::from_secs(20), || {
        has_addr_in(&net, &d, "10.77.0.")
    });
    wait_for("static on the second link", Duration::from_secs(5), || {
        has_addr_in(&net, &s, "10.78.0.10/24")
    });
    assert!(!has_addr_in(&net, &s, "10.77."), "DHCP stays on its link");
    let (ok, out) = net.cli_cmd(&["wait-online", "--timeout", "10"]);
    assert!(ok, "{out}");
    let (_, out) = net.cli_cmd(&["status"]);
    assert!(
        out.contains("10-static.network") && out.contains("20-dhcp.network"),
        "{out}"
    );
    net.assert_alive();
}

#[test]
fn link_added_after_start_and_wait_online() {
    let mut net = Net::new();
    // An unconfigured link with RequiredForOnline=no and no carrier must not block.
    net.network(
        "05-spare.network",
        "[Match]\nName=spare0\n[Link]\nRequiredForOnline=no\n[Network]\nDHCP=yes\n",
    );
    // A veth whose peer stays down: no carrier.
    net.ip(&[
        "link", "add", "spare0", "type", "veth", "peer", "name", "spare1",
    ]);
    net.network("50-dhcp.network", DHCP);
    net.start_netd();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, _) = net.cli_cmd(&["wait-online", "--timeout", "1"]);
    assert!(!ok, "nothing required is online yet");
    let c = net.pair(79, false);
    net.dnsmasq(0, 79, (50, 60), &[]);
    sh(&["ip", "link", "set", &c, "netns", &net.cli]);
    wait_for("the new link's address", Duration::from_secs(20), || {
        has_addr_in(&net, &c, "10.79.0.")
    });
    let (ok, out) = net.cli_cmd(&["wait-online", "--timeout", "10"]);
    assert!(ok, "{out}");
    net.assert_alive();
}

/// A rogue sender in the server namespace floods the client with broken
/// DHCP replies (truncated, oversized, bad magic, wrong xid, garbage
/// options); keel-netd ignores them with a debug log, stays up, and still
/// takes the real server's lease afterwards.
#[test]
fn malformed_replies_are_ignored() {
    let mut net = Net::new();
    let c = net.pair(80, true);
    net.network("50-dhcp.network", DHCP);
    net.start_netd();
    wait_for(
        "keel-netd to start discovering",
        Duration::from_secs(10),
        || net.netd_log().contains("sending Discover"),
    );
    let script = r#"
import socket, struct, os
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind(("10.80.0.1", 67))
def bootp(xid, opts, magic=b"\x63\x82\x53\x63", hlen=6, chaddr=b"\x00"*16):
    hdr = struct.pack("!BBBBIHHIIII", 2, 1, hlen, 0, xid, 0, 0, 0, 0x0a500032, 0x0a500001, 0)
    return hdr + chaddr + b"\x00"*192 + magic + opts
cases = [
    b"", b"\x02" * 10, bootp(1, b"")[:200],
    bootp(2, b"\x35\x01\x02\xff", magic=b"\x00\x00\x00\x00"),
    bootp(3, b"\x35\x01\x02\x36\x04\x0a\x50\x00\x01\x33\x04\x00\x00\x0e\x10\xff"),
    bootp(4, b"\x35\x05\x02"), bootp(5, b"\x33\x02\x00\x01\x01\x03\x0a\x50\x00\xff"),
    bootp(6, b"\x35\x01\x02", hlen=200), bootp(7, os.urandom(300)),
    bootp(8, b"\x35\x01\x02" + b"\x00" * 1200),
]
for i in range(20):
    for p in cases:
        s.sendto(p, ("255.255.255.255", 68))
for i in range(50):
    s.sendto(os.urandom(i * 7), ("255.255.255.255", 68))
"#;
    let st = Command::new("ip")
        .args(["netns", "exec", &net.srv, "python3", "-c", script])
        .status()
        .unwrap();
    assert!(st.success(), "rogue sender failed");
    std::thread::sleep(Duration::from_millis(300));
    net.assert_alive();
    let log = net.netd_log();
    assert!(log.contains("ignoring dhcp packet"), "{log}");
    net.dnsmasq(0, 80, (50, 60), &[]);
    wait_for("the real lease", Duration::from_secs(40), || {
        has_addr_in(&net, &c, "10.80.0.")
    });
    net.assert_alive();
}

/// A `dbus-send` to org.keel.Network1 on the test's bus as `nobody`: the
/// shipped policy lets anyone call the read methods.
fn dbus_send_as_nobody(net: &Net, method: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "dbus-send",
        ])
        .arg(format!("--bus={}", net.bus_address()))
        .args([
            "--print-reply",
            "--dest=org.keel.Network1",
            "/org/keel/Network1",
            &format!("org.keel.Network1.{method}"),
        ])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// keel-netd owns org.keel.Network1 on a (private) system bus; `status`
/// answers over the bus with the lease, non-root callers may read, and
/// when the bus goes away `status` falls back to the state files.
#[test]
fn status_over_dbus() {
    let mut net = Net::new();
    let c = net.pair(81, true);
    net.network("50-dhcp.network", DHCP);
    net.dnsmasq(0, 81, (50, 60), &[]);
    net.start_bus("");
    net.start_netd();
    wait_for("a DHCP address", Duration::from_secs(20), || {
        has_addr_in(&net, &c, "10.81.0.")
    });
    wait_for("keel-netd on the bus", Duration::from_secs(10), || {
        net.netd_log()
            .contains("serving org.keel.Network1 on the system bus")
    });
    wait_for("the lease over D-Bus", Duration::from_secs(10), || {
        let (ok, out) = net.cli_cmd(&["status", &c]);
        ok && out.contains("DHCPv4 Lease: 10.81.0.")
    });
    let (ok, out) = net.cli_cmd(&["status", &c]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Source: keel-netd over D-Bus (org.keel.Network1)"),
        "{out}"
    );
    assert!(out.contains("Gateway: 10.81.0.1"), "{out}");
    // The bus answer, not the files: with the state files gone, the bus
    // still has the link.
    std::fs::remove_file(net.path(&format!("run/netd/links/{c}.json"))).unwrap();
    let (ok, out) = net.cli_cmd(&["status", &c]);
    assert!(ok && out.contains("DHCPv4 Lease: 10.81.0."), "{out}");

    let (ok, out) = dbus_send_as_nobody(&net, "ListLinks", &[]);
    assert!(
        ok && out.contains(&format!("\"name\":\"{c}\"")) && out.contains("10.81.0."),
        "{out}"
    );
    let (ok, out) = dbus_send_as_nobody(&net, "Describe", &[&format!("string:{c}")]);
    assert!(ok && out.contains("10.81.0."), "{out}");
    let (ok, out) = dbus_send_as_nobody(&net, "Describe", &["string:nosuch0"]);
    assert!(
        !ok && out.contains("org.keel.Network1.Error.NoSuchLink"),
        "{out}"
    );

    // The bus goes away: status says so and reads the files.
    net.stop_bus();
    wait_for("keel-netd to notice", Duration::from_secs(10), || {
        net.netd_log().contains("system bus connection closed")
    });
    // A state-file rewrite happens on the next change; recreate it now.
    net.stop_netd();
    net.start_netd();
    wait_for("the state file", Duration::from_secs(10), || {
        net.path(&format!("run/netd/links/{c}.json")).exists()
    });
    let (ok, out) = net.cli_cmd(&["status", &c]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Source: state files in") && out.contains("D-Bus not available"),
        "{out}"
    );
    assert!(out.contains("10.81.0."), "{out}");
    net.assert_alive();
}

/// No system bus at all: the daemon warns once and works; `status` reads
/// the state files and says why.
#[test]
fn no_bus_status_from_files() {
    let mut net = Net::new();
    let c = net.pair(84, true);
    net.network(
        "10-static.network",
        "[Match]\nName=kt*\n[Network]\nAddress=10.84.0.10/24\n",
    );
    net.start_netd();
    wait_for("the static address", Duration::from_secs(10), || {
        has_addr_in(&net, &c, "10.84.0.10/24")
    });
    let (ok, out) = net.cli_cmd(&["wait-online", "--timeout", "10"]);
    assert!(ok, "{out}");
    let (ok, out) = net.cli_cmd(&["status"]);
    assert!(ok, "{out}");
    assert!(out.contains("10.84.0.10/24"), "{out}");
    assert!(
        out.contains(&format!(
            "Source: state files in {} (D-Bus not available: connecting to the system bus:",
            net.path("run/netd/links").display()
        )),
        "{out}"
    );
    assert_eq!(
        net.netd_log()
            .matches("D-Bus system bus not available")
            .count(),
        1,
        "one warning, quiet retries"
    );
    net.assert_alive();
}

/// Stands in for systemd-hostnamed on the private bus and records calls.
struct FakeHostnamed {
    calls: std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
}

#[zbus::interface(name = "org.freedesktop.hostname1")]
impl FakeHostnamed {
    fn set_hostname(&self, name: String, interactive: bool) {
        self.calls.lock().unwrap().push((name, interactive));
    }
}

fn uts_hostname(pid: u32) -> String {
    sh(&["nsenter", "-t", &pid.to_string(), "-u", "hostname"])
        .trim()
        .to_string()
}

/// A DHCP hostname goes to systemd-hostnamed as a transient hostname
/// (`SetHostname(name, false)`); with hostnamed not on the bus keel-netd
/// falls back to sethostname(2); an admin hostname file wins over both.
#[test]
fn dhcp_hostname_through_hostnamed() {
    let mut net = Net::new();
    let c = net.pair(82, false);
    sh(&[
        "ip",
        "link",
        "set",
        "dev",
        &c,
        "address",
        "02:00:00:00:82:01",
    ]);
    sh(&["ip", "link", "set", &c, "netns", &net.cli]);
    net.network("50-dhcp.network", DHCP);
    net.dnsmasq(
        0,
        82,
        (50, 60),
        &["--dhcp-host=02:00:00:00:82:01,10.82.0.82,keel-dhcp"],
    );
    net.start_bus(
        r#"<policy user="root">
    <allow own="org.freedesktop.hostname1"/>
    <allow send_destination="org.freedesktop.hostname1"/>
  </policy>"#,
    );
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hostnamed = zbus::blocking::connection::Builder::address(net.bus_address().as_str())
        .unwrap()
        .name("org.freedesktop.hostname1")
        .unwrap()
        .serve_at(
            "/org/freedesktop/hostname1",
            FakeHostnamed {
                calls: calls.clone(),
            },
        )
        .unwrap()
        .build()
        .unwrap();
    net.start_netd();
    wait_for("the reserved address", Duration::from_secs(20), || {
        has_addr_in(&net, &c, "10.82.0.82/24")
    });
    wait_for("SetHostname on hostnamed", Duration::from_secs(15), || {
        !calls.lock().unwrap().is_empty()
    });
    assert_eq!(calls.lock().unwrap()[0], ("keel-dhcp".to_string(), false));
    assert!(
        net.netd_log()
            .contains("hostname set to keel-dhcp from DHCP through systemd-hostnamed"),
        "{}",
        net.netd_log()
    );

    // hostnamed gone from the bus: sethostname(2) in keel-netd's UTS namespace.
    drop(hostnamed);
    net.stop_netd();
    net.start_netd();
    let pid = net.netd.as_ref().unwrap().id();
    wait_for("the fallback hostname", Duration::from_secs(20), || {
        uts_hostname(pid) == "keel-dhcp"
    });
    assert!(
        net.netd_log().contains("systemd-hostnamed not reachable"),
        "{}",
        net.netd_log()
    );

    // The admin set a hostname: DHCP's is not applied.
    std::fs::write(net.path("hostname"), "admin-name\n").unwrap();
    net.stop_netd();
    let log_before = net.netd_log().len();
    net.start_netd();
    let pid = net.netd.as_ref().unwrap().id();
    wait_for("the lease again", Duration::from_secs(20), || {
        net.netd_log()[log_before..].contains("DHCPv4 lease configured")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_ne!(uts_hostname(pid), "keel-dhcp");
    assert_eq!(calls.lock().unwrap().len(), 1);
    net.assert_alive();
}

/// LinkLocalAddressing= and IPv6AcceptRA= are written per link, both ways:
/// against namespace defaults of "no link-local, no RA", `ipv6` and `yes`
/// turn them on (and the kernel makes the fe80:: address).
#[test]
fn ipv6_link_local_and_accept_ra_sysctls() {
    let mut net = Net::new();
    let sysctl = |net: &Net, key: &str| -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &net.cli, "cat"])
            .arg(format!("/proc/sys/net/ipv6/conf/{key}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (k, v) in [("addr_gen_mode", "1"), ("accept_ra", "0")] {
        sh(&[
            "ip",
            "netns",
            "exec",
            &net.cli,
            "sh",
            "-c",
            &format!("echo {v} > /proc/sys/net/ipv6/conf/default/{k}"),
        ]);
    }
    let on = net.pair(83, true);
    let off = net.pair(85, true);
    assert_eq!(
        sysctl(&net, &format!("{on}/addr_gen_mode")),
        "1",
        "precondition"
    );
    assert_eq!(
        sysctl(&net, &format!("{on}/accept_ra")),
        "0",
        "precondition"
    );
    net.network(
        "10-on.network",
        &format!("[Match]\nName={on}\n[Network]\nAddress=10.83.0.10/24\nLinkLocalAddressing=ipv6\nIPv6AcceptRA=yes\n"),
    );
    net.network(
        "10-off.network",
        &format!("[Match]\nName={off}\n[Network]\nAddress=10.85.0.10/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"),
    );
    net.start_netd();
    wait_for(
        "a link-local address on the ipv6 link",
        Duration::from_secs(10),
        || {
            net.ip(&["-6", "addr", "show", "dev", &on])
                .contains("inet6 fe80")
        },
    );
    assert_eq!(sysctl(&net, &format!("{on}/addr_gen_mode")), "0");
    assert_eq!(sysctl(&net, &format!("{on}/accept_ra")), "1");
    assert_eq!(sysctl(&net, &format!("{off}/addr_gen_mode")), "1");
    assert_eq!(sysctl(&net, &format!("{off}/accept_ra")), "0");
    wait_for("the other link configured", Duration::from_secs(10), || {
        has_addr_in(&net, &off, "10.85.0.10/24")
    });
    assert!(
        !net.ip(&["-6", "addr", "show", "dev", &off])
            .contains("fe80"),
        "{}",
        net.ip(&["-6", "addr", "show", "dev", &off])
    );
    net.assert_alive();
}

/// Two links on DHCP, each with a default route at the same metric: both
/// routes stay (a route is appended, never put in place of another link's).
#[test]
fn two_dhcp_links_keep_both_default_routes() {
    let mut net = Net::new();
    let a = net.pair(86, true);
    let b = net.pair(87, true);
    net.network("50-dhcp.network", DHCP);
    let second = net.server_if(1);
    net.dnsmasq(
        0,
        86,
        (50, 60),
        &[
            &format!("--interface={second}"),
            "--dhcp-range=10.87.0.50,10.87.0.60,2m",
        ],
    );
    net.start_netd();
    wait_for("both leases", Duration::from_secs(30), || {
        has_addr_in(&net, &a, "10.86.0.") && has_addr_in(&net, &b, "10.87.0.")
    });
    wait_for("both default routes", Duration::from_secs(10), || {
        let r = net.ip(&["-4", "route", "show", "default"]);
        r.contains(&format!("default via 10.86.0.1 dev {a} proto dhcp"))
            && r.contains(&format!("default via 10.87.0.1 dev {b} proto dhcp"))
    });
    let (ok, out) = net.cli_cmd(&["wait-online", "--timeout", "10"]);
    assert!(ok, "{out}");
    net.assert_alive();
}

/// Whether the build machine's kernel can create a link of `kind`
/// (`bond`, `vlan`, `bridge`): tried in a scratch namespace.
fn kernel_can(kind: &str) -> bool {
    let ns = format!("kprobe{}", std::process::id());
    sh(&["ip", "netns", "add", &ns]);
    let ok = |args: &[&str]| {
        Command::new("ip")
            .args(["-n", &ns])
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let can = match kind {
        "vlan" => {
            ok(&["link", "add", "kp0", "type", "veth", "peer", "name", "kp1"])
                && ok(&[
                    "link", "add", "link", "kp0", "name", "kp0.5", "type", "vlan", "id", "5",
                ])
        }
        k => ok(&["link", "add", "kp9", "type", k]),
    };
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    can
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The conformance corpus on real links (see tests/corpus/README.md): each
/// case with a `privileged` file gets veth links named as it says, a
/// keel-netd reading the case's six directories, and its expectations
/// checked with `ip`. Cases needing a link kind this kernel cannot create
/// are skipped, and say so.
#[test]
fn corpus_cases() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("privileged").exists())
        .collect();
    cases.sort();
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let spec = std::fs::read_to_string(case.join("privileged")).unwrap();
        let lines: Vec<&str> = spec
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let missing: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("requires "))
            .flat_map(|k| k.split_whitespace())
            .filter(|k| !kernel_can(k))
            .collect();
        if !missing.is_empty() {
            eprintln!("corpus {name}: skipped, this kernel cannot create {missing:?}");
            skipped.push(name);
            continue;
        }
        let mut net = Net::new();
        for l in &lines {
            if let Some(names) = l.strip_prefix("links ") {
                for (i, n) in names.split_whitespace().enumerate() {
                    let c = net.pair(90 + i as u8, true);
                    net.ip(&["link", "set", &c, "name", n]);
                }
            }
        }
        let dirs: Vec<PathBuf> = [
            "usr/lib/systemd/network",
            "usr/lib/keel/network",
            "run/systemd/network",
            "run/keel/network",
            "etc/systemd/network",
            "etc/keel/network",
        ]
        .iter()
        .map(|d| case.join(d))
        .collect();
        net.start_netd_dirs(&dirs);
        let mut negatives = Vec::new();
        for l in &lines {
            if l.starts_with("links ") || l.starts_with("requires ") {
                continue;
            }
            if let Some(n) = l.strip_prefix("sleep ") {
                std::thread::sleep(Duration::from_secs(n.parse().unwrap()));
                continue;
            }
            let (cmd, want) = l
                .split_once("=>")
                .unwrap_or_else(|| panic!("corpus {name}: bad line {l:?}"));
            let want = squash(want);
            if let Some(cmd) = cmd.trim().strip_prefix('!') {
                negatives.push((cmd.trim().to_string(), want));
                continue;
            }
            let cmd = cmd.trim();
            let get = || -> String {
                match cmd.strip_prefix("file ") {
                    Some(p) => std::fs::read_to_string(net.path(p.trim())).unwrap_or_default(),
                    None => {
                        let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
                        net.try_ip(&args)
                    }
                }
            };
            let start = Instant::now();
            while !squash(&get()).contains(&want) {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "corpus {name}: `{cmd}` never showed {want:?}; last:\n{}\nlog:\n{}",
                    get(),
                    net.netd_log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        for (cmd, want) in negatives {
            let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
            let out = net.try_ip(&args);
            assert!(
                !squash(&out).contains(&want),
                "corpus {name}: `{cmd}` shows {want:?}:\n{out}"
            );
        }
        net.assert_alive();
        ran.push(name);
    }
    eprintln!("corpus: ran {ran:?}; skipped {skipped:?}");
    assert!(ran.len() >= 6, "ran {ran:?}");
}

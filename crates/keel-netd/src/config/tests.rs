//! Golden tests on real-world style files, the negative-fixture table, the
//! directory rules, and a no-panic property test.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::load::{load, parse_text};
use super::*;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/golden")
}

/// Render a parse result as stable text: the network as JSON (path made
/// relative), or the error, then the warnings.
fn render(path: &Path, text: &str) -> String {
    let (r, warnings) = parse_text(Path::new(path.file_name().unwrap()), text);
    let mut out = match r {
        Ok(n) => serde_json::to_string_pretty(&n).unwrap(),
        Err(e) => format!("error: {e}"),
    };
    out.push('\n');
    for w in warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

#[test]
fn golden_files() {
    let mut n = 0;
    for e in std::fs::read_dir(golden_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("network") {
            continue;
        }
        let got = render(&p, &std::fs::read_to_string(&p).unwrap());
        let gp = p.with_extension("golden");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&gp, &got).unwrap();
        }
        let want =
            std::fs::read_to_string(&gp).unwrap_or_else(|_| panic!("missing {}", gp.display()));
        assert_eq!(got, want, "golden mismatch for {}", p.display());
        n += 1;
    }
    assert!(n >= 8, "expected the golden fixtures, found {n}");
}

#[test]
fn negative_fixtures() {
    let cases: &[(&str, &str)] = &[
        ("[Link]\nMTUBytes=jumbo\n", "x.network:2: invalid value 'jumbo' for Link.MTUBytes: expected a size in bytes (K, M, G suffixes allowed)"),
        ("[Link]\nMTUBytes=10\n", "x.network:2: invalid value '10' for Link.MTUBytes: MTU must be between 68 and 4294967295"),
        ("[Link]\nMTUBytes=8G\n", "x.network:2: invalid value '8G' for Link.MTUBytes: MTU must be between 68 and 4294967295"),
        ("[Link]\nUnmanaged=maybe\n", "x.network:2: invalid value 'maybe' for Link.Unmanaged: expected a boolean (yes/no)"),
        ("[Link]\nRequiredForOnline=sometimes\n", "x.network:2: invalid value 'sometimes' for Link.RequiredForOnline: expected a boolean or an operational state such as 'routable'"),
        ("[Link]\nMACAddress=52:54:00:12:34\n", "x.network:2: invalid value '52:54:00:12:34' for Link.MACAddress: expected a MAC address like 52:54:00:12:34:56"),
        ("[Match]\nMACAddress=zz:54:00:12:34:56\n", "x.network:2: invalid value 'zz:54:00:12:34:56' for Match.MACAddress: expected hexadecimal digits in MAC address"),
        ("[Network]\nDHCP=sometimes\n", "x.network:2: invalid value 'sometimes' for Network.DHCP: expected yes, no, ipv4 or ipv6"),
        ("[Network]\nAddress=10.0.0.1/33\n", "x.network:2: invalid value '10.0.0.1/33' for Network.Address: prefix length '33' is not 0..=32"),
        ("[Network]\nAddress=fe80::1/129\n", "x.network:2: invalid value 'fe80::1/129' for Network.Address: prefix length '129' is not 0..=128"),
        ("[Network]\nAddress=host/24\n", "x.network:2: invalid value 'host/24' for Network.Address: 'host' is not an IPv4 or IPv6 address"),
        ("[Network]\nGateway=10.0.0\n", "x.network:2: invalid value '10.0.0' for Network.Gateway: '10.0.0' is not an IPv4 or IPv6 address"),
        ("[Network]\nDNS=1.1.1.1 one\n", "x.network:2: invalid value '1.1.1.1 one' for Network.DNS: 'one' is not an IPv4 or IPv6 address (optionally with :port and #name)"),
        ("[Network]\nDNS=10.0.0.1:0\n", "x.network:2: invalid value '10.0.0.1:0' for Network.DNS: '10.0.0.1:0': port '0' is not 1..=65535"),
        ("[Network]\nDNS=[2001:db8::1\n", "x.network:2: invalid value '[2001:db8::1' for Network.DNS: '[2001:db8::1' is not an IPv4 or IPv6 address (optionally with :port and #name)"),
        ("[Network]\nVLAN=a/b\n", "x.network:2: invalid value 'a/b' for Network.VLAN: 'a/b' is not a valid interface name"),
        ("[Route]\nGateway=10.0.0.1\nTable=0\n", "x.network:3: invalid value '0' for Route.Table: table 0 is not a routing table"),
        ("[Route]\nGateway=10.0.0.1\nTable=vpn\n", "x.network:3: invalid value 'vpn' for Route.Table: named table 'vpn' (networkd.conf RouteTable=) is not supported; give the table number"),
        ("[RoutingPolicyRule]\nFrom=10.0.0.0/8\nIncomingInterface=eth0\n", "x.network:3: invalid value 'eth0' for RoutingPolicyRule.IncomingInterface: IncomingInterface= is not supported in [RoutingPolicyRule] (only From=, To=, Table=, Priority=); refusing the file rather than installing a broader rule"),
        ("[RoutingPolicyRule]\nFrom=10.0.0.0/8\nTo=2001:db8::/32\n", "x.network:1: invalid value '2001:db8::/32' for RoutingPolicyRule.To: From=10.0.0.0/8 and To=2001:db8::/32 are of different address families"),
        ("[Match]\nArchitecture=amd64\n", "x.network:2: invalid value 'amd64' for Match.Architecture: unknown architecture 'amd64' (x86-64, arm64, …)"),
        ("[Network]\nDomains=a..b\n", "x.network:2: invalid value 'a..b' for Network.Domains: 'a..b' is not a valid domain name"),
        ("[Network]\nLinkLocalAddressing=often\n", "x.network:2: invalid value 'often' for Network.LinkLocalAddressing: expected yes, no, ipv4, ipv6 or fallback"),
        ("[Network]\nIPv6AcceptRA=2\n", "x.network:2: invalid value '2' for Network.IPv6AcceptRA: expected a boolean (yes/no)"),
        ("[Address]\nAddress=x\n", "x.network:2: invalid value 'x' for Address.Address: 'x' is not an IPv4 or IPv6 address"),
        ("[Address]\nLabel=foo\n", "x.network:1: [Address] section is missing Address="),
        ("[Route]\nMetric=-1\n", "x.network:2: invalid value '-1' for Route.Metric: expected an unsigned 32-bit integer"),
        ("[Route]\nDestination=10.0.0.0/8\nScope=universe\n", "x.network:3: invalid value 'universe' for Route.Scope: expected global, site, link or host"),
        ("[Route]\nGateway=_dhcp5\n", "x.network:2: invalid value '_dhcp5' for Route.Gateway: '_dhcp5' is not an IPv4 or IPv6 address"),
        ("[Route]\nDestination=0.0.0.0/0\nPreferredSource=me\n", "x.network:3: invalid value 'me' for Route.PreferredSource: 'me' is not an IPv4 or IPv6 address"),
        ("[Route]\nMetric=5\n", "x.network:1: [Route] section is missing Destination= or Gateway="),
        ("[DHCPv4]\nRouteMetric=big\n", "x.network:2: invalid value 'big' for DHCPv4.RouteMetric: expected an unsigned 32-bit integer"),
        ("[DHCPv4]\nClientIdentifier=duid-only\n", "x.network:2: invalid value 'duid-only' for DHCPv4.ClientIdentifier: expected mac or duid"),
        ("[DHCPv4]\nUseDNS=perhaps\n", "x.network:2: invalid value 'perhaps' for DHCPv4.UseDNS: expected a boolean (yes/no)"),
        ("[Match\n", "x.network:1: unterminated section header '[Match'"),
        ("[Match]\nName\n", "x.network:2: expected 'Key=Value' or '[Section]', found 'Name'"),
    ];
    for (text, want) in cases {
        let (r, _) = parse_text(Path::new("x.network"), text);
        assert_eq!(r.unwrap_err().to_string(), *want, "input {text:?}");
    }
}

#[test]
fn warnings_name_file_and_line() {
    let (r, w) = parse_text(
        Path::new("w.network"),
        "[Match]\nName=eth0\nHost=foo\n[Network]\nDHCP=yes\nIPForward=yes\n[Bond]\nMode=1\n",
    );
    assert!(r.is_ok());
    let w: Vec<String> = w.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        [
            "w.network:6: unknown key 'IPForward' in [Network], ignoring",
            "w.network:7: unknown section [Bond], ignoring",
        ]
    );
}

/// Issue 18: an unknown [Match] key fails closed; DNS with port and
/// server name is accepted; Table= and [RoutingPolicyRule] are kept.
#[test]
fn issue_18_network_keys() {
    let (r, w) = parse_text(
        Path::new("u.network"),
        "[Match]\nName=eth*\nPermanentMACAddress=52:54:00:00:00:01\n[Network]\nDHCP=yes\n",
    );
    let n = r.unwrap();
    assert!(!n.match_.matches(&facts("eth0", "ether", None, None)));
    assert_eq!(
        w[0].to_string(),
        "u.network:3: unknown key 'PermanentMACAddress' in [Match]: keel-netd cannot test it, so this file matches no link"
    );
    let (r, w) = parse_text(
        Path::new("d.network"),
        "[Match]\nName=eth0\n[Network]\nDNS=10.0.0.1:53#dns.example [2001:db8::1]:853#name 9.9.9.9 fe80::1%eth0\n",
    );
    let n = r.unwrap();
    let dns: Vec<String> = n.dns.iter().map(|d| d.to_string()).collect();
    assert_eq!(dns, ["10.0.0.1", "2001:db8::1", "9.9.9.9", "fe80::1"]);
    let w: Vec<String> = w.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        [
            "d.network:4: DNS server '10.0.0.1:53#dns.example': using 10.0.0.1; server name dns.example not used (the resolver file holds addresses only)",
            "d.network:4: DNS server '[2001:db8::1]:853#name': using 2001:db8::1; port 853, server name name not used (the resolver file holds addresses only)",
            "d.network:4: DNS server 'fe80::1%eth0': using fe80::1; interface eth0 not used (the resolver file holds addresses only)",
        ]
    );
    let (r, _) = parse_text(
        Path::new("t.network"),
        "[Match]\nName=eth1\n[Route]\nGateway=10.1.0.1\nTable=100\n[Route]\nDestination=10.9.0.0/16\nTable=main\n\
         [RoutingPolicyRule]\nFrom=10.1.0.0/24\nTable=100\nPriority=100\n[RoutingPolicyRule]\nTo=2001:db8::/32\n",
    );
    let n = r.unwrap();
    assert_eq!(n.routes[0].table, Some(100));
    assert_eq!(n.routes[1].table, None, "Table=main is the main table");
    assert_eq!(n.rules.len(), 2);
    assert_eq!(
        (n.rules[0].table, n.rules[0].priority, n.rules[0].ipv6()),
        (100, Some(100), false)
    );
    assert_eq!((n.rules[1].table, n.rules[1].ipv6()), (254, true));
    let (r, w) = parse_text(
        Path::new("b.network"),
        "[Match]\nName=eth2\n[Network]\nBond=bond0\nVLAN=vlan10\nVLAN=vlan20 vlan30\nBridge=br0\nAddress=0.0.0.0/28\n",
    );
    let n = r.unwrap();
    assert_eq!(
        (n.bond.as_deref(), n.bridge.as_deref(), n.vlans.len()),
        (Some("bond0"), Some("br0"), 3)
    );
    assert!(n.addresses.is_empty(), "a pool address is not added");
    assert!(w[0].message.contains("from a pool"), "{w:?}");
}

#[test]
fn no_match_section_is_ignored_and_conditions_skip() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("etc");
    write(&d.join("10-all.network"), "[Network]\nDHCP=yes\n");
    write(
        &d.join("20-cmdline.network"),
        "[Match]\nName=eth0\nKernelCommandLine=keel.net=static\n[Network]\nAddress=10.0.0.2/24\n",
    );
    write(
        &d.join("30-vm.network"),
        "[Match]\nName=eth0\nVirtualization=vm\nArchitecture=x86-64\nHost=node*\n[Network]\nDHCP=yes\n",
    );
    let host = cond::HostFacts {
        cmdline: "console=ttyS0".into(),
        virtualization: Some("kvm".into()),
        hostname: "node1".into(),
        architecture: "x86-64".into(),
        ..Default::default()
    };
    let l = super::load::load_with(std::slice::from_ref(&d), &host);
    let names: Vec<&str> = l.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["30-vm.network"]);
    assert!(l.warnings[0]
        .to_string()
        .ends_with("10-all.network:1: no [Match] conditions: ignoring this file, as networkd does; add Name=* to [Match] to match every link"));
    let r = check::check(std::slice::from_ref(&d), &host);
    assert!(r.ok);
    assert!(r.text.contains("20-cmdline.network: ignored: conditions do not hold on this host (KernelCommandLine=keel.net=static)"), "{}", r.text);
    assert!(
        r.text.ends_with("3 files: 1 used, 2 ignored, 0 refused\n"),
        "{}",
        r.text
    );
}

#[test]
fn empty_assignment_resets_lists() {
    let (r, _) = parse_text(
        Path::new("r.network"),
        "[Network]\nAddress=10.0.0.1/24\nAddress=\nAddress=10.0.0.2/24\nGateway=10.0.0.1\nGateway=\n",
    );
    let n = r.unwrap();
    assert_eq!(n.addresses, vec!["10.0.0.2/24".parse().unwrap()]);
    assert!(n.gateways.is_empty());
    assert!(n.all_routes().is_empty());
}

fn facts(name: &str, type_: &str, kind: Option<&str>, driver: Option<&str>) -> LinkFacts {
    LinkFacts {
        name: name.into(),
        mac: Some("52:54:00:12:34:56".parse().unwrap()),
        driver: driver.map(Into::into),
        type_: type_.into(),
        kind: kind.map(Into::into),
    }
}

#[test]
fn matching_rules() {
    let (r, _) = parse_text(
        Path::new("f.network"),
        "[Match]\nName=*\nType=!loopback bridge\nDriver=!veth dummy\n",
    );
    let n = r.unwrap();
    assert!(n
        .match_
        .matches(&facts("ens3", "ether", None, Some("virtio_net"))));
    assert!(n.match_.matches(&facts("ens3", "ether", None, None)));
    assert!(!n.match_.matches(&facts("lo", "loopback", None, None)));
    // A leading "!" negates the whole line: neither veth nor dummy.
    assert!(!n
        .match_
        .matches(&facts("v0", "ether", Some("veth"), Some("veth"))));
    assert!(!n
        .match_
        .matches(&facts("d0", "ether", Some("dummy"), Some("dummy"))));
    assert!(!n
        .match_
        .matches(&facts("br0", "bridge", Some("bridge"), None)));
    let (r, _) = parse_text(
        Path::new("m.network"),
        "[Match]\nMACAddress=52:54:00:12:34:57 52-54-00-12-34-56\n",
    );
    assert!(r.unwrap().match_.matches(&facts("x", "ether", None, None)));
    let (r, _) = parse_text(Path::new("k.network"), "[Match]\nType=ether\nKind=!*\n");
    let n = r.unwrap();
    assert!(n
        .match_
        .matches(&facts("ens3", "ether", None, Some("e1000"))));
    assert!(!n
        .match_
        .matches(&facts("veth0", "ether", Some("veth"), None)));
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn directory_rules() {
    let t = tempfile::tempdir().unwrap();
    let (usr, run, etc) = (
        t.path().join("usr"),
        t.path().join("run"),
        t.path().join("etc"),
    );
    // Sorted by name across directories.
    write(
        &usr.join("99-default.network"),
        "[Match]\nName=*\n[Network]\nDHCP=yes\n",
    );
    write(
        &etc.join("10-eth0.network"),
        "[Match]\nName=eth0\n[Network]\nAddress=10.0.0.2/24\n",
    );
    // Same name: /etc replaces /usr/lib.
    write(
        &usr.join("20-eth1.network"),
        "[Match]\nName=eth1\n[Network]\nAddress=10.1.0.1/24\n",
    );
    write(
        &etc.join("20-eth1.network"),
        "[Match]\nName=eth1\n[Network]\nAddress=10.1.0.9/24\n",
    );
    // An empty file masks.
    write(&usr.join("30-eth2.network"), "[Match]\nName=eth2\n");
    write(&etc.join("30-eth2.network"), "");
    // A symlink to /dev/null masks too.
    write(&usr.join("31-eth3.network"), "[Match]\nName=eth3\n");
    std::fs::create_dir_all(&run).unwrap();
    std::os::unix::fs::symlink("/dev/null", run.join("31-eth3.network")).unwrap();
    // Drop-ins from any directory, by name; /etc replaces same-named.
    write(
        &usr.join("10-eth0.network.d/50-mtu.conf"),
        "[Link]\nMTUBytes=1400\n",
    );
    write(
        &run.join("10-eth0.network.d/60-dns.conf"),
        "[Network]\nDNS=10.0.0.53\n",
    );
    write(
        &etc.join("10-eth0.network.d/50-mtu.conf"),
        "[Link]\nMTUBytes=1500\n",
    );
    // An invalid file is rejected alone.
    write(
        &run.join("40-bad.network"),
        "[Match]\nName=eth4\n[Network]\nDHCP=often\n",
    );

    let l = load(&[usr.clone(), run.clone(), etc.clone()]);
    let names: Vec<&str> = l.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["10-eth0.network", "20-eth1.network", "99-default.network"]
    );
    assert_eq!(l.networks[0].link.mtu, Some(1500));
    assert_eq!(
        l.networks[0].dns,
        vec!["10.0.0.53".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(l.networks[0].dropins.len(), 2);
    assert_eq!(
        l.networks[1].addresses,
        vec!["10.1.0.9/24".parse().unwrap()]
    );
    assert_eq!(l.networks[1].path, etc.join("20-eth1.network"));
    assert_eq!(l.errors.len(), 1);
    assert_eq!(
        l.errors[0].to_string(),
        format!(
            "{}:4: invalid value 'often' for Network.DHCP: expected yes, no, ipv4 or ipv6",
            run.join("40-bad.network").display()
        )
    );
    // First match wins: eth0 gets its own file; eth2 (masked) and eth4
    // (rejected) fall through to the default.
    let f = |n: &str| find(&l.networks, &facts(n, "ether", None, None)).map(|n| n.name.clone());
    assert_eq!(f("eth0").as_deref(), Some("10-eth0.network"));
    assert_eq!(f("eth2").as_deref(), Some("99-default.network"));
    assert_eq!(f("eth4").as_deref(), Some("99-default.network"));
    // A drop-in with a bad value rejects its network.
    write(
        &etc.join("99-default.network.d/bad.conf"),
        "[Link]\nMTUBytes=x\n",
    );
    let l = load(&[usr, run, etc]);
    assert_eq!(l.networks.len(), 2);
    assert!(l.errors[1]
        .to_string()
        .contains("bad.conf:2: invalid value 'x' for Link.MTUBytes"));
}

#[test]
fn shipped_default_matches_physical_ethernet_only() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../overlay/lib/keel/network/99-default.network");
    let (r, w) = parse_text(&p, &std::fs::read_to_string(&p).unwrap());
    let n = r.unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert!(n.dhcp.v4());
    assert!(n
        .match_
        .matches(&facts("ens3", "ether", None, Some("virtio_net"))));
    assert!(!n.match_.matches(&facts("lo", "loopback", None, None)));
    assert!(!n
        .match_
        .matches(&facts("veth0", "ether", Some("veth"), None)));
    assert!(!n
        .match_
        .matches(&facts("docker0", "bridge", Some("bridge"), None)));
    assert!(!n
        .match_
        .matches(&facts("wlan0", "wlan", None, Some("iwlwifi"))));
}

proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_text(Path::new("p.network"), &text);
    }

    #[test]
    fn structured_input_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("[Match]".to_string()), Just("[Network]".to_string()), Just("[Route]".to_string()),
                Just("[Address]".to_string()), Just("[Link]".to_string()), Just("[DHCPv4]".to_string()),
                "[A-Za-z]{1,12}=[ -~]{0,20}",
                "(Name|Address|Gateway|DNS|MTUBytes|Destination|Metric|Scope|DHCP|MACAddress)=[0-9a-f:./ *!_-]{0,24}",
                "[ -~]{0,30}\\\\",
            ],
            0..30,
        )
    ) {
        let _ = parse_text(Path::new("s.network"), &lines.join("\n"));
    }
}

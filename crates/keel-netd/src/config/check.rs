//! `keel-netd check [DIR…]`: load everything the daemon would read and say,
//! per file, whether it is used, what it matches and what it does. Pure
//! over [`load_with`]; the binary prints the text and exits non-zero when
//! any file is refused.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::cond::HostFacts;
use super::load::{load_with, Loaded, Outcome};
use super::netdev::Kind;
use super::{DhcpMode, Gateway, Network, RequiredForOnline};

/// The report and whether every file was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub text: String,
    pub ok: bool,
}

fn matches(n: &Network) -> String {
    let m = &n.match_;
    if !m.unknown.is_empty() {
        return format!(
            "no link (unknown [Match] key {}: fail closed)",
            m.unknown.join(", ")
        );
    }
    let mut parts = Vec::new();
    let mut list = |k: &str, v: &[String]| {
        if !v.is_empty() {
            parts.push(format!("{k}={}", v.join(" ")));
        }
    };
    list("Name", &m.name);
    list("Driver", &m.driver);
    list("Type", &m.type_);
    list("Kind", &m.kind);
    if !m.mac.is_empty() {
        let macs: Vec<String> = m.mac.iter().map(|x| x.to_string()).collect();
        parts.push(format!("MACAddress={}", macs.join(" ")));
    }
    for c in &m.conditions {
        parts.push(format!("{c} (holds)"));
    }
    parts.join(", ")
}

fn does(n: &Network) -> Vec<String> {
    let mut v = Vec::new();
    if n.link.unmanaged {
        v.push("leaves the link unmanaged".to_string());
        return v;
    }
    if let Some(b) = &n.bond {
        v.push(format!("joins bond {b}"));
    }
    if let Some(b) = &n.bridge {
        v.push(format!("joins bridge {b}"));
    }
    if !n.vlans.is_empty() {
        v.push(format!("creates VLAN {} on top", n.vlans.join(", ")));
    }
    if let Some(m) = n.link.mtu {
        v.push(format!("MTU {m}"));
    }
    if let Some(m) = n.link.mac {
        v.push(format!("MAC address {m}"));
    }
    match n.dhcp {
        DhcpMode::No => {}
        DhcpMode::Ipv6 => v.push("DHCP=ipv6 (not implemented: no DHCPv6 client)".into()),
        DhcpMode::Yes | DhcpMode::Ipv4 => v.push("DHCPv4".into()),
    }
    for a in &n.addresses {
        v.push(format!("address {a}"));
    }
    for r in n.all_routes() {
        let mut s = match r.destination {
            Some(d) => format!("route {d}"),
            None => "default route".to_string(),
        };
        match r.gateway {
            Some(Gateway::Addr(g)) => s.push_str(&format!(" via {g}")),
            Some(Gateway::Dhcp4) => s.push_str(" via the DHCPv4 gateway"),
            None => {}
        }
        if let Some(t) = r.table {
            s.push_str(&format!(" table {t}"));
        }
        if let Some(m) = r.metric {
            s.push_str(&format!(" metric {m}"));
        }
        v.push(s);
    }
    for r in &n.rules {
        let mut s = "rule".to_string();
        if let Some(f) = r.from {
            s.push_str(&format!(" from {f}"));
        }
        if let Some(t) = r.to {
            s.push_str(&format!(" to {t}"));
        }
        if r.from.is_none() && r.to.is_none() {
            s.push_str(if r.ipv6() { " ipv6 all" } else { " ipv4 all" });
        }
        s.push_str(&format!(" lookup table {}", r.table));
        if let Some(p) = r.priority {
            s.push_str(&format!(" priority {p}"));
        }
        v.push(s);
    }
    if !n.dns.is_empty() {
        let d: Vec<String> = n.dns.iter().map(|x| x.to_string()).collect();
        v.push(format!("DNS {}", d.join(" ")));
    }
    if !n.domains.is_empty() {
        v.push(format!("search domains {}", n.domains.join(" ")));
    }
    if let Some(RequiredForOnline::No) = n.link.required_for_online {
        v.push("not required for online".into());
    }
    if v.is_empty() {
        v.push("brings the link up".into());
    }
    v
}

/// Render the report of a [`Loaded`].
pub fn render(l: &Loaded) -> Report {
    let mut t = String::new();
    let (mut used, mut ignored, mut refused) = (0, 0, 0);
    let vlans: Vec<&str> = l
        .netdevs
        .iter()
        .filter(|d| matches!(d.kind, Kind::Vlan(_)))
        .map(|d| d.ifname.as_str())
        .collect();
    for e in &l.entries {
        let p = e.path.display();
        match &e.outcome {
            Outcome::Masked => {
                ignored += 1;
                let _ = writeln!(t, "{p}: masked");
            }
            Outcome::Ignored(why) => {
                ignored += 1;
                let _ = writeln!(t, "{p}: ignored: {why}");
            }
            Outcome::Error(i) => {
                refused += 1;
                let _ = writeln!(t, "{p}: refused: {}", l.errors[*i]);
            }
            Outcome::NetDev(i) => {
                used += 1;
                let d = &l.netdevs[*i];
                let how = if d.independent() {
                    "at start"
                } else {
                    "on each link whose .network names it in VLAN="
                };
                let _ = writeln!(t, "{p}: creates {} ({how})", d.describe());
                if !d.independent() && !l.networks.iter().any(|n| n.vlans.contains(&d.ifname)) {
                    let _ = writeln!(
                        t,
                        "  note: no .network names {} in VLAN=, so it is never created",
                        d.ifname
                    );
                }
            }
            Outcome::Network(i) => {
                used += 1;
                let n = &l.networks[*i];
                let _ = writeln!(t, "{p}: matches {}", matches(n));
                let _ = writeln!(t, "  does: {}", does(n).join("; "));
                for v in &n.vlans {
                    if !vlans.contains(&v.as_str()) {
                        let _ = writeln!(
                            t,
                            "  note: no .netdev defines VLAN {v}: the link will report an error"
                        );
                    }
                }
                for (what, name) in [("bond", &n.bond), ("bridge", &n.bridge)] {
                    if let Some(name) = name {
                        if !l.netdevs.iter().any(|d| &d.ifname == name) {
                            let _ = writeln!(
                                t,
                                "  note: no .netdev defines {what} {name}: it must exist already"
                            );
                        }
                    }
                }
            }
        }
        for r in &e.replaces {
            let _ = writeln!(t, "  replaces: {}", r.display());
        }
        for w in &e.warnings {
            let _ = writeln!(t, "  warning: {w}");
        }
    }
    let _ = writeln!(
        t,
        "{} files: {used} used, {ignored} ignored, {refused} refused",
        l.entries.len()
    );
    Report {
        text: t,
        ok: refused == 0,
    }
}

/// Check the files under `dirs` (lowest priority first) against `host`.
pub fn check(dirs: &[PathBuf], host: &HostFacts) -> Report {
    render(&load_with(dirs, host))
}

//! `.netdev` files (systemd.netdev(5)): the virtual links keel-netd
//! creates over netlink. Supported kinds: `bond` (`[Bond]`), `vlan`
//! (`[VLAN]`), `bridge` (`[Bridge]`). A file of another kind, a missing
//! `Name=`/`Kind=`/`Id=`, or an invalid value is refused naming the file
//! and line; unknown keys in a known section are warnings, as in
//! `.network` files. `[Match]` holds host conditions only.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::cond::{self, Condition};
use super::syntax::{self, Entry, Section};
use super::{parse_bool, ConfigError, Mac, ValueError, Warning};

/// Bonding modes (`[Bond] Mode=`), named as networkd and the kernel do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    BalanceRr,
    ActiveBackup,
    BalanceXor,
    Broadcast,
    #[serde(rename = "802.3ad")]
    Ieee8023ad,
    BalanceTlb,
    BalanceAlb,
}

/// `[Bond] TransmitHashPolicy=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HashPolicy {
    #[serde(rename = "layer2")]
    Layer2,
    #[serde(rename = "layer3+4")]
    Layer34,
    #[serde(rename = "layer2+3")]
    Layer23,
    #[serde(rename = "encap2+3")]
    Encap23,
    #[serde(rename = "encap3+4")]
    Encap34,
    #[serde(rename = "vlan+srcmac")]
    VlanSrcMac,
}

/// `[Bond]`; times in milliseconds (the kernel's unit for bonds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bond {
    pub mode: Option<BondMode>,
    pub transmit_hash_policy: Option<HashPolicy>,
    /// `LACPTransmitRate=fast`.
    pub lacp_fast: Option<bool>,
    pub mii_monitor_ms: Option<u32>,
    pub up_delay_ms: Option<u32>,
    pub down_delay_ms: Option<u32>,
    pub min_links: Option<u32>,
}

/// `[VLAN]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vlan {
    pub id: u16,
}

/// `[Bridge]`; times in centiseconds (the kernel's USER_HZ clock_t).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bridge {
    pub stp: Option<bool>,
    pub forward_delay_cs: Option<u32>,
    pub hello_time_cs: Option<u32>,
    pub max_age_cs: Option<u32>,
    pub ageing_time_cs: Option<u32>,
    pub priority: Option<u16>,
    pub vlan_filtering: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Kind {
    Bond(Bond),
    Vlan(Vlan),
    Bridge(Bridge),
}

impl Kind {
    /// The rtnetlink kind string.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Bond(_) => "bond",
            Kind::Vlan(_) => "vlan",
            Kind::Bridge(_) => "bridge",
        }
    }
}

/// A validated `.netdev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetDev {
    /// File name (`10-bond0.netdev`).
    pub name: String,
    pub path: PathBuf,
    /// `[NetDev] Name=`: the interface to create.
    pub ifname: String,
    #[serde(flatten)]
    pub kind: Kind,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `[Match]` keys keel-netd does not know: the netdev is not created.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_match: Vec<String>,
}

fn bad(s: &Section, e: &Entry, reason: impl Into<String>) -> ConfigError {
    ConfigError::Value(Box::new(ValueError {
        file: s.file.clone(),
        line: e.line,
        section: s.name.clone(),
        key: e.key.clone(),
        value: e.value.clone(),
        reason: reason.into(),
    }))
}

/// A hint for values that carry what was meant as a trailing comment.
fn with_comment_hint(v: &str, reason: &str) -> String {
    if v.contains('#') || v.contains(';') {
        format!("{reason} (a '#' or ';' inside a value is not a comment in this syntax: comments are whole lines)")
    } else {
        reason.to_string()
    }
}

/// systemd time span (`parse_sec`): `100ms`, `1s`, `1min 30s`, `0.5`
/// (seconds without a unit); returns microseconds.
pub fn parse_timespan(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num.matches('.').count() > 1 || num == "." {
            return None;
        }
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let mul: u64 = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1_000_000,
            "us" | "usec" => 1,
            "ms" | "msec" => 1_000,
            "m" | "min" | "minute" | "minutes" => 60_000_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000_000,
            "d" | "day" | "days" => 86_400_000_000,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut v = int.checked_mul(mul)?;
        let mut scale = mul;
        for d in frac.chars().take(9) {
            scale /= 10;
            v = v.checked_add(u64::from(d.to_digit(10)?) * scale)?;
        }
        total = total.checked_add(v)?;
        rest = next;
    }
    Some(total)
}

fn time_in(s: &Section, e: &Entry, div: u64) -> Result<u32, ConfigError> {
    let us = parse_timespan(&e.value).ok_or_else(|| {
        bad(
            s,
            e,
            with_comment_hint(&e.value, "expected a time span such as 100ms or 1s"),
        )
    })?;
    u32::try_from(us / div).map_err(|_| bad(s, e, "time span too long"))
}

fn number<T: std::str::FromStr>(s: &Section, e: &Entry, what: &str) -> Result<T, ConfigError> {
    e.value.parse().map_err(|_| {
        bad(
            s,
            e,
            with_comment_hint(&e.value, &format!("expected {what}")),
        )
    })
}

fn boolean(s: &Section, e: &Entry) -> Result<bool, ConfigError> {
    parse_bool(&e.value).ok_or_else(|| {
        bad(
            s,
            e,
            with_comment_hint(&e.value, "expected a boolean (yes/no)"),
        )
    })
}

fn parse_bond(s: &Section, b: &mut Bond, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
    for e in &s.entries {
        let v = e.value.as_str();
        match e.key.as_str() {
            "Mode" => {
                b.mode = Some(match v {
                    "balance-rr" => BondMode::BalanceRr,
                    "active-backup" => BondMode::ActiveBackup,
                    "balance-xor" => BondMode::BalanceXor,
                    "broadcast" => BondMode::Broadcast,
                    "802.3ad" => BondMode::Ieee8023ad,
                    "balance-tlb" => BondMode::BalanceTlb,
                    "balance-alb" => BondMode::BalanceAlb,
                    _ => return Err(bad(s, e, with_comment_hint(v, "expected balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb or balance-alb"))),
                })
            }
            "TransmitHashPolicy" => {
                b.transmit_hash_policy = Some(match v {
                    "layer2" => HashPolicy::Layer2,
                    "layer3+4" => HashPolicy::Layer34,
                    "layer2+3" => HashPolicy::Layer23,
                    "encap2+3" => HashPolicy::Encap23,
                    "encap3+4" => HashPolicy::Encap34,
                    "vlan+srcmac" => HashPolicy::VlanSrcMac,
                    _ => return Err(bad(s, e, with_comment_hint(v, "expected layer2, layer3+4, layer2+3, encap2+3, encap3+4 or vlan+srcmac"))),
                })
            }
            "LACPTransmitRate" => {
                b.lacp_fast = Some(match v {
                    "slow" => false,
                    "fast" => true,
                    _ => return Err(bad(s, e, with_comment_hint(v, "expected slow or fast"))),
                })
            }
            "MIIMonitorSec" => b.mii_monitor_ms = Some(time_in(s, e, 1000)?),
            "UpDelaySec" => b.up_delay_ms = Some(time_in(s, e, 1000)?),
            "DownDelaySec" => b.down_delay_ms = Some(time_in(s, e, 1000)?),
            "MinLinks" => b.min_links = Some(number(s, e, "an unsigned integer")?),
            key => warnings.push(Warning {
                file: s.file.clone(),
                line: e.line,
                message: format!("unknown or unsupported key '{key}' in [Bond], ignoring"),
            }),
        }
    }
    Ok(())
}

fn parse_bridge(
    s: &Section,
    b: &mut Bridge,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    for e in &s.entries {
        match e.key.as_str() {
            "STP" => b.stp = Some(boolean(s, e)?),
            "ForwardDelaySec" => b.forward_delay_cs = Some(time_in(s, e, 10_000)?),
            "HelloTimeSec" => b.hello_time_cs = Some(time_in(s, e, 10_000)?),
            "MaxAgeSec" => b.max_age_cs = Some(time_in(s, e, 10_000)?),
            "AgeingTimeSec" => b.ageing_time_cs = Some(time_in(s, e, 10_000)?),
            "Priority" => b.priority = Some(number(s, e, "a number 0..=65535")?),
            "VLANFiltering" => b.vlan_filtering = Some(boolean(s, e)?),
            key => warnings.push(Warning {
                file: s.file.clone(),
                line: e.line,
                message: format!("unknown or unsupported key '{key}' in [Bridge], ignoring"),
            }),
        }
    }
    Ok(())
}

/// Build a [`NetDev`] from parsed sections.
pub fn from_sections(
    name: &str,
    path: &Path,
    sections: &[Section],
    warnings: &mut Vec<Warning>,
) -> Result<NetDev, ConfigError> {
    let warn = |warnings: &mut Vec<Warning>, file: &Path, line: usize, m: String| {
        warnings.push(Warning {
            file: file.to_path_buf(),
            line,
            message: m,
        })
    };
    let mut ifname: Option<String> = None;
    let mut kind: Option<(String, &Section, &Entry)> = None;
    let mut mtu = None;
    let mut mac = None;
    let mut conditions = Vec::new();
    let mut unknown_match = Vec::new();
    // First [NetDev] and [Match]; the kind decides which sections apply.
    for s in sections {
        for e in &s.entries {
            let v = e.value.as_str();
            match (s.name.as_str(), e.key.as_str()) {
                ("NetDev", "Name") => {
                    ifname =
                        Some(super::ifname(v).map_err(|r| bad(s, e, with_comment_hint(v, &r)))?)
                }
                ("NetDev", "Kind") => kind = Some((v.to_string(), s, e)),
                ("NetDev", "MTUBytes") => {
                    mtu = Some(
                        super::parse_bytes(v)
                            .and_then(|b| u32::try_from(b).ok())
                            .filter(|&m| m >= 68)
                            .ok_or_else(|| {
                                bad(
                                    s,
                                    e,
                                    with_comment_hint(v, "expected an MTU of at least 68 bytes"),
                                )
                            })?,
                    )
                }
                ("NetDev", "MACAddress") => {
                    mac = Some(
                        v.parse()
                            .map_err(|r: String| bad(s, e, with_comment_hint(v, &r)))?,
                    )
                }
                ("NetDev", "Description") => {}
                ("NetDev", key) => warn(
                    warnings,
                    &s.file,
                    e.line,
                    format!("unknown key '{key}' in [NetDev], ignoring"),
                ),
                ("Match", key) if cond::CondKind::parse(key).is_some() => {
                    if let Some(c) = Condition::parse(key, v).map_err(|r| bad(s, e, r))? {
                        conditions.push(c);
                    }
                }
                ("Match", key) => {
                    warn(
                        warnings,
                        &s.file,
                        e.line,
                        format!("unknown key '{key}' in [Match]: keel-netd cannot test it, so this netdev is not created"),
                    );
                    unknown_match.push(key.to_string());
                }
                _ => {}
            }
        }
    }
    let netdev_line = sections.iter().find(|s| s.name == "NetDev").map(|s| s.line);
    let missing = |key: &str| ConfigError::Missing {
        file: path.to_path_buf(),
        line: netdev_line.unwrap_or(1),
        section: "NetDev".into(),
        key: key.into(),
    };
    let Some((kind_name, ks, ke)) = kind else {
        return Err(missing("Kind"));
    };
    let ifname = ifname.ok_or_else(|| missing("Name"))?;
    let mut bond = Bond::default();
    let mut bridge = Bridge::default();
    let mut vlan_id: Option<u16> = None;
    let kind_section = match kind_name.as_str() {
        "bond" => "Bond",
        "vlan" => "VLAN",
        "bridge" => "Bridge",
        other => {
            return Err(bad(
                ks,
                ke,
                with_comment_hint(
                    other,
                    "keel-netd creates only Kind=bond, vlan or bridge; refusing this netdev",
                ),
            ))
        }
    };
    for s in sections {
        match s.name.as_str() {
            "NetDev" | "Match" => {}
            n if n == kind_section => match n {
                "Bond" => parse_bond(s, &mut bond, warnings)?,
                "Bridge" => parse_bridge(s, &mut bridge, warnings)?,
                _ => {
                    for e in &s.entries {
                        match e.key.as_str() {
                            "Id" => {
                                vlan_id = Some(
                                    e.value
                                        .parse::<u16>()
                                        .ok()
                                        .filter(|&i| i <= 4094)
                                        .ok_or_else(|| {
                                            bad(
                                                s,
                                                e,
                                                with_comment_hint(
                                                    &e.value,
                                                    "expected a VLAN id 0..=4094",
                                                ),
                                            )
                                        })?,
                                )
                            }
                            key => warn(
                                warnings,
                                &s.file,
                                e.line,
                                format!("unknown or unsupported key '{key}' in [VLAN], ignoring"),
                            ),
                        }
                    }
                }
            },
            "Bond" | "VLAN" | "Bridge" => warn(
                warnings,
                &s.file,
                s.line,
                format!(
                    "section [{}] does not apply to Kind={kind_name}, ignoring",
                    s.name
                ),
            ),
            other => warn(
                warnings,
                &s.file,
                s.line,
                format!("unknown section [{other}], ignoring"),
            ),
        }
    }
    let kind = match kind_section {
        "Bond" => Kind::Bond(bond),
        "Bridge" => Kind::Bridge(bridge),
        _ => Kind::Vlan(Vlan {
            id: vlan_id.ok_or_else(|| ConfigError::Missing {
                file: path.to_path_buf(),
                line: sections
                    .iter()
                    .find(|s| s.name == "VLAN")
                    .map(|s| s.line)
                    .or(netdev_line)
                    .unwrap_or(1),
                section: "VLAN".into(),
                key: "Id".into(),
            })?,
        }),
    };
    Ok(NetDev {
        name: name.to_string(),
        path: path.to_path_buf(),
        ifname,
        kind,
        mtu,
        mac,
        conditions,
        unknown_match,
    })
}

/// Parse one `.netdev` file's text (no drop-ins): the fuzzing entry point.
pub fn parse_text(path: &Path, text: &str) -> (Result<NetDev, ConfigError>, Vec<Warning>) {
    let mut warnings = Vec::new();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let r = syntax::parse(path, text, &mut warnings)
        .map_err(ConfigError::from)
        .and_then(|s| from_sections(&name, path, &s, &mut warnings));
    (r, warnings)
}

impl NetDev {
    /// One line saying what this netdev is.
    pub fn describe(&self) -> String {
        let mut out = format!("{} {}", self.kind.as_str(), self.ifname);
        match &self.kind {
            Kind::Bond(b) => {
                if let Some(m) = b.mode {
                    out.push_str(&format!(
                        " mode {}",
                        serde_json::to_value(m)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    ));
                }
                if let Some(p) = b.transmit_hash_policy {
                    out.push_str(&format!(
                        " xmit-hash {}",
                        serde_json::to_value(p)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    ));
                }
                if let Some(f) = b.lacp_fast {
                    out.push_str(if f {
                        " lacp-rate fast"
                    } else {
                        " lacp-rate slow"
                    });
                }
                if let Some(m) = b.mii_monitor_ms {
                    out.push_str(&format!(" miimon {m}ms"));
                }
                if let Some(m) = b.up_delay_ms {
                    out.push_str(&format!(" updelay {m}ms"));
                }
                if let Some(m) = b.down_delay_ms {
                    out.push_str(&format!(" downdelay {m}ms"));
                }
                if let Some(m) = b.min_links {
                    out.push_str(&format!(" min-links {m}"));
                }
            }
            Kind::Vlan(v) => out.push_str(&format!(" id {}", v.id)),
            Kind::Bridge(b) => {
                if let Some(s) = b.stp {
                    out.push_str(if s { " stp on" } else { " stp off" });
                }
                for (name, v) in [
                    ("forward-delay", b.forward_delay_cs),
                    ("hello-time", b.hello_time_cs),
                    ("max-age", b.max_age_cs),
                    ("ageing-time", b.ageing_time_cs),
                ] {
                    if let Some(cs) = v {
                        out.push_str(&format!(" {name} {}ms", u64::from(cs) * 10));
                    }
                }
                if let Some(p) = b.priority {
                    out.push_str(&format!(" priority {p}"));
                }
                if let Some(f) = b.vlan_filtering {
                    out.push_str(if f {
                        " vlan-filtering on"
                    } else {
                        " vlan-filtering off"
                    });
                }
            }
        }
        if let Some(m) = self.mtu {
            out.push_str(&format!(" mtu {m}"));
        }
        if let Some(m) = self.mac {
            out.push_str(&format!(" mac {m}"));
        }
        out
    }

    /// Created independently of any link (bonds, bridges), not on top of
    /// one through `VLAN=` (VLANs).
    pub fn independent(&self) -> bool {
        !matches!(self.kind, Kind::Vlan(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<NetDev, String> {
        parse_text(Path::new("x.netdev"), text)
            .0
            .map_err(|e| e.to_string())
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("100ms"), Some(100_000));
        assert_eq!(parse_timespan("1s"), Some(1_000_000));
        assert_eq!(parse_timespan("0.1"), Some(100_000));
        assert_eq!(parse_timespan("1min 30s"), Some(90_000_000));
        assert_eq!(parse_timespan("2 s"), Some(2_000_000));
        assert_eq!(parse_timespan("1.5ms"), Some(1_500));
        assert_eq!(parse_timespan("1x"), None);
        assert_eq!(parse_timespan("0 # c"), None);
        assert_eq!(parse_timespan("."), None);
        assert_eq!(parse_timespan("99999999999999999999d"), None);
    }

    #[test]
    fn bond_vlan_bridge() {
        let b = p("[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMode=802.3ad\nTransmitHashPolicy=layer3+4\nMIIMonitorSec=100ms\nLACPTransmitRate=fast\nUpDelaySec=200ms\n").unwrap();
        assert_eq!(
            b.describe(),
            "bond bond0 mode 802.3ad xmit-hash layer3+4 lacp-rate fast miimon 100ms updelay 200ms"
        );
        let v = p("[NetDev]\nName=vlan42\nKind=vlan\n[VLAN]\nId=42\n").unwrap();
        assert_eq!(v.describe(), "vlan vlan42 id 42");
        let br = p("[NetDev]\nName=br0\nKind=bridge\nMTUBytes=9000\n[Bridge]\nSTP=yes\nForwardDelaySec=4\n").unwrap();
        assert_eq!(
            br.describe(),
            "bridge br0 stp on forward-delay 4000ms mtu 9000"
        );
    }

    #[test]
    fn refusals_name_file_and_line() {
        let cases = [
            ("[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMode=0 # round robin\n",
             "x.netdev:5: invalid value '0 # round robin' for Bond.Mode: expected balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb or balance-alb (a '#' or ';' inside a value is not a comment in this syntax: comments are whole lines)"),
            ("[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMode=0\n",
             "x.netdev:5: invalid value '0' for Bond.Mode: expected balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb or balance-alb"),
            ("[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMIIMonitorSec=100ms # fast\n",
             "x.netdev:5: invalid value '100ms # fast' for Bond.MIIMonitorSec: expected a time span such as 100ms or 1s (a '#' or ';' inside a value is not a comment in this syntax: comments are whole lines)"),
            ("[NetDev]\nName=v\nKind=vlan\n[VLAN]\nId=4095\n",
             "x.netdev:5: invalid value '4095' for VLAN.Id: expected a VLAN id 0..=4094"),
            ("[NetDev]\nName=v\nKind=vlan\n", "x.netdev:1: [VLAN] section is missing Id="),
            ("[NetDev]\nKind=bond\n", "x.netdev:1: [NetDev] section is missing Name="),
            ("[NetDev]\nName=x\n", "x.netdev:1: [NetDev] section is missing Kind="),
            ("[NetDev]\nName=x\nKind=vxlan\n",
             "x.netdev:3: invalid value 'vxlan' for NetDev.Kind: keel-netd creates only Kind=bond, vlan or bridge; refusing this netdev"),
            ("[NetDev]\nName=this-name-is-too-long\nKind=bond\n",
             "x.netdev:2: invalid value 'this-name-is-too-long' for NetDev.Name: 'this-name-is-too-long' is not a valid interface name"),
            ("[NetDev]\nName=br0\nKind=bridge\n[Bridge]\nSTP=sometimes\n",
             "x.netdev:5: invalid value 'sometimes' for Bridge.STP: expected a boolean (yes/no)"),
        ];
        for (text, want) in cases {
            assert_eq!(p(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn warnings() {
        let (r, w) = parse_text(
            Path::new("w.netdev"),
            "[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMode=active-backup\nPrimaryReselectPolicy=always\n[VLAN]\nId=3\n",
        );
        assert!(r.is_ok());
        let w: Vec<String> = w.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            w,
            [
                "w.netdev:6: unknown or unsupported key 'PrimaryReselectPolicy' in [Bond], ignoring",
                "w.netdev:7: section [VLAN] does not apply to Kind=bond, ignoring"
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("[NetDev]".to_string()),
                    proptest::strategy::Just("[Bond]".to_string()),
                    proptest::strategy::Just("[VLAN]".to_string()),
                    proptest::strategy::Just("[Bridge]".to_string()),
                    proptest::strategy::Just("[Match]".to_string()),
                    "(Name|Kind|Mode|Id|MIIMonitorSec|STP|MTUBytes|Host|Virtualization)=[ -~]{0,16}",
                    "Kind=(bond|vlan|bridge)",
                    "[ -~]{0,24}",
                ],
                0..24,
            )
        ) {
            let (r, _) = parse_text(Path::new("p.netdev"), &lines.join("\n"));
            if let Ok(d) = r {
                let _ = d.describe();
                let _ = crate::netlink::netdev_message(&d, Some(2));
            }
        }
    }
}

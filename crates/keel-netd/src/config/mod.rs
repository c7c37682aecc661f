//! `.network` files: the model, its validation from the parsed syntax, and
//! the directory rules (see [`load`]).

pub mod check;
pub mod cond;
pub mod glob;
pub mod load;
pub mod netdev;
pub mod syntax;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use syntax::Warning;

/// A `.network` file (with its drop-ins) that was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Syntax(#[from] syntax::SyntaxError),
    #[error(transparent)]
    Value(Box<ValueError>),
    #[error("{file}:{line}: [{section}] section is missing {key}=")]
    Missing {
        file: PathBuf,
        line: usize,
        section: String,
        key: String,
    },
    #[error("reading {file}: {reason}")]
    Read { file: PathBuf, reason: String },
}

/// An invalid value: names the file, line, section and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: invalid value '{value}' for {section}.{key}: {reason}")]
pub struct ValueError {
    pub file: PathBuf,
    pub line: usize,
    pub section: String,
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// An Ethernet hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // systemd accepts xx:xx:xx:xx:xx:xx, xx-xx-…, and xxxx.xxxx.xxxx.
        let hex: String = if s.contains('.') {
            let groups: Vec<&str> = s.split('.').collect();
            if groups.len() != 3 || groups.iter().any(|g| g.len() != 4) {
                return Err("expected a MAC address like 52:54:00:12:34:56".into());
            }
            groups.concat()
        } else {
            let groups: Vec<&str> = s.split([':', '-']).collect();
            if groups.len() != 6 || groups.iter().any(|g| g.len() != 2) {
                return Err("expected a MAC address like 52:54:00:12:34:56".into());
            }
            groups.concat()
        };
        let mut out = [0u8; 6];
        for (i, b) in out.iter_mut().enumerate() {
            let pair = hex.get(i * 2..i * 2 + 2).ok_or("expected 12 hex digits")?;
            *b = u8::from_str_radix(pair, 16)
                .map_err(|_| "expected hexadecimal digits in MAC address".to_string())?;
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An address with prefix length, e.g. `192.168.1.10/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("prefix length '{p}' is not 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// `RequiredForOnline=`: a boolean or a minimum operational state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequiredForOnline {
    No,
    /// Yes, with the minimum operational state (default `degraded`).
    Yes(OperState),
}

/// The operational states networkd reports, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperState {
    Off,
    NoCarrier,
    Dormant,
    Carrier,
    Degraded,
    Routable,
}

impl OperState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperState::Off => "off",
            OperState::NoCarrier => "no-carrier",
            OperState::Dormant => "dormant",
            OperState::Carrier => "carrier",
            OperState::Degraded => "degraded",
            OperState::Routable => "routable",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" => OperState::Off,
            "no-carrier" => OperState::NoCarrier,
            "dormant" => OperState::Dormant,
            "carrier" => OperState::Carrier,
            "degraded" => OperState::Degraded,
            "routable" => OperState::Routable,
            _ => return None,
        })
    }
}

/// `[Match]`: every non-empty list must match (systemd list semantics).
/// Host conditions (`KernelCommandLine=`, `Virtualization=`, `Host=`,
/// `Architecture=`) are tested when the file is loaded ([`cond`]); a key
/// keel-netd does not know makes the file match no link (fail closed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Match {
    pub name: Vec<String>,
    pub mac: Vec<Mac>,
    pub driver: Vec<String>,
    #[serde(rename = "type")]
    pub type_: Vec<String>,
    pub kind: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<cond::Condition>,
    /// Match keys keel-netd does not know: the file matches nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
}

/// What the daemon knows about a link when matching files against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFacts {
    pub name: String,
    pub mac: Option<Mac>,
    pub driver: Option<String>,
    /// `ether`, `loopback`, `wlan`, `bridge`… (udev DEVTYPE, else ARPHRD).
    pub type_: String,
    /// The rtnetlink kind (`veth`, `bridge`…); None for physical devices.
    pub kind: Option<String>,
}

impl Match {
    /// No link property and no condition: networkd ignores such a file.
    pub fn is_empty(&self) -> bool {
        self.name.is_empty()
            && self.mac.is_empty()
            && self.driver.is_empty()
            && self.type_.is_empty()
            && self.kind.is_empty()
            && self.conditions.is_empty()
            && self.unknown.is_empty()
    }

    pub fn matches(&self, link: &LinkFacts) -> bool {
        if !self.unknown.is_empty() {
            return false;
        }
        let mac_ok = self.mac.is_empty() || link.mac.is_some_and(|m| self.mac.contains(&m));
        mac_ok
            && glob::match_list(&self.name, Some(&link.name))
            && glob::match_list(&self.driver, link.driver.as_deref())
            && glob::match_list(&self.type_, Some(&link.type_))
            && glob::match_list(&self.kind, link.kind.as_deref())
    }
}

/// `[Link]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkSection {
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub unmanaged: bool,
    pub required_for_online: Option<RequiredForOnline>,
}

/// `DHCP=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DhcpMode {
    #[default]
    No,
    Yes,
    Ipv4,
    Ipv6,
}

impl DhcpMode {
    pub fn v4(self) -> bool {
        matches!(self, DhcpMode::Yes | DhcpMode::Ipv4)
    }
}

/// A gateway: an address, or `_dhcp4` (the gateway the lease gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gateway {
    Addr(IpAddr),
    Dhcp4,
}

/// `[Route]` (and `Gateway=` in `[Network]`, which is a default route).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteCfg {
    pub destination: Option<Cidr>,
    pub gateway: Option<Gateway>,
    pub metric: Option<u32>,
    pub scope: Option<Scope>,
    pub preferred_source: Option<IpAddr>,
    /// `Table=`: the routing table (None: main).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    pub line: usize,
}

/// `[RoutingPolicyRule]`: From=, To=, Table=, Priority=. Any other key
/// refuses the file (a rule without its selector would be broader than
/// asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCfg {
    pub from: Option<Cidr>,
    pub to: Option<Cidr>,
    pub table: u32,
    pub priority: Option<u32>,
    pub line: usize,
}

impl RuleCfg {
    pub fn ipv6(&self) -> bool {
        self.from.or(self.to).is_some_and(|c| c.addr.is_ipv6())
    }
}

/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;

/// `Table=`: a number or `main`, `local`, `default`.
pub fn parse_table(v: &str) -> Result<u32, String> {
    match v {
        "main" => Ok(RT_TABLE_MAIN),
        "local" => Ok(255),
        "default" => Ok(253),
        _ => match v.parse::<u32>() {
            Ok(0) => Err("table 0 is not a routing table".into()),
            Ok(n) => Ok(n),
            Err(_) if v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
                Err(format!("named table '{v}' (networkd.conf RouteTable=) is not supported; give the table number"))
            }
            Err(_) => Err("expected a routing table number or main, local, default".into()),
        },
    }
}

/// A valid interface name (IFNAMSIZ, no '/', ':' or whitespace).
pub fn ifname(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ':' | '%' | '#'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not a valid interface name"))
    }
}

/// A `DNS=` word: `ADDR`, `ADDR:PORT`, `[ADDR]:PORT`, each optionally with
/// `%IFACE` and `#SERVERNAME` (systemd.network(5)). Returns the address and
/// what of the rest is not used: the resolver file keel-netd writes has a
/// place for the address only.
pub fn dns_server(w: &str) -> Result<(IpAddr, Vec<String>), String> {
    let bad = || format!("'{w}' is not an IPv4 or IPv6 address (optionally with :port and #name)");
    let mut unused = Vec::new();
    let (rest, name) = match w.split_once('#') {
        Some((r, n)) if !n.is_empty() => (r, Some(n)),
        Some(_) => return Err(bad()),
        None => (w, None),
    };
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if rest.parse::<IpAddr>().is_ok() || rest.matches(':').count() > 1 {
        (rest, None)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let (host, iface) = match host.split_once('%') {
        Some((h, i)) if !i.is_empty() => (h, Some(i)),
        Some(_) => return Err(bad()),
        None => (host, None),
    };
    let addr: IpAddr = host.parse().map_err(|_| bad())?;
    if let Some(p) = port {
        let p: u16 = p
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("'{w}': port '{p}' is not 1..=65535"))?;
        if p != 53 {
            unused.push(format!("port {p}"));
        }
    }
    if let Some(i) = iface {
        unused.push(format!("interface {i}"));
    }
    if let Some(n) = name {
        unused.push(format!("server name {n}"));
    }
    Ok((addr, unused))
}

/// Route scope (rtnetlink `RT_SCOPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Global,
    Site,
    Link,
    Host,
}

/// `ClientIdentifier=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientId {
    /// Type 1 + the link's MAC: stable as long as the hardware is.
    Mac,
    /// RFC 4361 IAID + DUID-EN derived from /etc/machine-id (networkd's default).
    #[default]
    Duid,
}

/// `[DHCPv4]` (also read from the legacy `[DHCP]` section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dhcp4Cfg {
    pub use_dns: bool,
    pub use_hostname: bool,
    pub use_mtu: bool,
    pub use_routes: bool,
    pub route_metric: u32,
    pub client_identifier: ClientId,
    pub send_hostname: bool,
}

impl Default for Dhcp4Cfg {
    fn default() -> Self {
        // networkd's defaults: UseMTU=no, metric 1024.
        Dhcp4Cfg {
            use_dns: true,
            use_hostname: true,
            use_mtu: false,
            use_routes: true,
            route_metric: 1024,
            client_identifier: ClientId::Duid,
            send_hostname: true,
        }
    }
}

/// A validated `.network` file with its drop-ins applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    /// File name (e.g. `50-eth0.network`), used for ordering and `status`.
    pub name: String,
    pub path: PathBuf,
    pub dropins: Vec<PathBuf>,
    #[serde(rename = "match")]
    pub match_: Match,
    pub link: LinkSection,
    pub dhcp: DhcpMode,
    pub addresses: Vec<Cidr>,
    /// `Gateway=` in `[Network]`: each is a default route.
    pub gateways: Vec<Gateway>,
    pub routes: Vec<RouteCfg>,
    pub dns: Vec<IpAddr>,
    pub domains: Vec<String>,
    pub link_local: Option<String>,
    pub ipv6_accept_ra: Option<bool>,
    pub dhcp4: Dhcp4Cfg,
    /// `Bond=`: the bond this link joins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bond: Option<String>,
    /// `Bridge=`: the bridge this link joins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// `VLAN=`: VLAN netdevs created on top of this link.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleCfg>,
}

/// systemd's boolean spellings.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// `MTUBytes=`: bytes with optional K/M/G (base 1024) suffix.
pub(crate) fn parse_bytes(s: &str) -> Option<u64> {
    let (num, mul) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1024u64),
        b'M' => (&s[..s.len() - 1], 1024 * 1024),
        b'G' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

fn parse_domain(d: &str) -> Result<String, String> {
    let name = d.strip_prefix('~').unwrap_or(d);
    let name = name.strip_suffix('.').unwrap_or(name);
    if d == "~" || d == "~." {
        return Ok(d.to_string());
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(d.to_string())
    } else {
        Err(format!("'{d}' is not a valid domain name"))
    }
}

struct Ctx<'a> {
    section: &'a syntax::Section,
    entry: &'a syntax::Entry,
}

impl Ctx<'_> {
    fn bad(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::Value(Box::new(ValueError {
            file: self.section.file.clone(),
            line: self.entry.line,
            section: self.section.name.clone(),
            key: self.entry.key.clone(),
            value: self.entry.value.clone(),
            reason: reason.into(),
        }))
    }
    fn boolean(&self) -> Result<bool, ConfigError> {
        parse_bool(&self.entry.value).ok_or_else(|| self.bad("expected a boolean (yes/no)"))
    }
    fn words(&self) -> impl Iterator<Item = &str> {
        self.entry.value.split_ascii_whitespace()
    }
}

/// Append to a list, or reset it on an empty assignment.
fn extend<T>(
    list: &mut Vec<T>,
    cx: &Ctx<'_>,
    mut f: impl FnMut(&str) -> Result<T, String>,
) -> Result<(), ConfigError> {
    if cx.entry.value.is_empty() {
        list.clear();
        return Ok(());
    }
    for w in cx.words() {
        list.push(f(w).map_err(|r| cx.bad(r))?);
    }
    Ok(())
}

/// A `[Match]` glob list: a leading `!` negates every word on the line
/// (systemd's config_parse_match_strv); empty resets.
fn match_words(list: &mut Vec<String>, cx: &Ctx<'_>) {
    let v = cx.entry.value.as_str();
    if v.is_empty() {
        list.clear();
        return;
    }
    let (invert, rest) = match v.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, v),
    };
    list.extend(rest.split_ascii_whitespace().map(|w| {
        if invert {
            format!("!{w}")
        } else {
            w.to_string()
        }
    }));
}

fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not an IPv4 or IPv6 address"))
}

fn gateway(s: &str) -> Result<Gateway, String> {
    if s == "_dhcp4" {
        Ok(Gateway::Dhcp4)
    } else {
        ip(s).map(Gateway::Addr)
    }
}

/// Build a [`Network`] from the sections of a file and its drop-ins, in
/// order. Unknown sections and keys become warnings.
pub fn from_sections(
    name: &str,
    path: &Path,
    dropins: Vec<PathBuf>,
    sections: &[syntax::Section],
    warnings: &mut Vec<Warning>,
) -> Result<Network, ConfigError> {
    let mut n = Network {
        name: name.to_string(),
        path: path.to_path_buf(),
        dropins,
        ..Default::default()
    };
    let warn = |warnings: &mut Vec<Warning>, s: &syntax::Section, line: usize, m: String| {
        warnings.push(Warning {
            file: s.file.clone(),
            line,
            message: m,
        })
    };
    for s in sections {
        // A repeated [Address]/[Route] section starts a new object.
        let mut addr: Option<(Option<Cidr>, usize)> = None;
        let mut route: Option<RouteCfg> = None;
        let mut rule: Option<RuleCfg> = None;
        match s.name.as_str() {
            "Address" => addr = Some((None, s.line)),
            "Route" => {
                route = Some(RouteCfg {
                    destination: None,
                    gateway: None,
                    metric: None,
                    scope: None,
                    preferred_source: None,
                    table: None,
                    line: s.line,
                })
            }
            "RoutingPolicyRule" => {
                rule = Some(RuleCfg {
                    from: None,
                    to: None,
                    table: RT_TABLE_MAIN,
                    priority: None,
                    line: s.line,
                })
            }
            "Match" | "Link" | "Network" | "DHCPv4" | "DHCP" => {}
            other => {
                warn(
                    warnings,
                    s,
                    s.line,
                    format!("unknown section [{other}], ignoring"),
                );
                continue;
            }
        }
        for e in &s.entries {
            let cx = Ctx {
                section: s,
                entry: e,
            };
            let v = e.value.as_str();
            match (s.name.as_str(), e.key.as_str()) {
                ("Match", "Name") => match_words(&mut n.match_.name, &cx),
                ("Match", "MACAddress") => extend(&mut n.match_.mac, &cx, |w| w.parse())?,
                ("Match", "Driver") => match_words(&mut n.match_.driver, &cx),
                ("Match", "Type") => match_words(&mut n.match_.type_, &cx),
                ("Match", "Kind") => match_words(&mut n.match_.kind, &cx),
                ("Match", key) if cond::CondKind::parse(key).is_some() => {
                    if let Some(c) = cond::Condition::parse(key, v).map_err(|r| cx.bad(r))? {
                        n.match_.conditions.push(c);
                    }
                }
                ("Match", key) => {
                    warn(
                        warnings,
                        s,
                        e.line,
                        format!("unknown key '{key}' in [Match]: keel-netd cannot test it, so this file matches no link"),
                    );
                    n.match_.unknown.push(key.to_string());
                }
                ("Link", "MTUBytes") => {
                    n.link.mtu = if v.is_empty() {
                        None
                    } else {
                        let b = parse_bytes(v).ok_or_else(|| {
                            cx.bad("expected a size in bytes (K, M, G suffixes allowed)")
                        })?;
                        Some(
                            u32::try_from(b)
                                .ok()
                                .filter(|&m| m >= 68)
                                .ok_or_else(|| cx.bad("MTU must be between 68 and 4294967295"))?,
                        )
                    }
                }
                ("Link", "MACAddress") => {
                    n.link.mac = if v.is_empty() {
                        None
                    } else {
                        Some(v.parse().map_err(|r: String| cx.bad(r))?)
                    }
                }
                ("Link", "Unmanaged") => n.link.unmanaged = cx.boolean()?,
                ("Link", "RequiredForOnline") => {
                    n.link.required_for_online = Some(match parse_bool(v) {
                        Some(true) => RequiredForOnline::Yes(OperState::Degraded),
                        Some(false) => RequiredForOnline::No,
                        None => {
                            // "degraded" or "degraded:routable": keep the minimum.
                            let min = v.split(':').next().unwrap_or(v);
                            RequiredForOnline::Yes(OperState::parse(min).ok_or_else(|| {
                                cx.bad(
                                    "expected a boolean or an operational state such as 'routable'",
                                )
                            })?)
                        }
                    })
                }
                ("Network", "DHCP") => {
                    n.dhcp = match v.to_ascii_lowercase().as_str() {
                        "ipv4" => DhcpMode::Ipv4,
                        "ipv6" => DhcpMode::Ipv6,
                        "both" => DhcpMode::Yes,
                        _ => match parse_bool(v) {
                            Some(true) => DhcpMode::Yes,
                            Some(false) => DhcpMode::No,
                            None => return Err(cx.bad("expected yes, no, ipv4 or ipv6")),
                        },
                    }
                }
                ("Network", "Address") => {
                    let mut list = std::mem::take(&mut n.addresses);
                    extend(&mut list, &cx, |w| w.parse())?;
                    n.addresses = drop_pool_addresses(list, warnings, s, e.line);
                }
                ("Network", "Gateway") => extend(&mut n.gateways, &cx, gateway)?,
                ("Network", "DNS") => {
                    if v.is_empty() {
                        n.dns.clear();
                    }
                    for w in cx.words() {
                        let (a, unused) = dns_server(w).map_err(|r| cx.bad(r))?;
                        if !unused.is_empty() {
                            warn(
                                warnings,
                                s,
                                e.line,
                                format!(
                                    "DNS server '{w}': using {a}; {} not used (the resolver file holds addresses only)",
                                    unused.join(", ")
                                ),
                            );
                        }
                        n.dns.push(a);
                    }
                }
                ("Network", "Bond") => {
                    n.bond = (!v.is_empty())
                        .then(|| ifname(v))
                        .transpose()
                        .map_err(|r| cx.bad(r))?
                }
                ("Network", "Bridge") => {
                    n.bridge = (!v.is_empty())
                        .then(|| ifname(v))
                        .transpose()
                        .map_err(|r| cx.bad(r))?
                }
                ("Network", "VLAN") => extend(&mut n.vlans, &cx, ifname)?,
                ("Network", "Domains") => extend(&mut n.domains, &cx, parse_domain)?,
                ("Network", "LinkLocalAddressing") => {
                    let ok = parse_bool(v).is_some()
                        || matches!(v, "ipv4" | "ipv6" | "fallback" | "ipv4-fallback");
                    if !ok {
                        return Err(cx.bad("expected yes, no, ipv4, ipv6 or fallback"));
                    }
                    n.link_local = Some(v.to_string());
                }
                ("Network", "IPv6AcceptRA") => n.ipv6_accept_ra = Some(cx.boolean()?),
                ("Address", "Address") => {
                    if let Some(a) = addr.as_mut() {
                        a.0 = Some(v.parse().map_err(|r: String| cx.bad(r))?);
                    }
                }
                ("RoutingPolicyRule", key) => {
                    let Some(r) = rule.as_mut() else { continue };
                    let cidr = |x: &str| -> Result<Option<Cidr>, ConfigError> {
                        if x.is_empty() {
                            Ok(None)
                        } else {
                            x.parse().map(Some).map_err(|m: String| cx.bad(m))
                        }
                    };
                    match key {
                        "From" => r.from = cidr(v)?,
                        "To" => r.to = cidr(v)?,
                        "Table" => r.table = parse_table(v).map_err(|m| cx.bad(m))?,
                        "Priority" => {
                            r.priority = Some(
                                v.parse()
                                    .map_err(|_| cx.bad("expected an unsigned 32-bit integer"))?,
                            )
                        }
                        _ => {
                            return Err(cx.bad(format!(
                                "{key}= is not supported in [RoutingPolicyRule] (only From=, To=, Table=, Priority=); refusing the file rather than installing a broader rule"
                            )))
                        }
                    }
                }
                ("Route", key) => {
                    let Some(r) = route.as_mut() else { continue };
                    match key {
                        "Destination" => {
                            r.destination = Some(v.parse().map_err(|x: String| cx.bad(x))?)
                        }
                        "Gateway" => r.gateway = Some(gateway(v).map_err(|x| cx.bad(x))?),
                        "Metric" => {
                            r.metric = Some(
                                v.parse()
                                    .map_err(|_| cx.bad("expected an unsigned 32-bit integer"))?,
                            )
                        }
                        "Scope" => {
                            r.scope = Some(match v {
                                "global" => Scope::Global,
                                "site" => Scope::Site,
                                "link" => Scope::Link,
                                "host" => Scope::Host,
                                _ => return Err(cx.bad("expected global, site, link or host")),
                            })
                        }
                        "PreferredSource" => {
                            r.preferred_source = Some(ip(v).map_err(|x| cx.bad(x))?)
                        }
                        "Table" => {
                            let t = parse_table(v).map_err(|x| cx.bad(x))?;
                            r.table = (t != RT_TABLE_MAIN).then_some(t);
                        }
                        _ => warn(
                            warnings,
                            s,
                            e.line,
                            format!("unknown key '{key}' in [Route], ignoring"),
                        ),
                    }
                }
                ("DHCPv4" | "DHCP", key) => {
                    let d = &mut n.dhcp4;
                    match key {
                        "UseDNS" => d.use_dns = cx.boolean()?,
                        "UseHostname" => d.use_hostname = cx.boolean()?,
                        "UseMTU" => d.use_mtu = cx.boolean()?,
                        "UseRoutes" => d.use_routes = cx.boolean()?,
                        "SendHostname" => d.send_hostname = cx.boolean()?,
                        "RouteMetric" => {
                            d.route_metric = v
                                .parse()
                                .map_err(|_| cx.bad("expected an unsigned 32-bit integer"))?
                        }
                        "ClientIdentifier" => {
                            d.client_identifier = match v {
                                "mac" => ClientId::Mac,
                                "duid" => ClientId::Duid,
                                _ => return Err(cx.bad("expected mac or duid")),
                            }
                        }
                        _ => warn(
                            warnings,
                            s,
                            e.line,
                            format!("unknown key '{key}' in [{}], ignoring", s.name),
                        ),
                    }
                }
                (sec, key) => warn(
                    warnings,
                    s,
                    e.line,
                    format!("unknown key '{key}' in [{sec}], ignoring"),
                ),
            }
        }
        if let Some((a, line)) = addr {
            match a {
                Some(a) => n.addresses.push(a),
                None => {
                    return Err(ConfigError::Missing {
                        file: s.file.clone(),
                        line,
                        section: "Address".into(),
                        key: "Address".into(),
                    })
                }
            }
        }
        if let Some(r) = route {
            if r.destination.is_none() && r.gateway.is_none() {
                return Err(ConfigError::Missing {
                    file: s.file.clone(),
                    line: r.line,
                    section: "Route".into(),
                    key: "Destination= or Gateway".into(),
                });
            }
            n.routes.push(r);
        }
        if let Some(r) = rule {
            if let (Some(f), Some(t)) = (r.from, r.to) {
                if f.addr.is_ipv4() != t.addr.is_ipv4() {
                    return Err(ConfigError::Value(Box::new(ValueError {
                        file: s.file.clone(),
                        line: r.line,
                        section: "RoutingPolicyRule".into(),
                        key: "To".into(),
                        value: t.to_string(),
                        reason: format!("From={f} and To={t} are of different address families"),
                    })));
                }
            }
            n.rules.push(r);
        }
    }
    Ok(n)
}

/// `Address=0.0.0.0/N` (or `::/N`) asks networkd to pick a free subnet
/// from a pool (the container files systemd ships use it); keel-netd has
/// no pool: the address is dropped with a warning instead of being added.
fn drop_pool_addresses(
    list: Vec<Cidr>,
    warnings: &mut Vec<Warning>,
    s: &syntax::Section,
    line: usize,
) -> Vec<Cidr> {
    list.into_iter()
        .filter(|a| {
            let pool = a.addr.is_unspecified();
            if pool {
                warnings.push(Warning {
                    file: s.file.clone(),
                    line,
                    message: format!(
                        "Address={a} asks for an address from a pool, which keel-netd does not allocate; ignoring it"
                    ),
                });
            }
            !pool
        })
        .collect()
}

/// The first network (in file-name order) that matches the link.
pub fn find<'a>(networks: &'a [Network], link: &LinkFacts) -> Option<&'a Network> {
    networks.iter().find(|n| n.match_.matches(link))
}

impl Network {
    /// `[Link] Unmanaged=yes`: the daemon leaves this link alone entirely.
    pub fn unmanaged(&self) -> bool {
        self.link.unmanaged
    }

    /// Every route this file asks for: `[Route]` sections, then one default
    /// route per `[Network] Gateway=`.
    pub fn all_routes(&self) -> Vec<RouteCfg> {
        let mut v = self.routes.clone();
        v.extend(self.gateways.iter().map(|g| RouteCfg {
            destination: None,
            gateway: Some(*g),
            metric: None,
            scope: None,
            preferred_source: None,
            table: None,
            line: 0,
        }));
        v
    }
}

#[cfg(test)]
mod tests;

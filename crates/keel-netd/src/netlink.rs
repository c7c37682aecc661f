//! Links, addresses and routes over rtnetlink (netlink-packet-route +
//! netlink-sys, synchronous: one request socket, one event socket).
//! [`Netlink`] is the seam: the daemon talks to the trait, tests use
//! [`fake::Fake`], the daemon uses [`Rtnl`].

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::NLM_F_EXCL;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{
    BondMode, BondXmitHashPolicy, BridgeStpState, InfoBond, InfoBridge, InfoData, InfoKind,
    InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::config::netdev::{self, NetDev};
use crate::config::{Cidr, Mac, RuleCfg};

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub up: bool,
    /// IFF_LOWER_UP: the carrier is there.
    pub carrier: bool,
    pub mtu: u32,
    pub loopback: bool,
    /// ARPHRD type name as networkd prints it (`ether`, `loopback`, `none`…).
    pub arphrd: &'static str,
    /// rtnetlink kind (`veth`, `bridge`…); None for hardware.
    pub kind: Option<String>,
    /// IFLA_MASTER: the bond or bridge this link is part of.
    pub master: Option<u32>,
}

/// A route keel-netd installs (always with the link as output device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub metric: u32,
    pub scope: crate::config::Scope,
    pub source: Option<IpAddr>,
    /// RTPROT_DHCP for lease routes, RTPROT_STATIC for configured ones.
    pub dhcp: bool,
    /// The routing table (`Table=`; 254 is main).
    pub table: u32,
}

/// A link change from the event socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Changed(Link),
    Removed(u32),
}

/// The operations the daemon needs; errors are io::Error with the kernel's errno.
pub trait Netlink {
    fn links(&mut self) -> io::Result<Vec<Link>>;
    fn set_up(&mut self, index: u32) -> io::Result<()>;
    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()>;
    fn set_mac(&mut self, index: u32, mac: Mac) -> io::Result<()>;
    /// Add or update (replace) an address; `lifetime` in seconds, None = forever.
    fn add_address(&mut self, index: u32, addr: Cidr, lifetime: Option<u32>) -> io::Result<()>;
    fn del_address(&mut self, index: u32, addr: Cidr) -> io::Result<()>;
    fn add_route(&mut self, index: u32, r: &Route) -> io::Result<()>;
    fn del_route(&mut self, index: u32, r: &Route) -> io::Result<()>;
    /// Addresses currently on the link (for status).
    fn addresses(&mut self, index: u32) -> io::Result<Vec<Cidr>>;
    fn set_down(&mut self, index: u32) -> io::Result<()>;
    /// Make `index` a port of the bond or bridge `master`.
    fn set_master(&mut self, index: u32, master: u32) -> io::Result<()>;
    /// Create a `.netdev`'s link; `parent` is the lower link of a VLAN.
    fn create_link(&mut self, d: &NetDev, parent: Option<u32>) -> io::Result<()>;
    /// Add a routing policy rule; the same rule already present is success.
    fn add_rule(&mut self, r: &RuleCfg) -> io::Result<()>;
}

fn arphrd_name(t: LinkLayerType) -> &'static str {
    match t {
        LinkLayerType::Ether => "ether",
        LinkLayerType::Loopback => "loopback",
        LinkLayerType::Ieee80211 => "wlan",
        LinkLayerType::None => "none",
        LinkLayerType::Ipgre | LinkLayerType::Tunnel | LinkLayerType::Tunnel6 => "tunnel",
        _ => "other",
    }
}

/// Decode a link message (pure; unit tested).
pub fn link_from_message(m: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut mac = None;
    let mut mtu = 0;
    let mut kind = None;
    let mut master = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Controller(i) if *i != 0 => master = Some(*i),
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut x = [0u8; 6];
                x.copy_from_slice(b);
                mac = Some(Mac(x));
            }
            LinkAttribute::Mtu(v) => mtu = *v,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let flags = m.header.flags;
    Some(Link {
        index: m.header.index,
        name: name?,
        mac,
        up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        mtu,
        loopback: flags.contains(LinkFlags::Loopback),
        arphrd: arphrd_name(m.header.link_layer_type),
        kind,
        master,
    })
}

/// The real side: rtnetlink sockets.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

/// The multicast event socket (RTNLGRP_LINK).
#[derive(Debug)]
pub struct Events {
    sock: Socket,
}

const RTNLGRP_LINK: u32 = 1;

impl Events {
    pub fn open() -> io::Result<Events> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.add_membership(RTNLGRP_LINK)?;
        sock.set_non_blocking(true)?;
        Ok(Events { sock })
    }

    /// Drain pending events. ENOBUFS (overrun) is reported as an error so
    /// the caller can resynchronise with a full dump.
    pub fn read(&mut self) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match self.sock.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) => return Err(e),
            };
            for msg in split(&buf[..n]) {
                match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                        if let Some(l) = link_from_message(&l) {
                            out.push(Event::Changed(l));
                        }
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                        out.push(Event::Removed(l.header.index))
                    }
                    _ => {}
                }
            }
        }
    }
}

impl AsRawFd for Events {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Split a netlink datagram into messages; undecodable ones are skipped
/// with a debug log (the kernel may send attributes newer than the crate).
fn split(mut bytes: &[u8]) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
    let mut out = Vec::new();
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < 16 || len > bytes.len() {
            break;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len]) {
            Ok(m) => out.push(m),
            Err(e) => tracing::debug!("skipping undecodable netlink message: {e}"),
        }
        let aligned = (len + 3) & !3;
        bytes = &bytes[aligned.min(bytes.len())..];
    }
    out
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { sock, seq: 1 })
    }

    /// Send a request and collect replies until ACK/DONE; returns the
    /// inner messages (for dumps).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | flags;
        hdr.sequence_number = seq;
        let mut packet = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf[..]);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        let mut rbuf = vec![0u8; 64 * 1024];
        loop {
            let n = self.sock.recv(&mut &mut rbuf[..], 0)?;
            for m in split(&rbuf[..n]) {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    NetlinkPayload::InnerMessage(i) => {
                        out.push(i);
                        if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn link_msg(index: u32) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m
    }
}

fn family(a: IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_addr(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v) => RouteAddress::Inet(v),
        IpAddr::V6(v) => RouteAddress::Inet6(v),
    }
}

fn address_message(index: u32, addr: Cidr, lifetime: Option<u32>) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(addr.addr);
    m.header.prefix_len = addr.prefix;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(addr.addr));
    m.attributes.push(AddressAttribute::Address(addr.addr));
    if let IpAddr::V4(v4) = addr.addr {
        if addr.prefix < 31 {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(addr.prefix))
                .unwrap_or(0);
            m.attributes
                .push(AddressAttribute::Broadcast(Ipv4Addr::from(
                    u32::from(v4) | !mask,
                )));
        }
    }
    if let Some(l) = lifetime {
        let mut ci = CacheInfo::default();
        ci.ifa_preferred = l;
        ci.ifa_valid = l;
        m.attributes.push(AddressAttribute::CacheInfo(ci));
    }
    m
}

/// Build the route message (pure; unit tested).
pub fn route_message(index: u32, r: &Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(r.destination);
    m.header.destination_prefix_length = r.prefix;
    // Tables above 255 go in RTA_TABLE with RT_TABLE_UNSPEC in the header.
    m.header.table = u8::try_from(r.table).unwrap_or(0);
    if r.table > 255 {
        m.attributes.push(RouteAttribute::Table(r.table));
    }
    m.header.protocol = if r.dhcp {
        RouteProtocol::Dhcp
    } else {
        RouteProtocol::Static
    };
    m.header.scope = match r.scope {
        crate::config::Scope::Global => RouteScope::Universe,
        crate::config::Scope::Site => RouteScope::Site,
        crate::config::Scope::Link => RouteScope::Link,
        crate::config::Scope::Host => RouteScope::Host,
    };
    m.header.kind = RouteType::Unicast;
    if r.prefix > 0 {
        m.attributes
            .push(RouteAttribute::Destination(route_addr(r.destination)));
    }
    if let Some(g) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(route_addr(g)));
    }
    if let Some(s) = r.source {
        m.attributes.push(RouteAttribute::PrefSource(route_addr(s)));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    m.attributes.push(RouteAttribute::Priority(r.metric));
    m
}

/// Build the message that creates a `.netdev` (pure; unit tested).
pub fn netdev_message(d: &NetDev, parent: Option<u32>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(d.ifname.clone()));
    if let Some(mtu) = d.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = d.mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if let Some(p) = parent {
        m.attributes.push(LinkAttribute::Link(p));
    }
    let (kind, data) = match &d.kind {
        netdev::Kind::Bond(b) => {
            let mut v = Vec::new();
            if let Some(mode) = b.mode {
                v.push(InfoBond::Mode(match mode {
                    netdev::BondMode::BalanceRr => BondMode::BalanceRr,
                    netdev::BondMode::ActiveBackup => BondMode::ActiveBackup,
                    netdev::BondMode::BalanceXor => BondMode::BalanceXor,
                    netdev::BondMode::Broadcast => BondMode::Broadcast,
                    netdev::BondMode::Ieee8023ad => BondMode::Ieee8023Ad,
                    netdev::BondMode::BalanceTlb => BondMode::BalanceTlb,
                    netdev::BondMode::BalanceAlb => BondMode::BalanceAlb,
                }));
            }
            if let Some(p) = b.transmit_hash_policy {
                v.push(InfoBond::XmitHashPolicy(match p {
                    netdev::HashPolicy::Layer2 => BondXmitHashPolicy::Layer2,
                    netdev::HashPolicy::Layer34 => BondXmitHashPolicy::Layer34,
                    netdev::HashPolicy::Layer23 => BondXmitHashPolicy::Layer23,
                    netdev::HashPolicy::Encap23 => BondXmitHashPolicy::Encap23,
                    netdev::HashPolicy::Encap34 => BondXmitHashPolicy::Encap34,
                    netdev::HashPolicy::VlanSrcMac => BondXmitHashPolicy::VlanSrcMac,
                }));
            }
            if let Some(f) = b.lacp_fast {
                v.push(InfoBond::AdLacpRate(if f {
                    netlink_packet_route::link::BondLacpRate::Fast
                } else {
                    netlink_packet_route::link::BondLacpRate::Slow
                }));
            }
            if let Some(x) = b.mii_monitor_ms {
                v.push(InfoBond::MiiMon(x));
            }
            if let Some(x) = b.up_delay_ms {
                v.push(InfoBond::UpDelay(x));
            }
            if let Some(x) = b.down_delay_ms {
                v.push(InfoBond::DownDelay(x));
            }
            if let Some(x) = b.min_links {
                v.push(InfoBond::MinLinks(x));
            }
            (InfoKind::Bond, InfoData::Bond(v))
        }
        netdev::Kind::Vlan(vl) => (InfoKind::Vlan, InfoData::Vlan(vec![InfoVlan::Id(vl.id)])),
        netdev::Kind::Bridge(b) => {
            let mut v = Vec::new();
            if let Some(stp) = b.stp {
                v.push(InfoBridge::StpState(if stp {
                    BridgeStpState::KernelStp
                } else {
                    BridgeStpState::Disabled
                }));
            }
            if let Some(x) = b.forward_delay_cs {
                v.push(InfoBridge::ForwardDelay(x));
            }
            if let Some(x) = b.hello_time_cs {
                v.push(InfoBridge::HelloTime(x));
            }
            if let Some(x) = b.max_age_cs {
                v.push(InfoBridge::MaxAge(x));
            }
            if let Some(x) = b.ageing_time_cs {
                v.push(InfoBridge::AgeingTime(x));
            }
            if let Some(x) = b.priority {
                v.push(InfoBridge::Priority(x));
            }
            if let Some(x) = b.vlan_filtering {
                v.push(InfoBridge::VlanFiltering(x));
            }
            (InfoKind::Bridge, InfoData::Bridge(v))
        }
    };
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(kind),
        LinkInfo::Data(data),
    ]));
    m
}

/// Build a routing policy rule message (pure; unit tested).
pub fn rule_message(r: &RuleCfg) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if r.ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.action = RuleAction::ToTable;
    m.header.table = u8::try_from(r.table).unwrap_or(0);
    if let Some(f) = r.from {
        m.header.src_len = f.prefix;
        m.attributes.push(RuleAttribute::Source(f.addr));
    }
    if let Some(t) = r.to {
        m.header.dst_len = t.prefix;
        m.attributes.push(RuleAttribute::Destination(t.addr));
    }
    m.attributes.push(RuleAttribute::Table(r.table));
    if let Some(p) = r.priority {
        m.attributes.push(RuleAttribute::Priority(p));
    }
    m
}

impl Netlink for Rtnl {
    fn links(&mut self) -> io::Result<Vec<Link>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => link_from_message(l),
                _ => None,
            })
            .collect())
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = Self::link_msg(index);
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(drop)
    }

    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut m = Self::link_msg(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(drop)
    }

    fn set_mac(&mut self, index: u32, mac: Mac) -> io::Result<()> {
        let mut m = Self::link_msg(index);
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(drop)
    }

    fn add_address(&mut self, index: u32, addr: Cidr, lifetime: Option<u32>) -> io::Result<()> {
        let m = address_message(index, addr, lifetime);
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    fn del_address(&mut self, index: u32, addr: Cidr) -> io::Result<()> {
        let m = address_message(index, addr, None);
        self.request(RouteNetlinkMessage::DelAddress(m), NLM_F_ACK)
            .map(drop)
    }

    /// Add a route next to any other route to the same destination and
    /// metric (NLM_F_APPEND, as systemd-networkd does): NLM_F_REPLACE would
    /// take over another link's default route, or one keel-netd did not add.
    /// The same route already present is success (a renewal, a restart).
    fn add_route(&mut self, index: u32, r: &Route) -> io::Result<()> {
        match self.request(
            RouteNetlinkMessage::NewRoute(route_message(index, r)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    fn del_route(&mut self, index: u32, r: &Route) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::DelRoute(route_message(index, r)),
            NLM_F_ACK,
        )
        .map(drop)
    }

    fn set_down(&mut self, index: u32) -> io::Result<()> {
        let mut m = Self::link_msg(index);
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(drop)
    }

    fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        let mut m = Self::link_msg(index);
        m.attributes.push(LinkAttribute::Controller(master));
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(drop)
    }

    fn create_link(&mut self, d: &NetDev, parent: Option<u32>) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::NewLink(netdev_message(d, parent)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    fn add_rule(&mut self, r: &RuleCfg) -> io::Result<()> {
        match self.request(
            RouteNetlinkMessage::NewRule(rule_message(r)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    fn addresses(&mut self, index: u32) -> io::Result<Vec<Cidr>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index {
                continue;
            }
            let addr = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = addr.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                out.push(Cidr {
                    addr: ip,
                    prefix: a.header.prefix_len,
                });
            }
        }
        Ok(out)
    }
}

/// A recording fake for unit tests.
pub mod fake {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// In-memory kernel: links, addresses and routes per link, plus a log.
    #[derive(Debug, Default)]
    pub struct Fake {
        pub links: BTreeMap<u32, Link>,
        pub addrs: BTreeMap<u32, BTreeSet<(String, Option<u32>)>>,
        pub routes: BTreeMap<u32, Vec<Route>>,
        pub rules: Vec<RuleCfg>,
        pub log: Vec<String>,
    }

    impl Netlink for Fake {
        fn links(&mut self) -> io::Result<Vec<Link>> {
            Ok(self.links.values().cloned().collect())
        }
        fn set_up(&mut self, index: u32) -> io::Result<()> {
            self.log.push(format!("up {index}"));
            let l = self
                .links
                .get_mut(&index)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
            l.up = true;
            Ok(())
        }
        fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
            self.log.push(format!("mtu {index} {mtu}"));
            if let Some(l) = self.links.get_mut(&index) {
                l.mtu = mtu;
            }
            Ok(())
        }
        fn set_mac(&mut self, index: u32, mac: Mac) -> io::Result<()> {
            self.log.push(format!("mac {index} {mac}"));
            Ok(())
        }
        fn add_address(&mut self, index: u32, addr: Cidr, lifetime: Option<u32>) -> io::Result<()> {
            self.log.push(format!("addr+ {index} {addr}"));
            let set = self.addrs.entry(index).or_default();
            set.retain(|(a, _)| *a != addr.to_string());
            set.insert((addr.to_string(), lifetime));
            Ok(())
        }
        fn del_address(&mut self, index: u32, addr: Cidr) -> io::Result<()> {
            self.log.push(format!("addr- {index} {addr}"));
            self.addrs
                .entry(index)
                .or_default()
                .retain(|(a, _)| *a != addr.to_string());
            Ok(())
        }
        fn add_route(&mut self, index: u32, r: &Route) -> io::Result<()> {
            self.log.push(format!(
                "route+ {index} {}/{} via {:?}",
                r.destination, r.prefix, r.gateway
            ));
            let v = self.routes.entry(index).or_default();
            v.retain(|x| x != r);
            v.push(*r);
            Ok(())
        }
        fn del_route(&mut self, index: u32, r: &Route) -> io::Result<()> {
            self.log.push(format!(
                "route- {index} {}/{} via {:?}",
                r.destination, r.prefix, r.gateway
            ));
            let v = self.routes.entry(index).or_default();
            let before = v.len();
            v.retain(|x| x != r);
            if v.len() == before {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        }
        fn set_down(&mut self, index: u32) -> io::Result<()> {
            self.log.push(format!("down {index}"));
            if let Some(l) = self.links.get_mut(&index) {
                l.up = false;
            }
            Ok(())
        }
        fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
            self.log.push(format!("master {index} {master}"));
            if let Some(l) = self.links.get_mut(&index) {
                l.master = Some(master);
            }
            Ok(())
        }
        fn create_link(&mut self, d: &NetDev, parent: Option<u32>) -> io::Result<()> {
            self.log
                .push(format!("create {} parent {parent:?}", d.describe()));
            if self.links.values().any(|l| l.name == d.ifname) {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            let index = self.links.keys().max().copied().unwrap_or(1) + 1;
            self.links.insert(
                index,
                Link {
                    index,
                    name: d.ifname.clone(),
                    mac: d.mac,
                    up: false,
                    carrier: false,
                    mtu: d.mtu.unwrap_or(1500),
                    loopback: false,
                    arphrd: "ether",
                    kind: Some(d.kind.as_str().to_string()),
                    master: None,
                },
            );
            Ok(())
        }
        fn add_rule(&mut self, r: &RuleCfg) -> io::Result<()> {
            self.log.push(format!(
                "rule+ from {:?} to {:?} table {} priority {:?}",
                r.from.map(|c| c.to_string()),
                r.to.map(|c| c.to_string()),
                r.table,
                r.priority
            ));
            if !self.rules.contains(r) {
                self.rules.push(r.clone());
            }
            Ok(())
        }
        fn addresses(&mut self, index: u32) -> io::Result<Vec<Cidr>> {
            Ok(self
                .addrs
                .get(&index)
                .map(|s| s.iter().filter_map(|(a, _)| a.parse().ok()).collect())
                .unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RT_TABLE_MAIN;

    #[test]
    fn decodes_link_messages() {
        let mut m = LinkMessage::default();
        m.header.index = 3;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        m.header.link_layer_type = LinkLayerType::Ether;
        m.attributes.push(LinkAttribute::IfName("veth0".into()));
        m.attributes
            .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]));
        m.attributes.push(LinkAttribute::Mtu(1500));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Veth,
            )]));
        m.attributes.push(LinkAttribute::Controller(7));
        let l = link_from_message(&m).unwrap();
        assert_eq!(l.name, "veth0");
        assert!(l.up && l.carrier && !l.loopback);
        assert_eq!(l.arphrd, "ether");
        assert_eq!(l.kind.as_deref(), Some("veth"));
        assert_eq!(l.master, Some(7));
        assert_eq!(l.mac.unwrap().to_string(), "02:00:00:00:00:01");
        // Serialise and split it back, as the kernel would deliver it.
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewLink(m)),
        );
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf[..]);
        let mut two = buf.clone();
        two.extend_from_slice(&buf);
        assert_eq!(split(&two).len(), 2);
        assert!(
            split(&two[..20]).is_empty(),
            "truncated datagram yields nothing"
        );
        // Without a name there is no link.
        assert!(link_from_message(&LinkMessage::default()).is_none());
    }

    #[test]
    fn route_messages() {
        let r = Route {
            destination: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            prefix: 0,
            gateway: Some("10.0.0.1".parse().unwrap()),
            metric: 1024,
            scope: crate::config::Scope::Global,
            source: None,
            dhcp: true,
            table: RT_TABLE_MAIN,
        };
        let m = route_message(4, &r);
        assert_eq!(m.header.protocol, RouteProtocol::Dhcp);
        assert_eq!(m.header.table, 254);
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_))),
            "default route has no RTA_DST"
        );
        assert!(m.attributes.contains(&RouteAttribute::Oif(4)));
        assert!(m.attributes.contains(&RouteAttribute::Priority(1024)));
        let a = address_message(4, "10.0.0.5/24".parse().unwrap(), Some(120));
        assert!(a
            .attributes
            .contains(&AddressAttribute::Broadcast("10.0.0.255".parse().unwrap())));
        let m = route_message(4, &Route { table: 100, ..r });
        assert_eq!(m.header.table, 100);
        let m = route_message(4, &Route { table: 1000, ..r });
        assert_eq!(m.header.table, 0);
        assert!(m.attributes.contains(&RouteAttribute::Table(1000)));
    }

    #[test]
    fn netdev_and_rule_messages() {
        let (d, _) = crate::config::netdev::parse_text(
            std::path::Path::new("b.netdev"),
            "[NetDev]\nName=bond0\nKind=bond\nMTUBytes=9000\n[Bond]\nMode=802.3ad\nMIIMonitorSec=100ms\nLACPTransmitRate=fast\n",
        );
        let m = netdev_message(&d.unwrap(), None);
        assert!(m
            .attributes
            .contains(&LinkAttribute::IfName("bond0".into())));
        assert!(m.attributes.contains(&LinkAttribute::Mtu(9000)));
        assert!(m.attributes.contains(&LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bond),
            LinkInfo::Data(InfoData::Bond(vec![
                InfoBond::Mode(BondMode::Ieee8023Ad),
                InfoBond::AdLacpRate(netlink_packet_route::link::BondLacpRate::Fast),
                InfoBond::MiiMon(100),
            ])),
        ])));
        let (d, _) = crate::config::netdev::parse_text(
            std::path::Path::new("v.netdev"),
            "[NetDev]\nName=vlan42\nKind=vlan\n[VLAN]\nId=42\n",
        );
        let m = netdev_message(&d.unwrap(), Some(3));
        assert!(m.attributes.contains(&LinkAttribute::Link(3)));
        let r = RuleCfg {
            from: Some("10.1.0.0/24".parse().unwrap()),
            to: None,
            table: 100,
            priority: Some(100),
            line: 1,
        };
        let m = rule_message(&r);
        assert_eq!(
            (m.header.family, m.header.src_len, m.header.table),
            (AddressFamily::Inet, 24, 100)
        );
        assert!(m.attributes.contains(&RuleAttribute::Priority(100)));
        assert_eq!(m.header.action, RuleAction::ToTable);
    }
}

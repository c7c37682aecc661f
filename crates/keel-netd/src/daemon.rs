//! The daemon: matches links to `.network` files, applies static settings,
//! runs a DHCPv4 client per link, and publishes state. [`Manager`] holds
//! the logic over the [`Netlink`] trait (unit tested with the fake);
//! [`run`] is the poll loop with the real sockets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::netdev::{self, NetDev};
use crate::config::{
    self, Cidr, Gateway, LinkFacts, Network, OperState, RequiredForOnline, Scope, RT_TABLE_MAIN,
};
use crate::dhcp::client::{Action, Client, ClientConfig, Dest};
use crate::dhcp::lease::{Lease, StoredLease};
use crate::netlink::{Event, Link, Netlink, Route};
use crate::sock::{PacketSocket, UdpSocket};
use crate::state::{self, DhcpStatus, LinkStatus};

/// Where the daemon reads and writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub network_dirs: Vec<PathBuf>,
    /// Persistent leases (`/var/lib/keel/netd`).
    pub state_dir: PathBuf,
    /// Runtime state (`/run/keel`): `netd/links/*.json`, `resolv.conf`.
    pub run_dir: PathBuf,
    /// Admin hostname file (`/etc/hostname`) and machine id.
    pub hostname_file: PathBuf,
    pub machine_id_file: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            network_dirs: config::load::DEFAULT_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            state_dir: keel_contract::paths::NETD_STATE_DIR.into(),
            run_dir: keel_contract::paths::RUN_DIR.into(),
            hostname_file: "/etc/hostname".into(),
            machine_id_file: "/etc/machine-id".into(),
        }
    }
}

/// A message for the loop to send on a link's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub index: u32,
    pub dest: Dest,
    pub payload: Vec<u8>,
}

/// Per-link bookkeeping.
#[derive(Debug)]
pub struct LinkCtl {
    pub link: Link,
    pub network: Option<Network>,
    pub static_done: bool,
    /// Addresses and routes keel-netd added: the only ones it removes.
    pub owned_addrs: Vec<Cidr>,
    pub owned_routes: Vec<Route>,
    pub dhcp_addr: Option<Cidr>,
    pub dhcp_routes: Vec<Route>,
    pub client: Option<Client>,
    pub lease: Option<(Lease, SystemTime)>,
    pub error: Option<String>,
    pub packet: Option<PacketSocket>,
    pub udp: Option<UdpSocket>,
}

/// Host effects outside netlink: sysfs facts and the hostname.
pub trait Host {
    /// (driver, udev DEVTYPE) for a link name.
    fn facts(&self, name: &str) -> (Option<String>, Option<String>);
    /// Set the (transient) hostname; may complete asynchronously.
    fn set_hostname(&mut self, name: &str) -> std::io::Result<()>;
    /// Write `/proc/sys/net/ipv6/conf/<link>/<key>`.
    fn ipv6_sysctl(&mut self, link: &str, key: &str, value: &str) -> std::io::Result<()>;
}

/// The real host: /sys, and the hostname through systemd-hostnamed or
/// sethostname(2) on a worker thread (a D-Bus call must not stall DHCP).
#[derive(Debug, Default)]
pub struct RealHost {
    hostname: Option<crate::bus::HostnameWorker>,
}

impl Host for RealHost {
    fn facts(&self, name: &str) -> (Option<String>, Option<String>) {
        let base = Path::new("/sys/class/net").join(name);
        let driver = std::fs::read_link(base.join("device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let devtype = std::fs::read_to_string(base.join("uevent"))
            .ok()
            .and_then(|u| {
                u.lines()
                    .find_map(|l| l.strip_prefix("DEVTYPE=").map(|s| s.trim().to_string()))
            });
        (driver, devtype)
    }
    fn set_hostname(&mut self, name: &str) -> std::io::Result<()> {
        if self.hostname.is_none() {
            match crate::bus::HostnameWorker::start() {
                Ok(w) => self.hostname = Some(w),
                Err(e) => {
                    tracing::warn!("starting the hostname thread: {e}; using sethostname(2)");
                    return nix::unistd::sethostname(name).map_err(std::io::Error::from);
                }
            }
        }
        match &self.hostname {
            Some(w) => w.request(name),
            None => nix::unistd::sethostname(name).map_err(std::io::Error::from),
        }
    }
    fn ipv6_sysctl(&mut self, link: &str, key: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(
            Path::new("/proc/sys/net/ipv6/conf").join(link).join(key),
            value,
        )
    }
}

/// IPv6 sysctls from `LinkLocalAddressing=` and `IPv6AcceptRA=`:
/// no IPv6 link-local address (addr_gen_mode 1) unless link-local
/// addressing includes IPv6; accept_ra as configured.
pub fn ipv6_settings(n: &Network) -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    if let Some(ll) = n.link_local.as_deref() {
        let v6 = matches!(ll, "ipv6" | "fallback") || config::parse_bool(ll) == Some(true);
        v.push(("addr_gen_mode", if v6 { "0" } else { "1" }));
    }
    if let Some(ra) = n.ipv6_accept_ra {
        v.push(("accept_ra", if ra { "1" } else { "0" }));
    }
    v
}

/// The daemon's state over a netlink implementation.
#[derive(Debug)]
pub struct Manager<N: Netlink, H: Host> {
    pub nl: N,
    pub host: H,
    pub paths: Paths,
    pub networks: Vec<Network>,
    pub netdevs: Vec<NetDev>,
    pub links: BTreeMap<u32, LinkCtl>,
    machine_id: Option<String>,
    /// Whether to open real sockets (false in unit tests).
    pub sockets: bool,
    /// Links whose state file must be rewritten by [`Manager::flush`];
    /// deferred so DHCP messages go out before any file is written.
    dirty: std::collections::BTreeSet<u32>,
    resolv_dirty: bool,
    /// Last state written per link, to skip identical rewrites.
    written: BTreeMap<u32, LinkStatus>,
    /// The same state for the D-Bus thread, when it runs.
    pub snapshot: Option<crate::bus::Snapshot>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<N: Netlink, H: Host> Manager<N, H> {
    pub fn new(nl: N, host: H, paths: Paths) -> Self {
        let machine_id = std::fs::read_to_string(&paths.machine_id_file).ok();
        let mut m = Manager {
            nl,
            host,
            paths,
            networks: Vec::new(),
            netdevs: Vec::new(),
            links: BTreeMap::new(),
            machine_id,
            sockets: true,
            dirty: Default::default(),
            resolv_dirty: true,
            written: BTreeMap::new(),
            snapshot: None,
        };
        m.load_config();
        m
    }

    /// (Re)load `.network` files, logging warnings and rejected files.
    pub fn load_config(&mut self) {
        let loaded = config::load::load(&self.paths.network_dirs);
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        for e in &loaded.errors {
            tracing::error!("{e}; file ignored");
        }
        tracing::info!(
            files = loaded.networks.len(),
            netdevs = loaded.netdevs.len(),
            "loaded network configuration"
        );
        self.networks = loaded.networks;
        self.netdevs = loaded.netdevs;
    }

    /// Create the bonds and bridges of `.netdev` files that do not exist
    /// yet. An existing link of that name is left as it is (networkd does
    /// the same); one of another kind is reported.
    pub fn create_netdevs(&mut self) {
        let links = match self.nl.links() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("listing links: {e}");
                return;
            }
        };
        let mut created = Vec::new();
        for d in self.netdevs.iter().filter(|d| d.independent()) {
            match links.iter().find(|l| l.name == d.ifname) {
                Some(l) if l.kind.as_deref() == Some(d.kind.as_str()) => {
                    tracing::debug!(netdev = %d.ifname, "exists already")
                }
                Some(l) => tracing::error!(
                    netdev = %d.ifname,
                    file = %d.path.display(),
                    "a link named {} exists with kind {}, not {}; not creating it",
                    d.ifname,
                    l.kind.as_deref().unwrap_or("none"),
                    d.kind.as_str()
                ),
                None => match self.nl.create_link(d, None) {
                    Ok(()) => {
                        tracing::info!(netdev = %d.ifname, file = %d.path.display(), "created {}", d.describe());
                        created.push(d.clone());
                    }
                    Err(e) => {
                        tracing::error!(netdev = %d.ifname, file = %d.path.display(), "creating {}: {e}", d.describe())
                    }
                },
            }
        }
        for d in created {
            self.pin_mtu(&d);
        }
    }

    /// Set a new netdev's `MTUBytes=` again after creation: an MTU given
    /// only at creation is not "set by the user" for the kernel, and a
    /// bridge would take the smaller MTU of the first port that joins.
    fn pin_mtu(&mut self, d: &NetDev) {
        let Some(mtu) = d.mtu else { return };
        let Some(index) = self.index_of(&d.ifname) else {
            return;
        };
        if let Err(e) = self.nl.set_mtu(index, mtu) {
            tracing::error!(netdev = %d.ifname, "setting MTU {mtu}: {e}");
        }
    }

    fn index_of(&mut self, name: &str) -> Option<u32> {
        if let Some((i, _)) = self.links.iter().find(|(_, c)| c.link.name == name) {
            return Some(*i);
        }
        self.nl
            .links()
            .ok()?
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| l.index)
    }

    fn facts(&self, l: &Link) -> LinkFacts {
        let (driver, devtype) = self.host.facts(&l.name);
        LinkFacts {
            name: l.name.clone(),
            mac: l.mac,
            driver,
            type_: devtype.unwrap_or_else(|| l.arphrd.to_string()),
            kind: l.kind.clone(),
        }
    }

    /// Enumerate links at start (or after an event overrun).
    pub fn sync(&mut self, now: Instant) -> Vec<Outgoing> {
        self.create_netdevs();
        let links = match self.nl.links() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("listing links: {e}");
                return Vec::new();
            }
        };
        let present: Vec<u32> = links.iter().map(|l| l.index).collect();
        let gone: Vec<u32> = self
            .links
            .keys()
            .filter(|i| !present.contains(i))
            .copied()
            .collect();
        for i in gone {
            self.removed(i);
        }
        let mut out = Vec::new();
        for l in links {
            out.extend(self.changed(l, now));
        }
        out
    }

    pub fn event(&mut self, e: Event, now: Instant) -> Vec<Outgoing> {
        match e {
            Event::Changed(l) => self.changed(l, now),
            Event::Removed(i) => {
                self.removed(i);
                Vec::new()
            }
        }
    }

    fn removed(&mut self, index: u32) {
        if let Some(ctl) = self.links.remove(&index) {
            tracing::info!(interface = %ctl.link.name, "link removed");
            state::remove_link(&self.paths.run_dir, &ctl.link.name);
            self.written.remove(&index);
            self.dirty.remove(&index);
            if let Some(snap) = &self.snapshot {
                snap.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&index);
            }
            self.write_resolv();
        }
    }

    /// A link appeared or changed (flags, carrier, MTU, name).
    pub fn changed(&mut self, link: Link, now: Instant) -> Vec<Outgoing> {
        let index = link.index;
        let name = link.name.clone();
        let _span = tracing::info_span!("link", interface = %name).entered();
        let is_new = !self.links.contains_key(&index);
        let renamed = self
            .links
            .get(&index)
            .is_some_and(|c| c.link.name != link.name);
        if renamed {
            self.removed(index);
        }
        if is_new || renamed {
            let network = if link.loopback {
                None
            } else {
                config::find(&self.networks, &self.facts(&link)).cloned()
            };
            match &network {
                Some(n) if n.unmanaged() => {
                    tracing::info!(interface = %name, file = %n.path.display(), "link unmanaged by configuration")
                }
                Some(n) => {
                    tracing::info!(interface = %name, file = %n.path.display(), "link matched")
                }
                None => tracing::debug!(interface = %name, "no network file matches"),
            }
            self.links.insert(
                index,
                LinkCtl {
                    link: link.clone(),
                    network: network.filter(|n| !n.unmanaged()),
                    static_done: false,
                    owned_addrs: Vec::new(),
                    owned_routes: Vec::new(),
                    dhcp_addr: None,
                    dhcp_routes: Vec::new(),
                    client: None,
                    lease: None,
                    error: None,
                    packet: None,
                    udp: None,
                },
            );
            self.bring_up(index);
        }
        let Some(ctl) = self.links.get_mut(&index) else {
            return Vec::new();
        };
        let carrier_gained = link.carrier && !ctl.link.carrier;
        let carrier_lost = !link.carrier && ctl.link.carrier;
        ctl.link = link;
        let mut out = Vec::new();
        if ctl.network.is_some() {
            if !ctl.static_done && ctl.link.up {
                self.apply_static(index);
            }
            if carrier_lost {
                tracing::info!(interface = %name, "carrier lost");
                if let Some(c) = self.links.get_mut(&index) {
                    c.packet = None;
                    c.udp = None;
                }
            }
            out.extend(self.maybe_start_dhcp(index, now, carrier_gained && !is_new));
        }
        self.publish(index);
        out
    }

    fn bring_up(&mut self, index: u32) {
        let Some(ctl) = self.links.get(&index) else {
            return;
        };
        let Some(n) = ctl.network.clone() else { return };
        let link = ctl.link.clone();
        let mut err = None;
        if let Some(mac) = n.link.mac {
            if link.mac != Some(mac) {
                if let Err(e) = self.nl.set_mac(index, mac) {
                    err = Some(format!("setting MAC address {mac}: {e}"));
                }
            }
        }
        let mut up = link.up;
        // Bond= and Bridge=: join the master first. A bond takes only
        // ports that are down.
        for (what, master) in [("bond", &n.bond), ("bridge", &n.bridge)] {
            let Some(master) = master else { continue };
            match self.index_of(master) {
                None => {
                    err = Some(format!(
                        "{what} {master} does not exist (no .netdev created it)"
                    ))
                }
                Some(m) if link.master == Some(m) => {}
                Some(m) => {
                    if what == "bond" && up {
                        if let Err(e) = self.nl.set_down(index) {
                            err = Some(format!("bringing link down to join {master}: {e}"));
                        }
                        up = false;
                    }
                    match self.nl.set_master(index, m) {
                        Ok(()) => {
                            tracing::info!(interface = %link.name, "joined {what} {master}");
                            // A joining port may have changed the master's MTU.
                            if let Some(d) =
                                self.netdevs.iter().find(|d| &d.ifname == master).cloned()
                            {
                                self.pin_mtu(&d);
                            }
                        }
                        Err(e) => err = Some(format!("joining {what} {master}: {e}")),
                    }
                }
            }
        }
        if let Some(mtu) = n.link.mtu {
            if link.mtu != mtu {
                if let Err(e) = self.nl.set_mtu(index, mtu) {
                    err = Some(format!("setting MTU {mtu}: {e}"));
                }
            }
        }
        // Before the link goes up, so no IPv6 link-local address is made.
        for (key, value) in ipv6_settings(&n) {
            if let Err(e) = self.host.ipv6_sysctl(&link.name, key, value) {
                tracing::warn!(interface = %link.name, "setting ipv6 {key}={value}: {e}");
            }
        }
        if !up {
            if let Err(e) = self.nl.set_up(index) {
                err = Some(format!("bringing link up: {e}"));
            }
        }
        // VLAN=: the VLAN links on top of this one.
        for v in &n.vlans {
            let Some(d) = self
                .netdevs
                .iter()
                .find(|d| &d.ifname == v && matches!(d.kind, netdev::Kind::Vlan(_)))
                .cloned()
            else {
                err = Some(format!(
                    "VLAN={v}: no .netdev file defines a VLAN named {v}"
                ));
                continue;
            };
            if self.index_of(v).is_some() {
                continue;
            }
            match self.nl.create_link(&d, Some(index)) {
                Ok(()) => {
                    tracing::info!(interface = %link.name, file = %d.path.display(), "created {}", d.describe());
                    self.pin_mtu(&d);
                }
                Err(e) => err = Some(format!("creating {}: {e}", d.describe())),
            }
        }
        if let Some(e) = &err {
            tracing::error!(interface = %link.name, "{e}");
        }
        if let Some(ctl) = self.links.get_mut(&index) {
            ctl.error = err;
        }
    }

    fn static_routes(n: &Network, lease: Option<&Lease>) -> Vec<Route> {
        let mut out = Vec::new();
        for r in n.all_routes() {
            let gateway = match r.gateway {
                Some(Gateway::Addr(a)) => Some(a),
                Some(Gateway::Dhcp4) => match lease.and_then(|l| l.gateway()) {
                    Some(g) => Some(IpAddr::V4(g)),
                    None => continue,
                },
                None => None,
            };
            let (destination, prefix) = match r.destination {
                Some(c) => (c.addr, c.prefix),
                None => match gateway {
                    Some(IpAddr::V6(_)) => (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
                    _ => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                },
            };
            let scope = r.scope.unwrap_or(if gateway.is_none() && prefix > 0 {
                Scope::Link
            } else {
                Scope::Global
            });
            out.push(Route {
                destination,
                prefix,
                gateway,
                metric: r.metric.unwrap_or(0),
                scope,
                source: r.preferred_source,
                dhcp: false,
                table: r.table.unwrap_or(RT_TABLE_MAIN),
            });
        }
        out
    }

    fn apply_static(&mut self, index: u32) {
        let Some(ctl) = self.links.get_mut(&index) else {
            return;
        };
        let Some(n) = ctl.network.clone() else { return };
        let name = ctl.link.name.clone();
        let mut errors = Vec::new();
        for a in &n.addresses {
            match self.nl.add_address(index, *a, None) {
                Ok(()) => {
                    tracing::info!(interface = %name, address = %a, "address added");
                    if !ctl.owned_addrs.contains(a) {
                        ctl.owned_addrs.push(*a);
                    }
                }
                Err(e) => errors.push(format!("adding address {a}: {e}")),
            }
        }
        let lease = ctl.lease.as_ref().map(|(l, _)| l);
        for r in Self::static_routes(&n, lease) {
            match self.nl.add_route(index, &r) {
                Ok(()) => {
                    if !ctl.owned_routes.contains(&r) {
                        ctl.owned_routes.push(r);
                    }
                }
                Err(e) => errors.push(format!(
                    "adding route to {}/{}: {e}",
                    r.destination, r.prefix
                )),
            }
        }
        for r in &n.rules {
            if let Err(e) = self.nl.add_rule(r) {
                errors.push(format!("adding routing policy rule (line {}): {e}", r.line));
            }
        }
        for e in &errors {
            tracing::error!(interface = %name, "{e}");
        }
        // Route failures without carrier are retried when the carrier comes.
        ctl.static_done = errors.is_empty() || ctl.link.carrier;
        ctl.error = errors.into_iter().next().or(ctl.error.take());
    }

    fn lease_path(&self, name: &str) -> PathBuf {
        self.paths.state_dir.join(format!("{name}.lease"))
    }

    fn maybe_start_dhcp(&mut self, index: u32, now: Instant, reconnect: bool) -> Vec<Outgoing> {
        let lease_path = self.lease_path(
            &self
                .links
                .get(&index)
                .map(|c| c.link.name.clone())
                .unwrap_or_default(),
        );
        let Some(ctl) = self.links.get_mut(&index) else {
            return Vec::new();
        };
        let Some(n) = &ctl.network else {
            return Vec::new();
        };
        if !n.dhcp.v4() || !ctl.link.carrier || !ctl.link.up {
            return Vec::new();
        }
        if ctl.client.is_some() && !reconnect {
            return Vec::new();
        }
        let Some(mac) = ctl.link.mac else {
            ctl.error = Some("DHCP needs an Ethernet hardware address".into());
            return Vec::new();
        };
        // Reconnect (RFC 2131 3.2): verify the lease we hold with INIT-REBOOT.
        // Fresh start: an unexpired stored lease for this link.
        let stored = if reconnect {
            ctl.lease.as_ref().map(|(l, _)| l.clone())
        } else {
            match StoredLease::load(&lease_path) {
                Ok(Some(s))
                    if s.interface == ctl.link.name && s.remaining(SystemTime::now()).is_some() =>
                {
                    tracing::info!(interface = %ctl.link.name, address = %s.lease.address, "trying stored lease (INIT-REBOOT)");
                    // The stored lease records what a previous run installed
                    // (addresses are kept across restarts): it is ours to
                    // remove if the server NAKs it.
                    if ctl.dhcp_addr.is_none() {
                        ctl.dhcp_addr = Some(Cidr {
                            addr: IpAddr::V4(s.lease.address),
                            prefix: s.lease.prefix,
                        });
                        ctl.dhcp_routes = Self::lease_routes(n, &s.lease);
                    }
                    Some(s.lease)
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            }
        };
        let hostname = if n.dhcp4.send_hostname {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty() && h != "localhost" && h != "(none)")
        } else {
            None
        };
        let cfg = ClientConfig {
            mac: mac.0,
            client_id: crate::dhcp::client_id(
                n.dhcp4.client_identifier,
                mac.0,
                self.machine_id.as_deref(),
            ),
            hostname,
            broadcast_flag: false,
        };
        let seed = fastrand::u64(..) ^ u64::from(index);
        let mut client = Client::new(cfg, stored, seed, now);
        let actions = client.start(now);
        ctl.client = Some(client);
        self.apply(index, actions)
    }

    /// Carry out client actions; returns what to send.
    pub fn apply(&mut self, index: u32, actions: Vec<Action>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for a in actions {
            match a {
                Action::Send {
                    dest,
                    kind,
                    payload,
                } => {
                    tracing::debug!("sending {kind:?}");
                    out.push(Outgoing {
                        index,
                        dest,
                        payload,
                    });
                }
                Action::Configure { lease, .. } => self.configure_lease(index, lease),
                Action::Deconfigure(_) => self.deconfigure_lease(index),
                Action::Persist(lease) => {
                    if let Some(ctl) = self.links.get(&index) {
                        let p = self.lease_path(&ctl.link.name);
                        if let Err(e) =
                            StoredLease::new(&ctl.link.name, lease, SystemTime::now()).store(&p)
                        {
                            tracing::error!("{e}");
                        }
                    }
                }
                Action::Forget => {
                    self.deconfigure_lease(index);
                    if let Some(ctl) = self.links.get(&index) {
                        let _ = std::fs::remove_file(self.lease_path(&ctl.link.name));
                    }
                }
            }
        }
        self.update_sockets(index);
        self.publish(index);
        out
    }

    fn lease_routes(n: &Network, lease: &Lease) -> Vec<Route> {
        if !n.dhcp4.use_routes {
            return Vec::new();
        }
        lease
            .routes
            .iter()
            .map(|r| Route {
                destination: IpAddr::V4(r.destination),
                prefix: r.prefix,
                gateway: (!r.gateway.is_unspecified()).then_some(IpAddr::V4(r.gateway)),
                metric: n.dhcp4.route_metric,
                scope: if r.gateway.is_unspecified() {
                    Scope::Link
                } else {
                    Scope::Global
                },
                source: Some(IpAddr::V4(lease.address)),
                dhcp: true,
                table: RT_TABLE_MAIN,
            })
            .collect()
    }

    fn configure_lease(&mut self, index: u32, lease: Lease) {
        let Some(ctl) = self.links.get_mut(&index) else {
            return;
        };
        let Some(n) = ctl.network.clone() else { return };
        let name = ctl.link.name.clone();
        let addr = Cidr {
            addr: IpAddr::V4(lease.address),
            prefix: lease.prefix,
        };
        let routes = Self::lease_routes(&n, &lease);
        // Remove what the previous lease installed and this one does not.
        if let Some(old) = ctl.dhcp_addr.filter(|a| *a != addr) {
            let _ = self.nl.del_address(index, old);
        }
        for r in ctl.dhcp_routes.iter().filter(|r| !routes.contains(r)) {
            let _ = self.nl.del_route(index, r);
        }
        let mut err = None;
        // The kernel drops the address itself if the lease runs out while
        // keel-netd is not running.
        if let Err(e) = self.nl.add_address(index, addr, Some(lease.lease_secs)) {
            err = Some(format!("adding DHCP address {addr}: {e}"));
        }
        ctl.dhcp_addr = Some(addr);
        ctl.dhcp_routes.clear();
        for r in routes {
            match self.nl.add_route(index, &r) {
                Ok(()) => ctl.dhcp_routes.push(r),
                Err(e) => {
                    err = Some(format!(
                        "adding DHCP route to {}/{}: {e}",
                        r.destination, r.prefix
                    ))
                }
            }
        }
        if n.dhcp4.use_mtu {
            if let Some(mtu) = lease.mtu {
                if u32::from(mtu) != ctl.link.mtu {
                    if let Err(e) = self.nl.set_mtu(index, u32::from(mtu)) {
                        err = Some(format!("setting MTU {mtu} from DHCP: {e}"));
                    }
                }
            }
        }
        tracing::info!(interface = %name, address = %addr, gateway = ?lease.gateway(), "DHCPv4 lease configured");
        if let Some(e) = &err {
            tracing::error!(interface = %name, "{e}");
        }
        ctl.error = err;
        ctl.lease = Some((lease.clone(), SystemTime::now()));
        // Static routes through the DHCP gateway (Gateway=_dhcp4).
        if n.all_routes()
            .iter()
            .any(|r| r.gateway == Some(Gateway::Dhcp4))
        {
            for r in Self::static_routes(&n, Some(&lease)) {
                if self.nl.add_route(index, &r).is_ok() && !ctl.owned_routes.contains(&r) {
                    ctl.owned_routes.push(r);
                }
            }
        }
        if n.dhcp4.use_hostname {
            if let Some(h) = &lease.hostname {
                self.maybe_set_hostname(h);
            }
        }
        self.write_resolv();
    }

    fn deconfigure_lease(&mut self, index: u32) {
        let Some(ctl) = self.links.get_mut(&index) else {
            return;
        };
        for r in std::mem::take(&mut ctl.dhcp_routes) {
            if let Err(e) = self.nl.del_route(index, &r) {
                tracing::debug!("removing route {}/{}: {e}", r.destination, r.prefix);
            }
        }
        // Static routes through the lease's gateway go with it.
        let dhcp_gw = ctl
            .lease
            .as_ref()
            .and_then(|(l, _)| l.gateway())
            .map(IpAddr::V4);
        if let Some(n) = &ctl.network {
            if n.all_routes()
                .iter()
                .any(|r| r.gateway == Some(Gateway::Dhcp4))
            {
                let nl = &mut self.nl;
                ctl.owned_routes.retain(|r| {
                    if r.gateway.is_some()
                        && r.gateway == dhcp_gw
                        && !n.all_routes().iter().any(
                            |c| matches!(c.gateway, Some(Gateway::Addr(a)) if Some(a) == dhcp_gw),
                        )
                    {
                        let _ = nl.del_route(index, r);
                        false
                    } else {
                        true
                    }
                });
            }
        }
        if let Some(a) = ctl.dhcp_addr.take() {
            tracing::info!(interface = %ctl.link.name, address = %a, "DHCPv4 address removed");
            if let Err(e) = self.nl.del_address(index, a) {
                tracing::debug!("removing address {a}: {e}");
            }
        }
        ctl.lease = None;
        self.write_resolv();
    }

    /// Set the hostname from DHCP unless the admin set one in /etc/hostname.
    fn maybe_set_hostname(&mut self, h: &str) {
        let admin = std::fs::read_to_string(&self.paths.hostname_file)
            .map(|s| {
                s.lines()
                    .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            })
            .unwrap_or(false);
        if admin {
            tracing::debug!("hostname set by the admin, ignoring DHCP hostname {h}");
            return;
        }
        let current = nix::unistd::gethostname()
            .ok()
            .and_then(|s| s.into_string().ok());
        if current.as_deref() == Some(h) {
            return;
        }
        match self.host.set_hostname(h) {
            Ok(()) => tracing::debug!("hostname {h} from DHCP requested"),
            Err(e) => tracing::warn!("setting hostname {h}: {e}"),
        }
    }

    fn update_sockets(&mut self, index: u32) {
        if !self.sockets {
            return;
        }
        let Some(ctl) = self.links.get_mut(&index) else {
            return;
        };
        let (want_pkt, want_udp) = match &ctl.client {
            Some(c) if ctl.link.carrier => (!c.state().has_address(), c.state().has_address()),
            _ => (false, false),
        };
        if want_pkt && ctl.packet.is_none() {
            match PacketSocket::open(index) {
                Ok(s) => ctl.packet = Some(s),
                Err(e) => tracing::error!(interface = %ctl.link.name, "opening packet socket: {e}"),
            }
        } else if !want_pkt {
            ctl.packet = None;
        }
        if want_udp && ctl.udp.is_none() {
            match UdpSocket::open(&ctl.link.name) {
                Ok(s) => ctl.udp = Some(s),
                Err(e) => tracing::error!(interface = %ctl.link.name, "opening UDP socket: {e}"),
            }
        } else if !want_udp {
            ctl.udp = None;
        }
    }

    /// Earliest client deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|c| c.client.as_ref().and_then(|c| c.deadline()))
            .min()
    }

    pub fn timeouts(&mut self, now: Instant) -> Vec<Outgoing> {
        let due: Vec<u32> = self
            .links
            .iter()
            .filter(|(_, c)| {
                c.client
                    .as_ref()
                    .and_then(|c| c.deadline())
                    .is_some_and(|d| d <= now)
            })
            .map(|(i, _)| *i)
            .collect();
        let mut out = Vec::new();
        for i in due {
            let Some(ctl) = self.links.get_mut(&i) else {
                continue;
            };
            let _span = tracing::info_span!("link", interface = %ctl.link.name).entered();
            let Some(c) = ctl.client.as_mut() else {
                continue;
            };
            let actions = c.handle_timeout(now);
            out.extend(self.apply(i, actions));
        }
        out
    }

    pub fn packet(&mut self, index: u32, data: &[u8], now: Instant) -> Vec<Outgoing> {
        let Some(ctl) = self.links.get_mut(&index) else {
            return Vec::new();
        };
        let _span = tracing::info_span!("link", interface = %ctl.link.name).entered();
        let Some(c) = ctl.client.as_mut() else {
            return Vec::new();
        };
        let actions = c.handle_packet(data, now);
        self.apply(index, actions)
    }

    fn status(&mut self, index: u32) -> Option<LinkStatus> {
        let addrs = self.nl.addresses(index).unwrap_or_default();
        let ctl = self.links.get(&index)?;
        let l = &ctl.link;
        let n = ctl.network.as_ref();
        let global = addrs.iter().any(|a| match a.addr {
            IpAddr::V4(v) => !v.is_link_local() && !v.is_loopback(),
            IpAddr::V6(v) => (v.segments()[0] & 0xffc0) != 0xfe80 && !v.is_loopback(),
        });
        let oper = if !l.up {
            OperState::Off
        } else if !l.carrier {
            OperState::NoCarrier
        } else if global {
            OperState::Routable
        } else if !addrs.is_empty() {
            OperState::Degraded
        } else {
            OperState::Carrier
        };
        let setup = match n {
            None => "unmanaged",
            Some(_) if ctl.error.is_some() => "failed",
            Some(n) => {
                let dhcp_ok = !n.dhcp.v4() || ctl.lease.is_some();
                if ctl.static_done && dhcp_ok {
                    "configured"
                } else {
                    "configuring"
                }
            }
        };
        let (required, min) = match n.and_then(|n| n.link.required_for_online) {
            Some(RequiredForOnline::No) => (false, OperState::Degraded),
            Some(RequiredForOnline::Yes(m)) => (true, m),
            None => (n.is_some(), OperState::Degraded),
        };
        let lease = ctl.lease.as_ref();
        let mut dns: Vec<IpAddr> = n.map(|n| n.dns.clone()).unwrap_or_default();
        let mut domains: Vec<String> = n.map(|n| n.domains.clone()).unwrap_or_default();
        if let (Some((le, _)), Some(n)) = (lease, n) {
            if n.dhcp4.use_dns {
                dns.extend(le.dns.iter().map(|d| IpAddr::V4(*d)));
                if let Some(d) = &le.domain {
                    domains.push(d.clone());
                }
            }
        }
        let gateway = ctl
            .owned_routes
            .iter()
            .chain(ctl.dhcp_routes.iter())
            .find(|r| r.prefix == 0 && r.gateway.is_some() && r.table == RT_TABLE_MAIN)
            .and_then(|r| r.gateway);
        let dhcp = ctl.client.as_ref().map(|c| {
            let (lease_secs, acquired, t1, t2, exp, addr, server) = match lease {
                Some((le, at)) => {
                    let a = unix(*at);
                    (
                        Some(le.lease_secs),
                        Some(a),
                        Some(a + u64::from(le.t1_secs)),
                        Some(a + u64::from(le.t2_secs)),
                        Some(a + u64::from(le.lease_secs)),
                        Some(format!("{}/{}", le.address, le.prefix)),
                        Some(IpAddr::V4(le.server_id)),
                    )
                }
                None => (None, None, None, None, None, None, None),
            };
            DhcpStatus {
                state: c.state().as_str().into(),
                address: addr,
                server,
                lease_secs,
                acquired,
                t1,
                t2,
                expires: exp,
            }
        });
        Some(LinkStatus {
            index,
            name: l.name.clone(),
            oper: oper.as_str().into(),
            setup: setup.into(),
            network_file: n.map(|n| n.path.clone()),
            mac: l.mac.map(|m| m.to_string()),
            mtu: l.mtu,
            carrier: l.carrier,
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
            gateway,
            dns,
            domains,
            required_for_online: required && !l.loopback,
            required_oper: min.as_str().into(),
            dhcp,
            error: ctl.error.clone(),
        })
    }

    /// Mark the link's state file for rewriting at the next [`Manager::flush`].
    pub fn publish(&mut self, index: u32) {
        self.dirty.insert(index);
        self.resolv_dirty = true;
    }

    pub fn write_resolv(&mut self) {
        self.resolv_dirty = true;
    }

    /// Write changed link state files and resolv.conf.
    pub fn flush(&mut self) {
        for index in std::mem::take(&mut self.dirty) {
            let Some(s) = self.status(index) else {
                continue;
            };
            if let Some(snap) = &self.snapshot {
                snap.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(index, s.clone());
            }
            if self.written.get(&index) == Some(&s) {
                continue;
            }
            match state::write_link(&self.paths.run_dir, &s) {
                Ok(()) => {
                    self.written.insert(index, s);
                }
                Err(e) => tracing::warn!("writing state for {}: {e}", s.name),
            }
        }
        if std::mem::take(&mut self.resolv_dirty) {
            let links: Vec<LinkStatus> = self.written.values().cloned().collect();
            let text = state::render_resolv(&links);
            let p = self.paths.run_dir.join("resolv.conf");
            if std::fs::read_to_string(&p).ok().as_deref() != Some(text.as_str()) {
                if let Err(e) = keel_contract::write_atomic(&p, text.as_bytes()) {
                    tracing::warn!("writing {}: {e}", p.display());
                }
            }
        }
    }

    /// Send queued messages on the links' sockets.
    pub fn send(&mut self, out: Vec<Outgoing>) {
        for o in out {
            let Some(ctl) = self.links.get(&o.index) else {
                continue;
            };
            let r = match (o.dest, &ctl.packet, &ctl.udp) {
                (Dest::Unicast { server, .. }, _, Some(u)) => u.send(server, &o.payload),
                (Dest::Broadcast { .. }, _, Some(u)) => u.send(Ipv4Addr::BROADCAST, &o.payload),
                (Dest::Broadcast { source }, Some(p), None) => p.send_broadcast(source, &o.payload),
                _ => {
                    tracing::debug!(interface = %ctl.link.name, "no socket to send on");
                    continue;
                }
            };
            if let Err(e) = r {
                tracing::warn!(interface = %ctl.link.name, "sending DHCP message: {e}");
            }
        }
    }
}

/// The poll loop: netlink events, DHCP sockets, timers and signals.
pub fn run(paths: Paths) -> anyhow::Result<()> {
    use anyhow::Context;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};

    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().context("blocking signals")?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("creating signalfd")?;
    let mut events = crate::netlink::Events::open().context("opening rtnetlink event socket")?;
    let nl = crate::netlink::Rtnl::open().context("opening rtnetlink socket")?;
    let mut m = Manager::new(nl, RealHost::default(), paths);
    let snapshot = crate::bus::Snapshot::default();
    m.snapshot = Some(snapshot.clone());
    let out = m.sync(Instant::now());
    m.send(out);
    m.flush();
    // After the first flush, so the bus never serves an empty list while
    // links are being enumerated.
    crate::bus::spawn_server(snapshot);
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("managing links"),
    ]);
    tracing::info!("keel-netd started");

    loop {
        let now = Instant::now();
        let timeout = match m.next_deadline() {
            Some(d) => {
                let ms = d.saturating_duration_since(now).as_millis().min(60_000) as u32;
                PollTimeout::try_from(ms.saturating_add(1)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::from(60_000u16),
        };
        // Poll set: [signals, netlink events, then each link's DHCP socket].
        let mut owners: Vec<u32> = Vec::new();
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = vec![
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(borrow(&events), PollFlags::POLLIN),
            ];
            for (i, c) in &m.links {
                if let Some(p) = &c.packet {
                    fds.push(PollFd::new(borrow(p), PollFlags::POLLIN));
                    owners.push(*i);
                }
                if let Some(u) = &c.udp {
                    fds.push(PollFd::new(borrow(u), PollFlags::POLLIN));
                    owners.push(*i);
                }
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        if ready[0] {
            while let Ok(Some(si)) = sfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => {
                        tracing::info!("reloading configuration");
                        m.load_config();
                        // Re-match every link from scratch; DHCP leases are
                        // kept on disk and re-verified with INIT-REBOOT.
                        m.links.clear();
                        let out = m.sync(Instant::now());
                        m.send(out);
                    }
                    _ => {
                        tracing::info!(
                            "stopping; addresses and leases are kept for the next start"
                        );
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                        return Ok(());
                    }
                }
            }
        }
        if ready[1] {
            match events.read() {
                Ok(evs) => {
                    for e in evs {
                        let out = m.event(e, Instant::now());
                        m.send(out);
                    }
                }
                Err(e) => {
                    tracing::warn!("netlink events: {e}; resynchronising");
                    let out = m.sync(Instant::now());
                    m.send(out);
                }
            }
        }
        let readable: Vec<u32> = owners
            .iter()
            .zip(ready.iter().skip(2))
            .filter(|(_, r)| **r)
            .map(|(i, _)| *i)
            .collect();
        for index in readable {
            while let Some(ctl) = m.links.get(&index) {
                let r = match (&ctl.packet, &ctl.udp) {
                    (Some(p), _) => p.recv(),
                    (None, Some(u)) => u.recv(),
                    _ => Ok(None),
                };
                match r {
                    Ok(Some(data)) => {
                        let out = m.packet(index, &data, Instant::now());
                        m.send(out);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("receiving on link {index}: {e}");
                        break;
                    }
                }
            }
        }
        let out = m.timeouts(Instant::now());
        m.send(out);
        m.flush();
    }
}

fn borrow<T: AsRawFd>(t: &T) -> BorrowedFd<'_> {
    // SAFETY: the descriptor belongs to `t`, which outlives the returned
    // borrow (the lifetime ties them together).
    unsafe { BorrowedFd::borrow_raw(t.as_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::fake::Fake;

    #[derive(Debug, Default)]
    struct FakeHost {
        hostnames: Vec<String>,
        sysctls: Vec<String>,
    }

    impl Host for FakeHost {
        fn facts(&self, _name: &str) -> (Option<String>, Option<String>) {
            (Some("virtio_net".into()), None)
        }
        fn set_hostname(&mut self, name: &str) -> std::io::Result<()> {
            self.hostnames.push(name.into());
            Ok(())
        }
        fn ipv6_sysctl(&mut self, link: &str, key: &str, value: &str) -> std::io::Result<()> {
            self.sysctls.push(format!("{link}/{key}={value}"));
            Ok(())
        }
    }

    fn link(index: u32, name: &str, up: bool, carrier: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some(crate::config::Mac([2, 0, 0, 0, 0, index as u8])),
            up,
            carrier,
            mtu: 1500,
            loopback: false,
            arphrd: "ether",
            kind: None,
            master: None,
        }
    }

    fn manager(files: &[(&str, &str)]) -> (Manager<Fake, FakeHost>, tempfile::TempDir) {
        let t = tempfile::tempdir().unwrap();
        let net = t.path().join("net");
        std::fs::create_dir_all(&net).unwrap();
        for (n, text) in files {
            std::fs::write(net.join(n), text).unwrap();
        }
        let paths = Paths {
            network_dirs: vec![net],
            state_dir: t.path().join("state"),
            run_dir: t.path().join("run"),
            hostname_file: t.path().join("hostname"),
            machine_id_file: t.path().join("machine-id"),
        };
        let mut m = Manager::new(Fake::default(), FakeHost::default(), paths);
        m.sockets = false;
        (m, t)
    }

    fn lease() -> Lease {
        Lease {
            address: "10.0.0.50".parse().unwrap(),
            prefix: 24,
            server_id: "10.0.0.1".parse().unwrap(),
            routes: vec![crate::dhcp::lease::LeaseRoute {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: "10.0.0.1".parse().unwrap(),
            }],
            dns: vec!["10.0.0.53".parse().unwrap()],
            hostname: Some("node7".into()),
            domain: Some("lab.test".into()),
            mtu: Some(1400),
            broadcast: None,
            lease_secs: 120,
            t1_secs: 60,
            t2_secs: 105,
        }
    }

    #[test]
    fn static_configuration_is_applied_once_up() {
        let (mut m, t) = manager(&[(
            "10-s.network",
            "[Match]\nName=eth0\n[Link]\nMTUBytes=9000\n[Network]\nAddress=10.1.0.2/24\nGateway=10.1.0.1\nDNS=10.1.0.53\n",
        )]);
        m.nl.links.insert(2, link(2, "eth0", false, false));
        let now = Instant::now();
        assert!(m.sync(now).is_empty());
        assert_eq!(
            m.nl.log[..2],
            ["mtu 2 9000".to_string(), "up 2".to_string()]
        );
        // The kernel reports the link up with carrier: static config goes on.
        m.event(Event::Changed(link(2, "eth0", true, true)), now);
        assert!(m.nl.addrs[&2]
            .iter()
            .any(|(a, l)| a == "10.1.0.2/24" && l.is_none()));
        let r = &m.nl.routes[&2][0];
        assert_eq!(
            (r.prefix, r.gateway, r.dhcp),
            (0, Some("10.1.0.1".parse().unwrap()), false)
        );
        m.flush();
        let s = state::read_links(&t.path().join("run"));
        assert_eq!(s[0].setup, "configured");
        assert_eq!(s[0].oper, "routable");
        let resolv = std::fs::read_to_string(t.path().join("run/resolv.conf")).unwrap();
        assert!(resolv.contains("nameserver 10.1.0.53"), "{resolv}");
    }

    #[test]
    fn ipv6_sysctls_before_up() {
        let (mut m, _t) = manager(&[(
            "10-s.network",
            "[Match]\nName=eth0\n[Network]\nLinkLocalAddressing=ipv4\nIPv6AcceptRA=no\n",
        )]);
        m.nl.links.insert(2, link(2, "eth0", false, false));
        m.sync(Instant::now());
        assert_eq!(m.host.sysctls, ["eth0/addr_gen_mode=1", "eth0/accept_ra=0"]);
        assert_eq!(m.nl.log, ["up 2"]);
    }

    #[test]
    fn unmatched_and_unmanaged_links_are_left_alone() {
        let (mut m, _t) = manager(&[(
            "10-u.network",
            "[Match]\nName=docker*\n[Link]\nUnmanaged=yes\n",
        )]);
        m.nl.links.insert(3, link(3, "docker0", false, false));
        m.nl.links.insert(4, link(4, "eth9", false, false));
        m.sync(Instant::now());
        assert!(m.nl.log.is_empty(), "{:?}", m.nl.log);
        assert!(m.links[&3].network.is_none());
    }

    #[test]
    fn lease_routes_are_owned_and_foreign_routes_survive() {
        let (mut m, t) = manager(&[(
            "50-d.network",
            "[Match]\nName=eth0\n[Network]\nDHCP=yes\n[DHCPv4]\nUseMTU=yes\n",
        )]);
        m.nl.links.insert(2, link(2, "eth0", true, true));
        let now = Instant::now();
        let out = m.sync(now);
        assert_eq!(out.len(), 1, "a DISCOVER goes out");
        assert_eq!(
            m.links[&2].client.as_ref().unwrap().state(),
            crate::dhcp::client::State::Selecting
        );
        // A route somebody else added on the same link.
        let foreign = Route {
            destination: "192.0.2.0".parse().unwrap(),
            prefix: 24,
            gateway: None,
            metric: 0,
            scope: Scope::Link,
            source: None,
            dhcp: false,
            table: RT_TABLE_MAIN,
        };
        m.nl.add_route(2, &foreign).unwrap();
        m.apply(
            2,
            vec![
                Action::Configure {
                    lease: lease(),
                    previous: None,
                },
                Action::Persist(lease()),
            ],
        );
        assert!(
            m.nl.addrs[&2]
                .iter()
                .any(|(a, l)| a == "10.0.0.50/24" && *l == Some(120)),
            "address with lease lifetime"
        );
        assert!(m.nl.routes[&2]
            .iter()
            .any(|r| r.dhcp && r.gateway == Some("10.0.0.1".parse().unwrap()) && r.metric == 1024));
        assert!(
            m.nl.log.contains(&"mtu 2 1400".to_string()),
            "UseMTU=yes applies option 26"
        );
        assert!(t.path().join("state/eth0.lease").exists());
        assert_eq!(
            m.host.hostnames,
            ["node7"],
            "no /etc/hostname: DHCP hostname used"
        );
        m.apply(2, vec![Action::Deconfigure(lease()), Action::Forget]);
        assert!(!m.nl.addrs[&2].iter().any(|(a, _)| a == "10.0.0.50/24"));
        assert_eq!(
            m.nl.routes[&2],
            vec![foreign],
            "only keel-netd's routes are removed"
        );
        assert!(!t.path().join("state/eth0.lease").exists());
    }

    #[test]
    fn admin_hostname_wins() {
        let (mut m, t) = manager(&[("50-d.network", "[Match]\nName=eth0\n[Network]\nDHCP=yes\n")]);
        std::fs::write(t.path().join("hostname"), "admin-set\n").unwrap();
        m.nl.links.insert(2, link(2, "eth0", true, true));
        m.sync(Instant::now());
        m.apply(
            2,
            vec![Action::Configure {
                lease: lease(),
                previous: None,
            }],
        );
        assert!(m.host.hostnames.is_empty());
    }

    /// Issue 18: bonds and bridges from .netdev files are created at start,
    /// ports join them (a bond port goes down first), a VLAN is created on
    /// the link whose .network names it, and a Table= route and a rule go
    /// where they were asked to, not into main.
    #[test]
    fn netdevs_ports_vlans_tables_and_rules() {
        let (mut m, _t) = manager(&[
            (
                "10-bond0.netdev",
                "[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMode=active-backup\nMIIMonitorSec=100ms\n",
            ),
            ("20-br0.netdev", "[NetDev]\nName=br0\nKind=bridge\n"),
            ("30-vlan42.netdev", "[NetDev]\nName=vlan42\nKind=vlan\n[VLAN]\nId=42\n"),
            ("10-ports.network", "[Match]\nName=eth0 eth1\n[Network]\nBond=bond0\n"),
            ("20-eth2.network", "[Match]\nName=eth2\n[Network]\nBridge=br0\n"),
            (
                "30-bond0.network",
                "[Match]\nName=bond0\n[Network]\nVLAN=vlan42\nVLAN=vlan9\nAddress=10.5.0.2/24\n\
                 [Route]\nGateway=10.5.0.1\nTable=100\n[RoutingPolicyRule]\nFrom=10.5.0.0/24\nTable=100\nPriority=100\n",
            ),
        ]);
        m.nl.links.insert(2, link(2, "eth0", true, true));
        m.nl.links.insert(3, link(3, "eth1", false, false));
        m.nl.links.insert(4, link(4, "eth2", false, false));
        let now = Instant::now();
        m.sync(now);
        let log = m.nl.log.join("\n");
        assert!(log.starts_with("create bond bond0 mode active-backup miimon 100ms parent None\ncreate bridge br0 parent None\n"), "{log}");
        let bond =
            m.nl.links
                .values()
                .find(|l| l.name == "bond0")
                .unwrap()
                .index;
        let br = m.nl.links.values().find(|l| l.name == "br0").unwrap().index;
        assert!(
            log.contains(&format!("down 2\nmaster 2 {bond}\nup 2")),
            "an up port goes down to join: {log}"
        );
        assert!(log.contains(&format!("master 3 {bond}\nup 3")), "{log}");
        assert!(log.contains(&format!("master 4 {br}\nup 4")), "{log}");
        // The bond's own .network: VLAN on top, address, table route, rule.
        assert!(
            log.contains(&format!("create vlan vlan42 id 42 parent Some({bond})")),
            "{log}"
        );
        assert_eq!(
            m.links[&bond].error.as_deref(),
            Some("VLAN=vlan9: no .netdev file defines a VLAN named vlan9")
        );
        let mut l = m.nl.links[&bond].clone();
        l.up = true;
        l.carrier = true;
        m.event(Event::Changed(l), now);
        let r = &m.nl.routes[&bond][0];
        assert_eq!(
            (r.table, r.gateway),
            (100, Some("10.5.0.1".parse().unwrap()))
        );
        assert_eq!(m.nl.rules.len(), 1);
        assert_eq!(
            (m.nl.rules[0].table, m.nl.rules[0].priority),
            (100, Some(100))
        );
        // A second sync creates nothing twice.
        let before = m.nl.log.iter().filter(|l| l.starts_with("create")).count();
        m.links.clear();
        m.sync(now);
        assert_eq!(
            before,
            m.nl.log.iter().filter(|l| l.starts_with("create")).count()
        );
    }

    #[test]
    fn link_removed_drops_state() {
        let (mut m, t) = manager(&[(
            "50-d.network",
            "[Match]\nName=eth0\n[Network]\nAddress=10.2.0.1/24\n",
        )]);
        m.nl.links.insert(2, link(2, "eth0", true, true));
        m.sync(Instant::now());
        m.flush();
        assert!(t.path().join("run/netd/links/eth0.json").exists());
        m.event(Event::Removed(2), Instant::now());
        assert!(m.links.is_empty());
        assert!(!t.path().join("run/netd/links/eth0.json").exists());
    }
}

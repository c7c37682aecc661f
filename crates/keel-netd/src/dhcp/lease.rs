//! A DHCPv4 lease: what the server gave, decoded from an ACK, and its
//! on-disk form under `/var/lib/keel/netd/` for INIT-REBOOT after a reboot.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Message, OptionCode};
use serde::{Deserialize, Serialize};

/// A classless static route (option 121) or a default route from option 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRoute {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    /// 0.0.0.0 means on-link.
    pub gateway: Ipv4Addr,
}

/// The configuration a server handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub server_id: Ipv4Addr,
    /// Routes to install: option 121 when present (RFC 3442: it then
    /// overrides option 3), else a default route per option-3 router.
    pub routes: Vec<LeaseRoute>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub broadcast: Option<Ipv4Addr>,
    /// Seconds: lease time, T1, T2 (defaults 0.5 and 0.875 of the lease).
    pub lease_secs: u32,
    pub t1_secs: u32,
    pub t2_secs: u32,
}

/// Why a reply cannot be turned into a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("reply has no address (yiaddr is 0.0.0.0)")]
    NoAddress,
    #[error("reply has no server identifier (option 54)")]
    NoServerId,
    #[error("reply has no lease time (option 51)")]
    NoLeaseTime,
    #[error("subnet mask {0} is not contiguous")]
    BadMask(Ipv4Addr),
}

fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

fn mask_prefix(m: Ipv4Addr) -> Option<u8> {
    let v = u32::from(m);
    let ones = v.leading_ones();
    (v.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

impl Lease {
    /// Decode an OFFER or ACK. `require_lease_time` is false for OFFERs
    /// only in the sense that we still need it; servers must send it in both.
    pub fn from_reply(msg: &Message) -> Result<Lease, LeaseError> {
        let address = msg.yiaddr();
        if address.is_unspecified() {
            return Err(LeaseError::NoAddress);
        }
        let opts = msg.opts();
        let mut server_id = None;
        let mut lease_secs = None;
        let mut t1 = None;
        let mut t2 = None;
        let mut prefix = None;
        let mut routers = Vec::new();
        let mut classless: Option<Vec<LeaseRoute>> = None;
        let mut lease = Lease {
            address,
            prefix: 0,
            server_id: Ipv4Addr::UNSPECIFIED,
            routes: Vec::new(),
            dns: Vec::new(),
            hostname: None,
            domain: None,
            mtu: None,
            broadcast: None,
            lease_secs: 0,
            t1_secs: 0,
            t2_secs: 0,
        };
        for (_, o) in opts.iter() {
            match o {
                DhcpOption::SubnetMask(m) => {
                    prefix = Some(mask_prefix(*m).ok_or(LeaseError::BadMask(*m))?)
                }
                DhcpOption::Router(r) => routers = r.clone(),
                DhcpOption::DomainNameServer(d) => lease.dns = d.clone(),
                DhcpOption::Hostname(h) => lease.hostname = valid_hostname(h),
                DhcpOption::DomainName(d) => lease.domain = valid_hostname(d),
                DhcpOption::InterfaceMtu(m) if *m >= 68 => lease.mtu = Some(*m),
                DhcpOption::BroadcastAddr(b) => lease.broadcast = Some(*b),
                DhcpOption::AddressLeaseTime(t) => lease_secs = Some(*t),
                DhcpOption::ServerIdentifier(s) => server_id = Some(*s),
                DhcpOption::Renewal(t) => t1 = Some(*t),
                DhcpOption::Rebinding(t) => t2 = Some(*t),
                DhcpOption::ClasslessStaticRoute(r) => {
                    classless = Some(
                        r.iter()
                            .map(|(net, gw)| LeaseRoute {
                                destination: net.network(),
                                prefix: net.prefix_len(),
                                gateway: *gw,
                            })
                            .collect(),
                    )
                }
                _ => {}
            }
        }
        lease.server_id = server_id.ok_or(LeaseError::NoServerId)?;
        let secs = lease_secs.ok_or(LeaseError::NoLeaseTime)?;
        lease.lease_secs = secs;
        lease.prefix = prefix.unwrap_or_else(|| classful_prefix(address));
        // RFC 2131 4.4.5 defaults; keep T1 <= T2 <= lease.
        let t2v = t2
            .filter(|&t| t <= secs)
            .unwrap_or((secs as u64 * 7 / 8) as u32);
        let t1v = t1.filter(|&t| t <= t2v).unwrap_or((secs / 2).min(t2v));
        lease.t1_secs = t1v;
        lease.t2_secs = t2v;
        lease.routes = match classless {
            Some(c) => c,
            None => routers
                .iter()
                .take(1)
                .map(|gw| LeaseRoute {
                    destination: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: *gw,
                })
                .collect(),
        };
        Ok(lease)
    }

    /// The default route's gateway, if the lease has one.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.routes
            .iter()
            .find(|r| r.prefix == 0 && !r.gateway.is_unspecified())
            .map(|r| r.gateway)
    }
}

/// Accept a hostname/domain option only when it is a plausible DNS name.
fn valid_hostname(h: &str) -> Option<String> {
    let h = h.trim_end_matches('\0').trim_end_matches('.');
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    ok.then(|| h.to_ascii_lowercase())
}

/// The on-disk form: the lease plus the wall-clock time it was acquired, so
/// a reboot can tell whether it is still valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredLease {
    pub version: u32,
    pub interface: String,
    pub acquired_unix: u64,
    pub lease: Lease,
}

/// Lease file errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading lease {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing lease {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("writing lease {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl StoredLease {
    pub fn new(interface: &str, lease: Lease, acquired: SystemTime) -> Self {
        StoredLease {
            version: 1,
            interface: interface.to_string(),
            acquired_unix: acquired
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            lease,
        }
    }

    /// Time left at `now`, or None when expired.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let end =
            UNIX_EPOCH + Duration::from_secs(self.acquired_unix + u64::from(self.lease.lease_secs));
        end.duration_since(now).ok().filter(|d| !d.is_zero())
    }

    pub fn load(path: &Path) -> Result<Option<StoredLease>, StoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StoreError::Parse {
                path: path.display().to_string(),
                source,
            })
    }

    pub fn store(&self, path: &Path) -> Result<(), StoreError> {
        // Serialising a struct of plain fields to a Vec cannot fail.
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        keel_contract::write_atomic(path, &text).map_err(|source| StoreError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

/// The parameter request list (option 55) keel-netd sends.
pub const REQUESTED: [OptionCode; 12] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::BroadcastAddr,
    OptionCode::AddressLeaseTime,
    OptionCode::ServerIdentifier,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::ClasslessStaticRoute,
];

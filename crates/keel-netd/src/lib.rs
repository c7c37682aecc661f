//! keel-netd: Keel's networkd-like configurator.
//!
//! Owns: bringing links up, their MTU, the addresses and routes it adds
//! (never routes it did not add), a DHCPv4 client per link, the resolver
//! file `/run/keel/resolv.conf`, and the hostname when DHCP offers one and
//! the admin set none (`/etc/hostname` absent or empty).
//!
//! Reads: `.network` files from `/usr/lib/keel/network`, `/run/keel/network`
//! and `/etc/keel/network` (systemd.network(5) subset, see [`config`]);
//! `/etc/machine-id` (DHCP client identifier); `/etc/hostname`;
//! `/sys/class/net/*/uevent` and `device/driver` (Match Type= and Driver=).
//! Sets `/proc/sys/net/ipv6/conf/<link>/{addr_gen_mode,accept_ra}` from
//! LinkLocalAddressing= and IPv6AcceptRA=.
//! Writes: leases under `/var/lib/keel/netd/`, link state under
//! `/run/keel/netd/` (read by `status` and `wait-online`),
//! `/run/keel/resolv.conf`. Units: `keel-netd.service` (Type=notify) and
//! `keel-netd-wait-online.service`. No kernel arguments. No D-Bus: status
//! is served from the state files, and the DHCP hostname is set with
//! sethostname(2).

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dhcp;
pub mod fsutil;
pub mod netlink;
pub mod sock;
pub mod state;

//! keel-netd: Keel's networkd-like configurator.
//!
//! Owns: bringing links up, their MTU, the addresses, routes and routing
//! policy rules it adds (never routes it did not add), the bonds, bridges
//! and VLANs of `.netdev` files, a DHCPv4 client per link, the resolver
//! file `/run/keel/resolv.conf`, and the hostname when DHCP offers one and
//! the admin set none (`/etc/hostname` absent or empty).
//!
//! Reads: `.network` and `.netdev` files from networkd's directories and
//! Keel's own, merged (`/usr/lib/systemd/network`, `/usr/lib/keel/network`,
//! `/run/systemd/network`, `/run/keel/network`, `/etc/systemd/network`,
//! `/etc/keel/network`; systemd.network(5)/systemd.netdev(5) subset, see
//! [`config`]); `/proc/cmdline`, DMI and `/run/systemd/container` for
//! `[Match]` host conditions;
//! `/etc/machine-id` (DHCP client identifier); `/etc/hostname`;
//! `/sys/class/net/*/uevent` and `device/driver` (Match Type= and Driver=).
//! Sets `/proc/sys/net/ipv6/conf/<link>/{addr_gen_mode,accept_ra}` from
//! LinkLocalAddressing= and IPv6AcceptRA=.
//! Writes: leases under `/var/lib/keel/netd/`, link state under
//! `/run/keel/netd/` (read by `status` and `wait-online`),
//! `/run/keel/resolv.conf`. Units: `keel-netd.service` (Type=notify) and
//! `keel-netd-wait-online.service`. No kernel arguments.
//!
//! D-Bus ([`bus`]): the daemon owns `org.keel.Network1` on the system bus
//! and serves `ListLinks`/`Describe` on `/org/keel/Network1` (JSON, the
//! state-file schema); `status` asks it there and falls back to the state
//! files when the bus or the daemon is not available. Policy:
//! `/usr/share/dbus-1/system.d/org.keel.Network1.conf`. The DHCP hostname
//! goes through systemd-hostnamed (`SetHostname(name, false)`, transient)
//! and falls back to sethostname(2) when hostnamed is not reachable. The
//! daemon runs the same without a bus. `DBUS_SYSTEM_BUS_ADDRESS` is
//! honoured (the tests use a private bus).

pub mod args;
pub mod bus;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dhcp;
pub mod netlink;
pub mod sock;
pub mod state;

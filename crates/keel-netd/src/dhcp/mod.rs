//! DHCPv4 client: the state machine ([`client`]), leases ([`lease`]), the
//! IPv4/UDP framing used on the packet socket ([`frame`]) and the client
//! identifier ([`client_id`]).

pub mod client;
pub mod frame;
pub mod lease;

#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};

/// Option 61. `mac`: type 1 + MAC. `duid`: RFC 4361 — 0xff, a 4-byte
/// IAID from the interface's MAC, and a DUID-EN (type 2) under systemd's
/// enterprise number 43793 with 8 bytes derived from /etc/machine-id, so
/// the identifier is stable across boots and reinstalls of the same
/// machine-id. Falls back to `mac` when there is no machine-id.
pub fn client_id(kind: crate::config::ClientId, mac: [u8; 6], machine_id: Option<&str>) -> Vec<u8> {
    match (kind, machine_id.map(str::trim).filter(|m| !m.is_empty())) {
        (crate::config::ClientId::Duid, Some(mid)) => {
            let iaid = Sha256::digest(mac);
            let ident = Sha256::digest(format!("keel-netd:{mid}").as_bytes());
            let mut v = vec![0xff];
            v.extend_from_slice(&iaid[..4]);
            v.extend_from_slice(&[0, 2]); // DUID-EN
            v.extend_from_slice(&43793u32.to_be_bytes());
            v.extend_from_slice(&ident[..8]);
            v
        }
        _ => {
            let mut v = vec![1];
            v.extend_from_slice(&mac);
            v
        }
    }
}

//! IPv4 + UDP framing for the AF_PACKET (SOCK_DGRAM) socket used before the
//! link has an address. The kernel adds and strips the Ethernet header; we
//! build and check the IP and UDP headers. Hand-written because it is two
//! fixed headers and a checksum, smaller than any packet crate.

use std::net::Ipv4Addr;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        let mut it = c.chunks_exact(2);
        for w in &mut it {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [b] = it.remainder() {
            sum += u32::from(*b) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Build an IPv4/UDP datagram from `src`:68 to `dst`:67 carrying `payload`.
pub fn build(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let total = 20 + udp_len;
    let mut ip = [0u8; 20];
    ip[0] = 0x45; // version 4, IHL 5
    ip[1] = 0x10; // DSCP: low delay, as dhclient does
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&CLIENT_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&SERVER_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let pseudo = pseudo_header(src, dst, udp_len);
    let mut c = checksum(&[&pseudo, &udp, payload]);
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());

    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&udp);
    out.extend_from_slice(payload);
    out
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = 17;
    p[10..12].copy_from_slice(&udp_len.to_be_bytes());
    p
}

/// Why an IP packet is not a DHCP reply for us.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated at offset {0}")]
    Truncated(usize),
    #[error("not IPv4 UDP")]
    NotUdp,
    #[error("fragmented")]
    Fragment,
    #[error("bad IPv4 header checksum")]
    IpChecksum,
    #[error("bad UDP checksum")]
    UdpChecksum,
    #[error("UDP port {0} is not 68")]
    Port(u16),
    #[error("length fields disagree with the packet size")]
    Length,
}

/// Check an IPv4 packet and return the UDP payload sent to port 68.
/// `verify_udp` is false when the kernel reports the checksum was not
/// computed yet (TP_STATUS_CSUMNOTREADY: checksum offload on veth etc.).
pub fn parse(pkt: &[u8], verify_udp: bool) -> Result<&[u8], FrameError> {
    if pkt.len() < 20 {
        return Err(FrameError::Truncated(pkt.len()));
    }
    if pkt[0] >> 4 != 4 || pkt[9] != 17 {
        return Err(FrameError::NotUdp);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if ihl < 20 || total < ihl + 8 || total > pkt.len() {
        return Err(FrameError::Length);
    }
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    if frag & 0x3fff != 0 {
        return Err(FrameError::Fragment);
    }
    if checksum(&[&pkt[..ihl]]) != 0 {
        return Err(FrameError::IpChecksum);
    }
    let udp = &pkt[ihl..total];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    if dport != CLIENT_PORT {
        return Err(FrameError::Port(dport));
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < 8 || ulen > udp.len() {
        return Err(FrameError::Length);
    }
    let stored = u16::from_be_bytes([udp[6], udp[7]]);
    if stored != 0 && verify_udp {
        let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
        let pseudo = pseudo_header(src, dst, ulen as u16);
        if checksum(&[&pseudo, &udp[..ulen]]) != 0 {
            return Err(FrameError::UdpChecksum);
        }
    }
    Ok(&udp[8..ulen])
}

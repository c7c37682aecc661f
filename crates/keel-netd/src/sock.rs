//! The sockets the DHCP client uses, and the only `unsafe` in the crate.
//!
//! Before the link has an address: an AF_PACKET SOCK_DGRAM socket bound to
//! the link (the kernel adds the Ethernet header), with a classic BPF
//! filter that passes only IPv4 UDP to port 68, and PACKET_AUXDATA so we
//! know when the UDP checksum was left to offload (veth, virtio). Chosen
//! over a UDP socket with SO_BINDTODEVICE because with no address and no
//! route the kernel's reverse-path filter (rp_filter=1/2, Debian's
//! default) drops the server's replies before any UDP socket sees them,
//! and unicast replies to a not-yet-configured address are not delivered
//! at all. Once bound: a UDP socket on 0.0.0.0:68 bound to the device
//! (SO_BINDTODEVICE) with SO_BROADCAST, for unicast RENEW and broadcast
//! REBIND, as networkd does.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::dhcp::frame;

const ETH_P_IP: u16 = 0x0800;

/// The link-layer socket for DHCP before an address exists.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

fn ll_addr(ifindex: i32, broadcast: bool) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_IP.to_be();
    sa.sll_ifindex = ifindex;
    if broadcast {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    }
    sa
}

/// BPF: accept IPv4 UDP, unfragmented, destination port 68.
fn filter() -> Vec<libc::sock_filter> {
    let s = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LD_B_ABS: u16 = 0x30; // BPF_LD|BPF_B|BPF_ABS
    const LD_H_ABS: u16 = 0x28; // BPF_LD|BPF_H|BPF_ABS
    const LD_H_IND: u16 = 0x48; // BPF_LD|BPF_H|BPF_IND
    const LDX_MSH: u16 = 0xb1; // BPF_LDX|BPF_B|BPF_MSH
    const JEQ: u16 = 0x15; // BPF_JMP|BPF_JEQ|BPF_K
    const JSET: u16 = 0x45; // BPF_JMP|BPF_JSET|BPF_K
    const RET: u16 = 0x06; // BPF_RET|BPF_K
    vec![
        s(LD_B_ABS, 0, 0, 9),                        // 0: A = ip proto
        s(JEQ, 0, 5, 17),                            // 1: UDP? else drop (7)
        s(LD_H_ABS, 0, 0, 6),                        // 2: A = flags/frag offset
        s(JSET, 3, 0, 0x1fff),                       // 3: fragment? drop (7)
        s(LDX_MSH, 0, 0, 0),                         // 4: X = IHL*4
        s(LD_H_IND, 0, 0, 2),                        // 5: A = udp dport
        s(JEQ, 1, 0, u32::from(frame::CLIENT_PORT)), // 6: 68? accept (8)
        s(RET, 0, 0, 0),                             // 7: drop
        s(RET, 0, 0, 0x0004_0000),                   // 8: accept
    ]
}

impl PacketSocket {
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let prog = filter();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut _,
        };
        // SAFETY: fprog points at `prog`, alive for the call; the kernel copies it.
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        // SAFETY: an int option value, size given.
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let sa = ll_addr(ifindex, false);
        // SAFETY: sa is a valid sockaddr_ll and its size is passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Broadcast a BOOTP payload from `source`:68 to 255.255.255.255:67.
    pub fn send_broadcast(&self, source: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let pkt = frame::build(source, Ipv4Addr::BROADCAST, payload);
        let sa = ll_addr(self.ifindex, true);
        // SAFETY: pkt and sa are valid for the duration of the call.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receive one packet: Ok(Some(payload)) for a DHCP reply, Ok(None)
    /// when nothing is pending. Bad frames are skipped with a debug log.
    pub fn recv(&self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 2048];
        loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut cmsg = [0u64; 16];
            // SAFETY: msghdr is plain old data; zeroed is valid.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1 as _;
            msg.msg_control = cmsg.as_mut_ptr().cast();
            // The field is usize on glibc and u32 on musl; 128 bytes fit both.
            msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
            // SAFETY: msg points at iov/cmsg buffers that outlive the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(None);
                }
                return Err(e);
            }
            let n = n as usize;
            if n > buf.len() {
                tracing::debug!(len = n, "ignoring oversized frame");
                continue;
            }
            let mut csum_ready = true;
            // SAFETY: walking the control buffer the kernel filled, with the
            // CMSG_* helpers and msg_controllen it set.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        let aux: libc::tpacket_auxdata =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        if aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                            csum_ready = false;
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            match frame::parse(&buf[..n], csum_ready) {
                Ok(p) => return Ok(Some(p.to_vec())),
                Err(e) => tracing::debug!("ignoring frame: {e}"),
            }
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The UDP socket for DHCP once the address is configured.
#[derive(Debug)]
pub struct UdpSocket {
    sock: socket2::Socket,
}

impl UdpSocket {
    pub fn open(ifname: &str) -> io::Result<UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(
            Domain::IPV4,
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_broadcast(true)?;
        sock.bind_device(Some(ifname.as_bytes()))?;
        sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, frame::CLIENT_PORT).into())?;
        Ok(UdpSocket { sock })
    }

    pub fn send(&self, dest: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        self.sock
            .send_to(payload, &SocketAddrV4::new(dest, frame::SERVER_PORT).into())
            .map(drop)
    }

    pub fn recv(&self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        match self.sock.recv(&mut buf) {
            Ok(n) => Ok(Some(
                buf[..n]
                    .iter()
                    // SAFETY: recv initialised the first n bytes.
                    .map(|b| unsafe { b.assume_init() })
                    .collect(),
            )),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

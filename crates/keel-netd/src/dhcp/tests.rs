//! The client against a fake server with a fake clock.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use proptest::prelude::*;

use super::client::{Action, Client, ClientConfig, Dest, State};
use super::frame;
use super::lease::{Lease, LeaseRoute, StoredLease};

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

fn cfg() -> ClientConfig {
    ClientConfig {
        mac: MAC,
        client_id: super::client_id(crate::config::ClientId::Mac, MAC, None),
        hostname: Some("node1".into()),
        broadcast_flag: false,
    }
}

/// The fake server: answers a client message.
struct Server {
    lease: u32,
    t1: Option<u32>,
    t2: Option<u32>,
    extra: Vec<DhcpOption>,
}

impl Server {
    fn new() -> Self {
        Server {
            lease: 3600,
            t1: None,
            t2: None,
            extra: Vec::new(),
        }
    }

    fn reply(&self, req: &Message, kind: MessageType, yiaddr: Ipv4Addr) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_xid(req.xid())
            .set_chaddr(&req.chaddr()[..6])
            .set_yiaddr(yiaddr);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(SERVER));
        if kind != MessageType::Nak {
            o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
            o.insert(DhcpOption::Router(vec![SERVER]));
            o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
                10, 0, 0, 53,
            )]));
            o.insert(DhcpOption::DomainName("example.test".into()));
            o.insert(DhcpOption::AddressLeaseTime(self.lease));
            if let Some(t) = self.t1 {
                o.insert(DhcpOption::Renewal(t));
            }
            if let Some(t) = self.t2 {
                o.insert(DhcpOption::Rebinding(t));
            }
            for e in &self.extra {
                o.insert(e.clone());
            }
        }
        m.to_vec().unwrap()
    }
}

fn sent(actions: &[Action]) -> Vec<(Dest, MessageType, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                dest,
                kind,
                payload,
            } => Some((*dest, *kind, Message::from_bytes(payload).unwrap())),
            _ => None,
        })
        .collect()
}

fn one_sent(actions: &[Action]) -> (Dest, MessageType, Message) {
    let s = sent(actions);
    assert_eq!(s.len(), 1, "expected one message in {actions:?}");
    s.into_iter().next().unwrap()
}

/// Run INIT → BOUND; returns the client and the time it bound.
fn bound(server: &Server) -> (Client, Instant) {
    let t0 = Instant::now();
    let mut c = Client::new(cfg(), None, 7, t0);
    let (dest, kind, disc) = one_sent(&c.start(t0));
    assert_eq!(kind, MessageType::Discover);
    assert_eq!(
        dest,
        Dest::Broadcast {
            source: Ipv4Addr::UNSPECIFIED
        }
    );
    assert_eq!(c.state(), State::Selecting);
    let a = c.handle_packet(&server.reply(&disc, MessageType::Offer, ADDR), t0);
    let (_, kind, req) = one_sent(&a);
    assert_eq!(kind, MessageType::Request);
    assert_eq!(c.state(), State::Requesting);
    assert_eq!(
        req.xid(),
        disc.xid(),
        "REQUEST answers the OFFER's transaction"
    );
    assert_eq!(
        req.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        req.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDR))
    );
    assert_eq!(req.ciaddr(), Ipv4Addr::UNSPECIFIED);
    let a = c.handle_packet(&server.reply(&req, MessageType::Ack, ADDR), t0);
    assert_eq!(c.state(), State::Bound);
    match &a[..] {
        [Action::Configure {
            lease,
            previous: None,
        }, Action::Persist(p)] => {
            assert_eq!(lease.address, ADDR);
            assert_eq!(lease.prefix, 24);
            assert!(lease.gateway().is_some());
            assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 0, 53)]);
            assert_eq!(p, lease);
        }
        other => panic!("unexpected {other:?}"),
    }
    (c, t0)
}

#[test]
fn discover_offer_request_ack() {
    let (c, t0) = bound(&Server::new());
    assert_eq!(c.lease().unwrap().0.gateway(), Some(SERVER));
    // T1 defaults to half the lease.
    assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(1800)));
}

#[test]
fn client_messages_carry_identity_and_requests() {
    let t0 = Instant::now();
    let mut c = Client::new(cfg(), None, 1, t0);
    let (_, _, m) = one_sent(&c.start(t0));
    assert_eq!(m.opcode(), Opcode::BootRequest);
    assert_eq!(&m.chaddr()[..6], &MAC);
    assert_eq!(
        m.opts().get(OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(vec![
            1, 0x52, 0x54, 0, 0x12, 0x34, 0x56
        ]))
    );
    assert_eq!(
        m.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node1".into()))
    );
    let Some(DhcpOption::ParameterRequestList(l)) = m.opts().get(OptionCode::ParameterRequestList)
    else {
        panic!()
    };
    for code in [1u8, 3, 6, 12, 15, 26, 28, 51, 54, 58, 59, 121] {
        assert!(
            l.contains(&OptionCode::from(code)),
            "option {code} requested"
        );
    }
}

#[test]
fn renew_at_t1_unicast_then_ack() {
    let s = Server {
        t1: Some(100),
        t2: Some(175),
        lease: 200,
        extra: vec![],
    };
    let (mut c, t0) = bound(&s);
    assert!(
        c.handle_timeout(t0 + Duration::from_secs(99)).is_empty(),
        "nothing before T1"
    );
    let t1 = t0 + Duration::from_secs(100);
    let (dest, kind, req) = one_sent(&c.handle_timeout(t1));
    assert_eq!(c.state(), State::Renewing);
    assert_eq!(kind, MessageType::Request);
    assert_eq!(
        dest,
        Dest::Unicast {
            server: SERVER,
            source: ADDR
        }
    );
    assert_eq!(req.ciaddr(), ADDR);
    assert!(
        req.opts().get(OptionCode::ServerIdentifier).is_none(),
        "no server id while renewing"
    );
    assert!(req.opts().get(OptionCode::RequestedIpAddress).is_none());
    let a = c.handle_packet(&s.reply(&req, MessageType::Ack, ADDR), t1);
    assert_eq!(c.state(), State::Bound);
    assert!(matches!(&a[0], Action::Configure { previous: None, .. }));
    assert_eq!(c.deadline(), Some(t1 + Duration::from_secs(100)));
}

#[test]
fn silent_server_rebinding_then_expiry() {
    let s = Server {
        t1: Some(100),
        t2: Some(175),
        lease: 200,
        extra: vec![],
    };
    let (mut c, t0) = bound(&s);
    let mut now;
    let mut kinds = Vec::new();
    // Drive the timers with a silent server until the lease is gone.
    for _ in 0..20 {
        let Some(d) = c.deadline() else { break };
        now = d;
        let a = c.handle_timeout(now);
        let was = c.state();
        for (dest, _, _) in sent(&a) {
            kinds.push((was, dest));
        }
        if a.iter().any(|a| matches!(a, Action::Deconfigure(_))) {
            assert!(a.contains(&Action::Forget));
            assert_eq!(
                now,
                t0 + Duration::from_secs(200),
                "removed exactly at expiry"
            );
            assert_eq!(c.state(), State::Selecting);
            break;
        }
    }
    assert!(kinds
        .iter()
        .any(|(s, d)| *s == State::Renewing && matches!(d, Dest::Unicast { .. })));
    assert!(kinds
        .iter()
        .any(|(s, d)| *s == State::Rebinding && *d == Dest::Broadcast { source: ADDR }));
    assert_eq!(c.state(), State::Selecting, "back to discovery: {kinds:?}");
}

#[test]
fn rebinding_ack_from_any_server_binds() {
    let s = Server {
        t1: Some(10),
        t2: Some(20),
        lease: 200,
        extra: vec![],
    };
    let (mut c, t0) = bound(&s);
    c.handle_timeout(t0 + Duration::from_secs(10));
    let a = c.handle_timeout(t0 + Duration::from_secs(20));
    let (_, _, req) = one_sent(&a);
    assert_eq!(c.state(), State::Rebinding);
    c.handle_packet(
        &s.reply(&req, MessageType::Ack, ADDR),
        t0 + Duration::from_secs(21),
    );
    assert_eq!(c.state(), State::Bound);
}

#[test]
fn address_change_on_renew_reports_previous() {
    let s = Server {
        t1: Some(10),
        t2: Some(20),
        lease: 200,
        extra: vec![],
    };
    let (mut c, t0) = bound(&s);
    let (_, _, req) = one_sent(&c.handle_timeout(t0 + Duration::from_secs(10)));
    let other = Ipv4Addr::new(10, 0, 0, 99);
    let a = c.handle_packet(
        &s.reply(&req, MessageType::Ack, other),
        t0 + Duration::from_secs(10),
    );
    match &a[0] {
        Action::Configure {
            lease,
            previous: Some(p),
        } => {
            assert_eq!(lease.address, other);
            assert_eq!(p.address, ADDR);
        }
        x => panic!("{x:?}"),
    }
}

#[test]
fn nak_while_renewing_deconfigures_and_restarts() {
    let s = Server::new();
    let (mut c, t0) = bound(&s);
    let t1 = t0 + Duration::from_secs(1800);
    let (_, _, req) = one_sent(&c.handle_timeout(t1));
    let a = c.handle_packet(&s.reply(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED), t1);
    assert!(matches!(&a[0], Action::Deconfigure(l) if l.address == ADDR));
    assert_eq!(a[1], Action::Forget);
    assert_eq!(one_sent(&a).1, MessageType::Discover);
    assert_eq!(c.state(), State::Selecting);
    assert!(c.lease().is_none());
}

#[test]
fn nak_while_requesting_restarts() {
    let s = Server::new();
    let t0 = Instant::now();
    let mut c = Client::new(cfg(), None, 3, t0);
    let (_, _, d) = one_sent(&c.start(t0));
    let (_, _, r) = one_sent(&c.handle_packet(&s.reply(&d, MessageType::Offer, ADDR), t0));
    let a = c.handle_packet(&s.reply(&r, MessageType::Nak, Ipv4Addr::UNSPECIFIED), t0);
    assert_eq!(one_sent(&a).1, MessageType::Discover);
    assert!(!a.iter().any(|a| matches!(a, Action::Deconfigure(_))));
    assert_eq!(c.state(), State::Selecting);
}

fn stored() -> Lease {
    let s = Server::new();
    let mut req = Message::default();
    req.set_chaddr(&MAC);
    Lease::from_reply(&Message::from_bytes(&s.reply(&req, MessageType::Ack, ADDR)).unwrap())
        .unwrap()
}

#[test]
fn init_reboot_with_stored_lease() {
    let s = Server::new();
    let t0 = Instant::now();
    let mut c = Client::new(cfg(), Some(stored()), 5, t0);
    let (dest, kind, req) = one_sent(&c.start(t0));
    assert_eq!(c.state(), State::InitReboot);
    assert_eq!(kind, MessageType::Request);
    assert_eq!(
        dest,
        Dest::Broadcast {
            source: Ipv4Addr::UNSPECIFIED
        }
    );
    assert_eq!(req.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        req.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDR))
    );
    assert!(
        req.opts().get(OptionCode::ServerIdentifier).is_none(),
        "INIT-REBOOT has no server id"
    );
    c.handle_packet(&s.reply(&req, MessageType::Ack, ADDR), t0);
    assert_eq!(c.state(), State::Bound);
}

#[test]
fn init_reboot_nak_goes_to_init() {
    let s = Server::new();
    let t0 = Instant::now();
    let mut c = Client::new(cfg(), Some(stored()), 5, t0);
    let (_, _, req) = one_sent(&c.start(t0));
    let a = c.handle_packet(&s.reply(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED), t0);
    assert_eq!(a[0], Action::Forget);
    let (_, kind, d) = one_sent(&a);
    assert_eq!(kind, MessageType::Discover);
    assert!(
        d.opts().get(OptionCode::RequestedIpAddress).is_none(),
        "NAKed address not asked for again"
    );
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn init_reboot_silence_falls_back_to_discover() {
    let t0 = Instant::now();
    let mut c = Client::new(cfg(), Some(stored()), 5, t0);
    c.start(t0);
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let d = c.deadline().unwrap();
        kinds.push(one_sent(&c.handle_timeout(d)).1);
    }
    assert_eq!(
        kinds,
        [
            MessageType::Request,
            MessageType::Request,
            MessageType::Request,
            MessageType::Discover
        ]
    );
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn retransmission_backoff_with_jitter() {
    let t0 = Instant::now();
    let mut c = Client::new(cfg(), None, 11, t0);
    c.start(t0);
    let mut now = t0;
    let mut gaps = Vec::new();
    let mut xids = std::collections::HashSet::new();
    for _ in 0..7 {
        let d = c.deadline().unwrap();
        gaps.push(d - now);
        now = d;
        let (_, k, m) = one_sent(&c.handle_timeout(now));
        assert_eq!(k, MessageType::Discover);
        xids.insert(m.xid());
    }
    for (i, g) in gaps.iter().enumerate() {
        let base = 4u64 << i.min(4);
        assert!(
            *g >= Duration::from_secs(base - 1) && *g <= Duration::from_secs(base + 1),
            "gap {i} = {g:?}, want {base}±1 s"
        );
    }
    assert!(
        gaps.windows(2)
            .any(|w| w[0] != w[1] && w[0].as_secs() == w[1].as_secs())
            || gaps.iter().any(|g| g.subsec_millis() != 0),
        "jitter present: {gaps:?}"
    );
    assert_eq!(xids.len(), 1, "retransmissions keep the xid");
    // Early timeouts do nothing.
    assert!(c.handle_timeout(now).is_empty());
}

#[test]
fn requesting_gives_up_after_retries() {
    let s = Server::new();
    let t0 = Instant::now();
    let mut c = Client::new(cfg(), None, 3, t0);
    let (_, _, d) = one_sent(&c.start(t0));
    c.handle_packet(&s.reply(&d, MessageType::Offer, ADDR), t0);
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let d = c.deadline().unwrap();
        kinds.push(one_sent(&c.handle_timeout(d)).1);
    }
    assert_eq!(kinds.last(), Some(&MessageType::Discover));
    assert_eq!(
        kinds.iter().filter(|k| **k == MessageType::Request).count(),
        3
    );
}

#[test]
fn classless_routes_override_router() {
    let net = |s: &str| s.parse::<ipnet::Ipv4Net>().unwrap();
    let s = Server {
        extra: vec![DhcpOption::ClasslessStaticRoute(vec![
            (net("0.0.0.0/0"), Ipv4Addr::new(10, 0, 0, 254)),
            (net("192.168.7.0/24"), Ipv4Addr::new(10, 0, 0, 7)),
        ])],
        ..Server::new()
    };
    let (c, _) = bound(&s);
    let l = &c.lease().unwrap().0;
    assert_eq!(
        l.routes,
        vec![
            LeaseRoute {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Ipv4Addr::new(10, 0, 0, 254)
            },
            LeaseRoute {
                destination: Ipv4Addr::new(192, 168, 7, 0),
                prefix: 24,
                gateway: Ipv4Addr::new(10, 0, 0, 7)
            },
        ]
    );
    assert_eq!(l.gateway(), Some(Ipv4Addr::new(10, 0, 0, 254)));
}

#[test]
fn lease_options_and_defaults() {
    let s = Server {
        extra: vec![
            DhcpOption::InterfaceMtu(1400),
            DhcpOption::Hostname("Node-7.".into()),
            DhcpOption::BroadcastAddr(Ipv4Addr::new(10, 0, 0, 255)),
        ],
        lease: 1000,
        ..Server::new()
    };
    let (c, _) = bound(&s);
    let l = &c.lease().unwrap().0;
    assert_eq!((l.t1_secs, l.t2_secs, l.lease_secs), (500, 875, 1000));
    assert_eq!(l.mtu, Some(1400));
    assert_eq!(l.hostname.as_deref(), Some("node-7"));
    assert_eq!(l.domain.as_deref(), Some("example.test"));
    assert_eq!(l.broadcast, Some(Ipv4Addr::new(10, 0, 0, 255)));
}

#[test]
fn bad_packets_are_ignored() {
    let s = Server::new();
    let t0 = Instant::now();
    let mut c = Client::new(cfg(), None, 3, t0);
    let (_, _, d) = one_sent(&c.start(t0));
    let good = s.reply(&d, MessageType::Offer, ADDR);
    let mut wrong_xid = d.clone();
    wrong_xid.set_xid(d.xid().wrapping_add(1));
    let mut wrong_mac = d.clone();
    wrong_mac.set_chaddr(&[1, 2, 3, 4, 5, 6]);
    let mut bad_magic = good.clone();
    bad_magic[236] = 0;
    let mut oversized = good.clone();
    oversized.resize(70_000, 0);
    let mut no_lease = Message::from_bytes(&good).unwrap();
    no_lease.opts_mut().remove(OptionCode::AddressLeaseTime);
    let mut as_request = Message::from_bytes(&good).unwrap();
    as_request.set_opcode(Opcode::BootRequest);
    let mut bad_option = good.clone();
    // Claim the first option (message type) is longer than the packet.
    bad_option[241] = 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated header", good[..100].to_vec()),
        ("truncated options", good[..243].to_vec()),
        ("bad magic", bad_magic),
        ("oversized", oversized),
        ("wrong xid", s.reply(&wrong_xid, MessageType::Offer, ADDR)),
        (
            "wrong chaddr",
            s.reply(&wrong_mac, MessageType::Offer, ADDR),
        ),
        ("no lease time", no_lease.to_vec().unwrap()),
        ("bootrequest", as_request.to_vec().unwrap()),
        ("bad option length", bad_option),
        ("ack while selecting", s.reply(&d, MessageType::Ack, ADDR)),
        (
            "offer of 0.0.0.0",
            s.reply(&d, MessageType::Offer, Ipv4Addr::UNSPECIFIED),
        ),
    ];
    for (name, pkt) in cases {
        assert!(
            c.handle_packet(&pkt, t0).is_empty(),
            "{name}: must be ignored"
        );
        assert_eq!(c.state(), State::Selecting, "{name}");
    }
    // The good one still works afterwards.
    assert_eq!(
        one_sent(&c.handle_packet(&good, t0)).1,
        MessageType::Request
    );
}

#[test]
fn stored_lease_roundtrip_and_expiry() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("eth0.json");
    assert!(StoredLease::load(&p).unwrap().is_none());
    let now = SystemTime::now();
    let st = StoredLease::new("eth0", stored(), now);
    st.store(&p).unwrap();
    let back = StoredLease::load(&p).unwrap().unwrap();
    assert_eq!(back, st);
    assert!(back.remaining(now).unwrap() > Duration::from_secs(3500));
    assert!(back.remaining(now + Duration::from_secs(3601)).is_none());
    std::fs::write(&p, "{\"version\":1}").unwrap();
    let e = StoredLease::load(&p).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("parsing lease {}: missing field", p.display())),
        "{e}"
    );
}

#[test]
fn client_id_is_stable() {
    use crate::config::ClientId;
    let a = super::client_id(
        ClientId::Duid,
        MAC,
        Some("0123456789abcdef0123456789abcdef\n"),
    );
    let b = super::client_id(
        ClientId::Duid,
        MAC,
        Some("0123456789abcdef0123456789abcdef"),
    );
    assert_eq!(a, b);
    assert_eq!(a.len(), 1 + 4 + 2 + 4 + 8);
    assert_eq!(a[0], 0xff);
    assert_ne!(
        a,
        super::client_id(
            ClientId::Duid,
            MAC,
            Some("ffffffffffffffffffffffffffffffff")
        )
    );
    assert_eq!(
        super::client_id(ClientId::Duid, MAC, None),
        super::client_id(ClientId::Mac, MAC, None)
    );
}

#[test]
fn frame_roundtrip_and_rejects() {
    let payload = b"hello dhcp".to_vec();
    let pkt = frame::build(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &payload);
    // Our own packet goes to port 67; flip ports to look like a reply.
    let mut reply = pkt.clone();
    reply.swap(20, 22);
    reply.swap(21, 23);
    assert_eq!(frame::parse(&reply, true).unwrap(), &payload[..]);
    assert_eq!(frame::parse(&pkt, true), Err(frame::FrameError::Port(67)));
    let mut bad_ip = reply.clone();
    bad_ip[8] = 1;
    assert_eq!(
        frame::parse(&bad_ip, true),
        Err(frame::FrameError::IpChecksum)
    );
    let mut bad_udp = reply.clone();
    bad_udp[30] ^= 0xff;
    assert_eq!(
        frame::parse(&bad_udp, true),
        Err(frame::FrameError::UdpChecksum)
    );
    assert_eq!(
        frame::parse(&bad_udp, false).map(|p| p.len()),
        Ok(payload.len())
    );
    assert_eq!(
        frame::parse(&reply[..10], true),
        Err(frame::FrameError::Truncated(10))
    );
    assert_eq!(
        frame::parse(&reply[..30], true),
        Err(frame::FrameError::Length)
    );
    let mut frag = reply.clone();
    frag[6] = 0x20;
    assert_eq!(frame::parse(&frag, true), Err(frame::FrameError::Fragment));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..700)) {
        let t0 = Instant::now();
        let mut c = Client::new(cfg(), None, 1, t0);
        c.start(t0);
        c.handle_packet(&data, t0);
        let _ = frame::parse(&data, true);
        super::client::decode_for_fuzz(&data);
    }

    #[test]
    fn mutated_offers_never_panic(pos in 0usize..400, val in any::<u8>(), cut in 0usize..400) {
        let s = Server::new();
        let t0 = Instant::now();
        let mut c = Client::new(cfg(), None, 1, t0);
        let (_, _, d) = one_sent(&c.start(t0));
        let mut pkt = s.reply(&d, MessageType::Offer, ADDR);
        if pos < pkt.len() { pkt[pos] = val; }
        pkt.truncate(cut.max(200));
        c.handle_packet(&pkt, t0);
    }
}

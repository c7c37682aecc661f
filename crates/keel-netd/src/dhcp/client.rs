//! The RFC 2131 client state machine, sans I/O: driven by `start`,
//! `handle_packet` and `handle_timeout` with the current time, it returns
//! [`Action`]s (send this, configure that) for the daemon to carry out.
//! Time and randomness come in from outside, so tests drive it with a
//! fake clock and a fake server.
//!
//! ```text
//!  start ──► INIT ──DISCOVER──► SELECTING ──OFFER/REQUEST──► REQUESTING ──ACK──► BOUND
//!   │ (stored lease)                ▲           NAK / no ACK ──┘                 │ T1
//!   └──► INIT-REBOOT ──ACK──► BOUND │                                            ▼
//!          NAK / silence ──► INIT ──┘   expiry / NAK ◄── REBINDING ◄─T2── RENEWING
//! ```

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode};
use dhcproto::{Decodable, Encodable};
use serde::Serialize;

use super::lease::{Lease, REQUESTED};

/// Client parameters fixed for the life of the link.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub mac: [u8; 6],
    /// Option 61, stable across boots (see `client_id`).
    pub client_id: Vec<u8>,
    /// Option 12 to send, when SendHostname= and a hostname is set.
    pub hostname: Option<String>,
    /// Ask the server to broadcast replies (not needed with a packet socket).
    pub broadcast_flag: bool,
}

/// RFC 2131 figure 5 states (INIT-REBOOT and REBOOTING are one here: the
/// client sends its REQUEST on entering INIT-REBOOT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Init,
    Selecting,
    Requesting,
    InitReboot,
    Bound,
    Renewing,
    Rebinding,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Selecting => "selecting",
            State::Requesting => "requesting",
            State::InitReboot => "init-reboot",
            State::Bound => "bound",
            State::Renewing => "renewing",
            State::Rebinding => "rebinding",
        }
    }

    /// Whether the link has the lease's address configured in this state;
    /// decides between the packet socket and the UDP socket.
    pub fn has_address(self) -> bool {
        matches!(self, State::Bound | State::Renewing | State::Rebinding)
    }
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// 255.255.255.255 from `source` (0.0.0.0 before an address exists).
    Broadcast { source: Ipv4Addr },
    /// Unicast to the server from our leased address (RENEWING).
    Unicast { server: Ipv4Addr, source: Ipv4Addr },
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        dest: Dest,
        kind: MessageType,
        payload: Vec<u8>,
    },
    /// Install the lease's address and routes; remove `previous`'s first
    /// when it differs.
    Configure {
        lease: Lease,
        previous: Option<Lease>,
    },
    /// Remove the lease's address and routes (expiry, NAK).
    Deconfigure(Lease),
    /// Store the lease for INIT-REBOOT.
    Persist(Lease),
    /// Delete the stored lease.
    Forget,
}

/// REQUEST retransmissions before giving up on REQUESTING / INIT-REBOOT.
const MAX_REQUEST_TRIES: u32 = 4;
/// RFC 2131 4.1: first retransmission after 4 s, doubling to 64 s.
const BACKOFF_BASE: Duration = Duration::from_secs(4);
const BACKOFF_MAX: Duration = Duration::from_secs(64);
/// RFC 2131 4.4.5: in RENEWING/REBINDING wait half the time left, at least 60 s.
const RENEW_MIN: Duration = Duration::from_secs(60);

/// The client for one link.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    state: State,
    xid: u32,
    rng: fastrand::Rng,
    offered: Option<Lease>,
    /// The active lease and when it was acquired (monotonic).
    bound: Option<(Lease, Instant)>,
    /// A stored lease to try with INIT-REBOOT.
    reboot: Option<Lease>,
    attempt: u32,
    deadline: Option<Instant>,
    started: Instant,
}

impl Client {
    /// `stored`: an unexpired persisted lease (tries INIT-REBOOT first).
    pub fn new(cfg: ClientConfig, stored: Option<Lease>, seed: u64, now: Instant) -> Client {
        Client {
            cfg,
            state: State::Init,
            xid: 0,
            rng: fastrand::Rng::with_seed(seed),
            offered: None,
            bound: None,
            reboot: stored,
            attempt: 0,
            deadline: None,
            started: now,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The lease in use and when it was acquired.
    pub fn lease(&self) -> Option<&(Lease, Instant)> {
        self.bound.as_ref()
    }

    /// When `handle_timeout` must be called next.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Begin: INIT-REBOOT with a stored lease, else INIT → SELECTING.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        match self.reboot.take() {
            Some(lease) => {
                self.enter(State::InitReboot, now);
                self.offered = Some(lease);
                let a = self.send_request(now);
                let d = self.backoff();
                self.deadline = Some(now + d);
                vec![a]
            }
            None => self.discover(now),
        }
    }

    /// Stop: give back the address (no RELEASE is sent: like networkd's
    /// default, the lease stays valid for INIT-REBOOT at the next start).
    pub fn stop(&mut self) -> Vec<Action> {
        self.deadline = None;
        self.state = State::Init;
        self.bound
            .take()
            .map(|(l, _)| vec![Action::Deconfigure(l)])
            .unwrap_or_default()
    }

    fn enter(&mut self, s: State, now: Instant) {
        tracing::debug!(from = self.state.as_str(), to = s.as_str(), "dhcp state");
        self.state = s;
        self.attempt = 0;
        self.xid = self.rng.u32(..);
        self.started = now;
    }

    /// Exponential backoff with ±1 s jitter (RFC 2131 4.1).
    fn backoff(&mut self) -> Duration {
        let exp = BACKOFF_BASE.saturating_mul(1u32 << self.attempt.min(4));
        let base = exp.min(BACKOFF_MAX);
        let jitter_ms = self.rng.i64(-1000..=1000);
        if jitter_ms >= 0 {
            base + Duration::from_millis(jitter_ms as u64)
        } else {
            base - Duration::from_millis(jitter_ms.unsigned_abs())
        }
    }

    fn discover(&mut self, now: Instant) -> Vec<Action> {
        self.offered = None;
        self.enter(State::Selecting, now);
        self.send_discover(now)
    }

    /// Broadcast a DISCOVER (asking for the previous address, if any) and
    /// arm the retransmission timer; used for the first and every retry.
    fn send_discover(&mut self, now: Instant) -> Vec<Action> {
        let mut m = self.message(MessageType::Discover, now);
        if let Some(r) = &self.reboot {
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(r.address));
        }
        let d = self.backoff();
        self.deadline = Some(now + d);
        vec![self.send(
            m,
            Dest::Broadcast {
                source: Ipv4Addr::UNSPECIFIED,
            },
        )]
    }

    fn message(&self, kind: MessageType, now: Instant) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_xid(self.xid)
            .set_chaddr(&self.cfg.mac)
            .set_secs(
                now.saturating_duration_since(self.started)
                    .as_secs()
                    .min(u16::MAX as u64) as u16,
            );
        if self.cfg.broadcast_flag && !self.state.has_address() {
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ClientIdentifier(self.cfg.client_id.clone()));
        o.insert(DhcpOption::ParameterRequestList(REQUESTED.to_vec()));
        o.insert(DhcpOption::MaxMessageSize(1500));
        if let Some(h) = &self.cfg.hostname {
            o.insert(DhcpOption::Hostname(h.clone()));
        }
        m
    }

    fn send(&self, m: Message, dest: Dest) -> Action {
        let kind = m.opts().msg_type().unwrap_or(MessageType::Unknown(0));
        // Encoding into a Vec only fails on values over the option size
        // limits, which our own messages never contain.
        let payload = m.to_vec().unwrap_or_default();
        Action::Send {
            dest,
            kind,
            payload,
        }
    }

    /// The REQUEST for the current state (RFC 2131 table 4).
    fn send_request(&mut self, now: Instant) -> Action {
        let mut m = self.message(MessageType::Request, now);
        let dest = match self.state {
            State::Requesting => {
                if let Some(o) = &self.offered {
                    m.opts_mut()
                        .insert(DhcpOption::ServerIdentifier(o.server_id));
                    m.opts_mut()
                        .insert(DhcpOption::RequestedIpAddress(o.address));
                }
                Dest::Broadcast {
                    source: Ipv4Addr::UNSPECIFIED,
                }
            }
            State::InitReboot => {
                if let Some(o) = &self.offered {
                    m.opts_mut()
                        .insert(DhcpOption::RequestedIpAddress(o.address));
                }
                Dest::Broadcast {
                    source: Ipv4Addr::UNSPECIFIED,
                }
            }
            State::Renewing | State::Rebinding => {
                let (addr, server) = self
                    .bound
                    .as_ref()
                    .map(|(l, _)| (l.address, l.server_id))
                    .unwrap_or((Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
                m.set_ciaddr(addr);
                if self.state == State::Renewing {
                    Dest::Unicast {
                        server,
                        source: addr,
                    }
                } else {
                    Dest::Broadcast { source: addr }
                }
            }
            _ => Dest::Broadcast {
                source: Ipv4Addr::UNSPECIFIED,
            },
        };
        self.send(m, dest)
    }

    /// Handle a BOOTP payload (UDP payload from port 67). Anything that is
    /// not a valid reply to our current transaction is ignored with a debug
    /// log.
    pub fn handle_packet(&mut self, data: &[u8], now: Instant) -> Vec<Action> {
        let msg = match check_reply(data, self.xid, &self.cfg.mac) {
            Ok(m) => m,
            Err(why) => {
                tracing::debug!(len = data.len(), "ignoring dhcp packet: {why}");
                return Vec::new();
            }
        };
        let Some(kind) = msg.opts().msg_type() else {
            tracing::debug!("ignoring dhcp packet: no message type");
            return Vec::new();
        };
        let server = match msg.opts().get(dhcproto::v4::OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
            _ => None,
        };
        match (self.state, kind) {
            (State::Selecting, MessageType::Offer) => match Lease::from_reply(&msg) {
                Ok(l) => {
                    tracing::debug!(address = %l.address, server = %l.server_id, "offer");
                    self.offered = Some(l);
                    // Keep the xid: the REQUEST answers this OFFER.
                    let xid = self.xid;
                    self.enter(State::Requesting, now);
                    self.xid = xid;
                    let a = self.send_request(now);
                    let d = self.backoff();
                    self.deadline = Some(now + d);
                    vec![a]
                }
                Err(e) => {
                    tracing::debug!("ignoring offer: {e}");
                    Vec::new()
                }
            },
            (
                State::Requesting | State::InitReboot | State::Renewing | State::Rebinding,
                MessageType::Ack,
            ) => {
                let lease = match Lease::from_reply(&msg) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!("ignoring ack: {e}");
                        return Vec::new();
                    }
                };
                if self.state == State::Requesting
                    && self
                        .offered
                        .as_ref()
                        .is_some_and(|o| o.server_id != lease.server_id)
                {
                    tracing::debug!(server = %lease.server_id, "ignoring ack from a server we did not select");
                    return Vec::new();
                }
                self.bind(lease, now)
            }
            (
                State::Requesting | State::InitReboot | State::Renewing | State::Rebinding,
                MessageType::Nak,
            ) => {
                let expected = match self.state {
                    State::Requesting => self.offered.as_ref().map(|o| o.server_id),
                    State::Renewing => self.bound.as_ref().map(|(l, _)| l.server_id),
                    _ => None,
                };
                if expected.is_some() && server.is_some() && expected != server {
                    tracing::debug!("ignoring nak from another server");
                    return Vec::new();
                }
                tracing::info!(state = self.state.as_str(), "server sent NAK, restarting");
                let mut out = Vec::new();
                if let Some((l, _)) = self.bound.take() {
                    out.push(Action::Deconfigure(l));
                }
                out.push(Action::Forget);
                self.reboot = None;
                out.extend(self.discover(now));
                out
            }
            (s, k) => {
                tracing::debug!(state = s.as_str(), "ignoring unexpected {k:?}");
                Vec::new()
            }
        }
    }

    fn bind(&mut self, lease: Lease, now: Instant) -> Vec<Action> {
        let previous = self.bound.take().map(|(l, _)| l);
        tracing::info!(
            address = %lease.address, prefix = lease.prefix, server = %lease.server_id,
            lease_secs = lease.lease_secs, "lease bound"
        );
        self.enter(State::Bound, now);
        self.deadline = Some(now + Duration::from_secs(lease.t1_secs.into()));
        self.bound = Some((lease.clone(), now));
        self.offered = None;
        let previous = previous.filter(|p| {
            p.address != lease.address || p.prefix != lease.prefix || p.routes != lease.routes
        });
        vec![
            Action::Configure {
                lease: lease.clone(),
                previous,
            },
            Action::Persist(lease),
        ]
    }

    fn times(&self) -> Option<(Instant, Instant, Instant)> {
        self.bound.as_ref().map(|(l, at)| {
            (
                *at + Duration::from_secs(l.t1_secs.into()),
                *at + Duration::from_secs(l.t2_secs.into()),
                *at + Duration::from_secs(l.lease_secs.into()),
            )
        })
    }

    /// Half the time to `until`, at least 60 s, but never past `until`.
    fn renew_wait(now: Instant, until: Instant) -> Instant {
        let left = until.saturating_duration_since(now);
        (now + (left / 2).max(RENEW_MIN)).min(until)
    }

    /// Call at (or after) `deadline()`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return Vec::new(),
        }
        match self.state {
            State::Init => self.discover(now),
            State::Selecting => {
                self.attempt += 1;
                self.send_discover(now)
            }
            State::Requesting | State::InitReboot => {
                self.attempt += 1;
                if self.attempt >= MAX_REQUEST_TRIES {
                    tracing::info!(
                        state = self.state.as_str(),
                        "no answer to REQUEST, restarting discovery"
                    );
                    self.reboot = None;
                    return self.discover(now);
                }
                let a = self.send_request(now);
                let d = self.backoff();
                self.deadline = Some(now + d);
                vec![a]
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some((_, t2, exp)) = self.times() else {
                    return self.discover(now);
                };
                if now >= exp {
                    tracing::info!("lease expired");
                    let mut out = Vec::new();
                    if let Some((l, _)) = self.bound.take() {
                        out.push(Action::Deconfigure(l));
                    }
                    out.push(Action::Forget);
                    out.extend(self.discover(now));
                    return out;
                }
                if now >= t2 {
                    if self.state != State::Rebinding {
                        self.enter(State::Rebinding, now);
                    } else {
                        self.attempt += 1;
                    }
                    self.deadline = Some(Self::renew_wait(now, exp));
                } else {
                    if self.state != State::Renewing {
                        self.enter(State::Renewing, now);
                    } else {
                        self.attempt += 1;
                    }
                    self.deadline = Some(Self::renew_wait(now, t2));
                }
                vec![self.send_request(now)]
            }
        }
    }
}

/// Why a packet was not for us; the text goes to the debug log.
fn check_reply(data: &[u8], xid: u32, mac: &[u8; 6]) -> Result<Message, String> {
    const MAGIC_AT: usize = 236;
    if data.len() < MAGIC_AT + 4 {
        return Err(format!(
            "truncated ({} bytes, need at least 240)",
            data.len()
        ));
    }
    if data.len() > 65507 {
        return Err("oversized".into());
    }
    if data[MAGIC_AT..MAGIC_AT + 4] != [99, 130, 83, 99] {
        return Err("bad magic cookie".into());
    }
    // dhcproto's Message::chaddr() slices by hlen and panics past 16, so
    // check hlen (offset 2) and compare chaddr (offset 28) on the raw bytes.
    if data[2] > 16 {
        return Err(format!("hlen {} is over 16", data[2]));
    }
    if data[28..34] != mac[..] {
        return Err("chaddr is not our hardware address".into());
    }
    let clean = sanitize(data)?;
    let msg = Message::from_bytes(&clean).map_err(|e| format!("malformed: {e}"))?;
    if msg.opcode() != Opcode::BootReply {
        return Err("not a BOOTREPLY".into());
    }
    if msg.xid() != xid {
        return Err(format!("xid {:#010x} is not ours ({xid:#010x})", msg.xid()));
    }
    Ok(msg)
}

/// Options the client uses and the length rule each must follow.
fn option_len_ok(code: u8, len: usize) -> Option<bool> {
    Some(match code {
        1 | 28 | 51 | 54 | 58 | 59 => len == 4,
        3 | 6 => len >= 4 && len.is_multiple_of(4),
        12 | 15 => len >= 1,
        26 => len == 2,
        53 => len == 1,
        121 => len >= 5,
        _ => return None,
    })
}

/// Rebuild the options area keeping only the options the client uses,
/// each checked for length, so dhcproto never sees an option whose length
/// its decoder does not check (some only `debug_assert!` it, which panics
/// in debug builds and misaligns the rest of the options in release).
/// The first copy of a repeated option wins.
fn sanitize(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = data[..240].to_vec();
    let mut seen = [false; 256];
    let mut i = 240;
    while i < data.len() {
        let code = data[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = data.get(i + 1) else {
            return Err(format!("option {code} at offset {i} has no length"));
        };
        let len = usize::from(len);
        let Some(body) = data.get(i + 2..i + 2 + len) else {
            return Err(format!(
                "option {code} at offset {i} runs past the end ({len} bytes)"
            ));
        };
        match option_len_ok(code, len) {
            Some(true) if !seen[usize::from(code)] => {
                seen[usize::from(code)] = true;
                out.push(code);
                out.push(len as u8);
                out.extend_from_slice(body);
            }
            Some(true) | None => {}
            Some(false) => return Err(format!("option {code} at offset {i} has bad length {len}")),
        }
        i += 2 + len;
    }
    out.push(255);
    Ok(out)
}

/// The decoder path of [`Client::handle_packet`] without the transaction
/// checks, for the fuzzer: never panics.
pub fn decode_for_fuzz(data: &[u8]) {
    let mut mac = [0u8; 6];
    if let Some(m) = data.get(28..34) {
        mac.copy_from_slice(m);
    }
    let xid = data
        .get(4..8)
        .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
        .unwrap_or(0);
    if let Ok(m) = check_reply(data, xid, &mac) {
        let _ = Lease::from_reply(&m);
        let _ = m.opts().msg_type();
    }
}

//! One BGP peer: the RFC 4271 §8 state machine, sans-I/O.
//!
//! The caller owns the TCP connection and the clock (see the crate docs for
//! the diagram and the contract). Input: [`Session::start`],
//! [`Session::stop`], [`Session::connected`], [`Session::connection_closed`],
//! [`Session::on_bytes`], [`Session::poll`], [`Session::advertise`].
//! Output: [`Session::transmit`] bytes (acknowledge with
//! [`Session::consume`]) and [`Session::next_event`].
//!
//! Received bytes are reassembled in a 4096-byte buffer (the largest BGP
//! message); whole messages already contiguous in the caller's slice are
//! decoded in place. Every fault ends as a value: a counter, a
//! treat-as-withdraw, or a NOTIFICATION followed by [`Event::Down`] — never
//! a panic.

use crate::evpn::{EvpnRoute, ExtCommunities, ExtCommunity, PmsiTunnel, RouteTarget, TUNNEL_VXLAN};
use crate::rib::{LocalEntry, LocalKey, LocalRoutes};
use crate::update::{decode_update, encode_evpn_announce, encode_evpn_withdraw, NextHop, OutAttrs, WITHDRAW_OVERHEAD};
use crate::wire::{
    self, cease, code, decode_header, decode_notification, decode_open, decode_route_refresh, encode_keepalive, encode_notification,
    encode_open, msg, Error, Writer, HEADER_LEN, MAX_MESSAGE_LEN,
};
use crate::Instant;
use core::net::Ipv4Addr;
use heapless::Deque;

/// Transmit buffer size: announcements are only built while a whole
/// message still fits, so keepalives and NOTIFICATIONs always find room
/// unless the caller stops draining.
pub const TX_CAP: usize = 3 * MAX_MESSAGE_LEN;
/// How long OpenSent waits for the peer's OPEN (RFC 4271 suggests 4 min).
pub const OPEN_HOLD_MS: u64 = 240_000;
/// Events kept until the caller reads them.
pub const EVENT_CAP: usize = 16;

/// The configuration of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier (router id).
    pub router_id: Ipv4Addr,
    /// The AS the peer must announce (iBGP: `local_as`).
    pub peer_as: u32,
    /// The hold time we propose, seconds (0 or ≥ 3).
    pub hold_time: u16,
    /// ConnectRetry timer, milliseconds.
    pub connect_retry_ms: u64,
    /// First IdleHold back-off after an error, milliseconds (doubles per
    /// consecutive failure).
    pub idle_hold_ms: u64,
    /// Upper bound of the back-off.
    pub idle_hold_max_ms: u64,
    /// Only accept connections; never ask to dial.
    pub passive: bool,
}

impl Config {
    /// An iBGP peer in `asn` with the defaults: hold time 90 s (FRR's
    /// `datacenter` defaults propose 9 s, and the smaller wins), ConnectRetry
    /// 10 s, IdleHold 1 s up to 60 s, active.
    pub const fn ibgp(asn: u32, router_id: Ipv4Addr) -> Config {
        Config {
            local_as: asn,
            router_id,
            peer_as: asn,
            hold_time: 90,
            connect_retry_ms: 10_000,
            idle_hold_ms: 1_000,
            idle_hold_max_ms: 60_000,
            passive: false,
        }
    }

    fn is_ibgp(&self) -> bool {
        self.local_as == self.peer_as
    }
}

/// RFC 4271 §8.2.2 states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// Why a session went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION (4/0 is our hold timer expiring).
    NotificationSent { code: u8, subcode: u8 },
    /// The peer sent this NOTIFICATION.
    NotificationReceived { code: u8, subcode: u8 },
    /// The TCP connection closed or failed.
    ConnectionClosed,
    /// [`Session::stop`].
    Stopped,
}

/// What the caller must do or know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Open a TCP connection to the peer (port 179), then call
    /// [`Session::connected`] or [`Session::connection_closed`]. Repeated
    /// when ConnectRetry expires: abandon the previous attempt.
    Connect,
    /// Write out what [`Session::transmit`] holds, then close the connection.
    Disconnect,
    /// The session reached Established.
    Established,
    /// The session left OpenSent/OpenConfirm/Established: drop the peer's
    /// routes ([`crate::Rib::withdraw_peer`]).
    Down(DownReason),
    /// The peer finished its initial EVPN table (End-of-RIB).
    EndOfRib,
}

/// The answer to a second, incoming connection ([`Session::incoming`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Take it: call [`Session::connected`] for it (drop any own attempt).
    Accept,
    /// Write these bytes (NOTIFICATION Cease/Connection Collision
    /// Resolution) on the new connection and close it.
    Reject([u8; 21]),
}

/// What each kind of input did; every dropped input is counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub messages_in: u64,
    pub updates_in: u64,
    pub keepalives_in: u64,
    pub messages_out: u64,
    pub routes_announced: u64,
    pub routes_withdrawn: u64,
    /// UPDATEs handled as withdrawals (RFC 7606), NLRI errors included.
    pub treat_as_withdraw: u64,
    /// Attributes dropped (attribute discard, duplicates).
    pub attributes_discarded: u64,
    /// Unknown optional attributes skipped.
    pub unknown_attributes: u64,
    /// MP_UNREACH NLRIs that could not be parsed (the rest of the attribute is lost).
    pub withdraw_nlri_errors: u64,
    /// UPDATEs of other address families or with IPv4 unicast NLRI, ignored.
    pub other_family: u64,
    /// EVPN announcements with an IPv6 next hop, ignored (withdrawn).
    pub ipv6_next_hop: u64,
    /// Announcements carrying our own AS or router id (loops), withdrawn.
    pub looped: u64,
    /// Bytes received while no connection was expected.
    pub bytes_ignored: u64,
    /// Messages that did not fit the transmit buffer (caller not draining).
    pub tx_dropped: u64,
    /// Events lost because the caller did not read them.
    pub events_dropped: u64,
    pub notifications_sent: u64,
    pub notifications_received: u64,
    pub route_refresh_in: u64,
    /// Times the session reached Established.
    pub established: u64,
    /// Second connections refused (collisions).
    pub collisions: u64,
}

/// Path attributes of received EVPN routes, as the RIB needs them.
#[derive(Clone, Copy, Debug)]
pub struct RouteAttrs<'a> {
    /// The MP_REACH next hop: the remote VTEP for type 2/5.
    pub next_hop: Ipv4Addr,
    /// LOCAL_PREF (100 if absent).
    pub local_pref: u32,
    pub ext_communities: ExtCommunities<'a>,
    pub pmsi: Option<PmsiTunnel>,
}

/// Where a session puts the routes it receives.
pub trait RouteSink {
    /// A route was announced (replacing any earlier one with the same key:
    /// implicit withdraw).
    fn announce(&mut self, route: &EvpnRoute, attrs: &RouteAttrs<'_>);
    /// A route was withdrawn (or must be treated as withdrawn).
    fn withdraw(&mut self, route: &EvpnRoute);
}

/// Drops every route (tests, fuzzing).
impl RouteSink for () {
    fn announce(&mut self, _: &EvpnRoute, _: &RouteAttrs<'_>) {}
    fn withdraw(&mut self, _: &EvpnRoute) {}
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    as4: bool,
}

/// A pass over the local routes: entries changed in `(since, target]`
/// from index `next` on; a full pass skips withdrawn entries.
#[derive(Clone, Copy, Debug)]
struct Walk {
    since: u64,
    target: u64,
    next: usize,
    full: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Adv {
    synced: u64,
    walk: Option<Walk>,
    full_pending: bool,
    eor_pending: bool,
}

/// What one UPDATE carries together (same attributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Withdraw,
    Imet { vni: u32 },
    Mac { vni: u32, seq: u32 },
}

/// One BGP peer. About 17 KiB (reassembly and transmit buffers inline).
#[derive(Debug)]
pub struct Session {
    cfg: Config,
    state: State,
    started: bool,
    rx: [u8; MAX_MESSAGE_LEN],
    rx_len: usize,
    tx: [u8; TX_CAP],
    tx_len: usize,
    events: Deque<Event, EVENT_CAP>,
    peer: Option<Peer>,
    hold_ms: u64,
    keepalive_ms: u64,
    hold_deadline: Option<Instant>,
    keepalive_at: Option<Instant>,
    retry_at: Option<Instant>,
    idle_until: Option<Instant>,
    failures: u32,
    established_at: Option<Instant>,
    adv: Adv,
    counters: Counters,
}

impl Session {
    /// A session in Idle; nothing happens before [`Session::start`].
    pub fn new(cfg: Config) -> Session {
        Session {
            cfg,
            state: State::Idle,
            started: false,
            rx: [0; MAX_MESSAGE_LEN],
            rx_len: 0,
            tx: [0; TX_CAP],
            tx_len: 0,
            events: Deque::new(),
            peer: None,
            hold_ms: 0,
            keepalive_ms: 0,
            hold_deadline: None,
            keepalive_at: None,
            retry_at: None,
            idle_until: None,
            failures: 0,
            established_at: None,
            adv: Adv::default(),
            counters: Counters::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The negotiated hold time in milliseconds (0 = none), once OPENs crossed.
    pub fn hold_time_ms(&self) -> u64 {
        self.hold_ms
    }

    /// Consecutive failures (the back-off exponent).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The next event for the caller.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the connection.
    pub fn transmit(&self) -> &[u8] {
        self.tx.get(..self.tx_len).unwrap_or(&[])
    }

    /// `n` bytes of [`Session::transmit`] were written.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.tx_len);
        self.tx.copy_within(n..self.tx_len, 0);
        self.tx_len -= n;
    }

    /// Until when the caller may sleep before calling [`Session::poll`].
    pub fn poll_at(&self) -> Option<Instant> {
        [self.hold_deadline, self.keepalive_at, self.retry_at, self.idle_until].into_iter().flatten().min()
    }

    /// How far the peer has heard our local routes: `Some(generation)` when
    /// Established and not in the middle of a pass. [`LocalRoutes::purge`]
    /// may drop withdrawn entries up to the smallest of these over all
    /// Established sessions, and only when none returns `None`.
    pub fn local_synced(&self) -> Option<u64> {
        (self.state == State::Established && self.adv.walk.is_none() && !self.adv.full_pending).then_some(self.adv.synced)
    }

    fn push(&mut self, e: Event) {
        if self.events.push_back(e).is_err() {
            self.counters.events_dropped += 1;
        }
    }

    /// Append one message built by `f`; counted and dropped if it does not fit.
    fn send(&mut self, f: impl FnOnce(&mut Writer<'_>) -> Result<(), Error>) -> bool {
        let Some(free) = self.tx.get_mut(self.tx_len..) else {
            self.counters.tx_dropped += 1;
            return false;
        };
        let mut w = Writer::new(free);
        match f(&mut w) {
            Ok(()) => {
                self.tx_len += w.len();
                self.counters.messages_out += 1;
                true
            }
            Err(_) => {
                self.counters.tx_dropped += 1;
                false
            }
        }
    }

    fn begin_connecting(&mut self, now: Instant) {
        if self.cfg.passive {
            self.state = State::Active;
            self.retry_at = None;
        } else {
            self.state = State::Connect;
            self.retry_at = Some(now.plus_millis(self.cfg.connect_retry_ms));
            self.push(Event::Connect);
        }
    }

    /// ManualStart: leave Idle (at once, or after the back-off if one runs).
    pub fn start(&mut self, now: Instant) {
        self.started = true;
        if self.state == State::Idle && self.idle_until.is_none() {
            self.begin_connecting(now);
        }
    }

    /// ManualStop: Cease/Administrative Shutdown if a connection is up, then
    /// Idle until the next [`Session::start`].
    pub fn stop(&mut self, now: Instant) {
        self.started = false;
        match self.state {
            State::OpenSent | State::OpenConfirm | State::Established => {
                self.notify(code::CEASE, cease::ADMIN_SHUTDOWN, &[]);
                self.go_idle(now, Some(DownReason::Stopped), false);
            }
            State::Connect | State::Active => self.go_idle(now, None, false),
            State::Idle => self.idle_until = None,
        }
    }

    /// A TCP connection to the peer is up (dialled by us or accepted): send
    /// OPEN. Ignored (returns false) unless in Connect or Active. Clears
    /// the buffers.
    pub fn connected(&mut self, now: Instant) -> bool {
        if !matches!(self.state, State::Connect | State::Active) {
            return false;
        }
        self.rx_len = 0;
        self.tx_len = 0;
        self.retry_at = None;
        let (asn, hold, id) = (self.cfg.local_as, self.cfg.hold_time, self.cfg.router_id);
        self.send(|w| encode_open(w, asn, hold, id));
        self.state = State::OpenSent;
        self.hold_deadline = Some(now.plus_millis(OPEN_HOLD_MS));
        true
    }

    /// The connection failed or was closed by the peer.
    pub fn connection_closed(&mut self, now: Instant) {
        match self.state {
            State::Connect => {
                // RFC 4271: Connect + TcpConnectionFails → Active, retry later.
                self.state = State::Active;
                self.retry_at = if self.cfg.passive { None } else { Some(now.plus_millis(self.cfg.connect_retry_ms)) };
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                self.go_idle(now, Some(DownReason::ConnectionClosed), true);
            }
            State::Active | State::Idle => {}
        }
    }

    /// A connection arrived from the peer while we may have one: accept it
    /// if we have none past Active, else refuse it (collision).
    pub fn incoming(&mut self) -> Incoming {
        match self.state {
            State::Idle if !self.started => self.reject(cease::CONNECTION_REJECTED),
            State::Idle | State::Connect | State::Active => {
                if self.state == State::Idle {
                    // Skip the remaining back-off: the peer is ready.
                    self.idle_until = None;
                    self.state = State::Active;
                }
                Incoming::Accept
            }
            State::OpenSent | State::OpenConfirm | State::Established => self.reject(cease::COLLISION),
        }
    }

    fn reject(&mut self, subcode: u8) -> Incoming {
        self.counters.collisions += 1;
        let mut b = [0u8; 21];
        let mut w = Writer::new(&mut b);
        // 21 bytes is exactly a NOTIFICATION without data.
        let _ = encode_notification(&mut w, code::CEASE, subcode, &[]);
        Incoming::Reject(b)
    }

    fn notify(&mut self, c: u8, s: u8, data: &[u8]) {
        self.counters.notifications_sent += 1;
        self.send(|w| encode_notification(w, c, s, data));
    }

    fn fail(&mut self, now: Instant, e: Error) {
        let (c, s) = e.notification();
        let mut data = [0u8; 8];
        let n = e.notification_data(&mut data);
        self.notify(c, s, data.get(..n).unwrap_or(&[]));
        self.go_idle(now, Some(DownReason::NotificationSent { code: c, subcode: s }), true);
    }

    fn fsm_error(&mut self, now: Instant) {
        let sub = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            _ => 3,
        };
        self.notify(code::FSM, sub, &[]);
        self.go_idle(now, Some(DownReason::NotificationSent { code: code::FSM, subcode: sub }), true);
    }

    fn go_idle(&mut self, now: Instant, reason: Option<DownReason>, failure: bool) {
        let had_connection = matches!(self.state, State::OpenSent | State::OpenConfirm | State::Established);
        self.state = State::Idle;
        self.rx_len = 0;
        self.peer = None;
        self.hold_ms = 0;
        self.hold_deadline = None;
        self.keepalive_at = None;
        self.retry_at = None;
        self.established_at = None;
        self.adv = Adv::default();
        if failure {
            self.failures = self.failures.saturating_add(1);
        }
        self.idle_until = if self.started && failure {
            let shift = self.failures.saturating_sub(1).min(16);
            Some(now.plus_millis(self.cfg.idle_hold_ms.saturating_mul(1 << shift).min(self.cfg.idle_hold_max_ms)))
        } else {
            None
        };
        if had_connection {
            if let Some(r) = reason {
                self.push(Event::Down(r));
            }
        }
        self.push(Event::Disconnect);
        if self.started && self.idle_until.is_none() {
            self.begin_connecting(now);
        }
    }

    /// Timers: hold, keepalive, ConnectRetry, IdleHold.
    pub fn poll(&mut self, now: Instant) {
        if self.hold_deadline.is_some_and(|d| now >= d) {
            self.fail_hold(now);
            return;
        }
        if let Some(k) = self.keepalive_at {
            if now >= k && matches!(self.state, State::OpenConfirm | State::Established) {
                self.send(encode_keepalive);
                // Catch up without a burst if the caller slept long.
                self.keepalive_at = Some(k.plus_millis(self.keepalive_ms).max(now.plus_millis(1)));
            }
        }
        if self.retry_at.is_some_and(|r| now >= r) {
            match self.state {
                State::Connect | State::Active if !self.cfg.passive => {
                    self.state = State::Connect;
                    self.retry_at = Some(now.plus_millis(self.cfg.connect_retry_ms));
                    self.push(Event::Connect);
                }
                _ => self.retry_at = None,
            }
        }
        if self.state == State::Idle && self.idle_until.is_some_and(|t| now >= t) {
            self.idle_until = None;
            if self.started {
                self.begin_connecting(now);
            }
        }
        // A session that stayed up as long as the longest back-off is healthy.
        if self.established_at.is_some_and(|t| now.millis_since(t) >= self.cfg.idle_hold_max_ms) {
            self.failures = 0;
            self.established_at = None;
        }
    }

    fn fail_hold(&mut self, now: Instant) {
        self.notify(code::HOLD_TIMER_EXPIRED, 0, &[]);
        self.go_idle(now, Some(DownReason::NotificationSent { code: code::HOLD_TIMER_EXPIRED, subcode: 0 }), true);
    }

    /// Received bytes, in order. Whole messages are processed at once;
    /// received routes go to `sink`. Bytes arriving while no connection is
    /// expected are counted and dropped.
    pub fn on_bytes(&mut self, now: Instant, mut data: &[u8], sink: &mut impl RouteSink) {
        while !data.is_empty() {
            if !matches!(self.state, State::OpenSent | State::OpenConfirm | State::Established) {
                self.counters.bytes_ignored += data.len() as u64;
                return;
            }
            if self.rx_len == 0 {
                // Fast path: decode in place while whole messages are there.
                match decode_header(data) {
                    Err(e) => return self.fail(now, e),
                    Ok(Some(h)) if data.len() >= h.len => {
                        let (m, rest) = data.split_at(h.len);
                        data = rest;
                        self.on_message(now, h.ty, m.get(HEADER_LEN..).unwrap_or(&[]), sink);
                        continue;
                    }
                    Ok(_) => {}
                }
            }
            // Reassemble: first the header, then the announced length.
            let need = if self.rx_len < HEADER_LEN {
                HEADER_LEN
            } else {
                match decode_header(self.rx.get(..self.rx_len).unwrap_or(&[])) {
                    Ok(Some(h)) => h.len,
                    Ok(None) => HEADER_LEN,
                    Err(e) => return self.fail(now, e),
                }
            };
            let take = need.saturating_sub(self.rx_len).min(data.len());
            let (head, rest) = data.split_at(take);
            if let Some(dst) = self.rx.get_mut(self.rx_len..self.rx_len + take) {
                dst.copy_from_slice(head);
            }
            self.rx_len += take;
            data = rest;
            if self.rx_len < HEADER_LEN {
                continue;
            }
            match decode_header(self.rx.get(..self.rx_len).unwrap_or(&[])) {
                Err(e) => return self.fail(now, e),
                Ok(Some(h)) if self.rx_len >= h.len => {
                    let buf = self.rx;
                    self.rx_len = 0;
                    self.on_message(now, h.ty, buf.get(HEADER_LEN..h.len).unwrap_or(&[]), sink);
                }
                Ok(_) => {}
            }
        }
    }

    fn on_message(&mut self, now: Instant, ty: u8, body: &[u8], sink: &mut impl RouteSink) {
        self.counters.messages_in += 1;
        if ty == msg::NOTIFICATION {
            self.counters.notifications_received += 1;
            let (c, s) = decode_notification(body).map_or((0, 0), |n| (n.code, n.subcode));
            return self.go_idle(now, Some(DownReason::NotificationReceived { code: c, subcode: s }), true);
        }
        if matches!(self.state, State::OpenConfirm | State::Established) && self.hold_ms > 0 {
            self.hold_deadline = Some(now.plus_millis(self.hold_ms));
        }
        match (self.state, ty) {
            (State::OpenSent, msg::OPEN) => self.on_open(now, body),
            (State::OpenConfirm, msg::KEEPALIVE) => {
                self.counters.keepalives_in += 1;
                self.state = State::Established;
                self.counters.established += 1;
                self.established_at = Some(now);
                self.adv = Adv { synced: 0, walk: None, full_pending: true, eor_pending: true };
                self.push(Event::Established);
            }
            (State::Established, msg::KEEPALIVE) => self.counters.keepalives_in += 1,
            (State::Established, msg::UPDATE) => {
                if let Err(e) = self.on_update(body, sink) {
                    self.fail(now, e);
                }
            }
            (State::Established, msg::ROUTE_REFRESH) => match decode_route_refresh(body) {
                Ok((wire::afi::L2VPN, 0, wire::safi::EVPN)) => {
                    self.counters.route_refresh_in += 1;
                    self.adv.full_pending = true;
                    self.adv.walk = None;
                }
                // Other families, or enhanced route refresh BoRR/EoRR markers.
                Ok(_) => self.counters.route_refresh_in += 1,
                Err(e) => self.fail(now, e),
            },
            _ => self.fsm_error(now),
        }
    }

    fn on_open(&mut self, now: Instant, body: &[u8]) {
        let open = match decode_open(body) {
            Ok(o) => o,
            Err(e) => return self.fail(now, e),
        };
        let check = if open.peer_as() != self.cfg.peer_as {
            Err(Error::BadPeerAs { asn: open.peer_as() })
        } else if open.identifier.is_unspecified() || (self.cfg.is_ibgp() && open.identifier == self.cfg.router_id) {
            Err(Error::BadIdentifier { id: open.identifier })
        } else if open.hold_time == 1 || open.hold_time == 2 {
            Err(Error::BadHoldTime { hold: open.hold_time })
        } else if !open.caps.evpn {
            Err(Error::MissingCapability { code: wire::cap::MULTIPROTOCOL })
        } else {
            Ok(())
        };
        if let Err(e) = check {
            return self.fail(now, e);
        }
        let hold = open.hold_time.min(self.cfg.hold_time) as u64;
        self.hold_ms = hold * 1000;
        self.keepalive_ms = self.hold_ms / 3;
        self.peer = Some(Peer { as4: open.caps.as4.is_some() });
        self.send(encode_keepalive);
        self.state = State::OpenConfirm;
        if self.hold_ms > 0 {
            self.hold_deadline = Some(now.plus_millis(self.hold_ms));
            self.keepalive_at = Some(now.plus_millis(self.keepalive_ms));
        } else {
            self.hold_deadline = None;
            self.keepalive_at = None;
        }
    }

    fn on_update(&mut self, body: &[u8], sink: &mut impl RouteSink) -> Result<(), Error> {
        let as4 = self.peer.is_some_and(|p| p.as4);
        let u = decode_update(body, as4)?;
        let c = &mut self.counters;
        c.updates_in += 1;
        c.attributes_discarded += u.discarded as u64;
        c.unknown_attributes += u.attrs.unknown as u64;
        if !u.withdrawn_ipv4.is_empty() || !u.nlri_ipv4.is_empty() {
            c.other_family += 1;
        }
        if let Some(un) = u.attrs.mp_unreach {
            if un.is_evpn() {
                for r in un.routes() {
                    match r {
                        Ok(r) => {
                            c.routes_withdrawn += 1;
                            sink.withdraw(&r);
                        }
                        Err(_) => c.withdraw_nlri_errors += 1,
                    }
                }
            } else {
                c.other_family += 1;
            }
        }
        match u.attrs.mp_reach {
            Some(mp) if mp.is_evpn() => {
                let nlri_ok = mp.routes().all(|r| r.is_ok());
                let looped =
                    u.attrs.as_path.is_some_and(|p| p.contains(self.cfg.local_as)) || u.attrs.originator_id == Some(self.cfg.router_id);
                let next_hop = match mp.next_hop {
                    NextHop::V4(a) => Some(a),
                    NextHop::V6(_) => None,
                };
                match next_hop {
                    Some(next_hop) if nlri_ok && !looped && u.treat_as_withdraw.is_none() => {
                        let attrs = RouteAttrs {
                            next_hop,
                            local_pref: u.attrs.local_pref.unwrap_or(100),
                            ext_communities: u.attrs.ext_communities,
                            pmsi: u.attrs.pmsi,
                        };
                        for r in mp.routes().flatten() {
                            c.routes_announced += 1;
                            sink.announce(&r, &attrs);
                        }
                    }
                    _ => {
                        if !nlri_ok || u.treat_as_withdraw.is_some() {
                            c.treat_as_withdraw += 1;
                        } else if looped {
                            c.looped += 1;
                        } else {
                            c.ipv6_next_hop += 1;
                        }
                        for r in mp.routes().flatten() {
                            c.routes_withdrawn += 1;
                            sink.withdraw(&r);
                        }
                    }
                }
            }
            Some(_) => c.other_family += 1,
            None if u.treat_as_withdraw.is_some() => c.treat_as_withdraw += 1,
            None => {}
        }
        if u.is_evpn_end_of_rib() {
            self.push(Event::EndOfRib);
        }
        Ok(())
    }

    /// Send what changed in `local` since the peer last heard (everything
    /// after Established or a ROUTE-REFRESH), as far as the transmit buffer
    /// allows; call again after draining it. Then End-of-RIB once.
    pub fn advertise(&mut self, local: &LocalRoutes) {
        if self.state != State::Established {
            return;
        }
        while TX_CAP - self.tx_len >= MAX_MESSAGE_LEN {
            let walk = match self.adv.walk {
                Some(w) => w,
                None if self.adv.full_pending => Walk { since: 0, target: local.generation(), next: 0, full: true },
                None if self.adv.synced < local.generation() => {
                    Walk { since: self.adv.synced, target: local.generation(), next: 0, full: false }
                }
                None => {
                    if self.adv.eor_pending {
                        self.adv.eor_pending = false;
                        self.send(|w| encode_evpn_withdraw(w, &[]));
                    }
                    return;
                }
            };
            self.adv.full_pending = false;
            match self.advertise_one(local, walk) {
                Some(next) => self.adv.walk = Some(Walk { next, ..walk }),
                None => {
                    self.adv.walk = None;
                    self.adv.synced = walk.target;
                }
            }
        }
    }

    /// Encode one UPDATE of the walk; the index to continue from, or `None`
    /// when the walk is complete.
    fn advertise_one(&mut self, local: &LocalRoutes, walk: Walk) -> Option<usize> {
        let eligible = |e: &LocalEntry| e.changed > walk.since && e.changed <= walk.target && !(walk.full && e.withdrawn);
        let group_of = |k: &LocalKey, e: &LocalEntry| match (*k, e.withdrawn) {
            (_, true) => Group::Withdraw,
            (LocalKey::Imet { vni }, false) => Group::Imet { vni },
            (LocalKey::Mac { vni, .. }, false) => Group::Mac { vni, seq: e.seq },
        };
        let mut i = walk.next;
        let group = loop {
            let (k, e) = local.entry_at(i)?;
            if eligible(e) {
                break group_of(k, e);
            }
            i += 1;
        };
        let mut ext = [ExtCommunity::Other([0; 8]); 3];
        let mut n_ext = 0;
        let mut pmsi = None;
        let budget = match group {
            Group::Withdraw => MAX_MESSAGE_LEN - WITHDRAW_OVERHEAD,
            Group::Imet { vni } | Group::Mac { vni, .. } => {
                ext[0] = ExtCommunity::RouteTarget(RouteTarget::auto(local.asn(), vni));
                ext[1] = ExtCommunity::Encapsulation { tunnel_type: TUNNEL_VXLAN };
                n_ext = 2;
                if let Group::Mac { seq: seq @ 1.., .. } = group {
                    ext[2] = ExtCommunity::MacMobility { sticky: false, seq };
                    n_ext = 3;
                }
                if let Group::Imet { vni } = group {
                    pmsi = Some(PmsiTunnel::ingress_replication(vni, local.vtep()));
                }
                let attrs = OutAttrs { next_hop: local.vtep(), local_pref: 100, ext_communities: ext.get(..n_ext).unwrap_or(&[]), pmsi };
                MAX_MESSAGE_LEN - crate::update::announce_overhead(&attrs)
            }
        };
        let mut nlri = [0u8; MAX_MESSAGE_LEN];
        let mut nw = Writer::new(nlri.get_mut(..budget).unwrap_or(&mut []));
        let mut count = 0usize;
        while let Some((k, e)) = local.entry_at(i) {
            if eligible(e) {
                if group_of(k, e) != group || (matches!(group, Group::Imet { .. }) && count > 0) {
                    break;
                }
                let mark = nw.len();
                if local.route_of(k, e).encode(&mut nw).is_err() {
                    // Full: this entry starts the next message.
                    nw.truncate(mark);
                    break;
                }
                count += 1;
            }
            i += 1;
        }
        let len = nw.len();
        let nlri = nlri.get(..len).unwrap_or(&[]);
        if count == 0 {
            // Cannot happen (one route always fits); skip the entry rather than loop.
            return Some(i + 1);
        }
        let sent = match group {
            Group::Withdraw => self.send(|w| encode_evpn_withdraw(w, nlri)),
            _ => {
                let attrs = OutAttrs { next_hop: local.vtep(), local_pref: 100, ext_communities: ext.get(..n_ext).unwrap_or(&[]), pmsi };
                self.send(|w| encode_evpn_announce(w, &attrs, nlri))
            }
        };
        let _ = sent;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evpn::Mac;
    use crate::rib::Rib;
    use crate::PeerId;
    use std::boxed::Box;
    use std::vec::Vec;

    const ASN: u32 = 65000;
    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, last)
    }

    /// Move bytes both ways until nothing is left.
    fn pump(now: Instant, a: &mut Session, b: &mut Session, ra: &mut Rib, rb: &mut Rib) {
        for _ in 0..64 {
            let ta: Vec<u8> = a.transmit().to_vec();
            a.consume(ta.len());
            let tb: Vec<u8> = b.transmit().to_vec();
            b.consume(tb.len());
            if ta.is_empty() && tb.is_empty() {
                return;
            }
            b.on_bytes(now, &ta, &mut rb.sink(PeerId(0)));
            a.on_bytes(now, &tb, &mut ra.sink(PeerId(0)));
        }
        panic!("the sessions kept talking");
    }

    fn pair() -> (Box<Session>, Box<Session>) {
        let mut a = Box::new(Session::new(Config::ibgp(ASN, ip(1))));
        let mut bc = Config::ibgp(ASN, ip(2));
        bc.hold_time = 9;
        bc.passive = true;
        let mut b = Box::new(Session::new(bc));
        a.start(Instant::ZERO);
        b.start(Instant::ZERO);
        assert_eq!(a.next_event(), Some(Event::Connect));
        assert_eq!(a.state(), State::Connect);
        assert_eq!(b.state(), State::Active);
        assert_eq!(b.incoming(), Incoming::Accept);
        assert!(a.connected(Instant::ZERO));
        assert!(b.connected(Instant::ZERO));
        (a, b)
    }

    fn events(s: &mut Session) -> Vec<Event> {
        core::iter::from_fn(|| s.next_event()).collect()
    }

    #[test]
    fn two_sessions_establish_and_exchange_routes() {
        let (mut a, mut b) = pair();
        let (mut ra, mut rb) = (Box::new(Rib::new(ASN)), Box::new(Rib::new(ASN)));
        let now = Instant::from_millis(5);
        pump(now, &mut a, &mut b, &mut ra, &mut rb);
        assert_eq!(a.state(), State::Established);
        assert_eq!(b.state(), State::Established);
        assert_eq!(a.hold_time_ms(), 9000);
        assert_eq!(events(&mut a), [Event::Established]);
        assert_eq!(events(&mut b), [Event::Established]);

        let mut la = Box::new(LocalRoutes::new(ASN, ip(1), ip(1)));
        la.add_vni(100).unwrap();
        la.add_mac(100, Mac([2, 0, 0, 0, 1, 1]), 0).unwrap();
        la.add_mac(100, Mac([2, 0, 0, 0, 1, 2]), 3).unwrap();
        let lb = Box::new(LocalRoutes::new(ASN, ip(2), ip(2)));
        a.advertise(&la);
        b.advertise(&lb);
        pump(now, &mut a, &mut b, &mut ra, &mut rb);
        assert_eq!(rb.flood_list(100).collect::<Vec<_>>(), [ip(1)]);
        assert_eq!(rb.remote_macs(100).count(), 2);
        let m = rb.remote_mac(100, Mac([2, 0, 0, 0, 1, 2])).unwrap();
        assert_eq!((m.vtep, m.seq), (ip(1), 3));
        assert_eq!(events(&mut b), [Event::EndOfRib]);
        assert_eq!(events(&mut a), [Event::EndOfRib]);
        assert_eq!(a.local_synced(), Some(la.generation()));

        // Withdraw a MAC, remove the VNI: incremental passes.
        la.remove_mac(100, Mac([2, 0, 0, 0, 1, 1]));
        a.advertise(&la);
        pump(now, &mut a, &mut b, &mut ra, &mut rb);
        assert_eq!(rb.remote_macs(100).count(), 1);
        la.remove_vni(100);
        a.advertise(&la);
        pump(now, &mut a, &mut b, &mut ra, &mut rb);
        assert_eq!(rb.flood_list(100).count(), 0);
        assert_eq!(rb.remote_macs(100).count(), 0);
        la.purge(a.local_synced().unwrap());
        assert_eq!(la.len(), 0);
    }

    #[test]
    fn keepalives_and_hold_timer() {
        let (mut a, mut b) = pair();
        let (mut ra, mut rb) = (Box::new(Rib::new(ASN)), Box::new(Rib::new(ASN)));
        pump(Instant::ZERO, &mut a, &mut b, &mut ra, &mut rb);
        events(&mut a);
        // Keepalives every 3 s keep both up for a minute.
        for t in (0..60_000).step_by(500) {
            let now = Instant::from_millis(t);
            a.poll(now);
            b.poll(now);
            pump(now, &mut a, &mut b, &mut ra, &mut rb);
        }
        assert_eq!(a.state(), State::Established);
        assert!(a.counters().keepalives_in >= 19);
        // b goes silent: a's hold timer (9 s) expires.
        let t0 = 60_000;
        let mut down_at = None;
        for t in (t0..t0 + 20_000).step_by(500) {
            a.poll(Instant::from_millis(t));
            if a.state() != State::Established {
                down_at = Some(t);
                break;
            }
        }
        let down_at = down_at.expect("hold timer never expired");
        assert!(down_at - t0 <= 9_500, "went down after {} ms", down_at - t0);
        assert_eq!(events(&mut a), [Event::Down(DownReason::NotificationSent { code: 4, subcode: 0 }), Event::Disconnect]);
        let sent = a.transmit().to_vec();
        assert_eq!(sent.get(sent.len() - 3..), Some(&[3u8, 4, 0][..]), "the last message is NOTIFICATION 4/0");
        // Back-off: Idle for 1 s, then a new Connect; the next failure waits 2 s.
        assert_eq!(a.state(), State::Idle);
        a.poll(Instant::from_millis(down_at + 999));
        assert_eq!(a.state(), State::Idle);
        a.poll(Instant::from_millis(down_at + 1000));
        assert_eq!((a.state(), a.next_event()), (State::Connect, Some(Event::Connect)));
        a.connected(Instant::from_millis(down_at + 1000));
        a.connection_closed(Instant::from_millis(down_at + 1001));
        assert_eq!(a.state(), State::Idle);
        assert_eq!(a.poll_at(), Some(Instant::from_millis(down_at + 1001 + 2000)));
    }

    #[test]
    fn connect_retry_and_passive() {
        let mut a = Session::new(Config::ibgp(ASN, ip(1)));
        a.start(Instant::ZERO);
        assert_eq!(a.next_event(), Some(Event::Connect));
        a.connection_closed(Instant::from_millis(10));
        assert_eq!(a.state(), State::Active);
        a.poll(Instant::from_millis(10_009));
        assert_eq!(a.next_event(), None);
        a.poll(Instant::from_millis(10_010));
        assert_eq!((a.state(), a.next_event()), (State::Connect, Some(Event::Connect)));
        // Still no answer: ConnectRetry asks again.
        a.poll(Instant::from_millis(20_010));
        assert_eq!(a.next_event(), Some(Event::Connect));
        a.stop(Instant::from_millis(20_011));
        assert_eq!(a.state(), State::Idle);
        assert_eq!(a.poll_at(), None);
    }

    #[test]
    fn collision_second_connection_is_refused() {
        let (mut a, mut b) = pair();
        let (mut ra, mut rb) = (Box::new(Rib::new(ASN)), Box::new(Rib::new(ASN)));
        pump(Instant::ZERO, &mut a, &mut b, &mut ra, &mut rb);
        let Incoming::Reject(bytes) = a.incoming() else { panic!("accepted a second connection") };
        assert_eq!(&bytes[16..], &[0, 21, 3, 6, 7]);
        assert_eq!(a.state(), State::Established);
        assert_eq!(a.counters().collisions, 1);
    }

    fn open_from(id: Ipv4Addr, asn: u32, hold: u16) -> Vec<u8> {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        encode_open(&mut w, asn, hold, id).unwrap();
        let n = w.len();
        buf[..n].to_vec()
    }

    fn opened() -> Session {
        let mut s = Session::new(Config::ibgp(ASN, ip(1)));
        s.start(Instant::ZERO);
        s.connected(Instant::ZERO);
        let n = s.transmit().len();
        s.consume(n);
        events(&mut s);
        s
    }

    fn notification_of(s: &Session) -> (u8, u8) {
        let t = s.transmit();
        assert_eq!(t.get(18), Some(&3), "no NOTIFICATION in {t:?}");
        (t[19], t[20])
    }

    #[test]
    fn open_validation() {
        let cases: [(Vec<u8>, (u8, u8)); 4] = [
            (open_from(ip(2), 65001, 90), (2, 2)),
            (open_from(ip(1), ASN, 90), (2, 3)),
            (open_from(Ipv4Addr::UNSPECIFIED, ASN, 90), (2, 3)),
            (open_from(ip(2), ASN, 2), (2, 6)),
        ];
        for (open, want) in cases {
            let mut s = opened();
            s.on_bytes(Instant::ZERO, &open, &mut ());
            assert_eq!(notification_of(&s), want);
            assert_eq!(s.state(), State::Idle);
            assert_eq!(events(&mut s), [Event::Down(DownReason::NotificationSent { code: want.0, subcode: want.1 }), Event::Disconnect]);
        }
        // Without the EVPN capability: 2/7 with the capability as data.
        let mut open = open_from(ip(2), ASN, 90);
        open[34] = 1; // AFI L2VPN (25) → IPv4 (1)
        let mut s = opened();
        s.on_bytes(Instant::ZERO, &open, &mut ());
        assert_eq!(notification_of(&s), (2, 7));
        assert_eq!(&s.transmit()[21..], &[1, 4, 0, 25, 0, 70]);
        // Hold time 0: no keepalives, no hold timer.
        let mut s = opened();
        s.on_bytes(Instant::ZERO, &open_from(ip(2), ASN, 0), &mut ());
        assert_eq!(s.state(), State::OpenConfirm);
        assert_eq!(s.poll_at(), None);
    }

    #[test]
    fn byte_by_byte_reassembly_and_fsm_errors() {
        let mut s = opened();
        let open = open_from(ip(2), ASN, 90);
        for b in &open {
            s.on_bytes(Instant::ZERO, core::slice::from_ref(b), &mut ());
        }
        assert_eq!(s.state(), State::OpenConfirm);
        // An UPDATE in OpenConfirm is an FSM error 5/2.
        let mut upd = [0u8; 64];
        let mut w = Writer::new(&mut upd);
        encode_evpn_withdraw(&mut w, &[]).unwrap();
        let n = w.len();
        s.consume(s.transmit().len());
        s.on_bytes(Instant::ZERO, &upd[..n], &mut ());
        assert_eq!(notification_of(&s), (5, 2));
        // A bad marker in Established is 1/1.
        let (mut a, mut b) = pair();
        let (mut ra, mut rb) = (Box::new(Rib::new(ASN)), Box::new(Rib::new(ASN)));
        pump(Instant::ZERO, &mut a, &mut b, &mut ra, &mut rb);
        let mut junk = [0xffu8; 19];
        junk[5] = 0;
        a.on_bytes(Instant::ZERO, &junk, &mut ());
        assert_eq!(notification_of(&a), (1, 1));
        // A NOTIFICATION from the peer: down, no answer.
        pump(Instant::ZERO, &mut a, &mut b, &mut ra, &mut rb);
        assert_eq!(b.state(), State::Idle);
        assert!(events(&mut b).contains(&Event::Down(DownReason::NotificationReceived { code: 1, subcode: 1 })));
    }
}

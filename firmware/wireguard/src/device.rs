//! The WireGuard device: our static key, a fixed table of peers, their
//! sessions, the receiver-index table and cryptokey routing, driven by the
//! caller.
//!
//! Contract:
//! - Sans-I/O. [`Device::encapsulate`] / [`Device::decapsulate`] (and their
//!   in-place and batch forms) turn one packet into one [`Action`]: send a
//!   datagram to an endpoint, deliver an inner packet from a peer, or nothing.
//!   [`Device::poll`] runs the timers; call it after every batch (and at
//!   [`Device::poll_at`]) until it returns [`Action::None`]. Protocol work
//!   that a data packet triggers but cannot return at the same time (a rekey
//!   initiation) comes out of the next `poll`.
//! - `now` and the random source are arguments; the device never reads a
//!   clock. Wall-clock time is only needed for the TAI64N timestamp in
//!   initiations: give it with [`Device::set_wall_clock`], or peers that
//!   remember our last timestamp will refuse initiations after a reboot
//!   until they restart.
//! - Errors are values and every one increments the matching named counter
//!   in [`Device::counters`]; nothing here panics on input. No allocation.
//! - Inner packets that arrive while a peer has no session are dropped
//!   (counter `no_session`) and a handshake starts; there is no queue,
//!   which keeps memory fixed. The polled loop's retransmitting users (TCP,
//!   ping) cover the first lost packet.
//! - Capacity: `PEERS` peers (refused with `PeersFull` beyond), `ROUTES`
//!   allowed-IP prefixes per address family (`RoutesFull`). Lookup of a
//!   handshake's sender by public key is a linear scan over `PEERS`, which is
//!   noise next to the Diffie-Hellman operations of the same message.

use core::net::SocketAddr;
use core::time::Duration;

use rand_core::{CryptoRng, RngCore};

use crate::allowed_ips::AllowedIps;
use crate::cookie::CookieChecker;
use crate::error::{ConfigError, Counters, Error};
use crate::handshake::{self, Identity, PeerKeys, PendingInitiation};
use crate::index::{IndexEntry, IndexKind, IndexTable};
use crate::key::{PresharedKey, PublicKey, SecretKey};
use crate::session::Session;
use crate::time::Instant;
use crate::timers::{
    TimerEvent, Timers, COOKIE_REFRESH_TIME, INITIATION_MIN_INTERVAL, KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, REKEY_ON_RECEIVE_AGE, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
};
use crate::wire::{self, CookieReply, Initiation, Response, Transport, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD};
use crate::PeerId;

/// Bytes in front of an inner packet in an in-place buffer.
pub const HEADROOM: usize = TRANSPORT_HEADER_LEN;

/// What the caller must do after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send or deliver (a keepalive arrived, a cookie was stored,
    /// no timer was due).
    None,
    /// Send `buf[..len]` as one UDP datagram to `to`.
    Send { to: SocketAddr, len: usize },
    /// Deliver the inner packet `buf[offset..offset + len]`, which came from
    /// `peer` and whose source address `peer` is allowed to use.
    Deliver { peer: PeerId, offset: usize, len: usize },
}

/// Device-wide settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The tunnel MTU: inner packets are padded to a multiple of 16 bytes but
    /// never beyond this.
    pub mtu: u16,
    /// Handshake messages per second above which we answer with cookies.
    pub handshake_load_limit: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { mtu: 1420, handshake_load_limit: 128 }
    }
}

/// How to reach and trust one peer.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// Where to send until the peer is heard from (then it roams).
    pub endpoint: Option<SocketAddr>,
    /// Seconds between keepalives when idle (0 or `None`: off).
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    pub fn new(public_key: PublicKey) -> PeerConfig {
        PeerConfig { public_key, preshared_key: None, endpoint: None, persistent_keepalive: None }
    }
}

/// A read-only view of one peer for status displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed.
    pub last_handshake: Option<Instant>,
    /// Datagram bytes received / sent on sessions (headers included).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// A session that can carry data right now exists.
    pub has_session: bool,
}

/// The device's handshake load, for status displays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Handshakes without a valid mac2 are answered with cookie replies
    /// right now: over the limit within the last second, or forced with
    /// [`Device::set_under_load`].
    pub under_load: bool,
    /// The last handshake message that arrived over
    /// [`Config::handshake_load_limit`] (measured; forcing is not a crossing).
    pub last_over_limit: Option<Instant>,
}

/// One slot of an encapsulation batch: the inner packet sits at
/// `buf[HEADROOM..HEADROOM + inner_len]`; the result is written back.
pub struct EncapsulateJob<'a> {
    pub buf: &'a mut [u8],
    pub inner_len: usize,
    pub result: Result<Action, Error>,
}

/// One slot of a decapsulation batch: `buf` is exactly the datagram.
pub struct DecapsulateJob<'a> {
    pub buf: &'a mut [u8],
    pub from: SocketAddr,
    pub result: Result<Action, Error>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Previous,
    Current,
    Next,
}

struct Peer {
    keys: PeerKeys,
    endpoint: Option<SocketAddr>,
    pending: Option<PendingInitiation>,
    previous: Option<Session>,
    current: Option<Session>,
    next: Option<Session>,
    timers: Timers,
    /// Highest TAI64N accepted from this peer.
    last_timestamp: [u8; 12],
    last_initiation_consumed: Option<Instant>,
    last_sent_handshake: Option<Instant>,
    /// Cookie from the peer's last cookie reply, and when it came.
    cookie: Option<([u8; 16], Instant)>,
    /// mac1 of the last handshake message we sent, the AAD of a cookie reply.
    last_mac1: Option<[u8; 16]>,
    /// A handshake should start at the next `poll` (rekey rules on the data path).
    want_handshake: bool,
    last_handshake: Option<Instant>,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl Peer {
    fn session_mut(&mut self, slot: Slot) -> Option<&mut Session> {
        match slot {
            Slot::Previous => self.previous.as_mut(),
            Slot::Current => self.current.as_mut(),
            Slot::Next => self.next.as_mut(),
        }
    }

    fn find_session(&self, index: u32) -> Option<Slot> {
        if self.current.as_ref().is_some_and(|s| s.local_index == index) {
            Some(Slot::Current)
        } else if self.next.as_ref().is_some_and(|s| s.local_index == index) {
            Some(Slot::Next)
        } else if self.previous.as_ref().is_some_and(|s| s.local_index == index) {
            Some(Slot::Previous)
        } else {
            None
        }
    }

    fn fresh_cookie(&self, now: Instant) -> Option<[u8; 16]> {
        match self.cookie {
            Some((c, at)) if !at.elapsed_at_least(now, COOKIE_REFRESH_TIME) => Some(c),
            _ => None,
        }
    }
}

/// Wipe a session's keys in place, drop it and free its index.
fn retire<const P: usize>(slot: &mut Option<Session>, indices: &mut IndexTable<P>) {
    if let Some(s) = slot.as_mut() {
        indices.remove(s.local_index);
        s.wipe();
    }
    *slot = None;
}

/// Move the session in `from` into the empty (retired) slot `to`. A swap
/// rather than `take`: the bytes left behind in `from` are the wiped ones of
/// the retired slot, not a stale copy of live keys.
fn rotate(to: &mut Option<Session>, from: &mut Option<Session>) {
    debug_assert!(to.is_none());
    core::mem::swap(to, from);
}

fn jitter<R: RngCore>(rng: &mut R) -> Duration {
    let max = REKEY_TIMEOUT_JITTER_MAX.as_micros() as u32;
    Duration::from_micros(u64::from(rng.next_u32() % max))
}

/// An inner packet's address, by family.
enum InnerAddr {
    V4(u32),
    V6(u128),
}

/// The destination of an inner packet to send (all the send path needs).
#[inline]
fn inner_destination(p: &[u8]) -> Option<InnerAddr> {
    match p.first()? >> 4 {
        4 => {
            let d: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            Some(InnerAddr::V4(u32::from_be_bytes(d)))
        }
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(p.get(24..40)?);
            Some(InnerAddr::V6(u128::from_be_bytes(a)))
        }
        _ => None,
    }
}

/// The source of a received inner packet and the length its header declares.
#[inline]
fn inner_source(p: &[u8]) -> Option<(InnerAddr, usize)> {
    match p.first()? >> 4 {
        4 => {
            let h: &[u8; 20] = p.get(..20)?.try_into().ok()?;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let a = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
            (total >= 20).then_some((InnerAddr::V4(a), total))
        }
        6 => {
            let h: &[u8; 40] = p.get(..40)?.try_into().ok()?;
            let total = usize::from(u16::from_be_bytes([h[4], h[5]])) + 40;
            let mut a = [0u8; 16];
            a.copy_from_slice(&h[8..24]);
            Some((InnerAddr::V6(u128::from_be_bytes(a)), total))
        }
        _ => None,
    }
}

/// The WireGuard device with room for `PEERS` peers and `ROUTES` allowed-IP
/// prefixes per address family.
pub struct Device<const PEERS: usize, const ROUTES: usize> {
    identity: Identity,
    config: Config,
    peers: [Option<Peer>; PEERS],
    indices: IndexTable<PEERS>,
    routes: AllowedIps<ROUTES>,
    cookies: CookieChecker,
    forced_load: Option<bool>,
    counters: Counters,
    /// (instant, wall time since the Unix epoch at that instant).
    wall_clock: (Instant, Duration),
    poll_cursor: usize,
}

impl<const PEERS: usize, const ROUTES: usize> Device<PEERS, ROUTES> {
    pub fn new(secret: SecretKey, config: Config) -> Self {
        let identity = Identity::new(secret);
        let cookies = CookieChecker::new(identity.macs.mac1, identity.macs.cookie);
        Device {
            identity,
            config,
            peers: core::array::from_fn(|_| None),
            indices: IndexTable::default(),
            routes: AllowedIps::new(),
            cookies,
            forced_load: None,
            counters: Counters::default(),
            wall_clock: (Instant::ZERO, Duration::ZERO),
            poll_cursor: 0,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.identity.public
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn allowed_ips(&self) -> &AllowedIps<ROUTES> {
        &self.routes
    }

    /// Tell the device the wall-clock time (since the Unix epoch) at `now`.
    pub fn set_wall_clock(&mut self, now: Instant, since_unix_epoch: Duration) {
        self.wall_clock = (now, since_unix_epoch);
    }

    /// Override the load estimate: `Some(true)` demands cookies from every
    /// handshake, `Some(false)` never, `None` measures the handshake rate.
    pub fn set_under_load(&mut self, forced: Option<bool>) {
        self.forced_load = forced;
    }

    /// The handshake load as [`Device::decapsulate`] would judge it at `now`.
    pub fn load(&self, now: Instant) -> Load {
        Load {
            under_load: self.forced_load.unwrap_or_else(|| self.cookies.measured_load(now)),
            last_over_limit: self.cookies.last_over_limit(),
        }
    }

    /// Take over the counters and the load record of the device this one
    /// replaces (an apply that changed the tunnel builds a new device): an
    /// operator's counters and "last under load" must not reset because a
    /// peer was added. Both devices must be driven by the same clock. Keys,
    /// sessions, cookies and the forcing set with `set_under_load` are not
    /// taken: they belong to the new configuration.
    pub fn carry_counters_from(&mut self, old: &Self) {
        self.counters = old.counters.clone();
        self.cookies.carry_load_from(&old.cookies);
    }

    fn tai64n(&self, now: Instant) -> [u8; 12] {
        let (at, wall) = self.wall_clock;
        let t = wall.saturating_add(now.saturating_since(at));
        handshake::tai64n(t)
    }

    // ----- configuration -------------------------------------------------

    pub fn add_peer(&mut self, cfg: PeerConfig) -> Result<PeerId, ConfigError> {
        if cfg.public_key == self.identity.public || self.find_peer(&cfg.public_key).is_some() {
            return Err(ConfigError::DuplicatePeer);
        }
        let slot = self.peers.iter().position(|p| p.is_none()).ok_or(ConfigError::PeersFull)?;
        let keys = PeerKeys::new(&self.identity, cfg.public_key, cfg.preshared_key.as_ref()).map_err(|_| ConfigError::BadKey)?;
        let id = PeerId(u16::try_from(slot).map_err(|_| ConfigError::PeersFull)?);
        // Like wg(8) setting persistent-keepalive on a running interface: a
        // peer kept alive is dialled at once, so a site behind NAT (or with
        // a dynamic address) brings its tunnel up without waiting for data.
        let dial = cfg.persistent_keepalive.is_some_and(|k| k > 0) && cfg.endpoint.is_some();
        let peer = Peer {
            keys,
            endpoint: cfg.endpoint,
            pending: None,
            previous: None,
            current: None,
            next: None,
            timers: Timers::new(cfg.persistent_keepalive),
            last_timestamp: [0; 12],
            last_initiation_consumed: None,
            last_sent_handshake: None,
            cookie: None,
            last_mac1: None,
            want_handshake: dial,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        };
        if let Some(p) = self.peers.get_mut(slot) {
            *p = Some(peer);
        }
        Ok(id)
    }

    /// Remove a peer: wipe its keys, free its indices and routes.
    pub fn remove_peer(&mut self, id: PeerId) -> Result<(), ConfigError> {
        let slot = self.peers.get_mut(usize::from(id.0)).ok_or(ConfigError::UnknownPeer)?;
        let mut peer = slot.take().ok_or(ConfigError::UnknownPeer)?;
        Self::wipe_peer(&mut peer, &mut self.indices);
        self.routes.remove_peer(id);
        Ok(())
    }

    fn wipe_peer(peer: &mut Peer, indices: &mut IndexTable<PEERS>) {
        retire(&mut peer.previous, indices);
        retire(&mut peer.current, indices);
        retire(&mut peer.next, indices);
        if let Some(p) = peer.pending.take() {
            indices.remove(p.local_index);
        }
    }

    pub fn add_allowed_ip(&mut self, id: PeerId, addr: core::net::IpAddr, len: u8) -> Result<(), ConfigError> {
        if self.peer_ref(id).is_none() {
            return Err(ConfigError::UnknownPeer);
        }
        self.routes.insert(addr, len, id)
    }

    pub fn remove_allowed_ip(&mut self, addr: core::net::IpAddr, len: u8) {
        self.routes.remove(addr, len);
    }

    /// Move a peer's endpoint (a re-resolved name). A peer kept alive is
    /// dialled at the new address at once.
    pub fn set_endpoint(&mut self, id: PeerId, endpoint: Option<SocketAddr>) -> Result<(), ConfigError> {
        let p = self.peer_mut(id).ok_or(ConfigError::UnknownPeer)?;
        if endpoint.is_some() && endpoint != p.endpoint && p.timers.persistent_interval.is_some() {
            p.want_handshake = true;
        }
        p.endpoint = endpoint;
        Ok(())
    }

    pub fn find_peer(&self, key: &PublicKey) -> Option<PeerId> {
        self.peers.iter().position(|p| p.as_ref().is_some_and(|p| p.keys.public == *key)).and_then(|i| u16::try_from(i).ok()).map(PeerId)
    }

    pub fn peer_status(&self, id: PeerId, now: Instant) -> Option<PeerStatus> {
        let p = self.peer_ref(id)?;
        Some(PeerStatus {
            public_key: p.keys.public,
            endpoint: p.endpoint,
            last_handshake: p.last_handshake,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            has_session: p.current.as_ref().is_some_and(|s| s.can_send(now)),
        })
    }

    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.iter().enumerate().filter(|(_, p)| p.is_some()).filter_map(|(i, _)| u16::try_from(i).ok().map(PeerId))
    }

    #[inline]
    fn peer_ref(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(usize::from(id.0))?.as_ref()
    }

    #[inline]
    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.get_mut(usize::from(id.0))?.as_mut()
    }

    // ----- sending -------------------------------------------------------

    /// Encrypt the inner IPv4/IPv6 packet `inner` to the peer its destination
    /// routes to; the datagram is written to `out` (which needs
    /// `inner.len()` + 32 + padding bytes, and at least 148 for a handshake).
    pub fn encapsulate<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        inner: &[u8],
        out: &mut [u8],
    ) -> Result<Action, Error> {
        match out.get_mut(HEADROOM..).and_then(|o| o.get_mut(..inner.len())) {
            Some(dst) => dst.copy_from_slice(inner),
            None => return Err(self.counters.count(Error::BufferTooSmall)),
        }
        self.encapsulate_in_place(now, rng, out, inner.len())
    }

    /// Like [`Device::encapsulate`], with the inner packet already at
    /// `buf[HEADROOM..HEADROOM + inner_len]`: no copy. The datagram replaces
    /// it from `buf[0]`.
    #[inline]
    pub fn encapsulate_in_place<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        buf: &mut [u8],
        inner_len: usize,
    ) -> Result<Action, Error> {
        let r = match self.route(buf, inner_len) {
            Ok(peer) => self.send_data(peer, now, rng, buf, inner_len),
            Err(e) => Err(e),
        };
        r.map_err(|e| self.counters.count(e))
    }

    /// Encrypt to a chosen peer, bypassing allowed IPs (e.g. for a peer's
    /// own tunnel address). Same buffer layout as `encapsulate_in_place`.
    pub fn encapsulate_to<R: RngCore + CryptoRng>(
        &mut self,
        peer: PeerId,
        now: Instant,
        rng: &mut R,
        buf: &mut [u8],
        inner_len: usize,
    ) -> Result<Action, Error> {
        self.send_data(peer, now, rng, buf, inner_len).map_err(|e| self.counters.count(e))
    }

    /// Encapsulate a batch; each job gets its own result.
    pub fn encapsulate_batch<R: RngCore + CryptoRng>(&mut self, now: Instant, rng: &mut R, jobs: &mut [EncapsulateJob<'_>]) {
        for job in jobs.iter_mut() {
            job.result = self.encapsulate_in_place(now, rng, job.buf, job.inner_len);
        }
    }

    #[inline]
    fn route(&self, buf: &[u8], inner_len: usize) -> Result<PeerId, Error> {
        let end = inner_len.checked_add(HEADROOM).ok_or(Error::BufferTooSmall)?;
        let inner = buf.get(HEADROOM..end).ok_or(Error::BufferTooSmall)?;
        match inner_destination(inner).ok_or(Error::TxMalformed)? {
            InnerAddr::V4(a) => self.routes.lookup_v4(a),
            InnerAddr::V6(a) => self.routes.lookup_v6(a),
        }
        .ok_or(Error::NoRoute)
    }

    /// Seal `buf[HEADROOM..][..inner_len]` on the peer's current session.
    #[inline]
    fn send_data<R: RngCore + CryptoRng>(
        &mut self,
        id: PeerId,
        now: Instant,
        rng: &mut R,
        buf: &mut [u8],
        inner_len: usize,
    ) -> Result<Action, Error> {
        let mtu = usize::from(self.config.mtu);
        let peer = self.peer_mut(id).ok_or(Error::UnknownPeerId)?;
        let Some(to) = peer.endpoint else { return Err(Error::NoEndpoint) };
        let session = match peer.current.as_mut() {
            Some(s) if s.can_send(now) => s,
            _ => {
                // No usable session: this packet is lost, a handshake starts.
                let action = self.initiate(id, now, rng, buf, false)?;
                self.counters.count(Error::NoSession);
                return Ok(action);
            }
        };
        // Pad to 16 bytes, but never past the MTU.
        let padded = if inner_len >= mtu { inner_len } else { ((inner_len + 15) & !15).min(mtu) };
        let total = padded.checked_add(TRANSPORT_OVERHEAD).ok_or(Error::BufferTooSmall)?;
        let datagram = buf.get_mut(..total).ok_or(Error::BufferTooSmall)?;
        let (header, rest) = datagram.split_at_mut_checked(HEADROOM).ok_or(Error::BufferTooSmall)?;
        let (payload, tag) = rest.split_at_mut_checked(padded).ok_or(Error::BufferTooSmall)?;
        if padded > inner_len {
            if let Some(pad) = payload.get_mut(inner_len..) {
                pad.fill(0);
            }
        }
        let counter = session.seal(payload, tag)?;
        // One 16-byte store instead of three field setters: this is the
        // per-packet path.
        let mut h = [0u8; TRANSPORT_HEADER_LEN];
        h[0] = wire::TYPE_TRANSPORT;
        h[4..8].copy_from_slice(&session.remote_index.to_le_bytes());
        h[8..16].copy_from_slice(&counter.to_le_bytes());
        header.copy_from_slice(&h);

        let rekey = session.initiator && (counter >= REKEY_AFTER_MESSAGES || session.created.elapsed_at_least(now, REKEY_AFTER_TIME));
        peer.want_handshake |= rekey;
        peer.tx_bytes = peer.tx_bytes.saturating_add(total as u64);
        peer.timers.any_authenticated_sent();
        peer.timers.any_authenticated_traversal(now);
        if inner_len > 0 && peer.timers.new_handshake.is_none() {
            peer.timers.data_sent(now, jitter(rng));
        }
        Ok(Action::Send { to, len: total })
    }

    /// Start (or retry) a handshake with `id`; the initiation goes to `out`.
    fn initiate<R: RngCore + CryptoRng>(
        &mut self,
        id: PeerId,
        now: Instant,
        rng: &mut R,
        out: &mut [u8],
        retry: bool,
    ) -> Result<Action, Error> {
        let timestamp = self.tai64n(now);
        let Device { peers, indices, identity, .. } = self;
        let peer = peers.get_mut(usize::from(id.0)).and_then(|p| p.as_mut()).ok_or(Error::UnknownPeerId)?;
        if !retry {
            // At most one new initiation per REKEY_TIMEOUT; retries have
            // their own timer.
            if peer.last_sent_handshake.is_some_and(|t| !t.elapsed_at_least(now, REKEY_TIMEOUT)) {
                return Ok(Action::None);
            }
            peer.timers.handshake_attempts = 0;
        }
        let to = peer.endpoint.ok_or(Error::NoEndpoint)?;
        // This initiation is the one a pending request asked for.
        peer.want_handshake = false;
        let msg = out.get_mut(..wire::INITIATION_LEN).ok_or(Error::BufferTooSmall)?;
        if let Some(old) = peer.pending.take() {
            indices.remove(old.local_index);
        }
        let local_index = new_index(indices, rng, id, IndexKind::Handshake)?;
        let pending = match handshake::create_initiation(identity, &peer.keys, local_index, timestamp, now, rng, msg) {
            Ok(p) => p,
            Err(e) => {
                indices.remove(local_index);
                return Err(e);
            }
        };
        let cookie = peer.fresh_cookie(now);
        peer.last_mac1 = Some(handshake::write_macs(msg, &peer.keys.macs.mac1, cookie.as_ref()));
        peer.pending = Some(pending);
        peer.last_sent_handshake = Some(now);
        peer.timers.handshake_initiated(now, jitter(rng));
        peer.timers.any_authenticated_traversal(now);
        peer.timers.any_authenticated_sent();
        Ok(Action::Send { to, len: wire::INITIATION_LEN })
    }

    /// A keepalive on the current session, or a handshake if there is none.
    fn keepalive<R: RngCore + CryptoRng>(&mut self, id: PeerId, now: Instant, rng: &mut R, out: &mut [u8]) -> Result<Action, Error> {
        let usable = self.peer_ref(id).is_some_and(|p| p.current.as_ref().is_some_and(|s| s.can_send(now)));
        if usable {
            self.send_data(id, now, rng, out, 0)
        } else {
            self.initiate(id, now, rng, out, false)
        }
    }

    // ----- timers --------------------------------------------------------

    /// Run due timers. Returns one datagram to send at a time; call again
    /// until [`Action::None`]. `out` needs room for a handshake initiation
    /// (148 bytes). Errors (a peer without endpoint …) are counted, not
    /// returned.
    pub fn poll<R: RngCore + CryptoRng>(&mut self, now: Instant, rng: &mut R, out: &mut [u8]) -> Action {
        for _ in 0..PEERS {
            let i = self.poll_cursor % PEERS.max(1);
            if let Ok(id) = u16::try_from(i).map(PeerId) {
                // Several events of one peer may be due; stay on it until
                // it has nothing left.
                for _ in 0..8 {
                    match self.poll_peer(id, now, rng, out) {
                        Ok(Some(action @ Action::Send { .. })) => return action,
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(e) => {
                            self.counters.count(e);
                        }
                    }
                }
            }
            self.poll_cursor = (i + 1) % PEERS.max(1);
        }
        Action::None
    }

    /// Handle one due event of a peer. `Ok(None)`: nothing due.
    fn poll_peer<R: RngCore + CryptoRng>(
        &mut self,
        id: PeerId,
        now: Instant,
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<Option<Action>, Error> {
        let Some(peer) = self.peer_mut(id) else { return Ok(None) };
        if core::mem::take(&mut peer.want_handshake) {
            return self.initiate(id, now, rng, out, false).map(Some);
        }
        let Some(event) = peer.timers.take_due(now) else { return Ok(None) };
        match event {
            TimerEvent::RetransmitHandshake => {
                if peer.timers.handshake_attempts >= MAX_TIMER_HANDSHAKES {
                    // REKEY_ATTEMPT_TIME is over: stop trying until new data
                    // asks for a session again.
                    peer.timers.send_keepalive = None;
                    if peer.timers.zero_key_material.is_none() {
                        peer.timers.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
                    }
                    // A peer kept alive is dialled again one interval later
                    // (wg(8) would stay silent until data comes): the other
                    // side may only have been unreachable for a while.
                    if let Some(i) = peer.timers.persistent_interval {
                        peer.timers.persistent_keepalive = Some(now + i);
                    }
                    if let Some(p) = peer.pending.take() {
                        self.indices.remove(p.local_index);
                    }
                    Ok(Some(Action::None))
                } else {
                    peer.timers.handshake_attempts += 1;
                    self.initiate(id, now, rng, out, true).map(Some)
                }
            }
            TimerEvent::SendKeepalive => {
                if core::mem::take(&mut peer.timers.need_another_keepalive) {
                    peer.timers.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
                }
                self.keepalive(id, now, rng, out).map(Some)
            }
            TimerEvent::NewHandshake => self.initiate(id, now, rng, out, false).map(Some),
            TimerEvent::ZeroKeyMaterial => {
                let Device { peers, indices, .. } = self;
                if let Some(peer) = peers.get_mut(usize::from(id.0)).and_then(|p| p.as_mut()) {
                    Self::wipe_peer(peer, indices);
                }
                Ok(Some(Action::None))
            }
            TimerEvent::PersistentKeepalive => self.keepalive(id, now, rng, out).map(Some),
        }
    }

    /// The earliest instant at which `poll` has work (None: only traffic
    /// can create work).
    pub fn poll_at(&self) -> Option<Instant> {
        self.peers.iter().flatten().filter_map(|p| if p.want_handshake { Some(Instant::ZERO) } else { p.timers.next_deadline() }).min()
    }

    // ----- receiving -----------------------------------------------------

    /// Handle one received datagram; `out` receives the inner packet (at
    /// `HEADROOM`) or a datagram to send back, so it must be at least as
    /// large as `datagram`.
    pub fn decapsulate<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Action, Error> {
        match out.get_mut(..datagram.len()) {
            Some(dst) => dst.copy_from_slice(datagram),
            None => return Err(self.counters.count(Error::BufferTooSmall)),
        }
        let n = datagram.len();
        match out.get_mut(..n) {
            Some(buf) => self.decapsulate_in_place(now, rng, from, buf),
            None => Err(self.counters.count(Error::BufferTooSmall)),
        }
    }

    /// Handle the datagram `buf` (exactly its length) in place: an inner
    /// packet is left at `buf[HEADROOM..]`; a reply (response, cookie reply,
    /// keepalive) overwrites `buf` from the start (replies are never longer
    /// than the message they answer).
    #[inline]
    pub fn decapsulate_in_place<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Action, Error> {
        let r = match wire::message_type(buf) {
            Ok(wire::TYPE_TRANSPORT) => self.receive_transport(now, from, buf),
            Ok(wire::TYPE_INITIATION) => self.receive_initiation(now, rng, from, buf),
            Ok(wire::TYPE_RESPONSE) => self.receive_response(now, rng, from, buf),
            Ok(wire::TYPE_COOKIE_REPLY) => self.receive_cookie_reply(now, buf),
            Ok(_) => Err(Error::UnknownType),
            Err(e) => Err(e),
        };
        r.map_err(|e| self.counters.count(e))
    }

    /// Decapsulate a batch; each job gets its own result.
    pub fn decapsulate_batch<R: RngCore + CryptoRng>(&mut self, now: Instant, rng: &mut R, jobs: &mut [DecapsulateJob<'_>]) {
        for job in jobs.iter_mut() {
            job.result = self.decapsulate_in_place(now, rng, job.from, job.buf);
        }
    }

    #[inline]
    fn receive_transport(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8]) -> Result<Action, Error> {
        let t = Transport::new_checked(&*buf)?;
        let (index, counter) = (t.receiver(), t.counter());
        let entry = self.indices.get(index).ok_or(Error::UnknownIndex)?;
        if entry.kind != IndexKind::Session {
            return Err(Error::UnknownIndex);
        }
        let id = entry.peer;
        let Device { peers, indices, routes, .. } = self;
        let peer = peers.get_mut(usize::from(id.0)).and_then(|p| p.as_mut()).ok_or(Error::UnknownIndex)?;
        let slot = peer.find_session(index).ok_or(Error::UnknownIndex)?;
        let session = peer.session_mut(slot).ok_or(Error::UnknownIndex)?;
        if session.expired(now) {
            return Err(Error::SessionExpired);
        }
        let sealed = buf.get_mut(HEADROOM..).ok_or(Error::Malformed)?;
        let n = session.open(counter, sealed)?;

        // Authenticated from here on.
        let datagram_len = buf.len() as u64;
        if slot == Slot::Next {
            // The initiator confirmed the session we answered: it becomes
            // current, the old current becomes previous.
            retire(&mut peer.previous, indices);
            rotate(&mut peer.previous, &mut peer.current);
            rotate(&mut peer.current, &mut peer.next);
            peer.timers.handshake_complete();
            peer.last_handshake = Some(now);
        }
        peer.endpoint = Some(from);
        peer.rx_bytes = peer.rx_bytes.saturating_add(datagram_len);
        peer.timers.any_authenticated_received();
        peer.timers.any_authenticated_traversal(now);
        if let Some(cur) = peer.current.as_ref() {
            // The initiator renews a session nearing REJECT_AFTER_TIME on
            // receive, once.
            let old = cur.created.elapsed_at_least(now, REKEY_ON_RECEIVE_AGE);
            if cur.initiator && old && !peer.timers.sent_last_minute_handshake {
                peer.timers.sent_last_minute_handshake = true;
                peer.want_handshake = true;
            }
        }
        if n == 0 {
            return Ok(Action::None); // keepalive
        }
        peer.timers.data_received(now);

        let inner = buf.get(HEADROOM..HEADROOM + n).ok_or(Error::InnerMalformed)?;
        let (src, len) = inner_source(inner).ok_or(Error::InnerMalformed)?;
        if len > n {
            return Err(Error::InnerMalformed);
        }
        let owner = match src {
            InnerAddr::V4(a) => routes.lookup_v4(a),
            InnerAddr::V6(a) => routes.lookup_v6(a),
        };
        if owner != Some(id) {
            return Err(Error::SourceNotAllowed);
        }
        Ok(Action::Deliver { peer: id, offset: HEADROOM, len })
    }

    /// mac1, then (under load) mac2 or a cookie reply, then the per-source
    /// rate. `Ok(Some(action))` means "answered with a cookie, stop here".
    fn screen_handshake<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        buf: &mut [u8],
        sender: u32,
    ) -> Result<Option<Action>, Error> {
        if !self.cookies.check_mac1(buf) {
            return Err(Error::BadMac1);
        }
        let limit = self.config.handshake_load_limit;
        if !self.cookies.note_handshake(now, limit, self.forced_load) {
            return Ok(None);
        }
        if !self.cookies.check_mac2(now, rng, &from, buf) {
            let (_, _, mac1, _) = wire::mac_inputs(buf).ok_or(Error::Malformed)?;
            let len = self.cookies.write_reply(now, rng, &from, sender, &mac1, buf)?;
            self.counters.cookie_replies_sent = self.counters.cookie_replies_sent.saturating_add(1);
            return Ok(Some(Action::Send { to: from, len }));
        }
        if !self.cookies.allow(now, &from) {
            return Err(Error::RateLimited);
        }
        Ok(None)
    }

    fn receive_initiation<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Action, Error> {
        let sender = Initiation::new_checked(&*buf)?.sender();
        if let Some(cookie_reply) = self.screen_handshake(now, rng, from, buf, sender)? {
            return Ok(cookie_reply);
        }
        let progress = handshake::consume_initiation(&self.identity, &Initiation::new_unchecked(&*buf))?;
        let id = self.find_peer(&PublicKey(progress.initiator_static)).ok_or(Error::UnknownPeer)?;
        let Device { peers, indices, counters, .. } = self;
        let peer = peers.get_mut(usize::from(id.0)).and_then(|p| p.as_mut()).ok_or(Error::UnknownPeer)?;
        let (timestamp, accepted) = progress.finish(&peer.keys)?;
        if timestamp <= peer.last_timestamp {
            return Err(Error::HandshakeReplay);
        }
        if peer.last_initiation_consumed.is_some_and(|t| !t.elapsed_at_least(now, INITIATION_MIN_INTERVAL)) {
            return Err(Error::HandshakeFlood);
        }
        let resp = buf.get_mut(..wire::RESPONSE_LEN).ok_or(Error::BufferTooSmall)?;
        let local_index = new_index(indices, rng, id, IndexKind::Session)?;
        let keys = match accepted.respond(&peer.keys, local_index, rng, resp) {
            Ok(k) => k,
            Err(e) => {
                indices.remove(local_index);
                return Err(e);
            }
        };
        let cookie = peer.fresh_cookie(now);
        peer.last_mac1 = Some(handshake::write_macs(resp, &peer.keys.macs.mac1, cookie.as_ref()));
        peer.last_timestamp = timestamp;
        peer.last_initiation_consumed = Some(now);

        // As responder the session waits in `next` until the initiator uses
        // it; the old previous goes now.
        let session = Session::new(keys.send, keys.recv, local_index, accepted.sender, now, false);
        retire(&mut peer.next, indices);
        retire(&mut peer.previous, indices);
        peer.next = Some(session);
        peer.endpoint = Some(from);
        peer.timers.session_derived(now);
        peer.timers.any_authenticated_received();
        peer.timers.any_authenticated_traversal(now);
        peer.timers.any_authenticated_sent();
        counters.handshakes = counters.handshakes.saturating_add(1);
        Ok(Action::Send { to: from, len: wire::RESPONSE_LEN })
    }

    fn receive_response<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Action, Error> {
        let (sender, receiver) = {
            let r = Response::new_checked(&*buf)?;
            (r.sender(), r.receiver())
        };
        if let Some(cookie_reply) = self.screen_handshake(now, rng, from, buf, sender)? {
            return Ok(cookie_reply);
        }
        let entry = self.indices.get(receiver).ok_or(Error::UnexpectedHandshake)?;
        if entry.kind != IndexKind::Handshake {
            return Err(Error::UnexpectedHandshake);
        }
        let id = entry.peer;
        let Device { peers, indices, identity, counters, .. } = self;
        let peer = peers.get_mut(usize::from(id.0)).and_then(|p| p.as_mut()).ok_or(Error::UnexpectedHandshake)?;
        let pending = peer.pending.as_ref().filter(|p| p.local_index == receiver).ok_or(Error::UnexpectedHandshake)?;
        let keys = handshake::consume_response(identity, &peer.keys, pending, &Response::new_unchecked(&*buf))?;

        // The pending index lives on as the session's index.
        peer.pending = None;
        indices.remove(receiver);
        if !indices.insert(IndexEntry { index: receiver, peer: id, kind: IndexKind::Session }) {
            return Err(Error::IndexExhausted);
        }
        let session = Session::new(keys.send, keys.recv, receiver, sender, now, true);
        if peer.next.is_some() {
            // A session we answered was never confirmed; keep it as previous
            // so in-flight data on it still decrypts.
            retire(&mut peer.previous, indices);
            rotate(&mut peer.previous, &mut peer.next);
            retire(&mut peer.current, indices);
        } else {
            retire(&mut peer.previous, indices);
            rotate(&mut peer.previous, &mut peer.current);
        }
        peer.current = Some(session);
        peer.endpoint = Some(from);
        peer.last_handshake = Some(now);
        peer.timers.handshake_complete();
        peer.timers.session_derived(now);
        peer.timers.any_authenticated_received();
        peer.timers.any_authenticated_traversal(now);
        counters.handshakes = counters.handshakes.saturating_add(1);

        // Confirm the session to the responder right away.
        self.send_data(id, now, rng, buf, 0)
    }

    fn receive_cookie_reply(&mut self, now: Instant, buf: &mut [u8]) -> Result<Action, Error> {
        let reply = CookieReply::new_checked(&*buf)?;
        let entry = self.indices.get(reply.receiver()).ok_or(Error::UnexpectedHandshake)?;
        let peer = self.peer_mut(entry.peer).ok_or(Error::UnexpectedHandshake)?;
        let mac1 = peer.last_mac1.ok_or(Error::UnexpectedHandshake)?;
        let cookie = handshake::open_cookie_reply(&peer.keys, &mac1, &reply)?;
        peer.cookie = Some((cookie, now));
        peer.last_mac1 = None;
        self.counters.cookies_received = self.counters.cookies_received.saturating_add(1);
        Ok(Action::None)
    }
}

/// A fresh random index registered for `peer`.
fn new_index<const P: usize, R: RngCore>(indices: &mut IndexTable<P>, rng: &mut R, peer: PeerId, kind: IndexKind) -> Result<u32, Error> {
    for _ in 0..16 {
        let index = rng.next_u32();
        if indices.insert(IndexEntry { index, peer, kind }) {
            return Ok(index);
        }
    }
    Err(Error::IndexExhausted)
}

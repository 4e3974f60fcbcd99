//! The BGP service: EVPN sessions with the configured peers, over the
//! services layer's TCP endpoint ([`crate::tcp`]).
//!
//! The protocol is `routerd-bgp`'s sans-I/O [`Session`]; this module is its
//! driver on the box, the same loop as the crate's FRR interop test but
//! over smoltcp instead of `std::net`:
//!
//! * One [`Session`] per configured peer ([`BgpSetup::peers`], iBGP in
//!   [`BgpSetup::asn`]), its index the peer's [`PeerId`] in the one
//!   [`Rib`]; our routes in one [`LocalRoutes`]: a type 3 per configured
//!   VNI and a type 2 per MAC given with [`Bgp::set_local_macs`].
//! * Connections: the session asks to dial ([`Event::Connect`]): a TCP
//!   connection from the box's address towards the peer
//!   ([`Dataplane::source_for`]) to its port 179, abandoned when
//!   ConnectRetry asks again; the back-off after failures is the
//!   session's. The service also listens on 179 and takes the peers'
//!   connections ([`Tcp::accept`]); one from an address that is no peer is
//!   reset and counted (the dataplane admits only the peers' TCP anyway).
//! * Collisions: both sides dial. The crate's rule ([`Session::incoming`])
//!   refuses a second connection once the first is in OpenSent or later;
//!   two boxes of ours dialling each other at the same moment would each
//!   keep their own and refuse the other's, and both connections would
//!   die, again and again, in step. So the service decides first,
//!   deterministically, like RFC 4271 §6.8 with BGP identifiers but by
//!   address (both known before any OPEN): while the session is not
//!   Established, the connection dialled by the side with the higher
//!   address survives (the loser's session, if it had sent its OPEN on its
//!   own dial, counts a connection failure and continues at once on the
//!   winner's connection). An Established session refuses a second
//!   connection with the crate's Cease/Connection Collision Resolution.
//! * Routes received go straight into the [`Rib`]; a session going down
//!   withdraws its peer's routes. [`Bgp::take_changed`] tells the caller
//!   (the next slice: the dataplane's VXLAN flood lists and FDB) that
//!   [`Bgp::flood_list`] / [`Bgp::remote_macs`] may answer differently.
//!
//! * The dataplane follows the RIB ([`Bgp::program`], every turn after
//!   [`Bgp::poll`]): when the RIB changed (or the service or the dataplane
//!   is new), each EVPN segment's learned VTEPs become
//!   [`Bgp::flood_list`] (the configured `remote_vteps` stay besides) and
//!   its installed FDB entries [`Bgp::remote_macs`] (never aged; removed
//!   when withdrawn). Once a second the MACs the FDB learned on each
//!   segment's LAN port become our type-2 routes ([`Bgp::set_local_macs`]).
//!   MAC mobility (RFC 7432 §15): a MAC learned here that a peer
//!   advertises too is advertised with the peer's sequence number + 1, and
//!   a remote route does not displace a local MAC we advertise with a
//!   higher number; the peer withdraws on seeing ours.
//!
//! [`Bgp::poll`] runs once per loop turn from
//! [`Services::poll`](crate::Services::poll), after the TCP endpoint took
//! the turn's packets; time is the loop's `now`.
//!
//! Capacities: [`MAX_BGP_PEERS`] peers (the RIB's 16), [`MAX_VNIS`] VNIs;
//! the RIB and local-route limits are `routerd-bgp`'s (its docs).

use alloc::boxed::Box;
use core::net::Ipv4Addr;
use heapless::Vec;
use routerd_bgp::{Config, DownReason, Event, EvpnRoute, Incoming, LocalRoutes, Mac, PeerId, Rib, RouteAttrs, RouteSink, Session, State};
use routerd_dataplane::{Dataplane, Instant};

use crate::tcp::{Conn, ConnState, Tcp};

/// Peers: the RIB's limit.
pub const MAX_BGP_PEERS: usize = routerd_bgp::rib::MAX_PEERS;
/// VNIs the box originates routes for.
pub const MAX_VNIS: usize = 64;
/// How often the MACs learned on the segments' LAN ports are advertised
/// (milliseconds).
pub const LOCAL_SYNC_MS: u64 = 1000;
/// BGP's TCP port.
pub const BGP_PORT: u16 = 179;
/// Bytes read from a connection per call (one maximum-size BGP message).
const READ_CHUNK: usize = routerd_bgp::wire::MAX_MESSAGE_LEN;

/// What the BGP service runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpSetup {
    /// Our AS (iBGP: every peer's too).
    pub asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The peers: address (we dial it, and take its connections) and name.
    pub peers: Vec<(Ipv4Addr, config_schema::Name), MAX_BGP_PEERS>,
    /// The VNIs we join, each with our VTEP address for it (one VTEP for
    /// all: `LocalRoutes` has one next hop).
    pub vnis: Vec<(u32, Ipv4Addr), MAX_VNIS>,
    /// The hold time we propose, seconds (0 or ≥ 3).
    pub hold_time: u16,
}

/// Why a [`BgpSetup`] was refused (nothing changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BgpSetupError {
    /// `vnis[index]`: a VTEP other than the first VNI's.
    MixedVteps { index: usize, vtep: Ipv4Addr, first: Ipv4Addr },
    /// `vnis[index]`: VNI 0 or above 24 bits.
    BadVni { index: usize, vni: u32 },
    /// `vnis[index]`: the same VNI twice.
    DuplicateVni { index: usize, vni: u32 },
    /// `peers[index]`: the same address twice.
    DuplicatePeer { index: usize, addr: Ipv4Addr },
    /// `peers[index]`: an address a peer cannot have.
    BadPeer { index: usize, addr: Ipv4Addr },
    /// `router_id`: 0.0.0.0.
    BadRouterId,
    /// `asn`: 0.
    BadAsn,
    /// `hold_time`: 1 or 2.
    BadHoldTime { hold_time: u16 },
}

impl core::fmt::Display for BgpSetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BgpSetupError::MixedVteps { index, vtep, first } => {
                write!(f, "bgp.vnis[{index}].vtep: {vtep} differs from the first VNI's VTEP {first} (one VTEP per box)")
            }
            BgpSetupError::BadVni { index, vni } => write!(f, "bgp.vnis[{index}].vni: {vni} is not in 1..={}", routerd_bgp::rib::MAX_VNI),
            BgpSetupError::DuplicateVni { index, vni } => write!(f, "bgp.vnis[{index}].vni: {vni} is listed twice"),
            BgpSetupError::DuplicatePeer { index, addr } => write!(f, "bgp.peers[{index}].address: {addr} is listed twice"),
            BgpSetupError::BadPeer { index, addr } => write!(f, "bgp.peers[{index}].address: {addr} cannot be a BGP peer"),
            BgpSetupError::BadRouterId => write!(f, "bgp.router_id: 0.0.0.0 is not a BGP identifier"),
            BgpSetupError::BadAsn => write!(f, "bgp.asn: 0 is not an AS number"),
            BgpSetupError::BadHoldTime { hold_time } => write!(f, "bgp.hold_time: {hold_time} is neither 0 nor at least 3"),
        }
    }
}

impl BgpSetup {
    /// What `cfg`'s `[bgp]` asks for (`None` without one): the peers, the
    /// router ID (given, else derived: [`config_schema::Bgp::effective_router_id`]),
    /// and the VNI and VTEP of every segment with `control = "evpn"`.
    /// Entries beyond the capacities are left out (validation refuses them).
    pub fn from_config(cfg: &config_schema::Config) -> Option<BgpSetup> {
        let b = cfg.bgp.as_ref()?;
        let mut setup = BgpSetup {
            asn: b.asn,
            router_id: b.effective_router_id(cfg).unwrap_or(Ipv4Addr::UNSPECIFIED),
            peers: Vec::new(),
            vnis: Vec::new(),
            hold_time: b.hold_time,
        };
        for p in &b.peers {
            let _ = setup.peers.push((p.address, p.name.clone()));
        }
        for s in cfg.segments.iter().filter(|s| s.control == config_schema::SegmentControl::Evpn) {
            let _ = setup.vnis.push((s.vni, s.local_vtep));
        }
        Some(setup)
    }

    /// Check what the crate and the service rely on.
    pub fn check(&self) -> Result<(), BgpSetupError> {
        if self.asn == 0 {
            return Err(BgpSetupError::BadAsn);
        }
        if self.router_id.is_unspecified() {
            return Err(BgpSetupError::BadRouterId);
        }
        if matches!(self.hold_time, 1 | 2) {
            return Err(BgpSetupError::BadHoldTime { hold_time: self.hold_time });
        }
        for (index, (addr, _)) in self.peers.iter().enumerate() {
            if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
                return Err(BgpSetupError::BadPeer { index, addr: *addr });
            }
            if self.peers.iter().take(index).any(|(a, _)| a == addr) {
                return Err(BgpSetupError::DuplicatePeer { index, addr: *addr });
            }
        }
        let first = self.vnis.first().map(|(_, v)| *v);
        for (index, (vni, vtep)) in self.vnis.iter().enumerate() {
            if *vni == 0 || *vni > routerd_bgp::rib::MAX_VNI {
                return Err(BgpSetupError::BadVni { index, vni: *vni });
            }
            if self.vnis.iter().take(index).any(|(v, _)| v == vni) {
                return Err(BgpSetupError::DuplicateVni { index, vni: *vni });
            }
            if let Some(first) = first.filter(|f| f != vtep) {
                return Err(BgpSetupError::MixedVteps { index, vtep: *vtep, first });
            }
        }
        Ok(())
    }
}

/// A local MAC could not be originated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalMacError {
    /// The VNI is not in [`BgpSetup::vnis`].
    UnknownVni { vni: u32 },
    /// The local route table is full (`routerd_bgp::rib::MAX_LOCAL`): the
    /// MACs before `mac` were taken.
    Full { vni: u32, mac: Mac },
}

impl core::fmt::Display for LocalMacError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LocalMacError::UnknownVni { vni } => write!(f, "bgp: VNI {vni} is not configured"),
            LocalMacError::Full { vni, mac } => {
                write!(f, "bgp: local route table full ({} routes); MAC {mac} of VNI {vni} not advertised", routerd_bgp::rib::MAX_LOCAL)
            }
        }
    }
}

/// A peer as status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub addr: Ipv4Addr,
    pub name: config_schema::Name,
    pub state: State,
    /// When the session last reached Established (`None` while not up).
    pub established_since: Option<Instant>,
    /// Routes of this peer in the RIB now.
    pub prefixes_received: usize,
    /// Times the session reached Established / went down, and the last reason.
    pub established: u64,
    pub downs: u64,
    pub last_down: Option<DownReason>,
    /// The session's own counters (messages, errors, collisions).
    pub session: routerd_bgp::Counters,
}

impl PeerStatus {
    /// How long the session has been up at `now` (milliseconds).
    pub fn uptime_ms(&self, now: Instant) -> Option<u64> {
        self.established_since.map(|t| now.millis().saturating_sub(t.millis()))
    }
}

/// What the service did and refused (besides each session's counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BgpCounters {
    /// Connections taken on port 179 from a peer.
    pub accepted: u64,
    /// Connections on port 179 from an address that is no peer (reset).
    pub not_a_peer: u64,
    /// Connections dropped by the address rule while both sides dialled.
    pub collisions: u64,
    /// Dials that could not start (no socket, no route or address).
    pub dial_failed: u64,
    /// Local MACs refused (table full).
    pub local_full: u64,
    /// Times the dataplane was programmed from the RIB.
    pub programmed: u64,
    /// Learned VTEPs the dataplane refused (its per-segment table full).
    pub vteps_refused: u64,
    /// Remote MACs the FDB could not install (full of live entries).
    pub macs_refused: u64,
}

struct Peer {
    addr: Ipv4Addr,
    name: config_schema::Name,
    session: Box<Session>,
    conn: Option<Conn>,
    /// `conn` is our dial and the session has not been told it is up.
    dialing: bool,
    /// The local address of our dial (for the collision rule).
    local: Option<Ipv4Addr>,
    since: Option<Instant>,
    routes: usize,
    established: u64,
    downs: u64,
    last_down: Option<DownReason>,
}

/// The service: sessions, RIB, our routes.
pub struct Bgp {
    setup: BgpSetup,
    peers: Vec<Peer, MAX_BGP_PEERS>,
    rib: Box<Rib>,
    local: Box<LocalRoutes>,
    changed: bool,
    counters: BgpCounters,
    buf: Box<[u8; READ_CHUNK]>,
    /// RIB changes so far, and how many the dataplane shows.
    changes: u64,
    programmed_changes: u64,
    /// The dataplane shows the RIB as of the last [`Bgp::program`].
    programmed: bool,
    /// When the local MACs are next advertised (milliseconds).
    next_local_sync: u64,
}

fn t(now: Instant) -> routerd_bgp::Instant {
    routerd_bgp::Instant(now.millis())
}

/// The RIB seen through one peer, counting its routes and noting changes.
struct Counting<'a> {
    rib: &'a mut Rib,
    peer: PeerId,
    routes: &'a mut usize,
    changed: &'a mut bool,
    changes: &'a mut u64,
}

impl Counting<'_> {
    fn track(&mut self, before: usize) {
        let after = self.rib.len();
        *self.routes = self.routes.saturating_add(after).saturating_sub(before);
        *self.changed = true;
        *self.changes = self.changes.wrapping_add(1);
    }
}

impl RouteSink for Counting<'_> {
    fn announce(&mut self, route: &EvpnRoute, attrs: &RouteAttrs<'_>) {
        let before = self.rib.len();
        self.rib.sink(self.peer).announce(route, attrs);
        self.track(before);
    }
    fn withdraw(&mut self, route: &EvpnRoute) {
        let before = self.rib.len();
        self.rib.sink(self.peer).withdraw(route);
        self.track(before);
    }
}

impl Bgp {
    /// The service for `setup`, its sessions started at `now` (they dial
    /// at once). Large (the RIB ≈ 340 KiB, local routes ≈ 150 KiB, a
    /// session ≈ 17 KiB per peer): all boxed.
    pub fn new(setup: BgpSetup, now: Instant) -> Result<Bgp, BgpSetupError> {
        setup.check()?;
        let vtep = setup.vnis.first().map(|(_, v)| *v).unwrap_or(setup.router_id);
        let mut local = Box::new(LocalRoutes::new(setup.asn, setup.router_id, vtep));
        for (index, (vni, _)) in setup.vnis.iter().enumerate() {
            local.add_vni(*vni).map_err(|_| BgpSetupError::BadVni { index, vni: *vni })?;
        }
        let mut peers = Vec::new();
        for (addr, name) in setup.peers.iter() {
            let config = Config { hold_time: setup.hold_time, ..Config::ibgp(setup.asn, setup.router_id) };
            let mut session = Box::new(Session::new(config));
            session.start(t(now));
            let p = Peer {
                addr: *addr,
                name: name.clone(),
                session,
                conn: None,
                dialing: false,
                local: None,
                since: None,
                routes: 0,
                established: 0,
                downs: 0,
                last_down: None,
            };
            if peers.push(p).is_err() {
                break;
            }
        }
        Ok(Bgp {
            rib: Box::new(Rib::new(setup.asn)),
            local,
            setup,
            peers,
            changed: false,
            counters: BgpCounters::default(),
            buf: Box::new([0; READ_CHUNK]),
            changes: 0,
            programmed_changes: 0,
            programmed: false,
            next_local_sync: 0,
        })
    }

    /// Program the dataplane again at the next [`Bgp::program`] even if
    /// the RIB did not change (a new dataplane after an apply).
    pub fn reprogram(&mut self) {
        self.programmed = false;
        self.next_local_sync = 0;
    }

    /// When the service next needs [`Bgp::poll`] and [`Bgp::program`]
    /// without new packets: the sessions' timers (hold, keepalive,
    /// ConnectRetry, idle back-off) and the next advertisement of the
    /// learned MACs ([`LOCAL_SYNC_MS`]). A loop that sleeps between turns
    /// (routerd-host) wakes then; the image's loop polls anyway.
    pub fn poll_at(&self) -> Instant {
        let sessions = self.peers.iter().filter_map(|p| p.session.poll_at()).map(|t| t.0).min();
        Instant::from_millis(sessions.map_or(self.next_local_sync, |s| s.min(self.next_local_sync)))
    }

    /// Our sequence number for `mac` in `vni`, if we advertise it.
    fn local_seq(&self, vni: u32, mac: Mac) -> Option<u32> {
        (0..self.local.len()).find_map(|i| match self.local.entry_at(i) {
            Some((routerd_bgp::rib::LocalKey::Mac { vni: v, mac: m }, e)) if *v == vni && *m == mac && !e.withdrawn => Some(e.seq),
            _ => None,
        })
    }

    /// The dataplane follows the RIB (see the module documentation): the
    /// EVPN segments' learned VTEPs and installed MACs when the RIB
    /// changed, and our type-2 routes from the FDB's local MACs once per
    /// [`LOCAL_SYNC_MS`]. A VNI no segment of `dp` carries is skipped.
    pub fn program(&mut self, now: Instant, dp: &mut Dataplane) {
        use routerd_dataplane::fdb::{Location, FDB_ENTRIES};
        let segment_of = |dp: &Dataplane, vni: u32| dp.config().segments.iter().position(|s| s.vni == vni);
        if now.millis() >= self.next_local_sync {
            self.next_local_sync = now.millis().saturating_add(LOCAL_SYNC_MS);
            for k in 0..self.setup.vnis.len() {
                let Some(&(vni, _)) = self.setup.vnis.get(k) else { break };
                let Some(si) = segment_of(dp, vni) else { continue };
                let macs: Vec<Mac, FDB_ENTRIES> = dp.local_macs(si, now).map(|m| Mac(m.0)).collect();
                let _ = self.set_local_macs(vni, &macs);
            }
        }
        if self.programmed && self.programmed_changes == self.changes {
            return;
        }
        self.programmed = true;
        self.programmed_changes = self.changes;
        self.counters.programmed += 1;
        for k in 0..self.setup.vnis.len() {
            let Some(&(vni, _)) = self.setup.vnis.get(k) else { break };
            let Some(si) = segment_of(dp, vni) else { continue };
            let mut vteps: Vec<Ipv4Addr, { routerd_dataplane::MAX_LEARNED_VTEPS }> = Vec::new();
            for v in self.rib.flood_list(vni) {
                if vteps.push(v).is_err() {
                    self.counters.vteps_refused += 1;
                }
            }
            self.counters.vteps_refused += dp.set_learned_vteps(si, &vteps) as u64;
            let seg = u8::try_from(si).unwrap_or(u8::MAX);
            let mut macs: Vec<(routerd_dataplane::Mac, Ipv4Addr), FDB_ENTRIES> = Vec::new();
            for r in self.rib.remote_macs(vni) {
                // A MAC here that we advertise with a higher sequence number
                // stays local until the peer withdraws.
                let here = dp.fdb().lookup(seg, routerd_dataplane::Mac(r.mac.0), now) == Some(Location::Local);
                if here && self.local_seq(vni, r.mac).is_some_and(|s| s > r.seq) {
                    continue;
                }
                if macs.push((routerd_dataplane::Mac(r.mac.0), r.vtep)).is_err() {
                    self.counters.macs_refused += 1;
                }
            }
            self.counters.macs_refused += dp.set_installed_macs(si, &macs, now) as u64;
        }
    }

    /// What it runs.
    pub fn setup(&self) -> &BgpSetup {
        &self.setup
    }

    /// The peers' addresses (what the dataplane must admit).
    pub fn peer_addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.peers.iter().map(|p| p.addr)
    }

    /// Advertise exactly `macs` as our type-2 routes in `vni` (MACs no
    /// longer listed are withdrawn).
    pub fn set_local_macs(&mut self, vni: u32, macs: &[Mac]) -> Result<(), LocalMacError> {
        if !self.setup.vnis.iter().any(|(v, _)| *v == vni) {
            return Err(LocalMacError::UnknownVni { vni });
        }
        // Withdrawal only marks entries: positions stay put while walking.
        for i in 0..self.local.len() {
            let gone = match self.local.entry_at(i) {
                Some((routerd_bgp::rib::LocalKey::Mac { vni: v, mac }, e)) if *v == vni && !e.withdrawn && !macs.contains(mac) => {
                    Some(*mac)
                }
                _ => None,
            };
            if let Some(mac) = gone {
                self.local.remove_mac(vni, mac);
            }
        }
        for mac in macs {
            // MAC mobility: outbid a peer that advertises it too.
            let theirs = self.rib.remote_mac(vni, *mac).map(|r| r.seq);
            let ours = self.local_seq(vni, *mac);
            let seq = match (ours, theirs) {
                (Some(o), Some(t)) if o > t => o,
                (_, Some(t)) => t.saturating_add(1),
                (Some(o), None) => o,
                (None, None) => 0,
            };
            if self.local.add_mac(vni, *mac, seq).is_err() {
                self.counters.local_full += 1;
                return Err(LocalMacError::Full { vni, mac: *mac });
            }
        }
        Ok(())
    }

    /// The remote VTEPs to flood BUM traffic of `vni` to.
    pub fn flood_list(&self, vni: u32) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.rib.flood_list(vni)
    }

    /// The remote MACs of `vni`, each with its best route.
    pub fn remote_macs(&self, vni: u32) -> impl Iterator<Item = routerd_bgp::RemoteMac> + '_ {
        self.rib.remote_macs(vni)
    }

    /// The RIB itself (counters, type-5 routes).
    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    /// Every peer's session.
    pub fn sessions(&self) -> impl Iterator<Item = PeerStatus> + '_ {
        self.peers.iter().map(|p| PeerStatus {
            addr: p.addr,
            name: p.name.clone(),
            state: p.session.state(),
            established_since: p.since,
            prefixes_received: p.routes,
            established: p.established,
            downs: p.downs,
            last_down: p.last_down,
            session: *p.session.counters(),
        })
    }

    /// True once after the RIB changed (routes announced or withdrawn):
    /// flood lists and remote MACs may answer differently.
    pub fn take_changed(&mut self) -> bool {
        core::mem::take(&mut self.changed)
    }

    /// Whether the RIB changed since the last [`Bgp::take_changed`].
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// What the service did so far.
    pub fn counters(&self) -> BgpCounters {
        self.counters
    }

    /// Stop every session (Cease/Administrative Shutdown to the peers that
    /// are up); they stay down until [`Bgp::start`].
    pub fn stop(&mut self, now: Instant, tcp: &mut Tcp) {
        for i in 0..self.peers.len() {
            if let Some(p) = self.peers.get_mut(i) {
                p.session.stop(t(now));
            }
            self.events(i, now, tcp, None);
        }
    }

    /// Start every session again after [`Bgp::stop`].
    pub fn start(&mut self, now: Instant, tcp: &mut Tcp) {
        for i in 0..self.peers.len() {
            if let Some(p) = self.peers.get_mut(i) {
                p.session.start(t(now));
            }
            self.events(i, now, tcp, None);
        }
    }

    /// Reset every connection (the service is being replaced or removed).
    pub fn release(&mut self, tcp: &mut Tcp) {
        for p in self.peers.iter_mut() {
            if let Some(c) = p.conn.take() {
                tcp.abort(c);
            }
        }
    }

    /// One turn: take the peers' connections, feed received bytes, run the
    /// timers, advertise our routes, queue what the sessions send, act on
    /// their events. `dp` gives the source address of our dials.
    pub fn poll(&mut self, now: Instant, tcp: &mut Tcp, dp: &Dataplane) {
        let _ = tcp.listen(BGP_PORT);
        while let Some((conn, remote, _)) = tcp.accept(BGP_PORT) {
            self.incoming(now, tcp, conn, remote);
        }
        for i in 0..self.peers.len() {
            self.drive(i, now, tcp, dp);
        }
        self.purge();
    }

    /// A connection a remote opened to our port 179.
    fn incoming(&mut self, now: Instant, tcp: &mut Tcp, conn: Conn, remote: Ipv4Addr) {
        let Some(i) = self.peers.iter().position(|p| p.addr == remote) else {
            self.counters.not_a_peer += 1;
            tcp.abort(conn);
            return;
        };
        let Some(p) = self.peers.get_mut(i) else { return };
        let state = p.session.state();
        if state != State::Established && p.conn.is_some() {
            // Both dialled: the dial of the side with the higher address wins.
            let ours = p.local.or_else(|| tcp.endpoints(conn).map(|(l, _)| l.0));
            if ours.is_some_and(|l| l > remote) {
                self.counters.collisions += 1;
                tcp.abort(conn);
                return;
            }
            // Theirs wins: drop our connection (and the session's progress on it).
            self.counters.collisions += 1;
            if matches!(state, State::OpenSent | State::OpenConfirm) {
                p.session.connection_closed(t(now));
                self.events(i, now, tcp, None);
            }
            let Some(p) = self.peers.get_mut(i) else { return };
            if let Some(old) = p.conn.take() {
                tcp.abort(old);
            }
            p.dialing = false;
        }
        let Some(p) = self.peers.get_mut(i) else { return };
        match p.session.incoming() {
            Incoming::Accept => {
                if let Some(old) = p.conn.take() {
                    tcp.abort(old);
                }
                self.counters.accepted += 1;
                p.conn = Some(conn);
                p.dialing = false;
                p.local = None;
                p.session.connected(t(now));
            }
            Incoming::Reject(notification) => {
                let _ = tcp.send(conn, &notification);
                tcp.close(conn);
            }
        }
        self.events(i, now, tcp, None);
    }

    /// One peer's turn.
    fn drive(&mut self, i: usize, now: Instant, tcp: &mut Tcp, dp: &Dataplane) {
        let Bgp { peers, rib, local, changed, changes, buf, .. } = self;
        let Some(p) = peers.get_mut(i) else { return };
        let peer = PeerId(u8::try_from(i).unwrap_or(u8::MAX));
        if let Some(c) = p.conn {
            let state = tcp.state(c);
            if p.dialing && matches!(state, ConnState::Established | ConnState::PeerClosed) {
                p.dialing = false;
                p.session.connected(t(now));
            }
            if !p.dialing {
                // Everything received, in order, then the close if any.
                loop {
                    let n = tcp.recv(c, &mut buf[..]);
                    let Some(data) = buf.get(..n).filter(|d| !d.is_empty()) else { break };
                    let mut sink = Counting { rib, peer, routes: &mut p.routes, changed, changes };
                    p.session.on_bytes(t(now), data, &mut sink);
                }
            }
            if matches!(state, ConnState::PeerClosed | ConnState::Closing | ConnState::Closed) {
                p.conn = None;
                p.dialing = false;
                tcp.abort(c);
                p.session.connection_closed(t(now));
            }
        }
        p.session.poll(t(now));
        p.session.advertise(local);
        self.events(i, now, tcp, Some(dp));
        self.flush(i, tcp);
    }

    /// Queue what the session has to send on its connection.
    fn flush(&mut self, i: usize, tcp: &mut Tcp) {
        let Some(p) = self.peers.get_mut(i) else { return };
        let Some(c) = p.conn.filter(|_| !p.dialing) else { return };
        let n = tcp.send(c, p.session.transmit());
        p.session.consume(n);
        // Room freed: the next messages of a long table.
        if n > 0 {
            p.session.advertise(&self.local);
            let n = tcp.send(c, p.session.transmit());
            p.session.consume(n);
        }
    }

    /// Act on a session's events. Without `dp`, a dial waits for the next
    /// turn's (the session repeats it when ConnectRetry expires).
    fn events(&mut self, i: usize, now: Instant, tcp: &mut Tcp, dp: Option<&Dataplane>) {
        // Each event is acted on once; a few follow one another (Down,
        // Disconnect, Connect): bounded by the session's event queue.
        for _ in 0..routerd_bgp::session::EVENT_CAP * 2 {
            let Some(p) = self.peers.get_mut(i) else { return };
            let Some(e) = p.session.next_event() else { return };
            match e {
                Event::Connect => {
                    if let Some(old) = p.conn.take() {
                        tcp.abort(old);
                    }
                    p.dialing = false;
                    let src = dp.and_then(|d| d.source_for(p.addr));
                    match src.map(|s| (s, tcp.connect(s, p.addr, BGP_PORT))) {
                        Some((s, Ok(c))) => {
                            p.conn = Some(c);
                            p.dialing = true;
                            p.local = Some(s);
                        }
                        _ => {
                            self.counters.dial_failed += 1;
                            p.session.connection_closed(t(now));
                        }
                    }
                }
                Event::Disconnect => {
                    if let Some(c) = p.conn.take() {
                        if !p.dialing {
                            let n = tcp.send(c, p.session.transmit());
                            p.session.consume(n);
                        }
                        tcp.close(c);
                    }
                    p.dialing = false;
                    p.local = None;
                }
                Event::Established => {
                    p.since = Some(now);
                    p.established += 1;
                }
                Event::Down(reason) => {
                    p.since = None;
                    p.downs += 1;
                    p.last_down = Some(reason);
                    p.routes = 0;
                    if self.rib.withdraw_peer(PeerId(u8::try_from(i).unwrap_or(u8::MAX))) > 0 {
                        self.changed = true;
                        self.changes = self.changes.wrapping_add(1);
                    }
                }
                Event::EndOfRib => {}
            }
        }
    }

    /// Forget withdrawn local routes every Established peer has heard.
    fn purge(&mut self) {
        let mut synced = self.local.generation();
        for p in self.peers.iter() {
            if p.session.state() == State::Established {
                match p.session.local_synced() {
                    Some(g) => synced = synced.min(g),
                    None => return,
                }
            }
        }
        self.local.purge(synced);
    }
}

/// Read-only views for status and route listings (`Status::bgp`,
/// `Op::BgpRoutes`): nothing here changes the service.
impl Bgp {
    /// The routes we originate (withdrawn entries not yet purged included:
    /// [`routerd_bgp::rib::LocalEntry::withdrawn`]).
    pub fn local_routes(&self) -> &LocalRoutes {
        &self.local
    }

    /// The address and name of the peer a RIB route came from.
    pub fn peer_of(&self, peer: PeerId) -> Option<(Ipv4Addr, &config_schema::Name)> {
        self.peers.get(usize::from(peer.0)).map(|p| (p.addr, &p.name))
    }

    /// Type-2 routes we advertise in `vni` now (not withdrawn).
    pub fn local_mac_count(&self, vni: u32) -> usize {
        (0..self.local.len())
            .filter(|&i| {
                matches!(self.local.entry_at(i),
                    Some((routerd_bgp::rib::LocalKey::Mac { vni: v, .. }, e)) if *v == vni && !e.withdrawn)
            })
            .count()
    }
}

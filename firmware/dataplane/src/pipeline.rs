//! The packet pipeline: one entry point per received frame, one for timers.
//!
//! Stages (PIPELINE.md has the full picture):
//!
//! 1. **L2 intake** — Ethernet check, own-MAC reflections, bridging of a
//!    VXLAN segment's LAN port (learn, encapsulate or flood), MAC filter.
//! 2. **ARP** — own addresses, proxy-ARP for active remote claims on their
//!    capture port, conflict detection, probes, rate limit, neighbour learning.
//! 3. **IPv4 intake** — header checks, own traffic (ICMP echo on LAN ports and
//!    from the tunnel; WireGuard and VXLAN on the WAN; nothing else).
//! 4. **Tunnel ingress** — the tunnel opens the datagram; cryptokey routing
//!    check (here, not in the tunnel); local or forward.
//! 5. **Forwarding** — claim /32 → connected → peer prefixes → default;
//!    loop guard; TTL/ICMP time exceeded; MTU/ICMP frag-needed; MSS clamp on
//!    tunnel crossings; per-claim counters.
//! 6. **Egress** — tunnel seal + underlay UDP/IPv4, or VXLAN encapsulation,
//!    then Ethernet with neighbour resolution (pending queue, ARP request).
//!
//! One file per stage, all `impl Core`: `ethernet.rs` (1, and Ethernet
//! output), `arp.rs` (2), `ipv4.rs` (3 — one path for packets from a port
//! and out of the tunnel), `tunnel.rs` (4 and the seal of 6), `forward.rs`
//! (5), `segment.rs` (VXLAN), `timers.rs` (`poll`), `carry.rs` (what an
//! apply keeps). This file holds the public API, the shared state and the
//! header writers. IPv6 is meant to arrive as new files beside `ipv4.rs`.
//!
//! Contract: [`Dataplane::process`] never panics on any frame content and
//! never allocates; a frame that is not transmitted (in place or as extra
//! frames through [`Transmit`]) increments exactly one [`DropReason`].
//!
//! Choices worth knowing (each is tested):
//! * **ARP probes** (sender IP 0.0.0.0) for a claimed address are *not*
//!   answered. A probe means a host is about to configure that address here;
//!   in a same-subnet move that host is the address's new home, and a reply
//!   would make it believe the address is taken (RFC 5227) and refuse it.
//!   The probe is counted on the claim (`probes_seen`); the host's following
//!   announcement (sender IP = the address) puts the claim in conflict. Linux
//!   proxy-ARP behaves the same (it answers probes only for local addresses).
//! * **Conflict**: an ARP request or reply whose sender IP is a proxy-ARP
//!   claim's address from a MAC that is not ours, on any port, puts the claim
//!   in conflict: no more ARP replies or gratuitous ARPs until the live host
//!   has been silent for the claim's hold time *and* ARP probes for the
//!   address go unanswered ([`crate::claims`]; the operator may ask for the
//!   probe early with [`Dataplane::probe_claim`]). A new claim probes the
//!   same way before its first capture. Frames still arriving for the
//!   address (stale caches) keep being delivered, never black-holed.
//! * **The WAN answers nothing but WireGuard** (and VXLAN from configured
//!   VTEPs, and ARP for its own address, without which nothing works):
//!   ICMP echo to the WAN address is dropped (`WanNotWireguard`). Echo is
//!   answered on LAN addresses and from inside the tunnel.
//! * **Loop guard**: any packet that came out of the tunnel and would be
//!   routed into the tunnel again (any peer) is dropped (`TunnelLoop`).
//! * **No fragmentation**: DF packets too big for the next hop get ICMP
//!   fragmentation-needed with the next-hop MTU; non-DF ones are dropped
//!   (`TooBigNoDf`). VXLAN never fragments (`VxlanOversize`).

use core::net::Ipv4Addr;

use heapless::Vec;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Icmpv4Message, IpAddress, IpProtocol, Ipv4Packet, UdpPacket,
};

use crate::buf::{FrameBuf, BUF_SIZE, HEADROOM};
use crate::checksum;
use crate::claims::{self, ClaimEvent, ClaimEventKind, ClaimRuntime, ClaimState, Evidence, ProbeReason};
use crate::config::Prefix;
use crate::config::{Capture, ClaimSide, Config, ConfigError, Mac, Medium, PeerId, PortId, PortRole, MAX_CLAIMS};
use crate::conntrack::{Conntrack, Dir};
use crate::counters::{ClaimCounters, Counters, DropReason};
use crate::fdb::{Fdb, Learn, Location};
use crate::firewall::FirewallCounters;
use crate::mss::{self, Clamp};
use crate::neighbor::{Lookup, NeighborCache, PendingQueue};
use crate::ratelimit::TokenBucket;
use crate::route::{NextHop, RouteError, RouteOrigin, RouteTable, RunRoute};
use crate::time::Instant;
use crate::tunnel::{Endpoint, Opened, Sealed, Tunnel, TUNNEL_HEADROOM, TUNNEL_TAILROOM};
use crate::vxlan::{self, VxlanPacket, VxlanRepr};

mod arp;
mod carry;
mod ethernet;
mod forward;
mod ipv4;
mod nat;
mod segment;
mod timers;
mod tunnel;

use ipv4::V4;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
const ARP_FRAME_LEN: usize = 42;
const MIN_FRAME: usize = 60;
/// IPv4 + UDP + VXLAN in front of the inner frame.
const VXLAN_OVERHEAD: usize = IPV4_LEN + UDP_LEN + vxlan::HEADER_LEN;
/// Underlay headers the dataplane puts in front of a tunnel datagram.
const UNDERLAY_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
/// TTL of packets the box originates.
const OWN_TTL: u8 = 64;
/// Tunnel timer datagrams handled per `poll` (bounds the loop).
const TUNNEL_POLL_BUDGET: usize = 32;

/// Where extra frames go: frames beyond the one transmitted in place
/// (VXLAN flood copies, frames released from the pending queue, gratuitous
/// ARPs, ARP retries, tunnel timer datagrams) — and traffic that ends on the
/// box, for the services layer.
pub trait Transmit {
    /// Queue a copy of `frame` on `port`. Return false when no transmit slot
    /// is free (the dataplane counts `TxFull`).
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool;

    /// Send `payload` as one UDP datagram to `to` from the socket of `port`,
    /// a [`Medium::Datagram`] port (the tunnel's datagrams on routerd-host's
    /// WAN). False when it cannot (the dataplane counts `TxFull`); a
    /// transmitter without datagram ports never can.
    fn send_datagram(&mut self, port: PortId, to: Endpoint, payload: &[u8]) -> bool {
        let _ = (port, to, payload);
        false
    }

    /// Hand an IPv4 packet addressed to the box, which the policy admits
    /// (ICMP from a LAN or the tunnel), to the services layer. Without one,
    /// nothing ends on the box (`local_unhandled`).
    fn local(&mut self, from: LocalFrom, packet: &[u8]) -> Local {
        let _ = (from, packet);
        Local::NoService
    }

    /// Hand an Ethernet frame received on a DHCP port (`PortConfig::dhcp`)
    /// to the box's DHCP client: a DHCP reply (UDP 67 → 68, consumed) or a
    /// copy of an ARP reply to the port's MAC (which the dataplane also
    /// learns from). Without a client: `NoService`.
    fn stack(&mut self, port: PortId, frame: &[u8]) -> Local {
        let _ = (port, frame);
        Local::NoService
    }
}

/// Where a packet for the box came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFrom {
    /// Received on this port.
    Port(PortId),
    /// Out of the tunnel, from this peer (already checked against its
    /// allowed prefixes).
    Tunnel(PeerId),
}

/// What the services layer did with a packet for the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Queued for a service.
    Taken,
    /// The services' queue is full (`local_queue_full`).
    Full,
    /// No service for it (`local_unhandled`).
    NoService,
}

/// What to do with the frame buffer after [`Dataplane::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the buffer's current frame (`FrameBuf::frame`) on this port.
    Transmit(PortId),
    /// Nothing to transmit from this buffer (dropped and counted, answered
    /// through [`Transmit`], or parked until ARP resolves).
    Consumed,
}

/// A claim as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimStatus {
    /// The claimed address.
    pub address: Ipv4Addr,
    /// Its state.
    pub state: ClaimState,
    /// Its counters.
    pub counters: ClaimCounters,
    /// The MAC of the live host last seen using the address (conflicts).
    pub conflict_mac: Option<[u8; 6]>,
    /// When that host was last heard.
    pub heard: Option<Instant>,
    /// When the claim's timers next act: the next probe or its verdict,
    /// the probe after a conflict's hold, the next gratuitous ARP.
    pub next_action: Option<Instant>,
}

/// Why [`Dataplane::probe_claim`] did not start a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeRefused {
    /// No claim with that index.
    Unknown,
    /// Only proxy-ARP claims answer ARP, so only they can be in conflict.
    NotProxyArp,
    /// The claim is not in conflict (it is in this state).
    NotInConflict(ClaimState),
}

/// Claim transitions kept until the control plane collects them.
pub const CLAIM_EVENTS: usize = 16;
/// BGP peers whose TCP the box admits ([`Dataplane::set_bgp_peers`]).
pub const MAX_BGP_PEERS: usize = 16;
/// VTEPs per segment the control plane may add (EVPN type-3 routes): a
/// Proxmox cluster's nodes over all sites.
pub const MAX_LEARNED_VTEPS: usize = 32;
/// BGP's TCP port.
const BGP_PORT: u16 = 179;

/// Where a packet entered the IPv4 stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingress {
    Port(PortId),
    Tunnel(PeerId),
}

/// How a VTEP is reached.
#[derive(Debug, Clone, Copy)]
enum Underlay {
    Tunnel(PeerId),
    Wan,
}

/// The dataplane. Large (pending-queue frames live inline): put it in a
/// `static` or a `Box` on the host, not on a small stack.
pub struct Dataplane {
    core: Core,
    scratch: [u8; BUF_SIZE],
}

struct Core {
    cfg: Config,
    wan: PortId,
    routes: RouteTable,
    claims: Vec<ClaimRuntime, MAX_CLAIMS>,
    neighbors: NeighborCache,
    pending: PendingQueue,
    fdb: Fdb,
    counters: Counters,
    icmp_bucket: TokenBucket,
    ident: u16,
    events: heapless::Deque<ClaimEvent, CLAIM_EVENTS>,
    /// The UDP port of the box's DNS query in flight: answers from port 53
    /// to it are the only UDP the box takes besides WireGuard and VXLAN.
    resolver_port: Option<u16>,
    /// The configured BGP peers: TCP from them to or from port 179, on a
    /// LAN port or out of the tunnel, is the only TCP the box takes.
    bgp_peers: Vec<Ipv4Addr, MAX_BGP_PEERS>,
    /// Per segment (by index), the VTEPs the control plane learned (EVPN
    /// type-3 routes), flooded to and accepted besides the configured ones.
    learned_vteps: [Vec<Ipv4Addr, MAX_LEARNED_VTEPS>; crate::config::MAX_SEGMENTS],
    /// Connection tracking (SNAT and the firewall; idle without them).
    ct: Conntrack,
    /// Decisions per firewall rule and policy.
    fw_counters: FirewallCounters,
}

impl Dataplane {
    /// Build a dataplane with empty tables. Proxy-ARP claims start by
    /// probing for a live host on their address (from `now`); the others
    /// are active at once. An apply builds one and then takes the running
    /// one's state with [`Dataplane::carry_from`].
    pub fn new(cfg: Config, now: Instant) -> Result<Dataplane, ConfigError> {
        cfg.validate()?;
        let wan = cfg.wan().ok_or(ConfigError::WanCount)?;
        let t = cfg.timing;
        let mut claims = Vec::new();
        for c in cfg.claims.iter() {
            let _ = claims.push(ClaimRuntime::new(c, &t, now));
        }
        let core = Core {
            routes: RouteTable::build(&cfg),
            wan,
            claims,
            neighbors: NeighborCache::default(),
            pending: PendingQueue::default(),
            fdb: Fdb::new(t.fdb_age_ms),
            counters: Counters::default(),
            icmp_bucket: TokenBucket::new(t.icmp_rate, t.icmp_burst, now),
            ident: 0,
            events: heapless::Deque::new(),
            resolver_port: None,
            bgp_peers: Vec::new(),
            learned_vteps: Default::default(),
            ct: Conntrack::new(t.conntrack),
            fw_counters: FirewallCounters::default(),
            cfg,
        };
        Ok(Dataplane { core, scratch: [0; BUF_SIZE] })
    }

    /// Handle one received frame. On [`Verdict::Transmit`] the caller sends
    /// `buf.frame()` on the returned port; extra frames went to `tx`.
    /// For a batch, call this per frame and [`Dataplane::poll`] once after.
    pub fn process<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        port: PortId,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let v = self.core.intake(now, port, buf, tunnel, tx, &mut self.scratch);
        if let Verdict::Transmit(p) = v {
            self.core.count_tx(p);
        }
        v
    }

    /// [`Dataplane::process`], then the frame left in `buf` goes out through
    /// `tx` too; a full transmit ring is counted (`tx_full`, per port) like
    /// any other lost frame. What a platform loop calls per received frame.
    pub fn process_and_transmit<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        port: PortId,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let v = self.core.intake(now, port, buf, tunnel, tx, &mut self.scratch);
        if let Verdict::Transmit(p) = v {
            send_extra(&mut self.core.counters, tx, p, buf.frame());
        }
        v
    }

    /// [`Dataplane::process_and_transmit`] for a frame received on a port of
    /// [`Medium::Datagram`]: with `from`, the UDP payload of a datagram sent
    /// to the tunnel's listen port from `from` (the kernel took the IP and
    /// UDP headers off and checked them), which goes straight to the tunnel;
    /// without, a bare IPv4 packet from the port's IP side, which enters the
    /// IPv4 stage like one from an Ethernet port.
    pub fn process_datagram_and_transmit<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        port: PortId,
        from: Option<Endpoint>,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let v = self.core.datagram_intake(now, port, from, buf, tunnel, tx);
        if let Verdict::Transmit(p) = v {
            send_extra(&mut self.core.counters, tx, p, buf.frame());
        }
        v
    }

    /// Run timers: gratuitous ARPs, ARP retries and give-ups, neighbour and
    /// FDB aging, the tunnel's own timers. Frames go to `tx`.
    pub fn poll<T: Tunnel + ?Sized, X: Transmit + ?Sized>(&mut self, now: Instant, tunnel: &mut T, tx: &mut X) {
        self.core.poll_claims(now, tx, &mut self.scratch);
        self.core.poll_neighbors(now, tx, &mut self.scratch);
        self.core.fdb.expire(now);
        self.core.ct.sweep(now, nat::CT_SWEEP_BUDGET);
        for _ in 0..TUNNEL_POLL_BUDGET {
            let Some(area) = self.scratch.get_mut(HEADROOM..) else { break };
            let Some((range, to)) = tunnel.poll(now, area) else { break };
            let (start, end) = (range.start.saturating_add(HEADROOM), range.end.saturating_add(HEADROOM));
            let mut fb = match FrameBuf::new(&mut self.scratch, 0, 0) {
                Ok(fb) => fb,
                Err(_) => break,
            };
            if fb.set_range(start, end).is_err() {
                self.core.counters.drop(DropReason::TunnelBadOutput);
                continue;
            }
            self.core.counters.tunnel_control += 1;
            if let Verdict::Transmit(p) = self.core.udp_to_endpoint(now, to, &mut fb, tx) {
                let Core { counters, .. } = &mut self.core;
                send_extra(counters, tx, p, fb.frame());
            }
        }
    }

    /// When [`Dataplane::poll`] next needs to run (`None`: only when frames arrive).
    pub fn poll_at<T: Tunnel + ?Sized>(&self, tunnel: &T) -> Option<Instant> {
        let c = &self.core;
        let t = c.cfg.timing;
        let claims = c.cfg.claims.iter().zip(c.claims.iter()).filter_map(|(cfg, rt)| rt.deadline(cfg, &t)).min();
        [claims, c.neighbors.next_deadline(), c.fdb.next_deadline(), tunnel.poll_at()].into_iter().flatten().min()
    }

    /// Box-wide counters.
    pub fn counters(&self) -> &Counters {
        &self.core.counters
    }

    /// The connection-tracking table (flows, counters).
    pub fn conntrack(&self) -> &Conntrack {
        &self.core.ct
    }

    /// Decisions per firewall rule and policy (for a drop rule: its drops).
    pub fn firewall_counters(&self) -> &FirewallCounters {
        &self.core.fw_counters
    }

    /// One claim (by its index in the configuration).
    pub fn claim_status(&self, claim: usize) -> Option<ClaimStatus> {
        let cfg = self.core.cfg.claims.get(claim)?;
        let rt = self.core.claims.get(claim)?;
        Some(ClaimStatus {
            address: cfg.address,
            state: rt.state,
            counters: rt.counters,
            conflict_mac: rt.conflict_mac,
            heard: rt.heard,
            next_action: rt.deadline(cfg, &self.core.cfg.timing),
        })
    }

    /// Every claim, in configuration order.
    pub fn claims(&self) -> impl Iterator<Item = ClaimStatus> + '_ {
        (0..self.core.claims.len()).filter_map(|i| self.claim_status(i))
    }

    /// Enable or disable a claim. Enabling starts it like a new claim
    /// (a proxy-ARP claim probes before it captures). Returns false for an
    /// unknown claim.
    pub fn set_claim_enabled(&mut self, now: Instant, claim: usize, enabled: bool) -> bool {
        let t = self.core.cfg.timing;
        let (Some(cfg), Some(rt)) = (self.core.cfg.claims.get(claim), self.core.claims.get_mut(claim)) else {
            return false;
        };
        if enabled {
            if rt.state == ClaimState::Disabled {
                rt.start(cfg, &t, now);
            }
        } else {
            rt.state = ClaimState::Disabled;
        }
        true
    }

    /// The operator believes the live host behind a conflict is gone: probe
    /// the address now instead of after the hold time. The claim captures
    /// again only if nobody answers ([`Dataplane::take_event`] tells).
    pub fn probe_claim(&mut self, now: Instant, claim: usize) -> Result<(), ProbeRefused> {
        let t = self.core.cfg.timing;
        let (Some(cfg), Some(rt)) = (self.core.cfg.claims.get(claim), self.core.claims.get_mut(claim)) else {
            return Err(ProbeRefused::Unknown);
        };
        if !cfg.is_proxy_arp() {
            return Err(ProbeRefused::NotProxyArp);
        }
        if rt.state != ClaimState::InConflict {
            return Err(ProbeRefused::NotInConflict(rt.state));
        }
        rt.probe(ProbeReason::Operator, &t, now);
        Ok(())
    }

    /// The oldest claim transition not yet collected (conflicts, probes and
    /// their outcome, with reasons), for the platform to log.
    pub fn take_event(&mut self) -> Option<ClaimEvent> {
        self.core.events.pop_front()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.core.cfg
    }

    /// The ARP cache.
    pub fn neighbors(&self) -> &NeighborCache {
        &self.core.neighbors
    }

    /// Frames waiting for ARP.
    pub fn pending_frames(&self) -> usize {
        self.core.pending.len()
    }

    /// The VXLAN FDB.
    pub fn fdb(&self) -> &Fdb {
        &self.core.fdb
    }

    /// Set the VTEPs of segment `si` learned by the control plane (BGP
    /// EVPN type-3 routes): flooded to and accepted besides the configured
    /// ones. The box's own tunnel address and duplicates are skipped;
    /// beyond [`MAX_LEARNED_VTEPS`] the rest are refused. Returns how many
    /// were refused (0 for an unknown segment too: it has none).
    pub fn set_learned_vteps(&mut self, si: usize, vteps: &[Ipv4Addr]) -> usize {
        let own = self.core.cfg.tunnel.address;
        let Some(slot) = self.core.learned_vteps.get_mut(si).filter(|_| si < self.core.cfg.segments.len()) else { return 0 };
        slot.clear();
        let mut refused = 0;
        for v in vteps {
            if Some(*v) == own || v.is_unspecified() || slot.contains(v) {
                continue;
            }
            if slot.push(*v).is_err() {
                refused += 1;
            }
        }
        refused
    }

    /// The VTEPs of segment `si` learned by the control plane.
    pub fn learned_vteps(&self, si: usize) -> &[Ipv4Addr] {
        self.core.learned_vteps.get(si).map_or(&[], |v| v.as_slice())
    }

    /// Make `macs` exactly the installed FDB entries of segment `si` (EVPN
    /// type-2 routes: MAC behind VTEP; never aged, see [`crate::fdb`]).
    /// Returns how many could not be installed (table full of live
    /// entries; frames to them are flooded).
    pub fn set_installed_macs(&mut self, si: usize, macs: &[(Mac, Ipv4Addr)], now: Instant) -> usize {
        let Ok(seg) = u8::try_from(si) else { return 0 };
        if si >= self.core.cfg.segments.len() {
            return 0;
        }
        let fdb = &mut self.core.fdb;
        fdb.retain_installed(seg, |m, v| macs.contains(&(m, v)));
        macs.iter().filter(|(m, v)| fdb.set_installed(seg, *m, *v, now) == Learn::Full).count()
    }

    /// The live MACs learned on segment `si`'s LAN port.
    pub fn local_macs(&self, si: usize, now: Instant) -> impl Iterator<Item = Mac> + '_ {
        self.core.fdb.local_macs(u8::try_from(si).unwrap_or(u8::MAX), now)
    }

    /// Install a route learned at run time (a DHCP lease's default route,
    /// a BGP prefix); one with the same prefix and origin is replaced. The
    /// next hop must exist in the running configuration. See
    /// [`crate::route`] for how it competes with configured routes.
    pub fn add_route(&mut self, route: RunRoute) -> Result<(), RouteError> {
        let Core { routes, cfg, .. } = &mut self.core;
        routes.add_run_route(cfg, route)
    }

    /// Withdraw a run-time route; true if it was there.
    pub fn remove_route(&mut self, prefix: Prefix, origin: RouteOrigin) -> bool {
        self.core.routes.remove_run_route(prefix, origin)
    }

    /// Withdraw every run-time route of `origin`; how many went.
    pub fn clear_routes(&mut self, origin: RouteOrigin) -> usize {
        self.core.routes.clear_run_routes(origin)
    }

    /// The routes learned at run time.
    pub fn run_routes(&self) -> &[RunRoute] {
        self.core.routes.run_routes()
    }

    /// Admit DNS answers (UDP from port 53 to one of the box's addresses)
    /// to `port` as traffic for the box, on any port and out of the tunnel;
    /// `None` closes it again. The resolver opens one port per query.
    pub fn set_resolver_port(&mut self, port: Option<u16>) {
        self.core.resolver_port = port;
    }

    /// Admit TCP to the box from `peers` when either port is 179 (BGP), on
    /// LAN ports and out of the tunnel — never on the WAN. Any other TCP to
    /// the box stays a counted drop (`local_unhandled`). Peers beyond
    /// [`MAX_BGP_PEERS`] are ignored.
    pub fn set_bgp_peers(&mut self, peers: &[Ipv4Addr]) {
        self.core.bgp_peers = peers.iter().copied().take(MAX_BGP_PEERS).collect();
    }

    /// The BGP peers admitted (see [`Dataplane::set_bgp_peers`]).
    pub fn bgp_peers(&self) -> &[Ipv4Addr] {
        &self.core.bgp_peers
    }

    /// The source address for a packet the box originates to `dst`: the
    /// address of the port its route leaves by, or the tunnel's address
    /// for the tunnel (`None`: no route, or no address there).
    pub fn source_for(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let c = &self.core;
        match c.routes.lookup(&c.cfg, dst, |i| c.claim_enabled(i)).map(|d| d.hop)? {
            NextHop::Tunnel(_) => c.cfg.tunnel.address,
            NextHop::Port { port, .. } => c.cfg.ports.get(port.index())?.address,
        }
    }

    /// Send an IPv4 packet the box itself originates (a service's answer):
    /// routed like any other — through the tunnel, or out of a port with
    /// ARP resolution — and transmitted through `tx`. False when it was
    /// dropped (counted) or parked for ARP.
    pub fn send_local<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        packet: &[u8],
        tunnel: &mut T,
        tx: &mut X,
    ) -> bool {
        let Some(dst) = self.scratch.get_mut(HEADROOM..HEADROOM + packet.len()) else {
            self.core.counters.drop(DropReason::NoHeadroom);
            return false;
        };
        dst.copy_from_slice(packet);
        let Ok(mut fb) = FrameBuf::new(&mut self.scratch, HEADROOM, packet.len()) else { return false };
        self.core.counters.local_sent += 1;
        match self.core.send_own(now, &mut fb, tunnel, tx) {
            Verdict::Transmit(p) => {
                send_extra(&mut self.core.counters, tx, p, fb.frame());
                true
            }
            Verdict::Consumed => false,
        }
    }
}

fn send_extra<X: Transmit + ?Sized>(counters: &mut Counters, tx: &mut X, port: PortId, frame: &[u8]) {
    let sent = tx.send(port, frame);
    count_sent(counters, port, sent);
}

/// One frame or datagram handed to `port`'s device: sent, or lost to a full
/// ring (counted per port too).
fn count_sent(counters: &mut Counters, port: PortId, sent: bool) {
    if sent {
        if let Some(c) = counters.tx_frames.get_mut(port.index()) {
            *c += 1;
        }
    } else {
        counters.drop(DropReason::TxFull);
        if let Some(c) = counters.tx_full.get_mut(port.index()) {
            *c = c.saturating_add(1);
        }
    }
}

/// Keep a claim transition for the control plane; count it when the queue
/// is full (nobody collects).
fn record(events: &mut heapless::Deque<ClaimEvent, CLAIM_EVENTS>, counters: &mut Counters, e: ClaimEvent) {
    if events.push_back(e).is_err() {
        counters.claim_events_lost = counters.claim_events_lost.saturating_add(1);
    }
}

/// Write a 42-byte Ethernet+ARP frame at the start of `f` (len ≥ 42).
#[allow(clippy::too_many_arguments)]
fn write_arp(f: &mut [u8], eth_dst: Mac, op: ArpOperation, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) {
    let Some(f) = f.get_mut(..ARP_FRAME_LEN) else { return };
    let mut eth = EthernetFrame::new_unchecked(&mut *f);
    eth.set_dst_addr(eth_dst);
    eth.set_src_addr(sha);
    eth.set_ethertype(EthernetProtocol::Arp);
    let repr = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: sha,
        source_protocol_addr: spa,
        target_hardware_addr: tha,
        target_protocol_addr: tpa,
    };
    if let Some(a) = f.get_mut(ETH_LEN..) {
        repr.emit(&mut ArpPacket::new_unchecked(a));
    }
}

/// Make `buf` a minimum-size frame holding an ARP message.
#[allow(clippy::too_many_arguments)]
fn arp_in_place(buf: &mut FrameBuf<'_>, eth_dst: Mac, op: ArpOperation, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> bool {
    let head = buf.head();
    let cap = buf.capacity();
    let start = if head + MIN_FRAME <= cap { head } else { 0 };
    if start + MIN_FRAME > cap || buf.set_range(start, start + MIN_FRAME).is_err() {
        return false;
    }
    let f = buf.frame_mut();
    f.fill(0);
    write_arp(f, eth_dst, op, sha, spa, tha, tpa);
    true
}

/// Write a 20-byte IPv4 header (no options) at the start of `h`.
#[allow(clippy::too_many_arguments)]
fn write_ipv4(h: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, payload_len: usize, ttl: u8, df: bool, ident: u16) -> bool {
    let Some(total) = payload_len.checked_add(IPV4_LEN).and_then(|t| u16::try_from(t).ok()) else {
        return false;
    };
    let Some(h) = h.get_mut(..IPV4_LEN) else { return false };
    let mut p = Ipv4Packet::new_unchecked(h);
    p.set_version(4);
    p.set_header_len(IPV4_LEN as u8);
    p.set_dscp(0);
    p.set_ecn(0);
    p.set_total_len(total);
    p.set_ident(ident);
    p.clear_flags();
    p.set_frag_offset(0);
    p.set_dont_frag(df);
    p.set_hop_limit(ttl);
    p.set_next_header(proto);
    p.set_src_addr(src);
    p.set_dst_addr(dst);
    p.fill_checksum();
    true
}

/// Clamp the MSS of a TCP SYN inside an IPv4 packet, if it is one.
fn clamp_ipv4(ip: &mut [u8], limit: u16) -> Clamp {
    let Ok(mut p) = Ipv4Packet::new_checked(ip) else { return Clamp::Malformed };
    if p.next_header() != IpProtocol::Tcp || p.frag_offset() != 0 {
        return Clamp::NotSyn;
    }
    mss::clamp(p.payload_mut(), limit)
}

/// Clamp the MSS of a TCP SYN inside an Ethernet frame (VXLAN payloads).
fn clamp_frame(frame: &mut [u8], limit: u16) -> Clamp {
    let Ok(eth) = EthernetFrame::new_checked(&*frame) else { return Clamp::Malformed };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Clamp::NotSyn;
    }
    match frame.get_mut(ETH_LEN..) {
        Some(ip) => clamp_ipv4(ip, limit),
        None => Clamp::Malformed,
    }
}

impl Core {
    fn drop(&mut self, reason: DropReason) -> Verdict {
        self.counters.drop(reason);
        Verdict::Consumed
    }

    fn count_tx(&mut self, port: PortId) {
        if let Some(c) = self.counters.tx_frames.get_mut(port.index()) {
            *c += 1;
        }
    }

    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    fn is_our_mac(&self, mac: Mac) -> bool {
        self.cfg.ports.iter().any(|p| p.mac == mac)
    }

    fn claim_enabled(&self, i: usize) -> bool {
        self.claims.get(i).is_some_and(|c| c.state != ClaimState::Disabled)
    }

    /// The proxy-ARP claim for `addr`, if there is one.
    fn proxy_claim(&self, addr: Ipv4Addr) -> Option<usize> {
        let ci = self.routes.claim(addr)?;
        self.cfg.claims.get(ci).filter(|c| c.is_proxy_arp()).map(|_| ci)
    }

    /// A frame showed a live host using claim `ci`'s address. True when the
    /// claim is enabled (the evidence counts).
    fn live_host(&mut self, now: Instant, ci: usize, mac: Mac, port: PortId, evidence: Evidence) -> bool {
        let Some(rt) = self.claims.get_mut(ci) else { return false };
        if rt.state == ClaimState::Disabled {
            return false;
        }
        if let Some(kind) = rt.live_host(mac, port, evidence, now) {
            self.record(now, ci, kind);
        }
        true
    }

    fn record(&mut self, now: Instant, ci: usize, kind: ClaimEventKind) {
        let Some(address) = self.cfg.claims.get(ci).map(|c| c.address) else { return };
        record(&mut self.events, &mut self.counters, ClaimEvent { address, at: now, kind });
    }

    fn claim_counters(&mut self, i: Option<usize>) -> Option<&mut ClaimCounters> {
        i.and_then(|i| self.claims.get_mut(i)).map(|c| &mut c.counters)
    }

    /// The WAN's address: `None` while a DHCP port has no lease.
    fn wan_address(&self) -> Option<Ipv4Addr> {
        self.cfg.ports.get(self.wan.index()).and_then(|p| p.address)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::segment::flow_hash;
    use super::*;

    #[test]
    fn dataplane_fits_in_a_small_static() {
        // Documented in PIPELINE.md; the image builds one on its stack
        // before boxing it (the flow table is on the heap).
        let size = core::mem::size_of::<Dataplane>();
        std::println!("size_of::<Dataplane>() = {size}");
        assert!(size < 64 * 1024, "{size}");
    }

    #[test]
    fn flow_hash_depends_on_flow_only() {
        let mut a = [0u8; 60];
        a[12] = 0x08;
        let b = a;
        assert_eq!(flow_hash(&a), flow_hash(&b));
        let mut c = a;
        c[0] = 1;
        assert_ne!(flow_hash(&a), flow_hash(&c));
        assert_eq!(flow_hash(&[]), flow_hash(&[]));
    }

    #[test]
    fn clamp_frame_ignores_non_ipv4() {
        let mut f = [0u8; 60];
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(clamp_frame(&mut f, 1000), Clamp::NotSyn);
        assert_eq!(clamp_frame(&mut f[..10], 1000), Clamp::Malformed);
    }
}

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
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, IpAddress,
    IpProtocol, Ipv4Packet, UdpPacket,
};

use crate::buf::{FrameBuf, BUF_SIZE, HEADROOM};
use crate::checksum;
use crate::claims::{self, ClaimEvent, ClaimEventKind, ClaimRuntime, ClaimState, Evidence, ProbeReason};
use crate::config::{Capture, ClaimSide, Config, ConfigError, Mac, PeerId, PortId, PortRole, MAX_CLAIMS};
use crate::counters::{ClaimCounters, Counters, DropReason};
use crate::fdb::{Fdb, Learn, Location};
use crate::mss::{self, Clamp};
use crate::neighbor::{Lookup, NeighborCache, PendingQueue};
use crate::ratelimit::TokenBucket;
use crate::route::{NextHop, RouteTable};
use crate::time::Instant;
use crate::tunnel::{Endpoint, Opened, Sealed, Tunnel, TUNNEL_HEADROOM, TUNNEL_TAILROOM};
use crate::vxlan::{self, VxlanPacket, VxlanRepr};

mod carry;

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
/// ARPs, ARP retries, tunnel timer datagrams).
pub trait Transmit {
    /// Queue a copy of `frame` on `port`. Return false when no transmit slot
    /// is free (the dataplane counts `TxFull`).
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool;
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

    /// Run timers: gratuitous ARPs, ARP retries and give-ups, neighbour and
    /// FDB aging, the tunnel's own timers. Frames go to `tx`.
    pub fn poll<T: Tunnel + ?Sized, X: Transmit + ?Sized>(&mut self, now: Instant, tunnel: &mut T, tx: &mut X) {
        self.core.poll_claims(now, tx, &mut self.scratch);
        self.core.poll_neighbors(now, tx, &mut self.scratch);
        self.core.fdb.expire(now);
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
            if let Verdict::Transmit(p) = self.core.udp_to_endpoint(now, to, &mut fb) {
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
}

fn send_extra<X: Transmit + ?Sized>(counters: &mut Counters, tx: &mut X, port: PortId, frame: &[u8]) {
    if tx.send(port, frame) {
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

/// FNV-1a over the inner flow: MACs, EtherType, and for IPv4 the addresses,
/// protocol and (first fragment only) the L4 ports. Same flow → same VXLAN
/// source port, so underlay ECMP keeps a flow in order.
fn flow_hash(frame: &[u8]) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u32::from(*x);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    eat(frame.get(..ETH_LEN).unwrap_or(frame));
    if let Some(ip) = frame.get(ETH_LEN..) {
        if let Ok(p) = Ipv4Packet::new_checked(ip) {
            eat(&p.src_addr().octets());
            eat(&p.dst_addr().octets());
            eat(&[u8::from(p.next_header())]);
            if p.frag_offset() == 0 && matches!(p.next_header(), IpProtocol::Tcp | IpProtocol::Udp) {
                eat(p.payload().get(..4).unwrap_or(&[]));
            }
        }
    }
    (h ^ (h >> 16)) as u16
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

    fn wan_address(&self) -> Ipv4Addr {
        self.cfg.ports.get(self.wan.index()).map_or(Ipv4Addr::UNSPECIFIED, |p| p.address)
    }

    // ---------------------------------------------------------------- L2

    fn intake<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        port: PortId,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        scratch: &mut [u8; BUF_SIZE],
    ) -> Verdict {
        let Some(pc) = self.cfg.ports.get(port.index()) else {
            return self.drop(DropReason::UnknownPort);
        };
        let port_mac = pc.mac;
        if let Some(c) = self.counters.rx_frames.get_mut(port.index()) {
            *c += 1;
        }
        let Ok(eth) = EthernetFrame::new_checked(buf.frame()) else {
            return self.drop(DropReason::EthernetTruncated);
        };
        let (dst, src, ty) = (eth.dst_addr(), eth.src_addr(), eth.ethertype());
        if self.is_our_mac(src) {
            return self.drop(DropReason::OwnSourceMac);
        }
        let segment = self.cfg.segments.iter().position(|s| s.port == port);
        if let Some(si) = segment {
            if src.is_unicast() && self.fdb.learn(si as u8, src, Location::Local, now) == Learn::Full {
                self.counters.fdb_full += 1;
            }
            if dst != port_mac {
                if dst.is_unicast() {
                    return match self.fdb.lookup(si as u8, dst, now) {
                        Some(Location::Remote(vtep)) => self.vxlan_encap(now, si, vtep, buf, tunnel, tx),
                        Some(Location::Local) => self.drop(DropReason::BridgeLocalDestination),
                        None => self.flood(now, si, buf, tunnel, tx, scratch, true),
                    };
                }
                self.flood(now, si, buf, tunnel, tx, scratch, false);
                if !dst.is_broadcast() {
                    return Verdict::Consumed;
                }
            }
        } else if dst != port_mac {
            if dst.is_multicast() && !dst.is_broadcast() {
                return self.drop(DropReason::Multicast);
            }
            if !dst.is_broadcast() {
                return self.drop(DropReason::NotOurMac);
            }
        }
        match ty {
            EthernetProtocol::Arp => self.arp(now, port, buf, tx),
            EthernetProtocol::Ipv4 => {
                if buf.pull_head(ETH_LEN).is_err() {
                    return self.drop(DropReason::EthernetTruncated);
                }
                self.ipv4_from_port(now, port, src, buf, tunnel, tx)
            }
            _ => self.drop(DropReason::UnsupportedEthertype),
        }
    }

    // --------------------------------------------------------------- ARP

    fn arp<X: Transmit + ?Sized>(&mut self, now: Instant, port: PortId, buf: &mut FrameBuf<'_>, tx: &mut X) -> Verdict {
        let Some(pc) = self.cfg.ports.get(port.index()) else {
            return self.drop(DropReason::UnknownPort);
        };
        let (port_mac, port_addr, subnet) = (pc.mac, pc.address, pc.subnet());
        let repr = match buf.frame().get(ETH_LEN..).map(ArpPacket::new_checked) {
            Some(Ok(p)) => ArpRepr::parse(&p),
            _ => return self.drop(DropReason::ArpMalformed),
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        }) = repr
        else {
            return self.drop(DropReason::ArpMalformed);
        };
        if !sha.is_unicast() {
            return self.drop(DropReason::ArpBadSender);
        }
        if self.is_our_mac(sha) {
            return self.drop(DropReason::OwnSourceMac);
        }

        // A live host using a proxy-ARP claim's address: never hijack it.
        // (A live host asking for the box's own address is still answered.)
        if !spa.is_unspecified() {
            if let Some(ci) = self.proxy_claim(spa) {
                let evidence = if operation == ArpOperation::Reply { Evidence::ArpReply } else { Evidence::ArpRequest };
                let asks_us = operation == ArpOperation::Request && tpa == port_addr;
                if self.live_host(now, ci, sha, port, evidence) && !asks_us {
                    return self.drop(DropReason::ArpConflict);
                }
            }
        }

        // Neighbour learning: replies and requests refresh known entries;
        // a request aimed at us creates one (we are about to talk to it).
        let mut learned = false;
        if !spa.is_unspecified() && subnet.contains(spa) {
            let create = operation == ArpOperation::Request && tpa == port_addr;
            let t = self.cfg.timing;
            if self.neighbors.learn(port, spa, sha, now, t.arp_reachable_ms, create) {
                learned = true;
                self.counters.arp_learned += 1;
                let Core { pending, counters, .. } = self;
                pending.release(port, spa, |f| {
                    if let Some(d) = f.get_mut(..6) {
                        d.copy_from_slice(sha.as_bytes());
                    }
                    send_extra(counters, tx, port, f);
                });
            }
        }

        match operation {
            ArpOperation::Request => {
                if tpa == port_addr {
                    if !arp_in_place(buf, sha, ArpOperation::Reply, port_mac, port_addr, sha, spa) {
                        return self.drop(DropReason::NoHeadroom);
                    }
                    self.counters.arp_replies_own += 1;
                    return Verdict::Transmit(port);
                }
                let Some(ci) = self.routes.claim(tpa) else {
                    return self.drop(DropReason::ArpNotOurs);
                };
                let captures_here = self.cfg.claims.get(ci).is_some_and(|c| {
                    matches!(c.side, ClaimSide::Remote { capture: Capture::ProxyArp, port: p, .. } if p == port)
                });
                if !captures_here {
                    return self.drop(DropReason::ArpNotOurs);
                }
                if spa.is_unspecified() {
                    // Another host probing for the address: while the box
                    // probes or holds a conflict, that host wants it too.
                    self.live_host(now, ci, sha, port, Evidence::ArpProbe);
                    if let Some(rt) = self.claims.get_mut(ci) {
                        rt.counters.probes_seen += 1;
                    }
                    return self.drop(DropReason::ArpProbeForClaim);
                }
                let Some(rt) = self.claims.get_mut(ci) else {
                    return self.drop(DropReason::ArpNotOurs);
                };
                match rt.state {
                    ClaimState::Disabled => return self.drop(DropReason::ArpClaimInactive),
                    ClaimState::InConflict => return self.drop(DropReason::ArpClaimInConflict),
                    ClaimState::Probing => return self.drop(DropReason::ArpClaimProbing),
                    ClaimState::Active => {}
                }
                if !rt.replies.take(now) {
                    rt.counters.arp_replies_rate_limited += 1;
                    return self.drop(DropReason::ArpReplyRateLimited);
                }
                rt.counters.arp_replies += 1;
                if !arp_in_place(buf, sha, ArpOperation::Reply, port_mac, tpa, sha, spa) {
                    return self.drop(DropReason::NoHeadroom);
                }
                Verdict::Transmit(port)
            }
            ArpOperation::Reply if learned => Verdict::Consumed,
            ArpOperation::Reply => self.drop(DropReason::ArpUnsolicited),
            _ => self.drop(DropReason::ArpMalformed),
        }
    }

    // -------------------------------------------------------- IPv4 intake

    /// Common IPv4 checks; trims link padding. Returns (src, dst, proto, fragment).
    fn ipv4_checks(&mut self, buf: &mut FrameBuf<'_>) -> Result<(Ipv4Addr, Ipv4Addr, IpProtocol, bool), DropReason> {
        let ip = Ipv4Packet::new_checked(buf.frame()).map_err(|_| DropReason::Ipv4Malformed)?;
        if ip.version() != 4 {
            return Err(DropReason::Ipv4Malformed);
        }
        if !ip.verify_checksum() {
            return Err(DropReason::Ipv4BadChecksum);
        }
        let r = (ip.src_addr(), ip.dst_addr(), ip.next_header(), ip.more_frags() || ip.frag_offset() != 0);
        let total = usize::from(ip.total_len());
        buf.truncate(total);
        let src = r.0;
        if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || self.cfg.is_own_address(src) {
            return Err(DropReason::Ipv4BadSource);
        }
        Ok(r)
    }

    fn is_broadcast(&self, dst: Ipv4Addr) -> bool {
        dst.is_broadcast()
            || dst.is_multicast()
            || self.cfg.ports.iter().any(|p| {
                let s = p.subnet();
                s.prefix_len() < 31 && dst.to_bits() == s.addr().to_bits() | !crate::config::mask(s.prefix_len())
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn ipv4_from_port<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        port: PortId,
        src_mac: Mac,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let (src, dst, proto, fragment) = match self.ipv4_checks(buf) {
            Ok(r) => r,
            Err(reason) => return self.drop(reason),
        };
        let Some(pc) = self.cfg.ports.get(port.index()) else {
            return self.drop(DropReason::UnknownPort);
        };
        let (role, port_addr) = (pc.role, pc.address);
        if role == PortRole::Lan {
            // A host on the LAN sending from a proxy-ARP claim's address is
            // using it: evidence like an ARP from it (the packet itself is
            // still forwarded).
            if let Some(ci) = self.proxy_claim(src) {
                self.live_host(now, ci, src_mac, port, Evidence::Ipv4);
            }
        }
        if self.cfg.is_own_address(dst) {
            if role == PortRole::Wan {
                // Nothing but WireGuard (and VXLAN from configured VTEPs)
                // is answered on the WAN.
                if dst != port_addr || fragment || proto != IpProtocol::Udp {
                    return self.drop(DropReason::WanNotWireguard);
                }
                return self.udp_to_box(now, src, buf, tunnel, tx, false);
            }
            if fragment {
                return self.drop(DropReason::LocalFragment);
            }
            if proto == IpProtocol::Icmp {
                return self.echo(now, buf, tunnel, tx);
            }
            return self.drop(DropReason::LocalUnhandled);
        }
        if self.is_broadcast(dst) {
            return self.drop(DropReason::Ipv4Broadcast);
        }
        self.forward(now, Ingress::Port(port), buf, tunnel, tx)
    }

    /// UDP addressed to the box: WireGuard (WAN only) or VXLAN.
    fn udp_to_box<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        from_tunnel: bool,
    ) -> Verdict {
        let unhandled = if from_tunnel { DropReason::LocalUnhandled } else { DropReason::WanNotWireguard };
        let Ok(ip) = Ipv4Packet::new_checked(buf.frame()) else {
            return self.drop(DropReason::Ipv4Malformed);
        };
        let (ip_src, ip_dst, hl) = (ip.src_addr(), ip.dst_addr(), usize::from(ip.header_len()));
        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
            return self.drop(DropReason::UdpMalformed);
        };
        if !udp.verify_checksum(&IpAddress::Ipv4(ip_src), &IpAddress::Ipv4(ip_dst)) {
            return self.drop(DropReason::UdpMalformed);
        }
        let (sport, dport, ulen) = (udp.src_port(), udp.dst_port(), usize::from(udp.len()));
        // Narrow the buffer to the UDP payload.
        let start = buf.head() + hl + UDP_LEN;
        let end = buf.head() + hl + ulen;
        if buf.set_range(start, end).is_err() {
            return self.drop(DropReason::UdpMalformed);
        }
        if !from_tunnel && dport == self.cfg.tunnel.listen_port {
            return self.tunnel_in(now, Endpoint { addr: src, port: sport }, buf, tunnel, tx);
        }
        if self.cfg.segments.iter().any(|s| s.udp_port == dport) {
            return self.vxlan_decap(now, src, dport, buf);
        }
        self.drop(unhandled)
    }

    /// ICMP echo request to the box → reply in place.
    fn echo<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let Ok(mut ip) = Ipv4Packet::new_checked(buf.frame_mut()) else {
            return self.drop(DropReason::Ipv4Malformed);
        };
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        {
            let Ok(mut icmp) = Icmpv4Packet::new_checked(ip.payload_mut()) else {
                return self.drop(DropReason::IcmpMalformed);
            };
            if !icmp.verify_checksum() {
                return self.drop(DropReason::IcmpMalformed);
            }
            if icmp.msg_type() != Icmpv4Message::EchoRequest {
                return self.drop(DropReason::LocalUnhandled);
            }
            let old = u16::from(u8::from(Icmpv4Message::EchoRequest)) << 8 | u16::from(icmp.msg_code());
            let new = u16::from(u8::from(Icmpv4Message::EchoReply)) << 8 | u16::from(icmp.msg_code());
            icmp.set_msg_type(Icmpv4Message::EchoReply);
            let c = icmp.checksum();
            icmp.set_checksum(checksum::adjust(c, old, new, false));
        }
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_hop_limit(OWN_TTL);
        ip.fill_checksum();
        self.counters.echo_replies += 1;
        self.send_own(now, buf, tunnel, tx)
    }

    // ---------------------------------------------------- tunnel ingress

    fn tunnel_in<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        from: Endpoint,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        self.counters.tunnel_rx += 1;
        let datagram = buf.head()..buf.head() + buf.len();
        match tunnel.open(now, from, buf.raw_mut(), datagram) {
            Opened::Packet { peer, range } => {
                if buf.set_range(range.start, range.end).is_err() {
                    return self.drop(DropReason::TunnelBadOutput);
                }
                self.tunnel_packet(now, peer, buf, tunnel, tx)
            }
            Opened::Reply { range, to } => {
                if buf.set_range(range.start, range.end).is_err() {
                    return self.drop(DropReason::TunnelBadOutput);
                }
                self.counters.tunnel_control += 1;
                self.udp_to_endpoint(now, to, buf)
            }
            Opened::Consumed => {
                self.counters.tunnel_control += 1;
                Verdict::Consumed
            }
            Opened::Rejected => self.drop(DropReason::TunnelRejected),
        }
    }

    fn tunnel_packet<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        peer: PeerId,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let (src, dst, proto, fragment) = match self.ipv4_checks(buf) {
            Ok(r) => r,
            Err(reason) => return self.drop(reason),
        };
        let Some(pcfg) = self.cfg.peer(peer) else {
            return self.drop(DropReason::TunnelBadOutput);
        };
        // Cryptokey routing: the inner source must belong to the peer.
        if !pcfg.allowed.iter().any(|a| a.contains(src)) {
            return self.drop(DropReason::TunnelSpoofedSource);
        }
        if self.cfg.is_own_address(dst) {
            if fragment {
                return self.drop(DropReason::LocalFragment);
            }
            return match proto {
                IpProtocol::Icmp => self.echo(now, buf, tunnel, tx),
                IpProtocol::Udp => self.udp_to_box(now, src, buf, tunnel, tx, true),
                _ => self.drop(DropReason::LocalUnhandled),
            };
        }
        if self.is_broadcast(dst) {
            return self.drop(DropReason::Ipv4Broadcast);
        }
        self.forward(now, Ingress::Tunnel(peer), buf, tunnel, tx)
    }

    // -------------------------------------------------------- forwarding

    fn forward<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        ingress: Ingress,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let Ok(ip) = Ipv4Packet::new_checked(buf.frame()) else {
            return self.drop(DropReason::Ipv4Malformed);
        };
        let (src, dst, ttl, total, df) =
            (ip.src_addr(), ip.dst_addr(), ip.hop_limit(), usize::from(ip.total_len()), ip.dont_frag());
        let Some(decision) = self.routes.lookup(&self.cfg, dst, |i| self.claim_enabled(i)) else {
            return self.drop(DropReason::NoRoute);
        };
        let to_tunnel = matches!(decision.hop, NextHop::Tunnel(_));
        let from_tunnel = matches!(ingress, Ingress::Tunnel(_));
        if from_tunnel && to_tunnel {
            if let Some(c) = self.claim_counters(decision.claim) {
                c.loops += 1;
            }
            return self.drop(DropReason::TunnelLoop);
        }
        if ttl <= 1 {
            self.counters.drop(DropReason::TtlExpired);
            return self.icmp_error(now, ingress, buf, tunnel, tx, Icmpv4Message::TimeExceeded, 0, 0);
        }
        let mtu = match decision.hop {
            NextHop::Tunnel(_) => self.cfg.tunnel.mtu,
            NextHop::Port { port, .. } => self.cfg.ports.get(port.index()).map_or(0, |p| p.mtu),
        };
        if total > usize::from(mtu) {
            if df {
                self.counters.drop(DropReason::FragmentationNeeded);
                // Code 4: fragmentation needed and DF set (RFC 1191 next-hop MTU).
                return self.icmp_error(now, ingress, buf, tunnel, tx, Icmpv4Message::DstUnreachable, 4, mtu);
            }
            return self.drop(DropReason::TooBigNoDf);
        }
        let src_claim = self.routes.claim(src);
        let dst_claim = decision.claim.or_else(|| self.routes.claim(dst));
        {
            let Ok(mut ip) = Ipv4Packet::new_checked(buf.frame_mut()) else {
                return self.drop(DropReason::Ipv4Malformed);
            };
            // TTL is the high byte of the word at offset 8 (TTL | protocol).
            let proto = u8::from(ip.next_header());
            let old = u16::from(ttl) << 8 | u16::from(proto);
            let new = u16::from(ttl - 1) << 8 | u16::from(proto);
            ip.set_hop_limit(ttl - 1);
            let c = ip.checksum();
            ip.set_checksum(checksum::adjust(c, old, new, false));
        }
        if from_tunnel || to_tunnel {
            // Path MSS: tunnel MTU − 40, lowered further by claim overrides.
            let mut limit = self.cfg.tunnel.mtu.saturating_sub(40);
            for ci in [src_claim, dst_claim].into_iter().flatten() {
                if let Some(m) = self.cfg.claims.get(ci).and_then(|c| c.mss) {
                    limit = limit.min(m);
                }
            }
            let clamped = matches!(clamp_ipv4(buf.frame_mut(), limit), Clamp::Clamped { .. });
            if clamped {
                self.counters.syns_clamped += 1;
            }
            for ci in [src_claim, dst_claim] {
                if let Some(c) = self.claim_counters(ci) {
                    if clamped {
                        c.syns_clamped += 1;
                    }
                    if to_tunnel {
                        c.to_tunnel.add(total);
                    } else {
                        c.from_tunnel.add(total);
                    }
                }
            }
        }
        self.counters.forwarded += 1;
        match decision.hop {
            NextHop::Tunnel(peer) => self.tunnel_out(now, peer, buf, tunnel),
            NextHop::Port { port, gateway } => self.ip_out(now, port, gateway.unwrap_or(dst), buf),
        }
    }

    /// Send a packet the box originated (echo reply, ICMP error) by route.
    fn send_own<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        _tx: &mut X,
    ) -> Verdict {
        let Ok(ip) = Ipv4Packet::new_checked(buf.frame()) else {
            return self.drop(DropReason::Ipv4Malformed);
        };
        let dst = ip.dst_addr();
        match self.routes.lookup(&self.cfg, dst, |i| self.claim_enabled(i)).map(|d| d.hop) {
            Some(NextHop::Tunnel(peer)) => self.tunnel_out(now, peer, buf, tunnel),
            Some(NextHop::Port { port, gateway }) => self.ip_out(now, port, gateway.unwrap_or(dst), buf),
            None => self.drop(DropReason::NoRoute),
        }
    }

    /// Turn the IPv4 packet in `buf` into an ICMP error about it, in place,
    /// and send it back to its source (rate-limited). The caller has already
    /// counted the drop of the original packet.
    #[allow(clippy::too_many_arguments)]
    fn icmp_error<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        ingress: Ingress,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        kind: Icmpv4Message,
        code: u8,
        mtu: u16,
    ) -> Verdict {
        let Ok(ip) = Ipv4Packet::new_checked(buf.frame()) else { return Verdict::Consumed };
        let (orig_src, hl) = (ip.src_addr(), usize::from(ip.header_len()));
        if ip.frag_offset() != 0 || self.is_broadcast(orig_src) {
            return Verdict::Consumed;
        }
        // Never an error about an error (RFC 1812 §4.3.2.7).
        if ip.next_header() == IpProtocol::Icmp {
            let t = ip.payload().first().copied().map(Icmpv4Message::from);
            if !matches!(t, Some(Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply)) {
                return Verdict::Consumed;
            }
        }
        if !self.icmp_bucket.take(now) {
            self.counters.icmp_errors_rate_limited += 1;
            return Verdict::Consumed;
        }
        let our_addr = match ingress {
            Ingress::Port(p) => self.cfg.ports.get(p.index()).map_or(Ipv4Addr::UNSPECIFIED, |p| p.address),
            Ingress::Tunnel(_) => self.cfg.tunnel.address.unwrap_or_else(|| self.wan_address()),
        };
        // Quote the header and 8 bytes of payload (RFC 792).
        let quote = buf.len().min(hl + 8);
        buf.truncate(quote);
        let ident = self.next_ident();
        let Ok(f) = buf.push_head(IPV4_LEN + 8) else {
            return Verdict::Consumed;
        };
        if !write_ipv4(f, our_addr, orig_src, IpProtocol::Icmp, 8 + quote, OWN_TTL, false, ident) {
            return Verdict::Consumed;
        }
        if let Some(icmp) = f.get_mut(IPV4_LEN..) {
            if let Some(h) = icmp.get_mut(..8) {
                let [m0, m1] = mtu.to_be_bytes();
                h.copy_from_slice(&[u8::from(kind), code, 0, 0, 0, 0, m0, m1]);
            }
            let c = checksum::internet(icmp);
            if let Some(h) = icmp.get_mut(2..4) {
                h.copy_from_slice(&c.to_be_bytes());
            }
        }
        self.counters.icmp_errors_sent += 1;
        self.send_own(now, buf, tunnel, tx)
    }

    // ------------------------------------------------------------ egress

    /// Seal the IPv4 packet in `buf` for `peer` and wrap it for the WAN.
    fn tunnel_out<T: Tunnel + ?Sized>(&mut self, now: Instant, peer: PeerId, buf: &mut FrameBuf<'_>, tunnel: &mut T) -> Verdict {
        // Make sure the tunnel and the underlay headers fit in front.
        let front = UNDERLAY_LEN + TUNNEL_HEADROOM;
        if buf.push_head(front).is_err() || buf.pull_head(front).is_err() {
            return self.drop(DropReason::NoHeadroom);
        }
        if buf.capacity() - (buf.head() + buf.len()) < TUNNEL_TAILROOM {
            return self.drop(DropReason::NoHeadroom);
        }
        let inner = buf.head()..buf.head() + buf.len();
        match tunnel.seal(now, peer, buf.raw_mut(), inner) {
            Sealed::Datagram { range, to } => {
                if buf.set_range(range.start, range.end).is_err() {
                    return self.drop(DropReason::TunnelBadOutput);
                }
                self.counters.tunnel_tx += 1;
                self.udp_to_endpoint(now, to, buf)
            }
            Sealed::Held => {
                self.counters.tunnel_held += 1;
                Verdict::Consumed
            }
            Sealed::Failed => self.drop(DropReason::TunnelEncapFailed),
        }
    }

    /// Wrap the UDP payload in `buf` from the WireGuard port to `to` and send
    /// it on the WAN.
    fn udp_to_endpoint(&mut self, now: Instant, to: Endpoint, buf: &mut FrameBuf<'_>) -> Verdict {
        let wan = self.wan;
        let Some(pc) = self.cfg.ports.get(wan.index()) else {
            return self.drop(DropReason::NoRoute);
        };
        let (src, subnet, gateway) = (pc.address, pc.subnet(), pc.gateway);
        let next_hop = if subnet.contains(to.addr) {
            to.addr
        } else if let Some(gw) = gateway {
            gw
        } else {
            return self.drop(DropReason::NoRoute);
        };
        let payload_len = buf.len();
        let Some(udp_len) = payload_len.checked_add(UDP_LEN).and_then(|l| u16::try_from(l).ok()) else {
            return self.drop(DropReason::TunnelBadOutput);
        };
        let listen = self.cfg.tunnel.listen_port;
        let ident = self.next_ident();
        let Ok(f) = buf.push_head(IPV4_LEN + UDP_LEN) else {
            return self.drop(DropReason::NoHeadroom);
        };
        if !write_ipv4(f, src, to.addr, IpProtocol::Udp, usize::from(udp_len), OWN_TTL, false, ident) {
            return self.drop(DropReason::TunnelBadOutput);
        }
        if let Some(u) = f.get_mut(IPV4_LEN..) {
            let mut udp = UdpPacket::new_unchecked(u);
            udp.set_src_port(listen);
            udp.set_dst_port(to.port);
            udp.set_len(udp_len);
            udp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(to.addr));
        }
        self.ip_out(now, wan, next_hop, buf)
    }

    /// Put an Ethernet header on the IPv4 packet in `buf` for `next_hop` on
    /// `port`, resolving its MAC (parking the frame if needed).
    fn ip_out(&mut self, now: Instant, port: PortId, next_hop: Ipv4Addr, buf: &mut FrameBuf<'_>) -> Verdict {
        let Some(pc) = self.cfg.ports.get(port.index()) else {
            return self.drop(DropReason::NoRoute);
        };
        let (port_mac, port_addr) = (pc.mac, pc.address);
        let t = self.cfg.timing;
        let Ok(f) = buf.push_head(ETH_LEN) else {
            return self.drop(DropReason::NoHeadroom);
        };
        let mut eth = EthernetFrame::new_unchecked(f);
        eth.set_src_addr(port_mac);
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let (lookup, evicted) = self.neighbors.resolve(port, next_hop, now, t.arp_attempts, t.arp_retry_ms);
        if evicted {
            self.counters.arp_evictions += 1;
        }
        match lookup {
            Lookup::Hit(mac) => {
                eth.set_dst_addr(mac);
                Verdict::Transmit(port)
            }
            Lookup::Pending => {
                if self.pending.push(port, next_hop, buf.frame()) {
                    Verdict::Consumed
                } else {
                    self.drop(DropReason::PendingQueueFull)
                }
            }
            Lookup::Started => {
                if !self.pending.push(port, next_hop, buf.frame()) {
                    self.counters.drop(DropReason::PendingQueueFull);
                }
                // The frame is parked (or dropped): reuse the buffer for the request.
                if !arp_in_place(buf, Mac::BROADCAST, ArpOperation::Request, port_mac, port_addr, Mac([0; 6]), next_hop) {
                    return Verdict::Consumed;
                }
                self.counters.arp_requests_sent += 1;
                Verdict::Transmit(port)
            }
            Lookup::Full => self.drop(DropReason::ArpCacheFull),
        }
    }

    // ------------------------------------------------------------- VXLAN

    fn underlay_for(&self, vtep: Ipv4Addr) -> Underlay {
        match self.routes.lookup_routes(vtep) {
            Some(NextHop::Tunnel(peer)) => Underlay::Tunnel(peer),
            _ => Underlay::Wan,
        }
    }

    /// Encapsulate the Ethernet frame in `buf` for `vtep` on segment `si`.
    fn vxlan_encap<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        si: usize,
        vtep: Ipv4Addr,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        _tx: &mut X,
    ) -> Verdict {
        let Some(seg) = self.cfg.segments.get(si) else {
            return self.drop(DropReason::VxlanUnknownVni);
        };
        let (vni, udp_port, seg_mss) = (seg.vni, seg.udp_port, seg.mss);
        let underlay = self.underlay_for(vtep);
        let (src, mtu) = match underlay {
            Underlay::Tunnel(_) => (self.cfg.tunnel.address.unwrap_or(Ipv4Addr::UNSPECIFIED), self.cfg.tunnel.mtu),
            Underlay::Wan => (self.wan_address(), self.cfg.ports.get(self.wan.index()).map_or(0, |p| p.mtu)),
        };
        let inner_len = buf.len();
        if inner_len + VXLAN_OVERHEAD > usize::from(mtu) {
            return self.drop(DropReason::VxlanOversize);
        }
        let limit = seg_mss.unwrap_or(mtu.saturating_sub((VXLAN_OVERHEAD + ETH_LEN) as u16 + 40));
        if matches!(clamp_frame(buf.frame_mut(), limit), Clamp::Clamped { .. }) {
            self.counters.syns_clamped += 1;
        }
        let sport = 49152 | (flow_hash(buf.frame()) & 0x3fff);
        let ident = self.next_ident();
        let Ok(f) = buf.push_head(VXLAN_OVERHEAD) else {
            return self.drop(DropReason::NoHeadroom);
        };
        let udp_len = UDP_LEN + vxlan::HEADER_LEN + inner_len;
        // VTEPs must not fragment (RFC 7348 §4.3): DF set.
        if !write_ipv4(f, src, vtep, IpProtocol::Udp, udp_len, OWN_TTL, true, ident) {
            return self.drop(DropReason::VxlanOversize);
        }
        if let Some(u) = f.get_mut(IPV4_LEN..IPV4_LEN + UDP_LEN) {
            let mut udp = UdpPacket::new_unchecked(u);
            udp.set_src_port(sport);
            udp.set_dst_port(udp_port);
            udp.set_len(udp_len as u16);
            // RFC 7348: the UDP checksum SHOULD be zero over IPv4.
            udp.set_checksum(0);
        }
        if let Some(v) = f.get_mut(IPV4_LEN + UDP_LEN..VXLAN_OVERHEAD) {
            VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(v));
        }
        self.counters.vxlan_encap += 1;
        match underlay {
            Underlay::Tunnel(peer) => self.tunnel_out(now, peer, buf, tunnel),
            Underlay::Wan => {
                let wan = self.wan;
                let next_hop = match self.cfg.ports.get(wan.index()) {
                    Some(p) if p.subnet().contains(vtep) => vtep,
                    Some(p) => match p.gateway {
                        Some(gw) => gw,
                        None => return self.drop(DropReason::NoRoute),
                    },
                    None => return self.drop(DropReason::NoRoute),
                };
                self.ip_out(now, wan, next_hop, buf)
            }
        }
    }

    /// Send copies of the frame in `buf` to every VTEP of segment `si`; the
    /// last copy is encapsulated in place when `last_in_place`.
    #[allow(clippy::too_many_arguments)]
    fn flood<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        si: usize,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        scratch: &mut [u8; BUF_SIZE],
        last_in_place: bool,
    ) -> Verdict {
        let n = self.cfg.segments.get(si).map_or(0, |s| s.vteps.len());
        self.counters.vxlan_floods += 1;
        for k in 0..n {
            let Some(vtep) = self.cfg.segments.get(si).and_then(|s| s.vteps.get(k)).copied() else { break };
            if last_in_place && k + 1 == n {
                return self.vxlan_encap(now, si, vtep, buf, tunnel, tx);
            }
            let len = buf.len();
            let Some(dst) = scratch.get_mut(HEADROOM..HEADROOM + len) else {
                self.counters.drop(DropReason::NoHeadroom);
                continue;
            };
            dst.copy_from_slice(buf.frame());
            let Ok(mut copy) = FrameBuf::new(&mut scratch[..], HEADROOM, len) else { continue };
            if let Verdict::Transmit(p) = self.vxlan_encap(now, si, vtep, &mut copy, tunnel, tx) {
                send_extra(&mut self.counters, tx, p, copy.frame());
            }
        }
        Verdict::Consumed
    }

    /// The UDP payload in `buf` arrived from `outer_src` on `dport`.
    fn vxlan_decap(&mut self, now: Instant, outer_src: Ipv4Addr, dport: u16, buf: &mut FrameBuf<'_>) -> Verdict {
        let repr = match VxlanPacket::new_checked(buf.frame()) {
            Ok(p) => VxlanRepr::parse(&p),
            Err(_) => return self.drop(DropReason::VxlanMalformed),
        };
        let vni = match repr {
            Ok(r) => r.vni,
            Err(vxlan::ParseError::NoVniFlag) => return self.drop(DropReason::VxlanNoIFlag),
            Err(vxlan::ParseError::Truncated) => return self.drop(DropReason::VxlanMalformed),
        };
        let Some(si) = self.cfg.segments.iter().position(|s| s.vni == vni && s.udp_port == dport) else {
            return self.drop(DropReason::VxlanUnknownVni);
        };
        let Some(seg) = self.cfg.segments.get(si) else {
            return self.drop(DropReason::VxlanUnknownVni);
        };
        if !seg.vteps.contains(&outer_src) {
            return self.drop(DropReason::VxlanUnknownVtep);
        }
        let (port, seg_mss) = (seg.port, seg.mss);
        if buf.pull_head(vxlan::HEADER_LEN).is_err() {
            return self.drop(DropReason::VxlanMalformed);
        }
        let Ok(eth) = EthernetFrame::new_checked(buf.frame()) else {
            return self.drop(DropReason::VxlanMalformed);
        };
        let src = eth.src_addr();
        if !src.is_unicast() {
            return self.drop(DropReason::VxlanMalformed);
        }
        if self.is_our_mac(src) {
            return self.drop(DropReason::OwnSourceMac);
        }
        let port_mtu = self.cfg.ports.get(port.index()).map_or(0, |p| p.mtu);
        if buf.len() > usize::from(port_mtu) + ETH_LEN {
            return self.drop(DropReason::VxlanOversize);
        }
        if self.fdb.learn(si as u8, src, Location::Remote(outer_src), now) == Learn::Full {
            self.counters.fdb_full += 1;
        }
        let underlay_mtu = match self.underlay_for(outer_src) {
            Underlay::Tunnel(_) => self.cfg.tunnel.mtu,
            Underlay::Wan => self.cfg.ports.get(self.wan.index()).map_or(0, |p| p.mtu),
        };
        let limit = seg_mss.unwrap_or(underlay_mtu.saturating_sub((VXLAN_OVERHEAD + ETH_LEN) as u16 + 40));
        if matches!(clamp_frame(buf.frame_mut(), limit), Clamp::Clamped { .. }) {
            self.counters.syns_clamped += 1;
        }
        self.counters.vxlan_decap += 1;
        Verdict::Transmit(port)
    }

    // ------------------------------------------------------------ timers

    /// Claim timers: probes and their verdicts, re-probes after a
    /// conflict's hold, gratuitous ARPs.
    fn poll_claims<X: Transmit + ?Sized>(&mut self, now: Instant, tx: &mut X, scratch: &mut [u8; BUF_SIZE]) {
        let t = self.cfg.timing;
        let Core { cfg, claims, counters, events, .. } = self;
        for (c, rt) in cfg.claims.iter().zip(claims.iter_mut()) {
            let (mut send, event) = rt.poll(c, &t, now);
            if let Some(kind) = event {
                record(events, counters, ClaimEvent { address: c.address, at: now, kind });
                if matches!(kind, ClaimEventKind::Captured { .. }) {
                    // Announce at once: the first gratuitous ARP is due now.
                    send = rt.poll(c, &t, now).0;
                }
            }
            let ClaimSide::Remote { capture: Capture::ProxyArp, port, .. } = c.side else { continue };
            let Some(pc) = cfg.ports.get(port.index()) else { continue };
            let Some(f) = scratch.get_mut(..MIN_FRAME) else { continue };
            f.fill(0);
            match send {
                // RFC 5227 probe: sender address 0.0.0.0, so no host's
                // cache learns anything from it.
                claims::Send::Probe => {
                    write_arp(f, Mac::BROADCAST, ArpOperation::Request, pc.mac, Ipv4Addr::UNSPECIFIED, Mac([0; 6]), c.address)
                }
                // Gratuitous ARP: a request with sender = target = the claim.
                claims::Send::Garp => write_arp(f, Mac::BROADCAST, ArpOperation::Request, pc.mac, c.address, Mac([0; 6]), c.address),
                claims::Send::Nothing => continue,
            }
            send_extra(counters, tx, port, f);
        }
    }

    fn poll_neighbors<X: Transmit + ?Sized>(&mut self, now: Instant, tx: &mut X, scratch: &mut [u8; BUF_SIZE]) {
        let retry_ms = self.cfg.timing.arp_retry_ms;
        let Core { cfg, neighbors, pending, counters, .. } = self;
        let mut failed: Vec<(PortId, Ipv4Addr), { crate::neighbor::NEIGHBORS }> = Vec::new();
        neighbors.poll(
            now,
            retry_ms,
            |port, ip| {
                let Some(pc) = cfg.ports.get(port.index()) else { return };
                let Some(f) = scratch.get_mut(..MIN_FRAME) else { return };
                f.fill(0);
                write_arp(f, Mac::BROADCAST, ArpOperation::Request, pc.mac, pc.address, Mac([0; 6]), ip);
                counters.arp_requests_sent += 1;
                send_extra(counters, tx, port, f);
            },
            |port, ip| {
                let _ = failed.push((port, ip));
            },
        );
        for (port, ip) in failed {
            pending.release(port, ip, |_| counters.drop(DropReason::ArpResolutionFailed));
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn dataplane_fits_in_a_small_static() {
        // Documented in PIPELINE.md; the image keeps it in a static.
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

//! The EVPN routing tables: what peers told us ([`Rib`], an Adj-RIB-In per
//! peer in shared fixed-capacity tables) and what we originate
//! ([`LocalRoutes`]).
//!
//! **Received routes** are keyed as RFC 7432 keys them, plus the peer:
//! type 2 by (RD, Ethernet tag, MAC, IP), type 3 by (RD, Ethernet tag,
//! originator), type 5 by (RD, Ethernet tag, prefix). A re-announcement
//! replaces the entry (implicit withdraw); [`Rib::withdraw_peer`] drops a
//! peer's routes when its session goes down.
//!
//! A route belongs to VNI `v` when its label says so (type 2: label 1;
//! type 3: the PMSI tunnel label, or without a PMSI attribute the RT's
//! value) **and** it carries the route target `ASN:v` — or no route target
//! at all. That is what FRR's automatic RTs (`ASN:VNI`) produce; a route
//! whose RTs name other VNIs only is not imported (counted, and any earlier
//! entry with its key dropped).
//!
//! Queries: [`Rib::flood_list`] (the VTEPs to replicate BUM traffic of a
//! VNI to: the originators of its type-3 routes with ingress replication),
//! [`Rib::remote_macs`] / [`Rib::remote_mac`] (MAC → VTEP, the highest
//! MAC-mobility sequence winning, then the lowest VTEP address, then the
//! lowest peer). The best route of each MAC is marked when one of its
//! routes changes (a scan of the table per change), so a VNI's list is one
//! pass and a MAC lookup one scan; the flood list is O(n²) over the type-3
//! routes. Meant for reprogramming after a change, not per packet.
//!
//! **Local routes**: a type 3 per VNI and a type 2 per local MAC. Every
//! change takes a new generation number; a removed route stays as a
//! withdrawn entry (tombstone) until every session has sent the withdrawal
//! ([`LocalRoutes::purge`]). Sessions walk the table in insertion order
//! ([`crate::Session::advertise`]).

use crate::evpn::{Esi, EvpnRoute, ImetRoute, Mac, MacIpRoute, Rd, RouteTarget, PMSI_INGRESS_REPLICATION};
use crate::session::{RouteAttrs, RouteSink};
use crate::PeerId;
use core::net::{IpAddr, Ipv4Addr};
use heapless::index_map::FnvIndexMap;

/// Peers the RIB can hold routes of.
pub const MAX_PEERS: usize = 16;
/// Remote type-2 routes (all peers together).
pub const MAX_REMOTE_MACS: usize = 4096;
/// Remote type-3 routes.
pub const MAX_REMOTE_IMETS: usize = 1024;
/// Remote type-5 routes.
pub const MAX_REMOTE_PREFIXES: usize = 1024;
/// Local routes, withdrawn ones not yet purged included.
pub const MAX_LOCAL: usize = 4096;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// Key of a received type-2 route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub peer: u8,
    pub rd: Rd,
    pub eth_tag: u32,
    pub mac: Mac,
    pub ip: Option<IpAddr>,
}

/// A received type-2 route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacEntry {
    pub vni: u32,
    /// The remote VTEP (MP_REACH next hop).
    pub vtep: Ipv4Addr,
    /// MAC mobility sequence (0 without the community).
    pub seq: u32,
    pub sticky: bool,
    /// Whether this is the best route of its (VNI, MAC), the one
    /// [`Rib::remote_macs`] gives. Kept by the Rib on every change, so the
    /// query is one pass over the table instead of a pass per route.
    pub best: bool,
}

/// Key of a received type-3 route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImetKey {
    pub peer: u8,
    pub rd: Rd,
    pub eth_tag: u32,
    pub originator: Ipv4Addr,
}

/// A received type-3 route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImetEntry {
    pub vni: u32,
}

/// Key of a received type-5 route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixKey {
    pub peer: u8,
    pub rd: Rd,
    pub eth_tag: u32,
    pub prefix: IpAddr,
    pub prefix_len: u8,
}

/// A received type-5 route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixEntry {
    /// The L3 VNI.
    pub vni: u32,
    pub gateway: IpAddr,
    pub vtep: Ipv4Addr,
}

/// What the RIB refused or ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RibCounters {
    pub macs_full: u64,
    pub imets_full: u64,
    pub prefixes_full: u64,
    /// Routes whose RTs name none of their VNI (not imported).
    pub not_imported: u64,
    /// Type-3 routes with a tunnel type other than ingress replication, or
    /// an IPv6 originator.
    pub unsupported_tunnel: u64,
    /// Types 1, 4 and unknown ones.
    pub other_types: u64,
    /// Routes from a peer id ≥ [`MAX_PEERS`].
    pub bad_peer: u64,
}

/// A remote MAC: behind which VTEP, with which mobility sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteMac {
    pub mac: Mac,
    pub vtep: Ipv4Addr,
    pub seq: u32,
    pub sticky: bool,
    pub peer: PeerId,
}

/// The Adj-RIB-In of every peer. Large (≈ 340 KiB: 52 bytes of key and
/// entry per type-2 route plus the index): keep it in a `static` or a `Box`.
#[derive(Debug)]
pub struct Rib {
    asn: u32,
    macs: FnvIndexMap<MacKey, MacEntry, MAX_REMOTE_MACS>,
    imets: FnvIndexMap<ImetKey, ImetEntry, MAX_REMOTE_IMETS>,
    prefixes: FnvIndexMap<PrefixKey, PrefixEntry, MAX_REMOTE_PREFIXES>,
    counters: RibCounters,
}

/// Whether the RTs allow `vni`: one of them is `asn:vni`, or there are none.
fn imports(attrs: &RouteAttrs<'_>, asn: u32, vni: u32) -> bool {
    let mut any = false;
    for rt in attrs.ext_communities.route_targets() {
        if rt.matches(asn, vni) {
            return true;
        }
        any = true;
    }
    !any
}

impl Rib {
    /// An empty RIB for a zone in `asn` (for RT matching).
    pub const fn new(asn: u32) -> Rib {
        Rib {
            asn,
            macs: FnvIndexMap::new(),
            imets: FnvIndexMap::new(),
            prefixes: FnvIndexMap::new(),
            counters: RibCounters {
                macs_full: 0,
                imets_full: 0,
                prefixes_full: 0,
                not_imported: 0,
                unsupported_tunnel: 0,
                other_types: 0,
                bad_peer: 0,
            },
        }
    }

    pub fn counters(&self) -> &RibCounters {
        &self.counters
    }

    /// The sink a peer's session puts its routes into.
    pub fn sink(&mut self, peer: PeerId) -> PeerSink<'_> {
        PeerSink { rib: self, peer }
    }

    /// Drop every route of `peer`; returns how many.
    pub fn withdraw_peer(&mut self, peer: PeerId) -> usize {
        let before = self.len();
        self.macs.retain(|k, _| k.peer != peer.0);
        // A best route that went leaves its MAC with none marked: only MACs
        // with a route not marked best can be such (rare: a MAC announced by
        // more than one peer), so this stays cheap.
        let mut i = 0;
        while let Some((k, e)) = self.macs.get_index(i) {
            let (vni, mac) = (e.vni, k.mac);
            if !e.best && !self.macs.iter().any(|(k2, e2)| e2.best && e2.vni == vni && k2.mac == mac) {
                self.rebest(vni, mac);
            }
            i += 1;
        }
        self.imets.retain(|k, _| k.peer != peer.0);
        self.prefixes.retain(|k, _| k.peer != peer.0);
        before - self.len()
    }

    /// Routes held, all types.
    pub fn len(&self) -> usize {
        self.macs.len() + self.imets.len() + self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The VTEPs to flood BUM traffic of `vni` to, each once.
    pub fn flood_list(&self, vni: u32) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.imets.iter().enumerate().filter_map(move |(i, (k, e))| {
            let dup = self.imets.iter().take(i).any(|(k2, e2)| e2.vni == vni && k2.originator == k.originator);
            (e.vni == vni && !dup).then_some(k.originator)
        })
    }

    /// Highest sequence, then lowest VTEP, then lowest peer: a total order
    /// between peers, so the choice never depends on table order.
    fn better(a: (&MacKey, &MacEntry), b: (&MacKey, &MacEntry)) -> bool {
        use core::cmp::Reverse;
        (a.1.seq, Reverse(a.1.vtep), Reverse(a.0.peer)) > (b.1.seq, Reverse(b.1.vtep), Reverse(b.0.peer))
    }

    fn best_index(&self, vni: u32, mac: Mac) -> Option<usize> {
        let mut best: Option<(usize, (&MacKey, &MacEntry))> = None;
        for (i, (k, e)) in self.macs.iter().enumerate() {
            if e.vni == vni && k.mac == mac && best.is_none_or(|(_, b)| Self::better((k, e), b)) {
                best = Some((i, (k, e)));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Marks the best route of (`vni`, `mac`) and unmarks its others, after
    /// one of them was added, changed or removed.
    fn rebest(&mut self, vni: u32, mac: Mac) {
        let best = self.best_index(vni, mac);
        for (i, (k, e)) in self.macs.iter_mut().enumerate() {
            if e.vni == vni && k.mac == mac {
                e.best = Some(i) == best;
            }
        }
    }

    fn remote(k: &MacKey, e: &MacEntry) -> RemoteMac {
        RemoteMac { mac: k.mac, vtep: e.vtep, seq: e.seq, sticky: e.sticky, peer: PeerId(k.peer) }
    }

    /// Where `mac` of `vni` lives: the route with the highest MAC-mobility
    /// sequence (then the lowest VTEP address, then the lowest peer).
    pub fn remote_mac(&self, vni: u32, mac: Mac) -> Option<RemoteMac> {
        self.macs.iter().find(|(k, e)| e.best && e.vni == vni && k.mac == mac).map(|(k, e)| Self::remote(k, e))
    }

    /// Every remote MAC of `vni` with its best route, each MAC once.
    pub fn remote_macs(&self, vni: u32) -> impl Iterator<Item = RemoteMac> + '_ {
        self.macs.iter().filter(move |(_, e)| e.best && e.vni == vni).map(|(k, e)| Self::remote(k, e))
    }

    /// The type-5 routes held.
    pub fn prefixes(&self) -> impl Iterator<Item = (&PrefixKey, &PrefixEntry)> + '_ {
        self.prefixes.iter()
    }

    /// Every type-2 route held, each peer's (not only the best per MAC):
    /// for listings (`routerctl bgp routes`).
    pub fn mac_entries(&self) -> impl Iterator<Item = (&MacKey, &MacEntry)> + '_ {
        self.macs.iter()
    }

    /// Every type-3 route held, each peer's.
    pub fn imet_entries(&self) -> impl Iterator<Item = (&ImetKey, &ImetEntry)> + '_ {
        self.imets.iter()
    }

    /// Remote type-2 routes held.
    pub fn mac_routes(&self) -> usize {
        self.macs.len()
    }

    fn announce(&mut self, peer: u8, route: &EvpnRoute, attrs: &RouteAttrs<'_>) {
        match route {
            EvpnRoute::MacIp(m) => {
                let key = MacKey { peer, rd: m.rd, eth_tag: m.eth_tag, mac: m.mac, ip: m.ip };
                if !imports(attrs, self.asn, m.label1) {
                    self.counters.not_imported += 1;
                    if let Some(old) = self.macs.remove(&key) {
                        self.rebest(old.vni, key.mac);
                    }
                    return;
                }
                let (sticky, seq) = attrs.ext_communities.mac_mobility().unwrap_or((false, 0));
                let entry = MacEntry { vni: m.label1, vtep: attrs.next_hop, seq, sticky, best: false };
                // A re-announcement may move the route to another VNI.
                let old_vni = self.macs.get(&key).map(|e| e.vni);
                if self.macs.insert(key, entry).is_err() {
                    self.counters.macs_full += 1;
                    return;
                }
                self.rebest(m.label1, key.mac);
                if let Some(v) = old_vni.filter(|&v| v != m.label1) {
                    self.rebest(v, key.mac);
                }
            }
            EvpnRoute::Imet(i) => {
                let IpAddr::V4(originator) = i.originator else {
                    self.counters.unsupported_tunnel += 1;
                    return;
                };
                let key = ImetKey { peer, rd: i.rd, eth_tag: i.eth_tag, originator };
                let vni = match attrs.pmsi {
                    Some(p) if p.tunnel_type == PMSI_INGRESS_REPLICATION => Some(p.label),
                    Some(_) => None,
                    None => attrs.ext_communities.route_targets().find(|rt| rt.matches(self.asn, rt.value())).map(|rt| rt.value()),
                };
                let Some(vni) = vni else {
                    self.counters.unsupported_tunnel += 1;
                    self.imets.remove(&key);
                    return;
                };
                if !imports(attrs, self.asn, vni) {
                    self.counters.not_imported += 1;
                    self.imets.remove(&key);
                    return;
                }
                if self.imets.insert(key, ImetEntry { vni }).is_err() {
                    self.counters.imets_full += 1;
                }
            }
            EvpnRoute::IpPrefix(p) => {
                let key = PrefixKey { peer, rd: p.rd, eth_tag: p.eth_tag, prefix: p.prefix, prefix_len: p.prefix_len };
                if !imports(attrs, self.asn, p.label) {
                    self.counters.not_imported += 1;
                    self.prefixes.remove(&key);
                    return;
                }
                let entry = PrefixEntry { vni: p.label, gateway: p.gateway, vtep: attrs.next_hop };
                if self.prefixes.insert(key, entry).is_err() {
                    self.counters.prefixes_full += 1;
                }
            }
            EvpnRoute::Other { .. } => self.counters.other_types += 1,
        }
    }

    fn withdraw(&mut self, peer: u8, route: &EvpnRoute) {
        match route {
            EvpnRoute::MacIp(m) => {
                if let Some(old) = self.macs.remove(&MacKey { peer, rd: m.rd, eth_tag: m.eth_tag, mac: m.mac, ip: m.ip }) {
                    self.rebest(old.vni, m.mac);
                }
            }
            EvpnRoute::Imet(i) => {
                if let IpAddr::V4(originator) = i.originator {
                    self.imets.remove(&ImetKey { peer, rd: i.rd, eth_tag: i.eth_tag, originator });
                }
            }
            EvpnRoute::IpPrefix(p) => {
                self.prefixes.remove(&PrefixKey { peer, rd: p.rd, eth_tag: p.eth_tag, prefix: p.prefix, prefix_len: p.prefix_len });
            }
            EvpnRoute::Other { .. } => {}
        }
    }
}

/// One peer's view of the [`Rib`], handed to its session.
#[derive(Debug)]
pub struct PeerSink<'a> {
    rib: &'a mut Rib,
    peer: PeerId,
}

impl RouteSink for PeerSink<'_> {
    fn announce(&mut self, route: &EvpnRoute, attrs: &RouteAttrs<'_>) {
        if (self.peer.0 as usize) < MAX_PEERS {
            self.rib.announce(self.peer.0, route, attrs);
        } else {
            self.rib.counters.bad_peer += 1;
        }
    }
    fn withdraw(&mut self, route: &EvpnRoute) {
        if (self.peer.0 as usize) < MAX_PEERS {
            self.rib.withdraw(self.peer.0, route);
        } else {
            self.rib.counters.bad_peer += 1;
        }
    }
}

/// A route we originate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalKey {
    /// Our type 3 for a VNI.
    Imet { vni: u32 },
    /// Our type 2 for a local MAC in a VNI.
    Mac { vni: u32, mac: Mac },
}

/// State of a local route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalEntry {
    /// The VNI's RD is `router-id:rd_index`.
    pub rd_index: u16,
    /// MAC mobility sequence (type 2; 0 = none sent).
    pub seq: u32,
    /// Generation of the last change.
    pub changed: u64,
    /// Removed: to be withdrawn, then purged.
    pub withdrawn: bool,
}

/// Why a local route could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalError {
    /// [`MAX_LOCAL`] routes (withdrawn ones not yet purged included).
    Full,
    /// VNI 0 or above 24 bits.
    BadVni { vni: u32 },
    /// A MAC for a VNI that was not added.
    UnknownVni { vni: u32 },
}

impl core::fmt::Display for LocalError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LocalError::Full => write!(f, "local route table full ({MAX_LOCAL} routes)"),
            LocalError::BadVni { vni } => write!(f, "VNI {vni} is not in 1..={MAX_VNI}"),
            LocalError::UnknownVni { vni } => write!(f, "VNI {vni} has not been added"),
        }
    }
}

/// The routes we originate. About 150 KiB: keep it in a `static` or a `Box`.
#[derive(Debug)]
pub struct LocalRoutes {
    asn: u32,
    router_id: Ipv4Addr,
    vtep: Ipv4Addr,
    generation: u64,
    entries: FnvIndexMap<LocalKey, LocalEntry, MAX_LOCAL>,
}

impl LocalRoutes {
    /// Routes of our VTEP `vtep` (the next hop and PMSI endpoint), with RD
    /// `router_id:n` and RTs `asn:VNI`.
    pub const fn new(asn: u32, router_id: Ipv4Addr, vtep: Ipv4Addr) -> LocalRoutes {
        LocalRoutes { asn, router_id, vtep, generation: 0, entries: FnvIndexMap::new() }
    }

    pub fn asn(&self) -> u32 {
        self.asn
    }
    pub fn vtep(&self) -> Ipv4Addr {
        self.vtep
    }
    /// Generation of the last change (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// Entries, withdrawn ones not yet purged included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at position `i` of the walk order.
    pub fn entry_at(&self, i: usize) -> Option<(&LocalKey, &LocalEntry)> {
        self.entries.get_index(i)
    }

    fn bump(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    fn rd(&self, index: u16) -> Rd {
        Rd::ipv4(self.router_id, index)
    }

    /// The NLRI of a local entry.
    pub fn route_of(&self, key: &LocalKey, entry: &LocalEntry) -> EvpnRoute {
        match *key {
            LocalKey::Imet { .. } => {
                EvpnRoute::Imet(ImetRoute { rd: self.rd(entry.rd_index), eth_tag: 0, originator: IpAddr::V4(self.vtep) })
            }
            LocalKey::Mac { vni, mac } => EvpnRoute::MacIp(MacIpRoute {
                rd: self.rd(entry.rd_index),
                esi: Esi::default(),
                eth_tag: 0,
                mac,
                ip: None,
                label1: vni,
                label2: None,
            }),
        }
    }

    /// The route target of `vni` (FRR's automatic one).
    pub fn route_target(&self, vni: u32) -> RouteTarget {
        RouteTarget::auto(self.asn, vni)
    }

    fn live_vni(&self, vni: u32) -> Option<&LocalEntry> {
        self.entries.get(&LocalKey::Imet { vni }).filter(|e| !e.withdrawn)
    }

    /// Originate the type 3 of `vni` (idempotent).
    pub fn add_vni(&mut self, vni: u32) -> Result<(), LocalError> {
        if vni == 0 || vni > MAX_VNI {
            return Err(LocalError::BadVni { vni });
        }
        let key = LocalKey::Imet { vni };
        let rd_index = match self.entries.get(&key) {
            Some(e) if !e.withdrawn => return Ok(()),
            Some(e) => e.rd_index,
            None => {
                // The lowest index no VNI uses (withdrawn ones included).
                let used = |n: u16| self.entries.iter().any(|(k, e)| matches!(k, LocalKey::Imet { .. }) && e.rd_index == n);
                (1..=u16::MAX).find(|&n| !used(n)).ok_or(LocalError::Full)?
            }
        };
        if self.entries.is_full() && !self.entries.contains_key(&key) {
            return Err(LocalError::Full);
        }
        let changed = self.bump();
        self.entries.insert(key, LocalEntry { rd_index, seq: 0, changed, withdrawn: false }).map_err(|_| LocalError::Full)?;
        Ok(())
    }

    /// Withdraw the type 3 of `vni` and every MAC in it.
    pub fn remove_vni(&mut self, vni: u32) {
        if self.live_vni(vni).is_none() {
            return;
        }
        let changed = self.bump();
        for (k, e) in self.entries.iter_mut() {
            let of_vni = match *k {
                LocalKey::Imet { vni: v } | LocalKey::Mac { vni: v, .. } => v == vni,
            };
            if of_vni && !e.withdrawn {
                e.withdrawn = true;
                e.changed = changed;
            }
        }
    }

    /// Originate a type 2 for `mac` in `vni`, with MAC-mobility sequence
    /// `seq` (0 for a MAC that never moved; the moved-to-us sequence
    /// otherwise). Re-adding with another sequence re-announces it.
    pub fn add_mac(&mut self, vni: u32, mac: Mac, seq: u32) -> Result<(), LocalError> {
        let rd_index = self.live_vni(vni).ok_or(LocalError::UnknownVni { vni })?.rd_index;
        let key = LocalKey::Mac { vni, mac };
        if let Some(e) = self.entries.get(&key) {
            if !e.withdrawn && e.seq == seq {
                return Ok(());
            }
        } else if self.entries.is_full() {
            return Err(LocalError::Full);
        }
        let changed = self.bump();
        self.entries.insert(key, LocalEntry { rd_index, seq, changed, withdrawn: false }).map_err(|_| LocalError::Full)?;
        Ok(())
    }

    /// Withdraw the type 2 of `mac` in `vni`.
    pub fn remove_mac(&mut self, vni: u32, mac: Mac) {
        let key = LocalKey::Mac { vni, mac };
        if self.entries.get(&key).is_some_and(|e| !e.withdrawn) {
            let changed = self.bump();
            if let Some(e) = self.entries.get_mut(&key) {
                e.withdrawn = true;
                e.changed = changed;
            }
        }
    }

    /// Forget withdrawn entries whose withdrawal every session has sent:
    /// `synced` must be at most every Established session's
    /// [`crate::Session::local_synced`] (and none may be mid-pass). Returns
    /// how many were dropped.
    pub fn purge(&mut self, synced: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| !(e.withdrawn && e.changed <= synced));
        before - self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evpn::{ExtCommunities, ExtCommunity, PmsiTunnel};
    use std::boxed::Box;
    use std::vec::Vec;

    const ASN: u32 = 65000;

    fn ec(list: &[ExtCommunity]) -> Vec<u8> {
        list.iter().flat_map(|c| c.to_bytes()).collect()
    }

    fn mac_route(rd_n: u16, mac: u8, vni: u32) -> EvpnRoute {
        EvpnRoute::MacIp(MacIpRoute {
            rd: Rd::ipv4(Ipv4Addr::new(10, 0, 0, rd_n as u8), rd_n),
            esi: [0; 10],
            eth_tag: 0,
            mac: Mac([2, 0, 0, 0, 0, mac]),
            ip: None,
            label1: vni,
            label2: None,
        })
    }

    #[test]
    fn macs_implicit_withdraw_mobility_and_peer_down() {
        let mut rib = Box::new(Rib::new(ASN));
        let rt100 = ec(&[ExtCommunity::RouteTarget(RouteTarget::auto(ASN, 100))]);
        let a = RouteAttrs { next_hop: Ipv4Addr::new(10, 0, 0, 2), local_pref: 100, ext_communities: ExtCommunities(&rt100), pmsi: None };
        rib.sink(PeerId(0)).announce(&mac_route(2, 1, 100), &a);
        // Same key again with another next hop: replaced, not added.
        let a3 = RouteAttrs { next_hop: Ipv4Addr::new(10, 0, 0, 3), ..a };
        rib.sink(PeerId(0)).announce(&mac_route(2, 1, 100), &a3);
        assert_eq!(rib.mac_routes(), 1);
        assert_eq!(rib.remote_mac(100, Mac([2, 0, 0, 0, 0, 1])).unwrap().vtep, Ipv4Addr::new(10, 0, 0, 3));
        // The MAC moves to another VTEP with a higher sequence: that wins.
        let moved = ec(&[ExtCommunity::RouteTarget(RouteTarget::auto(ASN, 100)), ExtCommunity::MacMobility { sticky: false, seq: 2 }]);
        let am = RouteAttrs { next_hop: Ipv4Addr::new(10, 0, 0, 4), ext_communities: ExtCommunities(&moved), ..a };
        rib.sink(PeerId(1)).announce(&mac_route(4, 1, 100), &am);
        let best: Vec<_> = rib.remote_macs(100).collect();
        assert_eq!(best.len(), 1);
        assert_eq!((best[0].vtep, best[0].seq, best[0].peer), (Ipv4Addr::new(10, 0, 0, 4), 2, PeerId(1)));
        // Another VNI's RT only: not imported, and the old entry goes.
        let rt200 = ec(&[ExtCommunity::RouteTarget(RouteTarget::auto(ASN, 200))]);
        rib.sink(PeerId(0)).announce(&mac_route(2, 1, 100), &RouteAttrs { ext_communities: ExtCommunities(&rt200), ..a });
        assert_eq!(rib.counters().not_imported, 1);
        assert_eq!(rib.mac_routes(), 1);
        assert_eq!(rib.withdraw_peer(PeerId(1)), 1);
        assert!(rib.remote_mac(100, Mac([2, 0, 0, 0, 0, 1])).is_none());
        // Peer ids beyond the table are refused.
        rib.sink(PeerId(16)).announce(&mac_route(2, 1, 100), &a);
        assert_eq!((rib.counters().bad_peer, rib.mac_routes()), (1, 0));
    }

    /// The best-route marks kept on every change give what the definition
    /// gives (the best of each MAC's routes, scanned from scratch), through
    /// random announcements, moves between VNIs, withdrawals, refusals and
    /// peers going down.
    #[test]
    fn best_marks_match_a_scan_from_scratch() {
        let mut rib = Box::new(Rib::new(ASN));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for step in 0..4000 {
            let (peer, mac, vni) = (next(4) as u8, next(6) as u8, 100 + next(2) as u32);
            match next(10) {
                0 => {
                    rib.withdraw_peer(PeerId(peer));
                }
                1..=2 => rib.sink(PeerId(peer)).withdraw(&mac_route(u16::from(peer) + 1, mac, vni)),
                r => {
                    let rt = ec(&[
                        ExtCommunity::RouteTarget(RouteTarget::auto(ASN, if r == 3 { 999 } else { vni })),
                        ExtCommunity::MacMobility { sticky: false, seq: next(3) as u32 },
                    ]);
                    let hop = Ipv4Addr::new(10, 0, 0, 1 + next(3) as u8);
                    let a = RouteAttrs { next_hop: hop, local_pref: 100, ext_communities: ExtCommunities(&rt), pmsi: None };
                    rib.sink(PeerId(peer)).announce(&mac_route(u16::from(peer) + 1, mac, vni), &a);
                }
            }
            for vni in [100, 101] {
                let mut got: Vec<RemoteMac> = rib.remote_macs(vni).collect();
                let mut want: Vec<RemoteMac> = Vec::new();
                for mac in 0..6 {
                    if let Some(i) = rib.best_index(vni, Mac([2, 0, 0, 0, 0, mac])) {
                        let (k, e) = rib.macs.get_index(i).unwrap();
                        want.push(Rib::remote(k, e));
                    }
                }
                got.sort_by_key(|r| r.mac.0);
                want.sort_by_key(|r| r.mac.0);
                assert_eq!(got, want, "step {step}, vni {vni}");
            }
        }
    }

    #[test]
    fn flood_list_from_type_3() {
        let mut rib = Box::new(Rib::new(ASN));
        let rt = ec(&[ExtCommunity::RouteTarget(RouteTarget::auto(ASN, 100))]);
        for (peer, vtep) in [(0u8, 2u8), (1, 3), (2, 3)] {
            let v = Ipv4Addr::new(10, 0, 0, vtep);
            let a = RouteAttrs {
                next_hop: v,
                local_pref: 100,
                ext_communities: ExtCommunities(&rt),
                pmsi: Some(PmsiTunnel::ingress_replication(100, v)),
            };
            let r = EvpnRoute::Imet(ImetRoute { rd: Rd::ipv4(v, 1), eth_tag: 0, originator: IpAddr::V4(v) });
            rib.sink(PeerId(peer)).announce(&r, &a);
        }
        assert_eq!(rib.flood_list(100).collect::<Vec<_>>(), [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]);
        assert_eq!(rib.flood_list(200).count(), 0);
        rib.withdraw_peer(PeerId(0));
        assert_eq!(rib.flood_list(100).collect::<Vec<_>>(), [Ipv4Addr::new(10, 0, 0, 3)]);
    }

    #[test]
    fn capacity_is_counted() {
        let mut rib = Box::new(Rib::new(ASN));
        let a = RouteAttrs { next_hop: Ipv4Addr::new(10, 0, 0, 2), local_pref: 100, ext_communities: ExtCommunities(&[]), pmsi: None };
        for i in 0..MAX_REMOTE_MACS as u32 + 10 {
            let [_, _, x, y] = i.to_be_bytes();
            let r = EvpnRoute::MacIp(MacIpRoute {
                rd: Rd::as2(1, 1),
                esi: [0; 10],
                eth_tag: 0,
                mac: Mac([2, 0, 0, 0, x, y]),
                ip: None,
                label1: 100,
                label2: None,
            });
            rib.sink(PeerId(0)).announce(&r, &a);
        }
        assert_eq!(rib.mac_routes(), MAX_REMOTE_MACS);
        assert_eq!(rib.counters().macs_full, 10);
    }

    #[test]
    fn local_routes_generations_and_purge() {
        let mut l = Box::new(LocalRoutes::new(ASN, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(l.add_mac(100, Mac([2; 6]), 0), Err(LocalError::UnknownVni { vni: 100 }));
        assert_eq!(l.add_vni(0), Err(LocalError::BadVni { vni: 0 }));
        l.add_vni(100).unwrap();
        l.add_vni(200).unwrap();
        l.add_vni(100).unwrap();
        assert_eq!(l.generation(), 2);
        let idx: Vec<u16> = (0..l.len()).map(|i| l.entry_at(i).unwrap().1.rd_index).collect();
        assert_eq!(idx, [1, 2]);
        l.add_mac(100, Mac([2; 6]), 0).unwrap();
        l.add_mac(100, Mac([2; 6]), 0).unwrap();
        assert_eq!(l.generation(), 3);
        l.add_mac(100, Mac([2; 6]), 5).unwrap();
        assert_eq!(l.generation(), 4);
        let (k, e) = l.entry_at(2).unwrap();
        assert_eq!(l.route_of(k, e).rd().unwrap().to_string(), "10.0.0.1:1");
        l.remove_vni(100);
        assert_eq!(l.generation(), 5);
        assert!(l.entry_at(0).unwrap().1.withdrawn && l.entry_at(2).unwrap().1.withdrawn);
        assert_eq!(l.add_mac(100, Mac([2; 6]), 0), Err(LocalError::UnknownVni { vni: 100 }));
        assert_eq!(l.purge(4), 0);
        assert_eq!(l.purge(5), 2);
        // A new VNI takes the lowest free RD index.
        l.add_vni(300).unwrap();
        assert_eq!(l.entries.get(&LocalKey::Imet { vni: 300 }).unwrap().rd_index, 1);
    }

    use std::string::ToString;
}

//! Carrying runtime state across an apply: the configuration is swapped,
//! what the box learned is kept.
//!
//! An apply builds a complete dataplane from the new configuration beside
//! the running one (so a refused configuration changes nothing) and, once
//! it is accepted, takes the running one's state with
//! [`Dataplane::carry_from`]. Everything the configuration decides is
//! rebuilt (ports, routes, the claim index, segments, timers' settings);
//! everything the box learned from the network or counted is carried,
//! matched by identity, never by position in a list:
//!
//! | table | matched by | carried when | otherwise |
//! |---|---|---|---|
//! | claim runtime | address | the capture is unchanged (same method on the same port; a local claim on the same port): state — a conflict stays a conflict —, live host and when it was heard, probes under way, gratuitous-ARP schedule, reply rate bucket, counters | counters only; the claim starts as new (a proxy-ARP claim probes first) |
//! | ARP cache | (port, address) | the port still exists | forgotten |
//! | frames waiting for ARP | (port, next hop) | the port still exists | dropped, counted `port_removed` |
//! | VXLAN FDB | (segment VNI + UDP port, MAC) | the segment still bridges the same port; a remote entry's VTEP is still listed (configured or learned) | forgotten (learned again, flooded meanwhile) |
//! | VXLAN FDB entries installed by EVPN (type-2) | (segment VNI + UDP port, MAC) | as learned ones; they stay installed (never aged) | forgotten (the control plane installs them again) |
//! | VTEPs learned by EVPN (type-3) | segment VNI + UDP port | the segment still bridges the same port | forgotten (the control plane sets them again) |
//! | counters | drop reason; per port by port | always; per-port ones while the port exists | — |
//! | run-time routes (DHCP, BGP) | prefix + origin | the next hop's port or peer still exists | withdrawn (the protocol installs it again) |
//! | ICMP error bucket, IPv4 identification, uncollected claim events | — | always | — |
//! | connection tracking (state, timers, NAT mapping) | original tuple | its zones' ports still exist; a translated flow's NAT rule still covers it, out of the same port with the same address; an untranslated one is not now covered by a NAT rule; with a firewall, the new rules still accept its first packet | dropped, counted (`dropped_on_apply`); its next packet is a new flow |
//!
//! A port is identified by its MAC: the NIC it is bound to. Renaming a port
//! or moving it in the list keeps its neighbours; binding the name to a
//! different NIC does not.

use super::{record, Core, Dataplane};
use crate::config::{ClaimConfig, ClaimSide, Config, PortId, MAX_PORTS};
use crate::conntrack::{Flow as CtFlow, Zone};
use crate::counters::DropReason;
use crate::fdb::{FdbEntry, Location};
use crate::neighbor::Neighbor;
use crate::route::{NextHop, RunRoute};

/// Old port index → new port, by MAC.
fn port_map(old: &Config, new: &Config) -> [Option<PortId>; MAX_PORTS] {
    let mut map = [None; MAX_PORTS];
    for (i, o) in old.ports.iter().enumerate() {
        if let Some(slot) = map.get_mut(i) {
            *slot = new.ports.iter().position(|n| n.mac == o.mac).map(|j| PortId(j as u8));
        }
    }
    map
}

fn mapped(map: &[Option<PortId>; MAX_PORTS], p: PortId) -> Option<PortId> {
    map.get(p.index()).copied().flatten()
}

/// Does the claim still capture (or deliver) the same way?
fn same_capture(map: &[Option<PortId>; MAX_PORTS], old: &ClaimConfig, new: &ClaimConfig) -> bool {
    match (old.side, new.side) {
        (ClaimSide::Remote { capture: a, port: p, .. }, ClaimSide::Remote { capture: b, port: q, .. }) => {
            a == b && mapped(map, p) == Some(q)
        }
        (ClaimSide::Local { port: p }, ClaimSide::Local { port: q }) => mapped(map, p) == Some(q),
        _ => false,
    }
}

impl Dataplane {
    /// Take over the runtime state of `old`, the dataplane this one
    /// replaces (see the module documentation for what is carried). Call
    /// it once, right after building this one from the new configuration
    /// and before it handles a frame.
    pub fn carry_from(&mut self, old: &Dataplane) {
        let new = &mut self.core;
        let old = &old.core;
        let map = port_map(&old.cfg, &new.cfg);

        for (j, nc) in new.cfg.claims.iter().enumerate() {
            let Some(i) = old.cfg.claims.iter().position(|c| c.address == nc.address) else { continue };
            let (Some(oc), Some(ort), Some(nrt)) = (old.cfg.claims.get(i), old.claims.get(i), new.claims.get_mut(j)) else {
                continue;
            };
            if same_capture(&map, oc, nc) {
                *nrt = *ort;
                nrt.garp_left = nrt.garp_left.min(nc.garp_count);
            } else {
                nrt.counters = ort.counters;
            }
        }

        for e in old.neighbors.entries() {
            if let Some(port) = mapped(&map, e.port) {
                new.neighbors.carry(Neighbor { port, ..*e });
            }
        }

        let Core { pending, counters, .. } = new;
        old.pending.for_each(|port, next_hop, frame| match mapped(&map, port) {
            Some(p) => {
                if !pending.push(p, next_hop, frame) {
                    counters.drop(DropReason::PendingQueueFull);
                }
            }
            None => counters.drop(DropReason::PortRemoved),
        });

        for (oi, os) in old.cfg.segments.iter().enumerate() {
            let found =
                new.cfg.segments.iter().position(|s| s.vni == os.vni && s.udp_port == os.udp_port && mapped(&map, os.port) == Some(s.port));
            if let (Some(si), Some(learned)) = (found, old.learned_vteps.get(oi)) {
                if let Some(slot) = new.learned_vteps.get_mut(si) {
                    slot.clone_from(learned);
                }
            }
        }

        for e in old.fdb.entries() {
            let Some(os) = old.cfg.segments.get(usize::from(e.segment)) else { continue };
            let found = new
                .cfg
                .segments
                .iter()
                .enumerate()
                .find(|(_, s)| s.vni == os.vni && s.udp_port == os.udp_port && mapped(&map, os.port) == Some(s.port));
            let Some((si, seg)) = found else { continue };
            let listed = match e.location {
                Location::Local => true,
                Location::Remote(vtep) => seg.vteps.contains(&vtep) || new.learned_vteps.get(si).is_some_and(|l| l.contains(&vtep)),
            };
            if listed {
                new.fdb.carry(FdbEntry { segment: si as u8, ..*e });
            }
        }

        for r in old.routes.run_routes() {
            let hop = match r.hop {
                NextHop::Tunnel(peer) => NextHop::Tunnel(peer),
                NextHop::Port { port, gateway } => match mapped(&map, port) {
                    Some(port) => NextHop::Port { port, gateway },
                    None => continue,
                },
            };
            let Core { routes, cfg, .. } = &mut *new;
            // Refused when the peer or the gateway's subnet went: withdrawn.
            let _ = routes.add_run_route(cfg, RunRoute { hop, ..*r });
        }

        let mut dropped = 0u64;
        for (_, f) in old.ct.iter() {
            match carried_flow(&map, &new.cfg, f) {
                Some(f) if new.ct.carry(f) => {}
                _ => dropped += 1,
            }
        }
        new.ct.counters = old.ct.counters;
        new.ct.counters.dropped_on_apply = new.ct.counters.dropped_on_apply.saturating_add(dropped);
        if new.cfg.firewall.is_some() && old.cfg.firewall == new.cfg.firewall {
            new.fw_counters = old.fw_counters;
        }

        let mut c = old.counters.clone();
        let per_port = |old: &[u64; MAX_PORTS]| {
            let mut out = [0u64; MAX_PORTS];
            for (i, v) in old.iter().enumerate() {
                if let Some(slot) = map.get(i).copied().flatten().and_then(|p| out.get_mut(p.index())) {
                    *slot = *v;
                }
            }
            out
        };
        c.rx_frames = per_port(&old.counters.rx_frames);
        c.tx_frames = per_port(&old.counters.tx_frames);
        c.tx_full = per_port(&old.counters.tx_full);
        // Drops counted while building this one (pending frames above).
        for (d, n) in c.drops.iter_mut().zip(new.counters.drops.iter()) {
            *d = d.saturating_add(*n);
        }
        new.counters = c;
        new.icmp_bucket = old.icmp_bucket;
        new.ident = old.ident;
        new.resolver_port = old.resolver_port;
        new.bgp_peers = old.bgp_peers.clone();
        for e in old.events.iter() {
            record(&mut new.events, &mut new.counters, *e);
        }
    }
}

/// A tracked flow as the new configuration would have made it, or `None`
/// when it would not exist (or be translated differently) there.
fn carried_flow(map: &[Option<PortId>; MAX_PORTS], new: &Config, f: &CtFlow) -> Option<CtFlow> {
    let zone = |z: Zone| match z {
        Zone::Port(p) => mapped(map, p).map(Zone::Port),
        z => Some(z),
    };
    let (from, to) = (zone(f.from)?, zone(f.to)?);
    let out = match to {
        Zone::Port(p) => Some(p),
        _ => None,
    };
    let rule = new.nat.iter().find(|n| Some(n.out) == out && from != Zone::Port(n.out) && n.source.contains(f.orig.src));
    let nat = match (f.nat, rule) {
        (None, None) => None,
        (Some((p, addr, port)), Some(r)) => {
            let p = mapped(map, p)?;
            let same = p == r.out && new.ports.get(p.index()).and_then(|pc| pc.address) == Some(addr);
            if !same {
                return None;
            }
            Some((p, addr, port))
        }
        _ => return None,
    };
    if let Some(fw) = &new.firewall {
        let m = crate::firewall::Meta {
            proto: f.orig.proto.number(),
            src: f.orig.src,
            dst: f.orig.dst,
            dport: (f.orig.proto != crate::conntrack::Proto::Icmp).then_some(f.orig.dport),
        };
        if fw.decide(from, to, &m).0 != crate::firewall::Action::Accept {
            return None;
        }
    }
    Some(CtFlow { from, to, nat, ..*f })
}

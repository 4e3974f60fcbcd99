//! The MTU/MSS budget: how big a packet each layer can carry, and the MSS
//! clamp that follows from it.
//!
//! underlay (WAN port MTU, 1500) − WireGuard (80) = tunnel MTU (1420)
//! tunnel MTU − VXLAN (50)                        = segment MTU (1370)
//! path MTU − IPv4 and TCP headers (40)           = auto MSS clamp
//!
//! The WireGuard figure is the IPv6-underlay worst case (40 IP + 8 UDP + 16
//! header + 16 tag) so a budget holds whichever family the endpoint resolves
//! to. All arithmetic saturates: a nonsense MTU yields a small budget and a
//! validation problem, never an overflow.

use crate::config::{Config, Segment, Tunnel};
use crate::types::{Ipv4Cidr, MssClamp, Name};
use crate::PortRole;

/// Bytes WireGuard adds around an inner packet (IPv6 underlay, worst case).
pub const WIREGUARD_OVERHEAD: u16 = 80;
/// Bytes VXLAN adds: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u16 = 50;
/// IPv4 (20) and TCP (20) headers without options: MSS = MTU − 40.
pub const TCP_IPV4_HEADERS: u16 = 40;

/// The MTU the underlay offers: the smallest WAN port MTU (every tunnel can
/// leave through any WAN port), or the smallest port MTU when no port is WAN,
/// or 1500 with no ports at all.
pub fn underlay_mtu(config: &Config) -> u16 {
    let wan = config.ports.iter().filter(|p| p.role == PortRole::Wan).map(|p| p.mtu).min();
    wan.or_else(|| config.ports.iter().map(|p| p.mtu).min()).unwrap_or(crate::config::DEFAULT_PORT_MTU)
}

/// The budget of one WireGuard tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelBudget {
    pub underlay_mtu: u16,
    /// underlay − 80: the largest tunnel MTU that never fragments outside.
    pub max_mtu: u16,
    /// The configured tunnel MTU.
    pub mtu: u16,
    /// What the path really carries: min(mtu, max_mtu).
    pub effective_mtu: u16,
    /// effective MTU − 40: the MSS an `auto` clamp uses for claims on this tunnel.
    pub auto_mss: u16,
}

impl TunnelBudget {
    pub fn fits(&self) -> bool {
        self.mtu <= self.max_mtu
    }
}

pub fn tunnel_budget(config: &Config, tunnel: &Tunnel) -> TunnelBudget {
    let underlay = underlay_mtu(config);
    let max_mtu = underlay.saturating_sub(WIREGUARD_OVERHEAD);
    let effective = tunnel.mtu.min(max_mtu);
    TunnelBudget {
        underlay_mtu: underlay,
        max_mtu,
        mtu: tunnel.mtu,
        effective_mtu: effective,
        auto_mss: effective.saturating_sub(TCP_IPV4_HEADERS),
    }
}

/// What carries a segment's VXLAN packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier<'a> {
    /// Inside this WireGuard tunnel (its peers' allowed IPs hold the remote VTEPs).
    Tunnel(&'a Name),
    /// Directly on the underlay: no remote VTEP is inside a tunnel.
    Underlay,
}

/// The budget of one VXLAN segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentBudget<'a> {
    pub carrier: Carrier<'a>,
    /// MTU of the carrier (effective tunnel MTU or the underlay MTU).
    pub carrier_mtu: u16,
    /// carrier − 50: the largest segment MTU that fits.
    pub max_mtu: u16,
    pub mtu: u16,
    pub effective_mtu: u16,
    /// effective MTU − 40: the MSS an `auto` clamp uses on this segment.
    pub auto_mss: u16,
}

impl SegmentBudget<'_> {
    pub fn fits(&self) -> bool {
        self.mtu <= self.max_mtu
    }
}

/// The budget of a segment. Its carrier is the tunnel whose peers route the
/// remote VTEPs; if they are spread over several tunnels the smallest one
/// bounds the segment.
pub fn segment_budget<'a>(config: &'a Config, segment: &Segment) -> SegmentBudget<'a> {
    let mut carrier = Carrier::Underlay;
    let mut carrier_mtu = underlay_mtu(config);
    let mut via_tunnel = false;
    for vtep in &segment.remote_vteps {
        let Some((peer, _)) = config.route_peer(*vtep) else {
            continue;
        };
        let Some(tunnel) = config.tunnel(&peer.tunnel) else {
            continue;
        };
        let mtu = tunnel_budget(config, tunnel).effective_mtu;
        if !via_tunnel || mtu < carrier_mtu {
            carrier = Carrier::Tunnel(&tunnel.name);
            carrier_mtu = mtu;
            via_tunnel = true;
        }
    }
    let max_mtu = carrier_mtu.saturating_sub(VXLAN_OVERHEAD);
    let effective = segment.mtu.min(max_mtu);
    SegmentBudget {
        carrier,
        carrier_mtu,
        max_mtu,
        mtu: segment.mtu,
        effective_mtu: effective,
        auto_mss: effective.saturating_sub(TCP_IPV4_HEADERS),
    }
}

/// The budget a claim's traffic sees on this box: the named delivery tunnel,
/// or (when this box owns the claim and has no tunnel of that name) its
/// smallest tunnel. `None` without any tunnel.
pub fn claim_tunnel_budget(config: &Config, delivery_tunnel: &Name) -> Option<TunnelBudget> {
    if let Some(t) = config.tunnel(delivery_tunnel) {
        return Some(tunnel_budget(config, t));
    }
    config.wireguard.iter().map(|t| tunnel_budget(config, t)).min_by_key(|b| b.effective_mtu)
}

/// The MSS the clamp writes into SYN/SYN-ACK: `auto` → the path's auto MSS;
/// a fixed value is used as given (validation warns when it is above the path).
pub fn clamp_mss(clamp: MssClamp, auto_mss: u16) -> u16 {
    match clamp {
        MssClamp::Auto => auto_mss,
        MssClamp::Value(v) => v,
    }
}

/// True when the prefix is a single address (claims must be).
pub fn is_host_route(c: &Ipv4Cidr) -> bool {
    c.prefix_len() == 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn seed_003_budget_is_1370() {
        let c = load(TWO_SITE_ROZ);
        let t = tunnel_budget(&c, &c.wireguard[0]);
        assert_eq!((t.underlay_mtu, t.max_mtu, t.effective_mtu, t.auto_mss), (1500, 1420, 1420, 1380));
        let s = segment_budget(&c, &c.segments[0]);
        assert_eq!(s.carrier, Carrier::Tunnel(&c.wireguard[0].name));
        assert_eq!((s.carrier_mtu, s.max_mtu, s.mtu, s.auto_mss), (1420, 1370, 1370, 1330));
        assert!(s.fits() && t.fits());
    }

    #[test]
    fn oversized_tunnel_is_capped() {
        let mut c = load(TWO_SITE_ROZ);
        c.wireguard[0].mtu = 1500;
        let t = tunnel_budget(&c, &c.wireguard[0]);
        assert!(!t.fits());
        assert_eq!((t.effective_mtu, t.auto_mss), (1420, 1380));
    }

    #[test]
    fn small_wan_shrinks_everything() {
        let mut c = load(TWO_SITE_ROZ);
        for p in c.ports.iter_mut() {
            p.mtu = 1400; // e.g. PPPoE-ish uplink
        }
        let s = segment_budget(&c, &c.segments[0]);
        assert_eq!((s.carrier_mtu, s.max_mtu), (1320, 1270));
        assert!(!s.fits());
    }

    #[test]
    fn segment_without_tunnel_rides_underlay() {
        let mut c = load(TWO_SITE_ROZ);
        c.peers.clear();
        let s = segment_budget(&c, &c.segments[0]);
        assert_eq!(s.carrier, Carrier::Underlay);
        assert_eq!(s.max_mtu, 1450);
    }

    #[test]
    fn saturates_on_nonsense() {
        let mut c = load(TWO_SITE_ROZ);
        for p in c.ports.iter_mut() {
            p.mtu = 10;
        }
        let t = tunnel_budget(&c, &c.wireguard[0]);
        assert_eq!((t.max_mtu, t.auto_mss), (0, 0));
    }

    #[test]
    fn clamp_value() {
        assert_eq!(clamp_mss(MssClamp::Auto, 1380), 1380);
        assert_eq!(clamp_mss(MssClamp::Value(1300), 1380), 1300);
    }
}

//! The dataplane's own runtime configuration.
//!
//! Plain values, constructible in tests; the image translates the persisted
//! `config-schema` document into these (this crate does not depend on it).
//! [`Config::validate`] refuses anything the pipeline could not honour, so the
//! per-packet code can rely on indices being in range.

use core::net::Ipv4Addr;

use heapless::Vec;
pub use smoltcp::wire::EthernetAddress as Mac;

/// Most ports (NICs) the dataplane drives.
pub const MAX_PORTS: usize = 8;
/// Most WireGuard peers on the tunnel.
pub const MAX_PEERS: usize = 16;
/// Most allowed prefixes per peer.
pub const MAX_ALLOWED_PER_PEER: usize = 16;
/// Most claims.
pub const MAX_CLAIMS: usize = 64;
/// Most VXLAN segments.
pub const MAX_SEGMENTS: usize = 8;
/// Most remote VTEPs per segment.
pub const MAX_VTEPS: usize = 8;
/// Most SNAT rules (`[[nat]]`).
pub const MAX_NAT_RULES: usize = 4;
/// Largest port MTU: a frame buffer (`BUF_SIZE`) holds a 1500-byte packet
/// with its Ethernet header and the tunnel's headroom.
pub const MAX_PORT_MTU: u16 = 1500;
// An IPv4 packet of MAX_PORT_MTU bytes plus its Ethernet header (and tag).
const _: () = assert!(MAX_PORT_MTU as usize + 18 <= crate::buf::MAX_FRAME);

/// Index of a port in [`Config::ports`] (`lan0` is usually 0, `wan0` 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u8);

impl PortId {
    /// As an index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A WireGuard peer, as the tunnel implementation numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u16);

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Prefix {
    /// `addr/len`; host bits are cleared. `None` if `len > 32`.
    pub const fn new(addr: Ipv4Addr, len: u8) -> Option<Prefix> {
        if len > 32 {
            return None;
        }
        let bits = addr.to_bits() & mask(len);
        Some(Prefix { addr: Ipv4Addr::from_bits(bits), len })
    }

    /// A /32 host prefix.
    pub const fn host(addr: Ipv4Addr) -> Prefix {
        Prefix { addr, len: 32 }
    }

    /// The network address.
    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for `0.0.0.0/0`.
    pub const fn is_default(&self) -> bool {
        self.len == 0
    }

    /// True when `addr` is inside the prefix.
    pub const fn contains(&self, addr: Ipv4Addr) -> bool {
        addr.to_bits() & mask(self.len) == self.addr.to_bits()
    }
}

/// The netmask of a prefix length (`len` ≤ 32).
pub const fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else if len >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - len as u32)
    }
}

/// What a port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    /// A capture/delivery side: local hosts live here.
    Lan,
    /// The underlay: the box's own address and gateway; nothing but
    /// WireGuard (and VXLAN from configured VTEPs) is answered here.
    Wan,
}

/// What a port's frames are: its device's medium (`routerd_netdev`'s, one
/// type for the drivers and the dataplane). On an Ethernet port the
/// dataplane writes and reads link headers and answers and asks ARP; a
/// datagram port (routerd-host's WAN socket, only a WAN may be one) sends
/// tunnel datagrams as payload and endpoint (`Transmit::send_datagram`),
/// takes them in the same way (`Dataplane::process_datagram_and_transmit`)
/// and lets other IPv4 leave bare for the device's IP side.
pub use routerd_netdev::Medium;

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// LAN or WAN.
    pub role: PortRole,
    /// Ethernet, or a datagram socket.
    pub medium: Medium,
    /// The port's MAC address (used as source and in proxy-ARP replies).
    pub mac: Mac,
    /// The box's own address on this port; `None` for a port that is a
    /// pure layer-2 member of a segment (it bridges, answers no ARP, routes
    /// nothing) and for a DHCP port without a lease yet.
    pub address: Option<Ipv4Addr>,
    /// Prefix length of the connected subnet (unused without an address).
    pub prefix_len: u8,
    /// Default gateway (only meaningful on the WAN port).
    pub gateway: Option<Ipv4Addr>,
    /// IP MTU of the port (1500 on Ethernet).
    pub mtu: u16,
    /// The port's address comes from DHCP: DHCP replies and ARP replies
    /// received here also go to the box's client (`Transmit::stack`).
    pub dhcp: bool,
}

impl PortConfig {
    /// The connected subnet (none without an address).
    pub fn subnet(&self) -> Option<Prefix> {
        let a = self.address?;
        Some(Prefix::new(a, self.prefix_len.min(32)).unwrap_or(Prefix::host(a)))
    }

    /// True when `addr` is on this port's subnet.
    pub fn on_link(&self, addr: Ipv4Addr) -> bool {
        self.subnet().is_some_and(|s| s.contains(addr))
    }
}

/// A WireGuard peer as the dataplane sees it: an id and the inner addresses
/// it may use (cryptokey routing; see `Dataplane` docs for who checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The tunnel's id for this peer.
    pub id: PeerId,
    /// Inner source addresses accepted from this peer, and routed to it.
    pub allowed: Vec<Prefix, MAX_ALLOWED_PER_PEER>,
}

/// The WireGuard interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The box's own address inside the tunnel (source of VXLAN over the
    /// tunnel and of ICMP errors for tunnel traffic), if it has one.
    pub address: Option<Ipv4Addr>,
    /// Inner MTU (1420 is WireGuard's default over a 1500 underlay).
    pub mtu: u16,
    /// UDP port WireGuard listens on at the WAN address.
    pub listen_port: u16,
    /// The peers.
    pub peers: Vec<PeerConfig, MAX_PEERS>,
}

/// How a remote-owned claim captures packets on this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Answer ARP for the address on a LAN port.
    ProxyArp,
    /// The provider fabric delivers the packets to the port's MAC; never
    /// answer ARP or anything else for the address.
    ProviderSecondaryIp,
}

/// Where the claimed address lives, seen from this box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimSide {
    /// The address lives on the other side: capture on `port` and deliver
    /// into the tunnel to `peer`.
    Remote {
        /// How packets are captured.
        capture: Capture,
        /// The capture port.
        port: PortId,
        /// The delivery peer.
        peer: PeerId,
    },
    /// The address lives here: packets for it from the tunnel are delivered
    /// on `port` (ARP-resolving the real host).
    Local {
        /// The delivery port.
        port: PortId,
    },
}

/// A /32 claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimConfig {
    /// The claimed address.
    pub address: Ipv4Addr,
    /// Which side owns it.
    pub side: ClaimSide,
    /// MSS for this claim's path; `None` derives it from the tunnel MTU − 40.
    pub mss: Option<u16>,
    /// Gratuitous ARPs sent when a proxy-ARP claim starts capturing.
    pub garp_count: u8,
    /// How long a live host found on the address must stay silent before
    /// the box probes it again (proxy-ARP claims).
    pub conflict_hold_ms: u64,
}

impl ClaimConfig {
    /// Defaults for a claim on `side`: 3 gratuitous ARPs (proxy-ARP only),
    /// a 60 s conflict hold.
    pub const fn new(address: Ipv4Addr, side: ClaimSide) -> ClaimConfig {
        let garp_count = match side {
            ClaimSide::Remote { capture: Capture::ProxyArp, .. } => 3,
            _ => 0,
        };
        ClaimConfig { address, side, mss: None, garp_count, conflict_hold_ms: 60_000 }
    }

    /// True for a claim this box captures by answering ARP.
    pub const fn is_proxy_arp(&self) -> bool {
        matches!(self.side, ClaimSide::Remote { capture: Capture::ProxyArp, .. })
    }
}

/// A VXLAN segment: one LAN port bridged to remote VTEPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    /// The VNI (24 bits).
    pub vni: u32,
    /// The bridged LAN port.
    pub port: PortId,
    /// Remote VTEPs (flood list; decapsulation is accepted only from these).
    /// A VTEP inside a peer's allowed prefixes is reached through the tunnel
    /// (seed 003: VXLAN over WireGuard), any other over the WAN.
    pub vteps: Vec<Ipv4Addr, MAX_VTEPS>,
    /// UDP destination port (4789 unless configured).
    pub udp_port: u16,
    /// MSS for TCP carried on the segment; `None` derives it from the
    /// underlay MTU − 50 (VXLAN) − 40.
    pub mss: Option<u16>,
}

/// Timers and rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// ARP probes (sender 0.0.0.0, RFC 5227) a proxy-ARP claim sends before
    /// it captures; 0 captures at once without asking.
    pub probe_count: u8,
    /// Spacing of probes, and the wait after the last one for an answer.
    pub probe_interval_ms: u64,
    /// Spacing of gratuitous ARPs.
    pub garp_interval_ms: u64,
    /// ARP requests per resolution before giving up.
    pub arp_attempts: u8,
    /// Spacing of ARP retries.
    pub arp_retry_ms: u64,
    /// Lifetime of a resolved neighbour.
    pub arp_reachable_ms: u64,
    /// Lifetime of a learned FDB entry.
    pub fdb_age_ms: u64,
    /// Proxy-ARP replies per second per claim (token bucket rate).
    pub arp_reply_rate: u32,
    /// Proxy-ARP reply burst per claim.
    pub arp_reply_burst: u32,
    /// ICMP errors per second (whole box).
    pub icmp_rate: u32,
    /// ICMP error burst.
    pub icmp_burst: u32,
    /// Connection-tracking timeouts.
    pub conntrack: crate::conntrack::Timeouts,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            probe_count: 3,
            probe_interval_ms: 200,
            garp_interval_ms: 1_000,
            arp_attempts: 3,
            arp_retry_ms: 1_000,
            arp_reachable_ms: 60_000,
            fdb_age_ms: 300_000,
            arp_reply_rate: 10,
            arp_reply_burst: 20,
            icmp_rate: 10,
            icmp_burst: 10,
            conntrack: crate::conntrack::Timeouts::default(),
        }
    }
}

/// SNAT exit: packets from `source` leaving by port `out` take the port's
/// current address (a DHCP lease's included) as their source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatRule {
    /// Sources translated.
    pub source: Prefix,
    /// The port they leave by (the WAN).
    pub out: PortId,
}

/// Everything the dataplane needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// NICs, indexed by [`PortId`]. Exactly one must be the WAN.
    pub ports: Vec<PortConfig, MAX_PORTS>,
    /// The WireGuard interface.
    pub tunnel: TunnelConfig,
    /// Claims, indexed by position (the control plane's claim id).
    pub claims: Vec<ClaimConfig, MAX_CLAIMS>,
    /// VXLAN segments.
    pub segments: Vec<SegmentConfig, MAX_SEGMENTS>,
    /// Timers and rate limits.
    pub timing: Timing,
    /// SNAT rules (first match by source); empty: nothing is translated.
    pub nat: Vec<NatRule, MAX_NAT_RULES>,
    /// The zone firewall; `None` forwards what routing forwards and admits
    /// to the box what the built-in policy admits (no connection tracking).
    pub firewall: Option<crate::firewall::Firewall>,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// There must be exactly one WAN port.
    WanCount,
    /// A prefix length above 32, an MTU below 576 or above
    /// [`MAX_PORT_MTU`], a MAC that is not unicast, a LAN port without an
    /// address that no segment bridges.
    BadPort(PortId),
    /// A claim names a port that does not exist, or a LAN port without an
    /// address (bridge-only: it captures and delivers nothing).
    ClaimPort(usize),
    /// A proxy-ARP claim must capture on a LAN port.
    ProxyArpOnWan(usize),
    /// A claim names a peer that does not exist.
    ClaimPeer(usize),
    /// Two claims for the same address.
    DuplicateClaim(usize),
    /// A claim for one of the box's own addresses.
    ClaimOnOwnAddress(usize),
    /// Two peers with the same id.
    DuplicatePeer(PeerId),
    /// Tunnel MTU below 576 or above the WAN MTU.
    TunnelMtu,
    /// A segment names a missing port, a WAN port, a port already bridged,
    /// a VNI above 24 bits or the same VNI twice.
    BadSegment(usize),
    /// A segment's VTEP is reached through the tunnel but the tunnel has no
    /// address to use as the outer source.
    SegmentNeedsTunnelAddress(usize),
    /// A NAT rule names a missing port or a LAN port (SNAT leaves by the WAN).
    BadNat(usize),
    /// A firewall rule or policy names a port that does not exist.
    BadFirewallZone,
}

impl Config {
    /// The WAN port.
    pub fn wan(&self) -> Option<PortId> {
        self.ports.iter().position(|p| p.role == PortRole::Wan).map(|i| PortId(i as u8))
    }

    /// The peer entry for `id`.
    pub fn peer(&self, id: PeerId) -> Option<&PeerConfig> {
        self.tunnel.peers.iter().find(|p| p.id == id)
    }

    /// True when `addr` is one of the box's own addresses.
    pub fn is_own_address(&self, addr: Ipv4Addr) -> bool {
        self.ports.iter().any(|p| p.address == Some(addr)) || self.tunnel.address == Some(addr)
    }

    /// Check everything the pipeline relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ports.iter().filter(|p| p.role == PortRole::Wan).count() != 1 {
            return Err(ConfigError::WanCount);
        }
        for (i, p) in self.ports.iter().enumerate() {
            let datagram_lan = p.medium == Medium::Datagram && p.role != PortRole::Wan;
            if p.prefix_len > 32 || p.mtu < 576 || p.mtu > MAX_PORT_MTU || !p.mac.is_unicast() || datagram_lan {
                return Err(ConfigError::BadPort(PortId(i as u8)));
            }
            // A LAN port without an address only bridges a segment.
            let bridged = self.segments.iter().any(|s| s.port.index() == i);
            if p.role == PortRole::Lan && p.address.is_none() && !bridged {
                return Err(ConfigError::BadPort(PortId(i as u8)));
            }
        }
        let wan_mtu = self.wan().and_then(|w| self.ports.get(w.index())).map_or(1500, |p| p.mtu);
        if self.tunnel.mtu < 576 || self.tunnel.mtu > wan_mtu {
            return Err(ConfigError::TunnelMtu);
        }
        for (i, p) in self.tunnel.peers.iter().enumerate() {
            if self.tunnel.peers.iter().skip(i + 1).any(|q| q.id == p.id) {
                return Err(ConfigError::DuplicatePeer(p.id));
            }
        }
        for (i, c) in self.claims.iter().enumerate() {
            if self.claims.iter().skip(i + 1).any(|d| d.address == c.address) {
                return Err(ConfigError::DuplicateClaim(i));
            }
            if self.is_own_address(c.address) {
                return Err(ConfigError::ClaimOnOwnAddress(i));
            }
            let port = match c.side {
                ClaimSide::Remote { port, .. } | ClaimSide::Local { port } => port,
            };
            let Some(pc) = self.ports.get(port.index()).filter(|p| p.address.is_some() || p.role == PortRole::Wan) else {
                return Err(ConfigError::ClaimPort(i));
            };
            if let ClaimSide::Remote { capture, peer, .. } = c.side {
                if capture == Capture::ProxyArp && pc.role != PortRole::Lan {
                    return Err(ConfigError::ProxyArpOnWan(i));
                }
                if self.peer(peer).is_none() {
                    return Err(ConfigError::ClaimPeer(i));
                }
            }
        }
        for (i, s) in self.segments.iter().enumerate() {
            let bad = || ConfigError::BadSegment(i);
            let pc = self.ports.get(s.port.index()).ok_or_else(bad)?;
            if pc.role != PortRole::Lan || s.vni > crate::vxlan::MAX_VNI {
                return Err(bad());
            }
            if self.segments.iter().skip(i + 1).any(|t| t.port == s.port || (t.vni == s.vni && t.udp_port == s.udp_port)) {
                return Err(bad());
            }
            let via_tunnel = s.vteps.iter().any(|v| self.tunnel.peers.iter().any(|p| p.allowed.iter().any(|a| a.contains(*v))));
            if via_tunnel && self.tunnel.address.is_none() {
                return Err(ConfigError::SegmentNeedsTunnelAddress(i));
            }
        }
        for (i, n) in self.nat.iter().enumerate() {
            if self.ports.get(n.out.index()).is_none_or(|p| p.role != PortRole::Wan) {
                return Err(ConfigError::BadNat(i));
            }
        }
        if let Some(fw) = &self.firewall {
            use crate::conntrack::Zone;
            let ok = |z: Option<Zone>| !matches!(z, Some(Zone::Port(p)) if self.ports.get(p.index()).is_none());
            if !fw.rules.iter().all(|r| ok(r.from) && ok(r.to)) || !fw.policies.iter().all(|p| ok(p.from) && ok(p.to)) {
                return Err(ConfigError::BadFirewallZone);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = Prefix::new(Ipv4Addr::new(10, 1, 2, 3), 16).unwrap();
        assert_eq!(p.addr(), Ipv4Addr::new(10, 1, 0, 0));
        assert!(p.contains(Ipv4Addr::new(10, 1, 255, 1)));
        assert!(!p.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!(Prefix::new(Ipv4Addr::UNSPECIFIED, 0).unwrap().contains(Ipv4Addr::BROADCAST));
        assert!(Prefix::new(Ipv4Addr::UNSPECIFIED, 33).is_none());
        assert!(Prefix::host(Ipv4Addr::new(1, 2, 3, 4)).contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(mask(24), 0xffff_ff00);
    }
}

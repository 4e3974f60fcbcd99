//! The configuration of one box: device, ports, WireGuard tunnels and peers,
//! claims, VXLAN segments, DNS servers.
//!
//! The same types are the TOML file an operator writes (field names and
//! defaults below are the file format; `CONFIG.md` is the reference) and the
//! postcard message routerctl sends to the box. Deserializing checks each
//! value on its own (a name's characters, a prefix length ≤ 32, list
//! capacities); how values relate to each other is checked by
//! `crate::validate`, which the box runs again before applying anything.
//!
//! The claim list is shared: both boxes of a pair load the same `[[claims]]`.
//! Each box decides what a claim means for it from the claim's `owner` and its
//! own `device.side` (`Config::claim_action`).

use core::fmt;
use core::marker::PhantomData;
use core::net::Ipv4Addr;

use heapless::Vec;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::firewall::{Firewall, Nat};
use crate::limits::MAX_BGP_PEERS;
use crate::limits::{
    wire_max_enum, wire_max_struct, MAX_ALLOWED_IPS, MAX_CLAIMS, MAX_DNS_SERVERS, MAX_HOST_LEN, MAX_NAME_LEN, MAX_NAT, MAX_PEERS,
    MAX_PORTS, MAX_SEGMENTS, MAX_TUNNELS, MAX_VTEPS,
};
use crate::types::{DnsName, Endpoint, Ipv4Cidr, KeyRef, Mac, MssClamp, Name, PortAddress, PublicKey};

/// Default MTU of a port (Ethernet).
pub const DEFAULT_PORT_MTU: u16 = 1500;
/// Default MTU of a WireGuard tunnel: 1500 minus the 80 bytes WireGuard adds
/// over an IPv6 underlay (the worst case; 60 over IPv4).
pub const DEFAULT_TUNNEL_MTU: u16 = 1420;
/// Default WireGuard listen port.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// Default MTU of a VXLAN segment: 1500 − 80 (WireGuard) − 50 (VXLAN).
pub const DEFAULT_SEGMENT_MTU: u16 = 1370;
/// The IANA VXLAN port.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Gratuitous ARPs sent when a proxy-arp claim starts capturing, so hosts
/// with a stale ARP entry switch to the box at once.
pub const DEFAULT_GRATUITOUS_ARP: u8 = 3;
/// Seconds a live host on a proxy-arp claim's address must stay silent
/// before the box probes the address again.
pub const DEFAULT_CONFLICT_HOLD: u16 = 60;

fn default_port_mtu() -> u16 {
    DEFAULT_PORT_MTU
}
fn default_tunnel_mtu() -> u16 {
    DEFAULT_TUNNEL_MTU
}
fn default_listen_port() -> u16 {
    DEFAULT_LISTEN_PORT
}
fn default_segment_mtu() -> u16 {
    DEFAULT_SEGMENT_MTU
}
fn default_vxlan_port() -> u16 {
    DEFAULT_VXLAN_PORT
}
fn default_hold_time() -> u16 {
    DEFAULT_BGP_HOLD_TIME
}

/// Default BGP hold time, seconds (FRR's: the smaller of both sides' wins,
/// so FRR's `datacenter` profile's 9 s rules against it).
pub const DEFAULT_BGP_HOLD_TIME: u16 = 90;

/// Deserializes a bounded list, saying how many entries are allowed when a
/// file has too many (heapless' own message only says "invalid length").
pub(crate) fn bounded<'de, D, T, const N: usize>(d: D) -> Result<Vec<T, N>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const N: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T, N>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {N} entries")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.push(item).is_err() {
                    return Err(de::Error::custom(format_args!("too many entries: a box supports at most {N} here")));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded::<T, N>(PhantomData))
}

/// One box's configuration (the whole TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this box is.
    pub device: Device,
    /// Physical ports, `[[ports]]`.
    #[serde(default, deserialize_with = "bounded")]
    pub ports: Vec<Port, MAX_PORTS>,
    /// WireGuard interfaces, `[[wireguard]]`.
    #[serde(default, deserialize_with = "bounded")]
    pub wireguard: Vec<Tunnel, MAX_TUNNELS>,
    /// WireGuard peers of all interfaces, `[[peers]]`.
    #[serde(default, deserialize_with = "bounded")]
    pub peers: Vec<Peer, MAX_PEERS>,
    /// The claim list shared by both boxes of a pair, `[[claims]]`.
    #[serde(default, deserialize_with = "bounded")]
    pub claims: Vec<Claim, MAX_CLAIMS>,
    /// VXLAN segments, `[[segments]]`.
    #[serde(default, deserialize_with = "bounded")]
    pub segments: Vec<Segment, MAX_SEGMENTS>,
    /// Resolvers for peer endpoints given by name, `[dns]` (optional).
    #[serde(default)]
    pub dns: Dns,
    /// SNAT exits, `[[nat]]` (see `crate::firewall`).
    #[serde(default, deserialize_with = "bounded")]
    pub nat: Vec<Nat, MAX_NAT>,
    /// The zone firewall, `[firewall]`; absent: forward what is routed, the
    /// WAN answers only WireGuard.
    #[serde(default)]
    pub firewall: Option<Firewall>,
    /// The BGP EVPN speaker, `[bgp]` (optional): segments with
    /// `control = "evpn"` learn their VTEPs and remote MACs from it.
    #[serde(default)]
    pub bgp: Option<Bgp>,
}

/// `[device]`: the box's name and which side of a pair it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Shown in logs, status and doctor output.
    pub name: Name,
    /// `onprem`, `cloud` or any site name (`roz`, `wro`). Compared with each
    /// claim's `owner` to decide capture vs local delivery.
    pub side: Name,
}

/// What a port faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortRole {
    /// Local hosts: proxy-ARP capture, local delivery, bridged segments.
    Lan,
    /// The underlay towards the internet: WireGuard leaves here; only the
    /// WireGuard listen port answers.
    Wan,
}

/// `[[ports]]`: one physical NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// `lan0`, `wan0`, `lan1`… Without `mac`, NICs are named in PCI order:
    /// first `lan0`, second `wan0`, then `lan1`, `lan2`, ….
    pub name: Name,
    pub role: PortRole,
    /// Bind this name to the NIC with this MAC instead of PCI order.
    #[serde(default)]
    pub mac: Option<Mac>,
    /// `a.b.c.d/len` (the box's address and the subnet it shares with local
    /// hosts) or `dhcp` (WAN only). Absent: the port holds no address.
    #[serde(default)]
    pub address: Option<PortAddress>,
    /// Next hop for the default route (static addresses only).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Link MTU, 576..=9216. Default 1500.
    #[serde(default = "default_port_mtu")]
    pub mtu: u16,
}

/// `[[wireguard]]`: one WireGuard interface (a tunnel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    /// `wg0`, `wg-hybrid`…; peers and claims refer to it by this name.
    pub name: Name,
    /// UDP port WireGuard listens on (the only port open on WAN). Default 51820.
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// Tunnel MTU. Default 1420 (1500 − 80). The auto MSS clamp is derived from it.
    #[serde(default = "default_tunnel_mtu")]
    pub mtu: u16,
    /// The box's own address inside the tunnel (e.g. `10.1.0.1/16`), used
    /// as a VXLAN local VTEP. Optional for claim-only (hybrid) setups.
    #[serde(default)]
    pub address: Option<Ipv4Cidr>,
    /// Where the private key lives: `device:NAME`. The box generates it and
    /// never sends it out; `routerctl key show` prints the public half.
    pub private_key: KeyRef,
}

/// `[[peers]]`: the WireGuard peer on the other side of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Claims name their delivery peer by this. Convention: the peer's side
    /// (`cloud`, `onprem`, `wro`).
    pub name: Name,
    /// The `[[wireguard]]` interface this peer belongs to.
    pub tunnel: Name,
    /// The peer's public key, base64 as printed by `wg pubkey`.
    pub public_key: PublicKey,
    /// `host:port` to dial. The host may be a DNS name (re-resolved, for
    /// dynamic addresses), an IPv4 or a bracketed IPv6 address. Absent: wait
    /// for the peer to dial in.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// Prefixes routed to this peer and accepted from it (cryptokey routing).
    #[serde(default, deserialize_with = "bounded")]
    pub allowed_ips: Vec<Ipv4Cidr, MAX_ALLOWED_IPS>,
    /// Seconds between keepalives, 1..=65535; set it on the side that dials
    /// so NAT and cloud edge state stay warm (25 is usual). Absent: off.
    #[serde(default)]
    pub persistent_keepalive: Option<u16>,
    /// Optional pre-shared key slot, `device:NAME` (imported on both boxes).
    #[serde(default)]
    pub preshared_key: Option<KeyRef>,
}

/// How the capturing box gets the packets for a claimed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureMethod {
    /// Answer ARP for the /32 on a LAN port, so local hosts send the box the frames.
    ProxyArp,
    /// The provider fabric already delivers the packets to the port (a
    /// secondary IP of the NIC in the cloud); the box forwards them and never
    /// holds or answers for the address.
    ProviderSecondaryIp,
}

/// `[claims.capture]`: what the box that does *not* own the address does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// `proxy-arp` or `provider-secondary-ip`.
    pub method: CaptureMethod,
    /// The port on the capturing box where the packets arrive.
    pub port: Name,
    /// Always `false`: the capturing box never configures the address on
    /// itself (`configureOSAddress: false` in the seed); `true` is refused.
    #[serde(default)]
    pub configure_os_address: bool,
}

/// `[claims.delivery]`: where the capturing box sends what it captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// The `[[wireguard]]` interface the /32 route points at.
    pub tunnel: Name,
    /// The peer on that tunnel (on the capturing box) that leads to the owner.
    pub peer: Name,
}

/// `[[claims]]`: one moved /32 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The moved address; must be a /32 (`10.0.0.9` or `10.0.0.9/32`).
    pub address: Ipv4Cidr,
    /// The side where the host with this address really lives. That box
    /// delivers locally; the other box captures.
    pub owner: Name,
    /// Gratuitous ARPs when capture starts (proxy-arp only; 0..=16). Default 3
    /// for proxy-arp, 0 for provider-secondary-ip (which must stay 0).
    #[serde(default)]
    pub gratuitous_arp: Option<u8>,
    /// Seconds a live host found using the address must stay silent before
    /// the box probes it again and, if nobody answers, captures again
    /// (proxy-arp only; 2..=65535). Default 60.
    #[serde(default)]
    pub conflict_hold: Option<u16>,
    /// On the owner box: the port where the host lives. Default: the port
    /// whose subnet contains the address.
    #[serde(default)]
    pub local_port: Option<Name>,
    /// `auto` (tunnel MTU − 40) or a fixed MSS, 536..=9176. Applied to SYN
    /// and SYN-ACK in both directions; never raises an MSS.
    #[serde(default)]
    pub mss_clamp: MssClamp,
    pub capture: Capture,
    pub delivery: Delivery,
}

/// `[[segments]]`: one VXLAN segment bridging a LAN port to remote VTEPs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub name: Name,
    /// VXLAN network identifier, 1..=16777215 (24 bits), the same at every VTEP.
    pub vni: u32,
    /// The LAN port bridged into the segment.
    pub port: Name,
    /// This box's VTEP address (normally its tunnel address, so VXLAN runs
    /// inside WireGuard).
    pub local_vtep: Ipv4Addr,
    /// The other VTEPs (their tunnel addresses).
    #[serde(default, deserialize_with = "bounded")]
    pub remote_vteps: Vec<Ipv4Addr, MAX_VTEPS>,
    /// VXLAN UDP port. Default 4789.
    #[serde(default = "default_vxlan_port")]
    pub udp_port: u16,
    /// Overlay MTU. Default 1370 = 1500 − 80 (WireGuard) − 50 (VXLAN).
    #[serde(default = "default_segment_mtu")]
    pub mtu: u16,
    /// `auto` (segment MTU − 40) or a fixed MSS for TCP crossing the segment.
    #[serde(default)]
    pub mss_clamp: MssClamp,
    /// Where the remote VTEPs and MACs come from: `static` (only
    /// `remote_vteps`; the default) or `evpn` (BGP EVPN, `[bgp]`;
    /// `remote_vteps` then supplement the VTEPs BGP learned).
    #[serde(default)]
    pub control: SegmentControl,
}

/// How a segment learns its remote VTEPs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentControl {
    /// The configured `remote_vteps`; MACs learned from the data plane.
    #[default]
    Static,
    /// BGP EVPN: VTEPs from type-3 routes, remote MACs from type-2 routes,
    /// the segment's local MACs advertised; `remote_vteps` are added.
    Evpn,
}

impl SegmentControl {
    /// As the file writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            SegmentControl::Static => "static",
            SegmentControl::Evpn => "evpn",
        }
    }
}

/// `[bgp]`: the box as a BGP EVPN speaker (iBGP: every peer is in `asn`),
/// the way a Proxmox EVPN controller's FRR peers with its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    /// The AS of the box and of every peer (iBGP), 1..=4294967294.
    pub asn: u32,
    /// The BGP identifier. Default: the first segment's `local_vtep`.
    #[serde(default)]
    pub router_id: Option<Ipv4Addr>,
    /// The peers (Proxmox nodes' tunnel addresses, or a route reflector),
    /// at most 16.
    #[serde(default, deserialize_with = "bounded")]
    pub peers: Vec<BgpPeer, MAX_BGP_PEERS>,
    /// The hold time the box proposes, seconds: 0 (no keepalives) or
    /// 3..=65535. Default 90; the smaller of both sides' is used.
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
}

/// `[[bgp.peers]]`: one BGP neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeer {
    /// The peer's address (reached through the tunnel or a LAN port).
    pub address: Ipv4Addr,
    /// Shown in status and `routerctl bgp summary`.
    pub name: Name,
}

impl Bgp {
    /// The BGP identifier the box uses: `router_id`, else the first
    /// segment's `local_vtep`, else the tunnel address.
    pub fn effective_router_id(&self, config: &Config) -> Option<Ipv4Addr> {
        self.router_id
            .or_else(|| config.segments.first().map(|s| s.local_vtep))
            .or_else(|| config.wireguard.first().and_then(|t| t.address).map(|a| a.addr()))
    }
}

/// `[dns]`: where the box resolves peer endpoints given by name.
///
/// The image asks these servers, in order; with none it asks the servers of
/// the WAN port's DHCP lease (configured servers win when both exist).
/// routerd-host ignores them: it resolves with the host's resolver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Unicast IPv4 resolvers, tried in order. Default: none.
    #[serde(default, deserialize_with = "bounded")]
    pub servers: Vec<Ipv4Addr, MAX_DNS_SERVERS>,
}

// Wire bounds, field types in declaration order (checked exactly by a test).
wire_max_struct!(Name { heapless::String<MAX_NAME_LEN> });
wire_max_struct!(DnsName { heapless::String<MAX_HOST_LEN> });
wire_max_struct!(Ipv4Cidr { [u8; 4], u8 });
wire_max_struct!(Mac { [u8; 6] });
wire_max_struct!(PublicKey { [u8; 32] });
wire_max_enum!(KeyRef { (Name) });
wire_max_enum!(crate::types::Host { (DnsName), ([u8; 4]), ([u8; 16]) });
wire_max_struct!(Endpoint { crate::types::Host, u16 });
wire_max_enum!(PortAddress { (), (Ipv4Cidr) });
wire_max_enum!(MssClamp { (), (u16) });
wire_max_enum!(PortRole { (), () });
wire_max_enum!(CaptureMethod { (), () });
wire_max_struct!(Device { Name, Name });
wire_max_struct!(Port { Name, PortRole, Option<Mac>, Option<PortAddress>, Option<Ipv4Addr>, u16 });
wire_max_struct!(Tunnel { Name, u16, u16, Option<Ipv4Cidr>, KeyRef });
wire_max_struct!(Peer {
    Name, Name, PublicKey, Option<Endpoint>, Vec<Ipv4Cidr, MAX_ALLOWED_IPS>, Option<u16>,
    Option<KeyRef>,
});
wire_max_struct!(Capture { CaptureMethod, Name, bool });
wire_max_struct!(Delivery { Name, Name });
wire_max_struct!(Claim { Ipv4Cidr, Name, Option<u8>, Option<u16>, Option<Name>, MssClamp, Capture, Delivery });
wire_max_struct!(Segment { Name, u32, Name, Ipv4Addr, Vec<Ipv4Addr, MAX_VTEPS>, u16, u16, MssClamp, SegmentControl });
wire_max_enum!(SegmentControl { (), () });
wire_max_struct!(BgpPeer { Ipv4Addr, Name });
wire_max_struct!(Bgp { u32, Option<Ipv4Addr>, Vec<BgpPeer, MAX_BGP_PEERS>, u16 });
wire_max_struct!(Dns { Vec<Ipv4Addr, MAX_DNS_SERVERS> });
wire_max_struct!(Config {
    Device, Vec<Port, MAX_PORTS>, Vec<Tunnel, MAX_TUNNELS>, Vec<Peer, MAX_PEERS>,
    Vec<Claim, MAX_CLAIMS>, Vec<Segment, MAX_SEGMENTS>, Dns, Vec<Nat, MAX_NAT>, Option<Firewall>, Option<Bgp>,
});

/// What one box does with one claim (see `Config::claim_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAction<'a> {
    /// The address lives on the other side: capture it on `port` and deliver
    /// it as a /32 route over `tunnel` to `peer`.
    Capture { method: CaptureMethod, port: &'a Name, tunnel: &'a Name, peer: &'a Name },
    /// The address lives on this side: packets for it arriving from the
    /// tunnel are delivered on `port` (ARP-resolving the real host). `None`
    /// when no port can be found (a validation error).
    DeliverLocally { port: Option<&'a Name> },
}

impl Claim {
    /// True when the box on `side` owns the address (delivers it locally).
    pub fn is_owned_by(&self, side: &Name) -> bool {
        self.owner == *side
    }

    /// Gratuitous ARP count with the per-method default applied.
    pub fn gratuitous_arp_count(&self) -> u8 {
        match (self.gratuitous_arp, self.capture.method) {
            (Some(n), _) => n,
            (None, CaptureMethod::ProxyArp) => DEFAULT_GRATUITOUS_ARP,
            (None, CaptureMethod::ProviderSecondaryIp) => 0,
        }
    }

    /// Conflict hold in seconds, with the default applied.
    pub fn conflict_hold_secs(&self) -> u16 {
        self.conflict_hold.unwrap_or(DEFAULT_CONFLICT_HOLD)
    }
}

impl Config {
    /// What this box (its `device.side`) does with `claim`: the capture vs
    /// local delivery derivation both boxes of a pair apply to the one shared
    /// claim list.
    pub fn claim_action<'a>(&'a self, claim: &'a Claim) -> ClaimAction<'a> {
        if claim.is_owned_by(&self.device.side) {
            ClaimAction::DeliverLocally { port: self.local_port_for(claim) }
        } else {
            ClaimAction::Capture {
                method: claim.capture.method,
                port: &claim.capture.port,
                tunnel: &claim.delivery.tunnel,
                peer: &claim.delivery.peer,
            }
        }
    }

    /// The port where an owned claim's host lives: `local_port` if given,
    /// else the first port with a static subnet containing the address.
    pub fn local_port_for<'a>(&'a self, claim: &'a Claim) -> Option<&'a Name> {
        if let Some(p) = &claim.local_port {
            return Some(p);
        }
        self.ports
            .iter()
            .find(|p| match p.address {
                Some(PortAddress::Static(c)) => c.prefix_len() < 32 && c.contains(claim.address.addr()),
                _ => false,
            })
            .map(|p| &p.name)
    }

    pub fn port(&self, name: &Name) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == *name)
    }

    pub fn tunnel(&self, name: &Name) -> Option<&Tunnel> {
        self.wireguard.iter().find(|t| t.name == *name)
    }

    pub fn peer(&self, name: &Name) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == *name)
    }

    /// The peer cryptokey routing picks for `ip`: the longest allowed-IP
    /// prefix containing it (ties: the first peer listed).
    pub fn route_peer(&self, ip: Ipv4Addr) -> Option<(&Peer, Ipv4Cidr)> {
        let mut best: Option<(&Peer, Ipv4Cidr)> = None;
        for peer in &self.peers {
            for a in &peer.allowed_ips {
                let better = match best {
                    Some((_, b)) => a.prefix_len() > b.prefix_len(),
                    None => true,
                };
                if a.contains(ip) && better {
                    best = Some((peer, *a));
                }
            }
        }
        best
    }

    /// True when `ip` is one of the box's own addresses (a port's static
    /// address or a tunnel address).
    pub fn is_own_address(&self, ip: Ipv4Addr) -> bool {
        let port = self.ports.iter().any(|p| matches!(p.address, Some(PortAddress::Static(c)) if c.addr() == ip));
        port || self.wireguard.iter().any(|t| matches!(t.address, Some(c) if c.addr() == ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn claim_action_follows_owner_and_side() {
        let onprem = load(HYBRID_ONPREM);
        let cloud = load(HYBRID_CLOUD);
        // One shared claim list.
        assert_eq!(onprem.claims, cloud.claims);
        for (i, claim) in onprem.claims.iter().enumerate() {
            let a = onprem.claim_action(claim);
            let b = cloud.claim_action(&cloud.claims[i]);
            // Exactly one box of the pair captures each claim.
            let captures = |x: &ClaimAction<'_>| matches!(x, ClaimAction::Capture { .. });
            assert_ne!(captures(&a), captures(&b), "claims[{i}]");
            match claim.owner.as_str() {
                "onprem" => {
                    assert!(matches!(a, ClaimAction::DeliverLocally { port: Some(p) } if p.as_str() == "lan0"));
                    assert!(matches!(b, ClaimAction::Capture { method: CaptureMethod::ProviderSecondaryIp, .. }));
                }
                "cloud" => {
                    assert!(matches!(a, ClaimAction::Capture { method: CaptureMethod::ProxyArp, .. }));
                    assert!(matches!(b, ClaimAction::DeliverLocally { port: Some(_) }));
                }
                other => panic!("unexpected owner {other}"),
            }
        }
    }

    #[test]
    fn local_port_explicit_wins_and_missing_is_none() {
        let mut c = load(HYBRID_ONPREM);
        let i = c.claims.iter().position(|c| c.owner.as_str() == "onprem").unwrap();
        c.claims[i].local_port = Some(name("lan7"));
        let claim = c.claims[i].clone();
        assert_eq!(c.claim_action(&claim), ClaimAction::DeliverLocally { port: Some(&name("lan7")) });
        c.claims[i].local_port = None;
        c.claims[i].address = cidr("192.0.2.1/32");
        let claim = c.claims[i].clone();
        assert_eq!(c.claim_action(&claim), ClaimAction::DeliverLocally { port: None });
    }

    #[test]
    fn route_peer_is_longest_prefix() {
        let mut c = load(TWO_SITE_ROZ);
        let mut wide = c.peers[0].clone();
        wide.name = name("wide");
        wide.public_key = PublicKey([7; 32]);
        wide.allowed_ips.clear();
        wide.allowed_ips.push(cidr("10.0.0.0/8")).unwrap();
        c.peers.push(wide).unwrap();
        let (p, _) = c.route_peer(Ipv4Addr::new(10, 2, 0, 1)).unwrap();
        assert_eq!(p.name.as_str(), "wro");
        let (p, _) = c.route_peer(Ipv4Addr::new(10, 9, 0, 1)).unwrap();
        assert_eq!(p.name.as_str(), "wide");
        assert!(c.route_peer(Ipv4Addr::new(192, 0, 2, 1)).is_none());
    }

    #[test]
    fn defaults_apply() {
        let c = load(
            r#"
            device = { name = "b", side = "s" }
            [[ports]]
            name = "lan0"
            role = "lan"
            [[wireguard]]
            name = "wg0"
            private_key = "device:wg0"
            [[segments]]
            name = "s"
            vni = 5
            port = "lan0"
            local_vtep = "10.0.0.1"
            "#,
        );
        assert_eq!(c.ports[0].mtu, DEFAULT_PORT_MTU);
        assert_eq!(c.wireguard[0].mtu, DEFAULT_TUNNEL_MTU);
        assert_eq!(c.wireguard[0].listen_port, DEFAULT_LISTEN_PORT);
        assert_eq!(c.segments[0].udp_port, DEFAULT_VXLAN_PORT);
        assert_eq!(c.segments[0].mtu, DEFAULT_SEGMENT_MTU);
        assert_eq!(c.segments[0].mss_clamp, MssClamp::Auto);
    }

    #[test]
    fn gratuitous_arp_defaults_per_method() {
        let c = load(HYBRID_ONPREM);
        for claim in &c.claims {
            let expected = match claim.capture.method {
                CaptureMethod::ProxyArp => claim.gratuitous_arp.unwrap_or(3),
                CaptureMethod::ProviderSecondaryIp => 0,
            };
            assert_eq!(claim.gratuitous_arp_count(), expected);
        }
    }
}

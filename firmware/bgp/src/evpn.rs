//! EVPN routes (RFC 7432, RFC 8365 for VXLAN), route distinguishers,
//! extended communities and the PMSI tunnel attribute (RFC 6514).
//!
//! ```text
//! NLRI:    route type u8 | length u8 | value[length]
//! type 2:  RD[8] | ESI[10] | Ethernet tag u32 | MAC len u8 (48) | MAC[6]
//!          | IP len u8 (0/32/128) | IP[0/4/16] | label1[3] | label2[3]?
//! type 3:  RD[8] | Ethernet tag u32 | IP len u8 (32/128) | originator IP[4/16]
//! type 5:  RD[8] | ESI[10] | Ethernet tag u32 | prefix len u8 | prefix[4/16]
//!          | gateway IP[4/16] | label[3]            (length 34 or 58)
//! types 1, 4 and unknown ones: skipped by their length.
//! ```
//!
//! Labels: with VXLAN the 3 label bytes carry the 24-bit VNI (RFC 8365
//! §5.1.3), in type 2/5 NLRIs and in the PMSI tunnel attribute alike; that
//! is what FRR sends and expects (its `vni2label` writes the VNI's three
//! bytes), so we do the same. (An MPLS label would sit in the upper 20 bits;
//! we never see one on a VXLAN EVPN.)
//!
//! NLRIs are read by [`NlriIter`] straight from the UPDATE's bytes — no
//! buffer per message, any number of routes.

use crate::wire::{Error, Reader, Writer};
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// EVPN route types.
pub mod route_type {
    pub const ETHERNET_AD: u8 = 1;
    pub const MAC_IP: u8 = 2;
    pub const INCLUSIVE_MULTICAST: u8 = 3;
    pub const ETHERNET_SEGMENT: u8 = 4;
    pub const IP_PREFIX: u8 = 5;
}

/// BGP encapsulation tunnel type for VXLAN (RFC 8365 / RFC 9012).
pub const TUNNEL_VXLAN: u16 = 8;
/// PMSI tunnel type "ingress replication" (RFC 6514 §5).
pub const PMSI_INGRESS_REPLICATION: u8 = 6;

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A route distinguisher (RFC 4364 §4.2), kept as its 8 wire bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Rd(pub [u8; 8]);

impl Rd {
    /// Type 0: 2-octet AS : 4-octet number.
    pub fn as2(asn: u16, n: u32) -> Rd {
        let [a, b] = asn.to_be_bytes();
        let [c, d, e, g] = n.to_be_bytes();
        Rd([0, 0, a, b, c, d, e, g])
    }
    /// Type 1: IPv4 address : 2-octet number (what FRR derives: router-id:index).
    pub fn ipv4(ip: Ipv4Addr, n: u16) -> Rd {
        let [a, b, c, d] = ip.octets();
        let [e, g] = n.to_be_bytes();
        Rd([0, 1, a, b, c, d, e, g])
    }
    /// Type 2: 4-octet AS : 2-octet number.
    pub fn as4(asn: u32, n: u16) -> Rd {
        let [a, b, c, d] = asn.to_be_bytes();
        let [e, g] = n.to_be_bytes();
        Rd([0, 2, a, b, c, d, e, g])
    }
    /// The type field.
    pub fn rd_type(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }
}

/// As FRR prints it: `65000:100`, `10.0.0.1:2`, `4200000000:7`.
impl fmt::Display for Rd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [_, _, a, b, c, d, e, g] = self.0;
        match self.rd_type() {
            0 => write!(f, "{}:{}", u16::from_be_bytes([a, b]), u32::from_be_bytes([c, d, e, g])),
            1 => write!(f, "{}:{}", Ipv4Addr::new(a, b, c, d), u16::from_be_bytes([e, g])),
            2 => write!(f, "{}:{}", u32::from_be_bytes([a, b, c, d]), u16::from_be_bytes([e, g])),
            t => write!(f, "type{t}:{a:02x}{b:02x}{c:02x}{d:02x}{e:02x}{g:02x}"),
        }
    }
}

/// An Ethernet segment identifier (all zeros for single-homed VTEPs).
pub type Esi = [u8; 10];

/// Type 2: MAC/IP advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacIpRoute {
    pub rd: Rd,
    pub esi: Esi,
    pub eth_tag: u32,
    pub mac: Mac,
    pub ip: Option<IpAddr>,
    /// Label 1: the L2 VNI with VXLAN (24 bits).
    pub label1: u32,
    /// Label 2: the L3 VNI in symmetric IRB, if present.
    pub label2: Option<u32>,
}

/// Type 3: inclusive multicast Ethernet tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImetRoute {
    pub rd: Rd,
    pub eth_tag: u32,
    /// The originating VTEP.
    pub originator: IpAddr,
}

/// Type 5: IP prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixRoute {
    pub rd: Rd,
    pub esi: Esi,
    pub eth_tag: u32,
    pub prefix: IpAddr,
    pub prefix_len: u8,
    pub gateway: IpAddr,
    /// The L3 VNI (24 bits).
    pub label: u32,
}

/// One EVPN NLRI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvpnRoute {
    MacIp(MacIpRoute),
    Imet(ImetRoute),
    IpPrefix(PrefixRoute),
    /// Types 1, 4 and unknown types: framed correctly, not interpreted.
    Other {
        route_type: u8,
    },
}

fn nlri_err(route_type: u8, len: usize) -> Error {
    Error::InvalidNetworkField { route_type, len: len.min(255) as u8 }
}

fn read_ip(r: &mut Reader<'_>, bits: u8) -> Option<Option<IpAddr>> {
    match bits {
        0 => Some(None),
        32 => r.ipv4().map(|a| Some(IpAddr::V4(a))),
        128 => r.array::<16>().map(|a| Some(IpAddr::V6(Ipv6Addr::from(a)))),
        _ => None,
    }
}

fn rd(r: &mut Reader<'_>) -> Option<Rd> {
    r.array().map(Rd)
}

impl EvpnRoute {
    /// Parse the value of one NLRI of `route_type` (the bytes after the
    /// type and length octets). Every length must be exact.
    pub fn parse(route_type: u8, value: &[u8]) -> Result<EvpnRoute, Error> {
        let err = || nlri_err(route_type, value.len());
        let mut r = Reader::new(value);
        let route = match route_type {
            route_type::MAC_IP => {
                let (Some(rd), Some(esi), Some(eth_tag), Some(mac_bits)) = (rd(&mut r), r.array(), r.u32(), r.u8()) else {
                    return Err(err());
                };
                if mac_bits != 48 {
                    return Err(err());
                }
                let mac = Mac(r.array().ok_or_else(err)?);
                let ip_bits = r.u8().ok_or_else(err)?;
                let ip = read_ip(&mut r, ip_bits).ok_or_else(err)?;
                let label1 = r.u24().ok_or_else(err)?;
                let label2 = match r.len() {
                    0 => None,
                    3 => r.u24(),
                    _ => return Err(err()),
                };
                EvpnRoute::MacIp(MacIpRoute { rd, esi, eth_tag, mac, ip, label1, label2 })
            }
            route_type::INCLUSIVE_MULTICAST => {
                let (Some(rd), Some(eth_tag), Some(bits)) = (rd(&mut r), r.u32(), r.u8()) else {
                    return Err(err());
                };
                let originator = read_ip(&mut r, bits).ok_or_else(err)?.ok_or_else(err)?;
                EvpnRoute::Imet(ImetRoute { rd, eth_tag, originator })
            }
            route_type::IP_PREFIX => {
                let (Some(rd), Some(esi), Some(eth_tag), Some(prefix_len)) = (rd(&mut r), r.array(), r.u32(), r.u8()) else {
                    return Err(err());
                };
                let (prefix, gateway, max) = match value.len() {
                    34 => (r.ipv4().map(IpAddr::V4), r.ipv4().map(IpAddr::V4), 32),
                    58 => (r.array::<16>().map(|a| IpAddr::V6(a.into())), r.array::<16>().map(|a| IpAddr::V6(a.into())), 128),
                    _ => return Err(err()),
                };
                let (Some(prefix), Some(gateway), Some(label)) = (prefix, gateway, r.u24()) else {
                    return Err(err());
                };
                if prefix_len > max {
                    return Err(err());
                }
                EvpnRoute::IpPrefix(PrefixRoute { rd, esi, eth_tag, prefix, prefix_len, gateway, label })
            }
            t => return Ok(EvpnRoute::Other { route_type: t }),
        };
        if !r.is_empty() {
            return Err(err());
        }
        Ok(route)
    }

    /// The route's distinguisher, if it is a type we interpret.
    pub fn rd(&self) -> Option<Rd> {
        match self {
            EvpnRoute::MacIp(m) => Some(m.rd),
            EvpnRoute::Imet(i) => Some(i.rd),
            EvpnRoute::IpPrefix(p) => Some(p.rd),
            EvpnRoute::Other { .. } => None,
        }
    }

    /// Append this route as one NLRI (type, length, value).
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        let ip_bytes = |w: &mut Writer<'_>, ip: &IpAddr| match ip {
            IpAddr::V4(a) => w.put(&a.octets()),
            IpAddr::V6(a) => w.put(&a.octets()),
        };
        let bits = |ip: &IpAddr| if ip.is_ipv4() { 32u8 } else { 128 };
        match self {
            EvpnRoute::MacIp(m) => {
                let ip_len = m.ip.map_or(0, |ip| if ip.is_ipv4() { 4 } else { 16 });
                let len = 33 + ip_len + if m.label2.is_some() { 3 } else { 0 };
                w.u8(route_type::MAC_IP)?;
                w.u8(len as u8)?;
                w.put(&m.rd.0)?;
                w.put(&m.esi)?;
                w.u32(m.eth_tag)?;
                w.u8(48)?;
                w.put(&m.mac.0)?;
                match &m.ip {
                    None => w.u8(0)?,
                    Some(ip) => {
                        w.u8(bits(ip))?;
                        ip_bytes(w, ip)?;
                    }
                }
                w.u24(m.label1)?;
                if let Some(l2) = m.label2 {
                    w.u24(l2)?;
                }
            }
            EvpnRoute::Imet(i) => {
                w.u8(route_type::INCLUSIVE_MULTICAST)?;
                w.u8(if i.originator.is_ipv4() { 17 } else { 29 })?;
                w.put(&i.rd.0)?;
                w.u32(i.eth_tag)?;
                w.u8(bits(&i.originator))?;
                ip_bytes(w, &i.originator)?;
            }
            EvpnRoute::IpPrefix(p) => {
                if p.prefix.is_ipv4() != p.gateway.is_ipv4() {
                    return Err(Error::InvalidNetworkField { route_type: route_type::IP_PREFIX, len: 0 });
                }
                w.u8(route_type::IP_PREFIX)?;
                w.u8(if p.prefix.is_ipv4() { 34 } else { 58 })?;
                w.put(&p.rd.0)?;
                w.put(&p.esi)?;
                w.u32(p.eth_tag)?;
                w.u8(p.prefix_len)?;
                ip_bytes(w, &p.prefix)?;
                ip_bytes(w, &p.gateway)?;
                w.u24(p.label)?;
            }
            EvpnRoute::Other { route_type } => {
                return Err(Error::InvalidNetworkField { route_type: *route_type, len: 0 });
            }
        }
        Ok(())
    }
}

/// Whether every EVPN NLRI in `data` (an MP_REACH/MP_UNREACH's NLRI field)
/// has its type and length octets and fits in the field: whether the
/// routes can be located at all. RFC 7606 §5.3 and §3(j): when they cannot,
/// treat-as-withdraw is impossible and the session must be reset.
pub fn nlri_framed(data: &[u8]) -> bool {
    let mut r = Reader::new(data);
    while !r.is_empty() {
        let (Some(_), Some(len)) = (r.u8(), r.u8()) else { return false };
        if r.take(len as usize).is_none() {
            return false;
        }
    }
    true
}

/// Iterates over the EVPN NLRIs of an MP_REACH/MP_UNREACH attribute,
/// reading the raw bytes. After the first framing or parse error it yields
/// that error once and then ends (the rest cannot be located reliably).
#[derive(Clone, Debug)]
pub struct NlriIter<'a> {
    rest: Reader<'a>,
    done: bool,
}

impl<'a> NlriIter<'a> {
    pub const fn new(data: &'a [u8]) -> Self {
        NlriIter { rest: Reader::new(data), done: false }
    }
}

impl Iterator for NlriIter<'_> {
    type Item = Result<EvpnRoute, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let (Some(t), Some(len)) = (self.rest.u8(), self.rest.u8()) else {
            self.done = true;
            return Some(Err(nlri_err(0, 0)));
        };
        let Some(value) = self.rest.take(len as usize) else {
            self.done = true;
            return Some(Err(nlri_err(t, len as usize)));
        };
        let r = EvpnRoute::parse(t, value);
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

/// A route target (RFC 4360 §4, RFC 5668).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Type 0x00: 2-octet AS : 4-octet value (FRR's auto RT `ASN:VNI`).
    As2 { asn: u16, value: u32 },
    /// Type 0x01: IPv4 address : 2-octet value.
    Ipv4 { ip: Ipv4Addr, value: u16 },
    /// Type 0x02: 4-octet AS : 2-octet value.
    As4 { asn: u32, value: u16 },
}

impl RouteTarget {
    /// FRR's automatic RT for `vni` under `asn`: `ASN:VNI` as a 2-octet-AS
    /// RT (the low 16 bits of a 4-octet ASN, as FRR does).
    pub fn auto(asn: u32, vni: u32) -> RouteTarget {
        RouteTarget::As2 { asn: asn as u16, value: vni }
    }

    /// Whether this RT is `asn:vni` in any of the three forms (a 4-octet
    /// ASN may appear as its low 16 bits).
    pub fn matches(&self, asn: u32, vni: u32) -> bool {
        match *self {
            RouteTarget::As2 { asn: a, value } => (a as u32 == asn || a == asn as u16) && value == vni,
            RouteTarget::As4 { asn: a, value } => a == asn && value as u32 == vni,
            RouteTarget::Ipv4 { .. } => false,
        }
    }

    /// The local administrator part.
    pub fn value(&self) -> u32 {
        match *self {
            RouteTarget::As2 { value, .. } => value,
            RouteTarget::Ipv4 { value, .. } | RouteTarget::As4 { value, .. } => value as u32,
        }
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTarget::As2 { asn, value } => write!(f, "{asn}:{value}"),
            RouteTarget::Ipv4 { ip, value } => write!(f, "{ip}:{value}"),
            RouteTarget::As4 { asn, value } => write!(f, "{asn}:{value}"),
        }
    }
}

/// An extended community (8 bytes) in the forms EVPN uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtCommunity {
    RouteTarget(RouteTarget),
    /// Opaque 0x03/0x0c: BGP encapsulation (8 = VXLAN).
    Encapsulation {
        tunnel_type: u16,
    },
    /// EVPN 0x06/0x00: MAC mobility (RFC 7432 §7.7).
    MacMobility {
        sticky: bool,
        seq: u32,
    },
    /// EVPN 0x06/0x03: router's MAC (RFC 9135).
    RouterMac(Mac),
    /// Opaque 0x03/0x0d: default gateway (RFC 7432 §7.8).
    DefaultGateway,
    /// Anything else, as received.
    Other([u8; 8]),
}

impl ExtCommunity {
    /// Interpret 8 wire bytes.
    pub fn parse(b: [u8; 8]) -> ExtCommunity {
        let [t, s, a, c, d, e, g, h] = b;
        match (t, s) {
            (0x00, 0x02) => {
                ExtCommunity::RouteTarget(RouteTarget::As2 { asn: u16::from_be_bytes([a, c]), value: u32::from_be_bytes([d, e, g, h]) })
            }
            (0x01, 0x02) => {
                ExtCommunity::RouteTarget(RouteTarget::Ipv4 { ip: Ipv4Addr::new(a, c, d, e), value: u16::from_be_bytes([g, h]) })
            }
            (0x02, 0x02) => {
                ExtCommunity::RouteTarget(RouteTarget::As4 { asn: u32::from_be_bytes([a, c, d, e]), value: u16::from_be_bytes([g, h]) })
            }
            (0x03, 0x0c) => ExtCommunity::Encapsulation { tunnel_type: u16::from_be_bytes([g, h]) },
            (0x03, 0x0d) => ExtCommunity::DefaultGateway,
            (0x06, 0x00) => ExtCommunity::MacMobility { sticky: a & 1 != 0, seq: u32::from_be_bytes([d, e, g, h]) },
            (0x06, 0x03) => ExtCommunity::RouterMac(Mac([a, c, d, e, g, h])),
            _ => ExtCommunity::Other(b),
        }
    }

    /// The 8 wire bytes.
    pub fn to_bytes(&self) -> [u8; 8] {
        match *self {
            ExtCommunity::RouteTarget(RouteTarget::As2 { asn, value }) => {
                let [a, c] = asn.to_be_bytes();
                let [d, e, g, h] = value.to_be_bytes();
                [0x00, 0x02, a, c, d, e, g, h]
            }
            ExtCommunity::RouteTarget(RouteTarget::Ipv4 { ip, value }) => {
                let [a, c, d, e] = ip.octets();
                let [g, h] = value.to_be_bytes();
                [0x01, 0x02, a, c, d, e, g, h]
            }
            ExtCommunity::RouteTarget(RouteTarget::As4 { asn, value }) => {
                let [a, c, d, e] = asn.to_be_bytes();
                let [g, h] = value.to_be_bytes();
                [0x02, 0x02, a, c, d, e, g, h]
            }
            ExtCommunity::Encapsulation { tunnel_type } => {
                let [g, h] = tunnel_type.to_be_bytes();
                [0x03, 0x0c, 0, 0, 0, 0, g, h]
            }
            ExtCommunity::DefaultGateway => [0x03, 0x0d, 0, 0, 0, 0, 0, 0],
            ExtCommunity::MacMobility { sticky, seq } => {
                let [d, e, g, h] = seq.to_be_bytes();
                [0x06, 0x00, sticky as u8, 0, d, e, g, h]
            }
            ExtCommunity::RouterMac(Mac([a, c, d, e, g, h])) => [0x06, 0x03, a, c, d, e, g, h],
            ExtCommunity::Other(b) => b,
        }
    }
}

/// The EXTENDED_COMMUNITIES attribute's value (length already checked to be
/// a multiple of 8); iterate to read the communities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtCommunities<'a>(pub &'a [u8]);

impl<'a> ExtCommunities<'a> {
    pub fn iter(&self) -> impl Iterator<Item = ExtCommunity> + 'a {
        self.0.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            ExtCommunity::parse(b)
        })
    }
    /// The route targets.
    pub fn route_targets(&self) -> impl Iterator<Item = RouteTarget> + 'a {
        self.iter().filter_map(|c| match c {
            ExtCommunity::RouteTarget(rt) => Some(rt),
            _ => None,
        })
    }
    /// The MAC mobility community (sticky, sequence), if any.
    pub fn mac_mobility(&self) -> Option<(bool, u32)> {
        self.iter().find_map(|c| match c {
            ExtCommunity::MacMobility { sticky, seq } => Some((sticky, seq)),
            _ => None,
        })
    }
    /// The encapsulation's tunnel type, if any.
    pub fn encapsulation(&self) -> Option<u16> {
        self.iter().find_map(|c| match c {
            ExtCommunity::Encapsulation { tunnel_type } => Some(tunnel_type),
            _ => None,
        })
    }
    /// The router's MAC, if any.
    pub fn router_mac(&self) -> Option<Mac> {
        self.iter().find_map(|c| match c {
            ExtCommunity::RouterMac(m) => Some(m),
            _ => None,
        })
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The PMSI tunnel attribute (RFC 6514 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PmsiTunnel {
    pub flags: u8,
    pub tunnel_type: u8,
    /// The 3 label bytes: the VNI with VXLAN.
    pub label: u32,
    /// The tunnel endpoint for ingress replication with an IPv4 identifier.
    pub endpoint: Option<Ipv4Addr>,
}

impl PmsiTunnel {
    /// Ingress replication to `endpoint` for `vni`, as we originate it.
    pub fn ingress_replication(vni: u32, endpoint: Ipv4Addr) -> PmsiTunnel {
        PmsiTunnel { flags: 0, tunnel_type: PMSI_INGRESS_REPLICATION, label: vni, endpoint: Some(endpoint) }
    }

    /// Parse the attribute value: at least flags, type and label; an
    /// ingress-replication tunnel identifier must be an IPv4 (4) or IPv6
    /// (16, kept as `None`) address.
    pub fn parse(value: &[u8]) -> Result<PmsiTunnel, Error> {
        let err = |field| Error::OptionalAttribute { ty: crate::update::attr::PMSI_TUNNEL, field };
        let mut r = Reader::new(value);
        let (Some(flags), Some(tunnel_type), Some(label)) = (r.u8(), r.u8(), r.u24()) else {
            return Err(err("PMSI tunnel header"));
        };
        let endpoint = match (tunnel_type, r.len()) {
            (PMSI_INGRESS_REPLICATION, 4) => r.ipv4(),
            (PMSI_INGRESS_REPLICATION, 16) => None,
            (PMSI_INGRESS_REPLICATION, _) => return Err(err("ingress replication endpoint")),
            _ => None,
        };
        Ok(PmsiTunnel { flags, tunnel_type, label, endpoint })
    }

    /// The attribute value.
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u8(self.flags)?;
        w.u8(self.tunnel_type)?;
        w.u24(self.label)?;
        if let Some(e) = self.endpoint {
            w.put(&e.octets())?;
        }
        Ok(())
    }

    /// Length of the encoded value.
    pub fn encoded_len(&self) -> usize {
        5 + if self.endpoint.is_some() { 4 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::string::ToString;

    fn roundtrip(route: EvpnRoute) -> usize {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        route.encode(&mut w).unwrap();
        let n = w.len();
        let mut it = NlriIter::new(&buf[..n]);
        assert_eq!(it.next(), Some(Ok(route)));
        assert_eq!(it.next(), None);
        n
    }

    #[test]
    fn rd_display_as_frr() {
        assert_eq!(Rd::ipv4(Ipv4Addr::new(10, 0, 0, 1), 2).to_string(), "10.0.0.1:2");
        assert_eq!(Rd::as2(65000, 100).to_string(), "65000:100");
        assert_eq!(Rd::as4(4_200_000_000, 7).to_string(), "4200000000:7");
        assert_eq!(Rd([0, 9, 0, 0, 0, 0, 0, 1]).to_string(), "type9:000000000001");
        assert_eq!(format!("{}", Mac([2, 0, 0, 0, 1, 0xab])), "02:00:00:00:01:ab");
    }

    #[test]
    fn routes_roundtrip() {
        let rd = Rd::ipv4(Ipv4Addr::new(10, 99, 0, 1), 1);
        let mac = Mac([2, 0, 0, 0, 1, 1]);
        let base = MacIpRoute { rd, esi: [0; 10], eth_tag: 0, mac, ip: None, label1: 100, label2: None };
        assert_eq!(roundtrip(EvpnRoute::MacIp(base)), 35);
        let with_ip = MacIpRoute { ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))), label2: Some(5000), ..base };
        assert_eq!(roundtrip(EvpnRoute::MacIp(with_ip)), 2 + 40);
        let v6 = MacIpRoute { ip: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), ..base };
        assert_eq!(roundtrip(EvpnRoute::MacIp(v6)), 2 + 49);
        let imet = ImetRoute { rd, eth_tag: 0, originator: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)) };
        assert_eq!(roundtrip(EvpnRoute::Imet(imet)), 19);
        let p = PrefixRoute {
            rd,
            esi: [0; 10],
            eth_tag: 0,
            prefix: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)),
            prefix_len: 24,
            gateway: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            label: 4000,
        };
        assert_eq!(roundtrip(EvpnRoute::IpPrefix(p)), 36);
        let p6 = PrefixRoute { prefix: IpAddr::V6(Ipv6Addr::LOCALHOST), prefix_len: 128, gateway: IpAddr::V6(Ipv6Addr::UNSPECIFIED), ..p };
        assert_eq!(roundtrip(EvpnRoute::IpPrefix(p6)), 60);
    }

    #[test]
    fn labels_carry_the_full_24_bit_vni() {
        let rd = Rd::as2(1, 1);
        let m = MacIpRoute { rd, esi: [0; 10], eth_tag: 0, mac: Mac([2; 6]), ip: None, label1: 0x00ab_cdef, label2: None };
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        EvpnRoute::MacIp(m).encode(&mut w).unwrap();
        assert_eq!(&buf[32..35], &[0xab, 0xcd, 0xef]);
    }

    #[test]
    fn other_types_are_skipped_and_errors_stop_the_iteration() {
        // Type 1 (25 bytes), then type 4 (23 bytes), then a type 3.
        let mut raw = std::vec![1u8, 25];
        raw.extend_from_slice(&[0; 25]);
        raw.extend_from_slice(&[4, 23]);
        raw.extend_from_slice(&[0; 23]);
        raw.extend_from_slice(&[3, 17, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 32, 10, 0, 0, 1]);
        let v: std::vec::Vec<_> = NlriIter::new(&raw).collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], Ok(EvpnRoute::Other { route_type: 1 }));
        assert!(matches!(v[2], Ok(EvpnRoute::Imet(_))));
        // A type 2 whose MAC length is 40, then a good type 3: one error, then nothing.
        let mut bad = std::vec![2u8, 33];
        bad.extend_from_slice(&[0; 22]);
        bad.push(40);
        bad.extend_from_slice(&[0; 10]);
        bad.extend_from_slice(&raw[raw.len() - 19..]);
        let v: std::vec::Vec<_> = NlriIter::new(&bad).collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].unwrap_err().notification(), (3, 10));
        // A length overrunning the data.
        let v: std::vec::Vec<_> = NlriIter::new(&[3, 17, 0]).collect();
        assert_eq!(v.len(), 1);
        assert!(v[0].is_err());
        // Framing: the bad MAC length still lets the routes be located; an overrun or a lone type octet does not.
        assert!(nlri_framed(&raw) && nlri_framed(&bad) && nlri_framed(&[]));
        assert!(!nlri_framed(&[3, 17, 0]) && !nlri_framed(&raw[..raw.len() - 1]) && !nlri_framed(&[2]));
        // Type 2 with a bad IP length; type 5 of a wrong length; type 3 with no IP.
        assert!(EvpnRoute::parse(2, &[0; 33]).is_err());
        assert!(EvpnRoute::parse(5, &[0; 35]).is_err());
        assert!(EvpnRoute::parse(3, &[0; 13]).is_err());
    }

    #[test]
    fn ext_communities_roundtrip() {
        let all = [
            ExtCommunity::RouteTarget(RouteTarget::As2 { asn: 65000, value: 100 }),
            ExtCommunity::RouteTarget(RouteTarget::Ipv4 { ip: Ipv4Addr::new(10, 0, 0, 1), value: 7 }),
            ExtCommunity::RouteTarget(RouteTarget::As4 { asn: 4_200_000_000, value: 100 }),
            ExtCommunity::Encapsulation { tunnel_type: TUNNEL_VXLAN },
            ExtCommunity::MacMobility { sticky: true, seq: 77 },
            ExtCommunity::RouterMac(Mac([2, 1, 2, 3, 4, 5])),
            ExtCommunity::DefaultGateway,
            ExtCommunity::Other([0x43, 0, 1, 2, 3, 4, 5, 6]),
        ];
        let mut raw = std::vec::Vec::new();
        for c in all {
            assert_eq!(ExtCommunity::parse(c.to_bytes()), c);
            raw.extend_from_slice(&c.to_bytes());
        }
        let ec = ExtCommunities(&raw);
        assert_eq!(ec.route_targets().count(), 3);
        assert_eq!(ec.mac_mobility(), Some((true, 77)));
        assert_eq!(ec.encapsulation(), Some(8));
        assert_eq!(ec.router_mac(), Some(Mac([2, 1, 2, 3, 4, 5])));
        assert_eq!(ExtCommunity::RouteTarget(RouteTarget::auto(65000, 100)).to_bytes(), [0, 2, 0xfd, 0xe8, 0, 0, 0, 100]);
        assert!(RouteTarget::auto(65000, 100).matches(65000, 100));
        assert!(!RouteTarget::auto(65000, 100).matches(65001, 100));
        assert!(RouteTarget::As4 { asn: 4_200_000_000, value: 9 }.matches(4_200_000_000, 9));
    }

    #[test]
    fn pmsi_tunnel() {
        let p = PmsiTunnel::ingress_replication(100, Ipv4Addr::new(10, 99, 0, 1));
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf);
        p.encode(&mut w).unwrap();
        assert_eq!(w.len(), p.encoded_len());
        assert_eq!(&buf[..9], &[0, 6, 0, 0, 100, 10, 99, 0, 1]);
        assert_eq!(PmsiTunnel::parse(&buf[..9]), Ok(p));
        assert!(PmsiTunnel::parse(&buf[..4]).is_err());
        assert!(PmsiTunnel::parse(&buf[..7]).is_err());
        // Another tunnel type with no identifier is accepted (and not used).
        assert_eq!(PmsiTunnel::parse(&[0, 3, 0, 0, 1]).unwrap().endpoint, None);
    }
}

//! UPDATE messages (RFC 4271 §4.3, RFC 4760 for MP_REACH/MP_UNREACH) with
//! the revised error handling of RFC 7606.
//!
//! ```text
//! UPDATE body: withdrawn len u16 | withdrawn (IPv4) | attrs len u16
//!              | attrs (flags u8, type u8, len u8|u16, value)* | NLRI (IPv4)
//! MP_REACH:    AFI u16 | SAFI u8 | nh len u8 | next hop | reserved u8 | NLRI
//! MP_UNREACH:  AFI u16 | SAFI u8 | withdrawn NLRI
//! ```
//!
//! [`decode_update`] checks the framing and every attribute it knows and
//! classifies each fault as RFC 7606 says. `Err` means *session reset*
//! (send the NOTIFICATION of [`Error::notification`]); an `Ok` update may
//! carry [`Update::treat_as_withdraw`], in which case every EVPN NLRI it
//! names — announced or withdrawn — is withdrawn. Attributes to discard
//! are dropped and counted in [`Update::discarded`].
//!
//! | fault                                                             | handling            |
//! |-------------------------------------------------------------------|---------------------|
//! | withdrawn-routes length or total attribute length overruns        | session reset 3/1   |
//! | an attribute header/length overrunning the attribute area         | session reset 3/1   |
//! | MP_REACH or MP_UNREACH present twice (7606 §3g)                   | session reset 3/1   |
//! | any other attribute present twice (7606 §3g)                      | keep the first one  |
//! | MP_REACH shorter than 5 / next hop overrunning / MP_UNREACH < 3   | session reset 3/9   |
//! | MP_REACH next-hop length not 4, 16 or 32 (7606 §7.11)             | session reset 3/9   |
//! | MP_REACH/MP_UNREACH with wrong optional/transitive flags          | session reset 3/4   |
//! | unknown well-known (non-optional) attribute type                  | session reset 3/2   |
//! | ORIGIN: length ≠ 1, value > 2, wrong flags                        | treat-as-withdraw   |
//! | AS_PATH: segment overrun, zero-length or unknown segment, flags   | treat-as-withdraw   |
//! | NEXT_HOP, MED, LOCAL_PREF, ORIGINATOR_ID: length ≠ 4, flags       | treat-as-withdraw   |
//! | CLUSTER_LIST: length not a multiple of 4                          | treat-as-withdraw   |
//! | EXTENDED_COMMUNITIES: length not a multiple of 8                  | treat-as-withdraw   |
//! | PMSI_TUNNEL: shorter than 5, bad ingress-replication endpoint     | treat-as-withdraw   |
//! | an EVPN NLRI overrunning MP_REACH/MP_UNREACH (7606 §5.3, §3j)     | session reset 3/9   |
//! | EVPN NLRI in MP_REACH, framed right, its fields wrong             | treat-as-withdraw (the NLRIs parsed before it) |
//! | EVPN NLRI in MP_UNREACH, framed right, its fields wrong           | withdraw those parsed before it, count |
//! | ORIGIN or AS_PATH missing while MP_REACH carries NLRI (7606 §3d)  | treat-as-withdraw   |
//! | ATOMIC_AGGREGATE length ≠ 0, AGGREGATOR length ≠ 6/8, their flags | attribute discard   |
//! | unknown optional attribute                                        | skipped (counted)   |
//!
//! The AS_PATH is read with 4-octet ASNs when both sides sent the 4-octet
//! AS capability (RFC 6793), else 2-octet ones; AS4_PATH/AS4_AGGREGATOR are
//! skipped (they only matter between old and new speakers).

use crate::evpn::{nlri_framed, ExtCommunities, NlriIter, PmsiTunnel};
use crate::wire::{afi, msg, safi, Error, Reader, Writer, MAX_MESSAGE_LEN};
use core::net::{Ipv4Addr, Ipv6Addr};

/// Path attribute type codes.
pub mod attr {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH: u8 = 14;
    pub const MP_UNREACH: u8 = 15;
    pub const EXT_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const PMSI_TUNNEL: u8 = 22;
}

/// Attribute flag bits.
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// A validated AS_PATH value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AsPath<'a> {
    raw: &'a [u8],
    as4: bool,
}

impl<'a> AsPath<'a> {
    /// Check the segments of `raw` (ASNs of 4 octets if `as4`).
    pub fn parse(raw: &'a [u8], as4: bool) -> Result<AsPath<'a>, Error> {
        let width = if as4 { 4 } else { 2 };
        let mut r = Reader::new(raw);
        while !r.is_empty() {
            let (Some(ty), Some(n)) = (r.u8(), r.u8()) else {
                return Err(Error::MalformedAsPath);
            };
            if !(1..=4).contains(&ty) || n == 0 || r.take(n as usize * width).is_none() {
                return Err(Error::MalformedAsPath);
            }
        }
        Ok(AsPath { raw, as4 })
    }

    /// Every ASN in the path, in order.
    pub fn asns(&self) -> impl Iterator<Item = u32> + 'a {
        let width = if self.as4 { 4 } else { 2 };
        let mut r = Reader::new(self.raw);
        let mut left = 0usize;
        core::iter::from_fn(move || {
            while left == 0 {
                let _ty = r.u8()?;
                left = r.u8()? as usize;
            }
            left -= 1;
            let s = r.take(width)?;
            Some(s.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32))
        })
    }

    /// Whether `asn` appears (loop detection).
    pub fn contains(&self, asn: u32) -> bool {
        self.asns().any(|a| a == asn)
    }

    /// Number of ASNs (an empty path — iBGP-originated — has 0).
    pub fn len(&self) -> usize {
        self.asns().count()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// The next hop of an MP_REACH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    V4(Ipv4Addr),
    /// A global IPv6 next hop (and a link-local one when 32 bytes).
    V6(Ipv6Addr),
}

/// The MP_REACH_NLRI attribute, framing validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpReach<'a> {
    pub afi: u16,
    pub safi: u8,
    pub next_hop: NextHop,
    /// The raw NLRI bytes.
    pub nlri: &'a [u8],
}

impl<'a> MpReach<'a> {
    pub fn is_evpn(&self) -> bool {
        self.afi == afi::L2VPN && self.safi == safi::EVPN
    }
    /// The EVPN routes (meaningful only when [`MpReach::is_evpn`]).
    pub fn routes(&self) -> NlriIter<'a> {
        NlriIter::new(self.nlri)
    }
}

/// The MP_UNREACH_NLRI attribute, framing validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpUnreach<'a> {
    pub afi: u16,
    pub safi: u8,
    pub nlri: &'a [u8],
}

impl<'a> MpUnreach<'a> {
    pub fn is_evpn(&self) -> bool {
        self.afi == afi::L2VPN && self.safi == safi::EVPN
    }
    /// The EVPN routes withdrawn.
    pub fn routes(&self) -> NlriIter<'a> {
        NlriIter::new(self.nlri)
    }
}

/// The path attributes of an UPDATE we interpret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs<'a> {
    pub origin: Option<u8>,
    pub as_path: Option<AsPath<'a>>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub originator_id: Option<Ipv4Addr>,
    /// Raw CLUSTER_LIST (a multiple of 4 bytes).
    pub cluster_list: Option<&'a [u8]>,
    pub ext_communities: ExtCommunities<'a>,
    pub pmsi: Option<PmsiTunnel>,
    pub mp_reach: Option<MpReach<'a>>,
    pub mp_unreach: Option<MpUnreach<'a>>,
    /// Optional attributes of types we do not interpret (skipped).
    pub unknown: u8,
}

/// A decoded UPDATE that did not need a session reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update<'a> {
    /// IPv4 unicast withdrawn routes (raw; we never negotiate IPv4 unicast).
    pub withdrawn_ipv4: &'a [u8],
    pub attrs: Attrs<'a>,
    /// IPv4 unicast NLRI (raw; ignored).
    pub nlri_ipv4: &'a [u8],
    /// The first RFC 7606 fault that makes the whole UPDATE a withdrawal.
    pub treat_as_withdraw: Option<Error>,
    /// Attributes dropped by "attribute discard" or as duplicates.
    pub discarded: u8,
}

impl Update<'_> {
    /// An EVPN End-of-RIB marker: nothing but an empty EVPN MP_UNREACH.
    pub fn is_evpn_end_of_rib(&self) -> bool {
        self.withdrawn_ipv4.is_empty()
            && self.nlri_ipv4.is_empty()
            && self.attrs.mp_reach.is_none()
            && self.attrs.mp_unreach.is_some_and(|u| u.is_evpn() && u.nlri.is_empty())
    }
}

fn list_err(field: &'static str) -> Error {
    Error::MalformedAttributeList { field }
}

/// The optional/transitive flags each known attribute must carry; `None`
/// for types we do not interpret.
fn expected_flags(ty: u8) -> Option<u8> {
    use attr::*;
    Some(match ty {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => flag::TRANSITIVE,
        MED | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH | MP_UNREACH => flag::OPTIONAL,
        AGGREGATOR | EXT_COMMUNITIES | PMSI_TUNNEL | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR => flag::OPTIONAL | flag::TRANSITIVE,
        _ => return None,
    })
}

fn u32_of(value: &[u8]) -> Option<u32> {
    let a: [u8; 4] = value.try_into().ok()?;
    Some(u32::from_be_bytes(a))
}

fn decode_mp_reach(value: &[u8]) -> Result<MpReach<'_>, Error> {
    let err = |field| Error::OptionalAttribute { ty: attr::MP_REACH, field };
    let mut r = Reader::new(value);
    let (Some(a), Some(s), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(err("AFI/SAFI/next hop length"));
    };
    let nh = r.take(nh_len as usize).ok_or(err("next hop length"))?;
    r.u8().ok_or(err("reserved byte"))?;
    let next_hop = match nh.len() {
        4 => NextHop::V4(Reader::new(nh).ipv4().ok_or(err("next hop"))?),
        16 | 32 => NextHop::V6(Ipv6Addr::from(Reader::new(nh).array::<16>().ok_or(err("next hop"))?)),
        _ => return Err(err("next hop length")),
    };
    Ok(MpReach { afi: a, safi: s, next_hop, nlri: r.rest() })
}

fn decode_mp_unreach(value: &[u8]) -> Result<MpUnreach<'_>, Error> {
    let mut r = Reader::new(value);
    let (Some(a), Some(s)) = (r.u16(), r.u8()) else {
        return Err(Error::OptionalAttribute { ty: attr::MP_UNREACH, field: "AFI/SAFI" });
    };
    Ok(MpUnreach { afi: a, safi: s, nlri: r.rest() })
}

/// Decode an UPDATE body (after the header). `as4`: both sides negotiated
/// 4-octet AS numbers. See the module docs for what is an `Err` (session
/// reset) and what is treat-as-withdraw or attribute discard.
pub fn decode_update(body: &[u8], as4: bool) -> Result<Update<'_>, Error> {
    let mut r = Reader::new(body);
    let wlen = r.u16().ok_or(list_err("withdrawn routes length"))? as usize;
    let withdrawn_ipv4 = r.take(wlen).ok_or(list_err("withdrawn routes length"))?;
    let alen = r.u16().ok_or(list_err("total path attribute length"))? as usize;
    let attrs_raw = r.take(alen).ok_or(list_err("total path attribute length"))?;
    let nlri_ipv4 = r.rest();

    let mut a = Attrs::default();
    let mut taw: Option<Error> = None;
    let mut discarded = 0u8;
    let mut seen = [0u64; 4];
    let mut ar = Reader::new(attrs_raw);
    while !ar.is_empty() {
        let (Some(flags), Some(ty)) = (ar.u8(), ar.u8()) else {
            return Err(list_err("attribute header"));
        };
        let len = if flags & flag::EXTENDED_LENGTH != 0 { ar.u16() } else { ar.u8().map(u16::from) };
        let len = len.ok_or(list_err("attribute length"))?;
        let value = ar.take(len as usize).ok_or(list_err("attribute length overruns the attributes"))?;

        let bit = 1u64 << (ty % 64);
        let word = seen.get_mut(ty as usize / 64).ok_or(list_err("attribute type"))?;
        if *word & bit != 0 {
            if ty == attr::MP_REACH || ty == attr::MP_UNREACH {
                return Err(list_err("MP_REACH/MP_UNREACH repeated"));
            }
            discarded = discarded.saturating_add(1);
            continue;
        }
        *word |= bit;

        let Some(want) = expected_flags(ty) else {
            if flags & flag::OPTIONAL == 0 {
                return Err(Error::UnrecognizedWellKnown { ty });
            }
            a.unknown = a.unknown.saturating_add(1);
            continue;
        };
        let flags_ok = flags & (flag::OPTIONAL | flag::TRANSITIVE) == want;
        let length_err = Error::AttributeLength { ty, len };
        // Faults of this attribute, in RFC 7606 terms.
        let mut fault = |e: Error| {
            if taw.is_none() {
                taw = Some(e);
            }
        };
        if !flags_ok {
            match ty {
                attr::MP_REACH | attr::MP_UNREACH => return Err(Error::AttributeFlags { ty, flags }),
                attr::ATOMIC_AGGREGATE | attr::AGGREGATOR => discarded = discarded.saturating_add(1),
                attr::COMMUNITIES | attr::AS4_PATH | attr::AS4_AGGREGATOR => discarded = discarded.saturating_add(1),
                _ => fault(Error::AttributeFlags { ty, flags }),
            }
            continue;
        }
        match ty {
            attr::ORIGIN => match value {
                [v @ 0..=2] => a.origin = Some(*v),
                [v] => fault(Error::InvalidOrigin { value: *v }),
                _ => fault(length_err),
            },
            attr::AS_PATH => match AsPath::parse(value, as4) {
                Ok(p) => a.as_path = Some(p),
                Err(e) => fault(e),
            },
            attr::NEXT_HOP => match u32_of(value) {
                Some(v) => a.next_hop = Some(Ipv4Addr::from(v)),
                None => fault(length_err),
            },
            attr::MED => match u32_of(value) {
                Some(v) => a.med = Some(v),
                None => fault(length_err),
            },
            attr::LOCAL_PREF => match u32_of(value) {
                Some(v) => a.local_pref = Some(v),
                None => fault(length_err),
            },
            attr::ORIGINATOR_ID => match u32_of(value) {
                Some(v) => a.originator_id = Some(Ipv4Addr::from(v)),
                None => fault(length_err),
            },
            attr::CLUSTER_LIST => {
                if value.len() % 4 == 0 {
                    a.cluster_list = Some(value)
                } else {
                    fault(length_err)
                }
            }
            attr::EXT_COMMUNITIES => {
                if value.len() % 8 == 0 {
                    a.ext_communities = ExtCommunities(value)
                } else {
                    fault(length_err)
                }
            }
            attr::PMSI_TUNNEL => match PmsiTunnel::parse(value) {
                Ok(p) => a.pmsi = Some(p),
                Err(e) => fault(e),
            },
            attr::ATOMIC_AGGREGATE if value.is_empty() => a.atomic_aggregate = true,
            // A well-formed AGGREGATOR is of no use to us.
            attr::AGGREGATOR if value.len() == if as4 { 8 } else { 6 } => {}
            // Malformed ones: attribute discard.
            attr::ATOMIC_AGGREGATE | attr::AGGREGATOR => discarded = discarded.saturating_add(1),
            // EVPN NLRIs that cannot even be located cannot be withdrawn
            // either: RFC 7606 §5.3 leaves a session reset (RFC 4760 §7: 3/9).
            attr::MP_REACH => {
                let mp = decode_mp_reach(value)?;
                if mp.is_evpn() && !nlri_framed(mp.nlri) {
                    return Err(Error::OptionalAttribute { ty, field: "EVPN NLRI length" });
                }
                a.mp_reach = Some(mp)
            }
            attr::MP_UNREACH => {
                let mp = decode_mp_unreach(value)?;
                if mp.is_evpn() && !nlri_framed(mp.nlri) {
                    return Err(Error::OptionalAttribute { ty, field: "EVPN NLRI length" });
                }
                a.mp_unreach = Some(mp)
            }
            // Known and not used: COMMUNITIES, AS4_PATH, AS4_AGGREGATOR.
            _ => {}
        }
    }

    // 7606 §3(d): a reachability announcement without the mandatory attributes.
    let announces = a.mp_reach.is_some_and(|m| !m.nlri.is_empty()) || !nlri_ipv4.is_empty();
    if announces && taw.is_none() {
        if a.origin.is_none() {
            taw = Some(Error::MissingWellKnown { ty: attr::ORIGIN });
        } else if a.as_path.is_none() {
            taw = Some(Error::MissingWellKnown { ty: attr::AS_PATH });
        }
    }
    Ok(Update { withdrawn_ipv4, attrs: a, nlri_ipv4, treat_as_withdraw: taw, discarded })
}

/// The attributes of an EVPN announcement we originate (iBGP: ORIGIN IGP,
/// empty AS_PATH, LOCAL_PREF).
#[derive(Clone, Copy, Debug)]
pub struct OutAttrs<'a> {
    pub next_hop: Ipv4Addr,
    pub local_pref: u32,
    pub ext_communities: &'a [crate::evpn::ExtCommunity],
    pub pmsi: Option<PmsiTunnel>,
}

fn attr_header(w: &mut Writer<'_>, flags: u8, ty: u8, len: usize) -> Result<(), Error> {
    if len > 255 {
        w.u8(flags | flag::EXTENDED_LENGTH)?;
        w.u8(ty)?;
        w.u16(u16::try_from(len).map_err(|_| Error::BufferTooSmall)?)
    } else {
        w.u8(flags)?;
        w.u8(ty)?;
        w.u8(len as u8)
    }
}

/// Bytes an announcement with `attrs` takes besides its NLRI.
pub fn announce_overhead(attrs: &OutAttrs<'_>) -> usize {
    let pmsi = attrs.pmsi.map_or(0, |p| 3 + p.encoded_len());
    let ext_len = 8 * attrs.ext_communities.len();
    let ext = match ext_len {
        0 => 0,
        1..=255 => 3 + ext_len,
        _ => 4 + ext_len,
    };
    // header, two lengths, ORIGIN, AS_PATH, LOCAL_PREF, then MP_REACH:
    // 4 header bytes (extended length), AFI/SAFI/length 4, next hop 4, reserved 1.
    19 + 2 + 2 + 4 + 3 + 7 + ext + pmsi + 4 + 4 + 4 + 1
}

/// Encode an UPDATE announcing the EVPN NLRIs `nlri` (already encoded with
/// [`crate::evpn::EvpnRoute::encode`]) with `attrs`.
pub fn encode_evpn_announce(w: &mut Writer<'_>, attrs: &OutAttrs<'_>, nlri: &[u8]) -> Result<(), Error> {
    if announce_overhead(attrs) + nlri.len() > MAX_MESSAGE_LEN {
        return Err(Error::BufferTooSmall);
    }
    let start = w.begin_message(msg::UPDATE)?;
    w.u16(0)?;
    let alen_at = w.len();
    w.u16(0)?;
    attr_header(w, flag::TRANSITIVE, attr::ORIGIN, 1)?;
    w.u8(0)?;
    attr_header(w, flag::TRANSITIVE, attr::AS_PATH, 0)?;
    attr_header(w, flag::TRANSITIVE, attr::LOCAL_PREF, 4)?;
    w.u32(attrs.local_pref)?;
    if !attrs.ext_communities.is_empty() {
        attr_header(w, flag::OPTIONAL | flag::TRANSITIVE, attr::EXT_COMMUNITIES, 8 * attrs.ext_communities.len())?;
        for c in attrs.ext_communities {
            w.put(&c.to_bytes())?;
        }
    }
    if let Some(p) = attrs.pmsi {
        attr_header(w, flag::OPTIONAL | flag::TRANSITIVE, attr::PMSI_TUNNEL, p.encoded_len())?;
        p.encode(w)?;
    }
    // MP_REACH always with an extended length, so its size is known up front.
    w.u8(flag::OPTIONAL | flag::EXTENDED_LENGTH)?;
    w.u8(attr::MP_REACH)?;
    w.u16(u16::try_from(5 + 4 + nlri.len()).map_err(|_| Error::BufferTooSmall)?)?;
    w.u16(afi::L2VPN)?;
    w.u8(safi::EVPN)?;
    w.u8(4)?;
    w.put(&attrs.next_hop.octets())?;
    w.u8(0)?;
    w.put(nlri)?;
    let alen = w.len() - alen_at - 2;
    w.patch_u16(alen_at, alen as u16)?;
    w.end_message(start)
}

/// Bytes a withdrawal takes besides its NLRI.
pub const WITHDRAW_OVERHEAD: usize = 19 + 2 + 2 + 4 + 3;

/// Encode an UPDATE withdrawing the EVPN NLRIs `nlri`; with an empty
/// `nlri` this is the EVPN End-of-RIB marker.
pub fn encode_evpn_withdraw(w: &mut Writer<'_>, nlri: &[u8]) -> Result<(), Error> {
    if WITHDRAW_OVERHEAD + nlri.len() > MAX_MESSAGE_LEN {
        return Err(Error::BufferTooSmall);
    }
    let start = w.begin_message(msg::UPDATE)?;
    w.u16(0)?;
    w.u16(u16::try_from(4 + 3 + nlri.len()).map_err(|_| Error::BufferTooSmall)?)?;
    w.u8(flag::OPTIONAL | flag::EXTENDED_LENGTH)?;
    w.u8(attr::MP_UNREACH)?;
    w.u16(u16::try_from(3 + nlri.len()).map_err(|_| Error::BufferTooSmall)?)?;
    w.u16(afi::L2VPN)?;
    w.u8(safi::EVPN)?;
    w.put(nlri)?;
    w.end_message(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evpn::{EvpnRoute, ExtCommunity, ImetRoute, Mac, MacIpRoute, Rd, RouteTarget, TUNNEL_VXLAN};
    use crate::wire::HEADER_LEN;
    use core::net::IpAddr;
    use std::vec::Vec;

    fn mac_route(last: u8) -> EvpnRoute {
        EvpnRoute::MacIp(MacIpRoute {
            rd: Rd::ipv4(Ipv4Addr::new(10, 99, 0, 2), 2),
            esi: [0; 10],
            eth_tag: 0,
            mac: Mac([2, 0, 0, 0, 1, last]),
            ip: None,
            label1: 100,
            label2: None,
        })
    }

    fn announce(routes: &[EvpnRoute]) -> Vec<u8> {
        let mut nlri = [0u8; 4096];
        let mut nw = Writer::new(&mut nlri);
        for r in routes {
            r.encode(&mut nw).unwrap();
        }
        let n = nw.len();
        let ext = [ExtCommunity::RouteTarget(RouteTarget::auto(65000, 100)), ExtCommunity::Encapsulation { tunnel_type: TUNNEL_VXLAN }];
        let attrs = OutAttrs {
            next_hop: Ipv4Addr::new(10, 99, 0, 2),
            local_pref: 100,
            ext_communities: &ext,
            pmsi: Some(PmsiTunnel::ingress_replication(100, Ipv4Addr::new(10, 99, 0, 2))),
        };
        let mut buf = [0u8; 4096];
        let mut w = Writer::new(&mut buf);
        encode_evpn_announce(&mut w, &attrs, &nlri[..n]).unwrap();
        let len = w.len();
        assert_eq!(len, announce_overhead(&attrs) + n);
        buf[..len].to_vec()
    }

    #[test]
    fn announce_roundtrip() {
        let routes = [mac_route(1), mac_route(2)];
        let m = announce(&routes);
        let u = decode_update(&m[HEADER_LEN..], true).unwrap();
        assert_eq!(u.treat_as_withdraw, None);
        assert_eq!(u.attrs.origin, Some(0));
        assert_eq!(u.attrs.local_pref, Some(100));
        assert!(u.attrs.as_path.unwrap().is_empty());
        let mp = u.attrs.mp_reach.unwrap();
        assert!(mp.is_evpn());
        assert_eq!(mp.next_hop, NextHop::V4(Ipv4Addr::new(10, 99, 0, 2)));
        let got: Vec<_> = mp.routes().map(|r| r.unwrap()).collect();
        assert_eq!(got, routes);
        assert_eq!(u.attrs.ext_communities.encapsulation(), Some(8));
        assert_eq!(u.attrs.pmsi.unwrap().label, 100);
    }

    #[test]
    fn withdraw_and_end_of_rib() {
        let mut nlri = [0u8; 64];
        let mut nw = Writer::new(&mut nlri);
        mac_route(1).encode(&mut nw).unwrap();
        let n = nw.len();
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        encode_evpn_withdraw(&mut w, &nlri[..n]).unwrap();
        let len = w.len();
        let u = decode_update(&buf[HEADER_LEN..len], true).unwrap();
        assert!(!u.is_evpn_end_of_rib());
        assert_eq!(u.attrs.mp_unreach.unwrap().routes().next(), Some(Ok(mac_route(1))));
        let mut w = Writer::new(&mut buf);
        encode_evpn_withdraw(&mut w, &[]).unwrap();
        let len = w.len();
        assert!(decode_update(&buf[HEADER_LEN..len], true).unwrap().is_evpn_end_of_rib());
    }

    /// Build a body from raw attributes.
    fn body(attrs: &[&[u8]]) -> Vec<u8> {
        let mut a = Vec::new();
        for x in attrs {
            a.extend_from_slice(x);
        }
        let mut b = std::vec![0, 0];
        b.extend_from_slice(&(a.len() as u16).to_be_bytes());
        b.extend_from_slice(&a);
        b
    }

    const ORIGIN: &[u8] = &[0x40, 1, 1, 0];
    const AS_PATH: &[u8] = &[0x40, 2, 0];

    fn mp_reach_imet() -> Vec<u8> {
        let r = EvpnRoute::Imet(ImetRoute { rd: Rd::as2(65000, 1), eth_tag: 0, originator: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)) });
        let mut nlri = [0u8; 32];
        let mut nw = Writer::new(&mut nlri);
        r.encode(&mut nw).unwrap();
        let n = nw.len();
        let mut v = std::vec![0x80, 14, (9 + n) as u8, 0, 25, 70, 4, 10, 0, 0, 9, 0];
        v.extend_from_slice(&nlri[..n]);
        v
    }

    #[test]
    fn treat_as_withdraw_cases() {
        let mp = mp_reach_imet();
        let cases: &[(&[u8], Error)] = &[
            (&[0x40, 1, 1, 7], Error::InvalidOrigin { value: 7 }),
            (&[0x40, 1, 2, 0, 0], Error::AttributeLength { ty: 1, len: 2 }),
            (&[0x40, 3, 3, 1, 2, 3], Error::AttributeLength { ty: 3, len: 3 }),
            (&[0x80, 4, 2, 0, 0], Error::AttributeLength { ty: 4, len: 2 }),
            (&[0x40, 5, 5, 0, 0, 0, 0, 0], Error::AttributeLength { ty: 5, len: 5 }),
            (&[0xc0, 16, 7, 0, 2, 0, 0, 0, 0, 0], Error::AttributeLength { ty: 16, len: 7 }),
            (&[0xc0, 22, 4, 0, 6, 0, 0], Error::OptionalAttribute { ty: 22, field: "PMSI tunnel header" }),
            (&[0x80, 10, 3, 1, 1, 1], Error::AttributeLength { ty: 10, len: 3 }),
            // Origin with the optional bit set.
            (&[0xc0, 5, 4, 0, 0, 0, 100], Error::AttributeFlags { ty: 5, flags: 0xc0 }),
        ];
        for (bad, want) in cases {
            let b = body(&[ORIGIN, AS_PATH, bad, &mp]);
            let u = decode_update(&b, true).unwrap();
            // A bad ORIGIN replaces the good one (duplicates keep the first): put it first instead.
            let first = body(&[bad, ORIGIN, AS_PATH, &mp]);
            let u = if u.treat_as_withdraw.is_none() { decode_update(&first, true).unwrap() } else { u };
            assert_eq!(u.treat_as_withdraw, Some(*want), "attribute {bad:?}");
            assert!(u.attrs.mp_reach.is_some());
        }
        // Bad AS_PATH: zero-length segment, overrun, unknown segment type.
        for p in [&[0x40u8, 2, 2, 2, 0][..], &[0x40, 2, 4, 2, 1, 0, 1], &[0x40, 2, 6, 9, 1, 0, 0, 0, 1]] {
            let b = body(&[ORIGIN, p, &mp]);
            let u = decode_update(&b, true).unwrap();
            assert_eq!(u.treat_as_withdraw, Some(Error::MalformedAsPath));
        }
        // Missing ORIGIN / AS_PATH with NLRI present.
        let b = body(&[AS_PATH, &mp]);
        let u = decode_update(&b, true).unwrap();
        assert_eq!(u.treat_as_withdraw, Some(Error::MissingWellKnown { ty: 1 }));
        let b = body(&[ORIGIN, &mp]);
        let u = decode_update(&b, true).unwrap();
        assert_eq!(u.treat_as_withdraw, Some(Error::MissingWellKnown { ty: 2 }));
    }

    #[test]
    fn attribute_discard_and_duplicates() {
        let mp = mp_reach_imet();
        let b = body(&[ORIGIN, AS_PATH, &[0x40, 6, 1, 0], &[0xc0, 7, 3, 0, 0, 0], &mp]);
        let u = decode_update(&b, true).unwrap();
        assert_eq!(u.treat_as_withdraw, None);
        assert_eq!(u.discarded, 2);
        let b = body(&[ORIGIN, AS_PATH, &[0x40, 1, 1, 2], &mp]);
        let u = decode_update(&b, true).unwrap();
        assert_eq!((u.attrs.origin, u.discarded), (Some(0), 1));
        // Unknown optional attribute skipped; unknown well-known one resets.
        let b = body(&[ORIGIN, AS_PATH, &[0xc0, 99, 2, 1, 2], &mp]);
        let u = decode_update(&b, true).unwrap();
        assert_eq!((u.treat_as_withdraw, u.attrs.unknown), (None, 1));
        assert_eq!(decode_update(&body(&[ORIGIN, &[0x40, 99, 0]]), true), Err(Error::UnrecognizedWellKnown { ty: 99 }));
    }

    #[test]
    fn session_reset_cases() {
        let mp = mp_reach_imet();
        // MP_REACH twice.
        assert_eq!(decode_update(&body(&[ORIGIN, AS_PATH, &mp, &mp]), true).unwrap_err().notification(), (3, 1));
        // Attribute length overrunning the area.
        assert_eq!(decode_update(&body(&[ORIGIN, &[0x40, 2, 9, 0]]), true).unwrap_err().notification(), (3, 1));
        // Total attribute length overrunning the message.
        assert_eq!(decode_update(&[0, 0, 0, 9, 0x40, 1, 1, 0], true).unwrap_err().notification(), (3, 1));
        // Withdrawn length overrunning.
        assert_eq!(decode_update(&[0, 5, 0], true).unwrap_err().notification(), (3, 1));
        // MP_REACH whose next-hop length overruns; next hop of 5 bytes; MP_UNREACH of 2 bytes.
        assert_eq!(decode_update(&body(&[&[0x80, 14, 5, 0, 25, 70, 9, 1]]), true).unwrap_err().notification(), (3, 9));
        assert_eq!(decode_update(&body(&[&[0x80, 14, 10, 0, 25, 70, 5, 1, 1, 1, 1, 1, 0]]), true).unwrap_err().notification(), (3, 9));
        assert_eq!(decode_update(&body(&[&[0x80, 15, 2, 0, 25]]), true).unwrap_err().notification(), (3, 9));
        // An EVPN NLRI overrunning MP_REACH (its last byte cut) or MP_UNREACH: the routes cannot be located.
        let mut cut = mp_reach_imet();
        cut.pop();
        cut[2] -= 1;
        assert_eq!(decode_update(&body(&[ORIGIN, AS_PATH, &cut]), true).unwrap_err().notification(), (3, 9));
        assert_eq!(decode_update(&body(&[&[0x80, 15, 5, 0, 25, 70, 2, 33]]), true).unwrap_err().notification(), (3, 9));
        // MP_UNREACH flagged transitive.
        assert_eq!(decode_update(&body(&[&[0xc0, 15, 3, 0, 25, 70]]), true).unwrap_err().notification(), (3, 4));
    }

    #[test]
    fn unparseable_nlri_is_seen_by_the_iterator() {
        let mut mp = mp_reach_imet();
        mp.extend_from_slice(&[2, 3, 0, 0, 0]);
        mp[2] += 5;
        let b = body(&[ORIGIN, AS_PATH, &mp]);
        let u = decode_update(&b, true).unwrap();
        let v: Vec<_> = u.attrs.mp_reach.unwrap().routes().collect();
        assert_eq!(v.len(), 2);
        assert!(v[0].is_ok() && v[1].is_err());
    }

    #[test]
    fn as_path_two_and_four_octets() {
        let p = AsPath::parse(&[2, 2, 0, 0, 0xfd, 0xe8, 0, 0, 0, 1], true).unwrap();
        assert_eq!(p.asns().collect::<Vec<_>>(), [65000, 1]);
        assert!(p.contains(65000) && p.len() == 2);
        let p = AsPath::parse(&[2, 1, 0xfd, 0xe8, 1, 2, 0, 1, 0, 2], false).unwrap();
        assert_eq!(p.asns().collect::<Vec<_>>(), [65000, 1, 2]);
        assert!(AsPath::parse(&[2, 1, 0xfd, 0xe8], true).is_err());
    }
}

//! The few frames the WAN shim reads and writes itself.
//!
//! The dataplane thinks its WAN port is an Ethernet NIC; on Linux it is a UDP
//! socket. The shim therefore (a) reads the dataplane's outgoing WAN frames
//! far enough to find an ARP request or a UDP datagram, (b) writes the
//! Ethernet/IPv4/UDP headers in front of a received datagram, and (c) writes
//! ARP replies for whatever the dataplane asks about on the WAN.
//!
//! Contract: every read goes through bounds-checked `get`; a frame too short
//! or malformed for its type is reported as [`WanFrame::Malformed`], never a
//! panic. Byte offsets live in `mod field` as in smoltcp.

use core::net::Ipv4Addr;
use core::ops::Range;

/// Ethernet + IPv4 (no options) + UDP.
pub const UDP_HEADERS: usize = 42;
/// A minimum Ethernet frame (an ARP reply is padded to it).
pub const ARP_FRAME: usize = 60;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const PROTO_UDP: u8 = 17;

mod field {
    use core::ops::Range;
    pub const ETH_DST: Range<usize> = 0..6;
    pub const ETH_SRC: Range<usize> = 6..12;
    pub const ETH_TYPE: Range<usize> = 12..14;
    pub const ETH_LEN: usize = 14;
    // ARP, from the start of the frame.
    pub const ARP_FIXED: Range<usize> = 14..22; // htype, ptype, hlen, plen, op
    pub const ARP_OP: Range<usize> = 20..22;
    pub const ARP_SHA: Range<usize> = 22..28;
    pub const ARP_SPA: Range<usize> = 28..32;
    pub const ARP_THA: Range<usize> = 32..38;
    pub const ARP_TPA: Range<usize> = 38..42;
    // IPv4, from the start of the IP header.
    pub const IP_VER_IHL: usize = 0;
    pub const IP_TOTAL_LEN: Range<usize> = 2..4;
    pub const IP_IDENT: Range<usize> = 4..6;
    pub const IP_FLAGS_FRAG: Range<usize> = 6..8;
    pub const IP_TTL: usize = 8;
    pub const IP_PROTO: usize = 9;
    pub const IP_CHECKSUM: Range<usize> = 10..12;
    pub const IP_SRC: Range<usize> = 12..16;
    pub const IP_DST: Range<usize> = 16..20;
    pub const IP_LEN: usize = 20;
    // UDP, from the start of the UDP header.
    pub const UDP_SRC: Range<usize> = 0..2;
    pub const UDP_DST: Range<usize> = 2..4;
    pub const UDP_LEN: Range<usize> = 4..6;
    pub const UDP_CHECKSUM: Range<usize> = 6..8;
    pub const UDP_HDR: usize = 8;
}

/// What the dataplane sent on its WAN port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WanFrame {
    /// An ARP request: who has `target`? (from `sender_ip`, `sender_mac`).
    ArpRequest { sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr },
    /// Any other ARP (replies to our own replies never happen; ignored).
    ArpOther,
    /// An unfragmented UDP datagram: the payload is `frame[payload]`.
    Udp { src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: Range<usize> },
    /// IPv4 that is not a plain UDP datagram (delivery onto the WAN subnet,
    /// ICMP errors, fragments): `frame[packet]` is the IP packet.
    Ipv4 { packet: Range<usize> },
    /// Another ethertype (IPv6 is not produced by the dataplane).
    Other,
    /// Too short or inconsistent.
    Malformed,
}

fn be16(b: &[u8], r: Range<usize>) -> Option<u16> {
    let s = b.get(r)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn ip4(b: &[u8], r: Range<usize>) -> Option<Ipv4Addr> {
    let s: [u8; 4] = b.get(r)?.try_into().ok()?;
    Some(Ipv4Addr::from(s))
}

fn mac(b: &[u8], r: Range<usize>) -> Option<[u8; 6]> {
    b.get(r)?.try_into().ok()
}

/// Classify one outgoing WAN frame.
pub fn parse_wan_frame(frame: &[u8]) -> WanFrame {
    parse(frame).unwrap_or(WanFrame::Malformed)
}

fn parse(frame: &[u8]) -> Option<WanFrame> {
    match be16(frame, field::ETH_TYPE)? {
        ETHERTYPE_ARP => {
            let fixed = frame.get(field::ARP_FIXED)?;
            // Ethernet/IPv4 ARP only.
            if fixed.get(..6)? != [0, 1, 8, 0, 6, 4] {
                return None;
            }
            if be16(frame, field::ARP_OP)? != 1 {
                return Some(WanFrame::ArpOther);
            }
            Some(WanFrame::ArpRequest {
                sender_mac: mac(frame, field::ARP_SHA)?,
                sender_ip: ip4(frame, field::ARP_SPA)?,
                target: ip4(frame, field::ARP_TPA)?,
            })
        }
        ETHERTYPE_IPV4 => {
            let ip = frame.get(field::ETH_LEN..)?;
            let vihl = *ip.get(field::IP_VER_IHL)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            let total = usize::from(be16(ip, field::IP_TOTAL_LEN)?);
            if vihl >> 4 != 4 || ihl < field::IP_LEN || total < ihl || total > ip.len() {
                return None;
            }
            let packet = field::ETH_LEN..field::ETH_LEN + total;
            let frag = be16(ip, field::IP_FLAGS_FRAG)?;
            let fragment = frag & 0x3fff != 0; // MF or an offset
            if *ip.get(field::IP_PROTO)? != PROTO_UDP || fragment {
                return Some(WanFrame::Ipv4 { packet });
            }
            let udp = ip.get(ihl..total)?;
            let ulen = usize::from(be16(udp, field::UDP_LEN)?);
            if ulen < field::UDP_HDR || ulen > udp.len() {
                return None;
            }
            let start = field::ETH_LEN + ihl + field::UDP_HDR;
            Some(WanFrame::Udp {
                src: ip4(ip, field::IP_SRC)?,
                dst: ip4(ip, field::IP_DST)?,
                sport: be16(udp, field::UDP_SRC)?,
                dport: be16(udp, field::UDP_DST)?,
                payload: start..start + ulen - field::UDP_HDR,
            })
        }
        _ => Some(WanFrame::Other),
    }
}

/// The one IPv4 header checksum of this crate (RFC 1071 over the header).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in header.chunks(2) {
        let hi = u32::from(pair.first().copied().unwrap_or(0));
        let lo = u32::from(pair.get(1).copied().unwrap_or(0));
        sum = sum.wrapping_add(hi << 8 | lo);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Headers of a received datagram, as if it had arrived on an Ethernet NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeaders {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub ident: u16,
}

impl UdpHeaders {
    /// Write the 42 header bytes into `out` for a payload of `payload_len`
    /// bytes. False (nothing sensible written) when `out` is short or the
    /// payload cannot fit an IPv4 datagram. The UDP checksum is left 0
    /// ("none", RFC 768): the bytes came off a kernel socket that checked them.
    pub fn emit(&self, out: &mut [u8], payload_len: usize) -> bool {
        let Some(udp_len) = payload_len.checked_add(field::UDP_HDR) else { return false };
        let Some(total) = udp_len.checked_add(field::IP_LEN) else { return false };
        let (Ok(udp_len), Ok(total)) = (u16::try_from(udp_len), u16::try_from(total)) else { return false };
        let Some(h) = out.get_mut(..UDP_HEADERS) else { return false };
        h.fill(0);
        let (eth, rest) = h.split_at_mut(field::ETH_LEN);
        let (ip, udp) = rest.split_at_mut(field::IP_LEN);
        let put = |b: &mut [u8], r: Range<usize>, v: &[u8]| {
            if let Some(d) = b.get_mut(r) {
                d.copy_from_slice(v);
            }
        };
        put(eth, field::ETH_DST, &self.dst_mac);
        put(eth, field::ETH_SRC, &self.src_mac);
        put(eth, field::ETH_TYPE, &ETHERTYPE_IPV4.to_be_bytes());
        put(ip, 0..1, &[0x45]);
        put(ip, field::IP_TOTAL_LEN, &total.to_be_bytes());
        put(ip, field::IP_IDENT, &self.ident.to_be_bytes());
        put(ip, field::IP_TTL..field::IP_TTL + 1, &[64]);
        put(ip, field::IP_PROTO..field::IP_PROTO + 1, &[PROTO_UDP]);
        put(ip, field::IP_SRC, &self.src.octets());
        put(ip, field::IP_DST, &self.dst.octets());
        let c = ipv4_checksum(ip);
        put(ip, field::IP_CHECKSUM, &c.to_be_bytes());
        put(udp, field::UDP_SRC, &self.sport.to_be_bytes());
        put(udp, field::UDP_DST, &self.dport.to_be_bytes());
        put(udp, field::UDP_LEN, &udp_len.to_be_bytes());
        put(udp, field::UDP_CHECKSUM, &[0, 0]);
        true
    }
}

/// An Ethernet header for an IPv4 packet (the WAN TUN path).
pub fn emit_ipv4_ethernet(out: &mut [u8], dst_mac: [u8; 6], src_mac: [u8; 6]) -> bool {
    let Some(h) = out.get_mut(..field::ETH_LEN) else { return false };
    let mut v = [0u8; field::ETH_LEN];
    v[field::ETH_DST].copy_from_slice(&dst_mac);
    v[field::ETH_SRC].copy_from_slice(&src_mac);
    v[field::ETH_TYPE].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    h.copy_from_slice(&v);
    true
}

/// Bytes of an Ethernet header.
pub const ETH_LEN: usize = field::ETH_LEN;

/// An ARP reply "`ip` is at `our_mac`" to the asker, padded to 60 bytes.
pub fn arp_reply(our_mac: [u8; 6], ip: Ipv4Addr, to_mac: [u8; 6], to_ip: Ipv4Addr) -> [u8; ARP_FRAME] {
    let mut f = [0u8; ARP_FRAME];
    let parts: [(Range<usize>, &[u8]); 9] = [
        (field::ETH_DST, &to_mac),
        (field::ETH_SRC, &our_mac),
        (field::ETH_TYPE, &ETHERTYPE_ARP.to_be_bytes()),
        (field::ARP_FIXED, &[0, 1, 8, 0, 6, 4, 0, 2]),
        (field::ARP_SHA, &our_mac),
        (field::ARP_SPA, &ip.octets()),
        (field::ARP_THA, &to_mac),
        (field::ARP_TPA, &to_ip.octets()),
        (field::ARP_OP, &[0, 2]),
    ];
    for (r, v) in parts {
        if let Some(d) = f.get_mut(r) {
            d.copy_from_slice(v);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

    /// An ARP request as the dataplane writes it.
    fn arp_request() -> [u8; 42] {
        let mut f = [0u8; 42];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&A);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&A);
        f[28..32].copy_from_slice(&[192, 0, 2, 2]);
        f[38..42].copy_from_slice(&[192, 0, 2, 1]);
        f
    }

    #[test]
    fn arp_request_is_recognised_and_answered() {
        let req = arp_request();
        let WanFrame::ArpRequest { sender_mac, sender_ip, target } = parse_wan_frame(&req) else {
            panic!("not an ARP request: {:?}", parse_wan_frame(&req));
        };
        assert_eq!((sender_mac, sender_ip, target), (A, Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 1)));
        let reply = arp_reply(B, target, sender_mac, sender_ip);
        let expected: [u8; 42] = [
            2, 0, 0, 0, 0, 0xa, 2, 0, 0, 0, 0, 0xb, 8, 6, // Ethernet
            0, 1, 8, 0, 6, 4, 0, 2, // Ethernet/IPv4, reply
            2, 0, 0, 0, 0, 0xb, 192, 0, 2, 1, // sender: us, the asked address
            2, 0, 0, 0, 0, 0xa, 192, 0, 2, 2, // target: the asker
        ];
        assert_eq!(&reply[..42], &expected);
        assert!(reply[42..].iter().all(|&b| b == 0));
        assert_eq!(parse_wan_frame(&reply), WanFrame::ArpOther);
    }

    #[test]
    fn udp_headers_round_trip_and_checksum() {
        let mut buf = [0xa5u8; 64];
        let h = UdpHeaders {
            dst_mac: A,
            src_mac: B,
            src: Ipv4Addr::new(198, 51, 100, 7),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            sport: 40000,
            dport: 51820,
            ident: 0x1234,
        };
        buf[42..46].copy_from_slice(&[1, 2, 3, 4]);
        assert!(h.emit(&mut buf, 4));
        // Every header byte was written (no 0xa5 left), payload untouched.
        assert!(!buf[..42].contains(&0xa5), "a header byte was not written: {:?}", &buf[..42]);
        assert_eq!(&buf[42..46], &[1, 2, 3, 4]);
        assert_eq!(ipv4_checksum(&buf[14..34]), 0, "header checksum verifies");
        assert_eq!(&buf[14..16], &[0x45, 0]);
        assert_eq!(&buf[16..18], &[0, 32]); // 20 + 8 + 4
        match parse_wan_frame(&buf[..46]) {
            WanFrame::Udp { src, dst, sport, dport, payload } => {
                assert_eq!((src, dst, sport, dport), (h.src, h.dst, 40000, 51820));
                assert_eq!(&buf[payload], &[1, 2, 3, 4]);
            }
            other => panic!("{other:?}"),
        }
        // Too short a buffer or an impossible length writes nothing.
        assert!(!h.emit(&mut [0u8; 41], 0));
        assert!(!h.emit(&mut buf, 70_000));
    }

    #[test]
    fn other_ipv4_and_garbage() {
        let mut buf = [0u8; 64];
        let h = UdpHeaders { dst_mac: A, src_mac: B, src: Ipv4Addr::LOCALHOST, dst: Ipv4Addr::LOCALHOST, sport: 1, dport: 2, ident: 0 };
        assert!(h.emit(&mut buf, 0));
        buf[23] = 1; // ICMP
        assert_eq!(parse_wan_frame(&buf[..42]), WanFrame::Ipv4 { packet: 14..42 });
        buf[23] = 17;
        buf[20] = 0x20; // more fragments
        assert_eq!(parse_wan_frame(&buf[..42]), WanFrame::Ipv4 { packet: 14..42 });
        buf[20] = 0;
        buf[38..40].copy_from_slice(&[0, 200]); // UDP length beyond the packet
        assert_eq!(parse_wan_frame(&buf[..42]), WanFrame::Malformed);
        for n in 0..42 {
            let f = parse_wan_frame(&buf[..n]);
            assert!(matches!(f, WanFrame::Malformed), "{n}: {f:?}");
        }
        assert_eq!(parse_wan_frame(&[0u8; 13]), WanFrame::Malformed);
        let mut v6 = [0u8; 60];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(parse_wan_frame(&v6), WanFrame::Other);
        let mut bad_arp = arp_request();
        bad_arp[18] = 8; // hlen 8
        assert_eq!(parse_wan_frame(&bad_arp), WanFrame::Malformed);
    }
}

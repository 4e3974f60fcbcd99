//! The few frame shapes the lab builds and inspects itself, on top of
//! smoltcp's checked wire views: ARP requests and replies, the MSS option of
//! TCP SYNs, UDP datagrams for the site routers' DHCP and DNS, and the
//! RFC 1624 checksum update NAT needs.
//!
//! Every parser takes untrusted bytes and answers `None` for anything it does
//! not understand; nothing here panics on input.

use crate::Mac;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpOption, TcpPacket, UdpPacket, UdpRepr,
};
use std::net::{Ipv4Addr, SocketAddrV4};

pub(crate) const ETHERNET_HEADER: usize = 14;
const ARP_LEN: usize = 28;
/// Frames shorter than this are padded, as a NIC would before the FCS.
const MIN_FRAME: usize = 60;
pub(crate) const BROADCAST: Mac = [0xff; 6];

/// ARP of Ethernet/IPv4, the only kind there is on these links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Arp {
    pub request: bool,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl Arp {
    pub(crate) fn parse(frame: &[u8]) -> Option<Arp> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Arp {
            return None;
        }
        let packet = ArpPacket::new_checked(eth.payload()).ok()?;
        let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, target_hardware_addr, target_protocol_addr } =
            ArpRepr::parse(&packet).ok()?
        else {
            return None;
        };
        let request = match operation {
            ArpOperation::Request => true,
            ArpOperation::Reply => false,
            _ => return None,
        };
        Some(Arp {
            request,
            sender_mac: source_hardware_addr.0,
            sender_ip: source_protocol_addr,
            target_mac: target_hardware_addr.0,
            target_ip: target_protocol_addr,
        })
    }

    /// A request from `sender` asking who has `target`, broadcast.
    pub(crate) fn request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Arp {
        Arp { request: true, sender_mac, sender_ip, target_mac: [0; 6], target_ip }
    }

    /// The reply to `asked` saying `ip` is at `mac`.
    pub(crate) fn reply_to(asked: &Arp, mac: Mac, ip: Ipv4Addr) -> Arp {
        Arp { request: false, sender_mac: mac, sender_ip: ip, target_mac: asked.sender_mac, target_ip: asked.sender_ip }
    }

    /// A gratuitous ARP for `ip`: a broadcast request whose sender and target
    /// are both `ip`, which every host on the segment uses to refresh its cache.
    pub(crate) fn gratuitous(mac: Mac, ip: Ipv4Addr) -> Arp {
        Arp { request: true, sender_mac: mac, sender_ip: ip, target_mac: [0; 6], target_ip: ip }
    }

    /// The whole frame: broadcast for requests, to the asker for replies.
    pub(crate) fn to_frame(self) -> Vec<u8> {
        let dst = if self.request { BROADCAST } else { self.target_mac };
        let mut buf = vec![0u8; MIN_FRAME.max(ETHERNET_HEADER + ARP_LEN)];
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.set_dst_addr(EthernetAddress(dst));
        eth.set_src_addr(EthernetAddress(self.sender_mac));
        eth.set_ethertype(EthernetProtocol::Arp);
        let repr = ArpRepr::EthernetIpv4 {
            operation: if self.request { ArpOperation::Request } else { ArpOperation::Reply },
            source_hardware_addr: EthernetAddress(self.sender_mac),
            source_protocol_addr: self.sender_ip,
            target_hardware_addr: EthernetAddress(self.target_mac),
            target_protocol_addr: self.target_ip,
        };
        repr.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        buf
    }
}

/// A TCP SYN or SYN-ACK seen in a frame, with its MSS option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Syn {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub ack: bool,
    pub mss: Option<u16>,
}

impl Syn {
    /// The SYN in an Ethernet frame, if it carries one (first fragments only).
    pub(crate) fn parse(frame: &[u8]) -> Option<Syn> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        if !tcp.syn() {
            return None;
        }
        Some(Syn {
            src: SocketAddrV4::new(ip.src_addr(), tcp.src_port()),
            dst: SocketAddrV4::new(ip.dst_addr(), tcp.dst_port()),
            ack: tcp.ack(),
            mss: mss_option(tcp.options()),
        })
    }
}

/// The MSS in a TCP options area; `None` when absent or the area is malformed.
fn mss_option(mut options: &[u8]) -> Option<u16> {
    // At most 40 bytes of options, each at least one byte long.
    for _ in 0..40 {
        if options.is_empty() {
            return None;
        }
        let (rest, option) = TcpOption::parse(options).ok()?;
        match option {
            TcpOption::MaxSegmentSize(mss) => return Some(mss),
            TcpOption::EndOfList => return None,
            _ => options = rest,
        }
    }
    None
}

/// A UDP datagram in an Ethernet/IPv4 frame, as a site router's services
/// (DHCP, DNS) see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UdpIn<'a> {
    pub src_mac: Mac,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: &'a [u8],
}

impl UdpIn<'_> {
    /// `None` for anything but an unfragmented UDP/IPv4 frame whose IPv4
    /// and UDP checksums hold (a zero UDP checksum means none was computed).
    pub(crate) fn parse(frame: &[u8]) -> Option<UdpIn<'_>> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(frame.get(ETHERNET_HEADER..)?).ok()?;
        if ip.next_header() != IpProtocol::Udp || ip.more_frags() || ip.frag_offset() != 0 || !ip.verify_checksum() {
            return None;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let udp = UdpPacket::new_checked(ip.payload()).ok()?;
        if !udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)) {
            return None;
        }
        Some(UdpIn {
            src_mac: eth.src_addr().0,
            src: SocketAddrV4::new(src, udp.src_port()),
            dst: SocketAddrV4::new(dst, udp.dst_port()),
            payload: udp.payload(),
        })
    }
}

/// An Ethernet/IPv4/UDP frame carrying `payload`, with both checksums
/// filled, TTL 64, padded to the Ethernet minimum.
pub(crate) fn udp_frame(src_mac: Mac, dst_mac: Mac, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp = UdpRepr { src_port: src.port(), dst_port: dst.port() };
    let udp_len = udp.header_len() + payload.len();
    let ip = Ipv4Repr { src_addr: *src.ip(), dst_addr: *dst.ip(), next_header: IpProtocol::Udp, payload_len: udp_len, hop_limit: 64 };
    let len = ETHERNET_HEADER + ip.buffer_len() + udp_len;
    let mut buf = vec![0u8; len.max(MIN_FRAME)];
    let caps = ChecksumCapabilities::default();
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_dst_addr(EthernetAddress(dst_mac));
    eth.set_src_addr(EthernetAddress(src_mac));
    eth.set_ethertype(EthernetProtocol::Ipv4);
    let mut packet = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut packet, &caps);
    udp.emit(
        &mut UdpPacket::new_unchecked(packet.payload_mut()),
        &IpAddress::Ipv4(*src.ip()),
        &IpAddress::Ipv4(*dst.ip()),
        payload.len(),
        |out| out.copy_from_slice(payload),
        &caps,
    );
    buf
}

/// RFC 1624 (eqn. 3): the Internet checksum `sum` after the 16-bit words
/// `old` in the covered data were replaced by `new`.
pub(crate) fn checksum_adjust(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc: u32 = u32::from(!sum);
    for pair in old.chunks(2) {
        acc += u32::from(!word(pair));
    }
    for pair in new.chunks(2) {
        acc += u32::from(word(pair));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn word(pair: &[u8]) -> u16 {
    let hi = pair.first().copied().unwrap_or(0);
    let lo = pair.get(1).copied().unwrap_or(0);
    u16::from_be_bytes([hi, lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x02, 0, 0, 0, 0, 0x0a];

    #[test]
    fn arp_round_trips_and_pads() {
        let asked = Arp::request(A, Ipv4Addr::new(10, 0, 0, 4), Ipv4Addr::new(10, 0, 0, 1));
        let f = asked.to_frame();
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &BROADCAST);
        assert_eq!(Arp::parse(&f), Some(asked));
        let reply = Arp::reply_to(&asked, [2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 1));
        let f = reply.to_frame();
        assert_eq!(&f[..6], &A);
        let back = Arp::parse(&f).unwrap();
        assert!(!back.request);
        assert_eq!(back.target_ip, Ipv4Addr::new(10, 0, 0, 4));
        let g = Arp::gratuitous(A, Ipv4Addr::new(10, 20, 0, 50));
        assert_eq!(Arp::parse(&g.to_frame()).map(|a| (a.sender_ip, a.target_ip)), Some((g.sender_ip, g.sender_ip)));
    }

    #[test]
    fn garbage_is_not_arp_or_syn() {
        for len in 0..80 {
            let junk = vec![0xa5u8; len];
            assert_eq!(Arp::parse(&junk), None);
            assert_eq!(Syn::parse(&junk), None);
        }
        let mut f = Arp::request(A, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).to_frame();
        f.truncate(30);
        assert_eq!(Arp::parse(&f), None);
    }

    #[test]
    fn udp_frames_parse_back_and_damage_is_refused() {
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 20, 1), 67);
        let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
        let f = udp_frame(A, BROADCAST, src, dst, b"offer");
        assert_eq!(f.len(), MIN_FRAME, "padded");
        let u = UdpIn::parse(&f).unwrap();
        assert_eq!((u.src_mac, u.src, u.dst, u.payload), (A, src, dst, &b"offer"[..]));
        // An independent parser agrees on both checksums.
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(v4)) = &p.net else { panic!("not ipv4") };
        let h = v4.header().to_header();
        assert_eq!(h.calc_header_checksum(), h.header_checksum);
        let Some(etherparse::TransportSlice::Udp(udp)) = &p.transport else { panic!("not udp") };
        assert_eq!(udp.to_header().calc_checksum_ipv4(&h, udp.payload()).unwrap(), udp.checksum());
        let mut bad = f.clone();
        bad[ETHERNET_HEADER + 28] ^= 0x01;
        assert_eq!(UdpIn::parse(&bad), None, "payload damaged: UDP checksum fails");
        for len in 0..f.len() {
            let _ = UdpIn::parse(&f[..len]);
        }
    }

    #[test]
    fn mss_is_found_among_other_options() {
        assert_eq!(mss_option(&[1, 1, 2, 4, 0x05, 0xb4, 3, 3, 7]), Some(1460));
        assert_eq!(mss_option(&[0, 2, 4, 0x05, 0xb4]), None);
        assert_eq!(mss_option(&[2, 4, 0x05]), None);
        assert_eq!(mss_option(&[3, 0]), None);
        assert_eq!(mss_option(&[1; 40]), None);
    }

    #[test]
    fn checksum_adjust_matches_recomputation() {
        fn sum(data: &[u8]) -> u16 {
            let mut acc: u32 = data.chunks(2).map(|p| u32::from(word(p))).sum();
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            !(acc as u16)
        }
        let mut data = [10u8, 0, 0, 4, 0x12, 0x34, 0xff, 0xfe, 203, 0, 113, 10];
        let before = sum(&data);
        let old = [10u8, 0, 0, 4];
        let new = [203u8, 0, 113, 77];
        data[..4].copy_from_slice(&new);
        assert_eq!(checksum_adjust(before, &old, &new), sum(&data));
    }
}

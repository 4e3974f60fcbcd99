//! Frames for the harness: build and parse with `etherparse` (an
//! implementation independent of the box's), exchange them with a NIC over
//! its unix datagram socket.

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, NetSlice, PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice,
};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub type Mac = [u8; 6];
pub type Ip = [u8; 4];

/// The harness end of one NIC.
pub struct Link {
    pub sock: UnixDatagram,
    pub guest: PathBuf,
}

impl Link {
    pub fn bind(harness: PathBuf, guest: PathBuf) -> Link {
        let sock = UnixDatagram::bind(&harness).expect("bind harness socket");
        Link { sock, guest }
    }

    pub fn send(&self, frame: &[u8]) {
        // The guest end may not exist for an instant after boot; retry briefly.
        for _ in 0..50 {
            if self.sock.send_to(frame, &self.guest).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cannot send to {}", self.guest.display());
    }

    /// The next frame, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).ok()?;
        let mut buf = vec![0u8; 2048];
        let n = self.sock.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// Frames until `pick` returns something, answering nothing else; `None`
    /// after `timeout`.
    pub fn wait_for<T>(&self, timeout: Duration, mut pick: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let f = self.recv(left)?;
            if let Some(t) = pick(&f) {
                return Some(t);
            }
        }
        None
    }
}

pub fn arp(op: ArpOperation, src_mac: Mac, src_ip: Ip, dst_mac: Mac, target_mac: Mac, target_ip: Ip) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .arp(ArpPacket::new(ArpHardwareId::ETHERNET, EtherType::IPV4, op, &src_mac, &src_ip, &target_mac, &target_ip).unwrap())
        .write(&mut f)
        .unwrap();
    f
}

pub fn arp_request(src_mac: Mac, src_ip: Ip, target: Ip) -> Vec<u8> {
    arp(ArpOperation::REQUEST, src_mac, src_ip, [0xff; 6], [0; 6], target)
}

/// An ARP frame's (operation, sender MAC, sender IP, target IP).
pub fn parse_arp(frame: &[u8]) -> Option<(ArpOperation, Mac, Ip, Ip)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Arp(a)) = p.net else { return None };
    Some((
        a.operation(),
        a.sender_hw_addr().try_into().ok()?,
        a.sender_protocol_addr().try_into().ok()?,
        a.target_protocol_addr().try_into().ok()?,
    ))
}

/// If `frame` asks who has `ip`, the reply claiming it for `mac`.
pub fn answer_arp(frame: &[u8], ip: Ip, mac: Mac) -> Option<Vec<u8>> {
    let (op, sha, spa, tpa) = parse_arp(frame)?;
    (op == ArpOperation::REQUEST && tpa == ip).then(|| arp(ArpOperation::REPLY, mac, ip, sha, sha, spa))
}

/// An IPv4 packet (no Ethernet) carrying a TCP SYN or SYN-ACK with options
/// MSS, NOP, window scale.
pub fn tcp_syn_packet(src: Ip, dst: Ip, ack: bool, mss: u16) -> Vec<u8> {
    let mut f = Vec::new();
    let b = PacketBuilder::ipv4(src, dst, 64).tcp(40000, 443, 1000, 64240).syn();
    let b = if ack { b.ack(77) } else { b };
    b.options(&[TcpOptionElement::MaximumSegmentSize(mss), TcpOptionElement::Noop, TcpOptionElement::WindowScale(7)])
        .unwrap()
        .write(&mut f, &[])
        .unwrap();
    f
}

pub fn icmp_echo_packet(src: Ip, dst: Ip, seq: u16, payload_len: usize, dont_fragment: bool) -> Vec<u8> {
    let mut f = Vec::new();
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let mut ip = etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::ICMP, src, dst).unwrap();
    ip.dont_fragment = dont_fragment;
    PacketBuilder::ip(etherparse::IpHeaders::Ipv4(ip, Default::default())).icmpv4_echo_request(0x77, seq).write(&mut f, &payload).unwrap();
    f
}

/// Wraps an IPv4 packet in Ethernet.
pub fn ethernet(src: Mac, dst: Mac, ip_packet: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip_packet.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip_packet);
    f
}

/// An Ethernet/IPv4/UDP frame.
pub fn udp_frame(src_mac: Mac, dst_mac: Mac, src: (Ip, u16), dst: (Ip, u16), payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.0, dst.0, 64).udp(src.1, dst.1).write(&mut f, payload).unwrap();
    f
}

/// A UDP datagram's (source, destination, payload).
pub type Udp = ((Ip, u16), (Ip, u16), Vec<u8>);

/// (source, destination, payload) of a UDP frame.
pub fn parse_udp(frame: &[u8]) -> Option<Udp> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else { return None };
    let Some(TransportSlice::Udp(u)) = &p.transport else { return None };
    let h = ip.header();
    Some(((h.source(), u.source_port()), (h.destination(), u.destination_port()), u.payload().to_vec()))
}

/// The IPv4 packet inside an Ethernet frame.
pub fn ip_payload(frame: &[u8]) -> Option<&[u8]> {
    (frame.get(12..14)? == [0x08, 0x00]).then(|| &frame[14..])
}

/// (is it an ACK, MSS) of a TCP SYN in an IPv4 packet.
pub fn tcp_syn_mss(ip_packet: &[u8]) -> Option<(bool, u16)> {
    let p = SlicedPacket::from_ip(ip_packet).ok()?;
    let Some(TransportSlice::Tcp(t)) = p.transport else { return None };
    if !t.syn() {
        return None;
    }
    let mss = t.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    })?;
    Some((t.ack(), mss))
}

/// IPv4 header and TCP/ICMP checksums of an IPv4 packet are right.
pub fn checksums_valid(ip_packet: &[u8]) -> bool {
    let Ok(p) = SlicedPacket::from_ip(ip_packet) else { return false };
    let Some(NetSlice::Ipv4(ip)) = &p.net else { return false };
    let hdr = ip.header().to_header();
    if hdr.calc_header_checksum() != hdr.header_checksum {
        return false;
    }
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => t.to_header().calc_checksum_ipv4(&hdr, t.payload()).ok() == Some(t.checksum()),
        Some(TransportSlice::Icmpv4(i)) => i.header().icmp_type.calc_checksum(i.payload()) == i.checksum(),
        _ => true,
    }
}

/// ICMP (type, code, bytes 4..8 of the header) of an IPv4 packet.
pub fn icmp(ip_packet: &[u8]) -> Option<(u8, u8, [u8; 4], Ip, Ip)> {
    let p = SlicedPacket::from_ip(ip_packet).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else { return None };
    let Some(TransportSlice::Icmpv4(i)) = &p.transport else { return None };
    let raw = i.slice();
    Some((i.type_u8(), i.code_u8(), raw.get(4..8)?.try_into().ok()?, ip.header().source(), ip.header().destination()))
}

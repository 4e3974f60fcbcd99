//! Shared test world: the on-prem box of scenario 1 (seed 000) with a VXLAN
//! segment over the WireGuard underlay (seed 003), a pass-through tunnel and
//! frame builders. Used by the scenario tests, the fuzz harness and the
//! benchmarks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

use etherparse::{PacketBuilder, TcpOptionElement};
use routerd_dataplane::*;

pub const LAN0: PortId = PortId(0);
pub const WAN: PortId = PortId(1);
pub const LAN1: PortId = PortId(2);

pub const LAN0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const WAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const LAN1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
pub const GW_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x01];
pub const HOST_A_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x05];
pub const INTRUDER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x09];
pub const VM1_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x01];
pub const VM2_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x02];
pub const VTEP_WAN_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x50];

pub const LAN0_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const WAN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const GW_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const LAN1_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);
pub const TUN_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// A host living here (local claim).
pub const HOST_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
/// The moved VM living in the cloud (remote proxy-ARP claim).
pub const MOVED: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
/// A remote claim captured as a provider secondary IP on the WAN.
pub const SECONDARY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
/// The far VTEP behind the tunnel (seed 003: wro's WireGuard address).
pub const VTEP_TUN: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// A VTEP on the WAN subnet.
pub const VTEP_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
pub const PEER: PeerId = PeerId(1);
pub const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const PEER_ENDPOINT: Endpoint = Endpoint::V4(std::net::SocketAddrV4::new(PEER_ADDR, 51820));
pub const LISTEN: u16 = 51820;

pub const CLAIM_MOVED: usize = 0;
pub const CLAIM_HOST_A: usize = 1;
pub const CLAIM_SECONDARY: usize = 2;

pub fn prefix(a: [u8; 4], len: u8) -> Prefix {
    Prefix::new(Ipv4Addr::from(a), len).unwrap()
}

pub fn config() -> Config {
    let mut ports = heapless::Vec::new();
    ports
        .push(PortConfig {
            role: PortRole::Lan,
            mac: Mac(LAN0_MAC),
            address: Some(LAN0_IP),
            prefix_len: 24,
            gateway: None,
            mtu: 1500,
            dhcp: false,
            medium: Medium::Ethernet,
        })
        .unwrap();
    ports
        .push(PortConfig {
            role: PortRole::Wan,
            mac: Mac(WAN_MAC),
            address: Some(WAN_IP),
            prefix_len: 24,
            gateway: Some(GW_IP),
            mtu: 1500,
            dhcp: false,
            medium: Medium::Ethernet,
        })
        .unwrap();
    ports
        .push(PortConfig {
            role: PortRole::Lan,
            mac: Mac(LAN1_MAC),
            address: Some(LAN1_IP),
            prefix_len: 24,
            gateway: None,
            mtu: 1500,
            dhcp: false,
            medium: Medium::Ethernet,
        })
        .unwrap();
    let mut allowed = heapless::Vec::new();
    for p in [prefix([10, 0, 0, 9], 32), prefix([10, 0, 0, 20], 32), prefix([10, 2, 0, 0], 16), prefix([192, 168, 50, 0], 24)] {
        allowed.push(p).unwrap();
    }
    let mut peers = heapless::Vec::new();
    peers.push(PeerConfig { id: PEER, allowed }).unwrap();
    let mut claims = heapless::Vec::new();
    claims.push(ClaimConfig::new(MOVED, ClaimSide::Remote { capture: Capture::ProxyArp, port: LAN0, peer: PEER })).unwrap();
    claims.push(ClaimConfig::new(HOST_A, ClaimSide::Local { port: LAN0 })).unwrap();
    claims.push(ClaimConfig::new(SECONDARY, ClaimSide::Remote { capture: Capture::ProviderSecondaryIp, port: WAN, peer: PEER })).unwrap();
    let mut vteps = heapless::Vec::new();
    vteps.push(VTEP_TUN).unwrap();
    vteps.push(VTEP_WAN).unwrap();
    let mut segments = heapless::Vec::new();
    segments.push(SegmentConfig { vni: 100, port: LAN1, vteps, udp_port: 4789, mss: None }).unwrap();
    Config {
        ports,
        tunnel: TunnelConfig { address: Some(TUN_IP), mtu: 1420, listen_port: LISTEN, peers },
        claims,
        segments,
        // Most scenarios start from capturing claims; the probing ones set
        // `probe_count` back (see `probing_config`).
        timing: Timing { probe_count: 0, ..Timing::default() },
        nat: heapless::Vec::new(),
        firewall: None,
    }
}

/// A tunnel without crypto: a datagram is `"PT" peer(2) inner`. `"HI"` is a
/// handshake (answered with `"HR"`), `"KA"` a keepalive; anything else is
/// rejected.
#[derive(Default)]
pub struct PassTunnel {
    pub endpoints: HashMap<u16, Endpoint>,
    pub sealed: usize,
    pub hold: bool,
    pub timer: Option<Vec<u8>>,
}

impl PassTunnel {
    pub fn new() -> PassTunnel {
        let mut t = PassTunnel::default();
        t.endpoints.insert(PEER.0, PEER_ENDPOINT);
        t
    }
}

impl Tunnel for PassTunnel {
    fn seal(&mut self, _now: Instant, peer: PeerId, buf: &mut [u8], inner: Range<usize>) -> Sealed {
        if self.hold {
            return Sealed::Held;
        }
        let Some(to) = self.endpoints.get(&peer.0).copied() else { return Sealed::Failed };
        if inner.start < 4 || inner.end > buf.len() {
            return Sealed::Failed;
        }
        buf[inner.start - 4..inner.start - 2].copy_from_slice(b"PT");
        buf[inner.start - 2..inner.start].copy_from_slice(&peer.0.to_be_bytes());
        self.sealed += 1;
        Sealed::Datagram { range: inner.start - 4..inner.end, to }
    }

    fn open(&mut self, _now: Instant, from: Endpoint, buf: &mut [u8], d: Range<usize>) -> Opened {
        let Some(b) = buf.get(d.clone()) else { return Opened::Rejected };
        match b.get(..2) {
            Some(b"PT") if b.len() >= 4 => {
                let peer = u16::from_be_bytes([b[2], b[3]]);
                Opened::Packet { peer: PeerId(peer), range: d.start + 4..d.end }
            }
            Some(b"HI") => {
                buf[d.start..d.start + 2].copy_from_slice(b"HR");
                Opened::Reply { range: d.start..d.start + 2, to: from }
            }
            Some(b"KA") => Opened::Consumed,
            _ => Opened::Rejected,
        }
    }

    fn poll(&mut self, _now: Instant, buf: &mut [u8]) -> Option<(Range<usize>, Endpoint)> {
        let t = self.timer.take()?;
        buf.get_mut(..t.len())?.copy_from_slice(&t);
        Some((0..t.len(), PEER_ENDPOINT))
    }

    fn poll_at(&self) -> Option<Instant> {
        self.timer.as_ref().map(|_| Instant::ZERO)
    }
}

#[derive(Default)]
pub struct Tx {
    pub frames: Vec<(PortId, Vec<u8>)>,
    pub refuse: bool,
    /// Packets handed to the services layer (the tests play it).
    pub local: Vec<(LocalFrom, Vec<u8>)>,
}

impl Transmit for Tx {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        if self.refuse {
            return false;
        }
        self.frames.push((port, frame.to_vec()));
        true
    }

    fn local(&mut self, from: LocalFrom, packet: &[u8]) -> Local {
        self.local.push((from, packet.to_vec()));
        Local::Taken
    }
}

/// An ICMP echo reply IPv4 packet without Ethernet (what a service answers).
pub fn echo_reply(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64).icmpv4_echo_reply(7, 1).write(&mut v, b"ping").unwrap();
    v
}

pub struct Harness {
    pub dp: Box<Dataplane>,
    pub tun: PassTunnel,
    pub tx: Tx,
    pub now: Instant,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(config())
    }

    pub fn with(cfg: Config) -> Harness {
        Harness { dp: Box::new(Dataplane::new(cfg, Instant::ZERO).unwrap()), tun: PassTunnel::new(), tx: Tx::default(), now: Instant::ZERO }
    }

    /// Hand a frame in (at the recommended headroom); returns the in-place output.
    pub fn rx(&mut self, port: PortId, frame: &[u8]) -> Option<(PortId, Vec<u8>)> {
        let mut storage = vec![0xa5u8; BUF_SIZE];
        let len = frame.len().min(BUF_SIZE - HEADROOM);
        storage[HEADROOM..HEADROOM + len].copy_from_slice(&frame[..len]);
        let mut fb = FrameBuf::new(&mut storage, HEADROOM, len).unwrap();
        match self.dp.process(self.now, port, &mut fb, &mut self.tun, &mut self.tx) {
            Verdict::Transmit(p) => Some((p, fb.frame().to_vec())),
            Verdict::Consumed => None,
        }
    }

    pub fn take_tx(&mut self) -> Vec<(PortId, Vec<u8>)> {
        std::mem::take(&mut self.tx.frames)
    }

    pub fn poll(&mut self, at_ms: u64) {
        self.now = Instant::from_millis(at_ms);
        self.dp.poll(self.now, &mut self.tun, &mut self.tx);
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dp.counters().dropped(r)
    }

    /// Let the box learn a neighbour: the host ARPs for the box's address.
    pub fn learn(&mut self, port: PortId, ip: Ipv4Addr, mac: [u8; 6]) {
        let our = self.dp.config().ports[port.index()].address.expect("the port has an address");
        let out = self.rx(port, &arp(1, mac, ip, [0; 6], our, [0xff; 6]));
        assert!(out.is_some(), "box should answer an ARP for its own address");
    }

    /// Resolve the WAN gateway.
    pub fn learn_gateway(&mut self) {
        self.learn(WAN, GW_IP, GW_MAC);
    }

    pub fn claim(&self, i: usize) -> ClaimStatus {
        self.dp.claim_status(i).unwrap()
    }
}

/// An Ethernet+ARP frame (padded to 60 bytes).
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr, eth_dst: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

/// Fields of an ARP frame: (eth dst, op, sha, spa, tha, tpa).
pub fn parse_arp(f: &[u8]) -> ([u8; 6], u16, [u8; 6], Ipv4Addr, [u8; 6], Ipv4Addr) {
    assert_eq!(&f[12..14], &[0x08, 0x06]);
    let m = |r: Range<usize>| -> [u8; 6] { f[r].try_into().unwrap() };
    let ip = |r: Range<usize>| -> Ipv4Addr { <[u8; 4]>::try_from(&f[r]).unwrap().into() };
    (m(0..6), u16::from_be_bytes([f[20], f[21]]), m(22..28), ip(28..32), m(32..38), ip(38..42))
}

/// A TCP SYN (or SYN-ACK) IPv4 packet without Ethernet, with an MSS option.
pub fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, mss: u16, syn_ack: bool, payload_len: usize) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src.octets(), dst.octets(), ttl).tcp(40000, 443, 0x11223344, 64240).syn();
    if syn_ack {
        b = b.ack(0x55667788);
    }
    let b = b
        .options(&[
            TcpOptionElement::MaximumSegmentSize(mss),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::WindowScale(7),
        ])
        .unwrap();
    let payload = vec![0x42u8; payload_len];
    let mut v = Vec::new();
    b.write(&mut v, &payload).unwrap();
    v
}

/// A UDP IPv4 packet without Ethernet.
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), ttl).udp(sport, dport).write(&mut v, payload).unwrap();
    v
}

/// An ICMP echo request IPv4 packet without Ethernet.
pub fn echo(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), ttl).icmpv4_echo_request(7, 1).write(&mut v, b"ping").unwrap();
    v
}

/// Put an Ethernet header on an IPv4 packet.
pub fn eth(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

/// Set or clear DF and fix the header checksum.
pub fn set_df(ip: &mut [u8], df: bool) {
    if df {
        ip[6] |= 0x40;
    } else {
        ip[6] &= !0x40;
    }
    fix_ip_checksum(ip);
}

pub fn fix_ip_checksum(ip: &mut [u8]) {
    let (h, _) = etherparse::Ipv4Header::from_slice(ip).unwrap();
    let c = h.calc_header_checksum();
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// A WireGuard-port datagram from the peer carrying `inner` (pass-through format).
pub fn from_peer(peer: u16, inner: &[u8]) -> Vec<u8> {
    let mut payload = b"PT".to_vec();
    payload.extend_from_slice(&peer.to_be_bytes());
    payload.extend_from_slice(inner);
    wan_udp(PEER_ADDR, PEER_ENDPOINT.port(), LISTEN, &payload)
}

/// A UDP datagram arriving on the WAN for the box (from the gateway's MAC).
pub fn wan_udp(src: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    eth(WAN_MAC, GW_MAC, &udp(src, WAN_IP, 60, sport, dport, payload))
}

/// A VXLAN datagram (outer Ethernet/IPv4/UDP) carrying `inner`.
pub fn vxlan_frame(outer_src: Ipv4Addr, src_mac: [u8; 6], vni: u32, flags: u8, inner: &[u8]) -> Vec<u8> {
    let mut p = vec![flags, 0, 0, 0, (vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0];
    p.extend_from_slice(inner);
    eth(WAN_MAC, src_mac, &udp(outer_src, WAN_IP, 64, 50000, 4789, &p))
}

/// Check every checksum in an Ethernet frame with etherparse and return the
/// parsed headers.
pub fn checked(frame: &[u8]) -> etherparse::PacketHeaders<'_> {
    let h = etherparse::PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
    check_l3_l4(&h);
    h
}

/// Same for a bare IPv4 packet.
pub fn checked_ip(ip: &[u8]) -> etherparse::PacketHeaders<'_> {
    let h = etherparse::PacketHeaders::from_ip_slice(ip).expect("etherparse parses the packet");
    check_l3_l4(&h);
    h
}

fn check_l3_l4(h: &etherparse::PacketHeaders<'_>) {
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &h.net else { return };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IPv4 header checksum");
    let payload = h.payload.slice();
    match &h.transport {
        Some(etherparse::TransportHeader::Tcp(t)) => {
            assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, payload).unwrap(), "TCP checksum")
        }
        Some(etherparse::TransportHeader::Udp(u)) if u.checksum != 0 => {
            assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, payload).unwrap(), "UDP checksum")
        }
        Some(etherparse::TransportHeader::Icmpv4(i)) => {
            let again = etherparse::Icmpv4Header::with_checksum(i.icmp_type.clone(), payload);
            assert_eq!(i.checksum, again.checksum, "ICMP checksum")
        }
        _ => {}
    }
}

/// The MSS option of a TCP segment in an IPv4 packet.
pub fn mss_of(ip: &[u8]) -> Option<u16> {
    let h = etherparse::PacketHeaders::from_ip_slice(ip).ok()?;
    let Some(etherparse::TransportHeader::Tcp(t)) = h.transport else { return None };
    t.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    })
}
pub mod fuzz;

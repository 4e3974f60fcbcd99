//! The datagram medium: a WAN port that is a UDP socket whose wire belongs
//! to the host's kernel (routerd-host's WAN). Tunnel datagrams come in as
//! payload and sender (`Dataplane::process_datagram_and_transmit`) and go
//! out as payload and endpoint (`Transmit::send_datagram`); other IPv4
//! leaves bare. No Ethernet header, no ARP on that port, ever.

mod common;

use std::net::Ipv4Addr;

use common::*;
use routerd_dataplane::*;

/// A host on the internet, behind the WAN's IP side.
const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);

/// The scenario box of `common`, its WAN a datagram socket.
fn datagram_config() -> Config {
    let mut c = config();
    c.ports[WAN.index()].medium = Medium::Datagram;
    c
}

fn v6_endpoint() -> Endpoint {
    "[2001:db8::1]:51820".parse().unwrap()
}

/// What the dataplane handed out: frames per port and datagrams per port.
#[derive(Default)]
struct DgTx {
    frames: Vec<(PortId, Vec<u8>)>,
    datagrams: Vec<(PortId, Endpoint, Vec<u8>)>,
    /// `send_datagram` finds no room (a full socket buffer).
    refuse_datagrams: bool,
    local: Vec<(LocalFrom, Vec<u8>)>,
}

impl Transmit for DgTx {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.frames.push((port, frame.to_vec()));
        true
    }

    fn send_datagram(&mut self, port: PortId, to: Endpoint, payload: &[u8]) -> bool {
        if self.refuse_datagrams {
            return false;
        }
        self.datagrams.push((port, to, payload.to_vec()));
        true
    }

    fn local(&mut self, from: LocalFrom, packet: &[u8]) -> Local {
        self.local.push((from, packet.to_vec()));
        Local::Taken
    }
}

struct H {
    dp: Box<Dataplane>,
    tun: PassTunnel,
    tx: DgTx,
    now: Instant,
}

impl H {
    fn new(cfg: Config) -> H {
        H { dp: Box::new(Dataplane::new(cfg, Instant::ZERO).unwrap()), tun: PassTunnel::new(), tx: DgTx::default(), now: Instant::ZERO }
    }

    /// `payload` as a datagram port delivers it: from `from`, or bare IPv4
    /// from the IP side (`None`). What is left in place goes to `tx` too.
    fn datagram(&mut self, port: PortId, from: Option<Endpoint>, payload: &[u8]) -> Verdict {
        let mut storage = vec![0xa5u8; BUF_SIZE];
        storage[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
        let mut fb = FrameBuf::new(&mut storage, HEADROOM, payload.len()).unwrap();
        self.dp.process_datagram_and_transmit(self.now, port, from, &mut fb, &mut self.tun, &mut self.tx)
    }

    /// An Ethernet frame received on `port`.
    fn rx(&mut self, port: PortId, frame: &[u8]) -> Verdict {
        let mut storage = vec![0xa5u8; BUF_SIZE];
        storage[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        let mut fb = FrameBuf::new(&mut storage, HEADROOM, frame.len()).unwrap();
        self.dp.process_and_transmit(self.now, port, &mut fb, &mut self.tun, &mut self.tx)
    }

    /// Host A on lan0 ARPs for the box: the box learns it and answers.
    fn learn_host_a(&mut self) {
        self.rx(LAN0, &arp(1, HOST_A_MAC, HOST_A, [0; 6], LAN0_IP, [0xff; 6]));
        let f = std::mem::take(&mut self.tx.frames);
        assert_eq!(f.len(), 1, "the box answers the ARP for its own address");
        assert_eq!(parse_arp(&f[0].1).1, 2);
    }

    fn tunnel_rx(&self) -> u64 {
        self.dp.counters().tunnel_rx
    }

    fn dropped(&self, r: DropReason) -> u64 {
        self.dp.counters().dropped(r)
    }

    /// Neither an ARP frame nor an Ethernet header anywhere on the WAN, and
    /// no ARP request sent on any port.
    fn assert_no_arp(&self) {
        assert_eq!(self.dp.counters().arp_requests_sent, 0, "an ARP request was sent");
        for (port, f) in &self.tx.frames {
            let arp = f.len() >= 14 && f[12..14] == [0x08, 0x06];
            assert!(!arp, "ARP frame on {port:?}: {f:02x?}");
            if *port == WAN {
                assert_eq!(f[0] >> 4, 4, "the WAN carries bare IPv4 only: {f:02x?}");
            }
        }
        assert_eq!(self.dp.pending_frames(), 0, "a frame waits for ARP");
    }
}

/// The inner packet `ip` after one hop: TTL one lower, header checksum fixed.
fn hop(ip: &[u8]) -> Vec<u8> {
    let mut v = ip.to_vec();
    v[8] -= 1;
    fix_ip_checksum(&mut v);
    v
}

fn pt(peer: u16, inner: &[u8]) -> Vec<u8> {
    let mut p = b"PT".to_vec();
    p.extend_from_slice(&peer.to_be_bytes());
    p.extend_from_slice(inner);
    p
}

// (a)
#[test]
fn a_datagram_from_the_endpoint_goes_to_the_tunnel_and_on_to_the_lan() {
    let mut h = H::new(datagram_config());
    h.learn_host_a();
    let inner = echo(MOVED, HOST_A, 64);
    assert_eq!(h.datagram(WAN, Some(PEER_ENDPOINT), &pt(PEER.0, &inner)), Verdict::Transmit(LAN0));
    assert_eq!(h.tx.frames.len(), 1, "{:?}", h.tx.frames);
    let (port, f) = &h.tx.frames[0];
    assert_eq!(*port, LAN0);
    assert_eq!((&f[..6], &f[6..12], &f[12..14]), (&HOST_A_MAC[..], &LAN0_MAC[..], &[0x08, 0x00][..]));
    checked(f);
    assert_eq!(&f[14..], &hop(&inner)[..], "the inner packet, one hop on");
    let c = h.dp.counters();
    assert_eq!((c.rx_frames[WAN.index()], c.tunnel_rx, c.forwarded), (1, 1, 1));
    assert_eq!(c.total_drops(), 0, "{:?}", c.nonzero_drops().collect::<Vec<_>>());
    assert!(h.tx.datagrams.is_empty());

    // The tunnel's answers (handshake response) go back to the sender as
    // payload; its timers' datagrams (poll) to their endpoint.
    let other: Endpoint = "192.0.2.99:40000".parse().unwrap();
    assert_eq!(h.datagram(WAN, Some(other), b"HI"), Verdict::Consumed);
    h.tun.timer = Some(b"KA-timer".to_vec());
    h.dp.poll(h.now, &mut h.tun, &mut h.tx);
    assert_eq!(h.tx.datagrams, vec![(WAN, other, b"HR".to_vec()), (WAN, PEER_ENDPOINT, b"KA-timer".to_vec())]);
    // (The poll also announced the proxy-ARP claim on lan0.)
    assert!(h.tx.frames.iter().all(|(p, _)| *p == LAN0), "nothing on the WAN but datagrams");
    assert_eq!(h.dp.counters().tx_frames[WAN.index()], 2);
    // A payload the tunnel refuses is counted as such.
    assert_eq!(h.datagram(WAN, Some(PEER_ENDPOINT), b"garbage"), Verdict::Consumed);
    assert_eq!(h.dropped(DropReason::TunnelRejected), 1);
}

// (b)
#[test]
fn a_packet_for_a_peer_leaves_as_payload_and_endpoint_without_any_arp() {
    let mut h = H::new(datagram_config());
    let inner = echo(HOST_A, MOVED, 64);
    // The gateway was never resolved: on an Ethernet WAN this would park
    // the packet and ARP for it.
    assert_eq!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)), Verdict::Consumed);
    assert!(h.tx.frames.is_empty(), "no frame at all: {:?}", h.tx.frames);
    assert_eq!(h.tx.datagrams.len(), 1);
    let (port, to, payload) = &h.tx.datagrams[0];
    assert_eq!((*port, *to), (WAN, PEER_ENDPOINT));
    // Exactly what the tunnel sealed: no Ethernet, IPv4 or UDP header.
    assert_eq!(payload, &pt(PEER.0, &hop(&inner)));
    h.assert_no_arp();
    let c = h.dp.counters();
    assert_eq!((c.tx_frames[WAN.index()], c.tx_frames[LAN0.index()], c.tunnel_tx, h.tun.sealed), (1, 0, 1, 1));
    assert_eq!(c.total_drops(), 0);
    assert!(h.dp.neighbors().entries().iter().all(|n| n.port != WAN), "no neighbour entry on the WAN");
}

// (c)
#[test]
fn a_datagram_the_socket_cannot_take_is_counted_as_tx_full() {
    let mut h = H::new(datagram_config());
    h.tx.refuse_datagrams = true;
    assert_eq!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &echo(HOST_A, MOVED, 64))), Verdict::Consumed);
    let c = h.dp.counters();
    assert_eq!(c.dropped(DropReason::TxFull), 1);
    assert_eq!(c.tx_full[WAN.index()], 1);
    assert_eq!(c.tx_frames[WAN.index()], 0);
    assert_eq!(c.total_drops(), 1, "exactly one reason: {:?}", c.nonzero_drops().collect::<Vec<_>>());
    assert!(h.tx.datagrams.is_empty() && h.tx.frames.is_empty());
    // A refused handshake response too.
    h.datagram(WAN, Some(PEER_ENDPOINT), b"HI");
    assert_eq!(h.dp.counters().tx_full[WAN.index()], 2);
}

// (d)
#[test]
fn bare_ipv4_from_the_ip_side_is_forwarded_and_ipv4_leaves_the_wan_bare() {
    let mut h = H::new(datagram_config());
    h.learn_host_a();
    // In from the IP side (a TUN) to a host on lan0 (a local claim).
    let inbound = udp(FAR, HOST_A, 60, 5353, 9999, b"hello");
    assert_eq!(h.datagram(WAN, None, &inbound), Verdict::Transmit(LAN0));
    assert_eq!(h.tunnel_rx(), 0, "not a tunnel datagram");
    let (port, f) = h.tx.frames.pop().expect("forwarded to lan0");
    assert_eq!((port, &f[..6], &f[12..14]), (LAN0, &HOST_A_MAC[..], &[0x08, 0x00][..]));
    assert_eq!(&f[14..], &hop(&inbound)[..]);
    // And to a connected LAN address nobody claims: resolved on lan0.
    let lan_host = Ipv4Addr::new(10, 0, 0, 33);
    h.datagram(WAN, None, &udp(FAR, lan_host, 60, 5353, 9999, b"x"));
    let (port, f) = h.tx.frames.pop().expect("an ARP request on lan0");
    assert_eq!(port, LAN0);
    assert_eq!(parse_arp(&f).5, lan_host);
    assert!(h.tx.frames.is_empty());
    let arps_on_lan = h.dp.counters().arp_requests_sent;

    // Out: host A to the internet, routed by default via the WAN gateway,
    // which is never ARPed for: the packet leaves bare for the IP side.
    let outbound = udp(HOST_A, FAR, 64, 40000, 53, b"query");
    assert_eq!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &outbound)), Verdict::Transmit(WAN));
    let (port, f) = h.tx.frames.pop().expect("sent on the WAN");
    assert_eq!(port, WAN);
    assert_eq!(f[0], 0x45, "a bare IPv4 header, no Ethernet");
    assert_eq!(f, hop(&outbound));
    checked_ip(&f);
    assert_eq!(h.dp.counters().arp_requests_sent, arps_on_lan, "no ARP for the gateway");
    assert_eq!(h.dp.pending_frames(), 1, "only lan0's unresolved host waits");
    assert!(h.dp.neighbors().entries().iter().all(|n| n.port != WAN), "no neighbour entry on the WAN");
    assert!(h.tx.datagrams.is_empty());

    // An ICMP error for a packet from the IP side goes back bare too.
    assert_eq!(h.datagram(WAN, None, &udp(FAR, HOST_A, 1, 5353, 9999, b"ttl")), Verdict::Transmit(WAN));
    let (port, f) = h.tx.frames.pop().expect("time exceeded");
    assert_eq!(port, WAN);
    assert_eq!(f[0], 0x45);
    let icmp = checked_ip(&f);
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &icmp.net else { panic!("not ipv4") };
    assert_eq!((Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination)), (WAN_IP, FAR));
    assert_eq!(f[20], 11, "ICMP time exceeded");
    assert_eq!(h.dp.counters().tx_frames[WAN.index()], 2);

    // The WAN still answers nothing but WireGuard: a ping to its address
    // from the IP side is dropped, not delivered to the services.
    assert_eq!(h.datagram(WAN, None, &echo(FAR, WAN_IP, 64)), Verdict::Consumed);
    assert_eq!(h.dropped(DropReason::WanNotWireguard), 1);
    assert!(h.tx.local.is_empty());
}

// (e)
#[test]
fn an_ipv6_endpoint_is_sent_on_a_datagram_wan_and_dropped_on_an_ethernet_wan() {
    let inner = echo(HOST_A, MOVED, 64);
    let frame = eth(LAN0_MAC, HOST_A_MAC, &inner);

    let mut h = H::new(datagram_config());
    h.tun.endpoints.insert(PEER.0, v6_endpoint());
    h.rx(LAN0, &frame);
    assert_eq!(h.tx.datagrams, vec![(WAN, v6_endpoint(), pt(PEER.0, &hop(&inner)))]);
    assert_eq!(h.dropped(DropReason::UnderlayIpv6), 0);
    // A handshake from an IPv6 sender is answered there.
    h.datagram(WAN, Some(v6_endpoint()), b"HI");
    assert_eq!(h.tx.datagrams.last(), Some(&(WAN, v6_endpoint(), b"HR".to_vec())));
    h.assert_no_arp();

    // The image's Ethernet WAN: IPv4 underlay only.
    let mut h = H::new(config());
    h.tun.endpoints.insert(PEER.0, v6_endpoint());
    assert_eq!(h.rx(LAN0, &frame), Verdict::Consumed);
    assert!(h.tx.frames.is_empty() && h.tx.datagrams.is_empty(), "{:?} {:?}", h.tx.frames, h.tx.datagrams);
    let c = h.dp.counters();
    assert_eq!(c.dropped(DropReason::UnderlayIpv6), 1);
    assert_eq!(c.total_drops(), 1);
    assert_eq!(c.tx_frames[WAN.index()], 0);
    assert_eq!(DropReason::UnderlayIpv6.name(), "underlay_ipv6");
    // The same box with an IPv4 endpoint wraps it in UDP/IPv4/Ethernet.
    h.tun.endpoints.insert(PEER.0, PEER_ENDPOINT);
    h.rx(WAN, &arp(1, GW_MAC, GW_IP, [0; 6], WAN_IP, [0xff; 6]));
    h.tx.frames.clear();
    assert_eq!(h.rx(LAN0, &frame), Verdict::Transmit(WAN));
    let (port, f) = h.tx.frames.pop().unwrap();
    assert_eq!((port, &f[..6], &f[12..14]), (WAN, &GW_MAC[..], &[0x08, 0x00][..]));
    assert_eq!(h.dp.counters().dropped(DropReason::UnderlayIpv6), 1);
}

// (f)
#[test]
fn only_the_wan_may_be_a_datagram_port() {
    assert_eq!(datagram_config().validate(), Ok(()));
    for lan in [LAN0, LAN1] {
        let mut c = config();
        c.ports[lan.index()].medium = Medium::Datagram;
        assert_eq!(c.validate(), Err(ConfigError::BadPort(lan)));
        assert!(matches!(Dataplane::new(c, Instant::ZERO), Err(ConfigError::BadPort(p)) if p == lan));
    }
    // The WAN as well as a LAN: the LAN is refused.
    let mut c = datagram_config();
    c.ports[LAN0.index()].medium = Medium::Datagram;
    assert_eq!(c.validate(), Err(ConfigError::BadPort(LAN0)));
}

// (g)
#[test]
fn a_datagram_handed_in_on_an_ethernet_port_is_dropped_and_counted() {
    let inner = echo(MOVED, HOST_A, 64);
    let payload = pt(PEER.0, &inner);
    // The Ethernet WAN of the image, and a LAN of the datagram box.
    for (cfg, port) in [(config(), WAN), (datagram_config(), LAN0), (datagram_config(), LAN1)] {
        let mut h = H::new(cfg);
        assert_eq!(h.datagram(port, Some(PEER_ENDPOINT), &payload), Verdict::Consumed);
        assert_eq!(h.datagram(port, None, &inner), Verdict::Consumed);
        assert_eq!(h.datagram(port, Some(v6_endpoint()), b""), Verdict::Consumed);
        let c = h.dp.counters();
        assert_eq!(c.dropped(DropReason::UnknownPort), 3, "{port:?}");
        assert_eq!(c.total_drops(), 3);
        assert_eq!((c.tunnel_rx, c.forwarded, c.rx_frames[port.index()]), (0, 0, 0), "nothing reached the pipeline");
        assert!(h.tx.frames.is_empty() && h.tx.datagrams.is_empty());
    }
    // A port that does not exist.
    let mut h = H::new(datagram_config());
    assert_eq!(h.datagram(PortId(7), Some(PEER_ENDPOINT), &payload), Verdict::Consumed);
    assert_eq!(h.dropped(DropReason::UnknownPort), 1);
    // Empty and malformed payloads on the datagram WAN itself.
    assert_eq!(h.datagram(WAN, None, &[]), Verdict::Consumed);
    assert_eq!(h.datagram(WAN, None, &[0x45, 0, 0]), Verdict::Consumed);
    assert_eq!(h.dropped(DropReason::Ipv4Malformed), 2);
    assert_eq!(h.datagram(WAN, Some(PEER_ENDPOINT), &[]), Verdict::Consumed);
    assert_eq!(h.dropped(DropReason::TunnelRejected), 1);
}

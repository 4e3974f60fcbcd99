//! routerd-host's WAN on the real node: two boxes (platform routerd-host),
//! each with an Ethernet lan0 and a wan0 that is a UDP socket
//! (`Loopback::datagram`, `NicInfo::datagram`), joined by real WireGuard.
//! The test is the network between the sockets: what one box sends with
//! `send_datagram` arrives at the other from the first box's socket address
//! (the one the other's configuration names as its endpoint). No Ethernet
//! and no ARP ever leave a WAN; IPv6 endpoints work the same.

mod common;

use common::{key_pair, seed_000, CLOUD_MACS, HOST_CLOUD, HOST_CLOUD_MAC, HOST_ONPREM, HOST_ONPREM_MAC, ONPREM_MACS};
use rand_core::OsRng;
use routerd_control::{Forwarder, NicInfo, Node};
use routerd_dataplane::Instant;
use routerd_e2e::net;
use routerd_netdev::testing::Loopback;
use routerd_provision::message::{FailureKind, Op, Reply};
use routerd_wireguard as wg;
use std::net::SocketAddr;

/// One routerd-host box: lan0 an Ethernet NIC, wan0 a UDP socket.
struct HostBox {
    node: Box<Node<OsRng>>,
    nics: [Loopback; 2],
    fwd: Box<Forwarder>,
    /// Where this box's socket is, as the other box's configuration names it.
    socket: SocketAddr,
    /// Everything its WAN NIC sent as frames (bare IPv4 for the IP side):
    /// none expected here.
    wan_frames: Vec<Vec<u8>>,
    /// Every datagram it sent: (to, payload).
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
}

impl HostBox {
    fn new(toml: &str, macs: [[u8; 6]; 2], key: [u8; 32], socket: SocketAddr) -> HostBox {
        let infos = [NicInfo::ethernet(macs[0]), NicInfo::datagram(macs[1])];
        let mut node = Box::new(Node::new(&infos, Some(OsRng), "0.1.0", "test"));
        node.set_platform(config_schema::Platform::Host);
        let slot = config_schema::Name::new("wg0").unwrap();
        assert!(matches!(node.handle(Instant::ZERO, Op::KeyImport(slot, key), &[]), Reply::Keys(_)));
        let cfg = config_schema::human::from_toml(toml).expect("config parses");
        match node.handle(Instant::ZERO, Op::Apply(Box::new(cfg)), &[]) {
            Reply::Applied(_) => {}
            other => panic!("apply refused: {other:?}"),
        }
        let nics = [Loopback::new(macs[0], 64), Loopback::datagram(macs[1], 64)];
        HostBox { node, nics, fwd: Box::new(Forwarder::new()), socket, wan_frames: Vec::new(), datagrams: Vec::new() }
    }

    fn turn(&mut self, now: Instant) {
        self.fwd.turn(&mut self.node, now, &mut self.nics[..], &mut |_| {});
    }

    fn lan(&mut self) -> &mut Loopback {
        &mut self.nics[0]
    }

    fn status(&mut self, now: Instant) -> Box<routerd_provision::message::Status> {
        match self.node.handle(now, Op::Status { mark: false }, &[]) {
            Reply::Status(st) => st,
            other => panic!("{other:?}"),
        }
    }

    fn wg_peer(&mut self, now: Instant) -> wg::PeerStatus {
        let now = wg::Instant::from_millis(now.millis());
        self.node.wireguard().expect("a tunnel runs").peer_status(wg::PeerId(0), now).expect("peer 0")
    }
}

/// Runs both boxes, carrying each box's datagrams to the other's socket
/// (arriving from the sender's socket address), until both are quiet;
/// collects what they sent on their LANs. Every datagram must be addressed
/// to the other box's socket.
fn pump(now: Instant, a: &mut HostBox, b: &mut HostBox, a_lan: &mut Vec<Vec<u8>>, b_lan: &mut Vec<Vec<u8>>) {
    for _ in 0..1000 {
        a.turn(now);
        b.turn(now);
        a_lan.extend(a.lan().take_sent());
        b_lan.extend(b.lan().take_sent());
        let (a_out, b_out) = (a.nics[1].take_datagrams(), b.nics[1].take_datagrams());
        for x in [&mut *a, &mut *b] {
            let frames = x.nics[1].take_sent();
            x.wan_frames.extend(frames);
        }
        if a_out.is_empty() && b_out.is_empty() && a.nics[0].pending() == 0 && b.nics[0].pending() == 0 {
            return;
        }
        for (to, payload) in &a_out {
            assert_eq!(*to, b.socket, "the on-prem box sent to its configured endpoint");
            b.nics[1].inject_from(a.socket, payload);
        }
        for (to, payload) in &b_out {
            assert_eq!(*to, a.socket, "the cloud box sent to its configured endpoint");
            a.nics[1].inject_from(b.socket, payload);
        }
        a.datagrams.extend(a_out);
        b.datagrams.extend(b_out);
    }
    panic!("the boxes never went quiet");
}

/// An ICMP echo (request or reply) in an Ethernet frame: (type, src, dst).
fn icmp_of(frame: &[u8]) -> Option<(u8, [u8; 4], [u8; 4])> {
    net::ip_payload(frame).and_then(net::icmp).map(|(t, _, _, s, d)| (t, s, d))
}

/// An echo reply IPv4 packet (type 0) made from a request by swapping the
/// addresses and fixing the checksums (etherparse writes only requests).
fn echo_reply(request: &[u8]) -> Vec<u8> {
    let mut p = request.to_vec();
    let (src, dst): ([u8; 4], [u8; 4]) = (p[12..16].try_into().unwrap(), p[16..20].try_into().unwrap());
    p[12..16].copy_from_slice(&dst);
    p[16..20].copy_from_slice(&src);
    p[20] = 0;
    p[22..24].fill(0);
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p[10..12].fill(0);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `frame` into `from`'s lan0 up to 5 times, 1 s apart (the first
/// one starts the handshake), until `to` delivers an ICMP message of type
/// `icmp_type` on its lan0 — answering `to`'s ARP for `host` as `host_mac`
/// on the way. The delivered frame.
#[allow(clippy::too_many_arguments)]
fn across(
    now: &mut Instant,
    frame: &[u8],
    icmp_type: u8,
    host: [u8; 4],
    host_mac: [u8; 6],
    onprem: &mut HostBox,
    cloud: &mut HostBox,
    to_cloud: bool,
) -> Option<Vec<u8>> {
    let (mut onprem_lan, mut cloud_lan) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let near = if to_cloud { onprem.lan() } else { cloud.lan() };
        near.inject(frame);
        for _ in 0..5 {
            pump(*now, onprem, cloud, &mut onprem_lan, &mut cloud_lan);
            let (far, far_lan) = if to_cloud { (&mut *cloud, &mut cloud_lan) } else { (&mut *onprem, &mut onprem_lan) };
            for f in std::mem::take(far_lan) {
                if let Some(r) = net::answer_arp(&f, host, host_mac) {
                    far.lan().inject(&r);
                } else if icmp_of(&f).is_some_and(|(t, _, _)| t == icmp_type) {
                    return Some(f);
                }
            }
            onprem_lan.clear();
            cloud_lan.clear();
            *now = now.plus_millis(10);
        }
        *now = now.plus_millis(1000);
    }
    None
}

/// The whole exchange over sockets at `onprem_at` and `cloud_at` (each
/// the other's configured endpoint): handshake, a ping from the on-prem
/// host to the cloud host and its reply back. The two boxes, for more
/// checks.
fn ping_across(onprem_at: &str, cloud_at: &str) -> (HostBox, HostBox, Instant) {
    let ((onprem_key, onprem_pub), (cloud_key, cloud_pub)) = (key_pair(), key_pair());
    let onprem_cfg = seed_000("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", &cloud_pub, cloud_at, "\"10.20.0.50/32\"");
    let cloud_cfg = seed_000("cloud", "10.20.0.3/24", "192.0.2.2/24", "onprem", &onprem_pub, onprem_at, "\"10.20.0.10/32\"");
    let mut onprem = HostBox::new(&onprem_cfg, ONPREM_MACS, onprem_key, onprem_at.parse().unwrap());
    let mut cloud = HostBox::new(&cloud_cfg, CLOUD_MACS, cloud_key, cloud_at.parse().unwrap());
    let mut now = Instant::from_millis(1000);
    // The proxy-ARP claims probe, then announce themselves.
    for _ in 0..4 {
        pump(now, &mut onprem, &mut cloud, &mut Vec::new(), &mut Vec::new());
        now = now.plus_millis(200);
    }
    assert!(onprem.datagrams.is_empty() && cloud.datagrams.is_empty(), "no traffic, no tunnel datagrams yet");

    // The on-prem host pings the cloud host (its frame to the box's MAC:
    // the box captures 10.20.0.50 by proxy-ARP).
    let request = net::icmp_echo_packet(HOST_ONPREM, HOST_CLOUD, 1, 56, false);
    let frame = net::ethernet(HOST_ONPREM_MAC, ONPREM_MACS[0], &request);
    let got = across(&mut now, &frame, 8, HOST_CLOUD, HOST_CLOUD_MAC, &mut onprem, &mut cloud, true)
        .expect("the echo request reached the cloud host");
    assert_eq!((&got[..6], &got[6..12]), (&HOST_CLOUD_MAC[..], &CLOUD_MACS[0][..]));
    assert_eq!(icmp_of(&got), Some((8, HOST_ONPREM, HOST_CLOUD)));
    assert!(net::checksums_valid(&got[14..]));

    // The handshake crossed both ways: an initiation (type 1, 148 bytes)
    // from the on-prem box, a response (type 2, 92 bytes) from the cloud box.
    assert!(onprem.datagrams.iter().any(|(_, p)| p.len() == 148 && p[0] == 1), "no handshake initiation");
    assert!(cloud.datagrams.iter().any(|(_, p)| p.len() == 92 && p[0] == 2), "no handshake response");

    // The cloud host answers; the cloud box captures 10.20.0.10.
    let reply = echo_reply(&got[14..]);
    assert!(net::checksums_valid(&reply));
    let frame = net::ethernet(HOST_CLOUD_MAC, CLOUD_MACS[0], &reply);
    let back = across(&mut now, &frame, 0, HOST_ONPREM, HOST_ONPREM_MAC, &mut onprem, &mut cloud, false)
        .expect("the echo reply reached the on-prem host");
    assert_eq!((&back[..6], &back[6..12]), (&HOST_ONPREM_MAC[..], &ONPREM_MACS[0][..]));
    assert_eq!(icmp_of(&back), Some((0, HOST_CLOUD, HOST_ONPREM)));
    assert!(net::checksums_valid(&back[14..]));

    for (name, b) in [("onprem", &mut onprem), ("cloud", &mut cloud)] {
        // No Ethernet, no ARP, not even bare IPv4 on the WAN: only datagrams.
        assert!(b.wan_frames.is_empty(), "{name}: the WAN NIC sent frames: {:02x?}", b.wan_frames);
        // Data messages (type 4) went both ways.
        assert!(b.datagrams.iter().any(|(_, p)| p[0] == 4), "{name}: no data message sent");
        let st = b.wg_peer(now);
        assert!(st.has_session && st.last_handshake.is_some(), "{name}: no WireGuard session");
        assert!(st.tx_bytes > 0 && st.rx_bytes > 0, "{name}: no encrypted traffic ({st:?})");
        // The node counts what left its WAN as sent, and nothing lost.
        let dp = b.node.forwarding().expect("configured").dataplane;
        let wan = dp.config().wan().unwrap().index();
        assert_eq!(dp.counters().tx_frames[wan], b.datagrams.len() as u64, "{name}");
        assert_eq!(dp.counters().tx_full[wan], 0, "{name}");
    }
    let c = onprem.node.wireguard().unwrap().counters().clone();
    assert!(
        c.iter().all(|(name, n)| n == 0 || name == "no_session"),
        "unexpected WireGuard errors: {:?}",
        c.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>()
    );
    (onprem, cloud, now)
}

#[test]
fn a_ping_crosses_two_host_boxes_over_their_wan_sockets() {
    let (mut onprem, mut cloud, now) = ping_across("192.0.2.1:51820", "192.0.2.2:51820");
    // Status shows where each peer is reached.
    let st = onprem.status(now);
    assert_eq!(st.peers[0].endpoint_configured.as_str(), "192.0.2.2:51820");
    assert_eq!(st.peers[0].endpoint, Some("192.0.2.2:51820".parse().unwrap()));
    assert!(st.peers[0].has_session);
    let st = cloud.status(now);
    assert_eq!(st.peers[0].endpoint, Some("192.0.2.1:51820".parse().unwrap()));
}

#[test]
fn a_ping_crosses_over_ipv6_endpoints() {
    let (mut onprem, mut cloud, now) = ping_across("[2001:db8::1]:51820", "[2001:db8::2]:51820");
    for (b, other) in [(&mut onprem, "[2001:db8::2]:51820"), (&mut cloud, "[2001:db8::1]:51820")] {
        // The WireGuard device holds the real IPv6 address…
        assert_eq!(b.wg_peer(now).endpoint, Some(other.parse().unwrap()));
        // …and status shows it as configured.
        let st = b.status(now);
        assert_eq!(st.peers[0].endpoint_configured.as_str(), other);
        assert!(st.peers[0].has_session);
        // …and so does status: where the peer is reached now.
        assert_eq!(st.peers[0].endpoint, Some(other.parse().unwrap()));
    }
    assert!(onprem.datagrams.iter().all(|(to, _)| to.is_ipv6()));
    assert!(cloud.datagrams.iter().all(|(to, _)| to.is_ipv6()));
}

/// A peer that roams: the cloud box's datagrams start arriving from a new
/// socket address; the on-prem box answers there (the WireGuard endpoint
/// follows the authenticated sender, IPv6 included).
#[test]
fn the_peer_endpoint_follows_a_roaming_sender() {
    let (mut onprem, mut cloud, mut now) = ping_across("192.0.2.1:51820", "192.0.2.2:51820");
    let roamed: SocketAddr = "[2001:db8::99]:40000".parse().unwrap();
    cloud.socket = roamed;
    let request = net::icmp_echo_packet(HOST_CLOUD, HOST_ONPREM, 2, 56, false);
    cloud.lan().inject(&net::ethernet(HOST_CLOUD_MAC, CLOUD_MACS[0], &request));
    let mut onprem_lan = Vec::new();
    // Carry the cloud box's datagrams by hand, from the new address.
    cloud.turn(now);
    let out = cloud.nics[1].take_datagrams();
    assert!(!out.is_empty(), "the cloud box sent the echo request");
    for (_, p) in &out {
        onprem.nics[1].inject_from(roamed, p);
    }
    now = now.plus_millis(10);
    onprem.turn(now);
    let back = onprem.nics[1].take_datagrams();
    onprem_lan.extend(onprem.lan().take_sent());
    assert!(onprem_lan.iter().any(|f| icmp_of(f) == Some((8, HOST_CLOUD, HOST_ONPREM))), "delivered on lan0");
    assert_eq!(onprem.wg_peer(now).endpoint, Some(roamed), "the endpoint roamed");
    // Anything the on-prem box sends to the peer from now on goes there.
    let reply = echo_reply(&request);
    onprem.lan().inject(&net::ethernet(HOST_ONPREM_MAC, ONPREM_MACS[0], &reply));
    onprem.turn(now);
    let back: Vec<_> = back.into_iter().chain(onprem.nics[1].take_datagrams()).collect();
    assert!(!back.is_empty());
    assert!(back.iter().all(|(to, _)| *to == roamed), "{back:?}");
}

#[test]
fn the_image_refuses_an_ipv6_endpoint_and_an_ethernet_wan_cannot_carry_one() {
    let ((key, _), (_, peer_pub)) = (key_pair(), key_pair());
    let toml = seed_000("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", &peer_pub, "[2001:db8::2]:51820", "\"10.20.0.50/32\"");
    let cfg = || Box::new(config_schema::human::from_toml(&toml).expect("config parses"));
    let slot = config_schema::Name::new("wg0").unwrap();
    let node = |infos: [NicInfo; 2], platform: Option<config_schema::Platform>| {
        let mut n = Box::new(Node::new(&infos, Some(OsRng), "0.1.0", "test"));
        if let Some(p) = platform {
            n.set_platform(p);
        }
        assert!(matches!(n.handle(Instant::ZERO, Op::KeyImport(slot.clone(), key), &[]), Reply::Keys(_)));
        n
    };
    let ethernet = [NicInfo::ethernet(ONPREM_MACS[0]), NicInfo::ethernet(ONPREM_MACS[1])];
    let datagram = [NicInfo::ethernet(ONPREM_MACS[0]), NicInfo::datagram(ONPREM_MACS[1])];

    // The image (the default platform): validation refuses it, by path.
    let mut image = node(ethernet, None);
    match image.handle(Instant::ZERO, Op::Apply(cfg()), &[]) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::Invalid, "{f}");
            assert!(f.problems.iter().any(|p| p.path.as_str() == "peers[0].endpoint" && p.error), "{f:?}");
        }
        other => panic!("the image applied an IPv6 endpoint: {other:?}"),
    }
    assert!(image.config().is_none(), "nothing runs");

    // routerd-host validation accepts it, but only a datagram WAN can
    // carry it: bound to an Ethernet WAN NIC, the build refuses, by path.
    let mut host_eth = node(ethernet, Some(config_schema::Platform::Host));
    match host_eth.handle(Instant::ZERO, Op::Apply(cfg()), &[]) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::Refused, "{f}");
            assert!(f.message.starts_with("peers[0].endpoint"), "{}", f.message);
        }
        other => panic!("an Ethernet WAN took an IPv6 endpoint: {other:?}"),
    }
    assert!(host_eth.config().is_none());

    // The same file on a datagram WAN runs.
    let mut host = node(datagram, Some(config_schema::Platform::Host));
    assert!(matches!(host.handle(Instant::ZERO, Op::Apply(cfg()), &[]), Reply::Applied(_)));
    let st = host.wireguard().expect("a tunnel runs").peer_status(wg::PeerId(0), wg::Instant::from_millis(0)).unwrap();
    assert_eq!(st.endpoint, Some("[2001:db8::2]:51820".parse().unwrap()));
}

#[test]
fn a_datagram_nic_binds_only_the_wan() {
    let ((key, _), (_, peer_pub)) = (key_pair(), key_pair());
    let toml = seed_000("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", &peer_pub, "192.0.2.2:51820", "\"10.20.0.50/32\"");
    let cfg = config_schema::human::from_toml(&toml).expect("config parses");
    // lan0's NIC is the socket.
    let infos = [NicInfo::datagram(ONPREM_MACS[0]), NicInfo::ethernet(ONPREM_MACS[1])];
    let mut n = Box::new(Node::new(&infos, Some(OsRng), "0.1.0", "test"));
    n.set_platform(config_schema::Platform::Host);
    let slot = config_schema::Name::new("wg0").unwrap();
    assert!(matches!(n.handle(Instant::ZERO, Op::KeyImport(slot, key), &[]), Reply::Keys(_)));
    match n.handle(Instant::ZERO, Op::Apply(Box::new(cfg.clone())), &[]) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::Refused);
            assert!(f.message.starts_with("ports[0]"), "{}", f.message);
        }
        other => panic!("a LAN bound a datagram NIC: {other:?}"),
    }
    assert!(routerd_control::build(&cfg, &infos).is_err());
    let ok = [NicInfo::ethernet(ONPREM_MACS[0]), NicInfo::datagram(ONPREM_MACS[1])];
    let rt = routerd_control::build(&cfg, &ok).expect("the WAN may be a socket");
    assert_eq!(rt.dataplane.ports[1].medium, routerd_dataplane::Medium::Datagram);
    assert_eq!(rt.dataplane.ports[0].medium, routerd_dataplane::Medium::Ethernet);
}

//! The WAN's DHCP client inside the real node and forwarding turn: a box
//! whose `wan0` is `address = "dhcp"` gets its lease from a DHCP server
//! played by the test (messages built and parsed with smoltcp's wire types
//! and etherparse), applies it (the WAN address, the gateway, WireGuard's
//! source), renews it by unicast at T1 (resolving the server by ARP), and
//! when the server stops answering keeps the address until the lease ends,
//! then says so and stops using it; a peer given by DNS name is resolved
//! with the lease's DNS server and followed when its address moves. Time is
//! simulated.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use rand_core::OsRng;
use routerd_control::{Event, Forwarder, NicInfo, Node};
use routerd_dataplane::{counters::DropReason, Instant};
use routerd_netdev::testing::Loopback;
use routerd_provision::message::{Op, Reply, Status};
use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, Ipv4Address};
use std::net::Ipv4Addr;

const LAN_MAC: [u8; 6] = [0x02, 0xa0, 0, 0, 0, 0];
const WAN_MAC: [u8; 6] = [0x02, 0xa0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 1];
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const LEASED: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 77);
const DNS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 53);
const LEASE_SECS: u32 = 600;

const CONFIG: &str = r#"
[device]
name = "wro-edge"
side = "wro"

[[ports]]
name = "lan0"
role = "lan"
address = "192.168.10.4/24"

[[ports]]
name = "wan0"
role = "wan"
address = "dhcp"

[[wireguard]]
name = "wg0"
private_key = "device:wg0"

[[peers]]
name = "roz"
tunnel = "wg0"
public_key = "DsXmsGlubU4CdxEM95hXI4oruM+wpipdxh9XNFNl8wQ="
endpoint = "198.51.100.35:51820"
persistent_keepalive = 25
allowed_ips = ["10.1.0.0/16"]
"#;

struct Box_ {
    node: Box<Node<OsRng>>,
    nics: [Loopback; 2],
    fwd: Box<Forwarder>,
    log: Vec<String>,
}

impl Box_ {
    fn new() -> Box_ {
        Box_::with(CONFIG)
    }

    fn with(toml: &str) -> Box_ {
        let cfg = config_schema::human::from_toml(toml).unwrap();
        assert!(config_schema::validate_for(&cfg, config_schema::Platform::Image).is_valid());
        let mut node = Box::new(Node::new(&[NicInfo::ethernet(LAN_MAC), NicInfo::ethernet(WAN_MAC)], Some(OsRng), "0.1.0", "test"));
        match node.handle(Instant::ZERO, Op::Apply(Box::new(cfg)), &[]) {
            Reply::Applied(_) => {}
            other => panic!("apply refused: {other:?}"),
        }
        Box_ { node, nics: [Loopback::new(LAN_MAC, 64), Loopback::new(WAN_MAC, 64)], fwd: Box::new(Forwarder::new()), log: Vec::new() }
    }

    /// Turns at `now` until quiet; what the WAN sent.
    fn run(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        for _ in 0..20 {
            let log = &mut self.log;
            self.fwd.turn(&mut self.node, now, &mut self.nics[..], &mut |e: Event| log.push(e.to_string()));
            let out = self.nics[1].take_sent();
            if out.is_empty() && self.nics[1].pending() == 0 {
                break;
            }
            sent.extend(out);
        }
        sent
    }

    fn status(&mut self, now: Instant) -> Box<Status> {
        match self.node.handle(now, Op::Status { mark: false }, &[Default::default(); 2]) {
            Reply::Status(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn wan_address(&mut self, now: Instant) -> Option<String> {
        self.status(now).ports.iter().find(|p| p.name.as_str() == "wan0").and_then(|p| p.address).map(|a| a.to_string())
    }
}

/// A DHCP message from the client in `frame`: (type, xid, IP destination).
fn client_message(frame: &[u8]) -> Option<(DhcpMessageType, u32, Ipv4Addr, Option<Ipv4Addr>)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else { return None };
    let Some(TransportSlice::Udp(u)) = &p.transport else { return None };
    if (u.source_port(), u.destination_port()) != (68, 67) {
        return None;
    }
    let packet = DhcpPacket::new_checked(u.payload()).ok()?;
    let repr = DhcpRepr::parse(&packet).ok()?;
    assert_eq!(repr.client_hardware_address, EthernetAddress(WAN_MAC));
    Some((repr.message_type, repr.transaction_id, ip.header().destination_addr(), repr.requested_ip))
}

/// The server's answer of `kind` to transaction `xid`.
fn server_message(kind: DhcpMessageType, xid: u32, broadcast: bool) -> Vec<u8> {
    let dns: [Ipv4Address; 1] = [DNS];
    let repr = DhcpRepr {
        message_type: kind,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: EthernetAddress(WAN_MAC),
        client_ip: Ipv4Address::UNSPECIFIED,
        your_ip: if kind == DhcpMessageType::Nak { Ipv4Address::UNSPECIFIED } else { LEASED },
        server_ip: SERVER,
        router: Some(SERVER),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Address::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(SERVER),
        parameter_request_list: None,
        dns_servers: Some(dns.iter().copied().collect()),
        max_size: None,
        lease_duration: Some(LEASE_SECS),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut payload = vec![0u8; repr.buffer_len()];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut payload[..])).unwrap();
    let (dst_mac, dst_ip) = if broadcast { ([0xff; 6], Ipv4Addr::BROADCAST) } else { (WAN_MAC, LEASED) };
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(SERVER_MAC, dst_mac)
        .ipv4(SERVER.octets(), dst_ip.octets(), 64)
        .udp(67, 68)
        .write(&mut out, &payload)
        .unwrap();
    out
}

fn arp_reply(to_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&WAN_MAC);
    f.extend_from_slice(&SERVER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&SERVER_MAC);
    f.extend_from_slice(&SERVER.octets());
    f.extend_from_slice(&WAN_MAC);
    f.extend_from_slice(&to_ip.octets());
    f
}

/// A LAN host's packet for the other site (10.1.0.0/16 behind the peer).
fn lan_packet() -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([0x02, 0x11, 0, 0, 0, 20], LAN_MAC)
        .ipv4([192, 168, 10, 20], [10, 1, 0, 5], 64)
        .udp(5000, 6000)
        .write(&mut out, b"hello roz")
        .unwrap();
    out
}

/// (ARP operation, sender IP, target IP) of an ARP frame.
fn arp_of(frame: &[u8]) -> Option<(u16, Ipv4Addr, Ipv4Addr)> {
    if frame.get(12..14)? != [0x08, 0x06] {
        return None;
    }
    let op = u16::from_be_bytes([frame[20], frame[21]]);
    let spa = Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]);
    let tpa = Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]);
    Some((op, spa, tpa))
}

fn drops(b: &mut Box_, at: u64, reason: DropReason) -> u64 {
    b.status(t(at)).drops.iter().find(|c| c.name.as_str() == reason.name()).map_or(0, |c| c.value)
}

fn t(secs: u64) -> Instant {
    Instant::from_millis(secs * 1000)
}

/// Runs the client until it sends a message of `kind`; its xid.
fn expect(b: &mut Box_, from: u64, to: u64, kind: DhcpMessageType) -> (u32, Ipv4Addr, u64) {
    for s in from..=to {
        for f in b.run(t(s)) {
            if let Some((k, xid, dst, _)) = client_message(&f) {
                if k == kind {
                    return (xid, dst, s);
                }
            }
        }
    }
    panic!("no {kind:?} between {from} s and {to} s");
}

#[test]
fn the_wan_takes_its_lease_renews_it_and_gives_it_up_when_it_ends() {
    let mut b = Box_::new();
    // No lease yet: no WAN address, and status says the client is looking.
    assert_eq!(b.wan_address(t(0)), None);
    let (xid, dst, _) = expect(&mut b, 0, 1, DhcpMessageType::Discover);
    assert_eq!(dst, Ipv4Addr::BROADCAST);
    // Traffic for the tunnel finds no WAN address: counted, not sent.
    b.nics[0].inject(&lan_packet());
    b.run(t(1));
    assert!(drops(&mut b, 1, DropReason::WanNoAddress) > 0);
    let d = b.status(t(1)).dhcp.clone().expect("dhcp status");
    assert_eq!((d.port.as_str(), d.address, d.sent), ("wan0", None, 1));
    let mut line = String::new();
    d.write_line(&mut line).unwrap();
    assert!(line.contains("no lease") && line.contains("no DHCP server answers"), "{line}");

    // Offer → request → ack: the lease is applied like a configuration.
    b.nics[1].inject(&server_message(DhcpMessageType::Offer, xid, true));
    let (xid, _, _) = expect(&mut b, 1, 2, DhcpMessageType::Request);
    b.nics[1].inject(&server_message(DhcpMessageType::Ack, xid, true));
    b.run(t(2));
    assert_eq!(b.wan_address(t(2)).as_deref(), Some("192.168.1.77/24"));
    let st = b.status(t(2));
    let d = st.dhcp.clone().unwrap();
    assert_eq!((d.gateway, d.server, d.lease_secs, d.dns.as_slice()), (Some(SERVER), Some(SERVER), Some(LEASE_SECS), &[DNS][..]));
    assert!(b.log.iter().any(|l| l.contains("dhcp: wan0 leased 192.168.1.77/24 from 192.168.1.1, gateway 192.168.1.1")), "{:?}", b.log);
    assert_eq!(b.node.generation(), 1, "a lease is not a configuration change");

    // WireGuard now speaks from the leased address, through the leased
    // gateway: traffic for the other site starts a handshake.
    // (The initiation at 1 s found no address; the next is due 5 s later.)
    b.nics[0].inject(&lan_packet());
    let (mut resolved, mut wg) = (false, None);
    for s in 3..15 {
        for f in b.run(t(s)) {
            if arp_of(&f) == Some((1, LEASED, SERVER)) {
                resolved = true;
                b.nics[1].inject(&arp_reply(LEASED));
            }
            let Ok(p) = SlicedPacket::from_ethernet(&f) else { continue };
            if let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) = (&p.net, &p.transport) {
                if u.destination_port() == 51820 {
                    wg = Some((ip.header().source_addr(), ip.header().destination_addr(), f[0..6].to_vec()));
                }
            }
        }
        if wg.is_some() {
            break;
        }
    }
    assert!(resolved, "the box resolves its gateway from its leased address");
    assert_eq!(wg, Some((LEASED, Ipv4Addr::new(198, 51, 100, 35), SERVER_MAC.to_vec())), "the handshake leaves from the lease");

    // T1 (half the lease): the client renews by unicast to the server,
    // resolving it by ARP first (the reply reaches the client too).
    let renew_at = u64::from(LEASE_SECS / 2);
    let mut renewed = None;
    'outer: for s in renew_at - 1..=renew_at + 5 {
        for f in b.run(t(s)) {
            if arp_of(&f).is_some_and(|(op, _, tpa)| op == 1 && tpa == SERVER) {
                b.nics[1].inject(&arp_reply(LEASED));
            }
            if let Some((DhcpMessageType::Request, xid, dst, _)) = client_message(&f) {
                renewed = Some((xid, dst, s));
                break 'outer;
            }
        }
        for f in b.run(t(s)) {
            if let Some((DhcpMessageType::Request, xid, dst, _)) = client_message(&f) {
                renewed = Some((xid, dst, s));
                break 'outer;
            }
        }
    }
    let (xid, dst, at) = renewed.expect("a renewal at T1");
    assert_eq!(dst, SERVER, "renewals go to the server, unicast");
    b.nics[1].inject(&server_message(DhcpMessageType::Ack, xid, false));
    b.run(t(at));
    let d = b.status(t(at)).dhcp.clone().unwrap();
    assert_eq!(d.leased_ms_ago, Some(0), "the renewal restarted the lease clock");
    assert_eq!(
        b.log.iter().filter(|l| l.contains(" leased ")).count(),
        1,
        "a renewal that changes nothing is not applied again: {:?}",
        b.log
    );
    assert_eq!(b.wan_address(t(at)).as_deref(), Some("192.168.1.77/24"));

    // The server goes away: the address stays until the lease ends...
    let end = at + u64::from(LEASE_SECS);
    let mut s = at + 1;
    while s < end {
        b.run(t(s));
        s += 7;
    }
    assert_eq!(b.wan_address(t(end - 1)).as_deref(), Some("192.168.1.77/24"), "kept while the lease runs");
    // ...then it is given up, logged, and nothing leaves from it.
    b.run(t(end + 1));
    assert_eq!(b.wan_address(t(end + 1)), None);
    let d = b.status(t(end + 1)).dhcp.clone().unwrap();
    assert_eq!((d.address, d.lost), (None, 1));
    assert!(b.log.iter().any(|l| l.contains("dhcp: wan0 lease ended without renewal")), "{:?}", b.log);
    let before = drops(&mut b, end + 1, DropReason::WanNoAddress);
    // Keepalives are due every 25 s and traffic still comes: neither
    // finds a WAN address.
    b.nics[0].inject(&lan_packet());
    for s in end + 2..end + 60 {
        for f in b.run(t(s)) {
            if let Some((_, spa, _)) = arp_of(&f) {
                assert_ne!(spa, LEASED, "nothing is sent from the expired address");
            }
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            if let Some(NetSlice::Ipv4(ip)) = &p.net {
                assert_ne!(ip.header().source_addr(), LEASED, "nothing is sent from the expired address");
            }
        }
    }
    let after = drops(&mut b, end + 60, DropReason::WanNoAddress);
    assert!(after > before, "WireGuard's datagrams are counted as wan_no_address");
}

#[test]
fn hostile_dhcp_frames_are_dropped_without_harm() {
    let mut b = Box_::new();
    let (xid, _, _) = expect(&mut b, 0, 1, DhcpMessageType::Discover);
    let good = server_message(DhcpMessageType::Offer, xid, true);
    // Every truncation and a burst of bit flips of a valid offer.
    for n in 0..good.len() {
        b.nics[1].inject(&good[..n]);
        b.run(t(1));
    }
    for i in 14..good.len() {
        let mut f = good.clone();
        f[i] ^= 0x5a;
        b.nics[1].inject(&f);
        b.run(t(1));
    }
    // A NAK and an ACK for another transaction change nothing.
    b.nics[1].inject(&server_message(DhcpMessageType::Nak, xid, true));
    b.nics[1].inject(&server_message(DhcpMessageType::Ack, xid ^ 1, true));
    b.run(t(1));
    assert_eq!(b.wan_address(t(1)), None);
    // The client still completes with the real server afterwards.
    let (xid, _, s) = expect(&mut b, 2, 30, DhcpMessageType::Discover);
    b.nics[1].inject(&server_message(DhcpMessageType::Offer, xid, true));
    let (xid, _, s) = expect(&mut b, s, s + 1, DhcpMessageType::Request);
    b.nics[1].inject(&server_message(DhcpMessageType::Ack, xid, true));
    b.run(t(s));
    assert_eq!(b.wan_address(t(s)).as_deref(), Some("192.168.1.77/24"));
}

/// (query id, source port, question name) of a DNS query in `frame` to `server`.
fn dns_query(frame: &[u8], server: Ipv4Addr) -> Option<(u16, u16, String, Ipv4Addr)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) = (&p.net, &p.transport) else { return None };
    if ip.header().destination_addr() != server || u.destination_port() != 53 {
        return None;
    }
    let q = u.payload();
    let id = u16::from_be_bytes([q[0], q[1]]);
    let mut name = String::new();
    let mut at = 12;
    while q[at] != 0 {
        let len = q[at] as usize;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(std::str::from_utf8(&q[at + 1..at + 1 + len]).unwrap());
        at += 1 + len;
    }
    Some((id, u.source_port(), name, ip.header().source_addr()))
}

/// The DNS server's answer: `name` A `address`, TTL `ttl`.
fn dns_answer(id: u16, port: u16, name: &str, address: Ipv4Addr, ttl: u32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    m.extend_from_slice(&ttl.to_be_bytes());
    m.extend_from_slice(&[0, 4]);
    m.extend_from_slice(&address.octets());
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(SERVER_MAC, WAN_MAC)
        .ipv4(DNS.octets(), LEASED.octets(), 64)
        .udp(53, port)
        .write(&mut out, &m)
        .unwrap();
    out
}

/// Turns at `s`, answering the box's ARP requests; what the WAN sent.
fn run_answering_arp(b: &mut Box_, s: u64) -> Vec<Vec<u8>> {
    let mut sent = b.run(t(s));
    let asked: Vec<Ipv4Addr> = sent.iter().filter_map(|f| arp_of(f)).filter(|a| a.0 == 1).map(|a| a.2).collect();
    for ip in asked {
        b.nics[1].inject(&arp_reply_from(ip));
        sent.extend(b.run(t(s)));
    }
    sent
}

fn arp_reply_from(ip: Ipv4Addr) -> Vec<u8> {
    let mut f = arp_reply(LEASED);
    f[28..32].copy_from_slice(&ip.octets());
    f
}

#[test]
fn a_peer_by_name_is_resolved_with_the_leases_server_and_followed_when_it_moves() {
    let mut b = Box_::with(&CONFIG.replace("198.51.100.35:51820", "roz.example.net:51820"));
    let (xid, _, _) = expect(&mut b, 0, 1, DhcpMessageType::Discover);
    b.nics[1].inject(&server_message(DhcpMessageType::Offer, xid, true));
    let (xid, _, _) = expect(&mut b, 1, 2, DhcpMessageType::Request);
    b.nics[1].inject(&server_message(DhcpMessageType::Ack, xid, true));
    b.run(t(2));
    assert_eq!(b.wan_address(t(2)).as_deref(), Some("192.168.1.77/24"));

    // The box asks the lease's DNS server (ARP-resolving it first), from
    // its leased address and a random high port; the server answers.
    let first = Ipv4Addr::new(198, 51, 100, 35);
    let moved = Ipv4Addr::new(198, 51, 100, 99);
    let mut s = 2;
    let serve = |b: &mut Box_, s: &mut u64, answer: Ipv4Addr| -> (u16, String) {
        for _ in 0..10 {
            for f in b.run(t(*s)) {
                if let Some((_, _, tpa)) = arp_of(&f).filter(|a| a.0 == 1) {
                    b.nics[1].inject(&arp_reply_from(tpa));
                }
                if let Some((id, port, name, src)) = dns_query(&f, DNS) {
                    assert_eq!(src, LEASED);
                    assert!(port >= 49152, "a random high source port");
                    b.nics[1].inject(&dns_answer(id, port, &name, answer, 60));
                    b.run(t(*s));
                    return (port, name);
                }
            }
            *s += 1;
        }
        panic!("no DNS query");
    };
    let (_, name) = serve(&mut b, &mut s, first);
    assert_eq!(name, "roz.example.net");
    let st = b.status(t(s));
    let r = st.resolver.clone().expect("resolver status");
    assert_eq!(r.servers.as_slice(), &[DNS]);
    assert_eq!((r.names[0].address, r.names[0].ttl_secs), (Some(first), Some(60)));
    assert_eq!(st.peers[0].endpoint, Some((first, 51820).into()), "the peer's endpoint is the resolved address");
    assert!(b.log.iter().any(|l| l == "dns: roz.example.net resolves to 198.51.100.35 (ttl 60 s); endpoint of peer roz"), "{:?}", b.log);
    // A spoofed answer on another port or from another source is refused
    // by the dataplane or the resolver; nothing moves.
    b.nics[1].inject(&dns_answer(1, 50000, "roz.example.net", moved, 60));
    b.run(t(s));
    assert_eq!(b.status(t(s)).peers[0].endpoint, Some((first, 51820).into()));

    // The peer is kept alive, so it is dialled at once at that address.
    let dialled = (s..s + 3).flat_map(|x| run_answering_arp(&mut b, x)).any(|f| {
        let Ok(p) = SlicedPacket::from_ethernet(&f) else { return false };
        matches!((&p.net, &p.transport), (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u)))
            if ip.header().destination_addr() == first && u.destination_port() == 51820)
    });
    assert!(dialled, "a handshake initiation to the resolved address");

    // The record changes; the TTL (60 s) runs out and the box asks again.
    s += 61;
    let (_, _) = serve(&mut b, &mut s, moved);
    let st = b.status(t(s));
    assert_eq!(st.peers[0].endpoint, Some((moved, 51820).into()), "the endpoint follows the name");
    assert!(b.log.iter().any(|l| l.starts_with("dns: roz.example.net moved from 198.51.100.35 to 198.51.100.99")), "{:?}", b.log);
    let dialled = (s..s + 6).flat_map(|x| run_answering_arp(&mut b, x)).any(|f| {
        let Ok(p) = SlicedPacket::from_ethernet(&f) else { return false };
        matches!((&p.net, &p.transport), (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u)))
            if ip.header().destination_addr() == moved && u.destination_port() == 51820)
    });
    assert!(dialled, "dialled at the new address without an apply");
    assert_eq!(b.node.generation(), 1, "no apply happened");
}

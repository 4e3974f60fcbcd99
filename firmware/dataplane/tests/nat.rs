//! SNAT exit, connection tracking and the zone firewall, end to end through
//! the pipeline: frames in on a port, frames out, every checksum checked by
//! etherparse (an independent parser).

mod common;

use std::net::Ipv4Addr;

use common::*;
use routerd_dataplane::conntrack::CONNTRACK_ENTRIES;
use routerd_dataplane::*;

/// A VM on lan0 (no claim on it).
const VM: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);
const VM_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x07];
const VM2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 8);
const VM2_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x08];
/// An internet host, and a router on the way to it.
const NET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
/// A VM of the other site (behind the tunnel).
const WRO_VM: Ipv4Addr = Ipv4Addr::new(10, 2, 1, 7);

fn nat_config() -> Config {
    let mut c = config();
    c.nat.push(NatRule { source: prefix([10, 0, 0, 0], 24), out: WAN }).unwrap();
    c
}

fn harness(c: Config) -> Harness {
    let mut h = Harness::with(c);
    h.learn_gateway();
    h.learn(LAN0, VM, VM_MAC);
    h.learn(LAN0, VM2, VM2_MAC);
    h
}

fn from_vm(mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    eth(LAN0_MAC, mac, ip)
}

fn from_wan(ip: &[u8]) -> Vec<u8> {
    eth(WAN_MAC, GW_MAC, ip)
}

/// (src, sport, dst, dport) of a frame, every checksum verified; ICMP echo:
/// (src, identifier, dst, sequence).
fn ends(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let h = checked(frame);
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &h.net else { panic!("not IPv4") };
    let (sp, dp) = match &h.transport {
        Some(etherparse::TransportHeader::Udp(u)) => (u.source_port, u.destination_port),
        Some(etherparse::TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
        Some(etherparse::TransportHeader::Icmpv4(i)) => match &i.icmp_type {
            etherparse::Icmpv4Type::EchoRequest(e) | etherparse::Icmpv4Type::EchoReply(e) => (e.id, e.seq),
            _ => (0, 0),
        },
        _ => (0, 0),
    };
    (Ipv4Addr::from(ip.source), sp, Ipv4Addr::from(ip.destination), dp)
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64).tcp(sport, dport, 1000, 64240);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            _ => b,
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

#[test]
fn udp_out_is_translated_port_kept_and_reply_comes_back() {
    let mut h = harness(nat_config());
    let out = h.rx(LAN0, &from_vm(VM_MAC, &udp(VM, NET, 64, 40000, 53, b"query"))).expect("forwarded");
    assert_eq!(out.0, WAN);
    assert_eq!(&out.1[..6], &GW_MAC);
    assert_eq!(ends(&out.1), (WAN_IP, 40000, NET, 53), "source is the WAN address, port preserved");
    assert_eq!(h.dp.counters().nat_flows, 1);
    assert_eq!(h.dp.counters().nat_ports_rewritten, 0);

    let back = h.rx(WAN, &from_wan(&udp(NET, WAN_IP, 60, 53, 40000, b"answer"))).expect("reply forwarded");
    assert_eq!(back.0, LAN0);
    assert_eq!(&back.1[..6], &VM_MAC);
    assert_eq!(ends(&back.1), (NET, 53, VM, 40000));
    let (_, f) = h.dp.conntrack().iter().next().unwrap();
    assert_eq!(f.state, State::Replied);
    assert_eq!(f.packets, [1, 1]);

    // Not a reply of any flow: the WAN stays silent.
    assert!(h.rx(WAN, &from_wan(&udp(NET, WAN_IP, 60, 53, 40001, b"x"))).is_none());
    assert_eq!(h.dropped(DropReason::WanNotWireguard), 1);
}

#[test]
fn a_real_collision_rewrites_the_port_and_both_replies_find_their_host() {
    let mut h = harness(nat_config());
    let a = h.rx(LAN0, &from_vm(VM_MAC, &udp(VM, NET, 64, 40000, 53, b"a"))).unwrap();
    let b = h.rx(LAN0, &from_vm(VM2_MAC, &udp(VM2, NET, 64, 40000, 53, b"b"))).unwrap();
    let (_, pa, _, _) = ends(&a.1);
    let (src_b, pb, _, _) = ends(&b.1);
    assert_eq!(pa, 40000);
    assert_eq!(src_b, WAN_IP);
    assert_ne!(pb, 40000);
    assert!(pb >= 1024);
    assert_eq!(h.dp.counters().nat_ports_rewritten, 1);
    // The same source port to another destination port is no collision.
    let c = h.rx(LAN0, &from_vm(VM2_MAC, &udp(VM2, NET, 64, 40000, 54, b"c"))).unwrap();
    assert_eq!(ends(&c.1).1, 40000);

    let ra = h.rx(WAN, &from_wan(&udp(NET, WAN_IP, 60, 53, 40000, b"ra"))).unwrap();
    assert_eq!(ends(&ra.1), (NET, 53, VM, 40000));
    let rb = h.rx(WAN, &from_wan(&udp(NET, WAN_IP, 60, 53, pb, b"rb"))).unwrap();
    assert_eq!(ends(&rb.1), (NET, 53, VM2, 40000));
    assert_eq!(&rb.1[..6], &VM2_MAC);
}

#[test]
fn the_wireguard_port_is_never_handed_out() {
    let mut h = harness(nat_config());
    let out = h.rx(LAN0, &from_vm(VM_MAC, &udp(VM, NET, 64, LISTEN, 53, b"q"))).unwrap();
    let (_, p, _, _) = ends(&out.1);
    assert_ne!(p, LISTEN, "replies to the listen port are WireGuard's");
}

#[test]
fn icmp_echo_is_tracked_by_identifier() {
    let mut h = harness(nat_config());
    let out = h.rx(LAN0, &from_vm(VM_MAC, &echo(VM, NET, 64))).unwrap();
    assert_eq!(ends(&out.1), (WAN_IP, 7, NET, 1), "identifier 7 kept");
    let mut reply = Vec::new();
    etherparse::PacketBuilder::ipv4(NET.octets(), WAN_IP.octets(), 60).icmpv4_echo_reply(7, 1).write(&mut reply, b"ping").unwrap();
    let back = h.rx(WAN, &from_wan(&reply)).expect("echo reply translated back");
    assert_eq!(ends(&back.1), (NET, 7, VM, 1));
    assert_eq!(h.dropped(DropReason::WanNotWireguard), 0);
}

/// The ICMP error a router beyond the WAN sends about `sent_ip` (the packet
/// as it left the box), quoting it.
fn time_exceeded(sent_ip: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(ROUTER.octets(), WAN_IP.octets(), 250)
        .icmpv4(etherparse::Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit))
        .write(&mut v, sent_ip)
        .unwrap();
    v
}

#[test]
fn ttl_exceeded_from_beyond_the_wan_reaches_the_vm_translated() {
    let mut h = harness(nat_config());
    // A traceroute probe: UDP with TTL 2 (the box forwards it with TTL 1).
    let out = h.rx(LAN0, &from_vm(VM_MAC, &udp(VM, NET, 2, 40000, 33434, b"probe"))).unwrap();
    let sent_ip = out.1[14..].to_vec();
    assert_eq!(sent_ip[8], 1);
    let err = h.rx(WAN, &from_wan(&time_exceeded(&sent_ip))).expect("related error forwarded");
    assert_eq!(err.0, LAN0);
    assert_eq!(&err.1[..6], &VM_MAC);
    let hd = checked(&err.1); // outer IPv4 and ICMP checksums
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &hd.net else { panic!() };
    assert_eq!((Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination)), (ROUTER, VM));
    let Some(etherparse::TransportHeader::Icmpv4(icmp)) = &hd.transport else { panic!() };
    assert!(matches!(icmp.icmp_type, etherparse::Icmpv4Type::TimeExceeded(_)));
    // The quoted packet is the VM's own again: address, port, checksums.
    let inner = checked_ip(hd.payload.slice());
    let Some(etherparse::NetHeaders::Ipv4(iip, _)) = &inner.net else { panic!() };
    assert_eq!(Ipv4Addr::from(iip.source), VM);
    let Some(etherparse::TransportHeader::Udp(u)) = &inner.transport else { panic!() };
    assert_eq!((u.source_port, u.destination_port), (40000, 33434));

    // Only the header and 8 bytes quoted (RFC 792): still translated.
    let short = sent_ip[..28].to_vec();
    let err = h.rx(WAN, &from_wan(&time_exceeded(&short))).expect("short quote translated");
    checked(&err.1);
    let q = &err.1[14 + 28..];
    assert_eq!(&q[12..16], &VM.octets());
    assert_eq!(u16::from_be_bytes([q[20], q[21]]), 40000);
    let qh = etherparse::Ipv4Header::from_slice(q).unwrap().0;
    assert_eq!(qh.header_checksum, qh.calc_header_checksum(), "quoted IP checksum");
    // An error about no known flow is not forwarded.
    let mut other = sent_ip.clone();
    other[20..22].copy_from_slice(&5555u16.to_be_bytes());
    assert!(h.rx(WAN, &from_wan(&time_exceeded(&other))).is_none());
}

#[test]
fn frag_needed_about_a_translated_tcp_flow_is_translated() {
    let mut h = harness(nat_config());
    let out = h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "S", &[]))).unwrap();
    let sent_ip = out.1[14..].to_vec();
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(ROUTER.octets(), WAN_IP.octets(), 250)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        }))
        .write(&mut v, &sent_ip)
        .unwrap();
    let err = h.rx(WAN, &from_wan(&v)).expect("forwarded to the VM");
    let hd = checked(&err.1);
    let inner = checked_ip(hd.payload.slice()); // the quoted TCP checksum too
    let Some(etherparse::TransportHeader::Tcp(t)) = &inner.transport else { panic!() };
    assert_eq!(t.source_port, 40000);
}

#[test]
fn tcp_needs_a_syn_and_its_states_advance() {
    let mut h = harness(nat_config());
    // Mid-stream with no flow: never leaks out untranslated.
    assert!(h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "A", b"data"))).is_none());
    assert_eq!(h.dropped(DropReason::ConntrackInvalid), 1);
    h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "S", &[]))).unwrap();
    h.rx(WAN, &from_wan(&tcp(NET, 443, WAN_IP, 40000, "SA", &[]))).unwrap();
    h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "A", &[]))).unwrap();
    let state = |h: &Harness| h.dp.conntrack().iter().next().unwrap().1.state;
    assert_eq!(state(&h), State::Established);
    h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "AF", &[]))).unwrap();
    assert_eq!(state(&h), State::FinWait);
    h.rx(WAN, &from_wan(&tcp(NET, 443, WAN_IP, 40000, "AF", &[]))).unwrap();
    h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "A", &[]))).unwrap();
    assert_eq!(state(&h), State::TimeWait);
}

#[test]
fn a_flood_of_new_flows_does_not_evict_an_established_one() {
    let mut h = harness(nat_config());
    h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "S", &[]))).unwrap();
    h.rx(WAN, &from_wan(&tcp(NET, 443, WAN_IP, 40000, "SA", &[]))).unwrap();
    h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "A", &[]))).unwrap();
    // Twice the table in new UDP flows (a scan from a compromised VM).
    for i in 0..2 * CONNTRACK_ENTRIES {
        let dst = Ipv4Addr::new(192, 0, 2, (i % 200) as u8 + 1);
        let _ = h.rx(LAN0, &from_vm(VM2_MAC, &udp(VM2, dst, 64, 10000 + (i / 200) as u16, 9, b"x")));
    }
    let ct = h.dp.conntrack();
    assert_eq!(ct.len(), CONNTRACK_ENTRIES);
    assert!(ct.counters.evicted >= CONNTRACK_ENTRIES as u64, "{:?}", ct.counters);
    // The established flow still goes both ways.
    let back = h.rx(WAN, &from_wan(&tcp(NET, 443, WAN_IP, 40000, "A", b"data"))).expect("still tracked");
    assert_eq!(ends(&back.1), (NET, 443, VM, 40000));
    assert!(h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "A", b"more"))).is_some());

    // A table full of answered flows refuses new ones, counted.
    let mut h = harness(nat_config());
    for i in 0..CONNTRACK_ENTRIES {
        let dst = Ipv4Addr::new(192, 0, 2, (i % 200) as u8 + 1);
        let sport = 10000 + (i / 200) as u16;
        h.rx(LAN0, &from_vm(VM2_MAC, &udp(VM2, dst, 64, sport, 9, b"x"))).unwrap();
        h.rx(WAN, &from_wan(&udp(dst, WAN_IP, 60, 9, sport, b"y"))).unwrap();
    }
    assert!(h.rx(LAN0, &from_vm(VM_MAC, &udp(VM, NET, 64, 1, 9, b"z"))).is_none());
    assert_eq!(h.dropped(DropReason::ConntrackFull), 1);
}

#[test]
fn mss_clamp_still_applies_to_translated_flows() {
    // wro's VMs (behind the tunnel) leave through roz's WAN.
    let mut c = config();
    c.nat.push(NatRule { source: prefix([10, 2, 0, 0], 16), out: WAN }).unwrap();
    let mut h = harness(c);
    let syn = tcp_syn(WRO_VM, NET, 64, 1460, false, 0);
    let out = h.rx(WAN, &from_peer(PEER.0, &syn)).expect("forwarded out of the WAN");
    assert_eq!(out.0, WAN);
    assert_eq!(ends(&out.1), (WAN_IP, 40000, NET, 443));
    assert_eq!(mss_of(&out.1[14..]), Some(1380), "tunnel MTU 1420 − 40, and the checksums hold");
}

#[test]
fn traffic_that_is_not_translated_is_left_alone() {
    let mut h = harness(nat_config());
    // lan0 → the other site through the tunnel: no NAT rule for that way.
    let f = h.rx(LAN0, &from_vm(VM_MAC, &udp(VM, WRO_VM, 64, 40000, 4789, b"x"))).unwrap();
    assert_eq!(f.0, WAN);
    assert!(h.dp.conntrack().is_empty(), "nothing tracked without a firewall or a NAT match");
    // The WAN still answers nothing but WireGuard: echo to the WAN dropped.
    assert!(h.rx(WAN, &from_wan(&echo(NET, WAN_IP, 60))).is_none());
    assert_eq!(h.dropped(DropReason::WanNotWireguard), 1);
}

#[test]
fn fragments_on_a_translated_path_are_dropped_and_counted() {
    let mut h = harness(nat_config());
    let mut p = udp(VM, NET, 64, 40000, 53, b"q");
    p[6] |= 0x20; // more fragments
    fix_ip_checksum(&mut p);
    assert!(h.rx(LAN0, &from_vm(VM_MAC, &p)).is_none());
    assert_eq!(h.dropped(DropReason::ConntrackFragment), 1);
}

#[test]
fn a_flow_survives_an_apply_that_keeps_its_nat_and_goes_when_nat_changes() {
    let mut h = harness(nat_config());
    h.rx(LAN0, &from_vm(VM_MAC, &udp(VM, NET, 64, 40000, 53, b"q"))).unwrap();
    let mut next = Box::new(Dataplane::new(nat_config(), h.now).unwrap());
    next.carry_from(&h.dp);
    h.dp = next;
    let back = h.rx(WAN, &from_wan(&udp(NET, WAN_IP, 60, 53, 40000, b"a"))).expect("carried");
    assert_eq!(ends(&back.1).2, VM);

    // The WAN address changed (a new DHCP lease): the mapping is void.
    let mut c = nat_config();
    c.ports[WAN.index()].address = Some(Ipv4Addr::new(203, 0, 113, 3));
    let mut next = Box::new(Dataplane::new(c, h.now).unwrap());
    next.carry_from(&h.dp);
    assert!(next.conntrack().is_empty());
    assert_eq!(next.conntrack().counters.dropped_on_apply, 1);
    h.dp = next;
    let out = h.rx(LAN0, &from_vm(VM_MAC, &udp(VM, NET, 64, 40000, 53, b"q"))).unwrap();
    assert_eq!(ends(&out.1).0, Ipv4Addr::new(203, 0, 113, 3), "the lease's new address");
}

// ------------------------------------------------------------ firewall

fn any() -> Prefix {
    prefix([0, 0, 0, 0], 0)
}

fn rule(from: Option<Zone>, to: Option<Zone>, source: Prefix, proto: ProtoMatch, ports: Option<(u16, u16)>, action: Action) -> Rule {
    Rule { from, to, source, destination: any(), proto, ports, action }
}

/// Seed 003's rules (roz) on the test world: the VM network is lan0, the
/// other site behind the tunnel, the internet on the WAN.
fn seed_003() -> Config {
    let mut c = nat_config();
    let wro = prefix([10, 2, 0, 0], 24);
    let mut fw = Firewall { rules: heapless::Vec::new(), policies: heapless::Vec::new(), default: Action::Drop };
    // VXLAN and BGP to the box only from wro's underlay, through the tunnel.
    fw.rules.push(rule(Some(Zone::Tunnel), Some(Zone::Box), wro, ProtoMatch::Udp, Some((4789, 4789)), Action::Accept)).unwrap();
    fw.rules.push(rule(Some(Zone::Tunnel), Some(Zone::Box), wro, ProtoMatch::Tcp, Some((179, 179)), Action::Accept)).unwrap();
    // No SSH out to the internet (an ordered exception before the policy).
    fw.rules.push(rule(Some(Zone::Port(LAN0)), Some(Zone::Port(WAN)), any(), ProtoMatch::Tcp, Some((22, 22)), Action::Drop)).unwrap();
    // Ping to the box from the VMs.
    fw.rules.push(rule(Some(Zone::Port(LAN0)), Some(Zone::Box), any(), ProtoMatch::Icmp, None, Action::Accept)).unwrap();
    // Overlay ↔ VM network both ways, VMs out to the internet.
    fw.policies.push(Policy { from: Some(Zone::Port(LAN0)), to: Some(Zone::Tunnel), action: Action::Accept }).unwrap();
    fw.policies.push(Policy { from: Some(Zone::Tunnel), to: Some(Zone::Port(LAN0)), action: Action::Accept }).unwrap();
    fw.policies.push(Policy { from: Some(Zone::Port(LAN0)), to: Some(Zone::Port(WAN)), action: Action::Accept }).unwrap();
    c.firewall = Some(fw);
    c
}

#[test]
fn seed_003_rules_open_what_they_say_and_count_every_drop() {
    let mut h = harness(seed_003());
    // VMs out to the internet, replies by state.
    let out = h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40000, NET, 443, "S", &[]))).unwrap();
    assert_eq!(ends(&out.1).0, WAN_IP);
    assert!(h.rx(WAN, &from_wan(&tcp(NET, 443, WAN_IP, 40000, "SA", &[]))).is_some());
    // SSH out: rule 2.
    assert!(h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 40001, NET, 22, "S", &[]))).is_none());
    assert_eq!(h.dp.firewall_counters().rules[2], 1);
    assert_eq!(h.dropped(DropReason::FirewallRule), 1);
    // The internet opens nothing: the WAN stays silent (the default).
    assert!(h.rx(WAN, &from_wan(&echo(NET, WAN_IP, 60))).is_none());
    assert_eq!(h.dp.firewall_counters().default, 1);
    assert!(h.tx.local.is_empty());
    // WireGuard always passes; overlay → VM network by policy, ports untouched.
    let f = h.rx(WAN, &from_peer(PEER.0, &tcp(WRO_VM, 5000, VM, 80, "S", &[]))).expect("tunnel → lan0 by policy");
    assert_eq!(f.0, LAN0);
    assert_eq!(ends(&f.1), (WRO_VM, 5000, VM, 80), "never a port rewritten between sites");
    // The VM's answer by state.
    assert!(h.rx(LAN0, &from_vm(VM_MAC, &tcp(VM, 80, WRO_VM, 5000, "SA", &[]))).is_some());
    // VXLAN to the box from wro through the tunnel: rule 0 (then decapsulated).
    let _ = h.rx(WAN, &from_peer(PEER.0, &udp(VTEP_TUN, TUN_IP, 64, 50000, 4789, &[8, 0, 0, 0, 0, 0, 100, 0])));
    assert_eq!(h.dp.firewall_counters().rules[0], 1);
    // VXLAN from another tunnel source (cryptokey routing allows it, the rules do not).
    let _ = h.rx(WAN, &from_peer(PEER.0, &udp(Ipv4Addr::new(192, 168, 50, 1), TUN_IP, 64, 50000, 4789, &[8, 0, 0, 0, 0, 0, 100, 0])));
    assert_eq!(h.dp.firewall_counters().default, 2);
    assert_eq!(h.dropped(DropReason::FirewallPolicy), 2);
    // Ping to the box from a VM: rule 3 hands it to the services.
    assert!(h.rx(LAN0, &from_vm(VM_MAC, &echo(VM, LAN0_IP, 64))).is_none());
    assert_eq!(h.tx.local.len(), 1);
    assert_eq!(h.dp.firewall_counters().rules[3], 1);
}

#[test]
fn a_rule_can_open_the_wan_explicitly() {
    let mut c = seed_003();
    let open = rule(Some(Zone::Port(WAN)), Some(Zone::Box), prefix([192, 0, 2, 0], 24), ProtoMatch::Icmp, None, Action::Accept);
    c.firewall.as_mut().unwrap().rules.insert(0, open).unwrap();
    let mut h = harness(c);
    assert!(h.rx(WAN, &from_wan(&echo(NET, WAN_IP, 60))).is_none());
    assert_eq!(h.tx.local.len(), 1, "echo handed to the services");
    assert!(h.rx(WAN, &from_wan(&echo(ROUTER, WAN_IP, 60))).is_none());
    assert_eq!(h.tx.local.len(), 1, "other sources still dropped");
}

#[test]
fn firewall_changes_on_apply_recheck_carried_flows() {
    let mut h = harness(seed_003());
    h.rx(LAN0, &from_vm(VM_MAC, &udp(VM, WRO_VM, 64, 1000, 2000, b"x"))).unwrap();
    assert_eq!(h.dp.conntrack().len(), 1);
    // Same rules: kept.
    let mut next = Box::new(Dataplane::new(seed_003(), h.now).unwrap());
    next.carry_from(&h.dp);
    assert_eq!(next.conntrack().len(), 1);
    // lan0 → tunnel no longer allowed: dropped on apply.
    let mut c = seed_003();
    c.firewall.as_mut().unwrap().policies.remove(0);
    let mut next2 = Box::new(Dataplane::new(c, h.now).unwrap());
    next2.carry_from(&next);
    assert!(next2.conntrack().is_empty());
    assert_eq!(next2.conntrack().counters.dropped_on_apply, 1);
}

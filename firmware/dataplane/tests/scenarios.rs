//! Scenario tests: frames through `Dataplane::process`/`poll`, one test per
//! behaviour of issue 3, hostile cases included.

mod common;

use std::net::Ipv4Addr;

use common::*;
use routerd_dataplane::*;

/// Unwrap a frame sent to the tunnel peer: checks the underlay headers and
/// returns the inner IPv4 packet.
fn into_tunnel(frame: &[u8]) -> Vec<u8> {
    let h = checked(frame);
    let Some(etherparse::LinkHeader::Ethernet2(e)) = &h.link else { panic!("not ethernet") };
    assert_eq!(e.destination, GW_MAC, "underlay goes via the gateway");
    assert_eq!(e.source, WAN_MAC);
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &h.net else { panic!("not ipv4") };
    assert_eq!(Ipv4Addr::from(ip.source), WAN_IP);
    assert_eq!(Ipv4Addr::from(ip.destination), PEER_ADDR);
    let Some(etherparse::TransportHeader::Udp(u)) = &h.transport else { panic!("not udp") };
    assert_eq!(u.source_port, LISTEN);
    assert_eq!(u.destination_port, PEER_ENDPOINT.port());
    assert_eq!(u.checksum, 0, "WireGuard datagrams go without a UDP checksum (RFC 768: zero is none; the tag authenticates)");
    let p = h.payload.slice();
    assert_eq!(&p[..4], b"PT\x00\x01");
    p[4..].to_vec()
}

// ------------------------------------------------------------- proxy-ARP

#[test]
fn proxy_arp_answers_active_remote_claim_on_capture_port() {
    let mut h = Harness::new();
    let req = arp(1, HOST_A_MAC, HOST_A, [0; 6], MOVED, [0xff; 6]);
    let (port, out) = h.rx(LAN0, &req).expect("proxy-ARP reply");
    assert_eq!(port, LAN0);
    assert_eq!(out.len(), 60);
    let (dst, op, sha, spa, tha, tpa) = parse_arp(&out);
    assert_eq!((dst, op, sha, spa, tha, tpa), (HOST_A_MAC, 2, LAN0_MAC, MOVED, HOST_A_MAC, HOST_A));
    assert_eq!(&out[6..12], &LAN0_MAC, "reply from the capture port's MAC");
    assert_eq!(&out[42..], &[0u8; 18], "padding is zero, not buffer garbage");
    let c = h.claim(CLAIM_MOVED);
    assert_eq!(c.counters.arp_replies, 1);
    assert_eq!(c.state, ClaimState::Active);
}

#[test]
fn proxy_arp_never_on_other_ports_or_for_other_addresses() {
    let mut h = Harness::new();
    // Right claim, wrong port.
    assert!(h.rx(LAN1, &arp(1, VM1_MAC, Ipv4Addr::new(10, 1, 1, 7), [0; 6], MOVED, [0xff; 6])).is_none());
    // Unclaimed address on the capture port.
    assert!(h.rx(LAN0, &arp(1, HOST_A_MAC, HOST_A, [0; 6], Ipv4Addr::new(10, 0, 0, 77), [0xff; 6])).is_none());
    // A local claim: the real host answers, not us.
    assert!(h.rx(LAN0, &arp(1, INTRUDER_MAC, Ipv4Addr::new(10, 0, 0, 6), [0; 6], HOST_A, [0xff; 6])).is_none());
    // Provider-secondary-ip: never answered, even on its own port.
    assert!(h.rx(WAN, &arp(1, GW_MAC, GW_IP, [0; 6], SECONDARY, [0xff; 6])).is_none());
    assert_eq!(h.dropped(DropReason::ArpNotOurs), 4);
    assert_eq!(h.claim(CLAIM_MOVED).counters.arp_replies, 0);
}

#[test]
fn gratuitous_arp_on_activation_spaced_by_poll() {
    let mut h = Harness::new();
    assert_eq!(h.dp.poll_at(&h.tun), Some(Instant::ZERO));
    h.poll(0);
    let f = h.take_tx();
    assert_eq!(f.len(), 1);
    let (port, frame) = &f[0];
    assert_eq!(*port, LAN0);
    let (dst, op, sha, spa, tha, tpa) = parse_arp(frame);
    assert_eq!((dst, op, sha, spa, tha, tpa), ([0xff; 6], 1, LAN0_MAC, MOVED, [0; 6], MOVED));
    // Not again before the interval.
    assert_eq!(h.dp.poll_at(&h.tun), Some(Instant::from_millis(1000)));
    h.poll(999);
    assert!(h.take_tx().is_empty());
    h.poll(1000);
    h.poll(2000);
    h.poll(3000);
    h.poll(4000);
    assert_eq!(h.take_tx().len(), 2, "three in total (Timing::default)");
    assert_eq!(h.claim(CLAIM_MOVED).counters.garps_sent, 3);
    assert_eq!(h.dp.poll_at(&h.tun), None);
}

#[test]
fn garp_count_is_configurable_and_disabled_claims_stay_quiet() {
    let mut cfg = config();
    cfg.claims[CLAIM_MOVED].garp_count = 1;
    let mut h = Harness::with(cfg);
    h.dp.set_claim_enabled(Instant::ZERO, CLAIM_MOVED, false);
    h.poll(0);
    assert!(h.take_tx().is_empty());
    assert!(h.rx(LAN0, &arp(1, HOST_A_MAC, HOST_A, [0; 6], MOVED, [0xff; 6])).is_none());
    assert_eq!(h.dropped(DropReason::ArpClaimInactive), 1);
    h.dp.set_claim_enabled(Instant::from_millis(5), CLAIM_MOVED, true);
    h.poll(5);
    h.poll(5000);
    assert_eq!(h.take_tx().len(), 1);
}

#[test]
fn conflict_stops_answering_and_announcing() {
    let mut h = Harness::new();
    h.poll(0);
    h.take_tx();
    // A live host announces the claimed address (gratuitous ARP request).
    assert!(h.rx(LAN0, &arp(1, INTRUDER_MAC, MOVED, [0; 6], MOVED, [0xff; 6])).is_none());
    let c = h.claim(CLAIM_MOVED);
    assert_eq!(c.state, ClaimState::InConflict);
    assert_eq!(c.counters.conflicts, 1);
    assert_eq!(h.dropped(DropReason::ArpConflict), 1);
    // No more replies, no more GARPs.
    assert!(h.rx(LAN0, &arp(1, HOST_A_MAC, HOST_A, [0; 6], MOVED, [0xff; 6])).is_none());
    assert_eq!(h.dropped(DropReason::ArpClaimInConflict), 1);
    h.poll(1000);
    h.poll(2000);
    assert!(h.take_tx().is_empty());
    // It stays so until the host is gone (tests/claims.rs: hold and probes).
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::InConflict);
}

#[test]
fn conflict_from_arp_reply_on_any_port() {
    let mut h = Harness::new();
    assert!(h.rx(LAN1, &arp(2, INTRUDER_MAC, MOVED, LAN1_MAC, LAN1_IP, LAN1_MAC)).is_none());
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::InConflict);
}

#[test]
fn our_own_gratuitous_arp_reflected_is_not_a_conflict() {
    let mut h = Harness::new();
    h.poll(0);
    let (_, garp) = h.take_tx().remove(0);
    assert!(h.rx(LAN0, &garp).is_none());
    assert_eq!(h.dropped(DropReason::OwnSourceMac), 1);
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::Active);
}

#[test]
fn probe_for_claimed_address_is_not_answered() {
    let mut h = Harness::new();
    // RFC 5227 probe: sender IP 0.0.0.0, target = the claim.
    let probe = arp(1, INTRUDER_MAC, Ipv4Addr::UNSPECIFIED, [0; 6], MOVED, [0xff; 6]);
    assert!(h.rx(LAN0, &probe).is_none());
    let c = h.claim(CLAIM_MOVED);
    assert_eq!(c.counters.probes_seen, 1);
    assert_eq!(c.counters.arp_replies, 0);
    assert_eq!(c.state, ClaimState::Active, "a probe alone is not a conflict");
    assert_eq!(h.dropped(DropReason::ArpProbeForClaim), 1);
    // ...but the host's announcement that follows is.
    h.rx(LAN0, &arp(1, INTRUDER_MAC, MOVED, [0; 6], MOVED, [0xff; 6]));
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::InConflict);
}

#[test]
fn probe_for_own_address_is_defended() {
    let mut h = Harness::new();
    let probe = arp(1, INTRUDER_MAC, Ipv4Addr::UNSPECIFIED, [0; 6], LAN0_IP, [0xff; 6]);
    let (_, out) = h.rx(LAN0, &probe).unwrap();
    let (dst, op, sha, spa, _, _) = parse_arp(&out);
    assert_eq!((dst, op, sha, spa), (INTRUDER_MAC, 2, LAN0_MAC, LAN0_IP));
}

#[test]
fn proxy_arp_replies_are_rate_limited_per_claim() {
    let mut h = Harness::new();
    let req = arp(1, HOST_A_MAC, HOST_A, [0; 6], MOVED, [0xff; 6]);
    let burst = Timing::default().arp_reply_burst as usize;
    let answered = (0..burst + 5).filter(|_| h.rx(LAN0, &req).is_some()).count();
    assert_eq!(answered, burst);
    assert_eq!(h.dropped(DropReason::ArpReplyRateLimited), 5);
    assert_eq!(h.claim(CLAIM_MOVED).counters.arp_replies_rate_limited, 5);
    // Refills with time: 10/s → one more after 100 ms.
    h.now = Instant::from_millis(100);
    assert!(h.rx(LAN0, &req).is_some());
    assert!(h.rx(LAN0, &req).is_none());
}

#[test]
fn arp_hostile_inputs() {
    let mut h = Harness::new();
    // Truncated ARP.
    let mut t = arp(1, HOST_A_MAC, HOST_A, [0; 6], LAN0_IP, [0xff; 6]);
    t.truncate(30);
    assert!(h.rx(LAN0, &t).is_none());
    // Not Ethernet/IPv4.
    let mut t = arp(1, HOST_A_MAC, HOST_A, [0; 6], LAN0_IP, [0xff; 6]);
    t[15] = 6;
    assert!(h.rx(LAN0, &t).is_none());
    assert_eq!(h.dropped(DropReason::ArpMalformed), 2);
    // Broadcast sender MAC.
    let t = arp(1, [0xff; 6], HOST_A, [0; 6], LAN0_IP, [0xff; 6]);
    let mut t2 = t.clone();
    t2[6..12].copy_from_slice(&HOST_A_MAC);
    assert!(h.rx(LAN0, &t2).is_none());
    assert_eq!(h.dropped(DropReason::ArpBadSender), 1);
    // Unsolicited reply creates nothing.
    assert!(h.rx(LAN0, &arp(2, INTRUDER_MAC, Ipv4Addr::new(10, 0, 0, 99), LAN0_MAC, LAN0_IP, LAN0_MAC)).is_none());
    assert_eq!(h.dropped(DropReason::ArpUnsolicited), 1);
    assert!(h.dp.neighbors().entries().is_empty());
}

// ------------------------------------------------------ own traffic

#[test]
fn box_answers_arp_for_its_own_addresses_including_wan() {
    let mut h = Harness::new();
    let (p, out) = h.rx(WAN, &arp(1, GW_MAC, GW_IP, [0; 6], WAN_IP, [0xff; 6])).unwrap();
    assert_eq!(p, WAN);
    let (dst, op, sha, spa, tha, tpa) = parse_arp(&out);
    assert_eq!((dst, op, sha, spa, tha, tpa), (GW_MAC, 2, WAN_MAC, WAN_IP, GW_MAC, GW_IP));
    assert_eq!(h.dp.counters().arp_replies_own, 1);
    // And learned the asker.
    assert_eq!(h.dp.neighbors().entries().len(), 1);
}

#[test]
fn echo_goes_to_the_services_on_lan_not_on_wan() {
    let mut h = Harness::new();
    h.learn(LAN0, HOST_A, HOST_A_MAC);
    let request = echo(HOST_A, LAN0_IP, 64);
    assert!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &request)).is_none());
    assert_eq!(h.tx.local, [(LocalFrom::Port(LAN0), request)], "handed over as it came (padding trimmed)");
    assert_eq!(h.dp.counters().local_delivered, 1);
    // The service's answer is routed like any packet the box originates.
    assert!(h.dp.send_local(h.now, &echo_reply(LAN0_IP, HOST_A), &mut h.tun, &mut h.tx));
    let (p, out) = h.take_tx().pop().unwrap();
    assert_eq!(p, LAN0);
    let hd = checked(&out);
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &hd.net else { panic!() };
    assert_eq!((Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination)), (LAN0_IP, HOST_A));
    let Some(etherparse::TransportHeader::Icmpv4(i)) = &hd.transport else { panic!() };
    assert!(matches!(i.icmp_type, etherparse::Icmpv4Type::EchoReply(_)));
    assert_eq!(hd.payload.slice(), b"ping");
    assert_eq!(&out[0..6], &HOST_A_MAC);
    // WAN: nothing but WireGuard.
    h.learn_gateway();
    assert!(h.rx(WAN, &eth(WAN_MAC, GW_MAC, &echo(Ipv4Addr::new(8, 8, 8, 8), WAN_IP, 64))).is_none());
    assert!(h.rx(WAN, &wan_udp(Ipv4Addr::new(8, 8, 8, 8), 5000, 53, b"x")).is_none());
    assert_eq!(h.dropped(DropReason::WanNotWireguard), 2);
    // Echo to a claim (provider secondary) is forwarded, never answered.
    let out = h.rx(WAN, &eth(WAN_MAC, GW_MAC, &echo(Ipv4Addr::new(8, 8, 8, 8), SECONDARY, 64)));
    let (p, f) = out.unwrap();
    assert_eq!(p, WAN);
    let inner = into_tunnel(&f);
    assert_eq!(&inner[16..20], &SECONDARY.octets());
    assert_eq!(h.dp.counters().local_delivered, 1, "only the LAN one");
    // Without a services layer nothing ends on the box, and says so.
    struct NoServices;
    impl Transmit for NoServices {
        fn send(&mut self, _: PortId, _: &[u8]) -> bool {
            true
        }
    }
    let f = eth(LAN0_MAC, HOST_A_MAC, &echo(HOST_A, LAN0_IP, 64));
    let mut storage = vec![0u8; BUF_SIZE];
    storage[HEADROOM..HEADROOM + f.len()].copy_from_slice(&f);
    let mut fb = FrameBuf::new(&mut storage, HEADROOM, f.len()).unwrap();
    h.dp.process(h.now, LAN0, &mut fb, &mut h.tun, &mut NoServices);
    assert_eq!(h.dropped(DropReason::LocalUnhandled), 1);
}

#[test]
fn other_traffic_to_the_box_is_dropped_and_counted() {
    let mut h = Harness::new();
    let t = tcp_syn(HOST_A, LAN0_IP, 64, 1460, false, 0);
    assert!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &t)).is_none());
    assert_eq!(h.dropped(DropReason::LocalUnhandled), 1);
}

// ------------------------------------------------------ capture → tunnel

#[test]
fn capture_to_tunnel_resolves_gateway_clamps_and_counts() {
    let mut h = Harness::new();
    let inner = tcp_syn(HOST_A, MOVED, 64, 1460, false, 0);
    // First packet: gateway unknown → parked, ARP request goes out in place.
    let (p, req) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).unwrap();
    assert_eq!(p, WAN);
    let (dst, op, sha, spa, _, tpa) = parse_arp(&req);
    assert_eq!((dst, op, sha, spa, tpa), ([0xff; 6], 1, WAN_MAC, WAN_IP, GW_IP));
    assert_eq!(h.dp.pending_frames(), 1);
    // Gateway answers → the parked frame is released through Transmit.
    assert!(h.rx(WAN, &arp(2, GW_MAC, GW_IP, WAN_MAC, WAN_IP, WAN_MAC)).is_none());
    let sent = h.take_tx();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, WAN);
    let got = into_tunnel(&sent[0].1);
    checked_ip(&got);
    assert_eq!(mss_of(&got), Some(1380), "tunnel MTU 1420 − 40");
    assert_eq!(got[8], 63, "TTL decremented");
    // Second packet goes straight through, in place.
    let (p, f) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).unwrap();
    assert_eq!(p, WAN);
    assert_eq!(into_tunnel(&f), got);
    let c = h.claim(CLAIM_MOVED);
    assert_eq!(c.counters.to_tunnel.packets, 2);
    assert_eq!(c.counters.to_tunnel.bytes, 2 * inner.len() as u64);
    assert_eq!(c.counters.syns_clamped, 2);
    // HOST_A is a local claim: its outgoing packets count on it too.
    assert_eq!(h.claim(CLAIM_HOST_A).counters.to_tunnel.packets, 2);
    assert_eq!(h.dp.counters().tunnel_tx, 2);
}

#[test]
fn mss_clamp_changes_nothing_else() {
    let mut h = Harness::new();
    h.learn_gateway();
    let inner = tcp_syn(HOST_A, MOVED, 64, 1460, false, 0);
    let (_, f) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).unwrap();
    let got = into_tunnel(&f);
    assert_eq!(got.len(), inner.len());
    // MSS is the first option: TCP header at 20, options at 40, value at 42..44.
    let allowed = [8usize, 10, 11, 20 + 16, 20 + 17, 42, 43];
    for i in 0..inner.len() {
        if !allowed.contains(&i) {
            assert_eq!(inner[i], got[i], "byte {i} changed");
        }
    }
    // Ports and sequence numbers explicitly.
    assert_eq!(&got[20..28], &inner[20..28]);
}

#[test]
fn mss_already_lower_is_left_alone() {
    let mut h = Harness::new();
    h.learn_gateway();
    let inner = tcp_syn(HOST_A, MOVED, 64, 1200, false, 0);
    let (_, f) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).unwrap();
    let got = into_tunnel(&f);
    assert_eq!(mss_of(&got), Some(1200));
    assert_eq!(&got[20..], &inner[20..], "TCP segment untouched");
    assert_eq!(h.dp.counters().syns_clamped, 0);
}

#[test]
fn mss_option_last_is_clamped() {
    let mut h = Harness::new();
    h.learn_gateway();
    // Build a SYN whose MSS option is the last one, at an odd offset.
    let mut inner = tcp_syn(HOST_A, MOVED, 64, 1460, false, 0);
    // Replace the options: NOP, WS(3), NOP, NOP, NOP, MSS(4), EOL... total 12.
    let opts = [1u8, 3, 3, 7, 1, 1, 1, 2, 4, 0x05, 0xb4, 0];
    let hl = ((inner[32] >> 4) as usize) * 4;
    assert_eq!(hl, 32);
    inner[40..52].copy_from_slice(&opts);
    let (ip, _) = etherparse::Ipv4Header::from_slice(&inner).unwrap();
    let (mut tcp, _) = etherparse::TcpHeader::from_slice(&inner[20..]).unwrap();
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, &[]).unwrap();
    inner[36..38].copy_from_slice(&tcp.checksum.to_be_bytes());
    checked_ip(&inner);
    let (_, f) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).unwrap();
    let got = into_tunnel(&f);
    checked_ip(&got);
    assert_eq!(mss_of(&got), Some(1380));
    assert_eq!(h.dp.counters().syns_clamped, 1);
}

#[test]
fn claim_mss_override_lowers_further() {
    let mut cfg = config();
    cfg.claims[CLAIM_MOVED].mss = Some(1300);
    let mut h = Harness::with(cfg);
    h.learn_gateway();
    let (_, f) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &tcp_syn(HOST_A, MOVED, 64, 1460, false, 0))).unwrap();
    assert_eq!(mss_of(&into_tunnel(&f)), Some(1300));
}

#[test]
fn provider_secondary_ip_capture_goes_to_tunnel() {
    let mut h = Harness::new();
    h.learn_gateway();
    let inner = tcp_syn(Ipv4Addr::new(10, 0, 0, 30), SECONDARY, 64, 1460, false, 0);
    let (p, f) = h.rx(WAN, &eth(WAN_MAC, GW_MAC, &inner)).unwrap();
    assert_eq!(p, WAN);
    let got = into_tunnel(&f);
    assert_eq!(mss_of(&got), Some(1380));
    assert_eq!(h.claim(CLAIM_SECONDARY).counters.to_tunnel.packets, 1);
    // Never an ARP answer for it.
    assert!(h.rx(WAN, &arp(1, GW_MAC, GW_IP, [0; 6], SECONDARY, [0xff; 6])).is_none());
}

// ------------------------------------------------------ tunnel → delivery

#[test]
fn tunnel_to_local_claim_delivered_on_lan_with_arp() {
    let mut h = Harness::new();
    let inner = tcp_syn(MOVED, HOST_A, 64, 1460, true, 0);
    let (p, req) = h.rx(WAN, &from_peer(1, &inner)).unwrap();
    assert_eq!(p, LAN0);
    let (dst, op, sha, spa, _, tpa) = parse_arp(&req);
    assert_eq!((dst, op, sha, spa, tpa), ([0xff; 6], 1, LAN0_MAC, LAN0_IP, HOST_A));
    // Host answers.
    assert!(h.rx(LAN0, &arp(2, HOST_A_MAC, HOST_A, LAN0_MAC, LAN0_IP, LAN0_MAC)).is_none());
    let sent = h.take_tx();
    assert_eq!(sent.len(), 1);
    let (p, f) = &sent[0];
    assert_eq!(*p, LAN0);
    assert_eq!(&f[0..6], &HOST_A_MAC);
    assert_eq!(&f[6..12], &LAN0_MAC);
    checked(f);
    let ip = &f[14..];
    assert_eq!(mss_of(ip), Some(1380), "SYN-ACK clamped on the way back too");
    assert_eq!(ip[8], 63);
    let c = h.claim(CLAIM_HOST_A);
    assert_eq!(c.counters.from_tunnel.packets, 1);
    assert_eq!(c.counters.syns_clamped, 1);
    assert_eq!(h.claim(CLAIM_MOVED).counters.from_tunnel.packets, 1);
}

#[test]
fn tunnel_datagram_udp_checksum_zero_accepted_wrong_one_dropped() {
    // Our own egress sends zero (none, RFC 768); other WireGuard peers
    // (Linux, wireguard-go) send a real one, which is verified.
    let inner = udp(MOVED, HOST_A, 64, 1000, 2000, b"payload");
    let mut h = Harness::new();
    h.learn(LAN0, HOST_A, HOST_A_MAC);
    let good = from_peer(1, &inner);
    assert_ne!(u16::from_be_bytes([good[40], good[41]]), 0, "the helper computes a checksum");
    let (p, _) = h.rx(WAN, &good).expect("a valid checksum is accepted");
    assert_eq!(p, LAN0);
    let mut zero = good.clone();
    zero[40..42].copy_from_slice(&[0, 0]);
    let (p, f) = h.rx(WAN, &zero).expect("a zero checksum means none");
    assert_eq!(p, LAN0);
    assert_eq!(&f[14 + 20 + 8..], b"payload");
    let mut wrong = good.clone();
    wrong[40] ^= 0x5a;
    assert!(h.rx(WAN, &wrong).is_none());
    assert_eq!(h.dropped(DropReason::UdpMalformed), 1, "a wrong non-zero checksum is a counted drop");
    // A corrupted payload under a checksum that was right for it: dropped too.
    let mut corrupt = good;
    let n = corrupt.len();
    corrupt[n - 1] ^= 0x01;
    assert!(h.rx(WAN, &corrupt).is_none());
    assert_eq!(h.dropped(DropReason::UdpMalformed), 2);
    assert_eq!(h.dp.counters().tunnel_rx, 2, "the tunnel never saw the bad ones");
}

#[test]
fn spoofed_inner_source_is_dropped() {
    let mut h = Harness::new();
    let inner = tcp_syn(Ipv4Addr::new(10, 0, 0, 77), HOST_A, 64, 1460, false, 0);
    assert!(h.rx(WAN, &from_peer(1, &inner)).is_none());
    assert_eq!(h.dropped(DropReason::TunnelSpoofedSource), 1);
    // A peer id the config does not know.
    let inner = tcp_syn(MOVED, HOST_A, 64, 1460, false, 0);
    assert!(h.rx(WAN, &from_peer(7, &inner)).is_none());
    assert_eq!(h.dropped(DropReason::TunnelBadOutput), 1);
}

#[test]
fn loop_guard_drops_tunnel_to_tunnel() {
    let mut h = Harness::new();
    h.learn_gateway();
    // Seed 000's loop: the cloud routes the captured /32 back to us.
    let inner = tcp_syn(Ipv4Addr::new(192, 168, 50, 3), MOVED, 64, 1460, false, 0);
    assert!(h.rx(WAN, &from_peer(1, &inner)).is_none());
    assert_eq!(h.dropped(DropReason::TunnelLoop), 1);
    assert_eq!(h.claim(CLAIM_MOVED).counters.loops, 1);
    // Also for a peer prefix route.
    let inner = udp(Ipv4Addr::new(192, 168, 50, 3), Ipv4Addr::new(10, 2, 3, 4), 64, 1, 2, b"x");
    assert!(h.rx(WAN, &from_peer(1, &inner)).is_none());
    assert_eq!(h.dropped(DropReason::TunnelLoop), 2);
    assert_eq!(h.tun.sealed, 0);
}

#[test]
fn tunnel_handshake_reply_and_keepalive_and_rejects() {
    let mut h = Harness::new();
    h.learn_gateway();
    let (p, f) = h.rx(WAN, &wan_udp(PEER_ADDR, 41000, LISTEN, b"HI")).unwrap();
    assert_eq!(p, WAN);
    let hd = checked(&f);
    let Some(etherparse::TransportHeader::Udp(u)) = &hd.transport else { panic!() };
    assert_eq!((u.source_port, u.destination_port), (LISTEN, 41000), "reply goes to where it came from");
    assert_eq!(hd.payload.slice(), b"HR");
    assert!(h.rx(WAN, &wan_udp(PEER_ADDR, 41000, LISTEN, b"KA")).is_none());
    assert!(h.rx(WAN, &wan_udp(PEER_ADDR, 41000, LISTEN, b"garbage")).is_none());
    assert_eq!(h.dropped(DropReason::TunnelRejected), 1);
    assert_eq!(h.dp.counters().tunnel_control, 2);
    assert_eq!(h.dp.counters().total_drops(), 1);
}

#[test]
fn tunnel_timers_are_sent_from_poll() {
    let mut h = Harness::new();
    h.learn_gateway();
    h.tun.timer = Some(b"HI".to_vec());
    assert_eq!(h.dp.poll_at(&h.tun), Some(Instant::ZERO));
    h.poll(10);
    let sent = h.take_tx();
    let wg: Vec<_> = sent.iter().filter(|(p, _)| *p == WAN).collect();
    assert_eq!(wg.len(), 1);
    let hd = checked(&wg[0].1);
    assert_eq!(hd.payload.slice(), b"HI");
}

#[test]
fn echo_from_inside_the_tunnel_is_answered_into_the_tunnel() {
    let mut h = Harness::new();
    h.learn_gateway();
    assert!(h.rx(WAN, &from_peer(1, &echo(VTEP_TUN, TUN_IP, 64))).is_none());
    assert_eq!(h.tx.local.len(), 1);
    assert_eq!(h.tx.local[0].0, LocalFrom::Tunnel(PEER));
    assert!(h.dp.send_local(h.now, &echo_reply(TUN_IP, VTEP_TUN), &mut h.tun, &mut h.tx));
    let (p, f) = h.take_tx().pop().unwrap();
    assert_eq!(p, WAN);
    let got = into_tunnel(&f);
    let hd = checked_ip(&got);
    assert!(
        matches!(&hd.transport, Some(etherparse::TransportHeader::Icmpv4(i)) if matches!(i.icmp_type, etherparse::Icmpv4Type::EchoReply(_)))
    );
}

// ------------------------------------------------------ routing & ICMP

#[test]
fn default_route_via_wan_gateway_without_clamp() {
    let mut h = Harness::new();
    h.learn_gateway();
    let inner = tcp_syn(HOST_A, Ipv4Addr::new(93, 184, 216, 34), 64, 1460, false, 0);
    let (p, f) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).unwrap();
    assert_eq!(p, WAN);
    assert_eq!(&f[0..6], &GW_MAC);
    checked(&f);
    assert_eq!(mss_of(&f[14..]), Some(1460), "no tunnel crossing, no clamp");
    assert_eq!(f[14 + 8], 63);
}

#[test]
fn no_route_without_default() {
    let mut cfg = config();
    cfg.ports[1].gateway = None;
    let mut h = Harness::with(cfg);
    let inner = udp(HOST_A, Ipv4Addr::new(93, 184, 216, 34), 64, 1, 2, b"x");
    assert!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).is_none());
    assert_eq!(h.dropped(DropReason::NoRoute), 1);
}

#[test]
fn ttl_expired_gets_time_exceeded() {
    let mut h = Harness::new();
    h.learn(LAN0, HOST_A, HOST_A_MAC);
    let inner = udp(HOST_A, MOVED, 1, 1234, 53, b"query");
    let (p, f) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).unwrap();
    assert_eq!(p, LAN0);
    assert_eq!(&f[0..6], &HOST_A_MAC);
    let hd = checked(&f);
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &hd.net else { panic!() };
    assert_eq!((Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination)), (LAN0_IP, HOST_A));
    let Some(etherparse::TransportHeader::Icmpv4(i)) = &hd.transport else { panic!() };
    assert!(matches!(i.icmp_type, etherparse::Icmpv4Type::TimeExceeded(_)));
    assert_eq!(hd.payload.slice(), &inner[..28], "quotes header + 8 bytes");
    assert_eq!(h.dropped(DropReason::TtlExpired), 1);
    assert_eq!(h.tun.sealed, 0);
}

#[test]
fn df_too_big_gets_frag_needed_with_tunnel_mtu() {
    let mut h = Harness::new();
    h.learn(LAN0, HOST_A, HOST_A_MAC);
    let mut inner = udp(HOST_A, MOVED, 64, 1234, 53, &[7u8; 1472]);
    assert_eq!(inner.len(), 1500);
    set_df(&mut inner, true);
    let (p, f) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).unwrap();
    assert_eq!(p, LAN0);
    checked(&f);
    let icmp = &f[14 + 20..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1420, "next-hop MTU");
    assert_eq!(h.dropped(DropReason::FragmentationNeeded), 1);
    // Exactly the MTU passes.
    h.learn_gateway();
    let mut fits = udp(HOST_A, MOVED, 64, 1234, 53, &[7u8; 1392]);
    set_df(&mut fits, true);
    assert_eq!(fits.len(), 1420);
    let (p, _) = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &fits)).unwrap();
    assert_eq!(p, WAN);
    // Not DF: dropped, the box does not fragment.
    set_df(&mut inner, false);
    assert!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).is_none());
    assert_eq!(h.dropped(DropReason::TooBigNoDf), 1);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut h = Harness::new();
    h.learn(LAN0, HOST_A, HOST_A_MAC);
    let inner = udp(HOST_A, MOVED, 1, 1234, 53, b"q");
    let burst = Timing::default().icmp_burst as usize;
    let sent = (0..burst + 3).filter(|_| h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &inner)).is_some()).count();
    assert_eq!(sent, burst);
    assert_eq!(h.dp.counters().icmp_errors_rate_limited, 3);
    assert_eq!(h.dropped(DropReason::TtlExpired), burst as u64 + 3);
}

#[test]
fn no_icmp_error_about_icmp_errors() {
    let mut h = Harness::new();
    h.learn(LAN0, HOST_A, HOST_A_MAC);
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(HOST_A.octets(), MOVED.octets(), 1)
        .icmpv4(etherparse::Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit))
        .write(&mut v, &[0u8; 28])
        .unwrap();
    assert!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &v)).is_none());
    assert_eq!(h.dp.counters().icmp_errors_sent, 0);
}

// ------------------------------------------------------ neighbour resolution

#[test]
fn arp_retries_then_gives_up_and_counts() {
    let mut h = Harness::new();
    let inner = udp(MOVED, Ipv4Addr::new(10, 0, 0, 44), 64, 1, 2, b"x");
    let (_, req) = h.rx(WAN, &from_peer(1, &inner)).unwrap();
    assert_eq!(parse_arp(&req).1, 1);
    h.rx(WAN, &from_peer(1, &inner));
    assert_eq!(h.dp.pending_frames(), 2);
    h.poll(1000);
    h.poll(2000);
    let target = Ipv4Addr::new(10, 0, 0, 44);
    let retries: Vec<_> = h.take_tx().into_iter().filter(|(_, f)| parse_arp(f).5 == target).collect();
    assert_eq!(retries.len(), 2, "two retries after the first request");
    assert!(retries.iter().all(|(p, f)| *p == LAN0 && parse_arp(f).5 == Ipv4Addr::new(10, 0, 0, 44)));
    h.poll(3000);
    assert_eq!(h.dp.pending_frames(), 0);
    assert_eq!(h.dropped(DropReason::ArpResolutionFailed), 2);
    assert!(h.dp.neighbors().entries().is_empty());
    assert_eq!(h.dp.counters().arp_requests_sent, 3);
}

#[test]
fn pending_queue_and_arp_cache_are_bounded() {
    let mut h = Harness::new();
    // Every packet to a new LAN host starts a resolution and parks a frame.
    for i in 0..100u8 {
        let inner = udp(MOVED, Ipv4Addr::new(10, 0, 0, 100 + i), 64, 1, 2, b"x");
        h.rx(WAN, &from_peer(1, &inner));
    }
    assert_eq!(h.dp.pending_frames(), 16);
    assert_eq!(h.dropped(DropReason::PendingQueueFull), 100 - 16 - (100 - 64));
    assert_eq!(h.dropped(DropReason::ArpCacheFull), 100 - 64);
    assert_eq!(h.dp.neighbors().entries().len(), 64);
}

#[test]
fn tx_full_is_counted() {
    let mut h = Harness::new();
    h.tx.refuse = true;
    h.poll(0);
    assert_eq!(h.dropped(DropReason::TxFull), 1);
}

// ------------------------------------------------------ VXLAN

fn inner_frame(dst: [u8; 6], src: [u8; 6], l3_len: usize) -> Vec<u8> {
    let ip = udp(Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(10, 1, 1, 12), 64, 5000, 6000, &vec![0x33; l3_len - 28]);
    eth(dst, src, &ip)
}

fn vxlan_of(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16, u32, Vec<u8>) {
    let hd = checked(frame);
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &hd.net else { panic!() };
    assert!(ip.dont_fragment, "VXLAN is never fragmented");
    let Some(etherparse::TransportHeader::Udp(u)) = &hd.transport else { panic!() };
    assert_eq!(u.checksum, 0);
    let p = hd.payload.slice();
    assert_eq!(p[0], 0x08);
    let vni = u32::from_be_bytes([0, p[4], p[5], p[6]]);
    (Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination), u.source_port, u.destination_port, vni, p[8..].to_vec())
}

#[test]
fn vxlan_floods_unknown_unicast_to_every_vtep() {
    let mut h = Harness::new();
    h.learn_gateway();
    h.learn(WAN, VTEP_WAN, VTEP_WAN_MAC);
    let f = inner_frame(VM2_MAC, VM1_MAC, 100);
    let (p, last) = h.rx(LAN1, &f).unwrap();
    assert_eq!(p, WAN);
    let copies = h.take_tx();
    assert_eq!(copies.len(), 1);
    // First VTEP is behind the tunnel: VXLAN over WireGuard (seed 003).
    let inner = into_tunnel(&copies[0].1);
    let hd = checked_ip(&inner);
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &hd.net else { panic!() };
    assert_eq!((Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination)), (TUN_IP, VTEP_TUN));
    assert_eq!(&hd.payload.slice()[8..], &f[..]);
    // Last VTEP on the WAN subnet: direct, in place.
    assert_eq!(&last[0..6], &VTEP_WAN_MAC);
    let (src, dst, sport, dport, vni, payload) = vxlan_of(&last);
    assert_eq!((src, dst, dport, vni), (WAN_IP, VTEP_WAN, 4789, 100));
    assert!(sport >= 49152);
    assert_eq!(payload, f, "inner frame carried unchanged");
    assert_eq!(h.dp.counters().vxlan_encap, 2);
    assert_eq!(h.dp.counters().vxlan_floods, 1);
}

#[test]
fn a_bridge_only_port_bridges_and_answers_nothing() {
    // Seed 003's lan1: the VM network has no address on the box.
    let mut cfg = config();
    cfg.ports[LAN1.index()].address = None;
    cfg.validate().unwrap();
    let mut h = Harness::with(cfg);
    h.learn_gateway();
    h.learn(WAN, VTEP_WAN, VTEP_WAN_MAC);
    // An ARP request from a VM for another VM (or for the old port
    // address) is flooded to the VTEPs and never answered by the box.
    let ask = arp(1, VM1_MAC, Ipv4Addr::new(10, 1, 1, 11), [0; 6], LAN1_IP, [0xff; 6]);
    let own_replies = h.dp.counters().arp_replies_own;
    assert!(h.rx(LAN1, &ask).is_none(), "not answered on lan1");
    let copies = h.take_tx();
    assert_eq!(copies.len(), 2, "flooded to both VTEPs");
    assert!(copies.iter().all(|(p, _)| *p == WAN));
    assert_eq!(h.dp.counters().arp_replies_own, own_replies);
    // Unicast IPv4 to the port's MAC has nowhere to go: counted.
    let ip = udp(Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(8, 8, 8, 8), 64, 5000, 53, b"q");
    assert!(h.rx(LAN1, &eth(LAN1_MAC, VM1_MAC, &ip)).is_none());
    assert_eq!(h.dropped(DropReason::PortNoAddress), 1);
    // Bridging still works both ways.
    let f = inner_frame(VM1_MAC, VM2_MAC, 100);
    assert_eq!(h.rx(WAN, &vxlan_frame(VTEP_WAN, VTEP_WAN_MAC, 100, 0x08, &f)).unwrap(), (LAN1, f));
    assert_eq!(h.rx(LAN1, &inner_frame(VM2_MAC, VM1_MAC, 100)).unwrap().0, WAN);
    // Nothing routes onto it: its old subnet is no longer connected.
    assert!(!h.dp.config().is_own_address(LAN1_IP));
}

#[test]
fn vxlan_source_port_follows_the_flow() {
    let mut h = Harness::new();
    h.learn_gateway();
    h.learn(WAN, VTEP_WAN, VTEP_WAN_MAC);
    let a = inner_frame(VM2_MAC, VM1_MAC, 100);
    let mut b = a.clone();
    b[14 + 20 + 1] ^= 1; // other UDP source port
    fix_ip_checksum(&mut b[14..]);
    let pa1 = vxlan_of(&h.rx(LAN1, &a).unwrap().1).2;
    let pa2 = vxlan_of(&h.rx(LAN1, &a).unwrap().1).2;
    let pb = vxlan_of(&h.rx(LAN1, &b).unwrap().1).2;
    assert_eq!(pa1, pa2);
    assert_ne!(pa1, pb);
}

#[test]
fn vxlan_decap_learns_and_then_unicasts() {
    let mut h = Harness::new();
    h.learn(WAN, VTEP_WAN, VTEP_WAN_MAC);
    let f = inner_frame(VM1_MAC, VM2_MAC, 100);
    let (p, out) = h.rx(WAN, &vxlan_frame(VTEP_WAN, VTEP_WAN_MAC, 100, 0x08, &f)).unwrap();
    assert_eq!(p, LAN1);
    assert_eq!(out, f, "decapsulated frame is byte-identical");
    assert_eq!(h.dp.fdb().entries().iter().filter(|e| e.mac == Mac(VM2_MAC)).count(), 1);
    // Reply to VM2 now goes only to its VTEP, no flood.
    let back = inner_frame(VM2_MAC, VM1_MAC, 100);
    let (p, out) = h.rx(LAN1, &back).unwrap();
    assert_eq!(p, WAN);
    assert!(h.take_tx().is_empty());
    assert_eq!(vxlan_of(&out).1, VTEP_WAN);
    assert_eq!(h.dp.counters().vxlan_floods, 0);
    // Frames between two local MACs are not sent anywhere.
    h.rx(LAN1, &inner_frame(VM2_MAC, [2, 0xcc, 0, 0, 0, 3], 60));
    assert!(h.rx(LAN1, &inner_frame([2, 0xcc, 0, 0, 0, 3], VM1_MAC, 60)).is_none());
    assert_eq!(h.dropped(DropReason::BridgeLocalDestination), 1);
}

#[test]
fn vxlan_over_the_tunnel_decapsulates() {
    let mut h = Harness::new();
    let f = inner_frame(VM1_MAC, VM2_MAC, 200);
    let mut p = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
    p.extend_from_slice(&f);
    let outer = udp(VTEP_TUN, TUN_IP, 64, 50001, 4789, &p);
    let (port, out) = h.rx(WAN, &from_peer(1, &outer)).unwrap();
    assert_eq!(port, LAN1);
    assert_eq!(out, f);
    // The same VTEP in the clear on the WAN (to the WAN address) is spoofed:
    // it only ever speaks through the tunnel.
    assert!(h.rx(WAN, &vxlan_frame(VTEP_TUN, VTEP_WAN_MAC, 100, 0x08, &f)).is_none());
    assert_eq!(h.dropped(DropReason::VxlanOutsideTunnel), 1);
}

#[test]
fn vxlan_hostile_headers() {
    let mut h = Harness::new();
    let f = inner_frame(VM1_MAC, VM2_MAC, 100);
    assert!(h.rx(WAN, &vxlan_frame(VTEP_WAN, VTEP_WAN_MAC, 999, 0x08, &f)).is_none());
    assert_eq!(h.dropped(DropReason::VxlanUnknownVni), 1);
    assert!(h.rx(WAN, &vxlan_frame(VTEP_WAN, VTEP_WAN_MAC, 100, 0x00, &f)).is_none());
    assert_eq!(h.dropped(DropReason::VxlanNoIFlag), 1);
    assert!(h.rx(WAN, &vxlan_frame(Ipv4Addr::new(203, 0, 113, 66), VTEP_WAN_MAC, 100, 0x08, &f)).is_none());
    assert_eq!(h.dropped(DropReason::VxlanUnknownVtep), 1);
    assert!(h.rx(WAN, &vxlan_frame(VTEP_WAN, VTEP_WAN_MAC, 100, 0x08, &f[..10])).is_none());
    assert_eq!(h.dropped(DropReason::VxlanMalformed), 1);
    // Bad UDP checksum.
    let mut bad = vxlan_frame(VTEP_WAN, VTEP_WAN_MAC, 100, 0x08, &f);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    assert!(h.rx(WAN, &bad).is_none());
    assert_eq!(h.dropped(DropReason::UdpMalformed), 1);
    assert!(h.dp.fdb().entries().iter().all(|e| e.mac != Mac(VM2_MAC)));
}

#[test]
fn vxlan_never_fragments_budget_1370_over_wireguard() {
    let mut cfg = config();
    cfg.segments[0].vteps.pop(); // only the VTEP behind the tunnel
    let mut h = Harness::with(cfg);
    h.learn_gateway();
    // 1500 − 50 VXLAN − 80 WireGuard = 1370 bytes of inner IP.
    let (p, _) = h.rx(LAN1, &inner_frame(VM2_MAC, VM1_MAC, 1370)).unwrap();
    assert_eq!(p, WAN);
    assert!(h.rx(LAN1, &inner_frame(VM2_MAC, VM1_MAC, 1371)).is_none());
    assert_eq!(h.dropped(DropReason::VxlanOversize), 1);
}

#[test]
fn vxlan_clamps_tcp_both_directions() {
    let mut cfg = config();
    cfg.segments[0].vteps.pop();
    let mut h = Harness::with(cfg);
    h.learn_gateway();
    let syn = eth(VM2_MAC, VM1_MAC, &tcp_syn(Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(10, 1, 1, 12), 64, 1460, false, 0));
    let (_, out) = h.rx(LAN1, &syn).unwrap();
    let inner = into_tunnel(&out);
    let hd = checked_ip(&inner);
    let vx = hd.payload.slice();
    let inner_eth = &vx[8..];
    checked(inner_eth);
    assert_eq!(mss_of(&inner_eth[14..]), Some(1330), "1420 − 50 − 40");
    assert_eq!(inner_eth[14 + 8], 64, "bridged, TTL untouched");
    // And the SYN-ACK coming back from the far VTEP.
    let synack = eth(VM1_MAC, VM2_MAC, &tcp_syn(Ipv4Addr::new(10, 1, 1, 12), Ipv4Addr::new(10, 1, 1, 11), 64, 8960, true, 0));
    let mut p = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
    p.extend_from_slice(&synack);
    let (port, out) = h.rx(WAN, &from_peer(1, &udp(VTEP_TUN, TUN_IP, 64, 50001, 4789, &p))).unwrap();
    assert_eq!(port, LAN1);
    checked(&out);
    assert_eq!(mss_of(&out[14..]), Some(1330));
}

#[test]
fn fdb_full_still_floods() {
    let mut h = Harness::new();
    h.learn_gateway();
    h.learn(WAN, VTEP_WAN, VTEP_WAN_MAC);
    for i in 0..300u16 {
        let src = [2, 0x77, 0, 0, (i >> 8) as u8, i as u8];
        h.rx(LAN1, &inner_frame([0xff; 6], src, 60));
    }
    assert_eq!(h.dp.fdb().entries().len(), 256);
    assert_eq!(h.dp.counters().fdb_full, 300 - 256);
    h.take_tx();
    // Unknown destination still reaches both VTEPs.
    assert!(h.rx(LAN1, &inner_frame(VM2_MAC, [2, 0x77, 1, 0, 0, 0], 60)).is_some());
    assert_eq!(h.take_tx().len(), 1);
    // Entries age out.
    h.poll(Timing::default().fdb_age_ms + 1);
    assert!(h.dp.fdb().entries().is_empty());
}

// ------------------------------------------------------ L2/L3 hostile input

#[test]
fn truncated_and_malformed_frames_are_counted_never_panic() {
    let mut h = Harness::new();
    let good = eth(LAN0_MAC, HOST_A_MAC, &tcp_syn(HOST_A, MOVED, 64, 1460, false, 10));
    for n in 0..good.len() {
        h.rx(LAN0, &good[..n]);
    }
    let c = h.dp.counters();
    assert_eq!(c.dropped(DropReason::EthernetTruncated), 14);
    assert!(c.dropped(DropReason::Ipv4Malformed) > 0);
    // Bad IP checksum.
    let mut bad = good.clone();
    bad[14 + 10] ^= 0x55;
    assert!(h.rx(LAN0, &bad).is_none());
    assert_eq!(h.dropped(DropReason::Ipv4BadChecksum), 1);
    // ICMP to the box goes to the services layer, which checks it.
    let mut e = eth(LAN0_MAC, HOST_A_MAC, &echo(HOST_A, LAN0_IP, 64));
    let n = e.len();
    e[n - 1] ^= 1;
    assert!(h.rx(LAN0, &e).is_none());
    assert_eq!(h.tx.local.len(), 1);
    // Unicast to someone else's MAC, multicast, other ethertypes, our own MAC as source.
    assert!(h.rx(LAN0, &eth(HOST_A_MAC, INTRUDER_MAC, &echo(HOST_A, LAN0_IP, 64))).is_none());
    assert!(h.rx(LAN0, &eth([0x01, 0, 0x5e, 0, 0, 1], INTRUDER_MAC, &echo(HOST_A, LAN0_IP, 64))).is_none());
    let mut v6 = eth(LAN0_MAC, HOST_A_MAC, &[0u8; 40]);
    v6[12] = 0x86;
    v6[13] = 0xdd;
    assert!(h.rx(LAN0, &v6).is_none());
    assert!(h.rx(LAN0, &eth(LAN0_MAC, LAN0_MAC, &echo(HOST_A, LAN0_IP, 64))).is_none());
    assert!(h.rx(PortId(9), &good).is_none());
    let c = h.dp.counters();
    assert_eq!(c.dropped(DropReason::NotOurMac), 1);
    assert_eq!(c.dropped(DropReason::Multicast), 1);
    assert_eq!(c.dropped(DropReason::UnsupportedEthertype), 1);
    assert_eq!(c.dropped(DropReason::OwnSourceMac), 1);
    assert_eq!(c.dropped(DropReason::UnknownPort), 1);
    // Spoofed source: one of our addresses, broadcast.
    assert!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &udp(LAN0_IP, MOVED, 64, 1, 2, b"x"))).is_none());
    assert!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &udp(Ipv4Addr::BROADCAST, MOVED, 64, 1, 2, b"x"))).is_none());
    assert_eq!(h.dropped(DropReason::Ipv4BadSource), 2);
    // Directed broadcast is not routed.
    assert!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, Ipv4Addr::new(10, 0, 0, 255), 64, 1, 2, b"x"))).is_none());
    assert_eq!(h.dropped(DropReason::Ipv4Broadcast), 1);
}

#[test]
fn every_frame_is_transmitted_parked_or_counted() {
    // Conservation over a mixed run: rx = in-place tx + drops + parked +
    // consumed-without-drop (ARP replies learned, tunnel control, floods).
    let mut h = Harness::new();
    h.learn_gateway();
    let frames = vec![
        (LAN0, eth(LAN0_MAC, HOST_A_MAC, &tcp_syn(HOST_A, MOVED, 64, 1460, false, 0))),
        (LAN0, eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, MOVED, 1, 1, 2, b"x"))),
        (WAN, from_peer(1, &udp(Ipv4Addr::new(10, 0, 0, 77), HOST_A, 64, 1, 2, b"x"))),
        (WAN, eth(WAN_MAC, GW_MAC, &echo(GW_IP, WAN_IP, 64))),
        (LAN0, vec![1, 2, 3]),
    ];
    let before = h.dp.counters().total_drops();
    let mut transmitted = 0;
    for (p, f) in &frames {
        if h.rx(*p, f).is_some() {
            transmitted += 1;
        }
    }
    let drops = h.dp.counters().total_drops() - before;
    assert_eq!(transmitted + drops, frames.len() as u64 + 1, "TTL expiry both drops and answers");
}

#[test]
fn bad_configs_are_refused() {
    let mut c = config();
    c.ports[0].role = PortRole::Wan;
    assert_eq!(Dataplane::new(c, Instant::ZERO).err(), Some(ConfigError::WanCount));
    let mut c = config();
    c.claims[0].side = ClaimSide::Remote { capture: Capture::ProxyArp, port: WAN, peer: PEER };
    assert_eq!(Dataplane::new(c, Instant::ZERO).err(), Some(ConfigError::ProxyArpOnWan(0)));
    let mut c = config();
    c.claims[0].side = ClaimSide::Remote { capture: Capture::ProxyArp, port: LAN0, peer: PeerId(9) };
    assert_eq!(Dataplane::new(c, Instant::ZERO).err(), Some(ConfigError::ClaimPeer(0)));
    let mut c = config();
    c.claims[1].address = MOVED;
    assert!(matches!(Dataplane::new(c, Instant::ZERO).err(), Some(ConfigError::DuplicateClaim(_))));
    let mut c = config();
    c.claims[1].address = LAN0_IP;
    assert_eq!(Dataplane::new(c, Instant::ZERO).err(), Some(ConfigError::ClaimOnOwnAddress(1)));
    let mut c = config();
    c.tunnel.address = None;
    assert_eq!(Dataplane::new(c, Instant::ZERO).err(), Some(ConfigError::SegmentNeedsTunnelAddress(0)));
    let mut c = config();
    c.segments[0].port = WAN;
    assert_eq!(Dataplane::new(c, Instant::ZERO).err(), Some(ConfigError::BadSegment(0)));
}

#[test]
fn buffers_without_headroom_still_work() {
    let mut h = Harness::new();
    h.learn_gateway();
    let f = eth(LAN0_MAC, HOST_A_MAC, &tcp_syn(HOST_A, MOVED, 64, 1460, false, 0));
    let mut storage = vec![0u8; 2048];
    storage[..f.len()].copy_from_slice(&f);
    let mut fb = FrameBuf::new(&mut storage, 0, f.len()).unwrap();
    let v = h.dp.process(Instant::ZERO, LAN0, &mut fb, &mut h.tun, &mut h.tx);
    assert_eq!(v, Verdict::Transmit(WAN));
    into_tunnel(fb.frame());
    // A buffer too small for the headers: counted, not a panic.
    let mut tiny = f.clone();
    let mut fb = FrameBuf::new(&mut tiny, 0, f.len()).unwrap();
    let v = h.dp.process(Instant::ZERO, LAN0, &mut fb, &mut h.tun, &mut h.tx);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(h.dropped(DropReason::NoHeadroom), 1);
}

#[test]
fn tunnel_holding_a_packet_is_counted_not_dropped() {
    let mut h = Harness::new();
    h.learn_gateway();
    h.tun.hold = true;
    assert!(h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, MOVED, 64, 1, 2, b"x"))).is_none());
    assert_eq!(h.dp.counters().tunnel_held, 1);
    assert_eq!(h.dp.counters().total_drops(), 0);
}

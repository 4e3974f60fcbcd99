//! Claim state across time and applies: a proxy-ARP claim probes before it
//! captures, a conflict clears only when the live host has been silent for
//! the hold time and a probe goes unanswered, an apply carries the runtime
//! state (claims, ARP cache, pending frames, FDB, counters) across, and a
//! full transmit ring is a counted drop.

mod common;

use std::net::Ipv4Addr;

use common::*;
use routerd_dataplane::*;

/// The shared world with probing on (3 probes, 200 ms apart) and a 5 s hold.
fn probing_config() -> Config {
    let mut c = config();
    c.timing.probe_count = 3;
    c.timing.probe_interval_ms = 200;
    c.claims[CLAIM_MOVED].conflict_hold_ms = 5_000;
    c
}

fn is_probe(f: &[u8]) -> bool {
    let (dst, op, sha, spa, _, tpa) = parse_arp(f);
    dst == [0xff; 6] && op == 1 && sha == LAN0_MAC && spa == Ipv4Addr::UNSPECIFIED && tpa == MOVED
}

fn is_garp(f: &[u8]) -> bool {
    let (_, op, sha, spa, _, tpa) = parse_arp(f);
    op == 1 && sha == LAN0_MAC && spa == MOVED && tpa == MOVED
}

fn events(h: &mut Harness) -> Vec<ClaimEventKind> {
    std::iter::from_fn(|| h.dp.take_event()).map(|e| e.kind).collect()
}

/// Who-has MOVED from host A: answered by the box?
fn answered(h: &mut Harness) -> bool {
    h.rx(LAN0, &arp(1, HOST_A_MAC, HOST_A, [0; 6], MOVED, [0xff; 6])).is_some()
}

/// The live host announces MOVED (gratuitous ARP).
fn announce(h: &mut Harness) {
    assert!(h.rx(LAN0, &arp(1, INTRUDER_MAC, MOVED, [0; 6], MOVED, [0xff; 6])).is_none());
}

/// Run the claim's probes to their verdict with nobody answering.
fn probe_unanswered(h: &mut Harness, from_ms: u64) -> Vec<(PortId, Vec<u8>)> {
    for k in 0..=3 {
        h.poll(from_ms + k * 200);
    }
    h.take_tx()
}

#[test]
fn a_new_claim_probes_before_it_captures() {
    let mut h = Harness::with(probing_config());
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::Probing);
    // Not answered while probing.
    assert!(!answered(&mut h));
    assert_eq!(h.dropped(DropReason::ArpClaimProbing), 1);
    // Three probes 200 ms apart, then 200 ms more before capturing.
    h.poll(0);
    h.poll(199);
    h.poll(200);
    h.poll(400);
    let probes = h.take_tx();
    assert_eq!(probes.len(), 3);
    assert!(probes.iter().all(|(p, f)| *p == LAN0 && is_probe(f)), "RFC 5227 probes on the capture port");
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::Probing);
    h.poll(600);
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::Active);
    let garp = h.take_tx();
    assert_eq!(garp.len(), 1, "the first gratuitous ARP goes out with the verdict");
    assert!(is_garp(&garp[0].1));
    assert!(answered(&mut h));
    let c = h.claim(CLAIM_MOVED).counters;
    assert_eq!((c.probes_sent, c.probes_answered, c.conflicts), (3, 0, 0));
    assert_eq!(
        events(&mut h),
        [ClaimEventKind::Probing { reason: ProbeReason::New }, ClaimEventKind::Captured { reason: ProbeReason::New, probes: 3 }]
    );
    // Claims that never answer ARP do not probe.
    assert_eq!(h.claim(CLAIM_SECONDARY).state, ClaimState::Active);
    assert_eq!(h.claim(CLAIM_HOST_A).state, ClaimState::Active);
}

#[test]
fn an_answered_probe_never_announces() {
    let mut h = Harness::with(probing_config());
    h.poll(0);
    h.take_tx();
    // The live host answers the probe (Linux replies to a DAD probe to the
    // prober's MAC, target address 0.0.0.0).
    assert!(h.rx(LAN0, &arp(2, INTRUDER_MAC, MOVED, LAN0_MAC, Ipv4Addr::UNSPECIFIED, LAN0_MAC)).is_none());
    let c = h.claim(CLAIM_MOVED);
    assert_eq!(c.state, ClaimState::InConflict);
    assert_eq!(c.conflict_mac, Some(INTRUDER_MAC));
    assert_eq!((c.counters.probes_answered, c.counters.conflicts), (1, 1));
    for ms in (200..4000).step_by(100) {
        h.poll(ms);
    }
    assert!(h.take_tx().is_empty(), "no more probes, never a gratuitous ARP");
    assert!(!answered(&mut h));
    assert_eq!(events(&mut h)[1], ClaimEventKind::InUse { mac: Mac(INTRUDER_MAC), evidence: Evidence::ArpReply, reason: ProbeReason::New });
}

#[test]
fn another_host_probing_for_the_address_is_an_answer_while_probing() {
    let mut h = Harness::with(probing_config());
    h.poll(0);
    let probe = arp(1, INTRUDER_MAC, Ipv4Addr::UNSPECIFIED, [0; 6], MOVED, [0xff; 6]);
    assert!(h.rx(LAN0, &probe).is_none());
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::InConflict);
}

#[test]
fn a_conflict_clears_only_after_the_hold_and_an_unanswered_probe() {
    let mut h = Harness::with(probing_config());
    probe_unanswered(&mut h, 0);
    events(&mut h);
    h.now = Instant::from_millis(1_000);
    announce(&mut h);
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::InConflict);
    assert_eq!(h.claim(CLAIM_MOVED).heard, Some(Instant::from_millis(1_000)));
    assert_eq!(h.claim(CLAIM_MOVED).next_action, Some(Instant::from_millis(6_000)));
    // The host keeps talking at 4 s (asks for someone): the hold restarts.
    h.now = Instant::from_millis(4_000);
    assert!(h.rx(LAN0, &arp(1, INTRUDER_MAC, MOVED, [0; 6], HOST_A, [0xff; 6])).is_none());
    h.poll(6_000);
    assert!(h.take_tx().is_empty(), "heard 2 s ago: no probe yet");
    // Silent for 5 s: probes; the host is still there and answers.
    h.poll(9_000);
    let sent = h.take_tx();
    assert!(sent.len() == 1 && is_probe(&sent[0].1));
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::Probing);
    assert!(!answered(&mut h), "no answers while probing a conflict");
    h.now = Instant::from_millis(9_010);
    assert!(h.rx(LAN0, &arp(2, INTRUDER_MAC, MOVED, LAN0_MAC, Ipv4Addr::UNSPECIFIED, LAN0_MAC)).is_none());
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::InConflict);
    assert_eq!(h.claim(CLAIM_MOVED).counters.conflicts, 1, "the same conflict, not a new one");
    // The host leaves: after another hold, probes go unanswered → capture.
    let sent = probe_unanswered(&mut h, 14_010);
    assert_eq!(sent.iter().filter(|(_, f)| is_probe(f)).count(), 3);
    assert_eq!(sent.iter().filter(|(_, f)| is_garp(f)).count(), 1);
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::Active);
    assert!(answered(&mut h));
    let ev = events(&mut h);
    assert!(matches!(ev[0], ClaimEventKind::Conflict { mac: Mac(INTRUDER_MAC), port: LAN0, evidence: Evidence::ArpRequest }));
    assert!(matches!(ev[1], ClaimEventKind::Probing { reason: ProbeReason::HostSilent { silent_ms: 5_000 } }));
    assert!(matches!(ev[2], ClaimEventKind::InUse { .. }));
    assert!(matches!(ev[4], ClaimEventKind::Captured { reason: ProbeReason::HostSilent { .. }, probes: 3 }));
}

#[test]
fn ipv4_from_the_address_keeps_a_conflict_alive() {
    let mut h = Harness::with(probing_config());
    probe_unanswered(&mut h, 0);
    h.now = Instant::from_millis(1_000);
    announce(&mut h);
    h.learn_gateway();
    // The live host sends a packet through the box at 5 s.
    h.now = Instant::from_millis(5_000);
    let ip = udp(MOVED, Ipv4Addr::new(8, 8, 8, 8), 64, 1000, 53, b"q");
    h.rx(LAN0, &eth(LAN0_MAC, INTRUDER_MAC, &ip));
    assert_eq!(h.claim(CLAIM_MOVED).heard, Some(Instant::from_millis(5_000)));
    h.poll(6_000);
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::InConflict);
}

#[test]
fn the_operator_can_ask_for_the_probe_early_but_never_skip_it() {
    let mut h = Harness::with(probing_config());
    assert_eq!(h.dp.probe_claim(Instant::ZERO, CLAIM_MOVED), Err(ProbeRefused::NotInConflict(ClaimState::Probing)));
    assert_eq!(h.dp.probe_claim(Instant::ZERO, CLAIM_SECONDARY), Err(ProbeRefused::NotProxyArp));
    assert_eq!(h.dp.probe_claim(Instant::ZERO, 99), Err(ProbeRefused::Unknown));
    probe_unanswered(&mut h, 0);
    h.now = Instant::from_millis(1_000);
    announce(&mut h);
    events(&mut h);
    // Still there: the probe is answered and the conflict stays.
    assert_eq!(h.dp.probe_claim(Instant::from_millis(1_100), CLAIM_MOVED), Ok(()));
    h.poll(1_100);
    h.now = Instant::from_millis(1_150);
    assert!(h.rx(LAN0, &arp(2, INTRUDER_MAC, MOVED, LAN0_MAC, Ipv4Addr::UNSPECIFIED, LAN0_MAC)).is_none());
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::InConflict);
    // Gone: the next one goes unanswered and the claim captures.
    assert_eq!(h.dp.probe_claim(Instant::from_millis(2_000), CLAIM_MOVED), Ok(()));
    probe_unanswered(&mut h, 2_000);
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::Active);
    let ev = events(&mut h);
    assert!(ev.contains(&ClaimEventKind::Probing { reason: ProbeReason::Operator }));
    assert!(ev.contains(&ClaimEventKind::Captured { reason: ProbeReason::Operator, probes: 3 }));
}

// --------------------------------------------------------------- applies

/// Apply `cfg` the way the control plane does: build beside, carry, swap.
fn apply(h: &mut Harness, cfg: Config) {
    let mut next = Box::new(Dataplane::new(cfg, h.now).unwrap());
    next.carry_from(&h.dp);
    h.dp = next;
}

#[test]
fn an_unrelated_apply_keeps_a_conflict_and_sends_nothing_for_it() {
    let mut h = Harness::with(probing_config());
    probe_unanswered(&mut h, 0);
    h.now = Instant::from_millis(1_000);
    announce(&mut h);
    events(&mut h);
    // Remove another claim (the secondary one) and add a new one.
    let mut cfg = probing_config();
    cfg.claims.remove(CLAIM_SECONDARY);
    cfg.claims
        .push(ClaimConfig::new(Ipv4Addr::new(10, 0, 0, 33), ClaimSide::Remote { capture: Capture::ProxyArp, port: LAN0, peer: PEER }))
        .unwrap();
    apply(&mut h, cfg);
    let c = h.claim(CLAIM_MOVED);
    assert_eq!(c.state, ClaimState::InConflict);
    assert_eq!(c.conflict_mac, Some(INTRUDER_MAC));
    assert_eq!(c.heard, Some(Instant::from_millis(1_000)));
    assert_eq!(c.counters.conflicts, 1);
    assert!(!answered(&mut h), "the live host's address is not answered after the apply");
    h.poll(1_000);
    let sent = h.take_tx();
    assert!(sent.iter().all(|(_, f)| parse_arp(f).5 != MOVED), "nothing sent for the live host's address");
    // The new claim probes for itself.
    assert_eq!(h.claim(2).state, ClaimState::Probing);
    // Same claim, capture moved to another port: starts over (probing),
    // counters kept.
    let mut cfg = probing_config();
    cfg.claims[CLAIM_MOVED].side = ClaimSide::Remote { capture: Capture::ProxyArp, port: LAN1, peer: PEER };
    apply(&mut h, cfg);
    assert_eq!(h.claim(CLAIM_MOVED).state, ClaimState::Probing);
    assert_eq!(h.claim(CLAIM_MOVED).counters.conflicts, 1);
}

#[test]
fn a_removed_and_added_claim_starts_fresh() {
    let mut h = Harness::with(probing_config());
    probe_unanswered(&mut h, 0);
    announce(&mut h);
    let mut without = probing_config();
    without.claims.remove(CLAIM_MOVED);
    apply(&mut h, without);
    apply(&mut h, probing_config());
    let c = h.claim(CLAIM_MOVED);
    assert_eq!(c.state, ClaimState::Probing);
    assert_eq!(c.counters.conflicts, 0);
}

#[test]
fn an_apply_keeps_the_arp_cache_pending_frames_fdb_and_counters() {
    let mut h = Harness::new();
    h.learn_gateway();
    // A frame parked for an unresolved LAN host (10.0.0.7), from the tunnel.
    let inner = udp(Ipv4Addr::new(10, 2, 0, 9), Ipv4Addr::new(10, 0, 0, 7), 64, 1, 2, b"x");
    h.rx(WAN, &from_peer(PEER.0, &inner));
    assert_eq!(h.dp.pending_frames(), 1);
    h.take_tx();
    // A VXLAN-learned MAC behind the WAN VTEP.
    let inner_eth = eth(VM1_MAC, VM2_MAC, &udp(Ipv4Addr::new(192, 168, 50, 2), Ipv4Addr::new(192, 168, 50, 1), 64, 1, 2, b"v"));
    h.rx(WAN, &vxlan_frame(VTEP_WAN, VTEP_WAN_MAC, 100, 0x08, &inner_eth));
    let fdb_before = h.dp.fdb().entries().len();
    assert!(fdb_before > 0);
    let counters_before = h.dp.counters().clone();
    let neighbors_before = h.dp.neighbors().entries().to_vec();

    // Unrelated change: a claim's MSS and one claim fewer; ports renumbered
    // (LAN1 moved to the front) — identities are MACs, not positions.
    let mut cfg = config();
    cfg.claims[CLAIM_HOST_A].mss = Some(1300);
    cfg.claims.remove(CLAIM_SECONDARY);
    let lan1 = cfg.ports.remove(2);
    cfg.ports.insert(0, lan1).unwrap();
    let remap = |p: PortId| match p.0 {
        0 => PortId(1),
        1 => PortId(2),
        _ => PortId(0),
    };
    for c in cfg.claims.iter_mut() {
        c.side = match c.side {
            ClaimSide::Remote { capture, port, peer } => ClaimSide::Remote { capture, port: remap(port), peer },
            ClaimSide::Local { port } => ClaimSide::Local { port: remap(port) },
        };
    }
    for s in cfg.segments.iter_mut() {
        s.port = remap(s.port);
    }
    apply(&mut h, cfg);

    assert_eq!(h.dp.counters().drops, counters_before.drops);
    assert_eq!(h.dp.counters().forwarded, counters_before.forwarded);
    assert_eq!(h.dp.counters().rx_frames[remap(WAN).index()], counters_before.rx_frames[WAN.index()]);
    assert_eq!(h.dp.fdb().entries().len(), fdb_before);
    assert_eq!(h.dp.neighbors().entries().len(), neighbors_before.len());
    assert_eq!(h.dp.pending_frames(), 1);
    // The gateway is still known: a packet into the tunnel needs no ARP.
    let out = h.rx(remap(LAN0), &eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, MOVED, 64, 1, 2, b"y")));
    let (port, frame) = out.expect("sealed for the peer at once");
    assert_eq!(port, remap(WAN));
    assert_eq!(&frame[..6], &GW_MAC, "straight to the known gateway, no ARP request");
    // The parked frame is released when the LAN host answers, on its new port number.
    h.rx(remap(LAN0), &arp(2, [0x02, 0x77, 0, 0, 0, 7], Ipv4Addr::new(10, 0, 0, 7), LAN0_MAC, LAN0_IP, LAN0_MAC));
    let released = h.take_tx();
    assert!(released.iter().any(|(p, f)| *p == remap(LAN0) && f[..6] == [0x02, 0x77, 0, 0, 0, 7]));
}

#[test]
fn frames_waiting_on_a_removed_port_are_counted() {
    let mut h = Harness::new();
    let inner = udp(Ipv4Addr::new(10, 2, 0, 9), Ipv4Addr::new(10, 0, 0, 7), 64, 1, 2, b"x");
    h.rx(WAN, &from_peer(PEER.0, &inner));
    assert_eq!(h.dp.pending_frames(), 1);
    let mut cfg = config();
    cfg.ports[LAN0.index()].mac = Mac([0x02, 0, 0, 0, 0, 0x42]);
    apply(&mut h, cfg);
    assert_eq!(h.dp.pending_frames(), 0);
    assert_eq!(h.dropped(DropReason::PortRemoved), 1);
}

// ------------------------------------------------------------- transmit

#[test]
fn a_full_transmit_ring_is_a_counted_drop_per_port() {
    let mut h = Harness::new();
    h.learn_gateway();
    h.take_tx();
    h.tx.refuse = true;
    let frame = eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, MOVED, 64, 1, 2, b"y"));
    let mut storage = vec![0u8; BUF_SIZE];
    storage[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
    let mut fb = FrameBuf::new(&mut storage, HEADROOM, frame.len()).unwrap();
    let v = h.dp.process_and_transmit(h.now, LAN0, &mut fb, &mut h.tun, &mut h.tx);
    assert_eq!(v, Verdict::Transmit(WAN));
    assert_eq!(h.dropped(DropReason::TxFull), 1);
    assert_eq!(h.dp.counters().tx_full[WAN.index()], 1);
    assert_eq!(h.dp.counters().tx_full[LAN0.index()], 0);
    // Extra frames (here: the gratuitous ARPs) are counted the same way.
    h.poll(0);
    assert_eq!(h.dp.counters().tx_full[LAN0.index()], 1);
    assert_eq!(h.dropped(DropReason::TxFull), 2);
}

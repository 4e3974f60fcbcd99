//! Fuzzing the BGP codec and session. Valid messages built with our own
//! encoder (OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH, UPDATEs with type
//! 2/3/5 announcements, withdrawals and End-of-RIB) are mutated (bit flips,
//! truncation, extension, splices of random bytes, length fields set to
//! hostile values; the header's length is repaired most of the time so the
//! body parsers are reached) and fed both to the raw decoders and to a
//! session in Established state. Oracle: no panic, no hang, and after every
//! input the session is either still Established or has sent a
//! NOTIFICATION with a valid code (1..=7) and gone down. A short run on every
//! `cargo test`; `ROUTERD_FUZZ_SECS=600 cargo test --release -p routerd-bgp
//! --test fuzz` for a long one.
//!
//! Also here: the RFC 7606 cases end to end (a malformed UPDATE is a
//! withdrawal and the session stays up; a broken header is NOTIFICATION 1).

use routerd_bgp::evpn::{ImetRoute, MacIpRoute, PrefixRoute, TUNNEL_VXLAN};
use routerd_bgp::update::{decode_update, encode_evpn_announce, encode_evpn_withdraw, OutAttrs};
use routerd_bgp::wire::{self, Writer, HEADER_LEN};
use routerd_bgp::{
    Config, Event, EvpnRoute, ExtCommunity, Instant, LocalRoutes, Mac, PeerId, PmsiTunnel, Rd, Rib, RouteTarget, Session, State,
};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant as Clock};

const ASN: u32 = 65000;
const OURS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// xorshift64*: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    // The header (19 bytes) is kept; the body is mutated.
    let fixed = HEADER_LEN.min(seed.len());
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        match rng.below(7) {
            0 if m.len() > fixed => {
                let i = fixed + rng.below(m.len() - fixed);
                m[i] ^= 1 << rng.below(8);
            }
            1 if m.len() > fixed => {
                let i = fixed + rng.below(m.len() - fixed);
                m[i] = rng.next() as u8;
            }
            2 => m.truncate(fixed + rng.below(m.len().saturating_sub(fixed) + 1)),
            3 => m.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            4 if m.len() > fixed + 2 => {
                // A length field set to something hostile.
                let i = fixed + rng.below(m.len() - fixed - 1);
                let v = match rng.below(4) {
                    0 => [0xff, 0xff],
                    1 => [0, 0],
                    2 => [0, rng.next() as u8],
                    _ => [rng.next() as u8, rng.next() as u8],
                };
                m[i..i + 2].copy_from_slice(&v);
            }
            5 if m.len() > fixed => {
                // A one-byte length or count set to a boundary value.
                let i = fixed + rng.below(m.len() - fixed);
                m[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            _ => {
                let i = rng.below(m.len() + 1).max(fixed.min(m.len()));
                let junk: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                m.splice(i..i, junk);
            }
        }
    }
    m.truncate(wire::MAX_MESSAGE_LEN);
    // Mostly repair the header length so the body is what gets tested.
    if rng.below(4) != 0 && m.len() >= HEADER_LEN {
        let l = m.len() as u16;
        m[16..18].copy_from_slice(&l.to_be_bytes());
    }
    m
}

fn message(f: impl FnOnce(&mut Writer<'_>) -> Result<(), wire::Error>) -> Vec<u8> {
    let mut buf = vec![0u8; wire::MAX_MESSAGE_LEN];
    let mut w = Writer::new(&mut buf);
    f(&mut w).expect("seed encodes");
    let n = w.len();
    buf.truncate(n);
    buf
}

fn nlri(routes: &[EvpnRoute]) -> Vec<u8> {
    let mut buf = vec![0u8; 4000];
    let mut w = Writer::new(&mut buf);
    for r in routes {
        r.encode(&mut w).expect("route encodes");
    }
    let n = w.len();
    buf.truncate(n);
    buf
}

fn rd() -> Rd {
    Rd::ipv4(PEER, 2)
}

fn type2(i: u8) -> EvpnRoute {
    EvpnRoute::MacIp(MacIpRoute {
        rd: rd(),
        esi: [0; 10],
        eth_tag: 0,
        mac: Mac([2, 0, 0, 0, 9, i]),
        ip: if i.is_multiple_of(2) { Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i))) } else { None },
        label1: 100,
        label2: if i.is_multiple_of(3) { Some(5000) } else { None },
    })
}

fn type3() -> EvpnRoute {
    EvpnRoute::Imet(ImetRoute { rd: rd(), eth_tag: 0, originator: IpAddr::V4(PEER) })
}

fn type5() -> EvpnRoute {
    EvpnRoute::IpPrefix(PrefixRoute {
        rd: rd(),
        esi: [0; 10],
        eth_tag: 0,
        prefix: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)),
        prefix_len: 24,
        gateway: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        label: 5000,
    })
}

const EXT: [ExtCommunity; 4] = [
    ExtCommunity::RouteTarget(RouteTarget::As2 { asn: 65000, value: 100 }),
    ExtCommunity::Encapsulation { tunnel_type: TUNNEL_VXLAN },
    ExtCommunity::MacMobility { sticky: false, seq: 3 },
    ExtCommunity::RouterMac(Mac([2, 1, 1, 1, 1, 1])),
];

fn announce(routes: &[EvpnRoute], pmsi: bool) -> Vec<u8> {
    let attrs =
        OutAttrs { next_hop: PEER, local_pref: 100, ext_communities: &EXT, pmsi: pmsi.then(|| PmsiTunnel::ingress_replication(100, PEER)) };
    let n = nlri(routes);
    message(|w| encode_evpn_announce(w, &attrs, &n))
}

/// Every seed: the messages a peer sends once Established.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        announce(&[type2(1), type2(2), type2(3), type2(6)], false),
        announce(&[type3()], true),
        announce(&[type5()], false),
        message(|w| encode_evpn_withdraw(w, &nlri(&[type2(1), type3(), type5()]))),
        message(|w| encode_evpn_withdraw(w, &[])),
        message(wire::encode_keepalive),
        message(|w| wire::encode_notification(w, 6, 2, b"bye")),
        message(|w| wire::encode_route_refresh(w, 25, 70)),
        message(|w| wire::encode_open(w, ASN, 9, PEER)),
    ]
}

/// Our session and the peer's, Established with each other; returns them
/// with the peer's bytes drained.
fn established() -> (Box<Session>, Box<Session>) {
    let mut ours = Box::new(Session::new(Config::ibgp(ASN, OURS)));
    let mut cfg = Config::ibgp(ASN, PEER);
    cfg.passive = true;
    let mut peer = Box::new(Session::new(cfg));
    ours.start(Instant::ZERO);
    peer.start(Instant::ZERO);
    ours.connected(Instant::ZERO);
    peer.connected(Instant::ZERO);
    for _ in 0..4 {
        let a = ours.transmit().to_vec();
        ours.consume(a.len());
        let b = peer.transmit().to_vec();
        peer.consume(b.len());
        peer.on_bytes(Instant::ZERO, &a, &mut ());
        ours.on_bytes(Instant::ZERO, &b, &mut ());
    }
    assert_eq!(ours.state(), State::Established);
    while ours.next_event().is_some() {}
    (ours, peer)
}

/// The last message in `t` (a sequence of whole messages we sent), if it
/// is a NOTIFICATION: (code, subcode, data).
fn last_notification(t: &[u8]) -> Option<(u8, u8, Vec<u8>)> {
    let mut rest = t;
    let mut last = None;
    while let Ok(Some(h)) = wire::decode_header(rest) {
        let m = rest.get(..h.len)?;
        last = Some((h.ty, m));
        rest = &rest[h.len..];
    }
    assert!(rest.is_empty(), "we sent a broken message stream: {t:?}");
    match last {
        Some((wire::msg::NOTIFICATION, m)) => Some((m[19], m[20], m[21..].to_vec())),
        _ => None,
    }
}

/// Check the oracle after one input: Established, or down with a NOTIFICATION
/// of a valid code as the last thing sent (or the peer's own NOTIFICATION).
fn check(ours: &mut Session, seed: u64, case: usize) -> bool {
    if ours.state() == State::Established {
        let t = ours.transmit().len();
        ours.consume(t);
        return true;
    }
    let events: Vec<Event> = std::iter::from_fn(|| ours.next_event()).collect();
    assert!(events.contains(&Event::Disconnect), "seed {seed} case {case}: left Established without Disconnect: {events:?}");
    if ours.counters().notifications_received == 0 {
        let n = last_notification(ours.transmit());
        let Some((code, _, _)) = n else { panic!("seed {seed} case {case}: went down without sending a NOTIFICATION") };
        assert!((1..=7).contains(&code), "seed {seed} case {case}: NOTIFICATION code {code}");
    }
    false
}

/// `n` cases against one session (re-established when a case takes it down).
fn session_cases(seed: u64, n: usize) -> (usize, usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let seeds = seeds();
    let (mut ours, _peer) = established();
    let mut rib = Box::new(Rib::new(ASN));
    let local = Box::new(LocalRoutes::new(ASN, OURS, OURS));
    let mut now = 0u64;
    let (mut kept, mut down) = (0, 0);
    for case in 0..n {
        let s = &seeds[rng.below(seeds.len())];
        // One case in eight is a valid message (it keeps routes flowing into the RIB).
        let m = if rng.below(8) == 0 { s.clone() } else { mutate(&mut rng, s) };
        // Sometimes in pieces, to exercise reassembly.
        if rng.below(4) == 0 {
            let cut = rng.below(m.len() + 1);
            ours.on_bytes(Instant(now), &m[..cut], &mut rib.sink(PeerId(0)));
            ours.on_bytes(Instant(now), &m[cut..], &mut rib.sink(PeerId(0)));
        } else {
            ours.on_bytes(Instant(now), &m, &mut rib.sink(PeerId(0)));
        }
        now += rng.below(2_000) as u64;
        ours.poll(Instant(now));
        ours.advertise(&local);
        let _ = rib.flood_list(100).count();
        let _ = rib.remote_macs(100).count();
        if check(&mut ours, seed, case) {
            kept += 1;
        } else {
            down += 1;
            rib.withdraw_peer(PeerId(0));
            assert!(rib.is_empty(), "seed {seed} case {case}: routes left after withdraw_peer");
            (ours, _) = established();
            now = 0;
        }
    }
    (kept, down)
}

/// The raw decoders on their own, with both AS widths.
fn decoder_cases(seed: u64, n: usize) -> usize {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let seeds = seeds();
    let mut routes = 0;
    for _ in 0..n {
        let pick = rng.below(seeds.len());
        let m = mutate(&mut rng, &seeds[pick]);
        let Ok(Some(h)) = wire::decode_header(&m) else { continue };
        let body = m.get(HEADER_LEN..h.len.min(m.len())).unwrap_or(&[]);
        match h.ty {
            wire::msg::OPEN => drop(wire::decode_open(body)),
            wire::msg::NOTIFICATION => drop(wire::decode_notification(body)),
            wire::msg::ROUTE_REFRESH => drop(wire::decode_route_refresh(body)),
            wire::msg::UPDATE => {
                for as4 in [true, false] {
                    if let Ok(u) = decode_update(body, as4) {
                        if let Some(mp) = u.attrs.mp_reach {
                            routes += mp.routes().filter(|r| r.is_ok()).count();
                        }
                        if let Some(mp) = u.attrs.mp_unreach {
                            routes += mp.routes().filter(|r| r.is_ok()).count();
                        }
                        let _ = u.attrs.ext_communities.iter().count();
                        let _ = u.attrs.as_path.map(|p| p.len());
                    }
                }
            }
            _ => {}
        }
    }
    routes
}

/// Seeds of the short run (a few seconds in a debug build).
const SHORT_SEEDS: u64 = 12;

fn budget() -> Option<Duration> {
    std::env::var("ROUTERD_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).map(Duration::from_secs)
}

#[test]
fn session_survives_mutated_messages() {
    let until = budget().map(|b| Clock::now() + b);
    let mut seed = 1;
    loop {
        let (kept, down) = session_cases(seed, 4_000);
        eprintln!("session seed {seed}: {kept} kept the session, {down} reset it");
        assert!(kept > 100 && down > 100, "seed {seed}: the harness misses a path ({kept} kept, {down} down)");
        seed += 1;
        if until.map_or(seed > SHORT_SEEDS, |u| Clock::now() >= u) {
            break;
        }
    }
}

#[test]
fn decoders_survive_mutated_messages() {
    let until = budget().map(|b| Clock::now() + b);
    let mut seed = 1;
    loop {
        let routes = decoder_cases(seed, 30_000);
        eprintln!("decoder seed {seed}: {routes} routes parsed");
        assert!(routes > 0, "seed {seed}: no route ever parsed; the mutations are too destructive");
        seed += 1;
        if until.map_or(seed > SHORT_SEEDS, |u| Clock::now() >= u) {
            break;
        }
    }
}

/// RFC 7606 end to end: a malformed attribute makes the UPDATE a withdrawal
/// and the session stays up.
#[test]
fn malformed_update_is_treated_as_withdraw() {
    let (mut ours, _peer) = established();
    let mut rib = Box::new(Rib::new(ASN));
    let good = announce(&[type2(1)], false);
    ours.on_bytes(Instant::ZERO, &good, &mut rib.sink(PeerId(0)));
    assert_eq!(rib.remote_macs(100).count(), 1);
    // The same route with LOCAL_PREF of length 3 (and the UPDATE's lengths fixed up).
    let mut bad = good.clone();
    let lp = bad.windows(3).position(|w| w == [0x40, 5, 4]).expect("LOCAL_PREF in the seed");
    bad[lp + 2] = 3;
    bad.remove(lp + 3);
    let len = bad.len() as u16;
    bad[16..18].copy_from_slice(&len.to_be_bytes());
    let alen = u16::from_be_bytes([bad[21], bad[22]]) - 1;
    bad[21..23].copy_from_slice(&alen.to_be_bytes());
    ours.on_bytes(Instant::ZERO, &bad, &mut rib.sink(PeerId(0)));
    assert_eq!(ours.state(), State::Established);
    assert_eq!(ours.counters().treat_as_withdraw, 1);
    assert_eq!(rib.remote_macs(100).count(), 0, "the route was not withdrawn");
    assert!(ours.transmit().is_empty(), "something was sent: {:?}", ours.transmit());

    // An unparseable NLRI after a good one: the good one is withdrawn too.
    ours.on_bytes(Instant::ZERO, &good, &mut rib.sink(PeerId(0)));
    assert_eq!(rib.remote_macs(100).count(), 1);
    let mut two = announce(&[type2(1), type2(5)], false);
    // The last NLRI is 35 bytes (type, length, 33); its MAC length byte is at offset 24.
    let last_mac_len = two.len() - 35 + 24;
    assert_eq!(two[last_mac_len], 48);
    two[last_mac_len] = 40; // the second NLRI's MAC length: 48 → 40
    ours.on_bytes(Instant::ZERO, &two, &mut rib.sink(PeerId(0)));
    assert_eq!(ours.state(), State::Established);
    assert_eq!(rib.remote_macs(100).count(), 0);
}

/// A broken header is NOTIFICATION 1/x and the session goes down.
#[test]
fn broken_header_resets_with_code_1() {
    let cases: [(usize, u8, u8, &[u8]); 4] = [(0, 0, 1, &[]), (16, 0x20, 2, &[0x20, 19]), (17, 18, 2, &[0, 18]), (18, 9, 3, &[9])];
    for (at, value, sub, data) in cases {
        let (mut ours, _peer) = established();
        let mut m = message(wire::encode_keepalive);
        m[at] = value;
        ours.on_bytes(Instant::ZERO, &m, &mut ());
        assert_eq!(ours.state(), State::Idle);
        assert_eq!(last_notification(ours.transmit()), Some((1, sub, data.to_vec())), "byte {at} set to {value}");
    }
}

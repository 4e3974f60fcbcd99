//! Measurements (printed, not asserted beyond correctness): type-2 routes
//! decoded and installed per second through a Session in Established state
//! into the Rib, withdrawals per second, the remote-MAC query, and the
//! memory the tables take per route. Run with `--release --nocapture` for
//! the figures that matter; a debug `cargo test` only checks it works.

use routerd_bgp::evpn::{MacIpRoute, TUNNEL_VXLAN};
use routerd_bgp::rib::{ImetEntry, ImetKey, MacEntry, MacKey, MAX_REMOTE_IMETS, MAX_REMOTE_MACS, MAX_REMOTE_PREFIXES};
use routerd_bgp::update::{announce_overhead, encode_evpn_announce, encode_evpn_withdraw, OutAttrs, WITHDRAW_OVERHEAD};
use routerd_bgp::wire::{Writer, MAX_MESSAGE_LEN};
use routerd_bgp::{Config, EvpnRoute, ExtCommunity, Instant, LocalRoutes, Mac, PeerId, Rd, Rib, RouteTarget, Session, State};
use std::net::Ipv4Addr;
use std::time::Instant as Clock;

const ASN: u32 = 65000;
const MACS: usize = 4000;
const ROUNDS: u32 = 3;

fn route(i: usize) -> EvpnRoute {
    let [_, _, a, b] = (i as u32).to_be_bytes();
    EvpnRoute::MacIp(MacIpRoute {
        rd: Rd::ipv4(Ipv4Addr::new(10, 99, 0, 2), 2),
        esi: [0; 10],
        eth_tag: 0,
        mac: Mac([2, 0x10, 0, 0, a, b]),
        ip: None,
        label1: 100,
        label2: None,
    })
}

/// UPDATEs announcing routes `0..MACS` with MAC-mobility sequence `seq`
/// (or withdrawing them), packed as full as 4096 bytes allow.
fn updates(seq: Option<u32>) -> (Vec<u8>, usize) {
    let ext = [
        ExtCommunity::RouteTarget(RouteTarget::auto(ASN, 100)),
        ExtCommunity::Encapsulation { tunnel_type: TUNNEL_VXLAN },
        ExtCommunity::MacMobility { sticky: false, seq: seq.unwrap_or(0) },
    ];
    let attrs = OutAttrs { next_hop: Ipv4Addr::new(10, 99, 0, 2), local_pref: 100, ext_communities: &ext, pmsi: None };
    let budget = MAX_MESSAGE_LEN - if seq.is_some() { announce_overhead(&attrs) } else { WITHDRAW_OVERHEAD };
    let mut out = Vec::new();
    let mut messages = 0;
    let mut i = 0;
    while i < MACS {
        let mut nlri = vec![0u8; budget];
        let mut w = Writer::new(&mut nlri);
        while i < MACS {
            let mark = w.len();
            if route(i).encode(&mut w).is_err() {
                w.truncate(mark);
                break;
            }
            i += 1;
        }
        let n = w.len();
        let mut msg = vec![0u8; MAX_MESSAGE_LEN];
        let mut mw = Writer::new(&mut msg);
        match seq {
            Some(_) => encode_evpn_announce(&mut mw, &attrs, &nlri[..n]).unwrap(),
            None => encode_evpn_withdraw(&mut mw, &nlri[..n]).unwrap(),
        }
        let len = mw.len();
        out.extend_from_slice(&msg[..len]);
        messages += 1;
    }
    (out, messages)
}

fn established() -> Box<Session> {
    let mut ours = Box::new(Session::new(Config::ibgp(ASN, Ipv4Addr::new(10, 99, 0, 1))));
    let mut peer = Box::new(Session::new(Config { passive: true, ..Config::ibgp(ASN, Ipv4Addr::new(10, 99, 0, 2)) }));
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
    ours
}

/// Feed `stream` in 64 KiB reads, as from a socket.
fn feed(s: &mut Session, rib: &mut Rib, stream: &[u8]) -> f64 {
    let t = Clock::now();
    for chunk in stream.chunks(65536) {
        s.on_bytes(Instant::ZERO, chunk, &mut rib.sink(PeerId(0)));
    }
    t.elapsed().as_secs_f64()
}

#[test]
fn routes_per_second_and_memory_per_route() {
    let mut s = established();
    let mut rib = Box::new(Rib::new(ASN));
    let mut secs = 0.0;
    let mut bytes = 0;
    let mut msgs = 0;
    for round in 1..=ROUNDS {
        let (stream, m) = updates(Some(round));
        bytes += stream.len();
        msgs += m;
        secs += feed(&mut s, &mut rib, &stream);
    }
    let installs = MACS * ROUNDS as usize;
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.counters().routes_announced, installs as u64);
    assert_eq!(rib.mac_routes(), MACS, "re-announcements must replace (implicit withdraw)");
    assert_eq!(rib.remote_mac(100, Mac([2, 0x10, 0, 0, 0, 7])).map(|m| m.seq), Some(ROUNDS));
    println!(
        "install: {installs} type-2 routes in {msgs} UPDATEs ({bytes} bytes, {} routes/UPDATE) in {:.1} ms: {:.0} routes/s",
        installs / msgs,
        secs * 1e3,
        installs as f64 / secs
    );

    let t = Clock::now();
    let n = rib.remote_macs(100).count();
    println!("query: remote_macs(VNI 100) over {n} MACs in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    assert_eq!(n, MACS);

    let (stream, _) = updates(None);
    let secs = feed(&mut s, &mut rib, &stream);
    assert!(rib.is_empty());
    println!("withdraw: {MACS} type-2 routes in {:.1} ms: {:.0} routes/s", secs * 1e3, MACS as f64 / secs);

    let per_mac = std::mem::size_of::<MacKey>() + std::mem::size_of::<MacEntry>();
    let per_imet = std::mem::size_of::<ImetKey>() + std::mem::size_of::<ImetEntry>();
    let rib_bytes = std::mem::size_of::<Rib>();
    let slots = MAX_REMOTE_MACS + MAX_REMOTE_IMETS + MAX_REMOTE_PREFIXES;
    println!(
        "memory: type-2 key+entry {per_mac} B, type-3 key+entry {per_imet} B; Rib {rib_bytes} B for {slots} routes \
         = {} B per route slot incl. index; Session {} B; LocalRoutes {} B",
        rib_bytes / slots,
        std::mem::size_of::<Session>(),
        std::mem::size_of::<LocalRoutes>()
    );
}

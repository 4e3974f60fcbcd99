//! Stable-toolchain fuzzing of the frame entry point.
//!
//! A seeded PRNG picks a valid frame from a corpus covering every pipeline
//! path, mutates it (bit flips, byte sets, truncation, extension, header
//! splices, length-field edits), hands it to `Dataplane::process` on a random
//! (sometimes invalid) port with random headroom, and now and then advances
//! time and calls `poll`. Half of the runs use a hostile tunnel that returns
//! arbitrary ranges and endpoints. It checks that nothing panics, every
//! transmitted frame is inside its buffer and on a configured port, and
//! counters only grow.

use std::net::Ipv4Addr;
use std::ops::Range;

use routerd_dataplane::*;

use super::*;

/// SplitMix64: small, seedable, good enough to drive mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Valid frames for every path: (ingress port, frame).
pub fn corpus() -> Vec<(PortId, Vec<u8>)> {
    let vx_inner = eth(VM2_MAC, VM1_MAC, &tcp_syn(Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(10, 1, 1, 12), 64, 1460, false, 20));
    let mut vx_tun = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
    vx_tun.extend_from_slice(&vx_inner);
    vec![
        (LAN0, arp(1, HOST_A_MAC, HOST_A, [0; 6], MOVED, [0xff; 6])),
        (LAN0, arp(1, HOST_A_MAC, HOST_A, [0; 6], LAN0_IP, [0xff; 6])),
        (LAN0, arp(1, INTRUDER_MAC, Ipv4Addr::UNSPECIFIED, [0; 6], MOVED, [0xff; 6])),
        (WAN, arp(2, GW_MAC, GW_IP, WAN_MAC, WAN_IP, WAN_MAC)),
        (LAN0, arp(2, HOST_A_MAC, HOST_A, LAN0_MAC, LAN0_IP, LAN0_MAC)),
        (LAN0, eth(LAN0_MAC, HOST_A_MAC, &tcp_syn(HOST_A, MOVED, 64, 1460, false, 0))),
        (LAN0, eth(LAN0_MAC, HOST_A_MAC, &tcp_syn(HOST_A, MOVED, 1, 1460, false, 1400))),
        (LAN0, eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, Ipv4Addr::new(8, 8, 8, 8), 64, 1, 53, b"q"))),
        (LAN0, eth(LAN0_MAC, HOST_A_MAC, &echo(HOST_A, LAN0_IP, 64))),
        (WAN, eth(WAN_MAC, GW_MAC, &tcp_syn(Ipv4Addr::new(10, 0, 0, 30), SECONDARY, 64, 1460, false, 0))),
        (WAN, from_peer(1, &tcp_syn(MOVED, HOST_A, 64, 1460, true, 0))),
        (WAN, from_peer(1, &tcp_syn(Ipv4Addr::new(192, 168, 50, 3), MOVED, 64, 1460, false, 0))),
        (WAN, from_peer(1, &echo(VTEP_TUN, TUN_IP, 64))),
        (WAN, from_peer(1, &udp(VTEP_TUN, TUN_IP, 64, 50001, 4789, &vx_tun))),
        (WAN, wan_udp(PEER_ADDR, 41000, LISTEN, b"HI")),
        (WAN, vxlan_frame(VTEP_WAN, VTEP_WAN_MAC, 100, 0x08, &vx_inner)),
        (LAN1, vx_inner.clone()),
        (LAN1, eth([0xff; 6], VM1_MAC, &udp(Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::BROADCAST, 64, 68, 67, &[0u8; 300]))),
        // SNAT and conntrack: flows out, replies and related errors in.
        (LAN0, eth(LAN0_MAC, HOST_A_MAC, &udp(Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(192, 0, 2, 80), 2, 40000, 53, b"q"))),
        (LAN0, eth(LAN0_MAC, HOST_A_MAC, &echo(Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(192, 0, 2, 80), 64))),
        (WAN, eth(WAN_MAC, GW_MAC, &udp(Ipv4Addr::new(192, 0, 2, 80), WAN_IP, 60, 53, 40000, b"a"))),
        (WAN, eth(WAN_MAC, GW_MAC, &tcp_syn(Ipv4Addr::new(192, 0, 2, 80), WAN_IP, 60, 1460, true, 0))),
        (WAN, eth(WAN_MAC, GW_MAC, &echo_reply(Ipv4Addr::new(192, 0, 2, 80), WAN_IP))),
        (WAN, eth(WAN_MAC, GW_MAC, &time_exceeded(&udp(WAN_IP, Ipv4Addr::new(192, 0, 2, 80), 1, 40000, 53, b"q")))),
        (WAN, eth(WAN_MAC, GW_MAC, &time_exceeded(&tcp_syn(WAN_IP, Ipv4Addr::new(192, 0, 2, 80), 1, 1460, false, 0)[..28]))),
    ]
}

/// An ICMP time exceeded from a router beyond the WAN, quoting `ip`.
pub fn time_exceeded(ip: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4([198, 51, 100, 9], WAN_IP.octets(), 250)
        .icmpv4(etherparse::Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit))
        .write(&mut v, ip)
        .unwrap();
    v
}

/// The fuzz world with SNAT of lan0 out of the WAN and a firewall (rules
/// on every zone pair, a drop default), so conntrack and NAT run on every
/// path.
pub fn nat_config() -> Config {
    let mut c = config();
    c.nat.push(NatRule { source: prefix([10, 0, 0, 0], 24), out: WAN }).unwrap();
    c.nat.push(NatRule { source: prefix([10, 2, 0, 0], 16), out: WAN }).unwrap();
    let any = prefix([0, 0, 0, 0], 0);
    let mut fw = Firewall { rules: heapless::Vec::new(), policies: heapless::Vec::new(), default: Action::Drop };
    let r = |from, to, proto, ports| Rule { from, to, source: any, destination: any, proto, ports, action: Action::Accept };
    fw.rules.push(r(Some(Zone::Tunnel), Some(Zone::Box), ProtoMatch::Udp, Some((4789, 4789)))).unwrap();
    fw.rules.push(r(None, Some(Zone::Box), ProtoMatch::Icmp, None)).unwrap();
    fw.rules.push(Rule { action: Action::Drop, ..r(Some(Zone::Port(LAN0)), None, ProtoMatch::Tcp, Some((22, 22))) }).unwrap();
    fw.policies.push(Policy { from: Some(Zone::Port(LAN0)), to: None, action: Action::Accept }).unwrap();
    fw.policies.push(Policy { from: Some(Zone::Tunnel), to: None, action: Action::Accept }).unwrap();
    c.firewall = Some(fw);
    c
}

fn mutate(rng: &mut Rng, f: &mut Vec<u8>, corpus: &[(PortId, Vec<u8>)]) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(9) {
            0 | 1 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            2 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] = [0, 0xff, 0x7f, 0x80, 1, 4, 5, 0x45][rng.below(8)];
            }
            3 => {
                let n = rng.below(f.len() + 1);
                f.truncate(n);
            }
            4 => {
                let n = rng.below(64);
                for _ in 0..n {
                    f.push(rng.next() as u8);
                }
            }
            5 => {
                // Splice another frame's bytes in (mixes valid headers).
                let (_, other) = &corpus[rng.below(corpus.len())];
                if !other.is_empty() && !f.is_empty() {
                    let from = rng.below(other.len());
                    let to = rng.below(f.len());
                    let n = rng.below(40).min(other.len() - from).min(f.len() - to);
                    f[to..to + n].copy_from_slice(&other[from..from + n]);
                }
            }
            6 if f.len() >= 18 => {
                // IPv4 total length / header length / UDP length edits.
                let at = [14 + 2, 14 + 3, 14, 14 + 20 + 4, 14 + 20 + 5, 14 + 9][rng.below(6)];
                if at < f.len() {
                    f[at] = rng.next() as u8;
                }
            }
            7 if f.len() > 2000 => f.truncate(1600),
            _ => {
                let n = rng.below(2000);
                f.resize(n, 0);
            }
        }
    }
}

/// A tunnel that answers with arbitrary (often invalid) ranges.
pub struct ChaosTunnel(pub Rng);

impl ChaosTunnel {
    fn range(&mut self, len: usize) -> Range<usize> {
        let a = self.0.below(len + 200);
        let b = if self.0.chance(4) { self.0.below(len + 200) } else { a + self.0.below(1600) };
        a..b
    }
}

impl Tunnel for ChaosTunnel {
    fn seal(&mut self, _: Instant, _: PeerId, buf: &mut [u8], inner: Range<usize>) -> Sealed {
        match self.0.below(4) {
            0 => Sealed::Held,
            1 => Sealed::Failed,
            _ => {
                let r = if self.0.chance(2) { inner.start.saturating_sub(16)..inner.end + 16 } else { self.range(buf.len()) };
                Sealed::Datagram { range: r, to: Endpoint::from((Ipv4Addr::from(self.0.next() as u32), self.0.next() as u16)) }
            }
        }
    }
    fn open(&mut self, _: Instant, from: Endpoint, buf: &mut [u8], d: Range<usize>) -> Opened {
        match self.0.below(5) {
            0 => Opened::Consumed,
            1 => Opened::Rejected,
            2 => Opened::Reply { range: self.range(buf.len()), to: from },
            _ => {
                let r = if self.0.chance(2) { d.start + 4..d.end } else { self.range(buf.len()) };
                Opened::Packet { peer: PeerId(self.0.below(3) as u16), range: r }
            }
        }
    }
    fn poll(&mut self, _: Instant, buf: &mut [u8]) -> Option<(Range<usize>, Endpoint)> {
        if self.0.chance(3) {
            Some((self.range(buf.len()), PEER_ENDPOINT))
        } else {
            None
        }
    }
    fn poll_at(&self) -> Option<Instant> {
        None
    }
}

/// Run `iterations` fuzz cases from `seed`. Returns the number of frames
/// handed in and of frames transmitted.
pub fn run(seed: u64, iterations: u64) -> (u64, u64) {
    run_with(seed, iterations, false)
}

/// [`run`] with SNAT and the firewall configured (`nat`).
pub fn run_with(seed: u64, iterations: u64, nat: bool) -> (u64, u64) {
    let corpus = corpus();
    let mut rng = Rng::new(seed);
    // Probing on, with a short hold, so conflicts come and go.
    let fuzz_config = || {
        let mut c = if nat { nat_config() } else { config() };
        c.timing.probe_count = 2;
        for cl in c.claims.iter_mut() {
            cl.conflict_hold_ms = 2_000;
        }
        c
    };
    let mut dp = Box::new(Dataplane::new(fuzz_config(), Instant::ZERO).unwrap());
    let mut pass = PassTunnel::new();
    let mut chaos = ChaosTunnel(Rng::new(seed ^ 0xdead_beef));
    let hostile = seed % 2 == 1;
    let mut tx = Tx::default();
    let mut now = 0u64;
    let mut storage = vec![0u8; BUF_SIZE];
    let mut transmitted = 0u64;
    let mut last_drops = 0u64;
    for _ in 0..iterations {
        let (port, base) = &corpus[rng.below(corpus.len())];
        let mut f = base.clone();
        if !rng.chance(8) {
            mutate(&mut rng, &mut f, &corpus);
        }
        let port = if rng.chance(50) { PortId(rng.below(8) as u8) } else { *port };
        // Random headroom, sometimes none, sometimes a tight buffer.
        let head = [HEADROOM, 0, 7, 64, HEADROOM][rng.below(5)];
        let cap = if rng.chance(10) { head + f.len() + rng.below(64) } else { BUF_SIZE };
        if head + f.len() > cap || cap > storage.len() {
            continue;
        }
        storage.fill(0xa5);
        storage[head..head + f.len()].copy_from_slice(&f);
        let mut fb = FrameBuf::new(&mut storage[..cap], head, f.len()).unwrap();
        let t = Instant::from_millis(now);
        let v = if hostile { dp.process(t, port, &mut fb, &mut chaos, &mut tx) } else { dp.process(t, port, &mut fb, &mut pass, &mut tx) };
        if let Verdict::Transmit(p) = v {
            assert!(p.index() < dp.config().ports.len(), "transmit on a configured port");
            assert!(fb.len() >= 14 && fb.len() <= cap, "transmitted frame is sane");
            transmitted += 1;
        }
        for (p, fr) in tx.frames.drain(..) {
            assert!(p.index() < 3 && fr.len() >= 14);
            transmitted += 1;
        }
        if rng.chance(20) {
            now += rng.below(3000) as u64;
            if hostile {
                dp.poll(Instant::from_millis(now), &mut chaos, &mut tx);
            } else {
                dp.poll(Instant::from_millis(now), &mut pass, &mut tx);
            }
            transmitted += tx.frames.drain(..).count() as u64;
            let _ = dp.poll_at(&pass);
        }
        if rng.chance(500) {
            let i = rng.below(3);
            let _ = dp.probe_claim(Instant::from_millis(now), i);
            let _ = dp.set_claim_enabled(Instant::from_millis(now), i, !rng.chance(4));
        }
        if rng.chance(700) {
            // An apply: the same state carried into a fresh dataplane.
            let mut next = Box::new(Dataplane::new(fuzz_config(), Instant::from_millis(now)).unwrap());
            next.carry_from(&dp);
            assert!(next.counters().total_drops() >= dp.counters().total_drops());
            dp = next;
        }
        while let Some(e) = dp.take_event() {
            let _ = format!("{e}");
        }
        if rng.chance(50) {
            assert!(dp.conntrack().len() <= dp.conntrack().capacity());
            let _ = dp.conntrack().per_proto();
        }
        let drops = dp.counters().total_drops();
        assert!(drops >= last_drops, "counters never go back");
        last_drops = drops;
    }
    (iterations, transmitted)
}

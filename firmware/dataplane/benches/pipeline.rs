//! ns/packet through `Dataplane::process` for the main paths, at 64 B and
//! 1400 B frames, beside a `memcpy` of the same frame into the receive buffer
//! (the floor: every measured iteration does that copy too, because the
//! pipeline edits the frame in place).
//!
//! `cargo bench -p routerd-dataplane --bench pipeline`
//!
//! The tunnel is the pass-through test tunnel (no crypto): these figures
//! are the dataplane's own cost; WireGuard's sealing is measured by its crate.
//!
//! A second table puts the SNAT paths beside the plain forward to the
//! internet in the same run: an established flow each way, and a new flow
//! per packet (with expired flows reclaimed, and with a table full of live
//! flows so every new one evicts the oldest unanswered).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant as Clock;

use common::*;
use routerd_dataplane::*;

const RUNS: usize = 7;
const TARGET_NS: u128 = 150_000_000;

struct Case {
    name: &'static str,
    port: PortId,
    frame: Vec<u8>,
    expect: PortId,
}

fn bench_config() -> Config {
    let mut cfg = config();
    // Measure the reply path, not the rate limiter.
    cfg.timing.arp_reply_rate = 1_000_000;
    cfg.timing.arp_reply_burst = 1_000_000;
    cfg.timing.arp_reachable_ms = u64::MAX / 4;
    cfg.timing.fdb_age_ms = u64::MAX / 4;
    cfg
}

fn pad_to(mut f: Vec<u8>, n: usize) -> Vec<u8> {
    if f.len() < n {
        f.resize(n, 0);
    }
    f
}

fn cases(size: usize) -> Vec<Case> {
    let tcp_payload = size.saturating_sub(14 + 20 + 32);
    let udp_payload = size.saturating_sub(14 + 20 + 8);
    let vx_inner_l3 = size - 14;
    let inner = |l3: usize| {
        eth(VM2_MAC, VM1_MAC, &udp(Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(10, 1, 1, 12), 64, 5000, 6000, &vec![0x33; l3 - 28]))
    };
    vec![
        Case {
            name: "proxy-ARP reply",
            port: LAN0,
            frame: pad_to(arp(1, HOST_A_MAC, HOST_A, [0; 6], MOVED, [0xff; 6]), size),
            expect: LAN0,
        },
        Case {
            name: "claim forward + MSS clamp",
            port: LAN0,
            frame: eth(LAN0_MAC, HOST_A_MAC, &tcp_syn(HOST_A, MOVED, 64, 1460, false, tcp_payload)),
            expect: WAN,
        },
        Case {
            name: "plain /32 forward",
            port: LAN0,
            frame: eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, MOVED, 64, 5000, 6000, &vec![0x44; udp_payload])),
            expect: WAN,
        },
        Case {
            name: "tunnel -> LAN delivery",
            port: WAN,
            frame: from_peer(1, &udp(MOVED, HOST_A, 64, 6000, 5000, &vec![0x55; udp_payload.saturating_sub(46)])),
            expect: LAN0,
        },
        Case { name: "VXLAN encap", port: LAN1, frame: inner(vx_inner_l3), expect: WAN },
        Case {
            name: "VXLAN decap",
            port: WAN,
            frame: vxlan_frame(
                VTEP_WAN,
                VTEP_WAN_MAC,
                100,
                0x08,
                &eth(
                    VM1_MAC,
                    VM2_MAC,
                    &udp(Ipv4Addr::new(10, 1, 1, 12), Ipv4Addr::new(10, 1, 1, 11), 64, 6000, 5000, &vec![0x66; vx_inner_l3 - 28]),
                ),
            ),
            expect: LAN1,
        },
    ]
}

/// ns per iteration of `f`, median of RUNS, each run sized to ~TARGET_NS.
fn measure(mut f: impl FnMut(u64)) -> f64 {
    let mut iters = 1000u64;
    loop {
        let t = Clock::now();
        for i in 0..iters {
            f(i);
        }
        let el = t.elapsed().as_nanos();
        if el > TARGET_NS / 10 {
            iters = ((iters as u128 * TARGET_NS) / el).max(1000) as u64;
            break;
        }
        iters *= 4;
    }
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Clock::now();
            for i in 0..iters {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    runs[RUNS / 2]
}

fn main() {
    println!("routerd-dataplane pipeline benchmark (median of {RUNS} runs, pass-through tunnel)");
    println!();
    println!("| path                       | frame B | pipeline ns/pkt | memcpy ns/pkt | ratio |");
    println!("|----------------------------|--------:|----------------:|--------------:|------:|");
    for size in [64usize, 1400] {
        for case in cases(size) {
            let mut h = Harness::with(bench_config());
            h.learn_gateway();
            h.learn(LAN0, HOST_A, HOST_A_MAC);
            h.learn(WAN, VTEP_WAN, VTEP_WAN_MAC);
            // Teach the FDB where VM2 is, so encapsulation is unicast.
            let teach = vxlan_frame(
                VTEP_WAN,
                VTEP_WAN_MAC,
                100,
                0x08,
                &eth(VM1_MAC, VM2_MAC, &udp(Ipv4Addr::new(10, 1, 1, 12), Ipv4Addr::new(10, 1, 1, 11), 64, 1, 2, b"x")),
            );
            assert!(h.rx(WAN, &teach).is_some());
            // Sanity: the path does what its name says.
            let (p, _) = h.rx(case.port, &case.frame).unwrap_or_else(|| panic!("{} produced nothing", case.name));
            assert_eq!(p, case.expect, "{}", case.name);
            h.take_tx();
            let drops_before = h.dp.counters().total_drops();

            let len = case.frame.len();
            let mut storage = vec![0u8; BUF_SIZE];
            let frame = case.frame.clone();
            let floor = measure(|_| {
                storage[HEADROOM..HEADROOM + len].copy_from_slice(black_box(&frame));
                black_box(&mut storage);
            });
            let Harness { dp, tun, tx, .. } = &mut h;
            // A clock that only moves forward across runs.
            let mut tick = 1u64;
            let ns = measure(|_| {
                tick += 1;
                storage[HEADROOM..HEADROOM + len].copy_from_slice(black_box(&frame));
                let mut fb = FrameBuf::new(&mut storage, HEADROOM, len).unwrap();
                let v = dp.process(Instant::from_millis(tick), case.port, &mut fb, tun, tx);
                black_box((v, fb.len()));
            });
            assert_eq!(h.dp.counters().total_drops(), drops_before, "{}: no drops while measuring", case.name);
            println!("| {:<26} | {:>7} | {:>15.1} | {:>13.1} | {:>5.1} |", case.name, len, ns, floor, ns / floor);
        }
    }
    println!();
    println!("ratio = pipeline / memcpy of the same frame (the floor; pipeline includes that copy)");
    nat_table();
}

const NET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

/// Which packets a NAT case sends.
#[derive(Clone, Copy, PartialEq)]
enum Flows {
    /// The same packet every time.
    Same,
    /// A new source port per packet (60 000 of them, then again: long expired or evicted).
    New,
}

fn nat_table() {
    println!();
    println!("| NAT path (lan0 → internet)          | frame B | pipeline ns/pkt | vs plain forward |");
    println!("|-------------------------------------|--------:|----------------:|-----------------:|");
    for size in [64usize, 1400] {
        let payload = size.saturating_sub(14 + 20 + 8);
        let out = eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, NET, 64, 40000, 53, &vec![0x44; payload]));
        let back = eth(WAN_MAC, GW_MAC, &udp(NET, WAN_IP, 60, 53, 40000, &vec![0x45; payload]));
        let nat = || {
            let mut c = bench_config();
            c.nat.push(NatRule { source: prefix([10, 0, 0, 0], 24), out: WAN }).unwrap();
            c
        };
        let reclaim = || {
            let mut c = nat();
            c.timing.conntrack.udp_ms = 1;
            c
        };
        // (name, configuration, ingress, frame, expected egress, flows)
        #[allow(clippy::type_complexity)]
        let cases: [(&str, Config, PortId, &Vec<u8>, PortId, Flows); 5] = [
            ("plain forward (no NAT)", bench_config(), LAN0, &out, WAN, Flows::Same),
            ("NAT established, out", nat(), LAN0, &out, WAN, Flows::Same),
            ("NAT established, reply in", nat(), WAN, &back, LAN0, Flows::Same),
            ("NAT new flow (expired reclaimed)", reclaim(), LAN0, &out, WAN, Flows::New),
            ("NAT new flow (full table: evicts)", nat(), LAN0, &out, WAN, Flows::New),
        ];
        let mut plain = 0.0;
        for (name, cfg, port, frame, expect, flows) in cases {
            let mut h = Harness::with(cfg);
            h.learn_gateway();
            h.learn(LAN0, HOST_A, HOST_A_MAC);
            // The flow the established cases use.
            let (p, _) = h.rx(LAN0, &out).unwrap_or_else(|| panic!("{name}: nothing forwarded"));
            assert_eq!(p, WAN);
            let (p, _) = h.rx(port, frame).unwrap_or_else(|| panic!("{name}: nothing forwarded"));
            assert_eq!(p, expect, "{name}");
            let drops_before = h.dp.counters().total_drops();
            let len = frame.len();
            let mut storage = vec![0u8; BUF_SIZE];
            let Harness { dp, tun, tx, .. } = &mut h;
            let mut tick = 10u64;
            let ns = measure(|i| {
                tick += 1;
                storage[HEADROOM..HEADROOM + len].copy_from_slice(black_box(frame));
                if flows == Flows::New {
                    // The source port from the iteration: a new flow (the UDP
                    // checksum is not the pipeline's to verify).
                    let sport = 1024 + (i % 60_000) as u16;
                    storage[HEADROOM + 34..HEADROOM + 36].copy_from_slice(&sport.to_be_bytes());
                }
                let mut fb = FrameBuf::new(&mut storage, HEADROOM, len).unwrap();
                let v = dp.process(Instant::from_millis(tick), port, &mut fb, tun, tx);
                black_box((v, fb.len()));
            });
            assert_eq!(h.dp.counters().total_drops(), drops_before, "{name}: no drops while measuring");
            if name.starts_with("plain") {
                plain = ns;
            }
            println!("| {:<35} | {:>7} | {:>15.1} | {:>16.2} |", name, len, ns, ns / plain);
        }
    }
    println!();
    println!("new flows: one per packet; \"full table\" keeps 2048 live unanswered flows, so each new one evicts the oldest unanswered of the 256 slots it looks at");
}

//! The whole box's cost per packet, beside the floor, in one run.
//!
//! `cargo bench -p routerd-control --bench whole_box`
//!
//! Two real `Node`s (an on-prem and a cloud box, configured from TOML with
//! imported keys, as in `tests/two_boxes.rs`) are joined by real WireGuard
//! and driven by `Forwarder::turn`, the loop the image runs, over in-memory
//! NICs with preallocated rings (`routerd_netdev::testing::RingNic`). The
//! on-prem box is measured:
//!
//! - A (LAN → WAN): a LAN frame to the cloud-owned claim (proxy-ARP
//!   capture) → claim forward (+ MSS clamp for the TCP SYN) → WireGuard seal
//!   in place → underlay UDP/IPv4/Ethernet → WAN frame out.
//! - B (WAN → LAN): a WireGuard datagram from the cloud box → open in place
//!   → allowed-IPs check → local claim → Ethernet to the LAN host (its MAC
//!   is in the ARP cache) → LAN frame out.
//!
//! The floor, measured interleaved with them: one `memcpy` of the input
//! frame plus the raw `ring` ChaCha20-Poly1305 seal (A) or open (B) of the
//! same payload, key prepared outside the loop.
//!
//! Method: the inner IP packet is exactly 64, 512 or 1420 bytes (1420 is
//! the tunnel MTU; WireGuard's 16-byte padding adds nothing at these sizes).
//! A round injects `K` frames into the input NIC's receive ring (untimed: a
//! copy into a slot, what DMA does on a real NIC), then times the turns that
//! drain it (full batches of `BATCH` = 32); the output NIC's counters must
//! show exactly `K` frames, the dataplane no drop and WireGuard no error. A
//! sample is `ROUNDS` rounds; all cases of one size run interleaved, sample
//! after sample, so load from other processes hits every case alike; the
//! first sample warms up and is dropped. Reported: the median sample (and
//! the 10th percentile). For B, the datagrams of a sample are made
//! (untimed) by the cloud box from LAN frames before its rounds, so each
//! has a fresh counter for the replay window and only the inject runs
//! between timed turns, as in A. The boxes' clock advances 1 ms per round;
//! traffic crosses both ways every sample, so neither WireGuard nor ARP
//! timers send anything while measuring (the exact counts would fail).
//!
//! `WHOLE_BOX_SIZES=1420,64` measures only those inner sizes, in that order.
//! `WHOLE_BOX_PROFILE=<case>:<size>:<rounds>` (case `a-tcp`, `a-udp`, `b`)
//! runs only that whole-box case for a profiler; the timed turns are in
//! `drain` (`valgrind --tool=callgrind --toggle-collect='whole_box::drain'`
//! counts only them).

use std::hint::black_box;
use std::time::Instant as Clock;

use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use rand_core::{OsRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use routerd_control::{run::BATCH, Forwarder, NicInfo, Node};
use routerd_dataplane::{Instant, HEADROOM};
use routerd_e2e::net;
use routerd_netdev::testing::{RingNic, RING_SLOT};
use routerd_netdev::NetDevice;
use routerd_provision::message::{Op, Reply};
use routerd_wireguard::SecretKey;

/// Inner IP packet sizes (what WireGuard seals).
const SIZES: [usize; 3] = [64, 512, 1420];
/// Frames per round (the receive rings hold this many).
const K: usize = 256;
/// Rounds per sample: one (256 packets: short samples, finely interleaved).
const ROUNDS: usize = 1;
/// Samples per case (after one warm-up sample).
const SAMPLES: usize = 1001;
/// Transmit ring slots per NIC (frames between two polls; a turn sends at
/// most BATCH from one input NIC plus timer frames).
const TX_SLOTS: usize = 64;
/// Underlay + WireGuard bytes around the inner packet on the WAN:
/// Ethernet 14, IPv4 20, UDP 8, WireGuard header 16, tag 16.
const WAN_OVERHEAD: usize = 14 + 20 + 8 + 16 + 16;
/// Where the WireGuard payload starts in a WAN frame.
const WG_PAYLOAD_AT: usize = 14 + 20 + 8 + 16;

const ONPREM_MACS: [[u8; 6]; 2] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1]];
const CLOUD_MACS: [[u8; 6]; 2] = [[0x02, 0xc0, 0, 0, 0, 0], [0x02, 0xc0, 0, 0, 0, 1]];
const HOST_ONPREM_MAC: [u8; 6] = [0x02, 0x11, 0, 0, 0, 10];
const HOST_CLOUD_MAC: [u8; 6] = [0x02, 0x22, 0, 0, 0, 50];
const HOST_ONPREM: [u8; 4] = [10, 20, 0, 10];
const HOST_CLOUD: [u8; 4] = [10, 20, 0, 50];
const WG_PORT: u16 = 51820;

// The goals of the issue.
const GOAL_64_NS: f64 = 40.0;
const GOAL_1420_PCT: f64 = 10.0;

fn config(side: &str, lan: &str, wan: &str, peer_name: &str, peer_key: &str, endpoint: &str, peer_allowed: &str) -> String {
    format!(
        r#"
[device]
name = "{side}-box"
side = "{side}"

[[ports]]
name = "lan0"
role = "lan"
address = "{lan}"

[[ports]]
name = "wan0"
role = "wan"
address = "{wan}"

[[wireguard]]
name = "wg0"
private_key = "device:wg0"

[[peers]]
name = "{peer_name}"
tunnel = "wg0"
public_key = "{peer_key}"
endpoint = "{endpoint}"
allowed_ips = [{peer_allowed}]

[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}

[[claims]]
address = "10.20.0.10/32"
owner = "onprem"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "onprem" }}
"#
    )
}

/// One box: the real node driven by the forwarding turn over two ring NICs
/// (lan0, wan0).
struct Site {
    node: Box<Node<OsRng>>,
    nics: [RingNic; 2],
    fwd: Box<Forwarder>,
}

impl Site {
    fn new(toml: &str, macs: [[u8; 6]; 2], key: [u8; 32]) -> Site {
        let cfg = config_schema::human::from_toml(toml).expect("config parses");
        let infos = macs.map(NicInfo::ethernet);
        let mut node = Box::new(Node::new(&infos, Some(OsRng), "0.1.0", "bench"));
        let slot = config_schema::Name::new("wg0").unwrap();
        assert!(matches!(node.handle(Instant::ZERO, Op::KeyImport(slot, key), &[]), Reply::Keys(_)));
        match node.handle(Instant::ZERO, Op::Apply(Box::new(cfg)), &[]) {
            Reply::Applied(_) => {}
            other => panic!("apply refused: {other:?}"),
        }
        Site { node, nics: macs.map(|m| RingNic::new(m, K, TX_SLOTS)), fwd: Box::new(Forwarder::new()) }
    }

    /// Exactly what a platform's loop does once per iteration.
    #[inline(always)]
    fn turn(&mut self, now: Instant) -> bool {
        self.fwd.turn(&mut self.node, now, &mut self.nics[..], &mut |_| {})
    }

    fn drops(&mut self) -> u64 {
        self.node.forwarding().unwrap().dataplane.counters().total_drops()
    }

    fn wg_errors(&mut self) -> u64 {
        self.node.wireguard().unwrap().counters().iter().map(|(_, n)| n).sum()
    }

    fn tx(&self, nic: usize) -> u64 {
        self.nics[nic].stats().tx_frames
    }

    fn wire(&self, nic: usize) -> Vec<Vec<u8>> {
        self.nics[nic].wire().map(<[u8]>::to_vec).collect()
    }
}

/// Runs both boxes, carrying WAN frames across, until both are quiet;
/// collects what they sent on their LANs. (Setup only: allocates.)
fn pump(now: Instant, a: &mut Site, b: &mut Site, a_lan: &mut Vec<Vec<u8>>, b_lan: &mut Vec<Vec<u8>>) {
    for _ in 0..1000 {
        a.turn(now);
        b.turn(now);
        let (a_wan, b_wan) = (a.wire(1), b.wire(1));
        a_lan.extend(a.wire(0));
        b_lan.extend(b.wire(0));
        let idle = a.nics.iter().chain(b.nics.iter()).all(|n| n.pending() == 0);
        if a_wan.is_empty() && b_wan.is_empty() && idle {
            return;
        }
        for f in a_wan {
            assert!(b.nics[1].inject(&f));
        }
        for f in b_wan {
            assert!(a.nics[1].inject(&f));
        }
    }
    panic!("the boxes never went quiet");
}

fn tcp_syn(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ack: bool, mss: u16) -> Vec<u8> {
    net::ethernet(src_mac, dst_mac, &net::tcp_syn_packet(src, dst, ack, mss))
}

fn tcp_mss(frame: &[u8]) -> Option<(bool, u16)> {
    net::ip_payload(frame).and_then(net::tcp_syn_mss)
}

/// An IPv4 packet of exactly `total` bytes: a TCP SYN (MSS 1460, NOP,
/// window scale: 28 bytes of TCP header) carrying `total - 48` bytes of data.
fn tcp_syn_of(src: [u8; 4], dst: [u8; 4], total: usize) -> Vec<u8> {
    let mut p = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .tcp(40000, 443, 1000, 64240)
        .syn()
        .options(&[TcpOptionElement::MaximumSegmentSize(1460), TcpOptionElement::Noop, TcpOptionElement::WindowScale(7)])
        .unwrap()
        .write(&mut p, &vec![0x5a; total - 48])
        .unwrap();
    assert_eq!(p.len(), total);
    p
}

/// An IPv4/UDP packet of exactly `total` bytes.
fn udp_of(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, total: usize) -> Vec<u8> {
    let mut p = Vec::new();
    let payload: Vec<u8> = (0..total - 28).map(|i| i as u8).collect();
    PacketBuilder::ipv4(src, dst, 64).udp(sport, dport).write(&mut p, &payload).unwrap();
    assert_eq!(p.len(), total);
    p
}

fn l4_payload(frame: &[u8]) -> Vec<u8> {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    match p.transport {
        Some(TransportSlice::Udp(u)) => u.payload().to_vec(),
        Some(TransportSlice::Tcp(t)) => t.payload().to_vec(),
        _ => panic!("no UDP/TCP payload"),
    }
}

/// Both boxes after a handshake, with warm ARP caches, claims active and
/// their gratuitous ARPs done.
struct Boxes {
    onprem: Site,
    cloud: Site,
    now: Instant,
    /// Direction B's datagrams for the rounds of one sample.
    datagrams: Vec<[u8; RING_SLOT]>,
}

fn setup() -> Boxes {
    let (mut onprem_key, mut cloud_key) = ([0u8; 32], [0u8; 32]);
    OsRng.fill_bytes(&mut onprem_key);
    OsRng.fill_bytes(&mut cloud_key);
    let onprem_pub = SecretKey::from_bytes(onprem_key).public_key().to_base64();
    let cloud_pub = SecretKey::from_bytes(cloud_key).public_key().to_base64();
    let onprem_cfg = config("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", cloud_pub.as_str(), "192.0.2.2:51820", "\"10.20.0.50/32\"");
    let cloud_cfg = config("cloud", "10.20.0.3/24", "192.0.2.2/24", "onprem", onprem_pub.as_str(), "192.0.2.1:51820", "\"10.20.0.10/32\"");
    let mut onprem = Site::new(&onprem_cfg, ONPREM_MACS, onprem_key);
    let mut cloud = Site::new(&cloud_cfg, CLOUD_MACS, cloud_key);
    let (mut onprem_lan, mut cloud_lan) = (Vec::new(), Vec::new());
    let mut now = Instant::from_millis(1000);

    // Claims probe, then capture.
    for _ in 0..4 {
        pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
        now = now.plus_millis(200);
    }
    // The on-prem host ARPs for the cloud-owned address (the box learns
    // the host and answers for the claim).
    onprem.nics[0].inject(&net::arp_request(HOST_ONPREM_MAC, HOST_ONPREM, HOST_CLOUD));
    pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);

    // A SYN starts the handshake; a retransmission crosses. Both boxes ARP
    // for their LAN host: answer.
    let syn = tcp_syn(HOST_ONPREM_MAC, ONPREM_MACS[0], HOST_ONPREM, HOST_CLOUD, false, 1460);
    let synack = tcp_syn(HOST_CLOUD_MAC, CLOUD_MACS[0], HOST_CLOUD, HOST_ONPREM, true, 1460);
    let (mut there, mut back) = (false, false);
    for _ in 0..5 {
        if !there {
            onprem.nics[0].inject(&syn);
        } else if !back {
            cloud.nics[0].inject(&synack);
        }
        for _ in 0..5 {
            pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
            for f in std::mem::take(&mut cloud_lan) {
                if let Some(r) = net::answer_arp(&f, HOST_CLOUD, HOST_CLOUD_MAC) {
                    cloud.nics[0].inject(&r);
                } else if tcp_mss(&f).is_some() {
                    there = true;
                }
            }
            for f in std::mem::take(&mut onprem_lan) {
                if let Some(r) = net::answer_arp(&f, HOST_ONPREM, HOST_ONPREM_MAC) {
                    onprem.nics[0].inject(&r);
                } else if tcp_mss(&f).is_some() {
                    back = true;
                }
            }
            now = now.plus_millis(10);
        }
        if there && back {
            break;
        }
        now = now.plus_millis(1000);
    }
    assert!(there && back, "the SYN and SYN-ACK crossed the tunnel");

    // Let the claims' gratuitous ARPs run out, then check both are quiet.
    for _ in 0..4 {
        now = now.plus_millis(1000);
        pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
    }
    onprem_lan.clear();
    cloud_lan.clear();
    now = now.plus_millis(1);
    for s in [&mut onprem, &mut cloud] {
        s.turn(now);
        assert_eq!(s.nics.iter().map(|n| n.wire().count()).sum::<usize>(), 0, "a box is not quiet after setup");
    }
    Boxes { onprem, cloud, now, datagrams: Vec::new() }
}

/// The frames of one size.
struct Frames {
    size: usize,
    /// A: LAN host → cloud-owned claim.
    a_tcp: Vec<u8>,
    a_udp: Vec<u8>,
    /// B: cloud host → on-prem host, as the cloud box receives it on its LAN.
    b_udp: Vec<u8>,
}

fn frames(size: usize) -> Frames {
    Frames {
        size,
        a_tcp: net::ethernet(HOST_ONPREM_MAC, ONPREM_MACS[0], &tcp_syn_of(HOST_ONPREM, HOST_CLOUD, size)),
        a_udp: net::ethernet(HOST_ONPREM_MAC, ONPREM_MACS[0], &udp_of(HOST_ONPREM, HOST_CLOUD, 5000, 6000, size)),
        b_udp: net::ethernet(HOST_CLOUD_MAC, CLOUD_MACS[0], &udp_of(HOST_CLOUD, HOST_ONPREM, 6000, 5000, size)),
    }
}

/// Sanity, before measuring: every path does what its name says, with the
/// sizes the table states.
fn check_paths(b: &mut Boxes, fr: &Frames) {
    let Boxes { onprem, cloud, now, .. } = b;
    *now = now.plus_millis(1);
    for (frame, tcp) in [(&fr.a_tcp, true), (&fr.a_udp, false)] {
        assert!(onprem.nics[0].inject(frame));
        onprem.turn(*now);
        let out = onprem.wire(1);
        assert_eq!(out.len(), 1, "A: one WAN frame");
        let w = &out[0];
        assert_eq!(w.len(), fr.size + WAN_OVERHEAD, "A: WAN frame size");
        assert_eq!(&w[..6], &CLOUD_MACS[1], "A: to the peer's WAN MAC");
        assert_eq!(&w[12..14], &[0x08, 0x00]);
        assert_eq!(u16::from_be_bytes([w[36], w[37]]), WG_PORT, "A: to the WireGuard port");
        assert_eq!(w[42], 4, "A: a WireGuard transport message");
        // The peer opens it and delivers the same packet.
        assert!(cloud.nics[1].inject(w));
        cloud.turn(*now);
        let got = cloud.wire(0);
        assert_eq!(got.len(), 1, "A: delivered by the peer");
        let g = &got[0];
        assert_eq!(g.len(), frame.len());
        assert_eq!(&g[..6], &HOST_CLOUD_MAC);
        assert!(net::checksums_valid(net::ip_payload(g).unwrap()));
        assert_eq!(l4_payload(g), l4_payload(frame));
        if tcp {
            assert_eq!(tcp_mss(g), Some((false, 1380)), "A: SYN MSS clamped to 1420 - 40");
        }
    }
    assert!(cloud.nics[0].inject(&fr.b_udp));
    cloud.turn(*now);
    let dg = cloud.wire(1);
    assert_eq!(dg.len(), 1);
    assert_eq!(dg[0].len(), fr.size + WAN_OVERHEAD, "B: WAN frame size");
    assert!(onprem.nics[1].inject(&dg[0]));
    onprem.turn(*now);
    let got = onprem.wire(0);
    assert_eq!(got.len(), 1, "B: delivered on the LAN");
    let g = &got[0];
    assert_eq!(g.len(), fr.b_udp.len(), "B: LAN frame size");
    assert_eq!(&g[..6], &HOST_ONPREM_MAC, "B: to the LAN host's MAC");
    assert_eq!(&g[6..12], &ONPREM_MACS[0]);
    assert!(net::checksums_valid(net::ip_payload(g).unwrap()));
    assert_eq!(l4_payload(g), l4_payload(&fr.b_udp));
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    /// memcpy of the LAN frame + raw seal of the inner packet.
    FloorSeal,
    /// Direction A, TCP SYN (MSS clamp).
    ATcp,
    /// Direction A, UDP.
    AUdp,
    /// memcpy of the WAN frame + raw open of the WireGuard payload.
    FloorOpen,
    /// Direction B, UDP.
    BUdp,
    /// Direction A, UDP, one frame per turn (diagnostic: per-turn cost).
    AUdpSingle,
    /// memcpy of the output frame alone (diagnostic: the loop's 2nd copy).
    CopyOut,
}

const CASES: [Case; 7] = [Case::FloorSeal, Case::ATcp, Case::AUdp, Case::FloorOpen, Case::BUdp, Case::AUdpSingle, Case::CopyOut];

/// What the floors need, prepared outside the timed loops.
struct Floor {
    key: LessSafeKey,
    counter: u64,
    buf: Vec<u8>,
    /// A WAN frame whose WireGuard payload is sealed under `key`, nonce 0.
    sealed: Vec<u8>,
}

fn nonce(c: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&c.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl Floor {
    fn new(fr: &Frames) -> Floor {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).unwrap());
        let mut sealed = vec![0u8; fr.size + WAN_OVERHEAD];
        sealed[WG_PAYLOAD_AT..WG_PAYLOAD_AT + fr.size].copy_from_slice(&fr.b_udp[14..]);
        let tag = key.seal_in_place_separate_tag(nonce(0), Aad::empty(), &mut sealed[WG_PAYLOAD_AT..WG_PAYLOAD_AT + fr.size]).unwrap();
        sealed[WG_PAYLOAD_AT + fr.size..].copy_from_slice(tag.as_ref());
        Floor { key, counter: 1, buf: vec![0u8; RING_SLOT + HEADROOM], sealed }
    }
}

/// The timed part: turns until `nic`'s receive ring is empty; ns.
#[inline(never)]
fn drain(site: &mut Site, nic: usize, now: Instant) -> u128 {
    let t = Clock::now();
    while site.nics[nic].pending() > 0 {
        site.turn(now);
    }
    t.elapsed().as_nanos()
}

/// Runs `rounds` rounds of a whole-box case; ns per packet.
#[inline(never)]
fn whole_box_rounds(b: &mut Boxes, fr: &Frames, case: Case, rounds: usize) -> f64 {
    let Boxes { onprem, cloud, now, datagrams } = b;
    let mut ns = 0u128;
    let mut packets = 0usize;
    let (drops0, wg0) = (onprem.drops(), onprem.wg_errors());
    let dgram_len = fr.size + WAN_OVERHEAD;
    if case == Case::BUdp {
        // Fresh datagrams for every round (untimed, before the rounds so
        // the cloud box does not run between timed turns): the cloud box
        // seals LAN frames; each has a new counter for the replay window.
        if datagrams.len() < rounds * K {
            datagrams.resize(rounds * K, [0; RING_SLOT]);
        }
        let mut n = 0;
        for _ in 0..rounds {
            for _ in 0..K {
                assert!(cloud.nics[0].inject(&fr.b_udp));
            }
            while cloud.nics[0].pending() > 0 {
                cloud.turn(*now);
                for f in cloud.nics[1].wire() {
                    assert_eq!(f.len(), dgram_len);
                    datagrams[n][..dgram_len].copy_from_slice(f);
                    n += 1;
                }
            }
        }
        assert_eq!(n, rounds * K, "B: the peer sealed every frame");
    }
    for round in 0..rounds {
        *now = now.plus_millis(1);
        let (lan0, wan0) = (onprem.tx(0), onprem.tx(1));
        match case {
            Case::ATcp | Case::AUdp => {
                let frame = if case == Case::ATcp { &fr.a_tcp } else { &fr.a_udp };
                for _ in 0..K {
                    assert!(onprem.nics[0].inject(frame));
                }
                ns += drain(onprem, 0, *now);
                assert_eq!((onprem.tx(0) - lan0, onprem.tx(1) - wan0), (0, K as u64), "A: every frame out on the WAN, nothing else");
            }
            Case::AUdpSingle => {
                // One frame per turn: the NIC hands out one frame per
                // receive call.
                for _ in 0..K {
                    assert!(onprem.nics[0].inject(&fr.a_udp));
                }
                onprem.nics[0].set_rx_limit(1);
                ns += drain(onprem, 0, *now);
                onprem.nics[0].set_rx_limit(usize::MAX);
                assert_eq!((onprem.tx(0) - lan0, onprem.tx(1) - wan0), (0, K as u64), "A: every frame out on the WAN, nothing else");
            }
            Case::BUdp => {
                for d in &datagrams[round * K..(round + 1) * K] {
                    assert!(onprem.nics[1].inject(&d[..dgram_len]));
                }
                ns += drain(onprem, 1, *now);
                assert_eq!((onprem.tx(0) - lan0, onprem.tx(1) - wan0), (K as u64, 0), "B: every frame out on the LAN, nothing else");
            }
            _ => unreachable!("{case:?} is not a whole-box case"),
        }
        packets += K;
    }
    assert_eq!(onprem.drops(), drops0, "{case:?}: dataplane drops while measuring");
    assert_eq!(onprem.wg_errors(), wg0, "{case:?}: WireGuard errors while measuring");
    if matches!(case, Case::ATcp | Case::AUdp | Case::AUdpSingle) {
        // The peer receives the last turn's datagrams (untimed), so its
        // WireGuard timers see traffic both ways, like a real exchange.
        for f in onprem.nics[1].wire() {
            assert!(cloud.nics[1].inject(f));
        }
        while cloud.nics[1].pending() > 0 {
            cloud.turn(*now);
        }
    }
    ns as f64 / packets as f64
}

/// One sample of `case`: ns per packet.
fn sample(b: &mut Boxes, fr: &Frames, floor: &mut Floor, case: Case) -> f64 {
    let size = fr.size;
    match case {
        Case::FloorSeal => {
            let len = fr.a_udp.len();
            let Floor { key, counter, buf, .. } = floor;
            let mut ns = 0u128;
            for _ in 0..ROUNDS {
                let t = Clock::now();
                for _ in 0..K {
                    buf[HEADROOM..HEADROOM + len].copy_from_slice(black_box(&fr.a_udp));
                    let p = &mut buf[HEADROOM + 14..HEADROOM + 14 + size];
                    let tag = key.seal_in_place_separate_tag(nonce(*counter), Aad::empty(), black_box(p)).unwrap();
                    *counter += 1;
                    let _ = black_box(tag);
                }
                ns += t.elapsed().as_nanos();
            }
            ns as f64 / (ROUNDS * K) as f64
        }
        Case::FloorOpen => {
            let len = floor.sealed.len();
            let Floor { key, buf, sealed, .. } = floor;
            let mut ns = 0u128;
            for _ in 0..ROUNDS {
                let t = Clock::now();
                for _ in 0..K {
                    buf[HEADROOM..HEADROOM + len].copy_from_slice(black_box(sealed));
                    let p = &mut buf[HEADROOM + WG_PAYLOAD_AT..HEADROOM + len];
                    let plain = key.open_in_place(nonce(0), Aad::empty(), black_box(p)).unwrap();
                    black_box(plain);
                }
                ns += t.elapsed().as_nanos();
            }
            ns as f64 / (ROUNDS * K) as f64
        }
        Case::CopyOut => {
            // The loop's second copy: the output frame into a transmit slot
            // (A: the WAN frame; the B output is the smaller LAN frame).
            let len = size + WAN_OVERHEAD;
            let src = vec![0x77u8; len];
            let Floor { buf, .. } = floor;
            let mut ns = 0u128;
            for _ in 0..ROUNDS {
                let t = Clock::now();
                for _ in 0..K {
                    buf[HEADROOM..HEADROOM + len].copy_from_slice(black_box(&src));
                    black_box(&mut *buf);
                }
                ns += t.elapsed().as_nanos();
            }
            ns as f64 / (ROUNDS * K) as f64
        }
        _ => whole_box_rounds(b, fr, case, ROUNDS),
    }
}

/// The median sample, and the 10th percentile: what the case costs when
/// the machine is quiet (less fragile than the single best sample, which a
/// momentary frequency boost of this VM can make too good).
struct Stat {
    median: f64,
    p10: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Stat { median: v[v.len() / 2], p10: v[v.len() / 10] }
}

fn get(st: &[Stat], c: Case) -> &Stat {
    &st[CASES.iter().position(|&x| x == c).unwrap()]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn main() {
    let mut b = setup();

    if let Ok(spec) = std::env::var("WHOLE_BOX_PROFILE") {
        let parts: Vec<&str> = spec.split(':').collect();
        let case = match parts[0] {
            "a-tcp" => Case::ATcp,
            "a-udp" => Case::AUdp,
            "b" => Case::BUdp,
            other => panic!("unknown case {other}"),
        };
        let size: usize = parts.get(1).map_or(64, |s| s.parse().unwrap());
        let rounds: usize = parts.get(2).map_or(100, |s| s.parse().unwrap());
        let fr = frames(size);
        check_paths(&mut b, &fr);
        // In chunks of ROUNDS (B keeps a chunk's datagrams in memory).
        let chunks = rounds.div_ceil(ROUNDS);
        let ns: f64 = (0..chunks).map(|_| whole_box_rounds(&mut b, &fr, case, ROUNDS)).sum::<f64>() / chunks as f64;
        println!("{case:?} {size} B x {} rounds of {K}: {ns:.1} ns/pkt", chunks * ROUNDS);
        return;
    }

    let load_before = loadavg();
    let mut rows = Vec::new();
    // `WHOLE_BOX_SIZES=1420,64` measures those sizes, in that order.
    let sizes: Vec<usize> = match std::env::var("WHOLE_BOX_SIZES") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().expect("WHOLE_BOX_SIZES: sizes in bytes")).collect(),
        Err(_) => SIZES.to_vec(),
    };
    for size in sizes {
        assert!((48..=1420).contains(&size), "inner IP sizes from 48 (a SYN with options) to 1420 (the tunnel MTU)");
        let fr = frames(size);
        check_paths(&mut b, &fr);
        let mut floor = Floor::new(&fr);
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
        for s in 0..=SAMPLES {
            for (k, &case) in CASES.iter().enumerate() {
                let ns = sample(&mut b, &fr, &mut floor, case);
                if s > 0 {
                    samples[k].push(ns);
                }
            }
        }
        let st: Vec<Stat> = samples.into_iter().map(stat).collect();
        rows.push((size, st));
    }
    let load_after = loadavg();

    println!("routerd whole box: Forwarder::turn over RingNic, real WireGuard between two Nodes");
    println!("{SAMPLES} samples x {ROUNDS} rounds x {K} frames per case, interleaved; median sample [10th percentile]");
    println!("load average before: {load_before}; after: {load_after}");
    println!();
    println!("| dir | path                         | inner IP B | in frame B | out frame B | whole ns/pkt    | floor ns/pkt    | overhead ns     | overhead %      | goal (median; p10) |");
    println!("|-----|------------------------------|-----------:|-----------:|------------:|----------------:|----------------:|----------------:|----------------:|---------------------|");
    for (size, st) in &rows {
        let size = *size;
        let (lan, wan) = (size + 14, size + WAN_OVERHEAD);
        for (dir, name, case, floor, fin, fout) in [
            ("A", "claim forward + MSS clamp", Case::ATcp, Case::FloorSeal, lan, wan),
            ("A", "plain /32 forward (UDP)", Case::AUdp, Case::FloorSeal, lan, wan),
            ("B", "tunnel -> LAN delivery (UDP)", Case::BUdp, Case::FloorOpen, wan, lan),
        ] {
            let (w, f) = (get(st, case), get(st, floor));
            let (over, over_p10) = (w.median - f.median, w.p10 - f.p10);
            let (pct, pct_p10) = (over / f.median * 100.0, over_p10 / f.p10 * 100.0);
            let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
            let goal = match size {
                64 => format!("{}; {} (≤ {GOAL_64_NS} ns)", verdict(over <= GOAL_64_NS), verdict(over_p10 <= GOAL_64_NS)),
                1420 => format!("{}; {} (≤ {GOAL_1420_PCT} %)", verdict(pct <= GOAL_1420_PCT), verdict(pct_p10 <= GOAL_1420_PCT)),
                _ => "-".into(),
            };
            println!(
                "| {dir}   | {name:<28} | {size:>10} | {fin:>10} | {fout:>11} | {:>6.1} [{:>6.1}] | {:>6.1} [{:>6.1}] | {over:>6.1} [{over_p10:>6.1}] | {pct:>5.1} % [{pct_p10:>4.1} %] | {goal} |",
                w.median, w.p10, f.median, f.p10
            );
        }
    }
    println!();
    println!("Diagnostics (same run):");
    println!();
    println!("| inner IP B | A UDP, 1 frame/turn ns/pkt | A UDP, 32/turn ns/pkt | per-turn extra ns | memcpy of WAN frame ns |");
    println!("|-----------:|---------------------------:|----------------------:|------------------:|-----------------------:|");
    for (size, st) in &rows {
        let (one, full, copy) = (get(st, Case::AUdpSingle), get(st, Case::AUdp), get(st, Case::CopyOut));
        println!(
            "| {size:>10} | {:>16.1} [{:>6.1}] | {:>11.1} [{:>6.1}] | {:>17.1} | {:>12.1} [{:>6.1}] |",
            one.median,
            one.p10,
            full.median,
            full.p10,
            one.median - full.median,
            copy.median,
            copy.p10
        );
    }
    println!();
    println!("floor: A = memcpy of the LAN frame + ring seal of the inner packet; B = memcpy of the WAN frame + ring open");
    println!("overhead = whole - floor: medians [p10 - p10]; goals: overhead <= {GOAL_64_NS} ns at 64 B, <= {GOAL_1420_PCT} % of the floor at 1420 B");
    println!("BATCH = {BATCH}");
}

//! Seed 003's SNAT exit and firewall through the real control plane: the
//! shipped `two-site-roz-firewall.toml` applied to a `Node`, driven by the
//! forwarding turn over in-memory NICs. A VM on lan1 (the overlay segment)
//! reaches an internet host through wan0: the host sees the WAN address and
//! the VM's own source port, the answer comes back, `status` counts the
//! flow, and an apply of the same configuration keeps it.

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use rand_core::OsRng;
use routerd_control::{Forwarder, NicInfo, NicSnapshot, Node};
use routerd_dataplane::Instant;
use routerd_netdev::testing::Loopback;
use routerd_provision::message::{encode, ConntrackList, ConntrackQuery, FlowEntry, Op, Reply, Response, Status, Up, MAX_FLOW_LIST};

const MACS: [[u8; 6]; 3] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1], [0x02, 0xa0, 0, 0, 0, 2]];
const GW_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];
const VM_MAC: [u8; 6] = [0x02, 0x33, 0, 0, 0, 31];
const VM: [u8; 4] = [10, 1, 1, 31];
const WAN_IP: [u8; 4] = [192, 168, 1, 35];
const GW: [u8; 4] = [192, 168, 1, 1];
const NET: [u8; 4] = [198, 51, 100, 80];
const WAN: usize = 1;
const LAN1: usize = 2;

fn config() -> config_schema::Config {
    let path = format!("{}/../../config-schema/examples/two-site-roz-firewall.toml", env!("CARGO_MANIFEST_DIR"));
    // No resolver here: the peer by address.
    let text = std::fs::read_to_string(path).unwrap().replace("wro.example.net:51820", "192.168.1.36:51820");
    config_schema::human::from_toml(&text).expect("the example parses")
}

/// An ARP frame (`op` 1 request, 2 reply) to `eth_dst`.
fn arp(op: u8, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4], eth_dst: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, op]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

fn udp_frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src, dst, 64).udp(sport, dport).write(&mut v, payload).unwrap();
    v
}

/// A UDP datagram seen on a NIC: (src, sport, dst, dport, payload).
type Udp = ([u8; 4], u16, [u8; 4], u16, Vec<u8>);

struct TheBox {
    node: Box<Node<OsRng>>,
    nics: [Loopback; 3],
    fwd: Box<Forwarder>,
}

impl TheBox {
    fn turn(&mut self, now: Instant) {
        for _ in 0..4 {
            self.fwd.turn(&mut self.node, now, &mut self.nics[..], &mut |_| {});
        }
    }

    fn status(&mut self, now: Instant) -> Box<Status> {
        match self.node.handle(now, Op::Status { mark: false }, &[NicSnapshot { link_up: true, ..NicSnapshot::default() }; 3]) {
            Reply::Status(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn apply(&mut self, now: Instant) {
        match self.node.handle(now, Op::Apply(Box::new(config())), &[]) {
            Reply::Applied(_) => {}
            other => panic!("apply refused: {other:?}"),
        }
    }

    /// The UDP frames sent on `nic`, checksums verified.
    fn sent_udp(&mut self, nic: usize) -> Vec<Udp> {
        let mut out = Vec::new();
        for f in self.nics[nic].take_sent() {
            let Ok(h) = PacketHeaders::from_ethernet_slice(&f) else { continue };
            let (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u))) = (&h.net, &h.transport) else { continue };
            assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, h.payload.slice()).unwrap(), "UDP checksum");
            assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IPv4 checksum");
            out.push((ip.source, u.source_port, ip.destination, u.destination_port, h.payload.slice().to_vec()));
        }
        out
    }
}

fn count(s: &Status, name: &str) -> Option<u64> {
    s.counters.iter().find(|c| c.name.as_str() == name).map(|c| c.value)
}

#[test]
fn a_vm_on_the_overlay_reaches_the_internet_as_the_wan_address() {
    let mut b = TheBox {
        node: Box::new(Node::new(&MACS.map(NicInfo::ethernet), Some(OsRng), "0.1.0", "test")),
        nics: MACS.map(|m| Loopback::new(m, 64)),
        fwd: Box::new(Forwarder::new()),
    };
    let t = Instant::from_millis(1000);
    b.apply(t);
    // The VM asks for its gateway (the box learns the VM).
    b.nics[LAN1].inject(&arp(1, VM_MAC, VM, [0; 6], [10, 1, 1, 1], [0xff; 6]));
    b.turn(t);
    let _ = b.nics[LAN1].take_sent();

    // DNS-like request from the VM to the internet; the box asks for the
    // gateway's MAC, the gateway answers, the parked datagram leaves.
    b.nics[LAN1].inject(&udp_frame(MACS[LAN1], VM_MAC, VM, 43210, NET, 53, b"query"));
    b.turn(t);
    b.nics[WAN].inject(&arp(2, GW_MAC, GW, MACS[WAN], WAN_IP, MACS[WAN]));
    b.turn(t);
    let out = b.sent_udp(WAN);
    assert_eq!(out.len(), 1, "one datagram out of wan0; drops: {:?}", b.status(t).drops);
    let (src, sport, dst, dport, payload) = &out[0];
    assert_eq!((*src, *sport, *dst, *dport), (WAN_IP, 43210, NET, 53), "the WAN address, the VM's own port");
    assert_eq!(payload, b"query");

    // The answer comes back to the VM.
    b.nics[WAN].inject(&udp_frame(MACS[WAN], GW_MAC, NET, 53, WAN_IP, 43210, b"answer"));
    b.turn(t);
    let back = b.sent_udp(LAN1);
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].0, back[0].1, back[0].2, back[0].3), (NET, 53, VM, 43210));

    // Unsolicited traffic to the WAN is dropped by the firewall's default.
    b.nics[WAN].inject(&udp_frame(MACS[WAN], GW_MAC, NET, 53, WAN_IP, 999, b"x"));
    b.turn(t);
    assert!(b.sent_udp(LAN1).is_empty());

    let st = b.status(t);
    assert_eq!(count(&st, "conntrack_flows"), Some(1));
    assert_eq!(count(&st, "conntrack_capacity"), Some(config_schema::RUNS.conntrack as u64));
    assert_eq!(count(&st, "nat_flows"), Some(1));
    assert_eq!(count(&st, "fw_policy2"), Some(1), "segment → wan policy decided the flow");
    assert!(count(&st, "fw_default").is_some_and(|n| n >= 1), "{:?}", st.counters);

    // `routerctl conntrack list`: the flow, filtered on the box.
    let q = |proto, address| Op::Conntrack(ConntrackQuery { limit: 10, proto, address });
    let Reply::Conntrack(list) = b.node.handle(t, q(Some(17), Some(VM.into())), &[]) else { panic!("no conntrack reply") };
    assert_eq!((list.flows, list.matched, list.entries.len()), (1, 1, 1), "{list:?}");
    let e = &list.entries[0];
    assert_eq!((e.src, e.sport, e.dst, e.dport), (VM.into(), 43210, NET.into(), 53));
    assert_eq!(e.nat, Some((WAN_IP.into(), 43210)));
    assert_eq!(e.state.as_str(), "replied");
    let Reply::Conntrack(none) = b.node.handle(t, q(Some(6), None), &[]) else { panic!() };
    assert_eq!((none.matched, none.entries.len()), (0, 0));

    // An apply of the same configuration keeps the flow.
    let t2 = Instant::from_millis(2000);
    b.apply(t2);
    b.nics[WAN].inject(&udp_frame(MACS[WAN], GW_MAC, NET, 53, WAN_IP, 43210, b"again"));
    b.turn(t2);
    let back = b.sent_udp(LAN1);
    assert_eq!(back.len(), 1, "the flow survived the apply");
    assert_eq!(back[0].2, VM);
}

#[test]
fn a_full_conntrack_listing_fits_one_frame() {
    let e = FlowEntry {
        proto: 17,
        src: [255; 4].into(),
        sport: u16::MAX,
        dst: [255; 4].into(),
        dport: u16::MAX,
        nat: Some(([255; 4].into(), u16::MAX)),
        state: routerd_provision::message::text("established"),
        expires_in_ms: u64::MAX,
        packets: [u32::MAX; 2],
    };
    let mut list = ConntrackList { flows: u32::MAX, capacity: u32::MAX, matched: u32::MAX, entries: Default::default() };
    while list.entries.push(e.clone()).is_ok() {}
    assert_eq!(list.entries.len(), MAX_FLOW_LIST);
    let up = Up::Response(Response { seq: u32::MAX, reply: Reply::Conntrack(Box::new(list)) });
    let mut buf = vec![0u8; 64 * 1024];
    let n = encode(&up, &mut buf).expect("fits MAX_PAYLOAD").len();
    println!("maximal conntrack listing: {n} bytes");
}

//! Seed 003 on the host: the two sites of the shipped two-site examples
//! (roz, wro), each the real `routerd_control::Node` driven by the
//! forwarding turn over three in-memory NICs (lan0, wan0, lan1), joined by
//! real WireGuard. A VM on each site's lan1 talks to the other across the
//! VXLAN overlay; `Status::segments` shows what each FDB learned.

use rand_core::{OsRng, RngCore};
use routerd_control::{Forwarder, NicInfo, NicSnapshot, Node};
use routerd_dataplane::Instant;
use routerd_e2e::net;
use routerd_netdev::testing::Loopback;
use routerd_provision::message::{Op, Reply, Status};
use routerd_wireguard::SecretKey;

const ROZ_MACS: [[u8; 6]; 3] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1], [0x02, 0xa0, 0, 0, 0, 2]];
const WRO_MACS: [[u8; 6]; 3] = [[0x02, 0xb0, 0, 0, 0, 0], [0x02, 0xb0, 0, 0, 0, 1], [0x02, 0xb0, 0, 0, 0, 2]];
const VM_ROZ_MAC: [u8; 6] = [0x02, 0x33, 0, 0, 0, 31];
const VM_WRO_MAC: [u8; 6] = [0x02, 0x44, 0, 0, 0, 7];
const VM_ROZ: [u8; 4] = [10, 9, 0, 31];
const VM_WRO: [u8; 4] = [10, 9, 0, 7];
const LAN1: usize = 2;
const WAN: usize = 1;

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../../config-schema/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The shipped examples with what needs a network around the boxes
/// replaced (no resolver, no DHCP server here): the peers' DNS names by
/// addresses, wro's DHCP WAN by a static address. The two WAN ports share a
/// subnet, as two boxes behind one switch would.
fn configs(roz_pub: &str, wro_pub: &str) -> (String, String) {
    let roz = example("two-site-roz.toml")
        .replace("wro.example.net:51820", "192.168.1.36:51820")
        .replace("oMaLZx2CyStyUXbJudE35/ssTSln1HACnSHDEO1kWQE=", wro_pub);
    let wro = example("two-site-wro.toml")
        .replace("roz.example.net:51820", "192.168.1.35:51820")
        .replace("address = \"dhcp\"", "address = \"192.168.1.36/24\"\ngateway = \"192.168.1.1\"")
        .replace("DsXmsGlubU4CdxEM95hXI4oruM+wpipdxh9XNFNl8wQ=", roz_pub);
    (roz, wro)
}

struct Site {
    node: Box<Node<OsRng>>,
    nics: [Loopback; 3],
    fwd: Box<Forwarder>,
}

impl Site {
    fn new(toml: &str, macs: [[u8; 6]; 3], key: [u8; 32]) -> Site {
        let cfg = config_schema::human::from_toml(toml).expect("config parses");
        let infos = macs.map(NicInfo::ethernet);
        let mut node = Box::new(Node::new(&infos, Some(OsRng), "0.1.0", "test"));
        let slot = config_schema::Name::new("wg0").unwrap();
        assert!(matches!(node.handle(Instant::ZERO, Op::KeyImport(slot, key), &[]), Reply::Keys(_)));
        match node.handle(Instant::ZERO, Op::Apply(Box::new(cfg)), &[]) {
            Reply::Applied(_) => {}
            other => panic!("apply refused: {other:?}"),
        }
        Site { node, nics: macs.map(|m| Loopback::new(m, 64)), fwd: Box::new(Forwarder::new()) }
    }

    fn turn(&mut self, now: Instant) {
        self.fwd.turn(&mut self.node, now, &mut self.nics[..], &mut |_| {});
    }

    fn status(&mut self, now: Instant) -> Box<Status> {
        match self.node.handle(now, Op::Status { mark: false }, &[NicSnapshot { link_up: true, ..NicSnapshot::default() }; 3]) {
            Reply::Status(s) => s,
            other => panic!("{other:?}"),
        }
    }
}

/// Runs both boxes, carrying WAN frames across, until both are quiet;
/// collects what each sent on its lan1.
fn pump(now: Instant, a: &mut Site, b: &mut Site, a_lan1: &mut Vec<Vec<u8>>, b_lan1: &mut Vec<Vec<u8>>) {
    for _ in 0..1000 {
        a.turn(now);
        b.turn(now);
        let (a_wan, b_wan) = (a.nics[WAN].take_sent(), b.nics[WAN].take_sent());
        a_lan1.extend(a.nics[LAN1].take_sent());
        b_lan1.extend(b.nics[LAN1].take_sent());
        if a_wan.is_empty() && b_wan.is_empty() && a.nics[LAN1].pending() == 0 && b.nics[LAN1].pending() == 0 {
            return;
        }
        for f in a_wan {
            b.nics[WAN].inject(&f);
        }
        for f in b_wan {
            a.nics[WAN].inject(&f);
        }
    }
    panic!("the boxes never went quiet");
}

fn counter(st: &Status, name: &str) -> u64 {
    st.counters.iter().chain(&st.drops).find(|c| c.name.as_str() == name).map_or(0, |c| c.value)
}

#[test]
fn vms_on_both_sites_are_learned_through_the_encrypted_overlay() {
    let (mut roz_key, mut wro_key) = ([0u8; 32], [0u8; 32]);
    OsRng.fill_bytes(&mut roz_key);
    OsRng.fill_bytes(&mut wro_key);
    let roz_pub = SecretKey::from_bytes(roz_key).public_key().to_base64();
    let wro_pub = SecretKey::from_bytes(wro_key).public_key().to_base64();
    let (roz_cfg, wro_cfg) = configs(roz_pub.as_str(), wro_pub.as_str());
    let mut roz = Site::new(&roz_cfg, ROZ_MACS, roz_key);
    let mut wro = Site::new(&wro_cfg, WRO_MACS, wro_key);
    let (mut roz_lan1, mut wro_lan1) = (Vec::new(), Vec::new());
    let mut now = Instant::from_millis(1000);

    // Nothing learned before any VM spoke; the segment is reported as configured.
    let st = roz.status(now);
    assert_eq!(st.segments.len(), 1);
    let g = &st.segments[0];
    assert_eq!((g.name.as_str(), g.vni, g.port.as_str(), g.udp_port), ("crosssite", 100_000, "lan1", 4789));
    assert_eq!((g.fdb_local, g.fdb_remote), (0, 0));
    assert_eq!(g.vteps.iter().map(|v| (v.address.to_string(), v.fdb_remote)).collect::<Vec<_>>(), [("10.2.0.1".to_string(), 0)]);

    // The roz VM asks for the wro VM: the broadcast is flooded into the
    // tunnel (the first one starts the handshake; ARP retries carry it).
    let ask = net::arp_request(VM_ROZ_MAC, VM_ROZ, VM_WRO);
    let mut asked = false;
    for _ in 0..5 {
        roz.nics[LAN1].inject(&ask);
        pump(now, &mut roz, &mut wro, &mut roz_lan1, &mut wro_lan1);
        if wro_lan1.iter().any(|f| net::parse_arp(f).is_some_and(|(_, mac, _, tpa)| mac == VM_ROZ_MAC && tpa == VM_WRO)) {
            asked = true;
            break;
        }
        now = now.plus_millis(1000);
    }
    assert!(asked, "the ARP request crossed the overlay to wro's lan1");

    // The wro VM answers, unicast: wro knows where the roz VM is and
    // encapsulates to roz's VTEP only.
    let answer = wro_lan1.iter().find_map(|f| net::answer_arp(f, VM_WRO, VM_WRO_MAC)).expect("an ARP request to answer");
    wro.nics[LAN1].inject(&answer);
    pump(now, &mut roz, &mut wro, &mut roz_lan1, &mut wro_lan1);
    assert!(
        roz_lan1.iter().any(|f| f[..6] == VM_ROZ_MAC && f[6..12] == VM_WRO_MAC),
        "the ARP reply came back to the roz VM through the overlay"
    );

    // Each side: its own VM on lan1, the other's behind the other VTEP.
    for (site, other_vtep) in [(&mut roz, "10.2.0.1"), (&mut wro, "10.1.0.1")] {
        let st = site.status(now);
        let g = &st.segments[0];
        assert_eq!((g.fdb_local, g.fdb_remote), (1, 1), "{}: {g:?}", st.device);
        assert_eq!(g.vteps[0].address.to_string(), other_vtep);
        assert_eq!(g.vteps[0].fdb_remote, 1);
        assert!(counter(&st, "vxlan_encap") >= 1 && counter(&st, "vxlan_decap") >= 1, "{:?}", st.counters);
        assert_eq!(counter(&st, "vxlan_unknown_vtep") + counter(&st, "vxlan_unknown_vni"), 0, "{:?}", st.drops);
        let mut summary = String::new();
        st.write_summary(&mut summary).unwrap();
        assert!(summary.contains("segment crosssite: vni 100000 on lan1, fdb 1 local, 1 remote, 1 behind "), "{summary}");
    }

    // A full-size frame from the roz VM (1500-byte IPv4 packet) does not fit
    // the overlay (1370): dropped, never fragmented, and counted.
    let big = net::ethernet(VM_ROZ_MAC, VM_WRO_MAC, &net::icmp_echo_packet(VM_ROZ, VM_WRO, 1, 1472, true));
    roz.nics[LAN1].inject(&big);
    pump(now, &mut roz, &mut wro, &mut roz_lan1, &mut wro_lan1);
    assert_eq!(counter(&roz.status(now), "vxlan_oversize"), 1);

    // Entries past the FDB's age no longer count, even before a poll expires them.
    let later = now.plus_millis(routerd_dataplane::Timing::default().fdb_age_ms);
    let g = &roz.status(later).segments[0];
    assert_eq!((g.fdb_local, g.fdb_remote, g.vteps[0].fdb_remote), (0, 0, 0), "{g:?}");
}

#[test]
fn a_box_without_segments_reports_none() {
    let mut n = Node::<OsRng>::new(&[NicInfo::ethernet(ROZ_MACS[0]), NicInfo::ethernet(ROZ_MACS[1])], Some(OsRng), "0.1.0", "test");
    let text = example("hybrid-onprem.toml");
    let cfg = config_schema::human::from_toml(&text).unwrap();
    assert!(matches!(n.handle(Instant::ZERO, Op::Apply(Box::new(cfg)), &[]), Reply::Applied(_)));
    let Reply::Status(st) = n.handle(Instant::from_millis(1), Op::Status { mark: false }, &[]) else { panic!() };
    assert!(st.configured && st.segments.is_empty());
}

/// The clamp the box applies on a segment is the one doctor shows: `auto`
/// is mtu − 40 when the segment's `mtu` is below its carrier's budget, and
/// the dataplane's per-VTEP derivation (carrier − 90) at the budget.
#[test]
fn a_segment_mtu_below_the_budget_lowers_the_auto_clamp() {
    let (roz, _) = configs("oMaLZx2CyStyUXbJudE35/ssTSln1HACnSHDEO1kWQE=", "DsXmsGlubU4CdxEM95hXI4oruM+wpipdxh9XNFNl8wQ=");
    let nics = [NicInfo::ethernet([2, 0, 0, 0, 0, 1]), NicInfo::ethernet([2, 0, 0, 0, 0, 2]), NicInfo::ethernet([2, 0, 0, 0, 0, 3])];
    let at_budget = config_schema::human::from_toml(&roz).unwrap();
    let rt = routerd_control::build(&at_budget, &nics).unwrap();
    assert_eq!(rt.dataplane.segments[0].mss, None, "1370 is the budget: the dataplane derives 1330 per VTEP");
    assert_eq!(config_schema::budget::segment_budget(&at_budget, &at_budget.segments[0]).auto_mss, 1330);
    let lower = config_schema::human::from_toml(&roz.replace("mtu = 1370", "mtu = 1300")).unwrap();
    let rt = routerd_control::build(&lower, &nics).unwrap();
    assert_eq!(rt.dataplane.segments[0].mss, Some(1260), "doctor's figure: 1300 − 40");
    assert_eq!(config_schema::budget::segment_budget(&lower, &lower.segments[0]).auto_mss, 1260);
}

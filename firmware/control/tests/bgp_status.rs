//! What the node reports of its BGP EVPN service: `Status::bgp` (sessions,
//! VNIs, flood lists, MAC counts) and `Op::BgpRoutes` (the route table, a
//! page at a time), on two boxes whose sessions come up over their
//! WireGuard tunnel — the boxes of `evpn_node.rs` (the real `Node`, the real
//! forwarding turn, in-memory NICs), set up the same way: the configuration
//! runs without `[bgp]` (a static segment without VTEPs) and the BGP service
//! is set up from the full configuration (`BgpSetup::from_config`, what the
//! apply does), so this test does not depend on whether a platform accepts
//! `[bgp]` yet. Time is virtual: the hold-time expiry costs no wall time.
//!
//! Runs on an 8 MiB thread: a debug build moves the BGP service's RIB
//! (≈ 340 KiB) through the stack more than once.

use rand_core::{OsRng, RngCore};
use routerd_control::bgp::BgpSetup;
use routerd_control::{Forwarder, NicInfo, Node};
use routerd_dataplane::Instant;
use routerd_netdev::testing::Loopback;
use routerd_provision::frame::MAX_PAYLOAD;
use routerd_provision::message::{encode, BgpRoute, BgpRoutes, BgpState, BgpStatus, FailureKind, Op, Reply, Response, Status, Up};
use routerd_wireguard::SecretKey;
use std::net::Ipv4Addr;

const A_MACS: [[u8; 6]; 3] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1], [0x02, 0xa0, 0, 0, 0, 2]];
const B_MACS: [[u8; 6]; 3] = [[0x02, 0xc0, 0, 0, 0, 0], [0x02, 0xc0, 0, 0, 0, 1], [0x02, 0xc0, 0, 0, 0, 2]];
const A_TUN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const B_TUN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const VM: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 0x01];

fn config(side: &str, lan: &str, wan: &str, tunnel: &str, peer_key: &str, endpoint: &str, other: Ipv4Addr) -> String {
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

[[ports]]
name = "lan1"
role = "lan"

[[wireguard]]
name = "wg0"
private_key = "device:wg0"
address = "{tunnel}/24"

[[peers]]
name = "other"
tunnel = "wg0"
public_key = "{peer_key}"
endpoint = "{endpoint}"
allowed_ips = ["{other}/32"]

[[segments]]
name = "zone"
vni = 100
port = "lan1"
local_vtep = "{tunnel}"
control = "evpn"

[bgp]
asn = 65000
hold_time = 9
peers = [{{ address = "{other}", name = "other" }}]
"#
    )
}

struct Site {
    node: Box<Node<OsRng>>,
    nics: [Loopback; 3],
    fwd: Box<Forwarder>,
}

impl Site {
    fn new(toml: &str, macs: [[u8; 6]; 3], key: [u8; 32]) -> Site {
        let cfg = config_schema::human::from_toml(toml).expect("config parses");
        let infos = macs.map(|mac| NicInfo { mac });
        let mut node = Box::new(Node::new(&infos, Some(OsRng), "0.1.0", "test"));
        node.set_platform(config_schema::Platform::Host);
        let slot = config_schema::Name::new("wg0").unwrap();
        assert!(matches!(node.handle(Instant::ZERO, Op::KeyImport(slot, key), &[]), Reply::Keys(_)));
        let mut plain = cfg.clone();
        plain.bgp = None;
        plain.segments[0].control = config_schema::SegmentControl::Static;
        match node.handle(Instant::ZERO, Op::Apply(Box::new(plain)), &[]) {
            Reply::Applied(_) => {}
            other => panic!("apply refused: {other:?}"),
        }
        let setup = BgpSetup::from_config(&cfg).expect("[bgp]");
        node.forwarding().expect("configured").services.set_bgp(Some(setup), 7, Instant::ZERO).expect("BGP set up");
        Site { node, nics: macs.map(|m| Loopback::new(m, 64)), fwd: Box::new(Forwarder::new()) }
    }

    fn turn(&mut self, now: Instant) {
        self.fwd.turn(&mut self.node, now, &mut self.nics[..], &mut |_| {});
    }

    fn status(&mut self, now: Instant) -> Box<Status> {
        match self.node.handle(now, Op::Status { mark: false }, &[]) {
            Reply::Status(st) => st,
            other => panic!("no status: {other:?}"),
        }
    }

    fn bgp_status(&mut self, now: Instant) -> BgpStatus {
        self.status(now).bgp.expect("status reports BGP")
    }

    fn routes(&mut self, now: Instant, vni: Option<u32>, offset: u32) -> Box<BgpRoutes> {
        match self.node.handle(now, Op::BgpRoutes { vni, offset }, &[]) {
            Reply::BgpRoutes(r) => r,
            other => panic!("no routes: {other:?}"),
        }
    }
}

/// Runs both boxes until quiet; WAN frames cross when `wire` is up.
fn pump(now: Instant, a: &mut Site, b: &mut Site, wire: bool) {
    for _ in 0..200 {
        a.turn(now);
        b.turn(now);
        let (a_wan, b_wan) = (a.nics[1].take_sent(), b.nics[1].take_sent());
        for site in [&mut *a, &mut *b] {
            site.nics[0].take_sent();
            site.nics[2].take_sent();
        }
        if a_wan.is_empty() && b_wan.is_empty() {
            return;
        }
        if wire {
            for f in a_wan {
                b.nics[1].inject(&f);
            }
            for f in b_wan {
                a.nics[1].inject(&f);
            }
        }
    }
    panic!("the boxes never went quiet");
}

/// An ARP request from the VM (broadcast: flooded to every VTEP).
fn arp_from_vm() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&VM);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&VM);
    f.extend_from_slice(&[10, 50, 0, 1, 0, 0, 0, 0, 0, 0, 10, 50, 0, 2]);
    f.resize(60, 0);
    f
}

/// The reply fits one frame, as the box must send it.
fn fits(reply: Reply) {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    encode(&Up::Response(Response { seq: 1, reply }), &mut buf).expect("the reply fits a frame");
}

#[test]
fn status_and_routes_show_the_sessions_vteps_and_macs() {
    let t = std::thread::Builder::new().stack_size(8 << 20).spawn(run).expect("thread");
    t.join().expect("the test passed");
}

fn run() {
    let (mut a_key, mut b_key) = ([0u8; 32], [0u8; 32]);
    OsRng.fill_bytes(&mut a_key);
    OsRng.fill_bytes(&mut b_key);
    let a_pub = SecretKey::from_bytes(a_key).public_key().to_base64();
    let b_pub = SecretKey::from_bytes(b_key).public_key().to_base64();
    let a_cfg = config("onprem", "10.20.0.2/24", "192.0.2.1/24", "10.1.0.1", b_pub.as_str(), "192.0.2.2:51820", B_TUN);
    let b_cfg = config("cloud", "10.30.0.3/24", "192.0.2.2/24", "10.1.0.2", a_pub.as_str(), "192.0.2.1:51820", A_TUN);
    let (mut a, mut b) = (Site::new(&a_cfg, A_MACS, a_key), Site::new(&b_cfg, B_MACS, b_key));

    // Before any session: the peer is not Established, nothing learned,
    // only our own type 3 in the table.
    let start = Instant::from_millis(1000);
    let s = a.bgp_status(start);
    assert_eq!((s.asn, s.router_id, s.hold_time, s.vtep), (65000, A_TUN, 9, A_TUN));
    assert_eq!(s.peers.len(), 1);
    assert_ne!(s.peers[0].state, BgpState::Established);
    assert_eq!((s.peers[0].uptime_ms, s.peers[0].established, s.peers[0].last_down.as_str()), (None, 0, ""));
    assert_eq!(s.vnis.len(), 1);
    assert_eq!((s.vnis[0].vni, s.vnis[0].segment.as_ref().map(|n| n.as_str())), (100, Some("zone")));
    assert!(s.vnis[0].flood_list.is_empty());
    let r = a.routes(start, None, 0);
    assert_eq!(r.total, 1, "{r:?}");
    assert_eq!((r.routes[0].route_type, r.routes[0].vni, r.routes[0].next_hop, &r.routes[0].peer), (3, 100, A_TUN, &None));

    // Sessions up, and the VM on B's bridged port advertised (within a second).
    let mut now = start;
    let mut up = false;
    for _ in 0..600 {
        pump(now, &mut a, &mut b, true);
        let st = a.bgp_status(now);
        if st.peers[0].state == BgpState::Established && !st.vnis[0].flood_list.is_empty() {
            up = true;
            break;
        }
        now = now.plus_millis(100);
    }
    assert!(up, "sessions not up after 60 s: {:?}", a.bgp_status(now));
    b.nics[2].inject(&arp_from_vm());
    for _ in 0..20 {
        now = now.plus_millis(100);
        pump(now, &mut a, &mut b, true);
    }

    let st = a.status(now);
    fits(Reply::Status(st.clone()));
    let s = st.bgp.expect("A reports BGP");
    let p = &s.peers[0];
    assert_eq!((p.address, p.name.as_str(), p.state), (B_TUN, "other", BgpState::Established));
    assert!(p.uptime_ms.is_some_and(|ms| ms >= 2000), "{p:?}");
    assert_eq!((p.prefixes_received, p.established), (2, 1), "B's type 3 and type 2: {p:?}");
    // Both dialled at once: the loser of the collision rule may have lost
    // a connection in OpenSent (a down before the session ever came up).
    let downs_before = p.downs;
    assert!(downs_before <= 1 && (downs_before == 0) == p.last_down.is_empty(), "{p:?}");
    assert!(p.messages_in >= 3 && p.messages_out >= 3, "OPEN, KEEPALIVE, UPDATEs: {p:?}");
    let v = &s.vnis[0];
    assert_eq!((v.flood_list.as_slice(), v.flood_list_total, v.remote_macs, v.local_macs), (&[B_TUN][..], 1, 1, 0));
    // B advertises the VM's MAC and learned nothing from A but its VTEP.
    let bs = b.bgp_status(now);
    assert_eq!((bs.vnis[0].flood_list.as_slice(), bs.vnis[0].remote_macs, bs.vnis[0].local_macs), (&[A_TUN][..], 0, 1));
    assert_eq!(bs.peers[0].prefixes_received, 1, "A's type 3");

    // A's table: its own type 3, B's type 3 and B's type 2 for the VM.
    let r = a.routes(now, None, 0);
    fits(Reply::BgpRoutes(r.clone()));
    assert_eq!((r.total, r.offset, r.routes.len()), (3, 0, 3), "{r:#?}");
    let find = |t: u8, from_b: bool| -> &BgpRoute {
        r.routes
            .iter()
            .find(|x| x.route_type == t && x.peer.is_some() == from_b)
            .unwrap_or_else(|| panic!("no type {t} (from B: {from_b}): {r:#?}"))
    };
    let own = find(3, false);
    assert_eq!((own.vni, own.next_hop, own.mac, own.ip), (100, A_TUN, None, None));
    assert!(own.rd.starts_with("10.1.0.1:"), "RD router-id:n: {}", own.rd);
    let imet = find(3, true);
    let from = imet.peer.as_ref().unwrap();
    assert_eq!((imet.vni, imet.next_hop, from.address, from.name.as_str()), (100, B_TUN, B_TUN, "other"));
    assert!(imet.rd.starts_with("10.1.0.2:"), "{}", imet.rd);
    let mac = find(2, true);
    assert_eq!((mac.vni, mac.mac, mac.next_hop, mac.seq), (100, Some(VM), B_TUN, 0));
    // B lists its own type 2 for the VM.
    let br = b.routes(now, Some(100), 0);
    assert!(br.routes.iter().any(|x| x.route_type == 2 && x.mac == Some(VM) && x.peer.is_none() && x.next_hop == B_TUN), "{br:#?}");

    // Filters and pages.
    assert_eq!(a.routes(now, Some(7), 0).total, 0, "another VNI has none");
    let tail = a.routes(now, None, 2);
    assert_eq!((tail.total, tail.offset, tail.routes.len()), (3, 2, 1));
    assert_eq!(tail.routes[0], r.routes[2], "positions are stable");
    let past = a.routes(now, Some(100), 3);
    assert_eq!((past.total, past.routes.len()), (3, 0));

    // The wire is cut: A's hold timer (9 s) ends the session; status says
    // so, with the reason, and B's routes are gone.
    let mut down = None;
    for _ in 0..30 {
        now = now.plus_millis(1000);
        pump(now, &mut a, &mut b, false);
        let s = a.bgp_status(now);
        if s.peers[0].downs > downs_before {
            down = Some(s);
            break;
        }
    }
    let s = down.expect("A's session went down within the hold time");
    let p = &s.peers[0];
    assert_ne!(p.state, BgpState::Established);
    assert_eq!((p.uptime_ms, p.prefixes_received, p.established, p.downs), (None, 0, 1, downs_before + 1));
    assert_eq!(p.last_down.as_str(), "sent NOTIFICATION 4/0 (hold timer expired)");
    assert_eq!((s.vnis[0].flood_list_total, s.vnis[0].remote_macs), (0, 0));
    assert_eq!(a.routes(now, None, 0).total, 1, "only A's own type 3 is left");

    // Without BGP: no `bgp` in status, and the routes are refused by name.
    a.node.forwarding().expect("configured").services.set_bgp(None, 0, now).expect("BGP removed");
    assert!(a.status(now).bgp.is_none());
    match a.node.handle(now, Op::BgpRoutes { vni: None, offset: 0 }, &[]) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::NotConfigured);
            assert!(f.message.contains("[bgp]"), "{}", f.message);
        }
        other => panic!("routes without BGP: {other:?}"),
    }
}

//! What the node reports of its BGP EVPN service: `Status::bgp` (sessions,
//! VNIs, flood lists, MAC counts) and `Op::BgpRoutes` (the route table, a
//! page at a time), on two boxes whose sessions come up over their
//! WireGuard tunnel — the EVPN pair of `evpn_node.rs` (`common::evpn_pair`:
//! the real `Node`, the real forwarding turn, in-memory NICs), except that
//! here the configuration runs without `[bgp]` (a static segment without VTEPs) and the BGP service
//! is set up from the full configuration (`BgpSetup::from_config`, what the
//! apply does), so this test does not depend on whether a platform accepts
//! `[bgp]` yet. Time is virtual: the hold-time expiry costs no wall time.
//!
//! Runs on an 8 MiB thread: a debug build moves the BGP service's RIB
//! (≈ 340 KiB) through the stack more than once.

mod common;

use common::{arp_from_vm, evpn_pair, on_big_stack, Site, A_MACS, A_TUN, B_MACS, B_TUN, VM};
use routerd_control::bgp::BgpSetup;
use routerd_dataplane::Instant;
use routerd_provision::frame::MAX_PAYLOAD;
use routerd_provision::message::{encode, BgpRoute, BgpRoutes, BgpState, BgpStatus, FailureKind, Op, Reply, Response, Status, Up};

/// A box of the EVPN pair that applies its configuration without `[bgp]`
/// (a static segment without VTEPs) and sets up the BGP service from the
/// full configuration, as the apply does.
fn evpn_box(cfg: config_schema::Config, macs: [[u8; 6]; 3], key: [u8; 32]) -> Site<3> {
    let mut site = Site::bare(macs, key, Some(config_schema::Platform::Host));
    let mut plain = cfg.clone();
    plain.bgp = None;
    plain.segments[0].control = config_schema::SegmentControl::Static;
    site.apply(plain);
    let setup = BgpSetup::from_config(&cfg).expect("[bgp]");
    site.services().set_bgp(Some(setup), 7, Instant::ZERO).expect("BGP set up");
    site
}

// What this test asks of a box: its status, the BGP part of it, its routes.
impl Site<3> {
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
fn pump(now: Instant, a: &mut Site<3>, b: &mut Site<3>, wire: bool) {
    common::pump(now, a, b, wire, 200, &mut |_, _, _| {});
}

/// The reply fits one frame, as the box must send it.
fn fits(reply: Reply) {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    encode(&Up::Response(Response { seq: 1, reply }), &mut buf).expect("the reply fits a frame");
}

#[test]
fn status_and_routes_show_the_sessions_vteps_and_macs() {
    on_big_stack(run);
}

fn run() {
    let ((a_cfg, a_key), (b_cfg, b_key)) = evpn_pair();
    let (mut a, mut b) = (evpn_box(a_cfg, A_MACS, a_key), evpn_box(b_cfg, B_MACS, b_key));

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
    a.services().set_bgp(None, 0, now).expect("BGP removed");
    assert!(a.status(now).bgp.is_none());
    match a.node.handle(now, Op::BgpRoutes { vni: None, offset: 0 }, &[]) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::NotConfigured);
            assert!(f.message.contains("[bgp]"), "{}", f.message);
        }
        other => panic!("routes without BGP: {other:?}"),
    }
}

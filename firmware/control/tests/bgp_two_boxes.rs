//! BGP between two boxes: the two boxes of `two_boxes.rs` (the real
//! `Node`, the real forwarding turn, in-memory NICs, real WireGuard over a
//! simulated underlay wire), each with a tunnel address and the BGP
//! service set up through `Services::set_bgp`. The sessions run over the
//! services layer's TCP endpoint (smoltcp) through the tunnel; time is
//! virtual, so a hold-time expiry costs no wall time.
//!
//! The boxes and the pump are `two_boxes.rs`'s (`common`); the
//! configuration is narrowed to what BGP needs, with a tunnel address per
//! box and no claims.

mod common;

use common::{key_pair, Site, A_TUN, B_TUN};
use routerd_bgp::{DownReason, Mac, State};
use routerd_control::bgp::BgpSetup;
use routerd_dataplane::Instant;
use routerd_provision::message::{Op, Reply};
use std::net::Ipv4Addr;

const A_MACS: [[u8; 6]; 2] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1]];
const B_MACS: [[u8; 6]; 2] = [[0x02, 0xc0, 0, 0, 0, 0], [0x02, 0xc0, 0, 0, 0, 1]];
const ASN: u32 = 65000;
const VNI: u32 = 100;
const VM_MAC: Mac = Mac([0x02, 0, 0, 0, 0xaa, 0x01]);

#[allow(clippy::too_many_arguments)]
fn config(side: &str, lan: &str, wan: &str, tunnel: &str, peer_name: &str, peer_key: &str, endpoint: &str, peer_allowed: &str) -> String {
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
address = "{tunnel}"

[[peers]]
name = "{peer_name}"
tunnel = "wg0"
public_key = "{peer_key}"
endpoint = "{endpoint}"
allowed_ips = [{peer_allowed}]
"#
    )
}

impl Site<2> {
    /// A counter or drop by name, from status.
    fn count(&mut self, now: Instant, name: &str) -> u64 {
        let Reply::Status(st) = self.node.handle(now, Op::Status { mark: false }, &[]) else { panic!("no status") };
        st.counters.iter().chain(st.drops.iter()).filter(|c| c.name.as_str() == name).map(|c| c.value).sum()
    }
}

/// Runs both boxes until quiet; WAN frames cross when `wire` is up.
fn pump(now: Instant, a: &mut Site<2>, b: &mut Site<2>, wire: bool) {
    common::pump(now, a, b, wire, 200, &mut |_, _, _| {});
}

fn setup(peer: Ipv4Addr, vtep: Ipv4Addr) -> BgpSetup {
    let mut s = BgpSetup { asn: ASN, router_id: vtep, peers: heapless::Vec::new(), vnis: heapless::Vec::new(), hold_time: 90 };
    s.peers.push((peer, config_schema::Name::new("other").unwrap())).unwrap();
    s.vnis.push((VNI, vtep)).unwrap();
    s
}

fn two_boxes() -> (Site<2>, Site<2>) {
    let ((a_key, a_pub), (b_key, b_pub)) = (key_pair(), key_pair());
    let a_cfg =
        config("onprem", "10.20.0.2/24", "192.0.2.1/24", "10.1.0.1/24", "cloud", b_pub.as_str(), "192.0.2.2:51820", "\"10.1.0.2/32\"");
    let b_cfg =
        config("cloud", "10.30.0.3/24", "192.0.2.2/24", "10.1.0.2/24", "onprem", a_pub.as_str(), "192.0.2.1:51820", "\"10.1.0.1/32\"");
    (Site::new(&a_cfg, A_MACS, a_key), Site::new(&b_cfg, B_MACS, b_key))
}

#[test]
fn two_boxes_exchange_evpn_routes_over_the_tunnel_and_withdraw_them_at_hold_expiry() {
    let (mut a, mut b) = two_boxes();
    let mut now = Instant::from_millis(1000);
    pump(now, &mut a, &mut b, true);
    a.services().set_bgp(Some(setup(B_TUN, A_TUN)), 1, now).expect("A's setup");
    b.services().set_bgp(Some(setup(A_TUN, B_TUN)), 2, now).expect("B's setup");
    a.bgp().set_local_macs(VNI, &[VM_MAC]).expect("A's MAC");
    assert!(a.bgp().set_local_macs(7, &[VM_MAC]).is_err(), "a VNI not set up is refused");

    // Both dial; WireGuard's first handshake eats the first SYNs, TCP
    // retransmits, the collision rule keeps one connection.
    let mut up = None;
    for step in 0..600 {
        pump(now, &mut a, &mut b, true);
        if a.state() == State::Established && b.state() == State::Established && b.bgp().remote_macs(VNI).next().is_some() {
            up = Some(step);
            break;
        }
        now = now.plus_millis(100);
    }
    assert!(
        up.is_some(),
        "sessions not up after 60 s: A {:?} B {:?}, A {:?} B {:?}, tcp A {:?} B {:?}",
        a.state(),
        b.state(),
        a.bgp().counters(),
        b.bgp().counters(),
        a.services().tcp().map(|t| t.counters()),
        b.services().tcp().map(|t| t.counters()),
    );
    // Both dialled at once: the address rule kept B's dial (B > A), A took it.
    assert_eq!((a.bgp().counters().accepted, b.bgp().counters().accepted), (1, 0));
    assert!(a.bgp().counters().collisions + b.bgp().counters().collisions > 0);
    // B learned A's VTEP for VNI 100 and A's MAC behind it; A learned B's VTEP.
    assert_eq!(b.bgp().flood_list(VNI).collect::<Vec<_>>(), [A_TUN]);
    let macs: Vec<_> = b.bgp().remote_macs(VNI).collect();
    assert_eq!(macs.len(), 1, "{macs:?}");
    assert_eq!((macs[0].mac, macs[0].vtep), (VM_MAC, A_TUN));
    pump(now, &mut a, &mut b, true);
    assert_eq!(a.bgp().flood_list(VNI).collect::<Vec<_>>(), [B_TUN]);
    assert!(a.bgp().remote_macs(VNI).next().is_none());
    assert!(a.bgp().take_changed() && !a.bgp().take_changed(), "A's RIB changed once");
    assert!(b.bgp().take_changed());
    let a_peer = a.bgp().sessions().next().unwrap();
    assert_eq!(a_peer.prefixes_received, 1, "B's type 3");
    assert_eq!(a_peer.established, 1);
    assert!(a_peer.uptime_ms(now).is_some());
    let b_peer = b.bgp().sessions().next().unwrap();
    assert_eq!(b_peer.prefixes_received, 2, "A's type 3 and type 2");
    assert!(a.count(now, "local_delivered") > 0);

    // A MAC withdrawn on A leaves B's RIB.
    a.bgp().set_local_macs(VNI, &[]).unwrap();
    for _ in 0..5 {
        pump(now, &mut a, &mut b, true);
        now = now.plus_millis(100);
    }
    assert!(b.bgp().remote_macs(VNI).next().is_none(), "withdrawal reached B");
    assert_eq!(b.bgp().sessions().next().unwrap().prefixes_received, 1);

    // Keepalives keep the sessions up for five minutes.
    for _ in 0..300 {
        pump(now, &mut a, &mut b, true);
        now = now.plus_millis(1000);
    }
    assert_eq!((a.state(), b.state()), (State::Established, State::Established));
    let _ = a.bgp().take_changed();

    // The wire is cut: nothing crosses. A's hold timer (90 s) ends the
    // session and withdraws B's routes; the last keepalive arrived at most
    // 30 s before the cut.
    let cut = now;
    let mut down = None;
    for _ in 0..120 {
        now = now.plus_millis(1000);
        pump(now, &mut a, &mut b, false);
        if a.bgp().flood_list(VNI).next().is_none() {
            down = Some(now);
            break;
        }
    }
    let down = down.expect("A withdrew B's routes within the hold time");
    let after = down.millis() - cut.millis();
    assert!((60_000..=91_000).contains(&after), "down {after} ms after the cut");
    let a_peer = a.bgp().sessions().next().unwrap();
    assert_eq!(a_peer.last_down, Some(DownReason::NotificationSent { code: 4, subcode: 0 }), "hold timer expired");
    assert_eq!(a_peer.prefixes_received, 0);
    assert_ne!(a_peer.state, State::Established);
    assert!(a.bgp().take_changed());

    // The wire back: the sessions come up again (A's back-off and
    // ConnectRetry, B's own hold expiry) and the routes return.
    let mut back = false;
    for _ in 0..1200 {
        now = now.plus_millis(250);
        pump(now, &mut a, &mut b, true);
        let both_up = a.state() == State::Established && b.state() == State::Established;
        if both_up && a.bgp().flood_list(VNI).next() == Some(B_TUN) && b.bgp().flood_list(VNI).next() == Some(A_TUN) {
            back = true;
            break;
        }
    }
    assert!(back, "sessions back: A {:?} B {:?}", a.state(), b.state());
}

/// Stopping B's service sends Cease: A withdraws at once.
#[test]
fn a_stopped_peer_is_withdrawn_at_once() {
    let (mut a, mut b) = two_boxes();
    let mut now = Instant::from_millis(1000);
    pump(now, &mut a, &mut b, true);
    a.services().set_bgp(Some(setup(B_TUN, A_TUN)), 3, now).unwrap();
    b.services().set_bgp(Some(setup(A_TUN, B_TUN)), 4, now).unwrap();
    for _ in 0..600 {
        pump(now, &mut a, &mut b, true);
        if a.bgp().flood_list(VNI).next().is_some() {
            break;
        }
        now = now.plus_millis(100);
    }
    assert_eq!(a.bgp().flood_list(VNI).collect::<Vec<_>>(), [B_TUN]);
    let (bgp, tcp) = b.services().bgp_mut().unwrap();
    bgp.stop(now, tcp);
    now = now.plus_millis(10);
    pump(now, &mut a, &mut b, true);
    now = now.plus_millis(10);
    pump(now, &mut a, &mut b, true);
    assert!(a.bgp().flood_list(VNI).next().is_none(), "A withdrew B's routes");
    assert_eq!(a.bgp().sessions().next().unwrap().last_down, Some(DownReason::NotificationReceived { code: 6, subcode: 2 }));
    // Removing the service closes the dataplane's admission again.
    b.services().set_bgp(None, 0, now).unwrap();
    pump(now, &mut a, &mut b, true);
    assert!(b.node.forwarding().unwrap().dataplane.bgp_peers().is_empty());
}

fn syn(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(40000, dport, 1000, 64240)
        .syn()
        .write(&mut f, &[])
        .unwrap();
    f
}

/// TCP to the box is admitted only from a configured BGP peer, to or from
/// port 179, on a LAN port: anything else is a counted drop.
#[test]
fn only_bgp_peers_tcp_reaches_the_box_and_never_from_the_wan() {
    let (mut a, _b) = two_boxes();
    let now = Instant::from_millis(1000);
    a.turn(now);
    let peer = [10, 20, 0, 77];
    let mut s = setup(Ipv4Addr::from(peer), A_TUN);
    s.peers.push((Ipv4Addr::new(192, 0, 2, 9), config_schema::Name::new("wan-side").unwrap())).unwrap();
    a.services().set_bgp(Some(s), 5, now).unwrap();
    a.turn(now);
    assert_eq!(a.node.forwarding().unwrap().dataplane.bgp_peers(), [Ipv4Addr::from(peer), Ipv4Addr::new(192, 0, 2, 9)]);
    let host_mac = [0x02, 0x11, 0, 0, 0, 77];
    let (unhandled, wan, delivered) = (a.count(now, "local_unhandled"), a.count(now, "wan_not_wireguard"), a.count(now, "local_delivered"));

    // Not a peer, to 179 on the LAN.
    a.nics[0].inject(&syn([0x02, 0x11, 0, 0, 0, 78], A_MACS[0], [10, 20, 0, 78], [10, 20, 0, 2], 179));
    a.turn(now);
    assert_eq!(a.count(now, "local_unhandled"), unhandled + 1, "non-peer TCP dropped");
    // A peer, to another port.
    a.nics[0].inject(&syn(host_mac, A_MACS[0], peer, [10, 20, 0, 2], 22));
    a.turn(now);
    assert_eq!(a.count(now, "local_unhandled"), unhandled + 2, "a peer's TCP to port 22 dropped");
    // A configured peer on the WAN, to 179 on the WAN address.
    a.nics[1].inject(&syn([0x02, 0xee, 0, 0, 0, 9], A_MACS[1], [192, 0, 2, 9], [192, 0, 2, 1], 179));
    a.turn(now);
    assert_eq!(a.count(now, "wan_not_wireguard"), wan + 1, "TCP on the WAN dropped");
    assert!(a.nics[1].take_sent().is_empty(), "the WAN stays silent");
    assert_eq!(a.count(now, "local_delivered"), delivered, "nothing of that reached the services");

    // The peer, to 179 on the LAN: admitted, and smoltcp answers (SYN-ACK
    // after ARP for the host).
    a.nics[0].take_sent();
    a.nics[0].inject(&routerd_e2e::net::arp_request(host_mac, peer, [10, 20, 0, 2]));
    a.turn(now);
    a.nics[0].take_sent();
    a.nics[0].inject(&syn(host_mac, A_MACS[0], peer, [10, 20, 0, 2], 179));
    a.turn(now);
    assert_eq!(a.count(now, "local_delivered"), delivered + 1, "the peer's SYN reached the services");
    let out = a.nics[0].take_sent();
    let synack = out.iter().find_map(|f| {
        let p = etherparse::SlicedPacket::from_ethernet(f).ok()?;
        match p.transport? {
            etherparse::TransportSlice::Tcp(t) if t.syn() && t.ack() => Some((t.source_port(), t.destination_port())),
            _ => None,
        }
    });
    assert_eq!(synack, Some((179, 40000)), "SYN-ACK from the box's port 179: {out:?}");
}

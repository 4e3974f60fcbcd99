//! Routes learned at run time (a DHCP lease's default route, BGP prefixes):
//! added and withdrawn by origin, longest prefix wins, configuration wins
//! ties, next hops checked, a full table refuses, and an apply keeps them.

mod common;

use std::net::Ipv4Addr;

use common::*;
use routerd_dataplane::*;

fn route(a: [u8; 4], len: u8, hop: NextHop, origin: RouteOrigin) -> RunRoute {
    RunRoute { prefix: prefix(a, len), hop, origin }
}

/// A UDP packet from host A on lan0 to `dst`; where the box sent it.
fn send_to(h: &mut Harness, dst: Ipv4Addr) -> Option<PortId> {
    h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, dst, 64, 1000, 2000, b"r"))).map(|(p, _)| p)
}

#[test]
fn a_learned_route_carries_traffic_and_is_withdrawn_by_its_origin() {
    let mut h = Harness::new();
    h.learn_gateway();
    h.learn(LAN1, Ipv4Addr::new(10, 1, 1, 9), VM1_MAC);
    let far = Ipv4Addr::new(172, 16, 5, 5);
    // Without it: the WAN default route.
    assert_eq!(send_to(&mut h, far), Some(WAN));
    // A learned /16 via a router on lan1 wins (longer than the default).
    let r = route([172, 16, 0, 0], 16, NextHop::Port { port: LAN1, gateway: Some(Ipv4Addr::new(10, 1, 1, 9)) }, RouteOrigin::Bgp);
    h.dp.add_route(r).unwrap();
    assert_eq!(send_to(&mut h, far), Some(LAN1));
    assert_eq!(h.dp.run_routes(), &[r]);
    // Same prefix, same origin: replaced, not duplicated.
    let via_tunnel = route([172, 16, 0, 0], 16, NextHop::Tunnel(PEER), RouteOrigin::Bgp);
    h.dp.add_route(via_tunnel).unwrap();
    assert_eq!(h.dp.run_routes().len(), 1);
    assert_eq!(send_to(&mut h, far), Some(WAN), "through the tunnel, out of the WAN");
    assert_eq!(h.dp.clear_routes(RouteOrigin::Bgp), 1);
    assert!(h.dp.run_routes().is_empty());
}

#[test]
fn the_configuration_wins_a_tie_and_next_hops_are_checked() {
    let mut h = Harness::new();
    h.learn_gateway();
    // The configured 10.2.0.0/16 goes to the peer; a learned one at the
    // same length does not take it over.
    let tie = route([10, 2, 0, 0], 16, NextHop::Port { port: WAN, gateway: Some(GW_IP) }, RouteOrigin::Dhcp);
    h.dp.add_route(tie).unwrap();
    let out = h.rx(LAN0, &eth(LAN0_MAC, HOST_A_MAC, &udp(HOST_A, Ipv4Addr::new(10, 2, 3, 4), 64, 1, 2, b"t")));
    assert!(out.is_some());
    assert_eq!(h.tun.sealed, 1, "still sealed for the peer");
    assert!(h.dp.remove_route(tie.prefix, RouteOrigin::Dhcp));
    assert!(!h.dp.remove_route(tie.prefix, RouteOrigin::Dhcp));
    let bad = |hop| route([192, 0, 2, 0], 24, hop, RouteOrigin::Operator);
    assert_eq!(h.dp.add_route(bad(NextHop::Port { port: PortId(9), gateway: None })), Err(RouteError::UnknownPort));
    assert_eq!(h.dp.add_route(bad(NextHop::Tunnel(PeerId(77)))), Err(RouteError::UnknownPeer));
    assert_eq!(
        h.dp.add_route(bad(NextHop::Port { port: WAN, gateway: Some(Ipv4Addr::new(8, 8, 8, 8)) })),
        Err(RouteError::GatewayNotOnLink)
    );
}

#[test]
fn a_full_table_refuses_and_keeps_what_it_has() {
    let mut h = Harness::new();
    for i in 0..route::MAX_RUN_ROUTES {
        h.dp.add_route(route([172, 16, i as u8, 0], 24, NextHop::Tunnel(PEER), RouteOrigin::Bgp)).unwrap();
    }
    let one_more = route([172, 17, 0, 0], 24, NextHop::Tunnel(PEER), RouteOrigin::Bgp);
    assert_eq!(h.dp.add_route(one_more), Err(RouteError::Full));
    assert_eq!(h.dp.run_routes().len(), route::MAX_RUN_ROUTES);
}

#[test]
fn an_apply_keeps_learned_routes_whose_next_hop_still_exists() {
    let mut h = Harness::new();
    let via_lan1 = route([172, 16, 0, 0], 16, NextHop::Port { port: LAN1, gateway: Some(Ipv4Addr::new(10, 1, 1, 9)) }, RouteOrigin::Bgp);
    let default = route([0, 0, 0, 0], 0, NextHop::Port { port: WAN, gateway: Some(GW_IP) }, RouteOrigin::Dhcp);
    h.dp.add_route(via_lan1).unwrap();
    h.dp.add_route(default).unwrap();
    // lan1 goes away (another NIC): its route is withdrawn, the DHCP one stays.
    let mut cfg = config();
    cfg.ports[LAN1.index()].mac = Mac([0x02, 0, 0, 0, 0, 0x77]);
    let mut next = Box::new(Dataplane::new(cfg, h.now).unwrap());
    next.carry_from(&h.dp);
    assert_eq!(next.run_routes(), &[default]);
}

//! EVPN through the node's forwarding loop: two boxes whose configurations
//! have `[bgp]` and a segment with `control = "evpn"` and no `remote_vteps`,
//! applied as routerd-host (both platforms run `[bgp]`; the image accepts
//! it too, checked here), so the apply sets up the BGP
//! service from the configuration ([`BgpSetup::from_config`]). The
//! sessions come up over the WireGuard tunnel; each
//! box's dataplane learns the other's VTEP from its type-3 route; a frame
//! from a VM on one box's bridged port reaches the other box's port; the
//! VM's MAC, learned on the LAN port, is advertised as a type 2 and
//! installed in the other box's FDB (not aged), and removed when withdrawn;
//! setting up the same `[bgp]` again keeps the sessions.
//!
//! Runs on an 8 MiB thread: a debug build moves the BGP service's RIB
//! (≈ 340 KiB) through the stack more than once.

mod common;

use common::{arp_from_vm, evpn_pair, on_big_stack, Site, A_MACS, A_TUN, B_MACS, B_TUN, VM};
use routerd_bgp::State;
use routerd_control::bgp::BgpSetup;
use routerd_dataplane::fdb::{Location, Origin};
use routerd_dataplane::Instant;

/// A box of the EVPN pair applied as routerd-host, `[bgp]` and all; the
/// image would accept the same file.
fn evpn_box(cfg: &config_schema::Config, macs: [[u8; 6]; 3], key: [u8; 32]) -> Site<3> {
    let mut site = Site::bare(macs, key, Some(config_schema::Platform::Host));
    // The image runs [bgp] too (host/tests/image_evpn.rs proves it against FRR).
    let image = config_schema::validate_for(cfg, config_schema::Platform::Image);
    assert!(!image.has(config_schema::Code::BgpUnsupported), "the image accepts [bgp]");
    site.apply(cfg.clone());
    let setup = BgpSetup::from_config(cfg).expect("[bgp]");
    let running = site.services().bgp().map(|b| b.setup().clone());
    assert_eq!(running, Some(setup), "the apply set up the BGP service from [bgp]");
    site
}

/// Runs both boxes until quiet; WAN frames cross; what leaves each box's
/// bridged port (lan1) is kept in `lan1_out` (A's, then B's).
fn pump(now: Instant, a: &mut Site<3>, b: &mut Site<3>, lan1_out: &mut [Vec<Vec<u8>>; 2]) {
    common::pump(now, a, b, true, 200, &mut |site, nic, frames| {
        if nic == 2 {
            lan1_out[site].extend(frames);
        }
    });
}

#[test]
fn evpn_segments_learn_vteps_and_macs_from_bgp_through_the_node() {
    on_big_stack(run);
}

fn run() {
    let ((a_cfg, a_key), (b_cfg, b_key)) = evpn_pair();
    let (mut a, mut b) = (evpn_box(&a_cfg, A_MACS, a_key), evpn_box(&b_cfg, B_MACS, b_key));
    let mut lan1_out = [Vec::new(), Vec::new()];
    assert_eq!(a.bgp().setup().hold_time, 9);
    assert_eq!(a.bgp().setup().router_id, A_TUN, "router_id defaults to the first segment's local_vtep");
    assert_eq!(a.bgp().setup().vnis.as_slice(), &[(100, A_TUN)]);

    let start = Instant::from_millis(1000);
    let mut now = start;
    let mut up = None;
    for _ in 0..600 {
        pump(now, &mut a, &mut b, &mut lan1_out);
        if a.state() == State::Established && b.state() == State::Established && !a.dp().learned_vteps(0).is_empty() {
            up = Some(now);
            break;
        }
        now = now.plus_millis(100);
    }
    let up = up.unwrap_or_else(|| panic!("not up after 60 s: A {:?} B {:?}", a.state(), b.state()));
    println!("sessions up and VTEPs programmed {} ms after the apply", up.millis() - start.millis());
    pump(now, &mut a, &mut b, &mut lan1_out);
    assert_eq!(a.dp().learned_vteps(0), &[B_TUN], "A learned B's VTEP from its type 3");
    assert_eq!(b.dp().learned_vteps(0), &[A_TUN]);

    // The VM on B's bridged port: flooded to A's VTEP, out of A's lan1.
    b.nics[2].inject(&arp_from_vm());
    pump(now, &mut a, &mut b, &mut lan1_out);
    assert!(lan1_out[0].iter().any(|f| f.get(6..12) == Some(&VM[..])), "the VM's frame crossed the EVPN segment");

    // B advertises the VM's MAC within a second; A installs it.
    for _ in 0..20 {
        now = now.plus_millis(100);
        pump(now, &mut a, &mut b, &mut lan1_out);
    }
    let vm = routerd_dataplane::Mac(VM);
    let e = *a.dp().fdb().entries().iter().find(|e| e.mac == vm).expect("A has the VM's MAC");
    assert_eq!((e.location, e.origin), (Location::Remote(B_TUN), Origin::Installed));

    // The same [bgp] set up again (what an apply does) keeps the session and the programming.
    let established = a.bgp().sessions().next().unwrap().established;
    let setup = BgpSetup::from_config(&a_cfg);
    a.services().set_bgp(setup, 8, now).expect("same setup");
    pump(now, &mut a, &mut b, &mut lan1_out);
    assert_eq!(a.state(), State::Established);
    assert_eq!(a.bgp().sessions().next().unwrap().established, established, "the session was not restarted");
    assert_eq!(a.dp().learned_vteps(0), &[B_TUN]);
    assert!(a.dp().fdb().lookup(0, vm, now.plus_millis(10_000_000)).is_some(), "installed MACs never age");

    // The VM leaves B (its FDB entry ages out): the route is withdrawn, A removes it.
    for _ in 0..120 {
        now = now.plus_millis(3_000);
        pump(now, &mut a, &mut b, &mut lan1_out);
    }
    assert!(a.dp().fdb().entries().iter().all(|e| e.mac != vm), "withdrawn MAC removed from A's FDB");
    assert_eq!(a.state(), State::Established);
}

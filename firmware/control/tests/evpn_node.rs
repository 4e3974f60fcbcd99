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

use rand_core::{OsRng, RngCore};
use routerd_bgp::State;
use routerd_control::bgp::BgpSetup;
use routerd_control::{Forwarder, NicInfo, Node};
use routerd_dataplane::fdb::{Location, Origin};
use routerd_dataplane::Instant;
use routerd_netdev::testing::Loopback;
use routerd_provision::message::{Op, Reply};
use routerd_wireguard::SecretKey;
use std::net::Ipv4Addr;

const A_MACS: [[u8; 6]; 3] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1], [0x02, 0xa0, 0, 0, 0, 2]];
const B_MACS: [[u8; 6]; 3] = [[0x02, 0xc0, 0, 0, 0, 0], [0x02, 0xc0, 0, 0, 0, 1], [0x02, 0xc0, 0, 0, 0, 2]];
const A_TUN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const B_TUN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const VM: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 0x01];

#[allow(clippy::too_many_arguments)]
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
    /// What left the bridged port (lan1).
    lan1_out: Vec<Vec<u8>>,
    /// The configuration as applied.
    cfg: config_schema::Config,
}

impl Site {
    fn new(toml: &str, macs: [[u8; 6]; 3], key: [u8; 32]) -> Site {
        let cfg = config_schema::human::from_toml(toml).expect("config parses");
        let infos = macs.map(|mac| NicInfo { mac });
        let mut node = Box::new(Node::new(&infos, Some(OsRng), "0.1.0", "test"));
        node.set_platform(config_schema::Platform::Host);
        let slot = config_schema::Name::new("wg0").unwrap();
        assert!(matches!(node.handle(Instant::ZERO, Op::KeyImport(slot, key), &[]), Reply::Keys(_)));
        // The image runs [bgp] too (host/tests/image_evpn.rs proves it against FRR).
        let image = config_schema::validate_for(&cfg, config_schema::Platform::Image);
        assert!(!image.has(config_schema::Code::BgpUnsupported), "the image accepts [bgp]");
        match node.handle(Instant::ZERO, Op::Apply(Box::new(cfg.clone())), &[]) {
            Reply::Applied(_) => {}
            other => panic!("apply refused: {other:?}"),
        }
        let setup = BgpSetup::from_config(&cfg).expect("[bgp]");
        let running = node.forwarding().expect("configured").services.bgp().map(|b| b.setup().clone());
        assert_eq!(running, Some(setup), "the apply set up the BGP service from [bgp]");
        Site { node, nics: macs.map(|m| Loopback::new(m, 64)), fwd: Box::new(Forwarder::new()), lan1_out: Vec::new(), cfg }
    }

    fn turn(&mut self, now: Instant) {
        self.fwd.turn(&mut self.node, now, &mut self.nics[..], &mut |_| {});
    }

    fn bgp(&mut self) -> &mut routerd_control::bgp::Bgp {
        self.node.forwarding().expect("configured").services.bgp_mut().expect("BGP set up").0
    }

    fn state(&mut self) -> State {
        self.bgp().sessions().next().expect("one peer").state
    }

    fn dp(&mut self) -> &mut routerd_dataplane::Dataplane {
        self.node.forwarding().expect("configured").dataplane
    }
}

/// Runs both boxes until quiet; WAN frames cross.
fn pump(now: Instant, a: &mut Site, b: &mut Site) {
    for _ in 0..200 {
        a.turn(now);
        b.turn(now);
        let (a_wan, b_wan) = (a.nics[1].take_sent(), b.nics[1].take_sent());
        a.nics[0].take_sent();
        b.nics[0].take_sent();
        a.lan1_out.extend(a.nics[2].take_sent());
        b.lan1_out.extend(b.nics[2].take_sent());
        if a_wan.is_empty() && b_wan.is_empty() {
            return;
        }
        for f in a_wan {
            b.nics[1].inject(&f);
        }
        for f in b_wan {
            a.nics[1].inject(&f);
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

#[test]
fn evpn_segments_learn_vteps_and_macs_from_bgp_through_the_node() {
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
    assert_eq!(a.bgp().setup().hold_time, 9);
    assert_eq!(a.bgp().setup().router_id, A_TUN, "router_id defaults to the first segment's local_vtep");
    assert_eq!(a.bgp().setup().vnis.as_slice(), &[(100, A_TUN)]);

    let start = Instant::from_millis(1000);
    let mut now = start;
    let mut up = None;
    for _ in 0..600 {
        pump(now, &mut a, &mut b);
        if a.state() == State::Established && b.state() == State::Established && !a.dp().learned_vteps(0).is_empty() {
            up = Some(now);
            break;
        }
        now = now.plus_millis(100);
    }
    let up = up.unwrap_or_else(|| panic!("not up after 60 s: A {:?} B {:?}", a.state(), b.state()));
    println!("sessions up and VTEPs programmed {} ms after the apply", up.millis() - start.millis());
    pump(now, &mut a, &mut b);
    assert_eq!(a.dp().learned_vteps(0), &[B_TUN], "A learned B's VTEP from its type 3");
    assert_eq!(b.dp().learned_vteps(0), &[A_TUN]);

    // The VM on B's bridged port: flooded to A's VTEP, out of A's lan1.
    b.nics[2].inject(&arp_from_vm());
    pump(now, &mut a, &mut b);
    assert!(a.lan1_out.iter().any(|f| f.get(6..12) == Some(&VM[..])), "the VM's frame crossed the EVPN segment");

    // B advertises the VM's MAC within a second; A installs it.
    for _ in 0..20 {
        now = now.plus_millis(100);
        pump(now, &mut a, &mut b);
    }
    let vm = routerd_dataplane::Mac(VM);
    let e = *a.dp().fdb().entries().iter().find(|e| e.mac == vm).expect("A has the VM's MAC");
    assert_eq!((e.location, e.origin), (Location::Remote(B_TUN), Origin::Installed));

    // The same [bgp] set up again (what an apply does) keeps the session and the programming.
    let established = a.bgp().sessions().next().unwrap().established;
    let setup = BgpSetup::from_config(&a.cfg);
    a.node.forwarding().expect("configured").services.set_bgp(setup, 8, now).expect("same setup");
    pump(now, &mut a, &mut b);
    assert_eq!(a.state(), State::Established);
    assert_eq!(a.bgp().sessions().next().unwrap().established, established, "the session was not restarted");
    assert_eq!(a.dp().learned_vteps(0), &[B_TUN]);
    assert!(a.dp().fdb().lookup(0, vm, now.plus_millis(10_000_000)).is_some(), "installed MACs never age");

    // The VM leaves B (its FDB entry ages out): the route is withdrawn, A removes it.
    for _ in 0..120 {
        now = now.plus_millis(3_000);
        pump(now, &mut a, &mut b);
    }
    assert!(a.dp().fdb().entries().iter().all(|e| e.mac != vm), "withdrawn MAC removed from A's FDB");
    assert_eq!(a.state(), State::Established);
}

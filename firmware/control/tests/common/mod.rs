//! What the control crate's two-box tests share: a box (the real `Node`
//! with its keys imported and its configuration applied, driven by the
//! forwarding turn every platform runs, over in-memory NICs), a fresh
//! WireGuard key, the pump that runs two boxes joined by a simulated
//! underlay wire, and the EVPN pair of bgp_status.rs and evpn_node.rs (two
//! boxes whose `[bgp]` peers each other over the tunnel, and a VM).
//!
//! Each test file includes this with `mod common;` and uses a part of it.
#![allow(dead_code)]

use rand_core::{OsRng, RngCore};
use routerd_control::{Forwarder, NicInfo, Node, Services};
use routerd_dataplane::Instant;
use routerd_netdev::testing::Loopback;
use routerd_provision::message::{Op, Reply};
use routerd_wireguard::SecretKey;
use std::net::Ipv4Addr;

/// One box: the real node driven by the forwarding turn over one in-memory
/// NIC per port (lan0, wan0, then any others), each with a ring of 64.
pub struct Site<const N: usize> {
    pub node: Box<Node<OsRng>>,
    pub nics: [Loopback; N],
    pub fwd: Box<Forwarder>,
}

impl<const N: usize> Site<N> {
    /// A node with NICs `macs` and `key` imported as wg0's private key, set
    /// to run as `platform` if one is given; nothing applied yet.
    pub fn bare(macs: [[u8; 6]; N], key: [u8; 32], platform: Option<config_schema::Platform>) -> Site<N> {
        let infos = macs.map(NicInfo::ethernet);
        let mut node = Box::new(Node::new(&infos, Some(OsRng), "0.1.0", "test"));
        if let Some(p) = platform {
            node.set_platform(p);
        }
        let slot = config_schema::Name::new("wg0").unwrap();
        assert!(matches!(node.handle(Instant::ZERO, Op::KeyImport(slot, key), &[]), Reply::Keys(_)));
        Site { node, nics: macs.map(|m| Loopback::new(m, 64)), fwd: Box::new(Forwarder::new()) }
    }

    /// Applies `cfg` at time zero; the test fails if the node refuses it.
    pub fn apply(&mut self, cfg: config_schema::Config) {
        match self.node.handle(Instant::ZERO, Op::Apply(Box::new(cfg)), &[]) {
            Reply::Applied(_) => {}
            other => panic!("apply refused: {other:?}"),
        }
    }

    /// A box running the configuration `toml`, with `key` as wg0's private key.
    pub fn new(toml: &str, macs: [[u8; 6]; N], key: [u8; 32]) -> Site<N> {
        let cfg = config_schema::human::from_toml(toml).expect("config parses");
        let mut site = Site::bare(macs, key, None);
        site.apply(cfg);
        site
    }

    pub fn turn(&mut self, now: Instant) -> bool {
        self.fwd.turn(&mut self.node, now, &mut self.nics[..], &mut |_| {})
    }

    pub fn lan(&mut self) -> &mut Loopback {
        &mut self.nics[0]
    }

    pub fn services(&mut self) -> &mut Services {
        self.node.forwarding().expect("configured").services
    }

    pub fn bgp(&mut self) -> &mut routerd_control::bgp::Bgp {
        self.services().bgp_mut().expect("BGP set up").0
    }

    /// The state of the box's (first) BGP session.
    pub fn state(&mut self) -> routerd_bgp::State {
        self.bgp().sessions().next().expect("one peer").state
    }

    pub fn dp(&mut self) -> &mut routerd_dataplane::Dataplane {
        self.node.forwarding().expect("configured").dataplane
    }
}

/// A fresh WireGuard private key and its public key in base64.
pub fn key_pair() -> ([u8; 32], String) {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let public = SecretKey::from_bytes(key).public_key().to_base64().as_str().to_string();
    (key, public)
}

/// Runs both boxes, carrying what each sends on its WAN (NIC 1) to the
/// other when `wire` is up (dropping it otherwise), until neither sends on
/// its WAN and neither has a frame waiting on lan0, for at most `turns`
/// turns; what the other NICs send goes to `lan(box, nic, frames)`, box 0
/// being `a`.
pub fn pump<const N: usize>(
    now: Instant,
    a: &mut Site<N>,
    b: &mut Site<N>,
    wire: bool,
    turns: usize,
    lan: &mut dyn FnMut(usize, usize, Vec<Vec<u8>>),
) {
    for _ in 0..turns {
        a.turn(now);
        b.turn(now);
        let (a_wan, b_wan) = (a.nics[1].take_sent(), b.nics[1].take_sent());
        for (i, site) in [&mut *a, &mut *b].into_iter().enumerate() {
            for nic in (0..N).filter(|&n| n != 1) {
                lan(i, nic, site.nics[nic].take_sent());
            }
        }
        if a_wan.is_empty() && b_wan.is_empty() && a.nics[0].pending() == 0 && b.nics[0].pending() == 0 {
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

/// Runs `f` on a thread with an 8 MiB stack (a debug build moves the BGP
/// service's RIB, ≈ 340 KiB, through the stack more than once) and fails if
/// it does.
pub fn on_big_stack(f: fn()) {
    let t = std::thread::Builder::new().stack_size(8 << 20).spawn(f).expect("thread");
    t.join().expect("the test passed");
}

// ------------------------------------------------------------ the EVPN pair

/// Box A's NICs (lan0, wan0, lan1: the segment's bridged port) and box B's.
pub const A_MACS: [[u8; 6]; 3] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1], [0x02, 0xa0, 0, 0, 0, 2]];
pub const B_MACS: [[u8; 6]; 3] = [[0x02, 0xc0, 0, 0, 0, 0], [0x02, 0xc0, 0, 0, 0, 1], [0x02, 0xc0, 0, 0, 0, 2]];
/// The boxes' tunnel addresses (router ids and VTEPs).
pub const A_TUN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const B_TUN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
/// The VM on B's bridged port.
pub const VM: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 0x01];

/// An EVPN box's file: lan0 with `lan`, wan0 with `wan`, the bridged port
/// lan1 carrying segment "zone" (VNI 100, `control = "evpn"`, no
/// `remote_vteps`), the tunnel address `tunnel`, and the other box (`other`,
/// `peer_key`, at `endpoint`) as its WireGuard peer and iBGP peer (AS 65000,
/// hold time 9).
fn evpn_config(side: &str, lan: &str, wan: &str, tunnel: &str, peer_key: &str, endpoint: &str, other: Ipv4Addr) -> String {
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

/// The EVPN pair's files and private keys: A ("onprem", [`A_TUN`]) and B
/// ("cloud", [`B_TUN`]), each the other's peer, fresh keys each time.
pub fn evpn_pair() -> ((config_schema::Config, [u8; 32]), (config_schema::Config, [u8; 32])) {
    let ((a_key, a_pub), (b_key, b_pub)) = (key_pair(), key_pair());
    let a = evpn_config("onprem", "10.20.0.2/24", "192.0.2.1/24", "10.1.0.1", &b_pub, "192.0.2.2:51820", B_TUN);
    let b = evpn_config("cloud", "10.30.0.3/24", "192.0.2.2/24", "10.1.0.2", &a_pub, "192.0.2.1:51820", A_TUN);
    let parse = |toml: &str| config_schema::human::from_toml(toml).expect("config parses");
    ((parse(&a), a_key), (parse(&b), b_key))
}

/// An ARP request from the VM (broadcast: flooded to every VTEP).
pub fn arp_from_vm() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&VM);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&VM);
    f.extend_from_slice(&[10, 50, 0, 1, 0, 0, 0, 0, 0, 0, 10, 50, 0, 2]);
    f.resize(60, 0);
    f
}

pub const ONPREM_MACS: [[u8; 6]; 2] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1]];
pub const CLOUD_MACS: [[u8; 6]; 2] = [[0x02, 0xc0, 0, 0, 0, 0], [0x02, 0xc0, 0, 0, 0, 1]];
pub const HOST_ONPREM_MAC: [u8; 6] = [0x02, 0x11, 0, 0, 0, 10];
pub const HOST_CLOUD_MAC: [u8; 6] = [0x02, 0x22, 0, 0, 0, 50];
pub const HOST_ONPREM: [u8; 4] = [10, 20, 0, 10];
pub const HOST_CLOUD: [u8; 4] = [10, 20, 0, 50];

/// The seed-000 pair: each box claims the other side's host on its lan0 by
/// proxy-ARP and delivers it through wg0 to its one peer.
pub fn seed_000(side: &str, lan: &str, wan: &str, peer_name: &str, peer_key: &str, endpoint: &str, peer_allowed: &str) -> String {
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

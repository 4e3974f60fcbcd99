//! One set of limits: what `config_schema::validate_for` accepts, the node
//! runs, and what it refuses, the box would refuse.
//!
//! For every limit and every feature a platform cannot run yet, the same
//! configuration is refused
//! - by `validate_for(&cfg, platform)`, naming a path,
//! - by the node (`Op::Apply`, which validates for its platform), with the
//!   same code and path, leaving the running configuration alone, and
//! - by the box's own machinery when validation is skipped (`build`,
//!   `Dataplane::new`, the WireGuard device): so the check is not stricter
//!   than the box.
//!
//! And a configuration at the maximum of every limit validates and runs.
//! routerd-host's own refusals and acceptances (its bind hook resolves DNS
//! names and owns the WAN address) are tested in host/tests/limits.rs.

use config_schema::{
    Capture, CaptureMethod, Claim, Code, Config, Delivery, Ipv4Cidr, Name, Peer, Platform, PortAddress, PortRole, PublicKey, Segment, RUNS,
};
use rand_core::OsRng;
use routerd_control::{build, NicInfo, NicSnapshot, Node};
use routerd_dataplane::{Dataplane, Instant};
use routerd_provision::message::{FailureKind, Op, Reply};
use routerd_wireguard::SecretKey;

const MACS: [[u8; 6]; 8] = [
    [0x02, 0xa0, 0, 0, 0, 0],
    [0x02, 0xa0, 0, 0, 0, 1],
    [0x02, 0xa0, 0, 0, 0, 2],
    [0x02, 0xa0, 0, 0, 0, 3],
    [0x02, 0xa0, 0, 0, 0, 4],
    [0x02, 0xa0, 0, 0, 0, 5],
    [0x02, 0xa0, 0, 0, 0, 6],
    [0x02, 0xa0, 0, 0, 0, 7],
];
/// The Azure NIC of examples/hybrid-cloud.toml.
const AZURE_MAC: [u8; 6] = [0x00, 0x0d, 0x3a, 0x12, 0x34, 0x56];

const BASE: &str = r#"
[device]
name = "edge"
side = "onprem"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"

[[ports]]
name = "wan0"
role = "wan"
address = "192.168.1.35/24"
gateway = "192.168.1.1"

[[wireguard]]
name = "wg0"
address = "10.99.0.1/30"
private_key = "device:wg0"

[[peers]]
name = "cloud"
tunnel = "wg0"
public_key = "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w="
endpoint = "203.0.113.10:51820"
persistent_keepalive = 25
allowed_ips = ["10.99.0.2/32", "10.20.0.50/32"]

[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = { method = "proxy-arp", port = "lan0" }
delivery = { tunnel = "wg0", peer = "cloud" }

[[claims]]
address = "10.20.0.10/32"
owner = "onprem"
capture = { method = "provider-secondary-ip", port = "eth0" }
delivery = { tunnel = "wg0", peer = "onprem" }
"#;

fn base() -> Config {
    config_schema::human::from_toml(BASE).unwrap()
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

fn public_key() -> PublicKey {
    PublicKey(SecretKey::generate(&mut OsRng).public_key().0)
}

fn nics(n: usize) -> Vec<NicInfo> {
    MACS.iter().take(n).map(|&mac| NicInfo::ethernet(mac)).collect()
}

fn node(platform: Platform, nics: &[NicInfo]) -> Box<Node<OsRng>> {
    let mut n = Box::new(Node::new(nics, Some(OsRng), "0.1.0", "test"));
    n.set_platform(platform);
    n
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn snaps(n: usize) -> Vec<NicSnapshot> {
    vec![NicSnapshot { link_up: true, ..NicSnapshot::default() }; n]
}

fn errors(r: &config_schema::Report) -> String {
    r.problems.iter().map(|p| format!("\n  {} [{}] {p}", p.severity.as_str(), p.code.as_str())).collect()
}

/// What the box itself says about `cfg` when nothing validated it first:
/// `build`, then the dataplane, then the WireGuard device. `None`: it runs.
fn unvalidated_box(cfg: &Config, nics: &[NicInfo]) -> Option<String> {
    let rt = match build(cfg, nics) {
        Ok(rt) => rt,
        Err(e) => return Some(e.to_string()),
    };
    if let Err(e) = Dataplane::new(rt.dataplane.clone(), t(0)) {
        return Some(format!("the dataplane refused the configuration: {e:?}"));
    }
    let preshared = |_: &Name| Some(routerd_wireguard::PresharedKey([7; 32]));
    match routerd_control::node::wireguard_device(rt.tunnel.as_ref(), Some(SecretKey::generate(&mut OsRng)), &preshared) {
        Ok(_) => None,
        Err(f) => Some(f.to_string()),
    }
}

/// One refusal: `change` applied to `base()` is refused with `code` at
/// `path` on the platforms marked, and the unvalidated box says `box_says`.
struct Case {
    what: &'static str,
    code: Code,
    path: &'static str,
    image: bool,
    host: bool,
    change: fn(&mut Config),
    box_says: &'static str,
}

fn add_peer(c: &mut Config, peer: &str, allowed: impl IntoIterator<Item = Ipv4Cidr>) {
    let mut p = c.peers[0].clone();
    p.name = name(peer);
    p.public_key = public_key();
    p.endpoint = None;
    p.persistent_keepalive = None;
    p.allowed_ips = allowed.into_iter().collect();
    c.peers.push(p).unwrap();
}

fn add_segment(c: &mut Config, local_vtep: &str, remote: &str) {
    c.segments
        .push(Segment {
            name: name("overlay"),
            vni: 100,
            port: name("lan0"),
            local_vtep: local_vtep.parse().unwrap(),
            remote_vteps: [remote.parse().unwrap()].into_iter().collect(),
            udp_port: 4789,
            mtu: 1370,
            mss_clamp: config_schema::MssClamp::Auto,
            control: Default::default(),
        })
        .unwrap();
}

const CASES: &[Case] = &[
    Case {
        what: "a second WireGuard interface",
        code: Code::PlatformCapacity,
        path: "wireguard[1]",
        image: true,
        host: true,
        change: |c| {
            let mut t = c.wireguard[0].clone();
            t.name = name("wg1");
            t.listen_port = 51821;
            t.address = None;
            t.private_key = "device:wg1".parse().unwrap();
            c.wireguard.push(t).unwrap();
        },
        box_says: "wireguard[1]: this build drives one WireGuard interface",
    },
    Case {
        // 2 + 4 × 16 = 66 prefixes; the 65th is peers[4].allowed_ips[14].
        what: "more allowed IPs over all peers than the WireGuard device routes",
        code: Code::TunnelRoutes,
        path: "peers[4].allowed_ips[14]",
        image: true,
        host: true,
        change: |c| {
            for k in 1..=4 {
                add_peer(c, &format!("p{k}"), (1..=16).map(|h| cidr(&format!("172.16.{k}.{h}/32"))));
            }
        },
        box_says: "peers[4].allowed_ips: WireGuard refused",
    },
    Case {
        what: "a port MTU above the frame buffers",
        code: Code::MtuAbovePlatform,
        path: "ports[0].mtu",
        image: true,
        host: true,
        change: |c| c.ports[0].mtu = 1501,
        box_says: "the dataplane refused the configuration: BadPort(PortId(0))",
    },
    Case {
        what: "a tunnel MTU above the WAN MTU",
        code: Code::TunnelMtuAboveWan,
        path: "wireguard[0].mtu",
        image: true,
        host: true,
        change: |c| c.wireguard[0].mtu = 1501,
        box_says: "the dataplane refused the configuration: TunnelMtu",
    },
    Case {
        what: "no WAN port",
        code: Code::WanPortCount,
        path: "ports",
        image: true,
        host: true,
        change: |c| c.ports[1].role = PortRole::Lan,
        box_says: "the dataplane refused the configuration: WanCount",
    },
    Case {
        what: "a second WAN port",
        code: Code::WanPortCount,
        path: "ports[2].role",
        image: true,
        host: true,
        change: |c| {
            let mut p = c.ports[1].clone();
            p.name = name("lan1");
            p.address = Some(PortAddress::Static(cidr("192.168.7.2/24")));
            p.gateway = None;
            c.ports.push(p).unwrap();
        },
        box_says: "the dataplane refused the configuration: WanCount",
    },
    Case {
        what: "a multicast MAC",
        code: Code::MacNotUnicast,
        path: "ports[0].mac",
        image: true,
        host: true,
        change: |c| c.ports[0].mac = Some("01:00:5e:00:00:01".parse().unwrap()),
        box_says: "ports[0].mac: no NIC with MAC 01:00:5e:00:00:01 on this box; its NICs: lan0 ",
    },
    Case {
        what: "a LAN port without an address that no segment bridges",
        code: Code::PortAddressMissing,
        path: "ports[2].address",
        image: true,
        host: true,
        change: |c| {
            let mut p = c.ports[0].clone();
            p.name = Name::new("lan1").unwrap();
            p.address = None;
            c.ports.push(p).unwrap();
        },
        box_says: "the dataplane refused the configuration: BadPort(PortId(2))",
    },
    Case {
        what: "a WAN port without an address",
        code: Code::PortAddressMissing,
        path: "ports[1].address",
        image: true,
        host: false,
        change: |c| {
            c.ports[1].address = None;
            c.ports[1].gateway = None;
        },
        box_says: "ports[1].address: the WAN port needs an address (a.b.c.d/len or dhcp)",
    },
    Case {
        what: "a port without mac named after no NIC",
        code: Code::PortNameUnbound,
        path: "ports[1].name",
        image: true,
        host: false,
        change: |c| c.ports[1].name = name("uplink"),
        box_says: "ports[1].name: no NIC is called uplink on this box",
    },
    Case {
        what: "an IPv6 endpoint",
        code: Code::EndpointUnsupported,
        path: "peers[0].endpoint",
        image: true,
        host: false,
        change: |c| c.peers[0].endpoint = Some("[2001:db8::10]:51820".parse().unwrap()),
        box_says: "peers[0].endpoint: this box's WAN underlay is IPv4 only; give an IPv4 address or a DNS name",
    },
    Case {
        what: "VXLAN from a LAN address",
        code: Code::VtepNotWanOrTunnel,
        path: "segments[0].local_vtep",
        image: true,
        host: true,
        change: |c| add_segment(c, "10.20.0.2", "10.99.0.2"),
        box_says: "segments[0].local_vtep: must be the WAN address or the tunnel address",
    },
    Case {
        what: "VXLAN through a tunnel without address",
        code: Code::VtepNeedsTunnelAddress,
        path: "segments[0].remote_vteps[0]",
        image: true,
        host: true,
        change: |c| {
            c.wireguard[0].address = None;
            add_segment(c, "192.168.1.35", "10.99.0.2");
        },
        box_says: "the dataplane refused the configuration: SegmentNeedsTunnelAddress(0)",
    },
];

#[test]
fn the_base_configuration_runs_on_both_platforms() {
    for platform in Platform::ALL {
        let r = config_schema::validate_for(&base(), platform);
        assert!(r.problems.is_empty(), "{platform}:{}", errors(&r));
        let mut n = node(platform, &nics(2));
        assert!(matches!(n.handle(t(1), Op::Apply(Box::new(base())), &snaps(2)), Reply::Applied(_)));
    }
    assert_eq!(unvalidated_box(&base(), &nics(2)), None);
}

#[test]
fn every_refusal_is_the_boxs_refusal_with_the_same_path() {
    let nics = nics(3);
    for case in CASES {
        let mut cfg = base();
        (case.change)(&mut cfg);

        // The box's own machinery refuses it too: validation is not stricter.
        let said = unvalidated_box(&cfg, &nics).unwrap_or_else(|| panic!("{}: the box runs it, but validation refuses it", case.what));
        assert!(said.starts_with(case.box_says), "{}: the box says {said:?}", case.what);
        let box_path = said.split(':').next().unwrap();
        if box_path.contains('[') {
            assert!(case.path.starts_with(box_path), "{}: validation names {}, the box {box_path}", case.what, case.path);
        }

        for platform in Platform::ALL {
            let refused = match platform {
                Platform::Image => case.image,
                Platform::Host => case.host,
            };
            let r = config_schema::validate_for(&cfg, platform);
            let hit = r.problems.iter().find(|p| p.code == case.code && p.path.as_str() == case.path);
            if !refused {
                assert!(hit.is_none(), "{} on {platform}: refused{}", case.what, errors(&r));
                continue;
            }
            let hit = hit.unwrap_or_else(|| panic!("{} on {platform}: not refused at {}{}", case.what, case.path, errors(&r)));
            assert!(hit.message.contains(platform.subject()), "{}: {}", case.what, hit.message);
            assert!(!r.is_valid());

            // The node refuses it the same way and keeps what it runs.
            let mut n = node(platform, &nics);
            assert!(matches!(n.handle(t(1), Op::Apply(Box::new(base())), &snaps(3)), Reply::Applied(_)));
            match n.handle(t(2), Op::Apply(Box::new(cfg.clone())), &snaps(3)) {
                Reply::Error(f) => {
                    assert_eq!(f.kind, FailureKind::Invalid, "{}: {f}", case.what);
                    assert!(
                        f.problems.iter().any(|p| p.error && p.code.as_str() == case.code.as_str() && p.path.as_str() == case.path),
                        "{} on {platform}: {f:?}",
                        case.what
                    );
                }
                other => panic!("{} on {platform}: {other:?}", case.what),
            }
            assert_eq!(n.config(), Some(&base()), "{}: the running configuration changed", case.what);
            // A plan says the same.
            assert!(
                matches!(n.handle(t(3), Op::Plan(Box::new(cfg.clone())), &snaps(3)), Reply::Error(f) if f.kind == FailureKind::Invalid)
            );
        }
    }
}

#[test]
fn every_platform_code_has_a_case_here() {
    // The codes validate_for adds for what a box runs (CONFIG.md, "Platforms").
    for code in [
        Code::PlatformCapacity,
        Code::TunnelRoutes,
        Code::MtuAbovePlatform,
        Code::TunnelMtuAboveWan,
        Code::WanPortCount,
        Code::MacNotUnicast,
        Code::PortAddressMissing,
        Code::PortNameUnbound,
        Code::EndpointUnsupported,
        Code::VtepNotWanOrTunnel,
        Code::VtepNeedsTunnelAddress,
    ] {
        assert!(CASES.iter().any(|c| c.code == code), "no case for {}", code.as_str());
    }
}

/// A configuration at the maximum of every limit a box runs: 8 ports
/// (named lan0, wan0, lan1 … lan6), one tunnel, 16 peers holding 64 allowed
/// IPs together (`per_peer` each, on the first `64 / per_peer` peers that
/// fit; the rest get one), 64 claims (half captured, half delivered here),
/// a segment on each of the 7 LAN ports with 8 remote VTEPs each.
fn maximal(per_peer: usize) -> Config {
    let mut c = base();
    c.peers.clear();
    c.claims.clear();
    c.ports.clear();
    for n in 0..RUNS.ports {
        let (role, address, gateway) = match n {
            0 => (PortRole::Lan, "10.20.0.2/24".to_string(), None),
            1 => (PortRole::Wan, "192.168.1.35/24".to_string(), Some("192.168.1.1".parse().unwrap())),
            n => (PortRole::Lan, format!("10.3{n}.0.2/24"), None),
        };
        c.ports
            .push(config_schema::Port {
                name: Name::new(config_schema::platform::contract_name(n).as_str()).unwrap(),
                role,
                mac: None,
                address: Some(PortAddress::Static(cidr(&address))),
                gateway,
                mtu: RUNS.port_mtu_max,
            })
            .unwrap();
    }
    c.wireguard[0].address = Some(cidr("10.1.0.1/16"));
    // Peer k: its VTEP range 10.2.k.0/24 (k < 8) or a /32, then fillers;
    // peer 0 also routes the captured claims 10.20.0.96/27.
    let mut budget = RUNS.tunnel_routes;
    for k in 0..RUNS.peers {
        let left = RUNS.peers - k - 1; // every later peer needs one
        let n = per_peer.min(budget - left).max(1);
        let mut allowed: heapless::Vec<Ipv4Cidr, { config_schema::limits::MAX_ALLOWED_IPS }> = heapless::Vec::new();
        allowed.push(cidr(&format!("10.2.{k}.0/24"))).unwrap();
        if k == 0 && n > 1 {
            allowed.push(cidr("10.20.0.96/27")).unwrap();
        }
        let mut h = 1;
        while allowed.len() < n {
            allowed.push(cidr(&format!("172.16.{k}.{h}/32"))).unwrap();
            h += 1;
        }
        budget -= allowed.len();
        c.peers
            .push(Peer {
                name: name(&format!("peer{k}")),
                tunnel: name("wg0"),
                public_key: public_key(),
                endpoint: (k == 0).then(|| "203.0.113.10:51820".parse().unwrap()),
                allowed_ips: allowed,
                persistent_keepalive: Some(25),
                // Every peer with its own preshared key: the key slots hold them all.
                preshared_key: Some(format!("device:peer{k}-psk").parse().unwrap()),
            })
            .unwrap();
    }
    for i in 0..RUNS.claims {
        let (owner, address) = if i % 2 == 0 { ("cloud", 96 + i / 2) } else { ("onprem", 10 + i / 2) };
        c.claims
            .push(Claim {
                address: cidr(&format!("10.20.0.{address}/32")),
                owner: name(owner),
                gratuitous_arp: None,
                conflict_hold: None,
                local_port: None,
                mss_clamp: config_schema::MssClamp::Auto,
                capture: Capture { method: CaptureMethod::ProxyArp, port: name("lan0"), configure_os_address: false },
                delivery: Delivery { tunnel: name("wg0"), peer: name("peer0") },
            })
            .unwrap();
    }
    for (s, port) in c.ports.clone().iter().filter(|p| p.role == PortRole::Lan).enumerate() {
        c.segments
            .push(Segment {
                name: name(&format!("seg{s}")),
                vni: 1000 + s as u32,
                port: port.name.clone(),
                local_vtep: "10.1.0.1".parse().unwrap(),
                remote_vteps: (0..RUNS.vteps_per_segment).map(|k| format!("10.2.{k}.1").parse().unwrap()).collect(),
                udp_port: 4789,
                mtu: 1370,
                mss_clamp: config_schema::MssClamp::Auto,
                control: Default::default(),
            })
            .unwrap();
    }
    c
}

#[test]
fn a_configuration_at_every_limit_validates_and_runs() {
    // 16 peers × 4 prefixes, and 4 peers × 16 prefixes (+ 12 × 1 … within 64).
    for per_peer in [RUNS.tunnel_routes / RUNS.peers, RUNS.allowed_ips_per_peer] {
        let cfg = maximal(per_peer);
        assert_eq!(cfg.ports.len(), RUNS.ports);
        assert_eq!(cfg.wireguard.len(), RUNS.tunnels);
        assert_eq!(cfg.peers.len(), RUNS.peers);
        assert_eq!(cfg.peers.iter().map(|p| p.allowed_ips.len()).sum::<usize>(), RUNS.tunnel_routes);
        assert_eq!(cfg.peers.iter().map(|p| p.allowed_ips.len()).max(), Some(per_peer));
        assert_eq!(cfg.claims.len(), RUNS.claims);
        // One segment per LAN port: the one WAN port leaves 7 of the 8.
        assert_eq!(cfg.segments.len(), RUNS.ports - 1);
        assert!(cfg.segments.iter().all(|s| s.remote_vteps.len() == RUNS.vteps_per_segment));

        let nics = nics(RUNS.ports);
        for platform in Platform::ALL {
            let r = config_schema::validate_for(&cfg, platform);
            assert!(r.is_valid(), "{per_peer} per peer on {platform}:{}", errors(&r));
            let mut n = node(platform, &nics);
            match n.handle(t(1), Op::Apply(Box::new(cfg.clone())), &snaps(RUNS.ports)) {
                Reply::Applied(o) => {
                    assert_eq!(o.keys_created.len(), RUNS.tunnels + RUNS.peers, "a private key and 16 preshared keys made")
                }
                other => panic!("{per_peer} per peer on {platform}: {other:?}"),
            }
            // It runs: timers fire (the dialled peer gets a handshake), status reports all of it.
            let mut f = n.forwarding().unwrap();
            struct Sink(usize);
            impl routerd_dataplane::Transmit for Sink {
                fn send(&mut self, _: routerd_dataplane::PortId, _: &[u8]) -> bool {
                    self.0 += 1;
                    true
                }
            }
            let mut sink = Sink(0);
            f.dataplane.poll(t(2_000), &mut f.tunnel, &mut sink);
            assert!(sink.0 > 0, "nothing was sent");
            let Reply::Status(st) = n.handle(t(2_001), Op::Status { mark: false }, &snaps(RUNS.ports)) else { panic!() };
            assert!(st.configured);
            assert_eq!(st.ports.len(), RUNS.ports);
            assert_eq!(st.peers.len(), RUNS.peers);
            assert_eq!(st.claims.len(), RUNS.claims);
        }
        assert_eq!(unvalidated_box(&cfg, &nics), None);
    }
}

#[test]
fn one_more_than_a_list_holds_is_refused_while_the_file_is_read() {
    // The lists a box runs in full are as long as the schema's: one more
    // entry never becomes a configuration.
    let cfg = maximal(RUNS.allowed_ips_per_peer);
    let text = config_schema::human::to_toml(&cfg).unwrap();
    let port = "\n[[ports]]\nname = \"lan7\"\nrole = \"lan\"\naddress = \"10.40.0.2/24\"\n";
    let peer = "\n[[peers]]\nname = \"one-more\"\ntunnel = \"wg0\"\npublic_key = \"ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\"\n";
    let claim = "\n[[claims]]\naddress = \"10.20.0.200/32\"\nowner = \"onprem\"\ncapture = { method = \"proxy-arp\", port = \"lan0\" }\ndelivery = { tunnel = \"wg0\", peer = \"peer0\" }\n";
    for (what, extra) in [("ports", port), ("peers", peer), ("claims", claim)] {
        let e = config_schema::human::from_toml(&format!("{text}{extra}")).unwrap_err();
        assert!(e.message.contains("too many entries"), "{what}: {}", e.message);
    }
    let long = text.replacen("allowed_ips = [", "allowed_ips = [\"172.31.0.1/32\", ", 1);
    let e = config_schema::human::from_toml(&long).unwrap_err();
    assert!(e.message.starts_with("peers[0].allowed_ips") && e.message.contains("too many entries"), "{}", e.message);
    // An eighth segment has no LAN port left to bridge.
    let mut c = cfg.clone();
    let mut s = c.segments[0].clone();
    s.name = name("seg7");
    s.vni = 2000;
    c.segments.push(s).unwrap();
    let r = config_schema::validate_for(&c, Platform::Image);
    assert!(r.problems.iter().any(|p| p.code == Code::PortBridgedTwice && p.path.as_str() == "segments[7].port"), "{}", errors(&r));
}

/// Every shipped example file is applied by the image's node as it is:
/// validation and the box can never disagree about them again.
#[test]
fn the_image_applies_every_shipped_example() {
    let mut nics = nics(2);
    nics.push(NicInfo::ethernet(AZURE_MAC));
    for file in ["hybrid-onprem", "hybrid-cloud", "two-site-roz", "two-site-wro"] {
        let text = std::fs::read_to_string(format!("{}/../../config-schema/examples/{file}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let cfg = config_schema::human::from_toml(&text).unwrap();
        let r = config_schema::validate_for(&cfg, Platform::Image);
        assert!(r.problems.is_empty(), "{file}:{}", errors(&r));
        let mut n = node(Platform::Image, &nics);
        match n.handle(t(1), Op::Apply(Box::new(cfg.clone())), &snaps(3)) {
            Reply::Applied(_) => {}
            other => panic!("{file}: {other:?}"),
        }
        assert_eq!(n.config(), Some(&cfg), "{file}");
        assert_eq!(unvalidated_box(&cfg, &nics), None, "{file}: the box's own machinery runs it too");
    }
}

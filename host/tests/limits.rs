//! routerd-host runs what `validate_for(.., Platform::Host)` accepts and
//! refuses what it refuses, through its real bind hook (`setup::bind`: the
//! WAN address the kernel owns, DNS names resolved, IPv6 endpoints mapped),
//! on a node set up like `Router::new` does it. No root, no TAP: the ports
//! are plans without devices, the WAN a UDP socket on loopback.
//! (The image's side is firmware/control/tests/limits.rs.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use config_schema::{Code, Config, Ipv4Cidr, Name, Platform, PortAddress, PortRole, PublicKey, RUNS};
use rand_core::OsRng;
use routerd_control::{NicSnapshot, Node};
use routerd_dataplane::Instant;
use routerd_host::setup::{self, DnsCache, Opened, PortPlan};
use routerd_host::wan::WanNic;
use routerd_provision::message::{Failure, FailureKind, Op, Reply};
use routerd_wireguard::SecretKey;

const WAN_MAC: [u8; 6] = [0x02, 0x72, 0x64, 0, 0, 1];

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

/// Like the cloud box of seed 000 on a Linux VM: the WAN is the VM's NIC,
/// its address the kernel's (`dhcp`), the on-prem box dials in.
fn base(lan_ports: usize) -> Config {
    let mut text = String::from(
        r#"
[device]
name = "cloud-vm"
side = "cloud"

[[ports]]
name = "eth0"
role = "wan"
address = "dhcp"
"#,
    );
    for k in 0..lan_ports {
        text.push_str(&format!("\n[[ports]]\nname = \"tap-lan{k}\"\nrole = \"lan\"\naddress = \"10.3{k}.0.2/24\"\n"));
    }
    text.push_str(
        r#"
[[wireguard]]
name = "wg0"
address = "10.99.0.2/30"
private_key = "device:wg0"

[[peers]]
name = "onprem"
tunnel = "wg0"
public_key = "bmVT61hr3CyMniAQZ5JS+MVqVE9qs9WsrlBqcGIE9gQ="
allowed_ips = ["10.99.0.1/32", "10.20.0.10/32"]

[[claims]]
address = "10.20.0.10/32"
owner = "onprem"
capture = { method = "provider-secondary-ip", port = "eth0" }
delivery = { tunnel = "wg0", peer = "onprem" }
"#,
    );
    config_schema::human::from_toml(&text).unwrap()
}

/// routerd-host after `setup::open` of `cfg`'s ports (without the
/// devices) and `Router::new`'s node.
struct HostBox {
    opened: Opened,
    wan: WanNic,
    dns: DnsCache,
    node: Box<Node<OsRng>>,
    _rt: tokio::runtime::Runtime,
}

impl HostBox {
    fn new(cfg: &Config, bind: IpAddr) -> Option<HostBox> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let guard = rt.enter();
        let mut ports = Vec::new();
        let mut wan_port = 0;
        for (i, p) in cfg.ports.iter().enumerate() {
            let mac = match p.role {
                PortRole::Wan => {
                    wan_port = i;
                    WAN_MAC
                }
                PortRole::Lan => [0x02, 0x10, 0, 0, 0, i as u8],
            };
            ports.push(PortPlan { name: p.name.as_str().into(), role: p.role, mac, tap: None });
        }
        // What `setup::open` does: the file's static WAN address, else the placeholder.
        let (wan_address, wan_gateway) = match cfg.ports.get(wan_port).and_then(|p| p.address) {
            Some(PortAddress::Static(a)) => (a, cfg.ports[wan_port].gateway),
            _ => (Ipv4Cidr::new(setup::PLACEHOLDER_WAN, setup::PLACEHOLDER_PREFIX).unwrap(), Some(Ipv4Addr::new(169, 254, 253, 2))),
        };
        let opened = Opened { ports, wan_port, wan_address, wan_gateway, listen_port: 51820 };
        // Port 0: any free port (the node never sees the socket's own port).
        let wan = WanNic::new(Some(bind), 0, WAN_MAC, None).ok()?;
        let mut node = Box::new(Node::new(&opened.nics(), Some(OsRng), "routerd-host", "test"));
        node.set_platform(Platform::Host);
        let mut dns = DnsCache::new();
        dns.insert("onprem.example.net".into(), "198.51.100.7:51820".parse().unwrap());
        dns.insert("wro.example.net".into(), "203.0.113.20:51820".parse().unwrap());
        dns.insert("roz.example.net".into(), "198.51.100.35:51820".parse().unwrap());
        drop(guard);
        Some(HostBox { opened, wan, dns, node, _rt: rt })
    }

    fn apply(&mut self, cfg: &Config) -> Reply {
        let _guard = self._rt.enter();
        let HostBox { opened, wan, dns, node, .. } = self;
        let dual_stack = wan.dual_stack();
        let mut bind = |c: &Config| setup::bind(c, opened, dual_stack, dns).map(Some).map_err(|m| Failure::refused(format_args!("{m}")));
        let snaps = vec![NicSnapshot::default(); opened.ports.len()];
        node.handle_with(Instant::from_millis(1), Op::Apply(Box::new(cfg.clone())), &snaps, &mut bind)
    }
}

fn applied(b: &mut HostBox, cfg: &Config, what: &str) {
    match b.apply(cfg) {
        Reply::Applied(_) => {}
        other => panic!("{what}: routerd-host refused it: {other:?}"),
    }
}

fn show(r: &config_schema::Report) -> String {
    r.problems.iter().map(|p| format!("\n  [{}] {p}", p.code.as_str())).collect()
}

/// (what, code, path, change).
type Case = (&'static str, Code, &'static str, Box<dyn Fn(&mut Config)>);
/// (what, code, path, what the unvalidated box says, change).
type CaseSaid = (&'static str, Code, &'static str, &'static str, Box<dyn Fn(&mut Config)>);

#[test]
fn routerd_host_runs_what_only_the_image_refuses() {
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let cases: Vec<Case> = vec![
        ("a WAN port without address", Code::PortAddressMissing, "ports[0].address", Box::new(|c| c.ports[0].address = None)),
        ("ports named freely", Code::PortNameUnbound, "ports[0].name", Box::new(|_| {})),
    ];
    for (what, code, path, change) in cases {
        let mut cfg = base(1);
        change(&mut cfg);
        let host = config_schema::validate_for(&cfg, Platform::Host);
        assert!(host.problems.is_empty(), "{what}:{}", show(&host));
        let image = config_schema::validate_for(&cfg, Platform::Image);
        assert!(
            image.problems.iter().any(|p| p.code == code && p.path.as_str() == path),
            "{what}: the image should refuse it at {path}:{}",
            show(&image)
        );
        let mut b = HostBox::new(&cfg, v4).unwrap();
        applied(&mut b, &cfg, what);
    }

    // IPv6 endpoints, on a dual-stack WAN socket (where the host has IPv6).
    let mut cfg = base(1);
    cfg.peers[0].endpoint = Some("[2001:db8::7]:51820".parse().unwrap());
    cfg.peers[0].persistent_keepalive = Some(25);
    assert!(config_schema::validate_for(&cfg, Platform::Host).is_valid());
    assert!(config_schema::validate_for(&cfg, Platform::Image).has(Code::EndpointUnsupported));
    match HostBox::new(&cfg, IpAddr::V6(Ipv6Addr::LOCALHOST)) {
        Some(mut b) => applied(&mut b, &cfg, "an IPv6 endpoint"),
        None => eprintln!("no IPv6 on this host: the IPv6 endpoint case is skipped"),
    }
}

/// Seed 003 as shipped: both two-site files (a bridge-only lan1, peers by
/// DNS name, wro's WAN by DHCP) are valid for routerd-host and applied by it.
/// roz's `[dns]` servers draw the one warning: routerd-host uses the host's
/// resolver instead.
#[test]
fn the_two_site_examples_run_on_routerd_host_as_shipped() {
    for file in ["two-site-roz", "two-site-wro"] {
        let text = std::fs::read_to_string(format!("{}/../config-schema/examples/{file}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let cfg = config_schema::human::from_toml(&text).unwrap();
        let r = config_schema::validate_for(&cfg, Platform::Host);
        let codes: Vec<Code> = r.problems.iter().map(|p| p.code).collect();
        let warned: &[Code] = if file == "two-site-roz" { &[Code::DnsServersHost] } else { &[] };
        assert!(r.is_valid() && codes == warned, "{file}:{}", show(&r));
        let mut b = HostBox::new(&cfg, IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        applied(&mut b, &cfg, file);
        assert_eq!(b.node.config(), Some(&cfg), "{file}: the node shows the file as given");
    }
}

#[test]
fn routerd_host_refuses_what_validation_refuses_with_the_same_path() {
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // (what, code, path, what the unvalidated box says, change)
    let cases: Vec<CaseSaid> = vec![
        (
            "a second WireGuard interface",
            Code::PlatformCapacity,
            "wireguard[1]",
            "wireguard[1]: this build drives one WireGuard interface",
            Box::new(|c| {
                let mut t = c.wireguard[0].clone();
                t.name = name("wg1");
                t.listen_port = 51821;
                t.address = None;
                t.private_key = "device:wg1".parse().unwrap();
                c.wireguard.push(t).unwrap();
            }),
        ),
        (
            "a LAN port without an address that no segment bridges",
            Code::PortAddressMissing,
            "ports[1].address",
            "the dataplane refused the configuration: BadPort(PortId(1))",
            Box::new(|c| c.ports[1].address = None),
        ),
        (
            "a port MTU above 1500",
            Code::MtuAbovePlatform,
            "ports[1].mtu",
            "the dataplane refused the configuration: BadPort(PortId(1))",
            Box::new(|c| c.ports[1].mtu = 9000),
        ),
        (
            "more allowed IPs than the WireGuard device routes",
            Code::TunnelRoutes,
            // 2 + 4 × 16: the 65th is peers[4].allowed_ips[14].
            "peers[4].allowed_ips[14]",
            "peers[4].allowed_ips: WireGuard refused",
            Box::new(|c| {
                for k in 1..=4u8 {
                    let mut p = c.peers[0].clone();
                    p.name = name(&format!("p{k}"));
                    p.public_key = PublicKey(SecretKey::generate(&mut OsRng).public_key().0);
                    p.allowed_ips = (1..=16).map(|h| cidr(&format!("172.16.{k}.{h}/32"))).collect();
                    c.peers.push(p).unwrap();
                }
            }),
        ),
        (
            "VXLAN from the WAN address",
            Code::VtepWanUnsupported,
            "segments[0].local_vtep",
            "segments[0].local_vtep: this box's WAN is a UDP socket that carries WireGuard only",
            Box::new(|c| {
                c.ports[0].address = Some(PortAddress::Static(cidr("192.0.2.10/24")));
                c.ports[0].gateway = Some("192.0.2.1".parse().unwrap());
                c.segments
                    .push(config_schema::Segment {
                        name: name("bare"),
                        vni: 4000,
                        port: c.ports[1].name.clone(),
                        local_vtep: "192.0.2.10".parse().unwrap(),
                        remote_vteps: [Ipv4Addr::new(198, 51, 100, 9)].into_iter().collect(),
                        udp_port: 4789,
                        mtu: 1450,
                        mss_clamp: config_schema::MssClamp::Auto,
                        control: Default::default(),
                    })
                    .unwrap();
            }),
        ),
    ];
    for (what, code, path, box_says, change) in cases {
        let mut cfg = base(1);
        change(&mut cfg);
        let r = config_schema::validate_for(&cfg, Platform::Host);
        assert!(r.problems.iter().any(|p| p.code == code && p.path.as_str() == path), "{what}:{}", show(&r));
        let mut b = HostBox::new(&cfg, v4).unwrap();
        applied(&mut b, &base(1), "the base");
        match b.apply(&cfg) {
            Reply::Error(f) => {
                assert_eq!(f.kind, FailureKind::Invalid, "{what}: {f}");
                assert!(f.problems.iter().any(|p| p.code.as_str() == code.as_str() && p.path.as_str() == path), "{what}: {f:?}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(b.node.config(), Some(&base(1)), "{what}: the running configuration changed");

        // Without validation, routerd-host's bind and routerd-control's
        // build, dataplane and WireGuard device refuse it too.
        let bound = setup::bind(&cfg, &b.opened, b.wan.dual_stack(), &b.dns);
        let psk = |_: &Name| Some(routerd_wireguard::PresharedKey([7; 32]));
        let said = match bound {
            Err(e) => e,
            Ok(bound) => match routerd_control::build(&bound, &b.opened.nics()) {
                Err(e) => e.to_string(),
                Ok(rt) => match routerd_dataplane::Dataplane::new(rt.dataplane.clone(), Instant::ZERO) {
                    Err(e) => format!("{e:?}"),
                    Ok(_) => match routerd_control::node::wireguard_device(rt.tunnel.as_ref(), Some(SecretKey::generate(&mut OsRng)), &psk)
                    {
                        Err(f) => f.to_string(),
                        Ok(_) => panic!("{what}: routerd-host runs it, but validation refuses it"),
                    },
                },
            },
        };
        assert!(said.starts_with(box_says), "{what}: the box says {said}");
        let box_path = said.split(':').next().unwrap();
        if box_path.contains('[') {
            assert!(path.starts_with(box_path), "{what}: validation names {path}, the box says {said}");
        }
    }
}

#[test]
fn a_configuration_at_every_limit_runs_on_routerd_host() {
    // 8 ports (1 WAN, 7 LAN with TAP-style names), one tunnel, 16 peers
    // with 64 allowed IPs together, 64 claims, 7 segments × 8 VTEPs.
    let mut cfg = base(RUNS.ports - 1);
    cfg.peers.clear();
    cfg.claims.clear();
    let mut routes = RUNS.tunnel_routes;
    for k in 0..RUNS.peers {
        let n = (routes - (RUNS.peers - k - 1)).min(RUNS.allowed_ips_per_peer);
        let mut allowed: heapless::Vec<Ipv4Cidr, { config_schema::limits::MAX_ALLOWED_IPS }> = heapless::Vec::new();
        allowed.push(cidr(&format!("10.2.{k}.0/24"))).unwrap();
        if k == 0 {
            allowed.push(cidr("10.20.0.64/26")).unwrap();
        }
        while allowed.len() < n {
            allowed.push(cidr(&format!("172.16.{k}.{}/32", allowed.len()))).unwrap();
        }
        routes -= allowed.len();
        cfg.peers
            .push(config_schema::Peer {
                name: name(&format!("site{k}")),
                tunnel: name("wg0"),
                public_key: PublicKey(SecretKey::generate(&mut OsRng).public_key().0),
                endpoint: (k == 0).then(|| "onprem.example.net:51820".parse().unwrap()),
                allowed_ips: allowed,
                persistent_keepalive: Some(25),
                preshared_key: Some(format!("device:site{k}-psk").parse().unwrap()),
            })
            .unwrap();
    }
    assert_eq!(cfg.peers.iter().map(|p| p.allowed_ips.len()).sum::<usize>(), RUNS.tunnel_routes);
    // Claims: captured by the provider fabric on eth0 (10.20.0.64–127, owned
    // by site0's side) or owned here on tap-lan0 … (10.30.0.x).
    for i in 0..RUNS.claims {
        let (owner, address) =
            if i % 2 == 0 { ("onprem", format!("10.20.0.{}/32", 64 + i / 2)) } else { ("cloud", format!("10.30.0.{}/32", 10 + i / 2)) };
        cfg.claims
            .push(config_schema::Claim {
                address: cidr(&address),
                owner: name(owner),
                gratuitous_arp: None,
                conflict_hold: None,
                local_port: None,
                mss_clamp: config_schema::MssClamp::Auto,
                capture: config_schema::Capture {
                    method: config_schema::CaptureMethod::ProviderSecondaryIp,
                    port: name("eth0"),
                    configure_os_address: false,
                },
                delivery: config_schema::Delivery { tunnel: name("wg0"), peer: name("site0") },
            })
            .unwrap();
    }
    let lans: Vec<Name> = cfg.ports.iter().filter(|p| p.role == PortRole::Lan).map(|p| p.name.clone()).collect();
    for (s, port) in lans.into_iter().enumerate() {
        cfg.segments
            .push(config_schema::Segment {
                name: name(&format!("seg{s}")),
                vni: 1000 + s as u32,
                port,
                local_vtep: "10.99.0.2".parse().unwrap(),
                remote_vteps: (0..RUNS.vteps_per_segment).map(|k| format!("10.2.{k}.1").parse().unwrap()).collect(),
                udp_port: 4789,
                mtu: 1370,
                mss_clamp: config_schema::MssClamp::Auto,
                control: Default::default(),
            })
            .unwrap();
    }
    assert_eq!(cfg.ports.len(), RUNS.ports);
    assert!(matches!(cfg.ports[0].address, Some(PortAddress::Dhcp)));
    let r = config_schema::validate_for(&cfg, Platform::Host);
    assert!(r.is_valid(), "{}", show(&r));
    let mut b = HostBox::new(&cfg, IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    applied(&mut b, &cfg, "the maximal configuration");
    let resolved: Option<SocketAddr> = b.dns.get("onprem.example.net").copied();
    assert!(resolved.is_some());
    assert_eq!(b.node.config(), Some(&cfg), "the node shows the configuration as given");
}

//! Seed 000 on the host: an on-prem box and a cloud box, each built from its
//! TOML configuration by `routerd_control::build`, joined by real WireGuard
//! (`routerd-wireguard` through the `WgTunnel` adapter) over a simulated
//! underlay wire. LAN hosts are played by the test with frames built and
//! parsed by `etherparse`, an implementation independent of ours.

use routerd_e2e::net;
use rand_core::OsRng;
use routerd_control::{build, NicInfo, Runtime, WgTunnel};
use routerd_dataplane::{self as dp, Dataplane, FrameBuf, Instant, PortId, Transmit, Verdict};
use routerd_wireguard::{self as wg, Device, SecretKey};
use std::collections::VecDeque;

const ONPREM_MACS: [[u8; 6]; 2] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1]];
const CLOUD_MACS: [[u8; 6]; 2] = [[0x02, 0xc0, 0, 0, 0, 0], [0x02, 0xc0, 0, 0, 0, 1]];
const HOST_ONPREM_MAC: [u8; 6] = [0x02, 0x11, 0, 0, 0, 10];
const HOST_CLOUD_MAC: [u8; 6] = [0x02, 0x22, 0, 0, 0, 50];
const HOST_ONPREM: [u8; 4] = [10, 20, 0, 10];
const HOST_CLOUD: [u8; 4] = [10, 20, 0, 50];

fn config(side: &str, lan: &str, wan: &str, peer_name: &str, peer_key: &str, endpoint: &str, peer_allowed: &str) -> String {
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

/// Frames a box sent, by port.
#[derive(Default)]
struct Wire(VecDeque<(PortId, Vec<u8>)>);

impl Transmit for Wire {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.0.push_back((port, frame.to_vec()));
        true
    }
}

struct Box_ {
    dp: Dataplane,
    wg: Device<16, 64>,
    out: Wire,
}

impl Box_ {
    fn new(toml: &str, macs: [[u8; 6]; 2], key: SecretKey) -> Box_ {
        let cfg = config_schema::human::from_toml(toml).expect("config parses");
        let report = config_schema::validate(&cfg);
        assert_eq!(report.errors, 0, "config invalid: {report:?}");
        let rt: Runtime = build(&cfg, &macs.map(|mac| NicInfo { mac })).expect("config builds");
        let plan = rt.tunnel.clone().expect("tunnel");
        let mut dev = Device::new(key, wg::Config { mtu: plan.mtu, ..wg::Config::default() });
        for p in &plan.peers {
            let mut pc = wg::PeerConfig::new(wg::PublicKey(p.public_key));
            pc.endpoint = p.endpoint;
            let id = dev.add_peer(pc).expect("peer");
            for a in &p.allowed {
                dev.add_allowed_ip(id, a.addr().into(), a.prefix_len()).expect("allowed ip");
            }
        }
        Box_ { dp: Dataplane::new(rt.dataplane, Instant::ZERO).expect("dataplane"), wg: dev, out: Wire::default() }
    }

    fn input(&mut self, now: Instant, port: u8, frame: &[u8]) {
        let mut raw = [0u8; dp::BUF_SIZE];
        raw[dp::HEADROOM..dp::HEADROOM + frame.len()].copy_from_slice(frame);
        let mut buf = FrameBuf::new(&mut raw, dp::HEADROOM, frame.len()).unwrap();
        let mut rng = OsRng;
        let mut tunnel = WgTunnel { device: &mut self.wg, rng: &mut rng };
        if let Verdict::Transmit(p) = self.dp.process(now, PortId(port), &mut buf, &mut tunnel, &mut self.out) {
            self.out.0.push_back((p, buf.frame().to_vec()));
        }
    }

    fn poll(&mut self, now: Instant) {
        let mut rng = OsRng;
        let mut tunnel = WgTunnel { device: &mut self.wg, rng: &mut rng };
        self.dp.poll(now, &mut tunnel, &mut self.out);
    }
}

/// Moves frames until both boxes are quiet; returns what reached each LAN.
fn pump(now: Instant, a: &mut Box_, b: &mut Box_, a_lan: &mut Vec<Vec<u8>>, b_lan: &mut Vec<Vec<u8>>) {
    for _ in 0..1000 {
        let mut moved = false;
        while let Some((port, f)) = a.out.0.pop_front() {
            moved = true;
            if port == PortId(1) { b.input(now, 1, &f) } else { a_lan.push(f) }
        }
        while let Some((port, f)) = b.out.0.pop_front() {
            moved = true;
            if port == PortId(1) { a.input(now, 1, &f) } else { b_lan.push(f) }
        }
        if !moved {
            return;
        }
    }
    panic!("the boxes never went quiet");
}

fn tcp_syn(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ack: bool, mss: u16) -> Vec<u8> {
    net::ethernet(src_mac, dst_mac, &net::tcp_syn_packet(src, dst, ack, mss))
}

fn tcp_mss(frame: &[u8]) -> Option<(bool, u16)> {
    net::ip_payload(frame).and_then(net::tcp_syn_mss)
}

fn checksums_valid(frame: &[u8]) -> bool {
    net::ip_payload(frame).is_some_and(net::checksums_valid)
}

#[test]
fn a_syn_crosses_from_onprem_to_the_cloud_host_and_back_clamped_both_ways() {
    let onprem_key = SecretKey::generate(&mut OsRng);
    let cloud_key = SecretKey::generate(&mut OsRng);
    let onprem_pub = onprem_key.public_key().to_base64();
    let cloud_pub = cloud_key.public_key().to_base64();
    let onprem_cfg = config("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", cloud_pub.as_str(), "192.0.2.2:51820", "\"10.20.0.50/32\"");
    let cloud_cfg = config("cloud", "10.20.0.3/24", "192.0.2.2/24", "onprem", onprem_pub.as_str(), "192.0.2.1:51820", "\"10.20.0.10/32\"");
    let mut onprem = Box_::new(&onprem_cfg, ONPREM_MACS, onprem_key);
    let mut cloud = Box_::new(&cloud_cfg, CLOUD_MACS, cloud_key);
    let (mut onprem_lan, mut cloud_lan) = (Vec::new(), Vec::new());
    let mut now = Instant::from_millis(1000);

    // Proxy-ARP claims probe first (nobody answers here), then announce
    // themselves with gratuitous ARPs on the LANs; clear them.
    for _ in 0..4 {
        onprem.poll(now);
        cloud.poll(now);
        pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
        now = now.plus_millis(200);
    }
    onprem_lan.clear();
    cloud_lan.clear();

    // The on-prem host asks who has the cloud-owned address: the box answers
    // with its LAN MAC.
    onprem.input(now, 0, &net::arp_request(HOST_ONPREM_MAC, HOST_ONPREM, HOST_CLOUD));
    pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
    let reply = onprem_lan.pop().expect("proxy-ARP reply");
    assert_eq!(&reply[..6], &HOST_ONPREM_MAC);
    assert_eq!(&reply[6..12], &ONPREM_MACS[0]);

    // SYN with MSS 1460; the first one starts the handshake (WireGuard has
    // no queue), TCP's retransmission carries the second.
    let syn = tcp_syn(HOST_ONPREM_MAC, ONPREM_MACS[0], HOST_ONPREM, HOST_CLOUD, false, 1460);
    let mut delivered = None;
    for _ in 0..5 {
        onprem.input(now, 0, &syn);
        for _ in 0..5 {
            pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
            // The cloud box ARPs for the real host on its LAN: answer it.
            for f in std::mem::take(&mut cloud_lan) {
                if let Some(r) = net::answer_arp(&f, HOST_CLOUD, HOST_CLOUD_MAC) {
                    cloud.input(now, 0, &r);
                } else if tcp_mss(&f).is_some() {
                    delivered = Some(f);
                }
            }
            now = now.plus_millis(10);
            onprem.poll(now);
            cloud.poll(now);
        }
        if delivered.is_some() {
            break;
        }
        now = now.plus_millis(1000);
    }
    let got = delivered.expect("the SYN reached the cloud host");
    assert_eq!(&got[..6], &HOST_CLOUD_MAC);
    assert_eq!(&got[6..12], &CLOUD_MACS[0]);
    assert_eq!(tcp_mss(&got), Some((false, 1380)), "SYN MSS clamped to tunnel MTU 1420 - 40");
    assert!(checksums_valid(&got), "checksums after clamping");

    // The cloud host answers with a SYN-ACK (MSS 1460) to the on-prem
    // address, which the cloud box captures by proxy-ARP: it already knows
    // the host from the ARP exchange, so send straight to its LAN MAC.
    let synack = tcp_syn(HOST_CLOUD_MAC, CLOUD_MACS[0], HOST_CLOUD, HOST_ONPREM, true, 1460);
    cloud.input(now, 0, &synack);
    let mut back = None;
    for _ in 0..5 {
        pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
        for f in std::mem::take(&mut onprem_lan) {
            if let Some(r) = net::answer_arp(&f, HOST_ONPREM, HOST_ONPREM_MAC) {
                onprem.input(now, 0, &r);
            } else if tcp_mss(&f).is_some() {
                back = Some(f);
            }
        }
        now = now.plus_millis(10);
        onprem.poll(now);
    }
    let got = back.expect("the SYN-ACK reached the on-prem host");
    assert_eq!(&got[..6], &HOST_ONPREM_MAC);
    assert_eq!(tcp_mss(&got), Some((true, 1380)), "SYN-ACK MSS clamped too");
    assert!(checksums_valid(&got));

    // The packets really crossed WireGuard: both sides hold a session and
    // moved encrypted bytes.
    for (name, b) in [("onprem", &onprem), ("cloud", &cloud)] {
        let st = b.wg.peer_status(wg::PeerId(0), routerd_wireguard::Instant::from_millis(now.millis())).unwrap();
        assert!(st.has_session && st.last_handshake.is_some(), "{name}: no WireGuard session");
        assert!(st.tx_bytes > 0 && st.rx_bytes > 0, "{name}: no encrypted traffic ({st:?})");
    }
    let c = onprem.wg.counters();
    assert!(c.iter().all(|(name, n)| n == 0 || name == "no_session"), "unexpected WireGuard errors: {:?}", c.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>());
}

#[test]
fn the_shipped_examples_build_on_a_two_nic_box() {
    let nics = [NicInfo { mac: ONPREM_MACS[0] }, NicInfo { mac: ONPREM_MACS[1] }];
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config-schema/examples/hybrid-onprem.toml")).unwrap();
    let cfg = config_schema::human::from_toml(&text).unwrap();
    let rt = build(&cfg, &nics).expect("onprem example builds");
    assert_eq!(rt.nic_of_port.as_slice(), &[0, 1]);
    assert_eq!(rt.dataplane.claims.len(), 3);
    let plan = rt.tunnel.unwrap();
    assert_eq!(plan.peers.len(), 1);
    assert_eq!(plan.listen_port, 51820);
}

#[test]
fn build_errors_name_the_configuration_path() {
    let text = config("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=", "cloud.example.net:51820", "\"10.20.0.50/32\"");
    let cfg = config_schema::human::from_toml(&text).unwrap();
    let nics = [NicInfo { mac: ONPREM_MACS[0] }, NicInfo { mac: ONPREM_MACS[1] }];
    let e = build(&cfg, &nics).unwrap_err();
    assert!(e.to_string().starts_with("peers[0].endpoint:"), "{e}");
    let e = build(&cfg, &nics[..1]).unwrap_err();
    assert_eq!(e.to_string(), "ports[1]: no NIC with that MAC or contract name on this box");
}

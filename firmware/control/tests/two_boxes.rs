//! Seed 000 on the host: an on-prem box and a cloud box, each the real
//! `routerd_control::Node` applying its TOML configuration and driven by the
//! forwarding turn the image runs (`routerd_control::run`) over in-memory
//! NICs, joined by real WireGuard over a simulated underlay wire. LAN hosts
//! are played by the test with frames built and parsed by `etherparse`, an
//! implementation independent of ours.

mod common;

use common::{key_pair, seed_000, CLOUD_MACS, HOST_CLOUD, HOST_CLOUD_MAC, HOST_ONPREM, HOST_ONPREM_MAC, ONPREM_MACS};
use routerd_control::{build, NicInfo};
use routerd_dataplane::Instant;
use routerd_e2e::net;
use routerd_netdev::testing::Loopback;
use routerd_provision::message::{Op, Reply};
use routerd_wireguard as wg;

/// One box (`common::Site`): the real node (configuration, keys,
/// dataplane, WireGuard) driven by the forwarding turn every platform runs,
/// over two in-memory NICs (lan0, wan0).
type Site = common::Site<2>;

/// Runs both boxes, carrying WAN frames across, until both are quiet;
/// collects what they sent on their LANs.
fn pump(now: Instant, a: &mut Site, b: &mut Site, a_lan: &mut Vec<Vec<u8>>, b_lan: &mut Vec<Vec<u8>>) {
    common::pump(now, a, b, true, 1000, &mut |site, _, frames| if site == 0 { a_lan.extend(frames) } else { b_lan.extend(frames) });
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
    let ((onprem_key, onprem_pub), (cloud_key, cloud_pub)) = (key_pair(), key_pair());
    let onprem_cfg =
        seed_000("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", cloud_pub.as_str(), "192.0.2.2:51820", "\"10.20.0.50/32\"");
    let cloud_cfg =
        seed_000("cloud", "10.20.0.3/24", "192.0.2.2/24", "onprem", onprem_pub.as_str(), "192.0.2.1:51820", "\"10.20.0.10/32\"");
    let mut onprem = Site::new(&onprem_cfg, ONPREM_MACS, onprem_key);
    let mut cloud = Site::new(&cloud_cfg, CLOUD_MACS, cloud_key);
    let (mut onprem_lan, mut cloud_lan) = (Vec::new(), Vec::new());
    let mut now = Instant::from_millis(1000);

    // Proxy-ARP claims probe first (nobody answers here), then announce
    // themselves with gratuitous ARPs on the LANs; clear them.
    for _ in 0..4 {
        pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
        now = now.plus_millis(200);
    }
    onprem_lan.clear();
    cloud_lan.clear();

    // The on-prem host asks who has the cloud-owned address: the box answers
    // with its LAN MAC.
    onprem.lan().inject(&net::arp_request(HOST_ONPREM_MAC, HOST_ONPREM, HOST_CLOUD));
    pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
    let reply = onprem_lan.pop().expect("proxy-ARP reply");
    assert_eq!(&reply[..6], &HOST_ONPREM_MAC);
    assert_eq!(&reply[6..12], &ONPREM_MACS[0]);

    // SYN with MSS 1460; the first one starts the handshake (WireGuard has
    // no queue), TCP's retransmission carries the second.
    let syn = tcp_syn(HOST_ONPREM_MAC, ONPREM_MACS[0], HOST_ONPREM, HOST_CLOUD, false, 1460);
    let mut delivered = None;
    for _ in 0..5 {
        onprem.lan().inject(&syn);
        for _ in 0..5 {
            pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
            // The cloud box ARPs for the real host on its LAN: answer it.
            for f in std::mem::take(&mut cloud_lan) {
                if let Some(r) = net::answer_arp(&f, HOST_CLOUD, HOST_CLOUD_MAC) {
                    cloud.lan().inject(&r);
                } else if tcp_mss(&f).is_some() {
                    delivered = Some(f);
                }
            }
            now = now.plus_millis(10);
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
    cloud.lan().inject(&synack);
    let mut back = None;
    for _ in 0..5 {
        pump(now, &mut onprem, &mut cloud, &mut onprem_lan, &mut cloud_lan);
        for f in std::mem::take(&mut onprem_lan) {
            if let Some(r) = net::answer_arp(&f, HOST_ONPREM, HOST_ONPREM_MAC) {
                onprem.lan().inject(&r);
            } else if tcp_mss(&f).is_some() {
                back = Some(f);
            }
        }
        now = now.plus_millis(10);
    }
    let got = back.expect("the SYN-ACK reached the on-prem host");
    assert_eq!(&got[..6], &HOST_ONPREM_MAC);
    assert_eq!(tcp_mss(&got), Some((true, 1380)), "SYN-ACK MSS clamped too");
    assert!(checksums_valid(&got));

    // The packets really crossed WireGuard: both sides hold a session and
    // moved encrypted bytes.
    for (name, b) in [("onprem", &mut onprem), ("cloud", &mut cloud)] {
        let st = b.node.wireguard().unwrap().peer_status(wg::PeerId(0), routerd_wireguard::Instant::from_millis(now.millis())).unwrap();
        assert!(st.has_session && st.last_handshake.is_some(), "{name}: no WireGuard session");
        assert!(st.tx_bytes > 0 && st.rx_bytes > 0, "{name}: no encrypted traffic ({st:?})");
    }
    let c = onprem.node.wireguard().unwrap().counters().clone();
    assert!(
        c.iter().all(|(name, n)| n == 0 || name == "no_session"),
        "unexpected WireGuard errors: {:?}",
        c.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>()
    );
}

/// The loop's own transmit path: a ring of 4 slots (freed only when the
/// turn polls the NIC) meets a burst of 40 frames; what does not fit is a
/// counted drop on that port, shown by status.
#[test]
fn a_full_transmit_ring_is_counted_by_the_loop() {
    let ((onprem_key, _), (_, peer_pub)) = (key_pair(), key_pair());
    let cfg = seed_000("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", peer_pub.as_str(), "192.0.2.2:51820", "\"10.20.0.50/32\"");
    let mut site = Site::new(&cfg, ONPREM_MACS, onprem_key);
    site.nics[1] = Loopback::new(ONPREM_MACS[1], 4);
    let mut now = Instant::from_millis(1000);
    for _ in 0..5 {
        site.turn(now);
        now = now.plus_millis(200);
    }
    // 40 hosts ask for the box's own LAN address at once; lan0's ring
    // holds 4 frames between polls, so most replies cannot be sent.
    site.nics[0] = Loopback::new(ONPREM_MACS[0], 4);
    for i in 0..40u8 {
        site.lan().inject(&net::arp_request([0x02, 0x11, 0, 0, 1, i], [10, 20, 0, 100 + i], [10, 20, 0, 2]));
    }
    site.turn(now);
    let answered = site.lan().take_sent().len();
    assert_eq!(answered, 4, "the ring holds 4 frames per turn");
    let snaps = [routerd_control::NicSnapshot::default(); 2];
    let Reply::Status(st) = site.node.handle(now, Op::Status { mark: false }, &snaps) else { panic!() };
    let lost: u64 = st.drops.iter().filter(|d| d.name.as_str() == "tx_full").map(|d| d.value).sum();
    assert_eq!(lost, 28, "32 frames taken in one batch, 4 sent, 28 lost: {:?}", st.drops);
    assert_eq!(st.ports[0].tx_dropped, 28);
    assert_eq!(st.ports[1].tx_dropped, 0);
    // The next turns take the rest of the burst; the ring drains each turn.
    site.turn(now);
    assert_eq!(site.lan().take_sent().len(), 4);
}

/// Traffic that ends on the box: a LAN host pings the box's LAN address;
/// the dataplane admits it, the services layer answers, the answer is
/// routed back — all inside the one loop.
#[test]
fn the_box_answers_ping_through_its_services_layer() {
    let ((key, _), (_, peer_pub)) = (key_pair(), key_pair());
    let cfg = seed_000("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", peer_pub.as_str(), "192.0.2.2:51820", "\"10.20.0.50/32\"");
    let mut site = Site::new(&cfg, ONPREM_MACS, key);
    let now = Instant::from_millis(1000);
    site.turn(now);
    site.lan().take_sent();
    // The host first ARPs for the box (the box learns it), then pings.
    site.lan().inject(&net::arp_request(HOST_ONPREM_MAC, HOST_ONPREM, [10, 20, 0, 2]));
    site.turn(now);
    site.lan().take_sent();
    let ping = net::icmp_echo_packet(HOST_ONPREM, [10, 20, 0, 2], 9, 56, false);
    site.lan().inject(&net::ethernet(HOST_ONPREM_MAC, ONPREM_MACS[0], &ping));
    site.turn(now);
    let out = site.lan().take_sent();
    let snaps = [routerd_control::NicSnapshot::default(); 2];
    let Reply::Status(st) = site.node.handle(now, Op::Status { mark: false }, &snaps) else { panic!() };
    let reply = out
        .iter()
        .find_map(|f| net::ip_payload(f).and_then(net::icmp))
        .unwrap_or_else(|| panic!("no ICMP answer on lan0: {out:?} {:?} {:?}", st.counters, st.drops));
    assert_eq!(reply.0, 0, "echo reply");
    assert_eq!((reply.3, reply.4), ([10, 20, 0, 2], HOST_ONPREM));
    assert!(out.iter().any(|f| f[..6] == HOST_ONPREM_MAC));
    let Reply::Status(st) = site.node.handle(now, Op::Status { mark: false }, &[]) else { panic!() };
    let count = |n: &str| st.counters.iter().find(|c| c.name.as_str() == n).map(|c| c.value);
    assert_eq!(count("echo_replies"), Some(1));
    assert_eq!(count("local_delivered"), Some(1));
    // On the WAN the box stays silent.
    let wan_ping = net::icmp_echo_packet([192, 0, 2, 9], [192, 0, 2, 1], 10, 56, false);
    site.nics[1].inject(&net::ethernet([0x02, 0xee, 0, 0, 0, 9], ONPREM_MACS[1], &wan_ping));
    site.turn(now);
    assert!(site.nics[1].take_sent().is_empty());
}

#[test]
fn the_shipped_examples_build_on_a_two_nic_box() {
    let nics = [NicInfo::ethernet(ONPREM_MACS[0]), NicInfo::ethernet(ONPREM_MACS[1])];
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
    let text = seed_000(
        "onprem",
        "10.20.0.2/24",
        "192.0.2.1/24",
        "cloud",
        "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=",
        "[2001:db8::7]:51820",
        "\"10.20.0.50/32\"",
    );
    let cfg = config_schema::human::from_toml(&text).unwrap();
    let nics = [NicInfo::ethernet(ONPREM_MACS[0]), NicInfo::ethernet(ONPREM_MACS[1])];
    let e = build(&cfg, &nics).unwrap_err();
    assert!(e.to_string().starts_with("peers[0].endpoint:"), "{e}");
    // A name is not an error: the peer has no endpoint until it resolves.
    let named = text.replace("[2001:db8::7]:51820", "cloud.example.net:51820");
    let rt = build(&config_schema::human::from_toml(&named).unwrap(), &nics).unwrap();
    assert_eq!(rt.tunnel.unwrap().peers[0].endpoint, None);
    assert_eq!(rt.named[0].name.as_str(), "cloud.example.net");
    let e = build(&cfg, &nics[..1]).unwrap_err();
    // The refusal names what was looked for and lists the NICs the box has.
    assert_eq!(
        e.to_string(),
        "ports[1].name: no NIC is called wan0 on this box (no `mac`: bound by contract name); its NICs: lan0 02:a0:00:00:00:00"
    );
    // Named by a MAC no NIC has: the MAC and every NIC (four still fit a refusal's 200 characters).
    let mut by_mac = cfg.clone();
    by_mac.ports[0].mac = Some("02:99:00:00:00:01".parse().unwrap());
    let four: Vec<NicInfo> = (0..4).map(|i| NicInfo::ethernet([0x02, 0xa0, 0, 0, 0, i])).collect();
    let said = build(&by_mac, &four).unwrap_err().to_string();
    assert_eq!(
        said,
        "ports[0].mac: no NIC with MAC 02:99:00:00:00:01 on this box; its NICs: lan0 02:a0:00:00:00:00, wan0 02:a0:00:00:00:01, \
         lan1 02:a0:00:00:00:02, lan2 02:a0:00:00:00:03"
    );
    assert!(said.len() <= 200, "{} characters", said.len());
}

/// Sends the on-prem host's SYN to the cloud host `attempts` times, 1 s
/// apart, until the cloud box delivers it; the delivered frame.
fn syn_across(now: &mut Instant, onprem: &mut Site, cloud: &mut Site, attempts: usize) -> Option<Vec<u8>> {
    let (mut onprem_lan, mut cloud_lan) = (Vec::new(), Vec::new());
    let syn = tcp_syn(HOST_ONPREM_MAC, ONPREM_MACS[0], HOST_ONPREM, HOST_CLOUD, false, 1460);
    for _ in 0..attempts {
        onprem.lan().inject(&syn);
        for _ in 0..5 {
            pump(*now, onprem, cloud, &mut onprem_lan, &mut cloud_lan);
            for f in std::mem::take(&mut cloud_lan) {
                if let Some(r) = net::answer_arp(&f, HOST_CLOUD, HOST_CLOUD_MAC) {
                    cloud.lan().inject(&r);
                } else if tcp_mss(&f).is_some() {
                    return Some(f);
                }
            }
            *now = now.plus_millis(10);
        }
        *now = now.plus_millis(1000);
    }
    None
}

/// `preshared_key = "device:pair-psk"` on both boxes: the on-prem box makes
/// the key at its apply, the cloud box makes one of its own — they differ,
/// so no handshake completes (the initiator refuses the response) — until
/// the on-prem key is revealed and imported on the cloud box, whose tunnel
/// restarts with it.
#[test]
fn a_preshared_key_revealed_on_one_box_and_imported_on_the_other_joins_them() {
    let ((onprem_key, onprem_pub), (cloud_key, cloud_pub)) = (key_pair(), key_pair());
    let psk = |toml: String| toml.replace("allowed_ips = [", "preshared_key = \"device:pair-psk\"\nallowed_ips = [");
    let onprem_cfg =
        seed_000("onprem", "10.20.0.2/24", "192.0.2.1/24", "cloud", cloud_pub.as_str(), "192.0.2.2:51820", "\"10.20.0.50/32\"");
    let cloud_cfg =
        seed_000("cloud", "10.20.0.3/24", "192.0.2.2/24", "onprem", onprem_pub.as_str(), "192.0.2.1:51820", "\"10.20.0.10/32\"");
    let mut onprem = Site::new(&psk(onprem_cfg), ONPREM_MACS, onprem_key);
    let mut cloud = Site::new(&psk(cloud_cfg), CLOUD_MACS, cloud_key);
    let slot = config_schema::Name::new("pair-psk").unwrap();
    let reveal = |s: &mut Site| match s.node.handle(Instant::ZERO, Op::PresharedKeyReveal(slot.clone()), &[]) {
        Reply::PresharedKey { key, .. } => key,
        other => panic!("{other:?}"),
    };
    let onprem_psk = reveal(&mut onprem);
    assert_ne!(onprem_psk, reveal(&mut cloud), "each box made its own");
    let mut now = Instant::from_millis(1000);
    // The claims probe, then capture.
    for _ in 0..4 {
        pump(now, &mut onprem, &mut cloud, &mut Vec::new(), &mut Vec::new());
        now = now.plus_millis(200);
    }

    // Different keys: the on-prem box initiates, the cloud box answers, and
    // the answer fails to authenticate at the on-prem box.
    assert!(syn_across(&mut now, &mut onprem, &mut cloud, 5).is_none(), "a SYN crossed with different preshared keys");
    let wg_now = |now: Instant| routerd_wireguard::Instant::from_millis(now.millis());
    let refused = onprem.node.wireguard().unwrap().counters().get(wg::Error::HandshakeDecrypt);
    assert!(refused > 0, "the on-prem box refused the response");
    for b in [&mut onprem, &mut cloud] {
        assert!(!b.node.wireguard().unwrap().peer_status(wg::PeerId(0), wg_now(now)).unwrap().has_session);
    }

    // The operator reveals the on-prem key and imports it on the cloud box.
    let Reply::Keys(k) = cloud.node.handle(now, Op::PresharedKeyImport(slot.clone(), onprem_psk), &[]) else { panic!() };
    assert!(k.iter().any(|k| k.slot == slot && !k.generated && k.in_use));
    // Past the initiator's retry interval (5 s), the next SYN crosses.
    now = now.plus_millis(6000);
    let got = syn_across(&mut now, &mut onprem, &mut cloud, 5).expect("the SYN crossed once both boxes hold the same key");
    assert_eq!(&got[..6], &HOST_CLOUD_MAC);
    for (name, b) in [("onprem", &mut onprem), ("cloud", &mut cloud)] {
        let st = b.node.wireguard().unwrap().peer_status(wg::PeerId(0), wg_now(now)).unwrap();
        assert!(st.has_session && st.last_handshake.is_some(), "{name}: no WireGuard session");
    }
    assert_eq!(onprem.node.wireguard().unwrap().counters().get(wg::Error::HandshakeDecrypt), refused, "no failure since");
}

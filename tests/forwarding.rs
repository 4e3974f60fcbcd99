//! The real image forwards real frames (issue 4's scenarios).
//!
//! The box boots with `lan0` and `wan0` on unix datagram sockets and a
//! configuration on its command line. The harness plays both neighbours:
//! - a host on the LAN (`10.20.0.10`, the address this side owns), with
//!   frames built and parsed by `etherparse`;
//! - the cloud-side WireGuard peer on the WAN (`192.0.2.100:51820`), which is
//!   boringtun's `Tunn` in this process, speaking UDP inside Ethernet frames
//!   the harness builds; behind it lives `10.20.0.50`, the claimed address.
//!
//! Scenarios: proxy-ARP (claimed vs unclaimed), a TCP SYN out through the
//! tunnel with its MSS clamped and every other byte intact, the SYN-ACK back
//! clamped after the box resolves the LAN host, ICMP echo both ways and
//! fragmentation-needed for a DF packet too big for the tunnel, and
//! thousands of garbage frames on both NICs after which the box still
//! forwards and its drop counters moved. The matrix runs on virtio-net and
//! e1000e, `-machine pc` and `q35`.

use base64::Engine;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use etherparse::ArpOperation;
use qemu::{MachineType, NicModel, Vm};
use rand_core::{OsRng, RngCore};
use routerd_e2e::net::{self, Ip, Link, Mac};
use routerd_e2e::{check, qemu, test_mac};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(5);

const HOST: Ip = [10, 20, 0, 10];
const HOST_MAC: Mac = [0x02, 0x11, 0, 0, 0, 10];
const CLAIMED: Ip = [10, 20, 0, 50];
const UNCLAIMED: Ip = [10, 20, 0, 77];
const BOX_WAN: Ip = [192, 0, 2, 2];
const PEER: Ip = [192, 0, 2, 100];
const PEER_MAC: Mac = [0x02, 0xee, 0, 0, 0, 100];
const WG_PORT: u16 = 51820;

fn config(peer_public: &str) -> String {
    format!(
        r#"
[device]
name = "e2e-onprem"
side = "onprem"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"

[[ports]]
name = "wan0"
role = "wan"
address = "192.0.2.2/24"

[[wireguard]]
name = "wg0"
mtu = 1420
address = "10.99.0.1/30"
private_key = "device:wg0"

[[peers]]
name = "cloud"
tunnel = "wg0"
public_key = "{peer_public}"
endpoint = "192.0.2.100:51820"
allowed_ips = ["10.99.0.2/32", "10.20.0.50/32"]

[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}

[[claims]]
address = "10.20.0.10/32"
owner = "onprem"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}
"#
    )
}

fn encoded(toml: &str) -> String {
    let cfg = config_schema::human::from_toml(toml).expect("test config parses");
    assert!(config_schema::validate(&cfg).is_valid(), "test config invalid");
    let mut buf = vec![0u8; config_schema::CONFIG_WIRE_MAX];
    let bytes = config_schema::encode(&cfg, &mut buf).expect("encodes");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The running box and the harness's two neighbours.
struct Lab {
    vm: Vm,
    lan: Link,
    wan: Link,
    box_lan_mac: Mac,
    box_wan_mac: Mac,
    peer: Tunn,
}

impl Lab {
    fn start(kind: MachineType, model: NicModel) -> Lab {
        let peer_secret = StaticSecret::random_from_rng(OsRng);
        let peer_public = PublicKey::from(&peer_secret);
        let peer_b64 = base64::engine::general_purpose::STANDARD.encode(peer_public.as_bytes());

        let cmdline = format!("routerd.config={}", encoded(&config(&peer_b64)));
        let (m, mut links) = routerd_e2e::two_nic_machine(kind, model, 3, &cmdline);
        let mut vm = check(m.spawn());
        check(vm.wait_for("dataplane: 2 ports, 2 claims, 0 segments; forwarding", BOOT));
        // The claim probes for a live host first (nobody answers here).
        check(vm.wait_for("claim 10.20.0.50: capturing", BOOT));
        let console = vm.console();
        let key = console
            .lines()
            .find_map(|l| l.split("wg: wg0 public key ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("box prints its public key");
        let box_public: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(key).expect("base64 key").try_into().expect("32 bytes");
        let peer = Tunn::new(peer_secret, PublicKey::from(box_public), None, None, OsRng.next_u32() >> 8, None);
        let wan = links.pop().unwrap();
        let lan = links.pop().unwrap();
        Lab { vm, lan, wan, box_lan_mac: test_mac(3, 0), box_wan_mac: test_mac(3, 1), peer }
    }

    /// Handles the WAN side for a while: answers ARP for the peer, runs
    /// WireGuard messages through boringtun (sending its replies), and
    /// returns the inner packets that came out of the tunnel.
    fn peer_service(&mut self, timeout: Duration) -> Vec<Vec<u8>> {
        let mut inner = Vec::new();
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(f) = self.wan.recv(left.min(Duration::from_millis(200))) else {
                self.peer_timers();
                if !inner.is_empty() {
                    break;
                }
                continue;
            };
            if let Some(r) = net::answer_arp(&f, PEER, PEER_MAC) {
                self.wan.send(&r);
                continue;
            }
            let Some((src, dst, payload)) = net::parse_udp(&f) else { continue };
            if dst != (PEER, WG_PORT) {
                continue;
            }
            let mut out = vec![0u8; 2048];
            let mut datagram = payload;
            loop {
                match self.peer.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(src.0))), &datagram, &mut out) {
                    TunnResult::WriteToNetwork(d) => {
                        let frame = net::udp_frame(PEER_MAC, self.box_wan_mac, (PEER, WG_PORT), src, d);
                        self.wan.send(&frame);
                        datagram.clear(); // flush anything boringtun queued
                    }
                    TunnResult::WriteToTunnelV4(p, _) => {
                        inner.push(p.to_vec());
                        break;
                    }
                    _ => break,
                }
            }
        }
        inner
    }

    fn peer_timers(&mut self) {
        let mut out = vec![0u8; 2048];
        if let TunnResult::WriteToNetwork(d) = self.peer.update_timers(&mut out) {
            let frame = net::udp_frame(PEER_MAC, self.box_wan_mac, (PEER, WG_PORT), (BOX_WAN, WG_PORT), d);
            self.wan.send(&frame);
        }
    }

    /// Sends an inner packet from the peer's side through the tunnel.
    fn peer_send(&mut self, packet: &[u8]) {
        let mut out = vec![0u8; 2048];
        match self.peer.encapsulate(packet, &mut out) {
            TunnResult::WriteToNetwork(d) => {
                let frame = net::udp_frame(PEER_MAC, self.box_wan_mac, (PEER, WG_PORT), (BOX_WAN, WG_PORT), d);
                self.wan.send(&frame);
            }
            other => panic!("peer could not encapsulate: {:?}", std::mem::discriminant(&other)),
        }
    }

    /// Sends an IPv4 packet from the LAN host to the box's LAN MAC.
    fn host_send(&self, packet: &[u8]) {
        self.lan.send(&net::ethernet(HOST_MAC, self.box_lan_mac, packet));
    }

    /// Frames for the LAN host: answers the box's ARP for the host, returns
    /// the first IPv4 packet `pick` accepts.
    fn host_receive<T>(&self, timeout: Duration, mut pick: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
        self.lan.wait_for(timeout, |f| {
            if let Some(r) = net::answer_arp(f, HOST, HOST_MAC) {
                self.lan.send(&r);
                return None;
            }
            if f.get(..6) != Some(&HOST_MAC[..]) {
                return None;
            }
            net::ip_payload(f).and_then(&mut pick)
        })
    }

    /// Sends from the LAN host until the peer sees a packet `pick` accepts
    /// (the first send starts the WireGuard handshake, which drops it).
    fn host_to_peer<T>(&mut self, packet: &[u8], mut pick: impl FnMut(&[u8]) -> Option<T>) -> T {
        for _ in 0..6 {
            self.host_send(packet);
            for p in self.peer_service(Duration::from_secs(2)) {
                if let Some(t) = pick(&p) {
                    return t;
                }
            }
        }
        panic!("the packet never came out of the tunnel; console:\n{}", self.vm.console());
    }

    fn status(&mut self) -> String {
        use std::io::Write;
        let before = self.vm.console().len();
        self.vm.serial().write_all(b"status\r").expect("console write");
        check(self.vm.wait_for_after(before, "end of status", STEP));
        self.vm.console()[before..].to_string()
    }
}

fn drops_total(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("drops total: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("status prints no drop total:\n{status}"))
}

/// Compares a forwarded IPv4 packet with the one sent: TTL one lower, and
/// apart from the header checksum and the ranges in `allowed` every byte
/// identical.
fn same_but(sent: &[u8], got: &[u8], allowed: &[std::ops::Range<usize>]) {
    assert_eq!(sent.len(), got.len(), "length changed");
    assert_eq!(got[8], sent[8] - 1, "TTL not decremented by one");
    for i in 0..sent.len() {
        let exempt = i == 8 || i == 10 || i == 11 || allowed.iter().any(|r| r.contains(&i));
        if !exempt {
            assert_eq!(sent[i], got[i], "byte {i} changed ({:#04x} -> {:#04x})", sent[i], got[i]);
        }
    }
}

fn scenarios(kind: MachineType, model: NicModel) {
    let mut lab = Lab::start(kind, model);

    // 1. Proxy-ARP: the claimed remote /32 is answered with lan0's MAC; an
    //    unclaimed address is not.
    lab.lan.send(&net::arp_request(HOST_MAC, HOST, CLAIMED));
    let reply = lab
        .lan
        .wait_for(STEP, |f| net::parse_arp(f).filter(|a| a.0 == ArpOperation::REPLY && a.3 == HOST && a.2 == CLAIMED))
        .unwrap_or_else(|| panic!("no proxy-ARP reply; console:\n{}", lab.vm.console()));
    assert_eq!(reply.1, lab.box_lan_mac, "proxy-ARP reply must carry lan0's MAC");
    lab.lan.send(&net::arp_request(HOST_MAC, HOST, UNCLAIMED));
    let stray = lab.lan.wait_for(Duration::from_secs(1), |f| net::parse_arp(f).filter(|a| a.0 == ArpOperation::REPLY && a.2 == UNCLAIMED));
    assert!(stray.is_none(), "the box answered ARP for an unclaimed address");

    // 1b. The box answers ping on its LAN address (its services layer);
    //     the host asks for the box's MAC first, so the box knows the host.
    lab.lan.send(&net::arp_request(HOST_MAC, HOST, [10, 20, 0, 2]));
    lab.lan
        .wait_for(STEP, |f| net::parse_arp(f).filter(|a| a.0 == ArpOperation::REPLY && a.2 == [10, 20, 0, 2]))
        .unwrap_or_else(|| panic!("no ARP reply for the box's own address; console:\n{}", lab.vm.console()));
    let ping_box = net::icmp_echo_packet(HOST, [10, 20, 0, 2], 7, 56, false);
    lab.lan.send(&net::ethernet(HOST_MAC, lab.box_lan_mac, &ping_box));
    let pong = lab
        .lan
        .wait_for(STEP, |f| net::ip_payload(f).and_then(net::icmp).filter(|i| i.0 == 0 && i.3 == [10, 20, 0, 2]))
        .unwrap_or_else(|| panic!("the box did not answer ping; console:\n{}", lab.vm.console()));
    assert_eq!(pong.4, HOST);

    // 2. A SYN (MSS 1460) to the claimed address: the box handshakes with
    //    the peer, the peer decrypts the SYN, MSS clamped to 1420 - 40.
    let syn = net::tcp_syn_packet(HOST, CLAIMED, false, 1460);
    let got = lab.host_to_peer(&syn, |p| net::tcp_syn_mss(p).map(|_| p.to_vec()));
    assert_eq!(net::tcp_syn_mss(&got), Some((false, 1380)), "SYN MSS not clamped to 1380");
    assert!(net::checksums_valid(&got), "checksums wrong after clamping");
    // MSS value (option at 40..44: kind, len, value) and TCP checksum (36..38) may change.
    same_but(&syn, &got, &[22..24, 36..38, 42..44]);

    // 3. The SYN-ACK comes back through the tunnel: the host receives it
    //    clamped, after the box resolved the host's MAC.
    let synack = net::tcp_syn_packet(CLAIMED, HOST, true, 1460);
    lab.peer_send(&synack);
    let back = lab
        .host_receive(STEP, |p| net::tcp_syn_mss(p).map(|_| p.to_vec()))
        .unwrap_or_else(|| panic!("SYN-ACK not delivered on the LAN; console:\n{}", lab.vm.console()));
    assert_eq!(net::tcp_syn_mss(&back), Some((true, 1380)), "SYN-ACK MSS not clamped");
    assert!(net::checksums_valid(&back));

    // 4a. ICMP echo from the LAN host to the claimed address and the reply.
    let ping = net::icmp_echo_packet(HOST, CLAIMED, 1, 56, false);
    let seen = lab.host_to_peer(&ping, |p| net::icmp(p).filter(|i| i.0 == 8).map(|_| p.to_vec()));
    same_but(&ping, &seen, &[]);
    let mut pong = net::icmp_echo_packet(CLAIMED, HOST, 1, 56, false);
    pong[20] = 0; // echo reply
    let sum = etherparse::Icmpv4Header::from_slice(&pong[20..]).unwrap().0.icmp_type.calc_checksum(&pong[28..]);
    pong[22..24].copy_from_slice(&sum.to_be_bytes());
    lab.peer_send(&pong);
    lab.host_receive(STEP, |p| net::icmp(p).filter(|i| i.0 == 0 && i.3 == CLAIMED))
        .unwrap_or_else(|| panic!("echo reply not delivered; console:\n{}", lab.vm.console()));

    // 4b. ICMP echo from the far side to the LAN host, answered by the host.
    let ping_in = net::icmp_echo_packet(CLAIMED, HOST, 2, 100, false);
    lab.peer_send(&ping_in);
    lab.host_receive(STEP, |p| net::icmp(p).filter(|i| i.0 == 8 && i.3 == CLAIMED))
        .unwrap_or_else(|| panic!("echo from the peer not delivered; console:\n{}", lab.vm.console()));
    let mut reply = net::icmp_echo_packet(HOST, CLAIMED, 2, 100, false);
    reply[20] = 0;
    let sum = etherparse::Icmpv4Header::from_slice(&reply[20..]).unwrap().0.icmp_type.calc_checksum(&reply[28..]);
    reply[22..24].copy_from_slice(&sum.to_be_bytes());
    lab.host_to_peer(&reply, |p| net::icmp(p).filter(|i| i.0 == 0).map(|_| ()));

    // 4c. A DF packet too big for the tunnel: fragmentation needed, next-hop MTU 1420.
    let big = net::icmp_echo_packet(HOST, CLAIMED, 3, 1472, true);
    assert_eq!(big.len(), 1500);
    lab.host_send(&big);
    let (code, mtu) = lab
        .host_receive(STEP, |p| net::icmp(p).filter(|i| i.0 == 3).map(|i| (i.1, u16::from_be_bytes([i.2[2], i.2[3]]))))
        .unwrap_or_else(|| panic!("no ICMP fragmentation-needed; console:\n{}", lab.vm.console()));
    assert_eq!((code, mtu), (4, 1420), "fragmentation needed with next-hop MTU 1420");

    // 5. Garbage on both NICs: random frames, truncated headers, bogus
    //    WireGuard messages. The box survives, still forwards, and counts.
    let drops_before = drops_total(&lab.status());
    let mut rng = OsRng;
    let mut junk = vec![0u8; 1600];
    for i in 0..3000usize {
        let len = 1 + (rng.next_u32() as usize % 1514);
        rng.fill_bytes(&mut junk[..len]);
        let frame = match i % 5 {
            // Random bytes addressed to the box.
            0 => {
                junk[..6].copy_from_slice(&lab.box_lan_mac);
                junk[..len.max(14)].to_vec()
            }
            // A valid Ethernet/IPv4 header cut short.
            1 => net::ethernet(HOST_MAC, lab.box_lan_mac, &syn)[..14 + (i % 30)].to_vec(),
            // Bogus WireGuard messages of every type from the peer's address.
            2 => {
                junk[0] = 1 + (i % 4) as u8;
                net::udp_frame(PEER_MAC, lab.box_wan_mac, (PEER, WG_PORT), (BOX_WAN, WG_PORT), &junk[..len.min(200)])
            }
            3 => {
                junk[..6].copy_from_slice(&lab.box_wan_mac);
                junk[..len.max(14)].to_vec()
            }
            _ => net::udp_frame(
                PEER_MAC,
                lab.box_wan_mac,
                ([203, 0, 113, 9], 9999),
                (BOX_WAN, WG_PORT + (i % 3) as u16),
                &junk[..len.min(300)],
            ),
        };
        if i % 2 == 0 {
            lab.lan.send(&frame)
        } else {
            lab.wan.send(&frame)
        }
        if i % 100 == 0 {
            // Keep the sockets drained so QEMU never blocks on us.
            while lab.lan.recv(Duration::from_millis(1)).is_some() {}
            while lab.wan.recv(Duration::from_millis(1)).is_some() {}
        }
    }
    let after = lab.status();
    let drops_after = drops_total(&after);
    assert!(drops_after > drops_before + 1000, "drop counters did not move: {drops_before} -> {drops_after}\n{after}");
    let ping = net::icmp_echo_packet(HOST, CLAIMED, 9, 56, false);
    lab.host_to_peer(&ping, |p| net::icmp(p).filter(|i| i.0 == 8).map(|_| ()));
    assert!(!lab.vm.console().contains("PANIC"), "the box panicked:\n{}", lab.vm.console());
    lab.vm.kill();
}

#[test]
fn pc_virtio_net_forwards() {
    scenarios(MachineType::Pc, NicModel::VirtioNet);
}

#[test]
fn q35_virtio_net_forwards() {
    scenarios(MachineType::Q35, NicModel::VirtioNet);
}

#[test]
fn pc_e1000e_forwards() {
    scenarios(MachineType::Pc, NicModel::E1000e);
}

#[test]
fn q35_e1000e_forwards() {
    scenarios(MachineType::Q35, NicModel::E1000e);
}

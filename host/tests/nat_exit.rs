//! SNAT exit on the real image: a VM behind the box reaches an internet host
//! through the box's WAN, with the zone firewall on.
//!
//! ```text
//!  netns V (the VM)          QEMU (root ns)          netns R (router)              netns I (internet)
//!  TAP 10.20.0.10/24 ─ lan0 10.20.0.2   the image   wan0 192.0.2.2 ─ TAP 192.0.2.1/24   veth 198.51.100.1 ─ veth 198.51.100.2
//!  default via .2            [[nat]] 10.20.0.0/24 → wan0                 ip_forward = 1                default via .1
//!                            [firewall] lan0 → wan accept, default drop
//! ```
//!
//! The internet host sees the WAN address; ping, a DNS-like UDP exchange
//! (source port kept) and a 4 MiB TCP transfer work; a traceroute-style
//! TTL-expired error from R (beyond the WAN) reaches the VM translated; the
//! WAN answers nothing else (the internet host's ping to it fails); status
//! counts the flows and `routerctl conntrack list` shows them. Needs root
//! and QEMU.

mod common;

use common::{prerequisites, run, skip_or_fail, wait_for, Lab};
use routerd_e2e::qemu::{self, NetBackend, Nic, NicModel};
use serde_json::Value;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);
const CONFIG: &str = r#"[device]
name = "nat-edge"
side = "roz"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"

[[ports]]
name = "wan0"
role = "wan"
address = "192.0.2.2/24"
gateway = "192.0.2.1"

[[nat]]
source = "10.20.0.0/24"
out = "wan0"

[firewall]
default = "drop"

[[firewall.policy]]
from = "lan0"
to = "wan"
action = "accept"
"#;

fn say(t0: Instant, text: impl AsRef<str>) {
    println!("[{:>6.1} s] {}", t0.elapsed().as_secs_f64(), text.as_ref());
}

fn counter(st: &Value, name: &str) -> u64 {
    st["counters"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == name)).and_then(|c| c["value"].as_u64()).unwrap_or(0)
}

#[test]
fn a_vm_behind_the_image_reaches_the_internet_through_snat() {
    let qemu_bin = qemu::qemu_binary();
    let bins = ["ip", "ping", qemu_bin.to_str().unwrap_or("qemu-system-x86_64")];
    if let Some(reason) = prerequisites(&bins, "apt-get install --no-install-recommends iproute2 iputils-ping qemu-system-x86") {
        return skip_or_fail("SNAT exit test", &reason);
    }
    let t0 = Instant::now();
    let pid = std::process::id();
    let (ns_vm, ns_r, ns_i) = (format!("rnv{pid}"), format!("rnr{pid}"), format!("rni{pid}"));
    let (tap_lan, tap_wan) = (format!("rnt{pid}l"), format!("rnt{pid}w"));
    let mut lab = Lab::new(std::env::temp_dir().join(format!("routerd-nat-{pid}")));
    for ns in [&ns_vm, &ns_r, &ns_i] {
        lab.netns(ns);
        common::sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1");
        common::sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1");
    }
    common::sysctl(&ns_r, "net.ipv4.ip_forward", "1");
    common::veth(&ns_r, "rtr0", "198.51.100.1/24", &ns_i, "net0", "198.51.100.2/24");
    run(&["ip", "-n", &ns_i, "route", "add", "default", "via", "198.51.100.1"]).unwrap();

    let mut m = qemu::Machine::new(routerd_e2e::image()).expect("run dir");
    for (n, ifname) in [&tap_lan, &tap_wan].into_iter().enumerate() {
        m.nics.push(Nic {
            model: NicModel::VirtioNet,
            mac: routerd_e2e::test_mac(41, n as u8),
            backend: NetBackend::Tap { ifname: ifname.clone() },
        });
    }
    let mut vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    for tap in [&tap_lan, &tap_wan] {
        wait_for(&format!("QEMU's TAP {tap}"), Duration::from_secs(20), || run(&["ip", "link", "show", tap]).is_ok());
    }
    run(&["ip", "link", "set", &tap_lan, "netns", &ns_vm]).unwrap();
    run(&["ip", "-n", &ns_vm, "addr", "add", "10.20.0.10/24", "dev", &tap_lan]).unwrap();
    run(&["ip", "-n", &ns_vm, "link", "set", &tap_lan, "up"]).unwrap();
    run(&["ip", "-n", &ns_vm, "route", "add", "default", "via", "10.20.0.2"]).unwrap();
    run(&["ip", "link", "set", &tap_wan, "netns", &ns_r]).unwrap();
    run(&["ip", "-n", &ns_r, "addr", "add", "192.0.2.1/24", "dev", &tap_wan]).unwrap();
    run(&["ip", "-n", &ns_r, "link", "set", &tap_wan, "up"]).unwrap();

    vm.wait_for("not forwarding: no configuration yet", BOOT).unwrap_or_else(|e| panic!("{e}"));
    say(t0, "image booted");
    vm.release_serial();
    let port = format!("unix:{}", vm.serial_path().display());
    let file = lab.dir.join("nat.toml");
    std::fs::write(&file, CONFIG).unwrap();
    let out = common::ctl(&port, &["apply", file.to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, Some(0), "apply: {}", out.stderr);

    // Ping through the NAT.
    let got = common::ping(&ns_vm, "198.51.100.2", 5, 56);
    assert!(got >= 3, "ping from the VM to the internet host: {got} of 5 replies");
    say(t0, "ping through SNAT works");

    // A DNS-like exchange: the internet host sees the WAN address and the
    // VM's own source port.
    let server = common::in_netns(&ns_i, || {
        let s = UdpSocket::bind("198.51.100.2:5353").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf).expect("a query");
        let mut answer = b"answer:".to_vec();
        answer.extend_from_slice(&buf[..n]);
        s.send_to(&answer, from).unwrap();
        from
    });
    std::thread::sleep(Duration::from_millis(200));
    let client = common::in_netns(&ns_vm, || {
        let s = UdpSocket::bind("10.20.0.10:40000").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.send_to(b"query", "198.51.100.2:5353").unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf).expect("the answer");
        (buf[..n].to_vec(), from)
    });
    let seen = server.join().unwrap();
    let (answer, from) = client.join().unwrap();
    assert_eq!(seen, "192.0.2.2:40000".parse::<SocketAddr>().unwrap(), "the internet host sees the WAN address, port kept");
    assert_eq!(answer, b"answer:query");
    assert_eq!(from, "198.51.100.2:5353".parse::<SocketAddr>().unwrap());
    say(t0, format!("UDP: the internet host saw {seen}"));

    // 4 MiB over TCP, intact, from the WAN address.
    const TOTAL: u64 = 4 * 1024 * 1024;
    let receiver = common::in_netns(&ns_i, || {
        let l = TcpListener::bind("198.51.100.2:5001").unwrap();
        let (mut s, peer) = l.accept().expect("a connection");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (mut got, mut wrong) = (0u64, 0u64);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b != common::pattern(got) {
                    wrong += 1;
                }
                got += 1;
            }
        }
        (peer, got, wrong)
    });
    std::thread::sleep(Duration::from_millis(200));
    let sent = common::send_pattern(&ns_vm, "198.51.100.2:5001".parse().unwrap(), TOTAL).join().unwrap();
    let (peer, got, wrong) = receiver.join().unwrap();
    assert_eq!((got, wrong), (TOTAL, 0), "4 MiB intact");
    assert_eq!(peer.ip().to_string(), "192.0.2.2", "TCP from the WAN address");
    say(t0, format!("TCP: {} bytes in {:.2} s from {peer}", sent.bytes, sent.took.as_secs_f64()));

    // Traceroute-style: TTL 2 expires at R, beyond the WAN; its error comes
    // back to the VM translated (ping matches it by the echo identifier).
    let out =
        Command::new("ip").args(["netns", "exec", &ns_vm, "ping", "-n", "-c", "1", "-t", "2", "-W", "3", "198.51.100.2"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}");
    assert!(text.contains("From 192.0.2.1") && text.contains("Time to live exceeded"), "the TTL-expired error reached the VM: {text}");
    say(t0, "TTL-expired from beyond the WAN reached the VM");

    // The WAN answers nothing else.
    assert_eq!(common::ping(&ns_i, "192.0.2.2", 2, 56), 0, "the WAN address does not answer ping");

    let st = common::ctl(&port, &["status", "--json"]).json()["status"].clone();
    assert!(counter(&st, "nat_flows") >= 4, "{}", st["counters"]);
    assert_eq!(counter(&st, "nat_ports_rewritten"), 0, "{}", st["counters"]);
    assert!(counter(&st, "conntrack_flows") >= 1, "{}", st["counters"]);
    assert!(counter(&st, "fw_default") >= 1, "the internet's ping counted on the default: {}", st["counters"]);
    // The flows, as `routerctl conntrack list` shows them.
    let list = common::ctl(&port, &["conntrack", "list", "--json", "--proto", "udp", "--address", "10.20.0.10"]).json();
    let listed = list["listed"].as_array().cloned().unwrap_or_default();
    let dns = listed.iter().find(|f| f["dport"] == 5353).unwrap_or_else(|| panic!("the UDP flow is listed: {list}"));
    assert_eq!(dns["src"], "10.20.0.10");
    assert_eq!(dns["sport"], 40000);
    assert_eq!(dns["nat"]["address"], "192.0.2.2");
    assert_eq!(dns["nat"]["port"], 40000);
    assert_eq!(dns["state"], "replied");
    say(t0, "done");
}

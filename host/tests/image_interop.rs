//! Seed 000 with both kinds of box: the real image in QEMU is the onprem
//! box, routerd-host is the cloud box, and real Linux hosts sit on both
//! LANs, all in network namespaces this test creates (and removes again,
//! also on panic: Drop guards).
//!
//! ```text
//!  netns OL (onprem host)     QEMU (root ns)              netns U (underlay)        netns CR (cloud box)         netns CL (cloud host)
//!  TAP 10.20.0.10/24 ◀─fd─▶  lan0  image  wan0 ◀─fd─▶   TAP 192.0.2.1/24
//!                            (virtio-net)                veth 198.51.100.1 ──────  veth 198.51.100.2
//!                                                                                  routerd-host :51820  lan0 ◀─fd─▶  TAP 10.20.0.50/24
//! ```
//!
//! QEMU opens its TAPs in the root namespace and routerd-host opens its TAP
//! in CR; the test moves each kernel side into the namespace of the host or
//! router behind it (the fds keep working). Both boxes get the same claim
//! list: 10.20.0.50 lives in the cloud (the image captures it with proxy-ARP
//! on lan0), 10.20.0.10 lives on-prem (routerd-host captures it with
//! proxy-ARP on lan0). The image makes its key at boot and prints it; the
//! test writes routerd-host's configuration with it. The image dials the
//! cloud box (endpoint and keepalive); the cloud box has no endpoint for it.
//!
//! Checked: ping both ways through the tunnel, a TCP transfer each way with
//! every byte verified, and the MSS both receivers saw clamped to at most
//! tunnel MTU 1420 − 40, then `routerctl doctor hybrid --json` against both
//! boxes (the image over its QEMU serial socket, routerd-host over its
//! `--control` socket) with every `peer.*` and `claim.*` check passing;
//! the other checks are printed. Throughput is printed, not asserted. Needs root,
//! /dev/net/tun, `ip`, `ping`, `qemu-system-x86_64`; without them the test
//! prints "skipped: …" and passes, unless `CI` is set, where it fails.
//! Every wait is bounded; a failure prints the image console and
//! routerd-host's log.

mod common;

use base64::Engine;
use common::{
    doctor, not_passed, ping, prerequisites, receive_pattern, run, send_pattern, skip_or_fail, start_routerd_host, wait_for, HostRun, Lab,
};
use routerd_e2e::qemu::{self, NetBackend, Nic, NicModel, Vm};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);
/// Bytes per TCP transfer (each way).
const TRANSFER: u64 = 8 << 20;
/// Tunnel MTU 1420 − 40 bytes of IPv4 and TCP headers.
const CLAMPED_MSS: u32 = 1380;
const ONPREM_HOST: &str = "10.20.0.10";
const CLOUD_HOST: &str = "10.20.0.50";

/// The shared claim list: both boxes get it unchanged, and each captures
/// the address the other side owns.
const CLAIMS: &str = r#"
[[claims]]
address = "10.20.0.50/32"      # the cloud LAN host
owner = "cloud"
mss_clamp = "auto"
capture = { method = "proxy-arp", port = "lan0" }
delivery = { tunnel = "wg0", peer = "cloud" }

[[claims]]
address = "10.20.0.10/32"      # the on-prem LAN host
owner = "onprem"
mss_clamp = "auto"
capture = { method = "proxy-arp", port = "lan0" }
delivery = { tunnel = "wg0", peer = "onprem" }
"#;

fn onprem_config(cloud_key: &str) -> String {
    format!(
        r#"[device]
name = "interop-onprem"
side = "onprem"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"

[[ports]]
name = "wan0"
role = "wan"
address = "192.0.2.2/24"
gateway = "192.0.2.1"

[[wireguard]]
name = "wg0"
listen_port = 51820
mtu = 1420
private_key = "device:wg0"

[[peers]]
name = "cloud"
tunnel = "wg0"
public_key = "{cloud_key}"
endpoint = "198.51.100.2:51820"
persistent_keepalive = 25
allowed_ips = ["10.20.0.50/32"]
{CLAIMS}"#
    )
}

fn cloud_config(onprem_key: &str) -> String {
    format!(
        r#"[device]
name = "interop-cloud"
side = "cloud"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.4/24"

[[ports]]
name = "wan0"
role = "wan"
address = "198.51.100.2/24"
gateway = "198.51.100.1"

[[wireguard]]
name = "wg0"
listen_port = 51820
mtu = 1420
private_key = "device:wg0"

# The onprem box dials in: no endpoint here.
[[peers]]
name = "onprem"
tunnel = "wg0"
public_key = "{onprem_key}"
allowed_ips = ["10.20.0.10/32"]
{CLAIMS}"#
    )
}

/// `routerd.config=<base64 postcard>` for the image's command line.
fn config_option(toml: &str) -> String {
    let cfg = config_schema::human::from_toml(toml).unwrap_or_else(|e| panic!("the onprem config parses: {e}"));
    let report = config_schema::validate(&cfg);
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(report.is_valid(), "the onprem config is invalid: {problems:?}");
    let mut wire = vec![0u8; config_schema::CONFIG_WIRE_MAX];
    let bytes = config_schema::encode(&cfg, &mut wire).expect("the onprem config encodes");
    format!("routerd.config={}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The running image and routerd-host. When the test fails, dropping this
/// asks both for their counters and prints console and log, then stops
/// QEMU (its TAPs go with it).
struct Boxes {
    vm: Vm,
    host: Option<HostRun>,
}

impl Drop for Boxes {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let before = self.vm.console().len();
        let mut serial = self.vm.serial();
        if serial.write_all(b"status\r").is_ok() {
            let _ = self.vm.wait_for_after(before, "end of status", Duration::from_secs(5));
        }
        eprintln!("----- image console -----\n{}", self.vm.console());
        if let Some(h) = &self.host {
            h.dump_status();
            eprintln!("----- routerd-host log -----\n{}", h.log());
        }
    }
}

/// Waits until `ns` answers pings to `target` (the first packets start the
/// handshake or wait for ARP), then requires every one of `count`.
fn ping_through(ns: &str, target: &str, count: u32, size: u32) {
    wait_for(&format!("a first reply from {target} in {ns}"), Duration::from_secs(30), || ping(ns, target, 1, size) == 1);
    let replies = ping(ns, target, count, size);
    assert_eq!(replies, count, "{ns} → {target}: {replies}/{count} replies after the warm-up");
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64().max(1e-9)
}

#[test]
fn image_onprem_and_routerd_host_cloud_carry_seed_000() {
    let qemu_bin = qemu::qemu_binary();
    let bins = ["ip", "ping", qemu_bin.to_str().unwrap_or("qemu-system-x86_64")];
    if let Some(reason) = prerequisites(&bins, "apt-get install --no-install-recommends iproute2 iputils-ping qemu-system-x86") {
        return skip_or_fail("routerd-host image interop test", &reason);
    }
    let t_start = Instant::now();
    let pid = std::process::id();
    // Interface names are at most 15 bytes; a pid has at most 7 digits.
    let (ns_ol, ns_u, ns_cr, ns_cl) = (format!("rdi{pid}ol"), format!("rdi{pid}u"), format!("rdi{pid}cr"), format!("rdi{pid}cl"));
    let (tap_lan, tap_wan) = (format!("rdio{pid}l"), format!("rdio{pid}w"));
    let (veth_u, veth_c) = (format!("rdiv{pid}u"), format!("rdiv{pid}c"));
    let tap_prefix = format!("rdic{pid}");
    let tap_cloud = format!("{tap_prefix}lan0");

    let mut lab = Lab::new(std::env::temp_dir().join(format!("routerd-host-interop-{pid}")));
    for ns in [&ns_ol, &ns_u, &ns_cr, &ns_cl] {
        lab.netns(ns);
    }
    // The underlay: U routes between the image's WAN subnet and the cloud box's.
    run(&["ip", "-n", &ns_u, "link", "add", &veth_u, "type", "veth", "peer", "name", &veth_c, "netns", &ns_cr]).unwrap();
    run(&["ip", "-n", &ns_u, "addr", "add", "198.51.100.1/24", "dev", &veth_u]).unwrap();
    run(&["ip", "-n", &ns_u, "link", "set", &veth_u, "up"]).unwrap();
    run(&["ip", "netns", "exec", &ns_u, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]).unwrap();
    run(&["ip", "-n", &ns_cr, "addr", "add", "198.51.100.2/24", "dev", &veth_c]).unwrap();
    run(&["ip", "-n", &ns_cr, "link", "set", &veth_c, "up"]).unwrap();
    run(&["ip", "-n", &ns_cr, "route", "add", "default", "via", "198.51.100.1"]).unwrap();

    // routerd-host's key first, so the image's configuration can name it.
    let bin = env!("CARGO_BIN_EXE_routerd-host");
    let key_file = lab.dir.join("cloud.key");
    let cloud_key = run(&[bin, "pubkey", "--key-file", key_file.to_str().unwrap()]).unwrap().trim().to_string();

    // The image, its NICs on TAPs QEMU creates in the root namespace.
    let mut m = qemu::Machine::new(routerd_e2e::image()).expect("run dir");
    m.cmdline = config_option(&onprem_config(&cloud_key));
    for (n, ifname) in [&tap_lan, &tap_wan].into_iter().enumerate() {
        let mac = routerd_e2e::test_mac(7, n as u8);
        m.nics.push(Nic { model: NicModel::VirtioNet, mac, backend: NetBackend::Tap { ifname: ifname.clone() } });
    }
    let vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    let mut boxes = Boxes { vm, host: None };
    // QEMU opens the TAPs once its console is connected, i.e. about now.
    for (tap, ns, addr) in [(&tap_lan, &ns_ol, "10.20.0.10/24"), (&tap_wan, &ns_u, "192.0.2.1/24")] {
        wait_for(&format!("QEMU's TAP {tap}"), Duration::from_secs(20), || run(&["ip", "link", "show", tap]).is_ok());
        run(&["ip", "link", "set", tap, "netns", ns]).unwrap();
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", tap]).unwrap();
        run(&["ip", "-n", ns, "link", "set", tap, "up"]).unwrap();
    }
    boxes.vm.wait_for("; forwarding", BOOT).unwrap_or_else(|e| panic!("{e}"));
    let console = boxes.vm.console();
    let onprem_key = console
        .lines()
        .filter(|l| l.contains("(generated on this boot)"))
        .find_map(|l| l.split(" public key ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the image prints the public key it generated")
        .to_string();
    println!("image booted in {:.1} s, public key {onprem_key}", t_start.elapsed().as_secs_f64());

    // routerd-host in CR; its LAN TAP's kernel side becomes CL's NIC.
    let cfg_file = lab.dir.join("cloud.toml");
    std::fs::write(&cfg_file, cloud_config(&onprem_key)).unwrap();
    // The control socket, for doctor at the end.
    let sock = lab.dir.join("cloud.sock");
    let (cfg_s, key_s, sock_s) = (cfg_file.to_str().unwrap(), key_file.to_str().unwrap(), sock.to_str().unwrap());
    let args = ["--config", cfg_s, "--key-file", key_s, "--tap-prefix", &tap_prefix, "--control", sock_s];
    let host = boxes.host.insert(start_routerd_host(&mut lab, &ns_cr, "cloud", &args));
    assert_eq!(host.printed_key(), cloud_key, "routerd-host uses the key file's key");
    run(&["ip", "-n", &ns_cr, "link", "set", &tap_cloud, "netns", &ns_cl]).unwrap();
    run(&["ip", "-n", &ns_cl, "addr", "add", "10.20.0.50/24", "dev", &tap_cloud]).unwrap();
    run(&["ip", "-n", &ns_cl, "link", "set", &tap_cloud, "up"]).unwrap();

    // 1. Ping both ways, then near the tunnel MTU (1392 + 8 + 20 = 1420).
    let t_ping = Instant::now();
    ping_through(&ns_ol, CLOUD_HOST, 5, 56);
    ping_through(&ns_cl, ONPREM_HOST, 5, 56);
    ping_through(&ns_ol, CLOUD_HOST, 3, 1392);
    println!("pings done in {:.1} s", t_ping.elapsed().as_secs_f64());

    // 2./3. TCP each way, every byte checked; both ends report the MSS the
    // other's SYN or SYN-ACK carried. Without TCP timestamps no option is
    // on every segment, so TCP_MAXSEG is that MSS itself (else 12 less).
    for ns in [&ns_ol, &ns_cl] {
        run(&["ip", "netns", "exec", ns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/tcp_timestamps"]).unwrap();
    }
    let mut rows = Vec::new();
    let ways = [("onprem → cloud", &ns_ol, &ns_cl, CLOUD_HOST, 5201), ("cloud → onprem", &ns_cl, &ns_ol, ONPREM_HOST, 5202)];
    for (way, from, to_ns, to, port) in ways {
        let addr: SocketAddr = format!("{to}:{port}").parse().unwrap();
        let server = receive_pattern(to_ns, addr);
        std::thread::sleep(Duration::from_millis(200));
        let client = send_pattern(from, addr, TRANSFER);
        let sent = client.join().expect("sender");
        let got = server.join().expect("receiver");
        assert_eq!(got.bytes, TRANSFER, "{way}: every byte arrives");
        assert_eq!(got.wrong, 0, "{way}: no byte changed");
        assert!(got.mss <= CLAMPED_MSS, "{way}: the SYN's MSS is clamped (receiver's TCP_MAXSEG {})", got.mss);
        assert!(sent.mss <= CLAMPED_MSS, "{way}: the SYN-ACK's MSS is clamped (sender's TCP_MAXSEG {})", sent.mss);
        rows.push((way, got.mss, sent.mss, got.took, mib_per_s(got.bytes, got.took)));
    }

    // 4. Informational: throughput under TCG, no assertion.
    println!("{:<16} {:>9} {:>12} {:>7} {:>7}", "TCP transfer", "SYN MSS*", "SYN-ACK MSS*", "time s", "MiB/s");
    for (way, syn, synack, took, rate) in &rows {
        println!("{way:<16} {syn:>9} {synack:>12} {:>7.2} {rate:>7.2}", took.as_secs_f64());
    }
    println!("* TCP_MAXSEG of the receiving / sending socket: the MSS the peer's SYN / SYN-ACK carried (clamp: at most {CLAMPED_MSS})");
    println!("{} MiB each way; whole test {:.1} s", TRANSFER >> 20, t_start.elapsed().as_secs_f64());
    assert!(!boxes.vm.console().contains("PANIC"), "the image panicked");

    // 5. doctor hybrid on both boxes: the image over its serial line (QEMU's
    // socket takes one client, so the harness lets go of it meanwhile),
    // routerd-host over its control socket.
    boxes.vm.release_serial();
    let image_doc = doctor(&format!("unix:{}", boxes.vm.serial_path().display()));
    boxes.vm.attach_serial(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let host_doc = doctor(&format!("unix:{}", sock.display()));
    for (name, doc) in [("image (onprem)", &image_doc), ("routerd-host (cloud)", &host_doc)] {
        println!("doctor on the {name}: {}; not passed: {:#?}", doc["result"], not_passed(doc, &[""]));
        let bad = not_passed(doc, &["peer.", "claim."]);
        assert!(bad.is_empty(), "doctor on the {name}: {bad:#?}");
        assert!(common::checks(doc).iter().any(|c| c["id"] == "peer.handshake"), "{doc:#}");
    }
}

//! `routerctl capture` against routerd-host over its control socket (issue
//! 20): a pcap of a ping through the tunnel that `tshark -r` opens.
//!
//! ```text
//!  netns L (LAN host)          netns R (routerd-host)                 netns P (peer)
//!  TAP 10.20.0.10/24  ◀─fd─▶  lan0 (TAP)  routerd-host  wan0 (UDP :51820)
//!                              --control ctl.sock     veth 10.78.X.1 ─── veth 10.78.X.2
//!                                                                 wireguard-go 10.20.0.50/32
//! ```
//!
//! While L pings 10.20.0.50 (the claim routerd-host captures by proxy-ARP on
//! lan0 and sends to the peer), `routerctl capture -w FILE --duration 5
//! --json` runs over the control socket. Checked: no rate cap on
//! routerd-host, nothing skipped, and `tshark -r FILE` shows the ICMP echo
//! requests and replies (lan0) and WireGuard transport data both ways on the
//! WAN port — the Ethernet/IPv4/UDP frames of the shim, between the WAN
//! address and the peer's endpoint. Then `--on wan0 --filter "udp port
//! 51820" --count 6 -w -` piped into `tshark -r -`: six WireGuard frames.
//!
//! Needs root, /dev/net/tun, `ip`, `ping`, `wg`, `wireguard-go` and
//! `tshark`; without them the test prints "skipped: …" and passes, unless
//! `CI` is set. Every wait is bounded; the Lab guard removes everything.

mod common;

use common::{ctl, ping, prerequisites, routerctl, run, skip_or_fail, start_routerd_host, wait_for, wg_keypair, wireguard_go, Lab, WgGo};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn config(peer_key: &str, peer_ep: &str, wan: &str) -> String {
    format!(
        r#"
[device]
name = "capture-host"
side = "onprem"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"

[[ports]]
name = "wan0"
role = "wan"
address = "{wan}/24"

[[wireguard]]
name = "wg0"
listen_port = 51820
private_key = "device:wg0"

[[peers]]
name = "cloud"
tunnel = "wg0"
public_key = "{peer_key}"
endpoint = "{peer_ep}"
persistent_keepalive = 25
allowed_ips = ["10.20.0.50/32"]

[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}
"#
    )
}

/// `tshark -r FILE -T fields -e …` with WireGuard decoded on its port.
fn tshark_fields(file: &Path, fields: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-r", file.to_str().unwrap(), "-d", "udp.port==51820,wg", "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(out.status.success(), "tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn a_capture_from_routerd_host_opens_in_tshark() {
    let install = "apt-get install --no-install-recommends iproute2 iputils-ping wireguard-tools wireguard-go tshark";
    if let Some(reason) = prerequisites(&["ip", "ping", "wg", "wireguard-go", "tshark"], install) {
        return skip_or_fail("routerd-host capture test", &reason);
    }
    // Built before anything is timed.
    let routerctl_bin = routerctl();
    let pid = std::process::id();
    let x = pid % 200 + 30;
    let (ns_r, ns_l, ns_p) = (format!("rdk{pid}r"), format!("rdk{pid}l"), format!("rdk{pid}p"));
    let (veth_r, veth_p, tap, wg_if) = (format!("rdkr{pid}"), format!("rdkp{pid}"), format!("rdkl{pid}"), format!("rdkg{pid}"));
    let (wan, peer_ul) = (format!("10.78.{x}.1"), format!("10.78.{x}.2"));
    let mut lab = Lab::new(std::env::temp_dir().join(format!("routerd-host-capture-{pid}")));
    for ns in [&ns_r, &ns_l, &ns_p] {
        lab.netns(ns);
    }
    common::veth(&ns_r, &veth_r, &format!("{wan}/24"), &ns_p, &veth_p, &format!("{peer_ul}/24"));
    let dir = lab.dir.clone();
    let (peer_key_file, peer_public) = wg_keypair(&dir, "peer.key");
    let key_file = dir.join("router.key");
    let router_public =
        run(&[env!("CARGO_BIN_EXE_routerd-host"), "pubkey", "--key-file", key_file.to_str().unwrap()]).unwrap().trim().to_string();
    let cfg = dir.join("router.toml");
    std::fs::write(&cfg, config(&peer_public, &format!("{peer_ul}:51820"), &wan)).unwrap();
    let sock = dir.join("ctl.sock");
    let port = format!("unix:{}", sock.display());
    let lan_map = format!("lan0={tap}");
    let host = start_routerd_host(
        &mut lab,
        &ns_r,
        "capture",
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
            "--control",
            sock.to_str().unwrap(),
            "--port",
            &lan_map,
        ],
    );
    run(&["ip", "-n", &ns_r, "link", "set", &tap, "netns", &ns_l]).unwrap();
    run(&["ip", "-n", &ns_l, "addr", "add", "10.20.0.10/24", "dev", &tap]).unwrap();
    run(&["ip", "-n", &ns_l, "link", "set", &tap, "up"]).unwrap();
    let endpoint = format!("{wan}:51820");
    wireguard_go(
        &mut lab,
        &WgGo {
            ns: &ns_p,
            ifname: &wg_if,
            key_file: &peer_key_file,
            listen_port: 51820,
            peer_public: &router_public,
            allowed_ips: "10.20.0.10/32",
            endpoint: Some(&endpoint),
            address: "10.20.0.50/32",
            routes: &["10.20.0.10/32"],
        },
    );
    wait_for("the first handshake", Duration::from_secs(20), || ping(&ns_l, "10.20.0.50", 1, 56) == 1);

    // 1. To a file, while L pings the peer's address through the tunnel.
    let pcap = dir.join("host.pcap");
    let pcap_s = pcap.to_str().unwrap().to_string();
    let err_file = dir.join("capture.stderr");
    let child = Command::new(&routerctl_bin)
        .args(["capture", "-w", &pcap_s, "--duration", "5", "--json", "--port", &port])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .expect("routerctl capture");
    // The capture is on once routerctl says so; pings go meanwhile.
    wait_for("routerctl capture to start", Duration::from_secs(10), || {
        std::fs::read_to_string(&err_file).unwrap_or_default().contains("capturing on")
    });
    let replies = ping(&ns_l, "10.20.0.50", 8, 56);
    let done = child.wait_with_output().expect("routerctl capture");
    let out = common::Ctl {
        code: done.status.code(),
        stdout: String::from_utf8_lossy(&done.stdout).to_string(),
        stderr: std::fs::read_to_string(&err_file).unwrap_or_default(),
    };
    println!("$ routerctl capture -w {pcap_s} --duration 5 --json --port {port}\n{}{}-> {:?}", out.stdout, out.stderr, out.code);
    if replies < 6 {
        host.dump_status();
    }
    assert!(replies >= 6, "{replies}/8 pings came back\n{}", host.log());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let doc = out.json();
    let frames = doc["frames"].as_u64().unwrap();
    assert!(frames >= 24, "8 pings are 32 frames on lan0 and wan0: {doc:#}");
    assert_eq!(doc["rate"], serde_json::Value::Null, "routerd-host has no rate cap: {doc:#}");
    assert_eq!((doc["skipped_rate"].as_u64(), doc["skipped_full"].as_u64()), (Some(0), Some(0)), "{doc:#}");
    assert_eq!(doc["ring_bytes"], 1 << 20);
    assert!(out.stderr.contains(&format!("captured {frames} frames (")), "{}", out.stderr);
    assert!(out.stderr.contains("on lan0,wan0; skipped 0 (rate cap none), 0 (ring full)"), "{}", out.stderr);

    let protocols = tshark_fields(&pcap, &["frame.protocols"]);
    println!("$ tshark -r host.pcap -d udp.port==51820,wg -T fields -e frame.protocols\n{}", protocols.join("\n"));
    assert_eq!(protocols.len() as u64, frames, "tshark reads every frame routerctl counted");
    let icmp = protocols.iter().find(|l| l.contains(":ip:icmp")).expect("ICMP in the capture");
    let wg = protocols.iter().find(|l| l.contains(":wg")).expect("WireGuard in the capture");
    println!("ICMP: {icmp}\nWireGuard: {wg}");
    let summary = Command::new("tshark").args(["-r", &pcap_s, "-d", "udp.port==51820,wg"]).output().unwrap();
    let summary = String::from_utf8_lossy(&summary.stdout);
    println!("$ tshark -r host.pcap -d udp.port==51820,wg | head -8\n{}", summary.lines().take(8).collect::<Vec<_>>().join("\n"));
    assert_eq!(icmp, "eth:ethertype:ip:icmp:data");
    assert_eq!(wg, "eth:ethertype:ip:udp:wg");
    let detail = tshark_fields(&pcap, &["ip.src", "ip.dst", "icmp.type", "wg.type"]);
    assert!(detail.iter().any(|l| l.starts_with("10.20.0.10\t10.20.0.50\t8\t")), "echo requests on lan0: {detail:#?}");
    assert!(detail.iter().any(|l| l.starts_with("10.20.0.50\t10.20.0.10\t0\t")), "echo replies on lan0: {detail:#?}");
    let to_peer = format!("{wan}\t{peer_ul}\t\t4");
    let from_peer = format!("{peer_ul}\t{wan}\t\t4");
    assert!(detail.iter().any(|l| l.starts_with(&to_peer)), "transport data to the peer: {detail:#?}");
    assert!(detail.iter().any(|l| l.starts_with(&from_peer)), "transport data from the peer: {detail:#?}");

    // 2. One port, a filter, to stdout into tshark.
    let mut tshark = Command::new("tshark")
        .args(["-r", "-", "-d", "udp.port==51820,wg", "-T", "fields", "-e", "frame.protocols", "-e", "ip.src"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark -r -");
    let pipe = tshark.stdin.take().unwrap();
    let mut rc = Command::new(&routerctl_bin)
        .args(["capture", "--on", "wan0", "--filter", "udp port 51820", "--count", "6", "-w", "-", "--port", &port])
        .stdout(Stdio::from(pipe))
        .stderr(Stdio::piped())
        .spawn()
        .expect("routerctl capture -w -");
    std::thread::sleep(Duration::from_millis(500));
    let _ = ping(&ns_l, "10.20.0.50", 4, 56);
    let status = common::wait_exit(&mut rc, Duration::from_secs(20)).unwrap_or_else(|| {
        let _ = rc.kill();
        panic!("routerctl capture --count 6 did not end");
    });
    let mut err = String::new();
    std::io::Read::read_to_string(rc.stderr.as_mut().unwrap(), &mut err).unwrap();
    println!("$ routerctl capture --on wan0 --filter \"udp port 51820\" --count 6 -w - | tshark -r -\n{err}-> {status}");
    assert!(status.success(), "{err}");
    let read = tshark.wait_with_output().unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&read.stdout).lines().map(str::to_string).collect();
    println!("{}", lines.join("\n"));
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("eth:ethertype:ip:udp:wg\t")), "{lines:?}");
    assert!(err.contains("captured 6 frames") && err.contains("on wan0;"), "{err}");

    // 3. An unknown port is refused with the ports named; the box is still fine.
    let bad = ctl(&port, &["capture", "--on", "lan7", "-w", dir.join("x.pcap").to_str().unwrap()]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("no port lan7 (its ports: lan0, wan0)"), "{}", bad.stderr);
    assert!(!dir.join("x.pcap").exists(), "no file for a refused capture");
    assert_eq!(ctl(&port, &["status"]).code, Some(0));
}

//! routerd-host between a real Linux LAN host and a `wireguard-go` peer, in
//! network namespaces this test creates (and always removes: a Drop guard).
//!
//! ```text
//!  netns L (LAN host)          netns R (routerd-host)                 netns P (peer)
//!  TAP 10.20.0.10/24  ◀─fd─▶  lan0 (TAP)  routerd-host  wan0 (UDP :51820)
//!                                          veth 10.77.X.1 ─────── veth 10.77.X.2
//!                                                                 wireguard-go 10.20.0.50/32
//! ```
//!
//! routerd-host creates the TAP in R; the test moves its kernel side into L
//! (the fd stays with routerd-host). The claims are seed 000's: 10.20.0.50
//! lives with the peer (captured by proxy-ARP on lan0), 10.20.0.10 lives on
//! the LAN (delivered locally), 10.20.0.51 is captured with
//! provider-secondary-ip and must never be held by Linux.
//!
//! Checked: ping both ways, an 8 MiB TCP transfer L → P with every byte
//! verified, and a captured address added by hand in R is removed again and
//! reported. Needs root, /dev/net/tun, `ip`, `ping`, `wg`, `wireguard-go`;
//! without them the test prints "skipped: …" and passes, unless `CI` is
//! set, where it fails. Every wait is bounded.

mod common;

use common::{ping, prerequisites, receive_pattern, run, send_pattern, skip_or_fail, wait_for, Lab};
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TRANSFER: u64 = 8 << 20;

fn config(peer_key: &str, peer_ep: &str, wan: &str) -> String {
    format!(
        r#"
[device]
name = "netns-onprem"
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
allowed_ips = ["10.20.0.50/32", "10.20.0.51/32"]

[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}

[[claims]]
address = "10.20.0.51/32"
owner = "cloud"
capture = {{ method = "provider-secondary-ip", port = "wan0", configure_os_address = false }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}

[[claims]]
address = "10.20.0.10/32"
owner = "onprem"
capture = {{ method = "provider-secondary-ip", port = "wan0" }}
delivery = {{ tunnel = "wg0", peer = "onprem" }}
"#
    )
}

/// The underlay between routerd-host and the peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Underlay {
    V4,
    /// IPv6 on the veth: the peer endpoint is `[fd77:…::2]:51820`, which the
    /// dataplane sees under a synthetic IPv4 address.
    V6,
}

#[test]
fn lan_host_to_wireguard_go_peer_through_routerd_host() {
    lab(0, Underlay::V4);
}

#[test]
fn the_same_over_an_ipv6_underlay() {
    lab(1, Underlay::V6);
}

fn lab(n: u32, underlay: Underlay) {
    let install = "apt-get install --no-install-recommends iproute2 iputils-ping wireguard-tools wireguard-go";
    if let Some(reason) = prerequisites(&["ip", "ping", "wg", "wireguard-go"], install) {
        return skip_or_fail("routerd-host netns test", &reason);
    }
    let pid = std::process::id();
    let x = (pid % 200 + 20 + n) % 250;
    let (ns_r, ns_l, ns_p) = (format!("rdh{pid}{n}r"), format!("rdh{pid}{n}l"), format!("rdh{pid}{n}p"));
    let (veth_r, veth_p) = (format!("rdhr{pid}{n}"), format!("rdhp{pid}{n}"));
    let tap = format!("rdhl{pid}{n}");
    // wg(8) finds wireguard-go through /var/run/wireguard/<name>.sock, which
    // namespaces do not separate: the name must be unique on the machine.
    let wg_if = format!("rdhg{pid}{n}");
    // The dataplane's WAN address is IPv4 in both cases (its own view).
    let wan = format!("10.77.{x}.1");
    let (router_ul, peer_ul, router_ep, peer_ep) = match underlay {
        Underlay::V4 => (wan.clone(), format!("10.77.{x}.2"), format!("{wan}:51820"), format!("10.77.{x}.2:51820")),
        Underlay::V6 => (format!("fd77:{x}::1"), format!("fd77:{x}::2"), format!("[fd77:{x}::1]:51820"), format!("[fd77:{x}::2]:51820")),
    };
    let plen = if underlay == Underlay::V4 { "24" } else { "64" };
    let dir = std::env::temp_dir().join(format!("routerd-host-netns-{pid}-{n}"));
    let mut lab = Lab::new(dir.clone());
    for ns in [&ns_r, &ns_l, &ns_p] {
        lab.netns(ns);
    }
    run(&["ip", "-n", &ns_r, "link", "add", &veth_r, "type", "veth", "peer", "name", &veth_p, "netns", &ns_p]).unwrap();
    // No duplicate address detection on the IPv6 veth: the address is usable at once.
    let nodad: &[&str] = if underlay == Underlay::V6 { &["nodad"] } else { &[] };
    run(&["ip", "-n", &ns_r, "addr", "add", &format!("{wan}/24"), "dev", &veth_r]).unwrap();
    if underlay == Underlay::V6 {
        run(&[&["ip", "-n", &ns_r, "addr", "add", &format!("{router_ul}/{plen}"), "dev", &veth_r][..], nodad].concat()).unwrap();
    }
    run(&["ip", "-n", &ns_r, "link", "set", &veth_r, "up"]).unwrap();
    run(&[&["ip", "-n", &ns_p, "addr", "add", &format!("{peer_ul}/{plen}"), "dev", &veth_p][..], nodad].concat()).unwrap();
    run(&["ip", "-n", &ns_p, "link", "set", &veth_p, "up"]).unwrap();

    // Keys: the peer's from wg(8), routerd-host's from its key file.
    let peer_secret = run(&["wg", "genkey"]).unwrap();
    let peer_key_file = dir.join("peer.key");
    std::fs::write(&peer_key_file, &peer_secret).unwrap();
    let peer_public = {
        let mut c = Command::new("wg").arg("pubkey").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        c.stdin.take().unwrap().write_all(peer_secret.as_bytes()).unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
    };
    let bin = env!("CARGO_BIN_EXE_routerd-host");
    let key_file = dir.join("router.key");
    let router_public = run(&[bin, "pubkey", "--key-file", key_file.to_str().unwrap()]).unwrap().trim().to_string();
    let cfg_file = dir.join("router.toml");
    std::fs::write(&cfg_file, config(&peer_public, &peer_ep, &wan)).unwrap();

    // routerd-host in R.
    let log_file = dir.join("router.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns_r, bin, "--config", cfg_file.to_str().unwrap(), "--key-file", key_file.to_str().unwrap()])
        .args(["--port", &format!("lan0={tap}"), "--check-every", "1"])
        .stdout(Stdio::null())
        .stderr(File::create(&log_file).unwrap())
        .spawn()
        .expect("start routerd-host");
    lab.children.push(child);
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    wait_for("routerd-host to create its TAP", Duration::from_secs(20), || {
        run(&["ip", "-n", &ns_r, "link", "show", &tap]).is_ok() && log().contains("running")
    });
    assert!(log().contains(&router_public), "the key file's public key is printed:\n{}", log());
    // The kernel side of the TAP becomes the LAN host's NIC.
    run(&["ip", "-n", &ns_r, "link", "set", &tap, "netns", &ns_l]).unwrap();
    run(&["ip", "-n", &ns_l, "addr", "add", "10.20.0.10/24", "dev", &tap]).unwrap();
    run(&["ip", "-n", &ns_l, "link", "set", &tap, "up"]).unwrap();

    // wireguard-go in P, as our child.
    let wg_go = Command::new("ip")
        .args(["netns", "exec", &ns_p, "wireguard-go", "-f", &wg_if])
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wireguard-go");
    lab.children.push(wg_go);
    wait_for("wireguard-go's interface", Duration::from_secs(10), || run(&["ip", "-n", &ns_p, "link", "show", &wg_if]).is_ok());
    run(&[
        "ip",
        "netns",
        "exec",
        &ns_p,
        "wg",
        "set",
        &wg_if,
        "listen-port",
        "51820",
        "private-key",
        peer_key_file.to_str().unwrap(),
        "peer",
        &router_public,
        "allowed-ips",
        "10.20.0.10/32",
        "endpoint",
        &router_ep,
    ])
    .unwrap();
    run(&["ip", "-n", &ns_p, "addr", "add", "10.20.0.50/32", "dev", &wg_if]).unwrap();
    run(&["ip", "-n", &ns_p, "link", "set", &wg_if, "mtu", "1420", "up"]).unwrap();
    run(&["ip", "-n", &ns_p, "route", "add", "10.20.0.10/32", "dev", &wg_if]).unwrap();

    if underlay == Underlay::V6 {
        // The veth's IPv6 link comes up a moment after its addresses (link-local
        // DAD, neighbour discovery): wait for the underlay itself first.
        wait_for("the IPv6 underlay", Duration::from_secs(10), || {
            run(&["ip", "netns", "exec", &ns_p, "ping", "-6", "-n", "-c", "1", "-W", "1", &router_ul]).is_ok()
        });
    }
    // routerd-host dialled its kept-alive peer at start, before wireguard-go
    // listened; it retries every 5 s (REKEY_TIMEOUT): wait for the tunnel.
    wait_for("the first handshake", Duration::from_secs(20), || ping(&ns_l, "10.20.0.50", 1, 56) == 1);
    // Ping both ways.
    let a = ping(&ns_l, "10.20.0.50", 5, 56);
    let b = ping(&ns_p, "10.20.0.10", 5, 56);
    // Near the tunnel MTU: 1392 + 8 + 20 = 1420.
    let c = ping(&ns_l, "10.20.0.50", 3, 1392);
    if a < 3 || b < 4 || c < 2 {
        // Ask for the counters before failing (SIGUSR1 prints status).
        // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the binary).
        unsafe { libc::kill(lab.children[0].id() as libc::pid_t, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(a >= 3, "LAN → peer: {a}/5 replies\n{}", log());
    assert!(b >= 4, "peer → LAN: {b}/5 replies\n{}", log());
    assert!(c >= 2, "large pings: {c}/3\n{}", log());

    // 8 MiB of TCP, L → P, every byte checked.
    let to: SocketAddr = "10.20.0.50:5201".parse().unwrap();
    let server = receive_pattern(&ns_p, to);
    std::thread::sleep(Duration::from_millis(200));
    let client = send_pattern(&ns_l, to, TRANSFER);
    let sent = client.join().expect("client");
    let received = server.join().expect("server");
    let (sent, took, got, bad) = (sent.bytes, sent.took, received.bytes, received.wrong);
    println!("TCP: {sent} bytes sent, {got} received in {took:?} ({bad} wrong)");
    assert_eq!(got, TRANSFER, "every byte arrives\n{}", log());
    assert_eq!(bad, 0, "no byte changed");

    // A captured provider-secondary-ip address put on a Linux interface by
    // hand is removed again and reported.
    run(&["ip", "-n", &ns_r, "addr", "add", "10.20.0.51/32", "dev", &veth_r]).unwrap();
    assert!(run(&["ip", "-n", &ns_r, "-4", "addr", "show", "dev", &veth_r]).unwrap().contains("10.20.0.51/32"));
    wait_for("routerd-host to remove 10.20.0.51", Duration::from_secs(15), || {
        !run(&["ip", "-n", &ns_r, "-4", "addr", "show", "dev", &veth_r]).unwrap_or_default().contains("10.20.0.51")
    });
    wait_for("the removal to be logged", Duration::from_secs(5), || log().contains("removed captured address 10.20.0.51/32"));
    assert!(log().contains(&format!("from {veth_r}")), "{}", log());
    // The WAN address itself (not a claim) is left alone.
    assert!(run(&["ip", "-n", &ns_r, "-4", "addr", "show", "dev", &veth_r]).unwrap().contains(&wan));

    // Clean stop on SIGTERM, with the counters printed.
    let mut router = lab.children.remove(0);
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the binary).
    unsafe { libc::kill(router.id() as libc::pid_t, libc::SIGTERM) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = router.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "routerd-host did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = log();
    println!("{text}");
    assert!(status.success(), "exit status {status}");
    assert!(text.contains("status at") && text.contains("removed since start 1"), "{text}");
    assert!(text.contains("claim 10.20.0.50: ProxyArp Active on lan0"), "{text}");
}

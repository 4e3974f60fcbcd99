//! The image takes its WAN address from a real DHCP server (dnsmasq),
//! resolves its peer's name with the DNS server the lease names (the same
//! dnsmasq), reaches a real WireGuard peer (wireguard-go) from the leased
//! address, and follows the peer when its address and DNS record change —
//! without an apply.
//!
//! ```text
//!  netns L (LAN, unused)   QEMU (root ns)              netns W (underlay)
//!  TAP ── lan0 10.20.0.2   the image            wan0 ── TAP 192.0.2.1/24 (+ .5, later .6 instead)
//!                          wan0 = "dhcp"                 dnsmasq: DHCP 192.0.2.100–150, router and DNS 192.0.2.1,
//!                          peer roz.example.net          roz.example.net → 192.0.2.5 (TTL 5 s), later → .6
//!                                                        wireguard-go :51820, 10.99.0.1
//! ```
//!
//! Needs root, QEMU, dnsmasq and wireguard-go (`cargo xtask deps` installs
//! them).

mod common;

use common::{prerequisites, run, skip_or_fail, wait_for, wg_keypair, wireguard_go, Lab, WgGo};
use routerd_e2e::qemu::{self, NetBackend, Nic, NicModel};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);

fn config(peer_key: &str) -> String {
    format!(
        r#"[device]
name = "dhcp-edge"
side = "wro"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"

[[ports]]
name = "wan0"
role = "wan"
address = "dhcp"

[[wireguard]]
name = "wg0"
listen_port = 51820
mtu = 1420
private_key = "device:wg0"

[[peers]]
name = "roz"
tunnel = "wg0"
public_key = "{peer_key}"
endpoint = "roz.example.net:51820"
persistent_keepalive = 5
allowed_ips = ["10.99.0.1/32"]
"#
    )
}

fn say(t0: Instant, text: impl AsRef<str>) {
    println!("[{:>6.1} s] {}", t0.elapsed().as_secs_f64(), text.as_ref());
}

fn status(port: &str) -> Value {
    let (st, stdout, stderr) =
        common::output_within(Command::new(common::routerctl()).args(["status", "--json", "--port", port]), Duration::from_secs(30));
    assert!(st.success(), "routerctl status --json: {stdout}{stderr}");
    serde_json::from_str::<Value>(&stdout).expect("status JSON")["status"].clone()
}

#[test]
fn the_image_leases_its_wan_resolves_its_peer_by_name_and_follows_it_when_it_moves() {
    let qemu_bin = qemu::qemu_binary();
    let bins = ["ip", "ping", "dnsmasq", "wireguard-go", "wg", qemu_bin.to_str().unwrap_or("qemu-system-x86_64")];
    let install = "apt-get install --no-install-recommends iproute2 iputils-ping dnsmasq-base qemu-system-x86 wireguard-go wireguard-tools";
    if let Some(reason) = prerequisites(&bins, install) {
        return skip_or_fail("DHCP WAN test", &reason);
    }
    let ctl_bin = common::routerctl();
    assert!(ctl_bin.is_file(), "routerctl at {}", ctl_bin.display());
    let t0 = Instant::now();
    let pid = std::process::id();
    let (ns_lan, ns_wan) = (format!("rdh{pid}l"), format!("rdh{pid}w"));
    let (tap_lan, tap_wan, wg_if) = (format!("rdht{pid}l"), format!("rdht{pid}w"), format!("rdhg{pid}"));
    let mut lab = Lab::new(std::env::temp_dir().join(format!("routerd-dhcp-wan-{pid}")));
    for ns in [&ns_lan, &ns_wan] {
        lab.netns(ns);
        common::sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1");
        common::sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1");
    }
    let (peer_key_file, peer_key) = wg_keypair(&lab.dir, "roz.key");

    let mut m = qemu::Machine::new(routerd_e2e::image()).expect("run dir");
    for (n, ifname) in [&tap_lan, &tap_wan].into_iter().enumerate() {
        m.nics.push(Nic {
            model: NicModel::VirtioNet,
            mac: routerd_e2e::test_mac(13, n as u8),
            backend: NetBackend::Tap { ifname: ifname.clone() },
        });
    }
    let wan_mac = common::mac_text(routerd_e2e::test_mac(13, 1));
    let mut vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    for tap in [&tap_lan, &tap_wan] {
        wait_for(&format!("QEMU's TAP {tap}"), Duration::from_secs(20), || run(&["ip", "link", "show", tap]).is_ok());
    }
    run(&["ip", "link", "set", &tap_lan, "netns", &ns_lan]).unwrap();
    run(&["ip", "-n", &ns_lan, "link", "set", &tap_lan, "up"]).unwrap();
    run(&["ip", "link", "set", &tap_wan, "netns", &ns_wan]).unwrap();
    run(&["ip", "-n", &ns_wan, "addr", "add", "192.0.2.1/24", "dev", &tap_wan]).unwrap();
    run(&["ip", "-n", &ns_wan, "link", "set", &tap_wan, "up"]).unwrap();

    // The peer's public address, which moves later.
    run(&["ip", "-n", &ns_wan, "addr", "add", "192.0.2.5/24", "dev", &tap_wan]).unwrap();
    // dnsmasq: DHCP with 2-minute leases (its minimum) and DNS for the
    // peer's name from a hosts file (TTL 5 s; re-read on SIGHUP).
    let hosts = lab.dir.join("hosts");
    std::fs::write(&hosts, "192.0.2.5 roz.example.net\n").unwrap();
    let leases = lab.dir.join("dnsmasq.leases");
    let dnsmasq = Command::new("ip")
        .args(["netns", "exec", &ns_wan, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null"])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg("--local-ttl=5")
        .arg("--log-queries")
        .arg(format!("--interface={tap_wan}"))
        .arg("--bind-interfaces")
        .arg("--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,2m")
        .arg("--dhcp-option=option:router,192.0.2.1")
        .arg("--dhcp-option=option:dns-server,192.0.2.1")
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .arg(format!("--pid-file={}", lab.dir.join("dnsmasq.pid").display()))
        .arg("--user=root")
        .arg("--log-dhcp")
        .arg(format!("--log-facility={}", lab.dir.join("dnsmasq.log").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    let dnsmasq_pid = dnsmasq.id();
    lab.children.push(dnsmasq);

    vm.wait_for("not forwarding: no configuration yet", BOOT).unwrap_or_else(|e| panic!("{e}"));
    say(t0, "image booted (no configuration)");
    vm.release_serial();
    let port = format!("unix:{}", vm.serial_path().display());

    let file = lab.dir.join("dhcp.toml");
    std::fs::write(&file, config(&peer_key)).unwrap();
    let file = file.to_str().unwrap().to_string();
    let (ok, out, _) = common::output_within(
        Command::new(common::routerctl()).args(["config", "validate", &file, "--for", "image"]),
        Duration::from_secs(30),
    );
    assert!(ok.success(), "validate --for image accepts address = \"dhcp\": {out}");
    let t_apply = Instant::now();
    let out = common::ctl(&port, &["apply", &file, "--yes"]);
    assert_eq!(out.code, Some(0), "apply: {}", out.stderr);
    let keys = common::ctl(&port, &["key", "show", "--json"]).json();
    let box_key = keys["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["slot"] == "wg0"))
        .and_then(|k| k["public_key"].as_str())
        .expect("key show names wg0's public key")
        .to_string();
    wireguard_go(
        &mut lab,
        &WgGo {
            ns: &ns_wan,
            ifname: &wg_if,
            key_file: &peer_key_file,
            listen_port: 51820,
            peer_public: &box_key,
            allowed_ips: "10.20.0.0/24",
            endpoint: None,
            address: "10.99.0.1/32",
            routes: &["10.20.0.0/24"],
        },
    );

    // The lease: in status, in dnsmasq's lease file, on the WAN port.
    let mut st = Value::Null;
    wait_for("the box's DHCP lease", Duration::from_secs(40), || {
        st = status(&port);
        st["dhcp"]["address"].is_string()
    });
    let leased = st["dhcp"]["address"].as_str().unwrap().to_string();
    say(t0, format!("leased {leased} {:.1} s after the apply began; status dhcp: {}", t_apply.elapsed().as_secs_f64(), st["dhcp"]));
    let addr = leased.split('/').next().unwrap().to_string();
    let octets: Vec<u8> = addr.split('.').map(|o| o.parse().unwrap()).collect();
    assert!(octets[..3] == [192, 0, 2] && (100..=150).contains(&octets[3]), "an address from dnsmasq's range: {leased}");
    assert_eq!(st["dhcp"]["gateway"].as_str(), Some("192.0.2.1"), "{}", st["dhcp"]);
    assert_eq!(st["dhcp"]["server"].as_str(), Some("192.0.2.1"), "{}", st["dhcp"]);
    assert_eq!(st["dhcp"]["lease_secs"].as_u64(), Some(120), "{}", st["dhcp"]);
    let wan = st["ports"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == "wan0")).cloned().unwrap_or(Value::Null);
    assert_eq!(wan["address"].as_str(), Some(leased.as_str()), "wan0 shows its leased address: {wan}");
    let lease_file = std::fs::read_to_string(&leases).unwrap_or_default();
    assert!(lease_file.contains(&wan_mac) && lease_file.contains(&addr), "dnsmasq's leases: {lease_file}");

    // The tunnel comes up from the leased address; a ping from the peer
    // to the box's LAN address crosses it and is answered.
    let mut answered = None;
    let t_ping = Instant::now();
    while t_ping.elapsed() < Duration::from_secs(40) {
        if run(&["ip", "netns", "exec", &ns_wan, "ping", "-c", "1", "-W", "1", "10.20.0.2"]).is_ok() {
            answered = Some(t_ping.elapsed());
            break;
        }
    }
    let Some(answered) = answered else {
        let st = status(&port);
        let wg = run(&["ip", "netns", "exec", &ns_wan, "wg", "show", &wg_if]).unwrap_or_default();
        panic!(
            "no ping through the tunnel to the box's LAN address was answered\npeers {}\ndrops {}\ncounters {}\nwg: {wg}",
            st["peers"], st["drops"], st["counters"]
        );
    };
    say(t0, format!("ping through the tunnel answered after {:.1} s", answered.as_secs_f64()));
    let wg_show = run(&["ip", "netns", "exec", &ns_wan, "wg", "show", &wg_if, "endpoints"]).unwrap();
    assert!(wg_show.contains(&format!("{addr}:51820")), "wireguard-go sees the box at its leased address: {wg_show}");
    let st = status(&port);
    let name = &st["resolver"]["names"][0];
    assert_eq!(name["name"].as_str(), Some("roz.example.net"), "{}", st["resolver"]);
    assert_eq!(name["address"].as_str(), Some("192.0.2.5"), "{}", st["resolver"]);
    assert_eq!(st["resolver"]["servers"][0].as_str(), Some("192.0.2.1"), "the lease's DNS server: {}", st["resolver"]);
    assert_eq!(st["peers"][0]["endpoint"].as_str(), Some("192.0.2.5:51820"), "{}", st["peers"]);

    // The peer moves: its address changes and so does its DNS record.
    // Nothing is applied; the box re-resolves (TTL) and dials the new one.
    let before = status(&port);
    let (applied_before, up_before) = (before["applied_ms_ago"].as_u64().expect("applied_ms_ago"), before["uptime_ms"].as_u64().unwrap());
    run(&["ip", "-n", &ns_wan, "addr", "del", "192.0.2.5/24", "dev", &tap_wan]).unwrap();
    run(&["ip", "-n", &ns_wan, "addr", "add", "192.0.2.6/24", "dev", &tap_wan]).unwrap();
    std::fs::write(&hosts, "192.0.2.6 roz.example.net\n").unwrap();
    // SAFETY: kill(2) on our own child (dnsmasq, exec'd by ip netns exec).
    unsafe { libc::kill(dnsmasq_pid as libc::pid_t, libc::SIGHUP) };
    let t_move = Instant::now();
    say(t0, "the peer moved to 192.0.2.6 and its DNS record with it");
    let mut recovered = None;
    while t_move.elapsed() < Duration::from_secs(90) {
        if run(&["ip", "netns", "exec", &ns_wan, "ping", "-c", "1", "-W", "1", "10.20.0.2"]).is_ok()
            && status(&port)["peers"][0]["endpoint"].as_str() == Some("192.0.2.6:51820")
        {
            recovered = Some(t_move.elapsed());
            break;
        }
    }
    let st = status(&port);
    let Some(recovered) = recovered else {
        panic!("traffic did not recover after the move\nresolver {}\npeers {}", st["resolver"], st["peers"]);
    };
    say(t0, format!("traffic recovered {:.1} s after the move (resolver: {})", recovered.as_secs_f64(), st["resolver"]["names"][0]));
    // No apply (nor a lease change) in between: the configuration aged
    // exactly as long as the box ran (both read from the box's clock).
    let (applied_after, up_after) = (st["applied_ms_ago"].as_u64().expect("applied_ms_ago"), st["uptime_ms"].as_u64().unwrap());
    assert_eq!(applied_after.checked_sub(applied_before), Some(up_after - up_before), "no apply happened");
    drop(vm);
}

//! A rebooted box is the same box to its peer: the image in QEMU with a
//! disk — virtio-blk, AHCI or NVMe — is provisioned once, `routerctl reboot --yes` resets it, and a
//! `wireguard-go` peer that is never touched completes a handshake with it
//! again — the same key, a configuration nobody re-sent, and a handshake
//! timestamp newer than the one before the reboot (wireguard-go drops an
//! initiation whose TAI64N timestamp is not newer than the last it took).
//!
//! ```text
//!  netns L (LAN host)                    QEMU (root ns)                      netns W (underlay + cloud)
//!  TAP 10.20.0.10/24  ◀─fd─▶  lan0  image 10.20.0.2   wan0  ◀─fd─▶  TAP 192.0.2.1/24
//!                                   disk: ROUTERD-STATE   192.0.2.2      wireguard-go :51820
//!                                                                         holds 10.20.0.50/32
//! ```
//!
//! wireguard-go has no endpoint for the box, so only the box can start a
//! handshake: after the reboot it must dial by itself (a kept-alive peer).
//! Checked: a ping from the LAN host to 10.20.0.50 crosses before the
//! reboot; after `routerctl reboot --yes` the console shows the new boot
//! restoring generation 1, the box's public key is unchanged, wireguard-go's
//! latest handshake moves forward, and a ping crosses again. The time from
//! the new boot's `boot: ready` to the first ping reply is printed.
//!
//! Needs root, /dev/net/tun, `ip`, `ping`, `wg`, `wireguard-go`, QEMU; without
//! them the test prints "skipped: …" and passes, unless `CI` is set.

mod common;

use common::{ctl, ping, prerequisites, run, skip_or_fail, sysctl, wait_for, wg_keypair, wireguard_go, Lab, WgGo};
use routerd_e2e::qemu::{self, DiskBus, NetBackend, Nic, NicModel};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);

fn config(peer_key: &str) -> String {
    format!(
        r#"
[device]
name = "rebooted"
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
private_key = "device:wg0"

[[peers]]
name = "cloud"
tunnel = "wg0"
public_key = "{peer_key}"
endpoint = "192.0.2.1:51820"
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

/// wireguard-go's latest handshake with the box, in seconds since the epoch (0: none).
fn latest_handshake(ns: &str, ifname: &str) -> u64 {
    let out = run(&["ip", "netns", "exec", ns, "wg", "show", ifname, "latest-handshakes"]).unwrap_or_default();
    out.split_whitespace().nth(1).and_then(|t| t.parse().ok()).unwrap_or(0)
}

#[test]
fn a_rebooted_box_handshakes_with_an_untouched_peer_virtio_blk() {
    rebooted_box_handshakes(DiskBus::Virtio, 13);
}

#[test]
fn a_rebooted_box_handshakes_with_an_untouched_peer_ahci() {
    rebooted_box_handshakes(DiskBus::Ahci, 14);
}

#[test]
fn a_rebooted_box_handshakes_with_an_untouched_peer_nvme() {
    rebooted_box_handshakes(DiskBus::Nvme, 15);
}

fn rebooted_box_handshakes(bus: DiskBus, id: u8) {
    let disk_name = bus.disk_name(0);
    let qemu_bin = qemu::qemu_binary();
    let bins = ["ip", "ping", "wireguard-go", "wg", qemu_bin.to_str().unwrap_or("qemu-system-x86_64")];
    let install = "apt-get install --no-install-recommends iproute2 iputils-ping qemu-system-x86 wireguard-go wireguard-tools";
    if let Some(reason) = prerequisites(&bins, install) {
        return skip_or_fail("reboot test", &reason);
    }
    let _ = common::routerctl();
    let pid = std::process::id();
    // Interface names are at most 15 bytes; a pid has at most 7 digits.
    let (ns_lan, ns_wan) = (format!("rb{id}{pid}l"), format!("rb{id}{pid}w"));
    let (tap_lan, tap_wan, wg_if) = (format!("rb{id}t{pid}l"), format!("rb{id}t{pid}w"), format!("rb{id}g{pid}"));
    let mut lab = Lab::new(std::env::temp_dir().join(format!("routerd-reboot-{pid}-{id}")));
    for ns in [&ns_lan, &ns_wan] {
        lab.netns(ns);
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1");
        sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1");
    }
    let (peer_key_file, peer_key) = wg_keypair(&lab.dir, "cloud.key");
    let disk = lab.dir.join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(16 << 20).unwrap();

    let mut m = qemu::Machine::new(routerd_e2e::image()).expect("run dir");
    for (n, ifname) in [&tap_lan, &tap_wan].into_iter().enumerate() {
        let mac = routerd_e2e::test_mac(id, n as u8);
        m.nics.push(Nic { model: NicModel::VirtioNet, mac, backend: NetBackend::Tap { ifname: ifname.clone() } });
    }
    m.disks.push(disk.clone());
    m.disk_bus = bus;
    m.reboot = true;
    let mut vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    for tap in [&tap_lan, &tap_wan] {
        wait_for(&format!("QEMU's TAP {tap}"), Duration::from_secs(20), || run(&["ip", "link", "show", tap]).is_ok());
    }
    run(&["ip", "link", "set", &tap_lan, "netns", &ns_lan]).unwrap();
    run(&["ip", "-n", &ns_lan, "addr", "add", "10.20.0.10/24", "dev", &tap_lan]).unwrap();
    run(&["ip", "-n", &ns_lan, "link", "set", &tap_lan, "up"]).unwrap();
    run(&["ip", "link", "set", &tap_wan, "netns", &ns_wan]).unwrap();
    run(&["ip", "-n", &ns_wan, "addr", "add", "192.0.2.1/24", "dev", &tap_wan]).unwrap();
    run(&["ip", "-n", &ns_wan, "link", "set", &tap_wan, "up"]).unwrap();
    vm.wait_for("not forwarding: no configuration yet", BOOT).unwrap_or_else(|e| panic!("{e}"));
    vm.release_serial();
    let port = format!("unix:{}", vm.serial_path().display());

    // Provision once: the store, the configuration, the box's own key.
    assert_eq!(ctl(&port, &["storage", "init", "--disk", &disk_name, "--yes"]).code, Some(0));
    let file = lab.dir.join("rebooted.toml");
    std::fs::write(&file, config(&peer_key)).unwrap();
    assert_eq!(ctl(&port, &["apply", file.to_str().unwrap(), "--yes"]).code, Some(0));
    let box_key = ctl(&port, &["status", "--json"]).json()["status"]["tunnel"]["public_key"].as_str().unwrap().to_string();
    wireguard_go(
        &mut lab,
        &WgGo {
            ns: &ns_wan,
            ifname: &wg_if,
            key_file: &peer_key_file,
            listen_port: 51820,
            peer_public: &box_key,
            allowed_ips: "10.20.0.10/32",
            endpoint: None,
            address: "10.20.0.50/32",
            routes: &["10.20.0.10/32"],
        },
    );
    wait_for("a ping reply from 10.20.0.50 through the tunnel before the reboot", Duration::from_secs(30), || {
        ping(&ns_lan, "10.20.0.50", 1, 56) == 1
    });
    let before = latest_handshake(&ns_wan, &wg_if);
    assert!(before > 0, "wireguard-go took a handshake from the box");

    // The reboot: nobody touches wireguard-go or re-sends anything.
    let console_before = vm.console().len();
    assert_eq!(ctl(&port, &["reboot", "--yes"]).code, Some(0));
    vm.attach_serial(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for_after(console_before, "boot: ready", BOOT).unwrap_or_else(|e| panic!("{e}"));
    let booted = Instant::now();
    vm.wait_for_after(console_before, &format!("storage: {disk_name}: restored configuration generation 1"), BOOT)
        .unwrap_or_else(|e| panic!("{e}"));
    // wireguard-go's handshake record has a one-second resolution.
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(booted.elapsed()));
    let _ = run(&["ip", "-n", &ns_lan, "neigh", "flush", "dev", &tap_lan]);
    wait_for("a ping reply from 10.20.0.50 through the tunnel after the reboot", Duration::from_secs(30), || {
        ping(&ns_lan, "10.20.0.50", 1, 56) == 1
    });
    let crossed = booted.elapsed();
    vm.release_serial();
    let st = ctl(&port, &["status", "--json"]).json()["status"].clone();
    assert_eq!(st["tunnel"]["public_key"], box_key.as_str(), "the same WireGuard identity after the reboot");
    assert_eq!(st["storage"]["boots"], 1, "{}", st["storage"]);
    let after = latest_handshake(&ns_wan, &wg_if);
    assert!(after > before, "wireguard-go took a new handshake from the rebooted box ({before} → {after})");
    println!(
        "{disk_name}: after `routerctl reboot --yes`: first ping reply through the tunnel {:.2} s after `boot: ready`",
        crossed.as_secs_f64()
    );
    assert_eq!(ping(&ns_lan, "10.20.0.50", 3, 56), 3, "3 of 3 after the reboot");
    drop(vm);
}

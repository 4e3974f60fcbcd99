//! The bare-metal image as a BGP EVPN VTEP beside FRR configured the way
//! Proxmox VE configures an SDN EVPN zone, over a `wireguard-go` underlay:
//! host/tests/evpn_frr.rs's topology with the image in QEMU as the box, in
//! network namespaces this test creates (and always removes: Drop guards).
//!
//! ```text
//!  netns vmB                QEMU (root ns)                 netns pve                          netns vmP
//!  TAP 10.50.0.2  ◀─fd─▶   lan0 image (segment vni 100,   vmbr100 ── vxlan100 (id 100,       veth 10.50.0.1
//!  (bridge-only port)       bridge-only port)              │          local 10.1.0.2)   ◀──▶
//!                           BGP 10.1.0.1  wan0 ◀─fd─▶      TAP 10.77.X.2
//!                           10.77.X.1 :51820               wireguard-go 10.1.0.2/32 (:51821)
//!                                                          FRR zebra, bgpd, bfdd (AS 65000)
//! ```
//!
//! QEMU opens its TAPs in the root namespace; the test moves each kernel
//! side into the namespace behind it (the fds keep working). The image gets
//! its configuration on the kernel command line (`routerd.config=`, the
//! same path as an apply): a segment with `control = "evpn"` and no
//! `remote_vteps` on lan0, and `[bgp]` peering with pve's tunnel address.
//! It makes its WireGuard key at boot and prints it; pve's wireguard-go is
//! then set up with it. pve runs exactly Proxmox's EVPN statements
//! (`common::frr::proxmox_evpn_config`, `timers bgp 3 9`) and its VNet is a
//! bridge with a `nolearning` VXLAN port.
//!
//! Checked: the session comes up over WireGuard (FRR's `show bgp summary
//! json`, and the box's `routerctl bgp summary --json` over its serial
//! socket); the box learns pve as the segment's VTEP from its type 3 (flood
//! list, and `routerctl bgp routes --json`); the VMs ping each other both
//! ways; 1 MiB crosses the segment intact (TCG is slow); FRR holds vmB's MAC
//! as a type 2 with next hop the box's tunnel address, and pve's vxlan100
//! FDB points at the box; bgpd stopped (its Cease) → the box withdraws
//! pve's VTEP and the VMs lose each other; bgpd restarted → traffic flows
//! again; the image never panicked. Printed, not asserted: boot → forwarding,
//! → Established, → VTEP learned, the transfer time, bgpd stop → withdrawn,
//! restart → traffic, and the image's heap figures.
//!
//! Needs root, /dev/net/tun, `ip`, `bridge`, `ping`, `wg`, `wireguard-go`,
//! `qemu-system-x86_64` and FRR (`/usr/lib/frr/{zebra,bgpd,bfdd}`, `vtysh`);
//! without them it prints "skipped: …" and passes, unless `CI` is set, where
//! it fails. Every wait is bounded; a failure prints the image console and
//! FRR's logs. Traffic is bounded: pings and one 1 MiB transfer.

mod common;

use base64::Engine;
use common::evpn::{
    box_config, flood_list, proxmox_vnet, pve_type2, pve_wireguard, segment_pings, transfer, vm_nic, vm_on_bridge, Neighbour, ASN, BOX_TUN,
    PVE_TUN, VM_B, VM_B_MAC, VM_P, VM_P_MAC,
};
use common::frr::{frr_prerequisites, session_state, until_ping, Frr};
use common::{output_within, ping, routerctl, run, skip_or_fail, wg_keypair, Lab};
use routerd_e2e::qemu::{self, NetBackend, Nic, NicModel, Vm};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Bytes through the segment: TCG forwards a few MiB/s.
const TRANSFER: u64 = 1 << 20;
const BOOT: Duration = Duration::from_secs(60);

/// `routerd.config=<base64 postcard>` for the image's command line, after
/// the same validation the image runs.
fn config_option(toml: &str) -> String {
    let cfg = config_schema::human::from_toml(toml).unwrap_or_else(|e| panic!("the box config parses: {e}"));
    let report = config_schema::validate_for(&cfg, config_schema::Platform::Image);
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(report.is_valid(), "the image refuses the box config: {problems:?}");
    let mut wire = vec![0u8; config_schema::CONFIG_WIRE_MAX];
    let bytes = config_schema::encode(&cfg, &mut wire).expect("the box config encodes");
    format!("routerd.config={}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The running image. While the test fails, dropping it prints the console
/// (after the human `status`, heap figures included) and FRR's logs, then
/// stops QEMU (its TAPs go with it).
struct Image {
    vm: Vm,
    frr_dir: std::path::PathBuf,
}

impl Image {
    /// `routerctl ARGS --json` over the serial socket: the harness lets go
    /// of it meanwhile (QEMU's socket takes one client).
    fn ctl_json(&mut self, args: &[&str]) -> Value {
        self.vm.release_serial();
        let port = format!("unix:{}", self.vm.serial_path().display());
        let (status, out, err) =
            output_within(Command::new(routerctl()).args(args).args(["--json", "--port", &port]), Duration::from_secs(30));
        self.vm.attach_serial(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "routerctl {args:?} failed ({status}):\n{out}{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("routerctl {args:?} printed no JSON ({e}):\n{out}{err}"))
    }

    /// The box's `bgp summary`, until `ok` holds or `limit` passes (each
    /// look is one routerctl run over the serial line): the last summary
    /// and when `ok` first held.
    fn bgp_until(&mut self, what: &str, limit: Duration, ok: impl Fn(&Value) -> bool) -> (Value, Duration) {
        let t0 = Instant::now();
        loop {
            let v = self.ctl_json(&["bgp", "summary"]);
            if ok(&v["bgp"]) {
                return (v, t0.elapsed());
            }
            assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for the box's {what}; its summary:\n{v:#}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let before = self.vm.console().len();
        if self.vm.serial().write_all(b"status\r").is_ok() {
            let _ = self.vm.wait_for_after(before, "end of status", Duration::from_secs(5));
        }
        eprintln!("----- image console -----\n{}", self.vm.console());
        eprintln!("----- FRR -----{}", common::frr::frr_logs(&self.frr_dir));
    }
}

fn peer_state(bgp: &Value) -> String {
    bgp["peers"][0]["state"].as_str().unwrap_or("none").to_string()
}

/// The last `mem: heap …` line the image logged.
fn heap_line(console: &str) -> String {
    console.lines().rfind(|l| l.contains("mem: heap")).unwrap_or("(no heap line)").trim().to_string()
}

#[test]
fn the_image_is_a_vtep_beside_frr_as_proxmox_configures_it() {
    let qemu_bin = qemu::qemu_binary();
    let qemu_name = qemu_bin.to_str().unwrap_or("qemu-system-x86_64");
    let install = "apt-get install --no-install-recommends iproute2 iputils-ping wireguard-tools wireguard-go frr qemu-system-x86";
    if let Some(reason) = frr_prerequisites(&["ip", "bridge", "ping", "wg", "wireguard-go", "vtysh", qemu_name], install) {
        return skip_or_fail("image EVPN/FRR test", &reason);
    }
    // The image first (built if needed): its build is not the test's time.
    let image_file = routerd_e2e::image();
    let test_start = Instant::now();
    let pid = std::process::id();
    let x = pid % 200 + 20;
    // Interface names are at most 15 bytes; a pid has at most 7 digits.
    let (ns_pve, ns_vmp, ns_vmb) = (format!("rie{pid}p"), format!("rie{pid}vp"), format!("rie{pid}vb"));
    let (tap_lan, tap_wan) = (format!("riel{pid}"), format!("riew{pid}"));
    let (veth_vm, veth_br, wg_if) = (format!("riev{pid}"), format!("riet{pid}"), format!("rieg{pid}"));
    let (wan, pve_ul) = (format!("10.78.{x}.1"), format!("10.78.{x}.2"));
    let dir = std::env::temp_dir().join(format!("routerd-image-evpn-{pid}"));
    let mut lab = Lab::new(dir.clone());
    for ns in [&ns_pve, &ns_vmp, &ns_vmb] {
        lab.netns(ns);
    }

    // pve's key first, so the image's configuration can name it.
    let (pve_key_file, pve_public) = wg_keypair(&dir, "pve.key");

    // The image: lan0 carries the segment, wan0 the underlay.
    let mut m = qemu::Machine::new(image_file).expect("run dir");
    let pve = Neighbour { name: "pve", public_key: &pve_public, endpoint: format!("{pve_ul}:51821"), tunnel: PVE_TUN };
    m.cmdline = config_option(&box_config("evpn-image", "lan0", BOX_TUN, &wan, &[pve]));
    for (n, ifname) in [&tap_lan, &tap_wan].into_iter().enumerate() {
        m.nics.push(Nic {
            model: NicModel::VirtioNet,
            mac: routerd_e2e::test_mac(9, n as u8),
            backend: NetBackend::Tap { ifname: ifname.clone() },
        });
    }
    let spawned = Instant::now();
    let vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    let mut image = Image { vm, frr_dir: dir.join("frr") };
    // QEMU opens the TAPs once its console is connected, i.e. about now.
    for (tap, ns) in [(&tap_lan, &ns_vmb), (&tap_wan, &ns_pve)] {
        common::wait_for(&format!("QEMU's TAP {tap}"), Duration::from_secs(20), || run(&["ip", "link", "show", tap]).is_ok());
        run(&["ip", "link", "set", tap, "netns", ns]).unwrap();
    }
    // vmB behind the bridge-only port; pve's underlay address on the WAN.
    vm_nic(&ns_vmb, &tap_lan, VM_B_MAC, VM_B);
    run(&["ip", "-n", &ns_pve, "addr", "add", &format!("{pve_ul}/24"), "dev", &tap_wan]).unwrap();
    run(&["ip", "-n", &ns_pve, "link", "set", &tap_wan, "up"]).unwrap();

    image.vm.wait_for("; forwarding", BOOT).unwrap_or_else(|e| panic!("{e}"));
    let booted = spawned.elapsed();
    let console = image.vm.console();
    let box_public = console
        .lines()
        .filter(|l| l.contains("(generated on this boot)"))
        .find_map(|l| l.split(" public key ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the image prints the public key it generated")
        .to_string();
    println!("image forwarding {:.1} s after QEMU started; {}", booted.as_secs_f64(), heap_line(&console));

    // pve: WireGuard (tunnel address 10.1.0.2), the VNet, the VM, FRR.
    pve_wireguard(&mut lab, &ns_pve, &wg_if, &pve_key_file, &box_public, &wan);
    proxmox_vnet(&ns_pve);
    vm_on_bridge(&ns_pve, "vmbr100", &veth_br, &ns_vmp, &veth_vm, VM_P_MAC, VM_P);
    let mut frr = Frr::proxmox(&ns_pve, dir.join("frr"), ASN, PVE_TUN, &[BOX_TUN]);

    // 1. The session, over WireGuard: FRR's view, then the box's.
    common::wait_for("FRR to show the box Established", Duration::from_secs(40), || session_state(&frr, BOX_TUN) == "Established");
    let established = spawned.elapsed();
    let (summary, _) = image.bgp_until("session to pve Established", Duration::from_secs(10), |b| peer_state(b) == "Established");
    println!(
        "session: Established {:.1} s after QEMU started ({:.1} s after boot; FRR's view); the box's: {} {}",
        established.as_secs_f64(),
        (established - booted).as_secs_f64(),
        summary["bgp"]["peers"][0]["name"],
        peer_state(&summary["bgp"])
    );

    // 2. pve's type 3: the box floods to pve's VTEP.
    let (summary, _) = image.bgp_until("flood list to hold pve's VTEP", Duration::from_secs(30), |b| flood_list(b) == [PVE_TUN]);
    let learned = spawned.elapsed();
    println!(
        "VTEP {PVE_TUN} learned {:.1} s after QEMU started ({:.1} s after Established: FRR sends routes once its \
         route-maps apply, ~5 s after bgpd starts); the box's VNI: {}",
        learned.as_secs_f64(),
        (learned - established).as_secs_f64(),
        summary["bgp"]["vnis"][0]
    );

    // 3. The VMs, both ways (the first ping also teaches both sides the MACs).
    if let Err(e) = segment_pings(&ns_vmb, &ns_vmp, Duration::from_secs(20)) {
        panic!("{e}");
    }

    // 4. 1 MiB through the segment, every byte checked.
    let to: SocketAddr = format!("{VM_P}:5201").parse().unwrap();
    let (_, got) = transfer("1 MiB vmB → vmP", &ns_vmb, &ns_vmp, to, TRANSFER);
    assert_eq!((got.bytes, got.wrong), (TRANSFER, 0), "every byte arrives unchanged");

    // 5. Type 2 both ways: FRR holds vmB's MAC behind the box and installs
    // it; the box has pve's type 3 and vmP's type 2 from pve.
    let mut seen = String::new();
    common::wait_for("FRR to take the box's VM MAC as a type 2 and install it", Duration::from_secs(15), || {
        let (ok, look) = pve_type2(&frr, &ns_pve, VM_B_MAC, BOX_TUN);
        seen = look;
        ok
    });
    println!("FRR: {seen}");
    let routes = image.ctl_json(&["bgp", "routes", "--vni", "100"]);
    let list = routes["routes"].as_array().cloned().unwrap_or_default();
    let from_pve = |t: u64| list.iter().filter(|r| r["type"] == t && r["from"] == "pve" && r["next_hop"] == PVE_TUN).count();
    assert!(from_pve(3) >= 1, "the box holds pve's type 3: {routes:#}");
    assert!(
        list.iter().any(|r| r["type"] == 2 && r["mac"] == VM_P_MAC && r["next_hop"] == PVE_TUN),
        "the box holds vmP's type 2: {routes:#}"
    );
    println!("the box's routes: {} ({} type 3 and {} type 2 from pve)", routes["total"], from_pve(3), from_pve(2));

    // 6. bgpd stops (SIGTERM: it sends Cease): the box withdraws pve's
    // VTEP, and the VMs lose each other.
    let stopped = Instant::now();
    frr.stop("bgpd");
    let (summary, _) = image.bgp_until("flood list to drop pve's VTEP", Duration::from_secs(15), |b| flood_list(b).is_empty());
    println!(
        "bgpd stopped: VTEP withdrawn after at most {:.0} ms; the box's session {} (last down: {})",
        stopped.elapsed().as_secs_f64() * 1e3,
        peer_state(&summary["bgp"]),
        summary["bgp"]["peers"][0]["last_down"]
    );
    assert_ne!(peer_state(&summary["bgp"]), "Established", "the session is down with bgpd");
    assert_eq!(ping(&ns_vmb, VM_P, 2, 56), 0, "vmB still reaches vmP with pve's VTEP withdrawn");

    // 7. bgpd back: the session, the routes and the traffic return.
    frr.start("bgpd");
    let restarted = Instant::now();
    let Some(_) = until_ping(&ns_vmb, VM_P, Duration::from_secs(30)) else { panic!("no traffic within 30 s of bgpd's restart") };
    let restored = restarted.elapsed();
    assert!(ping(&ns_vmp, VM_B, 3, 56) >= 2, "vmP → vmB after the restart");
    let (summary, _) =
        image.bgp_until("session back", Duration::from_secs(10), |b| peer_state(b) == "Established" && flood_list(b) == [PVE_TUN]);
    println!(
        "bgpd restarted: traffic restored after {:.0} ms (FRR applies its route-maps ~5 s after it starts); the box: {}, established {} times",
        restored.as_secs_f64() * 1e3,
        peer_state(&summary["bgp"]),
        summary["bgp"]["peers"][0]["established"]
    );

    // The heap as the console's `status` reports it, and no panic.
    let before = image.vm.console().len();
    image.vm.serial().write_all(b"status\r").unwrap();
    image.vm.wait_for_after(before, "end of status", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let console = image.vm.console();
    let heap = console.get(before..).unwrap_or("").lines().find(|l| l.starts_with("heap:")).unwrap_or("(no heap line)").to_string();
    println!("image {heap}; after the apply: {}", heap_line(&console));
    assert!(!console.contains("PANIC"), "the image panicked");
    println!("whole test: {:.1} s", test_start.elapsed().as_secs_f64());
}

//! routerd-host as a BGP EVPN VTEP beside FRR configured the way Proxmox VE
//! configures an SDN EVPN zone, over a `wireguard-go` underlay, in network
//! namespaces this test creates (and always removes: Drop guards).
//!
//! ```text
//!  netns vmB               netns box (routerd-host)               netns pve                         netns vmP
//!  TAP 10.50.0.2  ◀─fd─▶  lan1 (TAP, segment vni 100)            vmbr100 ── vxlan100 (id 100,      veth 10.50.0.1
//!  (bridge-only port)      BGP 10.1.0.1  wan0 (UDP :51820)        │          local 10.1.0.2)  ◀──▶
//!                          veth 10.77.X.1 ─────────────────────── veth 10.77.X.2
//!                                                                 wireguard-go 10.1.0.2/32 (:51821)
//!                                                                 FRR zebra, bgpd, bfdd (AS 65000)
//! ```
//!
//! The box's configuration has a segment with `control = "evpn"` and no
//! `remote_vteps`, and `[bgp]` peering with pve's tunnel address. pve runs
//! exactly Proxmox's EVPN statements (`router bgp 65000`, `no bgp default
//! ipv4-unicast`, peer group VTEP with `bfd`, `advertise-all-vni`) plus
//! `timers bgp 3 9`; its VNet is a bridge with a `nolearning` VXLAN port
//! (learning off on the port), as Proxmox makes it.
//!
//! Checked: the session comes up over WireGuard (FRR's `show bgp summary
//! json`, the box's log); the box learns pve as the segment's VTEP from its
//! type 3; the VMs ping each other both ways; 4 MiB cross the segment
//! intact; each VM's MAC is a type 2 on the other side (FRR's table with
//! next hop 10.1.0.1 and pve's vxlan100 FDB; the box's installed FDB
//! entry); the session stays up while FRR's `neighbor VTEP bfd` never
//! sees BFD; bgpd frozen (SIGSTOP) → the box's hold timer (9 s) withdraws
//! the VTEP, and after SIGCONT it all comes back; bgpd stopped (its Cease)
//! → the box withdraws at once and the VMs lose each other; bgpd restarted
//! → traffic flows again; routerd-host does not spin. Measured and
//! printed: process start → Established, freeze and stop → VTEP
//! withdrawn, restart → Established and → traffic, the 4 MiB transfer.
//! Traffic is bounded: pings and one 4 MiB transfer.
//!
//! Needs root, /dev/net/tun, `ip`, `bridge`, `ping`, `wg`, `wireguard-go`
//! and FRR (`/usr/lib/frr/{zebra,bgpd,bfdd}`, `vtysh`); without them it
//! prints "skipped: …" and passes, unless `CI` is set, where it fails. The
//! FRR daemons run as the package's `frr` user with their own sockets
//! directory (see firmware/bgp/tests/frr.rs). Every wait is bounded.

mod common;

use common::evpn::{
    box_config, box_key, cpu_seconds, print_log, proxmox_vnet, pve_type2, pve_wireguard, segment_pings, transfer, vm_nic, vm_on_bridge,
    wait_until, Neighbour, ASN, BOX_TUN, HOLD, PVE_TUN, VM_B, VM_B_MAC, VM_P, VM_P_MAC,
};
use common::frr::{frr_prerequisites, log_lines, session_state, until_ping, Frr};
use common::{ping, run, skip_or_fail, start_routerd_host, wg_keypair, Lab};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TRANSFER: u64 = 4 << 20;
/// The hold time both sides agree on (FRR's `timers bgp 3 9`, ours 9).
const HOLD_TIME: Duration = Duration::from_secs(HOLD as u64);

#[test]
fn routerd_host_is_a_vtep_beside_frr_as_proxmox_configures_it() {
    let install = "apt-get install --no-install-recommends iproute2 iputils-ping wireguard-tools wireguard-go frr";
    if let Some(reason) = frr_prerequisites(&["ip", "bridge", "ping", "wg", "wireguard-go", "vtysh"], install) {
        return skip_or_fail("routerd-host EVPN/FRR test", &reason);
    }
    let test_start = Instant::now();
    let pid = std::process::id();
    let x = pid % 200 + 20;
    let (ns_box, ns_pve, ns_vmp, ns_vmb) = (format!("rev{pid}b"), format!("rev{pid}p"), format!("rev{pid}vp"), format!("rev{pid}vb"));
    let (veth_box, veth_pve, veth_vm, veth_br) = (format!("revb{pid}"), format!("revp{pid}"), format!("revv{pid}"), format!("revt{pid}"));
    let (tap, wg_if) = (format!("revl{pid}"), format!("revg{pid}"));
    let (wan, pve_ul) = (format!("10.77.{x}.1"), format!("10.77.{x}.2"));
    let dir = std::env::temp_dir().join(format!("routerd-host-evpn-{pid}"));
    let mut lab = Lab::new(dir.clone());
    for ns in [&ns_box, &ns_pve, &ns_vmp, &ns_vmb] {
        lab.netns(ns);
    }
    // The underlay.
    common::veth(&ns_box, &veth_box, &format!("{wan}/24"), &ns_pve, &veth_pve, &format!("{pve_ul}/24"));

    // Keys: pve's from wg(8), the box's from its key file.
    let (pve_key_file, pve_public) = wg_keypair(&dir, "pve.key");
    let (key_file, box_public) = box_key(&dir, "box.key");

    // pve: WireGuard (tunnel address 10.1.0.2), the VNet, the VM, FRR.
    pve_wireguard(&mut lab, &ns_pve, &wg_if, &pve_key_file, &box_public, &wan);
    proxmox_vnet(&ns_pve);
    vm_on_bridge(&ns_pve, "vmbr100", &veth_br, &ns_vmp, &veth_vm, VM_P_MAC, VM_P);
    let mut frr = Frr::proxmox(&ns_pve, dir.join("frr"), ASN, PVE_TUN, &[BOX_TUN]);

    // The box.
    let cfg_file = dir.join("box.toml");
    let pve = Neighbour { name: "pve", public_key: &pve_public, endpoint: format!("{pve_ul}:51821"), tunnel: PVE_TUN };
    std::fs::write(&cfg_file, box_config("evpn-box", "lan1", BOX_TUN, &wan, &[pve])).unwrap();
    let started = Instant::now();
    let port = format!("lan1={tap}");
    let args = ["--config", cfg_file.to_str().unwrap(), "--key-file", key_file.to_str().unwrap(), "--port", &port];
    let host = start_routerd_host(&mut lab, &ns_box, "box", &args);
    let box_pid = host.pid;
    let log = || host.log();
    let frr_dir = frr.dir.clone();
    let fail = |what: &str| -> ! {
        host.dump_status();
        panic!("{what}\n--- box log\n{}\nFRR:{}", log(), common::frr::frr_logs(&frr_dir));
    };
    let wait = |what: &str, limit: Duration, ok: &mut dyn FnMut() -> bool| {
        wait_until(what, limit, Duration::from_millis(50), ok).unwrap_or_else(|e| fail(&e))
    };
    wait("routerd-host to create its TAP", Duration::from_secs(20), &mut || run(&["ip", "-n", &ns_box, "link", "show", &tap]).is_ok());
    // The kernel side of the TAP is vmB's NIC.
    run(&["ip", "-n", &ns_box, "link", "set", &tap, "netns", &ns_vmb]).unwrap();
    vm_nic(&ns_vmb, &tap, VM_B_MAC, VM_B);

    // 1. The session, over WireGuard.
    wait("FRR to show the box Established", Duration::from_secs(30), &mut || session_state(&frr, BOX_TUN) == "Established");
    let seen_up = started.elapsed();
    wait("the box to log the session Established", Duration::from_secs(5), &mut || {
        !log_lines(&log(), &format!("bgp: peer pve ({PVE_TUN}) Established")).is_empty()
    });
    let established_at = log_lines(&log(), "Established")[0].0;
    let established_wall = Instant::now();
    println!(
        "session set-up: Established {:.0} ms after the process started (box log; FRR shows it {:.0} ms after spawn)",
        established_at.as_secs_f64() * 1e3,
        seen_up.as_secs_f64() * 1e3
    );

    // 2. pve's type 3: the box floods to pve's VTEP.
    let vteps_line = format!("evpn: segment vnet100 (vni 100): VTEPs {PVE_TUN}");
    wait("the box to learn pve's VTEP", Duration::from_secs(10), &mut || !log_lines(&log(), &vteps_line).is_empty());

    // 3. The VMs, both ways (the first ping also teaches both sides the MACs).
    if let Err(e) = segment_pings(&ns_vmb, &ns_vmp, Duration::from_secs(15)) {
        fail(&e);
    }

    // 4. Type 2 both ways.
    let mut seen = String::new();
    wait("FRR to take the box's VM MAC as a type 2 and install it", Duration::from_secs(15), &mut || {
        let (ok, look) = pve_type2(&frr, &ns_pve, VM_B_MAC, BOX_TUN);
        seen = look;
        ok
    });
    println!("FRR: {seen}");
    let installed = format!("{VM_P_MAC} → {PVE_TUN}");
    wait("the box to install pve's VM MAC", Duration::from_secs(15), &mut || {
        log_lines(&log(), "remote MAC").last().is_some_and(|(_, l)| l.contains(&installed))
    });
    println!("box: {}", log_lines(&log(), "remote MAC").last().map(|l| l.1.clone()).unwrap_or_default());

    // 5. 4 MiB through the segment, every byte checked.
    let to: SocketAddr = format!("{VM_P}:5201").parse().unwrap();
    let (_, got) = transfer("4 MiB vmB → vmP", &ns_vmb, &ns_vmp, to, TRANSFER);
    if got.bytes != TRANSFER || got.wrong != 0 {
        fail(&format!("transfer: {} of {TRANSFER} bytes arrived, {} wrong", got.bytes, got.wrong));
    }
    // The segment's clamp (1370 − 40) is the ceiling.
    if got.mss > 1330 {
        fail(&format!("MSS {} above the segment's 1330", got.mss));
    }

    // 6. Up for at least four keepalive intervals past the hold time while
    // FRR's `neighbor VTEP bfd` never hears BFD: no drop on either side.
    let stable = Duration::from_secs(12);
    if let Some(rest) = stable.checked_sub(established_wall.elapsed()) {
        std::thread::sleep(rest);
    }
    let neighbor = frr.vtysh("bgpd", &format!("show bgp neighbors {BOX_TUN} json")).unwrap_or_default();
    let n: serde_json::Value = serde_json::from_str(&neighbor).unwrap_or_default();
    let n = &n[BOX_TUN];
    let bfd = frr.vtysh("bfdd", "show bfd peers json").unwrap_or_default();
    if n["bgpState"] != "Established" || n["connectionsEstablished"] != 1 || n["connectionsDropped"] != 0 {
        fail(&format!("the session did not stay up: {neighbor}"));
    }
    if bfd.contains("\"status\":\"up\"") {
        fail(&format!("a BFD session came up?\n{bfd}"));
    }
    if log_lines(&log(), "bgp: peer pve").len() != 1 {
        fail("the box's session went down and up again");
    }
    println!(
        "stayed Established {:.0} s with `neighbor VTEP bfd` and no BFD here (FRR BFD peers: {}; peer BFD: {})",
        established_wall.elapsed().as_secs_f64(),
        bfd.trim(),
        n["peerBfdInfo"]
    );

    // 7. bgpd freezes (SIGSTOP; a hung node, a dead tunnel): the box's
    // hold timer takes the session down and withdraws pve's VTEP and MAC.
    let withdrawn = "evpn: segment vnet100 (vni 100): VTEPs none";
    let learned_again = || log_lines(&log(), &vteps_line).len();
    let before = log().len();
    let frozen = Instant::now();
    frr.signal("bgpd", libc::SIGSTOP);
    wait("the box's hold timer to withdraw pve's VTEP", HOLD_TIME + Duration::from_secs(3), &mut || {
        log().get(before..).is_some_and(|new| new.contains(withdrawn))
    });
    let hold_took = frozen.elapsed();
    frr.signal("bgpd", libc::SIGCONT);
    let down = log().get(before..).and_then(|new| new.lines().find(|l| l.contains("bgp: peer pve")).map(str::to_string));
    println!("bgpd frozen: VTEP withdrawn after {:.0} ms ({})", hold_took.as_secs_f64() * 1e3, down.clone().unwrap_or_default());
    // Hold time 9 s from the last keepalive before the freeze (≤ 3 s earlier), plus a turn.
    if hold_took > HOLD_TIME + Duration::from_secs(1) || !down.is_some_and(|d| d.contains("code: 4")) {
        fail(&format!("not our hold timer, or late: {hold_took:?}"));
    }
    let thawed = Instant::now();
    let seen = learned_again();
    wait("the session and pve's VTEP after bgpd thawed", Duration::from_secs(20), &mut || learned_again() > seen);
    let Some(_) = until_ping(&ns_vmb, VM_P, Duration::from_secs(10)) else { fail("no traffic after bgpd thawed") };
    println!("bgpd thawed: VTEP learned again and traffic after {:.0} ms", thawed.elapsed().as_secs_f64() * 1e3);

    // 8. bgpd stops (SIGTERM: it sends Cease): the box withdraws at once,
    // and the VMs lose each other.
    let before = log().len();
    let stopped = Instant::now();
    frr.stop("bgpd");
    wait("the box to withdraw pve's VTEP", HOLD_TIME, &mut || log().get(before..).is_some_and(|new| new.contains(withdrawn)));
    let took = stopped.elapsed();
    let down = log().get(before..).and_then(|new| new.lines().find(|l| l.contains("bgp: peer pve")).map(str::to_string));
    println!("bgpd stopped: VTEP withdrawn after {:.0} ms ({})", took.as_secs_f64() * 1e3, down.unwrap_or_default());
    if ping(&ns_vmb, VM_P, 2, 56) != 0 {
        fail("vmB still reaches vmP with pve's VTEP withdrawn");
    }

    // 9. bgpd back: the session, the routes and the traffic return.
    let seen = log_lines(&log(), &format!("bgp: peer pve ({PVE_TUN}) Established")).len();
    // In the box log's time (seconds since its start).
    let restart_at = started.elapsed();
    frr.start("bgpd");
    let restarted = Instant::now();
    let Some(_) = until_ping(&ns_vmb, VM_P, Duration::from_secs(30)) else { fail("no traffic within 30 s of bgpd's restart") };
    let restored = restarted.elapsed();
    if ping(&ns_vmp, VM_B, 3, 56) < 2 {
        fail("vmP → vmB after the restart");
    }
    let ups = log_lines(&log(), &format!("bgp: peer pve ({PVE_TUN}) Established"));
    let up_again = ups.get(seen).map(|(t, _)| *t);
    let up_after = up_again.map_or(f64::NAN, |t| t.saturating_sub(restart_at).as_secs_f64() * 1e3);
    println!(
        "bgpd restarted: Established again after {up_after:.0} ms, traffic restored after {:.0} ms (FRR applies its \
         route-maps ~5 s after it starts: `bgp route-map delay-timer`)",
        restored.as_secs_f64() * 1e3
    );
    print_log("the box's BGP and EVPN log:", &log(), &["bgp: ", "evpn: "]);
    // The loop sleeps between its timers: no spinning while BGP runs.
    let cpu = cpu_seconds(box_pid);
    let alive = started.elapsed().as_secs_f64();
    println!("routerd-host CPU time: {cpu:.2} s in {alive:.1} s");
    if cpu > alive / 2.0 {
        fail(&format!("routerd-host used {cpu:.1} s of CPU in {alive:.1} s: a busy loop?"));
    }
    println!("whole test: {:.1} s", test_start.elapsed().as_secs_f64());
}

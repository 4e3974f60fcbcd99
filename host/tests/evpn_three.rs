//! Two routerd-host boxes and one FRR node configured as Proxmox VE
//! configures an SDN EVPN zone, all three iBGP peers of each other (a full
//! mesh, no route reflector), over a WireGuard full mesh, in network
//! namespaces this test creates (and always removes: Drop guards).
//!
//! ```text
//!  netns vm1            netns box1 (routerd-host)      netns pve                          netns vmP
//!  TAP 10.50.0.2 ◀fd▶  lan1 (segment vni 100)         vmbr100 ── vxlan100 (local         veth 10.50.0.1
//!                       tunnel 10.1.0.1 wan0 :51820    │          10.1.0.2, nolearning) ◀──▶
//!                       veth 10.77.X.1 ─────────────── ulbr 10.77.X.2 (underlay bridge)
//!  netns vm2            netns box2 (routerd-host)      │  wireguard-go 10.1.0.2/32 (:51821), two peers
//!  TAP 10.50.0.3 ◀fd▶  lan1 (segment vni 100)         │  FRR zebra, bgpd, bfdd (AS 65000)
//!                       tunnel 10.1.0.3 wan0 :51820    │
//!                       veth 10.77.X.3 ────────────────┘
//! ```
//!
//! Neither box has `remote_vteps`: its segment has `control = "evpn"`, and
//! its `[bgp]` peers are the other box and pve. pve runs exactly Proxmox's
//! EVPN statements with both boxes as the controller's peers, plus `timers
//! bgp 3 9`; the boxes propose a hold time of 9 s.
//!
//! Checked: every one of the three sessions is Established on both of its
//! ends (the boxes' `routerctl bgp summary --json`, FRR's `show bgp summary
//! json`); each box floods VNI 100 to exactly the other two VTEPs (its
//! summary's `flood_list`) and pve's vxlan100 holds an all-zero FDB entry
//! for each box (FRR installs them from the boxes' type 3); every pair of
//! the three VMs pings both ways. Then box2 stops (SIGTERM: it says
//! goodbye with a Cease/Administrative Shutdown to both peers before it
//! exits): box1 shrinks its flood list to pve alone and logs the Cease it
//! received (not a hold-timer expiry), FRR removes box2's FDB entry, the
//! box1–pve session stays up and vm1 and vmP still reach each other. Printed: start → all Established, → flood lists complete,
//! box2 stopped → withdrawn on box1 and on pve. Traffic is bounded pings.
//!
//! Needs root, /dev/net/tun, `ip`, `bridge`, `ping`, `wg`, `wireguard-go`
//! and FRR (`/usr/lib/frr/{zebra,bgpd,bfdd}`, `vtysh`); without them it
//! prints "skipped: …" and passes, unless `CI` is set, where it fails.
//! Every wait is bounded.

mod common;

use common::evpn::{
    box_config, box_key, flood_list, print_log, proxmox_vnet, pve_fdb, pve_floods_to, pve_wireguard, vm_nic, vm_on_bridge, wait_until,
    Neighbour, ASN, BOX_TUN as BOX1_TUN, HOLD, PVE_TUN, VM_P, VM_P_MAC,
};
use common::frr::{frr_prerequisites, log_lines, session_state, until_ping, Frr};
use common::{output_within, ping, routerctl, run, skip_or_fail, start_routerd_host, wait_exit, wg_keypair, Lab};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BOX2_TUN: &str = "10.1.0.3";
const VM_1: &str = "10.50.0.2";
const VM_2: &str = "10.50.0.3";
const VM_1_MAC: &str = "02:00:00:00:b1:01";
const VM_2_MAC: &str = "02:00:00:00:b2:01";
/// The hold time all three agree on (FRR's `timers bgp 3 9`, the boxes' 9).
const HOLD_TIME: Duration = Duration::from_secs(HOLD as u64);

/// `routerctl bgp summary --json` against a box's control socket: its
/// `bgp` object, or `Null` when it does not answer (quietly: this is polled).
fn bgp_summary(sock: &Path) -> Value {
    let port = format!("unix:{}", sock.display());
    let (status, out, _) =
        output_within(Command::new(routerctl()).args(["bgp", "summary", "--json", "--port", &port]), Duration::from_secs(10));
    if !status.success() {
        return Value::Null;
    }
    serde_json::from_str::<Value>(&out).map(|v| v["bgp"].clone()).unwrap_or_default()
}

/// The state of each of the box's sessions, by peer address.
fn peer_states(bgp: &Value) -> Vec<(String, String)> {
    let peers = bgp["peers"].as_array().cloned().unwrap_or_default();
    peers.iter().map(|p| (p["address"].as_str().unwrap_or("?").to_string(), p["state"].as_str().unwrap_or("?").to_string())).collect()
}

/// Whether every session the box has is Established (and there are `n`).
fn all_established(bgp: &Value, n: usize) -> bool {
    let states = peer_states(bgp);
    states.len() == n && states.iter().all(|(_, s)| s == "Established")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn two_boxes_and_frr_in_full_mesh_converge_their_flood_lists() {
    let install = "apt-get install --no-install-recommends iproute2 iputils-ping wireguard-tools wireguard-go frr";
    if let Some(reason) = frr_prerequisites(&["ip", "bridge", "ping", "wg", "wireguard-go", "vtysh"], install) {
        return skip_or_fail("routerd-host three-VTEP EVPN test", &reason);
    }
    // Built (if need be) before the clock starts and before the lab exists.
    let _ = routerctl();
    let test_start = Instant::now();
    let pid = std::process::id();
    let x = pid % 200 + 20;
    let ns = |s: &str| format!("re3{pid}{s}");
    let (ns_b1, ns_b2, ns_pve, ns_vm1, ns_vm2, ns_vmp) = (ns("b1"), ns("b2"), ns("p"), ns("v1"), ns("v2"), ns("vp"));
    // Interface names: at most 15 bytes, and the wireguard-go one unique on the machine.
    let ifn = |s: &str| format!("r3{s}{pid}");
    let (ul1, ul1_br, ul2, ul2_br) = (ifn("a"), ifn("c"), ifn("b"), ifn("d"));
    let (veth_vm, veth_br, wg_if) = (ifn("v"), ifn("t"), ifn("g"));
    let (tap1, tap2) = (ifn("l"), ifn("m"));
    let (wan1, pve_ul, wan2) = (format!("10.77.{x}.1"), format!("10.77.{x}.2"), format!("10.77.{x}.3"));
    let dir = std::env::temp_dir().join(format!("routerd-host-evpn3-{pid}"));
    let mut lab = Lab::new(dir.clone());
    for n in [&ns_b1, &ns_b2, &ns_pve, &ns_vm1, &ns_vm2, &ns_vmp] {
        lab.netns(n);
    }
    let pve = |args: &[&str]| run(&[&["ip", "-n", &ns_pve][..], args].concat()).unwrap();

    // The underlay: both boxes on a bridge in pve, so each reaches the two others.
    pve(&["link", "add", "ulbr", "type", "bridge"]);
    pve(&["addr", "add", &format!("{pve_ul}/24"), "dev", "ulbr"]);
    pve(&["link", "set", "ulbr", "up"]);
    for (n, dev, br_port, addr) in [(&ns_b1, &ul1, &ul1_br, &wan1), (&ns_b2, &ul2, &ul2_br, &wan2)] {
        run(&["ip", "-n", n, "link", "add", dev, "type", "veth", "peer", "name", br_port, "netns", &ns_pve]).unwrap();
        run(&["ip", "-n", n, "addr", "add", &format!("{addr}/24"), "dev", dev]).unwrap();
        run(&["ip", "-n", n, "link", "set", dev, "up"]).unwrap();
        pve(&["link", "set", br_port, "master", "ulbr", "up"]);
    }

    // Keys: pve's from wg(8), the boxes' from their key files.
    let (pve_key_file, pve_public) = wg_keypair(&dir, "pve.key");
    let ((key1, pub1), (key2, pub2)) = (box_key(&dir, "box1.key"), box_key(&dir, "box2.key"));

    // pve: WireGuard with both boxes as peers, the VNet, its VM, FRR.
    pve_wireguard(&mut lab, &ns_pve, &wg_if, &pve_key_file, &pub1, &wan1);
    let (ep1, ep2) = (format!("{wan1}:51820"), format!("{wan2}:51820"));
    let allowed2 = format!("{BOX2_TUN}/32");
    run(&["ip", "netns", "exec", &ns_pve, "wg", "set", &wg_if, "peer", &pub2, "allowed-ips", &allowed2, "endpoint", &ep2]).unwrap();
    pve(&["route", "add", &allowed2, "dev", &wg_if]);
    proxmox_vnet(&ns_pve);
    vm_on_bridge(&ns_pve, "vmbr100", &veth_br, &ns_vmp, &veth_vm, VM_P_MAC, VM_P);
    let frr = Frr::proxmox(&ns_pve, dir.join("frr"), ASN, PVE_TUN, &[BOX1_TUN, BOX2_TUN]);

    // The boxes, each with its control socket.
    let cfg1 = dir.join("box1.toml");
    let cfg2 = dir.join("box2.toml");
    let pve_ep = format!("{pve_ul}:51821");
    let pve_n = |public_key| Neighbour { name: "pve", public_key, endpoint: pve_ep.clone(), tunnel: PVE_TUN };
    fs::write(
        &cfg1,
        box_config(
            "evpn-box1",
            "lan1",
            BOX1_TUN,
            &wan1,
            &[pve_n(&pve_public), Neighbour { name: "box2", public_key: &pub2, endpoint: ep2.clone(), tunnel: BOX2_TUN }],
        ),
    )
    .unwrap();
    fs::write(
        &cfg2,
        box_config(
            "evpn-box2",
            "lan1",
            BOX2_TUN,
            &wan2,
            &[pve_n(&pve_public), Neighbour { name: "box1", public_key: &pub1, endpoint: ep1.clone(), tunnel: BOX1_TUN }],
        ),
    )
    .unwrap();
    let (sock1, sock2) = (dir.join("box1.sock"), dir.join("box2.sock"));
    let started = Instant::now();
    let host = |lab: &mut Lab, n: &str, name: &str, cfg: &Path, key: &Path, sock: &Path, tap: &str| {
        let port = format!("lan1={tap}");
        let args =
            ["--config", cfg.to_str().unwrap(), "--key-file", key.to_str().unwrap(), "--control", sock.to_str().unwrap(), "--port", &port];
        start_routerd_host(lab, n, name, &args)
    };
    let box1 = host(&mut lab, &ns_b1, "box1", &cfg1, &key1, &sock1, &tap1);
    let box2 = host(&mut lab, &ns_b2, "box2", &cfg2, &key2, &sock2, &tap2);
    let (log1, log2) = (box1.log.clone(), box2.log.clone());
    let frr_dir = frr.dir.clone();
    let fail = |what: &str| -> ! {
        box1.dump_status();
        box2.dump_status();
        panic!(
            "{what}\n--- box1 log\n{}\n--- box2 log\n{}\nFRR:{}",
            fs::read_to_string(&log1).unwrap_or_default(),
            fs::read_to_string(&log2).unwrap_or_default(),
            common::frr::frr_logs(&frr_dir)
        );
    };
    let wait = |what: &str, limit: Duration, ok: &mut dyn FnMut() -> bool| {
        wait_until(what, limit, Duration::from_millis(100), ok).unwrap_or_else(|e| fail(&e));
    };
    // Each TAP's kernel side is a VM's NIC.
    for (n, tap, vm_ns, mac, ip) in [(&ns_b1, &tap1, &ns_vm1, VM_1_MAC, VM_1), (&ns_b2, &tap2, &ns_vm2, VM_2_MAC, VM_2)] {
        wait("routerd-host to create its TAP", Duration::from_secs(10), &mut || run(&["ip", "-n", n, "link", "show", tap]).is_ok());
        run(&["ip", "-n", n, "link", "set", tap, "netns", vm_ns]).unwrap();
        vm_nic(vm_ns, tap, mac, ip);
    }

    // 1. Three sessions, each Established at both of its ends.
    let (mut s1, mut s2) = (Value::Null, Value::Null);
    wait("all three sessions Established on every side", Duration::from_secs(30), &mut || {
        s1 = bgp_summary(&sock1);
        s2 = bgp_summary(&sock2);
        all_established(&s1, 2)
            && all_established(&s2, 2)
            && session_state(&frr, BOX1_TUN) == "Established"
            && session_state(&frr, BOX2_TUN) == "Established"
    });
    let all_up = started.elapsed();
    println!("box1 sessions {:?}; box2 sessions {:?}", peer_states(&s1), peer_states(&s2));
    for (log, line) in [
        (&box1, format!("bgp: peer pve ({PVE_TUN}) Established")),
        (&box1, format!("bgp: peer box2 ({BOX2_TUN}) Established")),
        (&box2, format!("bgp: peer pve ({PVE_TUN}) Established")),
        (&box2, format!("bgp: peer box1 ({BOX1_TUN}) Established")),
    ] {
        wait(&format!("the log line `{line}`"), Duration::from_secs(5), &mut || !log_lines(&log.log(), &line).is_empty());
    }

    // 2. The flood lists, from the type 3 of the two others on every side.
    let want1 = vec![PVE_TUN.to_string(), BOX2_TUN.to_string()];
    let want2 = vec![BOX1_TUN.to_string(), PVE_TUN.to_string()];
    let mut fdb = String::new();
    wait("the flood lists of VNI 100 on all three", Duration::from_secs(15), &mut || {
        s1 = bgp_summary(&sock1);
        s2 = bgp_summary(&sock2);
        fdb = pve_fdb(&ns_pve);
        flood_list(&s1) == want1 && flood_list(&s2) == want2 && pve_floods_to(&fdb, BOX1_TUN) && pve_floods_to(&fdb, BOX2_TUN)
    });
    let flooded = started.elapsed();
    println!("box1 floods VNI 100 to {:?}; box2 to {:?}", flood_list(&s1), flood_list(&s2));
    println!("pve vxlan100 FDB:\n{}", fdb.trim_end());
    println!(
        "convergence: all sessions Established {:.0} ms after box1 started, flood lists complete after {:.0} ms",
        ms(all_up),
        ms(flooded)
    );

    // 3. Every pair of VMs, both ways (the first ping teaches the MACs).
    for (from, to, what) in [(&ns_vm1, VM_2, "vm1 → vm2"), (&ns_vm1, VM_P, "vm1 → vmP"), (&ns_vm2, VM_P, "vm2 → vmP")] {
        let Some(first) = until_ping(from, to, Duration::from_secs(10)) else { fail(&format!("{what}: no reply within 10 s")) };
        println!("first ping {what} answered after {:.0} ms", ms(first));
    }
    for (from, to, what) in [
        (&ns_vm1, VM_2, "vm1 → vm2"),
        (&ns_vm2, VM_1, "vm2 → vm1"),
        (&ns_vm1, VM_P, "vm1 → vmP"),
        (&ns_vmp, VM_1, "vmP → vm1"),
        (&ns_vm2, VM_P, "vm2 → vmP"),
        (&ns_vmp, VM_2, "vmP → vm2"),
    ] {
        let got = ping(from, to, 3, 56);
        if got < 2 {
            fail(&format!("{what}: {got}/3 replies"));
        }
    }
    common::ctl(&format!("unix:{}", sock1.display()), &["bgp", "summary"]);

    // 4. box2 stops: its Cease makes box1 and FRR withdraw its VTEP at
    // once (the wait still allows for the hold timer, 9 s, to say what
    // went wrong if the Cease never arrived); box1 and pve keep each other.
    let Some(child) = lab.children.iter_mut().find(|c| c.id() == box2.pid) else { fail("box2's process is not the lab's") };
    let stopped = Instant::now();
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs routerd-host).
    unsafe { libc::kill(box2.pid as libc::pid_t, libc::SIGTERM) };
    if wait_exit(child, Duration::from_secs(5)).is_none() {
        fail("box2 did not stop within 5 s of SIGTERM");
    }
    let (mut box1_gone, mut pve_gone) = (None, None);
    wait("box1 and pve to withdraw box2's VTEP", HOLD_TIME + Duration::from_secs(4), &mut || {
        if box1_gone.is_none() {
            s1 = bgp_summary(&sock1);
            if flood_list(&s1) == [PVE_TUN] {
                box1_gone = Some(stopped.elapsed());
            }
        }
        if pve_gone.is_none() {
            fdb = pve_fdb(&ns_pve);
            if !pve_floods_to(&fdb, BOX2_TUN) && pve_floods_to(&fdb, BOX1_TUN) {
                pve_gone = Some(stopped.elapsed());
            }
        }
        box1_gone.is_some() && pve_gone.is_some()
    });
    let (box1_gone, pve_gone) = (box1_gone.unwrap_or_default(), pve_gone.unwrap_or_default());
    println!(
        "box2 stopped: box1's flood list {:?} after {:.0} ms, pve's box2 FDB entry gone after {:.0} ms",
        flood_list(&s1),
        ms(box1_gone),
        ms(pve_gone)
    );
    let states = peer_states(&s1);
    println!("box1 sessions now {states:?}; FRR: box1 {}, box2 {}", session_state(&frr, BOX1_TUN), session_state(&frr, BOX2_TUN));
    if !states.iter().any(|(a, s)| a == PVE_TUN && s == "Established") || states.iter().any(|(a, s)| a == BOX2_TUN && s == "Established") {
        fail(&format!("box1's sessions after box2 stopped: {states:?}"));
    }
    if session_state(&frr, BOX1_TUN) != "Established" || session_state(&frr, BOX2_TUN) == "Established" {
        fail("FRR's sessions after box2 stopped");
    }
    let down = log_lines(&box1.log(), &format!("bgp: peer box2 ({BOX2_TUN}) down"));
    println!("box1: {}", down.last().map(|l| l.1.as_str()).unwrap_or("(no down line)"));
    if down.is_empty() {
        fail("box1 did not log box2's session going down");
    }
    // Cease (6) / Administrative Shutdown (2): box2's goodbye, not box1's
    // hold timer (NotificationSent code 4).
    if !down.iter().any(|(_, l)| l.contains("NotificationReceived { code: 6, subcode: 2 }")) {
        fail(&format!("box2 stopped without a Cease to box1: {down:?}"));
    }
    let a = ping(&ns_vm1, VM_P, 3, 56);
    let b = ping(&ns_vmp, VM_1, 3, 56);
    if a < 2 || b < 2 {
        fail(&format!("after box2 stopped: vm1 → vmP {a}/3, vmP → vm1 {b}/3"));
    }

    print_log("box1's BGP and EVPN log:", &box1.log(), &["bgp: ", "evpn: "]);
    println!(
        "figures: start → all Established {:.0} ms, → flood lists complete {:.0} ms; box2 stopped → withdrawn on box1 {:.0} ms, on pve {:.0} ms",
        ms(all_up),
        ms(flooded),
        ms(box1_gone),
        ms(pve_gone)
    );
    println!("whole test: {:.1} s", test_start.elapsed().as_secs_f64());
}

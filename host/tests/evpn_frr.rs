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

use common::frr::{log_lines, proxmox_evpn_config, session_state, type2_next_hops, until_ping, Frr, FRR};
use common::{ping, prerequisites, receive_pattern, run, send_pattern, skip_or_fail, wg_keypair, wireguard_go, Lab, WgGo};
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ASN: u32 = 65000;
const BOX_TUN: &str = "10.1.0.1";
const PVE_TUN: &str = "10.1.0.2";
const VM_P: &str = "10.50.0.1";
const VM_B: &str = "10.50.0.2";
const VM_P_MAC: &str = "02:00:00:00:aa:01";
const VM_B_MAC: &str = "02:00:00:00:bb:01";
/// The segment's MTU (CONFIG.md: 1500 − 80 − 50), on every VM NIC.
const SEGMENT_MTU: &str = "1370";
const TRANSFER: u64 = 4 << 20;
/// The hold time both sides agree on (FRR's `timers bgp 3 9`, ours 9).
const HOLD: Duration = Duration::from_secs(9);

fn box_config(pve_key: &str, pve_ep: &str, wan: &str) -> String {
    format!(
        r#"
[device]
name = "evpn-box"
side = "box"

[[ports]]
name = "lan1"
role = "lan"

[[ports]]
name = "wan0"
role = "wan"
address = "{wan}/24"

[[wireguard]]
name = "wg0"
listen_port = 51820
address = "{BOX_TUN}/24"
private_key = "device:wg0"

[[peers]]
name = "pve"
tunnel = "wg0"
public_key = "{pve_key}"
endpoint = "{pve_ep}"
persistent_keepalive = 25
allowed_ips = ["{PVE_TUN}/32"]

[[segments]]
name = "vnet100"
vni = 100
port = "lan1"
local_vtep = "{BOX_TUN}"
control = "evpn"

[bgp]
asn = {ASN}
hold_time = 9
peers = [{{ address = "{PVE_TUN}", name = "pve" }}]
"#
    )
}

#[test]
fn routerd_host_is_a_vtep_beside_frr_as_proxmox_configures_it() {
    let install = "apt-get install --no-install-recommends iproute2 iputils-ping wireguard-tools wireguard-go frr";
    if let Some(reason) = prerequisites(&["ip", "bridge", "ping", "wg", "wireguard-go", "vtysh"], install) {
        return skip_or_fail("routerd-host EVPN/FRR test", &reason);
    }
    for d in ["zebra", "bgpd", "bfdd"] {
        if !Path::new(&format!("{FRR}/{d}")).exists() {
            return skip_or_fail("routerd-host EVPN/FRR test", &format!("{FRR}/{d} missing ({install})"));
        }
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
    let bin = env!("CARGO_BIN_EXE_routerd-host");
    let key_file = dir.join("box.key");
    let box_public = run(&[bin, "pubkey", "--key-file", key_file.to_str().unwrap()]).unwrap().trim().to_string();

    // pve: WireGuard (tunnel address 10.1.0.2), the VNet, the VM, FRR.
    let box_ep = format!("{wan}:51820");
    wireguard_go(
        &mut lab,
        &WgGo {
            ns: &ns_pve,
            ifname: &wg_if,
            key_file: &pve_key_file,
            listen_port: 51821,
            peer_public: &box_public,
            allowed_ips: &format!("{BOX_TUN}/32"),
            endpoint: Some(&box_ep),
            address: &format!("{PVE_TUN}/32"),
            routes: &[&format!("{BOX_TUN}/32")],
        },
    );
    let pve = |args: &[&str]| run(&[&["ip", "-n", &ns_pve][..], args].concat()).unwrap();
    pve(&["link", "add", "vmbr100", "type", "bridge"]);
    pve(&["link", "add", "vxlan100", "type", "vxlan", "id", "100", "local", PVE_TUN, "dstport", "4789", "nolearning"]);
    pve(&["link", "set", "vxlan100", "mtu", SEGMENT_MTU, "master", "vmbr100", "up"]);
    run(&["ip", "netns", "exec", &ns_pve, "bridge", "link", "set", "dev", "vxlan100", "learning", "off"]).unwrap();
    run(&["ip", "-n", &ns_vmp, "link", "add", &veth_vm, "type", "veth", "peer", "name", &veth_br, "netns", &ns_pve]).unwrap();
    pve(&["link", "set", &veth_br, "mtu", SEGMENT_MTU, "master", "vmbr100", "up"]);
    pve(&["link", "set", "vmbr100", "up"]);
    for args in [
        vec!["link", "set", &veth_vm, "address", VM_P_MAC, "mtu", SEGMENT_MTU, "up"],
        vec!["addr", "add", &format!("{VM_P}/24"), "dev", &veth_vm],
    ] {
        run(&[&["ip", "-n", &ns_vmp][..], &args[..]].concat()).unwrap();
    }
    let mut frr = Frr::new(&ns_pve, dir.join("frr"), &proxmox_evpn_config(ASN, PVE_TUN, &[BOX_TUN]));
    frr.start("zebra");
    // zebra must know the VNI before bgpd asks for it.
    common::wait_for("zebra to see vxlan100", Duration::from_secs(10), || {
        frr.vtysh("zebra", "show interface vxlan100").unwrap_or_default().contains("VxLAN Id 100")
    });
    frr.start("bfdd");
    frr.start("bgpd");

    // The box.
    let cfg_file = dir.join("box.toml");
    fs::write(&cfg_file, box_config(&pve_public, &format!("{pve_ul}:51821"), &wan)).unwrap();
    let log_file = dir.join("box.log");
    let started = Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns_box, bin, "--config", cfg_file.to_str().unwrap(), "--key-file", key_file.to_str().unwrap()])
        .args(["--port", &format!("lan1={tap}")])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log_file).unwrap())
        .spawn()
        .expect("start routerd-host");
    lab.children.push(child);
    let box_pid = lab.children.last().map_or(0, |c| c.id()) as libc::pid_t;
    let log = || fs::read_to_string(&log_file).unwrap_or_default();
    let frr_dir = frr.dir.clone();
    let fail = |what: &str| -> ! {
        // SIGUSR1: the box prints its status into the log.
        // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the binary).
        unsafe { libc::kill(box_pid, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(300));
        panic!("{what}\n--- box log\n{}\nFRR:{}", log(), common::frr::frr_logs(&frr_dir));
    };
    let wait = |what: &str, limit: Duration, ok: &mut dyn FnMut() -> bool| -> Duration {
        let t0 = Instant::now();
        while !ok() {
            if t0.elapsed() >= limit {
                fail(&format!("timed out after {limit:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        t0.elapsed()
    };
    wait("routerd-host to create its TAP", Duration::from_secs(20), &mut || {
        run(&["ip", "-n", &ns_box, "link", "show", &tap]).is_ok() && log().contains("running")
    });
    // The kernel side of the TAP is vmB's NIC.
    run(&["ip", "-n", &ns_box, "link", "set", &tap, "netns", &ns_vmb]).unwrap();
    for args in
        [vec!["link", "set", &tap, "address", VM_B_MAC, "mtu", SEGMENT_MTU, "up"], vec!["addr", "add", &format!("{VM_B}/24"), "dev", &tap]]
    {
        run(&[&["ip", "-n", &ns_vmb][..], &args[..]].concat()).unwrap();
    }

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
    let Some(first) = until_ping(&ns_vmb, VM_P, Duration::from_secs(15)) else { fail("vmB never reached vmP") };
    println!("first ping vmB → vmP answered after {:.0} ms", first.as_secs_f64() * 1e3);
    let a = ping(&ns_vmb, VM_P, 5, 56);
    let b = ping(&ns_vmp, VM_B, 5, 56);
    // A full segment MTU: 1342 + 8 + 20 = 1370.
    let c = ping(&ns_vmb, VM_P, 3, 1342);
    if a < 4 || b < 4 || c < 2 {
        fail(&format!("pings: vmB → vmP {a}/5, vmP → vmB {b}/5, 1370-byte {c}/3"));
    }

    // 4. Type 2 both ways.
    let mut hops = Vec::new();
    let mut fdb = String::new();
    wait("FRR to take the box's VM MAC as a type 2 and install it", Duration::from_secs(15), &mut || {
        hops = type2_next_hops(&frr, VM_B_MAC);
        fdb = run(&["ip", "netns", "exec", &ns_pve, "bridge", "fdb", "show", "dev", "vxlan100"]).unwrap_or_default();
        hops.iter().any(|h| h == BOX_TUN)
            && fdb.contains(&format!("{VM_B_MAC} dst {BOX_TUN}"))
            && fdb.contains(&format!("00:00:00:00:00:00 dst {BOX_TUN}"))
    });
    println!("FRR: type 2 {VM_B_MAC} next hop {hops:?}; vxlan100 FDB:\n{}", fdb.trim_end());
    let installed = format!("{VM_P_MAC} → {PVE_TUN}");
    wait("the box to install pve's VM MAC", Duration::from_secs(15), &mut || {
        log_lines(&log(), "remote MAC").last().is_some_and(|(_, l)| l.contains(&installed))
    });
    println!("box: {}", log_lines(&log(), "remote MAC").last().map(|l| l.1.clone()).unwrap_or_default());

    // 5. 4 MiB through the segment, every byte checked.
    let to: SocketAddr = format!("{VM_P}:5201").parse().unwrap();
    let server = receive_pattern(&ns_vmp, to);
    std::thread::sleep(Duration::from_millis(200));
    let sent = send_pattern(&ns_vmb, to, TRANSFER).join().expect("sender");
    let got = server.join().expect("receiver");
    println!(
        "4 MiB vmB → vmP: {} bytes sent in {:.0} ms, {} received ({} wrong) in {:.0} ms, MSS {}",
        sent.bytes,
        sent.took.as_secs_f64() * 1e3,
        got.bytes,
        got.wrong,
        got.took.as_secs_f64() * 1e3,
        got.mss
    );
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
    wait("the box's hold timer to withdraw pve's VTEP", HOLD + Duration::from_secs(3), &mut || {
        log().get(before..).is_some_and(|new| new.contains(withdrawn))
    });
    let hold_took = frozen.elapsed();
    frr.signal("bgpd", libc::SIGCONT);
    let down = log().get(before..).and_then(|new| new.lines().find(|l| l.contains("bgp: peer pve")).map(str::to_string));
    println!("bgpd frozen: VTEP withdrawn after {:.0} ms ({})", hold_took.as_secs_f64() * 1e3, down.clone().unwrap_or_default());
    // Hold time 9 s from the last keepalive before the freeze (≤ 3 s earlier), plus a turn.
    if hold_took > HOLD + Duration::from_secs(1) || !down.is_some_and(|d| d.contains("code: 4")) {
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
    wait("the box to withdraw pve's VTEP", HOLD, &mut || log().get(before..).is_some_and(|new| new.contains(withdrawn)));
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
    println!("the box's BGP and EVPN log:");
    for (_, l) in log_lines(&log(), "bgp: ").into_iter().chain(log_lines(&log(), "evpn: ")) {
        println!("  {l}");
    }
    // The loop sleeps between its timers: no spinning while BGP runs.
    let stat = fs::read_to_string(format!("/proc/{box_pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = ticks as f64 / hz;
    let alive = started.elapsed().as_secs_f64();
    println!("routerd-host CPU time: {cpu:.2} s in {alive:.1} s");
    if cpu > alive / 2.0 {
        fail(&format!("routerd-host used {cpu:.1} s of CPU in {alive:.1} s: a busy loop?"));
    }
    println!("whole test: {:.1} s", test_start.elapsed().as_secs_f64());
}

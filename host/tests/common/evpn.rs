//! The EVPN namespace tests' common ground: the addresses they give the
//! box, pve and the VMs; the box's configuration text; pve's end of the
//! tunnel and its VNet as Proxmox VE makes it (a bridge with a
//! `nolearning` VXLAN port); a VM's NIC on the segment; and the looks at
//! FRR, the box and the segment those tests all take. Each piece is here
//! because at least two of evpn_frr.rs, evpn_three.rs, evpn_hostile.rs
//! and image_evpn.rs would otherwise write it again.

use super::frr::{type2_next_hops, until_ping, Frr};
use super::{ping, receive_pattern, run, send_pattern, wireguard_go, Lab, Received, Sent, WgGo};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The AS every box and pve share (iBGP, as in a Proxmox EVPN controller).
pub const ASN: u32 = 65000;
/// The VNI of the one segment (`vnet100`; pve's `vxlan100`).
pub const VNI: u32 = 100;
/// The hold time every box proposes (FRR's `timers bgp 3 9` agrees).
pub const HOLD: u16 = 9;
/// The box's tunnel address (its router id and VTEP); in evpn_three.rs, box1's.
pub const BOX_TUN: &str = "10.1.0.1";
/// pve's tunnel address (its router id and VTEP), or the hostile speaker's.
pub const PVE_TUN: &str = "10.1.0.2";
/// The VM behind pve's bridge, and the one behind the box's bridge-only port.
pub const VM_P: &str = "10.50.0.1";
pub const VM_B: &str = "10.50.0.2";
pub const VM_P_MAC: &str = "02:00:00:00:aa:01";
pub const VM_B_MAC: &str = "02:00:00:00:bb:01";
/// The segment's MTU (CONFIG.md: 1500 − 80 − 50), on every VM NIC.
pub const SEGMENT_MTU: &str = "1370";

/// One WireGuard peer of a box that is also its BGP peer: the same name in
/// both lists.
pub struct Neighbour<'a> {
    pub name: &'a str,
    pub public_key: &'a str,
    pub endpoint: String,
    pub tunnel: &'a str,
}

/// A box's file: device `name`, the LAN port `lan` carrying segment vnet100
/// (VNI 100, `control = "evpn"`, no `remote_vteps`), WAN address `wan`/24,
/// tunnel wg0 with address `tun`/24 on port 51820, and each neighbour as a
/// WireGuard peer (its tunnel address as a /32) and an iBGP peer (AS 65000,
/// hold time 9).
pub fn box_config(name: &str, lan: &str, tun: &str, wan: &str, neighbours: &[Neighbour<'_>]) -> String {
    let mut peers = String::new();
    let mut bgp_peers = Vec::new();
    for n in neighbours {
        peers += &format!(
            r#"
[[peers]]
name = "{}"
tunnel = "wg0"
public_key = "{}"
endpoint = "{}"
persistent_keepalive = 25
allowed_ips = ["{}/32"]
"#,
            n.name, n.public_key, n.endpoint, n.tunnel
        );
        bgp_peers.push(format!(r#"{{ address = "{}", name = "{}" }}"#, n.tunnel, n.name));
    }
    let bgp_peers = bgp_peers.join(", ");
    format!(
        r#"
[device]
name = "{name}"
side = "box"

[[ports]]
name = "{lan}"
role = "lan"

[[ports]]
name = "wan0"
role = "wan"
address = "{wan}/24"

[[wireguard]]
name = "wg0"
listen_port = 51820
address = "{tun}/24"
private_key = "device:wg0"
{peers}
[[segments]]
name = "vnet100"
vni = {VNI}
port = "{lan}"
local_vtep = "{tun}"
control = "evpn"

[bgp]
asn = {ASN}
hold_time = {HOLD}
peers = [{bgp_peers}]
"#
    )
}

/// A routerd-host key file `name` in `dir` (made by `routerd-host pubkey`
/// if missing) and its public key.
pub fn box_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let public = run(&[env!("CARGO_BIN_EXE_routerd-host"), "pubkey", "--key-file", file.to_str().unwrap()]).unwrap().trim().to_string();
    (file, public)
}

/// pve's end of the tunnel: `wireguard-go` as `ifname` in `ns` (a child of
/// `lab`) with the tunnel address [`PVE_TUN`] on port 51821, the box
/// ([`BOX_TUN`], `box_public`, at `box_wan`:51820) its one peer.
pub fn pve_wireguard(lab: &mut Lab, ns: &str, ifname: &str, key_file: &Path, box_public: &str, box_wan: &str) {
    let box_ep = format!("{box_wan}:51820");
    wireguard_go(
        lab,
        &WgGo {
            ns,
            ifname,
            key_file,
            listen_port: 51821,
            peer_public: box_public,
            allowed_ips: &format!("{BOX_TUN}/32"),
            endpoint: Some(&box_ep),
            address: &format!("{PVE_TUN}/32"),
            routes: &[&format!("{BOX_TUN}/32")],
        },
    );
}

/// pve's VNet as Proxmox VE makes it in `ns`: bridge vmbr100 with the VXLAN
/// port vxlan100 (VNI 100 from [`PVE_TUN`], port 4789, `nolearning`, and
/// learning off on the bridge port, so only FRR fills its FDB).
pub fn proxmox_vnet(ns: &str) {
    let pve = |args: &[&str]| run(&[&["ip", "-n", ns][..], args].concat()).unwrap();
    pve(&["link", "add", "vmbr100", "type", "bridge"]);
    pve(&["link", "add", "vxlan100", "type", "vxlan", "id", "100", "local", PVE_TUN, "dstport", "4789", "nolearning"]);
    pve(&["link", "set", "vxlan100", "mtu", SEGMENT_MTU, "master", "vmbr100", "up"]);
    run(&["ip", "netns", "exec", ns, "bridge", "link", "set", "dev", "vxlan100", "learning", "off"]).unwrap();
    pve(&["link", "set", "vmbr100", "up"]);
}

/// A VM behind `bridge` in `ns_bridge`: a veth pair, `vm_dev` in `ns_vm`
/// (see [`vm_nic`]) and `bridge_dev` a port of the bridge, both at the
/// segment's MTU.
pub fn vm_on_bridge(ns_bridge: &str, bridge: &str, bridge_dev: &str, ns_vm: &str, vm_dev: &str, mac: &str, addr: &str) {
    run(&["ip", "-n", ns_vm, "link", "add", vm_dev, "type", "veth", "peer", "name", bridge_dev, "netns", ns_bridge]).unwrap();
    run(&["ip", "-n", ns_bridge, "link", "set", bridge_dev, "mtu", SEGMENT_MTU, "master", bridge, "up"]).unwrap();
    vm_nic(ns_vm, vm_dev, mac, addr);
}

/// A VM's NIC `dev` in `ns`: its MAC, the segment's MTU, `addr`/24, up.
pub fn vm_nic(ns: &str, dev: &str, mac: &str, addr: &str) {
    run(&["ip", "-n", ns, "link", "set", dev, "address", mac, "mtu", SEGMENT_MTU, "up"]).unwrap();
    run(&["ip", "-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]).unwrap();
}

/// VNI 100's flood list in a box's `bgp` summary (`routerctl bgp summary
/// --json`), sorted.
pub fn flood_list(bgp: &serde_json::Value) -> Vec<String> {
    let vnis = bgp["vnis"].as_array().cloned().unwrap_or_default();
    let Some(v) = vnis.iter().find(|v| v["vni"] == VNI) else { return Vec::new() };
    let mut list: Vec<String> = v["flood_list"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect();
    list.sort();
    list
}

/// pve's vxlan100 FDB.
pub fn pve_fdb(ns: &str) -> String {
    run(&["ip", "netns", "exec", ns, "bridge", "fdb", "show", "dev", "vxlan100"]).unwrap_or_default()
}

/// Whether pve floods VNI 100 to `vtep` (the all-zero entry FRR installs
/// from its type 3).
pub fn pve_floods_to(fdb: &str, vtep: &str) -> bool {
    fdb.contains(&format!("00:00:00:00:00:00 dst {vtep} "))
}

/// One look at pve for `mac` behind `vtep`: whether FRR holds it as a type 2
/// with that next hop and pve's vxlan100 sends both `mac` and its BUM
/// traffic there, and what was seen (for the test's log).
pub fn pve_type2(frr: &Frr, ns: &str, mac: &str, vtep: &str) -> (bool, String) {
    let hops = type2_next_hops(frr, mac);
    let fdb = pve_fdb(ns);
    let ok = hops.iter().any(|h| h == vtep) && fdb.contains(&format!("{mac} dst {vtep}")) && pve_floods_to(&fdb, vtep);
    (ok, format!("type 2 {mac} next hop {hops:?}; vxlan100 FDB:\n{}", fdb.trim_end()))
}

/// vmB (in `ns_vmb`) pings vmP (in `ns_vmp`) until the first answer, at
/// most `limit` (that ping also teaches both sides the MACs), then five
/// pings each way and three of a full segment MTU: what failed, if anything.
pub fn segment_pings(ns_vmb: &str, ns_vmp: &str, limit: Duration) -> Result<(), String> {
    let Some(first) = until_ping(ns_vmb, VM_P, limit) else { return Err("vmB never reached vmP".into()) };
    println!("first ping vmB → vmP answered after {:.0} ms", first.as_secs_f64() * 1e3);
    let a = ping(ns_vmb, VM_P, 5, 56);
    let b = ping(ns_vmp, VM_B, 5, 56);
    // A full segment MTU: 1342 + 8 + 20 = 1370.
    let c = ping(ns_vmb, VM_P, 3, 1342);
    if a < 4 || b < 4 || c < 2 {
        return Err(format!("pings: vmB → vmP {a}/5, vmP → vmB {b}/5, 1370-byte {c}/3"));
    }
    Ok(())
}

/// `total` bytes of the checked pattern from `ns_from` to `to` (a listener
/// in `ns_to`), printed as `<what>: … sent in …, … received (… wrong) in …,
/// MSS …`.
pub fn transfer(what: &str, ns_from: &str, ns_to: &str, to: SocketAddr, total: u64) -> (Sent, Received) {
    let server = receive_pattern(ns_to, to);
    std::thread::sleep(Duration::from_millis(200));
    let sent = send_pattern(ns_from, to, total).join().expect("sender");
    let got = server.join().expect("receiver");
    println!(
        "{what}: {} bytes sent in {:.0} ms, {} received ({} wrong) in {:.0} ms, MSS {}",
        sent.bytes,
        sent.took.as_secs_f64() * 1e3,
        got.bytes,
        got.wrong,
        got.took.as_secs_f64() * 1e3,
        got.mss
    );
    (sent, got)
}

/// Polls `ok` every `every` until it holds: how long that took, or past
/// `limit` what it waited for (the test fails with it and its own logs).
pub fn wait_until(what: &str, limit: Duration, every: Duration, ok: &mut dyn FnMut() -> bool) -> Result<Duration, String> {
    let t0 = Instant::now();
    while !ok() {
        if t0.elapsed() >= limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(every);
    }
    Ok(t0.elapsed())
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// Prints `title`, then the lines of the box's `log` holding each of
/// `what`, one kind after the other.
pub fn print_log(title: &str, log: &str, what: &[&str]) {
    println!("{title}");
    for w in what {
        for (_, l) in super::frr::log_lines(log, w) {
            println!("  {l}");
        }
    }
}

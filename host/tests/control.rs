//! routerd-host's control socket driven by the real `routerctl`, in
//! network namespaces this test creates (and always removes: a Drop guard).
//!
//! ```text
//!  netns L (LAN host)          netns R (routerd-host)                      netns W (WAN side)
//!  TAP 10.20.0.10/24  ◀─fd─▶  lan0 (TAP)  routerd-host  wan0 (UDP :51820)
//!                              --control DIR/ctl.sock   veth 10.66.X.1 ── veth 10.66.X.2
//!                              --wan-tun rdct…  (10.20.0.51/32 dev rdct…)
//! ```
//!
//! routerd-host is the cloud box; no WireGuard peer answers (the tunnel is
//! not what is tested here, see `secondary_ip.rs`). 10.20.0.51 is captured
//! with provider-secondary-ip, so routerd-host installs its delivery route
//! into the WAN TUN and must never let Linux hold it.
//!
//! Checked through `routerctl --port unix:DIR/ctl.sock`: `status --json`
//! (device, ports, the `host` report with the delivery route), the key
//! (`key show` is the key printed at start; `key generate` replaces it and
//! the key file follows), `apply` of a file with one more
//! provider-secondary-ip claim (its route appears in R, and goes again when
//! the first file is applied), `claims add`/`remove` of a proxy-ARP claim
//! (ARP for it answered, then silent, on L's link), a refused apply (a port
//! not opened at start) that leaves the configuration as it was, `doctor
//! hybrid` on ip_forward and on an address put on a Linux interface by hand,
//! `logs` showing routerd-host's lines, `reboot` refused, a second
//! routerd-host on the same socket refused, and the socket file gone after
//! SIGTERM. Needs root, /dev/net/tun, `ip`; without them the test
//! prints "skipped: …" and passes, unless `CI` is set, where it fails.
//! Every wait is bounded.

mod common;

use common::{
    arp_ask, ctl, doctor, output_within, prerequisites, run, skip_or_fail, start_routerd_host, stop, sysctl, verdict, veth, wait_exit,
    wait_for, Lab,
};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 10);
/// Captured with provider-secondary-ip in every file applied here.
const SECONDARY: &str = "10.20.0.51";
/// The provider-secondary-ip claim the second file adds.
const SECOND_SECONDARY: &str = "10.20.0.52";
/// Added and removed with `routerctl claims` (proxy-ARP on lan0).
const PROXIED: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 60);

/// The box's file: LAN port `lan`, the WAN at `wan`, and `extra` claims.
fn config(lan: &str, wan: &str, extra: &str) -> String {
    format!(
        r#"[device]
name = "control-cloud"
side = "cloud"

[[ports]]
name = "{lan}"
role = "lan"
address = "10.20.0.4/24"

[[ports]]
name = "wan0"
address = "{wan}/24"
role = "wan"

[[wireguard]]
name = "wg0"
private_key = "device:wg0"
listen_port = 51820

[[peers]]
name = "onprem"
tunnel = "wg0"
public_key = "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w="
endpoint = "192.0.2.100:51820"
persistent_keepalive = 25
allowed_ips = ["10.20.0.51/32", "10.20.0.52/32", "10.20.0.60/32"]

[[claims]]
address = "{SECONDARY}/32"
owner = "onprem"
capture = {{ method = "provider-secondary-ip", port = "wan0", configure_os_address = false }}
delivery = {{ tunnel = "wg0", peer = "onprem" }}
{extra}"#
    )
}

fn second_claim() -> String {
    format!(
        r#"
[[claims]]
address = "{SECOND_SECONDARY}/32"
owner = "onprem"
capture = {{ method = "provider-secondary-ip", port = "wan0", configure_os_address = false }}
delivery = {{ tunnel = "wg0", peer = "onprem" }}
"#
    )
}

/// Whether R's main table routes `addr/32` into `tun`.
fn routed_into(ns: &str, addr: &str, tun: &str) -> bool {
    run(&["ip", "-n", ns, "route", "show", &format!("{addr}/32")]).unwrap_or_default().contains(&format!("dev {tun}"))
}

#[test]
fn routerctl_drives_routerd_host_over_its_control_socket() {
    if let Some(reason) = prerequisites(&["ip"], "apt-get install --no-install-recommends iproute2") {
        return skip_or_fail("routerd-host control socket test", &reason);
    }
    let pid = std::process::id();
    let x = pid % 200 + 20;
    let (ns_r, ns_l, ns_w) = (format!("rdc{pid}r"), format!("rdc{pid}l"), format!("rdc{pid}w"));
    let (tap, tun, veth_r) = (format!("rdcl{pid}"), format!("rdct{pid}"), format!("rdcr{pid}"));
    let wan = format!("10.66.{x}.1");
    let mut lab = Lab::new(std::env::temp_dir().join(format!("routerd-host-control-{pid}")));
    for ns in [&ns_r, &ns_l, &ns_w] {
        lab.netns(ns);
    }
    veth(&ns_r, &veth_r, &format!("{wan}/24"), &ns_w, &format!("rdcw{pid}"), &format!("10.66.{x}.2/24"));
    let dir = lab.dir.clone();
    let file = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let first = file("first.toml", config("lan0", &wan, ""));
    let second = file("second.toml", config("lan0", &wan, &second_claim()));
    let renamed = file("renamed.toml", config("lan9", &wan, ""));
    let (sock, key_file) = (dir.join("ctl.sock"), dir.join("wg.key"));
    let (sock_s, key_s) = (sock.to_str().unwrap().to_string(), key_file.to_str().unwrap().to_string());
    let port = format!("unix:{sock_s}");

    // ip_forward stays 0 in R until doctor has seen it fail.
    let lan_map = format!("lan0={tap}");
    let host_args =
        ["--config", &first, "--key-file", &key_s, "--control", &sock_s, "--wan-tun", &tun, "--check-every", "1", "--port", &lan_map];
    let host = start_routerd_host(&mut lab, &ns_r, "cloud", &host_args);
    let meta = std::fs::symlink_metadata(&sock).expect("the control socket exists");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600, "the socket is 0600");
    run(&["ip", "-n", &ns_r, "link", "set", &tap, "netns", &ns_l]).unwrap();
    run(&["ip", "-n", &ns_l, "addr", "add", &format!("{LAN_HOST}/24"), "dev", &tap]).unwrap();
    run(&["ip", "-n", &ns_l, "link", "set", &tap, "up"]).unwrap();

    // 1. status --json, once the first Linux check is in.
    let mut st = serde_json::Value::Null;
    wait_for("a status with the first Linux check", Duration::from_secs(10), || {
        st = ctl(&port, &["status", "--json"]).json()["status"].clone();
        st["host"]["checks"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(st["device"], "control-cloud");
    assert_eq!(st["software"], "routerd-host");
    let ports: Vec<&str> = st["ports"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(ports, ["lan0", "wan0"]);
    let lan_mac = st["ports"][0]["mac"].as_str().unwrap().to_string();
    assert_eq!(st["host"]["wan_tun"], tun.as_str());
    let routes = st["host"]["routes"].as_array().unwrap().clone();
    assert_eq!(routes.len(), 1, "one delivery route per provider-secondary-ip claim: {routes:?}");
    assert_eq!(routes[0]["address"], SECONDARY);
    assert_eq!(routes[0]["ok"], true);
    assert!(matches!(routes[0]["detail"].as_str(), Some("installed" | "present")), "{routes:?}");
    assert!(routed_into(&ns_r, SECONDARY, &tun), "routerd-host installed {SECONDARY}/32 dev {tun}");

    // 2. doctor: forwarding off fails, on passes after the next check.
    let doc = doctor(&port);
    assert_eq!(verdict(&doc, "linux.forward", "host"), "fail", "{doc:#}");
    assert_eq!(verdict(&doc, "linux.route", SECONDARY), "pass", "{doc:#}");
    assert_eq!(verdict(&doc, "linux.address", SECONDARY), "pass", "{doc:#}");
    assert_eq!(doc["result"], "fail");
    sysctl(&ns_r, "net.ipv4.ip_forward", "1");
    wait_for("doctor to see ip_forward = 1", Duration::from_secs(5), || verdict(&doctor(&port), "linux.forward", "host") == "pass");

    // 3. Keys: what `key show` says is what routerd-host printed; a new one
    // is written to the key file.
    let printed = host.printed_key();
    assert_eq!(printed.len(), 44, "routerd-host prints `public key …`");
    let keys = ctl(&port, &["key", "show", "--json"]).json();
    assert_eq!(keys["keys"][0]["slot"], "wg0");
    assert_eq!(keys["keys"][0]["public_key"], printed.as_str());
    let made = ctl(&port, &["key", "generate", "wg0", "--yes", "--json"]);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let new_key = made.json()["keys"][0]["public_key"].as_str().unwrap().to_string();
    assert_ne!(new_key, printed, "key generate makes a new key");
    let on_disk = run(&[env!("CARGO_BIN_EXE_routerd-host"), "pubkey", "--key-file", &key_s]).unwrap();
    assert_eq!(on_disk.trim(), new_key, "the key file holds the new key");
    assert_eq!(ctl(&port, &["status", "--json"]).json()["status"]["tunnel"]["public_key"], new_key.as_str());

    // 4. Apply a second claim while `routerctl logs` follows the box: its
    // route appears, and the log line saying so reaches the session.
    // (routerctl prints what arrived every 5 s, so the output is read when
    // it is done.) Lines flow from the moment the session opened: the claim
    // comes, goes and comes again, the second time well after that.
    let mut logs = Command::new(common::routerctl())
        .args(["logs", "--for", "5", "--port", &port])
        .stdout(std::fs::File::create(dir.join("logs.out")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("routerctl logs");
    for (file, present) in [(&second, true), (&first, false), (&second, true)] {
        std::thread::sleep(Duration::from_millis(500));
        let out = ctl(&port, &["apply", file, "--yes"]);
        assert_eq!(out.code, Some(0), "apply of {file}: {}", out.stderr);
        wait_for("the second delivery route to come or go", Duration::from_secs(5), || {
            routed_into(&ns_r, SECOND_SECONDARY, &tun) == present
        });
    }
    let status = wait_exit(&mut logs, Duration::from_secs(15)).unwrap_or_else(|| {
        let _ = logs.kill();
        panic!("routerctl logs --for 5 still runs after 15 s");
    });
    let text = std::fs::read_to_string(dir.join("logs.out")).unwrap_or_default();
    let installed = format!("route {SECOND_SECONDARY}/32 dev {tun} installed");
    assert!(status.success() && text.contains(&installed), "routerctl logs ({status}) shows the box's lines:\n{text}");
    let st = ctl(&port, &["status", "--json"]).json()["status"].clone();
    let held: Vec<&str> =
        st["host"]["routes"].as_array().unwrap().iter().filter(|r| r["ok"] == true).filter_map(|r| r["address"].as_str()).collect();
    assert!(held.contains(&SECONDARY) && held.contains(&SECOND_SECONDARY), "{st:#}");
    // The first file again: the second route goes, the first stays.
    assert_eq!(ctl(&port, &["apply", &first, "--yes"]).code, Some(0));
    wait_for("the second route to be removed", Duration::from_secs(5), || !routed_into(&ns_r, SECOND_SECONDARY, &tun));
    assert!(routed_into(&ns_r, SECONDARY, &tun));
    assert!(host.log().contains(&format!("route {SECOND_SECONDARY}/32 removed (its claim is gone)")), "{}", host.log());

    // 5. A proxy-ARP claim added and removed: ARP for it answered, then not.
    assert_eq!(arp_ask(&ns_l, &tap, LAN_HOST, PROXIED, Duration::from_millis(700)), None, "nobody answers before the claim");
    let out = ctl(&port, &["claims", "add", &PROXIED.to_string(), "--owner", "onprem"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let who = arp_ask(&ns_l, &tap, LAN_HOST, PROXIED, Duration::from_secs(3)).expect("routerd-host answers ARP for the added claim");
    assert_eq!(common::mac_text(who), lan_mac, "with its lan0 MAC");
    let out = ctl(&port, &["claims", "remove", &PROXIED.to_string()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(arp_ask(&ns_l, &tap, LAN_HOST, PROXIED, Duration::from_secs(1)), None, "silent after claims remove");

    // 6. A port that was not opened at start: refused, nothing changes.
    let before = ctl(&port, &["config", "get"]);
    assert_eq!(before.code, Some(0));
    let out = ctl(&port, &["apply", &renamed, "--yes"]);
    assert_eq!(out.code, Some(1), "a refused apply exits 1");
    assert!(out.stderr.contains("ports[0]") && out.stderr.contains("lan9"), "the refusal names the path: {}", out.stderr);
    let after = ctl(&port, &["config", "get"]);
    assert_eq!(after.stdout, before.stdout, "the running configuration is unchanged");
    assert!(after.stdout.contains("name = \"lan0\"") && !after.stdout.contains("lan9"));

    // 7. A captured address put on an interface by hand: removed, doctor
    // warns (for 15 minutes after the removal), status reports it.
    run(&["ip", "-n", &ns_r, "addr", "add", &format!("{SECONDARY}/32"), "dev", &veth_r]).unwrap();
    let mut warned = None;
    wait_for("doctor to report the removed address", Duration::from_secs(8), || {
        let doc = doctor(&port);
        let w = verdict(&doc, "linux.address", SECONDARY) == "warn";
        if w {
            warned = Some(doc);
        }
        w
    });
    let doc = warned.unwrap();
    let check = common::checks(&doc).into_iter().find(|c| c["id"] == "linux.address").unwrap();
    let reason = check["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("Linux held {SECONDARY} on {veth_r} ")) && reason.contains("routerd-host removed it"), "{check:#}");
    // Still said a few checks later (the address is gone by then).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(verdict(&doctor(&port), "linux.address", SECONDARY), "warn");
    assert!(!run(&["ip", "-n", &ns_r, "-4", "addr", "show", "dev", &veth_r]).unwrap().contains(SECONDARY), "the address is gone");
    let text = ctl(&port, &["status"]).stdout;
    assert!(text.contains("linux (routerd-host)"), "{text}");
    assert!(
        text.contains(&format!("captured addresses removed since start: 1 (last: removed captured address {SECONDARY}/32 from {veth_r}")),
        "{text}"
    );

    // 8. No reboot from a socket.
    let out = ctl(&port, &["reboot", "--yes"]);
    assert_eq!(out.code, Some(1), "reboot is refused");
    assert!(out.stderr.contains("restart the service"), "{}", out.stderr);

    // 9. A second routerd-host on the same socket (in W: its own TAP, TUN
    // and UDP port) refuses to start; the first keeps serving.
    let other_tap = format!("lan0=rdcx{pid}");
    let mut second_host = Command::new("ip");
    second_host.args(["netns", "exec", &ns_w, env!("CARGO_BIN_EXE_routerd-host"), "--config", &first, "--control", &sock_s]);
    second_host.args(["--wan-tun", &format!("rdcy{pid}"), "--port", &other_tap]);
    let (status, _, stderr) = output_within(&mut second_host, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "a second routerd-host on a live socket exits 1: {stderr}");
    assert!(stderr.contains("another process serves this socket"), "{stderr}");
    assert_eq!(ctl(&port, &["status", "--json"]).json()["status"]["device"], "control-cloud", "the first still answers");

    // 10. SIGTERM: a clean stop, and the socket file is gone.
    let mut router = lab.children.remove(0);
    let status = stop(&mut router);
    assert!(status.success(), "exit status {status}\n{}", host.log());
    assert!(std::fs::symlink_metadata(&sock).is_err(), "the socket file is removed on stop");
}

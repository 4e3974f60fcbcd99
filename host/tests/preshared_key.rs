//! Preshared keys from the box's key slots, against `wireguard-go`: the
//! key is made on the box (routerd-host, the same node as the image), shown
//! once with `routerctl key psk show`, given to wireguard-go with wg(8), and
//! carries traffic whichever side starts the handshake; a different key is
//! refused until the right one is imported with `routerctl key psk import`.
//! In network namespaces this test creates (and always removes: a Drop guard).
//!
//! ```text
//!  netns L (LAN host)          netns R (routerd-host)                    netns P (peer)
//!  TAP 10.20.0.10/24  ◀─fd─▶  lan0 (TAP)  routerd-host  wan0 (UDP :51820)
//!                              --control, --key-file   veth 10.78.X.1 ─── veth 10.78.X.2
//!                                                                         wireguard-go 10.20.0.50/32
//! ```
//!
//! The claims are seed 000's: 10.20.0.50 lives with the peer (captured by
//! proxy-ARP on lan0), 10.20.0.10 on the LAN (delivered locally). Who can
//! start a handshake is fixed by who knows the other's endpoint: only
//! routerd-host (wireguard-go has no endpoint for it), or only wireguard-go
//! (routerd-host's peer has no endpoint); neither sends keepalives, so the
//! first packet starts it.
//!
//! Checked:
//! - routerd-host initiates: the slot is made at start, written beside the
//!   key file (0600, `wg genpsk` format) and listed by `key show` without
//!   its key; `key psk show` prints it (and refuses the private key's slot);
//!   ping both ways with it; after a restart the same key is read back and
//!   traffic flows again.
//! - wireguard-go initiates: ping both ways, the peer first.
//! - a different key (`wg genpsk` on the peer's side): no session, no
//!   reply, and routerd-host counts `handshake_decrypt` (the response it
//!   got does not authenticate) — also when wireguard-go initiates; then
//!   `key psk import --from-file` puts the peer's key in the slot, the
//!   tunnel restarts with it and the key file beside `--key-file` follows,
//!   and ping crosses both ways.
//!
//! Needs root, /dev/net/tun, `ip`, `ping`, `wg`, `wireguard-go`; without them
//! the test prints "skipped: …" and passes, unless `CI` is set, where it
//! fails. Every wait is bounded; nothing asserts on timing.

mod common;

use common::{ctl, ping, prerequisites, run, skip_or_fail, start_routerd_host, stop, veth, wg_keypair, wireguard_go, HostRun, Lab, WgGo};
use serde_json::Value;
use std::path::PathBuf;

const SLOT: &str = "cloud-psk";

/// The on-prem box's file: the peer `peer_key` at `endpoint` (none: it
/// waits to be dialled), its preshared key in SLOT. No keepalive: a
/// handshake starts with the first packet, not before the peer is up.
fn config(peer_key: &str, endpoint: Option<&str>, wan: &str) -> String {
    let dial = match endpoint {
        Some(e) => format!("endpoint = \"{e}\"\n"),
        None => String::new(),
    };
    format!(
        r#"
[device]
name = "psk-onprem"
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
{dial}allowed_ips = ["10.20.0.50/32"]
preshared_key = "device:{SLOT}"

[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}

[[claims]]
address = "10.20.0.10/32"
owner = "onprem"
capture = {{ method = "provider-secondary-ip", port = "wan0" }}
delivery = {{ tunnel = "wg0", peer = "onprem" }}
"#
    )
}

/// Which side knows the other's endpoint, and so starts the handshake.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Initiator {
    RouterdHost,
    WireguardGo,
}

/// One lab: routerd-host in R with its LAN host in L, wireguard-go in P.
struct PskLab {
    lab: Lab,
    ns_r: String,
    ns_l: String,
    ns_p: String,
    wg_if: String,
    tap: String,
    port: String,
    host_args: Vec<String>,
    host: HostRun,
    key_file: PathBuf,
    router_public: String,
    router_ep: String,
}

impl PskLab {
    /// Starts everything but wireguard-go; `None` when the test is skipped.
    fn start(n: u32, initiator: Initiator) -> Option<PskLab> {
        let install = "apt-get install --no-install-recommends iproute2 iputils-ping wireguard-tools wireguard-go";
        if let Some(reason) = prerequisites(&["ip", "ping", "wg", "wireguard-go"], install) {
            skip_or_fail("preshared-key interop test", &reason);
            return None;
        }
        let pid = std::process::id();
        let x = (pid % 200 + 20 + n) % 250;
        let (ns_r, ns_l, ns_p) = (format!("rdk{pid}{n}r"), format!("rdk{pid}{n}l"), format!("rdk{pid}{n}p"));
        let tap = format!("rdkl{pid}{n}");
        // Unique on the machine: wg(8) finds wireguard-go by /var/run/wireguard/<name>.sock.
        let wg_if = format!("rdkg{pid}{n}");
        let wan = format!("10.78.{x}.1");
        let peer_ul = format!("10.78.{x}.2");
        let mut lab = Lab::new(std::env::temp_dir().join(format!("routerd-host-psk-{pid}-{n}")));
        for ns in [&ns_r, &ns_l, &ns_p] {
            lab.netns(ns);
        }
        veth(&ns_r, &format!("rdkr{pid}{n}"), &format!("{wan}/24"), &ns_p, &format!("rdkp{pid}{n}"), &format!("{peer_ul}/24"));
        let dir = lab.dir.clone();
        let (_, peer_public) = wg_keypair(&dir, "peer.key");
        let peer_ep = format!("{peer_ul}:51820");
        let endpoint = (initiator == Initiator::RouterdHost).then_some(peer_ep.as_str());
        let cfg_file = dir.join("router.toml");
        std::fs::write(&cfg_file, config(&peer_public, endpoint, &wan)).unwrap();
        let key_file = dir.join("wg.key");
        let sock = dir.join("ctl.sock");
        let host_args: Vec<String> = [
            "--config",
            cfg_file.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
            "--control",
            sock.to_str().unwrap(),
            "--port",
            &format!("lan0={tap}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let args: Vec<&str> = host_args.iter().map(String::as_str).collect();
        let host = start_routerd_host(&mut lab, &ns_r, "onprem", &args);
        let router_public = host.printed_key();
        let l = PskLab {
            lab,
            ns_r,
            ns_l,
            ns_p,
            wg_if,
            tap,
            port: format!("unix:{}", sock.display()),
            host_args,
            host,
            key_file,
            router_public,
            router_ep: format!("{wan}:51820"),
        };
        l.lan_host();
        Some(l)
    }

    /// The kernel side of routerd-host's TAP becomes the LAN host's NIC.
    fn lan_host(&self) {
        run(&["ip", "-n", &self.ns_r, "link", "set", &self.tap, "netns", &self.ns_l]).unwrap();
        run(&["ip", "-n", &self.ns_l, "addr", "add", "10.20.0.10/24", "dev", &self.tap]).unwrap();
        run(&["ip", "-n", &self.ns_l, "link", "set", &self.tap, "up"]).unwrap();
    }

    /// Starts wireguard-go in P with `psk` (base64) for routerd-host, and
    /// routerd-host's endpoint when it is the one to initiate.
    fn peer(&mut self, psk: &str, initiator: Initiator) {
        let key_file = self.lab.dir.join("peer.key");
        let psk_file = self.lab.dir.join("peer.psk");
        std::fs::write(&psk_file, format!("{psk}\n")).unwrap();
        let endpoint = (initiator == Initiator::WireguardGo).then_some(self.router_ep.as_str());
        let w = WgGo {
            ns: &self.ns_p,
            ifname: &self.wg_if,
            key_file: &key_file,
            listen_port: 51820,
            peer_public: &self.router_public,
            allowed_ips: "10.20.0.10/32",
            endpoint,
            address: "10.20.0.50/32",
            routes: &["10.20.0.10/32"],
        };
        wireguard_go(&mut self.lab, &w);
        self.peer_psk(&psk_file);
    }

    /// wg(8): the peer's preshared key for routerd-host, from `file`.
    fn peer_psk(&self, file: &std::path::Path) {
        let f = file.to_str().unwrap();
        run(&["ip", "netns", "exec", &self.ns_p, "wg", "set", &self.wg_if, "peer", &self.router_public, "preshared-key", f]).unwrap();
    }

    fn ctl(&self, args: &[&str]) -> common::Ctl {
        ctl(&self.port, args)
    }

    /// `routerctl key psk show SLOT`: the key as it printed it.
    fn shown_psk(&self) -> String {
        let out = self.ctl(&["key", "psk", "show", SLOT]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let psk = out.stdout.trim().to_string();
        assert_eq!(psk.len(), 44, "base64 as `wg genpsk` prints it: {psk:?}");
        psk
    }

    /// The file routerd-host keeps the slot's key in.
    fn psk_file(&self) -> PathBuf {
        self.key_file.with_file_name(format!("{SLOT}.psk"))
    }

    fn status(&self) -> Value {
        self.ctl(&["status", "--json"]).json()["status"].clone()
    }

    /// routerd-host's WireGuard counter `name` (0 when not listed).
    fn wg_counter(&self, name: &str) -> u64 {
        let st = self.status();
        st["wireguard"].as_array().into_iter().flatten().find(|c| c["name"] == name).and_then(|c| c["value"].as_u64()).unwrap_or(0)
    }

    fn has_session(&self) -> bool {
        self.status()["peers"][0]["has_session"] == true
    }

    /// Pings 5 times from L to the peer's address and from P to the LAN
    /// host, `first` side first; the replies (L → P, P → L).
    fn pings(&self, first: Initiator) -> (u32, u32) {
        match first {
            Initiator::RouterdHost => {
                let a = ping(&self.ns_l, "10.20.0.50", 5, 56);
                (a, ping(&self.ns_p, "10.20.0.10", 5, 56))
            }
            Initiator::WireguardGo => {
                let b = ping(&self.ns_p, "10.20.0.10", 5, 56);
                (ping(&self.ns_l, "10.20.0.50", 5, 56), b)
            }
        }
    }

    /// Fails with routerd-host's status in its log.
    fn fail(&self, what: &str) -> ! {
        self.host.dump_status();
        panic!("{what}\n{}", self.host.log());
    }
}

#[test]
fn a_preshared_key_made_on_routerd_host_works_when_it_initiates_and_after_a_restart() {
    let Some(mut lab) = PskLab::start(0, Initiator::RouterdHost) else { return };

    // Made at start, written beside the key file, listed without its key.
    let psk = lab.shown_psk();
    let file = lab.psk_file();
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), psk, "{} holds the slot's key", file.display());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let shown = lab.ctl(&["key", "show"]);
    assert!(!shown.stdout.contains(&psk), "key show printed the preshared key:\n{}", shown.stdout);
    assert!(shown.stdout.contains("preshared") && shown.stdout.contains(SLOT), "{}", shown.stdout);
    let keys = lab.ctl(&["key", "show", "--json"]);
    assert!(!keys.stdout.contains(&psk), "key show --json printed the preshared key");
    let psk_slot = keys.json()["keys"].as_array().unwrap().iter().find(|k| k["slot"] == SLOT).cloned().expect("the slot is listed");
    assert_eq!((&psk_slot["kind"], &psk_slot["public_key"], &psk_slot["in_use"]), (&"preshared".into(), &Value::Null, &true.into()));
    assert!(!lab.ctl(&["status", "--json"]).stdout.contains(&psk), "status printed the preshared key");
    let json = lab.ctl(&["key", "psk", "show", SLOT, "--json"]).json();
    assert_eq!(json["preshared_key"], psk.as_str());
    // A private key is never shown.
    let refused = lab.ctl(&["key", "psk", "show", "wg0"]);
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("never leaves the box"), "{}", refused.stderr);

    lab.peer(&psk, Initiator::RouterdHost);
    let (out, back) = lab.pings(Initiator::RouterdHost);
    // Neither WireGuard queues the packet that starts a handshake: the first may be lost.
    if out < 3 || back < 4 || !lab.has_session() {
        lab.fail(&format!("with the same preshared key: L → P {out}/5, P → L {back}/5"));
    }
    assert_eq!(lab.wg_counter("handshake_decrypt"), 0);

    // A restart reads the same key back: the peer needs nothing new.
    let mut old = lab.lab.children.remove(0);
    assert!(stop(&mut old).success(), "routerd-host stops cleanly");
    let args: Vec<&str> = lab.host_args.iter().map(String::as_str).collect();
    lab.host = start_routerd_host(&mut lab.lab, &lab.ns_r, "onprem-again", &args);
    assert!(lab.host.log().contains(&format!("preshared key {SLOT} read from")), "{}", lab.host.log());
    assert_eq!(lab.shown_psk(), psk, "the same preshared key after a restart");
    // The TAP went with the old process; the new one becomes the LAN host's NIC.
    lab.lan_host();
    let (out, back) = lab.pings(Initiator::RouterdHost);
    if out < 3 || back < 4 {
        lab.fail(&format!("after the restart: L → P {out}/5, P → L {back}/5"));
    }
}

#[test]
fn a_preshared_key_made_on_routerd_host_works_when_wireguard_go_initiates() {
    let Some(mut lab) = PskLab::start(1, Initiator::WireguardGo) else { return };
    let psk = lab.shown_psk();
    lab.peer(&psk, Initiator::WireguardGo);
    let (out, back) = lab.pings(Initiator::WireguardGo);
    if back < 3 || out < 4 || !lab.has_session() {
        lab.fail(&format!("with the same preshared key, the peer first: P → L {back}/5, L → P {out}/5"));
    }
    assert_eq!(lab.wg_counter("handshake_decrypt"), 0);
}

#[test]
fn a_different_preshared_key_is_refused_until_the_peers_key_is_imported() {
    let Some(mut lab) = PskLab::start(2, Initiator::RouterdHost) else { return };
    let ours = lab.shown_psk();
    let theirs = run(&["wg", "genpsk"]).unwrap().trim().to_string();
    assert_ne!(ours, theirs);
    lab.peer(&theirs, Initiator::RouterdHost);

    // routerd-host initiates; wireguard-go answers; the answer does not
    // authenticate with routerd-host's key.
    let out = ping(&lab.ns_l, "10.20.0.50", 3, 56);
    assert_eq!(out, 0, "a ping crossed with different preshared keys");
    assert!(!lab.has_session(), "a session with different preshared keys");
    let refused = lab.wg_counter("handshake_decrypt");
    if refused == 0 {
        lab.fail("routerd-host did not count the response it could not authenticate (handshake_decrypt)");
    }
    // wireguard-go initiates (now it knows where routerd-host is): routerd-host
    // answers, wireguard-go refuses the answer.
    run(&["ip", "netns", "exec", &lab.ns_p, "wg", "set", &lab.wg_if, "peer", &lab.router_public, "endpoint", &lab.router_ep]).unwrap();
    let back = ping(&lab.ns_p, "10.20.0.10", 3, 56);
    assert_eq!(back, 0, "a ping crossed with different preshared keys");
    assert!(!lab.has_session());

    // The peer's key, from a file, into the slot: the tunnel restarts with it.
    let file = lab.lab.dir.join("theirs.psk");
    std::fs::write(&file, format!("{theirs}\n")).unwrap();
    let without_yes = lab.ctl(&["key", "psk", "import", SLOT, "--from-file", file.to_str().unwrap()]);
    assert_eq!(without_yes.code, Some(2), "import replaces a key only with --yes");
    let imported = lab.ctl(&["key", "psk", "import", SLOT, "--from-file", file.to_str().unwrap(), "--yes", "--json"]);
    assert_eq!(imported.code, Some(0), "{}", imported.stderr);
    let slot = imported.json()["keys"].as_array().unwrap().iter().find(|k| k["slot"] == SLOT).cloned().unwrap();
    assert_eq!((&slot["generated"], &slot["in_use"]), (&false.into(), &true.into()));
    assert_eq!(lab.shown_psk(), theirs);
    assert_eq!(std::fs::read_to_string(lab.psk_file()).unwrap().trim(), theirs, "the file beside --key-file follows");

    let (out, back) = lab.pings(Initiator::RouterdHost);
    if out < 3 || back < 4 || !lab.has_session() {
        lab.fail(&format!("after the import: L → P {out}/5, P → L {back}/5"));
    }
    println!("handshake responses refused before the import: {refused}");
}

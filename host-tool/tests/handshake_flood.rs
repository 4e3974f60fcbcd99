//! WireGuard's flood defence end to end, as an operator sees it: the real
//! image in QEMU, provisioned and read by the real `routerctl` binary.
//!
//! The harness plays the WAN neighbours with frames on the NIC's socket:
//! - `cloud`, the configured peer (`192.0.2.100:51820`), is boringtun with a
//!   rate limiter whose limit is 0, so it is "under load" for every message:
//!   it answers the box's first initiation with a cookie reply, and the box
//!   must retry with mac2 to complete the handshake (`cookies_received`);
//! - a flooder (`192.0.2.66`) sends thousands of handshake initiations made
//!   for the box's public key (valid mac1, unknown static keys) from many
//!   ports, faster than the device's handshake limit (128/s by default).
//!
//! Then: cookie replies (message type 3) came back on the WAN link;
//! `status --json` shows `wireguard_load` with cookie replies and the time
//! of the last crossing; the text status has the load line; and `doctor
//! hybrid` warns `wireguard.load` on the first run after the flood (it
//! marks status on each run) and passes on the run after that.
//!
//! Bounded: at most `FLOOD_FRAMES` frames within `FLOOD_TIME`.

mod common;

use base64::Engine;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use rand_core::{OsRng, RngCore};
use routerd_e2e::net::{self, Ip, Link, Mac};
use routerd_e2e::qemu::{MachineType, NicModel};
use routerd_e2e::{check, test_mac, two_nic_machine};
use serde_json::Value;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ID: u8 = 0x53;
const HOST: Ip = [10, 20, 0, 10];
const HOST_MAC: Mac = [0x02, 0x11, 0, 0, 0, 10];
const CLAIMED: Ip = [10, 20, 0, 50];
const BOX_WAN: Ip = [192, 0, 2, 2];
const PEER: Ip = [192, 0, 2, 100];
const PEER_MAC: Mac = [0x02, 0xee, 0, 0, 0, 100];
const PEER_PORT: u16 = 51820;
const FLOODER: Ip = [192, 0, 2, 66];
const FLOODER_MAC: Mac = [0x02, 0xee, 0, 0, 0, 66];
/// The flooder's port that takes the box's cookie and comes back with a
/// valid mac2 (the box's cookie is bound to address and port).
const COOKIE_TAKER_PORT: u16 = 19_999;
/// Copies of the initiation with mac2 sent at once: more than the
/// per-source burst (5), so the rest are refused by the rate limit.
const WITH_MAC2_COPIES: usize = 12;
/// Upper bounds of the flood (it stops earlier once the box is clearly
/// answering with cookies).
const FLOOD_FRAMES: usize = 5000;
const FLOOD_TIME: Duration = Duration::from_secs(20);
/// Distinct initiations cycled through (each costs the harness two DHs).
const DISTINCT: usize = 48;
/// WireGuard message type of a cookie reply, and its length.
const COOKIE_REPLY: u8 = 3;
const COOKIE_REPLY_LEN: usize = 64;

fn config(peer_public: &str) -> String {
    common::onprem_config_for("flood-onprem", peer_public, None, None, &["10.20.0.50/32"])
}

fn routerctl(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_routerctl")).args(args).output().expect("run routerctl");
    eprintln!(
        "$ routerctl {}\n{}{}-> {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The `wireguard.load` check of a `doctor hybrid --json` run.
fn doctor_load(port: &str) -> Value {
    let doc = json(&routerctl(&["doctor", "hybrid", "--port", port, "--json"]));
    doc["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "wireguard.load"))
        .cloned()
        .unwrap_or_else(|| panic!("doctor has no wireguard.load check: {doc:#}"))
}

/// What the WAN side saw and did; shared with its service thread.
struct Wan {
    link: Link,
    box_wan_mac: Mac,
    listen_port: AtomicU64,
    peer: Mutex<Tunn>,
    stop: AtomicBool,
    /// Cookie replies from the box to the flooder.
    cookie_replies_seen: AtomicU64,
    /// Anything else the box sent the flooder.
    other_to_flooder: AtomicU64,
    /// Initiations from the box to the peer, and those with a mac2.
    initiations_to_peer: AtomicU64,
    initiations_with_mac2: AtomicU64,
    /// Cookie replies the peer (boringtun) sent the box.
    peer_cookie_replies: AtomicU64,
    /// The cookie reply the box sent to `COOKIE_TAKER_PORT`.
    taken_cookie: Mutex<Option<Vec<u8>>>,
}

impl Wan {
    fn send_from_peer(&self, datagram: &[u8]) {
        let port = self.listen_port.load(Relaxed) as u16;
        self.link.send(&net::udp_frame(PEER_MAC, self.box_wan_mac, (PEER, PEER_PORT), (BOX_WAN, port), datagram));
    }

    /// Handles one frame from the box: ARP for the harness's addresses,
    /// WireGuard for the peer (through boringtun), counting for the flooder.
    fn handle(&self, f: &[u8]) {
        for (ip, mac) in [(PEER, PEER_MAC), (FLOODER, FLOODER_MAC)] {
            if let Some(r) = net::answer_arp(f, ip, mac) {
                self.link.send(&r);
                return;
            }
        }
        let Some((src, dst, payload)) = net::parse_udp(f) else { return };
        if dst.0 == FLOODER {
            if payload.first() == Some(&COOKIE_REPLY) && payload.len() == COOKIE_REPLY_LEN {
                self.cookie_replies_seen.fetch_add(1, Relaxed);
                if dst.1 == COOKIE_TAKER_PORT {
                    *self.taken_cookie.lock().unwrap() = Some(payload);
                }
            } else {
                self.other_to_flooder.fetch_add(1, Relaxed);
            }
            return;
        }
        if dst != (PEER, PEER_PORT) {
            return;
        }
        if payload.first() == Some(&1) && payload.len() == 148 {
            self.initiations_to_peer.fetch_add(1, Relaxed);
            if payload[132..148].iter().any(|&b| b != 0) {
                self.initiations_with_mac2.fetch_add(1, Relaxed);
            }
        }
        let mut peer = self.peer.lock().unwrap();
        let mut out = vec![0u8; 2048];
        let mut datagram = payload;
        while let TunnResult::WriteToNetwork(d) = peer.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(src.0))), &datagram, &mut out) {
            if d.first() == Some(&COOKIE_REPLY) {
                self.peer_cookie_replies.fetch_add(1, Relaxed);
            }
            self.send_from_peer(d);
            datagram.clear(); // flush anything boringtun queued
        }
    }

    /// The service loop: until `stop`, every frame the box sends on WAN.
    fn serve(&self) {
        while !self.stop.load(Relaxed) {
            match self.link.recv(Duration::from_millis(50)) {
                Some(f) => self.handle(&f),
                None => {
                    let mut out = vec![0u8; 2048];
                    let mut peer = self.peer.lock().unwrap();
                    if let TunnResult::WriteToNetwork(d) = peer.update_timers(&mut out) {
                        self.send_from_peer(d);
                    }
                }
            }
        }
    }
}

/// Handshake initiations for `box_public` from `n` strangers: valid mac1,
/// static keys the box does not know.
fn initiations(box_public: [u8; 32], n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 256];
    let mut stranger = None;
    for i in 0..n {
        // A few messages per stranger: its ephemeral changes on each one.
        if i % 4 == 0 {
            stranger =
                Some(Tunn::new(StaticSecret::random_from_rng(OsRng), PublicKey::from(box_public), None, None, OsRng.next_u32() >> 8, None));
        }
        let t = stranger.as_mut().unwrap();
        match t.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(d) => out.push(d.to_vec()),
            _ => panic!("boringtun made no initiation"),
        }
    }
    out
}

#[test]
fn a_handshake_flood_shows_in_status_and_doctor() {
    let started = Instant::now();
    let (machine, mut links) = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, ID, "");
    let mut vm = check(machine.spawn());
    check(vm.wait_for("not forwarding: no configuration yet", Duration::from_secs(60)));
    vm.release_serial();
    let port = format!("unix:{}", vm.serial_path().display());
    let wan_link = links.pop().unwrap();
    let lan = links.pop().unwrap();
    let (box_lan_mac, box_wan_mac) = (test_mac(ID, 0), test_mac(ID, 1));

    // Apply with the peer's key; the box makes its own key.
    let peer_secret = StaticSecret::random_from_rng(OsRng);
    let peer_public = PublicKey::from(&peer_secret);
    let b64 = base64::engine::general_purpose::STANDARD;
    let file = machine.run_dir.join("flood.toml");
    std::fs::write(&file, config(&b64.encode(peer_public.as_bytes()))).unwrap();
    let out = routerctl(&["apply", file.to_str().unwrap(), "--port", &port, "--yes"]);
    assert!(out.status.success(), "apply failed");
    let keys = json(&routerctl(&["key", "show", "--port", &port, "--json"]));
    let box_public: [u8; 32] =
        b64.decode(keys["keys"][0]["public_key"].as_str().expect("the box shows its public key")).unwrap().try_into().unwrap();
    let st = json(&routerctl(&["status", "--port", &port, "--json"]));
    let listen = st["status"]["tunnel"]["listen_port"].as_u64().expect("tunnel listen port");

    // The peer is always "under load": every handshake message without a
    // valid mac2 gets a cookie reply.
    let limiter = Arc::new(RateLimiter::new(&peer_public, 0));
    let peer = Tunn::new(peer_secret, PublicKey::from(box_public), None, None, OsRng.next_u32() >> 8, Some(limiter));
    wan_link.sock.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let wan = Arc::new(Wan {
        link: wan_link,
        box_wan_mac,
        listen_port: AtomicU64::new(listen),
        peer: Mutex::new(peer),
        stop: AtomicBool::new(false),
        cookie_replies_seen: AtomicU64::new(0),
        other_to_flooder: AtomicU64::new(0),
        initiations_to_peer: AtomicU64::new(0),
        initiations_with_mac2: AtomicU64::new(0),
        peer_cookie_replies: AtomicU64::new(0),
        taken_cookie: Mutex::new(None),
    });
    let service = {
        let wan = Arc::clone(&wan);
        std::thread::spawn(move || wan.serve())
    };

    // 1. The box initiates (a LAN packet to the claimed address), gets a
    //    cookie reply, retries with mac2 after REKEY_TIMEOUT, completes.
    let ping = net::icmp_echo_packet(HOST, CLAIMED, 1, 56, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let handshake_at = loop {
        if let (Some(_), ..) = wan.peer.lock().unwrap().stats() {
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "the box never completed a handshake through the peer's cookie; console:\n{}", vm.console());
        lan.send(&net::ethernet(HOST_MAC, box_lan_mac, &ping));
        // Keep the LAN socket drained (and the box's ARP for the host answered).
        let until = Instant::now() + Duration::from_secs(1);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match lan.recv(left) {
                Some(f) => {
                    if let Some(r) = net::answer_arp(&f, HOST, HOST_MAC) {
                        lan.send(&r);
                    }
                }
                None => break,
            }
        }
    };
    let (inits, with_mac2, peer_cookies) =
        (wan.initiations_to_peer.load(Relaxed), wan.initiations_with_mac2.load(Relaxed), wan.peer_cookie_replies.load(Relaxed));
    eprintln!(
        "box → peer: {inits} initiations ({with_mac2} with mac2), {peer_cookies} cookie replies from the peer; session at {:.1} s",
        handshake_at.as_secs_f64()
    );
    assert!(peer_cookies >= 1 && with_mac2 >= 1, "the box did not retry with the peer's cookie");

    // 2. Doctor before the flood: marks status, no load yet.
    let before = doctor_load(&port);
    assert_eq!(before["result"], "pass", "{before:#}");

    // 3. The flood: initiations from one address, many ports, as fast as the
    //    box takes them (the NIC socket blocks while QEMU's queue is full).
    //    Meanwhile one sender does what a legitimate peer would: takes the
    //    box's cookie and retries with mac2 — too often, so the per-source
    //    limit refuses the excess.
    let msgs = initiations(box_public, DISTINCT);
    let to_box = |src_port: u16, m: &[u8]| {
        wan.link.send(&net::udp_frame(FLOODER_MAC, box_wan_mac, (FLOODER, src_port), (BOX_WAN, listen as u16), m))
    };
    let mut taker = Tunn::new(StaticSecret::random_from_rng(OsRng), PublicKey::from(box_public), None, None, 7, None);
    let mut taker_state = 0; // 0: waiting for load, 1: asked, 2: sent with mac2
    let mut with_mac2_sent = 0usize;
    let flood_start = Instant::now();
    let mut sent = 0usize;
    while sent < FLOOD_FRAMES && flood_start.elapsed() < FLOOD_TIME {
        let m = &msgs[sent % msgs.len()];
        to_box(20_000 + (sent % 4000) as u16, m);
        sent += 1;
        let mut buf = vec![0u8; 256];
        if taker_state == 0 && wan.cookie_replies_seen.load(Relaxed) >= 100 {
            // The box answers with cookies now: ask for one.
            let TunnResult::WriteToNetwork(init) = taker.format_handshake_initiation(&mut buf, true) else { panic!() };
            to_box(COOKIE_TAKER_PORT, init);
            taker_state = 1;
        } else if taker_state == 1 {
            if let Some(reply) = wan.taken_cookie.lock().unwrap().take() {
                let r = taker.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(FLOODER))), &reply, &mut buf);
                assert!(matches!(r, TunnResult::Done), "boringtun refused the box's cookie reply");
                let TunnResult::WriteToNetwork(init) = taker.format_handshake_initiation(&mut buf, true) else { panic!() };
                assert!(init[132..148].iter().any(|&b| b != 0), "boringtun put no mac2 in its retry");
                for _ in 0..WITH_MAC2_COPIES {
                    to_box(COOKIE_TAKER_PORT, init);
                }
                with_mac2_sent = WITH_MAC2_COPIES;
                taker_state = 2;
            }
        }
        // Enough shown once the box has answered plenty with cookies.
        if taker_state == 2 && sent.is_multiple_of(250) && wan.cookie_replies_seen.load(Relaxed) >= 2000 {
            break;
        }
    }
    let flood_time = flood_start.elapsed();
    std::thread::sleep(Duration::from_millis(500)); // the last replies
    let seen = wan.cookie_replies_seen.load(Relaxed);
    eprintln!(
        "flood: {sent} initiations in {:.2} s ({:.0}/s); {seen} cookie replies and {} other datagrams back to the flooder",
        flood_time.as_secs_f64(),
        sent as f64 / flood_time.as_secs_f64().max(0.001),
        wan.other_to_flooder.load(Relaxed)
    );
    eprintln!("cookie taker: {with_mac2_sent} initiations with a valid mac2 from one source (burst allowed: 5)");
    assert_eq!(with_mac2_sent, WITH_MAC2_COPIES, "the taker never got the box's cookie during the flood");
    assert!(seen > 0, "no cookie reply (type 3) came back on the WAN link; console:\n{}", vm.console());

    // 4. Status shows the load.
    let st = json(&routerctl(&["status", "--port", &port, "--json"]));
    let l = &st["status"]["wireguard_load"];
    eprintln!("status wireguard_load: {l}");
    assert!(l["cookie_replies_sent"].as_u64().is_some_and(|n| n > 0), "{l}");
    assert!(l["last_under_load_ms_ago"].as_u64().is_some(), "{l}");
    assert!(l["cookies_received"].as_u64().is_some_and(|n| n >= 1), "{l}");
    assert!(l["handshakes"].as_u64().is_some_and(|n| n >= 1), "{l}");
    assert!(l["refused_under_load"].as_u64().is_some_and(|n| n > 0), "the per-source limit refused nothing: {l}");
    assert!(l["cookie_replies_sent"].as_u64().unwrap() >= seen, "the box counted fewer replies than arrived");
    let text = routerctl(&["status", "--port", &port]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("handshake load:"), "{text}");

    // 5. Doctor: the first run after the flood warns with the figures; the
    //    next one (no load since) passes.
    let after = doctor_load(&port);
    assert_eq!(after["result"], "warn", "{after:#}");
    let reason = after["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cookie replies sent"), "{reason}");
    assert!(after["hint"].as_str().unwrap_or_default().contains(&format!("UDP {listen}")), "{after:#}");
    // The device stays under load for a second after the last crossing;
    // once that has passed, nothing happened since the last run.
    std::thread::sleep(Duration::from_millis(1100));
    let again = doctor_load(&port);
    assert_eq!(again["result"], "pass", "{again:#}");

    wan.stop.store(true, Relaxed);
    service.join().unwrap();

    // 6. The box's own console status has the line too.
    check(vm.attach_serial(Duration::from_secs(5)));
    let before = vm.console().len();
    let mut serial = vm.serial();
    serial.write_all(b"status\r").unwrap();
    check(vm.wait_for_after(before, "end of status", Duration::from_secs(5)));
    let console = vm.console()[before..].to_string();
    let line = console.lines().find(|l| l.contains("wg load:")).unwrap_or_else(|| panic!("no wg load line:\n{console}"));
    eprintln!("console: {}", line.trim());
    assert!(line.contains("cookie replies sent"), "{line}");
    assert!(!vm.console().contains("PANIC"), "the box panicked:\n{}", vm.console());
    eprintln!("handshake flood test: {:.1} s in all", started.elapsed().as_secs_f64());
    vm.kill();
}

//! A full NIC transmit ring on the real image, as an operator sees it: the
//! image in QEMU, read by the real `routerctl` binary over the VM's serial
//! socket (this file lives in `routerctl`'s tests because `routerd-e2e`
//! cannot run the binary).
//!
//! The box boots configured (`routerd.config=` on its command line) with
//! `lan0` and `wan0` on unix datagram sockets. The harness plays a host on
//! the LAN (`10.20.0.10`) and the cloud-side WireGuard peer on the WAN
//! (`192.0.2.100:51820`, boringtun), behind which lives the claimed
//! `10.20.0.50`. After the WireGuard session is up, the harness stops
//! reading the WAN link's socket: QEMU's datagram backend gets EAGAIN and
//! holds its queue, the NIC stops completing transmit descriptors, the
//! guest's transmit ring fills, and what the box seals for the peer is lost.
//! The LAN host floods UDP to the claimed address meanwhile (bounded:
//! `FLOOD_FRAMES` frames within `FLOOD_TIME`, stopping as soon as status
//! shows a `tx_full` drop).
//!
//! Checked:
//! - `status --json`: `drops` has `tx_full` > 0; `ports[wan0].tx_dropped`
//!   is above 0 and equal to the `tx_full` total (lan0 lost nothing);
//!   `ports[wan0].tx_ring_full` is above 0 and at least `tx_dropped`;
//! - recovery: once the harness drains the WAN link again, a ping from the
//!   LAN host crosses the tunnel and a batch of UDP packets all arrive (no
//!   stalled queue), and `tx_dropped` does not grow any more;
//! - `doctor hybrid --json`: `port.tx` for wan0 is absent before the flood
//!   (the run marks status), `warn` on the run after the flood, `pass` on
//!   the run after that (nothing lost since);
//! - accounting: every flood frame the box took either reached the peer
//!   (read from the WAN link once drained, decrypted by boringtun) or is
//!   one of the `tx_dropped` (the box's own frames may add a couple).
//!
//! Runs on virtio-net (`-machine pc` and `q35`): QEMU's virtio-net sends
//! asynchronously and stops popping the transmit queue while its backend
//! cannot deliver, so descriptors stay with the device and the guest's
//! transmit ring (128 slots) fills; with the unread socket's queue (10
//! datagrams at Linux's default `net.unix.max_dgram_qlen`) about 139 of 200
//! frames get through before the first loss. Not on e1000e: QEMU's e1000e sends
//! synchronously when the guest writes TDT and completes every descriptor
//! whether or not the backend took the frame (frames it cannot deliver
//! wait in, or are dropped from, QEMU's own queue), so the guest's ring
//! never fills there (20,000 frames in 20 s: `tx_ring_full` 0).
//!
//! Any failure prints the image's console (the serial line is re-attached).

mod common;

use base64::Engine;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use rand_core::{OsRng, RngCore};
use routerd_e2e::net::{self, Ip, Link, Mac};
use routerd_e2e::qemu::{MachineType, NicModel, Vm};
use routerd_e2e::{check, test_mac, two_nic_machine};
use serde_json::Value;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);
const HOST: Ip = [10, 20, 0, 10];
const HOST_MAC: Mac = [0x02, 0x11, 0, 0, 0, 10];
const CLAIMED: Ip = [10, 20, 0, 50];
const BOX_WAN: Ip = [192, 0, 2, 2];
const PEER: Ip = [192, 0, 2, 100];
const PEER_MAC: Mac = [0x02, 0xee, 0, 0, 0, 100];
const WG_PORT: u16 = 51820;
/// UDP port the flood goes to on the claimed address (discard).
const FLOOD_PORT: u16 = 9;
/// Upper bounds of the flood; it stops once status shows a `tx_full` drop.
const FLOOD_FRAMES: usize = 20_000;
const FLOOD_TIME: Duration = Duration::from_secs(20);
/// Frames sent between two status reads during the flood.
const BURST: usize = 100;
/// UDP packets sent after recovery, all of which must arrive.
const AFTER: usize = 32;

fn config(peer_public: &str) -> String {
    common::onprem_config_for("txring-onprem", peer_public, None, None, &["10.99.0.2/32", "10.20.0.50/32"])
}

fn encoded(toml: &str) -> String {
    let cfg = config_schema::human::from_toml(toml).expect("test config parses");
    assert!(config_schema::validate(&cfg).is_valid(), "test config invalid");
    let mut buf = vec![0u8; config_schema::CONFIG_WIRE_MAX];
    let bytes = config_schema::encode(&cfg, &mut buf).expect("encodes");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs the real `routerctl`; prints the command, its exit status and (if
/// `show`) its output.
fn routerctl(args: &[&str], show: bool) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_routerctl")).args(args).output().expect("run routerctl");
    if show || !out.status.success() {
        eprintln!(
            "$ routerctl {}\n{}{}-> {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
    }
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `status.ports[name]` of a `status --json` document.
fn port<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["status"]["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("status has no port {name}: {st:#}"))
}

fn num(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no number {field} in {v}"))
}

/// The `tx_full` drop total (0 when the box lists no such drop).
fn tx_full(st: &Value) -> u64 {
    st["status"]["drops"].as_array().and_then(|ds| ds.iter().find(|d| d["name"] == "tx_full")).map_or(0, |d| num(d, "value"))
}

/// The box and the harness's two neighbours. On a failing test its drop
/// prints the console (re-attaching the serial line routerctl used).
struct Lab {
    vm: Vm,
    lan: Link,
    wan: Link,
    port: String,
    box_lan_mac: Mac,
    box_wan_mac: Mac,
    peer: Tunn,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut console = self.vm.console();
        if self.vm.attach_serial(Duration::from_secs(5)).is_ok() {
            let before = self.vm.console().len();
            let _ = self.vm.serial().write_all(b"status\r");
            let _ = self.vm.wait_for_after(before, "end of status", Duration::from_secs(5));
            console = self.vm.console();
        }
        eprintln!("==== image console ====\n{console}\n==== end of console ====");
    }
}

impl Lab {
    fn start(kind: MachineType, model: NicModel, id: u8) -> Lab {
        let peer_secret = StaticSecret::random_from_rng(OsRng);
        let peer_public = PublicKey::from(&peer_secret);
        let b64 = base64::engine::general_purpose::STANDARD;
        let cmdline = format!("routerd.config={}", encoded(&config(&b64.encode(peer_public.as_bytes()))));
        let (machine, mut links) = two_nic_machine(kind, model, id, &cmdline);
        let mut vm = check(machine.spawn());
        check(vm.wait_for("dataplane: 2 ports, 1 claims, 0 segments; forwarding", BOOT));
        // The claim probes for a live host first (nobody answers here).
        check(vm.wait_for("claim 10.20.0.50: capturing", BOOT));
        let console = vm.console();
        let key = console
            .lines()
            .find_map(|l| l.split("wg: wg0 public key ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the box prints no public key; console:\n{console}"));
        let box_public: [u8; 32] = b64.decode(key).expect("base64 key").try_into().expect("32 bytes");
        let peer = Tunn::new(peer_secret, PublicKey::from(box_public), None, None, OsRng.next_u32() >> 8, None);
        vm.release_serial();
        let port = format!("unix:{}", vm.serial_path().display());
        let wan = links.pop().unwrap();
        let lan = links.pop().unwrap();
        // Sends to the box never block for long (its receive side may be
        // full during the flood).
        lan.sock.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
        wan.sock.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
        Lab { vm, lan, wan, port, box_lan_mac: test_mac(id, 0), box_wan_mac: test_mac(id, 1), peer }
    }

    fn status(&self, show: bool) -> Value {
        let out = routerctl(&["status", "--port", &self.port, "--json"], show);
        assert!(out.status.success(), "routerctl status failed");
        json(&out)
    }

    /// The `port.tx` check for wan0 of a `doctor hybrid --json` run (which
    /// marks status), if there is one.
    fn doctor_port_tx(&self) -> Option<Value> {
        let doc = json(&routerctl(&["doctor", "hybrid", "--port", &self.port, "--json"], false));
        let checks = doc["checks"].as_array().unwrap_or_else(|| panic!("doctor printed no checks: {doc:#}"));
        let c = checks.iter().find(|c| c["id"] == "port.tx" && c["subject"] == "wan0").cloned();
        match &c {
            Some(c) => eprintln!("doctor: {} port.tx wan0: {}", c["result"], c["reason"]),
            None => eprintln!("doctor: no port.tx check for wan0"),
        }
        c
    }

    /// A UDP frame from the LAN host to the claimed address, numbered `n`.
    fn flood_frame(&self, n: usize) -> Vec<u8> {
        let mut payload = [0u8; 32];
        payload[..8].copy_from_slice(&(n as u64).to_be_bytes());
        net::udp_frame(HOST_MAC, self.box_lan_mac, (HOST, 40_000 + (n % 1000) as u16), (CLAIMED, FLOOD_PORT), &payload)
    }

    /// Reads what the box sent on the LAN without waiting, answering its
    /// ARP for the host.
    fn drain_lan(&self) {
        while let Some(f) = self.lan.recv(Duration::from_millis(1)) {
            if let Some(r) = net::answer_arp(&f, HOST, HOST_MAC) {
                let _ = self.lan.sock.send_to(&r, &self.lan.guest);
            }
        }
    }

    /// Serves the WAN side until it has been quiet for `quiet` (or `limit`
    /// passed): answers ARP for the peer, runs WireGuard messages through
    /// boringtun (sending its replies). The frames read and the inner
    /// packets that came out of the tunnel.
    fn serve_wan(&mut self, quiet: Duration, limit: Duration) -> (usize, Vec<Vec<u8>>) {
        let mut frames = 0;
        let mut inner = Vec::new();
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(f) = self.wan.recv(left.min(quiet)) else {
                self.peer_timers();
                break;
            };
            frames += 1;
            if let Some(r) = net::answer_arp(&f, PEER, PEER_MAC) {
                self.wan.send(&r);
                continue;
            }
            let Some((src, dst, payload)) = net::parse_udp(&f) else { continue };
            if dst != (PEER, WG_PORT) {
                continue;
            }
            let mut out = vec![0u8; 2048];
            let mut datagram = payload;
            loop {
                match self.peer.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(src.0))), &datagram, &mut out) {
                    TunnResult::WriteToNetwork(d) => {
                        let frame = net::udp_frame(PEER_MAC, self.box_wan_mac, (PEER, WG_PORT), src, d);
                        self.wan.send(&frame);
                        datagram.clear(); // flush anything boringtun queued
                    }
                    TunnResult::WriteToTunnelV4(p, _) => {
                        inner.push(p.to_vec());
                        break;
                    }
                    _ => break,
                }
            }
        }
        (frames, inner)
    }

    fn peer_timers(&mut self) {
        let mut out = vec![0u8; 2048];
        if let TunnResult::WriteToNetwork(d) = self.peer.update_timers(&mut out) {
            let frame = net::udp_frame(PEER_MAC, self.box_wan_mac, (PEER, WG_PORT), (BOX_WAN, WG_PORT), d);
            self.wan.send(&frame);
        }
    }

    /// Sends an echo request from the LAN host until the peer decrypts it
    /// (the first send starts the WireGuard handshake, which drops it).
    fn ping_crosses(&mut self, seq: u16) -> bool {
        let ping = net::icmp_echo_packet(HOST, CLAIMED, seq, 56, false);
        for _ in 0..6 {
            let _ = self.lan.sock.send_to(&net::ethernet(HOST_MAC, self.box_lan_mac, &ping), &self.lan.guest);
            self.drain_lan();
            let (_, inner) = self.serve_wan(Duration::from_millis(300), Duration::from_secs(2));
            if inner.iter().any(|p| net::icmp(p).is_some_and(|i| i.0 == 8 && i.3 == HOST && i.4 == CLAIMED)) {
                return true;
            }
        }
        false
    }
}

/// Flood-numbered UDP packets to the claimed address among `inner`.
fn flood_packets(inner: &[Vec<u8>]) -> Vec<u64> {
    inner
        .iter()
        .filter_map(|p| {
            let f = net::ethernet(HOST_MAC, HOST_MAC, p);
            let (src, dst, payload) = net::parse_udp(&f)?;
            if src.0 != HOST || dst != (CLAIMED, FLOOD_PORT) {
                return None;
            }
            Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
        })
        .collect()
}

fn scenario(kind: MachineType, model: NicModel, id: u8) {
    let started = Instant::now();
    let mut lab = Lab::start(kind, model, id);
    eprintln!("[{:5.1} s] {kind:?} {model:?}: booted, serial on {}", started.elapsed().as_secs_f64(), lab.port);

    // 1. The session: a ping from the LAN host crosses while the harness
    //    reads the WAN link.
    assert!(lab.ping_crosses(1), "no WireGuard session: the first ping never came out of the tunnel");
    eprintln!("[{:5.1} s] session up, ping crossed", started.elapsed().as_secs_f64());

    // 2. Doctor before the flood marks status; nothing lost yet.
    let before = lab.doctor_port_tx();
    assert!(before.is_none(), "port.tx reported before any loss: {before:?}");
    let st0 = lab.status(false);
    assert_eq!(tx_full(&st0), 0, "tx_full before the flood: {st0:#}");
    let wan0_before = port(&st0, "wan0").clone();

    // 3. The flood, with the WAN link no longer read.
    let t0 = Instant::now();
    let (mut sent, mut refused) = (0usize, 0usize);
    let mut polls = 0;
    let first = loop {
        if sent >= FLOOD_FRAMES || t0.elapsed() >= FLOOD_TIME {
            break None;
        }
        for _ in 0..BURST.min(FLOOD_FRAMES - sent) {
            match lab.lan.sock.send_to(&lab.flood_frame(sent), &lab.lan.guest) {
                Ok(_) => sent += 1,
                // QEMU is not reading the LAN socket (the guest's receive
                // ring is full): back off until the next status read.
                Err(_) => {
                    refused += 1;
                    break;
                }
            }
        }
        lab.drain_lan();
        let st = lab.status(false);
        polls += 1;
        if tx_full(&st) > 0 {
            break Some((t0.elapsed(), sent, st));
        }
    };
    let Some((to_first, sent_at_first, st_first)) = first else {
        let st = lab.status(true);
        panic!(
            "{kind:?} {model:?}: no tx_full after {sent} frames in {:.1} s with the WAN link unread ({refused} sends refused); \
             wan0 {}; the NIC backend does not push back or the ring never filled",
            t0.elapsed().as_secs_f64(),
            port(&st, "wan0")
        );
    };
    eprintln!(
        "[{:5.1} s] first overflow {:.2} s into the flood, after {sent_at_first} frames ({polls} status reads): tx_full {}, wan0 tx_ring_full {}",
        started.elapsed().as_secs_f64(),
        to_first.as_secs_f64(),
        tx_full(&st_first),
        num(port(&st_first, "wan0"), "tx_ring_full"),
    );

    // Let the box take what is still queued towards it (the LAN socket and
    // its receive ring): wait until tx_dropped stands still (bounded).
    let settle = Instant::now() + Duration::from_secs(8);
    let mut last = num(port(&st_first, "wan0"), "tx_dropped");
    let st = loop {
        std::thread::sleep(Duration::from_millis(300));
        lab.drain_lan();
        let st = lab.status(false);
        let now = num(port(&st, "wan0"), "tx_dropped");
        if now == last || Instant::now() >= settle {
            break st;
        }
        last = now;
    };
    let (wan0, lan0) = (port(&st, "wan0"), port(&st, "lan0"));
    let (total, dropped, ring_full) = (tx_full(&st), num(wan0, "tx_dropped"), num(wan0, "tx_ring_full"));
    eprintln!(
        "[{:5.1} s] flood: {sent} frames sent in {:.2} s ({refused} sends refused); status: tx_full {total}, \
         wan0 tx_dropped {dropped}, tx_ring_full {ring_full}, tx_frames {} -> {}; lan0 tx_dropped {}",
        started.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        num(&wan0_before, "tx_frames"),
        num(wan0, "tx_frames"),
        num(lan0, "tx_dropped"),
    );
    assert!(total > 0, "no tx_full drop: {st:#}");
    assert!(dropped > 0, "wan0 tx_dropped is 0: {wan0}");
    assert_eq!(num(lan0, "tx_dropped"), 0, "lan0 lost frames too: {lan0}");
    assert_eq!(dropped, total, "wan0 tx_dropped differs from the tx_full drop total");
    assert!(ring_full > 0, "the driver counted no full ring: {wan0}");
    assert!(ring_full >= dropped, "fewer full-ring events than frames lost to them: {wan0}");
    assert!(num(&wan0_before, "tx_ring_full") == 0, "the ring was full before the flood: {wan0_before}");

    // 4. Recovery: read the WAN link again; what was queued comes out, a
    //    ping crosses, a batch all arrives, nothing more is lost.
    let (drained, inner) = lab.serve_wan(Duration::from_millis(500), Duration::from_secs(10));
    let delivered = flood_packets(&inner).len();
    eprintln!(
        "[{:5.1} s] drained {drained} frames from the WAN link ({delivered} flood packets decrypted by the peer)",
        started.elapsed().as_secs_f64()
    );
    // Every flood frame the box took went out or was lost to the full ring.
    let unaccounted = (sent as u64).saturating_sub(delivered as u64);
    eprintln!("accounting: {sent} sent = {delivered} reached the peer + {unaccounted} lost ({dropped} counted tx_dropped)");
    assert!(
        unaccounted <= dropped && dropped <= unaccounted + 2,
        "{sent} frames sent, {delivered} reached the peer, but {dropped} counted lost"
    );
    assert!(lab.ping_crosses(2), "no ping crossed after the WAN link was drained again");
    let mut got = Vec::new();
    for n in 0..AFTER {
        let f = lab.flood_frame(1_000_000 + n);
        let _ = lab.lan.sock.send_to(&f, &lab.lan.guest);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < AFTER && Instant::now() < deadline {
        lab.drain_lan();
        let (_, inner) = lab.serve_wan(Duration::from_millis(300), Duration::from_secs(1));
        got.extend(flood_packets(&inner).into_iter().filter(|&n| n >= 1_000_000));
    }
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), AFTER, "after recovery only {} of {AFTER} packets crossed", got.len());
    let st2 = lab.status(false);
    let wan0_after = port(&st2, "wan0");
    eprintln!(
        "[{:5.1} s] recovered: ping and {AFTER}/{AFTER} packets crossed; wan0 tx_frames {}, tx_dropped {}, tx_ring_full {}",
        started.elapsed().as_secs_f64(),
        num(wan0_after, "tx_frames"),
        num(wan0_after, "tx_dropped"),
        num(wan0_after, "tx_ring_full"),
    );
    assert_eq!(num(wan0_after, "tx_dropped"), dropped, "frames were lost after the WAN link was drained");
    assert_eq!(tx_full(&st2), total);
    assert!(num(wan0_after, "tx_frames") > num(wan0, "tx_frames"), "wan0 sent nothing after recovery");

    // 5. Doctor: warns on the run after the flood, passes on the next.
    let warn = lab.doctor_port_tx().expect("doctor has no port.tx check for wan0 after the flood");
    assert_eq!(warn["result"], "warn", "{warn:#}");
    let reason = warn["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("{dropped} frames lost to a full transmit ring since the last run")), "{reason}");
    let again = lab.doctor_port_tx().expect("doctor has no port.tx check for wan0 on the next run");
    assert_eq!(again["result"], "pass", "{again:#}");

    let text = routerctl(&["status", "--port", &lab.port], true);
    assert!(String::from_utf8_lossy(&text.stdout).contains("tx ring full"), "the text status shows no full ring");
    check(lab.vm.attach_serial(Duration::from_secs(5)));
    assert!(!lab.vm.console().contains("PANIC"), "the box panicked");
    eprintln!("[{:5.1} s] {kind:?} {model:?}: tx ring test done", started.elapsed().as_secs_f64());
    lab.vm.kill();
}

#[test]
fn pc_virtio_net_counts_a_full_transmit_ring() {
    scenario(MachineType::Pc, NicModel::VirtioNet, 0x54);
}

#[test]
fn q35_virtio_net_counts_a_full_transmit_ring() {
    scenario(MachineType::Q35, NicModel::VirtioNet, 0x55);
}

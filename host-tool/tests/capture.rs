//! `routerctl capture` against the real image in QEMU (issue 20): a pcap of
//! a ping through the tunnel that `tshark -r` opens and decodes.
//!
//! The box boots configured (`routerd.config=`) with `lan0` and `wan0` on
//! unix datagram sockets. The harness plays a host on the LAN
//! (`10.20.0.10`) and the cloud-side WireGuard peer on the WAN
//! (`192.0.2.100:51820`, boringtun) that owns the claimed `10.20.0.50`, and
//! answers each echo request it decrypts with an echo reply back through the
//! tunnel. While pings flow:
//!
//! 1. `routerctl capture -w FILE --duration 6 --json` (every port, the
//!    image's default rate cap): the summary counts frames, stderr says
//!    what was captured and skipped, and `tshark -r FILE -T fields -e
//!    frame.protocols` shows ICMP (on lan0) and WireGuard (`wg`, on wan0);
//!    tshark names the WireGuard message types too;
//! 2. `routerctl capture -w - --filter icmp --count 4 | tshark -r -`: the
//!    pcap on stdout is read live and holds exactly four ICMP frames.
//!
//! Needs `tshark` (Debian `tshark`; `cargo xtask deps` installs it); without
//! it the test prints "skipped: …" and passes, unless `CI` is set.

mod common;

use base64::Engine;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use etherparse::PacketBuilder;
use rand_core::{OsRng, RngCore};
use routerd_e2e::net::{self, Ip, Link, Mac};
use routerd_e2e::qemu::{MachineType, NicModel, Vm};
use routerd_e2e::{check, test_mac, two_nic_machine};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);
const ID: u8 = 0x5c;
const HOST: Ip = [10, 20, 0, 10];
const HOST_MAC: Mac = [0x02, 0x11, 0, 0, 0, 10];
const CLAIMED: Ip = [10, 20, 0, 50];
const PEER: Ip = [192, 0, 2, 100];
const PEER_MAC: Mac = [0x02, 0xee, 0, 0, 0, 100];
const WG_PORT: u16 = 51820;

fn config(peer_public: &str) -> String {
    common::onprem_config_for("capture-onprem", peer_public, None, None, &["10.20.0.50/32"])
}

fn encoded(toml: &str) -> String {
    let cfg = config_schema::human::from_toml(toml).expect("test config parses");
    assert!(config_schema::validate(&cfg).is_valid(), "test config invalid");
    let mut buf = vec![0u8; config_schema::CONFIG_WIRE_MAX];
    let bytes = config_schema::encode(&cfg, &mut buf).expect("encodes");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn have(bin: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {bin}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `tshark -r FILE -T fields -e …` (WireGuard decoded on its port): one line per frame.
fn tshark_fields(file: &Path, fields: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-r", file.to_str().unwrap(), "-d", "udp.port==51820,wg", "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(out.status.success(), "tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The box and its two neighbours; a failing test prints the console.
struct Lab {
    vm: Vm,
    lan: Link,
    wan: Link,
    port: String,
    box_lan_mac: Mac,
    box_wan_mac: Mac,
    peer: Tunn,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            return;
        }
        let _ = self.vm.attach_serial(Duration::from_secs(5));
        eprintln!("==== image console ====\n{}\n==== end of console ====", self.vm.console());
    }
}

impl Lab {
    fn start() -> Lab {
        let peer_secret = StaticSecret::random_from_rng(OsRng);
        let peer_public = PublicKey::from(&peer_secret);
        let b64 = base64::engine::general_purpose::STANDARD;
        let cmdline = format!("routerd.config={}", encoded(&config(&b64.encode(peer_public.as_bytes()))));
        let (machine, mut links) = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, ID, &cmdline);
        let mut vm = check(machine.spawn());
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
        lan.sock.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        wan.sock.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let dir = std::env::temp_dir().join(format!("routerd-capture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab { vm, lan, wan, port, box_lan_mac: test_mac(ID, 0), box_wan_mac: test_mac(ID, 1), peer, dir }
    }

    /// Reads what the box sent on the LAN, answering ARP for the host;
    /// true when an echo reply for the host came.
    fn drain_lan(&self, wait: Duration) -> bool {
        let mut replied = false;
        let deadline = Instant::now() + wait;
        while let Some(f) = self.lan.recv(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))) {
            if let Some(r) = net::answer_arp(&f, HOST, HOST_MAC) {
                let _ = self.lan.sock.send_to(&r, &self.lan.guest);
            }
            let reply = net::ip_payload(&f).and_then(net::icmp).is_some_and(|i| i.0 == 0 && i.3 == CLAIMED && i.4 == HOST);
            replied |= reply;
            if Instant::now() >= deadline {
                break;
            }
        }
        replied
    }

    /// Serves the WAN side for `limit`: ARP for the peer, WireGuard through
    /// boringtun; each echo request that comes out of the tunnel is answered
    /// through it. True when one did.
    fn serve_wan(&mut self, limit: Duration) -> bool {
        let mut answered = false;
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(f) = self.wan.recv(left) else { break };
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
            let mut inner = None;
            loop {
                match self.peer.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(src.0))), &datagram, &mut out) {
                    TunnResult::WriteToNetwork(d) => {
                        let frame = net::udp_frame(PEER_MAC, self.box_wan_mac, (PEER, WG_PORT), src, d);
                        self.wan.send(&frame);
                        datagram.clear();
                    }
                    TunnResult::WriteToTunnelV4(p, _) => {
                        inner = Some(p.to_vec());
                        break;
                    }
                    _ => break,
                }
            }
            let Some(p) = inner else { continue };
            let Some((8, 0, rest, from, to)) = net::icmp(&p) else { continue };
            if (from, to) != (HOST, CLAIMED) {
                continue;
            }
            // The echo reply, back through the tunnel.
            let seq = u16::from_be_bytes([rest[2], rest[3]]);
            let mut reply = Vec::new();
            let body: Vec<u8> = (0..56u8).collect();
            PacketBuilder::ipv4(CLAIMED, HOST, 64)
                .icmpv4_echo_reply(u16::from_be_bytes([rest[0], rest[1]]), seq)
                .write(&mut reply, &body)
                .unwrap();
            let mut sealed = vec![0u8; 2048];
            if let TunnResult::WriteToNetwork(d) = self.peer.encapsulate(&reply, &mut sealed) {
                let frame = net::udp_frame(PEER_MAC, self.box_wan_mac, (PEER, WG_PORT), src, d);
                self.wan.send(&frame);
                answered = true;
            }
        }
        answered
    }

    /// One ping from the LAN host through the tunnel and back; true when
    /// the reply reached the host (the first one starts the handshake).
    fn ping(&mut self, seq: u16) -> bool {
        let ping = net::icmp_echo_packet(HOST, CLAIMED, seq, 56, false);
        let _ = self.lan.sock.send_to(&net::ethernet(HOST_MAC, self.box_lan_mac, &ping), &self.lan.guest);
        let mut ok = false;
        for _ in 0..4 {
            self.serve_wan(Duration::from_millis(150));
            ok |= self.drain_lan(Duration::from_millis(100));
            if ok {
                break;
            }
        }
        ok
    }

    /// `routerctl ARGS` in the background, stderr to a file in the lab's directory.
    fn spawn(&self, args: &[&str], stdout: Stdio, name: &str) -> (Child, PathBuf) {
        let err = self.dir.join(format!("{name}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_routerctl"))
            .args(args)
            .stdout(stdout)
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start routerctl");
        (child, err)
    }
}

/// Waits (bounded) for the child while pinging through the tunnel.
fn ping_until_exit(lab: &mut Lab, child: &mut Child, limit: Duration, seq: &mut u16) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("routerctl capture did not end within {limit:?}");
        }
        *seq += 1;
        lab.ping(*seq);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_text(file: &Path, text: &str, limit: Duration) {
    let t0 = Instant::now();
    while !std::fs::read_to_string(file).unwrap_or_default().contains(text) {
        assert!(
            t0.elapsed() < limit,
            "no {text:?} in {} after {limit:?}: {}",
            file.display(),
            std::fs::read_to_string(file).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_capture_of_a_ping_through_the_tunnel_opens_in_tshark() {
    if !have("tshark") {
        if std::env::var_os("CI").is_some() {
            panic!("tshark is not installed (apt-get install --no-install-recommends tshark; cargo xtask deps)");
        }
        println!("skipped: tshark is not installed (apt-get install --no-install-recommends tshark)");
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::start();
    eprintln!("[{:5.1} s] booted, serial on {}", started.elapsed().as_secs_f64(), lab.port);
    let mut seq = 1u16;
    let mut up = false;
    for _ in 0..8 {
        seq += 1;
        if lab.ping(seq) {
            up = true;
            break;
        }
    }
    assert!(up, "no ping came back through the tunnel");
    eprintln!("[{:5.1} s] tunnel up, pings come back", started.elapsed().as_secs_f64());

    // 1. To a file, every port, the image's default rate cap.
    let pcap = lab.dir.join("tunnel.pcap");
    let pcap_s = pcap.to_str().unwrap().to_string();
    let port = lab.port.clone();
    let (mut child, err) = lab.spawn(&["capture", "-w", &pcap_s, "--duration", "6", "--json", "--port", &port], Stdio::piped(), "file");
    wait_for_text(&err, "capturing on", Duration::from_secs(10));
    let status = ping_until_exit(&mut lab, &mut child, Duration::from_secs(25), &mut seq);
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    eprintln!("$ routerctl capture -w {pcap_s} --duration 6 --json\n{out}{stderr}-> {status}");
    assert!(status.success(), "routerctl capture failed");
    let doc: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON document ({e}): {out}"));
    let frames = doc["frames"].as_u64().unwrap();
    assert!(frames >= 8, "{doc:#}");
    assert_eq!(doc["rate"], 8192, "the image's default cap: {doc:#}");
    assert_eq!(doc["on"], serde_json::json!(["lan0", "wan0"]));
    assert!(stderr.contains(&format!("captured {frames} frames (")) && stderr.contains("on lan0,wan0; skipped "), "{stderr}");
    assert!(stderr.contains("(rate cap 8 KiB/s)") && stderr.contains("(ring full)"), "{stderr}");

    let protocols = tshark_fields(&pcap, &["frame.protocols"]);
    eprintln!("$ tshark -r tunnel.pcap -d udp.port==51820,wg -T fields -e frame.protocols\n{}", protocols.join("\n"));
    assert_eq!(protocols.len() as u64, frames, "tshark reads every frame routerctl counted");
    let icmp = protocols.iter().find(|l| l.contains(":ip:icmp")).expect("an ICMP frame in the capture");
    let wg = protocols.iter().find(|l| l.contains(":wg")).expect("a WireGuard frame in the capture");
    eprintln!("ICMP: {icmp}\nWireGuard: {wg}");
    let summary = Command::new("tshark").args(["-r", &pcap_s, "-d", "udp.port==51820,wg"]).output().unwrap();
    let summary = String::from_utf8_lossy(&summary.stdout);
    eprintln!("$ tshark -r tunnel.pcap -d udp.port==51820,wg | head -12\n{}", summary.lines().take(12).collect::<Vec<_>>().join("\n"));
    assert_eq!(icmp, "eth:ethertype:ip:icmp:data");
    assert_eq!(wg, "eth:ethertype:ip:udp:wg");
    // Both directions of the ping on the LAN, transport data on the WAN.
    let detail = tshark_fields(&pcap, &["ip.src", "ip.dst", "icmp.type", "wg.type"]);
    assert!(detail.iter().any(|l| l.starts_with("10.20.0.10\t10.20.0.50\t8\t")), "{detail:#?}");
    assert!(detail.iter().any(|l| l.starts_with("10.20.0.50\t10.20.0.10\t0\t")), "{detail:#?}");
    assert!(detail.iter().any(|l| l.starts_with("192.0.2.2\t192.0.2.100\t\t4")), "WireGuard transport data to the peer: {detail:#?}");
    assert!(detail.iter().any(|l| l.starts_with("192.0.2.100\t192.0.2.2\t\t4")), "WireGuard transport data from the peer: {detail:#?}");
    eprintln!("[{:5.1} s] file capture: {frames} frames", started.elapsed().as_secs_f64());

    // 2. To stdout, into tshark live: only ICMP, four frames.
    let mut tshark = Command::new("tshark")
        .args(["-r", "-", "-T", "fields", "-e", "frame.protocols"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark -r -");
    let pipe = tshark.stdin.take().unwrap();
    let (mut child, err) =
        lab.spawn(&["capture", "-w", "-", "--filter", "icmp", "--count", "4", "--port", &port], Stdio::from(pipe), "pipe");
    let status = ping_until_exit(&mut lab, &mut child, Duration::from_secs(25), &mut seq);
    let stderr = std::fs::read_to_string(&err).unwrap();
    eprintln!("$ routerctl capture -w - --filter icmp --count 4 | tshark -r -\n{stderr}-> {status}");
    assert!(status.success());
    let read: Output = tshark.wait_with_output().unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&read.stdout).lines().map(str::to_string).collect();
    eprintln!("tshark -r - read:\n{}", lines.join("\n"));
    assert!(read.status.success());
    assert_eq!(lines.len(), 4, "--count 4: {lines:?}");
    assert!(lines.iter().all(|l| l == "eth:ethertype:ip:icmp:data"), "{lines:?}");
    assert!(stderr.contains("captured 4 frames"), "{stderr}");

    // 3. Ctrl-C (SIGINT) ends a capture without --count or --duration
    // cleanly: the box is told, the file is complete, the summary printed.
    let stopped = lab.dir.join("interrupted.pcap");
    let stopped_s = stopped.to_str().unwrap().to_string();
    let (mut child, err) = lab.spawn(&["capture", "-w", &stopped_s, "--filter", "icmp", "--port", &port], Stdio::null(), "sigint");
    wait_for_text(&err, "capturing on", Duration::from_secs(10));
    for _ in 0..3 {
        seq += 1;
        lab.ping(seq);
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = ping_until_exit(&mut lab, &mut child, Duration::from_secs(10), &mut seq);
    let stderr = std::fs::read_to_string(&err).unwrap();
    eprintln!("$ routerctl capture -w {stopped_s} --filter icmp   (then SIGINT)\n{stderr}-> {status}");
    assert!(status.success(), "{stderr}");
    let n: usize = stderr
        .split("captured ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    assert!(n >= 2, "three pings went meanwhile: {stderr}");
    assert_eq!(tshark_fields(&stopped, &["frame.protocols"]).len(), n, "the file holds what the summary says");

    // The session ended cleanly: status works right after.
    let st = Command::new(env!("CARGO_BIN_EXE_routerctl")).args(["status", "--port", &port]).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    check(lab.vm.attach_serial(Duration::from_secs(5)));
    assert!(!lab.vm.console().contains("PANIC"), "the box panicked");
    eprintln!("[{:5.1} s] done", started.elapsed().as_secs_f64());
    lab.vm.kill();
}

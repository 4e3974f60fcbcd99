//! Issue 5 end to end: the real image in QEMU, provisioned by the real
//! `routerctl` binary over the VM's serial socket.
//!
//! The box boots unconfigured. `routerctl apply` sends a configuration;
//! `status --json` shows it; `claims add` makes the box answer ARP for the
//! new address within a second and `claims remove` stops it; an invalid
//! configuration is refused with the field named while the running one
//! keeps answering; garbage on the line in the middle of a session does not
//! break the next request. ARP is checked on the LAN NIC's socket with
//! frames built by etherparse.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use etherparse::ArpOperation;
use routerd_e2e::net::{self, Ip, Link, Mac};
use routerd_e2e::qemu::{MachineType, NicModel};
use routerd_e2e::{check, two_nic_machine};
use routerd_provision::frame::{self, Decoder, Event, MAX_FRAME};
use routerd_provision::message::{self, Op, Reply, Request, Up, PROTOCOL_HASH, PROTOCOL_VERSION};
use serde_json::Value;

const HOST_MAC: Mac = [0x02, 0x11, 0, 0, 0, 10];
const HOST: Ip = [10, 20, 0, 10];

fn config(extra: &str) -> String {
    common::onprem_config("prov-onprem", None, &["10.20.0.50/32", "10.20.0.51/32", "10.20.0.52/32"]) + extra
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Who answers ARP for `ip` on the LAN within `wait` (the box's MAC, or none).
fn arp_answer(lan: &Link, ip: Ip, wait: Duration) -> Option<Mac> {
    lan.send(&net::arp_request(HOST_MAC, HOST, ip));
    lan.wait_for(wait, |f| match net::parse_arp(f) {
        Some((ArpOperation::REPLY, mac, sender, target)) if sender == ip && target == HOST => Some(mac),
        _ => None,
    })
}

/// Asks ARP for `ip` every 200 ms until the box answers or `within` passes
/// (a new proxy-ARP claim probes for a live host for ~0.6 s before it
/// answers). The box's MAC and how long it took.
fn arp_answer_within(lan: &Link, ip: Ip, within: Duration) -> Option<(Mac, Duration)> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Some(mac) = arp_answer(lan, ip, Duration::from_millis(200)) {
            return Some((mac, t0.elapsed()));
        }
    }
    None
}

/// Speaks the protocol directly (to put garbage between requests).
struct Raw {
    s: UnixStream,
    d: Box<Decoder<MAX_FRAME>>,
}

impl Raw {
    fn send(&mut self, seq: u32, op: Op) {
        let mut p = vec![0u8; frame::MAX_PAYLOAD];
        let n = message::encode(&Request { seq, op }, &mut p).unwrap().len();
        let mut f = vec![0u8; MAX_FRAME];
        let m = frame::encode(&p[..n], &mut f).unwrap();
        self.s.write_all(&f[..m]).unwrap();
    }

    fn recv(&mut self, seq: u32) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let n = match self.s.read(&mut buf) {
                Ok(n) => n,
                Err(_) => continue, // read timeout
            };
            for &b in &buf[..n] {
                if let Some(Event::Frame(p)) = self.d.push(b) {
                    if let Ok(Up::Response(r)) = message::decode::<Up>(p) {
                        if r.seq == seq {
                            return r.reply;
                        }
                    }
                }
            }
        }
        panic!("no answer to request {seq}");
    }
}

#[test]
fn routerctl_provisions_a_running_box() {
    let (machine, links) = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, 0x51, "");
    let mut vm = check(machine.spawn());
    check(vm.wait_for("not forwarding: no configuration yet", Duration::from_secs(60)));
    vm.release_serial();
    let dir = machine.run_dir.clone();
    let port = format!("unix:{}", vm.serial_path().display());
    let lan = &links[0];

    // Unconfigured: status works and says so.
    let out = common::routerctl(&["status", "--port", &port, "--json"]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"]["configured"], false);
    assert_eq!(doc["status"]["ports"][0]["name"], "lan0");
    assert_eq!(arp_answer(lan, [10, 20, 0, 50], Duration::from_millis(500)), None);

    // Apply: the plan is shown, the key is made on the box.
    let good = write(&dir, "onprem.toml", &config(""));
    let out = common::routerctl(&["apply", good.to_str().unwrap(), "--port", &port, "--yes"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("+ claims 10.20.0.50/32"), "{text}");
    assert!(text.contains("public key"), "{text}");

    let out = common::routerctl(&["status", "--port", &port, "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &doc["status"];
    assert_eq!(st["configured"], true);
    assert_eq!(st["device"], "prov-onprem");
    assert_eq!(st["claims"][0]["address"], "10.20.0.50");
    assert_eq!(st["claims"][0]["role"], "ProxyArp");
    assert_eq!(st["claims"][0]["mss"], 1380);
    let public = st["tunnel"]["public_key"].as_str().unwrap().to_string();
    assert_eq!(public.len(), 44);
    let out = common::routerctl(&["key", "show", "--port", &port, "--json"]);
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys["keys"][0]["public_key"], public.as_str());
    assert_eq!(keys["keys"][0]["slot"], "wg0");
    let (box_mac, _) = arp_answer_within(lan, [10, 20, 0, 50], Duration::from_secs(3)).expect("claim answered after apply");

    // claims add: answered once its probes went unanswered (well within
    // two seconds); remove: silent again.
    assert_eq!(arp_answer(lan, [10, 20, 0, 52], Duration::from_millis(300)), None);
    let out = common::routerctl(&["claims", "add", "10.20.0.52", "--owner", "cloud", "--port", &port]);
    assert!(out.status.success());
    let (mac, took) = arp_answer_within(lan, [10, 20, 0, 52], Duration::from_secs(2)).expect("new claim answered");
    assert_eq!(mac, box_mac);
    eprintln!("claims add → ARP answered {} ms after routerctl returned", took.as_millis());
    let out = common::routerctl(&["claims", "list", "--port", &port, "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["claims"].as_array().unwrap().len(), 2);
    // Same key after a claim add: the tunnel was kept.
    let out = common::routerctl(&["status", "--port", &port, "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"]["tunnel"]["public_key"], public.as_str());
    let out = common::routerctl(&["claims", "remove", "10.20.0.52", "--port", &port]);
    assert!(out.status.success());
    assert_eq!(arp_answer(lan, [10, 20, 0, 52], Duration::from_secs(1)), None);

    // Invalid here: refused before sending, the field named, exit 1 (as `config validate`).
    let bad = write(&dir, "bad.toml", &config("[[claims]]\naddress = \"10.20.0.51/24\"\nowner = \"cloud\"\ncapture = { method = \"proxy-arp\", port = \"lan0\" }\ndelivery = { tunnel = \"wg0\", peer = \"cloud\" }\n"));
    let out = common::routerctl(&["apply", bad.to_str().unwrap(), "--port", &port, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("claims[1].address"));
    // Valid but impossible on this box (no NIC with that MAC): the box
    // refuses, names the port, and keeps running the old configuration.
    let nomac = config("").replace("name = \"wan0\"\nrole = \"wan\"", "name = \"wan0\"\nrole = \"wan\"\nmac = \"02:00:00:00:99:99\"");
    let nomac = write(&dir, "nomac.toml", &nomac);
    let out = common::routerctl(&["apply", nomac.to_str().unwrap(), "--port", &port, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ports[1]"), "the refusal names the port");
    assert_eq!(arp_answer(lan, [10, 20, 0, 50], Duration::from_secs(1)), Some(box_mac), "running config lost");
    let out = common::routerctl(&["config", "get", "--port", &port]);
    assert!(out.status.success());
    let running = config_schema::human::from_toml(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(running, config_schema::human::from_toml(&config("")).unwrap());

    // Garbage in the middle of a session does not break the next request.
    let s = UnixStream::connect(vm.serial_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut raw = Raw { s, d: Box::new(Decoder::new()) };
    raw.send(1, Op::Hello { version: PROTOCOL_VERSION, hash: PROTOCOL_HASH });
    assert!(matches!(raw.recv(1), Reply::Hello(_)));
    let mut junk = b"\x00\xff\xfe line noise \x13\x37 typed text\r\n".to_vec();
    junk.extend((0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    raw.s.write_all(&junk).unwrap();
    raw.send(2, Op::Status { mark: false });
    match raw.recv(2) {
        Reply::Status(st) => {
            assert!(st.configured);
            assert!(st.serial.not_a_frame + st.serial.bad_checksum + st.serial.overflow > 0, "{:?}", st.serial);
        }
        other => panic!("{other:?}"),
    }
    raw.send(3, Op::Bye);
    assert!(matches!(raw.recv(3), Reply::Done));
    drop(raw);

    // Log lines travel inside the session: a live host appears with a
    // claimed address, and `routerctl logs` shows the box's conflict line.
    let logs = Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .args(["logs", "--port", &port, "--for", "4", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let live: Mac = [0x02, 0x99, 0, 0, 0, 0x50];
    let garp = net::arp(ArpOperation::REQUEST, live, [10, 20, 0, 50], [0xff; 6], [0; 6], [10, 20, 0, 50]);
    lan.send(&garp);
    let out = logs.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("routerctl logs:\n{text}");
    assert!(out.status.success());
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["text"].as_str().is_some_and(|t| t.contains("claim 10.20.0.50: CONFLICT")))
        .expect("the conflict was logged inside the session");
    assert!(line["text"].as_str().unwrap().contains("02:99:00:00:00:50"));
    assert_eq!(arp_answer(lan, [10, 20, 0, 50], Duration::from_millis(500)), None, "a claim in conflict must not answer");
    let out = common::routerctl(&["claims", "list", "--port", &port]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("CONFLICT (live host 02:99:00:00:00:50, heard"));

    // The console is readable again once the session ended.
    check(vm.attach_serial(Duration::from_secs(5)));
    let before = vm.console().len();
    vm.serial().write_all(b"status\r").unwrap();
    check(vm.wait_for_after(before, "end of status", Duration::from_secs(5)));
    assert!(vm.console()[before..].contains("claim 10.20.0.50"));
}

#[test]
fn a_box_that_is_not_there_is_a_clear_error() {
    let out = common::routerctl(&["status", "--port", "unix:/nonexistent/box.sock"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unix:/nonexistent/box.sock") && err.contains("is the box running"), "{err}");
    let out = common::routerctl(&["status", "--port", "ttyUSB0"]);
    assert_eq!(out.status.code(), Some(2));
}

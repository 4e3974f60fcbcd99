//! routerd-host remembers like the box: `--state-dir`, driven by the real
//! `routerctl` over the control socket, in a network namespace this test
//! creates (and always removes).
//!
//! Checked: an existing `--key-file` is adopted into the new store (the
//! same public key, logged); a configuration applied through `routerctl`
//! is saved before the answer; after SIGKILL (no clean stop) and a start
//! with the same arguments the applied configuration runs — not the
//! `--config` file — with the same public key, even though the key file was
//! replaced meanwhile (the store is the truth now), and status reports the
//! store (disk `file`, the path, generation, boots 1) and the clock; a
//! garbage state file makes routerd-host exit 1 saying to move it away, and
//! is left byte for byte; without `--state-dir`, `routerctl status` says
//! `storage: NONE … will not survive a restart` and `doctor` warns. Needs
//! root, /dev/net/tun, `ip`; without them the test prints "skipped: …" and
//! passes, unless `CI` is set, where it fails. Every wait is bounded.

mod common;

use common::{ctl, doctor, output_within, prerequisites, run, skip_or_fail, start_routerd_host, verdict, veth, wait_exit, Lab};
use std::process::Command;
use std::time::Duration;

fn config(name: &str, wan: &str, extra: &str) -> String {
    format!(
        r#"[device]
name = "{name}"
side = "cloud"

[[ports]]
name = "lan0"
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
allowed_ips = ["10.20.0.50/32", "10.20.0.60/32"]

[[claims]]
address = "10.20.0.50/32"
owner = "onprem"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "onprem" }}
{extra}"#
    )
}

const SECOND_CLAIM: &str = r#"
[[claims]]
address = "10.20.0.60/32"
owner = "onprem"
capture = { method = "proxy-arp", port = "lan0" }
delivery = { tunnel = "wg0", peer = "onprem" }
"#;

/// SIGKILL: no clean stop, nothing flushed on the way out.
fn kill(lab: &mut Lab, pid: u32) {
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs routerd-host).
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let child = lab.children.iter_mut().find(|c| c.id() == pid).expect("our child");
    assert!(wait_exit(child, Duration::from_secs(10)).is_some(), "routerd-host gone after SIGKILL");
}

#[test]
fn routerd_host_keeps_its_state_in_a_state_dir() {
    if let Some(reason) = prerequisites(&["ip"], "apt-get install --no-install-recommends iproute2") {
        return skip_or_fail("routerd-host --state-dir test", &reason);
    }
    let pid = std::process::id();
    let x = pid % 200 + 20;
    let (ns_r, ns_w) = (format!("rds{pid}r"), format!("rds{pid}w"));
    let tap = format!("rdsl{pid}");
    let wan = format!("10.67.{x}.1");
    let mut lab = Lab::new(std::env::temp_dir().join(format!("routerd-host-state-{pid}")));
    for ns in [&ns_r, &ns_w] {
        lab.netns(ns);
    }
    veth(&ns_r, &format!("rdsr{pid}"), &format!("{wan}/24"), &ns_w, &format!("rdsw{pid}"), &format!("10.67.{x}.2/24"));
    let dir = lab.dir.clone();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(dir.join("first.toml"), config("state-first", &wan, "")).unwrap();
    std::fs::write(dir.join("applied.toml"), config("state-applied", &wan, SECOND_CLAIM)).unwrap();
    let (first, applied, sock, key_file, state_dir) =
        (path("first.toml"), path("applied.toml"), path("ctl.sock"), path("wg.key"), path("state"));
    let port = format!("unix:{sock}");
    let host = env!("CARGO_BIN_EXE_routerd-host");

    // A key file from before --state-dir existed.
    let adopted = run(&[host, "pubkey", "--key-file", &key_file]).unwrap().trim().to_string();
    assert_eq!(adopted.len(), 44);

    let lan_map = format!("lan0={tap}");
    let args = ["--config", &first, "--key-file", &key_file, "--state-dir", &state_dir, "--control", &sock, "--port", &lan_map];

    // 1. First start: the key file is adopted into a new store.
    let run1 = start_routerd_host(&mut lab, &ns_r, "first", &args);
    let log = run1.log();
    assert!(log.contains("new store"), "{log}");
    assert!(log.contains("imported into the store"), "the key file is adopted, and says so:\n{log}");
    assert_eq!(run1.printed_key(), adopted, "the key file's key runs");
    let meta = std::fs::metadata(&state_dir).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o700);
    let st = ctl(&port, &["status", "--json"]).json()["status"].clone();
    assert_eq!(st["storage"]["disk"], "file");
    assert!(st["storage"]["note"].as_str().unwrap().contains(&format!("{state_dir}/state")), "{}", st["storage"]);
    assert_eq!(st["clock_source"], "system");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let wall = st["wall_clock_ms"].as_u64().unwrap();
    assert!(wall.abs_diff(now_ms) < 60_000, "the wall clock {wall} is the system's {now_ms}");

    // 2. An apply through routerctl: saved before the answer.
    let out = ctl(&port, &["apply", &applied, "--yes"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let st = ctl(&port, &["status", "--json"]).json()["status"].clone();
    assert_eq!(st["device"], "state-applied");
    let generation = st["storage"]["generation"].as_u64().unwrap();
    assert!(generation >= 2, "the start and the apply: {}", st["storage"]);
    assert!(st["storage"]["saves"].as_u64().unwrap() >= 2, "{}", st["storage"]);

    // 3. SIGKILL; the key file is replaced meanwhile; the same start.
    kill(&mut lab, run1.pid);
    std::fs::remove_file(&key_file).unwrap();
    let other = run(&[host, "pubkey", "--key-file", &key_file]).unwrap().trim().to_string();
    assert_ne!(other, adopted);
    let run2 = start_routerd_host(&mut lab, &ns_r, "second", &args);
    let log = run2.log();
    assert!(log.contains(&format!("restored configuration generation {generation}")), "{log}");
    assert_eq!(run2.printed_key(), adopted, "the store's key, not the replaced file's");
    let st = ctl(&port, &["status", "--json"]).json()["status"].clone();
    assert_eq!(st["device"], "state-applied", "the applied configuration, not --config");
    assert_eq!(st["claims"].as_array().unwrap().len(), 2);
    assert_eq!(st["tunnel"]["public_key"], adopted.as_str());
    assert_eq!(st["storage"]["boots"], 1);
    assert_eq!(st["storage"]["generation"], generation);
    let text = ctl(&port, &["status"]).stdout;
    assert!(text.contains("storage: state file") && text.contains("clock: "), "{text}");
    assert_eq!(verdict(&doctor(&port), "storage", "file"), "pass");

    // 4. Garbage in the state file: refused, exit 1, never overwritten.
    kill(&mut lab, run2.pid);
    let file = dir.join("state").join("state");
    let mut garbage = std::fs::read(&file).unwrap();
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ 0x5a;
    }
    std::fs::write(&file, &garbage).unwrap();
    let (status, _, stderr) = output_within(Command::new("ip").args(["netns", "exec", &ns_r, host]).args(args), Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("will not overwrite") && stderr.contains("mv "), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "left byte for byte");

    // 5. Without --state-dir nothing survives, and routerctl says so.
    let bare = ["--config", &first, "--control", &sock, "--port", &lan_map];
    let _run3 = start_routerd_host(&mut lab, &ns_r, "bare", &bare);
    let text = ctl(&port, &["status"]).stdout;
    assert!(text.contains("storage: NONE") && text.contains("will not survive a restart"), "{text}");
    assert_eq!(verdict(&doctor(&port), "storage", "box"), "warn");
}

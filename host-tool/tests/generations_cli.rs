//! `routerctl config history`, `config get --generation`, `rollback`,
//! `apply --confirm` / `confirm` and `reset`, end to end against a real
//! routerd-control node behind the provisioning session on a unix socket
//! (as `cli.rs`'s fake box), whose loop turns (`Node::apply_services`) the
//! way the image's do, so a commit-confirm runs out by itself.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_core::OsRng;
use routerd_control::{NicInfo, NicSnapshot, Node};
use routerd_dataplane::Instant;
use routerd_provision::session::{Session, Step};
use serde_json::Value;

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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn config(name: &str, keepalive: u16) -> String {
    format!(
        "[device]\nname = \"{name}\"\nside = \"onprem\"\n\
        [[ports]]\nname = \"lan0\"\nrole = \"lan\"\naddress = \"10.20.0.2/24\"\n\
        [[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"192.168.1.35/24\"\ngateway = \"192.168.1.1\"\n\
        [[wireguard]]\nname = \"wg0\"\nprivate_key = \"device:wg0\"\n\
        [[peers]]\nname = \"cloud\"\ntunnel = \"wg0\"\npublic_key = \"ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\"\n\
        endpoint = \"203.0.113.10:51820\"\npersistent_keepalive = {keepalive}\nallowed_ips = [\"10.20.0.50/32\", \"10.20.0.51/32\"]\n\
        [[claims]]\naddress = \"10.20.0.50/32\"\nowner = \"cloud\"\n\
        capture = {{ method = \"proxy-arp\", port = \"lan0\" }}\ndelivery = {{ tunnel = \"wg0\", peer = \"cloud\" }}\n"
    )
}

/// A box in this process; its loop turns every 50 ms and logs what the
/// node reports (kept in `log`).
struct FakeBox {
    port: String,
    dir: PathBuf,
    node: Arc<Mutex<Box<Node<OsRng>>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for FakeBox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(tag: &str) -> FakeBox {
    let dir = std::env::temp_dir().join(format!("routerctl-gen-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("box.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let nics = [NicInfo::ethernet([2, 0, 0, 0, 0, 1]), NicInfo::ethernet([2, 0, 0, 0, 0, 2])];
    let mut node: Box<Node<OsRng>> = Box::new(Node::new(&nics, Some(OsRng), "0.1.0", "test"));
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    node.set_wall_clock(Instant::ZERO, epoch);
    let node = Arc::new(Mutex::new(node));
    let log = Arc::new(Mutex::new(Vec::new()));
    let start = std::time::Instant::now();
    let now = move || Instant::from_millis(start.elapsed().as_millis() as u64);
    let (n, l) = (node.clone(), log.clone());
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let mut n = n.lock().unwrap();
        n.apply_services(now());
        while let Some(e) = n.take_event() {
            l.lock().unwrap().push(e.to_string());
        }
    });
    let n = node.clone();
    std::thread::spawn(move || {
        let snaps = vec![NicSnapshot { link_up: true, ..NicSnapshot::default() }; 2];
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut session = Box::new(Session::new("routerd-test", "test"));
            let mut buf = [0u8; 4096];
            while let Ok(k @ 1..) = stream.read(&mut buf) {
                for &b in &buf[..k] {
                    let ms = now().millis();
                    let request = match session.push(b, ms) {
                        Step::Nothing => None,
                        Step::Send(f) => {
                            let _ = stream.write_all(f);
                            None
                        }
                        Step::Execute(req) => Some(req),
                    };
                    if let Some(req) = request {
                        let reply = n.lock().unwrap().handle(now(), req.op, &snaps);
                        let _ = stream.write_all(session.respond(req.seq, reply));
                    }
                }
            }
        }
    });
    FakeBox { port: format!("unix:{}", path.display()), dir, node, log }
}

fn write(b: &FakeBox, name: &str, text: &str) -> String {
    let p = b.dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn history_get_and_rollback() {
    let b = start("rollback");
    let port = b.port.as_str();
    let o = routerctl(&["config", "history", "--port", port]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("none: the box has run no configuration yet"), "{}", stdout(&o));
    let (a, c) = (write(&b, "a.toml", &config("edge", 25)), write(&b, "b.toml", &config("edge", 20)));
    assert!(routerctl(&["apply", &a, "--yes", "--port", port]).status.success());
    let key = json(&routerctl(&["status", "--json", "--port", port]))["status"]["tunnel"]["public_key"].clone();
    assert!(routerctl(&["claims", "add", "10.20.0.51", "--owner", "cloud", "--port", port]).status.success());
    assert!(routerctl(&["apply", &c, "--yes", "--port", port]).status.success());

    let text = stdout(&routerctl(&["config", "history", "--port", port]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("generations kept on unix:"), "{text}");
    assert!(lines[2].contains("    1  ") && lines[2].contains("apply"), "{text}");
    assert!(lines[3].contains("claim add 10.20.0.51"), "{text}");
    assert!(lines[4].starts_with("*     3"), "the running one is marked: {text}");
    let year = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 31_556_952 + 1970;
    assert!(lines[4].contains(&format!("  {year}-")), "applied in UTC: {text}");
    let doc = json(&routerctl(&["config", "history", "--json", "--port", port]));
    let gens = doc["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 3);
    assert_eq!(doc["running"], 3);
    assert_eq!(gens[2]["running"], true);
    assert_eq!(gens[1]["what"], "claim add 10.20.0.51");
    let hash = gens[0]["hash"].as_str().unwrap();
    assert!(hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert!(text.contains(hash), "the same short hash in both: {text}");

    // A kept generation as TOML, like `config get`; one not kept exits 1 naming the kept.
    let o = routerctl(&["config", "get", "--generation", "1", "--port", port]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("persistent_keepalive = 25") && !stdout(&o).contains("10.20.0.51/32\"\nowner"), "{}", stdout(&o));
    let o = routerctl(&["config", "get", "--generation", "9", "--port", port]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("generation 9 is not kept on this box (kept: 1, 2, 3)"), "{}", stderr(&o));

    // Rollback to a generation not kept: exit 1, the kept ones named, nothing sent.
    let o = routerctl(&["rollback", "7", "--yes", "--port", port]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("generation 7 is not kept") && stderr(&o).contains("kept: 1, 2, 3"), "{}", stderr(&o));
    // Default: the previous generation, with the plan shown first.
    let o = routerctl(&["rollback", "--yes", "--port", port]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("from generation 3 to generation 2 (claim add 10.20.0.51"), "{out}");
    assert!(out.contains("  ~ peers cloud"), "the plan: {out}");
    assert!(out.contains("as generation 4"), "{out}");
    let st = json(&routerctl(&["status", "--json", "--port", port]))["status"].clone();
    assert_eq!(st["generation"], 4);
    assert_eq!(st["tunnel"]["public_key"], key, "keys unchanged");
    assert_eq!(st["claims"].as_array().unwrap().len(), 2);
    let doc = json(&routerctl(&["config", "history", "--json", "--port", port]));
    assert_eq!(doc["generations"][3]["what"], "rollback to 2");
    // The running one: nothing to do.
    assert_eq!(routerctl(&["rollback", "4", "--yes", "--port", port]).status.code(), Some(1));

    // A configuration this firmware refuses: exit 1, the reason named, nothing changed.
    b.node.lock().unwrap().set_platform(config_schema::Platform::Host);
    let mut bad = config("edge", 25);
    // A peer by DNS name without [dns] servers: the host build resolves it
    // itself, the image has nobody to ask.
    bad = bad.replace("endpoint = \"203.0.113.10:51820\"", "endpoint = \"cloud.example.net:51820\"");
    let bad = write(&b, "bad.toml", &bad);
    assert!(routerctl(&["apply", &bad, "--yes", "--port", port]).status.success(), "the host build runs it");
    b.node.lock().unwrap().set_platform(config_schema::Platform::Image);
    let o = routerctl(&["rollback", "5", "--yes", "--port", port]);
    assert_eq!(o.status.code(), Some(1), "rollback to 5 is the running one");
    let o = routerctl(&["rollback", "--yes", "--port", port]);
    assert_eq!(o.status.code(), Some(0), "back to 4, which the image runs: {}", stderr(&o));
    let o = routerctl(&["rollback", "5", "--yes", "--port", port]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error") && stderr(&o).contains("peers[0].endpoint"), "names the field: {}", stderr(&o));
    assert_eq!(json(&routerctl(&["status", "--json", "--port", port]))["status"]["generation"], 6);
}

#[test]
fn commit_confirm_reverts_unless_confirmed() {
    let b = start("confirm");
    let port = b.port.as_str();
    let (a, c) = (write(&b, "a.toml", &config("edge", 25)), write(&b, "b.toml", &config("edge", 20)));
    // Nothing to confirm; nothing to go back to.
    let o = routerctl(&["confirm", "--port", port]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nothing is waiting for confirmation"), "{}", stderr(&o));
    assert_eq!(routerctl(&["apply", &a, "--yes", "--confirm", "1", "--port", port]).status.code(), Some(1));
    assert!(routerctl(&["apply", &a, "--yes", "--port", port]).status.success());
    // The window's bounds are checked here.
    assert_eq!(routerctl(&["apply", &c, "--yes", "--confirm", "61", "--port", port]).status.code(), Some(2));
    assert_eq!(routerctl(&["apply", &c, "--yes", "--confirm-seconds", "4", "--port", port]).status.code(), Some(2));

    // Confirmed in time: kept.
    let o = routerctl(&["apply", &c, "--yes", "--confirm-seconds", "5", "--port", port]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("on trial: generation 2 reverts to 1 in 5 s unless you run `routerctl confirm"), "{}", stdout(&o));
    let text = stdout(&routerctl(&["status", "--port", port]));
    assert!(text.contains("pending confirmation: generation 2 reverts to 1 in "), "{text}");
    let st = json(&routerctl(&["status", "--json", "--port", port]));
    assert_eq!(st["status"]["pending_confirm"]["reverts_to"], 1);
    let h = stdout(&routerctl(&["config", "history", "--port", port]));
    assert!(h.contains("pending confirmation: reverts to 1 in"), "{h}");
    let o = routerctl(&["confirm", "--port", port]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("keeps generation 2"), "{}", stdout(&o));
    std::thread::sleep(Duration::from_millis(5_500));
    let st = json(&routerctl(&["status", "--json", "--port", port]))["status"].clone();
    assert_eq!((st["generation"].clone(), st["pending_confirm"].clone()), (2.into(), Value::Null));

    // Not confirmed: the box goes back by itself, as a new generation, and logs it.
    assert!(routerctl(&["apply", &a, "--yes", "--confirm-seconds", "5", "--port", port]).status.success());
    let o = routerctl(&["config", "get", "--port", port]);
    assert!(stdout(&o).contains("persistent_keepalive = 25"));
    std::thread::sleep(Duration::from_millis(6_000));
    let logged = b.log.lock().unwrap().clone();
    assert_eq!(logged, ["config: generation 3 was not confirmed within 5 s; reverted to generation 2 (now generation 4)"]);
    let o = routerctl(&["config", "get", "--port", port]);
    assert!(stdout(&o).contains("persistent_keepalive = 20"), "back on generation 2's configuration");
    let doc = json(&routerctl(&["config", "history", "--json", "--port", port]));
    assert_eq!(doc["generations"][3]["what"], "revert of 3 (not confirmed)");
    assert_eq!(doc["generations"][2]["confirmed"], false);
    assert_eq!(routerctl(&["confirm", "--port", port]).status.code(), Some(1), "too late");
}

#[test]
fn doctor_warns_while_on_trial() {
    let b = start("doctor");
    let port = b.port.as_str();
    let (a, c) = (write(&b, "a.toml", &config("edge", 25)), write(&b, "b.toml", &config("edge", 20)));
    assert!(routerctl(&["apply", &a, "--yes", "--port", port]).status.success());
    assert!(routerctl(&["apply", &c, "--yes", "--confirm", "10", "--port", port]).status.success());
    let doc = json(&routerctl(&["doctor", "hybrid", "--json", "--port", port]));
    let check = doc["checks"].as_array().unwrap().iter().find(|c| c["id"] == "config.confirm").cloned().expect("a confirm check");
    assert_eq!(check["result"], "warn");
    assert!(check["reason"].as_str().unwrap().contains("generation 2 reverts to 1 in 600 s"), "{check}");
}

#[test]
fn reset_checks_the_name_first_and_forgets_everything() {
    let b = start("reset");
    let port = b.port.as_str();
    let a = write(&b, "a.toml", &config("edge", 25));
    assert!(routerctl(&["apply", &a, "--yes", "--port", port]).status.success());
    let key = json(&routerctl(&["status", "--json", "--port", port]))["status"]["tunnel"]["public_key"].clone();
    assert_eq!(routerctl(&["reset", "--device", "edge", "--port", port]).status.code(), Some(2), "no --yes");
    let o = routerctl(&["reset", "--yes", "--device", "other", "--port", port]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is named \"edge\", not \"other\": not reset, nothing was sent"), "{}", stderr(&o));
    assert!(json(&routerctl(&["status", "--json", "--port", port]))["status"]["configured"] == true);

    let o = routerctl(&["reset", "--yes", "--device", "edge", "--port", port]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("edge: factory reset"), "{}", stdout(&o));
    let st = json(&routerctl(&["status", "--json", "--port", port]))["status"].clone();
    assert_eq!(st["configured"], false);
    assert!(json(&routerctl(&["key", "show", "--json", "--port", port]))["keys"].as_array().unwrap().is_empty());
    assert!(json(&routerctl(&["config", "history", "--json", "--port", port]))["generations"].as_array().unwrap().is_empty());
    assert!(b.node.lock().unwrap().take_erase(), "the platform is told to erase its store");
    // Unconfigured: the name is "".
    assert_eq!(routerctl(&["reset", "--yes", "--device", "edge", "--port", port]).status.code(), Some(1));
    assert_eq!(routerctl(&["reset", "--yes", "--device", "", "--port", port]).status.code(), Some(0));
    assert!(routerctl(&["apply", &a, "--yes", "--port", port]).status.success());
    let st = json(&routerctl(&["status", "--json", "--port", port]))["status"].clone();
    assert_ne!(st["tunnel"]["public_key"], key, "a new key after a reset");
    assert_eq!(st["generation"], 1);
}

//! Runs the built `routerctl` binary: exit codes, output and JSON documents.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const EXAMPLES: &[&str] = &["hybrid-onprem", "hybrid-cloud", "two-site-roz", "two-site-wro"];

fn example_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-schema/examples").join(format!("{name}.toml"))
}

fn routerctl(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start routerctl");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            // routerctl may stop reading early (oversized input): a broken
            // pipe here is its answer, not a test failure.
            let _ = input.write_all(bytes);
        }
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!("routerctl-test-{}-{}.toml", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn example_text(name: &str) -> String {
    std::fs::read_to_string(example_path(name)).unwrap()
}

/// Every shipped example runs on both platforms.
#[test]
fn every_example_validates_or_names_what_stops_it() {
    for name in EXAMPLES {
        let path = example_path(name);
        for platform in ["image", "host"] {
            let o = routerctl(&["config", "validate", path.to_str().unwrap(), "--for", platform], None);
            let refusals: &[&str] = match (*name, platform) {
                ("hybrid-onprem" | "hybrid-cloud", _) => &[],
                _ => &[],
            };
            let out = stdout(&o);
            if refusals.is_empty() {
                assert_eq!(o.status.code(), Some(0), "{name} --for {platform}: {out}{}", stderr(&o));
                assert!(out.contains(": valid ("), "{out}");
                // routerd-host resolves with the host's resolver: roz's [dns] is a warning only.
                let warned = (*name, platform) == ("two-site-roz", "host");
                assert_eq!(out.contains("1 warning\n") && out.contains("warning[dns-servers-host] dns.servers"), warned, "{out}");
            } else {
                assert_eq!(o.status.code(), Some(1), "{name} --for {platform}: {out}{}", stderr(&o));
                let count = if refusals.len() == 1 { "1 error,".to_string() } else { format!("{} errors,", refusals.len()) };
                assert!(out.contains(&count), "{out}");
                for r in refusals {
                    assert!(out.contains(r), "{name} --for {platform}: {r} missing\n{out}");
                }
            }
        }
        // The image is the default.
        let o = routerctl(&["config", "validate", path.to_str().unwrap()], None);
        assert!(stdout(&o).contains("for the image)"), "{}", stdout(&o));
    }
}

#[test]
fn errors_exit_1_and_name_path_value_and_hint() {
    let text = example_text("hybrid-onprem")
        .replace("address = \"10.20.0.10/32\"", "address = \"10.0.0.9/24\"")
        .replace("peer = \"cloud\"", "peer = \"azure\"");
    let f = TempFile::new(&text);
    let o = routerctl(&["config", "validate", f.arg()], None);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("INVALID"), "{out}");
    assert!(out.contains("error[claim-not-host] claims[2].address: 10.0.0.9/24 is not a /32"), "{out}");
    assert!(out.contains("hint: a claim moves one address: write 10.0.0.9/32"), "{out}");
    // Every problem, not only the first: both claims with the unknown peer.
    assert!(out.contains("claims[0].delivery.peer: no peer is named \"azure\""), "{out}");
    assert!(out.contains("claims[1].delivery.peer: no peer is named \"azure\""), "{out}");
}

#[test]
fn warnings_alone_exit_0() {
    let text = example_text("hybrid-onprem").replace("persistent_keepalive = 25", "");
    let f = TempFile::new(&text);
    let o = routerctl(&["config", "validate", f.arg()], None);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("warning[keepalive-missing] peers[0].persistent_keepalive"), "{}", stdout(&o));
}

#[test]
fn validate_json_is_one_document() {
    let text = example_text("two-site-roz").replace("vni = 100000", "vni = 16777216");
    let f = TempFile::new(&text);
    let o = routerctl(&["config", "validate", f.arg(), "--json"], None);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["platform"], "image");
    // The VNI only: the image runs the rest of roz (its [dns] servers resolve the peer's name).
    assert_eq!(doc["errors"], 1);
    let problems = doc["problems"].as_array().unwrap();
    let p = problems.iter().find(|p| p["code"] == "vni-range").unwrap();
    assert_eq!(p["severity"], "error");
    assert_eq!(p["code"], "vni-range");
    assert_eq!(p["path"], "segments[0].vni");
    assert_eq!(p["value"], "16777216");
    assert!(p["hint"].as_str().unwrap().contains("16777215"));
    assert!(doc["schema_hash"].as_str().unwrap().starts_with("0x"));

    let path = example_path("hybrid-cloud");
    let o = routerctl(&["config", "validate", path.to_str().unwrap(), "--json", "--for", "host"], None);
    assert_eq!(o.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["platform"], "host");
    assert_eq!(doc["problems"], serde_json::json!([]));
}

#[test]
fn parse_errors_exit_2_with_line_and_field() {
    let text = example_text("two-site-roz").replace("mtu = 1370", "mtu = \"1370\"");
    let f = TempFile::new(&text);
    let o = routerctl(&["config", "validate", f.arg()], None);
    assert_eq!(o.status.code(), Some(2));
    let line = text.lines().position(|l| l.starts_with("mtu = \"1370\"")).unwrap() + 1;
    let err = stderr(&o);
    assert!(err.contains(&format!(":{line}:7: segments[0].mtu: invalid type")), "{err}");
    assert!(stdout(&o).is_empty());

    let o = routerctl(&["config", "validate", f.arg(), "--json"], None);
    assert_eq!(o.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["error"]["kind"], "parse");
    assert_eq!(doc["error"]["line"], line);
    assert!(doc["error"]["message"].as_str().unwrap().starts_with("segments[0].mtu"));
}

#[test]
fn unreadable_input_and_bad_usage_exit_2() {
    let o = routerctl(&["config", "validate", "/nonexistent/routerd.toml"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read /nonexistent/routerd.toml"), "{}", stderr(&o));
    let o = routerctl(&["config", "validate", "-"], Some(&[0xff, 0xfe, 0x00]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not UTF-8"), "{}", stderr(&o));
    let o = routerctl(&["config", "validate", "-"], Some(&vec![b'#'; 2 * 1024 * 1024]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("larger than"), "{}", stderr(&o));
    for args in [&["config", "validate"][..], &["config", "frobnicate"], &["nope"], &["config", "example", "mars"]] {
        let o = routerctl(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn hostile_files_never_crash() {
    let huge_name = format!("[device]\nname = \"{}\"\nside = \"x\"\n", "n".repeat(500_000));
    let many = format!("[device]\nname = \"a\"\nside = \"b\"\n{}", "[[claims]]\n".repeat(10_000));
    let deep = format!("x = {}{}", "[".repeat(5000), "]".repeat(5000));
    for text in [huge_name.as_str(), &many, &deep, "\u{0}\u{1}", "[device]\nname = 1e999\n"] {
        let o = routerctl(&["config", "validate", "-"], Some(text.as_bytes()));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).starts_with("routerctl: "), "{}", stderr(&o));
    }
}

#[test]
fn show_explains_each_claim_and_stays_valid_toml() {
    let path = example_path("hybrid-onprem");
    let o = routerctl(&["config", "show", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("10.20.0.50/32      owner cloud      capture via proxy-arp on lan0 (3 gratuitous ARPs) → deliver to peer cloud over wg-hybrid; MSS clamp 1380 (auto)"), "{out}");
    assert!(out.contains("10.20.0.10/32      owner onprem     deliver locally on lan0"), "{out}");
    assert!(out.contains("tunnel wg-hybrid: MTU 1420 fits 1500 − 80 (WireGuard) = 1420; auto MSS 1420 − 40 = 1380"), "{out}");
    // The explanation is comments: the whole output is the same configuration.
    let again = config_schema::human::from_toml(&out).unwrap();
    let original = config_schema::human::from_toml(&example_text("hybrid-onprem")).unwrap();
    assert_eq!(again, original);

    let path = example_path("hybrid-cloud");
    let out = stdout(&routerctl(&["config", "show", path.to_str().unwrap()], None));
    assert!(out.contains("10.20.0.10/32      owner onprem     capture: provider delivers it on eth0 (never held or answered locally) → deliver to peer onprem over wg-hybrid"), "{out}");
    assert!(out.contains("10.20.0.50/32      owner cloud      deliver locally on eth0"), "{out}");

    let path = example_path("two-site-roz");
    let out = stdout(&routerctl(&["config", "show", path.to_str().unwrap()], None));
    assert!(
        out.contains("segment crosssite (VNI 100000): MTU 1370 fits 1420 (tunnel wg0) − 50 (VXLAN) = 1370; MSS clamp 1330 (auto)"),
        "{out}"
    );
}

#[test]
fn show_json_has_actions_and_budget() {
    let path = example_path("hybrid-onprem");
    let o = routerctl(&["config", "show", path.to_str().unwrap(), "--json"], None);
    assert_eq!(o.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let claims = doc["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 3);
    assert_eq!(claims[0]["action"], "capture");
    assert_eq!(claims[0]["capture"]["method"], "proxy-arp");
    assert_eq!(claims[0]["delivery"]["peer"], "cloud");
    assert_eq!(claims[0]["mss_clamp"], 1380);
    assert_eq!(claims[1]["mss_clamp"], 1300);
    assert_eq!(claims[1]["mss_clamp_source"], "fixed");
    assert_eq!(claims[2]["action"], "deliver-locally");
    assert_eq!(claims[2]["local_port"], "lan0");
    assert_eq!(doc["budget"]["tunnels"][0]["auto_mss"], 1380);
    assert_eq!(doc["config"]["device"]["side"], "onprem");
    assert_eq!(doc["config"]["claims"][0]["address"], "10.20.0.50/32");
    assert_eq!(doc["validation"]["valid"], true);

    let path = example_path("two-site-wro");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&routerctl(&["config", "show", path.to_str().unwrap(), "--json"], None))).unwrap();
    let seg = &doc["budget"]["segments"][0];
    assert_eq!((seg["max_mtu"].as_u64(), seg["auto_mss"].as_u64()), (Some(1370), Some(1330)));
    assert_eq!(seg["carrier"], "tunnel wg0");
}

#[test]
fn show_with_errors_exits_1_but_still_shows() {
    let text = example_text("hybrid-onprem").replace("port = \"lan0\" }", "port = \"wan0\" }");
    let f = TempFile::new(&text);
    let o = routerctl(&["config", "show", f.arg()], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("claims[0].capture.port: proxy-arp on WAN port wan0"), "{}", stdout(&o));
    assert!(stderr(&o).contains("config validate"), "{}", stderr(&o));
}

#[test]
fn examples_are_printed_verbatim() {
    for (arg, name) in [
        ("hybrid-onprem", "hybrid-onprem"),
        ("onprem", "hybrid-onprem"),
        ("cloud", "hybrid-cloud"),
        ("two-site", "two-site-roz"),
        ("two-site-wro", "two-site-wro"),
    ] {
        let o = routerctl(&["config", "example", arg], None);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(stdout(&o), example_text(name), "{arg}");
    }
    let o = routerctl(&["config", "example", "cloud", "--json"], None);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["config"]["device"]["side"], "cloud");
}

#[test]
fn help_teaches_with_examples() {
    for args in [
        &["--help"][..],
        &["config", "--help"],
        &["config", "validate", "--help"],
        &["config", "show", "--help"],
        &["config", "example", "--help"],
        &["keygen", "--help"],
        &["pubkey", "--help"],
    ] {
        let o = routerctl(args, None);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let out = stdout(&o);
        assert!(out.contains("Example"), "{args:?}:\n{out}");
    }
    let out = stdout(&routerctl(&["config", "validate", "--help"], None));
    assert!(out.contains("--json") && out.contains("Exit codes"), "{out}");
}

#[test]
fn pubkey_matches_known_vector_and_refuses_garbage() {
    // RFC 7748 6.1 (Alice), in the base64 form wg uses.
    let o = routerctl(&["pubkey"], Some(b"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n");
    for junk in [&b""[..], b"short", b"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", &[0xff; 5000]] {
        let o = routerctl(&["pubkey"], Some(junk));
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("not a WireGuard private key"), "{}", stderr(&o));
    }
}

#[test]
fn key_psk_teaches_and_refuses_a_bad_key_before_reaching_the_box() {
    for args in [&["key", "psk", "--help"][..], &["key", "psk", "show", "--help"], &["key", "psk", "import", "--help"]] {
        let o = routerctl(args, None);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let out = stdout(&o);
        assert!(out.contains("Example") && out.contains("wg genpsk"), "{args:?}:\n{out}");
    }
    assert!(stdout(&routerctl(&["key", "psk", "--help"], None)).contains("PresharedKey"));
    // Nothing below reaches a box: the port does not exist.
    let port = ["--port", "unix:/nonexistent/routerd.sock"];
    let o =
        routerctl(&[&["key", "psk", "import", "cloud-psk"][..], &port].concat(), Some(b"FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=\n"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    for junk in [&b""[..], b"short", &[0x41; 5000]] {
        let o = routerctl(&[&["key", "psk", "import", "cloud-psk", "--yes"][..], &port].concat(), Some(junk));
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("stdin is not a preshared key"), "{}", stderr(&o));
    }
    let o = routerctl(&[&["key", "psk", "import", "cloud-psk", "--yes", "--from-file", "/nonexistent/x.psk"][..], &port].concat(), None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/x.psk"), "{}", stderr(&o));
    // A key is never taken from the command line.
    let o = routerctl(
        &[&["key", "psk", "import", "cloud-psk", "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=", "--yes"][..], &port].concat(),
        None,
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn keygen_prints_distinct_keys() {
    let a = stdout(&routerctl(&["keygen"], None));
    let b = stdout(&routerctl(&["keygen"], None));
    assert_eq!(a.len(), 45);
    assert!(a.ends_with("=\n"));
    assert_ne!(a, b);
}

fn wg_available() -> bool {
    Command::new("wg").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn wg(args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("wg").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn agrees_with_wg_pubkey() {
    if !wg_available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but `wg` is missing: apt-get install -y --no-install-recommends wireguard-tools");
        }
        eprintln!("SKIP agrees_with_wg_pubkey: `wg` not installed (apt-get install -y --no-install-recommends wireguard-tools)");
        return;
    }
    for _ in 0..8 {
        // Our keys through wg, and wg's keys through us.
        let ours = stdout(&routerctl(&["keygen"], None));
        let by_us = stdout(&routerctl(&["pubkey"], Some(ours.as_bytes())));
        assert_eq!(wg(&["pubkey"], ours.as_bytes()), by_us);
        let theirs = wg(&["genkey"], b"");
        let by_wg = wg(&["pubkey"], theirs.as_bytes());
        assert_eq!(stdout(&routerctl(&["pubkey"], Some(theirs.as_bytes()))), by_wg);
    }
}

/// `config show` says where the box gets DNS servers, for the platform asked.
#[test]
fn show_says_where_dns_servers_come_from() {
    let show = |name: &str, platform: &str| {
        let path = example_path(name);
        stdout(&routerctl(&["config", "show", path.to_str().unwrap(), "--for", platform], None))
    };
    let out = show("two-site-roz", "image");
    assert!(out.contains("# DNS servers (peer endpoints by name):\n#   192.168.1.1, tried in order\n"), "{out}");
    let out = show("two-site-roz", "host");
    assert!(out.contains("#   the host's resolver (/etc/resolv.conf); [dns] servers 192.168.1.1 are not used\n"), "{out}");
    let out = show("two-site-wro", "image");
    assert!(out.contains("#   from wan0's DHCP lease\n"), "{out}");
    let out = show("hybrid-onprem", "image");
    assert!(out.contains("#   none: no [dns] servers and no DHCP WAN\n"), "{out}");
}

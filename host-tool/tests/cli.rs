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

/// Runs routerctl with stdout a pipe nobody reads: its read end is closed
/// before routerctl starts, so every write fails with EPIPE.
fn routerctl_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("start routerctl")
}

/// `routerctl … | head` aborted with exit 134 "failed printing to stdout:
/// Broken pipe". Now every printing command ends quietly with the exit code
/// it would have returned.
#[test]
fn a_closed_stdout_is_a_quiet_end_with_the_usual_exit_code() {
    let onprem = example_path("hybrid-onprem");
    let onprem = onprem.to_str().unwrap();
    let invalid = TempFile::new(&example_text("hybrid-onprem").replace("peer = \"cloud\"", "peer = \"azure\""));
    let wg = TempFile::new("[Interface]\nListenPort = 51820\n[Peer]\nPublicKey = ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\n");
    let cases: &[(&[&str], i32)] = &[
        (&["config", "example", "hybrid-onprem"], 0),
        (&["config", "example", "two-site-roz", "--json"], 0),
        (&["config", "show", onprem], 0),
        (&["config", "show", onprem, "--json"], 0),
        (&["config", "validate", onprem], 0),
        (&["config", "validate", invalid.arg()], 1),
        (&["config", "show", invalid.arg()], 1),
        (&["config", "import-wg", wg.arg()], 0),
        (&["completions", "bash"], 0),
        (&["man"], 0),
        (&["keygen"], 0),
        (&["genkey"], 0),
        (&["genpsk"], 0),
        (&["--help"], 0),
        (&["doctor", "hybrid", "--json", "--port", "unix:/nonexistent/routerd.sock"], 1),
    ];
    for (args, code) in cases {
        let o = routerctl_closed_stdout(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A wg-quick file with what wg-quick accepts (a BOM, inline comments,
/// `# Name =`, keepalive 0) becomes a file `config validate` accepts.
#[test]
fn import_wg_makes_a_configuration_that_validates() {
    let conf = "\u{feff}[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
                Address = 10.99.0.1/30 # the tunnel\nListenPort = 51820 # opened on the router\n\n\
                # The office in Wroclaw, see ticket #123\n[Peer]\n# Name = wro\n\
                PublicKey = ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\nEndpoint = 203.0.113.10:51820\n\
                AllowedIPs = 10.99.0.2/32, 10.2.0.0/16 # wro's LAN\nPersistentKeepalive = 0\n";
    let f = TempFile::new(conf);
    let o = routerctl(&["config", "import-wg", f.arg(), "--name", "wg0"], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let toml = stdout(&o);
    assert!(toml.contains("name = \"wro\"") && !toml.contains("persistent_keepalive"), "{toml}");
    // What to fill in is said on stderr and marked in the file.
    assert!(stderr(&o).contains("fill in device.name, device.side, ports (marked FILL IN)"), "{}", stderr(&o));
    assert!(toml.contains("# FILL IN"), "{toml}");
    let v = routerctl(&["config", "validate", "-"], Some(toml.as_bytes()));
    assert_eq!(v.status.code(), Some(0), "{}\n{toml}", stdout(&v));
    let v = routerctl(&["config", "validate", "-", "--for", "host"], Some(toml.as_bytes()));
    assert_eq!(v.status.code(), Some(0), "{}\n{toml}", stdout(&v));

    // --json: the configuration, what to fill in and the notes.
    let o = routerctl(&["config", "import-wg", f.arg(), "--name", "wg0", "--json"], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["config"]["peers"][0]["name"], "wro");
    assert_eq!(doc["config"]["peers"][0]["allowed_ips"], serde_json::json!(["10.99.0.2/32", "10.2.0.0/16"]));
    assert_eq!(doc["config"]["wireguard"][0]["listen_port"], 51820);
    assert_eq!(doc["fill_in"][0]["path"], "device.name");
    assert_eq!(doc["private_key_copied"], false);
    assert!(doc["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("PrivateKey was not copied")), "{doc}");

    // --sections: only what appends to a file with its [device] and ports.
    let o = routerctl(&["config", "import-wg", f.arg(), "--name", "wg0", "--sections"], None);
    assert!(stdout(&o).starts_with("[[wireguard]]\n"), "{}", stdout(&o));

    // Not a wg-quick file: exit 2, the line named.
    let bad = TempFile::new("[Interface]\nListenPort = 51820 51821\n");
    let o = routerctl(&["config", "import-wg", bad.arg()], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 2: ListenPort"), "{}", stderr(&o));
}

/// `doctor hybrid --json` printed nothing on stdout for an unreachable box.
#[test]
fn doctor_json_for_an_unreachable_box_is_a_document() {
    let o = routerctl(&["doctor", "hybrid", "--json", "--port", "unix:/nonexistent/routerd.sock"], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!(doc["result"], "fail");
    assert_eq!(doc["error"]["kind"], "unreachable");
    assert!(doc["error"]["message"].as_str().unwrap().contains("unix:/nonexistent/routerd.sock"), "{doc}");
    assert_eq!(doc["port"], "unix:/nonexistent/routerd.sock");
    assert_eq!(doc["checks"], serde_json::json!([]));
    // Bad usage is still exit 2, as a document too.
    let o = routerctl(&["doctor", "hybrid", "--json", "--port", "ttyUSB0"], None);
    assert_eq!(o.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!(doc["error"]["kind"], "usage");
    // status and show too, with the fields they have when the box answers.
    for (cmd, field) in [("status", "status"), ("show", "interface")] {
        let o = routerctl(&[cmd, "--json", "--port", "unix:/nonexistent/routerd.sock"], None);
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
        assert_eq!(doc["error"]["kind"], "unreachable", "{cmd}: {doc}");
        assert!(doc.get(field).is_some_and(|v| v.is_null()), "{cmd}: {doc}");
    }
}

/// The same invalid file exited 1 from `config validate` but 2 from
/// `plan`/`apply`; and said "1 errors".
#[test]
fn plan_and_apply_exit_1_on_errors_like_validate() {
    let text = example_text("hybrid-onprem").replace("listen_port = 51820", "listen_port = 0");
    let f = TempFile::new(&text);
    let o = routerctl(&["config", "validate", f.arg()], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains(": 1 error, 0 warnings"), "{}", stdout(&o));
    // Nothing reaches a box: the port does not exist.
    for cmd in [&["plan", f.arg()][..], &["apply", f.arg(), "--yes"], &["plan", f.arg(), "--json"]] {
        let o = routerctl(&[cmd, &["--port", "unix:/nonexistent/routerd.sock"][..]].concat(), None);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(": 1 error; nothing was sent to the box"), "{cmd:?}: {err}");
        assert!(err.contains("wireguard[0].listen_port"), "{err}");
    }
    // A file that is not a configuration is still 2, as from validate.
    let g = TempFile::new("[device]\nname = 7\n");
    let o = routerctl(&["plan", g.arg(), "--port", "unix:/nonexistent/routerd.sock"], None);
    assert_eq!(o.status.code(), Some(2));
    for cmd in ["plan", "apply"] {
        let help = stdout(&routerctl(&[cmd, "--help"], None));
        assert!(help.contains("Exit codes (as `config validate`): 0"), "{cmd}: {help}");
    }
}

/// The README's `routerctl --port … status` failed: --port existed only
/// after the command. Now before, after, or ROUTERCTL_PORT, for every box command.
#[test]
fn port_works_before_or_after_the_command_and_from_the_environment() {
    let port = "unix:/nonexistent/where-the-box-is.sock";
    let commands: &[&[&str]] = &[
        &["status"],
        &["show"],
        &["show", "dump"],
        &["config", "get"],
        &["claims", "list"],
        &["key", "show"],
        &["key", "psk", "show", "cloud-psk"],
        &["doctor", "hybrid"],
        &["logs", "--for", "1"],
        &["reboot", "--yes"],
        &["storage", "init", "--disk", "vda", "--yes"],
    ];
    let reached = |o: &Output, how: &str, cmd: &[&str]| {
        // Exit 1 and the port named: routerctl tried that box.
        assert_eq!(o.status.code(), Some(1), "{how} {cmd:?}: {}", stderr(o));
        assert!(stderr(o).contains(port), "{how} {cmd:?}: {}", stderr(o));
    };
    for cmd in commands {
        reached(&routerctl(&[&["--port", port][..], cmd].concat(), None), "before", cmd);
        reached(&routerctl(&[cmd, &["--port", port][..]].concat(), None), "after", cmd);
        let o = Command::new(env!("CARGO_BIN_EXE_routerctl")).args(*cmd).env("ROUTERCTL_PORT", port).stdin(Stdio::null()).output().unwrap();
        reached(&o, "ROUTERCTL_PORT", cmd);
    }
    // The command line wins over the environment.
    let o = Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .args(["--port", port, "status"])
        .env("ROUTERCTL_PORT", "unix:/nonexistent/not-this-one.sock")
        .output()
        .unwrap();
    assert!(stderr(&o).contains(port), "{}", stderr(&o));
    // No port at all: bad usage, and how to give one.
    let o = Command::new(env!("CARGO_BIN_EXE_routerctl")).args(["status"]).env_remove("ROUTERCTL_PORT").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--port") && stderr(&o).contains("ROUTERCTL_PORT"), "{}", stderr(&o));
}

/// `config --help` described import-wg as "Print the configuration a box is
/// running"; help said "seed 000"/"seed 003" where users say "same-subnet
/// hybrid" and "two sites, one overlay".
#[test]
fn help_says_what_each_command_does_in_the_users_words() {
    let out = stdout(&routerctl(&["config", "--help"], None));
    let line = out.lines().find(|l| l.trim_start().starts_with("import-wg")).unwrap();
    assert!(line.contains("wg-quick") && !line.contains("a box is running"), "{out}");
    let get = out.lines().find(|l| l.trim_start().starts_with("get ")).unwrap();
    assert!(get.contains("the box runs now"), "{out}");
    // Every help text but the lab's (which builds the seeds' worlds).
    let top = stdout(&routerctl(&["--help"], None));
    for line in top.lines().filter(|l| !l.starts_with("  lab ")) {
        assert!(!line.contains("seed 0"), "{line}");
    }
    let mut pages = Vec::new();
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A command's line; a wrapped description continues further in.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| !matches!(c.as_str(), "lab" | "help"))
        .collect();
    assert!(commands.len() > 10, "{top}");
    for c in &commands {
        pages.push(vec![c.clone(), "--help".to_string()]);
    }
    for sub in [&["config", "example"][..], &["config", "import-wg"], &["doctor", "hybrid"], &["key", "psk"], &["claims", "add"]] {
        pages.push(sub.iter().map(|s| s.to_string()).chain(["--help".to_string()]).collect());
    }
    for page in pages {
        let args: Vec<&str> = page.iter().map(String::as_str).collect();
        let out = stdout(&routerctl(&args, None));
        assert!(!out.is_empty(), "{args:?}");
        assert!(!out.contains("seed 0") && !out.contains("Seed 0"), "{args:?}:\n{out}");
    }
    let out = stdout(&routerctl(&["config", "example", "--help"], None)).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(out.contains("same-subnet hybrid") && out.contains("two sites, one overlay"), "{out}");
}

#[test]
fn genkey_and_genpsk_work_like_wgs() {
    let key = stdout(&routerctl(&["genkey"], None));
    assert_eq!(key.len(), 45, "{key}");
    let o = routerctl(&["pubkey"], Some(key.as_bytes()));
    assert_eq!(o.status.code(), Some(0), "genkey's key is a private key: {}", stderr(&o));
    let (a, b) = (stdout(&routerctl(&["genpsk"], None)), stdout(&routerctl(&["genpsk"], None)));
    assert_ne!(a, b);
    for psk in [&a, &b] {
        assert_eq!(psk.len(), 45, "{psk}");
        // What `key psk import` takes (nothing reaches a box: no --yes).
        use base64::Engine;
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(psk.trim()).unwrap().len(), 32);
    }
    if wg_available() {
        assert!(!wg(&["pubkey"], key.as_bytes()).is_empty());
    }
}

/// A box in this process: routerd-control's node (what the image and
/// routerd-host run) behind the provisioning protocol's session, on a unix
/// socket, so the real routerctl talks to it as to any box.
mod fake_box {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    use rand_core::OsRng;
    use routerd_control::{NicInfo, NicSnapshot, Node};
    use routerd_dataplane::Instant;
    use routerd_provision::message::{Op, Reply};
    use routerd_provision::session::{Session, Step};

    pub struct FakeBox {
        pub port: String,
        dir: PathBuf,
    }

    impl Drop for FakeBox {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A box with two NICs running `config`.
    pub fn start(config: &str) -> FakeBox {
        let dir = std::env::temp_dir().join(format!("routerctl-fake-box-{}-{}", std::process::id(), config.len()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("box.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let cfg = config_schema::human::from_toml(config).unwrap();
        let nics = [NicInfo::ethernet([2, 0, 0, 0, 0, 1]), NicInfo::ethernet([2, 0, 0, 0, 0, 2])];
        let mut node: Node<OsRng> = Node::new(&nics, Some(OsRng), "0.1.0", "test");
        let snaps = vec![NicSnapshot { link_up: true, ..NicSnapshot::default() }; 2];
        match node.handle(Instant::from_millis(1), Op::Apply(Box::new(cfg)), &snaps) {
            Reply::Applied(_) => {}
            other => panic!("{other:?}"),
        }
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut session = Box::new(Session::new("routerd-test", "test"));
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    for &b in &buf[..n] {
                        let ms = start.elapsed().as_millis() as u64 + 2;
                        let request = match session.push(b, ms) {
                            Step::Nothing => None,
                            Step::Send(f) => {
                                let _ = stream.write_all(f);
                                None
                            }
                            Step::Execute(req) => Some(req),
                        };
                        if let Some(req) = request {
                            let reply = node.handle(Instant::from_millis(ms), req.op, &snaps);
                            let _ = stream.write_all(session.respond(req.seq, reply));
                        }
                    }
                }
            }
        });
        FakeBox { port: format!("unix:{}", path.display()), dir }
    }
}

/// `show --json` has the interface and exactly `status --json`'s peers;
/// `show` and `show dump` are wg's layouts (exact text: show.rs unit tests).
#[test]
fn show_has_status_peers_in_wg_show_layouts() {
    let config = "[device]\nname = \"edge\"\nside = \"onprem\"\n\
        [[ports]]\nname = \"lan0\"\nrole = \"lan\"\naddress = \"10.20.0.2/24\"\n\
        [[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"192.168.1.35/24\"\ngateway = \"192.168.1.1\"\n\
        [[wireguard]]\nname = \"wg0\"\nprivate_key = \"device:wg0\"\n\
        [[peers]]\nname = \"cloud\"\ntunnel = \"wg0\"\npublic_key = \"ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\"\n\
        endpoint = \"203.0.113.10:51820\"\npersistent_keepalive = 25\nallowed_ips = [\"10.20.0.50/32\", \"10.30.0.0/24\"]\n\
        preshared_key = \"device:cloud-psk\"\n\
        [[peers]]\nname = \"wro\"\ntunnel = \"wg0\"\npublic_key = \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"\n\
        allowed_ips = [\"10.40.0.0/24\"]\n";
    let b = fake_box::start(config);
    let json_of = |args: &[&str]| -> serde_json::Value {
        let o = routerctl(&[args, &["--port", &b.port, "--json"][..]].concat(), None);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let status = json_of(&["status"]);
    let show = json_of(&["show"]);
    assert_eq!(show["peers"], status["status"]["peers"]);
    assert_eq!(show["interface"], status["status"]["tunnel"]);
    assert_eq!(show["peers"].as_array().unwrap().len(), 2);
    assert_eq!(show["port"], b.port.as_str());

    let public = show["interface"]["public_key"].as_str().unwrap().to_string();
    let o = routerctl(&["--port", &b.port, "show"], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with(&format!("interface: wg0\n  public key: {public}\n  private key: (hidden)\n  listening port: 51820\n\n")),
        "{text}"
    );
    assert!(
        text.contains(
            "peer: ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\n  name: cloud\n  preshared key: (hidden)\n  \
             endpoint: 203.0.113.10:51820\n  allowed ips: 10.20.0.50/32, 10.30.0.0/24\n  persistent keepalive: every 25 seconds\n"
        ),
        "{text}"
    );

    let o = routerctl(&["show", "dump", "--port", &b.port], None);
    let dump = stdout(&o);
    let lines: Vec<Vec<&str>> = dump.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines[0], ["(hidden)", public.as_str(), "51820", "off"], "{dump}");
    assert_eq!(
        lines[1],
        [
            "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=",
            "(hidden)",
            "203.0.113.10:51820",
            "10.20.0.50/32,10.30.0.0/24",
            "0",
            "0",
            "0",
            "25"
        ],
        "{dump}"
    );
    assert_eq!(lines[2], ["xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "(none)", "(none)", "10.40.0.0/24", "0", "0", "0", "off"]);

    // `status` shows each peer's key, allowed IPs, keepalive and transfer.
    let text = stdout(&routerctl(&["status", "--port", &b.port], None));
    assert!(
        text.contains(
            "  peer cloud: endpoint 203.0.113.10:51820 (configured 203.0.113.10:51820), handshake never, session none, 0 B received, 0 B sent\n    \
             public key ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=, allowed ips 10.20.0.50/32, 10.30.0.0/24, keepalive every 25 s\n"
        ),
        "{text}"
    );
    assert!(text.contains("allowed ips 10.40.0.0/24, keepalive off\n"), "{text}");
    assert!(!text.contains("\nbgp "), "no BGP block without [bgp]: {text}");

    // No [bgp]: `bgp summary` and `bgp routes` say so, name CONFIG.md and
    // exit 1; with --json the failure is one JSON document.
    for args in [&["bgp", "summary"][..], &["bgp", "routes", "--vni", "100"]] {
        let o = routerctl(&[args, &["--port", &b.port][..]].concat(), None);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("runs no BGP: add a [bgp] section") && stderr(&o).contains("CONFIG.md"), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{args:?}");
        let o = routerctl(&[args, &["--port", &b.port, "--json"][..]].concat(), None);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e})"));
        assert_eq!(doc["result"], "fail", "{doc}");
        assert!(doc["error"]["message"].as_str().unwrap().contains("runs no BGP"), "{doc}");
    }
}

/// `routerctl doctor` without an area runs every check, and its JSON
/// carries the Go routerd's field names beside ours.
#[test]
fn doctor_without_an_area_runs_every_check_with_go_routerd_field_names() {
    let config = "[device]\nname = \"edge\"\nside = \"onprem\"\n\
        [[ports]]\nname = \"lan0\"\nrole = \"lan\"\naddress = \"10.20.0.2/24\"\n\
        [[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"192.168.1.35/24\"\ngateway = \"192.168.1.1\"\n\
        [[wireguard]]\nname = \"wg0\"\nprivate_key = \"device:wg0\"\n\
        [[peers]]\nname = \"cloud\"\ntunnel = \"wg0\"\npublic_key = \"ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\"\n\
        endpoint = \"203.0.113.10:51820\"\nallowed_ips = [\"10.20.0.50/32\"]\n";
    let b = fake_box::start(config);
    let plain = routerctl(&["doctor", "--port", &b.port, "--json"], None);
    let hybrid = routerctl(&["doctor", "hybrid", "--port", &b.port, "--json"], None);
    assert_eq!(plain.status.code(), hybrid.status.code(), "{}", stderr(&plain));
    let (a, h): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&stdout(&plain)).unwrap(), serde_json::from_str(&stdout(&hybrid)).unwrap());
    let ids =
        |d: &serde_json::Value| d["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&h), "the same checks with and without the area");
    assert_eq!(a["schema"], 2);
    let checks = a["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    for c in checks {
        assert_eq!(c["status"], c["result"], "{c}");
        assert_eq!(c["detail"], c["reason"], "{c}");
        assert_eq!(c["remedy"], c["hint"], "{c}");
        assert!(c["id"].as_str().unwrap().starts_with(c["area"].as_str().unwrap()), "{c}");
    }
    assert!(checks.iter().any(|c| c["area"] == "peer"), "{a}");
    // The text form without an area is the same table.
    let text = stdout(&routerctl(&["doctor", "--port", &b.port], None));
    assert!(text.starts_with("doctor hybrid: edge (side onprem)"), "{text}");
}

/// `claims add` whose result the box finds invalid exits 1 like `apply`
/// and `config validate`; a claim that is not there to remove stays bad
/// usage (2).
#[test]
fn claims_add_that_makes_the_configuration_invalid_exits_1() {
    let config = "[device]\nname = \"edge\"\nside = \"onprem\"\n\
        [[ports]]\nname = \"lan0\"\nrole = \"lan\"\naddress = \"10.20.0.2/24\"\n\
        [[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"192.168.1.35/24\"\ngateway = \"192.168.1.1\"\n\
        [[wireguard]]\nname = \"wg0\"\nprivate_key = \"device:wg0\"\n\
        [[peers]]\nname = \"cloud\"\ntunnel = \"wg0\"\npublic_key = \"ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\"\n\
        endpoint = \"203.0.113.10:51820\"\nallowed_ips = [\"10.20.0.50/32\", \"10.20.0.2/32\"]\n";
    let b = fake_box::start(config);
    let o = routerctl(&["claims", "add", "10.20.0.2", "--owner", "cloud", "--port", &b.port], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("claims[0]"), "the refusal names the path: {}", stderr(&o));
    let o = routerctl(&["claims", "remove", "10.20.0.77", "--port", &b.port], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Every reading command asked for `--json` prints a JSON document on
/// stdout when the box cannot be reached (it printed nothing before).
#[test]
fn json_commands_print_a_document_when_the_box_is_unreachable() {
    let port = "unix:/nonexistent/routerd.sock";
    for cmd in [
        &["claims", "list"][..],
        &["key", "show"],
        &["config", "get"],
        &["config", "history"],
        &["conntrack", "list"],
        &["bgp", "summary"],
        &["bgp", "routes"],
    ] {
        let o = routerctl(&[cmd, &["--json", "--port", port][..]].concat(), None);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stderr(&o));
        let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{cmd:?}: not one JSON document ({e})"));
        assert_eq!(doc["result"], "fail", "{cmd:?}");
        assert_eq!(doc["port"], port);
        assert!(doc["error"]["message"].as_str().unwrap().contains("nonexistent"), "{doc}");
    }
    // Without --json: nothing on stdout, the error on stderr.
    let o = routerctl(&["claims", "list", "--port", port], None);
    assert_eq!(stdout(&o), "");
}

/// Issue 20: every command that talks to a box lists the global connection
/// options (`--port`, `ROUTERCTL_PORT`, `--baud`, `--timeout`) in its own
/// help, long and short, so nobody has to know to look at `routerctl --help`.
#[test]
fn every_box_command_help_lists_the_connection_options() {
    let pages: &[&[&str]] = &[
        &["status"],
        &["show"],
        &["plan"],
        &["apply"],
        &["confirm"],
        &["rollback"],
        &["claims", "list"],
        &["claims", "add"],
        &["claims", "remove"],
        &["claims", "clear-conflict"],
        &["conntrack", "list"],
        &["bgp"],
        &["bgp", "summary"],
        &["bgp", "routes"],
        &["key", "show"],
        &["key", "generate"],
        &["key", "import"],
        &["key", "psk", "show"],
        &["key", "psk", "import"],
        &["key", "psk", "generate"],
        &["logs"],
        &["storage", "init"],
        &["reboot"],
        &["reset"],
        &["doctor"],
        &["doctor", "hybrid"],
        &["config", "get"],
        &["config", "history"],
        &["capture"],
    ];
    for page in pages {
        for flag in ["--help", "-h"] {
            let args: Vec<&str> = page.iter().copied().chain([flag]).collect();
            let o = Command::new(env!("CARGO_BIN_EXE_routerctl")).args(&args).env_remove("ROUTERCTL_PORT").output().unwrap();
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
            let help = stdout(&o);
            let section = help.split("Reaching a box").nth(1).unwrap_or_else(|| panic!("{args:?}: no connection options:\n{help}"));
            for want in ["--port <PORT>", "[env: ROUTERCTL_PORT=]", "--baud <BAUD>", "--timeout <MS>"] {
                assert!(section.contains(want), "{args:?}: {want} missing from the connection options:\n{help}");
            }
        }
    }
    // The capture command's own help teaches: examples, the filter grammar,
    // the serial line's speed.
    let help = stdout(&routerctl(&["capture", "--help"], None));
    for want in ["Examples:", "| wireshark -k -i -", "FILTERS", "host A.B.C.D", "115200 baud", "--rate"] {
        assert!(help.contains(want), "capture --help lacks {want:?}:\n{help}");
    }
    // bgp's pages give an example and say what a box without [bgp] answers.
    for page in [&["bgp", "summary", "--help"][..], &["bgp", "routes", "--help"]] {
        let help = stdout(&routerctl(page, None));
        for want in ["Examples:", "routerctl bgp ", "CONFIG.md", "JSON:", "Exit codes:"] {
            assert!(help.contains(want), "{page:?} lacks {want:?}:\n{help}");
        }
    }
}

/// `routerctl capture`'s usage errors name the option and the value, and
/// come before any box is reached (exit 2).
#[test]
fn capture_usage_errors_name_the_value() {
    let port = ["--port", "unix:/nonexistent/box.sock"];
    for (args, want) in [
        (&["capture", "-w", "x.pcap", "--filter", "host 10.0.0.300"][..], "--filter: \"10.0.0.300\" is not an IPv4 address"),
        (&["capture", "-w", "x.pcap", "--filter", "icmp and"], "--filter: \"and\" at the end needs a term after it"),
        (&["capture", "-w", "x.pcap", "--rate", "fast"], "--rate \"fast\""),
        (&["capture", "-w", "x.pcap", "--snaplen", "0"], "--snaplen 0"),
        (&["capture", "-w", "-", "--json"], "--json with -w -"),
    ] {
        let o = routerctl(&[args, &port[..]].concat(), None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(!std::path::Path::new("x.pcap").exists(), "no file before the box answered");
    }
}

/// A binary file in the temp dir, removed on drop.
struct TempBytes(PathBuf);

impl TempBytes {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("routerctl-upgrade-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempBytes(path)
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempBytes {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The smallest file `firmware::inspect` takes for a routerd firmware: an
/// x86-64 ELF header, one PT_NOTE program header with the routerd note,
/// and a multiboot2 header.
fn minimal_firmware(flags: u32) -> Vec<u8> {
    use routerd_provision::firmware::{note_desc, NOTE_DESC, NOTE_NAME, NOTE_TYPE};
    let mut f = vec![0u8; 4096];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // program headers at 64
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&1u16.to_le_bytes());
    f[64..68].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
    let note = 256usize;
    f[72..80].copy_from_slice(&(note as u64).to_le_bytes());
    f[96..104].copy_from_slice(&((12 + 8 + NOTE_DESC) as u64).to_le_bytes());
    f[note..note + 4].copy_from_slice(&8u32.to_le_bytes());
    f[note + 4..note + 8].copy_from_slice(&(NOTE_DESC as u32).to_le_bytes());
    f[note + 8..note + 12].copy_from_slice(&NOTE_TYPE.to_le_bytes());
    f[note + 12..note + 20].copy_from_slice(NOTE_NAME);
    f[note + 20..note + 20 + NOTE_DESC].copy_from_slice(&note_desc("0.1.0", "cli-test", flags));
    let magic = 0xE852_50D6u32;
    for (i, w) in [magic, 0, 24, 0u32.wrapping_sub(magic.wrapping_add(24))].iter().enumerate() {
        f[1024 + 4 * i..1028 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
    assert!(routerd_provision::firmware::inspect(&f).is_ok());
    f
}

/// `upgrade` checks the file before it reaches for the box: not a
/// firmware, too large, a test build — exit 2 with the reason, nothing
/// sent (the port does not exist: trying it would exit 1 "cannot open").
#[test]
fn upgrade_refuses_what_is_not_a_firmware_before_connecting() {
    let port = "unix:/nonexistent";
    let text =
        TempBytes::new("notes.txt", b"routerd 0.2.0 release notes: this file is text, longer than an ELF header, and not a firmware.\n");
    let o = routerctl(&["upgrade", text.arg(), "--port", port, "--yes"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o), format!("routerctl: upgrade: {}: not an ELF file (no \\x7fELF at the start)\n", text.arg()));
    assert_eq!(stdout(&o), "");

    // --json: the refusal is one document.
    let o = routerctl(&["upgrade", text.arg(), "--port", port, "--yes", "--json"], None);
    assert_eq!(o.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!(doc["result"], "fail");
    assert_eq!(doc["error"]["kind"], "usage");
    assert!(doc["error"]["message"].as_str().unwrap().contains("not an ELF file"), "{doc}");

    // Larger than a slot.
    let mut big = minimal_firmware(0);
    big.resize(16 * 1024 * 1024 + 1, 0);
    let big = TempBytes::new("big.elf", &big);
    let o = routerctl(&["upgrade", big.arg(), "--port", port, "--yes"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("16777217 bytes is larger than a firmware slot (16777216 bytes"), "{}", stderr(&o));

    // A test build that never confirms, made from the image's firmware when
    // it was built (`cargo xtask image`) and carries a note, else minimal.
    let never = routerd_provision::message::FirmwareIdentity::FLAG_NEVER_CONFIRMS;
    let mut builds = vec![minimal_firmware(never)];
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/routerd");
    if let Ok(mut real) = std::fs::read(&release) {
        if routerd_provision::firmware::restamp(&mut real, "0.1.0", "never-confirms", never) {
            builds.push(real);
        }
    }
    for (i, bytes) in builds.iter().enumerate() {
        let f = TempBytes::new(&format!("test-build-{i}.elf"), bytes);
        let o = routerctl(&["upgrade", f.arg(), "--port", port, "--yes"], None);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("a test build that never confirms a trial boot"), "{}", stderr(&o));
        // The hidden flag lets it through to the box (here: none).
        let o = routerctl(&["upgrade", f.arg(), "--port", port, "--yes", "--allow-test-build"], None);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("cannot open unix:/nonexistent"), "{}", stderr(&o));
    }
}

/// A box that did not boot from a routerd disk (this one is routerd-control's
/// node, like routerd-host) has no slots: exit 1, naming how to get them;
/// no --yes without a terminal is refused first (exit 2).
#[test]
fn upgrade_needs_a_box_with_firmware_slots() {
    let config = "# upgrade: a box without firmware slots (this comment makes the fake box's directory unique)\n\
        [device]\nname = \"edge\"\nside = \"onprem\"\n\
        [[ports]]\nname = \"lan0\"\nrole = \"lan\"\naddress = \"10.20.0.2/24\"\n\
        [[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"192.168.1.35/24\"\ngateway = \"192.168.1.1\"\n";
    let b = fake_box::start(config);
    let fw = TempBytes::new("slots.elf", &minimal_firmware(0));
    let o = routerctl(&["upgrade", fw.arg(), "--port", &b.port, "--yes"], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the box did not boot from a routerd disk (no firmware slots): write an image with `routerctl image build`"),
        "{}",
        stderr(&o)
    );
    let o = routerctl(&["upgrade", fw.arg(), "--port", &b.port, "--json", "--yes"], None);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!((doc["schema"].as_u64(), doc["outcome"].is_null()), (Some(1), true), "{doc}");
    assert_eq!(doc["to"]["build"], "cli-test", "{doc}");
    assert_eq!(doc["bytes"], 4096);
    assert_eq!(doc["error"]["kind"], "failed");
}

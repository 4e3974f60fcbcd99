//! Issue 6: the lab is the main integration test. `routerctl lab --once`
//! runs seed 000 on two real images in QEMU and exits 0 only when every
//! doctor check passed and the traffic arrived intact; each broken variant
//! exits 1 with doctor (or the box) naming the problem. Issue 17: the same
//! for seed 003 (`--scenario two-site`): the shipped two-site examples,
//! DHCP, DNS, NAT, the VXLAN overlay and a dynamic IP change.

use std::process::Command;

/// Seed 000, the default scenario.
fn lab(variant: &str) -> (i32, String) {
    run(&["--variant", variant])
}

fn lab_in(scenario: &str, variant: &str) -> (i32, String) {
    run(&["--scenario", scenario, "--variant", variant])
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .args(["lab", "--once", "--bytes", "262144"])
        .args(args)
        .env("ROUTERD_IMAGE", routerd_e2e::image())
        .output()
        .expect("run routerctl lab");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("=== lab {} → {:?}\n{text}", args.join(" "), out.status.code());
    (out.status.code().unwrap_or(-1), text)
}

fn has_line(text: &str, parts: &[&str]) -> bool {
    text.lines().any(|l| parts.iter().all(|p| l.contains(p)))
}

#[test]
fn healthy_lab_passes_every_check_and_moves_traffic() {
    let (code, text) = lab("healthy");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("17 pass, 0 warn, 0 fail, 0 skip"));
    assert!(text.contains("lab: doctor all pass, traffic intact both ways"));
    assert!(has_line(&text, &["SYN", "arrived with MSS 1380"]), "the clamp is shown");
    assert!(text.contains("onprem box now sends to the cloud peer at 203.0.113.20:51820"), "roaming followed");
}

/// The plain lab (no `--once`) with `--json`: the exit code still says
/// whether everything passed, stdout is one JSON document, and the report
/// goes to stderr.
#[test]
fn wrong_peer_key_fails_the_handshake_check_and_json_keeps_stdout_pure() {
    let out = Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .args(["lab", "--bytes", "262144", "--variant", "wrong-peer-key", "--json"])
        .env("ROUTERD_IMAGE", routerd_e2e::image())
        .output()
        .expect("run routerctl lab");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("=== lab --variant wrong-peer-key --json → {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}", out.status.code());
    assert_eq!(out.status.code(), Some(1), "a failing lab exits 1 without --once too");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is exactly one JSON document");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["variant"], "WrongPeerKey");
    assert!(has_line(&stderr, &["FAIL", "peer.handshake", "cloud", "no handshake"]), "the report is on stderr: {stderr}");
}

#[test]
fn a_conflicting_live_host_is_named_with_its_mac() {
    let (code, text) = lab("conflicting-host");
    assert_eq!(code, 1);
    assert!(has_line(&text, &["FAIL", "claim.capture", "10.20.0.50", "02:00:00:00:10:10"]), "{text}");
}

#[test]
fn a_clamp_above_the_path_is_a_warning_with_the_budget() {
    let (code, text) = lab("clamp-above-path");
    assert_eq!(code, 1);
    assert!(has_line(&text, &["WARN", "claim.mss", "10.20.0.50", "1460", "1380"]), "{text}");
}

#[test]
fn a_loop_prone_claim_is_refused_by_the_box_with_the_path() {
    let (code, text) = lab("loop-prone-claim");
    assert_eq!(code, 1);
    assert!(has_line(&text, &["error[claim-loop]", "claims[0].address"]), "{text}");
}

#[test]
fn two_sites_join_recover_from_a_new_public_address_and_keep_the_overlay_budget() {
    let (code, text) = lab_in("two-site", "healthy");
    assert_eq!(code, 0, "{text}");
    // The shipped examples ran with only the peers' keys filled in.
    assert!(has_line(&text, &["two-site-roz.toml and two-site-wro.toml as shipped", "public_key"]), "{text}");
    assert!(has_line(&text, &["wro: dhcp wan0: 192.168.20.100/24 via 192.168.20.1", "dns 192.168.20.1"]), "the lease");
    assert!(has_line(&text, &["pass", "roz: wro.example.net → 203.0.113.20"]), "{text}");
    assert!(has_line(&text, &["pass", "wro: roz.example.net → 198.51.100.10"]), "{text}");
    // Doctor passes everything on both boxes, overlay checks included.
    let summaries: Vec<&str> = text.lines().filter(|l| l.contains(" pass, ") && l.ends_with(" skip")).collect();
    assert_eq!(summaries.len(), 2, "{text}");
    assert!(summaries.iter().all(|l| l.contains(" 0 warn, 0 fail, 0 skip")), "{summaries:?}");
    assert!(has_line(&text, &["pass", "segment.mtu", "crosssite", "1370", "1330"]), "{text}");
    // The far VM sees the clamp; the overlay MTU holds without fragments.
    assert!(has_line(&text, &["SYN 10.50.0.11:", "→ 10.50.0.12:5001 arrived with MSS 1330"]), "{text}");
    assert!(has_line(&text, &["SYN-ACK 10.50.0.11:5002", "arrived with MSS 1330"]), "{text}");
    assert!(has_line(&text, &["(1370 B packets): 3 sent, 3 received"]), "{text}");
    assert!(has_line(&text, &["(1371 B packets): 3 sent, 0 received"]), "{text}");
    assert!(has_line(&text, &["vxlan_oversize +3"]), "{text}");
    // The dynamic IP: recovered by itself (roz's re-resolution of the name
    // is reported, not required: wro's keepalive alone brings it back).
    assert!(has_line(&text, &["recovered", "after the change", "roz sends to wro at 203.0.113.77:51820"]), "{text}");
    assert!(has_line(&text, &["lab: doctor all pass on both boxes", "recovered in", "without an apply"]), "{text}");
}

#[test]
fn a_name_that_never_resolves_is_named_by_doctor_and_the_lab() {
    let (code, text) = lab_in("two-site", "dns-never-resolves");
    assert_eq!(code, 1, "{text}");
    assert!(has_line(&text, &["FAIL", "peer.endpoint", "wro", "wro.example.net:51820 is not resolved"]), "{text}");
    assert!(has_line(&text, &["FAIL", "peer.endpoint", "roz", "roz.example.net:51820 is not resolved"]), "{text}");
    assert!(has_line(&text, &["FAIL", "dns.name", "wro.example.net", "NXDOMAIN"]), "doctor names the lookup: {text}");
    assert!(has_line(&text, &["FAIL", "dns.name", "roz.example.net", "NXDOMAIN"]), "{text}");
    assert!(has_line(&text, &["FAIL", "roz: wro.example.net does not resolve", "NXDOMAIN"]), "{text}");
    assert!(has_line(&text, &["lab: FAILED", "names do not resolve: wro.example.net on roz-edge"]), "{text}");
}

#[test]
fn a_variant_of_the_other_scenario_is_bad_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .args(["lab", "--once", "--variant", "dns-never-resolves"])
        .env("ROUTERD_IMAGE", "/nonexistent")
        .output()
        .expect("run routerctl lab");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --scenario two-site"));
}

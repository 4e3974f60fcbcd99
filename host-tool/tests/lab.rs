//! Issue 6: the lab is the main integration test. `routerctl lab --once`
//! runs seed 000 on two real images in QEMU and exits 0 only when every
//! doctor check passed and the traffic arrived intact; each broken variant
//! exits 1 with doctor (or the box) naming the problem.

use std::process::Command;

fn lab(variant: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .args(["lab", "--once", "--variant", variant, "--bytes", "262144"])
        .env("ROUTERD_IMAGE", routerd_e2e::image())
        .output()
        .expect("run routerctl lab");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("=== lab --variant {variant} → {:?}\n{text}", out.status.code());
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

#[test]
fn wrong_peer_key_fails_the_handshake_check() {
    let (code, text) = lab("wrong-peer-key");
    assert_eq!(code, 1);
    assert!(has_line(&text, &["FAIL", "peer.handshake", "cloud", "no handshake"]), "{text}");
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

//! A short run of the fuzz harness on every `cargo test` (both tunnels).
//! Longer runs: `cargo run --release -p routerd-dataplane --example fuzz -- <seconds>`.

mod common;

#[test]
fn fuzz_smoke_pass_through_tunnel() {
    let (n, _) = common::fuzz::run(2, 20_000);
    assert_eq!(n, 20_000);
}

#[test]
fn fuzz_smoke_hostile_tunnel() {
    let (n, _) = common::fuzz::run(3, 20_000);
    assert_eq!(n, 20_000);
}

#[test]
fn fuzz_smoke_nat_and_firewall() {
    // Connection tracking, SNAT and the firewall on every path, both tunnels.
    assert_eq!(common::fuzz::run_with(4, 20_000, true).0, 20_000);
    assert_eq!(common::fuzz::run_with(5, 20_000, true).0, 20_000);
}

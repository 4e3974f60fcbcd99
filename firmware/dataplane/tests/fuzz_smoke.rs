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

//! Stable-toolchain fuzzer for `Dataplane::process`/`poll`.
//!
//! `cargo run --release -p routerd-dataplane --example fuzz -- [seconds] [first-seed]`
//! Runs batches of 100 000 cases with consecutive seeds (odd seeds use a
//! hostile tunnel; seeds 2–3, 6–7, … run with SNAT and the firewall
//! configured, so connection tracking is on every path) until the time is up, then prints the totals. A panic is a
//! finding: the seed is printed first so the case can be replayed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let first_seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let (mut cases, mut transmitted, mut seed) = (0u64, 0u64, first_seed);
    // Bounded in time and, as a backstop, in count.
    while Instant::now() < deadline && seed < first_seed + 1_000_000 {
        eprintln!("seed {seed}");
        let (n, t) = common::fuzz::run_with(seed, 100_000, (seed / 2) % 2 == 1);
        cases += n;
        transmitted += t;
        seed += 1;
    }
    let el = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {cases} cases ({} seeds from {first_seed}) in {el:.1} s, {:.0} cases/s, {transmitted} frames transmitted, no panic",
        seed - first_seed,
        cases as f64 / el
    );
}

//! Stable-toolchain fuzzer for the box's side of the serial line.
//!
//! `cargo run --release -p routerd-provision --example fuzz -- [seconds] [seed]`
//!
//! Every case feeds one `Session` a stream mixing random bytes, valid frames
//! of real requests, and those frames with bits flipped, bytes cut or
//! inserted, or their CRC recomputed over a mutated payload (so postcard's
//! decoder sees hostile bytes that passed the frame check). A panic is a
//! finding: the seed is printed first so the case can be replayed.

use routerd_provision::frame::{self, MAX_FRAME, MAX_PAYLOAD};
use routerd_provision::message::{self, Op, Reply, Request, PROTOCOL_HASH, PROTOCOL_VERSION};
use routerd_provision::session::{Session, Step};
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn payload(req: &Request) -> Vec<u8> {
    let mut p = vec![0u8; MAX_PAYLOAD];
    let n = message::encode(req, &mut p).map(|b| b.len()).unwrap_or(0);
    p.truncate(n);
    p
}

fn framed(p: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; MAX_FRAME];
    let n = frame::encode(p, &mut f).unwrap_or(0);
    f.truncate(n);
    f
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let first: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut session = Box::new(Session::new("0.1.0", "fuzz"));
    let seeds = [
        Request { seq: 1, op: Op::Hello { version: PROTOCOL_VERSION, hash: PROTOCOL_HASH } },
        Request { seq: 2, op: Op::Status { mark: true } },
        Request { seq: 3, op: Op::ClaimRemove("10.20.0.50/32".parse().unwrap()) },
        Request { seq: 4, op: Op::KeyImport(config_schema::Name::new("wg0").unwrap(), [9; 32]) },
        Request { seq: 5, op: Op::Ping },
        Request { seq: 6, op: Op::Bye },
    ];
    let payloads: Vec<Vec<u8>> = seeds.iter().map(payload).collect();
    let (mut cases, mut bytes, mut executed, mut sent, mut seed) = (0u64, 0u64, 0u64, 0u64, first);
    while Instant::now() < deadline && seed < first + 100_000_000 {
        if seed % 100_000 == 0 {
            eprintln!("seed {seed}");
        }
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut stream = Vec::new();
        for _ in 0..rng.below(8) + 1 {
            let p = &payloads[rng.below(payloads.len() as u64) as usize];
            match rng.below(5) {
                0 => stream.extend((0..rng.below(200)).map(|_| rng.next() as u8)),
                1 => stream.extend(framed(p)),
                2 => {
                    let mut f = framed(p);
                    let i = rng.below(f.len() as u64) as usize;
                    f[i] ^= 1 << rng.below(8);
                    stream.extend(f);
                }
                3 => {
                    // Mutated payload with a correct CRC: postcard sees it.
                    let mut q = p.clone();
                    for _ in 0..rng.below(4) + 1 {
                        match rng.below(3) {
                            0 if !q.is_empty() => {
                                let i = rng.below(q.len() as u64) as usize;
                                q[i] = rng.next() as u8;
                            }
                            1 if !q.is_empty() => {
                                q.truncate(rng.below(q.len() as u64) as usize);
                            }
                            _ => {
                                let i = rng.below(q.len() as u64 + 1) as usize;
                                q.insert(i, rng.next() as u8);
                            }
                        }
                    }
                    stream.extend(framed(&q));
                }
                _ => {
                    let f = framed(p);
                    let cut = rng.below(f.len() as u64) as usize;
                    stream.extend(&f[..cut]);
                }
            }
        }
        let now = seed;
        for &b in &stream {
            match session.push(b, now) {
                Step::Nothing => {}
                Step::Send(f) => sent += f.len() as u64,
                Step::Execute(r) => {
                    executed += 1;
                    let _ = session.respond(r.seq, Reply::Done);
                }
            }
        }
        let _ = session.poll(now + rng.below(40_000));
        bytes += stream.len() as u64;
        cases += 1;
        seed += 1;
    }
    let el = started.elapsed().as_secs_f64();
    let st = session.stats();
    println!(
        "fuzz: {cases} cases, {bytes} bytes in {el:.1} s ({:.0} cases/s); {executed} requests executed, {sent} bytes answered; \
         decoder {} frames, {} not-a-frame, {} bad CRC, {} malformed; no panic",
        cases as f64 / el,
        st.frames,
        st.not_a_frame,
        st.bad_checksum,
        st.malformed
    );
}

//! Deterministic randomness and a digest for the lab's traffic.
//!
//! The underlay's loss decisions and the bytes a transfer sends come from a
//! seeded generator, so a run can be repeated exactly; the digest lets a sink
//! prove it received exactly what was sent without keeping it. Neither is
//! cryptographic: they guard against accidents, not adversaries.

/// SplitMix64: tiny, fast, and good enough for loss decisions and payloads.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `ppm` parts per million.
    pub(crate) fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.next_u64() % 1_000_000 < u64::from(ppm)
    }
}

/// The endless byte stream a transfer sends: the generator's output, in order,
/// whatever the chunk sizes the caller asks for.
#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    rng: Rng,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    pub(crate) fn new(seed: u64) -> Pattern {
        Pattern { rng: Rng::new(seed), word: [0; 8], used: 8 }
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used >= self.word.len() {
                self.word = self.rng.next_u64().to_le_bytes();
                self.used = 0;
            }
            *b = self.word.get(self.used).copied().unwrap_or(0);
            self.used += 1;
        }
    }
}

/// FNV-1a, 64 bits: what a sink server answers after the last byte.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Digest(u64);

impl Digest {
    pub(crate) fn new() -> Digest {
        Digest(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn value(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_does_not_depend_on_chunking() {
        let mut whole = [0u8; 37];
        Pattern::new(7).fill(&mut whole);
        let mut p = Pattern::new(7);
        let mut parts = [0u8; 37];
        let (a, rest) = parts.split_at_mut(3);
        let (b, c) = rest.split_at_mut(11);
        p.fill(a);
        p.fill(b);
        p.fill(c);
        assert_eq!(whole, parts);
        assert_ne!(whole, [0u8; 37]);
    }

    #[test]
    fn digest_matches_known_values() {
        // FNV-1a 64 reference values.
        assert_eq!(Digest::new().value(), 0xcbf2_9ce4_8422_2325);
        let mut d = Digest::new();
        d.update(b"a");
        assert_eq!(d.value(), 0xaf63_dc4c_8601_ec8c);
        let mut d = Digest::new();
        d.update(b"foobar");
        assert_eq!(d.value(), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn loss_follows_the_rate_and_the_seed() {
        let mut r = Rng::new(42);
        let hits = (0..100_000).filter(|_| r.chance_ppm(100_000)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
        let mut a = Rng::new(5);
        let mut b = Rng::new(5);
        assert!((0..100).all(|_| a.chance_ppm(500_000) == b.chance_ppm(500_000)));
        assert!(!Rng::new(1).chance_ppm(0));
    }
}

//! Randomness for keys and protocol nonces.
//!
//! Hardware sources (RDSEED, then RDRAND) seed a ChaCha20 CSPRNG; the
//! generator is what callers use, so a single weak hardware draw never
//! reaches a key unmixed, and the stream keeps going if a source stalls.
//! Each source must pass a start-up health check (it answers, and a run of
//! draws shows no stuck or repeating output — the failure modes of the AMD
//! RDRAND errata that returned all ones). With no passing source,
//! [`Entropy::new`] refuses: the box does not generate keys it cannot trust.
//! Reseeding mixes fresh hardware output into the generator's state every
//! [`RESEED_INTERVAL_BYTES`] bytes.

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};

/// Bytes produced between reseeds from the hardware.
pub const RESEED_INTERVAL_BYTES: u64 = 1 << 20;
/// Draws in the start-up health check.
const HEALTH_DRAWS: usize = 32;
/// Retries per draw (Intel recommends 10 for RDRAND).
const RETRIES: usize = 10;

/// A hardware source of randomness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Rdseed,
    Rdrand,
    /// A virtio entropy device (the hypervisor's `/dev/urandom`), for CPUs
    /// without RDRAND. It seeds the generator once; reseeds need a CPU
    /// source.
    VirtioRng,
}

/// Why no trusted randomness is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntropyError {
    /// The CPU has neither RDSEED nor RDRAND.
    NoSource,
    /// Every source failed the health check (stuck, repeating or silent).
    HealthCheckFailed,
}

fn cpu_has(leaf: u32, reg_ebx: bool, bit: u32) -> bool {
    let max = core::arch::x86_64::__cpuid(0).eax;
    if leaf > max {
        return false;
    }
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    let word = if reg_ebx { r.ebx } else { r.ecx };
    word & (1 << bit) != 0
}

impl Source {
    fn available(self) -> bool {
        match self {
            Source::Rdseed => cpu_has(7, true, 18),
            Source::Rdrand => cpu_has(1, false, 30),
            Source::VirtioRng => false,
        }
    }

    /// One 64-bit draw, retried; `None` when the source keeps failing.
    fn draw(self) -> Option<u64> {
        for _ in 0..RETRIES {
            let mut v = 0u64;
            // SAFETY: only called after `available` confirmed the instruction.
            let ok = unsafe {
                match self {
                    Source::Rdseed => rdseed(&mut v),
                    Source::Rdrand => rdrand(&mut v),
                    Source::VirtioRng => false,
                }
            };
            if ok {
                return Some(v);
            }
            core::hint::spin_loop();
        }
        None
    }

    /// Start-up health check: every draw answers, none is all zeros or all
    /// ones, and no value repeats within the run.
    fn healthy(self) -> bool {
        if !self.available() {
            return false;
        }
        let mut seen = [0u64; HEALTH_DRAWS];
        for i in 0..HEALTH_DRAWS {
            let Some(v) = self.draw() else { return false };
            if v == 0 || v == u64::MAX || seen[..i].contains(&v) {
                return false;
            }
            seen[i] = v;
        }
        true
    }
}

/// # Safety
/// The CPU must support RDSEED (checked through CPUID by the caller).
#[target_feature(enable = "rdseed")]
unsafe fn rdseed(v: &mut u64) -> bool {
    core::arch::x86_64::_rdseed64_step(v) == 1
}

/// # Safety
/// The CPU must support RDRAND (checked through CPUID by the caller).
#[target_feature(enable = "rdrand")]
unsafe fn rdrand(v: &mut u64) -> bool {
    core::arch::x86_64::_rdrand64_step(v) == 1
}

/// The box's randomness: a health-checked hardware source feeding ChaCha20.
pub struct Entropy {
    rng: ChaCha20Rng,
    source: Source,
    since_reseed: u64,
    /// Reseeds that found the hardware source silent (the stream continued).
    pub reseed_failures: u64,
}

impl Entropy {
    /// Picks the first healthy CPU source and seeds the generator from it.
    pub fn new() -> Result<Entropy, EntropyError> {
        Entropy::with_device_seed(None)
    }

    /// Like [`Entropy::new`], also mixing in bytes from an entropy device
    /// (virtio-rng) when one answered. The device alone is enough when the
    /// CPU has no healthy source, provided its bytes pass the same checks
    /// (not stuck, not repeating); with neither, this refuses.
    pub fn with_device_seed(device: Option<[u8; 32]>) -> Result<Entropy, EntropyError> {
        let device = device.filter(device_seed_healthy);
        let sources = [Source::Rdseed, Source::Rdrand];
        let cpu = sources.into_iter().find(|s| s.healthy());
        let (mut seed, source) = match (cpu, device) {
            (Some(s), _) => (seed_from(s).ok_or(EntropyError::HealthCheckFailed)?, s),
            (None, Some(_)) => ([0u8; 32], Source::VirtioRng),
            (None, None) if sources.iter().any(|s| s.available()) => return Err(EntropyError::HealthCheckFailed),
            (None, None) => return Err(EntropyError::NoSource),
        };
        if let Some(d) = device {
            for (s, b) in seed.iter_mut().zip(d.iter()) {
                *s ^= b;
            }
        }
        Ok(Entropy { rng: ChaCha20Rng::from_seed(seed), source, since_reseed: 0, reseed_failures: 0 })
    }

    /// The hardware source in use.
    pub fn source(&self) -> Source {
        self.source
    }

    fn account(&mut self, bytes: usize) {
        self.since_reseed = self.since_reseed.saturating_add(bytes as u64);
        if self.since_reseed >= RESEED_INTERVAL_BYTES {
            self.since_reseed = 0;
            match (self.source != Source::VirtioRng).then(|| seed_from(self.source)).flatten() {
                Some(fresh) => {
                    // New state = ChaCha(old output XOR fresh hardware bytes):
                    // neither a compromised source nor a known state alone
                    // predicts the next key.
                    let mut mixed = [0u8; 32];
                    self.rng.fill_bytes(&mut mixed);
                    for (m, f) in mixed.iter_mut().zip(fresh.iter()) {
                        *m ^= f;
                    }
                    self.rng = ChaCha20Rng::from_seed(mixed);
                }
                None => self.reseed_failures += 1,
            }
        }
    }
}

/// An entropy device's 32 bytes: no 8-byte word stuck at all zeros or all
/// ones, and no two words equal.
fn device_seed_healthy(d: &[u8; 32]) -> bool {
    let mut words = [0u64; 4];
    for (w, c) in words.iter_mut().zip(d.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        *w = u64::from_le_bytes(b);
    }
    words.iter().all(|&w| w != 0 && w != u64::MAX) && (0..4).all(|i| (i + 1..4).all(|j| words[i] != words[j]))
}

fn seed_from(source: Source) -> Option<[u8; 32]> {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_exact_mut(8) {
        chunk.copy_from_slice(&source.draw()?.to_le_bytes());
    }
    Some(seed)
}

impl RngCore for Entropy {
    fn next_u32(&mut self) -> u32 {
        self.account(4);
        self.rng.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.account(8);
        self.rng.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.account(dest.len());
        self.rng.fill_bytes(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Entropy {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_cpu_yields_distinct_output_or_a_clear_refusal() {
        match Entropy::new() {
            Ok(mut e) => {
                let (a, b) = (e.next_u64(), e.next_u64());
                assert_ne!(a, b);
                let mut block = [0u8; 64];
                e.fill_bytes(&mut block);
                assert!(block.iter().any(|&x| x != 0));
            }
            Err(err) => assert!(matches!(err, EntropyError::NoSource | EntropyError::HealthCheckFailed)),
        }
    }

    #[test]
    fn a_device_seed_is_checked_and_mixed_in() {
        assert!(!device_seed_healthy(&[0; 32]));
        assert!(!device_seed_healthy(&[0xff; 32]));
        let mut repeating = [0u8; 32];
        for c in repeating.chunks_exact_mut(8) {
            c.copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
        }
        assert!(!device_seed_healthy(&repeating));
        let good: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        assert!(device_seed_healthy(&good));
        if let (Ok(mut a), Ok(mut b)) = (Entropy::with_device_seed(Some(good)), Entropy::with_device_seed(Some(good))) {
            // The CPU source still contributes: same device bytes, different streams.
            if a.source() != Source::VirtioRng {
                assert_ne!(a.next_u64(), b.next_u64());
            }
        }
    }

    #[test]
    fn reseeding_keeps_the_stream_going() {
        if let Ok(mut e) = Entropy::new() {
            let mut buf = [0u8; 4096];
            for _ in 0..(RESEED_INTERVAL_BYTES as usize / buf.len() + 2) {
                e.fill_bytes(&mut buf);
            }
            assert_eq!(e.reseed_failures, 0);
        }
    }
}

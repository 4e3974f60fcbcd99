//! Token bucket for replies the box generates (proxy-ARP, ICMP errors).
//!
//! Integer arithmetic in milli-tokens so that a rate of a few per second
//! refills smoothly at millisecond resolution.

use crate::time::Instant;

const MILLI: u64 = 1000;

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    milli_tokens: u64,
    last: Instant,
    rate: u32,
    burst: u32,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket { milli_tokens: u64::from(burst) * MILLI, last: now, rate, burst }
    }

    /// Take one token if available.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.millis_since(self.last);
        // rate tokens/s = rate milli-tokens/ms.
        let refill = elapsed.saturating_mul(u64::from(self.rate));
        let cap = u64::from(self.burst) * MILLI;
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(cap);
        if now > self.last {
            self.last = now;
        }
        if self.milli_tokens >= MILLI {
            self.milli_tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::from_millis(1000);
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        // 10/s: one token per 100 ms.
        assert!(!b.take(t0.plus_millis(99)));
        assert!(b.take(t0.plus_millis(100)));
        assert!(!b.take(t0.plus_millis(100)));
        // Long idle refills to the burst only.
        let later = t0.plus_millis(1_000_000);
        assert!(b.take(later) && b.take(later) && b.take(later));
        assert!(!b.take(later));
    }

    #[test]
    fn clock_stepping_back_does_not_refill() {
        let t0 = Instant::from_millis(5000);
        let mut b = TokenBucket::new(1000, 1, t0);
        assert!(b.take(t0));
        assert!(!b.take(Instant::from_millis(10)));
    }

    #[test]
    fn zero_rate_never_refills() {
        let t0 = Instant::ZERO;
        let mut b = TokenBucket::new(0, 1, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0.plus_millis(1_000_000)));
    }
}

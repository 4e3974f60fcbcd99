//! Time as the caller sees it.
//!
//! The dataplane never reads a clock: every entry point takes `now`. A
//! millisecond tick from any monotonic source is enough (ARP retries, aging,
//! token buckets all work at that resolution).

/// A point on the caller's monotonic clock, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms)
    }

    /// Milliseconds since the origin.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// `self + ms`, saturating at the end of time rather than wrapping.
    pub const fn plus_millis(self, ms: u64) -> Instant {
        Instant(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later
    /// (a clock that steps back must not make a timer fire forever).
    pub const fn millis_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(u64::MAX - 1);
        assert_eq!(t.plus_millis(10).millis(), u64::MAX);
        assert_eq!(Instant::from_millis(5).millis_since(Instant::from_millis(9)), 0);
        assert_eq!(Instant::from_millis(9).millis_since(Instant::from_millis(5)), 4);
    }
}

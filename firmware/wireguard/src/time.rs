//! Monotonic time as the caller hands it in.
//!
//! The protocol never reads a clock: every entry point takes `now`. An
//! [`Instant`] is a count of nanoseconds since an arbitrary origin chosen by the
//! caller (boot, process start); only differences between instants matter.
//! Arithmetic saturates, so a caller that passes a clock that jumps backwards
//! gets conservative timer decisions, never a panic.

use core::time::Duration;

/// A point on the caller's monotonic clock, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the caller's clock.
    pub const ZERO: Instant = Instant(0);

    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis.saturating_mul(1_000_000))
    }

    pub const fn from_secs(secs: u64) -> Instant {
        Instant(secs.saturating_mul(1_000_000_000))
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Instant {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }

    /// True when at least `d` has passed since `self`, as seen at `now`.
    /// (Compares nanoseconds: building a `Duration` would divide by 10^9 on
    /// every packet.)
    #[inline]
    pub(crate) fn elapsed_at_least(self, now: Instant, d: Duration) -> bool {
        u128::from(now.0.saturating_sub(self.0)) >= d.as_nanos()
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_secs(5);
        assert_eq!(t.saturating_since(Instant::from_secs(7)), Duration::ZERO);
        assert_eq!(Instant::from_secs(7).saturating_since(t), Duration::from_secs(2));
        assert_eq!(Instant::from_nanos(u64::MAX - 1) + Duration::from_secs(1), Instant::from_nanos(u64::MAX));
        assert!(t.elapsed_at_least(Instant::from_secs(10), Duration::from_secs(5)));
        assert!(!t.elapsed_at_least(Instant::from_secs(9), Duration::from_secs(5)));
        assert_eq!(Instant::from_millis(1500).as_nanos(), 1_500_000_000);
    }
}

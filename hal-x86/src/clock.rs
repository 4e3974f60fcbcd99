//! Time: the TSC, calibrated once at boot against the PIT.
//!
//! The dataplane never reads the clock itself; the main loop reads it here and
//! passes `now` in. The TSC is assumed invariant (true on every CPU the box is
//! meant for and under QEMU); calibration measures it over a PIT one-shot.

use x86_64::instructions::port::Port;

/// Frequency of the PIT input clock in Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration window.
const CALIBRATION_MS: u64 = 10;
/// Upper bound on polls of the PIT gate (a missing PIT must not hang boot).
const CALIBRATION_POLL_LIMIT: u32 = 50_000_000;
/// Assumed frequency when the PIT does not answer (the log says so).
const FALLBACK_TSC_HZ: u64 = 1_000_000_000;

/// Reads the time stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A monotonic clock counting from a fixed TSC origin.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    tsc_hz: u64,
    origin: u64,
    calibrated: bool,
}

impl Clock {
    /// Builds a clock from a known TSC frequency (tests, or a CPUID-reported rate).
    pub const fn from_hz(tsc_hz: u64, origin: u64) -> Clock {
        Clock { tsc_hz, origin, calibrated: true }
    }

    /// Measures the TSC frequency with PIT channel 2 and counts from `origin`.
    ///
    /// # Safety
    /// Uses I/O ports 0x42, 0x43 and 0x61; the caller must own them (nothing
    /// else in the image touches the PIT or the speaker gate).
    pub unsafe fn calibrate(origin: u64) -> Clock {
        let mut gate: Port<u8> = Port::new(0x61);
        let mut command: Port<u8> = Port::new(0x43);
        let mut channel2: Port<u8> = Port::new(0x42);
        let count = PIT_HZ * CALIBRATION_MS / 1000;
        // SAFETY: the caller owns the PIT ports; these writes program channel 2
        // as a one-shot and gate it, which affects nothing but the speaker line.
        let measured = unsafe {
            let g = gate.read();
            gate.write((g & !0x02) | 0x01);
            command.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
            channel2.write((count & 0xff) as u8);
            channel2.write((count >> 8) as u8);
            // Restart the count by toggling the gate.
            let g = gate.read();
            gate.write(g & !0x01);
            gate.write(g | 0x01);
            let start = rdtsc();
            let mut polls = 0u32;
            let mut done = false;
            while polls < CALIBRATION_POLL_LIMIT {
                if gate.read() & 0x20 != 0 {
                    done = true;
                    break;
                }
                polls += 1;
            }
            let end = rdtsc();
            if done {
                Some(end.wrapping_sub(start))
            } else {
                None
            }
        };
        match measured {
            Some(ticks) if ticks > 0 => Clock { tsc_hz: ticks.saturating_mul(1000) / CALIBRATION_MS, origin, calibrated: true },
            _ => Clock { tsc_hz: FALLBACK_TSC_HZ, origin, calibrated: false },
        }
    }

    /// TSC ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Whether the frequency was measured (false: a fallback guess).
    pub fn is_calibrated(&self) -> bool {
        self.calibrated
    }

    /// Converts a TSC value to nanoseconds since the origin.
    pub fn tsc_to_ns(&self, tsc: u64) -> u64 {
        let ticks = tsc.saturating_sub(self.origin) as u128;
        let ns = ticks * 1_000_000_000 / (self.tsc_hz.max(1) as u128);
        ns.min(u64::MAX as u128) as u64
    }

    /// Nanoseconds since the origin.
    pub fn now_ns(&self) -> u64 {
        self.tsc_to_ns(rdtsc())
    }

    /// Milliseconds since the origin.
    pub fn now_ms(&self) -> u64 {
        self.now_ns() / 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_ticks_without_overflow() {
        let c = Clock::from_hz(3_000_000_000, 1000);
        assert_eq!(c.tsc_to_ns(1000), 0);
        assert_eq!(c.tsc_to_ns(1000 + 3_000_000_000), 1_000_000_000);
        // Before the origin reads as zero, never wraps.
        assert_eq!(c.tsc_to_ns(10), 0);
        // Two centuries of ticks still convert.
        assert!(c.tsc_to_ns(u64::MAX) > 6_000_000_000_000_000_000);
    }
}

//! Time: the TSC, calibrated once at boot against the PIT.
//!
//! The dataplane never reads the clock itself; the main loop reads it here and
//! passes `now` in. The TSC is assumed invariant (true on every CPU the box is
//! meant for and under QEMU).
//!
//! Calibration must survive being descheduled: a box that is a VM (Proxmox,
//! QEMU under a loaded host) can lose its vCPU for milliseconds at any
//! instruction. Waiting for the PIT's one-shot to end and reading the TSC
//! then (the old method) counts such a pause as time, and one 10 ms pause in
//! a 10 ms window made the box's clock run at half speed — WireGuard
//! keepalives, DHCP renewals and DNS TTLs with it. So each end of a window is
//! a *bracketed* sample: the TSC read just before and just after latching the
//! PIT count, the tightest of several kept (a pause inside a sample widens it
//! and gets it discarded; a pause between samples is counted by both clocks
//! alike). A window whose PIT count ran out is thrown away, and the median of
//! a few windows is kept.

use x86_64::instructions::port::Port;

/// Frequency of the PIT input clock in Hz.
const PIT_HZ: u64 = 1_193_182;
/// PIT ticks one window spans (40 ms; the one-shot runs 0xFFFF ≈ 55 ms).
const WINDOW_TICKS: u16 = 47_727;
/// Windows measured; the median is kept.
const WINDOWS: usize = 5;
/// Bracketed reads per sample; the tightest is kept.
const SAMPLE_TRIES: usize = 8;
/// Upper bound on polls while a window runs: a 40 ms window takes some
/// 10 000 polls on hardware and fewer under emulation; a PIT that does not
/// count must not hang boot (calibration then gives up at once).
const CALIBRATION_POLL_LIMIT: u32 = 400_000;
/// Assumed frequency when the PIT does not answer (the log says so).
const FALLBACK_TSC_HZ: u64 = 1_000_000_000;

/// Reads the time stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// One bracketed reading: TSC before, the PIT count, whether the one-shot
/// ran out, TSC after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub tsc_before: u64,
    pub count: u16,
    pub out: bool,
    pub tsc_after: u64,
}

impl Sample {
    fn width(&self) -> u64 {
        self.tsc_after.wrapping_sub(self.tsc_before)
    }
    fn mid(&self) -> u64 {
        self.tsc_before + self.width() / 2
    }
}

/// What calibration needs of the PIT (the hardware one, or a simulated one
/// in tests).
pub trait Pit {
    /// Start a one-shot countdown from 0xFFFF.
    fn restart(&mut self);
    /// A bracketed reading.
    fn sample(&mut self) -> Sample;
}

/// The tightest of `SAMPLE_TRIES` readings.
fn tight<P: Pit + ?Sized>(pit: &mut P) -> Sample {
    let mut best = pit.sample();
    for _ in 1..SAMPLE_TRIES {
        let s = pit.sample();
        if s.width() < best.width() {
            best = s;
        }
    }
    best
}

/// The PIT does not count (or not as a PIT does).
#[derive(Debug)]
struct Dead;

/// One window: TSC ticks per second, `Ok(None)` when it cannot be trusted
/// (the count ran out, a sample stayed wide), `Err(Dead)` when the PIT does
/// not count at all.
fn window<P: Pit + ?Sized>(pit: &mut P) -> Result<Option<u64>, Dead> {
    pit.restart();
    let start = tight(pit);
    if start.out {
        return Ok(None);
    }
    let Some(target) = start.count.checked_sub(WINDOW_TICKS) else { return Err(Dead) };
    let mut polls = 0u32;
    loop {
        let s = pit.sample();
        if s.out || s.count <= target {
            break;
        }
        polls += 1;
        if polls >= CALIBRATION_POLL_LIMIT {
            return Err(Dead);
        }
    }
    let end = tight(pit);
    if end.out || end.count >= start.count {
        return Ok(None);
    }
    let pit_ticks = u64::from(start.count - end.count);
    let Some(tsc_ticks) = end.mid().checked_sub(start.mid()) else { return Ok(None) };
    // Each sample is uncertain by its width; keep windows known to 0.2 %.
    if (start.width() + end.width()).saturating_mul(500) > tsc_ticks {
        return Ok(None);
    }
    Ok(u64::try_from(u128::from(tsc_ticks) * u128::from(PIT_HZ) / u128::from(pit_ticks)).ok())
}

/// The TSC frequency: the median of the windows that could be trusted.
pub fn measure<P: Pit + ?Sized>(pit: &mut P) -> Option<u64> {
    let mut found = [0u64; WINDOWS];
    let mut n = 0;
    // A few more tries than windows, for the ones thrown away.
    for _ in 0..WINDOWS * 3 {
        if n == WINDOWS {
            break;
        }
        match window(pit) {
            Ok(Some(hz)) => {
                if let Some(slot) = found.get_mut(n) {
                    *slot = hz;
                    n += 1;
                }
            }
            Ok(None) => {}
            Err(Dead) => return None,
        }
    }
    let found = found.get_mut(..n)?;
    found.sort_unstable();
    found.get(n / 2).copied().filter(|&hz| hz > 0)
}

/// The hardware PIT, channel 2 (gated by port 0x61, the speaker's).
struct HardwarePit {
    gate: Port<u8>,
    command: Port<u8>,
    channel2: Port<u8>,
}

impl Pit for HardwarePit {
    fn restart(&mut self) {
        // SAFETY: `Clock::calibrate`'s caller owns ports 0x42, 0x43 and 0x61;
        // this programs channel 2 as a one-shot from 0xFFFF and restarts it
        // with its gate, which affects nothing but the speaker line.
        unsafe {
            let g = self.gate.read();
            self.gate.write(g & !0x03);
            self.command.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
            self.channel2.write(0xff);
            self.channel2.write(0xff);
            let g = self.gate.read();
            self.gate.write((g & !0x02) | 0x01);
        }
    }

    fn sample(&mut self) -> Sample {
        let tsc_before = rdtsc();
        // SAFETY: as in `restart`: latch channel 2's count and read it.
        let (lo, hi, out) = unsafe {
            self.command.write(0b1000_0000); // latch channel 2
            let lo = self.channel2.read();
            let hi = self.channel2.read();
            (lo, hi, self.gate.read() & 0x20 != 0)
        };
        let tsc_after = rdtsc();
        Sample { tsc_before, count: u16::from_le_bytes([lo, hi]), out, tsc_after }
    }
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
        let mut pit = HardwarePit { gate: Port::new(0x61), command: Port::new(0x43), channel2: Port::new(0x42) };
        match measure(&mut pit) {
            Some(hz) => Clock { tsc_hz: hz, origin, calibrated: true },
            None => Clock { tsc_hz: FALLBACK_TSC_HZ, origin, calibrated: false },
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

    /// A PIT and TSC on one simulated timeline (nanoseconds). Every I/O
    /// access costs `io_ns`; with probability 1/`pause_every` the vCPU is
    /// descheduled for `pause_ns` at that point (between any two reads).
    struct SimPit {
        now_ns: u64,
        tsc_hz: u64,
        started_ns: u64,
        io_ns: u64,
        pause_every: u64,
        pause_ns: u64,
        seed: u64,
        running: bool,
    }

    impl SimPit {
        fn step(&mut self) {
            self.now_ns += self.io_ns;
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            if self.pause_every > 0 && self.seed.is_multiple_of(self.pause_every) {
                self.now_ns += self.pause_ns;
            }
        }
        fn tsc(&mut self) -> u64 {
            self.step();
            (u128::from(self.now_ns) * u128::from(self.tsc_hz) / 1_000_000_000) as u64
        }
        fn pit_elapsed(&self) -> u64 {
            (u128::from(self.now_ns - self.started_ns) * u128::from(PIT_HZ) / 1_000_000_000) as u64
        }
    }

    impl Pit for SimPit {
        fn restart(&mut self) {
            self.step();
            self.started_ns = self.now_ns;
            self.running = true;
        }
        fn sample(&mut self) -> Sample {
            let tsc_before = self.tsc();
            self.step();
            let elapsed = self.pit_elapsed();
            let (count, out) = if !self.running {
                (0, false)
            } else if elapsed >= 0xffff {
                ((0xffffu64.wrapping_sub(elapsed) & 0xffff) as u16, true)
            } else {
                ((0xffff - elapsed) as u16, false)
            };
            let tsc_after = self.tsc();
            Sample { tsc_before, count, out, tsc_after }
        }
    }

    fn sim(pause_every: u64, pause_ns: u64, seed: u64) -> SimPit {
        SimPit { now_ns: 0, tsc_hz: 2_400_000_000, started_ns: 0, io_ns: 2_000, pause_every, pause_ns, seed, running: false }
    }

    fn error_ppm(hz: u64, want: u64) -> u64 {
        hz.abs_diff(want) * 1_000_000 / want
    }

    #[test]
    fn an_undisturbed_pit_gives_the_frequency_within_0_1_percent() {
        let mut p = sim(0, 0, 1);
        let hz = measure(&mut p).unwrap();
        assert!(error_ppm(hz, 2_400_000_000) < 1_000, "{hz}");
    }

    /// The old method: start the one-shot, read the TSC, poll until it
    /// runs out, read the TSC again.
    fn wait_for_the_end(p: &mut SimPit) -> u64 {
        p.restart();
        let start = p.tsc();
        while !p.sample().out {}
        let ticks = p.tsc() - start;
        (u128::from(ticks) * u128::from(PIT_HZ) / 0xffff) as u64
    }

    #[test]
    fn being_descheduled_does_not_slow_the_clock() {
        // 10 ms pauses, about one per 40 ms window (one per 5000 I/O
        // accesses of 2 µs). Waiting for the one-shot's end counts a pause
        // as window time — the clock then runs up to a sixth slow here, and
        // half as fast with a 10 ms window; bracketed samples and the median
        // of five windows stay within 0.5 %.
        let mut old_worst = 0;
        for seed in 1..60 {
            let mut p = sim(5_000, 10_000_000, seed);
            let hz = measure(&mut p).expect("a measurement");
            assert!(error_ppm(hz, 2_400_000_000) < 5_000, "seed {seed}: {hz} Hz");
            let mut p = sim(5_000, 10_000_000, seed);
            old_worst = old_worst.max(error_ppm(wait_for_the_end(&mut p), 2_400_000_000));
        }
        assert!(old_worst > 50_000, "the old method is off by {old_worst} ppm at worst here");
    }

    #[test]
    fn a_pit_that_never_counts_falls_back_without_hanging() {
        struct Dead;
        impl Pit for Dead {
            fn restart(&mut self) {}
            fn sample(&mut self) -> Sample {
                Sample { tsc_before: 1, count: 0xffff, out: false, tsc_after: 2 }
            }
        }
        assert_eq!(measure(&mut Dead), None);
        struct Stuck;
        impl Pit for Stuck {
            fn restart(&mut self) {}
            fn sample(&mut self) -> Sample {
                Sample { tsc_before: 1, count: 0, out: true, tsc_after: 2 }
            }
        }
        assert_eq!(measure(&mut Stuck), None);
    }
}

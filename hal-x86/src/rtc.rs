//! The PC's wall clock: the MC146818-compatible CMOS real-time clock behind
//! ports 0x70 (index) and 0x71 (data), read once at boot.
//!
//! Two layers. [`read`] does the port I/O: it waits (a bounded number of
//! polls) for register A's "update in progress" bit to clear, reads every
//! time register, and repeats until two reads in a row agree, so a read
//! torn by the once-a-second update is never used. [`decode`] is pure and
//! turns the raw registers into a [`DateTime`], honouring register B (BCD or
//! binary, 12- or 24-hour with the PM bit in the hours register) and taking
//! the century from the CMOS register ACPI's FADT names (`CENTURY`), else
//! assuming 2000–2099. [`DateTime::unix_ms`] converts with civil-from-days
//! arithmetic. An impossible value (month 13, day 0, hour 25, a BCD digit
//! above 9) is [`RtcError::Invalid`] — "no valid RTC" — never a panic.
//!
//! The RTC is taken to keep UTC, as Linux, QEMU and Proxmox set it by
//! default; one kept in local time is off by the zone offset.

use core::fmt;
use x86_64::instructions::port::Port;

/// Register A bit 7: the RTC is updating its time registers (for up to
/// ~2 ms once a second); reads now may be torn.
const UPDATE_IN_PROGRESS: u8 = 0x80;
/// Register B bit 2: the time registers are binary (else BCD).
const STATUS_B_BINARY: u8 = 0x04;
/// Register B bit 1: 24-hour mode (else 12-hour, PM in hours bit 7).
const STATUS_B_24H: u8 = 0x02;
/// The hours register's PM bit in 12-hour mode.
const HOURS_PM: u8 = 0x80;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
/// The first CMOS index that is plain storage (a century register the FADT
/// names must be at or after it, and inside the first bank).
const FIRST_STORAGE_INDEX: u8 = 0x0e;

/// Polls of register A before "update in progress" is declared stuck: an
/// update lasts under 2 ms and a port read takes about 1 µs on hardware, so
/// this is tens of milliseconds at most — a broken RTC must not hang boot.
pub const UPDATE_POLL_LIMIT: u32 = 50_000;
/// Full reads before two consecutive ones are declared never to agree.
pub const READ_TRIES: usize = 8;

/// The raw time registers, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Registers {
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub day: u8,
    pub month: u8,
    /// Years within the century (0–99).
    pub year: u8,
    /// The century register, when ACPI names one.
    pub century: Option<u8>,
    /// Register B (format flags).
    pub status_b: u8,
}

/// Why there is no usable time from the RTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcError {
    /// "Update in progress" never cleared within [`UPDATE_POLL_LIMIT`] polls.
    UpdateStuck,
    /// No two consecutive reads agreed within [`READ_TRIES`].
    Unsettled,
    /// A register holds a value no date has (the raw register value).
    Invalid { field: &'static str, value: u8 },
}

impl fmt::Display for RtcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtcError::UpdateStuck => f.write_str("the RTC never finished an update"),
            RtcError::Unsettled => f.write_str("the RTC never read the same twice"),
            RtcError::Invalid { field, value } => write!(f, "the RTC's {field} register holds {value:#04x}, which is not a date"),
        }
    }
}

/// A UTC calendar time, to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl DateTime {
    /// Milliseconds since the Unix epoch; `None` before 1970.
    pub fn unix_ms(&self) -> Option<u64> {
        let days = days_from_civil(i64::from(self.year), i64::from(self.month), i64::from(self.day));
        let secs = days * 86_400 + i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second);
        u64::try_from(secs).ok()?.checked_mul(1000)
    }

    /// The calendar time of `ms` since the Unix epoch (milliseconds dropped);
    /// `None` past the year 9999.
    pub fn from_unix_ms(ms: u64) -> Option<DateTime> {
        let secs = ms / 1000;
        let days = i64::try_from(secs / 86_400).ok()?;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let year = u16::try_from(y).ok().filter(|&y| y <= 9999)?;
        Some(DateTime {
            year,
            month: m as u8,
            day: d as u8,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        })
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", self.year, self.month, self.day, self.hour, self.minute, self.second)
    }
}

fn is_leap(year: u16) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`); exact for every year this module produces.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The raw registers as a calendar time, or why they are not one.
pub fn decode(r: &Registers) -> Result<DateTime, RtcError> {
    let binary = r.status_b & STATUS_B_BINARY != 0;
    let h24 = r.status_b & STATUS_B_24H != 0;
    let value = |field: &'static str, v: u8| -> Result<u8, RtcError> {
        if binary {
            return Ok(v);
        }
        let (tens, ones) = (v >> 4, v & 0x0f);
        if tens > 9 || ones > 9 {
            return Err(RtcError::Invalid { field, value: v });
        }
        Ok(tens * 10 + ones)
    };
    let ranged = |field: &'static str, raw: u8, range: core::ops::RangeInclusive<u8>| -> Result<u8, RtcError> {
        value(field, raw).ok().filter(|v| range.contains(v)).ok_or(RtcError::Invalid { field, value: raw })
    };
    let second = ranged("seconds", r.seconds, 0..=59)?;
    let minute = ranged("minutes", r.minutes, 0..=59)?;
    let hour = if h24 {
        ranged("hours", r.hours, 0..=23)?
    } else {
        // 12-hour: 12 AM is midnight, 12 PM is noon.
        let h = ranged("hours", r.hours & !HOURS_PM, 1..=12).map_err(|_| RtcError::Invalid { field: "hours", value: r.hours })?;
        match (h, r.hours & HOURS_PM != 0) {
            (12, false) => 0,
            (12, true) => 12,
            (h, false) => h,
            (h, true) => h + 12,
        }
    };
    let month = ranged("month", r.month, 1..=12)?;
    let year_in_century = ranged("year", r.year, 0..=99)?;
    let century = match r.century {
        // Nothing before 1900 is a date this box could have been set to.
        Some(c) => ranged("century", c, 19..=99)?,
        None => 20,
    };
    let year = u16::from(century) * 100 + u16::from(year_in_century);
    let day = ranged("day", r.day, 1..=days_in_month(year, month))?;
    Ok(DateTime { year, month, day, hour, minute, second })
}

/// Register access, so the read protocol is tested against a fake.
pub trait Cmos {
    /// The CMOS register at `index`.
    fn register(&mut self, index: u8) -> u8;
}

/// The real CMOS behind ports 0x70/0x71.
pub struct PortCmos {
    index: Port<u8>,
    data: Port<u8>,
}

impl PortCmos {
    /// The CMOS of this PC. The image is single-threaded with interrupts
    /// off, so nothing else selects a register between our two accesses.
    pub fn new() -> PortCmos {
        PortCmos { index: Port::new(0x70), data: Port::new(0x71) }
    }
}

impl Default for PortCmos {
    fn default() -> PortCmos {
        PortCmos::new()
    }
}

impl Cmos for PortCmos {
    fn register(&mut self, index: u8) -> u8 {
        // SAFETY: 0x70/0x71 are the PC's RTC/CMOS index and data ports;
        // selecting a bank-0 register (index < 0x80, NMI-enable bit left as
        // 0) and reading it changes nothing but the selected index.
        unsafe {
            self.index.write(index & 0x7f);
            self.data.read()
        }
    }
}

/// Reads the RTC: waits for no update in progress, reads every register,
/// and repeats until two reads in a row agree. `century_index` is the CMOS
/// register the FADT names for the century (ignored unless it is a storage
/// register of the first bank).
pub fn read_from(cmos: &mut impl Cmos, century_index: Option<u8>) -> Result<DateTime, RtcError> {
    let century_index = century_index.filter(|i| (FIRST_STORAGE_INDEX..0x80).contains(i));
    let snapshot = |cmos: &mut dyn Cmos| -> Result<Registers, RtcError> {
        let mut polls = 0u32;
        while cmos.register(REG_A) & UPDATE_IN_PROGRESS != 0 {
            polls += 1;
            if polls >= UPDATE_POLL_LIMIT {
                return Err(RtcError::UpdateStuck);
            }
        }
        Ok(Registers {
            seconds: cmos.register(REG_SECONDS),
            minutes: cmos.register(REG_MINUTES),
            hours: cmos.register(REG_HOURS),
            day: cmos.register(REG_DAY),
            month: cmos.register(REG_MONTH),
            year: cmos.register(REG_YEAR),
            century: century_index.map(|i| cmos.register(i)),
            status_b: cmos.register(REG_B),
        })
    };
    let mut last = snapshot(cmos)?;
    for _ in 1..READ_TRIES {
        let next = snapshot(cmos)?;
        if next == last {
            return decode(&next);
        }
        last = next;
    }
    Err(RtcError::Unsettled)
}

/// [`read_from`] the PC's CMOS.
pub fn read(century_index: Option<u8>) -> Result<DateTime, RtcError> {
    read_from(&mut PortCmos::new(), century_index)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    const BCD_24H: u8 = STATUS_B_24H;
    const BIN_24H: u8 = STATUS_B_24H | STATUS_B_BINARY;

    fn regs(status_b: u8, [year, month, day, hours, minutes, seconds]: [u8; 6], century: Option<u8>) -> Registers {
        Registers { seconds, minutes, hours, day, month, year, century, status_b }
    }

    fn dt(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> DateTime {
        DateTime { year, month, day, hour, minute, second }
    }

    #[test]
    fn bcd_and_binary_24_hour() {
        let want = dt(2026, 12, 1, 7, 10, 3);
        assert_eq!(decode(&regs(BCD_24H, [0x26, 0x12, 0x01, 0x07, 0x10, 0x03], None)), Ok(want));
        assert_eq!(decode(&regs(BIN_24H, [26, 12, 1, 7, 10, 3], None)), Ok(want));
        assert_eq!(decode(&regs(BCD_24H, [0x26, 0x12, 0x01, 0x07, 0x10, 0x03], Some(0x20))), Ok(want));
        assert_eq!(decode(&regs(BIN_24H, [99, 12, 31, 23, 59, 59], Some(19))), Ok(dt(1999, 12, 31, 23, 59, 59)));
        assert_eq!(decode(&regs(BCD_24H, [0x31, 0x05, 0x06, 0x07, 0x08, 0x09], Some(0x20))), Ok(dt(2031, 5, 6, 7, 8, 9)));
    }

    #[test]
    fn twelve_hour_mode_with_the_pm_bit() {
        let at = |h: u8, b: u8| decode(&regs(b, [0x26, 0x12, 0x01, h, 0, 0], None)).map(|d| d.hour);
        // BCD, 12-hour.
        assert_eq!(at(0x12, 0), Ok(0), "12 AM is midnight");
        assert_eq!(at(0x01, 0), Ok(1));
        assert_eq!(at(0x11, 0), Ok(11));
        assert_eq!(at(0x92, 0), Ok(12), "12 PM is noon");
        assert_eq!(at(0x81, 0), Ok(13));
        assert_eq!(at(0x91, 0), Ok(23));
        // Binary, 12-hour: the same PM bit.
        let at_bin = |h: u8| decode(&regs(STATUS_B_BINARY, [26, 12, 1, h, 0, 0], None)).map(|d| d.hour);
        assert_eq!(at_bin(0x80 | 7), Ok(19));
        assert_eq!(at_bin(12), Ok(0));
        // Hour 0 or 13 do not exist on a 12-hour clock.
        assert!(at(0x00, 0).is_err());
        assert!(at(0x13, 0).is_err());
        assert!(at(0x80, 0).is_err());
    }

    #[test]
    fn impossible_values_are_no_valid_rtc() {
        let bad = |b: u8, v: [u8; 6], c: Option<u8>| decode(&regs(b, v, c)).unwrap_err();
        assert_eq!(bad(BCD_24H, [0x26, 0x13, 0x01, 0, 0, 0], None), RtcError::Invalid { field: "month", value: 0x13 });
        assert_eq!(bad(BCD_24H, [0x26, 0x00, 0x01, 0, 0, 0], None), RtcError::Invalid { field: "month", value: 0 });
        assert_eq!(bad(BCD_24H, [0x26, 0x12, 0x00, 0, 0, 0], None), RtcError::Invalid { field: "day", value: 0 });
        assert_eq!(bad(BCD_24H, [0x26, 0x12, 0x01, 0x25, 0, 0], None), RtcError::Invalid { field: "hours", value: 0x25 });
        assert_eq!(bad(BIN_24H, [26, 12, 1, 24, 0, 0], None), RtcError::Invalid { field: "hours", value: 24 });
        assert_eq!(bad(BCD_24H, [0x26, 0x12, 0x01, 0, 0x60, 0], None), RtcError::Invalid { field: "minutes", value: 0x60 });
        assert_eq!(bad(BCD_24H, [0x26, 0x12, 0x01, 0, 0, 0x1a], None), RtcError::Invalid { field: "seconds", value: 0x1a });
        assert_eq!(bad(BCD_24H, [0xa0, 0x12, 0x01, 0, 0, 0], None), RtcError::Invalid { field: "year", value: 0xa0 });
        assert_eq!(bad(BCD_24H, [0x26, 0x12, 0x01, 0, 0, 0], Some(0x18)), RtcError::Invalid { field: "century", value: 0x18 });
        // Day 31 of a 30-day month; 29 February outside a leap year.
        assert_eq!(bad(BCD_24H, [0x26, 0x04, 0x31, 0, 0, 0], None), RtcError::Invalid { field: "day", value: 0x31 });
        assert_eq!(bad(BCD_24H, [0x26, 0x02, 0x29, 0, 0, 0], None), RtcError::Invalid { field: "day", value: 0x29 });
        assert_eq!(decode(&regs(BCD_24H, [0x28, 0x02, 0x29, 0, 0, 0], None)).map(|d| d.day), Ok(29));
        assert_eq!(decode(&regs(BCD_24H, [0x00, 0x02, 0x29, 0, 0, 0], None)).map(|d| d.day), Ok(29), "2000 is a leap year");
        assert!(decode(&regs(BCD_24H, [0x00, 0x02, 0x29, 0, 0, 0], Some(0x21))).is_err(), "2100 is not");
        // A register full of ones (no RTC answering) is never a date.
        assert!(decode(&regs(0xff, [0xff; 6], Some(0xff))).is_err());
        assert!(decode(&regs(0x00, [0xff; 6], None)).is_err());
    }

    #[test]
    fn unix_milliseconds_both_ways() {
        assert_eq!(dt(1970, 1, 1, 0, 0, 0).unix_ms(), Some(0));
        // `date -u -d "2026-12-01 07:10:03" +%s` = 1796109003
        assert_eq!(dt(2026, 12, 1, 7, 10, 3).unix_ms(), Some(1_796_109_003_000));
        // 2000-03-01: the day after a century leap day.
        assert_eq!(dt(2000, 3, 1, 0, 0, 0).unix_ms(), Some(951_868_800_000));
        assert_eq!(dt(2031, 5, 6, 7, 8, 9).unix_ms(), Some(1_935_817_689_000));
        assert_eq!(dt(1969, 12, 31, 23, 59, 59).unix_ms(), None);
        // Every day from 1970 to 2200 round-trips, and days are consecutive.
        let mut prev = None;
        for year in 1970..2200u16 {
            for month in 1..=12u8 {
                for day in 1..=days_in_month(year, month) {
                    let d = dt(year, month, day, 23, 59, 58);
                    let ms = d.unix_ms().unwrap();
                    assert_eq!(DateTime::from_unix_ms(ms + 999), Some(d));
                    if let Some(p) = prev {
                        assert_eq!(ms - p, 86_400_000);
                    }
                    prev = Some(ms);
                }
            }
        }
        assert_eq!(DateTime::from_unix_ms(u64::MAX), None);
        assert_eq!(dt(2026, 12, 1, 7, 10, 3).to_string(), "2026-12-01 07:10:03 UTC");
    }

    /// A CMOS whose registers change while being read.
    struct Fake {
        regs: [u8; 128],
        /// Register A reads "update in progress" this many more times.
        updating: u32,
        /// After this many register reads, the seconds tick over once.
        tick_after: Option<usize>,
        reads: usize,
    }

    impl Fake {
        fn new(bcd: [u8; 6], century: u8) -> Fake {
            let mut regs = [0u8; 128];
            let [y, mo, d, h, mi, s] = bcd;
            regs[REG_YEAR as usize] = y;
            regs[REG_MONTH as usize] = mo;
            regs[REG_DAY as usize] = d;
            regs[REG_HOURS as usize] = h;
            regs[REG_MINUTES as usize] = mi;
            regs[REG_SECONDS as usize] = s;
            regs[REG_B as usize] = BCD_24H;
            regs[0x32] = century;
            Fake { regs, updating: 0, tick_after: None, reads: 0 }
        }
    }

    impl Cmos for Fake {
        fn register(&mut self, index: u8) -> u8 {
            self.reads += 1;
            if self.tick_after == Some(self.reads) {
                self.regs[REG_SECONDS as usize] += 1;
            }
            if index == REG_A && self.updating > 0 {
                self.updating -= 1;
                return UPDATE_IN_PROGRESS;
            }
            self.regs[index as usize]
        }
    }

    #[test]
    fn reads_wait_for_the_update_and_agree_twice() {
        let mut c = Fake::new([0x31, 0x05, 0x06, 0x07, 0x08, 0x09], 0x20);
        c.updating = 100;
        assert_eq!(read_from(&mut c, Some(0x32)), Ok(dt(2031, 5, 6, 7, 8, 9)));
        // The seconds move between the first and second read: a third read
        // settles it on the new second.
        let mut c = Fake::new([0x31, 0x05, 0x06, 0x07, 0x08, 0x08], 0x20);
        c.tick_after = Some(3);
        assert_eq!(read_from(&mut c, Some(0x32)), Ok(dt(2031, 5, 6, 7, 8, 9)));
        assert!(c.reads > 2 * 9, "a third read was needed");
        // The century register is used only where the FADT may put one.
        let mut c = Fake::new([0x31, 0x05, 0x06, 0x07, 0x08, 0x09], 0x19);
        assert_eq!(read_from(&mut c, Some(0x32)).map(|d| d.year), Ok(1931));
        assert_eq!(read_from(&mut c, Some(0x05)).map(|d| d.year), Ok(2031), "index 5 is the alarm, not a century");
        assert_eq!(read_from(&mut c, None).map(|d| d.year), Ok(2031));
    }

    #[test]
    fn a_stuck_or_restless_rtc_is_no_rtc() {
        let mut c = Fake::new([0x31, 0x05, 0x06, 0x07, 0x08, 0x09], 0x20);
        c.updating = u32::MAX;
        assert_eq!(read_from(&mut c, None), Err(RtcError::UpdateStuck));
        struct Restless(u8);
        impl Cmos for Restless {
            fn register(&mut self, index: u8) -> u8 {
                if index == REG_SECONDS {
                    self.0 = self.0.wrapping_add(1);
                }
                if index == REG_A {
                    0
                } else {
                    self.0 & 0x07
                }
            }
        }
        assert_eq!(read_from(&mut Restless(0), None), Err(RtcError::Unsettled));
    }
}

//! A progress line for long transfers on stderr: bytes done of the total,
//! percent, rate and ETA (`flash`'s write and read-back, `upgrade`'s
//! stream over the serial line).
//!
//! On a terminal the line is redrawn in place (`\r`), at most once per
//! [`Progress::every`] interval; [`Progress::done`] ends it with a newline.
//! Elsewhere (a log, a CI job) nothing is drawn unless the caller asked for
//! [`Progress::lines`]: then a full line is printed at most once per that
//! interval, so a log of a 20-minute transfer stays readable.
//!
//! The text itself is [`line`], a pure function of the numbers, so tests
//! check it without a clock.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// `12.0/52.0 MiB`, `350.0/1101.4 KiB`: sizes in MiB from 1 MiB up, KiB
/// below (a serial line moves KiB per second).
pub fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / 1048576.0)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// `8.1 MiB/s`, `11.2 KiB/s`.
pub fn rate(bytes_per_s: f64) -> String {
    if bytes_per_s >= 1048576.0 {
        format!("{:.1} MiB/s", bytes_per_s / 1048576.0)
    } else {
        format!("{:.1} KiB/s", bytes_per_s / 1024.0)
    }
}

/// `1 h 02 min`, `3 min 05 s`, `42 s`.
pub fn duration(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 { secs.round() as u64 } else { 0 };
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s / 60 % 60),
    }
}

/// `writing 12.0/52.0 MiB  23%  8.1 MiB/s  ETA 5 s`: `done` of `total`
/// bytes, moving at `per_s` bytes a second.
pub fn line(what: &str, done: u64, total: u64, per_s: f64) -> String {
    let per_s = if per_s.is_finite() { per_s.max(0.0) } else { 0.0 };
    let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100).min(100);
    let eta = match total.saturating_sub(done) {
        0 => duration(0.0),
        left if per_s > 0.0 => duration(left as f64 / per_s),
        _ => "?".to_string(),
    };
    // Both sizes in the total's unit, so the numbers line up.
    let (done_s, total_s) = if total >= 1 << 20 {
        (format!("{:.1}", done as f64 / 1048576.0), size(total))
    } else {
        (format!("{:.1}", done as f64 / 1024.0), size(total))
    };
    format!("{what} {done_s}/{total_s} {pct:>3}%  {}  ETA {eta}", rate(per_s))
}

/// A transfer's progress line on stderr (see the module documentation).
pub struct Progress {
    what: String,
    total: u64,
    started: Instant,
    /// Bytes already done when the clock started (not moved by this run).
    base: u64,
    last: Option<Instant>,
    every: Duration,
    terminal: bool,
    lines: Option<Duration>,
    shown: bool,
}

impl Progress {
    /// Redrawn on a terminal at most 5 times a second; silent elsewhere.
    pub fn new(what: impl Into<String>, total: u64) -> Progress {
        Progress {
            what: what.into(),
            total,
            started: Instant::now(),
            base: 0,
            last: None,
            every: Duration::from_millis(200),
            terminal: std::io::stderr().is_terminal(),
            lines: None,
            shown: false,
        }
    }

    /// Redraw at most once per `every` on a terminal.
    pub fn every(mut self, every: Duration) -> Progress {
        self.every = every;
        self
    }

    /// When stderr is not a terminal, print a whole line at most once per
    /// `every` (instead of nothing).
    pub fn lines(mut self, every: Duration) -> Progress {
        self.lines = Some(every);
        self
    }

    /// Restarts the clock the rate and ETA count from, at `done` bytes
    /// (a transfer that resumes where an earlier run stopped: those bytes
    /// did not move now).
    pub fn restart(&mut self, done: u64) {
        self.started = Instant::now();
        self.base = done;
    }

    /// `done` bytes so far.
    pub fn show(&mut self, done: u64) {
        let interval = match (self.terminal, self.lines) {
            (true, _) => self.every,
            (false, Some(every)) => every,
            (false, None) => return,
        };
        if self.last.is_some_and(|t| t.elapsed() < interval) && done < self.total {
            return;
        }
        self.last = Some(Instant::now());
        let text = self.text(done);
        if self.terminal {
            eprint!("\r{text}   ");
        } else {
            eprintln!("{text}");
        }
        self.shown = true;
    }

    fn text(&self, done: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        line(&self.what, done, self.total, done.saturating_sub(self.base) as f64 / secs)
    }

    /// Ends a line drawn on a terminal so that a message can be printed;
    /// the next [`Progress::show`] draws a new one.
    pub fn pause(&mut self) {
        if self.terminal && self.shown {
            eprintln!();
        }
        self.shown = false;
    }

    /// Ends the line (a newline after a drawn line on a terminal).
    pub fn done(&self) {
        if self.terminal && self.shown {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_bytes_percent_rate_and_eta() {
        let mib = 1048576.0;
        assert_eq!(line("writing", 12 << 20, 52 << 20, 8.0 * mib), "writing 12.0/52.0 MiB  23%  8.0 MiB/s  ETA 5 s");
        assert_eq!(line("sending", 256_000, 1_024_000, 8192.0), "sending 250.0/1000.0 KiB  25%  8.0 KiB/s  ETA 1 min 34 s");
        assert_eq!(line("sending", 256 << 10, 1 << 20, 8192.0), "sending 0.2/1.0 MiB  25%  8.0 KiB/s  ETA 1 min 36 s");
        assert_eq!(line("x", 0, 100, 0.0), "x 0.0/0.1 KiB   0%  0.0 KiB/s  ETA ?");
        assert_eq!(line("x", 5, 0, 1.0), "x 0.0/0.0 KiB 100%  0.0 KiB/s  ETA 0 s");
        assert_eq!(line("x", 10, 5, f64::NAN), "x 0.0/0.0 KiB 100%  0.0 KiB/s  ETA 0 s");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration(0.4), "0 s");
        assert_eq!(duration(59.4), "59 s");
        assert_eq!(duration(61.0), "1 min 01 s");
        assert_eq!(duration(3725.0), "1 h 02 min");
        assert_eq!(duration(f64::INFINITY), "0 s");
        assert_eq!(size(1 << 20), "1.0 MiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(rate(2.5 * 1048576.0), "2.5 MiB/s");
    }
}

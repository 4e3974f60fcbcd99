//! A small stderr logger: `[   12.345] LEVEL message`, seconds since start.
//! Log lines are the interface tests and operators read, so they stay plain.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

struct Logger {
    start: Instant,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let t = self.start.elapsed();
        let _ = writeln!(std::io::stderr().lock(), "[{:5}.{:03}] {:5} {}", t.as_secs(), t.subsec_millis(), r.level(), r.args());
    }

    fn flush(&self) {}
}

/// Install the logger (once).
pub fn init(level: log::LevelFilter) {
    let logger = LOGGER.get_or_init(|| Logger { start: Instant::now() });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

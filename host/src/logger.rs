//! A small stderr logger: `[   12.345] LEVEL message`, seconds since start.
//! Log lines are the interface tests and operators read, so they stay plain.
//!
//! Every line is also offered to open provisioning sessions on the control
//! socket ([`subscribe`]; `routerctl logs`), like the image sends its
//! console lines as frames. A session that falls behind loses the oldest
//! lines (the channel holds [`BACKLOG`]); logging never waits for it.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

use tokio::sync::broadcast;

/// Lines a slow session can fall behind before it loses some.
pub const BACKLOG: usize = 256;

/// One log line as sessions get it.
#[derive(Debug, Clone)]
pub struct Line {
    /// Milliseconds since start.
    pub ms: u64,
    /// `log::Level` as a number (1 error … 5 trace), as the image sends it.
    pub level: u8,
    pub text: String,
}

struct Logger {
    start: Instant,
    lines: broadcast::Sender<Line>,
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
        if self.lines.receiver_count() > 0 {
            let _ = self.lines.send(Line { ms: t.as_millis() as u64, level: r.level() as u8, text: r.args().to_string() });
        }
    }

    fn flush(&self) {}
}

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger { start: Instant::now(), lines: broadcast::channel(BACKLOG).0 })
}

/// Install the logger (once).
pub fn init(level: log::LevelFilter) {
    if log::set_logger(logger()).is_ok() {
        log::set_max_level(level);
    }
}

/// Log lines from now on, for one session.
pub fn subscribe() -> broadcast::Receiver<Line> {
    logger().lines.subscribe()
}

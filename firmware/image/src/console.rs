//! The console on COM1 and the `log` backend that writes to it.
//!
//! Lines look like `[    1.234] INFO  pci: 00:03.0 ...`: seconds since entry,
//! level, optional subsystem, message. The image is single-threaded with
//! interrupts off, so the only way to reach the console twice at once is a
//! panic while logging; the panic path then takes the port regardless.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use hal_x86::clock::Clock;
use hal_x86::serial::Serial;

struct Console {
    serial: UnsafeCell<Option<Serial>>,
    clock: UnsafeCell<Option<Clock>>,
    busy: AtomicBool,
    /// A provisioning session holds the line: log lines travel as frames.
    session: AtomicBool,
}

// SAFETY: one CPU, no interrupts; `busy` guards re-entrance (see module docs).
unsafe impl Sync for Console {}

static CONSOLE: Console =
    Console { serial: UnsafeCell::new(None), clock: UnsafeCell::new(None), busy: AtomicBool::new(false), session: AtomicBool::new(false) };

/// Brings up COM1 and installs the logger. Without a UART the image runs
/// silently (the log calls cost nothing).
pub fn init() {
    // SAFETY: called once at boot, before any other use of COM1.
    let serial = unsafe { Serial::com1() };
    with_console(|s, _| *s = serial);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Gives log lines a time base.
pub fn set_clock(clock: Clock) {
    with_console(|_, c| *c = Some(clock));
}

fn with_console<R>(f: impl FnOnce(&mut Option<Serial>, &mut Option<Clock>) -> R) -> Option<R> {
    if CONSOLE.busy.swap(true, Ordering::Acquire) {
        return None;
    }
    // SAFETY: `busy` was false, so nobody else holds these references.
    let r = unsafe { f(&mut *CONSOLE.serial.get(), &mut *CONSOLE.clock.get()) };
    CONSOLE.busy.store(false, Ordering::Release);
    Some(r)
}

/// Reads one byte from the console, if one is waiting.
pub fn try_read() -> Option<u8> {
    with_console(|s, _| s.as_mut().and_then(Serial::try_read)).flatten()
}

/// A provisioning session opened or closed: log lines become frames or text.
pub fn set_session(open: bool) {
    CONSOLE.session.store(open, Ordering::Release);
}

/// Writes bytes as they are (protocol frames).
pub fn write_bytes(bytes: &[u8]) {
    with_console(|s, _| {
        if let Some(s) = s {
            s.write_bytes(bytes);
        }
    });
}

/// Writes raw text to the console (no log prefix). Suppressed while a
/// provisioning session holds the line (log lines still go, as frames).
/// The console as a `fmt::Write` (text in whole pieces, like [`print`]).
pub struct ConsoleText;

impl fmt::Write for ConsoleText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        print(format_args!("{s}"));
        Ok(())
    }
}

pub fn print(args: fmt::Arguments) {
    if CONSOLE.session.load(Ordering::Acquire) {
        return;
    }
    with_console(|s, _| {
        if let Some(s) = s {
            let _ = s.write_fmt(args);
        }
    });
}

/// A writer for the panic handler: takes the port even if a log line was
/// half written when the panic hit.
pub fn panic_writer() -> PanicWriter {
    CONSOLE.busy.store(true, Ordering::Release);
    PanicWriter
}

pub struct PanicWriter;

impl Write for PanicWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // SAFETY: the panic path owns the console from here on.
        let serial = unsafe { &mut *CONSOLE.serial.get() };
        if let Some(serial) = serial {
            serial.write_str(s)?;
        }
        Ok(())
    }
}

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // Library chatter (virtio feature negotiation, …) only when it matters.
        let max = if metadata.target().starts_with("virtio_drivers") { log::Level::Warn } else { log::Level::Info };
        metadata.level() <= max && metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if CONSOLE.session.load(Ordering::Acquire) {
            with_console(|s, clock| {
                let Some(s) = s else { return };
                let ms = clock.map_or(0, |c| c.now_ms());
                let target = record.target();
                let line: heapless::String<{ routerd_provision::message::LOG_TEXT }> = if target.starts_with("routerd") {
                    routerd_provision::message::text_fmt(*record.args())
                } else {
                    routerd_provision::message::text_fmt(format_args!("{target}: {}", record.args()))
                };
                let mut frame = [0u8; 2 * routerd_provision::message::LOG_TEXT];
                if let Some(f) = routerd_provision::session::encode_log(ms, record.level() as u8, &line, &mut frame) {
                    s.write_bytes(f);
                }
            });
            return;
        }
        with_console(|s, clock| {
            let Some(s) = s else { return };
            let _ = match clock {
                Some(c) => {
                    let us = c.now_ns() / 1000;
                    write!(s, "[{:5}.{:06}] ", us / 1_000_000, us % 1_000_000)
                }
                None => write!(s, "[      ?     ] "),
            };
            let _ = write!(s, "{:<5} ", record.level());
            let target = record.target();
            if !target.starts_with("routerd") {
                let _ = write!(s, "{target}: ");
            }
            let _ = writeln!(s, "{}", record.args());
        });
    }

    fn flush(&self) {}
}

/// Collects console input into lines (a human typing at the serial port).
/// Bytes beyond the line length are dropped. A line holding bytes no
/// keyboard makes (pieces of a protocol frame, line noise) is discarded
/// whole, and a frame delimiter (`0x00`) forgets the line so far.
pub struct LineReader {
    buf: [u8; 80],
    len: usize,
    binary: bool,
}

impl LineReader {
    pub const fn new() -> LineReader {
        LineReader { buf: [0; 80], len: 0, binary: false }
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.binary = false;
    }

    /// Feeds one byte; returns a completed line when the user pressed Enter.
    pub fn push(&mut self, b: u8) -> Option<&str> {
        match b {
            b'\r' | b'\n' => {
                let n = core::mem::take(&mut self.len);
                if core::mem::take(&mut self.binary) {
                    return None;
                }
                return core::str::from_utf8(self.buf.get(..n).unwrap_or(&[])).ok();
            }
            0 => self.clear(),
            0x08 | 0x7f => self.len = self.len.saturating_sub(1),
            b'\t' | 0x20..=0x7e => {
                if let Some(slot) = self.buf.get_mut(self.len) {
                    *slot = b;
                    self.len += 1;
                }
            }
            _ => self.binary = true,
        }
        None
    }
}

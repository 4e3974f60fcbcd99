//! The console on COM1 and the `log` backend that writes to it.
//!
//! Lines look like `[    1.234] INFO  pci: 00:03.0 ...`: seconds since entry,
//! level, optional subsystem, message. The image is single-threaded with
//! interrupts off, so the only way to reach the console twice at once is a
//! panic while logging; the panic path then takes the port regardless.
//!
//! Once the main loop runs ([`set_buffered`]), output goes into a transmit
//! ring ([`TX_RING`] bytes) that [`pump`] moves into the UART's FIFO each
//! turn without waiting: a reply of 30 KiB takes 2.6 s to leave a 115200
//! baud line, and forwarding must not stop for it. Only a full ring makes a
//! writer wait (for the oldest bytes to leave), as every write did before.
//! Before a reset or a power-off, [`flush`] empties the ring; the panic path
//! empties it before its message, so the order on the wire is kept.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use hal_x86::clock::Clock;
use hal_x86::serial::Serial;

/// Bytes the transmit ring holds (a largest reply frame and then some).
pub const TX_RING: usize = 64 * 1024;

struct Console {
    serial: UnsafeCell<Option<Serial>>,
    clock: UnsafeCell<Option<Clock>>,
    tx: UnsafeCell<TxRing>,
    busy: AtomicBool,
    /// A provisioning session holds the line: log lines travel as frames.
    session: AtomicBool,
    /// Output goes through the ring (the main loop pumps it).
    buffered: AtomicBool,
}

// SAFETY: one CPU, no interrupts; `busy` guards re-entrance (see module docs).
unsafe impl Sync for Console {}

static CONSOLE: Console = Console {
    serial: UnsafeCell::new(None),
    clock: UnsafeCell::new(None),
    tx: UnsafeCell::new(TxRing { head: 0, len: 0 }),
    busy: AtomicBool::new(false),
    session: AtomicBool::new(false),
    buffered: AtomicBool::new(false),
};

/// The ring's bytes: zeroed at boot like `.bss` (a buffer inside the
/// `CONSOLE` initialiser would be 64 KiB of `.data` in every firmware file).
struct TxBuf(UnsafeCell<[u8; TX_RING]>);

// SAFETY: only reached through `TxRing`, which lives in `CONSOLE` and is
// guarded by its `busy` flag like the rest of it.
unsafe impl Sync for TxBuf {}

static TX_BUF: TxBuf = TxBuf(UnsafeCell::new([0; TX_RING]));

/// Bytes waiting for the UART in [`TX_BUF`], oldest at `head`.
struct TxRing {
    head: usize,
    len: usize,
}

impl TxRing {
    fn buf(&mut self) -> &mut [u8; TX_RING] {
        // SAFETY: the only reference to TX_BUF is made here, from a
        // `&mut TxRing` that `with_console`'s `busy` flag (or the panic
        // path, which owns the console for good) made unique.
        unsafe { &mut *TX_BUF.0.get() }
    }

    /// The oldest waiting bytes that are contiguous in the buffer.
    fn front(&mut self) -> &[u8] {
        let (head, end) = (self.head, (self.head + self.len).min(TX_RING));
        self.buf().get(head..end).unwrap_or(&[])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head = (self.head + n) % TX_RING;
        self.len -= n;
    }

    /// Moves what the UART takes now.
    fn pump(&mut self, s: &mut Serial) {
        while self.len > 0 {
            let n = s.try_write(self.front());
            if n == 0 {
                return;
            }
            self.consume(n);
        }
    }

    /// Waits until everything left (or the UART gave up: it drops after a
    /// bounded wait, as `Serial::write_bytes` does).
    fn drain(&mut self, s: &mut Serial) {
        while self.len > 0 {
            let n = self.front().len();
            s.write_bytes(self.front());
            self.consume(n);
        }
    }

    /// Queues `bytes`, waiting for the oldest to leave while it is full.
    fn push(&mut self, s: &mut Serial, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == TX_RING {
                let n = self.front().len().min(bytes.len()).max(1);
                let front = self.front();
                s.write_bytes(front.get(..n).unwrap_or(front));
                self.consume(n);
            }
            let tail = (self.head + self.len) % TX_RING;
            let room = (TX_RING - self.len).min(TX_RING - tail);
            let n = room.min(bytes.len());
            if let (Some(dst), Some(src)) = (self.buf().get_mut(tail..tail + n), bytes.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.len += n;
            bytes = bytes.get(n..).unwrap_or(&[]);
        }
    }
}

/// Where console output goes: straight to the UART, or into the ring.
struct Sink<'a> {
    serial: &'a mut Serial,
    tx: &'a mut TxRing,
    buffered: bool,
}

impl Sink<'_> {
    fn bytes(&mut self, b: &[u8]) {
        if self.buffered {
            self.tx.push(self.serial, b);
            self.tx.pump(self.serial);
        } else {
            self.serial.write_bytes(b);
        }
    }
}

impl Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Terminals want CR LF; the log uses plain LF.
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                self.bytes(b"\r\n");
            }
            self.bytes(line.as_bytes());
        }
        Ok(())
    }
}

/// Runs `f` on the console's sink, if there is a UART (and nobody holds it).
fn with_sink<R>(f: impl FnOnce(&mut Sink<'_>, Option<&Clock>) -> R) -> Option<R> {
    with_console(|s, clock, tx| {
        let serial = s.as_mut()?;
        let mut sink = Sink { serial, tx, buffered: CONSOLE.buffered.load(Ordering::Acquire) };
        Some(f(&mut sink, clock.as_ref()))
    })
    .flatten()
}

/// From now on output is queued and [`pump`]ed by the main loop.
pub fn set_buffered() {
    CONSOLE.buffered.store(true, Ordering::Release);
}

/// Moves queued output into the UART as far as it takes it now (each loop
/// turn).
pub fn pump() {
    with_console(|s, _, tx| {
        if let Some(s) = s {
            tx.pump(s);
        }
    });
}

/// Sends everything queued, waiting for the UART (before a reset or a
/// power-off: the last answer and log lines must leave first).
pub fn flush() {
    with_console(|s, _, tx| {
        if let Some(s) = s {
            tx.drain(s);
        }
    });
}

/// Brings up COM1 and installs the logger. Without a UART the image runs
/// silently (the log calls cost nothing).
pub fn init() {
    // SAFETY: called once at boot, before any other use of COM1.
    let serial = unsafe { Serial::com1() };
    with_console(|s, _, _| *s = serial);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Gives log lines a time base.
pub fn set_clock(clock: Clock) {
    with_console(|_, c, _| *c = Some(clock));
}

fn with_console<R>(f: impl FnOnce(&mut Option<Serial>, &mut Option<Clock>, &mut TxRing) -> R) -> Option<R> {
    if CONSOLE.busy.swap(true, Ordering::Acquire) {
        return None;
    }
    // SAFETY: `busy` was false, so nobody else holds these references.
    let r = unsafe { f(&mut *CONSOLE.serial.get(), &mut *CONSOLE.clock.get(), &mut *CONSOLE.tx.get()) };
    CONSOLE.busy.store(false, Ordering::Release);
    Some(r)
}

/// Reads one byte from the console, if one is waiting.
pub fn try_read() -> Option<u8> {
    with_console(|s, _, _| s.as_mut().and_then(Serial::try_read)).flatten()
}

/// A provisioning session opened or closed: log lines become frames or text.
pub fn set_session(open: bool) {
    CONSOLE.session.store(open, Ordering::Release);
}

/// Writes bytes as they are (protocol frames).
pub fn write_bytes(bytes: &[u8]) {
    with_sink(|s, _| s.bytes(bytes));
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
    with_sink(|s, _| {
        let _ = s.write_fmt(args);
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
        let (serial, tx) = unsafe { (&mut *CONSOLE.serial.get(), &mut *CONSOLE.tx.get()) };
        if let Some(serial) = serial {
            // What was queued before the panic goes first.
            tx.drain(serial);
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
            with_sink(|s, clock| {
                let ms = clock.map_or(0, |c| c.now_ms());
                let target = record.target();
                let line: heapless::String<{ routerd_provision::message::LOG_TEXT }> = if target.starts_with("routerd") {
                    routerd_provision::message::text_fmt(*record.args())
                } else {
                    routerd_provision::message::text_fmt(format_args!("{target}: {}", record.args()))
                };
                let mut frame = [0u8; 2 * routerd_provision::message::LOG_TEXT];
                if let Some(f) = routerd_provision::session::encode_log(ms, record.level() as u8, &line, &mut frame) {
                    s.bytes(f);
                }
            });
            return;
        }
        with_sink(|s, clock| {
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

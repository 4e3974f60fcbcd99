//! Standard output for every command: `print!` and `println!` in this crate
//! are the macros in `main.rs`, which write here.
//!
//! When the reader of stdout goes away (`routerctl … | head`, `| grep -q`,
//! `| true`), writes fail with EPIPE. Rust ignores SIGPIPE, so std's
//! `println!` would panic ("failed printing to stdout: Broken pipe"), an
//! abort (exit 134) with panic = "abort". Here the first failed write marks
//! stdout closed and every later one is dropped: the command runs to its
//! end and exits with the code it would have returned (a failing doctor
//! still exits 1), and its session with the box ends with a bye. A command
//! that would otherwise never end (`logs`) asks [`closed`] and stops.
//!
//! Restoring SIGPIPE's default action (what C tools get) was not chosen: the
//! signal kills the process at the first write (a shell sees 141, not our
//! exit codes), skips the bye to the box and the lab's clean-up, and also
//! applies to the sockets routerctl writes: a box whose unix socket closes
//! mid-session would kill routerctl silently instead of giving the "cannot
//! reach" error.
//!
//! Any other write error (a full disk) is said once on stderr and makes the
//! command exit 1 ([`failed`]): its output is incomplete.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);
static FAILED: AtomicBool = AtomicBool::new(false);
static TEXT_TO_STDERR: AtomicBool = AtomicBool::new(false);
static WROTE: AtomicBool = AtomicBool::new(false);

/// Whether anything was written to stdout (a command that failed after
/// printing its own JSON document gets no second one).
pub fn wrote() -> bool {
    WROTE.load(Ordering::Relaxed)
}

/// From now on `print!`/`println!` write to stderr, so stdout carries only
/// what [`document`] writes: a command asked for `--json` whose progress
/// report is text (the lab) keeps stdout one JSON document for `jq`.
pub fn text_to_stderr() {
    TEXT_TO_STDERR.store(true, Ordering::Relaxed);
}

/// Writes formatted text to stdout (what `print!` expands to).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if TEXT_TO_STDERR.load(Ordering::Relaxed) {
        // Progress text: stderr is for humans; a failed write there is not
        // worth failing the command for.
        let _ = io::stderr().lock().write_fmt(args);
        return;
    }
    if closed() {
        return;
    }
    WROTE.store(true, Ordering::Relaxed);
    let r = io::stdout().lock().write_fmt(args);
    if let Err(e) = r {
        gone(e);
    }
}

/// Writes the command's JSON document to stdout, one line, whatever
/// [`text_to_stderr`] said.
pub fn document(doc: &serde_json::Value) {
    if closed() {
        return;
    }
    WROTE.store(true, Ordering::Relaxed);
    let r = writeln!(io::stdout().lock(), "{doc}");
    if let Err(e) = r {
        gone(e);
    }
}

/// Writes bytes to stdout (a man page, a completion script).
pub fn write_bytes(bytes: &[u8]) {
    if closed() {
        return;
    }
    WROTE.store(true, Ordering::Relaxed);
    let r = io::stdout().lock().write_all(bytes);
    if let Err(e) = r {
        gone(e);
    }
}

/// Pushes out what stdout still buffers (a last line without a newline).
pub fn flush() {
    if closed() {
        return;
    }
    let r = io::stdout().lock().flush();
    if let Err(e) = r {
        gone(e);
    }
}

/// Nobody reads stdout any more (or it cannot be written): stop producing.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Output was lost for another reason than a reader that left.
pub fn failed() -> bool {
    FAILED.load(Ordering::Relaxed)
}

fn gone(e: io::Error) {
    if CLOSED.swap(true, Ordering::Relaxed) {
        return;
    }
    if e.kind() != io::ErrorKind::BrokenPipe {
        FAILED.store(true, Ordering::Relaxed);
        eprintln!("routerctl: cannot write to stdout: {e}");
    }
}

//! The host end of the provisioning protocol: a session with one box.
//!
//! `--port` names the line: a tty (`/dev/ttyUSB0`, set to raw 8N1 at
//! `--baud`), `pty:/dev/pts/N`, or `unix:PATH` (QEMU's
//! `-serial unix:PATH,server=on`; the host build's control socket).
//!
//! A session: hello (versions and schema hash compared), requests with
//! increasing sequence numbers, each retransmitted with the same number
//! when no answer comes (the box answers a retransmission from its cache,
//! so nothing runs twice), bye. Console text the box printed before the
//! session opened and log lines it sends inside the session are kept for
//! the caller (`routerctl logs` shows them).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use routerd_provision::frame::{self, Decoder, Event, MAX_FRAME, MAX_PAYLOAD};
use routerd_provision::message::{self, Hello, LogLine, Op, Reply, Request, Up, PROTOCOL_HASH, PROTOCOL_VERSION};

/// Where a box is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    Unix(PathBuf),
    Tty(PathBuf),
}

impl PortSpec {
    pub fn parse(s: &str) -> Result<PortSpec, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("--port unix: needs a socket path, e.g. unix:/tmp/onprem.sock".into());
            }
            return Ok(PortSpec::Unix(p.into()));
        }
        if let Some(p) = s.strip_prefix("pty:") {
            if p.is_empty() {
                return Err("--port pty: needs a device, e.g. pty:/dev/pts/3".into());
            }
            return Ok(PortSpec::Tty(p.into()));
        }
        if s.starts_with('/') {
            return Ok(PortSpec::Tty(s.into()));
        }
        Err(format!("--port {s:?}: give a tty path (/dev/ttyUSB0), pty:/dev/pts/N or unix:/path/to.sock"))
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortSpec::Unix(p) => write!(f, "unix:{}", p.display()),
            PortSpec::Tty(p) => write!(f, "{}", p.display()),
        }
    }
}

enum Line {
    Unix(UnixStream),
    Tty(File),
}

impl Line {
    fn open(spec: &PortSpec, baud: u32) -> io::Result<Line> {
        match spec {
            PortSpec::Unix(p) => UnixStream::connect(p).map(Line::Unix),
            PortSpec::Tty(p) => {
                let f = OpenOptions::new().read(true).write(true).custom_flags_noctty().open(p)?;
                raw_mode(&f, baud)?;
                Ok(Line::Tty(f))
            }
        }
    }

    /// Reads what is available, waiting until `deadline` for the first byte.
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let timeout = rustix::time::Timespec { tv_sec: (ms / 1000) as i64, tv_nsec: ((ms % 1000) * 1_000_000) as i64 };
        let ready = {
            let fd = match &*self {
                Line::Unix(s) => s.as_fd(),
                Line::Tty(f) => f.as_fd(),
            };
            let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
            rustix::event::poll(&mut fds, Some(&timeout))
        };
        match ready {
            Ok(0) => return Ok(0),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
        let n = match self {
            Line::Unix(s) => s.read(buf)?,
            Line::Tty(f) => f.read(buf)?,
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the line was closed"));
        }
        Ok(n)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Line::Unix(s) => s.write_all(bytes),
            Line::Tty(f) => f.write_all(bytes),
        }
    }
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
    }
}

fn raw_mode(f: &File, baud: u32) -> io::Result<()> {
    use rustix::termios::{self, OptionalActions};
    let mut t = termios::tcgetattr(f)?;
    t.make_raw();
    t.set_speed(baud).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("baud rate {baud} is not supported by this tty")))?;
    termios::tcsetattr(f, OptionalActions::Now, &t)?;
    Ok(())
}

/// What went wrong talking to a box (the message says what to do).
#[derive(Debug)]
pub struct LinkError(pub String);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An open session with a box.
pub struct Client {
    line: Line,
    port: PortSpec,
    decoder: Box<Decoder<MAX_FRAME>>,
    seq: u32,
    /// The box's hello.
    pub hello: Hello,
    /// Log lines the box sent during the session, not yet taken.
    pub logs: Vec<LogLine>,
    /// Console text seen before the session opened.
    pub console: Vec<u8>,
    /// How long one try waits for an answer.
    pub timeout: Duration,
    closed: bool,
}

/// Tries per request (the same sequence number each time).
const TRIES: u32 = 3;

impl Client {
    /// Opens the line and a session. Fails with a message naming the port
    /// and what to check.
    pub fn connect(port: &PortSpec, baud: u32, timeout: Duration) -> Result<Client, LinkError> {
        let line = Line::open(port, baud).map_err(|e| {
            let hint = match (port, e.kind()) {
                (PortSpec::Unix(_), io::ErrorKind::NotFound) => {
                    " (no such socket: is the box running? QEMU needs -serial unix:PATH,server=on)"
                }
                (PortSpec::Unix(_), io::ErrorKind::ConnectionRefused) => {
                    " (nobody listens there, or another client holds the line: QEMU's serial socket takes one client at a time)"
                }
                (PortSpec::Tty(_), io::ErrorKind::PermissionDenied) => " (add yourself to the dialout group, or run as root)",
                _ => "",
            };
            LinkError(format!("cannot open {port}: {e}{hint}"))
        })?;
        let mut c = Client {
            line,
            port: port.clone(),
            decoder: Box::new(Decoder::new()),
            seq: 1,
            hello: Hello {
                version: 0,
                hash: 0,
                software: Default::default(),
                build: Default::default(),
                device: Default::default(),
                idle_timeout_s: 0,
            },
            logs: Vec::new(),
            console: Vec::new(),
            timeout,
            closed: false,
        };
        let reply = c.exchange(Op::Hello { version: PROTOCOL_VERSION, hash: PROTOCOL_HASH }, timeout)?;
        let Reply::Hello(h) = reply else {
            return Err(LinkError(format!("{port}: the box answered the hello with {reply:?}")));
        };
        if h.version != PROTOCOL_VERSION || h.hash != PROTOCOL_HASH {
            c.closed = true;
            return Err(LinkError(format!(
                "{port}: the box speaks provisioning protocol {} (layout {:#018x}), this routerctl speaks {} ({:#018x}); \
                 use the routerctl built with the box's firmware ({} build {})",
                h.version, h.hash, PROTOCOL_VERSION, PROTOCOL_HASH, h.software, h.build
            )));
        }
        c.hello = h;
        Ok(c)
    }

    /// Sends one request and returns the box's reply.
    pub fn request(&mut self, op: Op) -> Result<Reply, LinkError> {
        let t = self.timeout;
        self.exchange(op, t)
    }

    /// Like [`Client::request`] with a longer wait (apply, reboot).
    pub fn request_with(&mut self, op: Op, timeout: Duration) -> Result<Reply, LinkError> {
        self.exchange(op, timeout)
    }

    fn exchange(&mut self, op: Op, timeout: Duration) -> Result<Reply, LinkError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1).max(1);
        let req = Request { seq, op };
        let mut payload = vec![0u8; MAX_PAYLOAD];
        let n = message::encode(&req, &mut payload).map_err(|_| LinkError("the request does not fit in one frame".into()))?.len();
        let mut wire = vec![0u8; MAX_FRAME];
        let m = frame::encode(&payload[..n], &mut wire).map_err(|_| LinkError("the request does not fit in one frame".into()))?;
        let port = self.port.clone();
        for _ in 0..TRIES {
            self.line.write_all(&wire[..m]).map_err(|e| LinkError(format!("{port}: write failed: {e}")))?;
            let deadline = Instant::now() + timeout;
            if let Some(reply) = self.wait(Some(seq), deadline)? {
                return Ok(reply);
            }
        }
        Err(LinkError(format!(
            "{port}: no answer after {TRIES} tries of {} ms each (is the box powered and on this line? is the baud rate right?)",
            timeout.as_millis()
        )))
    }

    /// Reads until the response to `seq` arrives or the deadline passes.
    /// Reads until the answer to `seq` (or with `seq = None`, the first
    /// log lines) arrives, or `deadline`.
    fn wait(&mut self, seq: Option<u32>, deadline: Instant) -> Result<Option<Reply>, LinkError> {
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.line.read_until(&mut buf, deadline) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) => return Err(LinkError(format!("{}: {e}", self.port))),
            };
            for &b in &buf[..n] {
                match self.decoder.push(b) {
                    Some(Event::Frame(p)) => match message::decode::<Up>(p) {
                        Ok(Up::Response(r)) if Some(r.seq) == seq => return Ok(Some(r.reply)),
                        Ok(Up::Response(_)) => {} // a stale answer to an earlier try
                        Ok(Up::Log(l)) => self.logs.push(l),
                        Err(_) => {}
                    },
                    Some(Event::Discarded(raw, _)) => self.console.extend_from_slice(raw),
                    None => {}
                }
            }
            if seq.is_none() && !self.logs.is_empty() {
                return Ok(None);
            }
        }
    }

    /// Waits up to `duration` for log lines (`routerctl logs`); returns
    /// as soon as some arrived.
    pub fn follow(&mut self, duration: Duration) -> Result<Vec<LogLine>, LinkError> {
        let deadline = Instant::now() + duration;
        let _ = self.wait(None, deadline)?;
        Ok(std::mem::take(&mut self.logs))
    }

    /// Ends the session: the box's console is readable again.
    pub fn close(mut self) -> Result<(), LinkError> {
        self.closed = true;
        let t = self.timeout;
        self.exchange(Op::Bye, t).map(|_| ())
    }

    /// The session is over without a bye (after a reboot request).
    pub fn forget(mut self) {
        self.closed = true;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            let _ = self.exchange(Op::Bye, Duration::from_millis(300));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        assert_eq!(PortSpec::parse("unix:/tmp/a.sock"), Ok(PortSpec::Unix("/tmp/a.sock".into())));
        assert_eq!(PortSpec::parse("pty:/dev/pts/3"), Ok(PortSpec::Tty("/dev/pts/3".into())));
        assert_eq!(PortSpec::parse("/dev/ttyUSB0"), Ok(PortSpec::Tty("/dev/ttyUSB0".into())));
        assert!(PortSpec::parse("ttyUSB0").unwrap_err().contains("tty path"));
        assert!(PortSpec::parse("unix:").is_err());
    }
}

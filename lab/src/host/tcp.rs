//! TCP servers and transfers of a simulated host.
//!
//! The sink protocol, so a transfer can prove integrity across hosts and
//! processes: the client sends its bytes and closes its side (FIN); the sink
//! server, having counted and hashed (FNV-1a 64) everything it received,
//! answers 16 bytes — the count and the digest, both big-endian u64 — and
//! closes. The client compares them with what it sent. An echo server sends
//! everything back instead and the client compares byte by byte.
//!
//! The bytes come from a generator seeded by the client's port, so nothing
//! is kept in memory whatever the size.

use super::{SimHost, Stack, SynDirection, SERVER_LOG};
use crate::rng::{Digest, Pattern};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Each TCP socket's send and receive buffers (the largest window without
/// window scaling).
const BUFFER: usize = 65535;
/// Connections one listening port accepts at once.
const BACKLOG: usize = 4;
/// Length of the sink server's answer.
const TRAILER: usize = 16;
/// How long a finished transfer waits for its connection to close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What a server does with what it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenMode {
    /// Sends everything back.
    Echo,
    /// Counts and hashes everything, answers count and digest after the FIN.
    Sink,
}

impl fmt::Display for ListenMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            ListenMode::Echo => "echo",
            ListenMode::Sink => "sink",
        })
    }
}

/// One connection a server handled, once it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRecord {
    pub mode: ListenMode,
    /// The server's address and port.
    pub local: SocketAddrV4,
    /// Where the client appeared to come from (after any NAT).
    pub peer: SocketAddrV4,
    /// Bytes received.
    pub bytes: u64,
    /// FNV-1a 64 of the bytes received.
    pub digest: u64,
    /// The client closed cleanly (FIN) rather than resetting or vanishing.
    pub complete: bool,
    /// MSS of the client's SYN as it arrived here.
    pub syn_mss: Option<u16>,
    /// MSS of this server's SYN-ACK as it left.
    pub syn_ack_mss: Option<u16>,
}

/// A transfer to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub dst: Ipv4Addr,
    pub port: u16,
    pub bytes: u64,
    /// The whole transfer, connection to close, must fit in this.
    pub timeout: Duration,
    /// Source address; the host's address for `dst` if `None`.
    pub src: Option<Ipv4Addr>,
    /// What the server at `dst:port` does.
    pub mode: ListenMode,
}

impl Transfer {
    /// To a sink server, from the host's address for `dst`, within 60 s.
    pub fn new(dst: Ipv4Addr, port: u16, bytes: u64) -> Transfer {
        Transfer { dst, port, bytes, timeout: Duration::from_secs(60), src: None, mode: ListenMode::Sink }
    }

    pub fn from(mut self, src: Ipv4Addr) -> Transfer {
        self.src = Some(src);
        self
    }

    pub fn mode(mut self, mode: ListenMode) -> Transfer {
        self.mode = mode;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Transfer {
        self.timeout = timeout;
        self
    }
}

/// What a transfer achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferReport {
    pub mode: ListenMode,
    /// The client's address and port, once connecting began.
    pub local: Option<SocketAddrV4>,
    pub remote: SocketAddrV4,
    pub requested: u64,
    /// Bytes handed to TCP.
    pub sent: u64,
    /// Bytes the server acknowledged.
    pub acked: u64,
    /// Echo: bytes that came back. Sink: the count the server reported.
    pub returned: u64,
    /// Everything came back identical (echo) or the server's count and
    /// digest match what was sent (sink).
    pub intact: bool,
    /// From the first SYN to the end (or the failure).
    pub duration: Duration,
    /// MSS of this client's SYN as it left.
    pub syn_mss: Option<u16>,
    /// MSS of the server's SYN-ACK as it arrived.
    pub syn_ack_mss: Option<u16>,
    /// Why it did not complete, if it did not.
    pub failure: Option<String>,
}

impl TransferReport {
    /// Completed, every byte acknowledged and verified.
    pub fn ok(&self) -> bool {
        self.failure.is_none() && self.intact && self.acked == self.requested
    }
}

impl fmt::Display for TransferReport {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "tcp ")?;
        if let Some(l) = self.local {
            write!(f, "{l} ")?;
        }
        write!(f, "→ {} {}: {} of {} bytes acknowledged", self.remote, self.mode, self.acked, self.requested)?;
        let secs = self.duration.as_secs_f64();
        write!(f, " in {secs:.2} s")?;
        if secs > 0.0 && self.acked > 0 {
            write!(f, " ({:.1} Mbit/s)", self.acked as f64 * 8.0 / secs / 1e6)?;
        }
        f.write_str(if self.intact { ", intact" } else { ", NOT intact" })?;
        let mss = |m: Option<u16>| m.map(|m| m.to_string()).unwrap_or_else(|| "none".into());
        write!(f, "; SYN left with MSS {}, SYN-ACK arrived with MSS {}", mss(self.syn_mss), mss(self.syn_ack_mss))?;
        if let Some(why) = &self.failure {
            write!(f, "; FAILED: {why}")?;
        }
        Ok(())
    }
}

/// A listening port: a few sockets, each serving one connection at a time.
pub(super) struct Listener {
    port: u16,
    mode: ListenMode,
    slots: Vec<Slot>,
}

struct Slot {
    handle: SocketHandle,
    conn: Option<Conn>,
}

struct Conn {
    local: SocketAddrV4,
    peer: SocketAddrV4,
    bytes: u64,
    digest: Digest,
    saw_fin: bool,
    trailer_sent: bool,
}

fn new_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; BUFFER]), tcp::SocketBuffer::new(vec![0; BUFFER]))
}

fn v4(endpoint: Option<IpEndpoint>) -> Option<SocketAddrV4> {
    let e = endpoint?;
    // Another crate of the workspace may turn IPv6 on in smoltcp.
    #[allow(unreachable_patterns)]
    match e.addr {
        IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, e.port)),
        _ => None,
    }
}

impl Stack {
    /// Moves the servers' connections along; true when anything happened.
    pub(super) fn service_listeners(&mut self) -> bool {
        let mut progress = false;
        let mut finished = Vec::new();
        for l in &mut self.listeners {
            for slot in &mut l.slots {
                let sock = self.sockets.get_mut::<tcp::Socket>(slot.handle);
                let state = sock.state();
                if slot.conn.is_none() && !matches!(state, State::Listen | State::Closed) {
                    if let (Some(local), Some(peer)) = (v4(sock.local_endpoint()), v4(sock.remote_endpoint())) {
                        slot.conn = Some(Conn { local, peer, bytes: 0, digest: Digest::new(), saw_fin: false, trailer_sent: false });
                    }
                }
                let Some(conn) = slot.conn.as_mut() else {
                    if state == State::Closed {
                        // Reset before we saw it: listen again.
                        let _ = sock.listen(l.port);
                    }
                    continue;
                };
                match l.mode {
                    ListenMode::Sink => {
                        while sock.can_recv() {
                            let got = sock.recv(|data| {
                                conn.digest.update(data);
                                (data.len(), data.len())
                            });
                            match got {
                                Ok(n) if n > 0 => {
                                    conn.bytes += n as u64;
                                    progress = true;
                                }
                                _ => break,
                            }
                        }
                    }
                    ListenMode::Echo => loop {
                        let room = sock.send_capacity().saturating_sub(sock.send_queue()).min(self.scratch.len());
                        if room == 0 || !sock.can_recv() {
                            break;
                        }
                        let Some(buf) = self.scratch.get_mut(..room) else {
                            break;
                        };
                        let n = match sock.recv_slice(buf) {
                            Ok(n) if n > 0 => n,
                            _ => break,
                        };
                        let chunk = buf.get(..n).unwrap_or_default();
                        conn.digest.update(chunk);
                        conn.bytes += n as u64;
                        let _ = sock.send_slice(chunk);
                        progress = true;
                    },
                }
                if matches!(state, State::CloseWait | State::LastAck | State::Closing | State::TimeWait) {
                    conn.saw_fin = true;
                }
                if state == State::CloseWait {
                    match l.mode {
                        ListenMode::Sink if !conn.trailer_sent => {
                            let room = sock.send_capacity().saturating_sub(sock.send_queue());
                            if room >= TRAILER {
                                let mut trailer = [0u8; TRAILER];
                                trailer[..8].copy_from_slice(&conn.bytes.to_be_bytes());
                                trailer[8..].copy_from_slice(&conn.digest.value().to_be_bytes());
                                let _ = sock.send_slice(&trailer);
                                conn.trailer_sent = true;
                                sock.close();
                                progress = true;
                            }
                        }
                        ListenMode::Echo if sock.recv_queue() == 0 => {
                            sock.close();
                            progress = true;
                        }
                        _ => {}
                    }
                }
                if matches!(state, State::Closed | State::TimeWait) {
                    if state == State::TimeWait {
                        sock.abort();
                    }
                    if let Some(c) = slot.conn.take() {
                        finished.push((l.mode, c));
                    }
                    let _ = sock.listen(l.port);
                    progress = true;
                }
            }
        }
        for (mode, c) in finished {
            let syn_mss = self.syn_mss(SynDirection::Received, false, c.peer, c.local);
            let syn_ack_mss = self.syn_mss(SynDirection::Sent, true, c.local, c.peer);
            if self.records.len() >= SERVER_LOG {
                self.records.pop_front();
            }
            self.records.push_back(ServerRecord {
                mode,
                local: c.local,
                peer: c.peer,
                bytes: c.bytes,
                digest: c.digest.value(),
                complete: c.saw_fin,
                syn_mss,
                syn_ack_mss,
            });
        }
        progress
    }

    /// MSS of the latest matching SYN (or SYN-ACK) in the log.
    fn syn_mss(&self, direction: SynDirection, syn_ack: bool, src: SocketAddrV4, dst: SocketAddrV4) -> Option<u16> {
        self.dev
            .wire
            .syn_log
            .iter()
            .rev()
            .find(|r| r.direction == direction && r.syn_ack == syn_ack && r.src == src && r.dst == dst)
            .and_then(|r| r.mss)
    }
}

impl SimHost {
    /// Starts a server on `port` (every address of the host). Fails if the
    /// port already has one.
    pub fn listen(&self, port: u16, mode: ListenMode) -> io::Result<()> {
        let mut s = self.shared.lock();
        if s.listeners.iter().any(|l| l.port == port) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{}: port {port} already listening", self.name)));
        }
        let mut slots = Vec::new();
        for _ in 0..BACKLOG {
            let mut sock = new_socket();
            sock.listen(port).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("port {port}: {e}")))?;
            slots.push(Slot { handle: s.sockets.add(sock), conn: None });
        }
        s.listeners.push(Listener { port, mode, slots });
        Ok(())
    }

    /// Connections the servers finished, oldest first (the last 256).
    pub fn server_records(&self) -> Vec<ServerRecord> {
        self.shared.lock().records.iter().cloned().collect()
    }

    /// Sends `bytes` to the sink server at `dst:port` and checks the count
    /// and digest it answers. See [`SimHost::transfer_with`].
    pub fn transfer(&self, dst: Ipv4Addr, port: u16, bytes: u64, timeout: Duration) -> TransferReport {
        self.transfer_with(&Transfer::new(dst, port, bytes).timeout(timeout))
    }

    /// Runs `t`: connects, sends, verifies, closes; never longer than `t.timeout`.
    pub fn transfer_with(&self, t: &Transfer) -> TransferReport {
        self.transfer_watched(t, Duration::MAX, &mut |_, _| {})
    }

    /// [`SimHost::transfer_with`], calling `progress(acknowledged bytes,
    /// elapsed)` about every `every` while it runs (a slow, lossy underlay
    /// can take minutes: the operator sees it move).
    pub fn transfer_watched(&self, t: &Transfer, every: Duration, progress: &mut dyn FnMut(u64, Duration)) -> TransferReport {
        let start = Instant::now();
        let mut next_progress = start.checked_add(every);
        let deadline = start + t.timeout;
        let mut report = TransferReport {
            mode: t.mode,
            local: None,
            remote: SocketAddrV4::new(t.dst, t.port),
            requested: t.bytes,
            sent: 0,
            acked: 0,
            returned: 0,
            intact: false,
            duration: Duration::ZERO,
            syn_mss: None,
            syn_ack_mss: None,
            failure: None,
        };
        let mut s = self.shared.lock();
        let Some(src) = t.src.or_else(|| s.source_for(t.dst)) else {
            report.failure = Some("the host has no address".into());
            return report;
        };
        let lport = s.next_port();
        let local = SocketAddrV4::new(src, lport);
        report.local = Some(local);
        let mut sock = new_socket();
        // Acknowledge at once: the last ACK (of the server's FIN) must leave
        // in the poll before the socket is removed.
        sock.set_ack_delay(None);
        let connected = {
            let cx = s.iface.context();
            sock.connect(cx, (IpAddress::Ipv4(t.dst), t.port), IpListenEndpoint { addr: Some(IpAddress::Ipv4(src)), port: lport })
        };
        if let Err(e) = connected {
            report.failure = Some(format!("cannot connect: {e}"));
            return report;
        }
        let handle = s.sockets.add(sock);
        let seed = u64::from(lport) << 32 ^ t.bytes ^ s.seed;
        let mut pattern = Pattern::new(seed);
        let mut expect = Pattern::new(seed);
        let mut digest = Digest::new();
        let mut trailer: Vec<u8> = Vec::new();
        let mut echo_ok = true;
        let mut established = false;
        let mut closing_since: Option<Instant> = None;
        let mut scratch = vec![0u8; 4096];
        loop {
            let sock = s.sockets.get_mut::<tcp::Socket>(handle);
            let state = sock.state();
            established |= !matches!(state, State::SynSent | State::Closed);
            // Send what fits.
            while report.sent < t.bytes && sock.can_send() {
                let left = t.bytes - report.sent;
                let n = sock
                    .send(|buf| {
                        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        let chunk = &mut buf[..n];
                        pattern.fill(chunk);
                        digest.update(chunk);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                report.sent += n as u64;
            }
            report.acked = report.sent.saturating_sub(sock.send_queue() as u64);
            if t.mode == ListenMode::Sink && report.sent == t.bytes && closing_since.is_none() && established {
                sock.close();
                closing_since = Some(Instant::now());
            }
            // Read what came back.
            while sock.can_recv() {
                let n = match sock.recv_slice(&mut scratch) {
                    Ok(n) if n > 0 => n,
                    _ => break,
                };
                let got = scratch.get(..n).unwrap_or_default();
                match t.mode {
                    ListenMode::Echo => {
                        let mut want = vec![0u8; n];
                        expect.fill(&mut want);
                        echo_ok &= want == got;
                        report.returned += n as u64;
                    }
                    ListenMode::Sink => trailer.extend_from_slice(got),
                }
            }
            // Done?
            let finished = match t.mode {
                ListenMode::Echo => report.returned >= t.bytes && report.acked == t.bytes,
                // The server closes after its answer, which follows our FIN.
                ListenMode::Sink => closing_since.is_some() && !sock.may_recv(),
            };
            if finished {
                if t.mode == ListenMode::Echo && closing_since.is_none() {
                    sock.close();
                    closing_since = Some(Instant::now());
                }
                let closed = matches!(s.sockets.get::<tcp::Socket>(handle).state(), State::TimeWait | State::Closed);
                let grace_over = closing_since.is_some_and(|c| c.elapsed() >= CLOSE_GRACE);
                if closed || grace_over || Instant::now() >= deadline {
                    break;
                }
            } else if state == State::Closed && (established || closing_since.is_some()) {
                report.failure = Some("the connection was reset or closed early".into());
                break;
            } else if state == State::Closed {
                report.failure = Some("connection refused or unreachable".into());
                break;
            } else if Instant::now() >= deadline {
                report.failure = Some(format!(
                    "timed out after {:.1} s in state {state} with {} of {} bytes acknowledged",
                    t.timeout.as_secs_f64(),
                    report.acked,
                    t.bytes
                ));
                break;
            }
            if next_progress.is_some_and(|at| Instant::now() >= at) {
                progress(report.acked, start.elapsed());
                next_progress = Instant::now().checked_add(every);
            }
            self.wake();
            let until = next_progress.map_or(deadline, |p| p.min(deadline));
            s = self.shared.wait(s, until.saturating_duration_since(Instant::now()));
        }
        report.duration = start.elapsed();
        {
            let sock = s.sockets.get_mut::<tcp::Socket>(handle);
            if !matches!(sock.state(), State::TimeWait | State::Closed) {
                sock.abort();
            }
        }
        // Let the abort's RST leave before the socket goes.
        s.poll();
        s.sockets.remove(handle);
        report.intact = match t.mode {
            ListenMode::Echo => echo_ok && report.returned == t.bytes,
            ListenMode::Sink => {
                let count = trailer.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
                let theirs = trailer.get(8..16).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
                report.returned = if trailer.len() == TRAILER { count.unwrap_or(0) } else { trailer.len() as u64 };
                trailer.len() == TRAILER && count == Some(t.bytes) && report.sent == t.bytes && theirs == Some(digest.value())
            }
        };
        if report.failure.is_none() && !report.intact {
            report.failure = Some(match t.mode {
                ListenMode::Echo => "the echoed bytes differ from those sent".into(),
                ListenMode::Sink if trailer.len() != TRAILER => {
                    format!("the server answered {} bytes, not a {TRAILER}-byte count and digest (is it a sink server?)", trailer.len())
                }
                ListenMode::Sink => {
                    format!("the server counted {} bytes and a digest that do not match the {} sent", report.returned, report.sent)
                }
            });
        }
        report.syn_mss = s.syn_mss(SynDirection::Sent, false, local, report.remote);
        report.syn_ack_mss = s.syn_mss(SynDirection::Received, true, report.remote, local);
        report
    }
}

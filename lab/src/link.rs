//! One end of a point-to-point Ethernet link made of two unix datagram
//! sockets, one frame per datagram: the wire QEMU's `dgram` netdev speaks.
//!
//! QEMU binds the guest path and sends to the harness path; whatever sits on
//! the other end binds the harness path and sends to the guest path. A
//! [`SocketPair`] names the path this end binds and the path it sends to, so
//! the same type serves both ends: [`SocketPair::facing_qemu`] for the lab's
//! parts next to a real box, [`SocketPair::reversed`] for a part standing in
//! for the box (tests without QEMU), [`SocketPair::link`] for two parts joined
//! directly.
//!
//! Contract: sending never blocks the caller and never fails loudly: frames
//! are queued (bounded) for a writer thread, and a missing or stuck receiver
//! is a counted drop, because the box at the other end may not have booted
//! yet or may have stopped.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The largest datagram read; anything longer is truncated by the kernel and
/// then rejected by the parsers (an Ethernet frame here is at most 9 KiB).
pub(crate) const MAX_DATAGRAM: usize = 16 * 1024;

/// How long a reader blocks before it looks at its stop flag.
pub(crate) const READ_SLICE: Duration = Duration::from_millis(50);

/// The two socket paths of one link end: the one it binds, the one it sends to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketPair {
    /// Bound by this end; frames for it arrive here.
    pub bind: PathBuf,
    /// Where this end sends its frames (bound by the other end).
    pub peer: PathBuf,
}

impl SocketPair {
    /// The harness end of a QEMU NIC whose backend is
    /// `NetBackend::Dgram { guest, harness }`: binds `harness`, sends to `guest`.
    pub fn facing_qemu(harness: impl Into<PathBuf>, guest: impl Into<PathBuf>) -> SocketPair {
        SocketPair { bind: harness.into(), peer: guest.into() }
    }

    /// The other end of the same link: binds what this one sends to.
    pub fn reversed(&self) -> SocketPair {
        SocketPair { bind: self.peer.clone(), peer: self.bind.clone() }
    }

    /// Both ends of a fresh link whose sockets live in `dir` as
    /// `<name>.a.sock` and `<name>.b.sock`.
    pub fn link(dir: &Path, name: &str) -> (SocketPair, SocketPair) {
        let a = SocketPair { bind: dir.join(format!("{name}.a.sock")), peer: dir.join(format!("{name}.b.sock")) };
        let b = a.reversed();
        (a, b)
    }
}

/// What crossed (or failed to cross) one link end, counted by its threads.
#[derive(Debug, Default)]
pub(crate) struct LinkStats {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Nobody was bound at the peer path (the box is not up or has stopped).
    pub no_peer: AtomicU64,
    /// The peer did not take the frame within [`GIVE_UP`], or a socket error.
    pub tx_failed: AtomicU64,
    /// The transmit queue was full (the peer has not been reading).
    pub tx_queue_full: AtomicU64,
}

impl LinkStats {
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Frames waiting to be sent, per link end.
const TX_QUEUE: usize = 256;
/// How long one frame may wait for the peer to make room. A box that does
/// not read (booting, paused) gets stale frames dropped rather than late.
const GIVE_UP: Duration = Duration::from_secs(1);

/// A bound link end. Sending only queues the frame: a writer thread hands
/// it to the peer, waiting for room as long as [`GIVE_UP`] (Linux lets a
/// unix datagram receiver queue as few as 10 frames), so no caller ever
/// blocks on a slow peer.
#[derive(Debug)]
pub(crate) struct Link {
    sock: UnixDatagram,
    pair: SocketPair,
    tx: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
}

impl Link {
    /// Binds `pair.bind`, replacing a stale socket file left by an earlier
    /// run, and starts the writer.
    pub(crate) fn bind(pair: &SocketPair) -> io::Result<Link> {
        match std::fs::remove_file(&pair.bind) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(with_path(e, &pair.bind)),
        }
        let sock = UnixDatagram::bind(&pair.bind).map_err(|e| with_path(e, &pair.bind))?;
        sock.set_read_timeout(Some(READ_SLICE))?;
        sock.set_write_timeout(Some(READ_SLICE))?;
        let stats = Arc::new(LinkStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(TX_QUEUE);
        let writer = {
            let sock = sock.try_clone()?;
            let peer = pair.peer.clone();
            let stats = Arc::clone(&stats);
            let stop = Arc::clone(&stop);
            thread::Builder::new().name("link-tx".into()).spawn(move || write_frames(&sock, &peer, &rx, &stats, &stop))?
        };
        Ok(Link { sock, pair: pair.clone(), tx: Some(tx), writer: Some(writer), stop, stats })
    }

    /// Queues `frame` for the peer; a full queue is a counted drop.
    pub(crate) fn send(&self, frame: &[u8]) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(frame.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => add(&self.stats.tx_queue_full, 1),
            Err(TrySendError::Disconnected(_)) => add(&self.stats.tx_failed, 1),
        }
    }

    pub(crate) fn stats(&self) -> &LinkStats {
        &self.stats
    }

    pub(crate) fn shared_stats(&self) -> Arc<LinkStats> {
        Arc::clone(&self.stats)
    }

    /// Starts a thread that hands every received frame to `deliver` until
    /// `stop` is set or `deliver` returns false.
    pub(crate) fn spawn_reader(
        &self,
        name: String,
        stop: Arc<AtomicBool>,
        mut deliver: impl FnMut(Vec<u8>) -> bool + Send + 'static,
    ) -> io::Result<JoinHandle<()>> {
        let sock = self.sock.try_clone()?;
        let stats = Arc::clone(&self.stats);
        thread::Builder::new().name(name).spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while !stop.load(Ordering::Relaxed) {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        add(&stats.frames_in, 1);
                        add(&stats.bytes_in, n as u64);
                        let frame = buf.get(..n).unwrap_or_default().to_vec();
                        if !deliver(frame) {
                            break;
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // A broken socket cannot recover; back off instead of
                    // spinning until the owner stops us.
                    Err(_) => thread::sleep(READ_SLICE),
                }
            }
        })
    }
}

fn write_frames(sock: &UnixDatagram, peer: &Path, rx: &Receiver<Vec<u8>>, stats: &LinkStats, stop: &AtomicBool) {
    // Ends when the link drops its sender.
    while let Ok(frame) = rx.recv() {
        let started = Instant::now();
        loop {
            match sock.send_to(&frame, peer) {
                Ok(_) => {
                    add(&stats.frames_out, 1);
                    add(&stats.bytes_out, frame.len() as u64);
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => add(&stats.no_peer, 1),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                        if started.elapsed() < GIVE_UP && !stop.load(Ordering::Relaxed) =>
                    {
                        continue
                    }
                    _ => add(&stats.tx_failed, 1),
                },
            }
            break;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let _ = std::fs::remove_file(&self.pair.bind);
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("routerd-lab-link-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pair_ends_mirror_each_other() {
        let p = SocketPair::facing_qemu("/r/h", "/r/g");
        assert_eq!(p.bind, PathBuf::from("/r/h"));
        assert_eq!(p.reversed().bind, PathBuf::from("/r/g"));
        assert_eq!(p.reversed().reversed(), p);
    }

    #[test]
    fn frames_cross_and_a_missing_peer_is_reported() {
        let d = dir("cross");
        let (a, b) = SocketPair::link(&d, "x");
        let la = Link::bind(&a).unwrap();
        la.send(b"early");
        let deadline = Instant::now() + Duration::from_secs(5);
        while LinkStats::get(&la.stats().no_peer) == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(LinkStats::get(&la.stats().no_peer), 1);
        let lb = Link::bind(&b).unwrap();
        la.send(b"hello");
        let mut buf = [0u8; 16];
        let n = lb.sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        // The writer counts after send_to returns, which may be after the
        // peer already read the frame.
        let deadline = Instant::now() + Duration::from_secs(5);
        while LinkStats::get(&la.stats().frames_out) == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(LinkStats::get(&la.stats().frames_out), 1);
        drop(lb);
        assert!(!b.bind.exists(), "the socket file goes with the link");
        let _ = std::fs::remove_dir_all(&d);
    }
}

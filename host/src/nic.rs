//! routerd-host's NICs as `routerd_netdev::NetDevice`s, so the host runs the
//! forwarding turn every platform runs (`routerd_control::Forwarder`):
//!
//! - [`TapNic`]: a LAN port's TAP device, Ethernet. Frames are read into a
//!   pool of receive buffers with the dataplane's headroom in front and lent
//!   to the loop like a NIC's DMA buffers (the read is the one copy the
//!   kernel makes anyway); a frame sent is one `write`.
//! - [`crate::wan::WanNic`]: the WAN port, a UDP socket (and an optional
//!   TUN), of `Medium::Datagram`.
//! - [`HostNic`]: either, for the loop's one device type; [`Ports`] holds
//!   them by NIC index.
//!
//! Readiness: [`HostNic::poll_readable`] registers the task with every fd
//! and clears what it saw; a turn then reads each fd until it would block or
//! the batch is full (the loop turns again without sleeping after a turn
//! that moved frames).

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use routerd_netdev::pool::RxPool;
use routerd_netdev::{Capabilities, DeviceStats, NetDevice, RxLoan, TxToken, MAX_FRAME, MIN_FRAME, RX_HEADROOM};
use tokio::io::unix::AsyncFd;

use crate::tap;
use crate::wan::{WanNic, WanTx};

/// Receive buffers per device: two turns' batches, so a batch never waits
/// for a buffer.
pub const RX_BUFS: usize = 2 * crate::wan::BATCH;
/// Reads that fail (not "would block") in a row before a turn gives up on
/// an fd: a transient error must not leave data behind with the readiness
/// already cleared.
pub(crate) const READ_ERRORS: usize = 4;

/// Where a frame is read to in a receive buffer: after the headroom, up to
/// the dataplane's tailroom.
pub(crate) fn rx_area(buf: &mut [u8]) -> Option<&mut [u8]> {
    let end = buf.len().checked_sub(routerd_dataplane::TAILROOM)?;
    buf.get_mut(RX_HEADROOM..end)
}

/// What [`lend_reads`] did besides lending.
#[derive(Default)]
pub(crate) struct Reads {
    pub lent: usize,
    /// Read, but `accept` refused it (the buffer went back to the pool).
    pub refused: u64,
    /// Reads that failed with something other than "would block".
    pub errors: u64,
}

/// Fills `into` with loans from `pool`, each buffer filled at
/// [`RX_HEADROOM`] by one `read`, until `into` is full, the pool is empty,
/// `read` would block, or [`READ_ERRORS`] reads failed. A packet
/// `accept` refuses is not lent. Counts what it lent in `stats`.
pub(crate) fn lend_reads(
    pool: &mut RxPool,
    stats: &mut DeviceStats,
    into: &mut [Option<RxLoan>],
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    accept: impl Fn(&[u8]) -> bool,
) -> Reads {
    let mut r = Reads::default();
    while r.lent < into.len() && r.errors < READ_ERRORS as u64 {
        let Some(i) = pool.alloc() else { break };
        let got = match pool.buf(i).and_then(rx_area) {
            Some(area) => read(area).map(|len| (len, area.get(..len).is_some_and(&accept))),
            None => Err(io::Error::other("receive buffer too small")),
        };
        match got {
            Ok((len, true)) => {
                let (Some(loan), Some(out)) = (pool.lend(i, len), into.get_mut(r.lent)) else {
                    pool.release(i);
                    break;
                };
                stats.rx_frames += 1;
                stats.rx_bytes += len as u64;
                stats.rx_loans_out += 1;
                *out = Some(loan);
                r.lent += 1;
            }
            Ok((_, false)) => {
                pool.release(i);
                r.refused += 1;
            }
            Err(e) => {
                pool.release(i);
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                r.errors += 1;
            }
        }
    }
    r
}

/// Takes back a loan of `pool`'s, counting it in `stats` (a loan it did not
/// lend is refused and counted as foreign).
pub(crate) fn give_back_to(pool: &mut RxPool, stats: &mut DeviceStats, loan: RxLoan) {
    if pool.give_back(loan) {
        stats.rx_loans_out -= 1;
    } else {
        stats.rx_foreign_loans += 1;
    }
}

/// A frame of `len` bytes to send, cut to [`MAX_FRAME`] (counted).
pub(crate) fn tx_len(len: usize, stats: &mut DeviceStats) -> usize {
    if len > MAX_FRAME {
        stats.tx_oversize += 1;
        MAX_FRAME
    } else {
        len
    }
}

/// Polls `fd` for readability, clearing what it saw. True when it was ready.
pub(crate) fn ready<T: std::os::fd::AsRawFd>(fd: &AsyncFd<T>, cx: &mut Context<'_>) -> bool {
    match fd.poll_read_ready(cx) {
        Poll::Ready(r) => {
            if let Ok(mut g) = r {
                g.clear_ready();
            }
            true
        }
        Poll::Pending => false,
    }
}

/// A LAN port's TAP device.
pub struct TapNic {
    fd: AsyncFd<tap::Device>,
    mac: [u8; 6],
    pool: RxPool,
    tx: Box<[u8; MAX_FRAME]>,
    stats: DeviceStats,
    /// The last `lend` filled its batch: more may be waiting.
    full: bool,
}

impl TapNic {
    /// Registers `dev` with the runtime; the box's MAC on it is `mac`.
    pub fn new(dev: tap::Device, mac: [u8; 6]) -> io::Result<TapNic> {
        Ok(TapNic {
            fd: tap::register(dev)?,
            mac,
            pool: RxPool::new(RX_BUFS),
            tx: Box::new([0; MAX_FRAME]),
            stats: DeviceStats::default(),
            full: false,
        })
    }

    /// The kernel's name of the device.
    pub fn name(&self) -> &str {
        self.fd.get_ref().name()
    }
}

/// A frame for a [`TapNic`]: filled in the device's transmit buffer, then
/// one `write`.
pub struct TapTx<'a> {
    nic: &'a mut TapNic,
}

impl TxToken for TapTx<'_> {
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let nic = self.nic;
        let len = tx_len(len, &mut nic.stats);
        let buf = &mut nic.tx[..];
        let r = fill(&mut buf[..len]);
        // The kernel pads nothing: short frames go out padded, like a NIC's.
        let wire = len.max(MIN_FRAME);
        buf[len..wire].fill(0);
        match nic.fd.get_ref().send(&buf[..wire]) {
            Ok(_) => {
                nic.stats.tx_frames += 1;
                nic.stats.tx_bytes += wire as u64;
            }
            // The kernel did not take it (queue full, device down): the
            // ring-full counter is what a NIC would show.
            Err(_) => nic.stats.tx_ring_full += 1,
        }
        r
    }
}

impl NetDevice for TapNic {
    type TxToken<'a> = TapTx<'a>;

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        true
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        let fd = &self.fd;
        // Empty or longer than any Ethernet frame: a bad read, counted.
        let r =
            lend_reads(&mut self.pool, &mut self.stats, into, |area| fd.get_ref().recv(area), |f| !f.is_empty() && f.len() <= MAX_FRAME);
        self.stats.rx_errors += r.refused + r.errors;
        self.full = r.lent == into.len();
        r.lent
    }

    fn give_back(&mut self, loan: RxLoan) {
        give_back_to(&mut self.pool, &mut self.stats, loan);
    }

    fn transmit(&mut self) -> Option<TapTx<'_>> {
        Some(TapTx { nic: self })
    }

    fn poll(&mut self) {}

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

/// A NIC of routerd-host.
pub enum HostNic {
    Tap(TapNic),
    Wan(WanNic),
}

/// A transmit slot of a [`HostNic`].
pub enum HostTx<'a> {
    Tap(TapTx<'a>),
    Wan(WanTx<'a>),
}

impl TxToken for HostTx<'_> {
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        match self {
            HostTx::Tap(t) => t.send(len, fill),
            HostTx::Wan(t) => t.send(len, fill),
        }
    }
}

impl HostNic {
    /// Registers the task with the NIC's fds; true when any was readable
    /// (its readiness is cleared: the next turn reads until it would block).
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> bool {
        match self {
            HostNic::Tap(t) => ready(&t.fd, cx),
            HostNic::Wan(w) => w.poll_readable(cx),
        }
    }
}

impl NetDevice for HostNic {
    type TxToken<'a> = HostTx<'a>;

    fn mac(&self) -> [u8; 6] {
        match self {
            HostNic::Tap(t) => t.mac(),
            HostNic::Wan(w) => w.mac(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        match self {
            HostNic::Tap(t) => t.capabilities(),
            HostNic::Wan(w) => w.capabilities(),
        }
    }

    fn rx_source(&self, loan: &RxLoan) -> Option<SocketAddr> {
        match self {
            HostNic::Tap(t) => t.rx_source(loan),
            HostNic::Wan(w) => w.rx_source(loan),
        }
    }

    fn send_datagram(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        match self {
            HostNic::Tap(t) => t.send_datagram(to, payload),
            HostNic::Wan(w) => w.send_datagram(to, payload),
        }
    }

    fn link_up(&mut self) -> bool {
        match self {
            HostNic::Tap(t) => t.link_up(),
            HostNic::Wan(w) => w.link_up(),
        }
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        match self {
            HostNic::Tap(t) => t.lend(into),
            HostNic::Wan(w) => w.lend(into),
        }
    }

    fn give_back(&mut self, loan: RxLoan) {
        match self {
            HostNic::Tap(t) => t.give_back(loan),
            HostNic::Wan(w) => w.give_back(loan),
        }
    }

    fn transmit(&mut self) -> Option<HostTx<'_>> {
        match self {
            HostNic::Tap(t) => t.transmit().map(HostTx::Tap),
            HostNic::Wan(w) => w.transmit().map(HostTx::Wan),
        }
    }

    fn poll(&mut self) {
        match self {
            HostNic::Tap(t) => t.poll(),
            HostNic::Wan(w) => w.poll(),
        }
    }

    fn stats(&self) -> DeviceStats {
        match self {
            HostNic::Tap(t) => t.stats(),
            HostNic::Wan(w) => w.stats(),
        }
    }
}

/// The NICs by index (`Opened::ports` order; a port without a device has
/// none), the WAN among them.
pub struct Ports {
    pub nics: Vec<Option<HostNic>>,
    pub wan_nic: usize,
}

impl Ports {
    /// Whether a NIC filled its batch in the last turn, so frames may be
    /// waiting that no readiness will announce again (each fd's readiness
    /// was cleared before the turn read it). A turn that moved frames but
    /// drained every fd is not a reason to turn again at once: the loop
    /// waits for readiness then, leaving the CPU to the kernel and the peers.
    pub fn any_full(&self) -> bool {
        self.nics.iter().flatten().any(|n| match n {
            HostNic::Tap(t) => t.full,
            HostNic::Wan(w) => w.full,
        })
    }

    /// The WAN port's device.
    pub fn wan(&self) -> Option<&WanNic> {
        match self.nics.get(self.wan_nic) {
            Some(Some(HostNic::Wan(w))) => Some(w),
            _ => None,
        }
    }

    /// Registers the task with every fd; ready when any was readable.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut any = false;
        for n in self.nics.iter().flatten() {
            any |= n.poll_readable(cx);
        }
        if any {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl routerd_control::run::Nics for Ports {
    type Dev = HostNic;

    fn slots(&self) -> usize {
        self.nics.len()
    }

    fn nic(&mut self, i: usize) -> Option<&mut HostNic> {
        self.nics.get_mut(i)?.as_mut()
    }
}

//! Host devices for tests (feature `std`): the forwarding loop runs over
//! these exactly as it runs over the image's drivers.
//!
//! - [`Loopback`]: an in-memory NIC. Frames the test puts in ([`Loopback::inject`])
//!   are received by the loop; frames the loop transmits are queued for the
//!   test ([`Loopback::take_sent`]). Its transmit ring has a fixed number of
//!   slots that only [`NetDevice::poll`] frees, like a real ring, so a test
//!   can fill it. [`Loopback::datagram`] makes one of [`Medium::Datagram`]:
//!   an in-memory UDP socket (routerd-host's WAN) whose datagrams carry
//!   their endpoint ([`Loopback::inject_from`], [`Loopback::take_datagrams`]).
//! - [`FaultInjector`]: wraps a device and drops or corrupts received
//!   frames on a deterministic schedule, or refuses transmit slots.
//! - [`PcapWriter`]: wraps a device and records every frame in and out as a
//!   pcap file (LINKTYPE_ETHERNET) that Wireshark and tcpdump read.
//! - [`RingNic`]: for benchmarks, an in-memory NIC whose receive and
//!   transmit rings are preallocated slots (no allocation per frame).
//!
//! Like the image's drivers, the devices lend received frames
//! ([`NetDevice::lend`]) from a fixed pool of [`RING_SLOT`]-byte buffers, the
//! frame at [`RX_HEADROOM`]; a buffer is reused only once it is given back.
//!
//! Models: smoltcp's `phy/loopback.rs`, `fault_injector.rs`, `pcap_writer.rs`.

extern crate std;

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::vec::Vec;

use crate::pool::RxPool;
use crate::{Capabilities, DeviceStats, Medium, NetDevice, RxLoan, TxToken, MAX_FRAME, MIN_FRAME, RX_HEADROOM};

/// Receive buffers a [`Loopback`] lends at once (more than the forwarding
/// loop takes per turn).
pub const LOOPBACK_RX_BUFS: usize = 64;

/// An in-memory NIC with a bounded transmit ring (or an in-memory UDP
/// socket: [`Loopback::datagram`]).
pub struct Loopback {
    mac: [u8; 6],
    medium: Medium,
    /// Frames to receive, with their sender on a datagram device.
    rx: VecDeque<(Option<SocketAddr>, Vec<u8>)>,
    /// Made at the first receive (many test devices never receive).
    pool: Option<RxPool>,
    /// The sender of the frame in each pool slot.
    sources: Vec<Option<SocketAddr>>,
    sent: VecDeque<Vec<u8>>,
    datagrams: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Transmit slots in use since the last `poll`.
    in_flight: usize,
    ring: usize,
    stats: DeviceStats,
    link: bool,
}

impl Loopback {
    /// A device with `ring` transmit slots (frames sent between two polls).
    pub fn new(mac: [u8; 6], ring: usize) -> Loopback {
        Loopback {
            mac,
            medium: Medium::Ethernet,
            rx: VecDeque::new(),
            pool: None,
            sources: std::vec![None; LOOPBACK_RX_BUFS],
            sent: VecDeque::new(),
            datagrams: VecDeque::new(),
            in_flight: 0,
            ring,
            stats: DeviceStats::default(),
            link: true,
        }
    }

    /// An in-memory UDP socket ([`Medium::Datagram`]): what it receives
    /// is a UDP payload from an endpoint ([`Loopback::inject_from`]) or a
    /// bare IPv4 packet ([`Loopback::inject`]); `transmit` sends bare IPv4
    /// packets ([`Loopback::take_sent`]), `send_datagram` payloads
    /// ([`Loopback::take_datagrams`]).
    pub fn datagram(mac: [u8; 6], ring: usize) -> Loopback {
        Loopback { medium: Medium::Datagram, ..Loopback::new(mac, ring) }
    }

    /// A frame arrives from the wire (on a datagram device: a bare IPv4
    /// packet from its IP side).
    pub fn inject(&mut self, frame: &[u8]) {
        self.rx.push_back((None, frame.to_vec()));
    }

    /// A datagram device receives `payload` from `from`.
    pub fn inject_from(&mut self, from: SocketAddr, payload: &[u8]) {
        self.rx.push_back((Some(from), payload.to_vec()));
    }

    /// Every datagram sent since the last call, oldest first, with where it
    /// went.
    pub fn take_datagrams(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.datagrams.drain(..).collect()
    }

    /// Everything transmitted since the last call, oldest first.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        self.sent.drain(..).collect()
    }

    /// Frames waiting to be received.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// Set the link state.
    pub fn set_link(&mut self, up: bool) {
        self.link = up;
    }
}

/// A reserved slot of a [`Loopback`].
pub struct LoopbackTx<'a> {
    dev: &'a mut Loopback,
}

impl TxToken for LoopbackTx<'_> {
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let len = if len > MAX_FRAME {
            self.dev.stats.tx_oversize += 1;
            MAX_FRAME
        } else {
            len
        };
        let mut buf = std::vec![0u8; len.max(MIN_FRAME)];
        let r = fill(&mut buf[..len]);
        self.dev.stats.tx_frames += 1;
        self.dev.stats.tx_bytes += buf.len() as u64;
        self.dev.sent.push_back(buf);
        r
    }
}

impl NetDevice for Loopback {
    type TxToken<'a> = LoopbackTx<'a>;

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { medium: self.medium }
    }

    fn rx_source(&self, loan: &RxLoan) -> Option<SocketAddr> {
        self.sources.get(loan.slot()).copied().flatten()
    }

    fn send_datagram(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        if self.medium != Medium::Datagram {
            return false;
        }
        if self.in_flight >= self.ring {
            self.stats.tx_ring_full += 1;
            return false;
        }
        self.in_flight += 1;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += payload.len() as u64;
        self.datagrams.push_back((to, payload.to_vec()));
        true
    }

    fn link_up(&mut self) -> bool {
        self.link
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        let pool = self.pool.get_or_insert_with(|| RxPool::new(LOOPBACK_RX_BUFS));
        let mut n = 0;
        while let Some(out) = into.get_mut(n) {
            let Some((_, f)) = self.rx.front() else { break };
            if f.len() > MAX_FRAME {
                self.stats.rx_errors += 1;
                self.rx.pop_front();
                continue;
            }
            // Every buffer lent: the frame waits, as on a NIC.
            let Some(i) = pool.alloc() else { break };
            let Some((from, f)) = self.rx.pop_front() else { break };
            if let Some(dst) = pool.buf(i).and_then(|b| b.get_mut(RX_HEADROOM..RX_HEADROOM + f.len())) {
                dst.copy_from_slice(&f);
            }
            if let Some(s) = self.sources.get_mut(i) {
                *s = from;
            }
            let Some(loan) = pool.lend(i, f.len()) else { break };
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += f.len() as u64;
            self.stats.rx_loans_out += 1;
            *out = Some(loan);
            n += 1;
        }
        n
    }

    fn give_back(&mut self, loan: RxLoan) {
        if self.pool.as_mut().is_some_and(|p| p.give_back(loan)) {
            self.stats.rx_loans_out -= 1;
        } else {
            self.stats.rx_foreign_loans += 1;
        }
    }

    fn transmit(&mut self) -> Option<LoopbackTx<'_>> {
        if self.in_flight >= self.ring {
            self.stats.tx_ring_full += 1;
            return None;
        }
        self.in_flight += 1;
        Some(LoopbackTx { dev: self })
    }

    fn poll(&mut self) {
        self.in_flight = 0;
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

/// What a [`FaultInjector`] does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Drop every n-th received frame (0: never).
    pub drop_every: u32,
    /// Flip a byte in every n-th received frame (0: never).
    pub corrupt_every: u32,
    /// Truncate every n-th received frame to half its length (0: never).
    pub truncate_every: u32,
    /// Refuse every transmit slot (a ring that never drains).
    pub tx_stalled: bool,
}

/// A device with faults injected on a deterministic schedule.
pub struct FaultInjector<D> {
    inner: D,
    /// The schedule (change it between turns).
    pub faults: Faults,
    seen: u32,
    /// Frames dropped, corrupted, truncated so far.
    pub injected: u64,
}

impl<D: NetDevice> FaultInjector<D> {
    /// Wrap `inner`.
    pub fn new(inner: D, faults: Faults) -> FaultInjector<D> {
        FaultInjector { inner, faults, seen: 0, injected: 0 }
    }

    /// The wrapped device.
    pub fn inner(&mut self) -> &mut D {
        &mut self.inner
    }
}

/// Frames one `FaultInjector::lend` may drop before it returns.
const FAULT_DROPS_PER_CALL: usize = 64;

fn every(n: u32, k: u32) -> bool {
    n != 0 && k.is_multiple_of(n)
}

impl<D: NetDevice> NetDevice for FaultInjector<D> {
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn mac(&self) -> [u8; 6] {
        self.inner.mac()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn rx_source(&self, loan: &RxLoan) -> Option<SocketAddr> {
        self.inner.rx_source(loan)
    }

    fn send_datagram(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        self.inner.send_datagram(to, payload)
    }

    fn link_up(&mut self) -> bool {
        self.inner.link_up()
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        let mut n = 0;
        // Dropped frames do not use up the budget (so a caller never takes
        // "none lent" for "nothing there"), within a bound.
        let mut dropped = 0usize;
        while n < into.len() && dropped < FAULT_DROPS_PER_CALL {
            let mut one: [Option<RxLoan>; 1] = [None];
            self.inner.lend(&mut one);
            let [Some(mut loan)] = one else { break };
            self.seen = self.seen.wrapping_add(1);
            let k = self.seen;
            if every(self.faults.drop_every, k) {
                self.injected += 1;
                dropped += 1;
                self.inner.give_back(loan);
                continue;
            }
            if every(self.faults.corrupt_every, k) {
                self.injected += 1;
                let f = loan.frame_mut();
                let i = (k as usize).wrapping_mul(7919) % f.len().max(1);
                if let Some(b) = f.get_mut(i) {
                    *b ^= 0x5a;
                }
            }
            if every(self.faults.truncate_every, k) {
                self.injected += 1;
                let half = loan.len() / 2;
                loan.truncate(half);
            }
            if let Some(out) = into.get_mut(n) {
                *out = Some(loan);
            }
            n += 1;
        }
        n
    }

    fn give_back(&mut self, loan: RxLoan) {
        self.inner.give_back(loan);
    }

    fn transmit(&mut self) -> Option<D::TxToken<'_>> {
        if self.faults.tx_stalled {
            return None;
        }
        self.inner.transmit()
    }

    fn poll(&mut self) {
        self.inner.poll();
    }

    fn stats(&self) -> DeviceStats {
        self.inner.stats()
    }
}

/// A device that records every frame in and out as pcap.
pub struct PcapWriter<D, W: Write> {
    inner: D,
    out: W,
    /// Microseconds stamped on the next record (tests pass time in).
    pub now_us: u64,
}

impl<D: NetDevice, W: Write> PcapWriter<D, W> {
    /// Wrap `inner`, writing the pcap header to `out` now. Only an
    /// Ethernet device: a datagram device's payloads have no link header
    /// to record (routerd-control's capture makes one up for them).
    pub fn new(inner: D, mut out: W) -> std::io::Result<PcapWriter<D, W>> {
        if inner.capabilities().medium != Medium::Ethernet {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "PcapWriter records Ethernet devices only (LINKTYPE_ETHERNET)",
            ));
        }
        // Magic, version 2.4, GMT offset 0, accuracy 0, snaplen, LINKTYPE_ETHERNET.
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { inner, out, now_us: 0 })
    }

    /// The wrapped device.
    pub fn inner(&mut self) -> &mut D {
        &mut self.inner
    }

    /// The pcap output.
    pub fn output(&mut self) -> &mut W {
        &mut self.out
    }
}

fn record<W: Write>(out: &mut W, now_us: u64, frame: &[u8]) {
    let len = frame.len() as u32;
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&((now_us / 1_000_000) as u32).to_le_bytes());
    h[4..8].copy_from_slice(&((now_us % 1_000_000) as u32).to_le_bytes());
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h[12..16].copy_from_slice(&len.to_le_bytes());
    // A test's capture is best effort: a full disk must not change what
    // the device under test does.
    let _ = out.write_all(&h).and_then(|_| out.write_all(frame));
}

/// A reserved slot of a [`PcapWriter`]: records what is sent through it.
pub struct PcapTx<'a, T, W: Write> {
    inner: T,
    out: &'a mut W,
    now_us: u64,
}

impl<T: TxToken, W: Write> TxToken for PcapTx<'_, T, W> {
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let PcapTx { inner, out, now_us } = self;
        inner.send(len, |buf| {
            let r = fill(buf);
            record(out, now_us, buf);
            r
        })
    }
}

impl<D: NetDevice, W: Write> NetDevice for PcapWriter<D, W> {
    type TxToken<'a>
        = PcapTx<'a, D::TxToken<'a>, W>
    where
        Self: 'a;

    fn mac(&self) -> [u8; 6] {
        self.inner.mac()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn rx_source(&self, loan: &RxLoan) -> Option<SocketAddr> {
        self.inner.rx_source(loan)
    }

    fn send_datagram(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        self.inner.send_datagram(to, payload)
    }

    fn link_up(&mut self) -> bool {
        self.inner.link_up()
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        let n = self.inner.lend(into);
        for loan in into.iter().take(n).flatten() {
            record(&mut self.out, self.now_us, loan.frame());
        }
        n
    }

    fn give_back(&mut self, loan: RxLoan) {
        self.inner.give_back(loan);
    }

    fn transmit(&mut self) -> Option<Self::TxToken<'_>> {
        let now_us = self.now_us;
        let PcapWriter { inner, out, .. } = self;
        inner.transmit().map(|t| PcapTx { inner: t, out, now_us })
    }

    fn poll(&mut self) {
        self.inner.poll();
    }

    fn stats(&self) -> DeviceStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ring_fills_until_polled() {
        let mut d = Loopback::new([2, 0, 0, 0, 0, 1], 2);
        for _ in 0..2 {
            d.transmit().unwrap().send(14, |b| b.fill(1));
        }
        assert!(d.transmit().is_none());
        assert_eq!(d.stats().tx_ring_full, 1);
        d.poll();
        assert!(d.transmit().is_some());
        let sent = d.take_sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].len(), MIN_FRAME, "padded like a NIC");
    }

    #[test]
    fn faults_follow_their_schedule() {
        let mut lo = Loopback::new([2, 0, 0, 0, 0, 1], 4);
        for i in 0..6u8 {
            lo.inject(&[i; 20]);
        }
        let mut d = FaultInjector::new(lo, Faults { drop_every: 3, truncate_every: 5, ..Faults::default() });
        let mut got = Vec::new();
        d.receive(10, &mut |f| got.push((f[0], f.len())));
        // The 3rd and 6th dropped, the 5th truncated.
        assert_eq!(got, [(0, 20), (1, 20), (3, 20), (4, 10)]);
        assert_eq!(d.injected, 3);
        d.faults.tx_stalled = true;
        assert!(d.transmit().is_none());
    }

    #[test]
    fn pcap_records_both_directions() {
        let mut lo = Loopback::new([2, 0, 0, 0, 0, 1], 4);
        lo.inject(&[0xab; 60]);
        let mut d = PcapWriter::new(lo, Vec::new()).unwrap();
        d.now_us = 1_500_000;
        d.receive(1, &mut |_| {});
        d.transmit().unwrap().send(60, |b| b.fill(0xcd));
        let pcap = d.output().clone();
        assert_eq!(pcap.len(), 24 + 2 * (16 + 60));
        assert_eq!(&pcap[..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(&pcap[24..28], &1u32.to_le_bytes(), "seconds");
        assert_eq!(&pcap[28..32], &500_000u32.to_le_bytes(), "microseconds");
        assert_eq!(pcap[40], 0xab);
        assert_eq!(pcap[24 + 76 + 16], 0xcd);
    }

    #[test]
    fn pcap_refuses_a_datagram_device() {
        let e = PcapWriter::new(Loopback::datagram([2, 0, 0, 0, 0, 1], 4), Vec::new()).err();
        assert_eq!(e.map(|e| e.kind()), Some(std::io::ErrorKind::InvalidInput));
    }
}

/// Bytes per slot of a [`RingNic`] (a frame of up to [`MAX_FRAME`] bytes,
/// rounded up like a driver's DMA buffer).
pub const RING_SLOT: usize = crate::pool::SLOT;

/// An in-memory NIC for benchmarks: like [`Loopback`], but both rings are
/// preallocated fixed slots, so no frame allocates.
///
/// - Receive: [`RingNic::inject`] copies a frame into a free receive slot at
///   [`RX_HEADROOM`] (what DMA does; a full ring refuses it);
///   [`NetDevice::lend`] lends the slots in place, oldest first, and
///   [`NetDevice::give_back`] frees them.
/// - Transmit: a bounded ring of slots. A [`TxToken`] fills the next slot
///   directly (one copy, by the caller's `fill`); [`NetDevice::poll`]
///   completes every frame in flight ("puts it on the wire") and frees the
///   slots. The frames completed by the last poll stay readable through
///   [`RingNic::wire`] until the next transmit overwrites them.
pub struct RingNic {
    mac: [u8; 6],
    rx: RxPool,
    /// Received frames waiting to be lent, oldest first: (slot, length).
    /// Preallocated to the pool's size, so it never grows.
    rx_queue: VecDeque<(usize, usize)>,
    tx: Vec<[u8; RING_SLOT]>,
    tx_len: Vec<usize>,
    /// Slots filled since the last `poll`.
    in_flight: usize,
    /// Slots the last `poll` completed (`tx[..on_wire]`).
    on_wire: usize,
    /// Most frames one `receive` hands out (besides its budget).
    rx_limit: usize,
    stats: DeviceStats,
    link: bool,
}

impl RingNic {
    /// A device with `rx_slots` receive and `tx_slots` transmit slots (the
    /// frames it can send between two polls). Allocates both rings now.
    pub fn new(mac: [u8; 6], rx_slots: usize, tx_slots: usize) -> RingNic {
        RingNic {
            mac,
            rx: RxPool::new(rx_slots.max(1)),
            rx_queue: VecDeque::with_capacity(rx_slots.max(1)),
            tx: std::vec![[0u8; RING_SLOT]; tx_slots],
            tx_len: std::vec![0; tx_slots],
            in_flight: 0,
            on_wire: 0,
            rx_limit: usize::MAX,
            stats: DeviceStats::default(),
            link: true,
        }
    }

    /// At most `max` frames per [`NetDevice::lend`] call from now on
    /// (`usize::MAX`: only the caller's budget limits it), e.g. to drive a
    /// loop one frame per turn.
    pub fn set_rx_limit(&mut self, max: usize) {
        self.rx_limit = max;
    }

    /// A frame arrives from the wire: copied into the next free receive
    /// slot. False when the ring is full (the frame is lost, as on a NIC
    /// whose ring the driver did not refill) or the frame is longer than
    /// [`MAX_FRAME`] (counted as an `rx_error`).
    pub fn inject(&mut self, frame: &[u8]) -> bool {
        if frame.len() > MAX_FRAME {
            self.stats.rx_errors += 1;
            return false;
        }
        let Some(i) = self.rx.alloc() else { return false };
        match self.rx.buf(i).and_then(|b| b.get_mut(RX_HEADROOM..RX_HEADROOM + frame.len())) {
            Some(dst) => dst.copy_from_slice(frame),
            None => return false,
        }
        self.rx_queue.push_back((i, frame.len()));
        true
    }

    /// Frames waiting to be received.
    pub fn pending(&self) -> usize {
        self.rx_queue.len()
    }

    /// Free receive slots (neither holding a frame nor lent).
    pub fn rx_free(&self) -> usize {
        self.rx.free()
    }

    /// The frames the last [`NetDevice::poll`] put on the wire, oldest
    /// first (padded to [`MIN_FRAME`] like a NIC's).
    pub fn wire(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.tx.iter().zip(self.tx_len.iter()).take(self.on_wire).map(|(s, &l)| &s[..l])
    }

    /// Transmit slots filled since the last poll.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Set the link state.
    pub fn set_link(&mut self, up: bool) {
        self.link = up;
    }
}

/// A reserved slot of a [`RingNic`].
pub struct RingNicTx<'a> {
    dev: &'a mut RingNic,
}

impl TxToken for RingNicTx<'_> {
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let dev = self.dev;
        let len = if len > MAX_FRAME {
            dev.stats.tx_oversize += 1;
            MAX_FRAME
        } else {
            len
        };
        let i = dev.in_flight;
        // `transmit` handed out this token only with slot `i` free.
        let slot = &mut dev.tx[i];
        let r = fill(&mut slot[..len]);
        let sent = len.max(MIN_FRAME);
        slot[len..sent].fill(0);
        dev.tx_len[i] = sent;
        dev.in_flight += 1;
        dev.stats.tx_frames += 1;
        dev.stats.tx_bytes += sent as u64;
        r
    }
}

impl NetDevice for RingNic {
    type TxToken<'a> = RingNicTx<'a>;

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        self.link
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        let (mut n, mut bytes) = (0, 0);
        let limit = into.len().min(self.rx_limit).min(self.rx_queue.len());
        for (i, len) in self.rx_queue.drain(..limit) {
            // Cannot fail: a queued slot is home and holds a frame that fits.
            let (Some(loan), Some(out)) = (self.rx.lend(i, len), into.get_mut(n)) else { continue };
            *out = Some(loan);
            n += 1;
            bytes += len as u64;
        }
        self.stats.rx_frames += n as u64;
        self.stats.rx_bytes += bytes;
        self.stats.rx_loans_out += n as u64;
        n
    }

    fn give_back(&mut self, loan: RxLoan) {
        if self.rx.give_back(loan) {
            self.stats.rx_loans_out -= 1;
        } else {
            self.stats.rx_foreign_loans += 1;
        }
    }

    fn transmit(&mut self) -> Option<RingNicTx<'_>> {
        if self.in_flight >= self.tx.len() {
            self.stats.tx_ring_full += 1;
            return None;
        }
        Some(RingNicTx { dev: self })
    }

    fn poll(&mut self) {
        self.on_wire = self.in_flight;
        self.in_flight = 0;
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

#[cfg(test)]
mod ring_nic_tests {
    use super::*;

    /// Lends up to `budget` frames from `d` onto `loans`; how many.
    fn lend_into<D: NetDevice>(d: &mut D, budget: usize, loans: &mut Vec<RxLoan>) -> usize {
        let mut slots: Vec<Option<RxLoan>> = (0..budget).map(|_| None).collect();
        let n = d.lend(&mut slots);
        loans.extend(slots.into_iter().flatten());
        n
    }

    #[test]
    fn rings_wrap_are_bounded_and_keep_the_last_polled_frames() {
        let mut d = RingNic::new([2, 0, 0, 0, 0, 2], 3, 2);
        assert!(d.inject(&[1; 20]) && d.inject(&[2; 30]) && d.inject(&[3; 40]));
        assert!(!d.inject(&[4; 40]), "receive ring full");
        assert!(!d.inject(&[0; MAX_FRAME + 1]));
        assert_eq!(d.stats().rx_errors, 1);
        let mut got = Vec::new();
        assert_eq!(d.receive(2, &mut |f| got.push((f[0], f.len()))), 2);
        assert!(d.inject(&[5; 50]), "slots freed by receive are reused (wrapping)");
        assert_eq!(d.receive(8, &mut |f| got.push((f[0], f.len()))), 2);
        assert_eq!(got, [(1, 20), (2, 30), (3, 40), (5, 50)]);
        assert_eq!(d.pending(), 0);
        d.set_rx_limit(1);
        assert!(d.inject(&[6; 60]) && d.inject(&[7; 60]));
        let mut loans = Vec::new();
        assert_eq!(lend_into(&mut d, 8, &mut loans), 1, "limited to one frame per call");
        d.set_rx_limit(usize::MAX);
        assert_eq!(lend_into(&mut d, 8, &mut loans), 1);
        for l in loans {
            d.give_back(l);
        }

        d.transmit().unwrap().send(14, |b| b.fill(7));
        d.transmit().unwrap().send(MAX_FRAME + 10, |b| b.fill(8));
        assert!(d.transmit().is_none());
        assert_eq!(d.stats().tx_ring_full, 1);
        assert_eq!(d.wire().count(), 0, "nothing completed before poll");
        d.poll();
        let wire: Vec<(u8, usize)> = d.wire().map(|f| (f[0], f.len())).collect();
        assert_eq!(wire, [(7, MIN_FRAME), (8, MAX_FRAME)]);
        assert!(d.wire().next().unwrap()[14..].iter().all(|&b| b == 0), "padded with zeros");
        assert_eq!(d.stats().tx_oversize, 1);
        assert!(d.transmit().is_some());
        d.poll();
        assert_eq!(d.wire().count(), 0);
    }

    #[test]
    fn loans_hold_their_buffers_until_given_back() {
        let mut d = RingNic::new([2, 0, 0, 0, 0, 3], 2, 1);
        assert!(d.inject(&[1; 60]) && d.inject(&[2; 70]));
        let mut loans = Vec::new();
        assert_eq!(lend_into(&mut d, 8, &mut loans), 2);
        assert_eq!((loans[0].head(), loans[0].len(), loans[0].frame()[0]), (RX_HEADROOM, 60, 1));
        assert!(loans[1].buf_mut().len() >= RX_HEADROOM + MAX_FRAME + 64, "headroom and tailroom for the dataplane");
        assert_eq!(d.stats().rx_loans_out, 2);
        assert!(!d.inject(&[3; 60]), "lent buffers are not the device's to fill");
        // Edited in place, given back: the slot is reused for the next frame.
        loans[0].frame_mut()[0] = 9;
        let first = loans.remove(0);
        d.give_back(first);
        assert_eq!(d.stats().rx_loans_out, 1);
        assert!(d.inject(&[4; 80]));
        let mut again = Vec::new();
        assert_eq!(lend_into(&mut d, 8, &mut again), 1);
        assert_eq!(again[0].frame(), &[4; 80][..]);
        // Another device's loan, or one given back twice, is refused.
        let mut other = RingNic::new([2, 0, 0, 0, 0, 4], 1, 1);
        assert!(other.inject(&[5; 60]));
        let mut foreign = Vec::new();
        assert_eq!(lend_into(&mut other, 1, &mut foreign), 1);
        d.give_back(foreign.remove(0));
        assert_eq!(d.stats().rx_foreign_loans, 1);
        assert_eq!(other.stats().rx_loans_out, 1, "the lost loan shows on its own device");
        for l in loans.into_iter().chain(again) {
            d.give_back(l);
        }
        assert_eq!((d.stats().rx_loans_out, d.rx_free()), (0, 2));
    }

    #[test]
    fn loopback_lends_a_bounded_pool_and_faults_edit_loans() {
        let mut lo = Loopback::new([2, 0, 0, 0, 0, 5], 4);
        for i in 0..LOOPBACK_RX_BUFS + 3 {
            lo.inject(&[i as u8; 60]);
        }
        let mut loans = Vec::new();
        assert_eq!(lend_into(&mut lo, 1000, &mut loans), LOOPBACK_RX_BUFS, "every buffer lent: the rest wait");
        assert_eq!(lo.pending(), 3);
        for l in loans.drain(..) {
            lo.give_back(l);
        }
        let mut d = FaultInjector::new(lo, Faults { drop_every: 2, truncate_every: 3, ..Faults::default() });
        assert_eq!(lend_into(&mut d, 8, &mut loans), 2, "the 2nd frame dropped (given back), the 3rd truncated");
        assert_eq!(loans.iter().map(|l| l.len()).collect::<Vec<_>>(), [60, 30]);
        for l in loans.drain(..) {
            d.give_back(l);
        }
        assert_eq!(d.inner().stats().rx_loans_out, 0);
    }
}

//! Host devices for tests (feature `std`): the forwarding loop runs over
//! these exactly as it runs over the image's drivers.
//!
//! - [`Loopback`]: an in-memory NIC. Frames the test puts in ([`Loopback::inject`])
//!   are received by the loop; frames the loop transmits are queued for the
//!   test ([`Loopback::take_sent`]). Its transmit ring has a fixed number of
//!   slots that only [`NetDevice::poll`] frees, like a real ring, so a test
//!   can fill it.
//! - [`FaultInjector`]: wraps a device and drops or corrupts received
//!   frames on a deterministic schedule, or refuses transmit slots.
//! - [`PcapWriter`]: wraps a device and records every frame in and out as a
//!   pcap file (LINKTYPE_ETHERNET) that Wireshark and tcpdump read.
//!
//! Models: smoltcp's `phy/loopback.rs`, `fault_injector.rs`, `pcap_writer.rs`.

extern crate std;

use std::collections::VecDeque;
use std::io::Write;
use std::vec::Vec;

use crate::{DeviceStats, NetDevice, TxToken, MAX_FRAME, MIN_FRAME};

/// An in-memory NIC with a bounded transmit ring.
pub struct Loopback {
    mac: [u8; 6],
    rx: VecDeque<Vec<u8>>,
    sent: VecDeque<Vec<u8>>,
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
            rx: VecDeque::new(),
            sent: VecDeque::new(),
            in_flight: 0,
            ring,
            stats: DeviceStats::default(),
            link: true,
        }
    }

    /// A frame arrives from the wire.
    pub fn inject(&mut self, frame: &[u8]) {
        self.rx.push_back(frame.to_vec());
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

    fn link_up(&mut self) -> bool {
        self.link
    }

    fn receive(&mut self, budget: usize, on_frame: &mut dyn FnMut(&mut [u8])) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(mut f) = self.rx.pop_front() else { break };
            if f.len() > MAX_FRAME {
                self.stats.rx_errors += 1;
                continue;
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += f.len() as u64;
            on_frame(&mut f);
            n += 1;
        }
        n
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

fn every(n: u32, k: u32) -> bool {
    n != 0 && k % n == 0
}

impl<D: NetDevice> NetDevice for FaultInjector<D> {
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn mac(&self) -> [u8; 6] {
        self.inner.mac()
    }

    fn link_up(&mut self) -> bool {
        self.inner.link_up()
    }

    fn receive(&mut self, budget: usize, on_frame: &mut dyn FnMut(&mut [u8])) -> usize {
        let FaultInjector { inner, faults, seen, injected } = self;
        inner.receive(budget, &mut |f| {
            *seen = seen.wrapping_add(1);
            let k = *seen;
            if every(faults.drop_every, k) {
                *injected += 1;
                return;
            }
            if every(faults.corrupt_every, k) {
                *injected += 1;
                let i = (k as usize).wrapping_mul(7919) % f.len().max(1);
                if let Some(b) = f.get_mut(i) {
                    *b ^= 0x5a;
                }
            }
            if every(faults.truncate_every, k) {
                *injected += 1;
                let half = f.len() / 2;
                on_frame(&mut f[..half]);
                return;
            }
            on_frame(f);
        })
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
    /// Wrap `inner`, writing the pcap header to `out` now.
    pub fn new(inner: D, mut out: W) -> std::io::Result<PcapWriter<D, W>> {
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

    fn link_up(&mut self) -> bool {
        self.inner.link_up()
    }

    fn receive(&mut self, budget: usize, on_frame: &mut dyn FnMut(&mut [u8])) -> usize {
        let PcapWriter { inner, out, now_us } = self;
        inner.receive(budget, &mut |f| {
            record(out, *now_us, f);
            on_frame(f);
        })
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
}

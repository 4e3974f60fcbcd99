//! virtio-net over PCI, polled, with batched device notifications.
//!
//! `virtio-drivers` provides the PCI transport and the split virtqueue
//! (`VirtQueue`); this driver negotiates the features itself, owns the two
//! queues and the packet buffers (from the DMA pool): `RX_RING` receive
//! buffers always posted to the device (plus `RX_SPARE` to lend, below), and
//! `TX_RING` transmit buffers handed out as transmit slots. Link state is reported as up: QEMU's virtio-net
//! link is up whenever the netdev exists.
//!
//! Why not `virtio-drivers`' `VirtIONetRaw`: it notifies the device after
//! every added buffer once the device is behind (its `should_notify` under
//! `VIRTIO_F_EVENT_IDX` compares the index without the "since the last
//! kick" window), and re-arms the used-buffer interrupt after every used
//! buffer (`pop_used` writes `used_event` unconditionally). A polled loop
//! takes neither the interrupts nor needs a kick per buffer.
//!
//! What this driver does instead:
//!
//! - **No interrupts, for good.** `VIRTIO_F_EVENT_IDX` is not negotiated, and
//!   both available rings carry `VIRTQ_AVAIL_F_NO_INTERRUPT` from bring-up
//!   on; nothing ever clears it (virtio 1.1 §2.6.7). `NOTIFY_ON_EMPTY` (which
//!   would override it) is not negotiated either.
//! - **Buffers are published as they are added.** `VirtQueue::add` writes the
//!   descriptor and the ring entry, then a full fence, then the available
//!   index (a release store): the device never sees an index before the
//!   entries it covers (§2.7.13 steps 1–4).
//! - **At most one notification per queue per loop turn, after the batch.**
//!   Adding a buffer only marks the queue as owing the device a
//!   notification. [`NetDevice::poll`] — which the forwarding loop calls
//!   once per NIC per turn after the batch (`routerd_control::run`), as the
//!   echo loop does — settles what is owed: a full fence (mfence) between the
//!   available-index stores above and the read of the device's
//!   `VIRTQ_USED_F_NO_NOTIFY` (§2.7.13 step 5), then one notify per queue
//!   whose device asked for it.
//! - **A suppressed notification stays owed until it is proven unneeded.**
//!   The device sets `NO_NOTIFY` while it is already working through the
//!   ring (QEMU: a transmit flush is scheduled; the receive queue still has
//!   buffers), clears it when it goes idle, and then — after its own full
//!   fence — looks at the available index once more. That handshake alone
//!   cannot lose a kick on a machine that honours both fences, but QEMU
//!   7.2's TCG with one vCPU emits no host barrier for guest fences (upstream
//!   stopped eliding them in 2023: "tcg: Do not elide memory barriers for
//!   !CF_PARALLEL in system mode"), so the vCPU's store of the index can
//!   still sit in the host's store buffer while it reads a stale
//!   `NO_NOTIFY`, and the device's re-check can miss it. So an owed
//!   notification is not forgotten when the device said "no": every
//!   following turn reads the flag again and notifies once it is clear. Owed ends only with a notification, or
//!   — transmit queue — when the device has returned every buffer (nothing
//!   published is left unseen). The receive queue keeps its debt while the
//!   device holds buffers (one flag read per turn; QEMU clears the flag only
//!   when it ran out of buffers, and then it must be told).
//!
//! A transmit therefore never stays unannounced past the end of the turn it
//! was sent in unless the device itself said it is still busy with the ring.
//!
//! **Receive without a copy.** Each receive buffer is posted at
//! [`RX_HEADROOM`] minus the virtio-net header, so the device writes the
//! frame where the dataplane wants it: [`RX_HEADROOM`] bytes into a
//! [`BUF`]-byte buffer, room in front for the tunnel headers the dataplane
//! prepends in place. [`NetDevice::lend`] lends the whole buffer
//! ([`RxLoan`]) and posts one of [`RX_SPARE`] spare buffers in its place at
//! once (published now, announced in the next `poll` like every refill), so
//! the device keeps all `RX_RING` buffers while the loop works on the loans —
//! as it did when the loop copied each frame out. A buffer given back becomes
//! a spare. With every spare out, `lend` stops (frames wait in the used ring)
//! until loans come back; loans out are counted.

use crate::dma;
use crate::pci::Device;
use core::sync::atomic::{fence, Ordering};
use log::info;
use routerd_netdev::{DeviceStats, NetDevice, RxLoan, TxToken, MAX_FRAME, MIN_FRAME, RX_HEADROOM};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

/// Receive descriptors, each with a buffer always posted to the device.
const RX_RING: usize = 64;
/// Transmit descriptors and buffers. Twice the receive ring: with one kick
/// per turn the vCPU no longer stalls on an exit per frame, and on a busy
/// host it outran QEMU's transmit flush, overflowing a 64-slot ring under a
/// single TCP flow (40–960 drops per 15 s); 128 slots did not overflow.
/// DMA: 116 pages per NIC (receive 48, transmit 64, queues 4), so eight NICs
/// fit the 1024-page pool beside virtio-blk's 11.
const TX_RING: usize = 128;
/// Receive buffers beyond the ring's, lent while the ring stays full: as many
/// as the forwarding loop takes per turn (`routerd_control::run::BATCH`).
pub const RX_SPARE: usize = 32;
/// Receive buffers in all.
const RX_BUFS: usize = RX_RING + RX_SPARE;
/// Bytes per packet buffer: receive headroom, a full frame and the
/// dataplane's tailroom (64) fit (the virtio-net header sits in the
/// headroom, right in front of the frame).
const BUF: usize = 2048;
const _: () = assert!(RX_HEADROOM >= HDR_MODERN && RX_HEADROOM + MAX_FRAME + 64 <= BUF);
const RX_PAGES: usize = RX_BUFS * BUF / 4096;
const _: () = assert!(RX_BUFS <= u16::MAX as usize && RX_SPARE >= 1);
const TX_PAGES: usize = TX_RING * BUF / 4096;

/// The split virtqueues in the DMA pool.
type RxQueue = VirtQueue<Mem, RX_RING>;
type TxQueue = VirtQueue<Mem, TX_RING>;

/// Where rings and packet buffers come from: the DMA pool in the image;
/// the host heap in the unit tests (the pool is a process-wide bump
/// allocator shared by every driver test, sized for the image's NICs). The
/// driver code is the same.
#[cfg(not(test))]
type Mem = dma::IdentityHal;
#[cfg(test)]
type Mem = tests::HeapHal;

#[cfg(not(test))]
fn alloc_pages(pages: usize) -> Option<dma::DmaRegion> {
    dma::alloc_pages(pages)
}
#[cfg(test)]
use tests::heap_pages as alloc_pages;

/// Queue indexes of virtio-net (§5.1.2): receiveq1, transmitq1.
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;

/// Feature bits (§5.1.3, §6).
mod feature {
    /// The device has a MAC address in its configuration space.
    pub const MAC: u64 = 1 << 5;
    /// The configuration space has a status field.
    pub const STATUS: u64 = 1 << 16;
    /// The modern (virtio 1.x) interface; a driver must accept it when offered.
    pub const VERSION_1: u64 = 1 << 32;
    /// Everything this driver asks for. Deliberately not: `EVENT_IDX` (bit
    /// 29; notification suppression uses the ring flags), `NOTIFY_ON_EMPTY`
    /// (bit 24; it would interrupt despite `NO_INTERRUPT`), `INDIRECT_DESC`
    /// (one descriptor per buffer), `MRG_RXBUF` and every offload.
    pub const WANTED: u64 = MAC | STATUS | VERSION_1;
}

/// The virtio-net header in front of every packet: 12 bytes with
/// `VERSION_1` (it has `num_buffers`), 10 for a legacy device (§5.1.6).
const HDR_MODERN: usize = 12;
const HDR_LEGACY: usize = 10;

/// Reads of `device_status` waiting for a reset to complete (QEMU resets at
/// once; real devices take microseconds).
const RESET_POLLS: usize = 1_000_000;

#[derive(Debug)]
pub enum Error {
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    Device(virtio_drivers::Error),
    /// The DMA pool has no room for the packet buffers.
    NoDmaMemory,
    /// The device did not come out of reset.
    ResetTimeout,
    /// The device did not accept the features this driver needs (it cleared
    /// `FEATURES_OK`).
    FeaturesRefused {
        offered: u64,
        wanted: u64,
    },
}

/// A running virtio-net device (over PCI in the image; any transport in the
/// host tests).
pub struct VirtioNet<T: Transport = PciTransport> {
    transport: T,
    rxq: RxQueue,
    txq: TxQueue,
    mac: [u8; 6],
    /// Bytes of virtio-net header in front of each packet.
    hdr: usize,
    rx: dma::DmaRegion,
    tx: dma::DmaRegion,
    /// Receive buffer index posted under each queue token.
    rx_of_token: [u16; RX_RING],
    /// Receive buffers lent out.
    rx_lent: [bool; RX_BUFS],
    /// Receive buffers neither posted nor lent (a stack).
    rx_spare: [u16; RX_SPARE],
    rx_spare_len: usize,
    /// Transmit buffer index and length in flight under each queue token.
    tx_of_token: [(u16, u16); TX_RING],
    free_tx: [u16; TX_RING],
    free_tx_len: usize,
    /// Buffers were published to the receive queue that the device has not
    /// been notified of (see the module comment: "owed").
    rx_owed: bool,
    /// The same for the transmit queue.
    tx_owed: bool,
    stats: DeviceStats,
}

impl VirtioNet<PciTransport> {
    /// Resets and initialises the device and posts every receive buffer.
    pub fn new<C: ConfigurationAccess>(root: &mut PciRoot<C>, dev: &Device) -> Result<VirtioNet, Error> {
        // The device reads and writes the rings itself: it must be allowed
        // to master the bus (firmware may have left this off).
        let (_, command) = root.get_status_command(dev.address);
        root.set_command(dev.address, command | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER);
        let transport = PciTransport::new::<Mem, C>(root, dev.address).map_err(Error::Transport)?;
        VirtioNet::start(transport)
    }
}

impl<T: Transport> VirtioNet<T> {
    /// Device initialisation (§3.1.1, §5.1.5) over a transport.
    fn start(mut transport: T) -> Result<VirtioNet<T>, Error> {
        // Packet buffers first: if the pool is short, the device stays
        // untouched.
        let rx = alloc_pages(RX_PAGES).ok_or(Error::NoDmaMemory)?;
        let tx = alloc_pages(TX_PAGES).ok_or(Error::NoDmaMemory)?;
        let features = match Self::negotiate(&mut transport) {
            Ok(features) => features,
            Err(e) => return Err(fail(&mut transport, e)),
        };
        let (rxq, txq, mac) = match Self::queues_and_mac(&mut transport) {
            Ok(parts) => parts,
            Err(e) => return Err(fail(&mut transport, Error::Device(e))),
        };
        let hdr = if features & feature::VERSION_1 != 0 { HDR_MODERN } else { HDR_LEGACY };
        info!(
            "virtio-net: features {features:#x}, {RX_RING}/{TX_RING}-entry receive/transmit queues, polled (used-buffer notifications off)"
        );
        Ok(Self::run(transport, rxq, txq, mac, hdr, rx, tx))
    }

    /// Both queues (§4.1.5.1.3) and the MAC from the configuration space.
    fn queues_and_mac(transport: &mut T) -> Result<(RxQueue, TxQueue, [u8; 6]), virtio_drivers::Error> {
        let rxq = VirtQueue::new(transport, RX_QUEUE, false, false)?;
        let txq = VirtQueue::new(transport, TX_QUEUE, false, false)?;
        let mac = transport.read_consistent(|| transport.read_config_space::<[u8; 6]>(0))?;
        Ok((rxq, txq, mac))
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (and checks the
    /// device kept it). Returns the negotiated features.
    fn negotiate(transport: &mut T) -> Result<u64, Error> {
        transport.set_status(DeviceStatus::empty());
        let mut polls = 0;
        while transport.get_status() != DeviceStatus::empty() {
            polls += 1;
            if polls >= RESET_POLLS {
                return Err(Error::ResetTimeout);
            }
            core::hint::spin_loop();
        }
        transport.set_status(DeviceStatus::ACKNOWLEDGE);
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = transport.read_device_features();
        let features = offered & feature::WANTED;
        transport.write_driver_features(features);
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
        // A device offering VERSION_1 requires the driver to accept it, and
        // a modern device may refuse a subset: it says so by clearing
        // FEATURES_OK.
        if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            return Err(Error::FeaturesRefused { offered, wanted: feature::WANTED });
        }
        Ok(features)
    }

    /// DRIVER_OK, every receive buffer posted, the device told once.
    fn run(
        transport: T,
        mut rxq: RxQueue,
        mut txq: TxQueue,
        mac: [u8; 6],
        hdr: usize,
        rx: dma::DmaRegion,
        tx: dma::DmaRegion,
    ) -> VirtioNet<T> {
        // VIRTQ_AVAIL_F_NO_INTERRUPT on both queues, before the device may
        // use a buffer, and never cleared (without EVENT_IDX, `pop_used`
        // leaves the flag alone).
        rxq.set_dev_notify(false);
        txq.set_dev_notify(false);
        let mut nic = VirtioNet {
            transport,
            rxq,
            txq,
            mac,
            hdr,
            rx,
            tx,
            rx_of_token: [0; RX_RING],
            rx_lent: [false; RX_BUFS],
            rx_spare: [0; RX_SPARE],
            rx_spare_len: RX_SPARE,
            tx_of_token: [(0, 0); TX_RING],
            free_tx: [0; TX_RING],
            free_tx_len: TX_RING,
            rx_owed: false,
            tx_owed: false,
            stats: DeviceStats::default(),
        };
        nic.transport.finish_init();
        for (i, slot) in nic.free_tx.iter_mut().enumerate() {
            *slot = i as u16;
        }
        for (i, slot) in nic.rx_spare.iter_mut().enumerate() {
            *slot = (RX_RING + i) as u16;
        }
        for i in 0..RX_RING {
            // Cannot fail: the queue has RX_RING descriptors and each buffer
            // takes one.
            if nic.post_rx(i).is_err() {
                nic.stats.rx_errors += 1;
            }
        }
        nic.notify_owed();
        nic
    }

    /// Receive buffer `i`, whole. Every caller makes one view and hands it
    /// on (to the queue or as a loan) before making another.
    fn rx_buf(&mut self, i: usize) -> &'static mut [u8] {
        debug_assert!(i < RX_BUFS);
        // SAFETY: buffer i lies inside the rx region (i < RX_BUFS). The region
        // comes from the DMA pool, which is `'static` and never frees a page
        // (in the host tests: leaked heap pages), so `'static` is true of the
        // memory. Each buffer has one owner at a time: the device (posted,
        // until `pop_used` returns it), this driver (between pop and lend or
        // re-post, and as a spare), or the holder of its `RxLoan`
        // (`rx_lent[i]`, until `give_back`); the driver neither posts nor reads
        // a lent buffer.
        unsafe { core::slice::from_raw_parts_mut(self.rx.ptr.as_ptr().add(i * BUF), BUF) }
    }

    /// The part of receive buffer `i` the device writes: the virtio-net
    /// header, then the frame at `RX_HEADROOM` of the whole buffer.
    fn rx_posted(&mut self, i: usize) -> &'static mut [u8] {
        let at = RX_HEADROOM - self.hdr;
        let buf = self.rx_buf(i);
        buf.get_mut(at..).unwrap_or(&mut [])
    }

    fn tx_buf(&mut self, i: usize) -> &'static mut [u8] {
        debug_assert!(i < TX_RING);
        // SAFETY: as for `rx_buf`, over the tx region (i < TX_RING).
        unsafe { core::slice::from_raw_parts_mut(self.tx.ptr.as_ptr().add(i * BUF), BUF) }
    }

    /// Publishes receive buffer `i` (the device is told in `notify_owed`).
    fn post_rx(&mut self, i: usize) -> Result<(), virtio_drivers::Error> {
        let buf = self.rx_posted(i);
        // SAFETY: the buffer is not touched again until the device returns it
        // through the used ring (`receive` pops it before reading).
        let token = unsafe { self.rxq.add(&[], &mut [buf]) }?;
        if let Some(slot) = self.rx_of_token.get_mut(usize::from(token)) {
            *slot = i as u16;
        }
        self.rx_owed = true;
        Ok(())
    }

    /// Takes back every transmit buffer the device is done with.
    fn reclaim_tx(&mut self) {
        while let Some(token) = self.txq.peek_used() {
            let Some(&(i, len)) = self.tx_of_token.get(usize::from(token)) else {
                // A token that names no descriptor: a broken device. The
                // queue cannot advance past it; stop here (the ring then
                // fills and every further send counts as `tx_ring_full`).
                break;
            };
            let buf = self.tx_buf(usize::from(i));
            // SAFETY: same buffer and length as given to `add` under this token.
            if unsafe { self.txq.pop_used(token, &[&buf[..usize::from(len)]], &mut []) }.is_err() {
                break;
            }
            release(self, i);
        }
        if self.txq.available_desc() == TX_RING {
            // The device has returned every transmit buffer, so it has seen
            // everything published: nothing is owed.
            self.tx_owed = false;
        }
    }

    /// Notifies each queue that owes the device a notification and whose
    /// device asks for one (§2.7.13 step 5). At most one notify per queue.
    fn notify_owed(&mut self) {
        if !self.rx_owed && !self.tx_owed {
            return;
        }
        // The available-index stores of every `add` since the last call must
        // be visible to the device before its NO_NOTIFY flag is read: a
        // store→load order, which only a full fence (mfence) gives. It pairs
        // with the device's fence between clearing NO_NOTIFY and re-reading
        // the available index: at least one side sees the other's write.
        fence(Ordering::SeqCst);
        if self.rx_owed && self.rxq.should_notify() {
            self.transport.notify(RX_QUEUE);
            self.rx_owed = false;
        }
        if self.tx_owed && self.txq.should_notify() {
            self.transport.notify(TX_QUEUE);
            self.tx_owed = false;
        }
    }
}

/// Gives up on the device (§3.1.1: FAILED) and passes `e` on.
fn fail<T: Transport>(transport: &mut T, e: Error) -> Error {
    transport.set_status(transport.get_status() | DeviceStatus::FAILED);
    e
}

/// A reserved transmit buffer.
pub struct Tx<'a, T: Transport = PciTransport> {
    nic: &'a mut VirtioNet<T>,
    buf: Option<u16>,
}

impl<T: Transport> TxToken for Tx<'_, T> {
    fn send<R>(mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let Some(i) = self.buf.take() else {
            // Unreachable by construction (a token always holds a buffer);
            // hand the closure scratch space rather than panic.
            return fill(&mut [0u8; MAX_FRAME][..len.min(MAX_FRAME)]);
        };
        let nic = &mut *self.nic;
        let hdr = nic.hdr;
        let buf = nic.tx_buf(usize::from(i));
        // No offloads: an all-zero header (flags 0, GSO_NONE).
        buf[..hdr].fill(0);
        if len > MAX_FRAME {
            nic.stats.tx_oversize += 1;
        }
        let len = len.min(MAX_FRAME);
        let wire_len = len.max(MIN_FRAME);
        let frame = &mut buf[hdr..hdr + wire_len];
        frame[len..].fill(0);
        let r = fill(&mut frame[..len]);
        let total = hdr + wire_len;
        // SAFETY: the buffer stays untouched until `reclaim_tx` pops its token.
        match unsafe { nic.txq.add(&[&buf[..total]], &mut []) } {
            Ok(token) => {
                if let Some(slot) = nic.tx_of_token.get_mut(usize::from(token)) {
                    *slot = (i, total as u16);
                }
                // Published now; the device is told at the end of the turn.
                nic.tx_owed = true;
                nic.stats.tx_frames += 1;
                nic.stats.tx_bytes += len as u64;
            }
            Err(_) => {
                // The slot was reserved against a free descriptor, so the
                // queue had room; count it if it disagrees and keep the buffer.
                nic.stats.tx_ring_full += 1;
                release(nic, i);
            }
        }
        r
    }
}

fn release<T: Transport>(nic: &mut VirtioNet<T>, i: u16) {
    if let Some(slot) = nic.free_tx.get_mut(nic.free_tx_len) {
        *slot = i;
        nic.free_tx_len += 1;
    }
}

impl<T: Transport> Drop for Tx<'_, T> {
    fn drop(&mut self) {
        if let Some(i) = self.buf.take() {
            release(self.nic, i);
        }
    }
}

impl<T: Transport> NetDevice for VirtioNet<T> {
    type TxToken<'a>
        = Tx<'a, T>
    where
        Self: 'a;

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        true
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        let mut lent = 0;
        // Bad buffers are re-posted at once and bounded separately, so a
        // device returning only garbage cannot keep the call going.
        let mut examined = 0;
        while lent < into.len() && examined < into.len().saturating_add(RX_RING) {
            // A frame is lent only with a spare to post in its place; without
            // one it waits in the used ring.
            let Some(spare) = self.rx_spare_len.checked_sub(1).and_then(|s| self.rx_spare.get(s).copied()) else { break };
            let Some(token) = self.rxq.peek_used() else { break };
            let Some(&i) = self.rx_of_token.get(usize::from(token)) else {
                // A token that names no descriptor: see `reclaim_tx`.
                self.stats.rx_errors += 1;
                break;
            };
            let i = usize::from(i);
            examined += 1;
            let posted = self.rx_posted(i);
            // SAFETY: `posted` is the buffer posted under `token`; popping it
            // (an acquire load of the used index came first, in `peek_used`)
            // hands it back to us before we read it.
            let written = match unsafe { self.rxq.pop_used(token, &[], &mut [posted]) } {
                Ok(written) => written as usize,
                Err(_) => {
                    self.stats.rx_errors += 1;
                    break;
                }
            };
            let loan = match written.checked_sub(self.hdr) {
                Some(len) if len <= MAX_FRAME => RxLoan::new(self.rx_buf(i), RX_HEADROOM, len, i),
                _ => None,
            };
            let (Some(loan), Some(out), Some(slot)) = (loan, self.rx_lent.get_mut(i), into.get_mut(lent)) else {
                self.stats.rx_errors += 1;
                if self.post_rx(i).is_err() {
                    self.stats.rx_errors += 1;
                }
                continue;
            };
            *out = true;
            self.rx_spare_len -= 1;
            // The descriptor `pop_used` just freed takes the spare.
            if self.post_rx(usize::from(spare)).is_err() {
                self.stats.rx_errors += 1;
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += loan.len() as u64;
            self.stats.rx_loans_out += 1;
            *slot = Some(loan);
            lent += 1;
        }
        lent
    }

    fn give_back(&mut self, loan: RxLoan) {
        let i = loan.slot();
        let home = self.rx.ptr.as_ptr() as usize + i * BUF;
        // Only a buffer of ours that is out on loan, whole, becomes a spare:
        // anything else (another NIC's, or given back twice) would later hand
        // the device memory someone else may still be using.
        let ours = loan.addr() == home && loan.buf_len() == BUF;
        match (self.rx_lent.get_mut(i), self.rx_spare.get_mut(self.rx_spare_len)) {
            (Some(out), Some(spare)) if *out && ours => {
                *out = false;
                // `i < RX_BUFS <= u16::MAX`, asserted at compile time.
                *spare = i as u16;
                self.rx_spare_len += 1;
                self.stats.rx_loans_out -= 1;
                // The loan ends here; the buffer is re-made when posted.
                let _ = loan.into_parts();
            }
            _ => self.stats.rx_foreign_loans += 1,
        }
    }

    fn transmit(&mut self) -> Option<Tx<'_, T>> {
        if self.free_tx_len == 0 {
            self.reclaim_tx();
        }
        if self.free_tx_len == 0 || self.txq.available_desc() == 0 {
            self.stats.tx_ring_full += 1;
            return None;
        }
        self.free_tx_len -= 1;
        let i = self.free_tx.get(self.free_tx_len).copied()?;
        Some(Tx { nic: self, buf: Some(i) })
    }

    /// Reclaims finished transmissions and tells the device, once per queue,
    /// about the buffers published since (receive refills and transmits).
    /// The loop calls this once per turn, after the batch; a transmit is
    /// announced here at the latest.
    fn poll(&mut self) {
        self.reclaim_tx();
        self.notify_owed();
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::vec;
    use std::vec::Vec;
    use virtio_drivers::transport::{DeviceType, InterruptStatus};
    use virtio_drivers::PhysAddr;
    use zerocopy::{FromBytes, Immutable, IntoBytes};

    /// Lends up to `budget` frames from `d` onto `loans`; how many.
    fn lend_into<D: NetDevice>(d: &mut D, budget: usize, loans: &mut Vec<RxLoan>) -> usize {
        let mut slots: Vec<Option<RxLoan>> = (0..budget).map(|_| None).collect();
        let n = d.lend(&mut slots);
        loans.extend(slots.into_iter().flatten());
        n
    }

    /// Rings and packet buffers from the host heap, leaked (see `Mem`).
    pub(super) struct HeapHal;

    pub(super) fn heap_pages(pages: usize) -> Option<dma::DmaRegion> {
        let layout = std::alloc::Layout::from_size_align(pages * 4096, 4096).ok()?;
        // SAFETY: a non-zero size (every caller asks for at least one page).
        let ptr = core::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(dma::DmaRegion { phys: ptr.as_ptr() as u64, ptr, len: pages * 4096 })
    }

    // SAFETY: host memory is "identity mapped" for the fake device, which
    // dereferences the addresses it is given; pages are zeroed and never
    // reused (leaked).
    unsafe impl virtio_drivers::Hal for HeapHal {
        fn dma_alloc(pages: usize, _direction: virtio_drivers::BufferDirection) -> (PhysAddr, core::ptr::NonNull<u8>) {
            let r = heap_pages(pages).expect("heap");
            (r.phys, r.ptr)
        }
        unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: core::ptr::NonNull<u8>, _pages: usize) -> i32 {
            0
        }
        unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> core::ptr::NonNull<u8> {
            core::ptr::NonNull::new(paddr as usize as *mut u8).expect("non-null")
        }
        unsafe fn share(buffer: core::ptr::NonNull<[u8]>, _direction: virtio_drivers::BufferDirection) -> PhysAddr {
            buffer.cast::<u8>().as_ptr() as PhysAddr
        }
        unsafe fn unshare(_paddr: PhysAddr, _buffer: core::ptr::NonNull<[u8]>, _direction: virtio_drivers::BufferDirection) {}
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const OFFERED: u64 = feature::MAC | feature::STATUS | feature::VERSION_1 | (1 << 28) | (1 << 29) | (1 << 24);

    /// One queue as the device sees it: the addresses the driver gave it
    /// and the device's own indexes.
    #[derive(Clone, Copy, Default)]
    struct DevQueue {
        desc: PhysAddr,
        avail: PhysAddr,
        used: PhysAddr,
        size: u32,
        last_avail: u16,
        used_idx: u16,
    }

    /// The device side of a split virtqueue over host memory, and the
    /// notifications the driver sent.
    #[derive(Default)]
    struct Device {
        status: u32,
        driver_features: u64,
        queues: [DevQueue; 2],
        notifies: [usize; 2],
    }

    impl Device {
        fn q(&self, q: u16) -> DevQueue {
            self.queues[usize::from(q)]
        }

        fn read16(addr: PhysAddr) -> u16 {
            // SAFETY: `addr` lies in a ring the driver handed to the device.
            unsafe { (addr as usize as *const u16).read_volatile() }
        }

        fn write16(addr: PhysAddr, v: u16) {
            // SAFETY: as in `read16`; the device owns the used ring.
            unsafe { (addr as usize as *mut u16).write_volatile(v) }
        }

        fn avail_flags(&self, q: u16) -> u16 {
            Self::read16(self.q(q).avail)
        }

        fn avail_idx(&self, q: u16) -> u16 {
            Self::read16(self.q(q).avail + 2)
        }

        /// VIRTQ_USED_F_NO_NOTIFY on or off.
        fn set_no_notify(&mut self, q: u16, on: bool) {
            Self::write16(self.q(q).used, u16::from(on));
        }

        /// Buffers published and not yet taken by the device.
        fn pending(&self, q: u16) -> usize {
            usize::from(self.avail_idx(q).wrapping_sub(self.q(q).last_avail))
        }

        /// Takes the next published buffer: (head, address, length, flags).
        fn take(&mut self, q: u16) -> Option<(u16, u64, u32, u16)> {
            let dq = self.q(q);
            if dq.last_avail == self.avail_idx(q) {
                return None;
            }
            let slot = u64::from(dq.last_avail % dq.size as u16);
            let head = Self::read16(dq.avail + 4 + 2 * slot);
            let d = dq.desc + 16 * u64::from(head);
            // SAFETY: a descriptor the driver published.
            let (addr, len) = unsafe { ((d as usize as *const u64).read_volatile(), ((d + 8) as usize as *const u32).read_volatile()) };
            let flags = Self::read16(d + 12);
            self.queues[usize::from(q)].last_avail = dq.last_avail.wrapping_add(1);
            Some((head, addr, len, flags))
        }

        /// Returns a buffer through the used ring.
        fn complete(&mut self, q: u16, head: u16, len: u32) {
            let dq = self.q(q);
            let e = dq.used + 4 + 8 * u64::from(dq.used_idx % dq.size as u16);
            // SAFETY: the used ring's element `used_idx`, ours to write.
            unsafe {
                (e as usize as *mut u32).write_volatile(u32::from(head));
                ((e + 4) as usize as *mut u32).write_volatile(len);
            }
            self.queues[usize::from(q)].used_idx = dq.used_idx.wrapping_add(1);
            Self::write16(dq.used + 2, dq.used_idx.wrapping_add(1));
        }

        /// Receives a frame into the next receive buffer.
        fn deliver(&mut self, frame: &[u8]) -> bool {
            let Some((head, addr, len, flags)) = self.take(RX_QUEUE) else { return false };
            assert_eq!(flags & 2, 2, "receive buffers are device-writable");
            assert!(HDR_MODERN + frame.len() <= len as usize);
            // SAFETY: the driver's receive buffer of `len` bytes.
            unsafe {
                let p = addr as usize as *mut u8;
                core::ptr::write_bytes(p, 0, HDR_MODERN);
                core::ptr::copy_nonoverlapping(frame.as_ptr(), p.add(HDR_MODERN), frame.len());
            }
            self.complete(RX_QUEUE, head, (HDR_MODERN + frame.len()) as u32);
            true
        }

        /// Sends every published transmit buffer; returns the frames.
        fn drain_tx(&mut self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            while let Some((head, addr, len, flags)) = self.take(TX_QUEUE) {
                assert_eq!(flags, 0, "one device-readable descriptor per frame");
                // SAFETY: the driver's transmit buffer of `len` bytes.
                let bytes = unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len as usize) };
                assert_eq!(&bytes[..HDR_MODERN], &[0; HDR_MODERN], "no offload flags in the header");
                out.push(bytes[HDR_MODERN..].to_vec());
                self.complete(TX_QUEUE, head, 0);
            }
            out
        }
    }

    struct FakeTransport(Rc<RefCell<Device>>);

    impl Transport for FakeTransport {
        fn device_type(&self) -> DeviceType {
            DeviceType::Network
        }
        fn read_device_features(&mut self) -> u64 {
            OFFERED
        }
        fn write_driver_features(&mut self, driver_features: u64) {
            self.0.borrow_mut().driver_features = driver_features;
        }
        fn max_queue_size(&mut self, _queue: u16) -> u32 {
            256
        }
        fn notify(&mut self, queue: u16) {
            self.0.borrow_mut().notifies[usize::from(queue)] += 1;
        }
        fn get_status(&self) -> DeviceStatus {
            DeviceStatus::from_bits_truncate(self.0.borrow().status)
        }
        fn set_status(&mut self, status: DeviceStatus) {
            self.0.borrow_mut().status = status.bits();
        }
        fn set_guest_page_size(&mut self, _guest_page_size: u32) {}
        fn requires_legacy_layout(&self) -> bool {
            false
        }
        fn queue_set(&mut self, queue: u16, size: u32, descriptors: PhysAddr, driver_area: PhysAddr, device_area: PhysAddr) {
            self.0.borrow_mut().queues[usize::from(queue)] =
                DevQueue { desc: descriptors, avail: driver_area, used: device_area, size, ..DevQueue::default() };
        }
        fn queue_unset(&mut self, _queue: u16) {}
        fn queue_used(&mut self, queue: u16) -> bool {
            self.0.borrow().queues[usize::from(queue)].size != 0
        }
        fn ack_interrupt(&mut self) -> InterruptStatus {
            InterruptStatus::empty()
        }
        fn read_config_generation(&self) -> u32 {
            0
        }
        fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> Result<V, virtio_drivers::Error> {
            let mut config = [0u8; 8];
            config[..6].copy_from_slice(&MAC);
            config[6] = 1; // status: link up
            let bytes = config.get(offset..offset + core::mem::size_of::<V>()).ok_or(virtio_drivers::Error::ConfigSpaceTooSmall)?;
            V::read_from_bytes(bytes).map_err(|_| virtio_drivers::Error::InvalidParam)
        }
        fn write_config_space<V: IntoBytes + Immutable>(&mut self, _offset: usize, _value: V) -> Result<(), virtio_drivers::Error> {
            Err(virtio_drivers::Error::Unsupported)
        }
    }

    fn nic() -> (VirtioNet<FakeTransport>, Rc<RefCell<Device>>) {
        let dev = Rc::new(RefCell::new(Device::default()));
        let nic = VirtioNet::start(FakeTransport(dev.clone())).expect("bring-up");
        (nic, dev)
    }

    fn frame(n: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0xa5; len];
        f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, n]);
        f[6..12].copy_from_slice(&MAC);
        f
    }

    fn send(nic: &mut VirtioNet<FakeTransport>, f: &[u8]) -> bool {
        match nic.transmit() {
            Some(tx) => {
                tx.send(f.len(), |out| out.copy_from_slice(f));
                true
            }
            None => false,
        }
    }

    #[test]
    fn bring_up_negotiates_no_interrupts_and_posts_every_buffer() {
        let (nic, dev) = nic();
        let d = dev.borrow();
        assert_eq!(d.driver_features, feature::MAC | feature::STATUS | feature::VERSION_1, "no EVENT_IDX, INDIRECT or NOTIFY_ON_EMPTY");
        assert!(DeviceStatus::from_bits_truncate(d.status).contains(DeviceStatus::DRIVER_OK | DeviceStatus::FEATURES_OK));
        assert_eq!(nic.mac(), MAC);
        assert_eq!(nic.hdr, HDR_MODERN);
        for q in [RX_QUEUE, TX_QUEUE] {
            assert_eq!(d.avail_flags(q), 1, "VIRTQ_AVAIL_F_NO_INTERRUPT on queue {q}");
        }
        assert_eq!(d.pending(RX_QUEUE), RX_RING);
        assert_eq!(d.notifies, [1, 0], "one receive kick for all {RX_RING} buffers");
    }

    #[test]
    fn transmits_of_a_turn_make_one_kick_after_the_batch() {
        let (mut nic, dev) = nic();
        for n in 0..10 {
            assert!(send(&mut nic, &frame(n, 60 + usize::from(n))));
        }
        // Published at once (the device may take them without a kick)…
        assert_eq!(dev.borrow().pending(TX_QUEUE), 10);
        // …but not announced before the end of the turn.
        assert_eq!(dev.borrow().notifies[1], 0);
        nic.poll();
        assert_eq!(dev.borrow().notifies[1], 1);
        nic.poll();
        assert_eq!(dev.borrow().notifies[1], 1, "nothing new: no kick");
        let sent = dev.borrow_mut().drain_tx();
        assert_eq!(sent.len(), 10);
        for (n, f) in sent.iter().enumerate() {
            assert_eq!(f[..], frame(n as u8, 60 + n)[..]);
        }
        nic.poll();
        assert_eq!(nic.free_tx_len, TX_RING);
        assert_eq!(dev.borrow().notifies, [1, 1]);
        assert_eq!(dev.borrow().avail_flags(TX_QUEUE), 1, "interrupts stay off");
        // Short frames are padded to the minimum.
        assert!(send(&mut nic, &[1, 2, 3]));
        nic.poll();
        let sent = dev.borrow_mut().drain_tx();
        assert_eq!(sent[0].len(), MIN_FRAME);
        assert_eq!(sent[0][..3], [1, 2, 3]);
        assert!(sent[0][3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn no_kick_while_the_device_is_busy_and_none_lost_after() {
        let (mut nic, dev) = nic();
        dev.borrow_mut().set_no_notify(TX_QUEUE, true);
        for n in 0..5 {
            assert!(send(&mut nic, &frame(n, 100)));
        }
        nic.poll();
        assert_eq!(dev.borrow().notifies[1], 0, "the device said it is busy");
        // The device goes idle without having looked at the ring again (the
        // race a dropped fence allows): the next turn must notify.
        dev.borrow_mut().set_no_notify(TX_QUEUE, false);
        nic.poll();
        assert_eq!(dev.borrow().notifies[1], 1, "the owed kick was sent once the device asked");
        nic.poll();
        assert_eq!(dev.borrow().notifies[1], 1, "and only once");
        // Busy device that does finish: nothing owed once every buffer is back.
        dev.borrow_mut().set_no_notify(TX_QUEUE, true);
        assert!(send(&mut nic, &frame(9, 100)));
        nic.poll();
        assert_eq!(dev.borrow_mut().drain_tx().len(), 6);
        dev.borrow_mut().set_no_notify(TX_QUEUE, false);
        nic.poll();
        assert_eq!(dev.borrow().notifies[1], 1, "the device took everything itself: no kick");
    }

    #[test]
    fn receive_refills_without_kicks_while_the_device_has_buffers() {
        let (mut nic, dev) = nic();
        // QEMU: NO_NOTIFY on the receive queue while it has buffers.
        dev.borrow_mut().set_no_notify(RX_QUEUE, true);
        let mut got = Vec::new();
        for round in 0..20u8 {
            for n in 0..10 {
                assert!(dev.borrow_mut().deliver(&frame(round.wrapping_mul(10).wrapping_add(n), 64 + usize::from(n))));
            }
            assert_eq!(nic.receive(32, &mut |f| got.push(f.to_vec())), 10);
            nic.poll();
        }
        assert_eq!(got.len(), 200);
        assert_eq!(got[13][..], frame(13, 67)[..]);
        assert_eq!(dev.borrow().notifies, [1, 0], "only the bring-up kick");
        assert_eq!(dev.borrow().pending(RX_QUEUE), RX_RING, "every buffer back with the device");
        // The device runs dry and asks: one kick after the refill.
        for n in 0..RX_RING {
            assert!(dev.borrow_mut().deliver(&frame(n as u8, 60)));
        }
        assert!(!dev.borrow_mut().deliver(&frame(0, 60)));
        dev.borrow_mut().set_no_notify(RX_QUEUE, false);
        assert_eq!(nic.receive(32, &mut |_| {}), 32);
        assert_eq!(nic.receive(32, &mut |_| {}), 32);
        nic.poll();
        assert_eq!(dev.borrow().notifies, [2, 0]);
        nic.poll();
        assert_eq!(dev.borrow().notifies, [2, 0]);
        let s = nic.stats();
        assert_eq!((s.rx_frames, s.rx_errors), (264, 0));
    }

    #[test]
    fn a_lost_receive_kick_is_sent_on_a_later_turn() {
        let (mut nic, dev) = nic();
        dev.borrow_mut().set_no_notify(RX_QUEUE, true);
        for n in 0..RX_RING {
            assert!(dev.borrow_mut().deliver(&frame(n as u8, 60)));
        }
        assert_eq!(nic.receive(RX_RING, &mut |_| {}), RX_RING);
        // The driver reads a stale NO_NOTIFY: no kick this turn…
        nic.poll();
        assert_eq!(dev.borrow().notifies[0], 1);
        // …the device is really waiting: the next turn tells it, with no
        // receive traffic to trigger it.
        dev.borrow_mut().set_no_notify(RX_QUEUE, false);
        nic.poll();
        assert_eq!(dev.borrow().notifies[0], 2);
        nic.poll();
        assert_eq!(dev.borrow().notifies[0], 2);
    }

    #[test]
    fn full_transmit_ring_is_counted_and_recovers() {
        let (mut nic, dev) = nic();
        let mut sent = 0;
        for n in 0..200u8 {
            if send(&mut nic, &frame(n, 60)) {
                sent += 1;
            }
        }
        assert_eq!(sent, TX_RING);
        assert_eq!(nic.stats().tx_ring_full, 200 - TX_RING as u64);
        assert_eq!(nic.stats().tx_frames, TX_RING as u64);
        nic.poll();
        assert_eq!(dev.borrow_mut().drain_tx().len(), TX_RING);
        assert!(send(&mut nic, &frame(0, 60)), "room again once the device is done");
        nic.poll();
        assert_eq!(dev.borrow().notifies[1], 2);
        assert_eq!(dev.borrow_mut().drain_tx().len(), 1);
    }

    #[test]
    fn oversize_and_broken_lengths_are_counted() {
        let (mut nic, dev) = nic();
        let tx = nic.transmit().expect("slot");
        tx.send(MAX_FRAME + 100, |out| {
            assert_eq!(out.len(), MAX_FRAME);
            out.fill(7);
        });
        nic.poll();
        let out = dev.borrow_mut().drain_tx();
        assert_eq!(out[0].len(), MAX_FRAME);
        assert_eq!(nic.stats().tx_oversize, 1);
        // A used length shorter than the header is an error, not a frame.
        let (head, _, _, _) = dev.borrow_mut().take(RX_QUEUE).expect("rx buffer");
        dev.borrow_mut().complete(RX_QUEUE, head, 4);
        assert_eq!(nic.receive(8, &mut |_| panic!("no frame")), 0);
        assert_eq!(nic.stats().rx_errors, 1);
        assert_eq!(dev.borrow().pending(RX_QUEUE), RX_RING, "the bad buffer went straight back");
    }

    #[test]
    fn frames_are_lent_in_place_and_spares_keep_the_ring_full() {
        let (mut nic, dev) = nic();
        for n in 0..3 {
            assert!(dev.borrow_mut().deliver(&frame(n, 100)));
        }
        let mut loans = Vec::new();
        assert_eq!(lend_into(&mut nic, 2, &mut loans), 2, "the budget bounds the batch");
        // Where the device wrote it: RX_HEADROOM into the whole buffer, the
        // virtio-net header right in front.
        assert_eq!((loans[0].head(), loans[0].len(), loans[0].buf_len()), (RX_HEADROOM, 100, BUF));
        assert_eq!(loans[0].frame(), &frame(0, 100)[..]);
        assert_eq!(loans[1].frame(), &frame(1, 100)[..]);
        assert_eq!(nic.stats().rx_loans_out, 2);
        assert_eq!(dev.borrow().pending(RX_QUEUE), RX_RING - 1, "a spare was posted for each loan at once");
        // Edit in place (a tunnel header in the headroom), then give back.
        loans[0].buf_mut()[..RX_HEADROOM].fill(0xee);
        for l in loans.drain(..) {
            nic.give_back(l);
        }
        assert_eq!((nic.stats().rx_loans_out, nic.rx_spare_len), (0, RX_SPARE));
        // Another NIC's loan: refused, never posted.
        let (mut other, other_dev) = super::tests::nic();
        assert!(other_dev.borrow_mut().deliver(&frame(7, 60)));
        let mut foreign = Vec::new();
        assert_eq!(lend_into(&mut other, 1, &mut foreign), 1);
        nic.give_back(foreign.remove(0));
        assert_eq!((nic.stats().rx_foreign_loans, nic.rx_spare_len), (1, RX_SPARE));
        assert_eq!(lend_into(&mut nic, 8, &mut loans), 1);
        for l in loans.drain(..) {
            nic.give_back(l);
        }
        nic.poll();
        assert_eq!(dev.borrow().pending(RX_QUEUE), RX_RING);
        // Every spare out: lending stops, the frames wait in the used ring
        // until loans come back; buffers rotate through the ring meanwhile.
        for n in 0..RX_SPARE + 3 {
            assert!(dev.borrow_mut().deliver(&frame(n as u8, 60 + n)));
        }
        assert_eq!(lend_into(&mut nic, 1000, &mut loans), RX_SPARE);
        assert_eq!(lend_into(&mut nic, 8, &mut loans), 0, "no spare left");
        assert_eq!(nic.stats().rx_loans_out, RX_SPARE as u64);
        let first = loans.remove(0);
        nic.give_back(first);
        assert_eq!(lend_into(&mut nic, 8, &mut loans), 1);
        assert_eq!(loans.last().unwrap().frame(), &frame(RX_SPARE as u8, 60 + RX_SPARE)[..]);
        for l in loans.drain(..) {
            nic.give_back(l);
        }
        assert_eq!(lend_into(&mut nic, 8, &mut loans), 2);
        for l in loans.drain(..) {
            nic.give_back(l);
        }
        // The device writes the next frame behind the same headroom, in a
        // buffer that was a spare.
        for n in 0..RX_RING {
            assert!(dev.borrow_mut().deliver(&frame(n as u8, 1514)));
            assert_eq!(lend_into(&mut nic, 1, &mut loans), 1);
            let l = loans.remove(0);
            assert_eq!(l.frame(), &frame(n as u8, 1514)[..]);
            assert!(l.buf_len() - RX_HEADROOM - 1514 >= 64, "tailroom for the tunnel's tag and padding");
            nic.give_back(l);
        }
        nic.poll();
        assert_eq!(dev.borrow().pending(RX_QUEUE), RX_RING);
        assert_eq!((nic.stats().rx_errors, nic.stats().rx_loans_out), (0, 0));
    }
}

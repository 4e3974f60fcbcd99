//! virtio-net over PCI, polled, through `virtio-drivers`' raw driver.
//!
//! The crate owns the virtqueues; this driver owns the packet buffers (from
//! the DMA pool): `QUEUE` receive buffers always posted to the device, and
//! `QUEUE` transmit buffers handed out as transmit slots. No interrupts.
//! Link state is reported as up: QEMU's virtio-net link is up whenever the
//! netdev exists, and the raw driver does not expose the status field.

use crate::dma::{self, IdentityHal};
use crate::pci::Device;
use routerd_netdev::{DeviceStats, NetDevice, TxToken, MAX_FRAME, MIN_FRAME};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, PciRoot};
use virtio_drivers::transport::pci::PciTransport;

/// Descriptors per queue (and buffers per direction).
const QUEUE: usize = 64;
/// Bytes per packet buffer: the virtio-net header plus a full frame.
const BUF: usize = 2048;
const PAGES_PER_DIRECTION: usize = QUEUE * BUF / 4096;

#[derive(Debug)]
pub enum Error {
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    Device(virtio_drivers::Error),
    /// The DMA pool has no room for the packet buffers.
    NoDmaMemory,
}

/// A running virtio-net device.
pub struct VirtioNet {
    dev: VirtIONetRaw<IdentityHal, PciTransport, QUEUE>,
    rx: dma::DmaRegion,
    tx: dma::DmaRegion,
    /// Receive buffer index posted under each queue token.
    rx_of_token: [u16; QUEUE],
    /// Transmit buffer index and length in flight under each queue token.
    tx_of_token: [(u16, u16); QUEUE],
    free_tx: [u16; QUEUE],
    free_tx_len: usize,
    stats: DeviceStats,
}

impl VirtioNet {
    /// Resets and initialises the device and posts every receive buffer.
    pub fn new<C: ConfigurationAccess>(root: &mut PciRoot<C>, dev: &Device) -> Result<VirtioNet, Error> {
        // The device reads and writes the rings itself: it must be allowed
        // to master the bus (firmware may have left this off).
        let (_, command) = root.get_status_command(dev.address);
        root.set_command(dev.address, command | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER);
        let transport = PciTransport::new::<IdentityHal, C>(root, dev.address).map_err(Error::Transport)?;
        let raw = VirtIONetRaw::new(transport).map_err(Error::Device)?;
        let rx = dma::alloc_pages(PAGES_PER_DIRECTION).ok_or(Error::NoDmaMemory)?;
        let tx = dma::alloc_pages(PAGES_PER_DIRECTION).ok_or(Error::NoDmaMemory)?;
        let mut nic = VirtioNet {
            dev: raw,
            rx,
            tx,
            rx_of_token: [0; QUEUE],
            tx_of_token: [(0, 0); QUEUE],
            free_tx: [0; QUEUE],
            free_tx_len: QUEUE,
            stats: DeviceStats::default(),
        };
        for (i, slot) in nic.free_tx.iter_mut().enumerate() {
            *slot = i as u16;
        }
        for i in 0..QUEUE {
            nic.post_rx(i)?;
        }
        Ok(nic)
    }

    fn rx_buf(&mut self, i: usize) -> &'static mut [u8] {
        debug_assert!(i < QUEUE);
        // SAFETY: buffer i lies inside the rx region (i < QUEUE), regions are
        // owned by this driver for the rest of the run, and each buffer is
        // either with the device or being looked at by exactly one caller.
        unsafe { core::slice::from_raw_parts_mut(self.rx.ptr.as_ptr().add(i * BUF), BUF) }
    }

    fn tx_buf(&mut self, i: usize) -> &'static mut [u8] {
        debug_assert!(i < QUEUE);
        // SAFETY: as for `rx_buf`, over the tx region.
        unsafe { core::slice::from_raw_parts_mut(self.tx.ptr.as_ptr().add(i * BUF), BUF) }
    }

    fn post_rx(&mut self, i: usize) -> Result<(), Error> {
        let buf = self.rx_buf(i);
        // SAFETY: the buffer is not touched again until the device returns it
        // through `poll_receive`/`receive_complete`.
        let token = unsafe { self.dev.receive_begin(buf) }.map_err(Error::Device)?;
        if let Some(slot) = self.rx_of_token.get_mut(usize::from(token)) {
            *slot = i as u16;
        }
        Ok(())
    }
}

/// A reserved transmit buffer.
pub struct Tx<'a> {
    nic: &'a mut VirtioNet,
    buf: Option<u16>,
}

impl TxToken for Tx<'_> {
    fn send<R>(mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let Some(i) = self.buf.take() else {
            // Unreachable by construction (a token always holds a buffer);
            // hand the closure scratch space rather than panic.
            return fill(&mut [0u8; MAX_FRAME][..len.min(MAX_FRAME)]);
        };
        let nic = &mut *self.nic;
        let buf = nic.tx_buf(usize::from(i));
        let hdr = nic.dev.fill_buffer_header(buf).unwrap_or(0);
        if len > MAX_FRAME {
            nic.stats.tx_oversize += 1;
        }
        let len = len.min(MAX_FRAME);
        let wire_len = len.max(MIN_FRAME);
        let frame = &mut buf[hdr..hdr + wire_len];
        frame[len..].fill(0);
        let r = fill(&mut frame[..len]);
        let total = hdr + wire_len;
        // SAFETY: the buffer stays untouched until `poll` sees the token complete.
        match unsafe { nic.dev.transmit_begin(&buf[..total]) } {
            Ok(token) => {
                if let Some(slot) = nic.tx_of_token.get_mut(usize::from(token)) {
                    *slot = (i, total as u16);
                }
                nic.stats.tx_frames += 1;
                nic.stats.tx_bytes += len as u64;
            }
            Err(_) => {
                // The slot was reserved against `can_send`, so the queue had
                // room; count it if the device disagrees and keep the buffer.
                nic.stats.tx_ring_full += 1;
                release(nic, i);
            }
        }
        r
    }
}

fn release(nic: &mut VirtioNet, i: u16) {
    if let Some(slot) = nic.free_tx.get_mut(nic.free_tx_len) {
        *slot = i;
        nic.free_tx_len += 1;
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.buf.take() {
            release(self.nic, i);
        }
    }
}

impl NetDevice for VirtioNet {
    type TxToken<'a> = Tx<'a>;

    fn mac(&self) -> [u8; 6] {
        self.dev.mac_address()
    }

    fn link_up(&mut self) -> bool {
        true
    }

    fn receive(&mut self, budget: usize, on_frame: &mut dyn FnMut(&mut [u8])) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(token) = self.dev.poll_receive() else { break };
            let i = usize::from(self.rx_of_token.get(usize::from(token)).copied().unwrap_or(0));
            let buf = self.rx_buf(i);
            // SAFETY: `buf` is the buffer posted under `token`.
            match unsafe { self.dev.receive_complete(token, buf) } {
                Ok((hdr, len)) => match buf.get_mut(hdr..hdr.saturating_add(len)) {
                    Some(frame) if len <= MAX_FRAME => {
                        self.stats.rx_frames += 1;
                        self.stats.rx_bytes += len as u64;
                        on_frame(frame);
                    }
                    _ => self.stats.rx_errors += 1,
                },
                Err(_) => self.stats.rx_errors += 1,
            }
            if self.post_rx(i).is_err() {
                self.stats.rx_errors += 1;
            }
            n += 1;
        }
        n
    }

    fn transmit(&mut self) -> Option<Tx<'_>> {
        self.poll_tx();
        if self.free_tx_len == 0 || !self.dev.can_send() {
            self.stats.tx_ring_full += 1;
            return None;
        }
        self.free_tx_len -= 1;
        let i = self.free_tx.get(self.free_tx_len).copied()?;
        Some(Tx { nic: self, buf: Some(i) })
    }

    fn poll(&mut self) {
        self.poll_tx();
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

impl VirtioNet {
    fn poll_tx(&mut self) {
        while let Some(token) = self.dev.poll_transmit() {
            let (i, len) = self.tx_of_token.get(usize::from(token)).copied().unwrap_or((0, 0));
            let buf = self.tx_buf(usize::from(i));
            // SAFETY: same buffer and length as passed to `transmit_begin`.
            let _ = unsafe { self.dev.transmit_complete(token, &buf[..usize::from(len)]) };
            release(self, i);
        }
    }
}

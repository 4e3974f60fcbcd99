//! The one network-device interface of routerd.
//!
//! Drivers (virtio-net, e1000e in `hal-x86`) implement [`NetDevice`]; the
//! image's main loop — and, on the host, TAP/loopback/fault-injecting
//! implementations — drive it. This crate depends on nothing, so drivers and
//! their users meet here without knowing each other.
//!
//! The shape is polled and batched:
//! - [`NetDevice::receive`] hands each frame of a bounded batch to a closure,
//!   in arrival order, then gives the buffer back to the device;
//! - [`NetDevice::transmit`] reserves a transmit slot. Once the caller holds a
//!   [`TxToken`], sending cannot fail: the slot and its buffer are already the
//!   caller's, so the dataplane never has to undo work because a ring filled
//!   up halfway through a packet;
//! - [`NetDevice::poll`] reclaims finished transmissions and refills the
//!   receive ring; the main loop calls it every turn.
#![no_std]

#[cfg(feature = "std")]
pub mod testing;

/// Largest Ethernet frame (without FCS) a device delivers or accepts:
/// 1500 bytes of payload, 14 of header and room for one 802.1Q tag.
pub const MAX_FRAME: usize = 1518;

/// Smallest frame a device accepts for transmission; shorter frames are
/// padded with zeros by the driver.
pub const MIN_FRAME: usize = 60;

/// Counters every driver keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames the device reported as bad or that did not fit a buffer.
    pub rx_errors: u64,
    /// `transmit` found no free slot.
    pub tx_ring_full: u64,
    /// Frames given to `send` longer than [`MAX_FRAME`], truncated.
    pub tx_oversize: u64,
}

/// A reserved transmit slot. Dropping it unused gives the slot back.
pub trait TxToken {
    /// Fills `len` bytes of the slot's buffer with `fill` and sends them.
    /// `len` above [`MAX_FRAME`] is clamped (and counted); below
    /// [`MIN_FRAME`] the frame is zero-padded.
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R;
}

/// A polled Ethernet device.
pub trait NetDevice {
    /// The transmit slot type.
    type TxToken<'a>: TxToken
    where
        Self: 'a;

    /// The device's MAC address.
    fn mac(&self) -> [u8; 6];

    /// Whether the link is up (devices without link reporting say `true`).
    fn link_up(&mut self) -> bool;

    /// Passes up to `budget` received frames to `on_frame`, oldest first, and
    /// returns how many it passed. The slice is the frame without FCS; it is
    /// valid only during the call (the buffer goes back to the device).
    fn receive(&mut self, budget: usize, on_frame: &mut dyn FnMut(&mut [u8])) -> usize;

    /// Reserves a transmit slot, or `None` when the ring is full (counted).
    fn transmit(&mut self) -> Option<Self::TxToken<'_>>;

    /// Reclaims completed transmissions and refills the receive ring.
    fn poll(&mut self);

    /// The device's counters.
    fn stats(&self) -> DeviceStats;
}

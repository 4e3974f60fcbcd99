//! The one network-device interface of routerd.
//!
//! Drivers (virtio-net, e1000e in `hal-x86`) implement [`NetDevice`], and so
//! do routerd-host's TAP and WAN-socket devices and the in-memory test
//! devices (`testing`); the one forwarding turn (`routerd_control::run`)
//! drives them all. This crate depends on nothing, so drivers and their
//! users meet here without knowing each other. A device says what its
//! frames are ([`NetDevice::capabilities`]: Ethernet, or datagrams of a
//! socket the host's kernel owns, [`Medium`]).
//!
//! The shape is polled and batched:
//! - [`NetDevice::lend`] lends a bounded batch of received frames, in arrival
//!   order, as [`RxLoan`]s: the driver's own receive buffer, with the frame
//!   [`RX_HEADROOM`] bytes in (where the device wrote it), so the dataplane
//!   edits it in place and prepends tunnel headers without a copy. The device
//!   is not borrowed while loans are out (the caller transmits through it
//!   meanwhile); [`NetDevice::give_back`] returns each buffer to the ring.
//!   [`NetDevice::receive`] is the same as a closure over a borrowed slice,
//!   for callers that copy anyway;
//! - [`NetDevice::transmit`] reserves a transmit slot. Once the caller holds a
//!   [`TxToken`], sending cannot fail: the slot and its buffer are already the
//!   caller's, so the dataplane never has to undo work because a ring filled
//!   up halfway through a packet;
//! - [`NetDevice::poll`] reclaims finished transmissions and refills the
//!   receive ring; the main loop calls it every turn.
#![no_std]

#[cfg(feature = "std")]
pub mod pool;
#[cfg(feature = "std")]
pub mod testing;

/// Largest Ethernet frame (without FCS) a device delivers or accepts:
/// 1500 bytes of payload, 14 of header and room for one 802.1Q tag.
pub const MAX_FRAME: usize = 1518;

/// Smallest frame a device accepts for transmission; shorter frames are
/// padded with zeros by the driver.
pub const MIN_FRAME: usize = 60;

/// Bytes drivers leave in front of every received frame, so the dataplane
/// can prepend the outer headers of a tunnel in place. Equal to the
/// dataplane's `HEADROOM` (`routerd_control` asserts it); this crate depends
/// on nothing, so the number is repeated here.
pub const RX_HEADROOM: usize = 128;

/// A received frame lent by its device: the whole receive buffer, the frame
/// at `head..head + len` (normally `head` = [`RX_HEADROOM`]).
///
/// The buffer is `'static` because it is the device's: a DMA buffer from the
/// image's pool, which is never freed, or a test device's pool. While the loan
/// exists nothing else touches the buffer — the driver took it out of the
/// ring before lending it and posts it again only when it is given back
/// ([`NetDevice::give_back`]). A loan that is dropped instead is lost to its
/// ring for good; drivers count the loans out
/// ([`DeviceStats::rx_loans_out`]), so a leak shows.
#[must_use = "give the loan back to its device (NetDevice::give_back), or its buffer is lost to the ring"]
#[derive(Debug)]
pub struct RxLoan {
    buf: &'static mut [u8],
    // Narrow, so a loan is three words: the loop moves each one twice.
    head: u16,
    len: u16,
    slot: u32,
}

impl RxLoan {
    /// Driver side: lends `buf`, a frame of `len` bytes at `head`, under the
    /// driver's own buffer number `slot`. `None` if the frame does not fit
    /// (or the numbers do not: a frame ends within 64 KiB of its buffer's
    /// start, slots are below 2^32).
    pub fn new(buf: &'static mut [u8], head: usize, len: usize, slot: usize) -> Option<RxLoan> {
        let end = head.checked_add(len)?;
        if end > buf.len() || end > usize::from(u16::MAX) {
            return None;
        }
        Some(RxLoan { buf, head: head as u16, len: len as u16, slot: u32::try_from(slot).ok()? })
    }

    /// The frame as received (or as edited since).
    pub fn frame(&self) -> &[u8] {
        let head = usize::from(self.head);
        self.buf.get(head..head + usize::from(self.len)).unwrap_or(&[])
    }

    /// The frame, writable.
    pub fn frame_mut(&mut self) -> &mut [u8] {
        let head = usize::from(self.head);
        self.buf.get_mut(head..head + usize::from(self.len)).unwrap_or(&mut [])
    }

    /// Where the frame starts in the buffer.
    pub fn head(&self) -> usize {
        usize::from(self.head)
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True for an empty frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole buffer (headroom, frame, tailroom), for editing in place.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        self.buf
    }

    /// Keeps only the first `len` bytes of the frame.
    pub fn truncate(&mut self, len: usize) {
        if len < usize::from(self.len) {
            self.len = len as u16;
        }
    }

    /// The driver's buffer number.
    pub fn slot(&self) -> usize {
        self.slot as usize
    }

    /// Where the buffer starts and how long it is (a driver checks that a
    /// loan given back is one of its buffers, whole).
    pub fn addr(&self) -> usize {
        self.buf.as_ptr() as usize
    }

    /// The whole buffer's length.
    pub fn buf_len(&self) -> usize {
        self.buf.len()
    }

    /// Driver side, when the loan comes back: the buffer and its number.
    pub fn into_parts(self) -> (&'static mut [u8], usize) {
        (self.buf, self.slot as usize)
    }
}

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
    /// Receive buffers lent ([`NetDevice::lend`]) and not given back yet: 0
    /// between forwarding turns; more means a loan was lost.
    pub rx_loans_out: u64,
    /// Loans given back that this device did not lend (another device's
    /// buffer, or one given back twice): refused, not re-posted.
    pub rx_foreign_loans: u64,
}

/// What a device's frames are ([`Capabilities::medium`]), after
/// embassy-net-driver's `Medium`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Medium {
    /// Ethernet frames without FCS: the image's NICs, TAP devices.
    #[default]
    Ethernet,
    /// The tunnel's UDP datagrams on a socket whose wire, addresses and
    /// neighbours belong to the host's kernel (routerd-host's WAN). A lent
    /// frame is either one received UDP payload, its sender given by
    /// [`NetDevice::rx_source`], or — from the device's IP side, if it has
    /// one (a TUN) — a bare IPv4 packet (`rx_source` is `None`). Payloads go
    /// out with [`NetDevice::send_datagram`]; what [`NetDevice::transmit`]
    /// sends is a bare IPv4 packet for the IP side. No link layer either
    /// way: no Ethernet header, no ARP.
    Datagram,
}

/// What a device can do, asked once when the loop binds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// What its frames are.
    pub medium: Medium,
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

    /// The device's MAC address (a datagram device has none of its own:
    /// any fixed value the platform names it by).
    fn mac(&self) -> [u8; 6];

    /// What the device's frames are. Ethernet unless it says otherwise.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The sender of a lent frame on a [`Medium::Datagram`] device: the UDP
    /// source it came from, or `None` for a packet from the device's IP
    /// side. Asked before the loan is given back. Ethernet devices: `None`.
    fn rx_source(&self, loan: &RxLoan) -> Option<core::net::SocketAddr> {
        let _ = loan;
        None
    }

    /// Sends `payload` as one UDP datagram to `to` from the device's socket
    /// (a [`Medium::Datagram`] device). False when it cannot: not a datagram
    /// device, no room, or an address family the socket does not carry;
    /// the device counts the last two.
    fn send_datagram(&mut self, to: core::net::SocketAddr, payload: &[u8]) -> bool {
        let _ = (to, payload);
        false
    }

    /// Whether the link is up (devices without link reporting say `true`).
    fn link_up(&mut self) -> bool;

    /// Lends received frames, oldest first, into `into[0]`, `into[1]`, … (one
    /// per slot, at most `into.len()`: the slice is the budget, so there is
    /// always room for what is lent), and returns how many. The caller passes
    /// empty slots; a full one would be overwritten and its loan lost. Each
    /// frame is without FCS, in the device's own buffer with [`RX_HEADROOM`]
    /// bytes in front of it. Bad frames are counted and re-posted, not lent.
    /// A device may lend fewer than it has (its spare buffers are all out).
    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize;

    /// Takes a loan back and returns its buffer to the receive ring (the
    /// device is told at the latest in the next [`NetDevice::poll`]). A loan
    /// this device did not lend is refused and counted
    /// ([`DeviceStats::rx_foreign_loans`]).
    fn give_back(&mut self, loan: RxLoan);

    /// Passes up to `budget` received frames to `on_frame`, oldest first, and
    /// returns how many it passed. The slice is the frame without FCS; it is
    /// valid only during the call (the buffer goes back to the device). For
    /// callers that copy each frame anyway (the image's echo mode, tests).
    fn receive(&mut self, budget: usize, on_frame: &mut dyn FnMut(&mut [u8])) -> usize {
        let mut n = 0;
        while n < budget {
            let mut one: [Option<RxLoan>; 1] = [None];
            self.lend(&mut one);
            let [Some(mut loan)] = one else { break };
            on_frame(loan.frame_mut());
            self.give_back(loan);
            n += 1;
        }
        n
    }

    /// Reserves a transmit slot, or `None` when the ring is full (counted).
    fn transmit(&mut self) -> Option<Self::TxToken<'_>>;

    /// Reclaims completed transmissions and refills the receive ring.
    fn poll(&mut self);

    /// The device's counters.
    fn stats(&self) -> DeviceStats;
}

//! Intel 82574L (QEMU `-device e1000e`): a polled driver written from the
//! Intel 82574 GbE Controller Family datasheet.
//!
//! Role: bring the controller up without interrupts and move whole Ethernet
//! frames through one legacy receive ring and one legacy transmit ring of
//! [`RING`] descriptors, with buffers from the DMA pool (fixed [`BUF`]-byte
//! ones for transmit; receive buffers rotate, see below). No offloads:
//! checksum offload is off (the dataplane verifies and rewrites checksums
//! itself), no context descriptors, no multi-descriptor frames.
//!
//! Contract:
//! - nothing the device writes is trusted: descriptor lengths are bounds
//!   checked, a frame the device marks bad or spreads over several
//!   descriptors is dropped and counted, and the driver never reads the
//!   device's head registers (ownership is decided by the descriptors'
//!   Descriptor Done bits, so there is no device-supplied index to misuse);
//! - once [`NetDevice::transmit`] returns a token, `send` cannot fail: the
//!   token stands for the descriptor at the transmit tail, which software
//!   owns until the tail register moves past it;
//! - bring-up waits are bounded (reset, NVM auto-read, DMA quiesce); a device
//!   that never finishes its reset is reported, not waited for forever.
//!
//! Receive without a copy: each receive descriptor is posted at
//! [`RX_HEADROOM`] into its buffer, so the device writes the frame where the
//! dataplane wants it (room in front for the tunnel headers it prepends in
//! place), and [`NetDevice::lend`] lends the whole buffer ([`RxLoan`]). The
//! legacy ring is strictly in order, so a lent buffer cannot hold up its
//! descriptor: the descriptor is re-posted at once with one of [`RX_SPARE`]
//! spare buffers, and the lent buffer becomes a spare when it is given back.
//! With every spare out, `lend` stops (frames wait in the ring, then the
//! device counts misses) until loans come back; loans out are counted.
//! A receive buffer is [`RX_HEADROOM`] + [`BUF`] bytes: the device may write
//! the full BSIZE (2048) from the posted address, so the headroom is extra.
//!
//! This file is the model for later Intel drivers (i210/i225 share the
//! register names and the legacy descriptor layouts, with per-queue enable
//! bits added).
//!
//! # Registers and bits used (82574 datasheet, "Register Descriptions")
//!
//! | Offset | Register | Datasheet name | Bits used |
//! |--------|----------|----------------|-----------|
//! | 0x0000 | CTRL   | Device Control Register | GIO_MD (2) GIO Master Disable, SLU (6) Set Link Up, FRCSPD (11), FRCDPLX (12), RST (26) Device Reset, VME (30), PHY_RST (31) |
//! | 0x0008 | STATUS | Device Status Register | LU (1) Link Up, GIO_ME (19) GIO Master Enable Status |
//! | 0x0010 | EEC    | EEPROM/Flash Control Register | AUTO_RD (9) NVM Auto Read Done |
//! | 0x0014 | EERD   | EEPROM Read Register | START (0), DONE (1), ADDR (15:2), DATA (31:16) |
//! | 0x00C0 | ICR    | Interrupt Cause Read Register | read to clear |
//! | 0x00D8 | IMC    | Interrupt Mask Clear Register | all ones: every cause masked |
//! | 0x0100 | RCTL   | Receive Control Register | EN (1), BAM (15) Broadcast Accept Mode, BSIZE (17:16) = 00 with BSEX (25) = 0: 2048 bytes, SECRC (26) Strip Ethernet CRC |
//! | 0x0400 | TCTL   | Transmit Control Register | EN (1), PSP (3) Pad Short Packets, CT (11:4) Collision Threshold, COLD (21:12) Collision Distance, RTLC (24) Re-transmit on Late Collision |
//! | 0x0410 | TIPG   | Transmit IPG Register | IPGT (9:0), IPGR1 (19:10), IPGR2 (29:20) |
//! | 0x2800/04 | RDBAL/RDBAH | Receive Descriptor Base Address Low/High | ring address |
//! | 0x2808 | RDLEN  | Receive Descriptor Length | bytes, multiple of 128 |
//! | 0x2810/18 | RDH/RDT | Receive Descriptor Head/Tail | head zeroed at set-up, tail written by software |
//! | 0x2820 | RDTR   | Receive Interrupt Packet Delay Timer | 0 |
//! | 0x282C | RADV   | Receive Interrupt Absolute Delay Timer | 0 |
//! | 0x3800/04 | TDBAL/TDBAH | Transmit Descriptor Base Address Low/High | ring address |
//! | 0x3808 | TDLEN  | Transmit Descriptor Length | bytes, multiple of 128 |
//! | 0x3810/18 | TDH/TDT | Transmit Descriptor Head/Tail | head zeroed at set-up, tail written by software |
//! | 0x3828 | TXDCTL | Transmit Descriptor Control | bit 22: reserved, write as 1 |
//! | 0x4010 | MPC    | Missed Packets Count | clear on read: frames dropped for want of a receive descriptor |
//! | 0x5000 | RXCSUM | Receive Checksum Control | 0: no receive checksum offload |
//! | 0x5200 | MTA[0..128] | Multicast Table Array | zeroed: no multicast accepted |
//! | 0x5400 | RAL0   | Receive Address Low | MAC bytes 0-3 |
//! | 0x5404 | RAH0   | Receive Address High | MAC bytes 4-5, AV (31) Address Valid |
//!
//! NVM words 0x00-0x02 ("EEPROM Address Map": Ethernet Address) hold the MAC
//! when RAH0.AV is clear after reset.
//!
//! Descriptors ("Legacy Receive Descriptor Format", "Legacy Transmit
//! Descriptor Format"), 16 bytes, little endian:
//! - receive: buffer address (0..8), length (8..10), packet checksum
//!   (10..12), status (12: DD (0) Descriptor Done, EOP (1) End of Packet),
//!   errors (13: CE (0) CRC/alignment, SE (1) symbol, SEQ (2) sequence,
//!   CXE (4) carrier extension, TCPE (5), IPE (6), RXE (7) RX data error),
//!   special (14..16);
//! - transmit: buffer address (0..8), length (8..10), CSO (10), CMD (11:
//!   EOP (0) End of Packet, IFCS (1) Insert FCS, RS (3) Report Status), STA
//!   (12: DD (0), EC (1) Excess Collisions, LC (2) Late Collision), CSS (13),
//!   special (14..16).
//!
//! # Memory ordering
//! This is x86: device writes to memory are cache coherent and seen in
//! order, register writes go to uncached MMIO and are not reordered with
//! earlier stores. What remains is the compiler: `fence(Acquire)` after
//! seeing a Descriptor Done bit keeps the descriptor and buffer reads after
//! it, `fence(Release)` before a tail write keeps descriptor and buffer
//! stores before it.

use crate::dma::{self, DmaRegion, IdentityHal};
use crate::pci::Device;
use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};
use routerd_netdev::{DeviceStats, NetDevice, RxLoan, TxToken, MAX_FRAME, MIN_FRAME, RX_HEADROOM};
use virtio_drivers::transport::pci::bus::{BarInfo, Command, ConfigurationAccess, PciRoot};
use virtio_drivers::Hal;

/// PCI device id of the 82574L.
pub const DEVICE_82574L: u16 = 0x10d3;

/// Descriptors per ring (and buffers per direction). The device keeps one
/// descriptor of each ring empty (head == tail means "nothing for you"), so
/// up to `RING - 1` frames are in flight each way.
pub const RING: usize = 64;
/// Bytes per packet buffer: RCTL.BSIZE = 2048.
pub const BUF: usize = 2048;
/// Bytes per descriptor (legacy format, both directions).
const DESC: usize = 16;
/// Where the transmit ring starts in the descriptor page.
const TX_RING_OFFSET: usize = 2048;
const PAGE: usize = 4096;
const BUF_PAGES: usize = RING * BUF / PAGE;
/// Receive buffers beyond one per descriptor, lent while the ring keeps
/// receiving: as many as the forwarding loop takes per turn
/// (`routerd_control::run::BATCH`).
pub const RX_SPARE: usize = 32;
/// Receive buffers in all.
const RX_BUFS: usize = RING + RX_SPARE;
/// Bytes per receive buffer: headroom, then the BSIZE bytes the device may
/// write from the posted address.
const RX_STRIDE: usize = RX_HEADROOM + BUF;
/// 51 pages; with the descriptor page and the transmit buffers 84 per NIC
/// (virtio-net: 116), so eight NICs still fit the 1024-page DMA pool.
const RX_BUF_PAGES: usize = (RX_BUFS * RX_STRIDE).div_ceil(PAGE);
const _: () = assert!(1 + RX_BUF_PAGES + BUF_PAGES <= 100);

// The ring sizes the registers and the DMA layout rely on.
const _: () = assert!(RING * DESC <= TX_RING_OFFSET && TX_RING_OFFSET + RING * DESC <= PAGE);
const _: () = assert!((RING * DESC).is_multiple_of(128), "RDLEN/TDLEN must be multiples of 128 bytes");
const _: () = assert!(RING >= 2 && RING <= u16::MAX as usize);
const _: () = assert!(BUF >= MAX_FRAME && (BUF * RING).is_multiple_of(PAGE));
const _: () = assert!(RX_STRIDE.is_multiple_of(16) && RX_BUFS <= u16::MAX as usize && RX_SPARE >= 1);

/// Register offsets in the BAR0 window.
mod reg {
    pub const CTRL: usize = 0x0000;
    pub const STATUS: usize = 0x0008;
    pub const EEC: usize = 0x0010;
    pub const EERD: usize = 0x0014;
    pub const ICR: usize = 0x00c0;
    pub const IMC: usize = 0x00d8;
    pub const RCTL: usize = 0x0100;
    pub const TCTL: usize = 0x0400;
    pub const TIPG: usize = 0x0410;
    pub const RDBAL: usize = 0x2800;
    pub const RDBAH: usize = 0x2804;
    pub const RDLEN: usize = 0x2808;
    pub const RDH: usize = 0x2810;
    pub const RDT: usize = 0x2818;
    pub const RDTR: usize = 0x2820;
    pub const RADV: usize = 0x282c;
    pub const TDBAL: usize = 0x3800;
    pub const TDBAH: usize = 0x3804;
    pub const TDLEN: usize = 0x3808;
    pub const TDH: usize = 0x3810;
    pub const TDT: usize = 0x3818;
    pub const TXDCTL: usize = 0x3828;
    pub const MPC: usize = 0x4010;
    pub const RXCSUM: usize = 0x5000;
    pub const MTA: usize = 0x5200;
    pub const MTA_ENTRIES: usize = 128;
    pub const RAL0: usize = 0x5400;
    pub const RAH0: usize = 0x5404;
    /// Smallest BAR0 that holds every register above.
    pub const WINDOW_MIN: usize = 0x5408;
}

mod ctrl {
    pub const GIO_MASTER_DISABLE: u32 = 1 << 2;
    pub const SLU: u32 = 1 << 6;
    pub const FRCSPD: u32 = 1 << 11;
    pub const FRCDPLX: u32 = 1 << 12;
    pub const RST: u32 = 1 << 26;
    pub const VME: u32 = 1 << 30;
    pub const PHY_RST: u32 = 1 << 31;
}

mod status {
    pub const LU: u32 = 1 << 1;
    pub const GIO_MASTER_ENABLE: u32 = 1 << 19;
}

mod eec {
    pub const AUTO_RD: u32 = 1 << 9;
}

mod eerd {
    pub const START: u32 = 1 << 0;
    pub const DONE: u32 = 1 << 1;
    pub const ADDR_SHIFT: u32 = 2;
    pub const DATA_SHIFT: u32 = 16;
}

mod rctl {
    pub const EN: u32 = 1 << 1;
    pub const BAM: u32 = 1 << 15;
    /// BSIZE = 00 (with BSEX = 0): 2048-byte buffers.
    pub const BSIZE_2048: u32 = 0;
    pub const SECRC: u32 = 1 << 26;
}

mod tctl {
    pub const EN: u32 = 1 << 1;
    pub const PSP: u32 = 1 << 3;
    pub const CT_SHIFT: u32 = 4;
    pub const CT_MASK: u32 = 0xff << CT_SHIFT;
    /// The datasheet's recommended collision threshold.
    pub const CT_DEFAULT: u32 = 0x0f;
    pub const COLD_SHIFT: u32 = 12;
    pub const COLD_MASK: u32 = 0x3ff << COLD_SHIFT;
    /// Collision distance for full duplex (64-byte slot time, 512 bit times).
    pub const COLD_FULL_DUPLEX: u32 = 0x3f;
    pub const RTLC: u32 = 1 << 24;
}

/// IPGT 8, IPGR1 8, IPGR2 6: the datasheet's values for the copper PHY.
const TIPG_COPPER: u32 = 8 | (8 << 10) | (6 << 20);
/// TXDCTL bit 22: reserved, must be written as 1.
const TXDCTL_RESERVED_ONE: u32 = 1 << 22;
const RAH_AV: u32 = 1 << 31;

/// Receive descriptor status and error bits.
mod rxd {
    pub const STAT_DD: u8 = 1 << 0;
    pub const STAT_EOP: u8 = 1 << 1;
    /// CE | SE | SEQ | CXE | RXE: the frame itself is bad. TCPE/IPE are
    /// checksum verdicts, reported only with RXCSUM offload, which is off.
    pub const ERR_FRAME: u8 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 4) | (1 << 7);
}

/// Transmit descriptor command and status bits.
mod txd {
    pub const CMD_EOP: u8 = 1 << 0;
    pub const CMD_IFCS: u8 = 1 << 1;
    pub const CMD_RS: u8 = 1 << 3;
    pub const STA_DD: u8 = 1 << 0;
    /// Excess collisions or late collision: the frame was not sent
    /// (half duplex only).
    pub const STA_NOT_SENT: u8 = (1 << 1) | (1 << 2);
}

/// Bounds on bring-up waits, in register reads (each is a bus round trip of
/// roughly a microsecond on PCIe, and a device-model call under QEMU).
const RESET_POLLS: u32 = 100_000;
const AUTO_READ_POLLS: u32 = 100_000;
const GIO_QUIESCE_POLLS: u32 = 100_000;
const EERD_POLLS: u32 = 10_000;
/// TSC cycles to wait after asserting CTRL.RST before touching the device
/// again: at least 1 ms on any TSC up to 5 GHz.
const RESET_SETTLE_CYCLES: u64 = 5_000_000;
/// `poll` calls between reads of the missed-packets counter (an MMIO read
/// is costly next to a poll that finds nothing to do).
const POLLS_PER_MPC_READ: u32 = 1024;

/// Why the 82574L could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// BAR0 is not an assigned memory BAR large enough for the registers.
    NoRegisterWindow,
    /// CTRL.RST did not clear.
    ResetTimeout,
    /// Neither RAL0/RAH0 nor the NVM held a usable unicast MAC address.
    NoMacAddress,
    /// The DMA pool has no room for the rings and buffers.
    NoDmaMemory,
}

/// Drops and device events beyond [`DeviceStats`], for diagnosis. Every
/// receive drop here is also in `DeviceStats::rx_errors`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames the device flagged bad (CRC, symbol, sequence, carrier
    /// extension, RX data error).
    pub rx_frame_errors: u64,
    /// Frames spread over several descriptors (no EOP on the first), dropped
    /// whole; cannot happen with 2048-byte buffers and long packets off.
    pub rx_fragments: u64,
    /// Descriptors reporting a length of zero or above [`MAX_FRAME`].
    pub rx_bad_length: u64,
    /// Frames the device dropped because no receive descriptor was free (MPC).
    pub rx_missed: u64,
    /// Transmissions the device gave up on (excess or late collisions).
    pub tx_collision_drops: u64,
}

// ---------------------------------------------------------------------------
// Register window

/// The BAR0 register window. Every access is a volatile 32-bit read or write
/// at an offset checked against the window length.
struct Regs {
    mmio: crate::mmio::Mmio,
}

impl Regs {
    /// # Safety
    /// `base..base + len` must be the device's register window (or, in tests,
    /// memory standing in for it), mapped and valid for the driver's life.
    unsafe fn new(base: NonNull<u8>, len: usize) -> Regs {
        // SAFETY: the caller's contract is `Mmio::new`'s.
        Regs { mmio: unsafe { crate::mmio::Mmio::new(base, len) } }
    }

    /// Outside the window reads give 0.
    fn read(&self, offset: usize) -> u32 {
        self.mmio.read32(offset).unwrap_or(0)
    }

    /// Outside the window writes are dropped.
    fn write(&self, offset: usize, value: u32) {
        let _ = self.mmio.write32(offset, value);
    }

    /// Reads `offset` until `done` holds, at most `polls` times; returns the
    /// value that satisfied it.
    fn poll_until(&self, offset: usize, polls: u32, done: impl Fn(u32) -> bool) -> Option<u32> {
        for _ in 0..polls {
            let v = self.read(offset);
            if done(v) {
                return Some(v);
            }
            core::hint::spin_loop();
        }
        None
    }
}

/// Busy-waits about `cycles` TSC cycles (bounded in iterations too, so a TSC
/// that does not move cannot hang bring-up).
fn settle(cycles: u64) {
    let start = crate::clock::rdtsc();
    for _ in 0..cycles {
        if crate::clock::rdtsc().wrapping_sub(start) >= cycles {
            break;
        }
        core::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------
// Descriptors (pure: built from and into plain integers, tested on the host)

/// The part of a legacy receive descriptor the device writes back: bytes
/// 8..16, read as one little-endian `u64` so length, status and errors come
/// from the same bus read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RxWriteback {
    length: u16,
    status: u8,
    errors: u8,
}

impl RxWriteback {
    fn parse(upper: u64) -> RxWriteback {
        let b = upper.to_le_bytes();
        RxWriteback { length: u16::from_le_bytes([b[0], b[1]]), status: b[4], errors: b[5] }
    }

    fn done(&self) -> bool {
        self.status & rxd::STAT_DD != 0
    }

    fn end_of_packet(&self) -> bool {
        self.status & rxd::STAT_EOP != 0
    }
}

/// What to do with one completed receive descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxVerdict {
    /// Hand the first `len` bytes of the buffer up.
    Deliver(usize),
    /// Drop; the frame is counted under this reason.
    Drop(RxDrop),
    /// Drop silently: the rest of a frame already counted.
    Discard,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxDrop {
    FrameError,
    Fragment,
    BadLength,
}

/// Judges one completed descriptor. `discarding` is true while the driver is
/// skipping the remaining descriptors of a multi-descriptor frame; it is
/// updated for the next descriptor.
fn classify_rx(wb: RxWriteback, discarding: &mut bool) -> RxVerdict {
    if !wb.end_of_packet() {
        // The frame continues in the next descriptor: drop every piece and
        // count the frame once, at its first piece.
        let first = !*discarding;
        *discarding = true;
        return if first { RxVerdict::Drop(RxDrop::Fragment) } else { RxVerdict::Discard };
    }
    if core::mem::replace(discarding, false) {
        return RxVerdict::Discard;
    }
    if wb.errors & rxd::ERR_FRAME != 0 {
        return RxVerdict::Drop(RxDrop::FrameError);
    }
    let len = usize::from(wb.length);
    if len == 0 || len > MAX_FRAME {
        return RxVerdict::Drop(RxDrop::BadLength);
    }
    RxVerdict::Deliver(len)
}

/// A legacy transmit descriptor as software writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TxDescriptor {
    addr: u64,
    length: u16,
    cmd: u8,
}

impl TxDescriptor {
    /// A whole frame in one buffer: end of packet, hardware appends the FCS,
    /// and reports completion (DD) so the slot can be reclaimed.
    fn frame(addr: u64, length: u16) -> TxDescriptor {
        TxDescriptor { addr, length, cmd: txd::CMD_EOP | txd::CMD_IFCS | txd::CMD_RS }
    }

    /// The descriptor as two little-endian quadwords (CSO, STA, CSS and
    /// special zero).
    fn to_qwords(self) -> [u64; 2] {
        [self.addr, u64::from(self.length) | (u64::from(self.cmd) << 24)]
    }
}

/// Status byte of a transmit descriptor, from its upper quadword.
fn tx_status(upper: u64) -> u8 {
    upper.to_le_bytes()[4]
}

// ---------------------------------------------------------------------------
// Ring arithmetic (pure)

fn ring_next(i: u16) -> u16 {
    if usize::from(i) + 1 >= RING {
        0
    } else {
        i + 1
    }
}

fn ring_prev(i: u16) -> u16 {
    if i == 0 {
        (RING - 1) as u16
    } else {
        i - 1
    }
}

/// Transmit ring bookkeeping: descriptors `clean..tail` (modulo [`RING`])
/// are the device's; the rest are free. One stays free so `tail == clean`
/// keeps meaning "empty".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TxRing {
    /// Next descriptor software fills (the value last written to TDT).
    tail: u16,
    /// Oldest descriptor not yet seen completed.
    clean: u16,
}

impl TxRing {
    fn in_flight(&self) -> usize {
        (usize::from(self.tail) + RING - usize::from(self.clean)) % RING
    }

    fn has_room(&self) -> bool {
        self.in_flight() < RING - 1
    }
}

/// A MAC address from RAL0/RAH0, if the Address Valid bit is set.
fn mac_from_receive_address(ral: u32, rah: u32) -> Option<[u8; 6]> {
    if rah & RAH_AV == 0 {
        return None;
    }
    let l = ral.to_le_bytes();
    let h = rah.to_le_bytes();
    Some([l[0], l[1], l[2], l[3], h[0], h[1]])
}

/// A MAC address from NVM words 0..3 (each word little endian).
fn mac_from_nvm(words: [u16; 3]) -> [u8; 6] {
    let [a, b, c] = words.map(u16::to_le_bytes);
    [a[0], a[1], b[0], b[1], c[0], c[1]]
}

/// The RAL0/RAH0 values (Address Valid set) for a MAC address.
fn receive_address(mac: [u8; 6]) -> (u32, u32) {
    let ral = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let rah = u32::from_le_bytes([mac[4], mac[5], 0, 0]) | RAH_AV;
    (ral, rah)
}

/// A station address: not all zeros, not multicast/broadcast.
fn usable_mac(mac: [u8; 6]) -> bool {
    mac != [0; 6] && mac[0] & 1 == 0
}

// ---------------------------------------------------------------------------
// The driver

/// A running 82574L.
pub struct E1000e {
    regs: Regs,
    mac: [u8; 6],
    /// One page: receive descriptors at 0, transmit descriptors at
    /// [`TX_RING_OFFSET`].
    rings: DmaRegion,
    /// `RX_BUFS` receive buffers of `RX_STRIDE` bytes.
    rx_bufs: DmaRegion,
    tx_bufs: DmaRegion,
    /// The receive buffer each descriptor holds.
    rx_buf_of: [u16; RING],
    /// Receive buffers neither in a descriptor nor lent (a stack).
    rx_spare: [u16; RX_SPARE],
    rx_spare_len: usize,
    /// Receive buffers lent out.
    rx_lent: [bool; RX_BUFS],
    /// Next receive descriptor to look at; RDT is always `ring_prev` of it.
    rx_next: u16,
    /// Skipping the rest of a frame that spans descriptors.
    rx_discarding: bool,
    tx: TxRing,
    polls: u32,
    stats: DeviceStats,
    counters: Counters,
}

impl E1000e {
    /// Enables the function on the bus, resets the controller and starts
    /// both rings with interrupts masked.
    pub fn new<C: ConfigurationAccess>(root: &mut PciRoot<C>, dev: &Device) -> Result<E1000e, Error> {
        let df = dev.address;
        let (address, size) = match root.bar_info(df, 0) {
            Ok(Some(BarInfo::Memory { address, size, .. })) => (address, size),
            _ => return Err(Error::NoRegisterWindow),
        };
        let window = usize::try_from(size).map_err(|_| Error::NoRegisterWindow)?;
        if address == 0 || window < reg::WINDOW_MIN {
            return Err(Error::NoRegisterWindow);
        }
        let (_, command) = root.get_status_command(df);
        // Legacy INTx off as well: the driver polls, and a masked device
        // should not be able to hold a shared line asserted.
        root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER | Command::INTERRUPT_DISABLE);
        // SAFETY: BAR0 of the 82574L is its register window; the image is
        // identity mapped, so the BAR address is where the CPU reaches it.
        let base = unsafe { <IdentityHal as Hal>::mmio_phys_to_virt(address, window) };
        // SAFETY: `base..base + window` is the BAR just read, owned by this
        // driver from now on (probe hands each function to one driver).
        let regs = unsafe { Regs::new(base, window) };
        reset(&regs)?;
        E1000e::start(regs)
    }

    /// Reads the MAC and programs filters and rings on a freshly reset
    /// device.
    fn start(regs: Regs) -> Result<E1000e, Error> {
        let mac = read_mac(&regs).ok_or(Error::NoMacAddress)?;
        let (ral, rah) = receive_address(mac);
        regs.write(reg::RAL0, ral);
        regs.write(reg::RAH0, rah);
        for i in 0..reg::MTA_ENTRIES {
            regs.write(reg::MTA + 4 * i, 0);
        }

        let rings = dma::alloc_pages(1).ok_or(Error::NoDmaMemory)?;
        let rx_bufs = dma::alloc_pages(RX_BUF_PAGES).ok_or(Error::NoDmaMemory)?;
        let tx_bufs = dma::alloc_pages(BUF_PAGES).ok_or(Error::NoDmaMemory)?;
        if rings.len < PAGE || rx_bufs.len < RX_BUFS * RX_STRIDE || tx_bufs.len < RING * BUF {
            return Err(Error::NoDmaMemory);
        }
        let mut rx_buf_of = [0u16; RING];
        for (i, b) in rx_buf_of.iter_mut().enumerate() {
            *b = i as u16;
        }
        let mut rx_spare = [0u16; RX_SPARE];
        for (i, b) in rx_spare.iter_mut().enumerate() {
            *b = (RING + i) as u16;
        }
        let nic = E1000e {
            regs,
            mac,
            rings,
            rx_bufs,
            tx_bufs,
            rx_buf_of,
            rx_spare,
            rx_spare_len: RX_SPARE,
            rx_lent: [false; RX_BUFS],
            rx_next: 0,
            rx_discarding: false,
            tx: TxRing::default(),
            polls: 0,
            stats: DeviceStats::default(),
            counters: Counters::default(),
        };
        for i in 0..RING as u16 {
            nic.post_rx(i);
            nic.write_tx_desc(i, [0, 0]);
        }
        nic.start_rings();
        Ok(nic)
    }

    fn start_rings(&self) {
        let r = &self.regs;
        let ring_bytes = (RING * DESC) as u32;

        // Receive: stop, point at the ring, then enable and hand the device
        // every descriptor but the one RDT points at.
        r.write(reg::RCTL, 0);
        let rx_ring = self.rings.phys;
        r.write(reg::RDBAL, rx_ring as u32);
        r.write(reg::RDBAH, (rx_ring >> 32) as u32);
        r.write(reg::RDLEN, ring_bytes);
        r.write(reg::RDH, 0);
        r.write(reg::RDT, 0);
        r.write(reg::RDTR, 0);
        r.write(reg::RADV, 0);
        r.write(reg::RXCSUM, 0);
        r.write(reg::RCTL, rctl::EN | rctl::BAM | rctl::BSIZE_2048 | rctl::SECRC);
        fence(Ordering::Release);
        r.write(reg::RDT, u32::from(ring_prev(self.rx_next)));

        // Transmit: stop, point at the ring, keep the reset value's other
        // TCTL bits and set the full-duplex collision parameters.
        let tctl = r.read(reg::TCTL);
        r.write(reg::TCTL, tctl & !tctl::EN);
        let tx_ring = self.rings.phys + TX_RING_OFFSET as u64;
        r.write(reg::TDBAL, tx_ring as u32);
        r.write(reg::TDBAH, (tx_ring >> 32) as u32);
        r.write(reg::TDLEN, ring_bytes);
        r.write(reg::TDH, 0);
        r.write(reg::TDT, 0);
        r.write(reg::TXDCTL, r.read(reg::TXDCTL) | TXDCTL_RESERVED_ONE);
        r.write(reg::TIPG, TIPG_COPPER);
        let tctl = (tctl & !(tctl::CT_MASK | tctl::COLD_MASK))
            | tctl::EN
            | tctl::PSP
            | (tctl::CT_DEFAULT << tctl::CT_SHIFT)
            | (tctl::COLD_FULL_DUPLEX << tctl::COLD_SHIFT)
            | tctl::RTLC;
        r.write(reg::TCTL, tctl);

        // Nothing above may have raised an interrupt, but make sure.
        r.write(reg::IMC, u32::MAX);
        let _ = r.read(reg::ICR);
    }

    /// Driver-specific counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn rx_desc_ptr(&self, i: u16) -> *mut u64 {
        let i = usize::from(i) % RING;
        // In bounds: i < RING and the receive ring is RING * DESC bytes at
        // the start of the page.
        self.rings.ptr.as_ptr().wrapping_add(i * DESC).cast::<u64>()
    }

    fn tx_desc_ptr(&self, i: u16) -> *mut u64 {
        let i = usize::from(i) % RING;
        self.rings.ptr.as_ptr().wrapping_add(TX_RING_OFFSET + i * DESC).cast::<u64>()
    }

    /// Gives receive descriptor `i` (its buffer, from `RX_HEADROOM` on) to the
    /// device: address set, status cleared so a stale DD is never mistaken
    /// for a new frame.
    fn post_rx(&self, i: u16) {
        let b = self.rx_buf_of.get(usize::from(i) % RING).map_or(0, |&b| usize::from(b) % RX_BUFS);
        let addr = self.rx_bufs.phys + (b * RX_STRIDE + RX_HEADROOM) as u64;
        let p = self.rx_desc_ptr(i);
        // SAFETY: `p` is descriptor i of the receive ring (i < RING), 16-byte
        // aligned in our DMA page; software owns it (not yet handed over by
        // RDT), so nothing else writes it now.
        unsafe {
            p.write_volatile(addr);
            p.add(1).write_volatile(0);
        }
    }

    fn rx_writeback(&self, i: u16) -> RxWriteback {
        let p = self.rx_desc_ptr(i);
        // SAFETY: descriptor i lies in our DMA page; the device may be
        // writing it, which is why this is one aligned volatile 8-byte read
        // (atomic on x86) rather than a reference.
        RxWriteback::parse(unsafe { p.add(1).read_volatile() })
    }

    fn write_tx_desc(&self, i: u16, q: [u64; 2]) {
        let p = self.tx_desc_ptr(i);
        // SAFETY: descriptor i of the transmit ring, in our DMA page and
        // owned by software (outside clean..tail).
        unsafe {
            p.write_volatile(q[0]);
            p.add(1).write_volatile(q[1]);
        }
    }

    fn tx_status(&self, i: u16) -> u8 {
        let p = self.tx_desc_ptr(i);
        // SAFETY: as in `rx_writeback`, over the transmit ring.
        tx_status(unsafe { p.add(1).read_volatile() })
    }

    /// Receive buffer `b`, whole, to lend. Called once per loan.
    fn rx_buf(&mut self, b: u16) -> &'static mut [u8] {
        let b = usize::from(b) % RX_BUFS;
        // SAFETY: buffer b lies inside the receive region (b < RX_BUFS, checked
        // at start-up to hold RX_BUFS * RX_STRIDE bytes). The region comes
        // from the DMA pool, which is `'static` and never frees a page, so
        // `'static` is true of the memory. The caller has just taken b out of
        // its descriptor (DD set: the device is done writing it; the
        // descriptor now holds a spare) and marks it lent: until it is given
        // back the driver neither posts nor reads it, so the loan is its only
        // view.
        unsafe { core::slice::from_raw_parts_mut(self.rx_bufs.ptr.as_ptr().add(b * RX_STRIDE), RX_STRIDE) }
    }

    fn tx_buf(&mut self, i: u16) -> &mut [u8] {
        let i = usize::from(i) % RING;
        // SAFETY: as in `rx_buf`, over the transmit region; descriptor i is
        // the ring's tail, which the device does not read until TDT moves.
        unsafe { core::slice::from_raw_parts_mut(self.tx_bufs.ptr.as_ptr().add(i * BUF), BUF) }
    }

    /// Moves `clean` past every descriptor the device reports done.
    fn reclaim_tx(&mut self) {
        while self.tx.clean != self.tx.tail {
            let sta = self.tx_status(self.tx.clean);
            if sta & txd::STA_DD == 0 {
                break;
            }
            if sta & txd::STA_NOT_SENT != 0 {
                self.counters.tx_collision_drops += 1;
            }
            self.tx.clean = ring_next(self.tx.clean);
        }
    }

    fn count_rx_drop(&mut self, why: RxDrop) {
        self.stats.rx_errors += 1;
        match why {
            RxDrop::FrameError => self.counters.rx_frame_errors += 1,
            RxDrop::Fragment => self.counters.rx_fragments += 1,
            RxDrop::BadLength => self.counters.rx_bad_length += 1,
        }
    }

    fn read_missed(&mut self) {
        let missed = u64::from(self.regs.read(reg::MPC));
        self.counters.rx_missed += missed;
        self.stats.rx_errors += missed;
    }
}

/// Resets the controller: quiesce its DMA, assert CTRL.RST, wait for the
/// reset and the NVM auto-read to finish, mask every interrupt.
fn reset(r: &Regs) -> Result<(), Error> {
    r.write(reg::IMC, u32::MAX);
    // Stop bus mastering first so no descriptor fetch from a previous owner
    // (a boot ROM) is in flight across the reset.
    r.write(reg::CTRL, r.read(reg::CTRL) | ctrl::GIO_MASTER_DISABLE);
    if r.poll_until(reg::STATUS, GIO_QUIESCE_POLLS, |s| s & status::GIO_MASTER_ENABLE == 0).is_none() {
        log::warn!("e1000e: bus mastering did not stop before reset");
    }
    r.write(reg::CTRL, r.read(reg::CTRL) | ctrl::RST);
    settle(RESET_SETTLE_CYCLES);
    if r.poll_until(reg::CTRL, RESET_POLLS, |c| c & ctrl::RST == 0).is_none() {
        return Err(Error::ResetTimeout);
    }
    if r.poll_until(reg::EEC, AUTO_READ_POLLS, |e| e & eec::AUTO_RD != 0).is_none() {
        log::warn!("e1000e: NVM auto-read not reported done");
    }
    r.write(reg::IMC, u32::MAX);
    let _ = r.read(reg::ICR);
    // Link up, speed and duplex from the PHY's auto-negotiation; no VLAN
    // stripping; nothing left of the quiesce or a PHY reset.
    let c = r.read(reg::CTRL);
    let c = (c | ctrl::SLU) & !(ctrl::GIO_MASTER_DISABLE | ctrl::RST | ctrl::PHY_RST | ctrl::FRCSPD | ctrl::FRCDPLX | ctrl::VME);
    r.write(reg::CTRL, c);
    Ok(())
}

/// The station address: RAL0/RAH0 as loaded from the NVM at reset, else the
/// NVM's words 0..3 through EERD.
fn read_mac(r: &Regs) -> Option<[u8; 6]> {
    if let Some(mac) = mac_from_receive_address(r.read(reg::RAL0), r.read(reg::RAH0)) {
        if usable_mac(mac) {
            return Some(mac);
        }
    }
    let mut words = [0u16; 3];
    for (addr, word) in (0u32..).zip(words.iter_mut()) {
        *word = read_nvm_word(r, addr)?;
    }
    Some(mac_from_nvm(words)).filter(|&m| usable_mac(m))
}

fn read_nvm_word(r: &Regs, addr: u32) -> Option<u16> {
    r.write(reg::EERD, eerd_request(addr));
    let v = r.poll_until(reg::EERD, EERD_POLLS, |v| v & eerd::DONE != 0)?;
    eerd_data(v)
}

/// The EERD value that starts a read of NVM word `addr`.
fn eerd_request(addr: u32) -> u32 {
    ((addr & 0x3fff) << eerd::ADDR_SHIFT) | eerd::START
}

/// The word an EERD value carries, once its DONE bit is set.
fn eerd_data(v: u32) -> Option<u16> {
    (v & eerd::DONE != 0).then_some((v >> eerd::DATA_SHIFT) as u16)
}

/// A reserved transmit slot: the descriptor at the ring's tail.
pub struct Tx<'a> {
    nic: &'a mut E1000e,
}

impl TxToken for Tx<'_> {
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let nic = self.nic;
        let i = nic.tx.tail;
        if len > MAX_FRAME {
            nic.stats.tx_oversize += 1;
        }
        let len = len.min(MAX_FRAME);
        let wire_len = len.max(MIN_FRAME);
        let addr = nic.tx_bufs.phys + (usize::from(i) % RING * BUF) as u64;
        let buf = nic.tx_buf(i);
        let Some(frame) = buf.get_mut(..wire_len) else {
            // Unreachable (BUF >= MAX_FRAME is asserted at compile time);
            // hand the closure scratch space rather than panic.
            return fill(&mut [0u8; MAX_FRAME][..len]);
        };
        let (payload, pad) = frame.split_at_mut(len);
        pad.fill(0);
        let r = fill(payload);
        // `wire_len` <= MAX_FRAME fits the 16-bit length field.
        nic.write_tx_desc(i, TxDescriptor::frame(addr, wire_len as u16).to_qwords());
        nic.tx.tail = ring_next(i);
        fence(Ordering::Release);
        nic.regs.write(reg::TDT, u32::from(nic.tx.tail));
        nic.stats.tx_frames += 1;
        nic.stats.tx_bytes += len as u64;
        r
    }
}

impl NetDevice for E1000e {
    type TxToken<'a> = Tx<'a>;

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        self.regs.read(reg::STATUS) & status::LU != 0
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        let mut passed = 0;
        let mut examined = 0;
        // Dropped descriptors count against a second bound so a flood of bad
        // frames cannot keep the call going while the device refills.
        let limit = into.len().saturating_add(RING);
        while passed < into.len() && examined < limit {
            let i = self.rx_next;
            let wb = self.rx_writeback(i);
            if !wb.done() {
                break;
            }
            fence(Ordering::Acquire);
            let verdict = classify_rx(wb, &mut self.rx_discarding);
            if let RxVerdict::Deliver(len) = verdict {
                // A good frame leaves `rx_discarding` false, so when no spare
                // is left the descriptor can simply wait for the next call.
                let Some(spare) = self.rx_spare_len.checked_sub(1).and_then(|s| self.rx_spare.get(s).copied()) else { break };
                let b = self.rx_buf_of.get(usize::from(i) % RING).copied().unwrap_or(0);
                let loan = RxLoan::new(self.rx_buf(b), RX_HEADROOM, len, usize::from(b));
                match (loan, self.rx_lent.get_mut(usize::from(b)), into.get_mut(passed)) {
                    (Some(loan), Some(out), Some(slot)) => {
                        *out = true;
                        self.rx_spare_len -= 1;
                        if let Some(d) = self.rx_buf_of.get_mut(usize::from(i) % RING) {
                            *d = spare;
                        }
                        self.stats.rx_frames += 1;
                        self.stats.rx_bytes += len as u64;
                        self.stats.rx_loans_out += 1;
                        *slot = Some(loan);
                        passed += 1;
                    }
                    _ => self.count_rx_drop(RxDrop::BadLength),
                }
            } else if let RxVerdict::Drop(why) = verdict {
                self.count_rx_drop(why);
            }
            self.post_rx(i);
            self.rx_next = ring_next(i);
            examined += 1;
        }
        if examined > 0 {
            fence(Ordering::Release);
            self.regs.write(reg::RDT, u32::from(ring_prev(self.rx_next)));
        }
        passed
    }

    fn give_back(&mut self, loan: RxLoan) {
        let b = loan.slot();
        let home = self.rx_bufs.ptr.as_ptr() as usize + b * RX_STRIDE;
        // Only a buffer of ours that is out on loan, whole, becomes a spare:
        // anything else (another NIC's, or given back twice) would hand the
        // device memory someone else may still be using.
        let ours = loan.addr() == home && loan.buf_len() == RX_STRIDE;
        match (self.rx_lent.get_mut(b), self.rx_spare.get_mut(self.rx_spare_len)) {
            (Some(out), Some(spare)) if *out && ours => {
                *out = false;
                // `b < RX_BUFS <= u16::MAX`, asserted at compile time.
                *spare = b as u16;
                self.rx_spare_len += 1;
                self.stats.rx_loans_out -= 1;
                // The loan ends here; the buffer is re-made when lent again.
                let _ = loan.into_parts();
            }
            _ => self.stats.rx_foreign_loans += 1,
        }
    }

    fn transmit(&mut self) -> Option<Tx<'_>> {
        if !self.tx.has_room() {
            self.reclaim_tx();
            if !self.tx.has_room() {
                self.stats.tx_ring_full += 1;
                return None;
            }
        }
        Some(Tx { nic: self })
    }

    fn poll(&mut self) {
        self.reclaim_tx();
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(POLLS_PER_MPC_READ) {
            self.read_missed();
        }
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Lends up to `budget` frames from `d` onto `loans`; how many.
    fn lend_into<D: NetDevice>(d: &mut D, budget: usize, loans: &mut Vec<RxLoan>) -> usize {
        let mut slots: Vec<Option<RxLoan>> = (0..budget).map(|_| None).collect();
        let n = d.lend(&mut slots);
        loans.extend(slots.into_iter().flatten());
        n
    }

    fn wb_bytes(bytes: [u8; 8]) -> RxWriteback {
        RxWriteback::parse(u64::from_le_bytes(bytes))
    }

    #[test]
    fn parses_receive_writeback() {
        // length 0x05ee, checksum 0xbeef, status DD|EOP, errors 0, special 0x0123
        let wb = wb_bytes([0xee, 0x05, 0xef, 0xbe, 0x03, 0x00, 0x23, 0x01]);
        assert_eq!(wb, RxWriteback { length: 1518, status: 0x03, errors: 0 });
        assert!(wb.done() && wb.end_of_packet());
        let idle = wb_bytes([0; 8]);
        assert!(!idle.done());
    }

    #[test]
    fn classifies_good_and_bad_frames() {
        let mut d = false;
        let good = RxWriteback { length: 60, status: 0x03, errors: 0 };
        assert_eq!(classify_rx(good, &mut d), RxVerdict::Deliver(60));
        let max = RxWriteback { length: MAX_FRAME as u16, ..good };
        assert_eq!(classify_rx(max, &mut d), RxVerdict::Deliver(MAX_FRAME));
        let long = RxWriteback { length: MAX_FRAME as u16 + 1, ..good };
        assert_eq!(classify_rx(long, &mut d), RxVerdict::Drop(RxDrop::BadLength));
        let empty = RxWriteback { length: 0, ..good };
        assert_eq!(classify_rx(empty, &mut d), RxVerdict::Drop(RxDrop::BadLength));
        for bit in [0u8, 1, 2, 4, 7] {
            let bad = RxWriteback { errors: 1 << bit, ..good };
            assert_eq!(classify_rx(bad, &mut d), RxVerdict::Drop(RxDrop::FrameError), "error bit {bit}");
        }
        // Checksum verdicts are not frame errors (offload is off anyway).
        let csum = RxWriteback { errors: 0x60, ..good };
        assert_eq!(classify_rx(csum, &mut d), RxVerdict::Deliver(60));
        assert!(!d);
    }

    #[test]
    fn multi_descriptor_frame_is_dropped_once() {
        let mut d = false;
        let piece = RxWriteback { length: 2048, status: 0x01, errors: 0 };
        let last = RxWriteback { length: 100, status: 0x03, errors: 0 };
        assert_eq!(classify_rx(piece, &mut d), RxVerdict::Drop(RxDrop::Fragment));
        assert_eq!(classify_rx(piece, &mut d), RxVerdict::Discard);
        assert_eq!(classify_rx(last, &mut d), RxVerdict::Discard);
        assert!(!d);
        assert_eq!(classify_rx(last, &mut d), RxVerdict::Deliver(100));
    }

    #[test]
    fn emits_transmit_descriptor() {
        let q = TxDescriptor::frame(0x1122_3344_5566_7788, 60).to_qwords();
        let mut bytes = [0xa5u8; 16];
        bytes[..8].copy_from_slice(&q[0].to_le_bytes());
        bytes[8..].copy_from_slice(&q[1].to_le_bytes());
        assert_eq!(
            bytes,
            [
                0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // buffer address
                60, 0,    // length
                0,    // CSO
                0x0b, // CMD: EOP | IFCS | RS
                0,    // STA
                0,    // CSS
                0, 0, // special
            ]
        );
        assert_eq!(tx_status(u64::from_le_bytes([60, 0, 0, 0x0b, 0x01, 0, 0, 0])), txd::STA_DD);
    }

    #[test]
    fn ring_indexes_wrap() {
        assert_eq!(ring_next(0), 1);
        assert_eq!(ring_next((RING - 1) as u16), 0);
        assert_eq!(ring_prev(0), (RING - 1) as u16);
        assert_eq!(ring_prev(5), 4);
        for i in 0..RING as u16 {
            assert_eq!(ring_prev(ring_next(i)), i);
        }
    }

    #[test]
    fn transmit_ring_keeps_one_slot_free() {
        let mut t = TxRing::default();
        assert_eq!(t.in_flight(), 0);
        for n in 0..RING - 1 {
            assert!(t.has_room(), "after {n}");
            t.tail = ring_next(t.tail);
        }
        assert_eq!(t.in_flight(), RING - 1);
        assert!(!t.has_room());
        t.clean = ring_next(t.clean);
        assert!(t.has_room());
        // Wrapped: tail behind clean in index order.
        let w = TxRing { tail: 2, clean: (RING - 3) as u16 };
        assert_eq!(w.in_flight(), 5);
    }

    #[test]
    fn mac_addresses_from_registers_and_nvm() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        let (ral, rah) = receive_address(mac);
        assert_eq!((ral, rah), (0x1200_5452, 0x8000_5634));
        assert_eq!(mac_from_receive_address(ral, rah), Some(mac));
        assert_eq!(mac_from_receive_address(ral, rah & !RAH_AV), None);
        assert_eq!(mac_from_nvm([0x5452, 0x1200, 0x5634]), mac);
        assert!(usable_mac(mac));
        assert!(!usable_mac([0; 6]));
        assert!(!usable_mac([0xff; 6]));
        assert!(!usable_mac([0x01, 0, 0x5e, 0, 0, 1]));
    }

    #[test]
    fn encodes_nvm_reads() {
        assert_eq!(eerd_request(0), 0x0000_0001);
        assert_eq!(eerd_request(2), 0x0000_0009);
        assert_eq!(eerd_data(0x5634_000a), Some(0x5634));
        assert_eq!(eerd_data(0x5634_0009), None, "not done yet");
    }

    /// A register file and a minimal device model over host memory: enough
    /// of the 82574's behaviour to run the driver's bring-up, receive and
    /// transmit paths on the host.
    struct FakeDevice {
        window: Vec<u32>,
    }

    const WINDOW: usize = 0x20000;

    impl FakeDevice {
        fn new(mac: [u8; 6]) -> FakeDevice {
            let mut window = vec![0u32; WINDOW / 4];
            let (ral, rah) = receive_address(mac);
            window[reg::RAL0 / 4] = ral;
            window[reg::RAH0 / 4] = rah;
            window[reg::MTA / 4 + 3] = 0xdead_beef;
            FakeDevice { window }
        }

        fn regs(&mut self) -> Regs {
            let base = NonNull::new(self.window.as_mut_ptr().cast::<u8>()).expect("vec pointer");
            // SAFETY: the vector outlives the driver in every test and is
            // only touched through volatile accesses while the driver runs.
            unsafe { Regs::new(base, WINDOW) }
        }

        fn reg(&self, offset: usize) -> u32 {
            // SAFETY: in bounds; volatile because the driver writes through a raw pointer.
            unsafe { self.window.as_ptr().add(offset / 4).read_volatile() }
        }

        fn set_reg(&mut self, offset: usize, v: u32) {
            // SAFETY: as in `reg`.
            unsafe { self.window.as_mut_ptr().add(offset / 4).write_volatile(v) }
        }

        fn ring(&self, lo: usize, hi: usize) -> *mut u64 {
            (u64::from(self.reg(lo)) | (u64::from(self.reg(hi)) << 32)) as usize as *mut u64
        }

        /// Delivers a frame into the descriptor at RDH, as the device does,
        /// if the driver has given it one. `status`/`errors` as written back.
        fn deliver(&mut self, frame: &[u8], status: u8, errors: u8) -> bool {
            let head = self.reg(reg::RDH) as usize;
            if head == self.reg(reg::RDT) as usize {
                return false;
            }
            let ring = self.ring(reg::RDBAL, reg::RDBAH);
            // SAFETY: the driver gave us this descriptor (head != tail) and its buffer.
            unsafe {
                let d = ring.add(head * 2);
                let buf = d.read_volatile() as usize as *mut u8;
                core::ptr::copy_nonoverlapping(frame.as_ptr(), buf, frame.len().min(BUF));
                let upper = u64::from(frame.len() as u16) | (u64::from(status) << 32) | (u64::from(errors) << 40);
                d.add(1).write_volatile(upper);
            }
            self.set_reg(reg::RDH, ((head + 1) % RING) as u32);
            true
        }

        /// Sends every descriptor from TDH to TDT, returning the frames, and
        /// writes DD back.
        fn transmit_all(&mut self) -> Vec<(Vec<u8>, u8)> {
            let ring = self.ring(reg::TDBAL, reg::TDBAH);
            let mut out = Vec::new();
            let mut head = self.reg(reg::TDH) as usize;
            while head != self.reg(reg::TDT) as usize {
                // SAFETY: descriptors head..tail are the device's.
                unsafe {
                    let d = ring.add(head * 2);
                    let addr = d.read_volatile() as usize as *const u8;
                    let upper = d.add(1).read_volatile();
                    let len = (upper & 0xffff) as usize;
                    let cmd = (upper >> 24) as u8;
                    out.push((core::slice::from_raw_parts(addr, len).to_vec(), cmd));
                    d.add(1).write_volatile(upper | (u64::from(txd::STA_DD) << 32));
                }
                head = (head + 1) % RING;
            }
            self.set_reg(reg::TDH, head as u32);
            out
        }
    }

    fn bring_up(dev: &mut FakeDevice) -> E1000e {
        E1000e::start(dev.regs()).expect("start")
    }

    #[test]
    fn start_programs_filters_and_rings() {
        let mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
        let mut dev = FakeDevice::new(mac);
        let nic = bring_up(&mut dev);
        assert_eq!(nic.mac(), mac);
        assert_eq!(dev.reg(reg::MTA + 12), 0, "multicast table cleared");
        assert_eq!(dev.reg(reg::RDLEN), (RING * DESC) as u32);
        assert_eq!(dev.reg(reg::TDLEN), (RING * DESC) as u32);
        assert_eq!(dev.reg(reg::RDT), (RING - 1) as u32, "all but one receive descriptor posted");
        assert_eq!(dev.reg(reg::TDT), 0);
        let rctl = dev.reg(reg::RCTL);
        assert_eq!(rctl, rctl::EN | rctl::BAM | rctl::SECRC, "no promiscuous or multicast modes, 2048-byte buffers");
        let tctl = dev.reg(reg::TCTL);
        assert_eq!(tctl & (tctl::EN | tctl::PSP), tctl::EN | tctl::PSP);
        assert_eq!((tctl & tctl::COLD_MASK) >> tctl::COLD_SHIFT, 0x3f);
        assert_eq!(dev.reg(reg::RXCSUM), 0);
        assert_eq!(dev.reg(reg::IMC), u32::MAX);
        assert_eq!(dev.reg(reg::RDBAL) % 16, 0);
        assert_eq!(dev.reg(reg::TDBAL) % 16, 0);
    }

    #[test]
    fn a_reset_that_never_completes_is_an_error() {
        // Plain memory keeps CTRL.RST set once written: the device "hangs".
        let mut dev = FakeDevice::new([0x52, 0x54, 0, 0, 0, 6]);
        assert_eq!(reset(&dev.regs()), Err(Error::ResetTimeout));
        assert_eq!(dev.reg(reg::IMC), u32::MAX, "interrupts masked before anything else");
    }

    #[test]
    fn refuses_a_device_without_a_mac() {
        let mut dev = FakeDevice::new([0x52, 0x54, 0, 0, 0, 1]);
        dev.set_reg(reg::RAH0, 0);
        // EERD never reports done in this model: no MAC at all.
        assert_eq!(E1000e::start(dev.regs()).err(), Some(Error::NoMacAddress));
    }

    #[test]
    fn receives_frames_and_returns_descriptors() {
        let mut dev = FakeDevice::new([0x52, 0x54, 0, 0, 0, 2]);
        let mut nic = bring_up(&mut dev);
        let frame: Vec<u8> = (0..64u8).collect();
        assert!(dev.deliver(&frame, 0x03, 0));
        assert!(dev.deliver(&frame[..60], 0x03, 0x01)); // CRC error
        assert!(dev.deliver(&frame[..42], 0x03, 0));
        let mut got = Vec::new();
        let n = nic.receive(8, &mut |f| got.push(f.to_vec()));
        assert_eq!(n, 2);
        assert_eq!(got, vec![frame.clone(), frame[..42].to_vec()]);
        assert_eq!(dev.reg(reg::RDT), 2, "three descriptors returned");
        let s = nic.stats();
        assert_eq!((s.rx_frames, s.rx_bytes, s.rx_errors), (2, 106, 1));
        assert_eq!(nic.counters().rx_frame_errors, 1);
        assert_eq!(nic.receive(8, &mut |_| panic!("nothing pending")), 0);
    }

    #[test]
    fn receive_respects_budget_and_wraps_the_ring() {
        let mut dev = FakeDevice::new([0x52, 0x54, 0, 0, 0, 3]);
        let mut nic = bring_up(&mut dev);
        let mut seen = 0usize;
        // Five full rings' worth: the indexes wrap several times.
        for round in 0..5u8 {
            let mut delivered = 0;
            while dev.deliver(&[round; 60], 0x03, 0) {
                delivered += 1;
            }
            assert_eq!(delivered, RING - 1, "the driver handed every descriptor back");
            let n = nic.receive(10, &mut |f| {
                assert_eq!(f, &[round; 60][..]);
                seen += 1;
            });
            assert_eq!(n, 10, "budget bounds the batch");
            let rest = nic.receive(RING, &mut |_| seen += 1);
            assert_eq!(rest, delivered - 10);
        }
        assert_eq!(seen, 5 * (RING - 1));
        assert_eq!(nic.stats().rx_errors, 0);
    }

    #[test]
    fn transmits_padded_frames_and_reclaims() {
        let mut dev = FakeDevice::new([0x52, 0x54, 0, 0, 0, 4]);
        let mut nic = bring_up(&mut dev);
        let token = nic.transmit().expect("slot");
        let r = token.send(20, |buf| {
            assert_eq!(buf.len(), 20);
            buf.fill(0x77);
            7
        });
        assert_eq!(r, 7);
        assert_eq!(dev.reg(reg::TDT), 1);
        let sent = dev.transmit_all();
        assert_eq!(sent.len(), 1);
        let (frame, cmd) = &sent[0];
        assert_eq!(frame.len(), MIN_FRAME);
        assert!(frame[..20].iter().all(|&b| b == 0x77) && frame[20..].iter().all(|&b| b == 0));
        assert_eq!(*cmd, txd::CMD_EOP | txd::CMD_IFCS | txd::CMD_RS);
        let s = nic.stats();
        assert_eq!((s.tx_frames, s.tx_bytes), (1, 20));

        // Oversize is clamped and counted.
        nic.transmit().expect("slot").send(5000, |buf| assert_eq!(buf.len(), MAX_FRAME));
        assert_eq!(dev.transmit_all()[0].0.len(), MAX_FRAME);
        assert_eq!(nic.stats().tx_oversize, 1);
    }

    #[test]
    fn full_transmit_ring_refuses_then_recovers() {
        let mut dev = FakeDevice::new([0x52, 0x54, 0, 0, 0, 5]);
        let mut nic = bring_up(&mut dev);
        for _ in 0..RING - 1 {
            nic.transmit().expect("room").send(60, |b| b.fill(1));
        }
        assert!(nic.transmit().is_none());
        assert_eq!(nic.stats().tx_ring_full, 1);
        // A dropped token gives nothing away.
        assert_eq!(dev.transmit_all().len(), RING - 1);
        {
            let _unused = nic.transmit().expect("room after completion");
        }
        nic.poll();
        for _ in 0..3 * RING {
            nic.transmit().expect("room").send(60, |b| b.fill(2));
            assert_eq!(dev.transmit_all().len(), 1);
        }
        assert_eq!(nic.stats().tx_frames, (RING - 1 + 3 * RING) as u64);
    }

    #[test]
    fn lends_in_place_and_keeps_receiving_from_spares() {
        let mut dev = FakeDevice::new([0x52, 0x54, 0, 0, 0, 6]);
        let mut nic = bring_up(&mut dev);
        let frame: Vec<u8> = (0..100u8).collect();
        let mut loans = Vec::new();
        // More frames than spare buffers: lending stops when every spare is
        // out, the rest wait in the ring.
        for _ in 0..RX_SPARE + 5 {
            assert!(dev.deliver(&frame, 0x03, 0));
        }
        assert_eq!(lend_into(&mut nic, 1000, &mut loans), RX_SPARE);
        assert_eq!((loans[0].head(), loans[0].len(), loans[0].buf_len()), (RX_HEADROOM, 100, RX_STRIDE));
        assert!(loans.iter().all(|l| l.frame() == &frame[..]));
        assert_eq!(nic.stats().rx_loans_out, RX_SPARE as u64);
        // Every lent descriptor was posted again with a spare at once.
        assert_eq!(dev.reg(reg::RDT) as usize, RX_SPARE - 1);
        assert_eq!(lend_into(&mut nic, 8, &mut loans), 0, "no spare left");
        // Edit in place, give back: lending goes on.
        loans[3].buf_mut()[..RX_HEADROOM].fill(0xee);
        for l in loans.drain(..) {
            nic.give_back(l);
        }
        assert_eq!(nic.stats().rx_loans_out, 0);
        assert_eq!(lend_into(&mut nic, 1000, &mut loans), 5);
        // A loan given back to the wrong NIC is refused.
        let mut other_dev = FakeDevice::new([0x52, 0x54, 0, 0, 0, 7]);
        let mut other = bring_up(&mut other_dev);
        nic.give_back(loans.remove(0));
        other.give_back(loans.remove(0));
        assert_eq!(other.stats().rx_foreign_loans, 1);
        assert_eq!(nic.stats().rx_loans_out, 4, "the refused loan is still out, and shows");
        for l in loans.drain(..) {
            nic.give_back(l);
        }
        // Buffers rotate through descriptors; the device still writes each
        // frame RX_HEADROOM into its buffer, headroom untouched.
        for round in 0..3 * RING {
            assert!(dev.deliver(&[round as u8; 60], 0x03, 0));
            assert_eq!(lend_into(&mut nic, 1, &mut loans), 1);
            let l = loans.pop().unwrap();
            assert_eq!(l.frame(), &[round as u8; 60][..]);
            nic.give_back(l);
        }
        assert_eq!(nic.stats().rx_errors, 0);
    }
}

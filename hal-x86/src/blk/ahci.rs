//! AHCI (SATA) over PCI, polled: one command at a time in slot 0 of each
//! port, through a bounce buffer, with every answer of the HBA and the
//! device checked. Written from the Serial ATA AHCI 1.3.1 specification and
//! ATA/ATAPI Command Set (ACS-3).
//!
//! Role: [`probe`] takes an AHCI controller (PCI class 01.06, prog-if 01, any
//! vendor), resets it into AHCI mode with interrupts off, and hands one
//! [`AhciDisk`] per port with an ATA disk to the caller. Each disk implements
//! `routerd_storage::BlockDevice`.
//!
//! Contract:
//!
//! - **Polled, interrupts off.** GHC.IE and every PxIE stay 0; a command is
//!   issued in slot 0 (PxCI bit 0) and the driver spins until the HBA clears
//!   that bit, or PxIS reports a task-file or interface error, or the
//!   clock-measured timeout passes ([`REQUEST_TIMEOUT_MS`], flushes
//!   [`FLUSH_TIMEOUT_MS`]).
//! - **Driver-owned DMA memory.** Per disk one page holds the command list
//!   (1 KiB aligned), the received-FIS area (256 B aligned) and the one
//!   command table with one PRDT entry; a 64 KiB bounce buffer carries the
//!   data, so larger transfers are split ([`MAX_TRANSFER`]). The caller's
//!   buffers never reach the HBA, and the memory is never freed, so an HBA
//!   that keeps writing after a timeout only ever writes into pages that
//!   belong to this port.
//! - **Every answer checked.** IDENTIFY data is parsed field by field (and its
//!   checksum verified when the device provides one); capacity, sector size
//!   and transfer counts are bounds-checked; a read counts only when the HBA
//!   reports exactly the requested byte count (PRDBC); a byte count larger
//!   than the request is a protocol violation.
//! - **Errors.** A task-file error (the device set ERR or DF: a bad sector, an
//!   aborted command) fails that request only: the port is recovered as AHCI
//!   §6.2.2.1 says (ST off, errors cleared, COMRESET if the device still
//!   holds BSY/DRQ, ST on) and later requests go through. A timeout, a
//!   host-bus or interface error, a byte count beyond the request, or a
//!   recovery that does not complete stops the port (ST and FRE off) and
//!   marks the disk broken: every later request fails with [`Error::Broken`].
//!   No re-identify is attempted — a disk that hung once is not trusted with
//!   the box's state again until the next boot.
//! - **Durability** (the contract of `BlockDevice::flush`): `flush` sends
//!   FLUSH CACHE EXT (or FLUSH CACHE where only that exists) and succeeds
//!   only when the device completes it without error. A device with its
//!   write cache enabled (IDENTIFY word 85 bit 5) and no flush command is
//!   asked to turn the cache off (SET FEATURES 82h) and re-identified; if it
//!   keeps it on, its cache is [`Cache::Volatile`] and `flush` fails with
//!   [`Error::NotDurable`]. A device without either keeps a write-through
//!   cache and `flush` succeeds at once.
//! - **Bounded bring-up.** BIOS hand-off, HBA reset, port stop, link
//!   detection and device readiness each wait a bounded, clock-measured time.
//!   A port with no device costs at most [`LINK_ABSENT_MS`] in all (ports are
//!   watched together), so a controller without disks is probed in tens of
//!   milliseconds; a device that shows presence gets [`LINK_UP_MS`] to finish
//!   link negotiation and [`DEVICE_READY_MS`] to clear BSY (spin-up).
//! - Bringing a disk up reads its configuration only: nothing is written to
//!   the medium.
//!
//! Out of scope: NCQ, port multipliers, ATAPI (skipped by signature), hot
//! plug, LBA28-only devices (refused).
//!
//! # Registers used (AHCI 1.3.1 §3)
//!
//! | Offset | Register | Bits used |
//! |--------|----------|-----------|
//! | 0x00 | CAP | NP (4:0), SSS (27) staggered spin-up, S64A (31) 64-bit addressing |
//! | 0x04 | GHC | HR (0) HBA reset, IE (1) = 0, AE (31) AHCI enable |
//! | 0x0C | PI | ports implemented |
//! | 0x24 | CAP2 | BOH (0) BIOS/OS hand-off |
//! | 0x28 | BOHC | BOS (0), OOS (1), BB (4) BIOS busy |
//! | 0x100 + 0x80·p | PxCLB/PxCLBU, PxFB/PxFBU | command list and received-FIS bases |
//! | +0x10 | PxIS | TFES (30), HBFS (29), HBDS (28), IFS (27): cleared by writing 1s |
//! | +0x14 | PxIE | 0 |
//! | +0x18 | PxCMD | ST (0), SUD (1), FRE (4), FR (14), CR (15) |
//! | +0x20 | PxTFD | STS (7:0: ERR 0, DRQ 3, DF 5, BSY 7), ERR (15:8) |
//! | +0x24 | PxSIG | 0x00000101 ATA disk; 0xEB140101 ATAPI |
//! | +0x28 | PxSSTS | DET (3:0): 3 = device present, link up |
//! | +0x2C | PxSCTL | DET (3:0): 1 = COMRESET; IPM (11:8) |
//! | +0x30 | PxSERR | cleared by writing 1s |
//! | +0x38 | PxCI | bit 0: slot 0 issued |
//!
//! # Memory ordering
//! x86: device writes to memory are coherent and ordered, MMIO is uncached
//! and not reordered with earlier stores. `fence(Release)` before writing
//! PxCI keeps the command table stores before it (against the compiler);
//! `fence(Acquire)` after seeing PxCI clear keeps the byte-count and data
//! reads after it.

use super::{BlockDevice, BlockError, BlockSize};
use crate::clock::Clock;
use crate::dma;
pub use crate::mmio::Mmio;
use crate::pci::Device;
use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};
use log::{info, warn};
use virtio_drivers::transport::pci::bus::{BarInfo, Command, ConfigurationAccess, PciRoot};

/// PCI class, subclass and programming interface of an AHCI controller.
pub const CLASS_STORAGE: u8 = 0x01;
pub const SUBCLASS_SATA: u8 = 0x06;
pub const PROG_IF_AHCI: u8 = 0x01;
/// The BAR holding the HBA's registers (ABAR).
const ABAR: u8 = 5;

/// How long one read or write may take before the port is given up on
/// (Linux's default block-layer timeout).
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// How long a cache flush may take (Linux allows flushes twice the timeout:
/// a rotating disk may have a large cache to write out).
pub const FLUSH_TIMEOUT_MS: u64 = 60_000;
/// GHC.HR must clear within 1 s (AHCI §10.4.3).
pub const HBA_RESET_MS: u64 = 1_000;
/// PxCMD.CR and PxCMD.FR must clear within 500 ms of ST/FRE (§10.1.2).
pub const PORT_STOP_MS: u64 = 500;
/// How long a port may show no device at all (PxSSTS.DET = 0) before it is
/// taken as empty. A present device answers COMRESET within 10 ms (SATA
/// OOB); twice that covers the HBA starting its COMRESET late.
pub const LINK_ABSENT_MS: u64 = 20;
/// How long a port that shows a device (DET = 1) may take to bring the
/// link up.
pub const LINK_UP_MS: u64 = 1_000;
/// How long a device may stay busy after the link comes up (a rotating disk
/// spinning up).
pub const DEVICE_READY_MS: u64 = 10_000;
/// BIOS/OS hand-off: 25 ms for the BIOS to let go, 2 s more if it says it
/// is busy (§10.6.3).
pub const HANDOFF_MS: u64 = 25;
pub const HANDOFF_BUSY_MS: u64 = 2_000;

/// The bounce buffer, and so the largest transfer in one command: 128
/// sectors of 512 bytes or 16 of 4096, well inside READ DMA EXT's 16-bit
/// count and a PRDT entry's 4 MiB.
pub const MAX_TRANSFER: usize = 64 * 1024;
const BOUNCE_PAGES: usize = MAX_TRANSFER / PAGE;
const PAGE: usize = 4096;

/// Layout of the per-port page.
const CMD_LIST: usize = 0x000;
const RX_FIS: usize = 0x400;
const CMD_TABLE: usize = 0x500;
/// In the command table: the command FIS at 0, the PRDT at 0x80.
const PRDT: usize = 0x80;
const CMD_TABLE_LEN: usize = PRDT + 16;
const _: () = assert!(CMD_LIST.is_multiple_of(1024) && RX_FIS.is_multiple_of(256) && CMD_TABLE.is_multiple_of(128));
const _: () = assert!(CMD_LIST + 32 * 32 <= RX_FIS && RX_FIS + 256 <= CMD_TABLE && CMD_TABLE + CMD_TABLE_LEN <= PAGE);
const _: () = assert!(MAX_TRANSFER.is_multiple_of(PAGE) && MAX_TRANSFER <= 4 << 20);
const _: () = assert!(MAX_TRANSFER / 512 <= u16::MAX as usize);

/// HBA registers (§3.1).
mod hba {
    pub const CAP: usize = 0x00;
    pub const GHC: usize = 0x04;
    pub const PI: usize = 0x0c;
    pub const VS: usize = 0x10;
    pub const CAP2: usize = 0x24;
    pub const BOHC: usize = 0x28;
    pub const PORTS: usize = 0x100;
    pub const PORT_LEN: usize = 0x80;

    pub const CAP_NP: u32 = 0x1f;
    pub const CAP_SSS: u32 = 1 << 27;
    pub const CAP_S64A: u32 = 1 << 31;
    pub const GHC_HR: u32 = 1 << 0;
    pub const GHC_IE: u32 = 1 << 1;
    pub const GHC_AE: u32 = 1 << 31;
    pub const CAP2_BOH: u32 = 1 << 0;
    pub const BOHC_BOS: u32 = 1 << 0;
    pub const BOHC_OOS: u32 = 1 << 1;
    pub const BOHC_BB: u32 = 1 << 4;
}

/// Port registers (§3.3), offsets from the port's block.
mod px {
    pub const CLB: usize = 0x00;
    pub const CLBU: usize = 0x04;
    pub const FB: usize = 0x08;
    pub const FBU: usize = 0x0c;
    pub const IS: usize = 0x10;
    pub const IE: usize = 0x14;
    pub const CMD: usize = 0x18;
    pub const TFD: usize = 0x20;
    pub const SIG: usize = 0x24;
    pub const SSTS: usize = 0x28;
    pub const SCTL: usize = 0x2c;
    pub const SERR: usize = 0x30;
    pub const CI: usize = 0x38;

    pub const CMD_ST: u32 = 1 << 0;
    pub const CMD_SUD: u32 = 1 << 1;
    pub const CMD_FRE: u32 = 1 << 4;
    pub const CMD_FR: u32 = 1 << 14;
    pub const CMD_CR: u32 = 1 << 15;

    /// Task file error status.
    pub const IS_TFES: u32 = 1 << 30;
    /// Host bus fatal, host bus data, interface fatal: the HBA stopped.
    pub const IS_FATAL: u32 = (1 << 29) | (1 << 28) | (1 << 27);

    pub const TFD_ERR: u32 = 1 << 0;
    pub const TFD_DRQ: u32 = 1 << 3;
    pub const TFD_DF: u32 = 1 << 5;
    pub const TFD_BSY: u32 = 1 << 7;

    pub const DET_MASK: u32 = 0xf;
    pub const DET_PRESENT: u32 = 1;
    pub const DET_UP: u32 = 3;
    pub const SCTL_DET_COMRESET: u32 = 1;
}

/// Port signatures (PxSIG, §3.3.9).
pub mod sig {
    pub const ATA: u32 = 0x0000_0101;
    pub const ATAPI: u32 = 0xeb14_0101;
    pub const PORT_MULTIPLIER: u32 = 0x9669_0101;
    pub const SEMB: u32 = 0xc33c_0101;
    /// What PxSIG reads until the device's first D2H FIS arrived.
    pub const NONE: u32 = 0xffff_ffff;
}

/// ATA commands (ACS-3 §7).
pub mod ata {
    pub const IDENTIFY_DEVICE: u8 = 0xec;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const FLUSH_CACHE: u8 = 0xe7;
    pub const FLUSH_CACHE_EXT: u8 = 0xea;
    pub const SET_FEATURES: u8 = 0xef;
    /// SET FEATURES subcommand: disable the volatile write cache.
    pub const FEATURE_WRITE_CACHE_OFF: u8 = 0x82;
    /// The device register's LBA bit.
    pub const DEVICE_LBA: u8 = 1 << 6;
}

/// FIS type of a host-to-device register FIS, and its C (command) bit.
const FIS_H2D: u8 = 0x27;
const FIS_C: u8 = 0x80;
/// Command header DW0: FIS length 5 dwords, W (host to device), PRDTL.
const HDR_CFL_H2D: u32 = 5;
const HDR_W: u32 = 1 << 6;
const HDR_PRDTL_SHIFT: u32 = 16;

/// Words of IDENTIFY DEVICE data.
pub const IDENTIFY_BYTES: usize = 512;

/// What a completed write means (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// No volatile cache: a completed write is on the medium.
    WriteThrough,
    /// A volatile cache, emptied by a flush command.
    WriteBack,
    /// A volatile cache and no flush command: no write is ever durable.
    Volatile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    // Controller bring-up.
    /// BAR5 is not an assigned memory BAR holding the HBA registers.
    NoRegisterWindow,
    /// GHC.AE does not stay set: the HBA will not run in AHCI mode.
    NotAhciMode { ghc: u32 },
    /// GHC.HR did not clear within [`HBA_RESET_MS`].
    HbaResetTimeout,

    // Port bring-up.
    /// The DMA pool has no room for the port's memory.
    NoDmaMemory,
    /// DMA memory above 4 GiB on an HBA without 64-bit addressing.
    DmaAbove4G { phys: u64 },
    /// PxCMD.CR or PxCMD.FR did not clear within [`PORT_STOP_MS`].
    PortStopTimeout { port: u8, cmd: u32 },
    /// The device kept BSY/DRQ set, or sent no signature, for
    /// [`DEVICE_READY_MS`].
    DeviceNotReady { port: u8, tfd: u32, sig: u32 },
    /// IDENTIFY word 0 bit 15: not an ATA device.
    NotAta { word0: u16 },
    /// IDENTIFY words 83/86 do not report the 48-bit feature set.
    NoLba48 { word83: u16 },
    /// IDENTIFY words 100-103: zero or beyond 48 bits.
    BadCapacity(u64),
    /// A logical sector size other than 512 or 4096 bytes.
    UnsupportedBlockSize(u64),
    /// IDENTIFY word 255 carries the A5h signature and a wrong checksum.
    IdentifyChecksum { word255: u16 },

    // Requests.
    /// The request reaches past the last block (nothing was sent).
    OutOfRange,
    /// The buffer is empty or not a whole number of blocks (nothing sent).
    BadLength,
    /// The device reported an error (PxIS.TFES or STS.ERR/DF): `status` and
    /// `error` are PxTFD's two bytes. That request failed; the port was
    /// recovered.
    TaskFile { status: u8, error: u8 },
    /// The HBA reported `got` bytes moved for a request of `expected`.
    ByteCount { expected: u32, got: u32 },
    /// PxIS reported a host-bus or interface error; the port was stopped.
    Interface { is: u32 },
    /// The command was not completed in time; the port was stopped.
    Timeout,
    /// The port was given up on earlier: no more requests.
    Broken,
    /// `flush` on a volatile write cache that cannot be flushed.
    NotDurable,
}

impl Error {
    /// The error as the block-device interface reports it.
    pub fn block_error(&self) -> BlockError {
        match self {
            Error::OutOfRange => BlockError::OutOfRange,
            Error::BadLength => BlockError::BadLength,
            _ => BlockError::Io,
        }
    }
}

// ---------------------------------------------------------------------------
// Register access

/// Access to an HBA's register window: the MMIO BAR in the image, a model
/// in the host tests. Offsets are from ABAR; a handle is cloned per disk
/// (each port's disk touches only its own port registers).
pub trait Registers: Clone {
    fn read(&self, offset: usize) -> u32;
    fn write(&self, offset: usize, value: u32);
}

/// The ABAR window (outside it reads give 0 and writes are dropped).
impl Registers for Mmio {
    fn read(&self, offset: usize) -> u32 {
        Mmio::read32(self, offset).unwrap_or(0)
    }

    fn write(&self, offset: usize, value: u32) {
        let _ = Mmio::write32(self, offset, value);
    }
}

/// Where port and bounce memory come from: the image's DMA pool; the host
/// tests take heap pages (the pool is one static shared by every driver test
/// in the process).
#[cfg(not(test))]
fn alloc_pages(pages: usize) -> Option<dma::DmaRegion> {
    dma::alloc_pages(pages)
}
#[cfg(test)]
use tests::heap_pages as alloc_pages;

/// Every wait of the driver, in nanoseconds (the constants above; the tests
/// shorten them).
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    request: u64,
    flush: u64,
    hba_reset: u64,
    port_stop: u64,
    link_absent: u64,
    link_up: u64,
    device_ready: u64,
    handoff: u64,
    handoff_busy: u64,
}

const MS: u64 = 1_000_000;

impl Timeouts {
    const SPEC: Timeouts = Timeouts {
        request: REQUEST_TIMEOUT_MS * MS,
        flush: FLUSH_TIMEOUT_MS * MS,
        hba_reset: HBA_RESET_MS * MS,
        port_stop: PORT_STOP_MS * MS,
        link_absent: LINK_ABSENT_MS * MS,
        link_up: LINK_UP_MS * MS,
        device_ready: DEVICE_READY_MS * MS,
        handoff: HANDOFF_MS * MS,
        handoff_busy: HANDOFF_BUSY_MS * MS,
    };
}

/// Calls `done` until it holds or `timeout_ns` has passed on `clock`;
/// whether it held. `done` is always asked once more after the deadline, so
/// a slow poll loop does not turn a success into a timeout.
fn wait_until(clock: &Clock, timeout_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = clock.now_ns();
    loop {
        if done() {
            return true;
        }
        if clock.now_ns().saturating_sub(start) > timeout_ns {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// Offset of port `port`'s register `reg`.
fn port_reg(port: u8, reg: usize) -> usize {
    hba::PORTS + usize::from(port) * hba::PORT_LEN + reg
}

// ---------------------------------------------------------------------------
// IDENTIFY DEVICE (pure: parsed from the 512 bytes, tested on the host)

/// An ATA string field: bytes swapped within each word, trailing spaces cut.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AtaString<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> AtaString<N> {
    /// Words `first..first + N/2` of `id`.
    fn from_words(id: &[u8; IDENTIFY_BYTES], first: usize) -> AtaString<N> {
        let mut bytes = [b' '; N];
        for (i, pair) in bytes.chunks_exact_mut(2).enumerate() {
            let w = word(id, first + i);
            pair.copy_from_slice(&w.to_be_bytes());
        }
        let len = bytes.iter().rposition(|&b| b != b' ' && b != 0).map_or(0, |p| p + 1);
        AtaString { bytes, len }
    }

    /// The string's bytes (ASCII by the standard, not checked).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl<const N: usize> core::fmt::Debug for AtaString<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.as_bytes();
        let s = &s[s.iter().position(|&b| b != b' ').unwrap_or(s.len())..];
        s.iter().try_for_each(|&b| if b.is_ascii_graphic() || b == b' ' { write!(f, "{}", b as char) } else { write!(f, "\\x{b:02x}") })
    }
}

/// Word `n` of IDENTIFY data (0 outside the 256 words).
fn word(id: &[u8; IDENTIFY_BYTES], n: usize) -> u16 {
    let at = n.saturating_mul(2);
    match id.get(at..at.saturating_add(2)) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => 0,
    }
}

/// Words 83, 86, 87 and 106 are meaningful only when bits 15:14 read 01.
fn valid(w: u16) -> bool {
    w & 0xc000 == 0x4000
}

/// What IDENTIFY DEVICE says, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User-addressable logical sectors (words 100-103).
    pub sectors: u64,
    pub block_size: BlockSize,
    /// The volatile write cache is on (word 85 bit 5; assumed on when the
    /// word is not marked valid).
    pub write_cache: bool,
    /// The command that empties it: FLUSH CACHE EXT (word 83 bit 13), else
    /// FLUSH CACHE (word 83 bit 12), else none.
    pub flush: Option<u8>,
    pub model: AtaString<40>,
    pub serial: AtaString<20>,
}

impl Identity {
    /// Parses IDENTIFY DEVICE data; refuses what this driver cannot use.
    pub fn parse(id: &[u8; IDENTIFY_BYTES]) -> Result<Identity, Error> {
        let word255 = word(id, 255);
        if word255 & 0xff == 0xa5 && id.iter().fold(0u8, |s, &b| s.wrapping_add(b)) != 0 {
            return Err(Error::IdentifyChecksum { word255 });
        }
        let word0 = word(id, 0);
        if word0 & 0x8000 != 0 {
            return Err(Error::NotAta { word0 });
        }
        let (w83, w85, w86, w87, w106) = (word(id, 83), word(id, 85), word(id, 86), word(id, 87), word(id, 106));
        // Word 86 bit 10: 48-bit addressing enabled (word 83 says supported).
        if !valid(w83) || w83 & (1 << 10) == 0 || w86 & (1 << 10) == 0 {
            return Err(Error::NoLba48 { word83: w83 });
        }
        let sectors = (0..4).fold(0u64, |acc, i| acc | u64::from(word(id, 100 + i)) << (16 * i));
        if sectors == 0 || sectors > 1 << 48 {
            return Err(Error::BadCapacity(sectors));
        }
        let mut sector_bytes = 512u64;
        if valid(w106) && w106 & (1 << 12) != 0 {
            // Words 117-118: the logical sector size in 16-bit words.
            let words = u64::from(word(id, 117)) | u64::from(word(id, 118)) << 16;
            sector_bytes = words * 2;
        }
        let block_size =
            usize::try_from(sector_bytes).ok().and_then(BlockSize::from_bytes).ok_or(Error::UnsupportedBlockSize(sector_bytes))?;
        let write_cache = !valid(w87) || w85 & (1 << 5) != 0;
        let flush = if w83 & (1 << 13) != 0 {
            Some(ata::FLUSH_CACHE_EXT)
        } else if w83 & (1 << 12) != 0 {
            Some(ata::FLUSH_CACHE)
        } else {
            None
        };
        Ok(Identity {
            sectors,
            block_size,
            write_cache,
            flush,
            model: AtaString::from_words(id, 27),
            serial: AtaString::from_words(id, 10),
        })
    }
}

// ---------------------------------------------------------------------------
// Controller bring-up

/// Brings up the AHCI controller `dev`: maps ABAR, enables memory decoding
/// and bus mastering (INTx off), resets the HBA into AHCI mode, and hands an
/// [`AhciDisk`] for every port with an ATA disk to `found`. A controller with
/// no disk is not an error. `clock` bounds every wait.
pub fn probe<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    dev: &Device,
    clock: Clock,
    found: &mut dyn FnMut(AhciDisk),
) -> Result<(), Error> {
    let df = dev.address;
    let (address, size) = match root.bar_info(df, ABAR) {
        Ok(Some(BarInfo::Memory { address, size, .. })) => (address, size),
        _ => return Err(Error::NoRegisterWindow),
    };
    let window = usize::try_from(size).map_err(|_| Error::NoRegisterWindow)?;
    if address == 0 || window < hba::PORTS + hba::PORT_LEN || !crate::paging::reach(address, size) {
        return Err(Error::NoRegisterWindow);
    }
    let (_, command) = root.get_status_command(df);
    // The HBA reads command lists and moves data itself; the driver polls,
    // so legacy INTx is masked as well.
    root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER | Command::INTERRUPT_DISABLE);
    let base = NonNull::new(address as usize as *mut u8).ok_or(Error::NoRegisterWindow)?;
    // SAFETY: ABAR is the HBA's register window; the image is identity
    // mapped there (`paging::reach` above), and probe hands each PCI
    // function to one driver, which owns the window from now on.
    let regs = unsafe { Mmio::new(base, window) };
    start(regs, clock, Timeouts::SPEC, found)
}

/// Resets the HBA and brings up every port with a disk; see [`probe`].
/// Port failures are logged and the port skipped; the first one is returned
/// only when no disk came up at all.
fn start<R: Registers>(regs: R, clock: Clock, t: Timeouts, found: &mut dyn FnMut(AhciDisk<R>)) -> Result<(), Error> {
    let cap = regs.read(hba::CAP);
    if regs.read(hba::CAP2) & hba::CAP2_BOH != 0 {
        take_from_bios(&regs, &clock, &t);
    }
    // AE before HR (some HBAs ignore HR outside AHCI mode), and again after:
    // the reset clears it unless the HBA is AHCI-only.
    regs.write(hba::GHC, hba::GHC_AE);
    regs.write(hba::GHC, hba::GHC_AE | hba::GHC_HR);
    if !wait_until(&clock, t.hba_reset, || regs.read(hba::GHC) & hba::GHC_HR == 0) {
        return Err(Error::HbaResetTimeout);
    }
    regs.write(hba::GHC, hba::GHC_AE);
    let ghc = regs.read(hba::GHC);
    if ghc & hba::GHC_AE == 0 || ghc & hba::GHC_IE != 0 {
        return Err(Error::NotAhciMode { ghc });
    }
    let mut pi = regs.read(hba::PI);
    if pi == 0 {
        // Some firmware leaves PI clear; CAP.NP still counts the ports.
        pi = (((1u64 << ((cap & hba::CAP_NP) + 1)) - 1) & 0xffff_ffff) as u32;
    }
    let ports = (0..32u8).filter(|&p| pi & (1 << p) != 0);
    for p in ports.clone() {
        regs.write(port_reg(p, px::IE), 0);
        regs.write(port_reg(p, px::SERR), u32::MAX);
        // Staggered spin-up: SUD 0 → 1 is what starts the port's COMRESET.
        if cap & hba::CAP_SSS != 0 {
            let cmd = regs.read(port_reg(p, px::CMD));
            regs.write(port_reg(p, px::CMD), cmd | px::CMD_SUD);
        }
    }
    let linked = detect_links(&regs, &clock, &t, pi);
    info!(
        "ahci: version {:#x}, {} ports implemented ({pi:#x}), link up on {linked:#x}, 64-bit DMA {}",
        regs.read(hba::VS),
        pi.count_ones(),
        if cap & hba::CAP_S64A != 0 { "yes" } else { "no" }
    );
    let mut disks = 0usize;
    let mut first_error = None;
    for p in ports.filter(|&p| linked & (1 << p) != 0) {
        match AhciDisk::bring_up(regs.clone(), p, cap, clock, t) {
            Ok(Some(disk)) => {
                disks += 1;
                found(disk);
            }
            Ok(None) => {}
            Err(e) => {
                warn!("ahci: port {p}: not usable: {e:?}");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if disks == 0 => Err(e),
        _ => Ok(()),
    }
}

/// BIOS/OS hand-off (§10.6.3): asks for ownership and waits, boundedly, for
/// the BIOS to release it. Proceeds either way: a BIOS that never lets go
/// would otherwise keep the box without its disk.
fn take_from_bios<R: Registers>(regs: &R, clock: &Clock, t: &Timeouts) {
    let bohc = regs.read(hba::BOHC);
    regs.write(hba::BOHC, bohc | hba::BOHC_OOS);
    let released = || regs.read(hba::BOHC) & hba::BOHC_BOS == 0;
    if wait_until(clock, t.handoff, released) {
        return;
    }
    if regs.read(hba::BOHC) & hba::BOHC_BB != 0 && wait_until(clock, t.handoff_busy, released) {
        return;
    }
    warn!("ahci: the BIOS did not release the HBA (BOHC {:#x}); taking it", regs.read(hba::BOHC));
}

/// Watches every implemented port's PxSSTS.DET together: a port is linked
/// once DET = 3, empty once it has shown nothing (DET 0 or 4) for
/// `link_absent`, and given `link_up` while it shows a device negotiating
/// (DET 1). Returns the linked ports as a bit set.
fn detect_links<R: Registers>(regs: &R, clock: &Clock, t: &Timeouts, pi: u32) -> u32 {
    let start = clock.now_ns();
    let mut linked = 0u32;
    let mut present = 0u32;
    loop {
        let elapsed = clock.now_ns().saturating_sub(start);
        let mut pending = 0u32;
        let waiting = pi & !linked;
        for p in (0..32u8).filter(|&p| waiting & (1 << p) != 0) {
            match regs.read(port_reg(p, px::SSTS)) & px::DET_MASK {
                px::DET_UP => linked |= 1 << p,
                px::DET_PRESENT => {
                    present |= 1 << p;
                    pending |= 1 << p;
                }
                _ if present & (1 << p) != 0 || elapsed <= t.link_absent => pending |= 1 << p,
                _ => {}
            }
        }
        if pending == 0 {
            return linked;
        }
        if elapsed > t.link_up.max(t.link_absent) {
            warn!("ahci: ports {pending:#x} show a device but no link after {} ms", elapsed / MS);
            return linked;
        }
        core::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------
// A disk on one port

/// A running SATA disk on one AHCI port.
pub struct AhciDisk<R: Registers = Mmio> {
    regs: R,
    port: u8,
    /// Command list, received FIS and the command table.
    mem: dma::DmaRegion,
    bounce: dma::DmaRegion,
    clock: Clock,
    timeouts: Timeouts,
    identity: Identity,
    cache: Cache,
    /// Given up on (port stopped): every request fails.
    broken: bool,
}

/// One ATA command as it goes into the H2D register FIS.
#[derive(Clone, Copy, Debug)]
struct Ata {
    command: u8,
    features: u8,
    lba: u64,
    count: u16,
    device: u8,
    data: Data,
}

/// The command's data phase through the bounce buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    None,
    /// Device to memory, this many bytes.
    In(usize),
    /// Memory to device, this many bytes.
    Out(usize),
}

impl Ata {
    fn non_data(command: u8) -> Ata {
        Ata { command, features: 0, lba: 0, count: 0, device: 0, data: Data::None }
    }
}

impl<R: Registers> AhciDisk<R> {
    /// Stops the port, gives it its memory, checks the signature, starts it
    /// and identifies the device. `Ok(None)`: no ATA disk on this port. A
    /// port that fails is left stopped.
    fn bring_up(regs: R, port: u8, cap: u32, clock: Clock, timeouts: Timeouts) -> Result<Option<AhciDisk<R>>, Error> {
        let r = Self::bring_up_port(regs.clone(), port, cap, clock, timeouts);
        if r.is_err() {
            // Best effort: the error that matters is the first one.
            let _ = stop(&regs, port, &clock, &timeouts);
        }
        r
    }

    fn bring_up_port(regs: R, port: u8, cap: u32, clock: Clock, timeouts: Timeouts) -> Result<Option<AhciDisk<R>>, Error> {
        let reg = |r| port_reg(port, r);
        stop(&regs, port, &clock, &timeouts)?;
        let mem = alloc_pages(1).ok_or(Error::NoDmaMemory)?;
        if mem.len < PAGE {
            return Err(Error::NoDmaMemory);
        }
        let s64a = cap & hba::CAP_S64A != 0;
        let addressable = |phys: u64| -> Result<(), Error> {
            let end = phys.saturating_add(MAX_TRANSFER as u64);
            if !s64a && end > 1 << 32 {
                return Err(Error::DmaAbove4G { phys });
            }
            Ok(())
        };
        addressable(mem.phys)?;
        let clb = mem.phys + CMD_LIST as u64;
        let fb = mem.phys + RX_FIS as u64;
        regs.write(reg(px::CLB), clb as u32);
        regs.write(reg(px::CLBU), (clb >> 32) as u32);
        regs.write(reg(px::FB), fb as u32);
        regs.write(reg(px::FBU), (fb >> 32) as u32);
        let cmd = regs.read(reg(px::CMD));
        regs.write(reg(px::CMD), cmd | px::CMD_FRE);
        // The device's first D2H FIS carries its signature and clears BSY.
        let ready = || {
            let tfd = regs.read(reg(px::TFD));
            tfd & (px::TFD_BSY | px::TFD_DRQ) == 0 && regs.read(reg(px::SIG)) != sig::NONE
        };
        if !wait_until(&clock, timeouts.device_ready, ready) {
            return Err(Error::DeviceNotReady { port, tfd: regs.read(reg(px::TFD)), sig: regs.read(reg(px::SIG)) });
        }
        let signature = regs.read(reg(px::SIG));
        if signature != sig::ATA {
            let what = match signature {
                sig::ATAPI => "ATAPI device",
                sig::PORT_MULTIPLIER => "port multiplier",
                sig::SEMB => "enclosure bridge",
                _ => "unknown device",
            };
            info!("ahci: port {port}: {what} (signature {signature:#010x}) skipped");
            stop(&regs, port, &clock, &timeouts)?;
            return Ok(None);
        }
        let bounce = alloc_pages(BOUNCE_PAGES).ok_or(Error::NoDmaMemory)?;
        if bounce.len < MAX_TRANSFER {
            return Err(Error::NoDmaMemory);
        }
        addressable(bounce.phys)?;
        regs.write(reg(px::SERR), u32::MAX);
        regs.write(reg(px::IS), u32::MAX);
        let cmd = regs.read(reg(px::CMD));
        regs.write(reg(px::CMD), cmd | px::CMD_FRE | px::CMD_ST);

        let placeholder = Identity {
            sectors: 0,
            block_size: BlockSize::B512,
            write_cache: true,
            flush: None,
            model: AtaString { bytes: [0; 40], len: 0 },
            serial: AtaString { bytes: [0; 20], len: 0 },
        };
        let mut disk = AhciDisk { regs, port, mem, bounce, clock, timeouts, identity: placeholder, cache: Cache::Volatile, broken: false };
        disk.identity = disk.identify()?;
        disk.cache = disk.cache_mode()?;
        let id = &disk.identity;
        info!(
            "ahci: port {port}: \"{:?}\" serial \"{:?}\", {} KiB, {}-byte sectors, cache {:?}{}, polled",
            id.model,
            id.serial,
            id.sectors.saturating_mul(id.block_size.bytes() as u64) / 1024,
            id.block_size.bytes(),
            disk.cache,
            match id.flush {
                Some(ata::FLUSH_CACHE_EXT) => ", FLUSH CACHE EXT",
                Some(_) => ", FLUSH CACHE",
                None => "",
            }
        );
        Ok(Some(disk))
    }

    /// IDENTIFY DEVICE, parsed.
    fn identify(&mut self) -> Result<Identity, Error> {
        let mut ata = Ata::non_data(ata::IDENTIFY_DEVICE);
        ata.data = Data::In(IDENTIFY_BYTES);
        self.command(ata, self.timeouts.request)?;
        let mut id = [0u8; IDENTIFY_BYTES];
        id.copy_from_slice(self.bounce().get(..IDENTIFY_BYTES).ok_or(Error::BadLength)?);
        Identity::parse(&id)
    }

    /// Decides what a completed write means; a write cache that cannot be
    /// flushed is asked to turn itself off first.
    fn cache_mode(&mut self) -> Result<Cache, Error> {
        let id = self.identity;
        if !id.write_cache {
            return Ok(Cache::WriteThrough);
        }
        if id.flush.is_some() {
            return Ok(Cache::WriteBack);
        }
        let mut off = Ata::non_data(ata::SET_FEATURES);
        off.features = ata::FEATURE_WRITE_CACHE_OFF;
        match self.command(off, self.timeouts.request) {
            Ok(()) => {}
            // Refused (ABRT): the cache stays on and cannot be flushed.
            Err(Error::TaskFile { .. }) => return Ok(Cache::Volatile),
            Err(e) => return Err(e),
        }
        let again = self.identify()?;
        self.identity.write_cache = again.write_cache;
        Ok(if again.write_cache { Cache::Volatile } else { Cache::WriteThrough })
    }

    /// The logical block size.
    pub fn block_size(&self) -> BlockSize {
        self.identity.block_size
    }

    /// How many logical blocks the disk has.
    pub fn block_count(&self) -> u64 {
        self.identity.sectors
    }

    /// SATA disks are never reported read-only.
    pub fn read_only(&self) -> bool {
        false
    }

    /// What a completed write means.
    pub fn cache(&self) -> Cache {
        self.cache
    }

    /// The HBA port the disk hangs off.
    pub fn port(&self) -> u8 {
        self.port
    }

    /// What IDENTIFY DEVICE said.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether the port was given up on.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Reads `buf.len() / block_size` blocks from `lba`.
    pub fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Error> {
        let mut lba = self.check_range(lba, buf.len())?;
        let bs = self.identity.block_size.bytes();
        for chunk in buf.chunks_mut(MAX_TRANSFER) {
            self.transfer(ata::READ_DMA_EXT, lba, Data::In(chunk.len()))?;
            chunk.copy_from_slice(self.bounce().get(..chunk.len()).ok_or(Error::BadLength)?);
            lba += (chunk.len() / bs) as u64;
        }
        Ok(())
    }

    /// Writes `data.len() / block_size` blocks from `lba`. Accepted by the
    /// device when this returns `Ok`; durable after [`flush`](Self::flush).
    pub fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), Error> {
        let mut lba = self.check_range(lba, data.len())?;
        let bs = self.identity.block_size.bytes();
        for chunk in data.chunks(MAX_TRANSFER) {
            self.bounce().get_mut(..chunk.len()).ok_or(Error::BadLength)?.copy_from_slice(chunk);
            self.transfer(ata::WRITE_DMA_EXT, lba, Data::Out(chunk.len()))?;
            lba += (chunk.len() / bs) as u64;
        }
        Ok(())
    }

    /// Returns once every write completed so far is on the medium (see the
    /// module comment).
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        match (self.identity.flush, self.cache) {
            (Some(command), _) => self.command(Ata::non_data(command), self.timeouts.flush),
            (None, Cache::WriteThrough) => Ok(()),
            (None, Cache::WriteBack | Cache::Volatile) => Err(Error::NotDurable),
        }
    }

    /// Checks a transfer of `len` bytes from block `lba`; returns `lba`.
    fn check_range(&self, lba: u64, len: usize) -> Result<u64, Error> {
        let bs = self.identity.block_size.bytes();
        if len == 0 || !len.is_multiple_of(bs) {
            return Err(Error::BadLength);
        }
        let end = lba.checked_add((len / bs) as u64).ok_or(Error::OutOfRange)?;
        if end > self.identity.sectors {
            return Err(Error::OutOfRange);
        }
        Ok(lba)
    }

    /// One READ/WRITE DMA EXT of `data`'s bytes at `lba` (a whole number of
    /// blocks, at most [`MAX_TRANSFER`]).
    fn transfer(&mut self, command: u8, lba: u64, data: Data) -> Result<(), Error> {
        let len = match data {
            Data::In(n) | Data::Out(n) => n,
            Data::None => 0,
        };
        let count = u16::try_from(len / self.identity.block_size.bytes()).map_err(|_| Error::BadLength)?;
        let ata = Ata { command, features: 0, lba, count, device: ata::DEVICE_LBA, data };
        self.command(ata, self.timeouts.request)
    }

    fn bounce(&mut self) -> &mut [u8] {
        // SAFETY: the bounce region is this port's for the rest of the run
        // (at least MAX_TRANSFER bytes, checked at bring-up); the HBA only
        // touches it while a command is issued inside `command`, or — after
        // a timeout — a port that is broken, whose buffer nobody reads.
        unsafe { core::slice::from_raw_parts_mut(self.bounce.ptr.as_ptr(), MAX_TRANSFER.min(self.bounce.len)) }
    }

    /// Writes `value` at `offset` of the port page.
    fn mem_write(&self, offset: usize, value: u32) {
        if offset.is_multiple_of(4) && offset.checked_add(4).is_some_and(|end| end <= self.mem.len) {
            // SAFETY: aligned and inside the port page (checked above), which
            // is this driver's; the HBA reads it only while a command runs.
            unsafe { self.mem.ptr.as_ptr().add(offset).cast::<u32>().write_volatile(value) }
        }
    }

    /// Reads the `u32` at `offset` of the port page (0 outside it).
    fn mem_read(&self, offset: usize) -> u32 {
        if offset.is_multiple_of(4) && offset.checked_add(4).is_some_and(|end| end <= self.mem.len) {
            // SAFETY: as in `mem_write`; volatile: the HBA writes it.
            unsafe { self.mem.ptr.as_ptr().add(offset).cast::<u32>().read_volatile() }
        } else {
            0
        }
    }

    fn reg(&self, r: usize) -> usize {
        port_reg(self.port, r)
    }

    /// Issues `ata` in slot 0 and waits for it, at most `timeout_ns`.
    fn command(&mut self, ata: Ata, timeout_ns: u64) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        let (len, write) = match ata.data {
            Data::None => (0, false),
            Data::In(n) => (n, false),
            Data::Out(n) => (n, true),
        };
        // A PRD's byte count must be even and the data fit the bounce buffer.
        if ata.data != Data::None && (len == 0 || !len.is_multiple_of(2) || len > MAX_TRANSFER.min(self.bounce.len)) {
            return Err(Error::BadLength);
        }
        let len32 = u32::try_from(len).map_err(|_| Error::BadLength)?;

        // The command FIS (§4.2.3.1, SATA 10.5.5), then the PRDT entry.
        let lba = ata.lba.to_le_bytes();
        let count = ata.count.to_le_bytes();
        let fis = [
            [FIS_H2D, FIS_C, ata.command, ata.features],
            [lba[0], lba[1], lba[2], ata.device],
            [lba[3], lba[4], lba[5], 0],
            [count[0], count[1], 0, 0],
            [0; 4],
        ];
        for i in 0..16 {
            let dw = fis.get(i).map_or(0, |b| u32::from_le_bytes(*b));
            self.mem_write(CMD_TABLE + 4 * i, dw);
        }
        let prdtl = if ata.data == Data::None { 0 } else { 1 };
        self.mem_write(CMD_TABLE + PRDT, self.bounce.phys as u32);
        self.mem_write(CMD_TABLE + PRDT + 4, (self.bounce.phys >> 32) as u32);
        self.mem_write(CMD_TABLE + PRDT + 8, 0);
        // DBC is the byte count minus one; interrupt-on-completion off.
        self.mem_write(CMD_TABLE + PRDT + 12, len32.saturating_sub(1));
        // Command header 0 (§4.2.2): PRDBC zeroed, so what the HBA reports
        // is this command's count alone.
        let table = self.mem.phys + CMD_TABLE as u64;
        self.mem_write(CMD_LIST, HDR_CFL_H2D | if write { HDR_W } else { 0 } | prdtl << HDR_PRDTL_SHIFT);
        self.mem_write(CMD_LIST + 4, 0);
        self.mem_write(CMD_LIST + 8, table as u32);
        self.mem_write(CMD_LIST + 12, (table >> 32) as u32);
        for i in 4..8 {
            self.mem_write(CMD_LIST + 4 * i, 0);
        }

        self.regs.write(self.reg(px::IS), u32::MAX);
        // The command table must be in memory before the HBA is told.
        fence(Ordering::Release);
        self.regs.write(self.reg(px::CI), 1);

        let start = self.clock.now_ns();
        loop {
            let is = self.regs.read(self.reg(px::IS));
            if is & px::IS_FATAL != 0 {
                return Err(self.give_up(Error::Interface { is }));
            }
            if is & px::IS_TFES != 0 {
                return Err(self.task_file_error());
            }
            if self.regs.read(self.reg(px::CI)) & 1 == 0 {
                break;
            }
            if self.clock.now_ns().saturating_sub(start) > timeout_ns {
                return Err(self.give_up(Error::Timeout));
            }
            core::hint::spin_loop();
        }
        fence(Ordering::Acquire);
        let tfd = self.regs.read(self.reg(px::TFD));
        if tfd & (px::TFD_ERR | px::TFD_DF) != 0 {
            return Err(self.task_file_error());
        }
        let got = self.mem_read(CMD_LIST + 4);
        if got > len32 {
            // The HBA claims it moved more than the PRDT allowed.
            return Err(self.give_up(Error::ByteCount { expected: len32, got }));
        }
        if matches!(ata.data, Data::In(_)) && got != len32 {
            // A read the HBA does not vouch for in full.
            return Err(Error::ByteCount { expected: len32, got });
        }
        Ok(())
    }

    /// The device failed a command: reads why, recovers the port (§6.2.2.1)
    /// and returns the error; a port that does not recover is given up on.
    fn task_file_error(&mut self) -> Error {
        let tfd = self.regs.read(self.reg(px::TFD));
        let e = Error::TaskFile { status: tfd as u8, error: (tfd >> 8) as u8 };
        warn!(
            "ahci: port {}: {e:?} (PxIS {:#x}, PxSERR {:#x})",
            self.port,
            self.regs.read(self.reg(px::IS)),
            self.regs.read(self.reg(px::SERR))
        );
        match self.recover() {
            Ok(()) => e,
            Err(why) => {
                warn!("ahci: port {}: recovery failed: {why:?}", self.port);
                self.give_up(e)
            }
        }
    }

    /// ST off (the HBA drops the failed command), errors cleared, COMRESET if
    /// the device still holds BSY or DRQ, ST on.
    fn recover(&mut self) -> Result<(), Error> {
        let (regs, port, clock, t) = (&self.regs, self.port, &self.clock, &self.timeouts);
        let reg = |r| port_reg(port, r);
        let cmd = regs.read(reg(px::CMD));
        regs.write(reg(px::CMD), cmd & !px::CMD_ST);
        if !wait_until(clock, t.port_stop, || regs.read(reg(px::CMD)) & px::CMD_CR == 0) {
            return Err(Error::PortStopTimeout { port, cmd: regs.read(reg(px::CMD)) });
        }
        regs.write(reg(px::SERR), u32::MAX);
        regs.write(reg(px::IS), u32::MAX);
        if regs.read(reg(px::TFD)) & (px::TFD_BSY | px::TFD_DRQ) != 0 {
            comreset(regs, port, clock, t)?;
        }
        let cmd = regs.read(reg(px::CMD));
        regs.write(reg(px::CMD), cmd | px::CMD_ST);
        Ok(())
    }

    /// Stops the port so the HBA no longer touches this disk's memory, and
    /// refuses every later request. Returns `e`.
    fn give_up(&mut self, e: Error) -> Error {
        warn!("ahci: port {}: {e:?}: port stopped, no further requests", self.port);
        self.broken = true;
        if let Err(why) = stop(&self.regs, self.port, &self.clock, &self.timeouts) {
            warn!("ahci: port {}: {why:?}", self.port);
        }
        e
    }
}

/// Clears ST and FRE and waits for CR and FR to follow (§10.3.2).
fn stop<R: Registers>(regs: &R, port: u8, clock: &Clock, t: &Timeouts) -> Result<(), Error> {
    let reg = |r| port_reg(port, r);
    let cmd = regs.read(reg(px::CMD));
    if cmd & px::CMD_ST != 0 {
        regs.write(reg(px::CMD), cmd & !px::CMD_ST);
    }
    if !wait_until(clock, t.port_stop, || regs.read(reg(px::CMD)) & px::CMD_CR == 0) {
        return Err(Error::PortStopTimeout { port, cmd: regs.read(reg(px::CMD)) });
    }
    let cmd = regs.read(reg(px::CMD));
    if cmd & px::CMD_FRE != 0 {
        regs.write(reg(px::CMD), cmd & !px::CMD_FRE);
    }
    if !wait_until(clock, t.port_stop, || regs.read(reg(px::CMD)) & px::CMD_FR == 0) {
        return Err(Error::PortStopTimeout { port, cmd: regs.read(reg(px::CMD)) });
    }
    Ok(())
}

/// COMRESET (§10.4.2): DET = 1 for at least 1 ms, DET = 0, then waits for the
/// link and for the device to clear BSY/DRQ.
fn comreset<R: Registers>(regs: &R, port: u8, clock: &Clock, t: &Timeouts) -> Result<(), Error> {
    let reg = |r| port_reg(port, r);
    let sctl = regs.read(reg(px::SCTL)) & !px::DET_MASK;
    regs.write(reg(px::SCTL), sctl | px::SCTL_DET_COMRESET);
    wait_until(clock, 2 * MS, || false);
    regs.write(reg(px::SCTL), sctl);
    let ready = wait_until(clock, t.link_up, || regs.read(reg(px::SSTS)) & px::DET_MASK == px::DET_UP) && {
        regs.write(reg(px::SERR), u32::MAX);
        wait_until(clock, t.device_ready, || regs.read(reg(px::TFD)) & (px::TFD_BSY | px::TFD_DRQ) == 0)
    };
    if !ready {
        return Err(Error::DeviceNotReady { port, tfd: regs.read(reg(px::TFD)), sig: regs.read(reg(px::SIG)) });
    }
    regs.write(reg(px::IS), u32::MAX);
    Ok(())
}

impl<R: Registers> BlockDevice for AhciDisk<R> {
    fn block_size(&self) -> BlockSize {
        self.identity.block_size
    }
    fn block_count(&self) -> u64 {
        self.identity.sectors
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        AhciDisk::read(self, lba, buf).map_err(|e| e.block_error())
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        AhciDisk::write(self, lba, data).map_err(|e| e.block_error())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        AhciDisk::flush(self).map_err(|e| e.block_error())
    }
}

#[cfg(test)]
#[path = "ahci_tests.rs"]
mod tests;

//! NVMe over PCI, polled: namespace 1 of one controller, one command at a
//! time, through a bounce buffer, with every completion checked.
//!
//! Written from the NVM Express Base Specification (1.4 / 2.0; section
//! names below) for QEMU's `-device nvme` and the NVMe SSDs of mini-PCs.
//! The structures it speaks (CAP, queue entries, identify pages) are pure
//! code in `nvme_spec.rs`; this file is the controller and its queues.
//!
//! What this driver does:
//!
//! - **Polled, interrupts off.** PCI INTx is disabled, MSI/MSI-X are never
//!   set up, and the I/O completion queue is created with IEN=0. A command is
//!   written to its submission queue, the tail doorbell rung, and the driver
//!   spins on the phase tag of the next completion-queue entry until it flips
//!   or [`COMMAND_TIMEOUT_MS`] passes (CSTS.CFS is read every
//!   [`CSTS_POLL_EVERY`] spins, so a controller that died fails fast).
//! - **Queues.** One admin pair and one I/O pair, each [`QUEUE_DEPTH`] deep
//!   (or less if CAP.MQES says so), physically contiguous (PC=1), each queue
//!   in its own page of the DMA pool. Only one command is ever in flight, so
//!   the submission queue can never fill and a completion has exactly one
//!   command it may belong to.
//! - **Driver-owned DMA memory.** Data moves through a [`BOUNCE`]-byte
//!   (32 KiB) bounce buffer: PRP1 is its first page, PRP2 its second page for
//!   a two-page transfer, or a PRP list (built once at bring-up: the bounce
//!   pages never move) for three to eight pages. Transfers are split to
//!   MDTS and to the bounce size. The caller's buffers never reach the
//!   device, so a controller that finishes late cannot write into them.
//! - **Every completion checked**: its command identifier, its submission
//!   queue id, its SQ head (with one command in flight it must be exactly our
//!   tail), and its status (SCT/SC). A non-zero status fails that command
//!   only ([`Error::Status`]). A timeout, CSTS.CFS, or a completion that
//!   breaks the protocol disables the controller (CC.EN=0: it stops touching
//!   memory) and every later request fails with [`Error::Broken`].
//! - **Nothing read from the device is trusted**: CAP fields are checked
//!   (NVM command set, 4 KiB pages, doorbells inside the BAR), identify data
//!   is parsed with bounds (namespace 1 active, 512- or 4096-byte blocks
//!   without metadata, MDTS), and a controller without a usable namespace 1
//!   is reported, not panicked on.
//! - **Durability** (the contract of `BlockDevice::flush`): when Identify
//!   Controller's VWC says a volatile write cache is present, `flush` sends
//!   the NVM Flush command and succeeds only on its success status; without
//!   one a completed write is already on the medium, and `flush` returns `Ok`
//!   without a command.
//!
//! # Registers (NVMe Base, "Controller Registers")
//!
//! | Offset | Register | Fields used |
//! |--------|----------|-------------|
//! | 0x00 | CAP   | MQES (15:0), CQR (16), TO (31:24, 500 ms units), DSTRD (35:32), CSS (44:37, bit 37 = NVM), MPSMIN (51:48) |
//! | 0x08 | VS    | major (31:16), minor (15:8) for the log |
//! | 0x14 | CC    | EN (0), CSS (6:4) = 0 NVM, MPS (10:7) = 0 (4 KiB), AMS (13:11) = 0, SHN (15:14) = 0, IOSQES (19:16) = 6, IOCQES (23:20) = 4 |
//! | 0x1C | CSTS  | RDY (0), CFS (1) |
//! | 0x24 | AQA   | ASQS (11:0), ACQS (27:16), 0-based |
//! | 0x28 | ASQ   | admin submission queue base (page aligned) |
//! | 0x30 | ACQ   | admin completion queue base (page aligned) |
//! | 0x1000 + (2y) × (4 << DSTRD) | SQyTDBL | submission queue y tail |
//! | 0x1000 + (2y + 1) × (4 << DSTRD) | CQyHDBL | completion queue y head |
//!
//! 64-bit registers are accessed as two 32-bit halves, low first, which the
//! specification allows and QEMU implements.
//!
//! # Memory ordering
//! As in the e1000e driver: x86 keeps device writes to memory coherent and
//! in order, and uncached MMIO writes are not reordered with earlier stores.
//! `fence(Release)` before a doorbell keeps the entry's stores before it;
//! `fence(Acquire)` after seeing the phase tag keeps the rest of the entry
//! (and the bounce buffer) read after it.

use super::{BlockDevice, BlockError, BlockSize};
use crate::clock::Clock;
use crate::dma::{self, IdentityHal};
pub use crate::mmio::Mmio;
use crate::pci::Device;
use core::sync::atomic::{fence, Ordering};
use log::{info, warn};
use virtio_drivers::transport::pci::bus::{BarInfo, Command as PciCommand, ConfigurationAccess, PciRoot};
use virtio_drivers::Hal;

#[path = "nvme_spec.rs"]
mod spec;
use spec::{cc, cns, csts, reg, FEATURE_NUMBER_OF_QUEUES};
pub use spec::{opcode, Capabilities, Command, Completion, ControllerInfo, NamespaceInfo, Status, Text};

/// PCI class, subclass and programming interface of an NVMe controller
/// (mass storage, non-volatile memory controller, NVM Express).
pub const CLASS_MASS_STORAGE: u8 = 0x01;
pub const SUBCLASS_NVM: u8 = 0x08;
pub const PROG_IF_NVME: u8 = 0x02;

/// Whether `dev` is an NVMe controller (any vendor).
pub fn is_nvme(dev: &Device) -> bool {
    dev.info.class == CLASS_MASS_STORAGE && dev.info.subclass == SUBCLASS_NVM && dev.info.prog_if == PROG_IF_NVME
}

/// How long one command may take before the controller is given up on
/// (Linux's default NVMe I/O timeout).
pub const COMMAND_TIMEOUT_MS: u64 = 30_000;
/// Spins on a completion between two reads of CSTS (an MMIO read, which
/// costs a VM exit under a hypervisor).
pub const CSTS_POLL_EVERY: u32 = 4096;
/// Entries per queue (fewer if CAP.MQES allows fewer). One command is in
/// flight at a time; the depth only has to be legal.
pub const QUEUE_DEPTH: u16 = 8;

/// The only namespace this driver uses.
const NSID: u32 = 1;
/// The memory page size the controller is set to (CC.MPS = 0).
const PAGE: usize = 4096;
/// The bounce buffer: the largest transfer in one command.
const BOUNCE_PAGES: usize = 8;
pub const BOUNCE: usize = BOUNCE_PAGES * PAGE;
/// Submission and completion queue entry sizes (CC.IOSQES = 6, IOCQES = 4).
const SQE: usize = 64;
const CQE: usize = 16;
const SQES_LOG2: u32 = 6;
const CQES_LOG2: u32 = 4;
/// The register window must reach past the doorbells of queues 0 and 1.
const DOORBELLS: usize = 0x1000;
// A queue fits its page, and is a legal queue (at least two entries).
const _: () = assert!(QUEUE_DEPTH >= 2 && QUEUE_DEPTH as usize <= PAGE / SQE);

/// What a completed write means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// No volatile write cache (VWC bit 0 clear): a completed write is on
    /// the medium.
    WriteThrough,
    /// A volatile write cache, emptied by the Flush command.
    WriteBack,
}

#[derive(Debug)]
pub enum Error {
    // Bring-up.
    /// BAR0 is not a memory BAR of at least the register page.
    NoRegisterWindow,
    /// BAR0 lies above the identity map.
    BarNotMapped { address: u64 },
    /// CAP reads as all ones: the function does not answer.
    NotResponding,
    /// The doorbells of queues 0 and 1 (at stride `4 << DSTRD`) lie beyond
    /// the register window.
    DoorbellsOutsideWindow { stride: usize, window: usize },
    /// CAP.CSS lacks the NVM command set.
    NoNvmCommandSet { css: u8 },
    /// CAP.MPSMIN above 4 KiB pages.
    PageSizeUnsupported { mpsmin: u8 },
    /// CAP.MQES below 1 (queues of at least two entries are required).
    QueueSizeInvalid { mqes: u16 },
    /// The DMA pool has no room for the queues and the bounce buffer.
    NoDmaMemory,
    /// CSTS.RDY did not clear within CAP.TO after CC.EN was cleared.
    DisableTimeout,
    /// CSTS.RDY did not set within CAP.TO after CC.EN was set.
    ReadyTimeout,
    /// CSTS.CFS: the controller reported a fatal error.
    ControllerFatal,
    /// Identify Controller's SQES/CQES exclude 64-byte / 16-byte entries.
    EntrySizeUnsupported { sqes: u8, cqes: u8 },
    /// Namespace 1 does not exist or is not active (NN 0, Invalid
    /// Namespace, or NSZE 0).
    NoNamespace { nn: u32 },
    /// FLBAS names a format beyond NLBAF.
    FormatIndex { index: u8, formats: u8 },
    /// The namespace's format carries metadata, which this driver does not
    /// transfer.
    MetadataFormat { index: u8, metadata_bytes: u16 },
    /// A data size other than 512 or 4096 bytes (2^LBADS).
    UnsupportedBlockSize { index: u8, lbads: u8 },

    // Requests.
    /// The request reaches past the last block (nothing was sent).
    OutOfRange,
    /// The buffer is empty or not a whole number of blocks (nothing sent).
    BadLength,
    /// A write to a write-protected namespace (nothing was sent).
    ReadOnly,
    /// The controller completed the command with this status.
    Status(Status),
    /// The command did not complete in time; the controller was disabled.
    Timeout,
    /// A completion for another command identifier; the controller was
    /// disabled.
    WrongCommandId { expected: u16, got: u16 },
    /// A completion naming another submission queue; disabled.
    WrongQueue { expected: u16, got: u16 },
    /// A completion whose SQ head is not just past the one command in
    /// flight; disabled.
    WrongSqHead { expected: u16, got: u16 },
    /// The controller was given up on earlier (disabled): no more requests.
    Broken,
}

impl Error {
    /// The error as the block-device interface reports it.
    pub fn block_error(&self) -> BlockError {
        match self {
            Error::OutOfRange => BlockError::OutOfRange,
            Error::BadLength => BlockError::BadLength,
            Error::ReadOnly => BlockError::ReadOnly,
            _ => BlockError::Io,
        }
    }
}

// ---------------------------------------------------------------------------
// Register window

/// The controller's registers as the driver uses them: 32-bit accesses at
/// byte offsets. The image implements it over BAR0 ([`Mmio`]); the host
/// tests over a fake controller that acts on doorbell writes.
pub trait Registers {
    /// Bytes in the window.
    fn window(&self) -> usize;
    fn read32(&self, offset: usize) -> u32;
    fn write32(&mut self, offset: usize, value: u32);
}

/// BAR0 (outside it reads give all ones, as from a function that does not
/// answer, and writes are dropped).
impl Registers for Mmio {
    fn window(&self) -> usize {
        Mmio::window(self)
    }

    fn read32(&self, offset: usize) -> u32 {
        Mmio::read32(self, offset).unwrap_or(u32::MAX)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        let _ = Mmio::write32(self, offset, value);
    }
}

fn read64<R: Registers>(regs: &R, offset: usize) -> u64 {
    u64::from(regs.read32(offset)) | u64::from(regs.read32(offset + 4)) << 32
}

fn write64<R: Registers>(regs: &mut R, offset: usize, value: u64) {
    regs.write32(offset, value as u32);
    regs.write32(offset + 4, (value >> 32) as u32);
}

// ---------------------------------------------------------------------------
// Queues

/// One submission/completion queue pair (same id), each in its own page.
struct Queue {
    id: u16,
    depth: u16,
    sq: dma::DmaRegion,
    cq: dma::DmaRegion,
    sq_doorbell: usize,
    cq_doorbell: usize,
    sq_tail: u16,
    cq_head: u16,
    /// The phase tag the next new completion carries (1 on the first pass).
    phase: bool,
}

impl Queue {
    fn new(id: u16, depth: u16, cap: &Capabilities) -> Result<Queue, Error> {
        let (sq_doorbell, cq_doorbell) = cap.doorbells(id).ok_or(Error::NoRegisterWindow)?;
        let sq = alloc_pages(1).ok_or(Error::NoDmaMemory)?;
        let cq = alloc_pages(1).ok_or(Error::NoDmaMemory)?;
        Ok(Queue { id, depth, sq, cq, sq_doorbell, cq_doorbell, sq_tail: 0, cq_head: 0, phase: true })
    }

    /// Back to the state after a controller reset: empty, phase 1, and the
    /// completion page zeroed so no old entry carries the phase tag.
    fn clear(&mut self) {
        // SAFETY: our page; the controller is disabled (or not yet
        // enabled), so it does not write to it.
        unsafe { core::ptr::write_bytes(self.cq.ptr.as_ptr(), 0, self.cq.len) };
        self.sq_tail = 0;
        self.cq_head = 0;
        self.phase = true;
    }

    /// Writes `entry` at the tail and rings the tail doorbell.
    fn submit<R: Registers>(&mut self, regs: &mut R, entry: &[u32; 16]) {
        let at = usize::from(self.sq_tail) * SQE;
        // SAFETY: sq_tail < depth ≤ PAGE / SQE (`depth` is clamped at
        // bring-up), so the entry lies in our submission page, which the
        // controller only reads past the tail we publish below.
        unsafe {
            let p = self.sq.ptr.as_ptr().add(at).cast::<u32>();
            for (i, &dw) in entry.iter().enumerate() {
                p.add(i).write_volatile(dw);
            }
        }
        self.sq_tail = (self.sq_tail + 1) % self.depth;
        fence(Ordering::Release);
        regs.write32(self.sq_doorbell, u32::from(self.sq_tail));
    }

    /// The completion at the head, if the controller has posted it.
    fn peek(&self) -> Option<Completion> {
        let at = usize::from(self.cq_head) * CQE;
        // SAFETY: cq_head < depth ≤ PAGE / CQE, inside our completion page.
        // Volatile: the controller writes it behind the compiler's back.
        let p = unsafe { self.cq.ptr.as_ptr().add(at).cast::<u32>() };
        // SAFETY: as above; dword 3 holds the phase tag.
        let dw3 = unsafe { p.add(3).read_volatile() };
        if (dw3 & (1 << 16) != 0) != self.phase {
            return None;
        }
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let (dw0, dw2) = unsafe { (p.read_volatile(), p.add(2).read_volatile()) };
        Some(Completion::from_dwords(dw0, dw2, dw3))
    }

    /// Hands the head entry back to the controller.
    fn consume<R: Registers>(&mut self, regs: &mut R) {
        self.cq_head += 1;
        if self.cq_head == self.depth {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        regs.write32(self.cq_doorbell, u32::from(self.cq_head));
    }
}

/// Where queues and the bounce buffer come from: the image's DMA pool. The
/// host tests take them from the heap (the pool is one static shared by
/// every driver test in the process); the driver code is the same.
#[cfg(not(test))]
fn alloc_pages(pages: usize) -> Option<dma::DmaRegion> {
    dma::alloc_pages(pages)
}
#[cfg(test)]
use tests::heap_pages as alloc_pages;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Admin,
    Io,
}

// ---------------------------------------------------------------------------
// The driver

/// Namespace 1 of a running NVMe controller (over BAR0 in the image; a fake
/// register window in the host tests).
pub struct NvmeDisk<R: Registers = Mmio> {
    regs: R,
    clock: Clock,
    timeout_ns: u64,
    ready_timeout_ns: u64,
    admin: Queue,
    io: Queue,
    bounce: dma::DmaRegion,
    /// PRP list for transfers of three or more pages: the bounce buffer's
    /// pages 1.. (fixed, so written once).
    prp_list: dma::DmaRegion,
    next_cid: u16,
    controller: Option<ControllerInfo>,
    blocks: u64,
    block_size: BlockSize,
    /// Bytes per command: a multiple of the block size, at most [`BOUNCE`].
    max_transfer: usize,
    read_only: bool,
    /// Given up on (disabled): every request fails.
    broken: bool,
}

impl NvmeDisk<Mmio> {
    /// Enables the function on the bus, resets the controller and brings
    /// namespace 1 up. Reads identify data only; nothing is written to the
    /// medium. `clock` times every wait.
    pub fn new<C: ConfigurationAccess>(root: &mut PciRoot<C>, dev: &Device, clock: Clock) -> Result<NvmeDisk, Error> {
        let df = dev.address;
        let (address, size) = match root.bar_info(df, 0) {
            Ok(Some(BarInfo::Memory { address, size, .. })) => (address, size),
            _ => return Err(Error::NoRegisterWindow),
        };
        let window = usize::try_from(size).map_err(|_| Error::NoRegisterWindow)?;
        if address == 0 || window < DOORBELLS {
            return Err(Error::NoRegisterWindow);
        }
        // A BAR above what the boot code mapped cannot be reached.
        if !crate::paging::reach(address, size) {
            return Err(Error::BarNotMapped { address });
        }
        let (_, command) = root.get_status_command(df);
        // The controller reads and writes the queues itself (bus master);
        // INTx off because nothing takes interrupts.
        root.set_command(df, command | PciCommand::MEMORY_SPACE | PciCommand::BUS_MASTER | PciCommand::INTERRUPT_DISABLE);
        // SAFETY: BAR0 of an NVMe controller is its register window; the
        // image is identity mapped there (checked above).
        let base = unsafe { <IdentityHal as Hal>::mmio_phys_to_virt(address, window) };
        // SAFETY: `base..base + window` is the BAR just read, owned by this
        // driver from now on (probe hands each function to one driver).
        let regs = unsafe { Mmio::new(base, window) };
        NvmeDisk::start(regs, clock)
    }
}

impl<R: Registers> NvmeDisk<R> {
    /// Controller initialisation ("Initialization" in the Base
    /// specification) over a register window.
    fn start(regs: R, clock: Clock) -> Result<NvmeDisk<R>, Error> {
        let cap = Capabilities::parse(read64(&regs, reg::CAP))?;
        let needed = cap.doorbells(1).and_then(|(_, cq)| cq.checked_add(4));
        if needed.is_none_or(|n| n > regs.window()) {
            return Err(Error::DoorbellsOutsideWindow { stride: cap.doorbell_stride, window: regs.window() });
        }
        let depth = QUEUE_DEPTH.min(u16::try_from(cap.max_entries).unwrap_or(u16::MAX));
        // Memory first: if the pool is short, the controller stays untouched.
        let admin = Queue::new(0, depth, &cap)?;
        let io = Queue::new(1, depth, &cap)?;
        let bounce = alloc_pages(BOUNCE_PAGES).ok_or(Error::NoDmaMemory)?;
        let prp_list = alloc_pages(1).ok_or(Error::NoDmaMemory)?;
        if bounce.len < BOUNCE || prp_list.len < PAGE || admin.sq.len < PAGE || admin.cq.len < PAGE {
            return Err(Error::NoDmaMemory);
        }
        let mut disk = NvmeDisk {
            regs,
            clock,
            timeout_ns: COMMAND_TIMEOUT_MS * 1_000_000,
            ready_timeout_ns: cap.ready_timeout_ms * 1_000_000,
            admin,
            io,
            bounce,
            prp_list,
            next_cid: 0,
            controller: None,
            blocks: 0,
            block_size: BlockSize::B512,
            max_transfer: PAGE,
            read_only: false,
            broken: false,
        };
        disk.write_prp_list();
        match disk.bring_up() {
            Ok(()) => Ok(disk),
            Err(e) => {
                // Whatever was set up, the controller stops using our memory.
                if !disk.broken && !matches!(e, Error::DisableTimeout) {
                    let _ = disk.disable(false);
                }
                Err(e)
            }
        }
    }

    /// Entries 0..7 of the PRP list: pages 1..8 of the bounce buffer.
    fn write_prp_list(&mut self) {
        for i in 1..BOUNCE_PAGES {
            let addr = self.bounce.phys + (i * PAGE) as u64;
            // SAFETY: entry i - 1 of our PRP list page (7 × 8 bytes of 4096);
            // the controller only reads it during a command.
            unsafe { self.prp_list.ptr.as_ptr().cast::<u64>().add(i - 1).write_volatile(addr.to_le()) };
        }
    }

    fn bring_up(&mut self) -> Result<(), Error> {
        self.disable(true)?;
        self.admin.clear();
        self.io.clear();
        let depth = u32::from(self.admin.depth) - 1;
        self.regs.write32(reg::AQA, depth << 16 | depth);
        write64(&mut self.regs, reg::ASQ, self.admin.sq.phys);
        write64(&mut self.regs, reg::ACQ, self.admin.cq.phys);
        self.regs.write32(reg::CC, cc::CONFIG);
        self.regs.write32(reg::CC, cc::CONFIG | cc::EN);
        self.wait_ready(true)?;

        let ctrl = ControllerInfo::parse(self.identify(cns::CONTROLLER, 0)?)?;
        self.controller = Some(ctrl);
        if ctrl.nn < NSID {
            return Err(Error::NoNamespace { nn: ctrl.nn });
        }
        let ns = match self.identify(cns::NAMESPACE, NSID) {
            Ok(page) => NamespaceInfo::parse(page, ctrl.nn)?,
            Err(Error::Status(Status::INVALID_NAMESPACE)) => return Err(Error::NoNamespace { nn: ctrl.nn }),
            Err(e) => return Err(e),
        };
        self.blocks = ns.blocks;
        self.block_size = ns.block_size;
        self.read_only = ns.write_protected;
        self.max_transfer = ctrl.max_transfer(ns.block_size);

        // One I/O queue pair (0-based counts). Controllers that predate the
        // feature or refuse it still have at least one pair.
        if let Err(e) =
            self.execute(Which::Admin, &Command { opcode: opcode::SET_FEATURES, cdw10: FEATURE_NUMBER_OF_QUEUES, ..Command::default() })
        {
            if self.broken {
                return Err(e);
            }
            warn!("nvme: Set Features (number of queues) refused: {e:?}; using queue 1 anyway");
        }
        let qsize = u32::from(self.io.depth) - 1;
        // Physically contiguous (PC), interrupts off (IEN = 0), vector 0.
        let create_cq =
            Command { opcode: opcode::CREATE_IO_CQ, prp1: self.io.cq.phys, cdw10: qsize << 16 | 1, cdw11: 1, ..Command::default() };
        self.execute(Which::Admin, &create_cq)?;
        // Contiguous, on completion queue 1, priority ignored (round robin).
        let create_sq = Command {
            opcode: opcode::CREATE_IO_SQ,
            prp1: self.io.sq.phys,
            cdw10: qsize << 16 | 1,
            cdw11: 1 << 16 | 1,
            ..Command::default()
        };
        self.execute(Which::Admin, &create_sq)?;

        let vs = self.regs.read32(reg::VS);
        info!(
            "nvme: {:?} (serial {:?}, firmware {:?}), NVMe {}.{}, namespace 1: {} blocks of {} bytes{}, {} KiB per command, cache {:?}, polled",
            ctrl.model,
            ctrl.serial,
            ctrl.firmware,
            vs >> 16,
            (vs >> 8) & 0xff,
            ns.blocks,
            ns.block_size.bytes(),
            if ns.write_protected { ", write protected" } else { "" },
            self.max_transfer / 1024,
            self.cache()
        );
        Ok(())
    }

    /// Clears CC.EN (a controller reset: queues deleted, DMA stopped) and
    /// waits for CSTS.RDY to clear. `let_enable_finish`: a controller found
    /// mid-enable (EN set, RDY not yet) is first given CAP.TO to finish —
    /// some misbehave when EN is cleared then — which is pointless when this
    /// driver just watched it fail to.
    fn disable(&mut self, let_enable_finish: bool) -> Result<(), Error> {
        let c = self.regs.read32(reg::CC);
        let s = self.regs.read32(reg::CSTS);
        if let_enable_finish && c & cc::EN != 0 && s & csts::RDY == 0 && s != u32::MAX {
            let _ = self.wait_ready(true);
        }
        self.regs.write32(reg::CC, c & !cc::EN);
        self.wait_ready(false)
    }

    /// Waits, bounded by CAP.TO, for CSTS.RDY to read `ready`. A fatal
    /// status fails the wait for ready; it does not stop a disable.
    fn wait_ready(&self, ready: bool) -> Result<(), Error> {
        let start = self.clock.now_ns();
        loop {
            let s = self.regs.read32(reg::CSTS);
            if ready && s & csts::CFS != 0 {
                return Err(Error::ControllerFatal);
            }
            if (s & csts::RDY != 0) == ready && s != u32::MAX {
                return Ok(());
            }
            if self.clock.now_ns().saturating_sub(start) > self.ready_timeout_ns {
                return Err(if ready { Error::ReadyTimeout } else { Error::DisableTimeout });
            }
            core::hint::spin_loop();
        }
    }

    /// Identify into the bounce buffer's first page; returns it.
    fn identify(&mut self, cns: u32, nsid: u32) -> Result<&[u8], Error> {
        self.execute(Which::Admin, &Command { opcode: opcode::IDENTIFY, nsid, prp1: self.bounce.phys, cdw10: cns, ..Command::default() })?;
        Ok(self.bounce().get(..PAGE).unwrap_or(&[]))
    }

    /// Sends one command, waits for its completion and checks it. Returns
    /// the completion's Dword 0.
    fn execute(&mut self, which: Which, cmd: &Command) -> Result<u32, Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        let cid = self.next_cid;
        // FFFFh is reserved (it means "no command" in the error log).
        self.next_cid = match cid.wrapping_add(1) {
            0xffff => 0,
            n => n,
        };
        let entry = cmd.entry(cid);
        let (regs, q) = match which {
            Which::Admin => (&mut self.regs, &mut self.admin),
            Which::Io => (&mut self.regs, &mut self.io),
        };
        q.submit(regs, &entry);
        let (qid, expected_head) = (q.id, q.sq_tail);

        let start = self.clock.now_ns();
        let mut spins = 0u32;
        let done = loop {
            let q = match which {
                Which::Admin => &self.admin,
                Which::Io => &self.io,
            };
            if let Some(c) = q.peek() {
                break c;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(CSTS_POLL_EVERY) && self.regs.read32(reg::CSTS) & csts::CFS != 0 {
                return Err(self.give_up(Error::ControllerFatal));
            }
            if self.clock.now_ns().saturating_sub(start) > self.timeout_ns {
                let fatal = self.regs.read32(reg::CSTS) & csts::CFS != 0;
                return Err(self.give_up(if fatal { Error::ControllerFatal } else { Error::Timeout }));
            }
            core::hint::spin_loop();
        };
        // Taken off the queue whatever it says, so the head moves on.
        match which {
            Which::Admin => self.admin.consume(&mut self.regs),
            Which::Io => self.io.consume(&mut self.regs),
        }
        if done.cid != cid {
            return Err(self.give_up(Error::WrongCommandId { expected: cid, got: done.cid }));
        }
        if done.sq_id != qid {
            return Err(self.give_up(Error::WrongQueue { expected: qid, got: done.sq_id }));
        }
        if done.sq_head != expected_head {
            return Err(self.give_up(Error::WrongSqHead { expected: expected_head, got: done.sq_head }));
        }
        if !done.status.is_success() {
            return Err(Error::Status(done.status));
        }
        Ok(done.result)
    }

    /// Disables the controller so it stops using our memory, and refuses
    /// every later request. Returns `e`.
    fn give_up(&mut self, e: Error) -> Error {
        warn!("nvme: {e:?}: controller disabled, no further requests");
        self.broken = true;
        if let Err(d) = self.disable(false) {
            warn!("nvme: disabling: {d:?}");
        }
        e
    }

    fn bounce(&mut self) -> &mut [u8] {
        // SAFETY: the bounce region is this driver's for the rest of the
        // run; the controller only touches it while a command is in flight
        // inside `execute` — or never again once disabled.
        unsafe { core::slice::from_raw_parts_mut(self.bounce.ptr.as_ptr(), BOUNCE.min(self.bounce.len)) }
    }

    /// PRP1 and PRP2 for a transfer of `len` bytes from the bounce buffer.
    fn prps(&self, len: usize) -> (u64, u64) {
        let pages = len.div_ceil(PAGE);
        let prp2 = match pages {
            0 | 1 => 0,
            2 => self.bounce.phys + PAGE as u64,
            _ => self.prp_list.phys,
        };
        (self.bounce.phys, prp2)
    }

    /// One read or write of `len` bytes (≤ max_transfer) at `lba` through
    /// the bounce buffer.
    fn transfer(&mut self, opcode: u8, lba: u64, len: usize) -> Result<(), Error> {
        let blocks = len / self.block_size.bytes();
        if len == 0 || len > self.max_transfer || blocks == 0 {
            return Err(Error::BadLength);
        }
        let (prp1, prp2) = self.prps(len);
        // NLB is 0-based; blocks ≤ BOUNCE / 512 = 64.
        let nlb = u32::try_from(blocks - 1).map_err(|_| Error::BadLength)?;
        let cmd = Command { opcode, nsid: NSID, prp1, prp2, cdw10: lba as u32, cdw11: (lba >> 32) as u32, cdw12: nlb };
        self.execute(Which::Io, &cmd).map(|_| ())
    }

    /// Checks a transfer of `len` bytes from block `lba`.
    fn check(&self, lba: u64, len: usize) -> Result<(), Error> {
        let bs = self.block_size.bytes();
        if len == 0 || !len.is_multiple_of(bs) {
            return Err(Error::BadLength);
        }
        let end = lba.checked_add((len / bs) as u64).ok_or(Error::OutOfRange)?;
        if end > self.blocks {
            return Err(Error::OutOfRange);
        }
        Ok(())
    }

    /// The logical block size of namespace 1.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// How many logical blocks namespace 1 has (NSZE).
    pub fn block_count(&self) -> u64 {
        self.blocks
    }

    /// Whether the namespace is write protected.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// What a completed write means.
    pub fn cache(&self) -> Cache {
        match self.controller {
            Some(c) if c.volatile_cache => Cache::WriteBack,
            _ => Cache::WriteThrough,
        }
    }

    /// Identify Controller, as read at bring-up.
    pub fn controller(&self) -> Option<&ControllerInfo> {
        self.controller.as_ref()
    }

    /// Bytes per command.
    pub fn max_transfer(&self) -> usize {
        self.max_transfer
    }

    /// Whether the controller was given up on.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Reads `buf.len() / block_size` blocks from `lba`.
    pub fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.check(lba, buf.len())?;
        let mut lba = lba;
        for chunk in buf.chunks_mut(self.max_transfer) {
            self.transfer(opcode::READ, lba, chunk.len())?;
            chunk.copy_from_slice(self.bounce().get(..chunk.len()).ok_or(Error::BadLength)?);
            lba += (chunk.len() / self.block_size.bytes()) as u64;
        }
        Ok(())
    }

    /// Writes `data.len() / block_size` blocks from `lba`. Accepted by the
    /// controller when this returns `Ok`; durable after [`flush`](Self::flush).
    pub fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), Error> {
        self.check(lba, data.len())?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let mut lba = lba;
        for chunk in data.chunks(self.max_transfer) {
            self.bounce().get_mut(..chunk.len()).ok_or(Error::BadLength)?.copy_from_slice(chunk);
            self.transfer(opcode::WRITE, lba, chunk.len())?;
            lba += (chunk.len() / self.block_size.bytes()) as u64;
        }
        Ok(())
    }

    /// Returns once every write completed so far is on the medium: the
    /// Flush command when a volatile write cache exists, nothing otherwise.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        match self.cache() {
            Cache::WriteThrough => Ok(()),
            Cache::WriteBack => self.execute(Which::Io, &Command { opcode: opcode::FLUSH, nsid: NSID, ..Command::default() }).map(|_| ()),
        }
    }
}

impl<R: Registers> BlockDevice for NvmeDisk<R> {
    fn block_size(&self) -> BlockSize {
        self.block_size
    }
    fn block_count(&self) -> u64 {
        self.blocks
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        NvmeDisk::read(self, lba, buf).map_err(|e| e.block_error())
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        NvmeDisk::write(self, lba, data).map_err(|e| e.block_error())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        NvmeDisk::flush(self).map_err(|e| e.block_error())
    }
}

#[cfg(test)]
#[path = "nvme_tests.rs"]
mod tests;

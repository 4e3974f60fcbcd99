//! virtio-blk over PCI, polled: one request at a time, through a bounce
//! buffer, with every answer of the device checked.
//!
//! `virtio-drivers` provides the PCI transport and the split virtqueue; this
//! driver negotiates the features itself and owns the request memory. Why not
//! its `VirtIOBlk`: it waits for a completion forever (a dead device hangs
//! the box), hands the caller's buffers to the device (a device finishing
//! after a timeout would write into memory that is no longer the request's),
//! ignores the used length, panics on a bad buffer length, and cannot
//! negotiate `VIRTIO_BLK_F_CONFIG_WCE` to learn the cache mode.
//!
//! What this driver does:
//!
//! - **Polled, interrupts off.** `VIRTQ_AVAIL_F_NO_INTERRUPT` from bring-up
//!   on; `EVENT_IDX` and `INDIRECT_DESC` are not negotiated. A request is the
//!   three-descriptor chain of §5.2.6 (header, data, status), the device is
//!   notified every time (storage requests are rare; a lost kick would cost
//!   a timeout), and the driver spins until the used ring has it or
//!   [`REQUEST_TIMEOUT_MS`] passes.
//! - **Driver-owned DMA memory.** The header, the status byte and a 32 KiB
//!   bounce buffer come from the DMA pool; larger transfers are split (and
//!   split further to the device's `size_max`). The caller's buffers never
//!   reach the device.
//! - **Every answer checked.** The status byte is pre-set to a value no
//!   device writes, so an unwritten status is an error; the used length must
//!   not exceed what the chain let the device write, and a read must report
//!   exactly its data plus the status. A device that breaks the protocol
//!   (timeout, wrong descriptor, impossible length) is reset — it stops
//!   touching memory — and every later request fails with [`Error::Broken`].
//!   A plain error status (`IOERR`, `UNSUPP`) fails that request only.
//! - **Durability** (the contract of `BlockDevice::flush`): when the device
//!   offers `VIRTIO_BLK_F_FLUSH`, `flush` sends `VIRTIO_BLK_T_FLUSH` and
//!   succeeds only on its `OK`. The cache mode is read from the `writeback`
//!   field when `VIRTIO_BLK_F_CONFIG_WCE` is offered, else deduced as the
//!   spec says (write-back if and only if `FLUSH` was negotiated, §5.2.5). A
//!   device without `FLUSH` in write-through mode commits a write before
//!   completing it, so `flush` succeeds at once. A device without `FLUSH`
//!   that reports a write-back cache (which the spec forbids) is asked to
//!   switch to write-through; if it stays write-back, its cache is
//!   [`Cache::Volatile`] and `flush` fails with [`Error::NotDurable`]: the
//!   store then never reports a save as done. (A host that ignores flushes,
//!   QEMU's `cache=unsafe`, cannot be detected from here.)
//! - Block size: 512-byte blocks, or 4096 when the device reports that
//!   logical block size (`VIRTIO_BLK_F_BLK_SIZE`); requests still address
//!   512-byte sectors, as virtio-blk always does.

use super::{BlockDevice, BlockError, BlockSize};
use crate::clock::Clock;
use crate::dma::{self, IdentityHal};
use crate::pci::Device;
use core::sync::atomic::{fence, Ordering};
use log::{info, warn};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

/// How long one request may take before the device is given up on (Linux's
/// default block-layer timeout).
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// The request queue (virtio-blk has one, §5.2.2) and its size: a request
/// takes three descriptors and only one is in flight.
const QUEUE_INDEX: u16 = 0;
const QUEUE: usize = 4;
type Queue = VirtQueue<Mem, QUEUE>;

/// Where the rings and request memory come from: the image's DMA pool. The
/// host tests take them from the heap instead (the pool is one static shared
/// by every driver test in the process, sized for the image's NICs); the
/// driver code is the same.
#[cfg(not(test))]
type Mem = IdentityHal;
#[cfg(test)]
type Mem = tests::HeapHal;

#[cfg(not(test))]
fn alloc_pages(pages: usize) -> Option<dma::DmaRegion> {
    dma::alloc_pages(pages)
}
#[cfg(test)]
use tests::heap_pages as alloc_pages;

/// virtio-blk's addressing unit, whatever the logical block size.
const SECTOR: usize = 512;
/// The bounce buffer: the largest transfer in one request.
const BOUNCE_PAGES: usize = 8;
const BOUNCE: usize = BOUNCE_PAGES * 4096;
/// The request header (`virtio_blk_req`'s first 16 bytes) and where the
/// status byte sits in the same DMA page.
const HEADER: usize = 16;
const STATUS_AT: usize = HEADER;
/// Written into the status byte before each request; no device writes it.
const STATUS_UNSET: u8 = 0xff;
/// Bytes of a `VIRTIO_BLK_T_GET_ID` answer.
pub const ID_BYTES: usize = 20;

/// Reads of `device_status` waiting for a reset to complete.
const RESET_POLLS: usize = 1_000_000;
/// Tries at reading the configuration space while the device changes it.
const CONFIG_TRIES: usize = 100;

/// Feature bits (§5.2.3, §6).
mod feature {
    /// `size_max`: the largest segment the device takes.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// The device is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size`: the logical block size.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// `VIRTIO_BLK_T_FLUSH` exists (and the cache is write-back after reset).
    pub const FLUSH: u64 = 1 << 9;
    /// The cache mode can be read and set in `writeback`.
    pub const CONFIG_WCE: u64 = 1 << 11;
    /// The modern (virtio 1.x) interface; required here, because the used
    /// lengths this driver checks are only reliable from modern devices.
    pub const VERSION_1: u64 = 1 << 32;
    /// Everything this driver asks for. Deliberately not: `EVENT_IDX`,
    /// `INDIRECT_DESC`, `NOTIFY_ON_EMPTY` (interrupts, descriptor tricks),
    /// `MQ`, `DISCARD`, `WRITE_ZEROES`, `SEG_MAX` (one data segment only).
    pub const WANTED: u64 = SIZE_MAX | RO | BLK_SIZE | FLUSH | CONFIG_WCE | VERSION_1;
}

/// Offsets in `virtio_blk_config` (§5.2.4).
mod config {
    pub const CAPACITY_LOW: usize = 0;
    pub const CAPACITY_HIGH: usize = 4;
    pub const SIZE_MAX: usize = 8;
    pub const BLK_SIZE: usize = 20;
    pub const WRITEBACK: usize = 32;
}

/// Request types (§5.2.6).
mod request {
    pub const IN: u32 = 0;
    pub const OUT: u32 = 1;
    pub const FLUSH: u32 = 4;
    pub const GET_ID: u32 = 8;
}

/// Status values (§5.2.6).
pub mod status {
    pub const OK: u8 = 0;
    pub const IOERR: u8 = 1;
    pub const UNSUPP: u8 = 2;
}

/// What a completed write means (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// No volatile cache: a completed write is on the medium.
    WriteThrough,
    /// A volatile cache, emptied by `VIRTIO_BLK_T_FLUSH`.
    WriteBack,
    /// A volatile cache and no flush: no write is ever reported durable.
    Volatile,
}

#[derive(Debug)]
pub enum Error {
    // Bring-up.
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    /// The virtqueue or the configuration space refused (also: a request
    /// the queue would not take).
    Device(virtio_drivers::Error),
    /// The DMA pool has no room for the request memory.
    NoDmaMemory,
    /// The device did not come out of reset.
    ResetTimeout,
    /// The device is legacy-only (no `VIRTIO_F_VERSION_1`).
    NotModern {
        offered: u64,
    },
    /// The device did not accept the features this driver asked for.
    FeaturesRefused {
        offered: u64,
        wanted: u64,
    },
    /// The configuration space kept changing while it was read.
    ConfigUnstable,
    /// A logical block size other than 512 or 4096.
    UnsupportedBlockSize(u32),
    /// `size_max` is below one block.
    SizeMaxTooSmall(u32),

    // Requests.
    /// The request reaches past the last block (nothing was sent).
    OutOfRange,
    /// The buffer is empty or not a whole number of blocks (nothing sent).
    BadLength,
    /// A write to a read-only device (nothing was sent).
    ReadOnly,
    /// The device answered with this status (`status::IOERR`,
    /// `status::UNSUPP`, or anything else — 0xff: it wrote no status).
    Status(u8),
    /// The device reported a used length other than the request allows.
    UsedLength {
        expected: u32,
        got: u32,
    },
    /// The device did not complete the request in time; it was reset.
    Timeout,
    /// The device completed a request it was not given; it was reset.
    WrongToken,
    /// The device was given up on earlier (reset): no more requests.
    Broken,
    /// `flush` on a write-back cache that cannot be flushed.
    NotDurable,
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

/// The device's serial number (`VIRTIO_BLK_T_GET_ID`; QEMU `serial=`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Serial {
    bytes: [u8; ID_BYTES],
    len: usize,
}

impl Serial {
    /// The serial's bytes (ASCII by convention, not checked).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl core::fmt::Debug for Serial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.as_bytes().iter().try_for_each(|&b| if b.is_ascii_graphic() { write!(f, "{}", b as char) } else { write!(f, "\\x{b:02x}") })
    }
}

/// What the configuration space says, checked.
struct Geometry {
    sectors: u64,
    block_size: BlockSize,
    max_transfer: usize,
    cache: Cache,
}

/// A running virtio-blk device (over PCI in the image; any transport in the
/// host tests).
pub struct VirtioBlk<T: Transport = PciTransport> {
    transport: T,
    queue: Queue,
    /// The request header at 0 and the status byte at [`STATUS_AT`].
    req: dma::DmaRegion,
    bounce: dma::DmaRegion,
    clock: Clock,
    timeout_ns: u64,
    /// Capacity in 512-byte sectors.
    sectors: u64,
    block_size: BlockSize,
    /// Bytes per request: a multiple of the block size, at most [`BOUNCE`].
    max_transfer: usize,
    features: u64,
    cache: Cache,
    /// Given up on (reset): every request fails.
    broken: bool,
}

impl VirtioBlk<PciTransport> {
    /// Resets and initialises the device. Reads its configuration only;
    /// nothing is written to the medium. `clock` times the requests.
    pub fn new<C: ConfigurationAccess>(root: &mut PciRoot<C>, dev: &Device, clock: Clock) -> Result<VirtioBlk, Error> {
        // The device reads and writes the rings itself: it must be allowed
        // to master the bus.
        let (_, command) = root.get_status_command(dev.address);
        root.set_command(dev.address, command | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER);
        let transport = PciTransport::new::<IdentityHal, C>(root, dev.address).map_err(Error::Transport)?;
        VirtioBlk::start(transport, clock)
    }
}

impl<T: Transport> VirtioBlk<T> {
    /// Device initialisation (§3.1.1, §5.2.5) over a transport.
    fn start(mut transport: T, clock: Clock) -> Result<VirtioBlk<T>, Error> {
        // Request memory first: if the pool is short, the device stays
        // untouched.
        let req = alloc_pages(1).ok_or(Error::NoDmaMemory)?;
        let bounce = alloc_pages(BOUNCE_PAGES).ok_or(Error::NoDmaMemory)?;
        let features = match negotiate(&mut transport) {
            Ok(f) => f,
            Err(e) => return Err(fail(&mut transport, e)),
        };
        let geometry = match read_geometry(&mut transport, features) {
            Ok(g) => g,
            Err(e) => return Err(fail(&mut transport, e)),
        };
        let mut queue = match Queue::new(&mut transport, QUEUE_INDEX, false, false) {
            Ok(q) => q,
            Err(e) => return Err(fail(&mut transport, Error::Device(e))),
        };
        // VIRTQ_AVAIL_F_NO_INTERRUPT before the device may use a buffer;
        // never cleared.
        queue.set_dev_notify(false);
        transport.finish_init();
        let Geometry { sectors, block_size, max_transfer, cache } = geometry;
        info!(
            "virtio-blk: {} KiB, {}-byte blocks{}, cache {cache:?}, features {features:#x}, polled",
            sectors / 2,
            block_size.bytes(),
            if features & feature::RO != 0 { ", read-only" } else { "" }
        );
        Ok(VirtioBlk {
            transport,
            queue,
            req,
            bounce,
            clock,
            timeout_ns: REQUEST_TIMEOUT_MS * 1_000_000,
            sectors,
            block_size,
            max_transfer,
            features,
            cache,
            broken: false,
        })
    }

    /// The logical block size.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// How many logical blocks the device has.
    pub fn block_count(&self) -> u64 {
        self.sectors / (self.block_size.bytes() / SECTOR) as u64
    }

    /// Whether the device refuses writes.
    pub fn read_only(&self) -> bool {
        self.features & feature::RO != 0
    }

    /// What a completed write means.
    pub fn cache(&self) -> Cache {
        self.cache
    }

    /// Whether the device was given up on.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Reads `buf.len() / block_size` blocks from `lba`.
    pub fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Error> {
        let mut sector = self.first_sector(lba, buf.len())?;
        for chunk in buf.chunks_mut(self.max_transfer) {
            self.request(request::IN, sector, chunk.len())?;
            chunk.copy_from_slice(self.bounce().get(..chunk.len()).ok_or(Error::BadLength)?);
            sector += (chunk.len() / SECTOR) as u64;
        }
        Ok(())
    }

    /// Writes `data.len() / block_size` blocks from `lba`. Accepted by the
    /// device when this returns `Ok`; durable after [`flush`](Self::flush).
    pub fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), Error> {
        let mut sector = self.first_sector(lba, data.len())?;
        if self.read_only() {
            return Err(Error::ReadOnly);
        }
        for chunk in data.chunks(self.max_transfer) {
            self.bounce().get_mut(..chunk.len()).ok_or(Error::BadLength)?.copy_from_slice(chunk);
            self.request(request::OUT, sector, chunk.len())?;
            sector += (chunk.len() / SECTOR) as u64;
        }
        Ok(())
    }

    /// Returns once every write completed so far is on the medium: sends
    /// `VIRTIO_BLK_T_FLUSH` when the device has it; see the module comment
    /// for devices without.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        if self.features & feature::FLUSH != 0 {
            return self.request(request::FLUSH, 0, 0);
        }
        match self.cache {
            Cache::WriteThrough => Ok(()),
            Cache::WriteBack | Cache::Volatile => Err(Error::NotDurable),
        }
    }

    /// The device's serial number, `None` if it has none to give.
    pub fn serial(&mut self) -> Result<Option<Serial>, Error> {
        match self.request(request::GET_ID, 0, ID_BYTES) {
            Ok(()) => {}
            Err(Error::Status(status::UNSUPP)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut bytes = [0u8; ID_BYTES];
        bytes.copy_from_slice(self.bounce().get(..ID_BYTES).ok_or(Error::BadLength)?);
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(ID_BYTES);
        Ok((len > 0).then_some(Serial { bytes, len }))
    }

    /// The first sector of a transfer of `len` bytes from block `lba`, after
    /// checking the length and the range.
    fn first_sector(&self, lba: u64, len: usize) -> Result<u64, Error> {
        let bs = self.block_size.bytes();
        if len == 0 || !len.is_multiple_of(bs) {
            return Err(Error::BadLength);
        }
        let end = lba.checked_add((len / bs) as u64).ok_or(Error::OutOfRange)?;
        if end > self.block_count() {
            return Err(Error::OutOfRange);
        }
        // Cannot overflow: end <= block_count = sectors / (bs / 512).
        Ok(lba * (bs / SECTOR) as u64)
    }

    fn bounce(&mut self) -> &mut [u8] {
        // SAFETY: the bounce region is this driver's for the rest of the run
        // (BOUNCE bytes), and the device only touches it between `add` and
        // `pop_used` inside `request` — or never again once reset.
        unsafe { core::slice::from_raw_parts_mut(self.bounce.ptr.as_ptr(), BOUNCE.min(self.bounce.len)) }
    }

    /// Sends one request and waits for it: `data_len` bytes of the bounce
    /// buffer go with it (device-readable for `OUT`, device-writable for
    /// `IN` and `GET_ID`, none for `FLUSH`).
    fn request(&mut self, kind: u32, sector: u64, data_len: usize) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        let carries_data = kind != request::FLUSH;
        if carries_data && (data_len == 0 || data_len > BOUNCE.min(self.bounce.len)) {
            return Err(Error::BadLength);
        }
        // SAFETY: the request page is this driver's; no request is in flight
        // (each is popped before `request` returns, or the device is reset),
        // so the device is not using it.
        let page = unsafe { core::slice::from_raw_parts_mut(self.req.ptr.as_ptr(), self.req.len) };
        let (header, rest) = page.split_at_mut(HEADER);
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[4..8].fill(0);
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        let status = &mut rest[STATUS_AT - HEADER..STATUS_AT - HEADER + 1];
        status[0] = STATUS_UNSET;
        // SAFETY: as for `bounce()`; `data` is not touched until popped.
        let data = unsafe { core::slice::from_raw_parts_mut(self.bounce.ptr.as_ptr(), data_len) };
        let device_writable = match kind {
            request::IN | request::GET_ID => data_len + 1,
            _ => 1,
        };

        // SAFETY: header, data and status are DMA memory owned by this driver
        // and left alone until the chain is popped below (or the device is
        // reset, after which it no longer touches them).
        let added = unsafe {
            match kind {
                request::IN | request::GET_ID => self.queue.add(&[&*header], &mut [&mut *data, &mut *status]),
                request::OUT => self.queue.add(&[&*header, &*data], &mut [&mut *status]),
                _ => self.queue.add(&[&*header], &mut [&mut *status]),
            }
        };
        let token = added.map_err(Error::Device)?;
        // The available index must be visible before the notification.
        fence(Ordering::SeqCst);
        self.transport.notify(QUEUE_INDEX);

        let start = self.clock.now_ns();
        while !self.queue.can_pop() {
            if self.clock.now_ns().saturating_sub(start) > self.timeout_ns {
                return Err(self.give_up(Error::Timeout));
            }
            core::hint::spin_loop();
        }
        if self.queue.peek_used() != Some(token) {
            return Err(self.give_up(Error::WrongToken));
        }
        // SAFETY: the same buffers `add` was given under this token.
        let popped = unsafe {
            match kind {
                request::IN | request::GET_ID => self.queue.pop_used(token, &[&*header], &mut [&mut *data, &mut *status]),
                request::OUT => self.queue.pop_used(token, &[&*header, &*data], &mut [&mut *status]),
                _ => self.queue.pop_used(token, &[&*header], &mut [&mut *status]),
            }
        };
        let used = match popped {
            Ok(used) => used,
            Err(e) => return Err(self.give_up(Error::Device(e))),
        };
        // SAFETY: one byte of our request page; the device is done with it
        // (popped). Volatile: the device wrote it behind the compiler's back.
        let code = unsafe { core::ptr::read_volatile(status.as_ptr()) };
        let expected = device_writable as u32;
        if used > expected {
            // The device claims it wrote past the buffers it was given.
            return Err(self.give_up(Error::UsedLength { expected, got: used }));
        }
        if code != status::OK {
            return Err(Error::Status(code));
        }
        if kind == request::IN && used != expected {
            // A read the device does not vouch for in full.
            return Err(Error::UsedLength { expected, got: used });
        }
        Ok(())
    }

    /// Resets the device so it stops using the request memory, and refuses
    /// every later request. Returns `e`.
    fn give_up(&mut self, e: Error) -> Error {
        warn!("virtio-blk: {e:?}: device reset, no further requests");
        self.broken = true;
        reset(&mut self.transport);
        e
    }
}

/// Writes 0 to the device status (a reset, §2.1.2) and waits, boundedly,
/// for it to read back 0.
fn reset<T: Transport>(transport: &mut T) -> bool {
    transport.set_status(DeviceStatus::empty());
    for _ in 0..RESET_POLLS {
        if transport.get_status() == DeviceStatus::empty() {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (and checks the device
/// kept it). Returns the negotiated features.
fn negotiate<T: Transport>(transport: &mut T) -> Result<u64, Error> {
    if !reset(transport) {
        return Err(Error::ResetTimeout);
    }
    transport.set_status(DeviceStatus::ACKNOWLEDGE);
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let offered = transport.read_device_features();
    if offered & feature::VERSION_1 == 0 {
        return Err(Error::NotModern { offered });
    }
    let features = offered & feature::WANTED;
    transport.write_driver_features(features);
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
        return Err(Error::FeaturesRefused { offered, wanted: feature::WANTED });
    }
    Ok(features)
}

/// Capacity, block size, transfer limit and cache mode, read consistently
/// (the generation counter unchanged across the reads, §2.4.1) and checked.
fn read_geometry<T: Transport>(transport: &mut T, features: u64) -> Result<Geometry, Error> {
    let has = |f: u64| features & f != 0;
    let read = |t: &T| -> Result<(u64, u32, u32, u8), virtio_drivers::Error> {
        let low = t.read_config_space::<u32>(config::CAPACITY_LOW)?;
        let high = t.read_config_space::<u32>(config::CAPACITY_HIGH)?;
        let size_max = if has(feature::SIZE_MAX) { t.read_config_space::<u32>(config::SIZE_MAX)? } else { 0 };
        let blk_size = if has(feature::BLK_SIZE) { t.read_config_space::<u32>(config::BLK_SIZE)? } else { SECTOR as u32 };
        let writeback = if has(feature::CONFIG_WCE) { t.read_config_space::<u8>(config::WRITEBACK)? } else { 0 };
        Ok((u64::from(low) | u64::from(high) << 32, size_max, blk_size, writeback))
    };
    let mut raw = None;
    for _ in 0..CONFIG_TRIES {
        let before = transport.read_config_generation();
        let r = read(transport);
        if transport.read_config_generation() == before {
            raw = Some(r.map_err(Error::Device)?);
            break;
        }
    }
    let (sectors, size_max, blk_size, writeback) = raw.ok_or(Error::ConfigUnstable)?;
    let block_size = usize::try_from(blk_size).ok().and_then(BlockSize::from_bytes).ok_or(Error::UnsupportedBlockSize(blk_size))?;
    let bs = block_size.bytes();
    let mut max_transfer = BOUNCE;
    if has(feature::SIZE_MAX) {
        let whole_blocks = usize::try_from(size_max).unwrap_or(usize::MAX) / bs * bs;
        if whole_blocks == 0 {
            return Err(Error::SizeMaxTooSmall(size_max));
        }
        max_transfer = max_transfer.min(whole_blocks);
    }
    let cache = if !has(feature::CONFIG_WCE) {
        if has(feature::FLUSH) {
            Cache::WriteBack
        } else {
            Cache::WriteThrough
        }
    } else if writeback == 0 {
        Cache::WriteThrough
    } else if has(feature::FLUSH) {
        Cache::WriteBack
    } else {
        // Write-back with no flush: ask for write-through, and believe it
        // only when the device says so.
        transport.write_config_space::<u8>(config::WRITEBACK, 0).map_err(Error::Device)?;
        match transport.read_config_space::<u8>(config::WRITEBACK).map_err(Error::Device)? {
            0 => Cache::WriteThrough,
            _ => Cache::Volatile,
        }
    };
    Ok(Geometry { sectors, block_size, max_transfer, cache })
}

/// Gives up on the device (§3.1.1: FAILED) and passes `e` on.
fn fail<T: Transport>(transport: &mut T, e: Error) -> Error {
    transport.set_status(transport.get_status() | DeviceStatus::FAILED);
    e
}

impl<T: Transport> BlockDevice for VirtioBlk<T> {
    fn block_size(&self) -> BlockSize {
        self.block_size
    }
    fn block_count(&self) -> u64 {
        VirtioBlk::block_count(self)
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        VirtioBlk::read(self, lba, buf).map_err(|e| e.block_error())
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        VirtioBlk::write(self, lba, data).map_err(|e| e.block_error())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        VirtioBlk::flush(self).map_err(|e| e.block_error())
    }
}

#[cfg(test)]
#[path = "virtio_tests.rs"]
mod tests;

//! The box's memory: one block-device trait and a power-loss-safe store.
//!
//! Drivers (virtio-blk, AHCI, NVMe in `hal-x86`) implement [`BlockDevice`];
//! [`Store`] keeps one opaque, versioned, checksummed record (the caller puts
//! the postcard-encoded configuration, key slots and box state in it) in a
//! region of such a device — the GPT partition labelled `ROUTERD-STATE`.
//! Nothing here knows about hardware, partitions or what the payload means,
//! and nothing allocates: the caller passes the device, the region and the
//! buffers in.
//!
//! The contract, argued in `README.md` and tested by cutting power at every
//! write and flush (`tests/power_cut.rs`):
//! - [`Store::save`] writes the record to the slot that does not hold the
//!   current one, flushes, and commits with one single-block write (the
//!   slot's header) and a second flush. It returns `Ok` only after both
//!   flushes, and never writes to the slot holding the current record.
//! - [`Store::open`] reads both slots and validates everything; the newest
//!   valid record wins. After a power cut during a save it finds the old
//!   record or the new one, never a mix; a torn or corrupt slot is reported in
//!   [`OpenReport`] and never used.
//! - No disk content makes this crate panic (`tests/fuzz_smoke.rs`).
//!
//! The on-disk format is in [`layout`]; its bytes are pinned by a test.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

#[cfg(feature = "std")]
pub mod file;
pub mod layout;
mod store;
#[cfg(feature = "std")]
pub mod testing;

pub use layout::{Corruption, Slot, SuperblockState, MAX_PAYLOAD, STORE_BYTES};
pub use store::{OpenReport, RecordInfo, SlotState, Store, StoreError};

/// A device's logical block size: the unit of every read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSize {
    /// 512-byte logical blocks (most SATA disks, virtio-blk's default,
    /// 512e drives with 4 KiB physical sectors).
    B512,
    /// 4096-byte logical blocks (4Kn disks, many NVMe namespaces).
    B4096,
}

impl BlockSize {
    /// The block size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            BlockSize::B512 => 512,
            BlockSize::B4096 => 4096,
        }
    }

    /// The block size for `bytes`, if it is one this crate supports.
    pub const fn from_bytes(bytes: usize) -> Option<BlockSize> {
        match bytes {
            512 => Some(BlockSize::B512),
            4096 => Some(BlockSize::B4096),
            _ => None,
        }
    }
}

/// Why a block request failed. Small on purpose: the store does not retry,
/// it reports, and the caller decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The request reaches past the device's last block.
    OutOfRange,
    /// The buffer is empty or not a whole number of blocks.
    BadLength,
    /// The medium is write-protected.
    ReadOnly,
    /// The device reported an error, timed out, or stopped answering (reset,
    /// removed — or, in tests, powered off).
    Io,
}

/// A polled block device: the one storage interface of routerd.
///
/// Synchronous by design. The image is single-threaded and polled with
/// interrupts off, so a driver submits a request and spins on its completion
/// (Tock's `NonvolatileStorage` is split-phase with a client callback
/// because Tock has interrupts; we do not). Storage I/O happens at boot and
/// when a configuration is applied, never in the forwarding path, so the
/// stall is bounded by a handful of requests.
///
/// Transfers: `buf.len()` is a non-zero multiple of [`block_size`]; a request
/// covers `buf.len() / block_size` consecutive blocks from `lba`. A driver
/// splits requests larger than its hardware takes (the store's largest is
/// 64 KiB).
///
/// Durability — the contract the store's power-cut argument rests on:
/// - when [`write`] returns `Ok` the device has accepted the data and later
///   reads return it, but it may sit in a volatile write cache;
/// - when [`flush`] returns `Ok`, every write that returned `Ok` before it is
///   on the medium (virtio-blk `VIRTIO_BLK_T_FLUSH`, ATA `FLUSH CACHE EXT`,
///   NVMe Flush); a device without a volatile cache returns `Ok` at once;
/// - if power fails before that flush, any subset of those writes may have
///   reached the medium, in any order, and a block being written may be torn
///   (part new, part old). Blocks that were not written are not changed.
///
/// [`block_size`]: BlockDevice::block_size
/// [`write`]: BlockDevice::write
/// [`flush`]: BlockDevice::flush
pub trait BlockDevice {
    /// The logical block size.
    fn block_size(&self) -> BlockSize;

    /// How many logical blocks the device has.
    fn block_count(&self) -> u64;

    /// Reads `buf.len() / block_size` blocks starting at `lba` into `buf`.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError>;

    /// Writes `data.len() / block_size` blocks starting at `lba`. Durable only
    /// after a successful [`flush`](BlockDevice::flush).
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError>;

    /// Returns once every write accepted so far is on the medium.
    fn flush(&mut self) -> Result<(), BlockError>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    fn block_size(&self) -> BlockSize {
        (**self).block_size()
    }
    fn block_count(&self) -> u64 {
        (**self).block_count()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        (**self).read(lba, buf)
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        (**self).write(lba, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        (**self).flush()
    }
}

/// A run of blocks on a device: the store's partition. The caller finds it
/// (the GPT partition labelled `ROUTERD-STATE`) and passes it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The region's first block.
    pub first_lba: u64,
    /// How many blocks it has.
    pub blocks: u64,
}

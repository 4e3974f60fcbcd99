//! The two-slot record store: open, load, save, erase.
//!
//! The store keeps the header of the current record (the newest valid one)
//! and nothing else; every payload byte stays on the device. Its only buffer
//! is one 4 KiB scratch page; payloads are written from and read into the
//! caller's slices directly, so a save of 20 KiB is one multi-block write, a
//! flush, a single-block commit and a flush.
//!
//! Invariants the power-cut argument (`README.md`) rests on:
//! - a save writes only the slot that does not hold the current record (and
//!   the superblock page if it was not valid), so the current record is intact
//!   on the medium until the new one is committed;
//! - the commit (the header block) is issued only after a flush returned, so
//!   the payload it vouches for is already on the medium;
//! - `current` changes only after the final flush returned; after a failed
//!   save the next save goes to the same free slot again, with a new number
//!   (the failed one may have reached the medium).

use crate::layout::{
    self, Corruption, HeaderError, RecordHeader, Slot, SuperblockState, ALIGN, MAX_PAYLOAD, PAYLOAD_OFFSET, SLOT_BYTES, STORE_BYTES,
    SUPERBLOCK_OFFSET,
};
use crate::{BlockDevice, BlockError, Region};

/// A record the store found or wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// The slot holding it.
    pub slot: Slot,
    /// Its sequence number: higher than every record the store saw or wrote
    /// before it (numbering restarts after an erase).
    pub sequence: u64,
    /// The payload length in bytes.
    pub len: usize,
}

impl RecordInfo {
    fn of(h: &RecordHeader) -> RecordInfo {
        RecordInfo { slot: h.slot, sequence: h.sequence, len: h.payload_len as usize }
    }
}

/// What `open` found in one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Never written, or erased.
    Empty,
    /// A record whose every check passed.
    Valid(RecordInfo),
    /// Something that is not a valid record: never used.
    Corrupt(Corruption),
    /// The device failed to read it: never used.
    Unreadable(BlockError),
}

impl SlotState {
    /// Corrupt or unreadable: something the operator may want to hear about
    /// (after a power cut during a save, one slot is usually corrupt).
    pub fn is_damaged(&self) -> bool {
        matches!(self, SlotState::Corrupt(_) | SlotState::Unreadable(_))
    }
}

/// What `open` found: the superblock, both slots and the record chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The superblock's state. The slots are read whatever it is, so a
    /// damaged superblock costs no data; the next save rewrites it.
    pub superblock: SuperblockState,
    /// Slot A, slot B.
    pub slots: [SlotState; 2],
    /// The newest valid record, if any.
    pub current: Option<RecordInfo>,
}

impl OpenReport {
    /// How many slots are corrupt or unreadable (0, 1 or 2).
    pub fn damaged_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.is_damaged()).count()
    }
}

/// Why a store operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The device failed a request. After a failed save the medium holds
    /// the old record or the new one; re-open to learn which.
    Device(BlockError),
    /// The region reaches past the end of the device.
    RegionOutsideDevice,
    /// The region is smaller than [`STORE_BYTES`].
    RegionTooSmall,
    /// The region does not start on a 4 KiB boundary.
    RegionMisaligned,
    /// The superblock is valid but of a newer format version: the store
    /// does not touch it. [`Store::format`] erases it (a factory reset).
    UnsupportedFormat {
        /// The version found.
        version: u32,
    },
    /// The payload is longer than [`MAX_PAYLOAD`].
    PayloadTooLarge {
        /// Its length.
        len: usize,
    },
    /// The buffer passed to [`Store::load`] is shorter than the payload.
    BufferTooSmall {
        /// The payload length.
        needed: usize,
    },
    /// The current record no longer checks out when read again (the medium
    /// changed under the store, or returned bad data).
    Corrupt(Corruption),
    /// The sequence number would reach 2⁶⁴−1 (only a crafted disk gets here).
    SequenceExhausted,
}

impl From<BlockError> for StoreError {
    fn from(e: BlockError) -> StoreError {
        StoreError::Device(e)
    }
}

/// The power-loss-safe store over a region of a [`BlockDevice`].
///
/// Pass `&mut device` to keep the device after the store is dropped.
pub struct Store<D: BlockDevice> {
    dev: D,
    first_lba: u64,
    /// The device's block size in bytes (512 or 4096).
    block: usize,
    /// The header of the current record.
    current: Option<RecordHeader>,
    /// The highest sequence number of any record this store found valid or
    /// started to write since the last completed erase: the next save uses
    /// one more, so it beats every record that may be valid on the medium,
    /// even after failed operations.
    last_sequence: u64,
    superblock_valid: bool,
    /// Slots whose content is unknown (unreadable at open): one may hold a
    /// valid record with any sequence number.
    unknown: [bool; 2],
    report: OpenReport,
    scratch: [u8; ALIGN],
}

impl<D: BlockDevice> Store<D> {
    /// Opens the store in `region`: reads the superblock and both slots and
    /// picks the newest valid record. Never writes. An empty, blank or
    /// damaged region opens as an empty store ([`Store::report`] says what
    /// was found); only a newer format version is refused.
    pub fn open(dev: D, region: Region) -> Result<Store<D>, StoreError> {
        let mut store = Store::attach(dev, region)?;
        store.scan();
        match store.report.superblock {
            SuperblockState::Newer(version) => Err(StoreError::UnsupportedFormat { version }),
            _ => Ok(store),
        }
    }

    /// Erases `region` whatever it holds (a newer format included) and
    /// writes a version-1 superblock: an empty store.
    pub fn format(dev: D, region: Region) -> Result<Store<D>, StoreError> {
        let mut store = Store::attach(dev, region)?;
        // Learn which slot is current, so the erase wipes it last.
        store.scan();
        store.erase()?;
        store.report = OpenReport { superblock: SuperblockState::Valid, slots: [SlotState::Empty; 2], current: None };
        Ok(store)
    }

    fn attach(dev: D, region: Region) -> Result<Store<D>, StoreError> {
        let block = dev.block_size().bytes();
        let end = region.first_lba.checked_add(region.blocks).ok_or(StoreError::RegionOutsideDevice)?;
        if end > dev.block_count() {
            return Err(StoreError::RegionOutsideDevice);
        }
        if region.blocks.checked_mul(block as u64).is_some_and(|bytes| bytes < STORE_BYTES) {
            return Err(StoreError::RegionTooSmall);
        }
        if !region.first_lba.is_multiple_of((ALIGN / block) as u64) {
            return Err(StoreError::RegionMisaligned);
        }
        let report = OpenReport { superblock: SuperblockState::Blank, slots: [SlotState::Empty; 2], current: None };
        Ok(Store {
            dev,
            first_lba: region.first_lba,
            block,
            current: None,
            last_sequence: 0,
            superblock_valid: false,
            unknown: [false; 2],
            report,
            scratch: [0; ALIGN],
        })
    }

    /// What `open` found (after `format`: the empty store it left).
    pub fn report(&self) -> &OpenReport {
        &self.report
    }

    /// The current record: the one `open` chose or the last successful save;
    /// `None` when the store is empty.
    pub fn current(&self) -> Option<RecordInfo> {
        self.current.as_ref().map(RecordInfo::of)
    }

    /// The device.
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Gives the device back.
    pub fn into_device(self) -> D {
        self.dev
    }

    fn unknown(&mut self, slot: Slot) -> &mut bool {
        let [a, b] = &mut self.unknown;
        match slot {
            Slot::A => a,
            Slot::B => b,
        }
    }

    /// The block holding byte `offset` of the store. Offsets are below
    /// [`STORE_BYTES`], which `attach` checked fits the region, so this does
    /// not overflow.
    fn lba(&self, offset: u64) -> u64 {
        self.first_lba + offset / self.block as u64
    }

    fn scan(&mut self) {
        let superblock = match self.read_block(self.lba(SUPERBLOCK_OFFSET)) {
            Ok(block) => layout::check_superblock(block),
            Err(e) => SuperblockState::Unreadable(e),
        };
        let (a, header_a) = self.scan_slot(Slot::A);
        let (b, header_b) = self.scan_slot(Slot::B);
        // The newest valid record wins; A wins a tie, which the protocol
        // never produces (each save is one more than the current record).
        let current = match (header_a, header_b) {
            (Some(a), Some(b)) if b.sequence > a.sequence => Some(b),
            (Some(a), _) => Some(a),
            (None, b) => b,
        };
        self.current = current;
        self.last_sequence = current.map_or(0, |h| h.sequence);
        self.superblock_valid = superblock == SuperblockState::Valid;
        self.unknown = [matches!(a, SlotState::Unreadable(_)), matches!(b, SlotState::Unreadable(_))];
        self.report = OpenReport { superblock, slots: [a, b], current: current.as_ref().map(RecordInfo::of) };
    }

    fn scan_slot(&mut self, slot: Slot) -> (SlotState, Option<RecordHeader>) {
        let header = match self.read_block(self.lba(slot.offset())) {
            Ok(block) => RecordHeader::parse(block, slot),
            Err(e) => return (SlotState::Unreadable(e), None),
        };
        let header = match header {
            Ok(h) => h,
            Err(HeaderError::Empty) => return (SlotState::Empty, None),
            Err(HeaderError::Corrupt(c)) => return (SlotState::Corrupt(c), None),
        };
        match self.payload_matches(&header) {
            Ok(true) => (SlotState::Valid(RecordInfo::of(&header)), Some(header)),
            Ok(false) => (SlotState::Corrupt(Corruption::RecordChecksum), None),
            Err(e) => (SlotState::Unreadable(e), None),
        }
    }

    /// Reads `header`'s payload a page at a time and checks the record CRC.
    fn payload_matches(&mut self, header: &RecordHeader) -> Result<bool, BlockError> {
        let mut digest = header.digest();
        let mut left = (header.payload_len as usize).min(MAX_PAYLOAD);
        let mut lba = self.lba(header.slot.offset() + PAYLOAD_OFFSET);
        let page_blocks = ALIGN / self.block;
        while left > 0 {
            let blocks = left.div_ceil(self.block).min(page_blocks);
            let buf = self.scratch.get_mut(..blocks * self.block).ok_or(BlockError::BadLength)?;
            self.dev.read(lba, buf)?;
            let take = left.min(buf.len());
            digest.update(buf.get(..take).unwrap_or_default());
            left -= take;
            lba += blocks as u64;
        }
        Ok(digest.finish() == header.record_crc)
    }

    fn read_block(&mut self, lba: u64) -> Result<&[u8], BlockError> {
        let buf = self.scratch.get_mut(..self.block).ok_or(BlockError::BadLength)?;
        self.dev.read(lba, buf)?;
        Ok(buf)
    }

    /// Writes one block: `content` at its start, zeros after.
    fn write_block(&mut self, lba: u64, content: &[u8]) -> Result<(), BlockError> {
        let buf = self.scratch.get_mut(..self.block).ok_or(BlockError::BadLength)?;
        buf.fill(0);
        buf.get_mut(..content.len()).ok_or(BlockError::BadLength)?.copy_from_slice(content);
        self.dev.write(lba, buf)
    }

    /// Reads the current payload into `out` and returns it, checked against
    /// its record CRC again; `None` when the store is empty.
    pub fn load<'a>(&mut self, out: &'a mut [u8]) -> Result<Option<&'a [u8]>, StoreError> {
        let Some(header) = self.current else { return Ok(None) };
        let len = header.payload_len as usize;
        let out = out.get_mut(..len).ok_or(StoreError::BufferTooSmall { needed: len })?;
        let lba = self.lba(header.slot.offset() + PAYLOAD_OFFSET);
        let whole = len / self.block * self.block;
        let (body, tail) = out.split_at_mut_checked(whole).ok_or(StoreError::BufferTooSmall { needed: len })?;
        if !body.is_empty() {
            self.dev.read(lba, body)?;
        }
        if !tail.is_empty() {
            let block = self.read_block(lba + (whole / self.block) as u64)?;
            tail.copy_from_slice(block.get(..tail.len()).ok_or(StoreError::BufferTooSmall { needed: len })?);
        }
        let mut digest = header.digest();
        digest.update(out);
        if digest.finish() != header.record_crc {
            return Err(StoreError::Corrupt(Corruption::RecordChecksum));
        }
        Ok(Some(out))
    }

    /// Saves `payload` as the new current record (see the module docs for
    /// the protocol). `Ok` means it is on the medium and `open` will choose
    /// it; after an error the medium holds the old record or the new one.
    pub fn save(&mut self, payload: &[u8]) -> Result<RecordInfo, StoreError> {
        let slot = self.current.map_or(Slot::A, |h| h.slot.other());
        let sequence = self.last_sequence.checked_add(1).filter(|&s| s < u64::MAX).ok_or(StoreError::SequenceExhausted)?;
        let header = RecordHeader::for_payload(slot, sequence, payload).ok_or(StoreError::PayloadTooLarge { len: payload.len() })?;
        // Burn the number now: if this save fails after its commit reached
        // the medium, the next one must still be newer.
        self.last_sequence = sequence;

        if !self.superblock_valid {
            self.write_block(self.lba(SUPERBLOCK_OFFSET), &layout::superblock_bytes())?;
        }
        // 1. The payload, into the free slot, zero-padded to a whole block.
        let lba = self.lba(slot.offset() + PAYLOAD_OFFSET);
        let whole = payload.len() / self.block * self.block;
        let (body, tail) = payload.split_at_checked(whole).ok_or(StoreError::PayloadTooLarge { len: payload.len() })?;
        if !body.is_empty() {
            self.dev.write(lba, body)?;
        }
        if !tail.is_empty() {
            self.write_block(lba + (whole / self.block) as u64, tail)?;
        }
        // 2. Barrier: the payload is on the medium before the commit exists.
        self.dev.flush()?;
        self.superblock_valid = true;
        // 3. Commit: one block, the header.
        self.write_block(self.lba(slot.offset()), &header.to_bytes())?;
        // 4. Barrier: the commit is on the medium before we say so.
        self.dev.flush()?;
        self.current = Some(header);
        *self.unknown(slot) = false;

        // The other slot could not be read at open, so it may hold a valid
        // record of any sequence number that would beat this one: retire it
        // now that the new record is durable.
        let other = slot.other();
        if *self.unknown(other) {
            self.write_block(self.lba(other.offset()), &[])?;
            self.dev.flush()?;
            *self.unknown(other) = false;
        }
        Ok(RecordInfo::of(&header))
    }

    /// Factory reset: zeroes both slots (headers and payloads, so key
    /// material is overwritten) and leaves an empty store with a valid
    /// superblock. The slot not holding the current record is wiped and
    /// flushed first, so a power cut part-way leaves the current record or
    /// nothing — never an older record coming back. After an error the
    /// current record may be gone from the medium ([`Store::load`] then
    /// reports it corrupt); retry, or save.
    ///
    /// On flash (SSD, NVMe) the drive may keep old copies of overwritten
    /// blocks internally; only a sanitize/secure-erase command reaches those.
    pub fn erase(&mut self) -> Result<(), StoreError> {
        // `current` stays until the wipe is done: after a failed erase the
        // current slot may still hold the record, and the next save must not
        // go there (it goes to the other slot, wiped first).
        let last = self.current.map_or(Slot::B, |h| h.slot);
        self.wipe_slot(last.other())?;
        self.dev.flush()?;
        self.wipe_slot(last)?;
        if !self.superblock_valid {
            self.write_block(self.lba(SUPERBLOCK_OFFSET), &layout::superblock_bytes())?;
        }
        self.dev.flush()?;
        // Both slots are empty on the medium: numbering starts again.
        self.current = None;
        self.last_sequence = 0;
        self.superblock_valid = true;
        self.unknown = [false; 2];
        Ok(())
    }

    /// Zeroes a slot: the header block first (it alone un-commits the
    /// record), then the rest, a page per write.
    fn wipe_slot(&mut self, slot: Slot) -> Result<(), BlockError> {
        let start = slot.offset();
        self.write_block(self.lba(start), &[])?;
        self.scratch.fill(0);
        let mut offset = self.block as u64;
        while offset < SLOT_BYTES as u64 {
            // Up to the next page boundary, then whole pages.
            let len = (ALIGN as u64 - offset % ALIGN as u64) as usize;
            let zeros = self.scratch.get(..len).ok_or(BlockError::BadLength)?;
            self.dev.write(self.first_lba + (start + offset) / self.block as u64, zeros)?;
            offset += len as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::testing::{MemDisk, PowerCutDisk};
    use crate::BlockSize;

    fn region_for(block: BlockSize) -> Region {
        Region { first_lba: 0, blocks: STORE_BYTES / block.bytes() as u64 }
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn load_vec<D: BlockDevice>(store: &mut Store<D>) -> Option<Vec<u8>> {
        let mut buf = vec![0xa5; MAX_PAYLOAD];
        store.load(&mut buf).unwrap().map(<[u8]>::to_vec)
    }

    #[test]
    fn round_trip_both_block_sizes() {
        for block in [BlockSize::B512, BlockSize::B4096] {
            let region = region_for(block);
            let mut disk = MemDisk::new(block, region.blocks);
            let mut store = Store::open(&mut disk, region).unwrap();
            assert_eq!(store.report().superblock, SuperblockState::Blank);
            assert_eq!(store.report().slots, [SlotState::Empty; 2]);
            assert_eq!(load_vec(&mut store), None);
            let lens = [0, 1, 35, 511, 512, 513, 4095, 4096, 4097, 20 * 1024 + 300, MAX_PAYLOAD - 1, MAX_PAYLOAD];
            for (i, &len) in lens.iter().enumerate() {
                let p = payload(len, i as u8);
                let info = store.save(&p).unwrap();
                assert_eq!(info, RecordInfo { slot: Slot::BOTH[i % 2], sequence: i as u64 + 1, len });
                assert_eq!(load_vec(&mut store).as_deref(), Some(&p[..]), "{block:?} len {len}");
                let mut reopened = Store::open(&mut *store.device(), region).unwrap();
                assert_eq!(reopened.report().superblock, SuperblockState::Valid);
                assert_eq!(reopened.current(), Some(info));
                assert_eq!(reopened.report().damaged_slots(), 0);
                assert_eq!(load_vec(&mut reopened).as_deref(), Some(&p[..]));
            }
        }
    }

    #[test]
    fn one_save_is_a_payload_write_a_flush_a_commit_and_a_flush() {
        let region = region_for(BlockSize::B512);
        let mut disk = PowerCutDisk::new(MemDisk::new(BlockSize::B512, region.blocks), true);
        let mut store = Store::open(&mut disk, region).unwrap();
        store.save(b"first").unwrap(); // also writes the superblock
        let before = store.device().log().len();
        store.save(&payload(20 * 1024 + 100, 1)).unwrap();
        use crate::testing::Op;
        let slot_b = (layout::SLOT_OFFSET[1] / 512, (layout::SLOT_OFFSET[1] + PAYLOAD_OFFSET) / 512);
        assert_eq!(
            &store.device().log()[before..],
            &[
                Op::Write { lba: slot_b.1, blocks: 40 },
                Op::Write { lba: slot_b.1 + 40, blocks: 1 },
                Op::Flush,
                Op::Write { lba: slot_b.0, blocks: 1 },
                Op::Flush,
            ]
        );
    }

    #[test]
    fn region_is_checked_and_nothing_outside_it_is_touched() {
        let block = BlockSize::B512;
        let region = Region { first_lba: 2048, blocks: STORE_BYTES / 512 + 5 };
        let mut disk = MemDisk::from_image(block, vec![0xa5; 512 * (2048 + region.blocks as usize + 100)]);
        assert_eq!(Store::open(&mut disk, Region { first_lba: 2049, ..region }).err(), Some(StoreError::RegionMisaligned));
        assert_eq!(Store::open(&mut disk, Region { first_lba: 2048, blocks: 279 }).err(), Some(StoreError::RegionTooSmall));
        assert_eq!(Store::open(&mut disk, Region { first_lba: 2048, blocks: 1 << 20 }).err(), Some(StoreError::RegionOutsideDevice));
        assert_eq!(Store::open(&mut disk, Region { first_lba: u64::MAX, blocks: 2 }).err(), Some(StoreError::RegionOutsideDevice));
        let mut store = Store::open(&mut disk, region).unwrap();
        // 0xa5 everywhere: not ours, reported, not used.
        assert_eq!(store.report().superblock, SuperblockState::Corrupt(Corruption::Magic));
        assert_eq!(store.report().damaged_slots(), 2);
        store.save(b"hello").unwrap();
        store.erase().unwrap();
        store.save(b"again").unwrap();
        let image = disk.image();
        let start = 2048 * 512;
        let end = start + STORE_BYTES as usize;
        assert!(image[..start].iter().all(|&b| b == 0xa5));
        assert!(image[end..].iter().all(|&b| b == 0xa5));
        let mut store = Store::open(&mut disk, region).unwrap();
        assert_eq!(store.report().superblock, SuperblockState::Valid);
        assert_eq!(load_vec(&mut store).as_deref(), Some(&b"again"[..]));
    }

    #[test]
    fn load_and_save_check_sizes() {
        let region = region_for(BlockSize::B4096);
        let mut disk = MemDisk::new(BlockSize::B4096, region.blocks);
        let mut store = Store::open(&mut disk, region).unwrap();
        assert_eq!(store.save(&vec![0; MAX_PAYLOAD + 1]).err(), Some(StoreError::PayloadTooLarge { len: MAX_PAYLOAD + 1 }));
        assert_eq!(store.current(), None);
        store.save(&[1; 100]).unwrap();
        let mut small = [0u8; 99];
        assert_eq!(store.load(&mut small).err(), Some(StoreError::BufferTooSmall { needed: 100 }));
        let mut exact = [0u8; 100];
        assert_eq!(store.load(&mut exact).unwrap(), Some(&[1u8; 100][..]));
    }

    #[test]
    fn erase_wipes_both_slots_and_keeps_the_superblock() {
        let region = region_for(BlockSize::B512);
        let mut disk = MemDisk::new(BlockSize::B512, region.blocks);
        let mut store = Store::open(&mut disk, region).unwrap();
        store.save(&[0x11; 3000]).unwrap();
        store.save(&[0x22; 3000]).unwrap();
        store.erase().unwrap();
        assert_eq!(store.current(), None);
        assert_eq!(load_vec(&mut store), None);
        let image = disk.image();
        assert!(image[layout::SUPERBLOCK_LEN..].iter().all(|&b| b == 0), "key material is overwritten");
        assert_eq!(layout::check_superblock(image), SuperblockState::Valid);
        let mut store = Store::open(&mut disk, region).unwrap();
        assert_eq!(store.report().slots, [SlotState::Empty; 2]);
        assert_eq!(store.save(b"x").unwrap().sequence, 1);
        store.save(b"y").unwrap();
        store.erase().unwrap();
        assert_eq!(store.save(b"z").unwrap(), RecordInfo { slot: Slot::A, sequence: 1, len: 1 }, "in session too");
    }

    #[test]
    fn newer_format_is_refused_until_formatted() {
        let region = region_for(BlockSize::B512);
        let mut disk = MemDisk::new(BlockSize::B512, region.blocks);
        Store::open(&mut disk, region).unwrap().save(b"v1").unwrap();
        let mut sb = layout::superblock_bytes();
        sb[8] = 2;
        let crc = layout::crc32c(&sb[..32]);
        sb[32..].copy_from_slice(&crc.to_le_bytes());
        disk.image_mut()[..layout::SUPERBLOCK_LEN].copy_from_slice(&sb);
        assert_eq!(Store::open(&mut disk, region).err(), Some(StoreError::UnsupportedFormat { version: 2 }));
        let mut store = Store::format(&mut disk, region).unwrap();
        assert_eq!(store.current(), None);
        store.save(b"fresh").unwrap();
        let mut store = Store::open(&mut disk, region).unwrap();
        assert_eq!(store.report().superblock, SuperblockState::Valid);
        assert_eq!(load_vec(&mut store).as_deref(), Some(&b"fresh"[..]));
    }

    #[test]
    fn damaged_superblock_costs_no_data() {
        let region = region_for(BlockSize::B512);
        let mut disk = MemDisk::new(BlockSize::B512, region.blocks);
        Store::open(&mut disk, region).unwrap().save(b"keep me").unwrap();
        disk.image_mut()[3] ^= 0x40;
        let mut store = Store::open(&mut disk, region).unwrap();
        assert_eq!(store.report().superblock, SuperblockState::Corrupt(Corruption::Magic));
        assert_eq!(load_vec(&mut store).as_deref(), Some(&b"keep me"[..]));
        store.save(b"next").unwrap();
        assert_eq!(Store::open(&mut disk, region).unwrap().report().superblock, SuperblockState::Valid);
    }

    #[test]
    fn corrupt_current_record_falls_back_to_the_other_slot() {
        let region = region_for(BlockSize::B512);
        let mut disk = MemDisk::new(BlockSize::B512, region.blocks);
        let mut store = Store::open(&mut disk, region).unwrap();
        store.save(b"older").unwrap();
        store.save(b"newer").unwrap();
        // Rot in slot B's payload.
        let at = (layout::SLOT_OFFSET[1] + PAYLOAD_OFFSET) as usize;
        disk.image_mut()[at] ^= 1;
        let mut store = Store::open(&mut disk, region).unwrap();
        assert_eq!(store.report().slots[1], SlotState::Corrupt(Corruption::RecordChecksum));
        assert_eq!(store.report().damaged_slots(), 1);
        assert_eq!(load_vec(&mut store).as_deref(), Some(&b"older"[..]));
        // The next save goes to the damaged slot, not over the survivor.
        assert_eq!(store.save(b"newest").unwrap(), RecordInfo { slot: Slot::B, sequence: 2, len: 6 });
    }

    #[test]
    fn load_checks_the_record_again() {
        let region = region_for(BlockSize::B512);
        let mut disk = MemDisk::new(BlockSize::B512, region.blocks);
        let mut store = Store::open(&mut disk, region).unwrap();
        store.save(&[7; 1000]).unwrap();
        let at = (layout::SLOT_OFFSET[0] + PAYLOAD_OFFSET) as usize + 999;
        store.device().image_mut()[at] ^= 0x80;
        let mut buf = [0u8; 1000];
        assert_eq!(store.load(&mut buf).err(), Some(StoreError::Corrupt(Corruption::RecordChecksum)));
    }

    /// A device whose reads of one block fail.
    struct BadBlock {
        disk: MemDisk,
        bad: u64,
    }

    impl BlockDevice for BadBlock {
        fn block_size(&self) -> BlockSize {
            self.disk.block_size()
        }
        fn block_count(&self) -> u64 {
            self.disk.block_count()
        }
        fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            let blocks = (buf.len() / 512) as u64;
            if (lba..lba + blocks).contains(&self.bad) {
                return Err(BlockError::Io);
            }
            self.disk.read(lba, buf)
        }
        fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
            self.disk.write(lba, data)
        }
        fn flush(&mut self) -> Result<(), BlockError> {
            self.disk.flush()
        }
    }

    #[test]
    fn unreadable_slot_is_retired_after_the_next_save() {
        let region = region_for(BlockSize::B512);
        let mut disk = MemDisk::new(BlockSize::B512, region.blocks);
        let mut store = Store::open(&mut disk, region).unwrap();
        for i in 0..5u8 {
            store.save(&[i; 10]).unwrap();
        }
        // A holds 5 (newest), B holds 4. With A's header unreadable the store
        // sees only B; with B's, only A.
        let header_a = layout::SLOT_OFFSET[0] / 512;
        let header_b = layout::SLOT_OFFSET[1] / 512;
        let mut flaky = BadBlock { disk, bad: header_a };
        let store = Store::open(&mut flaky, region).unwrap();
        assert_eq!(store.report().slots[0], SlotState::Unreadable(BlockError::Io));
        assert_eq!(store.current().map(|c| c.sequence), Some(4));
        flaky.bad = header_b;
        let store = Store::open(&mut flaky, region).unwrap();
        assert_eq!(store.current().map(|c| c.sequence), Some(5));
        // Only B unreadable: current is A (5); the save goes to B and
        // replaces whatever it held.
        let mut store = Store::open(&mut flaky, region).unwrap();
        assert_eq!(store.save(b"six").unwrap(), RecordInfo { slot: Slot::B, sequence: 6, len: 3 });
        let mut disk = flaky.disk;
        let mut store = Store::open(&mut disk, region).unwrap();
        assert_eq!(load_vec(&mut store).as_deref(), Some(&b"six"[..]));
    }

    #[test]
    fn both_slots_unreadable_then_a_save_retires_the_other() {
        let region = region_for(BlockSize::B512);
        let mut disk = MemDisk::new(BlockSize::B512, region.blocks);
        let mut store = Store::open(&mut disk, region).unwrap();
        for i in 0..4u8 {
            store.save(&[i; 10]).unwrap();
        }
        // B holds 4 (newest). Its payload block is unreadable at open, so the
        // store sees A (3) and writes 5 to B... unless we hide A too: make the
        // first payload block of B bad and corrupt A, so nothing is current.
        let payload_b = (layout::SLOT_OFFSET[1] + PAYLOAD_OFFSET) / 512;
        disk.image_mut()[layout::SLOT_OFFSET[0] as usize] ^= 1;
        let mut flaky = BadBlock { disk, bad: payload_b };
        let mut store = Store::open(&mut flaky, region).unwrap();
        assert_eq!(store.report().slots, [SlotState::Corrupt(Corruption::Magic), SlotState::Unreadable(BlockError::Io)]);
        assert_eq!(store.current(), None);
        assert_eq!(store.save(b"one").unwrap(), RecordInfo { slot: Slot::A, sequence: 1, len: 3 });
        // B (sequence 4) would have beaten it; the save retired B.
        let mut disk = flaky.disk;
        let mut store = Store::open(&mut disk, region).unwrap();
        assert_eq!(store.report().slots[1], SlotState::Empty);
        assert_eq!(load_vec(&mut store).as_deref(), Some(&b"one"[..]));
    }

    #[test]
    fn failed_save_keeps_the_old_record_current() {
        for write_cache in [false, true] {
            for op in 0..5 {
                let region = region_for(BlockSize::B512);
                let mut medium = MemDisk::new(BlockSize::B512, region.blocks);
                Store::open(&mut medium, region).unwrap().save(b"old").unwrap();
                let mut disk = PowerCutDisk::new(medium, write_cache).with_failure(op);
                let mut store = Store::open(&mut disk, region).unwrap();
                assert!(store.save(&[9; 1000]).is_err(), "op {op}");
                assert_eq!(load_vec(&mut store).as_deref(), Some(&b"old"[..]));
                // The next save still goes to the free slot and wins.
                let info = store.save(b"new").unwrap();
                assert_eq!((info.slot, info.sequence), (Slot::B, 3));
                store.device().flush().unwrap();
                let mut medium = disk.into_medium();
                let mut store = Store::open(&mut medium, region).unwrap();
                assert_eq!(load_vec(&mut store).as_deref(), Some(&b"new"[..]));
            }
        }
    }
}

//! The on-disk format, version 1: one superblock and two record slots.
//!
//! Offsets are bytes from the start of the region and do not depend on the
//! block size: the same image reads back on a 512-byte and a 4096-byte device.
//! Everything starts on a 4 KiB boundary, so on a 512e drive (512-byte logical,
//! 4 KiB physical sectors) no write of the store shares a physical sector with
//! another part of it, and the drive's read-modify-write of a physical sector
//! can never tear a slot the store is not writing.
//!
//! ```text
//!   offset   size     what
//!   0        4 KiB    superblock (first 36 bytes used, rest zero)
//!   4 KiB    68 KiB   slot A: 4 KiB header page (first 36 bytes used), 64 KiB payload
//!   72 KiB   68 KiB   slot B: same
//!   140 KiB           end of the store; the region may be larger (the rest is unused)
//! ```
//!
//! Superblock (written by the first save, by [`Store::erase`] and by
//! [`Store::format`]; identifies the region and pins the geometry):
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0  | 8 | magic           | `RTRDSTOR` |
//! | 8  | 4 | format version  | 1 |
//! | 12 | 4 | alignment       | 4096 |
//! | 16 | 4 | max payload     | 65536 |
//! | 20 | 4 | slot size       | 69632 |
//! | 24 | 4 | slot A offset   | 4096 |
//! | 28 | 4 | slot B offset   | 73728 |
//! | 32 | 4 | header CRC      | CRC-32C of bytes 0..32 |
//!
//! Record header (the first block of a slot; writing it is the commit):
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0  | 8 | magic           | `RTRDRECD` |
//! | 8  | 4 | format version  | 1 |
//! | 12 | 4 | slot            | 0 = A, 1 = B (the slot it was written to) |
//! | 16 | 8 | sequence number | 1 ..= 2⁶⁴−2, one more than the record it replaces |
//! | 24 | 4 | payload length  | 0 ..= 65536 |
//! | 28 | 4 | record CRC      | CRC-32C of header bytes 0..28, then the payload |
//! | 32 | 4 | header CRC      | CRC-32C of bytes 0..32 |
//!
//! The payload starts 4 KiB into the slot and is zero-padded to a whole
//! block. All integers are little-endian. A header whose first 36 bytes are
//! zero is an empty slot (never written, or erased).
//!
//! The checksum is CRC-32C (Castagnoli, the iSCSI/ext4/btrfs polynomial): its
//! Hamming distance stays at 4 for messages up to 2³¹ bits, where the IEEE
//! polynomial drops to 3 beyond ~11 KiB — our records are up to 64 KiB.
//! A cryptographic hash would not add protection against an attacker (there
//! is no key: whoever can write the disk can recompute any digest), and the
//! commit protocol does not rely on the checksum to reject torn saves (see
//! `README.md`): it is there for media corruption and stale data.
//!
//! [`Store::erase`]: crate::Store::erase
//! [`Store::format`]: crate::Store::format

use core::ops::Range;

use crc::{Crc, Digest, Table};

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Every part of the store starts on this boundary (bytes).
pub const ALIGN: usize = 4096;

/// The largest payload a record holds: 64 KiB. The configuration's wire
/// form is at most 20 KiB (`config_schema::CONFIG_WIRE_MAX`), the key slots
/// and box state a few hundred bytes; the rest is room to grow without a new
/// format.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// A slot: one 4 KiB header page and the payload area.
pub const SLOT_BYTES: usize = ALIGN + MAX_PAYLOAD;

/// Where the superblock is (bytes from the region start).
pub const SUPERBLOCK_OFFSET: u64 = 0;

/// Where slots A and B start (bytes from the region start).
pub const SLOT_OFFSET: [u64; 2] = [ALIGN as u64, (ALIGN + SLOT_BYTES) as u64];

/// Where a slot's payload starts (bytes from the slot start).
pub const PAYLOAD_OFFSET: u64 = ALIGN as u64;

/// How many bytes of the region the store uses: 140 KiB.
pub const STORE_BYTES: u64 = (ALIGN + 2 * SLOT_BYTES) as u64;

/// The superblock's magic.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"RTRDSTOR";

/// A record header's magic.
pub const RECORD_MAGIC: [u8; 8] = *b"RTRDRECD";

/// Bytes of the superblock that carry fields (the rest of its block is zero).
pub const SUPERBLOCK_LEN: usize = 36;

/// Bytes of a record header that carry fields (the rest of its block is zero).
pub const HEADER_LEN: usize = 36;

const _: () = assert!(SLOT_OFFSET[0].is_multiple_of(ALIGN as u64) && SLOT_OFFSET[1].is_multiple_of(ALIGN as u64));
const _: () = assert!(SLOT_OFFSET[1] == SLOT_OFFSET[0] + SLOT_BYTES as u64 && STORE_BYTES == SLOT_OFFSET[1] + SLOT_BYTES as u64);
const _: () = assert!(MAX_PAYLOAD.is_multiple_of(ALIGN) && MAX_PAYLOAD <= u32::MAX as usize);
const _: () = assert!(SUPERBLOCK_LEN <= 512 && HEADER_LEN <= 512);

mod field {
    use core::ops::Range;

    pub const MAGIC: Range<usize> = 0..8;
    pub const VERSION: Range<usize> = 8..12;

    pub const SB_ALIGN: Range<usize> = 12..16;
    pub const SB_MAX_PAYLOAD: Range<usize> = 16..20;
    pub const SB_SLOT_BYTES: Range<usize> = 20..24;
    pub const SB_SLOT_A: Range<usize> = 24..28;
    pub const SB_SLOT_B: Range<usize> = 28..32;
    pub const SB_CRC: Range<usize> = 32..36;

    pub const REC_SLOT: Range<usize> = 12..16;
    pub const REC_SEQUENCE: Range<usize> = 16..24;
    pub const REC_LEN: Range<usize> = 24..28;
    pub const REC_CRC: Range<usize> = 28..32;
    pub const REC_HEADER_CRC: Range<usize> = 32..36;

    /// What the record CRC covers of the header; what the header CRC covers.
    pub const REC_COVERED: Range<usize> = 0..28;
    pub const HEADER_COVERED: Range<usize> = 0..32;
}

/// CRC-32C, slice-by-16 (the table is 16 KiB of read-only data; a record is
/// checked in well under a millisecond).
static CRC32C: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of `bytes` — the one checksum of the format.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

/// One of the two record slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The first slot (index 0).
    A,
    /// The second slot (index 1).
    B,
}

impl Slot {
    /// Both slots, in index order.
    pub const BOTH: [Slot; 2] = [Slot::A, Slot::B];

    /// 0 for A, 1 for B (the value stored in a record header).
    pub const fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }

    /// The other slot.
    pub const fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Where the slot starts (bytes from the region start).
    pub const fn offset(self) -> u64 {
        match self {
            Slot::A => SLOT_OFFSET[0],
            Slot::B => SLOT_OFFSET[1],
        }
    }
}

/// Why a superblock or a record is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// No magic: content this crate did not write, or a write torn in its
    /// first bytes.
    Magic,
    /// The header's own checksum does not match (a torn commit, rot).
    HeaderChecksum,
    /// A format version this crate does not know.
    Version(u32),
    /// The record names another slot than the one it was read from (a
    /// misdirected or copied write).
    WrongSlot(u32),
    /// Sequence number 0 or 2⁶⁴−1 (never written).
    Sequence,
    /// A payload length above [`MAX_PAYLOAD`].
    Length(u32),
    /// The checksum over header and payload does not match (a save
    /// interrupted before its commit, rot).
    RecordChecksum,
    /// A version-1 superblock describing another layout than version 1's.
    Geometry,
}

/// What a superblock block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuperblockState {
    /// A valid version-1 superblock.
    Valid,
    /// All zero: never formatted.
    Blank,
    /// A valid superblock of a newer format version: the store refuses to
    /// open (or write) it; only [`Store::format`](crate::Store::format) does.
    Newer(u32),
    /// Anything else.
    Corrupt(Corruption),
    /// The device failed to read it.
    Unreadable(crate::BlockError),
}

fn get<const N: usize>(b: &[u8], r: Range<usize>) -> Option<[u8; N]> {
    b.get(r)?.try_into().ok()
}

fn le_u32(b: &[u8], r: Range<usize>) -> Option<u32> {
    get(b, r).map(u32::from_le_bytes)
}

fn put(b: &mut [u8], r: Range<usize>, v: &[u8]) {
    if let Some(dst) = b.get_mut(r) {
        if dst.len() == v.len() {
            dst.copy_from_slice(v);
        }
    }
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// The version-1 superblock's bytes (the rest of its block is zero).
pub fn superblock_bytes() -> [u8; SUPERBLOCK_LEN] {
    let mut b = [0u8; SUPERBLOCK_LEN];
    put(&mut b, field::MAGIC, &SUPERBLOCK_MAGIC);
    put(&mut b, field::VERSION, &FORMAT_VERSION.to_le_bytes());
    put(&mut b, field::SB_ALIGN, &(ALIGN as u32).to_le_bytes());
    put(&mut b, field::SB_MAX_PAYLOAD, &(MAX_PAYLOAD as u32).to_le_bytes());
    put(&mut b, field::SB_SLOT_BYTES, &(SLOT_BYTES as u32).to_le_bytes());
    put(&mut b, field::SB_SLOT_A, &(SLOT_OFFSET[0] as u32).to_le_bytes());
    put(&mut b, field::SB_SLOT_B, &(SLOT_OFFSET[1] as u32).to_le_bytes());
    let crc = b.get(field::HEADER_COVERED).map_or(0, crc32c);
    put(&mut b, field::SB_CRC, &crc.to_le_bytes());
    b
}

/// Checks a superblock (the start of the region's first block). Never panics.
pub fn check_superblock(block: &[u8]) -> SuperblockState {
    let Some(b) = block.get(..SUPERBLOCK_LEN) else { return SuperblockState::Corrupt(Corruption::Magic) };
    if is_zero(b) {
        return SuperblockState::Blank;
    }
    if get::<8>(b, field::MAGIC) != Some(SUPERBLOCK_MAGIC) {
        return SuperblockState::Corrupt(Corruption::Magic);
    }
    let covered = b.get(field::HEADER_COVERED).map(crc32c);
    if covered.is_none() || covered != le_u32(b, field::SB_CRC) {
        return SuperblockState::Corrupt(Corruption::HeaderChecksum);
    }
    match le_u32(b, field::VERSION) {
        Some(FORMAT_VERSION) => {}
        Some(v) if v > FORMAT_VERSION => return SuperblockState::Newer(v),
        Some(v) => return SuperblockState::Corrupt(Corruption::Version(v)),
        None => return SuperblockState::Corrupt(Corruption::Magic),
    }
    // Version 1 has one geometry; anything else is damage, not a variant.
    if Some(b) != superblock_bytes().get(..) {
        return SuperblockState::Corrupt(Corruption::Geometry);
    }
    SuperblockState::Valid
}

/// A record header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The slot the record is written to.
    pub slot: Slot,
    /// Its sequence number (higher is newer).
    pub sequence: u64,
    /// The payload length in bytes.
    pub payload_len: u32,
    /// CRC-32C of header bytes 0..28, then the payload.
    pub record_crc: u32,
}

/// Why a header block does not hold a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// All zero: an empty slot.
    Empty,
    /// Not a valid header.
    Corrupt(Corruption),
}

/// An incremental record checksum: [`RecordHeader::digest`], then every
/// payload byte in order, then [`RecordDigest::finish`].
pub struct RecordDigest(Digest<'static, u32, Table<16>>);

impl RecordDigest {
    /// Adds payload bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The record CRC.
    pub fn finish(self) -> u32 {
        self.0.finalize()
    }
}

impl RecordHeader {
    /// The header for `payload` saved as `sequence` into `slot`. `None` if
    /// the payload is longer than [`MAX_PAYLOAD`].
    pub fn for_payload(slot: Slot, sequence: u64, payload: &[u8]) -> Option<RecordHeader> {
        let payload_len = u32::try_from(payload.len()).ok().filter(|&n| n as usize <= MAX_PAYLOAD)?;
        let mut header = RecordHeader { slot, sequence, payload_len, record_crc: 0 };
        let mut digest = header.digest();
        digest.update(payload);
        header.record_crc = digest.finish();
        Some(header)
    }

    /// Header bytes 0..28 (what the record CRC covers of the header).
    fn covered(&self) -> [u8; 28] {
        let mut b = [0u8; 28];
        put(&mut b, field::MAGIC, &RECORD_MAGIC);
        put(&mut b, field::VERSION, &FORMAT_VERSION.to_le_bytes());
        put(&mut b, field::REC_SLOT, &(self.slot.index() as u32).to_le_bytes());
        put(&mut b, field::REC_SEQUENCE, &self.sequence.to_le_bytes());
        put(&mut b, field::REC_LEN, &self.payload_len.to_le_bytes());
        b
    }

    /// A record digest already fed with this header's covered bytes; feed it
    /// the payload to check or compute [`record_crc`](RecordHeader::record_crc).
    pub fn digest(&self) -> RecordDigest {
        let mut d = CRC32C.digest();
        d.update(&self.covered());
        RecordDigest(d)
    }

    /// The header's bytes (the rest of its block is zero).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        put(&mut b, field::REC_COVERED, &self.covered());
        put(&mut b, field::REC_CRC, &self.record_crc.to_le_bytes());
        let crc = b.get(field::HEADER_COVERED).map_or(0, crc32c);
        put(&mut b, field::REC_HEADER_CRC, &crc.to_le_bytes());
        b
    }

    /// Parses and checks the header read from `slot`'s first block: magic,
    /// header CRC, version, slot, sequence, length. The payload is checked
    /// separately against [`record_crc`](RecordHeader::record_crc). Never
    /// panics.
    pub fn parse(block: &[u8], slot: Slot) -> Result<RecordHeader, HeaderError> {
        let corrupt = |c| Err(HeaderError::Corrupt(c));
        let Some(b) = block.get(..HEADER_LEN) else { return corrupt(Corruption::Magic) };
        if is_zero(b) {
            return Err(HeaderError::Empty);
        }
        if get::<8>(b, field::MAGIC) != Some(RECORD_MAGIC) {
            return corrupt(Corruption::Magic);
        }
        let covered = b.get(field::HEADER_COVERED).map(crc32c);
        if covered.is_none() || covered != le_u32(b, field::REC_HEADER_CRC) {
            return corrupt(Corruption::HeaderChecksum);
        }
        let (Some(version), Some(slot_index), Some(sequence), Some(payload_len), Some(record_crc)) = (
            le_u32(b, field::VERSION),
            le_u32(b, field::REC_SLOT),
            get(b, field::REC_SEQUENCE).map(u64::from_le_bytes),
            le_u32(b, field::REC_LEN),
            le_u32(b, field::REC_CRC),
        ) else {
            return corrupt(Corruption::Magic);
        };
        if version != FORMAT_VERSION {
            return corrupt(Corruption::Version(version));
        }
        if slot_index as usize != slot.index() {
            return corrupt(Corruption::WrongSlot(slot_index));
        }
        if sequence == 0 || sequence == u64::MAX {
            return corrupt(Corruption::Sequence);
        }
        if payload_len as usize > MAX_PAYLOAD {
            return corrupt(Corruption::Length(payload_len));
        }
        Ok(RecordHeader { slot, sequence, payload_len, record_crc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The format's bytes, pinned. If one of these tests fails, the on-disk
    // format changed: bump FORMAT_VERSION and teach `open` the old one. The
    // CRCs were computed independently (a bitwise CRC-32C in Python).

    #[test]
    fn superblock_bytes_pinned() {
        #[rustfmt::skip]
        let want: [u8; SUPERBLOCK_LEN] = [
            b'R', b'T', b'R', b'D', b'S', b'T', b'O', b'R', // magic
            0x01, 0x00, 0x00, 0x00, // version 1
            0x00, 0x10, 0x00, 0x00, // alignment 4096
            0x00, 0x00, 0x01, 0x00, // max payload 65536
            0x00, 0x10, 0x01, 0x00, // slot size 69632
            0x00, 0x10, 0x00, 0x00, // slot A at 4096
            0x00, 0x20, 0x01, 0x00, // slot B at 73728
            0xda, 0x37, 0xa8, 0x51, // CRC-32C of bytes 0..32 = 0x51a837da
        ];
        assert_eq!(superblock_bytes(), want);
        assert_eq!(check_superblock(&want), SuperblockState::Valid);
    }

    #[test]
    fn record_header_bytes_pinned() {
        let h = RecordHeader::for_payload(Slot::B, 0x0102_0304_0506_0708, b"routerd").unwrap();
        #[rustfmt::skip]
        let want: [u8; HEADER_LEN] = [
            b'R', b'T', b'R', b'D', b'R', b'E', b'C', b'D', // magic
            0x01, 0x00, 0x00, 0x00, // version 1
            0x01, 0x00, 0x00, 0x00, // slot B
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // sequence
            0x07, 0x00, 0x00, 0x00, // payload length 7
            0x38, 0x0e, 0x8d, 0x1b, // record CRC: bytes 0..28, then "routerd" = 0x1b8d0e38
            0x57, 0x29, 0x70, 0x64, // header CRC: bytes 0..32 = 0x64702957
        ];
        assert_eq!(h.to_bytes(), want);
        assert_eq!(RecordHeader::parse(&want, Slot::B), Ok(h));
        assert_eq!(RecordHeader::parse(&want, Slot::A), Err(HeaderError::Corrupt(Corruption::WrongSlot(1))));
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // The catalogue's check value for CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn header_checks() {
        let good = RecordHeader::for_payload(Slot::A, 7, &[1, 2, 3]).unwrap();
        let mut b = [0xa5u8; 512];
        assert_eq!(RecordHeader::parse(&b, Slot::A), Err(HeaderError::Corrupt(Corruption::Magic)));
        b.fill(0);
        assert_eq!(RecordHeader::parse(&b, Slot::A), Err(HeaderError::Empty));
        b[..HEADER_LEN].copy_from_slice(&good.to_bytes());
        assert_eq!(RecordHeader::parse(&b, Slot::A), Ok(good));
        // Padding after the header is not part of it.
        b[HEADER_LEN..].fill(0xa5);
        assert_eq!(RecordHeader::parse(&b, Slot::A), Ok(good));
        // Any single flipped bit in the header is caught.
        for bit in 0..HEADER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(RecordHeader::parse(&c, Slot::A).is_err(), "bit {bit}");
        }
        // Fields are checked after the CRC: craft headers with valid CRCs.
        let reseal = |mut h: [u8; HEADER_LEN]| {
            let crc = crc32c(&h[..32]);
            h[32..36].copy_from_slice(&crc.to_le_bytes());
            h
        };
        let mut h = good.to_bytes();
        h[8] = 2;
        assert_eq!(RecordHeader::parse(&reseal(h), Slot::A), Err(HeaderError::Corrupt(Corruption::Version(2))));
        let mut h = good.to_bytes();
        h[16..24].fill(0);
        assert_eq!(RecordHeader::parse(&reseal(h), Slot::A), Err(HeaderError::Corrupt(Corruption::Sequence)));
        h[16..24].fill(0xff);
        assert_eq!(RecordHeader::parse(&reseal(h), Slot::A), Err(HeaderError::Corrupt(Corruption::Sequence)));
        let mut h = good.to_bytes();
        h[24..28].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert_eq!(RecordHeader::parse(&reseal(h), Slot::A), Err(HeaderError::Corrupt(Corruption::Length(MAX_PAYLOAD as u32 + 1))));
        assert!(RecordHeader::for_payload(Slot::A, 1, &[0; MAX_PAYLOAD + 1]).is_none());
        assert!(RecordHeader::for_payload(Slot::A, 1, &[0; MAX_PAYLOAD]).is_some());
    }

    #[test]
    fn superblock_checks() {
        assert_eq!(check_superblock(&[0; 512]), SuperblockState::Blank);
        assert_eq!(check_superblock(&[0xff; 512]), SuperblockState::Corrupt(Corruption::Magic));
        assert_eq!(check_superblock(&[0; 8]), SuperblockState::Corrupt(Corruption::Magic));
        let reseal = |mut b: [u8; SUPERBLOCK_LEN]| {
            let crc = crc32c(&b[..32]);
            b[32..36].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let mut b = superblock_bytes();
        b[35] ^= 1;
        assert_eq!(check_superblock(&b), SuperblockState::Corrupt(Corruption::HeaderChecksum));
        let mut b = superblock_bytes();
        b[8] = 9;
        assert_eq!(check_superblock(&reseal(b)), SuperblockState::Newer(9));
        b[8] = 0;
        assert_eq!(check_superblock(&reseal(b)), SuperblockState::Corrupt(Corruption::Version(0)));
        let mut b = superblock_bytes();
        b[24] = 0x20;
        assert_eq!(check_superblock(&reseal(b)), SuperblockState::Corrupt(Corruption::Geometry));
    }
}

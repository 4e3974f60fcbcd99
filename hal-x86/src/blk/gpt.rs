//! GPT: finding the box's state partition, and creating it on a blank disk.
//!
//! The product contract: the box keeps its state in a GPT partition
//! labelled `ROUTERD-STATE`, and never formats a disk the operator did not
//! name. This module is the pure half of that (no hardware; any
//! [`BlockDevice`]):
//!
//! - [`find_state_partition`] never writes. It requires a protective (or
//!   hybrid) MBR, reads the primary GPT header at LBA 1 and the backup at the
//!   disk's last LBA (or where the primary says, for a disk that grew), checks
//!   each header's CRC-32, its fields against the disk, and its entry array's
//!   CRC-32, and uses the primary when it is whole, else the backup. The
//!   health of both copies is reported so the caller can log a damaged one.
//! - The state partition is the one whose **name** is `ROUTERD-STATE`
//!   (UTF-16LE, the GPT partition label). The name is the contract an
//!   operator can see and set with any tool (`sgdisk -c 1:ROUTERD-STATE`);
//!   the type GUID is not checked when finding. Two partitions with that
//!   name are refused, never guessed between.
//! - [`create_state_partition`] writes a fresh GPT holding one partition —
//!   `ROUTERD-STATE`, 1 MiB at 1 MiB, of type [`STATE_TYPE_GUID`] (so tools
//!   show it as nothing they know and no OS mounts it) — and leaves the rest
//!   of the disk unpartitioned. Unless told to overwrite, it refuses a disk
//!   with any partition table, or any non-zero byte in its first or last MiB.
//!   It flushes, then reads the table back through `find_state_partition`.
//! - No disk content makes this module panic: every value read from the disk
//!   is range-checked with checked arithmetic before use (a fuzz test below).
//!   Nothing allocates; the largest buffer is one 4 KiB scratch page.
//!
//! Layout written (512-byte blocks; 4096-byte blocks scale the LBAs): LBA 0
//! protective MBR, LBA 1 header, LBAs 2–33 the 128 × 128-byte entry array,
//! first usable LBA 34, the partition at LBAs 2048–4095, the backup array at
//! LBAs N−33…N−2 and the backup header at N−1 (UEFI 2.10 §5.3).

use super::{BlockDevice, BlockError, BlockSize};
use core::fmt;

/// The state partition's GPT name.
pub const STATE_PARTITION_NAME: &str = "ROUTERD-STATE";

/// The type GUID [`create_state_partition`] gives the state partition:
/// `5a2f0414-229e-43b5-9209-78da4a209467`, a random (version 4) GUID made
/// once for routerd. Informational: finding goes by name.
pub const STATE_TYPE_GUID: Guid = Guid::from_fields(0x5a2f_0414, 0x229e, 0x43b5, [0x92, 0x09, 0x78, 0xda, 0x4a, 0x20, 0x94, 0x67]);

/// Size of the partition [`create_state_partition`] makes (the store needs
/// 140 KiB; the rest is room for a later format).
pub const STATE_PARTITION_BYTES: u64 = 1 << 20;

/// Where partitions start: 1 MiB, what every current partitioning tool uses
/// (4 KiB-aligned for 512e drives, erase-block aligned for flash).
pub const PARTITION_ALIGN_BYTES: u64 = 1 << 20;

/// How much of each end of the disk must be zero before
/// [`create_state_partition`] writes to it without being told to overwrite.
pub const BLANK_CHECK_BYTES: u64 = 1 << 20;

/// The header signature, "EFI PART".
const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Revision 1.0, the only one there is.
const REVISION: u32 = 0x0001_0000;
/// Bytes of the header covered by its CRC (UEFI: 92).
const HEADER_SIZE: usize = 92;
/// The entry array we write: 128 entries of 128 bytes (16 KiB, the UEFI
/// minimum, what every tool writes).
const ENTRY_SIZE: usize = 128;
const ENTRY_COUNT: u32 = 128;
const ENTRY_ARRAY_BYTES: u64 = ENTRY_SIZE as u64 * ENTRY_COUNT as u64;
/// Largest entry array we read from a disk: 1 MiB (8192 entries). Far above
/// anything a tool writes; bounds the reads a corrupt header can ask for.
const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;
/// Scratch buffer and read size: one 4 KiB page (a whole block at either
/// block size; entry sizes up to 4 KiB never straddle two reads).
const SCRATCH: usize = 4096;
/// MBR partition type of a GPT protective partition.
const MBR_TYPE_PROTECTIVE: u8 = 0xee;

/// A GUID as GPT stores it: the first three fields little-endian, the last
/// eight bytes as they are ("mixed endian").
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]])
    }

    /// A random (version 4, RFC 4122 variant) GUID from 16 random bytes.
    pub fn new_v4(random: [u8; 16]) -> Guid {
        let r = random;
        let d1 = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        let d2 = u16::from_le_bytes([r[4], r[5]]);
        let d3 = (u16::from_le_bytes([r[6], r[7]]) & 0x0fff) | 0x4000;
        Guid::from_fields(d1, d2, d3, [(r[8] & 0x3f) | 0x80, r[9], r[10], r[11], r[12], r[13], r[14], r[15]])
    }

    /// The all-zero GUID (an unused partition entry's type).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
        let d2 = u16::from_le_bytes([g[4], g[5]]);
        let d3 = u16::from_le_bytes([g[6], g[7]]);
        write!(f, "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-", g[8], g[9])?;
        g[10..].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// CRC-32/ISO-HDLC (the IEEE 802.3 polynomial, reflected), GPT's checksum.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(bytes);
    c.finish()
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// A CRC-32 over data that arrives in pieces (the entry array, read a page
/// at a time).
struct Crc32(u32);

impl Crc32 {
    fn new() -> Crc32 {
        Crc32(!0)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

/// Which copy of the GPT was used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableCopy {
    /// The header at LBA 1 and its entry array.
    Primary,
    /// The header at the disk's last LBA (or where the primary said) and its
    /// entry array.
    Backup,
}

/// Why one copy of the GPT (a header and its entry array) was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The header's block could not be read.
    Unreadable(BlockError),
    /// No "EFI PART" signature: no GPT header here.
    NoSignature,
    /// The header says it is shorter than 92 bytes or longer than a block.
    HeaderSize(u32),
    /// The header's CRC-32 does not match.
    HeaderCrc,
    /// The header says it lives at another LBA than where it was read.
    WrongLba { found: u64 },
    /// The usable range is empty, past the disk, or covers the header or
    /// its entry array.
    UsableRange,
    /// The entry array's size, entry size or location is not acceptable.
    EntryArray,
    /// The entry array could not be read.
    EntriesUnreadable(BlockError),
    /// The entry array's CRC-32 does not match the header's.
    EntriesCrc,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Unreadable(e) => write!(f, "header unreadable ({e:?})"),
            Fault::NoSignature => write!(f, "no GPT header"),
            Fault::HeaderSize(n) => write!(f, "header size {n} out of range"),
            Fault::HeaderCrc => write!(f, "header CRC mismatch"),
            Fault::WrongLba { found } => write!(f, "header claims LBA {found}"),
            Fault::UsableRange => write!(f, "usable range invalid"),
            Fault::EntryArray => write!(f, "entry array geometry invalid"),
            Fault::EntriesUnreadable(e) => write!(f, "entry array unreadable ({e:?})"),
            Fault::EntriesCrc => write!(f, "entry array CRC mismatch"),
        }
    }
}

/// What LBA 0 holds when it is not a protective MBR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotGpt {
    /// LBA 0 is all zero: a blank disk (or one whose MBR was wiped).
    Blank,
    /// No 0x55AA boot signature: no partition table of any kind we know.
    NoMbrSignature,
    /// An MBR partition table without a GPT protective entry (type 0xEE).
    MbrPartitioned,
}

/// Why the state partition was not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindError {
    /// LBA 0 could not be read.
    Io(BlockError),
    /// The disk has no GPT (see [`NotGpt`]).
    NotGpt(NotGpt),
    /// Neither copy of the GPT is whole.
    Damaged { primary: Fault, backup: Fault },
    /// The GPT has no partition named `ROUTERD-STATE`.
    NotFound,
    /// More than one partition is named `ROUTERD-STATE`.
    Ambiguous { count: u32 },
    /// The partition's range is empty or outside the GPT's usable range.
    BadRange { first_lba: u64, last_lba: u64 },
}

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindError::Io(e) => write!(f, "cannot read LBA 0 ({e:?})"),
            FindError::NotGpt(NotGpt::Blank) => write!(f, "no partition table (blank disk)"),
            FindError::NotGpt(NotGpt::NoMbrSignature) => write!(f, "no partition table"),
            FindError::NotGpt(NotGpt::MbrPartitioned) => write!(f, "an MBR partition table, not GPT"),
            FindError::Damaged { primary, backup } => write!(f, "GPT damaged: primary {primary}, backup {backup}"),
            FindError::NotFound => write!(f, "no partition named {STATE_PARTITION_NAME}"),
            FindError::Ambiguous { count } => write!(f, "{count} partitions named {STATE_PARTITION_NAME}"),
            FindError::BadRange { first_lba, last_lba } => {
                write!(f, "{STATE_PARTITION_NAME} spans LBAs {first_lba}..={last_lba}, outside the usable range")
            }
        }
    }
}

/// The state partition as the GPT describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatePartition {
    /// Its index in the entry array (0-based; tools number from 1).
    pub index: u32,
    /// Its first block (in the device's logical blocks).
    pub first_lba: u64,
    /// How many blocks it has (at least 1).
    pub blocks: u64,
    /// Its type GUID ([`STATE_TYPE_GUID`] when routerd made it).
    pub type_guid: Guid,
    /// Its unique GUID.
    pub unique_guid: Guid,
}

/// The state partition and the health of the table it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub partition: StatePartition,
    /// The copy the partition was read from.
    pub used: TableCopy,
    /// Each copy: whole, or why not.
    pub primary: Result<(), Fault>,
    pub backup: Result<(), Fault>,
    /// Both copies are whole and describe the same table (same disk GUID,
    /// usable range and entry array). False means one wants repairing.
    pub copies_agree: bool,
}

/// A header whose fields were checked against the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    entry_count: u32,
    entry_size: u32,
    entries_crc: u32,
}

mod field {
    use core::ops::Range;
    pub const SIGNATURE: Range<usize> = 0..8;
    pub const REVISION: Range<usize> = 8..12;
    pub const HEADER_SIZE: Range<usize> = 12..16;
    pub const HEADER_CRC: Range<usize> = 16..20;
    pub const MY_LBA: Range<usize> = 24..32;
    pub const ALTERNATE_LBA: Range<usize> = 32..40;
    pub const FIRST_USABLE: Range<usize> = 40..48;
    pub const LAST_USABLE: Range<usize> = 48..56;
    pub const DISK_GUID: Range<usize> = 56..72;
    pub const ENTRIES_LBA: Range<usize> = 72..80;
    pub const ENTRY_COUNT: Range<usize> = 80..84;
    pub const ENTRY_SIZE: Range<usize> = 84..88;
    pub const ENTRIES_CRC: Range<usize> = 88..92;

    /// Within one partition entry.
    pub const TYPE_GUID: Range<usize> = 0..16;
    pub const UNIQUE_GUID: Range<usize> = 16..32;
    pub const FIRST_LBA: Range<usize> = 32..40;
    pub const LAST_LBA: Range<usize> = 40..48;
    pub const NAME: Range<usize> = 56..128;
}

fn le32(b: &[u8], r: core::ops::Range<usize>) -> u32 {
    b.get(r).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}

fn le64(b: &[u8], r: core::ops::Range<usize>) -> u64 {
    b.get(r).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

fn guid(b: &[u8], r: core::ops::Range<usize>) -> Guid {
    b.get(r).and_then(|s| s.try_into().ok()).map_or(Guid::default(), Guid)
}

fn put(b: &mut [u8], r: core::ops::Range<usize>, v: &[u8]) {
    if let Some(d) = b.get_mut(r) {
        d.copy_from_slice(v);
    }
}

impl Header {
    /// Checks a header block read at `lba` of a disk of `block_count`
    /// blocks of `bs` bytes. Every field is checked before it is trusted.
    fn parse(block: &[u8], lba: u64, bs: usize, block_count: u64) -> Result<Header, Fault> {
        if block.get(field::SIGNATURE) != Some(&SIGNATURE[..]) {
            return Err(Fault::NoSignature);
        }
        let size = le32(block, field::HEADER_SIZE);
        let covered = usize::try_from(size).ok().filter(|&s| (HEADER_SIZE..=bs).contains(&s)).ok_or(Fault::HeaderSize(size))?;
        let mut c = Crc32::new();
        c.update(block.get(..field::HEADER_CRC.start).unwrap_or(&[]));
        c.update(&[0; 4]);
        c.update(block.get(field::HEADER_CRC.end..covered).unwrap_or(&[]));
        if c.finish() != le32(block, field::HEADER_CRC) {
            return Err(Fault::HeaderCrc);
        }
        let h = Header {
            my_lba: le64(block, field::MY_LBA),
            alternate_lba: le64(block, field::ALTERNATE_LBA),
            first_usable: le64(block, field::FIRST_USABLE),
            last_usable: le64(block, field::LAST_USABLE),
            disk_guid: guid(block, field::DISK_GUID),
            entries_lba: le64(block, field::ENTRIES_LBA),
            entry_count: le32(block, field::ENTRY_COUNT),
            entry_size: le32(block, field::ENTRY_SIZE),
            entries_crc: le32(block, field::ENTRIES_CRC),
        };
        if h.my_lba != lba {
            return Err(Fault::WrongLba { found: h.my_lba });
        }
        // Entry sizes are 128 × 2ⁿ (UEFI); up to a page, so that an entry
        // never straddles two reads.
        let entry_size = h.entry_size as usize;
        if entry_size < ENTRY_SIZE || !entry_size.is_power_of_two() || entry_size > SCRATCH {
            return Err(Fault::EntryArray);
        }
        let entries = h.entries_blocks(bs).ok_or(Fault::EntryArray)?;
        let entries_end = h.entries_lba.checked_add(entries).filter(|&end| end <= block_count).ok_or(Fault::EntryArray)?;
        let overlaps = |first: u64, end: u64| first < entries_end && h.entries_lba < end;
        if entries > 0 && (h.entries_lba == 0 || overlaps(h.my_lba, h.my_lba + 1)) {
            return Err(Fault::EntryArray);
        }
        // The usable range: inside the disk, past LBA 0, and clear of this
        // header and its entry array.
        let usable_end = h.last_usable.checked_add(1).ok_or(Fault::UsableRange)?;
        if h.first_usable == 0
            || h.first_usable > h.last_usable
            || usable_end > block_count
            || (h.first_usable..usable_end).contains(&h.my_lba)
            || (entries > 0 && overlaps(h.first_usable, usable_end))
        {
            return Err(Fault::UsableRange);
        }
        Ok(h)
    }

    /// Bytes the entry array's CRC covers, if within our bound.
    fn entries_bytes(&self) -> Option<u64> {
        u64::from(self.entry_count).checked_mul(u64::from(self.entry_size)).filter(|&b| b <= MAX_ENTRY_ARRAY_BYTES)
    }

    /// Blocks the entry array occupies.
    fn entries_blocks(&self, bs: usize) -> Option<u64> {
        Some(self.entries_bytes()?.div_ceil(bs as u64))
    }

    /// Writes the header into the start of `block` (which the caller
    /// zeroed), CRC included.
    fn emit(&self, block: &mut [u8]) {
        put(block, field::SIGNATURE, &SIGNATURE);
        put(block, field::REVISION, &REVISION.to_le_bytes());
        put(block, field::HEADER_SIZE, &(HEADER_SIZE as u32).to_le_bytes());
        put(block, field::MY_LBA, &self.my_lba.to_le_bytes());
        put(block, field::ALTERNATE_LBA, &self.alternate_lba.to_le_bytes());
        put(block, field::FIRST_USABLE, &self.first_usable.to_le_bytes());
        put(block, field::LAST_USABLE, &self.last_usable.to_le_bytes());
        put(block, field::DISK_GUID, &self.disk_guid.0);
        put(block, field::ENTRIES_LBA, &self.entries_lba.to_le_bytes());
        put(block, field::ENTRY_COUNT, &self.entry_count.to_le_bytes());
        put(block, field::ENTRY_SIZE, &self.entry_size.to_le_bytes());
        put(block, field::ENTRIES_CRC, &self.entries_crc.to_le_bytes());
        put(block, field::HEADER_CRC, &[0; 4]);
        let crc = crc32(block.get(..HEADER_SIZE).unwrap_or(&[]));
        put(block, field::HEADER_CRC, &crc.to_le_bytes());
    }
}

/// What one pass over an entry array found.
#[derive(Clone, Copy, Debug, Default)]
struct Scan {
    /// Entries named `ROUTERD-STATE`.
    matches: u32,
    /// The first of them: index, type, unique GUID, first and last LBA.
    first: Option<(u32, Guid, Guid, u64, u64)>,
}

/// Whether a 72-byte UTF-16LE name field says `ROUTERD-STATE` (the rest of
/// the field after the name's NUL is not looked at).
fn is_named(name: &[u8], want: &str) -> bool {
    let want = want.as_bytes();
    let mut units = name.chunks_exact(2).map(|u| u16::from_le_bytes([u[0], u[1]]));
    want.iter().all(|&c| units.next() == Some(u16::from(c))) && matches!(units.next(), None | Some(0))
}

/// Reads and checks one copy of the GPT: the header at `lba`, then its
/// entry array (CRC over all of it) while looking for the state partition.
fn read_copy<D: BlockDevice>(
    disk: &mut D,
    lba: u64,
    scratch: &mut [u8; SCRATCH],
    name: &str,
) -> Result<(Header, Scan), (Fault, Option<Header>)> {
    let bs = disk.block_size().bytes();
    let count = disk.block_count();
    let block = scratch.get_mut(..bs).ok_or((Fault::HeaderSize(bs as u32), None))?;
    disk.read(lba, block).map_err(|e| (Fault::Unreadable(e), None))?;
    let h = Header::parse(block, lba, bs, count).map_err(|f| (f, None))?;
    let scan = scan_entries(disk, &h, scratch, name).map_err(|f| (f, Some(h)))?;
    Ok((h, scan))
}

fn scan_entries<D: BlockDevice>(disk: &mut D, h: &Header, scratch: &mut [u8; SCRATCH], name: &str) -> Result<Scan, Fault> {
    let bs = disk.block_size().bytes() as u64;
    let mut remaining = h.entries_bytes().ok_or(Fault::EntryArray)?;
    let mut lba = h.entries_lba;
    let mut index = 0u32;
    let mut crc = Crc32::new();
    let mut scan = Scan::default();
    while remaining > 0 {
        let chunk = remaining.min(SCRATCH as u64);
        let blocks = chunk.div_ceil(bs);
        let buf = scratch.get_mut(..(blocks * bs) as usize).ok_or(Fault::EntryArray)?;
        disk.read(lba, buf).map_err(Fault::EntriesUnreadable)?;
        let bytes = buf.get(..chunk as usize).ok_or(Fault::EntryArray)?;
        crc.update(bytes);
        for e in bytes.chunks_exact(h.entry_size as usize) {
            let type_guid = guid(e, field::TYPE_GUID);
            if !type_guid.is_zero() && e.get(field::NAME).is_some_and(|n| is_named(n, name)) {
                scan.matches = scan.matches.saturating_add(1);
                if scan.first.is_none() {
                    scan.first = Some((index, type_guid, guid(e, field::UNIQUE_GUID), le64(e, field::FIRST_LBA), le64(e, field::LAST_LBA)));
                }
            }
            index = index.saturating_add(1);
        }
        remaining -= chunk;
        lba = lba.checked_add(blocks).ok_or(Fault::EntryArray)?;
    }
    if crc.finish() != h.entries_crc {
        return Err(Fault::EntriesCrc);
    }
    Ok(scan)
}

/// Classifies LBA 0: `Ok` for a protective (or hybrid) MBR.
fn check_mbr(block: &[u8]) -> Result<(), NotGpt> {
    if block.iter().all(|&b| b == 0) {
        return Err(NotGpt::Blank);
    }
    if block.get(510..512) != Some(&[0x55, 0xaa][..]) {
        return Err(NotGpt::NoMbrSignature);
    }
    // Four 16-byte partition records from offset 446; the type is byte 4.
    let protective = (0..4).any(|i| block.get(446 + 16 * i + 4) == Some(&MBR_TYPE_PROTECTIVE));
    if protective {
        Ok(())
    } else {
        Err(NotGpt::MbrPartitioned)
    }
}

/// Finds the partition named `ROUTERD-STATE`. Never writes.
pub fn find_state_partition<D: BlockDevice>(disk: &mut D) -> Result<Found, FindError> {
    find_partition(disk, STATE_PARTITION_NAME)
}

/// Finds the one partition named `name` (the firmware slots `ROUTERD-A`,
/// `ROUTERD-B`, the boot state `ROUTERD-BOOT`), with the same checks as
/// [`find_state_partition`] (whose error texts name the state partition).
/// Never writes.
pub fn find_partition<D: BlockDevice>(disk: &mut D, name: &str) -> Result<Found, FindError> {
    let mut scratch = [0u8; SCRATCH];
    let bs = disk.block_size().bytes();
    let count = disk.block_count();
    let lba0 = scratch.get_mut(..bs).ok_or(FindError::Io(BlockError::BadLength))?;
    disk.read(0, lba0).map_err(FindError::Io)?;
    check_mbr(lba0).map_err(FindError::NotGpt)?;

    let primary = read_copy(disk, 1, &mut scratch, name);
    let last = count.saturating_sub(1);
    let mut backup = read_copy(disk, last, &mut scratch, name);
    // A disk that grew keeps its backup where the primary says, not at the
    // new last LBA.
    if let (Err(_), Ok((h, _)) | Err((_, Some(h)))) = (&backup, &primary) {
        let alternate = h.alternate_lba;
        if alternate != last && alternate > 1 && alternate < count {
            if let Ok(found) = read_copy(disk, alternate, &mut scratch, name) {
                backup = Ok(found);
            }
        }
    }
    let health = |r: &Result<(Header, Scan), (Fault, Option<Header>)>| r.as_ref().map(|_| ()).map_err(|(f, _)| *f);
    let (primary_health, backup_health) = (health(&primary), health(&backup));
    let copies_agree = match (&primary, &backup) {
        (Ok((p, _)), Ok((b, _))) => {
            p.disk_guid == b.disk_guid
                && p.first_usable == b.first_usable
                && p.last_usable == b.last_usable
                && p.entry_count == b.entry_count
                && p.entry_size == b.entry_size
                && p.entries_crc == b.entries_crc
        }
        _ => false,
    };
    let (used, header, scan) = match (primary, backup) {
        (Ok((h, s)), _) => (TableCopy::Primary, h, s),
        (Err(_), Ok((h, s))) => (TableCopy::Backup, h, s),
        (Err((p, _)), Err((b, _))) => return Err(FindError::Damaged { primary: p, backup: b }),
    };
    let Some((index, type_guid, unique_guid, first_lba, last_lba)) = scan.first else {
        return Err(FindError::NotFound);
    };
    if scan.matches > 1 {
        return Err(FindError::Ambiguous { count: scan.matches });
    }
    if first_lba > last_lba || first_lba < header.first_usable || last_lba > header.last_usable {
        return Err(FindError::BadRange { first_lba, last_lba });
    }
    // Cannot overflow: last_lba <= last_usable < block_count.
    let blocks = last_lba - first_lba + 1;
    Ok(Found {
        partition: StatePartition { index, first_lba, blocks, type_guid, unique_guid },
        used,
        primary: primary_health,
        backup: backup_health,
        copies_agree,
    })
}

/// Whether [`create_state_partition`] may write over what is on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Only a blank disk: no partition table, the first and last MiB zero.
    Refuse,
    /// Whatever is there (the operator said so, twice).
    Overwrite,
}

/// What made a disk not blank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotBlank {
    /// An MBR (boot signature at LBA 0) — a protective one when a GPT
    /// follows.
    Mbr,
    /// A GPT header at `lba` (1: the primary; the last LBA: a backup).
    Gpt { lba: u64 },
    /// A non-zero byte in the block at `lba`.
    Data { lba: u64 },
}

/// Why [`create_state_partition`] did not make the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateError {
    /// A read, write or flush failed (`ReadOnly`: the disk is
    /// write-protected). The table may be partly written.
    Io(BlockError),
    /// The disk has fewer blocks than the layout needs.
    TooSmall { blocks: u64, needed: u64 },
    /// The disk is not blank and overwriting was not allowed. Nothing was
    /// written.
    NotBlank(NotBlank),
    /// Written and flushed, but reading it back did not find the partition
    /// that was written (the device lost or changed the writes).
    Verify(FindError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Io(e) => write!(f, "disk request failed ({e:?})"),
            CreateError::TooSmall { blocks, needed } => write!(f, "disk too small: {blocks} blocks, {needed} needed"),
            CreateError::NotBlank(NotBlank::Mbr) => {
                write!(f, "disk is not blank: it has an MBR partition table (or a GPT's protective MBR)")
            }
            CreateError::NotBlank(NotBlank::Gpt { lba }) => write!(f, "disk is not blank: a GPT header at LBA {lba}"),
            CreateError::NotBlank(NotBlank::Data { lba }) => write!(f, "disk is not blank: data in block {lba}"),
            CreateError::Verify(e) => write!(f, "written, but reading it back failed: {e}"),
        }
    }
}

/// Where everything goes on a disk of `count` blocks.
#[derive(Clone, Copy, Debug)]
struct Layout {
    last_lba: u64,
    entry_blocks: u64,
    first_usable: u64,
    last_usable: u64,
    backup_entries_lba: u64,
    part_first: u64,
    part_last: u64,
}

impl Layout {
    fn new(size: BlockSize, count: u64) -> Result<Layout, CreateError> {
        let bs = size.bytes() as u64;
        let entry_blocks = ENTRY_ARRAY_BYTES.div_ceil(bs);
        let part_first = PARTITION_ALIGN_BYTES / bs;
        let part_last = part_first + STATE_PARTITION_BYTES / bs - 1;
        // The partition, then the backup array and header after it.
        let needed = part_last + 1 + entry_blocks + 1;
        if count < needed {
            return Err(CreateError::TooSmall { blocks: count, needed });
        }
        let last_lba = count - 1;
        let backup_entries_lba = last_lba - entry_blocks;
        Ok(Layout {
            last_lba,
            entry_blocks,
            first_usable: 2 + entry_blocks,
            last_usable: backup_entries_lba - 1,
            backup_entries_lba,
            part_first,
            part_last,
        })
    }
}

/// Looks for anything on the disk: a partition table, or any non-zero byte
/// in the first and last [`BLANK_CHECK_BYTES`].
fn check_blank<D: BlockDevice>(disk: &mut D, scratch: &mut [u8; SCRATCH]) -> Result<(), CreateError> {
    let bs = disk.block_size().bytes();
    let count = disk.block_count();
    let last = count.saturating_sub(1);
    // Named tables first, so the refusal says what is there.
    for lba in [0, 1, last] {
        let block = scratch.get_mut(..bs).ok_or(CreateError::Io(BlockError::BadLength))?;
        disk.read(lba, block).map_err(CreateError::Io)?;
        if lba == 0 && block.get(510..512) == Some(&[0x55, 0xaa][..]) {
            return Err(CreateError::NotBlank(NotBlank::Mbr));
        }
        if lba != 0 && block.get(field::SIGNATURE) == Some(&SIGNATURE[..]) {
            return Err(CreateError::NotBlank(NotBlank::Gpt { lba }));
        }
    }
    let span = (BLANK_CHECK_BYTES / bs as u64).min(count);
    for start in [0, count - span] {
        let per_read = (SCRATCH / bs) as u64;
        let mut lba = start;
        while lba < start + span {
            let n = per_read.min(start + span - lba);
            let buf = scratch.get_mut(..n as usize * bs).ok_or(CreateError::Io(BlockError::BadLength))?;
            disk.read(lba, buf).map_err(CreateError::Io)?;
            if let Some(i) = buf.iter().position(|&b| b != 0) {
                return Err(CreateError::NotBlank(NotBlank::Data { lba: lba + (i / bs) as u64 }));
            }
            lba += n;
        }
    }
    Ok(())
}

/// Writes `blocks` blocks from `lba` with zeros, except that `first` is put
/// at the start of the first block.
fn write_zeroed<D: BlockDevice>(disk: &mut D, lba: u64, blocks: u64, first: &[u8], scratch: &mut [u8; SCRATCH]) -> Result<(), CreateError> {
    let bs = disk.block_size().bytes();
    let per_write = (SCRATCH / bs) as u64;
    let mut done = 0;
    while done < blocks {
        let n = per_write.min(blocks - done);
        let buf = scratch.get_mut(..n as usize * bs).ok_or(CreateError::Io(BlockError::BadLength))?;
        buf.fill(0);
        if done == 0 {
            put(buf, 0..first.len(), first);
        }
        disk.write(lba + done, buf).map_err(CreateError::Io)?;
        done += n;
    }
    Ok(())
}

/// Writes a fresh GPT with one partition, `ROUTERD-STATE` (1 MiB at 1 MiB,
/// type [`STATE_TYPE_GUID`]), flushes, and reads it back. `random` makes the
/// disk's and the partition's unique GUIDs (pass 32 bytes from the box's
/// entropy source). With [`Existing::Refuse`] a disk that is not blank is
/// refused before anything is written.
///
/// Write order: backup array and header, primary array and header, then the
/// protective MBR, then a flush: on a blank disk, a cut before the MBR leaves
/// a disk that `find_state_partition` reports as blank rather than a half
/// table. Overwriting leaves the old contents of the partition's blocks in
/// place: the caller formats the store (`Store::format`) next.
pub fn create_state_partition<D: BlockDevice>(disk: &mut D, random: [u8; 32], existing: Existing) -> Result<StatePartition, CreateError> {
    let layout = Layout::new(disk.block_size(), disk.block_count())?;
    let mut scratch = [0u8; SCRATCH];
    if existing == Existing::Refuse {
        check_blank(disk, &mut scratch)?;
    }
    let (disk_random, part_random) = random.split_at(16);
    let disk_guid = Guid::new_v4(disk_random.try_into().unwrap_or_default());
    let unique_guid = Guid::new_v4(part_random.try_into().unwrap_or_default());

    // The one entry; the other 127 are zero.
    let mut entry = [0u8; ENTRY_SIZE];
    put(&mut entry, field::TYPE_GUID, &STATE_TYPE_GUID.0);
    put(&mut entry, field::UNIQUE_GUID, &unique_guid.0);
    put(&mut entry, field::FIRST_LBA, &layout.part_first.to_le_bytes());
    put(&mut entry, field::LAST_LBA, &layout.part_last.to_le_bytes());
    for (i, c) in STATE_PARTITION_NAME.bytes().enumerate() {
        put(&mut entry, field::NAME.start + 2 * i..field::NAME.start + 2 * i + 2, &u16::from(c).to_le_bytes());
    }
    let mut crc = Crc32::new();
    crc.update(&entry);
    for _ in 1..ENTRY_COUNT {
        crc.update(&[0; ENTRY_SIZE]);
    }
    let primary = Header {
        my_lba: 1,
        alternate_lba: layout.last_lba,
        first_usable: layout.first_usable,
        last_usable: layout.last_usable,
        disk_guid,
        entries_lba: 2,
        entry_count: ENTRY_COUNT,
        entry_size: ENTRY_SIZE as u32,
        entries_crc: crc.finish(),
    };
    let backup = Header { my_lba: layout.last_lba, alternate_lba: 1, entries_lba: layout.backup_entries_lba, ..primary };

    let mut header = [0u8; HEADER_SIZE];
    for h in [backup, primary] {
        write_zeroed(disk, h.entries_lba, layout.entry_blocks, &entry, &mut scratch)?;
        h.emit(&mut header);
        write_zeroed(disk, h.my_lba, 1, &header, &mut scratch)?;
    }
    // Protective MBR: one record covering the disk from LBA 1 (capped at
    // 2³²−1 blocks), CHS fields as UEFI prescribes.
    let mut mbr = [0u8; 512];
    let size_field = u32::try_from(layout.last_lba).unwrap_or(u32::MAX);
    put(&mut mbr, 446..462, &[0x00, 0x00, 0x02, 0x00, MBR_TYPE_PROTECTIVE, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0]);
    put(&mut mbr, 458..462, &size_field.to_le_bytes());
    put(&mut mbr, 510..512, &[0x55, 0xaa]);
    write_zeroed(disk, 0, 1, &mbr, &mut scratch)?;
    disk.flush().map_err(CreateError::Io)?;

    let written = StatePartition {
        index: 0,
        first_lba: layout.part_first,
        blocks: layout.part_last - layout.part_first + 1,
        type_guid: STATE_TYPE_GUID,
        unique_guid,
    };
    match find_state_partition(disk) {
        Ok(f) if f.partition == written && f.copies_agree => Ok(written),
        Ok(_) => Err(CreateError::Verify(FindError::NotFound)),
        Err(e) => Err(CreateError::Verify(e)),
    }
}

#[cfg(test)]
#[path = "gpt_tests.rs"]
mod tests;

//! Tests of `gpt.rs`: round trips on both block sizes, the pinned bytes of
//! what is written, refusals, damaged copies, garbage (a fuzz loop), and
//! what Linux's partitioning tools read of it (when installed).
extern crate std;

use super::*;
use crate::blk::testing::MemDisk;
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

const RANDOM: [u8; 32] = [7; 32];
/// Linux filesystem data, 0fc63daf-8483-4772-8e79-3d69d8477de4.
const LINUX_DATA: Guid = Guid::from_fields(0x0fc6_3daf, 0x8483, 0x4772, [0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);
/// 8 MiB at 512 bytes.
const BLOCKS_512: u64 = 16384;

fn disk(size: BlockSize, blocks: u64) -> MemDisk {
    MemDisk::new(size, blocks)
}

fn created(size: BlockSize, blocks: u64) -> (MemDisk, StatePartition) {
    let mut d = disk(size, blocks);
    let p = create_state_partition(&mut d, RANDOM, Existing::Refuse).expect("create");
    (d, p)
}

fn le64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn le32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

/// Rewrites the header at `lba` after `edit`, with its CRC recomputed.
fn edit_header(d: &mut MemDisk, lba: u64, edit: impl FnOnce(&mut [u8])) {
    let b = d.block_mut(lba);
    edit(b);
    b[16..20].fill(0);
    let size = (le32_at(b, 12) as usize).clamp(HEADER_SIZE, b.len());
    let crc = crc32(&b[..size]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Edits both copies' entry arrays (128 × 128 bytes) and fixes up every CRC.
fn edit_entries(d: &mut MemDisk, edit: impl Fn(&mut [u8])) {
    let bs = d.size.bytes();
    let last = d.block_count() - 1;
    for header_lba in [1, last] {
        let entries_lba = le64_at(d.block(header_lba), 72) as usize;
        let array = &mut d.data[entries_lba * bs..entries_lba * bs + ENTRY_ARRAY_BYTES as usize];
        edit(array);
        let crc = crc32(array);
        edit_header(d, header_lba, |h| h[88..92].copy_from_slice(&crc.to_le_bytes()));
    }
}

fn set_name(entry: &mut [u8], name: &str) {
    entry[56..128].fill(0);
    for (i, u) in name.encode_utf16().enumerate() {
        entry[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
}

#[test]
fn crc32_is_iso_hdlc() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn guids_use_the_mixed_endian_layout() {
    assert_eq!(format!("{STATE_TYPE_GUID}"), "5a2f0414-229e-43b5-9209-78da4a209467");
    assert_eq!(STATE_TYPE_GUID.0[..4], [0x14, 0x04, 0x2f, 0x5a]);
    // As every tool writes it.
    assert_eq!(LINUX_DATA.0, [0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);
    for r in [[0u8; 16], [0xff; 16]] {
        let s = format!("{}", Guid::new_v4(r));
        assert_eq!(&s[14..15], "4", "{s}");
        assert!("89ab".contains(&s[19..20]), "{s}");
    }
}

#[test]
fn round_trip_512() {
    let (mut d, p) = created(BlockSize::B512, BLOCKS_512);
    assert_eq!((p.index, p.first_lba, p.blocks, p.type_guid), (0, 2048, 2048, STATE_TYPE_GUID));
    let f = find_state_partition(&mut d).expect("find");
    assert_eq!(f.partition, p);
    assert_eq!((f.used, f.primary, f.backup, f.copies_agree), (TableCopy::Primary, Ok(()), Ok(()), true));
    assert_eq!(d.flushes, 1, "one flush, after every write");
}

#[test]
fn round_trip_4096() {
    let (mut d, p) = created(BlockSize::B4096, 2048);
    assert_eq!((p.first_lba, p.blocks), (256, 256), "1 MiB at 1 MiB");
    let f = find_state_partition(&mut d).expect("find");
    assert_eq!(f.partition, p);
    let h = d.block(1);
    assert_eq!((le64_at(h, 40), le64_at(h, 48), le64_at(h, 72)), (6, 2048 - 6, 2), "first/last usable, entries");
}

#[test]
fn written_bytes_are_pinned() {
    let (d, p) = created(BlockSize::B512, BLOCKS_512);
    let last = BLOCKS_512 - 1;
    let mbr = d.block(0);
    assert_eq!(mbr[446..462], [0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0x3f, 0, 0]);
    assert_eq!(mbr[510..512], [0x55, 0xaa]);
    assert!(mbr[..446].iter().chain(&mbr[462..510]).all(|&b| b == 0));
    let h = d.block(1);
    assert_eq!(&h[..8], b"EFI PART");
    assert_eq!((le32_at(h, 8), le32_at(h, 12), le32_at(h, 20)), (0x0001_0000, 92, 0));
    assert_eq!((le64_at(h, 24), le64_at(h, 32), le64_at(h, 40), le64_at(h, 48)), (1, last, 34, last - 33));
    assert_eq!((le64_at(h, 72), le32_at(h, 80), le32_at(h, 84)), (2, 128, 128));
    assert!(h[92..].iter().all(|&b| b == 0));
    let mut zeroed = h[..92].to_vec();
    zeroed[16..20].fill(0);
    assert_eq!(le32_at(h, 16), crc32(&zeroed));
    let b = d.block(last);
    assert_eq!((le64_at(b, 24), le64_at(b, 32), le64_at(b, 72)), (last, 1, last - 32));
    assert_eq!(h[56..72], b[56..72], "one disk GUID");
    assert_eq!(le32_at(h, 88), le32_at(b, 88), "same entry array");
    let e = &d.data[2 * 512..2 * 512 + 128];
    assert_eq!(e[..16], STATE_TYPE_GUID.0);
    assert_eq!(e[16..32], p.unique_guid.0);
    assert_eq!((le64_at(e, 32), le64_at(e, 40), le64_at(e, 48)), (2048, 4095, 0));
    let name: Vec<u16> = e[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(String::from_utf16(&name[..13]).unwrap(), "ROUTERD-STATE");
    assert!(name[13..].iter().all(|&u| u == 0));
    assert_eq!(le32_at(h, 88), crc32(&d.data[1024..1024 + 16384]));
    assert!(d.data[1024 + 128..34 * 512].iter().all(|&b| b == 0), "127 empty entries");
    assert_eq!(d.data[1024..34 * 512], d.data[(last as usize - 32) * 512..last as usize * 512], "backup array = primary");
}

#[test]
fn refuses_a_disk_that_is_not_blank_and_writes_nothing() {
    let cases: [(u64, NotBlank); 4] = [
        (100, NotBlank::Data { lba: 100 }),
        (2047, NotBlank::Data { lba: 2047 }),
        (BLOCKS_512 - 2048, NotBlank::Data { lba: BLOCKS_512 - 2048 }),
        (BLOCKS_512 - 1, NotBlank::Data { lba: BLOCKS_512 - 1 }),
    ];
    for (lba, why) in cases {
        let mut d = disk(BlockSize::B512, BLOCKS_512);
        d.block_mut(lba)[511] = 1;
        assert_eq!(create_state_partition(&mut d, RANDOM, Existing::Refuse), Err(CreateError::NotBlank(why)));
        assert_eq!((d.writes, d.flushes), (0, 0));
    }
    // Data in the middle of the disk is not looked at.
    let mut d = disk(BlockSize::B512, BLOCKS_512);
    d.block_mut(2048 + 4096)[0] = 1;
    assert!(create_state_partition(&mut d, RANDOM, Existing::Refuse).is_ok());
}

#[test]
fn refuses_any_partition_table_unless_told_to_overwrite() {
    let (mut d, _) = created(BlockSize::B512, BLOCKS_512);
    assert_eq!(create_state_partition(&mut d, RANDOM, Existing::Refuse), Err(CreateError::NotBlank(NotBlank::Mbr)));
    // Only a primary header, only a backup: still a partition table.
    let (full, _) = created(BlockSize::B512, BLOCKS_512);
    for lba in [1, BLOCKS_512 - 1] {
        let mut d = disk(BlockSize::B512, BLOCKS_512);
        d.block_mut(lba).copy_from_slice(full.block(lba));
        assert_eq!(create_state_partition(&mut d, RANDOM, Existing::Refuse), Err(CreateError::NotBlank(NotBlank::Gpt { lba })));
        assert_eq!(d.writes, 0);
    }
    // Overwrite: a new table with new GUIDs, found.
    let before = find_state_partition(&mut d).unwrap().partition;
    let p = create_state_partition(&mut d, [9; 32], Existing::Overwrite).expect("overwrite");
    assert_ne!(p.unique_guid, before.unique_guid);
    assert_eq!(find_state_partition(&mut d).unwrap().partition, p);
}

#[test]
fn refuses_a_disk_too_small() {
    let mut d = disk(BlockSize::B512, 4128);
    assert_eq!(create_state_partition(&mut d, RANDOM, Existing::Refuse), Err(CreateError::TooSmall { blocks: 4128, needed: 4129 }));
    let (mut d, p) = created(BlockSize::B512, 4129);
    assert_eq!(find_state_partition(&mut d).unwrap().partition, p);
    let mut d = disk(BlockSize::B4096, 516);
    assert_eq!(create_state_partition(&mut d, RANDOM, Existing::Refuse), Err(CreateError::TooSmall { blocks: 516, needed: 517 }));
    let mut d = disk(BlockSize::B512, 0);
    assert!(matches!(create_state_partition(&mut d, RANDOM, Existing::Overwrite), Err(CreateError::TooSmall { .. })));
    assert_eq!(find_state_partition(&mut d), Err(FindError::Io(BlockError::OutOfRange)));
}

#[test]
fn read_only_disk_fails_cleanly() {
    let mut d = disk(BlockSize::B512, BLOCKS_512);
    d.read_only = true;
    assert_eq!(create_state_partition(&mut d, RANDOM, Existing::Refuse), Err(CreateError::Io(BlockError::ReadOnly)));
}

#[test]
fn a_damaged_primary_falls_back_to_the_backup() {
    let (good, p) = created(BlockSize::B512, BLOCKS_512);
    type Damage = (&'static str, fn(&mut MemDisk), Fault);
    let damage: [Damage; 6] = [
        ("header byte", |d| d.block_mut(1)[40] ^= 1, Fault::HeaderCrc),
        ("signature", |d| d.block_mut(1)[0] = b'X', Fault::NoSignature),
        ("entry byte", |d| d.block_mut(2)[60] ^= 0x80, Fault::EntriesCrc),
        ("last entry block", |d| d.block_mut(33)[511] = 1, Fault::EntriesCrc),
        ("unreadable header", |d| d.bad_blocks.push(1), Fault::Unreadable(BlockError::Io)),
        ("unreadable entries", |d| d.bad_blocks.push(20), Fault::EntriesUnreadable(BlockError::Io)),
    ];
    for (what, hurt, fault) in damage {
        let mut d = MemDisk::from_bytes(BlockSize::B512, good.data.clone());
        hurt(&mut d);
        let f = find_state_partition(&mut d).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(f.partition, p, "{what}");
        assert_eq!((f.used, f.primary, f.backup, f.copies_agree), (TableCopy::Backup, Err(fault), Ok(()), false), "{what}");
    }
    // A damaged backup is reported; the primary is used.
    let mut d = MemDisk::from_bytes(BlockSize::B512, good.data.clone());
    d.block_mut(BLOCKS_512 - 1)[30] ^= 1;
    let f = find_state_partition(&mut d).unwrap();
    assert_eq!((f.used, f.backup, f.copies_agree), (TableCopy::Primary, Err(Fault::HeaderCrc), false));
}

#[test]
fn both_copies_damaged_is_an_error() {
    let (mut d, _) = created(BlockSize::B512, BLOCKS_512);
    d.block_mut(1)[40] ^= 1;
    d.block_mut(BLOCKS_512 - 10)[0] ^= 1;
    assert_eq!(find_state_partition(&mut d), Err(FindError::Damaged { primary: Fault::HeaderCrc, backup: Fault::EntriesCrc }));
}

#[test]
fn header_fields_are_checked_even_with_a_valid_crc() {
    let (good, _) = created(BlockSize::B512, BLOCKS_512);
    let last = BLOCKS_512 - 1;
    type Case = (&'static str, fn(&mut [u8]), Fault);
    let cases: [Case; 10] = [
        ("my lba", |h| h[24..32].copy_from_slice(&5u64.to_le_bytes()), Fault::WrongLba { found: 5 }),
        ("header size", |h| h[12..16].copy_from_slice(&600u32.to_le_bytes()), Fault::HeaderSize(600)),
        ("entry size", |h| h[84..88].copy_from_slice(&100u32.to_le_bytes()), Fault::EntryArray),
        ("entry count", |h| h[80..84].copy_from_slice(&u32::MAX.to_le_bytes()), Fault::EntryArray),
        ("entries past the disk", |h| h[72..80].copy_from_slice(&(BLOCKS_512 - 4).to_le_bytes()), Fault::EntryArray),
        ("entries over the header", |h| h[72..80].copy_from_slice(&1u64.to_le_bytes()), Fault::EntryArray),
        ("usable past the disk", |h| h[48..56].copy_from_slice(&BLOCKS_512.to_le_bytes()), Fault::UsableRange),
        // Over the primary's entries; over the backup's header.
        ("usable over the metadata", |h| h[40..48].copy_from_slice(&20u64.to_le_bytes()), Fault::UsableRange),
        ("usable over the backup", |h| h[48..56].copy_from_slice(&(BLOCKS_512 - 1).to_le_bytes()), Fault::UsableRange),
        ("usable inverted", |h| h[40..48].copy_from_slice(&u64::MAX.to_le_bytes()), Fault::UsableRange),
    ];
    for (what, edit, fault) in cases {
        let mut d = MemDisk::from_bytes(BlockSize::B512, good.data.clone());
        edit_header(&mut d, 1, edit);
        let primary = find_state_partition(&mut d);
        let mut d = MemDisk::from_bytes(BlockSize::B512, good.data.clone());
        edit_header(&mut d, last, edit);
        let backup = find_state_partition(&mut d);
        edit_header(&mut d, 1, edit);
        let both = find_state_partition(&mut d);
        match what {
            // Each of these only makes sense for one of the two copies.
            "usable over the metadata" | "entries over the header" => {
                assert_eq!(primary.map(|f| (f.used, f.primary)), Ok((TableCopy::Backup, Err(fault))))
            }
            "usable over the backup" => assert_eq!(backup.map(|f| (f.used, f.backup)), Ok((TableCopy::Primary, Err(fault)))),
            _ => {
                assert_eq!(primary.map(|f| (f.used, f.primary)), Ok((TableCopy::Backup, Err(fault))), "{what}");
                assert_eq!(backup.map(|f| (f.used, f.backup)), Ok((TableCopy::Primary, Err(fault))), "{what}");
                assert!(matches!(both, Err(FindError::Damaged { .. })), "{what}: {both:?}");
            }
        }
    }
}

#[test]
fn a_grown_disk_keeps_its_backup_where_the_primary_says() {
    let (small, p) = created(BlockSize::B512, BLOCKS_512);
    let mut data = small.data.clone();
    data.resize(2 * data.len(), 0);
    let mut d = MemDisk::from_bytes(BlockSize::B512, data);
    let f = find_state_partition(&mut d).unwrap();
    assert_eq!((f.used, f.backup, f.copies_agree), (TableCopy::Primary, Ok(()), true), "backup found at the old last LBA");
    // Primary entries damaged (its header still names the backup): the
    // backup at the old position is used.
    d.block_mut(5)[0] ^= 1;
    let f = find_state_partition(&mut d).unwrap();
    assert_eq!((f.partition, f.used), (p, TableCopy::Backup));
}

#[test]
fn lba0_must_be_a_protective_mbr() {
    let (good, _) = created(BlockSize::B512, BLOCKS_512);
    let mut d = MemDisk::from_bytes(BlockSize::B512, good.data.clone());
    d.block_mut(0).fill(0);
    assert_eq!(find_state_partition(&mut d), Err(FindError::NotGpt(NotGpt::Blank)));
    d.block_mut(0)[0] = 0xeb;
    assert_eq!(find_state_partition(&mut d), Err(FindError::NotGpt(NotGpt::NoMbrSignature)));
    d.block_mut(0)[510..512].copy_from_slice(&[0x55, 0xaa]);
    d.block_mut(0)[446 + 4] = 0x83;
    assert_eq!(find_state_partition(&mut d), Err(FindError::NotGpt(NotGpt::MbrPartitioned)));
    // A hybrid MBR (0xEE in the second record) is still GPT.
    d.block_mut(0)[446 + 16 + 4] = 0xee;
    assert!(find_state_partition(&mut d).is_ok());
    assert_eq!(find_state_partition(&mut disk(BlockSize::B512, 64)), Err(FindError::NotGpt(NotGpt::Blank)));
}

#[test]
fn finds_by_name_only_and_refuses_two() {
    let (good, p) = created(BlockSize::B512, BLOCKS_512);
    let named = |names: &[(usize, &str)]| {
        let mut d = MemDisk::from_bytes(BlockSize::B512, good.data.clone());
        let names: Vec<(usize, String)> = names.iter().map(|&(i, n)| (i, String::from(n))).collect();
        edit_entries(&mut d, |array| {
            for (i, name) in &names {
                let e = &mut array[i * 128..(i + 1) * 128];
                if *i != 0 {
                    // Another partition: Linux data type, some range.
                    e[..16].copy_from_slice(&LINUX_DATA.0);
                    e[32..40].copy_from_slice(&8192u64.to_le_bytes());
                    e[40..48].copy_from_slice(&9000u64.to_le_bytes());
                }
                set_name(e, name);
            }
        });
        find_state_partition(&mut d)
    };
    assert_eq!(named(&[(0, "ROUTERD-STATEX")]), Err(FindError::NotFound));
    assert_eq!(named(&[(0, "routerd-state")]), Err(FindError::NotFound));
    assert_eq!(named(&[(0, "ROUTERD-STAT")]), Err(FindError::NotFound));
    assert_eq!(named(&[(0, "data"), (7, "ROUTERD-STATE")]).unwrap().partition.index, 7);
    assert_eq!(named(&[(5, "ROUTERD-STATE")]), Err(FindError::Ambiguous { count: 2 }));
    // The type GUID does not matter.
    let mut d = MemDisk::from_bytes(BlockSize::B512, good.data.clone());
    edit_entries(&mut d, |a| a[..16].copy_from_slice(&[1; 16]));
    assert_eq!(find_state_partition(&mut d).unwrap().partition.first_lba, p.first_lba);
    // An unused entry (zero type) with the name is not a partition.
    edit_entries(&mut d, |a| a[..16].fill(0));
    assert_eq!(find_state_partition(&mut d), Err(FindError::NotFound));
    // The name's field past its NUL is not looked at.
    let mut d = MemDisk::from_bytes(BlockSize::B512, good.data.clone());
    edit_entries(&mut d, |a| a[127] = 0x41);
    assert!(find_state_partition(&mut d).is_ok());
}

#[test]
fn a_partition_outside_the_usable_range_is_refused() {
    let (good, _) = created(BlockSize::B512, BLOCKS_512);
    for (first, last) in [(10u64, 4095u64), (2048, BLOCKS_512 - 2), (4000, 3000), (2048, u64::MAX)] {
        let mut d = MemDisk::from_bytes(BlockSize::B512, good.data.clone());
        edit_entries(&mut d, |a| {
            a[32..40].copy_from_slice(&first.to_le_bytes());
            a[40..48].copy_from_slice(&last.to_le_bytes());
        });
        assert_eq!(find_state_partition(&mut d), Err(FindError::BadRange { first_lba: first, last_lba: last }));
    }
}

/// xorshift64*: enough randomness for a fuzz loop, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A small valid GPT (not the layout `create` makes: fewer blocks, so
/// thousands of cases run quickly) with the state partition at entry 0.
fn small_gpt(size: BlockSize, blocks: u64) -> MemDisk {
    let bs = size.bytes();
    let entry_blocks = ENTRY_ARRAY_BYTES / bs as u64;
    let mut d = disk(size, blocks);
    let mut entry = [0u8; 128];
    entry[..16].copy_from_slice(&STATE_TYPE_GUID.0);
    entry[32..40].copy_from_slice(&(entry_blocks + 2).to_le_bytes());
    entry[40..48].copy_from_slice(&(entry_blocks + 5).to_le_bytes());
    set_name(&mut entry, STATE_PARTITION_NAME);
    let mut array = vec![0u8; ENTRY_ARRAY_BYTES as usize];
    array[..128].copy_from_slice(&entry);
    let last = blocks - 1;
    let h = Header {
        my_lba: 1,
        alternate_lba: last,
        first_usable: entry_blocks + 2,
        last_usable: last - entry_blocks - 1,
        disk_guid: Guid([3; 16]),
        entries_lba: 2,
        entry_count: 128,
        entry_size: 128,
        entries_crc: crc32(&array),
    };
    let b = Header { my_lba: last, alternate_lba: 1, entries_lba: last - entry_blocks, ..h };
    for h in [h, b] {
        let at = h.entries_lba as usize * bs;
        d.data[at..at + array.len()].copy_from_slice(&array);
        h.emit(d.block_mut(h.my_lba));
    }
    let mbr = d.block_mut(0);
    mbr[446 + 4] = 0xee;
    mbr[510..512].copy_from_slice(&[0x55, 0xaa]);
    d
}

fn check_sane(d: &mut MemDisk, what: &str) {
    if let Ok(f) = find_state_partition(d) {
        let p = f.partition;
        assert!(p.first_lba >= 1 && p.blocks >= 1, "{what}: {p:?}");
        assert!(p.first_lba.checked_add(p.blocks).is_some_and(|end| end <= d.block_count()), "{what}: {p:?}");
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x5eed_0000_0000_0001);
    let boundary = |rng: &mut Rng, count: u64| -> u64 {
        match rng.below(9) {
            0 => 0,
            1 => 1,
            2 => 2,
            3 => count - 1,
            4 => count,
            5 => count + 1,
            6 => u64::MAX,
            7 => u64::from(u32::MAX),
            _ => rng.next(),
        }
    };
    for (size, blocks) in [(BlockSize::B512, 96u64), (BlockSize::B4096, 24)] {
        let template = small_gpt(size, blocks);
        assert!(find_state_partition(&mut MemDisk::from_bytes(size, template.data.clone())).is_ok(), "the template is valid");
        for case in 0..1500 {
            let mut d = MemDisk::from_bytes(size, template.data.clone());
            let what = format!("{size:?} case {case}");
            match rng.below(4) {
                // Random bytes over random blocks.
                0 => {
                    for _ in 0..1 + rng.below(8) {
                        let lba = rng.below(blocks);
                        d.block_mut(lba).iter_mut().for_each(|b| *b = rng.next() as u8);
                    }
                }
                // Bit flips anywhere in the metadata.
                1 => {
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(d.data.len() as u64) as usize;
                        d.data[at] ^= 1 << rng.below(8);
                    }
                }
                // Header fields set to boundary values, CRC recomputed.
                2 => {
                    let lba = if rng.below(2) == 0 { 1 } else { blocks - 1 };
                    for _ in 0..1 + rng.below(3) {
                        let v = boundary(&mut rng, blocks);
                        let off = [12usize, 24, 32, 40, 48, 72, 80, 84][rng.below(8) as usize];
                        edit_header(&mut d, lba, |h| {
                            if off == 12 || off >= 80 {
                                h[off..off + 4].copy_from_slice(&(v as u32).to_le_bytes());
                            } else {
                                h[off..off + 8].copy_from_slice(&v.to_le_bytes());
                            }
                        });
                    }
                }
                // Entry fields (range, type, name), CRCs recomputed.
                _ => {
                    let (first, last) = (boundary(&mut rng, blocks), boundary(&mut rng, blocks));
                    let i = rng.below(4) as usize * 128;
                    let junk = rng.next();
                    edit_entries(&mut d, move |a: &mut [u8]| {
                        a[i..i + 16].copy_from_slice(&STATE_TYPE_GUID.0);
                        a[i + 32..i + 40].copy_from_slice(&first.to_le_bytes());
                        a[i + 40..i + 48].copy_from_slice(&last.to_le_bytes());
                        if junk.is_multiple_of(3) {
                            set_name(&mut a[i..i + 128], STATE_PARTITION_NAME);
                        }
                    });
                }
            }
            check_sane(&mut d, &what);
        }
        // Pure noise, MBR made protective so the headers are read.
        for case in 0..300 {
            let mut d = disk(size, blocks);
            d.data.iter_mut().for_each(|b| *b = rng.next() as u8);
            d.block_mut(0)[446 + 4] = 0xee;
            d.block_mut(0)[510..512].copy_from_slice(&[0x55, 0xaa]);
            if case % 2 == 0 {
                d.block_mut(1)[..8].copy_from_slice(b"EFI PART");
            }
            check_sane(&mut d, "noise");
        }
    }
}

// ---- What Linux's tools make of it ----

/// The path of `tool` if installed (also looked for in the sbin
/// directories a non-root PATH may lack).
fn tool(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn temp_image(tag: &str, data: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("routerd-gpt-{tag}-{}.img", std::process::id()));
    std::fs::write(&path, data).expect("write image");
    path
}

fn run(tool: &std::path::Path, args: &[&str], image: &std::path::Path) -> String {
    let out = std::process::Command::new(tool).args(args).arg(image).output().expect("run tool");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} {args:?} failed:\n{text}", tool.display());
    text
}

#[test]
fn sfdisk_reads_the_gpt_we_write() {
    let Some(sfdisk) = tool("sfdisk") else {
        std::eprintln!("skipping: sfdisk not installed (apt-get install --no-install-recommends fdisk)");
        return;
    };
    let (d, p) = created(BlockSize::B512, BLOCKS_512);
    let image = temp_image("sfdisk", &d.data);
    let json = run(&sfdisk, &["--json"], &image);
    let verify = run(&sfdisk, &["--verify"], &image);
    let _ = std::fs::remove_file(&image);
    let json: String = json.split_whitespace().collect();
    let upper = |g: Guid| format!("{g}").to_uppercase();
    for want in [
        String::from("\"label\":\"gpt\""),
        format!("\"firstlba\":34,\"lastlba\":{}", BLOCKS_512 - 34),
        String::from("\"sectorsize\":512"),
        format!("\"start\":{},\"size\":{}", p.first_lba, p.blocks),
        format!("\"type\":\"{}\"", upper(STATE_TYPE_GUID)),
        format!("\"uuid\":\"{}\"", upper(p.unique_guid)),
        String::from("\"name\":\"ROUTERD-STATE\""),
    ] {
        assert!(json.contains(&want), "sfdisk --json lacks {want}:\n{json}");
    }
    assert_eq!(json.matches("\"node\"").count(), 1, "one partition:\n{json}");
    assert!(verify.contains("No errors detected") && !verify.contains("arning"), "sfdisk --verify:\n{verify}");
}

#[test]
fn sgdisk_verifies_the_gpt_we_write() {
    let Some(sgdisk) = tool("sgdisk") else {
        std::eprintln!("skipping: sgdisk not installed (apt-get install --no-install-recommends gdisk)");
        return;
    };
    let (d, p) = created(BlockSize::B512, BLOCKS_512);
    let image = temp_image("sgdisk", &d.data);
    let verify = run(&sgdisk, &["-v"], &image);
    let info = run(&sgdisk, &["-i", "1"], &image);
    let _ = std::fs::remove_file(&image);
    assert!(verify.contains("No problems found"), "sgdisk -v:\n{verify}");
    let upper = |g: Guid| format!("{g}").to_uppercase();
    for want in [
        format!("Partition GUID code: {}", upper(STATE_TYPE_GUID)),
        format!("Partition unique GUID: {}", upper(p.unique_guid)),
        String::from("First sector: 2048"),
        String::from("Last sector: 4095"),
        String::from("Partition name: 'ROUTERD-STATE'"),
    ] {
        assert!(info.contains(&want), "sgdisk -i 1 lacks {want}:\n{info}");
    }
}

#[test]
fn we_find_the_partition_linux_tools_make() {
    let blank = vec![0u8; BLOCKS_512 as usize * 512];
    let mut ran = 0;
    if let Some(sgdisk) = tool("sgdisk") {
        let image = temp_image("made-by-sgdisk", &blank);
        let args = ["-n", "1:2048:+1M", "-c", "1:data", "-n", "2:0:+1M", "-c", "2:ROUTERD-STATE", "-n", "3:0:0"];
        run(&sgdisk, &args, &image);
        let mut d = MemDisk::from_bytes(BlockSize::B512, std::fs::read(&image).unwrap());
        let _ = std::fs::remove_file(&image);
        let f = find_state_partition(&mut d).expect("sgdisk's table");
        assert_eq!((f.partition.index, f.partition.first_lba, f.partition.blocks), (1, 4096, 2048));
        assert_eq!((f.primary, f.backup, f.copies_agree), (Ok(()), Ok(()), true));
        ran += 1;
    }
    if let Some(sfdisk) = tool("sfdisk") {
        let image = temp_image("made-by-sfdisk", &blank);
        let script = "label: gpt\nsize=1MiB, name=\"ROUTERD-STATE\"\n";
        let mut child = std::process::Command::new(&sfdisk)
            .arg(&image)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run sfdisk");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        let mut d = MemDisk::from_bytes(BlockSize::B512, std::fs::read(&image).unwrap());
        let _ = std::fs::remove_file(&image);
        let f = find_state_partition(&mut d).expect("sfdisk's table");
        assert_eq!((f.partition.index, f.partition.first_lba, f.partition.blocks), (0, 2048, 2048));
        ran += 1;
    }
    if ran == 0 {
        std::eprintln!("skipping: neither sgdisk nor sfdisk installed (apt-get install --no-install-recommends gdisk fdisk)");
    }
}

//! The disk layout of a routerd image, and the bytes of its partition table.
//!
//! Pure: no files, no tools. [`plan`] says where every partition goes;
//! [`gpt`] emits the protective MBR, the primary and the backup GPT for it;
//! [`install_boot_img`] and [`patch_core_img`] do what `grub-bios-setup`
//! does for a GPT disk with a BIOS boot partition — without root, a loop
//! device or a disk to probe. `docs/DISK-LAYOUT.md` is the contract this
//! module implements; a test pins the table it describes.
//!
//! 512-byte logical blocks only: GRUB's i386-pc boot.img, the FAT volumes
//! and the LBAs below all assume them (a 4Kn disk would need another image).
//!
//! Reproducible: every GUID comes from [`derive_guid`] over a hash of the
//! inputs, so the same inputs give the same bytes.

/// Bytes per logical block.
pub const SECTOR: u64 = 512;
/// Partitions start on 1 MiB boundaries (what every partitioning tool does).
pub const ALIGN_SECTORS: u64 = 2048;
const MIB: u64 = 1 << 20;

/// Entries in the GPT entry array and their size (the UEFI minimum array,
/// 16 KiB: 32 sectors).
const ENTRY_COUNT: u32 = 128;
const ENTRY_SIZE: usize = 128;
const ENTRY_ARRAY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR;

/// A GUID in GPT's byte order (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (compile-time constants only).
    pub const fn parse(s: &str) -> Guid {
        let b = s.as_bytes();
        assert!(b.len() == 36);
        let mut hex = [0u8; 16];
        let mut i = 0;
        let mut n = 0;
        while i < 36 {
            if b[i] == b'-' {
                i += 1;
                continue;
            }
            hex[n] = (nibble(b[i]) << 4) | nibble(b[i + 1]);
            n += 1;
            i += 2;
        }
        // Text order → GPT's mixed-endian order.
        Guid([
            hex[3], hex[2], hex[1], hex[0], hex[5], hex[4], hex[7], hex[6], hex[8], hex[9], hex[10], hex[11], hex[12], hex[13], hex[14],
            hex[15],
        ])
    }
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit"),
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9]
        )?;
        g[10..].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// GRUB's BIOS boot partition ("Hah!IdontNeedEFI"): core.img lives here.
pub const BIOS_BOOT_TYPE: Guid = Guid::parse("21686148-6449-6e6f-744e-656564454649");
/// The EFI system partition.
pub const ESP_TYPE: Guid = Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
/// routerd's boot-state partition (a small FAT holding GRUB's `grubenv`).
/// Our own type, so no operating system mounts it and moves the file.
pub const BOOT_STATE_TYPE: Guid = Guid::parse("5a3d38a2-0495-475d-a60c-4bf1cbf695f1");
/// A routerd firmware slot: the ELF as raw blocks from the first sector.
pub const SLOT_TYPE: Guid = Guid::parse("f9aa9994-5a03-4541-b6fc-bc7dee6cd97a");
/// The state partition (hal-x86's `STATE_TYPE_GUID`; the box finds it by name).
pub const STATE_TYPE: Guid = Guid::parse("5a2f0414-229e-43b5-9209-78da4a209467");

/// What a partition is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    BiosBoot,
    Esp,
    BootState,
    SlotA,
    SlotB,
    State,
}

/// One partition of the plan.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Partition {
    pub role: Role,
    /// GPT partition number as GRUB and Linux count (1-based): `gptN`, `sdaN`.
    pub number: u32,
    pub name: &'static str,
    pub type_guid: Guid,
    pub first_lba: u64,
    pub sectors: u64,
}

impl Partition {
    pub fn last_lba(&self) -> u64 {
        self.first_lba + self.sectors - 1
    }

    pub fn byte_range(&self) -> std::ops::Range<usize> {
        let start = (self.first_lba * SECTOR) as usize;
        start..start + (self.sectors * SECTOR) as usize
    }
}

/// The partitions in order: (role, name, type, size in MiB). The order is
/// the contract grub.cfg and the firmware rely on (`gpt3` is the boot
/// state, `gpt4`/`gpt5` the slots).
const PARTITIONS: [(Role, &str, Guid, u64); 6] = [
    (Role::BiosBoot, "BIOS-BOOT", BIOS_BOOT_TYPE, 1),
    (Role::Esp, "EFI-SYSTEM", ESP_TYPE, 8),
    (Role::BootState, "ROUTERD-BOOT", BOOT_STATE_TYPE, 1),
    (Role::SlotA, "ROUTERD-A", SLOT_TYPE, SLOT_MIB),
    (Role::SlotB, "ROUTERD-B", SLOT_TYPE, SLOT_MIB),
    (Role::State, "ROUTERD-STATE", STATE_TYPE, 8),
];

/// Size of each firmware slot: 16 MiB, ~16 times today's firmware.
pub const SLOT_MIB: u64 = 16;
/// Sectors in a slot: what grub.cfg's blocklist (`0+N`) reads at most.
pub const SLOT_SECTORS: u64 = SLOT_MIB * MIB / SECTOR;

/// The whole disk: the partitions, and its size in sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub partitions: Vec<Partition>,
    pub sectors: u64,
}

impl Plan {
    pub fn get(&self, role: Role) -> &Partition {
        // Every role is in PARTITIONS exactly once (a test checks).
        self.partitions.iter().find(|p| p.role == role).unwrap_or(&self.partitions[0])
    }

    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// The layout every image has: partitions back to back from 1 MiB, then
/// 1 MiB for the backup GPT (it needs 33 sectors; the rest keeps the end
/// aligned). 52 MiB in all.
pub fn plan() -> Plan {
    let mut lba = ALIGN_SECTORS;
    let mut partitions = Vec::new();
    for (i, (role, name, type_guid, mib)) in PARTITIONS.into_iter().enumerate() {
        let sectors = mib * MIB / SECTOR;
        partitions.push(Partition { role, number: i as u32 + 1, name, type_guid, first_lba: lba, sectors });
        lba += sectors;
    }
    Plan { partitions, sectors: lba + ALIGN_SECTORS }
}

/// A version-4-shaped GUID from a digest of the image's inputs and a label
/// (`"disk"`, a partition name): stable for the same inputs, different
/// between images and between partitions.
pub fn derive_guid(inputs_digest: &[u8], label: &str) -> Guid {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"routerd image guid\0");
    ctx.update(inputs_digest);
    ctx.update(label.as_bytes());
    let d = ctx.finish();
    let mut g = [0u8; 16];
    g.copy_from_slice(&d.as_ref()[..16]);
    // Version 4 (in the third field, stored little-endian: byte 7's high
    // nibble) and the RFC 4122 variant.
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    Guid(g)
}

/// CRC-32/ISO-HDLC, GPT's checksum.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// The partition table, ready to be written: `primary` is LBAs 0..34
/// (protective MBR, header, entry array), `backup` the last 33 sectors
/// (entry array, header).
pub struct Gpt {
    pub primary: Vec<u8>,
    pub backup: Vec<u8>,
}

/// Emits the protective MBR and both GPT copies for `plan` (UEFI 2.10
/// §5.2.3, §5.3). The MBR's boot code is left zero: [`install_boot_img`]
/// puts GRUB there.
pub fn gpt(plan: &Plan, disk_guid: Guid, partition_guids: &[Guid]) -> Gpt {
    let last_lba = plan.sectors - 1;
    let mut entries = vec![0u8; (ENTRY_ARRAY_SECTORS * SECTOR) as usize];
    for (i, p) in plan.partitions.iter().enumerate() {
        let e = &mut entries[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
        e[0..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&partition_guids.get(i).copied().unwrap_or(Guid([0; 16])).0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba().to_le_bytes());
        // Attributes: none (bit 0 "required" would make some tools refuse
        // to delete it; nothing needs it).
        for (k, unit) in p.name.encode_utf16().enumerate() {
            e[56 + 2 * k..58 + 2 * k].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = crc32(&entries);
    let first_usable = 2 + ENTRY_ARRAY_SECTORS;
    let last_usable = last_lba - 1 - ENTRY_ARRAY_SECTORS;
    let header = |my_lba: u64, alternate: u64, entries_lba: u64| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut mbr = vec![0u8; SECTOR as usize];
    // One protective record from LBA 1 over the whole disk (capped at
    // 2³²−1 sectors); CHS start 0/0/2, end 0xFFFFFF, as UEFI prescribes.
    mbr[446..458].copy_from_slice(&[0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0]);
    mbr[458..462].copy_from_slice(&u32::try_from(last_lba).unwrap_or(u32::MAX).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;

    let mut primary = mbr;
    primary.extend_from_slice(&header(1, last_lba, 2));
    primary.extend_from_slice(&entries);
    let backup_entries_lba = last_lba - ENTRY_ARRAY_SECTORS;
    let mut backup = entries;
    backup.extend_from_slice(&header(last_lba, 1, backup_entries_lba));
    Gpt { primary, backup }
}

/// Where grub-bios-setup patches boot.img (grub/i386/pc/boot.h).
mod boot_img {
    /// The BIOS parameter block: kept from the disk (zero on ours).
    pub const BPB: std::ops::Range<usize> = 0x03..0x5a;
    /// LBA of core.img's first sector (u64 LE).
    pub const KERNEL_SECTOR: std::ops::Range<usize> = 0x5c..0x64;
    /// The drive to boot from; 0xff = the one the BIOS booted.
    pub const BOOT_DRIVE: usize = 0x64;
    /// A two-byte conditional jump that, for a floppy, overrides the BIOS's
    /// drive; NOPs on a hard disk ("force the drive passed by the BIOS").
    pub const DRIVE_CHECK: std::ops::Range<usize> = 0x66..0x68;
    /// boot.img's code ends here; the disk signature and partition table follow.
    pub const CODE_END: usize = 0x1b8;
}

/// Why GRUB's images cannot be installed.
#[derive(Debug, PartialEq, Eq)]
pub enum SetupError {
    BootImgSize(usize),
    CoreTooLarge { sectors: u64, room: u64 },
    CoreMismatch(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::BootImgSize(n) => write!(f, "boot.img is {n} bytes, not 512"),
            SetupError::CoreTooLarge { sectors, room } => {
                write!(f, "core.img needs {sectors} sectors; the BIOS boot partition has {room}")
            }
            SetupError::CoreMismatch(m) => write!(f, "core.img does not look like GRUB's i386-pc diskboot image: {m}"),
        }
    }
}

/// Puts GRUB's boot.img into the protective MBR `mbr` (its code, up to the
/// disk signature), pointing it at core.img in the BIOS boot partition —
/// what `grub-bios-setup` does on a GPT disk.
pub fn install_boot_img(mbr: &mut [u8], boot_img: &[u8], core_lba: u64) -> Result<(), SetupError> {
    if boot_img.len() != SECTOR as usize || mbr.len() < SECTOR as usize {
        return Err(SetupError::BootImgSize(boot_img.len()));
    }
    mbr[..boot_img::CODE_END].copy_from_slice(&boot_img[..boot_img::CODE_END]);
    mbr[boot_img::BPB].fill(0);
    mbr[boot_img::KERNEL_SECTOR].copy_from_slice(&core_lba.to_le_bytes());
    mbr[boot_img::BOOT_DRIVE] = 0xff;
    mbr[boot_img::DRIVE_CHECK].copy_from_slice(&[0x90, 0x90]);
    Ok(())
}

/// Fills in core.img's first blocklist (the last 12 bytes of its first
/// sector, diskboot.img's): the rest of core.img starts at `core_lba + 1`.
/// grub-mkimage already wrote the length and segment; they are checked.
pub fn patch_core_img(core: &mut [u8], core_lba: u64, room_sectors: u64) -> Result<(), SetupError> {
    let sectors = (core.len() as u64).div_ceil(SECTOR);
    if sectors > room_sectors {
        return Err(SetupError::CoreTooLarge { sectors, room: room_sectors });
    }
    let at = SECTOR as usize - 12;
    let block = core.get_mut(at..at + 12).ok_or_else(|| SetupError::CoreMismatch("shorter than a sector".into()))?;
    let len = u16::from_le_bytes([block[8], block[9]]);
    let segment = u16::from_le_bytes([block[10], block[11]]);
    if u64::from(len) + 1 != sectors || segment != 0x820 {
        return Err(SetupError::CoreMismatch(format!(
            "blocklist says {len} sectors at segment {segment:#x}, the file has {sectors} sectors"
        )));
    }
    block[..8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table docs/DISK-LAYOUT.md prints; change both together.
    #[test]
    fn plan_is_the_documented_layout() {
        let p = plan();
        let rows: Vec<(u32, &str, u64, u64)> = p.partitions.iter().map(|q| (q.number, q.name, q.first_lba, q.sectors)).collect();
        assert_eq!(
            rows,
            [
                (1, "BIOS-BOOT", 2048, 2048),
                (2, "EFI-SYSTEM", 4096, 16384),
                (3, "ROUTERD-BOOT", 20480, 2048),
                (4, "ROUTERD-A", 22528, 32768),
                (5, "ROUTERD-B", 55296, 32768),
                (6, "ROUTERD-STATE", 88064, 16384),
            ]
        );
        assert_eq!(p.sectors, 106_496);
        assert_eq!(p.bytes(), 52 << 20);
        for role in [Role::BiosBoot, Role::Esp, Role::BootState, Role::SlotA, Role::SlotB, Role::State] {
            assert_eq!(p.partitions.iter().filter(|q| q.role == role).count(), 1);
            assert_eq!(p.get(role).role, role);
        }
        // The backup GPT (33 sectors) fits after the last partition.
        assert!(p.partitions[5].last_lba() < p.sectors - 33);
    }

    #[test]
    fn guid_text_round_trips_and_derivation_is_stable() {
        assert_eq!(STATE_TYPE.to_string(), "5a2f0414-229e-43b5-9209-78da4a209467");
        assert_eq!(BIOS_BOOT_TYPE.0[..8], *b"Hah!IdontNeedEFI".first_chunk::<8>().unwrap());
        let a = derive_guid(b"inputs", "disk");
        assert_eq!(a, derive_guid(b"inputs", "disk"));
        assert_ne!(a, derive_guid(b"inputs", "ROUTERD-A"));
        assert_ne!(a, derive_guid(b"other", "disk"));
        let text = a.to_string();
        assert_eq!(&text[14..15], "4", "{text}");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
    }

    #[test]
    fn crc32_is_the_iso_hdlc_one() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    /// A disk in memory, for the box's own GPT reader.
    struct Mem(Vec<u8>);

    impl hal_x86::blk::BlockDevice for Mem {
        fn block_size(&self) -> routerd_storage::BlockSize {
            routerd_storage::BlockSize::B512
        }
        fn block_count(&self) -> u64 {
            self.0.len() as u64 / 512
        }
        fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), routerd_storage::BlockError> {
            let at = lba as usize * 512;
            buf.copy_from_slice(self.0.get(at..at + buf.len()).ok_or(routerd_storage::BlockError::OutOfRange)?);
            Ok(())
        }
        fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), routerd_storage::BlockError> {
            let at = lba as usize * 512;
            self.0.get_mut(at..at + data.len()).ok_or(routerd_storage::BlockError::OutOfRange)?.copy_from_slice(data);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), routerd_storage::BlockError> {
            Ok(())
        }
    }

    fn disk() -> (Plan, Vec<u8>) {
        let p = plan();
        let guids: Vec<Guid> = p.partitions.iter().map(|q| derive_guid(b"t", q.name)).collect();
        let t = gpt(&p, derive_guid(b"t", "disk"), &guids);
        let mut d = vec![0u8; p.bytes() as usize];
        d[..t.primary.len()].copy_from_slice(&t.primary);
        let n = d.len();
        d[n - t.backup.len()..].copy_from_slice(&t.backup);
        (p, d)
    }

    /// The box's own reader (hal-x86) finds the state partition in our
    /// table, both copies whole and agreeing — also with GRUB's boot code
    /// in the MBR.
    #[test]
    fn the_box_finds_its_state_partition() {
        let (p, mut d) = disk();
        let boot = {
            let mut b = vec![0xebu8; 512];
            b[510] = 0x55;
            b[511] = 0xaa;
            b
        };
        install_boot_img(&mut d[..512], &boot, 2048).unwrap();
        assert_eq!(&d[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(d[450], 0xee, "the protective record survives");
        let found = hal_x86::blk::gpt::find_state_partition(&mut Mem(d.clone())).unwrap();
        let state = p.get(Role::State);
        assert_eq!((found.partition.first_lba, found.partition.blocks), (state.first_lba, state.sectors));
        assert_eq!(found.partition.index, 5);
        assert!(found.copies_agree);
        assert_eq!(found.partition.type_guid.0, STATE_TYPE.0);
        // A damaged primary: the backup still says the same.
        d[512 + 20] ^= 1;
        let found = hal_x86::blk::gpt::find_state_partition(&mut Mem(d)).unwrap();
        assert_eq!(found.used, hal_x86::blk::gpt::TableCopy::Backup);
        assert_eq!(found.partition.first_lba, state.first_lba);
    }

    #[test]
    fn core_img_blocklist_is_patched_and_checked() {
        let mut core = vec![0u8; 10 * 512 + 7];
        core[500..512].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0x20, 0x08]);
        patch_core_img(&mut core, 2048, 2048).unwrap();
        assert_eq!(&core[500..508], &2049u64.to_le_bytes());
        assert_eq!(patch_core_img(&mut core, 2048, 5), Err(SetupError::CoreTooLarge { sectors: 11, room: 5 }));
        core[508] = 3;
        assert!(matches!(patch_core_img(&mut core, 2048, 2048), Err(SetupError::CoreMismatch(_))));
    }
}

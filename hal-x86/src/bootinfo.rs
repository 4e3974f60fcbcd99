//! What the loader tells us: memory map, command line, ACPI root.
//!
//! Two loaders, one result. QEMU's PVH boot passes an `hvm_start_info`
//! (magic 0x336ec578) whose fields point at further physical memory; GRUB's
//! multiboot2 passes a self-contained list of tags (and magic 0x36d76289 in
//! `eax`). Parsing goes through [`PhysMemory`], so the same code runs on the
//! identity-mapped machine and on a fake memory in the unit tests. Hostile or
//! broken boot information yields an error or a truncated map, never a fault:
//! every read is bounds-checked against what the structure itself declares.

/// The multiboot2 magic a compliant loader leaves in `eax`.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;
/// The magic at the start of a PVH `hvm_start_info`.
pub const PVH_MAGIC: u32 = 0x336e_c578;

/// Most memory-map entries kept; further ones are counted, not stored.
pub const MAX_MEMORY_REGIONS: usize = 64;
/// Longest command line kept (bytes); longer ones are truncated.
pub const MAX_CMDLINE: usize = 4096;
/// Largest multiboot2 information structure we will walk.
const MAX_MULTIBOOT2_INFO: usize = 64 * 1024;

/// Read access to physical memory.
pub trait PhysMemory {
    /// The `len` bytes at physical address `addr`, or `None` if not readable.
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]>;
}

/// Physical memory as seen through the boot identity map.
pub struct IdentityMapped {
    /// Highest address (exclusive) that is mapped.
    pub limit: u64,
}

impl PhysMemory for IdentityMapped {
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        if addr == 0 || end > self.limit {
            return None;
        }
        // SAFETY: the boot code identity-maps [0, limit); the loader's
        // structures are never written after boot, so a shared view is sound.
        Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
    }
}

/// Which loader started the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    /// QEMU (or another VMM) through the PVH entry note.
    Pvh,
    /// GRUB (or another multiboot2 loader).
    Multiboot2,
}

/// What a memory region holds (E820 types, shared by both loaders).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Bad,
    Other(u32),
}

impl MemoryKind {
    fn from_e820(kind: u32) -> MemoryKind {
        match kind {
            1 => MemoryKind::Usable,
            2 => MemoryKind::Reserved,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Bad,
            other => MemoryKind::Other(other),
        }
    }
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub base: u64,
    pub len: u64,
    pub kind: MemoryKind,
}

/// Why the boot information could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// No info pointer at all.
    NullPointer,
    /// Neither a multiboot2 magic in `eax` nor a PVH magic at the pointer.
    UnknownLoader { eax: u32 },
    /// The structure's header could not be read or declares an absurd size.
    Malformed(&'static str),
}

/// The boot information, copied out of loader memory.
#[derive(Clone, Debug)]
pub struct BootInfo {
    pub loader: Loader,
    regions: [MemoryRegion; MAX_MEMORY_REGIONS],
    region_count: usize,
    /// Regions the loader reported beyond [`MAX_MEMORY_REGIONS`].
    pub regions_dropped: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// The command line was longer than [`MAX_CMDLINE`].
    pub cmdline_truncated: bool,
    /// Physical address of the ACPI RSDP, when the loader told us.
    pub rsdp: Option<u64>,
}

const EMPTY_REGION: MemoryRegion = MemoryRegion { base: 0, len: 0, kind: MemoryKind::Reserved };

impl BootInfo {
    fn empty(loader: Loader) -> BootInfo {
        BootInfo {
            loader,
            regions: [EMPTY_REGION; MAX_MEMORY_REGIONS],
            region_count: 0,
            regions_dropped: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            cmdline_truncated: false,
            rsdp: None,
        }
    }

    /// Reads the boot information the loader left in `eax`/`ebx`.
    pub fn parse(mem: &impl PhysMemory, eax: u32, ebx: u32) -> Result<BootInfo, BootInfoError> {
        if ebx == 0 {
            return Err(BootInfoError::NullPointer);
        }
        if eax == MULTIBOOT2_MAGIC {
            return parse_multiboot2(mem, u64::from(ebx));
        }
        let magic = mem.read(u64::from(ebx), 4).and_then(|b| read_u32(b, 0)).ok_or(BootInfoError::Malformed("start info unreadable"))?;
        if magic == PVH_MAGIC {
            parse_pvh(mem, u64::from(ebx))
        } else {
            Err(BootInfoError::UnknownLoader { eax })
        }
    }

    /// The memory map as reported.
    pub fn memory(&self) -> &[MemoryRegion] {
        self.regions.get(..self.region_count).unwrap_or(&[])
    }

    /// Total bytes of usable RAM.
    pub fn usable_bytes(&self) -> u64 {
        self.memory().iter().filter(|r| r.kind == MemoryKind::Usable).fold(0u64, |acc, r| acc.saturating_add(r.len))
    }

    /// The kernel command line (lossy: invalid UTF-8 ends it).
    pub fn cmdline(&self) -> &str {
        let bytes = self.cmdline.get(..self.cmdline_len).unwrap_or(&[]);
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or(&[])).unwrap_or(""),
        }
    }

    /// The value of `key=value` on the command line, if present.
    pub fn cmdline_option(&self, key: &str) -> Option<&str> {
        self.cmdline().split_ascii_whitespace().find_map(|word| {
            let (k, v) = word.split_once('=')?;
            (k == key).then_some(v)
        })
    }

    fn push_region(&mut self, region: MemoryRegion) {
        match self.regions.get_mut(self.region_count) {
            Some(slot) => {
                *slot = region;
                self.region_count += 1;
            }
            None => self.regions_dropped += 1,
        }
    }

    fn set_cmdline(&mut self, bytes: &[u8]) {
        let bytes = match bytes.iter().position(|&b| b == 0) {
            Some(nul) => bytes.get(..nul).unwrap_or(&[]),
            None => bytes,
        };
        let n = bytes.len().min(MAX_CMDLINE);
        self.cmdline_truncated = bytes.len() > MAX_CMDLINE;
        if let (Some(dst), Some(src)) = (self.cmdline.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
            self.cmdline_len = n;
        }
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Reads a NUL-terminated string of at most `max` bytes at `addr`, shrinking
/// the window if the full one is not readable.
fn read_c_string(mem: &impl PhysMemory, addr: u64, max: usize) -> Option<&[u8]> {
    let mut len = max;
    while len > 0 {
        if let Some(b) = mem.read(addr, len) {
            return Some(b);
        }
        len /= 2;
    }
    None
}

fn parse_pvh(mem: &impl PhysMemory, at: u64) -> Result<BootInfo, BootInfoError> {
    const V0_LEN: usize = 40;
    const V1_LEN: usize = 56;
    const ENTRY_LEN: usize = 24;
    let head = mem.read(at, V0_LEN).ok_or(BootInfoError::Malformed("start info unreadable"))?;
    let version = read_u32(head, 4).unwrap_or(0);
    let mut info = BootInfo::empty(Loader::Pvh);

    let cmdline = read_u64(head, 24).unwrap_or(0);
    if cmdline != 0 {
        if let Some(bytes) = read_c_string(mem, cmdline, MAX_CMDLINE + 1) {
            info.set_cmdline(bytes);
        }
    }
    info.rsdp = read_u64(head, 32).filter(|&a| a != 0);

    if version >= 1 {
        let full = mem.read(at, V1_LEN).ok_or(BootInfoError::Malformed("start info v1 unreadable"))?;
        let map = read_u64(full, 40).unwrap_or(0);
        let entries = read_u32(full, 48).unwrap_or(0) as usize;
        // Never read more than a sane table, whatever the count says.
        let wanted = entries.min(4 * MAX_MEMORY_REGIONS);
        info.regions_dropped += entries - wanted;
        for i in 0..wanted {
            let Some(e) = mem.read(map.saturating_add((i * ENTRY_LEN) as u64), ENTRY_LEN) else {
                return Err(BootInfoError::Malformed("memory map unreadable"));
            };
            info.push_region(MemoryRegion {
                base: read_u64(e, 0).unwrap_or(0),
                len: read_u64(e, 8).unwrap_or(0),
                kind: MemoryKind::from_e820(read_u32(e, 16).unwrap_or(0)),
            });
        }
    }
    Ok(info)
}

fn parse_multiboot2(mem: &impl PhysMemory, at: u64) -> Result<BootInfo, BootInfoError> {
    let head = mem.read(at, 8).ok_or(BootInfoError::Malformed("multiboot2 info unreadable"))?;
    let total = read_u32(head, 0).unwrap_or(0) as usize;
    if !(8..=MAX_MULTIBOOT2_INFO).contains(&total) {
        return Err(BootInfoError::Malformed("multiboot2 info size out of range"));
    }
    let all = mem.read(at, total).ok_or(BootInfoError::Malformed("multiboot2 info unreadable"))?;
    let mut info = BootInfo::empty(Loader::Multiboot2);
    let mut off = 8usize;
    while let (Some(kind), Some(size)) = (read_u32(all, off), read_u32(all, off + 4)) {
        let size = size as usize;
        if kind == 0 || size < 8 {
            break;
        }
        let Some(tag) = all.get(off..off.saturating_add(size)) else {
            return Err(BootInfoError::Malformed("multiboot2 tag runs past the end"));
        };
        let body = tag.get(8..).unwrap_or(&[]);
        match kind {
            1 => info.set_cmdline(body),
            6 => {
                let entry_size = read_u32(body, 0).unwrap_or(0) as usize;
                if entry_size >= 24 {
                    let entries = body.get(8..).unwrap_or(&[]);
                    for e in entries.chunks_exact(entry_size) {
                        info.push_region(MemoryRegion {
                            base: read_u64(e, 0).unwrap_or(0),
                            len: read_u64(e, 8).unwrap_or(0),
                            kind: MemoryKind::from_e820(read_u32(e, 16).unwrap_or(0)),
                        });
                    }
                }
            }
            // ACPI 1.0 / 2.0+ RSDP copies: remember where GRUB put them.
            14 | 15 => info.rsdp = Some(at + off as u64 + 8),
            _ => {}
        }
        // Tags are 8-byte aligned.
        off = match off.checked_add((size + 7) & !7) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A fake physical memory: one buffer at a base address.
    struct Fake {
        base: u64,
        bytes: Vec<u8>,
    }

    impl PhysMemory for Fake {
        fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
            let start = usize::try_from(addr.checked_sub(self.base)?).ok()?;
            self.bytes.get(start..start.checked_add(len)?)
        }
    }

    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn pvh_fixture() -> Fake {
        let base = 0x1000u64;
        let mut b = std::vec![0xa5u8; 0x400];
        put32(&mut b, 0, PVH_MAGIC);
        put32(&mut b, 4, 1);
        put64(&mut b, 24, base + 0x100); // cmdline
        put64(&mut b, 32, 0xf5a10); // rsdp
        put64(&mut b, 40, base + 0x200); // memmap
        put32(&mut b, 48, 2);
        let cmd = b"routerd.test=shutdown quiet\0";
        b[0x100..0x100 + cmd.len()].copy_from_slice(cmd);
        put64(&mut b, 0x200, 0);
        put64(&mut b, 0x208, 0x9fc00);
        put32(&mut b, 0x210, 1);
        put64(&mut b, 0x218, 0x100000);
        put64(&mut b, 0x220, 0x7f00000);
        put32(&mut b, 0x228, 1);
        Fake { base, bytes: b }
    }

    #[test]
    fn parses_pvh_start_info() {
        let mem = pvh_fixture();
        let info = BootInfo::parse(&mem, 0, 0x1000).unwrap();
        assert_eq!(info.loader, Loader::Pvh);
        assert_eq!(info.cmdline(), "routerd.test=shutdown quiet");
        assert_eq!(info.cmdline_option("routerd.test"), Some("shutdown"));
        assert_eq!(info.cmdline_option("quiet"), None);
        assert_eq!(info.memory().len(), 2);
        assert_eq!(info.usable_bytes(), 0x9fc00 + 0x7f00000);
        assert_eq!(info.rsdp, Some(0xf5a10));
    }

    #[test]
    fn pvh_with_absurd_entry_count_is_an_error_not_a_fault() {
        let mut mem = pvh_fixture();
        put32(&mut mem.bytes, 48, u32::MAX);
        assert_eq!(BootInfo::parse(&mem, 0, 0x1000).unwrap_err(), BootInfoError::Malformed("memory map unreadable"));
    }

    #[test]
    fn unknown_loader_is_reported() {
        let mem = Fake { base: 0x1000, bytes: std::vec![0; 64] };
        assert_eq!(BootInfo::parse(&mem, 0x1234, 0x1000).unwrap_err(), BootInfoError::UnknownLoader { eax: 0x1234 });
        assert_eq!(BootInfo::parse(&mem, 0, 0).unwrap_err(), BootInfoError::NullPointer);
    }

    fn multiboot2_fixture() -> Fake {
        let mut b = std::vec![0u8; 8];
        // cmdline tag
        let cmd = b"routerd.test=panic\0";
        let mut tag = std::vec![0u8; 8];
        tag.extend_from_slice(cmd);
        let size = tag.len() as u32;
        put32(&mut tag, 0, 1);
        put32(&mut tag, 4, size);
        while !tag.len().is_multiple_of(8) {
            tag.push(0);
        }
        b.extend_from_slice(&tag);
        // memory map tag, two entries
        let mut mm = std::vec![0u8; 16 + 48];
        put32(&mut mm, 0, 6);
        put32(&mut mm, 4, 64);
        put32(&mut mm, 8, 24);
        put64(&mut mm, 16, 0);
        put64(&mut mm, 24, 0x9f000);
        put32(&mut mm, 32, 1);
        put64(&mut mm, 40, 0xf0000);
        put64(&mut mm, 48, 0x10000);
        put32(&mut mm, 56, 2);
        b.extend_from_slice(&mm);
        b.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]);
        let total = b.len() as u32;
        put32(&mut b, 0, total);
        Fake { base: 0x8000, bytes: b }
    }

    #[test]
    fn parses_multiboot2_tags() {
        let mem = multiboot2_fixture();
        let info = BootInfo::parse(&mem, MULTIBOOT2_MAGIC, 0x8000).unwrap();
        assert_eq!(info.loader, Loader::Multiboot2);
        assert_eq!(info.cmdline_option("routerd.test"), Some("panic"));
        assert_eq!(info.memory().len(), 2);
        assert_eq!(info.memory()[1].kind, MemoryKind::Reserved);
        assert_eq!(info.usable_bytes(), 0x9f000);
    }

    #[test]
    fn truncated_multiboot2_never_faults() {
        let full = multiboot2_fixture();
        for cut in 0..full.bytes.len() {
            let mut bytes = full.bytes.clone();
            bytes.truncate(cut);
            let mem = Fake { base: 0x8000, bytes };
            let _ = BootInfo::parse(&mem, MULTIBOOT2_MAGIC, 0x8000);
        }
        // A tag claiming to be huge stops the walk with an error.
        let mut mem = multiboot2_fixture();
        put32(&mut mem.bytes, 12, 0xffff_fff0);
        assert!(BootInfo::parse(&mem, MULTIBOOT2_MAGIC, 0x8000).is_err());
    }

    #[test]
    fn overlong_cmdline_is_truncated_and_flagged() {
        let mut info = BootInfo::empty(Loader::Pvh);
        info.set_cmdline(&[b'a'; MAX_CMDLINE + 10]);
        assert!(info.cmdline_truncated);
        assert_eq!(info.cmdline().len(), MAX_CMDLINE);
    }
}

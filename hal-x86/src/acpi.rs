//! Just enough ACPI to find the PCI Express configuration window (MCFG).
//!
//! The RSDP comes from the loader when it says where it is (PVH
//! `rsdp_paddr`, multiboot2 ACPI tags) and otherwise from the BIOS area scan
//! (0xE0000–0xFFFFF on 16-byte boundaries) that PC firmware guarantees. From
//! it the XSDT (or RSDT) lists the tables; MCFG's first allocation for PCI
//! segment 0 gives the ECAM base. Every table is length- and
//! checksum-checked before use; anything malformed means "no ECAM" and the
//! caller keeps using port I/O.

use crate::bootinfo::PhysMemory;

/// Where PCI segment 0's ECAM window lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecam {
    pub base: u64,
    pub start_bus: u8,
    pub end_bus: u8,
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Finds the RSDP: the loader's hint first, then the BIOS area.
pub fn find_rsdp(mem: &impl PhysMemory, hint: Option<u64>) -> Option<u64> {
    let valid = |addr: u64| {
        let b = mem.read(addr, 20)?;
        (b.get(..8)? == b"RSD PTR " && checksum_ok(b)).then_some(addr)
    };
    if let Some(addr) = hint.and_then(valid) {
        return Some(addr);
    }
    (0xE0000u64..0x100000).step_by(16).find_map(valid)
}

/// A validated system description table at `addr`.
fn table(mem: &impl PhysMemory, addr: u64) -> Option<&[u8]> {
    let header = mem.read(addr, 36)?;
    let len = u32_at(header, 4)? as usize;
    if !(36..=1 << 20).contains(&len) {
        return None;
    }
    let t = mem.read(addr, len)?;
    checksum_ok(t).then_some(t)
}

/// The first table with `signature` listed by the XSDT (or RSDT).
fn find_table<'m>(mem: &'m impl PhysMemory, rsdp_hint: Option<u64>, signature: &[u8; 4]) -> Option<&'m [u8]> {
    let rsdp_addr = find_rsdp(mem, rsdp_hint)?;
    let rsdp = mem.read(rsdp_addr, 36).or_else(|| mem.read(rsdp_addr, 20))?;
    let revision = *rsdp.get(15)?;
    // ACPI 2.0+: prefer the XSDT (64-bit entries).
    let (root, entry_size) = match (revision >= 2).then(|| u64_at(rsdp, 24)).flatten() {
        Some(x) if x != 0 => (x, 8usize),
        _ => (u64::from(u32_at(rsdp, 16)?), 4usize),
    };
    let root = table(mem, root)?;
    let entries = root.get(36..)?;
    for e in entries.chunks_exact(entry_size) {
        let addr = if entry_size == 8 { u64_at(e, 0)? } else { u64::from(u32_at(e, 0)?) };
        if let Some(t) = table(mem, addr).filter(|t| t.get(..4) == Some(&signature[..])) {
            return Some(t);
        }
    }
    None
}

/// The ECAM window of PCI segment 0, if the firmware describes one.
pub fn find_ecam(mem: &impl PhysMemory, rsdp_hint: Option<u64>) -> Option<Ecam> {
    let t = find_table(mem, rsdp_hint, b"MCFG")?;
    // Allocation structures start at offset 44, 16 bytes each.
    for a in t.get(44..)?.chunks_exact(16) {
        let segment = u16::from_le_bytes([a[8], a[9]]);
        if segment == 0 {
            return Some(Ecam { base: u64_at(a, 0)?, start_bus: a[10], end_bus: a[11] });
        }
    }
    None
}

/// How to enter S5 (soft off): the PM1 control ports from the FADT and the
/// sleep types from the DSDT's `\_S5_` package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftOff {
    pub pm1a_control: u16,
    pub pm1b_control: Option<u16>,
    pub slp_typ_a: u16,
    pub slp_typ_b: u16,
}

/// Reads what [`crate::power::soft_off`] needs, when the firmware has it.
///
/// The `\_S5_` object is found by scanning the DSDT's AML for its name
/// followed by a package (the usual firmware encoding, `Name (_S5, Package
/// () {a, b, …})`), not by interpreting AML.
pub fn find_soft_off(mem: &impl PhysMemory, rsdp_hint: Option<u64>) -> Option<SoftOff> {
    let fadt = find_table(mem, rsdp_hint, b"FACP")?;
    let dsdt_addr = match fadt.get(140..148).and_then(|_| u64_at(fadt, 140)).filter(|&a| a != 0) {
        Some(x) => x,
        None => u64::from(u32_at(fadt, 40)?),
    };
    let pm1a = u32_at(fadt, 64).filter(|&p| p != 0 && p <= 0xffff)? as u16;
    let pm1b = u32_at(fadt, 68).filter(|&p| p != 0 && p <= 0xffff).map(|p| p as u16);
    let dsdt = table(mem, dsdt_addr).filter(|t| t.get(..4) == Some(b"DSDT"))?;
    let (a, b) = s5_from_aml(dsdt.get(36..)?)?;
    Some(SoftOff { pm1a_control: pm1a, pm1b_control: pm1b, slp_typ_a: a, slp_typ_b: b })
}

/// The CMOS index of the RTC's century register, from the FADT's `CENTURY`
/// byte (offset 108) when the firmware names one (0 means none).
pub fn find_rtc_century_index(mem: &impl PhysMemory, rsdp_hint: Option<u64>) -> Option<u8> {
    let fadt = find_table(mem, rsdp_hint, b"FACP")?;
    fadt.get(FADT_CENTURY).copied().filter(|&i| i != 0)
}

/// Offset of `CENTURY` in the FADT (ACPI 1.0 and later).
const FADT_CENTURY: usize = 108;

/// `_S5_` `PackageOp PkgLength NumElements a b …` → (a, b).
fn s5_from_aml(aml: &[u8]) -> Option<(u16, u16)> {
    let at = aml.windows(4).position(|w| w == b"_S5_")?;
    let mut i = at + 4;
    if *aml.get(i)? != 0x12 {
        return None; // not a package
    }
    i += 1;
    // PkgLength: the top two bits of the first byte count the extra bytes.
    i += 1 + usize::from(*aml.get(i)? >> 6);
    i += 1; // NumElements
    let mut value = || -> Option<u16> {
        let op = *aml.get(i)?;
        let (v, len) = match op {
            0x00 => (0, 1),                                                        // ZeroOp
            0x01 => (1, 1),                                                        // OneOp
            0x0a => (u16::from(*aml.get(i + 1)?), 2),                              // BytePrefix
            0x0b => (u16::from_le_bytes([*aml.get(i + 1)?, *aml.get(i + 2)?]), 3), // WordPrefix
            _ => return None,
        };
        i += len;
        Some(v)
    };
    let a = value()?;
    let b = value().unwrap_or(a);
    Some((a & 7, b & 7))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    struct Fake(Vec<u8>);
    impl PhysMemory for Fake {
        fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
            let a = usize::try_from(addr).ok()?;
            self.0.get(a..a.checked_add(len)?)
        }
    }

    fn fix_checksum(b: &mut [u8], at: usize) {
        b[at] = 0;
        let sum = b.iter().fold(0u8, |a, &x| a.wrapping_add(x));
        b[at] = 0u8.wrapping_sub(sum);
    }

    fn sdt(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = std::vec![0u8; 36];
        t[..4].copy_from_slice(sig);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t, 9);
        t
    }

    /// Memory with an RSDP (rev 2) in the BIOS area → XSDT → MCFG.
    fn machine() -> Fake {
        let mut m = std::vec![0u8; 0x100000];
        let mut mcfg_body = std::vec![0u8; 8];
        let mut alloc = std::vec![0u8; 16];
        alloc[..8].copy_from_slice(&0xb000_0000u64.to_le_bytes());
        alloc[10] = 0;
        alloc[11] = 0xff;
        mcfg_body.extend_from_slice(&alloc);
        let mcfg = sdt(b"MCFG", &mcfg_body);
        let apic = sdt(b"APIC", &[1, 2, 3, 4]);
        m[0x2000..0x2000 + mcfg.len()].copy_from_slice(&mcfg);
        m[0x3000..0x3000 + apic.len()].copy_from_slice(&apic);
        let mut entries = Vec::new();
        entries.extend_from_slice(&0x3000u64.to_le_bytes());
        entries.extend_from_slice(&0x2000u64.to_le_bytes());
        let xsdt = sdt(b"XSDT", &entries);
        m[0x1000..0x1000 + xsdt.len()].copy_from_slice(&xsdt);
        let mut rsdp = std::vec![0u8; 36];
        rsdp[..8].copy_from_slice(b"RSD PTR ");
        rsdp[15] = 2;
        rsdp[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
        fix_checksum(&mut rsdp[..20], 8);
        m[0xf5a10..0xf5a10 + 36].copy_from_slice(&rsdp);
        Fake(m)
    }

    #[test]
    fn finds_ecam_through_the_bios_area_scan() {
        let m = machine();
        assert_eq!(find_rsdp(&m, None), Some(0xf5a10));
        assert_eq!(find_ecam(&m, None), Some(Ecam { base: 0xb000_0000, start_bus: 0, end_bus: 0xff }));
        // A wrong hint falls back to the scan.
        assert_eq!(find_ecam(&m, Some(0x4000)).map(|e| e.base), Some(0xb000_0000));
    }

    #[test]
    fn reads_s5_sleep_types_in_every_encoding() {
        // Name(_S5, Package(4) {Zero, Zero, Zero, Zero}) as QEMU writes it.
        assert_eq!(s5_from_aml(b"\x08_S5_\x12\x06\x04\x00\x00\x00\x00"), Some((0, 0)));
        // BytePrefix values (typical real firmware: SLP_TYP 7).
        assert_eq!(s5_from_aml(b"xx\x08_S5_\x12\x08\x04\x0a\x07\x0a\x07\x00\x00"), Some((7, 7)));
        // A two-byte PkgLength.
        assert_eq!(s5_from_aml(b"\x08_S5_\x12\x40\x01\x02\x0a\x05\x01"), Some((5, 1)));
        // Truncated or not a package: nothing, never a fault.
        assert_eq!(s5_from_aml(b"\x08_S5_\x12\x06"), None);
        assert_eq!(s5_from_aml(b"\x08_S5_\x10"), None);
        assert_eq!(s5_from_aml(b"no such object"), None);
    }

    #[test]
    fn century_index_from_the_fadt() {
        let mut m = machine();
        assert_eq!(find_rtc_century_index(&m, None), None, "no FADT: no century register");
        // A FADT with CENTURY = 0x32 (what QEMU writes), listed by the XSDT.
        let mut body = std::vec![0u8; 116 - 36];
        body[FADT_CENTURY - 36] = 0x32;
        let fadt = sdt(b"FACP", &body);
        m.0[0x4000..0x4000 + fadt.len()].copy_from_slice(&fadt);
        let mut entries = Vec::new();
        entries.extend_from_slice(&0x3000u64.to_le_bytes());
        entries.extend_from_slice(&0x4000u64.to_le_bytes());
        let xsdt = sdt(b"XSDT", &entries);
        m.0[0x1000..0x1000 + xsdt.len()].copy_from_slice(&xsdt);
        assert_eq!(find_rtc_century_index(&m, None), Some(0x32));
        // A short (ACPI 1.0-sized, truncated) FADT has no century field.
        let short = sdt(b"FACP", &[0u8; 40]);
        m.0[0x4000..0x4000 + 116].fill(0);
        m.0[0x4000..0x4000 + short.len()].copy_from_slice(&short);
        assert_eq!(find_rtc_century_index(&m, None), None);
    }

    #[test]
    fn a_corrupt_table_means_no_ecam() {
        let mut m = machine();
        m.0[0x2000 + 40] ^= 0xff; // breaks MCFG's checksum
        assert_eq!(find_ecam(&m, None), None);
        let mut m = machine();
        m.0[0x1000 + 4..0x1000 + 8].copy_from_slice(&u32::MAX.to_le_bytes()); // absurd XSDT length
        assert_eq!(find_ecam(&m, None), None);
    }
}

//! Tests of `ahci.rs` against a fake HBA: a register file that reacts to the
//! driver's writes as AHCI 1.3.1 says (reset, ST/CR, FRE/FR, COMRESET, RW1C
//! status registers), a device model that executes the command it finds in
//! slot 0 of the command list over host memory (IDENTIFY, READ/WRITE DMA
//! EXT, FLUSH CACHE [EXT], SET FEATURES), disks in `Vec`s, and switches that
//! make it misbehave.
extern crate std;

use super::*;
use crate::blk::gpt;
use std::cell::RefCell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

pub(super) fn heap_pages(pages: usize) -> Option<dma::DmaRegion> {
    let layout = std::alloc::Layout::from_size_align(pages * 4096, 4096).ok()?;
    // SAFETY: a non-zero size (every caller asks for at least one page).
    let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
    Some(dma::DmaRegion { phys: ptr.as_ptr() as u64, ptr, len: pages * 4096 })
}

const WINDOW: usize = 0x1100;
/// QEMU's ICH9 AHCI: 6 ports, 32 slots, NCQ, AHCI-only, 64-bit.
const CAP_QEMU: u32 = 5 | (31 << 8) | (1 << 30) | (1 << 18) | hba::CAP_S64A;
/// Status after a good command: DRDY | DSC.
const TFD_OK: u32 = 0x50;

/// One command as the device saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    port: u8,
    command: u8,
    features: u8,
    lba: u64,
    count: u16,
    /// The PRD's byte count (0: no PRD).
    bytes: usize,
    write: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehave {
    Not,
    /// Never completes (PxCI stays set).
    Hang,
    /// Fails with a task-file error: these STS and ERR bytes.
    TaskFile(u8, u8),
    /// As `TaskFile`, and the device then holds BSY until a COMRESET.
    TaskFileBusy(u8, u8),
    /// Completes, reporting this many bytes moved.
    ByteCount(u32),
    /// Host bus fatal error.
    HostFatal,
}

struct Drive {
    signature: u32,
    identify: [u8; IDENTIFY_BYTES],
    sector: usize,
    disk: Vec<u8>,
    /// SSTS reads that still show DET = 1 (link negotiating).
    link_delay: u32,
    /// SET FEATURES 82h is ignored.
    sticky_cache: bool,
}

struct Model {
    regs: Vec<u32>,
    drives: Vec<Option<Drive>>,
    seen: Vec<Seen>,
    misbehave: Misbehave,
    /// GHC.HR never clears.
    reset_stuck: bool,
    /// PxCMD.CR never clears once set.
    cr_stuck: bool,
    resets: usize,
    comresets: usize,
    /// A device holding BSY after a failed command.
    busy: bool,
}

impl Model {
    fn reg(&self, off: usize) -> u32 {
        self.regs[off / 4]
    }
    fn set(&mut self, off: usize, v: u32) {
        self.regs[off / 4] = v;
    }
    fn preg(&self, p: usize, r: usize) -> u32 {
        self.reg(port_reg(p as u8, r))
    }
    fn pset(&mut self, p: usize, r: usize, v: u32) {
        self.set(port_reg(p as u8, r), v);
    }

    fn hba_reset(&mut self) {
        self.resets += 1;
        self.set(hba::GHC, if self.reset_stuck { hba::GHC_HR | hba::GHC_AE } else { hba::GHC_AE });
        for p in 0..self.drives.len() {
            for r in (0..hba::PORT_LEN).step_by(4) {
                self.pset(p, r, 0);
            }
            self.port_reset(p);
        }
    }

    /// What a COMRESET (or the HBA reset) leaves: link up if a drive is
    /// there, no signature until FRE lets the first D2H FIS in.
    fn port_reset(&mut self, p: usize) {
        self.pset(p, px::SIG, sig::NONE);
        self.pset(p, px::TFD, 0x7f);
        let present = self.drives[p].is_some();
        self.pset(p, px::SSTS, if present { 0x113 } else { 0 });
        self.busy = false;
        self.maybe_signature(p);
    }

    fn maybe_signature(&mut self, p: usize) {
        if self.preg(p, px::CMD) & px::CMD_FRE == 0 || self.preg(p, px::SIG) != sig::NONE {
            return;
        }
        if let Some(d) = &self.drives[p] {
            let s = d.signature;
            self.pset(p, px::SIG, s);
            self.pset(p, px::TFD, 0x0150);
        }
    }

    fn read(&mut self, off: usize) -> u32 {
        assert!(off.is_multiple_of(4) && off < WINDOW, "register {off:#x}");
        if off >= hba::PORTS && (off - hba::PORTS) % hba::PORT_LEN == px::SSTS {
            let p = (off - hba::PORTS) / hba::PORT_LEN;
            if let Some(Some(d)) = self.drives.get_mut(p) {
                if d.link_delay > 0 {
                    d.link_delay -= 1;
                    return 0x1;
                }
            }
        }
        self.reg(off)
    }

    fn write(&mut self, off: usize, v: u32) {
        assert!(off.is_multiple_of(4) && off < WINDOW, "register {off:#x}");
        if off == hba::GHC {
            assert_eq!(v & hba::GHC_IE, 0, "interrupts stay off");
            if v & hba::GHC_HR != 0 {
                self.hba_reset();
            } else {
                // AHCI-only (CAP.SAM): AE reads 1 whatever is written.
                self.set(hba::GHC, (self.reg(hba::GHC) & hba::GHC_HR) | hba::GHC_AE);
            }
            return;
        }
        if off == hba::BOHC {
            self.set(off, v & !hba::BOHC_BOS);
            return;
        }
        if off < hba::PORTS {
            self.set(off, v);
            return;
        }
        let p = (off - hba::PORTS) / hba::PORT_LEN;
        let r = (off - hba::PORTS) % hba::PORT_LEN;
        match r {
            px::IS | px::SERR => {
                let old = self.preg(p, r);
                self.pset(p, r, old & !v);
            }
            px::IE => {
                assert_eq!(v, 0, "port interrupts stay off");
                self.pset(p, r, v);
            }
            px::CMD => {
                let old = self.preg(p, r);
                let mut new = v & !(px::CMD_CR | px::CMD_FR);
                if new & px::CMD_ST != 0 {
                    assert_ne!(new & px::CMD_FRE, 0, "ST only with FRE");
                    new |= px::CMD_CR;
                } else {
                    self.pset(p, px::CI, 0);
                    if self.cr_stuck && old & px::CMD_CR != 0 {
                        new |= px::CMD_CR;
                    }
                }
                if new & px::CMD_FRE != 0 {
                    assert_eq!(self.preg(p, px::CLB) % 1024, 0, "command list 1 KiB aligned");
                    assert_eq!(self.preg(p, px::FB) % 256, 0, "received FIS 256-byte aligned");
                    new |= px::CMD_FR;
                }
                self.pset(p, r, new);
                self.maybe_signature(p);
            }
            px::SCTL => {
                let old = self.preg(p, r);
                self.pset(p, r, v);
                if old & px::DET_MASK == 1 && v & px::DET_MASK == 0 {
                    self.comresets += 1;
                    self.port_reset(p);
                }
            }
            px::CI => {
                assert_ne!(self.preg(p, px::CMD) & px::CMD_ST, 0, "command issued on a stopped port");
                assert_eq!(self.preg(p, px::TFD) & (px::TFD_BSY | px::TFD_DRQ), 0, "command issued to a busy device");
                let ci = self.preg(p, px::CI) | v;
                self.pset(p, px::CI, ci);
                if v & 1 != 0 {
                    self.execute(p);
                }
            }
            _ => self.pset(p, r, v),
        }
    }

    /// Runs the command in slot 0 of port `p`.
    fn execute(&mut self, p: usize) {
        let clb = u64::from(self.preg(p, px::CLB)) | u64::from(self.preg(p, px::CLBU)) << 32;
        // SAFETY: the command list the driver programmed (host memory).
        let hdr = unsafe { core::slice::from_raw_parts(clb as usize as *const u32, 8) };
        let (dw0, ctba) = (hdr[0], u64::from(hdr[2]) | u64::from(hdr[3]) << 32);
        assert_eq!(dw0 & 0x1f, 5, "command FIS length");
        assert_eq!(ctba % 128, 0, "command table 128-byte aligned");
        let write = dw0 & HDR_W != 0;
        let prdtl = dw0 >> 16;
        // SAFETY: the command table the header names.
        let fis = unsafe { core::slice::from_raw_parts(ctba as usize as *const u8, 20) };
        assert_eq!((fis[0], fis[1] & 0x80), (FIS_H2D, 0x80), "a H2D register FIS with C set");
        let (command, features, device) = (fis[2], fis[3], fis[7]);
        let lba = u64::from_le_bytes([fis[4], fis[5], fis[6], fis[8], fis[9], fis[10], 0, 0]);
        let count = u16::from_le_bytes([fis[12], fis[13]]);
        let (dba, bytes) = if prdtl == 0 {
            (0u64, 0usize)
        } else {
            assert_eq!(prdtl, 1);
            // SAFETY: the PRDT entry in the command table.
            let e = unsafe { core::slice::from_raw_parts((ctba + 0x80) as usize as *const u32, 4) };
            assert_eq!(e[3] & (1 << 31), 0, "no interrupt on completion");
            (u64::from(e[0]) | u64::from(e[1]) << 32, (e[3] & 0x3f_ffff) as usize + 1)
        };
        self.seen.push(Seen { port: p as u8, command, features, lba, count, bytes, write });

        match self.misbehave {
            Misbehave::Hang => return,
            Misbehave::TaskFile(sts, err) | Misbehave::TaskFileBusy(sts, err) => {
                let busy = matches!(self.misbehave, Misbehave::TaskFileBusy(..));
                self.busy = busy;
                self.pset(p, px::TFD, u32::from(err) << 8 | u32::from(sts) | if busy { px::TFD_BSY } else { 0 });
                let is = self.preg(p, px::IS);
                self.pset(p, px::IS, is | px::IS_TFES);
                return;
            }
            Misbehave::HostFatal => {
                let is = self.preg(p, px::IS);
                self.pset(p, px::IS, is | (1 << 29));
                return;
            }
            _ => {}
        }
        let d = self.drives[p].as_mut().expect("a drive");
        let abort = (0x51u32, 0x04u32);
        let result: Result<u32, (u32, u32)> = match command {
            ata::IDENTIFY_DEVICE => {
                assert!(!write && bytes == IDENTIFY_BYTES);
                // SAFETY: the driver's 512-byte data buffer.
                unsafe { core::ptr::copy_nonoverlapping(d.identify.as_ptr(), dba as usize as *mut u8, IDENTIFY_BYTES) };
                Ok(IDENTIFY_BYTES as u32)
            }
            ata::READ_DMA_EXT | ata::WRITE_DMA_EXT => {
                assert_eq!(device & ata::DEVICE_LBA, ata::DEVICE_LBA, "LBA mode");
                assert_eq!(write, command == ata::WRITE_DMA_EXT, "W bit");
                let len = usize::from(count) * d.sector;
                assert_eq!(bytes, len, "PRD covers the sector count");
                let at = lba as usize * d.sector;
                if at + len > d.disk.len() {
                    Err((0x51, 0x10))
                } else if write {
                    // SAFETY: the driver's data buffer of `len` bytes.
                    let src = unsafe { core::slice::from_raw_parts(dba as usize as *const u8, len) };
                    d.disk[at..at + len].copy_from_slice(src);
                    Ok(len as u32)
                } else {
                    // SAFETY: as above.
                    unsafe { core::ptr::copy_nonoverlapping(d.disk[at..].as_ptr(), dba as usize as *mut u8, len) };
                    Ok(len as u32)
                }
            }
            ata::FLUSH_CACHE_EXT | ata::FLUSH_CACHE => {
                let w83 = word(&d.identify, 83);
                let bit = if command == ata::FLUSH_CACHE_EXT { 13 } else { 12 };
                assert_eq!(bytes, 0);
                if w83 & (1 << bit) != 0 {
                    Ok(0)
                } else {
                    Err(abort)
                }
            }
            ata::SET_FEATURES if features == ata::FEATURE_WRITE_CACHE_OFF => {
                if !d.sticky_cache {
                    let w85 = word(&d.identify, 85) & !(1 << 5);
                    d.identify[170..172].copy_from_slice(&w85.to_le_bytes());
                    seal(&mut d.identify);
                }
                Ok(0)
            }
            _ => Err(abort),
        };
        match result {
            Ok(mut n) => {
                if let Misbehave::ByteCount(c) = self.misbehave {
                    n = c;
                }
                // SAFETY: PRDBC in the command header.
                unsafe { (clb as usize as *mut u32).add(1).write_volatile(n) };
                self.pset(p, px::TFD, TFD_OK);
                let ci = self.preg(p, px::CI);
                self.pset(p, px::CI, ci & !1);
                let is = self.preg(p, px::IS);
                self.pset(p, px::IS, is | 1);
            }
            Err((sts, err)) => {
                self.pset(p, px::TFD, err << 8 | sts);
                let is = self.preg(p, px::IS);
                self.pset(p, px::IS, is | px::IS_TFES);
            }
        }
    }
}

#[derive(Clone)]
struct Fake(Rc<RefCell<Model>>);

impl Registers for Fake {
    fn read(&self, offset: usize) -> u32 {
        self.0.borrow_mut().read(offset)
    }
    fn write(&self, offset: usize, value: u32) {
        self.0.borrow_mut().write(offset, value)
    }
}

/// Sets word 255 to A5h plus the checksum that makes all 512 bytes sum to 0.
fn seal(id: &mut [u8; IDENTIFY_BYTES]) {
    id[510] = 0xa5;
    let sum = id[..511].iter().fold(0u8, |s, &b| s.wrapping_add(b));
    id[511] = 0u8.wrapping_sub(sum);
}

fn put_word(id: &mut [u8; IDENTIFY_BYTES], n: usize, w: u16) {
    id[2 * n..2 * n + 2].copy_from_slice(&w.to_le_bytes());
}

fn put_string(id: &mut [u8; IDENTIFY_BYTES], first: usize, words: usize, s: &str) {
    let mut b = vec![b' '; words * 2];
    b[..s.len()].copy_from_slice(s.as_bytes());
    for i in 0..words {
        put_word(id, first + i, u16::from_be_bytes([b[2 * i], b[2 * i + 1]]));
    }
}

/// What an IDENTIFY DEVICE of a disk says.
#[derive(Clone, Copy)]
struct Spec {
    sectors: u64,
    sector: usize,
    write_cache: bool,
    flush_ext: bool,
    flush: bool,
    lba48: bool,
}

const SSD: Spec = Spec { sectors: 32768, sector: 512, write_cache: true, flush_ext: true, flush: true, lba48: true };

fn identify(s: Spec) -> [u8; IDENTIFY_BYTES] {
    let mut id = [0u8; IDENTIFY_BYTES];
    put_word(&mut id, 0, 0x0040);
    put_string(&mut id, 10, 10, "  ROUTERD-0001");
    put_string(&mut id, 27, 20, "QEMU HARDDISK");
    put_word(&mut id, 49, 1 << 9);
    let lba48 = if s.lba48 { 1 << 10 } else { 0 };
    let w83 = 0x4000 | lba48 | if s.flush_ext { 1 << 13 } else { 0 } | if s.flush { 1 << 12 } else { 0 };
    put_word(&mut id, 83, w83);
    put_word(&mut id, 82, 1 << 5);
    put_word(&mut id, 85, if s.write_cache { 1 << 5 } else { 0 });
    put_word(&mut id, 86, w83 & 0x3fff);
    put_word(&mut id, 87, 0x4000);
    for i in 0..4 {
        put_word(&mut id, 100 + i, (s.sectors >> (16 * i)) as u16);
    }
    if s.sector != 512 {
        put_word(&mut id, 106, 0x4000 | 1 << 12);
        let words = (s.sector / 2) as u32;
        put_word(&mut id, 117, words as u16);
        put_word(&mut id, 118, (words >> 16) as u16);
    }
    seal(&mut id);
    id
}

fn drive(s: Spec) -> Drive {
    Drive {
        signature: sig::ATA,
        identify: identify(s),
        sector: s.sector,
        // Large disks are only addressed, never filled: their tail reads as an IDNF error.
        disk: vec![0; (s.sectors as usize * s.sector).min(64 << 20)],
        link_delay: 0,
        sticky_cache: false,
    }
}

fn model(drives: Vec<Option<Drive>>) -> Rc<RefCell<Model>> {
    let mut m = Model {
        regs: vec![0; WINDOW / 4],
        drives,
        seen: Vec::new(),
        misbehave: Misbehave::Not,
        reset_stuck: false,
        cr_stuck: false,
        resets: 0,
        comresets: 0,
        busy: false,
    };
    m.drives.resize_with(6, || None);
    m.set(hba::CAP, CAP_QEMU);
    m.set(hba::PI, 0x3f);
    m.set(hba::VS, 0x0001_0000);
    // What a BIOS leaves behind: AHCI on, port 0 running.
    m.set(hba::GHC, hba::GHC_AE);
    m.pset(0, px::CMD, px::CMD_ST | px::CMD_CR | px::CMD_FRE | px::CMD_FR);
    for p in 0..6 {
        m.port_reset(p);
    }
    Rc::new(RefCell::new(m))
}

fn clock() -> Clock {
    Clock::from_hz(1_000_000_000, crate::clock::rdtsc())
}

/// The spec's waits, with the long ones cut so failing cases end quickly.
fn short() -> Timeouts {
    Timeouts { request: 20 * MS, flush: 20 * MS, port_stop: 5 * MS, device_ready: 20 * MS, link_up: 20 * MS, ..Timeouts::SPEC }
}

fn start_all(m: &Rc<RefCell<Model>>, t: Timeouts) -> (Result<(), Error>, Vec<AhciDisk<Fake>>) {
    let mut disks = Vec::new();
    let r = start(Fake(m.clone()), clock(), t, &mut |d| disks.push(d));
    (r, disks)
}

fn one(s: Spec) -> (AhciDisk<Fake>, Rc<RefCell<Model>>) {
    let m = model(vec![Some(drive(s))]);
    let (r, mut disks) = start_all(&m, short());
    r.expect("bring-up");
    assert_eq!(disks.len(), 1);
    (disks.remove(0), m)
}

fn seen(m: &Rc<RefCell<Model>>) -> Vec<(u8, u64, u16, usize)> {
    m.borrow().seen.iter().map(|s| (s.command, s.lba, s.count, s.bytes)).collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn identify_parses_lba48_capacity_sector_size_and_cache() {
    let id = Identity::parse(&identify(SSD)).unwrap();
    assert_eq!((id.sectors, id.block_size, id.write_cache, id.flush), (32768, BlockSize::B512, true, Some(ata::FLUSH_CACHE_EXT)));
    assert_eq!(id.model.as_bytes(), b"QEMU HARDDISK");
    assert_eq!(std::format!("{:?}", id.serial), "ROUTERD-0001");

    let big = Spec { sectors: 3 << 32, sector: 4096, write_cache: false, flush_ext: false, flush: true, ..SSD };
    let id = Identity::parse(&identify(big)).unwrap();
    assert_eq!((id.sectors, id.block_size, id.write_cache, id.flush), (3 << 32, BlockSize::B4096, false, Some(ata::FLUSH_CACHE)));

    let none = Spec { flush_ext: false, flush: false, ..SSD };
    assert_eq!(Identity::parse(&identify(none)).unwrap().flush, None);
}

#[test]
fn identify_refuses_what_the_driver_cannot_use() {
    assert!(matches!(Identity::parse(&identify(Spec { lba48: false, ..SSD })), Err(Error::NoLba48 { .. })));
    assert_eq!(Identity::parse(&identify(Spec { sector: 1024, ..SSD })), Err(Error::UnsupportedBlockSize(1024)));
    assert_eq!(Identity::parse(&identify(Spec { sectors: 0, ..SSD })), Err(Error::BadCapacity(0)));
    assert_eq!(Identity::parse(&identify(Spec { sectors: (1 << 48) + 1, ..SSD })), Err(Error::BadCapacity((1 << 48) + 1)));
    let mut id = identify(SSD);
    id[200] ^= 1;
    assert!(matches!(Identity::parse(&id), Err(Error::IdentifyChecksum { .. })));
    let mut id = identify(SSD);
    put_word(&mut id, 0, 0x85c0);
    seal(&mut id);
    assert_eq!(Identity::parse(&id), Err(Error::NotAta { word0: 0x85c0 }));
    // Word 106 not marked valid: its bits are not believed (512 bytes).
    let mut id = identify(Spec { sector: 4096, ..SSD });
    put_word(&mut id, 106, 1 << 12);
    seal(&mut id);
    assert_eq!(Identity::parse(&id).unwrap().block_size, BlockSize::B512);
    // Without the A5h signature word 255 is not a checksum.
    let mut id = identify(SSD);
    id[510] = 0;
    id[511] = 0x77;
    assert!(Identity::parse(&id).is_ok());
}

#[test]
fn bring_up_resets_the_hba_and_starts_only_ports_with_a_disk() {
    let mut atapi = drive(SSD);
    atapi.signature = sig::ATAPI;
    let m = model(vec![Some(drive(SSD)), None, Some(atapi), Some(drive(Spec { sectors: 4096, ..SSD }))]);
    let (r, disks) = start_all(&m, short());
    r.unwrap();
    assert_eq!(disks.iter().map(|d| (d.port(), d.block_count())).collect::<Vec<_>>(), [(0, 32768), (3, 4096)]);
    let mm = m.borrow();
    assert_eq!(mm.resets, 1);
    assert_eq!(mm.reg(hba::GHC), hba::GHC_AE, "AHCI mode, no interrupts");
    for p in [0, 3] {
        assert_eq!(mm.preg(p, px::CMD) & (px::CMD_ST | px::CMD_FRE), px::CMD_ST | px::CMD_FRE, "port {p} running");
        assert_eq!(mm.preg(p, px::IE), 0);
    }
    for p in [1, 2, 4, 5] {
        assert_eq!(mm.preg(p, px::CMD) & (px::CMD_ST | px::CMD_FRE), 0, "port {p} left stopped");
    }
    assert_eq!(mm.seen.iter().map(|s| (s.port, s.command)).collect::<Vec<_>>(), [(0, ata::IDENTIFY_DEVICE), (3, ata::IDENTIFY_DEVICE)]);
    assert_ne!(mm.preg(0, px::CLB), mm.preg(3, px::CLB), "each port its own command list");
}

#[test]
fn a_controller_without_disks_is_not_an_error_and_is_quick() {
    let m = model(Vec::new());
    let t = std::time::Instant::now();
    let (r, disks) = start_all(&m, Timeouts::SPEC);
    let took = t.elapsed();
    r.unwrap();
    assert!(disks.is_empty());
    assert!(took < std::time::Duration::from_millis(100), "{took:?}");
    assert!(m.borrow().seen.is_empty());
}

#[test]
fn a_link_still_negotiating_is_waited_for() {
    let mut d = drive(SSD);
    d.link_delay = 50;
    let m = model(vec![None, Some(d)]);
    let (r, disks) = start_all(&m, short());
    r.unwrap();
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].port(), 1);
}

#[test]
fn bring_up_waits_are_bounded() {
    let m = model(vec![Some(drive(SSD))]);
    m.borrow_mut().reset_stuck = true;
    assert!(matches!(start_all(&m, short()).0, Err(Error::HbaResetTimeout)));
    // A port whose DMA engine never stops is not used (and not waited for).
    let m = model(vec![Some(drive(SSD))]);
    m.borrow_mut().cr_stuck = true;
    // The HBA reset clears the running port; make it run again before bring-up.
    let (r, _) = {
        let fake = Fake(m.clone());
        fake.write(hba::GHC, hba::GHC_AE | hba::GHC_HR);
        fake.write(port_reg(0, px::FB), 0);
        fake.write(port_reg(0, px::CMD), px::CMD_FRE | px::CMD_ST);
        let mut disks = Vec::new();
        let t = std::time::Instant::now();
        let r = AhciDisk::bring_up(fake, 0, CAP_QEMU, clock(), short()).map(|d| disks.extend(d));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        (r, disks)
    };
    assert!(matches!(r, Err(Error::PortStopTimeout { port: 0, .. })), "{r:?}");
    // A device that never sends its signature.
    let mut d = drive(SSD);
    d.signature = sig::NONE;
    let m = model(vec![Some(d)]);
    let (r, disks) = start_all(&m, short());
    assert!(matches!(r, Err(Error::DeviceNotReady { port: 0, .. })), "{r:?}");
    assert!(disks.is_empty());
}

#[test]
fn dma_memory_above_4g_needs_64_bit_addressing() {
    let m = model(vec![Some(drive(SSD))]);
    m.borrow_mut().set(hba::CAP, CAP_QEMU & !hba::CAP_S64A);
    let (r, _) = start_all(&m, short());
    // The test's heap lies above 4 GiB on x86_64 Linux; below, the same
    // HBA is fine.
    match heap_pages(1) {
        Some(p) if p.phys >= 1 << 32 => assert!(matches!(r, Err(Error::DmaAbove4G { .. })), "{r:?}"),
        _ => r.unwrap(),
    }
}

#[test]
fn large_transfers_are_split_through_the_bounce_buffer() {
    let (mut d, m) = one(SSD);
    m.borrow_mut().seen.clear();
    let data = pattern(100 * 1024, 3);
    d.write(10, &data).unwrap();
    assert_eq!(seen(&m), [(ata::WRITE_DMA_EXT, 10, 128, 65536), (ata::WRITE_DMA_EXT, 138, 72, 36864)]);
    assert!(m.borrow().seen.iter().all(|s| s.write));
    assert_eq!(m.borrow().drives[0].as_ref().unwrap().disk[10 * 512..10 * 512 + data.len()], data[..]);
    let mut back = vec![0xa5; data.len()];
    d.read(10, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(seen(&m)[2..], [(ata::READ_DMA_EXT, 10, 128, 65536), (ata::READ_DMA_EXT, 138, 72, 36864)]);
    assert!(!m.borrow().seen[2].write);
    // Blocks past 2^32 carry all six LBA bytes.
    let (mut d, m) = one(Spec { sectors: (1 << 32) + 8, ..SSD });
    m.borrow_mut().seen.clear();
    let _ = d.read((1 << 32) + 1, &mut [0; 512]);
    assert_eq!(seen(&m), [(ata::READ_DMA_EXT, (1 << 32) + 1, 1, 512)]);
}

#[test]
fn four_kib_logical_sectors_are_addressed_in_their_own_units() {
    let (mut d, m) = one(Spec { sectors: 100, sector: 4096, ..SSD });
    m.borrow_mut().seen.clear();
    assert_eq!((d.block_size(), d.block_count()), (BlockSize::B4096, 100));
    d.write(5, &pattern(3 * 4096, 9)).unwrap();
    assert_eq!(seen(&m), [(ata::WRITE_DMA_EXT, 5, 3, 3 * 4096)]);
    assert_eq!(m.borrow().drives[0].as_ref().unwrap().disk[5 * 4096..8 * 4096], pattern(3 * 4096, 9)[..]);
    assert!(matches!(d.read(0, &mut [0; 512]), Err(Error::BadLength)));
    assert!(matches!(d.read(100, &mut [0; 4096]), Err(Error::OutOfRange)));
    let mut buf = vec![0u8; 20 * 4096];
    d.read(80, &mut buf).unwrap();
    assert_eq!(seen(&m)[1..], [(ata::READ_DMA_EXT, 80, 16, 65536), (ata::READ_DMA_EXT, 96, 4, 16384)]);
}

#[test]
fn lengths_and_ranges_are_checked_before_anything_is_sent() {
    let (mut d, m) = one(Spec { sectors: 64, ..SSD });
    m.borrow_mut().seen.clear();
    let mut buf = [0u8; 1024];
    assert!(matches!(d.read(0, &mut buf[..0]), Err(Error::BadLength)));
    assert!(matches!(d.read(0, &mut buf[..100]), Err(Error::BadLength)));
    assert!(matches!(d.read(64, &mut buf[..512]), Err(Error::OutOfRange)));
    assert!(matches!(d.read(63, &mut buf), Err(Error::OutOfRange)));
    assert!(matches!(d.write(u64::MAX, &buf), Err(Error::OutOfRange)));
    assert_eq!(BlockDevice::read(&mut d, 64, &mut buf[..512]), Err(BlockError::OutOfRange));
    assert!(seen(&m).is_empty());
    d.read(62, &mut buf).unwrap();
    assert_eq!(seen(&m), [(ata::READ_DMA_EXT, 62, 2, 1024)]);
}

#[test]
fn flush_reaches_the_device() {
    let (mut d, m) = one(SSD);
    assert_eq!(d.cache(), Cache::WriteBack);
    d.write(0, &[1; 512]).unwrap();
    d.flush().unwrap();
    assert_eq!(seen(&m)[1..], [(ata::WRITE_DMA_EXT, 0, 1, 512), (ata::FLUSH_CACHE_EXT, 0, 0, 0)]);
    // Only FLUSH CACHE: that is sent instead.
    let (mut d, m) = one(Spec { flush_ext: false, ..SSD });
    d.flush().unwrap();
    assert_eq!(seen(&m).last().unwrap().0, ata::FLUSH_CACHE);
    // A failing flush is an error, like any command.
    m.borrow_mut().misbehave = Misbehave::TaskFile(0x51, 0x04);
    assert_eq!(d.flush(), Err(Error::TaskFile { status: 0x51, error: 0x04 }));
    assert_eq!(BlockDevice::flush(&mut d), Err(BlockError::Io));
}

#[test]
fn cache_modes_decide_what_flush_means() {
    // (write cache, flush commands, SET FEATURES ignored) → cache, flush result, SET FEATURES sent.
    let cases = [
        (true, true, false, Cache::WriteBack, true, false),
        (false, true, false, Cache::WriteThrough, true, false),
        (false, false, false, Cache::WriteThrough, true, false),
        (true, false, false, Cache::WriteThrough, true, true),
        (true, false, true, Cache::Volatile, false, true),
    ];
    for (wc, flush, sticky, cache, ok, set_features) in cases {
        let mut dr = drive(Spec { write_cache: wc, flush_ext: flush, flush, ..SSD });
        dr.sticky_cache = sticky;
        let m = model(vec![Some(dr)]);
        let (r, mut disks) = start_all(&m, short());
        r.unwrap();
        let mut d = disks.remove(0);
        let case = (wc, flush, sticky);
        assert_eq!(d.cache(), cache, "{case:?}");
        let sent = m.borrow().seen.iter().any(|s| s.command == ata::SET_FEATURES && s.features == ata::FEATURE_WRITE_CACHE_OFF);
        assert_eq!(sent, set_features, "{case:?}");
        d.write(0, &[2; 512]).unwrap();
        let before = m.borrow().seen.len();
        let r = d.flush();
        assert_eq!(r.is_ok(), ok, "{case:?}: {r:?}");
        if !ok {
            assert_eq!(r, Err(Error::NotDurable));
        }
        let flushes = m.borrow().seen[before..].iter().filter(|s| matches!(s.command, ata::FLUSH_CACHE | ata::FLUSH_CACHE_EXT)).count();
        assert_eq!(flushes, usize::from(flush), "{case:?}");
    }
}

#[test]
fn a_task_file_error_fails_that_request_and_the_port_recovers() {
    let (mut d, m) = one(SSD);
    d.write(1, &[7; 512]).unwrap();
    m.borrow_mut().misbehave = Misbehave::TaskFile(0x51, 0x40);
    assert_eq!(d.read(1, &mut [0; 512]), Err(Error::TaskFile { status: 0x51, error: 0x40 }));
    assert!(!d.is_broken());
    assert_eq!(m.borrow().comresets, 0, "a device that is not busy needs no COMRESET");
    m.borrow_mut().misbehave = Misbehave::Not;
    let mut buf = [0u8; 512];
    d.read(1, &mut buf).unwrap();
    assert_eq!(buf, [7; 512]);

    // A device left busy after the error is reset on the link.
    m.borrow_mut().misbehave = Misbehave::TaskFileBusy(0x51, 0x04);
    assert_eq!(BlockDevice::write(&mut d, 1, &[8; 512]), Err(BlockError::Io));
    assert_eq!(m.borrow().comresets, 1);
    m.borrow_mut().misbehave = Misbehave::Not;
    d.write(1, &[8; 512]).unwrap();
    d.read(1, &mut buf).unwrap();
    assert_eq!(buf, [8; 512]);

    // The device refusing a request outside the disk: an error, not a panic.
    m.borrow_mut().drives[0].as_mut().unwrap().disk.truncate(512);
    assert_eq!(d.read(1, &mut buf), Err(Error::TaskFile { status: 0x51, error: 0x10 }));
    assert!(!d.is_broken());
}

#[test]
fn a_hung_command_times_out_and_the_port_is_given_up() {
    let (mut d, m) = one(SSD);
    m.borrow_mut().misbehave = Misbehave::Hang;
    let t = std::time::Instant::now();
    assert_eq!(d.read(0, &mut [0; 512]), Err(Error::Timeout));
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert!(d.is_broken());
    assert_eq!(m.borrow().preg(0, px::CMD) & (px::CMD_ST | px::CMD_CR | px::CMD_FRE | px::CMD_FR), 0, "port stopped");
    m.borrow_mut().misbehave = Misbehave::Not;
    let before = m.borrow().seen.len();
    assert_eq!(d.write(0, &[0; 512]), Err(Error::Broken));
    assert_eq!(d.flush(), Err(Error::Broken));
    assert_eq!(BlockDevice::read(&mut d, 0, &mut [0; 512]), Err(BlockError::Io));
    assert_eq!(m.borrow().seen.len(), before, "nothing sent to a port given up on");
}

#[test]
fn protocol_violations_stop_the_port_for_good() {
    for (misbehave, want) in [
        (Misbehave::HostFatal, Error::Interface { is: 1 << 29 }),
        (Misbehave::ByteCount(513), Error::ByteCount { expected: 512, got: 513 }),
        (Misbehave::ByteCount(u32::MAX), Error::ByteCount { expected: 512, got: u32::MAX }),
    ] {
        let (mut d, m) = one(SSD);
        m.borrow_mut().misbehave = misbehave;
        assert_eq!(d.read(0, &mut [0; 512]), Err(want), "{misbehave:?}");
        assert!(d.is_broken(), "{misbehave:?}");
        assert_eq!(m.borrow().preg(0, px::CMD) & px::CMD_ST, 0);
        m.borrow_mut().misbehave = Misbehave::Not;
        assert_eq!(d.read(0, &mut [0; 512]), Err(Error::Broken));
    }
}

#[test]
fn a_short_read_is_not_believed() {
    let (mut d, m) = one(SSD);
    m.borrow_mut().drives[0].as_mut().unwrap().disk[..512].fill(9);
    m.borrow_mut().misbehave = Misbehave::ByteCount(256);
    let mut buf = [0u8; 512];
    assert_eq!(d.read(0, &mut buf), Err(Error::ByteCount { expected: 512, got: 256 }));
    assert!(!d.is_broken());
    m.borrow_mut().misbehave = Misbehave::Not;
    d.read(0, &mut buf).unwrap();
    assert_eq!(buf, [9; 512]);
}

#[test]
fn an_odd_identify_fails_that_port_only() {
    let mut bad = drive(SSD);
    put_word(&mut bad.identify, 106, 0x4000 | 1 << 12);
    put_word(&mut bad.identify, 117, 300);
    seal(&mut bad.identify);
    let m = model(vec![Some(bad), Some(drive(SSD))]);
    let (r, disks) = start_all(&m, short());
    r.unwrap();
    assert_eq!(disks.iter().map(|d| d.port()).collect::<Vec<_>>(), [1]);
    assert_eq!(m.borrow().preg(0, px::CMD) & (px::CMD_ST | px::CMD_FRE), 0, "the refused port is stopped");
    // Alone, the failure is the probe's answer.
    let mut bad = drive(SSD);
    bad.identify = identify(Spec { lba48: false, ..SSD });
    let m = model(vec![Some(bad)]);
    assert!(matches!(start_all(&m, short()).0, Err(Error::NoLba48 { .. })));
}

#[test]
fn gpt_create_and_find_through_the_driver() {
    let (mut d, m) = one(SSD);
    m.borrow_mut().seen.clear();
    let p = gpt::create_state_partition(&mut d, [5; 32], gpt::Existing::Refuse).expect("create");
    let log = seen(&m);
    let flush = log.iter().position(|s| s.0 == ata::FLUSH_CACHE_EXT).expect("a flush");
    assert!(log[..flush].iter().any(|s| s.0 == ata::WRITE_DMA_EXT));
    let f = gpt::find_state_partition(&mut d).unwrap();
    assert_eq!((f.partition, f.copies_agree), (p, true));
    assert_eq!(m.borrow().drives[0].as_ref().unwrap().disk[510..512], [0x55, 0xaa]);
}

//! Tests of `nvme.rs` and `nvme_spec.rs`: the pure parts (CAP, identify pages, entry layouts)
//! on byte fixtures, and the driver against a fake controller — a register
//! window that acts on doorbell writes, admin and NVM commands executed
//! against host memory and a disk in a `Vec`, completions posted with the
//! phase tag, and switches that make it misbehave.
extern crate std;

use super::*;
use crate::blk::gpt;
use core::ptr::NonNull;
use std::cell::RefCell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

/// Identity-mapped pages from the heap, zeroed, never freed (a few dozen
/// pages per test).
pub(super) fn heap_pages(pages: usize) -> Option<dma::DmaRegion> {
    let layout = std::alloc::Layout::from_size_align(pages * 4096, 4096).ok()?;
    // SAFETY: a non-zero size (every caller asks for at least one page).
    let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
    Some(dma::DmaRegion { phys: ptr.as_ptr() as u64, ptr, len: pages * 4096 })
}

fn mem_read(addr: u64, len: usize) -> Vec<u8> {
    // SAFETY: `addr` is host memory the driver handed to the "device" (a
    // queue, the bounce buffer or the PRP list), at least `len` bytes.
    unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len) }.to_vec()
}

fn mem_write(addr: u64, bytes: &[u8]) {
    // SAFETY: as in `mem_read`, memory the driver let the device write.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as usize as *mut u8, bytes.len()) }
}

fn mem_write32(addr: u64, v: u32) {
    // SAFETY: as in `mem_write`; volatile, as a device's write would be.
    unsafe { (addr as usize as *mut u32).write_volatile(v) }
}

// ---------------------------------------------------------------------------
// The fake controller

const WINDOW: usize = 0x4000;
/// What QEMU's nvme reports: MQES 0x7ff, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM,
/// MPSMIN 0, MPSMAX 4.
const QEMU_CAP: u64 = 0x7ff | 1 << 16 | 15 << 24 | 1 << 37 | 4 << 52;

#[derive(Clone, Copy, Debug)]
struct DevQueue {
    base: u64,
    size: u16,
    /// Submission: next entry to fetch. Completion: last head the host wrote.
    head: u16,
    /// Completion: next entry to post.
    tail: u16,
    phase: bool,
    cqid: u16,
    flags: u32,
}

impl DevQueue {
    fn new(base: u64, size: u16, cqid: u16, flags: u32) -> DevQueue {
        DevQueue { base, size, head: 0, tail: 0, phase: true, cqid, flags }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehave {
    Not,
    /// Takes commands, never completes them.
    Hang,
    /// Completes with this status.
    Status(Status),
    /// Completes with the next command identifier.
    WrongCid,
    /// Completes naming submission queue 7.
    WrongSqId,
    /// Reports this SQ head.
    SqHead(u16),
    /// Sets CSTS.CFS and completes nothing.
    Fatal,
    /// Posts every completion twice.
    Twice,
}

/// One command as the controller executed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    queue: u16,
    opcode: u8,
    nsid: u32,
    slba: u64,
    blocks: u32,
    prp2: u64,
}

struct Ctrl {
    cap: u64,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    /// CC as written when EN went 0 → 1, and how often EN went 1 → 0.
    enabled_with: Option<u32>,
    disables: usize,
    never_ready: bool,
    fatal_on_enable: bool,
    sq: [Option<DevQueue>; 2],
    cq: [Option<DevQueue>; 2],
    id_ctrl: Vec<u8>,
    id_ns: Vec<u8>,
    /// Identify Namespace 1 answers Invalid Namespace.
    ns_invalid: bool,
    lba_bytes: usize,
    disk: Vec<u8>,
    seen: Vec<Seen>,
    cq_doorbells: usize,
    misbehave: Misbehave,
}

impl Ctrl {
    /// A controller like QEMU's with namespace 1 of `blocks` blocks of
    /// 2^`lbads` bytes, a volatile write cache, MDTS 7.
    fn new(blocks: u64, lbads: u8) -> Ctrl {
        let mut id_ctrl = vec![0u8; 4096];
        id_ctrl[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        id_ctrl[4..24].copy_from_slice(b"routerd-disk0       ");
        id_ctrl[24..64].copy_from_slice(b"QEMU NVMe Ctrl                          ");
        id_ctrl[64..72].copy_from_slice(b"7.2.22  ");
        id_ctrl[77] = 7;
        id_ctrl[512] = 0x66;
        id_ctrl[513] = 0x44;
        id_ctrl[516..520].copy_from_slice(&256u32.to_le_bytes());
        id_ctrl[525] = 0x07;
        let mut c = Ctrl {
            cap: QEMU_CAP,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            enabled_with: None,
            disables: 0,
            never_ready: false,
            fatal_on_enable: false,
            sq: [None; 2],
            cq: [None; 2],
            id_ctrl,
            id_ns: Vec::new(),
            ns_invalid: false,
            lba_bytes: 0,
            disk: Vec::new(),
            seen: Vec::new(),
            cq_doorbells: 0,
            misbehave: Misbehave::Not,
        };
        c.format(blocks, lbads, 0);
        c
    }

    /// Namespace 1 as `blocks` blocks in format 1 (2^`lbads` bytes,
    /// `ms` bytes of metadata); format 0 is 512 bytes.
    fn format(&mut self, blocks: u64, lbads: u8, ms: u16) {
        let mut ns = vec![0u8; 4096];
        ns[0..8].copy_from_slice(&blocks.to_le_bytes());
        ns[8..16].copy_from_slice(&blocks.to_le_bytes());
        ns[25] = 1; // NLBAF: two formats
        ns[26] = 1; // FLBAS: format 1
        ns[128 + 2] = 9;
        ns[132..134].copy_from_slice(&ms.to_le_bytes());
        ns[132 + 2] = lbads;
        self.id_ns = ns;
        self.lba_bytes = 1usize.checked_shl(u32::from(lbads)).unwrap_or(0).min(1 << 16);
        self.disk = vec![0; blocks as usize * self.lba_bytes];
    }

    fn stride(&self) -> usize {
        4 << ((self.cap >> 32) & 0xf)
    }

    fn mdts_bytes(&self) -> usize {
        match self.id_ctrl[77] {
            0 => usize::MAX,
            m => 4096 << m,
        }
    }

    fn read(&self, off: usize) -> u32 {
        match off {
            0x00 => self.cap as u32,
            0x04 => (self.cap >> 32) as u32,
            0x08 => 0x0001_0400,
            0x14 => self.cc,
            0x1c => self.csts,
            0x24 => self.aqa,
            0x28 => self.asq as u32,
            0x2c => (self.asq >> 32) as u32,
            0x30 => self.acq as u32,
            0x34 => (self.acq >> 32) as u32,
            _ => 0,
        }
    }

    fn write(&mut self, off: usize, v: u32) {
        match off {
            0x14 => {
                let was = self.cc & 1 != 0;
                self.cc = v;
                match (was, v & 1 != 0) {
                    (false, true) => self.enable(),
                    (true, false) => {
                        self.disables += 1;
                        self.csts = 0;
                        self.sq = [None; 2];
                        self.cq = [None; 2];
                    }
                    _ => {}
                }
            }
            0x24 => self.aqa = v,
            0x28 => self.asq = self.asq & !0xffff_ffff | u64::from(v),
            0x2c => self.asq = self.asq & 0xffff_ffff | u64::from(v) << 32,
            0x30 => self.acq = self.acq & !0xffff_ffff | u64::from(v),
            0x34 => self.acq = self.acq & 0xffff_ffff | u64::from(v) << 32,
            0x1000.. => {
                let rel = off - 0x1000;
                assert_eq!(rel % self.stride(), 0, "doorbell {off:#x} off the {}-byte stride", self.stride());
                let idx = rel / self.stride();
                let qid = idx / 2;
                assert!(qid < 2, "doorbell of queue {qid}");
                if self.cc & 1 == 0 {
                    return;
                }
                if idx.is_multiple_of(2) {
                    self.ring_sq(qid, v as u16);
                } else {
                    let cq = self.cq[qid].as_mut().expect("head doorbell of a completion queue that exists");
                    assert!(v < u32::from(cq.size), "CQ head {v} beyond {}", cq.size);
                    cq.head = v as u16;
                    self.cq_doorbells += 1;
                }
            }
            _ => panic!("write of {v:#x} to register {off:#x}"),
        }
    }

    fn enable(&mut self) {
        self.enabled_with = Some(self.cc);
        if self.fatal_on_enable {
            self.csts = csts::CFS;
            return;
        }
        if self.never_ready {
            return;
        }
        assert_eq!(self.asq % 4096, 0);
        assert_eq!(self.acq % 4096, 0);
        let sqs = (self.aqa & 0xfff) as u16 + 1;
        let cqs = ((self.aqa >> 16) & 0xfff) as u16 + 1;
        assert!(sqs >= 2 && cqs >= 2, "admin queues of {sqs}/{cqs} entries");
        self.sq[0] = Some(DevQueue::new(self.asq, sqs, 0, 0));
        self.cq[0] = Some(DevQueue::new(self.acq, cqs, 0, 0));
        self.csts = csts::RDY;
    }

    /// Fetches and executes every entry up to `tail`, as a controller does
    /// after a tail doorbell.
    fn ring_sq(&mut self, qid: usize, tail: u16) {
        let mut sq = self.sq[qid].expect("tail doorbell of a submission queue that exists");
        assert!(tail < sq.size, "SQ tail {tail} beyond {}", sq.size);
        while sq.head != tail {
            let raw = mem_read(sq.base + u64::from(sq.head) * 64, 64);
            let dw: Vec<u32> = raw.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
            sq.head = (sq.head + 1) % sq.size;
            self.sq[qid] = Some(sq);
            let (status, result) = if qid == 0 { self.admin(&dw) } else { self.io(qid as u16, &dw) };
            let cid = (dw[0] >> 16) as u16;
            let (mut status, mut cid, mut sq_id, mut sq_head) = (status, cid, qid as u16, sq.head);
            match self.misbehave {
                Misbehave::Not | Misbehave::Twice => {}
                Misbehave::Hang => continue,
                Misbehave::Fatal => {
                    self.csts |= csts::CFS;
                    continue;
                }
                Misbehave::Status(s) => status = s,
                Misbehave::WrongCid => cid = cid.wrapping_add(1),
                Misbehave::WrongSqId => sq_id = 7,
                Misbehave::SqHead(h) => sq_head = h,
            }
            let times = if self.misbehave == Misbehave::Twice { 2 } else { 1 };
            for _ in 0..times {
                self.post(usize::from(sq.cqid), result, sq_head, sq_id, cid, status);
            }
            // A command may have re-created queues.
            if let Some(q) = self.sq[qid] {
                sq = q;
            } else {
                return;
            }
        }
    }

    fn post(&mut self, cqid: usize, result: u32, sq_head: u16, sq_id: u16, cid: u16, status: Status) {
        let cq = self.cq[cqid].as_mut().expect("completion queue");
        assert_ne!((cq.tail + 1) % cq.size, cq.head, "completion queue {cqid} overflow: the driver does not hand entries back");
        let at = cq.base + u64::from(cq.tail) * 16;
        mem_write32(at, result);
        mem_write32(at + 4, 0);
        mem_write32(at + 8, u32::from(sq_head) | u32::from(sq_id) << 16);
        // Dword 3 last: the phase tag makes the entry the host's.
        mem_write32(at + 12, u32::from(cid) | u32::from(cq.phase) << 16 | u32::from(status.0) << 17);
        cq.tail = (cq.tail + 1) % cq.size;
        if cq.tail == 0 {
            cq.phase = !cq.phase;
        }
    }

    fn admin(&mut self, dw: &[u32]) -> (Status, u32) {
        let opcode = dw[0] as u8;
        let prp1 = u64::from(dw[6]) | u64::from(dw[7]) << 32;
        let prp2 = u64::from(dw[8]) | u64::from(dw[9]) << 32;
        self.seen.push(Seen { queue: 0, opcode, nsid: dw[1], slba: 0, blocks: 0, prp2 });
        let ok = (Status(0), 0);
        match opcode {
            opcode::IDENTIFY => {
                assert_eq!((prp1 % 4096, prp2), (0, 0), "one page-aligned page");
                let page = match (dw[10] & 0xff, dw[1]) {
                    (1, _) => self.id_ctrl.clone(),
                    (0, 1) if self.ns_invalid => return (Status::INVALID_NAMESPACE, 0),
                    (0, 1) => self.id_ns.clone(),
                    (0, n) if n <= u32::from_le_bytes(self.id_ctrl[516..520].try_into().unwrap()) => vec![0; 4096],
                    (0, _) => return (Status::INVALID_NAMESPACE, 0),
                    _ => return (Status::new(0, 0x02), 0),
                };
                mem_write(prp1, &page);
                ok
            }
            opcode::SET_FEATURES if dw[10] & 0xff == 7 => {
                assert!(self.sq[1].is_none() && self.cq[1].is_none(), "Number of Queues before any I/O queue exists");
                (Status(0), 0)
            }
            opcode::CREATE_IO_CQ => {
                let (qid, size) = (dw[10] as u16, (dw[10] >> 16) as u16 + 1);
                if qid != 1 || self.cq[1].is_some() {
                    return (Status::new(1, 0x01), 0);
                }
                if u32::from(size) > (self.cap as u32 & 0xffff) + 1 || size < 2 {
                    return (Status::new(1, 0x02), 0);
                }
                assert_eq!(prp1 % 4096, 0);
                self.cq[1] = Some(DevQueue::new(prp1, size, 1, dw[11]));
                ok
            }
            opcode::CREATE_IO_SQ => {
                let (qid, size, cqid) = (dw[10] as u16, (dw[10] >> 16) as u16 + 1, (dw[11] >> 16) as u16);
                if cqid != 1 || self.cq[1].is_none() {
                    return (Status::new(1, 0x00), 0);
                }
                if qid != 1 || self.sq[1].is_some() {
                    return (Status::new(1, 0x01), 0);
                }
                assert_eq!(prp1 % 4096, 0);
                self.sq[1] = Some(DevQueue::new(prp1, size, 1, dw[11]));
                ok
            }
            _ => (Status::new(0, 0x01), 0),
        }
    }

    /// The data pages of a transfer of `bytes` as PRP1/PRP2 describe them.
    fn prp_segments(prp1: u64, prp2: u64, bytes: usize) -> Vec<(u64, usize)> {
        let first = bytes.min(4096 - (prp1 % 4096) as usize);
        let mut segs = vec![(prp1, first)];
        let rest = bytes - first;
        if rest == 0 {
            return segs;
        }
        assert_eq!(prp2 % 4096, 0, "PRP2 page aligned");
        if rest <= 4096 {
            segs.push((prp2, rest));
            return segs;
        }
        let entries = rest.div_ceil(4096);
        assert!(entries <= 512, "a PRP list within one page");
        let list = mem_read(prp2, entries * 8);
        for (i, e) in list.chunks(8).enumerate() {
            let addr = u64::from_le_bytes(e.try_into().unwrap());
            assert_eq!(addr % 4096, 0, "PRP list entries page aligned");
            segs.push((addr, (rest - i * 4096).min(4096)));
        }
        segs
    }

    fn io(&mut self, qid: u16, dw: &[u32]) -> (Status, u32) {
        let opcode = dw[0] as u8;
        let nsid = dw[1];
        let prp1 = u64::from(dw[6]) | u64::from(dw[7]) << 32;
        let prp2 = u64::from(dw[8]) | u64::from(dw[9]) << 32;
        let slba = u64::from(dw[10]) | u64::from(dw[11]) << 32;
        let blocks = (dw[12] & 0xffff) + 1;
        let data = matches!(opcode, opcode::READ | opcode::WRITE);
        self.seen.push(Seen { queue: qid, opcode, nsid, slba: if data { slba } else { 0 }, blocks: if data { blocks } else { 0 }, prp2 });
        if nsid != 1 {
            return (Status::INVALID_NAMESPACE, 0);
        }
        match opcode {
            opcode::FLUSH => (Status(0), 0),
            opcode::READ | opcode::WRITE => {
                let bytes = blocks as usize * self.lba_bytes;
                if bytes > self.mdts_bytes() {
                    return (Status::new(0, 0x02), 0);
                }
                let at = slba as usize * self.lba_bytes;
                if at + bytes > self.disk.len() {
                    return (Status::LBA_OUT_OF_RANGE, 0);
                }
                let mut off = at;
                for (addr, len) in Self::prp_segments(prp1, prp2, bytes) {
                    if opcode == opcode::READ {
                        mem_write(addr, &self.disk[off..off + len]);
                    } else {
                        let bytes = mem_read(addr, len);
                        self.disk[off..off + len].copy_from_slice(&bytes);
                    }
                    off += len;
                }
                (Status(0), 0)
            }
            _ => (Status::new(0, 0x01), 0),
        }
    }
}

struct Fake(Rc<RefCell<Ctrl>>);

impl Registers for Fake {
    fn window(&self) -> usize {
        WINDOW
    }
    fn read32(&self, offset: usize) -> u32 {
        self.0.borrow().read(offset)
    }
    fn write32(&mut self, offset: usize, value: u32) {
        self.0.borrow_mut().write(offset, value)
    }
}

fn clock() -> Clock {
    Clock::from_hz(1_000_000_000, crate::clock::rdtsc())
}

fn start(ctrl: Ctrl) -> (Result<NvmeDisk<Fake>, Error>, Rc<RefCell<Ctrl>>) {
    let ctrl = Rc::new(RefCell::new(ctrl));
    (NvmeDisk::start(Fake(ctrl.clone()), clock()), ctrl)
}

fn disk(ctrl: Ctrl) -> (NvmeDisk<Fake>, Rc<RefCell<Ctrl>>) {
    let (d, ctrl) = start(ctrl);
    (d.expect("bring-up"), ctrl)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed ^ (i >> 9) as u8)).collect()
}

/// The I/O commands seen: (opcode, slba, blocks).
fn io(ctrl: &Rc<RefCell<Ctrl>>) -> Vec<(u8, u64, u32)> {
    ctrl.borrow().seen.iter().filter(|s| s.queue == 1).map(|s| (s.opcode, s.slba, s.blocks)).collect()
}

// ---------------------------------------------------------------------------
// Pure parts

#[test]
fn capabilities_are_decoded_and_checked() {
    let cap = Capabilities::parse(QEMU_CAP).unwrap();
    assert_eq!(cap, Capabilities { max_entries: 0x800, doorbell_stride: 4, ready_timeout_ms: 7500 });
    assert_eq!(cap.doorbells(0), Some((0x1000, 0x1004)));
    assert_eq!(cap.doorbells(1), Some((0x1008, 0x100c)));
    let wide = Capabilities::parse(QEMU_CAP | 3 << 32).unwrap();
    assert_eq!((wide.doorbell_stride, wide.doorbells(1)), (32, Some((0x1040, 0x1060))));
    assert_eq!(Capabilities::parse(QEMU_CAP & !(0xff << 24)).unwrap().ready_timeout_ms, 500, "TO 0 still waits");
    assert!(matches!(Capabilities::parse(u64::MAX), Err(Error::NotResponding)));
    assert!(matches!(Capabilities::parse(QEMU_CAP & !0xffff), Err(Error::QueueSizeInvalid { mqes: 0 })));
    assert!(matches!(Capabilities::parse(QEMU_CAP & !(1 << 37) | 1 << 44), Err(Error::NoNvmCommandSet { css: 0x80 })));
    assert!(matches!(Capabilities::parse(QEMU_CAP | 1 << 48), Err(Error::PageSizeUnsupported { mpsmin: 1 })));
}

#[test]
fn submission_entry_and_completion_layout() {
    let c = Command { opcode: 0x02, nsid: 1, prp1: 0x1_2345_6000, prp2: 0xabc_d000, cdw10: 0x10, cdw11: 0x2, cdw12: 7 };
    let e = c.entry(0xbeef);
    assert_eq!(e, [0xbeef_0002, 1, 0, 0, 0, 0, 0x2345_6000, 1, 0x0abc_d000, 0, 0x10, 2, 7, 0, 0, 0]);
    let done = Completion::from_dwords(0xdead, 0x0001_0005, 0xbeef | 1 << 16 | (0x281 << 17));
    assert_eq!((done.result, done.sq_head, done.sq_id, done.cid, done.phase), (0xdead, 5, 1, 0xbeef, true));
    assert_eq!((done.status.sct(), done.status.sc(), done.status.dnr(), done.status.is_success()), (2, 0x81, false, false));
    let dnr = Completion::from_dwords(0, 0, 1 << 31 | 0xb << 17);
    assert!(dnr.status.dnr() && dnr.status == Status::from_field(0x400b) && !dnr.phase);
    assert_eq!(std::format!("{:?}", Status::new(2, 0x81)), "SCT 0x2 SC 0x81");
    assert!(Completion::from_dwords(0, 0, 1 << 16).status.is_success());
}

#[test]
fn identify_controller_is_parsed() {
    let c = Ctrl::new(8, 9);
    let info = ControllerInfo::parse(&c.id_ctrl).unwrap();
    assert_eq!(info.model.as_bytes(), b"QEMU NVMe Ctrl");
    assert_eq!(info.serial.as_bytes(), b"routerd-disk0");
    assert_eq!(std::format!("{:?}", info.firmware), "7.2.22");
    assert_eq!((info.mdts, info.nn, info.volatile_cache), (7, 256, true));
    let mut page = c.id_ctrl.clone();
    page[525] = 0x06;
    page[24] = 0x01;
    let info = ControllerInfo::parse(&page).unwrap();
    assert!(!info.volatile_cache, "only bit 0 says a volatile cache is present");
    assert!(std::format!("{:?}", info.model).starts_with("\\x01EMU"));
    // Entry sizes: 0 (pre-1.2) accepted; a range without 64/16 refused.
    page[512] = 0;
    assert!(ControllerInfo::parse(&page).is_ok());
    page[512] = 0x77;
    assert!(matches!(ControllerInfo::parse(&page), Err(Error::EntrySizeUnsupported { sqes: 0x77, cqes: 0x44 })));
    // A short page reads as zeroes rather than panicking.
    assert_eq!(ControllerInfo::parse(&[0xff; 100]).unwrap().nn, 0);
}

#[test]
fn max_transfer_follows_mdts_capped_at_the_bounce_buffer() {
    let mut info = ControllerInfo::parse(&Ctrl::new(8, 9).id_ctrl).unwrap();
    for (mdts, b512, b4096) in
        [(0, BOUNCE, BOUNCE), (1, 8192, 8192), (2, 16384, 16384), (3, BOUNCE, BOUNCE), (7, BOUNCE, BOUNCE), (255, BOUNCE, BOUNCE)]
    {
        info.mdts = mdts;
        assert_eq!((info.max_transfer(BlockSize::B512), info.max_transfer(BlockSize::B4096)), (b512, b4096), "MDTS {mdts}");
    }
}

#[test]
fn identify_namespace_is_parsed_and_odd_formats_refused() {
    let ns = |blocks: u64, lbads: u8, ms: u16| {
        let mut c = Ctrl::new(0, 9);
        c.format(blocks, lbads, ms);
        NamespaceInfo::parse(&c.id_ns, 4)
    };
    assert_eq!(ns(1000, 9, 0).unwrap(), NamespaceInfo { blocks: 1000, block_size: BlockSize::B512, write_protected: false });
    assert_eq!(ns(1000, 12, 0).unwrap().block_size, BlockSize::B4096);
    assert!(matches!(ns(1000, 12, 8), Err(Error::MetadataFormat { index: 1, metadata_bytes: 8 })));
    assert!(matches!(ns(1000, 10, 0), Err(Error::UnsupportedBlockSize { index: 1, lbads: 10 })));
    assert!(matches!(ns(1000, 16, 0), Err(Error::UnsupportedBlockSize { index: 1, lbads: 16 })));
    assert!(matches!(ns(0, 9, 0), Err(Error::NoNamespace { nn: 4 })));
    let mut c = Ctrl::new(64, 12);
    c.id_ns[26] = 0x12; // format 2, metadata at the end of the block: beyond NLBAF
    assert!(matches!(NamespaceInfo::parse(&c.id_ns, 1), Err(Error::FormatIndex { index: 2, formats: 1 })));
    c.id_ns[26] = 0x20; // 2.0: bits 6:5 are the high bits of the index
    assert!(matches!(NamespaceInfo::parse(&c.id_ns, 1), Err(Error::FormatIndex { index: 16, formats: 1 })));
    c.id_ns[26] = 0x00;
    c.id_ns[99] = 1;
    assert_eq!(
        NamespaceInfo::parse(&c.id_ns, 1).unwrap(),
        NamespaceInfo { blocks: 64, block_size: BlockSize::B512, write_protected: true }
    );
    assert!(matches!(NamespaceInfo::parse(&[], 1), Err(Error::NoNamespace { nn: 1 })));
}

// ---------------------------------------------------------------------------
// The driver against the fake controller

#[test]
fn bring_up_programs_the_controller_for_polling() {
    let (d, ctrl) = disk(Ctrl::new(32768, 9));
    let c = ctrl.borrow();
    let cc = c.enabled_with.expect("enabled");
    assert_eq!(cc, 1 | 6 << 16 | 4 << 20, "EN, CSS NVM, MPS 4 KiB, round robin, IOSQES 6, IOCQES 4");
    assert_eq!(c.aqa, 7 | 7 << 16, "admin queues of QUEUE_DEPTH entries");
    assert_eq!(c.csts & csts::RDY, csts::RDY);
    let cq = c.cq[1].expect("I/O completion queue");
    assert_eq!((cq.size, cq.flags), (8, 1), "physically contiguous, IEN = 0");
    let sq = c.sq[1].expect("I/O submission queue");
    assert_eq!((sq.size, sq.flags, sq.cqid), (8, 1 | 1 << 16, 1), "contiguous, on completion queue 1");
    let admin: Vec<(u8, u32)> = c.seen.iter().map(|s| (s.opcode, s.nsid)).collect();
    assert_eq!(
        admin,
        [(opcode::IDENTIFY, 0), (opcode::IDENTIFY, 1), (opcode::SET_FEATURES, 0), (opcode::CREATE_IO_CQ, 0), (opcode::CREATE_IO_SQ, 0)],
        "identify, then the queues; nothing touches the medium"
    );
    assert_eq!(c.cq_doorbells, 5, "every completion handed back");
    assert_eq!(
        (d.block_size(), d.block_count(), d.cache(), d.read_only(), d.max_transfer()),
        (BlockSize::B512, 32768, Cache::WriteBack, false, BOUNCE)
    );
    assert_eq!(d.controller().unwrap().model.as_bytes(), b"QEMU NVMe Ctrl");
    assert_eq!(c.disables, 0, "a controller found disabled is not disabled again");
}

#[test]
fn a_controller_left_enabled_is_reset_first() {
    let mut c = Ctrl::new(64, 9);
    c.cc = 1;
    c.csts = csts::RDY;
    let (d, ctrl) = disk(c);
    assert_eq!(ctrl.borrow().disables, 1);
    assert!(!d.is_broken());
}

#[test]
fn reads_and_writes_round_trip_with_512_and_4096_byte_blocks() {
    for (lbads, bs) in [(9, 512), (12, 4096)] {
        let (mut d, ctrl) = disk(Ctrl::new(256, lbads));
        let data = pattern(3 * bs, lbads);
        d.write(5, &data).unwrap();
        assert_eq!(ctrl.borrow().disk[5 * bs..8 * bs], data[..], "{bs}-byte blocks land at LBA 5");
        let mut back = vec![0xa5; data.len()];
        d.read(5, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(io(&ctrl), [(opcode::WRITE, 5, 3), (opcode::READ, 5, 3)]);
        assert!(ctrl.borrow().seen.iter().filter(|s| s.queue == 1).all(|s| s.nsid == 1));
        // Through the trait, and the last block.
        BlockDevice::write(&mut d, 255, &pattern(bs, 1)).unwrap();
        let mut last = vec![0; bs];
        BlockDevice::read(&mut d, 255, &mut last).unwrap();
        assert_eq!(last, pattern(bs, 1));
    }
}

#[test]
fn transfers_are_split_by_mdts_and_the_bounce_buffer() {
    // (MDTS, bytes per command); 100 KiB at LBA 8 in 512-byte blocks.
    for (mdts, per) in [(0u8, BOUNCE), (7, BOUNCE), (1, 8192), (2, 16384)] {
        let mut c = Ctrl::new(4096, 9);
        c.id_ctrl[77] = mdts;
        let (mut d, ctrl) = disk(c);
        let data = pattern(100 * 1024, mdts);
        d.write(8, &data).unwrap();
        let mut back = vec![0; data.len()];
        d.read(8, &mut back).unwrap();
        assert_eq!(back, data, "MDTS {mdts}");
        let mut want = Vec::new();
        for op in [opcode::WRITE, opcode::READ] {
            let mut lba = 8;
            for chunk in data.chunks(per) {
                want.push((op, lba, (chunk.len() / 512) as u32));
                lba += (chunk.len() / 512) as u64;
            }
        }
        assert_eq!(io(&ctrl), want, "MDTS {mdts}");
        // PRP2: none for one page, the second bounce page for two, else the list.
        let c = ctrl.borrow();
        for s in c.seen.iter().filter(|s| s.queue == 1) {
            let expect = match s.blocks as usize * 512 {
                ..=4096 => 0,
                8192 => d.bounce.phys + 4096,
                _ => d.prp_list.phys,
            };
            assert_eq!(s.prp2, expect, "{s:?}");
        }
    }
    // A 4096-byte namespace under MDTS 1: two blocks per command.
    let mut c = Ctrl::new(64, 12);
    c.id_ctrl[77] = 1;
    let (mut d, ctrl) = disk(c);
    d.write(0, &pattern(5 * 4096, 3)).unwrap();
    assert_eq!(io(&ctrl), [(opcode::WRITE, 0, 2), (opcode::WRITE, 2, 2), (opcode::WRITE, 4, 1)]);
}

#[test]
fn the_phase_tag_wraps_over_many_commands() {
    // MQES 1: two-entry queues, so the phase flips every other command.
    for mqes in [1u64, 0x7ff] {
        let mut c = Ctrl::new(512, 9);
        c.cap = c.cap & !0xffff | mqes;
        let (mut d, ctrl) = disk(c);
        for i in 0..200u64 {
            let lba = (i * 7) % 512;
            let block = pattern(512, i as u8);
            d.write(lba, &block).unwrap();
            let mut back = [0u8; 512];
            d.read(lba, &mut back).unwrap();
            assert_eq!(back[..], block[..], "command pair {i}, MQES {mqes}");
        }
        d.flush().unwrap();
        assert_eq!(io(&ctrl).len(), 401);
        assert_eq!(ctrl.borrow().cq_doorbells, 5 + 401, "each completion handed back once");
        assert!(!d.is_broken());
    }
}

#[test]
fn flush_is_sent_only_with_a_volatile_write_cache() {
    let (mut d, ctrl) = disk(Ctrl::new(64, 9));
    assert_eq!(d.cache(), Cache::WriteBack);
    d.write(0, &[1; 512]).unwrap();
    BlockDevice::flush(&mut d).unwrap();
    assert_eq!(io(&ctrl), [(opcode::WRITE, 0, 1), (opcode::FLUSH, 0, 0)]);
    assert_eq!(ctrl.borrow().seen.last().unwrap().nsid, 1);
    // A failed flush is an error: the store then never reports the save.
    ctrl.borrow_mut().misbehave = Misbehave::Status(Status::new(0, 0x06));
    assert_eq!(BlockDevice::flush(&mut d), Err(BlockError::Io));

    let mut c = Ctrl::new(64, 9);
    c.id_ctrl[525] = 0;
    let (mut d, ctrl) = disk(c);
    assert_eq!(d.cache(), Cache::WriteThrough);
    d.write(0, &[1; 512]).unwrap();
    d.flush().unwrap();
    assert_eq!(io(&ctrl), [(opcode::WRITE, 0, 1)], "no volatile cache: nothing to flush");
}

#[test]
fn an_error_status_fails_that_command_only() {
    let (mut d, ctrl) = disk(Ctrl::new(64, 9));
    d.write(1, &[7; 512]).unwrap();
    for status in [Status::new(2, 0x81), Status::new(0, 0x04), Status::from_field(0x4000 | 0x0280)] {
        ctrl.borrow_mut().misbehave = Misbehave::Status(status);
        let mut buf = [0u8; 512];
        let e = d.read(1, &mut buf).unwrap_err();
        assert!(matches!(e, Error::Status(s) if s == status), "{e:?}");
        assert_eq!(e.block_error(), BlockError::Io);
        ctrl.borrow_mut().misbehave = Misbehave::Not;
        d.read(1, &mut buf).unwrap();
        assert_eq!(buf, [7; 512], "after {status:?}");
    }
    // The controller refusing a range the namespace claimed to have.
    ctrl.borrow_mut().disk.truncate(512);
    assert!(matches!(d.read(1, &mut [0; 512]), Err(Error::Status(Status::LBA_OUT_OF_RANGE))));
    assert!(!d.is_broken());
}

#[test]
fn protocol_violations_disable_the_controller_for_good() {
    for misbehave in [Misbehave::WrongCid, Misbehave::WrongSqId, Misbehave::SqHead(0), Misbehave::SqHead(9), Misbehave::Twice] {
        let (mut d, ctrl) = disk(Ctrl::new(64, 9));
        ctrl.borrow_mut().misbehave = misbehave;
        let first = d.write(0, &[1; 512]);
        let r = if misbehave == Misbehave::Twice {
            // The duplicate is seen when the next command looks for its own.
            assert!(first.is_ok());
            ctrl.borrow_mut().misbehave = Misbehave::Not;
            d.read(0, &mut [0; 512])
        } else {
            first
        };
        assert!(
            matches!(
                r,
                Err(Error::WrongCommandId { .. } | Error::WrongQueue { expected: 1, got: 7 } | Error::WrongSqHead { expected: 1, .. })
            ),
            "{misbehave:?}: {r:?}"
        );
        assert!(d.is_broken(), "{misbehave:?}");
        assert_eq!(ctrl.borrow().cc & 1, 0, "disabled");
        ctrl.borrow_mut().misbehave = Misbehave::Not;
        let before = ctrl.borrow().seen.len();
        assert!(matches!(d.read(0, &mut [0; 512]), Err(Error::Broken)));
        assert!(matches!(d.flush(), Err(Error::Broken)));
        assert_eq!(BlockDevice::write(&mut d, 0, &[0; 512]), Err(BlockError::Io));
        assert_eq!(ctrl.borrow().seen.len(), before, "nothing sent to a controller given up on");
    }
}

#[test]
fn a_hung_controller_times_out_and_is_disabled() {
    let (mut d, ctrl) = disk(Ctrl::new(64, 9));
    d.timeout_ns = 20_000_000;
    ctrl.borrow_mut().misbehave = Misbehave::Hang;
    let t = std::time::Instant::now();
    assert!(matches!(d.read(0, &mut [0; 512]), Err(Error::Timeout)));
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(ctrl.borrow().cc & 1, 0, "disabled");
    assert!(matches!(d.write(0, &[0; 512]), Err(Error::Broken)));
}

#[test]
fn a_fatal_controller_status_ends_the_wait_early() {
    let (mut d, ctrl) = disk(Ctrl::new(64, 9));
    assert_eq!(d.timeout_ns, COMMAND_TIMEOUT_MS * 1_000_000);
    ctrl.borrow_mut().misbehave = Misbehave::Fatal;
    let t = std::time::Instant::now();
    assert!(matches!(d.write(0, &[0; 512]), Err(Error::ControllerFatal)));
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "CSTS.CFS is read while waiting, not after the timeout");
    assert!(d.is_broken());
    assert_eq!((ctrl.borrow().cc & 1, ctrl.borrow().csts), (0, 0), "disabled (which clears CFS)");
}

#[test]
fn bring_up_failures_are_reported_and_leave_the_controller_disabled() {
    type Case = (&'static str, fn(&mut Ctrl), fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        ("no namespaces", |c| c.id_ctrl[516..520].fill(0), |e| matches!(e, Error::NoNamespace { nn: 0 })),
        ("namespace 1 inactive", |c| c.id_ns.fill(0), |e| matches!(e, Error::NoNamespace { nn: 256 })),
        ("namespace 1 invalid", |c| c.ns_invalid = true, |e| matches!(e, Error::NoNamespace { nn: 256 })),
        ("metadata", |c| c.format(64, 9, 16), |e| matches!(e, Error::MetadataFormat { metadata_bytes: 16, .. })),
        ("2 KiB blocks", |c| c.format(64, 11, 0), |e| matches!(e, Error::UnsupportedBlockSize { lbads: 11, .. })),
        ("entry sizes", |c| c.id_ctrl[513] = 0x55, |e| matches!(e, Error::EntrySizeUnsupported { .. })),
        ("fatal on enable", |c| c.fatal_on_enable = true, |e| matches!(e, Error::ControllerFatal)),
    ];
    for (what, setup, want) in cases {
        let mut c = Ctrl::new(64, 9);
        setup(&mut c);
        let (r, ctrl) = start(c);
        let e = r.err().unwrap_or_else(|| panic!("{what}: brought up"));
        assert!(want(&e), "{what}: {e:?}");
        assert_eq!(e.block_error(), BlockError::Io);
        assert_eq!(ctrl.borrow().cc & 1, 0, "{what}: left disabled");
        assert!(ctrl.borrow().sq[1].is_none(), "{what}");
    }
}

#[test]
fn bring_up_refuses_what_it_cannot_drive_without_touching_it() {
    for (what, cap, want) in [
        ("no NVM command set", QEMU_CAP & !(1 << 37) | 1 << 43, "NoNvmCommandSet { css: 64 }"),
        ("8 KiB minimum pages", QEMU_CAP | 1 << 48, "PageSizeUnsupported { mpsmin: 1 }"),
        ("doorbells beyond the window", QEMU_CAP | 12 << 32, "DoorbellsOutsideWindow { stride: 16384, window: 16384 }"),
        ("all ones", u64::MAX, "NotResponding"),
    ] {
        let mut c = Ctrl::new(64, 9);
        c.cap = cap;
        let (r, ctrl) = start(c);
        assert_eq!(std::format!("{:?}", r.err().unwrap()), want, "{what}");
        assert_eq!((ctrl.borrow().enabled_with, ctrl.borrow().disables), (None, 0), "{what}: untouched");
    }
}

#[test]
fn a_controller_that_never_gets_ready_times_out() {
    let mut c = Ctrl::new(64, 9);
    c.never_ready = true;
    c.cap = c.cap & !(0xff << 24) | 1 << 24; // TO: 500 ms
    let t = std::time::Instant::now();
    let (r, ctrl) = start(c);
    assert!(matches!(r, Err(Error::ReadyTimeout)), "{:?}", r.err());
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(ctrl.borrow().cc & 1, 0);
}

#[test]
fn a_wide_doorbell_stride_is_honoured() {
    let mut c = Ctrl::new(64, 9);
    c.cap |= 2 << 32; // 16-byte stride
    let (mut d, ctrl) = disk(c);
    d.write(3, &pattern(1024, 4)).unwrap();
    let mut back = [0; 1024];
    d.read(3, &mut back).unwrap();
    assert_eq!(back[..], pattern(1024, 4)[..]);
    assert_eq!(io(&ctrl).len(), 2);
}

#[test]
fn lengths_ranges_and_write_protection_are_checked_before_anything_is_sent() {
    let (mut d, ctrl) = disk(Ctrl::new(64, 9));
    let mut buf = [0u8; 1024];
    assert!(matches!(d.read(0, &mut buf[..0]), Err(Error::BadLength)));
    assert!(matches!(d.read(0, &mut buf[..100]), Err(Error::BadLength)));
    assert!(matches!(d.read(64, &mut buf[..512]), Err(Error::OutOfRange)));
    assert!(matches!(d.read(63, &mut buf), Err(Error::OutOfRange)));
    assert!(matches!(d.write(u64::MAX, &buf), Err(Error::OutOfRange)));
    assert_eq!(BlockDevice::read(&mut d, 64, &mut buf[..512]), Err(BlockError::OutOfRange));
    assert_eq!(BlockDevice::write(&mut d, 0, &buf[..3]), Err(BlockError::BadLength));
    assert!(io(&ctrl).is_empty());
    d.read(62, &mut buf).unwrap();
    assert_eq!(io(&ctrl), [(opcode::READ, 62, 2)]);

    let mut c = Ctrl::new(64, 9);
    c.id_ns[99] = 1;
    let (mut d, ctrl) = disk(c);
    assert!(d.read_only());
    assert_eq!(BlockDevice::write(&mut d, 0, &[0; 512]), Err(BlockError::ReadOnly));
    assert!(io(&ctrl).is_empty());
    d.read(0, &mut [0; 512]).unwrap();
}

#[test]
fn gpt_create_and_find_through_the_driver() {
    for lbads in [9, 12] {
        let (mut d, ctrl) = disk(Ctrl::new(if lbads == 9 { 16384 } else { 2048 }, lbads));
        let p = gpt::create_state_partition(&mut d, [5; 32], gpt::Existing::Refuse).expect("create");
        let log = io(&ctrl);
        let flush = log.iter().position(|s| s.0 == opcode::FLUSH).expect("a flush");
        assert!(log[..flush].iter().any(|s| s.0 == opcode::WRITE));
        let f = gpt::find_state_partition(&mut d).unwrap();
        assert_eq!((f.partition, f.copies_agree), (p, true));
        assert_eq!(ctrl.borrow().disk[510..512], [0x55, 0xaa]);
    }
}

#[test]
fn nvme_functions_are_found_by_class_and_named_as_linux_does() {
    use crate::blk::{is_block_device, DiskKind};
    use virtio_drivers::transport::pci::bus::{DeviceFunction, DeviceFunctionInfo, HeaderType};
    let dev = |vendor_id: u16, class: u8, subclass: u8, prog_if: u8| Device {
        address: DeviceFunction { bus: 0, device: 4, function: 0 },
        info: DeviceFunctionInfo { vendor_id, device_id: 0x5678, class, subclass, prog_if, revision: 0, header_type: HeaderType::Standard },
    };
    for vendor in [0x1b36, 0x144d, 0x8086] {
        assert!(is_nvme(&dev(vendor, 0x01, 0x08, 0x02)) && is_block_device(&dev(vendor, 0x01, 0x08, 0x02)));
    }
    // NVMHCI (prog-if 01) and other mass-storage functions are not NVMe.
    assert!(!is_nvme(&dev(0x1b36, 0x01, 0x08, 0x01)));
    assert!(!is_nvme(&dev(0x1b36, 0x01, 0x06, 0x02)));
    assert!(!is_nvme(&dev(0x1b36, 0x02, 0x08, 0x02)));
    let names: Vec<_> = [0, 1, 10, 99, 100, usize::MAX].iter().map(|&i| DiskKind::Nvme.name(i)).collect();
    assert_eq!(names, ["nvme0n1", "nvme1n1", "nvme10n1", "nvme99n1", "nvme99n1", "nvme99n1"]);
    assert_eq!(DiskKind::Nvme.driver(), "nvme");
}

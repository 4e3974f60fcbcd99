//! The NVMe structures `nvme.rs` speaks, as pure code tested on the host:
//! register offsets and bits, CAP, submission and completion queue
//! entries, the status field, and the two identify pages it reads (NVM
//! Express Base Specification 1.4 / 2.0, the sections named below).
//!
//! Contract: nothing here panics on device data. Identify pages are read
//! with bounds (a short page reads as zeroes), and every field the driver
//! relies on is checked here and refused with an [`Error`] naming it.

use super::{Error, BOUNCE, CQES_LOG2, DOORBELLS, PAGE, SQES_LOG2};
use crate::blk::BlockSize;

/// Register offsets.
pub mod reg {
    pub const CAP: usize = 0x00;
    pub const VS: usize = 0x08;
    pub const CC: usize = 0x14;
    pub const CSTS: usize = 0x1c;
    pub const AQA: usize = 0x24;
    pub const ASQ: usize = 0x28;
    pub const ACQ: usize = 0x30;
}

/// Controller configuration bits.
pub mod cc {
    pub const EN: u32 = 1 << 0;
    /// CSS = 000b (NVM), MPS = 0 (4 KiB), AMS = round robin, SHN = none,
    /// IOSQES = 6 (64 bytes), IOCQES = 4 (16 bytes).
    pub const CONFIG: u32 = (super::SQES_LOG2 << 16) | (super::CQES_LOG2 << 20);
}

/// Controller status bits.
pub mod csts {
    pub const RDY: u32 = 1 << 0;
    pub const CFS: u32 = 1 << 1;
}

/// Opcodes: admin command set, then NVM command set.
pub mod opcode {
    pub const CREATE_IO_SQ: u8 = 0x01;
    pub const CREATE_IO_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const SET_FEATURES: u8 = 0x09;
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
}

/// Identify CNS values and the Number of Queues feature.
pub mod cns {
    pub const NAMESPACE: u32 = 0x00;
    pub const CONTROLLER: u32 = 0x01;
}
pub const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

/// A completion's status field (Dword 3 bits 31:17): status code type and
/// status code ("Status Field Definition").
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(pub(super) u16);

impl Status {
    /// Generic Command Status: Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: Status = Status(0x0b);
    /// Generic Command Status: LBA Out of Range.
    pub const LBA_OUT_OF_RANGE: Status = Status(0x80);

    /// From the 15-bit status field.
    pub const fn from_field(field: u16) -> Status {
        Status(field & 0x7fff)
    }
    /// A status from its type and code.
    pub const fn new(sct: u8, sc: u8) -> Status {
        Status(((sct as u16 & 0x7) << 8) | sc as u16)
    }
    /// Status Code Type (0 generic, 1 command specific, 2 media and data
    /// integrity, 3 path related, 7 vendor specific).
    pub fn sct(self) -> u8 {
        ((self.0 >> 8) & 0x7) as u8
    }
    /// Status Code.
    pub fn sc(self) -> u8 {
        (self.0 & 0xff) as u8
    }
    /// Do Not Retry.
    pub fn dnr(self) -> bool {
        self.0 & (1 << 14) != 0
    }
    /// Success (SCT 0, SC 0).
    pub fn is_success(self) -> bool {
        self.sct() == 0 && self.sc() == 0
    }
}

impl core::fmt::Debug for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SCT {:#x} SC {:#04x}{}", self.sct(), self.sc(), if self.dnr() { " DNR" } else { "" })
    }
}

/// The fields of CAP this driver uses, decoded and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Largest queue, in entries (MQES + 1).
    pub max_entries: u32,
    /// Bytes between doorbells (4 << DSTRD).
    pub doorbell_stride: usize,
    /// Worst-case time for CSTS.RDY to follow CC.EN (CAP.TO × 500 ms; at
    /// least 500 ms even when the controller says 0).
    pub ready_timeout_ms: u64,
}

impl Capabilities {
    pub fn parse(cap: u64) -> Result<Capabilities, Error> {
        if cap == u64::MAX {
            return Err(Error::NotResponding);
        }
        let mqes = cap as u16;
        if mqes == 0 {
            return Err(Error::QueueSizeInvalid { mqes });
        }
        let css = (cap >> 37) as u8;
        if css & 1 == 0 {
            return Err(Error::NoNvmCommandSet { css });
        }
        let mpsmin = ((cap >> 48) & 0xf) as u8;
        if mpsmin != 0 {
            return Err(Error::PageSizeUnsupported { mpsmin });
        }
        let to = (cap >> 24) as u8;
        let dstrd = ((cap >> 32) & 0xf) as u32;
        Ok(Capabilities {
            max_entries: u32::from(mqes) + 1,
            doorbell_stride: 4usize << dstrd,
            ready_timeout_ms: u64::from(to.max(1)) * 500,
        })
    }

    /// The tail doorbell of submission queue `qid` and the head doorbell of
    /// completion queue `qid`.
    pub fn doorbells(&self, qid: u16) -> Option<(usize, usize)> {
        let sq = usize::from(qid).checked_mul(2)?.checked_mul(self.doorbell_stride)?.checked_add(DOORBELLS)?;
        Some((sq, sq.checked_add(self.doorbell_stride)?))
    }
}

// ---------------------------------------------------------------------------
// Commands and completions

/// A submission queue entry, before it gets its command identifier. PRPs
/// only (PSDT = 0), no fused operations, no metadata pointer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub opcode: u8,
    pub nsid: u32,
    pub prp1: u64,
    pub prp2: u64,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
}

impl Command {
    /// The 16 dwords of the entry.
    pub fn entry(&self, cid: u16) -> [u32; 16] {
        let mut e = [0u32; 16];
        e[0] = u32::from(self.opcode) | u32::from(cid) << 16;
        e[1] = self.nsid;
        e[6] = self.prp1 as u32;
        e[7] = (self.prp1 >> 32) as u32;
        e[8] = self.prp2 as u32;
        e[9] = (self.prp2 >> 32) as u32;
        e[10] = self.cdw10;
        e[11] = self.cdw11;
        e[12] = self.cdw12;
        e
    }
}

/// A completion queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Command specific (Dword 0).
    pub result: u32,
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    pub phase: bool,
    pub status: Status,
}

impl Completion {
    pub fn from_dwords(dw0: u32, dw2: u32, dw3: u32) -> Completion {
        Completion {
            result: dw0,
            sq_head: dw2 as u16,
            sq_id: (dw2 >> 16) as u16,
            cid: dw3 as u16,
            phase: dw3 & (1 << 16) != 0,
            status: Status::from_field((dw3 >> 17) as u16),
        }
    }
}

/// ASCII text from identify data (space padded), printed with anything
/// else escaped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text<const N: usize>([u8; N]);

impl<const N: usize> Text<N> {
    fn from_bytes(b: &[u8]) -> Text<N> {
        let mut t = [b' '; N];
        for (d, s) in t.iter_mut().zip(b) {
            *d = *s;
        }
        Text(t)
    }

    /// The text without its trailing padding.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().rposition(|&b| b != b' ' && b != 0).map_or(0, |i| i + 1);
        self.0.get(..end).unwrap_or(&[])
    }
}

impl<const N: usize> core::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.as_bytes().iter().try_for_each(|&b| {
            if b == b' ' || b.is_ascii_graphic() {
                write!(f, "{}", b as char)
            } else {
                write!(f, "\\x{b:02x}")
            }
        })
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).and_then(|s| s.try_into().ok()).map_or(0, u16::from_le_bytes)
}
fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}
fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}
fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// What Identify Controller (CNS 01h) says, as far as this driver cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerInfo {
    pub serial: Text<20>,
    pub model: Text<40>,
    pub firmware: Text<8>,
    /// Maximum Data Transfer Size, a power of two of 4 KiB pages (0: no limit).
    pub mdts: u8,
    /// Number of Namespaces (the largest NSID).
    pub nn: u32,
    /// Volatile Write Cache present (VWC bit 0).
    pub volatile_cache: bool,
}

impl ControllerInfo {
    /// Parses the 4096-byte identify page; checks the queue entry sizes.
    pub fn parse(page: &[u8]) -> Result<ControllerInfo, Error> {
        let (sqes, cqes) = (byte(page, 512), byte(page, 513));
        // Required since NVMe 1.2; a controller that leaves them 0 is taken
        // to mean the only sizes there were (64 and 16 bytes).
        let fits = |v: u8, want: u32| v == 0 || (u32::from(v & 0xf) <= want && want <= u32::from(v >> 4));
        if !fits(sqes, SQES_LOG2) || !fits(cqes, CQES_LOG2) {
            return Err(Error::EntrySizeUnsupported { sqes, cqes });
        }
        Ok(ControllerInfo {
            serial: Text::from_bytes(page.get(4..24).unwrap_or(&[])),
            model: Text::from_bytes(page.get(24..64).unwrap_or(&[])),
            firmware: Text::from_bytes(page.get(64..72).unwrap_or(&[])),
            mdts: byte(page, 77),
            nn: le32(page, 516),
            volatile_cache: byte(page, 525) & 1 != 0,
        })
    }

    /// Bytes per command: MDTS (in 4 KiB pages, since CC.MPS = MPSMIN = 0)
    /// capped at the bounce buffer, in whole blocks.
    pub fn max_transfer(&self, block: BlockSize) -> usize {
        let limit = match self.mdts {
            // No limit from the controller (a shift this large is beyond
            // the bounce buffer anyway).
            0 | 20.. => BOUNCE,
            m => (PAGE << m).min(BOUNCE),
        };
        // MDTS ≥ 1 means ≥ 8 KiB, so this is never 0.
        limit / block.bytes() * block.bytes()
    }
}

/// What Identify Namespace (CNS 00h) says about namespace 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace Size, in logical blocks.
    pub blocks: u64,
    pub block_size: BlockSize,
    /// Write protected (NSATTR bit 0).
    pub write_protected: bool,
}

impl NamespaceInfo {
    /// Parses the 4096-byte identify page of a namespace; `nn` is the
    /// controller's namespace count, for the error.
    pub fn parse(page: &[u8], nn: u32) -> Result<NamespaceInfo, Error> {
        let blocks = le64(page, 0);
        if blocks == 0 {
            // An inactive namespace identifies as all zeroes.
            return Err(Error::NoNamespace { nn });
        }
        let formats = byte(page, 25);
        let flbas = byte(page, 26);
        // Bits 3:0, and bits 6:5 as the high bits when NLBAF > 16 (2.0).
        let index = (flbas & 0xf) | ((flbas >> 5) & 0x3) << 4;
        if index > formats {
            return Err(Error::FormatIndex { index, formats });
        }
        let lbaf = 128 + 4 * usize::from(index);
        let metadata_bytes = le16(page, lbaf);
        let lbads = byte(page, lbaf + 2);
        if metadata_bytes != 0 {
            return Err(Error::MetadataFormat { index, metadata_bytes });
        }
        let block_size = match lbads {
            9 => BlockSize::B512,
            12 => BlockSize::B4096,
            _ => return Err(Error::UnsupportedBlockSize { index, lbads }),
        };
        Ok(NamespaceInfo { blocks, block_size, write_protected: byte(page, 99) & 1 != 0 })
    }
}

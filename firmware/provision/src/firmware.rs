//! What a routerd firmware file is, read the same way by `routerctl` (a
//! file to upgrade to) and by the box (its own slots).
//!
//! A firmware is the image's ELF. Two things make it one GRUB can boot and
//! one routerd will run:
//! - a multiboot2 header (magic `0xE85250D6`, architecture 0, a checksum
//!   that makes the four header words sum to zero) on an 8-byte boundary in
//!   the first 32 KiB of the file — what GRUB's `multiboot2` command looks
//!   for;
//! - a `.note.routerd` ELF note (name `routerd`, type [`NOTE_TYPE`], a
//!   [`NOTE_DESC`]-byte description) in a `PT_NOTE` segment, also within
//!   the first 32 KiB: its version, build and flags ([`FirmwareIdentity`]).
//!   The firmware reports its identity from this note at run time, so what
//!   `routerctl` reads from a file is what the box will say it runs.
//!
//! The description, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | format, [`NOTE_FORMAT`] |
//! | 4..8 | flags ([`FirmwareIdentity::FLAG_NEVER_CONFIRMS`]) |
//! | 8..24 | version, UTF-8, NUL-padded |
//! | 24..56 | build, UTF-8, NUL-padded |
//! | 56..64 | zero |
//!
//! Everything here reads only the prefix it is given and never panics on
//! any bytes.

use crate::message::{text, FirmwareIdentity, Text};

/// How much of a file [`inspect`] looks at: GRUB's multiboot2 search window.
pub const HEAD: usize = 32 * 1024;
/// The note's name (with its NUL).
pub const NOTE_NAME: &[u8; 8] = b"routerd\0";
/// The note's type.
pub const NOTE_TYPE: u32 = 0x5244_0001;
/// The note's description length.
pub const NOTE_DESC: usize = 64;
/// The description's layout version.
pub const NOTE_FORMAT: u32 = 1;
const VERSION_AT: usize = 8;
const VERSION_LEN: usize = 16;
const BUILD_AT: usize = 24;
const BUILD_LEN: usize = 32;
const MULTIBOOT2_MAGIC: u32 = 0xE852_50D6;

/// Why bytes are not a routerd firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFirmware {
    /// Fewer bytes than an ELF header.
    TooShort(usize),
    /// No `\x7fELF` at the start.
    NotElf,
    /// Not a 64-bit little-endian x86-64 executable.
    WrongKind { class: u8, data: u8, machine: u16 },
    /// No multiboot2 header in the first 32 KiB: GRUB cannot boot it.
    NoMultiboot2,
    /// No `routerd` note in the first 32 KiB: not a routerd firmware (or
    /// one older than slots).
    NoNote,
    /// A note of a layout this software does not know.
    NoteFormat(u32),
}

impl core::fmt::Display for NotFirmware {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NotFirmware::TooShort(n) => write!(f, "{n} bytes is too short for an ELF file"),
            NotFirmware::NotElf => f.write_str("not an ELF file (no \\x7fELF at the start)"),
            NotFirmware::WrongKind { class, data, machine } => {
                write!(f, "not a 64-bit little-endian x86-64 ELF (class {class}, data {data}, machine {machine})")
            }
            NotFirmware::NoMultiboot2 => f.write_str("no multiboot2 header in the first 32 KiB: GRUB could not boot it"),
            NotFirmware::NoNote => f.write_str("no routerd note in the first 32 KiB: not a routerd firmware (or one too old for slots)"),
            NotFirmware::NoteFormat(v) => write!(f, "its routerd note has format {v}, this software knows {NOTE_FORMAT}"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Checks `head` (the first bytes of a file or slot; [`HEAD`] is enough)
/// and returns the firmware's identity.
pub fn inspect(head: &[u8]) -> Result<FirmwareIdentity, NotFirmware> {
    let head = head.get(..HEAD).unwrap_or(head);
    if head.len() < 64 {
        return Err(NotFirmware::TooShort(head.len()));
    }
    if head.get(..4) != Some(&b"\x7fELF"[..]) {
        return Err(NotFirmware::NotElf);
    }
    let (class, data, machine) = (head.get(4).copied().unwrap_or(0), head.get(5).copied().unwrap_or(0), u16_at(head, 18).unwrap_or(0));
    if class != 2 || data != 1 || machine != 62 {
        return Err(NotFirmware::WrongKind { class, data, machine });
    }
    if !has_multiboot2(head) {
        return Err(NotFirmware::NoMultiboot2);
    }
    let desc = find_note(head).ok_or(NotFirmware::NoNote)?;
    parse_desc(desc)
}

/// A multiboot2 header: magic, architecture 0 (i386), a length of at least
/// 16, and the checksum.
fn has_multiboot2(head: &[u8]) -> bool {
    (0..head.len().saturating_sub(16)).step_by(8).any(|at| {
        let word = |i: usize| u32_at(head, at + 4 * i).unwrap_or(0);
        word(0) == MULTIBOOT2_MAGIC
            && word(1) == 0
            && word(2) >= 16
            && word(0).wrapping_add(word(1)).wrapping_add(word(2)).wrapping_add(word(3)) == 0
    })
}

/// The routerd note's description, from the `PT_NOTE` segments the
/// program headers list inside `head`.
fn find_note(head: &[u8]) -> Option<&[u8]> {
    let phoff = usize::try_from(u64_at(head, 32)?).ok()?;
    let phentsize = usize::from(u16_at(head, 54)?);
    let phnum = usize::from(u16_at(head, 56)?);
    if phentsize < 56 {
        return None;
    }
    (0..phnum.min(64)).find_map(|i| {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(head, ph)? != 4 {
            return None; // not PT_NOTE
        }
        let off = usize::try_from(u64_at(head, ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(head, ph + 32)?).ok()?;
        notes(head.get(off..off.checked_add(size)?)?)
    })
}

/// Walks the notes of one segment (4-byte aligned entries).
fn notes(mut seg: &[u8]) -> Option<&[u8]> {
    while seg.len() >= 12 {
        let namesz = usize::try_from(u32_at(seg, 0)?).ok()?;
        let descsz = usize::try_from(u32_at(seg, 4)?).ok()?;
        let kind = u32_at(seg, 8)?;
        let name_end = 12usize.checked_add(namesz)?;
        let desc_at = name_end.checked_add(3)? & !3;
        let desc_end = desc_at.checked_add(descsz)?;
        let next = desc_end.checked_add(3)? & !3;
        if seg.get(12..name_end) == Some(&NOTE_NAME[..]) && kind == NOTE_TYPE && descsz == NOTE_DESC {
            return seg.get(desc_at..desc_end);
        }
        seg = seg.get(next..)?;
    }
    None
}

/// The identity in a note description (a firmware reads its own note
/// with this).
pub fn parse_desc(d: &[u8]) -> Result<FirmwareIdentity, NotFirmware> {
    let format = u32_at(d, 0).unwrap_or(0);
    if format != NOTE_FORMAT {
        return Err(NotFirmware::NoteFormat(format));
    }
    let field = |at: usize, len: usize| {
        let raw = d.get(at..at + len).unwrap_or(&[]);
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        core::str::from_utf8(raw.get(..end).unwrap_or(&[])).unwrap_or("?")
    };
    Ok(FirmwareIdentity {
        version: text(field(VERSION_AT, VERSION_LEN)),
        build: text(field(BUILD_AT, BUILD_LEN)),
        flags: u32_at(d, 4).unwrap_or(0),
    })
}

/// The note's description for `version`, `build` and `flags` (what the
/// image's build puts in its `.note.routerd`; texts longer than their
/// field are cut).
pub const fn note_desc(version: &str, build: &str, flags: u32) -> [u8; NOTE_DESC] {
    let mut d = [0u8; NOTE_DESC];
    let f = NOTE_FORMAT.to_le_bytes();
    let g = flags.to_le_bytes();
    let mut i = 0;
    while i < 4 {
        d[i] = f[i];
        d[4 + i] = g[i];
        i += 1;
    }
    let v = version.as_bytes();
    let mut i = 0;
    while i < v.len() && i < VERSION_LEN {
        d[VERSION_AT + i] = v[i];
        i += 1;
    }
    let b = build.as_bytes();
    let mut i = 0;
    while i < b.len() && i < BUILD_LEN {
        d[BUILD_AT + i] = b[i];
        i += 1;
    }
    d
}

/// Rewrites the identity of the routerd note inside a whole firmware file
/// (in place; false when there is none). The upgrade tests make a "newer
/// build" and a never-confirming test build of one firmware this way.
pub fn restamp(file: &mut [u8], version: &str, build: &str, flags: u32) -> bool {
    let Some(desc) = find_note(file.get(..HEAD).unwrap_or(file)) else { return false };
    // The description is a sub-slice of `file`: find its offset.
    let at = desc.as_ptr() as usize - file.as_ptr() as usize;
    let new = note_desc(version, build, flags);
    match file.get_mut(at..at + NOTE_DESC) {
        Some(d) => {
            d.copy_from_slice(&new);
            true
        }
        None => false,
    }
}

/// GRUB's environment block's size (its fixed 1 KiB).
pub const ENV_BYTES: usize = 1024;
/// The sector the firmware rewrites: all of routerd's variables fit in it.
pub const ENV_SECTOR_BYTES: usize = 512;
/// The block's first line.
pub const ENV_SIGNATURE: &[u8] = b"# GRUB Environment Block\n";

/// A firmware slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// `A` or `B`.
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    /// `A` or `B`.
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
    /// 0 for A, 1 for B.
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl core::fmt::Display for Slot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "slot {}", self.letter())
    }
}

/// GRUB's environment block, parsed: routerd's four variables and the
/// rest kept as it was.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BootEnv {
    pub slot: Option<Slot>,
    pub trial: Option<Slot>,
    pub tries: u8,
    pub failed: Option<Slot>,
    /// Other `name=value` lines, kept in order.
    pub others: heapless::Vec<Text<96>, 8>,
}

impl BootEnv {
    /// Reads a block (`None`: no signature).
    pub fn parse(block: &[u8]) -> Option<BootEnv> {
        let body = block.strip_prefix(ENV_SIGNATURE)?;
        let mut env = BootEnv::default();
        for line in body.split(|&b| b == b'\n') {
            if line.first().is_none_or(|&b| b == b'#') {
                continue;
            }
            let Ok(line) = core::str::from_utf8(line) else { continue };
            let Some((name, value)) = line.split_once('=') else { continue };
            match name {
                "routerd_slot" => env.slot = Slot::parse(value),
                "routerd_trial" => env.trial = Slot::parse(value),
                "routerd_tries" => env.tries = value.parse().unwrap_or(0),
                "routerd_failed" => env.failed = Slot::parse(value),
                _ => {
                    let _ = env.others.push(text(line));
                }
            }
        }
        Some(env)
    }

    /// The block as GRUB writes it: signature, lines, `#` padding.
    /// Writes the block; false when it would not fit the first sector
    /// (the firmware rewrites only that one).
    pub fn render(&self, out: &mut [u8; ENV_BYTES]) -> bool {
        out.fill(b'#');
        let mut w = Cursor { buf: out, at: 0 };
        let slot = self.slot.unwrap_or(Slot::A).letter();
        let trial = self.trial.map(Slot::letter).unwrap_or("");
        let failed = self.failed.map(Slot::letter).unwrap_or("");
        let ok = w.put(ENV_SIGNATURE)
            && self.others.iter().all(|l| w.put(l.as_bytes()) && w.put(b"\n"))
            && w.put(b"routerd_slot=")
            && w.put(slot.as_bytes())
            && w.put(b"\nrouterd_trial=")
            && w.put(trial.as_bytes())
            && w.put(b"\nrouterd_tries=")
            && w.put(&[b'0' + self.tries.min(9)])
            && w.put(b"\nrouterd_failed=")
            && w.put(failed.as_bytes())
            && w.put(b"\n");
        ok && w.at <= ENV_SECTOR_BYTES
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8; ENV_BYTES],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) -> bool {
        let Some(dst) = self.at.checked_add(bytes.len()).and_then(|end| self.buf.get_mut(self.at..end)) else { return false };
        dst.copy_from_slice(bytes);
        self.at += bytes.len();
        true
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A minimal ELF: header, one PT_NOTE program header, the note, and a
    /// multiboot2 header.
    fn elf(note_name: &[u8; 8], desc: [u8; NOTE_DESC]) -> Vec<u8> {
        let mut f = std::vec![0u8; 4096];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        let note_at = 256usize;
        let note_len = 12 + 8 + NOTE_DESC;
        f[ph + 8..ph + 16].copy_from_slice(&(note_at as u64).to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(note_len as u64).to_le_bytes());
        f[note_at..note_at + 4].copy_from_slice(&8u32.to_le_bytes());
        f[note_at + 4..note_at + 8].copy_from_slice(&(NOTE_DESC as u32).to_le_bytes());
        f[note_at + 8..note_at + 12].copy_from_slice(&NOTE_TYPE.to_le_bytes());
        f[note_at + 12..note_at + 20].copy_from_slice(note_name);
        f[note_at + 20..note_at + 20 + NOTE_DESC].copy_from_slice(&desc);
        let mb = 1024;
        let words = [MULTIBOOT2_MAGIC, 0, 24, 0u32.wrapping_sub(MULTIBOOT2_MAGIC.wrapping_add(24))];
        for (i, w) in words.iter().enumerate() {
            f[mb + 4 * i..mb + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        f
    }

    #[test]
    fn reads_the_identity_and_restamps_it() {
        let mut f = elf(NOTE_NAME, note_desc("0.1.0", "abc123def456-dirty", 0));
        let id = inspect(&f).unwrap();
        assert_eq!((id.version.as_str(), id.build.as_str(), id.flags), ("0.1.0", "abc123def456-dirty", 0));
        assert!(restamp(&mut f, "0.2.0", "newer", FirmwareIdentity::FLAG_NEVER_CONFIRMS));
        let id = inspect(&f).unwrap();
        assert_eq!((id.version.as_str(), id.build.as_str(), id.flags), ("0.2.0", "newer", 1));
    }

    #[test]
    fn refuses_what_is_not_a_routerd_firmware() {
        assert_eq!(inspect(b"hello"), Err(NotFirmware::TooShort(5)));
        assert_eq!(inspect(&[0u8; 100]), Err(NotFirmware::NotElf));
        let good = elf(NOTE_NAME, note_desc("1", "b", 0));
        let mut f = good.clone();
        f[18] = 3;
        assert!(matches!(inspect(&f), Err(NotFirmware::WrongKind { machine: 3, .. })));
        let mut f = good.clone();
        f[1024] ^= 1;
        assert_eq!(inspect(&f), Err(NotFirmware::NoMultiboot2));
        assert_eq!(inspect(&elf(b"routerX\0", note_desc("1", "b", 0))), Err(NotFirmware::NoNote));
        let mut d = note_desc("1", "b", 0);
        d[0] = 9;
        assert_eq!(inspect(&elf(NOTE_NAME, d)), Err(NotFirmware::NoteFormat(9)));
    }

    /// Every truncation and single-byte corruption of a valid file is an
    /// answer, never a panic.
    #[test]
    fn hostile_bytes_never_panic() {
        let good = elf(NOTE_NAME, note_desc("0.1.0", "x", 0));
        for n in 0..good.len().min(600) {
            let _ = inspect(&good[..n]);
        }
        for i in 0..400 {
            for v in [0u8, 0x7f, 0xff] {
                let mut f = good.clone();
                f[i] = v;
                let _ = inspect(&f);
                let _ = restamp(&mut f, "v", "b", 0);
            }
        }
    }

    #[test]
    fn boot_env_round_trips_and_keeps_other_variables() {
        let mut block = [b'#'; ENV_BYTES];
        let text = b"# GRUB Environment Block\nsaved_entry=x\nrouterd_slot=A\nrouterd_trial=B\nrouterd_tries=2\n";
        block[..text.len()].copy_from_slice(text);
        let env = BootEnv::parse(&block).unwrap();
        assert_eq!((env.slot, env.trial, env.tries, env.failed), (Some(Slot::A), Some(Slot::B), 2, None));
        let mut confirmed = env;
        confirmed.slot = Some(Slot::B);
        confirmed.trial = None;
        confirmed.tries = 0;
        let mut out = [0u8; ENV_BYTES];
        assert!(confirmed.render(&mut out));
        let want = b"# GRUB Environment Block\nsaved_entry=x\nrouterd_slot=B\nrouterd_trial=\nrouterd_tries=0\nrouterd_failed=\n";
        assert_eq!(&out[..want.len()], want);
        assert!(out[want.len()..].iter().all(|&b| b == b'#'), "GRUB's padding");
        assert_eq!(BootEnv::parse(&out), Some(confirmed));
        assert_eq!(BootEnv::parse(b"not a block"), None);
    }

    #[test]
    fn hostile_boot_env_blocks_never_panic() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..2000 {
            let mut block = [b'#'; ENV_BYTES];
            block[..ENV_SIGNATURE.len()].copy_from_slice(ENV_SIGNATURE);
            for b in block[ENV_SIGNATURE.len()..].iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"routerd_slot=AB\n#=x9";
                *b = alphabet[(x % alphabet.len() as u64) as usize];
            }
            if let Some(env) = BootEnv::parse(&block) {
                let mut out = [0u8; ENV_BYTES];
                if env.render(&mut out) {
                    assert_eq!(
                        BootEnv::parse(&out).map(|e| (e.slot, e.trial, e.tries.min(9), e.failed)),
                        Some((env.slot.or(Some(Slot::A)), env.trial, env.tries.min(9), env.failed)),
                        "what was read is written back (no slot reads as A, as GRUB's configuration does)"
                    );
                }
            }
        }
    }
}

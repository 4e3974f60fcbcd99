//! Framing: `0x00 · COBS(payload · CRC-32/ISO-HDLC(payload) as LE) · 0x00`.
//!
//! The leading delimiter ends whatever partial console text or line noise
//! came before, so a frame is never glued to garbage. Decoding is
//! incremental (byte by byte, as a polled UART delivers them) into fixed
//! buffers; a run longer than the buffer is dropped whole and counted, never
//! truncated into something that might pass the CRC. A run that is not a
//! frame is handed back as-is, so a host can show it as console text.

use crc::{Crc, CRC_32_ISO_HDLC};

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Largest payload a frame carries (a full configuration plus envelope).
pub const MAX_PAYLOAD: usize = 40 * 1024;

/// Length on the wire of a frame carrying `payload` bytes, at most.
pub const fn max_frame_len(payload: usize) -> usize {
    let body = payload + 4;
    body + body / 254 + 1 + 2
}

/// Largest frame on the wire.
pub const MAX_FRAME: usize = max_frame_len(MAX_PAYLOAD);

/// Why a frame could not be made or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The payload is larger than [`MAX_PAYLOAD`] or the output buffer.
    TooLarge,
    /// Bytes between delimiters that are not valid COBS (console text, noise).
    NotAFrame,
    /// A well-formed frame whose CRC does not match (line errors).
    BadChecksum,
    /// More bytes arrived before a delimiter than the decoder holds.
    Overflow,
}

/// Encodes `payload` as one frame into `out`; returns the frame's length.
pub fn encode(payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge);
    }
    let crc = CRC32.checksum(payload).to_le_bytes();
    let (first, rest) = out.split_first_mut().ok_or(FrameError::TooLarge)?;
    *first = 0;
    let mut enc = cobs::CobsEncoder::new(rest);
    enc.push(payload).map_err(|_| FrameError::TooLarge)?;
    enc.push(&crc).map_err(|_| FrameError::TooLarge)?;
    let n = enc.finalize();
    let end = rest.get_mut(n).ok_or(FrameError::TooLarge)?;
    *end = 0;
    Ok(n + 2)
}

/// Counters a decoder keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoderStats {
    pub frames: u64,
    pub not_a_frame: u64,
    pub bad_checksum: u64,
    pub overflow: u64,
}

/// What a delimiter completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A valid frame's payload.
    Frame(&'a [u8]),
    /// The run since the last delimiter was not a frame; the raw bytes (up
    /// to the buffer's size) so a host can show them as console text.
    Discarded(&'a [u8], FrameError),
}

/// Incremental frame decoder holding runs of up to `N` bytes.
pub struct Decoder<const N: usize> {
    raw: [u8; N],
    out: [u8; N],
    len: usize,
    overflowed: bool,
    pub stats: DecoderStats,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    pub const fn new() -> Self {
        Decoder {
            raw: [0; N],
            out: [0; N],
            len: 0,
            overflowed: false,
            stats: DecoderStats { frames: 0, not_a_frame: 0, bad_checksum: 0, overflow: 0 },
        }
    }

    /// Bytes buffered since the last delimiter.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Forgets a partial run (e.g. after a session timeout).
    pub fn reset(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }

    /// Feeds one byte; returns an event when a delimiter ends a run.
    pub fn push(&mut self, byte: u8) -> Option<Event<'_>> {
        if byte != 0 {
            match self.raw.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => self.overflowed = true,
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        let raw = self.raw.get(..len).unwrap_or(&[]);
        if core::mem::take(&mut self.overflowed) {
            self.stats.overflow += 1;
            return Some(Event::Discarded(raw, FrameError::Overflow));
        }
        if len == 0 {
            return None; // back-to-back delimiters
        }
        let n = match cobs::decode(raw, &mut self.out) {
            Ok(n) if n >= 4 => n,
            _ => {
                self.stats.not_a_frame += 1;
                return Some(Event::Discarded(raw, FrameError::NotAFrame));
            }
        };
        let Some((payload, crc)) = self.out.get(..n).map(|b| b.split_at(n - 4)) else {
            self.stats.not_a_frame += 1;
            return Some(Event::Discarded(raw, FrameError::NotAFrame));
        };
        let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if CRC32.checksum(payload) != want {
            self.stats.bad_checksum += 1;
            return Some(Event::Discarded(raw, FrameError::BadChecksum));
        }
        self.stats.frames += 1;
        Some(Event::Frame(payload))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Frames decoded, and the bytes of each bad frame with its error.
    type Decoded = (Vec<Vec<u8>>, Vec<(Vec<u8>, FrameError)>);

    fn frames_in(bytes: &[u8]) -> Decoded {
        let mut d = Decoder::<256>::new();
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for &b in bytes {
            match d.push(b) {
                Some(Event::Frame(p)) => ok.push(p.to_vec()),
                Some(Event::Discarded(r, e)) => bad.push((r.to_vec(), e)),
                None => {}
            }
        }
        (ok, bad)
    }

    #[test]
    fn round_trips_payloads_with_zeros_and_every_byte() {
        let payload: Vec<u8> = (0..=255u8).chain([0, 0, 0]).collect();
        let mut buf = [0xa5u8; 512];
        let n = encode(&payload[..200], &mut buf).unwrap();
        assert_eq!(buf[0], 0);
        assert_eq!(buf[n - 1], 0);
        assert!(!buf[1..n - 1].contains(&0), "delimiter inside a frame");
        let (ok, bad) = frames_in(&buf[..n]);
        assert_eq!(ok, [payload[..200].to_vec()]);
        assert!(bad.is_empty());
    }

    #[test]
    fn console_text_around_frames_is_handed_back_and_frames_still_decode() {
        let mut wire = b"[    0.1] INFO  routerd starting\r\nlogin? ".to_vec();
        let mut buf = [0u8; 64];
        let n = encode(b"hello", &mut buf).unwrap();
        wire.extend_from_slice(&buf[..n]);
        wire.extend_from_slice(b"more text\0");
        let (ok, bad) = frames_in(&wire);
        assert_eq!(ok, [b"hello".to_vec()]);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].0, b"[    0.1] INFO  routerd starting\r\nlogin? ".to_vec());
        assert_eq!(bad[1].0, b"more text".to_vec());
    }

    #[test]
    fn a_flipped_bit_is_a_bad_checksum_not_a_frame() {
        let mut buf = [0u8; 64];
        let n = encode(b"apply this config", &mut buf).unwrap();
        for i in 1..n - 1 {
            for bit in 0..8 {
                let mut w = buf[..n].to_vec();
                w[i] ^= 1 << bit;
                let (ok, _) = frames_in(&w);
                assert!(ok.is_empty(), "corruption at byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn an_overlong_run_is_dropped_whole_and_the_next_frame_decodes() {
        let mut wire = std::vec![b'x'; 1000];
        let mut buf = [0u8; 64];
        let n = encode(b"after", &mut buf).unwrap();
        wire.extend_from_slice(&buf[..n]);
        let mut d = Decoder::<256>::new();
        let mut got = Vec::new();
        for &b in &wire {
            if let Some(Event::Frame(p)) = d.push(b) {
                got.push(p.to_vec());
            }
        }
        assert_eq!(got, [b"after".to_vec()]);
        assert_eq!(d.stats.overflow, 1);
    }

    #[test]
    fn a_cut_frame_followed_by_a_whole_one_resynchronises() {
        let mut buf = [0u8; 64];
        let n = encode(b"first", &mut buf).unwrap();
        let mut wire = buf[..n / 2].to_vec(); // cable pulled mid-frame
        let m = encode(b"second", &mut buf).unwrap();
        wire.extend_from_slice(&buf[..m]);
        let (ok, _) = frames_in(&wire);
        assert_eq!(ok, [b"second".to_vec()]);
    }

    #[test]
    fn random_noise_never_yields_a_frame() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut d = Decoder::<512>::new();
        let mut frames = 0;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if let Some(Event::Frame(_)) = d.push((x >> 24) as u8) {
                frames += 1;
            }
        }
        // A random run passes COBS and a 32-bit CRC with odds ~2^-32 each.
        assert_eq!(frames, 0);
        assert!(d.stats.not_a_frame + d.stats.bad_checksum > 100);
    }

    #[test]
    fn encode_refuses_small_buffers_and_huge_payloads() {
        let mut small = [0u8; 8];
        assert_eq!(encode(b"too long for eight", &mut small), Err(FrameError::TooLarge));
        let big = std::vec![1u8; MAX_PAYLOAD + 1];
        let mut out = std::vec![0u8; MAX_FRAME + 64];
        assert_eq!(encode(&big, &mut out), Err(FrameError::TooLarge));
        let max = std::vec![1u8; MAX_PAYLOAD];
        assert!(encode(&max, &mut out[..MAX_FRAME]).is_ok());
    }
}

//! The one checksum helper of the crate: RFC 1071 sums (delegated to
//! `smoltcp::wire::checksum`) and RFC 1624 incremental updates.
//!
//! Incremental updates are what let the pipeline edit a header field (TTL, an
//! MSS option, an ICMP type) without touching any other byte of the packet and
//! without re-reading the payload.

use smoltcp::wire::checksum as sum;

/// The final (complemented) Internet checksum of `data`.
pub fn internet(data: &[u8]) -> u16 {
    !sum::data(data)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word of the covered data
/// changed from `old` to `new`. `HC' = ~(~HC + ~m + m')`.
///
/// `odd` says the word starts at an odd byte offset from the start of the
/// checksummed data (an MSS option can sit anywhere among the TCP options).
/// One's-complement sums commute with byte swapping (RFC 1071 §2(B)), so an
/// unaligned word is folded in byte-swapped.
pub fn adjust(checksum: u16, old: u16, new: u16, odd: bool) -> u16 {
    let (old, new) = if odd { (old.swap_bytes(), new.swap_bytes()) } else { (old, new) };
    let mut acc: u32 = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    // Two folds suffice: three 16-bit addends carry at most twice.
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(buf: &mut [u8], at: usize, v: u16) {
        buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn adjust_matches_full_recompute_even_and_odd() {
        let mut data = [0u8; 40];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        for at in [0usize, 1, 2, 7, 20, 37] {
            for new in [0u16, 1, 0x05b4, 0xffff, 0x8000] {
                let mut d = data;
                let before = internet(&d);
                let old = u16::from_be_bytes([d[at], d[at + 1]]);
                put(&mut d, at, new);
                let expect = internet(&d);
                assert_eq!(adjust(before, old, new, at % 2 == 1), expect, "at={at} new={new:#x}");
            }
        }
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // RFC 1071 style example header (checksum field zeroed): 0xb861.
        let hdr = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
        assert_eq!(internet(&hdr), 0xb861);
    }
}

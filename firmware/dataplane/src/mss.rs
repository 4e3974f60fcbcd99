//! TCP MSS clamping, in place, with an RFC 1624 incremental checksum update.
//!
//! Only the two MSS value bytes and the two checksum bytes of a SYN or SYN-ACK
//! can change; ports, sequence numbers, every other option and the payload are
//! never written. That makes "port mangling" (seed 003) impossible by
//! construction: the function has no code path that writes anywhere else.
//!
//! smoltcp's `TcpPacket` view is used for the header (`options_mut` gives the
//! option bytes in place); the option walk is ours because smoltcp's option
//! parser yields copies, not positions.

use smoltcp::wire::TcpPacket;

use crate::checksum;

const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
/// Byte offset of the options in a TCP header.
const OPTIONS_OFFSET: usize = 20;

/// What [`clamp`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    /// Not a SYN (nor SYN-ACK): left alone.
    NotSyn,
    /// SYN without an MSS option: left alone (the peer then assumes 536).
    NoOption,
    /// The MSS was already at or below the limit: never raised.
    AlreadyLower,
    /// Lowered from `from` to `to`.
    Clamped {
        /// Value before.
        from: u16,
        /// Value after.
        to: u16,
    },
    /// The header or the option list is malformed: left alone.
    Malformed,
}

/// Clamp the MSS option of the TCP segment `segment` (TCP header + payload)
/// to at most `limit`.
pub fn clamp(segment: &mut [u8], limit: u16) -> Clamp {
    let Ok(mut tcp) = TcpPacket::new_checked(&mut *segment) else {
        return Clamp::Malformed;
    };
    if !tcp.syn() {
        return Clamp::NotSyn;
    }
    let Some(at) = find_mss(tcp.options_mut()) else {
        return Clamp::NoOption;
    };
    let at = match at {
        Ok(at) => at,
        Err(()) => return Clamp::Malformed,
    };
    let opts = tcp.options_mut();
    let (Some(&hi), Some(&lo)) = (opts.get(at), opts.get(at + 1)) else {
        return Clamp::Malformed;
    };
    let from = u16::from_be_bytes([hi, lo]);
    if from <= limit {
        return Clamp::AlreadyLower;
    }
    let to = limit;
    if let Some(v) = opts.get_mut(at..at + 2) {
        v.copy_from_slice(&to.to_be_bytes());
    }
    let odd = (OPTIONS_OFFSET + at) % 2 == 1;
    let old_sum = tcp.checksum();
    tcp.set_checksum(checksum::adjust(old_sum, from, to, odd));
    Clamp::Clamped { from, to }
}

/// Position of the MSS value inside `opts`: `None` when there is no MSS
/// option, `Some(Err)` when the option list is malformed before it is found.
fn find_mss(opts: &[u8]) -> Option<Result<usize, ()>> {
    let mut i = 0usize;
    while let Some(&kind) = opts.get(i) {
        match kind {
            OPT_END => return None,
            OPT_NOP => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else {
                    return Some(Err(()));
                };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return Some(Err(()));
                }
                if kind == OPT_MSS {
                    return if len == 4 { Some(Ok(i + 2)) } else { Some(Err(())) };
                }
                i += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A SYN from 10.0.0.5:40000 to 10.0.0.9:443 with the given options.
    fn syn(options: &[u8], flags: u8) -> Vec<u8> {
        let hl = 20 + options.len();
        assert_eq!(hl % 4, 0);
        let mut t = std::vec![0u8; hl];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&443u16.to_be_bytes());
        t[4..8].copy_from_slice(&0x01020304u32.to_be_bytes());
        t[12] = ((hl / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t[20..].copy_from_slice(options);
        fix_checksum(&mut t);
        t
    }

    const SRC: [u8; 4] = [10, 0, 0, 5];
    const DST: [u8; 4] = [10, 0, 0, 9];

    fn fix_checksum(t: &mut [u8]) {
        t[16] = 0;
        t[17] = 0;
        let c = etherparse::TcpHeader::from_slice(t).unwrap().0.calc_checksum_ipv4_raw(SRC, DST, &t[(t[12] >> 4) as usize * 4..]).unwrap();
        t[16..18].copy_from_slice(&c.to_be_bytes());
    }

    fn checksum_ok(t: &[u8]) -> bool {
        let (h, payload) = etherparse::TcpHeader::from_slice(t).unwrap();
        h.calc_checksum_ipv4_raw(SRC, DST, payload).unwrap() == h.checksum
    }

    fn mss_of(t: &[u8]) -> Option<u16> {
        let (h, _) = etherparse::TcpHeader::from_slice(t).unwrap();
        h.options_iterator().find_map(|o| match o {
            Ok(etherparse::TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
            _ => None,
        })
    }

    fn assert_only_mss_and_checksum_changed(before: &[u8], after: &[u8], mss_at: usize) {
        assert_eq!(before.len(), after.len());
        for (i, (a, b)) in before.iter().zip(after).enumerate() {
            if i == 16 || i == 17 || i == mss_at || i == mss_at + 1 {
                continue;
            }
            assert_eq!(a, b, "byte {i} changed");
        }
    }

    #[test]
    fn clamps_mss_first_option() {
        let before = syn(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2], 0x02);
        let mut t = before.clone();
        assert_eq!(clamp(&mut t, 1380), Clamp::Clamped { from: 1460, to: 1380 });
        assert_eq!(mss_of(&t), Some(1380));
        assert!(checksum_ok(&t));
        assert_only_mss_and_checksum_changed(&before, &t, 22);
    }

    #[test]
    fn clamps_syn_ack_and_option_last_at_odd_offset() {
        // NOP, WS(3 bytes), SACK-perm(2), timestamps(10), NOP, NOP, NOP, MSS last at offset 19+.
        let opts = [1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 1, 2, 4, 0x23, 0x28, 0];
        // MSS kind at options index 19 -> value at 21 (odd header offset 41).
        let before = syn(&opts, 0x12);
        let mut t = before.clone();
        assert_eq!(clamp(&mut t, 1330), Clamp::Clamped { from: 9000, to: 1330 });
        assert_eq!(mss_of(&t), Some(1330));
        assert!(checksum_ok(&t));
        assert_only_mss_and_checksum_changed(&before, &t, 20 + 21);
    }

    #[test]
    fn never_raises() {
        let before = syn(&[2, 4, 0x04, 0x00, 1, 1, 1, 0], 0x02);
        let mut t = before.clone();
        assert_eq!(clamp(&mut t, 1380), Clamp::AlreadyLower);
        assert_eq!(t, before);
        let mut t = before.clone();
        assert_eq!(clamp(&mut t, 1024), Clamp::AlreadyLower);
        assert_eq!(t, before);
    }

    #[test]
    fn leaves_non_syn_and_optionless_alone() {
        let before = syn(&[2, 4, 0x05, 0xb4], 0x10);
        let mut t = before.clone();
        assert_eq!(clamp(&mut t, 1000), Clamp::NotSyn);
        assert_eq!(t, before);
        let before = syn(&[], 0x02);
        let mut t = before.clone();
        assert_eq!(clamp(&mut t, 1000), Clamp::NoOption);
        assert_eq!(t, before);
        // End-of-list before an MSS-looking byte pattern.
        let before = syn(&[0, 2, 4, 5], 0x02);
        let mut t = before.clone();
        assert_eq!(clamp(&mut t, 1000), Clamp::NoOption);
    }

    #[test]
    fn malformed_options_untouched() {
        for opts in [[8u8, 0, 2, 4], [8, 9, 2, 4], [2, 3, 5, 0], [1, 1, 1, 2]] {
            let before = syn(&opts, 0x02);
            let mut t = before.clone();
            assert_eq!(clamp(&mut t, 1000), Clamp::Malformed, "{opts:?}");
            assert_eq!(t, before);
        }
        // Data offset pointing past the buffer.
        let mut t = syn(&[], 0x02);
        t[12] = 0xf0;
        assert_eq!(clamp(&mut t, 1000), Clamp::Malformed);
        assert_eq!(clamp(&mut [0u8; 10], 1000), Clamp::Malformed);
    }

    #[test]
    fn payload_untouched() {
        let mut before = syn(&[2, 4, 0x05, 0xb4], 0x02);
        before.extend_from_slice(b"hello");
        fix_checksum(&mut before);
        let mut t = before.clone();
        assert!(matches!(clamp(&mut t, 1200), Clamp::Clamped { .. }));
        assert!(checksum_ok(&t));
        assert_only_mss_and_checksum_changed(&before, &t, 22);
    }
}

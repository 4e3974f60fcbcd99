//! Fixed maximum sizes of a configuration, and the largest postcard encoding
//! they allow.
//!
//! Every list and string in a `Config` has a capacity fixed here, so the
//! image holds a configuration without a heap and the serial protocol can
//! size its buffers. `WireMax` computes, at compile time, the longest
//! postcard encoding each type can produce; `CONFIG_WIRE_MAX` is the bound the
//! protocol relies on, and a compile-time assertion keeps the two honest.
//! A test encodes a maximal configuration and checks it hits the bound exactly,
//! so the hand-written per-type sums cannot drift from the real layout.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Bytes in a name (port, tunnel, peer, segment, device, side, key slot).
pub const MAX_NAME_LEN: usize = 24;
/// Bytes in a peer endpoint's DNS host name (the DNS limit).
pub const MAX_HOST_LEN: usize = 253;
/// Physical ports (`lan0`, `wan0`, `lan1`, …).
pub const MAX_PORTS: usize = 8;
/// WireGuard interfaces.
pub const MAX_TUNNELS: usize = 4;
/// WireGuard peers over all interfaces.
pub const MAX_PEERS: usize = 16;
/// Allowed-IP prefixes of one peer.
pub const MAX_ALLOWED_IPS: usize = 16;
/// Claims (moved /32 addresses) in the shared claim list.
pub const MAX_CLAIMS: usize = 64;
/// VXLAN segments.
pub const MAX_SEGMENTS: usize = 8;
/// Remote VTEPs of one segment.
pub const MAX_VTEPS: usize = 8;
/// DNS servers in `[dns] servers` (tried in order).
pub const MAX_DNS_SERVERS: usize = 3;
/// SNAT rules, `[[nat]]`.
pub const MAX_NAT: usize = 4;
/// Firewall rules, `[[firewall.rules]]`.
pub const MAX_FIREWALL_RULES: usize = 16;
/// Firewall zone-pair policies, `[[firewall.policy]]`.
pub const MAX_FIREWALL_POLICIES: usize = 8;

/// BGP peers, `[[bgp.peers]]`.
pub const MAX_BGP_PEERS: usize = 16;

/// The longest postcard encoding of a `Config`: what the serial protocol must
/// be able to carry in one apply. Asserted below against the computed bound.
/// (21 KiB since `[bgp]`: 16 peers add under 500 bytes.)
pub const CONFIG_WIRE_MAX: usize = 21 * 1024;

const _: () = assert!(<crate::Config as WireMax>::WIRE_MAX <= CONFIG_WIRE_MAX);
// Lengths up to 127 take one varint byte; the sums below assume so for lists.
const _: () = assert!(MAX_NAME_LEN < 128 && MAX_CLAIMS < 128 && MAX_PEERS < 128);

/// The longest postcard encoding of a value of this type.
pub trait WireMax {
    const WIRE_MAX: usize;
}

/// Bytes of a postcard varint holding at most `max`.
pub const fn varint_len(max: u64) -> usize {
    let mut n = 1;
    let mut v = max >> 7;
    while v != 0 {
        n += 1;
        v >>= 7;
    }
    n
}

pub const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

macro_rules! fixed {
    ($($t:ty => $n:expr),* $(,)?) => {
        $(impl WireMax for $t { const WIRE_MAX: usize = $n; })*
    };
}

fixed! {
    u8 => 1,
    bool => 1,
    u16 => varint_len(u16::MAX as u64),
    u32 => varint_len(u32::MAX as u64),
    Ipv4Addr => 4,
    Ipv6Addr => 16,
}

impl<const N: usize> WireMax for [u8; N] {
    const WIRE_MAX: usize = N;
}

impl<T: WireMax> WireMax for Option<T> {
    const WIRE_MAX: usize = 1 + T::WIRE_MAX;
}

impl<T: WireMax, const N: usize> WireMax for heapless::Vec<T, N> {
    const WIRE_MAX: usize = varint_len(N as u64) + N * T::WIRE_MAX;
}

impl<const N: usize> WireMax for heapless::String<N> {
    const WIRE_MAX: usize = varint_len(N as u64) + N;
}

/// `impl WireMax for T` as the sum of its fields' types, in declaration order.
macro_rules! wire_max_struct {
    ($t:ty { $($f:ty),* $(,)? }) => {
        impl $crate::limits::WireMax for $t {
            const WIRE_MAX: usize = 0 $(+ <$f as $crate::limits::WireMax>::WIRE_MAX)*;
        }
    };
}

/// `impl WireMax for T` for an enum: the discriminant plus its largest variant
/// (each variant given as the tuple of its payload types; `()` for none).
macro_rules! wire_max_enum {
    ($t:ty { $( ( $($f:ty),* ) ),* $(,)? }) => {
        impl $crate::limits::WireMax for $t {
            const WIRE_MAX: usize = {
                let mut m = 0;
                let mut variants = 0u64;
                $(
                    m = $crate::limits::max(m, 0 $(+ <$f as $crate::limits::WireMax>::WIRE_MAX)*);
                    variants += 1;
                )*
                $crate::limits::varint_len(variants - 1) + m
            };
        }
    };
}

pub(crate) use {wire_max_enum, wire_max_struct};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(u16::MAX as u64), 3);
        assert_eq!(varint_len(u32::MAX as u64), 5);
    }

    #[test]
    fn primitive_bounds_match_postcard() {
        let mut buf = [0xa5u8; 64];
        assert_eq!(postcard::to_slice(&u16::MAX, &mut buf).unwrap().len(), u16::WIRE_MAX);
        assert_eq!(postcard::to_slice(&u32::MAX, &mut buf).unwrap().len(), u32::WIRE_MAX);
        let v6 = Ipv6Addr::LOCALHOST;
        assert_eq!(postcard::to_slice(&v6, &mut buf).unwrap().len(), Ipv6Addr::WIRE_MAX);
        let v4 = Ipv4Addr::LOCALHOST;
        assert_eq!(postcard::to_slice(&v4, &mut buf).unwrap().len(), Ipv4Addr::WIRE_MAX);
    }
}

//! Cryptokey routing: which peer owns which inner addresses.
//!
//! On send, the inner destination picks the peer (longest prefix wins); on
//! receive, the inner source must map back to the peer whose key decrypted
//! it. The table has a fixed capacity `N` per address family; entries are
//! kept ordered by prefix length, longest first, so the first match is the
//! longest. Lookup is a linear scan: at the sizes a router box uses (tens of
//! routes) that is a few nanoseconds and needs no allocation.
//!
//! When full, `insert` refuses with [`ConfigError::RoutesFull`]; existing
//! routes are never evicted. Inserting a prefix that exists moves it to the
//! new peer, as `wg set ... allowed-ips` does.

use core::net::IpAddr;

use crate::error::ConfigError;
use crate::PeerId;

#[derive(Clone, Copy, Debug)]
struct Entry<A> {
    net: A,
    mask: A,
    len: u8,
    peer: PeerId,
}

/// The allowed-IPs table with room for `N` IPv4 and `N` IPv6 prefixes.
#[derive(Clone, Debug)]
pub struct AllowedIps<const N: usize> {
    v4: [Entry<u32>; N],
    v4_len: usize,
    v6: [Entry<u128>; N],
    v6_len: usize,
}

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn insert_sorted<A: Copy + PartialEq>(table: &mut [Entry<A>], used: &mut usize, e: Entry<A>) -> Result<(), ConfigError> {
    let live = table.get_mut(..*used).ok_or(ConfigError::RoutesFull)?;
    if let Some(existing) = live.iter_mut().find(|x| x.len == e.len && x.net == e.net) {
        existing.peer = e.peer;
        return Ok(());
    }
    let pos = live.iter().position(|x| x.len < e.len).unwrap_or(*used);
    if *used >= table.len() {
        return Err(ConfigError::RoutesFull);
    }
    let end = *used + 1;
    if let Some(s) = table.get_mut(pos..end) {
        s.rotate_right(1);
        if let Some(first) = s.first_mut() {
            *first = e;
        }
    }
    *used = end;
    Ok(())
}

fn retain<A: Copy>(table: &mut [Entry<A>], used: &mut usize, keep: impl Fn(&Entry<A>) -> bool) {
    let mut w = 0;
    for r in 0..*used {
        if let Some(e) = table.get(r).copied() {
            if keep(&e) {
                if let Some(slot) = table.get_mut(w) {
                    *slot = e;
                }
                w += 1;
            }
        }
    }
    *used = w;
}

impl<const N: usize> Default for AllowedIps<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> AllowedIps<N> {
    pub const fn new() -> Self {
        AllowedIps {
            v4: [Entry { net: 0, mask: 0, len: 0, peer: PeerId(0) }; N],
            v4_len: 0,
            v6: [Entry { net: 0, mask: 0, len: 0, peer: PeerId(0) }; N],
            v6_len: 0,
        }
    }

    /// Route `addr/len` to `peer`. Host bits of `addr` are ignored.
    pub fn insert(&mut self, addr: IpAddr, len: u8, peer: PeerId) -> Result<(), ConfigError> {
        match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Err(ConfigError::BadPrefix);
                }
                let mask = mask4(len);
                let e = Entry { net: u32::from(a) & mask, mask, len, peer };
                insert_sorted(&mut self.v4, &mut self.v4_len, e)
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return Err(ConfigError::BadPrefix);
                }
                let mask = mask6(len);
                let e = Entry { net: u128::from(a) & mask, mask, len, peer };
                insert_sorted(&mut self.v6, &mut self.v6_len, e)
            }
        }
    }

    /// Remove `addr/len` if present.
    pub fn remove(&mut self, addr: IpAddr, len: u8) {
        match addr {
            IpAddr::V4(a) => {
                let net = u32::from(a) & mask4(len);
                retain(&mut self.v4, &mut self.v4_len, |e| !(e.len == len && e.net == net));
            }
            IpAddr::V6(a) => {
                let net = u128::from(a) & mask6(len);
                retain(&mut self.v6, &mut self.v6_len, |e| !(e.len == len && e.net == net));
            }
        }
    }

    /// Remove every route of `peer`.
    pub fn remove_peer(&mut self, peer: PeerId) {
        retain(&mut self.v4, &mut self.v4_len, |e| e.peer != peer);
        retain(&mut self.v6, &mut self.v6_len, |e| e.peer != peer);
    }

    #[inline]
    pub fn lookup_v4(&self, addr: u32) -> Option<PeerId> {
        self.v4.get(..self.v4_len)?.iter().find(|e| addr & e.mask == e.net).map(|e| e.peer)
    }

    #[inline]
    pub fn lookup_v6(&self, addr: u128) -> Option<PeerId> {
        self.v6.get(..self.v6_len)?.iter().find(|e| addr & e.mask == e.net).map(|e| e.peer)
    }

    pub fn lookup(&self, addr: IpAddr) -> Option<PeerId> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(u32::from(a)),
            IpAddr::V6(a) => self.lookup_v6(u128::from(a)),
        }
    }

    /// The prefixes routed to `peer`, IPv4 first.
    pub fn iter_peer(&self, peer: PeerId) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
        let v4 = self.v4.get(..self.v4_len).unwrap_or(&[]).iter();
        let v6 = self.v6.get(..self.v6_len).unwrap_or(&[]).iter();
        v4.filter(move |e| e.peer == peer)
            .map(|e| (IpAddr::V4(e.net.into()), e.len))
            .chain(v6.filter(move |e| e.peer == peer).map(|e| (IpAddr::V6(e.net.into()), e.len)))
    }

    pub fn len(&self) -> usize {
        self.v4_len + self.v6_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn longest_prefix_wins_whatever_the_insert_order() {
        let mut t = AllowedIps::<8>::new();
        t.insert(v4("10.0.0.0"), 8, PeerId(1)).unwrap();
        t.insert(v4("10.1.2.3"), 32, PeerId(3)).unwrap();
        t.insert(v4("0.0.0.0"), 0, PeerId(0)).unwrap();
        t.insert(v4("10.1.0.0"), 16, PeerId(2)).unwrap();
        assert_eq!(t.lookup(v4("10.1.2.3")), Some(PeerId(3)));
        assert_eq!(t.lookup(v4("10.1.2.4")), Some(PeerId(2)));
        assert_eq!(t.lookup(v4("10.2.0.1")), Some(PeerId(1)));
        assert_eq!(t.lookup(v4("192.0.2.1")), Some(PeerId(0)));
        t.remove(v4("0.0.0.0"), 0);
        assert_eq!(t.lookup(v4("192.0.2.1")), None);
    }

    #[test]
    fn host_bits_ignored_and_reinsert_moves() {
        let mut t = AllowedIps::<4>::new();
        t.insert(v4("192.168.7.99"), 24, PeerId(1)).unwrap();
        assert_eq!(t.lookup(v4("192.168.7.1")), Some(PeerId(1)));
        t.insert(v4("192.168.7.0"), 24, PeerId(2)).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(v4("192.168.7.1")), Some(PeerId(2)));
        let routes: std::vec::Vec<_> = t.iter_peer(PeerId(2)).collect();
        assert_eq!(routes, [(v4("192.168.7.0"), 24)]);
    }

    #[test]
    fn full_table_refuses_and_keeps_entries() {
        let mut t = AllowedIps::<2>::new();
        t.insert(v4("10.0.0.1"), 32, PeerId(1)).unwrap();
        t.insert(v4("10.0.0.2"), 32, PeerId(2)).unwrap();
        assert_eq!(t.insert(v4("10.0.0.3"), 32, PeerId(3)), Err(ConfigError::RoutesFull));
        assert_eq!(t.lookup(v4("10.0.0.1")), Some(PeerId(1)));
        assert_eq!(t.lookup(v4("10.0.0.3")), None);
        assert_eq!(t.insert(v4("10.0.0.3"), 33, PeerId(3)), Err(ConfigError::BadPrefix));
        t.remove_peer(PeerId(1));
        assert_eq!(t.lookup(v4("10.0.0.1")), None);
        t.insert(v4("10.0.0.3"), 32, PeerId(3)).unwrap();
    }

    #[test]
    fn ipv6_prefixes() {
        let mut t = AllowedIps::<4>::new();
        let a: Ipv6Addr = "fd00::".parse().unwrap();
        t.insert(IpAddr::V6(a), 8, PeerId(1)).unwrap();
        t.insert(IpAddr::V6("fd00:1::".parse().unwrap()), 32, PeerId(2)).unwrap();
        t.insert(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0, PeerId(3)).unwrap();
        let q = |s: &str| t.lookup(IpAddr::V6(s.parse().unwrap()));
        assert_eq!(q("fd00:1::5"), Some(PeerId(2)));
        assert_eq!(q("fd12::5"), Some(PeerId(1)));
        assert_eq!(q("2001:db8::1"), Some(PeerId(3)));
        assert_eq!(t.insert(IpAddr::V6(a), 129, PeerId(1)), Err(ConfigError::BadPrefix));
        // IPv4 lookups never match IPv6 routes.
        assert_eq!(t.lookup(v4("0.0.0.1")), None);
    }
}

//! IPv6 peer endpoints behind synthetic IPv4 addresses.
//!
//! The dataplane's underlay is IPv4, but the Linux socket is dual-stack. Each
//! IPv6 address a peer uses (configured, resolved, or seen as the source of a
//! datagram) gets a synthetic address in `240.66.0.0/16` (class E, which no
//! host or router uses); the shim writes that address into the frames the
//! dataplane sees and maps it back when the dataplane sends to it. Ports are
//! carried unchanged. WireGuard roaming therefore works across families.
//!
//! Capacity: [`CAPACITY`] addresses. Configured ones are pinned. When full, a
//! new address replaces the least recently used unpinned one; a peer whose
//! mapping was replaced is reached again as soon as it sends (WireGuard
//! roams to the new synthetic address), and a stray datagram sent to a
//! reused address meanwhile fails authentication at the other end. If every
//! slot is pinned the datagram is dropped (counted by the shim).

use core::net::{Ipv4Addr, Ipv6Addr};

/// Slots in the table.
pub const CAPACITY: usize = 64;
const NET: [u8; 2] = [240, 66];

#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: Ipv6Addr,
    pinned: bool,
    last_used: u64,
}

/// The IPv6 ⇄ synthetic IPv4 table.
#[derive(Debug)]
pub struct V6Map {
    slots: [Option<Entry>; CAPACITY],
    clock: u64,
}

impl Default for V6Map {
    fn default() -> Self {
        V6Map { slots: [None; CAPACITY], clock: 0 }
    }
}

fn synthetic(slot: usize) -> Ipv4Addr {
    // Slot 0 → 240.66.0.1: avoid the network address.
    let n = (slot as u16).wrapping_add(1).to_be_bytes();
    Ipv4Addr::new(NET[0], NET[1], n[0], n[1])
}

/// True for an address of the synthetic range.
pub fn is_synthetic(a: Ipv4Addr) -> bool {
    a.octets()[..2] == NET
}

impl V6Map {
    /// The synthetic IPv4 address for `addr`, allocating (and, if `pin`,
    /// pinning) a slot. `None` when every slot is pinned.
    pub fn to_v4(&mut self, addr: Ipv6Addr, pin: bool) -> Option<Ipv4Addr> {
        self.clock = self.clock.wrapping_add(1);
        let now = self.clock;
        if let Some((i, e)) = self.slots.iter_mut().enumerate().find_map(|(i, s)| s.as_mut().filter(|e| e.addr == addr).map(|e| (i, e))) {
            e.last_used = now;
            e.pinned |= pin;
            return Some(synthetic(i));
        }
        let slot = match self.slots.iter().position(|s| s.is_none()) {
            Some(free) => free,
            None => self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().filter(|e| !e.pinned).map(|e| (i, e.last_used)))
                .min_by_key(|&(_, t)| t)
                .map(|(i, _)| i)?,
        };
        let entry = self.slots.get_mut(slot)?;
        *entry = Some(Entry { addr, pinned: pin, last_used: now });
        Some(synthetic(slot))
    }

    /// The IPv6 address behind a synthetic one (touching it).
    pub fn to_v6(&mut self, a: Ipv4Addr) -> Option<Ipv6Addr> {
        if !is_synthetic(a) {
            return None;
        }
        let o = a.octets();
        let n = usize::from(u16::from_be_bytes([o[2], o[3]])).checked_sub(1)?;
        self.clock = self.clock.wrapping_add(1);
        let now = self.clock;
        let e = self.slots.get_mut(n)?.as_mut()?;
        e.last_used = now;
        Some(e.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)
    }

    #[test]
    fn maps_both_ways_and_is_stable() {
        let mut m = V6Map::default();
        let a = m.to_v4(v6(1), true).unwrap();
        let b = m.to_v4(v6(2), false).unwrap();
        assert_eq!(a, Ipv4Addr::new(240, 66, 0, 1));
        assert_ne!(a, b);
        assert_eq!(m.to_v4(v6(1), false), Some(a));
        assert_eq!(m.to_v6(a), Some(v6(1)));
        assert_eq!(m.to_v6(b), Some(v6(2)));
        assert_eq!(m.to_v6(Ipv4Addr::new(240, 66, 0, 0)), None);
        assert_eq!(m.to_v6(Ipv4Addr::new(240, 66, 1, 0)), None, "unused slot");
        assert_eq!(m.to_v6(Ipv4Addr::new(10, 0, 0, 1)), None);
        assert!(is_synthetic(b) && !is_synthetic(Ipv4Addr::new(240, 67, 0, 1)));
    }

    #[test]
    fn full_table_replaces_least_recently_used_unpinned() {
        let mut m = V6Map::default();
        let pinned = m.to_v4(v6(0), true).unwrap();
        for i in 1..CAPACITY as u16 {
            m.to_v4(v6(i), false).unwrap();
        }
        // Touch everything but v6(2) (and the pinned one): v6(2) is now the
        // least recently used unpinned entry.
        let one = m.to_v4(v6(1), false).unwrap();
        let two = Ipv4Addr::new(240, 66, 0, 3);
        for i in 3..CAPACITY as u16 {
            m.to_v4(v6(i), false).unwrap();
        }
        let new = m.to_v4(v6(1000), false).unwrap();
        assert_eq!(new, two, "the least recently used slot is reused");
        assert_eq!(m.to_v6(two), Some(v6(1000)));
        assert_eq!(m.to_v6(one), Some(v6(1)));
        assert_eq!(m.to_v6(pinned), Some(v6(0)));
    }

    #[test]
    fn all_pinned_refuses() {
        let mut m = V6Map::default();
        for i in 0..CAPACITY as u16 {
            m.to_v4(v6(i), true).unwrap();
        }
        assert_eq!(m.to_v4(v6(999), false), None);
        assert_eq!(m.to_v4(v6(5), false), Some(Ipv4Addr::new(240, 66, 0, 6)));
    }
}

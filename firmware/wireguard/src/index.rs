//! The receiver-index table: our random 32-bit session indices → (peer, slot).
//!
//! Every transport message, response and cookie reply names one of our
//! indices; this table finds its peer in O(1). Indices are random (so they say
//! nothing about the peer to an observer) and the table is open addressing
//! with linear probing over `8 * PEERS` slots. A peer holds at most four live
//! indices (a pending initiation plus the previous, current and next
//! sessions), so the load factor never exceeds 1/2 and probes stay short even
//! when an attacker chooses the indices it asks about. Deletion shifts
//! following entries back, so no tombstones accumulate.

use crate::PeerId;

/// Live indices per peer the table is sized for (two free slots per index).
pub const SLOTS_PER_PEER: usize = 8;

/// What an index refers to within its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    /// Our sender index of a pending initiation.
    Handshake,
    /// A session (previous/current/next are told apart by the peer).
    Session,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub index: u32,
    pub peer: PeerId,
    pub kind: IndexKind,
}

#[derive(Clone, Debug)]
pub struct IndexTable<const PEERS: usize> {
    slots: [[Option<IndexEntry>; SLOTS_PER_PEER]; PEERS],
    len: usize,
}

impl<const PEERS: usize> Default for IndexTable<PEERS> {
    fn default() -> Self {
        IndexTable { slots: [[None; SLOTS_PER_PEER]; PEERS], len: 0 }
    }
}

impl<const PEERS: usize> IndexTable<PEERS> {
    const CAP: usize = PEERS * SLOTS_PER_PEER;

    /// Home slot of an index: multiply-shift maps a uniform u32 onto 0..CAP
    /// without a division.
    #[inline]
    fn home(index: u32) -> usize {
        ((u64::from(index) * Self::CAP as u64) >> 32) as usize
    }

    #[inline]
    fn slot(&self, i: usize) -> Option<IndexEntry> {
        self.slots.get(i / SLOTS_PER_PEER).and_then(|s| s.get(i % SLOTS_PER_PEER)).copied().flatten()
    }

    #[inline]
    fn slot_mut(&mut self, i: usize) -> Option<&mut Option<IndexEntry>> {
        self.slots.get_mut(i / SLOTS_PER_PEER)?.get_mut(i % SLOTS_PER_PEER)
    }

    #[inline]
    pub fn get(&self, index: u32) -> Option<IndexEntry> {
        let mut i = Self::home(index);
        for _ in 0..Self::CAP {
            match self.slot(i) {
                Some(e) if e.index == index => return Some(e),
                Some(_) => {}
                None => return None,
            }
            i += 1;
            if i == Self::CAP {
                i = 0;
            }
        }
        None
    }

    /// Insert a fresh entry. False if the index is taken or the table is full
    /// (which the per-peer budget makes impossible in practice).
    pub fn insert(&mut self, e: IndexEntry) -> bool {
        if self.len >= Self::CAP || self.get(e.index).is_some() {
            return false;
        }
        let mut i = Self::home(e.index);
        for _ in 0..Self::CAP {
            match self.slot_mut(i) {
                Some(s @ None) => {
                    *s = Some(e);
                    self.len += 1;
                    return true;
                }
                Some(Some(_)) => {}
                None => return false,
            }
            i += 1;
            if i == Self::CAP {
                i = 0;
            }
        }
        false
    }

    /// Remove `index` (if present), shifting later entries of its probe run
    /// back so lookups never stop early.
    pub fn remove(&mut self, index: u32) {
        let cap = Self::CAP;
        let mut hole = Self::home(index);
        let mut found = false;
        for _ in 0..cap {
            match self.slot(hole) {
                Some(e) if e.index == index => {
                    found = true;
                    break;
                }
                Some(_) => {}
                None => return,
            }
            hole = (hole + 1) % cap;
        }
        if !found {
            return;
        }
        if let Some(s) = self.slot_mut(hole) {
            *s = None;
        }
        self.len = self.len.saturating_sub(1);
        let mut j = hole;
        for _ in 0..cap {
            j = (j + 1) % cap;
            let Some(e) = self.slot(j) else { return };
            let home = Self::home(e.index);
            // Move e into the hole if its home is not cyclically in (hole, j].
            let dist_home = (j + cap - home) % cap;
            let dist_hole = (j + cap - hole) % cap;
            if dist_home >= dist_hole {
                if let Some(s) = self.slot_mut(hole) {
                    *s = Some(e);
                }
                if let Some(s) = self.slot_mut(j) {
                    *s = None;
                }
                hole = j;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::TestRng;
    use rand_core::RngCore;
    use std::collections::HashMap;

    fn entry(index: u32, peer: u16) -> IndexEntry {
        IndexEntry { index, peer: PeerId(peer), kind: IndexKind::Session }
    }

    #[test]
    fn insert_get_remove() {
        let mut t = IndexTable::<2>::default();
        assert!(t.insert(entry(5, 0)));
        assert!(!t.insert(entry(5, 1)), "duplicate index");
        assert_eq!(t.get(5), Some(entry(5, 0)));
        assert_eq!(t.get(6), None);
        t.remove(5);
        assert_eq!(t.get(5), None);
        assert!(t.is_empty());
    }

    #[test]
    fn colliding_home_slots_survive_deletes() {
        // Indices 0..4 all share home slot 0 in a 16-slot table.
        let mut t = IndexTable::<2>::default();
        for i in 0..4u32 {
            assert!(t.insert(entry(i, i as u16)));
        }
        t.remove(1);
        for i in [0u32, 2, 3] {
            assert_eq!(t.get(i), Some(entry(i, i as u16)));
        }
        // An entry that wrapped around the end of the table.
        let last = u32::MAX;
        assert!(t.insert(entry(last, 1)));
        assert!(t.insert(entry(last - 1, 1)));
        t.remove(last - 1);
        assert_eq!(t.get(last), Some(entry(last, 1)));
    }

    #[test]
    fn matches_a_reference_map_under_random_churn() {
        let mut rng = TestRng::new(11);
        let mut t = IndexTable::<16>::default();
        let mut reference: HashMap<u32, IndexEntry> = HashMap::new();
        for step in 0..20_000 {
            // Small index space forces collisions and clustering.
            let idx = rng.next_u32() % 512;
            if reference.len() < 64 && rng.next_u32().is_multiple_of(2) {
                let e = entry(idx, (step % 16) as u16);
                let fresh = !reference.contains_key(&idx);
                assert_eq!(t.insert(e), fresh);
                reference.entry(idx).or_insert(e);
            } else {
                t.remove(idx);
                reference.remove(&idx);
            }
            assert_eq!(t.len(), reference.len());
            if step % 97 == 0 {
                for i in 0..512u32 {
                    assert_eq!(t.get(i), reference.get(&i).copied(), "step {step} index {i}");
                }
            }
        }
    }

    #[test]
    fn full_table_refuses() {
        let mut t = IndexTable::<1>::default();
        for i in 0..SLOTS_PER_PEER as u32 {
            assert!(t.insert(entry(i * 1000, 0)));
        }
        assert!(!t.insert(entry(77, 0)));
        assert_eq!(t.get(77), None);
    }
}

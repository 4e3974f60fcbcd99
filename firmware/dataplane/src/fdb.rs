//! VXLAN forwarding database: where a MAC on a bridged segment lives.
//!
//! [`FDB_ENTRIES`] entries keyed by (segment, MAC), each either *local* (seen
//! as a source on the bridged LAN port) or *remote* (seen as the inner source
//! of a frame decapsulated from a VTEP). Entries age out `fdb_age_ms` after
//! they were last seen. *Full policy:* expired entries are reused first;
//! otherwise the new MAC is not learned (counted as `fdb_full`) and frames to
//! it are flooded — correct, only less efficient — so a MAC flood cannot
//! evict live entries.

use core::net::Ipv4Addr;

use crate::config::Mac;
use crate::time::Instant;

/// FDB capacity.
pub const FDB_ENTRIES: usize = 256;

/// Where a MAC lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// On the bridged LAN port.
    Local,
    /// Behind this VTEP.
    Remote(Ipv4Addr),
}

/// One FDB entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// Segment index.
    pub segment: u8,
    /// The MAC.
    pub mac: Mac,
    /// Where it is.
    pub location: Location,
    /// Last time a frame from it was seen.
    pub seen: Instant,
}

/// Outcome of learning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Entry created or refreshed.
    Ok,
    /// Table full of live entries: not learned.
    Full,
}

/// The FDB.
#[derive(Debug)]
pub struct Fdb {
    entries: heapless::Vec<FdbEntry, FDB_ENTRIES>,
    age_ms: u64,
}

impl Fdb {
    /// An empty table whose entries live `age_ms`.
    pub fn new(age_ms: u64) -> Fdb {
        Fdb { entries: heapless::Vec::new(), age_ms }
    }

    fn live(&self, e: &FdbEntry, now: Instant) -> bool {
        now.millis_since(e.seen) < self.age_ms
    }

    /// Record that `mac` on `segment` was seen at `location`.
    pub fn learn(&mut self, segment: u8, mac: Mac, location: Location, now: Instant) -> Learn {
        let age = self.age_ms;
        if let Some(e) = self.entries.iter_mut().find(|e| e.segment == segment && e.mac == mac) {
            e.location = location;
            e.seen = now;
            return Learn::Ok;
        }
        let entry = FdbEntry { segment, mac, location, seen: now };
        if self.entries.push(entry).is_ok() {
            return Learn::Ok;
        }
        match self.entries.iter_mut().find(|e| now.millis_since(e.seen) >= age) {
            Some(slot) => {
                *slot = entry;
                Learn::Ok
            }
            None => Learn::Full,
        }
    }

    /// Where `mac` on `segment` is, if known and not aged out.
    pub fn lookup(&self, segment: u8, mac: Mac, now: Instant) -> Option<Location> {
        self.entries.iter().find(|e| e.segment == segment && e.mac == mac).filter(|e| self.live(e, now)).map(|e| e.location)
    }

    /// Remove aged-out entries.
    pub fn expire(&mut self, now: Instant) {
        let age = self.age_ms;
        self.entries.retain(|e| now.millis_since(e.seen) < age);
    }

    /// When the next entry ages out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.seen.plus_millis(self.age_ms)).min()
    }

    /// Entries (status output, tests).
    pub fn entries(&self) -> &[FdbEntry] {
        &self.entries
    }

    /// Take an entry over from the FDB of the dataplane an apply replaces.
    pub(crate) fn carry(&mut self, e: FdbEntry) {
        if !self.entries.iter().any(|x| x.segment == e.segment && x.mac == e.mac) {
            let _ = self.entries.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u16) -> Mac {
        Mac([2, 0, 0, 0, (n >> 8) as u8, n as u8])
    }
    const VTEP: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

    #[test]
    fn learn_lookup_move_age() {
        let mut f = Fdb::new(1000);
        let t = Instant::from_millis(10);
        assert_eq!(f.learn(0, mac(1), Location::Remote(VTEP), t), Learn::Ok);
        assert_eq!(f.lookup(0, mac(1), t), Some(Location::Remote(VTEP)));
        assert_eq!(f.lookup(1, mac(1), t), None, "segments are separate");
        // The MAC moves to the local side.
        f.learn(0, mac(1), Location::Local, t);
        assert_eq!(f.lookup(0, mac(1), t), Some(Location::Local));
        assert_eq!(f.lookup(0, mac(1), t.plus_millis(1000)), None);
        assert_eq!(f.next_deadline(), Some(t.plus_millis(1000)));
        f.expire(t.plus_millis(1000));
        assert!(f.entries().is_empty());
    }

    #[test]
    fn full_keeps_live_entries_and_reuses_expired() {
        let mut f = Fdb::new(1000);
        let t = Instant::ZERO;
        for i in 0..FDB_ENTRIES as u16 {
            assert_eq!(f.learn(0, mac(i), Location::Local, t), Learn::Ok);
        }
        assert_eq!(f.learn(0, mac(9999), Location::Local, t.plus_millis(10)), Learn::Full);
        assert_eq!(f.lookup(0, mac(0), t.plus_millis(10)), Some(Location::Local));
        assert_eq!(f.learn(0, mac(9999), Location::Local, t.plus_millis(1000)), Learn::Ok);
    }
}

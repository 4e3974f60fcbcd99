//! VXLAN forwarding database: where a MAC on a bridged segment lives.
//!
//! [`FDB_ENTRIES`] entries keyed by (segment, MAC), each either *local* (seen
//! as a source on the bridged LAN port) or *remote* (seen as the inner source
//! of a frame decapsulated from a VTEP). Entries age out `fdb_age_ms` after
//! they were last seen. *Full policy:* expired entries are reused first;
//! otherwise the new MAC is not learned (counted as `fdb_full`) and frames to
//! it are flooded — correct, only less efficient — so a MAC flood cannot
//! evict live entries.
//!
//! Entries have an [`Origin`]: *learned* from the data plane (aged as
//! above) or *installed* by the control plane (BGP EVPN type-2 routes,
//! [`Fdb::set_installed`]): an installed entry points at a remote VTEP, is
//! never aged and stays until the control plane removes it
//! ([`Fdb::retain_installed`]). A frame from an installed MAC arriving on
//! the segment's LAN port turns it into a learned local entry (the host
//! moved here; EVPN then advertises it with its own route). A frame from it
//! out of a VTEP refreshes nothing: the route says where it is.

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

/// Who put an entry in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// Learned from a frame's source; ages out.
    #[default]
    Learned,
    /// Installed by the control plane (EVPN); never ages.
    Installed,
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
    /// Last time a frame from it was seen (installed: when installed).
    pub seen: Instant,
    /// Learned or installed.
    pub origin: Origin,
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
        e.origin == Origin::Installed || now.millis_since(e.seen) < self.age_ms
    }

    /// Record that `mac` on `segment` was seen at `location`.
    pub fn learn(&mut self, segment: u8, mac: Mac, location: Location, now: Instant) -> Learn {
        if let Some(e) = self.entries.iter_mut().find(|e| e.segment == segment && e.mac == mac) {
            if e.origin == Origin::Installed && location != Location::Local {
                return Learn::Ok;
            }
            e.location = location;
            e.seen = now;
            e.origin = Origin::Learned;
            return Learn::Ok;
        }
        self.insert(FdbEntry { segment, mac, location, seen: now, origin: Origin::Learned }, now)
    }

    /// Put a new entry in, reusing an aged-out learned one when full.
    fn insert(&mut self, entry: FdbEntry, now: Instant) -> Learn {
        let age = self.age_ms;
        if self.entries.push(entry).is_ok() {
            return Learn::Ok;
        }
        match self.entries.iter_mut().find(|e| e.origin == Origin::Learned && now.millis_since(e.seen) >= age) {
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

    /// Install `mac` on `segment` behind `vtep` (a control-plane route):
    /// it replaces a learned entry (remote or local — the route is newer
    /// news: EVPN's MAC mobility picked it) and never ages.
    pub fn set_installed(&mut self, segment: u8, mac: Mac, vtep: Ipv4Addr, now: Instant) -> Learn {
        let location = Location::Remote(vtep);
        if let Some(e) = self.entries.iter_mut().find(|e| e.segment == segment && e.mac == mac) {
            if e.origin != Origin::Installed || e.location != location {
                *e = FdbEntry { segment, mac, location, seen: now, origin: Origin::Installed };
            }
            return Learn::Ok;
        }
        self.insert(FdbEntry { segment, mac, location, seen: now, origin: Origin::Installed }, now)
    }

    /// Keep the installed entries of `segment` for which `keep` is true
    /// (the others are removed: their routes were withdrawn). Learned
    /// entries are untouched.
    pub fn retain_installed(&mut self, segment: u8, mut keep: impl FnMut(Mac, Ipv4Addr) -> bool) {
        self.entries.retain(|e| match (e.origin, e.location) {
            (Origin::Installed, Location::Remote(v)) if e.segment == segment => keep(e.mac, v),
            _ => true,
        });
    }

    /// Remove aged-out learned entries.
    pub fn expire(&mut self, now: Instant) {
        let age = self.age_ms;
        self.entries.retain(|e| e.origin == Origin::Installed || now.millis_since(e.seen) < age);
    }

    /// When the next learned entry ages out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.iter().filter(|e| e.origin == Origin::Learned).map(|e| e.seen.plus_millis(self.age_ms)).min()
    }

    /// The live MACs learned on `segment`'s LAN port (what EVPN advertises).
    pub fn local_macs(&self, segment: u8, now: Instant) -> impl Iterator<Item = Mac> + '_ {
        self.entries.iter().filter(move |e| e.segment == segment && e.location == Location::Local && self.live(e, now)).map(|e| e.mac)
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

    #[test]
    fn installed_entries_do_not_age_and_yield_only_to_local_frames() {
        let mut f = Fdb::new(1000);
        let t = Instant::from_millis(10);
        let other = Ipv4Addr::new(10, 3, 0, 1);
        assert_eq!(f.set_installed(0, mac(1), VTEP, t), Learn::Ok);
        let late = t.plus_millis(1_000_000);
        f.expire(late);
        assert_eq!(f.lookup(0, mac(1), late), Some(Location::Remote(VTEP)), "installed entries never age");
        assert_eq!(f.next_deadline(), None);
        // Decapsulated frames from another VTEP do not override the route.
        f.learn(0, mac(1), Location::Remote(other), late);
        assert_eq!(f.lookup(0, mac(1), late), Some(Location::Remote(VTEP)));
        // A learned remote entry is replaced by a route.
        f.learn(0, mac(2), Location::Remote(other), t);
        f.set_installed(0, mac(2), VTEP, t);
        assert_eq!(f.entries().iter().find(|e| e.mac == mac(2)).map(|e| e.origin), Some(Origin::Installed));
        // Withdrawn routes go; learned entries stay.
        f.learn(0, mac(3), Location::Local, t);
        f.retain_installed(0, |m, _| m == mac(2));
        assert_eq!(f.lookup(0, mac(1), t), None);
        assert_eq!(f.lookup(0, mac(2), t), Some(Location::Remote(VTEP)));
        assert_eq!(f.local_macs(0, t).collect::<heapless::Vec<_, 4>>().as_slice(), &[mac(3)]);
        // The host moves here: a frame on the LAN port makes it local and learned.
        f.learn(0, mac(2), Location::Local, t);
        assert_eq!(f.lookup(0, mac(2), t), Some(Location::Local));
        assert_eq!(f.local_macs(0, t).count(), 2);
    }

    #[test]
    fn installed_entries_are_not_evicted_when_full() {
        let mut f = Fdb::new(1000);
        let t = Instant::ZERO;
        for i in 0..FDB_ENTRIES as u16 {
            assert_eq!(f.set_installed(0, mac(i), VTEP, t), Learn::Ok);
        }
        assert_eq!(f.learn(0, mac(9999), Location::Local, t.plus_millis(5000)), Learn::Full);
    }
}

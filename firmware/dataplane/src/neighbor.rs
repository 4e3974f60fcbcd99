//! Neighbour resolution: the ARP cache and the queue of frames waiting for it.
//!
//! **ARP cache** — [`NEIGHBORS`] entries keyed by (port, IPv4). An entry is
//! either *incomplete* (requests outstanding, retried every
//! `arp_retry_ms` up to `arp_attempts` times) or *reachable* (MAC known until
//! `arp_reachable_ms` after the last confirmation). Entries are only created
//! for addresses the box wants to reach or for hosts that ARP for the box;
//! unsolicited replies never create entries (no cache filling from outside).
//! *Full policy:* the reachable entry confirmed longest ago is evicted; if
//! every entry is incomplete the new resolution is refused (`ArpCacheFull`).
//!
//! **Pending queue** — [`PENDING`] slots of [`MAX_FRAME`] bytes holding
//! complete frames whose destination MAC is not yet known. *Full policy:* the
//! new frame is dropped (`PendingQueueFull`); frames already waiting are kept.
//! When resolution fails every waiting frame for that neighbour is dropped
//! (`ArpResolutionFailed`).

use core::net::Ipv4Addr;

use crate::buf::MAX_FRAME;
use crate::config::{Mac, PortId};
use crate::time::Instant;

/// ARP cache capacity.
pub const NEIGHBORS: usize = 64;
/// Pending-queue capacity (frames).
pub const PENDING: usize = 16;

/// State of one neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborState {
    /// Being resolved: `attempts_left` more requests, the next at `next_try`.
    Incomplete {
        /// Requests still to send after the current one.
        attempts_left: u8,
        /// When the next request (or the give-up) is due.
        next_try: Instant,
    },
    /// Resolved.
    Reachable {
        /// The neighbour's MAC.
        mac: Mac,
        /// When the entry lapses (re-resolved on next use).
        expires: Instant,
    },
}

/// One ARP cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// Port the neighbour is on.
    pub port: PortId,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its state.
    pub state: NeighborState,
}

/// Result of asking the cache for a MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Known.
    Hit(Mac),
    /// Resolution already in progress.
    Pending,
    /// A new incomplete entry was made: send the first request now.
    Started,
    /// No entry could be made (all incomplete).
    Full,
}

/// The ARP cache.
#[derive(Debug)]
pub struct NeighborCache {
    entries: heapless::Vec<Neighbor, NEIGHBORS>,
}

impl Default for NeighborCache {
    fn default() -> Self {
        NeighborCache { entries: heapless::Vec::new() }
    }
}

impl NeighborCache {
    fn find(&self, port: PortId, ip: Ipv4Addr) -> Option<usize> {
        self.entries.iter().position(|e| e.port == port && e.ip == ip)
    }

    /// The MAC of a reachable, unexpired neighbour.
    pub fn mac(&self, port: PortId, ip: Ipv4Addr, now: Instant) -> Option<Mac> {
        let e = self.entries.get(self.find(port, ip)?)?;
        match e.state {
            NeighborState::Reachable { mac, expires } if now < expires => Some(mac),
            _ => None,
        }
    }

    /// Look up, starting a resolution when needed. `attempts` is the number
    /// of requests a resolution may send in total.
    pub fn resolve(&mut self, port: PortId, ip: Ipv4Addr, now: Instant, attempts: u8, retry_ms: u64) -> (Lookup, bool) {
        let incomplete = NeighborState::Incomplete { attempts_left: attempts.saturating_sub(1), next_try: now.plus_millis(retry_ms) };
        if let Some(i) = self.find(port, ip) {
            if let Some(e) = self.entries.get_mut(i) {
                match e.state {
                    NeighborState::Reachable { mac, expires } if now < expires => return (Lookup::Hit(mac), false),
                    NeighborState::Reachable { .. } => {
                        e.state = incomplete;
                        return (Lookup::Started, false);
                    }
                    NeighborState::Incomplete { .. } => return (Lookup::Pending, false),
                }
            }
        }
        let entry = Neighbor { port, ip, state: incomplete };
        if self.entries.push(entry).is_ok() {
            return (Lookup::Started, false);
        }
        // Full: evict the reachable entry that lapses first.
        let victim = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.state {
                NeighborState::Reachable { expires, .. } => Some((i, expires)),
                NeighborState::Incomplete { .. } => None,
            })
            .min_by_key(|(_, expires)| *expires)
            .map(|(i, _)| i);
        match victim.and_then(|i| self.entries.get_mut(i)) {
            Some(slot) => {
                *slot = entry;
                (Lookup::Started, true)
            }
            None => (Lookup::Full, false),
        }
    }

    /// An ARP reply (or a request aimed at us) from `ip` is `mac`. Updates an
    /// existing entry; creates one only when `create` (a request to us: we
    /// are about to answer, the host is about to talk to us). Returns true if
    /// an entry was updated or created.
    pub fn learn(&mut self, port: PortId, ip: Ipv4Addr, mac: Mac, now: Instant, lifetime_ms: u64, create: bool) -> bool {
        let state = NeighborState::Reachable { mac, expires: now.plus_millis(lifetime_ms) };
        if let Some(e) = self.find(port, ip).and_then(|i| self.entries.get_mut(i)) {
            e.state = state;
            return true;
        }
        if create {
            return self.entries.push(Neighbor { port, ip, state }).is_ok();
        }
        false
    }

    /// Earliest timer of any entry.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .iter()
            .map(|e| match e.state {
                NeighborState::Incomplete { next_try, .. } => next_try,
                NeighborState::Reachable { expires, .. } => expires,
            })
            .min()
    }

    /// Run timers: expire lapsed entries, and for each incomplete entry that is
    /// due either call `retry(port, ip)` (and re-arm) or, when out of
    /// attempts, remove it and call `give_up(port, ip)`.
    pub fn poll(
        &mut self,
        now: Instant,
        retry_ms: u64,
        mut retry: impl FnMut(PortId, Ipv4Addr),
        mut give_up: impl FnMut(PortId, Ipv4Addr),
    ) {
        let mut i = 0;
        while let Some(e) = self.entries.get_mut(i) {
            match e.state {
                NeighborState::Reachable { expires, .. } if now >= expires => {
                    self.entries.swap_remove(i);
                    continue;
                }
                NeighborState::Incomplete { attempts_left, next_try } if now >= next_try => {
                    if attempts_left == 0 {
                        let (port, ip) = (e.port, e.ip);
                        self.entries.swap_remove(i);
                        give_up(port, ip);
                        continue;
                    }
                    e.state = NeighborState::Incomplete { attempts_left: attempts_left - 1, next_try: now.plus_millis(retry_ms) };
                    retry(e.port, e.ip);
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// Entries (for status output and tests).
    pub fn entries(&self) -> &[Neighbor] {
        &self.entries
    }

    /// Take an entry over from the cache of the dataplane an apply
    /// replaces (the capacities are equal; a duplicate is ignored).
    pub(crate) fn carry(&mut self, e: Neighbor) {
        if self.find(e.port, e.ip).is_none() {
            let _ = self.entries.push(e);
        }
    }
}

/// One frame waiting for its next hop's MAC.
#[derive(Debug)]
struct Slot {
    used: bool,
    port: PortId,
    next_hop: Ipv4Addr,
    len: usize,
    frame: [u8; MAX_FRAME],
}

/// Frames waiting for ARP.
#[derive(Debug)]
pub struct PendingQueue {
    slots: [Slot; PENDING],
}

impl Default for PendingQueue {
    fn default() -> Self {
        PendingQueue {
            slots: core::array::from_fn(|_| Slot {
                used: false,
                port: PortId(0),
                next_hop: Ipv4Addr::UNSPECIFIED,
                len: 0,
                frame: [0; MAX_FRAME],
            }),
        }
    }
}

impl PendingQueue {
    /// Park a complete frame (its destination MAC is filled in on release).
    /// False when full or the frame is too large.
    pub fn push(&mut self, port: PortId, next_hop: Ipv4Addr, frame: &[u8]) -> bool {
        let Some(slot) = self.slots.iter_mut().find(|s| !s.used) else {
            return false;
        };
        let Some(dst) = slot.frame.get_mut(..frame.len()) else {
            return false;
        };
        dst.copy_from_slice(frame);
        slot.used = true;
        slot.port = port;
        slot.next_hop = next_hop;
        slot.len = frame.len();
        true
    }

    /// Hand every frame waiting for (port, next_hop) to `f` (which may edit
    /// it) and free its slot. Returns how many.
    pub fn release(&mut self, port: PortId, next_hop: Ipv4Addr, mut f: impl FnMut(&mut [u8])) -> usize {
        let mut n = 0;
        for s in self.slots.iter_mut().filter(|s| s.used && s.port == port && s.next_hop == next_hop) {
            s.used = false;
            if let Some(frame) = s.frame.get_mut(..s.len) {
                f(frame);
            }
            n += 1;
        }
        n
    }

    /// Every waiting frame, oldest slot first.
    pub(crate) fn for_each(&self, mut f: impl FnMut(PortId, Ipv4Addr, &[u8])) {
        for s in self.slots.iter().filter(|s| s.used) {
            if let Some(frame) = s.frame.get(..s.len) {
                f(s.port, s.next_hop, frame);
            }
        }
    }

    /// Frames currently waiting.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PortId = PortId(0);
    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }
    const MAC: Mac = Mac([2, 0, 0, 0, 0, 9]);

    #[test]
    fn resolve_learn_expire() {
        let mut c = NeighborCache::default();
        let t = Instant::from_millis(100);
        assert_eq!(c.resolve(P, ip(1), t, 3, 1000).0, Lookup::Started);
        assert_eq!(c.resolve(P, ip(1), t, 3, 1000).0, Lookup::Pending);
        assert!(c.learn(P, ip(1), MAC, t, 5000, false));
        assert_eq!(c.resolve(P, ip(1), t, 3, 1000).0, Lookup::Hit(MAC));
        assert_eq!(c.mac(P, ip(1), t.plus_millis(4999)), Some(MAC));
        assert_eq!(c.mac(P, ip(1), t.plus_millis(5000)), None);
        // Wrong port is a different neighbour.
        assert_eq!(c.mac(PortId(1), ip(1), t), None);
    }

    #[test]
    fn unsolicited_does_not_create() {
        let mut c = NeighborCache::default();
        assert!(!c.learn(P, ip(7), MAC, Instant::ZERO, 1000, false));
        assert!(c.entries().is_empty());
        assert!(c.learn(P, ip(7), MAC, Instant::ZERO, 1000, true));
    }

    #[test]
    fn retries_then_give_up() {
        let mut c = NeighborCache::default();
        let t = Instant::ZERO;
        c.resolve(P, ip(1), t, 3, 1000);
        let (mut retries, mut gave_up) = (0, 0);
        for ms in [500u64, 1000, 2000, 3000] {
            c.poll(Instant::from_millis(ms), 1000, |_, _| retries += 1, |_, _| gave_up += 1);
        }
        assert_eq!((retries, gave_up), (2, 1));
        assert!(c.entries().is_empty());
    }

    #[test]
    fn full_evicts_reachable_then_refuses() {
        let mut c = NeighborCache::default();
        let t = Instant::ZERO;
        for i in 0..NEIGHBORS {
            c.learn(P, Ipv4Addr::new(10, 1, 0, i as u8), MAC, t.plus_millis(i as u64), 10_000, true);
        }
        let (l, evicted) = c.resolve(P, ip(200), t, 3, 1000);
        assert_eq!((l, evicted), (Lookup::Started, true));
        // The oldest (10.1.0.0) went.
        assert_eq!(c.mac(P, Ipv4Addr::new(10, 1, 0, 0), t), None);
        // Fill the rest with incomplete entries: then refuse.
        let mut k = 0u8;
        loop {
            let (l, _) = c.resolve(PortId(1), Ipv4Addr::new(10, 2, 0, k), t, 3, 1000);
            if l == Lookup::Full {
                break;
            }
            k += 1;
        }
        assert_eq!(k as usize, NEIGHBORS - 1);
    }

    #[test]
    fn pending_queue_bounded() {
        let mut q = PendingQueue::default();
        for _ in 0..PENDING {
            assert!(q.push(P, ip(1), &[1, 2, 3]));
        }
        assert!(!q.push(P, ip(2), &[1]));
        assert!(!PendingQueue::default().push(P, ip(1), &[0u8; MAX_FRAME + 1]));
        let mut seen = 0;
        assert_eq!(
            q.release(P, ip(1), |f| {
                f[0] = 9;
                seen += f.len();
            }),
            PENDING
        );
        assert_eq!(seen, 3 * PENDING);
        assert!(q.is_empty());
    }
}

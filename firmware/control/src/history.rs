//! The configurations a box has run: generations, what made each, whether
//! it was confirmed, and the space policy that decides which are kept.
//!
//! Every successful apply (a claim added or removed, a rollback, a revert
//! of an unconfirmed commit-confirm) is a new generation; numbers only grow
//! (until a factory reset starts the box over). The newest entry is the
//! running configuration. At most [`msg::HISTORY_MAX`] are kept, and their
//! configurations must fit [`CONFIG_BUDGET`] together, so that the saved
//! record fits one store slot: the running one and the one a pending
//! commit-confirm reverts to are always kept, then the newest others while
//! they fit; the rest are dropped, oldest first (`crate::persist` explains
//! the budget). What `routerctl config history` shows is exactly what a
//! reboot keeps.

use alloc::boxed::Box;
use alloc::vec::Vec;
use config_schema::Config;
use routerd_provision::message::{self as msg, HistoryEntry, Origin};

use crate::persist::{SavedGeneration, CONFIG_BUDGET};

/// One kept generation.
#[derive(Debug, Clone)]
pub(crate) struct Generation {
    pub number: u64,
    pub applied_ms: Option<u64>,
    pub origin: Origin,
    pub confirmed: bool,
    pub config: Box<Config>,
    /// Its wire form's length and CRC-32C.
    pub size: u32,
    pub hash: u32,
}

impl Generation {
    pub fn new(number: u64, applied_ms: Option<u64>, origin: Origin, confirmed: bool, config: Box<Config>) -> Generation {
        let (size, hash) = measure(&config);
        Generation { number, applied_ms, origin, confirmed, config, size, hash }
    }

    pub fn entry(&self) -> HistoryEntry {
        HistoryEntry {
            generation: self.number,
            applied_ms: self.applied_ms,
            origin: self.origin,
            confirmed: self.confirmed,
            size: self.size,
            hash: self.hash,
        }
    }
}

/// The wire form's length and CRC-32C: the size and short hash routerctl
/// shows. A configuration that does not encode (it cannot: every one the
/// node runs was decoded or validated) counts as the largest there is.
fn measure(config: &Config) -> (u32, u32) {
    let mut buf = alloc::vec![0u8; config_schema::CONFIG_WIRE_MAX];
    match config_schema::encode(config, &mut buf) {
        Ok(bytes) => (u32::try_from(bytes.len()).unwrap_or(u32::MAX), routerd_storage::layout::crc32c(bytes)),
        Err(_) => (config_schema::CONFIG_WIRE_MAX as u32, 0),
    }
}

/// The kept generations, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    entries: Vec<Generation>,
}

impl History {
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    pub fn entries(&self) -> &[Generation] {
        &self.entries
    }

    pub fn get(&self, number: u64) -> Option<&Generation> {
        self.entries.iter().find(|g| g.number == number)
    }

    pub fn running(&self) -> Option<&Generation> {
        self.entries.last()
    }

    /// The generation before the running one (`routerctl rollback`'s default).
    #[cfg(test)]
    pub fn previous(&self) -> Option<&Generation> {
        self.entries.len().checked_sub(2).and_then(|i| self.entries.get(i))
    }

    /// Marks every generation confirmed (a commit-confirm was kept).
    pub fn confirm_all(&mut self) {
        for g in &mut self.entries {
            g.confirmed = true;
        }
    }

    /// Adds the new running generation, then applies the space policy;
    /// `pinned` (a pending commit-confirm's target) is never dropped.
    pub fn push(&mut self, g: Generation, pinned: Option<u64>) {
        self.entries.push(g);
        self.trim(pinned);
    }

    /// Keeps the running generation and `pinned`, then the newest others
    /// while their configurations fit [`CONFIG_BUDGET`] and the count fits
    /// [`msg::HISTORY_MAX`]; the first that does not fit ends the run (so
    /// it is always the oldest that go).
    fn trim(&mut self, pinned: Option<u64>) {
        let Some(running) = self.entries.last().map(|g| g.number) else { return };
        let must = |g: &Generation| g.number == running || Some(g.number) == pinned;
        let mut bytes: usize = self.entries.iter().filter(|g| must(g)).map(|g| g.size as usize).sum();
        let mut count = self.entries.iter().filter(|g| must(g)).count();
        let mut full = false;
        let mut keep = alloc::vec![false; self.entries.len()];
        for (i, g) in self.entries.iter().enumerate().rev() {
            if must(g) {
                keep[i] = true;
                continue;
            }
            let size = g.size as usize;
            if !full && count < msg::HISTORY_MAX && bytes.saturating_add(size) <= CONFIG_BUDGET {
                bytes += size;
                count += 1;
                keep[i] = true;
            } else {
                full = true;
            }
        }
        let mut k = keep.into_iter();
        self.entries.retain(|_| k.next().unwrap_or(false));
    }

    /// The generations as the record keeps them (the running one without
    /// its configuration: the record holds it once, as `config`).
    pub fn saved(&self) -> heapless::Vec<SavedGeneration, { msg::HISTORY_MAX }> {
        let last = self.entries.len().saturating_sub(1);
        self.entries
            .iter()
            .enumerate()
            .map(|(i, g)| SavedGeneration {
                generation: g.number,
                applied_ms: g.applied_ms,
                origin: g.origin,
                confirmed: g.confirmed,
                config: (i != last).then(|| g.config.clone()),
            })
            .collect()
    }

    /// Takes back a record's history. `running` is the record's running
    /// configuration; an entry without a configuration other than the last
    /// (a record this software did not write) is skipped.
    pub fn from_saved(saved: &[SavedGeneration], running: Option<&Config>) -> History {
        let mut h = History::default();
        let last = saved.len().saturating_sub(1);
        for (i, s) in saved.iter().enumerate() {
            let config = match (&s.config, running) {
                (Some(c), _) => c.clone(),
                (None, Some(r)) if i == last => Box::new(r.clone()),
                _ => continue,
            };
            h.entries.push(Generation::new(s.generation, s.applied_ms, s.origin, s.confirmed, config));
        }
        h
    }

    /// As `routerctl config history` shows it.
    pub fn wire(&self) -> heapless::Vec<HistoryEntry, { msg::HISTORY_MAX }> {
        self.entries.iter().map(Generation::entry).collect()
    }

    /// `3, 4, 5`: the kept generation numbers, for refusals.
    pub fn numbers(&self) -> msg::Text<80> {
        let mut out = msg::Text::new();
        for (i, g) in self.entries.iter().enumerate() {
            let piece: msg::Text<24> = msg::text_fmt(format_args!("{}{}", if i > 0 { ", " } else { "" }, g.number));
            if out.push_str(&piece).is_err() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use config_schema::{Capture, CaptureMethod, Claim, Delivery, Ipv4Cidr, MssClamp, Name};

    /// A configuration whose wire form is about `kib` KiB (not a valid
    /// one: history does not validate, and size is what is tested).
    fn config_of(kib: usize, tag: u8) -> Box<Config> {
        let long = |s: &str| Name::new(&alloc::format!("{s:x<24}")).unwrap();
        let mut c = Config {
            device: config_schema::Device { name: long("box"), side: long("onprem") },
            ports: Default::default(),
            wireguard: Default::default(),
            peers: Default::default(),
            claims: Default::default(),
            segments: Default::default(),
            dns: Default::default(),
            nat: Default::default(),
            firewall: None,
            bgp: None,
        };
        let claim = |i: usize| Claim {
            address: Ipv4Cidr::new(core::net::Ipv4Addr::new(10, tag, (i / 250) as u8, (i % 250) as u8), 32).unwrap(),
            owner: long("owner"),
            gratuitous_arp: Some(3),
            conflict_hold: None,
            local_port: Some(long("lan")),
            mss_clamp: MssClamp::Auto,
            capture: Capture { method: CaptureMethod::ProxyArp, port: long("lan0"), configure_os_address: false },
            delivery: Delivery { tunnel: long("wg0"), peer: long("peer") },
        };
        // Peers dialled by the longest DNS names, with every allowed IP.
        let host = alloc::format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
        for k in 0..config_schema::limits::MAX_PEERS {
            let peer = config_schema::Peer {
                name: long(&alloc::format!("peer{k}")),
                tunnel: long("wg0"),
                public_key: config_schema::PublicKey([k as u8; 32]),
                endpoint: Some(alloc::format!("{host}:51820").parse().unwrap()),
                allowed_ips: (0..config_schema::limits::MAX_ALLOWED_IPS)
                    .map(|i| Ipv4Cidr::new(core::net::Ipv4Addr::new(172, tag, k as u8, i as u8), 32).unwrap())
                    .collect(),
                persistent_keepalive: Some(25),
                preshared_key: Some(alloc::format!("device:{:x<24}", k).parse().unwrap()),
            };
            if measure(&c).0 >= (kib * 1024) as u32 || c.peers.push(peer).is_err() {
                break;
            }
        }
        let mut i = 0;
        while measure(&c).0 < (kib * 1024) as u32 && c.claims.push(claim(i)).is_ok() {
            i += 1;
        }
        Box::new(c)
    }

    fn push(h: &mut History, n: u64, kib: usize, pinned: Option<u64>) {
        h.push(Generation::new(n, None, Origin::Apply, true, config_of(kib, n as u8)), pinned);
    }

    fn numbers(h: &History) -> alloc::vec::Vec<u64> {
        h.entries().iter().map(|g| g.number).collect()
    }

    #[test]
    fn eight_small_ones_are_kept_and_the_oldest_go_first() {
        let mut h = History::default();
        for n in 1..=11 {
            push(&mut h, n, 1, None);
        }
        assert_eq!(numbers(&h), [4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(h.running().unwrap().number, 11);
        assert_eq!(h.previous().unwrap().number, 10);
        assert_eq!(h.numbers().as_str(), "4, 5, 6, 7, 8, 9, 10, 11");
    }

    #[test]
    fn large_ones_are_dropped_to_fit_the_budget_and_the_pinned_one_stays() {
        let big = measure(&config_of(64, 1)).0 as usize;
        std::println!("largest test configuration: {big} bytes; budget {CONFIG_BUDGET}");
        assert!(big > 10 * 1024, "the claims list makes a big configuration ({big})");
        let mut h = History::default();
        for n in 1..=6 {
            push(&mut h, n, 64, None);
        }
        let fit = CONFIG_BUDGET / big;
        assert_eq!(h.entries().len(), fit, "as many as fit");
        assert_eq!(numbers(&h).last(), Some(&6));
        assert!(h.entries().iter().map(|g| g.size as usize).sum::<usize>() <= CONFIG_BUDGET);
        // A commit-confirm pinned to generation 4 keeps it through later applies.
        for n in 7..=10 {
            push(&mut h, n, 64, Some(4));
        }
        assert!(numbers(&h).contains(&4) && numbers(&h).contains(&10), "{:?}", numbers(&h));
        assert!(h.entries().iter().map(|g| g.size as usize).sum::<usize>() <= CONFIG_BUDGET);
        // Small ones after big ones: the big old ones go, oldest first.
        for n in 11..=14 {
            push(&mut h, n, 1, None);
        }
        let kept = numbers(&h);
        assert_eq!(&kept[kept.len() - 4..], [11, 12, 13, 14]);
        let w: alloc::vec::Vec<_> = kept.windows(2).map(|w| w[0] < w[1]).collect();
        assert!(w.iter().all(|&b| b), "oldest first: {kept:?}");
    }

    #[test]
    fn the_saved_form_holds_the_running_configuration_once_and_comes_back() {
        let mut h = History::default();
        for n in 1..=3 {
            push(&mut h, n, 1, None);
        }
        let saved = h.saved();
        assert!(saved[0].config.is_some() && saved[1].config.is_some() && saved[2].config.is_none());
        let running = h.running().unwrap().config.clone();
        let back = History::from_saved(&saved, Some(&running));
        assert_eq!(numbers(&back), [1, 2, 3]);
        assert_eq!(back.wire(), h.wire());
        // Without the running configuration the last entry cannot come back.
        assert_eq!(numbers(&History::from_saved(&saved, None)), [1, 2]);
    }
}

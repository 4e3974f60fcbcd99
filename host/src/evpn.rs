//! What routerd-host logs about BGP EVPN: each session reaching
//! Established or going down (with the reason), and each EVPN segment's
//! learned VTEPs and installed remote MACs whenever they change. These are
//! the lines an operator reads in the journal (and what
//! host/tests/evpn_frr.rs waits for):
//!
//! ```text
//! bgp: peer pve (10.1.0.2) Established
//! evpn: segment vnet100 (vni 100): VTEPs 10.1.0.2
//! evpn: segment vnet100 (vni 100): 1 remote MAC installed: 02:00:00:00:aa:01 → 10.1.0.2
//! bgp: peer pve (10.1.0.2) down: NotificationReceived { code: 6, subcode: 2 }
//! evpn: segment vnet100 (vni 100): VTEPs none
//! bgp: peer pve (10.1.0.2) sent malformed UPDATEs (RFC 7606; totals): 1 treated as withdraw, 0 attributes discarded, 0 unreadable withdrawn NLRIs
//! ```
//!
//! The malformed-UPDATE line repeats when those counters move, at most once
//! per `FAULT_LOG_EVERY` per peer, so a peer sending garbage cannot flood
//! the journal (the line carries totals: the last one is always right).
//!
//! Cheap per turn: the sessions' counters are compared in place, and the
//! dataplane's tables are read only after the BGP service programmed it
//! again (its `programmed` counter moved).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use config_schema::{Config, SegmentControl};
use routerd_control::Services;
use routerd_dataplane::fdb::{Location, Origin};
use routerd_dataplane::{Dataplane, Mac, MacText};

/// Installed MACs named in one line (the count is always given).
const MACS_SHOWN: usize = 4;
/// The shortest interval between two malformed-UPDATE lines of one peer.
const FAULT_LOG_EVERY: Duration = Duration::from_secs(1);

/// A session's RFC 7606 counters: what a malformed UPDATE cost, short of a reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    treat_as_withdraw: u64,
    attributes_discarded: u64,
    withdraw_nlri_errors: u64,
}

/// One EVPN segment as last logged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    name: String,
    vni: u32,
    vteps: Vec<Ipv4Addr>,
    macs: Vec<(Mac, Ipv4Addr)>,
}

/// What was last logged; see the module documentation.
#[derive(Debug, Default)]
pub struct EvpnLog {
    /// Per peer (the service's order): times Established, up now.
    peers: Vec<(u64, bool)>,
    /// Per peer: the RFC 7606 counters last logged, and when.
    faults: Vec<(Faults, Option<Instant>)>,
    /// The service's `programmed` counter when the tables were last read.
    programmed: Option<u64>,
    segments: Vec<Segment>,
}

impl EvpnLog {
    /// The EVPN segments of the running configuration (after an apply).
    pub fn configured(&mut self, cfg: &Config) {
        let old = std::mem::take(&mut self.segments);
        self.segments = cfg
            .segments
            .iter()
            .filter(|s| s.control == SegmentControl::Evpn)
            .map(|s| {
                let kept = old.iter().find(|o| o.vni == s.vni);
                Segment {
                    name: s.name.as_str().to_string(),
                    vni: s.vni,
                    vteps: kept.map(|o| o.vteps.clone()).unwrap_or_default(),
                    macs: kept.map(|o| o.macs.clone()).unwrap_or_default(),
                }
            })
            .collect();
        self.programmed = None;
    }

    /// Log what changed since the last call.
    pub fn observe(&mut self, services: &Services, dp: &Dataplane) {
        let Some(bgp) = services.bgp() else {
            self.peers.clear();
            self.faults.clear();
            self.programmed = None;
            return;
        };
        for (i, p) in bgp.sessions().enumerate() {
            if self.peers.len() <= i {
                self.peers.push((0, false));
            }
            let Some((established, up)) = self.peers.get_mut(i) else { continue };
            let now_up = p.established_since.is_some();
            if p.established != *established && now_up {
                log::info!("bgp: peer {} ({}) Established", p.name.as_str(), p.addr);
            } else if *up && !now_up {
                match p.last_down {
                    Some(r) => log::warn!("bgp: peer {} ({}) down: {r:?}", p.name.as_str(), p.addr),
                    None => log::warn!("bgp: peer {} ({}) down", p.name.as_str(), p.addr),
                }
            }
            (*established, *up) = (p.established, now_up);
            if self.faults.len() <= i {
                self.faults.push((Faults::default(), None));
            }
            let c = &p.session;
            let faults = Faults {
                treat_as_withdraw: c.treat_as_withdraw,
                attributes_discarded: c.attributes_discarded,
                withdraw_nlri_errors: c.withdraw_nlri_errors,
            };
            if let Some((logged, at)) = self.faults.get_mut(i) {
                if faults != *logged && at.is_none_or(|t| t.elapsed() >= FAULT_LOG_EVERY) {
                    log::warn!(
                        "bgp: peer {} ({}) sent malformed UPDATEs (RFC 7606; totals): {} treated as withdraw, {} attributes discarded, \
                         {} unreadable withdrawn NLRIs",
                        p.name.as_str(),
                        p.addr,
                        faults.treat_as_withdraw,
                        faults.attributes_discarded,
                        faults.withdraw_nlri_errors
                    );
                    (*logged, *at) = (faults, Some(Instant::now()));
                }
            }
        }
        let programmed = bgp.counters().programmed;
        if self.programmed == Some(programmed) {
            return;
        }
        self.programmed = Some(programmed);
        for seg in &mut self.segments {
            let Some(si) = dp.config().segments.iter().position(|s| s.vni == seg.vni) else { continue };
            // Sorted: the dataplane keeps them in learning order, and a
            // reordering alone is not news.
            let mut vteps = dp.learned_vteps(si).to_vec();
            vteps.sort_unstable();
            let macs: Vec<(Mac, Ipv4Addr)> = dp
                .fdb()
                .entries()
                .iter()
                .filter(|e| usize::from(e.segment) == si && e.origin == Origin::Installed)
                .filter_map(|e| match e.location {
                    Location::Remote(v) => Some((e.mac, v)),
                    Location::Local => None,
                })
                .collect();
            if vteps != seg.vteps {
                log::info!("evpn: segment {} (vni {}): VTEPs {}", seg.name, seg.vni, vtep_list(&vteps));
                seg.vteps = vteps;
            }
            if macs != seg.macs {
                log::info!("evpn: segment {} (vni {}): {}", seg.name, seg.vni, mac_list(&macs));
                seg.macs = macs;
            }
        }
    }
}

/// `10.1.0.2, 10.1.0.3`, or `none`.
fn vtep_list(vteps: &[Ipv4Addr]) -> String {
    if vteps.is_empty() {
        return "none".into();
    }
    vteps.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(", ")
}

/// `2 remote MACs installed: aa:… → 10.1.0.2, bb:… → 10.1.0.3`, the
/// first [`MACS_SHOWN`] named.
fn mac_list(macs: &[(Mac, Ipv4Addr)]) -> String {
    let mut s = format!("{} remote MAC{} installed", macs.len(), if macs.len() == 1 { "" } else { "s" });
    for (i, (mac, vtep)) in macs.iter().take(MACS_SHOWN).enumerate() {
        let _ = write!(s, "{}{} → {vtep}", if i == 0 { ": " } else { ", " }, MacText(*mac));
    }
    if macs.len() > MACS_SHOWN {
        let _ = write!(s, ", and {} more", macs.len() - MACS_SHOWN);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_say_none_and_bound_the_macs_they_name() {
        assert_eq!(vtep_list(&[]), "none");
        assert_eq!(vtep_list(&[Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3)]), "10.1.0.2, 10.1.0.3");
        assert_eq!(mac_list(&[]), "0 remote MACs installed");
        let one = [(Mac([2, 0, 0, 0, 0xaa, 1]), Ipv4Addr::new(10, 1, 0, 2))];
        assert_eq!(mac_list(&one), "1 remote MAC installed: 02:00:00:00:aa:01 → 10.1.0.2");
        let many: Vec<_> = (0..6u8).map(|i| (Mac([2, 0, 0, 0, 0, i]), Ipv4Addr::new(10, 1, 0, 2))).collect();
        let text = mac_list(&many);
        assert!(text.starts_with("6 remote MACs installed: 02:00:00:00:00:00 → 10.1.0.2, "), "{text}");
        assert!(text.ends_with("02:00:00:00:00:03 → 10.1.0.2, and 2 more"), "{text}");
    }
}

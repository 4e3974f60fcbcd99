//! Masquerade: the NAT of a home or ISP router with one box behind it.
//!
//! What leaves from the box's private address leaves from the router's
//! public address, **with its port kept** (one host behind the router, so a
//! private port is always free on the public side: nothing like the port
//! rewriting of seed 003's `exit_nodes_local_routing` happens here, and the
//! lab counts it if it ever did). Each outbound UDP or TCP flow opens a
//! mapping for its source port; traffic to the public address is let in
//! only on a port with a live mapping (from any remote: endpoint-independent,
//! RFC 4787) or a port forward. Mappings expire when idle (UDP 120 s,
//! TCP 2 h 4 min: RFC 4787 REQ-5, RFC 5382 REQ-5) and all go when the public
//! address changes — a new dynamic IP is a new NAT state.
//!
//! Other protocols (ICMP) leave with their source rewritten and are not
//! let in. The table is bounded ([`MAX_MAPPINGS`]); when full, the least
//! recently used mapping makes room.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Mappings one router keeps.
pub const MAX_MAPPINGS: usize = 1024;
const UDP_TIMEOUT: Duration = Duration::from_secs(120);
const TCP_TIMEOUT: Duration = Duration::from_secs(7440);

/// The transport of a mapping or a forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn timeout(self) -> Duration {
        match self {
            Transport::Udp => UDP_TIMEOUT,
            Transport::Tcp => TCP_TIMEOUT,
        }
    }
}

/// A port the router forwards to the box: traffic to this port of the
/// public address goes to the same port of the box's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortForward {
    pub transport: Transport,
    pub port: u16,
}

impl PortForward {
    pub fn udp(port: u16) -> PortForward {
        PortForward { transport: Transport::Udp, port }
    }

    pub fn tcp(port: u16) -> PortForward {
        PortForward { transport: Transport::Tcp, port }
    }
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    transport: Transport,
    port: u16,
    last_used: Instant,
}

/// One router's masquerade state.
#[derive(Debug)]
pub(crate) struct Masquerade {
    forwards: Vec<PortForward>,
    mappings: Vec<Mapping>,
    /// The public address the mappings belong to.
    public: Option<Ipv4Addr>,
    /// Times the public address changed and every mapping went.
    pub flushes: u64,
}

impl Masquerade {
    pub(crate) fn new(forwards: Vec<PortForward>) -> Masquerade {
        Masquerade { forwards, mappings: Vec::new(), public: None, flushes: 0 }
    }

    /// The router's public address is `public` now: a change drops every mapping.
    pub(crate) fn sync(&mut self, public: Option<Ipv4Addr>) {
        if self.public != public {
            if self.public.is_some() && !self.mappings.is_empty() {
                self.flushes += 1;
            }
            self.mappings.clear();
            self.public = public;
        }
    }

    /// An outbound flow from the box's `port`: opens or refreshes its
    /// mapping (to the same public port).
    pub(crate) fn outbound(&mut self, now: Instant, transport: Transport, port: u16) {
        self.expire(now);
        if let Some(m) = self.mappings.iter_mut().find(|m| m.transport == transport && m.port == port) {
            m.last_used = now;
            return;
        }
        if self.mappings.len() >= MAX_MAPPINGS {
            if let Some(oldest) = self.mappings.iter().enumerate().min_by_key(|(_, m)| m.last_used).map(|(i, _)| i) {
                self.mappings.swap_remove(oldest);
            }
        }
        self.mappings.push(Mapping { transport, port, last_used: now });
    }

    /// Whether traffic to the public `port` gets in (to the same port of
    /// the box): a live mapping or a forward.
    pub(crate) fn inbound(&mut self, now: Instant, transport: Transport, port: u16) -> bool {
        self.expire(now);
        if let Some(m) = self.mappings.iter_mut().find(|m| m.transport == transport && m.port == port) {
            m.last_used = now;
            return true;
        }
        self.forwards.iter().any(|f| f.transport == transport && f.port == port)
    }

    /// Live mappings.
    pub(crate) fn mappings(&self) -> usize {
        self.mappings.len()
    }

    fn expire(&mut self, now: Instant) {
        self.mappings.retain(|m| now.duration_since(m.last_used) < m.transport.timeout());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mapped_or_forwarded_ports_get_in_and_ports_are_kept() {
        let mut n = Masquerade::new(vec![PortForward::udp(51820)]);
        let t0 = Instant::now();
        n.sync(Some(Ipv4Addr::new(203, 0, 113, 20)));
        assert!(n.inbound(t0, Transport::Udp, 51820), "forwarded");
        assert!(!n.inbound(t0, Transport::Udp, 40000));
        assert!(!n.inbound(t0, Transport::Tcp, 51820), "the forward is UDP only");
        n.outbound(t0, Transport::Udp, 40000);
        assert!(n.inbound(t0, Transport::Udp, 40000));
        assert_eq!(n.mappings(), 1);
        // Idle mappings expire; traffic keeps them.
        assert!(n.inbound(t0 + Duration::from_secs(100), Transport::Udp, 40000));
        assert!(n.inbound(t0 + Duration::from_secs(219), Transport::Udp, 40000));
        assert!(!n.inbound(t0 + Duration::from_secs(340), Transport::Udp, 40000));
        assert_eq!(n.mappings(), 0);
    }

    #[test]
    fn a_new_public_address_forgets_every_mapping_but_not_the_forwards() {
        let mut n = Masquerade::new(vec![PortForward::udp(51820)]);
        let t0 = Instant::now();
        n.sync(Some(Ipv4Addr::new(203, 0, 113, 20)));
        n.outbound(t0, Transport::Udp, 40000);
        n.sync(Some(Ipv4Addr::new(203, 0, 113, 20)));
        assert_eq!(n.mappings(), 1, "the same address changes nothing");
        n.sync(Some(Ipv4Addr::new(203, 0, 113, 77)));
        assert_eq!((n.mappings(), n.flushes), (0, 1));
        assert!(!n.inbound(t0, Transport::Udp, 40000));
        assert!(n.inbound(t0, Transport::Udp, 51820));
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used() {
        let mut n = Masquerade::new(Vec::new());
        let t0 = Instant::now();
        for p in 0..MAX_MAPPINGS as u16 {
            n.outbound(t0 + Duration::from_millis(u64::from(p)), Transport::Tcp, 1000 + p);
        }
        n.outbound(t0 + Duration::from_secs(5), Transport::Tcp, 1000);
        n.outbound(t0 + Duration::from_secs(6), Transport::Tcp, 9);
        assert_eq!(n.mappings(), MAX_MAPPINGS);
        let later = t0 + Duration::from_secs(7);
        assert!(n.inbound(later, Transport::Tcp, 1000), "refreshed, kept");
        assert!(!n.inbound(later, Transport::Tcp, 1001), "the oldest went");
        assert!(n.inbound(later, Transport::Tcp, 9));
    }
}

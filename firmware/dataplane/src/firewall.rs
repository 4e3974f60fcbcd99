//! The zone firewall's rules and how a packet is decided. No state here:
//! `pipeline/nat.rs` asks [`Firewall::decide`] for the first packet of a
//! flow and for each packet to the box; replies and related ICMP errors are
//! admitted by connection tracking.
//!
//! Zones are ports (the WAN is one), the tunnel and the box itself
//! ([`Zone`]); a VXLAN segment is its LAN port (the schema's
//! `segment:<name>`). Order: the rules, first match wins; then the
//! zone-pair policies, first match wins; then the default. Each decision
//! says what made it, so every drop is counted by rule or policy.

use core::net::Ipv4Addr;

use heapless::Vec;

use crate::config::Prefix;
pub use crate::conntrack::Zone;

/// Most rules (`[[firewall.rules]]`).
pub const MAX_RULES: usize = 16;
/// Most zone-pair policies (`[[firewall.policy]]`).
pub const MAX_POLICIES: usize = 8;

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let it through (and track its flow).
    Accept,
    /// Drop it (counted on what decided).
    Drop,
}

/// Which protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtoMatch {
    /// Any IPv4.
    Any,
    /// TCP (ports may be given).
    Tcp,
    /// UDP (ports may be given).
    Udp,
    /// ICMP.
    Icmp,
}

/// One ordered rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Zone the packet comes from (`None`: any).
    pub from: Option<Zone>,
    /// Zone it goes to (`None`: any).
    pub to: Option<Zone>,
    /// Source prefix (`0.0.0.0/0` for any).
    pub source: Prefix,
    /// Destination prefix.
    pub destination: Prefix,
    /// Protocol.
    pub proto: ProtoMatch,
    /// Destination port range, inclusive (TCP/UDP only; `None`: any).
    pub ports: Option<(u16, u16)>,
    /// What a match does.
    pub action: Action,
}

/// A zone pair's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// From (`None`: any).
    pub from: Option<Zone>,
    /// To (`None`: any).
    pub to: Option<Zone>,
    /// Action.
    pub action: Action,
}

/// The firewall (present only when the configuration has `[firewall]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    /// Rules in order.
    pub rules: Vec<Rule, MAX_RULES>,
    /// Zone-pair policies in order.
    pub policies: Vec<Policy, MAX_POLICIES>,
    /// What neither decides.
    pub default: Action,
}

/// What a decision rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Rule `i`.
    Rule(usize),
    /// Policy `i`.
    Policy(usize),
    /// The default.
    Default,
}

/// The fields of a packet the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port (TCP/UDP), if the packet has one.
    pub dport: Option<u16>,
}

fn zone_matches(want: Option<Zone>, is: Zone) -> bool {
    want.is_none_or(|z| z == is)
}

impl Rule {
    /// Does `m`, going `from` → `to`, match?
    pub fn matches(&self, from: Zone, to: Zone, m: &Meta) -> bool {
        let proto = match self.proto {
            ProtoMatch::Any => true,
            ProtoMatch::Tcp => m.proto == 6,
            ProtoMatch::Udp => m.proto == 17,
            ProtoMatch::Icmp => m.proto == 1,
        };
        let ports = match self.ports {
            None => true,
            Some((lo, hi)) => m.dport.is_some_and(|p| lo <= p && p <= hi),
        };
        proto
            && ports
            && zone_matches(self.from, from)
            && zone_matches(self.to, to)
            && self.source.contains(m.src)
            && self.destination.contains(m.dst)
    }
}

impl Firewall {
    /// Decide a packet going `from` → `to`.
    pub fn decide(&self, from: Zone, to: Zone, m: &Meta) -> (Action, Decided) {
        if let Some((i, r)) = self.rules.iter().enumerate().find(|(_, r)| r.matches(from, to, m)) {
            return (r.action, Decided::Rule(i));
        }
        if let Some((i, p)) = self.policies.iter().enumerate().find(|(_, p)| zone_matches(p.from, from) && zone_matches(p.to, to)) {
            return (p.action, Decided::Policy(i));
        }
        (self.default, Decided::Default)
    }
}

/// Decisions per rule and per policy: new flows, and packets to the box.
/// For a drop rule or policy these are its drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirewallCounters {
    /// By rule index.
    pub rules: [u64; MAX_RULES],
    /// By policy index.
    pub policies: [u64; MAX_POLICIES],
    /// By the default.
    pub default: u64,
}

impl Default for FirewallCounters {
    fn default() -> FirewallCounters {
        FirewallCounters { rules: [0; MAX_RULES], policies: [0; MAX_POLICIES], default: 0 }
    }
}

impl FirewallCounters {
    /// Count one decision.
    pub fn count(&mut self, d: Decided) {
        let c = match d {
            Decided::Rule(i) => self.rules.get_mut(i),
            Decided::Policy(i) => self.policies.get_mut(i),
            Decided::Default => Some(&mut self.default),
        };
        if let Some(c) = c {
            *c = c.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortId;

    fn p(a: [u8; 4], len: u8) -> Prefix {
        Prefix::new(Ipv4Addr::from(a), len).unwrap()
    }

    #[test]
    fn first_rule_then_policy_then_default() {
        let any = p([0; 4], 0);
        let mut fw = Firewall { rules: Vec::new(), policies: Vec::new(), default: Action::Drop };
        fw.rules
            .push(Rule {
                from: Some(Zone::Tunnel),
                to: Some(Zone::Box),
                source: p([10, 2, 0, 0], 24),
                destination: any,
                proto: ProtoMatch::Udp,
                ports: Some((4789, 4789)),
                action: Action::Accept,
            })
            .unwrap();
        fw.rules
            .push(Rule {
                from: None,
                to: Some(Zone::Box),
                source: any,
                destination: any,
                proto: ProtoMatch::Any,
                ports: None,
                action: Action::Drop,
            })
            .unwrap();
        fw.policies.push(Policy { from: Some(Zone::Port(PortId(0))), to: None, action: Action::Accept }).unwrap();
        let m = |src: [u8; 4], proto, dport| Meta { proto, src: Ipv4Addr::from(src), dst: Ipv4Addr::new(10, 1, 0, 1), dport };
        assert_eq!(fw.decide(Zone::Tunnel, Zone::Box, &m([10, 2, 0, 1], 17, Some(4789))), (Action::Accept, Decided::Rule(0)));
        assert_eq!(fw.decide(Zone::Tunnel, Zone::Box, &m([10, 2, 0, 1], 17, Some(4790))), (Action::Drop, Decided::Rule(1)));
        assert_eq!(fw.decide(Zone::Tunnel, Zone::Box, &m([10, 3, 0, 1], 17, Some(4789))), (Action::Drop, Decided::Rule(1)));
        assert_eq!(fw.decide(Zone::Port(PortId(0)), Zone::Tunnel, &m([10, 3, 0, 1], 6, Some(1))), (Action::Accept, Decided::Policy(0)));
        assert_eq!(fw.decide(Zone::Tunnel, Zone::Port(PortId(0)), &m([10, 3, 0, 1], 1, None)), (Action::Drop, Decided::Default));
        let mut c = FirewallCounters::default();
        c.count(Decided::Rule(1));
        c.count(Decided::Default);
        c.count(Decided::Rule(99));
        assert_eq!((c.rules[1], c.default), (1, 1));
    }
}

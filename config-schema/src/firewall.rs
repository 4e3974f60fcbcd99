//! `[[nat]]` (SNAT exit) and `[firewall]` (the zone firewall): the types of
//! the file and the wire.
//!
//! ```toml
//! [[nat]]                      # VMs out to the internet as the WAN address
//! source = "10.1.1.0/24"
//! out = "wan0"
//!
//! [firewall]
//! default = "drop"             # what no rule and no policy decides
//! [[firewall.policy]]          # zone pairs, first match
//! from = "lan1"
//! to = "wan"
//! action = "accept"
//! [[firewall.rules]]           # ordered, first match, before the policies
//! name = "vxlan-from-wro"
//! from = "tunnel:wg0"
//! to = "box"
//! source = "10.2.0.0/24"
//! protocol = "udp"
//! port = 4789                  # or "1000-2000"
//! action = "accept"
//! ```
//!
//! Zones: a port's name, `wan` (the WAN port, whatever its name),
//! `tunnel:<name>`, `segment:<name>` (the segment's LAN port), `box` (the
//! box itself) and `any`. Rules decide the first packet of a flow (and every
//! packet to the box); replies and related ICMP errors pass by state.
//! Without `[firewall]` the box forwards what it routes and its WAN answers
//! only WireGuard, as before. Whether the names exist is `validate`'s job.

use core::fmt;
use core::str::FromStr;

use heapless::Vec;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::limits::{wire_max_enum, wire_max_struct, MAX_FIREWALL_POLICIES, MAX_FIREWALL_RULES};
use crate::types::{display_buf, human_or_wire, Ipv4Cidr, Name, ParseVisitor};

/// `[[nat]]`: packets from `source` leaving by port `out` take that port's
/// address (a DHCP lease's included) as their source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nat {
    /// The prefix translated, `a.b.c.d/len`.
    pub source: Ipv4Cidr,
    /// The WAN port it leaves by.
    pub out: Name,
}

/// Where traffic comes from or goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Zone {
    /// Any zone.
    #[default]
    Any,
    /// The box itself (traffic addressed to it).
    Box,
    /// The WAN port.
    Wan,
    /// A port by name.
    Port(Name),
    /// A WireGuard interface by name.
    Tunnel(Name),
    /// A VXLAN segment by name (its LAN port).
    Segment(Name),
}

/// Why a zone was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneError;

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a zone: a port name, wan, box, any, tunnel:<name> or segment:<name>")
    }
}

impl FromStr for Zone {
    type Err = ZoneError;
    fn from_str(s: &str) -> Result<Zone, ZoneError> {
        let name = |n: &str| Name::new(n).map_err(|_| ZoneError);
        Ok(match s {
            "any" => Zone::Any,
            "box" => Zone::Box,
            "wan" => Zone::Wan,
            _ => match s.split_once(':') {
                Some(("tunnel", n)) => Zone::Tunnel(name(n)?),
                Some(("segment", n)) => Zone::Segment(name(n)?),
                Some(_) => return Err(ZoneError),
                None => Zone::Port(name(s)?),
            },
        })
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Any => f.write_str("any"),
            Zone::Box => f.write_str("box"),
            Zone::Wan => f.write_str("wan"),
            Zone::Port(n) => f.write_str(n.as_str()),
            Zone::Tunnel(n) => write!(f, "tunnel:{n}"),
            Zone::Segment(n) => write!(f, "segment:{n}"),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum ZoneWire {
    Any,
    Box,
    Wan,
    Port(Name),
    Tunnel(Name),
    Segment(Name),
}

impl From<&Zone> for ZoneWire {
    fn from(z: &Zone) -> ZoneWire {
        match z.clone() {
            Zone::Any => ZoneWire::Any,
            Zone::Box => ZoneWire::Box,
            Zone::Wan => ZoneWire::Wan,
            Zone::Port(n) => ZoneWire::Port(n),
            Zone::Tunnel(n) => ZoneWire::Tunnel(n),
            Zone::Segment(n) => ZoneWire::Segment(n),
        }
    }
}

impl From<ZoneWire> for Zone {
    fn from(z: ZoneWire) -> Zone {
        match z {
            ZoneWire::Any => Zone::Any,
            ZoneWire::Box => Zone::Box,
            ZoneWire::Wan => Zone::Wan,
            ZoneWire::Port(n) => Zone::Port(n),
            ZoneWire::Tunnel(n) => Zone::Tunnel(n),
            ZoneWire::Segment(n) => Zone::Segment(n),
        }
    }
}

human_or_wire!(Zone, ZoneWire, 40, "a zone: a port name, wan, box, any, tunnel:<name> or segment:<name>");

/// What a rule or policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    #[default]
    Drop,
}

/// Which protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// A destination port or an inclusive range: `4789` or `"1000-2000"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// Why a port range was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRangeError;

impl fmt::Display for PortRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a port (1..=65535) or a range like \"1000-2000\"")
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;
    fn from_str(s: &str) -> Result<PortRange, PortRangeError> {
        let num = |t: &str| {
            if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PortRangeError);
            }
            t.parse::<u16>().map_err(|_| PortRangeError)
        };
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (num(a.trim())?, num(b.trim())?),
            None => (num(s.trim())?, num(s.trim())?),
        };
        Ok(PortRange { first: a, last: b })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            if self.first == self.last {
                s.serialize_u16(self.first)
            } else {
                s.serialize_str(&display_buf::<12>(self))
            }
        } else {
            (self.first, self.last).serialize(s)
        }
    }
}

struct PortRangeVisitor;

impl Visitor<'_> for PortRangeVisitor {
    type Value = PortRange;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port (1..=65535) or a range like \"1000-2000\"")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
        let p = u16::try_from(v).map_err(|_| E::custom(PortRangeError))?;
        Ok(PortRange { first: p, last: p })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
        self.visit_u64(u64::try_from(v).map_err(|_| E::custom(PortRangeError))?)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(PortRangeVisitor)
        } else {
            let (first, last) = <(u16, u16)>::deserialize(d)?;
            Ok(PortRange { first, last })
        }
    }
}

/// `[[firewall.rules]]`: one ordered rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in status and doctor (`rule 2 "no-ssh-out" dropped 14`).
    #[serde(default)]
    pub name: Option<Name>,
    /// Default `any`.
    #[serde(default)]
    pub from: Zone,
    /// Default `any`.
    #[serde(default)]
    pub to: Zone,
    /// Source prefix; default any.
    #[serde(default)]
    pub source: Option<Ipv4Cidr>,
    /// Destination prefix; default any.
    #[serde(default)]
    pub destination: Option<Ipv4Cidr>,
    /// `tcp`, `udp`, `icmp` or `any` (default).
    #[serde(default)]
    pub protocol: Protocol,
    /// Destination port or range (tcp and udp only).
    #[serde(default)]
    pub port: Option<PortRange>,
    pub action: Action,
}

/// `[[firewall.policy]]`: the default of a zone pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub from: Zone,
    #[serde(default)]
    pub to: Zone,
    pub action: Action,
}

/// `[firewall]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    /// What no rule and no policy decides: `drop` (default) or `accept`.
    #[serde(default)]
    pub default: Action,
    /// Zone-pair policies, first match.
    #[serde(default, deserialize_with = "crate::config::bounded")]
    pub policy: Vec<Policy, MAX_FIREWALL_POLICIES>,
    /// Ordered rules, first match, before the policies.
    #[serde(default, deserialize_with = "crate::config::bounded")]
    pub rules: Vec<Rule, MAX_FIREWALL_RULES>,
}

wire_max_struct!(Nat { Ipv4Cidr, Name });
wire_max_enum!(Zone { (), (), (), (Name), (Name), (Name) });
wire_max_enum!(Action { (), () });
wire_max_enum!(Protocol { (), (), (), () });
wire_max_struct!(PortRange { u16, u16 });
wire_max_struct!(Rule { Option<Name>, Zone, Zone, Option<Ipv4Cidr>, Option<Ipv4Cidr>, Protocol, Option<PortRange>, Action });
wire_max_struct!(Policy { Zone, Zone, Action });
wire_max_struct!(Firewall { Action, Vec<Policy, MAX_FIREWALL_POLICIES>, Vec<Rule, MAX_FIREWALL_RULES> });

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn zones_and_ports_parse_and_print() {
        for s in ["any", "box", "wan", "lan1", "tunnel:wg0", "segment:overlay"] {
            assert_eq!(s.parse::<Zone>().unwrap().to_string(), s);
        }
        assert!("bogus:x".parse::<Zone>().is_err());
        assert!("tunnel:".parse::<Zone>().is_err());
        assert!("-x".parse::<Zone>().is_err());
        assert_eq!("1000-2000".parse::<PortRange>(), Ok(PortRange { first: 1000, last: 2000 }));
        assert_eq!("53".parse::<PortRange>(), Ok(PortRange { first: 53, last: 53 }));
        assert!("70000".parse::<PortRange>().is_err());
        assert!("+5".parse::<PortRange>().is_err());
    }

    #[test]
    fn wire_round_trip() {
        let r = Rule {
            name: Some(Name::new("r").unwrap()),
            from: Zone::Segment(Name::new("overlay").unwrap()),
            to: Zone::Wan,
            source: None,
            destination: Some("10.0.0.0/8".parse().unwrap()),
            protocol: Protocol::Tcp,
            port: Some(PortRange { first: 1, last: 2 }),
            action: Action::Accept,
        };
        let mut buf = [0u8; 128];
        let bytes = postcard::to_slice(&r, &mut buf).unwrap();
        assert_eq!(postcard::from_bytes::<Rule>(bytes).unwrap(), r);
    }
}

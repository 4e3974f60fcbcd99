//! Checks of `[[nat]]` and `[firewall]`: every name a zone or an `out`
//! gives exists, ports only where a protocol has them, ranges in order,
//! the platform's capacities, and what a platform cannot run (routerd-host
//! translates nothing: its WAN is a UDP socket).

use super::{AtMost, Checker, Code, Who};
use crate::config::PortRole;
use crate::firewall::{Protocol, Zone};
use crate::platform::{Platform, RUNS};

impl Checker<'_, '_> {
    pub(super) fn nat_firewall(&mut self) {
        let c = self.config;
        let who = Who(self.platform);
        let runs = self.platform.map_or(&RUNS, Platform::runs);
        for (i, n) in c.nat.iter().enumerate() {
            match c.port(&n.out) {
                None => report!(
                    self,
                    Code::UnknownPort,
                    path = ("nat[{i}].out"),
                    value = ("{}", n.out),
                    msg = ("there is no port called {}", n.out),
                    hint = ("name the WAN port, like out = \"wan0\"")
                ),
                Some(p) if p.role != PortRole::Wan => report!(
                    self,
                    Code::NatOutNotWan,
                    path = ("nat[{i}].out"),
                    value = ("{}", n.out),
                    msg = ("{} is a LAN port; SNAT exits through the WAN port (its address, a DHCP lease's included)", n.out),
                    hint = ("name the WAN port")
                ),
                Some(_) => {}
            }
            if let Some(first) = c.nat.iter().take(i).position(|m| m.source.overlaps(&n.source)) {
                report!(
                    self,
                    Code::NatSourceOverlap,
                    path = ("nat[{i}].source"),
                    value = ("{}", n.source),
                    msg = ("{} overlaps nat[{first}].source; the first matching entry translates", n.source),
                    hint = ("keep one entry per source prefix")
                );
            }
            if self.platform == Some(Platform::Host) {
                report!(
                    self,
                    Code::NatUnsupported,
                    path = ("nat[{i}]"),
                    value = ("{}", n.source),
                    msg = ("{who} cannot translate: its WAN is a UDP socket of the host, not a port the dataplane sends frames on"),
                    hint = ("let the host masquerade (nft … masquerade), or run the image on this side")
                );
            }
        }
        if c.nat.len() > runs.nat {
            report!(
                self,
                Code::PlatformCapacity,
                path = ("nat[{}]", runs.nat),
                value = (""),
                msg = ("{who} runs {} SNAT rules; this configuration has {}", AtMost(runs.nat), c.nat.len()),
                hint = ("cover neighbouring sources with one prefix")
            );
        }
        let Some(fw) = &c.firewall else { return };
        for (i, p) in fw.policy.iter().enumerate() {
            self.zone(format_args!("firewall.policy[{i}].from"), &p.from);
            self.zone(format_args!("firewall.policy[{i}].to"), &p.to);
        }
        for (i, r) in fw.rules.iter().enumerate() {
            self.zone(format_args!("firewall.rules[{i}].from"), &r.from);
            self.zone(format_args!("firewall.rules[{i}].to"), &r.to);
            if let Some(port) = r.port {
                if matches!(r.protocol, Protocol::Icmp | Protocol::Any) {
                    report!(
                        self,
                        Code::PortWithoutProtocol,
                        path = ("firewall.rules[{i}].port"),
                        value = ("{port}"),
                        msg = ("a port only means something for tcp or udp; this rule's protocol is {:?}", r.protocol),
                        hint = ("set protocol = \"tcp\" or \"udp\", or leave port out")
                    );
                }
                if port.first == 0 || port.first > port.last {
                    report!(
                        self,
                        Code::PortRangeOrder,
                        path = ("firewall.rules[{i}].port"),
                        value = ("{port}"),
                        msg = ("{port} is not a port range: ports run 1..=65535, the first not above the last"),
                        hint = ("write a port like 4789 or a range like \"1000-2000\"")
                    );
                }
            }
            // A rule after a catch-all of the same zones never matches.
            let shadow = fw.rules.iter().take(i).position(|q| {
                q.from == r.from
                    && q.to == r.to
                    && q.source.is_none()
                    && q.destination.is_none()
                    && q.protocol == Protocol::Any
                    && q.port.is_none()
            });
            if let Some(k) = shadow {
                report!(
                    self,
                    Code::FirewallShadowed,
                    path = ("firewall.rules[{i}]"),
                    value = ("{}", r.name.as_ref().map_or("", |n| n.as_str())),
                    msg = ("firewall.rules[{k}] already matches everything from {} to {}: this rule never decides", r.from, r.to),
                    hint = ("move the narrower rule before the broader one")
                );
            }
        }
        if fw.rules.len() > runs.firewall_rules {
            report!(
                self,
                Code::PlatformCapacity,
                path = ("firewall.rules[{}]", runs.firewall_rules),
                value = (""),
                msg = ("{who} runs {} firewall rules; this configuration has {}", AtMost(runs.firewall_rules), fw.rules.len()),
                hint = ("merge rules with one prefix or a port range, or use [[firewall.policy]] for whole zone pairs")
            );
        }
        if fw.policy.len() > runs.firewall_policies {
            report!(
                self,
                Code::PlatformCapacity,
                path = ("firewall.policy[{}]", runs.firewall_policies),
                value = (""),
                msg = ("{who} runs {} firewall policies; this configuration has {}", AtMost(runs.firewall_policies), fw.policy.len()),
                hint = ("use from = \"any\" or to = \"any\" for several pairs at once")
            );
        }
    }

    /// A zone names something that exists.
    fn zone(&mut self, path: core::fmt::Arguments<'_>, z: &Zone) {
        let c = self.config;
        let (exists, what, list): (bool, &str, &str) = match z {
            Zone::Any | Zone::Box => (true, "", ""),
            Zone::Wan => (c.ports.iter().any(|p| p.role == PortRole::Wan), "a WAN port", "mark one port role = \"wan\""),
            Zone::Port(n) => (c.port(n).is_some(), "a port of that name", "name one of the [[ports]]"),
            Zone::Tunnel(n) => (c.tunnel(n).is_some(), "a [[wireguard]] interface of that name", "name the [[wireguard]] interface"),
            Zone::Segment(n) => {
                (c.segments.iter().any(|s| s.name == *n), "a [[segments]] entry of that name", "name one of the [[segments]]")
            }
        };
        if !exists {
            report!(
                self,
                Code::UnknownZone,
                path = ("{path}"),
                value = ("{z}"),
                msg = ("zone {z}: there is no {what}"),
                hint = ("{list}; zones are port names, wan, box, any, tunnel:<name> and segment:<name>")
            );
        }
    }
}

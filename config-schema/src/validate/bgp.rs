//! Checks of `[bgp]` and of segments with `control = "evpn"`: the AS and
//! hold time in range, a usable router ID, peers that are unicast, listed
//! once and reached through the tunnel or a LAN port (never the WAN: the
//! box admits BGP only from there), one VTEP for every EVPN segment (the
//! box originates its routes with one next hop), and what a platform
//! cannot run yet.

use core::net::Ipv4Addr;

use super::{not_unicast, Checker, Code, Who};
use crate::config::{PortRole, SegmentControl};
use crate::platform::Platform;
use crate::types::PortAddress;

/// Largest AS number a box may have (4294967295 is reserved, RFC 7300).
pub const ASN_MAX: u32 = u32::MAX - 1;

impl Checker<'_, '_> {
    pub(super) fn bgp(&mut self) {
        let c = self.config;
        let evpn = || c.segments.iter().enumerate().filter(|(_, s)| s.control == SegmentControl::Evpn);
        let Some(b) = c.bgp.as_ref() else {
            for (i, s) in evpn() {
                report!(
                    self,
                    Code::EvpnWithoutBgp,
                    path = ("segments[{i}].control"),
                    value = ("evpn"),
                    msg = ("segment {} learns its VTEPs from BGP EVPN, but the configuration has no [bgp] section", s.name),
                    hint = ("add [bgp] with asn and the Proxmox nodes as peers, or use control = \"static\" with remote_vteps")
                );
            }
            return;
        };
        if b.asn == 0 || b.asn > ASN_MAX {
            report!(
                self,
                Code::BgpAsnRange,
                path = ("bgp.asn"),
                value = ("{}", b.asn),
                msg = ("AS {} is outside 1..={ASN_MAX}", b.asn),
                hint = ("use the ASN of the Proxmox EVPN controller (iBGP: the box and every peer share it), like 65000")
            );
        }
        if b.hold_time == 1 || b.hold_time == 2 {
            report!(
                self,
                Code::BgpHoldTime,
                path = ("bgp.hold_time"),
                value = ("{}", b.hold_time),
                msg = ("hold time {} s is neither 0 nor 3..=65535 (RFC 4271)", b.hold_time),
                hint = ("use 9 like FRR's datacenter profile, 90 (the default), or 0 for no keepalives")
            );
        }
        match (b.router_id, b.effective_router_id(c)) {
            (Some(id), _) if not_unicast(id).is_some() || id.is_loopback() => {
                let what = not_unicast(id).unwrap_or("a loopback address");
                report!(
                    self,
                    Code::BgpRouterId,
                    path = ("bgp.router_id"),
                    value = ("{id}"),
                    msg = ("{id} is {what}, not a BGP identifier"),
                    hint = ("leave router_id out (the first segment's local_vtep is used) or give this box's tunnel address")
                );
            }
            (_, None) => report!(
                self,
                Code::BgpRouterId,
                path = ("bgp.router_id"),
                value = (""),
                msg = ("no router_id, no segment and no tunnel address to take one from"),
                hint = ("set router_id = \"a.b.c.d\" (this box's tunnel address)")
            ),
            _ => {}
        }
        if b.peers.is_empty() {
            report!(
                self,
                Code::BgpNoPeers,
                path = ("bgp.peers"),
                value = ("[]"),
                msg = ("[bgp] has no peers: the box learns no VTEPs and advertises nothing"),
                hint = ("add peers = [{{ address = \"10.0.0.2\", name = \"pve1\" }}] for each Proxmox node (its tunnel address)")
            );
        }
        let wan = c.ports.iter().find(|p| p.role == PortRole::Wan);
        for (i, p) in b.peers.iter().enumerate() {
            let a = p.address;
            if let Some(what) = not_unicast(a).or(if c.is_own_address(a) { Some("this box's own address") } else { None }) {
                report!(
                    self,
                    Code::BgpPeerInvalid,
                    path = ("bgp.peers[{i}].address"),
                    value = ("{a}"),
                    msg = ("{a} is {what}; a BGP peer is another host"),
                    hint = ("give the Proxmox node's tunnel address")
                );
                continue;
            }
            if let Some(first) = b.peers.iter().take(i).position(|q| q.address == a) {
                report!(
                    self,
                    Code::BgpPeerDuplicate,
                    path = ("bgp.peers[{i}].address"),
                    value = ("{a}"),
                    msg = ("{a} is already bgp.peers[{first}]"),
                    hint = ("list each peer once")
                );
                continue;
            }
            let on_lan =
                c.ports.iter().any(|p| p.role == PortRole::Lan && matches!(p.address, Some(PortAddress::Static(n)) if n.contains(a)));
            if c.route_peer(a).is_none() && !on_lan {
                let wan_subnet = wan.and_then(|w| match w.address {
                    Some(PortAddress::Static(n)) if n.contains(a) => Some(w.name.as_str()),
                    _ => None,
                });
                match wan_subnet {
                    Some(w) => report!(
                        self,
                        Code::BgpPeerUnreachable,
                        path = ("bgp.peers[{i}].address"),
                        value = ("{a}"),
                        msg = ("{a} is on the WAN port {w}'s subnet; the box speaks BGP only through the tunnel or a LAN port"),
                        hint = ("peer with the node's tunnel address (inside a peer's allowed_ips)")
                    ),
                    None => report!(
                        self,
                        Code::BgpPeerUnreachable,
                        path = ("bgp.peers[{i}].address"),
                        value = ("{a}"),
                        msg = ("{a} is inside no peer's allowed_ips and no LAN port's subnet: BGP to it would leave on the WAN"),
                        hint = ("use the node's tunnel address, or add it to that WireGuard peer's allowed_ips")
                    ),
                }
            }
        }
        let first: Option<(usize, Ipv4Addr)> = evpn().next().map(|(i, s)| (i, s.local_vtep));
        if let Some((f, vtep)) = first {
            for (i, s) in evpn().filter(|(_, s)| s.local_vtep != vtep) {
                report!(
                    self,
                    Code::EvpnVtepMixed,
                    path = ("segments[{i}].local_vtep"),
                    value = ("{}", s.local_vtep),
                    msg = ("EVPN segments share one VTEP; segments[{f}] (the first EVPN segment) uses {vtep}"),
                    hint = ("set local_vtep = \"{vtep}\" on every segment with control = \"evpn\"")
                );
            }
        } else {
            report!(
                self,
                Code::BgpUnused,
                path = ("bgp"),
                value = ("AS {}", b.asn),
                msg = ("[bgp] is set but no segment has control = \"evpn\": the sessions carry nothing"),
                hint = ("set control = \"evpn\" on the segments Proxmox's EVPN zone shares")
            );
        }
        // Without a platform: refused when no platform runs it.
        let refused = match self.platform {
            Some(p) => !p.runs_bgp(),
            None => Platform::ALL.iter().all(|p| !p.runs_bgp()),
        };
        if refused {
            let who = Who(self.platform);
            report!(
                self,
                Code::BgpUnsupported,
                path = ("bgp"),
                value = ("AS {}", b.asn),
                msg = ("{who} does not run [bgp] (BGP EVPN) yet: not yet on this platform"),
                hint = ("list remote_vteps with control = \"static\" on this platform")
            );
        }
    }
}

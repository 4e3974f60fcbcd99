//! ARP: the box's own addresses, proxy-ARP for capturing claims, live-host
//! evidence for the claim state machine (`crate::claims`), probes, the reply
//! rate limit, neighbour learning.

use super::*;

impl Core {
    pub(super) fn arp<X: Transmit + ?Sized>(&mut self, now: Instant, port: PortId, buf: &mut FrameBuf<'_>, tx: &mut X) -> Verdict {
        let Some(pc) = self.cfg.ports.get(port.index()) else {
            return self.drop(DropReason::UnknownPort);
        };
        let (port_mac, port_addr, subnet, pc_dhcp) = (pc.mac, pc.address, pc.subnet(), pc.dhcp);
        let repr = match buf.frame().get(ETH_LEN..).map(ArpPacket::new_checked) {
            Some(Ok(p)) => ArpRepr::parse(&p),
            _ => return self.drop(DropReason::ArpMalformed),
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation, source_hardware_addr: sha, source_protocol_addr: spa, target_protocol_addr: tpa, ..
        }) = repr
        else {
            return self.drop(DropReason::ArpMalformed);
        };
        if !sha.is_unicast() {
            return self.drop(DropReason::ArpBadSender);
        }
        if self.is_our_mac(sha) {
            return self.drop(DropReason::OwnSourceMac);
        }
        // The DHCP client resolves its server for unicast renewals itself.
        if pc_dhcp && operation == ArpOperation::Reply {
            let _ = tx.stack(port, buf.frame());
        }

        // A live host using a proxy-ARP claim's address: never hijack it.
        // (A live host asking for the box's own address is still answered.)
        if !spa.is_unspecified() {
            if let Some(ci) = self.proxy_claim(spa) {
                let evidence = if operation == ArpOperation::Reply { Evidence::ArpReply } else { Evidence::ArpRequest };
                let asks_us = operation == ArpOperation::Request && Some(tpa) == port_addr;
                if self.live_host(now, ci, sha, port, evidence) && !asks_us {
                    return self.drop(DropReason::ArpConflict);
                }
            }
        }

        // Neighbour learning: replies and requests refresh known entries;
        // a request aimed at us creates one (we are about to talk to it).
        let mut learned = false;
        if !spa.is_unspecified() && subnet.is_some_and(|s| s.contains(spa)) {
            let create = operation == ArpOperation::Request && Some(tpa) == port_addr;
            let t = self.cfg.timing;
            if self.neighbors.learn(port, spa, sha, now, t.arp_reachable_ms, create) {
                learned = true;
                self.counters.arp_learned += 1;
                let Core { pending, counters, .. } = self;
                pending.release(port, spa, |f| {
                    if let Some(d) = f.get_mut(..6) {
                        d.copy_from_slice(sha.as_bytes());
                    }
                    send_extra(counters, tx, port, f);
                });
            }
        }

        match operation {
            ArpOperation::Request => {
                if Some(tpa) == port_addr {
                    if !arp_in_place(buf, sha, ArpOperation::Reply, port_mac, tpa, sha, spa) {
                        return self.drop(DropReason::NoHeadroom);
                    }
                    self.counters.arp_replies_own += 1;
                    return Verdict::Transmit(port);
                }
                let Some(ci) = self.routes.claim(tpa) else {
                    return self.drop(DropReason::ArpNotOurs);
                };
                let captures_here = self
                    .cfg
                    .claims
                    .get(ci)
                    .is_some_and(|c| matches!(c.side, ClaimSide::Remote { capture: Capture::ProxyArp, port: p, .. } if p == port));
                if !captures_here {
                    return self.drop(DropReason::ArpNotOurs);
                }
                if spa.is_unspecified() {
                    // Another host probing for the address: while the box
                    // probes or holds a conflict, that host wants it too.
                    self.live_host(now, ci, sha, port, Evidence::ArpProbe);
                    if let Some(rt) = self.claims.get_mut(ci) {
                        rt.counters.probes_seen += 1;
                    }
                    return self.drop(DropReason::ArpProbeForClaim);
                }
                let Some(rt) = self.claims.get_mut(ci) else {
                    return self.drop(DropReason::ArpNotOurs);
                };
                match rt.state {
                    ClaimState::Disabled => return self.drop(DropReason::ArpClaimInactive),
                    ClaimState::InConflict => return self.drop(DropReason::ArpClaimInConflict),
                    ClaimState::Probing => return self.drop(DropReason::ArpClaimProbing),
                    ClaimState::Active => {}
                }
                if !rt.replies.take(now) {
                    rt.counters.arp_replies_rate_limited += 1;
                    return self.drop(DropReason::ArpReplyRateLimited);
                }
                rt.counters.arp_replies += 1;
                if !arp_in_place(buf, sha, ArpOperation::Reply, port_mac, tpa, sha, spa) {
                    return self.drop(DropReason::NoHeadroom);
                }
                Verdict::Transmit(port)
            }
            ArpOperation::Reply if learned => Verdict::Consumed,
            ArpOperation::Reply => self.drop(DropReason::ArpUnsolicited),
            _ => self.drop(DropReason::ArpMalformed),
        }
    }
}

//! Forwarding (stage 5): route lookup, loop guard, TTL and MTU with their ICMP
//! errors, the MSS clamp on tunnel crossings, per-claim counters; and packets
//! the box originates.

use super::*;

impl Core {
    /// `h`: the header as `ipv4_checks` found it (`buf` holds exactly the
    /// packet). `tracked`: intake found the packet's flow (a reply to a
    /// translated flow, routed to the flow's original source).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        ingress: Ingress,
        h: &V4,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        tracked: Option<(usize, Dir)>,
    ) -> Verdict {
        let (src, dst, ttl, total, df) = (h.src, h.dst, h.ttl, h.total, h.df);
        let fragment = h.fragment();
        let dst = self.tracked_destination(tracked).unwrap_or(dst);
        let Some(decision) = self.routes.lookup(&self.cfg, dst, |i| self.claim_enabled(i)) else {
            return self.drop(DropReason::NoRoute);
        };
        let to_tunnel = matches!(decision.hop, NextHop::Tunnel(_));
        let from_tunnel = matches!(ingress, Ingress::Tunnel(_));
        if from_tunnel && to_tunnel {
            if let Some(c) = self.claim_counters(decision.claim) {
                c.loops += 1;
            }
            return self.drop(DropReason::TunnelLoop);
        }
        if ttl <= 1 {
            self.counters.drop(DropReason::TtlExpired);
            return self.icmp_error(now, ingress, buf, tunnel, tx, Icmpv4Message::TimeExceeded, 0, 0);
        }
        let mtu = match decision.hop {
            NextHop::Tunnel(_) => self.cfg.tunnel.mtu,
            NextHop::Port { port, .. } => self.cfg.ports.get(port.index()).map_or(0, |p| p.mtu),
        };
        if total > usize::from(mtu) {
            if df {
                self.counters.drop(DropReason::FragmentationNeeded);
                // Code 4: fragmentation needed and DF set (RFC 1191 next-hop MTU).
                return self.icmp_error(now, ingress, buf, tunnel, tx, Icmpv4Message::DstUnreachable, 4, mtu);
            }
            return self.drop(DropReason::TooBigNoDf);
        }
        // Connection tracking, SNAT and the firewall (pipeline/nat.rs).
        let (to, out) = match decision.hop {
            NextHop::Tunnel(_) => (nat::Zone::Tunnel, None),
            NextHop::Port { port, .. } => (nat::Zone::Port(port), Some(port)),
        };
        if let Err(reason) = self.stateful(now, nat::zone_in(ingress), to, out, tracked, fragment, buf) {
            return self.drop(reason);
        }
        // NAT (above) rewrote addresses and ports at most: the header's
        // length, TTL and fragment fields are still those of `h`.
        if !decrement_ttl(buf.frame_mut()) {
            return self.drop(DropReason::Ipv4Malformed);
        }
        if from_tunnel || to_tunnel {
            let src_claim = self.routes.claim(src);
            let dst_claim = decision.claim.or_else(|| self.routes.claim(dst));
            // Path MSS: tunnel MTU − 40, lowered further by claim overrides.
            let mut limit = self.cfg.tunnel.mtu.saturating_sub(40);
            for ci in [src_claim, dst_claim].into_iter().flatten() {
                if let Some(m) = self.cfg.claims.get(ci).and_then(|c| c.mss) {
                    limit = limit.min(m);
                }
            }
            // Only a TCP segment that is not a later fragment can be a SYN.
            let clamped = h.proto == IpProtocol::Tcp
                && h.frag_offset == 0
                && matches!(buf.frame_mut().get_mut(h.hl..).map(|tcp| mss::clamp(tcp, limit)), Some(Clamp::Clamped { .. }));
            if clamped {
                self.counters.syns_clamped += 1;
            }
            for ci in [src_claim, dst_claim] {
                if let Some(c) = self.claim_counters(ci) {
                    if clamped {
                        c.syns_clamped += 1;
                    }
                    if to_tunnel {
                        c.to_tunnel.add(total);
                    } else {
                        c.from_tunnel.add(total);
                    }
                }
            }
        }
        self.counters.forwarded += 1;
        match decision.hop {
            NextHop::Tunnel(peer) => self.tunnel_out(now, peer, buf, tunnel, tx),
            NextHop::Port { port, gateway } => self.ip_out(now, port, gateway.unwrap_or(dst), buf),
        }
    }

    /// Send a packet the box originated (echo reply, ICMP error) by route.
    pub(super) fn send_own<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let Ok(ip) = Ipv4Packet::new_checked(buf.frame()) else {
            return self.drop(DropReason::Ipv4Malformed);
        };
        let dst = ip.dst_addr();
        match self.routes.lookup(&self.cfg, dst, |i| self.claim_enabled(i)).map(|d| d.hop) {
            Some(NextHop::Tunnel(peer)) => self.tunnel_out(now, peer, buf, tunnel, tx),
            Some(NextHop::Port { port, gateway }) => self.ip_out(now, port, gateway.unwrap_or(dst), buf),
            None => self.drop(DropReason::NoRoute),
        }
    }

    /// Turn the IPv4 packet in `buf` into an ICMP error about it, in place,
    /// and send it back to its source (rate-limited). The caller has already
    /// counted the drop of the original packet.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn icmp_error<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        ingress: Ingress,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        kind: Icmpv4Message,
        code: u8,
        mtu: u16,
    ) -> Verdict {
        let Ok(ip) = Ipv4Packet::new_checked(buf.frame()) else { return Verdict::Consumed };
        let (orig_src, hl) = (ip.src_addr(), usize::from(ip.header_len()));
        if ip.frag_offset() != 0 || self.is_broadcast(orig_src) {
            return Verdict::Consumed;
        }
        // Never an error about an error (RFC 1812 §4.3.2.7).
        if ip.next_header() == IpProtocol::Icmp {
            let t = ip.payload().first().copied().map(Icmpv4Message::from);
            if !matches!(t, Some(Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply)) {
                return Verdict::Consumed;
            }
        }
        if !self.icmp_bucket.take(now) {
            self.counters.icmp_errors_rate_limited += 1;
            return Verdict::Consumed;
        }
        let our_addr = match ingress {
            Ingress::Port(p) => self.cfg.ports.get(p.index()).and_then(|p| p.address),
            Ingress::Tunnel(_) => self.cfg.tunnel.address.or_else(|| self.wan_address()),
        };
        // A port without an address has no source for the error.
        let Some(our_addr) = our_addr else { return Verdict::Consumed };
        // Quote the header and 8 bytes of payload (RFC 792).
        let quote = buf.len().min(hl + 8);
        buf.truncate(quote);
        let ident = self.next_ident();
        let Ok(f) = buf.push_head(IPV4_LEN + 8) else {
            return Verdict::Consumed;
        };
        if !write_ipv4(f, our_addr, orig_src, IpProtocol::Icmp, 8 + quote, OWN_TTL, false, ident) {
            return Verdict::Consumed;
        }
        if let Some(icmp) = f.get_mut(IPV4_LEN..) {
            if let Some(h) = icmp.get_mut(..8) {
                let [m0, m1] = mtu.to_be_bytes();
                h.copy_from_slice(&[u8::from(kind), code, 0, 0, 0, 0, m0, m1]);
            }
            let c = checksum::internet(icmp);
            if let Some(h) = icmp.get_mut(2..4) {
                h.copy_from_slice(&c.to_be_bytes());
            }
        }
        self.counters.icmp_errors_sent += 1;
        self.send_own(now, buf, tunnel, tx)
    }
}

/// Decrement the TTL of the IPv4 header at the start of `ip` (the caller
/// checked that it is above 1) and update the header checksum (RFC 1624).
/// False when `ip` is shorter than a header.
fn decrement_ttl(ip: &mut [u8]) -> bool {
    // TTL is the high byte of the word at offset 8 (TTL | protocol).
    let [_, _, _, _, _, _, _, _, ttl, proto, c0, c1, ..] = ip else { return false };
    let old = u16::from_be_bytes([*ttl, *proto]);
    *ttl = ttl.saturating_sub(1);
    let new = u16::from_be_bytes([*ttl, *proto]);
    let c = checksum::adjust(u16::from_be_bytes([*c0, *c1]), old, new, false);
    [*c0, *c1] = c.to_be_bytes();
    true
}

#[cfg(test)]
mod tests {
    use super::decrement_ttl;

    #[test]
    fn decrement_ttl_keeps_the_header_checksum_valid() {
        let mut h =
            [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
        let c = crate::checksum::internet(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(decrement_ttl(&mut h));
        assert_eq!(h[8], 0x3f);
        assert_eq!(crate::checksum::internet(&h), 0, "checksum over a valid header is zero");
        assert!(!decrement_ttl(&mut h[..11]));
    }
}

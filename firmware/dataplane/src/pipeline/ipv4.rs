//! IPv4 intake, one path for packets from a port and from the tunnel: header
//! checks, live-host evidence, cryptokey routing for the tunnel, traffic for
//! the box itself (the policy: ICMP from a LAN or the tunnel goes to the
//! services layer through `Transmit::local`; WireGuard and VXLAN on the WAN;
//! nothing else), then forwarding.

use super::*;

impl Core {
    /// Common IPv4 checks; trims link padding. Returns (src, dst, proto, fragment).
    pub(super) fn ipv4_checks(&mut self, buf: &mut FrameBuf<'_>) -> Result<(Ipv4Addr, Ipv4Addr, IpProtocol, bool), DropReason> {
        let ip = Ipv4Packet::new_checked(buf.frame()).map_err(|_| DropReason::Ipv4Malformed)?;
        if ip.version() != 4 {
            return Err(DropReason::Ipv4Malformed);
        }
        if !ip.verify_checksum() {
            return Err(DropReason::Ipv4BadChecksum);
        }
        let r = (ip.src_addr(), ip.dst_addr(), ip.next_header(), ip.more_frags() || ip.frag_offset() != 0);
        let total = usize::from(ip.total_len());
        buf.truncate(total);
        let src = r.0;
        if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || self.cfg.is_own_address(src) {
            return Err(DropReason::Ipv4BadSource);
        }
        Ok(r)
    }

    pub(super) fn is_broadcast(&self, dst: Ipv4Addr) -> bool {
        dst.is_broadcast()
            || dst.is_multicast()
            || self
                .cfg
                .ports
                .iter()
                .filter_map(|p| p.subnet())
                .any(|s| s.prefix_len() < 31 && dst.to_bits() == s.addr().to_bits() | !crate::config::mask(s.prefix_len()))
    }

    /// An IPv4 packet from a port (`src_mac`: its Ethernet source) or out of
    /// the tunnel. The two differ only in who may send what: a LAN sender
    /// may be a live host on a claimed address, the WAN answers nothing but
    /// WireGuard and VXLAN, a tunnel peer may only use its allowed prefixes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ipv4_in<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        ingress: Ingress,
        src_mac: Option<Mac>,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let (src, dst, proto, fragment) = match self.ipv4_checks(buf) {
            Ok(r) => r,
            Err(reason) => return self.drop(reason),
        };
        let own = self.cfg.is_own_address(dst);
        // The answer to the box's DNS query (from port 53 to the one port
        // the resolver opened), wherever it comes from.
        if own && proto == IpProtocol::Udp && !fragment && self.resolver_port.is_some_and(|p| udp_ports(buf.frame()) == Some((53, p))) {
            let from = match ingress {
                Ingress::Port(p) => LocalFrom::Port(p),
                Ingress::Tunnel(peer) => LocalFrom::Tunnel(peer),
            };
            return self.deliver_local(from, buf, tx);
        }
        match ingress {
            Ingress::Port(port) => {
                let Some(pc) = self.cfg.ports.get(port.index()) else {
                    return self.drop(DropReason::UnknownPort);
                };
                let (role, port_addr, dhcp) = (pc.role, pc.address, pc.dhcp);
                if dhcp && proto == IpProtocol::Udp && !fragment && udp_ports(buf.frame()) == Some((67, 68)) {
                    return self.hand_to_stack(port, buf, tx);
                }
                if role == PortRole::Lan {
                    // A host on the LAN sending from a proxy-ARP claim's
                    // address is using it: evidence like an ARP from it
                    // (the packet itself is still forwarded).
                    if let (Some(ci), Some(mac)) = (self.proxy_claim(src), src_mac) {
                        self.live_host(now, ci, mac, port, Evidence::Ipv4);
                    }
                }
                if own && role == PortRole::Wan {
                    // A reply to a translated flow (pipeline/nat.rs).
                    if let Some(hit) = self.nat_reply(now, buf.frame(), fragment) {
                        return self.forward(now, ingress, buf, tunnel, tx, Some(hit));
                    }
                    // Nothing but WireGuard (and VXLAN from configured
                    // VTEPs) is answered on the WAN — and what a firewall
                    // rule opens (ICMP to the services, VXLAN).
                    if Some(dst) != port_addr || fragment {
                        return self.drop(DropReason::WanNotWireguard);
                    }
                    let wireguard =
                        proto == IpProtocol::Udp && udp_ports(buf.frame()).is_some_and(|(_, d)| d == self.cfg.tunnel.listen_port);
                    if self.cfg.firewall.is_some() && !wireguard {
                        let m = nat::meta_of(buf.frame(), fragment);
                        if let Err(reason) = self.firewall(nat::Zone::Port(port), nat::Zone::Box, &m) {
                            return self.drop(reason);
                        }
                        if proto == IpProtocol::Icmp {
                            return self.deliver_local(LocalFrom::Port(port), buf, tx);
                        }
                    }
                    if proto != IpProtocol::Udp {
                        return self.drop(DropReason::WanNotWireguard);
                    }
                    return self.udp_to_box(now, src, buf, tunnel, tx, false);
                }
            }
            Ingress::Tunnel(peer) => {
                let Some(pcfg) = self.cfg.peer(peer) else {
                    return self.drop(DropReason::TunnelBadOutput);
                };
                // Cryptokey routing: the inner source must belong to the peer.
                if !pcfg.allowed.iter().any(|a| a.contains(src)) {
                    return self.drop(DropReason::TunnelSpoofedSource);
                }
            }
        }
        if own {
            if fragment {
                return self.drop(DropReason::LocalFragment);
            }
            if self.cfg.firewall.is_some() {
                let m = nat::meta_of(buf.frame(), fragment);
                if let Err(reason) = self.firewall(nat::zone_in(ingress), nat::Zone::Box, &m) {
                    return self.drop(reason);
                }
            }
            return match (proto, ingress) {
                // ICMP to the box (echo): the services layer answers.
                (IpProtocol::Icmp, Ingress::Port(p)) => self.deliver_local(LocalFrom::Port(p), buf, tx),
                (IpProtocol::Icmp, Ingress::Tunnel(peer)) => self.deliver_local(LocalFrom::Tunnel(peer), buf, tx),
                // VXLAN over the tunnel (seed 003) ends on the box.
                (IpProtocol::Udp, Ingress::Tunnel(_)) => self.udp_to_box(now, src, buf, tunnel, tx, true),
                _ => self.drop(DropReason::LocalUnhandled),
            };
        }
        if self.is_broadcast(dst) {
            return self.drop(DropReason::Ipv4Broadcast);
        }
        self.forward(now, ingress, buf, tunnel, tx, None)
    }

    /// UDP addressed to the box: WireGuard (WAN only) or VXLAN.
    pub(super) fn udp_to_box<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        from_tunnel: bool,
    ) -> Verdict {
        let unhandled = if from_tunnel { DropReason::LocalUnhandled } else { DropReason::WanNotWireguard };
        let Ok(ip) = Ipv4Packet::new_checked(buf.frame()) else {
            return self.drop(DropReason::Ipv4Malformed);
        };
        let (ip_src, ip_dst, hl) = (ip.src_addr(), ip.dst_addr(), usize::from(ip.header_len()));
        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
            return self.drop(DropReason::UdpMalformed);
        };
        if !udp.verify_checksum(&IpAddress::Ipv4(ip_src), &IpAddress::Ipv4(ip_dst)) {
            return self.drop(DropReason::UdpMalformed);
        }
        let (sport, dport, ulen) = (udp.src_port(), udp.dst_port(), usize::from(udp.len()));
        // Narrow the buffer to the UDP payload.
        let start = buf.head() + hl + UDP_LEN;
        let end = buf.head() + hl + ulen;
        if buf.set_range(start, end).is_err() {
            return self.drop(DropReason::UdpMalformed);
        }
        if !from_tunnel && dport == self.cfg.tunnel.listen_port {
            return self.tunnel_in(now, Endpoint { addr: src, port: sport }, buf, tunnel, tx);
        }
        if self.cfg.segments.iter().any(|s| s.udp_port == dport) {
            return self.vxlan_decap(now, src, dport, from_tunnel, buf);
        }
        self.drop(unhandled)
    }

    /// Hand a packet for the box to the services layer through `tx`.
    /// A DHCP reply for the box's client on `port`, with its Ethernet
    /// header (pulled by intake) put back.
    fn hand_to_stack<X: Transmit + ?Sized>(&mut self, port: PortId, buf: &mut FrameBuf<'_>, tx: &mut X) -> Verdict {
        if buf.push_head(ETH_LEN).is_err() {
            return self.drop(DropReason::NoHeadroom);
        }
        match tx.stack(port, buf.frame()) {
            Local::Taken => {
                self.counters.local_delivered += 1;
                Verdict::Consumed
            }
            Local::Full => self.drop(DropReason::LocalQueueFull),
            Local::NoService => self.drop(DropReason::LocalUnhandled),
        }
    }

    fn deliver_local<X: Transmit + ?Sized>(&mut self, from: LocalFrom, buf: &mut FrameBuf<'_>, tx: &mut X) -> Verdict {
        match tx.local(from, buf.frame()) {
            Local::Taken => {
                self.counters.local_delivered += 1;
                Verdict::Consumed
            }
            Local::Full => self.drop(DropReason::LocalQueueFull),
            Local::NoService => self.drop(DropReason::LocalUnhandled),
        }
    }
}

/// The UDP source and destination ports of an IPv4 packet (no options
/// beyond the header length check; `None` when it is not that long).
fn udp_ports(ip: &[u8]) -> Option<(u16, u16)> {
    let hl = usize::from(ip.first()? & 0x0f) * 4;
    let p = ip.get(hl..hl + 4)?;
    Some((u16::from_be_bytes([*p.first()?, *p.get(1)?]), u16::from_be_bytes([*p.get(2)?, *p.get(3)?])))
}

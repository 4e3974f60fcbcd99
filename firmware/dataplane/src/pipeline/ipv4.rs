//! IPv4 intake, one path for packets from a port and from the tunnel: header
//! checks, live-host evidence, cryptokey routing for the tunnel, traffic for
//! the box itself (the policy: ICMP from a LAN or the tunnel goes to the
//! services layer through `Transmit::local`, and so does the configured BGP
//! peers' TCP to or from port 179; WireGuard and VXLAN on the WAN;
//! nothing else), then forwarding.

use super::*;

/// What the IPv4 intake checks found in a header. Later stages (UDP to the
/// box, forwarding, the MSS clamp) take these fields from here instead of
/// parsing the header again; nothing that changes them (the TTL decrement,
/// NAT's address rewrite) runs before the last of those reads, except NAT,
/// which keeps the header's length and fragment fields.
#[derive(Debug, Clone, Copy)]
pub(super) struct V4 {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol.
    pub proto: IpProtocol,
    /// Header length in bytes (20–60, within the packet).
    pub hl: usize,
    /// Total length: the buffer holds exactly this many bytes.
    pub total: usize,
    /// Time to live.
    pub ttl: u8,
    /// Don't fragment.
    pub df: bool,
    /// More fragments follow.
    pub more_frags: bool,
    /// Fragment offset (in 8-byte units).
    pub frag_offset: u16,
}

impl V4 {
    /// Any fragment (first, middle or last).
    pub fn fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }
}

impl Core {
    /// Common IPv4 checks; trims link padding so the buffer holds exactly
    /// the packet. Returns what later stages need from the header.
    pub(super) fn ipv4_checks(&mut self, buf: &mut FrameBuf<'_>) -> Result<V4, DropReason> {
        let ip = Ipv4Packet::new_checked(buf.frame()).map_err(|_| DropReason::Ipv4Malformed)?;
        if ip.version() != 4 {
            return Err(DropReason::Ipv4Malformed);
        }
        if !ip.verify_checksum() {
            return Err(DropReason::Ipv4BadChecksum);
        }
        let h = V4 {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            proto: ip.next_header(),
            hl: usize::from(ip.header_len()),
            total: usize::from(ip.total_len()),
            ttl: ip.hop_limit(),
            df: ip.dont_frag(),
            more_frags: ip.more_frags(),
            frag_offset: ip.frag_offset(),
        };
        // `new_checked` guarantees 20 <= hl <= total <= the buffer.
        if h.hl < IPV4_LEN || h.hl > h.total {
            return Err(DropReason::Ipv4Malformed);
        }
        buf.truncate(h.total);
        let src = h.src;
        if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || self.cfg.is_own_address(src) {
            return Err(DropReason::Ipv4BadSource);
        }
        Ok(h)
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
        let h = match self.ipv4_checks(buf) {
            Ok(h) => h,
            Err(reason) => return self.drop(reason),
        };
        let (src, dst, proto, fragment) = (h.src, h.dst, h.proto, h.fragment());
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
                        return self.forward(now, ingress, &h, buf, tunnel, tx, Some(hit));
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
                    return self.udp_to_box(now, &h, buf, tunnel, tx, false);
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
                // BGP with a configured peer (to or from TCP port 179): the
                // services layer's TCP endpoint takes it.
                (IpProtocol::Tcp, Ingress::Port(p)) if self.bgp_admits(src, buf.frame()) => self.deliver_local(LocalFrom::Port(p), buf, tx),
                (IpProtocol::Tcp, Ingress::Tunnel(peer)) if self.bgp_admits(src, buf.frame()) => {
                    self.deliver_local(LocalFrom::Tunnel(peer), buf, tx)
                }
                // VXLAN over the tunnel (seed 003) ends on the box.
                (IpProtocol::Udp, Ingress::Tunnel(_)) => self.udp_to_box(now, &h, buf, tunnel, tx, true),
                _ => self.drop(DropReason::LocalUnhandled),
            };
        }
        if self.is_broadcast(dst) {
            return self.drop(DropReason::Ipv4Broadcast);
        }
        self.forward(now, ingress, &h, buf, tunnel, tx, None)
    }

    /// UDP addressed to the box: WireGuard (WAN only) or VXLAN. `h`: the
    /// IPv4 header `ipv4_checks` passed (`buf` holds exactly the packet).
    /// A non-zero UDP checksum is verified; zero means the sender computed
    /// none (RFC 768), which WireGuard (authenticated) and VXLAN (RFC 7348)
    /// senders may do.
    pub(super) fn udp_to_box<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        h: &V4,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        from_tunnel: bool,
    ) -> Verdict {
        let unhandled = if from_tunnel { DropReason::LocalUnhandled } else { DropReason::WanNotWireguard };
        let Some(payload) = buf.frame().get(h.hl..) else {
            return self.drop(DropReason::Ipv4Malformed);
        };
        let Ok(udp) = UdpPacket::new_checked(payload) else {
            return self.drop(DropReason::UdpMalformed);
        };
        if udp.checksum() != 0 && !udp.verify_checksum(&IpAddress::Ipv4(h.src), &IpAddress::Ipv4(h.dst)) {
            return self.drop(DropReason::UdpMalformed);
        }
        let (src, hl) = (h.src, h.hl);
        let (sport, dport, ulen) = (udp.src_port(), udp.dst_port(), usize::from(udp.len()));
        // Narrow the buffer to the UDP payload.
        let start = buf.head() + hl + UDP_LEN;
        let end = buf.head() + hl + ulen;
        if buf.set_range(start, end).is_err() {
            return self.drop(DropReason::UdpMalformed);
        }
        if !from_tunnel && dport == self.cfg.tunnel.listen_port {
            return self.tunnel_in(now, Endpoint::from((src, sport)), buf, tunnel, tx);
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

    /// TCP from a configured BGP peer to or from port 179 (the caller has
    /// checked the protocol and that the packet is for the box).
    fn bgp_admits(&self, src: Ipv4Addr, ip: &[u8]) -> bool {
        self.bgp_peers.contains(&src) && udp_ports(ip).is_some_and(|(s, d)| s == BGP_PORT || d == BGP_PORT)
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

/// The UDP (or TCP) source and destination ports of an IPv4 packet (no options
/// beyond the header length check; `None` when it is not that long).
fn udp_ports(ip: &[u8]) -> Option<(u16, u16)> {
    let hl = usize::from(ip.first()? & 0x0f) * 4;
    let p = ip.get(hl..hl + 4)?;
    Some((u16::from_be_bytes([*p.first()?, *p.get(1)?]), u16::from_be_bytes([*p.get(2)?, *p.get(3)?])))
}

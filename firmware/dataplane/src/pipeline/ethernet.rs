//! L2 in and out: Ethernet intake (sanity, own-MAC reflections, the MAC filter,
//! bridging of a VXLAN segment's LAN port) and Ethernet output with neighbour
//! resolution (the pending queue and the ARP request sent in a frame's place).

use super::*;

impl Core {
    pub(super) fn intake<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        port: PortId,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        scratch: &mut [u8; BUF_SIZE],
    ) -> Verdict {
        let Some(pc) = self.cfg.ports.get(port.index()) else {
            return self.drop(DropReason::UnknownPort);
        };
        let port_mac = pc.mac;
        // A LAN port without an address is a pure layer-2 member of its
        // segment: what it does not bridge has nowhere to go.
        let bridge_only = pc.address.is_none() && pc.role == PortRole::Lan;
        if let Some(c) = self.counters.rx_frames.get_mut(port.index()) {
            *c += 1;
        }
        let Ok(eth) = EthernetFrame::new_checked(buf.frame()) else {
            return self.drop(DropReason::EthernetTruncated);
        };
        let (dst, src, ty) = (eth.dst_addr(), eth.src_addr(), eth.ethertype());
        if self.is_our_mac(src) {
            return self.drop(DropReason::OwnSourceMac);
        }
        let segment = self.cfg.segments.iter().position(|s| s.port == port);
        if let Some(si) = segment {
            if src.is_unicast() && self.fdb.learn(si as u8, src, Location::Local, now) == Learn::Full {
                self.counters.fdb_full += 1;
            }
            if dst != port_mac {
                if dst.is_unicast() {
                    return match self.fdb.lookup(si as u8, dst, now) {
                        Some(Location::Remote(vtep)) => self.vxlan_encap(now, si, vtep, buf, tunnel, tx),
                        Some(Location::Local) => self.drop(DropReason::BridgeLocalDestination),
                        None => self.flood(now, si, buf, tunnel, tx, scratch, true),
                    };
                }
                self.flood(now, si, buf, tunnel, tx, scratch, false);
                if !dst.is_broadcast() || bridge_only {
                    return Verdict::Consumed;
                }
            }
        } else if dst != port_mac {
            if dst.is_multicast() && !dst.is_broadcast() {
                return self.drop(DropReason::Multicast);
            }
            if !dst.is_broadcast() {
                return self.drop(DropReason::NotOurMac);
            }
        }
        if bridge_only {
            return self.drop(DropReason::PortNoAddress);
        }
        match ty {
            EthernetProtocol::Arp => self.arp(now, port, buf, tx),
            EthernetProtocol::Ipv4 => {
                if buf.pull_head(ETH_LEN).is_err() {
                    return self.drop(DropReason::EthernetTruncated);
                }
                self.ipv4_in(now, Ingress::Port(port), Some(src), buf, tunnel, tx)
            }
            _ => self.drop(DropReason::UnsupportedEthertype),
        }
    }

    /// A frame from a port of [`Medium::Datagram`]: a tunnel datagram from
    /// `from`, or (`None`) a bare IPv4 packet from the port's IP side.
    pub(super) fn datagram_intake<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        port: PortId,
        from: Option<Endpoint>,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        if self.cfg.ports.get(port.index()).is_none_or(|pc| pc.medium != Medium::Datagram) {
            return self.drop(DropReason::UnknownPort);
        }
        if let Some(c) = self.counters.rx_frames.get_mut(port.index()) {
            *c += 1;
        }
        match from {
            // Only the WAN may be a datagram port (`Config::validate`); its
            // socket is the tunnel's listen port.
            Some(from) => self.tunnel_in(now, from, buf, tunnel, tx),
            None => self.ipv4_in(now, Ingress::Port(port), None, buf, tunnel, tx),
        }
    }

    /// Put an Ethernet header on the IPv4 packet in `buf` for `next_hop` on
    /// `port`, resolving its MAC (parking the frame if needed). On a
    /// datagram port the packet leaves bare, for the device's IP side: the
    /// kernel behind it does the next hop's link work.
    pub(super) fn ip_out(&mut self, now: Instant, port: PortId, next_hop: Ipv4Addr, buf: &mut FrameBuf<'_>) -> Verdict {
        let Some(pc) = self.cfg.ports.get(port.index()) else {
            return self.drop(DropReason::NoRoute);
        };
        if pc.medium == Medium::Datagram {
            return Verdict::Transmit(port);
        }
        let (port_mac, port_addr) = (pc.mac, pc.address);
        let t = self.cfg.timing;
        let Ok(f) = buf.push_head(ETH_LEN) else {
            return self.drop(DropReason::NoHeadroom);
        };
        let mut eth = EthernetFrame::new_unchecked(f);
        eth.set_src_addr(port_mac);
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let (lookup, evicted) = self.neighbors.resolve(port, next_hop, now, t.arp_attempts, t.arp_retry_ms);
        if evicted {
            self.counters.arp_evictions += 1;
        }
        match lookup {
            Lookup::Hit(mac) => {
                eth.set_dst_addr(mac);
                Verdict::Transmit(port)
            }
            Lookup::Pending => {
                if self.pending.push(port, next_hop, buf.frame()) {
                    Verdict::Consumed
                } else {
                    self.drop(DropReason::PendingQueueFull)
                }
            }
            Lookup::Started => {
                if !self.pending.push(port, next_hop, buf.frame()) {
                    self.counters.drop(DropReason::PendingQueueFull);
                }
                // The frame is parked (or dropped): reuse the buffer for the request.
                // Without an address (a WAN waiting for its DHCP lease) the request
                // has the probe's form, sender 0.0.0.0 (RFC 5227).
                let sender = port_addr.unwrap_or(Ipv4Addr::UNSPECIFIED);
                if !arp_in_place(buf, Mac::BROADCAST, ArpOperation::Request, port_mac, sender, Mac([0; 6]), next_hop) {
                    return Verdict::Consumed;
                }
                self.counters.arp_requests_sent += 1;
                Verdict::Transmit(port)
            }
            Lookup::Full => self.drop(DropReason::ArpCacheFull),
        }
    }
}

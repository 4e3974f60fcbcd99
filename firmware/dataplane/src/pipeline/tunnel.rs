//! The tunnel's edges: opening a WireGuard datagram (stage 4) and sealing a
//! packet into one, wrapped in UDP/IPv4 for an Ethernet WAN or handed to a
//! datagram WAN's socket with its endpoint (stage 6).

use super::*;

impl Core {
    pub(super) fn tunnel_in<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        from: Endpoint,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        self.counters.tunnel_rx += 1;
        let datagram = buf.head()..buf.head() + buf.len();
        match tunnel.open(now, from, buf.raw_mut(), datagram) {
            Opened::Packet { peer, range } => {
                if buf.set_range(range.start, range.end).is_err() {
                    return self.drop(DropReason::TunnelBadOutput);
                }
                self.ipv4_in(now, Ingress::Tunnel(peer), None, buf, tunnel, tx)
            }
            Opened::Reply { range, to } => {
                if buf.set_range(range.start, range.end).is_err() {
                    return self.drop(DropReason::TunnelBadOutput);
                }
                self.counters.tunnel_control += 1;
                self.udp_to_endpoint(now, to, buf, tx)
            }
            Opened::Consumed => {
                self.counters.tunnel_control += 1;
                Verdict::Consumed
            }
            Opened::Rejected => self.drop(DropReason::TunnelRejected),
        }
    }

    /// Seal the IPv4 packet in `buf` for `peer` and wrap it for the WAN.
    pub(super) fn tunnel_out<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        peer: PeerId,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        // Make sure the tunnel and the underlay headers fit in front.
        let front = UNDERLAY_LEN + TUNNEL_HEADROOM;
        if buf.push_head(front).is_err() || buf.pull_head(front).is_err() {
            return self.drop(DropReason::NoHeadroom);
        }
        if buf.capacity() - (buf.head() + buf.len()) < TUNNEL_TAILROOM {
            return self.drop(DropReason::NoHeadroom);
        }
        let inner = buf.head()..buf.head() + buf.len();
        match tunnel.seal(now, peer, buf.raw_mut(), inner) {
            Sealed::Datagram { range, to } => {
                if buf.set_range(range.start, range.end).is_err() {
                    return self.drop(DropReason::TunnelBadOutput);
                }
                self.counters.tunnel_tx += 1;
                self.udp_to_endpoint(now, to, buf, tx)
            }
            Sealed::Held => {
                self.counters.tunnel_held += 1;
                Verdict::Consumed
            }
            Sealed::Failed => self.drop(DropReason::TunnelEncapFailed),
        }
    }

    /// Send the UDP payload in `buf` from the WireGuard port to `to` on the
    /// WAN: on a datagram WAN the socket's job (`Transmit::send_datagram`,
    /// counted here like a frame sent); on an Ethernet WAN wrapped in UDP
    /// with a zero (absent) checksum, IPv4 and Ethernet.
    #[inline]
    pub(super) fn udp_to_endpoint<X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        to: Endpoint,
        buf: &mut FrameBuf<'_>,
        tx: &mut X,
    ) -> Verdict {
        let wan = self.wan;
        if self.cfg.ports.get(wan.index()).is_some_and(|pc| pc.medium == Medium::Datagram) {
            let sent = tx.send_datagram(wan, to, buf.frame());
            count_sent(&mut self.counters, wan, sent);
            return Verdict::Consumed;
        }
        match to {
            core::net::SocketAddr::V4(to) => self.udp_to_ethernet(now, to, buf),
            core::net::SocketAddr::V6(_) => self.drop(DropReason::UnderlayIpv6),
        }
    }

    /// [`Core::udp_to_endpoint`] on an Ethernet WAN. Not generic, so it is
    /// built once, here, with the header writers inlined into it.
    fn udp_to_ethernet(&mut self, now: Instant, to: core::net::SocketAddrV4, buf: &mut FrameBuf<'_>) -> Verdict {
        let wan = self.wan;
        let Some(pc) = self.cfg.ports.get(wan.index()) else {
            return self.drop(DropReason::NoRoute);
        };
        let Some(src) = pc.address else {
            return self.drop(DropReason::WanNoAddress);
        };
        let next_hop = if pc.on_link(*to.ip()) {
            *to.ip()
        } else if let Some(gw) = pc.gateway {
            gw
        } else {
            return self.drop(DropReason::NoRoute);
        };
        let payload_len = buf.len();
        let Some(udp_len) = payload_len.checked_add(UDP_LEN).and_then(|l| u16::try_from(l).ok()) else {
            return self.drop(DropReason::TunnelBadOutput);
        };
        let listen = self.cfg.tunnel.listen_port;
        let ident = self.next_ident();
        let Ok(f) = buf.push_head(IPV4_LEN + UDP_LEN) else {
            return self.drop(DropReason::NoHeadroom);
        };
        if !write_ipv4(f, src, *to.ip(), IpProtocol::Udp, usize::from(udp_len), OWN_TTL, false, ident) {
            return self.drop(DropReason::TunnelBadOutput);
        }
        if let Some(u) = f.get_mut(IPV4_LEN..) {
            let mut udp = UdpPacket::new_unchecked(u);
            udp.set_src_port(listen);
            udp.set_dst_port(to.port());
            udp.set_len(udp_len);
            // No UDP checksum (zero: "none", RFC 768, IPv4 only): every
            // byte of the payload that matters is authenticated by the
            // WireGuard message itself (Poly1305 tag, MAC1 on handshakes),
            // and an unchecked corruption is a counted AEAD failure at the
            // peer. Saves a pass over the whole datagram (PIPELINE.md,
            // *Underlay UDP checksums*).
            udp.set_checksum(0);
        }
        self.ip_out(now, wan, next_hop, buf)
    }
}

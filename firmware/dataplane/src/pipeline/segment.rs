//! VXLAN segments (stage 7): encapsulation towards a VTEP (over the tunnel or
//! the WAN), flooding, decapsulation with FDB learning, and the inner MSS clamp.

use super::*;

/// FNV-1a over the inner flow: MACs, EtherType, and for IPv4 the addresses,
/// protocol and (first fragment only) the L4 ports. Same flow → same VXLAN
/// source port, so underlay ECMP keeps a flow in order.
pub(super) fn flow_hash(frame: &[u8]) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u32::from(*x);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    eat(frame.get(..ETH_LEN).unwrap_or(frame));
    if let Some(ip) = frame.get(ETH_LEN..) {
        if let Ok(p) = Ipv4Packet::new_checked(ip) {
            eat(&p.src_addr().octets());
            eat(&p.dst_addr().octets());
            eat(&[u8::from(p.next_header())]);
            if p.frag_offset() == 0 && matches!(p.next_header(), IpProtocol::Tcp | IpProtocol::Udp) {
                eat(p.payload().get(..4).unwrap_or(&[]));
            }
        }
    }
    (h ^ (h >> 16)) as u16
}

impl Core {
    /// How many VTEPs segment `si` floods to: the configured ones, then the
    /// learned ones not configured too.
    fn vtep_count(&self, si: usize) -> usize {
        let Some(seg) = self.cfg.segments.get(si) else { return 0 };
        let learned = self.learned_vteps.get(si).map_or(0, |l| l.iter().filter(|v| !seg.vteps.contains(v)).count());
        seg.vteps.len() + learned
    }

    /// The `k`-th VTEP of segment `si` in [`Core::vtep_count`]'s order.
    fn vtep_at(&self, si: usize, k: usize) -> Option<Ipv4Addr> {
        let seg = self.cfg.segments.get(si)?;
        if let Some(v) = seg.vteps.get(k) {
            return Some(*v);
        }
        self.learned_vteps.get(si)?.iter().filter(|v| !seg.vteps.contains(v)).nth(k - seg.vteps.len()).copied()
    }

    /// Whether `vtep` is one of segment `si`'s (configured or learned).
    fn is_vtep(&self, si: usize, vtep: Ipv4Addr) -> bool {
        self.cfg.segments.get(si).is_some_and(|s| s.vteps.contains(&vtep)) || self.learned_vteps.get(si).is_some_and(|l| l.contains(&vtep))
    }

    pub(super) fn underlay_for(&self, vtep: Ipv4Addr) -> Underlay {
        match self.routes.lookup_routes(vtep) {
            Some(NextHop::Tunnel(peer)) => Underlay::Tunnel(peer),
            _ => Underlay::Wan,
        }
    }

    /// Encapsulate the Ethernet frame in `buf` for `vtep` on segment `si`.
    pub(super) fn vxlan_encap<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        si: usize,
        vtep: Ipv4Addr,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
    ) -> Verdict {
        let Some(seg) = self.cfg.segments.get(si) else {
            return self.drop(DropReason::VxlanUnknownVni);
        };
        let (vni, udp_port, seg_mss) = (seg.vni, seg.udp_port, seg.mss);
        let underlay = self.underlay_for(vtep);
        let (src, mtu) = match underlay {
            Underlay::Tunnel(_) => (self.cfg.tunnel.address.unwrap_or(Ipv4Addr::UNSPECIFIED), self.cfg.tunnel.mtu),
            Underlay::Wan => match self.wan_address() {
                Some(a) => (a, self.cfg.ports.get(self.wan.index()).map_or(0, |p| p.mtu)),
                None => return self.drop(DropReason::WanNoAddress),
            },
        };
        let inner_len = buf.len();
        if inner_len + VXLAN_OVERHEAD > usize::from(mtu) {
            return self.drop(DropReason::VxlanOversize);
        }
        let limit = seg_mss.unwrap_or(mtu.saturating_sub((VXLAN_OVERHEAD + ETH_LEN) as u16 + 40));
        if matches!(clamp_frame(buf.frame_mut(), limit), Clamp::Clamped { .. }) {
            self.counters.syns_clamped += 1;
        }
        let sport = 49152 | (flow_hash(buf.frame()) & 0x3fff);
        let ident = self.next_ident();
        let Ok(f) = buf.push_head(VXLAN_OVERHEAD) else {
            return self.drop(DropReason::NoHeadroom);
        };
        let udp_len = UDP_LEN + vxlan::HEADER_LEN + inner_len;
        // VTEPs must not fragment (RFC 7348 §4.3): DF set.
        if !write_ipv4(f, src, vtep, IpProtocol::Udp, udp_len, OWN_TTL, true, ident) {
            return self.drop(DropReason::VxlanOversize);
        }
        if let Some(u) = f.get_mut(IPV4_LEN..IPV4_LEN + UDP_LEN) {
            let mut udp = UdpPacket::new_unchecked(u);
            udp.set_src_port(sport);
            udp.set_dst_port(udp_port);
            udp.set_len(udp_len as u16);
            // RFC 7348: the UDP checksum SHOULD be zero over IPv4.
            udp.set_checksum(0);
        }
        if let Some(v) = f.get_mut(IPV4_LEN + UDP_LEN..VXLAN_OVERHEAD) {
            VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(v));
        }
        self.counters.vxlan_encap += 1;
        match underlay {
            Underlay::Tunnel(peer) => self.tunnel_out(now, peer, buf, tunnel, tx),
            Underlay::Wan => {
                let wan = self.wan;
                let next_hop = match self.cfg.ports.get(wan.index()) {
                    Some(p) if p.on_link(vtep) => vtep,
                    Some(p) => match p.gateway {
                        Some(gw) => gw,
                        None => return self.drop(DropReason::NoRoute),
                    },
                    None => return self.drop(DropReason::NoRoute),
                };
                self.ip_out(now, wan, next_hop, buf)
            }
        }
    }

    /// Send copies of the frame in `buf` to every VTEP of segment `si`; the
    /// last copy is encapsulated in place when `last_in_place`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn flood<T: Tunnel + ?Sized, X: Transmit + ?Sized>(
        &mut self,
        now: Instant,
        si: usize,
        buf: &mut FrameBuf<'_>,
        tunnel: &mut T,
        tx: &mut X,
        scratch: &mut [u8; BUF_SIZE],
        last_in_place: bool,
    ) -> Verdict {
        let n = self.vtep_count(si);
        self.counters.vxlan_floods += 1;
        for k in 0..n {
            let Some(vtep) = self.vtep_at(si, k) else { break };
            if last_in_place && k + 1 == n {
                return self.vxlan_encap(now, si, vtep, buf, tunnel, tx);
            }
            let len = buf.len();
            let Some(dst) = scratch.get_mut(HEADROOM..HEADROOM + len) else {
                self.counters.drop(DropReason::NoHeadroom);
                continue;
            };
            dst.copy_from_slice(buf.frame());
            let Ok(mut copy) = FrameBuf::new(&mut scratch[..], HEADROOM, len) else { continue };
            if let Verdict::Transmit(p) = self.vxlan_encap(now, si, vtep, &mut copy, tunnel, tx) {
                send_extra(&mut self.counters, tx, p, copy.frame());
            }
        }
        Verdict::Consumed
    }

    /// The UDP payload in `buf` arrived from `outer_src` on `dport`.
    pub(super) fn vxlan_decap(
        &mut self,
        now: Instant,
        outer_src: Ipv4Addr,
        dport: u16,
        from_tunnel: bool,
        buf: &mut FrameBuf<'_>,
    ) -> Verdict {
        let repr = match VxlanPacket::new_checked(buf.frame()) {
            Ok(p) => VxlanRepr::parse(&p),
            Err(_) => return self.drop(DropReason::VxlanMalformed),
        };
        let vni = match repr {
            Ok(r) => r.vni,
            Err(vxlan::ParseError::NoVniFlag) => return self.drop(DropReason::VxlanNoIFlag),
            Err(vxlan::ParseError::Truncated) => return self.drop(DropReason::VxlanMalformed),
        };
        let Some(si) = self.cfg.segments.iter().position(|s| s.vni == vni && s.udp_port == dport) else {
            return self.drop(DropReason::VxlanUnknownVni);
        };
        if !self.is_vtep(si, outer_src) {
            return self.drop(DropReason::VxlanUnknownVtep);
        }
        let Some(seg) = self.cfg.segments.get(si) else {
            return self.drop(DropReason::VxlanUnknownVni);
        };
        // A VTEP the box reaches through the tunnel speaks only through it:
        // the same source in the clear on the WAN is spoofed (or misrouted).
        if !from_tunnel && matches!(self.underlay_for(outer_src), Underlay::Tunnel(_)) {
            return self.drop(DropReason::VxlanOutsideTunnel);
        }
        let (port, seg_mss) = (seg.port, seg.mss);
        if buf.pull_head(vxlan::HEADER_LEN).is_err() {
            return self.drop(DropReason::VxlanMalformed);
        }
        let Ok(eth) = EthernetFrame::new_checked(buf.frame()) else {
            return self.drop(DropReason::VxlanMalformed);
        };
        let src = eth.src_addr();
        if !src.is_unicast() {
            return self.drop(DropReason::VxlanMalformed);
        }
        if self.is_our_mac(src) {
            return self.drop(DropReason::OwnSourceMac);
        }
        let port_mtu = self.cfg.ports.get(port.index()).map_or(0, |p| p.mtu);
        if buf.len() > usize::from(port_mtu) + ETH_LEN {
            return self.drop(DropReason::VxlanOversize);
        }
        if self.fdb.learn(si as u8, src, Location::Remote(outer_src), now) == Learn::Full {
            self.counters.fdb_full += 1;
        }
        let underlay_mtu = match self.underlay_for(outer_src) {
            Underlay::Tunnel(_) => self.cfg.tunnel.mtu,
            Underlay::Wan => self.cfg.ports.get(self.wan.index()).map_or(0, |p| p.mtu),
        };
        let limit = seg_mss.unwrap_or(underlay_mtu.saturating_sub((VXLAN_OVERHEAD + ETH_LEN) as u16 + 40));
        if matches!(clamp_frame(buf.frame_mut(), limit), Clamp::Clamped { .. }) {
            self.counters.syns_clamped += 1;
        }
        self.counters.vxlan_decap += 1;
        Verdict::Transmit(port)
    }
}

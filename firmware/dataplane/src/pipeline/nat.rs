//! The stateful stage: connection tracking, SNAT and the zone firewall.
//!
//! Runs in forwarding (stage 5) after the TTL and MTU checks — so an ICMP
//! error the box sends about a packet quotes it as its sender sent it — and
//! before the TTL decrement and the MSS clamp, which compose with the
//! translation because every edit is an RFC 1624 incremental update.
//!
//! A packet is tracked only where something needs it: the firewall is
//! configured, or an SNAT rule matches (source prefix and out port). Without
//! either, nothing here runs and forwarding is what it was.
//!
//! * **Replies to translated flows** arrive at the WAN address; intake asks
//!   [`Core::nat_reply`] before the "WAN answers nothing but WireGuard" rule,
//!   and a hit is routed to the original source. UDP to the WireGuard
//!   listen port is never a reply (SNAT never hands out that port, nor a
//!   segment's VXLAN port, 68, or the resolver's port).
//! * **New flows**: TCP must start with a SYN; UDP and ICMP echo start on
//!   any packet. The firewall decides the first packet only; replies and
//!   ICMP errors about a tracked flow (*related*) pass by state.
//! * **SNAT**: the source becomes the out port's current address (a DHCP
//!   lease's included); the source port (ICMP: the echo identifier) is kept
//!   whenever `(proto, address, port, destination, destination port)` is
//!   free, else the next free one from a hash-chosen start in 1024–65535,
//!   at most 128 tries (`nat_port_exhausted`). Untranslated traffic never
//!   has a port written.
//! * **ICMP errors about a translated flow** (time exceeded, unreachable
//!   including fragmentation-needed, …) are translated both ways: the outer
//!   address and the quoted header (address, port or identifier, the quoted
//!   IP checksum, the quoted TCP/UDP/ICMP checksum when the quote holds it)
//!   and the outer ICMP checksum, all incrementally; a quote too short to
//!   hold the ports is not a related error.
//! * Fragments on a tracked path are dropped (`conntrack_fragment`): their
//!   ports are unknown and the box does not reassemble.

use super::*;
pub(super) use crate::conntrack::Zone;
use crate::conntrack::{Flow as CtFlow, InsertError, Proto, State, TcpFlags, Tuple};
use crate::firewall::{Action, Decided, Meta};

/// SNAT ports tried after a collision come from this range.
const NAT_PORT_LO: u16 = 1024;
/// Ports tried after a collision (bounded work per new flow).
const NAT_PORT_TRIES: u32 = 128;
/// Expired flows swept per timer tick.
pub(super) const CT_SWEEP_BUDGET: usize = 64;

/// A packet as conntrack sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// TCP, UDP or ICMP echo: its tuple, and the flags of a TCP segment.
    Flow(Tuple, Option<TcpFlags>),
    /// An ICMP error quoting a packet with this tuple (as quoted).
    IcmpError(Tuple),
    /// Anything else: decided without state.
    Other,
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<u16> {
    let old = get16(b, at)?;
    b.get_mut(at..at.checked_add(2)?)?.copy_from_slice(&v.to_be_bytes());
    Some(old)
}

fn addr_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o = b.get(at..at.checked_add(4)?)?;
    Some(Ipv4Addr::new(*o.first()?, *o.get(1)?, *o.get(2)?, *o.get(3)?))
}

fn header_len(ip: &[u8]) -> Option<usize> {
    let hl = usize::from(ip.first()? & 0x0f) * 4;
    (hl >= IPV4_LEN && ip.len() >= hl).then_some(hl)
}

/// The tuple of a TCP/UDP/ICMP-echo header at `l4` (`proto` from the IP
/// header). Needs the first 8 bytes of the L4 header only, so it also reads
/// a quote inside an ICMP error.
fn l4_tuple(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Option<Tuple> {
    if l4.len() < 8 {
        return None;
    }
    match proto {
        6 | 17 => {
            Some(Tuple { proto: if proto == 6 { Proto::Tcp } else { Proto::Udp }, src, sport: get16(l4, 0)?, dst, dport: get16(l4, 2)? })
        }
        1 => {
            let id = get16(l4, 4)?;
            match *l4.first()? {
                8 => Some(Tuple { proto: Proto::Icmp, src, sport: id, dst, dport: 0 }),
                0 => Some(Tuple { proto: Proto::Icmp, src, sport: 0, dst, dport: id }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Classify an IPv4 packet (header already checked by intake). `None`: its
/// L4 header is truncated.
pub(super) fn classify(ip: &[u8]) -> Option<(Meta, Kind)> {
    let hl = header_len(ip)?;
    let proto = *ip.get(9)?;
    let (src, dst) = (addr_at(ip, 12)?, addr_at(ip, 16)?);
    let l4 = ip.get(hl..)?;
    let meta = |dport| Meta { proto, src, dst, dport };
    match proto {
        6 => {
            if l4.len() < 20 {
                return None;
            }
            let fl = *l4.get(13)?;
            let flags = TcpFlags { fin: fl & 0x01 != 0, syn: fl & 0x02 != 0, rst: fl & 0x04 != 0, ack: fl & 0x10 != 0 };
            let t = l4_tuple(6, src, dst, l4)?;
            Some((meta(Some(t.dport)), Kind::Flow(t, Some(flags))))
        }
        17 => {
            let t = l4_tuple(17, src, dst, l4)?;
            Some((meta(Some(t.dport)), Kind::Flow(t, None)))
        }
        1 => match *l4.first()? {
            0 | 8 => Some((meta(None), Kind::Flow(l4_tuple(1, src, dst, l4)?, None))),
            // Unreachable, source quench, time exceeded, parameter problem.
            3 | 4 | 11 | 12 => {
                let inner = l4.get(8..)?;
                let ihl = header_len(inner)?;
                if inner.first().map(|b| b >> 4) != Some(4) {
                    return Some((meta(None), Kind::Other));
                }
                let t = l4_tuple(*inner.get(9)?, addr_at(inner, 12)?, addr_at(inner, 16)?, inner.get(ihl..)?);
                Some((meta(None), t.map_or(Kind::Other, Kind::IcmpError)))
            }
            _ => Some((meta(None), Kind::Other)),
        },
        _ => Some((meta(None), Kind::Other)),
    }
}

/// What the rules see of a packet that may be a fragment or truncated.
pub(super) fn meta_of(ip: &[u8], fragment: bool) -> Meta {
    let whole = if fragment { None } else { classify(ip) };
    match whole {
        Some((m, _)) => m,
        None => Meta {
            proto: ip.get(9).copied().unwrap_or(0),
            src: addr_at(ip, 12).unwrap_or(Ipv4Addr::UNSPECIFIED),
            dst: addr_at(ip, 16).unwrap_or(Ipv4Addr::UNSPECIFIED),
            dport: None,
        },
    }
}

/// Offsets of (port, checksum) in an L4 header for the port on `dst_side`;
/// ICMP echo: the identifier, whichever side.
fn l4_fields(proto: u8, dst_side: bool) -> Option<(usize, usize)> {
    match proto {
        6 => Some((if dst_side { 2 } else { 0 }, 16)),
        17 => Some((if dst_side { 2 } else { 0 }, 6)),
        1 => Some((4, 2)),
        _ => None,
    }
}

fn words(a: Ipv4Addr) -> [u16; 2] {
    let o = a.octets();
    [u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]])]
}

/// Rewrite the source (`dst_side` false) or destination address and port
/// of an IPv4 packet with TCP, UDP or ICMP echo, fixing the IP checksum and
/// the L4 checksum (pseudo-header included) incrementally. Nothing is
/// written unless every field is in the buffer.
pub(super) fn rewrite(ip: &mut [u8], dst_side: bool, addr: Ipv4Addr, port: u16) -> Option<()> {
    let hl = header_len(ip)?;
    let proto = *ip.get(9)?;
    let (port_at, csum_at) = l4_fields(proto, dst_side)?;
    if ip.len() < hl + port_at.max(csum_at) + 2 {
        return None;
    }
    let a_at = if dst_side { 16 } else { 12 };
    let mut ipc = get16(ip, 10)?;
    let mut l4c = get16(ip, hl + csum_at)?;
    // UDP checksum 0 means "none" and stays so (RFC 768).
    let udp_none = proto == 17 && l4c == 0;
    for (k, w) in words(addr).into_iter().enumerate() {
        let old = put16(ip, a_at + 2 * k, w)?;
        ipc = checksum::adjust(ipc, old, w, false);
        if proto != 1 {
            l4c = checksum::adjust(l4c, old, w, false);
        }
    }
    put16(ip, 10, ipc)?;
    let old = put16(ip, hl + port_at, port)?;
    l4c = checksum::adjust(l4c, old, port, false);
    if !udp_none {
        if proto == 17 && l4c == 0 {
            l4c = 0xffff;
        }
        put16(ip, hl + csum_at, l4c)?;
    }
    Some(())
}

/// Write a word inside an ICMP message, keeping the ICMP checksum right.
fn icmp_edit(icmp: &mut [u8], at: usize, v: u16, csum: &mut u16) -> Option<u16> {
    let old = put16(icmp, at, v)?;
    *csum = checksum::adjust(*csum, old, v, at % 2 == 1);
    Some(old)
}

/// Translate an ICMP error about a translated flow: the outer address on
/// `dst_side` becomes `addr`, and in the quoted packet (which travelled the
/// other way) the address and port on the opposite side become `addr` and
/// `port`, with the quoted IP and L4 checksums and the outer ICMP checksum
/// adjusted. Checked before anything is written.
pub(super) fn rewrite_icmp_error(ip: &mut [u8], dst_side: bool, addr: Ipv4Addr, port: u16) -> Option<()> {
    let hl = header_len(ip)?;
    let ihl = header_len(ip.get(hl + 8..)?)?;
    let iproto = *ip.get(hl + 8 + 9)?;
    let inner_dst_side = !dst_side;
    let (port_at, csum_at) = l4_fields(iproto, inner_dst_side)?;
    // Offsets within the ICMP message. The quote must hold the port
    // (RFC 792 guarantees 8 bytes of L4).
    let l4 = 8 + ihl;
    if ip.len() < hl + l4 + 8 {
        return None;
    }
    {
        let icmp = ip.get_mut(hl..)?;
        let mut c = get16(icmp, 2)?;
        let mut ipc = get16(icmp, 8 + 10)?;
        // The quoted L4 checksum, when the quote holds it (TCP's is at 16).
        let l4c = get16(icmp, l4 + csum_at);
        let udp_none = iproto == 17 && l4c == Some(0);
        let mut l4c_new = l4c;
        let a_at = 8 + if inner_dst_side { 16 } else { 12 };
        for (k, w) in words(addr).into_iter().enumerate() {
            let old = icmp_edit(icmp, a_at + 2 * k, w, &mut c)?;
            ipc = checksum::adjust(ipc, old, w, false);
            if iproto != 1 {
                l4c_new = l4c_new.map(|x| checksum::adjust(x, old, w, false));
            }
        }
        icmp_edit(icmp, 8 + 10, ipc, &mut c)?;
        let old = icmp_edit(icmp, l4 + port_at, port, &mut c)?;
        l4c_new = l4c_new.map(|x| checksum::adjust(x, old, port, false));
        if let Some(mut x) = l4c_new.filter(|_| !udp_none) {
            if iproto == 17 && x == 0 {
                x = 0xffff;
            }
            icmp_edit(icmp, l4 + csum_at, x, &mut c)?;
        }
        put16(icmp, 2, c)?;
    }
    // The outer header: the address only (ICMP has no pseudo-header).
    let a_at = if dst_side { 16 } else { 12 };
    let mut ipc = get16(ip, 10)?;
    for (k, w) in words(addr).into_iter().enumerate() {
        let old = put16(ip, a_at + 2 * k, w)?;
        ipc = checksum::adjust(ipc, old, w, false);
    }
    put16(ip, 10, ipc)?;
    Some(())
}

/// The zone a packet enters from.
pub(super) fn zone_in(ingress: Ingress) -> Zone {
    match ingress {
        Ingress::Port(p) => Zone::Port(p),
        Ingress::Tunnel(_) => Zone::Tunnel,
    }
}

impl Core {
    /// Apply the firewall to a packet that starts no tracked flow (a new
    /// flow's first packet, a packet for the box); counted by what decided.
    pub(super) fn firewall(&mut self, from: Zone, to: Zone, m: &Meta) -> Result<(), DropReason> {
        let Some(fw) = &self.cfg.firewall else { return Ok(()) };
        let (action, decided) = fw.decide(from, to, m);
        self.fw_counters.count(decided);
        match (action, decided) {
            (Action::Accept, _) => Ok(()),
            (Action::Drop, Decided::Rule(_)) => Err(DropReason::FirewallRule),
            (Action::Drop, _) => Err(DropReason::FirewallPolicy),
        }
    }

    /// A packet to the WAN address: a reply (or a related ICMP error) of a
    /// translated flow? Then forwarding routes it to the flow's source.
    pub(super) fn nat_reply(&mut self, now: Instant, ip: &[u8], fragment: bool) -> Option<(usize, Dir)> {
        if self.cfg.nat.is_empty() || fragment {
            return None;
        }
        let (_, kind) = classify(ip)?;
        let key = match kind {
            Kind::Flow(t, _) if t.proto == Proto::Udp && t.dport == self.cfg.tunnel.listen_port => return None,
            Kind::Flow(t, _) => t,
            Kind::IcmpError(inner) => inner.reversed(),
            Kind::Other => return None,
        };
        let (i, dir) = self.ct.lookup(&key, now)?;
        (dir == Dir::Reply && self.ct.get(i)?.nat.is_some()).then_some((i, dir))
    }

    /// The destination to route by: a reply of a translated flow goes to
    /// the flow's original source.
    pub(super) fn tracked_destination(&self, tracked: Option<(usize, Dir)>) -> Option<Ipv4Addr> {
        let (i, dir) = tracked?;
        let f = self.ct.get(i)?;
        (dir == Dir::Reply && f.nat.is_some()).then_some(f.orig.src)
    }

    /// The stateful stage for a forwarded packet going `from` → `to`
    /// (leaving by port `out`, if a port). `tracked`: intake already found
    /// its flow. Err: drop for that reason (the caller counts it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stateful(
        &mut self,
        now: Instant,
        from: Zone,
        to: Zone,
        out: Option<PortId>,
        tracked: Option<(usize, Dir)>,
        fragment: bool,
        buf: &mut FrameBuf<'_>,
    ) -> Result<(), DropReason> {
        let src = addr_at(buf.frame(), 12).ok_or(DropReason::Ipv4Malformed)?;
        // No translation for traffic that arrived by the out port itself.
        let nat = self.cfg.nat.iter().find(|n| Some(n.out) == out && from != Zone::Port(n.out) && n.source.contains(src)).copied();
        if tracked.is_none() && nat.is_none() && self.cfg.firewall.is_none() {
            return Ok(());
        }
        if fragment {
            return Err(DropReason::ConntrackFragment);
        }
        let (meta, kind) = classify(buf.frame()).ok_or(DropReason::ConntrackInvalid)?;
        match kind {
            // The error travels the way the quoted packet's flow answers:
            // look the quote up reversed.
            Kind::IcmpError(inner) => match tracked.or_else(|| self.ct.lookup(&inner.reversed(), now)) {
                Some((i, dir)) => self.translate_error(i, dir, buf),
                None if nat.is_some() => Err(DropReason::ConntrackInvalid),
                None => self.firewall(from, to, &meta),
            },
            Kind::Other => {
                if nat.is_some() {
                    return Err(DropReason::ConntrackInvalid);
                }
                self.firewall(from, to, &meta)
            }
            Kind::Flow(t, tcp) => {
                if let Some((i, dir)) = tracked.or_else(|| self.ct.lookup(&t, now)) {
                    self.ct.update(i, dir, tcp, now);
                    return self.translate(i, dir, buf);
                }
                let state = match tcp {
                    Some(f) if f.syn && !f.ack && !f.rst => State::SynSent,
                    Some(_) => return Err(DropReason::ConntrackInvalid),
                    None => State::Unreplied,
                };
                self.firewall(from, to, &meta)?;
                let nat = match nat {
                    Some(n) => {
                        let (addr, port) = self.nat_port(now, &t, n.out)?;
                        Some((n.out, addr, port))
                    }
                    None => None,
                };
                let flow = CtFlow { orig: t, nat, from, to, state, created: now, expires: now, packets: [1, 0] };
                let i = match self.ct.insert(flow, now) {
                    Ok(i) => i,
                    Err(InsertError::Full) => return Err(DropReason::ConntrackFull),
                    Err(InsertError::Exists) => return Err(DropReason::ConntrackInvalid),
                };
                if let Some((_, _, port)) = nat {
                    self.counters.nat_flows += 1;
                    if port != t.sport {
                        self.counters.nat_ports_rewritten += 1;
                    }
                }
                self.translate(i, Dir::Original, buf)
            }
        }
    }

    /// The address and port (ICMP: identifier) a new flow `t` leaving by
    /// `out` gets: its own port when that reply tuple is free.
    fn nat_port(&mut self, now: Instant, t: &Tuple, out: PortId) -> Result<(Ipv4Addr, u16), DropReason> {
        let addr = self.cfg.ports.get(out.index()).and_then(|p| p.address).ok_or(DropReason::WanNoAddress)?;
        let icmp = t.proto == Proto::Icmp;
        let reply = |p: u16| {
            if icmp {
                Tuple { proto: t.proto, src: t.dst, sport: 0, dst: addr, dport: p }
            } else {
                Tuple { proto: t.proto, src: t.dst, sport: t.dport, dst: addr, dport: p }
            }
        };
        // Ports the box itself receives UDP on at that address.
        let listen = self.cfg.tunnel.listen_port;
        let resolver = self.resolver_port;
        let segments = &self.cfg.segments;
        let reserved =
            |p: u16| t.proto == Proto::Udp && (p == listen || p == 68 || Some(p) == resolver || segments.iter().any(|s| s.udp_port == p));
        if !reserved(t.sport) && self.ct.is_free(&reply(t.sport), now) {
            return Ok((addr, t.sport));
        }
        let range = u32::from(u16::MAX - NAT_PORT_LO) + 1;
        let seed = u32::from(t.sport) ^ t.src.to_bits().rotate_left(7) ^ t.dst.to_bits().rotate_left(13) ^ u32::from(t.dport) << 16;
        let start = seed.wrapping_mul(0x9e37_79b1) % range;
        for k in 0..NAT_PORT_TRIES {
            let p = NAT_PORT_LO.saturating_add(((start + k) % range) as u16);
            if !reserved(p) && self.ct.is_free(&reply(p), now) {
                return Ok((addr, p));
            }
        }
        Err(DropReason::NatPortExhausted)
    }

    /// Translate a packet of flow `i` travelling `dir` (no-op for a flow
    /// that is not translated).
    fn translate(&mut self, i: usize, dir: Dir, buf: &mut FrameBuf<'_>) -> Result<(), DropReason> {
        let Some(f) = self.ct.get(i).copied() else { return Ok(()) };
        let Some((_, addr, port)) = f.nat else { return Ok(()) };
        let done = match dir {
            Dir::Original => rewrite(buf.frame_mut(), false, addr, port),
            Dir::Reply => rewrite(buf.frame_mut(), true, f.orig.src, f.orig.sport),
        };
        done.ok_or(DropReason::ConntrackInvalid)
    }

    /// Translate an ICMP error about flow `i`, travelling `dir`.
    fn translate_error(&mut self, i: usize, dir: Dir, buf: &mut FrameBuf<'_>) -> Result<(), DropReason> {
        let Some(f) = self.ct.get(i).copied() else { return Ok(()) };
        let Some((_, addr, port)) = f.nat else { return Ok(()) };
        let done = match dir {
            // Towards the internet: the sender becomes the NAT address, the
            // quoted reply's destination the NAT address and port.
            Dir::Original => rewrite_icmp_error(buf.frame_mut(), false, addr, port),
            // Towards the host: back to its own address and port.
            Dir::Reply => rewrite_icmp_error(buf.frame_mut(), true, f.orig.src, f.orig.sport),
        };
        done.ok_or(DropReason::ConntrackInvalid)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// An IPv4+UDP packet with a correct UDP checksum.
    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> std::vec::Vec<u8> {
        let mut p = std::vec![0u8; 20 + 8 + 4];
        write_ipv4(&mut p, Ipv4Addr::from(src), Ipv4Addr::from(dst), IpProtocol::Udp, 12, 64, true, 1);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..26].copy_from_slice(&12u16.to_be_bytes());
        p[28..32].copy_from_slice(b"ping");
        let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
        UdpPacket::new_unchecked(&mut p[20..]).fill_checksum(&IpAddress::Ipv4(s), &IpAddress::Ipv4(d));
        p
    }

    fn udp_ok(p: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(p).unwrap();
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        ip.verify_checksum() && u.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr()))
    }

    #[test]
    fn rewrite_keeps_checksums_and_zero_udp_checksum() {
        let mut p = udp([10, 0, 0, 5], 40000, [192, 0, 2, 1], 53);
        rewrite(&mut p, false, Ipv4Addr::new(203, 0, 113, 2), 40001).unwrap();
        assert_eq!(&p[12..16], &[203, 0, 113, 2]);
        assert_eq!(get16(&p, 20), Some(40001));
        assert!(udp_ok(&p));
        rewrite(&mut p, true, Ipv4Addr::new(10, 9, 9, 9), 7).unwrap();
        assert!(udp_ok(&p));
        let mut z = udp([10, 0, 0, 5], 1, [192, 0, 2, 1], 53);
        z[26] = 0;
        z[27] = 0;
        rewrite(&mut z, false, Ipv4Addr::new(203, 0, 113, 2), 2).unwrap();
        assert_eq!(get16(&z, 26), Some(0));
        assert!(Ipv4Packet::new_checked(&z[..]).unwrap().verify_checksum());
    }

    #[test]
    fn short_packets_are_never_half_written() {
        let p = udp([10, 0, 0, 5], 1, [192, 0, 2, 1], 53);
        for cut in 0..p.len() {
            let mut q = p[..cut].to_vec();
            let before = q.clone();
            if rewrite(&mut q, false, Ipv4Addr::new(1, 2, 3, 4), 9).is_none() {
                assert_eq!(q, before, "cut {cut}");
            }
            let _ = classify(&q);
            let _ = rewrite_icmp_error(&mut q, true, Ipv4Addr::new(1, 2, 3, 4), 9);
        }
    }

    #[test]
    fn icmp_error_quote_is_translated_with_every_checksum() {
        // The packet the box sent (after SNAT), quoted whole in a time exceeded.
        let sent = udp([203, 0, 113, 2], 40001, [192, 0, 2, 1], 53);
        let mut e = std::vec![0u8; 20 + 8 + sent.len()];
        write_ipv4(&mut e, Ipv4Addr::new(198, 51, 100, 9), Ipv4Addr::new(203, 0, 113, 2), IpProtocol::Icmp, 8 + sent.len(), 60, false, 2);
        e[20] = 11;
        e[28..].copy_from_slice(&sent);
        let c = checksum::internet(&e[20..]);
        e[22..24].copy_from_slice(&c.to_be_bytes());
        let Some((_, Kind::IcmpError(t))) = classify(&e) else { panic!() };
        assert_eq!((t.sport, t.dport), (40001, 53));
        rewrite_icmp_error(&mut e, true, Ipv4Addr::new(10, 0, 0, 5), 40000).unwrap();
        assert_eq!(&e[16..20], &[10, 0, 0, 5]);
        assert!(Ipv4Packet::new_checked(&e[..]).unwrap().verify_checksum());
        assert_eq!(checksum::internet(&e[20..]), 0, "outer ICMP checksum");
        let quote = &e[28..];
        assert_eq!(&quote[12..16], &[10, 0, 0, 5]);
        assert_eq!(get16(quote, 20), Some(40000));
        assert!(udp_ok(quote), "quoted IP and UDP checksums");
    }
}

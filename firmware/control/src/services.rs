//! The services layer: traffic that ends on the box.
//!
//! The dataplane decides *whether* a packet addressed to the box is
//! admitted (its policy: ICMP from a LAN port or out of the tunnel; on the
//! WAN nothing but WireGuard) and hands admitted packets over through
//! `Transmit::local`. Here they wait in a bounded queue ([`LOCAL_QUEUE`]
//! packets; *full policy:* the new packet is refused and the dataplane
//! counts `local_queue_full`) until the loop runs [`Services::poll`], which
//! gives each to its service; answers go back out through
//! `Dataplane::send_local`, routed like any packet the box originates.
//!
//! Services today: the ICMP echo responder, the WAN's DHCP client
//! (`crate::dhcp`, smoltcp's client; its frames come through
//! `Transmit::stack`, and the node applies its leases), the DNS resolver
//! for peer endpoints (`crate::dns`), and BGP for EVPN (`crate::bgp`) over
//! a TCP endpoint on smoltcp (`crate::tcp`): TCP packets from the queue go
//! to the endpoint, the BGP service runs its sessions over it, and the
//! dataplane admits the configured peers' TCP ([`Services::set_bgp`] keeps
//! `Dataplane::set_bgp_peers` in step every turn). Each is a sans-I/O state
//! machine fed from this queue; see ARCHITECTURE.md.

use heapless::{Deque, Vec};
use routerd_dataplane::{checksum, Dataplane, Instant, Local, LocalFrom, Mac, PortId, Transmit, Tunnel};

use crate::bgp::{Bgp, BgpSetup, BgpSetupError};
use crate::dhcp::{DhcpClient, LeaseChange};
use crate::dns::{Resolver, MAX_NAMES, MAX_QUERY};
use crate::tcp::Tcp;
use routerd_dataplane::PeerId;

/// A name the resolver keeps and the peers whose endpoint it is.
pub type NamePeers = (config_schema::DnsName, Vec<PeerId, { crate::build::MAX_PEERS }>);

/// Packets for the box held between two loop turns.
pub const LOCAL_QUEUE: usize = 8;
/// Largest packet a service takes (an IPv4 packet on a 1500-byte link).
pub const MAX_LOCAL_PACKET: usize = 1500;
/// TTL of packets the box originates.
const OWN_TTL: u8 = 64;

/// What the services did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// ICMP echo requests answered.
    pub echo_replies: u64,
    /// Packets no service wanted (other ICMP messages, bad checksums).
    pub ignored: u64,
    /// Answers the dataplane could not send (no route, ARP pending).
    pub unsent: u64,
}

/// The services and their queue.
pub struct Services {
    queue: Deque<(LocalFrom, Vec<u8, MAX_LOCAL_PACKET>), LOCAL_QUEUE>,
    counters: ServiceCounters,
    reply: [u8; MAX_LOCAL_PACKET],
    /// The WAN's DHCP client, while the running WAN port is `dhcp`.
    dhcp: Option<alloc::boxed::Box<DhcpClient>>,
    /// Peer endpoints by name.
    resolver: Resolver,
    name_peers: Vec<NamePeers, MAX_NAMES>,
    /// The TCP endpoint and the BGP service on it, while BGP is set up.
    tcp: Option<alloc::boxed::Box<Tcp>>,
    bgp: Option<alloc::boxed::Box<Bgp>>,
}

impl Default for Services {
    fn default() -> Self {
        Services::new()
    }
}

impl Services {
    /// No packets waiting.
    pub const fn new() -> Services {
        Services {
            queue: Deque::new(),
            counters: ServiceCounters { echo_replies: 0, ignored: 0, unsent: 0 },
            reply: [0; MAX_LOCAL_PACKET],
            dhcp: None,
            resolver: Resolver::new(crate::dns::Policy::DEFAULT),
            name_peers: Vec::new(),
            tcp: None,
            bgp: None,
        }
    }

    /// Take a packet the dataplane admitted (what `Transmit::local` calls).
    pub fn accept(&mut self, from: LocalFrom, packet: &[u8]) -> Local {
        let Ok(p) = Vec::from_slice(packet) else {
            self.counters.ignored += 1;
            return Local::Taken;
        };
        match self.queue.push_back((from, p)) {
            Ok(()) => Local::Taken,
            Err(_) => Local::Full,
        }
    }

    /// Take a frame for the DHCP client (what `Transmit::stack` calls).
    pub fn accept_frame(&mut self, port: PortId, frame: &[u8]) -> Local {
        match self.dhcp.as_mut() {
            Some(c) if c.runs_for().0 == port => {
                if c.accept(frame) {
                    Local::Taken
                } else {
                    Local::Full
                }
            }
            _ => Local::NoService,
        }
    }

    /// Run a DHCP client on `wan` (its port and MAC), or none. A client
    /// already running there keeps its lease; `seed` randomises a new one.
    pub fn set_dhcp(&mut self, wan: Option<(PortId, Mac)>, seed: u64, now: Instant) {
        match wan {
            None => self.dhcp = None,
            Some(w) if self.dhcp.as_ref().is_some_and(|c| c.runs_for() == w) => {}
            Some((port, mac)) => self.dhcp = Some(alloc::boxed::Box::new(DhcpClient::new(port, mac, seed, now))),
        }
    }

    /// The DHCP client, if one runs.
    pub fn dhcp(&self) -> Option<&DhcpClient> {
        self.dhcp.as_deref()
    }

    /// A lease change the node has not applied yet.
    pub fn take_lease_change(&mut self) -> Option<LeaseChange> {
        self.dhcp.as_mut()?.take_change()
    }

    /// The names to keep resolved (and their peers) and the servers to ask.
    pub fn set_resolver(&mut self, names: Vec<NamePeers, MAX_NAMES>, servers: &[core::net::Ipv4Addr]) {
        self.resolver.set_names(names.iter().map(|(n, _)| n));
        self.resolver.set_servers(servers);
        self.name_peers = names;
    }

    /// The resolver (names, addresses, errors; events for the node).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The resolver, to take its events and give it entropy.
    pub fn resolver_mut(&mut self) -> &mut Resolver {
        &mut self.resolver
    }

    /// Run BGP with `setup`, or none. The same setup keeps the running
    /// sessions; another one replaces them (their connections are reset,
    /// the RIB starts empty). `seed` randomises the TCP endpoint's initial
    /// sequence numbers and ports when it is made. A refused setup changes
    /// nothing.
    pub fn set_bgp(&mut self, setup: Option<BgpSetup>, seed: u64, now: Instant) -> Result<(), BgpSetupError> {
        let Some(setup) = setup else {
            if let (Some(b), Some(t)) = (self.bgp.as_mut(), self.tcp.as_mut()) {
                b.release(t);
            }
            self.bgp = None;
            self.tcp = None;
            return Ok(());
        };
        if let Some(b) = self.bgp.as_mut().filter(|b| *b.setup() == setup) {
            // Same sessions; the dataplane may be new: show it the RIB again.
            b.reprogram();
            return Ok(());
        }
        let new = alloc::boxed::Box::new(Bgp::new(setup, now)?);
        let tcp = self.tcp.get_or_insert_with(|| alloc::boxed::Box::new(Tcp::new(seed, now)));
        if let Some(old) = self.bgp.as_mut() {
            old.release(tcp);
        }
        self.bgp = Some(new);
        Ok(())
    }

    /// The BGP service, if set up.
    pub fn bgp(&self) -> Option<&Bgp> {
        self.bgp.as_deref()
    }

    /// The BGP service and its TCP endpoint (to stop or start sessions,
    /// set local MACs, take the changed flag).
    pub fn bgp_mut(&mut self) -> Option<(&mut Bgp, &mut Tcp)> {
        Some((self.bgp.as_deref_mut()?, self.tcp.as_deref_mut()?))
    }

    /// The TCP endpoint, while BGP is set up.
    pub fn tcp(&self) -> Option<&Tcp> {
        self.tcp.as_deref()
    }

    /// When [`Services::poll`] is next due without new packets, for a loop
    /// that sleeps between turns (routerd-host; the image polls anyway):
    /// at once with packets waiting, else the DHCP client's, the TCP
    /// endpoint's (retransmissions, FIN timeouts) and the BGP service's
    /// timers ([`Bgp::poll_at`]). `None`: nothing scheduled. The resolver
    /// is not counted: routerd-host resolves endpoints itself (its bind
    /// hands the node addresses), so it keeps no names.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.queue.is_empty() {
            return Some(now);
        }
        let dhcp = self.dhcp.as_mut().and_then(|c| c.poll_at(now));
        let tcp = self.tcp.as_mut().and_then(|t| t.poll_at(now));
        let bgp = self.bgp.as_ref().map(|b| b.poll_at());
        [dhcp, tcp, bgp].into_iter().flatten().min()
    }

    /// Packets waiting.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// What the services did so far.
    pub fn counters(&self) -> ServiceCounters {
        self.counters
    }

    /// Give every waiting packet to its service; answers leave through the
    /// dataplane (`tx` transmits them).
    pub fn poll<T: Tunnel + ?Sized, X: Transmit + ?Sized>(&mut self, now: Instant, dp: &mut Dataplane, tunnel: &mut T, tx: &mut X) {
        if let Some(c) = self.dhcp.as_mut() {
            if c.poll_at(now).is_some_and(|t| t <= now) {
                c.poll(now, tx);
            }
        }
        while let Some((_from, packet)) = self.queue.pop_front() {
            if let Some((src, sport, dport, payload)) = udp_of(&packet) {
                self.resolver.on_answer(now, src, sport, dport, payload);
                continue;
            }
            if is_tcp(&packet) {
                // The dataplane admits only BGP peers' TCP; without the
                // service (or with its queue full) it is dropped, counted.
                if !self.tcp.as_mut().is_some_and(|t| t.accept_packet(&packet)) {
                    self.counters.ignored += 1;
                }
                continue;
            }
            match echo_reply(&packet, &mut self.reply) {
                Some(n) => {
                    self.counters.echo_replies += 1;
                    let Some(reply) = self.reply.get(..n) else { continue };
                    if !dp.send_local(now, reply, tunnel, tx) {
                        self.counters.unsent += 1;
                    }
                }
                None => self.counters.ignored += 1,
            }
        }
        self.resolve(now, dp, tunnel, tx);
        self.run_bgp(now, dp, tunnel, tx);
    }

    /// The TCP endpoint and the BGP sessions on it: packets in, sessions
    /// run, what they queued out — and the dataplane admitting exactly the
    /// configured peers' TCP.
    fn run_bgp<T: Tunnel + ?Sized, X: Transmit + ?Sized>(&mut self, now: Instant, dp: &mut Dataplane, tunnel: &mut T, tx: &mut X) {
        let (Some(bgp), Some(tcp)) = (self.bgp.as_deref_mut(), self.tcp.as_deref_mut()) else {
            if !dp.bgp_peers().is_empty() {
                dp.set_bgp_peers(&[]);
            }
            return;
        };
        let peers: Vec<core::net::Ipv4Addr, { crate::bgp::MAX_BGP_PEERS }> = bgp.peer_addrs().collect();
        if dp.bgp_peers() != peers.as_slice() {
            dp.set_bgp_peers(&peers);
        }
        tcp.set_addresses(&crate::tcp::box_addresses(dp));
        tcp.poll(now, dp, tunnel, tx);
        bgp.poll(now, tcp, dp);
        tcp.poll(now, dp, tunnel, tx);
        bgp.program(now, dp);
    }

    /// The resolver's next query, if one is due, sent through the dataplane;
    /// the dataplane lets in only the answer to the query in flight.
    fn resolve<T: Tunnel + ?Sized, X: Transmit + ?Sized>(&mut self, now: Instant, dp: &mut Dataplane, tunnel: &mut T, tx: &mut X) {
        let Services { resolver, name_peers, reply, .. } = self;
        let age = |n: &config_schema::DnsName| {
            let peers = name_peers.iter().find(|(m, _)| m == n).map(|(_, p)| p.as_slice()).unwrap_or(&[]);
            peers.iter().filter_map(|p| tunnel.handshake_age_ms(*p, now)).min()
        };
        let mut query = [0u8; MAX_QUERY];
        if let Some(q) = resolver.poll(now, &age, &mut query) {
            let payload = query.get(..q.len).unwrap_or(&[]);
            match dp.source_for(q.server).and_then(|src| udp_packet(src, q.port, q.server, 53, payload, reply)) {
                Some(n) => {
                    dp.set_resolver_port(Some(q.port));
                    // Parked for ARP is still sent; a loss is the timeout's.
                    let _ = dp.send_local(now, reply.get(..n).unwrap_or(&[]), tunnel, tx);
                }
                None => resolver.unsent(),
            }
        }
        dp.set_resolver_port(resolver.open_port());
    }
}

/// True for an unfragmented IPv4 packet carrying TCP.
fn is_tcp(packet: &[u8]) -> bool {
    use smoltcp::wire::{IpProtocol, Ipv4Packet};
    Ipv4Packet::new_checked(packet).is_ok_and(|ip| ip.next_header() == IpProtocol::Tcp && !ip.more_frags() && ip.frag_offset() == 0)
}

/// (source, source port, destination port, payload) of a UDP packet with a
/// good checksum.
fn udp_of(packet: &[u8]) -> Option<(core::net::Ipv4Addr, u16, u16, &[u8])> {
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, UdpPacket};
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Udp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let hl = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let udp = UdpPacket::new_checked(packet.get(hl..total)?).ok()?;
    if !udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)) {
        return None;
    }
    let len = usize::from(udp.len());
    Some((src, udp.src_port(), udp.dst_port(), packet.get(hl + 8..hl + len)?))
}

/// An IPv4/UDP packet (DF, TTL 64) around `payload` in `out`: its length.
fn udp_packet(src: core::net::Ipv4Addr, sport: u16, dst: core::net::Ipv4Addr, dport: u16, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, UdpPacket};
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let buf = out.get_mut(..total)?;
    buf.fill(0);
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut *buf);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len(u16::try_from(total).ok()?);
        ip.set_dont_frag(true);
        ip.set_hop_limit(OWN_TTL);
        ip.set_next_header(IpProtocol::Udp);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    let mut udp = UdpPacket::new_unchecked(buf.get_mut(20..)?);
    udp.set_src_port(sport);
    udp.set_dst_port(dport);
    udp.set_len(u16::try_from(udp_len).ok()?);
    udp.payload_mut().get_mut(..payload.len())?.copy_from_slice(payload);
    udp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    Some(total)
}

/// The answer to an ICMP echo request in `packet` (an IPv4 packet whose
/// destination is the box), written to `out`: its length, or `None` when
/// `packet` is not a well-formed echo request. Sans-I/O; never panics.
pub fn echo_reply(packet: &[u8], out: &mut [u8]) -> Option<usize> {
    use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet};
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Icmp || ip.more_frags() || ip.frag_offset() != 0 || !ip.verify_checksum() {
        return None;
    }
    let total = usize::from(ip.total_len());
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let out = out.get_mut(..total)?;
    out.copy_from_slice(packet.get(..total)?);
    let mut ip = Ipv4Packet::new_checked(&mut *out).ok()?;
    {
        let mut icmp = Icmpv4Packet::new_checked(ip.payload_mut()).ok()?;
        if icmp.msg_type() != Icmpv4Message::EchoRequest || !icmp.verify_checksum() {
            return None;
        }
        let old = u16::from(u8::from(Icmpv4Message::EchoRequest)) << 8 | u16::from(icmp.msg_code());
        let new = u16::from(u8::from(Icmpv4Message::EchoReply)) << 8 | u16::from(icmp.msg_code());
        icmp.set_msg_type(Icmpv4Message::EchoReply);
        let c = icmp.checksum();
        icmp.set_checksum(checksum::adjust(c, old, new, false));
    }
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_hop_limit(OWN_TTL);
    ip.fill_checksum();
    Some(total)
}

/// A [`Transmit`] that sends frames through `inner` and hands packets for
/// the box to `services`: what a platform loop gives the dataplane.
pub struct WithServices<'a, X: ?Sized> {
    pub inner: &'a mut X,
    pub services: &'a mut Services,
}

impl<X: Transmit + ?Sized> Transmit for WithServices<'_, X> {
    fn send(&mut self, port: routerd_dataplane::PortId, frame: &[u8]) -> bool {
        self.inner.send(port, frame)
    }

    fn send_datagram(&mut self, port: PortId, to: core::net::SocketAddr, payload: &[u8]) -> bool {
        self.inner.send_datagram(port, to, payload)
    }

    fn local(&mut self, from: LocalFrom, packet: &[u8]) -> Local {
        self.services.accept(from, packet)
    }

    fn stack(&mut self, port: PortId, frame: &[u8]) -> Local {
        self.services.accept_frame(port, frame)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn request() -> std::vec::Vec<u8> {
        // 10.0.0.5 → 10.0.0.1, ICMP echo request id 7 seq 1, payload "ping".
        let mut p =
            std::vec![0x45, 0, 0, 32, 0, 1, 0, 0, 64, 1, 0, 0, 10, 0, 0, 5, 10, 0, 0, 1, 8, 0, 0, 0, 0, 7, 0, 1, b'p', b'i', b'n', b'g',];
        let c = checksum::internet(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let c = checksum::internet(&p[20..]);
        p[22..24].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn echo_request_becomes_a_reply_with_every_checksum_right() {
        let mut out = [0xa5u8; 64];
        let n = echo_reply(&request(), &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(n, 32);
        assert_eq!(&r[12..16], &[10, 0, 0, 1], "from the box");
        assert_eq!(&r[16..20], &[10, 0, 0, 5], "to the asker");
        assert_eq!(r[20], 0, "echo reply");
        assert_eq!(&r[24..], &request()[24..], "id, seq and payload kept");
        assert_eq!(checksum::internet(&r[..20]), 0);
        assert_eq!(checksum::internet(&r[20..]), 0);
    }

    #[test]
    fn anything_else_is_ignored_without_panicking() {
        let mut out = [0u8; 64];
        let mut bad = request();
        bad[20] = 13; // timestamp request
        assert_eq!(echo_reply(&bad, &mut out), None);
        let mut bad = request();
        bad[30] ^= 1; // ICMP checksum wrong
        assert_eq!(echo_reply(&bad, &mut out), None);
        for n in 0..request().len() {
            assert_eq!(echo_reply(&request()[..n], &mut out), None, "truncated at {n}");
        }
        assert_eq!(echo_reply(&request(), &mut out[..10]), None, "no room");
    }

    #[test]
    fn poll_at_wakes_a_sleeping_loop_for_bgp() {
        // routerd-host sleeps until poll_at: without BGP's timers in it,
        // keepalives and the hold timer ran only when something else woke it.
        let mut s = Services::new();
        let now = Instant::from_millis(5_000);
        assert_eq!(s.poll_at(now), None, "nothing scheduled");
        let mut peers = Vec::new();
        peers.push((core::net::Ipv4Addr::new(10, 1, 0, 2), config_schema::Name::new("pve").unwrap())).unwrap();
        let mut vnis = Vec::new();
        vnis.push((100, core::net::Ipv4Addr::new(10, 1, 0, 1))).unwrap();
        let setup = BgpSetup { asn: 65000, router_id: core::net::Ipv4Addr::new(10, 1, 0, 1), peers, vnis, hold_time: 9 };
        s.set_bgp(Some(setup), 1, now).unwrap();
        // The session dials and the local MACs were never advertised: due now.
        assert!(s.poll_at(now).is_some_and(|t| t <= now), "{:?}", s.poll_at(now));
        s.set_bgp(None, 1, now).unwrap();
        assert_eq!(s.poll_at(now), None);
        // A packet waiting is due at once.
        s.accept(LocalFrom::Port(routerd_dataplane::PortId(0)), &request());
        assert_eq!(s.poll_at(now), Some(now));
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut s = Services::new();
        for _ in 0..LOCAL_QUEUE {
            assert_eq!(s.accept(LocalFrom::Port(routerd_dataplane::PortId(0)), &request()), Local::Taken);
        }
        assert_eq!(s.accept(LocalFrom::Port(routerd_dataplane::PortId(0)), &request()), Local::Full);
        assert_eq!(s.pending(), LOCAL_QUEUE);
    }
}

//! The underlay's router thread: everything it owns (each attachment's
//! link, learned MAC, waiting frames, NAT table and services; the delay
//! line) and what it does with each frame: answer ARP for the gateway,
//! serve DHCP and DNS, route with NAT, or drop with a reason.
//! The contract is the underlay's (`underlay.rs`).

use super::{bump, lock, AttachmentCounters, DropReason, Settings, Shared, UnderlayConfig};
use crate::dhcp::DhcpServer;
use crate::dns::{self, Outcome};
use crate::frame::{checksum_adjust, udp_frame, Arp, UdpIn, ETHERNET_HEADER};
use crate::link::{Link, READ_SLICE};
use crate::nat::{Masquerade, Transport};
use crate::rng::Rng;
use crate::{format_mac, Cidr, Mac};
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};
use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A frame waiting out the latency.
struct Pending {
    due: Instant,
    egress: usize,
    frame: Vec<u8>,
}

/// A routed frame waiting for the box's MAC.
struct Waiting {
    ingress: usize,
    since: Instant,
    frame: Vec<u8>,
}

/// Frames one attachment holds while it resolves the box's MAC (as a
/// router's ARP queue does); beyond this they are dropped as `unresolved`.
const WAITING: usize = 16;
/// How long a frame may wait for the box's MAC.
const UNRESOLVED_GIVE_UP: Duration = Duration::from_secs(3);

/// Per-attachment routing state, owned by the router thread.
struct Port {
    link: Link,
    address: Cidr,
    gateway: Ipv4Addr,
    gateway_mac: Mac,
    box_mac: Option<Mac>,
    last_arp_request: Option<Instant>,
    waiting: VecDeque<Waiting>,
    masquerade: Option<Masquerade>,
    dhcp: Option<DhcpServer>,
    dns_server: bool,
    dns_queries: u64,
    dns_answered: u64,
    dns_nxdomain: u64,
}

/// What the router decided for one frame.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Send this ARP reply back where the request came from.
    AnswerArp(Vec<u8>),
    /// A service of the gateway took it; send its answer (if any) back.
    Served(Option<Vec<u8>>),
    /// Forward the (rewritten) frame on this attachment.
    Route {
        egress: usize,
        nat_out: bool,
        nat_in: bool,
    },
    Drop(DropReason),
}

/// Routing state and the delay line: everything the router thread owns.
pub(super) struct Router {
    ports: Vec<Port>,
    rng: Rng,
    delay_line: VecDeque<Pending>,
}

/// The underlay asks for a box's MAC no more often than this.
const ARP_RETRY: Duration = Duration::from_secs(1);

/// 02:75:6c:00:00:NN ("ul", locally administered), one per attachment.
fn default_gateway_mac(attachment: usize) -> Mac {
    [0x02, 0x75, 0x6c, 0x00, 0x00, (attachment as u8).wrapping_add(1)]
}

impl Router {
    pub(super) fn new(config: &UnderlayConfig, links: Vec<Link>) -> Router {
        let ports = config
            .attachments
            .iter()
            .zip(links)
            .enumerate()
            .map(|(i, (a, link))| {
                let gateway_mac = a.gateway_mac.unwrap_or(default_gateway_mac(i));
                Port {
                    link,
                    address: a.address,
                    gateway: a.gateway,
                    gateway_mac,
                    box_mac: a.box_mac,
                    last_arp_request: None,
                    waiting: VecDeque::new(),
                    masquerade: a.masquerade.clone().map(Masquerade::new),
                    dhcp: a.dhcp_server.as_ref().map(|c| DhcpServer::new(a.gateway, gateway_mac, a.address, a.gateway, c)),
                    dns_server: a.dns_server,
                    dns_queries: 0,
                    dns_answered: 0,
                    dns_nxdomain: 0,
                }
            })
            .collect();
        Router { ports, rng: Rng::new(config.seed), delay_line: VecDeque::new() }
    }

    pub(super) fn run(mut self, rx: Receiver<(usize, Vec<u8>)>, shared: &Shared, capacity: usize) {
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            let wait = self.delay_line.front().map(|p| p.due.saturating_duration_since(now)).unwrap_or(READ_SLICE).min(READ_SLICE);
            let first = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Take what is waiting, but a bounded amount before sending, so
            // a flood cannot starve the delay line.
            let mut batch: Vec<(usize, Vec<u8>)> = first.into_iter().collect();
            while batch.len() < 64 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let settings = lock(&shared.settings).clone();
            for (ingress, frame) in batch {
                self.handle(ingress, frame, &settings, shared, capacity);
            }
            if self.ports.iter().any(|p| !p.waiting.is_empty()) {
                let mut immediate = Vec::new();
                {
                    let mut counters = lock(&shared.counters);
                    self.resolve(Instant::now(), settings.latency, capacity, &mut counters, &mut immediate);
                }
                for (port, frame) in immediate {
                    self.send(port, &frame);
                }
            }
            self.deliver_due(Instant::now());
        }
    }

    fn handle(&mut self, ingress: usize, mut frame: Vec<u8>, settings: &Settings, shared: &Shared, capacity: usize) {
        let now = Instant::now();
        let verdict = self.decide(now, ingress, &mut frame, settings);
        // Frames to send right away, after the counters are released.
        let mut immediate: Vec<(usize, Vec<u8>)> = Vec::new();
        {
            let mut counters = lock(&shared.counters);
            self.publish_state(&mut counters);
            match verdict {
                Verdict::AnswerArp(reply) => {
                    bump(&mut counters, ingress, |c| c.arp_answered += 1);
                    immediate.push((ingress, reply));
                }
                Verdict::Served(reply) => {
                    bump(&mut counters, ingress, |c| c.served += 1);
                    immediate.extend(reply.map(|r| (ingress, r)));
                }
                Verdict::Drop(reason) => bump(&mut counters, ingress, |c| c.drop(reason)),
                Verdict::Route { egress, nat_out, nat_in } => {
                    if nat_out {
                        bump(&mut counters, ingress, |c| c.nat_outbound += 1);
                    }
                    if nat_in {
                        bump(&mut counters, egress, |c| c.nat_inbound += 1);
                    }
                    if self.rng.chance_ppm(settings.loss_ppm) {
                        bump(&mut counters, ingress, |c| c.drop(DropReason::Loss));
                    } else if let Some(port) = self.ports.get_mut(egress) {
                        if port.box_mac.is_some() {
                            let due = now + settings.latency;
                            self.enqueue(Waiting { ingress, since: now, frame }, egress, due, capacity, &mut counters);
                        } else if port.waiting.len() >= WAITING {
                            bump(&mut counters, ingress, |c| c.drop(DropReason::Unresolved));
                        } else {
                            port.waiting.push_back(Waiting { ingress, since: now, frame });
                        }
                    }
                }
            }
            // The frame may have taught us a box's MAC: release what waited.
            self.resolve(now, settings.latency, capacity, &mut counters, &mut immediate);
        }
        for (port, frame) in immediate {
            self.send(port, &frame);
        }
    }

    /// Copies what the services and the NAT tables hold into the counters.
    fn publish_state(&self, counters: &mut [AttachmentCounters]) {
        for (port, c) in self.ports.iter().zip(counters.iter_mut()) {
            if let Some(d) = &port.dhcp {
                c.dhcp = d.counters.clone();
            }
            c.dns_queries = port.dns_queries;
            c.dns_answered = port.dns_answered;
            c.dns_nxdomain = port.dns_nxdomain;
            if let Some(m) = &port.masquerade {
                c.nat_mappings = m.mappings() as u64;
                c.nat_flushes = m.flushes;
            }
        }
    }

    /// Moves frames waiting for a box's MAC to the delay line once it is
    /// known; drops those that waited too long; asks again for the MAC.
    fn resolve(
        &mut self,
        now: Instant,
        latency: Duration,
        capacity: usize,
        counters: &mut [AttachmentCounters],
        immediate: &mut Vec<(usize, Vec<u8>)>,
    ) {
        for egress in 0..self.ports.len() {
            let Some(port) = self.ports.get_mut(egress) else {
                continue;
            };
            if port.waiting.is_empty() {
                continue;
            }
            if port.box_mac.is_some() {
                let waiting: Vec<Waiting> = port.waiting.drain(..).collect();
                for w in waiting {
                    self.enqueue(w, egress, now + latency, capacity, counters);
                }
                continue;
            }
            while port.waiting.front().is_some_and(|w| now.duration_since(w.since) >= UNRESOLVED_GIVE_UP) {
                if let Some(w) = port.waiting.pop_front() {
                    bump(counters, w.ingress, |c| c.drop(DropReason::Unresolved));
                }
            }
            let ask = !port.waiting.is_empty() && port.last_arp_request.is_none_or(|t| now.duration_since(t) >= ARP_RETRY);
            if ask {
                port.last_arp_request = Some(now);
                immediate.push((egress, Arp::request(port.gateway_mac, port.gateway, port.address.addr()).to_frame()));
                bump(counters, egress, |c| c.arp_requests_sent += 1);
            }
        }
    }

    /// Puts a routed frame (MACs still to set) on the delay line.
    fn enqueue(&mut self, w: Waiting, egress: usize, due: Instant, capacity: usize, counters: &mut [AttachmentCounters]) {
        let Some(box_mac) = self.ports.get(egress).and_then(|p| p.box_mac) else {
            return;
        };
        let Some(gateway_mac) = self.ports.get(egress).map(|p| p.gateway_mac) else {
            return;
        };
        if self.delay_line.len() >= capacity {
            bump(counters, w.ingress, |c| c.drop(DropReason::QueueFull));
            return;
        }
        let mut frame = w.frame;
        set_macs(&mut frame, gateway_mac, box_mac);
        self.delay_line.push_back(Pending { due, egress, frame });
        bump(counters, w.ingress, |c| c.routed += 1);
    }

    fn deliver_due(&mut self, now: Instant) {
        while self.delay_line.front().is_some_and(|p| p.due <= now) {
            if let Some(p) = self.delay_line.pop_front() {
                self.send(p.egress, &p.frame);
            }
        }
    }

    fn send(&self, egress: usize, frame: &[u8]) {
        if let Some(port) = self.ports.get(egress) {
            port.link.send(frame);
        }
    }

    /// Classifies a frame from `ingress` and, when it is routed, rewrites it
    /// in place (TTL, NAT, checksums; the MACs are set later).
    fn decide(&mut self, now: Instant, ingress: usize, frame: &mut [u8], settings: &Settings) -> Verdict {
        // A new public address is a new NAT state, traffic or not.
        for (port, public) in self.ports.iter_mut().zip(&settings.public) {
            if let Some(m) = &mut port.masquerade {
                m.sync(*public);
            }
        }
        let Some(port) = self.ports.get_mut(ingress) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let src_mac = eth.src_addr();
        // The box's MAC is the source of its valid IPv4 frames from its own
        // address (junk on the link must not teach it).
        if port.box_mac.is_none() && src_mac.is_unicast() && eth.ethertype() == EthernetProtocol::Ipv4 {
            let from_box =
                Ipv4Packet::new_checked(eth.payload()).is_ok_and(|ip| ip.verify_checksum() && ip.src_addr() == port.address.addr());
            if from_box {
                port.box_mac = Some(src_mac.0);
            }
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let Some(arp) = Arp::parse(frame) else {
                    return Verdict::Drop(DropReason::Malformed);
                };
                if arp.sender_ip == port.address.addr() && arp.sender_mac != [0; 6] {
                    port.box_mac = Some(arp.sender_mac);
                }
                if arp.request && arp.target_ip == port.gateway && arp.sender_ip != port.gateway {
                    return Verdict::AnswerArp(Arp::reply_to(&arp, port.gateway_mac, port.gateway).to_frame());
                }
                Verdict::Drop(DropReason::ArpIgnored)
            }
            EthernetProtocol::Ipv4 => match self.serve(now, ingress, frame, settings) {
                Some(v) => v,
                None => self.route_ipv4(now, ingress, frame, &settings.public),
            },
            _ => Verdict::Drop(DropReason::NotIpv4),
        }
    }

    /// DHCP and DNS for the gateway's own services; `None` for anything else.
    fn serve(&mut self, now: Instant, ingress: usize, frame: &[u8], settings: &Settings) -> Option<Verdict> {
        let port = self.ports.get_mut(ingress)?;
        let udp = UdpIn::parse(frame)?;
        if let Some(server) = port.dhcp.as_mut().filter(|s| s.wants(&udp)) {
            return Some(match server.handle(now, &udp) {
                Ok(reply) => Verdict::Served(reply),
                Err(_) => Verdict::Drop(DropReason::Malformed),
            });
        }
        if port.dns_server && *udp.dst.ip() == port.gateway && udp.dst.port() == dns::PORT {
            let Some((answer, outcome)) = dns::answer(&settings.dns, udp.payload) else {
                return Some(Verdict::Drop(DropReason::Malformed));
            };
            port.dns_queries += 1;
            match outcome {
                Outcome::Address(..) => port.dns_answered += 1,
                Outcome::NxDomain(_) => port.dns_nxdomain += 1,
                Outcome::NoData(_) | Outcome::Refused => {}
            }
            let reply = udp_frame(port.gateway_mac, udp.src_mac, SocketAddrV4::new(port.gateway, dns::PORT), udp.src, &answer);
            return Some(Verdict::Served(Some(reply)));
        }
        None
    }

    fn route_ipv4(&mut self, now: Instant, ingress: usize, frame: &mut [u8], public: &[Option<Ipv4Addr>]) -> Verdict {
        let Some(ip_bytes) = frame.get_mut(ETHERNET_HEADER..) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let Ok(mut ip) = Ipv4Packet::new_checked(ip_bytes) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if ip.version() != 4 {
            return Verdict::Drop(DropReason::Malformed);
        }
        if !ip.verify_checksum() {
            return Verdict::Drop(DropReason::BadChecksum);
        }
        let dst = ip.dst_addr();
        // Public addresses first: after a move the old public address of one
        // attachment must not fall through to a private match. Behind a
        // masquerading router the private address is not reachable at all.
        let by_public = public.iter().position(|p| *p == Some(dst));
        let egress = by_public.or_else(|| self.ports.iter().position(|p| p.address.addr() == dst && p.masquerade.is_none()));
        let Some(egress) = egress else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let ttl = ip.hop_limit();
        if ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }

        let src = ip.src_addr();
        // The ports of UDP and TCP (first fragments carry them).
        let transport = match ip.next_header() {
            IpProtocol::Udp if ip.frag_offset() == 0 => Some(Transport::Udp),
            IpProtocol::Tcp if ip.frag_offset() == 0 => Some(Transport::Tcp),
            _ => None,
        };
        let ports = transport.and_then(|_| {
            let p = ip.payload_mut();
            Some((u16::from_be_bytes([*p.first()?, *p.get(1)?]), u16::from_be_bytes([*p.get(2)?, *p.get(3)?])))
        });
        let ingress_private = self.ports.get(ingress).map(|p| p.address.addr());
        let new_src = match public.get(ingress).copied().flatten() {
            Some(pub_addr) if Some(src) == ingress_private => Some(pub_addr),
            _ => None,
        };
        if new_src.is_some() {
            if let (Some(m), Some(t), Some((sport, _))) =
                (self.ports.get_mut(ingress).and_then(|p| p.masquerade.as_mut()), transport, ports)
            {
                m.outbound(now, t, sport);
            }
        }
        if by_public.is_some() {
            if let Some(m) = self.ports.get_mut(egress).and_then(|p| p.masquerade.as_mut()) {
                let open = match (transport, ports) {
                    (Some(t), Some((_, dport))) => m.inbound(now, t, dport),
                    _ => false,
                };
                if !open {
                    return Verdict::Drop(DropReason::NatNoMapping);
                }
            }
        }
        ip.set_hop_limit(ttl - 1);
        let new_dst = match by_public {
            Some(_) => self.ports.get(egress).map(|p| p.address.addr()),
            None => None,
        };
        let nat_out = new_src.is_some();
        let nat_in = new_dst.is_some();
        if nat_out || nat_in {
            let new_src = new_src.unwrap_or(src);
            let new_dst = new_dst.unwrap_or(dst);
            ip.set_src_addr(new_src);
            ip.set_dst_addr(new_dst);
            // Only the first fragment carries the transport header.
            if ip.frag_offset() == 0 {
                let proto = ip.next_header();
                let old = [src.octets(), dst.octets()].concat();
                let new = [new_src.octets(), new_dst.octets()].concat();
                fix_transport_checksum(proto, ip.payload_mut(), &old, &new);
            }
        }
        ip.fill_checksum();
        Verdict::Route { egress, nat_out, nat_in }
    }
}

/// Updates the UDP or TCP checksum after the pseudo-header addresses changed
/// from `old` to `new`. A truncated header is left alone: the box drops it.
fn fix_transport_checksum(proto: IpProtocol, payload: &mut [u8], old: &[u8], new: &[u8]) {
    match proto {
        IpProtocol::Udp => {
            let Ok(mut udp) = UdpPacket::new_checked(payload) else {
                return;
            };
            let sum = udp.checksum();
            // Zero means the sender did not compute one.
            if sum != 0 {
                let adjusted = checksum_adjust(sum, old, new);
                udp.set_checksum(if adjusted == 0 { 0xffff } else { adjusted });
            }
        }
        IpProtocol::Tcp => {
            let Ok(mut tcp) = TcpPacket::new_checked(payload) else {
                return;
            };
            let sum = tcp.checksum();
            tcp.set_checksum(checksum_adjust(sum, old, new));
        }
        _ => {}
    }
}

fn set_macs(frame: &mut [u8], src: Mac, dst: Mac) {
    if let Ok(mut eth) = EthernetFrame::new_checked(frame) {
        eth.set_src_addr(EthernetAddress(src));
        eth.set_dst_addr(EthernetAddress(dst));
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} via {} ({})", self.address, self.gateway, format_mac(self.gateway_mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::DhcpServerConfig;
    use crate::dns::DnsRecord;
    use crate::link::SocketPair;
    use crate::nat::PortForward;
    use crate::underlay::Attachment;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use std::path::PathBuf;

    const ONPREM_MAC: Mac = [0x52, 0x54, 0, 0, 0, 0x11];
    const CLOUD_MAC: Mac = [0x52, 0x54, 0, 0, 0, 0x21];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("routerd-lab-ul-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A router over real (unused) sockets: onprem 192.168.1.35/24 without
    /// NAT, cloud 10.0.0.4/24 behind 203.0.113.10.
    fn router(name: &str) -> (Router, Settings, PathBuf) {
        let d = dir(name);
        let config = UnderlayConfig::new(vec![
            Attachment::new("onprem", SocketPair::link(&d, "onprem").0, "192.168.1.35/24".parse().unwrap(), ip("192.168.1.1"))
                .with_box_mac(ONPREM_MAC),
            Attachment::new("cloud", SocketPair::link(&d, "cloud").0, "10.0.0.4/24".parse().unwrap(), ip("10.0.0.1"))
                .with_public(ip("203.0.113.10")),
        ]);
        let links = config.attachments.iter().map(|a| Link::bind(&a.port).unwrap()).collect();
        (Router::new(&config, links), settings(&config), d)
    }

    fn settings(config: &UnderlayConfig) -> Settings {
        Settings {
            latency: Duration::ZERO,
            loss_ppm: 0,
            public: config.attachments.iter().map(|a| a.public).collect(),
            dns: config.dns.clone(),
        }
    }

    /// `Router::decide` now.
    fn decide(r: &mut Router, ingress: usize, frame: &mut [u8], settings: &Settings) -> Verdict {
        r.decide(Instant::now(), ingress, frame, settings)
    }

    fn udp(src_mac: Mac, src: (&str, u16), dst: (&str, u16), ttl: u8) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(src_mac, [0x02, 0x75, 0x6c, 0, 0, 1])
            .ipv4(ip(src.0).octets(), ip(dst.0).octets(), ttl)
            .udp(src.1, dst.1)
            .write(&mut f, b"handshake initiation")
            .unwrap();
        f
    }

    fn tcp(src_mac: Mac, src: (&str, u16), dst: (&str, u16)) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(src_mac, [0x02, 0x75, 0x6c, 0, 0, 2])
            .ipv4(ip(src.0).octets(), ip(dst.0).octets(), 64)
            .tcp(src.1, dst.1, 1000, 64240)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        f
    }

    /// (src, dst, ttl, transport checksum valid) of a routed frame.
    fn inspect(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8, bool) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(v4)) = &p.net else { panic!("not ipv4") };
        let h = v4.header().to_header();
        assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 header checksum");
        let ok = match &p.transport {
            Some(TransportSlice::Udp(u)) => u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap() == u.checksum(),
            Some(TransportSlice::Tcp(t)) => t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap() == t.checksum(),
            _ => true,
        };
        (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination), h.time_to_live, ok)
    }

    #[test]
    fn gateway_arp_is_answered_and_other_arp_ignored() {
        let (mut r, public, d) = router("arp");
        let ask = Arp::request(CLOUD_MAC, ip("10.0.0.4"), ip("10.0.0.1")).to_frame();
        let mut f = ask.clone();
        let Verdict::AnswerArp(reply) = decide(&mut r, 1, &mut f, &public) else { panic!("no answer") };
        let reply = Arp::parse(&reply).unwrap();
        assert!(!reply.request);
        assert_eq!((reply.sender_ip, reply.target_mac), (ip("10.0.0.1"), CLOUD_MAC));
        assert_eq!(r.ports[1].box_mac, Some(CLOUD_MAC), "learned from the request");
        // The same request on the other attachment asks for nothing it owns.
        assert_eq!(decide(&mut r, 0, &mut ask.clone(), &public), Verdict::Drop(DropReason::ArpIgnored));
        let mut other = Arp::request(CLOUD_MAC, ip("10.0.0.4"), ip("10.0.0.9")).to_frame();
        assert_eq!(decide(&mut r, 1, &mut other, &public), Verdict::Drop(DropReason::ArpIgnored));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn nat_rewrites_both_ways_with_valid_checksums() {
        let (mut r, public, d) = router("nat");
        // onprem dials the cloud's public address.
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 40000), ("203.0.113.10", 51820), 64);
        let v = decide(&mut r, 0, &mut f, &public);
        assert_eq!(v, Verdict::Route { egress: 1, nat_out: false, nat_in: true });
        assert_eq!(inspect(&f), (ip("192.168.1.35"), ip("10.0.0.4"), 63, true));
        // The cloud answers from its private address, which leaves as public.
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        assert_eq!(decide(&mut r, 1, &mut f, &public), Verdict::Route { egress: 0, nat_out: true, nat_in: false });
        assert_eq!(inspect(&f), (ip("203.0.113.10"), ip("192.168.1.35"), 63, true));
        // TCP too.
        let mut f = tcp(CLOUD_MAC, ("10.0.0.4", 5001), ("192.168.1.35", 40001));
        decide(&mut r, 1, &mut f, &public);
        assert_eq!(inspect(&f), (ip("203.0.113.10"), ip("192.168.1.35"), 63, true));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_udp_checksum_stays_corrupt_and_zero_stays_zero() {
        let (mut r, public, d) = router("corrupt");
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        let sum_at = ETHERNET_HEADER + 20 + 6;
        f[sum_at] ^= 0x01;
        decide(&mut r, 1, &mut f, &public);
        assert!(!inspect(&f).3);
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        f[sum_at] = 0;
        f[sum_at + 1] = 0;
        decide(&mut r, 1, &mut f, &public);
        assert_eq!(&f[sum_at..sum_at + 2], &[0, 0]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_moved_public_address_routes_only_at_its_new_place() {
        let (mut r, _, d) = router("roam");
        let moved = Settings { public: vec![None, Some(ip("203.0.113.20"))], ..settings(&UnderlayConfig::new(Vec::new())) };
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 40000), ("203.0.113.10", 51820), 64);
        assert_eq!(decide(&mut r, 0, &mut f, &moved), Verdict::Drop(DropReason::NoRoute));
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        decide(&mut r, 1, &mut f, &moved);
        assert_eq!(inspect(&f).0, ip("203.0.113.20"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_box_mac_is_learned_from_the_box_only() {
        let (mut r, public, d) = router("learn");
        assert_eq!(r.ports[1].box_mac, None);
        // Junk and traffic from another source address teach nothing.
        let mut junk = vec![0xa5u8; 60];
        junk[0] = 0x02;
        junk[6] = 0x02;
        decide(&mut r, 1, &mut junk, &public);
        let mut stranger = udp([0x02, 9, 9, 9, 9, 9], ("10.0.0.99", 1), ("192.168.1.35", 2), 64);
        decide(&mut r, 1, &mut stranger, &public);
        assert_eq!(r.ports[1].box_mac, None);
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        decide(&mut r, 1, &mut f, &public);
        assert_eq!(r.ports[1].box_mac, Some(CLOUD_MAC));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn drops_have_reasons() {
        let (mut r, public, d) = router("drops");
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 1), ("198.51.100.1", 2), 64);
        assert_eq!(decide(&mut r, 0, &mut f, &public), Verdict::Drop(DropReason::NoRoute));
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 1), ("203.0.113.10", 2), 1);
        assert_eq!(decide(&mut r, 0, &mut f, &public), Verdict::Drop(DropReason::TtlExpired));
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 1), ("203.0.113.10", 2), 64);
        f[ETHERNET_HEADER + 10] ^= 0xff;
        assert_eq!(decide(&mut r, 0, &mut f, &public), Verdict::Drop(DropReason::BadChecksum));
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 1), ("203.0.113.10", 2), 64);
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(decide(&mut r, 0, &mut f, &public), Verdict::Drop(DropReason::NotIpv4));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn garbage_never_panics() {
        let (mut r, public, d) = router("garbage");
        let mut rng = Rng::new(9);
        let template = udp(ONPREM_MAC, ("192.168.1.35", 40000), ("203.0.113.10", 51820), 64);
        for i in 0..20_000 {
            let mut f = if i % 2 == 0 {
                let len = (rng.next_u64() % 120) as usize;
                (0..len).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>()
            } else {
                let mut f = template.clone();
                let at = (rng.next_u64() as usize) % f.len();
                f[at] = rng.next_u64() as u8;
                let cut = (rng.next_u64() as usize) % (f.len() + 1);
                f.truncate(cut.max(at));
                f
            };
            if f.len() > 13 && i % 3 == 0 {
                f[12] = 0x08;
                f[13] = if i % 2 == 0 { 0x00 } else { 0x06 };
            }
            let _ = decide(&mut r, (i % 3) as usize, &mut f, &public);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    const ROZ_MAC: Mac = [0x52, 0x54, 0, 0x1a, 1, 1];
    const WRO_MAC: Mac = [0x52, 0x54, 0, 0x1a, 2, 1];

    /// Seed 003's sites: roz static behind 198.51.100.10, wro on DHCP behind
    /// 203.0.113.20; both routers masquerade, forward UDP 51820, answer DNS.
    fn two_sites(name: &str) -> (Router, Settings, PathBuf) {
        let d = dir(name);
        let mut config = UnderlayConfig::new(vec![
            Attachment::new("roz", SocketPair::link(&d, "roz").0, "192.168.1.35/24".parse().unwrap(), ip("192.168.1.1"))
                .with_box_mac(ROZ_MAC)
                .with_masquerade(ip("198.51.100.10"), vec![PortForward::udp(51820)])
                .with_dns_server(),
            Attachment::new("wro", SocketPair::link(&d, "wro").0, "192.168.20.100/24".parse().unwrap(), ip("192.168.20.1"))
                .with_box_mac(WRO_MAC)
                .with_masquerade(ip("203.0.113.20"), vec![PortForward::udp(51820)])
                .with_dhcp_server(DhcpServerConfig::new(600, vec![ip("192.168.20.1")]))
                .with_dns_server(),
        ]);
        config.dns = vec![DnsRecord::new("wro.example.net", ip("203.0.113.20"), 10)];
        let links = config.attachments.iter().map(|a| Link::bind(&a.port).unwrap()).collect();
        (Router::new(&config, links), settings(&config), d)
    }

    /// (src, sport, dst, dport) of a routed UDP frame.
    fn endpoints(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
        let u = UdpIn::parse(frame).expect("valid UDP");
        (*u.src.ip(), u.src.port(), *u.dst.ip(), u.dst.port())
    }

    #[test]
    fn masquerade_keeps_ports_and_lets_in_only_mapped_or_forwarded_ones() {
        let (mut r, mut settings, d) = two_sites("masq");
        // roz dials wro's public address on the forwarded port.
        let mut f = udp(ROZ_MAC, ("192.168.1.35", 51820), ("203.0.113.20", 51820), 64);
        assert_eq!(decide(&mut r, 0, &mut f, &settings), Verdict::Route { egress: 1, nat_out: true, nat_in: true });
        assert_eq!(endpoints(&f), (ip("198.51.100.10"), 51820, ip("192.168.20.100"), 51820));
        assert!(inspect(&f).3, "checksums hold");
        // A port nobody opened stays closed, and the private side is unreachable.
        let mut f = udp(ROZ_MAC, ("192.168.1.35", 51820), ("203.0.113.20", 40000), 64);
        assert_eq!(decide(&mut r, 0, &mut f, &settings), Verdict::Drop(DropReason::NatNoMapping));
        let mut f = udp(ROZ_MAC, ("192.168.1.35", 51820), ("192.168.20.100", 51820), 64);
        assert_eq!(decide(&mut r, 0, &mut f, &settings), Verdict::Drop(DropReason::NoRoute));
        let mut f = tcp(ROZ_MAC, ("192.168.1.35", 5000), ("203.0.113.20", 51820));
        assert_eq!(decide(&mut r, 0, &mut f, &settings), Verdict::Drop(DropReason::NatNoMapping));
        // wro sends from 40000: the mapping opens it, with the port kept.
        let mut f = udp(WRO_MAC, ("192.168.20.100", 40000), ("198.51.100.10", 51820), 64);
        assert_eq!(decide(&mut r, 1, &mut f, &settings), Verdict::Route { egress: 0, nat_out: true, nat_in: true });
        assert_eq!(endpoints(&f), (ip("203.0.113.20"), 40000, ip("192.168.1.35"), 51820));
        let mut f = udp(ROZ_MAC, ("192.168.1.35", 51820), ("203.0.113.20", 40000), 64);
        assert!(matches!(decide(&mut r, 0, &mut f, &settings), Verdict::Route { egress: 1, .. }));
        // A new dynamic address: the old one is gone, the mapping too, the
        // forward stays.
        settings.public[1] = Some(ip("203.0.113.77"));
        let mut f = udp(ROZ_MAC, ("192.168.1.35", 51820), ("203.0.113.20", 51820), 64);
        assert_eq!(decide(&mut r, 0, &mut f, &settings), Verdict::Drop(DropReason::NoRoute));
        let mut f = udp(ROZ_MAC, ("192.168.1.35", 51820), ("203.0.113.77", 40000), 64);
        assert_eq!(decide(&mut r, 0, &mut f, &settings), Verdict::Drop(DropReason::NatNoMapping));
        let mut f = udp(ROZ_MAC, ("192.168.1.35", 51820), ("203.0.113.77", 51820), 64);
        assert!(matches!(decide(&mut r, 0, &mut f, &settings), Verdict::Route { egress: 1, .. }));
        let flushes = r.ports[1].masquerade.as_ref().map(|m| m.flushes);
        assert_eq!(flushes, Some(1));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_gateway_serves_dhcp_and_dns_where_configured() {
        use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr, DnsFlags, DnsOpcode, DnsPacket, DnsQueryType, DnsQuestion, DnsRepr};
        let (mut r, mut settings, d) = two_sites("services");
        let discover = DhcpRepr {
            message_type: DhcpMessageType::Discover,
            transaction_id: 42,
            secs: 0,
            client_hardware_address: EthernetAddress(WRO_MAC),
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: None,
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut payload = vec![0u8; discover.buffer_len()];
        discover.emit(&mut DhcpPacket::new_unchecked(&mut payload[..])).unwrap();
        let bcast = |mac| {
            udp_frame(mac, [0xff; 6], SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), SocketAddrV4::new(Ipv4Addr::BROADCAST, 67), &payload)
        };
        let Verdict::Served(Some(offer)) = decide(&mut r, 1, &mut bcast(WRO_MAC), &settings) else { panic!("no offer") };
        assert_eq!(endpoints(&offer), (ip("192.168.20.1"), 67, ip("192.168.20.100"), 68));
        assert_eq!(&offer[..6], &WRO_MAC);
        // roz's router runs no DHCP server: the broadcast goes nowhere.
        assert_eq!(decide(&mut r, 0, &mut bcast(ROZ_MAC), &settings), Verdict::Drop(DropReason::NoRoute));

        let name = b"\x03wro\x07example\x03net\x00";
        let repr = DnsRepr {
            transaction_id: 7,
            opcode: DnsOpcode::Query,
            flags: DnsFlags::RECURSION_DESIRED,
            question: DnsQuestion { name, type_: DnsQueryType::A },
        };
        let mut query = vec![0u8; repr.buffer_len()];
        repr.emit(&mut DnsPacket::new_unchecked(&mut query[..]));
        let ask = |mac, from: &str, server: &str| {
            udp_frame(mac, [2; 6], SocketAddrV4::new(ip(from), 50000), SocketAddrV4::new(ip(server), 53), &query)
        };
        let Verdict::Served(Some(answer)) = decide(&mut r, 0, &mut ask(ROZ_MAC, "192.168.1.35", "192.168.1.1"), &settings) else {
            panic!("no answer")
        };
        assert_eq!(endpoints(&answer), (ip("192.168.1.1"), 53, ip("192.168.1.35"), 50000));
        let u = UdpIn::parse(&answer).unwrap();
        assert_eq!(&u.payload[u.payload.len() - 4..], &[203, 0, 113, 20], "the A record");
        dns::set_record(&mut settings.dns, "wro.example.net", None, 10);
        let Verdict::Served(Some(answer)) = decide(&mut r, 1, &mut ask(WRO_MAC, "192.168.20.100", "192.168.20.1"), &settings) else {
            panic!("no answer")
        };
        assert_eq!(DnsPacket::new_checked(UdpIn::parse(&answer).unwrap().payload).unwrap().rcode(), smoltcp::wire::DnsRcode::NXDomain);
        assert_eq!((r.ports[0].dns_answered, r.ports[1].dns_nxdomain), (1, 1));
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! The WAN's DHCP client (`address = "dhcp"`).
//!
//! The protocol is smoltcp's: its `dhcpv4` socket (discover, request,
//! renew at T1, rebind at T2, NAKs, retransmission with back-off) inside a
//! smoltcp `Interface` that exists only for it. That interface never sees a
//! frame the client does not need: the dataplane hands over DHCP replies
//! (UDP 67 → 68) and ARP replies on the WAN port ([`Transmit::stack`]), so
//! it answers nothing on the WAN; what it sends (DHCP messages, the ARP
//! request that precedes a unicast renewal) goes out of the WAN port as is.
//!
//! The lease itself is not applied here: [`DhcpClient::take_change`] tells
//! the node, which rebuilds the runtime with the leased address and gateway
//! through the same atomic path as an apply (state carried across), so the
//! dataplane, WireGuard's source address and the routes move together.
//!
//! Sans-I/O like the rest: frames in, frames out, `now` passed in.
//!
//! [`Transmit::stack`]: routerd_dataplane::Transmit::stack

use alloc::vec;
use alloc::vec::Vec as AllocVec;
use core::net::Ipv4Addr;
use heapless::{Deque, Vec};
use routerd_dataplane::{Instant, Mac, PortId, Transmit};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::dhcpv4;
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpCidr, IpProtocol,
    Ipv4Packet, UdpPacket,
};

/// Frames held for the client between two polls (each way).
const QUEUE: usize = 4;
/// Largest frame the client takes or sends (an Ethernet frame, no FCS).
const FRAME: usize = 1514;
/// DNS servers a lease carries that the box keeps.
pub const MAX_DNS: usize = 3;

/// What a lease gives the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The WAN address and its subnet.
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The default gateway (option 3), if the server sent one.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr, MAX_DNS>,
    /// The server that granted it.
    pub server: Ipv4Addr,
    /// Lease time in seconds (option 51), when seen.
    pub lease_secs: Option<u32>,
    /// When it was (last) granted or renewed.
    pub since: Instant,
}

/// The client's state as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpState {
    /// The WAN port the client runs on.
    pub port: PortId,
    /// The lease in use, if any.
    pub lease: Option<Lease>,
    /// Since when the port has been without a lease (`None` while bound).
    pub unbound_since: Option<Instant>,
    /// Messages sent / DHCP replies received since the client started.
    pub sent: u32,
    pub received: u32,
    /// Leases lost (expired without renewal, or NAKed).
    pub lost: u32,
}

/// A change the node must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// A new lease, or the same one with another address, gateway or DNS.
    Bound(Lease),
    /// The lease ended (expired without renewal, or the server said no):
    /// the WAN has no address until the next one.
    Lost,
}

/// Frames between the dataplane and smoltcp.
struct Pipe {
    rx: Deque<AllocVec<u8>, QUEUE>,
    tx: Deque<AllocVec<u8>, QUEUE>,
}

struct Rx(AllocVec<u8>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct Tx<'a>(&'a mut Deque<AllocVec<u8>, QUEUE>);

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the MTU it was given.
        let mut frame = vec![0u8; len.min(FRAME)];
        let r = f(&mut frame);
        // `transmit` hands out a token only with room left.
        let _ = self.0.push_back(frame);
        r
    }
}

impl Device for Pipe {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        if self.tx.is_full() {
            return None;
        }
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        if self.tx.is_full() {
            None
        } else {
            Some(Tx(&mut self.tx))
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = FRAME;
        c
    }
}

fn at(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_millis(i64::try_from(now.millis()).unwrap_or(i64::MAX))
}

/// The DHCP client of one WAN port.
pub struct DhcpClient {
    port: PortId,
    mac: Mac,
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    pipe: Pipe,
    state: DhcpState,
    /// Lease time and server of the last ACK seen on the way in.
    last_ack: Option<(Ipv4Addr, Option<u32>)>,
    change: Option<LeaseChange>,
    /// The frames taken for the client that it had no room for.
    pub dropped: u64,
}

impl DhcpClient {
    /// A client for the WAN port `port` with MAC `mac`, starting to
    /// discover at `now`. `seed` randomises its transaction ids.
    pub fn new(port: PortId, mac: Mac, seed: u64, now: Instant) -> DhcpClient {
        let mut pipe = Pipe { rx: Deque::new(), tx: Deque::new() };
        let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        cfg.random_seed = seed;
        let iface = Interface::new(cfg, &mut pipe, at(now));
        let mut sockets = SocketSet::new(vec![SocketStorage::EMPTY]);
        let handle = sockets.add(dhcpv4::Socket::new());
        DhcpClient {
            port,
            mac,
            iface,
            sockets,
            handle,
            pipe,
            state: DhcpState { port, lease: None, unbound_since: Some(now), sent: 0, received: 0, lost: 0 },
            last_ack: None,
            change: None,
            dropped: 0,
        }
    }

    /// The port and MAC it runs for.
    pub fn runs_for(&self) -> (PortId, Mac) {
        (self.port, self.mac)
    }

    /// Status.
    pub fn state(&self) -> &DhcpState {
        &self.state
    }

    /// The lease in use.
    pub fn lease(&self) -> Option<&Lease> {
        self.state.lease.as_ref()
    }

    /// A frame the dataplane handed over (a DHCP reply or an ARP reply on
    /// the WAN port). False when the queue is full (counted in `dropped`).
    pub fn accept(&mut self, frame: &[u8]) -> bool {
        if let Some(ack) = ack_of(frame, self.mac) {
            self.last_ack = Some(ack);
        }
        if is_dhcp_reply(frame) {
            self.state.received = self.state.received.saturating_add(1);
        }
        if self.pipe.rx.is_full() {
            self.dropped += 1;
            return false;
        }
        self.pipe.rx.push_back(frame.to_vec()).is_ok()
    }

    /// When the client next needs [`DhcpClient::poll`] without new frames.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.pipe.rx.is_empty() {
            return Some(now);
        }
        self.iface.poll_at(at(now), &self.sockets).map(|t| Instant::from_millis(u64::try_from(t.total_millis()).unwrap_or(0)))
    }

    /// Runs the client: takes the frames handed over, retransmits and
    /// renews when due, sends what it has to send out of the WAN port.
    pub fn poll<X: Transmit + ?Sized>(&mut self, now: Instant, tx: &mut X) {
        self.iface.poll(at(now), &mut self.pipe, &mut self.sockets);
        while let Some(frame) = self.pipe.tx.pop_front() {
            if is_dhcp_request(&frame) {
                self.state.sent = self.state.sent.saturating_add(1);
            }
            // A full ring loses the message; the client retransmits.
            let _ = tx.send(self.port, &frame);
        }
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(self.handle).poll() {
            None => None,
            Some(dhcpv4::Event::Deconfigured) => Some(None),
            Some(dhcpv4::Event::Configured(c)) => Some(Some((c.address, c.router, c.dns_servers.clone(), c.server.address))),
        };
        match event {
            None => {}
            Some(None) => {
                self.iface.update_ip_addrs(|a| a.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                if self.state.lease.take().is_some() {
                    self.state.lost = self.state.lost.saturating_add(1);
                    self.state.unbound_since = Some(now);
                    self.change = Some(LeaseChange::Lost);
                }
            }
            Some(Some((address, router, dns, server))) => {
                self.iface.update_ip_addrs(|a| {
                    a.clear();
                    let _ = a.push(IpCidr::Ipv4(address));
                });
                match router {
                    Some(r) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                    }
                    None => {
                        self.iface.routes_mut().remove_default_ipv4_route();
                    }
                }
                let lease_secs = self.last_ack.filter(|(s, _)| *s == server).and_then(|(_, l)| l);
                let lease = Lease {
                    address: address.address(),
                    prefix_len: address.prefix_len(),
                    gateway: router,
                    dns: dns.iter().copied().take(MAX_DNS).collect(),
                    server,
                    lease_secs,
                    since: now,
                };
                self.state.unbound_since = None;
                // A renewal that changes nothing the box uses is not news.
                let same = self.state.lease.as_ref().is_some_and(|old| {
                    (old.address, old.prefix_len, old.gateway, &old.dns) == (lease.address, lease.prefix_len, lease.gateway, &lease.dns)
                });
                self.state.lease = Some(lease.clone());
                if !same {
                    self.change = Some(LeaseChange::Bound(lease));
                }
            }
        }
        // smoltcp reports a renewal only when something changed; an ACK
        // that renewed the same lease still restarts its clock.
        if let (Some(l), Some((server, secs))) = (self.state.lease.as_mut(), self.last_ack.take()) {
            if l.server == server {
                l.since = now;
                l.lease_secs = secs.or(l.lease_secs);
            }
        }
    }

    /// The change the node has not applied yet.
    pub fn take_change(&mut self) -> Option<LeaseChange> {
        self.change.take()
    }
}

/// The UDP payload of an IPv4/UDP frame with these ports.
fn udp_payload(frame: &[u8], src_port: u16, dst_port: u16) -> Option<&[u8]> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(frame.get(14..)?).ok()?;
    if ip.next_header() != IpProtocol::Udp {
        return None;
    }
    let hl = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let udp = UdpPacket::new_checked(frame.get(14 + hl..14 + total)?).ok()?;
    if udp.src_port() != src_port || udp.dst_port() != dst_port {
        return None;
    }
    let len = usize::from(udp.len());
    frame.get(14 + hl + 8..14 + hl + len)
}

/// True for a DHCP server → client frame (UDP 67 → 68).
pub fn is_dhcp_reply(frame: &[u8]) -> bool {
    udp_payload(frame, 67, 68).is_some()
}

fn is_dhcp_request(frame: &[u8]) -> bool {
    udp_payload(frame, 68, 67).is_some()
}

/// The server and lease time of a DHCPACK for `mac` in `frame`.
fn ack_of(frame: &[u8], mac: Mac) -> Option<(Ipv4Addr, Option<u32>)> {
    let payload = udp_payload(frame, 67, 68)?;
    let packet = DhcpPacket::new_checked(payload).ok()?;
    let repr = DhcpRepr::parse(&packet).ok()?;
    if repr.message_type != DhcpMessageType::Ack || repr.client_hardware_address != EthernetAddress(mac.0) {
        return None;
    }
    let server = repr.server_identifier?;
    Some((server, repr.lease_duration))
}

//! A small TCP endpoint for the services layer, on smoltcp.
//!
//! The box terminates TCP only for BGP (`crate::bgp`), and only with the
//! peers the dataplane admits ([`Dataplane::set_bgp_peers`]: TCP from a
//! configured peer to or from port 179, on a LAN port or out of the
//! tunnel, never on the WAN). Those packets reach the services queue like
//! any traffic for the box; [`Services::poll`](crate::Services::poll) hands
//! the TCP ones to [`Tcp::accept_packet`], and [`Tcp::poll`] runs smoltcp.
//!
//! # Design
//!
//! * One smoltcp `Interface` with `Medium::Ip`: it sees bare IPv4 packets,
//!   no Ethernet, no ARP. What it sends goes out through
//!   [`Dataplane::send_local`], routed like every packet the box originates
//!   (into the tunnel, or out of a LAN port with ARP resolution).
//! * Its addresses are the box's own addresses TCP may use: the tunnel
//!   address and the LAN ports' addresses ([`box_addresses`]; at most
//!   [`MAX_ADDRS`], smoltcp's `iface-max-addr-count-8`). The WAN's is left
//!   out: the WAN answers nothing but WireGuard.
//! * A fixed socket set: [`MAX_SOCKETS`] TCP sockets, each with
//!   [`RX_BUF`] + [`TX_BUF`] bytes of buffer, all made at construction
//!   (≈ 256 KiB in all). Nothing grows per packet or per connection; a
//!   socket is reused once closed. The rx and tx packet queues are bounded
//!   ([`QUEUE`] packets of at most [`MTU`] bytes each way).
//! * [`MTU`] is 1280 bytes: BGP needs no more, and a 1280-byte packet fits
//!   the tunnel (MTU 1420) and every LAN without fragmentation (smoltcp
//!   sends with DF).
//! * Handles: a [`Conn`] names a socket and its generation, so a handle
//!   kept after [`Tcp::abort`]/[`Tcp::close`] never reaches the socket's
//!   next user (it reads as [`ConnState::Closed`], sends and receives
//!   nothing).
//! * Listening: [`Tcp::listen`] keeps one socket in LISTEN on the port at
//!   every poll; a connection it takes waits until it is established, then
//!   [`Tcp::accept`] hands it out with the remote address (the caller
//!   decides per remote: BGP refuses addresses that are no peer). A SYN
//!   for a port nobody listens on gets smoltcp's RST.
//! * Closing: [`Tcp::close`] sends FIN after the queued data and lets the
//!   socket finish on its own (with a [`LINGER`] retransmission timeout so
//!   a dead peer cannot hold it); [`Tcp::abort`] sends RST and frees it.
//!
//! Sans-I/O like the rest: packets in, packets out through the dataplane,
//! `now` passed in.

use alloc::vec;
use core::net::Ipv4Addr;
use heapless::{Deque, Vec};
use routerd_dataplane::{Dataplane, Instant, PortRole, Transmit, Tunnel};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};

/// TCP sockets (connections, listeners and closing ones together).
pub const MAX_SOCKETS: usize = 16;
/// Receive buffer per socket (two full BGP messages).
pub const RX_BUF: usize = 8192;
/// Transmit buffer per socket.
pub const TX_BUF: usize = 8192;
/// Largest packet sent or taken.
pub const MTU: usize = 1280;
/// Largest packet taken from the services queue (a full IPv4 packet on a
/// 1500-byte link; smoltcp only reads it).
const RX_PACKET: usize = crate::services::MAX_LOCAL_PACKET;
/// Packets held each way between two polls.
pub const QUEUE: usize = 8;
/// Addresses of the interface.
pub const MAX_ADDRS: usize = 8;
/// How long a closed connection may keep retransmitting its FIN.
pub const LINGER: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(30);
/// Rounds of smoltcp work per [`Tcp::poll`] (each drains the tx queue).
const ROUNDS: usize = 8;
/// First ephemeral port (IANA's dynamic range).
const EPHEMERAL: u16 = 49152;

/// A connection handle: the socket's index and its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    slot: u8,
    generation: u32,
}

/// A connection's state as a service needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// SYN sent or received, not yet established.
    Connecting,
    /// Data flows both ways.
    Established,
    /// The peer sent FIN: what it sent before can still be read, and we
    /// may still send.
    PeerClosed,
    /// We closed; FIN on its way (nothing more to send or read).
    Closing,
    /// Gone (reset, timed out, aborted, or a stale handle).
    Closed,
}

/// Why a connection or listener could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpError {
    /// Every one of the [`MAX_SOCKETS`] sockets is in use.
    NoSocket,
    /// smoltcp refused the endpoint (port 0, unspecified address).
    Unaddressable { remote: Ipv4Addr, port: u16 },
    /// The local address is none of the interface's.
    NotOurAddress { local: Ipv4Addr },
    /// Listening on more ports than there are sockets.
    TooManyListeners { port: u16 },
}

impl core::fmt::Display for TcpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TcpError::NoSocket => write!(f, "tcp: all {MAX_SOCKETS} sockets in use"),
            TcpError::Unaddressable { remote, port } => write!(f, "tcp: cannot connect to {remote}:{port}"),
            TcpError::NotOurAddress { local } => write!(f, "tcp: local address {local} is not one of the box's TCP addresses"),
            TcpError::TooManyListeners { port } => write!(f, "tcp: no room to listen on port {port}"),
        }
    }
}

/// What the endpoint did and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Packets taken from the services queue.
    pub rx_packets: u64,
    /// Packets refused because the rx queue was full (TCP retransmits).
    pub rx_full: u64,
    /// Packets handed to the dataplane.
    pub tx_packets: u64,
    /// Packets the dataplane did not send at once (no route, ARP pending).
    pub tx_unsent: u64,
    /// Connections made ([`Tcp::connect`]) and accepted ([`Tcp::accept`]).
    pub connects: u64,
    pub accepts: u64,
    /// Connections refused for want of a socket.
    pub no_socket: u64,
    /// Closing sockets aborted to make room for a new connection.
    pub reclaimed: u64,
}

/// Who holds a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Free,
    /// Listening on the port, or holding a connection it took that was not
    /// handed out yet.
    Listen(u16),
    /// A caller's connection.
    Owned,
    /// Closed by its caller, finishing on its own.
    Lingering,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    handle: SocketHandle,
    role: Role,
    generation: u32,
}

/// Packets between the services queue, smoltcp and the dataplane.
struct Pipe {
    rx: Deque<Vec<u8, RX_PACKET>, QUEUE>,
    tx: Deque<Vec<u8, MTU>, QUEUE>,
}

struct Rx(Vec<u8, RX_PACKET>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct Tx<'a>(&'a mut Deque<Vec<u8, MTU>, QUEUE>);

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut p: Vec<u8, MTU> = Vec::new();
        // smoltcp never asks for more than the MTU it was given.
        let _ = p.resize(len.min(MTU), 0);
        let r = f(&mut p);
        // A token is handed out only with room left.
        let _ = self.0.push_back(p);
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
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
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
        c.medium = Medium::Ip;
        c.max_transmission_unit = MTU;
        c
    }
}

fn at(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_millis(i64::try_from(now.millis()).unwrap_or(i64::MAX))
}

/// The box's addresses TCP may use, from the running dataplane: the tunnel
/// address first, then the LAN ports' (the WAN's never), at most
/// [`MAX_ADDRS`].
pub fn box_addresses(dp: &Dataplane) -> Vec<Ipv4Addr, MAX_ADDRS> {
    let cfg = dp.config();
    let mut out = Vec::new();
    let lan = cfg.ports.iter().filter(|p| p.role == PortRole::Lan).filter_map(|p| p.address);
    for a in cfg.tunnel.address.into_iter().chain(lan) {
        if !out.contains(&a) && out.push(a).is_err() {
            break;
        }
    }
    out
}

/// The TCP endpoint: smoltcp's interface, its sockets, the packet queues.
pub struct Tcp {
    iface: Interface,
    sockets: SocketSet<'static>,
    slots: Vec<Slot, MAX_SOCKETS>,
    pipe: Pipe,
    addrs: Vec<Ipv4Addr, MAX_ADDRS>,
    listening: Vec<u16, MAX_SOCKETS>,
    next_port: u16,
    counters: TcpCounters,
}

impl Tcp {
    /// An endpoint with no address yet ([`Tcp::set_addresses`]); `seed`
    /// randomises initial sequence numbers and the first ephemeral port.
    pub fn new(seed: u64, now: Instant) -> Tcp {
        let mut pipe = Pipe { rx: Deque::new(), tx: Deque::new() };
        let mut cfg = IfaceConfig::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let iface = Interface::new(cfg, &mut pipe, at(now));
        let storage: alloc::vec::Vec<SocketStorage<'static>> = (0..MAX_SOCKETS).map(|_| SocketStorage::EMPTY).collect();
        let mut sockets = SocketSet::new(storage);
        let mut slots = Vec::new();
        for _ in 0..MAX_SOCKETS {
            let s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0u8; RX_BUF]), tcp::SocketBuffer::new(vec![0u8; TX_BUF]));
            let handle = sockets.add(s);
            let _ = slots.push(Slot { handle, role: Role::Free, generation: 0 });
        }
        let span = u64::from(u16::MAX - EPHEMERAL);
        let next_port = EPHEMERAL + u16::try_from(seed % span).unwrap_or(0);
        Tcp { iface, sockets, slots, pipe, addrs: Vec::new(), listening: Vec::new(), next_port, counters: TcpCounters::default() }
    }

    /// The box's addresses (see [`box_addresses`]); a change applies to new
    /// connections (existing ones keep theirs, and die if it went away).
    pub fn set_addresses(&mut self, addrs: &[Ipv4Addr]) {
        if self.addrs.as_slice() == addrs {
            return;
        }
        self.addrs = addrs.iter().copied().take(MAX_ADDRS).collect();
        let list = self.addrs.clone();
        self.iface.update_ip_addrs(|a| {
            a.clear();
            for ip in list.iter() {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(*ip), 32));
            }
        });
        // Medium::Ip has no neighbours: every destination is "reachable"
        // through a default route; the dataplane does the real routing.
        match self.addrs.first() {
            Some(first) => {
                let _ = self.iface.routes_mut().add_default_ipv4_route(*first);
            }
            None => {
                self.iface.routes_mut().remove_default_ipv4_route();
            }
        }
    }

    /// The interface's addresses.
    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.addrs
    }

    /// A TCP packet for the box (an IPv4 packet the dataplane admitted).
    /// False when the queue is full (counted in `rx_full`; TCP retransmits).
    pub fn accept_packet(&mut self, packet: &[u8]) -> bool {
        let Ok(p) = Vec::from_slice(packet) else {
            self.counters.rx_full += 1;
            return false;
        };
        match self.pipe.rx.push_back(p) {
            Ok(()) => {
                self.counters.rx_packets += 1;
                true
            }
            Err(_) => {
                self.counters.rx_full += 1;
                false
            }
        }
    }

    /// Runs smoltcp: takes the queued packets, sends what the sockets have
    /// (data, ACKs, retransmissions, RSTs) through the dataplane, and keeps
    /// a socket listening on every port [`Tcp::listen`] asked for.
    pub fn poll<T: Tunnel + ?Sized, X: Transmit + ?Sized>(&mut self, now: Instant, dp: &mut Dataplane, tunnel: &mut T, tx: &mut X) {
        for _ in 0..ROUNDS {
            self.iface.poll(at(now), &mut self.pipe, &mut self.sockets);
            let was_full = self.pipe.tx.is_full();
            while let Some(p) = self.pipe.tx.pop_front() {
                self.counters.tx_packets += 1;
                if !dp.send_local(now, &p, tunnel, tx) {
                    self.counters.tx_unsent += 1;
                }
            }
            if !was_full && self.pipe.rx.is_empty() {
                break;
            }
        }
        self.maintain();
    }

    /// When smoltcp next needs [`Tcp::poll`] without new packets.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.pipe.rx.is_empty() {
            return Some(now);
        }
        self.iface.poll_at(at(now), &self.sockets).map(|t| Instant::from_millis(u64::try_from(t.total_millis()).unwrap_or(0)))
    }

    /// Free finished sockets; keep one socket listening per port.
    fn maintain(&mut self) {
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots.get(i).copied() else { continue };
            let state = self.sockets.get::<tcp::Socket>(slot.handle).state();
            if slot.role == Role::Lingering && state == tcp::State::Closed {
                if let Some(s) = self.slots.get_mut(i) {
                    s.role = Role::Free;
                }
            }
        }
        for j in 0..self.listening.len() {
            let Some(port) = self.listening.get(j).copied() else { continue };
            let armed = self
                .slots
                .iter()
                .any(|s| s.role == Role::Listen(port) && self.sockets.get::<tcp::Socket>(s.handle).state() == tcp::State::Listen);
            if armed {
                continue;
            }
            let Some(i) = self.take_slot() else { return };
            let Some(slot) = self.slots.get_mut(i) else { return };
            let sock = self.sockets.get_mut::<tcp::Socket>(slot.handle);
            if sock.listen(IpListenEndpoint { addr: None, port }).is_ok() {
                configure(sock);
                slot.role = Role::Listen(port);
            }
        }
    }

    /// A free socket (reclaiming a lingering one in TIME-WAIT if need be),
    /// with a new generation.
    fn take_slot(&mut self) -> Option<usize> {
        let sockets = &mut self.sockets;
        let mut pick = self.slots.iter().position(|s| s.role == Role::Free);
        if pick.is_none() {
            pick = self.slots.iter().position(|s| {
                s.role == Role::Lingering
                    && matches!(sockets.get::<tcp::Socket>(s.handle).state(), tcp::State::TimeWait | tcp::State::Closed)
            });
            if pick.is_some() {
                self.counters.reclaimed += 1;
            }
        }
        let Some(i) = pick else {
            self.counters.no_socket += 1;
            return None;
        };
        let slot = self.slots.get_mut(i)?;
        sockets.get_mut::<tcp::Socket>(slot.handle).abort();
        slot.generation = slot.generation.wrapping_add(1);
        slot.role = Role::Free;
        Some(i)
    }

    fn next_ephemeral(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if self.next_port == u16::MAX { EPHEMERAL } else { self.next_port + 1 };
        p
    }

    fn conn_of(&self, i: usize) -> Option<Conn> {
        let s = self.slots.get(i)?;
        Some(Conn { slot: u8::try_from(i).ok()?, generation: s.generation })
    }

    /// The socket of a live handle.
    fn socket(&mut self, c: Conn) -> Option<&mut tcp::Socket<'static>> {
        let s = self.slots.get(usize::from(c.slot))?;
        if s.generation != c.generation || s.role != Role::Owned {
            return None;
        }
        Some(self.sockets.get_mut::<tcp::Socket>(s.handle))
    }

    /// Open a connection from `local` (one of the interface's addresses)
    /// and an ephemeral port to `remote:port`. It is
    /// [`ConnState::Connecting`] until the handshake completes.
    pub fn connect(&mut self, local: Ipv4Addr, remote: Ipv4Addr, port: u16) -> Result<Conn, TcpError> {
        if !self.addrs.contains(&local) {
            return Err(TcpError::NotOurAddress { local });
        }
        let i = self.take_slot().ok_or(TcpError::NoSocket)?;
        let lport = self.next_ephemeral();
        let slot = self.slots.get_mut(i).ok_or(TcpError::NoSocket)?;
        let sock = self.sockets.get_mut::<tcp::Socket>(slot.handle);
        configure(sock);
        let remote_ep = IpEndpoint::new(IpAddress::Ipv4(remote), port);
        let local_ep = IpListenEndpoint { addr: Some(IpAddress::Ipv4(local)), port: lport };
        if sock.connect(self.iface.context(), remote_ep, local_ep).is_err() {
            return Err(TcpError::Unaddressable { remote, port });
        }
        slot.role = Role::Owned;
        self.counters.connects += 1;
        self.conn_of(i).ok_or(TcpError::NoSocket)
    }

    /// Keep a socket listening on `port` (from the next poll on).
    pub fn listen(&mut self, port: u16) -> Result<(), TcpError> {
        if self.listening.contains(&port) {
            return Ok(());
        }
        self.listening.push(port).map_err(|_| TcpError::TooManyListeners { port })
    }

    /// Stop listening on `port`; connections it took and did not hand out
    /// yet are reset.
    pub fn unlisten(&mut self, port: u16) {
        self.listening.retain(|p| *p != port);
        for s in self.slots.iter_mut() {
            if s.role == Role::Listen(port) {
                self.sockets.get_mut::<tcp::Socket>(s.handle).abort();
                s.role = Role::Free;
            }
        }
    }

    /// An established connection to `port` from a remote: the handle, and
    /// the remote's address and port. The caller owns it from now on.
    pub fn accept(&mut self, port: u16) -> Option<(Conn, Ipv4Addr, u16)> {
        for i in 0..self.slots.len() {
            let slot = self.slots.get(i)?;
            if slot.role != Role::Listen(port) {
                continue;
            }
            let sock = self.sockets.get::<tcp::Socket>(slot.handle);
            if !matches!(sock.state(), tcp::State::Established | tcp::State::CloseWait) {
                continue;
            }
            let Some(IpEndpoint { addr: IpAddress::Ipv4(remote), port: rport }) = sock.remote_endpoint() else {
                continue;
            };
            let slot = self.slots.get_mut(i)?;
            slot.role = Role::Owned;
            self.counters.accepts += 1;
            return Some((self.conn_of(i)?, remote, rport));
        }
        None
    }

    /// The state of a connection.
    pub fn state(&mut self, c: Conn) -> ConnState {
        let Some(s) = self.socket(c) else { return ConnState::Closed };
        match s.state() {
            tcp::State::Closed | tcp::State::Listen => ConnState::Closed,
            tcp::State::SynSent | tcp::State::SynReceived => ConnState::Connecting,
            tcp::State::Established => ConnState::Established,
            tcp::State::CloseWait => ConnState::PeerClosed,
            tcp::State::FinWait1 | tcp::State::FinWait2 | tcp::State::Closing | tcp::State::LastAck | tcp::State::TimeWait => {
                ConnState::Closing
            }
        }
    }

    /// The local and remote endpoints of a connection.
    pub fn endpoints(&mut self, c: Conn) -> Option<((Ipv4Addr, u16), (Ipv4Addr, u16))> {
        let s = self.socket(c)?;
        let (IpEndpoint { addr: IpAddress::Ipv4(l), port: lp }, IpEndpoint { addr: IpAddress::Ipv4(r), port: rp }) =
            (s.local_endpoint()?, s.remote_endpoint()?);
        Some(((l, lp), (r, rp)))
    }

    /// Queue `data` for sending: how much fit (0 when the connection cannot
    /// send, or its buffer is full).
    pub fn send(&mut self, c: Conn, data: &[u8]) -> usize {
        let Some(s) = self.socket(c) else { return 0 };
        if !s.may_send() {
            return 0;
        }
        s.send_slice(data).unwrap_or(0)
    }

    /// Read received bytes into `buf`: how many (0 when none are waiting).
    pub fn recv(&mut self, c: Conn, buf: &mut [u8]) -> usize {
        let Some(s) = self.socket(c) else { return 0 };
        if !s.can_recv() {
            return 0;
        }
        s.recv_slice(buf).unwrap_or(0)
    }

    /// Close gracefully: FIN after what is queued; the socket finishes on
    /// its own (at most [`LINGER`] of retransmissions) and is reused after.
    /// The handle is dead from now on.
    pub fn close(&mut self, c: Conn) {
        let Some(s) = self.socket(c) else { return };
        s.close();
        s.set_timeout(Some(LINGER));
        if let Some(slot) = self.slots.get_mut(usize::from(c.slot)) {
            slot.role = Role::Lingering;
            slot.generation = slot.generation.wrapping_add(1);
        }
    }

    /// Reset the connection (RST) and free its socket at once.
    pub fn abort(&mut self, c: Conn) {
        let Some(s) = self.socket(c) else { return };
        s.abort();
        if let Some(slot) = self.slots.get_mut(usize::from(c.slot)) {
            // The RST goes out at the next poll; the socket is then Closed.
            slot.role = Role::Lingering;
            slot.generation = slot.generation.wrapping_add(1);
        }
    }

    /// Sockets not free (connections, listeners, closing ones).
    pub fn in_use(&self) -> usize {
        self.slots.iter().filter(|s| s.role != Role::Free).count()
    }

    /// Whether anything is still to go out: bytes a socket has not had
    /// acknowledged yet (a goodbye NOTIFICATION, a FIN), or packets queued
    /// for the dataplane. For a platform that wants its last words sent
    /// before it stops.
    pub fn sending(&self) -> bool {
        !self.pipe.tx.is_empty()
            || self.slots.iter().filter(|s| s.role != Role::Free).any(|s| {
                let sock = self.sockets.get::<tcp::Socket>(s.handle);
                sock.send_queue() > 0 || matches!(sock.state(), tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck)
            })
    }

    /// What the endpoint did so far.
    pub fn counters(&self) -> TcpCounters {
        self.counters
    }
}

/// Socket options for BGP: no Nagle and no delayed ACK (messages are
/// whole, and the loop's turns already batch), no TCP keep-alive (BGP
/// keeps its own), no timeout while open.
fn configure(s: &mut tcp::Socket<'static>) {
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    s.set_keep_alive(None);
    s.set_timeout(None);
}

//! The WAN port: a UDP socket that looks like an Ethernet NIC to the dataplane.
//!
//! The dataplane owns the WireGuard UDP port, the underlay headers and
//! gateway ARP (see `routerd_dataplane::tunnel`). On Linux the kernel owns the
//! NIC, so this shim stands in for the wire:
//!
//! * outgoing: a UDP datagram from the WireGuard listen port becomes
//!   `sendto(payload, dst:port)` (queued, flushed with one `sendmmsg` per
//!   turn); an ARP request is answered by the shim with its own MAC, whatever
//!   address is asked (the kernel does the real next-hop work); other IPv4
//!   (claims delivered onto the WAN subnet, ICMP errors, fragments) goes to
//!   the optional WAN TUN device, or is dropped and counted without one.
//! * incoming: a datagram read with `recvmmsg` straight into a frame buffer
//!   at `HEADROOM + 42` gets Ethernet/IPv4/UDP headers written in front of it
//!   (zero copy), addressed to the WAN port's MAC and address; a packet read
//!   from the WAN TUN device gets an Ethernet header.
//! * the socket is dual-stack; IPv6 peers appear to the dataplane under
//!   synthetic IPv4 addresses ([`crate::v6map`]).
//!
//! Counters: every datagram or frame not passed on increments one named
//! counter in [`WanCounters`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use heapless::Deque;
use routerd_dataplane as dp;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::frame::{self, UdpHeaders, WanFrame, ARP_FRAME, UDP_HEADERS};
use crate::tap;
use crate::v6map::{self, V6Map};

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;
/// ARP replies waiting to be fed back into the dataplane. The dataplane asks
/// about one next hop at a time and retries, so a few slots are plenty; when
/// full the request is dropped (`arp_queue_full`) and the retry is answered.
const ARP_QUEUE: usize = 8;
/// Room for one outgoing datagram (a sealed 1500-byte inner packet is 1532).
const TX_SLOT: usize = 2048;

/// The MAC the shim answers ARP with (the "wire" side of the WAN port).
pub const SHIM_MAC: [u8; 6] = [0x02, 0x72, 0x64, 0x00, 0x00, 0xfe];

/// Why datagrams and frames did or did not cross the shim.
#[derive(Debug, Clone, Copy, Default)]
pub struct WanCounters {
    pub rx_datagrams: u64,
    pub tx_datagrams: u64,
    pub arp_answered: u64,
    pub tun_rx: u64,
    pub tun_tx: u64,
    /// Drops, each with its reason.
    pub rx_truncated: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub arp_queue_full: u64,
    pub v6_map_full: u64,
    pub v6_unknown_synthetic: u64,
    pub v6_no_socket: u64,
    pub not_udp_no_tun: u64,
    pub udp_not_wireguard: u64,
    pub malformed: u64,
    pub tun_errors: u64,
}

impl WanCounters {
    /// (name, value) of every drop counter.
    pub fn drops(&self) -> [(&'static str, u64); 11] {
        [
            ("rx_truncated", self.rx_truncated),
            ("rx_errors", self.rx_errors),
            ("tx_errors", self.tx_errors),
            ("arp_queue_full", self.arp_queue_full),
            ("v6_map_full", self.v6_map_full),
            ("v6_unknown_synthetic", self.v6_unknown_synthetic),
            ("v6_no_socket", self.v6_no_socket),
            ("not_udp_no_tun", self.not_udp_no_tun),
            ("udp_not_wireguard", self.udp_not_wireguard),
            ("malformed", self.malformed),
            ("tun_errors", self.tun_errors),
        ]
    }
}

/// How the dataplane sees the WAN port.
#[derive(Debug, Clone, Copy)]
pub struct WanIdentity {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub listen_port: u16,
}

/// Outgoing datagrams of one turn.
struct TxQueue {
    data: Vec<[u8; TX_SLOT]>,
    lens: [usize; BATCH],
    dsts: [libc::sockaddr_in6; BATCH],
    len: usize,
}

/// The WAN shim.
pub struct Wan {
    sock: AsyncFd<Socket>,
    dual_stack: bool,
    id: WanIdentity,
    map: V6Map,
    arp: Deque<[u8; ARP_FRAME], ARP_QUEUE>,
    tx: TxQueue,
    tun: Option<AsyncFd<tap::Device>>,
    ident: u16,
    pub counters: WanCounters,
}

fn zero_sockaddr6() -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn sockaddr6(ip: Ipv6Addr, port: u16) -> libc::sockaddr_in6 {
    let mut sa = zero_sockaddr6();
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_port = port.to_be();
    sa.sin6_addr.s6_addr = ip.octets();
    sa
}

/// Open the socket: dual-stack on `bind` (an IPv6 address, normally `::`),
/// or IPv4 only when `bind` is IPv4.
fn open_socket(bind: IpAddr, port: u16) -> io::Result<(Socket, bool)> {
    let (sock, dual) = match bind {
        IpAddr::V6(_) => {
            let s = Socket::new(Domain::IPV6, Type::DGRAM, None)?;
            s.set_only_v6(false)?;
            (s, true)
        }
        IpAddr::V4(_) => (Socket::new(Domain::IPV4, Type::DGRAM, None)?, false),
    };
    sock.set_nonblocking(true)?;
    // Deep buffers: a burst of a whole TCP window arrives between turns.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&SockAddr::from(SocketAddr::new(bind, port)))
        .map_err(|e| io::Error::new(e.kind(), format!("bind UDP {}: {e}", SocketAddr::new(bind, port))))?;
    Ok((sock, dual))
}

impl Wan {
    /// Bind the WireGuard socket. `bind = None`: `::` (dual-stack), falling
    /// back to `0.0.0.0` when the host has IPv6 disabled.
    pub fn new(bind: Option<IpAddr>, id: WanIdentity, tun: Option<tap::Device>) -> io::Result<Wan> {
        let (sock, dual_stack) = match bind {
            Some(b) => open_socket(b, id.listen_port)?,
            None => match open_socket(IpAddr::V6(Ipv6Addr::UNSPECIFIED), id.listen_port) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
                Err(_) => open_socket(IpAddr::V4(Ipv4Addr::UNSPECIFIED), id.listen_port)?,
            },
        };
        let tun = match tun {
            Some(t) => Some(tap::register(t)?),
            None => None,
        };
        Ok(Wan {
            sock: tap::register(sock)?,
            dual_stack,
            id,
            map: V6Map::default(),
            arp: Deque::new(),
            tx: TxQueue { data: vec![[0u8; TX_SLOT]; BATCH], lens: [0; BATCH], dsts: [zero_sockaddr6(); BATCH], len: 0 },
            tun,
            ident: 0,
            counters: WanCounters::default(),
        })
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.get_ref().local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))
    }

    /// True when IPv6 peers can be reached.
    pub fn dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// The socket, for readiness.
    pub fn socket_fd(&self) -> &AsyncFd<Socket> {
        &self.sock
    }

    /// The WAN TUN device's name.
    pub fn tun_name(&self) -> Option<&str> {
        self.tun.as_ref().map(|t| t.get_ref().name())
    }

    /// The WAN TUN device, for readiness.
    pub fn tun_fd(&self) -> Option<&AsyncFd<tap::Device>> {
        self.tun.as_ref()
    }

    /// A peer endpoint as the dataplane must see it (IPv6 → synthetic IPv4,
    /// pinned). `None` for IPv6 without a dual-stack socket or a full table.
    pub fn dataplane_endpoint(&mut self, a: SocketAddr) -> Option<SocketAddrV4> {
        match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => Some(SocketAddrV4::new(v4, v6.port())),
                None if self.dual_stack => self.map.to_v4(*v6.ip(), true).map(|s| SocketAddrV4::new(s, v6.port())),
                None => None,
            },
        }
    }

    /// The real address behind an endpoint the dataplane uses.
    pub fn real_endpoint(&mut self, a: SocketAddr) -> SocketAddr {
        match a {
            SocketAddr::V4(v4) if v6map::is_synthetic(*v4.ip()) => match self.map.to_v6(*v4.ip()) {
                Some(ip6) => SocketAddr::V6(SocketAddrV6::new(ip6, v4.port(), 0, 0)),
                None => a,
            },
            other => other,
        }
    }

    // ------------------------------------------------------------ outgoing

    /// Handle one frame the dataplane sent on the WAN port. Returns false
    /// when it could not be passed on (counted).
    pub fn transmit(&mut self, f: &[u8]) -> bool {
        match frame::parse_wan_frame(f) {
            WanFrame::ArpRequest { sender_mac, sender_ip, target } => {
                if target == self.id.address || target == sender_ip {
                    // Its own address, or a gratuitous announcement: nothing to answer.
                    return true;
                }
                if self.arp.push_back(frame::arp_reply(SHIM_MAC, target, sender_mac, sender_ip)).is_err() {
                    self.counters.arp_queue_full += 1;
                    return false;
                }
                self.counters.arp_answered += 1;
                true
            }
            WanFrame::ArpOther => true,
            WanFrame::Udp { dst, sport, dport, payload, .. } if sport == self.id.listen_port => {
                let Some(data) = f.get(payload) else {
                    self.counters.malformed += 1;
                    return false;
                };
                self.queue_datagram(dst, dport, data)
            }
            WanFrame::Udp { .. } => {
                // VXLAN over the bare WAN would need its own socket.
                self.counters.udp_not_wireguard += 1;
                false
            }
            WanFrame::Ipv4 { packet } => {
                let (Some(tun), Some(p)) = (self.tun.as_ref(), f.get(packet)) else {
                    self.counters.not_udp_no_tun += 1;
                    return false;
                };
                match tun.get_ref().send(p) {
                    Ok(_) => {
                        self.counters.tun_tx += 1;
                        true
                    }
                    Err(_) => {
                        self.counters.tun_errors += 1;
                        false
                    }
                }
            }
            WanFrame::Other | WanFrame::Malformed => {
                self.counters.malformed += 1;
                false
            }
        }
    }

    fn queue_datagram(&mut self, dst: Ipv4Addr, port: u16, data: &[u8]) -> bool {
        let ip6 = if v6map::is_synthetic(dst) {
            match self.map.to_v6(dst) {
                Some(a) => a,
                None => {
                    self.counters.v6_unknown_synthetic += 1;
                    return false;
                }
            }
        } else {
            dst.to_ipv6_mapped()
        };
        if self.tx.len >= BATCH {
            self.flush();
        }
        let i = self.tx.len;
        let (Some(slot), Some(len), Some(sa)) = (self.tx.data.get_mut(i), self.tx.lens.get_mut(i), self.tx.dsts.get_mut(i)) else {
            self.counters.tx_errors += 1;
            return false;
        };
        let Some(dst_bytes) = slot.get_mut(..data.len()) else {
            self.counters.tx_errors += 1;
            return false;
        };
        dst_bytes.copy_from_slice(data);
        *len = data.len();
        *sa = sockaddr6(ip6, port);
        self.tx.len += 1;
        true
    }

    /// Send the queued datagrams (one `sendmmsg` per 64).
    pub fn flush(&mut self) {
        let n = self.tx.len;
        if n == 0 {
            return;
        }
        self.tx.len = 0;
        let fd = self.sock.get_ref().as_raw_fd();
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        // An IPv4-only socket takes sockaddr_in; convert in place.
        let mut v4: [libc::sockaddr_in; BATCH] =
            [libc::sockaddr_in { sin_family: 0, sin_port: 0, sin_addr: libc::in_addr { s_addr: 0 }, sin_zero: [0; 8] }; BATCH];
        let mut count = 0usize;
        for i in 0..n {
            let (Some(slot), Some(&len), Some(sa)) = (self.tx.data.get_mut(i), self.tx.lens.get(i), self.tx.dsts.get_mut(i)) else { break };
            let (Some(iov), Some(msg), Some(sa4)) = (iovs.get_mut(count), msgs.get_mut(count), v4.get_mut(count)) else { break };
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = len;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            if self.dual_stack {
                msg.msg_hdr.msg_name = (sa as *mut libc::sockaddr_in6).cast();
                msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            } else {
                let Some(ip4) = Ipv6Addr::from(sa.sin6_addr.s6_addr).to_ipv4_mapped() else {
                    self.counters.v6_no_socket += 1;
                    continue;
                };
                sa4.sin_family = libc::AF_INET as libc::sa_family_t;
                sa4.sin_port = sa.sin6_port;
                sa4.sin_addr.s_addr = u32::from_ne_bytes(ip4.octets());
                msg.msg_hdr.msg_name = (sa4 as *mut libc::sockaddr_in).cast();
                msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            count += 1;
        }
        let mut sent = 0usize;
        // Bounded: each round sends at least one datagram or stops.
        while sent < count {
            let Some(rest) = msgs.get_mut(sent..count) else { break };
            // SAFETY: every mmsghdr in `rest` points at an iovec, a buffer
            // and an address that live until the call returns.
            let r = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, libc::MSG_DONTWAIT) };
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                // One destination failed (e.g. EHOSTUNREACH): skip it, go on.
                self.counters.tx_errors += 1;
                sent += 1;
                continue;
            }
            if r <= 0 {
                // A full socket buffer: the rest of this turn's datagrams are
                // lost, as on a busy wire (WireGuard's users retransmit).
                self.counters.tx_errors += (count - sent) as u64;
                break;
            }
            sent += r as usize;
            self.counters.tx_datagrams += r as u64;
        }
    }

    /// The next ARP reply to feed into the dataplane's WAN port.
    pub fn pop_arp(&mut self) -> Option<[u8; ARP_FRAME]> {
        self.arp.pop_front()
    }

    // ------------------------------------------------------------ incoming

    /// Receive up to `bufs.len()` datagrams (at most [`BATCH`]) into frame
    /// buffers as whole Ethernet frames at `dp::HEADROOM`; `lens[i]` is the
    /// frame length (0 for a slot that was dropped). Returns how many slots
    /// were used and whether the socket was drained.
    pub fn receive(&mut self, bufs: &mut [[u8; dp::BUF_SIZE]], lens: &mut [usize]) -> (usize, bool) {
        let want = bufs.len().min(lens.len()).min(BATCH);
        let payload_at = dp::HEADROOM + UDP_HEADERS;
        let room = dp::BUF_SIZE - payload_at - dp::TAILROOM;
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        let mut names: [libc::sockaddr_in6; BATCH] = [zero_sockaddr6(); BATCH];
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (((buf, iov), name), msg) in bufs.iter_mut().zip(iovs.iter_mut()).zip(names.iter_mut()).zip(msgs.iter_mut()).take(want) {
            let Some(area) = buf.get_mut(payload_at..payload_at + room) else { continue };
            iov.iov_base = area.as_mut_ptr().cast();
            iov.iov_len = area.len();
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_in6).cast();
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        }
        let fd = self.sock.get_ref().as_raw_fd();
        // SAFETY: the first `want` mmsghdrs point at iovecs, buffers and
        // address storage that live until the call returns.
        let r = unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), want as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                // ICMP errors from earlier sends surface here; not fatal.
                self.counters.rx_errors += 1;
                return (0, false);
            }
            return (0, true);
        }
        let got = r as usize;
        for i in 0..got {
            let (Some(msg), Some(name), Some(buf), Some(len)) = (msgs.get(i), names.get(i), bufs.get_mut(i), lens.get_mut(i)) else {
                break;
            };
            *len = 0;
            let n = msg.msg_len as usize;
            if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || n > room {
                self.counters.rx_truncated += 1;
                continue;
            }
            let Some(from) = self.source(name) else { continue };
            self.ident = self.ident.wrapping_add(1);
            let h = UdpHeaders {
                dst_mac: self.id.mac,
                src_mac: SHIM_MAC,
                src: *from.ip(),
                dst: self.id.address,
                sport: from.port(),
                dport: self.id.listen_port,
                ident: self.ident,
            };
            let Some(hdr) = buf.get_mut(dp::HEADROOM..payload_at) else { continue };
            if !h.emit(hdr, n) {
                self.counters.malformed += 1;
                continue;
            }
            *len = UDP_HEADERS + n;
            self.counters.rx_datagrams += 1;
        }
        (got, got < want)
    }

    /// The source of a received datagram as the dataplane sees it.
    fn source(&mut self, name: &libc::sockaddr_in6) -> Option<SocketAddrV4> {
        let port = u16::from_be(name.sin6_port);
        if name.sin6_family == libc::AF_INET as libc::sa_family_t {
            // SAFETY: the kernel wrote a sockaddr_in (an IPv4-only socket);
            // it is smaller than the sockaddr_in6 storage it sits in.
            let sa4 = unsafe { &*(name as *const libc::sockaddr_in6).cast::<libc::sockaddr_in>() };
            return Some(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sa4.sin_addr.s_addr)), port));
        }
        let ip6 = Ipv6Addr::from(name.sin6_addr.s6_addr);
        match ip6.to_ipv4_mapped() {
            Some(v4) => Some(SocketAddrV4::new(v4, port)),
            None => match self.map.to_v4(ip6, false) {
                Some(s) => Some(SocketAddrV4::new(s, port)),
                None => {
                    self.counters.v6_map_full += 1;
                    None
                }
            },
        }
    }

    /// Receive up to `bufs.len()` packets from the WAN TUN device as frames.
    pub fn receive_tun(&mut self, bufs: &mut [[u8; dp::BUF_SIZE]], lens: &mut [usize]) -> (usize, bool) {
        let Some(tun) = self.tun.as_ref() else { return (0, true) };
        let at = dp::HEADROOM + frame::ETH_LEN;
        let mut used = 0;
        for (buf, len) in bufs.iter_mut().zip(lens.iter_mut()) {
            let Some(area) = buf.get_mut(at..dp::BUF_SIZE - dp::TAILROOM) else { break };
            match tun.get_ref().recv(area) {
                Ok(n) => {
                    used += 1;
                    *len = 0;
                    if area.first().map(|b| b >> 4) != Some(4) {
                        // IPv6 chatter the kernel sends into the device.
                        self.counters.malformed += 1;
                        continue;
                    }
                    let Some(hdr) = buf.get_mut(dp::HEADROOM..at) else { continue };
                    if frame::emit_ipv4_ethernet(hdr, self.id.mac, SHIM_MAC) {
                        *len = frame::ETH_LEN + n;
                        self.counters.tun_rx += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (used, true),
                Err(_) => {
                    self.counters.tun_errors += 1;
                    return (used, true);
                }
            }
        }
        (used, false)
    }
}

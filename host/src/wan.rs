//! The WAN port: the tunnel's UDP socket, a `routerd_netdev::NetDevice` of
//! `Medium::Datagram`.
//!
//! On Linux the kernel owns the WAN: its wire, its address, its neighbours
//! and the IP and UDP headers. So the dataplane does not see Ethernet here:
//!
//! * incoming: `recvmmsg` reads datagrams straight into receive buffers at
//!   the dataplane's headroom and lends them with their sender
//!   (`NetDevice::rx_source`), IPv4 or IPv6 as the socket got them; the
//!   dataplane hands them to WireGuard as they are (no copy). A packet read
//!   from the optional WAN TUN device (`--wan-tun`) is lent as a bare IPv4
//!   packet (no sender).
//! * outgoing: `send_datagram` queues the payload with its endpoint; the
//!   queue goes out with one `sendmmsg` per turn (`NetDevice::poll`) or when
//!   it is full. A bare IPv4 packet the dataplane sends on the WAN (claims
//!   delivered onto the WAN subnet, ICMP errors) goes to the TUN device, or
//!   is dropped and counted without one.
//! * the socket is dual-stack unless bound to an IPv4 address.
//!
//! Counters: every datagram or packet not passed on increments one named
//! counter in [`WanCounters`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::task::Context;

use routerd_netdev::pool::RxPool;
use routerd_netdev::{Capabilities, DeviceStats, Medium, NetDevice, RxLoan, TxToken, MAX_FRAME};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::nic::{give_back_to, lend_reads, ready, rx_area, tx_len, READ_ERRORS, RX_BUFS};
use crate::tap;

/// Datagrams per `recvmmsg`/`sendmmsg` call, and frames per NIC and turn
/// (the forwarding turn's batch on routerd-host).
pub const BATCH: usize = 64;
/// Room for one outgoing datagram (a sealed 1500-byte inner packet is 1532).
const TX_SLOT: usize = 2048;

/// Why datagrams and packets did or did not cross the WAN.
#[derive(Debug, Clone, Copy, Default)]
pub struct WanCounters {
    pub rx_datagrams: u64,
    pub tx_datagrams: u64,
    pub tun_rx: u64,
    pub tun_tx: u64,
    /// Drops, each with its reason.
    pub rx_truncated: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// An IPv6 endpoint on a socket bound to an IPv4 address.
    pub v6_no_socket: u64,
    /// A bare IPv4 packet for the WAN without `--wan-tun`.
    pub not_udp_no_tun: u64,
    /// What the TUN device gave that is not IPv4 (the kernel's IPv6 chatter).
    pub tun_not_ipv4: u64,
    pub tun_read_errors: u64,
    pub tun_write_errors: u64,
}

impl WanCounters {
    /// (name, value) of every drop counter.
    pub fn drops(&self) -> [(&'static str, u64); 8] {
        [
            ("rx_truncated", self.rx_truncated),
            ("rx_errors", self.rx_errors),
            ("tx_errors", self.tx_errors),
            ("v6_no_socket", self.v6_no_socket),
            ("not_udp_no_tun", self.not_udp_no_tun),
            ("tun_not_ipv4", self.tun_not_ipv4),
            ("tun_read_errors", self.tun_read_errors),
            ("tun_write_errors", self.tun_write_errors),
        ]
    }

    /// What was lost on the way in (status: the port's rx errors).
    fn lost_in(&self) -> u64 {
        self.rx_truncated + self.rx_errors + self.tun_not_ipv4 + self.tun_read_errors
    }

    /// What was lost on the way out after the dataplane let go of it
    /// (status: the port's transmit drops, like a TAP's failed writes).
    fn lost_out(&self) -> u64 {
        self.tx_errors + self.v6_no_socket + self.not_udp_no_tun + self.tun_write_errors
    }
}

/// Outgoing datagrams of one turn.
struct TxQueue {
    data: Vec<[u8; TX_SLOT]>,
    lens: [usize; BATCH],
    /// Where each goes, in a family the socket carries.
    dsts: [SocketAddr; BATCH],
    len: usize,
}

/// The WAN port's device.
pub struct WanNic {
    sock: AsyncFd<Socket>,
    dual_stack: bool,
    mac: [u8; 6],
    pool: RxPool,
    /// The sender of the datagram in each receive buffer (`None`: a packet
    /// from the TUN device).
    sources: Vec<Option<SocketAddr>>,
    tx: Box<TxQueue>,
    tun: Option<AsyncFd<tap::Device>>,
    /// A bare IPv4 packet to write to the TUN device.
    tun_buf: Box<[u8; MAX_FRAME]>,
    stats: DeviceStats,
    pub counters: WanCounters,
    /// The last `lend` filled its batch: more may be waiting.
    pub(crate) full: bool,
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

impl WanNic {
    /// Bind the WireGuard socket on `listen_port`. `bind = None`: `::`
    /// (dual-stack), falling back to `0.0.0.0` when the host has IPv6
    /// disabled. `mac` names the NIC (the configuration binds ports by MAC).
    pub fn new(bind: Option<IpAddr>, listen_port: u16, mac: [u8; 6], tun: Option<tap::Device>) -> io::Result<WanNic> {
        let (sock, dual_stack) = match bind {
            Some(b) => open_socket(b, listen_port)?,
            None => match open_socket(IpAddr::V6(Ipv6Addr::UNSPECIFIED), listen_port) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
                Err(_) => open_socket(IpAddr::V4(Ipv4Addr::UNSPECIFIED), listen_port)?,
            },
        };
        let tun = match tun {
            Some(t) => Some(tap::register(t)?),
            None => None,
        };
        Ok(WanNic {
            sock: tap::register(sock)?,
            dual_stack,
            mac,
            pool: RxPool::new(RX_BUFS),
            sources: vec![None; RX_BUFS],
            tx: Box::new(TxQueue {
                data: vec![[0u8; TX_SLOT]; BATCH],
                lens: [0; BATCH],
                dsts: [SocketAddr::from(([0u8; 4], 0)); BATCH],
                len: 0,
            }),
            tun,
            tun_buf: Box::new([0; MAX_FRAME]),
            stats: DeviceStats::default(),
            full: false,
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

    /// The WAN TUN device's name.
    pub fn tun_name(&self) -> Option<&str> {
        self.tun.as_ref().map(|t| t.get_ref().name())
    }

    /// Registers the task with the socket and the TUN device; true when
    /// either was readable.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> bool {
        let sock = ready(&self.sock, cx);
        let tun = self.tun.as_ref().is_some_and(|t| ready(t, cx));
        sock || tun
    }

    // ------------------------------------------------------------ outgoing

    fn queue_datagram(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        // `::ffff:a.b.c.d` is IPv4; IPv6 needs the dual-stack socket.
        let to = match to {
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
                None if self.dual_stack => to,
                None => {
                    self.counters.v6_no_socket += 1;
                    return false;
                }
            },
            v4 => v4,
        };
        if self.tx.len >= BATCH {
            self.flush();
        }
        let i = self.tx.len;
        let (Some(slot), Some(len), Some(dst)) = (self.tx.data.get_mut(i), self.tx.lens.get_mut(i), self.tx.dsts.get_mut(i)) else {
            self.counters.tx_errors += 1;
            return false;
        };
        let Some(dst_bytes) = slot.get_mut(..data.len()) else {
            self.counters.tx_errors += 1;
            return false;
        };
        dst_bytes.copy_from_slice(data);
        *len = data.len();
        *dst = to;
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
        // The dual-stack socket takes sockaddr_in6 (IPv4 as ::ffff:a.b.c.d),
        // an IPv4-only one sockaddr_in.
        let mut v6: [libc::sockaddr_in6; BATCH] = [zero_sockaddr6(); BATCH];
        let mut v4: [libc::sockaddr_in; BATCH] =
            [libc::sockaddr_in { sin_family: 0, sin_port: 0, sin_addr: libc::in_addr { s_addr: 0 }, sin_zero: [0; 8] }; BATCH];
        let mut count = 0usize;
        for i in 0..n {
            let (Some(slot), Some(&len), Some(&to)) = (self.tx.data.get_mut(i), self.tx.lens.get(i), self.tx.dsts.get(i)) else { break };
            let (Some(iov), Some(msg), Some(sa6), Some(sa4)) =
                (iovs.get_mut(count), msgs.get_mut(count), v6.get_mut(count), v4.get_mut(count))
            else {
                break;
            };
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = len;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            match (self.dual_stack, to) {
                (true, to) => {
                    let ip = match to.ip() {
                        IpAddr::V4(a) => a.to_ipv6_mapped(),
                        IpAddr::V6(a) => a,
                    };
                    *sa6 = sockaddr6(ip, to.port());
                    msg.msg_hdr.msg_name = (sa6 as *mut libc::sockaddr_in6).cast();
                    msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                }
                (false, SocketAddr::V4(a)) => {
                    sa4.sin_family = libc::AF_INET as libc::sa_family_t;
                    sa4.sin_port = a.port().to_be();
                    sa4.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                    msg.msg_hdr.msg_name = (sa4 as *mut libc::sockaddr_in).cast();
                    msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                }
                // `queue_datagram` keeps IPv6 off an IPv4-only socket.
                (false, SocketAddr::V6(_)) => {
                    self.counters.v6_no_socket += 1;
                    continue;
                }
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

    // ------------------------------------------------------------ incoming

    /// Datagrams into `into[0..]` (one `recvmmsg` into free receive
    /// buffers, retried on a transient error), lent with their senders.
    fn lend_datagrams(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        let want = into.len().min(BATCH).min(self.pool.free());
        let mut slots = [0usize; BATCH];
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        let mut names: [libc::sockaddr_in6; BATCH] = [zero_sockaddr6(); BATCH];
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut posted = 0;
        while posted < want {
            let Some(i) = self.pool.alloc() else { break };
            let (Some(area), Some(iov), Some(name), Some(msg), Some(slot)) = (
                self.pool.buf(i).and_then(rx_area),
                iovs.get_mut(posted),
                names.get_mut(posted),
                msgs.get_mut(posted),
                slots.get_mut(posted),
            ) else {
                self.pool.release(i);
                break;
            };
            iov.iov_base = area.as_mut_ptr().cast();
            iov.iov_len = area.len();
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_in6).cast();
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            *slot = i;
            posted += 1;
        }
        let fd = self.sock.get_ref().as_raw_fd();
        let mut got = 0usize;
        for _ in 0..READ_ERRORS {
            if posted == 0 {
                break;
            }
            // SAFETY: the first `posted` mmsghdrs point at iovecs, buffers
            // (taken from the pool, not lent) and address storage that live
            // until the call returns.
            let r = unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), posted as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
            if r >= 0 {
                got = r as usize;
                break;
            }
            if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                break;
            }
            // ICMP errors from earlier sends surface here; not fatal.
            self.counters.rx_errors += 1;
        }
        let mut n = 0;
        for k in 0..posted {
            let Some(&i) = slots.get(k) else { break };
            let (Some(msg), Some(name)) = (msgs.get(k), names.get(k)) else { break };
            let len = msg.msg_len as usize;
            let from = if k < got { source(name) } else { None };
            let fits = msg.msg_hdr.msg_flags & libc::MSG_TRUNC == 0;
            if k >= got || !fits || from.is_none() || n >= into.len() {
                if k < got {
                    self.counters.rx_truncated += 1;
                }
                self.pool.release(i);
                continue;
            }
            let (Some(loan), Some(out)) = (self.pool.lend(i, len), into.get_mut(n)) else {
                self.pool.release(i);
                self.counters.rx_truncated += 1;
                continue;
            };
            if let Some(s) = self.sources.get_mut(i) {
                *s = from;
            }
            self.counters.rx_datagrams += 1;
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += len as u64;
            self.stats.rx_loans_out += 1;
            *out = Some(loan);
            n += 1;
        }
        n
    }

    /// Packets from the TUN device into `into[0..]`, lent without a sender.
    fn lend_tun(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        let Some(tun) = self.tun.as_ref() else { return 0 };
        // Refused: IPv6 chatter the kernel sends into the device, or an
        // IPv4 packet larger than any port carries.
        let ipv4 = |p: &[u8]| p.first().is_some_and(|b| b >> 4 == 4) && p.len() <= MAX_FRAME;
        let r = lend_reads(&mut self.pool, &mut self.stats, into, |area| tun.get_ref().recv(area), ipv4);
        for loan in into.iter().take(r.lent).flatten() {
            if let Some(s) = self.sources.get_mut(loan.slot()) {
                *s = None;
            }
        }
        self.counters.tun_rx += r.lent as u64;
        self.counters.tun_not_ipv4 += r.refused;
        self.counters.tun_read_errors += r.errors;
        r.lent
    }
}

/// The sender of a received datagram: IPv4 as IPv4 (also when a dual-stack
/// socket gives it as `::ffff:a.b.c.d`), IPv6 as IPv6.
fn source(name: &libc::sockaddr_in6) -> Option<SocketAddr> {
    let port = u16::from_be(name.sin6_port);
    if name.sin6_family == libc::AF_INET as libc::sa_family_t {
        // SAFETY: the kernel wrote a sockaddr_in (an IPv4-only socket);
        // it is smaller than the sockaddr_in6 storage it sits in.
        let sa4 = unsafe { &*(name as *const libc::sockaddr_in6).cast::<libc::sockaddr_in>() };
        return Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sa4.sin_addr.s_addr)), port)));
    }
    if name.sin6_family != libc::AF_INET6 as libc::sa_family_t {
        return None;
    }
    let ip6 = Ipv6Addr::from(name.sin6_addr.s6_addr);
    Some(match ip6.to_ipv4_mapped() {
        Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
        None => SocketAddr::V6(SocketAddrV6::new(ip6, port, name.sin6_flowinfo, name.sin6_scope_id)),
    })
}

/// A bare IPv4 packet for the WAN's IP side: the TUN device, or counted
/// away without one.
pub struct WanTx<'a> {
    nic: &'a mut WanNic,
}

impl TxToken for WanTx<'_> {
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let nic = self.nic;
        let len = tx_len(len, &mut nic.stats);
        let packet = &mut nic.tun_buf[..len];
        let r = fill(packet);
        match nic.tun.as_ref() {
            None => nic.counters.not_udp_no_tun += 1,
            Some(t) => match t.get_ref().send(packet) {
                Ok(_) => {
                    nic.counters.tun_tx += 1;
                    nic.stats.tx_frames += 1;
                    nic.stats.tx_bytes += len as u64;
                }
                Err(_) => nic.counters.tun_write_errors += 1,
            },
        }
        r
    }
}

impl NetDevice for WanNic {
    type TxToken<'a> = WanTx<'a>;

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { medium: Medium::Datagram }
    }

    fn rx_source(&self, loan: &RxLoan) -> Option<SocketAddr> {
        self.sources.get(loan.slot()).copied().flatten()
    }

    fn send_datagram(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        let queued = self.queue_datagram(to, payload);
        if queued {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += payload.len() as u64;
        }
        queued
    }

    fn link_up(&mut self) -> bool {
        true
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        // A quarter of the batch is kept for the TUN device, so a flood of
        // datagrams does not starve it (and the other way round).
        let tun_share = if self.tun.is_some() { into.len() / 4 } else { 0 };
        let split = into.len() - tun_share;
        let mut n = self.lend_datagrams(into.get_mut(..split).unwrap_or_default());
        n += self.lend_tun(into.get_mut(n..).unwrap_or_default());
        if n < into.len() {
            n += self.lend_datagrams(into.get_mut(n..).unwrap_or_default());
        }
        self.full = n == into.len();
        n
    }

    fn give_back(&mut self, loan: RxLoan) {
        give_back_to(&mut self.pool, &mut self.stats, loan);
    }

    fn transmit(&mut self) -> Option<WanTx<'_>> {
        Some(WanTx { nic: self })
    }

    fn poll(&mut self) {
        self.flush();
    }

    /// The device's counts, its named drops (`WanCounters::drops`, in the
    /// log's summary) folded into receive errors and transmit drops.
    fn stats(&self) -> DeviceStats {
        DeviceStats { rx_errors: self.counters.lost_in(), tx_ring_full: self.counters.lost_out(), ..self.stats }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routerd_netdev::RX_HEADROOM;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 9];

    /// Lends until `want` datagrams came (bounded: 5 s).
    fn lend_all(nic: &mut WanNic, want: usize) -> Vec<(Option<SocketAddr>, Vec<u8>, usize)> {
        let mut got = Vec::new();
        let until = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < until {
            let mut slots: [Option<RxLoan>; 8] = Default::default();
            let n = nic.lend(&mut slots);
            for loan in slots.iter_mut().take(n).filter_map(Option::take) {
                got.push((nic.rx_source(&loan), loan.frame().to_vec(), loan.head()));
                nic.give_back(loan);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }

    fn round_trip(bind: IpAddr, peer_bind: &str) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        let mut nic = WanNic::new(Some(bind), 0, MAC, None).unwrap();
        assert_eq!(nic.capabilities().medium, Medium::Datagram);
        let local = nic.local_addr().unwrap();
        let peer = UdpSocket::bind(peer_bind).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let peer_addr = peer.local_addr().unwrap();
        // In: each payload lent where recvmmsg put it, with its real sender.
        for i in 0..20u8 {
            peer.send_to(&[i; 100], local).unwrap();
        }
        let got = lend_all(&mut nic, 20);
        assert_eq!(got.len(), 20, "every datagram lent");
        for (i, (from, payload, head)) in got.iter().enumerate() {
            assert_eq!(*from, Some(peer_addr), "the sender as it is, IPv6 included");
            assert_eq!(payload, &vec![i as u8; 100]);
            assert_eq!(*head, RX_HEADROOM, "no headers made up in front");
        }
        assert_eq!(nic.stats().rx_loans_out, 0);
        assert_eq!(nic.counters.rx_datagrams, 20);
        // Out: queued, sent by poll (one sendmmsg).
        assert!(nic.send_datagram(peer_addr, b"sealed"));
        assert!(nic.send_datagram(peer_addr, b"again"));
        nic.poll();
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.port()), (&b"sealed"[..], local.port()));
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"again");
        assert_eq!(nic.counters.tx_datagrams, 2);
        // A bare IPv4 packet for the IP side: no TUN, counted away.
        let tx = nic.transmit().unwrap();
        tx.send(20, |p| p.fill(0x45));
        assert_eq!(nic.counters.not_udp_no_tun, 1);
        // Status sees it as the port's transmit loss; nothing lost coming in.
        let st = nic.stats();
        assert_eq!((st.tx_ring_full, st.rx_errors, st.tx_frames), (1, 0, 2));
    }

    #[test]
    fn datagrams_cross_an_ipv4_socket_as_payload_and_sender() {
        round_trip(IpAddr::V4(Ipv4Addr::LOCALHOST), "127.0.0.1:0");
    }

    #[test]
    fn datagrams_cross_a_dual_stack_socket_with_ipv6_senders() {
        let Ok(probe) = UdpSocket::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        drop(probe);
        round_trip(IpAddr::V6(Ipv6Addr::UNSPECIFIED), "[::1]:0");
    }

    #[test]
    fn an_ipv4_only_socket_refuses_an_ipv6_endpoint_counted() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        let mut nic = WanNic::new(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), 0, MAC, None).unwrap();
        assert!(!nic.dual_stack());
        assert!(!nic.send_datagram("[2001:db8::1]:51820".parse().unwrap(), b"x"));
        assert_eq!(nic.counters.v6_no_socket, 1);
        assert_eq!(nic.stats().tx_ring_full, 1);
        // `::ffff:a.b.c.d` is IPv4, which it carries.
        assert!(nic.send_datagram("[::ffff:127.0.0.1]:9".parse().unwrap(), b"x"));
    }
}

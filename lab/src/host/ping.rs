//! Ping from a simulated host.
//!
//! Echo requests go out through a raw ICMP socket rather than smoltcp's ICMP
//! socket so the source can be any of the host's addresses: the cloud-side
//! host must ping from the claimed 10.20.0.50, or the reply would not take
//! the claim's path back. One request at a time; the next leaves when the
//! reply arrives or the per-request timeout passes.

use super::{SimHost, Stack};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::raw;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpProtocol, IpVersion, Ipv4Packet, Ipv4Repr};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Bytes of data in each echo request (as `ping` sends by default).
const PAYLOAD: usize = 56;
/// IPv4 and ICMP echo headers: a request's IP length is its data plus this.
const HEADERS: usize = 20 + 8;
/// The IP length of a default request (84 bytes, as `ping` sends).
const DEFAULT_PING_SIZE: usize = PAYLOAD + HEADERS;
/// The largest IP length [`SimHost::ping_sized`] sends (jumbo frames).
const MAX_PING_SIZE: usize = 9000;

/// What a ping run saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingReport {
    /// The source used; `None` when the host had none to offer.
    pub src: Option<Ipv4Addr>,
    pub dst: Ipv4Addr,
    /// IP length of each request (84 unless [`SimHost::ping_sized`]).
    pub size: usize,
    pub sent: u32,
    /// Replies that came back in time with the data intact.
    pub received: u32,
    /// Round-trip times of the received replies, in order.
    pub rtts: Vec<Duration>,
    /// Replies that came after their request's timeout.
    pub late: u32,
    /// Replies whose data differed from the request's.
    pub corrupted: u32,
}

impl PingReport {
    /// Lost requests as a percentage of those sent.
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        f64::from(self.sent - self.received.min(self.sent)) * 100.0 / f64::from(self.sent)
    }

    /// Every request was answered.
    pub fn all_received(&self) -> bool {
        self.sent > 0 && self.received == self.sent
    }

    pub fn rtt_min(&self) -> Option<Duration> {
        self.rtts.iter().min().copied()
    }

    pub fn rtt_max(&self) -> Option<Duration> {
        self.rtts.iter().max().copied()
    }

    pub fn rtt_avg(&self) -> Option<Duration> {
        let n = u32::try_from(self.rtts.len()).ok().filter(|n| *n > 0)?;
        Some(self.rtts.iter().sum::<Duration>() / n)
    }
}

impl fmt::Display for PingReport {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ping {}", self.dst)?;
        if let Some(src) = self.src {
            write!(f, " from {src}")?;
        }
        if self.size != DEFAULT_PING_SIZE {
            write!(f, " ({} B packets)", self.size)?;
        }
        write!(f, ": {} sent, {} received ({:.0}% loss)", self.sent, self.received, self.loss_percent())?;
        if let (Some(min), Some(avg), Some(max)) = (self.rtt_min(), self.rtt_avg(), self.rtt_max()) {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            write!(f, ", rtt min/avg/max {:.1}/{:.1}/{:.1} ms", ms(min), ms(avg), ms(max))?;
        }
        if self.late > 0 {
            write!(f, ", {} late", self.late)?;
        }
        if self.corrupted > 0 {
            write!(f, ", {} corrupted", self.corrupted)?;
        }
        Ok(())
    }
}

impl SimHost {
    /// Sends `count` echo requests to `dst` from the host's address for it
    /// (one in `dst`'s subnet, else its primary), each waiting up to
    /// `timeout` for its reply. Takes at most `count × timeout`.
    pub fn ping(&self, dst: Ipv4Addr, count: u32, timeout: Duration) -> PingReport {
        self.ping_impl(None, dst, DEFAULT_PING_SIZE, count, timeout)
    }

    /// Like [`SimHost::ping`], from `src` (any address, normally one the host holds).
    pub fn ping_from(&self, src: Ipv4Addr, dst: Ipv4Addr, count: u32, timeout: Duration) -> PingReport {
        self.ping_impl(Some(src), dst, DEFAULT_PING_SIZE, count, timeout)
    }

    /// Like [`SimHost::ping`] with requests of `size` bytes of IP length
    /// (28 to 9000; `ping -s` counts 28 fewer), sent with DF
    /// set: shows what a path's MTU lets through unfragmented. A size above
    /// the host's own MTU is sent as it is, never fragmented.
    pub fn ping_sized(&self, dst: Ipv4Addr, size: usize, count: u32, timeout: Duration) -> PingReport {
        self.ping_impl(None, dst, size.clamp(HEADERS, MAX_PING_SIZE), count, timeout)
    }

    fn ping_impl(&self, src: Option<Ipv4Addr>, dst: Ipv4Addr, size: usize, count: u32, timeout: Duration) -> PingReport {
        let mut report = PingReport { src: None, dst, size, sent: 0, received: 0, rtts: Vec::new(), late: 0, corrupted: 0 };
        let mut s = self.shared.lock();
        let Some(src) = src.or_else(|| s.source_for(dst)) else {
            return report;
        };
        report.src = Some(src);
        let ident = s.next_ident;
        s.next_ident = s.next_ident.wrapping_add(1);
        let socket = raw::Socket::new(
            Some(IpVersion::Ipv4),
            Some(IpProtocol::Icmp),
            raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 64], vec![0; 64 * size.max(1600)]),
            raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 4], vec![0; 4 * size.max(128)]),
        );
        let handle = s.sockets.add(socket);
        let data: Vec<u8> = (0..size - HEADERS).map(|i| i as u8).collect();
        for seq in 0..count {
            let seq_no = seq as u16;
            let request = echo_request(src, dst, ident, seq_no, &data);
            if s.sockets.get_mut::<raw::Socket>(handle).send_slice(&request).is_err() {
                // The tx buffer is still full: the stack has not sent the
                // previous one (no ARP answer yet). Count it as sent and lost.
                report.sent += 1;
                continue;
            }
            report.sent += 1;
            s.echo_requests += 1;
            let sent_at = Instant::now();
            let deadline = sent_at + timeout;
            drop(s);
            self.wake();
            s = self.shared.lock();
            loop {
                let (got, late, corrupted) = drain_replies(&mut s, handle, dst, ident, seq_no, &data);
                report.late += late;
                report.corrupted += corrupted;
                if got {
                    report.received += 1;
                    s.echo_replies += 1;
                    report.rtts.push(sent_at.elapsed());
                    break;
                }
                let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                    break;
                };
                s = self.shared.wait(s, left);
            }
        }
        s.sockets.remove(handle);
        report
    }
}

/// Reads every packet queued on the raw socket; answers whether the reply
/// to `seq` was among them, and how many earlier (late) and damaged replies.
fn drain_replies(
    s: &mut Stack,
    handle: smoltcp::iface::SocketHandle,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> (bool, u32, u32) {
    let (mut got, mut late, mut corrupted) = (false, 0, 0);
    let socket = s.sockets.get_mut::<raw::Socket>(handle);
    // Bounded by the socket's 64 packet slots.
    while let Ok(packet) = socket.recv() {
        let Some((ident_r, seq_r, data_r_ok)) = parse_reply(packet, dst, data) else {
            continue;
        };
        if ident_r != ident {
            continue;
        }
        if !data_r_ok {
            corrupted += 1;
        } else if seq_r == seq {
            got = true;
        } else {
            late += 1;
        }
    }
    (got, late, corrupted)
}

/// (ident, seq, data intact) of an echo reply from `from`.
fn parse_reply(packet: &[u8], from: Ipv4Addr, data: &[u8]) -> Option<(u16, u16, bool)> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.src_addr() != from || ip.next_header() != IpProtocol::Icmp {
        return None;
    }
    let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
    match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).ok()? {
        Icmpv4Repr::EchoReply { ident, seq_no, data: d } => Some((ident, seq_no, d == data)),
        _ => None,
    }
}

/// A whole IPv4 packet: echo request from `src` to `dst`.
fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest { ident, seq_no, data };
    let ip = Ipv4Repr { src_addr: src, dst_addr: dst, next_header: IpProtocol::Icmp, payload_len: icmp.buffer_len(), hop_limit: 64 };
    let mut buf = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut packet, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(packet.payload_mut()), &caps);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_parses_back() {
        let src = Ipv4Addr::new(10, 20, 0, 50);
        let dst = Ipv4Addr::new(10, 20, 0, 10);
        let p = echo_request(src, dst, 7, 3, b"abc");
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (src, dst));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap(),
            Icmpv4Repr::EchoRequest { ident: 7, seq_no: 3, data: b"abc" }
        );
        // A request is not a reply.
        assert_eq!(parse_reply(&p, src, b"abc"), None);
        assert_eq!(parse_reply(&[0xa5; 40], src, b"abc"), None);
    }

    #[test]
    fn report_sums_up() {
        let mut r = PingReport {
            src: Some(Ipv4Addr::new(10, 20, 0, 10)),
            dst: Ipv4Addr::new(10, 20, 0, 50),
            size: DEFAULT_PING_SIZE,
            sent: 4,
            received: 3,
            rtts: vec![Duration::from_millis(2), Duration::from_millis(4), Duration::from_millis(6)],
            late: 1,
            corrupted: 0,
        };
        assert_eq!(r.loss_percent(), 25.0);
        assert_eq!(r.rtt_avg(), Some(Duration::from_millis(4)));
        assert_eq!(r.to_string(), "ping 10.20.0.50 from 10.20.0.10: 4 sent, 3 received (25% loss), rtt min/avg/max 2.0/4.0/6.0 ms, 1 late");
        r.size = 1370;
        assert!(r.to_string().starts_with("ping 10.20.0.50 from 10.20.0.10 (1370 B packets): 4 sent"), "{r}");
    }
}

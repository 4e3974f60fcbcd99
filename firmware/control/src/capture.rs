//! Packet capture on the box: `routerctl capture` (issue 20).
//!
//! The platform's forwarding turn shows every frame to a [`Capture`] twice
//! at most: when it is received (copied at receive time, before the
//! dataplane may rewrite it in place: NAT, TTL, WireGuard opening in the
//! same buffer) and when it is sent (every frame the dataplane, the
//! services and the timers hand to the NICs goes through one
//! [`Transmit::send`], which [`Tap`] wraps). With no capture running that
//! costs one branch per frame ([`Capture::frame`] is `#[inline]`).
//!
//! A capture that runs keeps:
//!
//! - a **filter** routerctl parsed (`message::CaptureFilter`: clauses of
//!   `host`, `port`, `icmp|tcp|udp|arp`, `inbound|outbound`, each maybe
//!   negated, joined by `and`, clauses by `or`), evaluated here on the
//!   frame's headers only, and optionally one port;
//! - a **ring** of records (a 16-byte header — timestamp, port, direction,
//!   length on the wire, bytes kept — then the bytes up to the snap length)
//!   in one allocation made at the start and freed at the end: 128 KiB on
//!   the image (its heap is 4 MiB), 1 MiB on routerd-host. A frame that
//!   does not fit is skipped and counted (`skipped_full`: routerctl reads
//!   too slowly);
//! - a **rate cap** in bytes per second over what goes into the ring
//!   (header included), as a token bucket holding at most one second's
//!   worth: the image's default is what a 115200-baud serial line carries
//!   ([`SERIAL_RATE`]), because every byte copied has to cross that line,
//!   and the box writes its answers between forwarding turns (a long
//!   answer delays forwarding for its duration). routerd-host, read over a
//!   unix socket, has no cap. A frame over the cap is skipped and counted
//!   (`skipped_rate`);
//! - counters since the start; and the time of the last read: a capture
//!   nobody read for [`IDLE_STOP_MS`] stops and frees its ring by itself
//!   (a late read learns why), so a routerctl that died does not leave it on.
//!
//! Timestamps: the turn's clock (milliseconds) plus the offset to the wall
//! clock known at the start, in microseconds; frames of one turn share a
//! timestamp. Ports are the running configuration's (dataplane port index =
//! configuration order); an apply re-resolves a capture limited to one port
//! by name ([`Capture::rebind`]) and stops it when that port is gone.

use alloc::boxed::Box;
use alloc::vec::Vec as AllocVec;
use config_schema::Name;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use heapless::Vec;
use routerd_dataplane::{Instant, Local, LocalFrom, PortId, Transmit};
use routerd_provision::message::{
    self as msg, text, CaptureBatch, CaptureFilter, CaptureProto, CaptureRequest, CaptureTest, CapturedFrame, Failure, FailureKind,
    CAPTURE_BATCH_BYTES, CAPTURE_SNAP_MAX,
};

/// Ethernet + IPv6 + UDP: the most a datagram is shown with.
const DATAGRAM_HEADERS: usize = 14 + 40 + 8;

/// The image's default rate cap, bytes per second: about what a 115200-baud
/// serial line carries after framing (11.5 KB/s raw).
pub const SERIAL_RATE: u32 = 8 * 1024;
/// The ring on the image.
pub const RING_IMAGE: usize = 128 * 1024;
/// The ring on routerd-host.
pub const RING_HOST: usize = 1024 * 1024;
/// A capture not read for this long stops by itself.
pub const IDLE_STOP_MS: u64 = 30_000;
/// `rate` meaning "no cap".
pub const NO_CAP: u32 = u32::MAX;
/// Bytes of a record's header in the ring.
const HEADER: usize = 16;

/// What a platform gives a capture when the request does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Bytes per second ([`NO_CAP`]: none).
    pub rate: u32,
    /// The ring's size in bytes.
    pub ring: usize,
}

impl Defaults {
    /// The image: a serial line's rate, a 128 KiB ring.
    pub const IMAGE: Defaults = Defaults { rate: SERIAL_RATE, ring: RING_IMAGE };
    /// routerd-host: no cap, a 1 MiB ring.
    pub const HOST: Defaults = Defaults { rate: NO_CAP, ring: RING_HOST };
}

/// The box's packet capture (at most one at a time).
pub struct Capture {
    /// A capture copies frames now (the one branch per frame).
    on: bool,
    /// The turn's time in µs since the epoch (or boot).
    now_us: u64,
    run: Option<Box<Run>>,
    /// The box's end of a datagram port's datagrams (the WAN address and
    /// the listen port), for the headers a datagram is shown with.
    underlay: SocketAddr,
    /// The datagram port whose other frames are bare IPv4 (routerd-host's
    /// WAN: what its TUN carries), shown behind an Ethernet header.
    bare_ip: Option<PortId>,
}

/// One capture, from its start until its ring is drained or dropped.
struct Run {
    filter: CaptureFilter,
    /// Only this dataplane port (and its name, for an apply).
    port: Option<(u8, Name)>,
    snaplen: usize,
    rate: u32,
    /// Bytes the rate cap still allows now.
    tokens: u64,
    refilled_ms: u64,
    read_ms: u64,
    /// Added to the turn's clock for timestamps.
    wall_offset_ms: u64,
    ring: Ring,
    stopped: msg::Text<80>,
    captured: u64,
    captured_bytes: u64,
    skipped_rate: u64,
    skipped_full: u64,
    ports: Vec<Name, { msg::MAX_PORT_STATUS }>,
}

/// Records one after the other in a circular byte buffer.
struct Ring {
    buf: AllocVec<u8>,
    /// Where the oldest record starts.
    head: usize,
    /// Bytes in use.
    used: usize,
    records: u32,
}

impl Ring {
    fn new(size: usize) -> Option<Ring> {
        let mut buf = AllocVec::new();
        buf.try_reserve_exact(size).ok()?;
        buf.resize(size, 0);
        Some(Ring { buf, head: 0, used: 0, records: 0 })
    }

    /// No memory: what a capture nobody reads keeps.
    fn empty() -> Ring {
        Ring { buf: AllocVec::new(), head: 0, used: 0, records: 0 }
    }

    fn free(&self) -> usize {
        self.buf.len().saturating_sub(self.used)
    }

    /// Copies `bytes` in at `pos` (mod the size), wrapping at the end.
    fn put(&mut self, pos: usize, bytes: &[u8]) {
        let size = self.buf.len();
        if size == 0 {
            return;
        }
        let pos = pos % size;
        let first = bytes.len().min(size - pos);
        let (a, b) = bytes.split_at(first);
        if let Some(dst) = self.buf.get_mut(pos..pos + a.len()) {
            dst.copy_from_slice(a);
        }
        if let Some(dst) = self.buf.get_mut(..b.len()) {
            dst.copy_from_slice(b);
        }
    }

    /// Copies `out.len()` bytes from `pos` (mod the size).
    fn get(&self, pos: usize, out: &mut [u8]) {
        let size = self.buf.len();
        if size == 0 {
            return;
        }
        let pos = pos % size;
        let first = out.len().min(size - pos);
        let (a, b) = out.split_at_mut(first);
        if let Some(src) = self.buf.get(pos..pos + a.len()) {
            a.copy_from_slice(src);
        }
        if let Some(src) = self.buf.get(..b.len()) {
            b.copy_from_slice(src);
        }
    }

    /// Appends a record; false when it does not fit.
    fn push(&mut self, h: &CapturedFrame, data: &[u8]) -> bool {
        let need = HEADER + data.len();
        if need > self.free() {
            return false;
        }
        let mut hdr = [0u8; HEADER];
        hdr[..8].copy_from_slice(&h.ts_us.to_le_bytes());
        hdr[8..10].copy_from_slice(&h.len.to_le_bytes());
        hdr[10..12].copy_from_slice(&h.caplen.to_le_bytes());
        hdr[12] = h.port;
        hdr[13] = u8::from(h.tx);
        let at = self.head + self.used;
        self.put(at, &hdr);
        self.put(at + HEADER, data);
        self.used += need;
        self.records = self.records.saturating_add(1);
        true
    }

    /// The oldest record's header, if any.
    fn peek(&self) -> Option<CapturedFrame> {
        if self.used < HEADER {
            return None;
        }
        let mut hdr = [0u8; HEADER];
        self.get(self.head, &mut hdr);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&hdr[..8]);
        Some(CapturedFrame {
            ts_us: u64::from_le_bytes(ts),
            len: u16::from_le_bytes([hdr[8], hdr[9]]),
            caplen: u16::from_le_bytes([hdr[10], hdr[11]]),
            port: hdr[12],
            tx: hdr[13] != 0,
        })
    }

    /// Removes the oldest record, copying its bytes to `out` (exactly its
    /// `caplen` long).
    fn pop_into(&mut self, h: &CapturedFrame, out: &mut [u8]) {
        self.get(self.head + HEADER, out);
        let size = self.buf.len().max(1);
        let n = HEADER + usize::from(h.caplen);
        self.head = (self.head + n) % size;
        self.used = self.used.saturating_sub(n);
        self.records = self.records.saturating_sub(1);
        if self.used == 0 {
            self.head = 0;
        }
    }
}

impl Default for Capture {
    fn default() -> Capture {
        Capture::new()
    }
}

impl Capture {
    /// No capture.
    pub const fn new() -> Capture {
        Capture { on: false, now_us: 0, run: None, underlay: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)), bare_ip: None }
    }

    /// A capture copies frames now.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Once per turn, before any frame: the time for timestamps and the
    /// rate cap, and the stop of a capture nobody reads.
    pub fn tick(&mut self, now: Instant) {
        let Some(r) = self.run.as_deref_mut() else { return };
        let ms = now.millis();
        self.now_us = ms.saturating_add(r.wall_offset_ms).saturating_mul(1000);
        if ms.saturating_sub(r.read_ms) > IDLE_STOP_MS {
            if self.on || r.ring.records > 0 {
                // Nobody reads (routerctl died, the line was pulled): stop
                // and give the ring back; a late read still learns why.
                r.stopped = text("not read for 30 s");
                r.ring = Ring::empty();
                self.on = false;
            }
            return;
        }
        if r.rate != NO_CAP {
            let elapsed = ms.saturating_sub(r.refilled_ms);
            if elapsed > 0 {
                let add = u64::from(r.rate).saturating_mul(elapsed) / 1000;
                r.tokens = r.tokens.saturating_add(add).min(bucket(r.rate));
                r.refilled_ms = ms;
            }
        }
    }

    /// A frame received (`tx` false) or sent on `port`: copied when a
    /// capture runs and it matches. One branch when none runs.
    #[inline]
    pub fn frame(&mut self, port: PortId, tx: bool, frame: &[u8]) {
        if self.on {
            if self.bare_ip == Some(port) {
                self.record_bare_ip(port, tx, frame);
            } else {
                self.record(port, tx, frame);
            }
        }
    }

    /// The box's end of the datagrams [`Capture::datagram`] shows (the WAN
    /// address and the tunnel's listen port of the running configuration),
    /// and the datagram port, if any, whose frames are bare IPv4.
    pub fn set_underlay(&mut self, local: SocketAddr, bare_ip: Option<PortId>) {
        self.underlay = local;
        self.bare_ip = bare_ip;
    }

    /// A bare IPv4 packet of a datagram port, behind an Ethernet header
    /// with zero MACs (LINKTYPE_ETHERNET is the file's one link type).
    fn record_bare_ip(&mut self, port: PortId, tx: bool, packet: &[u8]) {
        let mut f = [0u8; 14 + routerd_dataplane::BUF_SIZE];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let packet = packet.get(..routerd_dataplane::BUF_SIZE).unwrap_or(packet);
        let end = 14 + packet.len();
        if let Some(p) = f.get_mut(14..end) {
            p.copy_from_slice(packet);
        }
        if let Some(frame) = f.get(..end) {
            self.record(port, tx, frame);
        }
    }

    /// A UDP payload received from `remote` (`tx` false) or sent to it on a
    /// datagram port (routerd-host's WAN socket, where the kernel owns the
    /// headers): shown as the frame it was on the wire — Ethernet (zero
    /// MACs), IPv4 or IPv6, UDP between the box's end ([`Capture::set_underlay`])
    /// and `remote` — so filters and pcap readers see what they see on an
    /// Ethernet WAN. One branch when no capture runs.
    #[inline]
    pub fn datagram(&mut self, port: PortId, tx: bool, remote: SocketAddr, payload: &[u8]) {
        if self.on {
            self.record_datagram(port, tx, remote, payload);
        }
    }

    fn record_datagram(&mut self, port: PortId, tx: bool, remote: SocketAddr, payload: &[u8]) {
        let mut f = [0u8; DATAGRAM_HEADERS + routerd_dataplane::BUF_SIZE];
        let local = self.underlay;
        let (src, dst) = if tx { (local, remote) } else { (remote, local) };
        let payload = payload.get(..routerd_dataplane::BUF_SIZE).unwrap_or(payload);
        let udp_len = 8 + payload.len();
        let ip_len = match (src, dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                let h = &mut f[14..34];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
                h[8] = 64;
                h[9] = 17;
                h[12..16].copy_from_slice(&s.ip().octets());
                h[16..20].copy_from_slice(&d.ip().octets());
                let c = routerd_dataplane::checksum::internet(h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                20
            }
            _ => {
                // IPv6, an IPv4 end written as `::ffff:a.b.c.d`.
                let v6 = |a: SocketAddr| match a {
                    SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                    SocketAddr::V6(a) => *a.ip(),
                };
                f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
                let h = &mut f[14..54];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
                h[6] = 17;
                h[7] = 64;
                h[8..24].copy_from_slice(&v6(src).octets());
                h[24..40].copy_from_slice(&v6(dst).octets());
                40
            }
        };
        let u = 14 + ip_len;
        f[u..u + 2].copy_from_slice(&src.port().to_be_bytes());
        f[u + 2..u + 4].copy_from_slice(&dst.port().to_be_bytes());
        f[u + 4..u + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        let end = u + udp_len;
        if let Some(p) = f.get_mut(u + 8..end) {
            p.copy_from_slice(payload);
        }
        if let Some(frame) = f.get(..end) {
            self.record(port, tx, frame);
        }
    }

    fn record(&mut self, port: PortId, tx: bool, frame: &[u8]) {
        let now_us = self.now_us;
        let Some(r) = self.run.as_deref_mut() else { return };
        if r.port.as_ref().is_some_and(|(p, _)| usize::from(*p) != port.index()) || !matches(&r.filter, frame, tx) {
            return;
        }
        let caplen = frame.len().min(r.snaplen).min(usize::from(u16::MAX));
        let cost = (HEADER + caplen) as u64;
        if r.rate != NO_CAP {
            if r.tokens < cost {
                r.skipped_rate = r.skipped_rate.saturating_add(1);
                return;
            }
            r.tokens -= cost;
        }
        let Some(data) = frame.get(..caplen) else { return };
        let h = CapturedFrame {
            ts_us: now_us,
            port: u8::try_from(port.index()).unwrap_or(u8::MAX),
            tx,
            len: u16::try_from(frame.len()).unwrap_or(u16::MAX),
            caplen: caplen as u16,
        };
        if r.ring.push(&h, data) {
            r.captured = r.captured.saturating_add(1);
            r.captured_bytes = r.captured_bytes.saturating_add(frame.len() as u64);
        } else {
            r.skipped_full = r.skipped_full.saturating_add(1);
        }
    }

    /// Starts a capture (replacing one that runs) on a box whose running
    /// configuration has `ports`. `wall_offset_ms` turns the turn's clock
    /// into wall-clock time. An unknown port is refused, naming the ports.
    pub fn start(
        &mut self,
        now: Instant,
        req: &CaptureRequest,
        ports: &[Name],
        defaults: Defaults,
        wall_offset_ms: u64,
    ) -> Result<Box<CaptureBatch>, Box<Failure>> {
        let port = match &req.port {
            None => None,
            Some(name) => match ports.iter().position(|p| p == name) {
                Some(i) => Some((u8::try_from(i).unwrap_or(u8::MAX), name.clone())),
                None => return Err(unknown_port(name, ports)),
            },
        };
        if req.snaplen == 0 {
            return Err(Failure::refused(format_args!("capture: snaplen 0 keeps no byte of a frame; give 1 or more")));
        }
        let rate = req.rate.unwrap_or(defaults.rate);
        if rate == 0 {
            return Err(Failure::refused(format_args!("capture: a rate of 0 bytes/s copies nothing; give 1 or more")));
        }
        // The old capture's memory goes first: two rings need not fit at once.
        self.run = None;
        self.on = false;
        let Some(ring) = Ring::new(defaults.ring) else {
            return Err(Failure::refused(format_args!("capture: the box has no {} KiB free for the capture ring", defaults.ring / 1024)));
        };
        let ms = now.millis();
        self.now_us = ms.saturating_add(wall_offset_ms).saturating_mul(1000);
        self.run = Some(Box::new(Run {
            filter: req.filter.clone(),
            port,
            snaplen: usize::try_from(req.snaplen.min(CAPTURE_SNAP_MAX)).unwrap_or(CAPTURE_SNAP_MAX as usize),
            rate,
            tokens: bucket(rate),
            refilled_ms: ms,
            read_ms: ms,
            wall_offset_ms,
            ring,
            stopped: msg::Text::new(),
            captured: 0,
            captured_bytes: 0,
            skipped_rate: 0,
            skipped_full: 0,
            ports: ports.iter().take(msg::MAX_PORT_STATUS).cloned().collect(),
        }));
        self.on = true;
        Ok(self.read(now, 0))
    }

    /// The frames held, oldest first (at most `max_bytes` of frame data,
    /// capped at a batch), and the counters. Keeps the capture alive. A
    /// stopped capture whose last frames this hands over is gone after.
    pub fn read(&mut self, now: Instant, max_bytes: u32) -> Box<CaptureBatch> {
        let mut b = Box::<CaptureBatch>::default();
        let Some(r) = self.run.as_deref_mut() else {
            b.stopped = text("no capture runs (routerctl capture starts one)");
            return b;
        };
        r.read_ms = now.millis();
        let budget = usize::try_from(max_bytes).unwrap_or(usize::MAX).min(CAPTURE_BATCH_BYTES);
        while let Some(h) = r.ring.peek() {
            let n = usize::from(h.caplen);
            if b.frames.is_full() || b.data.len() + n > budget {
                break;
            }
            let start = b.data.len();
            if b.data.resize(start + n, 0).is_err() {
                break;
            }
            if let Some(out) = b.data.get_mut(start..) {
                r.ring.pop_into(&h, out);
            }
            let _ = b.frames.push(h);
        }
        b.running = self.on;
        b.stopped = r.stopped.clone();
        b.waiting = r.ring.records;
        b.captured = r.captured;
        b.captured_bytes = r.captured_bytes;
        b.skipped_rate = r.skipped_rate;
        b.skipped_full = r.skipped_full;
        b.rate = r.rate;
        b.ring_bytes = u32::try_from(r.ring.buf.len()).unwrap_or(u32::MAX);
        b.ports = r.ports.clone();
        if !self.on && r.ring.records == 0 {
            // Stopped and drained: the memory goes back.
            self.run = None;
        }
        b
    }

    /// Stops copying; the answer carries frames still held (as [`Capture::read`]).
    pub fn stop(&mut self, now: Instant, max_bytes: u32) -> Box<CaptureBatch> {
        if let (true, Some(r)) = (self.on, self.run.as_deref_mut()) {
            r.stopped = text("stopped by routerctl");
        }
        self.on = false;
        self.read(now, max_bytes)
    }

    /// After an apply: a capture of one port follows that port by name to
    /// its new index, and stops when the port is gone. The port list the
    /// batches name is the new one.
    pub fn rebind(&mut self, ports: &[Name]) {
        let Some(r) = self.run.as_deref_mut() else { return };
        r.ports = ports.iter().take(msg::MAX_PORT_STATUS).cloned().collect();
        let Some((index, name)) = r.port.as_mut() else { return };
        match ports.iter().position(|p| p == name) {
            Some(i) => *index = u8::try_from(i).unwrap_or(u8::MAX),
            None => {
                if self.on {
                    r.stopped = msg::text_fmt(format_args!("port {name} left the configuration"));
                }
                self.on = false;
            }
        }
    }
}

/// The token bucket's depth: one second's worth, and never less than one
/// whole frame with its header.
fn bucket(rate: u32) -> u64 {
    u64::from(rate).max(HEADER as u64 + u64::from(CAPTURE_SNAP_MAX))
}

fn unknown_port(name: &Name, ports: &[Name]) -> Box<Failure> {
    let mut list: msg::Text<200> = msg::Text::new();
    for (i, p) in ports.iter().enumerate() {
        let _ = list.push_str(if i == 0 { "" } else { ", " });
        let _ = list.push_str(p.as_str());
    }
    Box::new(Failure {
        kind: FailureKind::NotFound,
        message: msg::text_fmt(format_args!(
            "capture: the box has no port {name} (its ports: {})",
            if list.is_empty() { "none" } else { list.as_str() }
        )),
        problems: Vec::new(),
    })
}

/// What a filter looks at in a frame.
#[derive(Default)]
struct Facts {
    arp: bool,
    /// IPv4 source and destination (ARP: sender and target protocol address).
    addrs: Option<([u8; 4], [u8; 4])>,
    /// The IPv4 protocol number.
    proto: Option<u8>,
    /// TCP/UDP ports of a first fragment.
    ports: Option<(u16, u16)>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn addr(b: &[u8], at: usize) -> Option<[u8; 4]> {
    b.get(at..at + 4)?.try_into().ok()
}

/// The headers of an Ethernet frame (one 802.1Q tag skipped); what cannot
/// be read is absent, never a panic.
fn facts(frame: &[u8]) -> Facts {
    let mut f = Facts::default();
    let Some(mut ethertype) = be16(frame, 12) else { return f };
    let mut l3 = 14;
    if ethertype == 0x8100 {
        let Some(t) = be16(frame, 16) else { return f };
        ethertype = t;
        l3 = 18;
    }
    let Some(p) = frame.get(l3..) else { return f };
    match ethertype {
        0x0806 => {
            f.arp = true;
            // sender protocol address after htype, ptype, hlen, plen, op and the sender MAC.
            let (Some(&hlen), Some(&plen)) = (p.get(4), p.get(5)) else { return f };
            if plen == 4 {
                let hlen = usize::from(hlen);
                if let (Some(s), Some(t)) = (addr(p, 8 + hlen), addr(p, 8 + 2 * hlen + 4)) {
                    f.addrs = Some((s, t));
                }
            }
        }
        0x0800 => {
            let Some(&vihl) = p.first() else { return f };
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return f;
            }
            let (Some(&proto), Some(s), Some(d), Some(frag)) = (p.get(9), addr(p, 12), addr(p, 16), be16(p, 6)) else { return f };
            f.addrs = Some((s, d));
            f.proto = Some(proto);
            if matches!(proto, 6 | 17) && frag & 0x1fff == 0 {
                if let (Some(sp), Some(dp)) = (be16(p, ihl), be16(p, ihl + 2)) {
                    f.ports = Some((sp, dp));
                }
            }
        }
        // IPv6 (routerd-host's WAN to an IPv6 peer): the protocol and ports
        // when no extension header comes first. Host tests name IPv4
        // addresses: they match an IPv4 end written as ::ffff:a.b.c.d.
        0x86dd => {
            let (Some(&vtc), Some(&next)) = (p.first(), p.get(6)) else { return f };
            if vtc >> 4 != 6 {
                return f;
            }
            let v4 = |at: usize| {
                let a = p.get(at..at + 16)?;
                (a[..10].iter().all(|&b| b == 0) && a[10..12] == [0xff, 0xff]).then(|| [a[12], a[13], a[14], a[15]])
            };
            if let (Some(s), Some(d)) = (v4(8), v4(24)) {
                f.addrs = Some((s, d));
            } else if let Some(a) = v4(8).or(v4(24)) {
                f.addrs = Some((a, a));
            }
            f.proto = Some(next);
            if matches!(next, 6 | 17) {
                if let (Some(sp), Some(dp)) = (be16(p, 40), be16(p, 42)) {
                    f.ports = Some((sp, dp));
                }
            }
        }
        _ => {}
    }
    f
}

/// Whether `frame` (sent by the box when `tx`) passes `filter`.
pub fn matches(filter: &CaptureFilter, frame: &[u8], tx: bool) -> bool {
    if filter.any_of.is_empty() {
        return true;
    }
    let f = facts(frame);
    filter.any_of.iter().any(|clause| {
        clause.iter().all(|t| {
            let hit = match t.test {
                CaptureTest::Host(a) => f.addrs.is_some_and(|(s, d)| s == a.octets() || d == a.octets()),
                CaptureTest::Port(port) => f.ports.is_some_and(|(s, d)| s == port || d == port),
                CaptureTest::Proto(CaptureProto::Arp) => f.arp,
                CaptureTest::Proto(CaptureProto::Icmp) => matches!(f.proto, Some(1 | 58)),
                CaptureTest::Proto(CaptureProto::Tcp) => f.proto == Some(6),
                CaptureTest::Proto(CaptureProto::Udp) => f.proto == Some(17),
                CaptureTest::Inbound => !tx,
                CaptureTest::Outbound => tx,
            };
            hit != t.not
        })
    })
}

/// A transmitter that shows every frame sent to the capture first: wrap
/// the platform's NIC transmitter in it (inside [`crate::WithServices`]).
pub struct Tap<'a, X: Transmit + ?Sized> {
    pub inner: &'a mut X,
    pub capture: &'a mut Capture,
}

impl<X: Transmit + ?Sized> Transmit for Tap<'_, X> {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.capture.frame(port, true, frame);
        self.inner.send(port, frame)
    }

    fn send_datagram(&mut self, port: PortId, to: SocketAddr, payload: &[u8]) -> bool {
        self.capture.datagram(port, true, to, payload);
        self.inner.send_datagram(port, to, payload)
    }

    fn local(&mut self, from: LocalFrom, packet: &[u8]) -> Local {
        self.inner.local(from, packet)
    }

    fn stack(&mut self, port: PortId, frame: &[u8]) -> Local {
        self.inner.stack(port, frame)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::net::Ipv4Addr;
    use msg::{CaptureTerm, CAPTURE_TERMS};
    use std::vec;
    use std::vec::Vec as StdVec;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn ports() -> [Name; 2] {
        [name("lan0"), name("wan0")]
    }

    /// Ethernet + IPv4 + a UDP or TCP header (or ICMP), `extra` payload bytes.
    fn ip_frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, extra: usize) -> StdVec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + extra];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[23] = proto;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn arp_frame(sender: [u8; 4], target: [u8; 4]) -> StdVec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[28..32].copy_from_slice(&sender);
        f[38..42].copy_from_slice(&target);
        f
    }

    fn filter(clauses: &[&[(bool, CaptureTest)]]) -> CaptureFilter {
        let mut f = CaptureFilter::default();
        for c in clauses {
            let terms: Vec<CaptureTerm, CAPTURE_TERMS> = c.iter().map(|&(not, test)| CaptureTerm { not, test }).collect();
            f.any_of.push(terms).unwrap();
        }
        f
    }

    fn request(filter: CaptureFilter, port: Option<&str>, rate: Option<u32>) -> CaptureRequest {
        CaptureRequest { port: port.map(name), filter, snaplen: 262_144, rate }
    }

    #[test]
    fn the_filter_reads_hosts_ports_protocols_and_direction() {
        let (a, b) = ([10, 20, 0, 10], [10, 20, 0, 50]);
        let wg = ip_frame(17, [192, 0, 2, 2], [192, 0, 2, 100], 51820, 51820, 32);
        let ping = ip_frame(1, a, b, 0, 0, 0);
        let ssh = ip_frame(6, a, b, 40000, 22, 0);
        let arp = arp_frame(a, b);
        let host = |x: [u8; 4]| CaptureTest::Host(Ipv4Addr::from(x));
        let udp = CaptureTest::Proto(CaptureProto::Udp);
        let icmp = CaptureTest::Proto(CaptureProto::Icmp);
        let is_arp = CaptureTest::Proto(CaptureProto::Arp);

        assert!(matches(&CaptureFilter::default(), &[], false), "no filter: everything, even a runt");
        assert!(matches(&filter(&[&[(false, host(b))]]), &ping, false));
        assert!(matches(&filter(&[&[(false, host(b))]]), &arp, false), "host looks at ARP's addresses");
        assert!(!matches(&filter(&[&[(false, host(b))]]), &wg, false));
        assert!(matches(&filter(&[&[(false, CaptureTest::Port(51820)), (false, udp)]]), &wg, true));
        assert!(matches(&filter(&[&[(false, CaptureTest::Port(22))]]), &ssh, false));
        assert!(!matches(&filter(&[&[(false, CaptureTest::Port(22))]]), &ping, false), "ICMP has no ports");
        assert!(matches(&filter(&[&[(false, icmp)]]), &ping, false));
        assert!(!matches(&filter(&[&[(false, icmp)]]), &ssh, false));
        assert!(matches(&filter(&[&[(false, is_arp)]]), &arp, false));
        assert!(matches(&filter(&[&[(true, is_arp)]]), &ping, false));
        assert!(!matches(&filter(&[&[(true, is_arp)]]), &arp, false));
        assert!(matches(&filter(&[&[(false, CaptureTest::Outbound)]]), &ping, true));
        assert!(!matches(&filter(&[&[(false, CaptureTest::Outbound)]]), &ping, false));
        assert!(matches(&filter(&[&[(false, CaptureTest::Inbound)]]), &ping, false));
        // `icmp or udp port 51820`.
        let either = filter(&[&[(false, icmp)], &[(false, udp), (false, CaptureTest::Port(51820))]]);
        assert!(matches(&either, &ping, false) && matches(&either, &wg, false) && !matches(&either, &ssh, false));
        // A later fragment has no ports.
        let mut frag = ip_frame(17, a, b, 51820, 51820, 0);
        frag[20] = 0x00;
        frag[21] = 0x10;
        assert!(!matches(&filter(&[&[(false, CaptureTest::Port(51820))]]), &frag, false));
        // A VLAN tag is looked through.
        let mut tagged = ping[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&ping[12..]);
        assert!(matches(&filter(&[&[(false, icmp), (false, host(a))]]), &tagged, false));
        // Cut frames never panic and match nothing that needs the cut part.
        for n in 0..ssh.len() {
            let _ = matches(&filter(&[&[(false, CaptureTest::Port(22)), (false, host(a))]]), &ssh[..n], false);
            let _ = matches(&filter(&[&[(false, host(a))]]), &arp[..n.min(arp.len())], false);
        }
        assert!(!matches(&filter(&[&[(false, CaptureTest::Port(22))]]), &ssh[..36], false));
    }

    #[test]
    fn nothing_is_copied_when_off_and_frames_come_back_in_order() {
        let mut c = Capture::new();
        let now = Instant::from_millis(5_000);
        c.tick(now);
        c.frame(PortId(0), false, &[1, 2, 3]);
        assert!(!c.is_on());
        let b = c.read(now, u32::MAX);
        assert!(!b.running && b.frames.is_empty() && b.stopped.contains("no capture"));

        let b = c.start(now, &request(CaptureFilter::default(), None, None), &ports(), Defaults::HOST, 1_000).unwrap();
        assert!(b.running && b.frames.is_empty());
        assert_eq!((b.rate, b.ring_bytes), (NO_CAP, RING_HOST as u32));
        assert_eq!(b.ports.iter().map(|p| p.as_str()).collect::<StdVec<_>>(), ["lan0", "wan0"]);
        c.tick(Instant::from_millis(5_001));
        for i in 0..10u8 {
            let f = vec![i; 60 + usize::from(i)];
            c.frame(PortId(i % 2), i.is_multiple_of(3), &f);
        }
        let b = c.read(Instant::from_millis(5_002), u32::MAX);
        assert_eq!(b.frames.len(), 10);
        assert_eq!(b.captured, 10);
        let mut at = 0;
        for (i, f) in b.frames.iter().enumerate() {
            let i = i as u8;
            assert_eq!((f.port, f.tx, f.len, f.caplen), (i % 2, i.is_multiple_of(3), 60 + u16::from(i), 60 + u16::from(i)));
            assert_eq!(f.ts_us, 6_001_000, "turn clock + wall offset, in µs");
            let n = usize::from(f.caplen);
            assert!(b.data[at..at + n].iter().all(|&x| x == i));
            at += n;
        }
        assert_eq!(at, b.data.len());
        // A small budget hands out fewer frames; the rest wait.
        for _ in 0..5 {
            c.frame(PortId(0), false, &[7u8; 100]);
        }
        let b = c.read(Instant::from_millis(5_003), 250);
        assert_eq!((b.frames.len(), b.waiting), (2, 3));
        let b = c.stop(Instant::from_millis(5_004), u32::MAX);
        assert_eq!((b.frames.len(), b.waiting, b.running), (3, 0, false));
        assert_eq!(b.stopped.as_str(), "stopped by routerctl");
        // Stopped and drained: gone.
        c.frame(PortId(0), false, &[7u8; 100]);
        assert!(c.read(Instant::from_millis(5_005), u32::MAX).stopped.contains("no capture"));
    }

    #[test]
    fn a_datagram_port_is_shown_as_the_frames_it_stands_for() {
        let mut c = Capture::new();
        let now = Instant::from_millis(0);
        c.tick(now);
        let wan = PortId(1);
        c.set_underlay("192.0.2.1:51820".parse().unwrap(), Some(wan));
        // `udp port 51820 or icmp`: both kinds of frames must match it.
        let f = filter(&[
            &[(false, CaptureTest::Proto(CaptureProto::Udp)), (false, CaptureTest::Port(51820))],
            &[(false, CaptureTest::Proto(CaptureProto::Icmp))],
        ]);
        c.start(now, &request(f, Some("wan0"), None), &ports(), Defaults::HOST, 0).unwrap();
        c.datagram(wan, false, "203.0.113.7:40000".parse().unwrap(), &[4, 0, 0, 0, 0xaa]);
        c.datagram(wan, true, "[2001:db8::7]:51820".parse().unwrap(), &[1; 148]);
        let ping = &ip_frame(1, [198, 51, 100, 9], [192, 0, 2, 1], 0, 0, 8)[14..];
        c.frame(wan, false, ping);
        c.frame(PortId(0), false, &ip_frame(1, [10, 0, 0, 1], [10, 0, 0, 2], 0, 0, 8));
        let b = c.read(now, u32::MAX);
        assert_eq!(b.frames.len(), 3, "the LAN frame is not on wan0");
        let (mut at, mut frames) = (0, StdVec::new());
        for h in &b.frames {
            frames.push(b.data[at..at + usize::from(h.caplen)].to_vec());
            at += usize::from(h.caplen);
        }
        // In over IPv4: Ethernet, IPv4 from the sender to the box's end, UDP.
        let v4 = &frames[0];
        assert_eq!((v4.len(), &v4[12..14], v4[14], v4[23]), (14 + 20 + 8 + 5, &[8u8, 0][..], 0x45, 17));
        assert_eq!((&v4[26..30], &v4[30..34]), (&[203u8, 0, 113, 7][..], &[192u8, 0, 2, 1][..]));
        assert_eq!((&v4[34..36], &v4[36..38]), (&40000u16.to_be_bytes()[..], &51820u16.to_be_bytes()[..]));
        assert!(checksum_ok(&v4[14..34]), "the made-up IPv4 header's checksum");
        assert_eq!(&v4[42..], &[4, 0, 0, 0, 0xaa]);
        // Out over IPv6: the box's IPv4 end written as ::ffff:a.b.c.d.
        let v6 = &frames[1];
        assert_eq!((v6.len(), &v6[12..14], v6[14] >> 4, v6[20]), (14 + 40 + 8 + 148, &[0x86u8, 0xdd][..], 6, 17));
        assert_eq!(&v6[22..38], &Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets());
        assert_eq!(&v6[38..54], &"2001:db8::7".parse::<core::net::Ipv6Addr>().unwrap().octets());
        assert!(b.frames[1].tx);
        let box_end = filter(&[&[(false, CaptureTest::Host(Ipv4Addr::new(192, 0, 2, 1)))]]);
        assert!(matches(&box_end, v6, true), "`host` finds the box's IPv4 end in the IPv6 header");
        assert!(!matches(&filter(&[&[(false, CaptureTest::Port(22))]]), v6, true));
        for n in 0..v6.len() {
            let _ = matches(&box_end, &v6[..n], true);
            let _ = matches(&filter(&[&[(false, CaptureTest::Port(51820))]]), &v6[..n], true);
        }
        // Bare IPv4 from the IP side: behind an Ethernet header.
        let bare = &frames[2];
        assert_eq!((&bare[..12], &bare[12..14]), (&[0u8; 12][..], &[8u8, 0][..]));
        assert_eq!(&bare[14..], ping);
    }

    fn checksum_ok(header: &[u8]) -> bool {
        routerd_dataplane::checksum::internet(header) == 0
    }

    #[test]
    fn the_ring_wraps_and_counts_what_did_not_fit() {
        let mut c = Capture::new();
        let now = Instant::from_millis(0);
        let req = CaptureRequest { snaplen: 100, ..request(CaptureFilter::default(), None, None) };
        c.start(now, &req, &ports(), Defaults { rate: NO_CAP, ring: 1000 }, 0).unwrap();
        let mut last: Option<u16> = None;
        let mut sent = 0u16;
        // Fill, drain part, refill across the end of the buffer, many times.
        for round in 0..50u32 {
            for _ in 0..7 {
                let mut f = vec![0xab; 150];
                f[..2].copy_from_slice(&sent.to_be_bytes());
                c.frame(PortId(0), false, &f);
                sent += 1;
            }
            let b = c.read(now, 300 + round);
            for (k, f) in b.frames.iter().enumerate() {
                assert_eq!((f.len, f.caplen), (150, 100), "snaplen keeps 100 bytes");
                let rec = &b.data[k * 100..(k + 1) * 100];
                assert!(rec[2..].iter().all(|&x| x == 0xab), "{rec:?}");
                // In order, skipping those that found the ring full.
                let n = u16::from_be_bytes([rec[0], rec[1]]);
                assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
                last = Some(n);
            }
        }
        let b = c.read(now, u32::MAX);
        assert!(b.skipped_full > 0, "a 1000-byte ring must overflow");
        assert_eq!(b.captured + b.skipped_full, u64::from(sent));
        assert_eq!(b.skipped_rate, 0);
    }

    #[test]
    fn the_rate_cap_skips_and_counts_and_refills_with_time() {
        let mut c = Capture::new();
        let t = Instant::from_millis;
        c.start(t(0), &request(CaptureFilter::default(), None, None), &ports(), Defaults::IMAGE, 0).unwrap();
        c.tick(t(0));
        // One second's worth (8 KiB) passes at once, then the cap bites.
        for _ in 0..100 {
            c.frame(PortId(1), true, &[0u8; 184]);
        }
        let b = c.read(t(0), u32::MAX);
        assert_eq!(b.rate, SERIAL_RATE);
        assert_eq!(b.captured, u64::from(SERIAL_RATE) / 200);
        assert_eq!(b.skipped_rate, 100 - b.captured);
        // Half a second later, half of it again.
        c.tick(t(500));
        for _ in 0..100 {
            c.frame(PortId(1), true, &[0u8; 184]);
        }
        let b2 = c.read(t(500), u32::MAX);
        // What was left of the first second, plus half a second's worth.
        let left = u64::from(SERIAL_RATE) % 200;
        assert_eq!(b2.captured - b.captured, (left + u64::from(SERIAL_RATE) / 2) / 200);
        // The operator's cap replaces the default.
        let mut c = Capture::new();
        c.start(t(0), &request(CaptureFilter::default(), None, Some(NO_CAP)), &ports(), Defaults::IMAGE, 0).unwrap();
        for _ in 0..100 {
            c.frame(PortId(1), true, &[0u8; 184]);
        }
        assert_eq!(c.read(t(0), u32::MAX).skipped_rate, 0);
        assert!(c.start(t(0), &request(CaptureFilter::default(), None, Some(0)), &ports(), Defaults::IMAGE, 0).is_err());
    }

    #[test]
    fn an_unread_capture_stops_by_itself_and_frees_its_ring() {
        let mut c = Capture::new();
        let t = Instant::from_millis;
        c.start(t(1_000), &request(CaptureFilter::default(), None, None), &ports(), Defaults::HOST, 0).unwrap();
        c.tick(t(20_000));
        c.frame(PortId(0), false, &[1; 64]);
        let _ = c.read(t(20_000), u32::MAX); // read: alive for 30 s more
        c.tick(t(50_000));
        assert!(c.is_on());
        c.tick(t(50_001));
        assert!(!c.is_on(), "not read for 30 s: stopped");
        assert_eq!(c.run.as_ref().map(|r| r.ring.buf.capacity()), Some(0), "the ring is freed");
        c.frame(PortId(0), false, &[1; 64]);
        let late = c.read(t(60_000), u32::MAX);
        assert!(!late.running && late.frames.is_empty());
        assert_eq!(late.stopped.as_str(), "not read for 30 s");
        assert!(c.run.is_none(), "gone once it said why");
        assert!(c.read(t(60_001), u32::MAX).stopped.contains("no capture"));
    }

    #[test]
    fn a_port_by_name_follows_applies_and_unknown_ports_are_named() {
        let mut c = Capture::new();
        let t = Instant::from_millis(0);
        let e = c.start(t, &request(CaptureFilter::default(), Some("lan7"), None), &ports(), Defaults::HOST, 0).unwrap_err();
        assert_eq!(e.message.as_str(), "capture: the box has no port lan7 (its ports: lan0, wan0)");
        c.start(t, &request(CaptureFilter::default(), Some("wan0"), None), &ports(), Defaults::HOST, 0).unwrap();
        c.frame(PortId(0), false, &[1; 64]);
        c.frame(PortId(1), false, &[2; 64]);
        let b = c.read(t, u32::MAX);
        assert_eq!(b.frames.iter().map(|f| f.port).collect::<StdVec<_>>(), [1]);
        // An apply puts wan0 first.
        c.rebind(&[name("wan0"), name("lan0")]);
        c.frame(PortId(0), false, &[3; 64]);
        c.frame(PortId(1), false, &[4; 64]);
        let b = c.read(t, u32::MAX);
        assert_eq!((b.frames.len(), b.data[0]), (1, 3));
        assert_eq!(b.ports[0].as_str(), "wan0");
        c.rebind(&[name("lan0")]);
        let b = c.read(t, u32::MAX);
        assert!(!b.running);
        assert_eq!(b.stopped.as_str(), "port wan0 left the configuration");
    }

    #[test]
    fn the_tap_shows_sent_frames_and_passes_everything_on() {
        struct Sink(usize);
        impl Transmit for Sink {
            fn send(&mut self, _: PortId, _: &[u8]) -> bool {
                self.0 += 1;
                true
            }
        }
        let mut c = Capture::new();
        let t = Instant::from_millis(0);
        c.start(t, &request(CaptureFilter::default(), None, None), &ports(), Defaults::HOST, 0).unwrap();
        let mut sink = Sink(0);
        let mut tap = Tap { inner: &mut sink, capture: &mut c };
        assert!(tap.send(PortId(1), &[9; 80]));
        assert_eq!(tap.local(LocalFrom::Port(PortId(0)), &[]), Local::NoService);
        assert_eq!(sink.0, 1);
        let b = c.read(t, u32::MAX);
        assert_eq!((b.frames.len(), b.frames[0].tx, b.frames[0].port), (1, true, 1));
    }

    /// The forwarding turn taps both directions: an ARP request received on
    /// lan0 and the box's reply sent there, through `Node::handle`'s capture
    /// operations, with the wall clock in the timestamps.
    #[test]
    fn the_forwarding_turn_shows_received_and_sent_frames_to_the_node_capture() {
        use crate::{Forwarder, NicInfo, Node};
        use alloc::boxed::Box;
        use msg::{Op, Reply};
        use rand_core::OsRng;
        use routerd_netdev::testing::Loopback;

        const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
        const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
        let toml = r#"
[device]
name = "cap"
side = "onprem"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"

[[ports]]
name = "wan0"
role = "wan"
address = "192.0.2.2/24"
"#;
        let cfg = config_schema::human::from_toml(toml).unwrap();
        let mut node = Box::new(Node::new(&[NicInfo::ethernet(LAN_MAC), NicInfo::ethernet(WAN_MAC)], Some(OsRng), "0.1.0", "test"));
        let t = Instant::from_millis;
        node.set_wall_clock(t(0), core::time::Duration::from_secs(1_700_000_000));
        assert!(matches!(node.handle(t(0), Op::Apply(Box::new(cfg)), &[]), Reply::Applied(_)));
        let mut nics = [Loopback::new(LAN_MAC, 64), Loopback::new(WAN_MAC, 64)];
        let mut fwd = Box::new(Forwarder::new());
        let req = request(CaptureFilter::default(), Some("lan0"), None);
        match node.handle(t(10), Op::CaptureStart(Box::new(req)), &[]) {
            Reply::Captured(b) => assert!(b.running && b.rate == SERIAL_RATE, "the image's cap by default: {b:?}"),
            other => panic!("{other:?}"),
        }
        // Who has 10.20.0.2? Tell 10.20.0.10.
        let host = [0x02, 0x11, 0, 0, 0, 10];
        let mut ask = vec![0xff; 6];
        ask.extend_from_slice(&host);
        ask.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        ask.extend_from_slice(&host);
        ask.extend_from_slice(&[10, 20, 0, 10, 0, 0, 0, 0, 0, 0, 10, 20, 0, 2]);
        nics[0].inject(&ask);
        nics[1].inject(&ask); // on wan0: not captured (--on lan0)
        fwd.turn(&mut node, t(20), &mut nics[..], &mut |_| {});
        let sent = nics[0].take_sent();
        assert_eq!(sent.len(), 1, "the box answers the ARP request");
        let b = match node.handle(t(30), Op::CaptureRead { max_bytes: u32::MAX }, &[]) {
            Reply::Captured(b) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(b.frames.iter().map(|f| (f.port, f.tx)).collect::<StdVec<_>>(), [(0, false), (0, true)], "{b:?}");
        let (rx, tx) = (&b.frames[0], &b.frames[1]);
        assert_eq!(&b.data[..usize::from(rx.caplen)], &ask[..], "the request as received");
        assert_eq!(&b.data[usize::from(rx.caplen)..], &sent[0][..usize::from(tx.caplen)], "the reply as sent");
        assert_eq!(rx.ts_us, 1_700_000_000_020_000, "wall clock at the turn, in µs");
        match node.handle(t(40), Op::CaptureStop, &[]) {
            Reply::Captured(b) => assert!(!b.running && b.frames.is_empty()),
            other => panic!("{other:?}"),
        }
        // Off: frames pass without being copied.
        nics[0].inject(&ask);
        fwd.turn(&mut node, t(50), &mut nics[..], &mut |_| {});
        match node.handle(t(60), Op::CaptureRead { max_bytes: u32::MAX }, &[]) {
            Reply::Captured(b) => assert!(b.frames.is_empty() && b.stopped.contains("no capture")),
            other => panic!("{other:?}"),
        }
    }
}

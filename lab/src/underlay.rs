//! The underlay: the internet between the two boxes' WAN ports.
//!
//! Each box's WAN NIC is an [`Attachment`]: the underlay plays the router at
//! the attachment's gateway address (it answers ARP for it, nothing else) and
//! routes IPv4 between attachments by destination address, like two access
//! routers joined by the internet. An attachment with a public address gets
//! 1:1 NAT: its private address leaves as the public one and traffic to the
//! public one is rewritten back, as a cloud provider's edge does.
//!
//! Contract:
//! - A frame to an attachment's public or private address leaves on that
//!   attachment with the gateway's MAC as source, the box's MAC as
//!   destination and the TTL one lower; NAT rewrites addresses and fixes the
//!   IPv4 header checksum and (RFC 1624, so a corrupt one stays corrupt) the
//!   UDP and TCP checksums. ICMP errors quoting a rewritten header are passed
//!   as they are.
//! - Everything else is a counted drop, charged to the attachment it came in
//!   on; a send that fails is charged to the attachment it was leaving on.
//!   No panic on any input.
//! - Impairments (one-way latency, loss from a seeded generator) and the
//!   public addresses can be changed from any thread while it runs. Frames
//!   wait in one FIFO delay line: lowering the latency never reorders them.
//! - The box's MAC is learned from its ARP and from IPv4 it sends from its
//!   own address, or given in advance ([`Attachment::with_box_mac`]); until it
//!   is known, up to 16 frames per attachment wait (3 s at most) while the
//!   underlay asks for it by ARP, as a router's neighbour queue does.
//! - Queues are bounded: the ingress channel and the delay line each hold
//!   [`UnderlayConfig::queue_capacity`] frames; when full, new frames are
//!   dropped (`queue_full`), never older ones.
//!
//! Threads: one reader per attachment (blocking reads with a short timeout)
//! and the router, which owns all routing state. [`Underlay::stop`] (or drop)
//! stops and joins them and removes the socket files it bound.

use crate::frame::{checksum_adjust, Arp, ETHERNET_HEADER};
use crate::link::{Link, LinkStats, SocketPair, READ_SLICE};
use crate::rng::Rng;
use crate::{format_mac, Cidr, Mac};
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One box WAN port on the underlay.
#[derive(Clone, Debug)]
pub struct Attachment {
    /// Shown in counters and errors ("onprem", "cloud").
    pub name: String,
    /// The sockets of the box's WAN NIC, seen from the underlay.
    pub port: SocketPair,
    /// The box's WAN address and prefix, e.g. 192.168.1.35/24.
    pub address: Cidr,
    /// The router the box uses, e.g. 192.168.1.1; the underlay answers ARP for it.
    pub gateway: Ipv4Addr,
    /// The address the box has on the internet (1:1 NAT), e.g. 203.0.113.10
    /// for a cloud VM whose private address is 10.0.0.4.
    pub public: Option<Ipv4Addr>,
    /// The box's MAC if known in advance; otherwise learned from its frames.
    pub box_mac: Option<Mac>,
    /// The gateway's MAC; a locally administered one per attachment if unset.
    pub gateway_mac: Option<Mac>,
}

impl Attachment {
    pub fn new(name: &str, port: SocketPair, address: Cidr, gateway: Ipv4Addr) -> Attachment {
        Attachment { name: name.to_string(), port, address, gateway, public: None, box_mac: None, gateway_mac: None }
    }

    /// The same attachment behind 1:1 NAT to `public`.
    pub fn with_public(mut self, public: Ipv4Addr) -> Attachment {
        self.public = Some(public);
        self
    }

    /// The same attachment with the box's MAC known in advance.
    pub fn with_box_mac(mut self, mac: Mac) -> Attachment {
        self.box_mac = Some(mac);
        self
    }
}

/// What to start an underlay with.
#[derive(Clone, Debug)]
pub struct UnderlayConfig {
    pub attachments: Vec<Attachment>,
    /// Seeds the loss generator: the same seed drops the same frames.
    pub seed: u64,
    /// Capacity of the ingress channel and of the delay line, in frames.
    pub queue_capacity: usize,
    /// Initial one-way latency added to every routed frame.
    pub latency: Duration,
    /// Initial loss of routed frames, in percent (0–100).
    pub loss_percent: f64,
}

impl UnderlayConfig {
    /// No impairments, seed 1, 1024-frame queues.
    pub fn new(attachments: Vec<Attachment>) -> UnderlayConfig {
        UnderlayConfig { attachments, seed: 1, queue_capacity: 1024, latency: Duration::ZERO, loss_percent: 0.0 }
    }
}

/// Why the underlay dropped a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Too short or inconsistent to be the Ethernet/IPv4/ARP it claims.
    Malformed,
    /// An IPv4 header whose checksum is wrong.
    BadChecksum,
    /// Neither IPv4 nor ARP (IPv6, LLDP, …).
    NotIpv4,
    /// ARP that does not ask for the gateway (including the box's replies
    /// to the underlay's own requests, once its MAC is learned from them).
    ArpIgnored,
    /// No attachment holds the destination (including broadcasts).
    NoRoute,
    /// TTL would reach zero.
    TtlExpired,
    /// Dropped on purpose by the loss impairment.
    Loss,
    /// The ingress channel or the delay line was full.
    QueueFull,
    /// The box's MAC on the outgoing attachment was not learned within 3 s
    /// (the underlay asks by ARP every second), or 16 frames already waited.
    Unresolved,
    /// Nobody is bound at the box's socket (the box is not up).
    NoPeer,
    /// The box did not take the frame within 1 s, or 256 frames were
    /// already waiting for it.
    TxFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::NotIpv4,
        DropReason::ArpIgnored,
        DropReason::NoRoute,
        DropReason::TtlExpired,
        DropReason::Loss,
        DropReason::QueueFull,
        DropReason::Unresolved,
        DropReason::NoPeer,
        DropReason::TxFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::ArpIgnored => "arp_ignored",
            DropReason::NoRoute => "no_route",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::Loss => "loss",
            DropReason::QueueFull => "queue_full",
            DropReason::Unresolved => "unresolved",
            DropReason::NoPeer => "no_peer",
            DropReason::TxFailed => "tx_failed",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one attachment. Once traffic has settled, every frame that
/// came in is accounted for exactly once:
/// `frames_in == arp_answered + routed + drops_in()`, where `drops_in()` is
/// the sum of the ingress reasons (all but `no_peer` and `tx_failed`, which
/// count frames leaving on this attachment). While a box's MAC is being
/// resolved, up to 16 frames per attachment are in none of these yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachmentCounters {
    pub frames_in: u64,
    pub bytes_in: u64,
    /// Frames handed to the box (ARP replies and routed frames).
    pub frames_out: u64,
    pub bytes_out: u64,
    /// ARP requests for the gateway answered.
    pub arp_answered: u64,
    /// Frames that came in and were put on the delay line toward their
    /// attachment (a failure to hand them over counts there as `no_peer` or
    /// `tx_failed`).
    pub routed: u64,
    /// Frames whose source was rewritten private → public on the way out.
    pub nat_outbound: u64,
    /// Frames whose destination was rewritten public → private on the way in.
    pub nat_inbound: u64,
    /// ARP requests the underlay sent to learn the box's MAC.
    pub arp_requests_sent: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl AttachmentCounters {
    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }

    /// Every non-zero drop counter, in [`DropReason::ALL`] order.
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.dropped(r))).filter(|&(_, n)| n > 0).collect()
    }

    /// Frames that came in and were dropped here.
    pub fn drops_in(&self) -> u64 {
        DropReason::ALL.iter().filter(|r| !matches!(r, DropReason::NoPeer | DropReason::TxFailed)).map(|&r| self.dropped(r)).sum()
    }

    fn set_drops(&mut self, reason: DropReason, n: u64) {
        if let Some(d) = self.drops.get_mut(reason as usize) {
            *d = n;
        }
    }

    fn drop(&mut self, reason: DropReason) {
        if let Some(n) = self.drops.get_mut(reason as usize) {
            *n = n.saturating_add(1);
        }
    }
}

impl fmt::Display for AttachmentCounters {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "in {} out {} arp {} routed {} nat out/in {}/{}",
            self.frames_in, self.frames_out, self.arp_answered, self.routed, self.nat_outbound, self.nat_inbound
        )?;
        for (reason, n) in self.drops() {
            write!(f, " {reason} {n}")?;
        }
        Ok(())
    }
}

/// What can be changed while the underlay runs.
#[derive(Clone, Debug)]
struct Settings {
    latency: Duration,
    loss_ppm: u32,
    public: Vec<Option<Ipv4Addr>>,
}

struct Shared {
    settings: Mutex<Settings>,
    counters: Mutex<Vec<AttachmentCounters>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread cannot leave these half-updated in a way that
    // matters (plain counters and settings): keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running underlay.
pub struct Underlay {
    shared: Arc<Shared>,
    /// Frames in and out of each attachment's socket, counted by its threads.
    stats: Vec<Arc<LinkStats>>,
    names: Vec<String>,
    threads: Vec<JoinHandle<()>>,
}

impl Underlay {
    /// Binds every attachment's socket and starts routing.
    pub fn start(config: UnderlayConfig) -> io::Result<Underlay> {
        if config.attachments.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an underlay needs at least one attachment"));
        }
        let capacity = config.queue_capacity.max(1);
        let shared = Arc::new(Shared {
            settings: Mutex::new(Settings {
                latency: config.latency,
                loss_ppm: loss_ppm(config.loss_percent),
                public: config.attachments.iter().map(|a| a.public).collect(),
            }),
            counters: Mutex::new(vec![AttachmentCounters::default(); config.attachments.len()]),
            stop: AtomicBool::new(false),
        });
        let mut links = Vec::new();
        for a in &config.attachments {
            links.push(Link::bind(&a.port)?);
        }
        let (tx, rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, link) in links.iter().enumerate() {
            let tx = tx.clone();
            let shared2 = Arc::clone(&shared);
            let reader = link.spawn_reader(format!("underlay-rx-{i}"), Arc::clone(&stop), move |frame| {
                match tx.try_send((i, frame)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => bump(&mut lock(&shared2.counters), i, |c| c.drop(DropReason::QueueFull)),
                    Err(TrySendError::Disconnected(_)) => return false,
                }
                true
            });
            match reader {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        drop(tx);
        let stats = links.iter().map(Link::shared_stats).collect();
        let router = Router::new(&config, links);
        let shared2 = Arc::clone(&shared);
        let stop2 = Arc::clone(&stop);
        let main = thread::Builder::new().name("underlay".into()).spawn(move || {
            router.run(rx, &shared2, capacity);
            stop2.store(true, Ordering::Relaxed);
        });
        match main {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
        // The router sets `shared.stop` to end; the readers watch `stop`,
        // which the router sets as it leaves.
        Ok(Underlay { shared, stats, names: config.attachments.iter().map(|a| a.name.clone()).collect(), threads })
    }

    /// The index of the attachment called `name` (indices follow the config).
    pub fn attachment(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Adds `latency` one way to every routed frame from now on.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.settings).latency = latency;
    }

    /// Drops `percent` (0–100) of routed frames from now on.
    pub fn set_loss(&self, percent: f64) {
        lock(&self.shared.settings).loss_ppm = loss_ppm(percent);
    }

    /// Moves `attachment` to another public address (or takes it off NAT):
    /// its box now appears from `public`, and the old address stops routing.
    /// Returns false when there is no such attachment.
    pub fn set_public_address(&self, attachment: usize, public: Option<Ipv4Addr>) -> bool {
        match lock(&self.shared.settings).public.get_mut(attachment) {
            Some(p) => {
                *p = public;
                true
            }
            None => false,
        }
    }

    /// The public address `attachment` has now.
    pub fn public_address(&self, attachment: usize) -> Option<Ipv4Addr> {
        lock(&self.shared.settings).public.get(attachment).copied().flatten()
    }

    /// A snapshot of `attachment`'s counters.
    pub fn counters(&self, attachment: usize) -> Option<AttachmentCounters> {
        let mut c = lock(&self.shared.counters).get(attachment).cloned()?;
        let l = self.stats.get(attachment)?;
        let get = LinkStats::get;
        c.frames_in = get(&l.frames_in);
        c.bytes_in = get(&l.bytes_in);
        c.frames_out = get(&l.frames_out);
        c.bytes_out = get(&l.bytes_out);
        c.set_drops(DropReason::NoPeer, get(&l.no_peer));
        c.set_drops(DropReason::TxFailed, get(&l.tx_failed) + get(&l.tx_queue_full));
        Some(c)
    }

    /// Every attachment's name and counters.
    pub fn all_counters(&self) -> Vec<(String, AttachmentCounters)> {
        (0..self.names.len()).filter_map(|i| Some((self.names.get(i)?.clone(), self.counters(i)?))).collect()
    }

    /// Stops routing and joins every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn loss_ppm(percent: f64) -> u32 {
    if percent.is_nan() {
        return 0;
    }
    (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32
}

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

fn bump(counters: &mut [AttachmentCounters], at: usize, f: impl FnOnce(&mut AttachmentCounters)) {
    if let Some(c) = counters.get_mut(at) {
        f(c);
    }
}

/// Per-attachment routing state, owned by the router thread.
struct Port {
    link: Link,
    address: Cidr,
    gateway: Ipv4Addr,
    gateway_mac: Mac,
    box_mac: Option<Mac>,
    last_arp_request: Option<Instant>,
    waiting: VecDeque<Waiting>,
}

/// What the router decided for one frame.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Send this ARP reply back where the request came from.
    AnswerArp(Vec<u8>),
    /// Forward the (rewritten) frame on this attachment.
    Route {
        egress: usize,
        nat_out: bool,
        nat_in: bool,
    },
    Drop(DropReason),
}

/// Routing state and the delay line: everything the router thread owns.
struct Router {
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
    fn new(config: &UnderlayConfig, links: Vec<Link>) -> Router {
        let ports = config
            .attachments
            .iter()
            .zip(links)
            .enumerate()
            .map(|(i, (a, link))| Port {
                link,
                address: a.address,
                gateway: a.gateway,
                gateway_mac: a.gateway_mac.unwrap_or(default_gateway_mac(i)),
                box_mac: a.box_mac,
                last_arp_request: None,
                waiting: VecDeque::new(),
            })
            .collect();
        Router { ports, rng: Rng::new(config.seed), delay_line: VecDeque::new() }
    }

    fn run(mut self, rx: Receiver<(usize, Vec<u8>)>, shared: &Shared, capacity: usize) {
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
        let verdict = self.decide(ingress, &mut frame, &settings.public);
        // Frames to send right away, after the counters are released.
        let mut immediate: Vec<(usize, Vec<u8>)> = Vec::new();
        {
            let mut counters = lock(&shared.counters);
            match verdict {
                Verdict::AnswerArp(reply) => {
                    bump(&mut counters, ingress, |c| c.arp_answered += 1);
                    immediate.push((ingress, reply));
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
    fn decide(&mut self, ingress: usize, frame: &mut [u8], public: &[Option<Ipv4Addr>]) -> Verdict {
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
            EthernetProtocol::Ipv4 => self.route_ipv4(ingress, frame, public),
            _ => Verdict::Drop(DropReason::NotIpv4),
        }
    }

    fn route_ipv4(&self, ingress: usize, frame: &mut [u8], public: &[Option<Ipv4Addr>]) -> Verdict {
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
        // attachment must not fall through to a private match.
        let by_public = public.iter().position(|p| *p == Some(dst));
        let egress = by_public.or_else(|| self.ports.iter().position(|p| p.address.addr() == dst));
        let Some(egress) = egress else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let ttl = ip.hop_limit();
        if ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        ip.set_hop_limit(ttl - 1);

        let src = ip.src_addr();
        let ingress_private = self.ports.get(ingress).map(|p| p.address.addr());
        let new_src = match public.get(ingress).copied().flatten() {
            Some(pub_addr) if Some(src) == ingress_private => Some(pub_addr),
            _ => None,
        };
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

impl fmt::Debug for Underlay {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Underlay").field("attachments", &self.names).finish()
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
    fn router(name: &str) -> (Router, Vec<Option<Ipv4Addr>>, PathBuf) {
        let d = dir(name);
        let config = UnderlayConfig::new(vec![
            Attachment::new("onprem", SocketPair::link(&d, "onprem").0, "192.168.1.35/24".parse().unwrap(), ip("192.168.1.1"))
                .with_box_mac(ONPREM_MAC),
            Attachment::new("cloud", SocketPair::link(&d, "cloud").0, "10.0.0.4/24".parse().unwrap(), ip("10.0.0.1"))
                .with_public(ip("203.0.113.10")),
        ]);
        let links = config.attachments.iter().map(|a| Link::bind(&a.port).unwrap()).collect();
        let public = config.attachments.iter().map(|a| a.public).collect();
        (Router::new(&config, links), public, d)
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
        let Verdict::AnswerArp(reply) = r.decide(1, &mut f, &public) else { panic!("no answer") };
        let reply = Arp::parse(&reply).unwrap();
        assert!(!reply.request);
        assert_eq!((reply.sender_ip, reply.target_mac), (ip("10.0.0.1"), CLOUD_MAC));
        assert_eq!(r.ports[1].box_mac, Some(CLOUD_MAC), "learned from the request");
        // The same request on the other attachment asks for nothing it owns.
        assert_eq!(r.decide(0, &mut ask.clone(), &public), Verdict::Drop(DropReason::ArpIgnored));
        let mut other = Arp::request(CLOUD_MAC, ip("10.0.0.4"), ip("10.0.0.9")).to_frame();
        assert_eq!(r.decide(1, &mut other, &public), Verdict::Drop(DropReason::ArpIgnored));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn nat_rewrites_both_ways_with_valid_checksums() {
        let (mut r, public, d) = router("nat");
        // onprem dials the cloud's public address.
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 40000), ("203.0.113.10", 51820), 64);
        let v = r.decide(0, &mut f, &public);
        assert_eq!(v, Verdict::Route { egress: 1, nat_out: false, nat_in: true });
        assert_eq!(inspect(&f), (ip("192.168.1.35"), ip("10.0.0.4"), 63, true));
        // The cloud answers from its private address, which leaves as public.
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        assert_eq!(r.decide(1, &mut f, &public), Verdict::Route { egress: 0, nat_out: true, nat_in: false });
        assert_eq!(inspect(&f), (ip("203.0.113.10"), ip("192.168.1.35"), 63, true));
        // TCP too.
        let mut f = tcp(CLOUD_MAC, ("10.0.0.4", 5001), ("192.168.1.35", 40001));
        r.decide(1, &mut f, &public);
        assert_eq!(inspect(&f), (ip("203.0.113.10"), ip("192.168.1.35"), 63, true));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_udp_checksum_stays_corrupt_and_zero_stays_zero() {
        let (mut r, public, d) = router("corrupt");
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        let sum_at = ETHERNET_HEADER + 20 + 6;
        f[sum_at] ^= 0x01;
        r.decide(1, &mut f, &public);
        assert!(!inspect(&f).3);
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        f[sum_at] = 0;
        f[sum_at + 1] = 0;
        r.decide(1, &mut f, &public);
        assert_eq!(&f[sum_at..sum_at + 2], &[0, 0]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_moved_public_address_routes_only_at_its_new_place() {
        let (mut r, _, d) = router("roam");
        let moved = vec![None, Some(ip("203.0.113.20"))];
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 40000), ("203.0.113.10", 51820), 64);
        assert_eq!(r.decide(0, &mut f, &moved), Verdict::Drop(DropReason::NoRoute));
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        r.decide(1, &mut f, &moved);
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
        r.decide(1, &mut junk, &public);
        let mut stranger = udp([0x02, 9, 9, 9, 9, 9], ("10.0.0.99", 1), ("192.168.1.35", 2), 64);
        r.decide(1, &mut stranger, &public);
        assert_eq!(r.ports[1].box_mac, None);
        let mut f = udp(CLOUD_MAC, ("10.0.0.4", 51820), ("192.168.1.35", 40000), 64);
        r.decide(1, &mut f, &public);
        assert_eq!(r.ports[1].box_mac, Some(CLOUD_MAC));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn drops_have_reasons() {
        let (mut r, public, d) = router("drops");
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 1), ("198.51.100.1", 2), 64);
        assert_eq!(r.decide(0, &mut f, &public), Verdict::Drop(DropReason::NoRoute));
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 1), ("203.0.113.10", 2), 1);
        assert_eq!(r.decide(0, &mut f, &public), Verdict::Drop(DropReason::TtlExpired));
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 1), ("203.0.113.10", 2), 64);
        f[ETHERNET_HEADER + 10] ^= 0xff;
        assert_eq!(r.decide(0, &mut f, &public), Verdict::Drop(DropReason::BadChecksum));
        let mut f = udp(ONPREM_MAC, ("192.168.1.35", 1), ("203.0.113.10", 2), 64);
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(r.decide(0, &mut f, &public), Verdict::Drop(DropReason::NotIpv4));
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
            let _ = r.decide((i % 3) as usize, &mut f, &public);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn loss_percent_is_clamped() {
        assert_eq!(loss_ppm(10.0), 100_000);
        assert_eq!(loss_ppm(250.0), 1_000_000);
        assert_eq!(loss_ppm(-1.0), 0);
        assert_eq!(loss_ppm(f64::NAN), 0);
    }
}

//! A simulated host on a box's LAN: the lab's traffic generator.
//!
//! A [`SimHost`] is a smoltcp interface with one MAC and one or more IPv4
//! addresses (e.g. the cloud-side host holds its own 10.20.0.11 and the
//! claimed 10.20.0.50), an optional default gateway, and a few services:
//! - smoltcp answers ARP and ICMP echo for its addresses;
//! - [`SimHost::ping`] / [`SimHost::ping_from`] (the source can be any of its
//!   addresses, so the reply path through the claims is exercised);
//! - TCP: [`SimHost::listen`] runs an echo or sink server;
//!   [`SimHost::transfer`] sends a seeded byte stream to one and checks it
//!   arrived intact (sink: the server answers a byte count and a digest after
//!   the client's FIN; echo: the client compares what comes back);
//! - every SYN and SYN-ACK crossing its NIC is logged with its MSS option
//!   ([`SimHost::syn_log`]), so the lab can show the box's clamp;
//! - [`SimHost::announce_conflict`] makes it answer ARP for an address it does
//!   not hold (a forgotten live host), [`SimHost::arp_probe`] asks who answers
//!   ARP for an address.
//!
//! Threads: a reader feeding a bounded channel, and the host thread that owns
//! the polling. Callers touch the stack under its mutex and wait on a condvar
//! the host thread signals after each poll, always with a deadline.

mod device;
mod ping;
mod tcp;

pub use ping::PingReport;
pub use tcp::{ListenMode, ServerRecord, Transfer, TransferReport};

use crate::frame::Arp;
use crate::link::{Link, LinkStats, SocketPair, READ_SLICE};
use crate::{format_mac, Cidr, Mac};
use device::LinkDevice;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// ARP packets remembered for [`SimHost::arp_probe`]; the oldest go first.
const ARP_LOG: usize = 256;
/// Server records kept; the oldest go first.
const SERVER_LOG: usize = 256;
/// Frames the reader may queue ahead of the host thread.
const CHANNEL: usize = 256;
/// Most addresses one host can hold (smoltcp's `iface-max-addr-count-8`).
pub const MAX_ADDRESSES: usize = 8;

/// What to start a host with.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Shown in reports ("onprem-host").
    pub name: String,
    /// The sockets of the box LAN NIC this host is plugged into.
    pub port: SocketPair,
    pub mac: Mac,
    /// Its addresses, the first being its primary one (1 to 8).
    pub addresses: Vec<Cidr>,
    pub gateway: Option<Ipv4Addr>,
    /// IP MTU of its NIC.
    pub mtu: usize,
    /// Seeds smoltcp (initial sequence numbers) and the ports and payloads
    /// the host picks, so a run can be repeated.
    pub seed: u64,
    /// Permanent neighbour entries: frames for these addresses go straight
    /// to these MACs without ARP. This is how a cloud host's packets reach an
    /// address the provider fabric delivers to the box's NIC (a
    /// provider-secondary-ip claim), which nobody answers ARP for.
    pub static_neighbors: Vec<(Ipv4Addr, Mac)>,
}

impl HostConfig {
    /// No gateway, MTU 1500, a seed derived from the MAC.
    pub fn new(name: &str, port: SocketPair, mac: Mac, addresses: Vec<Cidr>) -> HostConfig {
        let seed = mac.iter().fold(0u64, |s, &b| s.rotate_left(8) ^ u64::from(b));
        HostConfig { name: name.to_string(), port, mac, addresses, gateway: None, mtu: 1500, seed, static_neighbors: Vec::new() }
    }

    /// Adds a permanent neighbour entry (see [`HostConfig::static_neighbors`]).
    pub fn with_static_neighbor(mut self, addr: Ipv4Addr, mac: Mac) -> HostConfig {
        self.static_neighbors.push((addr, mac));
        self
    }

    pub fn with_gateway(mut self, gateway: Ipv4Addr) -> HostConfig {
        self.gateway = Some(gateway);
        self
    }
}

/// Counters of a host, as a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCounters {
    /// Frames that arrived at the NIC (including those then dropped).
    pub frames_in: u64,
    pub bytes_in: u64,
    /// Frames the peer took.
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Arrived frames dropped because the host was not keeping up.
    pub rx_queue_full: u64,
    /// Frames not sent because nobody was bound at the peer socket.
    pub tx_no_peer: u64,
    /// Frames not sent because the peer did not take them within 1 s or
    /// 256 were already waiting.
    pub tx_failed: u64,
    /// ARP replies sent for addresses held by [`SimHost::announce_conflict`].
    pub conflict_arp_replies: u64,
    /// Gratuitous ARPs sent.
    pub gratuitous_arps: u64,
    /// ARP requests sent by [`SimHost::arp_probe`].
    pub arp_probes: u64,
    /// Echo requests sent by ping.
    pub echo_requests: u64,
    /// Echo replies matched by ping.
    pub echo_replies: u64,
    /// SYN records pushed out of the log by newer ones.
    pub syn_log_evicted: u64,
}

/// Which way a logged SYN crossed this host's NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynDirection {
    Sent,
    Received,
}

/// A TCP SYN or SYN-ACK seen at this host's NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynRecord {
    /// Since the host started.
    pub at: Duration,
    pub direction: SynDirection,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// A SYN-ACK rather than a SYN.
    pub syn_ack: bool,
    /// The MSS option, if the segment had one.
    pub mss: Option<u16>,
}

impl fmt::Display for SynRecord {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let what = if self.syn_ack { "SYN-ACK" } else { "SYN" };
        let dir = match self.direction {
            SynDirection::Sent => "left",
            SynDirection::Received => "arrived",
        };
        write!(f, "{what} {} → {} {dir} with ", self.src, self.dst)?;
        match self.mss {
            Some(m) => write!(f, "MSS {m}"),
            None => f.write_str("no MSS"),
        }
    }
}

enum Event {
    Frame(Vec<u8>),
    Wake,
}

/// Everything the host thread and callers share, under one lock.
struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: LinkDevice,
    epoch: Instant,
    mac: Mac,
    addresses: Vec<Cidr>,
    conflicts: Vec<Ipv4Addr>,
    conflict_arp_replies: u64,
    gratuitous_arps: u64,
    arp_probes: u64,
    echo_requests: u64,
    echo_replies: u64,
    /// Every ARP packet seen, numbered, for probes.
    arp_log: VecDeque<(u64, Arp)>,
    arp_seq: u64,
    listeners: Vec<tcp::Listener>,
    records: VecDeque<ServerRecord>,
    scratch: Vec<u8>,
    next_port: u16,
    next_ident: u16,
    seed: u64,
}

impl Stack {
    fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX))
    }

    /// Takes a frame from the LAN: conflict ARP answers and probe bookkeeping
    /// happen here, below smoltcp, which then sees the frame too.
    fn intake(&mut self, frame: Vec<u8>) {
        if let Some(arp) = Arp::parse(&frame) {
            self.arp_seq += 1;
            if self.arp_log.len() >= ARP_LOG {
                self.arp_log.pop_front();
            }
            self.arp_log.push_back((self.arp_seq, arp));
            let gratuitous = arp.sender_ip == arp.target_ip;
            if arp.request && !gratuitous && self.conflicts.contains(&arp.target_ip) {
                let reply = Arp::reply_to(&arp, self.mac, arp.target_ip).to_frame();
                self.dev.wire.send(&reply);
                self.conflict_arp_replies += 1;
            }
        }
        self.dev.push_rx(frame);
    }

    /// Polls until smoltcp and the servers have nothing more to do (bounded).
    fn poll(&mut self) {
        for _ in 0..16 {
            let now = self.now();
            let changed = self.iface.poll(now, &mut self.dev, &mut self.sockets);
            let served = self.service_listeners();
            let injected = self.dev.take_injected();
            if changed == smoltcp::iface::PollResult::None && !served && !injected && self.dev.rx.is_empty() {
                break;
            }
        }
    }

    fn poll_delay(&mut self) -> Duration {
        let now = self.now();
        match self.iface.poll_delay(now, &self.sockets) {
            Some(d) => Duration::from_micros(d.total_micros()),
            None => READ_SLICE,
        }
    }

    /// The address this host sends from toward `dst`: one in `dst`'s subnet,
    /// else its primary one.
    fn source_for(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addresses.iter().find(|c| c.contains(dst)).or_else(|| self.addresses.first()).map(|c| c.addr())
    }

    fn next_port(&mut self) -> u16 {
        // Ephemeral range 49152..=65535, starting at a seeded place.
        let span = 16384u32;
        if self.next_port < 49152 {
            self.next_port = 49152 + (self.seed % u64::from(span)) as u16;
        }
        let p = self.next_port;
        self.next_port = if p == u16::MAX { 49152 } else { p + 1 };
        p
    }

    fn counters(&self) -> HostCounters {
        let c = &self.dev.wire.counters;
        let l = self.dev.wire.link().stats();
        let get = LinkStats::get;
        HostCounters {
            frames_in: get(&l.frames_in),
            bytes_in: get(&l.bytes_in),
            frames_out: get(&l.frames_out),
            bytes_out: get(&l.bytes_out),
            rx_queue_full: c.rx_queue_full,
            tx_no_peer: get(&l.no_peer),
            tx_failed: get(&l.tx_failed) + get(&l.tx_queue_full),
            conflict_arp_replies: self.conflict_arp_replies,
            gratuitous_arps: self.gratuitous_arps,
            arp_probes: self.arp_probes,
            echo_requests: self.echo_requests,
            echo_replies: self.echo_replies,
            syn_log_evicted: c.syn_log_evicted,
        }
    }
}

struct Shared {
    stack: Mutex<Stack>,
    /// Signalled after every poll of the host thread.
    progress: Condvar,
    stop: AtomicBool,
    /// Frames the reader could not queue (the host thread was behind).
    channel_full: Arc<AtomicU64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Stack> {
        self.stack.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the next poll (or `max`), releasing the stack meanwhile.
    fn wait<'a>(&self, guard: MutexGuard<'a, Stack>, max: Duration) -> MutexGuard<'a, Stack> {
        let max = max.min(READ_SLICE).max(Duration::from_micros(100));
        match self.progress.wait_timeout(guard, max) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        }
    }
}

/// A running simulated host.
pub struct SimHost {
    shared: Arc<Shared>,
    wake: SyncSender<Event>,
    threads: Vec<JoinHandle<()>>,
    name: String,
    mac: Mac,
    addresses: Vec<Cidr>,
}

impl SimHost {
    /// Binds the host's socket, brings its stack up and starts its threads.
    pub fn start(config: HostConfig) -> io::Result<SimHost> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {m}", config.name));
        if config.addresses.is_empty() || config.addresses.len() > MAX_ADDRESSES {
            return Err(invalid(format!("a host holds 1 to {MAX_ADDRESSES} addresses")));
        }
        if !(576..=9000).contains(&config.mtu) {
            return Err(invalid(format!("MTU {} is outside 576..=9000", config.mtu)));
        }
        if config.mac[0] & 1 != 0 {
            return Err(invalid(format!("{} is a multicast MAC", format_mac(config.mac))));
        }
        let link = Link::bind(&config.port)?;
        let epoch = Instant::now();
        let mut dev = LinkDevice::new(link, config.mtu, epoch, config.static_neighbors.clone());
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        iface_config.random_seed = config.seed;
        let mut iface = Interface::new(iface_config, &mut dev, SmolInstant::from_micros(0));
        let mut full = false;
        iface.update_ip_addrs(|addrs| {
            for c in &config.addresses {
                full |= addrs.push(IpCidr::new(IpAddress::Ipv4(c.addr()), c.prefix())).is_err();
            }
        });
        if full {
            return Err(invalid("too many addresses".into()));
        }
        if let Some(gw) = config.gateway {
            iface.routes_mut().add_default_ipv4_route(gw).map_err(|_| invalid("route table full".into()))?;
        }
        // The reader starts last: nothing after it can fail but the host
        // thread's spawn, which stops it again.
        let (tx, rx) = mpsc::sync_channel(CHANNEL);
        let reader_stop = Arc::new(AtomicBool::new(false));
        let channel_full = Arc::new(AtomicU64::new(0));
        let reader = {
            let tx = tx.clone();
            let channel_full = Arc::clone(&channel_full);
            dev.wire.link().spawn_reader(format!("{}-rx", config.name), Arc::clone(&reader_stop), move |frame| {
                match tx.try_send(Event::Frame(frame)) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        channel_full.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(TrySendError::Disconnected(_)) => false,
                }
            })?
        };
        let stack = Stack {
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            epoch,
            mac: config.mac,
            addresses: config.addresses.clone(),
            conflicts: Vec::new(),
            conflict_arp_replies: 0,
            gratuitous_arps: 0,
            arp_probes: 0,
            echo_requests: 0,
            echo_replies: 0,
            arp_log: VecDeque::new(),
            arp_seq: 0,
            listeners: Vec::new(),
            records: VecDeque::new(),
            scratch: vec![0; 4096],
            next_port: 0,
            next_ident: (config.seed as u16) | 1,
            seed: config.seed,
        };
        let shared = Arc::new(Shared { stack: Mutex::new(stack), progress: Condvar::new(), stop: AtomicBool::new(false), channel_full });
        let shared2 = Arc::clone(&shared);
        let reader_stop2 = Arc::clone(&reader_stop);
        let main = thread::Builder::new().name(config.name.clone()).spawn(move || {
            run(&shared2, rx);
            reader_stop2.store(true, Ordering::Relaxed);
        });
        let main = match main {
            Ok(t) => t,
            Err(e) => {
                reader_stop.store(true, Ordering::Relaxed);
                let _ = reader.join();
                return Err(e);
            }
        };
        Ok(SimHost { shared, wake: tx, threads: vec![main, reader], name: config.name, mac: config.mac, addresses: config.addresses })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    pub fn addresses(&self) -> &[Cidr] {
        &self.addresses
    }

    /// Makes the host thread poll now (after a caller changed a socket).
    fn wake(&self) {
        let _ = self.wake.try_send(Event::Wake);
    }

    /// Poses as a live host holding `addr`: answers ARP requests for it from
    /// now on and sends one gratuitous ARP. (Only ARP: the address is not
    /// added to the stack.)
    pub fn announce_conflict(&self, addr: Ipv4Addr) {
        let mut s = self.shared.lock();
        if !s.conflicts.contains(&addr) {
            s.conflicts.push(addr);
        }
        let garp = Arp::gratuitous(s.mac, addr).to_frame();
        s.dev.wire.send(&garp);
        s.gratuitous_arps += 1;
    }

    /// Stops answering ARP for `addr` (see [`SimHost::announce_conflict`]).
    pub fn withdraw_conflict(&self, addr: Ipv4Addr) {
        self.shared.lock().conflicts.retain(|a| *a != addr);
    }

    /// Sends one gratuitous ARP for `addr` (e.g. after moving an address).
    pub fn gratuitous_arp(&self, addr: Ipv4Addr) {
        let mut s = self.shared.lock();
        let garp = Arp::gratuitous(s.mac, addr).to_frame();
        s.dev.wire.send(&garp);
        s.gratuitous_arps += 1;
    }

    /// Asks the LAN who has `addr` and returns the MAC of the first reply
    /// within `timeout`.
    pub fn arp_probe(&self, addr: Ipv4Addr, timeout: Duration) -> Option<Mac> {
        self.arp_ask(addr, timeout, true).into_iter().next()
    }

    /// Asks the LAN who has `addr` and returns every distinct MAC that
    /// answered within `window` (two means a conflict). Waits the whole window.
    pub fn arp_answers(&self, addr: Ipv4Addr, window: Duration) -> Vec<Mac> {
        self.arp_ask(addr, window, false)
    }

    fn arp_ask(&self, addr: Ipv4Addr, timeout: Duration, first_only: bool) -> Vec<Mac> {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.lock();
        let cursor = s.arp_seq;
        let sender = s.source_for(addr).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let ask = Arp::request(s.mac, sender, addr).to_frame();
        s.dev.wire.send(&ask);
        s.arp_probes += 1;
        let mut macs: Vec<Mac> = Vec::new();
        loop {
            for (_, arp) in s.arp_log.iter().filter(|(n, _)| *n > cursor) {
                if !arp.request && arp.sender_ip == addr && !macs.contains(&arp.sender_mac) {
                    macs.push(arp.sender_mac);
                }
            }
            if first_only && !macs.is_empty() {
                return macs;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return macs;
            };
            s = self.shared.wait(s, left);
        }
    }

    /// Every SYN and SYN-ACK seen at the NIC so far (the last 1024).
    pub fn syn_log(&self) -> Vec<SynRecord> {
        self.shared.lock().dev.wire.syn_log.iter().copied().collect()
    }

    /// A snapshot of the host's counters.
    pub fn counters(&self) -> HostCounters {
        let mut c = self.shared.lock().counters();
        c.rx_queue_full += self.shared.channel_full.load(Ordering::Relaxed);
        c
    }

    /// Stops the host and joins its threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.wake();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for SimHost {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("SimHost").field("name", &self.name).field("mac", &format_mac(self.mac)).field("addresses", &self.addresses).finish()
    }
}

/// The host thread: take frames, poll, tell waiting callers.
fn run(shared: &Shared, rx: Receiver<Event>) {
    let mut frames = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let delay = shared.lock().poll_delay().min(READ_SLICE);
        match rx.recv_timeout(delay) {
            Ok(Event::Frame(f)) => frames.push(f),
            Ok(Event::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while frames.len() < CHANNEL {
            match rx.try_recv() {
                Ok(Event::Frame(f)) => frames.push(f),
                Ok(Event::Wake) => {}
                Err(_) => break,
            }
        }
        {
            let mut s = shared.lock();
            for f in frames.drain(..) {
                s.intake(f);
            }
            s.poll();
        }
        shared.progress.notify_all();
    }
}

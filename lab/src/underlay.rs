//! The underlay: the internet between the two boxes' WAN ports.
//!
//! Each box's WAN NIC is an [`Attachment`]: the underlay plays the router at
//! the attachment's gateway address (it answers ARP for it) and routes IPv4
//! between attachments by destination address, like two access routers
//! joined by the internet. An attachment with a public address is behind
//! NAT, of one of two kinds:
//! - 1:1 ([`Attachment::with_public`]): its private address leaves as the
//!   public one and everything to the public one is rewritten back, as a
//!   cloud provider's edge does;
//! - masquerade ([`Attachment::with_masquerade`]): a home or ISP router —
//!   outbound flows open mappings (ports kept), inbound traffic gets in only
//!   on a mapped or forwarded port, and the private address cannot be
//!   reached from outside (see `nat.rs`).
//!
//! The router at the gateway can also run the site's services, as a home
//! router does: a DHCP server leasing the attachment's address to its box
//! ([`Attachment::with_dhcp_server`], `dhcp.rs`) and a DNS server answering
//! from a zone the whole underlay shares ([`Attachment::with_dns_server`],
//! [`UnderlayConfig::dns`], `dns.rs`).
//!
//! Contract:
//! - A frame to an attachment's public or (unless it masquerades) private
//!   address leaves on that attachment with the gateway's MAC as source, the
//!   box's MAC as destination and the TTL one lower; NAT rewrites addresses
//!   (never ports) and fixes the IPv4 header checksum and (RFC 1624, so a
//!   corrupt one stays corrupt) the UDP and TCP checksums. ICMP errors
//!   quoting a rewritten header are passed as they are.
//! - DHCP (to 67, broadcast or to the gateway) and DNS (to the gateway's
//!   port 53) are answered at once on the attachment they came from,
//!   without latency or loss: the site router is next to the box.
//! - Everything else is a counted drop, charged to the attachment it came in
//!   on; a send that fails is charged to the attachment it was leaving on.
//!   No panic on any input.
//! - Impairments (one-way latency, loss from a seeded generator), the
//!   public addresses and the DNS zone can be changed from any thread while
//!   it runs. Frames
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
//! and the router (`underlay/router.rs`), which owns all routing state. [`Underlay::stop`] (or drop)
//! stops and joins them and removes the socket files it bound.

mod router;

use crate::dhcp::{DhcpCounters, DhcpServerConfig};
use crate::dns::{self, DnsRecord};
use crate::link::{Link, LinkStats, SocketPair};
use crate::nat::PortForward;
use crate::{Cidr, Mac};
use router::Router;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

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
    /// The address the box has on the internet, e.g. 203.0.113.10 for a
    /// cloud VM whose private address is 10.0.0.4 (1:1 NAT unless
    /// `masquerade` is set).
    pub public: Option<Ipv4Addr>,
    /// Masquerade instead of 1:1 NAT, with these ports forwarded to the box.
    pub masquerade: Option<Vec<PortForward>>,
    /// The gateway leases `address` to the box by DHCP.
    pub dhcp_server: Option<DhcpServerConfig>,
    /// The gateway answers DNS from the underlay's zone.
    pub dns_server: bool,
    /// The box's MAC if known in advance; otherwise learned from its frames.
    pub box_mac: Option<Mac>,
    /// The gateway's MAC; a locally administered one per attachment if unset.
    pub gateway_mac: Option<Mac>,
}

impl Attachment {
    pub fn new(name: &str, port: SocketPair, address: Cidr, gateway: Ipv4Addr) -> Attachment {
        Attachment {
            name: name.to_string(),
            port,
            address,
            gateway,
            public: None,
            masquerade: None,
            dhcp_server: None,
            dns_server: false,
            box_mac: None,
            gateway_mac: None,
        }
    }

    /// The same attachment behind 1:1 NAT to `public`.
    pub fn with_public(mut self, public: Ipv4Addr) -> Attachment {
        self.public = Some(public);
        self.masquerade = None;
        self
    }

    /// The same attachment behind a masquerading router whose public
    /// address is `public`, forwarding `forwards` to the box.
    pub fn with_masquerade(mut self, public: Ipv4Addr, forwards: Vec<PortForward>) -> Attachment {
        self.public = Some(public);
        self.masquerade = Some(forwards);
        self
    }

    /// The gateway leases the attachment's address to the box (DHCP).
    pub fn with_dhcp_server(mut self, config: DhcpServerConfig) -> Attachment {
        self.dhcp_server = Some(config);
        self
    }

    /// The gateway answers DNS queries from the underlay's zone.
    pub fn with_dns_server(mut self) -> Attachment {
        self.dns_server = true;
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
    /// The zone every DNS server of the underlay answers from.
    pub dns: Vec<DnsRecord>,
}

impl UnderlayConfig {
    /// No impairments, seed 1, 1024-frame queues, an empty zone.
    pub fn new(attachments: Vec<Attachment>) -> UnderlayConfig {
        UnderlayConfig { attachments, seed: 1, queue_capacity: 1024, latency: Duration::ZERO, loss_percent: 0.0, dns: Vec::new() }
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
    /// To a masquerading router's public address, on a port with neither a
    /// live mapping nor a forward (or not UDP/TCP).
    NatNoMapping,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
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
        DropReason::NatNoMapping,
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
            DropReason::NatNoMapping => "nat_no_mapping",
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
/// `frames_in == arp_answered + served + routed + drops_in()`, where `drops_in()` is
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
    /// Frames a service of the gateway took (DHCP, DNS), answered or not.
    pub served: u64,
    /// The gateway's DHCP server.
    pub dhcp: DhcpCounters,
    /// DNS queries the gateway answered, and how.
    pub dns_queries: u64,
    pub dns_answered: u64,
    pub dns_nxdomain: u64,
    /// Masquerade: live mappings, and times a new public address flushed them.
    pub nat_mappings: u64,
    pub nat_flushes: u64,
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
        if self.served > 0 {
            write!(f, " served {}", self.served)?;
        }
        let d = &self.dhcp;
        if d.discovers + d.requests > 0 {
            write!(
                f,
                " dhcp discover/offer/request/ack/nak {}/{}/{}/{}/{} renewals {}",
                d.discovers, d.offers, d.requests, d.acks, d.naks, d.renewals
            )?;
        }
        if self.dns_queries > 0 {
            write!(f, " dns queries {} answered {} nxdomain {}", self.dns_queries, self.dns_answered, self.dns_nxdomain)?;
        }
        if self.nat_mappings + self.nat_flushes > 0 {
            write!(f, " nat mappings {} flushes {}", self.nat_mappings, self.nat_flushes)?;
        }
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
    dns: Vec<DnsRecord>,
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
                dns: config.dns.clone(),
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

    /// Points `name` at `address` in the zone (keeping its TTL, or with
    /// `ttl_secs` when new); `None` removes it, so it answers NXDOMAIN.
    pub fn set_dns_record(&self, name: &str, address: Option<Ipv4Addr>, ttl_secs: u32) {
        dns::set_record(&mut lock(&self.shared.settings).dns, name, address, ttl_secs);
    }

    /// The zone as it is now.
    pub fn dns_records(&self) -> Vec<DnsRecord> {
        lock(&self.shared.settings).dns.clone()
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

fn bump(counters: &mut [AttachmentCounters], at: usize, f: impl FnOnce(&mut AttachmentCounters)) {
    if let Some(c) = counters.get_mut(at) {
        f(c);
    }
}

impl fmt::Debug for Underlay {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Underlay").field("attachments", &self.names).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_percent_is_clamped() {
        assert_eq!(loss_ppm(10.0), 100_000);
        assert_eq!(loss_ppm(250.0), 1_000_000);
        assert_eq!(loss_ppm(-1.0), 0);
        assert_eq!(loss_ppm(f64::NAN), 0);
    }
}

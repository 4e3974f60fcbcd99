//! The loop: TAP ports and the WAN shim ⇄ the engine, on one tokio
//! current-thread runtime.
//!
//! Each turn reads the clock once, drains a bounded batch ([`BATCH`]) from
//! every TAP device, the WAN socket (one `recvmmsg`) and the WAN TUN device
//! into buffers allocated once at start (frame at `HEADROOM`), runs every
//! frame through [`Engine::process`], sends what comes out (TAP: one write
//! per frame; WAN: queued, one `sendmmsg` at the end of the turn), feeds the
//! shim's ARP answers back in, and runs [`Engine::poll`] when due or when
//! traffic moved. Between turns the task sleeps on fd readiness (`AsyncFd`),
//! the engine's `poll_at`, the periodic Linux check and DNS re-resolution,
//! and SIGINT/SIGTERM (clean stop) / SIGUSR1 (status). When a batch was full
//! the next turn starts after a `yield_now` instead of sleeping. No task and
//! no allocation per packet.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routerd_dataplane::{self as dp, FrameBuf, Instant, PortId, Transmit, Verdict};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use crate::engine::Engine;
use crate::linux::{self, LinuxFindings};
use crate::setup::{DnsPeer, Prepared};
use crate::tap;
use crate::wan::Wan;

/// Frames taken from one fd per turn (and slots per `recvmmsg`).
pub const BATCH: usize = crate::wan::BATCH;
/// Re-resolve a DNS peer when no handshake succeeded for this long.
pub const RERESOLVE_AFTER: Duration = Duration::from_secs(120);
/// Retry an endpoint that never resolved this often.
pub const RESOLVE_RETRY: Duration = Duration::from_secs(30);

/// Counters of the TAP side (the WAN shim has its own).
#[derive(Debug, Clone, Copy, Default)]
pub struct TapCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_errors: u64,
    pub rx_oversize: u64,
    /// The kernel did not take a frame (queue full, device down).
    pub tx_errors: u64,
}

/// The ports as the dataplane's transmit side sees them.
struct Ports {
    taps: Vec<Option<AsyncFd<tap::Device>>>,
    wan: Wan,
    wan_port: PortId,
    counters: TapCounters,
}

impl Transmit for Ports {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        if port == self.wan_port {
            return self.wan.transmit(frame);
        }
        let Some(Some(t)) = self.taps.get(port.index()) else { return false };
        match t.get_ref().send(frame) {
            Ok(_) => {
                self.counters.tx_frames += 1;
                true
            }
            Err(_) => {
                self.counters.tx_errors += 1;
                false
            }
        }
    }
}

struct DnsState {
    peer: DnsPeer,
    last_attempt: std::time::Instant,
}

type DnsJob = JoinHandle<(usize, Result<SocketAddr, String>)>;

/// Options of the loop.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Seconds between Linux checks.
    pub linux_every: Duration,
    /// Remove captured addresses the OS holds (else report only).
    pub enforce: bool,
}

/// Everything the loop owns.
pub struct Router {
    engine: Engine,
    ports: Ports,
    port_names: Vec<String>,
    bufs: Vec<[u8; dp::BUF_SIZE]>,
    lens: Vec<usize>,
    start: std::time::Instant,
    dns: Vec<DnsState>,
    captured: Vec<Ipv4Addr>,
    opts: LoopOptions,
    findings: LinuxFindings,
}

impl Router {
    /// Build the engine and the ports from a prepared configuration.
    pub fn new(p: Prepared, key: routerd_wireguard::SecretKey, opts: LoopOptions) -> Result<Router, String> {
        let start = std::time::Instant::now();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let engine = Engine::new(p.runtime, key, Instant::ZERO, wall)?;
        let mut taps = Vec::new();
        let mut port_names = Vec::new();
        for port in p.ports {
            port_names.push(port.name);
            taps.push(match port.tap {
                Some(t) => Some(tap::register(t).map_err(|e| format!("register TAP: {e}"))?),
                None => None,
            });
        }
        let dns = p.dns_peers.into_iter().map(|peer| DnsState { peer, last_attempt: start }).collect();
        Ok(Router {
            engine,
            ports: Ports { taps, wan: p.wan, wan_port: PortId(p.wan_port as u8), counters: TapCounters::default() },
            port_names,
            bufs: vec![[0u8; dp::BUF_SIZE]; BATCH],
            lens: vec![0; BATCH],
            start,
            dns,
            captured: p.captured_secondary,
            opts,
            findings: LinuxFindings::default(),
        })
    }

    /// The engine (public key, status).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The last Linux findings.
    pub fn findings(&self) -> &LinuxFindings {
        &self.findings
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as u64)
    }

    fn tokio_deadline(&self, t: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start) + Duration::from_millis(t.millis())
    }

    /// Runs until SIGINT or SIGTERM.
    pub async fn run(&mut self) -> io::Result<()> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigusr1 = signal(SignalKind::user_defined1())?;
        let mut linux_job: Option<JoinHandle<LinuxFindings>> = None;
        let mut dns_job: Option<DnsJob> = None;
        let mut next_linux = tokio::time::Instant::now();
        let mut next_dns_check = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut busy = false;
        loop {
            if busy {
                // A batch was full: let the runtime look at its fds, timers
                // and signals, then go on without sleeping.
                tokio::task::yield_now().await;
            }
            let poll_at = self.engine.poll_at().map(|t| self.tokio_deadline(t));
            let wake = [poll_at, Some(next_linux), Some(next_dns_check)].into_iter().flatten().min();
            let wake = wake.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let Ports { taps, wan, .. } = &self.ports;
            let readable = std::future::poll_fn(|cx| {
                let mut any = false;
                for t in taps.iter().flatten() {
                    if let Poll::Ready(r) = t.poll_read_ready(cx) {
                        if let Ok(mut g) = r {
                            g.clear_ready();
                        }
                        any = true;
                    }
                }
                if let Poll::Ready(r) = wan.socket_fd().poll_read_ready(cx) {
                    if let Ok(mut g) = r {
                        g.clear_ready();
                    }
                    any = true;
                }
                if let Some(t) = wan.tun_fd() {
                    if let Poll::Ready(r) = t.poll_read_ready(cx) {
                        if let Ok(mut g) = r {
                            g.clear_ready();
                        }
                        any = true;
                    }
                }
                if any {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            tokio::select! {
                biased;
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = sigusr1.recv() => eprint!("{}", self.status_text()),
                r = async { linux_job.as_mut().expect("guarded").await }, if linux_job.is_some() => {
                    linux_job = None;
                    match r {
                        Ok(f) => self.take_findings(f),
                        Err(e) => log::warn!("linux check failed: {e}"),
                    }
                }
                r = async { dns_job.as_mut().expect("guarded").await }, if dns_job.is_some() => {
                    dns_job = None;
                    if let Ok((i, result)) = r {
                        self.resolved(i, result);
                    }
                }
                _ = std::future::ready(()), if busy => {}
                _ = readable, if !busy => {}
                _ = tokio::time::sleep_until(wake), if !busy => {}
            }
            let now = self.now();
            busy = self.turn(now);
            let t = tokio::time::Instant::now();
            if t >= next_linux && linux_job.is_none() {
                next_linux = t + self.opts.linux_every;
                let (captured, enforce, prev) = (self.captured.clone(), self.opts.enforce, self.findings.clone());
                linux_job = Some(tokio::task::spawn_blocking(move || linux::check(&captured, enforce, &prev)));
            }
            if t >= next_dns_check {
                next_dns_check = t + Duration::from_secs(5);
                if dns_job.is_none() {
                    dns_job = self.dns_due(now);
                }
            }
        }
        if let Some(j) = linux_job {
            // Let a check in flight finish (it may have just removed an
            // address) so the final status reports it; bounded.
            if let Ok(Ok(f)) = tokio::time::timeout(Duration::from_secs(8), j).await {
                self.take_findings(f);
            }
        }
        if let Some(j) = dns_job {
            j.abort();
        }
        Ok(())
    }

    /// One turn over every fd. True when a batch was full (more waiting).
    fn turn(&mut self, now: Instant) -> bool {
        let Router { engine, ports, bufs, lens, .. } = self;
        let mut more = false;
        let mut moved = false;
        let wan_port = ports.wan_port;
        for p in 0..ports.taps.len() {
            let Some(Some(tap)) = ports.taps.get(p) else { continue };
            let mut count = 0;
            for (buf, len) in bufs.iter_mut().zip(lens.iter_mut()) {
                let Some(area) = buf.get_mut(dp::HEADROOM..dp::BUF_SIZE - dp::TAILROOM) else { break };
                match tap.get_ref().recv(area) {
                    Ok(n) => {
                        *len = n;
                        count += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        ports.counters.rx_errors += 1;
                        break;
                    }
                }
            }
            more |= count == bufs.len();
            moved |= count > 0;
            let port = PortId(p as u8);
            for i in 0..count {
                let (Some(buf), Some(&len)) = (bufs.get_mut(i), lens.get(i)) else { continue };
                ports.counters.rx_frames += 1;
                if len > dp::MAX_FRAME {
                    ports.counters.rx_oversize += 1;
                    continue;
                }
                process(engine, ports, now, port, buf, len);
            }
        }
        let (count, drained) = ports.wan.receive(bufs, lens);
        more |= !drained;
        moved |= count > 0;
        for i in 0..count {
            let (Some(buf), Some(&len)) = (bufs.get_mut(i), lens.get(i)) else { continue };
            if len > 0 {
                process(engine, ports, now, wan_port, buf, len);
            }
        }
        let (count, drained) = ports.wan.receive_tun(bufs, lens);
        more |= !drained;
        moved |= count > 0;
        for i in 0..count {
            let (Some(buf), Some(&len)) = (bufs.get_mut(i), lens.get(i)) else { continue };
            if len > 0 {
                process(engine, ports, now, wan_port, buf, len);
            }
        }
        feed_arp(engine, ports, now, bufs);
        let due = engine.poll_at().is_some_and(|t| t <= now);
        if due || moved {
            engine.poll(now, ports);
            feed_arp(engine, ports, now, bufs);
        }
        ports.wan.flush();
        more
    }

    fn take_findings(&mut self, f: LinuxFindings) {
        let first = self.findings.checks == 0;
        if first || f.ip_forward != self.findings.ip_forward {
            match f.ip_forward {
                Some(true) => log::info!("linux: net.ipv4.ip_forward = 1"),
                Some(false) => log::warn!(
                    "linux: net.ipv4.ip_forward = 0 (fine for routerd-host itself; the kernel will not forward for a --wan-tun path)"
                ),
                None => {}
            }
        }
        if first || f.forward_drop_policies != self.findings.forward_drop_policies || f.forward_terminal_rules != self.findings.forward_terminal_rules {
            for p in &f.forward_drop_policies {
                log::warn!("linux: forward path drop policy: {p}");
            }
            for r in &f.forward_terminal_rules {
                log::warn!("linux: forward path terminal rule: {r}");
            }
        }
        if first {
            for e in &f.errors {
                log::warn!("linux: could not check: {e}");
            }
        }
        self.findings = f;
    }

    /// Start one DNS lookup if a DNS peer is due.
    fn dns_due(&mut self, now: Instant) -> Option<DnsJob> {
        let wall = std::time::Instant::now();
        for (i, d) in self.dns.iter_mut().enumerate() {
            let stale = self
                .engine
                .peer(d.peer.peer, now)
                .is_none_or(|v| v.since_handshake_ms.is_none_or(|ms| ms > RERESOLVE_AFTER.as_millis() as u64));
            let every = if d.peer.resolved.is_some() { RERESOLVE_AFTER } else { RESOLVE_RETRY };
            if stale && wall.duration_since(d.last_attempt) >= every {
                d.last_attempt = wall;
                let (host, port) = (d.peer.host.clone(), d.peer.port);
                return Some(tokio::task::spawn_blocking(move || (i, crate::setup::resolve(&host, port))));
            }
        }
        None
    }

    fn resolved(&mut self, i: usize, result: Result<SocketAddr, String>) {
        let Some(d) = self.dns.get_mut(i) else { return };
        match result {
            Err(e) => log::warn!("peer {}: re-resolving failed: {e}", d.peer.name),
            Ok(real) => {
                let Some(v4) = self.ports.wan.dataplane_endpoint(real) else {
                    log::warn!("peer {}: {} resolves to {real}, which this socket cannot reach", d.peer.name, d.peer.host);
                    return;
                };
                let changed = d.peer.resolved != Some(real);
                d.peer.resolved = Some(real);
                match self.engine.set_endpoint(d.peer.peer, SocketAddr::V4(v4)) {
                    Ok(()) if changed => log::info!("peer {}: {} now resolves to {real}; endpoint updated", d.peer.name, d.peer.host),
                    Ok(()) => log::debug!("peer {}: {} still resolves to {real}", d.peer.name, d.peer.host),
                    Err(e) => log::warn!("peer {}: endpoint update refused: {e}", d.peer.name),
                }
            }
        }
    }

    /// Everything worth printing: engine, ports, shim, Linux.
    pub fn status_text(&mut self) -> String {
        use std::fmt::Write as _;
        let now = self.now();
        let mut s = format!("status at {} ms\n", now.millis());
        s.push_str(&self.engine.status(now, &self.port_names));
        let t = self.ports.counters;
        let _ = writeln!(
            s,
            "  taps: rx {} frames, tx {} frames, rx errors {}, rx oversize {}, tx errors {}",
            t.rx_frames, t.tx_frames, t.rx_errors, t.rx_oversize, t.tx_errors
        );
        let w = self.ports.wan.counters;
        let _ = writeln!(
            s,
            "  wan socket: rx {} datagrams, tx {} datagrams, arp answered {}, tun rx {} tx {}",
            w.rx_datagrams, w.tx_datagrams, w.arp_answered, w.tun_rx, w.tun_tx
        );
        for (name, n) in w.drops() {
            if n > 0 {
                let _ = writeln!(s, "  wan drop {name}: {n}");
            }
        }
        for d in &self.dns {
            let real = d.peer.resolved.map(|a| self.ports.wan.real_endpoint(a));
            let _ = writeln!(s, "  dns peer {}: {} → {:?}", d.peer.name, d.peer.host, real);
        }
        let f = &self.findings;
        let _ = writeln!(
            s,
            "  linux: checks {}, ip_forward {:?}, captured addresses held at the last check {}, removed since start {}, last event {:?}",
            f.checks,
            f.ip_forward,
            f.held.len(),
            f.removals_total,
            f.last_event
        );
        s
    }
}

/// One frame through the engine; what comes out goes to its port.
fn process(engine: &mut Engine, ports: &mut Ports, now: Instant, port: PortId, buf: &mut [u8], len: usize) {
    let Ok(mut fb) = FrameBuf::new(buf, dp::HEADROOM, len) else { return };
    if let Verdict::Transmit(out) = engine.process(now, port, &mut fb, ports) {
        let _ = ports.send(out, fb.frame());
    }
}

/// Feed the shim's ARP answers into the WAN port (bounded: the answers can
/// release parked frames, which can ask again at most once per next hop).
fn feed_arp(engine: &mut Engine, ports: &mut Ports, now: Instant, bufs: &mut [[u8; dp::BUF_SIZE]]) {
    let wan_port = ports.wan_port;
    for _ in 0..32 {
        let Some(reply) = ports.wan.pop_arp() else { return };
        let Some(buf) = bufs.first_mut() else { return };
        let Some(dst) = buf.get_mut(dp::HEADROOM..dp::HEADROOM + reply.len()) else { return };
        dst.copy_from_slice(&reply);
        process(engine, ports, now, wan_port, buf, reply.len());
    }
}

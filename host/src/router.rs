//! The loop: routerd-host's NICs ⇄ the node's dataplane, on one tokio
//! current-thread runtime.
//!
//! The router owns a `routerd_control::Node` — the same control plane the
//! image runs: configuration, key slots, dataplane and WireGuard, atomic
//! plan/apply — and the ports opened at start (NIC `i` is
//! `Opened::ports[i]`; the running configuration binds its ports to them by
//! MAC): a TAP device per LAN port and the WAN's UDP socket, a datagram
//! NIC ([`crate::nic`], [`crate::wan`]). Each turn is the image's
//! forwarding turn (`routerd_control::Forwarder::turn`) over those NICs at
//! one clock reading: a bounded batch from every NIC lent in the NIC's own
//! receive buffers, every frame through the dataplane where it was read,
//! the services, the dataplane's timers, the WAN's queued datagrams out
//! with one `sendmmsg`. Between turns the task sleeps on fd readiness
//! (`AsyncFd`), the dataplane's and the services' `poll_at` (BGP and its
//! TCP), the periodic Linux check, DNS re-resolution, a control-socket
//! request ([`crate::control`]), and
//! SIGINT/SIGTERM (clean stop) / SIGUSR1 (status). After a turn that moved
//! frames the next starts after a `yield_now` instead of sleeping. No task
//! and no allocation per packet.
//!
//! With `--state-dir` ([`crate::state`]) the node starts from the saved
//! record — keys, then the saved configuration through the normal apply;
//! `--config` then only names the ports to open, and is applied only when
//! the store holds no configuration — and every change is saved before the
//! control socket's answer goes back. An existing `--key-file` (and the
//! `NAME.psk` files beside it) is imported into the store once, for a slot
//! the store has no key for; from then on the store is the only copy
//! written. Without `--state-dir` the key files are the memory, as before.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use config_schema::{Config, KeyRef, Name};
use rand_core::OsRng;
use routerd_control::persist::SavedKey;
use routerd_control::{Event, Forwarder, NicSnapshot, Node, Saved};
use routerd_dataplane::Instant;
use routerd_netdev::NetDevice;
use routerd_provision::message::{self as msg, text, text_fmt, Failure, FailureKind, Op, Reply};
use routerd_wireguard::{self as wg, SecretKey};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::control::{Call, BUILD, SOFTWARE};
use crate::evpn::EvpnLog;
use crate::linux::{self, LinuxFindings};
use crate::nic::{HostNic, Ports, TapNic};
use crate::setup::{self, DnsCache, DnsPeer, Opened};
use crate::state::{self, State};
use crate::wan::WanNic;
use routerd_control::dns::{NameClock, Policy};

/// Re-resolve a DNS peer when no handshake succeeded for this long (the
/// default of `--reresolve-after`; WireGuard rekeys every 120 s).
pub const RERESOLVE_AFTER: Duration = Duration::from_secs(120);
/// Retry an endpoint that never resolved this often (at most).
pub const RESOLVE_RETRY: Duration = Duration::from_secs(30);
/// How often DNS peers are looked at.
const DNS_TICK: Duration = Duration::from_secs(5);

/// Options of the loop.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Seconds between Linux checks.
    pub linux_every: Duration,
    /// Remove captured addresses the OS holds and install missing delivery
    /// routes (else report only).
    pub enforce: bool,
    /// Where the tunnel's private key is kept across restarts; a key made
    /// or imported over the control socket is written back.
    pub key_file: Option<PathBuf>,
    /// Re-resolve a DNS endpoint after this long without a handshake.
    pub reresolve_after: Duration,
}

impl LoopOptions {
    /// The image's re-resolve policy with this loop's `--reresolve-after`
    /// (failures retried every 30 s at most, never less often than that).
    fn policy(&self) -> Policy {
        let after = self.reresolve_after.as_millis() as u64;
        Policy { reresolve_after_ms: after, retry_ms: (RESOLVE_RETRY.as_millis() as u64).min(after), ..Policy::DEFAULT }
    }
}

/// Everything the loop owns.
pub struct Router {
    node: Node<OsRng>,
    ports: Ports,
    opened: Opened,
    fwd: Box<Forwarder<{ crate::wan::BATCH }>>,
    start: std::time::Instant,
    dns: Vec<DnsState>,
    dns_cache: DnsCache,
    captured: Vec<Ipv4Addr>,
    opts: LoopOptions,
    findings: LinuxFindings,
    device: watch::Sender<String>,
    /// The public key of what `key_file` holds.
    key_on_disk: Option<wg::PublicKey>,
    /// The preshared keys in the files beside `key_file`, by slot.
    psks_on_disk: Vec<(Name, wg::PresharedKey)>,
    /// Run the Linux checks now (the claims changed).
    recheck: bool,
    /// `--state-dir`'s store; without it the key files are written.
    state: Option<State>,
    /// The wall clock at `Instant::ZERO` and where it came from.
    clock: (Duration, &'static str),
    /// What was logged about BGP sessions and EVPN segments.
    evpn: EvpnLog,
}

impl Router {
    /// Start the node on the opened ports with `cfg` (and `key`, from the
    /// key file, in the tunnel's slot), or from `state`'s record (see the
    /// module comment). DNS names are resolved first (blocking).
    pub fn new(
        mut opened: Opened,
        wan: WanNic,
        cfg: Config,
        key: Option<SecretKey>,
        opts: LoopOptions,
        state: Option<(State, Option<Saved>)>,
    ) -> Result<Router, String> {
        let start = std::time::Instant::now();
        let mut nics = Vec::new();
        let mut wan = Some(wan);
        for (i, port) in opened.ports.iter_mut().enumerate() {
            nics.push(match port.tap.take() {
                _ if i == opened.wan_port => wan.take().map(HostNic::Wan),
                Some(t) => Some(HostNic::Tap(TapNic::new(t, port.mac).map_err(|e| format!("register TAP: {e}"))?)),
                None => None,
            });
        }
        let mut node = Node::new(&opened.nics(), Some(OsRng), SOFTWARE, BUILD);
        node.set_platform(config_schema::Platform::Host);
        let (state, mut saved) = match state {
            Some((s, saved)) => (Some(s), saved),
            None => (None, None),
        };
        // Initiation timestamps must grow across restarts.
        let system = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let clock = state::start_clock(system, saved.as_ref().and_then(|s| s.wall_clock_ms));
        if clock.1 != "system" {
            log::warn!("clock: the system clock is behind the saved floor (set back?); WireGuard timestamps start at the floor + 30 min");
        }
        node.set_wall_clock(Instant::ZERO, clock.0);
        // The slots of the configuration that will run: the saved one, else --config.
        let running = saved.as_ref().and_then(|s| s.config.as_deref()).unwrap_or(&cfg);
        let tunnel = tunnel_slot(running);
        let mut psk_slots: Vec<Name> = Vec::new();
        for slot in running.peers.iter().filter_map(|p| p.preshared_key.as_ref()).map(|KeyRef::Device(s)| s) {
            if !psk_slots.contains(slot) {
                psk_slots.push(slot.clone());
            }
        }
        let key_on_disk = key.as_ref().map(SecretKey::public_key);
        let key_file = opts.key_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        let into_store = if state.is_some() { ", imported into the store (the store keeps it from now on)" } else { "" };
        match saved.as_mut() {
            // A store with a record: a key file fills only slots it lacks.
            Some(rec) => {
                if let (Some(k), Some(slot)) = (&key, &tunnel) {
                    if !rec.keys.iter().any(|s| &s.name == slot) {
                        let k = SavedKey { name: slot.clone(), kind: msg::KeyKind::Private, secret: k.to_bytes(), generated: false };
                        if rec.keys.push(k).is_ok() {
                            log::info!("wg: {slot} key read from {key_file}{into_store}");
                        }
                    }
                }
            }
            None => {
                if let (Some(k), Some(slot)) = (&key, &tunnel) {
                    if let Reply::Error(f) = node.handle(Instant::ZERO, Op::KeyImport(slot.clone(), k.to_bytes()), &[]) {
                        return Err(f.to_string());
                    }
                    if state.is_some() {
                        log::info!("wg: {slot} key read from {key_file}{into_store}");
                    }
                }
            }
        }
        // The peers' preshared keys kept beside the key file; a slot without
        // a file is made by the apply below and written there (or kept in
        // the store).
        let mut psks_on_disk = Vec::new();
        for slot in &psk_slots {
            let Some(path) = opts.key_file.as_deref().map(|f| crate::key::psk_path(f, slot)) else { break };
            if saved.as_ref().is_some_and(|rec| rec.keys.iter().any(|k| &k.name == slot)) {
                continue;
            }
            let Some(psk) = crate::key::load_psk(&path).map_err(|e| e.message)? else { continue };
            match saved.as_mut() {
                Some(rec) => {
                    let k = SavedKey { name: slot.clone(), kind: msg::KeyKind::Preshared, secret: psk.0, generated: false };
                    let _ = rec.keys.push(k);
                }
                None => {
                    if let Reply::Error(f) = node.handle(Instant::ZERO, Op::PresharedKeyImport(slot.clone(), psk.0), &[]) {
                        return Err(format!("{}: {f}", path.display()));
                    }
                }
            }
            log::info!("wg: preshared key {slot} read from {}{into_store}", path.display());
            psks_on_disk.push((slot.clone(), psk));
        }
        let mut dns_cache = setup::resolve_all(&cfg);
        if let Some(c) = saved.as_ref().and_then(|s| s.config.as_deref()) {
            dns_cache.extend(setup::resolve_all(c));
        }
        let ports = Ports { nics, wan_nic: opened.wan_port };
        let mut r = Router {
            node,
            ports,
            opened,
            fwd: Box::new(Forwarder::with_batch()),
            start,
            dns: Vec::new(),
            dns_cache,
            captured: Vec::new(),
            opts,
            findings: LinuxFindings::default(),
            device: watch::channel(String::new()).0,
            key_on_disk,
            psks_on_disk,
            recheck: false,
            state,
            clock,
            evpn: EvpnLog::default(),
        };
        let apply_start = match saved {
            Some(rec) => {
                let (generation, boots, had_config) = (rec.generation, rec.boots, rec.config.is_some());
                let reply = r.restore(rec);
                if let Some(s) = r.state.as_mut() {
                    s.restored(generation, boots);
                }
                match reply {
                    Reply::Applied(_) => {
                        log::info!(
                            "state: restored configuration generation {generation} (start {}); --config only opened the ports",
                            boots + 1
                        );
                        r.reconfigured();
                        false
                    }
                    Reply::Error(f) => {
                        log::warn!("state: keys restored; the saved configuration was refused ({f}); applying --config instead");
                        true
                    }
                    _ if !had_config => {
                        log::info!("state: keys restored; no configuration was saved: applying --config");
                        true
                    }
                    _ => true,
                }
            }
            None => true,
        };
        if apply_start {
            match r.apply(Box::new(cfg)) {
                Reply::Applied(_) => {}
                Reply::Error(f) => return Err(f.to_string()),
                other => return Err(format!("unexpected answer to the start configuration: {other:?}")),
            }
        }
        r.poll_state();
        Ok(r)
    }

    /// Take back a saved record through the platform's bind (the image's
    /// `Node::restore`: keys first, then the configuration's apply).
    fn restore(&mut self, saved: Saved) -> Reply {
        let now = self.now();
        let dual_stack = self.dual_stack();
        let Router { node, opened, dns_cache, .. } = self;
        let mut bind =
            |c: &Config| setup::bind(c, opened, dual_stack, dns_cache).map(Some).map_err(|m| Failure::refused(format_args!("{m}")));
        node.restore_with(saved, now, &mut bind)
    }

    /// Save (or erase) when the node says so, or when the clock floor is due.
    fn poll_state(&mut self) {
        let now = self.now();
        if let Some(s) = self.state.as_mut() {
            s.poll(&mut self.node, now);
        } else {
            let _ = self.node.take_unsaved();
            let _ = self.node.take_erase();
        }
    }

    /// Where the state is kept (`--state-dir`), if anywhere.
    pub fn state_path(&self) -> Option<&std::path::Path> {
        self.state.as_ref().map(State::path)
    }

    /// The public key the tunnel uses.
    pub fn public_key(&mut self) -> Option<wg::PublicKey> {
        self.node.wireguard().map(|w| w.public_key())
    }

    /// The running configuration's device name, for the control socket.
    pub fn device_name(&self) -> watch::Receiver<String> {
        self.device.subscribe()
    }

    /// The last Linux findings.
    pub fn findings(&self) -> &LinuxFindings {
        &self.findings
    }

    /// Whether the WAN socket carries IPv6.
    fn dual_stack(&self) -> bool {
        self.ports.wan().is_some_and(WanNic::dual_stack)
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as u64)
    }

    fn tokio_deadline(&self, t: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start) + Duration::from_millis(t.millis())
    }

    fn apply(&mut self, cfg: Box<Config>) -> Reply {
        self.control(Op::Apply(cfg))
    }

    /// One provisioning request, as the control socket passes it on.
    pub fn control(&mut self, op: Op) -> Reply {
        if let Op::Reboot = op {
            return Reply::Error(Failure::new(
                FailureKind::Refused,
                "routerd-host does not reboot the machine it runs on; restart the service instead (e.g. systemctl restart routerd-host)",
            ));
        }
        if let Op::StorageInit { .. } = op {
            return Reply::Error(Failure::new(
                FailureKind::Refused,
                "storage: routerd-host has no disks to initialise; start it with --state-dir DIR to keep its state in DIR/state",
            ));
        }
        let changes = matches!(
            op,
            Op::Apply(_)
                | Op::ApplyConfirm { .. }
                | Op::Rollback { dry_run: false, .. }
                | Op::Confirm
                | Op::FactoryReset { .. }
                | Op::ClaimAdd(_)
                | Op::ClaimRemove(_)
                | Op::KeyGenerate(_)
                | Op::KeyImport(..)
                | Op::PresharedKeyGenerate(_)
                | Op::PresharedKeyImport(..)
        );
        let now = self.now();
        let snaps = self.snapshots();
        let dual_stack = self.dual_stack();
        let Router { node, opened, dns_cache, .. } = self;
        let mut bind =
            |c: &Config| setup::bind(c, opened, dual_stack, dns_cache).map(Some).map_err(|m| Failure::refused(format_args!("{m}")));
        let mut reply = node.handle_with(now, op, &snaps, &mut bind);
        if changes && matches!(reply, Reply::Applied(_) | Reply::Keys(_)) {
            self.reconfigured();
        }
        // What changed is in the store before the answer goes back.
        self.poll_state();
        if let Reply::Status(st) = &mut reply {
            st.host = Some(self.host_report());
            st.storage = Some(self.state.as_ref().map_or_else(state::no_state_status, |s| s.status(now)));
            let wall = u64::try_from(self.clock.0.as_millis()).unwrap_or(u64::MAX).saturating_add(now.millis());
            (st.wall_clock_ms, st.clock_source) = (Some(wall), text(self.clock.1));
        }
        reply
    }

    /// A commit-confirm that ran out reverts on the dot, bound like an apply
    /// over the control socket.
    fn expire_confirm(&mut self, now: Instant) {
        if self.node.confirm_deadline().is_none_or(|d| now < d) {
            return;
        }
        let dual_stack = self.dual_stack();
        let Router { node, opened, dns_cache, .. } = self;
        let mut bind =
            |c: &Config| setup::bind(c, opened, dual_stack, dns_cache).map(Some).map_err(|m| Failure::refused(format_args!("{m}")));
        node.expire_with(now, &mut bind);
        self.reconfigured();
        self.poll_state();
    }

    /// After a configuration or key change: what the loop derives from the
    /// running configuration, and the key file.
    fn reconfigured(&mut self) {
        let Some(cfg) = self.node.config() else { return };
        let now = self.now();
        let old = std::mem::take(&mut self.dns);
        self.dns = setup::dns_peers(cfg, &self.dns_cache)
            .into_iter()
            .map(|peer| {
                // A name already being tracked keeps its schedule; one
                // resolved at start counts from now; a new unresolved one
                // is tried at the next check.
                let clock = old.iter().find(|d| d.peer.host == peer.host).map(|d| d.clock).unwrap_or(NameClock {
                    resolved_at: peer.resolved.map(|_| now),
                    ttl_secs: None,
                    attempted_at: peer.resolved.map(|_| now),
                });
                DnsState { peer, clock }
            })
            .collect();
        let captured = setup::captured_secondary(cfg);
        self.recheck |= captured != self.captured;
        self.captured = captured;
        self.evpn.configured(cfg);
        let name = cfg.device.name.as_str().to_string();
        let slot = tunnel_slot(cfg);
        self.device.send_replace(name);
        if self.state.is_none() {
            self.persist_key(slot);
            self.persist_psks();
        }
    }

    /// Write each preshared key that changed (made on apply, `routerctl key
    /// psk generate|import`) to its file beside `--key-file` (as
    /// [`Router::persist_key`]). Without `--key-file` they live in RAM only.
    fn persist_psks(&mut self) {
        let Some(key_file) = self.opts.key_file.clone() else { return };
        for (slot, psk) in self.node.preshared_keys() {
            if self.psks_on_disk.iter().any(|(s, k)| s == slot && k == psk) {
                continue;
            }
            let path = crate::key::psk_path(&key_file, slot);
            match crate::key::store_psk(&path, psk) {
                Ok(()) => {
                    log::info!("wg: preshared key {slot} written to {}", path.display());
                    self.psks_on_disk.retain(|(s, _)| s != slot);
                    self.psks_on_disk.push((slot.clone(), psk.clone()));
                }
                Err(e) => log::error!("wg: {}: the preshared key is in use but could not be saved: {}", path.display(), e.message),
            }
        }
    }

    /// Write the tunnel's key to `--key-file` when it changed (made on
    /// apply, `routerctl key generate`, `key import`). Atomic: a temporary
    /// file (0600) renamed over the old one.
    fn persist_key(&mut self, slot: Option<Name>) {
        let (Some(path), Some(slot)) = (self.opts.key_file.clone(), slot) else { return };
        let Some(secret) = self.node.key_secret(&slot) else { return };
        let public = secret.public_key();
        if self.key_on_disk == Some(public) {
            return;
        }
        match crate::key::store(&path, secret) {
            Ok(()) => {
                log::info!("wg: {} key written to {} (public key {})", slot.as_str(), path.display(), public.to_base64().as_str());
                self.key_on_disk = Some(public);
            }
            Err(e) => log::error!("wg: {}: the new key is in use but could not be saved: {}", path.display(), e.message),
        }
    }

    fn set_endpoint(&mut self, peer: u16, real: SocketAddr) {
        if setup::endpoint(real, self.dual_stack()).is_none() {
            log::warn!("peer {peer}: {real} cannot be reached from this socket (IPv6 on an IPv4-only socket)");
            return;
        }
        if let Some(w) = self.node.wireguard() {
            if let Err(e) = w.set_endpoint(wg::PeerId(peer), Some(real)) {
                log::warn!("peer {peer}: endpoint update refused: {e:?}");
            }
        }
    }

    /// The NICs for status, in `Opened::ports` order.
    fn snapshots(&mut self) -> Vec<NicSnapshot> {
        self.ports
            .nics
            .iter_mut()
            .map(|n| match n {
                Some(n) => {
                    let st = n.stats();
                    NicSnapshot {
                        link_up: n.link_up(),
                        rx_frames: st.rx_frames,
                        tx_frames: st.tx_frames,
                        rx_errors: st.rx_errors,
                        tx_ring_full: st.tx_ring_full,
                        rx_loans_out: st.rx_loans_out,
                        rx_foreign_loans: st.rx_foreign_loans,
                    }
                }
                None => NicSnapshot::default(),
            })
            .collect()
    }

    /// The Linux findings for status and `doctor hybrid`.
    fn host_report(&self) -> msg::HostReport {
        let f = &self.findings;
        let mut h = msg::HostReport {
            checks: f.checks,
            ip_forward: f.ip_forward,
            wan_socket: match self.ports.wan().map(WanNic::local_addr) {
                Some(Ok(a)) => text_fmt(format_args!("{a}")),
                _ => text(""),
            },
            wan_tun: text(self.ports.wan().and_then(WanNic::tun_name).unwrap_or("")),
            removals: f.removals_total,
            last_event: text(f.last_event.as_deref().unwrap_or("")),
            firewalls: text(&f.firewalls_checked.join(" ")),
            ..msg::HostReport::default()
        };
        for x in f.held.iter().filter(|x| x.removal.is_err()) {
            let _ = h.held.push(msg::HeldAddress { address: x.address, interface: text(&x.interface), removed: false, seconds_ago: 0 });
        }
        // Newest first: what is still happening matters most.
        for r in f.recent_removals.iter().rev() {
            let _ = h.held.push(msg::HeldAddress {
                address: r.address,
                interface: text(&r.interface),
                removed: true,
                seconds_ago: r.at.elapsed().as_secs(),
            });
        }
        for r in &f.routes {
            let _ = h.routes.push(msg::DeliveryRoute { address: r.address, ok: r.ok, detail: text(&r.detail) });
        }
        for d in f.forward_drop_policies.iter().chain(&f.forward_terminal_rules) {
            if h.forward_drops.push(text(d)).is_err() {
                h.forward_drops_omitted = h.forward_drops_omitted.saturating_add(1);
            }
        }
        for e in &f.errors {
            let _ = h.errors.push(text(e));
        }
        h
    }

    /// Runs until SIGINT or SIGTERM; `calls` are the control socket's.
    pub async fn run(&mut self, mut calls: Option<mpsc::Receiver<Call>>) -> io::Result<()> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigusr1 = signal(SignalKind::user_defined1())?;
        let mut linux_job: Option<JoinHandle<LinuxFindings>> = None;
        let mut dns_job: Option<DnsJob> = None;
        let mut next_linux = tokio::time::Instant::now();
        let dns_tick = DNS_TICK.min(self.opts.reresolve_after);
        let mut next_dns_check = tokio::time::Instant::now() + dns_tick;
        let mut busy = false;
        loop {
            if busy {
                // A batch was full: let the runtime look at its fds, timers
                // and signals, then go on without sleeping.
                tokio::task::yield_now().await;
            }
            // The dataplane's timers and the services' (BGP, its TCP).
            let now = self.now();
            let poll_at = self
                .node
                .forwarding()
                .and_then(|f| [f.dataplane.poll_at(&f.tunnel), f.services.poll_at(now)].into_iter().flatten().min())
                .map(|t| self.tokio_deadline(t));
            let confirm_at = self.node.confirm_deadline().map(|t| self.tokio_deadline(t));
            let wake = [poll_at, confirm_at, Some(next_linux), Some(next_dns_check)].into_iter().flatten().min();
            let wake = wake.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let ports = &self.ports;
            let readable = std::future::poll_fn(|cx| ports.poll_readable(cx));
            tokio::select! {
                biased;
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = sigusr1.recv() => eprint!("{}", self.status_text()),
                call = next_call(&mut calls) => match call {
                    Some(c) => {
                        let reply = self.control(c.op);
                        let _ = c.reply.send(reply);
                    }
                    None => calls = None,
                },
                r = finished(&mut linux_job) => {
                    linux_job = None;
                    match r {
                        Ok(f) => self.take_findings(f),
                        Err(e) => log::warn!("linux check failed: {e}"),
                    }
                }
                r = finished(&mut dns_job) => {
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
            self.turn(now);
            busy = self.ports.any_full();
            if let Some(f) = self.node.forwarding() {
                self.evpn.observe(f.services, f.dataplane);
            }
            self.expire_confirm(now);
            log_events(&mut self.node);
            self.poll_state();
            let t = tokio::time::Instant::now();
            if std::mem::take(&mut self.recheck) {
                next_linux = t;
            }
            if t >= next_linux && linux_job.is_none() {
                next_linux = t + self.opts.linux_every;
                let (captured, enforce, prev) = (self.captured.clone(), self.opts.enforce, self.findings.clone());
                let tun = self.ports.wan().and_then(WanNic::tun_name).map(str::to_string);
                linux_job = Some(tokio::task::spawn_blocking(move || linux::check(&captured, tun.as_deref(), enforce, &prev)));
            }
            if t >= next_dns_check {
                next_dns_check = t + dns_tick;
                if dns_job.is_none() {
                    dns_job = self.dns_due(now);
                }
            }
        }
        self.stop_bgp().await;
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

    /// Says goodbye to the BGP peers before the process ends: a Cease
    /// (Administrative Shutdown) on every session that is up, then turns
    /// until the TCP endpoint has sent it all and seen it acknowledged, FINs
    /// included (at most 500 ms), so the peers withdraw this box's routes at
    /// once instead of waiting out their hold timer while their VMs flood
    /// into a VTEP that is gone.
    async fn stop_bgp(&mut self) {
        let now = self.now();
        let Some(f) = self.node.forwarding() else { return };
        let Some((bgp, tcp)) = f.services.bgp_mut() else { return };
        bgp.stop(now, tcp);
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while tokio::time::Instant::now() < until {
            let now = self.now();
            self.turn(now);
            let quiet = self.node.forwarding().is_none_or(|f| f.services.tcp().is_none_or(|t| !t.sending()));
            if quiet {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        log_events(&mut self.node);
    }

    /// One forwarding turn over every NIC (whether more may be waiting:
    /// [`Ports::any_full`]).
    fn turn(&mut self, now: Instant) {
        let Router { node, ports, fwd, .. } = self;
        fwd.turn(node, now, ports, &mut log_event);
    }

    fn take_findings(&mut self, f: LinuxFindings) {
        let first = self.findings.checks == 0;
        if first || f.ip_forward != self.findings.ip_forward {
            match f.ip_forward {
                Some(true) => log::info!("linux: net.ipv4.ip_forward = 1"),
                Some(false) if self.ports.wan().and_then(WanNic::tun_name).is_some() => log::warn!(
                    "linux: net.ipv4.ip_forward = 0: the kernel will not forward provider-secondary-ip traffic into --wan-tun (sysctl -w net.ipv4.ip_forward=1)"
                ),
                Some(false) => log::info!("linux: net.ipv4.ip_forward = 0 (fine without --wan-tun)"),
                None => {}
            }
        }
        if first
            || f.forward_drop_policies != self.findings.forward_drop_policies
            || f.forward_terminal_rules != self.findings.forward_terminal_rules
        {
            for p in &f.forward_drop_policies {
                log::warn!("linux: forward path drop policy: {p}");
            }
            for r in &f.forward_terminal_rules {
                log::warn!("linux: forward path terminal rule: {r}");
            }
        }
        for r in f.routes.iter().filter(|r| !r.ok) {
            if first || !self.findings.routes.contains(r) {
                log::warn!("linux: route {}/32: {}", r.address, r.detail);
            }
        }
        if first {
            for e in &f.errors {
                log::warn!("linux: could not check: {e}");
            }
        }
        self.findings = f;
    }

    /// Start one DNS lookup if a DNS peer is due: the image's re-resolve
    /// policy (`routerd_control::dns::Policy`), with `--reresolve-after`.
    /// The system resolver gives no TTL, so the handshake, the retry and
    /// the periodic refresh decide.
    fn dns_due(&mut self, now: Instant) -> Option<DnsJob> {
        let wg_now = wg::Instant::from_millis(now.millis());
        let Router { node, dns, opts, .. } = self;
        let policy = opts.policy();
        let device = node.wireguard();
        for (i, d) in dns.iter_mut().enumerate() {
            let since = device
                .as_ref()
                .and_then(|w| w.peer_status(wg::PeerId(d.peer.peer), wg_now))
                .and_then(|s| s.last_handshake)
                .map(|t| wg_now.saturating_since(t).as_millis() as u64);
            if policy.due(&d.clock, since, now) {
                d.clock.attempted_at = Some(now);
                let (host, port) = (d.peer.host.clone(), d.peer.port);
                return Some(tokio::task::spawn_blocking(move || (i, setup::resolve(&host, port))));
            }
        }
        None
    }

    fn resolved(&mut self, i: usize, result: Result<SocketAddr, String>) {
        let now = self.now();
        let Some(d) = self.dns.get_mut(i) else { return };
        match result {
            Err(e) => log::warn!("peer {}: re-resolving failed: {e}", d.peer.name),
            Ok(real) => {
                let changed = d.peer.resolved != Some(real);
                d.peer.resolved = Some(real);
                d.clock.resolved_at = Some(now);
                let (peer, name, host) = (d.peer.peer, d.peer.name.clone(), d.peer.host.clone());
                self.dns_cache.insert(host.clone(), real);
                self.set_endpoint(peer, real);
                if changed {
                    log::info!("peer {name}: {host} now resolves to {real}; endpoint updated");
                } else {
                    log::debug!("peer {name}: {host} still resolves to {real}");
                }
            }
        }
    }

    /// Everything worth printing: the node's status, ports, shim, Linux.
    pub fn status_text(&mut self) -> String {
        use std::fmt::Write as _;
        let st = match self.control(Op::Status { mark: false }) {
            Reply::Status(st) => st,
            _ => Box::default(),
        };
        let mut s = String::new();
        let _ = st.write_summary(&mut s);
        for (p, n) in self.opened.ports.iter().zip(&self.ports.nics) {
            let Some(HostNic::Tap(t)) = n else { continue };
            let c = t.stats();
            if c.rx_errors + c.tx_ring_full + c.tx_oversize > 0 {
                let _ = writeln!(
                    s,
                    "  {} (TAP {}): rx errors {}, tx not taken {}, tx oversize {}",
                    p.name,
                    t.name(),
                    c.rx_errors,
                    c.tx_ring_full,
                    c.tx_oversize
                );
            }
        }
        if let Some(wan) = self.ports.wan() {
            let w = wan.counters;
            let _ = writeln!(
                s,
                "  wan socket: rx {} datagrams, tx {} datagrams, tun rx {} tx {}",
                w.rx_datagrams, w.tx_datagrams, w.tun_rx, w.tun_tx
            );
            for (name, n) in w.drops() {
                if n > 0 {
                    let _ = writeln!(s, "  wan drop {name}: {n}");
                }
            }
        }
        for d in &self.dns {
            let _ = writeln!(s, "  dns peer {}: {} → {:?}", d.peer.name, d.peer.host, d.peer.resolved);
        }
        s
    }
}

struct DnsState {
    peer: DnsPeer,
    clock: NameClock,
}

type DnsJob = JoinHandle<(usize, Result<SocketAddr, String>)>;

/// The key slot of `cfg`'s tunnel.
fn tunnel_slot(cfg: &Config) -> Option<Name> {
    cfg.wireguard.first().map(|t| {
        let KeyRef::Device(slot) = &t.private_key;
        slot.clone()
    })
}

async fn next_call(calls: &mut Option<mpsc::Receiver<Call>>) -> Option<Call> {
    match calls {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

/// A spawned job's result; never ready without one.
async fn finished<T>(job: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match job {
        Some(j) => j.await,
        None => std::future::pending().await,
    }
}

/// Log one thing the node reports: a claim transition (conflicts, probes
/// and their outcome) with its reasons, a commit-confirm that ran out.
fn log_event(e: Event) {
    if e.is_warning() {
        log::warn!("{e}");
    } else {
        log::info!("{e}");
    }
}

/// Log everything the node has to report.
fn log_events(node: &mut Node<OsRng>) {
    while let Some(e) = node.take_event() {
        log_event(e);
    }
}

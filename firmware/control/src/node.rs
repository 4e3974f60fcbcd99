//! The box as routerctl sees it: configuration, keys, dataplane and
//! WireGuard behind one object that answers provisioning requests.
//!
//! Platform-neutral: the image drives it from its polled loop and the
//! serial line, the host build from tokio and a unix socket. The platform
//! owns the NICs and the line; the node owns everything that a
//! configuration decides.
//!
//! **Apply is atomic.** A candidate configuration is validated, its key
//! slots resolved, bound to the NICs ([`crate::build`]) and a complete new
//! dataplane (and, when the tunnel changed, a new WireGuard device) is built
//! beside the running one. Only when every step succeeded is it swapped in;
//! on any error the running configuration is untouched and the error names
//! the path. When peers, key and listen port are unchanged the WireGuard
//! device is kept, so sessions survive (a claim add does not re-handshake).
//!
//! **State is not configuration.** At the swap the new dataplane takes the
//! running one's runtime state (`Dataplane::carry_from`: claims by address
//! — a conflict stays a conflict —, the ARP cache, waiting frames, the FDB,
//! counters), a rebuilt WireGuard device takes the old one's counters, and
//! the doctor's mark survives, so an apply never hides drops.
//!
//! **Keys** live in slots: a tunnel's private key (`private_key =
//! "device:NAME"`) or a peer's preshared key (`preshared_key =
//! "device:NAME"`); a slot keeps the kind it was made with, and using it
//! for the other is refused, naming the field. A slot a configuration needs
//! is generated on the box from its entropy source the first time. Private
//! keys never leave the node; a preshared key leaves only when asked for by
//! name (`Op::PresharedKeyReveal`: the peer's box must hold the same one).
//! Importing either is a separate, explicit operation. The slots, the
//! configuration and a little state survive reboots through the platform's
//! store ([`Node::saved_state`] / [`Node::restore`], `crate::persist`).
//!
//! **Generations.** Every successful apply (claims add/remove, a rollback,
//! a revert) is a new generation, kept with when and why it was made
//! (`crate::history`; `Op::History`, `Op::Rollback`). A commit-confirm
//! (`Op::ApplyConfirm`) runs on trial: unless `Op::Confirm` arrives in time
//! the node goes back to the last confirmed generation by itself
//! ([`Node::apply_services`] or the next request notices the deadline), and
//! a restart while on trial comes back on the confirmed one. While on trial
//! every new generation (another apply, a claim, a rollback) is part of the
//! trial: it is unconfirmed, the revert target stays the last confirmed
//! generation, and only an apply with a new window restarts the timer (as
//! VyOS's `commit-confirm`). A factory reset (`Op::FactoryReset`) forgets
//! configuration, history and keys and asks the platform to erase its store
//! ([`Node::take_erase`]).

use alloc::boxed::Box;
use config_schema::{Claim, Config, KeyRef, Name, PortAddress};
use core::net::{IpAddr, SocketAddr};
use heapless::Vec;
use rand_core::{CryptoRng, RngCore};
use routerd_dataplane::{self as dp, ClaimEvent, Dataplane, FrameBuf, Instant, PortId, Transmit, Verdict};
use routerd_provision::message::{
    self as msg, text, text_fmt, Change, ChangeKind, ClaimRole, Count, Failure, FailureKind, KeyInfo, Op, Outcome, Reply, Status,
    WireProblem,
};
use routerd_wireguard::{self as wg, Device, SecretKey};

use crate::build::{build_with, NicInfo, Runtime, TunnelPlan, WanLease, MAX_NICS, MAX_PEERS};
use crate::dhcp::LeaseChange;
use crate::history::{Generation, History};
use crate::keys::{wrong_kind, KeySlot, SlotField, SlotKey};
use crate::tunnel::WgTunnel;
use msg::Origin;

/// Prefixes the WireGuard device routes (all peers together).
pub const WG_ROUTES: usize = 64;
/// The WireGuard device a node drives (~95 KiB; boxed).
pub type WgDevice = Device<MAX_PEERS, WG_ROUTES>;

/// A NIC as the platform reports it for status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicSnapshot {
    pub link_up: bool,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_errors: u64,
    pub tx_ring_full: u64,
    /// Receive buffers the driver has out on loan now, and loans given back
    /// that were not its own (`routerd_netdev::DeviceStats`): both stay 0
    /// unless something loses or mixes up buffers.
    pub rx_loans_out: u64,
    pub rx_foreign_loans: u64,
}

struct Running {
    config: Box<Config>,
    runtime: Runtime,
    dataplane: Box<Dataplane>,
    wg: Box<WgDevice>,
    applied_at: Instant,
}

use crate::capture::Capture;
use crate::persist::{Saved, SavedKey, SavedPending, SAVED_VERSION};
use crate::services::{Services, WithServices};

/// A candidate built beside the running configuration.
struct Staged {
    config: Box<Config>,
    runtime: Runtime,
    dataplane: Box<Dataplane>,
    /// `None`: keep the running WireGuard device (sessions survive).
    wg: Option<Box<WgDevice>>,
    new_keys: Vec<KeySlot, { msg::MAX_KEYS }>,
    outcome: Box<Outcome>,
}

/// The box's control plane.
pub struct Node<R> {
    nics: Vec<NicInfo, MAX_NICS>,
    rng: Option<R>,
    keys: Vec<KeySlot, { msg::MAX_KEYS }>,
    running: Option<Running>,
    software: &'static str,
    build_id: &'static str,
    mark: Option<Mark>,
    wall_clock: Option<(Instant, core::time::Duration)>,
    /// What validation checks candidates for (the image unless told).
    platform: config_schema::Platform,
    /// Traffic that ends on the box (kept across applies).
    services: Box<Services>,
    /// Applies since the box was first configured (restored at boot).
    generation: u64,
    /// Boots that restored saved state.
    boots: u32,
    /// Configuration or keys changed since the platform last saved.
    unsaved: bool,
    /// Events for the platform's log besides claim transitions.
    events: heapless::Deque<Event, 4>,
    /// Kept generations, the running one last.
    history: History,
    /// A commit-confirm on trial.
    pending: Option<Pending>,
    /// A factory reset wants the platform's store erased.
    erase: bool,
    /// The saved configuration this firmware refused at restore (after a
    /// downgrade, say) and why: kept in every save and shown by `config
    /// get` until an apply replaces it, so nothing the operator wrote is lost.
    refused: Option<(Box<Config>, msg::Text<200>)>,
    /// `routerctl capture`: frames copied for the operator (kept across
    /// applies; see `crate::capture`).
    capture: Capture,
    /// Frames received on a NIC no port of the running configuration binds
    /// (the forwarding turn drains them): status shows `nic_unbound`.
    unbound_rx: u64,
}

/// A commit-confirm on trial: unless confirmed by `deadline`, the node
/// leaves `generation` for `reverts_to`.
#[derive(Debug, Clone, Copy)]
struct Pending {
    generation: u64,
    reverts_to: u64,
    deadline: Instant,
    window_ms: u32,
}

/// Something the platform logs (`Node::take_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A claim changed state.
    Claim(ClaimEvent),
    /// The WAN's DHCP lease changed and was applied (or why not).
    Dhcp(Box<DhcpNote>),
    /// A peer endpoint's name resolved (the peers using it follow) or failed.
    Dns(Box<DnsNote>),
    /// A commit-confirm was not confirmed in time (or the box restarted on
    /// trial): the node went back to the last confirmed generation.
    Reverted(Box<RevertNote>),
}

/// An unconfirmed generation left for the confirmed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertNote {
    /// The generation on trial.
    pub generation: u64,
    /// The confirmed generation it went back to.
    pub to: u64,
    /// The generation the revert made (`None`: it failed, see `result`).
    pub new_generation: Option<u64>,
    pub window_ms: u32,
    /// At restore (the box restarted on trial), not by the timer.
    pub at_restart: bool,
    pub result: Result<(), msg::Text<200>>,
}

/// A DHCP lease change and whether the box applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpNote {
    pub port: Name,
    pub change: LeaseChange,
    pub result: Result<(), msg::Text<200>>,
}

/// A resolver event and the peers whose endpoint the name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsNote {
    pub event: crate::dns::DnsEvent,
    pub peers: Vec<Name, MAX_PEERS>,
}

impl Event {
    /// Worth a warning rather than an info line.
    pub fn is_warning(&self) -> bool {
        match self {
            Event::Claim(e) => matches!(e.kind, dp::ClaimEventKind::Conflict { .. } | dp::ClaimEventKind::InUse { .. }),
            Event::Dhcp(d) => matches!(d.change, LeaseChange::Lost) || d.result.is_err(),
            Event::Dns(d) => matches!(d.event, crate::dns::DnsEvent::Failed { .. }),
            Event::Reverted(_) => true,
        }
    }
}

impl core::fmt::Display for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Event::Claim(e) => write!(f, "{e}"),
            Event::Dhcp(d) => {
                let port = &d.port;
                match &d.change {
                    LeaseChange::Bound(l) => {
                        write!(f, "dhcp: {port} leased {}/{} from {}", l.address, l.prefix_len, l.server)?;
                        match l.gateway {
                            Some(g) => write!(f, ", gateway {g}")?,
                            None => write!(f, ", no gateway")?,
                        }
                        for (i, s) in l.dns.iter().enumerate() {
                            write!(f, "{}{s}", if i == 0 { ", dns " } else { " " })?;
                        }
                        if let Some(s) = l.lease_secs {
                            write!(f, ", for {s} s")?;
                        }
                    }
                    LeaseChange::Lost => write!(f, "dhcp: {port} lease ended without renewal; {port} has no address until the next one")?,
                }
                match &d.result {
                    Ok(()) => Ok(()),
                    Err(e) => write!(f, "; NOT applied: {}", e.as_str()),
                }
            }
            Event::Dns(d) => match &d.event {
                crate::dns::DnsEvent::Resolved { name, address, previous, ttl_secs } => {
                    match previous {
                        Some(p) => write!(f, "dns: {name} moved from {p} to {address} (ttl {ttl_secs} s)")?,
                        None => write!(f, "dns: {name} resolves to {address} (ttl {ttl_secs} s)")?,
                    }
                    for (i, p) in d.peers.iter().enumerate() {
                        write!(f, "{}{p}", if i == 0 { "; endpoint of peer " } else { ", " })?;
                    }
                    Ok(())
                }
                crate::dns::DnsEvent::Failed { name, error, kept } => {
                    write!(f, "dns: {name}: {}", error.as_str())?;
                    match kept {
                        Some(a) => write!(f, "; keeping {a}"),
                        None => write!(f, "; the peer has no endpoint until it resolves (it can still dial in)"),
                    }
                }
            },
            Event::Reverted(r) => {
                let (n, to) = (r.generation, r.to);
                if r.at_restart {
                    write!(
                        f,
                        "config: generation {n} was waiting for confirmation when the box restarted; restored generation {to} instead"
                    )?;
                } else {
                    write!(f, "config: generation {n} was not confirmed within {}; reverted to generation {to}", Window(r.window_ms))?;
                }
                match (&r.result, r.new_generation) {
                    (Ok(()), Some(g)) => write!(f, " (now generation {g})"),
                    (Ok(()), None) => Ok(()),
                    (Err(e), _) => write!(f, " — FAILED, generation {n} keeps running: {}", e.as_str()),
                }
            }
        }
    }
}

/// `1 min`, `90 s`: a commit-confirm window as the operator gave it.
struct Window(u32);

impl core::fmt::Display for Window {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            ms if ms >= 60_000 && ms % 60_000 == 0 => write!(f, "{} min", ms / 60_000),
            ms => write!(f, "{} s", ms.div_ceil(1000)),
        }
    }
}

/// What `Status { mark: true }` remembers, so the next status (the next
/// doctor run) reports what happened since.
struct Mark {
    at: Instant,
    drops: [u64; dp::counters::DROP_REASONS],
    /// Per NIC (not per port: ports are renumbered by an apply).
    tx_full: [u64; MAX_NICS],
    wg: WgMark,
}

/// How a platform binds a configuration to itself before `build`: `None`
/// binds it as written (the image); `Some(c)` binds `c` instead while the
/// node keeps showing the configuration as given (the host build fills in
/// its ports' MACs, the WAN address its socket stands for, resolved
/// endpoints). An error names the path; nothing changes.
pub type Bind<'a> = &'a mut dyn FnMut(&Config) -> Result<Option<Box<Config>>, Box<Failure>>;

fn as_written(_: &Config) -> Result<Option<Box<Config>>, Box<Failure>> {
    Ok(None)
}

/// What the platform's loop uses to forward.
pub struct Forwarding<'a, R> {
    pub dataplane: &'a mut Dataplane,
    pub tunnel: WgTunnel<'a, MAX_PEERS, WG_ROUTES, R>,
    /// Which NIC carries each dataplane port.
    pub nic_of_port: &'a [usize],
    /// Where packets for the box go (wrap the loop's transmitter in
    /// [`WithServices`]; run [`Services::poll`] after the batch).
    pub services: &'a mut Services,
    /// `routerctl capture`: show it every received frame
    /// ([`Capture::frame`]) and wrap the transmitter in a [`crate::capture::Tap`].
    pub capture: &'a mut Capture,
}

impl<R: RngCore + CryptoRng> Node<R> {
    /// A node with no configuration. Without `rng` (no trusted entropy)
    /// it answers status but refuses keys and applies.
    pub fn new(nics: &[NicInfo], rng: Option<R>, software: &'static str, build_id: &'static str) -> Node<R> {
        Node {
            nics: nics.iter().copied().take(MAX_NICS).collect(),
            rng,
            keys: Vec::new(),
            running: None,
            software,
            build_id,
            mark: None,
            wall_clock: None,
            platform: config_schema::Platform::Image,
            services: Box::new(Services::new()),
            generation: 0,
            boots: 0,
            unsaved: false,
            events: heapless::Deque::new(),
            history: History::default(),
            pending: None,
            refused: None,
            erase: false,
            capture: Capture::new(),
            unbound_rx: 0,
        }
    }

    /// Counts `frames` received on a NIC no port binds and dropped.
    pub fn count_unbound(&mut self, frames: usize) {
        self.unbound_rx = self.unbound_rx.saturating_add(frames as u64);
    }

    /// The platform this node runs on (the image unless set): every plan
    /// and apply is validated for it (`config_schema::validate_for`), so the
    /// box refuses exactly what `routerctl config validate --for` refuses.
    pub fn set_platform(&mut self, platform: config_schema::Platform) {
        self.platform = platform;
    }

    /// Where a platform knows the date: the time since the Unix epoch at
    /// `now`. Every WireGuard device the node makes gets it, so handshake
    /// initiations carry growing timestamps across restarts (peers refuse
    /// older ones). Without it they count from boot.
    pub fn set_wall_clock(&mut self, now: Instant, since_unix_epoch: core::time::Duration) {
        self.wall_clock = Some((now, since_unix_epoch));
        if let Some(r) = self.running.as_mut() {
            r.wg.set_wall_clock(wg::Instant::from_millis(now.millis()), since_unix_epoch);
        }
    }

    fn with_wall_clock(&self, mut d: Box<WgDevice>) -> Box<WgDevice> {
        if let Some((at, wall)) = self.wall_clock {
            d.set_wall_clock(wg::Instant::from_millis(at.millis()), wall);
        }
        d
    }

    /// The running configuration.
    pub fn config(&self) -> Option<&Config> {
        self.running.as_ref().map(|r| &*r.config)
    }

    /// Forwarding state, once a configuration runs.
    pub fn forwarding(&mut self) -> Option<Forwarding<'_, R>> {
        let running = self.running.as_mut()?;
        let rng = self.rng.as_mut()?;
        Some(Forwarding {
            dataplane: &mut running.dataplane,
            tunnel: WgTunnel { device: &mut running.wg, rng },
            nic_of_port: &running.runtime.nic_of_port,
            services: &mut self.services,
            capture: &mut self.capture,
        })
    }

    /// The capture, for the platform's receive path and its turn
    /// ([`Capture::tick`] once per turn, before any frame).
    pub fn capture(&mut self) -> &mut Capture {
        &mut self.capture
    }

    /// The dataplane port bound to NIC `nic`.
    pub fn port_of_nic(&self, nic: usize) -> Option<PortId> {
        let r = self.running.as_ref()?;
        r.runtime.nic_of_port.iter().position(|&n| n == nic).map(|p| PortId(p as u8))
    }

    /// Runs one received frame through the dataplane, and what it handed
    /// the services (no-op unconfigured).
    pub fn process<X: Transmit + ?Sized>(&mut self, now: Instant, port: PortId, frame: &mut FrameBuf, tx: &mut X) -> Verdict {
        match self.forwarding() {
            Some(mut f) => {
                let mut with = WithServices { inner: &mut *tx, services: &mut *f.services };
                let v = f.dataplane.process(now, port, frame, &mut f.tunnel, &mut with);
                f.services.poll(now, f.dataplane, &mut f.tunnel, tx);
                v
            }
            None => Verdict::Consumed,
        }
    }

    /// Carries out one request. `nics` are indexed like the NICs given to
    /// [`Node::new`]. `Reboot` is answered here and done by the platform.
    pub fn handle(&mut self, now: Instant, op: Op, nics: &[NicSnapshot]) -> Reply {
        self.handle_with(now, op, nics, &mut as_written)
    }

    /// [`Node::handle`] with the platform's [`Bind`].
    pub fn handle_with(&mut self, now: Instant, op: Op, nics: &[NicSnapshot], bind: Bind<'_>) -> Reply {
        // A trial that ran out is over before anything else is answered
        // (a platform whose loop does not call `apply_services` still reverts).
        self.expire(now, &mut *bind);
        match op {
            Op::Hello { .. } | Op::Ping => Reply::Pong,
            Op::Bye | Op::Reboot => Reply::Done,
            Op::Status { mark } => Reply::Status(self.status(now, mark, nics)),
            Op::GetConfig => {
                Reply::Config(self.running.as_ref().map(|r| r.config.clone()).or_else(|| self.refused.as_ref().map(|(c, _)| c.clone())))
            }
            Op::Plan(cfg) => match self.stage(cfg, now, bind) {
                Ok(s) => Reply::Plan(s.outcome),
                Err(f) => Reply::Error(f),
            },
            Op::Apply(cfg) => self.apply_as(cfg, now, bind, Origin::Apply),
            Op::ApplyConfirm { config, window_ms } => self.apply_confirm(config, window_ms, now, bind),
            Op::Confirm => self.confirm(),
            Op::History => Reply::History(self.history(now)),
            Op::GetGeneration(n) => match self.history.get(n) {
                Some(g) => Reply::Config(Some(g.config.clone())),
                None => self.not_kept(n),
            },
            Op::Rollback { generation, dry_run } => self.rollback(generation, dry_run, now, bind),
            Op::FactoryReset { device } => self.factory_reset(device.as_str()),
            Op::Conntrack(q) => Reply::Conntrack(self.conntrack_list(now, &q)),
            Op::ClaimAdd(claim) => self.claim_add(claim, now, bind),
            Op::ClaimRemove(addr) => self.claim_remove(addr, now, bind),
            Op::ClaimClearConflict(addr) => self.clear_conflict(addr, now),
            // The image's platform answers this itself (it owns the disks).
            Op::StorageInit { .. } => Reply::Error(Failure::refused(format_args!(
                "storage: this box keeps its state outside the node (routerd-host: --config and --key-file)"
            ))),
            // The image's platform answers these itself (it owns the disk
            // and its firmware slots).
            Op::UpgradeBegin(_) | Op::UpgradeChunk(_) | Op::UpgradeCommit => Reply::Error(Failure::refused(format_args!(
                "upgrade: this box has no firmware slots (routerd-host is upgraded with its package; \
                 an image booted without a routerd disk is upgraded by flashing one)"
            ))),
            Op::KeyShow => Reply::Keys(self.key_infos()),
            Op::KeyGenerate(slot) => self.key_set(slot, msg::KeyKind::Private, None, now),
            Op::KeyImport(slot, secret) => self.key_set(slot, msg::KeyKind::Private, Some(secret), now),
            Op::PresharedKeyGenerate(slot) => self.key_set(slot, msg::KeyKind::Preshared, None, now),
            Op::PresharedKeyImport(slot, key) => self.key_set(slot, msg::KeyKind::Preshared, Some(key), now),
            Op::PresharedKeyReveal(slot) => self.reveal(slot),
            // capture
            Op::CaptureStart(req) => self.capture_start(now, &req),
            Op::CaptureRead { max_bytes } => Reply::Captured(self.capture.read(now, max_bytes)),
            Op::CaptureStop => Reply::Captured(self.capture.stop(now, msg::CAPTURE_BATCH_BYTES as u32)),
            Op::BgpRoutes { vni, offset } => match self.services.bgp() {
                Some(b) => Reply::BgpRoutes(bgp_routes(b, vni, offset)),
                None => Reply::Error(Failure::new(
                    FailureKind::NotConfigured,
                    "bgp: this box runs no BGP: add a [bgp] section and a segment with control = \"evpn\" (CONFIG.md, [bgp])",
                )),
            },
        }
    }

    /// `routerctl capture`: starts a capture on the running configuration's
    /// ports, with the platform's rate cap and ring unless the request says.
    fn capture_start(&mut self, now: Instant, req: &msg::CaptureRequest) -> Reply {
        let Some(cfg) = self.config() else { return not_configured() };
        let ports: Vec<Name, MAX_NICS> = cfg.ports.iter().map(|p| p.name.clone()).collect();
        let defaults = match self.platform {
            config_schema::Platform::Image => crate::capture::Defaults::IMAGE,
            config_schema::Platform::Host => crate::capture::Defaults::HOST,
        };
        let offset = self.wall_ms(now).map_or(0, |w| w.saturating_sub(now.millis()));
        match self.capture.start(now, req, &ports, defaults, offset) {
            Ok(b) => Reply::Captured(b),
            Err(f) => Reply::Error(f),
        }
    }

    /// Applies a configuration (also used for one given at boot).
    pub fn apply(&mut self, cfg: Box<Config>, now: Instant) -> Reply {
        self.apply_with(cfg, now, &mut as_written)
    }

    /// [`Node::apply`] with the platform's [`Bind`].
    pub fn apply_with(&mut self, cfg: Box<Config>, now: Instant, bind: Bind<'_>) -> Reply {
        self.apply_as(cfg, now, bind, Origin::Apply)
    }

    /// An apply that makes a generation of `origin`.
    fn apply_as(&mut self, cfg: Box<Config>, now: Instant, bind: Bind<'_>, origin: Origin) -> Reply {
        match self.stage(cfg, now, bind) {
            Ok(s) => {
                let outcome = s.outcome.clone();
                self.commit(s, now, origin);
                Reply::Applied(outcome)
            }
            Err(f) => Reply::Error(f),
        }
    }

    /// `routerctl apply --confirm`: apply on trial. The revert target is the
    /// running generation, or, while already on trial, the one that trial
    /// reverts to (the last confirmed); the timer restarts.
    fn apply_confirm(&mut self, cfg: Box<Config>, window_ms: u32, now: Instant, bind: Bind<'_>) -> Reply {
        if !(msg::CONFIRM_MIN_MS..=msg::CONFIRM_MAX_MS).contains(&window_ms) {
            return Reply::Error(Failure::refused(format_args!(
                "confirm: a window of {window_ms} ms is outside {} s ..= {} min",
                msg::CONFIRM_MIN_MS / 1000,
                msg::CONFIRM_MAX_MS / 60_000
            )));
        }
        let target = match (self.pending, self.history.running()) {
            (Some(p), _) => p.reverts_to,
            (None, Some(g)) => g.number,
            (None, None) => {
                return Reply::Error(Failure::refused(format_args!(
                    "confirm: the box runs no configuration to go back to; apply the first one without --confirm"
                )))
            }
        };
        let staged = match self.stage(cfg, now, bind) {
            Ok(s) => s,
            Err(f) => return Reply::Error(f),
        };
        let outcome = staged.outcome.clone();
        let deadline = Instant::from_millis(now.millis().saturating_add(u64::from(window_ms)));
        self.pending = Some(Pending { generation: 0, reverts_to: target, deadline, window_ms });
        self.commit(staged, now, Origin::Apply);
        Reply::Applied(outcome)
    }

    /// `routerctl confirm`: the trial is kept.
    fn confirm(&mut self) -> Reply {
        match self.pending.take() {
            Some(p) => {
                self.history.confirm_all();
                self.unsaved = true;
                Reply::Confirmed { generation: p.generation }
            }
            None => Reply::Error(Failure::new(
                FailureKind::NotFound,
                "confirm: nothing is waiting for confirmation (only `routerctl apply --confirm MINUTES` needs one)",
            )),
        }
    }

    /// Goes back to the last confirmed generation once a trial's deadline
    /// passed (a new generation, "revert of N"); what happened goes to
    /// [`Node::take_event`]. A revert that fails (the platform's bind refused
    /// it) ends the trial too: it is said once, loudly, not retried forever.
    /// A commit-confirm whose time ran out reverts now, through the
    /// platform's `bind` (routerd-host binds ports to its TAPs and socket;
    /// [`Node::apply_services`] uses the configuration as written). The
    /// revert is reported as [`Event::Reverted`].
    pub fn expire_with(&mut self, now: Instant, bind: Bind<'_>) {
        self.expire(now, bind);
    }

    /// Why the saved configuration was refused at restore, while it is kept
    /// unapplied (see the `refused` field).
    pub fn refused_config(&self) -> Option<&str> {
        self.refused.as_ref().map(|(_, why)| why.as_str())
    }

    /// When a pending commit-confirm runs out (the platform wakes then).
    pub fn confirm_deadline(&self) -> Option<Instant> {
        self.pending.map(|p| p.deadline)
    }

    fn expire(&mut self, now: Instant, bind: Bind<'_>) {
        let Some(p) = self.pending.filter(|p| now >= p.deadline) else { return };
        self.pending = None;
        let note = self.revert(p, now, bind, Origin::Reverted(p.generation), false);
        self.push_event(Event::Reverted(Box::new(note)));
    }

    fn revert(&mut self, p: Pending, now: Instant, bind: Bind<'_>, origin: Origin, at_restart: bool) -> RevertNote {
        let result = match self.history.get(p.reverts_to).map(|g| g.config.clone()) {
            Some(cfg) => match self.apply_as(cfg, now, bind, origin) {
                Reply::Applied(_) => Ok(()),
                Reply::Error(f) => Err(f.message),
                _ => Ok(()),
            },
            None => Err(text_fmt(format_args!("generation {} is no longer kept", p.reverts_to))),
        };
        if result.is_err() {
            // Nothing reverted: what runs is what the operator has now.
            self.history.confirm_all();
            self.unsaved = true;
        }
        RevertNote {
            generation: p.generation,
            to: p.reverts_to,
            new_generation: result.is_ok().then_some(self.generation),
            window_ms: p.window_ms,
            at_restart,
            result,
        }
    }

    fn push_event(&mut self, e: Event) {
        if let Err(e) = self.events.push_back(e) {
            self.events.pop_front();
            let _ = self.events.push_back(e);
        }
    }

    /// `routerctl rollback N`: a kept configuration applied again as a new
    /// generation; `dry_run`: its plan.
    fn rollback(&mut self, generation: u64, dry_run: bool, now: Instant, bind: Bind<'_>) -> Reply {
        let Some(cfg) = self.history.get(generation).map(|g| g.config.clone()) else { return self.not_kept(generation) };
        if self.history.running().is_some_and(|g| g.number == generation) {
            return Reply::Error(Failure::refused(format_args!("rollback: generation {generation} is the one running; nothing to do")));
        }
        if dry_run {
            return match self.stage(cfg, now, bind) {
                Ok(s) => Reply::Plan(s.outcome),
                Err(f) => Reply::Error(f),
            };
        }
        self.apply_as(cfg, now, bind, Origin::Rollback(generation))
    }

    fn not_kept(&self, generation: u64) -> Reply {
        let kept = self.history.numbers();
        Reply::Error(Box::new(Failure {
            kind: FailureKind::NotFound,
            message: text_fmt(format_args!(
                "generation {generation} is not kept on this box (kept: {})",
                if kept.is_empty() { "none" } else { kept.as_str() }
            )),
            problems: Default::default(),
        }))
    }

    /// The kept generations, for `routerctl config history`.
    fn history(&self, now: Instant) -> Box<msg::History> {
        Box::new(msg::History {
            entries: self.history.wire(),
            running: self.running.as_ref().and_then(|_| self.history.running()).map(|g| g.number),
            pending: self.pending_status(now),
        })
    }

    fn pending_status(&self, now: Instant) -> Option<msg::PendingConfirm> {
        self.pending.map(|p| msg::PendingConfirm {
            generation: p.generation,
            reverts_to: p.reverts_to,
            left_ms: p.deadline.millis().saturating_sub(now.millis()),
            window_ms: p.window_ms,
        })
    }

    /// `routerctl reset`: forget the configuration, the history and every
    /// key slot (forwarding stops), and have the platform erase its store.
    /// `device` must name this box (empty when unconfigured).
    fn factory_reset(&mut self, device: &str) -> Reply {
        let name = self.config().map(|c| c.device.name.as_str()).unwrap_or("");
        if device != name {
            return Reply::Error(Failure::refused(format_args!("reset: this box is {:?}, not {device:?}; nothing was changed", name)));
        }
        self.running = None;
        self.keys.clear();
        self.history.clear();
        self.pending = None;
        self.refused = None;
        self.mark = None;
        *self.services = Services::new();
        self.generation = 0;
        self.boots = 0;
        self.events.clear();
        self.unsaved = false;
        self.erase = true;
        Reply::Done
    }

    /// True once after a factory reset: the platform must erase its store
    /// (both slots, so no key stays on the disk) instead of saving.
    pub fn take_erase(&mut self) -> bool {
        core::mem::take(&mut self.erase)
    }

    /// Nothing to remember: no configuration, no key (a new or reset box).
    pub fn is_blank(&self) -> bool {
        self.running.is_none() && self.keys.is_empty()
    }

    /// The wall-clock time at `now` (ms since the Unix epoch), if known.
    fn wall_ms(&self, now: Instant) -> Option<u64> {
        self.wall_clock.map(|(at, wall)| {
            let ms = u64::try_from(wall.as_millis()).unwrap_or(u64::MAX);
            ms.saturating_add(now.millis().saturating_sub(at.millis()))
        })
    }

    /// `build` with the WAN's DHCP lease, when the client that holds it
    /// runs on the NIC the configuration's WAN port binds to.
    fn build_leased(&self, cfg: &Config) -> Result<Runtime, crate::BuildError> {
        let resolver = self.services.resolver();
        let resolved = |n: &config_schema::DnsName| resolver.address(n);
        let leased = self.services.dhcp().and_then(|c| {
            let l = c.lease()?;
            let address = config_schema::Ipv4Cidr::new(l.address, l.prefix_len).ok()?;
            Some((WanLease { address, gateway: l.gateway }, c.runs_for().1))
        });
        let Some((lease, mac)) = leased else {
            return build_with(cfg, &self.nics, None, &resolved);
        };
        let rt = build_with(cfg, &self.nics, Some(lease), &resolved)?;
        let wan = rt.dataplane.wan().and_then(|w| rt.dataplane.ports.get(w.index()));
        if wan.is_some_and(|p| p.dhcp && p.mac == mac) {
            Ok(rt)
        } else {
            build_with(cfg, &self.nics, None, &resolved)
        }
    }

    /// The lease the DHCP client has not reported yet: applied through the
    /// same path as an apply (state carried across, WireGuard kept), without
    /// counting as a configuration change. The platform's loop calls this
    /// after the services ran (`Forwarder::turn` does); what happened goes
    /// to [`Node::take_event`].
    pub fn apply_services(&mut self, now: Instant) {
        self.expire(now, &mut as_written);
        self.apply_resolved();
        let Some(change) = self.services.take_lease_change() else { return };
        let Some(cfg) = self.running.as_ref().map(|r| r.config.clone()) else { return };
        let port = self.services.dhcp().map(|c| c.runs_for().0);
        let name = port.and_then(|p| cfg.ports.get(p.index())).map(|p| p.name.clone());
        let result = match self.stage(cfg, now, &mut as_written) {
            Ok(s) => {
                self.swap(s, now);
                Ok(())
            }
            Err(f) => Err(f.message),
        };
        if let Some(port) = name {
            let _ = self.events.push_back(Event::Dhcp(Box::new(DhcpNote { port, change, result })));
        }
    }

    /// The resolver's news: a peer's name resolved to a new address moves
    /// its endpoint in the running WireGuard device (no apply, sessions
    /// kept: a peer kept alive is dialled at the new address).
    fn apply_resolved(&mut self) {
        let resolver = self.services.resolver_mut();
        while resolver.wants_entropy() {
            let Some(rng) = self.rng.as_mut() else { break };
            resolver.add_entropy(rng.next_u32());
        }
        while let Some(e) = self.services.resolver_mut().take_event() {
            let mut peers: Vec<Name, MAX_PEERS> = Vec::new();
            if let (crate::dns::DnsEvent::Resolved { name, address, .. }, Some(r)) = (&e, self.running.as_mut()) {
                for n in r.runtime.named.iter().filter(|n| n.name == *name) {
                    let to = SocketAddr::V4(core::net::SocketAddrV4::new(*address, n.port));
                    let Some(plan) = r.runtime.tunnel.as_mut().and_then(|t| t.peers.get_mut(usize::from(n.peer))) else { continue };
                    if plan.endpoint != Some(to) {
                        plan.endpoint = Some(to);
                        let _ = r.wg.set_endpoint(wg::PeerId(n.peer), Some(to));
                    }
                    let tunnel = r.config.wireguard.first().map(|t| &t.name);
                    if let Some(p) = r.config.peers.iter().filter(|p| Some(&p.tunnel) == tunnel).nth(usize::from(n.peer)) {
                        let _ = peers.push(p.name.clone());
                    }
                }
            }
            self.push_event(Event::Dns(Box::new(DnsNote { event: e, peers })));
        }
    }

    /// The oldest event (claim transition, DHCP lease) the platform has
    /// not logged yet.
    pub fn take_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        self.take_claim_event().map(Event::Claim)
    }

    /// The swap of an apply, as a new generation (unconfirmed while a
    /// commit-confirm is on trial; its target is kept whatever the space).
    fn commit(&mut self, s: Staged, now: Instant, origin: Origin) {
        let config = s.config.clone();
        self.swap(s, now);
        self.generation = self.generation.saturating_add(1);
        let pinned = self.pending.map(|p| p.reverts_to);
        if let Some(p) = self.pending.as_mut() {
            p.generation = self.generation;
        }
        let g = Generation::new(self.generation, self.wall_ms(now), origin, pinned.is_none(), config);
        self.history.push(g, pinned);
        self.unsaved = true;
    }

    /// The swap of an apply; the DHCP client follows the WAN port.
    fn swap(&mut self, mut s: Staged, now: Instant) {
        self.refused = None;
        for k in s.new_keys {
            let _ = self.keys.push(k);
        }
        let old = self.running.take();
        if let Some(old) = &old {
            s.dataplane.carry_from(&old.dataplane);
        }
        let wg = match (s.wg, old) {
            (Some(mut new), Some(old)) => {
                new.carry_counters_from(&old.wg);
                new
            }
            (Some(new), None) => new,
            (None, Some(old)) => old.wg,
            // stage() builds a device whenever nothing runs; keep total.
            (None, None) => Box::new(Device::new(SecretKey::from_bytes([1; 32]), wg::Config::default())),
        };
        let wan = s.runtime.dataplane.wan().and_then(|w| Some((w, s.runtime.dataplane.ports.get(w.index())?)));
        let dhcp = wan.filter(|(_, p)| p.dhcp).map(|(w, p)| (w, p.mac));
        let seed = self.rng.as_mut().map_or(now.millis(), |r| r.next_u64());
        self.services.set_dhcp(dhcp, seed, now);
        // Names to keep resolved; servers from [dns], else the lease's.
        let mut names: Vec<crate::services::NamePeers, { crate::dns::MAX_NAMES }> = Vec::new();
        for n in &s.runtime.named {
            let peer = dp::PeerId(n.peer);
            match names.iter_mut().find(|(m, _)| *m == n.name) {
                Some((_, peers)) => {
                    let _ = peers.push(peer);
                }
                None => {
                    let mut peers = Vec::new();
                    let _ = peers.push(peer);
                    let _ = names.push((n.name.clone(), peers));
                }
            }
        }
        let leased = self.services.dhcp().and_then(|c| c.lease()).map(|l| l.dns.clone()).unwrap_or_default();
        let servers: &[core::net::Ipv4Addr] = if s.config.dns.servers.is_empty() { &leased } else { &s.config.dns.servers };
        self.services.set_resolver(names, servers);
        // BGP EVPN: the same [bgp] keeps its sessions (and shows the new
        // dataplane the RIB); another one replaces them. The setup passed
        // validation, which refuses everything `BgpSetup::check` does.
        let bgp_seed = self.rng.as_mut().map_or(now.millis() ^ 0x9e37_79b9, |r| r.next_u64());
        // (A refused setup — unreachable after validation — leaves the
        // previous service running; status shows what runs.)
        let _ = self.services.set_bgp(crate::bgp::BgpSetup::from_config(&s.config), bgp_seed, now);
        let ports: Vec<Name, MAX_NICS> = s.config.ports.iter().map(|p| p.name.clone()).collect();
        self.capture.rebind(&ports);
        self.running = Some(Running { config: s.config, runtime: s.runtime, dataplane: s.dataplane, wg, applied_at: now });
    }

    /// True once after the configuration or a key changed: the platform
    /// should write [`Node::saved_state`] to its store now.
    pub fn take_unsaved(&mut self) -> bool {
        core::mem::take(&mut self.unsaved)
    }

    /// Everything the box must remember across a reboot, as of `now`.
    pub fn saved_state(&self, now: Instant) -> Saved {
        Saved {
            version: SAVED_VERSION,
            schema: config_schema::SCHEMA_HASH,
            generation: self.generation,
            boots: self.boots,
            wall_clock_ms: self.wall_ms(now),
            keys: self
                .keys
                .iter()
                .map(|k| SavedKey { name: k.name.clone(), kind: k.key.kind(), secret: k.key.to_bytes(), generated: k.generated })
                .collect(),
            config: self.running.as_ref().map(|r| r.config.clone()).or_else(|| self.refused.as_ref().map(|(c, _)| c.clone())),
            // Unconfigured (a refused restore), the history is kept as it was.
            history: self.history.saved(),
            pending: self.pending.map(|p| SavedPending { generation: p.generation, reverts_to: p.reverts_to, window_ms: p.window_ms }),
        }
    }

    /// Take back what a previous boot saved: the key slots first (so the
    /// box keeps its WireGuard identity even if the configuration no longer
    /// applies), the history, then the configuration through the normal
    /// apply path (no new generation). A record written while a
    /// commit-confirm was on trial brings back the confirmed generation
    /// instead, as a new generation, and says why ([`Node::take_event`]).
    /// The reply is that apply's (`Done` without a configuration). The
    /// platform must keep its wall clock at or after `saved.wall_clock_ms`.
    pub fn restore(&mut self, saved: Saved, now: Instant) -> Reply {
        self.restore_with(saved, now, &mut as_written)
    }

    /// [`Node::restore`] with the platform's [`Bind`].
    pub fn restore_with(&mut self, saved: Saved, now: Instant, bind: Bind<'_>) -> Reply {
        self.keys.clear();
        for k in saved.keys {
            let _ = self.keys.push(KeySlot { name: k.name, key: SlotKey::from_bytes(k.kind, k.secret), generated: k.generated });
        }
        self.boots = saved.boots.saturating_add(1);
        self.generation = saved.generation;
        self.history = History::from_saved(&saved.history, saved.config.as_deref());
        if let Some(cfg) = saved.config.as_deref() {
            // A record whose history misses the running configuration still
            // has it: history starts there.
            if self.history.running().is_none_or(|g| g.number != saved.generation) {
                let g = Generation::new(saved.generation, None, Origin::Upgraded, true, Box::new(cfg.clone()));
                self.history.push(g, None);
            }
        }
        self.pending = None;
        let reply = match (saved.pending, saved.config) {
            (Some(p), _) => {
                let p = Pending { generation: p.generation, reverts_to: p.reverts_to, deadline: now, window_ms: p.window_ms };
                let note = self.revert(p, now, &mut *bind, Origin::RevertedAtRestart(p.generation), true);
                let reply = match &note.result {
                    Ok(()) => Reply::Applied(Box::default()),
                    Err(e) => Reply::Error(Box::new(Failure { kind: FailureKind::Refused, message: e.clone(), problems: Vec::new() })),
                };
                self.push_event(Event::Reverted(Box::new(note)));
                // The reverted-from configuration still runs if the revert failed.
                if self.running.is_none() {
                    if let Some(cfg) = self.history.running().map(|g| g.config.clone()) {
                        let _ = self.stage(cfg, now, bind).map(|s| self.swap(s, now));
                    }
                }
                reply
            }
            (None, Some(cfg)) => match self.stage(cfg.clone(), now, bind) {
                Ok(s) => {
                    let outcome = s.outcome.clone();
                    self.swap(s, now);
                    Reply::Applied(outcome)
                }
                Err(f) => {
                    self.refused = Some((cfg, f.message.clone()));
                    Reply::Error(f)
                }
            },
            (None, None) => Reply::Done,
        };
        // Save again: the boot count moved.
        self.unsaved = true;
        reply
    }

    /// Applies since the box was first configured.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Random bytes from the box's trusted entropy source (for the
    /// platform: a new GPT's GUIDs); false without one.
    pub fn fill_random(&mut self, out: &mut [u8]) -> bool {
        match self.rng.as_mut() {
            Some(r) => {
                r.fill_bytes(out);
                true
            }
            None => false,
        }
    }

    /// The oldest claim transition (conflict, probe, capture, with its
    /// reason) the platform has not logged yet.
    pub fn take_claim_event(&mut self) -> Option<ClaimEvent> {
        self.running.as_mut()?.dataplane.take_event()
    }

    /// `routerctl claims clear-conflict`: probe the address now; the claim
    /// captures again only if nobody answers.
    fn clear_conflict(&mut self, addr: config_schema::Ipv4Cidr, now: Instant) -> Reply {
        let Some(r) = self.running.as_mut() else { return not_configured() };
        let address = addr.addr();
        let Some(i) = r.config.claims.iter().position(|c| c.address.addr() == address) else {
            return no_claim(address);
        };
        match r.dataplane.probe_claim(now, i) {
            Ok(()) => {
                let t = r.dataplane.config().timing;
                let interval = u32::try_from(t.probe_interval_ms).unwrap_or(u32::MAX);
                Reply::Probing(msg::Probing {
                    address,
                    probes: t.probe_count,
                    interval_ms: interval,
                    done_in_ms: interval.saturating_mul(u32::from(t.probe_count)),
                })
            }
            Err(dp::ProbeRefused::NotInConflict(state)) => Reply::Error(Failure::refused(format_args!(
                "claims: {address} is not in conflict (it is {}); nothing to clear",
                match state {
                    dp::ClaimState::Active => "capturing",
                    dp::ClaimState::Probing => "already probing",
                    dp::ClaimState::InConflict => "in conflict",
                    dp::ClaimState::Disabled => "disabled",
                }
            ))),
            Err(dp::ProbeRefused::NotProxyArp) => Reply::Error(Failure::refused(format_args!(
                "claims: {address} is not captured with proxy-ARP on this box, so it cannot be in conflict"
            ))),
            Err(dp::ProbeRefused::Unknown) => no_claim(address),
        }
    }

    fn stage(&mut self, cfg: Box<Config>, now: Instant, bind: Bind<'_>) -> Result<Staged, Box<Failure>> {
        let report = config_schema::validate_for(&cfg, self.platform);
        if !report.is_valid() {
            let mut f = Failure::new(
                FailureKind::Invalid,
                if report.errors == 1 { "the configuration has 1 error" } else { "the configuration has errors" },
            );
            // Errors first: they are why nothing was applied.
            let errors = report.problems.iter().filter(|p| p.severity == config_schema::Severity::Error);
            let warnings = report.problems.iter().filter(|p| p.severity != config_schema::Severity::Error);
            for p in errors.chain(warnings) {
                if f.problems.push(WireProblem::from(p)).is_err() {
                    break;
                }
            }
            return Err(f);
        }
        let mut outcome = Box::new(Outcome::default());
        outcome.warnings = report.warnings as u16;
        for p in &report.problems {
            let _ = outcome.problems.push(WireProblem::from(p));
        }

        // Key slots: existing ones are used, missing ones made here. A slot
        // keeps its kind: a tunnel's private key is never a peer's
        // preshared key, nor the other way round.
        let mut new_keys: Vec<KeySlot, { msg::MAX_KEYS }> = Vec::new();
        let private = cfg.wireguard.iter().enumerate().map(|(i, t)| (SlotField(msg::KeyKind::Private, i), &t.private_key));
        let preshared =
            cfg.peers.iter().enumerate().filter_map(|(i, p)| Some((SlotField(msg::KeyKind::Preshared, i), p.preshared_key.as_ref()?)));
        for (field, KeyRef::Device(slot)) in private.chain(preshared) {
            let kind = field.0;
            match self.slot_key(&new_keys, slot) {
                Some(k) if k.kind() == kind => continue,
                Some(k) => {
                    return Err(Failure::refused(format_args!(
                        "{field}: slot {slot} holds a {}; give it a slot of its own (device:OTHER)",
                        k.kind().noun()
                    )))
                }
                None => {}
            }
            if self.keys.len() + new_keys.len() >= msg::MAX_KEYS {
                return Err(Failure::refused(format_args!(
                    "{field}: cannot make slot {slot}: all {} key slots of the box are taken",
                    msg::MAX_KEYS
                )));
            }
            let Some(rng) = self.rng.as_mut() else {
                return Err(Failure::new(
                    FailureKind::NoEntropy,
                    match kind {
                        msg::KeyKind::Private => {
                            "no trusted entropy source on this box: it cannot make the WireGuard key (import one with `routerctl key import`)"
                        }
                        msg::KeyKind::Preshared => {
                            "no trusted entropy source on this box: it cannot make the preshared key (import one with `routerctl key psk import`)"
                        }
                    },
                ));
            };
            let k = KeySlot { name: slot.clone(), key: SlotKey::generate(kind, rng), generated: true };
            let _ = outcome.keys_created.push(k.info(true));
            let _ = new_keys.push(k);
        }

        let bound = bind(&cfg)?;
        let runtime = self.build_leased(bound.as_deref().unwrap_or(&cfg)).map_err(|e| Failure::refused(format_args!("{e}")))?;
        let dataplane = Dataplane::new(runtime.dataplane.clone(), now)
            .map_err(|e| Failure::refused(format_args!("the dataplane refused the configuration: {e:?}")))?;
        let dataplane = Box::new(dataplane);

        let keep = self.running.as_ref().is_some_and(|r| r.runtime.tunnel == runtime.tunnel && new_keys.is_empty());
        let wg = if keep {
            None
        } else {
            let secret = runtime.tunnel.as_ref().and_then(|plan| match self.slot_key(&new_keys, &plan.key_slot) {
                Some(SlotKey::Private(s)) => Some(s.clone()),
                _ => None,
            });
            let preshared = |slot: &Name| match self.slot_key(&new_keys, slot) {
                Some(SlotKey::Preshared(k)) => Some(k.clone()),
                _ => None,
            };
            Some(self.with_wall_clock(wireguard_device(runtime.tunnel.as_ref(), secret, &preshared)?))
        };
        outcome.tunnel_restarts = wg.is_some() && self.running.is_some();
        diff(self.config(), &cfg, &mut outcome);
        Ok(Staged { config: cfg, runtime, dataplane, wg, new_keys, outcome })
    }

    fn claim_add(&mut self, claim: Claim, now: Instant, bind: Bind<'_>) -> Reply {
        let Some(mut cfg) = self.running.as_ref().map(|r| r.config.clone()) else { return not_configured() };
        if cfg.claims.iter().any(|c| c.address == claim.address) {
            return Reply::Error(Failure::new(
                FailureKind::Exists,
                "claims: the address is already claimed (remove it first or apply a new configuration)",
            ));
        }
        let address = claim.address.addr();
        if cfg.claims.push(claim).is_err() {
            return Reply::Error(Failure::new(FailureKind::Refused, "claims: the list is full (64)"));
        }
        self.apply_as(cfg, now, bind, Origin::ClaimAdd(address))
    }

    fn claim_remove(&mut self, addr: config_schema::Ipv4Cidr, now: Instant, bind: Bind<'_>) -> Reply {
        let Some(mut cfg) = self.running.as_ref().map(|r| r.config.clone()) else { return not_configured() };
        let Some(i) = cfg.claims.iter().position(|c| c.address.addr() == addr.addr()) else {
            return no_claim(addr.addr());
        };
        cfg.claims.remove(i);
        self.apply_as(cfg, now, bind, Origin::ClaimRemove(addr.addr()))
    }

    /// The private key in `slot`, for a platform that keeps keys across
    /// restarts (routerd-host's `--key-file`). Never sent anywhere.
    pub fn key_secret(&self, slot: &Name) -> Option<&SecretKey> {
        match &self.key(slot)?.key {
            SlotKey::Private(s) => Some(s),
            SlotKey::Preshared(_) => None,
        }
    }

    /// Every preshared-key slot and its key, for a platform that keeps them
    /// across restarts (routerd-host's files beside `--key-file`).
    pub fn preshared_keys(&self) -> impl Iterator<Item = (&Name, &wg::PresharedKey)> {
        self.keys.iter().filter_map(|k| match &k.key {
            SlotKey::Preshared(p) => Some((&k.name, p)),
            SlotKey::Private(_) => None,
        })
    }

    /// The key slot the running tunnel uses.
    pub fn tunnel_key_slot(&self) -> Option<&Name> {
        self.running.as_ref()?.runtime.tunnel.as_ref().map(|t| &t.key_slot)
    }

    /// The running WireGuard device (endpoint updates, peer state).
    pub fn wireguard(&mut self) -> Option<&mut WgDevice> {
        self.running.as_mut().map(|r| &mut *r.wg)
    }

    fn key(&self, slot: &Name) -> Option<&KeySlot> {
        self.keys.iter().find(|k| k.name == *slot)
    }

    /// The key in `slot`: one of `new` (made by the apply being staged, or
    /// about to replace the slot's key) or one the box holds.
    fn slot_key<'a>(&'a self, new: &'a [KeySlot], slot: &Name) -> Option<&'a SlotKey> {
        new.iter().chain(self.keys.iter()).find(|k| k.name == *slot).map(|k| &k.key)
    }

    fn key_infos(&self) -> Box<Vec<KeyInfo, { msg::MAX_KEYS }>> {
        let used = |k: &KeySlot| {
            self.config().is_some_and(|c| match k.key.kind() {
                msg::KeyKind::Private => c.wireguard.iter().any(|t| matches!(&t.private_key, KeyRef::Device(s) if *s == k.name)),
                msg::KeyKind::Preshared => c.peers.iter().any(|p| matches!(&p.preshared_key, Some(KeyRef::Device(s)) if *s == k.name)),
            })
        };
        Box::new(self.keys.iter().map(|k| k.info(used(k))).collect())
    }

    /// Makes (or imports) the key of `kind` in `slot`; a tunnel using it
    /// restarts with the new key (its sessions re-handshake). A slot that
    /// holds the other kind is refused.
    fn key_set(&mut self, slot: Name, kind: msg::KeyKind, import: Option<[u8; 32]>, now: Instant) -> Reply {
        if let Some(k) = self.key(&slot).filter(|k| k.key.kind() != kind) {
            return wrong_kind(&slot, k.key.kind());
        }
        let key = match import {
            Some(bytes) => SlotKey::from_bytes(kind, bytes),
            None => match self.rng.as_mut() {
                Some(rng) => SlotKey::generate(kind, rng),
                None => return Reply::Error(Failure::new(FailureKind::NoEntropy, "no trusted entropy source: cannot make a key")),
            },
        };
        let new = [KeySlot { name: slot, key, generated: import.is_none() }];
        // Build the restarted tunnel first: if it fails, nothing changes.
        let restarted = match self.running.as_ref().and_then(|r| r.runtime.tunnel.as_ref()) {
            Some(plan) if plan.key_slot == new[0].name || plan.peers.iter().any(|p| p.preshared_key.as_ref() == Some(&new[0].name)) => {
                let secret = match self.slot_key(&new, &plan.key_slot) {
                    Some(SlotKey::Private(s)) => Some(s.clone()),
                    _ => None,
                };
                let preshared = |n: &Name| match self.slot_key(&new, n) {
                    Some(SlotKey::Preshared(k)) => Some(k.clone()),
                    _ => None,
                };
                match wireguard_device(Some(plan), secret, &preshared) {
                    Ok(d) => Some(self.with_wall_clock(d)),
                    Err(f) => return Reply::Error(f),
                }
            }
            _ => None,
        };
        let [new] = new;
        match self.keys.iter_mut().find(|k| k.name == new.name) {
            Some(k) => *k = new,
            None => {
                if self.keys.push(new).is_err() {
                    return Reply::Error(Failure::refused(format_args!("keys: all {} key slots of the box are taken", msg::MAX_KEYS)));
                }
            }
        }
        if let (Some(mut d), Some(r)) = (restarted, self.running.as_mut()) {
            d.carry_counters_from(&r.wg);
            r.wg = d;
            r.applied_at = now;
        }
        self.unsaved = true;
        Reply::Keys(self.key_infos())
    }

    /// The preshared key in `slot`, so the operator can give the peer's box
    /// the same one. Private keys never leave the box.
    fn reveal(&self, slot: Name) -> Reply {
        match self.key(&slot).map(|k| &k.key) {
            Some(SlotKey::Preshared(k)) => Reply::PresharedKey { slot, key: k.0 },
            Some(SlotKey::Private(_)) => Reply::Error(Failure::refused(format_args!(
                "keys: slot {slot} holds a private key, which never leaves the box (`routerctl key show` prints its public key)"
            ))),
            None => Reply::Error(Box::new(Failure {
                kind: FailureKind::NotFound,
                message: text_fmt(format_args!("keys: no slot {slot} on this box (`routerctl key show` lists them)")),
                problems: Vec::new(),
            })),
        }
    }

    /// The flow table, filtered (`routerctl conntrack list`).
    fn conntrack_list(&self, now: Instant, q: &msg::ConntrackQuery) -> Box<msg::ConntrackList> {
        let mut out = Box::<msg::ConntrackList>::default();
        let Some(r) = self.running.as_ref() else { return out };
        let ct = r.dataplane.conntrack();
        out.flows = ct.len() as u32;
        out.capacity = ct.capacity() as u32;
        let limit = usize::from(q.limit).min(msg::MAX_FLOW_LIST);
        for (_, f) in ct.iter() {
            let o = f.orig;
            let nat = f.nat.map(|(_, a, p)| (a, p));
            let has = |a: core::net::Ipv4Addr| o.src == a || o.dst == a || nat.is_some_and(|(n, _)| n == a);
            if q.proto.is_some_and(|p| p != o.proto.number()) || q.address.is_some_and(|a| !has(a)) {
                continue;
            }
            out.matched = out.matched.saturating_add(1);
            if out.entries.len() < limit {
                let _ = out.entries.push(msg::FlowEntry {
                    proto: o.proto.number(),
                    src: o.src,
                    sport: o.sport,
                    dst: o.dst,
                    dport: o.dport,
                    nat,
                    state: text(f.state.name()),
                    expires_in_ms: f.expires.millis_since(now),
                    packets: f.packets,
                });
            }
        }
        out
    }

    /// The WAN's leased address, while the DHCP client holds a lease.
    fn leased_address(&self) -> Option<config_schema::Ipv4Cidr> {
        let l = self.services.dhcp()?.lease()?;
        config_schema::Ipv4Cidr::new(l.address, l.prefix_len).ok()
    }

    /// The resolver's status (`None` without names to resolve).
    fn resolver_status(&self, now: Instant) -> Option<msg::ResolverStatus> {
        let r = self.services.resolver();
        if r.names().is_empty() {
            return None;
        }
        Some(msg::ResolverStatus {
            servers: r.servers().iter().copied().collect(),
            names: r
                .names()
                .iter()
                .map(|n| msg::NameStatus {
                    name: text(n.name.as_str()),
                    address: n.address,
                    resolved_ms_ago: n.clock.resolved_at.map(|t| now.millis_since(t)),
                    ttl_secs: n.clock.ttl_secs,
                    error: n.error.map(|e| text(e.as_str())).unwrap_or_default(),
                    lookups: n.lookups,
                    failures: n.failures,
                })
                .collect(),
            refused: r.refused,
        })
    }

    /// The DHCP client's status.
    fn dhcp_status(&self, now: Instant) -> Option<msg::DhcpStatus> {
        let c = self.services.dhcp()?;
        let st = c.state();
        let port = self.config().and_then(|cfg| cfg.ports.get(st.port.index())).map(|p| text(p.name.as_str())).unwrap_or_default();
        let lease = st.lease.as_ref();
        Some(msg::DhcpStatus {
            port,
            address: self.leased_address(),
            gateway: lease.and_then(|l| l.gateway),
            dns: lease.map(|l| l.dns.iter().copied().collect()).unwrap_or_default(),
            server: lease.map(|l| l.server),
            lease_secs: lease.and_then(|l| l.lease_secs),
            leased_ms_ago: lease.map(|l| now.millis_since(l.since)),
            unbound_ms: st.unbound_since.map(|t| now.millis_since(t)),
            sent: st.sent,
            received: st.received,
            lost: st.lost,
        })
    }

    /// The node's view for `routerctl status` and `doctor`.
    pub fn status(&mut self, now: Instant, mark: bool, nics: &[NicSnapshot]) -> Box<Status> {
        let mut st = Box::new(Status::default());
        st.software = text(self.software);
        st.build = text(self.build_id);
        st.uptime_ms = now.millis();
        let cfg = self.running.as_ref().map(|r| &*r.config);
        for (i, n) in nics.iter().enumerate().take(MAX_NICS) {
            let port = self.running.as_ref().and_then(|r| r.runtime.nic_of_port.iter().position(|&x| x == i));
            let pc = port.and_then(|p| cfg.and_then(|c| c.ports.get(p)));
            let name = match pc {
                Some(p) => text(p.name.as_str()),
                None => text_fmt(format_args!("{}", crate::ContractName(i))),
            };
            let _ = st.ports.push(msg::PortStatus {
                name,
                role: pc.map(|p| p.role),
                mac: self.nics.get(i).map(|n| n.mac).unwrap_or_default(),
                link_up: n.link_up,
                address: pc.and_then(|p| match p.address {
                    Some(PortAddress::Static(c)) => Some(c),
                    Some(PortAddress::Dhcp) => self.leased_address(),
                    None => None,
                }),
                rx_frames: n.rx_frames,
                tx_frames: n.tx_frames,
                rx_errors: n.rx_errors,
                tx_ring_full: n.tx_ring_full,
                rx_loans_out: n.rx_loans_out,
                rx_foreign_loans: n.rx_foreign_loans,
                tx_dropped: port.and_then(|p| self.running.as_ref()?.dataplane.counters().tx_full.get(p).copied()).unwrap_or(0),
                tx_dropped_since_mark: None,
            });
        }
        st.dhcp = self.dhcp_status(now);
        st.resolver = self.resolver_status(now);
        st.generation = self.history.running().filter(|_| self.running.is_some()).map_or(0, |g| g.number);
        st.pending_confirm = self.pending_status(now);
        let Some(r) = self.running.as_ref() else { return st };
        let cfg = &*r.config;
        st.configured = true;
        st.device = text(cfg.device.name.as_str());
        st.side = text(cfg.device.side.as_str());
        st.applied_ms_ago = Some(now.millis().saturating_sub(r.applied_at.millis()));
        let wg_now = wg::Instant::from_millis(now.millis());
        if let (Some(t), Some(plan)) = (cfg.wireguard.first(), r.runtime.tunnel.as_ref()) {
            st.tunnel = Some(msg::TunnelStatus {
                name: t.name.clone(),
                listen_port: plan.listen_port,
                mtu: plan.mtu,
                public_key: r.wg.public_key().0,
                underlay_mtu: config_schema::budget::underlay_mtu(cfg),
            });
        }
        for (i, p) in cfg.peers.iter().enumerate() {
            let s = r.wg.peer_status(wg::PeerId(i as u16), wg_now);
            let endpoint_configured = match &p.endpoint {
                Some(e) => text_fmt(format_args!("{e}")),
                None => text(""),
            };
            let _ = st.peers.push(msg::PeerStatus {
                name: p.name.clone(),
                public_key: p.public_key.0,
                endpoint_configured,
                endpoint: s.as_ref().and_then(|s| s.endpoint),
                allowed_ips: p.allowed_ips.clone(),
                last_handshake_ms_ago: s
                    .as_ref()
                    .and_then(|s| s.last_handshake)
                    .map(|t| wg_now.as_nanos().saturating_sub(t.as_nanos()) / 1_000_000),
                has_session: s.as_ref().is_some_and(|s| s.has_session),
                rx_bytes: s.as_ref().map_or(0, |s| s.rx_bytes),
                tx_bytes: s.as_ref().map_or(0, |s| s.tx_bytes),
                persistent_keepalive: p.persistent_keepalive,
            });
        }
        for (i, c) in cfg.claims.iter().enumerate() {
            let Some(ds) = r.dataplane.claim_status(i) else { continue };
            let dc = r.runtime.dataplane.claims.get(i);
            let (role, port) = match cfg.claim_action(c) {
                config_schema::ClaimAction::Capture { method: config_schema::CaptureMethod::ProxyArp, port, .. } => {
                    (ClaimRole::ProxyArp, port.clone())
                }
                config_schema::ClaimAction::Capture { port, .. } => (ClaimRole::ProviderSecondaryIp, port.clone()),
                _ => (ClaimRole::LocalDelivery, cfg.local_port_for(c).cloned().unwrap_or_else(|| c.capture.port.clone())),
            };
            let tunnel_mtu = cfg.tunnel(&c.delivery.tunnel).map_or(config_schema::config::DEFAULT_TUNNEL_MTU, |t| t.mtu);
            let auto = tunnel_mtu.saturating_sub(config_schema::budget::TCP_IPV4_HEADERS);
            let k = ds.counters;
            let _ = st.claims.push(msg::ClaimStatus {
                address: ds.address,
                owner: c.owner.clone(),
                role,
                port,
                tunnel: c.delivery.tunnel.clone(),
                peer: c.delivery.peer.clone(),
                state: match ds.state {
                    dp::ClaimState::Active => msg::ClaimState::Active,
                    dp::ClaimState::Probing => msg::ClaimState::Probing,
                    dp::ClaimState::InConflict => msg::ClaimState::Conflict,
                    dp::ClaimState::Disabled => msg::ClaimState::Disabled,
                },
                conflict_mac: ds.conflict_mac,
                mss: dc.and_then(|d| d.mss).unwrap_or(auto),
                mss_auto: matches!(c.mss_clamp, config_schema::MssClamp::Auto),
                arp_replies: k.arp_replies,
                garps_sent: k.garps_sent,
                probes_seen: k.probes_seen,
                conflicts: k.conflicts,
                to_tunnel_packets: k.to_tunnel.packets,
                to_tunnel_bytes: k.to_tunnel.bytes,
                from_tunnel_packets: k.from_tunnel.packets,
                from_tunnel_bytes: k.from_tunnel.bytes,
                syns_clamped: k.syns_clamped,
                loops: k.loops,
                live_host_heard_ms_ago: ds.heard.map(|h| now.millis_since(h)),
                conflict_hold_ms: dc.map_or(0, |d| if d.is_proxy_arp() { d.conflict_hold_ms } else { 0 }),
                next_probe_in_ms: match ds.state {
                    dp::ClaimState::Probing | dp::ClaimState::InConflict => ds.next_action.map(|t| t.millis_since(now)),
                    _ => None,
                },
                probes_sent: k.probes_sent,
                probes_answered: k.probes_answered,
            });
        }
        st.segments = segment_status(cfg, r.dataplane.fdb(), now);
        st.bgp = self.services.bgp().map(|b| bgp_status(b, cfg, now));
        let c = r.dataplane.counters();
        for (name, value) in [
            ("forwarded", c.forwarded),
            ("syns_clamped", c.syns_clamped),
            ("arp_replies_own", c.arp_replies_own),
            ("arp_requests_sent", c.arp_requests_sent),
            ("echo_replies", self.services.counters().echo_replies),
            ("local_delivered", c.local_delivered),
            ("services_ignored", self.services.counters().ignored),
            ("services_unsent", self.services.counters().unsent),
            ("icmp_errors_sent", c.icmp_errors_sent),
            ("tunnel_rx", c.tunnel_rx),
            ("tunnel_tx", c.tunnel_tx),
            ("tunnel_control", c.tunnel_control),
            ("tunnel_held", c.tunnel_held),
            ("vxlan_encap", c.vxlan_encap),
            ("vxlan_decap", c.vxlan_decap),
            ("vxlan_floods", c.vxlan_floods),
            ("fdb_full", c.fdb_full),
        ] {
            let _ = st.counters.push(Count { name: text(name), value });
        }
        conntrack_counts(&r.dataplane, &mut st.counters);
        for (reason, value) in c.nonzero_drops() {
            let _ = st.drops.push(Count { name: text(reason.name()), value });
        }
        if self.unbound_rx > 0 {
            let _ = st.drops.push(Count { name: text("nic_unbound"), value: self.unbound_rx });
        }
        // Per-port transmit drops, indexed by NIC like `st.ports`.
        let mut tx_full = [0u64; MAX_NICS];
        for (p, &nic) in r.runtime.nic_of_port.iter().enumerate() {
            if let (Some(slot), Some(v)) = (tx_full.get_mut(nic), c.tx_full.get(p)) {
                *slot = *v;
            }
        }
        let wg_mark = self.mark.as_ref().map(|m| m.wg);
        if let Some(m) = &self.mark {
            st.mark_age_ms = Some(now.millis().saturating_sub(m.at.millis()));
            for (reason, value) in c.nonzero_drops() {
                let since = value.saturating_sub(m.drops.get(reason as usize).copied().unwrap_or(0));
                if since > 0 {
                    let _ = st.drops_since_mark.push(Count { name: text(reason.name()), value: since });
                }
            }
            for (i, p) in st.ports.iter_mut().enumerate() {
                let (now_v, base) = (tx_full.get(i).copied().unwrap_or(0), m.tx_full.get(i).copied().unwrap_or(0));
                p.tx_dropped_since_mark = Some(now_v.saturating_sub(base));
            }
        }
        st.wireguard_load = r.runtime.tunnel.as_ref().map(|_| wireguard_load(&r.wg, wg_now, wg_mark.as_ref()));
        if mark {
            self.mark = Some(Mark { at: now, drops: c.drops, tx_full, wg: WgMark::of(&r.wg) });
        }
        for (name, value) in r.wg.counters().iter() {
            if value > 0 {
                let _ = st.wireguard.push(Count { name: text(name), value });
            }
        }
        st
    }
}

/// Each segment of the running configuration with the live FDB entries
/// learned on it. The dataplane numbers segments in configuration order.
fn segment_status(cfg: &Config, fdb: &dp::fdb::Fdb, now: Instant) -> Vec<msg::SegmentStatus, { msg::MAX_SEGMENT_STATUS }> {
    let mut out = Vec::new();
    for (i, s) in cfg.segments.iter().enumerate() {
        let mut g = msg::SegmentStatus {
            name: s.name.clone(),
            vni: s.vni,
            port: s.port.clone(),
            udp_port: s.udp_port,
            fdb_local: 0,
            fdb_remote: 0,
            vteps: s.remote_vteps.iter().map(|&address| msg::VtepStatus { address, fdb_remote: 0 }).collect(),
        };
        // Entries past their age but not yet expired by `poll` do not count.
        let live = fdb.entries().iter().filter(|e| usize::from(e.segment) == i && fdb.lookup(e.segment, e.mac, now).is_some());
        for e in live {
            match e.location {
                dp::fdb::Location::Local => g.fdb_local = g.fdb_local.saturating_add(1),
                dp::fdb::Location::Remote(vtep) => {
                    g.fdb_remote = g.fdb_remote.saturating_add(1);
                    if let Some(v) = g.vteps.iter_mut().find(|v| v.address == vtep) {
                        v.fdb_remote = v.fdb_remote.saturating_add(1);
                    }
                }
            }
        }
        let _ = out.push(g);
    }
    out
}

/// The BGP service as status shows it: sessions, each EVPN VNI with its
/// segment, what it learned and what we advertise, non-zero counters.
/// Counting remote MACs is a pass over the RIB, the flood list O(n²) over
/// the type-3 routes (`routerd_bgp::rib`): fine per status request, not
/// per packet.
fn bgp_status(b: &crate::bgp::Bgp, cfg: &Config, now: Instant) -> msg::BgpStatus {
    let setup = b.setup();
    let mut out = msg::BgpStatus {
        asn: setup.asn,
        router_id: setup.router_id,
        hold_time: setup.hold_time,
        vtep: b.local_routes().vtep(),
        peers: Vec::new(),
        vnis: Vec::new(),
        counters: Vec::new(),
    };
    for p in b.sessions() {
        let _ = out.peers.push(msg::BgpPeerStatus {
            address: p.addr,
            name: p.name.clone(),
            state: bgp_state(p.state),
            uptime_ms: p.uptime_ms(now),
            prefixes_received: u32::try_from(p.prefixes_received).unwrap_or(u32::MAX),
            established: p.established,
            downs: p.downs,
            last_down: p.last_down.map_or_else(msg::Text::new, bgp_down_text),
            messages_in: p.session.messages_in,
            messages_out: p.session.messages_out,
            treat_as_withdraw: p.session.treat_as_withdraw,
            attributes_discarded: p.session.attributes_discarded,
            withdraw_nlri_errors: p.session.withdraw_nlri_errors,
        });
    }
    for &(vni, _) in setup.vnis.iter() {
        let mut v = msg::BgpVniStatus {
            vni,
            segment: cfg.segments.iter().find(|s| s.vni == vni).map(|s| s.name.clone()),
            flood_list: Vec::new(),
            flood_list_total: 0,
            remote_macs: u32::try_from(b.remote_macs(vni).count()).unwrap_or(u32::MAX),
            local_macs: u32::try_from(b.local_mac_count(vni)).unwrap_or(u32::MAX),
        };
        for vtep in b.flood_list(vni) {
            v.flood_list_total = v.flood_list_total.saturating_add(1);
            let _ = v.flood_list.push(vtep);
        }
        let _ = out.vnis.push(v);
    }
    let c = b.counters();
    let r = b.rib().counters();
    for (name, value) in [
        ("accepted", c.accepted),
        ("not_a_peer", c.not_a_peer),
        ("collisions", c.collisions),
        ("dial_failed", c.dial_failed),
        ("local_full", c.local_full),
        ("programmed", c.programmed),
        ("vteps_refused", c.vteps_refused),
        ("macs_refused", c.macs_refused),
        ("rib_macs_full", r.macs_full),
        ("rib_imets_full", r.imets_full),
        ("rib_prefixes_full", r.prefixes_full),
        ("rib_not_imported", r.not_imported),
        ("rib_unsupported_tunnel", r.unsupported_tunnel),
        ("rib_other_types", r.other_types),
        ("rib_bad_peer", r.bad_peer),
    ] {
        if value > 0 {
            let _ = out.counters.push(Count { name: text(name), value });
        }
    }
    out
}

fn bgp_state(s: routerd_bgp::State) -> msg::BgpState {
    match s {
        routerd_bgp::State::Idle => msg::BgpState::Idle,
        routerd_bgp::State::Connect => msg::BgpState::Connect,
        routerd_bgp::State::Active => msg::BgpState::Active,
        routerd_bgp::State::OpenSent => msg::BgpState::OpenSent,
        routerd_bgp::State::OpenConfirm => msg::BgpState::OpenConfirm,
        routerd_bgp::State::Established => msg::BgpState::Established,
    }
}

/// `sent NOTIFICATION 4/0 (hold timer expired)`: the codes as RFC 4271
/// §4.5 and RFC 4486 name them.
fn bgp_down_text(d: routerd_bgp::DownReason) -> msg::Text<{ msg::BGP_DOWN_TEXT }> {
    fn meaning(code: u8, subcode: u8) -> &'static str {
        match (code, subcode) {
            (1, _) => "message header error",
            (2, _) => "OPEN message error",
            (3, _) => "UPDATE message error",
            (4, _) => "hold timer expired",
            (5, _) => "finite state machine error",
            (6, 1) => "maximum prefixes reached",
            (6, 2) => "administrative shutdown",
            (6, 3) => "peer de-configured",
            (6, 4) => "administrative reset",
            (6, 5) => "connection rejected",
            (6, 6) => "other configuration change",
            (6, 7) => "connection collision resolution",
            (6, 8) => "out of resources",
            (6, _) => "cease",
            _ => "unknown code",
        }
    }
    match d {
        routerd_bgp::DownReason::NotificationSent { code, subcode } => {
            text_fmt(format_args!("sent NOTIFICATION {code}/{subcode} ({})", meaning(code, subcode)))
        }
        routerd_bgp::DownReason::NotificationReceived { code, subcode } => {
            text_fmt(format_args!("received NOTIFICATION {code}/{subcode} ({})", meaning(code, subcode)))
        }
        routerd_bgp::DownReason::ConnectionClosed => text("TCP connection closed"),
        routerd_bgp::DownReason::Stopped => text("stopped on this box"),
    }
}

/// The EVPN routes as `routerctl bgp routes` lists them: ours (type 3 per
/// VNI, type 2 per local MAC; withdrawn ones left out), then every peer's
/// type 3 and type 2 — only `vni`'s when given — from position `offset`,
/// at most a page. The order is the tables' (stable while they do not
/// change); `total` says how many match.
fn bgp_routes(b: &crate::bgp::Bgp, vni: Option<u32>, offset: u32) -> Box<msg::BgpRoutes> {
    use routerd_bgp::rib::LocalKey;
    use routerd_bgp::EvpnRoute;
    let wanted = |v: u32| vni.is_none_or(|w| w == v);
    let local = b.local_routes();
    let own = (0..local.len()).filter_map(|i| local.entry_at(i)).filter(|(_, e)| !e.withdrawn).filter_map(|(k, e)| {
        let (route_type, v, mac) = match *k {
            LocalKey::Imet { vni } => (3, vni, None),
            LocalKey::Mac { vni, mac } => (2, vni, Some(mac.0)),
        };
        let rd = match local.route_of(k, e) {
            EvpnRoute::Imet(r) => r.rd,
            EvpnRoute::MacIp(r) => r.rd,
            _ => return None,
        };
        Some(msg::BgpRoute {
            route_type,
            vni: v,
            rd: text_fmt(format_args!("{rd}")),
            mac,
            ip: None,
            next_hop: local.vtep(),
            peer: None,
            seq: if route_type == 2 { e.seq } else { 0 },
        })
    });
    let peer = |id: u8| b.peer_of(routerd_bgp::PeerId(id)).map(|(address, name)| msg::BgpRoutePeer { address, name: name.clone() });
    let imets = b.rib().imet_entries().map(|(k, e)| msg::BgpRoute {
        route_type: 3,
        vni: e.vni,
        rd: text_fmt(format_args!("{}", k.rd)),
        mac: None,
        ip: None,
        next_hop: k.originator,
        peer: peer(k.peer),
        seq: 0,
    });
    let macs = b.rib().mac_entries().map(|(k, e)| msg::BgpRoute {
        route_type: 2,
        vni: e.vni,
        rd: text_fmt(format_args!("{}", k.rd)),
        mac: Some(k.mac.0),
        ip: k.ip,
        next_hop: e.vtep,
        peer: peer(k.peer),
        seq: e.seq,
    });
    let mut out = Box::new(msg::BgpRoutes { total: 0, offset, routes: Vec::new() });
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    for (i, r) in own.chain(imets).chain(macs).filter(|r| wanted(r.vni)).enumerate() {
        out.total = out.total.saturating_add(1);
        if i >= skip && !out.routes.is_full() {
            let _ = out.routes.push(r);
        }
    }
    out
}

/// A claim named by address that the box does not have.
fn no_claim(address: core::net::Ipv4Addr) -> Reply {
    Reply::Error(Box::new(Failure {
        kind: FailureKind::NotFound,
        message: msg::text_fmt(format_args!("claims: no claim for {address} on this box (routerctl claims list shows them)")),
        problems: Default::default(),
    }))
}

fn not_configured() -> Reply {
    Reply::Error(Failure::new(FailureKind::NotConfigured, "the box runs no configuration yet: `routerctl apply FILE` first"))
}

/// The WireGuard device for a tunnel plan with its private key and the
/// peers' preshared keys (`preshared` looks a slot up); an empty device
/// (every seal fails, counted) when the configuration has no tunnel.
pub fn wireguard_device(
    plan: Option<&TunnelPlan>,
    secret: Option<SecretKey>,
    preshared: &dyn Fn(&Name) -> Option<wg::PresharedKey>,
) -> Result<Box<WgDevice>, Box<Failure>> {
    let Some(plan) = plan else {
        return Ok(Box::new(Device::new(secret.unwrap_or(SecretKey::from_bytes([1; 32])), wg::Config::default())));
    };
    let Some(secret) = secret else {
        return Err(Failure::new(FailureKind::NotFound, "wireguard: the key slot is empty"));
    };
    let mut d: Box<WgDevice> = Box::new(Device::new(secret, wg::Config { mtu: plan.mtu, ..wg::Config::default() }));
    for (i, p) in plan.peers.iter().enumerate() {
        let mut pc = wg::PeerConfig::new(wg::PublicKey(p.public_key));
        pc.endpoint = p.endpoint;
        pc.persistent_keepalive = p.persistent_keepalive;
        if let Some(slot) = &p.preshared_key {
            let key = preshared(slot);
            if key.is_none() {
                return Err(Failure::refused(format_args!("peers[{i}].preshared_key: slot {slot} holds no preshared key")));
            }
            pc.preshared_key = key;
        }
        let id = d.add_peer(pc).map_err(|e| Failure::refused(format_args!("peers[{i}]: WireGuard refused the peer: {e:?}")))?;
        for a in &p.allowed {
            d.add_allowed_ip(id, IpAddr::V4(a.addr()), a.prefix_len())
                .map_err(|e| Failure::refused(format_args!("peers[{i}].allowed_ips: WireGuard refused {:?}: {e:?}", a.addr())))?;
        }
    }
    Ok(d)
}

/// Changes from `old` to `new` by identity, into `out.changes`.
fn diff(old: Option<&Config>, new: &Config, out: &mut Outcome) {
    let mut push = |kind: ChangeKind, section: &str, subject: &dyn core::fmt::Display| {
        let subject = text_fmt(format_args!("{subject}"));
        if out.changes.push(Change { kind, section: text(section), subject }).is_err() {
            out.changes_omitted = out.changes_omitted.saturating_add(1);
        }
    };
    let Some(old) = old else {
        push(ChangeKind::Add, "device", &new.device.name);
        for p in &new.ports {
            push(ChangeKind::Add, "ports", &p.name);
        }
        for t in &new.wireguard {
            push(ChangeKind::Add, "wireguard", &t.name);
        }
        for p in &new.peers {
            push(ChangeKind::Add, "peers", &p.name);
        }
        for c in &new.claims {
            push(ChangeKind::Add, "claims", &c.address);
        }
        for g in &new.segments {
            push(ChangeKind::Add, "segments", &g.name);
        }
        return;
    };
    if old.device != new.device {
        push(ChangeKind::Modify, "device", &new.device.name);
    }
    section(&old.ports, &new.ports, |x| &x.name, "ports", &mut push);
    section(&old.wireguard, &new.wireguard, |x| &x.name, "wireguard", &mut push);
    section(&old.peers, &new.peers, |x| &x.name, "peers", &mut push);
    section(&old.claims, &new.claims, |x| &x.address, "claims", &mut push);
    section(&old.segments, &new.segments, |x| &x.name, "segments", &mut push);
}

/// One list's additions, removals and modifications, matched by `key`.
fn section<'a, T: PartialEq, K: PartialEq + core::fmt::Display + 'a>(
    old: &'a [T],
    new: &'a [T],
    key: impl Fn(&'a T) -> &'a K,
    name: &str,
    push: &mut dyn FnMut(ChangeKind, &str, &dyn core::fmt::Display),
) {
    for o in old {
        match new.iter().find(|n| key(n) == key(o)) {
            None => push(ChangeKind::Remove, name, key(o)),
            Some(n) if n != o => push(ChangeKind::Modify, name, key(o)),
            Some(_) => {}
        }
    }
    for n in new {
        if !old.iter().any(|o| key(o) == key(n)) {
            push(ChangeKind::Add, name, key(n));
        }
    }
}

/// WireGuard counters at the last `Status { mark: true }`, so status can
/// tell "flooded since the last doctor run" from "flooded once, long ago".
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WgMark {
    pub cookie_replies_sent: u64,
    pub refused_under_load: u64,
}

impl WgMark {
    pub(crate) fn of(wg: &WgDevice) -> WgMark {
        let c = wg.counters();
        WgMark { cookie_replies_sent: c.cookie_replies_sent, refused_under_load: c.get(wg::Error::RateLimited) }
    }
}

/// The device's handshake load for status: whether it answers with cookies
/// now, when it last crossed its limit, and what that cost the senders.
/// `mark` gives the since-mark figures (none without a mark).
pub(crate) fn wireguard_load(wg: &WgDevice, now: wg::Instant, mark: Option<&WgMark>) -> msg::WireguardLoad {
    let load = wg.load(now);
    let c = wg.counters();
    let refused = c.get(wg::Error::RateLimited);
    msg::WireguardLoad {
        under_load: load.under_load,
        last_under_load_ms_ago: load.last_over_limit.map(|t| now.as_nanos().saturating_sub(t.as_nanos()) / 1_000_000),
        handshakes: c.handshakes,
        cookie_replies_sent: c.cookie_replies_sent,
        cookies_received: c.cookies_received,
        refused_under_load: refused,
        // Saturating: a device rebuilt without its counters carried over
        // restarts from zero, which must read as "none since", not wrap.
        cookie_replies_sent_since_mark: mark.map(|m| c.cookie_replies_sent.saturating_sub(m.cookie_replies_sent)),
        refused_under_load_since_mark: mark.map(|m| refused.saturating_sub(m.refused_under_load)),
    }
}

/// Connection tracking in `status` (only where SNAT or the firewall runs):
/// the table's fill and capacity, flows per protocol, NAT, and the firewall's
/// decisions per rule and policy (`fw_rule3` …; for a drop rule its drops).
fn conntrack_counts(d: &Dataplane, out: &mut Vec<Count, { msg::MAX_COUNTS }>) {
    let dc = d.config();
    if dc.nat.is_empty() && dc.firewall.is_none() {
        return;
    }
    let ct = d.conntrack();
    let [tcp, udp, icmp] = ct.per_proto();
    let k = ct.counters;
    let c = d.counters();
    for (name, value) in [
        ("conntrack_flows", ct.len() as u64),
        ("conntrack_capacity", ct.capacity() as u64),
        ("conntrack_tcp", tcp as u64),
        ("conntrack_udp", udp as u64),
        ("conntrack_icmp", icmp as u64),
        ("conntrack_created", k.created),
        ("conntrack_evicted", k.evicted),
        ("conntrack_dropped_on_apply", k.dropped_on_apply),
        ("nat_flows", c.nat_flows),
        ("nat_ports_rewritten", c.nat_ports_rewritten),
    ] {
        let _ = out.push(Count { name: text(name), value });
    }
    let Some(fw) = &dc.firewall else { return };
    let f = d.firewall_counters();
    for (i, v) in f.rules.iter().enumerate().take(fw.rules.len()).filter(|(_, v)| **v != 0) {
        let _ = out.push(Count { name: text_fmt(format_args!("fw_rule{i}")), value: *v });
    }
    for (i, v) in f.policies.iter().enumerate().take(fw.policies.len()).filter(|(_, v)| **v != 0) {
        let _ = out.push(Count { name: text_fmt(format_args!("fw_policy{i}")), value: *v });
    }
    if f.default != 0 {
        let _ = out.push(Count { name: text("fw_default"), value: f.default });
    }
}

#[cfg(test)]
mod wireguard_load_tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn load_and_since_mark_figures() {
        let mut rng = OsRng;
        let now = wg::Instant::from_secs(100);
        let mut dev: Box<WgDevice> = Box::new(Device::new(SecretKey::generate(&mut rng), wg::Config::default()));
        let mut sender: Device<1, 1> = Device::new(SecretKey::generate(&mut rng), wg::Config::default());
        let mut pc = wg::PeerConfig::new(dev.public_key());
        pc.endpoint = Some("192.0.2.2:51820".parse().unwrap());
        let id = sender.add_peer(pc).unwrap();
        let mut init = [0u8; 200];
        let Ok(wg::Action::Send { len, .. }) = sender.encapsulate_to(id, now, &mut rng, &mut init, 0) else { panic!() };

        let before = WgMark::of(&dev);
        let quiet = wireguard_load(&dev, now, Some(&before));
        assert_eq!(quiet.cookie_replies_sent_since_mark, Some(0));
        assert!(!quiet.under_load && quiet.last_under_load_ms_ago.is_none());

        dev.set_under_load(Some(true));
        let mut out = [0u8; 200];
        let from = "192.0.2.66:4000".parse().unwrap();
        let r = dev.decapsulate(now, &mut rng, from, &init[..len], &mut out);
        assert_eq!(r, Ok(wg::Action::Send { to: from, len: 64 }), "a cookie reply");
        let l = wireguard_load(&dev, now + core::time::Duration::from_millis(5), Some(&before));
        assert!(l.under_load);
        assert_eq!((l.cookie_replies_sent, l.cookie_replies_sent_since_mark), (1, Some(1)));
        assert_eq!(l.refused_under_load_since_mark, Some(0));
        // Forcing is not a crossing of the measured limit.
        assert_eq!(l.last_under_load_ms_ago, None);
        assert_eq!(wireguard_load(&dev, now, Some(&WgMark::of(&dev))).cookie_replies_sent_since_mark, Some(0));
        assert_eq!(wireguard_load(&dev, now, None).cookie_replies_sent_since_mark, None);
    }
}

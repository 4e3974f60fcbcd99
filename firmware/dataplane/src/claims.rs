//! Claim state: when a proxy-ARP claim captures, and on what proof it stops
//! and starts again.
//!
//! A proxy-ARP claim answers ARP for an address that lives elsewhere. The
//! one thing it must never do is answer for an address a live host on the
//! LAN uses: that hijacks the host. So the box asks before it answers:
//!
//! ```text
//!            new claim / enabled           hold passed, host silent        operator
//!                  │                              │                          │
//!                  ▼                              ▼                          ▼
//!   ┌──────────► Probing ── probe answered ──► InConflict ◄── live host ── Active
//!   │   (3 ARP probes, sender 0.0.0.0,          (no replies,   (ARP from     │
//!   │    200 ms apart, 200 ms more)              no GARPs)      the address) │
//!   │              │                                                          │
//!   │              └── nobody answered ──► Active (gratuitous ARPs) ──────────┘
//! ```
//!
//! * **Probing** (RFC 5227 style): ARP requests with sender address 0.0.0.0
//!   for the claimed address. Any ARP whose sender address is the claim's,
//!   from a MAC that is not the box's, answers the probe; so does another
//!   host probing for the same address (RFC 5227 §2.1.1). While probing the
//!   box neither answers ARP for the address nor announces it.
//! * **InConflict**: every frame that shows the live host (ARP from the
//!   address, IPv4 from it on the capture port, a probe for it) refreshes
//!   `heard`. Once the host has been silent for the claim's conflict hold,
//!   the box probes again; only an unanswered probe returns it to Active.
//!   The operator can ask for that probe at once (`probe_now`), never for
//!   capture without one.
//! * **Active**: the gratuitous ARPs go out only after an unanswered probe,
//!   so the box never announces an address that answered.
//!
//! Every transition is recorded as a [`ClaimEvent`] with its reason for the
//! control plane to log. Only proxy-ARP claims probe; provider-secondary-ip
//! and local claims never answer ARP and are Active (or Disabled).

use core::fmt;
use core::net::Ipv4Addr;

use crate::config::{ClaimConfig, Mac, PortId, Timing};
use crate::counters::ClaimCounters;
use crate::ratelimit::TokenBucket;
use crate::time::Instant;

/// State of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// Capturing (remote) or delivering (local).
    Active,
    /// Asking, with ARP probes, whether a live host uses the address.
    Probing,
    /// The address was seen live on a LAN: proxy-ARP stopped.
    InConflict,
    /// Disabled by the control plane: no ARP, no /32 route.
    Disabled,
}

/// Why a claim is probing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeReason {
    /// A new claim (or one enabled again): ask before the first capture.
    New,
    /// In conflict, and the live host has been silent this long.
    HostSilent {
        /// Milliseconds since the host was last heard.
        silent_ms: u64,
    },
    /// The operator asked (`routerctl claims clear-conflict`).
    Operator,
}

/// What showed a live host on the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// An ARP request from the address (an announcement, or asking for someone).
    ArpRequest,
    /// An ARP reply from the address (e.g. to the box's probe).
    ArpReply,
    /// Another host probing for the address (it is about to take it).
    ArpProbe,
    /// An IPv4 packet from the address on the capture port.
    Ipv4,
}

/// A claim changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimEvent {
    /// The claimed address.
    pub address: Ipv4Addr,
    /// When.
    pub at: Instant,
    /// What happened.
    pub kind: ClaimEventKind,
}

/// The transitions of [`ClaimEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimEventKind {
    /// A live host uses the address: capture stopped.
    Conflict {
        /// The live host.
        mac: Mac,
        /// Where it was seen.
        port: PortId,
        /// How.
        evidence: Evidence,
    },
    /// Probes started.
    Probing {
        /// Why.
        reason: ProbeReason,
    },
    /// A probe was answered: the address is in use; the claim is in conflict.
    InUse {
        /// Who answered.
        mac: Mac,
        /// How.
        evidence: Evidence,
        /// Why the box was probing.
        reason: ProbeReason,
    },
    /// Nobody answered the probes: capturing.
    Captured {
        /// Why the box was probing.
        reason: ProbeReason,
        /// Probes sent.
        probes: u8,
    },
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Evidence::ArpRequest => "ARP request",
            Evidence::ArpReply => "ARP reply",
            Evidence::ArpProbe => "ARP probe",
            Evidence::Ipv4 => "IPv4 packet",
        })
    }
}

impl fmt::Display for ProbeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeReason::New => f.write_str("a new claim asks before it answers"),
            ProbeReason::HostSilent { silent_ms } => write!(f, "the live host has been silent for {} s", silent_ms / 1000),
            ProbeReason::Operator => f.write_str("the operator asked to clear the conflict"),
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`, the way operators write MACs.
pub struct MacText(pub Mac);

impl fmt::Display for MacText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0 .0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Display for ClaimEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.address;
        match self.kind {
            ClaimEventKind::Conflict { mac, evidence, .. } => {
                write!(f, "claim {a}: CONFLICT: a live host {} uses this address (seen in an {evidence}); proxy-ARP stopped", MacText(mac))
            }
            ClaimEventKind::Probing { reason } => write!(f, "claim {a}: probing with ARP: {reason}"),
            ClaimEventKind::InUse { mac, evidence, .. } => {
                write!(f, "claim {a}: still in use: {} answered the probe ({evidence}); not capturing", MacText(mac))
            }
            ClaimEventKind::Captured { probes, .. } => {
                write!(f, "claim {a}: capturing: {probes} ARP probes unanswered; gratuitous ARPs follow")
            }
        }
    }
}

/// What the timer step asks the pipeline to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Send {
    Nothing,
    Probe,
    Garp,
}

/// The runtime of one claim (carried across applies by address).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimRuntime {
    pub state: ClaimState,
    pub counters: ClaimCounters,
    /// The live host last seen using the address.
    pub conflict_mac: Option<[u8; 6]>,
    /// When the live host was last heard.
    pub heard: Option<Instant>,
    /// Probing: probes still to send; the next (or the verdict) at `probe_next`.
    pub probes_left: u8,
    pub probe_next: Instant,
    pub probe_reason: ProbeReason,
    pub garp_left: u8,
    pub garp_next: Instant,
    pub replies: TokenBucket,
}

impl ClaimRuntime {
    /// A claim as it starts: proxy-ARP claims probe first (unless probing
    /// is configured off), the others are Active.
    pub fn new(cfg: &ClaimConfig, t: &Timing, now: Instant) -> ClaimRuntime {
        let mut rt = ClaimRuntime {
            state: ClaimState::Active,
            counters: ClaimCounters::default(),
            conflict_mac: None,
            heard: None,
            probes_left: 0,
            probe_next: now,
            probe_reason: ProbeReason::New,
            garp_left: 0,
            garp_next: now,
            replies: TokenBucket::new(t.arp_reply_rate, t.arp_reply_burst, now),
        };
        rt.start(cfg, t, now);
        rt
    }

    /// Enter service: probe (proxy-ARP) or capture at once.
    pub fn start(&mut self, cfg: &ClaimConfig, t: &Timing, now: Instant) {
        if cfg.is_proxy_arp() && t.probe_count > 0 {
            self.probe(ProbeReason::New, t, now);
        } else {
            self.activate(cfg, now);
        }
    }

    pub fn probe(&mut self, reason: ProbeReason, t: &Timing, now: Instant) {
        self.state = ClaimState::Probing;
        self.probes_left = t.probe_count;
        self.probe_next = now;
        self.probe_reason = reason;
        self.garp_left = 0;
    }

    fn activate(&mut self, cfg: &ClaimConfig, now: Instant) {
        self.state = ClaimState::Active;
        self.garp_left = if cfg.is_proxy_arp() { cfg.garp_count } else { 0 };
        self.garp_next = now;
    }

    /// A frame showed a live host on the address. Returns the transition,
    /// if the state changed.
    pub fn live_host(&mut self, mac: Mac, port: PortId, evidence: Evidence, now: Instant) -> Option<ClaimEventKind> {
        match self.state {
            ClaimState::Disabled => return None,
            // A probe alone does not take an active capture away: the
            // announcement that follows it does (see the pipeline docs).
            ClaimState::Active if evidence == Evidence::ArpProbe => return None,
            _ => {}
        }
        let before = self.state;
        self.heard = Some(now);
        self.conflict_mac = Some(mac.0);
        self.state = ClaimState::InConflict;
        self.garp_left = 0;
        match before {
            ClaimState::Active => {
                self.counters.conflicts = self.counters.conflicts.saturating_add(1);
                Some(ClaimEventKind::Conflict { mac, port, evidence })
            }
            ClaimState::Probing => {
                self.counters.probes_answered = self.counters.probes_answered.saturating_add(1);
                if self.probe_reason == ProbeReason::New {
                    self.counters.conflicts = self.counters.conflicts.saturating_add(1);
                }
                Some(ClaimEventKind::InUse { mac, evidence, reason: self.probe_reason })
            }
            ClaimState::InConflict | ClaimState::Disabled => None,
        }
    }

    /// The timer step at `now`: what to send, and a transition if any.
    pub fn poll(&mut self, cfg: &ClaimConfig, t: &Timing, now: Instant) -> (Send, Option<ClaimEventKind>) {
        match self.state {
            ClaimState::Probing if now >= self.probe_next => {
                if self.probes_left > 0 {
                    let first = self.probes_left == t.probe_count;
                    self.probes_left -= 1;
                    self.probe_next = now.plus_millis(t.probe_interval_ms);
                    self.counters.probes_sent = self.counters.probes_sent.saturating_add(1);
                    let event = first.then_some(ClaimEventKind::Probing { reason: self.probe_reason });
                    return (Send::Probe, event);
                }
                let reason = self.probe_reason;
                self.activate(cfg, now);
                (Send::Nothing, Some(ClaimEventKind::Captured { reason, probes: t.probe_count }))
            }
            ClaimState::InConflict => {
                let heard = self.heard.unwrap_or(now);
                let silent_ms = now.millis_since(heard);
                if silent_ms >= cfg.conflict_hold_ms && t.probe_count > 0 {
                    self.probe(ProbeReason::HostSilent { silent_ms }, t, now);
                    return self.poll(cfg, t, now);
                }
                (Send::Nothing, None)
            }
            ClaimState::Active if self.garp_left > 0 && now >= self.garp_next => {
                self.garp_left -= 1;
                self.garp_next = now.plus_millis(t.garp_interval_ms);
                self.counters.garps_sent = self.counters.garps_sent.saturating_add(1);
                (Send::Garp, None)
            }
            _ => (Send::Nothing, None),
        }
    }

    /// When [`ClaimRuntime::poll`] next has something to do.
    pub fn deadline(&self, cfg: &ClaimConfig, t: &Timing) -> Option<Instant> {
        match self.state {
            ClaimState::Probing => Some(self.probe_next),
            ClaimState::InConflict if t.probe_count > 0 => self.heard.map(|h| h.plus_millis(cfg.conflict_hold_ms)),
            ClaimState::Active if self.garp_left > 0 => Some(self.garp_next),
            _ => None,
        }
    }
}

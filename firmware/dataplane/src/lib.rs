//! The routerd packet pipeline (sans-I/O, `no_std`).
//!
//! The caller hands in `(now, port, frame)` and gets back what to transmit
//! where; `poll_at()` says when timers next need a `poll(now)`. Nothing here
//! knows about hardware, clocks or allocation:
//!
//! ```text
//!   NIC rx ──► FrameBuf (frame at HEADROOM) ──► Dataplane::process(now, port, buf, tunnel, tx)
//!                                                 │  Verdict::Transmit(port): send buf.frame() (edited in place)
//!                                                 │  Verdict::Consumed: dropped+counted / parked / answered via tx
//!                                                 └► tx.send(port, frame): extra frames (floods, released, GARP)
//!   timer  ──► Dataplane::poll(now, tunnel, tx) ; Dataplane::poll_at(tunnel)
//! ```
//!
//! What it does — proxy-ARP capture and provider-secondary-ip capture of /32
//! claims, delivery over a WireGuard [`Tunnel`] and onto the LAN, LPM
//! routing with a loop guard, ICMP errors, TCP MSS clamping, VXLAN bridging —
//! and every design choice is documented in [`pipeline`]; tables and
//! capacities are in `PIPELINE.md`.
//!
//! Packet views: `smoltcp::wire` is used for Ethernet, ARP, IPv4, UDP, TCP and
//! ICMPv4 (its views edit in place over `&mut [u8]`, so they do not get in the
//! way of zero-copy). Our own, in the same style: the VXLAN header
//! ([`vxlan`]), the MSS option walk and rewrite ([`mss`]: smoltcp's option
//! parser returns values, not positions) and RFC 1624 incremental checksums
//! ([`checksum`]).
//!
//! Panic contract: no `unwrap`/`expect`, no unchecked indexing on packet data
//! in this crate; smoltcp accessors are only used after `new_checked`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// One allocation, when a dataplane is built: the connection-tracking table
// (see `conntrack`). Nothing allocates per packet.
extern crate alloc;

pub mod buf;
pub mod checksum;
pub mod claims;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod fdb;
pub mod firewall;
pub mod mss;
pub mod neighbor;
pub mod pipeline;
pub mod ratelimit;
pub mod route;
pub mod time;
pub mod tunnel;
pub mod vxlan;

pub use buf::{FrameBuf, BUF_SIZE, HEADROOM, MAX_FRAME, TAILROOM};
pub use claims::{ClaimEvent, ClaimEventKind, ClaimState, Evidence, MacText, ProbeReason};
pub use config::{
    Capture, ClaimConfig, ClaimSide, Config, ConfigError, Mac, Medium, NatRule, PeerConfig, PeerId, PortConfig, PortId, PortRole, Prefix,
    SegmentConfig, Timing, TunnelConfig,
};
pub use conntrack::{Conntrack, Dir, Proto, State, Tuple, Zone};
pub use counters::{ClaimCounters, Counters, DropReason, Flow};
pub use firewall::{Action, Firewall, FirewallCounters, Policy, ProtoMatch, Rule};
pub use pipeline::{ClaimStatus, Dataplane, Local, LocalFrom, ProbeRefused, Transmit, Verdict, MAX_BGP_PEERS, MAX_LEARNED_VTEPS};
pub use route::{NextHop, RouteError, RouteOrigin, RunRoute};
pub use time::Instant;
pub use tunnel::{Endpoint, NoTunnel, Opened, Sealed, Tunnel};

//! The configuration of one routerd box, shared by the image and `routerctl`.
//!
//! - `Config` and its parts (`config`) are both the TOML file an operator
//!   writes and the postcard message that travels over the serial line.
//! - `validate_for(&config, platform)` (`validate`) is the one check both
//!   sides run: routerctl before sending, the box before applying, for the
//!   platform that runs it (`platform`: the image or routerd-host; what each
//!   runs). `validate()` makes the checks every platform makes. Both report
//!   every problem with the field path, the value and a hint.
//! - `budget` computes the MTU/MSS budget (1500 − 80 − 50 = 1370).
//! - `wire` encodes/decodes the postcard form within `CONFIG_WIRE_MAX` bytes
//!   and carries `SCHEMA_HASH`, which the serial protocol's hello exchanges.
//! - `human` (feature `toml`, host only) reads and writes the TOML form.
//!
//! `no_std`, no allocation: every list and string has a fixed capacity
//! (`limits`), so the image holds a configuration in static memory.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod budget;
pub mod config;
pub mod firewall;
#[cfg(feature = "toml")]
pub mod human;
pub mod limits;
pub mod platform;
pub mod types;
pub mod validate;
pub mod wire;

#[cfg(test)]
mod testutil;

pub use config::{
    Bgp, BgpPeer, Capture, CaptureMethod, Claim, ClaimAction, Config, Delivery, Device, Dns, Peer, Port, PortRole, Segment, SegmentControl,
    Tunnel,
};
pub use firewall::{Firewall, Nat, PortRange, Protocol, Zone};
pub use limits::CONFIG_WIRE_MAX;
pub use platform::{Platform, Runs, RUNS};
pub use types::{DnsName, Endpoint, Host, Ipv4Cidr, KeyRef, Mac, MssClamp, Name, PortAddress, PublicKey};
pub use validate::{validate, validate_each, validate_each_for, validate_for, Code, Problem, Report, Severity};
pub use wire::{decode, encode, WireError, SCHEMA_HASH, SCHEMA_VERSION};

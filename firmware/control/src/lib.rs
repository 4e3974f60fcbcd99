//! The box's control plane, shared by the image and the host build.
//!
//! - [`build`] turns a validated `config-schema` configuration plus the NICs
//!   the platform found into the dataplane's runtime configuration and the
//!   WireGuard peers: ports are bound to NICs (by MAC when the configuration
//!   names one, else by contract name `lan0`, `wan0`, …), claims become
//!   capture or local delivery for this box's side, peers get their ids.
//!   Everything a build cannot do yet is refused with the configuration path
//!   it concerns, before anything changes.
//! - [`WgTunnel`] is the dataplane's [`Tunnel`](routerd_dataplane::Tunnel)
//!   implemented on `routerd-wireguard`.
//! - [`Node`] answers provisioning requests; [`run::Forwarder`] is the
//!   forwarding turn every Ethernet platform runs over its NICs.
#![no_std]

extern crate alloc;

pub mod build;
pub mod node;
pub mod run;
pub mod tunnel;

pub use build::{build, BuildError, ContractName, NicInfo, Runtime, TunnelPlan};
pub use node::{Bind, NicSnapshot, Node, WgDevice};
pub use run::{Forwarder, Nics};
pub use tunnel::WgTunnel;

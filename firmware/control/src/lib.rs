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
//!
//! What a box runs is written once, in `config_schema::platform` (`RUNS`),
//! which validation checks configurations against; the node validates every
//! candidate for its own platform ([`Node::set_platform`]). The dataplane does
//! not depend on `config-schema`, so this crate, which sees both, asserts at
//! compile time that every table sized by a limit (the dataplane's, its own,
//! the WireGuard device's) holds exactly what validation accepts.
#![no_std]

extern crate alloc;

pub mod bgp;
pub mod build;
pub mod capture;
pub mod dhcp;
pub mod dns;
mod history;
mod keys;
pub mod node;
pub mod persist;
pub mod run;
pub mod services;
pub mod tcp;
pub mod tunnel;

pub use build::{build, BuildError, ContractName, NicInfo, NicWanted, Runtime, TunnelPlan};
pub use node::{Bind, Event, NicSnapshot, Node, RevertNote, WgDevice};
pub use persist::{RestoreError, Saved};
pub use run::{Forwarder, Nics};
pub use services::{Services, WithServices};
pub use tunnel::WgTunnel;

/// Every limit pair, tied at compile time. A failure here means a table and
/// `config_schema::RUNS` (src/platform.rs) disagree: change both, and
/// validation, the docs and the tests follow `RUNS`.
mod limits {
    use config_schema::{limits as schema, RUNS};
    use routerd_dataplane::config as dp;
    use routerd_provision::message as msg;

    // Ports: the dataplane's port table, the NICs a node binds.
    const _: () = assert!(dp::MAX_PORTS == RUNS.ports, "dataplane ports != RUNS.ports");
    const _: () = assert!(crate::build::MAX_NICS == RUNS.ports, "NICs != RUNS.ports");
    const _: () = assert!(RUNS.ports <= schema::MAX_PORTS);
    const _: () = assert!(dp::MAX_PORT_MTU == RUNS.port_mtu_max, "dataplane port MTU != RUNS.port_mtu_max");
    // Tunnels: `build` drives the first [[wireguard]] only.
    const _: () = assert!(crate::build::MAX_TUNNELS == RUNS.tunnels, "build's tunnels != RUNS.tunnels");
    const _: () = assert!(RUNS.tunnels <= schema::MAX_TUNNELS);
    // Key slots: a private key per tunnel and a preshared key per peer.
    const _: () = assert!(msg::MAX_KEYS >= RUNS.tunnels + RUNS.peers, "key slots < tunnels + peers");
    // Peers: the dataplane's peer table, the tunnel plan, the WireGuard device.
    const _: () = assert!(dp::MAX_PEERS == RUNS.peers, "dataplane peers != RUNS.peers");
    const _: () = assert!(crate::build::MAX_PEERS == RUNS.peers);
    const _: () = assert!(RUNS.peers <= schema::MAX_PEERS && RUNS.peers <= u16::MAX as usize);
    // Allowed IPs per peer: the dataplane's per-peer list (the tunnel plan uses it too).
    const _: () = assert!(dp::MAX_ALLOWED_PER_PEER == RUNS.allowed_ips_per_peer, "allowed IPs per peer != RUNS");
    const _: () = assert!(RUNS.allowed_ips_per_peer <= schema::MAX_ALLOWED_IPS);
    // WireGuard routes: the device's allowed-IPs table holds every peer's
    // prefixes together; validation bounds the total (`tunnel-routes`).
    const _: () = assert!(crate::node::WG_ROUTES == RUNS.tunnel_routes, "WG_ROUTES != RUNS.tunnel_routes");
    // The dataplane's route list: connected subnets, every allowed prefix, the default route.
    const _: () = assert!(routerd_dataplane::route::MAX_ROUTES > RUNS.ports + RUNS.peers * RUNS.allowed_ips_per_peer);
    // Claims, segments, VTEPs.
    const _: () = assert!(dp::MAX_CLAIMS == RUNS.claims, "dataplane claims != RUNS.claims");
    const _: () = assert!(RUNS.claims <= schema::MAX_CLAIMS);
    const _: () = assert!(dp::MAX_SEGMENTS == RUNS.segments, "dataplane segments != RUNS.segments");
    const _: () = assert!(RUNS.segments <= schema::MAX_SEGMENTS);
    const _: () = assert!(dp::MAX_VTEPS == RUNS.vteps_per_segment, "dataplane VTEPs != RUNS.vteps_per_segment");
    const _: () = assert!(RUNS.vteps_per_segment <= schema::MAX_VTEPS);
    // SNAT rules, firewall rules and policies, the flow table.
    const _: () = assert!(dp::MAX_NAT_RULES == RUNS.nat, "dataplane NAT rules != RUNS.nat");
    const _: () = assert!(routerd_dataplane::firewall::MAX_RULES == RUNS.firewall_rules, "firewall rules != RUNS");
    const _: () = assert!(routerd_dataplane::firewall::MAX_POLICIES == RUNS.firewall_policies, "firewall policies != RUNS");
    const _: () = assert!(routerd_dataplane::conntrack::CONNTRACK_ENTRIES == RUNS.conntrack, "flow table != RUNS.conntrack");
    const _: () = assert!(RUNS.nat <= schema::MAX_NAT && RUNS.firewall_rules <= schema::MAX_FIREWALL_RULES);
    const _: () = assert!(RUNS.firewall_policies <= schema::MAX_FIREWALL_POLICIES);
    // Status reports every port, peer and claim a box runs.
    const _: () = assert!(msg::MAX_PORT_STATUS >= RUNS.ports && msg::MAX_PEER_STATUS >= RUNS.peers && msg::MAX_CLAIM_STATUS >= RUNS.claims);
}

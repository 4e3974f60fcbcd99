//! routerd-host as a library: the pieces of the Linux userspace router, for
//! the `routerd-host` binary and its tests.
//!
//! - [`setup`]: TOML → validated config → ports opened; any configuration →
//!   what `routerd_control` binds on this host.
//! - [`router`]: `routerd_control::Node` (the image's control plane) and the
//!   tokio current-thread loop that runs the image's forwarding turn
//!   (`routerd_control::Forwarder`) over routerd-host's NICs.
//! - [`control`]: the provisioning protocol on a unix socket (`routerctl
//!   --port unix:PATH`).
//! - [`nic`]: the NICs as `routerd_netdev::NetDevice`s — a TAP device per
//!   LAN port, and [`wan`]: the WAN port as a UDP socket (datagram medium).
//! - [`tap`]: TAP/TUN devices.
//! - [`linux`]: captured-address enforcement and forward-path findings
//!   ([`linux::LinuxFindings`], for `doctor hybrid`).
//! - [`key`]: the WireGuard key (generated, or a 0600 key file).
//! - [`state`]: `--state-dir`, the image's store in a file.
//! - [`evpn`]: log lines for BGP sessions and EVPN segments.

pub mod control;
pub mod evpn;
pub mod key;
pub mod linux;
pub mod logger;
pub mod nic;
pub mod router;
pub mod setup;
pub mod state;
pub mod tap;
pub mod wan;

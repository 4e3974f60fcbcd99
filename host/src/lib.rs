//! routerd-host as a library: the pieces of the Linux userspace router, for
//! the `routerd-host` binary and its tests.
//!
//! - [`setup`]: TOML → validated config → ports opened; any configuration →
//!   what `routerd_control` binds on this host.
//! - [`router`]: `routerd_control::Node` (the image's control plane) and the
//!   tokio current-thread loop over TAP fds and the WAN shim.
//! - [`control`]: the provisioning protocol on a unix socket (`routerctl
//!   --port unix:PATH`).
//! - [`wan`], [`frame`], [`v6map`]: the WAN port as a UDP socket.
//! - [`tap`]: TAP/TUN devices.
//! - [`linux`]: captured-address enforcement and forward-path findings
//!   ([`linux::LinuxFindings`], for `doctor hybrid`).
//! - [`key`]: the WireGuard key (generated, or a 0600 key file).
//! - [`state`]: `--state-dir`, the image's store in a file.
//! - [`evpn`]: log lines for BGP sessions and EVPN segments.

pub mod control;
pub mod evpn;
pub mod frame;
pub mod key;
pub mod linux;
pub mod logger;
pub mod router;
pub mod setup;
pub mod state;
pub mod tap;
pub mod v6map;
pub mod wan;

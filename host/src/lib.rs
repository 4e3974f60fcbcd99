//! routerd-host as a library: the pieces of the Linux userspace router, for
//! the `routerd-host` binary, its tests, and the shared controller that will
//! drive the same [`engine::Engine`].
//!
//! - [`setup`]: TOML → validated config → ports opened → `routerd_control::build`.
//! - [`engine`]: dataplane + WireGuard + rng, the one thing the loop drives.
//! - [`router`]: the tokio current-thread loop over TAP fds and the WAN shim.
//! - [`wan`], [`frame`], [`v6map`]: the WAN port as a UDP socket.
//! - [`tap`]: TAP/TUN devices.
//! - [`linux`]: captured-address enforcement and forward-path findings
//!   ([`linux::LinuxFindings`], for `doctor hybrid`).
//! - [`key`]: the WireGuard key (generated, or a 0600 key file).

pub mod engine;
pub mod frame;
pub mod key;
pub mod linux;
pub mod logger;
pub mod router;
pub mod setup;
pub mod tap;
pub mod v6map;
pub mod wan;

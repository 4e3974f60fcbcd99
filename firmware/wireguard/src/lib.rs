//! WireGuard as a sans-I/O state machine (`no_std`).
//!
//! The whole protocol of the WireGuard paper: the Noise_IKpsk2 handshake
//! with pre-shared keys, mac1/mac2 and cookie replies under load, transport
//! data with 64-bit counters and a replay window, padding, keepalives and
//! every timer rule, session rotation (previous/current/next), endpoint
//! roaming and key zeroing — for many peers with cryptokey routing.
//!
//! Time and randomness are parameters; datagrams and output buffers belong to
//! the caller. Results are values ([`Action`]): send a datagram to an
//! endpoint, deliver an inner packet from a peer, or nothing. Malformed,
//! unauthenticated or replayed input is an [`Error`] and a named counter,
//! never a panic. Nothing allocates per packet (ring keeps its keys inline;
//! the crate does not allocate at all, but `ring` expects a global allocator
//! to exist in the final binary).
//!
//! Start at [`Device`].
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod allowed_ips;
pub mod cookie;
pub mod crypto;
pub mod device;
pub mod error;
pub mod handshake;
pub mod index;
pub mod key;
pub mod replay;
pub mod session;
pub mod time;
pub mod timers;
pub mod wire;

#[cfg(test)]
mod test_rng;
#[cfg(test)]
mod tests;

pub use allowed_ips::AllowedIps;
pub use device::{Action, Config, DecapsulateJob, Device, EncapsulateJob, Load, PeerConfig, PeerStatus, HEADROOM};
pub use error::{ConfigError, Counters, Error};
pub use key::{PresharedKey, PublicKey, SecretKey};
pub use time::Instant;

/// A peer's slot in its [`Device`]; stable until the peer is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u16);

/// Worst-case bytes a datagram adds to an inner packet of `inner_len`
/// (header, tag, padding).
pub const fn datagram_len(inner_len: usize) -> usize {
    wire::TRANSPORT_OVERHEAD + ((inner_len + 15) & !15)
}

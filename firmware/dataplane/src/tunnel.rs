//! The interface between the dataplane and a WireGuard implementation.
//!
//! Division of work: the dataplane owns the WAN address, the WireGuard UDP
//! listen port, the underlay UDP/IPv4/Ethernet headers and gateway ARP on an
//! Ethernet WAN (on a datagram WAN, routerd-host's UDP socket, the kernel
//! owns them and the dataplane hands over the payload and endpoint); the
//! tunnel owns keys, sessions, handshakes, timers and its own copy of the
//! cryptokey routing table. Both work in the caller's frame buffer so that
//! nothing is copied:
//!
//! * egress: the plaintext inner IPv4 packet sits at `buf[inner]` with at
//!   least [`TUNNEL_HEADROOM`] bytes before it and [`TUNNEL_TAILROOM`] after
//!   it; the tunnel seals it (in place or anywhere in `buf`) and says where
//!   the UDP payload is and to which endpoint it goes. The dataplane needs 42
//!   bytes in front of the returned range for UDP + IPv4 + Ethernet (if a
//!   tunnel puts it closer to the front the frame is moved once).
//! * ingress: the UDP payload sits at `buf[datagram]`; the tunnel opens it and
//!   returns the inner packet's range and the peer it came from, or a reply
//!   (handshake response, cookie) to send back, or nothing.
//!
//! **Cryptokey routing on ingress is checked by the dataplane** against
//! [`crate::PeerConfig::allowed`] (the inner source must be inside the
//! sending peer's prefixes), so the rule holds — and is tested here — for
//! every tunnel implementation. A tunnel may check as well; a packet it
//! refuses is reported as [`Opened::Rejected`].

use core::ops::Range;

use crate::config::PeerId;
use crate::time::Instant;

/// Bytes the tunnel may write in front of the inner packet (WireGuard's data
/// message header is 16).
pub const TUNNEL_HEADROOM: usize = 16;
/// Bytes the tunnel may write behind the inner packet (WireGuard: 16-byte tag
/// + up to 15 bytes padding).
pub const TUNNEL_TAILROOM: usize = 32;

/// A UDP endpoint on the underlay: IPv4 on any WAN, IPv6 only on a
/// datagram WAN (an Ethernet WAN drops a datagram for an IPv6 endpoint:
/// `underlay_ipv6`).
pub type Endpoint = core::net::SocketAddr;

/// Result of sealing a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealed {
    /// Send `buf[range]` as a UDP payload to `to`.
    Datagram {
        /// Where the UDP payload is in the buffer.
        range: Range<usize>,
        /// Where it goes.
        to: Endpoint,
    },
    /// The tunnel kept the packet (e.g. queued until a handshake completes)
    /// and has nothing to send right now.
    Held,
    /// The tunnel dropped the packet (no session, no endpoint, …).
    Failed,
}

/// Result of opening a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A data packet: the inner IPv4 packet is `buf[range]`, from `peer`.
    Packet {
        /// Who sent it.
        peer: PeerId,
        /// Where the inner packet is.
        range: Range<usize>,
    },
    /// Send `buf[range]` back as a UDP payload to `to` (handshake response,
    /// cookie reply).
    Reply {
        /// Where the UDP payload is.
        range: Range<usize>,
        /// Where it goes.
        to: Endpoint,
    },
    /// Consumed (keepalive, handshake completed, …): nothing to do.
    Consumed,
    /// Refused (authentication failure, replay, unknown index, …).
    Rejected,
}

/// A WireGuard interface as the dataplane drives it.
pub trait Tunnel {
    /// Seal the inner packet `buf[inner]` for `peer`.
    fn seal(&mut self, now: Instant, peer: PeerId, buf: &mut [u8], inner: Range<usize>) -> Sealed;

    /// Open the UDP payload `buf[datagram]` that arrived from `from`.
    fn open(&mut self, now: Instant, from: Endpoint, buf: &mut [u8], datagram: Range<usize>) -> Opened;

    /// Run timers (handshake retries, keepalives). Writes at most one
    /// datagram into `buf` and returns its range and endpoint; the dataplane
    /// calls it again until it returns `None` (bounded per poll).
    fn poll(&mut self, now: Instant, buf: &mut [u8]) -> Option<(Range<usize>, Endpoint)>;

    /// When [`Tunnel::poll`] next needs to run.
    fn poll_at(&self) -> Option<Instant>;

    /// Milliseconds since the last completed handshake with `peer` (`None`:
    /// none yet, or unknown). The resolver re-resolves a peer's DNS name
    /// when this grows stale.
    fn handshake_age_ms(&self, peer: PeerId, now: Instant) -> Option<u64> {
        let _ = (peer, now);
        None
    }
}

/// A tunnel with no peers: every seal fails, every datagram is rejected.
/// For boxes configured without WireGuard and for tests of the other paths.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTunnel;

impl Tunnel for NoTunnel {
    fn seal(&mut self, _: Instant, _: PeerId, _: &mut [u8], _: Range<usize>) -> Sealed {
        Sealed::Failed
    }
    fn open(&mut self, _: Instant, _: Endpoint, _: &mut [u8], _: Range<usize>) -> Opened {
        Opened::Rejected
    }
    fn poll(&mut self, _: Instant, _: &mut [u8]) -> Option<(Range<usize>, Endpoint)> {
        None
    }
    fn poll_at(&self) -> Option<Instant> {
        None
    }
}

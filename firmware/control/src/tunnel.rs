//! The dataplane's tunnel, implemented on `routerd-wireguard`.
//!
//! The dataplane works in milliseconds, WireGuard in nanoseconds: `now` is
//! widened on the way in, deadlines rounded up on the way out (so the
//! dataplane never wakes the tunnel early). Peer ids are shared: dataplane
//! peer `i` is WireGuard peer `i` ([`crate::build`] numbers both).
//! WireGuard's own counters record every refusal; the dataplane counts the
//! outcome. Endpoints pass through as they are, IPv6 included: the dataplane
//! sends those on a datagram WAN and drops them, counted, on an Ethernet
//! one (`underlay_ipv6`).

use core::ops::Range;
use rand_core::{CryptoRng, RngCore};
use routerd_dataplane::{Endpoint, Instant, Opened, PeerId, Sealed, Tunnel};
use routerd_wireguard::{self as wg, Action, Device};

/// A WireGuard device and the randomness it draws on.
pub struct WgTunnel<'a, const PEERS: usize, const ROUTES: usize, R> {
    pub device: &'a mut Device<PEERS, ROUTES>,
    pub rng: &'a mut R,
}

fn wg_now(now: Instant) -> wg::Instant {
    wg::Instant::from_millis(now.millis())
}

impl<const PEERS: usize, const ROUTES: usize, R: RngCore + CryptoRng> Tunnel for WgTunnel<'_, PEERS, ROUTES, R> {
    fn seal(&mut self, now: Instant, peer: PeerId, buf: &mut [u8], inner: Range<usize>) -> Sealed {
        let Some(start) = inner.start.checked_sub(wg::HEADROOM) else { return Sealed::Failed };
        let Some(window) = buf.get_mut(start..) else { return Sealed::Failed };
        match self.device.encapsulate_to(wg::PeerId(peer.0), wg_now(now), self.rng, window, inner.len()) {
            Ok(Action::Send { to, len }) => Sealed::Datagram { range: start..start + len, to },
            Ok(_) => Sealed::Held,
            Err(_) => Sealed::Failed,
        }
    }

    fn open(&mut self, now: Instant, from: Endpoint, buf: &mut [u8], datagram: Range<usize>) -> Opened {
        let start = datagram.start;
        let Some(window) = buf.get_mut(datagram) else { return Opened::Rejected };
        match self.device.decapsulate_in_place(wg_now(now), self.rng, from, window) {
            Ok(Action::Deliver { peer, offset, len }) => {
                Opened::Packet { peer: PeerId(peer.0), range: start + offset..start + offset + len }
            }
            Ok(Action::Send { to, len }) => Opened::Reply { range: start..start + len, to },
            Ok(Action::None) => Opened::Consumed,
            Err(_) => Opened::Rejected,
        }
    }

    fn poll(&mut self, now: Instant, buf: &mut [u8]) -> Option<(Range<usize>, Endpoint)> {
        match self.device.poll(wg_now(now), self.rng, buf) {
            Action::Send { to, len } => Some((0..len, to)),
            _ => None,
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        self.device.poll_at().map(|t| Instant::from_millis(t.as_nanos().div_ceil(1_000_000)))
    }

    fn handshake_age_ms(&self, peer: PeerId, now: Instant) -> Option<u64> {
        let at = self.device.peer_status(wg::PeerId(peer.0), wg_now(now))?.last_handshake?;
        Some(wg_now(now).as_nanos().saturating_sub(at.as_nanos()) / 1_000_000)
    }
}

//! The one error type of the crate and the drop counters that go with it.
//!
//! Every datagram or inner packet the crate refuses is reported as an
//! [`Error`] value *and* counted: [`Counters`] has one named counter per error
//! kind, so an operator sees why packets were dropped without logs. Config
//! mistakes (a full table, a duplicate key) are [`ConfigError`]s, which are
//! not counted: they are answered to whoever made them.

/// Why a datagram, an inner packet or a timer action was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Error {
    /// The caller's buffer cannot hold the result.
    BufferTooSmall,
    /// A datagram whose length does not fit its message type.
    Malformed,
    /// A datagram whose first four bytes are not a WireGuard message type.
    UnknownType,
    /// A handshake message whose mac1 is wrong (not meant for this key).
    BadMac1,
    /// Under load: a handshake source exceeded its rate.
    RateLimited,
    /// A handshake message whose static key, timestamp or empty payload
    /// failed to authenticate.
    HandshakeDecrypt,
    /// A handshake initiation from a static key that is not a configured peer.
    UnknownPeer,
    /// A handshake initiation with a timestamp not newer than the last one.
    HandshakeReplay,
    /// A peer sent initiations faster than one per 20 ms.
    HandshakeFlood,
    /// A handshake response or cookie reply that matches no initiation we sent.
    UnexpectedHandshake,
    /// A cookie reply that failed to decrypt.
    CookieDecrypt,
    /// A Diffie-Hellman result of all zeros (a low-order point).
    WeakKey,
    /// A transport message for a receiver index we do not know.
    UnknownIndex,
    /// A transport message that failed to authenticate.
    Decrypt,
    /// A transport counter already seen or too old for the window.
    Replay,
    /// A transport message on a session past REJECT_AFTER_TIME.
    SessionExpired,
    /// A decrypted inner packet that is not a well-formed IPv4/IPv6 packet.
    InnerMalformed,
    /// A decrypted inner packet whose source is not in the peer's allowed IPs.
    SourceNotAllowed,
    /// An inner packet to send that is not a well-formed IPv4/IPv6 packet.
    TxMalformed,
    /// An inner packet whose destination no peer's allowed IPs cover.
    NoRoute,
    /// An inner packet dropped because the peer has no session yet (a
    /// handshake is started instead).
    NoSession,
    /// A datagram for a peer that has no known endpoint.
    NoEndpoint,
    /// A peer id that names no configured peer.
    UnknownPeerId,
    /// The random source failed to yield a free receiver index.
    IndexExhausted,
}

impl Error {
    /// Number of error kinds (size of the counter array).
    pub const COUNT: usize = Error::IndexExhausted as usize + 1;

    /// Every kind, in counter order.
    pub const ALL: [Error; Error::COUNT] = [
        Error::BufferTooSmall,
        Error::Malformed,
        Error::UnknownType,
        Error::BadMac1,
        Error::RateLimited,
        Error::HandshakeDecrypt,
        Error::UnknownPeer,
        Error::HandshakeReplay,
        Error::HandshakeFlood,
        Error::UnexpectedHandshake,
        Error::CookieDecrypt,
        Error::WeakKey,
        Error::UnknownIndex,
        Error::Decrypt,
        Error::Replay,
        Error::SessionExpired,
        Error::InnerMalformed,
        Error::SourceNotAllowed,
        Error::TxMalformed,
        Error::NoRoute,
        Error::NoSession,
        Error::NoEndpoint,
        Error::UnknownPeerId,
        Error::IndexExhausted,
    ];

    /// The counter name shown to operators.
    pub const fn name(self) -> &'static str {
        match self {
            Error::BufferTooSmall => "buffer_too_small",
            Error::Malformed => "malformed",
            Error::UnknownType => "unknown_type",
            Error::BadMac1 => "bad_mac1",
            Error::RateLimited => "rate_limited",
            Error::HandshakeDecrypt => "handshake_decrypt",
            Error::UnknownPeer => "unknown_peer",
            Error::HandshakeReplay => "handshake_replay",
            Error::HandshakeFlood => "handshake_flood",
            Error::UnexpectedHandshake => "unexpected_handshake",
            Error::CookieDecrypt => "cookie_decrypt",
            Error::WeakKey => "weak_key",
            Error::UnknownIndex => "unknown_index",
            Error::Decrypt => "decrypt",
            Error::Replay => "replay",
            Error::SessionExpired => "session_expired",
            Error::InnerMalformed => "inner_malformed",
            Error::SourceNotAllowed => "source_not_allowed",
            Error::TxMalformed => "tx_malformed",
            Error::NoRoute => "no_route",
            Error::NoSession => "no_session",
            Error::NoEndpoint => "no_endpoint",
            Error::UnknownPeerId => "unknown_peer_id",
            Error::IndexExhausted => "index_exhausted",
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A configuration request the device refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The peer table is full (its capacity is the `PEERS` parameter).
    PeersFull,
    /// The allowed-IPs table is full (its capacity is the `ROUTES` parameter).
    RoutesFull,
    /// The public key is already a peer, or is the device's own key.
    DuplicatePeer,
    /// The peer id names no configured peer.
    UnknownPeer,
    /// A prefix length beyond 32 (IPv4) or 128 (IPv6).
    BadPrefix,
    /// A key that is not 44 characters of standard base64 for 32 bytes.
    BadKey,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConfigError::PeersFull => "peer table full",
            ConfigError::RoutesFull => "allowed-IPs table full",
            ConfigError::DuplicatePeer => "duplicate peer public key",
            ConfigError::UnknownPeer => "unknown peer",
            ConfigError::BadPrefix => "prefix length out of range",
            ConfigError::BadKey => "key is not 32 bytes of base64",
        })
    }
}

/// Drop counters, one per [`Error`] kind, plus a few traffic counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    drops: [u64; Error::COUNT],
    /// Handshakes completed (as initiator or responder).
    pub handshakes: u64,
    /// Cookie replies sent because we were under load.
    pub cookie_replies_sent: u64,
    /// Cookie replies accepted from peers.
    pub cookies_received: u64,
}

impl Counters {
    /// Record one drop of kind `e` and hand the error back.
    #[inline]
    pub(crate) fn count(&mut self, e: Error) -> Error {
        if let Some(c) = self.drops.get_mut(e as usize) {
            *c = c.saturating_add(1);
        }
        e
    }

    /// Drops of kind `e` so far.
    pub fn get(&self, e: Error) -> u64 {
        self.drops.get(e as usize).copied().unwrap_or(0)
    }

    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// `(name, count)` for every drop kind, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Error::ALL.iter().map(move |e| (e.name(), self.get(*e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_counter() {
        let mut c = Counters::default();
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
            for _ in 0..=i {
                c.count(*e);
            }
        }
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(c.get(*e), i as u64 + 1, "{}", e.name());
        }
        let names: std::vec::Vec<_> = c.iter().map(|(n, _)| n).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(n), "duplicate name {n}");
        }
    }
}

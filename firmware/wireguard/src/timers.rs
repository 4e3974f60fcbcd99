//! The protocol's timer rules (whitepaper §6, as wireguard-go schedules them).
//!
//! Each peer has a handful of optional deadlines. Protocol events (a data
//! packet sent, an authenticated packet received, a handshake completed …)
//! move them through the hook methods below; [`Timers::take_due`] hands the
//! device the next deadline that has passed. Nothing here reads a clock or
//! draws randomness: `now` and the jitter are arguments.

use core::time::Duration;

use crate::time::Instant;

/// Initiate a new handshake once a session has sent this many messages.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// No session may send or receive this many messages (2^64 - 2^13 - 1).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// The initiator renews a session this old when it sends.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// A session this old is dead in both directions.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Give up handshaking after trying this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Retry an unanswered initiation after this (plus jitter).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Send a keepalive if we received data and sent nothing for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A cookie from a peer is usable for this long.
pub const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);
/// Retransmissions before giving up (REKEY_ATTEMPT_TIME / REKEY_TIMEOUT).
pub const MAX_TIMER_HANDSHAKES: u32 = (REKEY_ATTEMPT_TIME.as_secs() / REKEY_TIMEOUT.as_secs()) as u32;
/// The initiator renews, on receive, a session this old (so a new one is
/// ready before REJECT_AFTER_TIME even if it only receives).
pub const REKEY_ON_RECEIVE_AGE: Duration =
    Duration::from_secs(REJECT_AFTER_TIME.as_secs() - KEEPALIVE_TIMEOUT.as_secs() - REKEY_TIMEOUT.as_secs());
/// Upper bound (exclusive) of the random jitter added to REKEY_TIMEOUT.
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(334);
/// A peer's initiations are consumed at most this often (50 per second).
pub const INITIATION_MIN_INTERVAL: Duration = Duration::from_millis(20);

/// A deadline that has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerEvent {
    /// No response to our initiation: send another (or give up).
    RetransmitHandshake,
    /// We received data and owe the peer a keepalive.
    SendKeepalive,
    /// We sent data and heard nothing back: handshake again.
    NewHandshake,
    /// No new session for 3 × REJECT_AFTER_TIME: wipe all keys.
    ZeroKeyMaterial,
    /// The configured persistent keepalive interval passed without traffic.
    PersistentKeepalive,
}

#[derive(Clone, Debug, Default)]
pub struct Timers {
    pub retransmit_handshake: Option<Instant>,
    pub send_keepalive: Option<Instant>,
    pub new_handshake: Option<Instant>,
    pub zero_key_material: Option<Instant>,
    pub persistent_keepalive: Option<Instant>,
    /// Initiations sent in the current attempt (reset by a new attempt).
    pub handshake_attempts: u32,
    pub need_another_keepalive: bool,
    /// The "last minute" rekey on receive was already asked for.
    pub sent_last_minute_handshake: bool,
    pub persistent_interval: Option<Duration>,
}

fn due(slot: &mut Option<Instant>, now: Instant) -> bool {
    match *slot {
        Some(t) if t <= now => {
            *slot = None;
            true
        }
        _ => false,
    }
}

impl Timers {
    pub fn new(persistent_keepalive: Option<u16>) -> Timers {
        Timers {
            persistent_interval: persistent_keepalive.filter(|s| *s > 0).map(|s| Duration::from_secs(u64::from(s))),
            ..Timers::default()
        }
    }

    /// The first passed deadline, cleared; `None` when nothing is due.
    pub fn take_due(&mut self, now: Instant) -> Option<TimerEvent> {
        if due(&mut self.zero_key_material, now) {
            Some(TimerEvent::ZeroKeyMaterial)
        } else if due(&mut self.retransmit_handshake, now) {
            Some(TimerEvent::RetransmitHandshake)
        } else if due(&mut self.new_handshake, now) {
            Some(TimerEvent::NewHandshake)
        } else if due(&mut self.send_keepalive, now) {
            Some(TimerEvent::SendKeepalive)
        } else if due(&mut self.persistent_keepalive, now) {
            Some(TimerEvent::PersistentKeepalive)
        } else {
            None
        }
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_handshake, self.send_keepalive, self.new_handshake, self.zero_key_material, self.persistent_keepalive]
            .into_iter()
            .flatten()
            .min()
    }

    /// A non-keepalive data packet was sent: expect an answer within
    /// KEEPALIVE_TIMEOUT + REKEY_TIMEOUT, else handshake again.
    #[inline]
    pub fn data_sent(&mut self, now: Instant, jitter: Duration) {
        if self.new_handshake.is_none() {
            self.new_handshake = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter);
        }
    }

    /// A non-keepalive data packet was received: owe a keepalive unless we
    /// send something first.
    #[inline]
    pub fn data_received(&mut self, now: Instant) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        } else {
            self.need_another_keepalive = true;
        }
    }

    /// Any authenticated packet (data, keepalive, handshake) was sent.
    #[inline]
    pub fn any_authenticated_sent(&mut self) {
        self.send_keepalive = None;
    }

    /// Any authenticated packet was received.
    #[inline]
    pub fn any_authenticated_received(&mut self) {
        self.new_handshake = None;
    }

    /// Any authenticated packet went either way: restart persistent keepalive.
    #[inline]
    pub fn any_authenticated_traversal(&mut self, now: Instant) {
        if let Some(i) = self.persistent_interval {
            self.persistent_keepalive = Some(now + i);
        }
    }

    pub fn handshake_initiated(&mut self, now: Instant, jitter: Duration) {
        self.retransmit_handshake = Some(now + REKEY_TIMEOUT + jitter);
    }

    pub fn handshake_complete(&mut self) {
        self.retransmit_handshake = None;
        self.handshake_attempts = 0;
        self.sent_last_minute_handshake = false;
    }

    pub fn session_derived(&mut self, now: Instant) {
        self.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_paper() {
        // 2^64 - 2^13 - 1
        assert_eq!(REJECT_AFTER_MESSAGES, u64::MAX - 8192);
        assert_eq!(MAX_TIMER_HANDSHAKES, 18);
    }

    #[test]
    fn keepalive_owed_after_data_received_unless_we_send() {
        let mut t = Timers::new(None);
        let t0 = Instant::from_secs(100);
        t.data_received(t0);
        assert_eq!(t.take_due(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.take_due(t0 + KEEPALIVE_TIMEOUT), Some(TimerEvent::SendKeepalive));
        assert_eq!(t.take_due(t0 + KEEPALIVE_TIMEOUT), None);

        t.data_received(t0);
        t.data_received(t0 + Duration::from_secs(1));
        assert!(t.need_another_keepalive);
        t.any_authenticated_sent();
        assert_eq!(t.take_due(t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn new_handshake_when_data_goes_unanswered() {
        let mut t = Timers::new(None);
        let t0 = Instant::from_secs(1);
        let jitter = Duration::from_millis(100);
        t.data_sent(t0, jitter);
        // A later send does not push the deadline out.
        t.data_sent(t0 + Duration::from_secs(5), jitter);
        let deadline = t0 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter;
        assert_eq!(t.next_deadline(), Some(deadline));
        assert_eq!(t.take_due(deadline), Some(TimerEvent::NewHandshake));

        // An answer cancels it.
        t.data_sent(t0, jitter);
        t.any_authenticated_received();
        assert_eq!(t.take_due(t0 + Duration::from_secs(100)), None);
    }

    #[test]
    fn persistent_keepalive_restarts_on_traffic() {
        let mut t = Timers::new(Some(25));
        let t0 = Instant::from_secs(0);
        t.any_authenticated_traversal(t0);
        t.any_authenticated_traversal(t0 + Duration::from_secs(20));
        assert_eq!(t.take_due(t0 + Duration::from_secs(44)), None);
        assert_eq!(t.take_due(t0 + Duration::from_secs(45)), Some(TimerEvent::PersistentKeepalive));
        // Zero means off, as in wg(8).
        let mut t = Timers::new(Some(0));
        t.any_authenticated_traversal(t0);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn handshake_retransmit_and_key_zeroing_deadlines() {
        let mut t = Timers::new(None);
        let t0 = Instant::from_secs(10);
        t.handshake_initiated(t0, Duration::from_millis(333));
        t.session_derived(t0);
        assert_eq!(t.take_due(t0 + REKEY_TIMEOUT), None);
        assert_eq!(t.take_due(t0 + REKEY_TIMEOUT + Duration::from_millis(333)), Some(TimerEvent::RetransmitHandshake));
        t.handshake_attempts = 3;
        t.handshake_complete();
        assert_eq!(t.handshake_attempts, 0);
        assert_eq!(t.take_due(t0 + REJECT_AFTER_TIME * 3), Some(TimerEvent::ZeroKeyMaterial));
    }
}

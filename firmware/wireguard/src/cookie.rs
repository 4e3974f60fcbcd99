//! The responder's defence against handshake floods (whitepaper §5.3, §5.4.7).
//!
//! Every handshake message must carry a valid mac1 (proof the sender knows
//! our public key). When we are *under load* — more handshake messages per
//! second than the configured limit, or the caller says so — a message must
//! also carry a valid mac2, computed with a cookie that only a sender who
//! can receive at its source address can have; without one it is answered
//! with a cookie reply instead of being processed (no DH is spent). Messages
//! with a valid mac2 are still rate limited per source address.
//!
//! The cookie secret is random and replaced every two minutes. The per-source
//! rate table has `RATE_SLOTS` buckets addressed by a keyed hash of the
//! source IP; when two sources share a bucket the newer one takes it over
//! (the older source simply starts with a full bucket next time).

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use crate::crypto::{mac, mac_eq, xseal_cookie};
use crate::error::Error;
use crate::time::Instant;
use crate::timers::COOKIE_REFRESH_TIME;
use crate::wire::{self, CookieReply};

/// Handshake messages per second per source accepted under load.
pub const RATE_PER_SECOND: u64 = 20;
/// Burst of handshake messages per source under load.
pub const RATE_BURST: u64 = 5;
/// Buckets in the per-source rate table.
pub const RATE_SLOTS: usize = 64;

const NANOS_PER_TOKEN: u64 = 1_000_000_000 / RATE_PER_SECOND;

#[derive(Clone, Copy, Default)]
struct Bucket {
    tag: u64,
    /// Budget in nanoseconds of "token time"; one message costs NANOS_PER_TOKEN.
    budget: u64,
    last: Instant,
}

pub struct CookieChecker {
    secret: [u8; 32],
    secret_born: Option<Instant>,
    cookie_key: [u8; 32],
    mac1_key: [u8; 32],
    /// Start of the current one-second counting window.
    window_start: Instant,
    window_count: u32,
    under_load_until: Option<Instant>,
    /// The last handshake message that arrived over the limit: what an
    /// operator needs to tell "was flooded a minute ago" from "never".
    last_over_limit: Option<Instant>,
    buckets: [Bucket; RATE_SLOTS],
    bucket_key: [u8; 16],
}

fn addr_bytes(src: &SocketAddr, out: &mut [u8; 18]) -> usize {
    match src.ip() {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            out[4..6].copy_from_slice(&src.port().to_be_bytes());
            6
        }
        IpAddr::V6(a) => {
            out[..16].copy_from_slice(&a.octets());
            out[16..18].copy_from_slice(&src.port().to_be_bytes());
            18
        }
    }
}

impl CookieChecker {
    pub fn new(mac1_key: [u8; 32], cookie_key: [u8; 32]) -> CookieChecker {
        CookieChecker {
            secret: [0; 32],
            secret_born: None,
            cookie_key,
            mac1_key,
            window_start: Instant::ZERO,
            window_count: 0,
            under_load_until: None,
            last_over_limit: None,
            buckets: [Bucket::default(); RATE_SLOTS],
            bucket_key: [0; 16],
        }
    }

    /// Is mac1 of this handshake message right for our key?
    pub fn check_mac1(&self, msg: &[u8]) -> bool {
        match wire::mac_inputs(msg) {
            Some((m1, _, mac1, _)) => mac_eq(&mac(&self.mac1_key, &[m1]), &mac1),
            None => false,
        }
    }

    /// Count one handshake message; true while we are under load.
    pub fn note_handshake(&mut self, now: Instant, limit: u32, forced: Option<bool>) -> bool {
        if now.saturating_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count = self.window_count.saturating_add(1);
        if self.window_count > limit {
            self.under_load_until = Some(now + Duration::from_secs(1));
            self.last_over_limit = Some(now);
        }
        forced.unwrap_or_else(|| self.measured_load(now))
    }

    /// Over the limit within the last second, as measured (no forcing).
    pub fn measured_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|t| now < t)
    }

    /// When a handshake message last arrived over the limit.
    pub fn last_over_limit(&self) -> Option<Instant> {
        self.last_over_limit
    }

    /// Take over the load estimate of a checker being replaced (same clock),
    /// so a device rebuilt in the middle of a flood stays under load and
    /// keeps the record of it. The secret and the rate table are not taken:
    /// the new device's cookies are its own, and senders that held an old
    /// cookie simply get a new one.
    pub fn carry_load_from(&mut self, old: &CookieChecker) {
        self.window_start = old.window_start;
        self.window_count = old.window_count;
        self.under_load_until = old.under_load_until;
        self.last_over_limit = old.last_over_limit;
    }

    fn refresh_secret<R: RngCore + CryptoRng>(&mut self, now: Instant, rng: &mut R) {
        let stale = match self.secret_born {
            None => true,
            Some(t) => t.elapsed_at_least(now, COOKIE_REFRESH_TIME),
        };
        if stale {
            self.secret.zeroize();
            rng.fill_bytes(&mut self.secret);
            rng.fill_bytes(&mut self.bucket_key);
            self.secret_born = Some(now);
        }
    }

    /// τ = MAC(R_m, source address and port).
    fn cookie_for<R: RngCore + CryptoRng>(&mut self, now: Instant, rng: &mut R, src: &SocketAddr) -> [u8; 16] {
        self.refresh_secret(now, rng);
        let mut a = [0u8; 18];
        let n = addr_bytes(src, &mut a);
        mac(&self.secret, &[a.get(..n).unwrap_or(&[])])
    }

    /// Does the message carry a mac2 made with the cookie of `src`?
    pub fn check_mac2<R: RngCore + CryptoRng>(&mut self, now: Instant, rng: &mut R, src: &SocketAddr, msg: &[u8]) -> bool {
        let Some((_, m2, _, mac2)) = wire::mac_inputs(msg) else { return false };
        let cookie = self.cookie_for(now, rng, src);
        mac_eq(&mac(&cookie, &[m2]), &mac2)
    }

    /// Token-bucket check for one handshake message from `src` under load.
    pub fn allow(&mut self, now: Instant, src: &SocketAddr) -> bool {
        let mut a = [0u8; 18];
        let n = addr_bytes(src, &mut a);
        // The port is not part of the identity of a source.
        let ip_len = if n == 6 { 4 } else { 16 };
        let h = mac(&self.bucket_key, &[a.get(..ip_len).unwrap_or(&[])]);
        let mut tag_bytes = [0u8; 8];
        tag_bytes.copy_from_slice(&h[..8]);
        let tag = u64::from_le_bytes(tag_bytes);
        let full = RATE_BURST * NANOS_PER_TOKEN;
        let Some(b) = self.buckets.get_mut((tag % RATE_SLOTS as u64) as usize) else { return false };
        if b.tag != tag {
            *b = Bucket { tag, budget: full, last: now };
        } else {
            let earned = u64::try_from(now.saturating_since(b.last).as_nanos()).unwrap_or(u64::MAX);
            b.budget = b.budget.saturating_add(earned).min(full);
            b.last = now;
        }
        if b.budget >= NANOS_PER_TOKEN {
            b.budget -= NANOS_PER_TOKEN;
            true
        } else {
            false
        }
    }

    /// Write a cookie reply to `src` for a message with `sender` index and
    /// `mac1` into `out`; returns its length.
    pub fn write_reply<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        src: &SocketAddr,
        sender: u32,
        mac1: &[u8; 16],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let out = out.get_mut(..wire::COOKIE_REPLY_LEN).ok_or(Error::BufferTooSmall)?;
        let cookie = self.cookie_for(now, rng, src);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let sealed = xseal_cookie(&self.cookie_key, &nonce, &cookie, mac1)?;
        let mut reply = CookieReply::new_unchecked(out);
        reply.set_header();
        reply.set_receiver(sender);
        reply.set_nonce(&nonce);
        reply.set_encrypted_cookie(&sealed);
        Ok(wire::COOKIE_REPLY_LEN)
    }
}

impl Drop for CookieChecker {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::TestRng;

    fn src(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn load_follows_the_message_rate() {
        let mut c = CookieChecker::new([1; 32], [2; 32]);
        let t0 = Instant::from_secs(10);
        for _ in 0..3 {
            assert!(!c.note_handshake(t0, 3, None));
        }
        assert!(c.note_handshake(t0, 3, None));
        // Stays under load for a second after the limit was crossed.
        assert!(c.note_handshake(t0 + Duration::from_millis(999), 3, None));
        assert!(!c.note_handshake(t0 + Duration::from_millis(2100), 3, None));
        assert!(c.note_handshake(t0 + Duration::from_millis(2100), 3, Some(true)));
    }

    #[test]
    fn the_last_crossing_is_remembered_and_carried() {
        let mut c = CookieChecker::new([1; 32], [2; 32]);
        let t0 = Instant::from_secs(10);
        for _ in 0..3 {
            c.note_handshake(t0, 3, None);
        }
        assert_eq!(c.last_over_limit(), None, "at the limit is not over it");
        // Forcing does not make a crossing: only the measured rate does.
        c.note_handshake(t0, 100, Some(true));
        assert_eq!(c.last_over_limit(), None);
        let t1 = t0 + Duration::from_millis(300);
        assert!(c.note_handshake(t1, 3, None));
        assert_eq!(c.last_over_limit(), Some(t1));
        assert!(c.measured_load(t1 + Duration::from_millis(999)));
        assert!(!c.measured_load(t1 + Duration::from_secs(1)));
        // Quiet later: the record stays.
        assert!(!c.note_handshake(t1 + Duration::from_secs(30), 3, None));
        assert_eq!(c.last_over_limit(), Some(t1));

        let mut fresh = CookieChecker::new([3; 32], [4; 32]);
        fresh.carry_load_from(&c);
        assert_eq!(fresh.last_over_limit(), Some(t1));
        // The window count came along too: one more message in the same
        // second is over the limit again.
        assert!(fresh.note_handshake(t1 + Duration::from_secs(30), 1, None));
    }

    #[test]
    fn cookie_depends_on_source_and_rotates() {
        let mut rng = TestRng::new(5);
        let mut c = CookieChecker::new([1; 32], [2; 32]);
        let t0 = Instant::from_secs(1);
        let a = c.cookie_for(t0, &mut rng, &src("192.0.2.1:51820"));
        assert_eq!(a, c.cookie_for(t0 + Duration::from_secs(60), &mut rng, &src("192.0.2.1:51820")));
        assert_ne!(a, c.cookie_for(t0, &mut rng, &src("192.0.2.1:51821")));
        assert_ne!(a, c.cookie_for(t0, &mut rng, &src("[2001:db8::1]:51820")));
        assert_ne!(a, c.cookie_for(t0 + COOKIE_REFRESH_TIME, &mut rng, &src("192.0.2.1:51820")));
    }

    #[test]
    fn per_source_rate_limit() {
        let mut c = CookieChecker::new([1; 32], [2; 32]);
        let t0 = Instant::from_secs(1);
        let a = src("198.51.100.7:1000");
        for _ in 0..RATE_BURST {
            assert!(c.allow(t0, &a));
        }
        assert!(!c.allow(t0, &a));
        // Another port of the same host shares the bucket.
        assert!(!c.allow(t0, &src("198.51.100.7:1001")));
        // Another host does not.
        assert!(c.allow(t0, &src("198.51.100.8:1000")));
        // One token comes back after 1/RATE_PER_SECOND.
        assert!(c.allow(t0 + Duration::from_millis(50), &a));
        assert!(!c.allow(t0 + Duration::from_millis(50), &a));
    }
}

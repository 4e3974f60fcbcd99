//! One transport session: the pair of keys a handshake derived, both indices,
//! the send counter and the receive replay window.
//!
//! Keys live in ring's `LessSafeKey` so sealing needs no per-packet setup.
//! ring offers no way to zero its key objects, so [`Session::wipe`]
//! overwrites both in place with a key of zeros (same type, same bytes); it
//! runs when a session is retired and on drop. The raw key arrays the
//! handshake produced are zeroized as soon as the ring keys exist. Without
//! `unsafe` this is best effort: a copy made while a session was built or
//! moved may linger in stack memory until overwritten.

use core::sync::atomic::{compiler_fence, Ordering};

use ring::aead::LessSafeKey;
use zeroize::Zeroize;

use crate::crypto::{self, TAG_LEN};
use crate::error::Error;
use crate::replay::ReplayWindow;
use crate::time::Instant;
use crate::timers::{REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME};

pub struct Session {
    send_key: LessSafeKey,
    recv_key: LessSafeKey,
    pub local_index: u32,
    pub remote_index: u32,
    /// Next counter to send.
    pub send_counter: u64,
    pub replay: ReplayWindow,
    pub created: Instant,
    /// We sent the initiation that made this session.
    pub initiator: bool,
}

impl Session {
    pub fn new(mut send: [u8; 32], mut recv: [u8; 32], local_index: u32, remote_index: u32, created: Instant, initiator: bool) -> Session {
        let s = Session {
            send_key: crypto::aead_key(&send),
            recv_key: crypto::aead_key(&recv),
            local_index,
            remote_index,
            send_counter: 0,
            replay: ReplayWindow::default(),
            created,
            initiator,
        };
        send.zeroize();
        recv.zeroize();
        s
    }

    /// Overwrite the keys in place; the session is useless afterwards.
    pub fn wipe(&mut self) {
        self.send_key = crypto::zero_key();
        self.recv_key = crypto::zero_key();
        self.send_counter = REJECT_AFTER_MESSAGES;
        // Keep the stores above from being treated as dead.
        compiler_fence(Ordering::SeqCst);
    }

    #[inline]
    pub fn expired(&self, now: Instant) -> bool {
        self.created.elapsed_at_least(now, REJECT_AFTER_TIME)
    }

    /// May this session still send?
    #[inline]
    pub fn can_send(&self, now: Instant) -> bool {
        self.send_counter < REJECT_AFTER_MESSAGES && !self.expired(now)
    }

    /// Seal `payload` (already padded) in place, the tag into `tag`, with the
    /// next counter; returns the counter used.
    #[inline]
    pub fn seal(&mut self, payload: &mut [u8], tag: &mut [u8]) -> Result<u64, Error> {
        let counter = self.send_counter;
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(Error::NoSession);
        }
        crypto::seal(&self.send_key, counter, &[], payload, tag)?;
        self.send_counter = counter + 1;
        Ok(counter)
    }

    /// Authenticate and decrypt `sealed` (payload || tag) in place, then
    /// record the counter. Returns the plaintext length.
    #[inline]
    pub fn open(&mut self, counter: u64, sealed: &mut [u8]) -> Result<usize, Error> {
        if !self.replay.check(counter) {
            return Err(Error::Replay);
        }
        if sealed.len() < TAG_LEN {
            return Err(Error::Malformed);
        }
        let n = crypto::open(&self.recv_key, counter, &[], sealed)?;
        if !self.replay.update(counter) {
            return Err(Error::Replay);
        }
        Ok(n)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.wipe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let t = Instant::from_secs(1);
        (Session::new([1; 32], [2; 32], 10, 20, t, true), Session::new([2; 32], [1; 32], 20, 10, t, false))
    }

    #[test]
    fn seal_open_and_replay() {
        let (mut a, mut b) = pair();
        let mut buf = [0xa5u8; 48];
        buf[..32].copy_from_slice(&[7; 32]);
        let (payload, tag) = buf.split_at_mut(32);
        let c = a.seal(payload, tag).unwrap();
        assert_eq!(c, 0);
        let mut copy = buf;
        assert_eq!(b.open(c, &mut buf).unwrap(), 32);
        assert_eq!(&buf[..32], &[7; 32]);
        // The same datagram again is a replay, caught before decryption.
        assert_eq!(b.open(c, &mut copy), Err(Error::Replay));
        // A forged packet with a fresh counter does not move the window.
        let mut forged = [0u8; 48];
        assert_eq!(b.open(5000, &mut forged), Err(Error::Decrypt));
        assert!(b.replay.check(1));
    }

    #[test]
    fn wiped_session_cannot_send_or_open() {
        let (mut a, mut b) = pair();
        let mut buf = [0u8; 16];
        let (p, t) = buf.split_at_mut(0);
        a.seal(p, t).unwrap();
        b.wipe();
        assert_eq!(b.open(0, &mut buf), Err(Error::Decrypt));
        a.wipe();
        assert!(!a.can_send(Instant::from_secs(1)));
        let (p, t) = buf.split_at_mut(0);
        assert_eq!(a.seal(p, t), Err(Error::NoSession));
    }

    #[test]
    fn expiry() {
        let (a, _) = pair();
        assert!(a.can_send(Instant::from_secs(180)));
        assert!(!a.can_send(Instant::from_secs(181)));
    }
}

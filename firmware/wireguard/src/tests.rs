//! Device-level tests: two of our own devices talking in memory, driven by a
//! fake clock.

use core::net::SocketAddr;
use core::time::Duration;
use std::vec;
use std::vec::Vec;

use rand_core::RngCore;

use crate::test_rng::TestRng;
use crate::timers::*;
use crate::*;

type Dev = Device<4, 8>;

const A_ADDR: &str = "192.0.2.1:51820";
const B_ADDR: &str = "198.51.100.2:51820";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IPv4 packet from `src` to `dst` with `payload` bytes of 0x42.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let total = 20 + payload;
    let mut p = vec![0x42u8; total];
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..12].fill(0);
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p
}

struct Pair {
    a: Dev,
    b: Dev,
    a_peer: PeerId, // B as seen by A
    b_peer: PeerId, // A as seen by B
    rng: TestRng,
    now: Instant,
}

impl Pair {
    fn new(psk_a: Option<[u8; 32]>, psk_b: Option<[u8; 32]>) -> Pair {
        let mut rng = TestRng::new(42);
        let ka = SecretKey::generate(&mut rng);
        let kb = SecretKey::generate(&mut rng);
        let mut a = Dev::new(ka.clone(), Config::default());
        let mut b = Dev::new(kb.clone(), Config::default());
        let now = Instant::from_secs(1000);
        a.set_wall_clock(now, Duration::from_secs(1_700_000_000));
        b.set_wall_clock(now, Duration::from_secs(1_700_000_000));
        let mut pa = PeerConfig::new(kb.public_key());
        pa.endpoint = Some(sa(B_ADDR));
        pa.preshared_key = psk_a.map(PresharedKey);
        let mut pb = PeerConfig::new(ka.public_key());
        pb.preshared_key = psk_b.map(PresharedKey);
        let a_peer = a.add_peer(pa).unwrap();
        let b_peer = b.add_peer(pb).unwrap();
        a.add_allowed_ip(a_peer, "10.0.0.2".parse().unwrap(), 32).unwrap();
        b.add_allowed_ip(b_peer, "10.0.0.1".parse().unwrap(), 32).unwrap();
        Pair { a, b, a_peer, b_peer, rng, now }
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    /// A → B: encapsulate an inner packet; returns the datagram.
    fn a_sends(&mut self, inner: &[u8]) -> Result<(Action, Vec<u8>), Error> {
        let mut out = vec![0u8; inner.len() + 200];
        let act = self.a.encapsulate(self.now, &mut self.rng, inner, &mut out)?;
        let len = match act {
            Action::Send { len, .. } => len,
            _ => 0,
        };
        out.truncate(len);
        Ok((act, out))
    }

    fn b_sends(&mut self, inner: &[u8]) -> Result<(Action, Vec<u8>), Error> {
        let mut out = vec![0u8; inner.len() + 200];
        let act = self.b.encapsulate(self.now, &mut self.rng, inner, &mut out)?;
        let len = match act {
            Action::Send { len, .. } => len,
            _ => 0,
        };
        out.truncate(len);
        Ok((act, out))
    }

    fn b_receives(&mut self, dgram: &[u8], from: &str) -> Result<(Action, Vec<u8>), Error> {
        let mut out = vec![0u8; dgram.len()];
        let act = self.b.decapsulate(self.now, &mut self.rng, sa(from), dgram, &mut out)?;
        Ok((act, out))
    }

    fn a_receives(&mut self, dgram: &[u8]) -> Result<(Action, Vec<u8>), Error> {
        let mut out = vec![0u8; dgram.len()];
        let act = self.a.decapsulate(self.now, &mut self.rng, sa(B_ADDR), dgram, &mut out)?;
        Ok((act, out))
    }

    /// Full handshake started by a packet from A; returns nothing, asserts.
    fn handshake(&mut self) {
        let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
        let (act, init) = self.a_sends(&p).unwrap();
        assert_eq!(act, Action::Send { to: sa(B_ADDR), len: 148 });
        let (act, resp) = self.b_receives(&init, A_ADDR).unwrap();
        assert_eq!(act, Action::Send { to: sa(A_ADDR), len: 92 });
        let (act, ka) = self.a_receives(&resp[..92]).unwrap();
        assert_eq!(act, Action::Send { to: sa(B_ADDR), len: 32 });
        let (act, _) = self.b_receives(&ka[..32], A_ADDR).unwrap();
        assert_eq!(act, Action::None);
    }

    fn a_poll(&mut self) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 256];
        match self.a.poll(self.now, &mut self.rng, &mut out) {
            Action::Send { len, .. } => {
                out.truncate(len);
                Some(out)
            }
            _ => None,
        }
    }

    fn b_poll(&mut self) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 256];
        match self.b.poll(self.now, &mut self.rng, &mut out) {
            Action::Send { len, .. } => {
                out.truncate(len);
                Some(out)
            }
            _ => None,
        }
    }
}

#[test]
fn handshake_and_data_both_ways() {
    let mut t = Pair::new(None, None);
    t.handshake();
    assert_eq!(t.a.counters().get(Error::NoSession), 1);
    for size in [0usize, 1, 15, 16, 100, 1380] {
        let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], size);
        let (_, d) = t.a_sends(&p).unwrap();
        assert_eq!(d.len(), datagram_len(p.len()).min(32 + 1420.max(p.len())));
        assert_eq!(d.len() % 16, 0);
        let (act, out) = t.b_receives(&d, A_ADDR).unwrap();
        assert_eq!(act, Action::Deliver { peer: t.b_peer, offset: HEADROOM, len: p.len() });
        assert_eq!(&out[HEADROOM..HEADROOM + p.len()], &p[..]);

        let q = ipv4([10, 0, 0, 2], [10, 0, 0, 1], size);
        let (_, d) = t.b_sends(&q).unwrap();
        let (act, out) = t.a_receives(&d).unwrap();
        assert_eq!(act, Action::Deliver { peer: t.a_peer, offset: HEADROOM, len: q.len() });
        assert_eq!(&out[HEADROOM..HEADROOM + q.len()], &q[..]);
    }
    assert_eq!(t.a.counters().handshakes, 1);
    assert_eq!(t.b.counters().handshakes, 1);
    assert_eq!(t.b.counters().total_drops(), 0);
    let st = t.b.peer_status(t.b_peer, t.now).unwrap();
    assert!(st.has_session && st.rx_bytes > 0 && st.tx_bytes > 0);
    assert_eq!(st.endpoint, Some(sa(A_ADDR)));
}

#[test]
fn responder_waits_for_confirmation_before_sending() {
    let mut t = Pair::new(None, None);
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, init) = t.a_sends(&p).unwrap();
    let (_, resp) = t.b_receives(&init, A_ADDR).unwrap();
    // B has only a `next` session: sending starts its own handshake instead.
    let q = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 10);
    let (act, d) = t.b_sends(&q).unwrap();
    assert_eq!(act, Action::Send { to: sa(A_ADDR), len: 148 });
    assert_eq!(d[0], 1);
    // A's response processing still works and confirms with a keepalive.
    let (_, ka) = t.a_receives(&resp[..92]).unwrap();
    t.b_receives(&ka[..32], A_ADDR).unwrap();
    let (act, _) = t.b_sends(&q).unwrap();
    assert!(matches!(act, Action::Send { len: 64, .. }));
}

#[test]
fn replayed_datagram_is_refused_and_counted() {
    let mut t = Pair::new(None, None);
    t.handshake();
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 40);
    let (_, d) = t.a_sends(&p).unwrap();
    assert!(t.b_receives(&d, A_ADDR).is_ok());
    assert_eq!(t.b_receives(&d, A_ADDR).unwrap_err(), Error::Replay);
    assert_eq!(t.b.counters().get(Error::Replay), 1);
    // Reordering within the window is fine.
    let (_, d1) = t.a_sends(&p).unwrap();
    let (_, d2) = t.a_sends(&p).unwrap();
    assert!(t.b_receives(&d2, A_ADDR).is_ok());
    assert!(t.b_receives(&d1, A_ADDR).is_ok());
}

#[test]
fn replayed_initiation_is_refused() {
    let mut t = Pair::new(None, None);
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, init) = t.a_sends(&p).unwrap();
    t.b_receives(&init, A_ADDR).unwrap();
    t.advance(Duration::from_secs(1));
    assert_eq!(t.b_receives(&init, A_ADDR).unwrap_err(), Error::HandshakeReplay);
}

#[test]
fn source_must_be_in_allowed_ips() {
    let mut t = Pair::new(None, None);
    t.handshake();
    // A routes 10.0.0.2 to B, but the inner source 10.0.0.9 is not A's.
    let p = ipv4([10, 0, 0, 9], [10, 0, 0, 2], 40);
    let (_, d) = t.a_sends(&p).unwrap();
    assert_eq!(t.b_receives(&d, A_ADDR).unwrap_err(), Error::SourceNotAllowed);
    assert_eq!(t.b.counters().get(Error::SourceNotAllowed), 1);
    // No route on the sending side.
    let p = ipv4([10, 0, 0, 1], [10, 9, 9, 9], 40);
    assert_eq!(t.a_sends(&p).unwrap_err(), Error::NoRoute);
    assert_eq!(t.a_sends(&[0x10; 30]).unwrap_err(), Error::TxMalformed);
    assert_eq!(t.a.counters().get(Error::NoRoute), 1);
}

#[test]
fn wrong_psk_never_completes() {
    let mut t = Pair::new(Some([1; 32]), Some([2; 32]));
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, init) = t.a_sends(&p).unwrap();
    let (_, resp) = t.b_receives(&init, A_ADDR).unwrap();
    assert_eq!(t.a_receives(&resp[..92]).unwrap_err(), Error::HandshakeDecrypt);
    assert_eq!(t.a.counters().handshakes, 0);
}

#[test]
fn too_small_buffers_are_errors() {
    let mut t = Pair::new(None, None);
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let mut out = [0u8; 100];
    // No session yet: the initiation (148 B) does not fit.
    assert_eq!(t.a.encapsulate(t.now, &mut t.rng, &p, &mut out), Err(Error::BufferTooSmall));
    t.advance(Duration::from_secs(10));
    t.handshake();
    let mut out = [0u8; 40];
    assert_eq!(t.a.encapsulate(t.now, &mut t.rng, &p, &mut out), Err(Error::BufferTooSmall));
    let (_, d) = t.a_sends(&p).unwrap();
    let mut small = [0u8; 10];
    assert_eq!(t.b.decapsulate(t.now, &mut t.rng, sa(A_ADDR), &d, &mut small), Err(Error::BufferTooSmall));
    assert!(t.a.counters().get(Error::BufferTooSmall) >= 2);
    // Absurd lengths from the caller are errors too, not overflows.
    let mut buf = [0u8; 256];
    assert_eq!(t.a.encapsulate_in_place(t.now, &mut t.rng, &mut buf, usize::MAX), Err(Error::BufferTooSmall));
    assert_eq!(t.a.encapsulate_to(t.a_peer, t.now, &mut t.rng, &mut buf, usize::MAX), Err(Error::BufferTooSmall));
    assert_eq!(t.a.encapsulate_to(PeerId(3), t.now, &mut t.rng, &mut buf, 0), Err(Error::UnknownPeerId));
}

#[test]
fn in_place_and_batch_apis() {
    let mut t = Pair::new(None, None);
    t.handshake();
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 100);
    let mut bufs: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            let mut b = vec![0xa5u8; 256];
            b[HEADROOM..HEADROOM + p.len()].copy_from_slice(&p);
            b
        })
        .collect();
    let mut jobs: Vec<EncapsulateJob<'_>> =
        bufs.iter_mut().map(|b| EncapsulateJob { buf: b, inner_len: p.len(), result: Err(Error::NoSession) }).collect();
    t.a.encapsulate_batch(t.now, &mut t.rng, &mut jobs);
    let lens: Vec<usize> = jobs
        .iter()
        .map(|j| match j.result {
            Ok(Action::Send { len, .. }) => len,
            ref r => panic!("{r:?}"),
        })
        .collect();
    drop(jobs);
    let mut dgrams: Vec<Vec<u8>> = bufs.iter().zip(&lens).map(|(b, l)| b[..*l].to_vec()).collect();
    let mut jobs: Vec<DecapsulateJob<'_>> =
        dgrams.iter_mut().map(|d| DecapsulateJob { buf: d, from: sa(A_ADDR), result: Err(Error::NoSession) }).collect();
    t.b.decapsulate_batch(t.now, &mut t.rng, &mut jobs);
    for j in &jobs {
        assert_eq!(j.result, Ok(Action::Deliver { peer: t.b_peer, offset: HEADROOM, len: p.len() }));
        assert_eq!(&j.buf[HEADROOM..HEADROOM + p.len()], &p[..]);
    }
}

#[test]
fn endpoint_roams_to_the_last_authenticated_source() {
    let mut t = Pair::new(None, None);
    t.handshake();
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, d) = t.a_sends(&p).unwrap();
    t.b_receives(&d, "203.0.113.5:4000").unwrap();
    assert_eq!(t.b.peer_status(t.b_peer, t.now).unwrap().endpoint, Some(sa("203.0.113.5:4000")));
    let q = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 10);
    assert_eq!(t.b_sends(&q).unwrap().0, Action::Send { to: sa("203.0.113.5:4000"), len: 64 });
    // A forged packet from elsewhere does not move it.
    let mut forged = d.clone();
    forged[20] ^= 1;
    assert!(t.b_receives(&forged, "203.0.113.99:1").is_err());
    assert_eq!(t.b.peer_status(t.b_peer, t.now).unwrap().endpoint, Some(sa("203.0.113.5:4000")));
}

#[test]
fn rekey_after_time_on_send_and_rotation() {
    let mut t = Pair::new(None, None);
    t.handshake();
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    t.advance(REKEY_AFTER_TIME - Duration::from_secs(1));
    let (_, d) = t.a_sends(&p).unwrap();
    t.b_receives(&d, A_ADDR).unwrap();
    assert!(t.a_poll().is_none());
    t.advance(Duration::from_secs(2));
    // A data packet past REKEY_AFTER_TIME still goes out on the old session...
    let (_, old) = t.a_sends(&p).unwrap();
    assert_eq!(old[0], 4);
    // ... and the next poll starts the rekey.
    let init = t.a_poll().expect("rekey initiation");
    assert_eq!(init[0], 1);
    let (_, resp) = t.b_receives(&init, A_ADDR).unwrap();
    let (_, ka) = t.a_receives(&resp[..92]).unwrap();
    // The old-session packet arriving late still decrypts (B's current).
    assert!(matches!(t.b_receives(&old, A_ADDR).unwrap().0, Action::Deliver { .. }));
    t.b_receives(&ka[..32], A_ADDR).unwrap();
    let (_, new) = t.a_sends(&p).unwrap();
    assert!(matches!(t.b_receives(&new, A_ADDR).unwrap().0, Action::Deliver { .. }));
    assert_eq!(t.a.counters().handshakes, 2);
    // The responder does not rekey on time by itself.
    t.advance(REKEY_AFTER_TIME + Duration::from_secs(1));
    let q = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 10);
    let _ = t.b_sends(&q).unwrap();
    assert!(t.b_poll().map(|d| d[0] != 1).unwrap_or(true));
}

#[test]
fn sessions_die_after_reject_after_time() {
    let mut t = Pair::new(None, None);
    t.handshake();
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, d) = t.a_sends(&p).unwrap();
    t.advance(REJECT_AFTER_TIME + Duration::from_secs(1));
    assert_eq!(t.b_receives(&d, A_ADDR).unwrap_err(), Error::SessionExpired);
    // Sending now needs a new handshake.
    let (act, init) = t.a_sends(&p).unwrap();
    assert!(matches!(act, Action::Send { len: 148, .. }));
    assert_eq!(init[0], 1);
}

#[test]
fn passive_keepalive_after_receiving_data() {
    let mut t = Pair::new(None, None);
    t.handshake();
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, d) = t.a_sends(&p).unwrap();
    t.b_receives(&d, A_ADDR).unwrap();
    t.advance(KEEPALIVE_TIMEOUT - Duration::from_millis(1));
    assert!(t.b_poll().is_none());
    t.advance(Duration::from_millis(1));
    let ka = t.b_poll().expect("keepalive");
    assert_eq!(ka.len(), 32);
    assert_eq!(t.a_receives(&ka).unwrap().0, Action::None);
    assert!(t.b_poll().is_none());
}

#[test]
fn new_handshake_when_sent_data_goes_unanswered() {
    let mut t = Pair::new(None, None);
    t.handshake();
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    t.advance(Duration::from_secs(6));
    let _ = t.a_sends(&p).unwrap(); // lost
    t.advance(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - Duration::from_millis(1));
    assert!(t.a_poll().is_none());
    t.advance(REKEY_TIMEOUT_JITTER_MAX);
    let init = t.a_poll().expect("new handshake");
    assert_eq!(init[0], 1);
}

#[test]
fn persistent_keepalive() {
    let mut t = Pair::new(None, None);
    t.a.remove_peer(t.a_peer).unwrap();
    let mut cfg = PeerConfig::new(t.b.public_key());
    cfg.endpoint = Some(sa(B_ADDR));
    cfg.persistent_keepalive = Some(25);
    t.a_peer = t.a.add_peer(cfg).unwrap();
    t.a.add_allowed_ip(t.a_peer, "10.0.0.2".parse().unwrap(), 32).unwrap();
    // A peer kept alive is dialled at once, without data (like wg(8)).
    let init = t.a_poll().expect("an initiation right away");
    assert_eq!(init.len(), 148);
    assert!(t.a_poll().is_none(), "one initiation");
    t.advance(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX);
    t.handshake();
    t.advance(Duration::from_secs(24));
    assert!(t.a_poll().is_none());
    t.advance(Duration::from_secs(1));
    let ka = t.a_poll().expect("persistent keepalive");
    assert_eq!(ka.len(), 32);
    assert_eq!(t.b_receives(&ka, A_ADDR).unwrap().0, Action::None);
    t.advance(Duration::from_secs(25));
    assert_eq!(t.a_poll().map(|d| d.len()), Some(32));
}

#[test]
fn a_peer_kept_alive_is_dialled_again_after_giving_up() {
    let mut t = Pair::new(None, None);
    t.a.remove_peer(t.a_peer).unwrap();
    let mut cfg = PeerConfig::new(t.b.public_key());
    cfg.endpoint = Some(sa(B_ADDR));
    cfg.persistent_keepalive = Some(25);
    t.a_peer = t.a.add_peer(cfg).unwrap();
    // Nobody answers: the dial, its retries for REKEY_ATTEMPT_TIME, and
    // then — unlike wg(8), which stays silent — a new dial one keepalive
    // interval later.
    let mut sent = 0;
    for _ in 0..(REKEY_ATTEMPT_TIME.as_secs() + 60) * 2 {
        while let Some(d) = t.a_poll() {
            assert_eq!(d[0], 1, "initiations only");
            sent += 1;
        }
        t.advance(Duration::from_millis(500));
    }
    assert!(sent > MAX_TIMER_HANDSHAKES as usize + 1, "dialled again after giving up: {sent} initiations");
}

#[test]
fn retransmission_with_jitter_then_give_up_and_zero() {
    let mut t = Pair::new(None, None);
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, first) = t.a_sends(&p).unwrap();
    assert_eq!(first[0], 1);
    // A second packet within REKEY_TIMEOUT does not start another initiation.
    let (act, _) = t.a_sends(&p).unwrap();
    assert_eq!(act, Action::None);
    let mut sent = 1;
    let mut last_index = u32::from_le_bytes(first[4..8].try_into().unwrap());
    let start = t.now;
    for _ in 0..2000 {
        t.advance(Duration::from_millis(100));
        if let Some(d) = t.a_poll() {
            assert_eq!(d[0], 1);
            let idx = u32::from_le_bytes(d[4..8].try_into().unwrap());
            assert_ne!(idx, last_index, "a retry uses a new sender index");
            last_index = idx;
            sent += 1;
        }
    }
    // One initiation plus MAX_TIMER_HANDSHAKES retries, spread over
    // REKEY_ATTEMPT_TIME (each retry REKEY_TIMEOUT + up to 333 ms jitter).
    assert_eq!(sent, 1 + MAX_TIMER_HANDSHAKES);
    assert!(t.now.saturating_since(start) >= REKEY_ATTEMPT_TIME);
    // New data restarts the attempt.
    let (act, _) = t.a_sends(&p).unwrap();
    assert!(matches!(act, Action::Send { len: 148, .. }));
}

#[test]
fn keys_are_zeroed_after_three_reject_times() {
    let mut t = Pair::new(None, None);
    t.handshake();
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, d) = t.a_sends(&p).unwrap();
    t.advance(REJECT_AFTER_TIME * 3);
    let _ = t.b_poll();
    // The session's index is gone: the datagram no longer maps to anything.
    assert_eq!(t.b_receives(&d, A_ADDR).unwrap_err(), Error::UnknownIndex);
}

#[test]
fn cookie_reply_under_load_then_mac2_accepted() {
    let mut t = Pair::new(None, None);
    t.b.set_under_load(Some(true));
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, init) = t.a_sends(&p).unwrap();
    let (act, reply) = t.b_receives(&init, A_ADDR).unwrap();
    assert_eq!(act, Action::Send { to: sa(A_ADDR), len: 64 });
    assert_eq!(reply[0], 3);
    assert_eq!(t.b.counters().cookie_replies_sent, 1);
    assert_eq!(t.b.counters().handshakes, 0);
    assert_eq!(t.a_receives(&reply[..64]).unwrap().0, Action::None);
    assert_eq!(t.a.counters().cookies_received, 1);
    // A cookie reply is accepted once.
    assert_eq!(t.a_receives(&reply[..64]).unwrap_err(), Error::UnexpectedHandshake);
    // The retry carries mac2 and is processed.
    t.advance(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX);
    let retry = t.a_poll().expect("retry");
    assert_ne!(&retry[132..148], &[0u8; 16]);
    let (act, _) = t.b_receives(&retry, A_ADDR).unwrap();
    assert_eq!(act, Action::Send { to: sa(A_ADDR), len: 92 });
    // The cookie is bound to the source address: from elsewhere, another reply.
    t.advance(Duration::from_secs(6));
    let mut retry2 = [0u8; 148];
    retry2.copy_from_slice(&retry);
    let (act, _) = t.b_receives(&retry2, "203.0.113.1:9").unwrap();
    assert_eq!(act, Action::Send { to: sa("203.0.113.1:9"), len: 64 });
}

#[test]
fn load_is_measured_when_not_forced() {
    let mut t = Pair::new(None, None);
    let mut cfg = *t.b.config();
    cfg.handshake_load_limit = 2;
    let kb = SecretKey::generate(&mut t.rng);
    let mut b = Dev::new(kb.clone(), cfg);
    b.add_peer(PeerConfig::new(t.a.public_key())).unwrap();
    let mut pa = PeerConfig::new(kb.public_key());
    pa.endpoint = Some(sa(B_ADDR));
    let id = t.a.add_peer(pa).unwrap();
    let mut replies = Vec::new();
    for i in 0..4u64 {
        t.advance(Duration::from_secs(6));
        let mut out = [0u8; 200];
        let Action::Send { len, .. } = t.a.encapsulate_to(id, t.now, &mut t.rng, &mut out, 0).unwrap() else { panic!() };
        let mut buf = out[..len].to_vec();
        // All four arrive within one second at B.
        let now = Instant::from_secs(5000) + Duration::from_millis(25 * i);
        match b.decapsulate_in_place(now, &mut t.rng, sa(A_ADDR), &mut buf) {
            Ok(Action::Send { len, .. }) => replies.push(len),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(replies, [92, 92, 64, 64]);
}

#[test]
fn unknown_peer_and_bad_mac1() {
    let mut t = Pair::new(None, None);
    let mut rng = TestRng::new(9);
    let stranger_key = SecretKey::generate(&mut rng);
    let mut stranger = Dev::new(stranger_key, Config::default());
    let mut cfg = PeerConfig::new(t.b.public_key());
    cfg.endpoint = Some(sa(B_ADDR));
    let id = stranger.add_peer(cfg).unwrap();
    let mut out = [0u8; 200];
    let Ok(Action::Send { len, .. }) = stranger.encapsulate_to(id, t.now, &mut rng, &mut out, 0) else { panic!() };
    let init = out[..len].to_vec();
    assert_eq!(t.b_receives(&init, "192.0.2.77:1").unwrap_err(), Error::UnknownPeer);
    let mut bad = init.clone();
    bad[120] ^= 1;
    assert_eq!(t.b_receives(&bad, "192.0.2.77:1").unwrap_err(), Error::BadMac1);
}

#[test]
fn peer_table_capacity_and_duplicates() {
    let mut rng = TestRng::new(5);
    let mut d = Device::<2, 2>::new(SecretKey::generate(&mut rng), Config::default());
    let own = d.public_key();
    assert_eq!(d.add_peer(PeerConfig::new(own)).unwrap_err(), ConfigError::DuplicatePeer);
    let k1 = SecretKey::generate(&mut rng).public_key();
    let k2 = SecretKey::generate(&mut rng).public_key();
    let k3 = SecretKey::generate(&mut rng).public_key();
    let p1 = d.add_peer(PeerConfig::new(k1)).unwrap();
    assert_eq!(d.add_peer(PeerConfig::new(k1)).unwrap_err(), ConfigError::DuplicatePeer);
    d.add_peer(PeerConfig::new(k2)).unwrap();
    assert_eq!(d.add_peer(PeerConfig::new(k3)).unwrap_err(), ConfigError::PeersFull);
    assert_eq!(d.find_peer(&k2), Some(PeerId(1)));
    d.remove_peer(p1).unwrap();
    assert_eq!(d.add_peer(PeerConfig::new(k3)).unwrap(), PeerId(0));
    assert_eq!(d.peers().count(), 2);
    assert_eq!(d.add_allowed_ip(PeerId(1), "10.0.0.0".parse().unwrap(), 8), Ok(()));
    assert_eq!(d.add_allowed_ip(PeerId(7), "10.0.0.0".parse().unwrap(), 8), Err(ConfigError::UnknownPeer));
}

#[test]
fn many_peers_each_get_their_own_sessions() {
    let mut rng = TestRng::new(77);
    let hub_key = SecretKey::generate(&mut rng);
    let mut hub = Device::<8, 8>::new(hub_key.clone(), Config::default());
    let mut spokes = Vec::new();
    let now = Instant::from_secs(10);
    for i in 0..8u8 {
        let k = SecretKey::generate(&mut rng);
        let mut cfg = PeerConfig::new(k.public_key());
        cfg.endpoint = Some(SocketAddr::from(([192, 0, 2, i], 1000)));
        let id = hub.add_peer(cfg).unwrap();
        hub.add_allowed_ip(id, core::net::IpAddr::from([10, 1, i, 0]), 24).unwrap();
        let mut s = Device::<1, 1>::new(k, Config::default());
        let mut hcfg = PeerConfig::new(hub_key.public_key());
        hcfg.endpoint = Some(SocketAddr::from(([198, 51, 100, 1], 51820)));
        let hid = s.add_peer(hcfg).unwrap();
        s.add_allowed_ip(hid, core::net::IpAddr::from([0, 0, 0, 0]), 0).unwrap();
        spokes.push(s);
    }
    // Hub initiates to everyone.
    for (i, s) in spokes.iter_mut().enumerate() {
        let p = ipv4([10, 0, 0, 1], [10, 1, i as u8, 5], 10);
        let mut buf = vec![0u8; 300];
        let Ok(Action::Send { len, .. }) = hub.encapsulate(now, &mut rng, &p, &mut buf) else { panic!() };
        let from = SocketAddr::from(([198, 51, 100, 1], 51820));
        let mut d = buf[..len].to_vec();
        let Ok(Action::Send { len, .. }) = s.decapsulate_in_place(now, &mut rng, from, &mut d) else { panic!() };
        let mut r = d[..len].to_vec();
        let me = SocketAddr::from(([192, 0, 2, i as u8], 1000));
        let Ok(Action::Send { len, .. }) = hub.decapsulate_in_place(now, &mut rng, me, &mut r) else { panic!() };
        let mut ka = r[..len].to_vec();
        assert_eq!(s.decapsulate_in_place(now, &mut rng, from, &mut ka), Ok(Action::None));
    }
    // Each spoke's packet is delivered as coming from that spoke.
    for (i, s) in spokes.iter_mut().enumerate() {
        let p = ipv4([10, 1, i as u8, 5], [10, 0, 0, 1], 30);
        let mut buf = vec![0u8; 300];
        let Ok(Action::Send { len, .. }) = s.encapsulate(now, &mut rng, &p, &mut buf) else { panic!() };
        let me = SocketAddr::from(([192, 0, 2, i as u8], 1000));
        let mut d = buf[..len].to_vec();
        let r = hub.decapsulate_in_place(now, &mut rng, me, &mut d);
        assert_eq!(r, Ok(Action::Deliver { peer: PeerId(i as u16), offset: HEADROOM, len: p.len() }));
    }
    assert_eq!(hub.counters().handshakes, 8);
}

/// Thousands of random and mutated datagrams: never a panic, every refusal
/// counted.
#[test]
fn fuzzish_decapsulate_never_panics_and_counts_drops() {
    let mut t = Pair::new(None, None);
    let p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
    let (_, init) = t.a_sends(&p).unwrap();
    let (_, resp) = t.b_receives(&init, A_ADDR).unwrap();
    let resp = resp[..92].to_vec();
    let (_, ka) = t.a_receives(&resp).unwrap();
    t.b_receives(&ka[..32], A_ADDR).unwrap();
    let (_, data) = t.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], 200)).unwrap();
    let mut cookie = [0u8; 64];
    cookie[0] = 3;
    let seeds: [&[u8]; 4] = [&init, &resp, &data, &cookie];

    let mut rng = TestRng::new(1234);
    let before = t.b.counters().total_drops();
    let mut errors = 0u64;
    let mut out = vec![0u8; 2048];
    for i in 0..20_000u32 {
        let mut d: Vec<u8> = match i % 3 {
            0 => {
                let len = (rng.next_u32() % 300) as usize;
                let mut v = vec![0u8; len];
                rng.fill_bytes(&mut v);
                if len >= 4 && rng.next_u32().is_multiple_of(2) {
                    v[0] = (rng.next_u32() % 5) as u8;
                    v[1..4].fill(0);
                }
                v
            }
            _ => {
                let mut v = seeds[(rng.next_u32() % 4) as usize].to_vec();
                for _ in 0..1 + rng.next_u32() % 4 {
                    if v.is_empty() {
                        break;
                    }
                    let at = (rng.next_u32() as usize) % v.len();
                    match rng.next_u32() % 3 {
                        0 => v[at] ^= 1 << (rng.next_u32() % 8),
                        1 => v.truncate(at),
                        _ => v.push(rng.next_u32() as u8),
                    }
                }
                v
            }
        };
        t.now = t.now + Duration::from_micros(100);
        let from = if i % 2 == 0 { sa(A_ADDR) } else { sa("203.0.113.9:777") };
        match t.b.decapsulate(t.now, &mut rng, from, &d, &mut out) {
            Ok(_) => {}
            Err(_) => errors += 1,
        }
        // The in-place form on the same input too.
        if t.b.decapsulate_in_place(t.now, &mut rng, from, &mut d).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 30_000, "{errors}");
    assert_eq!(t.b.counters().total_drops() - before, errors);
    // The original session still works.
    let (_, d) = t.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10)).unwrap();
    assert!(matches!(t.b_receives(&d, A_ADDR).unwrap().0, Action::Deliver { .. }));
}

#[test]
fn initiator_rekeys_on_receive_near_reject_after_time() {
    let mut t = Pair::new(None, None);
    t.handshake();
    let q = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 10);
    // B keeps sending; A only receives (and answers with keepalives).
    t.advance(REKEY_ON_RECEIVE_AGE - Duration::from_secs(1));
    let (_, d) = t.b_sends(&q).unwrap();
    t.a_receives(&d).unwrap();
    assert!(t.a_poll().is_none_or(|p| p[0] != 1));
    t.advance(Duration::from_secs(1));
    let (_, d) = t.b_sends(&q).unwrap();
    t.a_receives(&d).unwrap();
    let init = t.a_poll().expect("last-minute rekey");
    assert_eq!(init[0], 1);
    // Asked for once only.
    let (_, d) = t.b_sends(&q).unwrap();
    t.a_receives(&d).unwrap();
    assert!(t.a_poll().is_none_or(|p| p[0] != 1));
}

#[test]
fn print_memory_footprint() {
    // Not an assertion on performance: documents the fixed memory cost.
    std::println!(
        "Device<1,1> = {} B, Device<16,64> = {} B, Device<64,256> = {} B",
        core::mem::size_of::<Device<1, 1>>(),
        core::mem::size_of::<Device<16, 64>>(),
        core::mem::size_of::<Device<64, 256>>()
    );
}

/// What status shows of a flood: the forced and measured load, the last
/// crossing of the limit, the per-source refusals; and a device rebuilt by
/// an apply keeps all of it.
#[test]
fn load_is_reported_and_survives_a_rebuilt_device() {
    let mut t = Pair::new(None, None);
    assert_eq!(t.b.load(t.now), Load { under_load: false, last_over_limit: None });

    // Forced: under load at once, but forcing is no crossing of the limit.
    t.b.set_under_load(Some(true));
    assert!(t.b.load(t.now).under_load);
    let (_, init) = t.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10)).unwrap();
    let (_, reply) = t.b_receives(&init, A_ADDR).unwrap();
    t.a_receives(&reply[..64]).unwrap();
    t.advance(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX);
    let retry = t.a_poll().expect("retry with mac2");
    // The retry replayed from one source: each copy has a valid mac2 and
    // takes a token until the source's bucket is empty.
    let burst = crate::cookie::RATE_BURST as usize;
    let results: Vec<_> = (0..=burst).map(|_| t.b_receives(&retry, A_ADDR).map(|r| r.0)).collect();
    assert_eq!(results[0], Ok(Action::Send { to: sa(A_ADDR), len: 92 }));
    assert!(results[1..burst].iter().all(|r| *r == Err(Error::HandshakeReplay)), "{results:?}");
    assert_eq!(results[burst], Err(Error::RateLimited));
    assert_eq!(t.b.counters().get(Error::RateLimited), 1);
    assert_eq!(t.b.load(t.now).last_over_limit, None);

    // Measured: one message more than the limit within a second.
    t.b.set_under_load(None);
    t.advance(Duration::from_secs(2));
    let limit = t.b.config().handshake_load_limit;
    for _ in 0..limit {
        assert!(t.b_receives(&init, "203.0.113.5:4000").is_err(), "an old initiation is refused");
    }
    assert!(!t.b.load(t.now).under_load);
    let (act, _) = t.b_receives(&init, "203.0.113.5:4000").unwrap();
    assert_eq!(act, Action::Send { to: sa("203.0.113.5:4000"), len: 64 });
    let crossed = t.now;
    assert_eq!(t.b.counters().cookie_replies_sent, 2);
    assert_eq!(t.b.load(t.now), Load { under_load: true, last_over_limit: Some(crossed) });
    t.b.set_under_load(Some(false));
    assert_eq!(t.b.load(t.now), Load { under_load: false, last_over_limit: Some(crossed) });
    t.b.set_under_load(None);

    // An apply rebuilds the device: counters and the load record move over,
    // forcing does not (it is the new configuration's to set).
    let mut rebuilt = Dev::new(SecretKey::generate(&mut t.rng), Config::default());
    t.b.set_under_load(Some(true));
    rebuilt.carry_counters_from(&t.b);
    assert_eq!(rebuilt.counters(), t.b.counters());
    assert_eq!(rebuilt.load(t.now), Load { under_load: true, last_over_limit: Some(crossed) });
    t.advance(Duration::from_secs(1));
    assert_eq!(rebuilt.load(t.now), Load { under_load: false, last_over_limit: Some(crossed) });
    assert!(t.b.load(t.now).under_load, "still forced on the old device");
}

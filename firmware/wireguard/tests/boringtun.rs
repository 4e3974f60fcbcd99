//! In-process interoperability with boringtun 0.7 (`noise::Tunn`), a
//! WireGuard implementation nobody here wrote.
//!
//! Time: our device takes `now` as an argument; boringtun reads
//! `mock_instant::Instant` because the dev-dependency enables its
//! `mock-instant` feature. `Lab::advance` moves both clocks by the same
//! amount (mock_instant's clock is thread-local, and every test runs on its
//! own thread). boringtun only looks at the clock in `update_timers`, so the
//! tests call it after advancing, exactly as its own tests do. Its TAI64N
//! timestamps come from the real wall clock plus the mock offset.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use mock_instant::MockClock;
use rand_core::OsRng;
use routerd_wireguard::*;

const OURS: &str = "192.0.2.1:51820";
const THEIRS: &str = "198.51.100.2:51820";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ipv4(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let total = 20 + payload;
    let mut p = vec![0u8; total];
    for (i, b) in p.iter_mut().enumerate() {
        *b = i as u8;
    }
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

/// Our packet towards boringtun's side, and boringtun's towards ours.
fn to_them(n: usize) -> Vec<u8> {
    ipv4([10, 0, 0, 1], [10, 0, 0, 2], n)
}
fn to_us(n: usize) -> Vec<u8> {
    ipv4([10, 0, 0, 2], [10, 0, 0, 1], n)
}

struct Lab {
    dev: Device<4, 8>,
    peer: PeerId,
    tunn: Tunn,
    their_public: x25519::PublicKey,
    now: Instant,
}

impl Lab {
    fn new(our_psk: Option<[u8; 32]>, their_psk: Option<[u8; 32]>, limiter_limit: Option<u64>) -> Lab {
        let ours = SecretKey::generate(&mut OsRng);
        let theirs = x25519::StaticSecret::random_from_rng(OsRng);
        let their_public = x25519::PublicKey::from(&theirs);
        let our_public = x25519::PublicKey::from(ours.public_key().0);

        let mut dev = Device::new(ours, Config::default());
        let now = Instant::from_secs(1);
        dev.set_wall_clock(now, SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
        let mut cfg = PeerConfig::new(PublicKey(their_public.to_bytes()));
        cfg.endpoint = Some(sa(THEIRS));
        cfg.preshared_key = our_psk.map(PresharedKey);
        let peer = dev.add_peer(cfg).unwrap();
        dev.add_allowed_ip(peer, "10.0.0.2".parse().unwrap(), 32).unwrap();

        let limiter = limiter_limit.map(|l| Arc::new(RateLimiter::new(&their_public, l)));
        let tunn = Tunn::new(theirs, our_public, their_psk, None, 7, limiter);
        Lab { dev, peer, tunn, their_public, now }
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        MockClock::advance(d);
    }

    /// Our device encapsulates `inner`; returns the datagram (if any).
    fn we_send(&mut self, inner: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; inner.len() + 200];
        match self.dev.encapsulate(self.now, &mut OsRng, inner, &mut out) {
            Ok(Action::Send { to, len }) => {
                assert_eq!(to, sa(THEIRS));
                Some(out[..len].to_vec())
            }
            Ok(Action::None) => None,
            other => panic!("encapsulate: {other:?}"),
        }
    }

    fn we_poll(&mut self) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 256];
        match self.dev.poll(self.now, &mut OsRng, &mut out) {
            Action::Send { len, .. } => Some(out[..len].to_vec()),
            _ => None,
        }
    }

    /// Our device receives a datagram from boringtun.
    fn we_receive(&mut self, d: &[u8]) -> Result<(Action, Vec<u8>), Error> {
        let mut out = vec![0u8; d.len()];
        let a = self.dev.decapsulate(self.now, &mut OsRng, sa(THEIRS), d, &mut out)?;
        Ok((a, out))
    }

    /// boringtun receives a datagram from us; returns what it wants written
    /// to the network (all of it, draining its queue) and delivered.
    /// Errors come back as their Debug text (WireGuardError has no PartialEq).
    fn they_receive(&mut self, d: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Option<String>) {
        let mut net = Vec::new();
        let mut tun = Vec::new();
        let mut err = None;
        let mut out = vec![0u8; 2048];
        let src: IpAddr = sa(OURS).ip();
        let mut first = true;
        for _ in 0..16 {
            let input: &[u8] = if first { d } else { &[] };
            let r = self.tunn.decapsulate(Some(src), input, &mut out);
            first = false;
            match r {
                TunnResult::WriteToNetwork(p) => net.push(p.to_vec()),
                TunnResult::WriteToTunnelV4(p, _) => {
                    tun.push(p.to_vec());
                    break;
                }
                TunnResult::WriteToTunnelV6(p, _) => {
                    tun.push(p.to_vec());
                    break;
                }
                TunnResult::Done => break,
                TunnResult::Err(e) => {
                    err = Some(format!("{e:?}"));
                    break;
                }
            }
        }
        (net, tun, err)
    }

    fn they_send(&mut self, inner: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; inner.len() + 200];
        match self.tunn.encapsulate(inner, &mut out) {
            TunnResult::WriteToNetwork(p) => Some(p.to_vec()),
            TunnResult::Done => None,
            other => panic!("boringtun encapsulate: {other:?}"),
        }
    }

    fn they_update_timers(&mut self) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 2048];
        match self.tunn.update_timers(&mut out) {
            TunnResult::WriteToNetwork(p) => Some(p.to_vec()),
            _ => None,
        }
    }

    /// Handshake initiated by our device (triggered by a data packet).
    fn handshake_from_us(&mut self) {
        let init = self.we_send(&to_them(10)).expect("initiation");
        assert_eq!((init.len(), init[0]), (148, 1));
        let (net, _, err) = self.they_receive(&init);
        assert_eq!(err, None);
        let resp = &net[0];
        assert_eq!((resp.len(), resp[0]), (92, 2));
        let (act, ka) = self.we_receive(resp).unwrap();
        assert_eq!(act, Action::Send { to: sa(THEIRS), len: 32 });
        let (net, tun, err) = self.they_receive(&ka[..32]);
        assert_eq!((net.len(), tun.len(), err), (0, 0, None));
    }

    /// Handshake initiated by boringtun (triggered by a data packet it
    /// queues and sends once the session exists).
    fn handshake_from_them(&mut self) {
        let queued = to_us(33);
        let init = self.they_send(&queued).expect("initiation");
        assert_eq!(init[0], 1);
        let (act, resp) = self.we_receive(&init).unwrap();
        assert_eq!(act, Action::Send { to: sa(THEIRS), len: 92 });
        let (net, _, err) = self.they_receive(&resp[..92]);
        assert_eq!(err, None);
        // boringtun answers with a keepalive, then its queued packet.
        assert!(!net.is_empty());
        let mut delivered = Vec::new();
        for d in &net {
            match self.we_receive(d).unwrap() {
                (Action::Deliver { offset, len, .. }, out) => delivered.push(out[offset..offset + len].to_vec()),
                (Action::None, _) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delivered, vec![queued]);
    }

    fn data_both_ways(&mut self, sizes: &[usize]) {
        for &n in sizes {
            let p = to_them(n);
            let d = self.we_send(&p).expect("datagram");
            assert_eq!(d[0], 4);
            let (net, tun, err) = self.they_receive(&d);
            assert_eq!(err, None, "boringtun refused {n}");
            assert!(net.is_empty());
            assert_eq!(tun, vec![p], "payload {n}");

            let q = to_us(n);
            let d = self.they_send(&q).expect("datagram");
            let (act, out) = self.we_receive(&d).unwrap();
            assert_eq!(act, Action::Deliver { peer: self.peer, offset: HEADROOM, len: q.len() });
            assert_eq!(&out[HEADROOM..HEADROOM + q.len()], &q[..]);
        }
    }
}

const SIZES: [usize; 6] = [0, 1, 44, 108, 492, 1400];

#[test]
fn handshake_initiated_by_us_then_data_both_ways() {
    let mut lab = Lab::new(None, None, None);
    lab.handshake_from_us();
    lab.data_both_ways(&SIZES);
    assert_eq!(lab.dev.counters().handshakes, 1);
    assert_eq!(lab.dev.counters().total_drops(), 1); // the first packet, no session
    assert_eq!(lab.dev.counters().get(Error::NoSession), 1);
}

#[test]
fn handshake_initiated_by_boringtun_then_data_both_ways() {
    let mut lab = Lab::new(None, None, None);
    lab.handshake_from_them();
    lab.data_both_ways(&SIZES);
    assert_eq!(lab.dev.counters().total_drops(), 0);
}

#[test]
fn with_preshared_key() {
    let psk = [0x5a; 32];
    let mut lab = Lab::new(Some(psk), Some(psk), None);
    lab.handshake_from_us();
    lab.data_both_ways(&[100]);
    let mut lab = Lab::new(Some(psk), Some(psk), None);
    lab.handshake_from_them();
    lab.data_both_ways(&[100]);
}

#[test]
fn wrong_preshared_key_is_refused_both_ways() {
    // We initiate: boringtun answers (the psk is not in the initiation), our
    // device refuses the response.
    let mut lab = Lab::new(Some([1; 32]), Some([2; 32]), None);
    let init = lab.we_send(&to_them(10)).unwrap();
    let (net, _, _) = lab.they_receive(&init);
    assert_eq!(lab.we_receive(&net[0]).unwrap_err(), Error::HandshakeDecrypt);
    assert_eq!(lab.dev.counters().get(Error::HandshakeDecrypt), 1);
    assert_eq!(lab.dev.counters().handshakes, 0);

    // boringtun initiates: it refuses our response.
    let mut lab = Lab::new(Some([1; 32]), Some([2; 32]), None);
    let init = lab.they_send(&to_us(10)).unwrap();
    let (_, resp) = lab.we_receive(&init).unwrap();
    let (net, tun, err) = lab.they_receive(&resp[..92]);
    assert!(net.is_empty() && tun.is_empty());
    assert!(err.is_some(), "boringtun accepted a response made with another psk");
}

#[test]
fn replays_are_refused_both_ways() {
    let mut lab = Lab::new(None, None, None);
    lab.handshake_from_us();
    let d = lab.they_send(&to_us(50)).unwrap();
    assert!(matches!(lab.we_receive(&d).unwrap().0, Action::Deliver { .. }));
    assert_eq!(lab.we_receive(&d).unwrap_err(), Error::Replay);
    assert_eq!(lab.dev.counters().get(Error::Replay), 1);

    let d = lab.we_send(&to_them(50)).unwrap();
    let (_, tun, err) = lab.they_receive(&d);
    assert_eq!((tun.len(), err), (1, None));
    let (_, tun, err) = lab.they_receive(&d);
    assert_eq!(tun.len(), 0);
    assert_eq!(err, Some(format!("{:?}", WireGuardError::DuplicateCounter)));
}

#[test]
fn rekey_after_time_initiated_by_us() {
    let mut lab = Lab::new(None, None, None);
    lab.handshake_from_us();
    lab.data_both_ways(&[64]);
    lab.advance(Duration::from_secs(121));
    lab.they_update_timers();
    // Data still flows on the old session, and our next poll rekeys.
    let d = lab.we_send(&to_them(64)).unwrap();
    assert_eq!(d[0], 4);
    assert_eq!(lab.they_receive(&d).1.len(), 1);
    let init = lab.we_poll().expect("rekey initiation");
    assert_eq!(init[0], 1);
    let (net, _, err) = lab.they_receive(&init);
    assert_eq!(err, None);
    let (act, ka) = lab.we_receive(&net[0]).unwrap();
    assert!(matches!(act, Action::Send { len: 32, .. }));
    lab.they_receive(&ka[..32]);
    lab.data_both_ways(&[64, 1400]);
    assert_eq!(lab.dev.counters().handshakes, 2);
}

#[test]
fn rekey_after_time_initiated_by_boringtun() {
    let mut lab = Lab::new(None, None, None);
    lab.handshake_from_them();
    lab.data_both_ways(&[64]);
    lab.advance(Duration::from_secs(121));
    lab.they_update_timers();
    let d = lab.they_send(&to_us(64)).unwrap();
    assert!(matches!(lab.we_receive(&d).unwrap().0, Action::Deliver { .. }));
    let init = lab.they_update_timers().expect("boringtun rekeys after REKEY_AFTER_TIME");
    assert_eq!(init[0], 1);
    let (act, resp) = lab.we_receive(&init).unwrap();
    assert!(matches!(act, Action::Send { len: 92, .. }));
    let (net, _, err) = lab.they_receive(&resp[..92]);
    assert_eq!(err, None);
    for d in &net {
        lab.we_receive(d).unwrap();
    }
    lab.data_both_ways(&[64, 1400]);
    assert_eq!(lab.dev.counters().handshakes, 2);
}

#[test]
fn cookie_reply_from_boringtun_under_load() {
    // A shared limiter with limit 0: boringtun is always under load.
    let mut lab = Lab::new(None, None, Some(0));
    let init = lab.we_send(&to_them(10)).unwrap();
    let (net, _, err) = lab.they_receive(&init);
    assert_eq!(err, None);
    assert_eq!((net[0].len(), net[0][0]), (64, 3), "expected a cookie reply");
    assert_eq!(lab.we_receive(&net[0]).unwrap().0, Action::None);
    assert_eq!(lab.dev.counters().cookies_received, 1);
    // Our retransmission carries mac2 and gets through.
    lab.advance(Duration::from_millis(5400));
    let retry = lab.we_poll().expect("retry");
    assert_ne!(&retry[132..148], &[0u8; 16]);
    let (net, _, err) = lab.they_receive(&retry);
    assert_eq!(err, None);
    assert_eq!(net[0][0], 2, "expected a handshake response");
    let (act, ka) = lab.we_receive(&net[0]).unwrap();
    assert!(matches!(act, Action::Send { len: 32, .. }));
    lab.they_receive(&ka[..32]);
    lab.data_both_ways(&[128]);
}

#[test]
fn cookie_reply_to_boringtun_when_we_are_under_load() {
    let mut lab = Lab::new(None, None, None);
    lab.dev.set_under_load(Some(true));
    let init = lab.they_send(&to_us(10)).unwrap();
    let (act, reply) = lab.we_receive(&init).unwrap();
    assert_eq!(act, Action::Send { to: sa(THEIRS), len: 64 });
    assert_eq!(lab.dev.counters().cookie_replies_sent, 1);
    let (net, tun, err) = lab.they_receive(&reply[..64]);
    assert_eq!((net.len(), tun.len(), err), (0, 0, None));
    // boringtun retries after REKEY_TIMEOUT with mac2.
    lab.advance(Duration::from_secs(6));
    let retry = lab.they_update_timers().expect("boringtun retry");
    assert_eq!(retry[0], 1);
    let (act, resp) = lab.we_receive(&retry).unwrap();
    assert_eq!(act, Action::Send { to: sa(THEIRS), len: 92 });
    assert_eq!(lab.dev.counters().cookie_replies_sent, 1);
    let (net, _, err) = lab.they_receive(&resp[..92]);
    assert_eq!(err, None);
    for d in &net {
        lab.we_receive(d).unwrap();
    }
    lab.data_both_ways(&[128]);
}

#[test]
fn keepalive_from_us_is_accepted_by_boringtun() {
    let mut lab = Lab::new(None, None, None);
    lab.handshake_from_them();
    lab.advance(Duration::from_secs(10));
    let ka = lab.we_poll().expect("passive keepalive");
    assert_eq!(ka.len(), 32);
    let (net, tun, err) = lab.they_receive(&ka);
    assert_eq!((net.len(), tun.len(), err), (0, 0, None));
    let _ = lab.their_public;
}

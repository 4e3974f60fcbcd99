//! Noise_IKpsk2 message computations (whitepaper §5.4), free of peer tables
//! and timers: the device decides who the peer is and what to do with the
//! resulting keys. Intermediate chaining keys and hashes are zeroized on drop.
//!
//! Consuming an initiation happens in two steps because the initiator's
//! identity is inside the message: [`consume_initiation`] opens the static
//! key, the device finds the peer, then [`InitiationInProgress::finish`]
//! checks the timestamp with that peer's precomputed static-static DH.

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{dh, hash, kdf, mac, open_once, seal_once};
use crate::error::Error;
use crate::key::{PresharedKey, PublicKey, SecretKey};
use crate::time::Instant;
use crate::wire::{self, CookieReply, Initiation, Response};

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// TAI64N label for the Unix epoch, as wireguard-go writes it.
const TAI64_EPOCH: u64 = 0x4000_0000_0000_000a;

/// C0 = HASH(CONSTRUCTION).
fn initial_chaining_key() -> [u8; 32] {
    hash(&[CONSTRUCTION])
}

/// HASH(HASH(C0 || IDENTIFIER) || responder static): the starting hash of a
/// handshake towards `responder`.
fn initial_hash(responder: &[u8; 32]) -> [u8; 32] {
    let h0 = hash(&[&initial_chaining_key(), IDENTIFIER]);
    hash(&[&h0, responder])
}

/// The keys for MAC1 and for cookie encryption that belong to one static key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MacKeys {
    pub mac1: [u8; 32],
    pub cookie: [u8; 32],
}

impl MacKeys {
    pub fn for_key(static_public: &[u8; 32]) -> MacKeys {
        MacKeys { mac1: hash(&[LABEL_MAC1, static_public]), cookie: hash(&[LABEL_COOKIE, static_public]) }
    }
}

/// Our side of every handshake.
pub struct Identity {
    pub secret: SecretKey,
    pub public: PublicKey,
    /// Starting hash of initiations addressed to us.
    pub hash0: [u8; 32],
    /// Keys for messages addressed to us.
    pub macs: MacKeys,
}

impl Identity {
    pub fn new(secret: SecretKey) -> Identity {
        let public = secret.public_key();
        Identity { hash0: initial_hash(&public.0), macs: MacKeys::for_key(&public.0), secret, public }
    }
}

/// What we precompute about a peer for handshakes.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PeerKeys {
    #[zeroize(skip)]
    pub public: PublicKey,
    pub psk: [u8; 32],
    /// DH(our static, their static), used in every handshake.
    pub static_static: [u8; 32],
    /// Starting hash of initiations we send them.
    pub hash0: [u8; 32],
    /// Keys for messages addressed to them.
    pub macs: MacKeys,
}

impl PeerKeys {
    pub fn new(us: &Identity, public: PublicKey, psk: Option<&PresharedKey>) -> Result<PeerKeys, Error> {
        Ok(PeerKeys {
            static_static: dh(us.secret.secret(), &public.0)?,
            hash0: initial_hash(&public.0),
            macs: MacKeys::for_key(&public.0),
            psk: psk.map(|p| p.0).unwrap_or([0; 32]),
            public,
        })
    }
}

/// An initiation we sent and whose response we await.
#[derive(ZeroizeOnDrop)]
pub struct PendingInitiation {
    #[zeroize(skip)]
    pub local_index: u32,
    chaining_key: [u8; 32],
    hash: [u8; 32],
    ephemeral: StaticSecret,
    #[zeroize(skip)]
    pub sent_at: Instant,
}

/// The transport keys of a finished handshake, from our point of view.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
}

/// TAI64N of a wall-clock time (since the Unix epoch). The nanoseconds are
/// rounded down to 2^24 ns so the message does not reveal a precise clock.
pub fn tai64n(since_epoch: core::time::Duration) -> [u8; 12] {
    let mut out = [0u8; 12];
    let secs = TAI64_EPOCH.saturating_add(since_epoch.as_secs());
    let nanos = since_epoch.subsec_nanos() & !0x00ff_ffff;
    out[..8].copy_from_slice(&secs.to_be_bytes());
    out[8..].copy_from_slice(&nanos.to_be_bytes());
    out
}

fn random_secret<R: RngCore + CryptoRng>(rng: &mut R) -> StaticSecret {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    let s = StaticSecret::from(b);
    b.zeroize();
    s
}

/// Fill in mac1 (always) and mac2 (when we hold a fresh cookie from the
/// receiver) of a handshake message; returns mac1.
pub fn write_macs(msg: &mut [u8], mac1_key: &[u8; 32], cookie: Option<&[u8; 16]>) -> [u8; 16] {
    let len = msg.len();
    let (m1, m2) = match (len.checked_sub(32), len.checked_sub(16)) {
        (Some(a), Some(b)) => (a, b),
        _ => return [0; 16],
    };
    let mac1 = mac(mac1_key, &[msg.get(..m1).unwrap_or(&[])]);
    if let Some(s) = msg.get_mut(m1..m2) {
        s.copy_from_slice(&mac1);
    }
    let mac2 = match cookie {
        Some(c) => mac(c, &[msg.get(..m2).unwrap_or(&[])]),
        None => [0; 16],
    };
    if let Some(s) = msg.get_mut(m2..len) {
        s.copy_from_slice(&mac2);
    }
    mac1
}

/// Write a handshake initiation to `peer` into `out` (exactly 148 bytes).
pub fn create_initiation<R: RngCore + CryptoRng>(
    us: &Identity,
    peer: &PeerKeys,
    local_index: u32,
    timestamp: [u8; 12],
    now: Instant,
    rng: &mut R,
    out: &mut [u8],
) -> Result<PendingInitiation, Error> {
    if out.len() != wire::INITIATION_LEN {
        return Err(Error::BufferTooSmall);
    }
    let ephemeral = random_secret(rng);
    let e_pub = DalekPublic::from(&ephemeral).to_bytes();

    let mut ck = initial_chaining_key();
    let mut h = peer.hash0;
    let [c] = kdf::<1>(&ck, &e_pub);
    ck = c;
    h = hash(&[&h, &e_pub]);

    let es = dh(&ephemeral, &peer.public.0)?;
    let [c, mut k] = kdf::<2>(&ck, &es);
    ck = c;
    let enc_static: [u8; 48] = seal_once(&k, &us.public.0, &h)?;
    h = hash(&[&h, &enc_static]);

    let [c, k2] = kdf::<2>(&ck, &peer.static_static);
    k.zeroize();
    k = k2;
    ck = c;
    let enc_time: [u8; 28] = seal_once(&k, &timestamp, &h)?;
    h = hash(&[&h, &enc_time]);
    k.zeroize();

    let mut msg = Initiation::new_unchecked(&mut *out);
    msg.set_header();
    msg.set_sender(local_index);
    msg.set_ephemeral(&e_pub);
    msg.set_encrypted_static(&enc_static);
    msg.set_encrypted_timestamp(&enc_time);

    Ok(PendingInitiation { local_index, chaining_key: ck, hash: h, ephemeral, sent_at: now })
}

/// An initiation whose sender we know but whose timestamp is still sealed.
#[derive(ZeroizeOnDrop)]
pub struct InitiationInProgress {
    chaining_key: [u8; 32],
    hash: [u8; 32],
    pub initiator_static: [u8; 32],
    #[zeroize(skip)]
    pub initiator_ephemeral: [u8; 32],
    #[zeroize(skip)]
    pub sender: u32,
    #[zeroize(skip)]
    enc_time: [u8; 28],
}

/// Step one of consuming an initiation (mac1 already checked): open the
/// initiator's static key.
pub fn consume_initiation(us: &Identity, msg: &Initiation<&[u8]>) -> Result<InitiationInProgress, Error> {
    let e_pub = msg.ephemeral();
    let mut ck = initial_chaining_key();
    let mut h = us.hash0;
    let [c] = kdf::<1>(&ck, &e_pub);
    ck = c;
    h = hash(&[&h, &e_pub]);

    let es = dh(us.secret.secret(), &e_pub)?;
    let [c, mut k] = kdf::<2>(&ck, &es);
    ck = c;
    let enc_static = msg.encrypted_static();
    let initiator_static: [u8; 32] = open_once(&k, &enc_static, &h)?;
    k.zeroize();
    h = hash(&[&h, &enc_static]);

    Ok(InitiationInProgress {
        chaining_key: ck,
        hash: h,
        initiator_static,
        initiator_ephemeral: e_pub,
        sender: msg.sender(),
        enc_time: msg.encrypted_timestamp(),
    })
}

impl InitiationInProgress {
    /// Step two: open the timestamp with the peer's static-static secret.
    pub fn finish(mut self, peer: &PeerKeys) -> Result<([u8; 12], InitiationAccepted), Error> {
        let [c, mut k] = kdf::<2>(&self.chaining_key, &peer.static_static);
        let ts: [u8; 12] = open_once(&k, &self.enc_time, &self.hash)?;
        k.zeroize();
        let h = hash(&[&self.hash, &self.enc_time]);
        let accepted = InitiationAccepted {
            chaining_key: c,
            hash: h,
            initiator_static: self.initiator_static,
            initiator_ephemeral: self.initiator_ephemeral,
            sender: self.sender,
        };
        self.chaining_key.zeroize();
        Ok((ts, accepted))
    }
}

/// A fully authenticated initiation, ready to be answered.
#[derive(ZeroizeOnDrop)]
pub struct InitiationAccepted {
    chaining_key: [u8; 32],
    hash: [u8; 32],
    #[zeroize(skip)]
    initiator_static: [u8; 32],
    #[zeroize(skip)]
    initiator_ephemeral: [u8; 32],
    #[zeroize(skip)]
    pub sender: u32,
}

impl InitiationAccepted {
    /// Write the response (92 bytes, MACs not yet filled) and derive the
    /// session keys for us as responder.
    pub fn respond<R: RngCore + CryptoRng>(
        &self,
        peer: &PeerKeys,
        local_index: u32,
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<SessionKeys, Error> {
        if out.len() != wire::RESPONSE_LEN {
            return Err(Error::BufferTooSmall);
        }
        let ephemeral = random_secret(rng);
        let e_pub = DalekPublic::from(&ephemeral).to_bytes();
        let mut ck = self.chaining_key;
        let [c] = kdf::<1>(&ck, &e_pub);
        ck = c;
        let mut h = hash(&[&self.hash, &e_pub]);
        let [c] = kdf::<1>(&ck, &dh(&ephemeral, &self.initiator_ephemeral)?);
        ck = c;
        let [c] = kdf::<1>(&ck, &dh(&ephemeral, &self.initiator_static)?);
        ck = c;
        let [c, t, mut k] = kdf::<3>(&ck, &peer.psk);
        ck = c;
        h = hash(&[&h, &t]);
        let empty: [u8; 16] = seal_once(&k, &[], &h)?;
        k.zeroize();
        h.zeroize();
        let [recv, send] = kdf::<2>(&ck, &[]);
        ck.zeroize();

        let mut msg = Response::new_unchecked(&mut *out);
        msg.set_header();
        msg.set_sender(local_index);
        msg.set_receiver(self.sender);
        msg.set_ephemeral(&e_pub);
        msg.set_encrypted_empty(&empty);
        Ok(SessionKeys { send, recv })
    }
}

/// Consume a response to `pending` (mac1 already checked) and derive the
/// session keys for us as initiator.
pub fn consume_response(us: &Identity, peer: &PeerKeys, pending: &PendingInitiation, msg: &Response<&[u8]>) -> Result<SessionKeys, Error> {
    let e_pub = msg.ephemeral();
    let [c] = kdf::<1>(&pending.chaining_key, &e_pub);
    let mut ck = c;
    let mut h = hash(&[&pending.hash, &e_pub]);
    let [c] = kdf::<1>(&ck, &dh(&pending.ephemeral, &e_pub)?);
    ck = c;
    let [c] = kdf::<1>(&ck, &dh(us.secret.secret(), &e_pub)?);
    ck = c;
    let [c, t, mut k] = kdf::<3>(&ck, &peer.psk);
    ck = c;
    h = hash(&[&h, &t]);
    let empty = msg.encrypted_empty();
    let opened: Result<[u8; 0], Error> = open_once(&k, &empty, &h);
    k.zeroize();
    h.zeroize();
    opened?;
    let [send, recv] = kdf::<2>(&ck, &[]);
    ck.zeroize();
    Ok(SessionKeys { send, recv })
}

/// Open a cookie reply sent in answer to a message whose mac1 was `last_mac1`.
pub fn open_cookie_reply(peer: &PeerKeys, last_mac1: &[u8; 16], msg: &CookieReply<&[u8]>) -> Result<[u8; 16], Error> {
    crate::crypto::xopen_cookie(&peer.macs.cookie, &msg.nonce(), &msg.encrypted_cookie(), last_mac1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::TestRng;

    fn identities() -> (Identity, Identity) {
        let mut rng = TestRng::new(1);
        (Identity::new(SecretKey::generate(&mut rng)), Identity::new(SecretKey::generate(&mut rng)))
    }

    #[test]
    fn full_handshake_in_memory_agrees_on_keys() {
        let mut rng = TestRng::new(2);
        let (a, b) = identities();
        let psk = PresharedKey([9; 32]);
        let a_peer_b = PeerKeys::new(&a, b.public, Some(&psk)).unwrap();
        let b_peer_a = PeerKeys::new(&b, a.public, Some(&psk)).unwrap();
        assert_eq!(a_peer_b.static_static, b_peer_a.static_static);

        let mut init = [0xa5u8; wire::INITIATION_LEN];
        let ts = tai64n(core::time::Duration::from_secs(1_700_000_000));
        let pending = create_initiation(&a, &a_peer_b, 77, ts, Instant::ZERO, &mut rng, &mut init).unwrap();
        write_macs(&mut init, &a_peer_b.macs.mac1, None);
        assert!(!init.contains(&0xa5) || init.iter().filter(|b| **b == 0xa5).count() < 8);

        let msg = Initiation::new_checked(&init[..]).unwrap();
        let progress = consume_initiation(&b, &msg).unwrap();
        assert_eq!(progress.initiator_static, a.public.0);
        let (got_ts, accepted) = progress.finish(&b_peer_a).unwrap();
        assert_eq!(got_ts, ts);
        assert_eq!(accepted.sender, 77);

        let mut resp = [0xa5u8; wire::RESPONSE_LEN];
        let b_keys = accepted.respond(&b_peer_a, 88, &mut rng, &mut resp).unwrap();
        write_macs(&mut resp, &b_peer_a.macs.mac1, None);
        let msg = Response::new_checked(&resp[..]).unwrap();
        assert_eq!((msg.sender(), msg.receiver()), (88, 77));
        let a_keys = consume_response(&a, &a_peer_b, &pending, &msg).unwrap();
        assert_eq!(a_keys.send, b_keys.recv);
        assert_eq!(a_keys.recv, b_keys.send);
        assert_ne!(a_keys.send, a_keys.recv);
    }

    #[test]
    fn mismatched_psk_fails_at_the_response() {
        let mut rng = TestRng::new(3);
        let (a, b) = identities();
        let a_peer_b = PeerKeys::new(&a, b.public, Some(&PresharedKey([1; 32]))).unwrap();
        let b_peer_a = PeerKeys::new(&b, a.public, Some(&PresharedKey([2; 32]))).unwrap();
        let mut init = [0u8; wire::INITIATION_LEN];
        let pending = create_initiation(&a, &a_peer_b, 1, [0; 12], Instant::ZERO, &mut rng, &mut init).unwrap();
        let msg = Initiation::new_checked(&init[..]).unwrap();
        // The psk is not in the initiation: the responder accepts it ...
        let (_, accepted) = consume_initiation(&b, &msg).unwrap().finish(&b_peer_a).unwrap();
        let mut resp = [0u8; wire::RESPONSE_LEN];
        accepted.respond(&b_peer_a, 2, &mut rng, &mut resp).unwrap();
        // ... and the initiator refuses the response.
        let msg = Response::new_checked(&resp[..]).unwrap();
        assert_eq!(consume_response(&a, &a_peer_b, &pending, &msg).err(), Some(Error::HandshakeDecrypt));
    }

    #[test]
    fn initiation_to_someone_else_does_not_open() {
        let mut rng = TestRng::new(4);
        let (a, b) = identities();
        let c = Identity::new(SecretKey::generate(&mut rng));
        let a_peer_b = PeerKeys::new(&a, b.public, None).unwrap();
        let mut init = [0u8; wire::INITIATION_LEN];
        create_initiation(&a, &a_peer_b, 1, [0; 12], Instant::ZERO, &mut rng, &mut init).unwrap();
        let msg = Initiation::new_checked(&init[..]).unwrap();
        assert_eq!(consume_initiation(&c, &msg).err(), Some(Error::HandshakeDecrypt));
    }

    #[test]
    fn tai64n_orders_like_time() {
        let a = tai64n(core::time::Duration::new(1_700_000_000, 500_000_000));
        let b = tai64n(core::time::Duration::new(1_700_000_001, 0));
        let c = tai64n(core::time::Duration::new(1_700_000_000, 490_000_000));
        assert!(a < b);
        // 10 ms apart falls into the same 2^24 ns bucket.
        assert_eq!(a, c);
        assert_eq!(&a[..8], &(0x4000_0000_0000_000au64 + 1_700_000_000).to_be_bytes());
    }
}

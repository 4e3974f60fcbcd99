//! The primitives of WireGuard's Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, as the
//! whitepaper names them (HASH, MAC, HMAC, KDF1..3, AEAD, XAEAD, DH), built
//! only from well-kept crates: `blake2`/`hmac` for hashing, `ring` for
//! ChaCha20-Poly1305, `chacha20poly1305` for XChaCha20-Poly1305 (ring has
//! none), `x25519-dalek` for DH.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;
use hmac::SimpleHmac;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::Zeroize;

use crate::error::Error;

pub const TAG_LEN: usize = 16;

/// HASH(a || b || ...): BLAKE2s-256.
pub fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// MAC(key, a || b): keyed BLAKE2s with a 16-byte output.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // Keys are 16 or 32 bytes here; BLAKE2s accepts up to 32, so this
    // cannot fail, but a wrong length must not panic either.
    let Ok(mut m) = <Blake2sMac<U16> as KeyInit>::new_from_slice(key) else {
        return [0; 16];
    };
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// Constant-time equality of two MACs.
pub fn mac_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    // black_box keeps the compiler from turning the fold into an early exit.
    core::hint::black_box(diff) == 0
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let Ok(mut m) = <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// KDF_n(key, input) for n = 1..=3: HKDF with HMAC-BLAKE2s.
pub fn kdf<const N: usize>(key: &[u8; 32], input: &[u8]) -> [[u8; 32]; N] {
    let mut prk = hmac(key, &[input]);
    let mut out = [[0u8; 32]; N];
    let mut prev: [u8; 32] = [0; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        let counter = [i as u8 + 1];
        prev = if i == 0 { hmac(&prk, &[&counter]) } else { hmac(&prk, &[&prev, &counter]) };
        *slot = prev;
    }
    prk.zeroize();
    prev.zeroize();
    out
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A ChaCha20-Poly1305 key for ring.
pub fn aead_key(bytes: &[u8; 32]) -> LessSafeKey {
    match UnboundKey::new(&CHACHA20_POLY1305, bytes) {
        Ok(k) => LessSafeKey::new(k),
        // Unreachable: the length is right by type. Fall back to a key no
        // peer knows rather than panicking.
        Err(_) => zero_key(),
    }
}

/// A key of zeros: what a session's key slots are overwritten with when the
/// session is wiped, so the old key bytes do not linger in memory.
pub fn zero_key() -> LessSafeKey {
    match UnboundKey::new(&CHACHA20_POLY1305, &[0u8; 32]) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => zero_key_unreachable(),
    }
}

#[cold]
fn zero_key_unreachable() -> LessSafeKey {
    // ring only rejects wrong key lengths; 32 is right for ChaCha20-Poly1305.
    loop {
        core::hint::spin_loop();
    }
}

/// AEAD seal in place with a counter nonce; the tag goes to `tag_out`.
#[inline(always)]
pub fn seal(key: &LessSafeKey, counter: u64, aad: &[u8], in_out: &mut [u8], tag_out: &mut [u8]) -> Result<(), Error> {
    let tag_out: &mut [u8; TAG_LEN] = tag_out.try_into().map_err(|_| Error::BufferTooSmall)?;
    let tag = key.seal_in_place_separate_tag(nonce(counter), Aad::from(aad), in_out).map_err(|_| Error::BufferTooSmall)?;
    tag_out.copy_from_slice(tag.as_ref());
    Ok(())
}

/// AEAD open in place; `in_out` is ciphertext || tag, the plaintext is left at
/// its start and its length returned.
#[inline(always)]
pub fn open(key: &LessSafeKey, counter: u64, aad: &[u8], in_out: &mut [u8]) -> Result<usize, Error> {
    key.open_in_place(nonce(counter), Aad::from(aad), in_out).map(|p| p.len()).map_err(|_| Error::Decrypt)
}

/// One-shot AEAD of the handshake (counter 0) into a fixed output.
pub fn seal_once<const P: usize, const C: usize>(key: &[u8; 32], plain: &[u8; P], aad: &[u8]) -> Result<[u8; C], Error> {
    let mut out = [0u8; C];
    let (body, tag) = out.split_at_mut_checked(P).ok_or(Error::BufferTooSmall)?;
    body.copy_from_slice(plain);
    seal(&aead_key(key), 0, aad, body, tag)?;
    Ok(out)
}

/// One-shot AEAD open of a handshake field (counter 0).
pub fn open_once<const P: usize, const C: usize>(key: &[u8; 32], cipher: &[u8; C], aad: &[u8]) -> Result<[u8; P], Error> {
    let mut buf = *cipher;
    let n = open(&aead_key(key), 0, aad, &mut buf).map_err(|_| Error::HandshakeDecrypt)?;
    let mut out = [0u8; P];
    match buf.get(..n) {
        Some(p) if n == P => out.copy_from_slice(p),
        _ => return Err(Error::HandshakeDecrypt),
    }
    buf.zeroize();
    Ok(out)
}

/// XAEAD seal of a cookie: 16 bytes plus a 16-byte tag.
pub fn xseal_cookie(key: &[u8; 32], nonce: &[u8; 24], cookie: &[u8; 16], aad: &[u8]) -> Result<[u8; 32], Error> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut out = [0u8; 32];
    let (body, tag_out) = out.split_at_mut(16);
    body.copy_from_slice(cookie);
    let tag = cipher.encrypt_in_place_detached(nonce.into(), aad, body).map_err(|_| Error::CookieDecrypt)?;
    tag_out.copy_from_slice(&tag);
    Ok(out)
}

/// XAEAD open of a cookie.
pub fn xopen_cookie(key: &[u8; 32], nonce: &[u8; 24], sealed: &[u8; 32], aad: &[u8]) -> Result<[u8; 16], Error> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut body = [0u8; 16];
    let mut tag = [0u8; 16];
    body.copy_from_slice(&sealed[..16]);
    tag.copy_from_slice(&sealed[16..]);
    cipher.decrypt_in_place_detached(nonce.into(), aad, &mut body, (&tag).into()).map_err(|_| Error::CookieDecrypt)?;
    Ok(body)
}

/// DH(secret, public), refusing the all-zero result of a low-order point.
pub fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<[u8; 32], Error> {
    let shared = secret.diffie_hellman(&DalekPublic::from(*public));
    if !shared.was_contributory() {
        return Err(Error::WeakKey);
    }
    Ok(shared.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_outputs_chain() {
        let key = [7u8; 32];
        let [a] = kdf::<1>(&key, b"input");
        let [b1, b2] = kdf::<2>(&key, b"input");
        let [c1, c2, c3] = kdf::<3>(&key, b"input");
        assert_eq!(a, b1);
        assert_eq!(b1, c1);
        assert_eq!(b2, c2);
        assert_ne!(c2, c3);
        // tau1 = HMAC(HMAC(key, input), 0x01)
        let prk = hmac(&key, &[b"input"]);
        assert_eq!(a, hmac(&prk, &[&[1u8]]));
        assert_eq!(c3, hmac(&prk, &[&c2, &[3u8]]));
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        let key = [9u8; 32];
        let sealed: [u8; 48] = seal_once(&key, &[1u8; 32], b"aad").unwrap();
        let plain: [u8; 32] = open_once(&key, &sealed, b"aad").unwrap();
        assert_eq!(plain, [1u8; 32]);
        assert_eq!(open_once::<32, 48>(&key, &sealed, b"aaD"), Err(Error::HandshakeDecrypt));
        let mut bad = sealed;
        bad[0] ^= 1;
        assert_eq!(open_once::<32, 48>(&key, &bad, b"aad"), Err(Error::HandshakeDecrypt));
    }

    #[test]
    fn xaead_cookie_round_trip() {
        let key = [3u8; 32];
        let nonce = [4u8; 24];
        let sealed = xseal_cookie(&key, &nonce, &[5u8; 16], b"mac1").unwrap();
        assert_eq!(xopen_cookie(&key, &nonce, &sealed, b"mac1").unwrap(), [5u8; 16]);
        assert_eq!(xopen_cookie(&key, &nonce, &sealed, b"mac2"), Err(Error::CookieDecrypt));
    }

    #[test]
    fn dh_refuses_low_order_points() {
        let s = StaticSecret::from([1u8; 32]);
        assert_eq!(dh(&s, &[0u8; 32]), Err(Error::WeakKey));
        let p = DalekPublic::from(&StaticSecret::from([2u8; 32])).to_bytes();
        assert!(dh(&s, &p).is_ok());
    }

    #[test]
    fn mac_eq_compares_all_bytes() {
        let a = [1u8; 16];
        let mut b = a;
        assert!(mac_eq(&a, &b));
        b[15] = 0;
        assert!(!mac_eq(&a, &b));
    }
}

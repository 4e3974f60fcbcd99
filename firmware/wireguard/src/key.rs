//! Keys in the format `wg(8)` uses: 32 bytes as 44 characters of standard
//! base64 with padding.
//!
//! A [`SecretKey`] derives its [`PublicKey`] exactly like `wg pubkey`
//! (X25519 with the clamped scalar times the base point). Secret material is
//! zeroed when dropped.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand_core::{CryptoRng, RngCore};
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::ConfigError;

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key in base64 (`wg genkey` output without the newline).
pub const KEY_BASE64_LEN: usize = 44;

fn decode(text: &str) -> Result<[u8; KEY_LEN], ConfigError> {
    let text = text.trim();
    if text.len() != KEY_BASE64_LEN {
        return Err(ConfigError::BadKey);
    }
    // base64 wants room for its worst-case estimate; 44 chars can need 33.
    let mut buf = [0u8; 48];
    let n = STANDARD.decode_slice(text.as_bytes(), &mut buf).map_err(|_| ConfigError::BadKey)?;
    let mut out = [0u8; KEY_LEN];
    match buf.get(..n) {
        Some(bytes) if n == KEY_LEN => out.copy_from_slice(bytes),
        _ => return Err(ConfigError::BadKey),
    }
    buf.zeroize();
    Ok(out)
}

/// Base64 text of a key, kept on the stack.
#[derive(Clone, Copy)]
pub struct KeyText([u8; KEY_BASE64_LEN]);

impl KeyText {
    fn encode(bytes: &[u8; KEY_LEN]) -> KeyText {
        let mut out = [b'='; KEY_BASE64_LEN];
        // 32 bytes always encode to exactly 44 characters.
        let _ = STANDARD.encode_slice(bytes, &mut out);
        KeyText(out)
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl core::fmt::Display for KeyText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer's (or our own) static public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<PublicKey, ConfigError> {
        decode(text).map(PublicKey)
    }

    pub fn to_base64(&self) -> KeyText {
        KeyText::encode(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl core::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.to_base64().fmt(f)
    }
}

/// The device's static private key.
#[derive(Clone)]
pub struct SecretKey(StaticSecret);

impl SecretKey {
    /// A new key from the caller's CSPRNG, clamped like `wg genkey`.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> SecretKey {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        let key = SecretKey::from_bytes(clamp(bytes));
        bytes.zeroize();
        key
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey(StaticSecret::from(bytes))
    }

    pub fn from_base64(text: &str) -> Result<SecretKey, ConfigError> {
        let mut bytes = decode(text)?;
        let key = SecretKey::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }

    /// The key as `wg genkey` would print it.
    pub fn to_base64(&self) -> KeyText {
        KeyText::encode(self.0.as_bytes())
    }

    /// The raw key, for a platform that stores or imports it.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.0.to_bytes()
    }

    /// The public key, identical to `wg pubkey`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.0
    }
}

impl core::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SecretKey({})", self.public_key())
    }
}

/// Curve25519 scalar clamping, as `wg genkey` stores keys.
fn clamp(mut b: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
    b[0] &= 248;
    b[31] = (b[31] & 127) | 64;
    b
}

/// An optional pre-shared symmetric key mixed into the handshake (`wg genpsk`).
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey(pub [u8; KEY_LEN]);

impl PresharedKey {
    pub fn from_base64(text: &str) -> Result<PresharedKey, ConfigError> {
        decode(text).map(PresharedKey)
    }

    pub fn to_base64(&self) -> KeyText {
        KeyText::encode(&self.0)
    }
}

impl core::fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 section 6.1 test vector (Alice), written the way wg prints it.
    const ALICE_SECRET: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const ALICE_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

    #[test]
    fn rfc7748_vector_in_wg_format() {
        let s = SecretKey::from_base64(ALICE_SECRET).unwrap();
        assert_eq!(s.public_key().to_base64().as_str(), ALICE_PUBLIC);
        assert_eq!(s.to_base64().as_str(), ALICE_SECRET);
        let p = PublicKey::from_base64(ALICE_PUBLIC).unwrap();
        assert_eq!(p, s.public_key());
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "AAAA",
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",   // no padding
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo==", // too long
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqqb!mo=",  // bad char
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm==",  // 31 bytes
        ] {
            assert_eq!(PublicKey::from_base64(bad), Err(ConfigError::BadKey), "{bad}");
        }
        // Surrounding whitespace (a trailing newline from a file) is fine.
        assert!(PublicKey::from_base64(" hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n").is_ok());
    }

    #[test]
    fn generated_keys_are_clamped() {
        let mut rng = crate::test_rng::TestRng::new(3);
        let k = SecretKey::generate(&mut rng);
        let b = k.0.to_bytes();
        assert_eq!(b[0] & 7, 0);
        assert_eq!(b[31] & 0xc0, 0x40);
    }
}

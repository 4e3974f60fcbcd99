//! `keygen` (`genkey`), `genpsk` and `pubkey`: WireGuard keys in the
//! base64 form `wg` uses.
//!
//! The public key is derived by `routerd-wireguard`'s key module, the code
//! the box itself uses, so routerctl and the box can never disagree.

use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::{Failure, EXIT_FAILED};

/// A stdin longer than this is not a key; stop reading there.
const MAX_KEY_INPUT: u64 = 1024;

/// Curve25519 clamping, as `wg genkey` applies it before printing.
pub fn clamp(mut key: [u8; 32]) -> [u8; 32] {
    key[0] &= 248;
    key[31] &= 127;
    key[31] |= 64;
    key
}

/// 32 bytes from the operating system's random source.
fn random_key() -> Result<[u8; 32], Failure> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| Failure { code: EXIT_FAILED, message: format!("cannot read the system's random source: {e}") })?;
    Ok(key)
}

pub fn generate_private() -> Result<[u8; 32], Failure> {
    random_key().map(clamp)
}

/// A preshared key is 32 random bytes, used as they are (`wg genpsk`).
pub fn generate_preshared() -> Result<[u8; 32], Failure> {
    random_key()
}

pub fn public_from_private(private: [u8; 32]) -> [u8; 32] {
    routerd_wireguard::SecretKey::from_bytes(private).public_key().0
}

/// Parses a base64 key as `wg` prints it; the error says what is wrong.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if text.len() != 44 {
        return Err(format!("expected a 44-character base64 WireGuard key, got {} characters", text.chars().count()));
    }
    let bytes = STANDARD.decode(text).map_err(|e| format!("the key is not valid base64: {e}"))?;
    bytes.try_into().map_err(|_| "the key does not decode to 32 bytes".to_string())
}

pub fn encode_key(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

fn print_line(line: &str) -> Result<u8, Failure> {
    println!("{line}");
    Ok(0)
}

pub fn keygen() -> Result<u8, Failure> {
    let key = generate_private()?;
    print_line(&encode_key(&key))
}

pub fn genpsk() -> Result<u8, Failure> {
    let key = generate_preshared()?;
    print_line(&encode_key(&key))
}

pub fn pubkey() -> Result<u8, Failure> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_KEY_INPUT)
        .read_to_end(&mut input)
        .map_err(|e| Failure::usage(format!("cannot read a private key from stdin: {e}")))?;
    let parsed = match std::str::from_utf8(&input) {
        Ok(text) => parse_key(text),
        Err(_) => Err("the input is not text".to_string()),
    };
    let private = parsed
        .map_err(|e| Failure::usage(format!("stdin is not a WireGuard private key: {e}\nhint: routerctl keygen | routerctl pubkey")))?;
    print_line(&encode_key(&public_from_private(private)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_vector() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let private: [u8; 32] = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(public_from_private(private), public);
    }

    #[test]
    fn generated_keys_are_clamped_and_differ() {
        let a = generate_private().unwrap();
        let b = generate_private().unwrap();
        assert_ne!(a, b);
        assert_eq!(a[0] & 7, 0);
        assert_eq!(a[31] & 0xc0, 0x40);
        assert_eq!(parse_key(&encode_key(&a)).unwrap(), a);
    }

    #[test]
    fn preshared_keys_are_random_and_not_clamped() {
        // Clamping would fix 3 bits of byte 0 and 2 of byte 31: across 64
        // keys, some must differ there.
        let keys: Vec<[u8; 32]> = (0..64).map(|_| generate_preshared().unwrap()).collect();
        assert!(keys.iter().any(|k| k[0] & 7 != 0), "genpsk must not clamp");
        assert!(keys.iter().any(|k| k[31] & 0xc0 != 0x40), "genpsk must not clamp");
        assert_ne!(keys[0], keys[1]);
        assert_eq!(parse_key(&encode_key(&keys[0])).unwrap(), keys[0]);
    }

    #[test]
    fn bad_keys_are_explained() {
        assert!(parse_key("abc").unwrap_err().contains("44-character"));
        assert!(parse_key(&"!".repeat(44)).unwrap_err().contains("base64"));
        assert!(parse_key(" uFay6wdmuASPxoRzXNjwSEVrqgbxONTIjlWYqmQxmWw=\n").is_ok());
    }

    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}

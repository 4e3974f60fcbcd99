//! The box's key slots: what a slot holds and how it may be shown.
//!
//! A slot (`device:NAME` in a configuration) holds a tunnel's private key
//! or a peer's preshared key, and keeps the kind it was made with: the node
//! refuses to use a slot for the other kind, naming the field. A slot is
//! shown as [`KeyInfo`] — a private key's public half, a preshared key by
//! name only; the secrets leave the node only for the platform's own store
//! (`crate::persist`) and, for a preshared key, when asked for by name
//! (`Op::PresharedKeyReveal`).

use config_schema::Name;
use rand_core::{CryptoRng, RngCore};
use routerd_provision::message::{Failure, KeyInfo, KeyKind, Reply};
use routerd_wireguard::{PresharedKey, SecretKey};

/// One slot of the box's key store.
pub(crate) struct KeySlot {
    pub name: Name,
    pub key: SlotKey,
    /// Made on the box (else imported).
    pub generated: bool,
}

/// What a key slot holds.
#[derive(Clone)]
pub(crate) enum SlotKey {
    Private(SecretKey),
    Preshared(PresharedKey),
}

impl SlotKey {
    pub fn kind(&self) -> KeyKind {
        match self {
            SlotKey::Private(_) => KeyKind::Private,
            SlotKey::Preshared(_) => KeyKind::Preshared,
        }
    }

    /// A new key of `kind` from the box's entropy.
    pub fn generate(kind: KeyKind, rng: &mut (impl RngCore + CryptoRng)) -> SlotKey {
        match kind {
            KeyKind::Private => SlotKey::Private(SecretKey::generate(rng)),
            KeyKind::Preshared => {
                let mut k = PresharedKey::default();
                rng.fill_bytes(&mut k.0);
                SlotKey::Preshared(k)
            }
        }
    }

    pub fn from_bytes(kind: KeyKind, bytes: [u8; 32]) -> SlotKey {
        match kind {
            KeyKind::Private => SlotKey::Private(SecretKey::from_bytes(bytes)),
            KeyKind::Preshared => SlotKey::Preshared(PresharedKey(bytes)),
        }
    }

    /// The secret, for the platform's store only.
    pub fn to_bytes(&self) -> [u8; 32] {
        match self {
            SlotKey::Private(s) => s.to_bytes(),
            SlotKey::Preshared(k) => k.0,
        }
    }
}

impl KeySlot {
    /// The slot as it may be shown: a private key's public half, never a secret.
    pub fn info(&self, in_use: bool) -> KeyInfo {
        KeyInfo {
            slot: self.name.clone(),
            kind: self.key.kind(),
            public_key: match &self.key {
                SlotKey::Private(s) => Some(s.public_key().0),
                SlotKey::Preshared(_) => None,
            },
            generated: self.generated,
            in_use,
        }
    }
}

/// Where a configuration names a slot of a kind: `wireguard[i].private_key`
/// or `peers[i].preshared_key`.
pub(crate) struct SlotField(pub KeyKind, pub usize);

impl core::fmt::Display for SlotField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            KeyKind::Private => write!(f, "wireguard[{}].private_key", self.1),
            KeyKind::Preshared => write!(f, "peers[{}].preshared_key", self.1),
        }
    }
}

/// Refuses a key operation on `slot`, which holds a key of kind `held`,
/// not of the kind the operation makes.
pub(crate) fn wrong_kind(slot: &Name, held: KeyKind) -> Reply {
    let hint = match held {
        KeyKind::Private => "`routerctl key generate|import` changes it",
        KeyKind::Preshared => "`routerctl key psk generate|import` changes it",
    };
    Reply::Error(Failure::refused(format_args!("keys: slot {slot} holds a {}; {hint}", held.noun())))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use rand_core::OsRng;
    use std::string::ToString;

    fn slot(key: SlotKey) -> KeySlot {
        KeySlot { name: Name::new("s").unwrap(), key, generated: true }
    }

    #[test]
    fn a_slot_keeps_its_kind_through_its_bytes() {
        for kind in [KeyKind::Private, KeyKind::Preshared] {
            let a = SlotKey::generate(kind, &mut OsRng);
            let b = SlotKey::generate(kind, &mut OsRng);
            assert_eq!(a.kind(), kind);
            assert_ne!(a.to_bytes(), b.to_bytes(), "{kind:?}: two keys alike");
            let back = SlotKey::from_bytes(kind, a.to_bytes());
            assert_eq!((back.kind(), back.to_bytes()), (kind, a.to_bytes()));
        }
    }

    #[test]
    fn only_a_private_keys_public_half_is_shown() {
        let secret = SecretKey::from_bytes([0x42; 32]);
        let public = secret.public_key().0;
        let shown = slot(SlotKey::Private(secret)).info(true);
        assert_eq!((shown.kind, shown.public_key, shown.in_use), (KeyKind::Private, Some(public), true));
        let shown = slot(SlotKey::Preshared(PresharedKey([0x42; 32]))).info(false);
        assert_eq!((shown.kind, shown.public_key, shown.in_use), (KeyKind::Preshared, None, false));
    }

    #[test]
    fn fields_and_refusals_name_the_path_and_the_kind() {
        assert_eq!(SlotField(KeyKind::Private, 0).to_string(), "wireguard[0].private_key");
        assert_eq!(SlotField(KeyKind::Preshared, 3).to_string(), "peers[3].preshared_key");
        let Reply::Error(f) = wrong_kind(&Name::new("wg0").unwrap(), KeyKind::Private) else { panic!() };
        assert_eq!(f.message.as_str(), "keys: slot wg0 holds a private key; `routerctl key generate|import` changes it");
    }
}

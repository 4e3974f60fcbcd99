//! What the box remembers across reboots and power cuts: the running
//! configuration, the key slots and a little box state, as one record.
//!
//! The node produces the record ([`crate::Node::saved_state`]) whenever
//! something worth keeping changed ([`crate::Node::take_unsaved`] tells the
//! platform), and takes it back at boot ([`crate::Node::restore`]); the
//! platform writes it with `routerd-storage`'s power-loss-safe store, which
//! treats it as opaque bytes. The record is postcard with its own version
//! and the configuration schema's hash: a record from another schema is
//! refused whole (never half-applied), and says so.
//!
//! Secrets: private and preshared keys are in the record — that is the
//! point (the other site must not be re-keyed after a reboot) — and the
//! record goes only to the box's own state partition.
//!
//! Layouts: version 2 gives each key slot its kind (private or preshared).
//! A version 1 record (every slot a private key) is still read, so a box
//! updated in the field keeps its WireGuard identity.

use alloc::boxed::Box;
use config_schema::{Config, Name};
use heapless::Vec;
use routerd_provision::message as msg;
use serde::{Deserialize, Serialize};

/// Bumped with every change of [`Saved`]'s layout (1: key slots without a
/// kind, still read by [`Saved::decode`]).
pub const SAVED_VERSION: u16 = 2;

/// Largest encoded record: a maximal configuration (at most
/// `CONFIG_WIRE_MAX`, asserted by config-schema), the key slots (20 × 60
/// bytes) and the state fields (under 40 bytes), with room to spare.
pub const SAVED_MAX: usize = config_schema::CONFIG_WIRE_MAX + 2048;
const _: () = assert!(msg::MAX_KEYS * (config_schema::limits::MAX_NAME_LEN + 1 + 1 + 32 + 1) + 64 <= 2048);
const _: () = assert!(SAVED_MAX <= routerd_storage::MAX_PAYLOAD, "the record must fit the store's slot");

/// A key slot as it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedKey {
    pub name: Name,
    pub kind: msg::KeyKind,
    /// The private key or the preshared key, as imported or made.
    pub secret: [u8; 32],
    /// Made on the box (else imported).
    pub generated: bool,
}

/// The record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u16,
    /// `config_schema::SCHEMA_HASH` of the box that wrote it.
    pub schema: u64,
    /// Applies since the box was first configured (the running
    /// configuration's generation).
    pub generation: u64,
    /// Boots that restored this box's state (the platform counts).
    pub boots: u32,
    /// The last wall-clock time the box knew, in milliseconds since the
    /// Unix epoch: WireGuard timestamps must never go backwards across a
    /// reboot, so the next boot starts its clock no earlier than this.
    pub wall_clock_ms: Option<u64>,
    pub keys: Vec<SavedKey, { msg::MAX_KEYS }>,
    pub config: Option<Box<Config>>,
}

/// Why a record was not taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreError {
    /// Not a record (bad length, bad encoding, trailing bytes).
    Malformed,
    /// A record layout this software does not read.
    Version(u16),
    /// Written by a box with another configuration schema.
    Schema(u64),
}

impl core::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RestoreError::Malformed => f.write_str("the saved state is not a record this box can read"),
            RestoreError::Version(v) => write!(f, "the saved state has layout version {v}; this software reads {SAVED_VERSION}"),
            RestoreError::Schema(h) => write!(
                f,
                "the saved state was written for configuration schema {h:#018x}; this software runs {:#018x}",
                config_schema::SCHEMA_HASH
            ),
        }
    }
}

impl Saved {
    /// Encode into `buf`; the bytes used.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        let n = buf.len().min(SAVED_MAX);
        let buf = buf.get_mut(..n)?;
        postcard::to_slice(self, buf).ok().map(|b| &*b)
    }

    /// Decode and check a record; nothing in it is trusted before this.
    pub fn decode(bytes: &[u8]) -> Result<Saved, RestoreError> {
        // Every layout starts with its version.
        let Ok((version, _)) = postcard::take_from_bytes::<u16>(bytes) else {
            return Err(RestoreError::Malformed);
        };
        let saved = match version {
            1 => whole::<SavedV1>(bytes)?.into(),
            SAVED_VERSION => whole::<Saved>(bytes)?,
            v => return Err(RestoreError::Version(v)),
        };
        if saved.schema != config_schema::SCHEMA_HASH {
            return Err(RestoreError::Schema(saved.schema));
        }
        Ok(saved)
    }
}

/// One value that is all of `bytes`.
fn whole<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, RestoreError> {
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        _ => Err(RestoreError::Malformed),
    }
}

/// The version 1 record: [`Saved`] with every key slot a private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedV1 {
    pub version: u16,
    pub schema: u64,
    pub generation: u64,
    pub boots: u32,
    pub wall_clock_ms: Option<u64>,
    pub keys: Vec<SavedKeyV1, { msg::MAX_KEYS }>,
    pub config: Option<Box<Config>>,
}

/// A version 1 key slot (a private key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedKeyV1 {
    pub name: Name,
    pub secret: [u8; 32],
    pub generated: bool,
}

impl From<SavedV1> for Saved {
    fn from(v1: SavedV1) -> Saved {
        Saved {
            version: SAVED_VERSION,
            schema: v1.schema,
            generation: v1.generation,
            boots: v1.boots,
            wall_clock_ms: v1.wall_clock_ms,
            keys: v1
                .keys
                .into_iter()
                .map(|k| SavedKey { name: k.name, kind: msg::KeyKind::Private, secret: k.secret, generated: k.generated })
                .collect(),
            config: v1.config,
        }
    }
}

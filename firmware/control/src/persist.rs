//! What the box remembers across reboots and power cuts: the running
//! configuration, the configurations applied before it, the key slots and a
//! little box state, as one record.
//!
//! The node produces the record ([`crate::Node::saved_state`]) whenever
//! something worth keeping changed ([`crate::Node::take_unsaved`] tells the
//! platform), and takes it back at boot ([`crate::Node::restore`]); the
//! platform writes it with `routerd-storage`'s power-loss-safe store, which
//! treats it as opaque bytes. The record is postcard with its own version
//! and the configuration schema's hash: a record from another schema is
//! refused whole (never half-applied), and says so. A factory reset
//! ([`crate::Node::take_erase`]) erases the store rather than saving.
//!
//! Secrets: private and preshared keys are in the record — that is the
//! point (the other site must not be re-keyed after a reboot) — and the
//! record goes only to the box's own state partition.
//!
//! **History and its space.** The record keeps up to
//! [`msg::HISTORY_MAX`] generations (oldest first, the running one last),
//! each with when and how it was made and whether it was confirmed. The
//! whole record must fit one store slot (`routerd_storage::MAX_PAYLOAD`,
//! 64 KiB): everything but configurations fits in [`STATE_RESERVE`], and the
//! configurations together in [`CONFIG_BUDGET`]. The running configuration
//! (at most `CONFIG_WIRE_MAX`) always fits, and so does the generation a
//! pending commit-confirm reverts to; older generations are dropped, oldest
//! first, when theirs would not fit (with maximal configurations of 20 KiB
//! three are kept; typical ones of a few KiB, all eight).
//!
//! Layouts: version 2 gave each key slot its kind (private or preshared);
//! version 3 adds the history and a pending commit-confirm. Versions 1 (every
//! slot a private key) and 2 are still read, so a box updated in the field
//! keeps its WireGuard identity and configuration; its history starts with
//! the running configuration.

use alloc::boxed::Box;
use config_schema::{Config, Name};
use heapless::Vec;
use routerd_provision::message as msg;
use serde::{Deserialize, Serialize};

/// Bumped with every change of [`Saved`]'s layout (1: key slots without a
/// kind; 2: no history; both still read by [`Saved::decode`]).
pub const SAVED_VERSION: u16 = 3;

/// Largest encoded record: one store slot.
pub const SAVED_MAX: usize = routerd_storage::MAX_PAYLOAD;
/// Room for everything in the record but configurations: the key slots
/// (20 × 60 bytes), the state fields, the history's entries without their
/// configurations (8 × under 50 bytes) and a pending commit-confirm.
pub const STATE_RESERVE: usize = 4096;
/// Room for the configurations: the running one and the kept history.
pub const CONFIG_BUDGET: usize = SAVED_MAX - STATE_RESERVE;

const KEYS_MAX: usize = msg::MAX_KEYS * (config_schema::limits::MAX_NAME_LEN + 1 + 1 + 32 + 1) + 1;
// version, schema, generation, boots, wall clock, the two option tags and the pending commit-confirm.
const FIELDS_MAX: usize = 3 + 10 + 10 + 5 + 11 + 2 + 1 + 10 + 10 + 5;
// generation, time, origin (tag and a u64), confirmed, the config's option tag.
const ENTRY_MAX: usize = 10 + 11 + 1 + 10 + 1 + 1;
const _: () = assert!(KEYS_MAX + FIELDS_MAX + msg::HISTORY_MAX * ENTRY_MAX < STATE_RESERVE);
// The running configuration and the one a commit-confirm reverts to always fit.
const _: () = assert!(2 * config_schema::CONFIG_WIRE_MAX <= CONFIG_BUDGET);
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

/// One applied configuration as it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedGeneration {
    pub generation: u64,
    /// Wall-clock time of the apply (ms since the Unix epoch), if known.
    pub applied_ms: Option<u64>,
    pub origin: msg::Origin,
    pub confirmed: bool,
    /// `None` for the running generation: its configuration is
    /// [`Saved::config`], kept once.
    pub config: Option<Box<Config>>,
}

/// A commit-confirm that was pending when the record was written. A box
/// that restarts with one comes back on `reverts_to`: the trial was not
/// confirmed, and the point of it is not to lock the operator out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPending {
    pub generation: u64,
    pub reverts_to: u64,
    pub window_ms: u32,
}

/// The record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u16,
    /// `config_schema::SCHEMA_HASH` of the box that wrote it.
    pub schema: u64,
    /// The last generation number the box handed out (the running
    /// configuration's; never reused until a factory reset).
    pub generation: u64,
    /// Boots that restored this box's state (the platform counts).
    pub boots: u32,
    /// The last wall-clock time the box knew, in milliseconds since the
    /// Unix epoch: WireGuard timestamps must never go backwards across a
    /// reboot, so the next boot starts its clock no earlier than this.
    pub wall_clock_ms: Option<u64>,
    pub keys: Vec<SavedKey, { msg::MAX_KEYS }>,
    /// The running configuration.
    pub config: Option<Box<Config>>,
    /// Kept generations, oldest first; the last is the running one (its
    /// configuration is `config`). Space policy: the module docs.
    pub history: Vec<SavedGeneration, { msg::HISTORY_MAX }>,
    pub pending: Option<SavedPending>,
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
            RestoreError::Version(v) => write!(f, "the saved state has layout version {v}; this software reads 1 to {SAVED_VERSION}"),
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
            1 => SavedV2::from(whole::<SavedV1>(bytes)?).into(),
            2 => whole::<SavedV2>(bytes)?.into(),
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

/// The version 2 record: [`Saved`] without history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedV2 {
    pub version: u16,
    pub schema: u64,
    pub generation: u64,
    pub boots: u32,
    pub wall_clock_ms: Option<u64>,
    pub keys: Vec<SavedKey, { msg::MAX_KEYS }>,
    pub config: Option<Box<Config>>,
}

/// The version 1 record: version 2 with every key slot a private key.
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

impl From<SavedV1> for SavedV2 {
    fn from(v1: SavedV1) -> SavedV2 {
        SavedV2 {
            version: 2,
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

/// Older software kept no history: it starts with the running configuration
/// (confirmed: it was running when the box was updated).
impl From<SavedV2> for Saved {
    fn from(v2: SavedV2) -> Saved {
        let mut history = Vec::new();
        if v2.config.is_some() {
            let _ = history.push(SavedGeneration {
                generation: v2.generation,
                applied_ms: None,
                origin: msg::Origin::Upgraded,
                confirmed: true,
                config: None,
            });
        }
        Saved {
            version: SAVED_VERSION,
            schema: v2.schema,
            generation: v2.generation,
            boots: v2.boots,
            wall_clock_ms: v2.wall_clock_ms,
            keys: v2.keys,
            config: v2.config,
            history,
            pending: None,
        }
    }
}

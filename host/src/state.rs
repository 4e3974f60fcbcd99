//! What routerd-host remembers (`--state-dir DIR`): the image's store, in a
//! file.
//!
//! `DIR/state` is `routerd-storage`'s two-slot store over a
//! [`FileDisk`] (4096-byte blocks, `flush` = `fdatasync`), holding the very
//! record the image keeps on its `ROUTERD-STATE` partition
//! (`routerd_control::Saved`: configuration, key slots, generation, boots,
//! wall-clock floor), so a state file and a partition hold the same bytes.
//! The directory is made 0700 and the file 0600: the record holds the keys.
//!
//! Like `firmware/image/src/storage.rs`: at start the store is opened (or
//! made) and its record handed to the router, which restores it through
//! `Node::restore_with` (keys first, then the configuration through the
//! normal atomic apply); [`State::poll`] saves after every change the node
//! reports (`take_unsaved`) — before the control socket's answer goes back
//! — and every [`SAVE_EVERY`]; a factory reset (`take_erase`) erases the
//! store.
//!
//! Refusal policy: a state file that cannot be opened, is not whole blocks,
//! holds no valid record although it is not empty (garbage, both slots
//! torn), or holds a record this software does not read (another schema) is
//! never overwritten: [`State::open`] fails with the reason and routerd-host
//! exits 1 telling the operator to move the file away. There is no
//! `--state-reset`: `mv DIR/state DIR/state.bad` is the reset, and it keeps
//! the evidence. One damaged slot beside a valid record is what a power cut
//! during a save leaves: logged, and the valid record is used.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand_core::OsRng;
use routerd_control::persist::SAVED_MAX;
use routerd_control::{Node, Saved};
use routerd_dataplane::Instant;
use routerd_provision::message::{text, text_fmt, StorageStatus};
use routerd_storage::file::{FileDisk, STATE_FILE_BYTES};
use routerd_storage::{SlotState, Store, SuperblockState};

/// The store's file in `--state-dir`.
pub const STATE_FILE: &str = "state";
/// How often the state is saved while nothing else changes (the clock floor).
pub const SAVE_EVERY: Duration = Duration::from_secs(15 * 60);
/// How far past a saved floor the clock starts when the system clock is
/// behind it (the image's margin: twice the save interval).
pub const CLOCK_MARGIN: Duration = Duration::from_secs(30 * 60);
/// `StorageStatus::disk` for a state file (the path is in the note).
pub const DISK_NAME: &str = "file";

/// The open store.
pub struct State {
    path: PathBuf,
    store: Store<FileDisk>,
    status: StorageStatus,
    last_save: Option<Instant>,
    buf: Vec<u8>,
}

impl State {
    /// Opens `dir/state` (making `dir` 0700 and the store when missing) and
    /// reads its record. `Ok(None)`: an empty store. `Err`: refused, with
    /// the reason and what to do (see the module comment).
    pub fn open(dir: &Path) -> Result<(State, Option<Saved>), String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("--state-dir {}: cannot create: {e}", dir.display()))?;
        if std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            log::warn!("state: {} is readable by group or others, and the state holds keys; chmod 700 it", dir.display());
        }
        let path = dir.join(STATE_FILE);
        let refuse = |what: String| {
            format!(
                "{}: {what}; routerd-host will not overwrite it. Move it away (mv {0} {0}.bad) to start with an empty store, \
                 or put a good copy back",
                path.display()
            )
        };
        let (disk, created) = match FileDisk::open(&path) {
            Ok(d) => (d, false),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let d = FileDisk::create(&path, STATE_FILE_BYTES).map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
                (d, true)
            }
            Err(e) if e.kind() == ErrorKind::InvalidData => return Err(refuse(format!("not a state file ({e})"))),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let region = disk.region();
        let opened = if created { Store::format(disk, region) } else { Store::open(disk, region) };
        let mut store = opened.map_err(|e| refuse(format!("no usable store ({e:?})")))?;
        let report = *store.report();
        let mut buf = vec![0u8; routerd_storage::MAX_PAYLOAD];
        let saved = match store.load(&mut buf) {
            Ok(Some(bytes)) => Some(Saved::decode(bytes).map_err(|e| refuse(e.to_string()))?),
            Ok(None) => {
                let blank = matches!(report.superblock, SuperblockState::Valid | SuperblockState::Blank)
                    && report.slots.iter().all(|s| matches!(s, SlotState::Empty));
                if !blank {
                    return Err(refuse(format!(
                        "holds no valid record (superblock {:?}, slots {:?}, {:?}): garbage, or both copies torn",
                        report.superblock, report.slots[0], report.slots[1]
                    )));
                }
                None
            }
            Err(e) => return Err(refuse(format!("the saved record cannot be read ({e:?})"))),
        };
        if saved.is_some() && report.damaged_slots() > 0 {
            log::warn!("state: {}: {} damaged record slot(s) ignored (a cut during a save)", path.display(), report.damaged_slots());
        }
        let mut status = StorageStatus {
            disk: text(DISK_NAME),
            first_lba: 0,
            blocks: region.blocks,
            damaged_slots: u8::try_from(report.damaged_slots()).unwrap_or(u8::MAX),
            ..StorageStatus::default()
        };
        let what = match (&saved, created) {
            (_, true) => "new store",
            (None, false) => "empty store (nothing saved yet)",
            (Some(_), false) => "restored at start",
        };
        status.note = text_fmt(format_args!("{}: {what}", path.display()));
        log::info!("state: {}: {what}", path.display());
        Ok((State { path, store, status, last_save: None, buf }, saved))
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The restored record's generation and boot count, for status.
    pub fn restored(&mut self, generation: u64, boots: u32) {
        self.status.generation = generation;
        self.status.boots = boots.saturating_add(1);
    }

    /// Erases when the node was reset; saves when the node asks, or when
    /// the clock floor is due (as the image does).
    pub fn poll(&mut self, node: &mut Node<OsRng>, now: Instant) {
        if node.take_erase() {
            self.erase();
            self.last_save = Some(now);
        }
        let every = SAVE_EVERY.as_millis() as u64;
        let due = !node.is_blank() && self.last_save.is_none_or(|t| now.millis_since(t) >= every);
        if node.take_unsaved() || due {
            self.save(node, now);
        }
    }

    fn erase(&mut self) {
        match self.store.erase() {
            Ok(()) => {
                log::warn!("state: {}: FACTORY RESET: configuration, history and every key erased from the file", self.path.display());
                self.status.generation = 0;
                self.status.boots = 0;
                self.status.note = text_fmt(format_args!("{}: erased by a factory reset", self.path.display()));
            }
            Err(e) => {
                self.status.save_errors += 1;
                log::error!("state: {}: FACTORY RESET: the erase FAILED ({e:?}); keys may remain in the file", self.path.display());
            }
        }
    }

    fn save(&mut self, node: &mut Node<OsRng>, now: Instant) {
        let saved = node.saved_state(now);
        self.last_save = Some(now);
        let Some(bytes) = saved.encode(self.buf.get_mut(..SAVED_MAX).unwrap_or(&mut [])) else {
            self.status.save_errors += 1;
            log::error!("state: the state does not fit a record");
            return;
        };
        match self.store.save(bytes) {
            Ok(_) => {
                self.status.saves += 1;
                self.status.generation = saved.generation;
            }
            Err(e) => {
                self.status.save_errors += 1;
                log::error!("state: {}: save failed ({e:?}); the previous state is kept", self.path.display());
            }
        }
    }

    /// The status block (`routerctl status`, `doctor`).
    pub fn status(&self, now: Instant) -> StorageStatus {
        let mut s = self.status.clone();
        s.saved_ms_ago = self.last_save.map(|t| now.millis_since(t));
        s
    }
}

/// The status block without `--state-dir`: nothing survives a restart.
pub fn no_state_status() -> StorageStatus {
    StorageStatus { note: text("no --state-dir: configuration and keys will not survive a restart"), ..StorageStatus::default() }
}

/// The wall clock at start, and its source: the system clock, unless a
/// saved floor says it went backwards (then the floor + [`CLOCK_MARGIN`],
/// as the image does, so WireGuard timestamps keep growing). A system clock
/// at or past the floor is trusted: what the previous run sent was stamped
/// by this same clock, at most its reading now.
pub fn start_clock(system: Duration, floor_ms: Option<u64>) -> (Duration, &'static str) {
    match floor_ms.map(Duration::from_millis) {
        Some(floor) if system < floor => (floor.saturating_add(CLOCK_MARGIN), "saved floor"),
        _ => (system, "system"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_starts_behind_the_floor() {
        let s = Duration::from_secs(2_000_000_000);
        assert_eq!(start_clock(s, None), (s, "system"));
        assert_eq!(start_clock(s, Some(1_000)), (s, "system"));
        let floor = 2_000_000_500_000;
        assert_eq!(start_clock(s, Some(floor)), (Duration::from_millis(floor) + CLOCK_MARGIN, "saved floor"));
    }
}

//! Where the image keeps what it must remember: a `ROUTERD-STATE` GPT
//! partition on a disk (virtio-blk, AHCI or NVMe, named as Linux names them), holding `routerd-storage`'s two-slot
//! store, holding the node's saved state (configuration, key slots,
//! generation, boot count, a wall-clock floor).
//!
//! At boot the disks are searched in PCI bus order; the first
//! with the partition is used. Nothing is ever formatted unless the
//! operator names the disk (`routerctl storage init --disk vda --yes`). A
//! save happens after every change of configuration or keys, and every
//! [`CLOCK_SAVE_MS`] so the wall-clock floor stays close to the truth.
//!
//! The clock: the image has no wall-clock source yet. WireGuard peers refuse
//! a handshake whose timestamp is not newer than the last they saw, so the
//! box's timestamps must grow across reboots: the node's clock starts each
//! boot at the saved floor plus [`CLOCK_MARGIN_MS`], which exceeds the
//! interval between saves.

use alloc::boxed::Box;
use core::time::Duration;
use hal_x86::blk::gpt::{self, Existing};
use hal_x86::blk::{Disk, DiskName};
use hal_x86::entropy::Entropy;
use log::{info, warn};
use routerd_control::persist::SAVED_MAX;
use routerd_control::{Node, Saved};
use routerd_dataplane::Instant;
use routerd_provision::message::{self as msg, text, Failure, Reply, StorageStatus};
use routerd_storage::{Region, Store};

/// Disks the image drives.
pub const MAX_DISKS: usize = msg::MAX_DISKS;
/// How often the state is saved while nothing else changes (the clock floor).
pub const CLOCK_SAVE_MS: u64 = 15 * 60 * 1000;
/// How far ahead of the saved floor the clock starts at boot.
pub const CLOCK_MARGIN_MS: u64 = 2 * CLOCK_SAVE_MS;

/// The disks and the store.
pub struct Storage {
    /// Each disk's name, and the disk unless the store holds it.
    disks: heapless::Vec<(DiskName, Option<Disk>), MAX_DISKS>,
    /// The store and the disk index it lives on (the disk moved into it).
    store: Option<(usize, Store<Disk>)>,
    status: StorageStatus,
    last_save: Option<Instant>,
    buf: Box<[u8]>,
}

impl Storage {
    pub fn new(disks: heapless::Vec<(DiskName, Disk), MAX_DISKS>) -> Storage {
        let mut status = StorageStatus::default();
        for (name, _) in &disks {
            let _ = status.disks.push(text(name));
        }
        Storage {
            disks: disks.into_iter().map(|(n, d)| (n, Some(d))).collect(),
            store: None,
            status,
            last_save: None,
            buf: alloc::vec![0u8; routerd_storage::MAX_PAYLOAD].into_boxed_slice(),
        }
    }

    /// Finds the state partition, opens the store and gives the node what
    /// it holds. Returns true when state was restored.
    pub fn boot(&mut self, node: &mut Node<Entropy>, now: Instant) -> bool {
        // The box's clock starts at zero unless a saved floor says more; it
        // is set either way so every save records how far it got.
        node.set_wall_clock(now, Duration::ZERO);
        if self.disks.is_empty() {
            self.note("no disk: the configuration will not survive a reboot");
            return false;
        }
        for i in 0..self.disks.len() {
            let Some((name, Some(mut disk))) = self.disks.get_mut(i).map(|(n, d)| (n.clone(), d.take())) else { continue };
            let found = match gpt::find_state_partition(&mut disk) {
                Ok(f) => f,
                Err(e) => {
                    info!("storage: {}: no {} partition ({e})", name, gpt::STATE_PARTITION_NAME);
                    if let Some((_, slot)) = self.disks.get_mut(i) {
                        *slot = Some(disk);
                    }
                    continue;
                }
            };
            if !found.copies_agree {
                warn!("storage: {}: the GPT's two copies differ (primary {:?}, backup {:?})", name, found.primary, found.backup);
            }
            let p = found.partition;
            let region = Region { first_lba: p.first_lba, blocks: p.blocks };
            // Open through a borrow first: a refusal keeps the disk here
            // (for `storage init --force`); then for good.
            let checked = Store::open(&mut disk, region).map(|_| ());
            match checked.and_then(|()| Store::open(disk, region)) {
                Ok(store) => {
                    self.status.disk = text(&name);
                    self.status.first_lba = p.first_lba;
                    self.status.blocks = p.blocks;
                    self.status.damaged_slots = u8::try_from(store.report().damaged_slots()).unwrap_or(u8::MAX);
                    if store.report().damaged_slots() > 0 {
                        warn!("storage: {}: {} damaged record slot(s) ignored (a cut during a save)", name, store.report().damaged_slots());
                    }
                    self.store = Some((i, store));
                    return self.restore(node, now);
                }
                Err(e) => {
                    warn!("storage: {}: the {} partition holds no usable store ({e:?})", name, gpt::STATE_PARTITION_NAME);
                }
            }
        }
        self.note("no ROUTERD-STATE partition: the configuration will not survive a reboot (routerctl storage init --disk vda --yes)");
        warn!("storage: no {} partition on any disk: the configuration will not survive a reboot", gpt::STATE_PARTITION_NAME);
        false
    }

    fn restore(&mut self, node: &mut Node<Entropy>, now: Instant) -> bool {
        let Some((_, store)) = self.store.as_mut() else { return false };
        let bytes = match store.load(&mut self.buf) {
            Ok(Some(b)) => b,
            Ok(None) => {
                info!("storage: {}: empty store (nothing saved yet)", self.status.disk.as_str());
                self.note("empty: nothing saved yet");
                return false;
            }
            Err(e) => {
                warn!("storage: {}: the saved state cannot be read ({e:?})", self.status.disk.as_str());
                self.note("the saved state cannot be read");
                return false;
            }
        };
        let saved = match Saved::decode(bytes) {
            Ok(s) => s,
            Err(e) => {
                warn!("storage: {}: {e}; not restored (the store is kept until the next save)", self.status.disk.as_str());
                self.note("the saved state is from other software: not restored");
                return false;
            }
        };
        let floor = saved.wall_clock_ms.unwrap_or(0).saturating_add(CLOCK_MARGIN_MS);
        node.set_wall_clock(now, Duration::from_millis(floor));
        let (generation, boots) = (saved.generation, saved.boots);
        let had_config = saved.config.is_some();
        match node.restore(saved, now) {
            Reply::Applied(_) => {
                info!("storage: {}: restored configuration generation {generation} (boot {})", self.status.disk.as_str(), boots + 1);
            }
            Reply::Error(f) => {
                warn!("storage: {}: keys restored; the saved configuration was refused: {}", self.status.disk.as_str(), f.message.as_str())
            }
            _ if !had_config => info!("storage: {}: keys restored; no configuration was saved", self.status.disk.as_str()),
            _ => {}
        }
        self.status.generation = generation;
        self.status.boots = boots.saturating_add(1);
        self.note("restored at boot");
        true
    }

    /// Saves when the node asks, or when the clock floor is due.
    pub fn poll(&mut self, node: &mut Node<Entropy>, now: Instant) {
        if self.store.is_none() {
            // Keep the flag from piling up; nothing to save to.
            let _ = node.take_unsaved();
            return;
        }
        let due = self.last_save.is_none_or(|t| now.millis_since(t) >= CLOCK_SAVE_MS);
        if node.take_unsaved() || due {
            self.save(node, now);
        }
    }

    fn save(&mut self, node: &mut Node<Entropy>, now: Instant) {
        let Some((_, store)) = self.store.as_mut() else { return };
        let saved = node.saved_state(now);
        let Some(bytes) = saved.encode(self.buf.get_mut(..SAVED_MAX).unwrap_or(&mut [])) else {
            self.status.save_errors += 1;
            warn!("storage: the state does not fit a record");
            return;
        };
        self.last_save = Some(now);
        match store.save(bytes) {
            Ok(_) => {
                self.status.saves += 1;
                self.status.generation = saved.generation;
            }
            Err(e) => {
                self.status.save_errors += 1;
                warn!("storage: {}: save failed ({e:?}); the previous state is kept", self.status.disk.as_str());
            }
        }
    }

    /// The status block (`routerctl status`).
    pub fn status(&self, now: Instant) -> StorageStatus {
        let mut s = self.status.clone();
        s.saved_ms_ago = self.last_save.map(|t| now.millis_since(t));
        s
    }

    fn note(&mut self, what: &str) {
        self.status.note = text(what);
    }

    /// `routerctl storage init --disk NAME`: a new GPT with the state
    /// partition, an empty store, then the running state saved into it.
    pub fn init(&mut self, node: &mut Node<Entropy>, disk: &str, force: bool, now: Instant) -> Reply {
        let Some(i) = self.disks.iter().position(|(n, _)| n.as_str() == disk) else {
            let mut names = heapless::String::<64>::new();
            for (k, n) in self.status.disks.iter().enumerate() {
                let _ = core::fmt::Write::write_fmt(&mut names, format_args!("{}{}", if k > 0 { ", " } else { "" }, n.as_str()));
            }
            return Reply::Error(Failure::refused(format_args!(
                "storage: no disk {disk} on this box (disks: {})",
                if names.is_empty() { "none" } else { names.as_str() }
            )));
        };
        if self.store.as_ref().is_some_and(|(j, _)| *j == i) && !force {
            return Reply::Error(Failure::refused(format_args!(
                "storage: {disk} already holds the box's state; --force erases it and starts over"
            )));
        }
        // Take the disk back from a store on it (force).
        let disk_dev = match self.store.take() {
            Some((j, store)) if j == i => Some(store.into_device()),
            other => {
                self.store = other;
                self.disks.get_mut(i).and_then(|(_, d)| d.take())
            }
        };
        let Some(mut dev) = disk_dev else {
            return Reply::Error(Failure::refused(format_args!("storage: {disk} is not usable")));
        };
        let mut random = [0u8; 32];
        if !node.fill_random(&mut random) {
            if let Some((_, slot)) = self.disks.get_mut(i) {
                *slot = Some(dev);
            }
            return Reply::Error(Failure::refused(format_args!("storage: no trusted entropy source for the partition's GUIDs")));
        }
        let existing = if force { Existing::Overwrite } else { Existing::Refuse };
        let p = match gpt::create_state_partition(&mut dev, random, existing) {
            Ok(p) => p,
            Err(e) => {
                if let Some((_, slot)) = self.disks.get_mut(i) {
                    *slot = Some(dev);
                }
                return Reply::Error(Failure::refused(format_args!("storage: {disk}: {e}")));
            }
        };
        let region = Region { first_lba: p.first_lba, blocks: p.blocks };
        let formatted = Store::format(&mut dev, region).map(|_| ());
        match formatted.and_then(|()| Store::open(dev, region)) {
            Ok(store) => {
                info!(
                    "storage: {disk}: {} partition made (LBA {}, {} blocks); state is kept from now on",
                    gpt::STATE_PARTITION_NAME,
                    p.first_lba,
                    p.blocks
                );
                self.status.disk = text(disk);
                self.status.first_lba = p.first_lba;
                self.status.blocks = p.blocks;
                self.status.damaged_slots = 0;
                self.note("initialised on this boot");
                self.store = Some((i, store));
                self.save(node, now);
                Reply::Done
            }
            Err(e) => Reply::Error(Failure::refused(format_args!("storage: {disk}: the store could not be made ({e:?})"))),
        }
    }
}

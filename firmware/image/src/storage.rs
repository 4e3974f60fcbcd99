//! Where the image keeps what it must remember: a `ROUTERD-STATE` GPT
//! partition on a disk (virtio-blk, AHCI or NVMe, named as Linux names them), holding `routerd-storage`'s two-slot
//! store, holding the node's saved state (configuration, key slots,
//! generation, boot count, a wall-clock floor).
//!
//! At boot the disks are searched in PCI bus order; the first
//! with the partition is used. Nothing is ever formatted unless the
//! operator names the disk (`routerctl storage init --disk vda --yes`). A
//! save happens after every change of configuration or keys, and every
//! [`CLOCK_SAVE_MS`] so the wall-clock floor stays close to the truth
//! (not while the box is blank: nothing to remember).
//!
//! Factory reset: when the node asks (`routerctl reset`,
//! `Node::take_erase`) or the kernel command line says
//! `routerd.reset=factory` (before anything is restored), the store is
//! erased — both slots' headers and payloads zeroed and flushed, so no key
//! stays on the disk — and left empty but valid.
//!
//! The clock: WireGuard peers (wireguard-go, Linux) refuse a handshake
//! initiation whose TAI64N timestamp is not newer than the last they
//! accepted, so the box's timestamps must grow across reboots. Two sources:
//! the CMOS RTC (`hal_x86::rtc`, read once early in boot) and the saved
//! floor — the wall clock of the last save, which happens at least every
//! [`CLOCK_SAVE_MS`]. The rule: wall clock = max(RTC, floor +
//! [`CLOCK_MARGIN_MS`]), where the RTC counts only if it read a valid date
//! not before [`FIRMWARE_YEAR`] (a clock that lost its battery reads 2000).
//! Monotonic because the margin exceeds the save interval: whatever the
//! previous boot last sent, it sent it at most one interval after the last
//! save, so floor + margin is later — and the maximum of two values is never
//! below either. A correct RTC wins once the box was off longer than the
//! margin; after a quick restart floor + margin wins and runs up to 30 min
//! ahead of the true time, which is harmless (timestamps only need to grow).
//! An RTC set back in time cannot pull timestamps behind the floor. With
//! neither, the clock counts from zero (first boot, no disk).

use alloc::boxed::Box;
use core::time::Duration;
use hal_x86::blk::gpt::{self, Existing};
use hal_x86::blk::{Disk, DiskName};
use hal_x86::entropy::Entropy;
use hal_x86::rtc::{DateTime, RtcError};
use log::{info, warn};
use routerd_control::persist::SAVED_MAX;
use routerd_control::{Node, Saved};
use routerd_dataplane::Instant;
use routerd_provision::message::{self as msg, text, text_fmt, Failure, Reply, StorageStatus};
use routerd_storage::{Region, Store, SuperblockState};

/// Disks the image drives.
pub const MAX_DISKS: usize = msg::MAX_DISKS;
/// How often the state is saved while nothing else changes (the clock floor).
pub const CLOCK_SAVE_MS: u64 = 15 * 60 * 1000;
/// How far ahead of the saved floor the clock starts at boot.
pub const CLOCK_MARGIN_MS: u64 = 2 * CLOCK_SAVE_MS;
/// The year this firmware was written: an RTC reading before it has lost
/// its setting (a flat CMOS battery reads 2000-01-01) and is not trusted.
pub const FIRMWARE_YEAR: u16 = 2026;

/// How the wall clock was started at boot (logged once, shown in status).
#[derive(Clone, Copy, Debug)]
enum ClockStart {
    /// The RTC, valid and not behind the floor (the floor, if any).
    Rtc(DateTime, Option<u64>),
    /// The saved floor + margin; why the RTC did not count.
    Floor { floor_ms: u64, rtc: RtcVerdict },
    /// Neither: the clock counts from boot.
    Nothing(RtcVerdict),
}

/// What became of the RTC reading.
#[derive(Clone, Copy, Debug)]
enum RtcVerdict {
    /// Not read (no reading handed in).
    Unread,
    Invalid(RtcError),
    BeforeFirmware(DateTime),
    /// Valid but behind the saved floor + margin.
    Behind(DateTime),
}

/// The disks and the store.
pub struct Storage {
    /// Each disk's name, and the disk unless the store holds it.
    disks: heapless::Vec<(DiskName, Option<Disk>), MAX_DISKS>,
    /// The store and the disk index it lives on (the disk moved into it).
    store: Option<(usize, Store<Disk>)>,
    status: StorageStatus,
    last_save: Option<Instant>,
    buf: Box<[u8]>,
    /// The RTC's reading and when it was taken.
    rtc: Option<(Instant, Result<DateTime, RtcError>)>,
    /// The wall clock as set: (at, milliseconds since the epoch then).
    clock: Option<(Instant, u64)>,
    clock_start: ClockStart,
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
            rtc: None,
            clock: None,
            clock_start: ClockStart::Nothing(RtcVerdict::Unread),
        }
    }

    /// How many disks the box has.
    pub fn disk_count(&self) -> usize {
        self.disks.len()
    }

    /// A disk's name (`vda`, `sda`, `nvme0n1`).
    pub fn disk_name(&self, i: usize) -> Option<DiskName> {
        self.disks.get(i).map(|(n, _)| n.clone())
    }

    /// A disk by index, also the one the store holds (the firmware slots
    /// share the disk with the state partition; writing outside the
    /// store's region leaves it alone).
    pub fn disk_mut(&mut self, i: usize) -> Option<&mut Disk> {
        match &mut self.store {
            Some((j, store)) if *j == i => Some(store.device()),
            _ => self.disks.get_mut(i).and_then(|(_, d)| d.as_mut()),
        }
    }

    /// The RTC as read early in boot, at `at` (before [`Storage::boot`]).
    pub fn set_rtc(&mut self, at: Instant, reading: Result<DateTime, RtcError>) {
        self.rtc = Some((at, reading));
    }

    /// Sets the node's wall clock to max(RTC, `floor_ms` + margin) — the
    /// rule in the module comment.
    fn start_clock(&mut self, node: &mut Node<Entropy>, now: Instant, floor_ms: Option<u64>) {
        let rtc = match self.rtc {
            None => Err(RtcVerdict::Unread),
            Some((_, Err(e))) => Err(RtcVerdict::Invalid(e)),
            Some((_, Ok(dt))) if dt.year < FIRMWARE_YEAR => Err(RtcVerdict::BeforeFirmware(dt)),
            Some((at, Ok(dt))) => match dt.unix_ms() {
                // The RTC as of `now`: it was read a little earlier.
                Some(ms) => Ok((dt, ms.saturating_add(now.millis_since(at)))),
                None => Err(RtcVerdict::BeforeFirmware(dt)),
            },
        };
        let floor = floor_ms.map(|f| f.saturating_add(CLOCK_MARGIN_MS));
        let (start, wall) = match (rtc, floor) {
            (Ok((dt, ms)), Some(f)) if ms < f => (ClockStart::Floor { floor_ms: f, rtc: RtcVerdict::Behind(dt) }, f),
            (Ok((dt, ms)), _) => (ClockStart::Rtc(dt, floor), ms),
            (Err(v), Some(f)) => (ClockStart::Floor { floor_ms: f, rtc: v }, f),
            (Err(v), None) => (ClockStart::Nothing(v), 0),
        };
        self.clock_start = start;
        self.clock = Some((now, wall));
        node.set_wall_clock(now, Duration::from_millis(wall));
    }

    fn log_clock(&self) {
        // No `format!` here: liballoc's formatting unwinds, the image cannot.
        let floor_text =
            |ms: u64| DateTime::from_unix_ms(ms).unwrap_or(DateTime { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 });
        match self.clock_start {
            ClockStart::Rtc(dt, None) => info!("clock: RTC {dt}"),
            ClockStart::Rtc(dt, Some(_)) => info!("clock: RTC {dt} (ahead of the saved floor + 30 min)"),
            ClockStart::Floor { floor_ms, rtc } => {
                let at = floor_text(floor_ms);
                match rtc {
                    RtcVerdict::Behind(dt) => info!("clock: RTC reads {dt}, behind the saved floor; starting at floor + 30 min ({at})"),
                    RtcVerdict::BeforeFirmware(dt) => {
                        warn!("clock: RTC reads {dt}, before {FIRMWARE_YEAR} (lost its setting?); starting at the saved floor + 30 min ({at})")
                    }
                    RtcVerdict::Invalid(e) => warn!("clock: no valid RTC ({e}); starting at the saved floor + 30 min ({at})"),
                    RtcVerdict::Unread => info!("clock: starting at the saved floor + 30 min ({at})"),
                }
            }
            ClockStart::Nothing(rtc) => {
                const AFTER: &str = "and no saved floor; WireGuard timestamps count from boot (a peer may refuse them after a restart)";
                match rtc {
                    RtcVerdict::Invalid(e) => warn!("clock: no valid RTC ({e}) {AFTER}"),
                    RtcVerdict::BeforeFirmware(dt) | RtcVerdict::Behind(dt) => {
                        warn!("clock: the RTC reads {dt}, before {FIRMWARE_YEAR}, {AFTER}")
                    }
                    RtcVerdict::Unread => warn!("clock: no RTC reading {AFTER}"),
                }
            }
        }
    }

    /// The wall clock now and where it came from (`routerctl status`).
    pub fn clock(&self, now: Instant) -> (Option<u64>, &'static str) {
        let source = match self.clock_start {
            ClockStart::Rtc(..) => "rtc",
            ClockStart::Floor { .. } => "saved floor",
            ClockStart::Nothing(_) => return (None, "none"),
        };
        (self.clock.map(|(at, wall)| wall.saturating_add(now.millis_since(at))), source)
    }

    /// Finds the state partition, opens the store and gives the node what
    /// it holds, and starts the wall clock. Returns true when state was
    /// restored. With `factory_reset` (`routerd.reset=factory`) the store found is
    /// erased instead, and nothing is restored.
    pub fn boot(&mut self, node: &mut Node<Entropy>, now: Instant, factory_reset: bool) -> bool {
        // The RTC alone first (or zero), so the clock is set whatever
        // happens and every save records how far it got; a restored floor
        // may move it forward.
        self.start_clock(node, now, None);
        let restored = self.open_and_restore(node, now, factory_reset);
        self.log_clock();
        restored
    }

    fn open_and_restore(&mut self, node: &mut Node<Entropy>, now: Instant, factory_reset: bool) -> bool {
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
                    let damaged = store.report().damaged_slots();
                    match store.report().superblock {
                        // A superblock written once and never again that
                        // fails its checks is not a power cut: say so.
                        SuperblockState::Corrupt(_) | SuperblockState::Unreadable(_) => warn!(
                            "storage: {}: the {} partition holds no valid store (damaged superblock, {damaged} damaged record slot(s)): \
                             nothing restored; the next save starts a new store there",
                            name,
                            gpt::STATE_PARTITION_NAME
                        ),
                        _ if damaged > 0 => {
                            warn!("storage: {}: {damaged} damaged record slot(s) ignored (a cut during a save, or damage)", name)
                        }
                        _ => {}
                    }
                    self.store = Some((i, store));
                    if factory_reset {
                        self.erase("routerd.reset=factory on the kernel command line");
                        return false;
                    }
                    return self.restore(node, now);
                }
                Err(e) => {
                    warn!("storage: {}: the {} partition holds no usable store ({e:?})", name, gpt::STATE_PARTITION_NAME);
                }
            }
        }
        let first = self.disks.first().map(|(n, _)| n.as_str()).unwrap_or("vda");
        self.status.note = text_fmt(format_args!(
            "no ROUTERD-STATE partition: the configuration will not survive a reboot (routerctl storage init --disk {first} --yes)"
        ));
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
        self.start_clock(node, now, Some(saved.wall_clock_ms.unwrap_or(0)));
        let boots = saved.boots;
        let had_config = saved.config.is_some();
        let reply = node.restore_with(saved, now, &mut crate::router::bgp_room);
        // A record saved while a commit-confirm was on trial comes back on
        // the confirmed generation, a new one: the node's number is the truth.
        let generation = node.generation();
        match reply {
            Reply::Applied(_) => {
                info!("storage: {}: restored configuration generation {generation} (boot {})", self.status.disk.as_str(), boots + 1);
            }
            Reply::Error(f) => {
                warn!(
                    "storage: {}: keys restored; the saved configuration was refused by this firmware: {}; not forwarding. \
                     It is kept (routerctl config get shows it) until an apply replaces it",
                    self.status.disk.as_str(),
                    f.message.as_str()
                );
            }
            _ if !had_config => info!("storage: {}: keys restored; no configuration was saved", self.status.disk.as_str()),
            _ => {}
        }
        self.status.generation = generation;
        self.status.boots = boots.saturating_add(1);
        match node.refused_config() {
            Some(why) => self.status.note = text_fmt(format_args!("saved configuration refused by this firmware (kept): {why}")),
            None => self.note("restored at boot"),
        }
        true
    }

    /// Erases when the node was reset; saves when the node asks, or when
    /// the clock floor is due.
    pub fn poll(&mut self, node: &mut Node<Entropy>, now: Instant) {
        if node.take_erase() {
            self.erase("a factory reset (routerctl reset)");
            self.last_save = Some(now);
        }
        if self.store.is_none() {
            // Keep the flag from piling up; nothing to save to.
            let _ = node.take_unsaved();
            return;
        }
        let due = !node.is_blank() && self.last_save.is_none_or(|t| now.millis_since(t) >= CLOCK_SAVE_MS);
        if node.take_unsaved() || due {
            self.save(node, now);
        }
    }

    /// Zeroes the store (both slots, headers and payloads), said loudly.
    fn erase(&mut self, why: &str) {
        let Some((_, store)) = self.store.as_mut() else {
            warn!("factory reset ({why}): no store on any disk; nothing to erase");
            return;
        };
        match store.erase() {
            Ok(()) => {
                warn!(
                    "storage: {}: FACTORY RESET by {why}: configuration, history and every key erased from the disk",
                    self.status.disk.as_str()
                );
                self.status.generation = 0;
                self.status.boots = 0;
                self.note("erased by a factory reset");
            }
            Err(e) => {
                self.status.save_errors += 1;
                warn!("storage: {}: FACTORY RESET: the erase FAILED ({e:?}); keys may remain on the disk", self.status.disk.as_str());
                self.note("factory reset: the erase failed");
            }
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

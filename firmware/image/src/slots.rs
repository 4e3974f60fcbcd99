//! Two firmware slots, a trial boot and its confirmation: `routerctl
//! upgrade` on the box.
//!
//! A disk written by `routerctl image build` has two slots (`ROUTERD-A`,
//! `ROUTERD-B`: the ELF as raw blocks) and `ROUTERD-BOOT`, whose FAT volume
//! holds GRUB's 1 KiB environment block at a fixed place (sector
//! [`ENV_SECTOR`] of the partition; docs/DISK-LAYOUT.md). GRUB boots
//! `routerd_slot`, or `routerd_trial` while `routerd_tries` lasts, counting
//! down before each trial boot, and tells the firmware which slot it booted
//! (`routerd.slot=A|B`) and whether this is a trial (`routerd.trial=N`: N
//! tries left after this one).
//!
//! An upgrade ([`Slots::handle`]): the firmware streams in over the
//! provisioning session into the slot that is **not** running (never the
//! running one: a bad write there could leave nothing to boot), in order,
//! resumable (a new `UpgradeBegin` with the same size and SHA-256 answers
//! how far it got). At commit the box flushes, reads the whole slot back and
//! checks its SHA-256 and that it is a routerd firmware GRUB can boot
//! (`routerd_provision::firmware::inspect`), then rewrites the environment
//! block — `routerd_slot` stays the running slot, `routerd_trial` the new
//! one, `routerd_tries` [`TRIAL_TRIES`] — flushes and reboots.
//!
//! The trial ([`Slots::poll`]): the new firmware confirms itself once it
//! has been healthy for [`HEALTHY_FOR_MS`] — booted, a NIC running, every
//! NIC its configuration uses with link, and the stored configuration
//! applied (not refused by this firmware) — by making itself `routerd_slot`
//! and clearing the trial. If it is not healthy within [`CONFIRM_WITHIN_MS`]
//! it restarts the box; GRUB counts the try; when the tries are gone GRUB
//! boots the old slot and leaves `routerd_failed`, which the old firmware
//! reports (log and `status`). A crash or a power cut during the trial
//! counts the same way. The configuration and the keys are never touched by
//! any of this: they live in `ROUTERD-STATE`.
//!
//! Power cuts: the slot is written before the environment block names it,
//! so a cut while streaming leaves the old slot booting; the environment
//! block changes by rewriting its first sector (everything routerd and GRUB
//! write fits there), which a disk writes whole or not at all.

use crate::storage::Storage;
use alloc::boxed::Box;
use hal_x86::blk::gpt;
use hal_x86::blk::DiskName;
use log::{info, warn};
use routerd_dataplane::Instant;
use routerd_provision::firmware::{self, BootEnv as Env, NotFirmware, Slot, ENV_BYTES};
use routerd_provision::message::{
    text, text_fmt, Failure, FirmwareIdentity, FirmwareStatus, Op, Reply, SlotStatus, UpgradeBegin, UpgradeChunk, UpgradeProgress,
    FIRMWARE_MAX, UPGRADE_CHUNK,
};
use routerd_storage::BlockDevice;

/// The slot partitions' and the boot-state partition's GPT names.
pub const SLOT_NAMES: [&str; 2] = ["ROUTERD-A", "ROUTERD-B"];
pub const BOOT_NAME: &str = "ROUTERD-BOOT";
/// Where GRUB's environment block starts in `ROUTERD-BOOT` (the FAT
/// volume's first data cluster; checked when the image is built).
pub const ENV_SECTOR: u64 = 45;
/// Boots a new firmware gets to confirm itself.
pub const TRIAL_TRIES: u8 = 3;
/// How long a trial boot has to become healthy before it restarts.
pub const CONFIRM_WITHIN_MS: u64 = 120_000;
/// How long a trial boot must stay healthy before it confirms.
pub const HEALTHY_FOR_MS: u64 = 3_000;
/// A test build that never confirms restarts this soon (the tests would
/// otherwise wait [`CONFIRM_WITHIN_MS`] per try).
pub const TEST_BUILD_RESTART_MS: u64 = 5_000;
const SECTOR: usize = 512;

#[derive(Clone, Copy, Debug)]
struct Part {
    first_lba: u64,
    blocks: u64,
}

impl Part {
    fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(SECTOR as u64)
    }
}

/// Where the slots are.
struct Layout {
    disk: usize,
    name: DiskName,
    slots: [Part; 2],
    boot: Part,
}

/// A firmware being streamed in.
struct Receiving {
    slot: Slot,
    size: u32,
    sha256: [u8; 32],
    identity: FirmwareIdentity,
    received: u32,
}

/// The firmware slots and what this boot is.
pub struct Slots {
    me: FirmwareIdentity,
    running: Option<Slot>,
    /// `routerd.trial=N`: tries left after this boot.
    trial: Option<u8>,
    layout: Option<Layout>,
    /// The other slot's firmware, as read at boot (or written since).
    other: Option<FirmwareIdentity>,
    failed: Option<Slot>,
    boot_at: Instant,
    confirmed: bool,
    healthy_since: Option<Instant>,
    next_confirm_try: Instant,
    receiving: Option<Receiving>,
    /// Set by a commit: the platform reboots after the answer went out.
    reboot: bool,
    buf: Box<[u8]>,
}

impl Slots {
    /// What GRUB said (`routerd.slot`, `routerd.trial`) and what the disks
    /// hold. Logs the slots, and a trial that ran out.
    pub fn boot(me: FirmwareIdentity, slot: Option<&str>, trial: Option<&str>, storage: &mut Storage, now: Instant) -> Slots {
        let running = slot.and_then(Slot::parse);
        if let (Some(s), None) = (slot, running) {
            warn!("firmware: ignoring routerd.slot={s} (A or B)");
        }
        let trial = trial.and_then(|t| t.parse::<u8>().ok());
        let mut s = Slots {
            me,
            running,
            trial,
            layout: None,
            other: None,
            failed: None,
            boot_at: now,
            confirmed: false,
            healthy_since: None,
            next_confirm_try: now,
            receiving: None,
            reboot: false,
            buf: alloc::vec![0u8; UPGRADE_CHUNK].into_boxed_slice(),
        };
        let Some(running) = running else {
            info!("firmware: {} (not booted from a routerd disk slot: upgrades are off)", s.me);
            return s;
        };
        s.layout = find_layout(storage);
        let Some(layout) = s.layout.as_ref() else {
            warn!(
                "firmware: booted from {running}, but no disk has {}, {} and {BOOT_NAME}: upgrades are off",
                SLOT_NAMES[0], SLOT_NAMES[1]
            );
            return s;
        };
        let (disk, other_part, disk_name) = (layout.disk, layout.slots[running.other().index()], layout.name.clone());
        s.other = match storage.disk_mut(disk).map(|d| read_identity(d, other_part, &mut s.buf)) {
            Some(Ok(id)) => Some(id),
            _ => None,
        };
        let env = s.read_env(storage);
        if let Ok(env) = &env {
            if env.failed == Some(running.other()) && trial.is_none() {
                s.failed = env.failed;
                warn!(
                    "firmware: the upgrade to {} in {} did not confirm within {TRIAL_TRIES} boots; the box went back to {running}",
                    s.other.as_ref().map(|i| i.version.as_str()).unwrap_or("?"),
                    running.other()
                );
            }
        }
        let other_text = match &s.other {
            Some(id) => text_fmt::<80>(format_args!("{id}")),
            None => text("empty"),
        };
        info!("firmware: {} from {running} ({disk_name}); {}: {}", s.me, running.other(), other_text);
        if let Err(e) = env {
            warn!("firmware: {BOOT_NAME}: {e}; an upgrade will be refused");
        }
        if let Some(n) = trial {
            info!(
                "firmware: TRIAL boot of {running} ({n} more tries after this one); it confirms itself once healthy for {} s, \
                 else restarts within {} s",
                HEALTHY_FOR_MS / 1000,
                CONFIRM_WITHIN_MS / 1000
            );
        }
        s
    }

    /// True after a commit: reboot once the answer is out.
    pub fn take_reboot(&mut self) -> bool {
        core::mem::take(&mut self.reboot)
    }

    fn on_trial(&self) -> bool {
        self.trial.is_some() && !self.confirmed
    }

    /// The trial's clock: confirm once healthy long enough, restart when
    /// the time is up. `healthy` is the platform's judgement now.
    pub fn poll(&mut self, now: Instant, healthy: bool, storage: &mut Storage) {
        if !self.on_trial() {
            return;
        }
        let running = self.running.unwrap_or(Slot::A);
        let never = self.me.flags & FirmwareIdentity::FLAG_NEVER_CONFIRMS != 0;
        let limit = if never { TEST_BUILD_RESTART_MS } else { CONFIRM_WITHIN_MS };
        if now.millis_since(self.boot_at) >= limit {
            warn!(
                "firmware: {running} was not confirmed within {} s of booting{}; restarting (the boot loader counts this try)",
                limit / 1000,
                if never { " (a test build that never confirms)" } else { "" }
            );
            crate::console::flush();
            hal_x86::power::reset();
        }
        if never || !healthy {
            self.healthy_since = None;
            return;
        }
        let since = *self.healthy_since.get_or_insert(now);
        if now.millis_since(since) < HEALTHY_FOR_MS || now < self.next_confirm_try {
            return;
        }
        match self.confirm(storage) {
            Ok(()) => {
                self.confirmed = true;
                info!("firmware: {running} confirmed healthy: {} boots from now on ({} keeps the fallback)", self.me, running.other());
            }
            Err(e) => {
                self.next_confirm_try = Instant::from_millis(now.millis().saturating_add(5_000));
                warn!("firmware: could not confirm {running} ({e}); trying again in 5 s");
            }
        }
    }

    fn confirm(&mut self, storage: &mut Storage) -> Result<(), &'static str> {
        let mut env = self.read_env(storage)?;
        env.slot = self.running;
        env.trial = None;
        env.tries = 0;
        env.failed = None;
        self.write_env(storage, &env)
    }

    fn read_env(&mut self, storage: &mut Storage) -> Result<Env, &'static str> {
        let layout = self.layout.as_ref().ok_or("no slots")?;
        let boot = layout.boot;
        if boot.blocks < ENV_SECTOR + 2 {
            return Err("the partition is too small for the environment block");
        }
        let disk = storage.disk_mut(layout.disk).ok_or("the disk is gone")?;
        let block = self.buf.get_mut(..ENV_BYTES).ok_or("buffer")?;
        disk.read(boot.first_lba + ENV_SECTOR, block).map_err(|_| "cannot read the environment block")?;
        Env::parse(block).ok_or("no GRUB environment block where the image puts it")
    }

    fn write_env(&mut self, storage: &mut Storage, env: &Env) -> Result<(), &'static str> {
        let layout = self.layout.as_ref().ok_or("no slots")?;
        let lba = layout.boot.first_lba + ENV_SECTOR;
        let mut block = [0u8; ENV_BYTES];
        if !env.render(&mut block) {
            return Err("the environment block would not fit one sector");
        }
        let disk = storage.disk_mut(layout.disk).ok_or("the disk is gone")?;
        // The second sector is GRUB's padding: written only if it is not.
        let second = self.buf.get_mut(..SECTOR).ok_or("buffer")?;
        disk.read(lba + 1, second).map_err(|_| "cannot read the environment block")?;
        let pad = block.get(SECTOR..).unwrap_or(&[]);
        let write = if second == pad { block.get(..SECTOR).unwrap_or(&[]) } else { &block[..] };
        disk.write(lba, write).map_err(|_| "cannot write the environment block")?;
        disk.flush().map_err(|_| "cannot flush the environment block")
    }

    /// `UpgradeBegin`, `UpgradeChunk`, `UpgradeCommit`.
    pub fn handle(&mut self, op: Op, storage: &mut Storage) -> Reply {
        let result = match op {
            Op::UpgradeBegin(b) => self.begin(b),
            Op::UpgradeChunk(c) => self.chunk(*c, storage),
            Op::UpgradeCommit => self.commit(storage),
            _ => Err(Failure::refused(format_args!("upgrade: not an upgrade request"))),
        };
        match result {
            Ok(p) => Reply::Upgrade(p),
            Err(f) => {
                warn!("upgrade: refused: {}", f.message.as_str());
                Reply::Error(f)
            }
        }
    }

    fn progress(&self) -> UpgradeProgress {
        let r = self.receiving.as_ref();
        UpgradeProgress {
            slot: text(r.map(|r| r.slot.letter()).unwrap_or("")),
            size: r.map(|r| r.size).unwrap_or(0),
            received: r.map(|r| r.received).unwrap_or(0),
            chunk_max: UPGRADE_CHUNK as u32,
        }
    }

    fn target(&self) -> Result<(Slot, Part), Box<Failure>> {
        let Some(running) = self.running else {
            return Err(Failure::refused(format_args!(
                "upgrade: this box did not boot from a routerd disk slot (no routerd.slot= on its command line): \
                 write an image with `routerctl image build` and `routerctl flash`"
            )));
        };
        let Some(layout) = self.layout.as_ref() else {
            return Err(Failure::refused(format_args!(
                "upgrade: booted from {running}, but no disk has the {}/{}/{BOOT_NAME} partitions",
                SLOT_NAMES[0], SLOT_NAMES[1]
            )));
        };
        if self.on_trial() {
            return Err(Failure::refused(format_args!(
                "upgrade: {running} is itself on trial and not confirmed yet: wait for it to confirm (routerctl status) first"
            )));
        }
        let t = running.other();
        Ok((t, layout.slots[t.index()]))
    }

    fn begin(&mut self, b: UpgradeBegin) -> Result<UpgradeProgress, Box<Failure>> {
        let (slot, part) = self.target()?;
        if b.size == 0 || b.size > FIRMWARE_MAX || u64::from(b.size) > part.bytes() {
            return Err(Failure::invalid(format_args!(
                "upgrade: size {} bytes: a firmware is 1 byte to {} MiB ({} holds {} bytes)",
                b.size,
                FIRMWARE_MAX >> 20,
                slot,
                part.bytes()
            )));
        }
        let same = self.receiving.as_ref().is_some_and(|r| r.slot == slot && r.size == b.size && r.sha256 == b.sha256);
        if same {
            let received = self.receiving.as_ref().map(|r| r.received).unwrap_or(0);
            info!("upgrade: resuming {} into {slot} at {received} of {} bytes", b.identity, b.size);
        } else {
            info!("upgrade: receiving {} ({} bytes) into {slot}; {} keeps running", b.identity, b.size, slot.other());
            self.receiving = Some(Receiving { slot, size: b.size, sha256: b.sha256, identity: b.identity, received: 0 });
            // The slot is being overwritten: nothing bootable there now.
            self.other = None;
        }
        Ok(self.progress())
    }

    fn chunk(&mut self, c: UpgradeChunk, storage: &mut Storage) -> Result<UpgradeProgress, Box<Failure>> {
        let (_, part) = self.target()?;
        let disk_index = self.layout.as_ref().map(|l| l.disk).unwrap_or(0);
        let Some(r) = self.receiving.as_mut() else {
            return Err(Failure::refused(format_args!("upgrade: no upgrade in progress (UpgradeBegin first)")));
        };
        let len = c.data.len() as u32;
        let end = c.offset.checked_add(len).filter(|&e| e <= r.size);
        let Some(end) = end else {
            return Err(Failure::invalid(format_args!(
                "upgrade: chunk at {} of {len} bytes runs past the firmware's {} bytes",
                c.offset, r.size
            )));
        };
        if !c.offset.is_multiple_of(SECTOR as u32)
            || c.offset > r.received
            || len == 0
            || (end < r.size && !len.is_multiple_of(SECTOR as u32))
        {
            return Err(Failure::invalid(format_args!(
                "upgrade: chunk at {} of {len} bytes: expected offset {} (sector-aligned, whole sectors except the last chunk)",
                c.offset, r.received
            )));
        }
        // The last chunk is padded to a whole sector.
        let padded = c.data.len().div_ceil(SECTOR) * SECTOR;
        let buf = self.buf.get_mut(..padded).ok_or_else(|| Failure::invalid(format_args!("upgrade: chunk too large")))?;
        buf.fill(0);
        if let Some(dst) = buf.get_mut(..c.data.len()) {
            dst.copy_from_slice(&c.data);
        }
        let lba = part.first_lba + u64::from(c.offset) / SECTOR as u64;
        let disk = storage.disk_mut(disk_index).ok_or_else(|| Failure::refused(format_args!("upgrade: the slot's disk is gone")))?;
        if let Err(e) = disk.write(lba, buf) {
            return Err(Failure::refused(format_args!("upgrade: writing the slot failed at byte {} ({e:?})", c.offset)));
        }
        r.received = r.received.max(end);
        Ok(self.progress())
    }

    fn commit(&mut self, storage: &mut Storage) -> Result<UpgradeProgress, Box<Failure>> {
        let (slot, part) = self.target()?;
        let disk_index = self.layout.as_ref().map(|l| l.disk).unwrap_or(0);
        let Some(r) = self.receiving.as_ref() else {
            return Err(Failure::refused(format_args!("upgrade: no upgrade in progress (UpgradeBegin first)")));
        };
        if r.received != r.size {
            return Err(Failure::refused(format_args!("upgrade: {} of {} bytes received; send the rest first", r.received, r.size)));
        }
        let (size, want, claimed) = (r.size, r.sha256, r.identity.clone());
        let disk = storage.disk_mut(disk_index).ok_or_else(|| Failure::refused(format_args!("upgrade: the slot's disk is gone")))?;
        disk.flush().map_err(|e| Failure::refused(format_args!("upgrade: flushing the slot failed ({e:?})")))?;
        // Read back what the disk holds: that is what GRUB will load.
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        let mut identity: Option<Result<FirmwareIdentity, NotFirmware>> = None;
        let mut at = 0u32;
        while at < size {
            let len = (size - at).min(UPGRADE_CHUNK as u32) as usize;
            let padded = len.div_ceil(SECTOR) * SECTOR;
            let buf = self.buf.get_mut(..padded).ok_or_else(|| Failure::refused(format_args!("upgrade: buffer")))?;
            disk.read(part.first_lba + u64::from(at) / SECTOR as u64, buf)
                .map_err(|e| Failure::refused(format_args!("upgrade: reading the slot back failed at byte {at} ({e:?})")))?;
            let data = buf.get(..len).unwrap_or(&[]);
            if identity.is_none() {
                identity = Some(firmware::inspect(data));
            }
            sha.update(data);
            at += len as u32;
        }
        if sha.finish().as_ref() != want {
            self.receiving = None;
            return Err(Failure::refused(format_args!(
                "upgrade: {slot} read back differs from the file (SHA-256): the write was damaged; upgrade again"
            )));
        }
        let identity = match identity {
            Some(Ok(id)) => id,
            Some(Err(e)) => {
                self.receiving = None;
                return Err(Failure::invalid(format_args!("upgrade: the firmware is not bootable: {e}")));
            }
            None => return Err(Failure::invalid(format_args!("upgrade: empty firmware"))),
        };
        let mut env = self.read_env(storage).map_err(|e| Failure::refused(format_args!("upgrade: {BOOT_NAME}: {e}")))?;
        env.slot = self.running;
        env.trial = Some(slot);
        env.tries = TRIAL_TRIES;
        env.failed = None;
        self.write_env(storage, &env).map_err(|e| Failure::refused(format_args!("upgrade: {BOOT_NAME}: {e}")))?;
        if identity != claimed {
            warn!("upgrade: the file said {claimed}, the slot holds {identity}");
        }
        info!("upgrade: {slot} holds {identity} (SHA-256 checked); rebooting into it on trial ({TRIAL_TRIES} tries)");
        self.other = Some(identity);
        self.failed = None;
        self.reboot = true;
        let p = self.progress();
        self.receiving = None;
        Ok(p)
    }

    /// The slots for `status` (`None`: not booted from a slot).
    pub fn status(&self, now: Instant) -> Option<FirmwareStatus> {
        let running = self.running?;
        self.layout.as_ref()?;
        let mut st = FirmwareStatus {
            running: text(running.letter()),
            trial_tries_left: if self.on_trial() { self.trial } else { None },
            failed: self.failed.map(|s| text(s.letter())),
            confirm_in_ms: self.on_trial().then(|| CONFIRM_WITHIN_MS.saturating_sub(now.millis_since(self.boot_at))),
            slots: heapless::Vec::new(),
        };
        for slot in [Slot::A, Slot::B] {
            let (identity, state) = if slot == running {
                (Some(self.me.clone()), if self.on_trial() { "trial" } else { "running" })
            } else if self.receiving.is_some() {
                (None, "upgrading")
            } else if self.failed == Some(slot) {
                (self.other.clone(), "failed")
            } else {
                match &self.other {
                    Some(id) => (Some(id.clone()), "standby"),
                    None => (None, "empty"),
                }
            };
            let _ = st.slots.push(SlotStatus { slot: text(slot.letter()), identity, state: text(state) });
        }
        Some(st)
    }
}

/// The first disk with both slots and the boot-state partition.
fn find_layout(storage: &mut Storage) -> Option<Layout> {
    for i in 0..storage.disk_count() {
        let name = storage.disk_name(i)?;
        let Some(disk) = storage.disk_mut(i) else { continue };
        let mut part = |n: &str| {
            gpt::find_partition(&mut *disk, n).ok().map(|f| Part { first_lba: f.partition.first_lba, blocks: f.partition.blocks })
        };
        if let (Some(a), Some(b), Some(boot)) = (part(SLOT_NAMES[0]), part(SLOT_NAMES[1]), part(BOOT_NAME)) {
            return Some(Layout { disk: i, name, slots: [a, b], boot });
        }
    }
    None
}

/// The identity of the firmware in a slot (its first 32 KiB).
fn read_identity<D: BlockDevice>(disk: &mut D, part: Part, buf: &mut [u8]) -> Result<FirmwareIdentity, NotFirmware> {
    let head = buf.get_mut(..firmware::HEAD.min(part.bytes() as usize)).ok_or(NotFirmware::TooShort(0))?;
    if disk.read(part.first_lba, head).is_err() {
        return Err(NotFirmware::TooShort(0));
    }
    firmware::inspect(head)
}

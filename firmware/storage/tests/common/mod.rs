//! The power-cut harness: run a sequence of store operations over a
//! [`PowerCutDisk`], cut power (or fail one request) at a chosen point,
//! "reboot" (open the medium again) and check what came back.
//!
//! The oracle: after the reboot the store opens, and its record is the last
//! one a successful operation left (`acked`) or one an operation that failed
//! after it was making (the new payload, or nothing for an erase) — never
//! anything else, never an error, never a panic. A save's new record must not
//! come back if power failed before its commit write was issued. Nothing
//! outside the region is ever written. And the store recovers: a save after
//! the reboot reads back.
#![allow(dead_code)]

use core::ops::Range;

use routerd_storage::layout::{self, RecordHeader, Slot};
use routerd_storage::testing::{CacheAtCut, Cut, MemDisk, Op, PowerCutDisk, SplitMix64};
use routerd_storage::{BlockDevice, BlockSize, Region, Store, StoreError, MAX_PAYLOAD, STORE_BYTES};

/// Fill of the disk outside the region: must never change.
const OUTSIDE: u8 = 0x5a;

pub type State = Option<Vec<u8>>;

#[derive(Clone)]
pub enum Action {
    Save(Vec<u8>),
    Erase,
}

impl core::fmt::Debug for Action {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Action::Save(p) => write!(f, "Save({})", describe(&Some(p.clone()))),
            Action::Erase => write!(f, "Erase"),
        }
    }
}

impl Action {
    fn target(&self) -> State {
        match self {
            Action::Save(p) => Some(p.clone()),
            Action::Erase => None,
        }
    }
}

/// Who writes: the store, or a deliberately naive writer (one slot,
/// overwritten in place) that the harness must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    Store,
    NaiveInPlace,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub block: BlockSize,
    pub region: Region,
    /// Blocks of the whole disk (the region sits inside it).
    pub disk_blocks: u64,
    /// Done before power can fail.
    pub setup: Vec<Action>,
    /// Power may fail during any request of these.
    pub actions: Vec<Action>,
    pub write_cache: bool,
    pub writer: Writer,
}

/// What the dry run learned: every request, and per action its range of
/// requests.
#[derive(Clone, Debug)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub action_ops: Vec<Range<usize>>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Runs with a power cut.
    pub cuts: usize,
    /// Runs with one failed request (and maybe a cut too).
    pub failures: usize,
    pub came_back_acked: usize,
    pub came_back_in_flight: usize,
    /// Reboots where `open` reported a torn/corrupt slot (counted, unused).
    pub damaged_slot_seen: usize,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.cuts += o.cuts;
        self.failures += o.failures;
        self.came_back_acked += o.came_back_acked;
        self.came_back_in_flight += o.came_back_in_flight;
        self.damaged_slot_seen += o.damaged_slot_seen;
    }
}

pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    SplitMix64::new(seed).fill(&mut v);
    v
}

fn describe(state: &State) -> String {
    match state {
        None => "nothing".into(),
        Some(p) => format!("{} bytes starting {:02x?}", p.len(), &p[..p.len().min(6)]),
    }
}

/// The naive writer: always slot A, header and payload in one write.
fn naive_save(disk: &mut PowerCutDisk, region: Region, sequence: u64, payload: &[u8]) -> Result<(), StoreError> {
    let bs = disk.block_size().bytes();
    let header = RecordHeader::for_payload(Slot::A, sequence, payload).unwrap();
    let len = (layout::PAYLOAD_OFFSET as usize + payload.len()).div_ceil(bs) * bs;
    let mut buf = vec![0u8; len];
    buf[..layout::HEADER_LEN].copy_from_slice(&header.to_bytes());
    buf[layout::PAYLOAD_OFFSET as usize..][..payload.len()].copy_from_slice(payload);
    let lba = region.first_lba + Slot::A.offset() / bs as u64;
    disk.write(lba, &buf)?;
    Ok(disk.flush()?)
}

trait Runner {
    fn disk(&mut self) -> &mut PowerCutDisk;
    fn act(&mut self, index: usize, action: &Action) -> Result<(), StoreError>;
    /// What the writer would load now (`None`: it cannot say).
    fn load(&mut self) -> Option<Result<State, StoreError>>;
}

struct StoreRunner<'a>(Store<&'a mut PowerCutDisk>);

impl Runner for StoreRunner<'_> {
    fn disk(&mut self) -> &mut PowerCutDisk {
        self.0.device()
    }
    fn act(&mut self, _: usize, action: &Action) -> Result<(), StoreError> {
        match action {
            Action::Save(p) => self.0.save(p).map(drop),
            Action::Erase => self.0.erase(),
        }
    }
    fn load(&mut self) -> Option<Result<State, StoreError>> {
        let mut buf = vec![0u8; MAX_PAYLOAD];
        Some(self.0.load(&mut buf).map(|p| p.map(<[u8]>::to_vec)))
    }
}

struct NaiveRunner<'a>(&'a mut PowerCutDisk, Region);

impl Runner for NaiveRunner<'_> {
    fn disk(&mut self) -> &mut PowerCutDisk {
        self.0
    }
    fn act(&mut self, index: usize, action: &Action) -> Result<(), StoreError> {
        match action {
            Action::Save(p) => naive_save(self.0, self.1, index as u64 + 1, p),
            Action::Erase => unreachable!("the naive writer only saves"),
        }
    }
    fn load(&mut self) -> Option<Result<State, StoreError>> {
        None
    }
}

/// What running the actions did.
struct Execution {
    action_ops: Vec<Range<usize>>,
    /// The last state a successful action left.
    acked: State,
    /// States that failed actions after it were making.
    maybe: Vec<State>,
}

impl Scenario {
    /// The store at `first_lba` of a disk a little larger than it.
    pub fn new(block: BlockSize, first_lba: u64, write_cache: bool) -> Scenario {
        let blocks = STORE_BYTES / block.bytes() as u64;
        Scenario {
            block,
            region: Region { first_lba, blocks },
            disk_blocks: first_lba + blocks + 8,
            setup: Vec::new(),
            actions: Vec::new(),
            write_cache,
            writer: Writer::Store,
        }
    }

    fn region_bytes(&self) -> Range<usize> {
        let bs = self.block.bytes();
        let start = self.region.first_lba as usize * bs;
        start..start + self.region.blocks as usize * bs
    }

    /// A fresh disk with the setup done, and the state it left.
    fn prepared(&self) -> (MemDisk, State) {
        let mut disk = MemDisk::from_image(self.block, vec![OUTSIDE; self.block.bytes() * self.disk_blocks as usize]);
        disk.image_mut()[self.region_bytes()].fill(0);
        let mut state = None;
        if !self.setup.is_empty() {
            let mut store = Store::open(&mut disk, self.region).unwrap();
            for a in &self.setup {
                match a {
                    Action::Save(p) => drop(store.save(p).unwrap()),
                    Action::Erase => store.erase().unwrap(),
                }
                state = a.target();
            }
        }
        (disk, state)
    }

    /// Runs the actions, going on after a failed one while the device has
    /// power; checks `load` right after each failure.
    fn execute(&self, disk: &mut PowerCutDisk, acked: State) -> Result<Execution, String> {
        match self.writer {
            Writer::Store => {
                let store = Store::open(disk, self.region).map_err(|e| format!("open before any cut: {e:?}"))?;
                self.execute_with(&mut StoreRunner(store), acked)
            }
            Writer::NaiveInPlace => self.execute_with(&mut NaiveRunner(disk, self.region), acked),
        }
    }

    fn execute_with(&self, runner: &mut dyn Runner, mut acked: State) -> Result<Execution, String> {
        let mut action_ops = Vec::new();
        let mut maybe = Vec::new();
        for (i, a) in self.actions.iter().enumerate() {
            let start = runner.disk().log().len();
            let result = runner.act(i, a);
            action_ops.push(start..runner.disk().log().len());
            match result {
                Ok(()) => {
                    acked = a.target();
                    maybe.clear();
                }
                Err(_) if !runner.disk().powered() => {
                    maybe.push(a.target());
                    break;
                }
                Err(_) => {
                    maybe.push(a.target());
                    // In-session view after a failure: a failed save leaves
                    // the old record current and intact; a failed erase may
                    // have wiped it (then load says so; it never returns
                    // anything else).
                    let seen = runner.load();
                    let fine = match (a, &seen) {
                        (_, Some(Ok(got))) => *got == acked,
                        (Action::Erase, Some(Err(StoreError::Corrupt(_)))) => true,
                        (_, None) => true,
                        _ => false,
                    };
                    if !fine {
                        return Err(format!("after failed action {i} ({a:?}) load gave {seen:?}, acked {}", describe(&acked)));
                    }
                }
            }
        }
        Ok(Execution { action_ops, acked, maybe })
    }

    /// Runs the actions without a cut and records the requests.
    pub fn dry_run(&self) -> Plan {
        let (medium, state) = self.prepared();
        let mut disk = PowerCutDisk::new(medium, self.write_cache);
        let exec = self.execute(&mut disk, state).expect("dry run");
        assert!(exec.maybe.is_empty(), "the dry run failed an action");
        Plan { ops: disk.log().to_vec(), action_ops: exec.action_ops }
    }

    /// A save's commit: its first single-block write to a slot header.
    fn commit_op(&self, log: &[Op], range: Range<usize>) -> Option<usize> {
        let bs = self.block.bytes() as u64;
        let headers = [self.region.first_lba + Slot::A.offset() / bs, self.region.first_lba + Slot::B.offset() / bs];
        range.into_iter().find(|&i| matches!(log.get(i), Some(Op::Write { lba, blocks: 1 }) if headers.contains(lba)))
    }

    /// Runs the actions with `cut` and/or one failed request, reboots and
    /// checks the oracle.
    pub fn check(&self, cut: Option<Cut>, fail_at: Option<usize>) -> Result<Tally, String> {
        let (medium, state) = self.prepared();
        let mut disk = PowerCutDisk::new(medium, self.write_cache);
        if let Some(c) = cut {
            disk = disk.with_cut(c);
        }
        if let Some(f) = fail_at {
            disk = disk.with_failure(f);
        }
        let exec = self.execute(&mut disk, state)?;
        let log = disk.log().to_vec();
        // Without a cut, a reboot still loses the cache: flush it like a
        // clean shutdown would.
        if disk.powered() {
            let _ = disk.flush();
        }
        let mut medium = disk.into_medium();
        let region = self.region_bytes();
        let image = medium.image();
        let outside = vec![OUTSIDE; image.len() - region.len()];
        if image[..region.start] != outside[..region.start] || image[region.end..] != outside[region.start..] {
            return Err("a write landed outside the region".into());
        }

        // Reboot.
        let mut store = Store::open(&mut medium, self.region).map_err(|e| format!("reopen failed: {e:?}"))?;
        let damaged = store.report().damaged_slots();
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let got = store.load(&mut buf).map(|p| p.map(<[u8]>::to_vec)).map_err(|e| format!("load after reboot failed: {e:?}"))?;
        let new = exec.maybe.contains(&got) && got != exec.acked;
        if got != exec.acked && !new {
            return Err(format!(
                "came back with {}; acked {}, in flight {:?}",
                describe(&got),
                describe(&exec.acked),
                exec.maybe.iter().map(describe).collect::<Vec<_>>()
            ));
        }
        // A save interrupted before its commit write (as issued in this run)
        // must not come back new.
        if let (Some(c), true, Some(range)) = (cut, new, exec.action_ops.last()) {
            let commit = self.commit_op(&log, range.clone());
            // At the commit itself, nothing of the block transferred.
            let untouched = |commit| c.at_op == commit && c.landed_blocks == 0 && c.torn_bytes.unwrap_or(0) == 0;
            if exec.maybe.len() == 1 && commit.is_none_or(|commit| c.at_op < commit || untouched(commit)) {
                return Err(format!("the new record came back though power failed at request {} before its commit ({commit:?})", c.at_op));
            }
        }
        // And the store recovers.
        let marker = payload(333, 0x5eed);
        store.save(&marker).map_err(|e| format!("save after reboot failed: {e:?}"))?;
        let mut store = Store::open(&mut medium, self.region).map_err(|e| format!("second reopen failed: {e:?}"))?;
        let after = store.load(&mut buf).map(|p| p.map(<[u8]>::to_vec)).map_err(|e| format!("{e:?}"))?;
        if after.as_deref() != Some(&marker[..]) {
            return Err("a save after the reboot did not read back".into());
        }
        Ok(Tally {
            cuts: cut.is_some() as usize,
            failures: fail_at.is_some() as usize,
            came_back_acked: !new as usize,
            came_back_in_flight: new as usize,
            damaged_slot_seen: (damaged > 0) as usize,
        })
    }
}

/// The cache outcomes to try for a cut at request `at_op`: all lost, all
/// written, random subsets, and the oldest or newest one, half or all but one
/// of the writes since the last flush (the cut write's own blocks may add to
/// them; counts are clamped).
pub fn cache_policies(plan: &Plan, at_op: usize, write_cache: bool, seeds: u64) -> Vec<CacheAtCut> {
    if !write_cache {
        return vec![CacheAtCut::Lost];
    }
    let last_flush = plan.ops[..at_op].iter().rposition(|op| *op == Op::Flush).map_or(0, |i| i + 1);
    let pending: usize = plan.ops[last_flush..=at_op]
        .iter()
        .map(|op| match op {
            Op::Write { blocks, .. } => *blocks,
            Op::Flush => 0,
        })
        .sum();
    let mut v = vec![CacheAtCut::Lost, CacheAtCut::Written];
    v.extend((0..seeds).map(|seed| CacheAtCut::Subset { seed }));
    let mut counts = vec![1, pending / 2, pending.saturating_sub(1)];
    counts.retain(|&c| c > 0 && c < pending);
    counts.dedup();
    for count in counts {
        v.push(CacheAtCut::Oldest { count });
        v.push(CacheAtCut::Newest { count });
    }
    v
}

/// Every cut point of a plan: each request, each number of blocks of a
/// write that landed, a torn next block (inside the header fields, at half
/// the block) or not, each cache outcome.
pub fn every_cut(plan: &Plan, block: BlockSize, write_cache: bool, seeds: u64) -> Vec<Cut> {
    let mut cuts = Vec::new();
    for (at_op, op) in plan.ops.iter().enumerate() {
        let caches = cache_policies(plan, at_op, write_cache, seeds);
        let blocks = match *op {
            Op::Write { blocks, .. } => blocks,
            Op::Flush => 0,
        };
        for landed_blocks in 0..=blocks {
            let tears: &[Option<usize>] = if landed_blocks < blocks { &[None, Some(20), Some(block.bytes() / 2)] } else { &[None] };
            for &torn_bytes in tears {
                for &cache in &caches {
                    cuts.push(Cut { at_op, landed_blocks, torn_bytes, cache });
                }
            }
        }
    }
    cuts
}

/// A random cut somewhere in the plan.
pub fn random_cut(plan: &Plan, block: BlockSize, rng: &mut SplitMix64) -> Cut {
    let at_op = rng.below(plan.ops.len());
    let blocks = match plan.ops[at_op] {
        Op::Write { blocks, .. } => blocks,
        Op::Flush => 0,
    };
    let landed_blocks = rng.below(blocks + 1);
    let torn_bytes = if rng.one_in(2) { Some(rng.below(block.bytes() + 1)) } else { None };
    let cache = match rng.below(5) {
        0 => CacheAtCut::Lost,
        1 => CacheAtCut::Written,
        2 => CacheAtCut::Oldest { count: rng.below(64) },
        3 => CacheAtCut::Newest { count: rng.below(64) },
        _ => CacheAtCut::Subset { seed: rng.next_u64() },
    };
    Cut { at_op, landed_blocks, torn_bytes, cache }
}

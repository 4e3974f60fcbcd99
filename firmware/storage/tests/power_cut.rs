//! Power cuts at every write and flush of a save/erase sequence, on both
//! block sizes, with the write cache off and on; one failed request at every
//! point; a negative control; and a random soak (short here, 10,000 cuts
//! with `ROUTERD_SOAK=1`).

mod common;

use common::{every_cut, payload, random_cut, Action, Scenario, Tally, Writer};
use routerd_storage::testing::SplitMix64;
use routerd_storage::{BlockSize, MAX_PAYLOAD};

/// Saves of several shapes (multi-block with a tail, tiny, empty, one block
/// plus a byte), an erase in the middle and saves after it; the third save
/// overwrites the slot of the first, so stale valid records are in play.
fn sequence() -> Vec<Action> {
    vec![
        Action::Save(payload(5000, 1)),
        Action::Save(payload(300, 2)),
        Action::Save(payload(7000, 3)),
        Action::Save(Vec::new()),
        Action::Erase,
        Action::Save(payload(1000, 4)),
        Action::Save(payload(4097, 5)),
    ]
}

fn every_cut_point(block: BlockSize, first_lba: u64) -> Tally {
    let mut tally = Tally::default();
    for write_cache in [false, true] {
        let mut scenario = Scenario::new(block, first_lba, write_cache);
        scenario.actions = sequence();
        let plan = scenario.dry_run();
        for cut in every_cut(&plan, block, write_cache, 3) {
            match scenario.check(Some(cut), None) {
                Ok(t) => tally.add(&t),
                Err(e) => panic!("{block:?}, write cache {write_cache}, {cut:?} ({:?}): {e}", plan.ops[cut.at_op]),
            }
        }
    }
    eprintln!("{block:?}: {tally:?}");
    assert!(tally.came_back_acked > 0 && tally.came_back_in_flight > 0 && tally.damaged_slot_seen > 0);
    tally
}

#[test]
fn every_cut_point_512() {
    every_cut_point(BlockSize::B512, 64);
}

#[test]
fn every_cut_point_4096() {
    every_cut_point(BlockSize::B4096, 8);
}

#[test]
fn every_cut_point_of_full_size_records() {
    // Two maximum-size saves over an existing record: 16-block payload
    // writes on a 4096-byte device.
    let mut tally = Tally::default();
    for write_cache in [false, true] {
        let mut scenario = Scenario::new(BlockSize::B4096, 0, write_cache);
        scenario.setup = vec![Action::Save(payload(100, 9))];
        scenario.actions = vec![Action::Save(payload(MAX_PAYLOAD, 10)), Action::Save(payload(MAX_PAYLOAD - 1, 11))];
        let plan = scenario.dry_run();
        for cut in every_cut(&plan, BlockSize::B4096, write_cache, 1) {
            tally.add(&scenario.check(Some(cut), None).unwrap_or_else(|e| panic!("{cut:?}: {e}")));
        }
    }
    eprintln!("full size: {tally:?}");
}

#[test]
fn one_failed_request_at_every_point() {
    // No power cut: one request fails and the caller carries on with the
    // rest of the sequence; then a clean reboot.
    let mut tally = Tally::default();
    for block in [BlockSize::B512, BlockSize::B4096] {
        for write_cache in [false, true] {
            let mut scenario = Scenario::new(block, 0, write_cache);
            scenario.actions = sequence();
            let plan = scenario.dry_run();
            for fail_at in 0..plan.ops.len() {
                tally.add(&scenario.check(None, Some(fail_at)).unwrap_or_else(|e| panic!("{block:?} {write_cache} fail {fail_at}: {e}")));
            }
        }
    }
    eprintln!("transient failures: {tally:?}");
}

#[test]
fn negative_control_in_place_writer_is_caught() {
    // One slot overwritten in place: a cut in the middle loses the old record
    // and the new one. If the harness did not notice, it would prove nothing.
    let mut scenario = Scenario::new(BlockSize::B512, 0, false);
    scenario.writer = Writer::NaiveInPlace;
    scenario.actions = vec![Action::Save(payload(3000, 1)), Action::Save(payload(3000, 2))];
    let plan = scenario.dry_run();
    let cuts = every_cut(&plan, BlockSize::B512, false, 0);
    let caught = cuts.iter().filter(|&&cut| scenario.check(Some(cut), None).is_err()).count();
    eprintln!("negative control: {caught} of {} cuts caught", cuts.len());
    assert!(caught > 0);
}

/// Random sequences, random cut points and outcomes. Returns the tally.
fn soak(iterations: usize, seed: u64) -> Tally {
    let mut rng = SplitMix64::new(seed);
    let mut tally = Tally::default();
    for iteration in 0..iterations {
        let block = if rng.one_in(2) { BlockSize::B512 } else { BlockSize::B4096 };
        let first_lba = (rng.below(4) * 4096 / block.bytes()) as u64;
        let mut scenario = Scenario::new(block, first_lba, !rng.one_in(4));
        let random_action = |rng: &mut SplitMix64| {
            if rng.one_in(8) {
                Action::Erase
            } else {
                let len = if rng.one_in(10) { rng.below(MAX_PAYLOAD + 1) } else { rng.below(6000) };
                Action::Save(payload(len, rng.next_u64()))
            }
        };
        scenario.setup = (0..rng.below(4)).map(|_| random_action(&mut rng)).collect();
        scenario.actions = (0..1 + rng.below(4)).map(|_| random_action(&mut rng)).collect();
        let plan = scenario.dry_run();
        let cut = random_cut(&plan, block, &mut rng);
        let fail_at = if rng.one_in(5) { Some(rng.below(plan.ops.len())) } else { None };
        match scenario.check(Some(cut), fail_at) {
            Ok(t) => tally.add(&t),
            Err(e) => panic!("soak seed {seed:#x} iteration {iteration}: {scenario:?} {cut:?} fail {fail_at:?}: {e}"),
        }
    }
    tally
}

#[test]
fn soak_short() {
    let tally = soak(400, 0x0b0c_a75e);
    eprintln!("short soak: {tally:?}");
    assert_eq!(tally.cuts, 400);
}

/// `ROUTERD_SOAK=1 cargo test --release -p routerd-storage --test power_cut soak_long -- --nocapture`
#[test]
fn soak_long() {
    if std::env::var_os("ROUTERD_SOAK").is_none() {
        eprintln!("soak_long: set ROUTERD_SOAK=1 to run 10,000 random power cuts");
        return;
    }
    let seed = std::env::var("ROUTERD_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x50a4);
    let tally = soak(10_000, seed);
    eprintln!("long soak (seed {seed:#x}): {tally:?}");
    assert_eq!(tally.cuts, 10_000);
}

/// A factory reset over two full slots (the current record and the one
/// before it, both holding "key material"): a cut at any write or flush of
/// the erase brings back the current record or nothing — never the older
/// record, never a corrupt one — and a completed erase leaves no byte of
/// either payload in the region.
#[test]
fn every_cut_point_of_a_factory_reset() {
    let mut tally = Tally::default();
    for block in [BlockSize::B512, BlockSize::B4096] {
        for write_cache in [false, true] {
            let mut scenario = Scenario::new(block, 0, write_cache);
            // Full-size on 4096-byte blocks; on 512-byte ones a smaller
            // record keeps the number of cut points (one per block) sane.
            let len = if block == BlockSize::B4096 { MAX_PAYLOAD } else { 9000 };
            scenario.setup = vec![Action::Save(payload(len, 20)), Action::Save(payload(len - 7, 21))];
            scenario.actions = vec![Action::Erase, Action::Save(payload(300, 22))];
            let plan = scenario.dry_run();
            for cut in every_cut(&plan, block, write_cache, 1) {
                tally.add(&scenario.check(Some(cut), None).unwrap_or_else(|e| panic!("{block:?} {write_cache} {cut:?}: {e}")));
            }
        }
    }
    eprintln!("factory reset: {tally:?}");
    assert!(tally.came_back_acked > 0 && tally.came_back_in_flight > 0);

    use routerd_storage::testing::MemDisk;
    use routerd_storage::{Region, Store, STORE_BYTES};
    let secret = [0x5au8; 32];
    let record: Vec<u8> = secret.iter().copied().cycle().take(MAX_PAYLOAD).collect();
    let region = Region { first_lba: 0, blocks: STORE_BYTES / 512 };
    let mut disk = MemDisk::new(BlockSize::B512, region.blocks);
    let mut store = Store::open(&mut disk, region).unwrap();
    store.save(&record).unwrap();
    store.save(&record[..MAX_PAYLOAD - 1]).unwrap();
    store.erase().unwrap();
    assert!(!disk.image().windows(4).any(|w| w == [0x5a; 4]), "key material is left on the disk");
    let mut store = Store::open(&mut disk, region).unwrap();
    assert_eq!(store.current(), None, "an empty store, valid");
    assert_eq!(store.report().damaged_slots(), 0);
    assert_eq!(store.save(b"new").unwrap().sequence, 1);
}

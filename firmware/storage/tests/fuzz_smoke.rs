//! No disk content makes the store panic, misreport or get stuck: random
//! images, valid images with random damage, and crafted headers whose CRCs
//! are valid but whose fields are not (so the checks behind the CRC run).
//! For each: `open` succeeds (or refuses a newer format, which `format`
//! then clears), its report agrees with itself, `load` returns what `open`
//! chose, and a save afterwards reads back after a reopen.
//!
//! A short run on every `cargo test`; `ROUTERD_SOAK=1` runs 100,000 images.

use routerd_storage::layout::{self, Slot, HEADER_LEN, PAYLOAD_OFFSET, SLOT_OFFSET, SUPERBLOCK_LEN};
use routerd_storage::testing::{MemDisk, SplitMix64};
use routerd_storage::{BlockSize, Region, SlotState, Store, StoreError, MAX_PAYLOAD, STORE_BYTES};

fn random_payload(rng: &mut SplitMix64) -> Vec<u8> {
    let len = if rng.one_in(16) { rng.below(MAX_PAYLOAD + 1) } else { rng.below(3000) };
    let mut p = vec![0; len];
    rng.fill(&mut p);
    p
}

fn reseal_header(image: &mut [u8], at: usize) {
    let crc = layout::crc32c(&image[at..at + 32]);
    image[at + 32..at + 36].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes a record header's record CRC over what its length field says
/// (clamped to the image), then its header CRC.
fn reseal_record(image: &mut [u8], slot: usize) {
    let at = SLOT_OFFSET[slot] as usize;
    let len = u32::from_le_bytes(image[at + 24..at + 28].try_into().unwrap()) as usize;
    let start = at + PAYLOAD_OFFSET as usize;
    let end = (start + len).min(image.len());
    let mut covered = image[at..at + 28].to_vec();
    covered.extend_from_slice(&image[start..end]);
    let crc = layout::crc32c(&covered);
    image[at + 28..at + 32].copy_from_slice(&crc.to_le_bytes());
    reseal_header(image, at);
}

fn valid_image(rng: &mut SplitMix64, block: BlockSize, blocks: u64) -> Vec<u8> {
    let mut disk = MemDisk::new(block, blocks);
    let mut store = Store::open(&mut disk, Region { first_lba: 0, blocks }).unwrap();
    for _ in 0..1 + rng.below(3) {
        store.save(&random_payload(rng)).unwrap();
    }
    disk.image().to_vec()
}

fn mutate(rng: &mut SplitMix64, image: &mut [u8], bs: usize) {
    let blocks = image.len() / bs;
    match rng.below(8) {
        0 => {
            let bit = rng.below(image.len() * 8);
            image[bit / 8] ^= 1 << (bit % 8);
        }
        1 => {
            let b = rng.below(blocks);
            rng.fill(&mut image[b * bs..(b + 1) * bs]);
        }
        2 => {
            let (from, to) = (rng.below(blocks), rng.below(blocks));
            let block = image[from * bs..(from + 1) * bs].to_vec();
            image[to * bs..(to + 1) * bs].copy_from_slice(&block);
        }
        3 => {
            let b = rng.below(blocks);
            image[b * bs..(b + 1) * bs].fill(0);
        }
        4 | 5 => {
            // A header field set to something random (often a boundary),
            // with both CRCs made valid again.
            let slot = rng.below(2);
            let at = SLOT_OFFSET[slot] as usize;
            if image[at..at + HEADER_LEN].iter().all(|&b| b == 0) {
                image[at..at + 8].copy_from_slice(&layout::RECORD_MAGIC);
            }
            let value: u64 = match rng.below(6) {
                0 => 0,
                1 => u64::MAX,
                2 => u64::MAX - 1,
                3 => MAX_PAYLOAD as u64 + rng.below(3) as u64 - 1,
                4 => rng.below(4) as u64,
                _ => rng.next_u64(),
            };
            let (field, width) = [(8, 4), (12, 4), (16, 8), (24, 4)][rng.below(4)];
            image[at + field..at + field + width].copy_from_slice(&value.to_le_bytes()[..width]);
            reseal_record(image, slot);
        }
        6 => {
            // A superblock field, resealed.
            if image[..SUPERBLOCK_LEN].iter().all(|&b| b == 0) {
                image[..SUPERBLOCK_LEN].copy_from_slice(&layout::superblock_bytes());
            }
            let at = 8 + 4 * rng.below(6);
            let value = if rng.one_in(2) { rng.next_u64() as u32 } else { rng.below(3) as u32 };
            image[at..at + 4].copy_from_slice(&value.to_le_bytes());
            reseal_header(image, 0);
        }
        _ => {
            // One slot's header copied over the other's (a misdirected write).
            let (from, to) = if rng.one_in(2) { (0, 1) } else { (1, 0) };
            let h = image[SLOT_OFFSET[from] as usize..][..HEADER_LEN].to_vec();
            image[SLOT_OFFSET[to] as usize..][..HEADER_LEN].copy_from_slice(&h);
            if rng.one_in(2) {
                reseal_record(image, to);
            }
        }
    }
}

/// Opens `image` and checks everything the module docs promise.
fn check(block: BlockSize, image: Vec<u8>, rng: &mut SplitMix64) -> Outcome {
    let blocks = (image.len() / block.bytes()) as u64;
    let region = Region { first_lba: 0, blocks };
    let mut disk = MemDisk::from_image(block, image);
    let mut outcome = Outcome::default();
    let mut store = match Store::open(&mut disk, region) {
        Ok(s) => s,
        Err(StoreError::UnsupportedFormat { .. }) => {
            outcome.newer_format = true;
            Store::format(&mut disk, region).expect("format clears a newer format")
        }
        Err(e) => panic!("open failed on a valid region: {e:?}"),
    };
    let report = *store.report();
    // The report agrees with itself: the current record is the newest valid
    // slot.
    let valid: Vec<_> = report.slots.iter().filter_map(|s| if let SlotState::Valid(i) = s { Some(*i) } else { None }).collect();
    assert_eq!(report.current, valid.iter().copied().max_by_key(|i| (i.sequence, std::cmp::Reverse(i.slot.index()))));
    assert_eq!(report.current, store.current());
    for (s, state) in Slot::BOTH.iter().zip(report.slots) {
        if let SlotState::Valid(i) = state {
            assert_eq!(i.slot, *s);
            assert!(i.len <= MAX_PAYLOAD && i.sequence > 0 && i.sequence < u64::MAX);
        }
    }
    outcome.valid_slots = valid.len();
    outcome.damaged_slots = report.damaged_slots();
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let loaded = store.load(&mut buf).expect("load of what open chose").map(<[u8]>::to_vec);
    assert_eq!(loaded.as_ref().map(Vec::len), store.current().map(|c| c.len));

    let next = random_payload(rng);
    match store.save(&next) {
        Ok(_) => {}
        Err(StoreError::SequenceExhausted) => {
            assert!(valid.iter().any(|i| i.sequence == u64::MAX - 1));
            outcome.exhausted = true;
            return outcome;
        }
        Err(e) => panic!("save failed: {e:?}"),
    }
    let mut store = Store::open(&mut disk, region).expect("reopen");
    let again = store.load(&mut buf).expect("load after save").map(<[u8]>::to_vec);
    assert_eq!(again.as_deref(), Some(&next[..]), "a save after any damage reads back");
    outcome
}

#[derive(Default, Debug)]
struct Outcome {
    valid_slots: usize,
    damaged_slots: usize,
    newer_format: bool,
    exhausted: bool,
}

fn run(iterations: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let (mut valid, mut damaged, mut newer, mut exhausted) = ([0usize; 3], 0, 0, 0);
    for i in 0..iterations {
        let block = if rng.one_in(2) { BlockSize::B512 } else { BlockSize::B4096 };
        let blocks = STORE_BYTES / block.bytes() as u64 + rng.below(3) as u64;
        let image = match rng.below(4) {
            0 => {
                let mut image = vec![0; blocks as usize * block.bytes()];
                rng.fill(&mut image);
                image
            }
            _ => {
                let mut image = valid_image(&mut rng, block, blocks);
                for _ in 0..1 + rng.below(4) {
                    mutate(&mut rng, &mut image, block.bytes());
                }
                image
            }
        };
        let o = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(block, image, &mut rng)))
            .unwrap_or_else(|_| panic!("fuzz seed {seed:#x} iteration {i}"));
        valid[o.valid_slots] += 1;
        damaged += (o.damaged_slots > 0) as usize;
        newer += o.newer_format as usize;
        exhausted += o.exhausted as usize;
    }
    eprintln!(
        "fuzz: {iterations} images; valid slots 0/1/2: {valid:?}; with a damaged slot: {damaged}; newer format: {newer}; sequence exhausted: {exhausted}"
    );
    assert!(valid[0] > 0 && valid[1] > 0 && valid[2] > 0 && damaged > 0, "the generator reaches every case");
}

#[test]
fn fuzz_smoke() {
    run(3_000, 0xf022);
}

/// `ROUTERD_SOAK=1 cargo test --release -p routerd-storage --test fuzz_smoke -- --nocapture`
#[test]
fn fuzz_long() {
    if std::env::var_os("ROUTERD_SOAK").is_none() {
        eprintln!("fuzz_long: set ROUTERD_SOAK=1 to run 100,000 images");
        return;
    }
    run(100_000, 0xf0220001);
}

//! Host devices for tests (feature `std`): the store runs over these exactly
//! as it runs over the image's drivers.
//!
//! - [`MemDisk`]: an in-memory disk without a cache (every write is on the
//!   "medium" at once), with counters.
//! - [`PowerCutDisk`]: wraps a [`MemDisk`] (the medium) and cuts power during
//!   a chosen write or flush, modelling what a real disk may leave behind:
//!   some blocks of a multi-block write landed and some not, one block torn
//!   (first bytes new, the rest old), and — with its volatile write cache on —
//!   writes not yet flushed lost, kept, or a random subset of them kept (the
//!   drive reordered them). After the cut every request fails; the medium
//!   is what a reboot finds. It can also fail one request without cutting
//!   power (a transient error).
//! - [`SplitMix64`]: the deterministic generator the tests and the cut model
//!   share.
//!
//! Models: mcuboot's flash simulator (which interrupts every write of an
//! upgrade) and sequential-storage's power-cut fuzz target.

// Test support: a misused test device may panic (with a clear message).
#![allow(clippy::indexing_slicing, clippy::panic)]

extern crate std;

use std::vec;
use std::vec::Vec;

use crate::{BlockDevice, BlockError, BlockSize};

/// A small deterministic generator (SplitMix64): reproducible test runs
/// without a dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// Request counters of a [`MemDisk`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Flush requests.
    pub flushes: u64,
    /// Blocks written.
    pub blocks_written: u64,
}

/// An in-memory disk: writes are durable at once, flush does nothing.
#[derive(Clone, Debug)]
pub struct MemDisk {
    block: BlockSize,
    data: Vec<u8>,
    /// Its counters.
    pub stats: DiskStats,
}

impl MemDisk {
    /// A zeroed disk of `blocks` blocks.
    pub fn new(block: BlockSize, blocks: u64) -> MemDisk {
        MemDisk::from_image(block, vec![0; block.bytes() * blocks as usize])
    }

    /// A disk holding `image`; its length must be a whole number of blocks.
    pub fn from_image(block: BlockSize, image: Vec<u8>) -> MemDisk {
        assert!(image.len().is_multiple_of(block.bytes()), "image of {} bytes is not whole {}-byte blocks", image.len(), block.bytes());
        MemDisk { block, data: image, stats: DiskStats::default() }
    }

    /// The disk's bytes.
    pub fn image(&self) -> &[u8] {
        &self.data
    }

    /// The disk's bytes, to corrupt them.
    pub fn image_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// The byte range of `len` bytes from `lba`, if it is a valid request.
    fn range(&self, lba: u64, len: usize) -> Result<std::ops::Range<usize>, BlockError> {
        let bs = self.block.bytes();
        if len == 0 || !len.is_multiple_of(bs) {
            return Err(BlockError::BadLength);
        }
        let start = usize::try_from(lba).ok().and_then(|l| l.checked_mul(bs)).ok_or(BlockError::OutOfRange)?;
        let end = start.checked_add(len).ok_or(BlockError::OutOfRange)?;
        if end > self.data.len() {
            return Err(BlockError::OutOfRange);
        }
        Ok(start..end)
    }
}

impl BlockDevice for MemDisk {
    fn block_size(&self) -> BlockSize {
        self.block
    }

    fn block_count(&self) -> u64 {
        (self.data.len() / self.block.bytes()) as u64
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let r = self.range(lba, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        self.stats.reads += 1;
        Ok(())
    }

    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        let r = self.range(lba, data.len())?;
        self.data[r].copy_from_slice(data);
        self.stats.writes += 1;
        self.stats.blocks_written += (data.len() / self.block.bytes()) as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.stats.flushes += 1;
        Ok(())
    }
}

/// A write or flush request, as [`PowerCutDisk`] logs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A write of `blocks` blocks from `lba`.
    Write {
        /// The first block.
        lba: u64,
        /// How many blocks.
        blocks: usize,
    },
    /// A flush.
    Flush,
}

/// What becomes of the writes in the volatile cache when power fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheAtCut {
    /// All lost.
    Lost,
    /// All reach the medium (a drive with power-loss protection).
    Written,
    /// Each reaches the medium with probability ½, independently: the drive
    /// had written some of them, in an order of its choosing.
    Subset {
        /// Chooses the subset.
        seed: u64,
    },
    /// The `count` oldest reach the medium, the rest are lost (the drive was
    /// writing back in order).
    Oldest {
        /// How many.
        count: usize,
    },
    /// The `count` newest reach the medium, the older ones are lost (the
    /// drive was writing back newest first).
    Newest {
        /// How many.
        count: usize,
    },
}

/// Where and how power fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The request (counting writes and flushes from 0) during which power
    /// fails; it returns an error, as does every request after it.
    pub at_op: usize,
    /// If that request is a write: how many of its blocks were transferred
    /// (to the medium, or to the cache when it is on). Clamped to the
    /// request's length; all of them means "power failed right after it".
    pub landed_blocks: usize,
    /// If that request is a write and not all its blocks were transferred:
    /// the next block is torn, its first `torn_bytes` bytes new and the rest
    /// old.
    pub torn_bytes: Option<usize>,
    /// What happens to the cache (ignored when the cache is off: it is
    /// always empty).
    pub cache: CacheAtCut,
}

/// A disk that loses power on cue; see the module docs.
#[derive(Clone, Debug)]
pub struct PowerCutDisk {
    medium: MemDisk,
    write_cache: bool,
    /// Accepted, not yet durable block writes, oldest first.
    cache: Vec<(u64, Vec<u8>)>,
    cut: Option<Cut>,
    fail_at: Option<usize>,
    log: Vec<Op>,
    powered: bool,
}

impl PowerCutDisk {
    /// Wraps `medium`; with `write_cache`, writes are durable only after a
    /// flush.
    pub fn new(medium: MemDisk, write_cache: bool) -> PowerCutDisk {
        PowerCutDisk { medium, write_cache, cache: Vec::new(), cut: None, fail_at: None, log: Vec::new(), powered: true }
    }

    /// Cuts power as `cut` says.
    pub fn with_cut(mut self, cut: Cut) -> PowerCutDisk {
        self.cut = Some(cut);
        self
    }

    /// Fails request `op` (counting writes and flushes from 0) with
    /// [`BlockError::Io`], without effect and without cutting power.
    pub fn with_failure(mut self, op: usize) -> PowerCutDisk {
        self.fail_at = Some(op);
        self
    }

    /// Every write and flush requested so far (including failed ones).
    pub fn log(&self) -> &[Op] {
        &self.log
    }

    /// Whether power is still on.
    pub fn powered(&self) -> bool {
        self.powered
    }

    /// What is on the medium (what a reboot finds after a cut).
    pub fn medium(&self) -> &MemDisk {
        &self.medium
    }

    /// The medium, for the reboot. Without a cut, unflushed writes are lost.
    pub fn into_medium(self) -> MemDisk {
        self.medium
    }

    /// What a read of `lba` sees: the newest cached write, else the medium.
    fn visible(&self, lba: u64) -> Vec<u8> {
        if let Some((_, data)) = self.cache.iter().rev().find(|(l, _)| *l == lba) {
            return data.clone();
        }
        let bs = self.medium.block.bytes();
        let start = lba as usize * bs;
        self.medium.data[start..start + bs].to_vec()
    }

    fn accept(&mut self, lba: u64, block: &[u8]) {
        if self.write_cache {
            self.cache.push((lba, block.to_vec()));
        } else {
            let bs = self.medium.block.bytes();
            let start = lba as usize * bs;
            self.medium.data[start..start + bs].copy_from_slice(block);
        }
    }

    fn drain(&mut self, policy: CacheAtCut) {
        let cache = std::mem::take(&mut self.cache);
        let mut rng = SplitMix64::new(match policy {
            CacheAtCut::Subset { seed } => seed,
            _ => 0,
        });
        let bs = self.medium.block.bytes();
        let n = cache.len();
        for (i, (lba, data)) in cache.into_iter().enumerate() {
            let lands = match policy {
                CacheAtCut::Lost => false,
                CacheAtCut::Written => true,
                CacheAtCut::Subset { .. } => rng.one_in(2),
                CacheAtCut::Oldest { count } => i < count,
                CacheAtCut::Newest { count } => n - i <= count,
            };
            if lands {
                let start = lba as usize * bs;
                self.medium.data[start..start + bs].copy_from_slice(&data);
            }
        }
    }

    /// Counts a request; `Err` if it must fail (power off, injected failure).
    fn begin(&mut self, op: Op) -> Result<usize, BlockError> {
        if !self.powered {
            return Err(BlockError::Io);
        }
        let n = self.log.len();
        self.log.push(op);
        if self.fail_at == Some(n) {
            return Err(BlockError::Io);
        }
        Ok(n)
    }
}

impl BlockDevice for PowerCutDisk {
    fn block_size(&self) -> BlockSize {
        self.medium.block
    }

    fn block_count(&self) -> u64 {
        self.medium.block_count()
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        if !self.powered {
            return Err(BlockError::Io);
        }
        self.medium.range(lba, buf.len())?;
        let bs = self.medium.block.bytes();
        for (i, chunk) in buf.chunks_mut(bs).enumerate() {
            chunk.copy_from_slice(&self.visible(lba + i as u64));
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        if !self.powered {
            return Err(BlockError::Io);
        }
        self.medium.range(lba, data.len())?;
        let bs = self.medium.block.bytes();
        let blocks = data.len() / bs;
        let n = self.begin(Op::Write { lba, blocks })?;
        match self.cut {
            Some(cut) if cut.at_op == n => {
                let landed = cut.landed_blocks.min(blocks);
                for i in 0..landed {
                    self.accept(lba + i as u64, &data[i * bs..(i + 1) * bs]);
                }
                if let (Some(t), true) = (cut.torn_bytes, landed < blocks) {
                    let t = t.min(bs);
                    let target = lba + landed as u64;
                    let mut torn = self.visible(target);
                    torn[..t].copy_from_slice(&data[landed * bs..landed * bs + t]);
                    self.accept(target, &torn);
                }
                self.drain(cut.cache);
                self.powered = false;
                Err(BlockError::Io)
            }
            _ => {
                for i in 0..blocks {
                    self.accept(lba + i as u64, &data[i * bs..(i + 1) * bs]);
                }
                self.medium.stats.writes += 1;
                self.medium.stats.blocks_written += blocks as u64;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        let n = self.begin(Op::Flush)?;
        match self.cut {
            Some(cut) if cut.at_op == n => {
                self.drain(cut.cache);
                self.powered = false;
                Err(BlockError::Io)
            }
            _ => {
                self.drain(CacheAtCut::Written);
                self.medium.stats.flushes += 1;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(b: u8) -> Vec<u8> {
        vec![b; 512]
    }

    #[test]
    fn mem_disk_checks_requests() {
        let mut d = MemDisk::new(BlockSize::B512, 4);
        assert_eq!(d.write(3, &block(1)), Ok(()));
        assert_eq!(d.write(4, &block(1)), Err(BlockError::OutOfRange));
        assert_eq!(d.write(3, &[0; 1024]), Err(BlockError::OutOfRange));
        assert_eq!(d.write(0, &[0; 100]), Err(BlockError::BadLength));
        assert_eq!(d.read(0, &mut []), Err(BlockError::BadLength));
        assert_eq!(d.write(u64::MAX, &block(1)), Err(BlockError::OutOfRange));
        let mut b = block(0);
        d.read(3, &mut b).unwrap();
        assert_eq!(b, block(1));
    }

    #[test]
    fn cache_is_durable_only_after_flush() {
        let mut d = PowerCutDisk::new(MemDisk::new(BlockSize::B512, 4), true);
        d.write(1, &block(7)).unwrap();
        let mut b = block(0);
        d.read(1, &mut b).unwrap();
        assert_eq!(b, block(7), "reads see the cache");
        assert_eq!(d.medium().image()[512], 0, "not on the medium yet");
        d.flush().unwrap();
        assert_eq!(d.medium().image()[512], 7);
        assert_eq!(d.log(), &[Op::Write { lba: 1, blocks: 1 }, Op::Flush]);
    }

    #[test]
    fn cut_mid_write_lands_a_prefix_and_tears_one_block() {
        let mut d = PowerCutDisk::new(MemDisk::new(BlockSize::B512, 4), false).with_cut(Cut {
            at_op: 0,
            landed_blocks: 1,
            torn_bytes: Some(100),
            cache: CacheAtCut::Lost,
        });
        let mut data = block(1);
        data.extend(block(2));
        data.extend(block(3));
        assert_eq!(d.write(0, &data), Err(BlockError::Io));
        assert!(!d.powered());
        assert_eq!(d.flush(), Err(BlockError::Io));
        assert_eq!(d.read(0, &mut block(0)), Err(BlockError::Io));
        let m = d.into_medium();
        assert!(m.image()[..512].iter().all(|&b| b == 1));
        assert!(m.image()[512..612].iter().all(|&b| b == 2));
        assert!(m.image()[612..1024].iter().all(|&b| b == 0));
        assert!(m.image()[1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn cut_with_cache_keeps_what_the_policy_says() {
        for (policy, want) in [(CacheAtCut::Lost, 0u8), (CacheAtCut::Written, 5)] {
            let mut d = PowerCutDisk::new(MemDisk::new(BlockSize::B512, 4), true).with_cut(Cut {
                at_op: 1,
                landed_blocks: 0,
                torn_bytes: None,
                cache: policy,
            });
            d.write(2, &block(5)).unwrap();
            assert_eq!(d.flush(), Err(BlockError::Io));
            assert_eq!(d.medium().image()[1024], want, "{policy:?}");
        }
        // A subset: over many seeds, some writes land and some do not, in
        // every combination.
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut d = PowerCutDisk::new(MemDisk::new(BlockSize::B512, 4), true).with_cut(Cut {
                at_op: 2,
                landed_blocks: 0,
                torn_bytes: None,
                cache: CacheAtCut::Subset { seed },
            });
            d.write(0, &block(1)).unwrap();
            d.write(1, &block(1)).unwrap();
            assert_eq!(d.flush(), Err(BlockError::Io));
            seen.insert((d.medium().image()[0], d.medium().image()[512]));
        }
        assert_eq!(seen.len(), 4);
        // In order, or newest first.
        for (policy, want) in [
            (CacheAtCut::Oldest { count: 1 }, (1, 0)),
            (CacheAtCut::Newest { count: 1 }, (0, 1)),
            (CacheAtCut::Newest { count: 5 }, (1, 1)),
        ] {
            let mut d = PowerCutDisk::new(MemDisk::new(BlockSize::B512, 4), true).with_cut(Cut {
                at_op: 2,
                landed_blocks: 0,
                torn_bytes: None,
                cache: policy,
            });
            d.write(0, &block(1)).unwrap();
            d.write(1, &block(1)).unwrap();
            assert_eq!(d.flush(), Err(BlockError::Io));
            assert_eq!((d.medium().image()[0], d.medium().image()[512]), want, "{policy:?}");
        }
    }

    #[test]
    fn transient_failure_has_no_effect_and_power_stays_on() {
        let mut d = PowerCutDisk::new(MemDisk::new(BlockSize::B512, 4), false).with_failure(0);
        assert_eq!(d.write(0, &block(9)), Err(BlockError::Io));
        assert!(d.powered());
        assert_eq!(d.medium().image()[0], 0);
        d.write(0, &block(9)).unwrap();
        assert_eq!(d.medium().image()[0], 9);
    }
}

//! Receive buffers for host devices (feature `std`): what the image's
//! drivers have in their DMA pool, on the heap — routerd-host's TAP and
//! socket devices and the in-memory test devices lend from it.

extern crate std;

use std::vec::Vec;

use crate::{RxLoan, RX_HEADROOM};

/// Bytes per buffer: a frame of up to `MAX_FRAME` bytes with
/// [`RX_HEADROOM`] in front and the dataplane's tailroom behind, rounded up
/// like a driver's DMA buffer.
pub const SLOT: usize = 2048;

/// A host device's receive buffers: one allocation split into
/// [`SLOT`]-byte slots that are lent as `&'static mut` (what an
/// [`RxLoan`] holds). The allocation is freed when the pool is dropped with
/// every slot home; with a loan still out it is leaked instead, so the loan
/// stays valid.
pub struct RxPool {
    /// The allocation, kept to free it.
    raw: *mut [u8],
    /// Each slot's buffer, `None` while lent.
    slots: Vec<Option<&'static mut [u8]>>,
    /// Slot numbers free for a frame (home and holding none).
    free: Vec<usize>,
    /// Slots lent out.
    out: usize,
}

// SAFETY: the pool owns its allocation alone (the raw pointer is only used
// to free it, after every slot reference is gone); moving it to another
// thread moves that ownership.
unsafe impl Send for RxPool {}

impl RxPool {
    /// `n` buffers of [`SLOT`] bytes.
    pub fn new(n: usize) -> RxPool {
        let raw = std::boxed::Box::into_raw(std::vec![0u8; n * SLOT].into_boxed_slice());
        // SAFETY: `raw` comes from `Box::into_raw` just above; this is the only
        // reference made from it, split into disjoint slots below. It is
        // freed only in `drop`, once every slot reference is back and dropped.
        let all: &'static mut [u8] = unsafe { &mut *raw };
        let slots: Vec<Option<&'static mut [u8]>> = all.chunks_exact_mut(SLOT).map(Some).collect();
        RxPool { raw, slots, free: (0..n).rev().collect(), out: 0 }
    }

    /// A free slot to put a frame in.
    pub fn alloc(&mut self) -> Option<usize> {
        self.free.pop()
    }

    /// Slot `i`'s buffer, while it is home.
    pub fn buf(&mut self, i: usize) -> Option<&mut [u8]> {
        self.slots.get_mut(i)?.as_deref_mut()
    }

    /// Lends slot `i` with a frame of `len` bytes at [`RX_HEADROOM`].
    pub fn lend(&mut self, i: usize, len: usize) -> Option<RxLoan> {
        if RX_HEADROOM + len > SLOT {
            return None;
        }
        let buf = self.slots.get_mut(i)?.take()?;
        self.out += 1;
        RxLoan::new(buf, RX_HEADROOM, len, i)
    }

    /// Takes a loan back: true if it was one of ours, lent and whole.
    pub fn give_back(&mut self, loan: RxLoan) -> bool {
        let home = self.raw.cast::<u8>() as usize + loan.slot() * SLOT;
        let Some(slot) = self.slots.get_mut(loan.slot()) else { return false };
        // Exactly the slot lent (address and length): then no part of it can
        // still be referenced elsewhere.
        if slot.is_some() || loan.addr() != home || loan.buf_len() != SLOT {
            return false;
        }
        let (buf, i) = loan.into_parts();
        *slot = Some(buf);
        self.out -= 1;
        self.free.push(i);
        true
    }

    /// Buffers lent and not given back.
    pub fn out(&self) -> usize {
        self.out
    }

    /// Buffers free for a frame.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Puts slot `i`, taken with [`RxPool::alloc`] and not lent, back.
    pub fn release(&mut self, i: usize) {
        if self.slots.get(i).is_some_and(Option::is_some) && !self.free.contains(&i) {
            self.free.push(i);
        }
    }
}

impl Drop for RxPool {
    fn drop(&mut self) {
        if self.out == 0 {
            self.slots.clear();
            // SAFETY: every slot reference was given back and just dropped, so
            // nothing refers to the allocation from `Box::into_raw` any more.
            drop(unsafe { std::boxed::Box::from_raw(self.raw) });
        }
    }
}

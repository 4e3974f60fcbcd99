//! A device's register window, reached through the identity map: volatile,
//! aligned 32-bit accesses at offsets checked against the window's length,
//! so a wrong offset is a refused access, never a stray write.
//!
//! Drivers wrap it behind their own small register traits, so their host
//! tests can put a fake device behind the same code.

use core::ptr::NonNull;

/// A register window (`base..base + len`).
#[derive(Clone)]
pub struct Mmio {
    base: NonNull<u8>,
    len: usize,
}

impl Mmio {
    /// # Safety
    /// `base..base + len` must be a device's register window (in host tests:
    /// memory standing in for it), mapped — uncached on hardware — and valid
    /// for the life of every clone, used by one driver only.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Mmio {
        Mmio { base, len }
    }

    /// Bytes in the window.
    pub fn window(&self) -> usize {
        self.len
    }

    fn in_window(&self, offset: usize) -> bool {
        offset.is_multiple_of(4) && offset.checked_add(4).is_some_and(|end| end <= self.len)
    }

    /// The register at `offset`; `None` outside the window or unaligned.
    pub fn read32(&self, offset: usize) -> Option<u32> {
        if !self.in_window(offset) {
            return None;
        }
        // SAFETY: aligned and inside the window (checked above), which
        // `new`'s contract says is mapped for our lifetime.
        Some(unsafe { self.base.as_ptr().add(offset).cast::<u32>().read_volatile() })
    }

    /// Writes the register at `offset`; false (nothing written) outside the
    /// window or unaligned.
    pub fn write32(&self, offset: usize, value: u32) -> bool {
        if !self.in_window(offset) {
            return false;
        }
        // SAFETY: as in `read32`.
        unsafe { self.base.as_ptr().add(offset).cast::<u32>().write_volatile(value) };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_outside_the_window_or_unaligned_are_refused() {
        let mut regs = [0u32; 4];
        // SAFETY: the window is this array, alive for the test.
        let m = unsafe { Mmio::new(NonNull::new(regs.as_mut_ptr().cast()).unwrap(), 16) };
        assert!(m.write32(12, 7));
        assert_eq!(m.read32(12), Some(7));
        assert!(!m.write32(16, 1), "past the end");
        assert!(!m.write32(2, 1), "unaligned");
        assert_eq!(m.read32(14), None);
        assert_eq!(m.read32(usize::MAX - 1), None, "no overflow");
        assert_eq!(m.window(), 16);
        assert_eq!(regs, [0, 0, 0, 7]);
    }
}

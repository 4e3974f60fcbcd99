//! The receive-side replay window of one session (RFC 6479 style).
//!
//! A ring of `BLOCKS` 64-bit words remembers which counters arrived; the newest
//! counter seen sits at the front. Counters older than the window are refused,
//! as is any counter at or beyond REJECT_AFTER_MESSAGES. The window is
//! `(BLOCKS - 1) * 64` = 4032 counters wide, well above the 2048 the protocol
//! asks for, so heavy reordering on multi-queue paths does not cost packets.
//!
//! `check` is the cheap pre-decryption test (it changes nothing, so forged
//! packets cannot move the window); `update` runs after authentication.

use crate::timers::REJECT_AFTER_MESSAGES;

const BLOCKS: usize = 64;
const BLOCK_BITS: u64 = 64;
/// Counters this far behind the newest are still accepted once.
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter accepted so far (0 before the first packet).
    last: u64,
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { last: 0, bitmap: [0; BLOCKS] }
    }
}

#[inline]
fn slot(counter: u64) -> (usize, u64) {
    let block = ((counter / BLOCK_BITS) % BLOCKS as u64) as usize;
    (block, 1u64 << (counter % BLOCK_BITS))
}

impl ReplayWindow {
    /// Would `counter` be accepted? Does not change the window.
    #[inline]
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter > self.last {
            return true;
        }
        if self.last - counter >= WINDOW {
            return false;
        }
        let (block, bit) = slot(counter);
        self.bitmap.get(block).is_some_and(|w| w & bit == 0)
    }

    /// Accept `counter` (after it authenticated). False if it is a replay or
    /// out of the window, in which case the packet must be dropped.
    #[inline]
    pub fn update(&mut self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter > self.last {
            let current = self.last / BLOCK_BITS;
            let target = counter / BLOCK_BITS;
            // Clear the blocks the front moves over (at most the whole ring).
            let advance = (target - current).min(BLOCKS as u64);
            let mut i = 1;
            while i <= advance {
                let b = ((current + i) % BLOCKS as u64) as usize;
                if let Some(w) = self.bitmap.get_mut(b) {
                    *w = 0;
                }
                i += 1;
            }
            self.last = counter;
        } else if self.last - counter >= WINDOW {
            return false;
        }
        let (block, bit) = slot(counter);
        match self.bitmap.get_mut(block) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, c: u64) -> bool {
        let pre = w.check(c);
        let post = w.update(c);
        assert_eq!(pre, post, "check and update disagree on {c}");
        post
    }

    #[test]
    fn in_order_then_replays() {
        let mut w = ReplayWindow::default();
        for c in 0..5000 {
            assert!(accept(&mut w, c));
        }
        for c in [0, 1, 967, 4999, 4998] {
            assert!(!accept(&mut w, c), "{c}");
        }
    }

    #[test]
    fn first_packet_zero_and_reuse() {
        let mut w = ReplayWindow::default();
        assert!(accept(&mut w, 0));
        assert!(!accept(&mut w, 0));
        assert!(accept(&mut w, 2));
        assert!(accept(&mut w, 1));
        assert!(!accept(&mut w, 1));
        assert!(!accept(&mut w, 2));
    }

    #[test]
    fn window_edges() {
        const { assert!(WINDOW >= 2048) };
        let mut w = ReplayWindow::default();
        let top = 100_000;
        assert!(accept(&mut w, top));
        // Exactly the oldest counter still inside the window.
        assert!(accept(&mut w, top - WINDOW + 1));
        // One further back is outside.
        assert!(!accept(&mut w, top - WINDOW));
        // 2048 back (the protocol minimum) is fine.
        assert!(accept(&mut w, top - 2048));
        assert!(!accept(&mut w, top - 2048));
    }

    #[test]
    fn sliding_clears_old_bits() {
        let mut w = ReplayWindow::default();
        for c in 0..64 {
            assert!(accept(&mut w, c));
        }
        // Jump far ahead: the whole ring is recycled.
        let far = 1_000_000;
        assert!(accept(&mut w, far));
        // Counters that share ring slots with the old ones are fresh.
        let alias = far - (far % (BLOCKS as u64 * 64)) + 5;
        assert!(alias < far && far - alias < WINDOW);
        assert!(accept(&mut w, alias));
        // A slide of exactly one block keeps the rest of the window.
        let mut w = ReplayWindow::default();
        assert!(accept(&mut w, 10));
        assert!(accept(&mut w, 64 + 10));
        assert!(!accept(&mut w, 10));
        assert!(accept(&mut w, 11));
    }

    #[test]
    fn reordered_arrival_inside_window() {
        let mut w = ReplayWindow::default();
        // Deliver 0..3000 in a scrambled but complete order.
        let n = 3000u64;
        let mut seen = 0;
        for i in 0..n {
            let c = (i * 1_663) % n; // 1663 is coprime with 3000
            if accept(&mut w, c) {
                seen += 1;
            }
        }
        // Some early counters may fall out of the window once later ones
        // arrive; everything within WINDOW of the front must be accepted.
        assert!(seen > 0);
        let mut w = ReplayWindow::default();
        for c in (0..2048).rev() {
            assert!(accept(&mut w, c), "{c}");
        }
    }

    #[test]
    fn reject_after_messages_limit() {
        let mut w = ReplayWindow::default();
        assert!(!accept(&mut w, REJECT_AFTER_MESSAGES));
        assert!(!accept(&mut w, u64::MAX));
        assert!(accept(&mut w, REJECT_AFTER_MESSAGES - 1));
    }
}

//! Frame buffers with headroom.
//!
//! The caller receives each frame at [`HEADROOM`] bytes into a buffer of
//! [`BUF_SIZE`] bytes. Encapsulation (VXLAN, the WireGuard datagram, the
//! underlay UDP/IPv4/Ethernet headers) then prepends headers in place by
//! moving `head` backwards instead of copying the payload. If a caller hands in
//! a frame without enough headroom the frame is moved once inside its own
//! buffer (correct, just slower); if the buffer is too small the frame is
//! dropped and counted (`NoHeadroom`).

/// Headroom the caller should leave in front of every received frame:
/// outer Ethernet 14 + IPv4 20 + UDP 8 + WireGuard data header 16 +
/// VXLAN's IPv4 20 + UDP 8 + VXLAN 8 = 94, rounded up.
pub const HEADROOM: usize = 128;
/// Tailroom needed behind a frame for the tunnel (WireGuard: 16-byte tag plus
/// up to 15 bytes of padding) and for padding short frames to 60 bytes.
pub const TAILROOM: usize = 64;
/// Largest Ethernet frame (without FCS) the pipeline handles: 1500 + 14 + 4.
pub const MAX_FRAME: usize = 1518;
/// Recommended buffer size: headroom + largest frame + tailroom, rounded up.
pub const BUF_SIZE: usize = 2048;

const _: () = assert!(HEADROOM + MAX_FRAME + TAILROOM <= BUF_SIZE);

/// A frame inside a larger buffer: the bytes `data[head..tail]`.
#[derive(Debug)]
pub struct FrameBuf<'a> {
    data: &'a mut [u8],
    head: usize,
    tail: usize,
}

/// The buffer cannot hold what was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

impl<'a> FrameBuf<'a> {
    /// A frame of `len` bytes starting at `head` in `data`.
    pub fn new(data: &'a mut [u8], head: usize, len: usize) -> Result<FrameBuf<'a>, NoRoom> {
        let tail = head.checked_add(len).ok_or(NoRoom)?;
        if tail > data.len() {
            return Err(NoRoom);
        }
        Ok(FrameBuf { data, head, tail })
    }

    /// The frame bytes.
    pub fn frame(&self) -> &[u8] {
        self.data.get(self.head..self.tail).unwrap_or(&[])
    }

    /// The frame bytes, writable.
    pub fn frame_mut(&mut self) -> &mut [u8] {
        self.data.get_mut(self.head..self.tail).unwrap_or(&mut [])
    }

    /// Offset of the first frame byte in the underlying buffer.
    pub fn head(&self) -> usize {
        self.head
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// True when the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.tail == self.head
    }

    /// The whole underlying buffer (for a tunnel that writes around the frame).
    pub fn raw_mut(&mut self) -> &mut [u8] {
        self.data
    }

    /// Capacity of the underlying buffer.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Make the frame `data[start..end]` (after a tunnel rewrote the buffer).
    pub fn set_range(&mut self, start: usize, end: usize) -> Result<(), NoRoom> {
        if start > end || end > self.data.len() {
            return Err(NoRoom);
        }
        self.head = start;
        self.tail = end;
        Ok(())
    }

    /// Drop `n` bytes from the front (decapsulation).
    pub fn pull_head(&mut self, n: usize) -> Result<(), NoRoom> {
        let head = self.head.checked_add(n).ok_or(NoRoom)?;
        if head > self.tail {
            return Err(NoRoom);
        }
        self.head = head;
        Ok(())
    }

    /// Keep only the first `len` bytes (drop Ethernet padding).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.tail = self.head + len;
        }
    }

    /// Grow the frame at the back by `n` bytes (zero-filled): padding.
    pub fn push_tail_zeroed(&mut self, n: usize) -> Result<(), NoRoom> {
        let tail = self.tail.checked_add(n).ok_or(NoRoom)?;
        let new = self.data.get_mut(self.tail..tail).ok_or(NoRoom)?;
        new.fill(0);
        self.tail = tail;
        Ok(())
    }

    /// Grow the frame at the front by `n` bytes and return the frame. The new
    /// bytes are not initialised. If the headroom is short but the buffer is
    /// big enough, the frame is moved towards the back once.
    pub fn push_head(&mut self, n: usize) -> Result<&mut [u8], NoRoom> {
        if self.head < n {
            let len = self.len();
            // The furthest back the frame can start; moving leaves the
            // recommended headroom where possible so later pushes do not move.
            let room = self.data.len().checked_sub(len).ok_or(NoRoom)?;
            if room < n {
                return Err(NoRoom);
            }
            let new_head = HEADROOM.max(n).min(room);
            let new_tail = new_head + len;
            self.data.copy_within(self.head..self.tail, new_head);
            self.head = new_head;
            self.tail = new_tail;
        }
        self.head -= n;
        Ok(self.frame_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull() {
        let mut storage = [0xa5u8; 64];
        storage[16..20].copy_from_slice(&[1, 2, 3, 4]);
        let mut fb = FrameBuf::new(&mut storage, 16, 4).unwrap();
        let f = fb.push_head(2).unwrap();
        f[0] = 9;
        f[1] = 8;
        assert_eq!(fb.frame(), &[9, 8, 1, 2, 3, 4]);
        fb.pull_head(3).unwrap();
        assert_eq!(fb.frame(), &[2, 3, 4]);
        assert!(fb.pull_head(4).is_err());
    }

    #[test]
    fn push_moves_when_headroom_short() {
        let mut storage = [0u8; 256];
        storage[0..3].copy_from_slice(&[7, 7, 7]);
        let mut fb = FrameBuf::new(&mut storage, 0, 3).unwrap();
        let f = fb.push_head(14).unwrap();
        assert_eq!(f.len(), 17);
        assert_eq!(&fb.frame()[14..], &[7, 7, 7]);
    }

    #[test]
    fn push_fails_when_buffer_too_small() {
        let mut storage = [0u8; 10];
        let mut fb = FrameBuf::new(&mut storage, 0, 8).unwrap();
        assert_eq!(fb.push_head(3), Err(NoRoom));
        assert_eq!(fb.len(), 8);
        assert!(FrameBuf::new(&mut [0u8; 4], 2, 3).is_err());
    }

    #[test]
    fn tail_padding() {
        let mut storage = [0xa5u8; 16];
        let mut fb = FrameBuf::new(&mut storage, 0, 4).unwrap();
        fb.push_tail_zeroed(4).unwrap();
        assert_eq!(&fb.frame()[4..], &[0, 0, 0, 0]);
        assert!(fb.push_tail_zeroed(9).is_err());
        fb.truncate(2);
        assert_eq!(fb.len(), 2);
    }
}

//! The four WireGuard message formats as zero-copy views over datagram bytes.
//!
//! Contract (as in smoltcp): untrusted bytes go through `new_checked`, which
//! verifies the type and the exact length; after that no accessor can panic.
//! Accessors read with `get` and fall back to zeros, so even an unchecked view
//! never panics — it just reads nonsense. All integers are little-endian.
//!
//! ```text
//! initiation (148): type=1 | reserved[3] | sender u32 | ephemeral[32]
//!                   | static[32+16] | timestamp[12+16] | mac1[16] | mac2[16]
//! response    (92): type=2 | reserved[3] | sender u32 | receiver u32
//!                   | ephemeral[32] | empty[0+16] | mac1[16] | mac2[16]
//! cookie      (64): type=3 | reserved[3] | receiver u32 | nonce[24] | cookie[16+16]
//! transport (32+n): type=4 | reserved[3] | receiver u32 | counter u64
//!                   | payload[n] | tag[16]
//! ```

use crate::error::Error;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Bytes in front of a transport payload.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Header plus tag: the whole overhead of a transport message.
pub const TRANSPORT_OVERHEAD: usize = 32;

pub const TYPE_INITIATION: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;
pub const TYPE_COOKIE_REPLY: u8 = 3;
pub const TYPE_TRANSPORT: u8 = 4;

pub(crate) mod field {
    use core::ops::Range;
    pub type Field = Range<usize>;

    pub mod initiation {
        use super::Field;
        pub const SENDER: Field = 4..8;
        pub const EPHEMERAL: Field = 8..40;
        pub const STATIC: Field = 40..88;
        pub const TIMESTAMP: Field = 88..116;
        pub const MAC1: Field = 116..132;
        pub const MAC2: Field = 132..148;
    }
    pub mod response {
        use super::Field;
        pub const SENDER: Field = 4..8;
        pub const RECEIVER: Field = 8..12;
        pub const EPHEMERAL: Field = 12..44;
        pub const EMPTY: Field = 44..60;
        pub const MAC1: Field = 60..76;
        pub const MAC2: Field = 76..92;
    }
    pub mod cookie {
        use super::Field;
        pub const RECEIVER: Field = 4..8;
        pub const NONCE: Field = 8..32;
        pub const COOKIE: Field = 32..64;
    }
    pub mod transport {
        use super::Field;
        pub const RECEIVER: Field = 4..8;
        pub const COUNTER: Field = 8..16;
        pub const PAYLOAD: usize = 16;
    }
}

fn array<const N: usize>(data: &[u8], range: field::Field) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = data.get(range) {
        if s.len() == N {
            out.copy_from_slice(s);
        }
    }
    out
}

fn u32_at(data: &[u8], range: field::Field) -> u32 {
    u32::from_le_bytes(array(data, range))
}

fn put(data: &mut [u8], range: field::Field, value: &[u8]) {
    if let Some(s) = data.get_mut(range) {
        if s.len() == value.len() {
            s.copy_from_slice(value);
        }
    }
}

/// The message type of a datagram, checking the reserved bytes are zero.
pub fn message_type(data: &[u8]) -> Result<u8, Error> {
    match data.get(..4) {
        Some([t @ 1..=4, 0, 0, 0]) => Ok(*t),
        Some(_) => Err(Error::UnknownType),
        None => Err(Error::Malformed),
    }
}

fn check(data: &[u8], ty: u8, len_ok: bool) -> Result<(), Error> {
    if message_type(data)? != ty {
        return Err(Error::UnknownType);
    }
    if !len_ok {
        return Err(Error::Malformed);
    }
    Ok(())
}

fn set_header(data: &mut [u8], ty: u8) {
    if let Some(h) = data.get_mut(..4) {
        h.copy_from_slice(&[ty, 0, 0, 0]);
    }
}

macro_rules! view {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $len_ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Check the type and length; afterwards accessors never panic.
            pub fn new_checked(buffer: T) -> Result<Self, Error> {
                let len = buffer.as_ref().len();
                let len_ok: fn(usize) -> bool = $len_ok;
                check(buffer.as_ref(), $ty, len_ok(len))?;
                Ok($name { buffer })
            }

            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Write the type byte and zero the reserved bytes.
            pub fn set_header(&mut self) {
                set_header(self.buffer.as_mut(), $ty);
            }
        }
    };
}

view!(
    /// A handshake initiation (message type 1).
    Initiation, TYPE_INITIATION, |l| l == INITIATION_LEN
);
view!(
    /// A handshake response (message type 2).
    Response, TYPE_RESPONSE, |l| l == RESPONSE_LEN
);
view!(
    /// A cookie reply (message type 3).
    CookieReply, TYPE_COOKIE_REPLY, |l| l == COOKIE_REPLY_LEN
);
view!(
    /// A transport data message (message type 4); the payload length is
    /// any multiple the sender chose, including zero (a keepalive).
    Transport, TYPE_TRANSPORT, |l| l >= TRANSPORT_OVERHEAD
);

impl<T: AsRef<[u8]>> Initiation<T> {
    pub fn sender(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::initiation::SENDER)
    }
    pub fn ephemeral(&self) -> [u8; 32] {
        array(self.buffer.as_ref(), field::initiation::EPHEMERAL)
    }
    pub fn encrypted_static(&self) -> [u8; 48] {
        array(self.buffer.as_ref(), field::initiation::STATIC)
    }
    pub fn encrypted_timestamp(&self) -> [u8; 28] {
        array(self.buffer.as_ref(), field::initiation::TIMESTAMP)
    }
    pub fn mac1(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::initiation::MAC1)
    }
    pub fn mac2(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::initiation::MAC2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Initiation<T> {
    pub fn set_sender(&mut self, v: u32) {
        put(self.buffer.as_mut(), field::initiation::SENDER, &v.to_le_bytes())
    }
    pub fn set_ephemeral(&mut self, v: &[u8; 32]) {
        put(self.buffer.as_mut(), field::initiation::EPHEMERAL, v)
    }
    pub fn set_encrypted_static(&mut self, v: &[u8; 48]) {
        put(self.buffer.as_mut(), field::initiation::STATIC, v)
    }
    pub fn set_encrypted_timestamp(&mut self, v: &[u8; 28]) {
        put(self.buffer.as_mut(), field::initiation::TIMESTAMP, v)
    }
    pub fn set_mac1(&mut self, v: &[u8; 16]) {
        put(self.buffer.as_mut(), field::initiation::MAC1, v)
    }
    pub fn set_mac2(&mut self, v: &[u8; 16]) {
        put(self.buffer.as_mut(), field::initiation::MAC2, v)
    }
}

impl<T: AsRef<[u8]>> Response<T> {
    pub fn sender(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::response::SENDER)
    }
    pub fn receiver(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::response::RECEIVER)
    }
    pub fn ephemeral(&self) -> [u8; 32] {
        array(self.buffer.as_ref(), field::response::EPHEMERAL)
    }
    pub fn encrypted_empty(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::response::EMPTY)
    }
    pub fn mac1(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::response::MAC1)
    }
    pub fn mac2(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::response::MAC2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Response<T> {
    pub fn set_sender(&mut self, v: u32) {
        put(self.buffer.as_mut(), field::response::SENDER, &v.to_le_bytes())
    }
    pub fn set_receiver(&mut self, v: u32) {
        put(self.buffer.as_mut(), field::response::RECEIVER, &v.to_le_bytes())
    }
    pub fn set_ephemeral(&mut self, v: &[u8; 32]) {
        put(self.buffer.as_mut(), field::response::EPHEMERAL, v)
    }
    pub fn set_encrypted_empty(&mut self, v: &[u8; 16]) {
        put(self.buffer.as_mut(), field::response::EMPTY, v)
    }
    pub fn set_mac1(&mut self, v: &[u8; 16]) {
        put(self.buffer.as_mut(), field::response::MAC1, v)
    }
    pub fn set_mac2(&mut self, v: &[u8; 16]) {
        put(self.buffer.as_mut(), field::response::MAC2, v)
    }
}

impl<T: AsRef<[u8]>> CookieReply<T> {
    pub fn receiver(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::cookie::RECEIVER)
    }
    pub fn nonce(&self) -> [u8; 24] {
        array(self.buffer.as_ref(), field::cookie::NONCE)
    }
    pub fn encrypted_cookie(&self) -> [u8; 32] {
        array(self.buffer.as_ref(), field::cookie::COOKIE)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CookieReply<T> {
    pub fn set_receiver(&mut self, v: u32) {
        put(self.buffer.as_mut(), field::cookie::RECEIVER, &v.to_le_bytes())
    }
    pub fn set_nonce(&mut self, v: &[u8; 24]) {
        put(self.buffer.as_mut(), field::cookie::NONCE, v)
    }
    pub fn set_encrypted_cookie(&mut self, v: &[u8; 32]) {
        put(self.buffer.as_mut(), field::cookie::COOKIE, v)
    }
}

impl<T: AsRef<[u8]>> Transport<T> {
    pub fn receiver(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::transport::RECEIVER)
    }
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(array(self.buffer.as_ref(), field::transport::COUNTER))
    }
    /// Encrypted payload and tag.
    pub fn sealed(&self) -> &[u8] {
        self.buffer.as_ref().get(field::transport::PAYLOAD..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Transport<T> {
    pub fn set_receiver(&mut self, v: u32) {
        put(self.buffer.as_mut(), field::transport::RECEIVER, &v.to_le_bytes())
    }
    pub fn set_counter(&mut self, v: u64) {
        put(self.buffer.as_mut(), field::transport::COUNTER, &v.to_le_bytes())
    }
}

/// What mac1 covers, what mac2 covers, mac1, mac2.
pub(crate) type MacInputs<'a> = (&'a [u8], &'a [u8], [u8; 16], [u8; 16]);

/// The bytes of a handshake message that mac1 covers, and those mac2 covers.
pub(crate) fn mac_inputs(msg: &[u8]) -> Option<MacInputs<'_>> {
    let len = msg.len();
    let mac1_at = len.checked_sub(32)?;
    let mac2_at = len.checked_sub(16)?;
    Some((msg.get(..mac1_at)?, msg.get(..mac2_at)?, array(msg, mac1_at..mac2_at), array(msg, mac2_at..len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initiation_construct_and_parse() {
        let mut buf = [0xa5u8; INITIATION_LEN];
        let mut p = Initiation::new_unchecked(&mut buf[..]);
        p.set_header();
        p.set_sender(0x0403_0201);
        p.set_ephemeral(&[1; 32]);
        p.set_encrypted_static(&[2; 48]);
        p.set_encrypted_timestamp(&[3; 28]);
        p.set_mac1(&[4; 16]);
        p.set_mac2(&[5; 16]);
        // Every byte was written: no 0xa5 left.
        assert!(!buf.contains(&0xa5));
        assert_eq!(&buf[..8], &[1, 0, 0, 0, 1, 2, 3, 4]);
        let p = Initiation::new_checked(&buf[..]).unwrap();
        assert_eq!(p.sender(), 0x0403_0201);
        assert_eq!(p.ephemeral(), [1; 32]);
        assert_eq!(p.encrypted_static(), [2; 48]);
        assert_eq!(p.encrypted_timestamp(), [3; 28]);
        assert_eq!(p.mac1(), [4; 16]);
        assert_eq!(p.mac2(), [5; 16]);
        let (m1, m2, mac1, mac2) = mac_inputs(&buf).unwrap();
        assert_eq!((m1.len(), m2.len(), mac1, mac2), (116, 132, [4; 16], [5; 16]));
    }

    #[test]
    fn response_and_cookie_construct_and_parse() {
        let mut buf = [0xa5u8; RESPONSE_LEN];
        let mut p = Response::new_unchecked(&mut buf[..]);
        p.set_header();
        p.set_sender(7);
        p.set_receiver(8);
        p.set_ephemeral(&[1; 32]);
        p.set_encrypted_empty(&[2; 16]);
        p.set_mac1(&[3; 16]);
        p.set_mac2(&[4; 16]);
        assert!(!buf.contains(&0xa5));
        let p = Response::new_checked(&buf[..]).unwrap();
        assert_eq!((p.sender(), p.receiver()), (7, 8));
        assert_eq!(p.encrypted_empty(), [2; 16]);

        let mut buf = [0xa5u8; COOKIE_REPLY_LEN];
        let mut c = CookieReply::new_unchecked(&mut buf[..]);
        c.set_header();
        c.set_receiver(9);
        c.set_nonce(&[1; 24]);
        c.set_encrypted_cookie(&[2; 32]);
        assert!(!buf.contains(&0xa5));
        let c = CookieReply::new_checked(&buf[..]).unwrap();
        assert_eq!((c.receiver(), c.nonce(), c.encrypted_cookie()), (9, [1; 24], [2; 32]));
    }

    #[test]
    fn transport_header() {
        let mut buf = [0xa5u8; 40];
        let mut t = Transport::new_unchecked(&mut buf[..]);
        t.set_header();
        t.set_receiver(0xdead_beef);
        t.set_counter(0x0102_0304_0506_0708);
        assert_eq!(&buf[..16], &[4, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde, 8, 7, 6, 5, 4, 3, 2, 1]);
        let t = Transport::new_checked(&buf[..]).unwrap();
        assert_eq!(t.counter(), 0x0102_0304_0506_0708);
        assert_eq!(t.sealed().len(), 24);
    }

    #[test]
    fn checked_constructors_refuse_bad_input() {
        assert_eq!(message_type(&[]), Err(Error::Malformed));
        assert_eq!(message_type(&[1, 0, 0]), Err(Error::Malformed));
        assert_eq!(message_type(&[5, 0, 0, 0]), Err(Error::UnknownType));
        assert_eq!(message_type(&[1, 0, 1, 0]), Err(Error::UnknownType));
        let mut buf = [0u8; 149];
        buf[0] = 1;
        assert_eq!(Initiation::new_checked(&buf[..]).err(), Some(Error::Malformed));
        assert_eq!(Initiation::new_checked(&buf[..147]).err(), Some(Error::Malformed));
        assert!(Initiation::new_checked(&buf[..148]).is_ok());
        assert_eq!(Response::new_checked(&buf[..92]).err(), Some(Error::UnknownType));
        buf[0] = 4;
        assert_eq!(Transport::new_checked(&buf[..31]).err(), Some(Error::Malformed));
        assert!(Transport::new_checked(&buf[..32]).is_ok());
        // Unchecked views over short buffers read zeros instead of panicking.
        let short = Initiation::new_unchecked(&buf[..3]);
        assert_eq!(short.sender(), 0);
        assert_eq!(short.mac2(), [0; 16]);
        assert_eq!(Transport::new_unchecked(&buf[..3]).sealed(), &[] as &[u8]);
    }
}

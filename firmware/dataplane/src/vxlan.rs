//! VXLAN header (RFC 7348 §5), a zero-copy view in the `smoltcp::wire` style.
//!
//! ```text
//!  0               1               2               3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//!
//! Contract: after [`VxlanPacket::new_checked`] succeeds no accessor panics.
//! Reserved bits are ignored on receive and written as zero (RFC 7348).

use core::fmt;

/// The IANA-assigned VXLAN UDP port.
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN header length.
pub const HEADER_LEN: usize = 8;
/// The "valid VNI" flag.
pub const FLAG_I: u8 = 0x08;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

mod field {
    use core::ops::Range;
    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
}

/// The buffer is shorter than a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

/// A VXLAN header over a buffer (header followed by the inner frame).
#[derive(Debug, Clone)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wrap without checking the length.
    pub const fn new_unchecked(buffer: T) -> VxlanPacket<T> {
        VxlanPacket { buffer }
    }

    /// Wrap, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<VxlanPacket<T>, Truncated> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensure no accessor panics.
    pub fn check_len(&self) -> Result<(), Truncated> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Truncated)
        } else {
            Ok(())
        }
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// True when the I flag (VNI valid) is set.
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])
    }

    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Set the flags byte.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Set the VNI (only the low 24 bits are used).
    pub fn set_vni(&mut self, vni: u32) {
        let b = &mut self.buffer.as_mut()[field::VNI];
        b[0] = (vni >> 16) as u8;
        b[1] = (vni >> 8) as u8;
        b[2] = vni as u8;
    }

    /// Zero the reserved fields.
    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        b[1] = 0;
        b[2] = 0;
        b[3] = 0;
        b[7] = 0;
    }
}

/// Why a VXLAN header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than 8 bytes.
    Truncated,
    /// The I flag is clear: the VNI is not valid (RFC 7348: discard).
    NoVniFlag,
}

/// High-level VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    /// The segment identifier.
    pub vni: u32,
}

impl VxlanRepr {
    /// Parse a header; refuses a header without the I flag.
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> Result<VxlanRepr, ParseError> {
        packet.check_len().map_err(|_| ParseError::Truncated)?;
        if !packet.vni_valid() {
            return Err(ParseError::NoVniFlag);
        }
        Ok(VxlanRepr { vni: packet.vni() })
    }

    /// Header length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header: I flag, VNI, reserved zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut VxlanPacket<T>) {
        packet.set_flags(FLAG_I);
        packet.clear_reserved();
        packet.set_vni(self.vni & MAX_VNI);
    }
}

impl fmt::Display for VxlanRepr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "VXLAN vni={}", self.vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // flags=I, reserved, VNI 0x123456, reserved, then 2 payload bytes.
    static PACKET: [u8; 10] = [0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x00, 0xaa, 0xbb];

    #[test]
    fn deconstruct() {
        let p = VxlanPacket::new_checked(&PACKET[..]).unwrap();
        assert!(p.vni_valid());
        assert_eq!(p.vni(), 0x123456);
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn construct_into_a5() {
        let mut buf = [0xa5u8; 10];
        buf[8] = 0xaa;
        buf[9] = 0xbb;
        let mut p = VxlanPacket::new_unchecked(&mut buf[..]);
        VxlanRepr { vni: 0x123456 }.emit(&mut p);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn parse_emit_round_trip() {
        let p = VxlanPacket::new_checked(&PACKET[..]).unwrap();
        let repr = VxlanRepr::parse(&p).unwrap();
        assert_eq!(repr, VxlanRepr { vni: 0x123456 });
        let mut buf = [0xa5u8; 8];
        repr.emit(&mut VxlanPacket::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..], &PACKET[..8]);
        assert_eq!(repr.buffer_len(), 8);
    }

    #[test]
    fn reserved_bits_ignored_on_receive() {
        let mut b = PACKET;
        b[0] = 0xff;
        b[1] = 0xff;
        b[7] = 0xff;
        let repr = VxlanRepr::parse(&VxlanPacket::new_unchecked(&b[..])).unwrap();
        assert_eq!(repr.vni, 0x123456);
    }

    #[test]
    fn refuses_truncated_and_missing_i_flag() {
        assert!(VxlanPacket::new_checked(&PACKET[..7]).is_err());
        assert_eq!(VxlanRepr::parse(&VxlanPacket::new_unchecked(&PACKET[..7])), Err(ParseError::Truncated));
        let mut b = PACKET;
        b[0] = 0x00;
        assert_eq!(VxlanRepr::parse(&VxlanPacket::new_unchecked(&b[..])), Err(ParseError::NoVniFlag));
    }

    #[test]
    fn cross_check_with_etherparse() {
        let h = etherparse::UdpHeader { source_port: 1, destination_port: VXLAN_PORT, length: 8 + 10, checksum: 0 };
        let mut udp = [0u8; 18];
        udp[..8].copy_from_slice(&h.to_bytes());
        udp[8..].copy_from_slice(&PACKET);
        let (parsed, rest) = etherparse::UdpHeader::from_slice(&udp).unwrap();
        assert_eq!(parsed.destination_port, 4789);
        let repr = VxlanRepr::parse(&VxlanPacket::new_checked(rest).unwrap()).unwrap();
        assert_eq!(repr.vni, 0x123456);
    }
}

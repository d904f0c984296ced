//! VXLAN header, RFC 7348 section 5.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The I flag must be set; every R bit must be zero on transmit and, by RFC, ignored on
//! receive. vxtap is strict by default (see `tunnel`), so the wrapper exposes every reserved
//! field separately. This module never allocates or performs I/O.

use super::{Error, Field, Rest, Result};
use core::fmt;
use core::str::FromStr;

mod field {
    use super::{Field, Rest};
    pub const FLAGS: usize = 0;
    pub const RESERVED1: Field = 1..4;
    pub const VNI: Field = 4..7;
    pub const RESERVED2: usize = 7;
    pub const PAYLOAD: Rest = 8..;
}

/// Length of the VXLAN header in bytes.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// The I flag: the VNI field is valid.
pub const FLAG_VNI: u8 = 0x08;
/// The IANA-assigned UDP destination port for VXLAN.
pub const DEFAULT_PORT: u16 = 4789;

/// A VXLAN Network Identifier: 24 bits, checked on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

/// A value that does not fit in the 24-bit VNI field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} is out of range (0..=16777215)")]
pub struct VniOutOfRange(pub u64);

impl Vni {
    /// The largest VNI, 2^24 - 1.
    pub const MAX: Vni = Vni((1 << 24) - 1);

    /// Checks that `value` fits in 24 bits.
    pub const fn new(value: u32) -> core::result::Result<Vni, VniOutOfRange> {
        if value <= Self::MAX.0 {
            Ok(Vni(value))
        } else {
            Err(VniOutOfRange(value as u64))
        }
    }

    /// The VNI as a plain integer.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The three network-order bytes of the VNI field.
    pub const fn to_bytes(self) -> [u8; 3] {
        let b = self.0.to_be_bytes();
        [b[1], b[2], b[3]]
    }

    /// Reads the three network-order bytes of the VNI field.
    pub const fn from_bytes(b: [u8; 3]) -> Vni {
        Vni(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a string is not a VNI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseVniError {
    /// Not a decimal number.
    #[error("VNI {0:?} is not a number")]
    NotANumber(String),
    /// A number, but too large.
    #[error(transparent)]
    OutOfRange(#[from] VniOutOfRange),
}

impl FromStr for Vni {
    type Err = ParseVniError;
    fn from_str(s: &str) -> core::result::Result<Vni, ParseVniError> {
        let value: u64 = s
            .parse()
            .map_err(|_| ParseVniError::NotANumber(s.to_owned()))?;
        let value = u32::try_from(value).map_err(|_| VniOutOfRange(value))?;
        Ok(Vni::new(value)?)
    }
}

/// A read/write wrapper around a VXLAN header and its payload.
#[derive(Debug, Clone)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> VxlanPacket<T> {
        VxlanPacket { buffer }
    }

    /// Wraps untrusted input, checking that the header is present.
    pub fn new_checked(buffer: T) -> Result<VxlanPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the I flag (valid VNI) is set.
    pub fn vni_flag(&self) -> bool {
        self.flags() & FLAG_VNI != 0
    }

    /// The flag bits other than I, which RFC 7348 reserves.
    pub fn reserved_flags(&self) -> u8 {
        self.flags() & !FLAG_VNI
    }

    /// The 24 reserved bits after the flags.
    pub fn reserved1(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::RESERVED1];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The 8 reserved bits after the VNI.
    pub fn reserved2(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED2]
    }

    /// Whether any reserved bit anywhere in the header is set.
    pub fn any_reserved_set(&self) -> bool {
        self.reserved_flags() != 0 || self.reserved1() != 0 || self.reserved2() != 0
    }

    /// The VNI field.
    pub fn vni(&self) -> Vni {
        let b = &self.buffer.as_ref()[field::VNI];
        Vni::from_bytes([b[0], b[1], b[2]])
    }

    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Sets the flags byte.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the 24 reserved bits after the flags (the top 8 bits of `value` are ignored).
    pub fn set_reserved1(&mut self, value: u32) {
        let b = value.to_be_bytes();
        self.buffer.as_mut()[field::RESERVED1].copy_from_slice(&b[1..]);
    }

    /// Sets the VNI field.
    pub fn set_vni(&mut self, vni: Vni) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_bytes());
    }

    /// Sets the 8 reserved bits after the VNI.
    pub fn set_reserved2(&mut self, value: u8) {
        self.buffer.as_mut()[field::RESERVED2] = value;
    }

    /// The encapsulated Ethernet frame, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A parsed VXLAN header that follows RFC 7348 to the letter: I flag set, reserved zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    /// The network identifier.
    pub vni: Vni,
}

impl VxlanRepr {
    /// Parses a header, insisting on the I flag and on every reserved bit being zero, so that
    /// whatever parses re-emits byte for byte.
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> Result<VxlanRepr> {
        packet.check_len()?;
        if !packet.vni_flag() || packet.any_reserved_set() {
            return Err(Error::Malformed);
        }
        Ok(VxlanRepr { vni: packet.vni() })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first `HEADER_LEN` bytes of `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut VxlanPacket<T>) {
        packet.set_flags(FLAG_VNI);
        packet.set_reserved1(0);
        packet.set_vni(self.vni);
        packet.set_reserved2(0);
    }

    /// The header as bytes, for callers that send it from an iovec.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        self.emit(&mut VxlanPacket::new_unchecked(&mut bytes[..]));
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // VNI 42 header as the kernel's vxlan device sends it.
    const HEADER_VNI_42: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 42, 0];

    #[test]
    fn vni_is_checked_to_24_bits() {
        assert_eq!(Vni::new(0xff_ffff).unwrap().get(), 0xff_ffff);
        assert_eq!(Vni::new(0x100_0000), Err(VniOutOfRange(0x100_0000)));
        assert!("16777216".parse::<Vni>().is_err());
        assert!("-1".parse::<Vni>().is_err());
        assert!("99999999999999999999".parse::<Vni>().is_err());
        assert_eq!("42".parse::<Vni>().unwrap().get(), 42);
    }

    #[test]
    fn vni_bytes_round_trip() {
        let vni = Vni::new(0x12_3456).unwrap();
        assert_eq!(vni.to_bytes(), [0x12, 0x34, 0x56]);
        assert_eq!(Vni::from_bytes(vni.to_bytes()), vni);
    }

    #[test]
    fn parse_and_emit_round_trip() {
        let packet = VxlanPacket::new_checked(&HEADER_VNI_42[..]).unwrap();
        let repr = VxlanRepr::parse(&packet).unwrap();
        assert_eq!(repr.vni.get(), 42);
        assert_eq!(repr.to_bytes(), HEADER_VNI_42);
    }

    #[test]
    fn short_buffer_is_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                VxlanPacket::new_checked(&HEADER_VNI_42[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn every_reserved_bit_is_seen() {
        for bit in 0..64 {
            let mut bytes = HEADER_VNI_42;
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            // Skip the I flag and the VNI, which are not reserved.
            if (byte == 0 && mask == FLAG_VNI) || (4..7).contains(&byte) {
                continue;
            }
            bytes[byte] |= mask;
            let packet = VxlanPacket::new_checked(&bytes[..]).unwrap();
            assert!(packet.any_reserved_set(), "bit {bit}");
            assert_eq!(
                VxlanRepr::parse(&packet),
                Err(Error::Malformed),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn missing_i_flag_is_malformed() {
        let mut bytes = HEADER_VNI_42;
        bytes[0] = 0;
        let packet = VxlanPacket::new_checked(&bytes[..]).unwrap();
        assert!(!packet.vni_flag());
        assert_eq!(VxlanRepr::parse(&packet), Err(Error::Malformed));
    }

    #[test]
    fn payload_follows_header() {
        let mut bytes = [0u8; 12];
        let mut packet = VxlanPacket::new_unchecked(&mut bytes[..]);
        VxlanRepr {
            vni: Vni::new(7).unwrap(),
        }
        .emit(&mut packet);
        packet.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(packet.payload(), &[1, 2, 3, 4]);
        assert_eq!(packet.vni().get(), 7);
    }
}

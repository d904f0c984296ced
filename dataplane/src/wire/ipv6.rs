//! IPv6 fixed header, RFC 8200 section 3 (extension headers are not parsed: callers that
//! meet one treat the packet as something they do not handle).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Source Address (128 bits)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Destination Address (128 bits)                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Payload Length counts everything after the 40-byte header; the packet ends there, not at
//! the end of the buffer. This module never allocates or performs I/O.

use super::ipv4::IpProtocol;
use super::{checksum, Error, Field, Result};
use core::net::Ipv6Addr;

mod field {
    use super::Field;
    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// A read/write wrapper around an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// Wraps untrusted input, checking the version and every length the getters rely on.
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header and the payload its length claims, and
    /// that the version is 6.
    pub fn check_len(&self) -> Result<()> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + self.payload_len() > buffer_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The version field (6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION] >> 4
    }

    /// The payload length: bytes after the fixed header.
    pub fn payload_len(&self) -> usize {
        let b = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The next header: the upper-layer protocol, or an extension header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        address(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        address(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The payload, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len()]
    }

    /// The pseudo-header sum (RFC 8200 section 8.1) for an upper layer of `protocol` and
    /// `length` bytes.
    pub fn pseudo_header(&self, protocol: IpProtocol, length: u32) -> u16 {
        checksum::pseudo_header_v6(self.src_addr(), self.dst_addr(), protocol.0, length)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }
}

fn address(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(bytes);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fd00::1 -> fd00::2, TCP, 20 bytes of payload, traffic class and flow label set.
    fn packet() -> [u8; 60] {
        let mut p = [0u8; 60];
        p[..4].copy_from_slice(&[0x6a, 0xb1, 0x23, 0x45]);
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
        p
    }

    #[test]
    fn reads_the_fixed_header() {
        let bytes = packet();
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.payload_len(), 20);
        assert_eq!(ip.next_header(), IpProtocol::TCP);
        assert_eq!(ip.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.payload(), &bytes[40..60]);
        assert_eq!(
            ip.pseudo_header(IpProtocol::TCP, 20),
            checksum::pseudo_header_v6(ip.src_addr(), ip.dst_addr(), 6, 20)
        );
    }

    #[test]
    fn the_payload_ends_at_its_length_not_the_buffer() {
        let mut bytes = [0u8; 80];
        bytes[..60].copy_from_slice(&packet());
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.payload().len(), 20);
    }

    #[test]
    fn refuses_short_buffers_and_other_versions() {
        let bytes = packet();
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..39]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..59]).err(),
            Some(Error::Truncated),
            "payload length past the buffer"
        );
        let mut v4 = bytes;
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).err(),
            Some(Error::Malformed)
        );
    }

    #[test]
    fn sets_the_payload_length() {
        let mut bytes = packet();
        let mut ip = Ipv6Packet::new_unchecked(&mut bytes[..]);
        ip.set_payload_len(12);
        assert_eq!(ip.payload_len(), 12);
        assert_eq!(&bytes[4..6], &[0, 12]);
    }
}

//! UDP header, RFC 768, over IPv4.
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! +--------+--------+--------+--------+
//! |   Source Port   |Destination Port |
//! +--------+--------+--------+--------+
//! |     Length      |    Checksum     |
//! +--------+--------+--------+--------+
//! |          data octets ...
//! +---------------- ...
//! ```
//! Length counts the header and the data. The checksum covers the IPv4 pseudo-header, the
//! header and the data; over IPv4 a zero checksum means "none", so a computed zero is sent
//! as `0xffff`. The payload ends at Length, not at the end of the buffer.
//! This module never allocates or performs I/O.

use super::checksum;
use super::ipv4::IpProtocol;
use super::{Error, Field, Result};
use core::net::Ipv4Addr;

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const PAYLOAD_START: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD_START;

/// A read/write wrapper around a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wraps untrusted input, checking every length the getters rely on.
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and the whole datagram Length claims, and
    /// that Length covers at least the header.
    pub fn check_len(&self) -> Result<()> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > buffer_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT)
    }

    /// The Length field: header plus payload, in bytes.
    pub fn len(&self) -> u16 {
        self.read_u16(field::LENGTH)
    }

    /// Whether Length leaves no room for a payload. (Length is never below 8 once checked.)
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The Checksum field; 0 means the sender computed none.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The payload: from the end of the header to Length.
    ///
    /// # Panics
    /// If Length is inconsistent with the buffer, which `check_len` rules out.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the checksum is correct for a datagram from `src` to `dst`. A zero checksum
    /// means none was sent, which RFC 768 allows over IPv4, and verifies.
    ///
    /// # Panics
    /// If Length is inconsistent with the buffer, which `check_len` rules out.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        self.sum(src, dst) == 0xffff
    }

    /// The ones-complement sum of the pseudo-header and the datagram up to Length.
    fn sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
        let len = self.len();
        checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::UDP.0, len),
            checksum::data(&self.buffer.as_ref()[..usize::from(len)]),
        ])
    }

    fn read_u16(&self, range: Field) -> u16 {
        let b = &self.buffer.as_ref()[range];
        u16::from_be_bytes([b[0], b[1]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.write_u16(field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.write_u16(field::DST_PORT, port);
    }

    /// Sets the Length field.
    pub fn set_len(&mut self, len: u16) {
        self.write_u16(field::LENGTH, len);
    }

    /// Sets the Checksum field as is; see `fill_checksum` to compute it.
    pub fn set_checksum(&mut self, value: u16) {
        self.write_u16(field::CHECKSUM, value);
    }

    /// The payload (up to Length), mutably.
    ///
    /// # Panics
    /// If Length is inconsistent with the buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes the checksum over the pseudo-header, the header and the payload up to
    /// Length as they are now, and writes it. A computed zero is written as `0xffff`,
    /// because zero on the wire means "no checksum".
    ///
    /// # Panics
    /// If Length exceeds the buffer.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let value = !self.sum(src, dst);
        self.set_checksum(if value == 0 { 0xffff } else { value });
    }

    fn write_u16(&mut self, range: Field, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }
}

/// A parsed UDP header. The length is implied by the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses a datagram from `src` to `dst`, checking lengths and a non-zero checksum
    /// (`Malformed` on a mismatch). A zero checksum is accepted; note that `emit` always
    /// computes one, so such a datagram does not re-emit byte for byte.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &UdpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<UdpRepr> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Malformed);
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header for a payload of `payload_len` bytes and its checksum.
    ///
    /// The checksum covers the payload bytes already in the buffer after the header: fill
    /// the payload first, or call `UdpPacket::fill_checksum` again after filling it.
    ///
    /// # Panics
    /// If the buffer is shorter than `8 + payload_len`, or if that does not fit in Length
    /// (more than 65535 bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload_len: usize,
    ) {
        let len = HEADER_LEN + payload_len;
        assert!(
            len <= usize::from(u16::MAX),
            "UDP datagram of {len} bytes does not fit in Length"
        );
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len as u16);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    /// A VXLAN datagram as the Linux kernel sends it: source port from the flow hash,
    /// destination 4789, VXLAN header for VNI 42, then (a stub of) the inner frame.
    fn vxlan_datagram() -> Vec<u8> {
        let payload = [0x08, 0, 0, 0, 0, 0, 42, 0, 0xde, 0xad, 0xbe, 0xef];
        let builder =
            etherparse::PacketBuilder::ipv4(SRC.octets(), DST.octets(), 64).udp(51_234, 4789);
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &payload).unwrap();
        bytes.split_off(20)
    }

    #[test]
    fn etherparse_datagram_parses_and_verifies() {
        let bytes = vxlan_datagram();
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        let theirs = etherparse::UdpHeaderSlice::from_slice(&bytes).unwrap();
        assert_eq!(packet.src_port(), theirs.source_port());
        assert_eq!(packet.dst_port(), theirs.destination_port());
        assert_eq!(packet.len(), theirs.length());
        assert_eq!(packet.checksum(), theirs.checksum());
        assert_ne!(packet.checksum(), 0);
        assert_eq!(packet.payload().len(), 12);
        assert!(!packet.is_empty());
        assert!(packet.verify_checksum(SRC, DST));
        // The pseudo-header matters.
        assert!(!packet.verify_checksum(DST, Ipv4Addr::new(192, 168, 1, 3)));
    }

    #[test]
    fn parse_emit_round_trip() {
        let bytes = vxlan_datagram();
        let repr = UdpRepr::parse(&UdpPacket::new_checked(&bytes[..]).unwrap(), SRC, DST).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 51_234,
                dst_port: 4789
            }
        );
        assert_eq!(repr.buffer_len(), HEADER_LEN);
        let mut out = bytes.clone();
        out[..HEADER_LEN].fill(0);
        repr.emit(&mut UdpPacket::new_unchecked(&mut out[..]), SRC, DST, 12);
        assert_eq!(out, bytes);
    }

    #[test]
    fn emit_matches_etherparse_for_many_payloads() {
        let mut out = [0u8; HEADER_LEN + 64];
        for payload_len in 0..64usize {
            let payload: Vec<u8> = (0..payload_len).map(|i| (i * 37 + 11) as u8).collect();
            let repr = UdpRepr {
                src_port: 0xffff,
                dst_port: 53,
            };
            out[HEADER_LEN..HEADER_LEN + payload_len].copy_from_slice(&payload);
            repr.emit(
                &mut UdpPacket::new_unchecked(&mut out[..]),
                SRC,
                DST,
                payload_len,
            );
            let theirs = etherparse::UdpHeader::with_ipv4_checksum(
                0xffff,
                53,
                &etherparse::Ipv4Header::new(
                    (HEADER_LEN + payload_len) as u16,
                    64,
                    etherparse::IpNumber::UDP,
                    SRC.octets(),
                    DST.octets(),
                )
                .unwrap(),
                &payload,
            )
            .unwrap();
            assert_eq!(
                out[..HEADER_LEN],
                theirs.to_bytes(),
                "payload {payload_len}"
            );
        }
    }

    #[test]
    fn truncated_and_malformed_lengths() {
        let bytes = vxlan_datagram();
        for len in 0..HEADER_LEN {
            assert_eq!(
                UdpPacket::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        for len in HEADER_LEN..bytes.len() {
            assert_eq!(
                UdpPacket::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        for bad in 0..HEADER_LEN as u16 {
            let mut bytes = bytes.clone();
            bytes[4..6].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(
                UdpPacket::new_checked(&bytes[..]).unwrap_err(),
                Error::Malformed
            );
        }
    }

    #[test]
    fn payload_stops_at_length() {
        let mut bytes = vxlan_datagram();
        bytes.extend_from_slice(&[0; 6]); // trailing padding
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload().len(), 12);
        assert!(packet.verify_checksum(SRC, DST));
        assert!(UdpRepr::parse(&packet, SRC, DST).is_ok());
    }

    #[test]
    fn wrong_checksum_is_malformed() {
        let good = vxlan_datagram();
        for byte in 0..good.len() {
            if (4..6).contains(&byte) {
                continue; // Length: check_len's business
            }
            let mut bytes = good.clone();
            bytes[byte] ^= 0x10;
            let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
            if packet.checksum() == 0 {
                continue;
            }
            assert!(!packet.verify_checksum(SRC, DST), "byte {byte}");
            assert_eq!(
                UdpRepr::parse(&packet, SRC, DST),
                Err(Error::Malformed),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut bytes = vxlan_datagram();
        bytes[6..8].fill(0);
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum(SRC, DST));
        assert!(packet.verify_checksum(DST, SRC));
        assert!(UdpRepr::parse(&packet, SRC, DST).is_ok());
    }

    #[test]
    fn computed_zero_is_sent_as_all_ones() {
        // Pick a payload word that makes the datagram sum to exactly 0xffff, so the
        // inverted sum is zero.
        let mut bytes = [0u8; HEADER_LEN + 2];
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(1);
        packet.set_dst_port(2);
        packet.set_len(10);
        let partial = checksum::combine(&[
            checksum::pseudo_header_v4(SRC, DST, 17, 10),
            checksum::data(&packet.buffer[..]),
        ]);
        packet
            .payload_mut()
            .copy_from_slice(&(!partial).to_be_bytes());
        packet.fill_checksum(SRC, DST);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum(SRC, DST));
        let theirs = etherparse::UdpHeaderSlice::from_slice(&bytes)
            .unwrap()
            .to_header();
        assert_eq!(
            theirs
                .calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), &bytes[8..])
                .unwrap(),
            0xffff
        );
    }

    #[test]
    fn setters_round_trip_through_getters() {
        let mut bytes = [0u8; 16];
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(1);
        packet.set_dst_port(65_535);
        packet.set_len(12);
        packet.payload_mut().copy_from_slice(&[9, 8, 7, 6]);
        packet.set_checksum(0xabcd);
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (packet.src_port(), packet.dst_port(), packet.len()),
            (1, 65_535, 12)
        );
        assert_eq!(
            (packet.checksum(), packet.payload()),
            (0xabcd, &[9u8, 8, 7, 6][..])
        );
        assert_eq!(packet.into_inner().len(), 16);
    }
}

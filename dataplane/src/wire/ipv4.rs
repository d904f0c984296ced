//! IPv4 header, RFC 791 section 3.1.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |R|D|M|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (IHL > 5)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! R is the reserved flag (must be zero), D "don't fragment", M "more fragments". The
//! fragment offset counts 8-byte units on the wire; this module converts it to bytes.
//!
//! The payload ends at Total Length, not at the end of the buffer: frames shorter than 60
//! bytes arrive with Ethernet padding after the IP packet. This module never allocates,
//! performs I/O or reassembles fragments.

use super::checksum;
use super::{Error, Field, Result};
use core::net::Ipv4Addr;

mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLAGS_FRAG: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
    pub const OPTIONS_START: usize = 20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::OPTIONS_START;
/// Length of the longest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_RESERVED: u16 = 0x8000;
const FLAG_DONT_FRAG: u16 = 0x4000;
const FLAG_MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// The protocol number of the payload (IANA "Assigned Internet Protocol Numbers").
/// Unknown values are kept, not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// ICMP, RFC 792.
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP, RFC 9293.
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP, RFC 768.
    pub const UDP: IpProtocol = IpProtocol(17);
}

/// A read/write wrapper around an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps untrusted input, checking every length the getters rely on.
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the whole header and the whole packet Total Length
    /// claims, and that the version and lengths are consistent. After it succeeds no getter
    /// panics (until a setter changes a length).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL times 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The whole second byte: DSCP in the top six bits, ECN in the bottom two.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The Total Length field: header plus payload, in bytes.
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::TOTAL_LEN)
    }

    /// The Identification field.
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT)
    }

    /// The reserved flag, which RFC 791 requires to be zero.
    pub fn reserved_flag(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG) & FLAG_RESERVED != 0
    }

    /// The "don't fragment" flag.
    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG) & FLAG_DONT_FRAG != 0
    }

    /// The "more fragments" flag.
    pub fn more_frags(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG) & FLAG_MORE_FRAGS != 0
    }

    /// The fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (self.read_u16(field::FLAGS_FRAG) & FRAG_OFFSET_MASK) * 8
    }

    /// The Time to Live field.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The Header Checksum field.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        self.read_addr(field::SRC_ADDR)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.read_addr(field::DST_ADDR)
    }

    /// The options: the header bytes after the first 20.
    ///
    /// # Panics
    /// If the header length exceeds the buffer, which `check_len` rules out.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS_START..self.header_len()]
    }

    /// The payload: from the end of the header to Total Length, without any link-layer
    /// padding that follows the packet in the buffer.
    ///
    /// # Panics
    /// If the lengths are inconsistent with the buffer, which `check_len` rules out.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// Whether the header, options included, sums to the all-ones pattern.
    ///
    /// # Panics
    /// If the header length exceeds the buffer, which `check_len` rules out.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }

    fn read_u16(&self, range: Field) -> u16 {
        let b = &self.buffer.as_ref()[range];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn read_addr(&self, range: Field) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[range];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version field (the top four bits of the first byte).
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets IHL to `len / 4`. Changing it can make the length getters panic on a buffer
    /// that `check_len` accepted before.
    ///
    /// # Panics
    /// In debug builds, if `len` is not a multiple of 4 between 20 and 60.
    pub fn set_header_len(&mut self, len: usize) {
        debug_assert!(len % 4 == 0 && (HEADER_LEN..=MAX_HEADER_LEN).contains(&len));
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the whole DSCP/ECN byte.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the Total Length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.write_u16(field::TOTAL_LEN, len);
    }

    /// Sets the Identification field.
    pub fn set_ident(&mut self, ident: u16) {
        self.write_u16(field::IDENT, ident);
    }

    /// Sets or clears the "don't fragment" flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DONT_FRAG, value);
    }

    /// Sets or clears the "more fragments" flag.
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MORE_FRAGS, value);
    }

    /// Sets the fragment offset, given in bytes.
    ///
    /// # Panics
    /// In debug builds, if `offset` is not a multiple of 8.
    pub fn set_frag_offset(&mut self, offset: u16) {
        debug_assert!(
            offset % 8 == 0,
            "fragment offset {offset} is not a multiple of 8"
        );
        let flags = self.read_u16(field::FLAGS_FRAG) & !FRAG_OFFSET_MASK;
        self.write_u16(field::FLAGS_FRAG, flags | (offset / 8));
    }

    /// Sets the Time to Live field.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol field.
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.0;
    }

    /// Sets the Header Checksum field as is; see `fill_checksum` to compute it.
    pub fn set_checksum(&mut self, value: u16) {
        self.write_u16(field::CHECKSUM, value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The options, mutably.
    ///
    /// # Panics
    /// If the header length exceeds the buffer.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS_START..end]
    }

    /// The payload (up to Total Length), mutably.
    ///
    /// # Panics
    /// If the lengths are inconsistent with the buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }

    /// Computes the header checksum over the header as it is now, options included, and
    /// writes it. Call it after the last change to the header.
    ///
    /// # Panics
    /// If the header length exceeds the buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(!sum);
    }

    fn set_flag(&mut self, flag: u16, value: bool) {
        let raw = self.read_u16(field::FLAGS_FRAG);
        let raw = if value { raw | flag } else { raw & !flag };
        self.write_u16(field::FLAGS_FRAG, raw);
    }

    fn write_u16(&mut self, range: Field, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }
}

/// A parsed IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Length of the payload in bytes (Total Length minus the header).
    pub payload_len: usize,
    /// Time to Live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// The whole DSCP/ECN byte.
    pub dscp_ecn: u8,
    /// "Don't fragment".
    pub dont_frag: bool,
    /// "More fragments".
    pub more_frags: bool,
    /// Fragment offset in bytes, a multiple of 8.
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Parses a header, checking lengths and the header checksum (`Malformed` on a
    /// mismatch) and rejecting the reserved flag (`Malformed`).
    ///
    /// Headers with options are `Unsupported`: a repr re-emits a 20-byte header, and
    /// whatever parses must re-emit byte for byte, so options cannot be dropped silently.
    /// Code that must forward such packets works on `Ipv4Packet` directly.
    ///
    /// A checksum field of 0xffff where 0x0000 computes is accepted (both encode ones-complement
    /// zero) and re-emits as 0x0000, the form an emitter computes; every other header re-emits
    /// byte for byte.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Ipv4Repr> {
        packet.check_len()?;
        if !packet.verify_checksum() || packet.reserved_flag() {
            return Err(Error::Malformed);
        }
        if packet.header_len() != HEADER_LEN {
            return Err(Error::Unsupported);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dscp_ecn: packet.dscp_ecn(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// Length of the emitted header: always 20, options are never emitted.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with a correct checksum into the start of `packet`.
    /// The payload is not touched.
    ///
    /// # Panics
    /// If `packet` is shorter than 20 bytes, or if `payload_len` does not fit in Total
    /// Length (more than 65515 bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        assert!(
            self.payload_len <= usize::from(u16::MAX) - HEADER_LEN,
            "IPv4 payload of {} bytes does not fit in Total Length",
            self.payload_len
        );
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len((HEADER_LEN + self.payload_len) as u16);
        packet.set_ident(self.ident);
        // Writing the whole word also clears the reserved flag.
        packet.write_u16(field::FLAGS_FRAG, 0);
        packet.set_dont_frag(self.dont_frag);
        packet.set_more_frags(self.more_frags);
        packet.set_frag_offset(self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inner IPv4 packet of an ICMP echo request the kernel's vxlan device carried
    /// (testdata/kernel/icmp_echo_request.bin: outer headers 42 bytes, VXLAN 8, inner
    /// Ethernet 14, then 84 bytes of IPv4).
    fn icmp_packet() -> Vec<u8> {
        include_bytes!("../../testdata/kernel/icmp_echo_request.bin")[64..].to_vec()
    }

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn icmp_vector_fields() {
        let bytes = icmp_packet();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp_ecn(), 0);
        assert_eq!(packet.total_len(), 84);
        assert_eq!(packet.ident(), 0x02ad);
        assert_eq!(packet.checksum(), 0x23fa);
        assert!(packet.dont_frag() && !packet.more_frags() && !packet.reserved_flag());
        assert_eq!(packet.frag_offset(), 0);
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), IpProtocol::ICMP);
        assert_eq!(packet.src_addr(), addr("10.0.0.1"));
        assert_eq!(packet.dst_addr(), addr("10.0.0.2"));
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload().len(), 64);
        assert_eq!(&packet.payload()[..2], &[0x08, 0x00]);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn parse_emit_round_trip() {
        let bytes = icmp_packet();
        let repr = Ipv4Repr::parse(&Ipv4Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            Ipv4Repr {
                src_addr: addr("10.0.0.1"),
                dst_addr: addr("10.0.0.2"),
                protocol: IpProtocol::ICMP,
                payload_len: 64,
                ttl: 64,
                ident: 0x02ad,
                dscp_ecn: 0,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
            }
        );
        assert_eq!(repr.buffer_len(), HEADER_LEN);
        let mut out = bytes.clone();
        out[..HEADER_LEN].fill(0xaa);
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, bytes);
    }

    #[test]
    fn emit_parse_round_trip_with_fragments() {
        let repr = Ipv4Repr {
            src_addr: addr("192.0.2.1"),
            dst_addr: addr("198.51.100.200"),
            protocol: IpProtocol::UDP,
            payload_len: 16,
            ttl: 1,
            ident: 0xbeef,
            dscp_ecn: 0xb9,
            dont_frag: false,
            more_frags: true,
            frag_offset: 8 * 0x1fff,
        };
        let mut bytes = [0xffu8; HEADER_LEN + 16];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut bytes[..]));
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.reserved_flag());
        assert_eq!(Ipv4Repr::parse(&packet), Ok(repr));
        let theirs = etherparse::Ipv4HeaderSlice::from_slice(&bytes).unwrap();
        assert_eq!(theirs.fragments_offset().value(), 0x1fff);
        assert!(theirs.more_fragments() && !theirs.dont_fragment());
        assert_eq!(theirs.to_header().calc_header_checksum(), packet.checksum());
    }

    #[test]
    fn truncated_below_the_header() {
        let bytes = icmp_packet();
        for len in 0..HEADER_LEN {
            assert_eq!(
                Ipv4Packet::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn truncated_below_total_len() {
        let bytes = icmp_packet();
        for len in HEADER_LEN..bytes.len() {
            assert_eq!(
                Ipv4Packet::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        assert!(Ipv4Packet::new_checked(&bytes[..]).is_ok());
    }

    #[test]
    fn options_beyond_the_buffer_are_truncated() {
        let mut bytes = icmp_packet();
        bytes[0] = 0x4f;
        bytes[2..4].copy_from_slice(&60u16.to_be_bytes());
        for len in HEADER_LEN..60 {
            assert_eq!(
                Ipv4Packet::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        assert!(Ipv4Packet::new_checked(&bytes[..60]).is_ok());
    }

    #[test]
    fn malformed_headers() {
        let good = icmp_packet();
        let check = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = good.clone();
            edit(&mut bytes);
            Ipv4Packet::new_checked(&bytes[..]).map(|_| ())
        };
        // Version other than 4.
        assert_eq!(check(&|b| b[0] = 0x65), Err(Error::Malformed));
        assert_eq!(check(&|b| b[0] = 0x05), Err(Error::Malformed));
        // IHL below 5.
        for ihl in 0..5 {
            assert_eq!(
                check(&|b| b[0] = 0x40 | ihl),
                Err(Error::Malformed),
                "ihl {ihl}"
            );
        }
        // Total Length shorter than the header.
        assert_eq!(
            check(&|b| b[2..4].copy_from_slice(&19u16.to_be_bytes())),
            Err(Error::Malformed)
        );
        assert_eq!(
            check(&|b| {
                b[0] = 0x46;
                b[2..4].copy_from_slice(&20u16.to_be_bytes());
            }),
            Err(Error::Malformed)
        );
        // A header with nothing after it is fine.
        assert_eq!(
            check(&|b| b[2..4].copy_from_slice(&20u16.to_be_bytes())),
            Ok(())
        );
    }

    #[test]
    fn repr_rejects_bad_checksum_and_reserved_flag() {
        let good = icmp_packet();
        for byte in 0..HEADER_LEN {
            let mut bytes = good.clone();
            bytes[byte] ^= 0x01;
            if Ipv4Packet::new_checked(&bytes[..]).is_err() {
                continue; // a length or version byte that check_len already rejects
            }
            assert_eq!(
                Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..])),
                Err(Error::Malformed),
                "byte {byte}"
            );
        }
        let mut bytes = good.clone();
        bytes[6] |= 0x80;
        Ipv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.reserved_flag() && packet.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&packet), Err(Error::Malformed));
    }

    #[test]
    fn options_are_unsupported_by_repr_but_readable() {
        // An etherparse header with a router alert option (RFC 2113) and a UDP payload.
        let mut header = etherparse::Ipv4Header::new(
            8,
            32,
            etherparse::IpNumber::UDP,
            [10, 1, 2, 3],
            [224, 0, 0, 22],
        )
        .unwrap();
        header.options = etherparse::Ipv4Options::try_from(&[0x94, 0x04, 0x00, 0x00][..]).unwrap();
        header.set_payload_len(8).unwrap();
        header.header_checksum = header.calc_header_checksum();
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);

        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(packet.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(packet.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&packet), Err(Error::Unsupported));

        // fill_checksum covers the options too.
        let mut copy = bytes.clone();
        let mut packet = Ipv4Packet::new_unchecked(&mut copy[..]);
        packet.set_checksum(0x1234);
        packet.fill_checksum();
        assert_eq!(copy, bytes);
    }

    #[test]
    fn payload_ignores_ethernet_padding() {
        let mut bytes = icmp_packet();
        bytes[2..4].copy_from_slice(&28u16.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload().len(), 8);
        assert_eq!(Ipv4Repr::parse(&packet).unwrap().payload_len, 8);
    }

    #[test]
    fn setters_round_trip_through_getters() {
        let mut bytes = [0u8; 40];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(24);
        packet.set_dscp_ecn(0x2e << 2 | 0x01);
        packet.set_total_len(40);
        packet.set_ident(7);
        packet.set_dont_frag(true);
        packet.set_more_frags(true);
        packet.set_frag_offset(1480);
        packet.set_ttl(255);
        packet.set_protocol(IpProtocol::TCP);
        packet.set_src_addr(addr("1.2.3.4"));
        packet.set_dst_addr(addr("5.6.7.8"));
        packet.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        packet.payload_mut().fill(0x5a);
        packet.fill_checksum();
        packet.set_more_frags(false);
        packet.set_dont_frag(false);
        packet.set_more_frags(true);
        packet.fill_checksum();

        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (
                packet.version(),
                packet.header_len(),
                packet.dscp_ecn(),
                packet.total_len()
            ),
            (4, 24, 0xb9, 40)
        );
        assert_eq!(
            (packet.ident(), packet.dont_frag(), packet.more_frags()),
            (7, false, true)
        );
        assert_eq!(
            (packet.frag_offset(), packet.ttl(), packet.protocol()),
            (1480, 255, IpProtocol::TCP)
        );
        assert_eq!(
            (packet.src_addr(), packet.dst_addr()),
            (addr("1.2.3.4"), addr("5.6.7.8"))
        );
        assert_eq!(packet.options(), &[1, 1, 1, 0]);
        assert_eq!(packet.payload(), &[0x5a; 16]);
        assert!(packet.verify_checksum());
        let theirs = etherparse::Ipv4HeaderSlice::from_slice(&bytes).unwrap();
        assert_eq!(
            theirs.to_header().calc_header_checksum(),
            theirs.header_checksum()
        );
        assert_eq!(theirs.dcp().value(), 0x2e);
        assert_eq!(theirs.ecn().value(), 1);
    }

    #[test]
    fn etherparse_packets_parse_identically() {
        let builder =
            etherparse::PacketBuilder::ipv4([172, 16, 0, 1], [172, 16, 0, 2], 17).udp(4789, 4789);
        let payload = [0x42u8; 50];
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &payload).unwrap();

        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        let theirs = etherparse::Ipv4HeaderSlice::from_slice(&bytes).unwrap();
        assert_eq!(packet.total_len(), theirs.total_len());
        assert_eq!(packet.ident(), theirs.identification());
        assert_eq!(packet.dont_frag(), theirs.dont_fragment());
        assert_eq!(packet.ttl(), theirs.ttl());
        assert_eq!(packet.protocol().0, theirs.protocol().0);
        assert_eq!(packet.checksum(), theirs.header_checksum());
        assert_eq!(packet.src_addr(), theirs.source_addr());
        assert_eq!(packet.dst_addr(), theirs.destination_addr());
        assert!(packet.verify_checksum());

        let repr = Ipv4Repr::parse(&packet).unwrap();
        assert_eq!(repr.payload_len, 8 + payload.len());
        let mut out = bytes.clone();
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, bytes);
    }
}

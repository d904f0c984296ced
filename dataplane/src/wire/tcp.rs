//! TCP header, RFC 9293 section 3.1, over IPv4.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Acknowledgment Number                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Data |     |N|C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsv |S|W|C|R|C|S|S|Y|I|            Window             |
//! |       |     | |R|E|G|K|H|T|N|N|                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Checksum            |         Urgent Pointer        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (Data Offset > 5)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             data                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! NS (RFC 3540, now historic; the AE bit of accurate ECN) is kept with the flags; RFC 9293
//! counts it among the reserved bits. The three bits before it are reserved.
//!
//! TCP has no length field: the segment runs to the end of the buffer, so a `TcpPacket`
//! must wrap exactly the segment (the IPv4 payload), never a buffer with bytes after it.
//! This module never allocates, performs I/O or interprets options.

use super::checksum;
use super::ipv4::IpProtocol;
use super::{Error, Field, Result};
use core::fmt;
use core::net::Ipv4Addr;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUMBER: Field = 4..8;
    pub const ACK_NUMBER: Field = 8..12;
    pub const OFFSET_FLAGS: Field = 12..14;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const OPTIONS_START: usize = 20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::OPTIONS_START;
/// Length of the longest TCP header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;
/// The most option bytes a header can carry.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;

const FLAGS_MASK: u16 = 0x01ff;
const RESERVED_MASK: u16 = 0x0e00;
const OFFSET_MASK: u16 = 0xf000;

/// The control bits of a TCP header: the low 9 bits of the offset/flags word, NS included.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// No flags.
    pub const NONE: TcpFlags = TcpFlags(0);
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x001);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x002);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x004);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x008);
    /// The acknowledgment number is significant.
    pub const ACK: TcpFlags = TcpFlags(0x010);
    /// The urgent pointer is significant.
    pub const URG: TcpFlags = TcpFlags(0x020);
    /// ECN echo, RFC 3168.
    pub const ECE: TcpFlags = TcpFlags(0x040);
    /// Congestion window reduced, RFC 3168.
    pub const CWR: TcpFlags = TcpFlags(0x080);
    /// ECN nonce sum, RFC 3540 (historic); AE in accurate ECN.
    pub const NS: TcpFlags = TcpFlags(0x100);

    const NAMES: [(TcpFlags, &'static str); 9] = [
        (Self::FIN, "FIN"),
        (Self::SYN, "SYN"),
        (Self::RST, "RST"),
        (Self::PSH, "PSH"),
        (Self::ACK, "ACK"),
        (Self::URG, "URG"),
        (Self::ECE, "ECE"),
        (Self::CWR, "CWR"),
        (Self::NS, "NS"),
    ];

    /// Whether every flag in `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl Not for TcpFlags {
    type Output = TcpFlags;
    /// The complement within the 9 flag bits.
    fn not(self) -> TcpFlags {
        TcpFlags(!self.0 & FLAGS_MASK)
    }
}

impl fmt::Debug for TcpFlags {
    /// Flag names joined by `|` (`SYN|ACK`), bits outside the 9 flags in hex, `(none)` if
    /// empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { "|" };
            first = false;
            f.write_str(s)
        };
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                sep(f)?;
                f.write_str(name)?;
            }
        }
        let unknown = self.0 & !FLAGS_MASK;
        if unknown != 0 {
            sep(f)?;
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

/// A read/write wrapper around a TCP segment. The buffer must be exactly the segment.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wraps untrusted input, checking every length the getters rely on.
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header, that the data offset covers at least
    /// it, and that the buffer holds the options the data offset claims.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
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

    /// The sequence number.
    pub fn seq_number(&self) -> u32 {
        self.read_u32(field::SEQ_NUMBER)
    }

    /// The acknowledgment number (meaningful only with ACK).
    pub fn ack_number(&self) -> u32 {
        self.read_u32(field::ACK_NUMBER)
    }

    /// The header length in bytes (data offset times 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.read_u16(field::OFFSET_FLAGS) >> 12) * 4
    }

    /// The control flags, NS included.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.read_u16(field::OFFSET_FLAGS) & FLAGS_MASK)
    }

    /// The three reserved bits between the data offset and NS, as a number 0..=7.
    pub fn reserved_bits(&self) -> u8 {
        ((self.read_u16(field::OFFSET_FLAGS) & RESERVED_MASK) >> 9) as u8
    }

    /// The window field, unscaled.
    pub fn window_len(&self) -> u16 {
        self.read_u16(field::WINDOW)
    }

    /// The Checksum field.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The urgent pointer (meaningful only with URG).
    pub fn urgent_at(&self) -> u16 {
        self.read_u16(field::URGENT)
    }

    /// The options: the header bytes after the first 20, padding included.
    ///
    /// # Panics
    /// If the header length exceeds the buffer, which `check_len` rules out.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS_START..self.header_len()]
    }

    /// The data after the header, to the end of the buffer.
    ///
    /// # Panics
    /// If the header length exceeds the buffer, which `check_len` rules out.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum is correct for a segment from `src` to `dst`. The whole buffer
    /// is the segment. A buffer longer than 65535 bytes cannot be an IPv4 TCP segment and
    /// never verifies.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.sum(src, dst) == Some(0xffff)
    }

    /// The ones-complement sum of the pseudo-header and the whole buffer, or `None` if the
    /// buffer is too long for the pseudo-header's length field.
    fn sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<u16> {
        let bytes = self.buffer.as_ref();
        let len = u16::try_from(bytes.len()).ok()?;
        Some(checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::TCP.0, len),
            checksum::data(bytes),
        ]))
    }

    fn read_u16(&self, range: Field) -> u16 {
        let b = &self.buffer.as_ref()[range];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn read_u32(&self, range: Field) -> u32 {
        let b = &self.buffer.as_ref()[range];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.write_u16(field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.write_u16(field::DST_PORT, port);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, value: u32) {
        self.buffer.as_mut()[field::SEQ_NUMBER].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, value: u32) {
        self.buffer.as_mut()[field::ACK_NUMBER].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the data offset to `len / 4`, keeping the flags and reserved bits. Changing it
    /// can make `options` and `payload` panic on a buffer `check_len` accepted before.
    ///
    /// # Panics
    /// In debug builds, if `len` is not a multiple of 4 between 20 and 60.
    pub fn set_header_len(&mut self, len: usize) {
        debug_assert!(len % 4 == 0 && (HEADER_LEN..=MAX_HEADER_LEN).contains(&len));
        let raw = self.read_u16(field::OFFSET_FLAGS) & !OFFSET_MASK;
        let offset = ((len / 4) as u16 & 0x0f) << 12;
        self.write_u16(field::OFFSET_FLAGS, raw | offset);
    }

    /// Sets the control flags, keeping the data offset and reserved bits. Bits of `flags`
    /// outside the 9 flags are ignored.
    pub fn set_flags(&mut self, flags: TcpFlags) {
        let raw = self.read_u16(field::OFFSET_FLAGS) & !FLAGS_MASK;
        self.write_u16(field::OFFSET_FLAGS, raw | (flags.0 & FLAGS_MASK));
    }

    /// Sets the three reserved bits (the low three bits of `value`).
    pub fn set_reserved_bits(&mut self, value: u8) {
        let raw = self.read_u16(field::OFFSET_FLAGS) & !RESERVED_MASK;
        let bits = (u16::from(value) << 9) & RESERVED_MASK;
        self.write_u16(field::OFFSET_FLAGS, raw | bits);
    }

    /// Sets the window field.
    pub fn set_window_len(&mut self, value: u16) {
        self.write_u16(field::WINDOW, value);
    }

    /// Sets the Checksum field as is; see `fill_checksum` to compute it.
    pub fn set_checksum(&mut self, value: u16) {
        self.write_u16(field::CHECKSUM, value);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, value: u16) {
        self.write_u16(field::URGENT, value);
    }

    /// The options, mutably.
    ///
    /// # Panics
    /// If the header length exceeds the buffer.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS_START..end]
    }

    /// The data after the header, mutably.
    ///
    /// # Panics
    /// If the header length exceeds the buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }

    /// Computes the checksum over the pseudo-header and the whole buffer as it is now
    /// (header, options and payload), and writes it. The pseudo-header's length is the
    /// buffer's length, so the buffer must be exactly the segment.
    ///
    /// # Panics
    /// If the buffer is longer than 65535 bytes, more than an IPv4 packet can carry.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.buffer.as_ref().len();
        let sum = self
            .sum(src, dst)
            .unwrap_or_else(|| panic!("TCP segment of {len} bytes is too long for IPv4"));
        self.set_checksum(!sum);
    }

    fn write_u16(&mut self, range: Field, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }
}

/// A parsed TCP header. The options are kept as raw bytes, padding included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Control flags (only the 9 low bits are emitted).
    pub flags: TcpFlags,
    /// Window, unscaled.
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
    /// Raw option bytes, at most 40. `emit` pads them with zeros (end of option list) to a
    /// multiple of 4.
    pub options: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Parses a segment from `src` to `dst`, checking lengths and the checksum (`Malformed`
    /// on a mismatch). The options borrow from `packet`.
    ///
    /// Segments with reserved bits set are `Unsupported`: RFC 9293 says to ignore them, but
    /// a repr that dropped them would not re-emit byte for byte. Code that must forward
    /// such segments works on `TcpPacket` directly, which keeps them.
    ///
    /// A checksum field of 0xffff where 0x0000 computes is accepted (both encode ones-complement
    /// zero) and re-emits as 0x0000, the form an emitter computes; every other segment re-emits
    /// byte for byte.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &'a TcpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<TcpRepr<'a>> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Malformed);
        }
        if packet.reserved_bits() != 0 {
            return Err(Error::Unsupported);
        }
        Ok(TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            urgent_at: packet.urgent_at(),
            options: packet.options(),
        })
    }

    /// Length of the emitted header: 20 plus the options rounded up to a multiple of 4.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.options.len().next_multiple_of(4)
    }

    /// Writes the header, options and padding included, then the checksum over the whole
    /// buffer: the payload must already be in place after `buffer_len()` bytes, and the
    /// buffer must be exactly the segment (see `TcpPacket::fill_checksum`).
    ///
    /// # Panics
    /// If the options are longer than 40 bytes, the buffer is shorter than `buffer_len()`
    /// or longer than 65535 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut TcpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        assert!(
            self.options.len() <= MAX_OPTIONS_LEN,
            "{} bytes of TCP options do not fit in a header",
            self.options.len()
        );
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        // One write sets the data offset and the flags and clears the reserved bits.
        let offset = (self.buffer_len() / 4) as u16;
        packet.write_u16(
            field::OFFSET_FLAGS,
            offset << 12 | (self.flags.0 & FLAGS_MASK),
        );
        packet.set_window_len(self.window_len);
        packet.set_urgent_at(self.urgent_at);
        let options = packet.options_mut();
        let (written, padding) = options.split_at_mut(self.options.len());
        written.copy_from_slice(self.options);
        padding.fill(0);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, TcpHeaderSlice, TcpOptionElement};

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    /// A SYN with the options Linux sends (MSS, SACK permitted, timestamps, window
    /// scale), built by etherparse; returns the TCP segment without the IPv4 header.
    fn syn_segment() -> Vec<u8> {
        let builder = PacketBuilder::ipv4(SRC.octets(), DST.octets(), 64)
            .tcp(43_210, 5201, 0x1234_5678, 64_240)
            .syn()
            .options(&[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
                TcpOptionElement::Timestamp(0x0102_0304, 0),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(7),
            ])
            .unwrap();
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &[]).unwrap();
        bytes.split_off(20)
    }

    /// A data segment with PSH|ACK and no options.
    fn data_segment(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ipv4(SRC.octets(), DST.octets(), 64)
            .tcp(5201, 43_210, 0xffff_fff0, 502)
            .psh()
            .ack(0x8000_0001);
        let mut bytes = Vec::new();
        builder.write(&mut bytes, payload).unwrap();
        bytes.split_off(20)
    }

    #[test]
    fn etherparse_syn_parses_and_verifies() {
        let bytes = syn_segment();
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        let theirs = TcpHeaderSlice::from_slice(&bytes).unwrap();
        assert_eq!(packet.src_port(), theirs.source_port());
        assert_eq!(packet.dst_port(), theirs.destination_port());
        assert_eq!(packet.seq_number(), theirs.sequence_number());
        assert_eq!(packet.ack_number(), theirs.acknowledgment_number());
        assert_eq!(packet.header_len(), usize::from(theirs.data_offset()) * 4);
        assert_eq!(packet.header_len(), 40);
        assert_eq!(packet.flags(), TcpFlags::SYN);
        assert_eq!(packet.window_len(), theirs.window_size());
        assert_eq!(packet.checksum(), theirs.checksum());
        assert_eq!(packet.urgent_at(), 0);
        assert_eq!(packet.options(), theirs.options());
        assert_eq!(&packet.options()[..4], &[2, 4, 0x05, 0xb4]);
        assert!(packet.payload().is_empty());
        assert!(packet.verify_checksum(SRC, DST));
        assert!(!packet.verify_checksum(SRC, Ipv4Addr::new(10, 0, 0, 4)));
    }

    #[test]
    fn parse_emit_round_trip_with_options() {
        let bytes = syn_segment();
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        let repr = TcpRepr::parse(&packet, SRC, DST).unwrap();
        assert_eq!(repr.flags, TcpFlags::SYN);
        assert_eq!(repr.options.len(), 20);
        assert_eq!(repr.buffer_len(), 40);
        let mut out = vec![0xaa; bytes.len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut out[..]), SRC, DST);
        assert_eq!(out, bytes);
    }

    #[test]
    fn parse_emit_round_trip_with_payload() {
        let payload: Vec<u8> = (0..1001u32).map(|i| (i * 7) as u8).collect();
        let bytes = data_segment(&payload);
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        let repr = TcpRepr::parse(&packet, SRC, DST).unwrap();
        assert_eq!(
            repr,
            TcpRepr {
                src_port: 5201,
                dst_port: 43_210,
                seq_number: 0xffff_fff0,
                ack_number: 0x8000_0001,
                flags: TcpFlags::PSH | TcpFlags::ACK,
                window_len: 502,
                urgent_at: 0,
                options: &[],
            }
        );
        assert_eq!(packet.payload(), &payload[..]);
        let mut out = bytes.clone();
        out[..HEADER_LEN].fill(0);
        repr.emit(&mut TcpPacket::new_unchecked(&mut out[..]), SRC, DST);
        assert_eq!(out, bytes);
    }

    #[test]
    fn emit_pads_options_and_matches_etherparse() {
        let options = [2, 4, 0x23, 0x28, 3, 3, 9]; // MSS 9000, window scale 9: 7 bytes
        let repr = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq_number: 3,
            ack_number: 4,
            flags: TcpFlags::SYN | TcpFlags::ACK | TcpFlags::ECE,
            window_len: 5,
            urgent_at: 0,
            options: &options,
        };
        assert_eq!(repr.buffer_len(), 28);
        let payload = b"hello";
        let mut bytes = vec![0xee; 28 + payload.len()];
        bytes[28..].copy_from_slice(payload);
        repr.emit(&mut TcpPacket::new_unchecked(&mut bytes[..]), SRC, DST);

        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.options(), &[2, 4, 0x23, 0x28, 3, 3, 9, 0]);
        assert_eq!(packet.payload(), payload);
        let theirs = TcpHeaderSlice::from_slice(&bytes).unwrap();
        assert!(theirs.syn() && theirs.ack() && theirs.ece() && !theirs.fin());
        let their_checksum = theirs
            .to_header()
            .calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), payload)
            .unwrap();
        assert_eq!(packet.checksum(), their_checksum);
        // Re-parsing sees the padded options, which then re-emit identically.
        assert_eq!(TcpRepr::parse(&packet, SRC, DST).unwrap().options.len(), 8);
    }

    #[test]
    fn every_flag_matches_etherparse() {
        let bytes = data_segment(b"x");
        for bit in 0..9 {
            let flag = TcpFlags(1 << bit);
            let mut bytes = bytes.clone();
            let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
            packet.set_flags(flag);
            packet.fill_checksum(SRC, DST);
            let theirs = TcpHeaderSlice::from_slice(&bytes).unwrap();
            let seen = [
                theirs.fin(),
                theirs.syn(),
                theirs.rst(),
                theirs.psh(),
                theirs.ack(),
                theirs.urg(),
                theirs.ece(),
                theirs.cwr(),
                theirs.ns(),
            ];
            let expected: Vec<bool> = (0..9).map(|b| b == bit).collect();
            assert_eq!(seen.to_vec(), expected, "{flag:?}");
            let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
            assert_eq!(packet.header_len(), 20);
            assert_eq!(TcpRepr::parse(&packet, SRC, DST).unwrap().flags, flag);
        }
    }

    #[test]
    fn truncated_below_the_header_and_options() {
        let bytes = syn_segment();
        for len in 0..40 {
            assert_eq!(
                TcpPacket::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated,
                "len {len}"
            );
        }
        assert!(TcpPacket::new_checked(&bytes[..40]).is_ok());
    }

    #[test]
    fn data_offset_below_five_is_malformed() {
        let good = data_segment(b"abcd");
        for offset in 0..5u8 {
            let mut bytes = good.clone();
            bytes[12] = (offset << 4) | (bytes[12] & 0x0f);
            assert_eq!(
                TcpPacket::new_checked(&bytes[..]).unwrap_err(),
                Error::Malformed
            );
        }
    }

    #[test]
    fn wrong_checksum_is_malformed() {
        let good = syn_segment();
        for byte in 0..good.len() {
            if byte == 12 {
                continue; // the data offset: check_len's business
            }
            let mut bytes = good.clone();
            bytes[byte] ^= 0x04;
            let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
            assert!(!packet.verify_checksum(SRC, DST), "byte {byte}");
            assert_eq!(
                TcpRepr::parse(&packet, SRC, DST),
                Err(Error::Malformed),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn reserved_bits_are_kept_by_the_packet_and_refused_by_the_repr() {
        let mut bytes = data_segment(b"abc");
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        packet.set_reserved_bits(0b101);
        packet.set_flags(TcpFlags::FIN | TcpFlags::ACK);
        packet.set_header_len(20);
        packet.fill_checksum(SRC, DST);
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.reserved_bits(), 0b101);
        assert_eq!(packet.flags(), TcpFlags::FIN | TcpFlags::ACK);
        assert!(packet.verify_checksum(SRC, DST));
        assert_eq!(TcpRepr::parse(&packet, SRC, DST), Err(Error::Unsupported));
    }

    #[test]
    fn setters_round_trip_through_getters() {
        let mut bytes = [0u8; 30];
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(80);
        packet.set_dst_port(8080);
        packet.set_seq_number(u32::MAX);
        packet.set_ack_number(1);
        packet.set_flags(TcpFlags::RST | TcpFlags::NS);
        packet.set_header_len(24);
        packet.set_window_len(0);
        packet.set_urgent_at(0xffff);
        packet.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        packet.payload_mut().copy_from_slice(&[7; 6]);
        packet.fill_checksum(SRC, DST);
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!((packet.src_port(), packet.dst_port()), (80, 8080));
        assert_eq!((packet.seq_number(), packet.ack_number()), (u32::MAX, 1));
        assert_eq!(
            (packet.flags(), packet.header_len()),
            (TcpFlags::RST | TcpFlags::NS, 24)
        );
        assert_eq!((packet.window_len(), packet.urgent_at()), (0, 0xffff));
        assert_eq!(
            (packet.options(), packet.payload()),
            (&[1u8, 1, 1, 0][..], &[7u8; 6][..])
        );
        assert!(packet.verify_checksum(SRC, DST));
        assert_eq!(packet.into_inner().len(), 30);
    }

    #[test]
    fn flags_algebra_and_debug() {
        let syn_ack = TcpFlags::SYN | TcpFlags::ACK;
        assert!(syn_ack.contains(TcpFlags::SYN) && syn_ack.contains(TcpFlags::ACK));
        assert!(!syn_ack.contains(TcpFlags::FIN | TcpFlags::ACK));
        assert!(syn_ack.contains(TcpFlags::NONE));
        assert_eq!(syn_ack & TcpFlags::ACK, TcpFlags::ACK);
        assert_eq!(syn_ack & !TcpFlags::SYN, TcpFlags::ACK);
        assert_eq!((!TcpFlags::NONE).0, 0x1ff);
        let mut flags = TcpFlags::FIN;
        flags |= TcpFlags::PSH;
        assert_eq!(flags, TcpFlags(0x009));
        assert_eq!(format!("{syn_ack:?}"), "SYN|ACK");
        assert_eq!(format!("{:?}", TcpFlags::NONE), "(none)");
        assert_eq!(
            format!("{:?}", !TcpFlags::NONE),
            "FIN|SYN|RST|PSH|ACK|URG|ECE|CWR|NS"
        );
        assert_eq!(format!("{:?}", TcpFlags(0x1002)), "SYN|0x1000");
        assert_eq!(format!("{:?}", TcpFlags(0x0400)), "0x400");
    }

    #[test]
    fn oversized_buffers_never_verify() {
        let mut bytes = data_segment(&[]);
        bytes.resize(65_536, 0);
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum(SRC, DST));
    }

    #[test]
    fn largest_segment_checksums_like_etherparse() {
        let payload: Vec<u8> = (0..65_515usize - 20)
            .map(|i| (i ^ (i >> 8)) as u8)
            .collect();
        let bytes = data_segment(&payload);
        assert_eq!(bytes.len(), 65_515);
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum(SRC, DST));
        let mut copy = bytes.clone();
        TcpPacket::new_unchecked(&mut copy[..]).fill_checksum(SRC, DST);
        assert_eq!(copy, bytes);
    }
}

//! The virtio-net header a TAP device with `IFF_VNET_HDR` puts before every frame, in its
//! 12-byte `virtio_net_hdr_v1` form (virtio 1.x spec, section 5.1.6; `linux/virtio_net.h`).
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------+---------------+-------------------------------+
//! |     flags     |   gso_type    |            hdr_len            |
//! +---------------+---------------+-------------------------------+
//! |           gso_size            |          csum_start           |
//! +-------------------------------+-------------------------------+
//! |          csum_offset          |          num_buffers          |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! Every 16-bit field is little-endian (the I/O shell sets `TUNSETVNETLE`, so this holds on
//! big-endian hosts too). `flags` says whether the kernel left a checksum for us to finish
//! (`NEEDS_CSUM`, at `csum_start + csum_offset`, covering from `csum_start` to the end) or
//! already checked it (`DATA_VALID`); `gso_type` and `gso_size` describe a super-frame the
//! receiver must cut into `gso_size`-byte segments. `num_buffers` is only meaningful with
//! mergeable receive buffers, which a TAP never uses; it is zero from the kernel and should
//! be zero towards it. This module never allocates or performs I/O.

use super::{Error, Field, Rest, Result};

mod field {
    use super::{Field, Rest};
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Field = 2..4;
    pub const GSO_SIZE: Field = 4..6;
    pub const CSUM_START: Field = 6..8;
    pub const CSUM_OFFSET: Field = 8..10;
    pub const NUM_BUFFERS: Field = 10..12;
    pub const PAYLOAD: Rest = 12..;
}

/// Length of a `virtio_net_hdr_v1` in bytes.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// `flags`: the checksum from `csum_start` to the end of the frame is partial and must be
/// completed at `csum_start + csum_offset`.
pub const FLAG_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksums of the frame are already known to be good.
pub const FLAG_DATA_VALID: u8 = 2;
/// `gso_type`: the segments need the ECN CWR bit handled (TCP only).
pub const GSO_ECN: u8 = 0x80;

/// How a super-frame must be segmented (`gso_type` without the ECN bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoType {
    /// An ordinary frame (`VIRTIO_NET_HDR_GSO_NONE`).
    None,
    /// TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`).
    TcpV4,
    /// IP fragmentation of UDP (`VIRTIO_NET_HDR_GSO_UDP`, the deprecated UFO).
    Udp,
    /// TCP over IPv6 (`VIRTIO_NET_HDR_GSO_TCPV6`).
    TcpV6,
    /// UDP segmentation, IPv4 or IPv6 (`VIRTIO_NET_HDR_GSO_UDP_L4`, USO).
    UdpL4,
}

impl GsoType {
    /// The wire code, without the ECN bit.
    pub const fn code(self) -> u8 {
        match self {
            GsoType::None => 0,
            GsoType::TcpV4 => 1,
            GsoType::Udp => 3,
            GsoType::TcpV6 => 4,
            GsoType::UdpL4 => 5,
        }
    }

    /// Reads a wire code (the ECN bit already removed); `None` for codes vxtap does not know.
    pub const fn from_code(code: u8) -> Option<GsoType> {
        match code {
            0 => Some(GsoType::None),
            1 => Some(GsoType::TcpV4),
            3 => Some(GsoType::Udp),
            4 => Some(GsoType::TcpV6),
            5 => Some(GsoType::UdpL4),
            _ => None,
        }
    }
}

/// A read/write wrapper around a virtio-net header and the frame after it.
#[derive(Debug, Clone)]
pub struct VirtioNetHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VirtioNetHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> VirtioNetHeader<T> {
        VirtioNetHeader { buffer }
    }

    /// Wraps untrusted input, checking that the header is present.
    pub fn new_checked(buffer: T) -> Result<VirtioNetHeader<T>> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
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

    fn read_u16(&self, field: Field) -> u16 {
        let b = &self.buffer.as_ref()[field];
        u16::from_le_bytes([b[0], b[1]])
    }

    /// The flags byte (`FLAG_NEEDS_CSUM`, `FLAG_DATA_VALID`).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The raw `gso_type` byte, ECN bit included.
    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::GSO_TYPE]
    }

    /// Length of the headers to replicate in front of every segment.
    pub fn hdr_len(&self) -> u16 {
        self.read_u16(field::HDR_LEN)
    }

    /// Payload bytes per segment.
    pub fn gso_size(&self) -> u16 {
        self.read_u16(field::GSO_SIZE)
    }

    /// Where checksumming starts, from the beginning of the frame.
    pub fn csum_start(&self) -> u16 {
        self.read_u16(field::CSUM_START)
    }

    /// Where the checksum goes, from `csum_start`.
    pub fn csum_offset(&self) -> u16 {
        self.read_u16(field::CSUM_OFFSET)
    }

    /// Number of merged receive buffers (zero on a TAP).
    pub fn num_buffers(&self) -> u16 {
        self.read_u16(field::NUM_BUFFERS)
    }

    /// The frame after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VirtioNetHeader<T> {
    fn write_u16(&mut self, field: Field, value: u16) {
        self.buffer.as_mut()[field].copy_from_slice(&value.to_le_bytes());
    }

    /// Sets the flags byte.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the raw `gso_type` byte.
    pub fn set_gso_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::GSO_TYPE] = value;
    }

    /// Sets the length of the headers replicated per segment.
    pub fn set_hdr_len(&mut self, value: u16) {
        self.write_u16(field::HDR_LEN, value);
    }

    /// Sets the payload bytes per segment.
    pub fn set_gso_size(&mut self, value: u16) {
        self.write_u16(field::GSO_SIZE, value);
    }

    /// Sets where checksumming starts.
    pub fn set_csum_start(&mut self, value: u16) {
        self.write_u16(field::CSUM_START, value);
    }

    /// Sets where the checksum goes, from `csum_start`.
    pub fn set_csum_offset(&mut self, value: u16) {
        self.write_u16(field::CSUM_OFFSET, value);
    }

    /// Sets the number of merged receive buffers.
    pub fn set_num_buffers(&mut self, value: u16) {
        self.write_u16(field::NUM_BUFFERS, value);
    }

    /// The frame after the header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A parsed virtio-net header.
///
/// Parsing is strict so that whatever parses re-emits byte for byte: flag bits other than
/// `NEEDS_CSUM` and `DATA_VALID`, and GSO types vxtap does not know, are `Unsupported`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtioNetRepr {
    /// The checksum at `csum_start + csum_offset` is partial and must be completed.
    pub needs_csum: bool,
    /// The frame's checksums were already verified.
    pub data_valid: bool,
    /// How the frame must be segmented.
    pub gso_type: GsoType,
    /// The ECN bit of `gso_type`.
    pub gso_ecn: bool,
    /// Length of the headers replicated per segment (a hint; the kernel recomputes it).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts, from the beginning of the frame.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Merged receive buffers; zero on a TAP.
    pub num_buffers: u16,
}

impl VirtioNetRepr {
    /// The header of an ordinary frame: no checksum work, no segmentation.
    pub const NONE: VirtioNetRepr = VirtioNetRepr {
        needs_csum: false,
        data_valid: false,
        gso_type: GsoType::None,
        gso_ecn: false,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
        num_buffers: 0,
    };

    /// Parses a header, refusing flag bits and GSO types vxtap does not know.
    pub fn parse<T: AsRef<[u8]>>(header: &VirtioNetHeader<T>) -> Result<VirtioNetRepr> {
        header.check_len()?;
        let flags = header.flags();
        if flags & !(FLAG_NEEDS_CSUM | FLAG_DATA_VALID) != 0 {
            return Err(Error::Unsupported);
        }
        let raw_gso = header.gso_type();
        let gso_type = GsoType::from_code(raw_gso & !GSO_ECN).ok_or(Error::Unsupported)?;
        Ok(VirtioNetRepr {
            needs_csum: flags & FLAG_NEEDS_CSUM != 0,
            data_valid: flags & FLAG_DATA_VALID != 0,
            gso_type,
            gso_ecn: raw_gso & GSO_ECN != 0,
            hdr_len: header.hdr_len(),
            gso_size: header.gso_size(),
            csum_start: header.csum_start(),
            csum_offset: header.csum_offset(),
            num_buffers: header.num_buffers(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first `HEADER_LEN` bytes of `header`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut VirtioNetHeader<T>) {
        let mut flags = 0;
        if self.needs_csum {
            flags |= FLAG_NEEDS_CSUM;
        }
        if self.data_valid {
            flags |= FLAG_DATA_VALID;
        }
        let ecn = if self.gso_ecn { GSO_ECN } else { 0 };
        header.set_flags(flags);
        header.set_gso_type(self.gso_type.code() | ecn);
        header.set_hdr_len(self.hdr_len);
        header.set_gso_size(self.gso_size);
        header.set_csum_start(self.csum_start);
        header.set_csum_offset(self.csum_offset);
        header.set_num_buffers(self.num_buffers);
    }

    /// The header as bytes, for callers that send it from an iovec.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        self.emit(&mut VirtioNetHeader::new_unchecked(&mut bytes[..]));
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Read from a TAP (Linux 6.18, TUN_F_CSUM|TUN_F_USO4|TUN_F_USO6) in front of a UDP
    // datagram sent with UDP_SEGMENT = 1000 over IPv4: a 3-segment USO super-frame whose UDP
    // checksum (offset 6 from the UDP header at byte 34) is left for the receiver.
    const USO_HEADER: [u8; 12] = [0x01, 0x05, 42, 0, 0xe8, 0x03, 34, 0, 6, 0, 0, 0];

    #[test]
    fn parse_emit_round_trip_of_kernel_header() {
        let header = VirtioNetHeader::new_checked(&USO_HEADER[..]).unwrap();
        let repr = VirtioNetRepr::parse(&header).unwrap();
        assert_eq!(
            repr,
            VirtioNetRepr {
                needs_csum: true,
                data_valid: false,
                gso_type: GsoType::UdpL4,
                gso_ecn: false,
                hdr_len: 42,
                gso_size: 1000,
                csum_start: 34,
                csum_offset: 6,
                num_buffers: 0,
            }
        );
        assert_eq!(repr.to_bytes(), USO_HEADER);
    }

    #[test]
    fn every_field_round_trips() {
        let repr = VirtioNetRepr {
            needs_csum: false,
            data_valid: true,
            gso_type: GsoType::TcpV6,
            gso_ecn: true,
            hdr_len: 0x0102,
            gso_size: 0x0304,
            csum_start: 0x0506,
            csum_offset: 0x0708,
            num_buffers: 0x090a,
        };
        let bytes = repr.to_bytes();
        assert_eq!(bytes, [2, 0x84, 2, 1, 4, 3, 6, 5, 8, 7, 0x0a, 0x09]);
        let parsed = VirtioNetRepr::parse(&VirtioNetHeader::new_checked(&bytes[..]).unwrap());
        assert_eq!(parsed, Ok(repr));
        for gso in [
            GsoType::None,
            GsoType::TcpV4,
            GsoType::Udp,
            GsoType::TcpV6,
            GsoType::UdpL4,
        ] {
            assert_eq!(GsoType::from_code(gso.code()), Some(gso));
        }
    }

    #[test]
    fn none_is_all_zero() {
        assert_eq!(VirtioNetRepr::NONE.to_bytes(), [0; HEADER_LEN]);
        assert_eq!(VirtioNetRepr::NONE.buffer_len(), HEADER_LEN);
    }

    #[test]
    fn short_buffer_is_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                VirtioNetHeader::new_checked(&USO_HEADER[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn unknown_flags_and_gso_types_are_unsupported() {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0] = 4; // VIRTIO_NET_HDR_F_RSC_INFO: never set by a TAP
        let header = VirtioNetHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(VirtioNetRepr::parse(&header), Err(Error::Unsupported));
        for code in [2u8, 6, 0x7f, 0x82] {
            let mut bytes = [0u8; HEADER_LEN];
            bytes[1] = code;
            let header = VirtioNetHeader::new_checked(&bytes[..]).unwrap();
            assert_eq!(
                VirtioNetRepr::parse(&header),
                Err(Error::Unsupported),
                "{code}"
            );
        }
    }

    #[test]
    fn payload_follows_header() {
        let mut bytes = [0u8; HEADER_LEN + 3];
        let mut header = VirtioNetHeader::new_unchecked(&mut bytes[..]);
        VirtioNetRepr::NONE.emit(&mut header);
        header.payload_mut().copy_from_slice(&[7, 8, 9]);
        assert_eq!(header.payload(), &[7, 8, 9]);
    }
}

//! Userspace segmentation (TSO and USO) and checksum completion for frames read from a TAP
//! with `IFF_VNET_HDR`, shaped for one `UDP_SEGMENT` send per superframe.
//!
//! With `TUNSETOFFLOAD` CSUM|TSO4|TSO6 (and USO4|USO6 where the kernel takes them) the kernel
//! hands the TAP reader what it would hand a NIC: frames whose TCP or UDP checksum field
//! holds only the pseudo-header sum (`NEEDS_CSUM`), and TCP or UDP superframes of up to
//! 64 KB to be cut into `gso_size`-byte segments. On the way into the tunnel we are that NIC.
//!
//! - [`finish_checksum`] completes the checksum of a frame that is not GSO, in place.
//! - [`split_tcp`] cuts a TCP superframe (`VIRTIO_NET_HDR_GSO_TCPV4`/`TCPV6`, see
//!   [`TcpSuperframe`]), [`split_udp`] a UDP one (`VIRTIO_NET_HDR_GSO_UDP_L4`, see
//!   [`UdpSuperframe`]). Each writes one header block per segment into a [`SegmentHeaders`]
//!   the caller owns: the VXLAN header, then the inner Ethernet (VLAN tags included), IP and
//!   TCP or UDP headers fixed up for that segment. Payloads are never copied: [`Segments`]
//!   names each segment's payload as a range of the frame, the caller sends
//!   `[block 0, payload 0, block 1, payload 1, ...]` as iovecs with `UDP_SEGMENT` =
//!   [`Segments::gso_size`], and the kernel cuts the concatenation back into one datagram
//!   per segment. That works because every block has the same length and every payload but
//!   the last is exactly `gso_size`.
//!
//! Each segment gets what Linux's software GSO gives it (the details are in `tcp` and `udp`):
//! from `inet_gso_segment` the IPv4 total length, identification (the superframe's for the
//! first segment, then one more per segment, wrapping) and header checksum, or from
//! `ipv6_gso_segment` the IPv6 payload length; and a full TCP or UDP checksum computed from
//! scratch (the superframe's checksum field is never read, so a wrong `csum_start` cannot
//! poison it). Everything else, IPv4 options included, is copied unchanged, as the kernel
//! does.
//!
//! The virtio-net `hdr_len` is ignored: the kernel reports the linear part of the skb there,
//! which may hold payload too, so the header length is derived from the packet itself.
//!
//! Limits of the send (Linux `udp_send_skb`), which the caller handles with
//! [`Segments::split_at`]: one `UDP_SEGMENT` send carries at most `UDP_MAX_SEGMENTS` (64 on
//! older kernels, 128 on newer ones) datagrams and at most one IP datagram's worth of bytes
//! (65507 over IPv4), and the headers added per segment mean a full 64 KB superframe needs
//! two sends; `gso_size` plus the outer headers must fit the underlay MTU; and the socket
//! must not have UDP checksums disabled (`SO_NO_CHECK` makes GSO fail with `EINVAL`).
//!
//! This module never allocates per frame, performs I/O, reads a clock or panics on any input:
//! every refusal is a [`SegmentError`].

use crate::dissect::{IpError, IpLayout, Layout};
use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::{ipv4, vxlan};
use crate::wire::{IpProtocol, Ipv4Packet, Ipv6Packet};
use core::ops::Range;

mod tcp;
mod udp;

pub use tcp::{split_tcp, TcpSuperframe};
pub use udp::{split_udp, UdpSuperframe};

#[cfg(test)]
pub(crate) mod test_frames;

/// The longest inner header block: Ethernet with two VLAN tags, IPv4 with 40 bytes of options
/// (longer than IPv6's 40-byte header) and TCP with 40 bytes of options (longer than UDP's
/// 8-byte header).
pub const MAX_INNER_HEADER_LEN: usize = ethernet::HEADER_LEN
    + ethernet::MAX_VLAN_TAGS * ethernet::VLAN_TAG_LEN
    + ipv4::MAX_HEADER_LEN
    + crate::wire::tcp::MAX_HEADER_LEN;

/// The longest header block per segment: VXLAN plus [`MAX_INNER_HEADER_LEN`] (150 bytes).
pub const MAX_HEADER_BLOCK_LEN: usize = vxlan::HEADER_LEN + MAX_INNER_HEADER_LEN;

/// The most TCP payload one superframe can carry: an IPv6 payload length of 65535 less a
/// 20-byte TCP header. (IPv4 carries at most 65495: its total length covers its header.)
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - crate::wire::tcp::HEADER_LEN;

/// The smallest MSS at which [`SegmentHeaders::new`] holds every segment of the largest
/// superframe with the longest headers. Linux never goes below 48 (`tcp_min_snd_mss`) less
/// the options of the moment, so a smaller MSS takes pathological settings; such
/// superframes, when large, are refused by [`split_tcp`] (`TooManySegments`) and can still
/// be sent in chunks with [`TcpSuperframe::split`]. (UDP header blocks are shorter: see
/// [`UdpSuperframe`] for the sizes that always fit.)
pub const MIN_FULL_MSS: usize = 32;

/// Segments [`SegmentHeaders::new`] always has room for: a [`MAX_PAYLOAD_LEN`] superframe
/// cut at [`MIN_FULL_MSS`]. Shorter headers leave room for more.
pub const MAX_SEGMENTS: usize = MAX_PAYLOAD_LEN.div_ceil(MIN_FULL_MSS);

/// Why a frame could not be segmented or its checksum finished. Small and `Copy`: these are
/// per-frame outcomes to count, not heavyweight errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SegmentError {
    /// The virtio-net header asks for no segmentation (`GsoType::None`).
    #[error("not a GSO frame")]
    NotGso,
    /// The GSO type is UDP (UFO or USO), or the IP packet does not carry TCP.
    #[error("not TCP")]
    NotTcp,
    /// The GSO type is TCP, or the IP packet does not carry UDP.
    #[error("not UDP")]
    NotUdp,
    /// The EtherType (after any VLAN tags) is neither IPv4 nor IPv6.
    #[error("not IPv4 or IPv6")]
    NotIp,
    /// The IP version nibble, the EtherType and the GSO type do not all agree.
    #[error("IP version disagrees with the EtherType or the GSO type")]
    WrongIpVersion,
    /// `gso_size` is zero.
    #[error("gso_size is zero")]
    MssZero,
    /// The frame ends inside a header, or before the length the IP header claims.
    #[error("truncated")]
    Truncated,
    /// The IPv4 IHL or the TCP data offset is below the fixed header.
    #[error("header length below the fixed header")]
    BadHeaderLen,
    /// The IP length field does not cover the headers inside it.
    #[error("IP length shorter than the headers")]
    BadLength,
    /// A well-formed frame vxtap does not segment: IPv6 extension headers, an IPv4 fragment,
    /// more than two VLAN tags, UDP fragmentation offload (UFO, `GsoType::Udp`).
    #[error("unsupported")]
    Unsupported,
    /// More segments than the header buffer has room for.
    #[error("too many segments for the header buffer")]
    TooManySegments,
    /// `csum_start + csum_offset` leaves no room for the 16-bit field in the frame, or the
    /// field lies at an odd offset from `csum_start`.
    #[error("checksum offset outside the frame")]
    BadChecksumOffset,
}

/// Completes a `NEEDS_CSUM` checksum in place: the ones-complement sum from `csum_start` to
/// the end of the frame, inverted, at `csum_start + csum_offset`. The field must hold the
/// pseudo-header sum, as the kernel leaves it; it is summed along with the rest.
///
/// A computed 0 is written as 0xffff, as Linux's `skb_checksum_help` does (`CSUM_MANGLED_0`):
/// UDP needs it (0 means "no checksum"), and for TCP and every other internet checksum both
/// forms encode zero, so the protocol need not be known.
///
/// For frames that are not GSO; superframes get their checksums from [`split_tcp`] and
/// [`split_udp`]. The frame must end where the packet ends (as a TAP read does), since every
/// byte to the end is summed.
pub fn finish_checksum(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), SegmentError> {
    let at = csum_start
        .checked_add(csum_offset)
        .filter(|at| csum_offset % 2 == 0 && at.checked_add(2).is_some_and(|e| e <= frame.len()))
        .ok_or(SegmentError::BadChecksumOffset)?;
    // `at + 2 <= len` and `csum_start <= at`, so both slices are in range.
    let sum = checksum::data(&frame[csum_start..]);
    let value = match !sum {
        0 => 0xffff,
        v => v,
    };
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// The buffer header blocks are written into, allocated once and reused for every frame.
#[derive(Debug, Clone)]
pub struct SegmentHeaders {
    buffer: Box<[u8]>,
}

impl SegmentHeaders {
    /// A buffer with room for [`MAX_SEGMENTS`] blocks of [`MAX_HEADER_BLOCK_LEN`] bytes
    /// (300 KiB): every TCP superframe with an MSS of at least [`MIN_FULL_MSS`] fits.
    pub fn new() -> SegmentHeaders {
        SegmentHeaders::with_capacity(MAX_SEGMENTS)
    }

    /// A buffer with room for `segments` blocks of [`MAX_HEADER_BLOCK_LEN`] bytes.
    pub fn with_capacity(segments: usize) -> SegmentHeaders {
        SegmentHeaders {
            buffer: vec![0; segments.saturating_mul(MAX_HEADER_BLOCK_LEN)].into_boxed_slice(),
        }
    }

    /// How many segments always fit, whatever their header length.
    pub fn capacity(&self) -> usize {
        self.buffer.len() / MAX_HEADER_BLOCK_LEN
    }

    /// How many blocks of `block_len` bytes fit.
    fn room_for(&self, block_len: usize) -> usize {
        self.buffer.len().checked_div(block_len).unwrap_or(0)
    }
}

impl Default for SegmentHeaders {
    fn default() -> Self {
        SegmentHeaders::new()
    }
}

/// The IP packet of a superframe dissected as `layout`, which must carry `protocol` (refused
/// with `not_protocol` otherwise): Ethernet with at most two VLAN tags, then IPv4 (options
/// allowed, not a fragment) or IPv6 (no extension headers), its length within the frame.
/// `ipv6` is the IP version the GSO type demands, if it demands one. A layout of another
/// frame (another length) is refused as `Truncated` rather than trusted.
fn ip_layout(
    frame: &[u8],
    layout: &Layout,
    ipv6: Option<bool>,
    protocol: IpProtocol,
    not_protocol: SegmentError,
) -> Result<IpLayout, SegmentError> {
    if layout.len != frame.len() {
        return Err(SegmentError::Truncated);
    }
    match (layout.ethertype, ipv6) {
        (EtherType::IPV4, Some(true)) | (EtherType::IPV6, Some(false)) => {
            return Err(SegmentError::WrongIpVersion)
        }
        _ => {}
    }
    let ip = layout.ip.map_err(|e| match e {
        IpError::Truncated => SegmentError::Truncated,
        IpError::TooManyTags => SegmentError::Unsupported,
        IpError::NotIp => SegmentError::NotIp,
        IpError::WrongVersion => SegmentError::WrongIpVersion,
        IpError::BadHeaderLen => SegmentError::BadHeaderLen,
        IpError::BadLength => SegmentError::BadLength,
    })?;
    if ip.extension {
        return Err(SegmentError::Unsupported);
    }
    if ip.protocol != protocol {
        return Err(not_protocol);
    }
    if ip.fragment {
        return Err(SegmentError::Unsupported);
    }
    Ok(ip)
}

/// What the IP header of every segment shares, summed once per superframe, and the fields
/// each segment gets of its own (`inet_gso_segment`, `ipv6_gso_segment`).
#[derive(Debug, Clone, Copy)]
struct IpTemplate {
    ipv6: bool,
    /// The IPv4 header without total length, identification and checksum (0 for IPv6).
    header: u16,
    /// The superframe's IPv4 identification: the first segment's.
    ident: u16,
    /// The pseudo-header without the upper-layer length.
    pseudo: u16,
}

impl IpTemplate {
    /// Sums the superframe's IP header `ip` (bytes `l3..l4` of an [`IpLayout`]) for an
    /// upper layer of `protocol`.
    fn new(ip: &[u8], ipv6: bool, protocol: IpProtocol) -> IpTemplate {
        if ipv6 {
            return IpTemplate {
                ipv6,
                header: 0,
                ident: 0,
                pseudo: Ipv6Packet::new_unchecked(ip).pseudo_header(protocol, 0),
            };
        }
        // The header with the fields that change per segment zeroed.
        let mut scratch = [0u8; ipv4::MAX_HEADER_LEN];
        let header = &mut scratch[..ip.len()];
        header.copy_from_slice(ip);
        let mut packet = Ipv4Packet::new_unchecked(&mut *header);
        let ident = packet.ident();
        let pseudo =
            checksum::pseudo_header_v4(packet.src_addr(), packet.dst_addr(), protocol.0, 0);
        packet.set_total_len(0);
        packet.set_ident(0);
        packet.set_checksum(0);
        IpTemplate {
            ipv6,
            header: checksum::data(header),
            ident,
            pseudo,
        }
    }

    /// Writes segment `index`'s own fields into its copy of the IP header, `ip`, for an
    /// upper-layer length (TCP or UDP header plus payload) of `l4_len`: the IPv4 total
    /// length, identification (one more per segment, wrapping) and header checksum, or the
    /// IPv6 payload length.
    #[inline]
    fn write(&self, ip: &mut [u8], index: usize, l4_len: u16) {
        if self.ipv6 {
            Ipv6Packet::new_unchecked(ip).set_payload_len(l4_len);
            return;
        }
        // No overflow: the segment is part of an IPv4 packet whose total length was a u16.
        let total_len = ip.len() as u16 + l4_len;
        let ident = self.ident.wrapping_add(index as u16);
        let mut packet = Ipv4Packet::new_unchecked(ip);
        packet.set_total_len(total_len);
        packet.set_ident(ident);
        packet.set_checksum(!checksum::combine(&[self.header, total_len, ident]));
    }

    /// The pseudo-header sum for an upper-layer length of `l4_len`.
    #[inline]
    fn pseudo_header(&self, l4_len: u16) -> u16 {
        checksum::combine(&[self.pseudo, l4_len])
    }
}

/// Writes the header blocks of segments `first`, `first + 1`, ... of a superframe into
/// `out`, as many as fit: each the `vxlan` header, then a copy of the inner headers
/// `frame[..payload.start]` that `fix` turns into segment `index`'s own (it is handed the
/// copy, at the same offsets as in the frame, the segment's index and its payload). Segment
/// `i`'s payload is `mss` bytes of `payload` from `i * mss`, the last one shorter; a
/// superframe without payload makes one segment. `TooManySegments` if not even one block
/// fits.
///
/// # Panics
///
/// If `mss` is 0 (the parsers refuse such superframes with `MssZero`).
fn cut<'o>(
    frame: &[u8],
    payload: Range<usize>,
    mss: usize,
    vxlan: &[u8; vxlan::HEADER_LEN],
    first: usize,
    out: &'o mut SegmentHeaders,
    mut fix: impl FnMut(&mut [u8], usize, &[u8]),
) -> Result<Segments<'o>, SegmentError> {
    let block_len = vxlan::HEADER_LEN + payload.start;
    let room = out.room_for(block_len);
    if room == 0 {
        return Err(SegmentError::TooManySegments);
    }
    let total = segment_count(payload.len(), mss);
    let count = total.saturating_sub(first).min(room);
    let blocks = &mut out.buffer[..count * block_len];
    let template = &frame[..payload.start];
    for (i, block) in blocks.chunks_exact_mut(block_len).enumerate() {
        let index = first + i;
        let range = segment_range(payload.start, payload.end, mss, index);
        let (vxlan_header, inner) = block.split_at_mut(vxlan::HEADER_LEN);
        vxlan_header.copy_from_slice(vxlan);
        inner.copy_from_slice(template);
        fix(inner, index, &frame[range]);
    }
    Ok(Segments {
        headers: &out.buffer[..count * block_len],
        block_len,
        first,
        count,
        mss,
        payload_start: payload.start,
        payload_end: payload.end,
    })
}

/// How many segments `payload_len` bytes make at `mss` bytes each, the last possibly
/// shorter; one when there is no payload at all.
fn segment_count(payload_len: usize, mss: usize) -> usize {
    payload_len.div_ceil(mss).max(1)
}

/// The frame range of segment `index`'s payload: `mss` bytes from `start`, the last cut at
/// `end`.
fn segment_range(start: usize, end: usize, mss: usize, index: usize) -> Range<usize> {
    let from = start.saturating_add(index.saturating_mul(mss)).min(end);
    from..from.saturating_add(mss).min(end)
}

/// One segment: its header block and where its payload lies in the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'o> {
    /// VXLAN header plus the inner headers of this segment.
    pub header: &'o [u8],
    /// This segment's payload, as a range of the frame passed to the split.
    pub payload: Range<usize>,
}

/// The segments of a superframe (or of a chunk of it): header blocks in the caller's
/// [`SegmentHeaders`], payloads as ranges of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments<'o> {
    headers: &'o [u8],
    block_len: usize,
    /// Index of the first segment here within the superframe.
    first: usize,
    count: usize,
    mss: usize,
    payload_start: usize,
    payload_end: usize,
}

impl<'o> Segments<'o> {
    /// How many segments there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none (a chunk past the end).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of every header block: VXLAN plus inner Ethernet, IP and TCP or UDP headers.
    pub fn header_block_len(&self) -> usize {
        self.block_len
    }

    /// The `UDP_SEGMENT` size: the length of the first datagram (header block plus its
    /// payload), which every datagram but the last has exactly; the last may be shorter.
    /// With a single segment it is that datagram's length. It exceeds `u16::MAX` only for an
    /// MSS no underlay MTU can carry.
    pub fn gso_size(&self) -> usize {
        self.block_len + self.payload_range(0).map_or(0, |r| r.len())
    }

    /// Bytes of the whole send: every header block and every payload.
    pub fn total_len(&self) -> usize {
        let payloads = match self
            .count
            .checked_sub(1)
            .and_then(|i| self.payload_range(i))
        {
            Some(last) => last.end - self.payload_range(0).map_or(last.end, |r| r.start),
            None => 0,
        };
        self.headers.len() + payloads
    }

    /// Every header block, back to back.
    pub fn headers(&self) -> &'o [u8] {
        self.headers
    }

    /// Segment `i` (counted from the first one here), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<Segment<'o>> {
        let payload = self.payload_range(i)?;
        let start = i * self.block_len;
        let header = self.headers.get(start..start + self.block_len)?;
        Some(Segment { header, payload })
    }

    /// The segments in order.
    pub fn iter(&self) -> impl Iterator<Item = Segment<'o>> {
        let segments = *self;
        (0..self.count).map_while(move |i| segments.get(i))
    }

    /// Where segment `i`'s payload lies in the frame, or `None` past the end.
    pub fn payload_range(&self, i: usize) -> Option<Range<usize>> {
        (i < self.count).then(|| {
            segment_range(
                self.payload_start,
                self.payload_end,
                self.mss,
                self.first + i,
            )
        })
    }

    /// The first `n` segments and the rest (`n` is capped at `len`), for sends limited in
    /// segments or bytes. Each part has its own [`gso_size`](Self::gso_size).
    pub fn split_at(&self, n: usize) -> (Segments<'o>, Segments<'o>) {
        let n = n.min(self.count);
        let (a, b) = self.headers.split_at(n * self.block_len);
        let head = Segments {
            headers: a,
            count: n,
            ..*self
        };
        let tail = Segments {
            headers: b,
            count: self.count - n,
            first: self.first + n,
            ..*self
        };
        (head, tail)
    }
}

#[cfg(test)]
mod tests {
    use super::test_frames::{inner, superframe, Shape, DST6, SRC6};
    use super::*;
    use crate::test_prng::Prng;
    use crate::wire::UdpPacket;
    use etherparse::{SlicedPacket, TransportSlice};

    /// `frame` with the L4 checksum field (at `at`) replaced by the pseudo-header sum.
    fn as_partial(mut frame: Vec<u8>, at: usize) -> Vec<u8> {
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        let len = ip.payload().len() as u16;
        let pseudo = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), ip.protocol().0, len);
        frame[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
        frame
    }

    #[test]
    fn finish_checksum_completes_kernel_frames() {
        for (name, offset) in [("tcp_data", 16), ("tcp_synack", 16), ("udp_datagram", 6)] {
            let original = inner(name);
            let mut frame = as_partial(original.clone(), 34 + offset);
            assert_ne!(frame, original);
            finish_checksum(&mut frame, 34, offset).unwrap();
            assert_eq!(frame, original, "{name}");
        }
        // IPv6: a one-segment "superframe" finished as a plain frame verifies too.
        let shape = Shape {
            ipv6: true,
            ..Shape::default()
        };
        let mut frame = superframe(&shape, b"hello, world");
        finish_checksum(&mut frame, 54, 16).unwrap();
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("TCP")
        };
        assert_eq!(tcp.checksum(), tcp.calc_checksum_ipv6(SRC6, DST6).unwrap());
    }

    #[test]
    fn finish_checksum_writes_zero_as_all_ones() {
        // A UDP datagram whose payload makes the checksum compute to zero.
        let mut frame = inner("udp_datagram");
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let len = ip.payload().len() as u16;
        let pseudo = checksum::pseudo_header_v4(src, dst, 17, len);
        frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
        // The first payload word makes everything else sum to all ones.
        frame[42..44].fill(0);
        let rest = checksum::data(&frame[34..]);
        frame[42..44].copy_from_slice(&(!rest).to_be_bytes());
        assert_eq!(checksum::data(&frame[34..]), 0xffff);
        finish_checksum(&mut frame, 34, 6).unwrap();
        assert_eq!(frame[40..42], [0xff, 0xff]);
        let udp = UdpPacket::new_checked(&frame[34..]).unwrap();
        assert!(udp.verify_checksum(src, dst));
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("UDP")
        };
        assert_eq!(u.checksum(), 0xffff);
        assert_eq!(
            u.to_header()
                .calc_checksum_ipv4_raw(src.octets(), dst.octets(), u.payload())
                .unwrap(),
            0xffff
        );
    }

    #[test]
    fn finish_checksum_refuses_fields_outside_the_frame() {
        let mut frame = vec![0u8; 40];
        for (start, offset) in [
            (41, 0),
            (38, 2),
            (39, 0),
            (0, 39),
            (0, 1),
            (2, 15),
            (usize::MAX, 2),
            (2, usize::MAX - 1),
        ] {
            assert_eq!(
                finish_checksum(&mut frame, start, offset),
                Err(SegmentError::BadChecksumOffset),
                "{start}+{offset}"
            );
        }
        assert_eq!(frame, vec![0u8; 40], "refusals write nothing");
        assert_eq!(finish_checksum(&mut frame, 38, 0), Ok(()));
        assert_eq!(
            finish_checksum(&mut frame, 39, 0),
            Err(SegmentError::BadChecksumOffset)
        );
        assert_eq!(finish_checksum(&mut frame, 1, 2), Ok(()));
        for start in 0..=42 {
            for offset in 0..=42 {
                let _ = finish_checksum(&mut frame, start, offset);
            }
        }
    }

    #[test]
    fn finished_sums_verify_over_random_frames() {
        let mut prng = Prng(21);
        for _ in 0..500 {
            let len = 2 + prng.below(200);
            let mut frame = prng.bytes(len);
            let start = prng.below(len - 1);
            let offset = 2 * prng.below((len - start) / 2);
            let pseudo = u16::from_be_bytes([frame[start + offset], frame[start + offset + 1]]);
            finish_checksum(&mut frame, start, offset).unwrap();
            // A receiver adds the pseudo-header back in and must get all ones.
            assert_eq!(
                checksum::combine(&[pseudo, checksum::data(&frame[start..])]),
                0xffff
            );
        }
    }
}

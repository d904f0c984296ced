//! Userspace TCP segmentation (TSO) and checksum completion for frames read from a TAP with
//! `IFF_VNET_HDR`, shaped for one `UDP_SEGMENT` send per superframe.
//!
//! With `TUNSETOFFLOAD` CSUM|TSO4|TSO6 the kernel hands the TAP reader what it would hand a
//! NIC: frames whose TCP or UDP checksum field holds only the pseudo-header sum
//! (`NEEDS_CSUM`), and TCP superframes of up to 64 KB to be cut into `gso_size`-byte
//! segments. On the way into the tunnel we are that NIC.
//!
//! - [`finish_checksum`] completes the checksum of a frame that is not GSO, in place.
//! - [`split_tcp`] cuts a TCP superframe. It writes one header block per segment into a
//!   [`SegmentHeaders`] the caller owns: the VXLAN header, then the inner Ethernet (VLAN tags
//!   included), IP and TCP headers fixed up for that segment. Payloads are never copied:
//!   [`Segments`] names each segment's payload as a range of the frame, the caller sends
//!   `[block 0, payload 0, block 1, payload 1, ...]` as iovecs with `UDP_SEGMENT` =
//!   [`Segments::gso_size`], and the kernel cuts the concatenation back into one datagram
//!   per segment. That works because every block has the same length and every payload but
//!   the last is exactly the MSS.
//!
//! Each segment gets what Linux's software GSO (`tcp_gso_segment`, `inet_gso_segment`,
//! `ipv6_gso_segment`) gives it: IPv4 total length, identification (the superframe's for the
//! first segment, then one more per segment, wrapping) and header checksum, or the IPv6
//! payload length; the sequence number advanced by the MSS per segment; FIN and PSH only on
//! the last segment, CWR only on the first; and a full TCP checksum, computed from scratch
//! (the superframe's checksum field is never read, so a wrong `csum_start` cannot poison
//! it). Everything else, IPv4 options, TCP options, URG and the urgent pointer included, is
//! copied unchanged, as the kernel does.
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

use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType, EthernetFrame};
use crate::wire::{ipv4, tcp, vxlan, Field};
use crate::wire::{GsoType, IpProtocol, Ipv4Packet, TcpFlags, TcpPacket, VirtioNetRepr};
use core::net::Ipv6Addr;
use core::ops::Range;

/// The IPv6 fixed header, RFC 8200 section 3 (`wire` has no IPv6 module yet).
mod ipv6_field {
    use super::Field;
    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Length of the IPv6 fixed header.
const IPV6_HEADER_LEN: usize = ipv6_field::DST_ADDR.end;

/// The longest inner header block: Ethernet with two VLAN tags, IPv4 with 40 bytes of options
/// (longer than IPv6's 40-byte header) and TCP with 40 bytes of options.
pub const MAX_INNER_HEADER_LEN: usize = ethernet::HEADER_LEN
    + ethernet::MAX_VLAN_TAGS * ethernet::VLAN_TAG_LEN
    + ipv4::MAX_HEADER_LEN
    + tcp::MAX_HEADER_LEN;

/// The longest header block per segment: VXLAN plus [`MAX_INNER_HEADER_LEN`] (150 bytes).
pub const MAX_HEADER_BLOCK_LEN: usize = vxlan::HEADER_LEN + MAX_INNER_HEADER_LEN;

/// The most TCP payload one superframe can carry: an IPv6 payload length of 65535 less a
/// 20-byte TCP header. (IPv4 carries at most 65495: its total length covers its header.)
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - tcp::HEADER_LEN;

/// The smallest MSS at which [`SegmentHeaders::new`] holds every segment of the largest
/// superframe with the longest headers. Linux never goes below 48 (`tcp_min_snd_mss`) less
/// the options of the moment, so a smaller MSS takes pathological settings; such
/// superframes, when large, are refused by [`split_tcp`] (`TooManySegments`) and can still
/// be sent in chunks with [`TcpSuperframe::split`].
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
    /// more than two VLAN tags.
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
/// For frames that are not GSO; superframes get their checksums from [`split_tcp`]. The frame
/// must end where the packet ends (as a TAP read does), since every byte to the end is summed.
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

/// Cuts the TCP superframe `frame` (the bytes after the virtio-net `header`) into segments:
/// writes every segment's header block, `vxlan` first, into `out` and returns where
/// everything is. Refuses (`TooManySegments`) a superframe whose blocks do not all fit in
/// `out`; [`TcpSuperframe::split`] sends such frames in chunks.
pub fn split_tcp<'o>(
    frame: &[u8],
    header: &VirtioNetRepr,
    vxlan: &[u8; vxlan::HEADER_LEN],
    out: &'o mut SegmentHeaders,
) -> Result<Segments<'o>, SegmentError> {
    let superframe = TcpSuperframe::parse(frame, header)?;
    if superframe.segment_count() > out.room_for(superframe.header_block_len()) {
        return Err(SegmentError::TooManySegments);
    }
    superframe.split(vxlan, 0, out)
}

/// The buffer header blocks are written into, allocated once and reused for every frame.
#[derive(Debug, Clone)]
pub struct SegmentHeaders {
    buffer: Box<[u8]>,
}

impl SegmentHeaders {
    /// A buffer with room for [`MAX_SEGMENTS`] blocks of [`MAX_HEADER_BLOCK_LEN`] bytes
    /// (300 KiB): every superframe with an MSS of at least [`MIN_FULL_MSS`] fits.
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

/// A validated TCP superframe: where its headers and payload lie and how to cut it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSuperframe<'a> {
    frame: &'a [u8],
    ipv6: bool,
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the TCP header.
    l4: usize,
    /// Offset of the payload: the length of the inner headers.
    payload_start: usize,
    /// End of the IP packet; any bytes after it are link-layer padding and are not sent.
    payload_end: usize,
    mss: usize,
}

impl<'a> TcpSuperframe<'a> {
    /// Validates a superframe against its virtio-net header: a TCP GSO type with a non-zero
    /// `gso_size`, Ethernet with at most two VLAN tags, IPv4 (options allowed, not a
    /// fragment) or IPv6 (no extension headers) matching the GSO type, TCP, and lengths that
    /// agree with each other and with the frame. `hdr_len`, the checksum flags and offsets
    /// are not used (see the module docs).
    pub fn parse(frame: &'a [u8], header: &VirtioNetRepr) -> Result<Self, SegmentError> {
        let ipv6 = match header.gso_type {
            GsoType::None => return Err(SegmentError::NotGso),
            GsoType::Udp | GsoType::UdpL4 => return Err(SegmentError::NotTcp),
            GsoType::TcpV4 => false,
            GsoType::TcpV6 => true,
        };
        if header.gso_size == 0 {
            return Err(SegmentError::MssZero);
        }
        let eth = EthernetFrame::new_checked(frame).map_err(|_| SegmentError::Truncated)?;
        let vlan = eth.vlan().map_err(|e| match e {
            crate::wire::Error::Truncated => SegmentError::Truncated,
            _ => SegmentError::Unsupported,
        })?;
        let l3 = vlan.payload_offset;
        let (l4, payload_end) = match (vlan.ethertype, ipv6) {
            (EtherType::IPV4, false) => ipv4_packet(frame, l3)?,
            (EtherType::IPV6, true) => ipv6_packet(frame, l3)?,
            (EtherType::IPV4 | EtherType::IPV6, _) => return Err(SegmentError::WrongIpVersion),
            _ => return Err(SegmentError::NotIp),
        };
        // `payload_end <= frame.len()` holds, so this is in range.
        let segment = &frame[l4..payload_end];
        if segment.len() < tcp::HEADER_LEN {
            return Err(SegmentError::BadLength);
        }
        let tcp_len = TcpPacket::new_unchecked(segment).header_len();
        if tcp_len < tcp::HEADER_LEN {
            return Err(SegmentError::BadHeaderLen);
        }
        if tcp_len > segment.len() {
            return Err(SegmentError::BadLength);
        }
        Ok(TcpSuperframe {
            frame,
            ipv6,
            l3,
            l4,
            payload_start: l4 + tcp_len,
            payload_end,
            mss: usize::from(header.gso_size),
        })
    }

    /// How many segments the superframe makes: one per MSS of payload, the last possibly
    /// shorter; one when there is no payload at all.
    pub fn segment_count(&self) -> usize {
        (self.payload_end - self.payload_start)
            .div_ceil(self.mss)
            .max(1)
    }

    /// Bytes per header block: VXLAN plus the inner Ethernet, IP and TCP headers.
    pub fn header_block_len(&self) -> usize {
        vxlan::HEADER_LEN + self.payload_start
    }

    /// The MSS: payload bytes per segment, except the last.
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// Where the whole TCP payload lies in the frame.
    pub fn payload(&self) -> Range<usize> {
        self.payload_start..self.payload_end
    }

    /// Writes the header blocks of segments `first`, `first + 1`, ... into `out`, as many
    /// as fit, and returns where everything is: a chunk of the superframe, for senders whose
    /// header buffer cannot hold it all. Segments are numbered from 0; a `first` at or past
    /// the end gives no segments. `TooManySegments` if not even one block fits.
    pub fn split<'o>(
        &self,
        vxlan: &[u8; vxlan::HEADER_LEN],
        first: usize,
        out: &'o mut SegmentHeaders,
    ) -> Result<Segments<'o>, SegmentError> {
        let block_len = self.header_block_len();
        let room = out.room_for(block_len);
        if room == 0 {
            return Err(SegmentError::TooManySegments);
        }
        let total = self.segment_count();
        let count = total.saturating_sub(first).min(room);
        let blocks = &mut out.buffer[..count * block_len];
        let sums = self.fixed_sums();
        let ip_at = vxlan::HEADER_LEN + self.l3;
        let tcp_at = vxlan::HEADER_LEN + self.l4;
        let tcp_header_len = self.payload_start - self.l4;
        let template = &self.frame[..self.payload_start];
        for (i, block) in blocks.chunks_exact_mut(block_len).enumerate() {
            let index = first + i;
            let payload = self.segment_payload(index);
            // At most 65535: the segment is part of an IP packet that was.
            let tcp_len = (tcp_header_len + payload.len()) as u16;
            let (vxlan_header, inner) = block.split_at_mut(vxlan::HEADER_LEN);
            vxlan_header.copy_from_slice(vxlan);
            inner.copy_from_slice(template);

            if self.ipv6 {
                let at = ip_at + ipv6_field::PAYLOAD_LEN.start;
                block[at..at + 2].copy_from_slice(&tcp_len.to_be_bytes());
            } else {
                let mut ip = Ipv4Packet::new_unchecked(&mut block[ip_at..tcp_at]);
                let total_len = (tcp_at - ip_at) as u16 + tcp_len;
                let ident = sums.ident.wrapping_add(index as u16);
                ip.set_total_len(total_len);
                ip.set_ident(ident);
                ip.set_checksum(!checksum::combine(&[sums.ip, total_len, ident]));
            }

            // Fits: index * mss is below the payload length for every segment.
            let seq = sums.seq.wrapping_add((index * self.mss) as u32);
            let mut flags = sums.flags;
            if index + 1 < total {
                flags = flags & !(TcpFlags::FIN | TcpFlags::PSH);
            }
            if index > 0 {
                flags = flags & !TcpFlags::CWR;
            }
            let mut tcp = TcpPacket::new_unchecked(&mut block[tcp_at..]);
            tcp.set_seq_number(seq);
            tcp.set_flags(flags);
            // The whole word: flags, data offset and reserved bits.
            let offset_flags = u16::from_be_bytes([block[tcp_at + 12], block[tcp_at + 13]]);
            let sum = checksum::combine(&[
                sums.pseudo,
                tcp_len,
                sums.tcp,
                (seq >> 16) as u16,
                seq as u16,
                offset_flags,
                checksum::data(payload),
            ]);
            TcpPacket::new_unchecked(&mut block[tcp_at..]).set_checksum(!sum);
        }
        Ok(Segments {
            headers: &out.buffer[..count * block_len],
            block_len,
            first,
            count,
            mss: self.mss,
            payload_start: self.payload_start,
            payload_end: self.payload_end,
        })
    }

    /// The payload of segment `index` (which must be below `segment_count`).
    fn segment_payload(&self, index: usize) -> &'a [u8] {
        let range = segment_range(self.payload_start, self.payload_end, self.mss, index);
        &self.frame[range]
    }

    /// What stays the same in every segment, summed once per superframe.
    fn fixed_sums(&self) -> FixedSums {
        // The headers with the fields that change per segment zeroed.
        let mut scratch = [0u8; MAX_INNER_HEADER_LEN];
        let headers = &mut scratch[..self.payload_start];
        headers.copy_from_slice(&self.frame[..self.payload_start]);
        let (ip_sum, ident, pseudo) = if self.ipv6 {
            let ip = &headers[self.l3..self.l4];
            let src = Ipv6Addr::from(addr16(&ip[ipv6_field::SRC_ADDR]));
            let dst = Ipv6Addr::from(addr16(&ip[ipv6_field::DST_ADDR]));
            let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::TCP.0, 0);
            (0, 0, pseudo)
        } else {
            let mut ip = Ipv4Packet::new_unchecked(&mut headers[self.l3..self.l4]);
            let ident = ip.ident();
            let pseudo =
                checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), IpProtocol::TCP.0, 0);
            ip.set_total_len(0);
            ip.set_ident(0);
            ip.set_checksum(0);
            (checksum::data(&headers[self.l3..self.l4]), ident, pseudo)
        };
        let tcp_header = &mut headers[self.l4..];
        let mut tcp = TcpPacket::new_unchecked(&mut *tcp_header);
        let seq = tcp.seq_number();
        let flags = tcp.flags();
        tcp.set_seq_number(0);
        tcp.set_checksum(0);
        tcp_header[12..14].fill(0);
        FixedSums {
            ip: ip_sum,
            tcp: checksum::data(tcp_header),
            pseudo,
            ident,
            seq,
            flags,
        }
    }
}

/// Partial sums and starting values shared by every segment of a superframe.
struct FixedSums {
    /// IPv4 header without total length, identification and checksum.
    ip: u16,
    /// TCP header without sequence number, offset/flags word and checksum.
    tcp: u16,
    /// Pseudo-header without the length.
    pseudo: u16,
    ident: u16,
    seq: u32,
    flags: TcpFlags,
}

/// Checks the IPv4 header at `l3`; returns where TCP starts and the IP packet ends.
fn ipv4_packet(frame: &[u8], l3: usize) -> Result<(usize, usize), SegmentError> {
    let bytes = frame.get(l3..).ok_or(SegmentError::Truncated)?;
    if bytes.len() < ipv4::HEADER_LEN {
        return Err(SegmentError::Truncated);
    }
    // The fixed header is present, so the getters below stay in range.
    let ip = Ipv4Packet::new_unchecked(bytes);
    if ip.version() != 4 {
        return Err(SegmentError::WrongIpVersion);
    }
    let header_len = ip.header_len();
    if header_len < ipv4::HEADER_LEN {
        return Err(SegmentError::BadHeaderLen);
    }
    if header_len > bytes.len() {
        return Err(SegmentError::Truncated);
    }
    if ip.protocol() != IpProtocol::TCP {
        return Err(SegmentError::NotTcp);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(SegmentError::Unsupported);
    }
    let total_len = usize::from(ip.total_len());
    if total_len < header_len {
        return Err(SegmentError::BadLength);
    }
    if total_len > bytes.len() {
        return Err(SegmentError::Truncated);
    }
    Ok((l3 + header_len, l3 + total_len))
}

/// Checks the IPv6 header at `l3`; returns where TCP starts and the IP packet ends.
fn ipv6_packet(frame: &[u8], l3: usize) -> Result<(usize, usize), SegmentError> {
    let bytes = frame.get(l3..).ok_or(SegmentError::Truncated)?;
    let header = bytes
        .get(..IPV6_HEADER_LEN)
        .ok_or(SegmentError::Truncated)?;
    if header[ipv6_field::VERSION] >> 4 != 6 {
        return Err(SegmentError::WrongIpVersion);
    }
    match header[ipv6_field::NEXT_HEADER] {
        6 => {}
        // Hop-by-hop, routing, fragment, ESP, AH, destination options, mobility, HIP, shim6
        // and the experimental values (IANA "IPv6 Extension Header Types").
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => {
            return Err(SegmentError::Unsupported)
        }
        _ => return Err(SegmentError::NotTcp),
    }
    let b = &header[ipv6_field::PAYLOAD_LEN];
    let payload_len = usize::from(u16::from_be_bytes([b[0], b[1]]));
    if IPV6_HEADER_LEN + payload_len > bytes.len() {
        return Err(SegmentError::Truncated);
    }
    Ok((l3 + IPV6_HEADER_LEN, l3 + IPV6_HEADER_LEN + payload_len))
}

fn addr16(bytes: &[u8]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr.copy_from_slice(bytes);
    addr
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

    /// Bytes of every header block: VXLAN plus inner Ethernet, IP and TCP headers.
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
    use super::*;
    use crate::wire::{UdpPacket, VirtioNetHeader};
    use etherparse::{LinkExtSlice, NetSlice, SlicedPacket, TransportSlice};

    const VXLAN: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 42, 0];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// The inner frame of a kernel capture (outer headers 42 bytes, VXLAN 8).
    fn inner(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/kernel/{name}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()[50..].to_vec()
    }

    use crate::test_prng::Prng;

    /// How to build a superframe around the headers of the kernel's `tcp_data` capture
    /// (10.0.0.1:48080 -> 10.0.0.2:8080, PSH|ACK, TCP timestamps).
    #[derive(Debug, Clone, Copy)]
    struct Shape {
        ipv6: bool,
        timestamps: bool,
        vlan_tags: usize,
        /// Bytes of IPv4 options (NOPs), a multiple of 4.
        ip_options: usize,
        flags: TcpFlags,
        seq: u32,
        ident: u16,
    }

    impl Default for Shape {
        fn default() -> Self {
            Shape {
                ipv6: false,
                timestamps: true,
                vlan_tags: 0,
                ip_options: 0,
                flags: TcpFlags::PSH | TcpFlags::ACK,
                seq: 0x9247_2848,
                ident: 0xbac5,
            }
        }
    }

    /// A superframe as the kernel hands it to a TSO device: lengths covering `payload`, a
    /// good IPv4 header checksum and, in the TCP checksum field, the pseudo-header sum over
    /// the whole segment.
    fn superframe(shape: &Shape, payload: &[u8]) -> Vec<u8> {
        let capture = inner("tcp_data");
        let mut f = capture[..12].to_vec();
        for tag in 0..shape.vlan_tags {
            let tpid: u16 = if tag + 1 < shape.vlan_tags {
                0x88a8
            } else {
                0x8100
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + tag as u16).to_be_bytes());
        }
        let mut tcp_header = if shape.timestamps {
            capture[34..66].to_vec()
        } else {
            let mut h = capture[34..54].to_vec();
            h[12] = 0x50;
            h
        };
        tcp_header[4..8].copy_from_slice(&shape.seq.to_be_bytes());
        TcpPacket::new_unchecked(&mut tcp_header[..]).set_flags(shape.flags);
        let tcp_len = tcp_header.len() + payload.len();
        let pseudo = if shape.ipv6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            f.extend_from_slice(&[6, 64]);
            f.extend_from_slice(&SRC6);
            f.extend_from_slice(&DST6);
            checksum::pseudo_header_v6(SRC6.into(), DST6.into(), 6, tcp_len as u32)
        } else {
            f.extend_from_slice(&[0x08, 0x00]);
            let l3 = f.len();
            f.extend_from_slice(&capture[14..34]);
            f.resize(f.len() + shape.ip_options, 1); // NOP options
            let mut ip = Ipv4Packet::new_unchecked(&mut f[l3..]);
            ip.set_header_len(20 + shape.ip_options);
            ip.set_total_len((20 + shape.ip_options + tcp_len) as u16);
            ip.set_ident(shape.ident);
            ip.fill_checksum();
            checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), 6, tcp_len as u16)
        };
        tcp_header[16..18].copy_from_slice(&pseudo.to_be_bytes());
        f.extend_from_slice(&tcp_header);
        f.extend_from_slice(payload);
        f
    }

    /// The virtio-net header the kernel writes in front of `frame`.
    fn gso_header(shape: &Shape, frame: &[u8], mss: u16) -> VirtioNetRepr {
        let l4 = frame.len() - frame_payload_len(shape, frame) - tcp_header_len(shape);
        VirtioNetRepr {
            needs_csum: true,
            data_valid: false,
            gso_type: if shape.ipv6 {
                GsoType::TcpV6
            } else {
                GsoType::TcpV4
            },
            gso_ecn: shape.flags.contains(TcpFlags::CWR),
            hdr_len: (l4 + tcp_header_len(shape)) as u16,
            gso_size: mss,
            csum_start: l4 as u16,
            csum_offset: 16,
            num_buffers: 0,
        }
    }

    fn tcp_header_len(shape: &Shape) -> usize {
        if shape.timestamps {
            32
        } else {
            20
        }
    }

    fn frame_payload_len(shape: &Shape, frame: &[u8]) -> usize {
        let l3 = 14 + 4 * shape.vlan_tags;
        let ip_len = if shape.ipv6 {
            40
        } else {
            20 + shape.ip_options
        };
        frame.len() - l3 - ip_len - tcp_header_len(shape)
    }

    /// Splits with a fresh default buffer and checks every property of the result.
    fn split_and_check(shape: &Shape, payload_len: usize, mss: u16, seed: u64) -> usize {
        let payload = Prng(seed | 1).bytes(payload_len);
        let frame = superframe(shape, &payload);
        let header = gso_header(shape, &frame, mss);
        let mut out = SegmentHeaders::new();
        let segments = split_tcp(&frame, &header, &VXLAN, &mut out)
            .unwrap_or_else(|e| panic!("{shape:?} payload {payload_len} mss {mss}: {e}"));
        check_segments(&frame, &segments, usize::from(mss));
        segments.len()
    }

    /// Everything a receiver relies on, checked with etherparse and with our parsers against
    /// the superframe as etherparse reads it.
    fn check_segments(frame: &[u8], segments: &Segments, mss: usize) {
        let sliced = SlicedPacket::from_ethernet(frame).expect("superframe slices");
        let Some(TransportSlice::Tcp(super_tcp)) = &sliced.transport else {
            panic!("superframe carries TCP");
        };
        let payload = super_tcp.payload();
        let payload_start = payload.as_ptr() as usize - frame.as_ptr() as usize;
        let l3 = 14 + 4 * sliced.link_exts.len();
        let l4 = payload_start - super_tcp.header_slice().len();
        let (ipv6, ident0) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => (false, ip.header().identification()),
            Some(NetSlice::Ipv6(_)) => (true, 0),
            _ => panic!("superframe is IP"),
        };
        let block_len = 8 + payload_start;
        let n = segments.len();
        assert_eq!(n, payload.len().div_ceil(mss).max(1));
        assert_eq!(segments.header_block_len(), block_len);
        assert_eq!(segments.headers().len(), n * block_len);
        assert_eq!(
            segments.gso_size(),
            block_len + mss.min(payload.len()),
            "gso_size"
        );
        let mut joined = Vec::with_capacity(payload.len());
        let mut total_len = 0;
        for (i, seg) in segments.iter().enumerate() {
            assert_eq!(Some(&seg), segments.get(i).as_ref());
            assert_eq!(Some(seg.payload.clone()), segments.payload_range(i));
            let last = i + 1 == n;
            assert_eq!(seg.header.len(), block_len, "segment {i}");
            assert_eq!(seg.header[..8], VXLAN, "segment {i}");
            let seg_payload = &frame[seg.payload.clone()];
            let datagram_len = seg.header.len() + seg_payload.len();
            total_len += datagram_len;
            if last {
                assert!(
                    datagram_len <= segments.gso_size()
                        && (datagram_len > block_len || payload.is_empty())
                );
            } else {
                assert_eq!(datagram_len, segments.gso_size(), "segment {i}");
            }
            let mut dg = seg.header[8..].to_vec();
            dg.extend_from_slice(seg_payload);

            // Only the fields segmentation owns differ from the superframe's headers.
            let mut owned = vec![false; payload_start];
            let mut own = |r: Range<usize>| owned[r].fill(true);
            if ipv6 {
                own(l3 + 4..l3 + 6);
            } else {
                own(l3 + 2..l3 + 6);
                own(l3 + 10..l3 + 12);
            }
            own(l4 + 4..l4 + 8);
            own(l4 + 13..l4 + 14);
            own(l4 + 16..l4 + 18);
            for (at, owned) in owned.iter().enumerate() {
                if !owned {
                    assert_eq!(dg[at], frame[at], "segment {i} byte {at}");
                }
            }

            // etherparse.
            let p = SlicedPacket::from_ethernet(&dg)
                .unwrap_or_else(|e| panic!("segment {i} slices: {e:?}"));
            assert_eq!(p.link_exts.len(), sliced.link_exts.len());
            assert!(p
                .link_exts
                .iter()
                .all(|e| matches!(e, LinkExtSlice::Vlan(_))));
            let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                panic!("segment {i} carries TCP");
            };
            let expected_sum = match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
                    assert_eq!(usize::from(h.total_len()), dg.len() - l3);
                    assert_eq!(h.identification(), ident0.wrapping_add(i as u16));
                    assert!(!h.more_fragments() && h.fragments_offset().value() == 0);
                    tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap()
                }
                Some(NetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    assert_eq!(usize::from(h.payload_length()), dg.len() - l3 - 40);
                    tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap()
                }
                _ => panic!("segment {i} is IP"),
            };
            assert_eq!(tcp.checksum(), expected_sum, "segment {i} TCP checksum");
            assert_eq!(tcp.payload(), seg_payload);
            assert_eq!(
                tcp.sequence_number(),
                super_tcp
                    .sequence_number()
                    .wrapping_add(joined.len() as u32),
                "segment {i} sequence number"
            );
            assert_eq!(tcp.fin(), super_tcp.fin() && last, "segment {i} FIN");
            assert_eq!(tcp.psh(), super_tcp.psh() && last, "segment {i} PSH");
            assert_eq!(tcp.cwr(), super_tcp.cwr() && i == 0, "segment {i} CWR");
            for (theirs, ours) in [
                (tcp.syn(), super_tcp.syn()),
                (tcp.rst(), super_tcp.rst()),
                (tcp.ack(), super_tcp.ack()),
                (tcp.urg(), super_tcp.urg()),
                (tcp.ece(), super_tcp.ece()),
                (tcp.ns(), super_tcp.ns()),
            ] {
                assert_eq!(theirs, ours, "segment {i} keeps the other flags");
            }

            // Our own parsers.
            let eth = EthernetFrame::new_checked(&dg[..]).unwrap();
            assert_eq!(eth.vlan().unwrap().payload_offset, l3);
            let segment = if ipv6 {
                let segment = &dg[l3 + 40..];
                let sum = checksum::combine(&[
                    checksum::pseudo_header_v6(SRC6.into(), DST6.into(), 6, segment.len() as u32),
                    checksum::data(segment),
                ]);
                assert_eq!(sum, 0xffff, "segment {i} TCP checksum (ours)");
                segment
            } else {
                let ip = Ipv4Packet::new_checked(&dg[l3..]).unwrap();
                assert!(ip.verify_checksum(), "segment {i} IPv4 checksum (ours)");
                assert_eq!(usize::from(ip.total_len()), dg.len() - l3);
                let segment = &dg[l4..];
                let tcp = TcpPacket::new_checked(segment).unwrap();
                assert!(
                    tcp.verify_checksum(ip.src_addr(), ip.dst_addr()),
                    "segment {i} TCP checksum (ours)"
                );
                segment
            };
            let tcp = TcpPacket::new_checked(segment).unwrap();
            assert_eq!(tcp.payload(), seg_payload);
            joined.extend_from_slice(seg_payload);
        }
        assert_eq!(joined, payload, "the payloads add up to the superframe's");
        assert_eq!(segments.total_len(), total_len);
    }

    #[test]
    fn kernel_capture_enlarged_splits_at_the_mss() {
        let shape = Shape::default();
        assert_eq!(split_and_check(&shape, 20_000, 1448, 1), 14);
        assert_eq!(split_and_check(&shape, 65_495 - 32, 1448, 2), 46);
        assert_eq!(split_and_check(&shape, 2 * 1448, 1448, 3), 2);
        assert_eq!(split_and_check(&shape, 2 * 1448 + 1, 1448, 4), 3);
    }

    #[test]
    fn without_timestamp_options() {
        let shape = Shape {
            timestamps: false,
            ..Shape::default()
        };
        assert_eq!(split_and_check(&shape, 30_001, 1460, 5), 21);
    }

    #[test]
    fn ipv6_superframes() {
        for timestamps in [true, false] {
            let shape = Shape {
                ipv6: true,
                timestamps,
                ..Shape::default()
            };
            assert_eq!(split_and_check(&shape, 40_000, 1428, 6), 29);
            assert_eq!(split_and_check(&shape, 65_535 - 32, 1428, 7), 46);
        }
    }

    #[test]
    fn vlan_tags_and_ip_options_are_carried_in_every_block() {
        for vlan_tags in 0..=2 {
            for ipv6 in [false, true] {
                let shape = Shape {
                    ipv6,
                    vlan_tags,
                    ip_options: if ipv6 { 0 } else { 40 },
                    ..Shape::default()
                };
                assert_eq!(split_and_check(&shape, 5000, 1000, 8), 5);
            }
        }
    }

    #[test]
    fn fin_and_psh_only_on_the_last_cwr_only_on_the_first() {
        let all = TcpFlags::FIN
            | TcpFlags::PSH
            | TcpFlags::ACK
            | TcpFlags::CWR
            | TcpFlags::ECE
            | TcpFlags::URG
            | TcpFlags::NS;
        for flags in [
            all,
            TcpFlags::ACK,
            TcpFlags::FIN | TcpFlags::ACK,
            TcpFlags::CWR,
        ] {
            for ipv6 in [false, true] {
                let shape = Shape {
                    ipv6,
                    flags,
                    ..Shape::default()
                };
                // check_segments compares every flag with what the kernel would set.
                split_and_check(&shape, 4000, 1000, 9);
                split_and_check(&shape, 1000, 1000, 10);
                split_and_check(&shape, 0, 1000, 11);
            }
        }
    }

    #[test]
    fn odd_last_segments_and_tiny_mss() {
        let shape = Shape::default();
        for (payload, mss, count) in [
            (1, 1, 1),
            (2, 1, 2),
            (3, 1, 3),
            (3, 2, 2),
            (0, 1, 1),
            (1, 65_535, 1),
            (1447, 1448, 1),
            (1449, 1448, 2),
            (2 * 1448 - 1, 1448, 2),
            (999, 7, 143),
            (2000, 1, 2000),
        ] {
            assert_eq!(
                split_and_check(&shape, payload, mss, 12),
                count,
                "{payload}/{mss}"
            );
        }
    }

    #[test]
    fn sequence_numbers_and_ipv4_ids_wrap() {
        let shape = Shape {
            seq: u32::MAX - 1000,
            ident: u16::MAX - 1,
            ..Shape::default()
        };
        assert_eq!(split_and_check(&shape, 5000, 600, 13), 9);
    }

    #[test]
    fn the_largest_superframes_fit_the_default_buffer_at_the_smallest_full_mss() {
        const { assert!(MAX_SEGMENTS * MIN_FULL_MSS >= MAX_PAYLOAD_LEN) };
        assert_eq!(SegmentHeaders::new().capacity(), MAX_SEGMENTS);
        assert_eq!(MAX_HEADER_BLOCK_LEN, 150);
        // Longest headers and the most payload each IP version allows.
        let v4 = Shape {
            vlan_tags: 2,
            ip_options: 40,
            ..Shape::default()
        };
        let v6 = Shape {
            ipv6: true,
            vlan_tags: 2,
            ..Shape::default()
        };
        let v4_payload = 65_535 - 60 - 32;
        assert_eq!(
            split_and_check(&v4, v4_payload, MIN_FULL_MSS as u16, 14),
            v4_payload.div_ceil(MIN_FULL_MSS)
        );
        let v6_payload = 65_535 - 32;
        assert_eq!(
            split_and_check(&v6, v6_payload, MIN_FULL_MSS as u16, 15),
            v6_payload.div_ceil(MIN_FULL_MSS)
        );
        let no_options = Shape {
            ipv6: true,
            timestamps: false,
            ..Shape::default()
        };
        assert_eq!(
            split_and_check(&no_options, MAX_PAYLOAD_LEN, MIN_FULL_MSS as u16, 16),
            MAX_SEGMENTS
        );
    }

    #[test]
    fn many_mss_values_and_sizes() {
        let mut prng = Prng(0x5eed);
        let mut out = SegmentHeaders::new();
        for case in 0..400 {
            let ipv6 = prng.below(2) == 1;
            let shape = Shape {
                ipv6,
                timestamps: prng.below(2) == 1,
                vlan_tags: prng.below(3),
                ip_options: if ipv6 { 0 } else { 4 * prng.below(11) },
                flags: TcpFlags(prng.below(0x200) as u16) & !(TcpFlags::SYN | TcpFlags::RST)
                    | TcpFlags::ACK,
                seq: prng.next() as u32,
                ident: prng.next() as u16,
            };
            let max_payload = 65_535 - 60 - 32;
            let payload_len = match prng.below(4) {
                0 => prng.below(3000),
                1 => max_payload - prng.below(100),
                _ => prng.below(max_payload + 1),
            };
            let mss = match prng.below(4) {
                0 => 1 + prng.below(64),
                1 => [536, 1220, 1428, 1436, 1448, 1460, 8948, 65_535][prng.below(8)],
                _ => 1 + prng.below(9000),
            };
            let payload = prng.bytes(payload_len);
            let frame = superframe(&shape, &payload);
            let header = gso_header(&shape, &frame, mss as u16);
            let count = payload_len.div_ceil(mss).max(1);
            let block_len = 8 + frame.len() - payload_len;
            match split_tcp(&frame, &header, &VXLAN, &mut out) {
                Ok(segments) => check_segments(&frame, &segments, mss),
                Err(SegmentError::TooManySegments) => {
                    assert!(
                        count * block_len > MAX_SEGMENTS * MAX_HEADER_BLOCK_LEN,
                        "case {case}"
                    );
                }
                Err(e) => panic!("case {case}: {shape:?} {payload_len}/{mss}: {e}"),
            }
        }
    }

    #[test]
    fn too_many_segments_and_chunks() {
        let shape = Shape::default();
        let payload = Prng(17).bytes(10_000);
        let frame = superframe(&shape, &payload);
        let header = gso_header(&shape, &frame, 100);
        let mut full_out = SegmentHeaders::new();
        let full = split_tcp(&frame, &header, &VXLAN, &mut full_out).unwrap();
        assert_eq!(full.len(), 100);

        // 3 blocks of the longest headers hold 6 of these (74 bytes each).
        let mut small = SegmentHeaders::with_capacity(3);
        assert_eq!(small.capacity(), 3);
        assert_eq!(
            split_tcp(&frame, &header, &VXLAN, &mut small),
            Err(SegmentError::TooManySegments)
        );
        let superframe = TcpSuperframe::parse(&frame, &header).unwrap();
        assert_eq!(superframe.segment_count(), 100);
        assert_eq!(superframe.header_block_len(), 74);
        assert_eq!(superframe.mss(), 100);
        assert_eq!(superframe.payload(), frame.len() - 10_000..frame.len());
        let mut first = 0;
        while first < 100 {
            let chunk = superframe.split(&VXLAN, first, &mut small).unwrap();
            assert_eq!(chunk.len(), 6.min(100 - first));
            for (i, seg) in chunk.iter().enumerate() {
                assert_eq!(Some(seg), full.get(first + i), "segment {}", first + i);
            }
            first += chunk.len();
        }
        assert!(superframe
            .split(&VXLAN, 100, &mut small)
            .unwrap()
            .is_empty());
        assert!(superframe
            .split(&VXLAN, usize::MAX, &mut small)
            .unwrap()
            .is_empty());
        let mut none = SegmentHeaders::with_capacity(0);
        assert_eq!(
            superframe.split(&VXLAN, 0, &mut none),
            Err(SegmentError::TooManySegments)
        );
    }

    #[test]
    fn split_at_cuts_sends() {
        let shape = Shape::default();
        let payload = Prng(18).bytes(64_000);
        let frame = superframe(&shape, &payload);
        let header = gso_header(&shape, &frame, 1448);
        let mut out = SegmentHeaders::new();
        let all = split_tcp(&frame, &header, &VXLAN, &mut out).unwrap();
        // A full superframe is more than one UDP datagram can carry.
        assert!(all.total_len() > 65_507);
        let per_send = 65_507 / all.gso_size();
        let (head, tail) = all.split_at(per_send);
        assert_eq!((head.len(), tail.len()), (per_send, all.len() - per_send));
        assert!(head.total_len() <= 65_507 && tail.total_len() <= 65_507);
        assert_eq!(head.total_len() + tail.total_len(), all.total_len());
        assert_eq!(
            (head.gso_size(), tail.gso_size()),
            (all.gso_size(), all.gso_size())
        );
        for i in 0..all.len() {
            let part = if i < per_send {
                head.get(i)
            } else {
                tail.get(i - per_send)
            };
            assert_eq!(part, all.get(i));
        }
        let (whole, empty) = all.split_at(usize::MAX);
        assert_eq!(
            (whole, empty.len(), empty.gso_size()),
            (all, 0, all.header_block_len())
        );
        assert_eq!(empty.get(0), None);
        assert_eq!(empty.total_len(), 0);
        // The last segment alone: gso_size is its own length.
        let (_, last) = all.split_at(all.len() - 1);
        let last_len = payload.len() - 1448 * (all.len() - 1);
        assert_eq!(last.gso_size(), all.header_block_len() + last_len);
    }

    #[test]
    fn hdr_len_csum_fields_and_padding_do_not_matter() {
        let shape = Shape::default();
        let payload = Prng(19).bytes(3000);
        let frame = superframe(&shape, &payload);
        let good = gso_header(&shape, &frame, 1000);
        let mut out = SegmentHeaders::new();
        let expected = split_tcp(&frame, &good, &VXLAN, &mut out)
            .unwrap()
            .headers()
            .to_vec();
        for hint in [
            VirtioNetRepr { hdr_len: 0, ..good },
            VirtioNetRepr {
                hdr_len: u16::MAX,
                csum_start: 3,
                csum_offset: 999,
                needs_csum: false,
                data_valid: true,
                gso_ecn: true,
                ..good
            },
        ] {
            let segments = split_tcp(&frame, &hint, &VXLAN, &mut out).unwrap();
            assert_eq!(segments.headers(), &expected[..]);
        }
        // A wrong checksum field in the superframe changes nothing.
        let mut scrambled = frame.clone();
        scrambled[14 + 20 + 16] ^= 0x5a;
        let segments = split_tcp(&scrambled, &good, &VXLAN, &mut out).unwrap();
        assert_eq!(segments.headers(), &expected[..]);
        // Bytes after the IP packet are link-layer padding: not sent.
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0xee; 9]);
        let segments = split_tcp(&padded, &good, &VXLAN, &mut out).unwrap();
        assert_eq!(segments.headers(), &expected[..]);
        assert_eq!(
            segments.payload_range(2),
            Some(frame.len() - 1000..frame.len())
        );
        check_segments(&frame, &segments, 1000);
    }

    /// `frame` with `edit` applied, split with the header of the unedited frame.
    fn split_edited(shape: &Shape, edit: impl Fn(&mut Vec<u8>)) -> Result<usize, SegmentError> {
        let mut frame = superframe(shape, &[0xab; 3000]);
        let header = gso_header(shape, &frame, 1000);
        edit(&mut frame);
        let mut out = SegmentHeaders::with_capacity(8);
        split_tcp(&frame, &header, &VXLAN, &mut out).map(|s| s.len())
    }

    #[test]
    fn every_malformed_superframe_is_refused_by_name() {
        use SegmentError::*;
        let v4 = Shape::default();
        let v6 = Shape {
            ipv6: true,
            ..Shape::default()
        };
        let frame = superframe(&v4, &[0xab; 3000]);
        let header = gso_header(&v4, &frame, 1000);
        let mut out = SegmentHeaders::new();
        let mut with = |h: VirtioNetRepr| split_tcp(&frame, &h, &VXLAN, &mut out).map(|s| s.len());
        assert_eq!(with(header), Ok(3));
        assert_eq!(
            with(VirtioNetRepr {
                gso_type: GsoType::None,
                ..header
            }),
            Err(NotGso)
        );
        assert_eq!(
            with(VirtioNetRepr {
                gso_type: GsoType::Udp,
                ..header
            }),
            Err(NotTcp)
        );
        assert_eq!(
            with(VirtioNetRepr {
                gso_type: GsoType::UdpL4,
                ..header
            }),
            Err(NotTcp)
        );
        assert_eq!(
            with(VirtioNetRepr {
                gso_type: GsoType::TcpV6,
                ..header
            }),
            Err(WrongIpVersion)
        );
        assert_eq!(
            with(VirtioNetRepr {
                gso_size: 0,
                ..header
            }),
            Err(MssZero)
        );
        let frame6 = superframe(&v6, &[0xab; 3000]);
        let header6 = VirtioNetRepr {
            gso_type: GsoType::TcpV4,
            ..gso_header(&v6, &frame6, 1000)
        };
        assert_eq!(
            split_tcp(&frame6, &header6, &VXLAN, &mut out).map(|s| s.len()),
            Err(WrongIpVersion)
        );

        type Edit = fn(&mut Vec<u8>);
        let cases: [(&Shape, Edit, SegmentError); 19] = [
            (&v4, |f| f[12..14].copy_from_slice(&[0x08, 0x06]), NotIp),
            (&v4, |f| f[14] = 0x55, WrongIpVersion),
            (&v4, |f| f[14] = 0x44, BadHeaderLen),
            (
                &v4,
                |f| {
                    f[14] = 0x4f; // a 60-byte header, and room for 10 bytes of TCP
                    f[16..18].copy_from_slice(&70u16.to_be_bytes());
                },
                BadLength,
            ),
            (&v4, |f| f[14 + 9] = 17, NotTcp),
            (&v4, |f| f[14 + 6] |= 0x20, Unsupported), // more fragments
            (&v4, |f| f[14 + 7] = 1, Unsupported),     // fragment offset 8
            (
                &v4,
                |f| f[16..18].copy_from_slice(&19u16.to_be_bytes()),
                BadLength,
            ),
            (
                &v4,
                |f| f[16..18].copy_from_slice(&39u16.to_be_bytes()),
                BadLength,
            ),
            (
                &v4,
                |f| f[16..18].copy_from_slice(&51u16.to_be_bytes()),
                BadLength,
            ),
            (
                &v4,
                |f| f[16..18].copy_from_slice(&u16::MAX.to_be_bytes()),
                Truncated,
            ),
            (&v4, |f| f[34 + 12] = 0x40, BadHeaderLen),
            (&v4, |f| f[34 + 12] = 0x00, BadHeaderLen),
            (&v6, |f| f[14] = 0x40, WrongIpVersion),
            (&v6, |f| f[20] = 0, Unsupported),  // hop-by-hop
            (&v6, |f| f[20] = 44, Unsupported), // fragment
            (&v6, |f| f[20] = 17, NotTcp),
            (
                &v6,
                |f| f[18..20].copy_from_slice(&19u16.to_be_bytes()),
                BadLength,
            ),
            (
                &v6,
                |f| f[18..20].copy_from_slice(&u16::MAX.to_be_bytes()),
                Truncated,
            ),
        ];
        for (i, (shape, edit, error)) in cases.into_iter().enumerate() {
            assert_eq!(split_edited(shape, edit), Err(error), "case {i}");
        }
        // A data offset reaching past a short IP packet.
        let short = Shape {
            timestamps: false,
            ..Shape::default()
        };
        let mut frame = superframe(&short, &[0xab; 8]);
        let header = gso_header(&short, &frame, 4);
        frame[34 + 12] = 0xf0;
        assert_eq!(
            split_tcp(&frame, &header, &VXLAN, &mut out).map(|s| s.len()),
            Err(BadLength)
        );
        // Three VLAN tags are more than Ethernet parsing walks.
        let tagged = Shape {
            vlan_tags: 2,
            ..Shape::default()
        };
        let frame = superframe(&tagged, &[0xab; 3000]);
        let header = gso_header(&tagged, &frame, 1000);
        let mut three = frame[..12].to_vec();
        three.extend_from_slice(&[0x88, 0xa8, 0, 1]);
        three.extend_from_slice(&frame[12..]);
        assert_eq!(
            split_tcp(&three, &header, &VXLAN, &mut out).map(|s| s.len()),
            Err(Unsupported)
        );
    }

    #[test]
    fn every_prefix_of_a_superframe_is_truncated() {
        for shape in [
            Shape::default(),
            Shape {
                ipv6: true,
                vlan_tags: 2,
                ..Shape::default()
            },
            Shape {
                ip_options: 8,
                vlan_tags: 1,
                ..Shape::default()
            },
        ] {
            let frame = superframe(&shape, &[0xcd; 300]);
            let header = gso_header(&shape, &frame, 100);
            let mut out = SegmentHeaders::with_capacity(4);
            for len in 0..frame.len() {
                assert_eq!(
                    split_tcp(&frame[..len], &header, &VXLAN, &mut out).map(|s| s.len()),
                    Err(SegmentError::Truncated),
                    "{shape:?} cut at {len}"
                );
            }
            assert_eq!(
                split_tcp(&frame, &header, &VXLAN, &mut out).map(|s| s.len()),
                Ok(3)
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut prng = Prng(99);
        let mut out = SegmentHeaders::with_capacity(16);
        let good = superframe(&Shape::default(), &[0x11; 2000]);
        for _ in 0..20_000 {
            let mut frame = good.clone();
            for _ in 0..1 + prng.below(4) {
                let at = prng.below(frame.len());
                frame[at] = prng.next() as u8;
            }
            frame.truncate(prng.below(frame.len() + 1));
            let header = VirtioNetRepr {
                gso_type: [GsoType::TcpV4, GsoType::TcpV6][prng.below(2)],
                gso_size: prng.below(3000) as u16,
                ..VirtioNetRepr::NONE
            };
            if let Ok(segments) = split_tcp(&frame, &header, &VXLAN, &mut out) {
                for seg in segments.iter() {
                    assert!(seg.payload.end <= frame.len());
                }
            }
            let start = prng.below(frame.len() + 2);
            let offset = prng.below(40);
            let _ = finish_checksum(&mut frame, start, offset);
        }
    }

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

    #[test]
    fn kernel_virtio_header_round_trip_feeds_the_split() {
        let shape = Shape::default();
        let frame = superframe(&shape, &[7; 5000]);
        let bytes = gso_header(&shape, &frame, 1448).to_bytes();
        let header =
            VirtioNetRepr::parse(&VirtioNetHeader::new_checked(&bytes[..]).unwrap()).unwrap();
        let mut out = SegmentHeaders::default();
        let segments = split_tcp(&frame, &header, &VXLAN, &mut out).unwrap();
        check_segments(&frame, &segments, 1448);
        assert_eq!(segments.len(), 4);
    }
}

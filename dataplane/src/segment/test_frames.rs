//! Frames for the segmentation tests: superframes as the kernel hands them to a TAP with
//! TSO or USO on, built around the headers of captured kernel traffic.

use super::{SegmentError, SegmentHeaders, Segments};
use crate::wire::{checksum, EtherType, EthernetFrame, GsoType, Ipv4Packet, TcpFlags, TcpPacket};
use crate::wire::{ipv4, ipv6, udp, VirtioNetRepr};

pub(crate) const VXLAN: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 42, 0];
pub(crate) const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub(crate) const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// The inner frame of a kernel capture (outer headers 42 bytes, VXLAN 8).
pub(crate) fn inner(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/kernel/{name}.bin", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).unwrap()[50..].to_vec()
}

/// How to build a superframe around the headers of the kernel's `tcp_data` capture
/// (10.0.0.1:48080 -> 10.0.0.2:8080, PSH|ACK, TCP timestamps).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) ipv6: bool,
    pub(crate) timestamps: bool,
    pub(crate) vlan_tags: usize,
    /// Bytes of IPv4 options (NOPs), a multiple of 4.
    pub(crate) ip_options: usize,
    pub(crate) flags: TcpFlags,
    pub(crate) seq: u32,
    pub(crate) ident: u16,
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

/// The Ethernet header (with `vlan_tags` tags: 802.1ad outside, 802.1Q inside) and IP
/// header of a superframe whose upper layer (header and payload) is `l4_len` bytes long:
/// IPv6 from [`SRC6`] to [`DST6`], or the IPv4 header of `capture` with `ip_options` bytes of
/// NOP options, identification `ident` and a good checksum. Returns the bytes and the
/// pseudo-header sum over the whole upper layer, as the kernel leaves it in the checksum
/// field of a `NEEDS_CSUM` frame.
fn link_and_ip(
    capture: &[u8],
    vlan_tags: usize,
    ipv6: bool,
    ip_options: usize,
    ident: u16,
    l4_len: usize,
) -> (Vec<u8>, u16) {
    let protocol = capture[14 + 9];
    let mut f = capture[..12].to_vec();
    for tag in 0..vlan_tags {
        let tpid: u16 = if tag + 1 < vlan_tags { 0x88a8 } else { 0x8100 };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + tag as u16).to_be_bytes());
    }
    let pseudo = if ipv6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[protocol, 64]);
        f.extend_from_slice(&SRC6);
        f.extend_from_slice(&DST6);
        checksum::pseudo_header_v6(SRC6.into(), DST6.into(), protocol, l4_len as u32)
    } else {
        f.extend_from_slice(&[0x08, 0x00]);
        let l3 = f.len();
        f.extend_from_slice(&capture[14..34]);
        f.resize(f.len() + ip_options, 1); // NOP options
        let mut ip = Ipv4Packet::new_unchecked(&mut f[l3..]);
        ip.set_header_len(20 + ip_options);
        ip.set_total_len((20 + ip_options + l4_len) as u16);
        ip.set_ident(ident);
        ip.fill_checksum();
        checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), protocol, l4_len as u16)
    };
    (f, pseudo)
}

/// A superframe as the kernel hands it to a TSO device: lengths covering `payload`, a
/// good IPv4 header checksum and, in the TCP checksum field, the pseudo-header sum over
/// the whole segment.
pub(crate) fn superframe(shape: &Shape, payload: &[u8]) -> Vec<u8> {
    let capture = inner("tcp_data");
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
    let (mut f, pseudo) = link_and_ip(
        &capture,
        shape.vlan_tags,
        shape.ipv6,
        shape.ip_options,
        shape.ident,
        tcp_len,
    );
    tcp_header[16..18].copy_from_slice(&pseudo.to_be_bytes());
    f.extend_from_slice(&tcp_header);
    f.extend_from_slice(payload);
    f
}

/// The virtio-net header the kernel writes in front of `frame`.
pub(crate) fn gso_header(shape: &Shape, frame: &[u8], mss: u16) -> VirtioNetRepr {
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

pub(crate) fn tcp_header_len(shape: &Shape) -> usize {
    if shape.timestamps {
        32
    } else {
        20
    }
}

pub(crate) fn frame_payload_len(shape: &Shape, frame: &[u8]) -> usize {
    let l3 = 14 + 4 * shape.vlan_tags;
    let ip_len = if shape.ipv6 {
        40
    } else {
        20 + shape.ip_options
    };
    frame.len() - l3 - ip_len - tcp_header_len(shape)
}

/// How to build a USO superframe around the headers of the kernel's `udp_datagram` capture
/// (10.0.0.1:40999 -> 10.0.0.2:9999, DF set).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpShape {
    pub(crate) ipv6: bool,
    pub(crate) vlan_tags: usize,
    /// Bytes of IPv4 options (NOPs), a multiple of 4.
    pub(crate) ip_options: usize,
    pub(crate) ident: u16,
}

impl Default for UdpShape {
    fn default() -> Self {
        UdpShape {
            ipv6: false,
            vlan_tags: 0,
            ip_options: 0,
            ident: 0x1afe,
        }
    }
}

impl UdpShape {
    /// Offset of the UDP header in a frame of this shape.
    pub(crate) fn l4(&self) -> usize {
        14 + 4 * self.vlan_tags + if self.ipv6 { 40 } else { 20 + self.ip_options }
    }
}

/// A USO superframe as `udp_send_skb` builds it for a `UDP_SEGMENT` send: one UDP header
/// whose length covers all of `payload`, and in its checksum field the pseudo-header sum
/// (`NEEDS_CSUM`).
pub(crate) fn udp_superframe(shape: &UdpShape, payload: &[u8]) -> Vec<u8> {
    let capture = inner("udp_datagram");
    let udp_len = 8 + payload.len();
    let (mut f, pseudo) = link_and_ip(
        &capture,
        shape.vlan_tags,
        shape.ipv6,
        shape.ip_options,
        shape.ident,
        udp_len,
    );
    f.extend_from_slice(&capture[34..38]); // the ports
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&pseudo.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The virtio-net header the kernel writes in front of a USO `frame` of `shape`.
pub(crate) fn udp_gso_header(shape: &UdpShape, gso_size: u16) -> VirtioNetRepr {
    let l4 = shape.l4() as u16;
    VirtioNetRepr {
        needs_csum: true,
        data_valid: false,
        gso_type: GsoType::UdpL4,
        gso_ecn: false,
        hdr_len: l4 + 8,
        gso_size,
        csum_start: l4,
        csum_offset: 6,
        num_buffers: 0,
    }
}

/// Asserts that segment `index` (`segment`, Ethernet onwards) has the superframe's header
/// bytes (`frame[..payload_start]`) except where segmentation owns them: the IPv4 total
/// length, id and checksum (or the IPv6 payload length) of the IP header at `l3`, and the
/// transport ranges in `l4_owned`.
pub(crate) fn assert_headers_kept(
    segment: &[u8],
    frame: &[u8],
    payload_start: usize,
    ipv6: bool,
    l3: usize,
    l4_owned: &[core::ops::Range<usize>],
    index: usize,
) {
    let mut owned = vec![false; payload_start];
    let mut own = |range: core::ops::Range<usize>| owned[range].fill(true);
    if ipv6 {
        own(l3 + 4..l3 + 6);
    } else {
        own(l3 + 2..l3 + 6);
        own(l3 + 10..l3 + 12);
    }
    for range in l4_owned {
        own(range.clone());
    }
    for (at, owned) in owned.iter().enumerate() {
        if !owned {
            assert_eq!(segment[at], frame[at], "segment {index} byte {at}");
        }
    }
}

/// Makes the lengths of a corrupted `frame` say that the packet ends with the frame, so that
/// the garbage tests' frames still parse: the IPv4 total length (then the header checksum,
/// over whatever header length the frame now claims) or the IPv6 payload length, and with
/// `with_udp` the UDP length. Leaves alone what it cannot read: a frame that is not IPv4 or
/// IPv6, is too short for its headers or is longer than a length field holds.
pub(crate) fn repair_lengths(frame: &mut [u8], with_udp: bool) {
    let Ok(vlan) = EthernetFrame::new_checked(&*frame).and_then(|eth| eth.vlan()) else {
        return;
    };
    let l3 = vlan.payload_offset;
    let frame_len = frame.len();
    let len_from = |start: usize, min: usize| {
        frame_len
            .checked_sub(start)
            .filter(|&len| len >= min)
            .and_then(|len| u16::try_from(len).ok())
    };
    let l4 = match vlan.ethertype {
        EtherType::IPV4 => {
            let Some(total_len) = len_from(l3, ipv4::HEADER_LEN) else {
                return;
            };
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[l3..]);
            ip.set_total_len(total_len);
            let header_len = ip.header_len();
            if header_len < ipv4::HEADER_LEN || header_len > usize::from(total_len) {
                return;
            }
            ip.fill_checksum();
            l3 + header_len
        }
        EtherType::IPV6 => {
            let Some(payload_len) = len_from(l3 + ipv6::HEADER_LEN, 0) else {
                return;
            };
            frame[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
            l3 + ipv6::HEADER_LEN
        }
        _ => return,
    };
    if let Some(udp_len) = len_from(l4, udp::HEADER_LEN).filter(|_| with_udp) {
        frame[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
    }
}

/// Splits a superframe again in chunks through `small`, `split(first, small)` writing the
/// segments from `first` on as the superframe's `split` does, and asserts that every chunk
/// holds `per_chunk` segments (fewer only at the end) equal to those of the whole split
/// `full`, that no segments come from `full.len()` on and that a buffer without room for one
/// block is refused. `what` names a segment in the messages.
pub(crate) fn assert_chunks_match(
    full: &Segments,
    small: &mut SegmentHeaders,
    per_chunk: usize,
    what: &str,
    split: impl for<'o> Fn(usize, &'o mut SegmentHeaders) -> Result<Segments<'o>, SegmentError>,
) {
    let n = full.len();
    let mut first = 0;
    while first < n {
        let chunk = split(first, small).unwrap();
        assert_eq!(chunk.len(), per_chunk.min(n - first));
        for (i, seg) in chunk.iter().enumerate() {
            assert_eq!(Some(seg), full.get(first + i), "{what} {}", first + i);
        }
        first += chunk.len();
    }
    assert!(split(n, small).unwrap().is_empty());
    assert!(split(usize::MAX, small).unwrap().is_empty());
    let mut none = SegmentHeaders::with_capacity(0);
    assert_eq!(split(0, &mut none), Err(SegmentError::TooManySegments));
}

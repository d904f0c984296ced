//! UDP segmentation (USO): a `VIRTIO_NET_HDR_GSO_UDP_L4` superframe, as a `UDP_SEGMENT` send
//! leaves the kernel, cut into `gso_size`-byte datagrams as Linux's software GSO cuts it
//! (`__udp_gso_segment` under `inet_gso_segment` or `ipv6_gso_segment`).
//!
//! The superframe carries one UDP header for all of its payload. Every datagram gets a copy
//! with the same ports, its own length (8 plus its payload) and a full checksum over the
//! pseudo-header, the header and its payload, computed from scratch; a result of 0 is written
//! as 0xffff (`CSUM_MANGLED_0`), since 0 means "no checksum". The IP fields are those of the
//! parent module: USO datagrams are separate IP packets (`inet_gso_segment` fragments only
//! for UFO), so IPv4 identifications count up from the superframe's, as for TCP.
//!
//! Where vxtap differs from the kernel, it is on input a kernel never builds: the
//! superframe's UDP length field is not read (each datagram's length follows from the IP
//! length; the kernel reads the field only to adjust a checksum vxtap recomputes anyway), and
//! a superframe with no more payload than `gso_size` is sent as one datagram
//! (`__udp_gso_segment` refuses it with `EINVAL`; `udp_send_skb` marks a send as GSO only
//! when its payload exceeds `gso_size`).
//!
//! Never allocates, performs I/O or panics on any input.

use super::{cut, ip_layout, segment_count, IpTemplate, SegmentError, SegmentHeaders, Segments};
use crate::dissect::Layout;
use crate::wire::{checksum, udp, vxlan};
use crate::wire::{GsoType, IpProtocol, UdpPacket, VirtioNetRepr};
use core::ops::Range;

/// Cuts the USO superframe `frame` (the bytes after the virtio-net `header`) into
/// datagrams: writes every datagram's header block, `vxlan` first, into `out` and returns
/// where everything is. Refuses (`TooManySegments`) a superframe whose blocks do not all fit
/// in `out`; [`UdpSuperframe::split`] sends such frames in chunks.
pub fn split_udp<'o>(
    frame: &[u8],
    layout: &Layout,
    header: &VirtioNetRepr,
    vxlan: &[u8; vxlan::HEADER_LEN],
    out: &'o mut SegmentHeaders,
) -> Result<Segments<'o>, SegmentError> {
    let superframe = UdpSuperframe::parse(frame, layout, header)?;
    if superframe.segment_count() > out.room_for(superframe.header_block_len()) {
        return Err(SegmentError::TooManySegments);
    }
    superframe.split(vxlan, 0, out)
}

/// A validated USO superframe: where its headers and payload lie and how to cut it.
///
/// Its header blocks are at most 98 bytes (two VLAN tags, 60 bytes of IPv4 header), so
/// [`SegmentHeaders::new`] holds 3134 of them: every superframe at a `gso_size` of 21 or
/// more, and any of the at most 128 datagrams (`UDP_MAX_SEGMENTS`) one `UDP_SEGMENT` send
/// may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSuperframe<'a> {
    frame: &'a [u8],
    ipv6: bool,
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the UDP header.
    l4: usize,
    /// End of the IP packet; any bytes after it are link-layer padding and are not sent.
    payload_end: usize,
    gso_size: usize,
}

impl<'a> UdpSuperframe<'a> {
    /// Validates a superframe against its virtio-net header: GSO type `UdpL4` with a non-zero
    /// `gso_size`, Ethernet with at most two VLAN tags, IPv4 (options allowed, not a
    /// fragment) or IPv6 (no extension headers), UDP, and an IP length that covers the UDP
    /// header and lies within the frame. UFO (`GsoType::Udp`) is `Unsupported`. `hdr_len`,
    /// the checksum flags and offsets and the UDP length field are not used (see the module
    /// docs).
    pub fn parse(
        frame: &'a [u8],
        layout: &Layout,
        header: &VirtioNetRepr,
    ) -> Result<Self, SegmentError> {
        match header.gso_type {
            GsoType::UdpL4 => {}
            GsoType::None => return Err(SegmentError::NotGso),
            GsoType::TcpV4 | GsoType::TcpV6 => return Err(SegmentError::NotUdp),
            GsoType::Udp => return Err(SegmentError::Unsupported),
        }
        if header.gso_size == 0 {
            return Err(SegmentError::MssZero);
        }
        let ip = ip_layout(frame, layout, None, IpProtocol::UDP, SegmentError::NotUdp)?;
        if ip.end - ip.l4 < udp::HEADER_LEN {
            return Err(SegmentError::BadLength);
        }
        Ok(UdpSuperframe {
            frame,
            ipv6: ip.ipv6,
            l3: ip.l3,
            l4: ip.l4,
            payload_end: ip.end,
            gso_size: usize::from(header.gso_size),
        })
    }

    /// How many datagrams the superframe makes: one per `gso_size` bytes of payload, the
    /// last possibly shorter; one when there is no payload at all.
    pub fn segment_count(&self) -> usize {
        segment_count(self.payload_end - self.payload_start(), self.gso_size)
    }

    /// Bytes per header block: VXLAN plus the inner Ethernet, IP and UDP headers.
    pub fn header_block_len(&self) -> usize {
        vxlan::HEADER_LEN + self.payload_start()
    }

    /// UDP payload bytes per datagram, except the last.
    pub fn gso_size(&self) -> usize {
        self.gso_size
    }

    /// Where the whole UDP payload lies in the frame.
    pub fn payload(&self) -> Range<usize> {
        self.payload_start()..self.payload_end
    }

    fn payload_start(&self) -> usize {
        self.l4 + udp::HEADER_LEN
    }

    /// Writes the header blocks of datagrams `first`, `first + 1`, ... into `out`, as many
    /// as fit, and returns where everything is: a chunk of the superframe, for senders whose
    /// header buffer cannot hold it all. Datagrams are numbered from 0; a `first` at or past
    /// the end gives none. `TooManySegments` if not even one block fits.
    pub fn split<'o>(
        &self,
        vxlan: &[u8; vxlan::HEADER_LEN],
        first: usize,
        out: &'o mut SegmentHeaders,
    ) -> Result<Segments<'o>, SegmentError> {
        let ip = IpTemplate::new(&self.frame[self.l3..self.l4], self.ipv6, IpProtocol::UDP);
        let (l3, l4) = (self.l3, self.l4);
        let ports = checksum::data(&self.frame[l4..l4 + 4]);
        cut(
            self.frame,
            self.payload(),
            self.gso_size,
            vxlan,
            first,
            out,
            |headers, index, payload| {
                // At most 65535: the datagram is part of an IP packet that was.
                let udp_len = (udp::HEADER_LEN + payload.len()) as u16;
                ip.write(&mut headers[l3..l4], index, udp_len);
                // The length is in the pseudo-header and in the UDP header: summed twice.
                let sum = checksum::combine(&[
                    ip.pseudo_header(udp_len),
                    ports,
                    udp_len,
                    checksum::data(payload),
                ]);
                let mut udp = UdpPacket::new_unchecked(&mut headers[l4..]);
                udp.set_len(udp_len);
                udp.set_checksum(match !sum {
                    0 => 0xffff,
                    v => v,
                });
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::test_frames::*;
    use crate::segment::{finish_checksum, MAX_HEADER_BLOCK_LEN, MAX_SEGMENTS};
    use crate::test_prng::Prng;
    use crate::wire::{EthernetFrame, Ipv4Packet, VirtioNetHeader};
    use etherparse::{LinkExtSlice, NetSlice, SlicedPacket, TransportSlice};

    /// Splits a superframe of `payload_len` random bytes with a fresh default buffer, checks
    /// every property of the result and returns the number of datagrams.
    fn split_and_check(shape: &UdpShape, payload_len: usize, gso_size: u16, seed: u64) -> usize {
        let payload = Prng(seed | 1).bytes(payload_len);
        let frame = udp_superframe(shape, &payload);
        let header = udp_gso_header(shape, gso_size);
        let mut out = SegmentHeaders::new();
        let segments = split_udp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out)
            .unwrap_or_else(|e| panic!("{shape:?} payload {payload_len} gso {gso_size}: {e}"));
        check_datagrams(&frame, &segments, usize::from(gso_size));
        segments.len()
    }

    /// Everything a receiver relies on, checked with etherparse and with our parsers against
    /// the superframe as etherparse reads it: every datagram a well-formed frame whose
    /// headers are the superframe's but for the fields segmentation owns, with its own
    /// lengths, IPv4 id and checksums, and the payloads adding up to the superframe's.
    fn check_datagrams(frame: &[u8], segments: &Segments, gso_size: usize) {
        let sliced = SlicedPacket::from_ethernet(frame).expect("superframe slices");
        let Some(TransportSlice::Udp(super_udp)) = &sliced.transport else {
            panic!("superframe carries UDP");
        };
        let payload = super_udp.payload();
        let payload_start = payload.as_ptr() as usize - frame.as_ptr() as usize;
        let l3 = 14 + 4 * sliced.link_exts.len();
        let l4 = payload_start - 8;
        let (ipv6, ident0) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => (false, ip.header().identification()),
            Some(NetSlice::Ipv6(_)) => (true, 0),
            _ => panic!("superframe is IP"),
        };
        let block_len = 8 + payload_start;
        let n = segments.len();
        assert_eq!(n, payload.len().div_ceil(gso_size).max(1));
        assert_eq!(segments.header_block_len(), block_len);
        assert_eq!(segments.headers().len(), n * block_len);
        assert_eq!(segments.gso_size(), block_len + gso_size.min(payload.len()));
        let mut joined = Vec::with_capacity(payload.len());
        let mut total_len = 0;
        for (i, seg) in segments.iter().enumerate() {
            assert_eq!(Some(&seg), segments.get(i).as_ref());
            assert_eq!(Some(seg.payload.clone()), segments.payload_range(i));
            let last = i + 1 == n;
            assert_eq!(seg.header.len(), block_len, "datagram {i}");
            assert_eq!(seg.header[..8], VXLAN, "datagram {i}");
            let seg_payload = &frame[seg.payload.clone()];
            if last {
                assert!(seg_payload.len() <= gso_size);
                assert!(!seg_payload.is_empty() || payload.is_empty());
            } else {
                assert_eq!(seg_payload.len(), gso_size, "datagram {i}");
            }
            let datagram_len = seg.header.len() + seg_payload.len();
            total_len += datagram_len;
            let mut dg = seg.header[8..].to_vec();
            dg.extend_from_slice(seg_payload);

            // Only the fields segmentation owns differ from the superframe's headers: the IP
            // ones, the UDP length and the checksum.
            assert_headers_kept(
                &dg,
                frame,
                payload_start,
                ipv6,
                l3,
                core::slice::from_ref(&(l4 + 4..l4 + 8)),
                i,
            );

            // etherparse.
            let p = SlicedPacket::from_ethernet(&dg)
                .unwrap_or_else(|e| panic!("datagram {i} slices: {e:?}"));
            assert_eq!(p.link_exts.len(), sliced.link_exts.len());
            assert!(p
                .link_exts
                .iter()
                .all(|e| matches!(e, LinkExtSlice::Vlan(_))));
            let Some(TransportSlice::Udp(udp)) = &p.transport else {
                panic!("datagram {i} carries UDP");
            };
            assert_eq!(usize::from(udp.length()), 8 + seg_payload.len());
            assert_eq!(
                (udp.source_port(), udp.destination_port()),
                (super_udp.source_port(), super_udp.destination_port())
            );
            let expected_sum = match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
                    assert_eq!(usize::from(h.total_len()), dg.len() - l3);
                    assert_eq!(h.identification(), ident0.wrapping_add(i as u16));
                    assert!(!h.more_fragments() && h.fragments_offset().value() == 0);
                    udp.to_header()
                        .calc_checksum_ipv4_raw(h.source(), h.destination(), udp.payload())
                        .unwrap()
                }
                Some(NetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    assert_eq!(usize::from(h.payload_length()), dg.len() - l3 - 40);
                    udp.to_header()
                        .calc_checksum_ipv6_raw(h.source(), h.destination(), udp.payload())
                        .unwrap()
                }
                _ => panic!("datagram {i} is IP"),
            };
            assert_ne!(udp.checksum(), 0, "datagram {i}: a checksum, never 'none'");
            assert_eq!(udp.checksum(), expected_sum, "datagram {i} UDP checksum");
            assert_eq!(udp.payload(), seg_payload);

            // Our own parsers and the checksum helpers.
            let eth = EthernetFrame::new_checked(&dg[..]).unwrap();
            assert_eq!(eth.vlan().unwrap().payload_offset, l3);
            let udp_bytes = &dg[l4..];
            let pseudo = if ipv6 {
                checksum::pseudo_header_v6(SRC6.into(), DST6.into(), 17, udp_bytes.len() as u32)
            } else {
                let ip = Ipv4Packet::new_checked(&dg[l3..]).unwrap();
                assert!(ip.verify_checksum(), "datagram {i} IPv4 checksum (ours)");
                assert_eq!(usize::from(ip.total_len()), dg.len() - l3);
                let udp = UdpPacket::new_checked(udp_bytes).unwrap();
                assert!(
                    udp.verify_checksum(ip.src_addr(), ip.dst_addr()),
                    "datagram {i} UDP checksum (ours)"
                );
                checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), 17, udp_bytes.len() as u16)
            };
            assert_eq!(
                checksum::combine(&[pseudo, checksum::data(udp_bytes)]),
                0xffff,
                "datagram {i}: the pseudo-header and datagram sum to all ones"
            );
            let udp = UdpPacket::new_checked(udp_bytes).unwrap();
            assert_eq!(usize::from(udp.len()), udp_bytes.len());
            assert_eq!(udp.payload(), seg_payload);
            joined.extend_from_slice(seg_payload);
        }
        assert_eq!(joined, payload, "the payloads add up to the superframe's");
        assert_eq!(segments.total_len(), total_len);
    }

    #[test]
    fn a_udp_segment_send_splits_at_gso_size() {
        let shape = UdpShape::default();
        assert_eq!(split_and_check(&shape, 64_000, 1400, 1), 46);
        assert_eq!(split_and_check(&shape, 3000, 1000, 2), 3);
        assert_eq!(split_and_check(&shape, 3001, 1000, 3), 4);
        assert_eq!(split_and_check(&shape, 2999, 1000, 4), 3);
        // The most an IPv4 UDP superframe carries.
        assert_eq!(split_and_check(&shape, 65_535 - 28, 1422, 5), 47);
    }

    #[test]
    fn exact_header_fields_of_each_datagram() {
        let shape = UdpShape {
            ident: 0x1234,
            ..UdpShape::default()
        };
        let payload: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
        let frame = udp_superframe(&shape, &payload);
        let mut out = SegmentHeaders::new();
        let segments = split_udp(
            &frame,
            &Layout::dissect(&frame),
            &udp_gso_header(&shape, 1000),
            &VXLAN,
            &mut out,
        )
        .unwrap();
        assert_eq!(segments.len(), 3);
        assert_eq!(segments.header_block_len(), 8 + 14 + 20 + 8);
        assert_eq!(segments.gso_size(), 50 + 1000);
        for (i, (payload_len, ident)) in [(1000u16, 0x1234u16), (1000, 0x1235), (500, 0x1236)]
            .into_iter()
            .enumerate()
        {
            let seg = segments.get(i).unwrap();
            let start = 42 + 1000 * i;
            assert_eq!(seg.payload, start..start + usize::from(payload_len));
            let ip = &seg.header[8 + 14..8 + 34];
            assert_eq!(ip[..2], frame[14..16], "version, IHL, DSCP/ECN");
            assert_eq!(
                ip[2..4],
                (20 + 8 + payload_len).to_be_bytes(),
                "total length"
            );
            assert_eq!(ip[4..6], ident.to_be_bytes(), "identification");
            assert_eq!(ip[6..10], frame[20..24], "DF, TTL, protocol");
            assert_eq!(ip[12..20], frame[26..34], "addresses");
            let udp = &seg.header[8 + 34..];
            assert_eq!(udp[..4], [0xa0, 0x27, 0x27, 0x0f], "ports 40999 -> 9999");
            assert_eq!(udp[4..6], (8 + payload_len).to_be_bytes(), "UDP length");
            // The checksum, the long way round: RFC 768 over the pseudo-header and datagram.
            let mut pseudo = frame[26..34].to_vec();
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(8 + payload_len).to_be_bytes());
            let mut datagram = udp[..6].to_vec();
            datagram.extend_from_slice(&[0, 0]);
            datagram.extend_from_slice(&frame[seg.payload.clone()]);
            let sum = checksum::combine(&[checksum::data(&pseudo), checksum::data(&datagram)]);
            assert_eq!(udp[6..8], (!sum).to_be_bytes(), "UDP checksum");
        }
        check_datagrams(&frame, &segments, 1000);
    }

    #[test]
    fn ipv6_superframes() {
        let shape = UdpShape {
            ipv6: true,
            ..UdpShape::default()
        };
        assert_eq!(split_and_check(&shape, 40_000, 1400, 6), 29);
        // The most an IPv6 UDP superframe carries.
        assert_eq!(split_and_check(&shape, 65_535 - 8, 1402, 7), 47);
        assert_eq!(split_and_check(&shape, 1, 1402, 8), 1);
    }

    #[test]
    fn vlan_tags_and_ip_options_are_carried_in_every_block() {
        for vlan_tags in 0..=2 {
            for ipv6 in [false, true] {
                let shape = UdpShape {
                    ipv6,
                    vlan_tags,
                    ip_options: if ipv6 { 0 } else { 40 },
                    ..UdpShape::default()
                };
                assert_eq!(split_and_check(&shape, 5000, 1000, 9), 5);
                assert_eq!(split_and_check(&shape, 5001, 1000, 10), 6);
            }
        }
    }

    #[test]
    fn short_last_datagrams_and_tiny_gso_sizes() {
        for ipv6 in [false, true] {
            let shape = UdpShape {
                ipv6,
                ..UdpShape::default()
            };
            for (payload, gso_size, count) in [
                (0, 1000, 1),
                (1, 1, 1),
                (2, 1, 2),
                (3, 2, 2),
                (999, 1000, 1),
                (1000, 1000, 1),
                (1001, 1000, 2),
                (1999, 1000, 2),
                (999, 7, 143),
                (2000, 1, 2000),
                (5, 65_535, 1),
            ] {
                assert_eq!(
                    split_and_check(&shape, payload, gso_size, 11),
                    count,
                    "{payload}/{gso_size}"
                );
            }
        }
    }

    #[test]
    fn ipv4_ids_wrap() {
        let shape = UdpShape {
            ident: u16::MAX - 1,
            ..UdpShape::default()
        };
        assert_eq!(split_and_check(&shape, 5000, 600, 12), 9);
    }

    #[test]
    fn a_checksum_that_computes_to_zero_is_sent_as_all_ones() {
        for ipv6 in [false, true] {
            let shape = UdpShape {
                ipv6,
                ..UdpShape::default()
            };
            // The second datagram's first payload word makes its sum all ones, so its
            // checksum computes to 0.
            let mut payload = Prng(13).bytes(2500);
            payload[1000..1002].fill(0);
            let frame = udp_superframe(&shape, &payload);
            let header = udp_gso_header(&shape, 1000);
            let mut out = SegmentHeaders::new();
            let rest = {
                let segments =
                    split_udp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out).unwrap();
                let seg = segments.get(1).unwrap();
                let l4 = 8 + shape.l4();
                let pseudo = if ipv6 {
                    checksum::pseudo_header_v6(SRC6.into(), DST6.into(), 17, 1008)
                } else {
                    let ip = Ipv4Packet::new_unchecked(&seg.header[8 + 14..l4]);
                    checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), 17, 1008)
                };
                let mut udp = seg.header[l4..].to_vec();
                udp[6..8].fill(0);
                udp.extend_from_slice(&frame[seg.payload]);
                checksum::combine(&[pseudo, checksum::data(&udp)])
            };
            payload[1000..1002].copy_from_slice(&(!rest).to_be_bytes());
            let frame = udp_superframe(&shape, &payload);
            let segments =
                split_udp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out).unwrap();
            let block = segments.get(1).unwrap().header;
            assert_eq!(block[block.len() - 2..], [0xff, 0xff], "ipv6 {ipv6}");
            check_datagrams(&frame, &segments, 1000);
        }
    }

    #[test]
    fn many_gso_sizes_and_lengths() {
        let mut prng = Prng(0x0dd5);
        let mut out = SegmentHeaders::new();
        for case in 0..300 {
            let ipv6 = prng.below(2) == 1;
            let shape = UdpShape {
                ipv6,
                vlan_tags: prng.below(3),
                ip_options: if ipv6 { 0 } else { 4 * prng.below(11) },
                ident: prng.next() as u16,
            };
            let max_payload = 65_535 - 60 - 8;
            let payload_len = match prng.below(4) {
                0 => prng.below(3000),
                1 => max_payload - prng.below(100),
                _ => prng.below(max_payload + 1),
            };
            let gso_size = match prng.below(4) {
                0 => 1 + prng.below(64),
                1 => [508, 1200, 1252, 1400, 1422, 1472, 8972, 65_535][prng.below(8)],
                _ => 1 + prng.below(9000),
            };
            let payload = prng.bytes(payload_len);
            let frame = udp_superframe(&shape, &payload);
            let header = udp_gso_header(&shape, gso_size as u16);
            let count = payload_len.div_ceil(gso_size).max(1);
            let block_len = 8 + frame.len() - payload_len;
            match split_udp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out) {
                Ok(segments) => check_datagrams(&frame, &segments, gso_size),
                Err(SegmentError::TooManySegments) => {
                    assert!(
                        count * block_len > MAX_SEGMENTS * MAX_HEADER_BLOCK_LEN,
                        "case {case}"
                    );
                }
                Err(e) => panic!("case {case}: {shape:?} {payload_len}/{gso_size}: {e}"),
            }
        }
    }

    #[test]
    fn the_default_buffer_holds_every_superframe_from_gso_size_21() {
        // Longest headers, the most payload IPv4 allows.
        let longest = UdpShape {
            vlan_tags: 2,
            ip_options: 40,
            ..UdpShape::default()
        };
        let payload_len = 65_535 - 60 - 8;
        assert_eq!(
            split_and_check(&longest, payload_len, 21, 14),
            payload_len.div_ceil(21)
        );
        let payload = vec![0x5a; payload_len];
        let frame = udp_superframe(&longest, &payload);
        let mut out = SegmentHeaders::new();
        assert_eq!(
            split_udp(
                &frame,
                &Layout::dissect(&frame),
                &udp_gso_header(&longest, 20),
                &VXLAN,
                &mut out
            )
            .map(|s| s.len()),
            Err(SegmentError::TooManySegments)
        );
        // IPv6 with two tags: more payload, shorter blocks.
        let v6 = UdpShape {
            ipv6: true,
            vlan_tags: 2,
            ..UdpShape::default()
        };
        assert_eq!(split_and_check(&v6, 65_535 - 8, 21, 15), 3121);
        // The 128 datagrams one UDP_SEGMENT send may hold, longest headers.
        assert_eq!(split_and_check(&longest, 128 * 500, 500, 16), 128);
    }

    #[test]
    fn too_many_segments_and_chunks() {
        let shape = UdpShape::default();
        let payload = Prng(17).bytes(10_000);
        let frame = udp_superframe(&shape, &payload);
        let header = udp_gso_header(&shape, 100);
        let mut full_out = SegmentHeaders::new();
        let full = split_udp(
            &frame,
            &Layout::dissect(&frame),
            &header,
            &VXLAN,
            &mut full_out,
        )
        .unwrap();
        assert_eq!(full.len(), 100);

        // 2 blocks of the longest headers hold 6 of these (50 bytes each).
        let mut small = SegmentHeaders::with_capacity(2);
        assert_eq!(
            split_udp(
                &frame,
                &Layout::dissect(&frame),
                &header,
                &VXLAN,
                &mut small
            ),
            Err(SegmentError::TooManySegments)
        );
        let superframe = UdpSuperframe::parse(&frame, &Layout::dissect(&frame), &header).unwrap();
        assert_eq!(superframe.segment_count(), 100);
        assert_eq!(superframe.header_block_len(), 50);
        assert_eq!(superframe.gso_size(), 100);
        assert_eq!(superframe.payload(), 42..frame.len());
        assert_chunks_match(&full, &mut small, 6, "datagram", |first, out| {
            superframe.split(&VXLAN, first, out)
        });
    }

    #[test]
    fn split_at_cuts_sends() {
        let shape = UdpShape::default();
        let payload = Prng(18).bytes(64_000);
        let frame = udp_superframe(&shape, &payload);
        let mut out = SegmentHeaders::new();
        let all = split_udp(
            &frame,
            &Layout::dissect(&frame),
            &udp_gso_header(&shape, 1400),
            &VXLAN,
            &mut out,
        )
        .unwrap();
        // What the worker sends at once: as many datagrams as 65507 bytes hold.
        let per_send = 65_507 / all.gso_size();
        let (head, tail) = all.split_at(per_send);
        assert_eq!((head.len(), tail.len()), (45, 1));
        assert_eq!(head.gso_size(), all.gso_size());
        assert_eq!(tail.gso_size(), 50 + 64_000 - 45 * 1400);
        assert_eq!(head.total_len() + tail.total_len(), all.total_len());
        assert_eq!(tail.get(0), all.get(45));
    }

    #[test]
    fn hdr_len_csum_fields_udp_length_and_padding_do_not_matter() {
        let shape = UdpShape::default();
        let payload = Prng(19).bytes(3000);
        let frame = udp_superframe(&shape, &payload);
        let good = udp_gso_header(&shape, 1000);
        let mut out = SegmentHeaders::new();
        let expected = split_udp(&frame, &Layout::dissect(&frame), &good, &VXLAN, &mut out)
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
            let segments =
                split_udp(&frame, &Layout::dissect(&frame), &hint, &VXLAN, &mut out).unwrap();
            assert_eq!(segments.headers(), &expected[..]);
        }
        // A wrong checksum or length field in the superframe's UDP header changes nothing.
        for at in [34 + 4, 34 + 5, 34 + 6, 34 + 7] {
            let mut scrambled = frame.clone();
            scrambled[at] ^= 0x5a;
            let segments = split_udp(
                &scrambled,
                &Layout::dissect(&scrambled),
                &good,
                &VXLAN,
                &mut out,
            )
            .unwrap();
            assert_eq!(segments.headers(), &expected[..], "byte {at}");
        }
        // Bytes after the IP packet are link-layer padding: not sent.
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0xee; 9]);
        let segments =
            split_udp(&padded, &Layout::dissect(&padded), &good, &VXLAN, &mut out).unwrap();
        assert_eq!(segments.headers(), &expected[..]);
        assert_eq!(
            segments.payload_range(2),
            Some(frame.len() - 1000..frame.len())
        );
        check_datagrams(&frame, &segments, 1000);
    }

    /// `frame` with `edit` applied, split with the header of the unedited frame.
    fn split_edited(shape: &UdpShape, edit: impl Fn(&mut Vec<u8>)) -> Result<usize, SegmentError> {
        let mut frame = udp_superframe(shape, &[0xab; 3000]);
        let header = udp_gso_header(shape, 1000);
        edit(&mut frame);
        let mut out = SegmentHeaders::with_capacity(8);
        split_udp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out).map(|s| s.len())
    }

    #[test]
    fn every_malformed_superframe_is_refused_by_name() {
        use SegmentError::*;
        let v4 = UdpShape::default();
        let v6 = UdpShape {
            ipv6: true,
            ..UdpShape::default()
        };
        let frame = udp_superframe(&v4, &[0xab; 3000]);
        let header = udp_gso_header(&v4, 1000);
        let mut out = SegmentHeaders::new();
        let mut with = |h: VirtioNetRepr| {
            split_udp(&frame, &Layout::dissect(&frame), &h, &VXLAN, &mut out).map(|s| s.len())
        };
        assert_eq!(with(header), Ok(3));
        for (gso_type, error) in [
            (GsoType::None, NotGso),
            (GsoType::TcpV4, NotUdp),
            (GsoType::TcpV6, NotUdp),
            (GsoType::Udp, Unsupported),
        ] {
            assert_eq!(
                with(VirtioNetRepr { gso_type, ..header }),
                Err(error),
                "{gso_type:?}"
            );
        }
        assert_eq!(
            with(VirtioNetRepr {
                gso_size: 0,
                ..header
            }),
            Err(MssZero)
        );
        // A TCP superframe offered as USO, and a USO superframe offered as TSO.
        let tcp_shape = Shape::default();
        let tcp_frame = superframe(&tcp_shape, &[0xab; 3000]);
        assert_eq!(
            split_udp(
                &tcp_frame,
                &Layout::dissect(&tcp_frame),
                &header,
                &VXLAN,
                &mut out
            )
            .map(|s| s.len()),
            Err(NotUdp)
        );
        let as_tcp = VirtioNetRepr {
            gso_type: GsoType::TcpV4,
            ..header
        };
        assert_eq!(
            crate::segment::split_tcp(&frame, &Layout::dissect(&frame), &as_tcp, &VXLAN, &mut out)
                .map(|s| s.len()),
            Err(NotTcp)
        );

        type Edit = fn(&mut Vec<u8>);
        let cases: [(&UdpShape, Edit, SegmentError); 17] = [
            (&v4, |f| f[12..14].copy_from_slice(&[0x08, 0x06]), NotIp),
            (&v4, |f| f[14] = 0x55, WrongIpVersion),
            (&v4, |f| f[14] = 0x65, WrongIpVersion),
            (&v4, |f| f[14] = 0x44, BadHeaderLen),
            (&v4, |f| f[14 + 9] = 6, NotUdp),
            (&v4, |f| f[14 + 9] = 1, NotUdp),
            (&v4, |f| f[14 + 6] |= 0x20, Unsupported), // more fragments
            (&v4, |f| f[14 + 7] = 1, Unsupported),     // fragment offset 8
            (
                &v4,
                |f| f[16..18].copy_from_slice(&19u16.to_be_bytes()),
                BadLength,
            ),
            (
                &v4,
                |f| f[16..18].copy_from_slice(&27u16.to_be_bytes()),
                BadLength,
            ),
            (
                &v4,
                |f| f[16..18].copy_from_slice(&u16::MAX.to_be_bytes()),
                Truncated,
            ),
            (&v6, |f| f[14] = 0x40, WrongIpVersion),
            (&v6, |f| f[20] = 0, Unsupported),  // hop-by-hop
            (&v6, |f| f[20] = 44, Unsupported), // fragment
            (&v6, |f| f[20] = 6, NotUdp),
            (
                &v6,
                |f| f[18..20].copy_from_slice(&7u16.to_be_bytes()),
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
        // An IP length that covers the UDP header and nothing more: one empty datagram.
        assert_eq!(
            split_edited(&v4, |f| f[16..18].copy_from_slice(&28u16.to_be_bytes())),
            Ok(1)
        );
        // Three VLAN tags are more than Ethernet parsing walks.
        let tagged = UdpShape {
            vlan_tags: 2,
            ..UdpShape::default()
        };
        let frame = udp_superframe(&tagged, &[0xab; 3000]);
        let header = udp_gso_header(&tagged, 1000);
        let mut three = frame[..12].to_vec();
        three.extend_from_slice(&[0x88, 0xa8, 0, 1]);
        three.extend_from_slice(&frame[12..]);
        assert_eq!(
            split_udp(&three, &Layout::dissect(&three), &header, &VXLAN, &mut out).map(|s| s.len()),
            Err(Unsupported)
        );
    }

    #[test]
    fn every_prefix_of_a_superframe_is_truncated() {
        for shape in [
            UdpShape::default(),
            UdpShape {
                ipv6: true,
                vlan_tags: 2,
                ..UdpShape::default()
            },
            UdpShape {
                ip_options: 8,
                vlan_tags: 1,
                ..UdpShape::default()
            },
        ] {
            let frame = udp_superframe(&shape, &[0xcd; 300]);
            let header = udp_gso_header(&shape, 100);
            let mut out = SegmentHeaders::with_capacity(4);
            for len in 0..frame.len() {
                assert_eq!(
                    split_udp(
                        &frame[..len],
                        &Layout::dissect(&frame[..len]),
                        &header,
                        &VXLAN,
                        &mut out
                    )
                    .map(|s| s.len()),
                    Err(SegmentError::Truncated),
                    "{shape:?} cut at {len}"
                );
            }
            assert_eq!(
                split_udp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out)
                    .map(|s| s.len()),
                Ok(3)
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut prng = Prng(98);
        let mut out = SegmentHeaders::with_capacity(16);
        let good = [
            udp_superframe(&UdpShape::default(), &[0x11; 2000]),
            udp_superframe(
                &UdpShape {
                    ipv6: true,
                    vlan_tags: 1,
                    ..UdpShape::default()
                },
                &[0x22; 2000],
            ),
        ];
        for good in &good {
            let mut repaired = good.clone();
            repair_lengths(&mut repaired, true);
            assert_eq!(&repaired, good, "the repair leaves a sound frame as it is");
        }
        let mut ok = 0;
        for _ in 0..20_000 {
            let mut frame = good[prng.below(2)].clone();
            for _ in 0..1 + prng.below(4) {
                let at = prng.below(frame.len());
                frame[at] = prng.next() as u8;
            }
            // Half the frames are cut short, which is refused as Truncated; in the other half
            // the lengths are made to match the frame again, so that most of them split.
            if prng.below(2) == 0 {
                frame.truncate(prng.below(frame.len() + 1));
            } else {
                repair_lengths(&mut frame, true);
            }
            let header = VirtioNetRepr {
                gso_type: GsoType::UdpL4,
                gso_size: prng.below(3000) as u16,
                ..VirtioNetRepr::NONE
            };
            if let Ok(segments) =
                split_udp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out)
            {
                ok += 1;
                for seg in segments.iter() {
                    assert!(seg.payload.end <= frame.len());
                }
            }
            let start = prng.below(frame.len() + 2);
            let offset = prng.below(40);
            let _ = finish_checksum(&mut frame, start, offset);
        }
        // About 9,650 split: half the frames are cut.
        assert!(ok > 4_000, "only {ok} of 20000 splits succeeded");
    }

    #[test]
    fn kernel_virtio_header_round_trip_feeds_the_split() {
        let shape = UdpShape::default();
        let frame = udp_superframe(&shape, &[7; 5000]);
        let bytes = udp_gso_header(&shape, 1400).to_bytes();
        assert_eq!(bytes[1], 5, "VIRTIO_NET_HDR_GSO_UDP_L4");
        let header =
            VirtioNetRepr::parse(&VirtioNetHeader::new_checked(&bytes[..]).unwrap()).unwrap();
        let mut out = SegmentHeaders::default();
        let segments =
            split_udp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out).unwrap();
        check_datagrams(&frame, &segments, 1400);
        assert_eq!(segments.len(), 4);
    }

    #[test]
    fn a_kernel_datagram_finished_by_hand_matches_its_one_segment_split() {
        // The captured datagram, its checksum pending, offered as a one-datagram USO
        // superframe: the split writes exactly the checksum the kernel sent.
        let original = inner("udp_datagram");
        let mut partial = original.clone();
        let ip = Ipv4Packet::new_checked(&partial[14..]).unwrap();
        let len = ip.payload().len() as u16;
        let pseudo = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), 17, len);
        partial[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let header = udp_gso_header(&UdpShape::default(), 1400);
        let mut out = SegmentHeaders::new();
        let segments = split_udp(
            &partial,
            &Layout::dissect(&partial),
            &header,
            &VXLAN,
            &mut out,
        )
        .unwrap();
        assert_eq!(segments.len(), 1);
        let seg = segments.get(0).unwrap();
        let mut datagram = seg.header[8..].to_vec();
        datagram.extend_from_slice(&partial[seg.payload]);
        assert_eq!(datagram, original);
    }
}

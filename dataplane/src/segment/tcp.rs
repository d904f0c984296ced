//! TCP segmentation (TSO): a `VIRTIO_NET_HDR_GSO_TCPV4`/`TCPV6` superframe cut into MSS
//! segments as Linux's software GSO cuts it (`tcp_gso_segment` under `inet_gso_segment` or
//! `ipv6_gso_segment`).
//!
//! Besides the IP fields every segment gets (see the parent module), each segment's sequence
//! number is the superframe's advanced by the MSS per segment; FIN and PSH stay only on the
//! last segment, CWR only on the first; and the TCP checksum is computed in full. TCP
//! options, URG and the urgent pointer are copied unchanged, as the kernel does.
//!
//! Never allocates, performs I/O or panics on any input.

use super::{cut, ip_layout, segment_count, IpTemplate, SegmentError, SegmentHeaders, Segments};
use crate::dissect::Layout;
use crate::wire::{checksum, tcp, vxlan};
use crate::wire::{GsoType, IpProtocol, TcpFlags, TcpPacket, VirtioNetRepr};
use core::ops::Range;

/// Cuts the TCP superframe `frame` (the bytes after the virtio-net `header`) into segments:
/// writes every segment's header block, `vxlan` first, into `out` and returns where
/// everything is. Refuses (`TooManySegments`) a superframe whose blocks do not all fit in
/// `out`; [`TcpSuperframe::split`] sends such frames in chunks.
pub fn split_tcp<'o>(
    frame: &[u8],
    layout: &Layout,
    header: &VirtioNetRepr,
    vxlan: &[u8; vxlan::HEADER_LEN],
    out: &'o mut SegmentHeaders,
) -> Result<Segments<'o>, SegmentError> {
    let superframe = TcpSuperframe::parse(frame, layout, header)?;
    if superframe.segment_count() > out.room_for(superframe.header_block_len()) {
        return Err(SegmentError::TooManySegments);
    }
    superframe.split(vxlan, 0, out)
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
    /// are not used (see the parent module's docs).
    pub fn parse(
        frame: &'a [u8],
        layout: &Layout,
        header: &VirtioNetRepr,
    ) -> Result<Self, SegmentError> {
        let ipv6 = match header.gso_type {
            GsoType::None => return Err(SegmentError::NotGso),
            GsoType::Udp | GsoType::UdpL4 => return Err(SegmentError::NotTcp),
            GsoType::TcpV4 => false,
            GsoType::TcpV6 => true,
        };
        if header.gso_size == 0 {
            return Err(SegmentError::MssZero);
        }
        let ip = ip_layout(
            frame,
            layout,
            Some(ipv6),
            IpProtocol::TCP,
            SegmentError::NotTcp,
        )?;
        // `ip.end <= frame.len()` holds, so this is in range.
        let segment = &frame[ip.l4..ip.end];
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
            l3: ip.l3,
            l4: ip.l4,
            payload_start: ip.l4 + tcp_len,
            payload_end: ip.end,
            mss: usize::from(header.gso_size),
        })
    }

    /// How many segments the superframe makes: one per MSS of payload, the last possibly
    /// shorter; one when there is no payload at all.
    pub fn segment_count(&self) -> usize {
        segment_count(self.payload_end - self.payload_start, self.mss)
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
        let total = self.segment_count();
        let sums = self.fixed_sums();
        let (l3, l4) = (self.l3, self.l4);
        let tcp_header_len = self.payload_start - l4;
        cut(
            self.frame,
            self.payload(),
            self.mss,
            vxlan,
            first,
            out,
            |headers, index, payload| {
                // At most 65535: the segment is part of an IP packet that was.
                let tcp_len = (tcp_header_len + payload.len()) as u16;
                sums.ip.write(&mut headers[l3..l4], index, tcp_len);

                // Fits: index * mss is below the payload length for every segment.
                let seq = sums.seq.wrapping_add((index * self.mss) as u32);
                let mut flags = sums.flags;
                if index + 1 < total {
                    flags = flags & !(TcpFlags::FIN | TcpFlags::PSH);
                }
                if index > 0 {
                    flags = flags & !TcpFlags::CWR;
                }
                let tcp_header = &mut headers[l4..];
                let mut tcp = TcpPacket::new_unchecked(&mut *tcp_header);
                tcp.set_seq_number(seq);
                tcp.set_flags(flags);
                // The whole word: flags, data offset and reserved bits.
                let offset_flags = u16::from_be_bytes([tcp_header[12], tcp_header[13]]);
                let sum = checksum::combine(&[
                    sums.ip.pseudo_header(tcp_len),
                    sums.tcp,
                    (seq >> 16) as u16,
                    seq as u16,
                    offset_flags,
                    checksum::data(payload),
                ]);
                TcpPacket::new_unchecked(tcp_header).set_checksum(!sum);
            },
        )
    }

    /// What stays the same in every segment, summed once per superframe.
    fn fixed_sums(&self) -> FixedSums {
        // The TCP header with the fields that change per segment zeroed.
        let mut scratch = [0u8; tcp::MAX_HEADER_LEN];
        let tcp_header = &mut scratch[..self.payload_start - self.l4];
        tcp_header.copy_from_slice(&self.frame[self.l4..self.payload_start]);
        let mut tcp = TcpPacket::new_unchecked(&mut *tcp_header);
        let seq = tcp.seq_number();
        let flags = tcp.flags();
        tcp.set_seq_number(0);
        tcp.set_checksum(0);
        tcp_header[12..14].fill(0);
        FixedSums {
            ip: IpTemplate::new(&self.frame[self.l3..self.l4], self.ipv6, IpProtocol::TCP),
            tcp: checksum::data(tcp_header),
            seq,
            flags,
        }
    }
}

/// Partial sums and starting values shared by every segment of a superframe.
struct FixedSums {
    ip: IpTemplate,
    /// TCP header without sequence number, offset/flags word and checksum.
    tcp: u16,
    seq: u32,
    flags: TcpFlags,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::test_frames::*;
    use crate::segment::{
        finish_checksum, MAX_HEADER_BLOCK_LEN, MAX_PAYLOAD_LEN, MAX_SEGMENTS, MIN_FULL_MSS,
    };
    use crate::test_prng::Prng;
    use crate::wire::{EthernetFrame, Ipv4Packet, VirtioNetHeader};
    use etherparse::{LinkExtSlice, NetSlice, SlicedPacket, TransportSlice};

    /// Splits with a fresh default buffer and checks every property of the result.
    fn split_and_check(shape: &Shape, payload_len: usize, mss: u16, seed: u64) -> usize {
        let payload = Prng(seed | 1).bytes(payload_len);
        let frame = superframe(shape, &payload);
        let header = gso_header(shape, &frame, mss);
        let mut out = SegmentHeaders::new();
        let segments = split_tcp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out)
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

            // Only the fields segmentation owns differ from the superframe's headers: the IP
            // ones, the sequence number, the flags and the checksum.
            let tcp_owned = [l4 + 4..l4 + 8, l4 + 13..l4 + 14, l4 + 16..l4 + 18];
            assert_headers_kept(&dg, frame, payload_start, ipv6, l3, &tcp_owned, i);

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
            match split_tcp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out) {
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
        let full = split_tcp(
            &frame,
            &Layout::dissect(&frame),
            &header,
            &VXLAN,
            &mut full_out,
        )
        .unwrap();
        assert_eq!(full.len(), 100);

        // 3 blocks of the longest headers hold 6 of these (74 bytes each).
        let mut small = SegmentHeaders::with_capacity(3);
        assert_eq!(small.capacity(), 3);
        assert_eq!(
            split_tcp(
                &frame,
                &Layout::dissect(&frame),
                &header,
                &VXLAN,
                &mut small
            ),
            Err(SegmentError::TooManySegments)
        );
        let superframe = TcpSuperframe::parse(&frame, &Layout::dissect(&frame), &header).unwrap();
        assert_eq!(superframe.segment_count(), 100);
        assert_eq!(superframe.header_block_len(), 74);
        assert_eq!(superframe.mss(), 100);
        assert_eq!(superframe.payload(), frame.len() - 10_000..frame.len());
        assert_chunks_match(&full, &mut small, 6, "segment", |first, out| {
            superframe.split(&VXLAN, first, out)
        });
    }

    #[test]
    fn split_at_cuts_sends() {
        let shape = Shape::default();
        let payload = Prng(18).bytes(64_000);
        let frame = superframe(&shape, &payload);
        let header = gso_header(&shape, &frame, 1448);
        let mut out = SegmentHeaders::new();
        let all = split_tcp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out).unwrap();
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
        let expected = split_tcp(&frame, &Layout::dissect(&frame), &good, &VXLAN, &mut out)
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
                split_tcp(&frame, &Layout::dissect(&frame), &hint, &VXLAN, &mut out).unwrap();
            assert_eq!(segments.headers(), &expected[..]);
        }
        // A wrong checksum field in the superframe changes nothing.
        let mut scrambled = frame.clone();
        scrambled[14 + 20 + 16] ^= 0x5a;
        let segments = split_tcp(
            &scrambled,
            &Layout::dissect(&scrambled),
            &good,
            &VXLAN,
            &mut out,
        )
        .unwrap();
        assert_eq!(segments.headers(), &expected[..]);
        // Bytes after the IP packet are link-layer padding: not sent.
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0xee; 9]);
        let segments =
            split_tcp(&padded, &Layout::dissect(&padded), &good, &VXLAN, &mut out).unwrap();
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
        split_tcp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out).map(|s| s.len())
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
        let mut with = |h: VirtioNetRepr| {
            split_tcp(&frame, &Layout::dissect(&frame), &h, &VXLAN, &mut out).map(|s| s.len())
        };
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
            split_tcp(
                &frame6,
                &Layout::dissect(&frame6),
                &header6,
                &VXLAN,
                &mut out
            )
            .map(|s| s.len()),
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
            split_tcp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out).map(|s| s.len()),
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
            split_tcp(&three, &Layout::dissect(&three), &header, &VXLAN, &mut out).map(|s| s.len()),
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
                    split_tcp(
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
                split_tcp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out)
                    .map(|s| s.len()),
                Ok(3)
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut prng = Prng(99);
        let mut out = SegmentHeaders::with_capacity(16);
        let good = superframe(&Shape::default(), &[0x11; 2000]);
        let mut repaired = good.clone();
        repair_lengths(&mut repaired, false);
        assert_eq!(repaired, good, "the repair leaves a sound frame as it is");
        let mut ok = 0;
        for _ in 0..20_000 {
            let mut frame = good.clone();
            for _ in 0..1 + prng.below(4) {
                let at = prng.below(frame.len());
                frame[at] = prng.next() as u8;
            }
            // Half the frames are cut short, which is refused as Truncated; in the other half
            // the lengths are made to match the frame again, so that most of them split.
            if prng.below(2) == 0 {
                frame.truncate(prng.below(frame.len() + 1));
            } else {
                repair_lengths(&mut frame, false);
            }
            let header = VirtioNetRepr {
                gso_type: [GsoType::TcpV4, GsoType::TcpV6][prng.below(2)],
                gso_size: prng.below(3000) as u16,
                ..VirtioNetRepr::NONE
            };
            if let Ok(segments) =
                split_tcp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out)
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
        // About 4,800 split: half the frames are cut, and half the rest carry the other IP
        // version's GSO type.
        assert!(ok > 2_000, "only {ok} of 20000 splits succeeded");
    }

    #[test]
    fn kernel_virtio_header_round_trip_feeds_the_split() {
        let shape = Shape::default();
        let frame = superframe(&shape, &[7; 5000]);
        let bytes = gso_header(&shape, &frame, 1448).to_bytes();
        let header =
            VirtioNetRepr::parse(&VirtioNetHeader::new_checked(&bytes[..]).unwrap()).unwrap();
        let mut out = SegmentHeaders::default();
        let segments =
            split_tcp(&frame, &Layout::dissect(&frame), &header, &VXLAN, &mut out).unwrap();
        check_segments(&frame, &segments, 1448);
        assert_eq!(segments.len(), 4);
    }
}

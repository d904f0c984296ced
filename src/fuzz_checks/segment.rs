//! Fuzz property for frames read from a TAP with checksum and TCP and UDP segmentation
//! offloads: a 12-byte virtio-net header, then the frame. Every frame goes through both
//! splitters (the one its GSO type does not name must refuse it, as its parser does), so TSO
//! and USO superframes are both cut and checked.

use std::cell::RefCell;
use std::ops::Range;
use vxtap_dataplane::dissect::Layout;
use vxtap_dataplane::segment::{
    finish_checksum, split_tcp, split_udp, SegmentError, SegmentHeaders, Segments, TcpSuperframe,
    UdpSuperframe,
};
use vxtap_dataplane::wire::checksum;
use vxtap_dataplane::wire::{
    EtherType, EthernetFrame, GsoType, Ipv4Packet, TcpFlags, TcpPacket, UdpPacket, VirtioNetHeader,
    VirtioNetRepr,
};

const VXLAN: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 42, 0];

thread_local! {
    /// Header buffers, allocated once per thread as the runtime does: the default size, and
    /// one so small that most superframes need several chunks.
    static BUFFERS: RefCell<(SegmentHeaders, SegmentHeaders)> =
        RefCell::new((SegmentHeaders::new(), SegmentHeaders::with_capacity(1)));
}

/// See the module docs of `fuzz_checks`.
pub fn segment(data: &[u8]) {
    let Some((head, frame)) = data.split_first_chunk::<12>() else {
        return;
    };
    let raw = VirtioNetHeader::new_unchecked(&head[..]);
    finish(
        frame,
        usize::from(raw.csum_start()),
        usize::from(raw.csum_offset()),
    );
    // Headers the parser refuses still reach the splitters, with a TCP or UDP GSO type, so
    // that random bytes exercise them as often as well-formed headers do.
    let header = VirtioNetRepr::parse(&raw).unwrap_or(VirtioNetRepr {
        gso_type: match raw.gso_type() % 3 {
            0 => GsoType::TcpV4,
            1 => GsoType::TcpV6,
            _ => GsoType::UdpL4,
        },
        gso_size: raw.gso_size(),
        ..VirtioNetRepr::NONE
    });
    split(frame, &header);
    split_datagrams(frame, &header);
    // A frame refused for its IP length is tried again with the length made to match the
    // frame, so that random payloads reach the segmenting itself.
    let refused_for_length = |e| matches!(e, SegmentError::Truncated | SegmentError::BadLength);
    if TcpSuperframe::parse(frame, &Layout::dissect(frame), &header).is_err_and(refused_for_length)
        || UdpSuperframe::parse(frame, &Layout::dissect(frame), &header)
            .is_err_and(refused_for_length)
    {
        let mut repaired = frame.to_vec();
        if repair_ip_length(&mut repaired) {
            split(&repaired, &header);
            split_datagrams(&repaired, &header);
        }
    }
}

/// `finish_checksum` changes nothing but the field, and a receiver adding back the
/// pseudo-header sum the field held finds the segment correct.
fn finish(frame: &[u8], start: usize, offset: usize) {
    let mut finished = frame.to_vec();
    match finish_checksum(&mut finished, start, offset) {
        Ok(()) => {
            let at = start + offset;
            assert!(offset % 2 == 0 && at + 2 <= frame.len());
            let pseudo = u16::from_be_bytes([frame[at], frame[at + 1]]);
            assert_eq!(finished[..at], frame[..at], "only the field changes");
            assert_eq!(
                finished[at + 2..],
                frame[at + 2..],
                "only the field changes"
            );
            assert_ne!(
                finished[at..at + 2],
                [0, 0],
                "a zero result is written as 0xffff"
            );
            assert_eq!(
                checksum::combine(&[pseudo, checksum::data(&finished[start..])]),
                0xffff,
                "the finished checksum verifies"
            );
        }
        Err(e) => {
            assert_eq!(e, SegmentError::BadChecksumOffset);
            assert_eq!(finished, frame, "a refusal writes nothing");
        }
    }
}

/// Sets the IPv4 total length or IPv6 payload length so that the packet ends with the frame.
fn repair_ip_length(frame: &mut [u8]) -> bool {
    let Ok(vlan) = EthernetFrame::new_checked(&*frame).and_then(|eth| eth.vlan()) else {
        return false;
    };
    let l3 = vlan.payload_offset;
    let (at, len) = match vlan.ethertype {
        EtherType::IPV4 => (l3 + 2, frame.len().saturating_sub(l3)),
        EtherType::IPV6 => (l3 + 4, frame.len().saturating_sub(l3 + 40)),
        _ => return false,
    };
    let (Ok(len), true) = (u16::try_from(len), at + 2 <= frame.len()) else {
        return false;
    };
    if frame[at..at + 2] == len.to_be_bytes() {
        return false;
    }
    frame[at..at + 2].copy_from_slice(&len.to_be_bytes());
    true
}

fn split(frame: &[u8], header: &VirtioNetRepr) {
    BUFFERS.with(|buffers| {
        let (full, small) = &mut *buffers.borrow_mut();
        let parsed = TcpSuperframe::parse(frame, &Layout::dissect(frame), header);
        let segments = match split_tcp(frame, &Layout::dissect(frame), header, &VXLAN, full) {
            Ok(segments) => segments,
            Err(SegmentError::TooManySegments) => {
                let superframe = parsed.expect("split_tcp refuses only what parses");
                assert!(superframe.segment_count() > full.capacity());
                return;
            }
            Err(e) => {
                assert_eq!(
                    parsed.err(),
                    Some(e),
                    "split_tcp refuses what parse refuses"
                );
                return;
            }
        };
        let superframe = parsed.expect("what splits parses");
        check_segments(frame, &superframe, &segments);

        // Chunks through a one-block buffer equal the whole split.
        let mut first = 0;
        while first < segments.len() {
            let chunk = superframe
                .split(&VXLAN, first, small)
                .expect("one block of the longest headers fits");
            assert!(!chunk.is_empty());
            for (i, segment) in chunk.iter().enumerate() {
                assert_eq!(Some(segment), segments.get(first + i), "chunked segment");
            }
            first += chunk.len();
        }
        let (head, tail) = segments.split_at(segments.len() / 2);
        assert_eq!(head.len() + tail.len(), segments.len());
        assert_eq!(head.total_len() + tail.total_len(), segments.total_len());
        for i in 0..tail.len() {
            assert_eq!(tail.get(i), segments.get(head.len() + i), "split_at tail");
        }
    });
}

/// What the superframe's headers hold, read with the wire parsers.
struct Original {
    l3: usize,
    l4: usize,
    ipv6: bool,
    ident: u16,
    seq: u32,
    flags: TcpFlags,
}

fn original(frame: &[u8], superframe: &TcpSuperframe) -> Original {
    let eth = EthernetFrame::new_checked(frame).expect("a split frame has Ethernet");
    let vlan = eth.vlan().expect("a split frame has at most two tags");
    let l3 = vlan.payload_offset;
    let ipv6 = vlan.ethertype == EtherType::IPV6;
    let (l4, ident) = if ipv6 {
        (l3 + 40, 0)
    } else {
        let ip = Ipv4Packet::new_checked(&frame[l3..]).expect("a split frame has IPv4");
        (l3 + ip.header_len(), ip.ident())
    };
    let tcp = TcpPacket::new_checked(&frame[l4..superframe.payload().start])
        .expect("a split frame has TCP");
    Original {
        l3,
        l4,
        ipv6,
        ident,
        seq: tcp.seq_number(),
        flags: tcp.flags(),
    }
}

/// Every segment is a well-formed frame with correct checksums, and together they carry the
/// superframe's payload as the kernel would cut it.
fn check_segments(frame: &[u8], superframe: &TcpSuperframe, segments: &Segments) {
    let o = original(frame, superframe);
    let payload = superframe.payload();
    let mss = superframe.mss();
    let n = segments.len();
    let block_len = segments.header_block_len();
    assert_eq!(n, superframe.segment_count());
    assert_eq!(n, payload.len().div_ceil(mss).max(1));
    assert_eq!(block_len, 8 + payload.start);
    assert_eq!(segments.gso_size(), block_len + mss.min(payload.len()));
    let expected_shared = shared_header(&frame[..payload.start], &o);
    let mut next = payload.start;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == n;
        let range = segment.payload.clone();
        assert_eq!(range.start, next, "payloads are contiguous");
        next = range.end;
        assert!(range.len() == mss || (last && range.len() <= mss));
        assert_eq!(segment.header.len(), block_len);
        assert_eq!(segment.header[..8], VXLAN);
        let mut datagram = segment.header[8..].to_vec();
        datagram.extend_from_slice(&frame[range.clone()]);
        assert_eq!(
            shared_header(&datagram[..payload.start], &o),
            expected_shared,
            "segment {i} copies the superframe's headers"
        );

        let offset = (range.start - payload.start) as u32;
        let tcp_bytes = &datagram[o.l4..];
        let tcp = TcpPacket::new_checked(tcp_bytes).expect("segment has TCP");
        if o.ipv6 {
            let ip = &datagram[o.l3..o.l4];
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                tcp_bytes.len()
            );
            let addr = |r: Range<usize>| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&ip[r]);
                a
            };
            let pseudo = checksum::pseudo_header_v6(
                addr(8..24).into(),
                addr(24..40).into(),
                6,
                tcp_bytes.len() as u32,
            );
            assert_eq!(
                checksum::combine(&[pseudo, checksum::data(tcp_bytes)]),
                0xffff,
                "IPv6 TCP checksum"
            );
        } else {
            let ip = Ipv4Packet::new_checked(&datagram[o.l3..]).expect("segment has IPv4");
            assert_eq!(usize::from(ip.total_len()), datagram.len() - o.l3);
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert_eq!(ip.ident(), o.ident.wrapping_add(i as u16));
            assert!(
                tcp.verify_checksum(ip.src_addr(), ip.dst_addr()),
                "IPv4 TCP checksum"
            );
        }
        assert_eq!(tcp.seq_number(), o.seq.wrapping_add(offset));
        let mut expected = o.flags;
        if !last {
            expected = expected & !(TcpFlags::FIN | TcpFlags::PSH);
        }
        if i > 0 {
            expected = expected & !TcpFlags::CWR;
        }
        assert_eq!(tcp.flags(), expected, "segment {i} flags");
        assert_eq!(tcp.payload(), &frame[range]);
    }
    assert_eq!(next, payload.end, "the payloads cover the superframe's");
}

/// The header bytes a segment shares with the superframe: all but the lengths, IPv4 ID and
/// checksum, sequence number, flags and TCP checksum, which are zeroed. (The flags share a
/// byte with the data offset and reserved bits; NS there never changes, so only the second
/// byte of that word is segmentation's.)
fn shared_header(headers: &[u8], o: &Original) -> Vec<u8> {
    let mut shared = headers.to_vec();
    if o.ipv6 {
        shared[o.l3 + 4..o.l3 + 6].fill(0);
    } else {
        shared[o.l3 + 2..o.l3 + 6].fill(0);
        shared[o.l3 + 10..o.l3 + 12].fill(0);
    }
    shared[o.l4 + 4..o.l4 + 8].fill(0);
    shared[o.l4 + 13] = 0;
    shared[o.l4 + 16..o.l4 + 18].fill(0);
    shared
}

/// The USO half of [`split`]: `split_udp` refuses exactly what `UdpSuperframe::parse` refuses,
/// and what it cuts is checked by [`check_datagrams`], whole and in chunks.
fn split_datagrams(frame: &[u8], header: &VirtioNetRepr) {
    BUFFERS.with(|buffers| {
        let (full, small) = &mut *buffers.borrow_mut();
        let parsed = UdpSuperframe::parse(frame, &Layout::dissect(frame), header);
        let segments = match split_udp(frame, &Layout::dissect(frame), header, &VXLAN, full) {
            Ok(segments) => segments,
            Err(SegmentError::TooManySegments) => {
                let superframe = parsed.expect("split_udp refuses only what parses");
                assert!(superframe.segment_count() > full.capacity());
                return;
            }
            Err(e) => {
                assert_eq!(
                    parsed.err(),
                    Some(e),
                    "split_udp refuses what parse refuses"
                );
                return;
            }
        };
        let superframe = parsed.expect("what splits parses");
        check_datagrams(frame, &superframe, &segments);

        // Chunks through a one-block buffer equal the whole split.
        let mut first = 0;
        while first < segments.len() {
            let chunk = superframe
                .split(&VXLAN, first, small)
                .expect("one block of the longest headers fits");
            assert!(!chunk.is_empty());
            for (i, segment) in chunk.iter().enumerate() {
                assert_eq!(Some(segment), segments.get(first + i), "chunked datagram");
            }
            first += chunk.len();
        }
    });
}

/// Every datagram is a well-formed frame with the superframe's headers but for its own IP
/// length, IPv4 id and header checksum, UDP length and a full, non-zero UDP checksum that
/// verifies; together they carry the superframe's payload, `gso_size` bytes each but the
/// last, as the kernel would cut it.
fn check_datagrams(frame: &[u8], superframe: &UdpSuperframe, segments: &Segments) {
    let eth = EthernetFrame::new_checked(frame).expect("a split frame has Ethernet");
    let vlan = eth.vlan().expect("a split frame has at most two tags");
    let l3 = vlan.payload_offset;
    let ipv6 = vlan.ethertype == EtherType::IPV6;
    let payload = superframe.payload();
    let l4 = payload.start - 8;
    let ident = if ipv6 {
        0
    } else {
        Ipv4Packet::new_checked(&frame[l3..])
            .expect("a split frame has IPv4")
            .ident()
    };
    let gso_size = superframe.gso_size();
    let n = segments.len();
    assert_eq!(n, superframe.segment_count());
    assert_eq!(n, payload.len().div_ceil(gso_size).max(1));
    assert_eq!(segments.header_block_len(), 8 + payload.start);
    assert_eq!(
        segments.gso_size(),
        8 + payload.start + gso_size.min(payload.len())
    );
    let shared = |headers: &[u8]| {
        let mut shared = headers.to_vec();
        if ipv6 {
            shared[l3 + 4..l3 + 6].fill(0);
        } else {
            shared[l3 + 2..l3 + 6].fill(0);
            shared[l3 + 10..l3 + 12].fill(0);
        }
        shared[l4 + 4..l4 + 8].fill(0);
        shared
    };
    let expected_shared = shared(&frame[..payload.start]);
    let mut next = payload.start;
    for (i, segment) in segments.iter().enumerate() {
        let range = segment.payload.clone();
        assert_eq!(range.start, next, "payloads are contiguous");
        next = range.end;
        assert!(range.len() == gso_size || (i + 1 == n && range.len() <= gso_size));
        assert_eq!(segment.header[..8], VXLAN);
        let mut datagram = segment.header[8..].to_vec();
        datagram.extend_from_slice(&frame[range.clone()]);
        assert_eq!(
            shared(&datagram[..payload.start]),
            expected_shared,
            "datagram {i} copies the superframe's headers"
        );
        let udp_bytes = &datagram[l4..];
        let udp = UdpPacket::new_checked(udp_bytes).expect("datagram has UDP");
        assert_eq!(usize::from(udp.len()), udp_bytes.len());
        assert_ne!(udp.checksum(), 0, "a UDP checksum, never 'none'");
        let pseudo = if ipv6 {
            let ip = &datagram[l3..l4];
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                udp_bytes.len()
            );
            let addr = |r: Range<usize>| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&ip[r]);
                a
            };
            checksum::pseudo_header_v6(
                addr(8..24).into(),
                addr(24..40).into(),
                17,
                udp_bytes.len() as u32,
            )
        } else {
            let ip = Ipv4Packet::new_checked(&datagram[l3..]).expect("datagram has IPv4");
            assert_eq!(usize::from(ip.total_len()), datagram.len() - l3);
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert_eq!(ip.ident(), ident.wrapping_add(i as u16));
            assert!(
                udp.verify_checksum(ip.src_addr(), ip.dst_addr()),
                "IPv4 UDP checksum"
            );
            checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), 17, udp_bytes.len() as u16)
        };
        assert_eq!(
            checksum::combine(&[pseudo, checksum::data(udp_bytes)]),
            0xffff,
            "UDP checksum"
        );
        assert_eq!(udp.payload(), &frame[range]);
    }
    assert_eq!(next, payload.end, "the payloads cover the superframe's");
}

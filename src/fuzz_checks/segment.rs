//! Fuzz property for frames read from a TAP with checksum and TCP segmentation offloads: a
//! 12-byte virtio-net header, then the frame.

use std::cell::RefCell;
use std::ops::Range;
use vxtap_dataplane::segment::{
    finish_checksum, split_tcp, SegmentError, SegmentHeaders, Segments, TcpSuperframe,
};
use vxtap_dataplane::wire::checksum;
use vxtap_dataplane::wire::{
    EtherType, EthernetFrame, GsoType, Ipv4Packet, TcpFlags, TcpPacket, VirtioNetHeader,
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
    // Headers the parser refuses still reach the splitter, with a TCP GSO type, so that
    // random bytes exercise it as often as well-formed headers do.
    let header = VirtioNetRepr::parse(&raw).unwrap_or(VirtioNetRepr {
        gso_type: if raw.gso_type() & 1 == 0 {
            GsoType::TcpV4
        } else {
            GsoType::TcpV6
        },
        gso_size: raw.gso_size(),
        ..VirtioNetRepr::NONE
    });
    split(frame, &header);
    // A frame refused for its IP length is tried again with the length made to match the
    // frame, so that random payloads reach the segmenting itself.
    if matches!(
        TcpSuperframe::parse(frame, &header),
        Err(SegmentError::Truncated | SegmentError::BadLength)
    ) {
        let mut repaired = frame.to_vec();
        if repair_ip_length(&mut repaired) {
            split(&repaired, &header);
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
        let parsed = TcpSuperframe::parse(frame, header);
        let segments = match split_tcp(frame, header, &VXLAN, full) {
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

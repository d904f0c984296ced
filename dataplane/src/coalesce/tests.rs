//! Round trips through the segmenter, and every reason a segment stays alone.

use super::*;
use crate::segment::{split_tcp, SegmentHeaders};
use core::net::Ipv6Addr;

/// Dissects and inspects, as the pipeline does.
fn inspect_frame(frame: &[u8]) -> Option<Segment> {
    inspect(frame, &Layout::dissect(frame))
}

/// The captured data segment (tcp_data.bin, inner frame from byte 50) grown into a superframe
/// of `payload` bytes, with its checksum pending as a TSO sender leaves it.
fn superframe(payload: usize, psh: bool) -> Vec<u8> {
    let capture = include_bytes!("../../testdata/kernel/tcp_data.bin");
    let mut frame = capture[50..].to_vec();
    let ip_len = usize::from(frame[14] & 0x0f) * 4;
    let headers = 14 + ip_len + usize::from(frame[14 + ip_len + 12] >> 4) * 4;
    frame.truncate(headers);
    frame.extend((0..payload).map(|i| (i * 7 % 251) as u8));
    let total = (frame.len() - 14) as u16;
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
        ip.set_total_len(total);
        ip.fill_checksum();
    }
    let (src, dst) = {
        let ip = Ipv4Packet::new_unchecked(&frame[14..]);
        (ip.src_addr(), ip.dst_addr())
    };
    let mut tcp = TcpPacket::new_unchecked(&mut frame[14 + ip_len..]);
    let flags = if psh {
        TcpFlags::ACK | TcpFlags::PSH
    } else {
        TcpFlags::ACK
    };
    tcp.set_flags(flags);
    let pseudo = checksum::pseudo_header_v4(src, dst, 6, (frame.len() - 14 - ip_len) as u16);
    TcpPacket::new_unchecked(&mut frame[14 + ip_len..]).set_checksum(pseudo);
    frame
}

/// The on-the-wire inner frames the segmenter makes of `superframe` (IPv4 or IPv6, no
/// options beyond what the capture carries) at `mss`.
fn segments_of(superframe: &[u8], mss: u16) -> Vec<Vec<u8>> {
    let ipv6 = superframe[12..14] == [0x86, 0xdd];
    let ip_len = if ipv6 {
        40
    } else {
        usize::from(superframe[14] & 0x0f) * 4
    };
    let vnet = VirtioNetRepr {
        needs_csum: true,
        csum_start: (14 + ip_len) as u16,
        csum_offset: 16,
        gso_type: if ipv6 { GsoType::TcpV6 } else { GsoType::TcpV4 },
        gso_size: mss,
        ..VirtioNetRepr::NONE
    };
    let mut out = SegmentHeaders::new();
    let segments = split_tcp(
        superframe,
        &Layout::dissect(superframe),
        &vnet,
        &[8, 0, 0, 0, 0, 0, 42, 0],
        &mut out,
    )
    .unwrap();
    segments
        .iter()
        .map(|s| {
            let mut f = s.header[8..].to_vec();
            f.extend_from_slice(&superframe[s.payload]);
            f
        })
        .collect()
}

/// Makes an edited segment valid again: IP header checksum and complete TCP checksum, so a
/// test sees the edit refused for what it changes, not for a broken checksum.
fn refresh(frame: &mut [u8]) {
    Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
    let (src, dst, ip_len, total) = {
        let ip = Ipv4Packet::new_unchecked(&frame[14..]);
        (
            ip.src_addr(),
            ip.dst_addr(),
            ip.header_len(),
            usize::from(ip.total_len()),
        )
    };
    TcpPacket::new_unchecked(&mut frame[14 + ip_len..14 + total]).fill_checksum(src, dst);
}

/// Runs the coalescing rules over `frames` and returns the runs as (first index, count).
fn runs(frames: &[Vec<u8>]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let Some(first) = inspect_frame(&frames[i]) else {
            runs.push((i, 1));
            i += 1;
            continue;
        };
        let (mut last, mut payload, mut n) = (first, first.payload_len(), 1);
        while let Some(next) = frames.get(i + n).and_then(|f| inspect_frame(f)) {
            if !continues(&frames[i], &first, &last, payload, &frames[i + n], &next) {
                break;
            }
            payload += next.payload_len();
            last = next;
            n += 1;
        }
        runs.push((i, n));
        i += n;
    }
    runs
}

/// Coalesces `frames` (one run) into one superframe and its virtio-net header.
fn coalesce(frames: &[Vec<u8>]) -> (Vec<u8>, VirtioNetRepr) {
    let first = inspect_frame(&frames[0]).unwrap();
    let others: Vec<Segment> = frames[1..]
        .iter()
        .map(|f| inspect_frame(f).unwrap())
        .collect();
    let total = first.payload_len() + others.iter().map(Segment::payload_len).sum::<usize>();
    let psh = others.last().copied().unwrap_or(first).psh;
    let mut head = frames[0].clone();
    let vnet = finish(&mut head, &first, total, psh);
    for (frame, segment) in frames[1..].iter().zip(&others) {
        head.extend_from_slice(&frame[segment.payload_offset()..]);
    }
    let header = crate::wire::VirtioNetHeader::new_checked(&vnet[..]).unwrap();
    (head, VirtioNetRepr::parse(&header).unwrap())
}

#[test]
fn segments_coalesce_back_into_their_superframe() {
    for (payload, mss, psh) in [
        (10_500, 1000, true),
        (14_000, 1400, false),
        (2001, 1000, true),
        (64_000, 1398, true),
    ] {
        let original = superframe(payload, psh);
        let frames = segments_of(&original, mss);
        assert_eq!(
            runs(&frames),
            vec![(0, frames.len())],
            "payload {payload} mss {mss}"
        );
        let (joined, vnet) = coalesce(&frames);
        // Byte for byte the superframe, but for the IP id the segmenter advanced (the first
        // segment keeps it) and the IP checksum: ids are equal here, so all of it matches.
        assert_eq!(joined, original, "payload {payload} mss {mss}");
        assert_eq!((vnet.gso_type, vnet.gso_size), (GsoType::TcpV4, mss));
        assert!(vnet.needs_csum && vnet.csum_start == 34 && vnet.csum_offset == 16);
    }
}

#[test]
fn a_single_segment_is_its_own_run() {
    let frames = segments_of(&superframe(800, true), 1000);
    assert_eq!(runs(&frames), vec![(0, 1)]);
}

#[test]
fn anything_that_changes_the_flow_ends_the_run() {
    let frames = segments_of(&superframe(5000, false), 1000);
    let edit = |k: usize, at: usize, value: u8| {
        let mut f = frames.clone();
        f[k][at] = value;
        refresh(&mut f[k]);
        assert!(
            inspect_frame(&f[k]).is_some(),
            "the edited segment is still a valid candidate"
        );
        f
    };
    let tcp = 34;
    for (what, at, value) in [
        ("source port", tcp, frames[2][tcp] ^ 1),
        ("ACK number", tcp + 11, frames[2][tcp + 11] ^ 1),
        ("window", tcp + 15, frames[2][tcp + 15] ^ 1),
        ("TOS", 15, frames[2][15] ^ 4),
        ("TTL", 22, frames[2][22] ^ 1),
        ("destination MAC", 0, frames[2][0] ^ 2),
        ("sequence gap", tcp + 7, frames[2][tcp + 7] ^ 1),
    ] {
        let f = edit(2, at, value);
        let r = runs(&f);
        assert_ne!(r, vec![(0, 5)], "{what}");
        assert_eq!(
            r[0],
            (0, 2),
            "{what}: the run stops before the changed segment"
        );
    }
}

#[test]
fn psh_short_segments_and_other_flags_end_or_refuse_runs() {
    // PSH in the middle ends the run after that segment.
    let mut frames = segments_of(&superframe(5000, false), 1000);
    frames[1][34 + 13] |= 0x08;
    refresh(&mut frames[1]);
    let r = runs(&frames);
    assert_eq!(r[0], (0, 2));
    // A short segment can only be last.
    let short = segments_of(&superframe(2500, false), 1000);
    let mut reordered = vec![short[2].clone(), short[0].clone()];
    assert_eq!(runs(&reordered), vec![(0, 1), (1, 1)]);
    // SYN, FIN, RST, URG, CWR and pure ACKs never coalesce.
    for flag in [0x02u8, 0x01, 0x04, 0x20, 0x80] {
        reordered = segments_of(&superframe(3000, false), 1000);
        reordered[0][34 + 13] |= flag;
        refresh(&mut reordered[0]);
        assert!(inspect_frame(&reordered[0]).is_none(), "flag {flag:#x}");
        reordered[0][34 + 13] &= !flag;
        refresh(&mut reordered[0]);
        assert!(
            inspect_frame(&reordered[0]).is_some(),
            "flag {flag:#x} cleared again"
        );
    }
}

#[test]
fn corrupt_segments_never_hide_in_a_superframe() {
    let original = superframe(4000, false);
    let mut frames = segments_of(&original, 1000);
    for f in &frames {
        assert!(
            inspect_frame(f).is_some(),
            "segments carry complete, correct checksums"
        );
    }
    let last = frames[1].len() - 1;
    frames[1][last] ^= 0xff;
    assert!(inspect_frame(&frames[1]).is_none());
    assert_eq!(runs(&frames), vec![(0, 1), (1, 1), (2, 2)]);
}

#[test]
fn not_ipv4_tcp_is_left_alone() {
    let capture = |name: &str| -> Vec<u8> {
        let path = format!("{}/testdata/kernel/{name}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()[50..].to_vec()
    };
    for name in [
        "udp_datagram",
        "icmp_echo_request",
        "icmp_frag_first",
        "arp_request_a_to_b",
        "icmpv6_echo_request",
        "tcp_syn",
        "tcp_fin",
    ] {
        assert!(inspect_frame(&capture(name)).is_none(), "{name}");
    }
    let data = capture("tcp_data");
    assert!(inspect_frame(&data).is_some());
    for len in 0..data.len() {
        assert!(inspect_frame(&data[..len]).is_none(), "cut at {len}");
    }
}

/// An IPv6 superframe: the captured data segment's MACs and TCP header, fd00::1 -> fd00::2,
/// `payload` bytes, checksum pending as a TSO6 sender leaves it.
fn superframe_v6(payload: usize, psh: bool) -> Vec<u8> {
    let capture = include_bytes!("../../testdata/kernel/tcp_data.bin");
    let inner = &capture[50..];
    let tcp_header = &inner[34..34 + usize::from(inner[34 + 12] >> 4) * 4];
    let mut frame = inner[..12].to_vec();
    frame.extend_from_slice(&[0x86, 0xdd]);
    let tcp_len = tcp_header.len() + payload;
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[1..4].copy_from_slice(&[0x00, 0x12, 0x34]);
    ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    let (src, dst): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(tcp_header);
    frame.extend((0..payload).map(|i| (i * 13 % 251) as u8));
    let mut tcp = TcpPacket::new_unchecked(&mut frame[54..]);
    tcp.set_flags(if psh {
        TcpFlags::ACK | TcpFlags::PSH
    } else {
        TcpFlags::ACK
    });
    tcp.set_checksum(checksum::pseudo_header_v6(src, dst, 6, tcp_len as u32));
    frame
}

#[test]
fn ipv6_segments_coalesce_back_into_their_superframe() {
    for (payload, mss, psh) in [
        (10_500, 1000, true),
        (60_000, 1378, false),
        (1500, 1000, true),
    ] {
        let original = superframe_v6(payload, psh);
        let frames = segments_of(&original, mss);
        assert_eq!(
            runs(&frames),
            vec![(0, frames.len())],
            "payload {payload} mss {mss}"
        );
        let (joined, vnet) = coalesce(&frames);
        assert_eq!(joined, original, "payload {payload} mss {mss}");
        assert_eq!(
            (vnet.gso_type, vnet.gso_size, vnet.csum_start),
            (GsoType::TcpV6, mss, 54)
        );
    }
}

#[test]
fn ipv6_flow_changes_end_the_run() {
    let frames = segments_of(&superframe_v6(4000, false), 1000);
    // Flow label, hop limit, source address, destination port: each keeps segment 2 apart.
    for (what, at) in [
        ("flow label", 17),
        ("hop limit", 21),
        ("source address", 37),
        ("port", 56),
    ] {
        let mut f = frames.clone();
        f[2][at] ^= 1;
        // Keep the segment's own checksum correct, so the flow change is what ends the run.
        let (src, dst) = {
            let h = &f[2][14..54];
            let a = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap());
            (a(&h[8..24]), a(&h[24..40]))
        };
        let len = f[2].len() - 54;
        f[2][54 + 16..54 + 18].copy_from_slice(&[0, 0]);
        let sum = checksum::combine(&[
            checksum::pseudo_header_v6(src, dst, 6, len as u32),
            checksum::data(&f[2][54..]),
        ]);
        f[2][54 + 16..54 + 18].copy_from_slice(&(!sum).to_be_bytes());
        assert!(
            inspect_frame(&f[2]).is_some(),
            "{what}: still a valid candidate"
        );
        assert_eq!(runs(&f)[0], (0, 2), "{what}");
    }
    // An IPv6 segment never joins an IPv4 run.
    let v4 = segments_of(&superframe(2000, false), 1000);
    assert_eq!(
        runs(&[v4[0].clone(), frames[1].clone()]),
        vec![(0, 1), (1, 1)]
    );
}

//! Fuzz property for the whole pipeline, both ways: TAP reads (virtio-net header and frame)
//! through [`Egress`], underlay datagrams (GRO trains, truncation, unknown VTEPs) through
//! [`Ingress`].
//!
//! Input: records of `[kind][length: u16 BE][bytes]`, the last one cut at the end of the
//! input. Kind bit 0 clear: a TAP read. Kind bit 0 set: a datagram; bit 1 from an unknown VTEP,
//! bit 2 cut short by the buffer, bit 3 a GRO train whose segment size is its first two bytes,
//! bit 4 for VNI 43 (a network with no TAP here) instead of the datagram's own. The first
//! byte of the input says whether the socket has GRO on (bit 0).
//!
//! Properties: every TAP read is refused, or the switch saw it and it was sent, answered or
//! counted as exactly one drop; every copy is planned once, on its flow's socket; a cut
//! superframe's segments join back to its payload; every datagram is written or counted as
//! exactly one drop; a coalesced write is one IP packet exactly as long as what is written.

use std::net::{Ipv4Addr, SocketAddrV4};
use vxtap_dataplane::dissect::Layout;
use vxtap_dataplane::pipeline::{
    Datagram, Egress, HeldDatagram, Ingress, LinkInfo, TapFrames, MAX_RUN,
};
use vxtap_dataplane::segment::{SegmentError, SegmentHeaders, TcpSuperframe, UdpSuperframe};
use vxtap_dataplane::switch::{NetworkConfig, Switch};
use vxtap_dataplane::tunnel::{PortRange, Vtep};
use vxtap_dataplane::wire::{GsoType, MacAddr, VirtioNetHeader, VirtioNetRepr, Vni};
use vxtap_dataplane::Timestamp;

const KNOWN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);
const SOCKETS: [u16; 3] = [49152, 54613, 60074];
const BATCH: usize = 16;

fn vni(n: u32) -> Vni {
    Vni::new(n).expect("valid VNI")
}

fn switch() -> Switch {
    let mut s = Switch::new();
    for n in [42, 43] {
        s.add_network(vni(n), NetworkConfig::default())
            .expect("a fresh network");
        let net = s.network_mut(vni(n)).expect("just added");
        for ip in [KNOWN, OTHER] {
            let vtep = Vtep {
                ip,
                port: 4789,
                vni: vni(n),
            };
            net.flood_add(vtep).expect("a new flood target");
        }
        let remote = MacAddr([2, 0x42, 10, 0, 0, 3]);
        let vtep = Vtep {
            ip: KNOWN,
            port: 4789,
            vni: vni(n),
        };
        net.fdb_add(remote, vtep, Timestamp::from_secs(0))
            .expect("a new entry");
        net.neigh_add(Ipv4Addr::new(10, 0, 0, 3), remote)
            .expect("a new neighbour");
    }
    s
}

/// Every drop the switch counted, globally and per network.
fn drops(s: &Switch) -> u64 {
    s.counters().drops.total()
        + s.networks()
            .map(|n| n.counters().drops.total())
            .sum::<u64>()
}

/// See the module docs.
pub fn pipeline(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let gro = flags & 1 != 0;
    let mut frames = TapFrames::new(BATCH, 65_550);
    let mut rx: Vec<HeldDatagram> = Vec::new();
    while let [kind, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        if kind & 1 == 0 {
            if let Some(buf) = frames.next_buffer() {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                frames.commit(n);
            }
            continue;
        }
        let (segment_size, payload) = match bytes {
            [a, b, payload @ ..] if kind & 8 != 0 => (Some(u16::from_be_bytes([*a, *b])), payload),
            _ => (None, bytes),
        };
        let mut payload = payload.to_vec();
        if kind & 16 != 0 && payload.len() >= 8 {
            payload[4..7].copy_from_slice(&[0, 0, 43]);
        }
        let ip = if kind & 2 != 0 { STRANGER } else { KNOWN };
        rx.push(HeldDatagram {
            payload,
            source: SocketAddrV4::new(ip, 50000),
            segment_size,
            truncated: kind & 4 != 0,
        });
    }
    let mut s = switch();
    egress(&mut frames, &mut s);
    ingress(&mut rx, gro, &mut s);
}

fn egress(frames: &mut TapFrames, s: &mut Switch) {
    let net = |s: &Switch| *s.network(vni(42)).expect("network 42").counters();
    let before = net(s);
    let mut e = Egress::new(BATCH, SOCKETS.len());
    let now = Timestamp::from_secs(1);
    e.prepare(frames, &PortRange::default());
    e.decide(frames, vni(42), s, now, &SOCKETS);
    let after = net(s);
    let switched = after.tap_frames - before.tap_frames;
    assert_eq!(
        e.counts().refused + switched,
        frames.len() as u64,
        "every TAP read is refused or switched"
    );
    let mut sent_frames: Vec<usize> = e.copies().iter().map(|c| c.frame).collect();
    sent_frames.dedup();
    let dropped = after.drops.total() - before.drops.total();
    assert_eq!(
        sent_frames.len() as u64 + e.replies().len() as u64 + dropped,
        switched,
        "every switched frame is sent, answered or counted as one drop"
    );
    let mut planned = vec![0u32; e.copies().len()];
    let mut out = SegmentHeaders::new();
    for (socket, copies) in e.groups() {
        for &k in copies {
            planned[k] += 1;
            let copy = e.copy(k);
            assert_eq!(copy.socket, socket, "a copy leaves from its flow's socket");
            match e.datagram(frames, k) {
                Datagram::Plain { parts, .. } => {
                    assert_eq!(parts[1], frames.frame(copy.frame));
                }
                Datagram::Superframe { frame, .. } => cut_joins_back(
                    frames.raw(copy.frame),
                    frame,
                    e.segments(frames, k, &mut out),
                ),
            }
        }
    }
    assert!(planned.iter().all(|&n| n == 1), "every copy planned once");
}

/// The segments of a superframe cover its payload, in order, without gaps or overlaps.
fn cut_joins_back(
    raw: &[u8],
    frame: &[u8],
    segments: Result<vxtap_dataplane::segment::Segments<'_>, SegmentError>,
) {
    let segments = match segments {
        Ok(segments) => segments,
        // A tiny MSS makes more blocks than the header buffer holds; the sender counts it.
        Err(SegmentError::TooManySegments) => return,
        Err(e) => panic!("a superframe the egress let through does not cut: {e}"),
    };
    let vnet = VirtioNetHeader::new_checked(&raw[..12])
        .and_then(|h| VirtioNetRepr::parse(&h))
        .expect("the egress parsed this header");
    let layout = Layout::dissect(frame);
    let payload = match vnet.gso_type {
        GsoType::UdpL4 => UdpSuperframe::parse(frame, &layout, &vnet).map(|s| s.payload()),
        _ => TcpSuperframe::parse(frame, &layout, &vnet).map(|s| s.payload()),
    }
    .expect("the egress validated this superframe");
    let mut at = payload.start;
    let block = segments.header_block_len();
    for segment in segments.iter() {
        assert_eq!(segment.header.len(), block, "equal header blocks");
        assert_eq!(segment.payload.start, at, "contiguous payloads");
        at = segment.payload.end;
    }
    assert_eq!(at, payload.end, "the segments cover the payload");
}

fn ingress(rx: &mut Vec<HeldDatagram>, gro: bool, s: &mut Switch) {
    let before = drops(s);
    let mut ingress = Ingress::new(BATCH);
    let now = Timestamp::from_secs(2);
    ingress.decide(rx, gro, s, now, |v| {
        (v == vni(42)).then_some(LinkInfo { slot: 0, mtu: 1450 })
    });
    ingress.plan(rx);
    let counts = ingress.counts();
    let delivered: u64 = ingress.writes().map(|w| w.frames as u64).sum();
    assert_eq!(
        delivered + (drops(s) - before) + counts.no_link,
        counts.datagrams,
        "every datagram is written or counted as one drop"
    );
    let truncated = rx.iter().filter(|d| d.truncated).count() as u64;
    assert_eq!(counts.oversize, truncated);
    let mut parts: [&[u8]; MAX_RUN] = [&[]; MAX_RUN];
    for write in ingress.writes() {
        let n = ingress.parts(write.run, rx, &mut parts);
        assert_eq!(n, write.frames);
        if n < 2 {
            continue;
        }
        let joined = parts[..n].concat();
        let vnet = VirtioNetHeader::new_checked(&write.vnet[..])
            .and_then(|h| VirtioNetRepr::parse(&h))
            .expect("a coalesced write has a valid header");
        assert!(matches!(vnet.gso_type, GsoType::TcpV4 | GsoType::TcpV6));
        let layout = Layout::dissect(&joined);
        let ip = layout.ip().expect("a coalesced write is one IP packet");
        assert_eq!(ip.end, joined.len(), "its IP length covers every part");
        assert!(
            usize::from(vnet.hdr_len) + usize::from(vnet.gso_size) * (n - 1) < joined.len(),
            "every segment but the last is gso_size long"
        );
    }
}

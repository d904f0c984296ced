//! The pipeline end to end without a socket or a TAP: byte vectors in (captures of the
//! kernel's own traffic where it matters), plans out, a virtual clock.

use super::*;
use crate::segment::test_frames::{gso_header, superframe, Shape};
use crate::segment::SegmentHeaders;
use crate::switch::{NetworkConfig, Switch};
use crate::tunnel::{PortRange, Vtep};
use crate::wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use crate::wire::ethernet::{EtherType, EthernetFrame, EthernetRepr};
use crate::wire::{checksum, GsoType, MacAddr, VirtioNetHeader, VirtioNetRepr, Vni, VxlanRepr};
use crate::{DropReason, Timestamp};
use core::net::{Ipv4Addr, SocketAddrV4};

const VNI: Vni = Vni::from_bytes([0, 0, 42]);
const LOCAL: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 2]);
const REMOTE: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 3]);
const T0: Timestamp = Timestamp::from_secs(100);
const SOCKETS: [u16; 4] = [49152, 53248, 57344, 61440];

fn vtep(last: u8) -> Vtep {
    Vtep {
        ip: Ipv4Addr::new(198, 18, 0, last),
        port: 4789,
        vni: VNI,
    }
}

/// A switch for VNI 42: REMOTE behind VTEP .2, flooding to .2 and .3, 10.0.0.3 is REMOTE.
fn switch() -> Switch {
    let mut s = Switch::new();
    s.add_network(VNI, NetworkConfig::default()).unwrap();
    let n = s.network_mut(VNI).unwrap();
    n.fdb_add(REMOTE, vtep(2), T0).unwrap();
    n.flood_add(vtep(2)).unwrap();
    n.flood_add(vtep(3)).unwrap();
    n.neigh_add(Ipv4Addr::new(10, 0, 0, 3), REMOTE).unwrap();
    s
}

/// An IPv4/UDP frame from LOCAL to `dst`, 10.0.0.2:`sport` -> 10.0.0.3:9999, with a correct
/// checksum and `payload` bytes.
fn udp_frame(dst: MacAddr, sport: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload];
    EthernetRepr {
        src_addr: LOCAL,
        dst_addr: dst,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    let total = (20 + 8 + payload) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, 0, 2]);
    f[30..34].copy_from_slice(&[10, 0, 0, 3]);
    let mut ip = crate::wire::Ipv4Packet::new_unchecked(&mut f[14..34]);
    ip.fill_checksum();
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&9999u16.to_be_bytes());
    f[38..40].copy_from_slice(&(8 + payload as u16).to_be_bytes());
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let pseudo = checksum::pseudo_header_v4(
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 3),
        17,
        8 + payload as u16,
    );
    let sum = !checksum::combine(&[pseudo, checksum::data(&f[34..])]);
    f[40..42].copy_from_slice(&sum.to_be_bytes());
    f
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    EthernetRepr {
        src_addr: LOCAL,
        dst_addr: MacAddr::BROADCAST,
        ethertype: EtherType::ARP,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    ArpRepr {
        operation: ArpOperation::Request,
        sender_mac: LOCAL,
        sender_ip: Ipv4Addr::new(10, 0, 0, 2),
        target_mac: MacAddr::ZERO,
        target_ip: target,
    }
    .emit(&mut ArpPacket::new_unchecked(&mut f[14..]));
    f
}

/// A batch of `frames`, each behind the virtio-net header `vnet` gives it.
fn tap_batch(frames: &[(VirtioNetRepr, &[u8])]) -> TapFrames {
    let mut batch = TapFrames::new(frames.len() + 1, 65_550);
    for (vnet, frame) in frames {
        let buf = batch.next_buffer().unwrap();
        buf[..12].copy_from_slice(&vnet.to_bytes());
        buf[12..12 + frame.len()].copy_from_slice(frame);
        batch.commit(12 + frame.len());
    }
    batch
}

fn egress(frames: &mut TapFrames, switch: &mut Switch) -> Egress {
    let mut e = Egress::new(frames.len(), SOCKETS.len());
    e.prepare(frames, &PortRange::default());
    e.decide(frames, VNI, switch, T0, &SOCKETS);
    e
}

#[test]
fn sockets_are_the_nearest_port_below() {
    let ports = [49152, 50176, 51200];
    assert_eq!(socket_for(&ports, 49152), 0);
    assert_eq!(socket_for(&ports, 50175), 0);
    assert_eq!(socket_for(&ports, 50176), 1);
    assert_eq!(socket_for(&ports, 65535), 2);
    assert_eq!(socket_for(&ports, 1), 0, "below the first port");
    // With a port skipped because it was taken, its slice goes to the neighbour below.
    assert_eq!(socket_for(&[49152, 51200], 50500), 0);
    assert_eq!(socket_for(&[], 50500), 0);
}

#[test]
fn every_tap_frame_is_sent_replied_or_counted_once() {
    let mut s = switch();
    let unicast = udp_frame(REMOTE, 40000, 100);
    let broadcast = udp_frame(MacAddr::BROADCAST, 40001, 10);
    let arp = arp_request(Ipv4Addr::new(10, 0, 0, 3));
    let runt = [0u8; 10];
    let ufo = VirtioNetRepr {
        gso_type: GsoType::Udp,
        gso_size: 1000,
        ..VirtioNetRepr::NONE
    };
    let none = VirtioNetRepr::NONE;
    let mut frames = tap_batch(&[
        (none, &unicast),
        (none, &broadcast),
        (none, &arp),
        (ufo, &unicast),
        (none, &runt),
    ]);
    // A read shorter than the virtio-net header.
    frames.next_buffer().unwrap();
    frames.commit(5);
    let e = egress(&mut frames, &mut s);

    let to: Vec<(usize, Ipv4Addr)> = e.copies().iter().map(|c| (c.frame, c.vtep.ip)).collect();
    assert_eq!(to, [(0, vtep(2).ip), (1, vtep(2).ip), (1, vtep(3).ip)]);
    assert_eq!(e.replies().len(), 1, "the ARP proxy answered");
    assert_eq!(e.counts().refused, 2, "UFO and the short read");
    let c = s.network(VNI).unwrap().counters();
    assert_eq!(c.drops.total(), 1, "the runt, by the switch");
    assert_eq!(c.drops.get(DropReason::TapTooShort), 1);
    // 6 frames: 2 sent (one as 2 copies), 1 answered, 2 refused, 1 dropped.
    assert_eq!(2 + 1 + 2 + 1, frames.len());

    for (k, copy) in e.copies().iter().enumerate() {
        assert_eq!(copy.header, VxlanRepr { vni: VNI }.to_bytes());
        match e.datagram(&frames, k) {
            Datagram::Plain { dst, parts } => {
                assert_eq!(dst, copy.vtep.addr());
                assert_eq!(parts[0], copy.header);
                assert_eq!(parts[1], frames.frame(copy.frame));
            }
            other => panic!("copy {k}: {other:?}"),
        }
    }
    // Both copies of one frame leave from one socket: the flow's.
    assert_eq!(e.copy(1).socket, e.copy(2).socket);
    let mut out = SegmentHeaders::with_capacity(4);
    assert_eq!(
        e.segments(&frames, 0, &mut out).map(|s| s.len()),
        Err(crate::segment::SegmentError::NotGso)
    );
}

#[test]
fn copies_are_grouped_by_socket_in_order() {
    let mut s = switch();
    let flows: Vec<Vec<u8>> = (0..40).map(|i| udp_frame(REMOTE, 30000 + i, 20)).collect();
    let batch: Vec<(VirtioNetRepr, &[u8])> = flows
        .iter()
        .map(|f| (VirtioNetRepr::NONE, &f[..]))
        .collect();
    let mut frames = tap_batch(&batch);
    let e = egress(&mut frames, &mut s);
    let mut seen = vec![false; e.copies().len()];
    let mut last_socket = None;
    for (socket, copies) in e.groups() {
        assert!(
            last_socket < Some(socket),
            "one group per socket, ascending"
        );
        last_socket = Some(socket);
        assert!(!copies.is_empty());
        assert!(copies.windows(2).all(|w| w[0] < w[1]), "plan order kept");
        for &k in copies {
            assert_eq!(e.copy(k).socket, socket);
            assert!(!seen[k], "copy {k} planned twice");
            seen[k] = true;
        }
    }
    assert!(seen.iter().all(|&s| s), "every copy planned");
    assert!(e.groups().count() > 1, "40 flows spread over sockets");
    // A flow keeps its socket from batch to batch.
    let again = egress(&mut tap_batch(&batch), &mut s);
    for (a, b) in e.copies().iter().zip(again.copies()) {
        assert_eq!(a.socket, b.socket);
    }
}

#[test]
fn pending_checksums_are_finished_before_sending() {
    let mut s = switch();
    let good = udp_frame(REMOTE, 40000, 33);
    let mut partial = good.clone();
    let pseudo = checksum::pseudo_header_v4(
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 3),
        17,
        8 + 33,
    );
    partial[40..42].copy_from_slice(&pseudo.to_be_bytes());
    let vnet = VirtioNetRepr {
        needs_csum: true,
        csum_start: 34,
        csum_offset: 6,
        ..VirtioNetRepr::NONE
    };
    let mut frames = tap_batch(&[(vnet, &partial)]);
    let e = egress(&mut frames, &mut s);
    assert_eq!(frames.frame(0), &good[..]);
    assert_eq!(e.copies().len(), 1);
    // An offset that points outside the frame is refused, not sent half-done.
    let bad = VirtioNetRepr {
        csum_start: 1000,
        ..vnet
    };
    let mut frames = tap_batch(&[(bad, &partial)]);
    let e = egress(&mut frames, &mut s);
    assert_eq!((e.copies().len(), e.counts().refused), (0, 1));
}

#[test]
fn superframes_are_cut_and_their_segments_join_back() {
    let mut s = switch();
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    let shape = Shape {
        vlan_tags: 0,
        ..Shape::default()
    };
    let frame = superframe(&shape, &payload);
    let vnet = gso_header(&shape, &frame, 1398);
    let mut frames = tap_batch(&[(vnet, &frame)]);
    let e = egress(&mut frames, &mut s);
    // The capture's destination MAC is unknown here: flooded to both VTEPs.
    assert_eq!(e.copies().len(), 2);
    let mut out = SegmentHeaders::new();
    for k in 0..2 {
        let Datagram::Superframe { dst, frame: sent } = e.datagram(&frames, k) else {
            panic!("copy {k} is a superframe");
        };
        assert_eq!(dst, e.copy(k).vtep.addr());
        let segments = e.segments(&frames, k, &mut out).unwrap();
        assert_eq!(segments.len(), payload.len().div_ceil(1398));
        assert_eq!(segments.gso_size(), segments.header_block_len() + 1398);
        let mut joined = Vec::new();
        for segment in segments.iter() {
            assert_eq!(segment.header[..8], VxlanRepr { vni: VNI }.to_bytes());
            joined.extend_from_slice(&sent[segment.payload]);
        }
        assert_eq!(
            joined, payload,
            "the cut segments join back to the original"
        );
    }
    // A superframe vxtap cannot cut (its GSO type says TCP, its frame is UDP) is refused.
    let udp = udp_frame(REMOTE, 40000, 3000);
    let mut frames = tap_batch(&[(vnet, &udp)]);
    let e = egress(&mut frames, &mut s);
    assert_eq!((e.copies().len(), e.counts().refused), (0, 1));
}

/// A datagram from VTEP 198.18.0.`from`.
fn from(from: u8, payload: Vec<u8>) -> HeldDatagram {
    HeldDatagram::new(
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, from), 50000),
        payload,
    )
}

fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut d = VxlanRepr {
        vni: Vni::new(vni).unwrap(),
    }
    .to_bytes()
    .to_vec();
    d.extend_from_slice(inner);
    d
}

const LINK: LinkInfo = LinkInfo { slot: 7, mtu: 1450 };

/// Both halves of the ingress, as a worker runs them.
fn decide_and_plan(
    ingress: &mut Ingress,
    rx: &mut Vec<HeldDatagram>,
    gro: bool,
    switch: &mut Switch,
    link: impl FnMut(Vni) -> Option<LinkInfo>,
) {
    ingress.decide(rx, gro, switch, T0, link);
    ingress.plan(rx);
}

#[test]
fn every_datagram_is_written_or_counted_once() {
    let mut s = switch();
    s.add_network(Vni::new(43).unwrap(), NetworkConfig::default())
        .unwrap();
    s.network_mut(Vni::new(43).unwrap())
        .unwrap()
        .flood_add(Vtep {
            vni: Vni::new(43).unwrap(),
            ..vtep(2)
        })
        .unwrap();
    let from_remote = {
        let mut f = udp_frame(LOCAL, 9999, 50);
        f[6..12].copy_from_slice(&REMOTE.octets());
        f
    };
    let mut rx = vec![
        from(2, vxlan(42, &from_remote)), // delivered
        from(2, vec![8, 0, 0]),           // truncated header
        from(2, vxlan(77, &from_remote)), // unknown VNI
        from(9, vxlan(42, &from_remote)), // unknown VTEP
        from(2, vxlan(43, &from_remote)), // a network with no TAP here
        from(2, vxlan(42, &from_remote)), // cut short by the buffer
    ];
    rx[5].truncated = true;
    let mut ingress = Ingress::new(8);
    decide_and_plan(&mut ingress, &mut rx, true, &mut s, |vni| {
        (vni == VNI).then_some(LINK)
    });
    let writes: Vec<TapWrite> = ingress.writes().collect();
    assert_eq!(writes.len(), 1);
    assert_eq!((writes[0].slot, writes[0].frames), (LINK.slot, 1));
    assert_eq!(writes[0].vnet, &VirtioNetRepr::NONE.to_bytes());
    let mut parts: [&[u8]; MAX_RUN] = [&[]; MAX_RUN];
    let n = ingress.parts(writes[0].run, &rx, &mut parts);
    assert_eq!(&parts[..n], &[&from_remote[..]]);
    let counts = ingress.counts();
    assert_eq!(
        counts,
        IngressCounts {
            datagrams: 5,
            oversize: 1,
            no_link: 1
        }
    );
    let drops = s.counters().drops.total()
        + s.networks()
            .map(|n| n.counters().drops.total())
            .sum::<u64>();
    assert_eq!(drops, 3, "truncated, unknown VNI, unknown VTEP");
    assert_eq!(1 + drops + counts.no_link, counts.datagrams);
}

/// The segments of a TSO superframe as they arrive from the underlay: VXLAN, then the inner
/// frame.
fn arrived_segments(payload: &[u8], mss: u16) -> Vec<Vec<u8>> {
    let shape = Shape::default();
    let mut frame = superframe(&shape, payload);
    // Remote sends to local.
    frame[..6].copy_from_slice(&LOCAL.octets());
    frame[6..12].copy_from_slice(&REMOTE.octets());
    let vnet = gso_header(&shape, &frame, mss);
    let mut out = SegmentHeaders::new();
    let layout = crate::dissect::Layout::dissect(&frame);
    let vxlan_header = VxlanRepr { vni: VNI }.to_bytes();
    crate::segment::split_tcp(&frame, &layout, &vnet, &vxlan_header, &mut out)
        .unwrap()
        .iter()
        .map(|s| {
            let mut d = s.header.to_vec();
            d.extend_from_slice(&frame[s.payload]);
            d
        })
        .collect()
}

#[test]
fn a_gro_train_of_one_flow_becomes_one_superframe() {
    let mut s = switch();
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
    let segments = arrived_segments(&payload, 1000);
    assert_eq!(segments.len(), 10);
    let mut rx: Vec<HeldDatagram> = Vec::new();
    rx.push(from(2, segments.concat()));
    rx[0].segment_size = Some(segments[0].len() as u16);
    let mut ingress = Ingress::new(4);
    decide_and_plan(&mut ingress, &mut rx, true, &mut s, |_| Some(LINK));
    let writes: Vec<TapWrite> = ingress.writes().collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].frames, 10);
    let vnet =
        VirtioNetRepr::parse(&VirtioNetHeader::new_checked(&writes[0].vnet[..]).unwrap()).unwrap();
    assert_eq!((vnet.gso_type, vnet.gso_size), (GsoType::TcpV4, 1000));
    let mut parts: [&[u8]; MAX_RUN] = [&[]; MAX_RUN];
    let n = ingress.parts(writes[0].run, &rx, &mut parts);
    let joined = parts[..n].concat();
    let head = usize::from(vnet.hdr_len);
    assert_eq!(
        &joined[head..],
        &payload[..],
        "payloads in order, headers once"
    );
    // The head now describes the whole superframe.
    let ip = crate::wire::Ipv4Packet::new_checked(&joined[14..]).unwrap();
    assert_eq!(usize::from(ip.total_len()), joined.len() - 14);
    assert!(ip.verify_checksum());

    // Without GRO on the socket, a slot is one datagram: the train is not cut, and the
    // oversize "frame" is written as it came rather than coalesced.
    let mut rx: Vec<HeldDatagram> = Vec::new();
    rx.push(from(2, segments[..2].concat()));
    rx[0].segment_size = Some(segments[0].len() as u16);
    decide_and_plan(&mut ingress, &mut rx, false, &mut s, |_| Some(LINK));
    assert_eq!(ingress.counts().datagrams, 1);
    assert_eq!(ingress.writes().map(|w| w.frames).sum::<usize>(), 1);
}

#[test]
fn runs_break_at_gaps_other_links_and_other_flows() {
    let mut s = switch();
    let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
    let segments = arrived_segments(&payload, 1000);
    let mut rx: Vec<HeldDatagram> = Vec::new();
    // 0, 1, then 3 (a gap), then 2.
    for i in [0, 1, 3, 2] {
        rx.push(from(2, segments[i].clone()));
    }
    let mut ingress = Ingress::new(8);
    decide_and_plan(&mut ingress, &mut rx, true, &mut s, |_| Some(LINK));
    let frames: Vec<usize> = ingress.writes().map(|w| w.frames).collect();
    assert_eq!(frames, [2, 1, 1]);
    // Two links never share a run, even for one flow.
    let mut rx: Vec<HeldDatagram> = Vec::new();
    rx.push(from(2, segments[0].clone()));
    rx.push(from(2, segments[1].clone()));
    let mut first = true;
    let links = std::cell::Cell::new(0);
    decide_and_plan(&mut ingress, &mut rx, true, &mut s, |_| {
        links.set(links.get() + 1);
        let slot = if first { 1 } else { 2 };
        first = false;
        Some(LinkInfo { slot, mtu: 1450 })
    });
    let slots: Vec<usize> = ingress.writes().map(|w| w.slot).collect();
    assert_eq!(slots, [1, 2]);
    assert_eq!(links.get(), 2);
}

//! Proves the per-frame paths allocate nothing: a counting global allocator watches this
//! thread while batches go through the whole pipeline, both ways (decap, learning up to the
//! cap, refusals, moves, ageing and relearning with tombstones; floods, ARP replies, misses,
//! drops, encap, grouping by socket; TSO superframes cut into segments and GRO trains
//! coalesced back), and through the offload helpers on their own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddrV4};
use vxtap_dataplane::dissect::Layout as FrameLayout;
use vxtap_dataplane::pipeline::{
    Datagram, Egress, HeldDatagram, Ingress, LinkInfo, TapFrames, MAX_RUN,
};
use vxtap_dataplane::switch::{NetworkConfig, Switch};
use vxtap_dataplane::tunnel::{PortRange, Vtep};
use vxtap_dataplane::wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use vxtap_dataplane::wire::{EtherType, EthernetFrame, EthernetRepr, MacAddr, Vni, VxlanRepr};
use vxtap_dataplane::Timestamp;

struct CountingAllocator;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with` because the allocator also runs while thread locals are torn down.
    let _ = WATCHING.try_with(|watching| {
        if watching.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments, so the
// GlobalAlloc contract is the system allocator's; counting touches only const-initialised
// thread locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr` came from this allocator (so from System) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from System) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    WATCHING.with(|w| w.set(true));
    f();
    WATCHING.with(|w| w.set(false));
    ALLOCATIONS.with(|n| n.get())
}

const VNI: u32 = 42;
const LOCAL: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 2]);
const MAX_LEARNED: usize = 64;

fn frame(dst: MacAddr, src: MacAddr, ethertype: EtherType) -> Vec<u8> {
    let mut f = vec![0u8; 98];
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    f
}

fn remote_mac(i: usize) -> MacAddr {
    MacAddr([2, 0x42, 10, 1, (i >> 8) as u8, i as u8])
}

fn datagram(inner: &[u8]) -> Vec<u8> {
    let mut d = VxlanRepr {
        vni: Vni::new(VNI).unwrap(),
    }
    .to_bytes()
    .to_vec();
    d.extend_from_slice(inner);
    d
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = frame(MacAddr::BROADCAST, LOCAL, EtherType::ARP);
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

/// Copies `frames` (each behind an all-zero virtio-net header) into `batch`'s buffers.
fn fill(batch: &mut TapFrames, frames: &[&[u8]]) {
    batch.clear();
    for f in frames {
        let buf = batch.next_buffer().expect("room for every frame");
        buf[..12].fill(0);
        buf[12..12 + f.len()].copy_from_slice(f);
        batch.commit(12 + f.len());
    }
}

#[test]
fn pipeline_does_not_allocate() {
    let vni = Vni::new(VNI).unwrap();
    let config = NetworkConfig {
        max_learned: MAX_LEARNED,
        ageing_secs: 10,
        gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..Default::default()
    };
    let mut switch = Switch::new();
    switch.add_network(vni, config).unwrap();
    let vteps: Vec<Vtep> = (1..=3)
        .map(|i| Vtep {
            ip: Ipv4Addr::new(198, 18, 0, i),
            port: 4789,
            vni,
        })
        .collect();
    let senders: Vec<SocketAddrV4> = vteps
        .iter()
        .map(|v| SocketAddrV4::new(v.ip, 50000))
        .collect();
    let net = switch.network_mut(vni).unwrap();
    for v in &vteps {
        net.flood_add(*v).unwrap();
    }
    net.fdb_add(
        MacAddr([2, 0x42, 10, 0, 0, 3]),
        vteps[0],
        Timestamp::from_secs(0),
    )
    .unwrap();
    net.neigh_add(Ipv4Addr::new(10, 0, 0, 3), MacAddr([2, 0x42, 10, 0, 0, 3]))
        .unwrap();

    // Everything the loop feeds in is built before counting starts: every datagram twice,
    // from two VTEPs (the second claim of a MAC is a move), plus a spoof and garbage.
    let mut learn: Vec<HeldDatagram> = Vec::new();
    for i in 0..2 * MAX_LEARNED {
        let d = datagram(&frame(LOCAL, remote_mac(i), EtherType::IPV4));
        learn.push(HeldDatagram::new(senders[0], d.clone()));
        learn.push(HeldDatagram::new(senders[0], d));
    }
    learn.push(HeldDatagram::new(
        senders[0],
        datagram(&frame(
            LOCAL,
            MacAddr([2, 0x42, 10, 0, 0, 3]),
            EtherType::IPV4,
        )),
    ));
    learn.push(HeldDatagram::new(senders[0], vec![0u8; 5]));
    let to_learned: Vec<Vec<u8>> = (0..2 * MAX_LEARNED)
        .map(|i| frame(remote_mac(i), LOCAL, EtherType::IPV4))
        .collect();
    let broadcast = frame(MacAddr::BROADCAST, LOCAL, EtherType::IPV4);
    let arp_hit = arp_request(Ipv4Addr::new(10, 0, 0, 3));
    let arp_miss = arp_request(Ipv4Addr::new(10, 0, 0, 99));
    let arp_gateway = arp_request(Ipv4Addr::new(10, 0, 0, 1));
    let runt = vec![0u8; 10];
    let mut tap_side: Vec<&[u8]> = to_learned.iter().map(|f| &f[..]).collect();
    tap_side.extend([&broadcast[..], &arp_hit, &arp_miss, &arp_gateway, &runt]);
    let ports = PortRange::default();
    let sockets = [49152, 53248, 57344, 61440];
    let mut frames = TapFrames::new(64, 2048);
    let mut egress = Egress::new(64, sockets.len());
    let mut ingress = Ingress::new(learn.len());

    let mut delivered = 0u64;
    let mut sent = 0u64;
    let allocations = allocations_during(|| {
        for round in 0..20u64 {
            // Each round learns the table full, then ages it empty; the next round's inserts
            // must reuse the tombstones without growing the map.
            let now = Timestamp::from_secs(round * 11);
            for (i, d) in learn.iter_mut().enumerate() {
                d.source = senders[(i / 2 + i % 2 + round as usize) % senders.len()];
            }
            ingress.decide(&learn, false, &mut switch, now, |_| {
                Some(LinkInfo { slot: 0, mtu: 1450 })
            });
            ingress.plan(&mut learn);
            let mut parts: [&[u8]; MAX_RUN] = [&[]; MAX_RUN];
            for write in ingress.writes() {
                let n = ingress.parts(write.run, &learn, &mut parts);
                delivered += parts[..n].iter().map(|p| p.len() as u64).sum::<u64>();
            }
            for chunk in tap_side.chunks(64) {
                fill(&mut frames, chunk);
                egress.prepare(&mut frames, &ports);
                egress.decide(&frames, vni, &mut switch, now, &sockets);
                for (_, copies) in egress.groups() {
                    for &k in copies {
                        if let Datagram::Plain { parts, .. } = egress.datagram(&frames, k) {
                            sent += parts[1].len() as u64;
                        }
                    }
                }
                sent += egress.replies().len() as u64;
            }
            while switch.pop_event().is_some() {}
            // Sweep just after the ageing time: every learned entry goes, leaving tombstones.
            switch.age(now.add_millis(10_000));
        }
    });
    assert!(delivered > 0 && sent > 0, "the loop really moved frames");
    let counters = switch.network(vni).unwrap().counters();
    assert!(
        counters.learned > MAX_LEARNED as u64,
        "entries were relearned after ageing"
    );
    assert!(counters.learn_refused > 0 && counters.moves > 0 && counters.aged_out > 0);
    assert!(counters.arp_replies > 0 && counters.l3_misses > 0 && counters.flooded > 0);
    assert_eq!(allocations, 0, "the pipeline allocated");
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the proof above: if counting were broken, it would pass vacuously.
    let n = allocations_during(|| {
        std::hint::black_box(vec![1u8; 100]);
    });
    assert_eq!(n, 1);
}

/// The offload paths run per superframe or per segment: cutting a TSO superframe, finishing a
/// checksum, choosing a TAP header, and coalescing segments back must not allocate either.
#[test]
fn offload_paths_do_not_allocate() {
    use vxtap_dataplane::wire::{checksum, GsoType, Ipv4Packet, TcpPacket, VirtioNetRepr};
    use vxtap_dataplane::{coalesce, offload, segment};

    // A 30 000-byte superframe with its checksum pending, as the TAP hands it over.
    let capture = include_bytes!("../testdata/kernel/tcp_data.bin");
    let mut frame = capture[50..].to_vec();
    let headers = 14 + 20 + usize::from(frame[14 + 20 + 12] >> 4) * 4;
    frame.truncate(headers);
    frame.extend((0..30_000).map(|i| i as u8));
    let total = (frame.len() - 14) as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.set_total_len(total);
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let pseudo = checksum::pseudo_header_v4(src, dst, 6, total - 20);
    TcpPacket::new_unchecked(&mut frame[34..]).set_checksum(pseudo);
    let vnet = VirtioNetRepr {
        needs_csum: true,
        csum_start: 34,
        csum_offset: 16,
        gso_type: GsoType::TcpV4,
        gso_size: 1398,
        ..VirtioNetRepr::NONE
    };
    let vxlan = [8, 0, 0, 0, 0, 0, 42, 0];
    let mut out = segment::SegmentHeaders::new();
    // The segments as they would arrive at the far end, built before counting starts.
    let arrived: Vec<Vec<u8>> = segment::split_tcp(
        &frame,
        &FrameLayout::dissect(&frame),
        &vnet,
        &vxlan,
        &mut out,
    )
    .unwrap()
    .iter()
    .map(|s| {
        let mut f = s.header[8..].to_vec();
        f.extend_from_slice(&frame[s.payload]);
        f
    })
    .collect();
    let mut head = arrived[0].clone();
    let mut plain = capture[50..].to_vec();
    let mut sink = 0u64;
    // The pipeline's side: a network that floods to one VTEP and admits it.
    let vni = Vni::new(VNI).unwrap();
    let vtep = Vtep {
        ip: Ipv4Addr::new(198, 18, 0, 2),
        port: 4789,
        vni,
    };
    let mut switch = Switch::new();
    switch.add_network(vni, NetworkConfig::default()).unwrap();
    switch.network_mut(vni).unwrap().flood_add(vtep).unwrap();
    let now = Timestamp::from_secs(1);
    let (ports, sockets) = (PortRange::default(), [49152u16, 57344]);
    let mut frames = TapFrames::new(4, 65_550);
    let mut egress = Egress::new(4, sockets.len());
    let mut ingress = Ingress::new(4);
    let pristine: Vec<u8> = arrived.iter().flat_map(|f| datagram(f)).collect();
    let mut train = vec![HeldDatagram {
        segment_size: Some((8 + arrived[0].len()) as u16),
        ..HeldDatagram::new(SocketAddrV4::new(vtep.ip, 50000), pristine.clone())
    }];
    let (mut coalesced, mut writes) = (0, 0);

    let allocations = allocations_during(|| {
        for _ in 0..10 {
            let segments = segment::split_tcp(
                &frame,
                &FrameLayout::dissect(&frame),
                &vnet,
                &vxlan,
                &mut out,
            )
            .unwrap();
            for s in segments.iter() {
                sink += s.header.len() as u64 + s.payload.len() as u64;
            }
            segment::finish_checksum(&mut plain, 34, 16).unwrap();
            sink += u64::from(offload::tap_header(&frame, &FrameLayout::dissect(&frame), 1450)[1]);
            let first = coalesce::inspect(&arrived[0], &FrameLayout::dissect(&arrived[0])).unwrap();
            let (mut last, mut payload) = (first, first.payload_len());
            for next_frame in &arrived[1..] {
                let next =
                    coalesce::inspect(next_frame, &FrameLayout::dissect(next_frame)).unwrap();
                assert!(coalesce::continues(
                    &arrived[0],
                    &first,
                    &last,
                    payload,
                    next_frame,
                    &next
                ));
                payload += next.payload_len();
                last = next;
            }
            head.copy_from_slice(&arrived[0]);
            sink += u64::from(coalesce::finish(&mut head, &first, payload, last.psh())[1]);
            // The same through the pipeline: the superframe from a TAP, cut for sending...
            frames.clear();
            let buf = frames.next_buffer().unwrap();
            buf[..12].copy_from_slice(&vnet.to_bytes());
            buf[12..12 + frame.len()].copy_from_slice(&frame);
            frames.commit(12 + frame.len());
            egress.prepare(&mut frames, &ports);
            egress.decide(&frames, vni, &mut switch, now, &sockets);
            for (_, copies) in egress.groups() {
                for &k in copies {
                    sink += egress.segments(&frames, k, &mut out).unwrap().len() as u64;
                }
            }
            // ...and its segments as one GRO train from the underlay, coalesced back.
            train[0].payload.copy_from_slice(&pristine);
            ingress.decide(&train, true, &mut switch, now, |_| {
                Some(LinkInfo { slot: 0, mtu: 1450 })
            });
            ingress.plan(&mut train);
            let mut parts: [&[u8]; MAX_RUN] = [&[]; MAX_RUN];
            for write in ingress.writes() {
                coalesced += write.frames;
                writes += 1;
                sink += ingress.parts(write.run, &train, &mut parts) as u64;
            }
        }
    });
    assert!(sink > 0 && arrived.len() > 20, "the loop really worked");
    assert_eq!(coalesced, 10 * arrived.len(), "every segment was delivered");
    assert_eq!(writes, 10, "each train became one superframe");
    assert_eq!(allocations, 0, "offload paths allocated");
}

/// Cutting a USO superframe (a `UDP_SEGMENT` send as the TAP hands it over), IPv4 and IPv6,
/// must not allocate either.
#[test]
fn uso_split_does_not_allocate() {
    use vxtap_dataplane::segment;
    use vxtap_dataplane::wire::{checksum, GsoType, Ipv4Packet, VirtioNetRepr};

    // The captured datagram grown to 30 000 bytes of payload, its checksum pending.
    let capture = include_bytes!("../testdata/kernel/udp_datagram.bin");
    let mut v4 = capture[50..50 + 14 + 20 + 8].to_vec();
    v4.extend((0..30_000).map(|i| i as u8));
    let udp_len = (v4.len() - 34) as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut v4[14..]);
    ip.set_total_len(20 + udp_len);
    ip.fill_checksum();
    let pseudo = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), 17, udp_len);
    v4[38..40].copy_from_slice(&udp_len.to_be_bytes());
    v4[40..42].copy_from_slice(&pseudo.to_be_bytes());
    // The same over IPv6: fd00::1 -> fd00::2.
    let mut v6 = v4[..12].to_vec();
    v6.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    v6.extend_from_slice(&udp_len.to_be_bytes());
    v6.extend_from_slice(&[17, 64]);
    v6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    v6.extend_from_slice(&v4[34..]);
    let vnet = VirtioNetRepr {
        needs_csum: true,
        csum_offset: 6,
        gso_type: GsoType::UdpL4,
        gso_size: 1400,
        ..VirtioNetRepr::NONE
    };
    let vxlan = [8, 0, 0, 0, 0, 0, 42, 0];
    let mut out = segment::SegmentHeaders::new();
    for frame in [&v4, &v6] {
        assert_eq!(
            segment::split_udp(frame, &FrameLayout::dissect(frame), &vnet, &vxlan, &mut out)
                .unwrap()
                .len(),
            22
        );
    }
    let mut sink = 0u64;
    let allocations = allocations_during(|| {
        for _ in 0..10 {
            for frame in [&v4, &v6] {
                let segments = segment::split_udp(
                    frame,
                    &FrameLayout::dissect(frame),
                    &vnet,
                    &vxlan,
                    &mut out,
                )
                .unwrap();
                for s in segments.iter() {
                    sink += s.header.len() as u64 + s.payload.len() as u64;
                }
                let superframe =
                    segment::UdpSuperframe::parse(frame, &FrameLayout::dissect(frame), &vnet)
                        .unwrap();
                sink += superframe.split(&vxlan, 5, &mut out).unwrap().len() as u64;
            }
        }
    });
    assert!(sink > 0, "the loop really worked");
    assert_eq!(allocations, 0, "the USO split allocated");
}

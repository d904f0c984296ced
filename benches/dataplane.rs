//! Per-frame cost of the packet core on one core: decap, encap, table lookups at three table
//! sizes, switch ingress from each side, the ARP proxy reply, and the whole core path a frame
//! pair takes (decap + switch from the UDP side, switch + encap from the TAP side).
//!
//! Also the offload paths, per segment: cutting a 64 KB TSO superframe into MSS segments
//! (headers, checksums), cutting a 64 KB USO superframe into datagrams, and recognising the
//! TSO segments as one run on the way back.
//!
//! Run: `cargo bench --bench dataplane`, then `python3 benches/summary.py` for the table of
//! ns/frame and Mframes/s. Inputs are frames captured from the kernel vxlan device.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;
use vxtap_dataplane::coalesce;
use vxtap_dataplane::dissect::Layout;
use vxtap_dataplane::segment::{self, SegmentHeaders};
use vxtap_dataplane::switch::{FdbLimits, ForwardingTable, NetworkConfig, Switch, ARP_REPLY_LEN};
use vxtap_dataplane::tunnel::{self, DecapPolicy, PortRange, Vtep};
use vxtap_dataplane::wire::{
    checksum, EthernetFrame, GsoType, Ipv4Packet, MacAddr, TcpPacket, VirtioNetRepr, Vni,
};
use vxtap_dataplane::{NetworkAction, TapAction, Timestamp};

const OUTER: usize = 14 + 20 + 8;

fn capture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/dataplane/testdata/kernel/{name}.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The UDP payload (VXLAN header + inner frame) of a captured frame.
fn payload(name: &str) -> Vec<u8> {
    capture(name)[OUTER..].to_vec()
}

fn vni() -> Vni {
    Vni::new(42).unwrap()
}

fn host(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, i)
}

fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([2, 0x42, b[0], b[1], b[2], b[3]])
}

/// A switch as host A sees the captures: host B (198.18.0.2) on the flood list, B's container
/// static, the proxy entry for it, learning on.
fn switch() -> Switch {
    let mut s = Switch::new();
    let config = NetworkConfig {
        gateway: Some(Ipv4Addr::new(10, 0, 0, 254)),
        ..Default::default()
    };
    s.add_network(vni(), config).unwrap();
    let n = s.network_mut(vni()).unwrap();
    let b = Vtep {
        ip: host(2),
        port: 4789,
        vni: vni(),
    };
    n.flood_add(b).unwrap();
    n.fdb_add(
        "02:42:0a:00:00:02".parse().unwrap(),
        b,
        Timestamp::from_secs(0),
    )
    .unwrap();
    n.neigh_add(
        Ipv4Addr::new(10, 0, 0, 2),
        "02:42:0a:00:00:02".parse().unwrap(),
    )
    .unwrap();
    s
}

fn tunnel_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("tunnel");
    g.throughput(Throughput::Elements(1));
    let datagram = payload("tcp_data");
    let policy = DecapPolicy::default();
    g.bench_function("decap", |b| {
        b.iter(|| tunnel::decap(black_box(&datagram)).and_then(|p| tunnel::check(&p, &policy)))
    });
    let inner = &datagram[8..];
    let vtep = Vtep {
        ip: host(2),
        port: 4789,
        vni: vni(),
    };
    let ports = PortRange::default();
    g.bench_function("encap", |b| {
        b.iter(|| {
            let frame = black_box(inner);
            tunnel::encap(frame, &Layout::dissect(frame), &vtep, &ports)
        })
    });
    g.finish();
}

fn lookup_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb_lookup");
    g.throughput(Throughput::Elements(1));
    for size in [10u32, 10_000, 100_000] {
        let mut table = ForwardingTable::new(FdbLimits {
            max_learned: 1,
            ageing_ms: 300_000,
        });
        for i in 0..size {
            let vtep = Vtep {
                ip: host((i % 200) as u8 + 1),
                port: 4789,
                vni: vni(),
            };
            table
                .add_static(mac(i), vtep, Timestamp::from_secs(0))
                .unwrap();
        }
        // Visit entries in a scattered order so the larger tables miss in cache as they would.
        let probes: Vec<MacAddr> = (0..4096u32)
            .map(|i| mac(i.wrapping_mul(2_654_435_761) % size))
            .collect();
        let now = Timestamp::from_secs(1);
        g.bench_function(format!("{size}"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                table.lookup(black_box(&probes[i]), now).is_some()
            })
        });
    }
    g.finish();
}

fn switch_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1));
    let now = Timestamp::from_secs(1);
    // TAP side: A's container sends to B's, a static entry.
    let to_b = payload("tcp_data")[8..].to_vec();
    let mut s = switch();
    let mut reply = [0u8; ARP_REPLY_LEN];
    g.bench_function("tap_ingress", |b| {
        b.iter(|| {
            matches!(
                s.from_tap(vni(), black_box(&to_b), now, &mut reply),
                TapAction::Forward(_)
            )
        })
    });
    // UDP side: B's reply arrives from B, admitted, refreshing a learned entry.
    let from_b = payload("tcp_synack");
    let src = SocketAddrV4::new(host(2), 49940);
    let mut s = switch();
    g.bench_function("udp_ingress", |b| {
        b.iter(|| {
            matches!(
                s.from_network(src, tunnel::decap(black_box(&from_b)), now),
                NetworkAction::Deliver { .. }
            )
        })
    });
    // ARP proxy: A asks who has 10.0.0.2; the switch answers from its table.
    let request = payload("arp_request_a_to_b")[8..].to_vec();
    let mut s = switch();
    g.bench_function("arp_proxy_reply", |b| {
        b.iter(|| {
            matches!(
                s.from_tap(vni(), black_box(&request), now, &mut reply),
                TapAction::ReplyArp
            )
        })
    });
    // The core path of one frame each way: decap + switch + encap.
    let mut s = switch();
    let ports = PortRange::default();
    g.bench_function("decap_switch_encap", |b| {
        b.iter(|| {
            let delivered = matches!(
                s.from_network(src, tunnel::decap(black_box(&from_b)), now),
                NetworkAction::Deliver { .. }
            );
            let port = match s.from_tap(vni(), black_box(&to_b), now, &mut reply) {
                TapAction::Forward(vtep) => {
                    tunnel::encap(&to_b, &Layout::dissect(&to_b), &vtep, &ports).src_port
                }
                _ => 0,
            };
            (delivered, port)
        })
    });
    g.finish();

    // Learning a new MAC (insert, including the occasional in-place rehash): 1024 per batch.
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1024));
    let frames: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| {
            let mut d = from_b.clone();
            EthernetFrame::new_unchecked(&mut d[8..]).set_src_addr(mac(i));
            d
        })
        .collect();
    g.bench_function("udp_ingress_learn_new", |b| {
        b.iter_batched_ref(
            || {
                let mut s = Switch::new();
                let config = NetworkConfig {
                    max_learned: 1024,
                    ..Default::default()
                };
                s.add_network(vni(), config).unwrap();
                s.network_mut(vni())
                    .unwrap()
                    .flood_add(Vtep {
                        ip: host(2),
                        port: 4789,
                        vni: vni(),
                    })
                    .unwrap();
                s
            },
            |s| {
                for f in &frames {
                    black_box(s.from_network(src, tunnel::decap(f), now));
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A TCP superframe of `payload` bytes grown from the captured data segment, its checksum
/// pending as a TSO sender leaves it, and the virtio-net header the TAP would hand over.
fn superframe(payload: usize, mss: u16) -> (Vec<u8>, VirtioNetRepr) {
    let mut frame = payload_of_capture("tcp_data");
    let headers = 14 + 20 + usize::from(frame[14 + 20 + 12] >> 4) * 4;
    frame.truncate(headers);
    frame.extend((0..payload).map(|i| i as u8));
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
        gso_size: mss,
        ..VirtioNetRepr::NONE
    };
    (frame, vnet)
}

/// A USO superframe (one `UDP_SEGMENT` send) of `payload` bytes grown from the captured
/// datagram, its checksum pending, and the virtio-net header the TAP would hand over.
fn udp_superframe(payload: usize, gso_size: u16) -> (Vec<u8>, VirtioNetRepr) {
    let mut frame = payload_of_capture("udp_datagram");
    frame.truncate(14 + 20 + 8);
    frame.extend((0..payload).map(|i| i as u8));
    let udp_len = (frame.len() - 34) as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.set_total_len(20 + udp_len);
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let pseudo = checksum::pseudo_header_v4(src, dst, 17, udp_len);
    frame[38..40].copy_from_slice(&udp_len.to_be_bytes());
    frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
    let vnet = VirtioNetRepr {
        needs_csum: true,
        csum_start: 34,
        csum_offset: 6,
        gso_type: GsoType::UdpL4,
        gso_size,
        ..VirtioNetRepr::NONE
    };
    (frame, vnet)
}

fn payload_of_capture(name: &str) -> Vec<u8> {
    payload(name)[8..].to_vec()
}

fn offload_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload");
    // The internet checksum over 64 KiB: every byte is summed once when a superframe is
    // cut (each segment's TCP checksum) and once when segments are checked for coalescing.
    let block: Vec<u8> = (0..65_536u32).map(|i| (i * 31 % 251) as u8).collect();
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.bench_function("checksum_64k", |b| {
        b.iter(|| checksum::data(black_box(&block)))
    });
    // A 64 000-byte superframe at the MSS a 1450-MTU container uses: 46 segments.
    let (frame, vnet) = superframe(64_000, 1398);
    let vxlan = [8, 0, 0, 0, 0, 0, 42, 0];
    let mut out = SegmentHeaders::new();
    let count = segment::split_tcp(&frame, &Layout::dissect(&frame), &vnet, &vxlan, &mut out)
        .unwrap()
        .len() as u64;
    g.throughput(Throughput::Elements(count));
    g.bench_function("split_64k_superframe", |b| {
        b.iter(|| {
            let frame = black_box(&frame);
            segment::split_tcp(frame, &Layout::dissect(frame), &vnet, &vxlan, &mut out)
                .map(|s| s.len())
        })
    });
    // A 64 000-byte UDP_SEGMENT send at gso_size 1400: 46 datagrams.
    let (uso_frame, uso_vnet) = udp_superframe(64_000, 1400);
    let uso_count = segment::split_udp(
        &uso_frame,
        &Layout::dissect(&uso_frame),
        &uso_vnet,
        &vxlan,
        &mut out,
    )
    .unwrap()
    .len() as u64;
    g.throughput(Throughput::Elements(uso_count));
    g.bench_function("split_64k_uso_superframe", |b| {
        b.iter(|| {
            let frame = black_box(&uso_frame);
            segment::split_udp(frame, &Layout::dissect(frame), &uso_vnet, &vxlan, &mut out)
                .map(|s| s.len())
        })
    });
    g.throughput(Throughput::Elements(count));
    // The same segments, as they arrive, grouped back into one run.
    let segments: Vec<Vec<u8>> = {
        let s =
            segment::split_tcp(&frame, &Layout::dissect(&frame), &vnet, &vxlan, &mut out).unwrap();
        s.iter()
            .map(|seg| {
                let mut f = seg.header[8..].to_vec();
                f.extend_from_slice(&frame[seg.payload]);
                f
            })
            .collect()
    };
    g.bench_function("coalesce_64k_run", |b| {
        b.iter(|| {
            let first_frame = &segments[0];
            let first = coalesce::inspect(first_frame, &Layout::dissect(first_frame)).unwrap();
            let (mut last, mut total) = (first, first.payload_len());
            for next_frame in &segments[1..] {
                let next_frame = black_box(next_frame);
                let next = coalesce::inspect(next_frame, &Layout::dissect(next_frame)).unwrap();
                assert!(coalesce::continues(
                    first_frame,
                    &first,
                    &last,
                    total,
                    next_frame,
                    &next
                ));
                total += next.payload_len();
                last = next;
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = tunnel_benches, lookup_benches, switch_benches, offload_benches
}
criterion_main!(benches);

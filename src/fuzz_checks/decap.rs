//! Fuzz property for UDP payloads arriving from the underlay.

use std::net::{Ipv4Addr, SocketAddrV4};
use vxtap_dataplane::dissect::Layout;
use vxtap_dataplane::offload;
use vxtap_dataplane::switch::{Admission, NetworkConfig, Switch};
use vxtap_dataplane::tunnel::{self, DecapPolicy, Vtep};
use vxtap_dataplane::wire::{
    ArpPacket, ArpRepr, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket,
    TcpRepr, UdpPacket, UdpRepr, Vni, VxlanPacket, VxlanRepr,
};
use vxtap_dataplane::{NetworkAction, Timestamp};

/// A known VTEP of the switch under test; datagrams "come from" it or from a stranger.
const KNOWN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);

/// A switch with VNI 42 (admits known VTEPs, strict) and VNI 43 (admits anyone, lenient,
/// tagged frames allowed), so both policies see every input.
fn switch() -> Switch {
    let mut s = Switch::new();
    let v42 = Vni::new(42).expect("42 fits in 24 bits");
    let v43 = Vni::new(43).expect("43 fits in 24 bits");
    s.add_network(v42, NetworkConfig::default())
        .expect("fresh switch");
    let open = NetworkConfig {
        admission: Admission::Any,
        decap: DecapPolicy {
            strict_reserved: false,
            allow_inner_vlan: true,
        },
        max_learned: 4,
        ..Default::default()
    };
    s.add_network(v43, open).expect("fresh switch");
    let n = s.network_mut(v42).expect("just added");
    n.flood_add(Vtep {
        ip: KNOWN,
        port: 4789,
        vni: v42,
    })
    .expect("valid VTEP");
    s
}

/// See the module docs of `fuzz_checks`.
pub fn decap(data: &[u8]) {
    if let Ok(packet) = VxlanPacket::new_checked(data) {
        if let Ok(repr) = VxlanRepr::parse(&packet) {
            assert_eq!(
                repr.to_bytes()[..],
                data[..8],
                "VXLAN header re-emits identically"
            );
        }
    }
    let lenient = DecapPolicy {
        strict_reserved: false,
        allow_inner_vlan: true,
    };
    for policy in [DecapPolicy::default(), lenient] {
        let Ok(inner) = tunnel::decap(data) else {
            continue;
        };
        assert_eq!(inner.frame, &data[8..]);
        if let Ok(src) = tunnel::check(&inner, &policy) {
            assert!(inner.frame.len() >= 14 && src.is_unicast());
            inner_protocols(inner.frame);
            let layout = Layout::dissect(inner.frame);
            if let Some(ip) = layout.ip() {
                assert!(ip.l3 <= ip.l4 && ip.l4 <= ip.end && ip.end <= inner.frame.len());
            }
            tunnel::flow_hash(inner.frame, &layout);
            if let Some(p) = offload::pending_checksum(inner.frame, &layout) {
                let at = usize::from(p.csum_start) + usize::from(p.csum_offset);
                assert!(
                    at + 2 <= inner.frame.len(),
                    "pending checksum lies inside the frame"
                );
            }
        }
    }
    let mut s = switch();
    for ip in [KNOWN, STRANGER] {
        let action = s.from_network(
            SocketAddrV4::new(ip, 50000),
            tunnel::decap(data),
            Timestamp::from_secs(1),
        );
        if let NetworkAction::Deliver { frame, .. } = action {
            let range = data.as_ptr_range();
            assert!(range.contains(&frame.as_ptr()) && frame.len() == data.len() - 8);
        }
    }
    let drops: u64 = s
        .networks()
        .map(|n| n.counters().drops.total())
        .sum::<u64>()
        + s.counters().drops.total();
    let delivered: u64 = s.networks().map(|n| n.counters().delivered).sum();
    assert_eq!(
        drops + delivered,
        2,
        "each datagram is delivered or counted as one drop"
    );
}

/// `emitted` must equal `original`, except that a checksum field (at `checksum_at`) of 0xffff
/// may come back as 0x0000: both encode a ones-complement zero and both verify, but an emitter
/// computes one of them (RFC 1624 section 3).
fn assert_same(emitted: &[u8], original: &[u8], checksum_at: usize, what: &str) {
    let field = checksum_at..checksum_at + 2;
    let negative_zero = original[field.clone()] == [0xff, 0xff] && emitted[field.clone()] == [0, 0];
    if negative_zero {
        assert_eq!(
            emitted[..field.start],
            original[..field.start],
            "{what} re-emits identically"
        );
        assert_eq!(
            emitted[field.end..],
            original[field.end..],
            "{what} re-emits identically"
        );
    } else {
        assert_eq!(emitted, original, "{what} re-emits identically");
    }
}

/// Parses whatever the inner frame carries; what parses must re-emit byte for byte.
fn inner_protocols(frame: &[u8]) {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return;
    };
    let Ok(vlan) = eth.vlan() else {
        return;
    };
    let l3 = &frame[vlan.payload_offset..];
    match vlan.ethertype {
        EtherType::ARP => {
            if let Ok(packet) = ArpPacket::new_checked(l3) {
                let repr = ArpRepr::parse(&packet).expect("checked ARP parses");
                let mut out = [0u8; 28];
                repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
                assert_eq!(out[..], l3[..28], "ARP re-emits identically");
            }
        }
        EtherType::IPV4 => ipv4(l3),
        _ => {}
    }
}

fn ipv4(l3: &[u8]) {
    let Ok(packet) = Ipv4Packet::new_checked(l3) else {
        return;
    };
    let Ok(repr) = Ipv4Repr::parse(&packet) else {
        return;
    };
    let mut header = [0u8; 20];
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut header[..]));
    assert_same(&header, &l3[..20], 10, "IPv4 header");
    if repr.more_frags || repr.frag_offset != 0 {
        return;
    }
    let (src, dst) = (repr.src_addr, repr.dst_addr);
    let l4 = packet.payload();
    match repr.protocol {
        IpProtocol::UDP => {
            if let Ok(udp) = UdpPacket::new_checked(l4) {
                if let (Ok(repr), true) = (UdpRepr::parse(&udp, src, dst), udp.checksum() != 0) {
                    let datagram = &l4[..usize::from(udp.len())];
                    let mut out = datagram.to_vec();
                    let payload_len = datagram.len() - 8;
                    repr.emit(
                        &mut UdpPacket::new_unchecked(&mut out[..]),
                        src,
                        dst,
                        payload_len,
                    );
                    assert_eq!(out, datagram, "UDP re-emits identically");
                }
            }
        }
        IpProtocol::TCP => {
            if let Ok(tcp) = TcpPacket::new_checked(l4) {
                if let Ok(repr) = TcpRepr::parse(&tcp, src, dst) {
                    let mut out = l4.to_vec();
                    repr.emit(&mut TcpPacket::new_unchecked(&mut out[..]), src, dst);
                    assert_same(&out, l4, 16, "TCP segment");
                }
            }
        }
        _ => {}
    }
}

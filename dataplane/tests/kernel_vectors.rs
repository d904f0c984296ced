//! Frames captured from the Linux kernel's vxlan device (dataplane/testdata/kernel, made by
//! capture-kernel.sh) go through every parser: outer Ethernet, IPv4 and UDP with their
//! checksums, the VXLAN header, the switch's decapsulation, and the inner protocols. Every
//! header that parses re-emits byte for byte, and our encapsulation reproduces the kernel's
//! VXLAN header exactly.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use vxtap_dataplane::switch::{NetworkConfig, Switch};
use vxtap_dataplane::tunnel::{self, PortRange, Vtep};
use vxtap_dataplane::wire::*;
use vxtap_dataplane::{NetworkAction, Timestamp};

fn captures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/kernel");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected the captured vectors in {}",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn hosts() -> [Ipv4Addr; 2] {
    [Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)]
}

/// Outer layers; returns (source address, UDP payload).
fn outer(name: &str, frame: &[u8]) -> (SocketAddrV4, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let repr = EthernetRepr::parse(&eth).unwrap();
    assert_eq!(repr.ethertype, EtherType::IPV4, "{name}");
    let mut out = [0u8; 14];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
    assert_eq!(out[..], frame[..14], "{name}: Ethernet re-emits");

    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum(), "{name}: outer IPv4 checksum");
    let ip_repr = Ipv4Repr::parse(&ip).unwrap();
    assert_eq!(ip_repr.protocol, IpProtocol::UDP);
    assert!(hosts().contains(&ip_repr.src_addr) && hosts().contains(&ip_repr.dst_addr));
    let mut header = [0u8; 20];
    ip_repr.emit(&mut Ipv4Packet::new_unchecked(&mut header[..]));
    assert_eq!(
        header[..],
        eth.payload()[..20],
        "{name}: outer IPv4 re-emits"
    );

    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(udp.dst_port(), vxlan::DEFAULT_PORT, "{name}");
    assert!(
        udp.verify_checksum(ip_repr.src_addr, ip_repr.dst_addr),
        "{name}: outer UDP checksum"
    );
    let udp_repr = UdpRepr::parse(&udp, ip_repr.src_addr, ip_repr.dst_addr).unwrap();
    let mut datagram = ip.payload().to_vec();
    let payload_len = datagram.len() - 8;
    udp_repr.emit(
        &mut UdpPacket::new_unchecked(&mut datagram[..]),
        ip_repr.src_addr,
        ip_repr.dst_addr,
        payload_len,
    );
    if udp.checksum() != 0 {
        assert_eq!(datagram, ip.payload(), "{name}: outer UDP re-emits");
    }
    (
        SocketAddrV4::new(ip_repr.src_addr, udp.src_port()),
        udp.payload().to_vec(),
    )
}

/// Inner layers: checksums verify and headers re-emit.
fn inner(name: &str, frame: &[u8]) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let vlan = eth.vlan().unwrap();
    assert_eq!(vlan.tags, 0, "{name}: the kernel sent no tags");
    let l3 = eth.payload();
    match eth.ethertype() {
        EtherType::ARP => {
            let arp = ArpRepr::parse(&ArpPacket::new_checked(l3).unwrap()).unwrap();
            let mut out = [0u8; 28];
            arp.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
            assert_eq!(out[..], l3[..28], "{name}: ARP re-emits");
        }
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).unwrap();
            let repr = Ipv4Repr::parse(&ip).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut header = [0u8; 20];
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut header[..]));
            assert_eq!(header[..], l3[..20], "{name}: inner IPv4 re-emits");
            let (src, dst) = (repr.src_addr, repr.dst_addr);
            let fragment = repr.more_frags || repr.frag_offset != 0;
            match repr.protocol {
                IpProtocol::TCP => {
                    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
                    let tcp_repr = TcpRepr::parse(&tcp, src, dst).unwrap();
                    let mut out = ip.payload().to_vec();
                    tcp_repr.emit(&mut TcpPacket::new_unchecked(&mut out[..]), src, dst);
                    assert_eq!(out, ip.payload(), "{name}: TCP re-emits");
                }
                IpProtocol::UDP => {
                    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                    assert!(udp.verify_checksum(src, dst), "{name}: inner UDP checksum");
                }
                IpProtocol::ICMP if !fragment => {
                    assert_eq!(
                        checksum::data(ip.payload()),
                        0xffff,
                        "{name}: ICMP checksum"
                    );
                }
                _ => assert!(fragment || repr.protocol == IpProtocol::ICMP, "{name}"),
            }
        }
        EtherType::IPV6 => assert_eq!(l3[0] >> 4, 6, "{name}"),
        other => panic!("{name}: unexpected inner ethertype {other:?}"),
    }
}

#[test]
fn kernel_frames_parse_and_re_emit() {
    for (name, frame) in captures() {
        let (_, payload) = outer(&name, &frame);
        let vx = VxlanPacket::new_checked(&payload[..]).unwrap();
        let repr = VxlanRepr::parse(&vx).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = if name.starts_with("vni43") { 43 } else { 42 };
        assert_eq!(repr.vni.get(), expected, "{name}");
        assert_eq!(repr.to_bytes()[..], payload[..8], "{name}: VXLAN re-emits");
        inner(&name, vx.payload());
    }
}

#[test]
fn switch_accepts_every_kernel_frame_and_learns_its_sender() {
    let mut switch = Switch::new();
    let [a, b] = hosts();
    for vni in [42, 43] {
        let vni = Vni::new(vni).unwrap();
        switch.add_network(vni, NetworkConfig::default()).unwrap();
        let net = switch.network_mut(vni).unwrap();
        for ip in [a, b] {
            net.flood_add(Vtep {
                ip,
                port: 4789,
                vni,
            })
            .unwrap();
        }
    }
    for (name, frame) in captures() {
        let (src, payload) = outer(&name, &frame);
        match switch.from_network(src, tunnel::decap(&payload), Timestamp::from_secs(1)) {
            NetworkAction::Deliver { frame: inner, .. } => {
                assert_eq!(inner, &payload[8..], "{name}")
            }
            NetworkAction::Drop(reason) => panic!("{name}: dropped as {reason}"),
        }
        let inner_src = EthernetFrame::new_checked(&payload[8..])
            .unwrap()
            .src_addr();
        let vni = VxlanPacket::new_checked(&payload[..]).unwrap().vni();
        let entry = switch.network(vni).unwrap().fdb().get(&inner_src).unwrap();
        assert_eq!(
            entry.vtep,
            Vtep {
                ip: *src.ip(),
                port: 4789,
                vni
            },
            "{name}"
        );
    }
}

#[test]
fn our_encapsulation_matches_the_kernel_header() {
    for (name, frame) in captures() {
        let (src, payload) = outer(&name, &frame);
        let vx = VxlanPacket::new_checked(&payload[..]).unwrap();
        let dst = if *src.ip() == hosts()[0] {
            hosts()[1]
        } else {
            hosts()[0]
        };
        let vtep = Vtep {
            ip: dst,
            port: 4789,
            vni: vx.vni(),
        };
        let inner = vx.payload();
        let e = tunnel::encap(
            inner,
            &vxtap_dataplane::dissect::Layout::dissect(inner),
            &vtep,
            &PortRange::default(),
        );
        assert_eq!(e.header[..], payload[..8], "{name}");
        assert_eq!(e.dst, SocketAddrV4::new(dst, 4789));
        assert!(e.src_port >= 49152, "{name}");
    }
}

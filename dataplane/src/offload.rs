//! Checksum offload state of inner frames on their way to a TAP.
//!
//! A Linux sender hands a TCP or UDP segment to its device with the checksum field holding
//! only the pseudo-header sum (CHECKSUM_PARTIAL), for the NIC to finish. Across a veth, or
//! from a VM whose virtio NIC offloads checksums, nobody ever finishes it: the kernel's own
//! vxlan device sends such segments through the tunnel as they are, and its peers accept them
//! because the skb metadata says "partial" — metadata a UDP socket does not deliver. Written
//! to a TAP as an ordinary frame, such a segment fails the receiver's checksum check.
//!
//! [`pending_checksum`] recognises a segment whose checksum field equals its pseudo-header
//! sum, and [`tap_header`] then asks the TAP to carry it as partial (`NEEDS_CSUM`, with where
//! the checksum starts and lies), which is exactly what the sender meant: the kernel delivers
//! it locally as verified and finishes the checksum if it forwards it to real hardware. Every
//! other frame goes to the TAP with no offload, so the kernel verifies its checksums as usual.
//!
//! The same senders also pass TSO superframes through a veth unsegmented: a UDP socket then
//! receives one datagram holding a TCP segment far larger than the TAP's MTU. Such a frame
//! (pending checksum, TCP, longer than the MTU) goes to the TAP as a GSO frame with a segment
//! size that fits the MTU, and the kernel cuts it up; without that the bridge would drop it.
//!
//! Pure: no I/O, no allocation.

use crate::dissect::Layout;
use crate::wire::{GsoType, IpProtocol, VirtioNetRepr};

/// Where a segment's unfinished checksum starts and lies, as virtio-net names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingChecksum {
    /// Offset of the TCP/UDP header in the frame.
    pub csum_start: u16,
    /// Offset of the checksum field in that header (16 for TCP, 6 for UDP).
    pub csum_offset: u16,
    /// For TCP, what segmenting it takes.
    pub tcp: Option<TcpShape>,
}

/// What the kernel needs to cut a TCP segment into smaller ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpShape {
    /// Over IPv6 (else IPv4).
    pub ipv6: bool,
    /// Bytes of the IP header.
    pub ip_header_len: u16,
    /// Bytes of the TCP header, options included.
    pub tcp_header_len: u16,
    /// Bytes from the IP header to the end of the segment.
    pub l3_len: usize,
    /// CWR is set (the segments need ECN handling).
    pub cwr: bool,
}

const TCP_CHECKSUM_AT: usize = 16;
const UDP_CHECKSUM_AT: usize = 6;

/// The pending checksum of a TCP or UDP segment over IPv4 or IPv6 (no extension headers,
/// not a fragment) whose checksum field holds just its pseudo-header sum, read from `frame`
/// where `layout` (its dissection) says; `None` for every other frame, including ones too
/// short or malformed to tell.
pub fn pending_checksum(frame: &[u8], layout: &Layout) -> Option<PendingChecksum> {
    let ip = layout.ip().filter(|ip| ip.has_transport())?;
    let l4 = frame.get(ip.l4..ip.end)?;
    let csum_offset = match ip.protocol {
        IpProtocol::TCP if l4.len() >= 20 => TCP_CHECKSUM_AT,
        IpProtocol::UDP if l4.len() >= 8 => UDP_CHECKSUM_AT,
        _ => return None,
    };
    // An IPv4 upper layer is at most 65535 - 20 bytes, an IPv6 one at most 65535.
    let pseudo = ip.pseudo_header(frame, ip.protocol, l4.len());
    let field = u16::from_be_bytes([l4[csum_offset], l4[csum_offset + 1]]);
    // A UDP checksum of zero means "none" over IPv4, not "pending".
    if field == 0 || field != pseudo {
        return None;
    }
    let tcp = (ip.protocol == IpProtocol::TCP).then(|| {
        let offset_flags = u16::from_be_bytes([l4[12], l4[13]]);
        TcpShape {
            ipv6: ip.ipv6,
            ip_header_len: ip.header_len() as u16,
            tcp_header_len: (offset_flags >> 12) * 4,
            l3_len: ip.end - ip.l3,
            cwr: offset_flags & 0x0080 != 0,
        }
    });
    Some(PendingChecksum {
        csum_start: u16::try_from(ip.l4).ok()?,
        csum_offset: csum_offset as u16,
        tcp,
    })
}

/// The virtio-net header to write `frame` (dissected as `layout`) to a TAP whose MTU is
/// `mtu`: `NEEDS_CSUM` for a pending checksum, plus TCP segmentation when such a TCP segment
/// does not fit the MTU; otherwise no offload at all.
pub fn tap_header(
    frame: &[u8],
    layout: &Layout,
    mtu: u32,
) -> [u8; crate::wire::virtio_net::HEADER_LEN] {
    let Some(p) = pending_checksum(frame, layout) else {
        return VirtioNetRepr::NONE.to_bytes();
    };
    let mut header = VirtioNetRepr {
        needs_csum: true,
        csum_start: p.csum_start,
        csum_offset: p.csum_offset,
        ..VirtioNetRepr::NONE
    };
    if let Some(tcp) = p.tcp.filter(|t| t.l3_len > mtu as usize) {
        let headers = u32::from(tcp.ip_header_len) + u32::from(tcp.tcp_header_len);
        // A header longer than the MTU leaves nothing to cut to: send as is and let the
        // kernel refuse it, as it would any oversize frame.
        if let Some(size) = mtu.checked_sub(headers).filter(|&s| s > 0) {
            header.gso_type = if tcp.ipv6 {
                GsoType::TcpV6
            } else {
                GsoType::TcpV4
            };
            header.gso_ecn = tcp.cwr;
            header.gso_size = u16::try_from(size).unwrap_or(u16::MAX);
            header.hdr_len = p.csum_start + tcp.tcp_header_len;
        }
    }
    header.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{checksum, Ipv4Packet, TcpPacket, UdpPacket};

    fn pending(frame: &[u8]) -> Option<PendingChecksum> {
        pending_checksum(frame, &Layout::dissect(frame))
    }

    fn header_for(frame: &[u8], mtu: u32) -> [u8; 12] {
        tap_header(frame, &Layout::dissect(frame), mtu)
    }

    /// The inner frame of a kernel capture (outer headers 42 bytes, VXLAN 8).
    fn inner(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/kernel/{name}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()[50..].to_vec()
    }

    /// The same frame as a sender with checksum offload leaves it: the L4 checksum field
    /// holds the pseudo-header sum.
    fn as_partial(mut frame: Vec<u8>, offset: usize) -> Vec<u8> {
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        let len = ip.payload().len() as u16;
        let pseudo = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), ip.protocol().0, len);
        let at = 14 + ip.header_len() + offset;
        frame[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
        frame
    }

    fn parse_header(bytes: &[u8; 12]) -> VirtioNetRepr {
        VirtioNetRepr::parse(&crate::wire::VirtioNetHeader::new_checked(&bytes[..]).unwrap())
            .unwrap()
    }

    /// A TCP superframe as a TSO sender leaves it: `payload` bytes after the headers of the
    /// captured data segment, Total Length to match, checksum field = pseudo-header sum.
    fn superframe(payload: usize) -> Vec<u8> {
        let mut frame = inner("tcp_data");
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        let headers = 14 + ip.header_len() + usize::from(frame[14 + ip.header_len() + 12] >> 4) * 4;
        frame.truncate(headers);
        frame.resize(headers + payload, 0xab);
        let total = (frame.len() - 14) as u16;
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
        ip.set_total_len(total);
        ip.fill_checksum();
        as_partial(frame, TCP_CHECKSUM_AT)
    }

    #[test]
    fn tcp_superframes_are_segmented_to_the_mtu() {
        let frame = superframe(20_000);
        let header = parse_header(&header_for(&frame, 1450));
        let tcp_header_len = u16::from(frame[34 + 12] >> 4) * 4;
        assert!(header.needs_csum);
        assert_eq!(header.gso_type, GsoType::TcpV4);
        assert_eq!(header.gso_size, 1450 - 20 - tcp_header_len);
        assert_eq!(header.hdr_len, 34 + tcp_header_len);
        // A segment that fits gets no segmentation; a larger MTU may make it fit.
        assert_eq!(
            parse_header(&header_for(&superframe(1000), 1450)).gso_type,
            GsoType::None
        );
        assert_eq!(
            parse_header(&header_for(&frame, 65_000)).gso_type,
            GsoType::None
        );
        // An MTU too small for the headers leaves the frame unsegmented.
        assert_eq!(
            parse_header(&header_for(&frame, 40)).gso_type,
            GsoType::None
        );
    }

    #[test]
    fn complete_checksums_need_nothing() {
        for name in [
            "tcp_synack",
            "tcp_data",
            "udp_datagram",
            "icmp_echo_request",
            "arp_request_a_to_b",
            "icmpv6_echo_request",
        ] {
            assert_eq!(pending(&inner(name)), None, "{name}");
            assert_eq!(header_for(&inner(name), 1450), [0; 12], "{name}");
        }
    }

    #[test]
    fn partial_tcp_and_udp_are_recognised() {
        let tcp = as_partial(inner("tcp_synack"), TCP_CHECKSUM_AT);
        let p = pending(&tcp).unwrap();
        assert_eq!((p.csum_start, p.csum_offset), (34, 16));
        let shape = p.tcp.unwrap();
        assert_eq!(
            (shape.ipv6, shape.ip_header_len, shape.l3_len),
            (false, 20, 60)
        );
        let header = parse_header(&header_for(&tcp, 1450));
        assert!(header.needs_csum && !header.data_valid);
        assert_eq!(
            (header.csum_start, header.csum_offset, header.gso_type),
            (34, 16, GsoType::None)
        );

        let udp = as_partial(inner("udp_datagram"), UDP_CHECKSUM_AT);
        let p = pending(&udp).unwrap();
        assert_eq!((p.csum_start, p.csum_offset, p.tcp), (34, 6, None));
    }

    #[test]
    fn finishing_the_pending_checksum_gives_the_real_one() {
        // What the kernel will do with NEEDS_CSUM: sum from csum_start, store at csum_offset.
        let original = inner("tcp_data");
        let mut frame = as_partial(original.clone(), TCP_CHECKSUM_AT);
        let p = pending(&frame).unwrap();
        let start = usize::from(p.csum_start);
        let end = 14 + usize::from(Ipv4Packet::new_checked(&frame[14..]).unwrap().total_len());
        let sum = !checksum::data(&frame[start..end]);
        let at = start + usize::from(p.csum_offset);
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(frame, original);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(TcpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(ip.src_addr(), ip.dst_addr()));
    }

    #[test]
    fn fragments_zero_udp_and_garbage_are_left_alone() {
        let mut udp = inner("udp_datagram");
        udp[34 + 6..34 + 8].copy_from_slice(&[0, 0]);
        assert!(UdpPacket::new_checked(&udp[34..]).is_ok());
        assert_eq!(pending(&udp), None, "zero UDP checksum means none");
        let frag = inner("icmp_frag_first");
        assert_eq!(pending(&frag), None);
        let tcp = as_partial(inner("tcp_synack"), TCP_CHECKSUM_AT);
        for len in 0..tcp.len() {
            assert_eq!(pending(&tcp[..len]), None, "cut at {len}");
        }
    }

    #[test]
    fn partial_ipv6_is_recognised() {
        // Build an IPv6/UDP frame whose checksum field holds the pseudo-header sum.
        let mut f = vec![0u8; 14 + 40 + 8 + 4];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&12u16.to_be_bytes());
        f[20] = 17;
        f[22..38].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f[38..54].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let mut pseudo = [0u8; 40];
        pseudo[..32].copy_from_slice(&f[22..54]);
        pseudo[35] = 12;
        pseudo[39] = 17;
        let sum = checksum::data(&pseudo);
        f[54 + 6..54 + 8].copy_from_slice(&sum.to_be_bytes());
        let p = pending(&f).unwrap();
        assert_eq!((p.csum_start, p.csum_offset), (54, 6));
        f[60] ^= 1;
        assert_eq!(pending(&f), None);
    }
}

//! One dissection of an Ethernet frame: where its layers lie, computed once and carried with
//! the frame through the pipeline.
//!
//! ```text
//!  0        12         l3 (14, 18 or 22)        l4                     end    frame.len()
//!  | MACs   | type/tags | IPv4 (IHL) or IPv6 (40) | TCP/UDP/... + payload | padding |
//! ```
//!
//! [`Layout::dissect`] walks the Ethernet header and up to two VLAN tags (802.1Q, 802.1ad,
//! the legacy 0x9100), then an IPv4 header (options allowed) or the fixed IPv6 header, and
//! checks that the IP packet's length lies within the frame. Everything downstream reads
//! the [`Layout`] instead of parsing again: the flow hash that picks the outer source port
//! ([`crate::tunnel`]), checksum offload ([`crate::offload`]), coalescing
//! ([`crate::coalesce`]), segmentation ([`crate::segment`]), and the switch's VLAN rule.
//!
//! The dissection never fails: a frame whose IP layer cannot be used still has a layout,
//! whose [`Layout::ip`] names the first thing wrong ([`IpError`]). Upper-layer headers
//! (TCP, UDP) are read by whoever needs them, at `l4`, because what each needs differs.
//!
//! Pure: no I/O, no allocation, and no panic on any input.

use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::{ipv4, ipv6, IpProtocol, MacAddr};
use core::net::{Ipv4Addr, Ipv6Addr};

/// Why a frame's IP layer cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpError {
    /// The frame ends inside the Ethernet header, a VLAN tag or the IP header, or before the
    /// end of the packet its IP length claims.
    Truncated,
    /// More VLAN tags than [`ethernet::MAX_VLAN_TAGS`].
    TooManyTags,
    /// The EtherType after the tags is neither IPv4 nor IPv6.
    NotIp,
    /// The IP version nibble does not match the EtherType.
    WrongVersion,
    /// An IPv4 IHL below 5.
    BadHeaderLen,
    /// An IPv4 total length shorter than its header.
    BadLength,
}

/// Where the IP packet of a frame lies, and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLayout {
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the upper-layer header: after the IPv4 options, or after the fixed IPv6
    /// header (extension headers, if any, start there; see `extension`).
    pub l4: usize,
    /// End of the IP packet, at most the frame's length; bytes after it are link padding.
    pub end: usize,
    /// The IPv4 protocol or the IPv6 next header.
    pub protocol: IpProtocol,
    /// An IPv4 fragment (MF set or a non-zero offset).
    pub fragment: bool,
    /// The IPv6 next header is an extension header, so `l4` is not the upper layer.
    pub extension: bool,
}

impl IpLayout {
    /// Bytes of the IP header.
    pub fn header_len(&self) -> usize {
        self.l4 - self.l3
    }

    /// Bytes from the upper-layer header to the end of the packet.
    pub fn l4_len(&self) -> usize {
        self.end - self.l4
    }

    /// Whether `l4` is the start of a transport header: neither a fragment nor behind an
    /// IPv6 extension header.
    pub fn has_transport(&self) -> bool {
        !self.fragment && !self.extension
    }

    /// The source and destination addresses, as they lie in the header; empty for a frame
    /// too short for this layout (one it was not taken from).
    pub fn addresses<'f>(&self, frame: &'f [u8]) -> &'f [u8] {
        let range = if self.ipv6 {
            self.l3 + 8..self.l3 + 40
        } else {
            self.l3 + 12..self.l3 + 20
        };
        frame.get(range).unwrap_or(&[])
    }

    /// The pseudo-header sum for an upper layer of `protocol` and `len` bytes (0 for a frame
    /// too short for this layout).
    pub fn pseudo_header(&self, frame: &[u8], protocol: IpProtocol, len: usize) -> u16 {
        let a = self.addresses(frame);
        if self.ipv6 {
            let (Ok(src), Ok(dst)) = (
                <[u8; 16]>::try_from(a.get(..16).unwrap_or(&[])),
                <[u8; 16]>::try_from(a.get(16..).unwrap_or(&[])),
            ) else {
                return 0;
            };
            checksum::pseudo_header_v6(
                Ipv6Addr::from(src),
                Ipv6Addr::from(dst),
                protocol.0,
                len as u32,
            )
        } else {
            let Ok([s0, s1, s2, s3, d0, d1, d2, d3]) = <[u8; 8]>::try_from(a) else {
                return 0;
            };
            let src = Ipv4Addr::new(s0, s1, s2, s3);
            let dst = Ipv4Addr::new(d0, d1, d2, d3);
            checksum::pseudo_header_v4(src, dst, protocol.0, len as u16)
        }
    }
}

/// Where a frame's layers lie. `Copy`, small, and computed once per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of the frame dissected.
    pub len: usize,
    /// VLAN tags between the MACs and the L3 header.
    pub vlan_tags: usize,
    /// The EtherType after the tags (the outer one if a tag is cut short).
    pub ethertype: EtherType,
    /// Offset of the L3 header (after the tags).
    pub l3: usize,
    /// The IP layer, or why there is none to use.
    pub ip: Result<IpLayout, IpError>,
}

impl Layout {
    /// Dissects `frame`. Never fails and never panics: see [`Layout::ip`] for what was found.
    pub fn dissect(frame: &[u8]) -> Layout {
        let mut layout = Layout {
            len: frame.len(),
            vlan_tags: 0,
            ethertype: EtherType(0),
            l3: ethernet::HEADER_LEN,
            ip: Err(IpError::Truncated),
        };
        let Some(outer) = be16(frame, 12) else {
            return layout;
        };
        layout.ethertype = EtherType(outer);
        while layout.ethertype.is_vlan_tag() {
            if layout.vlan_tags == ethernet::MAX_VLAN_TAGS {
                layout.ip = Err(IpError::TooManyTags);
                return layout;
            }
            // The TPID stood where an EtherType would; the TCI and the next EtherType follow.
            let Some(next) = be16(frame, layout.l3 + 2) else {
                return layout;
            };
            layout.ethertype = EtherType(next);
            layout.vlan_tags += 1;
            layout.l3 += ethernet::VLAN_TAG_LEN;
        }
        layout.ip = match layout.ethertype {
            EtherType::IPV4 => ipv4_layout(frame, layout.l3),
            EtherType::IPV6 => ipv6_layout(frame, layout.l3),
            _ => Err(IpError::NotIp),
        };
        layout
    }

    /// The IP layer, if it can be used.
    pub fn ip(&self) -> Option<&IpLayout> {
        self.ip.as_ref().ok()
    }

    /// The source MAC, if the frame holds one.
    pub fn src_mac(&self, frame: &[u8]) -> Option<MacAddr> {
        frame.get(6..12).map(MacAddr::from_bytes)
    }
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    let b = frame.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn ipv4_layout(frame: &[u8], l3: usize) -> Result<IpLayout, IpError> {
    let header = frame
        .get(l3..l3 + ipv4::HEADER_LEN)
        .ok_or(IpError::Truncated)?;
    if header[0] >> 4 != 4 {
        return Err(IpError::WrongVersion);
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < ipv4::HEADER_LEN {
        return Err(IpError::BadHeaderLen);
    }
    if l3 + header_len > frame.len() {
        return Err(IpError::Truncated);
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total_len < header_len {
        return Err(IpError::BadLength);
    }
    if l3 + total_len > frame.len() {
        return Err(IpError::Truncated);
    }
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    Ok(IpLayout {
        ipv6: false,
        l3,
        l4: l3 + header_len,
        end: l3 + total_len,
        protocol: IpProtocol(header[9]),
        // MF, or a non-zero fragment offset.
        fragment: flags_offset & 0x3fff != 0,
        extension: false,
    })
}

fn ipv6_layout(frame: &[u8], l3: usize) -> Result<IpLayout, IpError> {
    let header = frame
        .get(l3..l3 + ipv6::HEADER_LEN)
        .ok_or(IpError::Truncated)?;
    if header[0] >> 4 != 6 {
        return Err(IpError::WrongVersion);
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let l4 = l3 + ipv6::HEADER_LEN;
    if l4 + payload_len > frame.len() {
        return Err(IpError::Truncated);
    }
    let protocol = IpProtocol(header[6]);
    Ok(IpLayout {
        ipv6: true,
        l3,
        l4,
        end: l4 + payload_len,
        protocol,
        fragment: false,
        extension: is_extension_header(protocol),
    })
}

/// Hop-by-hop, routing, fragment, ESP, AH, destination options, mobility, HIP, shim6 and the
/// experimental values (IANA "IPv6 Extension Header Types").
fn is_extension_header(next: IpProtocol) -> bool {
    matches!(
        next.0,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(tags: &[[u8; 4]], ip_options: usize, payload: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        for tag in tags {
            f.extend_from_slice(tag);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let header_len = 20 + ip_options;
        let total = header_len + 20 + payload;
        let mut ip = vec![0u8; header_len];
        ip[0] = 0x40 | (header_len / 4) as u8;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        ip[12..20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
        f.extend_from_slice(&[0; 16]);
        f.extend(std::iter::repeat_n(0xab, payload));
        f
    }

    #[test]
    fn untagged_ipv4_with_options_and_padding() {
        let mut frame = ipv4_tcp(&[], 8, 10);
        frame.extend_from_slice(&[0; 6]);
        let layout = Layout::dissect(&frame);
        assert_eq!((layout.vlan_tags, layout.l3), (0, 14));
        let ip = layout.ip().expect("IPv4");
        assert_eq!((ip.l3, ip.l4, ip.end), (14, 42, 14 + 28 + 30));
        assert_eq!(ip.protocol, IpProtocol::TCP);
        assert!(ip.has_transport());
        assert_eq!(ip.addresses(&frame), &[10, 0, 0, 1, 10, 0, 0, 2]);
        assert_eq!(layout.len, frame.len());
    }

    #[test]
    fn walks_one_and_two_tags_and_refuses_a_third() {
        let q = [0x81, 0x00, 0x00, 0x07];
        let ad = [0x88, 0xa8, 0x00, 0x09];
        let one = Layout::dissect(&ipv4_tcp(&[q], 0, 0));
        assert_eq!(
            (one.vlan_tags, one.l3, one.ethertype),
            (1, 18, EtherType::IPV4)
        );
        assert_eq!(one.ip().map(|ip| ip.l4), Some(38));
        let two = Layout::dissect(&ipv4_tcp(&[ad, q], 0, 0));
        assert_eq!((two.vlan_tags, two.l3), (2, 22));
        assert!(two.ip().is_some());
        let three = Layout::dissect(&ipv4_tcp(&[ad, q, q], 0, 0));
        assert_eq!(three.ip, Err(IpError::TooManyTags));
    }

    #[test]
    fn names_the_first_thing_wrong() {
        let good = ipv4_tcp(&[], 0, 4);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut frame = good.clone();
            f(&mut frame);
            Layout::dissect(&frame).ip
        };
        assert_eq!(with(&|f| f.truncate(11)), Err(IpError::Truncated));
        assert_eq!(with(&|f| f.truncate(14 + 19)), Err(IpError::Truncated));
        assert_eq!(with(&|f| f.truncate(f.len() - 1)), Err(IpError::Truncated));
        assert_eq!(with(&|f| f[14] = 0x65), Err(IpError::WrongVersion));
        assert_eq!(with(&|f| f[14] = 0x44), Err(IpError::BadHeaderLen));
        assert_eq!(with(&|f| f[14] = 0x4f), Err(IpError::Truncated));
        assert_eq!(
            with(&|f| f[16..18].copy_from_slice(&[0, 19])),
            Err(IpError::BadLength)
        );
        assert_eq!(
            with(&|f| f[12..14].copy_from_slice(&[0x08, 0x06])),
            Err(IpError::NotIp)
        );
        // A tag cut short.
        assert_eq!(
            Layout::dissect(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0, 0]).ip,
            Err(IpError::Truncated)
        );
        // Fragments keep their layout but have no transport header.
        let fragment = {
            let mut frame = good.clone();
            frame[20] = 0x20;
            Layout::dissect(&frame)
        };
        assert!(fragment
            .ip()
            .is_some_and(|ip| ip.fragment && !ip.has_transport()));
    }

    #[test]
    fn ipv6_and_its_extension_headers() {
        let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&8u16.to_be_bytes());
        ip[6] = 17;
        ip[8] = 0xfd;
        ip[24] = 0xfd;
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&[0; 8]);
        let layout = Layout::dissect(&frame);
        let v6 = layout.ip().expect("IPv6");
        assert!(v6.ipv6 && v6.has_transport());
        assert_eq!((v6.l4, v6.end, v6.protocol), (54, 62, IpProtocol::UDP));
        assert_eq!(v6.addresses(&frame).len(), 32);
        frame[14 + 6] = 44;
        assert!(Layout::dissect(&frame).ip().is_some_and(|ip| ip.extension));
        frame[14 + 5] = 9;
        assert_eq!(Layout::dissect(&frame).ip, Err(IpError::Truncated));
    }

    #[test]
    fn a_layout_read_against_a_shorter_frame_does_not_panic() {
        let frame = ipv4_tcp(&[], 0, 4);
        let ip = *Layout::dissect(&frame).ip().unwrap();
        assert!(ip.addresses(&frame[..20]).is_empty());
        assert_eq!(ip.pseudo_header(&frame[..20], IpProtocol::TCP, 24), 0);
        let layout = Layout::dissect(&frame);
        let _ = crate::tunnel::flow_hash(&frame[..30], &layout);
        assert_eq!(
            crate::offload::pending_checksum(&frame[..30], &layout),
            None
        );
        assert_eq!(crate::coalesce::inspect(&frame[..30], &layout), None);
    }

    #[test]
    fn pseudo_header_matches_the_wire_helpers() {
        let frame = ipv4_tcp(&[], 0, 4);
        let ip = *Layout::dissect(&frame).ip().unwrap();
        assert_eq!(
            ip.pseudo_header(&frame, IpProtocol::TCP, 24),
            checksum::pseudo_header_v4(
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
                6,
                24
            )
        );
    }

    #[test]
    fn every_prefix_of_every_byte_pattern_dissects_without_panic() {
        let frame = ipv4_tcp(&[[0x81, 0, 0, 1]], 4, 3);
        for len in 0..=frame.len() {
            let layout = Layout::dissect(&frame[..len]);
            if let Some(ip) = layout.ip() {
                assert!(ip.l3 <= ip.l4 && ip.l4 <= ip.end && ip.end <= len);
            }
        }
        for fill in [0x00u8, 0x45, 0x60, 0x81, 0xff] {
            let bytes = [fill; 80];
            for len in 0..bytes.len() {
                let _ = Layout::dissect(&bytes[..len]);
            }
        }
    }
}

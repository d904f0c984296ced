//! VXLAN encapsulation and decapsulation (RFC 7348) into buffers the caller owns.
//!
//! Decapsulation validates in a fixed order and names the first failure as a `DropReason`:
//! header length, I flag ([`decap`], before the VNI means anything); then, once the
//! switch knows the VNI's network and policy, reserved bits, inner length, inner VLAN tag and
//! inner source MAC class ([`check`]). Whether the VNI is known, the sending VTEP admitted and
//! the source MAC foreign is the switch's business, since that needs its tables.
//!
//! Encapsulation produces the 8-byte VXLAN header plus the outer UDP source port, which RFC 7348
//! recommends deriving from a hash of the inner flow so that underlay ECMP and the receiver's
//! RSS keep flows together. Outer IP and UDP headers are the kernel's job (we send through UDP
//! sockets). This module never allocates, performs I/O or reads a clock.

use crate::counters::DropReason;
use crate::dissect::Layout;
use crate::wire::ethernet::{EthernetFrame, MacAddr};
use crate::wire::vxlan::{self, Vni, VxlanPacket, VxlanRepr};
use core::net::{Ipv4Addr, SocketAddrV4};

/// A remote tunnel endpoint: where to send a frame and with which VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vtep {
    /// The remote host's underlay address.
    pub ip: Ipv4Addr,
    /// The remote UDP port (4789 unless configured otherwise).
    pub port: u16,
    /// The VNI to put in the header.
    pub vni: Vni,
}

impl Vtep {
    /// The socket address to send to.
    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, self.port)
    }
}

/// How strictly a network checks what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecapPolicy {
    /// Drop datagrams with any reserved header bit set (RFC 7348 says ignore them; set bits
    /// usually mean GBP, GPE or a confused peer, so the default is to refuse).
    pub strict_reserved: bool,
    /// Accept inner frames carrying 802.1Q or QinQ tags.
    pub allow_inner_vlan: bool,
}

impl Default for DecapPolicy {
    fn default() -> Self {
        DecapPolicy {
            strict_reserved: true,
            allow_inner_vlan: false,
        }
    }
}

/// A datagram whose VXLAN header is whole and has the I flag: the VNI, whether any reserved
/// bit is set, and the inner frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    /// The VNI it arrived with.
    pub vni: Vni,
    /// Some reserved header bit is set.
    pub reserved: bool,
    /// The inner Ethernet frame (not yet checked).
    pub frame: &'a [u8],
}

/// First stage of decapsulation: the header is whole and its I flag set. What the frame
/// may be is for [`check`], under the policy of the VNI's network.
pub fn decap(payload: &[u8]) -> Result<Decapsulated<'_>, DropReason> {
    let packet = VxlanPacket::new_checked(payload).map_err(|_| DropReason::Truncated)?;
    if !packet.vni_flag() {
        return Err(DropReason::VniFlagClear);
    }
    Ok(Decapsulated {
        vni: packet.vni(),
        reserved: packet.any_reserved_set(),
        frame: &payload[vxlan::HEADER_LEN..],
    })
}

/// Second stage of decapsulation, under the policy of the VNI's network: reserved bits,
/// inner length, inner VLAN tag, source MAC class. Returns the inner source MAC (unicast).
pub fn check(packet: &Decapsulated<'_>, policy: &DecapPolicy) -> Result<MacAddr, DropReason> {
    if policy.strict_reserved && packet.reserved {
        return Err(DropReason::ReservedBits);
    }
    let eth = EthernetFrame::new_checked(packet.frame).map_err(|_| DropReason::InnerTooShort)?;
    if !policy.allow_inner_vlan && eth.ethertype().is_vlan_tag() {
        return Err(DropReason::InnerVlan);
    }
    let src = eth.src_addr();
    if src.is_multicast() {
        return Err(DropReason::MulticastSource);
    }
    if src.is_zero() {
        return Err(DropReason::ZeroSource);
    }
    Ok(src)
}

/// The outer UDP source ports to spread flows over, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    min: u16,
    max: u16,
}

/// A source port range that is empty or starts at port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("source port range {min}-{max} is invalid: need 1 <= min <= max")]
pub struct InvalidPortRange {
    /// The lower bound given.
    pub min: u16,
    /// The upper bound given.
    pub max: u16,
}

impl PortRange {
    /// A range from `min` to `max`, both included.
    pub const fn new(min: u16, max: u16) -> Result<PortRange, InvalidPortRange> {
        if min == 0 || min > max {
            Err(InvalidPortRange { min, max })
        } else {
            Ok(PortRange { min, max })
        }
    }

    /// The lowest port.
    pub const fn min(&self) -> u16 {
        self.min
    }

    /// The highest port.
    pub const fn max(&self) -> u16 {
        self.max
    }

    /// Maps a flow hash onto the range, evenly (multiply-shift, as the kernel does).
    pub const fn pick(&self, hash: u32) -> u16 {
        let span = (self.max - self.min) as u64 + 1;
        self.min + ((hash as u64 * span) >> 32) as u16
    }
}

impl Default for PortRange {
    /// The IANA dynamic range 49152-65535, RFC 7348's recommendation.
    fn default() -> Self {
        PortRange {
            min: 49152,
            max: 65535,
        }
    }
}

/// Everything needed to send one encapsulated frame, besides the frame itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encapsulation {
    /// The VXLAN header, to go before the inner frame.
    pub header: [u8; vxlan::HEADER_LEN],
    /// Outer UDP source port, from the inner flow hash.
    pub src_port: u16,
    /// Outer destination.
    pub dst: SocketAddrV4,
}

/// Prepares the encapsulation of `frame`, dissected as `layout`, towards `vtep`.
pub fn encap(frame: &[u8], layout: &Layout, vtep: &Vtep, ports: &PortRange) -> Encapsulation {
    Encapsulation {
        header: VxlanRepr { vni: vtep.vni }.to_bytes(),
        src_port: ports.pick(flow_hash(frame, layout)),
        dst: vtep.addr(),
    }
}

/// A deterministic hash of the inner flow of `frame`, dissected as `layout`: both MACs, plus
/// the IPv4/IPv6 addresses and protocol, plus the TCP/UDP/SCTP ports where the transport
/// header is there to read (not a fragment: a datagram's pieces stay on one path). Any
/// prefix of a frame hashes without panicking; what is missing is left out.
pub fn flow_hash(frame: &[u8], layout: &Layout) -> u32 {
    let mut h = FlowHasher::default();
    let Some(macs) = frame.get(..12) else {
        h.write(frame);
        return h.finish();
    };
    h.write(macs);
    let Some(ip) = layout.ip() else {
        return h.finish();
    };
    h.write(ip.addresses(frame));
    h.write(&[ip.protocol.0]);
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const SCTP: u8 = 132;
    if ip.has_transport() && matches!(ip.protocol.0, TCP | UDP | SCTP) {
        if let Some(ports) = frame.get(ip.l4..ip.end).and_then(|l4| l4.get(..4)) {
            h.write(ports);
        }
    }
    h.finish()
}

/// Word-at-a-time multiply-rotate mixing with a final avalanche: fast, deterministic, and
/// good enough to spread flows (not a defence against adversarial collisions, which only
/// cost an imbalance here).
#[derive(Default)]
struct FlowHasher(u64);

impl FlowHasher {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn finish(&self) -> u32 {
        // murmur3's fmix64.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        (x >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vni(n: u32) -> Vni {
        Vni::new(n).unwrap()
    }

    /// VXLAN header for VNI 42 plus a 14-byte inner header from 02:42:0a:00:00:02.
    fn datagram() -> Vec<u8> {
        let mut d = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        d.extend_from_slice(&[
            0x02, 0x42, 0x0a, 0, 0, 3, 0x02, 0x42, 0x0a, 0, 0, 2, 0x08, 0x00,
        ]);
        d
    }

    /// Both stages, under one policy.
    fn decap_checked(payload: &[u8], policy: &DecapPolicy) -> Result<(Vni, MacAddr), DropReason> {
        let packet = decap(payload)?;
        Ok((packet.vni, check(&packet, policy)?))
    }

    #[test]
    fn decap_accepts_a_clean_datagram() {
        let d = datagram();
        let packet = decap(&d).unwrap();
        assert_eq!((packet.vni, packet.reserved), (vni(42), false));
        assert_eq!(packet.frame, &d[8..]);
        let src = check(&packet, &DecapPolicy::default()).unwrap();
        assert_eq!(src.to_string(), "02:42:0a:00:00:02");
    }

    #[test]
    fn decap_names_each_failure() {
        let policy = DecapPolicy::default();
        let decap = decap_checked;
        let d = datagram();
        for len in 0..8 {
            assert_eq!(decap(&d[..len], &policy), Err(DropReason::Truncated));
        }
        for len in 8..22 {
            assert_eq!(decap(&d[..len], &policy), Err(DropReason::InnerTooShort));
        }
        let mut no_i = d.clone();
        no_i[0] = 0;
        assert_eq!(decap(&no_i, &policy), Err(DropReason::VniFlagClear));

        for (byte, mask) in [
            (0, 0x80),
            (0, 0x01),
            (1, 0x01),
            (2, 0x80),
            (3, 0x10),
            (7, 0x01),
        ] {
            let mut r = d.clone();
            r[byte] |= mask;
            assert_eq!(
                decap(&r, &policy),
                Err(DropReason::ReservedBits),
                "byte {byte}"
            );
            let lenient = DecapPolicy {
                strict_reserved: false,
                ..policy
            };
            assert!(decap(&r, &lenient).is_ok(), "byte {byte}");
        }

        let mut vlan = d.clone();
        vlan[20..22].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(decap(&vlan, &policy), Err(DropReason::InnerVlan));
        let allow = DecapPolicy {
            allow_inner_vlan: true,
            ..policy
        };
        assert!(decap(&vlan, &allow).is_ok());

        let mut mcast = d.clone();
        mcast[14] = 0x01;
        assert_eq!(decap(&mcast, &policy), Err(DropReason::MulticastSource));
        let mut bcast = d.clone();
        bcast[14..20].fill(0xff);
        assert_eq!(decap(&bcast, &policy), Err(DropReason::MulticastSource));
        let mut zero = d;
        zero[14..20].fill(0);
        assert_eq!(decap(&zero, &policy), Err(DropReason::ZeroSource));
    }

    #[test]
    fn encap_writes_rfc_header_and_port_in_range() {
        let vtep = Vtep {
            ip: Ipv4Addr::new(198, 18, 0, 2),
            port: 4789,
            vni: vni(0xabcdef),
        };
        let d = datagram();
        let e = encap(
            &d[8..],
            &Layout::dissect(&d[8..]),
            &vtep,
            &PortRange::default(),
        );
        assert_eq!(e.header, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert!(e.src_port >= 49152);
        assert_eq!(e.dst, "198.18.0.2:4789".parse().unwrap());
        // The header decapsulates back to the same VNI.
        let mut round = e.header.to_vec();
        round.extend_from_slice(&d[8..]);
        assert_eq!(decap(&round).unwrap().vni, vni(0xabcdef));
    }

    #[test]
    fn port_range_is_checked_and_covered() {
        assert!(PortRange::new(0, 10).is_err());
        assert!(PortRange::new(11, 10).is_err());
        let one = PortRange::new(5000, 5000).unwrap();
        assert_eq!((one.pick(0), one.pick(u32::MAX)), (5000, 5000));
        let r = PortRange::new(1000, 1003).unwrap();
        assert_eq!((r.pick(0), r.pick(u32::MAX)), (1000, 1003));
        let full = PortRange::new(1, u16::MAX).unwrap();
        assert_eq!(full.pick(u32::MAX), u16::MAX);
    }

    /// An IPv4/TCP frame between fixed MACs, with the given addresses and ports.
    fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[3] = 40;
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    fn hash(frame: &[u8]) -> u32 {
        flow_hash(frame, &Layout::dissect(frame))
    }

    #[test]
    fn flow_hash_follows_the_flow() {
        let a = tcp_frame([10, 0, 0, 2], [10, 0, 0, 3], 40000, 5201, 0);
        let mut a_later = a.clone();
        a_later.extend_from_slice(b"payload differs, flow does not");
        assert_eq!(hash(&a), hash(&a_later));
        let other_port = tcp_frame([10, 0, 0, 2], [10, 0, 0, 3], 40001, 5201, 0);
        let other_ip = tcp_frame([10, 0, 0, 4], [10, 0, 0, 3], 40000, 5201, 0);
        assert_ne!(hash(&a), hash(&other_port));
        assert_ne!(hash(&a), hash(&other_ip));
        // Fragments ignore ports, so every piece of a datagram hashes alike.
        let frag1 = tcp_frame([10, 0, 0, 2], [10, 0, 0, 3], 40000, 5201, 0x2000);
        let frag2 = tcp_frame([10, 0, 0, 2], [10, 0, 0, 3], 1, 2, 0x00b9);
        assert_eq!(hash(&frag1), hash(&frag2));
    }

    #[test]
    fn flow_hash_spreads_ports_evenly() {
        let ports = PortRange::default();
        let mut buckets = [0u32; 16];
        for sport in 0..16_000u16 {
            let f = tcp_frame([10, 0, 0, 2], [10, 0, 0, 3], 30000 + sport, 5201, 0);
            let p = ports.pick(hash(&f));
            buckets[usize::from((p - ports.min()) / 1024)] += 1;
        }
        // 1000 expected per bucket; a broken hash piles them up.
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn flow_hash_takes_any_prefix() {
        let f = tcp_frame([10, 0, 0, 2], [10, 0, 0, 3], 40000, 5201, 0);
        for len in 0..f.len() {
            hash(&f[..len]);
        }
    }
}

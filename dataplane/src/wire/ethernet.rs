//! Ethernet II frames (IEEE 802.3 with an EtherType), with 802.1Q and QinQ tag detection.
//!
//! ```text
//! +-------------------+-------------------+-----------+-----------------
//! | destination (6)   | source (6)        | type (2)  | payload ...
//! +-------------------+-------------------+-----------+-----------------
//! ```
//! A VLAN tag inserts 4 bytes (TPID 0x8100, 0x88a8 or 0x9100, then the TCI) before the type.
//! The frame check sequence is not part of frames read from a TAP or a VXLAN payload.
//! This module never allocates or performs I/O.

use super::{Error, Field, Rest, Result};
use core::fmt;
use core::str::FromStr;

mod field {
    use super::{Field, Rest};
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// Length of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;
/// The most tags `EthernetFrame::vlan` walks through (QinQ is two).
pub const MAX_VLAN_TAGS: usize = 2;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00, which the kernel's FDB uses for the flood list.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads an address from the first six bytes of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is shorter than six bytes.
    pub fn from_bytes(bytes: &[u8]) -> MacAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&bytes[..6]);
        MacAddr(mac)
    }

    /// The six bytes of the address.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// The group bit is set (broadcast included).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// All zeros.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// Neither multicast nor all zeros: an address a station may use as its source.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not `xx:xx:xx:xx:xx:xx`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six hex bytes like 02:42:0a:00:00:02)")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> core::result::Result<MacAddr, ParseMacError> {
        let err = || ParseMacError(s.to_owned());
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in mac.iter_mut() {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(mac))
    }
}

/// An EtherType value. Unknown values are kept, not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP.
    pub const ARP: EtherType = EtherType(0x0806);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86dd);
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: EtherType = EtherType(0x88a8);
    /// The pre-standard QinQ outer tag some switches still send.
    pub const QINQ_LEGACY: EtherType = EtherType(0x9100);

    /// Whether this value introduces a VLAN tag.
    pub const fn is_vlan_tag(self) -> bool {
        matches!(self.0, 0x8100 | 0x88a8 | 0x9100)
    }
}

/// What lies under a frame's VLAN tags, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanInfo {
    /// How many tags precede the payload: 0, 1 (802.1Q) or 2 (QinQ).
    pub tags: usize,
    /// The VLAN ID of the outermost tag, if there is one.
    pub outer_vid: Option<u16>,
    /// The EtherType after the last tag.
    pub ethertype: EtherType,
    /// Offset of the payload after the last tag.
    pub payload_offset: usize,
}

/// A read/write wrapper around an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps untrusted input, checking that the untagged header is present.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds an untagged header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The destination address.
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// The source address.
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The outer EtherType (a TPID if the frame is tagged).
    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The bytes after the untagged header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    /// Walks up to `MAX_VLAN_TAGS` VLAN tags. A tag cut short is `Truncated`; more tags than
    /// that are `Unsupported`.
    pub fn vlan(&self) -> Result<VlanInfo> {
        let bytes = self.buffer.as_ref();
        let mut ethertype = self.ethertype();
        let mut offset = HEADER_LEN;
        let mut tags = 0;
        let mut outer_vid = None;
        while ethertype.is_vlan_tag() {
            if tags == MAX_VLAN_TAGS {
                return Err(Error::Unsupported);
            }
            // The TPID stood where an EtherType would; the TCI and the next EtherType follow.
            let tag = bytes
                .get(offset..offset + VLAN_TAG_LEN)
                .ok_or(Error::Truncated)?;
            if tags == 0 {
                outer_vid = Some(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
            }
            ethertype = EtherType(u16::from_be_bytes([tag[2], tag[3]]));
            offset += VLAN_TAG_LEN;
            tags += 1;
        }
        Ok(VlanInfo {
            tags,
            outer_vid,
            ethertype,
            payload_offset: offset,
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    /// The bytes after the untagged header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A parsed untagged Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Source address.
    pub src_addr: MacAddr,
    /// Destination address.
    pub dst_addr: MacAddr,
    /// EtherType (a TPID if the frame is tagged).
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Parses the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first `HEADER_LEN` bytes of `frame`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request header, broadcast, from 02:42:0a:00:00:02.
    const ARP_HEADER: [u8; 14] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x00, 0x00, 0x02, 0x08, 0x06,
    ];

    #[test]
    fn parse_emit_round_trip() {
        let frame = EthernetFrame::new_checked(&ARP_HEADER[..]).unwrap();
        let repr = EthernetRepr::parse(&frame).unwrap();
        assert!(repr.dst_addr.is_broadcast());
        assert_eq!(repr.src_addr.to_string(), "02:42:0a:00:00:02");
        assert_eq!(repr.ethertype, EtherType::ARP);
        let mut out = [0u8; HEADER_LEN];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
        assert_eq!(out, ARP_HEADER);
    }

    #[test]
    fn short_frames_are_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&ARP_HEADER[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        assert!("01:00:5e:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_multicast());
        assert!("33:33:00:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_multicast());
        assert!(MacAddr::ZERO.is_zero() && !MacAddr::ZERO.is_unicast());
        assert!("02:42:0a:00:00:02".parse::<MacAddr>().unwrap().is_unicast());
    }

    #[test]
    fn mac_parse_rejects_garbage() {
        for bad in [
            "",
            "02:42:0a:00:00",
            "02:42:0a:00:00:02:03",
            "0g:00:00:00:00:00",
            "002:42:0a:00:00:0",
            "02::0a:00:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert_eq!(
            "2-42-A-0-0-2".parse::<MacAddr>().unwrap().to_string(),
            "02:42:0a:00:00:02"
        );
    }

    fn tagged(tpids: &[u16], inner: u16) -> Vec<u8> {
        let mut f = ARP_HEADER[..12].to_vec();
        for (i, tpid) in tpids.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        f.extend_from_slice(&inner.to_be_bytes());
        f.extend_from_slice(&[0xaa; 4]);
        f
    }

    #[test]
    fn vlan_detection() {
        let untagged = tagged(&[], 0x0800);
        let info = EthernetFrame::new_checked(&untagged[..])
            .unwrap()
            .vlan()
            .unwrap();
        assert_eq!(
            (
                info.tags,
                info.outer_vid,
                info.ethertype,
                info.payload_offset
            ),
            (0, None, EtherType::IPV4, 14)
        );

        let dot1q = tagged(&[0x8100], 0x0800);
        let info = EthernetFrame::new_checked(&dot1q[..])
            .unwrap()
            .vlan()
            .unwrap();
        assert_eq!(
            (
                info.tags,
                info.outer_vid,
                info.ethertype,
                info.payload_offset
            ),
            (1, Some(100), EtherType::IPV4, 18)
        );

        let qinq = tagged(&[0x88a8, 0x8100], 0x86dd);
        let info = EthernetFrame::new_checked(&qinq[..])
            .unwrap()
            .vlan()
            .unwrap();
        assert_eq!(
            (
                info.tags,
                info.outer_vid,
                info.ethertype,
                info.payload_offset
            ),
            (2, Some(100), EtherType::IPV6, 22)
        );

        let triple = tagged(&[0x9100, 0x88a8, 0x8100], 0x0800);
        assert_eq!(
            EthernetFrame::new_checked(&triple[..]).unwrap().vlan(),
            Err(Error::Unsupported)
        );

        // A tag announced but cut short.
        let cut = &dot1q[..16];
        assert_eq!(
            EthernetFrame::new_checked(cut).unwrap().vlan(),
            Err(Error::Truncated)
        );
    }
}

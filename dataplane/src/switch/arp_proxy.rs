//! The ARP proxy of one network: IP to MAC entries from the control plane, and the rule for
//! when a request may be answered locally instead of crossing the underlay (the kernel vxlan
//! device's `proxy` option, RFC 826 semantics).
//!
//! Answered: a broadcast Ethernet/IPv4 ARP request for a known IP. Never answered: gratuitous
//! ARP (sender IP = target IP), probes (sender IP 0.0.0.0, RFC 5227), requests for the
//! network's gateway (the local bridge owns that address), unicast requests (they go to their
//! destination like any frame). Pure logic: no I/O, no allocation per frame.

use crate::wire::arp::{self, ArpOperation, ArpPacket, ArpRepr};
use crate::wire::ethernet::{self, EtherType, EthernetFrame, EthernetRepr, MacAddr};
use core::net::Ipv4Addr;
use std::collections::HashMap;

/// Length of the reply frame the proxy writes: Ethernet header plus ARP.
pub const ARP_REPLY_LEN: usize = ethernet::HEADER_LEN + arp::PACKET_LEN;

/// What the proxy makes of a frame from the TAP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVerdict {
    /// Not a broadcast ARP request the proxy may answer: handle it like any other frame.
    Pass,
    /// A reply was written into the caller's buffer.
    Replied,
    /// A request for the gateway: the local bridge answers it, nobody else should.
    Gateway,
    /// A request for an IP the table does not know.
    Miss(Ipv4Addr),
}

/// Why a proxy entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NeighError {
    /// The MAC cannot own an IP (multicast, broadcast or zero).
    #[error("{0} is not a unicast MAC")]
    NotUnicast(MacAddr),
    /// The IP is not a host address (unspecified, broadcast or multicast).
    #[error("{0} is not a unicast IPv4 address")]
    NotHostAddress(Ipv4Addr),
}

/// IP to MAC for one network.
#[derive(Debug, Clone, Default)]
pub struct ArpProxyTable {
    entries: HashMap<Ipv4Addr, MacAddr, ahash::RandomState>,
}

impl ArpProxyTable {
    /// Adds or replaces an entry, like `ip neigh replace ... nud permanent`. Returns the
    /// previous MAC.
    pub fn insert(&mut self, ip: Ipv4Addr, mac: MacAddr) -> Result<Option<MacAddr>, NeighError> {
        if !mac.is_unicast() {
            return Err(NeighError::NotUnicast(mac));
        }
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(NeighError::NotHostAddress(ip));
        }
        Ok(self.entries.insert(ip, mac))
    }

    /// Removes an entry.
    pub fn remove(&mut self, ip: &Ipv4Addr) -> Option<MacAddr> {
        self.entries.remove(ip)
    }

    /// The MAC for `ip`.
    pub fn get(&self, ip: &Ipv4Addr) -> Option<MacAddr> {
        self.entries.get(ip).copied()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Ipv4Addr, &MacAddr)> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decides on a frame from the TAP side and, when it answers, writes the reply (addressed
    /// back to the requester) into `reply`.
    pub fn handle(
        &self,
        frame: &[u8],
        gateway: Option<Ipv4Addr>,
        reply: &mut [u8; ARP_REPLY_LEN],
    ) -> ProxyVerdict {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return ProxyVerdict::Pass;
        };
        if !eth.dst_addr().is_broadcast() || eth.ethertype() != EtherType::ARP {
            return ProxyVerdict::Pass;
        }
        let Ok(packet) = ArpPacket::new_checked(eth.payload()) else {
            return ProxyVerdict::Pass;
        };
        let Ok(request) = ArpRepr::parse(&packet) else {
            return ProxyVerdict::Pass;
        };
        if request.operation != ArpOperation::Request
            || request.sender_ip.is_unspecified()
            || request.sender_ip == request.target_ip
            || !request.sender_mac.is_unicast()
        {
            return ProxyVerdict::Pass;
        }
        if Some(request.target_ip) == gateway {
            return ProxyVerdict::Gateway;
        }
        let Some(mac) = self.get(&request.target_ip) else {
            return ProxyVerdict::Miss(request.target_ip);
        };
        let (head, body) = reply.split_at_mut(ethernet::HEADER_LEN);
        EthernetRepr {
            src_addr: mac,
            dst_addr: request.sender_mac,
            ethertype: EtherType::ARP,
        }
        .emit(&mut EthernetFrame::new_unchecked(head));
        ArpRepr {
            operation: ArpOperation::Reply,
            sender_mac: mac,
            sender_ip: request.target_ip,
            target_mac: request.sender_mac,
            target_ip: request.sender_ip,
        }
        .emit(&mut ArpPacket::new_unchecked(body));
        ProxyVerdict::Replied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUESTER: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0, 0, 2]);
    const TARGET: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0, 0, 3]);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn request(
        dst: MacAddr,
        sender_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
        op: ArpOperation,
    ) -> Vec<u8> {
        let mut f = vec![0u8; ARP_REPLY_LEN];
        let (head, body) = f.split_at_mut(14);
        EthernetRepr {
            src_addr: REQUESTER,
            dst_addr: dst,
            ethertype: EtherType::ARP,
        }
        .emit(&mut EthernetFrame::new_unchecked(head));
        ArpRepr {
            operation: op,
            sender_mac: REQUESTER,
            sender_ip,
            target_mac: MacAddr::ZERO,
            target_ip,
        }
        .emit(&mut ArpPacket::new_unchecked(body));
        f
    }

    fn table() -> ArpProxyTable {
        let mut t = ArpProxyTable::default();
        t.insert(ip(3), TARGET).unwrap();
        t
    }

    #[test]
    fn answers_broadcast_request_for_known_ip() {
        let mut reply = [0u8; ARP_REPLY_LEN];
        let req = request(MacAddr::BROADCAST, ip(2), ip(3), ArpOperation::Request);
        assert_eq!(
            table().handle(&req, Some(ip(1)), &mut reply),
            ProxyVerdict::Replied
        );
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!(
            (eth.dst_addr(), eth.src_addr(), eth.ethertype()),
            (REQUESTER, TARGET, EtherType::ARP)
        );
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        assert_eq!(
            arp,
            ArpRepr {
                operation: ArpOperation::Reply,
                sender_mac: TARGET,
                sender_ip: ip(3),
                target_mac: REQUESTER,
                target_ip: ip(2),
            }
        );
        // etherparse agrees the reply is well formed.
        let parsed = etherparse::SlicedPacket::from_ethernet(&reply).unwrap();
        assert!(matches!(parsed.net, Some(etherparse::NetSlice::Arp(_))));
    }

    #[test]
    fn never_answers_the_exceptions() {
        let t = table();
        let mut reply = [0u8; ARP_REPLY_LEN];
        let untouched = reply;
        let gratuitous = request(MacAddr::BROADCAST, ip(3), ip(3), ArpOperation::Request);
        let probe = request(
            MacAddr::BROADCAST,
            Ipv4Addr::UNSPECIFIED,
            ip(3),
            ArpOperation::Request,
        );
        let unicast = request(TARGET, ip(2), ip(3), ArpOperation::Request);
        let a_reply = request(MacAddr::BROADCAST, ip(2), ip(3), ArpOperation::Reply);
        for frame in [&gratuitous, &probe, &unicast, &a_reply] {
            assert_eq!(t.handle(frame, Some(ip(1)), &mut reply), ProxyVerdict::Pass);
        }
        let gateway = request(MacAddr::BROADCAST, ip(2), ip(1), ArpOperation::Request);
        assert_eq!(
            t.handle(&gateway, Some(ip(1)), &mut reply),
            ProxyVerdict::Gateway
        );
        let unknown = request(MacAddr::BROADCAST, ip(2), ip(9), ArpOperation::Request);
        assert_eq!(
            t.handle(&unknown, Some(ip(1)), &mut reply),
            ProxyVerdict::Miss(ip(9))
        );
        assert_eq!(reply, untouched, "no reply written");
    }

    #[test]
    fn malformed_frames_pass_through() {
        let t = table();
        let mut reply = [0u8; ARP_REPLY_LEN];
        let req = request(MacAddr::BROADCAST, ip(2), ip(3), ArpOperation::Request);
        for len in 0..req.len() {
            assert_eq!(t.handle(&req[..len], None, &mut reply), ProxyVerdict::Pass);
        }
    }

    #[test]
    fn entries_are_validated() {
        let mut t = ArpProxyTable::default();
        assert_eq!(
            t.insert(ip(3), MacAddr::BROADCAST),
            Err(NeighError::NotUnicast(MacAddr::BROADCAST))
        );
        assert_eq!(
            t.insert(Ipv4Addr::UNSPECIFIED, TARGET),
            Err(NeighError::NotHostAddress(Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(t.insert(ip(3), TARGET), Ok(None));
        assert_eq!(t.insert(ip(3), REQUESTER), Ok(Some(TARGET)));
        assert_eq!(t.remove(&ip(3)), Some(REQUESTER));
        assert!(t.is_empty());
    }
}

//! Fuzz property for frames entering from the TAP side.

use std::net::Ipv4Addr;
use vxtap_dataplane::switch::{NetworkConfig, Switch, ARP_REPLY_LEN};
use vxtap_dataplane::tunnel::Vtep;
use vxtap_dataplane::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, MacAddr, Vni,
};
use vxtap_dataplane::{TapAction, Timestamp};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Remote endpoint `i` (2..=20): 10.0.0.i with MAC 02:42:0a:00:00:i behind 198.18.0.(i % 3 + 2).
fn endpoint(i: u8) -> (Ipv4Addr, MacAddr, Vtep) {
    let vni = Vni::new(42).expect("42 fits in 24 bits");
    let vtep = Vtep {
        ip: Ipv4Addr::new(198, 18, 0, i % 3 + 2),
        port: 4789,
        vni,
    };
    (
        Ipv4Addr::new(10, 0, 0, i),
        MacAddr([2, 0x42, 10, 0, 0, i]),
        vtep,
    )
}

/// See the module docs of `fuzz_checks`.
pub fn tap_frame(data: &[u8]) {
    let vni = Vni::new(42).expect("42 fits in 24 bits");
    let config = NetworkConfig {
        gateway: Some(GATEWAY),
        ..Default::default()
    };
    let mut s = Switch::new();
    s.add_network(vni, config).expect("fresh switch");
    let n = s.network_mut(vni).expect("just added");
    for i in 2..=20 {
        let (ip, mac, vtep) = endpoint(i);
        n.neigh_add(ip, mac).expect("valid entry");
        if i % 2 == 0 {
            n.fdb_add(mac, vtep, Timestamp::from_secs(0))
                .expect("valid entry");
        }
        let _ = n.flood_add(vtep);
    }
    let mut reply = [0u8; ARP_REPLY_LEN];
    let action = s.from_tap(vni, data, Timestamp::from_secs(1), &mut reply);
    match action {
        TapAction::ReplyArp => check_reply(data, &reply),
        TapAction::Forward(vtep) => {
            let dst = EthernetFrame::new_checked(data)
                .expect("forwarded frames parse")
                .dst_addr();
            let entry = s
                .network(vni)
                .expect("exists")
                .fdb()
                .get(&dst)
                .expect("forwarded to an entry");
            assert_eq!(entry.vtep, vtep);
        }
        TapAction::Flood(list) => {
            assert!(!list.is_empty());
            let mut seen = list.to_vec();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), list.len(), "each VTEP at most once");
        }
        TapAction::Drop(reason) => {
            let counters = s.network(vni).expect("exists").counters();
            assert_eq!((counters.drops.get(reason), counters.drops.total()), (1, 1));
        }
    }
}

/// A reply must parse as ARP, answer the request in `request`, and come from the table.
fn check_reply(request: &[u8], reply: &[u8; ARP_REPLY_LEN]) {
    let req_eth = EthernetFrame::new_checked(request).expect("answered requests parse");
    assert!(
        req_eth.dst_addr().is_broadcast(),
        "only broadcast requests are answered"
    );
    let req = ArpRepr::parse(&ArpPacket::new_checked(req_eth.payload()).expect("ARP request"))
        .expect("ARP request parses");
    assert_eq!(req.operation, ArpOperation::Request);
    assert!(!req.sender_ip.is_unspecified(), "probes are not answered");
    assert_ne!(
        req.sender_ip, req.target_ip,
        "gratuitous ARP is not answered"
    );
    assert_ne!(req.target_ip, GATEWAY, "the gateway is not answered");

    let eth = EthernetFrame::new_checked(&reply[..]).expect("reply parses as Ethernet");
    assert_eq!(eth.ethertype(), EtherType::ARP);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("reply parses as ARP"))
        .expect("reply ARP parses");
    let i = req.target_ip.octets()[3];
    let (ip, mac, _) = endpoint(i);
    assert_eq!(
        arp,
        ArpRepr {
            operation: ArpOperation::Reply,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: req.sender_mac,
            target_ip: req.sender_ip,
        }
    );
    assert_eq!((eth.src_addr(), eth.dst_addr()), (mac, req.sender_mac));
    assert!(eth.dst_addr().is_unicast());
}

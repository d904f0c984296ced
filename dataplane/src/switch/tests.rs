//! Switch behaviour end to end, driven by a virtual clock and fake VTEPs.

use super::*;
use crate::wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use crate::wire::ethernet::{EtherType, EthernetRepr};

const VNI: Vni = Vni::from_bytes([0, 0, 42]);
const LOCAL: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 2]);
const REMOTE: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 3]);
const OTHER: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 4]);
const T0: Timestamp = Timestamp::from_secs(100);

fn host(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

fn vtep(last: u8) -> Vtep {
    Vtep {
        ip: host(last),
        port: 4789,
        vni: VNI,
    }
}

fn from(last: u8) -> SocketAddrV4 {
    // Senders use a flow-hashed source port, never 4789.
    SocketAddrV4::new(host(last), 51000 + u16::from(last))
}

fn frame(dst: MacAddr, src: MacAddr, ethertype: EtherType) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    f
}

fn ipv4(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    frame(dst, src, EtherType::IPV4)
}

fn arp_request(sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = frame(MacAddr::BROADCAST, LOCAL, EtherType::ARP);
    ArpRepr {
        operation: ArpOperation::Request,
        sender_mac: LOCAL,
        sender_ip,
        target_mac: MacAddr::ZERO,
        target_ip,
    }
    .emit(&mut ArpPacket::new_unchecked(&mut f[14..]));
    f
}

fn datagram(vni: Vni, inner: &[u8]) -> Vec<u8> {
    let mut d = crate::wire::VxlanRepr { vni }.to_bytes().to_vec();
    d.extend_from_slice(inner);
    d
}

fn switch_with(config: NetworkConfig) -> Switch {
    let mut s = Switch::new();
    s.add_network(VNI, config).unwrap();
    s
}

fn tap<'s>(s: &'s mut Switch, frame: &[u8], now: Timestamp) -> TapAction<'s> {
    let mut reply = [0u8; ARP_REPLY_LEN];
    s.from_tap(VNI, frame, now, &mut reply)
}

fn counters(s: &Switch) -> crate::counters::NetworkCounters {
    *s.network(VNI).unwrap().counters()
}

#[test]
fn static_entry_forwards_unicast_to_its_vtep_only() {
    let mut s = switch_with(NetworkConfig::default());
    let n = s.network_mut(VNI).unwrap();
    n.fdb_add(REMOTE, vtep(2), T0).unwrap();
    n.flood_add(vtep(2)).unwrap();
    n.flood_add(vtep(3)).unwrap();
    assert_eq!(
        tap(&mut s, &ipv4(REMOTE, LOCAL), T0),
        TapAction::Forward(vtep(2))
    );
    assert_eq!(counters(&s).forwarded, 1);
}

#[test]
fn broadcast_and_unknown_unicast_flood_once_per_vtep() {
    let mut s = switch_with(NetworkConfig::default());
    let n = s.network_mut(VNI).unwrap();
    n.flood_add(vtep(2)).unwrap();
    n.flood_add(vtep(3)).unwrap();
    assert!(n.flood_add(vtep(2)).is_err(), "a VTEP is on the list once");
    let expected = [vtep(2), vtep(3)];
    assert_eq!(
        tap(&mut s, &ipv4(MacAddr::BROADCAST, LOCAL), T0),
        TapAction::Flood(&expected)
    );
    assert_eq!(
        tap(&mut s, &ipv4(OTHER, LOCAL), T0),
        TapAction::Flood(&expected)
    );
    let c = counters(&s);
    assert_eq!((c.flooded, c.flood_copies, c.l2_misses), (2, 4, 1));
    assert_eq!(
        s.pop_event(),
        Some(Event::L2Miss {
            vni: VNI,
            mac: OTHER
        })
    );
    assert_eq!(s.pop_event(), None);
}

#[test]
fn flood_policy_drop_and_empty_list_are_counted() {
    let mut s = switch_with(NetworkConfig {
        flood: FloodPolicy::Drop,
        ..Default::default()
    });
    s.network_mut(VNI).unwrap().flood_add(vtep(2)).unwrap();
    let bcast = ipv4(MacAddr::BROADCAST, LOCAL);
    assert_eq!(
        tap(&mut s, &bcast, T0),
        TapAction::Drop(DropReason::FloodDisabled)
    );
    let mut s = switch_with(NetworkConfig::default());
    assert_eq!(
        tap(&mut s, &bcast, T0),
        TapAction::Drop(DropReason::NoFloodTargets)
    );
    assert_eq!(counters(&s).drops.get(DropReason::NoFloodTargets), 1);
}

#[test]
fn tap_side_rejects_runts_bad_sources_and_tags() {
    let mut s = switch_with(NetworkConfig::default());
    s.network_mut(VNI).unwrap().flood_add(vtep(2)).unwrap();
    assert_eq!(
        tap(&mut s, &[0u8; 13], T0),
        TapAction::Drop(DropReason::TapTooShort)
    );
    let mcast_src = ipv4(REMOTE, MacAddr([1, 0, 0x5e, 0, 0, 1]));
    assert_eq!(
        tap(&mut s, &mcast_src, T0),
        TapAction::Drop(DropReason::TapInvalidSource)
    );
    assert_eq!(
        tap(&mut s, &ipv4(REMOTE, MacAddr::ZERO), T0),
        TapAction::Drop(DropReason::TapInvalidSource)
    );
    let tagged = frame(REMOTE, LOCAL, EtherType::VLAN);
    assert_eq!(
        tap(&mut s, &tagged, T0),
        TapAction::Drop(DropReason::TapVlan)
    );
    let mut reply = [0u8; ARP_REPLY_LEN];
    let other = Vni::new(43).unwrap();
    assert_eq!(
        s.from_tap(other, &tagged, T0, &mut reply),
        TapAction::Drop(DropReason::UnknownVni)
    );
    assert_eq!(s.counters().drops.get(DropReason::UnknownVni), 1);
}

#[test]
fn decap_delivers_and_learns_from_known_vtep() {
    let mut s = switch_with(NetworkConfig::default());
    s.network_mut(VNI).unwrap().flood_add(vtep(2)).unwrap();
    let inner = ipv4(LOCAL, REMOTE);
    let d = datagram(VNI, &inner);
    assert_eq!(
        s.from_network(from(2), tunnel::decap(&d), T0),
        NetworkAction::Deliver {
            vni: VNI,
            frame: &inner
        }
    );
    let entry = *s.network(VNI).unwrap().fdb().get(&REMOTE).unwrap();
    assert_eq!(
        (entry.vtep, entry.kind),
        (vtep(2), EntryKind::Learned),
        "port is dstport, not the source port"
    );
    // Now unicast goes straight there.
    assert_eq!(
        tap(&mut s, &ipv4(REMOTE, LOCAL), T0),
        TapAction::Forward(vtep(2))
    );
    assert_eq!(counters(&s).learned, 1);
}

#[test]
fn learned_entry_moves_and_ages_out() {
    let config = NetworkConfig {
        ageing_secs: 10,
        ..Default::default()
    };
    let mut s = switch_with(config);
    let n = s.network_mut(VNI).unwrap();
    n.flood_add(vtep(2)).unwrap();
    n.flood_add(vtep(3)).unwrap();
    let d = datagram(VNI, &ipv4(LOCAL, REMOTE));
    s.from_network(from(2), tunnel::decap(&d), T0);
    s.from_network(from(3), tunnel::decap(&d), T0.add_millis(1000));
    assert_eq!(counters(&s).moves, 1);
    assert_eq!(
        tap(&mut s, &ipv4(REMOTE, LOCAL), T0.add_millis(1000)),
        TapAction::Forward(vtep(3))
    );
    // Traffic refreshes the entry; silence ages it out.
    s.from_network(from(3), tunnel::decap(&d), T0.add_millis(9_000));
    assert_eq!(s.age(T0.add_millis(18_999)), 0);
    assert!(matches!(
        tap(&mut s, &ipv4(REMOTE, LOCAL), T0.add_millis(19_000)),
        TapAction::Flood(_)
    ));
    assert_eq!(s.age(T0.add_millis(19_000)), 1);
    assert_eq!(counters(&s).aged_out, 1);
    assert!(s.network(VNI).unwrap().fdb().is_empty());
}

#[test]
fn learning_off_learns_nothing() {
    let mut s = switch_with(NetworkConfig {
        learning: false,
        ..Default::default()
    });
    s.network_mut(VNI).unwrap().flood_add(vtep(2)).unwrap();
    let d = datagram(VNI, &ipv4(LOCAL, REMOTE));
    assert!(matches!(
        s.from_network(from(2), tunnel::decap(&d), T0),
        NetworkAction::Deliver { .. }
    ));
    assert!(s.network(VNI).unwrap().fdb().is_empty());
}

#[test]
fn learning_cap_refuses_but_still_delivers() {
    let mut s = switch_with(NetworkConfig {
        max_learned: 2,
        ..Default::default()
    });
    s.network_mut(VNI).unwrap().flood_add(vtep(2)).unwrap();
    for last in 10..15 {
        let d = datagram(VNI, &ipv4(LOCAL, MacAddr([2, 0, 0, 0, 0, last])));
        assert!(matches!(
            s.from_network(from(2), tunnel::decap(&d), T0),
            NetworkAction::Deliver { .. }
        ));
    }
    let c = counters(&s);
    assert_eq!((c.learned, c.learn_refused), (2, 3));
    assert_eq!(s.network(VNI).unwrap().fdb().learned_len(), 2);
}

#[test]
fn static_entries_are_never_moved_by_learning() {
    let mut s = switch_with(NetworkConfig::default());
    let n = s.network_mut(VNI).unwrap();
    n.fdb_add(REMOTE, vtep(2), T0).unwrap();
    n.flood_add(vtep(3)).unwrap();
    let d = datagram(VNI, &ipv4(LOCAL, REMOTE));
    assert_eq!(
        s.from_network(from(3), tunnel::decap(&d), T0),
        NetworkAction::Drop(DropReason::StaticMacMismatch)
    );
    assert!(matches!(
        s.from_network(from(2), tunnel::decap(&d), T0),
        NetworkAction::Deliver { .. }
    ));
    let entry = s.network(VNI).unwrap().fdb().get(&REMOTE).unwrap();
    assert_eq!((entry.vtep, entry.kind), (vtep(2), EntryKind::Static));
    assert_eq!(counters(&s).moves, 0);
}

#[test]
fn admission_refuses_unknown_vteps_unless_open() {
    let inner = ipv4(LOCAL, REMOTE);
    let d = datagram(VNI, &inner);
    let mut s = switch_with(NetworkConfig::default());
    assert_eq!(
        s.from_network(from(9), tunnel::decap(&d), T0),
        NetworkAction::Drop(DropReason::UnknownVtep)
    );
    assert_eq!(counters(&s).drops.get(DropReason::UnknownVtep), 1);
    assert!(
        s.network(VNI).unwrap().fdb().is_empty(),
        "nothing learned from a refused VTEP"
    );
    let mut open = switch_with(NetworkConfig {
        admission: Admission::Any,
        ..Default::default()
    });
    assert!(matches!(
        open.from_network(from(9), tunnel::decap(&d), T0),
        NetworkAction::Deliver { .. }
    ));
    assert_eq!(
        open.network(VNI).unwrap().fdb().get(&REMOTE).unwrap().vtep,
        vtep(9)
    );
}

#[test]
fn network_side_drops_each_have_a_reason() {
    let config = NetworkConfig {
        own_mac: Some(OTHER),
        ..Default::default()
    };
    let mut s = switch_with(config);
    s.network_mut(VNI).unwrap().flood_add(vtep(2)).unwrap();
    let good = datagram(VNI, &ipv4(LOCAL, REMOTE));
    let mut no_i = good.clone();
    no_i[0] = 0;
    let mut reserved = good.clone();
    reserved[7] = 1;
    let unknown_vni = datagram(Vni::new(43).unwrap(), &ipv4(LOCAL, REMOTE));
    let cases: [(&[u8], DropReason); 8] = [
        (&good[..7], DropReason::Truncated),
        (&no_i, DropReason::VniFlagClear),
        (&unknown_vni, DropReason::UnknownVni),
        (&reserved, DropReason::ReservedBits),
        (&good[..21], DropReason::InnerTooShort),
        (
            &datagram(VNI, &frame(LOCAL, REMOTE, EtherType::VLAN)),
            DropReason::InnerVlan,
        ),
        (
            &datagram(VNI, &ipv4(LOCAL, MacAddr::BROADCAST)),
            DropReason::MulticastSource,
        ),
        (&datagram(VNI, &ipv4(LOCAL, OTHER)), DropReason::OwnSource),
    ];
    for (payload, reason) in cases {
        assert_eq!(
            s.from_network(from(2), tunnel::decap(payload), T0),
            NetworkAction::Drop(reason)
        );
    }
    let zero = datagram(VNI, &ipv4(LOCAL, MacAddr::ZERO));
    assert_eq!(
        s.from_network(from(2), tunnel::decap(&zero), T0),
        NetworkAction::Drop(DropReason::ZeroSource)
    );
    // Each reason was counted once, either globally or on the network.
    let net = counters(&s).drops;
    let global = s.counters().drops;
    for reason in DropReason::ALL {
        let seen = net.get(*reason) + global.get(*reason);
        let expected =
            u64::from(cases.iter().any(|(_, r)| r == reason) || *reason == DropReason::ZeroSource);
        assert_eq!(seen, expected, "{reason}");
    }
    assert!(
        s.network(VNI).unwrap().fdb().is_empty(),
        "nothing learned from dropped frames"
    );
    assert!(matches!(
        s.from_network(from(2), tunnel::decap(&good), T0),
        NetworkAction::Deliver { .. }
    ));
}

#[test]
fn arp_proxy_answers_known_ip_without_flooding() {
    let config = NetworkConfig {
        gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..Default::default()
    };
    let mut s = switch_with(config);
    let n = s.network_mut(VNI).unwrap();
    n.neigh_add(Ipv4Addr::new(10, 0, 0, 3), REMOTE).unwrap();
    n.flood_add(vtep(2)).unwrap();
    let mut reply = [0u8; ARP_REPLY_LEN];
    let req = arp_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
    assert_eq!(s.from_tap(VNI, &req, T0, &mut reply), TapAction::ReplyArp);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(&reply[14..]).unwrap()).unwrap();
    assert_eq!(
        (arp.operation, arp.sender_mac, arp.target_mac),
        (ArpOperation::Reply, REMOTE, LOCAL)
    );
    let c = counters(&s);
    assert_eq!((c.arp_replies, c.flooded), (1, 0));

    let gw = arp_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        s.from_tap(VNI, &gw, T0, &mut reply),
        TapAction::Drop(DropReason::ArpForGateway)
    );
    // A miss raises an event and then floods like any broadcast.
    let miss = arp_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 9));
    assert!(matches!(
        s.from_tap(VNI, &miss, T0, &mut reply),
        TapAction::Flood(_)
    ));
    assert_eq!(
        s.pop_event(),
        Some(Event::L3Miss {
            vni: VNI,
            ip: Ipv4Addr::new(10, 0, 0, 9)
        })
    );
    // Gratuitous ARP is flooded, never answered.
    let garp = arp_request(Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 3));
    assert!(matches!(
        s.from_tap(VNI, &garp, T0, &mut reply),
        TapAction::Flood(_)
    ));
    assert_eq!(counters(&s).arp_replies, 1);
}

#[test]
fn arp_miss_without_flood_list_is_dropped_and_counted() {
    let mut s = switch_with(NetworkConfig::default());
    let req = arp_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
    assert_eq!(
        tap(&mut s, &req, T0),
        TapAction::Drop(DropReason::NoFloodTargets)
    );
    assert_eq!(counters(&s).l3_misses, 1);
}

#[test]
fn proxy_off_floods_arp() {
    let mut s = switch_with(NetworkConfig {
        arp_proxy: false,
        ..Default::default()
    });
    let n = s.network_mut(VNI).unwrap();
    n.neigh_add(Ipv4Addr::new(10, 0, 0, 3), REMOTE).unwrap();
    n.flood_add(vtep(2)).unwrap();
    let req = arp_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
    assert!(matches!(tap(&mut s, &req, T0), TapAction::Flood(_)));
}

#[test]
fn vnis_are_isolated() {
    let mut s = switch_with(NetworkConfig::default());
    let v43 = Vni::new(43).unwrap();
    s.add_network(v43, NetworkConfig::default()).unwrap();
    s.network_mut(VNI).unwrap().flood_add(vtep(2)).unwrap();
    s.network_mut(v43)
        .unwrap()
        .flood_add(Vtep {
            vni: v43,
            ..vtep(3)
        })
        .unwrap();
    let d = datagram(VNI, &ipv4(LOCAL, REMOTE));
    assert_eq!(
        s.from_network(from(3), tunnel::decap(&d), T0),
        NetworkAction::Drop(DropReason::UnknownVtep)
    );
    assert!(matches!(
        s.from_network(from(2), tunnel::decap(&d), T0),
        NetworkAction::Deliver { vni: VNI, .. }
    ));
    assert!(s.network(v43).unwrap().fdb().is_empty());
    assert_eq!(
        s.add_network(v43, NetworkConfig::default()),
        Err(SwitchError::NetworkExists(v43))
    );
}

#[test]
fn event_queue_is_bounded() {
    let mut s = switch_with(NetworkConfig::default());
    for i in 0..EVENT_QUEUE_LEN + 5 {
        let b = (i as u32).to_be_bytes();
        tap(
            &mut s,
            &ipv4(MacAddr([2, 0, b[0], b[1], b[2], b[3]]), LOCAL),
            T0,
        );
    }
    assert_eq!(s.counters().events_lost, 5);
    assert_eq!(
        std::iter::from_fn(|| s.pop_event()).count(),
        EVENT_QUEUE_LEN
    );
}

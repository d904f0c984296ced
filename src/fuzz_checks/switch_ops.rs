//! Fuzz property for sequences of control-plane and data-plane operations.

use arbitrary::{Arbitrary, Unstructured};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use vxtap_dataplane::switch::{
    Admission, EntryKind, FloodPolicy, NetworkConfig, Switch, ARP_REPLY_LEN,
};
use vxtap_dataplane::tunnel::{self, Vtep};
use vxtap_dataplane::wire::{EtherType, EthernetFrame, EthernetRepr, MacAddr, Vni, VxlanRepr};
use vxtap_dataplane::{TapAction, Timestamp};

/// One step. Small index spaces make collisions (the interesting cases) likely.
#[derive(Debug, Arbitrary)]
enum Op {
    /// A frame from remote MAC `mac` arrives from VTEP `vtep`.
    Receive {
        mac: u8,
        vtep: u8,
    },
    /// A local frame to MAC `mac` leaves through the TAP.
    Send {
        mac: u8,
    },
    /// A raw datagram from VTEP `vtep`.
    Raw {
        bytes: Vec<u8>,
        vtep: u8,
    },
    /// Time passes.
    Advance {
        secs: u16,
    },
    /// The ageing sweep runs.
    Age,
    AddStatic {
        mac: u8,
        vtep: u8,
    },
    ReplaceStatic {
        mac: u8,
        vtep: u8,
    },
    Delete {
        mac: u8,
    },
    FloodAdd {
        vtep: u8,
    },
    FloodDel {
        vtep: u8,
    },
    NeighAdd {
        ip: u8,
        mac: u8,
    },
    NeighDel {
        ip: u8,
    },
    Reconfigure {
        learning: bool,
        any_source: bool,
        flood: bool,
        max_learned: u8,
        ageing_secs: u8,
    },
}

fn vni() -> Vni {
    Vni::new(42).expect("42 fits in 24 bits")
}

/// MAC `i` of 16: 0 is all zeros, 1 broadcast, 2 multicast, the rest unicast.
fn mac(i: u8) -> MacAddr {
    match i % 16 {
        0 => MacAddr::ZERO,
        1 => MacAddr::BROADCAST,
        2 => MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
        n => MacAddr([2, 0x42, 10, 0, 0, n]),
    }
}

/// VTEP `i` of 5: four hosts and one multicast address the switch must refuse.
fn vtep(i: u8) -> Vtep {
    let ip = match i % 5 {
        4 => Ipv4Addr::new(239, 1, 1, 1),
        n => Ipv4Addr::new(198, 18, 0, n + 1),
    };
    Vtep {
        ip,
        port: 4789,
        vni: vni(),
    }
}

fn frame(dst: MacAddr, src: MacAddr) -> [u8; 60] {
    let mut f = [0u8; 60];
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    f
}

const LOCAL: MacAddr = MacAddr([2, 0x42, 10, 9, 9, 9]);

/// See the module docs of `fuzz_checks`.
pub fn switch_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut config = NetworkConfig {
        max_learned: 4,
        ageing_secs: 30,
        ..Default::default()
    };
    let mut s = Switch::new();
    s.add_network(vni(), config).expect("valid config");
    let mut statics: BTreeMap<MacAddr, Vtep> = BTreeMap::new();
    let mut now = Timestamp::from_secs(1);
    let mut reply = [0u8; ARP_REPLY_LEN];
    // `arbitrary` keeps producing defaults from exhausted input, so stop on empty.
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        let n = s.network_mut(vni()).expect("never removed");
        match op {
            Op::Receive { mac: m, vtep: v } => {
                let mut d = VxlanRepr { vni: vni() }.to_bytes().to_vec();
                d.extend_from_slice(&frame(LOCAL, mac(m)));
                s.from_network(SocketAddrV4::new(vtep(v).ip, 50000), tunnel::decap(&d), now);
            }
            Op::Send { mac: m } => {
                let action = s.from_tap(vni(), &frame(mac(m), LOCAL), now, &mut reply);
                if let Some(expected) = statics.get(&mac(m)) {
                    assert_eq!(
                        action,
                        TapAction::Forward(*expected),
                        "statics always forward"
                    );
                }
            }
            Op::Raw { bytes, vtep: v } => {
                s.from_network(
                    SocketAddrV4::new(vtep(v).ip, 50000),
                    tunnel::decap(&bytes),
                    now,
                );
            }
            Op::Advance { secs } => now = now.add_millis(u64::from(secs) * 1000),
            Op::Age => {
                s.age(now);
            }
            Op::AddStatic { mac: m, vtep: v } => {
                let result = n.fdb_add(mac(m), vtep(v), now);
                let valid = mac(m).is_unicast() && v % 5 != 4 && !statics.contains_key(&mac(m));
                assert_eq!(result.is_ok(), valid, "{result:?}");
                if valid {
                    statics.insert(mac(m), vtep(v));
                }
            }
            Op::ReplaceStatic { mac: m, vtep: v } => {
                let result = n.fdb_replace(mac(m), vtep(v), now);
                let valid = mac(m).is_unicast() && v % 5 != 4;
                assert_eq!(result.is_ok(), valid, "{result:?}");
                if valid {
                    statics.insert(mac(m), vtep(v));
                }
            }
            Op::Delete { mac: m } => {
                n.fdb_del(&mac(m));
                statics.remove(&mac(m));
            }
            Op::FloodAdd { vtep: v } => {
                let _ = n.flood_add(vtep(v));
            }
            Op::FloodDel { vtep: v } => {
                n.flood_del(&vtep(v));
            }
            Op::NeighAdd { ip, mac: m } => {
                let _ = n.neigh_add(Ipv4Addr::new(10, 0, 0, ip), mac(m));
            }
            Op::NeighDel { ip } => {
                n.neigh_del(&Ipv4Addr::new(10, 0, 0, ip));
            }
            Op::Reconfigure {
                learning,
                any_source,
                flood,
                max_learned,
                ageing_secs,
            } => {
                let next = NetworkConfig {
                    learning,
                    admission: if any_source {
                        Admission::Any
                    } else {
                        Admission::KnownVteps
                    },
                    flood: if flood {
                        FloodPolicy::Flood
                    } else {
                        FloodPolicy::Drop
                    },
                    max_learned: usize::from(max_learned % 8),
                    ageing_secs: u64::from(ageing_secs % 64),
                    ..config
                };
                let result = n.reconfigure(next);
                assert_eq!(result.is_ok(), next.max_learned > 0 && next.ageing_secs > 0);
                if result.is_ok() {
                    config = next;
                }
            }
        }
        check_invariants(&s, &statics, &config);
    }
}

fn check_invariants(s: &Switch, statics: &BTreeMap<MacAddr, Vtep>, config: &NetworkConfig) {
    let n = s.network(vni()).expect("never removed");
    let fdb = n.fdb();
    assert_eq!(n.config(), config, "refused changes keep the old config");
    for (mac, vtep) in statics {
        let entry = fdb.get(mac).expect("static entries stay");
        assert_eq!(
            (entry.kind, entry.vtep),
            (EntryKind::Static, *vtep),
            "static {mac} moved"
        );
    }
    let learned = fdb
        .iter()
        .filter(|(_, e)| e.kind == EntryKind::Learned)
        .count();
    assert_eq!(fdb.static_len(), statics.len());
    assert_eq!(fdb.learned_len(), learned);
    if config.learning {
        assert!(
            learned <= config.max_learned,
            "cap {} exceeded: {learned}",
            config.max_learned
        );
    } else {
        assert_eq!(learned, 0);
    }
    assert!(fdb.iter().all(|(mac, _)| mac.is_unicast()));
    let mut flood = n.flood_list().to_vec();
    flood.sort();
    flood.dedup();
    assert_eq!(
        flood.len(),
        n.flood_list().len(),
        "flood list has no duplicates"
    );
    let c = n.counters();
    assert!(
        c.learned + c.moves <= c.net_frames,
        "learning needs received frames"
    );
    assert!(c.delivered + c.drops.total() <= c.tap_frames + c.net_frames);
}

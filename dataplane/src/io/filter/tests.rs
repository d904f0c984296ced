use super::*;
use crate::io::testns::TestNetns;
use crate::io::{netns, sys, RecvBatch};
use std::net::{SocketAddrV4, UdpSocket as StdUdpSocket};
use std::time::{Duration, Instant};

const FAKE: MapFds = MapFds {
    vnis: 11,
    vteps: 12,
    global: 13,
    vni_drops: 14,
};

#[test]
fn instructions_encode_like_the_kernel_headers() {
    let insns = program(FAKE);
    // r6 = r1; r7 = *(u32 *)(r6 + 0); r8 = *(u32 *)(r6 + 164)
    assert_eq!(insns[0], [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
    assert_eq!(insns[1], [0x61, 0x67, 0, 0, 0, 0, 0, 0]);
    assert_eq!(insns[2], [0x61, 0x68, 164, 0, 0, 0, 0, 0]);
    // if r8 != 0 goto +1; r8 = 1; if r7 > 15 goto Header
    assert_eq!(insns[3], [0x55, 0x08, 1, 0, 0, 0, 0, 0]);
    assert_eq!(insns[4], [0xb7, 0x08, 0, 0, 1, 0, 0, 0]);
    assert_eq!(insns[5][..2], [0x25, 0x07]);
    // The truncated drop: *(u32 *)(r10 - 12) = 0, then r1 = map `global` (two slots, src 1).
    assert_eq!(insns[6], [0x62, 0x0a, 0xf4, 0xff, 0, 0, 0, 0]);
    assert_eq!(insns[7], [0x18, 0x11, 0, 0, 13, 0, 0, 0]);
    assert_eq!(insns[8], [0; 8]);
    // lock *(u64 *)(r0 + 0) += r8
    assert!(insns.contains(&[0xdb, 0x80, 0, 0, 0, 0, 0, 0]));
    // The source IP comes from the network header: ld_abs_w [SKF_NET_OFF + 12].
    let net = (SKF_NET_OFF + 12).to_le_bytes();
    assert!(insns.contains(&[0x20, 0, 0, 0, net[0], net[1], net[2], net[3]]));
    for map in [11u8, 12, 13, 14] {
        assert!(
            insns.contains(&[0x18, 0x11, 0, 0, map, 0, 0, 0]),
            "map fd {map} is never loaded"
        );
    }
    assert_eq!(*insns.last().unwrap(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    assert!(insns.len() < 100, "{} instructions", insns.len());
}

#[test]
fn every_drop_path_ends_the_program() {
    // Five drops, one pass: six exits, each after `r0 = 0` but the last.
    let insns = program(FAKE);
    let exits: Vec<usize> = (0..insns.len()).filter(|&i| insns[i][0] == 0x95).collect();
    assert_eq!(exits.len(), 6);
    for &at in &exits[..5] {
        assert_eq!(insns[at - 1], [0xb7, 0, 0, 0, 0, 0, 0, 0]);
    }
}

/// A VXLAN datagram: flags, reserved, VNI, reserved, then a 14-byte inner header.
fn vxlan(flags: u8, vni: u32, last: u8) -> Vec<u8> {
    let mut d = vec![flags, 0, 0, 0];
    d.extend_from_slice(&(vni << 8 | u32::from(last)).to_be_bytes());
    d.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0]);
    d
}

struct Rig {
    ns: TestNetns,
    socket: crate::io::UdpSocket,
    filter: UnderlayFilter,
    known: StdUdpSocket,
    stranger: StdUdpSocket,
}

const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const KNOWN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const PORT: u16 = 4789;

fn rig() -> Rig {
    let ns = TestNetns::new();
    for ip in [HOST, KNOWN, STRANGER] {
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let (socket, known, stranger) = netns::run_in(ns.path(), || {
        (
            crate::io::UdpSocket::bind(SocketAddrV4::new(HOST, PORT), false).unwrap(),
            StdUdpSocket::bind((KNOWN, 0)).unwrap(),
            StdUdpSocket::bind((STRANGER, 0)).unwrap(),
        )
    })
    .unwrap();
    let mut filter = UnderlayFilter::load().unwrap();
    filter.attach(&socket).unwrap();
    Rig {
        ns,
        socket,
        filter,
        known,
        stranger,
    }
}

fn admission(admit_any: bool, vteps: &[Ipv4Addr]) -> NetworkAdmission {
    NetworkAdmission {
        admit_any,
        strict_reserved: true,
        vteps: vteps.iter().copied().collect(),
    }
}

impl Rig {
    fn send(&self, from: &StdUdpSocket, datagram: &[u8]) {
        from.send_to(datagram, (HOST, PORT)).unwrap();
    }

    /// Reads what reaches the socket until `kept` datagrams came and the filter counted
    /// `dropped` in all, then returns the payloads in arrival order.
    fn collect(&self, kept: usize, dropped: u64) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut batch = RecvBatch::new(16, 2048);
        let mut got = Vec::new();
        loop {
            match batch.recv(&self.socket) {
                Ok(n) => got.extend((0..n).map(|i| batch.payload(i).to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let counted = self.filter.drops().unwrap().datagrams;
                    if got.len() >= kept && counted >= dropped {
                        assert_eq!((got.len(), counted), (kept, dropped), "{got:02x?}");
                        return got;
                    }
                    sys::wait_readable(self.socket.as_fd(), 5).unwrap();
                }
                Err(e) => panic!("receive: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "timed out: {} kept, drops {:?}",
                got.len(),
                self.filter.drops().unwrap()
            );
        }
    }
}

/// Every reason the filter knows, each dropped and counted where the switch would count it,
/// while what the switch would take passes whole.
#[test]
fn the_kernel_drops_what_the_switch_would_and_counts_it_per_reason() {
    let mut r = rig();
    let (v42, v43) = (Vni::new(42).unwrap(), Vni::new(43).unwrap());
    let wanted = BTreeMap::from([
        (v42, admission(false, &[KNOWN])),
        (v43, admission(true, &[])),
    ]);
    r.filter.sync(&wanted).unwrap();

    let good = vxlan(0x08, 42, 0);
    let any = vxlan(0x08, 43, 0);
    r.send(&r.known, &[1, 2, 3, 4]); // truncated
    r.send(&r.known, &[]); // truncated
    r.send(&r.known, &vxlan(0x00, 42, 0)); // I flag clear
    r.send(&r.known, &vxlan(0x08, 99, 0)); // unknown VNI
    r.send(&r.stranger, &vxlan(0x08, 42, 0)); // unknown VTEP
    r.send(&r.known, &vxlan(0x0c, 42, 0)); // reserved flag bit
    r.send(&r.known, &vxlan(0x08, 42, 1)); // reserved last byte
    r.send(&r.known, &good);
    r.send(&r.stranger, &any); // admit any
    let got = r.collect(2, 7);
    assert!(got.contains(&good) && got.contains(&any), "{got:02x?}");

    let drops = r.filter.drops().unwrap();
    assert_eq!(drops.global.get(DropReason::Truncated), 2);
    assert_eq!(drops.global.get(DropReason::VniFlagClear), 1);
    assert_eq!(drops.global.get(DropReason::UnknownVni), 1);
    assert_eq!(drops.networks[&v42].get(DropReason::UnknownVtep), 1);
    assert_eq!(drops.networks[&v42].get(DropReason::ReservedBits), 2);
    assert_eq!(drops.networks[&v43].total(), 0);
    assert_eq!((drops.datagrams, drops.units), (7, 7));

    // The maps follow changes: the stranger becomes known, network 43 goes away.
    let wanted = BTreeMap::from([(v42, admission(false, &[KNOWN, STRANGER]))]);
    r.filter.sync(&wanted).unwrap();
    r.send(&r.stranger, &good);
    r.send(&r.stranger, &any);
    assert_eq!(r.collect(1, 8), vec![good.clone()]);
    assert_eq!(
        r.filter.drops().unwrap().global.get(DropReason::UnknownVni),
        2
    );
    // And back: the stranger is forgotten again.
    let wanted = BTreeMap::from([(v42, admission(false, &[KNOWN]))]);
    r.filter.sync(&wanted).unwrap();
    r.send(&r.stranger, &good);
    r.collect(0, 9);
    assert_eq!(
        r.filter.drops().unwrap().networks[&v42].get(DropReason::UnknownVtep),
        2
    );

    // Detached, everything reaches userspace again.
    r.filter.detach().unwrap();
    r.send(&r.stranger, &[1]);
    assert_eq!(r.collect(1, 9), vec![vec![1]]);
    drop(r.ns);
}

/// A network that is not strict takes reserved bits; one that admits any takes strangers.
#[test]
fn policy_flags_follow_the_network() {
    let mut r = rig();
    let v7 = Vni::new(7).unwrap();
    let lax = NetworkAdmission {
        admit_any: false,
        strict_reserved: false,
        vteps: BTreeSet::from([KNOWN]),
    };
    r.filter.sync(&BTreeMap::from([(v7, lax.clone())])).unwrap();
    let reserved = vxlan(0x0c, 7, 0xff);
    r.send(&r.known, &reserved);
    r.send(&r.stranger, &reserved);
    assert_eq!(r.collect(1, 1), vec![reserved.clone()]);
    let any = NetworkAdmission {
        admit_any: true,
        ..lax
    };
    r.filter.sync(&BTreeMap::from([(v7, any)])).unwrap();
    r.send(&r.stranger, &reserved);
    assert_eq!(r.collect(1, 1), vec![reserved]);
}

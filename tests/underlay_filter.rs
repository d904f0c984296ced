//! Issue 12, floods: the underlay filter drops what is plainly not ours in the kernel and
//! counts it under the same reasons in `vxtap stats`, its maps follow the fdb, flood lists
//! and admission, and with the filter off (the fallback) userspace drops and counts the same.
//!
//! Needs root and /dev/net/tun. Each test builds its own topology (unique namespaces, torn
//! down even on failure) with a stranger on the underlay at 198.18.0.9. No assertion
//! depends on timing; every wait is bounded.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;
use vxtap_dataplane::wire::{MacAddr, VxlanPacket};
use vxtap_dataplane::DropReason;
use vxtap_suite::harness::capture::{self, Capture, TEST_ETHERTYPE};
use vxtap_suite::harness::topology::{HostKind, NetworkSpec, Topology, VXLAN_PORT};
use vxtap_suite::harness::NetnsExt;
use vxtap_suite::harness::{require_root, stats, traffic, wait_until};

const VXTAP: HostKind = HostKind::Vxtap;
const STATE_LIMIT: Duration = Duration::from_secs(10);
const STRANGER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
const ROUNDS: i64 = 5;

fn vxlan(flags: u8, reserved1: u32, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0u8; 8 + inner.len()];
    let mut packet = VxlanPacket::new_unchecked(&mut datagram[..]);
    packet.set_flags(flags);
    packet.set_reserved1(reserved1);
    packet.set_vni(vxtap_dataplane::Vni::new(vni).expect("a 24-bit VNI"));
    packet.payload_mut().copy_from_slice(inner);
    datagram
}

/// A topology of two vxtap hosts with static peers and a stranger on the underlay, the
/// daemons started with the filter `on` (through `VXTAP_UNDERLAY_FILTER=on`) or `off`
/// (through `--underlay-filter off`), and `spec`.
struct Rig {
    topo: Topology,
    peer: UdpSocket,
    outsider: UdpSocket,
    target: SocketAddrV4,
}

fn rig(filter: &str, spec: NetworkSpec) -> Rig {
    require_root();
    let wrapper: &[&str] = match filter {
        "on" => &["env", "VXTAP_UNDERLAY_FILTER=on"],
        // The flag after the harness's `daemon --threads 2`.
        _ => &["sh", "-c", "exec \"$@\" --underlay-filter off", "sh"],
    };
    let mut topo = Topology::with_daemon_wrapper(&[VXTAP, VXTAP], false, wrapper);
    topo.add_network(spec);
    topo.program_static_peers(0);
    let stranger = topo.add_underlay_ns(9);
    let peer_ip = topo.host(1).underlay_ip;
    let peer = topo.host(1).ns.run_in(|| UdpSocket::bind((peer_ip, 0)));
    let outsider = topo.extras[stranger].run_in(|| UdpSocket::bind((STRANGER_IP, 0)));
    let target = SocketAddrV4::new(topo.host(0).underlay_ip, VXLAN_PORT);
    Rig {
        peer: peer.expect("a UDP socket in host B"),
        outsider: outsider.expect("a UDP socket on the stranger"),
        target,
        topo,
    }
}

impl Rig {
    fn stats(&self) -> Value {
        self.topo.daemon(0).stats()
    }

    fn send(&self, stranger: bool, datagram: &[u8]) {
        let socket = if stranger { &self.outsider } else { &self.peer };
        socket.send_to(datagram, self.target).expect("sending");
    }

    /// A well-formed datagram for the container on host A carrying `marker`, with `src` as
    /// inner source.
    fn good(&self, src: MacAddr, marker: &[u8]) -> Vec<u8> {
        let dst = self.topo.container(0, 0).mac;
        vxlan(
            0x08,
            0,
            42,
            &capture::ethernet_frame(dst, src, TEST_ETHERTYPE, marker),
        )
    }
}

fn global_delta(before: &Value, after: &Value, field: &str) -> i64 {
    stats::global_counter(after, field) as i64 - stats::global_counter(before, field) as i64
}

/// Garbage, flag-clear, unknown-VNI, reserved-bit and unknown-VTEP datagrams at host A,
/// ROUNDS of each: every one counted under its reason, by the filter in the kernel (none
/// reaching userspace) or, with the filter off, by userspace as before; a well-formed
/// datagram from the known peer still arrives. Returns the rig for more.
fn hostile_burst(filter: &str) -> Rig {
    let r = rig(filter, NetworkSpec::recipe());
    let links = r.topo.daemon(0).links();
    assert_eq!(links[0]["underlay_filter"], filter, "{links:#}");
    let line = r.topo.daemon(0).cli_ok(&["link", "show"]);
    assert!(line.contains(&format!("filter {filter}")), "{line}");
    let a = r.topo.container(0, 0);
    let inner = capture::ethernet_frame(a.mac, MacAddr([2, 0, 0, 0, 0, 0x42]), 0x0800, b"x");
    let cases: Vec<(bool, Vec<u8>, DropReason)> = vec![
        (false, vec![0x08; 3], DropReason::Truncated),
        (false, vxlan(0x00, 0, 42, &inner), DropReason::VniFlagClear),
        (false, vxlan(0x08, 0, 4242, &inner), DropReason::UnknownVni),
        (false, vxlan(0x08, 1, 42, &inner), DropReason::ReservedBits),
        (true, vxlan(0x08, 0, 42, &inner), DropReason::UnknownVtep),
    ];
    let before = r.stats();
    for _ in 0..ROUNDS {
        for (stranger, datagram, _) in &cases {
            r.send(*stranger, datagram);
        }
    }
    let mut want_global = BTreeMap::new();
    let mut want_link = BTreeMap::new();
    for reason in DropReason::ALL {
        let n = if cases.iter().any(|c| c.2 == *reason) {
            ROUNDS
        } else {
            0
        };
        let global = matches!(
            reason,
            DropReason::Truncated | DropReason::VniFlagClear | DropReason::UnknownVni
        );
        want_global.insert(reason.name(), if global { n } else { 0 });
        want_link.insert(reason.name(), if global { 0 } else { n });
    }
    let deltas = || {
        let after = r.stats();
        (
            stats::drop_deltas(&stats::global_drops(&before), &stats::global_drops(&after)),
            stats::drop_deltas(
                &stats::link_drops(&before, "vxlan1"),
                &stats::link_drops(&after, "vxlan1"),
            ),
        )
    };
    wait_until(STATE_LIMIT, || {
        deltas() == (want_global.clone(), want_link.clone())
    });
    assert_eq!(deltas(), (want_global, want_link), "drops on host A");
    let after = r.stats();
    let total = ROUNDS * cases.len() as i64;
    let (in_kernel, in_userspace) = if filter == "on" {
        (total, 0)
    } else {
        (0, total)
    };
    assert_eq!(
        (
            global_delta(&before, &after, "udp_rx_filtered"),
            global_delta(&before, &after, "udp_rx_datagrams"),
            global_delta(&before, &after, "udp_rx_overflows"),
        ),
        (in_kernel, in_userspace, 0),
        "(dropped in the kernel, seen by userspace, overflows)"
    );

    let mut cap = Capture::start_for(&a.ns, "eth0", TEST_ETHERTYPE);
    r.send(false, &r.good(MacAddr([2, 0, 0, 0, 0, 0x77]), b"control"));
    assert_eq!(
        cap.wait_for_marked(b"control", 1),
        1,
        "control not delivered"
    );
    let delivered = global_delta(&after, &r.stats(), "udp_rx_datagrams");
    assert_eq!(delivered, 1, "the control datagram reached userspace");
    r
}

/// The maps follow the fdb: a VTEP added later is admitted, and refused again once its
/// entry is gone; real traffic flows throughout.
#[test]
fn the_filter_drops_in_the_kernel_and_follows_the_fdb() {
    let r = hostile_burst("on");
    let (a, b) = (r.topo.container(0, 0), r.topo.container(1, 0));
    traffic::assert_ping(&b.ns, a.ip, 3, None);

    let behind_stranger = MacAddr([2, 0, 0, 0, 0, 0x99]);
    let daemon = r.topo.daemon(0);
    let mac = behind_stranger.to_string();
    let dst = STRANGER_IP.to_string();
    daemon.cli_ok(&["fdb", "add", &mac, "dev", "vxlan1", "dst", &dst]);
    let mut cap = Capture::start_for(&a.ns, "eth0", TEST_ETHERTYPE);
    let before = r.stats();
    r.send(true, &r.good(behind_stranger, b"admitted"));
    assert_eq!(cap.wait_for_marked(b"admitted", 1), 1, "stranger refused");
    assert_eq!(global_delta(&before, &r.stats(), "udp_rx_filtered"), 0);

    // On the flood list instead of the fdb: still admitted.
    daemon.cli_ok(&["fdb", "del", &mac, "dev", "vxlan1"]);
    daemon.cli_ok(&[
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        "vxlan1",
        "dst",
        &dst,
    ]);
    r.send(true, &r.good(behind_stranger, b"flood-listed"));
    assert_eq!(
        cap.wait_for_marked(b"flood-listed", 1),
        1,
        "stranger refused"
    );

    // Gone from both: dropped in the kernel again.
    daemon.cli_ok(&[
        "fdb",
        "del",
        "00:00:00:00:00:00",
        "dev",
        "vxlan1",
        "dst",
        &dst,
    ]);
    let before = r.stats();
    r.send(true, &r.good(behind_stranger, b"forgotten"));
    wait_until(STATE_LIMIT, || {
        global_delta(&before, &r.stats(), "udp_rx_filtered") == 1
    });
    let after = r.stats();
    assert_eq!(global_delta(&before, &after, "udp_rx_filtered"), 1);
    assert_eq!(
        stats::link_drop(&after, "vxlan1", DropReason::UnknownVtep)
            - stats::link_drop(&before, "vxlan1", DropReason::UnknownVtep),
        1
    );
    assert_eq!(cap.count_marked(b"forgotten"), 0);
    traffic::assert_ping(&a.ns, b.ip, 3, None);
    r.topo.assert_no_kernel_vxlan();
}

/// The fallback: with the filter off, the same datagrams reach userspace and are dropped
/// and counted there, under the same reasons.
#[test]
fn with_the_filter_off_userspace_drops_and_counts_the_same() {
    let r = hostile_burst("off");
    let (a, b) = (r.topo.container(0, 0), r.topo.container(1, 0));
    traffic::assert_ping(&a.ns, b.ip, 3, None);
    r.topo.assert_no_kernel_vxlan();
}

/// `admit any`: the filter lets unknown sources through for that link (the switch admits
/// them), while it still drops unknown VNIs.
#[test]
fn admit_any_admits_unknown_sources_through_the_filter() {
    let r = rig(
        "on",
        NetworkSpec::recipe().host_link_args(0, &["admit", "any"]),
    );
    let a = r.topo.container(0, 0);
    let mut cap = Capture::start_for(&a.ns, "eth0", TEST_ETHERTYPE);
    let before = r.stats();
    r.send(true, &r.good(MacAddr([2, 0, 0, 0, 0, 0x98]), b"anyone"));
    assert_eq!(cap.wait_for_marked(b"anyone", 1), 1, "stranger refused");
    let stranger_inner = capture::ethernet_frame(a.mac, MacAddr([2, 0, 0, 0, 0, 1]), 0x0800, b"");
    r.send(true, &vxlan(0x08, 0, 4242, &stranger_inner));
    wait_until(STATE_LIMIT, || {
        global_delta(&before, &r.stats(), "udp_rx_filtered") == 1
    });
    let after = r.stats();
    assert_eq!(global_delta(&before, &after, "udp_rx_filtered"), 1);
    assert_eq!(
        stats::global_drop(&after, DropReason::UnknownVni)
            - stats::global_drop(&before, DropReason::UnknownVni),
        1
    );
    assert_eq!(
        stats::link_drop(&after, "vxlan1", DropReason::UnknownVtep),
        0
    );
    r.topo.assert_no_kernel_vxlan();
}

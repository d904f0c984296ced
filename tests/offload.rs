//! Issue 5, "Correctness with offloads on": vxtap's TAPs negotiate checksum offload and TSO
//! (`offload on`, the default), so the kernel hands vxtap unfinished checksums and TCP
//! superframes of up to 64 KB; vxtap finishes the checksums, cuts the superframes into MSS
//! segments itself (`dataplane/src/segment/`) and sends each train with `UDP_SEGMENT`. On
//! receive it passes unfinished inner checksums and oversized TCP segments on to its TAP as
//! `NEEDS_CSUM` / TCP GSO (`dataplane/src/offload.rs`). These tests check the result end to
//! end, with the real binary in namespaces (see `vxtap_suite::harness`):
//!
//! - 200 MB each way byte for byte, with proof from vxtap's own counters that superframes
//!   larger than the MTU were read from the TAP and cut;
//! - several MSS values, and the same traffic with `offload off` as a control;
//! - FIN and PSH at segment boundaries (sizes at, one above and one below multiples of the
//!   MSS, and 1 byte), and on the wire: every segment vxtap emitted fits the MTU, carries
//!   complete IP and TCP checksums, and is exactly what Linux's own segmentation would have
//!   made of the superframe it came from (flags only on the last segment);
//! - `nstat` in the receiving containers: no TCP, UDP or ICMP checksum errors;
//! - mixed UDP and TCP at once, both ways;
//! - interop with the kernel's vxlan device under TSO traffic, over the default underlay and
//!   over a bare veth underlay; and two vxtap hosts over a bare veth;
//! - USO (Linux 6.2+): the links also negotiate uso4 and uso6, `UDP_SEGMENT` sends from a
//!   container reach vxtap as one superframe each, which vxtap cuts itself
//!   (`dataplane/src/segment/udp.rs`): every datagram arrives with its exact length and
//!   bytes at five gso sizes, short last datagrams included; and with `offload off` the same
//!   sends, cut by the kernel, arrive the same.
//!
//! - busy polling (`--busy-poll`): the same traffic both ways, and no spinning once idle;
//! - a kernel without UDP offloads (before 4.18), played by a seccomp filter
//!   (`src/bin/old-udp-kernel.rs`): vxtap's start-up probe finds neither `UDP_SEGMENT` nor
//!   `UDP_GRO`, `link show` says so, not one send carries a `UDP_SEGMENT` message, and the
//!   same traffic arrives intact; on this kernel the probe finds both.
//!
//! Needs root and /dev/net/tun. Each test builds its own topology, tears it down even when it
//! fails, checks the containers' checksum error counters and vxtap's TAP error counters, and
//! ends with the no-kernel-vxlan check. Every wait is bounded; no assertion depends on timing
//! or speed.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vxtap_dataplane::wire::{
    EtherType, EthernetFrame, IpProtocol, Ipv4Packet, TcpFlags, TcpPacket,
};
use vxtap_suite::harness::capture::{Capture, VxlanDatagram};
use vxtap_suite::harness::topology::{HostKind, NetworkSpec, Topology, UNDERLAY_IF, VXLAN_PORT};
use vxtap_suite::harness::traffic::{self, TcpOptions, TcpSession, Transfer, UdpFlow};
use vxtap_suite::harness::NetnsExt;
use vxtap_suite::harness::{require_root, stats, Netns};

const MB: u64 = 1 << 20;
const VXTAP: HostKind = HostKind::Vxtap;
const KERNEL: HostKind = HostKind::Kernel;
const LINK: &str = "vxlan1";
/// The overlay MTU (TAP, veths, containers).
const MTU: usize = 1450;
/// The underlay MTU (`ul0`, a veth's default).
const UNDERLAY_MTU: usize = 1500;
/// An Ethernet header without VLAN tags.
const ETHERNET_HEADER: usize = 14;
/// The largest UDP payload that fits the overlay MTU unfragmented.
const UDP_MAX_PAYLOAD: usize = MTU - 20 - 8;
/// Generous bounds for a debug build on a loaded 2-core machine; only failures wait this long.
const BULK_LIMIT: Duration = Duration::from_secs(150);
const TRANSFER_LIMIT: Duration = Duration::from_secs(60);
const SMALL_LIMIT: Duration = Duration::from_secs(20);
/// The counters that count segments a container's stack dropped for a bad checksum.
const CSUM_COUNTERS: [&str; 3] = ["TcpInCsumErrors", "UdpInCsumErrors", "IcmpInCsumErrors"];

/// Two vxtap hosts on the recipe's network with Docker's static entries.
fn two_vxtap_hosts(link_args: &[&str]) -> Topology {
    two_vxtap_hosts_on(link_args, true)
}

/// [`two_vxtap_hosts`] with `link_args`, after checking that both links really run with
/// checksum offload and TSO and steer by flow hash ([`assert_offloads_on`]).
fn offloaded_pair(link_args: &[&str]) -> Topology {
    let topo = two_vxtap_hosts(link_args);
    assert_offloads_on(&topo, 0);
    assert_offloads_on(&topo, 1);
    topo
}

/// [`two_vxtap_hosts`] over a wire-like underlay or (`wire_checksums` false) a bare veth.
fn two_vxtap_hosts_on(link_args: &[&str], wire_checksums: bool) -> Topology {
    let mut topo = Topology::with_underlay(&[VXTAP, VXTAP], wire_checksums);
    let mut spec = NetworkSpec::recipe();
    spec.link_args = link_args.iter().map(|s| (*s).to_owned()).collect();
    topo.add_network(spec);
    topo.program_static_peers(0);
    topo
}

/// A vxtap host (0) and a kernel vxlan host (1), over a wire-like or a bare veth underlay.
fn vxtap_and_kernel(wire_checksums: bool) -> Topology {
    let mut topo = Topology::with_underlay(&[VXTAP, KERNEL], wire_checksums);
    topo.add_network(NetworkSpec::recipe());
    topo.program_static_peers(0);
    topo
}

/// `LINK` as `vxtap link show -j` describes it on host `i`.
fn link_status(topo: &Topology, i: usize) -> Value {
    let links = topo.daemon(i).links();
    links
        .as_array()
        .and_then(|all| all.iter().find(|l| l["name"] == LINK))
        .cloned()
        .unwrap_or_else(|| panic!("no {LINK} in link show -j: {links:#}"))
}

/// The offloads `vxtap link show -j` lists for `LINK` on host `i`.
fn offloads(topo: &Topology, i: usize) -> Vec<String> {
    let link = link_status(topo, i);
    link["offloads"]
        .as_array()
        .unwrap_or_else(|| panic!("no offloads list in link show -j: {link:#}"))
        .iter()
        .map(|o| o.as_str().expect("offload names are strings").to_owned())
        .collect()
}

/// Panics unless host `i`'s link really runs with checksum offload and TSO for IPv4, and
/// steers its queues by flow hash.
fn assert_offloads_on(topo: &Topology, i: usize) {
    let on = offloads(topo, i);
    assert!(
        on.iter().any(|o| o == "csum") && on.iter().any(|o| o == "tso4"),
        "host {i}: {LINK} should run with csum and tso4 (offload on is the default), \
         link show -j lists {on:?}"
    );
    // Exact order on the wire (the captures below) needs every flow on one worker from
    // its first frame: vxtap's steering program, not the kernel's flow table.
    let link = link_status(topo, i);
    assert_eq!(
        link["steering"], "flow-hash",
        "host {i}: {LINK} should steer its queues by flow hash: {link:#}"
    );
    // Every kernel this suite runs on (6.x) has UDP GSO (4.18+) and GRO (5.0+).
    assert_underlay_offloads(topo, i, true);
}

/// Panics unless `link show` (JSON and text) and the start-up log of host `i` say both
/// underlay offloads are `on`, or both `off`.
fn assert_underlay_offloads(topo: &Topology, i: usize, on: bool) {
    let link = link_status(topo, i);
    assert_eq!(
        (&link["udp_gso"], &link["udp_gro"]),
        (&Value::Bool(on), &Value::Bool(on)),
        "host {i}: link show -j: {link:#}"
    );
    let word = if on { "on" } else { "off" };
    let text = topo.daemon(i).cli_ok(&["link", "show", LINK]);
    assert!(
        text.contains(&format!("underlay udp_gso {word} udp_gro {word}")),
        "host {i}: link show: {text}"
    );
    let log = topo.daemon(i).log();
    assert!(
        log.contains(&format!("udp_gso={word} udp_gro={word}")),
        "host {i}: the start-up log should name the underlay offloads: {log}"
    );
}

/// Counter `field` of `LINK` on host `i` now.
fn counter(topo: &Topology, i: usize, field: &str) -> u64 {
    stats::link_counter(&topo.daemon(i).stats(), LINK, field)
}

/// `after - before` of `field` of `LINK`.
fn delta(before: &Value, after: &Value, field: &str) -> u64 {
    stats::link_counter(after, LINK, field) - stats::link_counter(before, LINK, field)
}

/// Absolute values of `names` in `ns` (`nstat -a`: no deltas; `-s`: the history file that
/// nstat shares across namespaces is neither read nor written). Each container namespace is
/// fresh, so absolute values count only the test's own traffic.
fn nstat(ns: &Netns, names: &[&str]) -> BTreeMap<String, u64> {
    let mut args = vec!["nstat", "-asz"];
    args.extend_from_slice(names);
    let out = ns.exec(&args);
    let values: BTreeMap<String, u64> = out
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let value = words.next()?.parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect();
    for name in names {
        assert!(
            values.contains_key(*name),
            "nstat in {} does not list {name}:\n{out}",
            ns.name()
        );
    }
    values
}

/// Panics if the stack in `ns` has dropped any TCP, UDP or ICMP packet for a bad checksum.
fn assert_no_csum_errors(ns: &Netns) {
    let errors = nstat(ns, &CSUM_COUNTERS);
    assert!(
        errors.values().all(|&n| n == 0),
        "checksum errors in container {}: {errors:?}",
        ns.name()
    );
}

/// [`assert_no_csum_errors`] for every container of network 0.
fn assert_no_csum_errors_anywhere(topo: &Topology) {
    for i in 0..topo.hosts.len() {
        assert_no_csum_errors(&topo.container(i, 0).ns);
    }
}

/// Panics if any vxtap host refused a frame read from its TAP (`tap_rx_errors`: a
/// virtio-net header it cannot honour, a superframe it cannot cut) or had a TAP write refused
/// (`tap_tx_errors`: the kernel rejecting a header vxtap wrote).
fn assert_no_tap_errors(topo: &Topology) {
    for (i, host) in topo.hosts.iter().enumerate() {
        if host.kind == VXTAP {
            for field in ["tap_rx_errors", "tap_tx_errors"] {
                assert_eq!(counter(topo, i, field), 0, "host {i}: {field}");
            }
        }
    }
}

/// Panics unless `transfer` arrived whole: `len` bytes sent and received, same digest.
fn assert_intact(transfer: &Transfer, len: u64, what: &str) {
    assert!(
        transfer.sent == len && transfer.intact(),
        "{what}: expected {len} bytes intact, got {transfer:?}"
    );
}

/// Sends `len` bytes from host `from`'s container to host `to`'s with `options`, and
/// panics unless they arrived intact and the receiver saw end of stream right after them.
fn transfer(
    topo: &Topology,
    from: usize,
    to: usize,
    len: u64,
    limit: Duration,
    options: &TcpOptions,
) -> TcpSession {
    let (a, b) = (topo.container(from, 0), topo.container(to, 0));
    let what = format!("TCP {} -> {} ({len} bytes, {options:?})", a.ip, b.ip);
    let session = traffic::tcp_transfer_with(&a.ns, &b.ns, b.ip, len, limit, options)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_intact(&session.transfer, len, &what);
    session
}

/// Test 1: 200 MB of TCP each way between two vxtap hosts with offloads on arrive byte for
/// byte. The links run with csum and tso4, and on each sender vxtap read superframes from
/// its TAP and cut them: frames read carry on average more bytes than a full-MTU Ethernet
/// frame can hold, so some exceed the MTU, and the datagrams sent number at least three
/// times the frames read (one each without offloads; the kernel's TSO autosizing builds
/// superframes of at least two segments, and of tens at any rate this path reaches, so the
/// bound holds with a wide margin however slow the machine). Nothing read from the TAP was
/// refused (`tap_rx_errors`).
#[test]
fn two_hundred_megabytes_each_way_through_cut_superframes() {
    require_root();
    let topo = offloaded_pair(&[]);
    for (from, to) in [(0, 1), (1, 0)] {
        let before = topo.daemon(from).stats();
        transfer(
            &topo,
            from,
            to,
            200 * MB,
            BULK_LIMIT,
            &TcpOptions::default(),
        );
        let after = topo.daemon(from).stats();
        let frames = delta(&before, &after, "tap_rx_frames");
        let bytes = delta(&before, &after, "tap_rx_bytes");
        let datagrams = delta(&before, &after, "udp_tx_datagrams");
        let largest_plain = (MTU + ETHERNET_HEADER) as u64;
        assert!(
            frames > 0 && bytes > frames * largest_plain,
            "host {from} sending 200 MB: {frames} TAP frames of {bytes} bytes in all; \
             without superframes none can exceed {largest_plain} bytes"
        );
        assert!(
            datagrams >= 3 * frames,
            "host {from} sending 200 MB: {datagrams} datagrams sent for {frames} TAP frames \
             read; cut superframes yield many datagrams each"
        );
        let gso_sends = stats::global_counter(&after, "udp_gso_sends")
            - stats::global_counter(&before, "udp_gso_sends");
        assert!(gso_sends > 0, "host {from}: no UDP_SEGMENT send counted");
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// The MSS values of test 2 and the bytes sent at each: the smallest MSS Linux takes
/// (`TCP_MIN_MSS`, with fewer bytes: about 14 000 segments), the IPv4 default every host must
/// take, two in between, and the route's own (1450 - 40 = 1410). Less 12 bytes of timestamps
/// per segment, each time.
const MSS_VALUES: [(Option<u32>, u64); 5] = [
    (Some(88), MB),
    (Some(536), 8 * MB),
    (Some(1000), 8 * MB),
    (Some(1300), 8 * MB),
    (None, 8 * MB),
];

/// Test 2: transfers with several MSS values (TCP_MAXSEG on both ends, so both SYNs
/// advertise it) arrive intact both ways; each connection really ran at that MSS, and the
/// sender's superframes were cut (several datagrams per frame read).
#[test]
fn several_mss_values_arrive_intact() {
    require_root();
    let topo = offloaded_pair(&[]);
    for (mss, len) in MSS_VALUES {
        for (from, to) in [(0, 1), (1, 0)] {
            let options = TcpOptions {
                mss,
                ..TcpOptions::default()
            };
            let before = topo.daemon(from).stats();
            let session = transfer(&topo, from, to, len, TRANSFER_LIMIT, &options);
            let after = topo.daemon(from).stats();
            let ceiling = mss.unwrap_or((MTU - 40) as u32);
            assert!(
                session.sender_mss <= ceiling && session.sender_mss + 40 >= ceiling,
                "asked for MSS {mss:?}: the sender runs at {}",
                session.sender_mss
            );
            let frames = delta(&before, &after, "tap_rx_frames");
            let datagrams = delta(&before, &after, "udp_tx_datagrams");
            assert!(
                datagrams >= 2 * frames,
                "MSS {mss:?}, host {from}: {datagrams} datagrams for {frames} TAP frames"
            );
        }
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// Test 2's control: with `offload off` the links list no offloads, no frame read from the
/// TAP exceeds the MTU, and the same traffic (two MSS values, both ways) still arrives intact.
#[test]
fn offload_off_still_carries_the_same_traffic() {
    require_root();
    let topo = two_vxtap_hosts(&["offload", "off"]);
    for i in 0..2 {
        let on = offloads(&topo, i);
        assert!(on.is_empty(), "offload off, yet host {i} lists {on:?}");
    }
    for mss in [Some(536), None] {
        for (from, to) in [(0, 1), (1, 0)] {
            let options = TcpOptions {
                mss,
                ..TcpOptions::default()
            };
            transfer(&topo, from, to, 8 * MB, TRANSFER_LIMIT, &options);
        }
    }
    for i in 0..2 {
        let (frames, bytes) = (
            counter(&topo, i, "tap_rx_frames"),
            counter(&topo, i, "tap_rx_bytes"),
        );
        assert!(
            frames > 0 && bytes <= frames * (MTU + ETHERNET_HEADER) as u64,
            "offload off, host {i}: {frames} TAP frames of {bytes} bytes; some exceed the MTU"
        );
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// The kernel refuses GSO: with the underlay MTU at 1400, below the 1500-byte datagram of
/// a full segment, every `UDP_SEGMENT` send of such segments fails (EMSGSIZE on Linux 6.x,
/// EINVAL on older kernels). vxtap counts each refusal (`udp_gso_refused`) and sends the same
/// cut segments with plain `sendmmsg` (IP fragments them on the way), so 20 MB each way still
/// arrive intact, no send is counted as failed, and superframes are still read and cut.
#[test]
fn segments_go_out_with_plain_sendmmsg_when_the_kernel_refuses_gso() {
    require_root();
    let topo = offloaded_pair(&[]);
    for i in 0..2 {
        topo.host(i)
            .ns
            .ip(&["link", "set", UNDERLAY_IF, "mtu", "1400"]);
    }
    transfer_both_ways_cutting_superframes(&topo, "over a 1400-byte underlay");
    for i in 0..2 {
        let refused = stats::global_counter(&topo.daemon(i).stats(), "udp_gso_refused");
        assert!(refused > 0, "host {i}: no GSO refusal counted");
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// 20 MB each way between the two hosts; every send succeeded and superframes were cut (at
/// least three datagrams sent per TAP frame read). `how` names the setting in messages.
fn transfer_both_ways_cutting_superframes(topo: &Topology, how: &str) {
    for (from, to) in [(0, 1), (1, 0)] {
        let before = topo.daemon(from).stats();
        transfer(
            topo,
            from,
            to,
            20 * MB,
            TRANSFER_LIMIT,
            &TcpOptions::default(),
        );
        let after = topo.daemon(from).stats();
        let what = format!("host {from} -> {to} {how}");
        assert_eq!(delta(&before, &after, "udp_tx_errors"), 0, "{what}");
        let (frames, sent) = (
            delta(&before, &after, "tap_rx_frames"),
            delta(&before, &after, "udp_tx_datagrams"),
        );
        assert!(
            sent >= 3 * frames,
            "{what}: {frames} TAP frames read, {sent} datagrams sent: no superframes were cut"
        );
    }
}

/// A kernel before 4.18 knows neither `UDP_SEGMENT` nor `UDP_GRO`: it refuses both options
/// with ENOPROTOOPT, and it would silently ignore a `UDP_SEGMENT` control message, sending the
/// whole train as one fragmented datagram. Both daemons run under a seccomp filter that makes
/// the options fail that way (`old-udp-kernel`). Their start-up probe finds neither offload,
/// `link show` and the log say `udp_gso off udp_gro off`, and 20 MB each way arrive intact
/// while not one send carries a `UDP_SEGMENT` message (`udp_gso_sends` stays 0, and nothing
/// had to be refused) though the TAPs still hand over superframes that vxtap cuts.
#[test]
fn without_udp_offloads_in_the_kernel_no_send_carries_udp_segment() {
    require_root();
    let wrapper = [env!("CARGO_BIN_EXE_old-udp-kernel")];
    let mut topo = Topology::with_daemon_wrapper(&[VXTAP, VXTAP], true, &wrapper);
    topo.add_network(NetworkSpec::recipe());
    topo.program_static_peers(0);
    for i in 0..2 {
        assert_underlay_offloads(&topo, i, false);
        assert!(
            offloads(&topo, i).iter().any(|o| o == "tso4"),
            "host {i}: the TAP still negotiates TSO"
        );
    }
    transfer_both_ways_cutting_superframes(&topo, "without UDP offloads");
    for i in 0..2 {
        let stats = topo.daemon(i).stats();
        for counter in ["udp_gso_sends", "udp_gso_refused"] {
            assert_eq!(
                stats::global_counter(&stats, counter),
                0,
                "host {i}: {counter}"
            );
        }
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// Busy polling (`--busy-poll`, here through its environment variable, 5 ms): the same
/// traffic arrives intact both ways, and once it stops the workers go back to sleep: over
/// two idle seconds the daemon uses at most a tenth of a vCPU. An idle daemon uses next to
/// nothing; one whose worker kept spinning (yielding between polls) used more than a quarter
/// of a vCPU even on this loaded 2-core machine. That is a check of behaviour (never spin
/// while idle), not of speed.
#[test]
fn busy_polling_carries_traffic_and_never_spins_while_idle() {
    require_root();
    let wrapper = ["env", "VXTAP_BUSY_POLL=5000"];
    let mut topo = Topology::with_daemon_wrapper(&[VXTAP, VXTAP], true, &wrapper);
    topo.add_network(NetworkSpec::recipe());
    topo.program_static_peers(0);
    transfer_both_ways_cutting_superframes(&topo, "with busy polling");
    let ticks_per_second = 100; // USER_HZ, which /proc reports in on Linux
    for i in 0..2 {
        let daemon = topo.daemon(i);
        // Past the polling window after the last traffic.
        std::thread::sleep(Duration::from_millis(200));
        let before = daemon.cpu_ticks();
        std::thread::sleep(Duration::from_secs(2));
        let used = daemon.cpu_ticks() - before;
        assert!(
            used < 2 * ticks_per_second / 10,
            "host {i}: the idle daemon used {used} ticks in 2 s: a worker is spinning"
        );
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// Test 3: FIN and PSH at segment boundaries. For the route's MSS and a smaller one, each way,
/// transfers of 1 byte and of k x MSS - 1, k x MSS and k x MSS + 1 bytes (k = 1, 10, 46, 100:
/// one segment, a few, about one 64 KB superframe, several) are written in one write and
/// shut down at once, so the FIN rides on (or right after) a superframe whose last segment is
/// full, one byte, or one byte short. Each receiver sees end of stream after exactly that
/// many bytes, digest intact.
#[test]
fn fin_and_psh_at_segment_boundaries() {
    require_root();
    let topo = offloaded_pair(&[]);
    for mss in [None, Some(1000)] {
        for (from, to) in [(0, 1), (1, 0)] {
            let probe = transfer(
                &topo,
                from,
                to,
                1,
                SMALL_LIMIT,
                &TcpOptions { mss, write_size: 1 },
            );
            let m = u64::from(probe.sender_mss);
            for k in [1, 10, 46, 100] {
                for len in [k * m - 1, k * m, k * m + 1] {
                    let options = TcpOptions {
                        mss,
                        write_size: usize::try_from(len).expect("small"),
                    };
                    let session = transfer(&topo, from, to, len, SMALL_LIMIT, &options);
                    assert_eq!(
                        session.sender_mss, probe.sender_mss,
                        "MSS {mss:?}, {len} bytes"
                    );
                }
            }
        }
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// One TCP segment of the connection under test, as captured.
#[derive(Debug, Clone)]
struct Segment {
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    window: u16,
    options: Vec<u8>,
    payload: Vec<u8>,
    ident: u16,
    /// What every segment copies from its superframe below TCP: the Ethernet addresses, and
    /// the IPv4 DSCP/ECN byte, TTL, don't-fragment bit and options.
    copied: ([u8; 12], u8, u8, bool, Vec<u8>),
    /// The inner IPv4 total length.
    ip_len: usize,
    ip_checksum_ok: bool,
    tcp_checksum_ok: bool,
    /// The whole captured underlay frame (0 for frames captured on the TAP).
    outer_len: usize,
}

impl Segment {
    /// The TCP segment in `frame` (an Ethernet frame) if it goes from `src` to `dst`.
    fn parse(frame: &[u8], src: SocketAddr, dst: SocketAddr, outer_len: usize) -> Option<Segment> {
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
            return None;
        };
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EtherType::IPV4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        if ip.protocol() != IpProtocol::TCP
            || ip.src_addr() != *src.ip()
            || ip.dst_addr() != *dst.ip()
        {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        if tcp.src_port() != src.port() || tcp.dst_port() != dst.port() {
            return None;
        }
        Some(Segment {
            seq: tcp.seq_number(),
            ack: tcp.ack_number(),
            flags: tcp.flags(),
            window: tcp.window_len(),
            options: tcp.options().to_vec(),
            payload: tcp.payload().to_vec(),
            ident: ip.ident(),
            copied: (
                frame[..12]
                    .try_into()
                    .expect("an Ethernet header was checked"),
                ip.dscp_ecn(),
                ip.ttl(),
                ip.dont_frag(),
                ip.options().to_vec(),
            ),
            ip_len: usize::from(ip.total_len()),
            ip_checksum_ok: ip.verify_checksum(),
            tcp_checksum_ok: tcp.verify_checksum(ip.src_addr(), ip.dst_addr()),
            outer_len,
        })
    }

    /// The sequence number after its payload.
    fn end(&self) -> u32 {
        self.seq.wrapping_add(self.payload.len() as u32)
    }

    /// A one-line summary for messages.
    fn brief(&self) -> String {
        format!(
            "seq {} len {} id {} tos {:#04x} {:?}",
            self.seq,
            self.payload.len(),
            self.ident,
            self.copied.1,
            self.flags
        )
    }
}

/// Captures `cap` until `done` says the traffic is over, then settles; reads as it goes so
/// the socket buffer never overflows with superframes.
fn record(mut cap: Capture, done: &AtomicBool) -> Vec<Vec<u8>> {
    while !done.load(Ordering::Relaxed) {
        cap.poll(Duration::from_millis(20), Duration::from_millis(100));
    }
    cap.settle().to_vec()
}

/// One connection from host 0's container to host 1's, captured on host 0's TAP and
/// underlay (both with `ETH_P_ALL`: an AF_PACKET socket bound to one EtherType sees only
/// received frames, and here the frames wanted are the ones host 0 sends). Returns the
/// session, the connection's frames as read from the TAP, and its segments as vxtap sent
/// them on the underlay, each list in capture order.
fn captured_transfer(
    topo: &Topology,
    len: u64,
    options: &TcpOptions,
) -> (TcpSession, Vec<Segment>, Vec<Segment>) {
    let (a, b) = (topo.container(0, 0), topo.container(1, 0));
    let tap = Capture::start(&topo.attachment(0, 0).overlay, LINK);
    let underlay = Capture::start(&topo.host(0).ns, UNDERLAY_IF);
    let done = AtomicBool::new(false);
    let (session, tap_frames, underlay_frames) = std::thread::scope(|scope| {
        let tap = scope.spawn(|| record(tap, &done));
        let underlay = scope.spawn(|| record(underlay, &done));
        let session = traffic::tcp_transfer_with(&a.ns, &b.ns, b.ip, len, SMALL_LIMIT, options);
        done.store(true, Ordering::Relaxed);
        let tap = tap.join().expect("TAP capture");
        let underlay = underlay.join().expect("underlay capture");
        (session, tap, underlay)
    });
    let what = format!("TCP under capture ({len} bytes, {options:?})");
    let session = session.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_intact(&session.transfer, len, &what);
    let (src, dst) = (session.sender, session.receiver);
    let read = tap_frames
        .iter()
        .filter_map(|f| Segment::parse(f, src, dst, 0))
        .collect();
    let host = topo.host(0).underlay_ip;
    let sent = underlay_frames
        .iter()
        .filter_map(|f| {
            let d = VxlanDatagram::decode(f, VXLAN_PORT).filter(|d| *d.src.ip() == host)?;
            Segment::parse(&d.inner, src, dst, f.len())
        })
        .collect();
    (session, read, sent)
}

/// The checks of [`segments_on_the_wire_are_what_the_superframe_asked_for`] for one
/// connection that carried `len` bytes at sender MSS `mss` (`TCP_MAXSEG` read back on the
/// connected socket: the gso size of its superframes), known independently of vxtap's
/// output: no segment carries more than `mss` payload bytes, and every segment of a cut
/// superframe but the last carries exactly `mss`.
fn assert_cut_like_linux(read: &[Segment], sent: &[Segment], len: u64, mss: usize, what: &str) {
    let summary = |segments: &[Segment]| {
        segments
            .iter()
            .map(Segment::brief)
            .collect::<Vec<_>>()
            .join("\n  ")
    };
    let context = format!(
        "{what}\nframes read from the TAP:\n  {}\nsegments sent on the underlay:\n  {}",
        summary(read),
        summary(sent)
    );
    let syn = read
        .iter()
        .find(|s| s.flags.contains(TcpFlags::SYN))
        .unwrap_or_else(|| panic!("no SYN captured on the TAP\n{context}"));
    let stream_end = syn.seq.wrapping_add(1).wrapping_add(len as u32);

    assert!(
        read.iter().any(|s| s.ip_len > MTU),
        "the kernel handed vxtap no superframe\n{context}"
    );
    for s in sent {
        assert!(
            s.outer_len <= UNDERLAY_MTU + ETHERNET_HEADER && s.ip_len <= MTU,
            "segment larger than the MTU: {} (inner IP {} bytes, outer frame {} bytes)\n{context}",
            s.brief(),
            s.ip_len,
            s.outer_len
        );
        assert!(
            s.ip_checksum_ok && s.tcp_checksum_ok,
            "segment with a wrong checksum (IPv4 header ok: {}, TCP ok: {}): {}\n{context}",
            s.ip_checksum_ok,
            s.tcp_checksum_ok,
            s.brief()
        );
        if s.flags.contains(TcpFlags::FIN) {
            assert_eq!(
                s.end(),
                stream_end,
                "FIN on a segment that does not end the stream: {}\n{context}",
                s.brief()
            );
        }
        if s.flags.contains(TcpFlags::PSH) {
            assert!(
                read.iter()
                    .any(|r| r.flags.contains(TcpFlags::PSH) && r.end() == s.end()),
                "PSH on a segment where no TAP frame with PSH ended: {}\n{context}",
                s.brief()
            );
        }
    }
    assert!(
        sent.iter().any(|s| s.flags.contains(TcpFlags::FIN)),
        "no FIN on the underlay\n{context}"
    );

    // Each frame read maps to a run of segments sent, in order.
    let mut next = 0;
    for frame in read {
        let first = sent
            .get(next)
            .unwrap_or_else(|| panic!("nothing sent for TAP frame {}\n{context}", frame.brief()));
        // The frame's MSS is the length of its first segment, when it was cut at all.
        let step = if frame.payload.len() > first.payload.len() && !first.payload.is_empty() {
            first.payload.len()
        } else {
            frame.payload.len().max(1)
        };
        assert!(
            step == mss || frame.payload.len() <= mss,
            "TAP frame {} of {} payload bytes cut into segments of {step}, not of the \
             sender's MSS {mss}\n{context}",
            frame.brief(),
            frame.payload.len()
        );
        let count = frame.payload.len().div_ceil(step).max(1);
        for i in 0..count {
            let s = sent.get(next + i).unwrap_or_else(|| {
                panic!(
                    "TAP frame {} should give {count} segments, only {i} sent\n{context}",
                    frame.brief()
                )
            });
            assert!(
                s.payload.len() <= mss && (i + 1 == count || s.payload.len() == mss),
                "segment {i} of {count} of TAP frame {}: {} payload bytes, the sender's MSS \
                 is {mss} (every segment but the last must be full)\n{context}",
                frame.brief(),
                s.payload.len()
            );
            let start = i * step;
            let stop = (start + step).min(frame.payload.len());
            let mut flags = frame.flags;
            if i + 1 < count {
                flags = flags & !(TcpFlags::FIN | TcpFlags::PSH);
            }
            if i > 0 {
                flags = flags & !TcpFlags::CWR;
            }
            let expected = (
                frame.seq.wrapping_add(start as u32),
                flags,
                frame.ident.wrapping_add(i as u16),
                frame.ack,
                frame.window,
                &frame.options[..],
                &frame.payload[start..stop],
                &frame.copied,
            );
            let got = (
                s.seq,
                s.flags,
                s.ident,
                s.ack,
                s.window,
                &s.options[..],
                &s.payload[..],
                &s.copied,
            );
            assert!(
                expected == got,
                "segment {i} of {count} of TAP frame {}: expected seq {} {:?} id {} ack {} \
                 window {}, {} payload bytes and {:?}, got {} and {:?}\n{context}",
                frame.brief(),
                expected.0,
                expected.1,
                expected.2,
                expected.3,
                expected.4,
                expected.6.len(),
                expected.7,
                s.brief(),
                s.copied
            );
        }
        next += count;
    }
    assert_eq!(
        next,
        sent.len(),
        "segments sent that no TAP frame asked for\n{context}"
    );
}

/// Test 3, on the wire: connections from A to B whose data crosses A's TAP as TSO
/// superframes and leaves A's underlay as segments that vxtap made, captured on both sides.
/// At the route's MSS with a 1-byte, a full and a one-short tail; at MSS 536 long enough for
/// superframes of more segments than one `UDP_SEGMENT` send takes (64); at the smallest MSS
/// Linux allows (88), with superframes of over a hundred segments; with full 64 KB
/// superframes (more bytes than one `UDP_SEGMENT` send takes); and with ECN negotiated, so
/// the data carries ECT in its IP header. For each:
/// - the kernel really handed vxtap superframes larger than the MTU;
/// - every segment vxtap sent fits the underlay and overlay MTUs, and its inner IPv4 header
///   checksum and full TCP checksum are correct;
/// - FIN appears only on the segment that ends the stream, and PSH only where a TAP frame
///   with PSH ended;
/// - each frame read from the TAP became, in order, exactly what Linux's own GSO makes of
///   it: sequence numbers advancing by the MSS over the frame's payload, all segments full
///   but the last, IP ids counting up from the frame's, FIN and PSH on the last segment
///   only, CWR on the first only, ack, window, options and payload bytes copied, and so
///   are the Ethernet addresses, the IP DSCP/ECN byte, TTL, DF and options.
///
/// (CWR itself is not exercised: it needs CE marks, and this kernel has no qdisc that sets
/// them.)
#[test]
fn segments_on_the_wire_are_what_the_superframe_asked_for() {
    require_root();
    let topo = two_vxtap_hosts(&[]);
    assert_offloads_on(&topo, 0);
    let sender = &topo.container(0, 0).ns;
    // (MSS, full segments, extra bytes, ECN): the extra bytes shape the last segment.
    let cases: [(Option<u32>, u64, i64, bool); 7] = [
        (None, 30, 1, false),
        (None, 30, 0, false),
        (None, 30, -1, false),
        (None, 200, 1, false),
        (None, 200, 0, true),
        (Some(536), 300, 1, true),
        (Some(88), 600, 1, false),
    ];
    for (mss, segments, extra, ecn) in cases {
        // 1: ask for ECN (the receiver's default, 2, accepts it); its data then carries ECT.
        let mode = if ecn { "1" } else { "2" };
        sender.exec(&["sysctl", "-q", "-w", &format!("net.ipv4.tcp_ecn={mode}")]);
        // Learns the MSS, and settles ARP first, so each capture holds one connection.
        let probe = transfer(
            &topo,
            0,
            1,
            1,
            SMALL_LIMIT,
            &TcpOptions { mss, write_size: 1 },
        );
        let len = (segments * u64::from(probe.sender_mss)).saturating_add_signed(extra);
        let options = TcpOptions {
            mss,
            write_size: usize::try_from(len).expect("small"),
        };
        let (session, read, sent) = captured_transfer(&topo, len, &options);
        let what = format!(
            "{len} bytes at MSS {} ({mss:?}), ECN {ecn}",
            session.sender_mss
        );
        let mss = usize::try_from(session.sender_mss).expect("an MSS fits usize");
        assert_cut_like_linux(&read, &sent, len, mss, &what);
        let ect = read
            .iter()
            .any(|r| !r.payload.is_empty() && r.copied.1 & 0b11 != 0);
        assert_eq!(ect, ecn, "ECN-capable data on the TAP: {ect}\n{what}");
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// Test 4: the receiving containers' stacks drop nothing for a bad checksum after TCP both
/// ways (at the route's MSS and at 536), UDP of every size both ways, and pings that need
/// fragmenting; and the counters are not vacuous: the UDP datagrams and TCP segments were
/// counted as received by the very stacks that would have counted the errors.
#[test]
fn receiving_containers_count_no_checksum_errors() {
    require_root();
    let topo = offloaded_pair(&[]);
    let (a, b) = (topo.container(0, 0), topo.container(1, 0));
    let before = [
        nstat(&a.ns, &["UdpInDatagrams", "TcpInSegs"]),
        nstat(&b.ns, &["UdpInDatagrams", "TcpInSegs"]),
    ];
    for size in [56, 1600, 3200] {
        traffic::assert_ping(&a.ns, b.ip, 2, Some(size));
        traffic::assert_ping(&b.ns, a.ip, 2, Some(size));
    }
    for mss in [None, Some(536)] {
        let options = TcpOptions {
            mss,
            ..TcpOptions::default()
        };
        transfer(&topo, 0, 1, 4 * MB, TRANSFER_LIMIT, &options);
        transfer(&topo, 1, 0, 4 * MB, TRANSFER_LIMIT, &options);
    }
    let flow = UdpFlow {
        count: 2000,
        max_payload: UDP_MAX_PAYLOAD,
        window: 64,
    };
    let mut delivered = [0u64; 2];
    for (from, to) in [(0, 1), (1, 0)] {
        let (x, y) = (topo.container(from, 0), topo.container(to, 0));
        let report = traffic::udp_flow(&x.ns, &y.ns, y.ip, &flow, TRANSFER_LIMIT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.corrupt, 0, "UDP {} -> {}: {report:?}", x.ip, y.ip);
        delivered[to] = u64::from(report.intact);
    }
    assert_no_tap_errors(&topo);
    for (i, c) in [a, b].into_iter().enumerate() {
        assert_no_csum_errors(&c.ns);
        let after = nstat(&c.ns, &["UdpInDatagrams", "TcpInSegs"]);
        let udp = after["UdpInDatagrams"] - before[i]["UdpInDatagrams"];
        let tcp = after["TcpInSegs"] - before[i]["TcpInSegs"];
        assert!(
            udp >= delivered[i] && delivered[i] > 0 && tcp > 0,
            "container {}: {udp} UDP datagrams and {tcp} TCP segments counted, {} delivered",
            c.ip,
            delivered[i]
        );
    }
    topo.assert_no_kernel_vxlan();
}

/// Test 5: TCP bulk and a UDP flow of mixed sizes up to the MTU, at once, both ways. TCP
/// arrives intact; every UDP datagram that arrives is intact, none twice, and at least 90%
/// arrive (UDP may be dropped under load; the flows pace themselves to a window of datagrams
/// in flight, so what is measured is the overlay, not a blast overrunning a queue).
#[test]
fn mixed_udp_and_tcp_at_once() {
    require_root();
    let topo = offloaded_pair(&[]);
    let (a, b) = (topo.container(0, 0), topo.container(1, 0));
    let flow = UdpFlow {
        count: 20_000,
        max_payload: UDP_MAX_PAYLOAD,
        window: 128,
    };
    let tcp_len = 30 * MB;
    let (tcp, udp) = std::thread::scope(|scope| {
        let tcp = [
            scope.spawn(|| traffic::tcp_transfer(&a.ns, &b.ns, b.ip, tcp_len, BULK_LIMIT)),
            scope.spawn(|| traffic::tcp_transfer(&b.ns, &a.ns, a.ip, tcp_len, BULK_LIMIT)),
        ];
        let udp = [
            scope.spawn(|| traffic::udp_flow(&a.ns, &b.ns, b.ip, &flow, BULK_LIMIT)),
            scope.spawn(|| traffic::udp_flow(&b.ns, &a.ns, a.ip, &flow, BULK_LIMIT)),
        ];
        (
            tcp.map(|t| t.join().expect("TCP thread")),
            udp.map(|u| u.join().expect("UDP thread")),
        )
    });
    for (t, what) in tcp.iter().zip(["A -> B", "B -> A"]) {
        let t = t
            .as_ref()
            .unwrap_or_else(|e| panic!("TCP {what} next to UDP: {e}"));
        assert_intact(t, tcp_len, &format!("TCP {what} next to UDP"));
    }
    for (u, what) in udp.iter().zip(["A -> B", "B -> A"]) {
        let report = u
            .as_ref()
            .unwrap_or_else(|e| panic!("UDP {what} next to TCP: {e}"));
        assert!(
            report.corrupt == 0 && report.duplicates == 0,
            "UDP {what}: damaged or repeated datagrams: {report:?}"
        );
        assert!(
            u64::from(report.intact) * 10 >= u64::from(flow.count) * 9,
            "UDP {what}: only {} of {} datagrams arrived: {report:?}",
            report.intact,
            flow.count
        );
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// Test 6 with the harness's default (wire-like) underlay: 50 MB each way between vxtap and
/// the kernel's vxlan device arrive intact; vxtap cut the superframes it sent to the kernel.
#[test]
fn kernel_peer_under_tso_traffic() {
    require_root();
    let topo = vxtap_and_kernel(true);
    kernel_interop(&topo, true);
}

/// Test 6 over a bare veth underlay (tx checksum offload left on): the kernel peer then sends
/// unfinished inner checksums and, across the veth, whole TSO superframes in single
/// datagrams; vxtap hands both to its TAP as NEEDS_CSUM / TCP GSO. 50 MB each way intact, and
/// no checksum errors in either container.
#[test]
fn kernel_peer_under_tso_traffic_over_a_bare_veth() {
    require_root();
    let topo = vxtap_and_kernel(false);
    kernel_interop(&topo, false);
}

/// 50 MB each way between host 0 (vxtap) and host 1 (kernel), and what each direction must
/// show on vxtap's counters: superframes read and cut towards the kernel; over a bare veth
/// (`wire_checksums` false), the kernel's superframes received whole and written to the TAP
/// as GSO frames. Then a UDP flow of mixed sizes each way, intact (at least 90% arriving).
fn kernel_interop(topo: &Topology, wire_checksums: bool) {
    assert_offloads_on(topo, 0);
    let before = topo.daemon(0).stats();
    transfer(topo, 0, 1, 50 * MB, BULK_LIMIT, &TcpOptions::default());
    let after = topo.daemon(0).stats();
    let frames = delta(&before, &after, "tap_rx_frames");
    let datagrams = delta(&before, &after, "udp_tx_datagrams");
    assert!(
        datagrams >= 3 * frames,
        "vxtap -> kernel: {datagrams} datagrams sent for {frames} TAP frames read"
    );
    transfer(topo, 1, 0, 50 * MB, BULK_LIMIT, &TcpOptions::default());
    let last = topo.daemon(0).stats();
    if !wire_checksums {
        let (datagrams, bytes) = (
            delta(&after, &last, "udp_rx_datagrams"),
            delta(&after, &last, "udp_rx_bytes"),
        );
        let (frames, written) = (
            delta(&after, &last, "tap_tx_frames"),
            delta(&after, &last, "tap_tx_bytes"),
        );
        assert!(
            bytes > datagrams * MTU as u64 && written > frames * (MTU + ETHERNET_HEADER) as u64,
            "kernel -> vxtap over a bare veth: {datagrams} datagrams of {bytes} inner bytes \
             received, {frames} frames of {written} bytes written to the TAP; the kernel \
             peer's superframes should have crossed whole and reached the TAP as GSO frames"
        );
    }
    // UDP of every size both ways: over a bare veth the kernel peer's datagrams arrive with
    // unfinished checksums, which vxtap must pass on as NEEDS_CSUM.
    let flow = UdpFlow {
        count: 2000,
        max_payload: UDP_MAX_PAYLOAD,
        window: 64,
    };
    for (from, to) in [(0, 1), (1, 0)] {
        let (x, y) = (topo.container(from, 0), topo.container(to, 0));
        let report = traffic::udp_flow(&x.ns, &y.ns, y.ip, &flow, TRANSFER_LIMIT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            report.corrupt == 0 && report.intact * 10 >= flow.count * 9,
            "UDP {} -> {}: {report:?}",
            x.ip,
            y.ip
        );
    }
    let drops = stats::link_drops(&topo.daemon(0).stats(), LINK);
    assert!(drops.values().all(|&n| n == 0), "vxtap dropped: {drops:?}");
    assert_no_csum_errors_anywhere(topo);
    assert_no_tap_errors(topo);
    topo.assert_no_kernel_vxlan();
}

/// Beyond test 6: two vxtap hosts over a bare veth underlay, where vxtap's `UDP_SEGMENT`
/// trains cross the veth unsegmented and with their outer checksums unfinished, and the peer's
/// socket sees them as the kernel delivers such packets. 20 MB each way intact, no checksum
/// errors.
#[test]
fn two_vxtap_hosts_over_a_bare_veth() {
    require_root();
    let topo = two_vxtap_hosts_on(&[], false);
    assert_offloads_on(&topo, 0);
    assert_offloads_on(&topo, 1);
    for mss in [None, Some(536)] {
        let options = TcpOptions {
            mss,
            ..TcpOptions::default()
        };
        transfer(&topo, 0, 1, 20 * MB, TRANSFER_LIMIT, &options);
        transfer(&topo, 1, 0, 20 * MB, TRANSFER_LIMIT, &options);
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// Beyond the list: superframes to a MAC no VTEP is known for are flooded, so each is
/// cut once per VTEP on the flood list. Three vxtap hosts with `nolearning` and flood lists
/// only (the ARP proxy answers for every container, the forwarding tables stay empty): 8 MB
/// from A to B arrive intact, and C's vxtap receives its own copy of every segment.
#[test]
fn flooded_superframes_are_cut_for_every_vtep() {
    require_root();
    let mut topo = Topology::new(&[VXTAP, VXTAP, VXTAP]);
    let mut spec = NetworkSpec::recipe();
    spec.link_args = vec!["nolearning".to_owned()];
    topo.add_network(spec);
    topo.program_flood_lists(0);
    for i in 0..3 {
        for j in (0..3).filter(|&j| j != i) {
            let peer = topo.container(j, 0);
            topo.add_neigh(i, 0, peer.ip, peer.mac);
        }
    }
    assert_offloads_on(&topo, 0);
    let len = 8 * MB;
    let before = [topo.daemon(0).stats(), topo.daemon(2).stats()];
    transfer(&topo, 0, 1, len, TRANSFER_LIMIT, &TcpOptions::default());
    let after = [topo.daemon(0).stats(), topo.daemon(2).stats()];
    let flooded = delta(&before[0], &after[0], "flooded");
    let copies = delta(&before[0], &after[0], "flood_copies");
    let bytes_at_c = delta(&before[1], &after[1], "udp_rx_bytes");
    assert!(
        flooded > 0 && copies == 2 * flooded && bytes_at_c >= len,
        "A flooded {flooded} TAP frames in {copies} copies; C's vxtap received {bytes_at_c} \
         inner bytes of the {len} sent to B"
    );
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

/// The gso sizes of the USO tests: one that fills the overlay MTU (1450 - 20 - 8), a common
/// one, two smaller ones, and a tiny one that makes many datagrams of few bytes.
const USO_GSO_SIZES: [usize; 5] = [UDP_MAX_PAYLOAD, 1400, 1000, 536, 64];
/// Most datagrams per `UDP_SEGMENT` send here: under the kernel's `UDP_MAX_SEGMENTS` (64 on
/// older kernels, 128 on newer ones).
const USO_MAX_DATAGRAMS: usize = 60;
/// Most bytes per `UDP_SEGMENT` send here: the whole superframe stays below the TAP's 64 KB
/// `gso_max_size`, beyond which the kernel would cut it itself before the TAP.
const USO_MAX_BYTES: usize = 60_000;

/// The `UDP_SEGMENT` sends of one USO test at `gso_size`, as (full datagrams, bytes of a
/// last, short one): two datagrams, exact and with a 1-byte tail; ten with a tail one short
/// of full; the most one send carries here, exact, with a 1-byte tail and with a half one;
/// and, for contrast, sends the kernel does not mark as GSO (one full datagram, one short).
fn uso_sends(gso_size: usize) -> Vec<(usize, usize)> {
    let most = USO_MAX_DATAGRAMS.min((USO_MAX_BYTES - gso_size) / gso_size);
    vec![
        (2, 0),
        (2, 1),
        (10, gso_size - 1),
        (most, 0),
        (most, 1),
        (most - 1, gso_size / 2),
        (1, 0),
        (0, 5),
    ]
}

/// What [`udp_segment_sends`] sent and saw arrive.
#[derive(Debug, Clone, Copy, Default)]
struct UsoTally {
    /// `UDP_SEGMENT` sends the kernel accepted.
    sends: u64,
    /// Datagrams they carried, each of which arrived once with exactly its bytes.
    datagrams: u64,
}

/// Sends each of `sends` (full datagrams, tail bytes) `rounds` times with `UDP_SEGMENT` =
/// `gso_size` from host `from`'s container to host `to`'s, and panics unless every datagram
/// of every send arrives exactly once, with exactly its length and bytes, before the next
/// send leaves (stop and wait: no queue on the way can overflow, so loss would be the
/// overlay's). Each `gso_size` chunk of a send opens with the flow's tag, the send's number
/// and the chunk's index, then pseudo-random bytes, so a datagram cut at the wrong place, or
/// delivered for the wrong send, cannot match.
fn udp_segment_sends(
    topo: &Topology,
    from: usize,
    to: usize,
    gso_size: usize,
    sends: &[(usize, usize)],
    rounds: usize,
) -> UsoTally {
    use socket2::{Domain, Protocol, Socket, Type};
    let (a, b) = (topo.container(from, 0), topo.container(to, 0));
    let route = format!("UDP_SEGMENT {} -> {} at gso_size {gso_size}", a.ip, b.ip);
    let receiver: std::net::UdpSocket =
        b.ns.run_in(|| -> io::Result<Socket> {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_recv_buffer_size(4 << 20)?;
            socket.bind(&SocketAddr::from((b.ip, 0)).into())?;
            Ok(socket)
        })
        .unwrap_or_else(|e| panic!("{route}: bind: {e}"))
        .into();
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let Ok(SocketAddr::V4(dst)) = receiver.local_addr() else {
        panic!("{route}: the receiver has no IPv4 address");
    };
    let sender =
        a.ns.run_in(|| vxtap_dataplane::io::UdpSocket::bind(SocketAddrV4::new(a.ip, 0), false))
            .unwrap_or_else(|e| panic!("{route}: bind: {e}"));
    let tag = u32::from(dst.port()) << 16 | u32::from(sender.local_addr().port());
    let mut tally = UsoTally::default();
    let mut buf = vec![0u8; USO_MAX_BYTES];
    let mut got = vec![0u8; 65_536];
    for _ in 0..rounds {
        for &(full, tail) in sends {
            let send = tally.sends as u32;
            let len = full * gso_size + tail;
            let what = format!("{route}: send {send} of {full} x {gso_size} + {tail} bytes");
            let sent = &mut buf[..len];
            let mut pattern = (u64::from(tag) << 32 | u64::from(send)) | 1;
            for (index, chunk) in sent.chunks_mut(gso_size).enumerate() {
                for byte in chunk.iter_mut() {
                    pattern ^= pattern << 13;
                    pattern ^= pattern >> 7;
                    pattern ^= pattern << 17;
                    *byte = pattern as u8;
                }
                let mut header = [0u8; 10];
                header[..4].copy_from_slice(&tag.to_be_bytes());
                header[4..8].copy_from_slice(&send.to_be_bytes());
                header[8..].copy_from_slice(&(index as u16).to_be_bytes());
                let n = chunk.len().min(header.len());
                chunk[..n].copy_from_slice(&header[..n]);
            }
            let deadline = Instant::now() + SMALL_LIMIT;
            loop {
                let parts = [IoSlice::new(&buf[..len])];
                match sender.send_segments(dst, None, &parts, Some(gso_size as u16)) {
                    Ok(n) => {
                        assert_eq!(n, len, "{what}: a short send");
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "{what}: the socket stays full");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("{what}: {e}"),
                }
            }
            tally.sends += 1;
            let count = full + usize::from(tail > 0);
            let mut seen = vec![false; count];
            for arrived in 0..count {
                let n = receiver.recv(&mut got).unwrap_or_else(|e| {
                    panic!("{what}: only {arrived} of {count} datagrams arrived ({e})")
                });
                // A datagram shorter than gso_size can only be the tail; any other carries
                // its index.
                let index = if n != gso_size {
                    full
                } else {
                    usize::from(u16::from_be_bytes([got[8], got[9]]))
                };
                let expected = buf.get(index * gso_size..(index * gso_size + gso_size).min(len));
                assert!(
                    index < count && expected == Some(&got[..n]),
                    "{what}: a datagram of {n} bytes that is not datagram {index} of {count} \
                     as sent (first bytes {:02x?})",
                    &got[..n.min(10)]
                );
                assert!(
                    !std::mem::replace(&mut seen[index], true),
                    "{what}: datagram {index} arrived twice"
                );
            }
            tally.datagrams += count as u64;
        }
    }
    // Nothing straggles in after the last send: no datagram was sent twice.
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    if let Ok(n) = receiver.recv(&mut got) {
        panic!("{route}: an extra datagram of {n} bytes after the last send");
    }
    tally
}

/// Panics unless host `i`'s link runs with USO: checksum offload, TSO and USO for both IP
/// versions (Linux 6.2+ accepts USO on a TAP, only as USO4 and USO6 together).
fn assert_uso_on(topo: &Topology, i: usize) {
    let on = offloads(topo, i);
    for wanted in ["csum", "tso4", "tso6", "tso_ecn", "uso4", "uso6"] {
        assert!(
            on.iter().any(|o| o == wanted),
            "host {i}: {LINK} should run with {wanted} (this kernel takes USO: Linux 6.2+), \
             link show -j lists {on:?}"
        );
    }
}

/// Issue 5, USO: `UDP_SEGMENT` sends from a container reach vxtap as USO superframes, which
/// vxtap cuts into datagrams itself. Both links list uso4 and uso6. For each gso size (one
/// that fills the MTU, 1400, 1000, 536 and 64) and each way, sends of 2, 10 and up to 60
/// datagrams, with no tail, a 1-byte tail, a half and an almost full one, arrive datagram by
/// datagram with exactly their lengths and bytes, none twice (see [`udp_segment_sends`]).
/// On each sender vxtap read at most one TAP frame per send (plus a few for ARP), under a
/// third as many frames as datagrams: the kernel handed it superframes, at the larger gso
/// sizes far over the MTU on average, and vxtap sent every datagram. No
/// frame read from a TAP was refused, the receiving stacks counted the datagrams and no UDP
/// checksum errors.
#[test]
fn udp_segment_sends_are_cut_from_uso_superframes() {
    require_root();
    let topo = two_vxtap_hosts(&[]);
    assert_uso_on(&topo, 0);
    assert_uso_on(&topo, 1);
    let (a, b) = (topo.container(0, 0), topo.container(1, 0));
    // Neighbours resolved before any counting.
    traffic::assert_ping(&a.ns, b.ip, 1, None);
    traffic::assert_ping(&b.ns, a.ip, 1, None);
    let before = [
        nstat(&a.ns, &["UdpInDatagrams"]),
        nstat(&b.ns, &["UdpInDatagrams"]),
    ];
    let mut delivered = [0u64; 2];
    for gso_size in USO_GSO_SIZES {
        for (from, to) in [(0, 1), (1, 0)] {
            let stats_before = topo.daemon(from).stats();
            let tally = udp_segment_sends(&topo, from, to, gso_size, &uso_sends(gso_size), 3);
            let stats_after = topo.daemon(from).stats();
            delivered[to] += tally.datagrams;
            let frames = delta(&stats_before, &stats_after, "tap_rx_frames");
            let bytes = delta(&stats_before, &stats_after, "tap_rx_bytes");
            let sent = delta(&stats_before, &stats_after, "udp_tx_datagrams");
            let what = format!(
                "gso_size {gso_size}, host {from} -> {to}: {} sends of {} datagrams; vxtap \
                 read {frames} TAP frames of {bytes} bytes and sent {sent} datagrams",
                tally.sends, tally.datagrams
            );
            assert!(
                frames <= tally.sends + 4 && frames * 3 < tally.datagrams,
                "{what}: each send should reach vxtap as one superframe"
            );
            // At 64 bytes a superframe of 60 datagrams is only about 4 KB: the count above is
            // the proof there; at the larger sizes the frames read were far over the MTU.
            let largest_plain = (MTU + ETHERNET_HEADER) as u64;
            assert!(
                gso_size < 536 || bytes > frames * largest_plain,
                "{what}: without superframes no frame exceeds {largest_plain} bytes"
            );
            assert!(
                sent >= tally.datagrams,
                "{what}: vxtap sent too few datagrams"
            );
        }
    }
    assert_no_tap_errors(&topo);
    for (i, c) in [a, b].into_iter().enumerate() {
        assert_no_csum_errors(&c.ns);
        let after = nstat(&c.ns, &["UdpInDatagrams"]);
        let counted = after["UdpInDatagrams"] - before[i]["UdpInDatagrams"];
        assert!(
            counted >= delivered[i] && delivered[i] > 0,
            "container {}: {counted} UDP datagrams counted, {} delivered",
            c.ip,
            delivered[i]
        );
    }
    topo.assert_no_kernel_vxlan();
}

/// The USO test's control: with `offload off` the kernel cuts `UDP_SEGMENT` sends itself
/// before the TAP, so vxtap reads one frame per datagram, none larger than the MTU, and the
/// same sends still arrive datagram by datagram, intact.
#[test]
fn udp_segment_sends_without_offloads_arrive_the_same() {
    require_root();
    let topo = two_vxtap_hosts(&["offload", "off"]);
    for i in 0..2 {
        let on = offloads(&topo, i);
        assert!(on.is_empty(), "offload off, yet host {i} lists {on:?}");
    }
    let (a, b) = (topo.container(0, 0), topo.container(1, 0));
    traffic::assert_ping(&a.ns, b.ip, 1, None);
    traffic::assert_ping(&b.ns, a.ip, 1, None);
    for gso_size in [UDP_MAX_PAYLOAD, 536] {
        for (from, to) in [(0, 1), (1, 0)] {
            let stats_before = topo.daemon(from).stats();
            let tally = udp_segment_sends(&topo, from, to, gso_size, &uso_sends(gso_size), 1);
            let stats_after = topo.daemon(from).stats();
            let frames = delta(&stats_before, &stats_after, "tap_rx_frames");
            let bytes = delta(&stats_before, &stats_after, "tap_rx_bytes");
            assert!(
                frames >= tally.datagrams && bytes <= frames * (MTU + ETHERNET_HEADER) as u64,
                "offload off, gso_size {gso_size}, host {from}: {frames} TAP frames of \
                 {bytes} bytes for {} datagrams",
                tally.datagrams
            );
        }
    }
    assert_no_csum_errors_anywhere(&topo);
    assert_no_tap_errors(&topo);
    topo.assert_no_kernel_vxlan();
}

//! Queue steering for a multiqueue TAP: the eBPF program that tells the kernel which queue,
//! and so which worker, reads each frame the TAP transmits.
//!
//! Without a program, tun steers by its flow table: a flow goes to the queue that last wrote
//! one of its frames, and to a hash-chosen queue until then. The table entry is made only
//! after the written frame has gone up the stack, so a reply the stack sends synchronously
//! during that write (the ACK that ends a TCP handshake, written while the SYN-ACK is
//! delivered) still takes the hash-chosen queue, while the flow's next frames take the
//! writer's. Two workers then hold one flow, and its frames can leave out of order.
//!
//! This program makes the choice a pure function of the frame: a flow's every frame, from
//! the first, goes to one queue. It hashes what identifies a flow, symmetrically (the two
//! directions of a flow hash alike):
//!
//! ```text
//! h = src_addr ^ dst_addr (IPv4: one word; IPv6: the XOR of all eight words)
//!   ^ src_port ^ dst_port (TCP and UDP, and not for IPv4 fragments)
//!   ^ protocol            (IPv4 protocol, IPv6 next header)
//! queue = ((h * 0x9e3779b1 mod 2^32) >> 16) mod queues
//! ```
//!
//! One 802.1Q tag is looked through. Frames that are not IP (ARP, for one) go to queue 0, as
//! do frames too short for the headers the program reads (its packet loads end it, returning
//! 0, when they run past the frame). [`queue_for`] is the same function in Rust, for tests.
//!
//! The program is a socket filter using the legacy packet loads (`LD_ABS`/`LD_IND`), which
//! every kernel with `TUNSETSTEERINGEBPF` (Linux 4.16) accepts. This module only builds the
//! instructions; loading and attaching happen in `sys` and `tap`.

use super::ebpf::{
    Assembler, ADD64_IMM, ADD64_REG, AND64_IMM, EXIT, JA, JEQ_IMM, JNE_IMM, JSET_IMM, LD_ABS_H,
    LD_IND_B, LD_IND_H, LD_IND_W, LSH64_IMM, MOV32_REG, MOV64_IMM, MOV64_REG, MUL32_IMM, R0, R1,
    R6, RSH32_IMM, XOR64_REG,
};

// Registers: r6 holds the context for packet loads (which clobber r1-r5); r7 the hash, r8
// the header offset, r9 the protocol.
const HASH: u8 = 7;
const OFFSET: u8 = 8;
const PROTOCOL: u8 = 9;

/// Jump targets, resolved when the program is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    EtherType,
    Ipv4,
    Ipv6,
    Layer4,
    Ports,
    NoPorts,
}

const ETHERTYPE_VLAN: i32 = 0x8100;
const ETHERTYPE_IPV4: i32 = 0x0800;
const ETHERTYPE_IPV6: i32 = 0x86dd;
const PROTOCOL_TCP: i32 = 6;
const PROTOCOL_UDP: i32 = 17;
/// The golden-ratio multiplier that spreads the XOR-folded fields over the high bits.
const MIX: u32 = 0x9e37_79b1;

/// The steering program, as `struct bpf_insn`s for `BPF_PROG_LOAD`.
pub(crate) fn program() -> Vec<[u8; 8]> {
    let mut a = Assembler::<Label>::new();
    a.alu_reg(MOV64_REG, R6, R1);
    a.alu_imm(MOV64_IMM, OFFSET, 14);
    a.load_abs(LD_ABS_H, 12);
    a.jump(JNE_IMM, R0, ETHERTYPE_VLAN, Label::EtherType);
    a.alu_imm(MOV64_IMM, OFFSET, 18);
    a.load_abs(LD_ABS_H, 16);
    a.label(Label::EtherType);
    a.jump(JEQ_IMM, R0, ETHERTYPE_IPV4, Label::Ipv4);
    a.jump(JEQ_IMM, R0, ETHERTYPE_IPV6, Label::Ipv6);
    a.alu_imm(MOV64_IMM, R0, 0);
    a.op(EXIT, 0, 0, 0, 0);

    a.label(Label::Ipv4);
    a.load_ind(LD_IND_W, OFFSET, 12);
    a.alu_reg(MOV64_REG, HASH, R0);
    a.load_ind(LD_IND_W, OFFSET, 16);
    a.alu_reg(XOR64_REG, HASH, R0);
    a.load_ind(LD_IND_B, OFFSET, 9);
    a.alu_reg(MOV64_REG, PROTOCOL, R0);
    // A fragment (more-fragments flag or an offset) may carry no ports: hash it without.
    a.load_ind(LD_IND_H, OFFSET, 6);
    a.jump(JSET_IMM, R0, 0x3fff, Label::NoPorts);
    a.load_ind(LD_IND_B, OFFSET, 0);
    a.alu_imm(AND64_IMM, R0, 0x0f);
    a.alu_imm(LSH64_IMM, R0, 2);
    a.alu_reg(ADD64_REG, OFFSET, R0);
    a.jump(JA, 0, 0, Label::Layer4);

    a.label(Label::Ipv6);
    a.alu_imm(MOV64_IMM, HASH, 0);
    for word in 0..8 {
        a.load_ind(LD_IND_W, OFFSET, 8 + 4 * word);
        a.alu_reg(XOR64_REG, HASH, R0);
    }
    a.load_ind(LD_IND_B, OFFSET, 6);
    a.alu_reg(MOV64_REG, PROTOCOL, R0);
    a.alu_imm(ADD64_IMM, OFFSET, 40);

    a.label(Label::Layer4);
    a.jump(JEQ_IMM, PROTOCOL, PROTOCOL_TCP, Label::Ports);
    a.jump(JEQ_IMM, PROTOCOL, PROTOCOL_UDP, Label::Ports);
    a.jump(JA, 0, 0, Label::NoPorts);
    a.label(Label::Ports);
    a.load_ind(LD_IND_H, OFFSET, 0);
    a.alu_reg(XOR64_REG, HASH, R0);
    a.load_ind(LD_IND_H, OFFSET, 2);
    a.alu_reg(XOR64_REG, HASH, R0);

    a.label(Label::NoPorts);
    a.alu_reg(XOR64_REG, HASH, PROTOCOL);
    a.alu_imm(MUL32_IMM, HASH, MIX as i32);
    a.alu_reg(MOV32_REG, R0, HASH);
    a.alu_imm(RSH32_IMM, R0, 16);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// The queue the program picks for `frame` on a TAP with `queues` queues (at least 1): the
/// reference the kernel's choices are checked against.
#[cfg(test)]
pub(crate) fn queue_for(frame: &[u8], queues: u32) -> u32 {
    hash(frame).unwrap_or(0) % queues
}

#[cfg(test)]
fn hash(frame: &[u8]) -> Option<u32> {
    let be16 = |at: usize| -> Option<u32> {
        let b = frame.get(at..at + 2)?;
        Some(u32::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let be32 = |at: usize| -> Option<u32> {
        let b = frame.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let byte = |at: usize| -> Option<u32> { frame.get(at).map(|&b| u32::from(b)) };
    let (mut l3, mut ethertype) = (14, be16(12)?);
    if ethertype == ETHERTYPE_VLAN as u32 {
        (l3, ethertype) = (18, be16(16)?);
    }
    let (mut hash, protocol, l4) = if ethertype == ETHERTYPE_IPV4 as u32 {
        let hash = be32(l3 + 12)? ^ be32(l3 + 16)?;
        let protocol = byte(l3 + 9)?;
        if be16(l3 + 6)? & 0x3fff != 0 {
            (hash, protocol, None)
        } else {
            (hash, protocol, Some(l3 + 4 * (byte(l3)? as usize & 0x0f)))
        }
    } else if ethertype == ETHERTYPE_IPV6 as u32 {
        let mut hash = 0;
        for word in 0..8 {
            hash ^= be32(l3 + 8 + 4 * word)?;
        }
        (hash, byte(l3 + 6)?, Some(l3 + 40))
    } else {
        return Some(0);
    };
    if let Some(l4) = l4 {
        if protocol == PROTOCOL_TCP as u32 || protocol == PROTOCOL_UDP as u32 {
            hash ^= be16(l4)? ^ be16(l4 + 2)?;
        }
    }
    hash ^= protocol;
    Some(hash.wrapping_mul(MIX) >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::tap::VNET_HEADER_LEN;
    use crate::io::testns::TestNetns;
    use crate::io::{netns, sys, TapConfig, TapDevice, TapQueue};
    use crate::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, TcpFlags, TcpPacket, VirtioNetRepr};
    use std::collections::{BTreeMap, BTreeSet};
    use std::io;
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut frame = vec![0u8; 14 + 20 + 8];
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        frame[14] = 0x45;
        frame[14 + 9] = 17;
        frame[14 + 12..14 + 16].copy_from_slice(&src);
        frame[14 + 16..14 + 20].copy_from_slice(&dst);
        frame[34..36].copy_from_slice(&sport.to_be_bytes());
        frame[36..38].copy_from_slice(&dport.to_be_bytes());
        frame
    }

    #[test]
    fn instructions_encode_like_the_kernel_headers() {
        // r6 = r1; r8 = 14; r0 = ldh [12]; if r0 != 0x8100 goto +2
        let insns = program();
        assert_eq!(insns[0], [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(insns[1], [0xb7, 0x08, 0, 0, 14, 0, 0, 0]);
        assert_eq!(insns[2], [0x28, 0x00, 0, 0, 12, 0, 0, 0]);
        assert_eq!(insns[3], [0x55, 0x00, 2, 0, 0x00, 0x81, 0, 0]);
        assert_eq!(*insns.last().unwrap(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert!(insns.len() < 100, "{} instructions", insns.len());
    }

    #[test]
    fn both_directions_of_a_flow_pick_one_queue() {
        for sport in 40_000..40_064 {
            let out = ipv4_udp([10, 0, 0, 2], [10, 0, 0, 3], sport, 5201);
            let back = ipv4_udp([10, 0, 0, 3], [10, 0, 0, 2], 5201, sport);
            assert_eq!(hash(&out), hash(&back));
        }
    }

    #[test]
    fn neighbouring_ports_spread_over_queues() {
        for queues in [2, 4] {
            let mut used = vec![0; queues as usize];
            for sport in 40_000..40_064 {
                let frame = ipv4_udp([10, 0, 0, 2], [10, 0, 0, 3], sport, 5201);
                used[queue_for(&frame, queues) as usize] += 1;
            }
            assert!(used.iter().all(|&n| n >= 8), "{queues} queues: {used:?}");
        }
    }

    #[test]
    fn fragments_and_odd_frames_hash_without_ports() {
        let mut first = ipv4_udp([10, 0, 0, 2], [10, 0, 0, 3], 1, 2);
        first[14 + 6] = 0x20; // more fragments
        let mut other = ipv4_udp([10, 0, 0, 2], [10, 0, 0, 3], 3, 4);
        other[14 + 6] = 0x20;
        assert_eq!(hash(&first), hash(&other));
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(queue_for(&arp, 4), 0);
        assert_eq!(queue_for(&arp[..10], 4), 0);
        // A frame cut inside its ports ends the program: queue 0.
        let frame = ipv4_udp([10, 0, 0, 2], [10, 0, 0, 3], 1, 2);
        assert_eq!(hash(&frame[..36]), None);
    }

    /// Reads every frame waiting on `queues` until `done` says enough, checking that each
    /// came out of the queue the reference picks; returns how many frames each queue gave.
    fn drain_checking(queues: &[TapQueue], mut done: impl FnMut(&[u8]) -> bool) -> Vec<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; VNET_HEADER_LEN + 65_550];
        let mut per_queue = vec![0; queues.len()];
        let n = u32::try_from(queues.len()).unwrap();
        loop {
            let mut idle = true;
            for (index, queue) in queues.iter().enumerate() {
                match queue.recv(&mut buf) {
                    Ok(len) => {
                        idle = false;
                        let frame = &buf[VNET_HEADER_LEN..len];
                        assert_eq!(
                            queue_for(frame, n),
                            u32::try_from(index).unwrap(),
                            "frame {:02x?} came out of queue {index}",
                            &frame[..frame.len().min(64)]
                        );
                        per_queue[index] += 1;
                        if done(frame) {
                            return per_queue;
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => panic!("TAP read: {err}"),
                }
            }
            if idle {
                sys::wait_readable(queues[0].as_fd(), 5).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "timed out; frames per queue so far: {per_queue:?}"
            );
        }
    }

    /// A fresh namespace holding a TAP of `queues` queues with the steering program attached,
    /// up as 192.0.2.1/24, with 192.0.2.2 a permanent neighbour behind it.
    fn steered_tap(prefix: &str, queues: usize) -> (TestNetns, TapDevice) {
        let ns = TestNetns::new();
        let name = format!("{prefix}{}", std::process::id());
        let config = TapConfig {
            queues,
            mtu: 1400,
            ..TapConfig::new(&name)
        };
        let tap = TapDevice::create(&config, Some(ns.path())).unwrap();
        tap.steer_by_flow().unwrap();
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", &name]);
        ns.ip(&["link", "set", &name, "up"]);
        let peer = ["neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:02"];
        ns.ip(&[&peer[..], &["dev", &name, "nud", "permanent"]].concat());
        (ns, tap)
    }

    /// Flows sent through a 4-queue TAP with the program attached come out exactly where the
    /// reference says, fragments included: the kernel runs the program we think it runs.
    #[test]
    fn the_kernel_steers_every_frame_where_the_reference_says() {
        let (ns, tap) = steered_tap("vs", 4);
        let peer = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 2), 5201));
        let sockets: Vec<UdpSocket> = netns::run_in(ns.path(), || {
            (0..64)
                .map(|i| UdpSocket::bind((Ipv4Addr::new(192, 0, 2, 1), 40_000 + i)).unwrap())
                .collect()
        })
        .unwrap();
        // Each flow twice, interleaved, so a queue that changed within a flow would show.
        for round in 0..2u8 {
            for socket in &sockets {
                socket.send_to(&[round; 100], peer).unwrap();
            }
        }
        // One datagram over the MTU, sent in three fragments without ports after the first.
        sys::set_socket_option_int(
            sockets[0].as_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )
        .unwrap();
        sockets[0].send_to(&[7u8; 3000], peer).unwrap();

        let mut seen = BTreeMap::new();
        let mut fragments = 0;
        let per_queue = drain_checking(tap.queues(), |frame| {
            if frame.len() >= 38 && frame[12..14] == [0x08, 0x00] && frame[14 + 9] == 17 {
                if frame[14 + 6..14 + 8] == [0, 0] || frame[14 + 6..14 + 8] == [0x40, 0] {
                    let sport = u16::from_be_bytes([frame[34], frame[35]]);
                    *seen.entry(sport).or_insert(0) += 1;
                } else {
                    fragments += 1;
                }
            }
            seen.len() == 64 && seen.values().all(|&n| n == 2) && fragments == 3
        });
        let used: BTreeSet<usize> = (0..4).filter(|&q| per_queue[q] > 0).collect();
        assert!(used.len() >= 3, "64 flows used queues {used:?}");
    }

    /// The next TCP frame on any of `queues` that `wanted` accepts, and the queue it came
    /// from; other frames (IPv6 router solicitations, say) are skipped.
    fn next_tcp(
        queues: &[TapQueue],
        wanted: impl Fn(&TcpPacket<&[u8]>) -> bool,
    ) -> (usize, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; VNET_HEADER_LEN + 65_550];
        loop {
            for (index, queue) in queues.iter().enumerate() {
                match queue.recv(&mut buf) {
                    Ok(len) => {
                        let frame = &buf[VNET_HEADER_LEN..len];
                        let is_tcp = frame.len() >= 54 && frame[12..14] == [8, 0] && frame[23] == 6;
                        if is_tcp && wanted(&TcpPacket::new_unchecked(&frame[34..])) {
                            return (index, frame.to_vec());
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => panic!("TAP read: {err}"),
                }
            }
            sys::wait_readable(queues[0].as_fd(), 5).unwrap();
            assert!(
                Instant::now() < deadline,
                "timed out waiting for a TCP frame"
            );
        }
    }

    /// The race the program exists for: the ACK that ends a handshake is sent while the
    /// SYN-ACK written to the TAP is being delivered, before the kernel's flow table learns
    /// which queue wrote it, and the data after it follows the table. Here the SYN-ACK is
    /// written through the other queue than the SYN left by, the way a worker that received
    /// it from the underlay would; the ACK and the data must still leave by the SYN's queue.
    #[test]
    fn a_flow_stays_on_its_queue_through_the_handshake() {
        let (ns, tap) = steered_tap("vh", 2);
        let (local, peer) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        let client = netns::run_in(ns.path(), || {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_nonblocking(true).unwrap();
            // EINPROGRESS: the SYN is on its way.
            let _ = socket.connect(&SocketAddr::from((peer, 5201)).into());
            socket
        })
        .unwrap();
        let queues = tap.queues();
        let (syn_queue, syn) = next_tcp(queues, |tcp| tcp.flags() == TcpFlags::SYN);
        let syn = TcpPacket::new_unchecked(&syn[34..]);

        let mut synack = vec![0u8; 54];
        synack[..6].copy_from_slice(&tap.mac().0);
        synack[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        synack[12..14].copy_from_slice(&[8, 0]);
        let mut ip = Ipv4Packet::new_unchecked(&mut synack[14..]);
        Ipv4Repr {
            src_addr: peer,
            dst_addr: local,
            protocol: IpProtocol::TCP,
            payload_len: 20,
            ttl: 64,
            ident: 1,
            dscp_ecn: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut ip);
        ip.fill_checksum();
        let mut tcp = TcpPacket::new_unchecked(&mut synack[34..]);
        tcp.set_src_port(5201);
        tcp.set_dst_port(syn.src_port());
        tcp.set_seq_number(7_000);
        tcp.set_ack_number(syn.seq_number().wrapping_add(1));
        tcp.set_header_len(20);
        tcp.set_flags(TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0));
        tcp.set_window_len(65_535);
        tcp.fill_checksum(peer, local);
        queues[1 - syn_queue]
            .send(&VirtioNetRepr::NONE.to_bytes(), &synack)
            .unwrap();

        let (ack_queue, _) = next_tcp(queues, |tcp| {
            tcp.flags() == TcpFlags::ACK && tcp.ack_number() == 7_001
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(err) = client.send(b"steered") {
            assert!(Instant::now() < deadline, "never connected: {err}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (data_queue, _) = next_tcp(queues, |tcp| !tcp.payload().is_empty());
        assert_eq!(
            (ack_queue, data_queue),
            (syn_queue, syn_queue),
            "SYN left by queue {syn_queue}, the SYN-ACK came in by the other"
        );
    }
}

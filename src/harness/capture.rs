//! Seeing and making frames on a namespace's interfaces with AF_PACKET sockets.
//!
//! - [`Capture`] records every frame an interface sends or receives (`ETH_P_ALL`) from the
//!   moment it starts; `poll`, `settle` and `wait_until` read them back within bounded time.
//! - [`send_frame`] injects a hand-made Ethernet frame on an interface, as if the namespace's
//!   kernel had sent it, for traffic that no ordinary tool makes (an unknown unicast with a
//!   distinctive EtherType, an ARP request that the sender's kernel will not act on).
//! - [`VxlanDatagram::decode`] takes a captured underlay frame apart with
//!   `vxtap_dataplane::wire`: Ethernet, IPv4, UDP, VXLAN, inner frame.
//!
//! Sockets are opened inside the namespace with `run_in`, so the test's own threads never
//! change namespace.

use super::netns::{Netns, NetnsExt};
use super::sys;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};
use vxtap_dataplane::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, IpProtocol,
    Ipv4Packet, MacAddr, UdpPacket, VxlanPacket,
};

/// `ETH_P_ALL`: every protocol, both directions.
const ETH_P_ALL: u16 = 0x0003;
/// Large enough for a GSO superframe seen before segmentation.
const FRAME_BUFFER: usize = 65_536 + 256;

/// An IEEE 802 "local experimental" EtherType, which nothing on a test host sends on its own.
pub const TEST_ETHERTYPE: u16 = 0x88b5;

/// How long a capture waits for stragglers (and duplicates) once what it waited for came.
pub const SETTLE: Duration = Duration::from_millis(300);
/// Longest a capture waits for an expected frame.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// A running capture on one interface, and the frames it has read so far.
#[derive(Debug)]
pub struct Capture {
    socket: Socket,
    label: String,
    frames: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl Capture {
    /// Starts recording every frame on `ifname` inside `ns` (both directions).
    ///
    /// # Panics
    ///
    /// If the interface does not exist or the socket cannot be opened and bound.
    pub fn start(ns: &Netns, ifname: &str) -> Capture {
        Capture::start_for(ns, ifname, ETH_P_ALL)
    }

    /// Starts recording the frames of one EtherType on `ifname` inside `ns` (VLAN-tagged
    /// frames count under their inner EtherType). Use it next to bulk traffic, which would
    /// otherwise fill the socket's buffer.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_for(ns: &Netns, ifname: &str, ethertype: u16) -> Capture {
        let ifindex = ns.ifindex(ifname);
        let label = format!("{ifname} in {}", ns.name());
        let socket = ns
            .run_in(|| -> io::Result<Socket> {
                // Protocol 0 receives nothing until bind names the interface, so no frame of
                // another interface slips in between socket() and bind().
                let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
                socket.set_recv_buffer_size(4 << 20)?;
                socket.bind(&sys::packet_addr(ifindex, ethertype, None))?;
                Ok(socket)
            })
            .unwrap_or_else(|err| panic!("capture on {label}: {err}"));
        Capture {
            socket,
            label,
            frames: Vec::new(),
            buf: vec![0; FRAME_BUFFER],
        }
    }

    /// Every frame read so far, oldest first.
    pub fn frames(&self) -> &[Vec<u8>] {
        &self.frames
    }

    /// Reads the frames queued so far and any that arrive until none has for `quiet`, for at
    /// most `limit` in all.
    ///
    /// # Panics
    ///
    /// On a receive error other than the timeout.
    pub fn poll(&mut self, quiet: Duration, limit: Duration) -> &[Vec<u8>] {
        let deadline = Instant::now() + limit;
        while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            if !self.read_one(quiet.min(wait)) {
                break;
            }
        }
        &self.frames
    }

    /// [`poll`](Self::poll) with [`SETTLE`] of quiet and at most 5 s.
    pub fn settle(&mut self) -> &[Vec<u8>] {
        self.poll(SETTLE, Duration::from_secs(5))
    }

    /// Reads until `done(frames)` holds (checked after each frame) or `limit` passes.
    /// Returns whether `done` held. Call [`settle`](Self::settle) afterwards to also catch
    /// what follows (duplicates, stragglers).
    pub fn wait_until(&mut self, limit: Duration, done: impl Fn(&[Vec<u8>]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut held = done(&self.frames);
        while !held {
            let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            self.read_one(wait.min(Duration::from_millis(100)));
            held = done(&self.frames);
        }
        held
    }

    /// Waits (up to [`WAIT_LIMIT`]) until `count` frames carrying `marker` (see
    /// [`count_marked`]) have arrived, settles, and returns how many did in all.
    pub fn wait_for_marked(&mut self, marker: &[u8], count: usize) -> usize {
        self.wait_until(WAIT_LIMIT, |frames| count_marked(frames, marker) >= count);
        self.settle();
        self.count_marked(marker)
    }

    /// How many frames read so far carry `marker`.
    pub fn count_marked(&self, marker: &[u8]) -> usize {
        count_marked(&self.frames, marker)
    }

    /// Reads one frame if one comes within `wait`; false on timeout.
    fn read_one(&mut self, wait: Duration) -> bool {
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap_or_else(|err| panic!("capture on {}: {err}", self.label));
        loop {
            match (&self.socket).read(&mut self.buf) {
                Ok(n) => {
                    self.frames.push(self.buf[..n].to_vec());
                    return true;
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => panic!("capture on {}: {err}", self.label),
            }
        }
    }
}

/// Sends `frame` (a whole Ethernet frame) out of `ifname` inside `ns`.
///
/// # Panics
///
/// If the frame is shorter than an Ethernet header or the kernel refuses it.
pub fn send_frame(ns: &Netns, ifname: &str, frame: &[u8]) {
    let eth = EthernetFrame::new_checked(frame).expect("a whole Ethernet header");
    let addr = sys::packet_addr(
        ns.ifindex(ifname),
        eth.ethertype().0,
        Some(eth.dst_addr().octets()),
    );
    ns.run_in(|| -> io::Result<usize> {
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
        socket.send_to(frame, &addr)
    })
    .unwrap_or_else(|err| panic!("sending a frame on {ifname} in {}: {err}", ns.name()));
}

/// An Ethernet frame: header, then `payload`.
pub fn ethernet_frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: EtherType(ethertype),
    };
    let mut frame = vec![0u8; repr.buffer_len() + payload.len()];
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    repr.emit(&mut eth);
    eth.payload_mut().copy_from_slice(payload);
    frame
}

/// A broadcast "who has `target_ip`? tell `sender_ip`" from `sender_mac`.
pub fn arp_request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr {
        operation: ArpOperation::Request,
        sender_mac,
        sender_ip,
        target_mac: MacAddr::ZERO,
        target_ip,
    };
    let mut payload = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut payload[..]));
    ethernet_frame(MacAddr::BROADCAST, sender_mac, EtherType::ARP.0, &payload)
}

/// The ARP packet in an Ethernet frame, if it carries one.
pub fn parse_arp(frame: &[u8]) -> Option<ArpRepr> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::ARP {
        return None;
    }
    ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()
}

/// How many `frames` have EtherType [`TEST_ETHERTYPE`] and a payload that starts with
/// `marker`.
pub fn count_marked(frames: &[Vec<u8>], marker: &[u8]) -> usize {
    frames
        .iter()
        .filter(|f| {
            EthernetFrame::new_checked(&f[..]).is_ok_and(|eth| {
                eth.ethertype() == EtherType(TEST_ETHERTYPE) && eth.payload().starts_with(marker)
            })
        })
        .count()
}

/// A VXLAN datagram taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDatagram {
    /// Outer source address and UDP port.
    pub src: SocketAddrV4,
    /// Outer destination address and UDP port.
    pub dst: SocketAddrV4,
    /// The flags byte (0x08 when only the I flag is set).
    pub flags: u8,
    /// The 24 reserved bits after the flags.
    pub reserved1: u32,
    /// The reserved byte after the VNI.
    pub reserved2: u8,
    /// The VNI.
    pub vni: u32,
    /// The inner Ethernet frame.
    pub inner: Vec<u8>,
}

impl VxlanDatagram {
    /// Decodes a captured frame as Ethernet / IPv4 / UDP to or from `port` / VXLAN. `None`
    /// for anything else, including IP fragments after the first.
    pub fn decode(frame: &[u8], port: u16) -> Option<VxlanDatagram> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EtherType::IPV4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        if ip.protocol() != IpProtocol::UDP || ip.frag_offset() != 0 {
            return None;
        }
        let udp = UdpPacket::new_checked(ip.payload()).ok()?;
        if udp.dst_port() != port && udp.src_port() != port {
            return None;
        }
        let vxlan = VxlanPacket::new_checked(udp.payload()).ok()?;
        Some(VxlanDatagram {
            src: SocketAddrV4::new(ip.src_addr(), udp.src_port()),
            dst: SocketAddrV4::new(ip.dst_addr(), udp.dst_port()),
            flags: vxlan.flags(),
            reserved1: vxlan.reserved1(),
            reserved2: vxlan.reserved2(),
            vni: vxlan.vni().get(),
            inner: vxlan.payload().to_vec(),
        })
    }

    /// The inner frame's EtherType, if it has a whole header.
    pub fn inner_ethertype(&self) -> Option<EtherType> {
        EthernetFrame::new_checked(&self.inner[..])
            .ok()
            .map(|eth| eth.ethertype())
    }

    /// Whether the inner frame is ARP.
    pub fn carries_arp(&self) -> bool {
        self.inner_ethertype() == Some(EtherType::ARP)
    }
}

/// Every VXLAN datagram (to or from `port`) among `frames`.
pub fn vxlan_datagrams(frames: &[Vec<u8>], port: u16) -> Vec<VxlanDatagram> {
    frames
        .iter()
        .filter_map(|f| VxlanDatagram::decode(f, port))
        .collect()
}

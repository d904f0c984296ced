//! The overlay side: a multiqueue TAP device with a virtio-net header on every frame.
//!
//! [`TapDevice::create`] opens `queues` fds on `/dev/net/tun`, each attached to the same
//! TAP with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE`, sets a 12-byte
//! little-endian `virtio_net_hdr_v1` (see [`crate::wire::virtio_net`]), the offloads, the MTU
//! and the transmit queue length, all inside the target namespace, and leaves the link down
//! like `ip link add` does: whoever owns the namespace's configuration brings it up.
//!
//! The TAP is not persistent: it exists while at least one queue fd is open and the kernel
//! deletes it when the last one closes, however the process ends (SIGKILL included), so a
//! crashed daemon leaves nothing behind.
//!
//! A frame goes through a [`TapQueue`] in one syscall each way: `read` returns the header
//! and the frame together, `send` writes them with one `writev` without copying. Writes to a
//! TAP that is down fail with `EIO`.
//!
//! This module never parses frames, never changes addresses, routes or link state, and never
//! attaches to a TAP it did not create.

use super::{netns, sys, IoError};
use crate::wire::virtio_net;
use crate::wire::MacAddr;
use std::fs::OpenOptions;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Offload: the reader finishes partial checksums (`NEEDS_CSUM`); required by all others.
pub const TUN_F_CSUM: u32 = libc::TUN_F_CSUM;
/// Offload: the reader segments TCP over IPv4 (needs `TUN_F_CSUM`).
pub const TUN_F_TSO4: u32 = libc::TUN_F_TSO4;
/// Offload: the reader segments TCP over IPv6 (needs `TUN_F_CSUM`).
pub const TUN_F_TSO6: u32 = libc::TUN_F_TSO6;
/// Offload: the reader handles ECN in TSO (needs `TUN_F_TSO4` or `TUN_F_TSO6`).
pub const TUN_F_TSO_ECN: u32 = libc::TUN_F_TSO_ECN;
/// Offload: the reader segments UDP over IPv4 (Linux 6.2+; only together with
/// `TUN_F_USO6`, and needs `TUN_F_CSUM`).
pub const TUN_F_USO4: u32 = libc::TUN_F_USO4;
/// Offload: the reader segments UDP over IPv6 (Linux 6.2+; only together with `TUN_F_USO4`).
pub const TUN_F_USO6: u32 = libc::TUN_F_USO6;

/// Length of the virtio-net header in front of every frame on a queue.
pub const VNET_HEADER_LEN: usize = virtio_net::HEADER_LEN;
/// Most parts [`TapQueue::send_parts`] takes after the header.
pub const MAX_WRITE_PARTS: usize = 128;
/// The most queues the kernel lets one TAP have (`MAX_TAP_QUEUES`).
pub const MAX_QUEUES: usize = 256;
/// The longest interface name (`IFNAMSIZ - 1`).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// How to create a TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name: 1 to 15 bytes, no `/`, `:`, `%` or whitespace.
    pub name: String,
    /// Number of queues (fds), 1 to [`MAX_QUEUES`].
    pub queues: usize,
    /// MTU of the TAP.
    pub mtu: u32,
    /// `TUN_F_*` offloads the reader handles; 0 for none. `create` fails if the kernel
    /// refuses them: to probe, create with 0 and try [`TapDevice::set_offload`].
    pub offload: u32,
    /// Transmit queue length, or `None` to keep the kernel's default.
    pub txqueuelen: Option<u32>,
}

impl TapConfig {
    /// One queue, MTU 1500, no offloads, default queue length.
    pub fn new(name: impl Into<String>) -> TapConfig {
        TapConfig {
            name: name.into(),
            queues: 1,
            mtu: 1500,
            offload: 0,
            txqueuelen: None,
        }
    }
}

/// Checks that `name` is an interface name the kernel takes literally: 1 to 15 bytes, not
/// `.` or `..`, and free of `/`, `:`, whitespace, control characters and `%` (which the
/// kernel would treat as a template for a name of its own choosing).
pub fn validate_interface_name(name: &str) -> Result<(), IoError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains(':') {
        Some("contains ':'")
    } else if name.contains('%') {
        Some("contains '%', which the kernel treats as a name template")
    } else if name.chars().any(char::is_whitespace) {
        Some("contains whitespace")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(IoError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A TAP device and its queues.
#[derive(Debug)]
pub struct TapDevice {
    name: String,
    ifindex: u32,
    mac: MacAddr,
    netns: Option<PathBuf>,
    queues: Vec<TapQueue>,
}

/// One queue of a TAP: an fd to read frames from and write frames to.
///
/// Non-blocking: `recv` and `send` return `WouldBlock` for the event loop to handle.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
}

impl TapDevice {
    /// Creates a TAP in `netns` (a namespace file, see [`netns::resolve`]) or, with `None`,
    /// in the caller's namespace.
    ///
    /// # Errors
    ///
    /// `InvalidName` or `InvalidConfig` before anything is touched; the namespace errors of
    /// [`netns::run_in`]; `NameTaken` if an interface of that name exists there (checked
    /// first, and again atomically by the kernel with `IFF_TUN_EXCL`, so an existing TAP is
    /// never joined); `TunOpen` or `Ioctl` if the kernel refuses a step, in which case the
    /// half-made TAP disappears with its fds.
    pub fn create(config: &TapConfig, netns: Option<&Path>) -> Result<TapDevice, IoError> {
        validate_interface_name(&config.name)?;
        if config.queues == 0 || config.queues > MAX_QUEUES {
            return Err(IoError::InvalidConfig {
                name: config.name.clone(),
                reason: "the number of queues must be 1 to 256",
            });
        }
        let (queues, ifindex, mac) = netns::run_maybe_in(netns, || create_here(config, netns))??;
        Ok(TapDevice {
            name: config.name.clone(),
            ifindex,
            mac,
            netns: netns.map(Path::to_owned),
            queues,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index in its namespace.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The TAP's own MAC address (random, chosen by the kernel).
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The namespace the TAP was created in, `None` for the creator's own.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// The queues, one per fd.
    pub fn queues(&self) -> &[TapQueue] {
        &self.queues
    }

    /// Gives up the device handle for its queues, e.g. to hand one to each worker. The TAP
    /// lives until the last of them is dropped.
    pub fn into_queues(self) -> Vec<TapQueue> {
        self.queues
    }

    /// Sets the `TUN_F_*` offloads the reader handles (replacing the previous set).
    ///
    /// The kernel refuses (EINVAL) flags it does not know, such as `TUN_F_USO4` before Linux
    /// 6.2, and combinations it does not support (TSO or USO without `TUN_F_CSUM`, USO4
    /// without USO6), so callers can probe from the richest set down.
    pub fn set_offload(&self, flags: u32) -> Result<(), IoError> {
        // `create` guarantees at least one queue, and they only leave with `self`.
        let Some(queue) = self.queues.first() else {
            return Err(IoError::InvalidConfig {
                name: self.name.clone(),
                reason: "the TAP has no queue left",
            });
        };
        sys::tun_set_offload(queue.as_fd(), flags).map_err(|source| IoError::Ioctl {
            op: "TUNSETOFFLOAD",
            device: self.name.clone(),
            source,
        })
    }
}

impl TapDevice {
    /// Makes the queue of every frame the TAP transmits a fixed function of the frame's flow
    /// (addresses, protocol, ports), with the eBPF program of [`super::steering`], instead of
    /// the kernel's flow table, which can put a flow's first reply on another queue than the
    /// rest of the flow. Linux 4.16+; a kernel that refuses leaves the flow table in charge.
    ///
    /// # Errors
    ///
    /// `SteeringProgram` if the kernel will not load the program (no `CAP_BPF` or
    /// `CAP_SYS_ADMIN`, or no eBPF), `Ioctl` if it will not attach it (`TUNSETSTEERINGEBPF`).
    pub fn steer_by_flow(&self) -> Result<(), IoError> {
        let Some(queue) = self.queues.first() else {
            return Err(IoError::InvalidConfig {
                name: self.name.clone(),
                reason: "the TAP has no queue left",
            });
        };
        let insns = super::steering::program();
        let program = sys::bpf_load_socket_filter(&insns, None).or_else(|first| {
            // Load again with a log, only to say why.
            let mut log = vec![0u8; 64 * 1024];
            match sys::bpf_load_socket_filter(&insns, Some(&mut log)) {
                Ok(fd) => Ok(fd),
                Err(_) => Err(IoError::SteeringProgram {
                    device: self.name.clone(),
                    log: super::last_log_line(&log),
                    source: first,
                }),
            }
        })?;
        // The TAP keeps its own reference to the program; our fd can close.
        sys::tun_set_steering_ebpf(queue.as_fd(), program.as_raw_fd()).map_err(|source| {
            IoError::Ioctl {
                op: "TUNSETSTEERINGEBPF",
                device: self.name.clone(),
                source,
            }
        })
    }
}

/// Everything `create` does inside the target namespace.
fn create_here(
    config: &TapConfig,
    netns: Option<&Path>,
) -> Result<(Vec<TapQueue>, u32, MacAddr), IoError> {
    let name = config.name.as_str();
    let ioctl_error = |op: &'static str| {
        move |source| IoError::Ioctl {
            op,
            device: name.to_owned(),
            source,
        }
    };
    let name_taken = || IoError::NameTaken {
        name: name.to_owned(),
        netns: netns.map(Path::to_owned),
    };
    // Interface ioctls need a socket, any socket, of the namespace.
    let control: OwnedFd = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|source| IoError::Socket {
            purpose: "an interface control",
            source,
        })?
        .into();
    if sys::interface_index(control.as_fd(), name)
        .map_err(ioctl_error("SIOCGIFINDEX"))?
        .is_some()
    {
        return Err(name_taken());
    }

    let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE;
    let open_queue = |flags| -> Result<TapQueue, IoError> {
        let fd: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK) // std adds O_CLOEXEC
            .open("/dev/net/tun")
            .map_err(|source| IoError::TunOpen {
                name: name.to_owned(),
                source,
            })?
            .into();
        match sys::tun_set_iff(fd.as_fd(), name, flags) {
            Ok(()) => Ok(TapQueue { fd }),
            // IFF_TUN_EXCL (first queue) got EBUSY: the name appeared since the check.
            Err(err)
                if flags & libc::IFF_TUN_EXCL != 0 && err.raw_os_error() == Some(libc::EBUSY) =>
            {
                Err(name_taken())
            }
            Err(err) => Err(ioctl_error("TUNSETIFF")(err)),
        }
    };
    // The first queue creates the TAP and must not join one that appeared since the check
    // above; IFF_TUN_EXCL makes the kernel refuse instead. Header size, endianness and
    // offloads belong to the device, so they are set once, before other queues attach.
    let first = open_queue(flags | libc::IFF_TUN_EXCL)?;
    sys::tun_set_vnet_hdr_size(first.as_fd(), VNET_HEADER_LEN as libc::c_int)
        .map_err(ioctl_error("TUNSETVNETHDRSZ"))?;
    sys::tun_set_vnet_le(first.as_fd(), true).map_err(ioctl_error("TUNSETVNETLE"))?;
    sys::tun_set_offload(first.as_fd(), config.offload).map_err(ioctl_error("TUNSETOFFLOAD"))?;
    let mut queues = Vec::with_capacity(config.queues);
    queues.push(first);
    for _ in 1..config.queues {
        queues.push(open_queue(flags)?);
    }
    sys::set_mtu(control.as_fd(), name, config.mtu).map_err(ioctl_error("SIOCSIFMTU"))?;
    if let Some(len) = config.txqueuelen {
        sys::set_tx_queue_len(control.as_fd(), name, len).map_err(ioctl_error("SIOCSIFTXQLEN"))?;
    }
    let ifindex = sys::interface_index(control.as_fd(), name)
        .map_err(ioctl_error("SIOCGIFINDEX"))?
        .ok_or_else(|| ioctl_error("SIOCGIFINDEX")(io::Error::from_raw_os_error(libc::ENODEV)))?;
    let mac = sys::hardware_address(control.as_fd(), name).map_err(ioctl_error("SIOCGIFHWADDR"))?;
    Ok((queues, ifindex, MacAddr(mac)))
}

impl TapQueue {
    /// Reads one frame: the virtio-net header (`VNET_HEADER_LEN` bytes) followed by the
    /// frame, and returns their total length.
    ///
    /// `buf` should hold `VNET_HEADER_LEN` + MTU + 18 bytes (Ethernet header and one VLAN
    /// tag), or `VNET_HEADER_LEN` + 65550 with TSO/USO offloads. The kernel cuts a longer
    /// frame to `buf.len()` without saying so (the read simply fills `buf`), so a read that
    /// fills the buffer must be treated as truncated; a buffer shorter than the header is
    /// refused with `EINVAL`, and the frame is lost either way.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        sys::read(self.fd.as_fd(), buf)
    }

    /// Writes one frame behind `header` with a single `writev`, and returns the bytes
    /// written (header included). Fails with `EIO` while the TAP is down.
    pub fn send(&self, header: &[u8; VNET_HEADER_LEN], frame: &[u8]) -> io::Result<usize> {
        sys::writev(
            self.fd.as_fd(),
            &[IoSlice::new(header), IoSlice::new(frame)],
        )
    }
}

/// Frames the kernel dropped on their way to vxtap since TAP `name` (in `netns`, or the
/// caller's namespace) was created: the TAP's `tx_dropped`, which counts frames that found
/// the queue toward vxtap full (its ring holds `txqueuelen` frames) because vxtap did not read
/// fast enough, and the rare frame a detached queue could not take.
///
/// Read from `/proc/thread-self/net/dev` inside the namespace, so it costs a thread when
/// `netns` is given: for `stats`, not for the data path.
///
/// # Errors
///
/// The namespace errors of [`netns::run_in`], or `InterfaceCounters` if the file cannot be
/// read or does not list `name`.
pub fn queue_full_drops(name: &str, netns: Option<&Path>) -> Result<u64, IoError> {
    let counters_error = |source| IoError::InterfaceCounters {
        name: name.to_owned(),
        netns: netns.map(Path::to_owned),
        source,
    };
    let dev = netns::run_maybe_in(netns, || {
        std::fs::read_to_string("/proc/thread-self/net/dev")
    })?
    .map_err(counters_error)?;
    proc_net_dev_tx_dropped(&dev, name).ok_or_else(|| {
        counters_error(io::Error::new(
            io::ErrorKind::NotFound,
            "the interface is not in /proc/net/dev",
        ))
    })
}

/// The `tx_dropped` of `name` in the text of `/proc/net/dev`: after `name:`, 8 receive
/// columns, then transmit bytes, packets, errs, drop.
fn proc_net_dev_tx_dropped(dev: &str, name: &str) -> Option<u64> {
    dev.lines().find_map(|line| {
        let (interface, columns) = line.split_once(':')?;
        if interface.trim() != name {
            return None;
        }
        columns.split_whitespace().nth(11)?.parse().ok()
    })
}

/// Whether a failed TAP write was refused because the queue was full (`EAGAIN` on the
/// non-blocking fd, `ENOBUFS`), as opposed to any other error; the frame is lost either way.
pub fn is_queue_full(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock || err.raw_os_error() == Some(libc::ENOBUFS)
}

impl TapQueue {
    /// Writes one frame made of `header` followed by `parts`, with a single `writev` and no
    /// copy: how a superframe coalesced from many received segments reaches the kernel.
    /// `parts` holds at most [`MAX_WRITE_PARTS`] slices.
    ///
    /// # Panics
    ///
    /// If `parts` has more than [`MAX_WRITE_PARTS`] slices.
    pub fn send_parts(&self, header: &[u8; VNET_HEADER_LEN], parts: &[&[u8]]) -> io::Result<usize> {
        assert!(
            parts.len() <= MAX_WRITE_PARTS,
            "a TAP write has at most {MAX_WRITE_PARTS} parts"
        );
        let mut iov = [IoSlice::new(&[]); MAX_WRITE_PARTS + 1];
        iov[0] = IoSlice::new(header);
        for (slot, part) in iov[1..].iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
        }
        sys::writev(self.fd.as_fd(), &iov[..=parts.len()])
    }
}

impl AsFd for TapQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::testns::TestNetns;
    use crate::wire::virtio_net::{GsoType, VirtioNetHeader, VirtioNetRepr};
    use crate::wire::{
        ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, IpProtocol,
        Ipv4Packet, UdpPacket,
    };
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    const TAP_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// A name unique to this process and test, short enough for IFNAMSIZ.
    fn unique_name() -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vt{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        assert!(name.len() <= MAX_NAME_LEN);
        name
    }

    fn config(name: &str) -> TapConfig {
        TapConfig {
            mtu: 1400,
            txqueuelen: Some(321),
            ..TapConfig::new(name)
        }
    }

    fn exists_in_root_namespace(name: &str) -> bool {
        Command::new("ip")
            .args(["link", "show", "dev", name])
            .output()
            .expect("run ip")
            .status
            .success()
    }

    /// Gives the TAP 192.0.2.1/24 and brings it up, inside the test namespace.
    fn bring_up(ns: &TestNetns, tap: &TapDevice) {
        // No IPv6 link-local address, so the kernel sends nothing of its own through the
        // TAP (no DAD, router solicitations or MLD reports) that could land among the
        // frames a test counts.
        ns.ip(&["link", "set", "dev", tap.name(), "addrgenmode", "none"]);
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", tap.name()]);
        ns.ip(&["link", "set", tap.name(), "up"]);
    }

    /// An ARP request "who has 192.0.2.1? tell `sender`" from `PEER_MAC`.
    fn arp_request(sender: Ipv4Addr) -> Vec<u8> {
        let mut frame = vec![0u8; 14 + 28];
        let mut ethernet = EthernetFrame::new_unchecked(&mut frame[..]);
        EthernetRepr {
            src_addr: PEER_MAC,
            dst_addr: MacAddr::BROADCAST,
            ethertype: EtherType::ARP,
        }
        .emit(&mut ethernet);
        ArpRepr {
            operation: ArpOperation::Request,
            sender_mac: PEER_MAC,
            sender_ip: sender,
            target_mac: MacAddr::ZERO,
            target_ip: TAP_IP,
        }
        .emit(&mut ArpPacket::new_unchecked(ethernet.payload_mut()));
        frame
    }

    /// Reads frames from `queues` until `wanted` returns `Some` for one (other traffic, such
    /// as IPv6 router solicitations, is skipped), or panics after 10 seconds.
    fn recv_until<T>(
        queues: &[&TapQueue],
        mut wanted: impl FnMut(VirtioNetRepr, &[u8]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; VNET_HEADER_LEN + 65550];
        loop {
            for queue in queues {
                match queue.recv(&mut buf) {
                    Ok(len) => {
                        let header = VirtioNetHeader::new_checked(&buf[..len]).unwrap();
                        let repr = VirtioNetRepr::parse(&header).unwrap();
                        if let Some(found) = wanted(repr, header.payload()) {
                            return found;
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        sys::wait_readable(queue.as_fd(), 10).unwrap();
                    }
                    Err(err) => panic!("TAP read: {err}"),
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for a frame");
        }
    }

    /// The ARP reply in `frame`, if it is one.
    fn arp_reply(frame: &[u8]) -> Option<ArpRepr> {
        let ethernet = EthernetFrame::new_checked(frame).ok()?;
        if ethernet.ethertype() != EtherType::ARP {
            return None;
        }
        let repr = ArpRepr::parse(&ArpPacket::new_checked(ethernet.payload()).ok()?).ok()?;
        (repr.operation == ArpOperation::Reply).then_some(repr)
    }

    #[test]
    fn created_in_a_namespace_and_only_there() {
        let ns = TestNetns::new();
        let name = unique_name();
        let tap = TapDevice::create(&config(&name), Some(ns.path())).unwrap();
        assert_eq!(tap.name(), name);
        assert_eq!(tap.netns(), Some(ns.path()));
        assert_eq!(tap.queues().len(), 1);
        assert!(tap.mac().is_unicast());

        let link = ns.ip(&["-o", "link", "show", "dev", &name]);
        assert!(
            link.starts_with(&format!("{}: {name}: <", tap.ifindex())),
            "{link}"
        );
        assert!(link.contains(" mtu 1400 "), "{link}");
        assert!(link.contains(" qlen 321"), "{link}");
        assert!(
            link.contains(&format!("link/ether {} ", tap.mac())),
            "{link}"
        );
        let flags = &link[link.find('<').unwrap() + 1..link.find('>').unwrap()];
        assert!(!flags.split(',').any(|flag| flag == "UP"), "{link}");

        let details = ns.ip(&["-d", "link", "show", "dev", &name]);
        assert!(details.contains("tun type tap"), "{details}");
        assert!(!exists_in_root_namespace(&name));
    }

    #[test]
    fn a_taken_name_is_refused_without_joining_it() {
        let ns = TestNetns::new();
        let name = unique_name();
        let _tap = TapDevice::create(&config(&name), Some(ns.path())).unwrap();
        for taken in [name.as_str(), "lo"] {
            let err = TapDevice::create(&config(taken), Some(ns.path())).unwrap_err();
            assert!(
                matches!(&err, IoError::NameTaken { name, netns } if name == taken && netns.as_deref() == Some(ns.path())),
                "{err:?}"
            );
            assert!(err.to_string().contains(ns.name()), "{err}");
        }
        let details = ns.ip(&["-d", "link", "show", "dev", &name]);
        assert!(details.contains("numqueues 1 "), "{details}");
    }

    #[test]
    fn the_kernel_refuses_to_join_with_the_exclusive_flag() {
        // The race `create` closes: the name appears between the check and TUNSETIFF.
        let ns = TestNetns::new();
        let name = unique_name();
        let _tap = TapDevice::create(&config(&name), Some(ns.path())).unwrap();
        let err = netns::run_in(ns.path(), || {
            let fd: OwnedFd = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap()
                .into();
            let flags = libc::IFF_TAP
                | libc::IFF_NO_PI
                | libc::IFF_VNET_HDR
                | libc::IFF_MULTI_QUEUE
                | libc::IFF_TUN_EXCL;
            sys::tun_set_iff(fd.as_fd(), &name, flags).unwrap_err()
        })
        .unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn bad_names_and_configs_are_refused_before_anything_happens() {
        // A namespace that does not exist: validation must fail first.
        let nowhere = Path::new("/var/run/netns/vxt-never-created");
        for bad in [
            "",
            "0123456789abcdef",
            "a/b",
            "a b",
            "a\tb",
            "a\nb",
            ".",
            "..",
            "a:1",
            "tap%d",
            "a\0b",
        ] {
            let err = TapDevice::create(&TapConfig::new(bad), Some(nowhere)).unwrap_err();
            assert!(
                matches!(&err, IoError::InvalidName { name, .. } if name == bad),
                "{bad:?}: {err:?}"
            );
        }
        assert!(validate_interface_name("0123456789abcde").is_ok());
        assert!(validate_interface_name("vxtap-ü").is_ok());
        for queues in [0, MAX_QUEUES + 1] {
            let config = TapConfig {
                queues,
                ..TapConfig::new("vxt0")
            };
            let err = TapDevice::create(&config, Some(nowhere)).unwrap_err();
            assert!(matches!(err, IoError::InvalidConfig { .. }), "{err:?}");
        }
    }

    #[test]
    fn a_refused_step_leaves_no_half_made_tap() {
        let ns = TestNetns::new();
        let name = unique_name();
        let config = TapConfig {
            mtu: 10, // below the Ethernet minimum of 68
            queues: 3,
            ..config(&name)
        };
        let err = TapDevice::create(&config, Some(ns.path())).unwrap_err();
        assert!(
            matches!(&err, IoError::Ioctl { op: "SIOCSIFMTU", device, source } if *device == name && source.raw_os_error() == Some(libc::EINVAL)),
            "{err:?}"
        );
        assert!(ns.try_ip(&["link", "show", "dev", &name]).is_err());
        // The name is free again.
        TapDevice::create(&TapConfig::new(name.as_str()), Some(ns.path())).unwrap();
    }

    #[test]
    fn a_missing_namespace_is_named() {
        let path = Path::new("/var/run/netns/vxt-never-created");
        let err = TapDevice::create(&TapConfig::new("vxt0"), Some(path)).unwrap_err();
        assert!(matches!(err, IoError::NetnsNotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "network namespace /var/run/netns/vxt-never-created does not exist"
        );
    }

    #[test]
    fn the_kernel_answers_an_arp_request_written_to_the_tap() {
        let ns = TestNetns::new();
        let tap = TapDevice::create(&config(&unique_name()), Some(ns.path())).unwrap();
        let queue = &tap.queues()[0];
        let request = arp_request(Ipv4Addr::new(192, 0, 2, 2));
        let header = VirtioNetRepr::NONE.to_bytes();

        // Down: the kernel refuses the frame.
        let err = queue.send(&header, &request).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        // Nothing to read yet, and that is WouldBlock, not an error.
        let mut buf = [0u8; 2048];
        assert_eq!(
            queue.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );

        bring_up(&ns, &tap);
        assert_eq!(queue.send(&header, &request).unwrap(), 12 + 42);
        let (vnet, reply) = recv_until(&[queue], |vnet, frame| {
            arp_reply(frame).map(|reply| (vnet, reply))
        });
        // No offloads: the kernel's header carries nothing.
        assert_eq!(vnet, VirtioNetRepr::NONE);
        assert_eq!(reply.sender_mac, tap.mac());
        assert_eq!(reply.sender_ip, TAP_IP);
        assert_eq!(reply.target_mac, PEER_MAC);
        assert_eq!(reply.target_ip, Ipv4Addr::new(192, 0, 2, 2));
    }

    #[test]
    fn both_queues_of_a_multiqueue_tap_carry_frames() {
        let ns = TestNetns::new();
        let name = unique_name();
        let tap = TapDevice::create(
            &TapConfig {
                queues: 2,
                ..config(&name)
            },
            Some(ns.path()),
        )
        .unwrap();
        let details = ns.ip(&["-d", "link", "show", "dev", &name]);
        assert!(details.contains("multi_queue numqueues 2 "), "{details}");
        bring_up(&ns, &tap);
        let queues = tap.into_queues();
        let header = VirtioNetRepr::NONE.to_bytes();
        let senders = [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)];
        for (queue, sender) in queues.iter().zip(senders) {
            queue.send(&header, &arp_request(sender)).unwrap();
        }
        // The kernel picks the queue of each reply by flow hash; both replies must arrive.
        let mut answered = Vec::new();
        let all: Vec<&TapQueue> = queues.iter().collect();
        recv_until(&all, |_, frame| {
            if let Some(reply) = arp_reply(frame) {
                answered.push(reply.target_ip);
            }
            senders
                .iter()
                .all(|sender| answered.contains(sender))
                .then_some(())
        });
    }

    #[test]
    fn the_tap_disappears_with_its_last_queue() {
        let ns = TestNetns::new();
        let name = unique_name();
        let tap = TapDevice::create(
            &TapConfig {
                queues: 2,
                ..config(&name)
            },
            Some(ns.path()),
        )
        .unwrap();
        let mut queues = tap.into_queues();
        drop(queues.pop());
        assert!(ns.try_ip(&["link", "show", "dev", &name]).is_ok());
        drop(queues);
        // Unregistering runs when the last fd closes; allow the kernel a moment anyway.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ns.try_ip(&["link", "show", "dev", &name]).is_ok() {
            assert!(Instant::now() < deadline, "{name} outlived its queues");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn offload_flags_the_kernel_accepts() {
        let ns = TestNetns::new();
        let tap = TapDevice::create(&config(&unique_name()), Some(ns.path())).unwrap();
        let accepted = |flags| tap.set_offload(flags).is_ok();
        let einval = |flags| match tap.set_offload(flags) {
            Err(IoError::Ioctl { op, source, .. }) => {
                op == "TUNSETOFFLOAD" && source.raw_os_error() == Some(libc::EINVAL)
            }
            _ => false,
        };
        assert!(accepted(0));
        assert!(accepted(TUN_F_CSUM));
        assert!(accepted(
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        ));
        // Segmentation offloads are meaningless without checksum offload.
        assert!(einval(TUN_F_TSO4));
        // USO is all or nothing (and unknown before Linux 6.2).
        assert!(einval(TUN_F_CSUM | TUN_F_USO4));
        assert!(einval(0x8000_0000));
        let uso = accepted(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6);
        eprintln!("TUNSETOFFLOAD CSUM|TSO4|TSO6|USO4|USO6 accepted: {uso}");
        for bit in 0..32 {
            eprintln!(
                "TUNSETOFFLOAD CSUM|bit {bit:#x}: {}",
                accepted(TUN_F_CSUM | (1 << bit))
            );
        }
    }

    /// The first IPv4/UDP frame in what `queue` reads, with its virtio-net header.
    fn next_udp_frame(queue: &TapQueue) -> (VirtioNetRepr, Vec<u8>) {
        recv_until(&[queue], |vnet, frame| {
            let ethernet = EthernetFrame::new_checked(frame).ok()?;
            let ip = Ipv4Packet::new_checked(ethernet.payload()).ok()?;
            (ethernet.ethertype() == EtherType::IPV4 && ip.protocol() == IpProtocol::UDP)
                .then(|| (vnet, frame.to_vec()))
        })
    }

    #[test]
    fn checksum_and_segmentation_offloads_show_in_the_header() {
        use crate::io::udp::{SendBatch, UdpSocket};
        let ns = TestNetns::new();
        let tap = TapDevice::create(&config(&unique_name()), Some(ns.path())).unwrap();
        let uso = tap
            .set_offload(TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6)
            .is_ok();
        if !uso {
            tap.set_offload(TUN_F_CSUM).unwrap();
        }
        bring_up(&ns, &tap);
        let peer = "02:00:00:00:00:02";
        ns.ip(&[
            "neigh",
            "add",
            "192.0.2.2",
            "lladdr",
            peer,
            "nud",
            "permanent",
            "dev",
            tap.name(),
        ]);
        let socket = netns::run_in(ns.path(), || {
            UdpSocket::bind(SocketAddrV4::new(TAP_IP, 0), false)
        })
        .unwrap()
        .unwrap();
        let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 4789);
        let queue = &tap.queues()[0];

        // A plain datagram: the kernel leaves its UDP checksum for us to finish.
        socket.send_to(&[7u8; 100], dst).unwrap();
        let (vnet, frame) = next_udp_frame(queue);
        assert!(vnet.needs_csum, "{vnet:?}");
        assert_eq!(vnet.gso_type, GsoType::None);
        assert_eq!((vnet.csum_start, vnet.csum_offset), (14 + 20, 6));
        assert_eq!(frame.len(), 14 + 20 + 8 + 100);

        // A UDP_SEGMENT send of 3 x 1000 bytes: one USO super-frame if the TAP takes USO.
        let payload = vec![9u8; 3000];
        let mut batch = SendBatch::new(1);
        assert!(batch.push(dst, &[&payload], Some(1000)));
        let outcome = batch.send(&socket).unwrap();
        assert_eq!((outcome.sent, outcome.failed), (1, 0), "{outcome:?}");
        let (vnet, frame) = next_udp_frame(queue);
        eprintln!(
            "USO {uso}: header {:?} frame {} bytes",
            vnet.to_bytes(),
            frame.len()
        );
        assert!(vnet.needs_csum);
        if uso {
            assert_eq!(vnet.gso_type, GsoType::UdpL4);
            assert_eq!(vnet.gso_size, 1000);
            assert_eq!(frame.len(), 14 + 20 + 8 + 3000);
            let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(udp.dst_port(), 4789);
        } else {
            assert_eq!(vnet.gso_type, GsoType::None);
            assert_eq!(frame.len(), 14 + 20 + 8 + 1000);
        }
    }

    /// Brings `tap` up with a static neighbour 192.0.2.2 behind it and returns a socket in
    /// `ns` whose datagrams to 192.0.2.2 leave through the TAP (toward vxtap's reads).
    fn sender_through(ns: &TestNetns, tap: &TapDevice) -> crate::io::udp::UdpSocket {
        bring_up(ns, tap);
        ns.ip(&[
            "neigh",
            "add",
            "192.0.2.2",
            "lladdr",
            "02:00:00:00:00:02",
            "nud",
            "permanent",
            "dev",
            tap.name(),
        ]);
        netns::run_in(ns.path(), || {
            crate::io::udp::UdpSocket::bind(SocketAddrV4::new(TAP_IP, 0), false)
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_short_buffer_truncates_silently() {
        let ns = TestNetns::new();
        let tap = TapDevice::create(&config(&unique_name()), Some(ns.path())).unwrap();
        let socket = sender_through(&ns, &tap);
        let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 9);
        socket.send_to(&[1u8; 500], dst).unwrap();
        let queue = &tap.queues()[0];
        // Too short for the header: refused.
        sys::wait_readable(queue.as_fd(), 10_000).unwrap();
        let err = queue.recv(&mut [0u8; VNET_HEADER_LEN - 1]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        // Shorter than the frame: filled, and nothing says the frame was longer.
        socket.send_to(&[1u8; 500], dst).unwrap();
        let mut buf = [0u8; VNET_HEADER_LEN + 100];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match queue.recv(&mut buf) {
                Ok(len) => {
                    let frame = EthernetFrame::new_checked(&buf[VNET_HEADER_LEN..len]).unwrap();
                    if frame.ethertype() == EtherType::IPV4 {
                        assert_eq!(len, buf.len());
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    sys::wait_readable(queue.as_fd(), 10).unwrap();
                }
                Err(err) => panic!("TAP read: {err}"),
            }
            assert!(Instant::now() < deadline, "timed out waiting for a frame");
        }
    }

    #[test]
    fn handles_can_move_to_worker_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<TapDevice>();
        send_sync::<TapQueue>();
        send_sync::<crate::io::udp::UdpSocket>();
        fn send<T: Send>() {}
        send::<crate::io::udp::RecvBatch>();
        send::<crate::io::udp::SendBatch<'static>>();
    }

    #[test]
    fn tx_dropped_is_read_from_proc_net_dev() {
        // Captured from a test namespace (Linux 6.8), the TAP after 100 sends it could not
        // queue but 4 of.
        let dev = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
vt14982-0:       0       0    0    0    0     0          0         0      568       4    0   96    0     0       0          0
";
        assert_eq!(proc_net_dev_tx_dropped(dev, "vt14982-0"), Some(96));
        assert_eq!(proc_net_dev_tx_dropped(dev, "lo"), Some(0));
        assert_eq!(proc_net_dev_tx_dropped(dev, "vt14982"), None);
        assert_eq!(proc_net_dev_tx_dropped(dev, "face |bytes"), None);
        assert_eq!(proc_net_dev_tx_dropped("x: 1 2 3", "x"), None);
    }

    #[test]
    fn frames_that_find_the_queue_full_are_counted_exactly() {
        let ns = TestNetns::new();
        let tap = TapDevice::create(
            &TapConfig {
                txqueuelen: Some(4),
                ..config(&unique_name())
            },
            Some(ns.path()),
        )
        .unwrap();
        let socket = sender_through(&ns, &tap);
        let queue = &tap.queues()[0];
        let mut buf = vec![0u8; 4096];
        // Whatever the kernel sent before (IPv6 router solicitations, say) is counted too;
        // take it out of the way.
        while queue.recv(&mut buf).is_ok() {}
        let before = queue_full_drops(tap.name(), Some(ns.path())).unwrap();
        const SENT: u64 = 100;
        let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 9);
        for _ in 0..SENT {
            socket.send_to(&[1u8; 100], dst).unwrap();
        }
        // Nobody read while the datagrams went out; now read what the queue kept.
        let mut read = 0u64;
        loop {
            match queue.recv(&mut buf) {
                Ok(_) => read += 1,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("TAP read: {err}"),
            }
        }
        let dropped = queue_full_drops(tap.name(), Some(ns.path())).unwrap() - before;
        eprintln!("sent {SENT}, read {read}, counted {dropped}");
        assert!(
            read <= 4,
            "the queue held {read} frames, more than txqueuelen"
        );
        assert_eq!(dropped, SENT - read);
        assert!(matches!(
            queue_full_drops("nosuchtap0", Some(ns.path())),
            Err(IoError::InterfaceCounters { source, .. })
                if source.kind() == io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn writes_into_a_tap_nobody_reads_are_never_refused() {
        let ns = TestNetns::new();
        let tap = TapDevice::create(
            &TapConfig {
                txqueuelen: Some(2),
                ..config(&unique_name())
            },
            Some(ns.path()),
        )
        .unwrap();
        bring_up(&ns, &tap);
        // A socket that is never read: every datagram written to the TAP is for it.
        let _socket = netns::run_in(ns.path(), || {
            crate::io::udp::UdpSocket::bind(SocketAddrV4::new(TAP_IP, 9999), false)
        })
        .unwrap()
        .unwrap();
        let frame = udp_frame_to(tap.mac(), 9999, 1000);
        let header = VirtioNetRepr::NONE.to_bytes();
        const WRITES: u64 = 20_000;
        let (mut written, mut full) = (0u64, 0u64);
        for _ in 0..WRITES {
            match tap.queues()[0].send(&header, &frame) {
                Ok(len) => {
                    assert_eq!(len, VNET_HEADER_LEN + frame.len());
                    written += 1;
                }
                Err(err) if is_queue_full(&err) => full += 1,
                Err(err) => panic!("a TAP write failed otherwise than for a full queue: {err}"),
            }
        }
        // Linux hands a written frame to the stack at once (the socket's full receive buffer
        // drops it there), so writes are not refused: `tap_tx_queue_full` stays 0 unless a
        // kernel does refuse, and the full queue of a TAP that matters is the one toward vxtap
        // (see above). Should a kernel start refusing, this says so.
        eprintln!("{WRITES} writes: {written} taken, {full} refused as queue full");
        assert_eq!((written, full), (WRITES, 0));
    }

    #[test]
    fn queue_full_is_eagain_or_enobufs() {
        assert!(is_queue_full(&io::Error::from_raw_os_error(libc::EAGAIN)));
        assert!(is_queue_full(&io::Error::from_raw_os_error(libc::ENOBUFS)));
        assert!(!is_queue_full(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!is_queue_full(&io::Error::from_raw_os_error(libc::EINVAL)));
    }

    /// An Ethernet frame from `PEER_MAC` (192.0.2.2) to `dst_mac` (`TAP_IP`) holding a UDP
    /// datagram of `len` bytes to `port`, checksum left out (0).
    fn udp_frame_to(dst_mac: MacAddr, port: u16, len: usize) -> Vec<u8> {
        let mut frame = Vec::with_capacity(14 + 28 + len);
        frame.extend_from_slice(&dst_mac.0);
        frame.extend_from_slice(&PEER_MAC.0);
        frame.extend_from_slice(&[0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + 8 + len) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[192, 0, 2, 2]);
        ip[16..20].copy_from_slice(&TAP_IP.octets());
        Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&40000u16.to_be_bytes());
        frame.extend_from_slice(&port.to_be_bytes());
        frame.extend_from_slice(&((8 + len) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.resize(14 + 28 + len, 0x5a);
        frame
    }
}

//! The I/O shell: the TAP device on the overlay side, the UDP socket on the underlay side, and
//! network namespaces to put each where it belongs.
//!
//! - [`netns`]: resolve a namespace argument like iproute2, open and check a namespace file
//!   without blocking (and learn its identity), and run a closure inside it on a helper
//!   thread, so that fds opened there (a TAP, a socket) live in that namespace while the
//!   calling thread never moves.
//! - [`socket_peer_groups`]: who is on the other end of a Unix socket, for the daemon's
//!   admin socket.
//! - [`tap`]: create a non-persistent, multiqueue TAP with a 12-byte virtio-net header and
//!   move frames through its queues, one `read` or one `writev` per frame; `steering` holds
//!   the eBPF program that pins every flow to one queue.
//! - [`udp`]: a non-blocking IPv4 UDP socket with batched receive (`recvmmsg`, UDP GRO) and
//!   batched send (`sendmmsg`, UDP GSO).
//!
//! Everything here is non-blocking: readiness comes from the caller's event loop (every type
//! implements `AsFd`/`AsRawFd` for registration), and `WouldBlock` is passed up untouched.
//! All `unsafe` lives in the private `sys` module; every new fd goes straight into an
//! `OwnedFd`, so nothing is ever closed by hand. This module never parses or builds packets
//! (that is `wire` and `tunnel`), never keeps state between calls beyond its own buffers,
//! and never touches addresses, routes or link state beyond the TAP it creates (which it
//! leaves down, like `ip link add`).

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

mod ebpf;
pub mod filter;
pub mod netns;
mod steering;
pub mod tap;
pub mod udp;

#[allow(unsafe_code)]
mod sys;

#[cfg(test)]
mod testns;

pub use tap::{
    queue_full_drops, TapConfig, TapDevice, TapQueue, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6,
    TUN_F_TSO_ECN, TUN_F_USO4, TUN_F_USO6,
};
pub use udp::{
    RecvBatch, SendBatch, SendOutcome, TrainOutcome, UdpOffloads, UdpSocket, GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
};

/// Why an I/O shell operation failed, with what it was operating on.
///
/// Per-packet failures are not `IoError`s: `TapQueue` and the batches return plain
/// `std::io::Result`s so that `WouldBlock` reaches the event loop without wrapping.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// A namespace argument that cannot name anything (empty, `.` or `..`).
    #[error("{name:?} is not a network namespace name")]
    InvalidNetnsName {
        /// The argument as given.
        name: String,
    },
    /// The namespace file does not exist.
    #[error("network namespace {} does not exist", path.display())]
    NetnsNotFound {
        /// The resolved path.
        path: PathBuf,
    },
    /// The namespace file exists but cannot be opened.
    #[error("cannot open network namespace {}", path.display())]
    NetnsOpen {
        /// The resolved path.
        path: PathBuf,
        /// What `open` said.
        source: std::io::Error,
    },
    /// The file exists but is not a network namespace.
    #[error("{} is not a network namespace ({what})", path.display())]
    NotNetns {
        /// The resolved path.
        path: PathBuf,
        /// What it is instead, e.g. `"a mount namespace"`.
        what: &'static str,
    },
    /// The kernel could not say what kind of namespace the file is.
    #[error("cannot check that {} is a network namespace", path.display())]
    NetnsCheck {
        /// The resolved path.
        path: PathBuf,
        /// What `fstatfs`, `fstat` or `NS_GET_NSTYPE` said.
        source: std::io::Error,
    },
    /// The helper thread that enters a namespace could not be started.
    #[error("cannot start a thread to enter network namespace {}", path.display())]
    NetnsThread {
        /// The resolved path.
        path: PathBuf,
        /// What `clone` said.
        source: std::io::Error,
    },
    /// `setns` refused the namespace (EPERM: no CAP_SYS_ADMIN).
    #[error("cannot enter network namespace {}", path.display())]
    Setns {
        /// The resolved path.
        path: PathBuf,
        /// What `setns` said.
        source: std::io::Error,
    },
    /// An interface name the kernel would refuse or misread.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A TAP configuration that cannot be honoured.
    #[error("TAP {name}: {reason}")]
    InvalidConfig {
        /// The TAP's name.
        name: String,
        /// What is wrong with the configuration.
        reason: &'static str,
    },
    /// An interface of that name already exists in the target namespace.
    #[error("interface {name} already exists in {}", NetnsName(netns.as_deref()))]
    NameTaken {
        /// The interface name.
        name: String,
        /// The namespace, or `None` for the caller's own.
        netns: Option<PathBuf>,
    },
    /// The kernel's counters of an interface could not be read (`/proc/net/dev` as the
    /// namespace sees it).
    #[error("cannot read the counters of interface {name} in {}", NetnsName(netns.as_deref()))]
    InterfaceCounters {
        /// The interface name.
        name: String,
        /// The namespace, or `None` for the caller's own.
        netns: Option<PathBuf>,
        /// What reading or parsing said (`NotFound` if the interface is not listed).
        source: std::io::Error,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun for TAP {name}")]
    TunOpen {
        /// The TAP's name.
        name: String,
        /// What `open` said.
        source: std::io::Error,
    },
    /// An ioctl on a TAP or interface failed.
    #[error("{op} on {device} failed")]
    Ioctl {
        /// The request, e.g. `"TUNSETOFFLOAD"`.
        op: &'static str,
        /// The interface name.
        device: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The kernel refused the TAP's queue-steering eBPF program.
    #[error(
        "cannot load the queue-steering eBPF program for {device}{}",
        verifier_says(log)
    )]
    SteeringProgram {
        /// The TAP's name.
        device: String,
        /// The last line of the verifier's report, if it gave one.
        log: String,
        /// What `bpf(BPF_PROG_LOAD)` said.
        source: std::io::Error,
    },
    /// The underlay filter could not be set up, proven or kept in step (see [`filter`]).
    #[error("underlay filter: {step}{}", verifier_says(log))]
    UnderlayFilter {
        /// What was being done.
        step: &'static str,
        /// The verifier's last line, or what it was done to; empty if nothing to add.
        log: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A socket could not be created.
    #[error("cannot create {purpose} socket")]
    Socket {
        /// What the socket was for.
        purpose: &'static str,
        /// What `socket` said.
        source: std::io::Error,
    },
    /// A UDP socket could not be bound.
    #[error("cannot bind UDP socket to {addr}")]
    Bind {
        /// The requested address.
        addr: SocketAddrV4,
        /// What `bind` said.
        source: std::io::Error,
    },
    /// A socket option (or `getsockname`) failed.
    #[error("{option} on UDP socket {addr} failed")]
    SocketOption {
        /// The option, e.g. `"SO_RCVBUF"`.
        option: &'static str,
        /// The socket's address (as requested, if it is not bound yet).
        addr: SocketAddrV4,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// The supplementary groups the peer of the connected Unix socket `socket` had when it
/// connected (`SO_PEERGROUPS`, Linux 4.13+), for access checks on an admin socket. Unlike
/// groups read from `/proc/PID/status`, they cannot belong to another process that reused
/// the peer's pid. The peer's uid, gid and pid come from `SO_PEERCRED`.
///
/// # Errors
///
/// What `getsockopt` said (`ENOPROTOOPT` for a socket that is not a connected Unix socket).
pub fn socket_peer_groups(socket: impl std::os::fd::AsFd) -> std::io::Result<Vec<u32>> {
    sys::peer_groups(socket.as_fd())
}

/// The pid, uid and gid of the peer of the connected Unix socket `socket` when it connected
/// (`SO_PEERCRED`). The pid is 0 for a peer in a pid namespace this process cannot see.
///
/// # Errors
///
/// What `getsockopt` said (`ENOTCONN`, `ENOPROTOOPT` for a socket that is not Unix).
pub fn socket_peer_cred(socket: impl std::os::fd::AsFd) -> std::io::Result<(i32, u32, u32)> {
    sys::peer_cred(socket.as_fd())
}

/// The last non-empty line of a NUL-terminated verifier log.
pub(crate) fn last_log_line(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    String::from_utf8_lossy(&log[..end])
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The verifier's report for an error message: empty, or ": " and the report.
fn verifier_says(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (verifier: {log})")
    }
}

/// Displays an optional namespace path for error messages.
struct NetnsName<'a>(Option<&'a Path>);

impl std::fmt::Display for NetnsName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(path) => write!(f, "network namespace {}", path.display()),
            None => f.write_str("the current network namespace"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_groups_are_the_connecting_process_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (pid, uid, gid) = socket_peer_cred(&a).unwrap();
        assert_eq!(pid, i32::try_from(std::process::id()).unwrap());
        // /proc/self belongs to the process's effective uid and gid.
        let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        let my_gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata("/proc/self").unwrap());
        assert_eq!((uid, gid), (me, my_gid));
        let mut got = socket_peer_groups(&a).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let mut want: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap()
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        // Not a connected Unix socket: an error, not an empty list.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(socket_peer_groups(&udp).is_err());
    }
}

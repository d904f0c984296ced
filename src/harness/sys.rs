//! The harness's only `unsafe`: link-layer socket addresses for AF_PACKET (socket2 has no
//! safe constructor for `sockaddr_ll`) and sending a signal to a child process.

use socket2::{SockAddr, SockAddrStorage};
use std::io;

/// A `sockaddr_ll` for interface `ifindex` and EtherType `protocol` (host order), with
/// `dst` as the link-layer destination when sending.
pub(crate) fn packet_addr(ifindex: u32, protocol: u16, dst: Option<[u8; 6]>) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is one of this platform's `sockaddr_*` types, it is smaller than
    // `sockaddr_storage` (view_as asserts that) and all-zero bytes are a valid value of it.
    let ll: &mut libc::sockaddr_ll = unsafe { storage.view_as() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = i32::try_from(ifindex).expect("ifindex fits an int");
    if let Some(mac) = dst {
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(&mac);
    }
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds a `sockaddr_ll` initialised above, family AF_PACKET, and
    // `len` is exactly its size.
    unsafe { SockAddr::new(storage, len) }
}

/// `kill(pid, signal)`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns TX checksum offload of interface `ifname`, in the calling thread's namespace, on or
/// off (`ethtool -K IF tx on|off`, through the legacy `ETHTOOL_STXCSUM` ioctl so the tests
/// need no ethtool binary).
pub(crate) fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `struct ethtool_value` from <linux/ethtool.h>.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    // SAFETY: `ifreq` is a plain C struct (arrays, integers, a union of those and pointers)
    // for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in request.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads `request` (a NUL-terminated name, checked above, and a
    // pointer to `value`, a live `ethtool_value`) and writes at most into `value`; both
    // outlive the call, and the fd is an open socket we own.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as _, &mut request) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

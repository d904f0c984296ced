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

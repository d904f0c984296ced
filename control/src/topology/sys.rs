//! The topology builder's only `unsafe`: turning TX checksum offload off on an underlay
//! interface (`ethtool -K IF tx off`, through the legacy `ETHTOOL_STXCSUM` ioctl, so no
//! ethtool binary is needed). It touches only the interface named, in the calling thread's
//! namespace.

use std::io;
use std::os::fd::AsRawFd;

/// Turns TX checksum offload of interface `ifname`, in the calling thread's namespace, on or
/// off.
pub(crate) fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<()> {
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
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
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

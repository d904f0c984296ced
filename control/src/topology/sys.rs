//! The topology builder's only `unsafe`: turning TX checksum offload off on an underlay
//! interface (`ethtool -K IF tx off`, through the legacy `ETHTOOL_STXCSUM` ioctl, so no
//! ethtool binary is needed). It touches only the interface named, in the calling thread's
//! namespace.

use rustix::ioctl::{ioctl, Opcode, Updater};
use std::io;

/// `SIOCETHTOOL` from <linux/sockios.h>.
const SIOCETHTOOL: Opcode = 0x8946;
/// `ETHTOOL_STXCSUM` from <linux/ethtool.h>.
const ETHTOOL_STXCSUM: u32 = 0x17;
/// `IFNAMSIZ`: an interface name and its NUL.
const IFNAMSIZ: usize = 16;

/// `struct ethtool_value` from <linux/ethtool.h>.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` as SIOCETHTOOL reads it: the name, then `ifr_data` (the rest of the
/// 24-byte union is padding).
#[repr(C)]
struct IfreqData {
    name: [u8; IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// Turns TX checksum offload of interface `ifname`, in the calling thread's namespace, on or
/// off.
pub(crate) fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<()> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    let mut request = IfreqData {
        name: [0; IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    request.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: SIOCETHTOOL takes a `struct ifreq` (IfreqData has its layout: a NUL-terminated
    // name, checked above, then the `ifr_data` pointer, padded to the union's size) and
    // writes at most into the `ethtool_value` it points to; `request` and `value` outlive
    // the call, and the fd is an open socket we own.
    unsafe {
        let updater = Updater::<SIOCETHTOOL, IfreqData>::new(&mut request);
        ioctl(&socket, updater)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_has_the_size_of_an_ifreq() {
        assert_eq!(std::mem::size_of::<IfreqData>(), 40);
        assert!(set_tx_checksum("", false).is_err());
        assert!(set_tx_checksum("a-name-far-too-long", false).is_err());
    }
}

//! Zero-copy parsers and emitters for the protocols vxtap touches.
//!
//! Each protocol lives in its own file and follows one pattern (after smoltcp):
//! - `XxxPacket<T: AsRef<[u8]>>` wraps a buffer. `new_checked` is for untrusted input and
//!   validates every length the getters rely on, so getters never panic afterwards;
//!   `new_unchecked` is for buffers the caller already validated or is about to fill.
//! - `XxxRepr` is the parsed, owned form: `parse` from a packet, `emit` into a buffer the
//!   caller owns, `buffer_len` to size that buffer.
//!
//! This module never allocates, performs I/O or reads a clock.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod virtio_net;
pub mod vxlan;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr, VlanInfo};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
pub use ipv6::Ipv6Packet;
pub use tcp::{TcpFlags, TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};
pub use virtio_net::{GsoType, VirtioNetHeader, VirtioNetRepr};
pub use vxlan::{Vni, VxlanPacket, VxlanRepr};

/// A byte range of a header field.
pub(crate) type Field = core::ops::Range<usize>;
/// The first byte of a field that runs to the end of the header or buffer.
pub(crate) type Rest = core::ops::RangeFrom<usize>;

/// Why a buffer could not be parsed. Small and `Copy`: per-packet outcomes are not
/// heavyweight errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header or a length field claims.
    #[error("truncated")]
    Truncated,
    /// A field holds a value the protocol forbids (bad checksum, impossible length, ...).
    #[error("malformed")]
    Malformed,
    /// Well-formed, but a variant vxtap does not handle (another ARP hardware type, ...).
    #[error("unsupported")]
    Unsupported,
}

/// Result of a wire operation.
pub type Result<T> = core::result::Result<T, Error>;

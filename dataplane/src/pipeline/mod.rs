//! The data path as pure functions from received bytes to plans, the way `quinn-proto`
//! turns datagrams into `Transmit`s without touching a socket.
//!
//! - [`Egress`]: frames read from a TAP ([`TapFrames`]) to what goes on the underlay. Each
//!   frame's virtio-net header is honoured (a pending checksum finished, a superframe checked
//!   to be one vxtap can cut), the frame is dissected once ([`Layout`]), the switch decides,
//!   and every copy gets its VXLAN header, its outer source port from the flow hash, and the
//!   source socket that port belongs to. The plan groups the copies by socket, in order
//!   within each group, so one flow's datagrams leave in order from one port. Superframes are
//!   cut into segments ([`Egress::segments`]) as the sender reaches them, into a header
//!   buffer the caller owns.
//! - [`Ingress`]: datagrams from the underlay (any [`Datagrams`], such as a `recvmmsg`
//!   batch, GRO trains included) to what goes to the TAPs. Each datagram's VXLAN header is
//!   read ([`tunnel::decap`]), the switch decides, the inner frame is dissected once, and
//!   in-order segments of one TCP flow coalesce into one superframe per TAP write
//!   ([`TapWrite`]), each with the virtio-net header it needs.
//!
//! Each half has two steps: one that needs the switch (`decide`, run under the switch lock
//! that every worker shares, and kept short) and one that does not (`prepare` before it on
//! the way out, `plan` after it on the way in: virtio-net headers, checksums, dissection,
//! flow hashes, coalescing), so the per-byte work never holds the lock.
//!
//! Encapsulation and decapsulation sit here side by side; the switch decides and never
//! transforms a frame. Every frame or datagram that goes in comes out either in the plan or
//! counted once as a drop: by the switch (per reason), or in [`EgressCounts`] and
//! [`IngressCounts`] for what the switch never saw. Nothing here performs I/O, reads a clock
//! (time comes in as `now`) or allocates once the buffers have grown to the batch size.
//!
//! [`Layout`]: crate::dissect::Layout
//! [`tunnel::decap`]: crate::tunnel::decap

mod egress;
mod ingress;

pub use egress::{Datagram, Egress, EgressCounts, TapFrames, Transmit};
pub use ingress::{Datagrams, HeldDatagram, Ingress, IngressCounts, LinkInfo, TapWrite, MAX_RUN};

/// The index of the last of `ports` (sorted, as a source pool binds them) at or below
/// `port`, or 0: the socket that sends a flow whose hash picked `port`.
pub fn socket_for(ports: &[u16], port: u16) -> usize {
    ports.partition_point(|&p| p <= port).saturating_sub(1)
}

#[cfg(test)]
mod tests;

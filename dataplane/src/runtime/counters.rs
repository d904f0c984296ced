//! I/O counters the workers keep with relaxed atomics, added once per batch.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What the I/O did for one link.
#[derive(Debug, Default)]
pub struct LinkIoCounters {
    pub(crate) tap_rx_errors: AtomicU64,
    pub(crate) tap_tx_frames: AtomicU64,
    pub(crate) tap_tx_bytes: AtomicU64,
    pub(crate) tap_tx_errors: AtomicU64,
    pub(crate) tap_tx_queue_full: AtomicU64,
    pub(crate) udp_tx_datagrams: AtomicU64,
    pub(crate) udp_tx_bytes: AtomicU64,
    pub(crate) udp_tx_errors: AtomicU64,
}

/// A copy of [`LinkIoCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkIoSnapshot {
    /// Frames read from the TAP that could not be used (a virtio-net header asking for
    /// something vxtap does not do, a checksum it cannot finish, a superframe it cannot cut).
    pub tap_rx_errors: u64,
    /// Frames written to the TAP.
    pub tap_tx_frames: u64,
    /// Bytes of those.
    pub tap_tx_bytes: u64,
    /// TAP writes that failed for another reason than a full queue (e.g. `EIO` while the
    /// TAP is down, `EINVAL` for a header the kernel rejects).
    pub tap_tx_errors: u64,
    /// TAP writes refused because the queue was full (`EAGAIN`/`ENOBUFS`); the frame is lost.
    pub tap_tx_queue_full: u64,
    /// Datagrams sent to VTEPs.
    pub udp_tx_datagrams: u64,
    /// Their UDP payload bytes.
    pub udp_tx_bytes: u64,
    /// Datagrams not sent: refused by the kernel (`sendmmsg`/`sendmsg` errors other than the
    /// GSO refusals counted as `udp_gso_refused`, whose segments are sent again), left over
    /// when the socket buffer was full, or superframes that could not be cut.
    pub udp_tx_errors: u64,
}

impl LinkIoCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> LinkIoSnapshot {
        LinkIoSnapshot {
            tap_rx_errors: self.tap_rx_errors.load(Relaxed),
            tap_tx_frames: self.tap_tx_frames.load(Relaxed),
            tap_tx_bytes: self.tap_tx_bytes.load(Relaxed),
            tap_tx_errors: self.tap_tx_errors.load(Relaxed),
            tap_tx_queue_full: self.tap_tx_queue_full.load(Relaxed),
            udp_tx_datagrams: self.udp_tx_datagrams.load(Relaxed),
            udp_tx_bytes: self.udp_tx_bytes.load(Relaxed),
            udp_tx_errors: self.udp_tx_errors.load(Relaxed),
        }
    }
}

/// What the I/O did that belongs to no link.
#[derive(Debug, Default)]
pub struct GlobalIoCounters {
    pub(crate) udp_rx_datagrams: AtomicU64,
    pub(crate) udp_rx_oversize: AtomicU64,
    pub(crate) udp_rx_errors: AtomicU64,
    pub(crate) udp_rx_no_link: AtomicU64,
    pub(crate) udp_rx_overflows: AtomicU64,
    pub(crate) udp_gso_refused: AtomicU64,
    pub(crate) udp_gso_sends: AtomicU64,
}

impl GlobalIoCounters {
    /// Datagrams received on the underlay port.
    pub fn udp_rx_datagrams(&self) -> u64 {
        self.udp_rx_datagrams.load(Relaxed)
    }

    /// Datagrams larger than the receive buffers, dropped.
    pub fn udp_rx_oversize(&self) -> u64 {
        self.udp_rx_oversize.load(Relaxed)
    }

    /// Receive calls that failed with something other than `WouldBlock`.
    pub fn udp_rx_errors(&self) -> u64 {
        self.udp_rx_errors.load(Relaxed)
    }

    /// Frames decapsulated for a network whose TAP has no queue on that worker (a link
    /// being added or removed), dropped.
    pub fn udp_rx_no_link(&self) -> u64 {
        self.udp_rx_no_link.load(Relaxed)
    }

    /// Datagrams the underlay sockets dropped before vxtap read them, mostly for a full
    /// receive buffer (`SO_RXQ_OVFL`); seen with the next datagram that arrives after them.
    pub fn udp_rx_overflows(&self) -> u64 {
        self.udp_rx_overflows.load(Relaxed)
    }

    /// `UDP_SEGMENT` sends the kernel refused, whose segments then went out with plain
    /// `sendmmsg`: EIO/EINVAL (no UDP GSO: that socket stops trying) or EMSGSIZE (segments
    /// over the path MTU to that VTEP).
    pub fn udp_gso_refused(&self) -> u64 {
        self.udp_gso_refused.load(Relaxed)
    }

    /// Sends that carried a `UDP_SEGMENT` control message, accepted or refused. Stays 0
    /// when the start-up probe found no UDP GSO.
    pub fn udp_gso_sends(&self) -> u64 {
        self.udp_gso_sends.load(Relaxed)
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Relaxed);
    }
}

//! The underlay side: a non-blocking IPv4 UDP socket and batched I/O over it.
//!
//! - [`UdpSocket`]: bound once, non-blocking, close-on-exec, with 4 MiB socket buffers
//!   requested (the kernel grants up to `net.core.{r,w}mem_max`), `SO_REUSEPORT` on request
//!   and UDP GRO on request. Which UDP offloads the kernel has is probed when the socket is
//!   made and kept with it ([`UdpOffloads`], like quinn-udp's `max_gso_segments`): a kernel
//!   before 4.18 silently ignores a `UDP_SEGMENT` control message and sends the whole train
//!   as one IP-fragmented datagram, so GSO is used only where the probe says the kernel
//!   knows it, never learnt from a refusal.
//! - [`RecvBatch`]: up to `count` datagrams per `recvmmsg`, into buffers and header scratch
//!   allocated once; with GRO on, one slot may hold several datagrams of `segment_size`
//!   bytes coalesced by the kernel.
//! - [`SendBatch`]: up to `capacity` datagrams of up to three parts each (say an outer
//!   header, a VXLAN header and a frame, sent without copying), each optionally a UDP GSO
//!   super-datagram (`UDP_SEGMENT`), per `sendmmsg`.
//!
//! Soundness of sending without copying: `SendBatch<'a>` holds `&'a [u8]` parts (as iovecs),
//! so the borrow checker keeps every queued byte alive and unchanged until the batch is
//! sent, cleared or dropped. [`SendBatch::recycle`] turns an empty batch into one for
//! another lifetime without allocating, so a worker can keep one batch for its whole life.
//!
//! This module never retries a datagram the kernel refused, never blocks, and never builds
//! or parses packets.

use super::{sys, IoError};
use crate::segment::Segments;
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use std::io;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Most segments one `UDP_SEGMENT` send carries: the kernel's `UDP_MAX_SEGMENTS`, 64 on
/// older kernels and 128 on newer ones.
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most UDP payload bytes one send may carry over IPv4 (65535 - 20 - 8).
pub const GSO_MAX_BYTES: usize = 65_507;

/// The socket buffer size `bind` asks for, in bytes.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// The most parts one datagram in a [`SendBatch`] may have.
pub const MAX_PARTS: usize = sys::MAX_PARTS;

/// The UDP offloads a socket runs with, as probed from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpOffloads {
    /// The kernel knows `UDP_SEGMENT` (Linux 4.18+): GSO sends may be used. Probed at
    /// [`UdpSocket::bind`] with `getsockopt(SOL_UDP, UDP_SEGMENT)`, which older kernels
    /// refuse with `ENOPROTOOPT`.
    pub gso: bool,
    /// `UDP_GRO` is on (Linux 5.0+): received slots may hold coalesced trains. Set by
    /// [`UdpSocket::enable_gro`].
    pub gro: bool,
}

impl UdpOffloads {
    /// Both on.
    pub const ALL: UdpOffloads = UdpOffloads {
        gso: true,
        gro: true,
    };

    /// What both `self` and `other` have (for a set of sockets: what all of them have).
    pub fn and(self, other: UdpOffloads) -> UdpOffloads {
        UdpOffloads {
            gso: self.gso && other.gso,
            gro: self.gro && other.gro,
        }
    }
}

/// A bound, non-blocking IPv4 UDP socket.
#[derive(Debug)]
pub struct UdpSocket {
    socket: std::net::UdpSocket,
    local: SocketAddrV4,
    offloads: UdpOffloads,
    /// Most segments one `UDP_SEGMENT` send may carry; 0 while GSO is off (not probed, or
    /// turned off after the kernel refused it).
    gso_segments: AtomicUsize,
    /// The socket's drop count (SO_RXQ_OVFL) as last reported, to count only what is new.
    drops_seen: AtomicU32,
}

impl UdpSocket {
    /// Creates a non-blocking socket bound to `addr` (port 0 picks one), with
    /// `SO_REUSEPORT` if `reuse_port`, and asks for [`SOCKET_BUFFER_BYTES`] of receive and
    /// send buffer (the kernel may grant less; see [`UdpSocket::buffer_sizes`]).
    ///
    /// The socket belongs to the network namespace of the calling thread; create it inside
    /// [`super::netns::run_in`] to put it elsewhere.
    pub fn bind(addr: SocketAddrV4, reuse_port: bool) -> Result<UdpSocket, IoError> {
        // socket2 adds SOCK_CLOEXEC.
        let socket = Socket::new(Domain::IPV4, Type::DGRAM.nonblocking(), Some(Protocol::UDP))
            .map_err(|source| IoError::Socket {
                purpose: "a UDP",
                source,
            })?;
        let option_error = |option: &'static str| {
            move |source| IoError::SocketOption {
                option,
                addr,
                source,
            }
        };
        if reuse_port {
            socket
                .set_reuse_port(true)
                .map_err(option_error("SO_REUSEPORT"))?;
        }
        socket
            .set_recv_buffer_size(SOCKET_BUFFER_BYTES)
            .map_err(option_error("SO_RCVBUF"))?;
        socket
            .set_send_buffer_size(SOCKET_BUFFER_BYTES)
            .map_err(option_error("SO_SNDBUF"))?;
        // Every datagram then tells the socket's running drop count (a full receive buffer).
        sys::set_socket_option_int(socket.as_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
            .map_err(option_error("SO_RXQ_OVFL"))?;
        socket
            .bind(&SockAddr::from(addr))
            .map_err(|source| IoError::Bind { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(option_error("getsockname"))?
            .as_socket_ipv4()
            .ok_or_else(|| {
                option_error("getsockname")(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the kernel reported a non-IPv4 local address",
                ))
            })?;
        let gso = probe_gso(socket.as_fd());
        Ok(UdpSocket {
            socket: socket.into(),
            local,
            offloads: UdpOffloads { gso, gro: false },
            gso_segments: AtomicUsize::new(if gso { GSO_MAX_SEGMENTS } else { 0 }),
            drops_seen: AtomicU32::new(0),
        })
    }

    /// The UDP offloads this socket runs with: GSO as probed at `bind`, GRO once
    /// [`enable_gro`](Self::enable_gro) turned it on.
    pub fn offloads(&self) -> UdpOffloads {
        self.offloads
    }

    /// Takes the socket's running drop count from a received datagram and returns how many
    /// drops are new since the last count seen. A count older than the last one seen (from
    /// another thread's batch) adds nothing.
    fn note_drops(&self, total: u32) -> u32 {
        let mut new = 0;
        let _ = self
            .drops_seen
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
                new = drops_since(seen, total);
                (new != 0).then_some(total)
            });
        new
    }

    /// The address the socket is bound to (with the port the kernel picked, if any).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The receive and send buffer sizes the kernel granted, as it reports them (Linux
    /// doubles the requested value for bookkeeping, then caps it at `{r,w}mem_max * 2`).
    pub fn buffer_sizes(&self) -> Result<(usize, usize), IoError> {
        let socket = SockRef::from(&self.socket);
        let option_error = |option: &'static str| {
            move |source| IoError::SocketOption {
                option,
                addr: self.local,
                source,
            }
        };
        Ok((
            socket
                .recv_buffer_size()
                .map_err(option_error("SO_RCVBUF"))?,
            socket
                .send_buffer_size()
                .map_err(option_error("SO_SNDBUF"))?,
        ))
    }

    /// Turns on UDP GRO: the kernel may then hand several datagrams of one flow to one
    /// [`RecvBatch`] slot, each `segment_size` bytes but the last. `Ok(false)` if the kernel
    /// does not know the option (before Linux 5.0). The result is kept in
    /// [`offloads`](Self::offloads).
    pub fn enable_gro(&mut self) -> Result<bool, IoError> {
        match sys::set_socket_option_int(self.socket.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1) {
            Ok(()) => {
                self.offloads.gro = true;
                Ok(true)
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(false),
            Err(source) => Err(IoError::SocketOption {
                option: "UDP_GRO",
                addr: self.local,
                source,
            }),
        }
    }

    /// Sends the concatenation of `parts` to `dst` with one `sendmsg`, without copying:
    /// from `source` if given (IP_PKTINFO), and with `gso_size`, cut by the kernel into
    /// datagrams of `gso_size` bytes, the last possibly shorter (UDP_SEGMENT), so a whole
    /// TSO superframe's segments leave in one call. The kernel refuses a GSO send it cannot
    /// do with `EIO` or `EINVAL`; the caller then sends the segments one by one.
    ///
    /// A `gso_size` on a socket whose probe found no UDP GSO is refused here, before any
    /// syscall, with [`io::ErrorKind::Unsupported`]: an old kernel would not refuse it but
    /// send the train as one fragmented datagram.
    pub fn send_segments(
        &self,
        dst: SocketAddrV4,
        source: Option<Ipv4Addr>,
        parts: &[std::io::IoSlice<'_>],
        gso_size: Option<u16>,
    ) -> io::Result<usize> {
        if gso_size.is_some() && !self.offloads.gso {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel has no UDP GSO (UDP_SEGMENT)",
            ));
        }
        sys::send_to(self.as_fd(), dst, source, parts, gso_size)
    }

    /// Most segments one `UDP_SEGMENT` send may carry now; 0 when GSO is off.
    pub fn max_gso_segments(&self) -> usize {
        self.gso_segments.load(Ordering::Relaxed)
    }

    /// Sends a superframe's `segments` (payloads from `frame`) to `dst`: as few
    /// `UDP_SEGMENT` trains as the kernel's limits allow ([`GSO_MAX_SEGMENTS`],
    /// [`GSO_MAX_BYTES`]) or, without GSO, as plain datagrams through `plain` (one
    /// `sendmmsg` per batchful). A train the kernel refuses goes out plainly, so nothing is
    /// lost to a refusal: `EIO` or `EINVAL` mean the kernel cannot do UDP GSO at all and turn
    /// it off for this socket from then on; `EMSGSIZE` means segments larger than the path MTU
    /// to this VTEP, which does not hold for others, so GSO stays on.
    pub fn send_train(
        &self,
        dst: SocketAddrV4,
        source: Option<Ipv4Addr>,
        frame: &[u8],
        segments: Segments<'_>,
        plain: &mut SendBatch<'static>,
    ) -> TrainOutcome {
        let mut outcome = TrainOutcome::default();
        let mut rest = segments;
        let max = self.max_gso_segments();
        if max > 1 {
            let per_send = (GSO_MAX_BYTES / rest.gso_size().max(1)).clamp(1, max);
            let mut iov = [IoSlice::new(&[]); 2 * GSO_MAX_SEGMENTS];
            while !rest.is_empty() {
                let (train, after) = rest.split_at(per_send.min(GSO_MAX_SEGMENTS));
                let mut parts = 0;
                for segment in train.iter() {
                    let Some(payload) = frame.get(segment.payload) else {
                        break;
                    };
                    iov[parts] = IoSlice::new(segment.header);
                    iov[parts + 1] = IoSlice::new(payload);
                    parts += 2;
                }
                let gso_size =
                    (train.len() > 1).then(|| u16::try_from(train.gso_size()).unwrap_or(u16::MAX));
                if gso_size.is_some() {
                    outcome.gso_sends += 1;
                }
                match sys::send_to(self.as_fd(), dst, source, &iov[..parts], gso_size) {
                    Ok(bytes) => {
                        outcome.sent += train.len();
                        outcome.bytes += bytes;
                    }
                    Err(e)
                        if gso_size.is_some()
                            && matches!(
                                e.raw_os_error(),
                                Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
                            ) =>
                    {
                        outcome.gso_refused += 1;
                        if e.raw_os_error() != Some(libc::EMSGSIZE)
                            && self.gso_segments.swap(0, Ordering::Relaxed) != 0
                        {
                            tracing::warn!(socket = %self.local, error = %e, "the kernel refused UDP GSO; this socket sends segments with plain sendmmsg from now on");
                        }
                        break;
                    }
                    Err(_) => outcome.failed += train.len(),
                }
                rest = after;
            }
            if rest.is_empty() {
                return outcome;
            }
        }
        let mut batch = std::mem::replace(plain, SendBatch::new(0)).recycle();
        if batch.capacity() == 0 {
            batch = SendBatch::new(GSO_MAX_SEGMENTS);
        }
        for segment in rest.iter() {
            let Some(payload) = frame.get(segment.payload) else {
                outcome.failed += 1;
                continue;
            };
            let parts = [segment.header, payload];
            let pushed = match source {
                Some(source) => batch.push_from(source, dst, &parts, None),
                None => batch.push(dst, &parts, None),
            };
            if !pushed {
                outcome.flush(&mut batch, self);
                // An empty batch always has room.
                let _ = match source {
                    Some(source) => batch.push_from(source, dst, &parts, None),
                    None => batch.push(dst, &parts, None),
                };
            }
        }
        outcome.flush(&mut batch, self);
        *plain = batch.recycle();
        outcome
    }

    /// Sends one datagram (for the odd packet outside a batch).
    pub fn send_to(&self, buf: &[u8], dst: SocketAddrV4) -> io::Result<usize> {
        sys::retry_eintr(|| self.socket.send_to(buf, dst))
    }

    /// Receives one datagram (for the odd packet outside a batch).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        let (len, source) = sys::retry_eintr(|| self.socket.recv_from(buf))?;
        match source {
            SocketAddr::V4(source) => Ok((len, source)),
            SocketAddr::V6(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an IPv4 socket reported an IPv6 source",
            )),
        }
    }
}

/// Whether the kernel knows `UDP_SEGMENT`: `getsockopt` succeeds from Linux 4.18 on and
/// fails with `ENOPROTOOPT` before. Any other refusal (a sandbox answering `EPERM`, say) also
/// means "off", logged, rather than a daemon that cannot start: only a success turns GSO on.
fn probe_gso(socket: BorrowedFd<'_>) -> bool {
    match sys::socket_option_int(socket, libc::SOL_UDP, libc::UDP_SEGMENT) {
        Ok(_) => true,
        Err(err) if err.raw_os_error() == Some(libc::ENOPROTOOPT) => false,
        Err(err) => {
            tracing::warn!(error = %err, "probing UDP_SEGMENT failed; UDP GSO stays off");
            false
        }
    }
}

/// How many drops a running `u32` count of `total` adds to `seen`, across wrap-around; 0
/// when `total` is behind `seen` (more than half the range ahead reads as behind).
fn drops_since(seen: u32, total: u32) -> u32 {
    let new = total.wrapping_sub(seen);
    if new > u32::MAX / 2 {
        0
    } else {
        new
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// What sending one superframe, or one batch, did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrainOutcome {
    /// Datagrams (segments) the kernel accepted.
    pub sent: usize,
    /// Datagrams refused, or dropped because the socket buffer was full.
    pub failed: usize,
    /// Bytes the kernel took.
    pub bytes: usize,
    /// Sends that carried a `UDP_SEGMENT` control message.
    pub gso_sends: usize,
    /// Of those, the ones the kernel refused (their segments went out plainly).
    pub gso_refused: usize,
}

impl TrainOutcome {
    /// Sends what `batch` holds through `socket` and leaves it empty: UDP does not queue for
    /// congestion, so what the socket cannot take now is dropped and counted, like a full
    /// NIC queue.
    pub fn flush(&mut self, batch: &mut SendBatch<'_>, socket: &UdpSocket) {
        let offered = batch.len();
        match batch.send(socket) {
            Ok(outcome) => {
                self.sent += outcome.sent;
                self.bytes += outcome.sent_bytes;
                self.failed += offered - outcome.sent;
            }
            Err(_) => self.failed += offered,
        }
        batch.clear();
    }
}

/// Buffers and scratch for receiving up to `count` datagrams per call, allocated once.
pub struct RecvBatch {
    buffers: Vec<u8>,
    buf_size: usize,
    scratch: sys::RecvScratch,
    received: Vec<sys::Received>,
    len: usize,
    overflows: u32,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.received.len())
            .field("buf_size", &self.buf_size)
            .field("len", &self.len)
            .finish()
    }
}

impl RecvBatch {
    /// Room for `count` datagrams of up to `buf_size` bytes each. With GRO on, `buf_size`
    /// should be 65535, or coalesced datagrams arrive truncated.
    ///
    /// # Panics
    ///
    /// If `count` or `buf_size` is zero.
    pub fn new(count: usize, buf_size: usize) -> RecvBatch {
        assert!(
            count > 0 && buf_size > 0,
            "an empty RecvBatch receives nothing"
        );
        RecvBatch {
            buffers: vec![0; count * buf_size],
            buf_size,
            scratch: sys::RecvScratch::new(count),
            received: vec![sys::Received::EMPTY; count],
            len: 0,
            overflows: 0,
        }
    }

    /// Receives what is waiting, up to `capacity()` datagrams, with one `recvmmsg`, and
    /// returns how many. `WouldBlock` if nothing is. Allocates nothing.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.len = 0;
        self.overflows = 0;
        self.len = self.scratch.recv(
            socket.as_fd(),
            &mut self.buffers,
            self.buf_size,
            &mut self.received,
        )?;
        // Datagrams come in queue order, so the last count is the newest.
        if let Some(total) = self.received[..self.len].iter().rev().find_map(|r| r.drops) {
            self.overflows = socket.note_drops(total);
        }
        Ok(self.len)
    }

    /// Datagrams the socket dropped before the last `recv` that no earlier `recv` reported,
    /// mostly for a full receive buffer (SO_RXQ_OVFL). The kernel tells the count with each
    /// datagram it queues, so drops show up with the next datagram queued after them.
    pub fn overflows(&self) -> u32 {
        self.overflows
    }

    /// How many datagrams the last `recv` received.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last `recv` received nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many datagrams one `recv` can receive.
    pub fn capacity(&self) -> usize {
        self.received.len()
    }

    /// The size of each datagram buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    fn slot(&self, i: usize) -> &sys::Received {
        assert!(i < self.len, "datagram {i} of {}", self.len);
        &self.received[i]
    }

    /// The bytes of datagram `i` (only the first `buf_size()` if it was truncated).
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn payload(&self, i: usize) -> &[u8] {
        let len = self.slot(i).len;
        &self.buffers[i * self.buf_size..][..len]
    }

    /// The bytes of datagram `i`, mutably (to decapsulate in place).
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn payload_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.slot(i).len;
        &mut self.buffers[i * self.buf_size..][..len]
    }

    /// The sender of datagram `i`.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn source(&self, i: usize) -> SocketAddrV4 {
        self.slot(i).source
    }

    /// With GRO on: the size of each of the datagrams the kernel coalesced into slot `i`
    /// (all but the last are exactly this long), or `None` if it holds one datagram.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn segment_size(&self, i: usize) -> Option<u16> {
        self.slot(i).segment_size
    }

    /// Whether datagram `i` was longer than `buf_size()` and lost its tail (`MSG_TRUNC`).
    /// A truncated datagram must be dropped, not parsed.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn truncated(&self, i: usize) -> bool {
        self.slot(i).truncated
    }
}

impl crate::pipeline::Datagrams for RecvBatch {
    fn count(&self) -> usize {
        self.len
    }
    fn payload(&self, i: usize) -> &[u8] {
        RecvBatch::payload(self, i)
    }
    fn payload_mut(&mut self, i: usize) -> &mut [u8] {
        RecvBatch::payload_mut(self, i)
    }
    fn source(&self, i: usize) -> SocketAddrV4 {
        RecvBatch::source(self, i)
    }
    fn segment_size(&self, i: usize) -> Option<u16> {
        RecvBatch::segment_size(self, i)
    }
    fn truncated(&self, i: usize) -> bool {
        RecvBatch::truncated(self, i)
    }
}

/// What one [`SendBatch::send`] did.
#[derive(Debug, Default)]
pub struct SendOutcome {
    /// Datagrams the kernel accepted (a GSO super-datagram counts once).
    pub sent: usize,
    /// Their bytes, as the kernel counted them.
    pub sent_bytes: usize,
    /// Datagrams the kernel refused and that were dropped from the batch (EMSGSIZE,
    /// ENETUNREACH, EINVAL for a bad GSO size, ENOBUFS, ...).
    pub failed: usize,
    /// The error of the last refused datagram.
    pub last_error: Option<io::Error>,
}

/// Datagrams queued for one `sendmmsg`, each up to [`MAX_PARTS`] borrowed parts sent
/// without copying. All scratch is allocated by `new`; `push` and `send` allocate nothing.
pub struct SendBatch<'a> {
    queue: sys::SendQueue<'a>,
}

impl std::fmt::Debug for SendBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.queue.capacity())
            .field("len", &self.queue.len())
            .finish()
    }
}

impl<'a> SendBatch<'a> {
    /// An empty batch for up to `capacity` datagrams.
    pub fn new(capacity: usize) -> SendBatch<'a> {
        SendBatch {
            queue: sys::SendQueue::new(capacity),
        }
    }

    /// How many datagrams fit.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// How many datagrams are queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.len() == 0
    }

    /// Forgets every queued datagram.
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// This batch, emptied, for parts of another lifetime. Allocates nothing.
    pub fn recycle<'b>(self) -> SendBatch<'b> {
        SendBatch {
            queue: self.queue.recycle(),
        }
    }

    /// Queues one datagram to `dst`, the concatenation of `parts`. With `gso_size`, the
    /// kernel (or the NIC) cuts it into datagrams of `gso_size` bytes (the last may be
    /// shorter) via `UDP_SEGMENT`. Returns `false`, queuing nothing, if the batch is full.
    ///
    /// # Panics
    ///
    /// If `parts` has more than [`MAX_PARTS`] slices.
    pub fn push(&mut self, dst: SocketAddrV4, parts: &[&'a [u8]], gso_size: Option<u16>) -> bool {
        self.queue.push(None, dst, parts, gso_size)
    }

    /// Like [`push`](Self::push), but sent from the local address `source` (IP_PKTINFO)
    /// instead of the one the routing table picks; the kernel refuses (`EINVAL`) an
    /// address that is not local.
    pub fn push_from(
        &mut self,
        source: Ipv4Addr,
        dst: SocketAddrV4,
        parts: &[&'a [u8]],
        gso_size: Option<u16>,
    ) -> bool {
        self.queue.push(Some(source), dst, parts, gso_size)
    }

    /// Sends everything queued, with as many `sendmmsg` calls as it takes.
    ///
    /// A datagram the kernel refuses is dropped and counted in `failed`; the rest still go.
    /// If the socket buffer fills, the unsent datagrams stay queued for the next writable
    /// event, and `send` returns what it did so far, or `WouldBlock` if it did nothing.
    /// Errors that concern the socket rather than a datagram (`EBADF`, `ENOTSOCK`, `EFAULT`)
    /// are returned if nothing was done, and otherwise left queued for the next call.
    pub fn send(&mut self, socket: &UdpSocket) -> io::Result<SendOutcome> {
        let mut outcome = SendOutcome::default();
        while !self.is_empty() {
            let nothing_done = outcome.sent == 0 && outcome.failed == 0;
            match self.queue.send(socket.as_fd()) {
                Ok(0) => break, // nothing taken and no error: wait for writability
                Ok(sent) => {
                    outcome.sent += sent;
                    outcome.sent_bytes += self.queue.sent_bytes(sent);
                    self.queue.advance(sent);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if nothing_done {
                        return Err(err);
                    }
                    break;
                }
                Err(err) if is_socket_error(&err) => {
                    if nothing_done {
                        return Err(err);
                    }
                    break;
                }
                Err(err) => {
                    // sendmmsg stops at the first datagram that fails and reports its error
                    // only when it is the first of the call, as here: drop it, go on.
                    outcome.failed += 1;
                    outcome.last_error = Some(err);
                    self.queue.advance(1);
                }
            }
        }
        Ok(outcome)
    }
}

/// Whether an error concerns the socket (and would fail every datagram) rather than one.
fn is_socket_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::netns;
    use crate::io::testns::TestNetns;
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    const LOCALHOST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);

    /// Binds a socket on 127.0.0.1 inside the test namespace.
    fn bind_in(ns: &TestNetns) -> UdpSocket {
        netns::run_in(ns.path(), || UdpSocket::bind(LOCALHOST, false))
            .unwrap()
            .unwrap()
    }

    /// Receives until `want` datagrams arrived (or panics after 10 seconds), and returns
    /// each with its source, segment size and truncation flag.
    fn recv_n(
        batch: &mut RecvBatch,
        socket: &UdpSocket,
        want: usize,
    ) -> Vec<(Vec<u8>, SocketAddrV4, Option<u16>, bool)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < want {
            match batch.recv(socket) {
                Ok(n) => {
                    for i in 0..n {
                        got.push((
                            batch.payload(i).to_vec(),
                            batch.source(i),
                            batch.segment_size(i),
                            batch.truncated(i),
                        ));
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "got {} of {want}", got.len());
                    sys::wait_readable(socket.as_fd(), 100).unwrap();
                }
                Err(err) => panic!("recvmmsg: {err}"),
            }
        }
        got
    }

    fn assert_nothing_more(batch: &mut RecvBatch, socket: &UdpSocket) {
        assert_eq!(
            batch.recv(socket).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_batch_of_64_two_part_datagrams_round_trips() {
        let ns = TestNetns::new();
        let (sender, receiver) = (bind_in(&ns), bind_in(&ns));
        assert_eq!(sender.local_addr().ip(), &Ipv4Addr::LOCALHOST);
        assert_ne!(sender.local_addr().port(), 0);

        let headers: Vec<[u8; 8]> = (0..64u8).map(|i| [i; 8]).collect();
        let bodies: Vec<Vec<u8>> = (0..64usize)
            .map(|i| vec![!(i as u8); 1 + i * 7 % 500])
            .collect();
        let mut batch = SendBatch::new(64);
        for (header, body) in headers.iter().zip(&bodies) {
            assert!(batch.push(receiver.local_addr(), &[header, body], None));
        }
        assert!(!batch.push(receiver.local_addr(), &[&headers[0]], None));
        assert_eq!(batch.len(), 64);
        let outcome = batch.send(&sender).unwrap();
        assert_eq!((outcome.sent, outcome.failed), (64, 0), "{outcome:?}");
        assert!(batch.is_empty());

        let mut recv = RecvBatch::new(64, 2048);
        let got = recv_n(&mut recv, &receiver, 64);
        let mut seen = [false; 64];
        for (payload, source, segment_size, truncated) in got {
            let i = usize::from(payload[0]);
            assert_eq!(&payload[..8], &headers[i]);
            assert_eq!(&payload[8..], &bodies[i][..]);
            assert_eq!(source, sender.local_addr());
            assert_eq!((segment_size, truncated), (None, false));
            assert!(!std::mem::replace(&mut seen[i], true), "duplicate {i}");
        }
        assert_nothing_more(&mut recv, &receiver);

        // The same allocations serve new borrows.
        let again = [42u8; 3];
        let mut batch = batch.recycle();
        assert!(batch.push(
            receiver.local_addr(),
            &[&again[..1], &again[1..], &[]],
            None
        ));
        assert_eq!(batch.send(&sender).unwrap().sent, 1);
        let got = recv_n(&mut recv, &receiver, 1);
        assert_eq!(got[0].0, again);
    }

    #[test]
    fn refused_datagrams_do_not_lose_the_rest() {
        let ns = TestNetns::new();
        let (sender, receiver) = (bind_in(&ns), bind_in(&ns));
        let to = receiver.local_addr();
        // Only loopback exists in the namespace, so 198.18.0.1 has no route.
        let unroutable = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 9);
        let big = vec![0u8; 30_000];
        let gso_body = [5u8; 1000];
        let ok: Vec<[u8; 4]> = (0..4u8).map(|i| [i; 4]).collect();

        let mut batch = SendBatch::new(8);
        assert!(batch.push(to, &[&ok[0]], None));
        assert!(batch.push(to, &[&big, &big, &big], None)); // 90000 bytes: EMSGSIZE
        assert!(batch.push(to, &[&ok[1]], None));
        assert!(batch.push(unroutable, &[&ok[1]], None)); // ENETUNREACH
        assert!(batch.push(to, &[&ok[2]], None));
        assert!(batch.push(to, &[&gso_body], Some(1))); // 1000 segments: EINVAL
        assert!(batch.push(to, &[&ok[3]], None));
        let outcome = batch.send(&sender).unwrap();
        assert_eq!((outcome.sent, outcome.failed), (4, 3), "{outcome:?}");
        assert_eq!(
            outcome.last_error.and_then(|err| err.raw_os_error()),
            Some(libc::EINVAL)
        );
        assert!(batch.is_empty());

        let mut recv = RecvBatch::new(8, 2048);
        let got: Vec<Vec<u8>> = recv_n(&mut recv, &receiver, 4)
            .into_iter()
            .map(|(payload, ..)| payload)
            .collect();
        assert_eq!(got, ok.iter().map(|ok| ok.to_vec()).collect::<Vec<_>>());
        assert_nothing_more(&mut recv, &receiver);

        // Each refusal on its own, to name them.
        for (dst, parts, gso, errno) in [
            (to, vec![&big[..], &big, &big], None, libc::EMSGSIZE),
            (unroutable, vec![&ok[0][..]], None, libc::ENETUNREACH),
            (to, vec![&gso_body[..]], Some(1), libc::EINVAL),
        ] {
            let mut batch = SendBatch::new(1);
            assert!(batch.push(dst, &parts, gso));
            let outcome = batch.send(&sender).unwrap();
            assert_eq!((outcome.sent, outcome.failed), (0, 1));
            assert_eq!(
                outcome.last_error.and_then(|err| err.raw_os_error()),
                Some(errno)
            );
        }
    }

    #[test]
    fn a_gso_send_arrives_as_segments_without_gro() {
        let ns = TestNetns::new();
        let (sender, receiver) = (bind_in(&ns), bind_in(&ns));
        let payload: Vec<u8> = (0..3000usize).map(|i| (i / 1000) as u8).collect();
        let mut batch = SendBatch::new(1);
        assert!(batch.push(receiver.local_addr(), &[&payload], Some(1000)));
        assert_eq!(batch.send(&sender).unwrap().sent, 1);

        let mut recv = RecvBatch::new(8, 2048);
        let got = recv_n(&mut recv, &receiver, 3);
        for (segment, (payload, source, segment_size, truncated)) in got.into_iter().enumerate() {
            assert_eq!(payload, vec![segment as u8; 1000]);
            assert_eq!(source, sender.local_addr());
            assert_eq!((segment_size, truncated), (None, false));
        }
        assert_nothing_more(&mut recv, &receiver);
    }

    #[test]
    fn send_segments_cuts_many_parts_into_gso_datagrams() {
        let ns = TestNetns::new();
        let (sender, receiver) = (bind_in(&ns), bind_in(&ns));
        // 40 segments of an 8-byte header plus a 992-byte payload slice, the last one short,
        // as a TSO superframe leaves: 80 iovecs, one sendmsg.
        let headers: Vec<[u8; 8]> = (0..40u8).map(|i| [i; 8]).collect();
        let payload: Vec<u8> = (0..40 * 992 - 500).map(|i| (i / 992) as u8).collect();
        let mut parts = Vec::new();
        for (i, chunk) in payload.chunks(992).enumerate() {
            parts.push(std::io::IoSlice::new(&headers[i]));
            parts.push(std::io::IoSlice::new(chunk));
        }
        let source = Ipv4Addr::new(127, 0, 0, 3);
        let sent = sender
            .send_segments(receiver.local_addr(), Some(source), &parts, Some(1000))
            .unwrap();
        assert_eq!(sent, 40 * 8 + payload.len());
        let mut recv = RecvBatch::new(64, 2048);
        let got = recv_n(&mut recv, &receiver, 40);
        for (i, (datagram, from, _, _)) in got.iter().enumerate() {
            assert_eq!(
                &datagram[..8],
                &[i as u8; 8],
                "segment {i} starts with its header"
            );
            assert!(datagram[8..].iter().all(|&b| b == i as u8));
            assert_eq!(datagram.len(), if i == 39 { 8 + 492 } else { 1000 });
            assert_eq!(*from.ip(), source);
        }
        // Without GSO the same call sends one datagram.
        let one = [
            std::io::IoSlice::new(b"head"),
            std::io::IoSlice::new(b"tail"),
        ];
        assert_eq!(
            sender
                .send_segments(receiver.local_addr(), None, &one, None)
                .unwrap(),
            8
        );
        assert_eq!(recv_n(&mut recv, &receiver, 1)[0].0, b"headtail");
    }

    #[test]
    fn push_from_sets_the_source_address() {
        let ns = TestNetns::new();
        // Inside the test namespace all of 127.0.0.0/8 is local on lo; the sender is bound
        // to 127.0.0.1 but asks for 127.0.0.2 per datagram.
        let (sender, receiver) = (bind_in(&ns), bind_in(&ns));
        let other = Ipv4Addr::new(127, 0, 0, 2);
        let payload = [7u8; 3000];
        let mut batch = SendBatch::new(4);
        assert!(batch.push_from(other, receiver.local_addr(), &[&payload[..100]], None));
        // Not a local address: the kernel refuses this one datagram only.
        assert!(batch.push_from(
            Ipv4Addr::new(198, 51, 100, 1),
            receiver.local_addr(),
            &[&payload[..100]],
            None
        ));
        assert!(batch.push_from(other, receiver.local_addr(), &[&payload], Some(1000)));
        let outcome = batch.send(&sender).unwrap();
        assert_eq!((outcome.sent, outcome.failed), (2, 1));
        assert_eq!(outcome.sent_bytes, 3100);

        let mut recv = RecvBatch::new(8, 2048);
        let got = recv_n(&mut recv, &receiver, 4);
        for (payload, source, _, _) in &got {
            assert_eq!(*source.ip(), other, "sent from the asked-for address");
            assert_eq!(source.port(), sender.local_addr().port());
            assert!(payload.len() == 100 || payload.len() == 1000);
        }
        assert_nothing_more(&mut recv, &receiver);
    }

    #[test]
    fn a_gro_receiver_gets_one_coalesced_datagram() {
        let ns = TestNetns::new();
        let (sender, mut receiver) = (bind_in(&ns), bind_in(&ns));
        assert!(!receiver.offloads().gro, "GRO is off until asked for");
        let gro = receiver.enable_gro().unwrap();
        assert_eq!(receiver.offloads().gro, gro);
        eprintln!("UDP_GRO available: {gro}");
        let payload: Vec<u8> = (0..2500usize).map(|i| (i / 1000) as u8).collect();
        let mut batch = SendBatch::new(1);
        assert!(batch.push(
            receiver.local_addr(),
            &[&payload[..100], &payload[100..]],
            Some(1000)
        ));
        assert_eq!(batch.send(&sender).unwrap().sent, 1);

        let mut recv = RecvBatch::new(4, 65535);
        if gro {
            // Loopback hands the GSO datagram to a GRO socket whole.
            let got = recv_n(&mut recv, &receiver, 1);
            assert_eq!(got[0].0, payload);
            assert_eq!(got[0].2, Some(1000));
            assert!(!got[0].3);
        } else {
            let got = recv_n(&mut recv, &receiver, 3);
            assert_eq!(got[2].0.len(), 500);
        }
        assert_nothing_more(&mut recv, &receiver);
    }

    /// This kernel (6.x) has both offloads: the probe says so, and a socket whose probe
    /// found none refuses a GSO send before it reaches the kernel.
    #[test]
    fn probes_find_gso_and_gro_on_this_kernel() {
        let ns = TestNetns::new();
        let (mut sender, mut receiver) = (bind_in(&ns), bind_in(&ns));
        assert!(
            sender.offloads().gso,
            "UDP_SEGMENT is in every kernel since 4.18"
        );
        assert!(
            receiver.enable_gro().unwrap(),
            "UDP_GRO is in every kernel since 5.0"
        );
        assert_eq!(receiver.offloads(), UdpOffloads::ALL);
        assert_eq!(
            UdpOffloads::ALL.and(UdpOffloads::default()),
            UdpOffloads::default()
        );

        sender.offloads.gso = false;
        let parts = [std::io::IoSlice::new(&[0u8; 2000])];
        let err = sender
            .send_segments(receiver.local_addr(), None, &parts, Some(1000))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        let mut recv = RecvBatch::new(4, 65535);
        assert_nothing_more(&mut recv, &receiver);
        // Without a segment size the same socket still sends.
        assert_eq!(
            sender
                .send_segments(receiver.local_addr(), None, &parts, None)
                .unwrap(),
            2000
        );
    }

    #[test]
    #[should_panic(expected = "at most 3 parts")]
    fn more_than_three_parts_is_a_programming_error() {
        let part = [0u8; 1];
        let mut batch = SendBatch::new(1);
        batch.push(LOCALHOST, &[&part, &part, &part, &part], None);
    }

    #[test]
    fn truncated_datagrams_are_flagged() {
        let ns = TestNetns::new();
        let (sender, receiver) = (bind_in(&ns), bind_in(&ns));
        sender.send_to(&[1u8; 150], receiver.local_addr()).unwrap();
        sender.send_to(&[2u8; 50], receiver.local_addr()).unwrap();
        let mut recv = RecvBatch::new(4, 100);
        let got = recv_n(&mut recv, &receiver, 2);
        assert_eq!((got[0].0.len(), got[0].3), (100, true));
        assert_eq!((got[1].0.clone(), got[1].3), (vec![2u8; 50], false));
    }

    #[test]
    fn nothing_to_do_is_would_block_or_nothing() {
        let ns = TestNetns::new();
        let socket = bind_in(&ns);
        let mut recv = RecvBatch::new(4, 100);
        assert_nothing_more(&mut recv, &socket);
        assert!(recv.is_empty());
        let mut buf = [0u8; 16];
        assert_eq!(
            socket.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let outcome = SendBatch::new(4).send(&socket).unwrap();
        assert_eq!((outcome.sent, outcome.failed), (0, 0));
    }

    #[test]
    fn reuse_port_shares_a_port_only_when_asked() {
        let ns = TestNetns::new();
        let (first, second, third) = netns::run_in(ns.path(), || {
            let first = UdpSocket::bind(LOCALHOST, true).unwrap();
            let second = UdpSocket::bind(first.local_addr(), true);
            let third = UdpSocket::bind(first.local_addr(), false);
            (first, second, third)
        })
        .unwrap();
        assert_eq!(second.unwrap().local_addr(), first.local_addr());
        let err = third.unwrap_err();
        assert!(
            matches!(&err, IoError::Bind { addr, source } if *addr == first.local_addr() && source.kind() == io::ErrorKind::AddrInUse),
            "{err:?}"
        );
        let (recv, send) = first.buffer_sizes().unwrap();
        eprintln!("granted SO_RCVBUF {recv}, SO_SNDBUF {send}");
        assert!(recv > 0 && send > 0);
    }

    #[test]
    fn a_socket_made_in_a_namespace_stays_there() {
        let ns = TestNetns::new();
        let socket = bind_in(&ns);
        let listing = ns.exec(&["ss", "-uan"]);
        assert!(
            listing.contains(&socket.local_addr().to_string()),
            "{listing}"
        );
    }

    #[test]
    fn drop_counts_add_only_what_is_new_across_wrap_around() {
        assert_eq!(drops_since(0, 0), 0);
        assert_eq!(drops_since(0, 5), 5);
        assert_eq!(drops_since(5, 5), 0);
        assert_eq!(drops_since(u32::MAX - 1, 3), 5);
        assert_eq!(drops_since(u32::MAX, 0), 1);
        // An older count, from a batch another thread took first, adds nothing.
        assert_eq!(drops_since(10, 7), 0);
        assert_eq!(drops_since(2, u32::MAX), 0);

        let ns = TestNetns::new();
        let socket = bind_in(&ns);
        let mut total = 0u64;
        for count in [3, 3, 10, 0x7000_0000, 0xe000_0000, u32::MAX - 1, 1, 0, 4, 2] {
            total += u64::from(socket.note_drops(count));
        }
        // Every step forward counted once, across the wrap; the stale 0 and 2 add nothing.
        assert_eq!(total, (1u64 << 32) + 4);
    }

    #[test]
    fn receive_buffer_overflows_are_counted_exactly() {
        let ns = TestNetns::new();
        let (sender, receiver) = (bind_in(&ns), bind_in(&ns));
        // The smallest buffer the kernel grants: a few datagrams, the rest dropped.
        SockRef::from(&receiver.socket)
            .set_recv_buffer_size(1)
            .unwrap();
        const SENT: usize = 200;
        for i in 0..SENT {
            sender
                .send_to(&[i as u8; 200], receiver.local_addr())
                .unwrap();
        }
        let mut batch = RecvBatch::new(64, 2048);
        let (mut received, mut overflows) = (0, 0u64);
        // Drain what was queued, then one more datagram carries the count of all drops.
        loop {
            match batch.recv(&receiver) {
                Ok(n) => {
                    received += n;
                    overflows += u64::from(batch.overflows());
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("recvmmsg: {err}"),
            }
        }
        assert!(received < SENT, "nothing was dropped: SO_RCVBUF too large?");
        sender.send_to(b"last", receiver.local_addr()).unwrap();
        let last = recv_n(&mut batch, &receiver, 1);
        assert_eq!(last[0].0, b"last");
        overflows += u64::from(batch.overflows());
        eprintln!("received {received} of {SENT}, overflows {overflows}");
        assert_eq!(overflows, (SENT - received) as u64);
        // Reported once: nothing new on the next datagram.
        sender.send_to(b"again", receiver.local_addr()).unwrap();
        recv_n(&mut batch, &receiver, 1);
        assert_eq!(batch.overflows(), 0);
    }
}

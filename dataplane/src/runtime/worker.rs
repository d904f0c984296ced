//! One worker: an event loop over its UDP socket and its queue of every TAP. It reads a
//! batch, hands it to the pure pipeline (`crate::pipeline`), and writes what the pipeline
//! planned; the only decisions made here are which source to serve next.

use super::counters::{add, LinkIoCounters};
use super::{LinkOptions, RuntimeError, Shared};
use crate::io::{tap, RecvBatch, SendBatch, TapQueue, TrainOutcome, UdpSocket};
use crate::pipeline::{Datagram, Egress, Ingress, LinkInfo, TapFrames, MAX_RUN};
use crate::segment::SegmentHeaders;
use crate::wire::virtio_net::HEADER_LEN as VNET_LEN;
use crate::wire::Vni;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
const UDP: Token = Token(1);
const FIRST_TAP: usize = 2;

/// Largest frame a TAP queue hands over (64 KiB superframes once TSO is on).
const TAP_FRAME_MAX: usize = 65_550;
/// Largest UDP payload received.
const UDP_PAYLOAD_MAX: usize = 65_535;
/// Batches one source may take before the others get a turn.
const ROUNDS_PER_TURN: usize = 4;
/// All-zero virtio-net header: a complete frame, no offloads.
const PLAIN_FRAME: [u8; VNET_LEN] = [0; VNET_LEN];

/// A change the control plane asks a worker to make between batches.
pub(crate) enum Command {
    AddLink {
        vni: Vni,
        queue: TapQueue,
        counters: Arc<LinkIoCounters>,
        options: LinkOptions,
    },
    RemoveLink {
        vni: Vni,
        done: Sender<()>,
    },
    Stop,
}

struct Link {
    vni: Vni,
    queue: TapQueue,
    counters: Arc<LinkIoCounters>,
    /// Underlay source address (`local`), if not the routing table's choice.
    local: Option<Ipv4Addr>,
    /// The TAP's MTU.
    mtu: u32,
}

pub(crate) struct Worker {
    id: usize,
    shared: Arc<Shared>,
    poll: Poll,
    waker: Arc<mio::Waker>,
    commands: Receiver<Command>,
    socket: UdpSocket,
    /// Whether the receiving socket has UDP_GRO on, so a slot may hold a coalesced train.
    gro: bool,
    links: Vec<Option<Link>>,
    by_vni: HashMap<Vni, usize>,
    rx: RecvBatch,
    ingress: Ingress,
    frames: TapFrames,
    egress: Egress,
    /// Kept empty between batches; re-borrowed for each TAP batch's frames.
    send: SendBatch<'static>,
    /// For the segments of a superframe sent without GSO.
    plain: SendBatch<'static>,
    /// Header blocks of the segments of one superframe.
    segments: SegmentHeaders,
    ready: VecDeque<Token>,
    /// How long to keep polling after a batch that moved something (see
    /// `RuntimeConfig::busy_poll`).
    busy_poll: Duration,
}

/// TAP writes to one link not yet added to its shared counters.
#[derive(Default)]
struct WriteTally {
    slot: Option<usize>,
    frames: u64,
    bytes: u64,
}

impl WriteTally {
    /// Adds what was tallied to its link's counters and starts tallying for `slot`.
    fn switch_to(&mut self, slot: usize, links: &[Option<Link>]) {
        if self.slot != Some(slot) {
            self.flush(links);
            self.slot = Some(slot);
        }
    }

    /// Adds what was tallied to its link's counters.
    fn flush(&mut self, links: &[Option<Link>]) {
        if let Some(link) = self
            .slot
            .and_then(|s| links.get(s))
            .and_then(Option::as_ref)
        {
            add(&link.counters.tap_tx_frames, self.frames);
            add(&link.counters.tap_tx_bytes, self.bytes);
        }
        self.frames = 0;
        self.bytes = 0;
    }
}

/// Counts a failed TAP write under its reason: a full queue, or anything else.
fn count_tap_write_error(counters: &LinkIoCounters, e: &io::Error) {
    if tap::is_queue_full(e) {
        add(&counters.tap_tx_queue_full, 1);
    } else {
        add(&counters.tap_tx_errors, 1);
    }
}

/// Queues one datagram to `dst`, from `local` when the link has one.
fn push<'a>(
    batch: &mut SendBatch<'a>,
    local: Option<Ipv4Addr>,
    dst: std::net::SocketAddrV4,
    parts: &[&'a [u8]],
) -> bool {
    match local {
        Some(local) => batch.push_from(local, dst, parts, None),
        None => batch.push(dst, parts, None),
    }
}

enum Drained {
    /// Reached `WouldBlock`: wait for the next readiness event.
    Empty,
    /// A full batch was handled; there may be more.
    More,
}

impl Worker {
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        socket: UdpSocket,
        commands: Receiver<Command>,
        batch: usize,
        busy_poll: Duration,
    ) -> Result<Worker, RuntimeError> {
        let poll_err = |what| {
            move |source| RuntimeError::Poll {
                worker: id,
                what,
                source,
            }
        };
        let sockets = shared.senders.ports().len();
        let gro = socket.offloads().gro;
        let poll = Poll::new().map_err(poll_err("epoll_create"))?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(poll_err("eventfd"))?);
        poll.registry()
            .register(&mut SourceFd(&socket.as_raw_fd()), UDP, Interest::READABLE)
            .map_err(poll_err("register udp socket"))?;
        Ok(Worker {
            id,
            shared,
            poll,
            waker,
            commands,
            socket,
            gro,
            links: Vec::new(),
            by_vni: HashMap::new(),
            rx: RecvBatch::new(batch, UDP_PAYLOAD_MAX),
            ingress: Ingress::new(batch),
            frames: TapFrames::new(batch, TAP_FRAME_MAX),
            egress: Egress::new(batch, sockets),
            send: SendBatch::new(batch * 4),
            plain: SendBatch::new(crate::io::GSO_MAX_SEGMENTS),
            segments: SegmentHeaders::new(),
            ready: VecDeque::new(),
            busy_poll,
        })
    }

    pub(crate) fn waker(&self) -> Arc<mio::Waker> {
        Arc::clone(&self.waker)
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        // When the last readiness of a TAP or the socket was seen, while busy polling.
        let mut last_traffic: Option<Instant> = None;
        loop {
            // Block only when no source is known to have more waiting and the busy-poll
            // window after the last traffic (if any) has passed.
            let spinning = last_traffic.is_some_and(|t| t.elapsed() < self.busy_poll);
            let timeout = if self.ready.is_empty() && !spinning {
                None
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(worker = self.id, error = %e, "event loop failed; worker stops");
                return;
            }
            if spinning && events.is_empty() && self.ready.is_empty() {
                // Let whatever else wants this CPU (the other side of the conversation,
                // often) run before polling again.
                std::thread::yield_now();
                continue;
            }
            let mut traffic = false;
            for event in events.iter() {
                traffic |= event.token() != WAKER;
                if !self.ready.contains(&event.token()) {
                    self.ready.push_back(event.token());
                }
            }
            if traffic && !self.busy_poll.is_zero() {
                last_traffic = Some(Instant::now());
            }
            // Round robin over ready sources, a few batches each, so a busy TAP cannot starve
            // the socket or another TAP.
            for _ in 0..self.ready.len() {
                let Some(token) = self.ready.pop_front() else {
                    break;
                };
                let mut drained = Drained::More;
                for _ in 0..ROUNDS_PER_TURN {
                    drained = match token {
                        WAKER => {
                            if !self.apply_commands() {
                                return;
                            }
                            Drained::Empty
                        }
                        UDP => self.network_batch(),
                        Token(t) => self.tap_batch(t - FIRST_TAP),
                    };
                    if matches!(drained, Drained::Empty) {
                        break;
                    }
                }
                if matches!(drained, Drained::More) {
                    self.ready.push_back(token);
                }
            }
        }
    }

    /// Applies pending commands; false when the worker must stop.
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::AddLink {
                    vni,
                    queue,
                    counters,
                    options,
                }) => {
                    let slot = self
                        .links
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(self.links.len());
                    let token = Token(FIRST_TAP + slot);
                    let registered = self.poll.registry().register(
                        &mut SourceFd(&queue.as_raw_fd()),
                        token,
                        Interest::READABLE,
                    );
                    if let Err(e) = registered {
                        tracing::error!(worker = self.id, %vni, error = %e, "cannot watch TAP queue; link gets no traffic from this worker");
                        continue;
                    }
                    let link = Some(Link {
                        vni,
                        queue,
                        counters,
                        local: options.local,
                        mtu: options.mtu,
                    });
                    if slot == self.links.len() {
                        self.links.push(link);
                    } else {
                        self.links[slot] = link;
                    }
                    self.by_vni.insert(vni, slot);
                    // Frames may have queued up before registration.
                    self.ready.push_back(token);
                }
                Ok(Command::RemoveLink { vni, done }) => {
                    if let Some(slot) = self.by_vni.remove(&vni) {
                        if let Some(link) = self.links[slot].take() {
                            let _ = self
                                .poll
                                .registry()
                                .deregister(&mut SourceFd(&link.queue.as_raw_fd()));
                        }
                        self.ready.retain(|t| *t != Token(FIRST_TAP + slot));
                    }
                    let _ = done.send(());
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// One `recvmmsg` batch through the ingress pipeline, then its TAP writes.
    fn network_batch(&mut self) -> Drained {
        let n = match self.rx.recv(&self.socket) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Drained::More,
            Err(e) => {
                add(&self.shared.global.udp_rx_errors, 1);
                tracing::warn!(worker = self.id, error = %e, "receive failed");
                return Drained::Empty;
            }
        };
        let global = &self.shared.global;
        // Shared by every worker: touched only when there is something to add.
        add(&global.udp_rx_overflows, u64::from(self.rx.overflows()));
        {
            let now = self.shared.now();
            let mut switch = self.shared.switch();
            let (links, by_vni) = (&self.links, &self.by_vni);
            let link = |vni: Vni| {
                let slot = *by_vni.get(&vni)?;
                let mtu = links.get(slot)?.as_ref()?.mtu;
                Some(LinkInfo { slot, mtu })
            };
            self.ingress
                .decide(&self.rx, self.gro, &mut switch, now, link);
        }
        // Dissecting, checksum checks and coalescing need no switch: outside its lock.
        self.ingress.plan(&mut self.rx);
        let counts = self.ingress.counts();
        add(&global.udp_rx_datagrams, counts.datagrams);
        add(&global.udp_rx_oversize, counts.oversize);
        add(&global.udp_rx_no_link, counts.no_link);
        let mut parts: [&[u8]; MAX_RUN] = [&[]; MAX_RUN];
        // The link counters are shared by every worker: what a run of writes to one link
        // wrote is added once, not per write.
        let mut written = WriteTally::default();
        for write in self.ingress.writes() {
            let Some(link) = self.links.get(write.slot).and_then(Option::as_ref) else {
                add(&global.udp_rx_no_link, write.frames as u64);
                continue;
            };
            written.switch_to(write.slot, &self.links);
            let count = self.ingress.parts(write.run, &self.rx, &mut parts);
            match link.queue.send_parts(write.vnet, &parts[..count]) {
                Ok(bytes) => {
                    written.frames += 1;
                    written.bytes += (bytes - VNET_LEN) as u64;
                }
                Err(e) => count_tap_write_error(&link.counters, &e),
            }
        }
        written.flush(&self.links);
        if n < self.rx.capacity() {
            Drained::Empty
        } else {
            Drained::More
        }
    }

    /// One batch from a TAP queue through the egress pipeline, then its sends, one source
    /// socket at a time; ARP replies go back to the TAP.
    fn tap_batch(&mut self, slot: usize) -> Drained {
        let Some(link) = self.links.get(slot).and_then(Option::as_ref) else {
            return Drained::Empty;
        };
        self.frames.clear();
        let mut drained = Drained::More;
        while let Some(buf) = self.frames.next_buffer() {
            match link.queue.recv(buf) {
                Ok(len) => self.frames.commit(len),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        tracing::warn!(worker = self.id, vni = %link.vni, error = %e, "TAP read failed");
                    }
                    drained = Drained::Empty;
                    break;
                }
            }
        }
        if self.frames.is_empty() {
            return drained;
        }
        let senders = &self.shared.senders;
        // Headers, checksums, dissection and flow hashes need no switch: outside its lock.
        self.egress
            .prepare(&mut self.frames, &self.shared.source_ports);
        {
            let now = self.shared.now();
            let mut switch = self.shared.switch();
            self.egress
                .decide(&self.frames, link.vni, &mut switch, now, senders.ports());
        }
        add(&link.counters.tap_rx_errors, self.egress.counts().refused);
        let mut batch = std::mem::replace(&mut self.send, SendBatch::new(0)).recycle();
        let mut sent = TrainOutcome::default();
        for (s, copies) in self.egress.groups() {
            let socket = senders.socket(s);
            for &k in copies {
                match self.egress.datagram(&self.frames, k) {
                    Datagram::Plain { dst, parts } => {
                        if !push(&mut batch, link.local, dst, &parts) {
                            sent.flush(&mut batch, socket);
                            // An empty batch always has room.
                            let _ = push(&mut batch, link.local, dst, &parts);
                        }
                    }
                    Datagram::Superframe { dst, frame } => {
                        // What was queued before this superframe leaves before it: flow order.
                        sent.flush(&mut batch, socket);
                        match self.egress.segments(&self.frames, k, &mut self.segments) {
                            Ok(segments) => {
                                let train = socket.send_train(
                                    dst,
                                    link.local,
                                    frame,
                                    segments,
                                    &mut self.plain,
                                );
                                sent.sent += train.sent;
                                sent.failed += train.failed;
                                sent.bytes += train.bytes;
                                sent.gso_sends += train.gso_sends;
                                sent.gso_refused += train.gso_refused;
                            }
                            Err(e) => {
                                sent.failed += 1;
                                tracing::debug!(worker = self.id, error = %e, "superframe not segmented");
                            }
                        }
                    }
                }
            }
            sent.flush(&mut batch, socket);
        }
        self.send = batch.recycle();
        add(&link.counters.udp_tx_datagrams, sent.sent as u64);
        add(&link.counters.udp_tx_bytes, sent.bytes as u64);
        add(&link.counters.udp_tx_errors, sent.failed as u64);
        add(&self.shared.global.udp_gso_sends, sent.gso_sends as u64);
        add(&self.shared.global.udp_gso_refused, sent.gso_refused as u64);
        for reply in self.egress.replies() {
            match link.queue.send(&PLAIN_FRAME, reply) {
                Ok(_) => {
                    add(&link.counters.tap_tx_frames, 1);
                    add(&link.counters.tap_tx_bytes, reply.len() as u64);
                }
                Err(e) => count_tap_write_error(&link.counters, &e),
            }
        }
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_tap_writes_are_counted_by_reason() {
        let counters = LinkIoCounters::default();
        for errno in [
            libc::EAGAIN,
            libc::ENOBUFS,
            libc::EIO,
            libc::EAGAIN,
            libc::EINVAL,
        ] {
            count_tap_write_error(&counters, &io::Error::from_raw_os_error(errno));
        }
        let snapshot = counters.snapshot();
        assert_eq!((snapshot.tap_tx_queue_full, snapshot.tap_tx_errors), (3, 2));
    }
}

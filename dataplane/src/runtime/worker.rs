//! One worker: an event loop over its UDP socket and its queue of every TAP.

use super::counters::{add, GlobalIoCounters, LinkIoCounters};
use super::{LinkOptions, RuntimeError, Shared};
use crate::coalesce;
use crate::io::{tap, RecvBatch, SendBatch, TapQueue, UdpSocket};
use crate::offload;
use crate::segment::{self, SegmentHeaders, Segments};
use crate::switch::{NetworkAction, TapAction, ARP_REPLY_LEN};
use crate::tunnel::{self, Vtep};
use crate::wire::virtio_net::HEADER_LEN as VNET_LEN;
use crate::wire::vxlan::HEADER_LEN as VXLAN_LEN;
use crate::wire::Vni;
use crate::wire::{GsoType, VirtioNetHeader, VirtioNetRepr};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

const WAKER: Token = Token(0);
const UDP: Token = Token(1);
const FIRST_TAP: usize = 2;

/// Largest frame a TAP queue hands over (64 KiB superframes once TSO is on).
const TAP_FRAME_MAX: usize = 65_550;
/// Largest UDP payload received.
const UDP_PAYLOAD_MAX: usize = 65_535;
/// Batches one source may take before the others get a turn.
const ROUNDS_PER_TURN: usize = 4;
/// Most segments one UDP_SEGMENT send may carry (the kernel's UDP_MAX_SEGMENTS is 64 on
/// older kernels, 128 on newer ones).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most UDP payload bytes one send may carry over IPv4 (65535 - 20 - 8).
const GSO_MAX_BYTES: usize = 65_507;
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

/// One decapsulated frame: bytes `start..end` of received datagram `datagram`, for the TAP
/// of link slot `slot`.
#[derive(Clone, Copy)]
struct Delivery {
    datagram: usize,
    start: usize,
    end: usize,
    slot: usize,
}

/// Deliveries `first..first + count` (one link), written as one frame. With `head`, they
/// coalesced: the first frame was rewritten into a superframe's head (segment, total payload,
/// PSH) and goes out behind `vnet`, followed by the other frames' payloads.
struct Run {
    first: usize,
    count: usize,
    head: Option<(coalesce::Segment, usize, bool)>,
    vnet: [u8; VNET_LEN],
}

/// Most segments coalesced into one superframe (a full 64 KB at the smallest common MSS).
const MAX_RUN: usize = 64;

/// Frames read from a TAP queue in one batch, and what to do with them.
struct TapBatch {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    /// Each frame's virtio-net header: how to segment it, if it is a TSO or USO superframe.
    vnet: Vec<VirtioNetRepr>,
    /// (frame index, destination) for every copy to send, floods expanded.
    plan: Vec<(usize, Vtep)>,
    headers: Vec<[u8; VXLAN_LEN]>,
    /// Which source socket sends each planned copy.
    sender: Vec<usize>,
    /// The planned copies grouped by source socket, in plan order within each group (a
    /// counting sort: stable, so a flow's frames keep their order, and allocation-free).
    order: Vec<usize>,
    /// Per source socket: where its group starts in `order` (len = sockets + 1).
    group_start: Vec<usize>,
    replies: Vec<[u8; ARP_REPLY_LEN]>,
}

pub(crate) struct Worker {
    id: usize,
    shared: Arc<Shared>,
    poll: Poll,
    waker: Arc<mio::Waker>,
    commands: Receiver<Command>,
    socket: UdpSocket,
    links: Vec<Option<Link>>,
    by_vni: HashMap<Vni, usize>,
    rx: RecvBatch,
    /// Decapsulated frames to write to a TAP, in arrival order.
    deliveries: Vec<Delivery>,
    /// What coalescing makes of each delivery (same index).
    inspected: Vec<Option<coalesce::Segment>>,
    /// The deliveries grouped into runs, each written to its TAP as one frame.
    runs: Vec<Run>,
    tap: TapBatch,
    /// Kept empty between batches; re-borrowed for each TAP batch's frames.
    send: Option<SendBatch<'static>>,
    /// Header blocks of the segments of one superframe.
    segments: SegmentHeaders,
    /// Whether the kernel takes UDP_SEGMENT sends: what the sockets' probe found, and false
    /// after a refusal; without it, segments go out with plain `sendmmsg` through `plain`.
    gso: bool,
    /// Whether the receiving socket has UDP_GRO on, so a slot may hold a coalesced train.
    gro: bool,
    plain: Option<SendBatch<'static>>,
    ready: VecDeque<Token>,
}

/// Reads a TAP frame's virtio-net header and finishes a plain frame's pending checksum;
/// `None` for a header vxtap cannot honour (it is counted as a TAP receive error).
fn prepare(buf: &mut [u8]) -> Option<VirtioNetRepr> {
    let vnet = VirtioNetHeader::new_checked(&buf[..VNET_LEN])
        .and_then(|h| VirtioNetRepr::parse(&h))
        .ok()?;
    match vnet.gso_type {
        GsoType::None if vnet.needs_csum => {
            let frame = &mut buf[VNET_LEN..];
            segment::finish_checksum(
                frame,
                usize::from(vnet.csum_start),
                usize::from(vnet.csum_offset),
            )
            .ok()?;
            Some(VirtioNetRepr::NONE)
        }
        GsoType::None => Some(VirtioNetRepr::NONE),
        // A superframe vxtap could not cut is refused here, counted as a TAP receive error,
        // rather than switched and then failed at send time.
        GsoType::TcpV4 | GsoType::TcpV6 => {
            segment::TcpSuperframe::parse(&buf[VNET_LEN..], &vnet).ok()?;
            Some(vnet)
        }
        GsoType::UdpL4 => {
            segment::UdpSuperframe::parse(&buf[VNET_LEN..], &vnet).ok()?;
            Some(vnet)
        }
        // UFO (IP fragmentation of UDP) is never enabled on the TAP.
        GsoType::Udp => None,
    }
}

/// Sends a superframe's segments to `vtep`: as few UDP_SEGMENT trains as the kernel's limits
/// allow or, where the kernel refuses GSO, in one plain `sendmmsg` through `plain` (which IP
/// fragments if they exceed the path MTU). Every refused train is counted in `refused` and
/// its segments go out plainly, so nothing is lost to a refusal. EIO or EINVAL mean the
/// kernel cannot do UDP GSO at all and turn it off for this worker; EMSGSIZE means segments
/// larger than the path MTU to this VTEP, which does not hold for other VTEPs, so GSO stays on.
#[allow(clippy::too_many_arguments)]
fn send_superframe(
    frame: &[u8],
    segments: Segments<'_>,
    vtep: Vtep,
    local: Option<Ipv4Addr>,
    socket: &UdpSocket,
    gso: &mut bool,
    plain: &mut Option<SendBatch<'static>>,
    counters: &GlobalIoCounters,
    sent: &mut SendTally,
) {
    let mut rest = segments;
    if *gso {
        let per_send = (GSO_MAX_BYTES / rest.gso_size()).clamp(1, GSO_MAX_SEGMENTS);
        let mut iov = [IoSlice::new(&[]); 2 * GSO_MAX_SEGMENTS];
        while !rest.is_empty() {
            let (train, after) = rest.split_at(per_send);
            let mut parts = 0;
            for segment in train.iter() {
                iov[parts] = IoSlice::new(segment.header);
                iov[parts + 1] = IoSlice::new(&frame[segment.payload]);
                parts += 2;
            }
            let gso_size =
                (train.len() > 1).then(|| u16::try_from(train.gso_size()).unwrap_or(u16::MAX));
            if gso_size.is_some() {
                add(&counters.udp_gso_sends, 1);
            }
            match socket.send_segments(vtep.addr(), local, &iov[..parts], gso_size) {
                Ok(bytes) => {
                    sent.sent += train.len() as u64;
                    sent.bytes += bytes as u64;
                }
                Err(e)
                    if gso_size.is_some()
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
                        ) =>
                {
                    add(&counters.udp_gso_refused, 1);
                    if e.raw_os_error() != Some(libc::EMSGSIZE) {
                        tracing::warn!(error = %e, "the kernel refused UDP GSO; this worker sends segments with plain sendmmsg from now on");
                        *gso = false;
                    }
                    break;
                }
                Err(_) => sent.failed += train.len() as u64,
            }
            rest = after;
        }
        if rest.is_empty() {
            return;
        }
    }
    let mut batch = plain
        .take()
        .unwrap_or_else(|| SendBatch::new(GSO_MAX_SEGMENTS))
        .recycle();
    for segment in rest.iter() {
        let parts = [segment.header, &frame[segment.payload]];
        if !push(&mut batch, local, vtep, &parts) {
            sent.flush(&mut batch, socket);
            // An empty batch always has room.
            let _ = push(&mut batch, local, vtep, &parts);
        }
    }
    sent.flush(&mut batch, socket);
    *plain = Some(batch.recycle());
}

/// Fills `order` and `group_start` so that the planned copies of each source socket are
/// contiguous, each group in plan order.
fn group_by_sender(tap: &mut TapBatch, sockets: usize) {
    tap.group_start.clear();
    tap.group_start.resize(sockets + 1, 0);
    for &s in &tap.sender {
        tap.group_start[s + 1] += 1;
    }
    for s in 0..sockets {
        tap.group_start[s + 1] += tap.group_start[s];
    }
    tap.order.clear();
    tap.order.resize(tap.sender.len(), 0);
    // `group_start[s]` serves as the next free place of group `s` while filling, then is
    // shifted back.
    for (k, &s) in tap.sender.iter().enumerate() {
        tap.order[tap.group_start[s]] = k;
        tap.group_start[s] += 1;
    }
    for s in (1..=sockets).rev() {
        tap.group_start[s] = tap.group_start[s - 1];
    }
    tap.group_start[0] = 0;
}

/// Queues one datagram to `vtep`, from `local` when the link has one.
fn push<'a>(
    batch: &mut SendBatch<'a>,
    local: Option<Ipv4Addr>,
    vtep: Vtep,
    parts: &[&'a [u8]],
) -> bool {
    match local {
        Some(local) => batch.push_from(local, vtep.addr(), parts, None),
        None => batch.push(vtep.addr(), parts, None),
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

/// What the sends of one TAP batch did.
#[derive(Default)]
struct SendTally {
    /// Datagrams the kernel accepted.
    sent: u64,
    /// Datagrams refused, or dropped because the socket buffer was full.
    failed: u64,
    /// Bytes the kernel took.
    bytes: u64,
}

impl SendTally {
    /// Sends what `batch` holds and leaves it empty: UDP does not queue for congestion, so
    /// what the socket cannot take now is dropped and counted, like a full NIC queue.
    fn flush(&mut self, batch: &mut SendBatch<'_>, socket: &UdpSocket) {
        let offered = batch.len() as u64;
        match batch.send(socket) {
            Ok(outcome) => {
                self.sent += outcome.sent as u64;
                self.bytes += outcome.sent_bytes as u64;
                self.failed += offered - outcome.sent as u64;
            }
            Err(_) => self.failed += offered,
        }
        batch.clear();
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
    ) -> Result<Worker, RuntimeError> {
        let poll_err = |what| {
            move |source| RuntimeError::Poll {
                worker: id,
                what,
                source,
            }
        };
        let sockets = shared.senders.ports().len();
        let (gso, gro) = (shared.senders.offloads().gso, socket.offloads().gro);
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
            links: Vec::new(),
            by_vni: HashMap::new(),
            rx: RecvBatch::new(batch, UDP_PAYLOAD_MAX),
            deliveries: Vec::with_capacity(batch * 64),
            inspected: Vec::with_capacity(batch * 64),
            runs: Vec::with_capacity(batch * 64),
            tap: TapBatch {
                bufs: (0..batch)
                    .map(|_| vec![0u8; TAP_FRAME_MAX].into_boxed_slice())
                    .collect(),
                lens: Vec::with_capacity(batch),
                vnet: Vec::with_capacity(batch),
                plan: Vec::with_capacity(batch * 4),
                headers: Vec::with_capacity(batch * 4),
                sender: Vec::with_capacity(batch * 4),
                order: Vec::with_capacity(batch * 4),
                group_start: Vec::with_capacity(sockets + 1),
                replies: Vec::with_capacity(batch),
            },
            send: Some(SendBatch::new(batch * 4)),
            segments: SegmentHeaders::new(),
            gso,
            gro,
            plain: Some(SendBatch::new(GSO_MAX_SEGMENTS)),
            ready: VecDeque::new(),
        })
    }

    pub(crate) fn waker(&self) -> Arc<mio::Waker> {
        Arc::clone(&self.waker)
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            // Block only when no source is known to have more waiting.
            let timeout = if self.ready.is_empty() {
                None
            } else {
                Some(std::time::Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(worker = self.id, error = %e, "event loop failed; worker stops");
                return;
            }
            for event in events.iter() {
                if !self.ready.contains(&event.token()) {
                    self.ready.push_back(event.token());
                }
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

    /// One `recvmmsg` batch: cut GRO trains into datagrams, decap and switch each, coalesce
    /// runs of one TCP flow, write to TAPs.
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
        // Shared by every worker: touched only when there is something to add.
        let overflows = self.rx.overflows();
        if overflows > 0 {
            add(&self.shared.global.udp_rx_overflows, u64::from(overflows));
        }
        self.deliveries.clear();
        let mut datagrams = 0;
        {
            let now = self.shared.now();
            let mut switch = self.shared.switch();
            for i in 0..n {
                if self.rx.truncated(i) {
                    add(&self.shared.global.udp_rx_oversize, 1);
                    continue;
                }
                let payload = self.rx.payload(i);
                // A GRO train is datagrams of `segment_size` bytes, the last maybe shorter.
                let step = self
                    .rx
                    .segment_size(i)
                    .filter(|_| self.gro)
                    .map_or(payload.len(), usize::from)
                    .max(1);
                let src = self.rx.source(i);
                // An empty datagram still goes through the switch once (and is counted).
                let mut start = 0;
                loop {
                    let end = (start + step).min(payload.len());
                    datagrams += 1;
                    if let NetworkAction::Deliver { vni, .. } =
                        switch.from_network(src, &payload[start..end], now)
                    {
                        if let Some(&slot) = self.by_vni.get(&vni) {
                            self.deliveries.push(Delivery {
                                datagram: i,
                                start: start + VXLAN_LEN,
                                end,
                                slot,
                            });
                        }
                    }
                    start = end;
                    if start >= payload.len() {
                        break;
                    }
                }
            }
        }
        add(&self.shared.global.udp_rx_datagrams, datagrams);
        self.plan_runs();
        self.write_runs();
        if n < self.rx.capacity() {
            Drained::Empty
        } else {
            Drained::More
        }
    }

    /// Groups deliveries into runs that coalesce into one superframe, and rewrites the first
    /// frame of every run of two or more into the superframe's head.
    fn plan_runs(&mut self) {
        // Each delivery is inspected once (a checksum pass over its segment), however the
        // runs fall.
        self.inspected.clear();
        for d in &self.deliveries {
            self.inspected.push(coalesce::inspect(
                &self.rx.payload(d.datagram)[d.start..d.end],
            ));
        }
        self.runs.clear();
        let mut k = 0;
        while k < self.deliveries.len() {
            let d = self.deliveries[k];
            let frame = &self.rx.payload(d.datagram)[d.start..d.end];
            let mut run = Run {
                first: k,
                count: 1,
                head: None,
                vnet: [0; VNET_LEN],
            };
            if let Some(first) = self.inspected[k] {
                let (mut last, mut total) = (first, first.payload_len());
                while run.count < MAX_RUN {
                    let Some(&e) = self.deliveries.get(k + run.count) else {
                        break;
                    };
                    let Some(next) = self.inspected[k + run.count] else {
                        break;
                    };
                    if e.slot != d.slot {
                        break;
                    }
                    let next_frame = &self.rx.payload(e.datagram)[e.start..e.end];
                    if !coalesce::continues(frame, &first, &last, total, next_frame, &next) {
                        break;
                    }
                    total += next.payload_len();
                    last = next;
                    run.count += 1;
                }
                if run.count > 1 {
                    run.head = Some((first, total, last.psh()));
                }
            }
            k += run.count;
            self.runs.push(run);
        }
        for run in &mut self.runs {
            if let Some((first, total, psh)) = run.head {
                let d = self.deliveries[run.first];
                let head = &mut self.rx.payload_mut(d.datagram)[d.start..d.end];
                let vnet = coalesce::finish(head, &first, total, psh);
                run.vnet = vnet;
            }
        }
    }

    /// Writes every run to its TAP: a lone frame as it came (with what `offload` says it
    /// needs), a coalesced run as one superframe.
    fn write_runs(&mut self) {
        let mut parts: [&[u8]; MAX_RUN] = [&[]; MAX_RUN];
        for run in &self.runs {
            let d = self.deliveries[run.first];
            let Some(link) = &self.links[d.slot] else {
                continue;
            };
            let head = &self.rx.payload(d.datagram)[d.start..d.end];
            let result = match run.head {
                None => link.queue.send(&offload::tap_header(head, link.mtu), head),
                Some((first, _, _)) => {
                    parts[0] = head;
                    for (j, e) in self.deliveries[run.first + 1..run.first + run.count]
                        .iter()
                        .enumerate()
                    {
                        parts[j + 1] =
                            &self.rx.payload(e.datagram)[e.start + first.payload_offset()..e.end];
                    }
                    link.queue.send_parts(&run.vnet, &parts[..run.count])
                }
            };
            match result {
                Ok(written) => {
                    add(&link.counters.tap_tx_frames, 1);
                    add(&link.counters.tap_tx_bytes, (written - VNET_LEN) as u64);
                }
                Err(e) => count_tap_write_error(&link.counters, &e),
            }
        }
    }

    /// One batch from a TAP queue: switch, encap, `sendmmsg`; ARP replies back to the TAP.
    fn tap_batch(&mut self, slot: usize) -> Drained {
        let Some(link) = self.links.get(slot).and_then(Option::as_ref) else {
            return Drained::Empty;
        };
        let tap = &mut self.tap;
        tap.lens.clear();
        tap.vnet.clear();
        let mut drained = Drained::More;
        let mut bad = 0;
        // Frames are read into the first free buffers; a refused frame leaves its buffer free.
        while tap.lens.len() < tap.bufs.len() {
            let buf = &mut tap.bufs[tap.lens.len()];
            match link.queue.recv(buf) {
                Ok(len) if len > VNET_LEN => match prepare(&mut buf[..len]) {
                    Some(vnet) => {
                        tap.lens.push(len);
                        tap.vnet.push(vnet);
                    }
                    None => bad += 1,
                },
                Ok(_) => bad += 1,
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
        add(&link.counters.tap_rx_errors, bad);
        if tap.lens.is_empty() {
            return drained;
        }
        tap.plan.clear();
        tap.replies.clear();
        {
            let now = self.shared.now();
            let mut switch = self.shared.switch();
            let mut reply = [0u8; ARP_REPLY_LEN];
            for (i, &len) in tap.lens.iter().enumerate() {
                let frame = &tap.bufs[i][VNET_LEN..len];
                match switch.from_tap(link.vni, frame, now, &mut reply) {
                    TapAction::Forward(vtep) => tap.plan.push((i, vtep)),
                    TapAction::Flood(list) => tap.plan.extend(list.iter().map(|v| (i, *v))),
                    TapAction::ReplyArp => tap.replies.push(reply),
                    TapAction::Drop(_) => {}
                }
            }
        }
        tap.headers.clear();
        tap.sender.clear();
        let senders = &self.shared.senders;
        for &(i, vtep) in &tap.plan {
            let frame = &tap.bufs[i][VNET_LEN..tap.lens[i]];
            let encap = tunnel::encap(frame, &vtep, &self.shared.source_ports);
            tap.headers.push(encap.header);
            tap.sender.push(senders.index_for(encap.src_port));
        }
        group_by_sender(tap, senders.ports().len());
        let mut batch = self
            .send
            .take()
            .unwrap_or_else(|| SendBatch::new(tap.plan.len()))
            .recycle();
        let mut sent = SendTally::default();
        for s in 0..senders.ports().len() {
            let socket = senders.socket(s);
            for &k in &tap.order[tap.group_start[s]..tap.group_start[s + 1]] {
                let (i, vtep) = tap.plan[k];
                let frame = &tap.bufs[i][VNET_LEN..tap.lens[i]];
                if tap.vnet[i].gso_type != GsoType::None {
                    // What was queued before this superframe leaves before it: flow order.
                    sent.flush(&mut batch, socket);
                    // `prepare` let through only superframes of a type vxtap cuts.
                    let split = match tap.vnet[i].gso_type {
                        GsoType::UdpL4 => segment::split_udp,
                        _ => segment::split_tcp,
                    };
                    match split(frame, &tap.vnet[i], &tap.headers[k], &mut self.segments) {
                        Ok(segments) => send_superframe(
                            frame,
                            segments,
                            vtep,
                            link.local,
                            socket,
                            &mut self.gso,
                            &mut self.plain,
                            &self.shared.global,
                            &mut sent,
                        ),
                        Err(e) => {
                            sent.failed += 1;
                            tracing::debug!(worker = self.id, error = %e, "superframe not segmented");
                        }
                    }
                    continue;
                }
                let parts: [&[u8]; 2] = [&tap.headers[k], frame];
                if !push(&mut batch, link.local, vtep, &parts) {
                    sent.flush(&mut batch, socket);
                    // An empty batch always has room.
                    let _ = push(&mut batch, link.local, vtep, &parts);
                }
            }
            sent.flush(&mut batch, socket);
        }
        self.send = Some(batch.recycle());
        add(&link.counters.udp_tx_datagrams, sent.sent);
        add(&link.counters.udp_tx_bytes, sent.bytes);
        add(&link.counters.udp_tx_errors, sent.failed);
        for reply in &tap.replies {
            match link.queue.send(&PLAIN_FRAME, reply) {
                Ok(_) => {
                    add(&link.counters.tap_tx_frames, 1);
                    add(&link.counters.tap_tx_bytes, ARP_REPLY_LEN as u64);
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

    /// A virtio-net header with `gso_type` and gso_size 1000 in front of an IPv4 USO
    /// superframe (10.0.0.1 -> 10.0.0.2) of 2500 payload bytes.
    fn uso_frame(gso_type: GsoType) -> Vec<u8> {
        let vnet = VirtioNetRepr {
            needs_csum: true,
            gso_type,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 6,
            ..VirtioNetRepr::NONE
        };
        let mut buf = vnet.to_bytes().to_vec();
        buf.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(20u16 + 8 + 2500).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let mut packet = crate::wire::Ipv4Packet::new_unchecked(&mut ip[..]);
        packet.fill_checksum();
        buf.extend_from_slice(&ip);
        buf.extend_from_slice(&[0x9c, 0x40, 0x12, 0xb5]);
        buf.extend_from_slice(&(8u16 + 2500).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend((0..2500u32).map(|i| i as u8));
        buf
    }

    #[test]
    fn prepare_takes_uso_superframes_and_refuses_ufo() {
        let mut frame = uso_frame(GsoType::UdpL4);
        let vnet = prepare(&mut frame).expect("a USO superframe is taken");
        assert_eq!((vnet.gso_type, vnet.gso_size), (GsoType::UdpL4, 1000));
        assert_eq!(prepare(&mut uso_frame(GsoType::Udp)), None, "UFO");
        // A USO header on a frame that is not a UDP superframe.
        let mut tcp = uso_frame(GsoType::UdpL4);
        tcp[VNET_LEN + 14 + 9] = 6;
        assert_eq!(prepare(&mut tcp), None);
        let mut truncated = uso_frame(GsoType::UdpL4);
        truncated.truncate(VNET_LEN + 14 + 20 + 4);
        assert_eq!(prepare(&mut truncated), None);
        // The superframe cuts into three datagrams, the last 500 bytes long.
        let mut out = SegmentHeaders::with_capacity(3);
        let segments = segment::split_udp(
            &frame[VNET_LEN..],
            &vnet,
            &[8, 0, 0, 0, 0, 0, 1, 0],
            &mut out,
        )
        .unwrap();
        assert_eq!(segments.len(), 3);
        assert_eq!(segments.payload_range(2).map(|r| r.len()), Some(500));
    }

    #[test]
    fn grouping_by_sender_is_stable_and_complete() {
        let mut tap = TapBatch {
            bufs: Vec::new(),
            lens: Vec::new(),
            vnet: Vec::new(),
            plan: Vec::new(),
            headers: Vec::new(),
            sender: vec![2, 0, 2, 1, 0, 2, 3, 0],
            order: Vec::new(),
            group_start: Vec::new(),
            replies: Vec::new(),
        };
        group_by_sender(&mut tap, 5);
        assert_eq!(tap.group_start, [0, 3, 4, 7, 8, 8]);
        assert_eq!(tap.order, [1, 4, 7, 3, 0, 2, 5, 6]);
        tap.sender.clear();
        group_by_sender(&mut tap, 2);
        assert_eq!(
            (tap.group_start.as_slice(), tap.order.len()),
            (&[0, 0, 0][..], 0)
        );
    }

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

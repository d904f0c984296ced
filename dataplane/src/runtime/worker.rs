//! One worker: an event loop over its UDP socket and its queue of every TAP.

use super::counters::{add, LinkIoCounters};
use super::{LinkOptions, RuntimeError, Shared};
use crate::io::{RecvBatch, SendBatch, TapQueue, UdpSocket};
use crate::offload;
use crate::switch::{NetworkAction, TapAction, ARP_REPLY_LEN};
use crate::tunnel::{self, Vtep};
use crate::wire::virtio_net::HEADER_LEN as VNET_LEN;
use crate::wire::vxlan::HEADER_LEN as VXLAN_LEN;
use crate::wire::Vni;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::io;
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

/// Frames read from a TAP queue in one batch, and what to do with them.
struct TapBatch {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
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
    /// (datagram index, link slot) of datagrams to write to a TAP.
    deliveries: Vec<(usize, usize)>,
    tap: TapBatch,
    /// Kept empty between batches; re-borrowed for each TAP batch's frames.
    send: Option<SendBatch<'static>>,
    ready: VecDeque<Token>,
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
            deliveries: Vec::with_capacity(batch),
            tap: TapBatch {
                bufs: (0..batch)
                    .map(|_| vec![0u8; TAP_FRAME_MAX].into_boxed_slice())
                    .collect(),
                lens: Vec::with_capacity(batch),
                plan: Vec::with_capacity(batch * 4),
                headers: Vec::with_capacity(batch * 4),
                sender: Vec::with_capacity(batch * 4),
                order: Vec::with_capacity(batch * 4),
                group_start: Vec::with_capacity(sockets + 1),
                replies: Vec::with_capacity(batch),
            },
            send: Some(SendBatch::new(batch * 4)),
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

    /// One `recvmmsg` batch: decap, switch, write to TAPs.
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
        add(&self.shared.global.udp_rx_datagrams, n as u64);
        self.deliveries.clear();
        {
            let now = self.shared.now();
            let mut switch = self.shared.switch();
            for i in 0..n {
                if self.rx.truncated(i) {
                    add(&self.shared.global.udp_rx_oversize, 1);
                    continue;
                }
                if let NetworkAction::Deliver { vni, .. } =
                    switch.from_network(self.rx.source(i), self.rx.payload(i), now)
                {
                    if let Some(&slot) = self.by_vni.get(&vni) {
                        self.deliveries.push((i, slot));
                    }
                }
            }
        }
        for &(i, slot) in &self.deliveries {
            let Some(link) = &self.links[slot] else {
                continue;
            };
            let frame = &self.rx.payload(i)[VXLAN_LEN..];
            match link
                .queue
                .send(&offload::tap_header(frame, link.mtu), frame)
            {
                Ok(_) => {
                    add(&link.counters.tap_tx_frames, 1);
                    add(&link.counters.tap_tx_bytes, frame.len() as u64);
                }
                Err(_) => add(&link.counters.tap_tx_errors, 1),
            }
        }
        if n < self.rx.capacity() {
            Drained::Empty
        } else {
            Drained::More
        }
    }

    /// One batch from a TAP queue: switch, encap, `sendmmsg`; ARP replies back to the TAP.
    fn tap_batch(&mut self, slot: usize) -> Drained {
        let Some(link) = self.links.get(slot).and_then(Option::as_ref) else {
            return Drained::Empty;
        };
        let tap = &mut self.tap;
        tap.lens.clear();
        let mut drained = Drained::More;
        for buf in tap.bufs.iter_mut() {
            match link.queue.recv(buf) {
                Ok(len) if len > VNET_LEN => tap.lens.push(len),
                Ok(_) => {}
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
                Err(_) => add(&link.counters.tap_tx_errors, 1),
            }
        }
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_by_sender_is_stable_and_complete() {
        let mut tap = TapBatch {
            bufs: Vec::new(),
            lens: Vec::new(),
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
}

//! From a TAP to the underlay: frames in, copies to send out, grouped by source socket.

use crate::dissect::Layout;
use crate::segment::{self, SegmentError, SegmentHeaders, Segments};
use crate::switch::{TapAction, ARP_REPLY_LEN};
use crate::tunnel::{self, PortRange, Vtep};
use crate::wire::virtio_net::HEADER_LEN as VNET_LEN;
use crate::wire::vxlan::HEADER_LEN as VXLAN_LEN;
use crate::wire::{GsoType, VirtioNetHeader, VirtioNetRepr, Vni};
use crate::{Switch, Timestamp};
use core::net::SocketAddrV4;

/// Frames read from one TAP queue, each behind its virtio-net header, in buffers allocated
/// once. The reader fills [`next_buffer`](Self::next_buffer) and [`commit`](Self::commit)s
/// what it read.
#[derive(Debug)]
pub struct TapFrames {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
}

impl TapFrames {
    /// Room for `count` frames of up to `buf_size` bytes, virtio-net header included.
    pub fn new(count: usize, buf_size: usize) -> TapFrames {
        TapFrames {
            bufs: (0..count)
                .map(|_| vec![0u8; buf_size].into_boxed_slice())
                .collect(),
            lens: Vec::with_capacity(count),
        }
    }

    /// Forgets every frame.
    pub fn clear(&mut self) {
        self.lens.clear();
    }

    /// The buffer the next frame is to be read into, or `None` when the batch is full.
    pub fn next_buffer(&mut self) -> Option<&mut [u8]> {
        let next = self.lens.len();
        self.bufs.get_mut(next).map(|b| &mut b[..])
    }

    /// Keeps the first `len` bytes of the buffer [`next_buffer`](Self::next_buffer) gave
    /// (cut to its size) as the next frame. Does nothing when the batch is full.
    pub fn commit(&mut self, len: usize) {
        if let Some(buf) = self.bufs.get(self.lens.len()) {
            self.lens.push(len.min(buf.len()));
        }
    }

    /// How many frames are held.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Whether every buffer holds a frame.
    pub fn is_full(&self) -> bool {
        self.lens.len() == self.bufs.len()
    }

    /// Frame `i` with its virtio-net header.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn raw(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    /// Frame `i` after its virtio-net header (empty if it was shorter than one).
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn frame(&self, i: usize) -> &[u8] {
        self.raw(i).get(VNET_LEN..).unwrap_or(&[])
    }

    fn raw_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i][..self.lens[i]]
    }
}

/// What became of frame `i` of the batch before the switch.
#[derive(Debug, Clone, Copy)]
struct Prepared {
    vnet: VirtioNetRepr,
    layout: Layout,
    /// The outer source port its flow hashes to.
    src_port: u16,
}

/// One copy of a frame to send: frame `frame` of the batch to `vtep`, behind `header`, from
/// source socket `socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Which frame of the batch.
    pub frame: usize,
    /// Where it goes.
    pub vtep: Vtep,
    /// Its VXLAN header.
    pub header: [u8; VXLAN_LEN],
    /// The index of the source socket (into the ports given to [`Egress::decide`]).
    pub socket: usize,
}

/// One copy as the sender sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// One datagram: `parts` concatenated, to `dst`.
    Plain {
        /// The destination.
        dst: SocketAddrV4,
        /// The VXLAN header and the frame.
        parts: [&'a [u8]; 2],
    },
    /// A TSO or USO superframe: cut it with [`Egress::segments`] and send the segments to
    /// `dst`, with `UDP_SEGMENT` where the socket has it.
    Superframe {
        /// The destination.
        dst: SocketAddrV4,
        /// The superframe, to send the segments' payloads from.
        frame: &'a [u8],
    },
}

/// What one batch did besides the switch's own counting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressCounts {
    /// Frames whose virtio-net header vxtap cannot honour (a GSO type it does not cut, a
    /// superframe it cannot parse, a checksum it cannot finish, a frame shorter than the
    /// header): dropped before the switch.
    pub refused: u64,
}

/// The egress half of the pipeline, with scratch reused from batch to batch.
#[derive(Debug)]
pub struct Egress {
    prepared: Vec<Option<Prepared>>,
    copies: Vec<Transmit>,
    /// Copy indices grouped by socket, in plan order within each group (a counting sort:
    /// stable, so a flow's frames keep their order, and allocation-free).
    order: Vec<usize>,
    /// Per socket: where its group starts in `order` (len = sockets + 1).
    group_start: Vec<usize>,
    replies: Vec<[u8; ARP_REPLY_LEN]>,
    counts: EgressCounts,
}

impl Egress {
    /// Scratch for batches of up to `batch` frames, each flooded to a few VTEPs, over
    /// `sockets` source sockets. (Larger floods grow the scratch once.)
    pub fn new(batch: usize, sockets: usize) -> Egress {
        Egress {
            prepared: Vec::with_capacity(batch),
            copies: Vec::with_capacity(batch * 4),
            order: Vec::with_capacity(batch * 4),
            group_start: Vec::with_capacity(sockets + 1),
            replies: Vec::with_capacity(batch),
            counts: EgressCounts::default(),
        }
    }

    /// First half of planning the batch `frames`, which needs no switch (and so runs
    /// outside its lock): honours each virtio-net header (pending checksums are finished in
    /// the frames' buffers), dissects each frame and hashes its flow onto `range`. Frames
    /// vxtap cannot take are counted in [`counts`](Self::counts).
    pub fn prepare(&mut self, frames: &mut TapFrames, range: &PortRange) {
        self.prepared.clear();
        self.counts = EgressCounts::default();
        for i in 0..frames.len() {
            let prepared = prepare(frames.raw_mut(i), range);
            if prepared.is_none() {
                self.counts.refused += 1;
            }
            self.prepared.push(prepared);
        }
    }

    /// Second half, with the switch: the switch decides on every prepared frame of `frames`
    /// (read from the TAP of network `vni`), each copy gets its VXLAN header and leaves from
    /// the socket of `ports` (sorted) its flow's port falls to, and the copies are grouped
    /// by socket.
    pub fn decide(
        &mut self,
        frames: &TapFrames,
        vni: Vni,
        switch: &mut Switch,
        now: Timestamp,
        ports: &[u16],
    ) {
        self.copies.clear();
        self.replies.clear();
        let mut reply = [0u8; ARP_REPLY_LEN];
        for (i, prepared) in self.prepared.iter().enumerate() {
            let Some(prepared) = prepared else {
                continue;
            };
            let Some(frame) = (i < frames.len()).then(|| frames.frame(i)) else {
                break;
            };
            let socket = super::socket_for(ports, prepared.src_port);
            let copy = |vtep: Vtep| Transmit {
                frame: i,
                vtep,
                header: crate::wire::VxlanRepr { vni: vtep.vni }.to_bytes(),
                socket,
            };
            match switch.from_tap(vni, frame, now, &mut reply) {
                TapAction::Forward(vtep) => self.copies.push(copy(vtep)),
                TapAction::Flood(list) => self.copies.extend(list.iter().map(|v| copy(*v))),
                TapAction::ReplyArp => self.replies.push(reply),
                TapAction::Drop(_) => {}
            }
        }
        self.group(ports.len().max(1));
    }

    /// Fills `order` and `group_start` so that the copies of each socket are contiguous,
    /// each group in plan order.
    fn group(&mut self, sockets: usize) {
        self.group_start.clear();
        self.group_start.resize(sockets + 1, 0);
        for c in &self.copies {
            self.group_start[c.socket.min(sockets - 1) + 1] += 1;
        }
        for s in 0..sockets {
            self.group_start[s + 1] += self.group_start[s];
        }
        self.order.clear();
        self.order.resize(self.copies.len(), 0);
        // `group_start[s]` serves as the next free place of group `s` while filling, then
        // is shifted back.
        for (k, c) in self.copies.iter().enumerate() {
            let s = c.socket.min(sockets - 1);
            self.order[self.group_start[s]] = k;
            self.group_start[s] += 1;
        }
        for s in (1..=sockets).rev() {
            self.group_start[s] = self.group_start[s - 1];
        }
        self.group_start[0] = 0;
    }

    /// The copies of the last batch, by socket: (socket, copy indices in send order), for
    /// every socket with something to send.
    pub fn groups(&self) -> impl Iterator<Item = (usize, &[usize])> + '_ {
        self.group_start
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] < w[1])
            .map(|(s, w)| (s, &self.order[w[0]..w[1]]))
    }

    /// Copy `k` of the last batch.
    ///
    /// # Panics
    ///
    /// If `k` is not a copy of the last batch.
    pub fn copy(&self, k: usize) -> &Transmit {
        &self.copies[k]
    }

    /// Every copy of the last batch, in plan order.
    pub fn copies(&self) -> &[Transmit] {
        &self.copies
    }

    /// Copy `k` as the sender sends it; `frames` must be the batch last processed.
    ///
    /// # Panics
    ///
    /// If `k` is not a copy of the last batch.
    pub fn datagram<'a>(&'a self, frames: &'a TapFrames, k: usize) -> Datagram<'a> {
        let copy = &self.copies[k];
        let frame = frames.frame(copy.frame);
        let dst = copy.vtep.addr();
        match self.prepared[copy.frame] {
            Some(p) if p.vnet.gso_type != GsoType::None => Datagram::Superframe { dst, frame },
            _ => Datagram::Plain {
                dst,
                parts: [&copy.header, frame],
            },
        }
    }

    /// Cuts superframe copy `k` into segments, their header blocks written into `out`.
    /// `NotGso` for a copy that is a plain frame.
    ///
    /// # Panics
    ///
    /// If `k` is not a copy of the last batch, processed from `frames`.
    pub fn segments<'o>(
        &self,
        frames: &TapFrames,
        k: usize,
        out: &'o mut SegmentHeaders,
    ) -> Result<Segments<'o>, SegmentError> {
        let copy = &self.copies[k];
        let Some(p) = &self.prepared[copy.frame] else {
            return Err(SegmentError::NotGso);
        };
        let frame = frames.frame(copy.frame);
        match p.vnet.gso_type {
            GsoType::TcpV4 | GsoType::TcpV6 => {
                segment::split_tcp(frame, &p.layout, &p.vnet, &copy.header, out)
            }
            GsoType::UdpL4 => segment::split_udp(frame, &p.layout, &p.vnet, &copy.header, out),
            GsoType::None => Err(SegmentError::NotGso),
            GsoType::Udp => Err(SegmentError::Unsupported),
        }
    }

    /// ARP replies of the last batch, to write back to the TAP.
    pub fn replies(&self) -> &[[u8; ARP_REPLY_LEN]] {
        &self.replies
    }

    /// What the last batch dropped before the switch.
    pub fn counts(&self) -> EgressCounts {
        self.counts
    }
}

/// Reads a TAP frame's virtio-net header, finishes a plain frame's pending checksum,
/// dissects the frame and hashes its flow; `None` for a header vxtap cannot honour. A
/// superframe vxtap could not cut is refused here, rather than switched and then failed at
/// send time.
fn prepare(raw: &mut [u8], range: &PortRange) -> Option<Prepared> {
    if raw.len() <= VNET_LEN {
        return None;
    }
    let vnet = VirtioNetHeader::new_checked(&raw[..VNET_LEN])
        .and_then(|h| VirtioNetRepr::parse(&h))
        .ok()?;
    let frame = &mut raw[VNET_LEN..];
    let vnet = match vnet.gso_type {
        GsoType::None if vnet.needs_csum => {
            segment::finish_checksum(
                frame,
                usize::from(vnet.csum_start),
                usize::from(vnet.csum_offset),
            )
            .ok()?;
            VirtioNetRepr::NONE
        }
        GsoType::None => VirtioNetRepr::NONE,
        GsoType::TcpV4 | GsoType::TcpV6 | GsoType::UdpL4 => vnet,
        // UFO (IP fragmentation of UDP) is never enabled on the TAP.
        GsoType::Udp => return None,
    };
    let frame = &*frame;
    let layout = Layout::dissect(frame);
    match vnet.gso_type {
        GsoType::TcpV4 | GsoType::TcpV6 => {
            segment::TcpSuperframe::parse(frame, &layout, &vnet).ok()?;
        }
        GsoType::UdpL4 => {
            segment::UdpSuperframe::parse(frame, &layout, &vnet).ok()?;
        }
        GsoType::None | GsoType::Udp => {}
    }
    Some(Prepared {
        vnet,
        layout,
        src_port: range.pick(tunnel::flow_hash(frame, &layout)),
    })
}

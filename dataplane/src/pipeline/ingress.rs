//! From the underlay to the TAPs: datagrams in, TAP writes out, TCP runs coalesced.

use crate::coalesce;
use crate::dissect::Layout;
use crate::offload;
use crate::switch::NetworkAction;
use crate::tunnel;
use crate::wire::virtio_net::HEADER_LEN as VNET_LEN;
use crate::wire::vxlan::HEADER_LEN as VXLAN_LEN;
use crate::wire::Vni;
use crate::{Switch, Timestamp};
use core::net::SocketAddrV4;

/// Most segments coalesced into one superframe (a full 64 KB at the smallest common MSS).
pub const MAX_RUN: usize = 64;

/// A batch of received datagrams, as a `recvmmsg` leaves them.
pub trait Datagrams {
    /// How many datagrams the batch holds.
    fn count(&self) -> usize;
    /// The UDP payload of datagram `i`.
    fn payload(&self, i: usize) -> &[u8];
    /// The UDP payload of datagram `i`, to rewrite a superframe's head in place.
    fn payload_mut(&mut self, i: usize) -> &mut [u8];
    /// Who sent datagram `i`.
    fn source(&self, i: usize) -> SocketAddrV4;
    /// With GRO: the size of each datagram the kernel coalesced into slot `i` (all but the
    /// last are this long), or `None` for a single datagram.
    fn segment_size(&self, i: usize) -> Option<u16>;
    /// Whether datagram `i` lost its tail to a short buffer (it is dropped, not parsed).
    fn truncated(&self, i: usize) -> bool;
}

/// A received datagram held in memory, for batches that come from somewhere other than a
/// socket: tests, fuzzing, replayed captures. A `Vec` of them is a [`Datagrams`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldDatagram {
    /// The UDP payload.
    pub payload: Vec<u8>,
    /// Who sent it.
    pub source: SocketAddrV4,
    /// With GRO: the size of each datagram coalesced into it.
    pub segment_size: Option<u16>,
    /// Whether it lost its tail to a short buffer.
    pub truncated: bool,
}

impl HeldDatagram {
    /// A single, whole datagram from `source`.
    pub fn new(source: SocketAddrV4, payload: Vec<u8>) -> HeldDatagram {
        HeldDatagram {
            payload,
            source,
            segment_size: None,
            truncated: false,
        }
    }
}

impl Datagrams for Vec<HeldDatagram> {
    fn count(&self) -> usize {
        self.len()
    }
    fn payload(&self, i: usize) -> &[u8] {
        &self[i].payload
    }
    fn payload_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self[i].payload
    }
    fn source(&self, i: usize) -> SocketAddrV4 {
        self[i].source
    }
    fn segment_size(&self, i: usize) -> Option<u16> {
        self[i].segment_size
    }
    fn truncated(&self, i: usize) -> bool {
        self[i].truncated
    }
}

/// Where a network's frames go on this side: the TAP (by the caller's slot number) and its
/// MTU, which decides whether an oversize TCP segment is handed over for segmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// The caller's number for the TAP.
    pub slot: usize,
    /// The TAP's MTU.
    pub mtu: u32,
}

/// One decapsulated frame: bytes `start..end` of datagram `datagram`, for link `link`.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    datagram: usize,
    start: usize,
    end: usize,
    link: LinkInfo,
    /// Its dissection and what coalescing makes of it, once planned.
    layout: Option<(Layout, Option<coalesce::Segment>)>,
}

impl Delivery {
    fn segment(&self) -> Option<coalesce::Segment> {
        self.layout.and_then(|(_, segment)| segment)
    }
}

/// Deliveries `first..first + count` (one link), written as one frame behind `vnet`.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: usize,
    count: usize,
    /// Bytes of every frame after the first to leave out: its headers, when coalesced.
    skip: usize,
    vnet: [u8; VNET_LEN],
}

/// One write to a TAP: the frame behind its virtio-net header. Its parts come from
/// [`Ingress::parts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapWrite<'a> {
    /// Which TAP (the [`LinkInfo::slot`] of its network).
    pub slot: usize,
    /// The virtio-net header to write first.
    pub vnet: &'a [u8; VNET_LEN],
    /// Which run of the batch, for [`Ingress::parts`].
    pub run: usize,
    /// Datagrams joined in it (1 unless coalesced).
    pub frames: usize,
}

/// What one batch did besides the switch's own counting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngressCounts {
    /// Datagrams taken apart (a GRO train counts each datagram in it).
    pub datagrams: u64,
    /// Datagrams longer than the receive buffer, dropped before the switch.
    pub oversize: u64,
    /// Frames the switch delivered to a network that has no TAP on this side (a link being
    /// added or removed), dropped.
    pub no_link: u64,
}

/// The ingress half of the pipeline, with scratch reused from batch to batch.
#[derive(Debug)]
pub struct Ingress {
    deliveries: Vec<Delivery>,
    runs: Vec<Run>,
    counts: IngressCounts,
}

impl Ingress {
    /// Scratch for batches of up to `batch` slots, each maybe a GRO train of up to 64
    /// datagrams. (Longer trains grow the scratch once.)
    pub fn new(batch: usize) -> Ingress {
        Ingress {
            deliveries: Vec::with_capacity(batch * 64),
            runs: Vec::with_capacity(batch * 64),
            counts: IngressCounts::default(),
        }
    }

    /// First half of planning the batch `rx`, with the switch (so under its lock, and
    /// kept short): cuts GRO trains (when `gro`, the socket's) into datagrams, reads each
    /// VXLAN header and lets the switch decide; `link` names the TAP of a network. What is
    /// delivered is planned by [`plan`](Self::plan).
    pub fn decide<D: Datagrams + ?Sized>(
        &mut self,
        rx: &D,
        gro: bool,
        switch: &mut Switch,
        now: Timestamp,
        mut link: impl FnMut(Vni) -> Option<LinkInfo>,
    ) {
        self.deliveries.clear();
        self.runs.clear();
        self.counts = IngressCounts::default();
        for i in 0..rx.count() {
            if rx.truncated(i) {
                self.counts.oversize += 1;
                continue;
            }
            let payload = rx.payload(i);
            let src = rx.source(i);
            // A GRO train is datagrams of `segment_size` bytes, the last maybe shorter.
            let step = rx
                .segment_size(i)
                .filter(|_| gro)
                .map_or(payload.len(), usize::from)
                .max(1);
            // An empty datagram still goes through the switch once (and is counted).
            let mut start = 0;
            loop {
                let end = (start + step).min(payload.len());
                self.counts.datagrams += 1;
                let packet = tunnel::decap(&payload[start..end]);
                if let NetworkAction::Deliver { vni, .. } = switch.from_network(src, packet, now) {
                    match link(vni) {
                        Some(link) => self.deliveries.push(Delivery {
                            datagram: i,
                            start: start + VXLAN_LEN,
                            end,
                            link,
                            layout: None,
                        }),
                        None => self.counts.no_link += 1,
                    }
                }
                start = end;
                if start >= payload.len() {
                    break;
                }
            }
        }
    }

    /// Second half, without the switch: dissects every delivered frame, groups the frames
    /// into TAP writes, coalescing runs of one TCP flow (whose first frame is rewritten in
    /// place into the superframe's head), and gives every write its virtio-net header.
    /// `rx` must be the batch [`decide`](Self::decide) saw.
    pub fn plan<D: Datagrams + ?Sized>(&mut self, rx: &mut D) {
        for d in &mut self.deliveries {
            let Some(frame) = (d.datagram < rx.count())
                .then(|| rx.payload(d.datagram).get(d.start..d.end))
                .flatten()
            else {
                continue;
            };
            let layout = Layout::dissect(frame);
            d.layout = Some((layout, coalesce::inspect(frame, &layout)));
        }
        self.plan_runs(rx);
    }

    /// Groups deliveries into runs that coalesce into one superframe, rewrites the first
    /// frame of every run of two or more into the superframe's head, and gives every run
    /// its virtio-net header.
    fn plan_runs<D: Datagrams + ?Sized>(&mut self, rx: &mut D) {
        let mut k = 0;
        while k < self.deliveries.len() {
            let d = self.deliveries[k];
            let frame = &rx.payload(d.datagram)[d.start..d.end];
            let mut count = 1;
            let mut head = None;
            if let Some(first) = d.segment() {
                let (mut last, mut total) = (first, first.payload_len());
                while count < MAX_RUN {
                    let Some(e) = self.deliveries.get(k + count) else {
                        break;
                    };
                    let Some(next) = e.segment() else {
                        break;
                    };
                    if e.link.slot != d.link.slot {
                        break;
                    }
                    let next_frame = &rx.payload(e.datagram)[e.start..e.end];
                    if !coalesce::continues(frame, &first, &last, total, next_frame, &next) {
                        break;
                    }
                    total += next.payload_len();
                    last = next;
                    count += 1;
                }
                if count > 1 {
                    head = Some((first, total, last.psh()));
                }
            }
            let run = match head {
                Some((first, total, psh)) => {
                    let head = &mut rx.payload_mut(d.datagram)[d.start..d.end];
                    Run {
                        first: k,
                        count,
                        skip: first.payload_offset(),
                        vnet: coalesce::finish(head, &first, total, psh),
                    }
                }
                None => Run {
                    first: k,
                    count,
                    skip: 0,
                    vnet: match &d.layout {
                        Some((layout, _)) => offload::tap_header(frame, layout, d.link.mtu),
                        None => [0; VNET_LEN],
                    },
                },
            };
            self.runs.push(run);
            k += count;
        }
    }

    /// The TAP writes of the last batch, in arrival order.
    pub fn writes(&self) -> impl Iterator<Item = TapWrite<'_>> + '_ {
        self.runs.iter().enumerate().map(|(r, run)| TapWrite {
            slot: self.deliveries[run.first].link.slot,
            vnet: &run.vnet,
            run: r,
            frames: run.count,
        })
    }

    /// The parts of write `run` (after its virtio-net header), put into `out`; returns how
    /// many. `rx` must be the batch last processed.
    ///
    /// # Panics
    ///
    /// If `run` is not a write of the last batch.
    pub fn parts<'a, D: Datagrams + ?Sized>(
        &self,
        run: usize,
        rx: &'a D,
        out: &mut [&'a [u8]; MAX_RUN],
    ) -> usize {
        let run = &self.runs[run];
        let deliveries = &self.deliveries[run.first..run.first + run.count];
        for (j, d) in deliveries.iter().enumerate() {
            let skip = if j == 0 { 0 } else { run.skip };
            out[j] = &rx.payload(d.datagram)[d.start + skip..d.end];
        }
        run.count
    }

    /// What the last batch dropped besides the switch's drops.
    pub fn counts(&self) -> IngressCounts {
        self.counts
    }
}

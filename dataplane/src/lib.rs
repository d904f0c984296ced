//! vxtap's packet core: wire formats, the forwarding switch and the VXLAN tunnel.
//!
//! - [`wire`]: zero-copy parse and emit of Ethernet (with VLAN detection), ARP, IPv4, UDP,
//!   TCP and VXLAN, checked for untrusted input.
//! - [`switch`]: per-VNI forwarding tables with learning, ageing and limits, flood lists, the
//!   ARP proxy and source-VTEP admission, as pure decisions over an injected clock.
//! - [`tunnel`]: VXLAN decapsulation with a named reason for every refusal, and encapsulation
//!   with a flow-hashed outer source port.
//! - [`counters`]: drop reasons and per-network counters.
//! - [`coalesce`]: which TCP segments from the underlay join into one superframe for the TAP.
//! - [`offload`]: the checksum offload state of inner frames (what a TAP must be told).
//! - [`segment`]: TCP (TSO) and UDP (USO) superframes from the TAP cut into segments for one
//!   `UDP_SEGMENT` send, and `NEEDS_CSUM` checksums finished.
//! - [`dissect`]: where a frame's layers lie, computed once per frame and read by the flow
//!   hash, checksum offload, coalescing and segmentation.
//! - [`pipeline`]: the data path as pure functions from received bytes to plans: TAP frames
//!   to datagrams per source socket ([`pipeline::Egress`]), datagrams to TAP writes
//!   ([`pipeline::Ingress`]), encapsulation and decapsulation side by side.
//!
//! Those nine are the pure core: no I/O, no clock, no threads. Around them:
//! - [`io`]: the I/O shell (TAP queues, batched UDP, network namespaces); the only module
//!   with `unsafe`, all of it in `io::sys`.
//! - [`runtime`]: worker threads that read a batch, run it through the pipeline and write
//!   what it planned.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod coalesce;
pub mod counters;
pub mod dissect;
pub mod io;
pub mod offload;
pub mod pipeline;
pub mod runtime;
pub mod segment;
pub mod switch;
pub mod tunnel;
pub mod wire;

#[cfg(test)]
mod test_prng;

pub use counters::{DropCounters, DropReason, NetworkCounters, SwitchCounters};
pub use switch::{
    Admission, Event, FloodPolicy, NetworkAction, NetworkConfig, Switch, TapAction, Timestamp,
    ARP_REPLY_LEN,
};
pub use tunnel::{DecapPolicy, PortRange, Vtep};
pub use wire::{MacAddr, Vni};

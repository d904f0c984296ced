//! The property each fuzz target checks. Every function takes raw fuzzer bytes and panics
//! only when a property is broken.
//!
//! - [`decap`]: a UDP payload from the underlay. Never panics; a header that parses re-emits
//!   byte for byte; a delivered frame lies inside the datagram; every inner protocol the frame
//!   carries parses without panicking, and what parses re-emits identically.
//! - [`tap_frame`]: a frame from the TAP side through the switch, ARP proxy included. Every
//!   reply parses as a well-formed ARP reply to the requester.
//! - [`switch_ops`]: sequences of control and data operations against a model of the static
//!   entries: the learned cap holds, static entries never move, counters stay consistent.
//! - [`segment`]: a virtio-net header and a frame from a TAP with offloads. Finishing a checksum
//!   changes only its field and verifies; whatever splits, as TSO or as USO, gives
//!   equal-length header blocks and segments that parse with correct IP and TCP or UDP
//!   checksums and lengths, contiguous payloads (and TCP sequence numbers), the kernel's flags
//!   and IPv4 IDs, the same in chunks as in one go.
//! - [`pipeline`]: batches of TAP reads and underlay datagrams (GRO trains, truncation,
//!   unknown VTEPs, networks without a TAP) through the whole pipeline, both ways. Every frame
//!   and datagram is sent, written, answered or counted as exactly one drop; every copy is
//!   planned once; cut segments join back to their superframe's payload; a coalesced write is
//!   one IP packet as long as what is written.
//! - [`store_records`]: keys and values in the cluster store. Every record is accepted or
//!   refused once; every accepted one passes an independent re-check of the rules; checking
//!   is deterministic and stable against its own pins; names never add hosts-file lines.
//! - [`http_messages`]: HTTP/1.1 requests (the Docker plugin socket) or answers (the Docker
//!   engine, etcd) read one after another from a connection's bytes. Never panics; the same
//!   whatever the read sizes; heads well-formed, bodies within the cap and as long as said.
//! - [`cni_call`]: the CNI plugin's environment and stdin. Never panics; exits 0 or 1 with
//!   nothing or one JSON object; a failure is the spec's error with a known code.
//! - [`dns_query`]: a message to the overlay DNS resolver. Every reply is a well-formed
//!   response with the query's ID, at most 512 bytes over UDP; answers hold exactly what the
//!   names give, cut only with TC; only names not owned are forwarded.

mod cni_call;
mod decap;
mod dns_query;
mod http_messages;
mod pipeline;
mod segment;
mod store_records;
mod switch_ops;
mod tap_frame;

pub use cni_call::cni_call;
pub use decap::decap;
pub use dns_query::dns_query;
pub use http_messages::http_messages;
pub use pipeline::pipeline;
pub use segment::segment;
pub use store_records::store_records;
pub use switch_ops::switch_ops;
pub use tap_frame::tap_frame;

/// A fuzz target's property check.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name, for the corpus replay.
pub const TARGETS: &[(&str, Check)] = &[
    ("decap", decap),
    ("tap_frame", tap_frame),
    ("switch_ops", switch_ops),
    ("segment", segment),
    ("pipeline", pipeline),
    ("store_records", store_records),
    ("http_messages", http_messages),
    ("dns_query", dns_query),
    ("cni_call", cni_call),
];

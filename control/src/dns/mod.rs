//! The DNS resolver of an overlay network: one per overlay namespace, on a fixed link-local
//! address, for Docker's embedded DNS (127.0.0.11 in each container) to forward to.
//!
//! Docker's embedded DNS knows only the containers of its own host; it forwards everything
//! else to the upstream servers of daemon.json `"dns"`. Pointed at this resolver, it gets
//! the containers of the other hosts too: the resolver answers the names vxtap's store holds
//! ([`Names`], filled by the agent) and forwards every other query to the host's own
//! resolvers, from the daemon's namespace.
//!
//! - [`message`]: DNS messages, parsed and built; pure, bounded, fuzzed.
//! - [`decide`]: what to do with one message (answer, refuse, forward, drop); pure.
//! - [`Resolver`]: the sockets in the overlay namespace and the threads serving them, all
//!   bounded (pending forwards, TCP connections, every wait).
//!
//! This module never changes a namespace, address or route: the caller provides the
//! namespace with the listening address on one of its links.

pub mod message;

mod decide;
mod server;
mod upstream;
mod wait;

pub use decide::{decide, Decision, DropReason, Names};
pub use server::{
    Resolver, ResolverConfig, ResolverError, ResolverStats, MAX_PENDING_FORWARDS,
    MAX_TCP_CONNECTIONS, TCP_IDLE_TIMEOUT, TCP_MESSAGE_TIMEOUT, TCP_WRITE_TIMEOUT,
};
pub use upstream::{upstreams_from_resolv_conf, FORWARD_DEADLINE, MAX_UPSTREAMS, UPSTREAM_TIMEOUT};

/// The address every overlay namespace's resolver listens on (UDP and TCP).
pub const RESOLVER_ADDR: std::net::SocketAddrV4 =
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(169, 254, 53, 53), 53);

//! HTTP/1.1 over unix sockets, for Docker: a server for the libnetwork remote network-driver
//! and IPAM-driver plugin protocols (JSON `POST`s on a socket under `/run/docker/plugins/`),
//! and a client for the Docker engine's API on its socket. Both know nothing of Docker's
//! messages: bodies are bytes, the driver logic sits above.
//!
//! Hand-written, like the etcd client ([`crate::store`]'s etcd backend), which shares
//! [`wire`] with it. The subset needed is small and fixed: the engine and the plugin client
//! are Go's net/http, speaking HTTP/1.1 with `Content-Length` or chunked bodies, and nothing
//! here needs TLS, HTTP/2, compression, redirects or cookies. Blocking code with a thread
//! per connection fits a daemon that is otherwise blocking; hyper would bring an async
//! runtime (tokio) and its dependency tree into a process that has none, for a few requests
//! a minute; ureq is a client only, and would reach a unix socket only through a connector
//! of our own. Owning the socket also keeps the limits
//! in one visible place: connection counts, head and body caps, read deadlines that a
//! trickle cannot stretch, and a shutdown that ends every connection.
//!
//! - [`Server`]: binds the socket and serves a [`Handler`] until dropped.
//! - [`UnixClient`]: one request per connection to an API on a unix socket.
//! - [`wire`]: message syntax and framing, tested on captured bytes and fuzzed.

mod client;
mod server;
pub mod wire;

pub use client::{query_escape, ClientError, Reply, UnixClient};
pub use server::{Handler, Request, Response, Server, ServerError};

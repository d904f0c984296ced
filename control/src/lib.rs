//! vxtap's control side: the admin API and CLI, the daemon, and the cluster store that
//! tells every host's daemon which networks and endpoints exist.
//!
//! The `vxtap` binary (src/main.rs) is a thin layer over this library; integration tests
//! use the store and its conformance suite directly.

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod cni;
pub mod daemon;
pub mod demo;
pub mod dns;
pub mod docker;
pub mod http;
pub mod plumbing;
pub mod sim;
pub mod store;
pub mod topology;
pub mod unix_listener;

//! Shared pieces of vxtap's workspace-level checks.
//!
//! [`fuzz_checks`] holds the bodies of the cargo-fuzz targets, so the same code runs under
//! libFuzzer (`fuzz/`) and as an ordinary `cargo test` that replays the checked-in corpus
//! (`tests/fuzz_corpus.rs`).
//!
//! [`harness`] runs the real `vxtap` binary in network namespaces for the integration tests
//! of the data plane (`tests/dropin.rs`) and, later, of the control plane.

#![deny(unsafe_code)]

pub mod fuzz_checks;
pub mod harness;

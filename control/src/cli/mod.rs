//! The `vxtap` commands that talk to the daemon: argument parsing and output.

pub mod args;
pub mod output;

//! The `vxtap` command.

use clap::Parser;

/// vxtap: a userspace VXLAN data plane for container overlay networks.
///
/// It replaces the kernel vxlan device with a TAP in the overlay namespace and a
/// multithreaded userspace switch that speaks VXLAN (RFC 7348) on UDP 4789.
#[derive(Debug, Parser)]
#[command(name = "vxtap", version, about, long_about)]
struct Cli {}

fn main() {
    Cli::parse();
}

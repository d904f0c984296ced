//! A harness for integration tests that run vxtap for real: network namespaces as hosts,
//! overlay and container namespaces as Docker builds them, one `vxtap daemon` per host, and
//! traffic between the containers.
//!
//! - [`require_root`]: every namespace test calls it first, so without privileges it fails
//!   loudly instead of passing without having run.
//! - [`cmd`]: run a command and panic with its command line and stderr when it fails.
//! - [`netns`]: [`Netns`], a uniquely named namespace (IPv6 off, `lo` up) that kills what
//!   runs in it and deletes itself on drop, panics included.
//! - [`daemon`]: [`Daemon`], a `vxtap daemon` in a host namespace with its own run directory,
//!   and the `vxtap` commands that talk to it.
//! - [`docker`]: [`DockerEngine`], a real dockerd (with its own containerd) in a host
//!   namespace and a private mount namespace, and [`docker::busybox_image`] for it.
//! - [`podman`]: [`Podman`], a private podman (CNI backend) per host namespace whose
//!   containers join vxtap networks through vxtap's CNI plugin.
//! - [`topology`]: [`Topology`], N hosts on an underlay switch, each with one or more overlay
//!   networks (`br0` + vxtap link or kernel vxlan device + a container), and the static
//!   entries and flood lists a control plane would program.
//! - [`traffic`]: ping, and a TCP bulk transfer between containers compared by SHA-256.
//! - [`capture`]: AF_PACKET capture and injection of raw frames in a namespace, and decoding
//!   of captured VXLAN datagrams with `vxtap_dataplane::wire`.
//! - [`stats`]: reading counters out of `vxtap stats -j`.
//!
//! The harness never touches the root namespace's addresses, routes or links: every address
//! lives in a namespace it created, and every packet it sends goes to one of those. All waits
//! are bounded, so a broken overlay fails a test instead of hanging it; no assertion depends
//! on how fast anything is.

pub mod capture;
pub mod cluster;
pub mod cmd;
pub mod daemon;
pub mod docker;
pub mod docker_cluster;
pub mod etcd;
pub mod netns;
pub mod podman;
pub mod stats;
pub mod topology;
pub mod traffic;
pub mod upstream_dns;

#[allow(unsafe_code)]
mod sys;

pub use capture::{Capture, VxlanDatagram};
pub use daemon::Daemon;
pub use docker::DockerEngine;
pub use netns::{Netns, NetnsExt};
pub use podman::Podman;
pub use topology::{Container, HostKind, NetworkSpec, Topology};

use std::path::Path;
use std::time::{Duration, Instant};

pub use vxtap::topology::programs::missing_programs;

/// [`wait_until`], panicking with `what` if `check` does not hold within `limit`.
///
/// # Panics
///
/// As said.
pub fn wait_for(what: &str, limit: Duration, check: impl FnMut() -> bool) {
    assert!(
        wait_until(limit, check),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Polls `done` every 50 ms until it holds or `limit` passes; returns whether it held. For
/// state that changes asynchronously (counters, learned entries), never for timing.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Panics unless the namespace tests can run: effective uid 0 (for `ip netns`, `setns` and
/// AF_PACKET) and `/dev/net/tun` (for the daemon's TAPs).
///
/// # Panics
///
/// When either is missing, with a message saying which.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    assert!(
        euid == "0",
        "these tests need root and /dev/net/tun (they create network namespaces, TAPs and \
         AF_PACKET sockets): running as euid {euid}"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "these tests need root and /dev/net/tun: /dev/net/tun is missing"
    );
}

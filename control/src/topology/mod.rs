//! The one topology builder shared by `vxtap demo`, `vxtap bench` and the integration-test
//! harness: "hosts" as network namespaces on a veth underlay, an overlay namespace per host
//! and network holding `br0` and the tunnel port (vxtap's TAP or the kernel's vxlan device),
//! "containers" as namespaces on `br0`, and the static fdb / neigh entries or flood lists a
//! control plane would program.
//!
//! ```text
//!  underlay: a veth pair between two hosts (Underlay::Pair), or a bridge sw0 in a switch
//!            namespace with one port per host (Underlay::Switch); 198.18.0.<i>/24 on ul0
//!  host ns <p>h<i>: ul0, maybe a vxtap daemon
//!    overlay ns <p>o<n><i>: br0 10.0.0.1/24 ─ LINK (vxtap TAP or kernel vxlan) ─ veth0
//!      container ns <p>c<n><i>: eth0 10.0.0.<first+i-1>/24, MAC 02:42:0a:00:00:<ip>, MTU 1450
//! ```
//!
//! - [`Namespace`]: a named namespace (`ip netns add`, IPv6 off, `lo` up) that kills what is
//!   left in it and deletes itself when dropped, during a panic too.
//! - [`DaemonProcess`]: a `vxtap daemon` started in a host namespace, waited for, stopped.
//! - [`Topology`]: the builder and the guard of everything it made; generic over how a host's
//!   daemon is started and talked to ([`VtepControl`]), so the harness keeps its own daemon
//!   type and the demo its store-backed daemons.
//! - [`mounts`]: bind mounts left under a work dir, undone at teardown.
//!
//! Every name carries a prefix unique to the run; nothing is ever added to the root
//! namespace (links are created inside the namespaces, addresses only there), and nothing
//! this module did not create is ever removed.

mod builder;
mod daemon;
pub mod mounts;
mod namespace;
pub mod programs;
mod sys;

pub use builder::mac_for;
pub use builder::{Attachment, Container, Host, HostKind, NetworkSpec, Topology, Underlay};
pub use daemon::{
    last_lines, log_excerpt, log_tail, DaemonProcess, VtepControl, START_TIMEOUT, STOP_TIMEOUT,
};
pub use namespace::{Namespace, OWNERS_DIR};

use crate::plumbing::PlumbingError;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The UDP port every VTEP uses.
pub const VXLAN_PORT: u16 = 4789;
/// The overlay gateway address on every `br0`.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The underlay interface in every host namespace. Created inside the namespaces, never in
/// the root namespace, so the name cannot clash with anything.
pub const UNDERLAY_IF: &str = "ul0";
/// The underlay subnet's prefix length (198.18.0.0/15 is reserved for benchmarks, RFC 2544).
pub const UNDERLAY_PREFIX: u8 = 24;

/// Why building or tearing down a topology failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// An `ip`, `bridge` or `unshare` step failed (the error names the command and namespace).
    #[error(transparent)]
    Plumbing(#[from] PlumbingError),
    /// A namespace of that name exists already: another run, or a leftover.
    #[error("network namespace {name} exists already (another run, or a leftover)")]
    NamespaceExists {
        /// Its name.
        name: String,
    },
    /// A namespace could not be entered from a helper thread.
    #[error("entering network namespace {name}: {source}")]
    Enter {
        /// Its name.
        name: String,
        /// Why.
        source: vxtap_dataplane::io::IoError,
    },
    /// Something inside a namespace failed (a sysctl file, an ioctl).
    #[error("{what} in network namespace {name}: {source}")]
    InNamespace {
        /// What was being done.
        what: String,
        /// The namespace.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A daemon could not be started or did not come up; `tail` is the end of its log.
    #[error("the vxtap daemon of {host} {problem} (log {}):\n{tail}", log.display())]
    DaemonStart {
        /// The host's label.
        host: String,
        /// What went wrong.
        problem: String,
        /// Its log file.
        log: PathBuf,
        /// The telling part of that log.
        tail: String,
    },
    /// A daemon did not stop cleanly.
    #[error("stopping the vxtap daemon of {host} (pid {pid}): {problem}")]
    DaemonStop {
        /// The host's label.
        host: String,
        /// Its pid.
        pid: u32,
        /// What went wrong.
        problem: String,
    },
    /// A `vxtap` command against a daemon failed.
    #[error("`vxtap {args}` on {host} failed: {stderr}")]
    Vxtap {
        /// The host's label.
        host: String,
        /// The arguments.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A host or network index, or a request that does not fit the topology.
    #[error("{0}")]
    Shape(String),
    /// Waiting was interrupted (SIGINT, SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

/// Creates `parent/name` (or `name-2`, `name-3`, ... if taken) readable by root only: a
/// work dir for run dirs, logs and stores.
///
/// # Errors
///
/// `Io` if it cannot be created or restricted.
pub fn private_dir(parent: &Path, name: &str) -> Result<PathBuf, TopologyError> {
    let mut attempt = 1;
    loop {
        let dir = if attempt == 1 {
            parent.join(name)
        } else {
            parent.join(format!("{name}-{attempt}"))
        };
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // Whatever the umask.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(TopologyError::io("restricting", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(TopologyError::io("creating", dir)(e)),
        }
    }
}

impl TopologyError {
    /// A closure for `map_err` that files an I/O error on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> TopologyError {
        let path = path.into();
        move |source| TopologyError::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_get_a_fresh_name_when_taken() {
        let base = std::env::temp_dir().join(format!("vxtopo-test-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let first = private_dir(&base, "x").unwrap();
        let second = private_dir(&base, "x").unwrap();
        assert_ne!(first, second);
        assert!(second.to_string_lossy().ends_with("x-2"));
        let mode = std::fs::metadata(&first).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&base).unwrap();
    }
}

//! Network namespaces, addressed the way iproute2 addresses them, and a way to open fds in
//! one without moving the caller.
//!
//! A namespace is a file: a bind mount under `/var/run/netns` (what `ip netns add` makes) or
//! any `/proc/PID/ns/net`. Sockets and TAP devices belong to the namespace of the thread that
//! creates them, for life, whatever thread uses them later. [`run_in`] exploits that: it
//! enters the namespace on a short-lived helper thread, runs a closure there, and returns
//! what the closure opened. The calling thread's namespace never changes, so a daemon's
//! underlay sockets stay in the host namespace while its TAP lives in a container's.
//!
//! This module never creates or deletes namespaces and never changes anything inside one.

use super::{sys, IoError};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Where `ip netns add NAME` puts its bind mounts (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Resolves a namespace argument like iproute2: anything containing `/` is a path, a bare
/// name is `/var/run/netns/NAME`.
///
/// A bare name that is empty, `.` or `..` is refused rather than resolved to the directory
/// itself or its parent.
pub fn resolve(arg: &str) -> Result<PathBuf, IoError> {
    if arg.contains('/') {
        return Ok(PathBuf::from(arg));
    }
    if arg.is_empty() || arg == "." || arg == ".." {
        return Err(IoError::InvalidNetnsName {
            name: arg.to_owned(),
        });
    }
    Ok(Path::new(NETNS_RUN_DIR).join(arg))
}

/// Runs `f` on a helper thread inside the network namespace at `netns` and returns its
/// result.
///
/// The calling thread never changes namespace. Fds that `f` opens (sockets, TAP queues)
/// belong to `netns` and stay valid after the helper thread ends, since fds are per process.
/// If `f` panics, the panic resumes on the calling thread.
///
/// # Errors
///
/// `NetnsNotFound` if there is no such file, `NetnsOpen` if it cannot be opened, `Setns` if
/// the kernel refuses to enter it (not a network namespace, or no `CAP_SYS_ADMIN`), and
/// `NetnsThread` if no thread can be started.
pub fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, IoError> {
    let file = File::open(netns).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            IoError::NetnsNotFound {
                path: netns.to_owned(),
            }
        } else {
            IoError::NetnsOpen {
                path: netns.to_owned(),
                source,
            }
        }
    })?;
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("vxtap-netns".to_owned())
            .spawn_scoped(scope, || {
                sys::setns_net(file.as_fd()).map_err(|source| IoError::Setns {
                    path: netns.to_owned(),
                    source,
                })?;
                Ok(f())
            })
            .map_err(|source| IoError::NetnsThread {
                path: netns.to_owned(),
                source,
            })?;
        match helper.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs `f` in `netns` if one is given, or right here on the calling thread otherwise.
pub(crate) fn run_maybe_in<T: Send>(
    netns: Option<&Path>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, IoError> {
    match netns {
        Some(path) => run_in(path, f),
        None => Ok(f()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::testns::TestNetns;

    fn current_netns() -> PathBuf {
        std::fs::read_link("/proc/thread-self/ns/net").expect("readlink /proc/thread-self/ns/net")
    }

    #[test]
    fn resolves_like_iproute2() {
        assert_eq!(
            resolve("blue").unwrap(),
            PathBuf::from("/var/run/netns/blue")
        );
        assert_eq!(
            resolve("/proc/1/ns/net").unwrap(),
            PathBuf::from("/proc/1/ns/net")
        );
        assert_eq!(resolve("./x").unwrap(), PathBuf::from("./x"));
        for bad in ["", ".", ".."] {
            assert!(
                matches!(resolve(bad), Err(IoError::InvalidNetnsName { ref name }) if name == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn runs_inside_without_moving_the_caller() {
        let ns = TestNetns::new();
        let before = current_netns();
        let inside = run_in(ns.path(), current_netns).unwrap();
        assert_eq!(current_netns(), before, "the calling thread moved");
        assert_ne!(inside, before);
        // Same namespace as `ip netns exec` sees.
        let via_ip = ns.exec(&["readlink", "/proc/self/ns/net"]);
        assert_eq!(inside, PathBuf::from(via_ip.trim()));
    }

    #[test]
    fn missing_namespace_names_the_path() {
        let path = resolve("vxt-no-such-netns").unwrap();
        let err = run_in(&path, || ()).unwrap_err();
        assert!(
            matches!(err, IoError::NetnsNotFound { ref path } if path == Path::new("/var/run/netns/vxt-no-such-netns")),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "network namespace /var/run/netns/vxt-no-such-netns does not exist"
        );
    }

    #[test]
    fn a_file_that_is_not_a_netns_is_refused() {
        // Needs the same privileges as every namespace test, so fail the same way without.
        let _ns = TestNetns::new();
        for path in ["/proc/self/ns/uts", "/proc/self/status"] {
            let err = run_in(Path::new(path), || ()).unwrap_err();
            assert!(matches!(err, IoError::Setns { .. }), "{path}: {err:?}");
            assert!(err.to_string().contains(path), "{err}");
        }
    }

    #[test]
    fn a_panic_inside_reaches_the_caller() {
        let ns = TestNetns::new();
        let path = ns.path().to_owned();
        let result = std::panic::catch_unwind(|| run_in(&path, || panic!("boom")));
        assert!(result.is_err());
    }
}

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
//! Every namespace path is opened through [`open`], which never blocks (a FIFO in place of a
//! namespace opens at once) and refuses anything that is not a network namespace; the
//! [`NetnsFile`] it returns knows the namespace's identity ([`NetnsId`]), so callers can
//! tell that two paths name the same namespace.
//!
//! This module never creates or deletes namespaces and never changes anything inside one.

use super::{sys, IoError};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

/// The identity of a network namespace: device and inode of its nsfs file, what the kernel
/// prints as `net:[INODE]` for `readlink /proc/PID/ns/net`.
///
/// Two paths name the same namespace exactly when the identities of the files they open are
/// equal: `/var/run/netns/x`, `/run/netns/x`, a symlink to either and `/proc/PID/ns/net` of a
/// process inside it all give one `NetnsId`. An identity is only meaningful while something
/// keeps the namespace alive (a bind mount, a process, an open [`NetnsFile`]): the kernel
/// may reuse the inode number of a namespace that is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    dev: u64,
    ino: u64,
}

impl NetnsId {
    /// The device number of nsfs (`st_dev`).
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// The namespace's inode number (`st_ino`), the number in `net:[...]`.
    pub fn ino(&self) -> u64 {
        self.ino
    }
}

impl std::fmt::Display for NetnsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// An open file that is known to be a network namespace (see [`open`]). Holding it keeps
/// the namespace alive; [`run_in_file`] enters it without looking the path up again.
#[derive(Debug)]
pub struct NetnsFile {
    file: File,
    path: PathBuf,
    id: NetnsId,
}

impl NetnsFile {
    /// The path it was opened from (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which namespace it is.
    pub fn id(&self) -> NetnsId {
        self.id
    }
}

impl AsFd for NetnsFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Opens the network namespace file at `path` and checks that it is one, without ever
/// blocking on what the path turns out to be.
///
/// The path is first opened with `O_PATH`, which opens nothing (a FIFO does not wait, a
/// device is not opened) and pins the file; that file must lie on nsfs. Only then is the
/// pinned file opened for real, through `/proc/self/fd`, with `O_RDONLY | O_NONBLOCK |
/// O_NOCTTY | O_CLOEXEC`, so a path swapped in between changes nothing; and it must answer
/// `NS_GET_NSTYPE` with `CLONE_NEWNET`. Every path that names a
/// namespace goes through here: [`run_in`], and so TAP creation in a namespace.
///
/// # Errors
///
/// `NetnsNotFound` if there is no such file, `NotNetns` if it is something else (a regular
/// file, a FIFO, a directory, another kind of namespace such as `/proc/self/ns/mnt`),
/// `NetnsOpen` if it cannot be looked at or opened, `NetnsCheck` if the kernel cannot say
/// what kind of namespace it is.
pub fn open(path: &Path) -> Result<NetnsFile, IoError> {
    let open_error = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            IoError::NetnsNotFound {
                path: path.to_owned(),
            }
        } else {
            IoError::NetnsOpen {
                path: path.to_owned(),
                source,
            }
        }
    };
    let not_netns = |what: &'static str| IoError::NotNetns {
        path: path.to_owned(),
        what,
    };
    let check = |source| IoError::NetnsCheck {
        path: path.to_owned(),
        source,
    };
    // An O_PATH descriptor opens nothing (a FIFO does not wait, a device is not opened), and
    // pins the file the path named: a path swapped afterwards cannot change what is checked
    // and then opened for real through /proc/self/fd.
    let pinned = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(open_error)?;
    if !sys::fd_is_nsfs(pinned.as_fd()).map_err(check)? {
        return Err(not_netns("not a namespace file"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", pinned.as_raw_fd()))
        .map_err(open_error)?;
    drop(pinned);
    if !sys::fd_is_nsfs(file.as_fd()).map_err(check)? {
        return Err(not_netns("not a namespace file"));
    }
    match sys::namespace_type(file.as_fd()).map_err(check)? {
        libc::CLONE_NEWNET => {}
        libc::CLONE_NEWNS => return Err(not_netns("a mount namespace")),
        libc::CLONE_NEWUTS => return Err(not_netns("a UTS namespace")),
        libc::CLONE_NEWIPC => return Err(not_netns("an IPC namespace")),
        libc::CLONE_NEWPID => return Err(not_netns("a PID namespace")),
        libc::CLONE_NEWUSER => return Err(not_netns("a user namespace")),
        libc::CLONE_NEWCGROUP => return Err(not_netns("a cgroup namespace")),
        _ => return Err(not_netns("another kind of namespace")),
    }
    let meta = file.metadata().map_err(check)?;
    Ok(NetnsFile {
        id: NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        file,
        path: path.to_owned(),
    })
}

/// Runs `f` on a helper thread inside the network namespace at `netns` and returns its
/// result: [`open`], then [`run_in_file`].
///
/// The calling thread never changes namespace. Fds that `f` opens (sockets, TAP queues)
/// belong to `netns` and stay valid after the helper thread ends, since fds are per process.
/// If `f` panics, the panic resumes on the calling thread.
///
/// # Errors
///
/// As for [`open`] and [`run_in_file`].
pub fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, IoError> {
    run_in_file(&open(netns)?, f)
}

/// Runs `f` on a helper thread inside the network namespace `netns` (already opened and
/// checked by [`open`]) and returns its result. The calling thread never changes namespace;
/// if `f` panics, the panic resumes on the calling thread.
///
/// # Errors
///
/// `Setns` if the kernel refuses to enter it (no `CAP_SYS_ADMIN`), `NetnsThread` if no
/// thread can be started.
pub fn run_in_file<T: Send>(netns: &NetnsFile, f: impl FnOnce() -> T + Send) -> Result<T, IoError> {
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("vxtap-netns".to_owned())
            .spawn_scoped(scope, || {
                sys::setns_net(netns.as_fd()).map_err(|source| IoError::Setns {
                    path: netns.path.clone(),
                    source,
                })?;
                Ok(f())
            })
            .map_err(|source| IoError::NetnsThread {
                path: netns.path.clone(),
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
        let dir = std::env::temp_dir().join(format!("vxtap-netns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let regular = dir.join("regular");
        std::fs::write(&regular, b"").unwrap();
        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let cases = [
            (PathBuf::from("/proc/self/ns/uts"), "a UTS namespace"),
            (PathBuf::from("/proc/self/ns/mnt"), "a mount namespace"),
            (PathBuf::from("/proc/self/status"), "not a namespace file"),
            (regular, "not a namespace file"),
            // Without O_NONBLOCK this open would wait for a writer forever.
            (fifo, "not a namespace file"),
            (dir.clone(), "not a namespace file"),
        ];
        for (path, what) in cases {
            let err = run_in(&path, || ()).unwrap_err();
            assert!(
                matches!(err, IoError::NotNetns { what: w, .. } if w == what),
                "{}: {err:?}",
                path.display()
            );
            assert_eq!(
                err.to_string(),
                format!("{} is not a network namespace ({what})", path.display())
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_identity_is_the_namespace_not_the_path() {
        let ns = TestNetns::new();
        let other = TestNetns::new();
        let by_name = open(ns.path()).unwrap();
        let dir = std::env::temp_dir().join(format!("vxtap-netns-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(ns.path(), &link).unwrap();
        let by_link = open(&link).unwrap();
        let inside = run_in(ns.path(), || {
            open(Path::new("/proc/thread-self/ns/net")).unwrap().id()
        })
        .unwrap();
        assert_eq!(by_name.id(), by_link.id());
        assert_eq!(by_name.id(), inside);
        assert_ne!(by_name.id(), open(other.path()).unwrap().id());
        // The kernel's own name for it.
        let kernel = ns.exec(&["readlink", "/proc/self/ns/net"]);
        assert_eq!(by_name.id().to_string(), kernel.trim());
        // Entering through the handle lands in the same namespace.
        let entered = run_in_file(&by_link, current_netns).unwrap();
        assert_eq!(entered, PathBuf::from(kernel.trim()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_panic_inside_reaches_the_caller() {
        let ns = TestNetns::new();
        let path = ns.path().to_owned();
        let result = std::panic::catch_unwind(|| run_in(&path, || panic!("boom")));
        assert!(result.is_err());
    }
}

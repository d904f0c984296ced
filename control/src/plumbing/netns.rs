//! Persistent network namespaces bound to a file, as `ip netns add` does under /run/netns and
//! Docker under /var/run/docker/netns: the namespace lives as long as the bind mount, so it
//! survives the daemon (a killed daemon re-adopts it).

use super::PlumbingError;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// `statfs` magic of nsfs, the filesystem namespace files live on.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether `path` is a bound namespace (a mount of nsfs), not just a file.
pub fn is_bound(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type == NSFS_MAGIC)
}

/// Creates a new, empty network namespace bound at `path` (its directory is created).
/// An existing bound namespace there is kept (adopted); a plain file left by an interrupted
/// creation is reused.
///
/// # Errors
///
/// `Io` for the directory or file, `Netns` if the kernel refuses `unshare` or the mount.
pub fn create(path: &Path) -> Result<(), PlumbingError> {
    if is_bound(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| PlumbingError::Io {
                action: "creating",
                path: dir.to_owned(),
                source,
            })?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| PlumbingError::Io {
            action: "creating",
            path: path.to_owned(),
            source,
        })?;
    // util-linux's `unshare --net=FILE` makes the namespace and binds it to FILE; the bind
    // mount keeps it alive after that process exits. The daemon's own threads never move.
    let mut unshare = std::process::Command::new("unshare");
    unshare.arg(format!("--net={}", path.display())).arg("true");
    let line = format!("unshare --net={} true", path.display());
    let failure = match super::run(&mut unshare, &line, super::COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() && is_bound(path) => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(reason) = failure {
        let _ = std::fs::remove_file(path);
        return Err(PlumbingError::Netns {
            path: path.to_owned(),
            reason,
        });
    }
    Ok(())
}

/// Removes the namespace bound at `path`: unmounts it (lazily: a process still inside keeps
/// it alive, but it is no longer reachable here) and deletes the file. Missing is fine.
///
/// # Errors
///
/// `Io` if the file cannot be removed.
pub fn remove(path: &Path) -> Result<(), PlumbingError> {
    if is_bound(path) {
        if let Err(e) = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(path = %path.display(), error = %e, "unmounting namespace");
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PlumbingError::Io {
            action: "removing",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_file_is_not_a_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        std::fs::write(&file, b"").unwrap();
        assert!(!is_bound(&file));
        assert!(!is_bound(&dir.path().join("missing")));
        remove(&file).unwrap();
        assert!(!file.exists());
        remove(&file).unwrap();
    }

    #[test]
    fn create_binds_and_remove_unbinds() {
        if !rustix::process::geteuid().is_root() {
            panic!("this test needs root (CAP_SYS_ADMIN) to create network namespaces");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netns").join("ov-test");
        create(&path).unwrap();
        assert!(is_bound(&path));
        // Adopting an existing one is a no-op.
        create(&path).unwrap();
        let links = super::super::interfaces(&path).unwrap();
        assert_eq!(links, ["lo"]);
        remove(&path).unwrap();
        assert!(!path.exists());
    }
}

//! Finding and removing what a group of processes left behind: the processes that name a
//! directory on their command line, and cgroups by name. Shared by `vxtap demo docker` (its
//! engines) and the test harness (its Docker and podman engines).

use std::path::{Path, PathBuf};

/// Processes whose command line names something under `dir` (pid, command line), this one
/// excluded, and those whose executable is `except` (a vxtap daemon names an engine's API
/// socket, but is no part of the engine).
pub fn processes_naming(dir: &Path, except: Option<&Path>) -> Vec<(u32, String)> {
    // Only paths below it: another directory may share a prefix with this one.
    let needle = format!("{}/", dir.display());
    let except = except.and_then(|p| std::fs::canonicalize(p).ok());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            if pid == std::process::id() {
                return None;
            }
            if except.is_some() && std::fs::read_link(format!("/proc/{pid}/exe")).ok() == except {
                return None;
            }
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            line.contains(&needle)
                .then(|| (pid, line.trim().to_owned()))
        })
        .collect()
}

/// The cgroup directories named `name` at the top of the machine's hierarchies (cgroup v1:
/// one per controller; v2: the unified one), those that exist.
pub fn cgroups_named(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_owned()];
    if let Ok(entries) = std::fs::read_dir(root) {
        hierarchies.extend(entries.filter_map(|e| Some(e.ok()?.path())));
    }
    hierarchies
        .into_iter()
        .map(|h| h.join(name))
        .filter(|path| path.join("cgroup.procs").is_file())
        .collect()
}

/// Removes a cgroup and the (empty) cgroups below it, deepest first: `rmdir` is the only way
/// to remove one, and its control files go with it.
///
/// # Errors
///
/// The first directory that cannot be read or removed (a cgroup with processes left).
pub fn remove_cgroup(path: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup(&entry.path())?;
        }
    }
    std::fs::remove_dir(path)
}

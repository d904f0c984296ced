//! Finding the programs a topology drives (`ip`, `bridge`, `nsenter`, `iperf3`, `ping`) by
//! absolute path, searched like a shell would plus the sbin directories, and the `PATH`
//! given to daemons, which run `ip`, `nsenter` and `unshare` by name. Reads only.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Directories searched after `$PATH`: `su` without `-` keeps a user's PATH, which lacks
/// `/usr/sbin` (where Debian puts `ip`).
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The directories to search: each absolute directory of `path_var`, then the fallback
/// directories, without repeats.
fn search_dirs(path_var: Option<&OsStr>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(FALLBACK_DIRS.iter().map(PathBuf::from));
    let mut seen = Vec::new();
    for dir in dirs {
        // Relative PATH entries depend on the working directory; skip them.
        if dir.is_absolute() && !seen.contains(&dir) {
            seen.push(dir);
        }
    }
    seen
}

/// Where to look for `name`, in order.
fn candidates(name: &str, path_var: Option<&OsStr>) -> Vec<PathBuf> {
    search_dirs(path_var)
        .into_iter()
        .map(|dir| dir.join(name))
        .collect()
}

/// `$PATH` plus the sbin directories it lacks, for the daemons: they run `ip`, `nsenter`
/// and `unshare` by name.
pub fn child_path() -> OsString {
    let path_var = std::env::var_os("PATH");
    // Joining fails only on a directory containing `:`, which split_paths never yields.
    std::env::join_paths(search_dirs(path_var.as_deref()))
        .unwrap_or_else(|_| path_var.unwrap_or_default())
}

/// The absolute path of the program `name`, searched like a shell would (plus the sbin
/// directories), or `None`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH");
    candidates(name, path_var.as_deref())
        .into_iter()
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The programs of `needed` (program, Debian package) that cannot be found, each as
/// "program (Debian package P)".
pub fn missing_programs(needed: &[(&str, &str)]) -> Vec<String> {
    needed
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(program, package)| format!("{program} (Debian package {package})"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_path_then_fallbacks_without_repeats() {
        let found = candidates("ip", Some(OsStr::new("/usr/local/bin:/usr/bin:rel:/bin")));
        let found: Vec<&str> = found.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            found,
            [
                "/usr/local/bin/ip",
                "/usr/bin/ip",
                "/bin/ip",
                "/usr/sbin/ip",
                "/sbin/ip"
            ]
        );
        assert_eq!(candidates("ip", None).len(), FALLBACK_DIRS.len());
        let dirs = search_dirs(Some(OsStr::new("/opt/bin")));
        assert_eq!(
            std::env::join_paths(dirs).unwrap(),
            "/opt/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        );
    }

    #[test]
    fn missing_programs_name_their_package() {
        assert!(missing_programs(&[("sh", "dash")]).is_empty());
        assert_eq!(
            missing_programs(&[("no-such-program-vxtap", "pkg")]),
            ["no-such-program-vxtap (Debian package pkg)"]
        );
    }
}

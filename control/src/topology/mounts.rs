//! Finding and undoing mounts under a topology's work dir: control-plane daemons bind-mount
//! their overlay namespaces under `RUN_DIR/netns` (as Docker does under
//! `/var/run/docker/netns`), and a daemon that was killed leaves them behind.
//!
//! Mounts are read from `/proc/self/mountinfo` (the caller shares its mount namespace with
//! the daemons, which run under `nsenter --net` only). This module never touches a mount
//! outside the directory it is given.

use rustix::mount::{unmount, UnmountFlags};
use std::path::{Path, PathBuf};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Rounds of unmounting: a path can carry stacked mounts, each round removes the top one.
const MAX_ROUNDS: usize = 8;

/// Mount points strictly under `dir`, from the text of a mountinfo file, latest first (so
/// that a mount on top of another, or inside another, is undone first).
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        // Fields: ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS ...
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|point| point != dir && point.starts_with(dir))
        .collect();
    found.reverse();
    found
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points currently under `dir`.
///
/// # Errors
///
/// `/proc/self/mountinfo` cannot be read.
pub fn current_mounts_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(mounts_under(&std::fs::read_to_string(MOUNTINFO)?, dir))
}

/// Unmounts everything under `dir`; returns how many mounts were undone, or a description of
/// each one that could not be.
pub fn unmount_all_under(dir: &Path) -> Result<usize, Vec<String>> {
    let mut undone = 0;
    for _ in 0..MAX_ROUNDS {
        let points =
            current_mounts_under(dir).map_err(|e| vec![format!("reading {MOUNTINFO}: {e}")])?;
        if points.is_empty() {
            return Ok(undone);
        }
        let mut problems = Vec::new();
        for point in points {
            // A namespace file is busy only while a process holds it open through the path,
            // which never lasts; a lazy unmount is the fallback either way.
            let result = unmount(&point, UnmountFlags::empty())
                .or_else(|_| unmount(&point, UnmountFlags::DETACH));
            match result {
                Ok(()) => undone += 1,
                // Gone already (an outer mount went first): the next round re-reads the table.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
                Err(e) => problems.push(format!("unmounting {}: {e}", point.display())),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
    }
    match current_mounts_under(dir) {
        Ok(left) if left.is_empty() => Ok(undone),
        Ok(left) => Err(left
            .iter()
            .map(|p| format!("{} is still mounted", p.display()))
            .collect()),
        Err(e) => Err(vec![format!("reading {MOUNTINFO}: {e}")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:5 / /tmp rw shared:2 - tmpfs tmpfs rw
301 25 0:4 net:[4026532345] /tmp/vxdemo42/h1/netns/ov-4096 rw shared:1 - nsfs nsfs rw
302 25 0:4 net:[4026532346] /tmp/vxdemo42/h2/netns/ov-4096 rw shared:1 - nsfs nsfs rw
303 25 0:4 net:[4026532347] /tmp/vxdemo420/h1/netns/other rw shared:1 - nsfs nsfs rw
304 25 0:4 net:[4026532348] /tmp/vxdemo42/with\\040space rw shared:1 - nsfs nsfs rw
305 25 0:5 / /tmp/vxdemo42 rw shared:2 - tmpfs tmpfs rw
";

    #[test]
    fn finds_mounts_strictly_under_the_dir_latest_first() {
        let found = mounts_under(SAMPLE, Path::new("/tmp/vxdemo42"));
        assert_eq!(
            found,
            [
                PathBuf::from("/tmp/vxdemo42/with space"),
                PathBuf::from("/tmp/vxdemo42/h2/netns/ov-4096"),
                PathBuf::from("/tmp/vxdemo42/h1/netns/ov-4096"),
            ]
        );
        assert!(mounts_under(SAMPLE, Path::new("/nowhere")).is_empty());
        assert!(mounts_under("garbage\n\n", Path::new("/tmp")).is_empty());
    }

    #[test]
    fn unescapes_octal_sequences_only() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("back\\134slash"), "back\\slash");
        assert_eq!(unescape("tab\\011"), "tab\t");
        assert_eq!(unescape("not\\9xx"), "not\\9xx");
        assert_eq!(unescape("end\\04"), "end\\04");
        assert_eq!(unescape("\\777"), "\\777");
    }
}

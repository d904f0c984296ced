//! Name resolution for containers: `/etc/netns/NAME/hosts`, which `ip netns exec NAME`
//! bind-mounts over `/etc/hosts`, lists the endpoints of every network the namespace is on,
//! the way Docker's embedded DNS answers for container names.
//!
//! Only named namespaces (under /var/run/netns) get one. The file is replaced atomically.

use super::PlumbingError;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where iproute2 looks for per-namespace /etc files.
pub const NETNS_ETC_DIR: &str = "/etc/netns";

/// The hosts file of namespace `name`, or `None` if `netns` is a path rather than a name.
pub fn path_for(netns: &str) -> Option<PathBuf> {
    if netns.contains('/') || netns.is_empty() || netns == "." || netns == ".." {
        return None;
    }
    Some(Path::new(NETNS_ETC_DIR).join(netns).join("hosts"))
}

/// The file's content for namespace `netns` and its peers (IP, name), sorted and deduplicated.
/// A name that breaks the naming rules (a newline, a space, a `#`) is left out, so nothing can
/// add a line of its own, whatever reached this far.
pub fn render(netns: &str, peers: &[(Ipv4Addr, String)]) -> String {
    with_header(netns, &body(peers))
}

/// The peers' lines of a hosts file, as [`render`] writes them: namespaces on the same
/// networks share them, so they are made once.
pub fn body(peers: &[(Ipv4Addr, String)]) -> String {
    let mut peers: Vec<&(Ipv4Addr, String)> = peers
        .iter()
        .filter(|(_, name)| crate::cluster::check_name("endpoint", name).is_ok())
        .collect();
    peers.sort();
    peers.dedup();
    let mut out = String::with_capacity(peers.len() * 32);
    for (ip, name) in peers {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{ip}\t{name}");
    }
    out
}

/// The whole file for namespace `netns` with the peers' lines `body` (from [`body`]).
pub fn with_header(netns: &str, body: &str) -> String {
    let netns = crate::cluster::validate::escape(netns);
    let mut out = format!(
        "# Written by vxtap for network namespace {netns}: the endpoints of its overlay networks.\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    out.push_str(body);
    out
}

/// Removes the hosts file we wrote, and its directory if that leaves it empty.
///
/// # Errors
///
/// `Io` if the file exists but cannot be removed.
pub fn remove(path: &Path) -> Result<(), PlumbingError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(PlumbingError::Io {
                action: "removing",
                path: path.to_owned(),
                source,
            })
        }
    }
    if let Some(dir) = path.parent() {
        // Only succeeds when empty: other files someone put there stay.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_namespaces_get_a_file() {
        assert_eq!(path_for("c1").unwrap(), Path::new("/etc/netns/c1/hosts"));
        assert!(path_for("/proc/1/ns/net").is_none());
        assert!(path_for("..").is_none());
    }

    #[test]
    fn lists_every_peer_once() {
        let peers = vec![
            (Ipv4Addr::new(10, 0, 0, 3), "b".to_owned()),
            (Ipv4Addr::new(10, 0, 0, 2), "a".to_owned()),
            (Ipv4Addr::new(10, 0, 0, 3), "b".to_owned()),
        ];
        let text = render("c1", &peers);
        let lines: Vec<&str> = text.lines().skip(3).collect();
        assert_eq!(lines, ["10.0.0.2\ta", "10.0.0.3\tb"]);
        assert!(text.contains("127.0.0.1\tlocalhost"));
    }

    #[test]
    fn names_cannot_add_lines() {
        let peers = vec![
            (Ipv4Addr::new(10, 0, 0, 2), "a".to_owned()),
            (
                Ipv4Addr::new(10, 0, 0, 3),
                "x\n10.79.0.66\tbank.example".to_owned(),
            ),
            (Ipv4Addr::new(10, 0, 0, 4), "y bank.example".to_owned()),
            (Ipv4Addr::new(10, 0, 0, 5), "#z".to_owned()),
        ];
        let text = render("c1\n10.0.0.9 evil", &peers);
        assert!(!text.contains("bank.example"), "{text}");
        assert!(!text.contains("\n10.0.0.9"), "{text}");
        let lines: Vec<&str> = text.lines().skip(3).collect();
        assert_eq!(lines, ["10.0.0.2\ta"]);
    }

    #[test]
    fn writes_atomically_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c1").join("hosts");
        super::super::write_atomically(&path, b"one\n", 0o644).unwrap();
        super::super::write_atomically(&path, b"two\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        remove(&path).unwrap();
        assert!(!path.parent().unwrap().exists());
        remove(&path).unwrap();
    }
}

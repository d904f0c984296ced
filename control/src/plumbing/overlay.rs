//! What lives inside an overlay namespace: `br0` with the gateway address, the TAP attached
//! to it, and the veth pairs that connect containers.

use super::{interfaces, ip, ip_batch, PlumbingError};
use std::net::Ipv4Addr;
use std::path::Path;

/// The bridge in every overlay namespace, as Docker names it.
pub const BRIDGE: &str = "br0";

/// Makes sure `br0` exists in `overlay` with `gateway/prefix`, `mtu`, and is up (with `lo`).
/// Idempotent: an adopted namespace that already has it is left as it is.
///
/// # Errors
///
/// The first `ip` command that fails.
pub fn ensure_bridge(
    overlay: &Path,
    gateway: Ipv4Addr,
    prefix: u8,
    mtu: u32,
) -> Result<(), PlumbingError> {
    let mtu = mtu.to_string();
    if !interfaces(overlay)?.iter().any(|n| n == BRIDGE) {
        ip(
            overlay,
            &["link", "add", BRIDGE, "mtu", &mtu, "type", "bridge"],
        )?;
    }
    ip(
        overlay,
        &[
            "addr",
            "replace",
            &format!("{gateway}/{prefix}"),
            "dev",
            BRIDGE,
        ],
    )?;
    ip(overlay, &["link", "set", BRIDGE, "mtu", &mtu, "up"])?;
    ip(overlay, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Attaches `dev` (the TAP) to `br0` with learning off, and brings it up. `br0` learns
/// nothing behind the TAP: the remote MACs are programmed there ([`bridge_remote`]), so a
/// MAC that moves from another host to this one (an address released there and claimed
/// here, the MAC being derived from it) is never left learned behind the TAP, where `br0`
/// would drop every frame for the new local container.
///
/// # Errors
///
/// The failing `ip` or `bridge` command.
pub fn attach(overlay: &Path, dev: &str) -> Result<(), PlumbingError> {
    ip(overlay, &["link", "set", dev, "master", BRIDGE, "up"])?;
    super::bridge(overlay, &["link", "set", "dev", dev, "learning", "off"])?;
    Ok(())
}

/// Programs `br0`'s forwarding table for the remote MACs behind `dev` (the TAP): static
/// entries for `add`, `del` removed (one already gone is fine), in one `bridge -batch`.
///
/// # Errors
///
/// The batch file cannot be written, or `bridge` fails on an addition.
pub fn bridge_remote(
    overlay: &Path,
    dev: &str,
    add: &[&str],
    del: &[&str],
) -> Result<(), PlumbingError> {
    if add.is_empty() && del.is_empty() {
        return Ok(());
    }
    // Deletions one by one, so one already gone does not stop the rest.
    for mac in del {
        let _ = super::bridge(overlay, &["fdb", "del", mac, "dev", dev, "master"]);
    }
    if add.is_empty() {
        return Ok(());
    }
    let batch: String = add
        .iter()
        .map(|mac| format!("fdb replace {mac} dev {dev} master static\n"))
        .collect();
    // Beside the overlay's namespace file, in the daemon's own run directory (root's), not
    // in a directory others can write to.
    static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = overlay.parent().unwrap_or(Path::new("/"));
    let file = dir.join(format!(".bridge-batch-{n}"));
    super::write_atomically(&file, batch.as_bytes(), 0o600)?;
    let file_arg = file.to_string_lossy().into_owned();
    let done = super::bridge(overlay, &["-batch", &file_arg]);
    let _ = std::fs::remove_file(&file);
    done.map(|_| ())
}

/// A container interface to create.
#[derive(Debug, Clone)]
pub struct ContainerLink<'a> {
    /// Short tag for the veth names (e.g. the endpoint id's first 8 digits).
    pub tag: &'a str,
    /// The container's namespace file.
    pub container: &'a Path,
    /// MAC of the container end.
    pub mac: &'a str,
    /// Address and prefix length.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// MTU of both ends.
    pub mtu: u32,
    /// The interface's name in the container (default: the first free `ethN`).
    pub ifname: Option<&'a str>,
}

/// The first `ethN` not in `taken`.
pub fn free_ifname(taken: &[String]) -> Option<String> {
    (0..1000)
        .map(|n| format!("eth{n}"))
        .find(|name| !taken.contains(name))
}

/// Creates a veth pair: one end on `br0` in `overlay`, the other moved into the container as
/// the next free `ethN` with the MAC, address and MTU given, up. Returns the container-side
/// name. On failure, whatever was created is removed again.
///
/// # Errors
///
/// `NoNetns` if the container namespace is gone, `NoIfname`, or the failing `ip` command.
pub fn connect_container(
    overlay: &Path,
    link: &ContainerLink<'_>,
) -> Result<String, PlumbingError> {
    // Before anything is created: nothing there, or not a network namespace. The veth is
    // moved into the namespace held here, not into whatever the path names later.
    let container = super::check_netns(link.container)?;
    let taken = interfaces(link.container)?;
    let ifname = match link.ifname {
        Some(name) if taken.iter().any(|t| t == name) => {
            return Err(PlumbingError::IfnameTaken {
                netns: link.container.to_owned(),
                ifname: name.to_owned(),
            })
        }
        Some(name) => name.to_owned(),
        None => {
            free_ifname(&taken).ok_or_else(|| PlumbingError::NoIfname(link.container.to_owned()))?
        }
    };
    let outer = format!("ve{}", link.tag);
    let inner = format!("vc{}", link.tag);
    let mtu = link.mtu.to_string();
    let held = super::held_path(&container);
    // One batch per namespace. A failure part-way through the first may leave the pair
    // (either end removes both): it is deleted below, as after any other failure.
    let outside = ip_batch(
        overlay,
        &[
            &[
                "link", "add", &outer, "mtu", &mtu, "type", "veth", "peer", "name", &inner, "mtu",
                &mtu,
            ],
            &["link", "set", &outer, "master", BRIDGE, "up"],
            &["link", "set", &inner, "netns", &held],
        ],
    );
    let address = format!("{}/{}", link.ip, link.prefix);
    let configured = outside.and_then(|_| {
        // From here the pair spans both namespaces; deleting either end removes both.
        let inside = ip_batch(
            link.container,
            &[
                &["link", "set", &inner, "name", &ifname, "address", link.mac],
                &["addr", "add", &address, "dev", &ifname],
                &["link", "set", &ifname, "up"],
                &["link", "set", "lo", "up"],
            ],
        );
        if inside.is_err() {
            let _ = ip(link.container, &["link", "del", &inner]);
            let _ = ip(link.container, &["link", "del", &ifname]);
        }
        inside
    });
    if let Err(e) = configured {
        let _ = ip(overlay, &["link", "del", &outer]);
        return Err(e);
    }
    Ok(ifname)
}

/// The veth ends of a Docker endpoint tagged `tag`: `(outer, inner)`.
pub fn docker_veth_names(tag: &str) -> (String, String) {
    (format!("ve{tag}"), format!("vd{tag}"))
}

/// Creates the veth pair of a Docker endpoint: the outer end on `br0` in `overlay`, the inner
/// end (see [`docker_veth_names`]) with `mac` and `mtu` in the daemon's own namespace, where dockerd
/// (which runs there too) finds it and moves it into the container as `ethN`. A pair left by
/// a daemon that was killed midway is replaced. On failure nothing is left.
///
/// # Errors
///
/// The failing `ip` command.
pub fn docker_veth(overlay: &Path, tag: &str, mac: &str, mtu: u32) -> Result<(), PlumbingError> {
    let (outer, inner) = docker_veth_names(tag);
    let here = super::check_netns(Path::new("/proc/self/ns/net"))?;
    let here_path = Path::new("/proc/self/ns/net");
    remove_docker_veth(overlay, tag)?;
    let mtu = mtu.to_string();
    ip(
        overlay,
        &[
            "link", "add", &outer, "mtu", &mtu, "type", "veth", "peer", "name", &inner, "mtu",
            &mtu, "address", mac,
        ],
    )?;
    let configured = ip(overlay, &["link", "set", &outer, "master", BRIDGE, "up"])
        .and_then(|_| {
            ip(
                overlay,
                &["link", "set", &inner, "netns", &super::held_path(&here)],
            )
        })
        .and_then(|_| ip(here_path, &["link", "set", &inner, "up"]));
    if let Err(e) = configured {
        let _ = ip(overlay, &["link", "del", &outer]);
        return Err(e);
    }
    Ok(())
}

/// Removes a Docker endpoint's veth pair, wherever its inner end is (back in the daemon's
/// namespace after Docker's Leave, or still in a container); a pair already gone is fine.
///
/// # Errors
///
/// The `ip link del` failure, when an end exists but cannot be removed.
pub fn remove_docker_veth(overlay: &Path, tag: &str) -> Result<(), PlumbingError> {
    let (outer, inner) = docker_veth_names(tag);
    if overlay.exists() && interfaces(overlay)?.contains(&outer) {
        ip(overlay, &["link", "del", &outer])?;
    }
    let here = Path::new("/proc/self/ns/net");
    if interfaces(here)?.contains(&inner) {
        ip(here, &["link", "del", &inner])?;
    }
    Ok(())
}

/// Removes the container's `ifname` (and with it the veth end on `br0`). A container
/// namespace or interface that is already gone is fine.
///
/// # Errors
///
/// The `ip link del` failure, when the interface exists but cannot be removed.
pub fn disconnect_container(container: &Path, ifname: &str) -> Result<(), PlumbingError> {
    if !container.exists() || !interfaces(container)?.iter().any(|n| n == ifname) {
        return Ok(());
    }
    ip(container, &["link", "del", ifname])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_free_eth() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(free_ifname(&names(&["lo"])).unwrap(), "eth0");
        assert_eq!(
            free_ifname(&names(&["lo", "eth0", "eth2"])).unwrap(),
            "eth1"
        );
    }
}

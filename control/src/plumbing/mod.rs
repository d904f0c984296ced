//! Namespace and link plumbing for overlay networks, the way Docker's overlay driver lays
//! it out: one namespace per network, bind-mounted under `RUN_DIR/netns/`, holding `br0`
//! (with the gateway address), the vxtap TAP, and one veth per local container whose other
//! end is the container's `ethN`.
//!
//! Links and addresses are set with iproute2 run inside the namespace through `nsenter`, so
//! the daemon's own threads never change namespace; namespaces are made and bound with
//! util-linux `unshare --net=FILE`. Every failure says
//! which command, in which namespace, and what the kernel answered.

pub mod hosts;
pub mod netns;
pub mod overlay;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a plumbing step failed.
#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command printed something unexpected.
    #[error("`{command}` printed something unexpected: {reason}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong.
        reason: String,
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
    /// The namespace does not exist.
    #[error("network namespace {0} does not exist")]
    NoNetns(PathBuf),
    /// A namespace could not be created.
    #[error("creating network namespace {path}: {reason}")]
    Netns {
        /// Where.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No free interface name in the container.
    #[error("no free ethN name left in {0}")]
    NoIfname(PathBuf),
}

/// Writes `content` to `path` atomically: a temporary file beside it, then a rename, so a
/// reader sees the old content or the new, never a mix. The directory is created if missing.
///
/// # Errors
///
/// `Io` for the directory, the temporary file or the rename.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<(), PlumbingError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| PlumbingError::Io {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.vxtap-tmp"));
    std::fs::write(&tmp, content).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("renaming into", path))
}

/// Runs `ip ARGS` inside the network namespace at `netns` and returns its stdout.
///
/// # Errors
///
/// `Spawn` or `Command` (with ip's stderr).
pub fn ip(netns: &Path, args: &[&str]) -> Result<String, PlumbingError> {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", netns.display()))
        .arg("ip")
        .args(args);
    let line = format!("ip {} (in {})", args.join(" "), netns.display());
    let output = command.output().map_err(|source| PlumbingError::Spawn {
        command: line.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(PlumbingError::Command {
            command: line,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Interface names in the namespace at `netns`.
///
/// # Errors
///
/// As for [`ip`], or `Output` if `ip -j` printed something that is not a link list.
pub fn interfaces(netns: &Path) -> Result<Vec<String>, PlumbingError> {
    let json = ip(netns, &["-j", "link", "show"])?;
    parse_link_names(&json).map_err(|reason| PlumbingError::Output {
        command: format!("ip -j link show (in {})", netns.display()),
        reason,
    })
}

fn parse_link_names(json: &str) -> Result<Vec<String>, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let links = value.as_array().ok_or("not a JSON array")?;
    links
        .iter()
        .map(|l| {
            l["ifname"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "a link without ifname".to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_come_from_ip_json() {
        let json = r#"[{"ifindex":1,"ifname":"lo"},{"ifindex":5,"ifname":"eth0","link_index":6}]"#;
        assert_eq!(parse_link_names(json).unwrap(), ["lo", "eth0"]);
        assert!(parse_link_names("{}").is_err());
        assert!(parse_link_names(r#"[{"ifindex":1}]"#).is_err());
        assert!(parse_link_names("garbage").is_err());
    }
}

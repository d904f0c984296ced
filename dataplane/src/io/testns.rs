//! Test-only: throwaway network namespaces for the I/O shell's tests.
//!
//! Each [`TestNetns`] is a fresh, uniquely named namespace (`vxt-<pid>-<n>`) with its
//! loopback up, deleted when the guard drops, panics included. Tests put every address,
//! route, TAP and socket they need inside such namespaces and never touch the root
//! namespace's configuration.
//!
//! Without root or `/dev/net/tun` the tests fail loudly: a test that silently passes without
//! having run proves nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Serialises `ip netns add/del`: the first `add` sets up the shared `/var/run/netns` mount,
/// and concurrent first runs would stack mounts.
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace that exists for the lifetime of the guard.
pub(crate) struct TestNetns {
    name: String,
    path: PathBuf,
}

/// Panics unless the tests can run: root (for `ip netns` and `setns`) and `/dev/net/tun`.
pub(crate) fn require_privileges() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    assert!(
        euid == "0",
        "needs root and /dev/net/tun: running as uid {euid}"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "needs root and /dev/net/tun: /dev/net/tun is missing"
    );
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl TestNetns {
    /// Creates a fresh namespace with `lo` up.
    ///
    /// # Panics
    ///
    /// Without root or `/dev/net/tun`, or if `ip netns add` fails.
    pub fn new() -> TestNetns {
        require_privileges();
        let name = format!(
            "vxt-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|err| err.into_inner());
            if let Err(err) = run("ip", &["netns", "add", &name]) {
                panic!("needs root and /dev/net/tun: {err}");
            }
        }
        let netns = TestNetns {
            path: Path::new(super::netns::NETNS_RUN_DIR).join(&name),
            name,
        };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ip -n NAME ARGS...`, or the error text.
    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip -n NAME ARGS...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|err| panic!("{err}"))
    }

    /// `ip netns exec NAME ARGS...`, panicking on failure.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full).unwrap_or_else(|err| panic!("{err}"))
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|err| err.into_inner());
        if let Err(err) = run("ip", &["netns", "del", &self.name]) {
            // Never panic in drop (it may run during a panic); say why cleanup failed.
            eprintln!("cleanup: {err}");
        }
    }
}

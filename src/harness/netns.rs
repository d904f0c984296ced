//! [`Netns`]: a throwaway network namespace that cleans up after itself.
//!
//! Names are unique per process and per test (`vxt` + 4 digits of the pid + 3 of a sequence
//! number, then a role such as `h1` or `c02`), so tests run in parallel and next to other
//! test binaries. Each namespace starts with IPv6 disabled (no neighbour discovery or MLD
//! reports to disturb captures and counters) and `lo` up. Dropping the guard kills every process left in the namespace and
//! deletes it, during a panic too. Nothing here touches the root namespace.

use super::cmd;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Serialises `ip netns add/del`: the first `add` of a boot sets up the shared
/// `/var/run/netns` mount, and concurrent first runs would stack mounts.
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix for one test's namespaces: `vxt` + 4 digits of the pid + 3 of a
/// per-process sequence number, e.g. `vxt4821007`.
pub fn unique_prefix() -> String {
    format!(
        "vxt{:04}{:03}",
        std::process::id() % 10_000,
        SEQUENCE.fetch_add(1, Ordering::Relaxed) % 1000
    )
}

/// A network namespace that exists for the lifetime of the guard.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates namespace `PREFIX ROLE` (see [`unique_prefix`]) with IPv6 off and `lo` up.
    ///
    /// # Panics
    ///
    /// Without root (see [`super::require_root`]), or if `ip netns add` fails.
    pub fn new(prefix: &str, role: &str) -> Netns {
        super::require_root();
        let name = format!("{prefix}{role}");
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            cmd::ip(&["netns", "add", &name]);
        }
        // From here on, Drop deletes it even if the rest of the setup panics.
        let netns = Netns {
            path: Path::new(vxtap_dataplane::io::netns::NETNS_RUN_DIR).join(&name),
            name,
        };
        if Path::new("/proc/sys/net/ipv6").exists() {
            // /proc/sys/net shows the namespace of the thread that opens it.
            for knob in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6");
                netns
                    .run_in(|| std::fs::write(&path, "1"))
                    .unwrap_or_else(|e| panic!("{path} in {}: {e}", netns.name));
            }
        }
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// Creates a namespace with a prefix of its own, for tests that need just one.
    pub fn unique(role: &str) -> Netns {
        Netns::new(&unique_prefix(), role)
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file under `/var/run/netns`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ip -n NAME ARGS...`, panicking on failure; returns stdout.
    pub fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        cmd::checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `ip -n NAME ARGS...`, whatever the exit status.
    pub fn try_ip<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        cmd::output(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `bridge -n NAME ARGS...`, panicking on failure.
    pub fn bridge<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        cmd::checked(Command::new("bridge").args(["-n", &self.name]).args(args))
    }

    /// A `Command` that runs `program` inside the namespace (`ip netns exec NAME program`).
    /// The program replaces `ip`, so the child's pid is the program's.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// `ip netns exec NAME ARGS...`, panicking on failure; returns stdout.
    pub fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let (program, rest) = args.split_first().expect("a command to run");
        cmd::checked(self.command(&program.as_ref().to_string_lossy()).args(rest))
    }

    /// `ip netns exec NAME ARGS...`, whatever the exit status.
    pub fn try_exec<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let (program, rest) = args.split_first().expect("a command to run");
        cmd::output(self.command(&program.as_ref().to_string_lossy()).args(rest))
    }

    /// Runs `f` on a helper thread inside the namespace (sockets it opens stay in the
    /// namespace); see `vxtap_dataplane::io::netns::run_in`.
    ///
    /// # Panics
    ///
    /// If the namespace cannot be entered, or if `f` panics.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        vxtap_dataplane::io::netns::run_in(&self.path, f)
            .unwrap_or_else(|err| panic!("entering {}: {err}", self.name))
    }

    /// The interface index of `ifname` inside the namespace.
    ///
    /// # Panics
    ///
    /// If there is no such interface.
    pub fn ifindex(&self, ifname: &str) -> u32 {
        let json = self.ip(&["-j", "link", "show", "dev", ifname]);
        let value: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|err| panic!("ip -j link show {ifname}: {err}: {json}"));
        value[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| panic!("no ifindex for {ifname} in {}: {json}", self.name))
    }

    /// Names of the interfaces in the namespace.
    pub fn interfaces(&self) -> Vec<String> {
        let json = self.ip(&["-j", "link", "show"]);
        let value: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|err| panic!("ip -j link show: {err}: {json}"));
        value
            .as_array()
            .map(|links| {
                links
                    .iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Pids of the processes inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        let out = cmd::try_run("ip", &["netns", "pids", &self.name]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| p != std::process::id())
            .collect()
    }

    /// Kernel vxlan devices in the namespace (`ip -d link show type vxlan`), one line each.
    pub fn vxlan_devices(&self) -> Vec<String> {
        self.ip(&["-o", "-d", "link", "show", "type", "vxlan"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes the test left behind (a daemon whose guard was leaked, a ping): they
        // were all started by this test inside this namespace.
        let pids = self.pids();
        for &pid in &pids {
            let _ = super::sys::signal(pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pids.is_empty() && !self.pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Per-namespace /etc files (a hosts file vxtap wrote for a container): the name is
        // this test's own, so nothing else lives there.
        let etc = Path::new("/etc/netns").join(&self.name);
        if etc.exists() {
            let _ = std::fs::remove_dir_all(&etc);
        }
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let out = cmd::try_run("ip", &["netns", "del", &self.name]);
        if !out.status.success() {
            // Never panic in drop (it may run during a panic); say why cleanup failed.
            eprintln!(
                "cleanup: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

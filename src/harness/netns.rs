//! [`Netns`]: a throwaway network namespace that cleans up after itself — the topology
//! builder's [`vxtap::topology::Namespace`], with the panicking helpers tests want
//! ([`NetnsExt`]).
//!
//! Names are unique per process and per test (`vxt` + 4 digits of the pid + 3 of a sequence
//! number, then a role such as `h1` or `c02`), so tests run in parallel and next to other
//! test binaries. Each namespace starts with IPv6 disabled (no neighbour discovery or MLD
//! reports to disturb captures and counters) and `lo` up. Dropping the guard kills every
//! process left in the namespace and deletes it, during a panic too. Nothing here touches
//! the root namespace.

use super::cmd;
use std::ffi::OsStr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace that exists for the lifetime of the guard.
pub type Netns = vxtap::topology::Namespace;

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

/// The tests' helpers on a [`Netns`]: each panics, with the command and its stderr, when
/// the step fails.
pub trait NetnsExt: Sized {
    /// Creates namespace `PREFIX ROLE` (see [`unique_prefix`]) with IPv6 off and `lo` up.
    ///
    /// # Panics
    ///
    /// Without root (see [`super::require_root`]), or if the namespace cannot be made.
    fn new(prefix: &str, role: &str) -> Self;

    /// Creates a namespace with a prefix of its own, for tests that need just one.
    fn unique(role: &str) -> Self {
        Self::new(&unique_prefix(), role)
    }

    /// `ip -n NAME ARGS...`, panicking on failure; returns stdout.
    fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> String;

    /// `ip -n NAME ARGS...`, whatever the exit status.
    fn try_ip<S: AsRef<OsStr>>(&self, args: &[S]) -> Output;

    /// `bridge -n NAME ARGS...`, panicking on failure.
    fn bridge<S: AsRef<OsStr>>(&self, args: &[S]) -> String;

    /// `ip netns exec NAME ARGS...`, panicking on failure; returns stdout.
    fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> String;

    /// `ip netns exec NAME ARGS...`, whatever the exit status.
    fn try_exec<S: AsRef<OsStr>>(&self, args: &[S]) -> Output;

    /// Runs `f` on a helper thread inside the namespace (sockets it opens stay in the
    /// namespace).
    ///
    /// # Panics
    ///
    /// If the namespace cannot be entered, or if `f` panics.
    fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T;

    /// The interface index of `ifname` inside the namespace.
    ///
    /// # Panics
    ///
    /// If there is no such interface.
    fn ifindex(&self, ifname: &str) -> u32;

    /// Names of the interfaces in the namespace.
    fn interfaces(&self) -> Vec<String>;

    /// Kernel vxlan devices in the namespace (`ip -d link show type vxlan`), one line each.
    fn vxlan_devices(&self) -> Vec<String>;
}

impl NetnsExt for Netns {
    fn new(prefix: &str, role: &str) -> Netns {
        super::require_root();
        let name = format!("{prefix}{role}");
        Netns::create(&name).unwrap_or_else(|e| panic!("creating namespace {name}: {e}"))
    }

    fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        cmd::checked(Command::new("ip").args(["-n", self.name()]).args(args))
    }

    fn try_ip<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        cmd::output(Command::new("ip").args(["-n", self.name()]).args(args))
    }

    fn bridge<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        cmd::checked(Command::new("bridge").args(["-n", self.name()]).args(args))
    }

    fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let (program, rest) = args.split_first().expect("a command to run");
        cmd::checked(self.command(program).args(rest))
    }

    fn try_exec<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let (program, rest) = args.split_first().expect("a command to run");
        cmd::output(self.command(program).args(rest))
    }

    fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.enter(f).unwrap_or_else(|err| panic!("{err}"))
    }

    fn ifindex(&self, ifname: &str) -> u32 {
        let json = self.ip(&["-j", "link", "show", "dev", ifname]);
        let value: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|err| panic!("ip -j link show {ifname}: {err}: {json}"));
        value[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| panic!("no ifindex for {ifname} in {}: {json}", self.name()))
    }

    fn interfaces(&self) -> Vec<String> {
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

    fn vxlan_devices(&self) -> Vec<String> {
        self.ip(&["-o", "-d", "link", "show", "type", "vxlan"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

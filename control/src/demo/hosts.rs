//! The demo's world and the guard that undoes it: two "hosts" (network namespaces joined by
//! a veth underlay), a "container" namespace per host (not for the Docker demo, whose
//! engines make their containers), a vxtap daemon per host with a directory store shared in
//! a temp dir, and whatever the demo asked those daemons to make.
//!
//! [`Lab`] records each thing as it is created and [`Lab::teardown`] undoes them in order:
//! endpoints, the network, the daemons (SIGTERM, then SIGKILL), the namespaces, the hosts
//! files under `/etc/netns`, leftover bind mounts, the temp dir. Dropping a `Lab` that was
//! neither torn down nor kept tears it down, so an early return or a panic cleans up too.
//! Every name carries the run's prefix (`vxdemo<pid>`); nothing is ever added to the root
//! namespace, and nothing without that prefix is ever removed.

use super::check;
use super::cmd::{self, Limits};
use super::error::DemoError;
use crate::topology::mounts;
use std::ffi::OsString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vxtap_dataplane::io::netns;

/// How long a daemon may take to open its admin socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon may take to exit after SIGTERM (it waits up to 11 s for admin clients).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Limit for one `ip` command.
const IP_SECONDS: u64 = 10;
/// Limit for one `vxtap` command (the client itself waits up to 30 s for an answer).
pub(crate) const VXTAP_SECONDS: u64 = 40;
/// Daemon log lines shown when something fails.
pub(crate) const LOG_LINES: usize = 12;
/// The overlay network the demo creates.
pub(crate) const NETWORK: &str = "demo";
/// Where `ip netns exec` finds per-namespace files such as `hosts`.
const ETC_NETNS: &str = "/etc/netns";

/// Absolute paths of the programs the demo runs.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// iproute2's `ip`.
    pub(crate) ip: PathBuf,
    /// util-linux's `nsenter`.
    pub(crate) nsenter: PathBuf,
    /// iputils' `ping`.
    pub(crate) ping: PathBuf,
    /// This very `vxtap` binary.
    pub(crate) vxtap: PathBuf,
}

/// What the containers of a demo are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Containers {
    /// Network namespaces the demo makes and `vxtap connect`s (`vxtap demo`).
    Namespaces,
    /// Containers each host's Docker engine makes (`vxtap demo docker`).
    Docker,
}

/// One simulated host and the container on it.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// Short label: the daemon's `--host` and the run dir's name (`h1`).
    pub(crate) label: String,
    /// The host's network namespace (`vxdemo<pid>-h1`).
    pub(crate) netns: String,
    /// Its underlay address on the veth.
    pub(crate) underlay_ip: Ipv4Addr,
    /// The daemon's run directory (admin socket, overlay namespace mounts).
    pub(crate) run_dir: PathBuf,
    /// The daemon's stdout and stderr.
    pub(crate) log: PathBuf,
    /// The container's network namespace (`vxdemo<pid>-c1`), made only for
    /// [`Containers::Namespaces`].
    pub(crate) container: String,
    /// The container's endpoint name on the network (`connect --name`, or the Docker
    /// container's name).
    pub(crate) endpoint: String,
}

impl Host {
    /// The namespace file of the host.
    pub(crate) fn netns_path(&self) -> PathBuf {
        netns_path(&self.netns)
    }

    /// The namespace file of the container.
    pub(crate) fn container_path(&self) -> PathBuf {
        netns_path(&self.container)
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(netns::NETNS_RUN_DIR).join(name)
}

/// The interface holding the underlay address inside each host namespace. It is created
/// directly there (`ip -n HOST link add ... peer ... netns OTHER`), never in the root
/// namespace, so the name cannot clash with anything.
pub(crate) const UNDERLAY_IF: &str = "eth0";
/// The underlay subnet's prefix length (198.18.0.0/15 is reserved for benchmarks, RFC 2544).
pub(crate) const UNDERLAY_PREFIX: u8 = 24;

/// A running daemon.
#[derive(Debug)]
struct Daemon {
    host: usize,
    child: Child,
}

/// Everything the demo made, and the guard that removes it.
#[derive(Debug)]
pub(crate) struct Lab {
    /// `vxdemo<pid>`: the start of every namespace name.
    pub(crate) prefix: String,
    /// The temp dir: store, run dirs, logs.
    pub(crate) dir: PathBuf,
    /// The programs to run.
    pub(crate) tools: Tools,
    /// The two hosts.
    pub(crate) hosts: [Host; 2],
    /// Whether [`build`](Self::build) makes container namespaces.
    containers: Containers,
    /// Namespaces created so far, in creation order.
    namespaces: Vec<String>,
    daemons: Vec<Daemon>,
    /// Host that created the network, once it exists.
    network_on: Option<usize>,
    /// Hosts whose container is connected to the network.
    connected: Vec<usize>,
    /// Torn down or kept: nothing left for `Drop` to do.
    finished: bool,
}

impl Lab {
    /// Creates the temp dir and names everything; nothing else exists yet.
    ///
    /// # Errors
    ///
    /// The temp dir cannot be created.
    pub(crate) fn new(tools: Tools, containers: Containers) -> Result<Self, DemoError> {
        let prefix = format!("vxdemo{}", std::process::id());
        let dir = create_private_dir(&std::env::temp_dir(), &prefix)?;
        let hosts = [1u8, 2].map(|n| {
            let label = format!("h{n}");
            Host {
                netns: format!("{prefix}-{label}"),
                underlay_ip: Ipv4Addr::new(198, 18, 0, n),
                run_dir: dir.join(&label),
                log: dir.join(format!("{label}.log")),
                container: format!("{prefix}-c{n}"),
                endpoint: match (containers, n) {
                    (Containers::Namespaces, 1) => "client".to_owned(),
                    (Containers::Namespaces, _) => "server".to_owned(),
                    (Containers::Docker, _) => format!("bbox{n}"),
                },
                label,
            }
        });
        Ok(Self {
            prefix,
            dir,
            tools,
            hosts,
            containers,
            namespaces: Vec::new(),
            daemons: Vec::new(),
            network_on: None,
            connected: Vec::new(),
            finished: false,
        })
    }

    /// The shared store's URL.
    pub(crate) fn store_url(&self) -> String {
        format!("dir:{}", self.dir.join("store").display())
    }

    /// `ip ARGS...`, checked.
    fn ip(&self, args: &[&str], limits: Limits<'_>) -> Result<String, DemoError> {
        cmd::checked(Command::new(&self.tools.ip).args(args), limits)
    }

    /// Creates the namespaces (hosts, and containers unless Docker makes them) and the
    /// underlay between the hosts.
    ///
    /// # Errors
    ///
    /// A namespace name is taken, or an `ip` command fails.
    pub(crate) fn build(&mut self, interrupt: &AtomicBool) -> Result<(), DemoError> {
        let limits = Limits::finishing(interrupt, IP_SECONDS);
        let names: Vec<String> = self
            .hosts
            .iter()
            .flat_map(|h| {
                let container =
                    (self.containers == Containers::Namespaces).then(|| h.container.clone());
                std::iter::once(h.netns.clone()).chain(container)
            })
            .collect();
        for name in &names {
            if netns_path(name).exists() {
                return Err(DemoError::NamespaceExists { name: name.clone() });
            }
        }
        for name in names {
            check(interrupt)?;
            // Recorded first: if `ip` is killed halfway the namespace may exist anyway, and
            // teardown skips names that do not.
            self.namespaces.push(name.clone());
            self.ip(&["netns", "add", &name], limits)?;
            self.ip(&["-n", &name, "link", "set", "lo", "up"], limits)?;
        }
        check(interrupt)?;
        let [h1, h2] = &self.hosts;
        self.ip(
            &[
                "-n",
                &h1.netns,
                "link",
                "add",
                UNDERLAY_IF,
                "type",
                "veth",
                "peer",
                "name",
                UNDERLAY_IF,
                "netns",
                &h2.netns,
            ],
            limits,
        )?;
        for host in &self.hosts {
            let address = format!("{}/{UNDERLAY_PREFIX}", host.underlay_ip);
            self.ip(
                &[
                    "-n",
                    &host.netns,
                    "addr",
                    "add",
                    &address,
                    "dev",
                    UNDERLAY_IF,
                ],
                limits,
            )?;
            self.ip(
                &["-n", &host.netns, "link", "set", UNDERLAY_IF, "up"],
                limits,
            )?;
        }
        Ok(())
    }

    /// Starts a daemon in each host namespace, with `extra(host index)` after the usual
    /// flags, and waits until both answer.
    ///
    /// # Errors
    ///
    /// A daemon cannot start, exits, or does not open its admin socket in time (the error
    /// holds the end of its log).
    pub(crate) fn start_daemons(
        &mut self,
        extra: impl Fn(usize) -> Vec<OsString>,
        interrupt: &AtomicBool,
    ) -> Result<(), DemoError> {
        let store = self.store_url();
        std::fs::create_dir(self.dir.join("store"))
            .map_err(DemoError::io("creating", self.dir.join("store")))?;
        for index in 0..self.hosts.len() {
            let host = &self.hosts[index];
            let log = File::create(&host.log).map_err(DemoError::io("creating", &host.log))?;
            let log2 = log
                .try_clone()
                .map_err(DemoError::io("opening", &host.log))?;
            let mut command = Command::new(&self.tools.nsenter);
            command
                .arg(format!("--net={}", host.netns_path().display()))
                .arg(&self.tools.vxtap)
                .arg("--run-dir")
                .arg(&host.run_dir)
                .args(["daemon", "--host", &host.label, "--local-ip"])
                .arg(host.underlay_ip.to_string())
                .args(["--store", &store])
                .args(extra(index))
                // A log file, not a terminal: no colour codes.
                .env("NO_COLOR", "1")
                .env("PATH", cmd::child_path());
            // nsenter without --fork execs the daemon, so this is the daemon's own pid.
            let child = cmd::spawn(&mut command, Stdio::from(log), Stdio::from(log2))?;
            self.daemons.push(Daemon { host: index, child });
        }
        for index in 0..self.daemons.len() {
            self.wait_for_socket(index, interrupt)?;
        }
        Ok(())
    }

    /// Waits until daemon `index` accepts a connection on its admin socket.
    fn wait_for_socket(&mut self, index: usize, interrupt: &AtomicBool) -> Result<(), DemoError> {
        let daemon = &mut self.daemons[index];
        let host = &self.hosts[daemon.host];
        let socket = crate::client::socket_path(&host.run_dir);
        let start = Instant::now();
        let failed = |problem: String| DemoError::DaemonStart {
            host: host.label.clone(),
            problem,
            log: host.log.clone(),
            tail: log_tail(&host.log, LOG_LINES),
        };
        loop {
            if interrupt.load(Ordering::SeqCst) {
                return Err(DemoError::Interrupted);
            }
            if UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            match daemon.child.try_wait() {
                Ok(Some(status)) => return Err(failed(format!("exited ({status})"))),
                Ok(None) => {}
                Err(e) => return Err(failed(format!("cannot be waited for ({e})"))),
            }
            if start.elapsed() >= START_TIMEOUT {
                return Err(failed(format!(
                    "did not open {} within {} s",
                    socket.display(),
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Each running daemon's host and pid, for messages.
    pub(crate) fn daemon_pids(&self) -> Vec<(&Host, u32)> {
        self.daemons
            .iter()
            .map(|d| (&self.hosts[d.host], d.child.id()))
            .collect()
    }

    /// The `vxtap` command aimed at host `host`'s daemon.
    pub(crate) fn vxtap_command(&self, host: usize, args: &[&str]) -> Command {
        let mut command = Command::new(&self.tools.vxtap);
        command
            .arg("--run-dir")
            .arg(&self.hosts[host].run_dir)
            .args(args);
        command
    }

    /// Runs `vxtap ARGS...` against host `host`'s daemon and returns its stdout.
    ///
    /// # Errors
    ///
    /// The command fails (the error holds its stderr), times out or is interrupted.
    pub(crate) fn vxtap(
        &self,
        host: usize,
        args: &[&str],
        limits: Limits<'_>,
    ) -> Result<String, DemoError> {
        cmd::checked(&mut self.vxtap_command(host, args), limits)
    }

    /// Records that host `host` created the network (so teardown removes it).
    pub(crate) fn network_created(&mut self, host: usize) {
        self.network_on = Some(host);
    }

    /// Records that host `host`'s container is connected (so teardown disconnects it).
    pub(crate) fn connected(&mut self, host: usize) {
        self.connected.push(host);
    }

    /// Leaves everything running; returns the commands that tear it down by hand.
    pub(crate) fn keep(&mut self) -> Vec<String> {
        self.finished = true;
        let vxtap = self.tools.vxtap.display();
        let mut lines = Vec::new();
        for &h in self.connected.iter().rev() {
            let host = &self.hosts[h];
            lines.push(format!(
                "{vxtap} --run-dir {} disconnect {NETWORK} {}",
                host.run_dir.display(),
                host.container
            ));
        }
        if let Some(h) = self.network_on {
            lines.push(format!(
                "{vxtap} --run-dir {} network rm {NETWORK}",
                self.hosts[h].run_dir.display()
            ));
        }
        let pids: Vec<String> = self
            .daemons
            .iter()
            .map(|d| d.child.id().to_string())
            .collect();
        if !pids.is_empty() {
            // The daemons take a moment to remove their TAPs and namespaces.
            lines.push(format!("kill {} && sleep 2", pids.join(" ")));
        }
        for name in self.namespaces.iter().rev() {
            lines.push(format!("ip netns del {name}"));
        }
        if self.containers == Containers::Namespaces {
            let containers: Vec<String> = self
                .hosts
                .iter()
                .map(|h| {
                    Path::new(ETC_NETNS)
                        .join(&h.container)
                        .display()
                        .to_string()
                })
                .collect();
            lines.push(format!("rm -rf {}", containers.join(" ")));
        }
        lines.push(format!(
            "grep -o ' {0}/[^ ]*' /proc/self/mountinfo | xargs -r umount",
            self.dir.display()
        ));
        lines.push(format!("rm -rf {}", self.dir.display()));
        lines
    }

    /// The daemons that are no longer running, with how they ended.
    pub(crate) fn exited_daemons(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        for daemon in &mut self.daemons {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                exited.push((self.hosts[daemon.host].label.clone(), status));
            }
        }
        exited
    }

    /// Whether the daemon of host `host` is still running (after a crash, the commands
    /// meant for it are skipped).
    fn daemon_running(&mut self, host: usize) -> bool {
        self.daemons
            .iter_mut()
            .any(|d| d.host == host && matches!(d.child.try_wait(), Ok(None)))
    }

    /// `vxtap ARGS` against host `host`'s daemon during teardown, skipped if it is gone.
    fn undo(&mut self, problems: &mut Vec<String>, host: usize, args: &[&str]) {
        let step = format!("{}$ vxtap {}", self.hosts[host].label, args.join(" "));
        let result = if self.daemon_running(host) {
            self.vxtap(host, args, Limits::cleanup(VXTAP_SECONDS))
                .map(|_| None)
        } else {
            Ok(Some("skipped: its daemon is not running".to_owned()))
        };
        report(problems, &step, result);
    }

    /// Undoes everything, in order, whatever fails along the way; prints a line per step and
    /// returns the problems met.
    pub(crate) fn teardown(&mut self) -> Vec<String> {
        self.finished = true;
        let mut problems = Vec::new();
        for h in std::mem::take(&mut self.connected).into_iter().rev() {
            let container = self.hosts[h].container.clone();
            self.undo(&mut problems, h, &["disconnect", NETWORK, &container]);
        }
        if let Some(h) = self.network_on.take() {
            self.undo(&mut problems, h, &["network", "rm", NETWORK]);
        }
        for daemon in std::mem::take(&mut self.daemons) {
            let label = self.hosts[daemon.host].label.clone();
            let result = stop_daemon(&label, daemon.child);
            report(
                &mut problems,
                &format!("stop the daemon of {label}"),
                result,
            );
        }
        let ip_limits = Limits::cleanup(IP_SECONDS);
        for name in std::mem::take(&mut self.namespaces).into_iter().rev() {
            if !netns_path(&name).exists() {
                continue;
            }
            let result = self.ip(&["netns", "del", &name], ip_limits).map(|_| None);
            report(&mut problems, &format!("ip netns del {name}"), result);
        }
        for host in &self.hosts {
            let etc = Path::new(ETC_NETNS).join(&host.container);
            if etc.exists() {
                let result = std::fs::remove_dir_all(&etc)
                    .map(|()| None)
                    .map_err(DemoError::io("removing", &etc));
                report(&mut problems, &format!("rm -r {}", etc.display()), result);
            }
        }
        match mounts::unmount_all_under(&self.dir) {
            Ok(0) => {}
            Ok(n) => println!(
                "  unmounted {n} leftover mount(s) under {}",
                self.dir.display()
            ),
            Err(errors) => problems.extend(errors),
        }
        // Never recurse into a tree that still has something mounted in it.
        match mounts::current_mounts_under(&self.dir) {
            Ok(left) if left.is_empty() => {
                if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        problems.push(format!("removing {}: {e}", self.dir.display()));
                    }
                }
            }
            Ok(_) => problems.push(format!(
                "{} kept: mounts are still active under it",
                self.dir.display()
            )),
            Err(e) => problems.push(format!("reading the mount table: {e}")),
        }
        problems
    }

    /// Anything of this run that still exists: namespaces, `/etc/netns` entries, mounts,
    /// the temp dir.
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let mine = format!("{}-", self.prefix);
        let mut left = Vec::new();
        for dir in [netns::NETNS_RUN_DIR, ETC_NETNS] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().starts_with(&mine) {
                        left.push(entry.path().display().to_string());
                    }
                }
            }
        }
        if let Ok(points) = mounts::current_mounts_under(&self.dir) {
            left.extend(points.iter().map(|p| format!("mount {}", p.display())));
        }
        if self.dir.exists() {
            left.push(self.dir.display().to_string());
        }
        left
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.finished {
            println!("cleaning up");
            for problem in self.teardown() {
                eprintln!("vxtap demo: cleanup: {problem}");
            }
        }
    }
}

/// Prints one cleanup step, with its remark if any, and files its failure.
pub(crate) fn report(
    problems: &mut Vec<String>,
    step: &str,
    result: Result<Option<String>, DemoError>,
) {
    match result {
        Ok(None) => println!("  {step}"),
        Ok(Some(remark)) => println!("  {step}: {remark}"),
        Err(e) => {
            println!("  {step}: FAILED");
            problems.push(format!("{step}: {e}"));
        }
    }
}

/// SIGTERM, a bounded wait, then SIGKILL. A daemon that had already exited is a remark, not
/// a failure of the cleanup (its log was shown with the error that followed).
fn stop_daemon(host: &str, mut child: Child) -> Result<Option<String>, DemoError> {
    let pid = child.id();
    let failed = |problem: String| DemoError::DaemonStop {
        host: host.to_owned(),
        pid,
        problem,
    };
    match child.try_wait() {
        Ok(Some(status)) => return Ok(Some(format!("it had already exited ({status})"))),
        Ok(None) => {}
        Err(e) => return Err(failed(format!("cannot wait for it: {e}"))),
    }
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // ESRCH means it exited just now; try_wait below collects it.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(None),
            Ok(Some(status)) => return Err(failed(format!("it exited with {status}"))),
            Ok(None) if start.elapsed() < STOP_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "it did not exit within {} s of SIGTERM and was killed",
                    STOP_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(failed(format!("cannot wait for it: {e}"))),
        }
    }
}

/// The telling part of the log at `path` (see [`log_excerpt`]), or why it cannot be read.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => log_excerpt(&text, lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// At most `lines` lines of a daemon log: from the first panic message up to its backtrace
/// (whose tail says nothing), or else the last lines.
fn log_excerpt(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    match all.iter().position(|l| l.contains("panicked at")) {
        Some(start) => all[start..]
            .iter()
            .take_while(|l| !l.starts_with("stack backtrace:"))
            .take(lines)
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
        None => cmd::last_lines(text, lines),
    }
}

/// Creates `parent/name` (or `name-2`, `name-3`, ... if taken) readable by root only.
fn create_private_dir(parent: &Path, name: &str) -> Result<PathBuf, DemoError> {
    let mut attempt = 1;
    loop {
        let dir = if attempt == 1 {
            parent.join(name)
        } else {
            parent.join(format!("{name}-{attempt}"))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(DemoError::io("restricting", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(DemoError::io("creating", dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Tools {
        Tools {
            ip: "/usr/sbin/ip".into(),
            nsenter: "/usr/bin/nsenter".into(),
            ping: "/usr/bin/ping".into(),
            vxtap: "/usr/bin/vxtap".into(),
        }
    }

    #[test]
    fn names_carry_the_prefix_and_fit() {
        let mut lab = Lab::new(tools(), Containers::Namespaces).unwrap();
        let prefix = lab.prefix.clone();
        for host in &lab.hosts {
            assert!(host.netns.starts_with(&format!("{prefix}-")));
            assert!(host.container.starts_with(&format!("{prefix}-")));
            assert!(host.run_dir.starts_with(&lab.dir));
        }
        assert_eq!(lab.hosts[1].underlay_ip, Ipv4Addr::new(198, 18, 0, 2));
        assert!(lab.store_url().starts_with("dir:/"));
        assert!(UNDERLAY_IF.len() <= 15);
        // Nothing was created but the temp dir, and teardown removes just that.
        assert!(lab.dir.is_dir());
        let kept = lab.keep();
        assert!(kept.iter().any(|l| l.contains("rm -rf")));
        assert!(lab.teardown().is_empty());
        assert!(!lab.dir.exists());
    }

    #[test]
    fn docker_labs_name_their_containers_after_the_issue() {
        let mut lab = Lab::new(tools(), Containers::Docker).unwrap();
        let names: Vec<&str> = lab.hosts.iter().map(|h| h.endpoint.as_str()).collect();
        assert_eq!(names, ["bbox1", "bbox2"]);
        // No container namespaces, so nothing under /etc/netns to remove by hand.
        assert!(!lab.keep().iter().any(|l| l.contains(ETC_NETNS)));
        assert!(lab.teardown().is_empty());
        assert!(!lab.dir.exists());
    }

    #[test]
    fn log_excerpts_show_the_panic_not_the_backtrace() {
        let log = "INFO started\nthread 'main' panicked at src/x.rs:8:9:\nnot yet\n\
                   stack backtrace:\n   0: frame\n   1: frame\n";
        assert_eq!(
            log_excerpt(log, 10),
            "thread 'main' panicked at src/x.rs:8:9:\nnot yet"
        );
        assert_eq!(log_excerpt("a\nb\nc\n", 2), "b\nc");
    }

    #[test]
    fn private_dirs_get_a_fresh_name_when_taken() {
        let base = std::env::temp_dir().join(format!("vxdemo-test-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let first = create_private_dir(&base, "x").unwrap();
        let second = create_private_dir(&base, "x").unwrap();
        assert_ne!(first, second);
        assert!(second.to_string_lossy().ends_with("x-2"));
        let mode = std::fs::metadata(&first).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&base).unwrap();
    }
}

//! The demo's world and the guard that undoes it: two "hosts" (network namespaces joined by
//! a veth underlay), a "container" namespace per host (not for the Docker demo, whose
//! engines make their containers), a vxtap daemon per host with a directory store shared in
//! a temp dir, and whatever the demo asked those daemons to make.
//!
//! The hosts, the underlay, the containers' namespaces and the daemons are made by the
//! shared topology builder ([`crate::topology`]), which owns them and the temp dir. [`Lab`]
//! adds what the demo asked the daemons to make, and [`Lab::teardown`] undoes it in order:
//! endpoints, the network, the daemons (SIGTERM, then SIGKILL), then the builder's teardown
//! (namespaces with their `/etc/netns` entries, leftover bind mounts, the temp dir).
//! Dropping a `Lab` that was neither torn down nor kept tears it down, so an early return or
//! a panic cleans up too. Every name carries the run's prefix (`vxdemo<pid>`); nothing is
//! ever added to the root namespace, and nothing without that prefix is ever removed.

use super::check;
use super::cmd::{self, Limits};
use super::error::DemoError;
use crate::topology::{mounts, DaemonProcess, HostKind, Topology, Underlay};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use vxtap_dataplane::io::netns;

pub(crate) use crate::topology::{log_tail, private_dir, UNDERLAY_IF, UNDERLAY_PREFIX};

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
    /// The namespaces, underlay and daemons, and the temp dir (the shared builder's).
    topology: Topology<DaemonProcess>,
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
        let dir = private_dir(&std::env::temp_dir(), &prefix)?;
        let mut topology = Topology::new(&format!("{prefix}-"), Underlay::Pair, false)?;
        topology.own_dir(dir.clone());
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
            topology,
            network_on: None,
            connected: Vec::new(),
            finished: false,
        })
    }

    /// The shared store's URL.
    pub(crate) fn store_url(&self) -> String {
        format!("dir:{}", self.dir.join("store").display())
    }

    /// Creates the namespaces (hosts, and containers unless Docker makes them) and the
    /// underlay between the hosts.
    ///
    /// # Errors
    ///
    /// A namespace name is taken, or an `ip` command fails.
    pub(crate) fn build(&mut self, interrupt: &AtomicBool) -> Result<(), DemoError> {
        check(interrupt)?;
        self.topology
            .add_hosts(&[HostKind::Vxtap, HostKind::Vxtap])?;
        if self.containers == Containers::Namespaces {
            for n in 1..=self.hosts.len() {
                check(interrupt)?;
                self.topology.add_namespace(&format!("c{n}"))?;
            }
        }
        Ok(())
    }

    /// Starts a daemon in each host namespace, with `extra(host index)` after the usual
    /// flags, and waits until each answers.
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
        let (hosts, vxtap) = (&self.hosts, &self.tools.vxtap);
        self.topology.start_daemons(|host, index| {
            let h = &hosts[index];
            let mut args: Vec<OsString> = ["--host", &h.label, "--local-ip"]
                .map(OsString::from)
                .into();
            args.push(h.underlay_ip.to_string().into());
            args.extend(["--store".into(), OsString::from(&store)]);
            args.extend(extra(index));
            DaemonProcess::start(
                &h.label,
                host.ns.path(),
                vxtap,
                &h.run_dir,
                &h.log,
                &args,
                Some(interrupt),
            )
        })?;
        Ok(())
    }

    /// The daemons, with the index of their host.
    fn daemons(&self) -> impl Iterator<Item = (usize, &DaemonProcess)> {
        self.topology
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.daemon.as_ref().map(|d| (i, d)))
    }

    /// Each running daemon's host and pid, for messages.
    pub(crate) fn daemon_pids(&self) -> Vec<(&Host, u32)> {
        self.daemons()
            .filter_map(|(i, d)| d.pid().map(|pid| (&self.hosts[i], pid)))
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
            .daemons()
            .filter_map(|(_, d)| d.pid())
            .map(|pid| pid.to_string())
            .collect();
        if !pids.is_empty() {
            // The daemons take a moment to remove their TAPs and namespaces.
            lines.push(format!("kill {} && sleep 2", pids.join(" ")));
        }
        let mut kept = self.topology.keep();
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
            // Before the temp dir's lines, which end the list.
            let at = kept.len().saturating_sub(2);
            kept.insert(at, format!("rm -rf {}", containers.join(" ")));
        }
        lines.extend(kept);
        lines
    }

    /// The daemons that are no longer running, with how they ended.
    pub(crate) fn exited_daemons(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        for (host, h) in self.hosts.iter().zip(&mut self.topology.hosts) {
            if let Some(status) = h.daemon.as_mut().and_then(DaemonProcess::exited) {
                exited.push((host.label.clone(), status));
            }
        }
        exited
    }

    /// Whether the daemon of host `host` is still running (after a crash, the commands
    /// meant for it are skipped).
    fn daemon_running(&mut self, host: usize) -> bool {
        self.topology.hosts.get_mut(host).is_some_and(|h| {
            h.daemon
                .as_mut()
                .is_some_and(|d| d.pid().is_some() && d.exited().is_none())
        })
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
        for (host, h) in self.hosts.iter().zip(&mut self.topology.hosts) {
            if let Some(mut daemon) = h.daemon.take() {
                let result = daemon.stop().map_err(DemoError::from);
                report(
                    &mut problems,
                    &format!("stop the daemon of {}", host.label),
                    result,
                );
            }
        }
        let mut names: Vec<String> = self
            .topology
            .namespaces()
            .iter()
            .map(|ns| ns.name().to_owned())
            .collect();
        names.reverse();
        let left = self.topology.teardown();
        for name in names {
            if left.iter().any(|p| p.contains(&name)) {
                println!("  ip netns del {name}: FAILED");
            } else {
                println!("  ip netns del {name}");
            }
        }
        problems.extend(left);
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
        assert!(lab.teardown().is_empty());
        assert!(!lab.dir.exists());
    }

    #[test]
    fn kept_labs_say_how_to_remove_them() {
        let mut lab = Lab::new(tools(), Containers::Namespaces).unwrap();
        let dir = lab.dir.clone();
        let kept = lab.keep();
        assert!(kept
            .iter()
            .any(|l| l.contains("rm -rf") && l.contains(ETC_NETNS)));
        assert_eq!(kept.last().unwrap(), &format!("rm -rf {}", dir.display()));
        drop(lab);
        // Kept: the temp dir stays until removed by hand.
        assert!(dir.is_dir());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn docker_labs_name_their_containers_after_the_issue() {
        let mut lab = Lab::new(tools(), Containers::Docker).unwrap();
        let names: Vec<&str> = lab.hosts.iter().map(|h| h.endpoint.as_str()).collect();
        assert_eq!(names, ["bbox1", "bbox2"]);
        // No container namespaces, so nothing under /etc/netns to remove by hand.
        assert!(!lab.keep().iter().any(|l| l.contains(ETC_NETNS)));
        assert!(lab.teardown().is_empty());
        let _ = std::fs::remove_dir(&lab.dir);
    }
}

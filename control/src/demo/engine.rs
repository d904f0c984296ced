//! The Docker engines of `vxtap demo docker`: one dockerd (Debian's docker.io: dockerd 20.10,
//! its managed containerd, runc) per demo host, from start to a clean stop.
//!
//! An [`Engine`] never touches the machine's own Docker or networking:
//!
//! - dockerd runs in its host's network namespace (`nsenter --net`; `ip netns exec` would
//!   remount /sys and hide the cgroup mounts dockerd needs) and in a private mount namespace
//!   of the engine's own, held by a small `sh` waiting for its stdin to close. In it the
//!   engine's plugin directory is bind-mounted over `/run/docker/plugins` (where dockerd
//!   looks for plugin sockets), so each engine finds its own host's `vxtap.sock`. The root
//!   mount namespace gets no mount, only an empty `/run/docker/plugins` mountpoint, made if
//!   missing (and left: other engines on the machine may use it).
//! - Everything else lives in one directory per engine under the demo's temp dir:
//!   `--data-root`, `--exec-root` (so the engine's containerd is its own), the API socket,
//!   the pidfile, a `daemon.json` (the trust key's path and `"dns": ["169.254.53.53"]`, so
//!   Docker's embedded DNS forwards the names it does not know to vxtap's resolver; the
//!   machine's `/etc/docker/daemon.json` is never read), the CLI's config directory and
//!   `dockerd.log`.
//! - `--bridge=none --iptables=false --ip6tables=false --ip-masq=false
//!   --userland-proxy=false`: no docker0, no firewall rules, no proxies.
//! - `--cgroup-parent=/<prefix>-hN-docker`: the containers' cgroups sit apart and go with
//!   the engine.
//! - The `docker` CLI (the first on `PATH`, maybe a newer one than dockerd) is aimed with
//!   `-H unix://...`, a private `DOCKER_CONFIG`, and no `DOCKER_*` settings from the
//!   environment.
//!
//! [`Engine::stop`] removes the containers, stops dockerd (SIGTERM, SIGKILL after a bound),
//! ends the mount namespace's holder (taking every mount dockerd made with it), waits until
//! no process names the engine's directory (killing stragglers), and removes its cgroups.
//! Dropping an engine that was neither stopped nor kept stops it.

use super::cmd::{self, Limits};
use super::docker_tools::{DockerTools, IMAGE};
use super::error::DemoError;
use super::hosts::{Lab, Tools};
use crate::plumbing::procs::{cgroups_named, processes_naming, remove_cgroup};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long dockerd may take to answer `docker info` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long dockerd may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the engine's other processes (containerd, shims, the holder) may take to go.
const LINGER_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for one `docker info` while waiting for dockerd.
const INFO_SECONDS: u64 = 10;
/// Limit for any other `docker` command (`run` and `import` write layers to disk).
pub(crate) const DOCKER_SECONDS: u64 = 60;
/// Lines of dockerd's log shown when something fails.
const LOG_LINES: usize = 12;
/// `DOCKER_*` variables that would aim the CLI elsewhere or change how it connects.
const CLI_ENVIRONMENT: [&str; 4] = [
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
];

/// The holder of an engine's mount namespace (`sh -c SCRIPT sh PLUGIN_DIR`): bind-mounts the
/// plugin directory, says `ready`, then waits for its stdin (a pipe the engine keeps) to
/// close. The plugin directory on its command line names the engine's directory, so
/// [`processes_naming`] finds the holder like every other process of the engine.
const HOLDER_SCRIPT: &str = r#"mount --bind -- "$1" /run/docker/plugins || exit 1
echo ready
read -r _
exit 0"#;

/// One dockerd, with its containerd, for one demo host.
#[derive(Debug)]
pub(crate) struct Engine {
    /// The host's label (`h1`).
    pub(crate) label: String,
    /// Everything of the engine lives here.
    dir: PathBuf,
    /// The cgroup parent of its containers, at the top of every hierarchy.
    cgroup: String,
    /// The host's network namespace file.
    host_netns: PathBuf,
    tools: Tools,
    docker_tools: DockerTools,
    /// The holder of the private mount namespace; its stdin is the pipe whose closing ends
    /// it.
    holder: Option<Child>,
    dockerd: Option<Child>,
    /// Stopped or kept: nothing left for `Drop` to do.
    finished: bool,
}

impl Engine {
    /// Names the engine of host `host` of `lab`; nothing exists until [`start`](Self::start).
    pub(crate) fn new(lab: &Lab, host: usize, docker_tools: &DockerTools) -> Self {
        let host = &lab.hosts[host];
        Self {
            label: host.label.clone(),
            dir: lab.dir.join(format!("{}-docker", host.label)),
            cgroup: format!("{}-{}-docker", lab.prefix, host.label),
            host_netns: host.netns_path(),
            tools: lab.tools.clone(),
            docker_tools: docker_tools.clone(),
            holder: None,
            dockerd: None,
            finished: false,
        }
    }

    /// The engine's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory the engine sees at `/run/docker/plugins` (vxtap's `--docker-plugin-dir`).
    pub(crate) fn plugin_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// `unix://` and the API socket (the CLI's `-H`, vxtap's `--docker-host`).
    pub(crate) fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// dockerd's (and its containerd's) log.
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// dockerd's pid while it runs.
    pub(crate) fn dockerd_pid(&self) -> Option<u32> {
        self.dockerd.as_ref().map(Child::id)
    }

    /// Makes the engine's directory, its mount namespace and starts dockerd, then waits
    /// (bounded) until `docker info` answers.
    ///
    /// # Errors
    ///
    /// A file cannot be written, the mount namespace cannot be made, dockerd exits or does
    /// not answer in time (the error holds its log's tail), or an interrupt.
    pub(crate) fn start(&mut self, interrupt: &AtomicBool) -> Result<(), DemoError> {
        for dir in [self.dir.clone(), self.plugin_dir(), self.dir.join("cli")] {
            std::fs::create_dir_all(&dir).map_err(DemoError::io("creating", &dir))?;
        }
        // The trust key has no flag in dockerd 20.10; without this it writes
        // /etc/docker/key.json.
        let config = serde_json::json!({
            "deprecated-key-path": self.dir.join("key.json"),
            "dns": [crate::dns::RESOLVER_ADDR.ip().to_string()],
        });
        let path = self.dir.join("daemon.json");
        std::fs::write(&path, format!("{config:#}\n")).map_err(DemoError::io("writing", &path))?;
        // The mountpoint must exist in the root mount namespace before the private one is
        // copied from it; an empty directory there is harmless (docker.io makes it too).
        let mountpoint = Path::new(crate::docker::DEFAULT_PLUGIN_DIR);
        std::fs::create_dir_all(mountpoint).map_err(DemoError::io("creating", mountpoint))?;
        let holder = self.make_mount_namespace()?;
        self.spawn_dockerd(holder)?;
        self.wait_ready(interrupt)
    }

    /// Starts the holder of the private mount namespace and waits (bounded) until it has
    /// mounted the plugin directory; returns the holder's pid.
    fn make_mount_namespace(&mut self) -> Result<u32, DemoError> {
        let log = self.open_log()?;
        let mut command = Command::new(&self.docker_tools.unshare);
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(HOLDER_SCRIPT)
            .arg("sh")
            .arg(self.plugin_dir())
            .env("PATH", cmd::child_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            // Not in the terminal's process group: Ctrl-C is the demo's to handle.
            .process_group(0);
        let mut holder = command.spawn().map_err(|source| DemoError::Spawn {
            command: cmd::describe(&command),
            source,
        })?;
        let stdout = holder.stdout.take();
        let pid = holder.id();
        // Kept from here on, so the cleanup ends it whatever happens next.
        self.holder = Some(holder);
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(stdout) = stdout {
                // EOF (the holder exited) leaves the line empty, which says enough.
                let _ = BufReader::new(stdout).read_line(&mut line);
            }
            let _ = send.send(line);
        });
        let line = receive
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        if line.trim() == "ready" {
            Ok(pid)
        } else {
            Err(self.start_failed(format!(
                "could not get a mount namespace of its own (`{}`)",
                cmd::describe(&command)
            )))
        }
    }

    /// Starts dockerd in the mount namespace of the process `holder` and in its host's
    /// network namespace.
    fn spawn_dockerd(&mut self, holder: u32) -> Result<(), DemoError> {
        let mut command = Command::new(&self.tools.nsenter);
        // nsenter execs dockerd, so the child's pid is dockerd's.
        command
            .arg(format!("--mount=/proc/{holder}/ns/mnt"))
            .arg(format!("--net={}", self.host_netns.display()))
            .arg("--")
            .arg(&self.docker_tools.dockerd)
            .args(self.dockerd_args())
            // It starts containerd and runc by name.
            .env("PATH", cmd::child_path());
        let log = self.open_log()?;
        let log2 = log
            .try_clone()
            .map_err(DemoError::io("opening", self.log()))?;
        let child = cmd::spawn(&mut command, Stdio::from(log), Stdio::from(log2))?;
        self.dockerd = Some(child);
        Ok(())
    }

    fn dockerd_args(&self) -> Vec<String> {
        let at = |name: &str| self.dir.join(name).display().to_string();
        vec![
            format!("--config-file={}", at("daemon.json")),
            format!("--data-root={}", at("data")),
            format!("--exec-root={}", at("run")),
            format!("--host={}", self.docker_host()),
            format!("--pidfile={}", at("docker.pid")),
            format!("--cgroup-parent=/{}", self.cgroup),
            "--bridge=none".to_owned(),
            "--iptables=false".to_owned(),
            "--ip6tables=false".to_owned(),
            "--ip-masq=false".to_owned(),
            "--userland-proxy=false".to_owned(),
        ]
    }

    fn open_log(&self) -> Result<std::fs::File, DemoError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(DemoError::io("opening", self.log()))
    }

    fn start_failed(&self, problem: String) -> DemoError {
        DemoError::EngineStart {
            host: self.label.clone(),
            problem,
            log: self.log(),
            tail: self.log_tail(),
        }
    }

    /// The last lines of dockerd's log, or why it cannot be read.
    pub(crate) fn log_tail(&self) -> String {
        match std::fs::read_to_string(self.log()) {
            Ok(text) if text.trim().is_empty() => "(empty)".to_owned(),
            Ok(text) => cmd::last_lines(&text, LOG_LINES),
            Err(e) => format!("(cannot read {}: {e})", self.log().display()),
        }
    }

    /// Waits until `docker info` answers, dockerd exits, [`START_TIMEOUT`] passes or an
    /// interrupt comes.
    fn wait_ready(&mut self, interrupt: &AtomicBool) -> Result<(), DemoError> {
        let start = Instant::now();
        let socket = self.dir.join("docker.sock");
        loop {
            if interrupt.load(Ordering::SeqCst) {
                return Err(DemoError::Interrupted);
            }
            if socket.exists() {
                let mut info = self.command(&["info", "--format", "{{.ServerVersion}}"]);
                match cmd::output(&mut info, Limits::interruptible(interrupt, INFO_SECONDS)) {
                    Ok(out) if out.status.success() => return Ok(()),
                    Ok(_) | Err(DemoError::Timeout { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let exited = match self.dockerd.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(format!("exited ({status})")),
                Some(Err(e)) => Some(format!("cannot be waited for ({e})")),
                None => Some("was not started".to_owned()),
            };
            if let Some(problem) = exited {
                return Err(self.start_failed(problem));
            }
            if start.elapsed() >= START_TIMEOUT {
                return Err(self.start_failed(format!(
                    "did not answer `docker info` within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A `docker ARGS` command aimed at this engine, with a CLI config directory of its own
    /// and no `DOCKER_*` settings from the environment.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.docker_tools.docker);
        command
            .arg("-H")
            .arg(self.docker_host())
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("cli"));
        for var in CLI_ENVIRONMENT {
            command.env_remove(var);
        }
        command
    }

    /// Runs `docker ARGS` against this engine and returns its stdout.
    ///
    /// # Errors
    ///
    /// The command fails (the error holds its stderr), times out or is interrupted.
    pub(crate) fn docker(&self, args: &[&str], limits: Limits<'_>) -> Result<String, DemoError> {
        cmd::checked(&mut self.command(args), limits)
    }

    /// dockerd's version, as `docker version` reports it.
    ///
    /// # Errors
    ///
    /// As [`docker`](Self::docker).
    pub(crate) fn server_version(&self, interrupt: &AtomicBool) -> Result<String, DemoError> {
        let limits = Limits::interruptible(interrupt, INFO_SECONDS);
        let out = self.docker(&["version", "--format", "{{.Server.Version}}"], limits)?;
        Ok(out.trim().to_owned())
    }

    /// `docker import`s the root file system `tar` as [`IMAGE`], running `sh` by default.
    ///
    /// # Errors
    ///
    /// As [`docker`](Self::docker).
    pub(crate) fn import(&self, tar: &Path, interrupt: &AtomicBool) -> Result<(), DemoError> {
        let tar = tar.display().to_string();
        let args = [
            "import",
            "--change",
            r#"CMD ["sh"]"#,
            "--change",
            "ENV PATH=/bin",
            &tar,
            IMAGE,
        ];
        self.docker(&args, Limits::finishing(interrupt, DOCKER_SECONDS))
            .map(drop)
    }

    /// The names of every container of the engine, running or not.
    ///
    /// # Errors
    ///
    /// As [`docker`](Self::docker).
    pub(crate) fn containers(&self, limits: Limits<'_>) -> Result<Vec<String>, DemoError> {
        let out = self.docker(&["ps", "-a", "--format", "{{.Names}}"], limits)?;
        Ok(out.split_whitespace().map(str::to_owned).collect())
    }

    /// Whether dockerd is running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.dockerd.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Removes the containers left (the demo's cleanup removed its own already), stops
    /// dockerd, ends the mount namespace, waits until no process of the engine is left and
    /// removes its cgroups. Returns a remark for the cleanup's line.
    ///
    /// # Errors
    ///
    /// `EngineStop` with everything that went wrong (the rest is still done).
    pub(crate) fn stop(&mut self) -> Result<Option<String>, DemoError> {
        self.finished = true;
        let mut problems = Vec::new();
        let mut remarks = Vec::new();
        if self.running() {
            let limits = Limits::cleanup(DOCKER_SECONDS);
            match self.containers(limits) {
                Ok(names) if names.is_empty() => {}
                Ok(names) => {
                    let mut args = vec!["rm", "-f"];
                    args.extend(names.iter().map(String::as_str));
                    match self.docker(&args, limits) {
                        Ok(_) => remarks.push(format!("removed {}", names.join(" "))),
                        Err(e) => problems.push(e.to_string()),
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if let Some(child) = self.dockerd.take() {
            match stop_child(child, STOP_TIMEOUT) {
                Ok(Some(remark)) => remarks.push(format!("dockerd {remark}")),
                Ok(None) => {}
                Err(problem) => problems.push(format!("dockerd {problem}")),
            }
        }
        // Closing its stdin ends the holder; the mount namespace, and every mount dockerd
        // made in it, goes with its last process.
        if let Some(mut holder) = self.holder.take() {
            drop(holder.stdin.take());
            if let Err(problem) = wait_or_kill(&mut holder, Duration::from_secs(5)) {
                problems.push(format!("the mount namespace's holder {problem}"));
            }
        }
        problems.extend(self.end_processes());
        for cgroup in cgroups_named(&self.cgroup) {
            if let Err(e) = remove_cgroup(&cgroup) {
                problems.push(format!("removing cgroup {}: {e}", cgroup.display()));
            }
        }
        if problems.is_empty() {
            Ok((!remarks.is_empty()).then(|| remarks.join("; ")))
        } else {
            Err(DemoError::EngineStop {
                host: self.label.clone(),
                problem: problems.join("; "),
            })
        }
    }

    /// Waits (bounded) until no process names the engine's directory: dockerd stops its
    /// containerd, shims go with their containers. Kills what is left; returns problems.
    fn end_processes(&self) -> Vec<String> {
        let deadline = Instant::now() + LINGER_TIMEOUT;
        let mut killed = false;
        loop {
            let left = self.processes();
            if left.is_empty() {
                return Vec::new();
            }
            if Instant::now() >= deadline {
                if killed {
                    return left
                        .iter()
                        .map(|(pid, line)| format!("process {pid} survived SIGKILL: {line}"))
                        .collect();
                }
                for (pid, _) in &left {
                    signal(*pid, rustix::process::Signal::KILL);
                }
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The engine's processes (pid, command line): dockerd, containerd, shims and the holder
    /// all name its directory. The vxtap daemons name its socket too, but are not its own.
    fn processes(&self) -> Vec<(u32, String)> {
        processes_naming(&self.dir, Some(&self.tools.vxtap))
    }

    /// What of the engine still exists: processes and cgroups (its directory is the lab's
    /// to check).
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .processes()
            .into_iter()
            .map(|(pid, line)| format!("process {pid} ({line})"))
            .collect();
        left.extend(
            cgroups_named(&self.cgroup)
                .iter()
                .map(|c| format!("cgroup {}", c.display())),
        );
        left
    }

    /// Leaves the engine running; returns the commands that stop it by hand (after its
    /// containers and networks are removed).
    pub(crate) fn keep(&mut self) -> Vec<String> {
        self.finished = true;
        let mut lines = Vec::new();
        if let Some(pid) = self.dockerd_pid() {
            // Its containerd goes with it; the daemons come after (they serve its plugin).
            lines.push(format!(
                "kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.5; done    # dockerd of {}",
                self.label
            ));
        }
        lines.push(format!(
            "find /sys/fs/cgroup -depth -type d -path '*/{}*' -exec rmdir {{}} \\;",
            self.cgroup
        ));
        lines
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = self.stop() {
                eprintln!("vxtap demo: cleanup: {e}");
            }
        }
    }
}

/// SIGTERM, a bounded wait, SIGKILL. Returns a remark (it had exited already) or a problem.
fn stop_child(mut child: Child, limit: Duration) -> Result<Option<String>, String> {
    match child.try_wait() {
        Ok(Some(status)) => return Ok(Some(format!("had already exited ({status})"))),
        Ok(None) => {}
        Err(e) => return Err(format!("cannot be waited for: {e}")),
    }
    signal(child.id(), rustix::process::Signal::TERM);
    wait_or_kill(&mut child, limit).map(|()| None)
}

/// Waits up to `limit` for `child` to exit, then kills it.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not exit within {} s and was killed",
                    limit.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot be waited for: {e}")),
        }
    }
}

/// Sends `signal` to `pid`; a process that is gone already is fine.
fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // ESRCH: it exited just now, which is what was wanted.
        let _ = rustix::process::kill_process(pid, signal);
    }
}

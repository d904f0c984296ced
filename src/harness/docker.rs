//! [`DockerEngine`]: a real Docker engine (Debian's `docker.io`: dockerd 20.10, its managed
//! containerd, runc) for one test host, and [`busybox_image`], the image its containers run.
//!
//! Several engines share the machine, one per host network namespace, and must never see each
//! other or touch the machine's own Docker or networking:
//!
//! - dockerd runs in the host's network namespace, entered with `nsenter --net` (`ip netns
//!   exec` would remount /sys and hide the cgroup mounts dockerd needs), inside a private
//!   mount namespace of the engine's own, entered with `nsenter --mount`. The namespace is
//!   made once per engine (`unshare --mount --propagation private`) and held by a small
//!   process (`sh`, waiting for its stdin, a pipe the engine keeps, to close; it also exits
//!   if the test process dies), so it outlives dockerd: a [`DockerEngine::restart`] finds
//!   the mounts the old dockerd made (container sandboxes' netns files under the exec root,
//!   overlay2 layers), which live-restore needs. In it a per-engine plugin directory is
//!   bind-mounted over `/run/docker/plugins`, so each engine discovers its own host's plugin
//!   sockets. These mounts live in that namespace only and vanish with its last process; the
//!   root namespace gets no mount at all, only an empty `/run/docker/plugins` mountpoint,
//!   made if missing.
//! - Everything else sits in one temporary directory per engine: `--data-root`, `--exec-root`
//!   (where dockerd's managed containerd keeps its config, socket and state, so two engines
//!   never share a containerd), the API socket, the pidfile, the trust key, a `daemon.json`
//!   holding only the trust key's path (the machine's `/etc/docker/daemon.json` is never
//!   read), the CLI's config directory and `dockerd.log`, whose tail a failing start or
//!   command prints. The `docker` CLI is the first on `PATH`, aimed with `-H`.
//! - `--cgroup-parent=/vxtap-docker-XXXXXX` (the directory's name): containers' cgroups sit
//!   apart from the machine's `/docker`, and go with the engine.
//! - `--bridge=none --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false`:
//!   no docker0, no firewall rules, no proxies; the engine adds nothing to any namespace
//!   until a test creates a network.
//!
//! [`DockerEngine::start_with`] can turn `--live-restore` on (it must be on before the
//! containers start); [`DockerEngine::restart`] stops dockerd with SIGTERM and starts it
//! again, with or without it, in the same mount namespace and directories.
//!
//! Dropping the guard removes its containers, stops dockerd (SIGTERM, SIGKILL after a bound),
//! ends the namespace's holder, waits until no process of the engine is left (dockerd,
//! containerd, shims, the holder: every process whose command line names the engine's
//! directory), unmounts anything of it that shows in the root namespace (nothing should),
//! removes its cgroups and the directory. Tests that need Docker fail loudly when a program
//! is missing or dockerd does not start; they never skip.

use super::cmd;
use super::netns::Netns;
use super::sys;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long dockerd may take to answer `docker info`, or to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long any `docker` command may run before `timeout` kills it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Where dockerd looks for plugin sockets (hard-coded in libnetwork's plugin discovery).
pub const PLUGIN_SOCKET_DIR: &str = "/run/docker/plugins";
/// The tag [`busybox_image`] gives its image.
pub const BUSYBOX_IMAGE: &str = "vxtap-busybox:test";
/// The busybox binary the image is built from (Debian's `busybox-static`).
pub const BUSYBOX_BINARY: &str = "/bin/busybox";
/// What the engines need, and the Debian package that brings each.
const PROGRAMS: [(&str, &str); 6] = [
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
];

/// Panics unless every program an engine needs is on `PATH` and `/bin/busybox` exists,
/// naming what is missing and the package to install.
///
/// # Panics
///
/// As said.
pub fn require_docker() {
    super::require_root();
    let missing = super::missing_programs(&PROGRAMS);
    assert!(
        missing.is_empty(),
        "the Docker tests need a real dockerd and run it; missing: {} \
         (./test.sh installs docker.io and busybox-static)",
        missing.join(", ")
    );
    assert!(
        Path::new(BUSYBOX_BINARY).is_file(),
        "the Docker tests build their image from {BUSYBOX_BINARY}, which is missing \
         (Debian package busybox-static; ./test.sh installs it)"
    );
}

/// How an engine starts; see [`DockerEngine::start_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// `--live-restore`: containers keep running while dockerd is down (see
    /// [`DockerEngine::restart`]). It must be on before the containers start.
    pub live_restore: bool,
    /// `daemon.json`'s `dns`: the server Docker's embedded DNS forwards names it does not
    /// know to (vxtap's resolver address).
    pub dns: Option<std::net::Ipv4Addr>,
}

/// The script the mount namespace's holder runs (`sh -c SCRIPT sh PLUGIN_DIR MARKER`): it
/// bind-mounts the plugin directory, says `ready` and then waits for its stdin (a pipe the
/// engine keeps) to close. `MARKER` is unused; it puts the engine's directory on the
/// holder's command line, so [`processes_naming`] finds it like every other process of the
/// engine.
const HOLDER_SCRIPT: &str = r#"mount --bind -- "$1" /run/docker/plugins || exit 1
echo ready
read -r _
exit 0"#;

/// One dockerd (with its own containerd) in a test host's network namespace.
#[derive(Debug)]
pub struct DockerEngine {
    child: Option<Child>,
    /// The process holding the engine's mount namespace (see the module docs); its stdin is
    /// the pipe whose closing ends it.
    holder: Option<Child>,
    dir: tempfile::TempDir,
    plugin_dir: PathBuf,
    host: String,
    host_path: PathBuf,
    live_restore: bool,
    image: OnceLock<()>,
}

impl DockerEngine {
    /// Starts dockerd in `host` and waits (bounded) until `docker info` answers.
    /// `plugin_dir` is what the engine sees at `/run/docker/plugins` (the caller owns it and
    /// it must exist); `None` gives it an empty directory of its own, see
    /// [`plugin_dir`](Self::plugin_dir).
    ///
    /// # Panics
    ///
    /// Without root or a program it needs (see [`require_docker`]), or if dockerd exits or
    /// does not answer in time; the message holds the command line and dockerd's log tail.
    pub fn start(host: &Netns, plugin_dir: Option<&Path>) -> DockerEngine {
        Self::start_with(host, plugin_dir, StartOptions::default())
    }

    /// [`start`](Self::start), with `options`.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and if the engine's mount namespace cannot be made.
    pub fn start_with(
        host: &Netns,
        plugin_dir: Option<&Path>,
        options: StartOptions,
    ) -> DockerEngine {
        require_docker();
        // Short: containerd's sockets live under the exec root, and unix socket paths must
        // fit 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("vxtap-docker-")
            .tempdir_in("/tmp")
            .expect("a directory for a Docker engine under /tmp");
        let plugin_dir = match plugin_dir {
            Some(path) => {
                assert!(
                    path.is_dir(),
                    "plugin directory {} for the engine in {} is not a directory",
                    path.display(),
                    host.name()
                );
                path.to_owned()
            }
            None => dir.path().join("plugins"),
        };
        for sub in [plugin_dir.as_path(), &dir.path().join("cli")] {
            std::fs::create_dir_all(sub)
                .unwrap_or_else(|e| panic!("creating {}: {e}", sub.display()));
        }
        // The trust key has no command-line flag in 20.10; without this key dockerd writes
        // /etc/docker/key.json.
        let mut config = serde_json::json!({
            "deprecated-key-path": dir.path().join("key.json"),
        });
        if let Some(dns) = options.dns {
            config["dns"] = serde_json::json!([dns.to_string()]);
        }
        std::fs::write(dir.path().join("daemon.json"), format!("{config}\n")).expect("daemon.json");
        // The mountpoint must exist before the private namespace is made from the root one;
        // an empty directory there is harmless (the docker.io package makes it too).
        std::fs::create_dir_all(PLUGIN_SOCKET_DIR)
            .unwrap_or_else(|e| panic!("creating {PLUGIN_SOCKET_DIR}: {e}"));
        let mut engine = DockerEngine {
            child: None,
            holder: None,
            dir,
            plugin_dir,
            host: host.name().to_owned(),
            host_path: host.path().to_owned(),
            live_restore: options.live_restore,
            image: OnceLock::new(),
        };
        engine.make_mount_namespace();
        engine.spawn_dockerd();
        engine
    }

    /// Starts the holder of the engine's private mount namespace and waits until the plugin
    /// directory is mounted in it.
    fn make_mount_namespace(&mut self) {
        let log = self.open_log();
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(HOLDER_SCRIPT)
            .arg("sh")
            .arg(&self.plugin_dir)
            .arg(self.dir().join("mount-namespace"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut holder = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start `{}`: {err}", cmd::describe(&command)));
        let mut line = String::new();
        let stdout = holder.stdout.take().expect("the holder's stdout");
        // Bounded by the holder: it says `ready` or exits (closing the pipe).
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = holder.kill();
            let status = holder.wait();
            panic!(
                "the mount namespace for the engine in {} was not made ({status:?}); \
                 command: `{}`\n--- dockerd.log (tail) ---\n{}",
                self.host,
                cmd::describe(&command),
                self.log_tail(20)
            );
        }
        self.holder = Some(holder);
    }

    fn open_log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("dockerd.log"))
            .expect("dockerd.log")
    }

    /// Starts dockerd in the engine's mount namespace and its host's network namespace, and
    /// waits (bounded) until it answers.
    fn spawn_dockerd(&mut self) {
        let namespace = self
            .mount_namespace()
            .unwrap_or_else(|| panic!("the engine in {} was stopped", self.host));
        let log = self.open_log();
        let mut command = Command::new("nsenter");
        // nsenter execs dockerd, so the child's pid is dockerd's.
        command
            .arg(format!("--mount={}", namespace.display()))
            .arg(format!("--net={}", self.host_path.display()))
            .arg("--")
            .args(dockerd_args(self.dir(), self.live_restore))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dockerd.log"))
            .stderr(log);
        let started = Instant::now();
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start `{}`: {err}", cmd::describe(&command)));
        self.child = Some(child);
        self.wait_ready(&command);
        eprintln!(
            "dockerd in {} answered after {:?} ({}, live-restore {})",
            self.host,
            started.elapsed(),
            self.dir().display(),
            self.live_restore
        );
    }

    /// Stops dockerd (SIGTERM, as a service manager does) and starts it again in the same
    /// mount namespace, with the same directories, `--live-restore` if `live_restore`.
    /// Containers are left alone: with live-restore on while dockerd stopped, they keep
    /// running and the new dockerd takes them back; without it, dockerd stops them on the
    /// way out and restarts those with a restart policy.
    ///
    /// # Panics
    ///
    /// After [`stop`](Self::stop), or if dockerd does not start again (see
    /// [`start`](Self::start)).
    pub fn restart(&mut self, live_restore: bool) {
        assert!(
            self.holder.is_some(),
            "the engine in {} was stopped",
            self.host
        );
        let stopped = Instant::now();
        self.stop_dockerd();
        // Its managed containerd goes with it (shims stay: they hold the containers).
        let exec_root = format!("{}/", self.exec_root().display());
        let containerd = || -> Vec<(u32, String)> {
            self.processes()
                .into_iter()
                .filter(|(_, line)| line.starts_with("containerd ") && line.contains(&exec_root))
                .collect()
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !containerd().is_empty() {
            if Instant::now() >= deadline {
                for (pid, line) in containerd() {
                    eprintln!("restart: killing a containerd left running: {pid} {line}");
                    let _ = sys::signal(pid, libc::SIGKILL);
                }
            }
            if Instant::now() >= deadline + Duration::from_secs(5) {
                panic!(
                    "containerd of the engine in {} survived SIGKILL: {:?}",
                    self.host,
                    containerd()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "dockerd in {} stopped for a restart after {:?}",
            self.host,
            stopped.elapsed()
        );
        self.live_restore = live_restore;
        self.spawn_dockerd();
    }

    /// Whether dockerd runs with `--live-restore`.
    pub fn live_restore(&self) -> bool {
        self.live_restore
    }

    /// The engine's mount namespace (`/proc/PID/ns/mnt` of its holder), until the engine
    /// stops. It outlives dockerd across [`restart`](Self::restart)s, and with it every
    /// mount dockerd made there (container sandboxes' netns files, overlay layers).
    pub fn mount_namespace(&self) -> Option<PathBuf> {
        self.holder
            .as_ref()
            .map(|holder| PathBuf::from(format!("/proc/{}/ns/mnt", holder.id())))
    }

    fn wait_ready(&mut self, command: &Command) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.socket().exists() && self.docker(&["info"]).status.success() {
                return;
            }
            let child = self.child.as_mut().expect("a running dockerd");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "dockerd in {} exited ({status}) before answering; command: `{}`\n\
                     --- dockerd.log (tail) ---\n{}",
                    self.host,
                    cmd::describe(command),
                    self.log_tail(40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "dockerd in {} did not answer `docker info` within {START_TIMEOUT:?}; \
                 command: `{}`\n--- dockerd.log (tail) ---\n{}",
                self.host,
                cmd::describe(command),
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The engine's temporary directory: everything of it lives there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `--data-root`.
    pub fn data_root(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// `--exec-root` (containerd's config, socket and state are under `containerd/`).
    pub fn exec_root(&self) -> PathBuf {
        self.dir().join("run")
    }

    /// The API socket (`-H unix://...`).
    pub fn socket(&self) -> PathBuf {
        self.dir().join("docker.sock")
    }

    /// `unix://` + [`socket`](Self::socket), as `DOCKER_HOST` or vxtap's `--docker-host`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The directory the engine sees at `/run/docker/plugins`.
    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    /// The name of the host namespace it runs in.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// dockerd's pid, while it runs (its mount namespace is `/proc/PID/ns/mnt`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What dockerd (and its containerd) have logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dockerd.log")).unwrap_or_default()
    }

    /// The last `lines` lines of [`log`](Self::log).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Pids of the engine's processes: dockerd, containerd and shims, found by the engine's
    /// directory on their command lines.
    pub fn processes(&self) -> Vec<(u32, String)> {
        processes_naming(self.dir())
    }

    /// The name of the cgroup holding its containers, at the top of every hierarchy (see
    /// [`cgroups_named`]).
    pub fn cgroup_parent(&self) -> String {
        cgroup_parent(self.dir())
    }

    /// A `docker` command aimed at this engine (bounded by `timeout`), with a CLI config
    /// directory of its own and no `DOCKER_*` settings from the environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new("timeout");
        command
            .args(["--kill-after=5", &COMMAND_TIMEOUT.as_secs().to_string()])
            .arg("docker")
            .arg("-H")
            .arg(self.docker_host())
            .env("DOCKER_CONFIG", self.dir().join("cli"));
        for var in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ] {
            command.env_remove(var);
        }
        command
    }

    /// `docker -H unix://SOCK ARGS...`, whatever the exit status.
    pub fn docker<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        cmd::output(self.command().args(args).stdin(Stdio::null()))
    }

    /// `docker -H unix://SOCK ARGS...`, panicking (with dockerd's log tail) on failure;
    /// returns stdout.
    pub fn docker_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut command = self.command();
        command.args(args).stdin(Stdio::null());
        let out = cmd::output(&mut command);
        if !out.status.success() {
            panic!(
                "`{}` failed ({}) on the engine in {}:\n{}{}\n--- dockerd.log (tail) ---\n{}",
                cmd::describe(&command),
                out.status,
                self.host,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
                self.log_tail(20)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Removes every container, then stops dockerd: SIGTERM, SIGKILL after
    /// [`STOP_TIMEOUT`]; then ends the holder of its mount namespace. Waits (bounded) until
    /// no process of the engine is left, killing stragglers. Does nothing the second time.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let ids = self.docker(&["ps", "-aq"]);
                let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm".to_owned(), "-f".to_owned()];
                    args.extend(ids);
                    let out = self.docker(&args);
                    if !out.status.success() {
                        eprintln!(
                            "cleanup: docker rm -f in {} failed: {}",
                            self.host,
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                }
            }
        }
        self.stop_dockerd();
        // Closing its stdin ends the holder; the mount namespace, and every mount in it,
        // goes with its last process.
        if let Some(mut holder) = self.holder.take() {
            drop(holder.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match holder.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!(
                            "cleanup: the mount namespace holder of {} ignored EOF; killing it",
                            self.host
                        );
                        let _ = holder.kill();
                        let _ = holder.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        // dockerd stops its managed containerd on the way out; shims of containers that
        // were already gone exit by themselves. Whatever is left is killed.
        kill_leftovers(
            &format!("the engine in {}", self.host),
            Duration::from_secs(10),
            || self.processes(),
        );
    }

    /// SIGTERM to dockerd, SIGKILL after [`STOP_TIMEOUT`]; returns once it has exited.
    fn stop_dockerd(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = sys::signal(child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!(
                        "dockerd in {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                        self.host
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// dockerd's arguments for an engine living in `dir`.
fn dockerd_args(dir: &Path, live_restore: bool) -> Vec<String> {
    let at = |name: &str| dir.join(name).display().to_string();
    let mut args = vec![
        "dockerd".to_owned(),
        format!("--config-file={}", at("daemon.json")),
        format!("--data-root={}", at("data")),
        format!("--exec-root={}", at("run")),
        format!("--host=unix://{}", at("docker.sock")),
        format!("--pidfile={}", at("docker.pid")),
        // Containers' cgroups under a parent of the engine's own, which Drop removes.
        format!("--cgroup-parent=/{}", cgroup_parent(dir)),
        "--bridge=none".to_owned(),
        "--iptables=false".to_owned(),
        "--ip6tables=false".to_owned(),
        "--ip-masq=false".to_owned(),
        "--userland-proxy=false".to_owned(),
    ];
    if live_restore {
        args.push("--live-restore".to_owned());
    }
    args
}

/// The name of the cgroup that holds the containers of the engine living in `dir`: the
/// directory's own name (`vxtap-docker-XXXXXX`), at the top of every hierarchy.
fn cgroup_parent(dir: &Path) -> String {
    dir.file_name()
        .expect("an engine directory has a name")
        .to_string_lossy()
        .into_owned()
}

pub use vxtap::plumbing::procs::{cgroups_named, remove_cgroup};

/// Processes whose command line names something under `path` (pid, command line), this one
/// and the vxtap daemons (which name an engine's API socket) excluded.
pub fn processes_naming(path: &Path) -> Vec<(u32, String)> {
    vxtap::plumbing::procs::processes_naming(path, Some(&super::daemon::binary()))
}

/// Waits (bounded) until `processes()` finds none left, SIGKILLing them after `grace`;
/// `what` names the engine in messages.
pub(crate) fn kill_leftovers(
    what: &str,
    grace: Duration,
    processes: impl Fn() -> Vec<(u32, String)>,
) {
    let deadline = Instant::now() + grace;
    loop {
        let left = processes();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for (pid, line) in &left {
                eprintln!("cleanup: killing what {what} left: {pid} {line}");
                let _ = sys::signal(*pid, libc::SIGKILL);
            }
        }
        if Instant::now() >= deadline + Duration::from_secs(5) {
            eprintln!("cleanup: processes of {what} survived SIGKILL: {left:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points in this process's mount namespace at or under `path`
/// (`/proc/self/mountinfo`, field 5).
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        // mountinfo escapes spaces and the like as octal; the harness's paths have none.
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(path))
        .collect()
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- dockerd.log ({}, tail) ---\n{}",
                self.host,
                self.log_tail(40)
            );
        }
        self.stop();
        // Every mount of the engine lived in its private mount namespace, gone with its last
        // process; anything here means that failed, and must not outlive the test.
        let mut left = mounts_under(self.dir());
        left.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for mount in left {
            eprintln!(
                "cleanup: {} left mounted in the root namespace; unmounting",
                mount.display()
            );
            let out = cmd::try_run("umount", &[OsStr::new("-l"), mount.as_os_str()]);
            if !out.status.success() {
                eprintln!(
                    "cleanup: umount -l {} failed: {}",
                    mount.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        for cgroup in cgroups_named(&cgroup_parent(self.dir())) {
            if let Err(err) = remove_cgroup(&cgroup) {
                eprintln!("cleanup: removing cgroup {}: {err}", cgroup.display());
            }
        }
        if let Err(err) = std::fs::remove_dir_all(self.dir()) {
            eprintln!("cleanup: removing {}: {err}", self.dir().display());
        }
    }
}

/// The tag of a busybox image in `engine`, built once per engine with `docker import` from a
/// root file system holding `/bin/busybox` (Debian's static build) and a link in `/bin` for
/// every applet it has (`sh`, `ping`, `ip`, `nslookup`, `wget`, `nc`, `sleep`, `cat`, ...).
/// Its default command is `sh`, as in Docker Hub's busybox.
///
/// # Panics
///
/// If the root file system cannot be built or `docker import` fails.
pub fn busybox_image(engine: &DockerEngine) -> &'static str {
    engine.image.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("vxtap-busybox-")
            .tempdir_in("/tmp")
            .expect("a directory for the busybox root file system");
        let tar = busybox_tar(root.path());
        engine.docker_ok(&[
            OsStr::new("import"),
            OsStr::new("--change"),
            OsStr::new(r#"CMD ["sh"]"#),
            OsStr::new("--change"),
            OsStr::new("ENV PATH=/bin"),
            tar.as_os_str(),
            OsStr::new(BUSYBOX_IMAGE),
        ]);
    });
    BUSYBOX_IMAGE
}

/// Builds the root file system [`busybox_image`] describes under `dir` and returns the path
/// of its tar archive (`dir/rootfs.tar`), for an engine's `import`.
///
/// # Panics
///
/// If a file cannot be written or `tar` fails.
pub(crate) fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "etc", "root", "tmp", "var", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(sub)).expect("a root file system directory");
    }
    std::fs::copy(BUSYBOX_BINARY, rootfs.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copying {BUSYBOX_BINARY}: {e}"));
    let applets = cmd::run(BUSYBOX_BINARY, &["--list"]);
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
            .unwrap_or_else(|e| panic!("linking applet {applet}: {e}"));
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .expect("etc/passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("etc/group");
    let tar = dir.join("rootfs.tar");
    cmd::run(
        "tar",
        &[
            OsStr::new("--numeric-owner"),
            OsStr::new("-C"),
            rootfs.as_os_str(),
            OsStr::new("-cf"),
            tar.as_os_str(),
            OsStr::new("."),
        ],
    );
    tar
}

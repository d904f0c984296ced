//! [`Podman`]: a real podman (Debian's 4.3, its CNI network backend) for one test host, whose
//! containers join vxtap networks through vxtap's CNI plugin (the `vxtap` binary itself,
//! run by podman with `CNI_COMMAND` set), as a user would set a host up.
//!
//! podman has no daemon: every command is a process of its own, so an "engine" here is a set
//! of private directories and the flags and configuration that point every podman command
//! at them. Several share the machine, one per host network namespace, and must never see
//! each other or touch the machine's own podman:
//!
//! - One temporary directory per engine holds everything: the storage (`--root`,
//!   `--runroot`, driver `vfs`, so image layers are plain directories and need no mount),
//!   libpod's state (`--tmpdir`), the CNI configuration directory (`--cni-config-dir`, the
//!   conflist the test gives), the CNI plugin directory and `containers.conf` (given in
//!   `CONTAINERS_CONF`, so `/etc/containers` is never read for it):
//!   `[network] network_backend = "cni"`, `cni_plugin_dirs` = that plugin directory, holding
//!   only a `vxtap` link to the binary under test (podman 4.3 brings `lo` up itself and never
//!   runs the standard `loopback` plugin); `[engine] lock_type = "file"` (locks under the
//!   tmpdir, not in `/dev/shm/libpod_lock`, which every podman of the machine shares and a
//!   fresh engine re-initialises). `CONTAINERS_STORAGE_CONF` names a `storage.conf` of the
//!   engine's own too. podman hands its environment to conmon, so the `podman container
//!   cleanup` that conmon runs when a container exits reads the same configuration.
//! - Commands run inside the host's network namespace (`nsenter --net`, as for the vxtap
//!   daemons), in the machine's mount namespace: the namespace podman makes for a container
//!   is bind-mounted at `/run/netns/netns-<random UUID>`, and vxtap's daemon, which runs in
//!   the machine's mount namespace, must see it. The random names never clash between
//!   engines; podman unmounts and deletes them when a container stops.
//! - `--cgroup-manager cgroupfs` and `--cgroup-parent=/vxtap-podman-XXXXXX` (the directory's
//!   name) on every `run`: containers and their conmons sit apart from the machine's
//!   `/libpod_parent`, and go with the engine. `--runtime runc` (Debian's podman takes
//!   `crun | runc`; docker.io brings runc), `--events-backend file` (no journald).
//! - `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024` on every `run`: podman's defaults
//!   (1048576 open files) exceed the hard limits of small VMs, and runc fails to set them.
//! - No registry: [`Podman::busybox_image`] imports the image the Docker harness builds
//!   from Debian's busybox-static (see [`super::docker::busybox_image`]).
//!
//! Outside the directory podman writes only what each container's network needs while it
//! runs: its namespace under `/run/netns` and libcni's cache of the plugin's result,
//! `/var/lib/cni/results/NETWORK-ID-IFNAME` (libcni's cache directory is not configurable in
//! podman 4.3; file names hold the random container id, so engines never share one).
//!
//! Dropping the guard removes its containers (`podman rm -af -t 0`, which runs the plugin's
//! DEL while the vxtap daemons still run), waits until no process of the engine is left
//! (conmon, `podman container cleanup`, the containers themselves, by their cgroups), killing
//! stragglers after a bound; then removes what a failed removal left: its containers'
//! network namespaces and libcni cache files, mounts under its directory (a container's
//! `/dev/shm`), its cgroups and the directory. Tests that need podman fail loudly when a
//! program is missing; they never skip.

use super::cmd;
use super::docker::{
    busybox_tar, cgroups_named, kill_leftovers, mounts_under, processes_naming, remove_cgroup,
};
use super::netns::Netns;
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long any `podman` command may run before `timeout` kills it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the engine's processes may take to exit once its containers are removed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The tag [`Podman::busybox_image`] gives its image (podman stores it as
/// `localhost/vxtap-busybox:test`).
pub const BUSYBOX_IMAGE: &str = "vxtap-busybox:test";
/// The highest CNI version podman 4.3 can use: its libcni (containernetworking/cni 1.1)
/// refuses a 1.1.0 result (`unsupported CNI result version "1.1.0"`) after the plugin has
/// done its work, so ADD fails (and podman's DEL undoes it). A conflist for it must say
/// this version or an older one.
pub const HIGHEST_CNI_VERSION: &str = "1.0.0";
/// Where libcni (in podman 4.3) caches each attachment's result.
pub const CNI_CACHE_RESULTS: &str = "/var/lib/cni/results";
/// The name the plugin has in an engine's plugin directory, as in a conflist's `"type"`.
pub const PLUGIN_NAME: &str = "vxtap";
/// What an engine needs, and the Debian package that brings each.
const PROGRAMS: [(&str, &str); 5] = [
    ("podman", "podman"),
    ("conmon", "conmon"),
    ("runc", "runc"),
    ("nsenter", "util-linux"),
    ("timeout", "coreutils"),
];
/// `run`'s resource limits (see the module docs).
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Panics unless every program an engine needs is on `PATH` and `/bin/busybox` exists,
/// naming what is missing and the package to install.
///
/// # Panics
///
/// As said.
pub fn require_podman() {
    super::require_root();
    let missing = super::missing_programs(&PROGRAMS);
    assert!(
        missing.is_empty(),
        "the podman tests need a real podman and run it; missing: {} \
         (./test.sh installs podman and busybox-static)",
        missing.join(", ")
    );
    assert!(
        Path::new(super::docker::BUSYBOX_BINARY).is_file(),
        "the podman tests build their image from {}, which is missing \
         (Debian package busybox-static; ./test.sh installs it)",
        super::docker::BUSYBOX_BINARY
    );
}

/// A container the engine started: what to remove if podman cannot.
#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    netns: Option<PathBuf>,
}

/// A private podman for one test host namespace; see the module docs.
#[derive(Debug)]
pub struct Podman {
    dir: tempfile::TempDir,
    host: String,
    host_path: PathBuf,
    network: String,
    image: OnceLock<()>,
    /// Containers started through [`run`](Self::run), for the clean-up.
    sandboxes: Mutex<Vec<Sandbox>>,
}

impl Podman {
    /// An engine for `host` whose CNI configuration directory holds `conflist` (a CNI
    /// network configuration list, e.g. `vxtap cni config NETWORK --run-dir DIR`'s output),
    /// as `NAME.conflist` for its `"name"`. Checks (bounded) that podman answers and lists
    /// the network.
    ///
    /// # Panics
    ///
    /// Without root or a program it needs (see [`require_podman`]), if `conflist` is not a
    /// JSON object with a `"name"`, or if podman fails; the message holds its stderr.
    pub fn start(host: &Netns, conflist: &str) -> Podman {
        require_podman();
        let parsed: serde_json::Value = serde_json::from_str(conflist).unwrap_or_else(|e| {
            panic!(
                "the conflist for {} is not JSON ({e}): {conflist}",
                host.name()
            )
        });
        let network = parsed["name"]
            .as_str()
            .unwrap_or_else(|| panic!("the conflist for {} has no name: {conflist}", host.name()))
            .to_owned();
        let dir = tempfile::Builder::new()
            .prefix("vxtap-podman-")
            .tempdir_in("/tmp")
            .expect("a directory for a podman engine under /tmp");
        let engine = Podman {
            dir,
            host: host.name().to_owned(),
            host_path: host.path().to_owned(),
            network,
            image: OnceLock::new(),
            sandboxes: Mutex::new(Vec::new()),
        };
        for sub in ["root", "runroot", "tmp", "cni", "cni-bin"] {
            let path = engine.dir().join(sub);
            std::fs::create_dir_all(&path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        }
        let conflist_path = engine
            .config_dir()
            .join(format!("{}.conflist", engine.network));
        std::fs::write(&conflist_path, conflist)
            .unwrap_or_else(|e| panic!("writing {}: {e}", conflist_path.display()));
        let plugin = engine.plugin_dir().join(PLUGIN_NAME);
        std::os::unix::fs::symlink(super::daemon::binary(), &plugin)
            .unwrap_or_else(|e| panic!("linking {}: {e}", plugin.display()));
        std::fs::write(
            engine.dir().join("containers.conf"),
            engine.containers_conf(),
        )
        .expect("containers.conf");
        std::fs::write(engine.dir().join("storage.conf"), engine.storage_conf())
            .expect("storage.conf");
        // podman runs each plugin's VERSION when it loads a conflist and leaves out, with a
        // warning on stderr, a network whose plugins fail it.
        let out = engine.podman(&["network", "ls", "--format", "{{.Name}}"]);
        let networks = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && networks.lines().any(|n| n == engine.network),
            "podman in {} does not list network {} from {} ({}): {networks}\n{}",
            engine.host,
            engine.network,
            conflist_path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        engine
    }

    /// The `containers.conf` the engine's commands read (through `CONTAINERS_CONF`).
    fn containers_conf(&self) -> String {
        let at = |name: &str| self.dir().join(name).display().to_string();
        format!(
            "# A private podman for the vxtap tests (src/harness/podman.rs).\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [\"{plugins}\"]\n\
             network_config_dir = \"{config}\"\n\
             [engine]\n\
             # Not /dev/shm/libpod_lock, which every podman of the machine shares.\n\
             lock_type = \"file\"\n\
             tmp_dir = \"{tmp}\"\n\
             events_logger = \"file\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             runtime = \"runc\"\n",
            plugins = at("cni-bin"),
            config = at("cni"),
            tmp = at("tmp"),
        )
    }

    /// The `storage.conf` the engine's commands read (through `CONTAINERS_STORAGE_CONF`).
    fn storage_conf(&self) -> String {
        format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
            self.dir().join("runroot").display(),
            self.dir().join("root").display()
        )
    }

    /// podman's global flags for this engine (the same settings as the configuration files;
    /// conmon's `podman container cleanup` gets them as flags too).
    fn global_args(&self) -> Vec<String> {
        let at = |name: &str| self.dir().join(name).display().to_string();
        vec![
            "--root".to_owned(),
            at("root"),
            "--runroot".to_owned(),
            at("runroot"),
            "--tmpdir".to_owned(),
            at("tmp"),
            "--storage-driver".to_owned(),
            "vfs".to_owned(),
            "--cni-config-dir".to_owned(),
            at("cni"),
            "--network-backend".to_owned(),
            "cni".to_owned(),
            "--cgroup-manager".to_owned(),
            "cgroupfs".to_owned(),
            "--events-backend".to_owned(),
            "file".to_owned(),
            "--runtime".to_owned(),
            "runc".to_owned(),
        ]
    }

    /// The engine's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The name of the host namespace it runs in.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The network its conflist defines.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Its CNI configuration directory (`--cni-config-dir`).
    pub fn config_dir(&self) -> PathBuf {
        self.dir().join("cni")
    }

    /// Its CNI plugin directory (`cni_plugin_dirs`), holding `vxtap`.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir().join("cni-bin")
    }

    /// The name of the cgroup holding its containers and their conmons, at the top of every
    /// hierarchy.
    pub fn cgroup_parent(&self) -> String {
        self.dir()
            .file_name()
            .expect("an engine directory has a name")
            .to_string_lossy()
            .into_owned()
    }

    /// A `podman` command aimed at this engine, inside its host's network namespace and
    /// bounded by `timeout`, with the engine's configuration and no remote-podman settings
    /// from the environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new("timeout");
        command
            .args(["--kill-after=5", &COMMAND_TIMEOUT.as_secs().to_string()])
            .arg("nsenter")
            .arg(format!("--net={}", self.host_path.display()))
            .arg("--")
            .arg("podman")
            .args(self.global_args())
            .env("CONTAINERS_CONF", self.dir().join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir().join("storage.conf"))
            .stdin(Stdio::null());
        for var in ["CONTAINER_HOST", "CONTAINER_CONNECTION", "CONTAINER_SSHKEY"] {
            command.env_remove(var);
        }
        command
    }

    /// `podman ARGS...`, whatever the exit status.
    pub fn podman<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        cmd::output(self.command().args(args))
    }

    /// `podman ARGS...`, panicking (with podman's stderr) on failure; returns stdout.
    pub fn podman_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut command = self.command();
        command.args(args);
        let out = cmd::output(&mut command);
        if !out.status.success() {
            panic!(
                "`{}` failed ({}) on the engine in {}:\n{}{}",
                cmd::describe(&command),
                out.status,
                self.host,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The tag of a busybox image in this engine (see [`super::docker::busybox_image`]),
    /// imported once per engine.
    ///
    /// # Panics
    ///
    /// If the root file system cannot be built or `podman import` fails.
    pub fn busybox_image(&self) -> &'static str {
        self.image.get_or_init(|| {
            let root = tempfile::Builder::new()
                .prefix("vxtap-busybox-")
                .tempdir_in("/tmp")
                .expect("a directory for the busybox root file system");
            let tar = busybox_tar(root.path());
            self.podman_ok(&[
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

    /// `podman run -d --name NAME --network NETWORK` (plus the engine's cgroup parent and
    /// ulimits) `EXTRA... busybox COMMAND...`, whatever the exit status. A container that
    /// started is remembered for the clean-up.
    pub fn run(&self, name: &str, network: &str, extra: &[&str], command: &[&str]) -> Output {
        let image = self.busybox_image();
        let parent = format!("--cgroup-parent=/{}", self.cgroup_parent());
        let mut args = vec!["run", "-d", "--name", name, "--network", network, &parent];
        args.extend(ULIMITS);
        args.extend(extra);
        args.push(image);
        args.extend(command);
        let out = self.podman(&args);
        if out.status.success() {
            let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let netns = self.sandbox_key(&id);
            self.sandboxes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Sandbox { id, netns });
        }
        out
    }

    /// [`run`](Self::run), panicking with podman's stderr on failure; returns the
    /// container's id.
    pub fn run_ok(&self, name: &str, network: &str, extra: &[&str], command: &[&str]) -> String {
        let out = self.run(name, network, extra, command);
        assert!(
            out.status.success(),
            "podman run {name} --network {network} on the engine in {} failed ({}):\n{}",
            self.host,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `podman inspect --format TEMPLATE CONTAINER`, trimmed, or `None` if it fails.
    pub fn inspect(&self, container: &str, template: &str) -> Option<String> {
        let out = self.podman(&["inspect", "--format", template, container]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The path of `container`'s network namespace (podman's `SandboxKey`), if it has one.
    pub fn sandbox_key(&self, container: &str) -> Option<PathBuf> {
        self.inspect(container, "{{.NetworkSettings.SandboxKey}}")
            .filter(|key| !key.is_empty())
            .map(PathBuf::from)
    }

    /// The address podman recorded for `container` on `network` (from the plugin's result).
    pub fn ip_of(&self, container: &str, network: &str) -> Option<Ipv4Addr> {
        let template = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        self.inspect(container, &template)?.parse().ok()
    }

    /// The MAC podman recorded for `container` on `network`.
    pub fn mac_of(&self, container: &str, network: &str) -> Option<String> {
        let template =
            format!("{{{{(index .NetworkSettings.Networks \"{network}\").MacAddress}}}}");
        self.inspect(container, &template)
            .filter(|mac| !mac.is_empty())
    }

    /// `podman exec CONTAINER COMMAND...`, whatever the exit status.
    pub fn exec(&self, container: &str, command: &[&str]) -> Output {
        let mut args = vec!["exec", container];
        args.extend(command);
        self.podman(&args)
    }

    /// Ids of the engine's containers, running or not (`podman ps -aq --no-trunc`).
    pub fn container_ids(&self) -> Vec<String> {
        let out = self.podman(&["ps", "-aq", "--no-trunc"]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// libcni's cached results for container `id` (see [`CNI_CACHE_RESULTS`]).
    pub fn cni_cache_files(id: &str) -> Vec<PathBuf> {
        let needle = format!("-{id}-");
        let Ok(entries) = std::fs::read_dir(CNI_CACHE_RESULTS) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(&needle))
            })
            .collect()
    }

    /// The engine's processes: conmons and `podman container cleanup` (their command lines
    /// name its directory) and everything in its cgroups (the containers).
    pub fn processes(&self) -> Vec<(u32, String)> {
        let mut all = processes_naming(self.dir());
        for cgroup in cgroups_named(&self.cgroup_parent()) {
            for pid in pids_below(&cgroup) {
                if pid != std::process::id() && !all.iter().any(|(p, _)| *p == pid) {
                    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let line = String::from_utf8_lossy(&raw).replace('\0', " ");
                    all.push((pid, line.trim().to_owned()));
                }
            }
        }
        all
    }

    /// Removes every container (`podman rm -af -t 0`) and waits (bounded) until no process
    /// of the engine is left, killing stragglers.
    pub fn remove_all(&self) {
        let out = self.podman(&["rm", "-af", "-t", "0"]);
        if !out.status.success() {
            eprintln!(
                "cleanup: podman rm -af in {} failed: {}",
                self.host,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        kill_leftovers(
            &format!("the podman engine in {}", self.host),
            STOP_TIMEOUT,
            || self.processes(),
        );
    }
}

/// Pids in the cgroup at `path` and every cgroup below it.
fn pids_below(path: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(pids_below(&entry.path()));
            }
        }
    }
    pids
}

impl Drop for Podman {
    fn drop(&mut self) {
        let mut sandboxes = self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for id in self.container_ids() {
            if !sandboxes.iter().any(|s| s.id == id) {
                let netns = self.sandbox_key(&id);
                sandboxes.push(Sandbox { id, netns });
            }
        }
        if std::thread::panicking() {
            let ps = self.podman(&["ps", "-a"]);
            eprintln!(
                "--- podman ps -a ({}) ---\n{}{}",
                self.host,
                String::from_utf8_lossy(&ps.stdout),
                String::from_utf8_lossy(&ps.stderr)
            );
        }
        self.remove_all();
        // What podman removes itself when a container goes; here only if that failed.
        for sandbox in &sandboxes {
            if let Some(netns) = sandbox.netns.as_deref().filter(|p| p.exists()) {
                eprintln!(
                    "cleanup: podman left the network namespace {}; removing it",
                    netns.display()
                );
                if let Err(e) = vxtap::plumbing::netns::remove(netns) {
                    eprintln!("cleanup: {e}");
                }
            }
            for file in Podman::cni_cache_files(&sandbox.id) {
                eprintln!("cleanup: podman left {}; removing it", file.display());
                if let Err(e) = std::fs::remove_file(&file) {
                    eprintln!("cleanup: removing {}: {e}", file.display());
                }
            }
        }
        let mut left = mounts_under(self.dir());
        left.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for mount in left {
            eprintln!(
                "cleanup: podman left {} mounted; unmounting",
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
        for cgroup in cgroups_named(&self.cgroup_parent()) {
            if let Err(err) = remove_cgroup(&cgroup) {
                eprintln!("cleanup: removing cgroup {}: {err}", cgroup.display());
            }
        }
        if let Err(err) = std::fs::remove_dir_all(self.dir()) {
            eprintln!("cleanup: removing {}: {err}", self.dir().display());
        }
    }
}

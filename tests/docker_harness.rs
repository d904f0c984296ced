//! The Docker harness that issue 11's tests stand on, proved on its own: two hosts on a veth
//! underlay, a real dockerd in each (started at the same time), the busybox image built in
//! each, a container run in each, each engine seeing only its own plugin directory, and
//! nothing of either left afterwards: no process, no mount, no directory, no namespace. And
//! dockerd restarted under running containers, with live-restore (they keep running, same
//! pid, and `docker exec` works) and without it (they stop, or come back with
//! `--restart always`).
//!
//! Needs root and Debian's docker.io and busybox-static (./test.sh installs them); fails
//! loudly without them. Every wait is bounded; no assertion depends on timing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vxtap_suite::harness::cmd;
use vxtap_suite::harness::docker::{
    self, busybox_image, DockerEngine, StartOptions, PLUGIN_SOCKET_DIR,
};
use vxtap_suite::harness::topology::{HostKind, Topology};
use vxtap_suite::harness::NetnsExt;

/// `ls -A /run/docker/plugins` as the process `pid` sees it (its mount namespace).
/// `docker run --rm --network none IMAGE sh -c SCRIPT` on `engine`; its output.
fn run_sh(engine: &DockerEngine, image: &str, script: &str) -> String {
    engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "sh",
        "-c",
        script,
    ])
}

fn plugins_seen_by(pid: u32) -> Vec<String> {
    cmd::checked(Command::new("nsenter").args([
        "-t",
        &pid.to_string(),
        "-m",
        "ls",
        "-A",
        PLUGIN_SOCKET_DIR,
    ]))
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// The name `ip netns identify` gives the network namespace of `pid`.
fn netns_of(pid: u32) -> String {
    cmd::run("ip", &["netns", "identify", &pid.to_string()])
        .trim()
        .to_owned()
}

#[test]
fn two_engines_on_two_hosts_run_busybox_and_leave_nothing() {
    docker::require_docker();
    let topo = Topology::new(&[HostKind::Kernel, HostKind::Kernel]);
    let hosts = [&topo.hosts[0].ns, &topo.hosts[1].ns];

    // Both at once, as issue 11's multi-host tests will: nothing may collide.
    let started = Instant::now();
    let engines: Vec<DockerEngine> = std::thread::scope(|scope| {
        let starts: Vec<_> = hosts
            .iter()
            .map(|&host| scope.spawn(move || DockerEngine::start(host, None)))
            .collect();
        starts
            .into_iter()
            .map(|start| start.join().expect("an engine starts"))
            .collect()
    });
    eprintln!("two engines answered after {:?}", started.elapsed());
    let dirs: Vec<PathBuf> = engines.iter().map(|e| e.dir().to_owned()).collect();
    let pids: Vec<u32> = engines
        .iter()
        .map(|e| e.pid().expect("dockerd runs"))
        .collect();

    for (i, engine) in engines.iter().enumerate() {
        let name = engine.host();
        assert_eq!(
            netns_of(pids[i]),
            hosts[i].name(),
            "dockerd's network namespace"
        );
        let root = engine.docker_ok(&["info", "--format", "{{.DockerRootDir}}"]);
        assert_eq!(
            Path::new(root.trim()),
            engine.data_root(),
            "the engine in {name} reports another data root"
        );
        // Its own containerd, under its own exec root.
        let containerd: Vec<(u32, String)> = engine
            .processes()
            .into_iter()
            .filter(|(_, line)| line.starts_with("containerd "))
            .collect();
        assert_eq!(
            containerd.len(),
            1,
            "one containerd for {name}: {containerd:?}"
        );
        assert!(
            containerd[0]
                .1
                .contains(&engine.exec_root().display().to_string()),
            "containerd of {name} runs outside its exec root: {containerd:?}"
        );
        assert_eq!(
            netns_of(containerd[0].0),
            name,
            "containerd's network namespace"
        );
        // No docker0, nothing else: the engine added no interface to its host.
        let mut links = hosts[i].interfaces();
        links.sort();
        assert_eq!(
            links,
            ["lo", "ul0"],
            "interfaces in {name} after dockerd started"
        );
    }

    for engine in &engines {
        let image = busybox_image(engine);
        assert_eq!(busybox_image(engine), image, "busybox_image is idempotent");
        let images = engine.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert_eq!(images.trim(), image, "one image in {}", engine.host());
        let out = run_sh(engine, image, "echo ok");
        assert_eq!(out.trim(), "ok", "busybox in {}", engine.host());
        let wanted = "sh ping ip nslookup wget nc sleep cat";
        let script = format!("for a in {wanted}; do [ -x /bin/$a ] && echo $a; done; true");
        let applets = run_sh(engine, image, &script);
        assert_eq!(
            applets.split_whitespace().collect::<Vec<_>>().join(" "),
            wanted,
            "applets in the image"
        );
    }
    // A container left running: dropping the engine must remove it and its shim.
    let sleeper = engines[0].docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        busybox_image(&engines[0]),
        "sleep",
        "600",
    ]);
    let parent = engines[0].cgroup_parent();
    let cgroups = docker::cgroups_named(&parent);
    assert!(
        !cgroups.is_empty() && cgroups.iter().all(|c| c.join(sleeper.trim()).is_dir()),
        "the running container's cgroups are not under /{parent}: {cgroups:?}"
    );
    let parents: Vec<String> = engines.iter().map(DockerEngine::cgroup_parent).collect();

    // Each engine sees its own plugin directory at /run/docker/plugins, and nobody else does.
    std::fs::write(engines[0].plugin_dir().join("probe-a.sock"), b"").expect("probe a");
    std::fs::write(engines[1].plugin_dir().join("probe-b.sock"), b"").expect("probe b");
    assert_eq!(plugins_seen_by(pids[0]), ["probe-a.sock"]);
    assert_eq!(plugins_seen_by(pids[1]), ["probe-b.sock"]);
    let root_view: Vec<String> = std::fs::read_dir(PLUGIN_SOCKET_DIR)
        .expect("the root namespace's plugin directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        !root_view.iter().any(|f| f.starts_with("probe-")),
        "a probe leaked into the root namespace's {PLUGIN_SOCKET_DIR}: {root_view:?}"
    );
    // dockerd's own mounts (the plugin bind mount, the running container's layers) stay in
    // its mount namespace.
    for dir in &dirs {
        assert_eq!(
            docker::mounts_under(dir),
            Vec::<PathBuf>::new(),
            "mounts in the root namespace"
        );
    }

    let stopped = Instant::now();
    drop(engines);
    eprintln!("two engines stopped after {:?}", stopped.elapsed());
    for dir in &dirs {
        assert_eq!(
            docker::processes_naming(dir),
            [],
            "processes left of {}",
            dir.display()
        );
        assert_eq!(
            docker::mounts_under(dir),
            Vec::<PathBuf>::new(),
            "mounts left"
        );
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    for parent in &parents {
        assert_eq!(
            docker::cgroups_named(parent),
            Vec::<PathBuf>::new(),
            "cgroups left"
        );
    }
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "dockerd {pid} still runs"
        );
    }

    let names: Vec<PathBuf> = topo
        .namespaces()
        .iter()
        .map(|ns| ns.path().to_owned())
        .collect();
    drop(topo);
    for path in names {
        assert!(!path.exists(), "namespace {} still exists", path.display());
    }
}

/// `docker inspect -f '{{.State.Running}} {{.State.Pid}}' ID`.
fn state_of(engine: &DockerEngine, id: &str) -> (bool, u32) {
    let out = engine.docker_ok(&["inspect", "-f", "{{.State.Running}} {{.State.Pid}}", id]);
    let mut fields = out.split_whitespace();
    let running = fields.next() == Some("true");
    let pid = fields
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("docker inspect of {id}: {out:?}"));
    (running, pid)
}

/// The mount namespace of `pid` (`/proc/PID/ns/mnt`, as `mnt:[INODE]`).
fn mount_ns_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("a process's mount namespace")
}

/// Mount points under `path` in the mount namespace of `pid`.
fn mounts_of(pid: u32, path: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .expect("mountinfo")
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(path))
        .collect()
}

/// `docker run -d --network none --stop-timeout 1 [EXTRA...] busybox sleep 1000`: its id.
/// (`sleep` as pid 1 ignores SIGTERM; a short stop timeout keeps a stopping dockerd quick.)
fn sleeper(engine: &DockerEngine, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--network", "none", "--stop-timeout", "1"];
    args.extend_from_slice(extra);
    args.extend([busybox_image(engine), "sleep", "1000"]);
    engine.docker_ok(&args).trim().to_owned()
}

/// Drops the engine and checks that nothing of it is left: no process (the holder of its
/// mount namespace included), no mount in this namespace, no cgroup, no directory.
fn drop_and_check(engine: DockerEngine) {
    let dir = engine.dir().to_owned();
    let parent = engine.cgroup_parent();
    let namespace = engine.mount_namespace().expect("a running engine");
    let holder: u32 = namespace
        .components()
        .nth(2)
        .and_then(|c| c.as_os_str().to_str()?.parse().ok())
        .expect("/proc/PID/ns/mnt");
    let dockerd = engine.pid().expect("dockerd runs");
    // The engine mounts nothing in this namespace, even with containers running.
    assert_eq!(
        docker::mounts_under(&dir),
        Vec::<PathBuf>::new(),
        "mounts in the root namespace"
    );
    drop(engine);
    assert_eq!(docker::processes_naming(&dir), [], "processes left");
    assert_eq!(
        docker::mounts_under(&dir),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert_eq!(
        docker::cgroups_named(&parent),
        Vec::<PathBuf>::new(),
        "cgroups left"
    );
    for pid in [holder, dockerd] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still runs"
        );
    }
}

#[test]
fn live_restore_keeps_containers_running_across_a_dockerd_restart() {
    docker::require_docker();
    let topo = Topology::new(&[HostKind::Kernel]);
    let mut engine = DockerEngine::start_with(
        &topo.hosts[0].ns,
        None,
        StartOptions {
            live_restore: true,
            ..StartOptions::default()
        },
    );
    assert!(engine.live_restore());
    let id = sleeper(&engine, &[]);
    let (running, pid) = state_of(&engine, &id);
    assert!(running && pid > 0, "the container runs");
    let sandbox = engine.docker_ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", &id]);
    let sandbox = PathBuf::from(sandbox.trim());
    let old_dockerd = engine.pid().expect("dockerd runs");
    let namespace = mount_ns_of(old_dockerd);
    assert_ne!(
        namespace,
        mount_ns_of(std::process::id()),
        "dockerd's own mount namespace"
    );
    assert!(
        mounts_of(old_dockerd, &engine.exec_root()).contains(&sandbox),
        "the sandbox {} is not mounted in dockerd's namespace",
        sandbox.display()
    );

    engine.restart(true);
    let new_dockerd = engine.pid().expect("dockerd runs again");
    assert_ne!(new_dockerd, old_dockerd, "a new dockerd");
    assert_eq!(
        mount_ns_of(new_dockerd),
        namespace,
        "the same mount namespace"
    );
    assert!(
        mounts_of(new_dockerd, &engine.exec_root()).contains(&sandbox),
        "the sandbox {} is gone after the restart",
        sandbox.display()
    );
    assert_eq!(
        state_of(&engine, &id),
        (true, pid),
        "the container after the restart"
    );
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "its process");
    let out = engine.docker_ok(&["exec", &id, "sh", "-c", "echo ok; cat /proc/1/cmdline"]);
    assert_eq!(
        out.replace('\0', " ").trim(),
        "ok\nsleep 1000",
        "docker exec"
    );
    let log = engine.log();
    assert!(
        !log.contains("failed to create osl sandbox") && !log.contains("DeleteEndpoint"),
        "the restored sandbox was lost:\n{}",
        engine.log_tail(40)
    );
    // Once more, turning live-restore off: now the container stops with dockerd.
    engine.restart(false);
    assert!(!engine.live_restore());
    assert_eq!(
        state_of(&engine, &id),
        (false, 0),
        "after a restart without live-restore"
    );
    drop_and_check(engine);
}

#[test]
fn without_live_restore_a_dockerd_restart_stops_containers_or_restarts_them() {
    docker::require_docker();
    let topo = Topology::new(&[HostKind::Kernel]);
    let mut engine = DockerEngine::start(&topo.hosts[0].ns, None);
    assert!(!engine.live_restore());
    let plain = sleeper(&engine, &[]);
    let always = sleeper(&engine, &["--restart", "always"]);
    let (_, plain_pid) = state_of(&engine, &plain);
    let (_, always_pid) = state_of(&engine, &always);
    let namespace = mount_ns_of(engine.pid().expect("dockerd runs"));

    engine.restart(false);
    assert_eq!(
        mount_ns_of(engine.pid().expect("dockerd runs again")),
        namespace,
        "the same mount namespace"
    );
    assert_eq!(state_of(&engine, &plain), (false, 0), "the plain container");
    let exited = engine.docker_ok(&["inspect", "-f", "{{.State.Status}}", &plain]);
    assert_eq!(exited.trim(), "exited");
    // The restart policy brings the other one back, as a new process; dockerd starts it
    // while restoring, so it may still be on its way when the API answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        match state_of(&engine, &always) {
            (true, pid) if pid > 0 => break pid,
            state => assert!(
                Instant::now() < deadline,
                "the --restart always container is not back: {state:?}\n{}",
                engine.log_tail(40)
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(pid, always_pid, "a new process");
    for old in [plain_pid, always_pid] {
        assert!(
            !Path::new(&format!("/proc/{old}")).exists() || old == pid,
            "the old container process {old} still runs"
        );
    }
    let out = engine.docker_ok(&["exec", &always, "echo", "ok"]);
    assert_eq!(out.trim(), "ok", "docker exec");
    // And a new container runs after the restart.
    let out = engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        busybox_image(&engine),
        "echo",
        "ok",
    ]);
    assert_eq!(out.trim(), "ok");
    drop_and_check(engine);
}

//! The Docker harness that issue 11's tests stand on, proved on its own: two hosts on a veth
//! underlay, a real dockerd in each (started at the same time), the busybox image built in
//! each, a container run in each, each engine seeing only its own plugin directory, and
//! nothing of either left afterwards: no process, no mount, no directory, no namespace.
//!
//! Needs root and Debian's docker.io and busybox-static (./test.sh installs them); fails
//! loudly without them. Every wait is bounded; no assertion depends on timing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vxtap_suite::harness::cmd;
use vxtap_suite::harness::docker::{self, busybox_image, DockerEngine, PLUGIN_SOCKET_DIR};
use vxtap_suite::harness::topology::{HostKind, Topology};

/// `ls -A /run/docker/plugins` as the process `pid` sees it (its mount namespace).
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
        let out = engine.docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            "echo ok",
        ]);
        assert_eq!(out.trim(), "ok", "busybox in {}", engine.host());
        let wanted = "sh ping ip nslookup wget nc sleep cat";
        let script = format!("for a in {wanted}; do [ -x /bin/$a ] && echo $a; done; true");
        let applets = engine.docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            &script,
        ]);
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

//! What vxtap costs a Docker user, in one run of `cargo bench --bench docker` (as root, with
//! Debian's docker.io, busybox-static, iperf3, iputils-ping, iproute2 and util-linux).
//!
//! Two hosts on a directory store, each a network namespace with a real dockerd beside its
//! `vxtap daemon --docker` (the harness's [`DockerCluster`]), one vxtap network, busybox
//! containers. It prints one table:
//!
//! 1. **`docker run -d` returning on h2 → the first echo reply from that container to a
//!    long-running container on h1**, p50/p90/max over 20 containers, each removed before the
//!    next. The prober is the host's iputils `ping -n -q -c 1 -w 10 -i 0.01`, started in the
//!    h1 container's network namespace with `nsenter --net=/proc/PID/ns/net` the moment the
//!    command returns: one echo request every 10 ms until the first reply, so the figure has
//!    about 10 ms resolution, and it includes starting the prober, which the reference
//!    column measures against a container that already answers. Every container gets an
//!    address of its own (`--ip`), so each probe starts with a fresh ARP request, as the first
//!    client of a new container does: an ARP request that finds no entry yet is retried by the
//!    kernel only after its retransmit time (1 s by default), which would show in p90 and max.
//! 2. **`docker network create` returning on h1 → the network listed on h2**, median (min,
//!    max) of 5: h2's engine API is asked `GET /networks`, what `docker network ls` asks,
//!    every 20 ms (the CLI alone takes tens of milliseconds to start). Each network is
//!    removed, and gone from h2, before the next.
//! 3. **`docker run -d` wall time (the CLI included) on h1's engine, `--network` vxtap vs
//!    `--network none`**, 10 of each, and beside them a network of Docker's own bridge driver
//!    (a bridge in h1's namespace: what a local network costs Docker without any plugin); in
//!    turn, each container removed before the next; medians and their ratios.
//! 4. **iperf3, TCP, 1 stream, 5 s, median of 3 runs**: the host's iperf3 run in the
//!    containers' network namespaces (`nsenter --net=/proc/PID/ns/net`, client on h1, server
//!    on h2); then between two plain namespaces joined by `vxtap connect` on a control-plane
//!    [`Cluster`] of the same shape (two hosts, a directory store, the same daemons without
//!    the Docker flags), which isolates what Docker's plumbing costs beside vxtap's own; then
//!    between two namespaces on the kernel's vxlan device (the harness's recipe [`Topology`]
//!    with static fdb and neighbour entries). One setup exists at a time.
//!
//! `QUICK=1` shortens everything for a smoke run: 5 containers, 3 networks, 5 `docker run`s
//! of each kind, one 2 s iperf3 run per setup.
//!
//! The `vxtap` binary the hosts run is built first (`cargo build --release -p vxtap`):
//! `cargo bench` builds only this package's targets, and a stale binary would be measured
//! without a word. Every wait is bounded. Everything lives in namespaces the harness creates;
//! its guards remove them, the engines, the daemons and the iperf3 servers, panics included.
//! Nothing here passes or fails on a timing: it prints numbers.

#![deny(unsafe_code)]

use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vxtap::http::UnixClient;
use vxtap_suite::harness::cluster::{Cluster, StoreKind};
use vxtap_suite::harness::docker::busybox_image;
use vxtap_suite::harness::docker_cluster::DockerCluster;
use vxtap_suite::harness::{cmd, wait_until, HostKind, Topology};

/// The vxtap network of every setup, and its subnet (`--ip` needs one given by the user).
const NETWORK: &str = "bench";
const SUBNET: &str = "10.60.0.0/24";
/// The long-running containers: the prober and iperf3 client on h1, the iperf3 server on h2.
const PROBE_IP: Ipv4Addr = Ipv4Addr::new(10, 60, 0, 10);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 60, 0, 11);
/// Last octet of the first container started in the run-to-ping measurement.
const FIRST_PROBED: u8 = 100;
/// How long the prober waits for a reply (ping's `-w`, seconds).
const PROBE_DEADLINE: &str = "10";
/// How long a setup may take to pass its first ping, and a network to spread or go.
const SETTLE: Duration = Duration::from_secs(30);
const NETWORK_POLL: Duration = Duration::from_millis(20);
const IPERF_PORT: &str = "5201";
/// A network of Docker's own bridge driver on h1 (a bridge in h1's namespace), the
/// reference for `docker run -d` beside `--network none`.
const LOCAL_NETWORK: &str = "local";
const LOCAL_SUBNET: &str = "10.61.0.0/24";

/// How much to measure.
struct Plan {
    quick: bool,
    containers: usize,
    networks: usize,
    runs: usize,
    iperf_runs: usize,
    iperf_seconds: u32,
}

impl Plan {
    /// The full plan, or the short one under `QUICK=1`.
    fn from_env() -> Plan {
        let quick = std::env::var("QUICK").is_ok_and(|v| v == "1");
        if quick {
            Plan {
                quick,
                containers: 5,
                networks: 3,
                runs: 5,
                iperf_runs: 1,
                iperf_seconds: 2,
            }
        } else {
            Plan {
                quick,
                containers: 20,
                networks: 5,
                runs: 10,
                iperf_runs: 3,
                iperf_seconds: 5,
            }
        }
    }

    /// The command line that runs this plan.
    fn command(&self) -> &'static str {
        if self.quick {
            "QUICK=1 cargo bench --bench docker"
        } else {
            "cargo bench --bench docker"
        }
    }
}

/// Sorted measurements of one figure.
struct Samples(Vec<f64>);

impl Samples {
    fn new(mut values: Vec<f64>) -> Samples {
        assert!(!values.is_empty(), "a figure without measurements");
        values.sort_by(f64::total_cmp);
        Samples(values)
    }

    fn millis(durations: &[Duration]) -> Samples {
        Samples::new(durations.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    fn median(&self) -> f64 {
        let n = self.0.len();
        (self.0[(n - 1) / 2] + self.0[n / 2]) / 2.0
    }

    /// Nearest rank: the smallest value with at least `p` of them at or below it.
    fn percentile(&self, p: f64) -> f64 {
        let n = self.0.len();
        let rank = (p * n as f64).ceil() as usize;
        self.0[rank.clamp(1, n) - 1]
    }

    fn min(&self) -> f64 {
        self.0[0]
    }

    fn max(&self) -> f64 {
        self.0[self.0.len() - 1]
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// What the Docker setup measured.
struct DockerFigures {
    ready: Samples,
    prober_alone: Samples,
    spread: Samples,
    run_vxtap: Samples,
    run_bridge: Samples,
    run_none: Samples,
    iperf: Samples,
}

/// A process that is killed and reaped when the guard goes, panics included: the iperf3
/// servers live in container namespaces that no harness guard empties.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // It may have exited already (a one-off server); either way it is reaped.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let plan = Plan::from_env();
    let started = Instant::now();
    let progress = |what: &str| eprintln!("[{:>4.0}s] {what}", started.elapsed().as_secs_f64());
    require_programs();
    progress("building vxtap: cargo build --release -p vxtap");
    build_vxtap();
    let load_before = load_average();

    progress("Docker: two hosts, each with dockerd and vxtap daemon --docker");
    let docker = measure_docker(&plan, &progress);
    progress("vxtap connect: two hosts with control-plane daemons");
    let connect = Samples::new(measure_vxtap_connect(&plan));
    progress("kernel vxlan: two hosts with static entries");
    let kernel = Samples::new(measure_kernel(&plan));
    progress("done");

    let load = [load_before, load_average()];
    print_table(&plan, &docker, &connect, &kernel, &load);
}

/// The machine's 1-minute load average (`/proc/loadavg`), printed beside the figures: other
/// work on the machine skews every one of them.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_else(|e| panic!("reading /proc/loadavg: {e}"));
    text.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("/proc/loadavg is empty"))
        .to_owned()
}

/// Panics unless every program the benchmark runs itself is on `PATH`, naming the Debian
/// package of each one missing (the Docker engines' own are checked by the harness).
fn require_programs() {
    let missing = vxtap_suite::harness::missing_programs(&[
        ("iperf3", "iperf3"),
        ("ping", "iputils-ping"),
        ("ss", "iproute2"),
        ("nsenter", "util-linux"),
        ("timeout", "coreutils"),
    ]);
    assert!(
        missing.is_empty(),
        "the Docker benchmark runs these programs, which are missing: {}",
        missing.join(", ")
    );
}

/// Builds the `vxtap` binary in this benchmark's target directory, where the harness looks
/// for it (`target/release/vxtap` beside `target/release/deps/docker-*`).
fn build_vxtap() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "-p", "vxtap", "--bin", "vxtap"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // What cargo sets for the running benchmark must not reach the inner build: build
    // scripts that watch one of these (ring's watches CARGO_MANIFEST_DIR) would otherwise
    // be rebuilt there, and again by the next `cargo bench`, on every run.
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*name,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            command.env_remove(&key);
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", cmd::describe(&command)));
    assert!(
        status.success(),
        "`{}` failed ({status})",
        cmd::describe(&command)
    );
}

/// `nsenter --net=NETNS -- PROGRAM`: `PROGRAM` of the host, in the network namespace at
/// `netns` (a container's `/proc/PID/ns/net` or a harness namespace's file). nsenter execs
/// it, so the child's pid is the program's.
fn in_netns(netns: &Path, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(program);
    command
}

/// Starts the prober in `from` towards `to` and returns the time from `since` until it
/// exited with a reply; see the module docs.
///
/// # Panics
///
/// If no reply came within [`PROBE_DEADLINE`], with ping's output.
fn first_reply(from: &Path, to: Ipv4Addr, since: Instant) -> Duration {
    let mut command = in_netns(from, "ping");
    command.args(["-n", "-q", "-c", "1", "-w", PROBE_DEADLINE, "-i", "0.01"]);
    command.arg(to.to_string());
    let out = cmd::output(&mut command);
    let elapsed = since.elapsed();
    assert!(
        out.status.success(),
        "`{}`: no reply within {PROBE_DEADLINE} s ({}):\n{}{}",
        cmd::describe(&command),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// `iperf_runs` TCP iperf3 runs from the namespace at `client` to a server in `server`
/// listening on `ip`; the receiver's rate of each, in Gbit/s.
fn iperf3_runs(plan: &Plan, server: &Path, client: &Path, ip: Ipv4Addr) -> Vec<f64> {
    (0..plan.iperf_runs)
        .map(|_| iperf3(server, client, ip, plan.iperf_seconds))
        .collect()
}

fn iperf3(server: &Path, client: &Path, ip: Ipv4Addr, seconds: u32) -> f64 {
    let mut command = in_netns(server, "iperf3");
    command
        .args(["-s", "-1", "-p", IPERF_PORT])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = KillOnDrop(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", cmd::describe(&command))),
    );
    let filter = format!("sport = :{IPERF_PORT}");
    let listening = wait_until(Duration::from_secs(10), || {
        let out = cmd::output(in_netns(server, "ss").args(["-Hltn", &filter]));
        !out.stdout.is_empty()
    });
    assert!(
        listening,
        "`{}` is not listening after 10 s",
        cmd::describe(&command)
    );
    // The client's own bound is -t; `timeout` bounds a connection that never completes.
    let limit = (seconds + 30).to_string();
    let mut client_command = Command::new("timeout");
    client_command
        .args(["--kill-after=5", &limit, "nsenter"])
        .arg(format!("--net={}", client.display()))
        .args(["--", "iperf3", "-J", "-p", IPERF_PORT, "-t"])
        .arg(seconds.to_string())
        .arg("-c")
        .arg(ip.to_string());
    let out = cmd::checked(&mut client_command);
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("iperf3 -J printed no JSON ({e}):\n{out}"));
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 -J without end.sum_received:\n{out}"))
        / 1e9
}

/// `docker run -d --name NAME --network NETWORK [--ip IP] busybox sleep 100000` on host
/// `host`.
fn run_container(dc: &DockerCluster, host: usize, name: &str, network: &str, ip: Option<Ipv4Addr>) {
    let image = busybox_image(&dc.engines[host]);
    let ip = ip.map(|ip| ip.to_string());
    let mut args = vec!["run", "-d", "--name", name, "--network", network];
    if let Some(ip) = &ip {
        args.extend(["--ip", ip]);
    }
    args.extend([image, "sleep", "100000"]);
    dc.docker_ok(host, &args);
}

/// The network namespace of container `name` on host `host`: `/proc/PID/ns/net` of its
/// first process (dockerd shares the machine's pid namespace).
fn netns_of(dc: &DockerCluster, host: usize, name: &str) -> PathBuf {
    let pid = dc.docker_ok(host, &["inspect", "-f", "{{.State.Pid}}", name]);
    let pid: u32 = pid
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("docker inspect gave no pid for {name} ({e}): {pid:?}"));
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Whether the engine behind `api` lists network `name` (`GET /networks`).
fn listed(api: &UnixClient, name: &str) -> bool {
    let reply = api
        .get("/networks")
        .unwrap_or_else(|e| panic!("GET /networks: {e}"));
    assert_eq!(
        reply.status,
        200,
        "GET /networks: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let networks: Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("GET /networks is not JSON: {e}"));
    networks
        .as_array()
        .is_some_and(|all| all.iter().any(|n| n["Name"] == name))
}

fn create_network(dc: &DockerCluster, host: usize, name: &str, extra: &[&str]) {
    let mut args = vec!["network", "create", "-d", "vxtap", "--ipam-driver", "vxtap"];
    args.extend(extra);
    args.push(name);
    dc.docker_ok(host, &args);
}

fn measure_docker(plan: &Plan, progress: &dyn Fn(&str)) -> DockerFigures {
    let dc = DockerCluster::new(2, StoreKind::Dir);
    for engine in &dc.engines {
        busybox_image(engine);
    }
    let h2 = UnixClient::from_url(&dc.engines[1].docker_host(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("h2's engine API: {e}"));

    progress("network create on h1 -> listed on h2");
    let mut spread = Vec::new();
    for i in 0..plan.networks {
        let name = format!("spread{i}");
        create_network(&dc, 0, &name, &[]);
        let created = Instant::now();
        while !listed(&h2, &name) {
            assert!(
                created.elapsed() < SETTLE,
                "{name} not listed on h2 after {SETTLE:?}"
            );
            std::thread::sleep(NETWORK_POLL);
        }
        spread.push(created.elapsed());
        dc.docker_ok(0, &["network", "rm", &name]);
        assert!(
            wait_until(SETTLE, || !listed(&h2, &name)),
            "{name} still listed on h2 {SETTLE:?} after its removal on h1"
        );
    }

    create_network(&dc, 0, NETWORK, &["--subnet", SUBNET]);
    assert!(
        wait_until(SETTLE, || listed(&h2, NETWORK)),
        "{NETWORK} not listed on h2 after {SETTLE:?}"
    );
    run_container(&dc, 0, "probe", NETWORK, Some(PROBE_IP));
    run_container(&dc, 1, "server", NETWORK, Some(SERVER_IP));
    let probe = netns_of(&dc, 0, "probe");
    let server = netns_of(&dc, 1, "server");
    first_reply(&probe, SERVER_IP, Instant::now());

    progress("the prober alone, against a running container");
    let prober_alone: Vec<Duration> = (0..plan.runs)
        .map(|_| first_reply(&probe, SERVER_IP, Instant::now()))
        .collect();

    progress("docker run -d on h2 -> first ping reply from h1");
    let mut ready = Vec::new();
    for i in 0..plan.containers {
        let name = format!("ready{i}");
        let last = u8::try_from(usize::from(FIRST_PROBED) + i).expect("at most 155 containers");
        let ip = Ipv4Addr::new(10, 60, 0, last);
        run_container(&dc, 1, &name, NETWORK, Some(ip));
        let returned = Instant::now();
        ready.push(first_reply(&probe, ip, returned));
        dc.docker_ok(1, &["rm", "-f", &name]);
    }

    progress("docker run -d on h1: vxtap network, Docker's bridge driver, none");
    dc.docker_ok(
        0,
        &[
            "network",
            "create",
            "-d",
            "bridge",
            "--subnet",
            LOCAL_SUBNET,
            LOCAL_NETWORK,
        ],
    );
    let (mut run_vxtap, mut run_bridge, mut run_none) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..plan.runs {
        let mut order = [
            (NETWORK, &mut run_vxtap),
            (LOCAL_NETWORK, &mut run_bridge),
            ("none", &mut run_none),
        ];
        order.rotate_left(i % 3);
        for (network, samples) in order {
            let name = format!("run-{network}-{i}");
            let start = Instant::now();
            run_container(&dc, 0, &name, network, None);
            samples.push(start.elapsed());
            dc.docker_ok(0, &["rm", "-f", &name]);
        }
    }

    progress("iperf3 between the containers");
    let iperf = iperf3_runs(plan, &server, &probe, SERVER_IP);
    DockerFigures {
        ready: Samples::millis(&ready),
        prober_alone: Samples::millis(&prober_alone),
        spread: Samples::millis(&spread),
        run_vxtap: Samples::millis(&run_vxtap),
        run_bridge: Samples::millis(&run_bridge),
        run_none: Samples::millis(&run_none),
        iperf: Samples::new(iperf),
    }
}

/// iperf3 between two namespaces that `vxtap connect` put on a network across two hosts.
fn measure_vxtap_connect(plan: &Plan) -> Vec<f64> {
    let mut cluster = Cluster::new(2, StoreKind::Dir);
    cluster.hosts[0].cli_ok(&["network", "create", "--subnet", SUBNET, NETWORK]);
    let client = cluster.container("c1");
    let server = cluster.container("c2");
    cluster.connect(0, NETWORK, client, "c1");
    cluster.connect(1, NETWORK, server, "c2");
    let ip = cluster.endpoint_ip(NETWORK, "c2");
    let (client, server) = (
        cluster.containers[client].path(),
        cluster.containers[server].path(),
    );
    first_reply(client, ip, Instant::now());
    iperf3_runs(plan, server, client, ip)
}

/// iperf3 between two namespaces on the kernel's vxlan device across two hosts.
fn measure_kernel(plan: &Plan) -> Vec<f64> {
    let topology = Topology::recipe(&[HostKind::Kernel, HostKind::Kernel]);
    topology.program_static_peers(0);
    let (client, server) = (topology.container(0, 0), topology.container(1, 0));
    first_reply(client.ns.path(), server.ip, Instant::now());
    iperf3_runs(plan, server.ns.path(), client.ns.path(), server.ip)
}

fn print_table(
    plan: &Plan,
    docker: &DockerFigures,
    connect: &Samples,
    kernel: &Samples,
    load: &[String; 2],
) {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let iperf_runs = format!(
        "median of {} x {} s (min-max)",
        plan.iperf_runs, plan.iperf_seconds
    );
    let gbits = |s: &Samples| format!("{:.2} ({:.2}-{:.2})", s.median(), s.min(), s.max());
    let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
    let rows: Vec<[String; 4]> = vec![
        [
            "metric".into(),
            "Docker + vxtap".into(),
            "reference".into(),
            "ratio".into(),
        ],
        [
            format!(
                "`docker run -d` on h2 returned -> first ping reply from h1, ms: \
                 p50 (p90, max) of {}",
                docker.ready.len()
            ),
            format!(
                "{:.1} ({:.1}, {:.1})",
                docker.ready.median(),
                docker.ready.percentile(0.9),
                docker.ready.max()
            ),
            format!(
                "prober alone, container up: {:.1}",
                docker.prober_alone.median()
            ),
            String::new(),
        ],
        [
            format!(
                "`docker network create` on h1 returned -> listed on h2, ms: \
                 median (min, max) of {}",
                docker.spread.len()
            ),
            format!(
                "{:.1} ({:.1}, {:.1})",
                docker.spread.median(),
                docker.spread.min(),
                docker.spread.max()
            ),
            String::new(),
            String::new(),
        ],
        [
            format!("`docker run -d`, ms: median of {}", docker.run_vxtap.len()),
            format!("{:.0}", docker.run_vxtap.median()),
            format!("`--network none`: {:.0}", docker.run_none.median()),
            ratio(docker.run_vxtap.median(), docker.run_none.median()),
        ],
        [
            String::new(),
            String::new(),
            format!("Docker's bridge driver: {:.0}", docker.run_bridge.median()),
            ratio(docker.run_vxtap.median(), docker.run_bridge.median()),
        ],
        [
            format!("iperf3 TCP 1 stream h1 -> h2, Gbit/s: {iperf_runs}"),
            gbits(&docker.iperf),
            format!("`vxtap connect` namespaces: {}", gbits(connect)),
            ratio(docker.iperf.median(), connect.median()),
        ],
        [
            String::new(),
            String::new(),
            format!("kernel vxlan namespaces: {}", gbits(kernel)),
            ratio(docker.iperf.median(), kernel.median()),
        ],
    ];
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String; 4]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if c == 0 || c == 2 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    println!();
    println!(
        "vxtap under Docker: 2 hosts (network namespaces, veth underlay), dir store, \
         {cpus} CPUs{}",
        if plan.quick {
            " (QUICK=1: shortened)"
        } else {
            ""
        }
    );
    println!(
        "1-minute load average before / after the measurements: {} / {}",
        load[0], load[1]
    );
    println!("command: {}", plan.command());
    println!();
    println!("{}", line(&rows[0]));
    // Markdown: the colon of a right-aligned column ends its cell.
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, &w)| {
            if c == 0 || c == 2 {
                "-".repeat(w + 2)
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    println!("|{}|", rule.join("|"));
    for row in &rows[1..] {
        println!("{}", line(row));
    }
    println!();
    for note in [
        "ping reply: `ping -c 1 -w 10 -i 0.01` in h1's container (nsenter), started when \
         `docker run -d` returns; every container a new `--ip`, so a fresh ARP request",
        "listed: h2's engine API, `GET /networks` (what `docker network ls` asks), every 20 ms",
        "`docker run -d`: the CLI's wall time on h1's engine; vxtap, bridge and none in turn",
        "iperf3: the host's, in the namespaces (nsenter), client h1, server h2; references: \
         namespaces on the same two hosts joined by `vxtap connect`, or by the kernel's vxlan",
    ] {
        println!("  {note}");
    }
}

//! `vxtap bench-control` (and `benches/control.sh`): the control plane at cluster scale.
//! For each number of simulated hosts it builds, from scratch:
//!
//! ```text
//!  switch ns sw0 ─ h1 198.18.0.1: real daemon (--threads 1) + one local endpoint (container c0)
//!               ─ h2..h11: real daemons for the connect test, started for it only
//!               ─ etcd 198.18.0.250 (etcd-server in its own namespace) + `vxtap sim`
//! ```
//!
//! and measures, for every `--daemon-binary` given (old builds take the same flags):
//!
//! - a new endpoint programmed at h1: from the simulator's timestamp just before the write
//!   until h1's fdb shows the MAC (polled through the admin socket every millisecond; the
//!   poll itself costs the daemon a `fdb show`), p50 and p99 over `--adds` adds;
//! - bytes read from etcd per change at h1: the rx bytes of h1's underlay veth over the adds,
//!   less the idle rate measured over a quiet interval as long, divided by the adds;
//! - etcd CPU per change: etcd's utime + stime over the adds, less its idle rate (lease
//!   keep-alives), divided by the adds;
//! - h1's CPU per change: its utime + stime over as many adds again, at the same pace but
//!   not polled (a poll costs the daemon a `fdb show`), less its idle rate, divided by the
//!   adds;
//! - a dead host purged: `kill` one simulated host, time from its last lease refresh until
//!   its endpoints are gone from h1's fdb, beside TTL + 1 s;
//! - connect latency p50/p99 with one client alone (`--serial-connects`, on the first
//!   client daemon), then connects a second with `--clients` daemons (each has connected
//!   one container and programmed the whole network first, untimed), each connecting
//!   fresh container namespaces one after the other for `--connect-seconds`, all in
//!   parallel (through the daemon binary's own `connect` command), then disconnecting them.
//!
//! Like `vxtap bench`, it needs root, changes no sysctl, adds nothing to the root namespace,
//! and removes everything it made, on error and on Ctrl-C too. Timings are printed, never
//! judged.

use super::machine;
use super::stats::percentile;
use super::BenchError;
use crate::api::{Reply, Request};
use crate::sim::SimProcess;
use crate::topology::{
    private_dir, DaemonProcess, HostKind, Namespace, Topology, TopologyError, Underlay,
};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The configuration name errors carry.
const STEP: &str = "control";
/// Where etcd listens on the underlay.
const ETCD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);
/// The benchmark network: a /16, room for 1000 × 10 simulated endpoints and the connects.
const SUBNET: &str = "10.128.0.0/16";
const NETWORK: &str = "bench";
/// Simulated VTEPs start above this address.
const VTEP_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
/// Generous bound for programming every simulated endpoint at start.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound for one change to show up (or go).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// `vxtap bench-control`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// Simulated hosts, one measurement each, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,300,1000")]
    pub hosts: Vec<usize>,
    /// Endpoints per simulated host.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// New endpoints timed at the real daemon.
    #[arg(long, default_value_t = 100)]
    pub adds: usize,
    /// Milliseconds between the starts of two adds (50: 20 adds a second).
    #[arg(long, default_value_t = 50)]
    pub add_interval_ms: u64,
    /// Lease TTL of the simulated hosts, seconds.
    #[arg(long, default_value_t = 10)]
    pub ttl: u64,
    /// Parallel connect clients, one real daemon each.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Connects timed with one client alone, before the parallel ones.
    #[arg(long, default_value_t = 20)]
    pub serial_connects: usize,
    /// Seconds each connect client keeps connecting.
    #[arg(long, default_value_t = 5)]
    pub connect_seconds: u64,
    /// Container namespaces made ahead per connect client (the most it can connect).
    #[arg(long, default_value_t = 25)]
    pub connect_pool: usize,
    /// Daemon binary to measure, as LABEL=PATH or PATH (repeatable: one column each; old
    /// builds work, they take the same daemon flags). Default: this binary.
    #[arg(long, value_name = "[LABEL=]PATH")]
    pub daemon_binary: Vec<String>,
    /// The etcd server binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd: PathBuf,
    /// The commit the binary was built from, for the header (benches/control.sh sets it).
    #[arg(long, env = "VXTAP_COMMIT")]
    pub commit: Option<String>,
}

/// One column of the table: a binary at a number of simulated hosts.
#[derive(Debug, Clone, Default)]
struct Column {
    label: String,
    hosts: usize,
    programmed: Option<Duration>,
    add_latencies: Vec<Duration>,
    read_per_change: Option<f64>,
    etcd_cpu_per_change: Option<f64>,
    daemon_cpu_per_change: Option<f64>,
    purge: Option<Duration>,
    ttl: Duration,
    serial_connect_latencies: Vec<Duration>,
    connect_latencies: Vec<Duration>,
    connects_per_second: Option<f64>,
    failures: Vec<String>,
}

fn step(what: impl Into<String>, detail: impl ToString) -> BenchError {
    BenchError::Step {
        config: STEP,
        what: what.into(),
        detail: detail.to_string(),
    }
}

fn topology_error(source: TopologyError) -> BenchError {
    BenchError::Topology {
        config: STEP,
        source,
    }
}

/// Runs the benchmark and prints the table.
///
/// # Errors
///
/// Bad flags, missing privileges or programs, a failed step, an interrupt; everything
/// built is removed before the error returns.
pub fn run(args: &ControlArgs, command_line: &str) -> Result<(), BenchError> {
    let uid = rustix::process::geteuid();
    if !uid.is_root() {
        return Err(BenchError::NotRoot { uid: uid.as_raw() });
    }
    if !args.etcd.is_file() {
        return Err(BenchError::MissingPrograms(format!(
            "{} (apt-get install etcd-server)",
            args.etcd.display()
        )));
    }
    let missing = crate::topology::programs::missing_programs(&[
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
    ]);
    if !missing.is_empty() {
        return Err(BenchError::MissingPrograms(missing.join(", ")));
    }
    if args.adds == 0 || args.clients == 0 || args.hosts.is_empty() || args.endpoints == 0 {
        return Err(BenchError::BadArgument {
            flag: "--adds/--clients/--hosts/--endpoints".to_owned(),
            why: "must not be 0 or empty".to_owned(),
        });
    }
    if args.clients > 200 {
        return Err(BenchError::BadArgument {
            flag: "--clients".to_owned(),
            why: "at most 200 (one host namespace each on a /24 underlay)".to_owned(),
        });
    }
    let exe = std::env::current_exe().map_err(BenchError::Exe)?;
    let binaries = binaries(&args.daemon_binary, &exe)?;
    let interrupt = Arc::new(AtomicBool::new(false));
    let mut handlers = Vec::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Ok(id) = signal_hook::flag::register(signal, Arc::clone(&interrupt)) {
            handlers.push(id);
        }
    }
    let started = Instant::now();
    let load_before = machine::load_average();
    let mut columns = Vec::new();
    let mut outcome = Ok(());
    'all: for (scale, &hosts) in args.hosts.iter().enumerate() {
        for (b, (label, binary)) in binaries.iter().enumerate() {
            log(&format!(
                "{hosts} simulated hosts x {} endpoints, daemon {label} ({})",
                args.endpoints,
                binary.display()
            ));
            let prefix = format!("vxc{}s{scale}b{b}", std::process::id() % 100_000);
            let mut column = Column {
                label: label.clone(),
                hosts,
                ttl: Duration::from_secs(args.ttl),
                ..Column::default()
            };
            let measured = measure(args, &prefix, &exe, binary, &interrupt, &mut column);
            columns.push(column);
            if interrupt.load(Ordering::SeqCst) {
                outcome = Err(BenchError::Interrupted);
                break 'all;
            }
            if let Err(e) = measured {
                outcome = Err(e);
                break 'all;
            }
        }
    }
    for id in handlers {
        signal_hook::low_level::unregister(id);
    }
    let header = [
        format!("command: {command_line}"),
        format!("date: {}", machine::utc_now()),
        format!(
            "kernel {}, {} CPUs, vxtap {} (commit {})",
            machine::kernel_release(),
            machine::cpus(),
            env!("CARGO_PKG_VERSION"),
            args.commit
                .as_deref()
                .filter(|c| !c.is_empty())
                .unwrap_or("unknown")
        ),
        format!(
            "load average before: {load_before}, after: {}; took {} s",
            machine::load_average(),
            started.elapsed().as_secs()
        ),
        format!(
            "{} endpoints per simulated host, {} adds {} ms apart, lease TTL {} s, {} connect clients for {} s",
            args.endpoints, args.adds, args.add_interval_ms, args.ttl, args.clients, args.connect_seconds
        ),
    ];
    if !columns.is_empty() {
        for line in header {
            println!("{line}");
        }
        println!();
        print!("{}", table(&columns));
    }
    outcome
}

/// `--daemon-binary` values as (label, path); this binary when none is given.
fn binaries(given: &[String], exe: &Path) -> Result<Vec<(String, PathBuf)>, BenchError> {
    if given.is_empty() {
        return Ok(vec![("this".to_owned(), exe.to_owned())]);
    }
    given
        .iter()
        .map(|text| {
            let (label, path) = match text.split_once('=') {
                Some((label, path)) => (label.to_owned(), PathBuf::from(path)),
                None => (text.clone(), PathBuf::from(text)),
            };
            let path = std::fs::canonicalize(&path).map_err(|e| BenchError::BadArgument {
                flag: "--daemon-binary".to_owned(),
                why: format!("{}: {e}", path.display()),
            })?;
            Ok((label, path))
        })
        .collect()
}

fn log(line: &str) {
    eprintln!("[bench-control] {line}");
}

/// etcd-server in its namespace; killed when dropped (the namespace's teardown would too).
#[derive(Debug)]
struct EtcdServer {
    child: Child,
}

impl EtcdServer {
    fn start(binary: &Path, ns: &Namespace, dir: &Path) -> Result<EtcdServer, BenchError> {
        let log_path = dir.join("etcd.log");
        let log_file = std::fs::File::create(&log_path).map_err(|source| BenchError::Io {
            action: "creating",
            path: log_path.clone(),
            source,
        })?;
        let err_file = log_file.try_clone().map_err(|source| BenchError::Io {
            action: "opening",
            path: log_path.clone(),
            source,
        })?;
        let client = format!("http://{ETCD_IP}:2379");
        let peer = format!("http://{ETCD_IP}:2380");
        // `ip netns exec` execs etcd: the child's pid is etcd's.
        let child = ns
            .command(binary)
            .arg("--name=vxtap-bench")
            .arg(format!("--data-dir={}", dir.join("etcd-data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=vxtap-bench={peer}"))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| step("starting etcd", e))?;
        let mut server = EtcdServer { child };
        let url = format!("etcd://{ETCD_IP}:2379");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let open = ns
                .enter(|| crate::store::etcd::EtcdStore::open(&url).map(drop))
                .map_err(topology_error)?;
            if open.is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(step(
                    "starting etcd",
                    format!(
                        "it exited ({status}): {}",
                        crate::topology::log_tail(&log_path, 10)
                    ),
                ));
            }
            if Instant::now() >= deadline {
                return Err(step("starting etcd", "it did not serve within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// utime + stime so far, in clock ticks.
    fn cpu_ticks(&self) -> Result<u64, BenchError> {
        process_ticks(self.child.id()).ok_or_else(|| step("reading etcd's CPU time", "no stat"))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of process `pid` (`/proc/PID/stat` fields 14 and 15), in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Bytes received by `ifname` in `ns` (`ip -s -j link show`).
fn rx_bytes(ns: &Namespace, ifname: &str) -> Result<u64, BenchError> {
    let out = ns
        .run_ip(&["-s", "-j", "link", "show", "dev", ifname])
        .map_err(topology_error)?;
    let json: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| step("reading rx bytes", e))?;
    json[0]["stats64"]["rx"]["bytes"]
        .as_u64()
        .ok_or_else(|| step("reading rx bytes", format!("no stats64.rx.bytes in {out}")))
}

/// The fdb of the daemon in `run_dir`: (MAC, VTEP) rows.
fn fdb(run_dir: &Path) -> Result<Vec<(String, Ipv4Addr)>, BenchError> {
    match crate::client::call(run_dir, &Request::FdbShow { dev: None }) {
        Ok(Reply::Fdb(rows)) => Ok(rows.into_iter().map(|r| (r.mac, r.dst)).collect()),
        Ok(other) => Err(step("fdb show", format!("unexpected answer {other:?}"))),
        Err(e) => Err(step("fdb show", e)),
    }
}

/// Polls `run_dir`'s fdb every millisecond until `done` holds; when it did.
fn poll_fdb(
    run_dir: &Path,
    limit: Duration,
    interrupt: &AtomicBool,
    mut done: impl FnMut(&[(String, Ipv4Addr)]) -> bool,
) -> Result<Option<SystemTime>, BenchError> {
    let start = Instant::now();
    loop {
        if interrupt.load(Ordering::SeqCst) {
            return Err(BenchError::Interrupted);
        }
        if done(&fdb(run_dir)?) {
            return Ok(Some(SystemTime::now()));
        }
        if start.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts `binary daemon` for host `i` of `topology`.
fn start_daemon(
    topology: &Topology<DaemonProcess>,
    i: usize,
    binary: &Path,
    dir: &Path,
    interrupt: &AtomicBool,
) -> Result<DaemonProcess, BenchError> {
    let host = topology.host(i).map_err(topology_error)?;
    let run_dir = dir.join(&host.label);
    std::fs::create_dir_all(&run_dir).map_err(|source| BenchError::Io {
        action: "creating",
        path: run_dir.clone(),
        source,
    })?;
    let args: Vec<OsString> = [
        "--threads".to_owned(),
        "1".to_owned(),
        "--host".to_owned(),
        host.label.clone(),
        "--local-ip".to_owned(),
        host.underlay_ip.to_string(),
        "--store".to_owned(),
        format!("etcd://{ETCD_IP}:2379"),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    DaemonProcess::start(
        &host.label,
        host.ns.path(),
        binary,
        &run_dir,
        &dir.join(format!("{}.log", host.label)),
        &args,
        Some(interrupt),
    )
    .map_err(topology_error)
}

/// `binary --run-dir RUN_DIR ARGS...`; how long it took.
fn vxtap(binary: &Path, run_dir: &Path, args: &[&str]) -> Result<Duration, String> {
    let start = Instant::now();
    let out = Command::new(binary)
        .arg("--run-dir")
        .arg(run_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("vxtap {}: {e}", args.join(" ")))?;
    let took = start.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(format!(
            "vxtap {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One column: builds the topology, measures, tears it down.
fn measure(
    args: &ControlArgs,
    prefix: &str,
    exe: &Path,
    binary: &Path,
    interrupt: &AtomicBool,
    column: &mut Column,
) -> Result<(), BenchError> {
    let hosts = column.hosts;
    let total = hosts
        .checked_mul(args.endpoints)
        .filter(|&n| {
            n + 2 * args.adds + args.serial_connects + args.clients * (args.connect_pool + 1)
                < 65_000
        })
        .ok_or_else(|| BenchError::BadArgument {
            flag: "--hosts/--endpoints".to_owned(),
            why: format!("{hosts} x {} endpoints do not fit {SUBNET}", args.endpoints),
        })?;
    let dir =
        private_dir(Path::new("/tmp"), &format!("vxtap-bench-{prefix}")).map_err(topology_error)?;
    let mut topology: Topology<DaemonProcess> =
        Topology::new(prefix, Underlay::Switch, false).map_err(topology_error)?;
    topology.own_dir(dir.clone());
    topology
        .add_hosts(&vec![HostKind::Vxtap; 1 + args.clients])
        .map_err(topology_error)?;
    let etcd_ns = topology
        .add_underlay_ns(ETCD_IP.octets()[3])
        .map_err(topology_error)?;
    let etcd = EtcdServer::start(&args.etcd, &topology.extras[etcd_ns], &dir)?;
    let store = format!("etcd://{ETCD_IP}:2379");

    // h1: the measured daemon, with one local endpoint.
    let daemon = start_daemon(&topology, 0, binary, &dir, interrupt)?;
    let h1_run = daemon.run_dir().to_owned();
    topology.hosts[0].daemon = Some(daemon);
    vxtap(
        binary,
        &h1_run,
        &["network", "create", "--subnet", SUBNET, NETWORK],
    )
    .map_err(|e| step("creating the network", e))?;
    let c0 = topology.add_namespace("c0").map_err(topology_error)?;
    let c0_name = topology.extras[c0].name().to_owned();
    vxtap(
        binary,
        &h1_run,
        &["connect", NETWORK, &c0_name, "--name", "c0"],
    )
    .map_err(|e| step("connecting c0", e))?;

    // The simulated hosts.
    let mut sim_command = Command::new("nsenter");
    sim_command
        .arg(format!(
            "--net={}",
            topology.extras[etcd_ns].path().display()
        ))
        .arg(exe)
        .args(["sim", "--store", &store, "--network", NETWORK])
        .args(["--hosts", &hosts.to_string()])
        .args(["--endpoints", &args.endpoints.to_string()])
        .args(["--ttl", &args.ttl.to_string()])
        .args(["--vtep-base", &VTEP_BASE.to_string()]);
    let start = Instant::now();
    let mut sim = SimProcess::spawn(sim_command).map_err(|e| step("starting vxtap sim", e))?;
    let simulated = |rows: &[(String, Ipv4Addr)]| {
        rows.iter()
            .filter(|(_, dst)| {
                let offset = u32::from(*dst).wrapping_sub(u32::from(VTEP_BASE));
                offset >= 1 && offset as usize <= hosts
            })
            .count()
    };
    let programmed = poll_fdb(&h1_run, PROGRAM_TIMEOUT, interrupt, |rows| {
        simulated(rows) >= total
    })?;
    if programmed.is_none() {
        return Err(step(
            "programming the simulated endpoints",
            format!("h1 did not program all {total} within {PROGRAM_TIMEOUT:?}"),
        ));
    }
    column.programmed = Some(start.elapsed());
    log(&format!(
        "h1 programmed {total} simulated endpoints in {:?}",
        start.elapsed()
    ));

    // Idle baseline, then the adds, over intervals of the same planned length.
    let h1_ns = &topology.hosts[0].ns;
    let planned =
        Duration::from_millis(args.add_interval_ms) * u32::try_from(args.adds).unwrap_or(u32::MAX);
    let (rx0, cpu0, t0) = (rx_bytes(h1_ns, "ul0")?, etcd.cpu_ticks()?, Instant::now());
    sleep_interruptible(planned, interrupt)?;
    let (rx1, cpu1, t1) = (rx_bytes(h1_ns, "ul0")?, etcd.cpu_ticks()?, Instant::now());
    let idle_seconds = (t1 - t0).as_secs_f64();
    let idle_rx_rate = (rx1 - rx0) as f64 / idle_seconds;
    let idle_cpu_rate = (cpu1 - cpu0) as f64 / idle_seconds;

    let interval = Duration::from_millis(args.add_interval_ms);
    for k in 0..args.adds {
        let began = Instant::now();
        let added = sim
            .add(k % hosts)
            .map_err(|e| step("adding an endpoint", e))?;
        let seen = poll_fdb(&h1_run, CHANGE_TIMEOUT, interrupt, |rows| {
            rows.iter().any(|(mac, _)| *mac == added.mac)
        })?;
        match seen {
            Some(at) => column
                .add_latencies
                .push(at.duration_since(added.at).unwrap_or_default()),
            None => column.failures.push(format!(
                "add {k}: {} not programmed in {CHANGE_TIMEOUT:?}",
                added.mac
            )),
        }
        sleep_interruptible(interval.saturating_sub(began.elapsed()), interrupt)?;
    }
    let (rx2, cpu2, t2) = (rx_bytes(h1_ns, "ul0")?, etcd.cpu_ticks()?, Instant::now());
    let adds_seconds = (t2 - t1).as_secs_f64();
    let changes = args.adds as f64;
    column.read_per_change =
        Some(((rx2 - rx1) as f64 - idle_rx_rate * adds_seconds).max(0.0) / changes);
    let ticks = machine::ticks_per_second() as f64;
    column.etcd_cpu_per_change = Some(
        ((cpu2 - cpu1) as f64 - idle_cpu_rate * adds_seconds).max(0.0) / ticks / changes * 1000.0,
    );
    let (p50, p99) = percentiles(&column.add_latencies);
    log(&format!(
        "adds: p50 {p50:.1} ms, p99 {p99:.1} ms; {:.0} bytes read, {:.2} ms etcd CPU per change",
        column.read_per_change.unwrap_or(0.0),
        column.etcd_cpu_per_change.unwrap_or(0.0)
    ));

    // h1's CPU per change: as many adds again, at the same pace but not polled (the polls
    // cost the daemon too), less its idle rate over the quiet interval before.
    let h1_pid = topology.hosts[0]
        .daemon
        .as_ref()
        .and_then(DaemonProcess::pid)
        .ok_or_else(|| step("reading h1's CPU time", "no daemon pid"))?;
    let daemon_ticks =
        || process_ticks(h1_pid).ok_or_else(|| step("reading h1's CPU time", "no stat"));
    let (d0, t0) = (daemon_ticks()?, Instant::now());
    sleep_interruptible(planned, interrupt)?;
    let (d1, t1) = (daemon_ticks()?, Instant::now());
    let idle_daemon_rate = (d1 - d0) as f64 / (t1 - t0).as_secs_f64();
    let mut unpolled = Vec::with_capacity(args.adds);
    for _ in 0..args.adds {
        let began = Instant::now();
        let added = sim
            .add(unpolled.len() % hosts)
            .map_err(|e| step("adding an endpoint", e))?;
        unpolled.push(added.mac);
        sleep_interruptible(interval.saturating_sub(began.elapsed()), interrupt)?;
    }
    // Settled: the last one programmed (one poll a millisecond from here on only).
    let last = unpolled.last().cloned().unwrap_or_default();
    let settled = poll_fdb(&h1_run, CHANGE_TIMEOUT, interrupt, |rows| {
        rows.iter().any(|(mac, _)| *mac == last)
    })?;
    let (d2, t2) = (daemon_ticks()?, Instant::now());
    if settled.is_some() {
        column.daemon_cpu_per_change = Some(
            ((d2 - d1) as f64 - idle_daemon_rate * (t2 - t1).as_secs_f64()).max(0.0)
                / ticks
                / changes
                * 1000.0,
        );
    } else {
        column.failures.push(format!(
            "unpolled adds: {last} not programmed in {CHANGE_TIMEOUT:?}"
        ));
    }

    // A dead host: the last simulated one (no add went to it unless adds >= hosts).
    let victim = hosts - 1;
    let victim_vtep = Ipv4Addr::from(u32::from(VTEP_BASE) + u32::try_from(hosts).unwrap_or(0));
    let killed = sim.kill(victim).map_err(|e| step("killing a host", e))?;
    let gone = poll_fdb(&h1_run, killed.ttl + CHANGE_TIMEOUT, interrupt, |rows| {
        rows.iter().all(|(_, dst)| *dst != victim_vtep)
    })?;
    match gone {
        Some(at) => {
            let purge = at.duration_since(killed.last_refresh).unwrap_or_default();
            log(&format!(
                "dead host purged {purge:?} after its last refresh"
            ));
            column.purge = Some(purge);
        }
        None => column
            .failures
            .push("the killed host was never purged".to_owned()),
    }

    // Connects: a daemon per client, each connecting its own fresh namespaces.
    connects(args, &mut topology, binary, &dir, interrupt, total, column)?;

    if let Err(e) = sim.quit() {
        column.failures.push(format!("quitting the simulator: {e}"));
    }
    drop(etcd);
    for problem in topology.teardown() {
        log(&format!("cleanup: {problem}"));
    }
    Ok(())
}

/// The connect test (see the module docs).
fn connects(
    args: &ControlArgs,
    topology: &mut Topology<DaemonProcess>,
    binary: &Path,
    dir: &Path,
    interrupt: &AtomicBool,
    remote: usize,
    column: &mut Column,
) -> Result<(), BenchError> {
    let clients = args.clients;
    for i in 1..=clients {
        let daemon = start_daemon(topology, i, binary, dir, interrupt)?;
        topology.hosts[i].daemon = Some(daemon);
    }
    let mut pools: Vec<Vec<String>> = Vec::with_capacity(clients);
    for i in 1..=clients {
        let mut pool = Vec::with_capacity(args.connect_pool + 1);
        for n in 0..=args.connect_pool {
            let index = topology
                .add_namespace(&format!("k{i}n{n}"))
                .map_err(topology_error)?;
            pool.push(topology.extras[index].name().to_owned());
        }
        pools.push(pool);
    }
    let run_dirs: Vec<PathBuf> = (1..=clients)
        .map(|i| {
            topology.hosts[i]
                .daemon
                .as_ref()
                .map(|d| d.run_dir().to_owned())
                .unwrap_or_default()
        })
        .collect();
    // A first connect per daemon, not timed: it builds the host's overlay namespace.
    let warm: Vec<Result<Duration, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = run_dirs
            .iter()
            .zip(&pools)
            .map(|(run_dir, pool)| {
                scope.spawn(move || {
                    vxtap(
                        binary,
                        run_dir,
                        &["connect", NETWORK, &pool[0], "--name", &pool[0]],
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".to_owned())))
            .collect()
    });
    // A binary that cannot connect ten hosts at once (the old cluster lock times out) gets
    // a failure in its column, not the end of the whole run.
    let refused: Vec<String> = warm.into_iter().filter_map(Result::err).collect();
    if !refused.is_empty() {
        log(&format!(
            "{} of {clients} warm-up connects failed; no connect figures for this column",
            refused.len()
        ));
        column.failures.push(format!(
            "{} of {clients} first connects (all at once) failed: {}",
            refused.len(),
            refused[0]
        ));
        stop_clients(topology, clients);
        return Ok(());
    }
    // A host's first endpoint on a network makes it program the whole network (once): the
    // timed connects start when every client has, so they measure the steady state.
    for run_dir in &run_dirs {
        let programmed = poll_fdb(run_dir, PROGRAM_TIMEOUT, interrupt, |rows| {
            rows.len() >= remote
        })?;
        if programmed.is_none() {
            return Err(step(
                "warming up the connect daemons",
                format!("a client did not program {remote} endpoints within {PROGRAM_TIMEOUT:?}"),
            ));
        }
    }
    // Then each lists the network once more to watch it: wait until every client daemon
    // is idle (under 10% of a CPU over half a second), at most a minute.
    let pids: Vec<u32> = (1..=clients)
        .filter_map(|i| {
            topology.hosts[i]
                .daemon
                .as_ref()
                .and_then(DaemonProcess::pid)
        })
        .collect();
    let ticks = machine::ticks_per_second() as f64;
    let settle_by = Instant::now() + Duration::from_secs(60);
    loop {
        let before: Vec<Option<u64>> = pids.iter().map(|&p| process_ticks(p)).collect();
        sleep_interruptible(Duration::from_millis(500), interrupt)?;
        let busy =
            pids.iter()
                .zip(&before)
                .any(|(&pid, before)| match (before, process_ticks(pid)) {
                    (Some(b), Some(a)) => (a.saturating_sub(*b)) as f64 / ticks > 0.05,
                    _ => false,
                });
        if !busy {
            break;
        }
        if Instant::now() >= settle_by {
            log("the connect daemons were still busy after a minute; timing anyway");
            break;
        }
    }
    if interrupt.load(Ordering::SeqCst) {
        return Err(BenchError::Interrupted);
    }
    // One client alone first: connect latency without contention.
    let mut serial_connected = Vec::new();
    for n in 0..args.serial_connects {
        let index = topology
            .add_namespace(&format!("s{n}"))
            .map_err(topology_error)?;
        let name = topology.extras[index].name().to_owned();
        match vxtap(
            binary,
            &run_dirs[0],
            &["connect", NETWORK, &name, "--name", &name],
        ) {
            Ok(took) => {
                column.serial_connect_latencies.push(took);
                serial_connected.push(name);
            }
            Err(e) => column.failures.push(e),
        }
        if interrupt.load(Ordering::SeqCst) {
            return Err(BenchError::Interrupted);
        }
    }
    let (p50, p99) = percentiles(&column.serial_connect_latencies);
    log(&format!(
        "{} connects by one client: p50 {p50:.0} ms, p99 {p99:.0} ms",
        column.serial_connect_latencies.len()
    ));
    for name in &serial_connected {
        if let Err(e) = vxtap(binary, &run_dirs[0], &["disconnect", NETWORK, name]) {
            log(&e);
        }
    }

    let limit = Duration::from_secs(args.connect_seconds);
    let start = Instant::now();
    let results: Vec<(Vec<Duration>, Vec<String>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = run_dirs
            .iter()
            .zip(&pools)
            .map(|(run_dir, pool)| {
                scope.spawn(move || {
                    let mut took = Vec::new();
                    let mut connected = Vec::new();
                    let mut failures = Vec::new();
                    for name in &pool[1..] {
                        if start.elapsed() >= limit || interrupt.load(Ordering::SeqCst) {
                            break;
                        }
                        match vxtap(binary, run_dir, &["connect", NETWORK, name, "--name", name]) {
                            Ok(t) => {
                                took.push(t);
                                connected.push(name.clone());
                            }
                            Err(e) => failures.push(e),
                        }
                    }
                    (took, connected, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = start.elapsed();
    let mut total = 0;
    for (took, connected, failures) in &results {
        total += connected.len();
        column.connect_latencies.extend(took);
        column.failures.extend(failures.iter().take(3).cloned());
    }
    column.connects_per_second = Some(total as f64 / wall.as_secs_f64());
    let (p50, p99) = percentiles(&column.connect_latencies);
    log(&format!(
        "{total} connects by {clients} clients in {wall:?}: p50 {p50:.0} ms, p99 {p99:.0} ms"
    ));
    if results
        .iter()
        .any(|(_, connected, _)| connected.len() + 1 == pools[0].len())
    {
        log("a connect client used up its namespaces: raise --connect-pool");
    }
    // Disconnect everything again (not timed), in parallel per daemon.
    std::thread::scope(|scope| {
        for ((run_dir, pool), (_, connected, _)) in run_dirs.iter().zip(&pools).zip(&results) {
            scope.spawn(move || {
                for name in std::iter::once(&pool[0]).chain(connected) {
                    if let Err(e) = vxtap(binary, run_dir, &["disconnect", NETWORK, name]) {
                        log(&e);
                    }
                }
            });
        }
    });
    stop_clients(topology, clients);
    Ok(())
}

/// Stops the connect clients' daemons.
fn stop_clients(topology: &mut Topology<DaemonProcess>, clients: usize) {
    for i in 1..=clients {
        if let Some(mut daemon) = topology.hosts[i].daemon.take() {
            if let Err(e) = daemon.stop() {
                log(&e.to_string());
            }
        }
    }
}

fn sleep_interruptible(total: Duration, interrupt: &AtomicBool) -> Result<(), BenchError> {
    let end = Instant::now() + total;
    while Instant::now() < end {
        if interrupt.load(Ordering::SeqCst) {
            return Err(BenchError::Interrupted);
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

/// p50 and p99 of `samples`, in milliseconds (0 without samples).
fn percentiles(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    (
        percentile(&ms, 50.0).unwrap_or(0.0),
        percentile(&ms, 99.0).unwrap_or(0.0),
    )
}

/// The markdown table: one row per metric, one column per (hosts, binary).
fn table(columns: &[Column]) -> String {
    let mut out = String::from("| |");
    for c in columns {
        out.push_str(&format!(" {} hosts, {} |", c.hosts, c.label));
    }
    out.push_str("\n|---|");
    for _ in columns {
        out.push_str("---:|");
    }
    out.push('\n');
    let mut row = |name: &str, cell: &dyn Fn(&Column) -> String| {
        out.push_str(&format!("| {name} |"));
        for c in columns {
            out.push_str(&format!(" {} |", cell(c)));
        }
        out.push('\n');
    };
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    row("all simulated endpoints programmed at start", &|c| {
        or_dash(c.programmed.map(|d| format!("{:.1} s", d.as_secs_f64())))
    });
    row("new endpoint in the fdb, p50 / p99", &|c| {
        if c.add_latencies.is_empty() {
            return "-".to_owned();
        }
        let (p50, p99) = percentiles(&c.add_latencies);
        format!("{p50:.1} / {p99:.1} ms")
    });
    row("store read per change, per host", &|c| {
        or_dash(c.read_per_change.map(bytes_text))
    });
    row("etcd CPU per change", &|c| {
        or_dash(c.etcd_cpu_per_change.map(|ms| format!("{ms:.1} ms")))
    });
    row("h1 daemon CPU per change", &|c| {
        or_dash(c.daemon_cpu_per_change.map(|ms| format!("{ms:.2} ms")))
    });
    row("`connect` p50 / p99, one client", &|c| {
        if c.serial_connect_latencies.is_empty() {
            return "-".to_owned();
        }
        let (p50, p99) = percentiles(&c.serial_connect_latencies);
        format!("{p50:.0} / {p99:.0} ms")
    });
    row("`connect` p50 / p99, parallel clients", &|c| {
        if c.connect_latencies.is_empty() {
            return "-".to_owned();
        }
        let (p50, p99) = percentiles(&c.connect_latencies);
        format!("{p50:.0} / {p99:.0} ms")
    });
    row("connects/s, parallel clients", &|c| {
        or_dash(c.connects_per_second.map(|r| format!("{r:.1}")))
    });
    row("dead host purged (TTL + 1 s)", &|c| {
        or_dash(
            c.purge
                .map(|d| format!("{:.2} s ({} s)", d.as_secs_f64(), c.ttl.as_secs() + 1)),
        )
    });
    let failures: Vec<String> = columns
        .iter()
        .flat_map(|c| {
            c.failures
                .iter()
                .map(move |f| format!("- {} hosts, {}: {f}", c.hosts, c.label))
        })
        .collect();
    if !failures.is_empty() {
        out.push_str("\nfailures:\n");
        for f in failures {
            out.push_str(&f);
            out.push('\n');
        }
    }
    out
}

/// Bytes in B, KB or MB (powers of 1000, as the issue writes them).
fn bytes_text(bytes: f64) -> String {
    if bytes >= 1e6 {
        format!("{:.2} MB", bytes / 1e6)
    } else if bytes >= 1e3 {
        format!("{:.1} KB", bytes / 1e3)
    } else {
        format!("{bytes:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_default_to_this_one_and_take_labels() {
        let exe = std::env::current_exe().unwrap();
        let default = binaries(&[], &exe).unwrap();
        assert_eq!(default, vec![("this".to_owned(), exe.clone())]);
        let given = format!("before={}", exe.display());
        let labelled = binaries(&[given], &exe).unwrap();
        assert_eq!(labelled[0].0, "before");
        assert!(binaries(&["x=/no/such/vxtap".to_owned()], &exe).is_err());
    }

    #[test]
    fn the_table_has_a_column_per_run_and_a_row_per_metric() {
        let column = Column {
            label: "after".to_owned(),
            hosts: 100,
            programmed: Some(Duration::from_millis(1500)),
            add_latencies: vec![Duration::from_millis(10), Duration::from_millis(20)],
            read_per_change: Some(2500.0),
            etcd_cpu_per_change: Some(1.25),
            daemon_cpu_per_change: Some(0.5),
            purge: Some(Duration::from_millis(10_400)),
            ttl: Duration::from_secs(10),
            serial_connect_latencies: vec![Duration::from_millis(30)],
            connect_latencies: vec![Duration::from_millis(40)],
            connects_per_second: Some(21.5),
            failures: vec!["one".to_owned()],
        };
        let empty = Column {
            label: "before".to_owned(),
            hosts: 300,
            ..Column::default()
        };
        let text = table(&[column, empty]);
        assert!(text.starts_with("| | 100 hosts, after | 300 hosts, before |\n|---|---:|---:|\n"));
        assert!(
            text.contains("| store read per change, per host | 2.5 KB | - |"),
            "{text}"
        );
        assert!(
            text.contains("| etcd CPU per change | 1.2 ms | - |")
                || text.contains("| etcd CPU per change | 1.3 ms | - |"),
            "{text}"
        );
        assert!(text.contains("10.40 s (11 s)"), "{text}");
        assert!(
            text.contains("| h1 daemon CPU per change | 0.50 ms | - |"),
            "{text}"
        );
        assert!(
            text.contains("| `connect` p50 / p99, one client | 30 / 30 ms | - |"),
            "{text}"
        );
        assert!(text.contains("- 100 hosts, after: one"), "{text}");
        assert_eq!(bytes_text(7.5e6), "7.50 MB");
    }
}

//! One configuration, measured on a fresh topology: two hosts on a veth underlay
//! (198.18.0.1 <-> 198.18.0.2), in each an overlay namespace with `br0` and the VXLAN port
//! (VNI 42, UDP 4789, static fdb + neigh entries), a container on `br0` with MTU 1450, and
//! for the flood test an unknown host on a veth of its own to host B (198.19.0.9 ->
//! 198.19.0.2). Built with the shared [`Topology`] builder, torn down when dropped.
//!
//! Metrics, container A -> container B: ping p50/p99 on the idle overlay; TCP 1 stream with
//! the CPU it cost (the daemons' utime+stime, the machine's system+irq+softirq); TCP 1 stream
//! while the unknown host floods host B's port 4789; TCP 4 streams; the highest UDP rate
//! with < 1% loss by bounded bisection. Every program runs inside a namespace of the
//! topology; every wait is bounded.

use super::args::{Config, FloodMode, Settings};
use super::flood;
use super::machine;
use super::report::Results;
use super::stats::{self, Probe, UdpSearch};
use super::BenchError;
use crate::plumbing;
use crate::topology::{
    private_dir, DaemonProcess, HostKind, Namespace, NetworkSpec, Topology, TopologyError,
    Underlay, VXLAN_PORT,
};
use serde_json::Value;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Container B's address, where iperf3 listens.
const SERVER: &str = "10.0.0.3";
const IPERF_PORT: &str = "5201";
/// The unknown host and host B's address on their own link.
const STRANGER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 9);
const FLOODED_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

/// The benchmark's state across configurations and runs.
pub(crate) struct Bench<'a> {
    settings: &'a Settings,
    /// This `vxtap` binary: the daemons and the flood sender.
    exe: PathBuf,
    interrupt: &'a AtomicBool,
    start: Instant,
    /// Topologies built so far (part of each one's unique prefix).
    built: u32,
    pub(crate) results: Results,
}

/// One configuration's topology.
struct Lab {
    topology: Topology<DaemonProcess>,
    /// Index of the unknown host among the extras, with the flood test.
    stranger: Option<usize>,
}

impl Lab {
    fn container(&self, host: usize) -> &Namespace {
        &self.topology.hosts[host].networks[0].container.ns
    }
}

impl<'a> Bench<'a> {
    pub(crate) fn new(settings: &'a Settings, exe: PathBuf, interrupt: &'a AtomicBool) -> Self {
        Bench {
            settings,
            exe,
            interrupt,
            start: Instant::now(),
            built: 0,
            results: Results::default(),
        }
    }

    /// Seconds since the benchmark started.
    pub(crate) fn elapsed_seconds(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// A progress line on stderr.
    pub(crate) fn log(&self, message: &str) {
        eprintln!("[{:4}s] {message}", self.start.elapsed().as_secs());
    }

    fn check(&self) -> Result<(), BenchError> {
        if self.interrupt.load(Ordering::SeqCst) {
            Err(BenchError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Builds `config`'s topology, measures every metric, tears it down.
    pub(crate) fn measure(&mut self, run: u32, config: Config) -> Result<(), BenchError> {
        let tag = format!("run {run}/{} {}:", self.settings.runs, config.name());
        self.log(&format!("{tag} building the topology"));
        let lab = self.build(config)?;
        let outcome = self.metrics(&lab, &tag, config);
        self.log(&format!("{tag} tearing down"));
        let mut lab = lab;
        for problem in lab.topology.teardown() {
            self.log(&format!("{tag} cleanup: {problem}"));
        }
        outcome
    }

    fn metrics(&mut self, lab: &Lab, tag: &str, config: Config) -> Result<(), BenchError> {
        let s = self.settings;
        if s.flood != FloodMode::Only {
            self.check()?;
            self.log(&format!("{tag} ping RTT, {} pings", s.pings));
            let (p50, p99, lost) = self.ping(lab, config)?;
            if lost > 0 {
                self.log(&format!("{tag} WARNING: {lost} of {} pings lost", s.pings));
            }
            self.results.record("p50", config, p50);
            self.results.record("p99", config, p99);
            self.log(&format!("{tag} ping p50 {p50:.3} ms, p99 {p99:.3} ms"));
        }
        self.check()?;
        self.log(&format!("{tag} TCP 1 stream, {} s", s.duration));
        let (d0, m0) = (daemon_ticks(lab), machine::machine_ticks());
        let (gbps, bytes) = self.tcp(lab, config, 1)?;
        let (d1, m1) = (daemon_ticks(lab), machine::machine_ticks());
        self.results.record("tcp1", config, gbps);
        let hz = machine::ticks_per_second().max(1) as f64;
        let gigabytes = bytes as f64 / 1e9;
        let mut cpu = Vec::new();
        if let (Some(m0), Some(m1), true) = (m0, m1, gigabytes > 0.0) {
            let machine = m1.saturating_sub(m0) as f64 / hz;
            cpu.push(format!("machine sys+irq+softirq {:.0} ms", machine * 1e3));
            if s.flood != FloodMode::Only {
                self.results
                    .record("cpu_machine", config, machine / gigabytes);
            }
        }
        if let (Some(d0), Some(d1), true) = (d0, d1, gigabytes > 0.0) {
            let daemons = d1.saturating_sub(d0) as f64 / hz;
            cpu.push(format!("daemons {:.0} ms", daemons * 1e3));
            if s.flood != FloodMode::Only {
                self.results
                    .record("cpu_daemon", config, daemons / gigabytes);
            }
        }
        self.log(&format!(
            "{tag} TCP 1 stream = {gbps:.3} Gbit/s ({} MB; CPU: {})",
            bytes / 1_000_000,
            cpu.join(", ")
        ));
        if s.flood != FloodMode::Off {
            self.check()?;
            self.flood(lab, tag, config, gbps)?;
        }
        if s.flood == FloodMode::Only {
            return Ok(());
        }
        self.check()?;
        self.log(&format!("{tag} TCP 4 streams, {} s", s.duration));
        let (gbps, _) = self.tcp(lab, config, 4)?;
        self.results.record("tcp4", config, gbps);
        self.log(&format!("{tag} TCP 4 streams = {gbps:.3} Gbit/s"));
        self.log(&format!(
            "{tag} UDP 1400 B max rate < 1% loss (up to {} x {} s)",
            s.udp_probes, s.udp_duration
        ));
        let udp = self.udp_max(lab, tag, config)?;
        self.results.record("udp", config, udp);
        self.log(&format!("{tag} UDP = {udp:.3} Gbit/s"));
        Ok(())
    }

    /// The whole two-host topology of `config`, fresh; fails if the containers cannot ping.
    fn build(&mut self, config: Config) -> Result<Lab, BenchError> {
        let failed = |source: TopologyError| BenchError::Topology {
            config: config.name(),
            source,
        };
        self.built += 1;
        let id = format!("{}-{}", std::process::id(), self.built);
        // A bare veth underlay (TX checksum offload left on), as benches/overlay.sh always
        // measured it, so the figures stay comparable with the earlier tables.
        let mut topology =
            Topology::new(&format!("vxb{id}-"), Underlay::Pair, false).map_err(failed)?;
        let dir =
            private_dir(&std::env::temp_dir(), &format!("vxtap-bench-{id}")).map_err(failed)?;
        topology.own_dir(dir.clone());
        let kinds = config
            .vxtap_hosts()
            .map(|v| if v { HostKind::Vxtap } else { HostKind::Kernel });
        // Given explicitly, so that a VXTAP_BUSY_POLL in the environment cannot leak in.
        let mut args: Vec<OsString> = vec![
            "--underlay-filter".into(),
            if config.filter() { "on" } else { "off" }.into(),
            "--busy-poll".into(),
            config.busy_poll_us().to_string().into(),
        ];
        if let Some(threads) = self.settings.threads {
            args.extend(["--threads".into(), threads.to_string().into()]);
        }
        let (exe, interrupt) = (&self.exe, self.interrupt);
        topology.add_hosts(&kinds).map_err(failed)?;
        topology
            .start_daemons(|host, _| {
                let run_dir = dir.join(&host.label);
                std::fs::create_dir(&run_dir).map_err(|source| TopologyError::Io {
                    action: "creating",
                    path: run_dir.clone(),
                    source,
                })?;
                let log = dir.join(format!("{}.log", host.label));
                DaemonProcess::start(
                    &host.label,
                    host.ns.path(),
                    exe,
                    &run_dir,
                    &log,
                    &args,
                    Some(interrupt),
                )
            })
            .map_err(failed)?;
        let mut spec = NetworkSpec::recipe();
        if !config.offload() {
            spec = spec.link_args(&["offload", "off"]);
        }
        topology.add_network(spec).map_err(failed)?;
        topology.static_peers(0).map_err(failed)?;
        let stranger = if self.settings.flood == FloodMode::Off {
            None
        } else {
            Some(
                topology
                    .add_side_link(1, STRANGER_IP, FLOODED_IP)
                    .map_err(failed)?,
            )
        };
        let lab = Lab { topology, stranger };
        self.reachable(&lab, config)?;
        Ok(lab)
    }

    /// Container A pings container B (10 tries), then container B gets an iperf3 server.
    fn reachable(&self, lab: &Lab, config: Config) -> Result<(), BenchError> {
        let step = |what: &str, detail: String| BenchError::Step {
            config: config.name(),
            what: what.to_owned(),
            detail,
        };
        let mut last = String::new();
        let reached = (0..10).any(|_| {
            let mut ping = lab.container(0).command("ping");
            ping.args(["-n", "-c", "1", "-W", "1", SERVER]);
            match run(&mut ping, Duration::from_secs(5)) {
                Ok(_) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        if !reached {
            let logs: Vec<String> = lab
                .topology
                .hosts
                .iter()
                .filter_map(|h| h.daemon.as_ref())
                .map(|d| format!("{} daemon log:\n{}", d.label(), d.log_tail()))
                .collect();
            return Err(step(
                "container A cannot ping container B over the overlay",
                format!("{last}\n{}", logs.join("\n")),
            ));
        }
        let mut server = lab.container(1).command("iperf3");
        server.args(["-s", "-D", "-p", IPERF_PORT]);
        run(&mut server, Duration::from_secs(10))
            .map_err(|e| step("starting the iperf3 server", e))?;
        for _ in 0..50 {
            let mut ss = lab.container(1).command("ss");
            ss.args(["-Hltn", &format!("sport = :{IPERF_PORT}")]);
            if run(&mut ss, Duration::from_secs(5)).is_ok_and(|out| !out.trim().is_empty()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(step(
            "the iperf3 server in container B is not listening",
            String::new(),
        ))
    }

    /// (p50, p99, lost) of `pings` pings at 10 ms intervals.
    fn ping(&self, lab: &Lab, config: Config) -> Result<(f64, f64, u32), BenchError> {
        let count = self.settings.pings;
        let mut ping = lab.container(0).command("ping");
        ping.args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.01",
            "-W",
            "1",
            SERVER,
        ]);
        let limit = Duration::from_secs(10 + u64::from(count) / 50);
        // A lost ping makes ping exit 1; the times it did print still count.
        let line = "ping (container A)".to_owned();
        let out = plumbing::run(&mut ping, &line, limit).map_err(|e| BenchError::Step {
            config: config.name(),
            what: "ping".to_owned(),
            detail: e.to_string(),
        })?;
        let times = stats::ping_times(&String::from_utf8_lossy(&out.stdout));
        let lost = count.saturating_sub(u32::try_from(times.len()).unwrap_or(u32::MAX));
        match (
            stats::percentile(&times, 50.0),
            stats::percentile(&times, 99.0),
        ) {
            (Some(p50), Some(p99)) => Ok((p50, p99, lost)),
            _ => Err(BenchError::Step {
                config: config.name(),
                what: "ping".to_owned(),
                detail: format!("no reply to {count} pings"),
            }),
        }
    }

    /// iperf3 from container A, `-J`; one retry (the server may still be finishing the last
    /// test: "the server is busy").
    fn iperf(
        &self,
        lab: &Lab,
        config: Config,
        secs: u64,
        extra: &[&str],
    ) -> Result<Value, BenchError> {
        let mut problem = String::new();
        for attempt in 1..=2 {
            self.check()?;
            let mut client = lab.container(0).command("iperf3");
            client
                .args([
                    "-c",
                    SERVER,
                    "-p",
                    IPERF_PORT,
                    "-t",
                    &secs.to_string(),
                    "-J",
                ])
                .args(extra);
            let line = format!("iperf3 {}", extra.join(" "));
            let limit = Duration::from_secs(secs + 30);
            match plumbing::run(&mut client, &line, limit) {
                Ok(out) => {
                    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                    let end = &json["end"];
                    let summed = end.get("sum_received").is_some() || end.get("sum").is_some();
                    if json.get("error").is_none() && summed {
                        return Ok(json);
                    }
                    problem = json
                        .get("error")
                        .map(Value::to_string)
                        .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
                }
                Err(e) => problem = e.to_string(),
            }
            self.check()?;
            if attempt == 1 {
                self.log(&format!(
                    "{}: iperf3 {} failed ({problem}), retrying once",
                    config.name(),
                    extra.join(" ")
                ));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Err(BenchError::Step {
            config: config.name(),
            what: format!("iperf3 {}", extra.join(" ")),
            detail: format!("failed twice: {problem}"),
        })
    }

    /// TCP with `streams` streams: (receiver Gbit/s, bytes received).
    fn tcp(&self, lab: &Lab, config: Config, streams: u32) -> Result<(f64, u64), BenchError> {
        let json = self.iperf(
            lab,
            config,
            self.settings.duration,
            &["-P", &streams.to_string()],
        )?;
        let sum = &json["end"]["sum_received"];
        match (sum["bits_per_second"].as_f64(), sum["bytes"].as_f64()) {
            (Some(bps), Some(bytes)) => Ok((bps / 1e9, bytes as u64)),
            _ => Err(unexpected(config, "iperf3 TCP", &json)),
        }
    }

    /// One UDP probe at `rate` bit/s (0: unlimited).
    fn udp_probe(&self, lab: &Lab, config: Config, rate: u64) -> Result<Probe, BenchError> {
        let s = self.settings;
        let rate = rate.to_string();
        let json = self.iperf(
            lab,
            config,
            s.udp_duration,
            &["-u", "-l", "1400", "-w", &s.udp_buffer, "-b", &rate],
        )?;
        let end = &json["end"];
        let received = if end.get("sum_received").is_some() {
            &end["sum_received"]
        } else {
            &end["sum"]
        };
        let sent = if end.get("sum_sent").is_some() {
            &end["sum_sent"]
        } else {
            &end["sum"]
        };
        match (
            received["bits_per_second"].as_f64(),
            received["lost_percent"].as_f64(),
            sent["bits_per_second"].as_f64(),
        ) {
            (Some(r), Some(lost), Some(sent)) => Ok(Probe {
                received_gbps: r / 1e9,
                lost_percent: lost,
                sent_bps: sent.max(0.0) as u64,
            }),
            _ => Err(unexpected(config, "iperf3 UDP", &json)),
        }
    }

    fn udp_max(&self, lab: &Lab, tag: &str, config: Config) -> Result<f64, BenchError> {
        let mut search = UdpSearch::new(self.settings.udp_probes);
        let mut n = 0;
        while let Some(rate) = search.next_rate() {
            n += 1;
            let probe = self.udp_probe(lab, config, rate)?;
            let offered = if rate == 0 {
                "unlimited".to_owned()
            } else {
                format!("{:.2} Gbit/s", rate as f64 / 1e9)
            };
            self.log(&format!(
                "{tag} UDP probe {n}/{}: offered {offered}, received {:.3} Gbit/s, loss {:.3}%",
                self.settings.udp_probes, probe.received_gbps, probe.lost_percent
            ));
            search.record(probe);
        }
        if search.best() == 0.0 {
            self.log(&format!(
                "{tag} WARNING: no UDP probe stayed under 1% loss; recording 0"
            ));
        }
        Ok(search.best())
    }

    /// TCP 1 stream again while the unknown host floods host B's port 4789.
    fn flood(&mut self, lab: &Lab, tag: &str, config: Config, free: f64) -> Result<(), BenchError> {
        let s = self.settings;
        let Some(stranger) = lab.stranger.and_then(|i| lab.topology.extras.get(i)) else {
            return Ok(());
        };
        self.log(&format!(
            "{tag} TCP 1 stream under a flood of {} datagrams/s, {} s",
            s.flood_rate, s.duration
        ));
        let mut sender = stranger.command(&self.exe);
        sender
            .args(["bench-flood", &format!("{FLOODED_IP}:{VXLAN_PORT}")])
            .args([s.flood_rate.to_string(), (s.duration + 2).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = sender.spawn().map_err(|e| BenchError::Step {
            config: config.name(),
            what: "starting the flood sender".to_owned(),
            detail: e.to_string(),
        })?;
        std::thread::sleep(Duration::from_secs(1));
        let tcp = self.tcp(lab, config, 1);
        // It stops by itself a second after the TCP test.
        let out = child.wait_with_output().map_err(|e| BenchError::Step {
            config: config.name(),
            what: "waiting for the flood sender".to_owned(),
            detail: e.to_string(),
        })?;
        let (gbps, _) = tcp?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rate = flood::parse_rate(&text)
            .filter(|_| out.status.success())
            .ok_or_else(|| BenchError::Step {
                config: config.name(),
                what: "the flood sender".to_owned(),
                detail: format!(
                    "{}: {}{}",
                    out.status,
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })?;
        let kept = if free > 0.0 { 100.0 * gbps / free } else { 0.0 };
        self.results.record("tcp1_flood", config, gbps);
        self.results.record("flood_pps", config, rate);
        self.results.record("kept", config, kept);
        self.log(&format!(
            "{tag} TCP 1 stream under the flood = {gbps:.3} Gbit/s ({kept:.0}% of {free:.3}; {})",
            text.trim()
        ));
        Ok(())
    }
}

/// CPU ticks of every daemon of the lab, if it has any and all can be read.
fn daemon_ticks(lab: &Lab) -> Option<u64> {
    let daemons: Vec<&DaemonProcess> = lab
        .topology
        .hosts
        .iter()
        .filter_map(|h| h.daemon.as_ref())
        .collect();
    if daemons.is_empty() {
        return None;
    }
    daemons.iter().map(|d| d.cpu_ticks().ok()).sum()
}

fn unexpected(config: Config, what: &str, json: &Value) -> BenchError {
    let mut text = json.to_string();
    text.truncate(500);
    BenchError::Step {
        config: config.name(),
        what: what.to_owned(),
        detail: format!("unexpected JSON: {text}"),
    }
}

/// Runs `command` with a time limit; its stdout, or why it failed.
fn run(command: &mut Command, limit: Duration) -> Result<String, String> {
    let line = format!("{command:?}");
    match plumbing::run(command, &line, limit) {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(format!(
            "{line}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

//! `vxtap demo`: the first command for newcomers. On one machine it builds two "hosts" as
//! network namespaces joined by a veth underlay, runs a vxtap daemon on each with a shared
//! directory store, creates an overlay network and connects a "container" namespace on each
//! host through the CLI (as a user would), pings across by IP and by name, measures TCP
//! throughput, shows the tables, and cleans everything up, also on error and on Ctrl-C.
//! `vxtap demo docker` does the same with a Docker engine on each host and the `docker`
//! CLI ([`docker`]).
//!
//! - `hosts`: the namespaces, daemons and the cleanup guard ([`hosts::Lab`]);
//! - `cmd`: running `ip`, `nsenter`, `ping` and `vxtap` with time limits and interrupts;
//! - `inspect`: the `network inspect` JSON, the stable contract the demo reads addresses from;
//! - `engine`: the Docker demo's engines (one dockerd per host), from start to a clean stop;
//! - `docker_tools`: what the Docker demo needs on the machine, and its busybox image;
//! - `ping`, `throughput`, `mounts`: the steps' own helpers.
//!
//! This module never adds addresses or routes to the root namespace and never removes
//! anything it did not create (every name carries the run's `vxdemo<pid>` prefix).

mod cmd;
mod docker;
mod docker_tools;
mod engine;
mod error;
mod hosts;
mod inspect;

mod ping;
mod throughput;

pub use error::DemoError;

use hosts::{
    Containers, Lab, Tools, LOG_LINES, NETWORK, UNDERLAY_IF, UNDERLAY_PREFIX, VXTAP_SECONDS,
};
use inspect::NetworkView;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `vxtap demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The Docker demo (`vxtap demo docker`) instead of the plain one.
    pub docker: bool,
    /// Seconds of throughput measurement (the plain demo only).
    pub duration: u64,
    /// Leave everything running at the end instead of cleaning up (for poking around); an
    /// interrupt still cleans up.
    pub keep: bool,
}

/// What the demo measured, for the closing line.
#[derive(Debug, Default)]
struct Results {
    /// Average ping round trip by IP.
    rtt: Option<String>,
    /// Average TCP throughput.
    throughput: Option<String>,
}

/// How long the remote endpoint may take to reach a host's tables (through the store).
const PATIENCE: Duration = Duration::from_secs(8);
/// Steps, for the `== N/STEPS` headings.
const STEPS: u32 = 6;

/// Runs the demo.
///
/// # Errors
///
/// A missing prerequisite, a failed setup step, a failed ping or throughput measurement, or
/// an interrupt (SIGINT, SIGTERM). Everything is cleaned up first unless `keep` was asked.
pub fn run(options: &DemoOptions) -> anyhow::Result<()> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let mut handlers = Vec::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let id = signal_hook::flag::register(signal, Arc::clone(&interrupt))
            .map_err(|e| anyhow::anyhow!("installing a handler for signal {signal}: {e}"))?;
        handlers.push(id);
    }
    let result = if options.docker {
        docker::run_with(options, &interrupt)
    } else {
        run_with(options, &interrupt)
    };
    for id in handlers {
        signal_hook::low_level::unregister(id);
    }
    Ok(result?)
}

fn run_with(options: &DemoOptions, interrupt: &AtomicBool) -> Result<(), DemoError> {
    let tools = prerequisites()?;
    let mut lab = Lab::new(tools, Containers::Namespaces)?;
    println!(
        "vxtap demo: two hosts, an overlay network, a container on each (run {}, files in {})",
        lab.prefix,
        lab.dir.display()
    );
    let mut results = Results::default();
    let outcome = steps(&mut lab, options, interrupt, &mut results);
    let interrupted =
        interrupt.load(Ordering::SeqCst) || matches!(outcome, Err(DemoError::Interrupted));
    if interrupted {
        println!("\ninterrupted");
    } else if let Err(e) = &outcome {
        // Ping and throughput failures were shown in their step already.
        if !matches!(e, DemoError::Ping { .. } | DemoError::Throughput { .. }) {
            println!("\nFAILED: {e}");
        }
        show_logs(&mut lab);
    }
    if options.keep && !interrupted {
        keep(&mut lab);
    } else {
        println!("\n== cleanup");
        cleanup(&mut lab, Vec::new(), Vec::new());
    }
    if interrupted {
        // Whatever failed after the signal failed because of it.
        return Err(DemoError::Interrupted);
    }
    if outcome.is_ok() {
        let [client, server] = [&lab.hosts[0].endpoint, &lab.hosts[1].endpoint];
        let mut measured = Vec::new();
        if let Some(rtt) = &results.rtt {
            measured.push(format!("ping {rtt} avg"));
        }
        if let Some(rate) = &results.throughput {
            measured.push(format!("TCP {rate}"));
        }
        println!(
            "\ndone: {client} -> {server} across two hosts over vxtap: {}",
            measured.join(", ")
        );
    }
    outcome
}

/// Everything up to the cleanup; ping and throughput failures are reported after the tables.
fn steps(
    lab: &mut Lab,
    options: &DemoOptions,
    interrupt: &AtomicBool,
    results: &mut Results,
) -> Result<(), DemoError> {
    heading(1, STEPS, "hosts");
    lab.build(interrupt)?;
    for host in &lab.hosts {
        println!(
            "  {}: netns {}, underlay {UNDERLAY_IF} {}/{UNDERLAY_PREFIX}; its container: netns {}",
            host.label, host.netns, host.underlay_ip, host.container
        );
    }
    println!("  h1 and h2 are joined by a veth pair (the underlay); this machine's own namespace is untouched");

    check(interrupt)?;
    heading(2, STEPS, "daemons");
    lab.start_daemons(|_| Vec::new(), interrupt)?;
    for (host, pid) in lab.daemon_pids() {
        println!(
            "  {}: vxtap daemon pid {pid}, log {}",
            host.label,
            host.log.display()
        );
    }
    println!("  store: {} (shared by both)", lab.store_url());
    println!(
        "  below, `hN$ vxtap ...` is `vxtap --run-dir {}/hN ...`, the CLI talking to hN's daemon",
        lab.dir.display()
    );

    check(interrupt)?;
    heading(3, STEPS, "overlay network");
    let network = create_and_connect(lab, interrupt)?;
    let client = endpoint_ip(&network, &lab.hosts[0].endpoint)?;
    let server = endpoint_ip(&network, &lab.hosts[1].endpoint)?;

    check(interrupt)?;
    heading(4, STEPS, "ping");
    let mut failures = Vec::new();
    wait_for_tables(lab, &network, interrupt)?;
    let by_ip = ping_target(lab, &server.to_string(), interrupt)
        .map(|summary| results.rtt = summary.average());
    let reachable = keep_failure(by_ip, &mut failures)?;
    if reachable {
        let name = lab.hosts[1].endpoint.clone();
        let by_name = ping_target(lab, &name, interrupt).map(|_| ());
        keep_failure(by_name, &mut failures)?;
    }

    check(interrupt)?;
    heading(
        5,
        STEPS,
        &format!(
            "TCP throughput, {} ({client}) -> {} ({server}), {} s",
            lab.hosts[0].endpoint, lab.hosts[1].endpoint, options.duration
        ),
    );
    if options.duration == 0 {
        println!("  skipped (--duration 0)");
    } else if reachable {
        let measured = throughput_step(lab, server, options.duration, interrupt)
            .map(|rate| results.throughput = Some(rate));
        keep_failure(measured, &mut failures)?;
    } else {
        println!("  skipped: the containers cannot reach each other");
    }

    check(interrupt)?;
    heading(6, STEPS, "tables");
    let tables = show_tables(lab, interrupt);
    if let Err(e) = tables {
        if failures.is_empty() || matches!(e, DemoError::Interrupted) {
            return Err(e);
        }
        // An earlier failure explains this one; report that.
        println!("  FAILED: {e}");
    }
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// `network inspect` on host 1 and `fdb show` on both.
fn show_tables(lab: &Lab, interrupt: &AtomicBool) -> Result<(), DemoError> {
    println!("  h1$ vxtap network inspect {NETWORK}");
    let text = lab.vxtap(0, &["network", "inspect", NETWORK], limits(interrupt))?;
    indented(&inspect::pretty(&text));
    for host in 0..lab.hosts.len() {
        shell(lab, host, &["fdb", "show"], interrupt)?;
    }
    Ok(())
}

/// `network create`, `connect` on each host, then `network inspect` until it lists both
/// endpoints.
fn create_and_connect(lab: &mut Lab, interrupt: &AtomicBool) -> Result<NetworkView, DemoError> {
    shell(lab, 0, &["network", "create", NETWORK], interrupt)?;
    lab.network_created(0);
    for host in 0..lab.hosts.len() {
        let container = lab.hosts[host].container.clone();
        let endpoint = lab.hosts[host].endpoint.clone();
        let result = shell(
            lab,
            host,
            &["connect", NETWORK, &container, "--name", &endpoint],
            interrupt,
        );
        // After a timeout or an interrupt the endpoint may exist: try to disconnect it too.
        if matches!(
            result,
            Ok(_) | Err(DemoError::Timeout { .. } | DemoError::Interrupted)
        ) {
            lab.connected(host);
        }
        result?;
    }
    let network = await_endpoints(lab, NETWORK, PATIENCE, interrupt)?;
    describe_network(&network, "  ");
    Ok(network)
}

/// `network inspect NAME` on host 1 until it lists every host's endpoint, or `patience`
/// has passed (then with what it lists).
fn await_endpoints(
    lab: &Lab,
    name: &str,
    patience: Duration,
    interrupt: &AtomicBool,
) -> Result<NetworkView, DemoError> {
    let start = Instant::now();
    loop {
        let text = lab.vxtap(0, &["network", "inspect", name], limits(interrupt))?;
        let network = NetworkView::parse(&text).map_err(|reason| DemoError::Inspect {
            network: name.to_owned(),
            reason,
            output: inspect::shorten(&text, 300),
        })?;
        let complete = lab
            .hosts
            .iter()
            .all(|h| network.endpoint(&h.endpoint).is_some());
        if complete || start.elapsed() >= patience {
            return Ok(network);
        }
        pause(Duration::from_millis(200), interrupt)?;
    }
}

/// Prints a network's VNI, subnet and MTU and its endpoints, each line after `indent`.
fn describe_network(network: &NetworkView, indent: &str) {
    println!(
        "{indent}network {}: VNI {}, subnet {}, MTU {}",
        network.name,
        network.vni,
        network.subnet,
        network
            .mtu
            .map_or_else(|| "?".to_owned(), |m| m.to_string())
    );
    for e in &network.endpoints {
        println!(
            "{indent}endpoint {}: {} {} on {}",
            e.name,
            e.ip,
            e.mac,
            e.host.as_deref().unwrap_or("?")
        );
    }
}

/// The IPv4 address of endpoint `name` in the inspect output.
fn endpoint_ip(network: &NetworkView, name: &str) -> Result<std::net::Ipv4Addr, DemoError> {
    let endpoint = network.endpoint(name).ok_or_else(|| DemoError::Inspect {
        network: NETWORK.to_owned(),
        reason: format!("no endpoint named {name} after {} s", PATIENCE.as_secs()),
        output: format!(
            "endpoints: {:?}",
            network
                .endpoints
                .iter()
                .map(|e| &e.name)
                .collect::<Vec<_>>()
        ),
    })?;
    endpoint.ipv4().map_err(|reason| DemoError::Inspect {
        network: NETWORK.to_owned(),
        reason,
        output: endpoint.ip.clone(),
    })
}

/// A failed ping or throughput step is printed and kept for the exit status (`Ok(false)`);
/// anything else ends the demo.
fn keep_failure(
    result: Result<(), DemoError>,
    failures: &mut Vec<DemoError>,
) -> Result<bool, DemoError> {
    match result {
        Ok(()) => Ok(true),
        Err(e @ (DemoError::Ping { .. } | DemoError::Throughput { .. })) => {
            println!("  FAILED: {e}");
            failures.push(e);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Waits (bounded) until each host's forwarding table knows the other host's container.
/// Not finding it is not fatal: the pings that follow say whether traffic flows.
fn wait_for_tables(
    lab: &Lab,
    network: &NetworkView,
    interrupt: &AtomicBool,
) -> Result<(), DemoError> {
    for (host, other) in [(0, 1), (1, 0)] {
        let name = &lab.hosts[other].endpoint;
        let Some(mac) = network.endpoint(name).map(|e| e.mac.to_ascii_lowercase()) else {
            continue;
        };
        let start = Instant::now();
        let label = &lab.hosts[host].label;
        loop {
            let fdb = lab.vxtap(host, &["fdb", "show"], limits(interrupt))?;
            if fdb.to_ascii_lowercase().contains(&mac) {
                println!(
                    "  {label}'s forwarding table has {name} ({mac}) after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                break;
            }
            if start.elapsed() >= PATIENCE {
                println!(
                    "  {label}'s forwarding table still lacks {name} ({mac}) after {} s; pinging anyway",
                    PATIENCE.as_secs()
                );
                break;
            }
            pause(Duration::from_millis(100), interrupt)?;
        }
    }
    Ok(())
}

/// Pings `target` (an IP or a name) from the client container, retrying for a while.
fn ping_target(
    lab: &Lab,
    target: &str,
    interrupt: &AtomicBool,
) -> Result<ping::PingSummary, DemoError> {
    let client = &lab.hosts[0];
    println!("  {}$ ping -c 3 -i 0.2 {target}", client.endpoint);
    let result = ping::ping_until(
        &lab.tools.ip,
        &lab.tools.ping,
        &client.container,
        &client.endpoint,
        target,
        PATIENCE,
        interrupt,
    );
    match result {
        Ok(summary) => {
            println!("    {}", summary.describe());
            Ok(summary)
        }
        // A name that does not resolve: say whether the daemon wrote the hosts file.
        Err(DemoError::Ping {
            from,
            target,
            detail,
        }) if target.parse::<std::net::Ipv4Addr>().is_err() => {
            let hosts = Path::new("/etc/netns")
                .join(&client.container)
                .join("hosts");
            let note = if hosts.exists() {
                format!("{} exists", hosts.display())
            } else {
                format!("{} was not written", hosts.display())
            };
            Err(DemoError::Ping {
                from,
                target,
                detail: format!("{detail}; {note}"),
            })
        }
        Err(e) => Err(e),
    }
}

/// Measures TCP throughput client -> server with a live display, then shows host 1's
/// counters; returns the average rate.
fn throughput_step(
    lab: &Lab,
    server: std::net::Ipv4Addr,
    seconds: u64,
    interrupt: &AtomicBool,
) -> Result<String, DemoError> {
    let tty = std::io::stdout().is_terminal();
    let (client_ns, server_ns) = (lab.hosts[0].container_path(), lab.hosts[1].container_path());
    let from = throughput::End {
        label: &lab.hosts[0].endpoint,
        netns: &client_ns,
    };
    let to = throughput::End {
        label: &lab.hosts[1].endpoint,
        netns: &server_ns,
    };
    let progress = |second: u64, bps: f64| {
        let line = format!("  [{second:>2}s] {}", throughput::format_rate(bps));
        if tty {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
    };
    let result = throughput::measure(from, to, server, seconds, interrupt, progress);
    if tty {
        println!();
    }
    let measurement = result?;
    let rate = throughput::format_rate(measurement.bits_per_second());
    println!(
        "  average: {rate} over {:.1} s ({} received)",
        measurement.elapsed.as_secs_f64(),
        throughput::format_bytes(measurement.bytes)
    );
    shell(lab, 0, &["stats"], interrupt)?;
    Ok(rate)
}

/// Prints `hN$ vxtap ARGS`, runs it against host `host`'s daemon and prints its output
/// indented.
fn shell(
    lab: &Lab,
    host: usize,
    args: &[&str],
    interrupt: &AtomicBool,
) -> Result<String, DemoError> {
    println!("  {}$ vxtap {}", lab.hosts[host].label, args.join(" "));
    let out = lab.vxtap(host, args, limits(interrupt))?;
    indented(&out);
    Ok(out)
}

/// Prints `text` indented under a command line.
fn indented(text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            println!();
        } else {
            println!("    {line}");
        }
    }
}

/// Limits for `vxtap` commands: they may create things, so an interrupt lets them finish
/// (briefly) and is noticed between commands.
fn limits(interrupt: &AtomicBool) -> cmd::Limits<'_> {
    cmd::Limits::finishing(interrupt, VXTAP_SECONDS)
}

fn heading(step: u32, steps: u32, title: &str) {
    println!("\n== {step}/{steps} {title}");
}

fn check(interrupt: &AtomicBool) -> Result<(), DemoError> {
    if interrupt.load(Ordering::SeqCst) {
        Err(DemoError::Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps `duration`, waking early with `Interrupted`.
fn pause(duration: Duration, interrupt: &AtomicBool) -> Result<(), DemoError> {
    let end = Instant::now() + duration;
    loop {
        check(interrupt)?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// The tools, or the first thing missing as a one-line error.
fn prerequisites() -> Result<Tools, DemoError> {
    if !rustix::process::geteuid().is_root() {
        return Err(DemoError::Prerequisite {
            what: "must run as root".to_owned(),
            hint: "it creates network namespaces and TAP devices; try `sudo vxtap demo`",
        });
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(DemoError::Prerequisite {
            what: "/dev/net/tun is missing".to_owned(),
            hint:
                "load the tun module (`modprobe tun`); in a container, pass --device /dev/net/tun",
        });
    }
    let find = |name: &str, hint: &'static str| {
        cmd::find_program(name).ok_or_else(|| DemoError::Prerequisite {
            what: format!("the `{name}` command is not installed"),
            hint,
        })
    };
    let ip = find("ip", "apt-get install iproute2")?;
    let nsenter = find("nsenter", "apt-get install util-linux")?;
    // The daemons run it (found through the PATH they are given) to make overlay namespaces.
    find("unshare", "apt-get install util-linux")?;
    let ping = find("ping", "apt-get install iputils-ping")?;
    let vxtap = std::env::current_exe().map_err(DemoError::io(
        "finding",
        "the vxtap executable (/proc/self/exe)",
    ))?;
    Ok(Tools {
        ip,
        nsenter,
        ping,
        vxtap,
    })
}

/// After a failure: which daemons died, and the end of each daemon's log, before cleanup
/// deletes it.
fn show_logs(lab: &mut Lab) {
    for (label, status) in lab.exited_daemons() {
        println!("\n  the vxtap daemon of {label} is not running any more ({status})");
    }
    for host in &lab.hosts {
        if host.log.exists() {
            println!("\n  from {}:", host.log.display());
            for line in hosts::log_tail(&host.log, LOG_LINES).lines() {
                println!("    {line}");
            }
        }
    }
}

/// Leaves everything running and says how to look around and how to tear it down.
fn keep(lab: &mut Lab) {
    let vxtap = lab.tools.vxtap.display();
    let [h1, h2] = &lab.hosts;
    println!("\n== kept running (--keep). Look around:");
    println!("  ip netns exec {} ping {}", h1.container, h2.endpoint);
    println!("  ip netns exec {} ip addr show", h2.container);
    println!("  {vxtap} --run-dir {} fdb show", h1.run_dir.display());
    println!("  {vxtap} --run-dir {} stats", h2.run_dir.display());
    println!("  less {}", h1.log.display());
    println!("Tear down by hand:");
    for line in lab.keep() {
        println!("  {line}");
    }
}

/// Tears the lab down and checks that nothing is left; `problems` and `left` come from what
/// the caller undid before (the Docker demo's engines).
fn cleanup(lab: &mut Lab, mut problems: Vec<String>, mut left: Vec<String>) {
    problems.extend(lab.teardown());
    for problem in &problems {
        println!("  problem: {problem}");
    }
    left.extend(lab.leftovers());
    if left.is_empty() {
        println!("  nothing left behind");
    } else {
        println!("  LEFT BEHIND: {}", left.join(", "));
    }
}

//! `vxtap demo docker`: the Docker scenario, with real engines. Two hosts as in `vxtap demo`
//! (namespaces on a veth underlay, a vxtap daemon on each sharing a directory store), each
//! with a Docker engine of its own (`engine`) that uses vxtap as its network and
//! IPAM driver. Then, through the `docker` CLI as a user would: `docker network create -d
//! vxtap --ipam-driver vxtap ov_net1` on host 1, `docker network ls` on host 2 (the network
//! is there too), a busybox container on each host, and `docker exec bbox1 ping -c 2 bbox2`
//! (by name, across hosts); vxtap's view of it; and a cleanup (containers, network,
//! engines, daemons, namespaces, temp dir) that also runs on error and on Ctrl-C.
//!
//! Like the plain demo it adds nothing to the root namespace and removes only what carries
//! the run's prefix; the engines never touch the machine's own Docker.

use super::cmd::Limits;
use super::docker_tools::{self, DockerTools, IMAGE};
use super::engine::{Engine, DOCKER_SECONDS};
use super::error::DemoError;
use super::hosts::{report, Containers, Lab, UNDERLAY_IF, UNDERLAY_PREFIX};
use super::ping::PingSummary;
use super::{check, heading, indented, pause, DemoOptions};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The network the demo creates, named as in the issue.
const NETWORK: &str = "ov_net1";
/// Steps, for the `== N/STEPS` headings.
const STEPS: u32 = 6;
/// How long the other host's engine may take to show the network, vxtap's store to learn
/// the containers' names, and the first ping to get its replies.
const PATIENCE: Duration = Duration::from_secs(20);
/// Limit for one `docker exec ... ping` (busybox waits up to 10 s for a first reply).
const PING_SECONDS: u64 = 20;
/// Where vxtap's resolvers forward names vxtap does not own: the host namespace's own
/// loopback, where nothing listens, so such a query fails at once and nothing ever leaves
/// the demo's namespaces (the demo needs no outside names).
const DNS_UPSTREAM: &str = "127.0.0.1:53";

/// What the Docker demo made beyond the lab.
#[derive(Debug, Default)]
struct Docker {
    /// One engine per host (stopped, if dropped, before the lab's daemons).
    engines: Vec<Engine>,
    /// The host whose engine created the network, once it may exist.
    network_on: Option<usize>,
}

/// Runs the Docker demo; see [`super::run`].
pub(super) fn run_with(options: &DemoOptions, interrupt: &AtomicBool) -> Result<(), DemoError> {
    let tools = super::prerequisites()?;
    let docker_tools = docker_tools::prerequisites()?;
    let mut lab = Lab::new(tools, Containers::Docker)?;
    // Declared after the lab, so dropped first: engines go before the daemons they use.
    let mut docker = Docker::default();
    println!(
        "vxtap demo docker: two hosts, each with a Docker engine and a vxtap daemon, an overlay \
         network, a busybox container on each (run {}, files in {})",
        lab.prefix,
        lab.dir.display()
    );
    let mut ping = None;
    let outcome = steps(&mut lab, &mut docker, &docker_tools, interrupt, &mut ping);
    let interrupted =
        interrupt.load(Ordering::SeqCst) || matches!(outcome, Err(DemoError::Interrupted));
    if interrupted {
        println!("\ninterrupted");
    } else if let Err(e) = &outcome {
        // A ping failure was shown in its step already.
        if !matches!(e, DemoError::Ping { .. }) {
            println!("\nFAILED: {e}");
        }
        super::show_logs(&mut lab);
        // A failed start quoted its engine's log already.
        if !matches!(e, DemoError::EngineStart { .. }) {
            for engine in &docker.engines {
                println!("\n  from {}:", engine.log().display());
                indented(&engine.log_tail());
            }
        }
    }
    if options.keep && !interrupted {
        keep(&mut lab, &mut docker);
    } else {
        cleanup(&mut lab, &mut docker);
    }
    if interrupted {
        return Err(DemoError::Interrupted);
    }
    if outcome.is_ok() {
        let [h1, h2] = &lab.hosts;
        let rtt = ping
            .as_ref()
            .and_then(PingSummary::average)
            .map_or_else(String::new, |avg| format!(", rtt {avg} avg"));
        let replies = ping.as_ref().map_or_else(String::new, |p| {
            format!(": {}/{} replies", p.received, p.transmitted)
        });
        println!(
            "\ndone: {} on {} pinged {} on {} by name, through Docker with vxtap as its network \
             and IPAM driver{replies}{rtt}",
            h1.endpoint, h1.label, h2.endpoint, h2.label
        );
    }
    outcome
}

/// Everything up to the cleanup; a ping failure is reported after vxtap's view.
fn steps(
    lab: &mut Lab,
    docker: &mut Docker,
    docker_tools: &DockerTools,
    interrupt: &AtomicBool,
    ping: &mut Option<PingSummary>,
) -> Result<(), DemoError> {
    heading(1, STEPS, "hosts");
    lab.build(interrupt)?;
    for host in &lab.hosts {
        println!(
            "  {}: netns {}, underlay {UNDERLAY_IF} {}/{UNDERLAY_PREFIX}",
            host.label, host.netns, host.underlay_ip
        );
    }
    println!("  h1 and h2 are joined by a veth pair (the underlay); this machine's own namespace is untouched");

    check(interrupt)?;
    heading(2, STEPS, "a Docker engine and a vxtap daemon on each host");
    start_engines(lab, docker, docker_tools, interrupt)?;

    check(interrupt)?;
    heading(3, STEPS, "a network created on h1 shows up on h2");
    create_network(lab, docker, interrupt)?;

    check(interrupt)?;
    heading(4, STEPS, "a container on each host");
    for host in 0..lab.hosts.len() {
        let name = lab.hosts[host].endpoint.clone();
        let args = ["run", "-itd", "--name", &name, "--network", NETWORK, IMAGE];
        docker_shell(lab, docker, host, &args, interrupt)?;
    }
    let network = super::await_endpoints(lab, NETWORK, PATIENCE, interrupt)?;
    for host in &lab.hosts {
        match network.endpoint(&host.endpoint) {
            Some(e) => println!(
                "  {}: {} {}, an address from vxtap's IPAM, on {}",
                e.name,
                e.ip,
                e.mac,
                e.host.as_deref().unwrap_or("?")
            ),
            None => println!(
                "  {}: not in vxtap's store by name after {} s",
                host.endpoint,
                PATIENCE.as_secs()
            ),
        }
    }

    check(interrupt)?;
    heading(5, STEPS, "ping by name, across hosts");
    super::wait_for_tables(lab, &network, interrupt)?;
    let pinged = ping_across(lab, docker, interrupt).map(|summary| *ping = Some(summary));
    let failure = match pinged {
        Ok(()) => None,
        Err(e @ DemoError::Ping { .. }) => {
            println!("  FAILED: {e}");
            Some(e)
        }
        Err(e) => return Err(e),
    };

    check(interrupt)?;
    heading(6, STEPS, "vxtap's side");
    println!("  h1$ vxtap network inspect {NETWORK}   (its JSON, summarized)");
    let text = lab.vxtap(
        0,
        &["network", "inspect", NETWORK],
        super::limits(interrupt),
    )?;
    match super::inspect::NetworkView::parse(&text) {
        Ok(network) => super::describe_network(&network, "    "),
        Err(_) => indented(&super::inspect::pretty(&text)),
    }
    super::shell(lab, 0, &["fdb", "show"], interrupt)?;
    failure.map_or(Ok(()), Err)
}

/// Starts an engine per host, then the vxtap daemons serving them, and imports the busybox
/// image into both engines.
fn start_engines(
    lab: &mut Lab,
    docker: &mut Docker,
    docker_tools: &DockerTools,
    interrupt: &AtomicBool,
) -> Result<(), DemoError> {
    for host in 0..lab.hosts.len() {
        // Kept before it starts, so the cleanup stops whatever part of it did.
        docker.engines.push(Engine::new(lab, host, docker_tools));
        let started = Instant::now();
        let engine = &mut docker.engines[host];
        engine.start(interrupt)?;
        println!(
            "  {}: dockerd {} pid {} answered after {:.1} s; its files are in {}",
            engine.label,
            engine.server_version(interrupt)?,
            engine.dockerd_pid().unwrap_or_default(),
            started.elapsed().as_secs_f64(),
            engine.dir().display()
        );
    }
    let flags: Vec<Vec<OsString>> = docker.engines.iter().map(daemon_flags).collect();
    lab.start_daemons(|host| flags[host].clone(), interrupt)?;
    for (host, pid) in lab.daemon_pids() {
        println!(
            "  {}: vxtap daemon --docker pid {pid}, log {}",
            host.label,
            host.log.display()
        );
    }
    println!(
        "  each engine: a data root and daemon.json of its own (\"dns\": [\"{}\"], vxtap's \
         resolver), no docker0, no iptables;",
        crate::dns::RESOLVER_ADDR.ip()
    );
    println!("    its /run/docker/plugins is hN-docker/plugins (in a mount namespace of its own), where vxtap.sock is");
    println!("  store: {} (shared by both daemons)", lab.store_url());
    let tar = docker_tools::busybox_tar(&lab.dir.join("busybox"), docker_tools, interrupt)?;
    for engine in &docker.engines {
        engine.import(&tar, interrupt)?;
    }
    println!(
        "  image {IMAGE}: {} (busybox-static) and its applets, `docker import`ed into both engines",
        docker_tools.busybox.display()
    );
    println!(
        "  below, `hN$ docker ...` is `docker -H unix://{}/hN-docker/docker.sock ...` and \
         `hN$ vxtap ...` is `vxtap --run-dir {}/hN ...`",
        lab.dir.display(),
        lab.dir.display()
    );
    Ok(())
}

/// The flags that make a host's daemon serve its engine.
fn daemon_flags(engine: &Engine) -> Vec<OsString> {
    vec![
        "--docker".into(),
        "--docker-plugin-dir".into(),
        engine.plugin_dir().into(),
        "--docker-host".into(),
        engine.docker_host().into(),
        "--dns-upstream".into(),
        DNS_UPSTREAM.into(),
    ]
}

/// `docker network create` on host 1, then `docker network ls` on host 2 once the network
/// has reached its engine.
fn create_network(lab: &Lab, docker: &mut Docker, interrupt: &AtomicBool) -> Result<(), DemoError> {
    let args = [
        "network",
        "create",
        "-d",
        "vxtap",
        "--ipam-driver",
        "vxtap",
        NETWORK,
    ];
    let created = docker_shell(lab, docker, 0, &args, interrupt);
    // After a timeout or an interrupt the network may exist: try to remove it too.
    if matches!(
        created,
        Ok(_) | Err(DemoError::Timeout { .. } | DemoError::Interrupted)
    ) {
        docker.network_on = Some(0);
    }
    created?;
    let start = Instant::now();
    let listing = ["network", "ls", "--format", "{{.Name}}"];
    loop {
        let names = docker.engines[1].docker(&listing, super::limits(interrupt))?;
        if names.lines().any(|n| n.trim() == NETWORK) {
            break;
        }
        if start.elapsed() >= PATIENCE {
            return Err(DemoError::Wait {
                what: format!("{NETWORK} to show up in h2's engine"),
                seconds: PATIENCE.as_secs(),
            });
        }
        pause(Duration::from_millis(200), interrupt)?;
    }
    println!(
        "  ({NETWORK} reached h2's engine through vxtap's store after {:.1} s)",
        start.elapsed().as_secs_f64()
    );
    docker_shell(lab, docker, 1, &["network", "ls"], interrupt)?;
    Ok(())
}

/// `docker exec bbox1 ping -c 2 bbox2` on host 1, again (bounded) until every echo is
/// answered: the name reaches vxtap's resolver on host 1 through the store, which can take
/// a moment after the container starts.
fn ping_across(
    lab: &Lab,
    docker: &Docker,
    interrupt: &AtomicBool,
) -> Result<PingSummary, DemoError> {
    let [from, to] = [&lab.hosts[0].endpoint, &lab.hosts[1].endpoint];
    let args = ["exec", from, "ping", "-c", "2", to];
    println!("  {}$ docker {}", lab.hosts[0].label, args.join(" "));
    let start = Instant::now();
    loop {
        let mut command = docker.engines[0].command(&args);
        let out = super::cmd::output(&mut command, Limits::interruptible(interrupt, PING_SECONDS))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = start.elapsed() >= PATIENCE;
        // Every echo answered, or, at the end of the patience, some.
        let answered = PingSummary::parse(&stdout)
            .filter(|s| s.received > 0 && (last || s.received == s.transmitted));
        if let Some(summary) = answered {
            indented(stdout.trim_end());
            return Ok(summary);
        }
        let said = if stderr.trim().is_empty() {
            super::cmd::last_lines(&stdout, 1)
        } else {
            super::cmd::last_lines(&stderr, 1)
        };
        if last {
            indented(&said);
            return Err(DemoError::Ping {
                from: from.clone(),
                target: to.clone(),
                detail: format!("{said} (retried for {} s)", PATIENCE.as_secs()),
            });
        }
        println!("    ({said}; again in 1 s)");
        pause(Duration::from_secs(1), interrupt)?;
    }
}

/// Prints `hN$ docker ARGS`, runs it on host `host`'s engine and prints its output
/// indented, with 64-digit ids cut short.
fn docker_shell(
    lab: &Lab,
    docker: &Docker,
    host: usize,
    args: &[&str],
    interrupt: &AtomicBool,
) -> Result<String, DemoError> {
    println!("  {}$ docker {}", lab.hosts[host].label, args.join(" "));
    let limits = Limits::finishing(interrupt, DOCKER_SECONDS);
    let out = docker.engines[host].docker(args, limits)?;
    indented(&shorten_ids(&out));
    Ok(out)
}

/// `text` with every 64-hex-digit word (Docker's ids) cut to its first 12 digits, as
/// `docker ps` shows them.
fn shorten_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let words: Vec<String> = line
            .split(' ')
            .map(|word| {
                if word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
                    format!("{}...", &word[..12])
                } else {
                    word.to_owned()
                }
            })
            .collect();
        out.push_str(&words.join(" "));
    }
    out
}

/// Removes the containers and the network, stops the engines, then the lab; says what is
/// left.
fn cleanup(lab: &mut Lab, docker: &mut Docker) {
    println!("\n== cleanup");
    let mut problems = Vec::new();
    let limits = Limits::cleanup(DOCKER_SECONDS);
    // Host 2's first: the network is removed from host 1, which vxtap refuses while
    // another host has endpoints on it.
    for (host, engine) in docker.engines.iter_mut().enumerate().rev() {
        if !engine.running() {
            continue;
        }
        let label = &lab.hosts[host].label;
        match engine.containers(limits) {
            Ok(names) if names.is_empty() => {}
            Ok(names) => {
                let mut args = vec!["rm", "-f"];
                args.extend(names.iter().map(String::as_str));
                let step = format!("{label}$ docker {}", args.join(" "));
                report(
                    &mut problems,
                    &step,
                    engine.docker(&args, limits).map(|_| None),
                );
            }
            Err(e) => problems.push(format!("listing the containers of {label}: {e}")),
        }
    }
    if let Some(host) = docker.network_on.take() {
        let engine = &mut docker.engines[host];
        let step = format!("{}$ docker network rm {NETWORK}", lab.hosts[host].label);
        let result = if engine.running() {
            engine
                .docker(&["network", "rm", NETWORK], limits)
                .map(|_| None)
        } else {
            Ok(Some("skipped: its engine is not running".to_owned()))
        };
        report(&mut problems, &step, result);
    }
    for engine in docker.engines.iter_mut().rev() {
        let step = match engine.dockerd_pid() {
            Some(pid) => format!(
                "stop the Docker engine of {} (dockerd pid {pid}, its containerd)",
                engine.label
            ),
            None => format!("stop the Docker engine of {}", engine.label),
        };
        let result = engine.stop();
        report(&mut problems, &step, result);
    }
    let left = docker.engines.iter().flat_map(Engine::leftovers).collect();
    super::cleanup(lab, problems, left);
}

/// Leaves everything running and says how to look around and how to tear it down.
fn keep(lab: &mut Lab, docker: &mut Docker) {
    let docker_at = |host: usize| {
        format!(
            "docker -H {}",
            docker
                .engines
                .get(host)
                .map_or_else(String::new, Engine::docker_host)
        )
    };
    let [h1, h2] = &lab.hosts;
    println!("\n== kept running (--keep). Look around:");
    println!("  {} exec bbox1 ping {}", docker_at(0), h2.endpoint);
    println!("  {} exec -it {} sh", docker_at(1), h2.endpoint);
    println!(
        "  {} --run-dir {} network inspect {NETWORK}",
        lab.tools.vxtap.display(),
        h1.run_dir.display()
    );
    println!("Tear down by hand:");
    for (host, h) in lab.hosts.iter().enumerate().rev() {
        println!("  {} rm -f {}", docker_at(host), h.endpoint);
    }
    if let Some(host) = docker.network_on {
        println!("  {} network rm {NETWORK}", docker_at(host));
    }
    for engine in &mut docker.engines {
        for line in engine.keep() {
            println!("  {line}");
        }
    }
    for line in lab.keep() {
        println!("  {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortens_docker_ids_only() {
        let id = "f".repeat(64);
        assert_eq!(shorten_ids(&format!("{id}\n")), "ffffffffffff...");
        let listing = "NETWORK ID     NAME      DRIVER    SCOPE\n\
                       0123456789ab   ov_net1   vxtap     local";
        assert_eq!(shorten_ids(listing), listing);
        let not_hex = "g".repeat(64);
        assert_eq!(shorten_ids(&not_hex), not_hex);
        assert_eq!(shorten_ids(""), "");
    }
}

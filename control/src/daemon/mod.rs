//! `vxtap daemon`: owns the underlay sockets of the namespace it runs in, the TAPs it creates
//! in other namespaces, and the admin socket `RUN_DIR/vxtap.sock`.
//!
//! Requests are served one at a time from the admin socket; the data plane runs on its own
//! worker threads throughout. SIGTERM or SIGINT shuts down cleanly: every TAP is removed and
//! the socket file deleted.

pub mod agent;
mod links;

pub use agent::{Agent, AgentConfig};
pub use links::Links;

use crate::api::{Reply, Request, Response};
use crate::client::socket_path;
use anyhow::Context;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use vxtap_dataplane::runtime::{Runtime, RuntimeConfig};

/// How the daemon was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the admin socket lives.
    pub run_dir: PathBuf,
    /// Underlay UDP port.
    pub port: u16,
    /// Worker threads.
    pub threads: usize,
    /// The control plane, when the daemon takes part in overlays (`--local-ip`).
    pub agent: Option<AgentConfig>,
}

/// Longest request line accepted on the admin socket.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long an admin connection may stay silent before the daemon closes it.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(options: &Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.run_dir)
        .with_context(|| format!("creating run directory {}", options.run_dir.display()))?;
    let path = socket_path(&options.run_dir);
    if UnixStream::connect(&path).is_ok() {
        anyhow::bail!("a vxtap daemon is already running on {}", path.display());
    }
    // A socket file nobody answers on is left over from a daemon that was killed.
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed stale admin socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", path.display()))
        }
    }
    let config = RuntimeConfig {
        threads: options.threads,
        port: options.port,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::start(&config)
        .with_context(|| format!("starting the data plane on UDP port {}", options.port))?;
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    tracing::info!(socket = %path.display(), port = options.port, threads = options.threads, "vxtap daemon running");

    let links = Arc::new(Mutex::new(Links::new(runtime, options.port)));
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(&stop, &path)?;
    let ticker = spawn_ticker(&links, &stop)?;
    let agent = match &options.agent {
        Some(config) => {
            warn_if_private_mounts();
            let agent = Agent::start(config.clone(), Arc::clone(&links))?;
            let looping = Arc::clone(&agent);
            let stop = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("vxtap-agent".into())
                .spawn(move || looping.run(&stop))
                .context("starting the control-plane thread")?;
            tracing::info!(host = %config.host, vtep = %config.vtep, store = %config.store_url, "control plane on");
            Some((agent, thread))
        }
        None => None,
    };
    let shared_agent = agent.as_ref().map(|(a, _)| Arc::clone(a));

    while !stop.load(Ordering::SeqCst) {
        // Wait with a timeout rather than block in accept: the signal thread's wake-up
        // connection cannot arrive if the socket file was removed under us.
        if !readable(&listener, ACCEPT_POLL) {
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match listener.accept().map(|(stream, _)| stream) {
            // A connection of its own per client, so a stalled client cannot hold up others;
            // requests still apply one at a time under the links lock.
            Ok(stream) => {
                let links = Arc::clone(&links);
                let agent = shared_agent.clone();
                let spawned = std::thread::Builder::new()
                    .name("vxtap-admin".into())
                    .spawn(move || serve(stream, &links, agent.as_deref()));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start a thread for an admin connection");
                }
            }
            Err(e) => tracing::warn!(error = %e, "accepting an admin connection"),
        }
    }

    tracing::info!("shutting down");
    let _ = ticker.join();
    drop(shared_agent);
    if let Some((agent, thread)) = agent {
        let _ = thread.join();
        drop(agent);
    }
    // Admin connections still open hold a reference; give them their read timeout to end.
    let links = wait_unshared(links)?;
    let names: Vec<String> = links.names().map(str::to_owned).collect();
    links.shutdown();
    tracing::info!(removed = ?names, "links removed");
    match std::fs::remove_file(&path) {
        // Someone removed it (or the whole run directory) already: nothing left to do.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// How often the accept loop looks at the stop flag when no connection arrives.
const ACCEPT_POLL: Duration = Duration::from_millis(250);

/// Whether `listener` has a connection waiting, after at most `timeout`.
fn readable(listener: &UnixListener, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        listener,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(n) => n > 0,
        // EINTR (a signal) and the like: look at the stop flag, then wait again.
        Err(_) => false,
    }
}

/// Takes the link state back once no admin connection holds it (bounded wait).
fn wait_unshared(mut links: Arc<Mutex<Links>>) -> anyhow::Result<Links> {
    let deadline = std::time::Instant::now() + ADMIN_TIMEOUT + Duration::from_secs(1);
    loop {
        match Arc::try_unwrap(links) {
            Ok(links) => return Ok(links.into_inner().unwrap_or_else(PoisonError::into_inner)),
            Err(shared) if std::time::Instant::now() < deadline => {
                links = shared;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => anyhow::bail!("admin connections still open at shutdown"),
        }
    }
}

/// SIGTERM/SIGINT set `stop` and wake the accept loop with a connection of our own.
fn watch_signals(stop: &Arc<AtomicBool>, path: &Path) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing signal handlers")?;
    let stop = Arc::clone(stop);
    let path = path.to_owned();
    std::thread::Builder::new()
        .name("vxtap-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "signal received");
                stop.store(true, Ordering::SeqCst);
                let _ = UnixStream::connect(&path);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Ages learned entries once a second until `stop`.
fn spawn_ticker(
    links: &Arc<Mutex<Links>>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let links = Arc::clone(links);
    let stop = Arc::clone(stop);
    std::thread::Builder::new()
        .name("vxtap-ageing".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(500));
                links.lock().unwrap_or_else(PoisonError::into_inner).tick();
            }
        })
        .context("starting the ageing thread")
}

/// Overlay namespaces are bind mounts, like `ip netns add` makes: in a private mount
/// namespace (`ip netns exec` gives one) they would vanish with the daemon, taking the
/// containers' interfaces with them.
fn warn_if_private_mounts() {
    let ours = std::fs::read_link("/proc/self/ns/mnt");
    let init = std::fs::read_link("/proc/1/ns/mnt");
    if let (Ok(ours), Ok(init)) = (ours, init) {
        if ours != init {
            tracing::warn!("the daemon runs in a mount namespace of its own (ip netns exec?): overlay namespaces will not outlive it; start it with `nsenter --net=...` instead");
        }
    }
}

/// Answers every request line on one connection.
fn serve(stream: UnixStream, links: &Mutex<Links>, agent: Option<&Agent>) {
    let _ = stream.set_read_timeout(Some(ADMIN_TIMEOUT));
    let mut reader = BufReader::new(&stream);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_REQUEST).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                tracing::debug!(?request, "admin request");
                let result = match agent {
                    Some(agent) if request.is_overlay() => {
                        agent.handle(request).map_err(|e| e.to_string())
                    }
                    _ => links
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .handle(request)
                        .map(|reply| with_record_stats(reply, agent))
                        .map_err(|e| e.to_string()),
                };
                match result {
                    Ok(reply) => Response::Ok(reply),
                    Err(e) => {
                        tracing::info!(error = %e, "request refused");
                        Response::Error(e)
                    }
                }
            }
            Err(e) => Response::Error(format!("malformed request: {e}")),
        };
        let Ok(mut answer) = serde_json::to_string(&response) else {
            return;
        };
        answer.push('\n');
        if (&stream).write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// `stats` of a daemon running the control plane also counts the store records it refused.
fn with_record_stats(reply: Reply, agent: Option<&Agent>) -> Reply {
    match (reply, agent) {
        (
            Reply::Stats {
                links,
                global,
                records: None,
            },
            Some(agent),
        ) => Reply::Stats {
            links,
            global,
            records: Some(agent.record_stats()),
        },
        (reply, _) => reply,
    }
}

//! `vxtap daemon`: owns the underlay sockets of the namespace it runs in, the TAPs it creates
//! in other namespaces, and the admin socket `RUN_DIR/vxtap.sock`.
//!
//! The admin socket (see `admin`: who may connect, how many clients, how long each may take)
//! serves each client on a thread of its own; requests change links one at a time under the
//! links lock, which is never held while waiting on a namespace or a client. The data plane
//! runs on its own worker threads throughout. SIGTERM or SIGINT shuts down cleanly and
//! promptly: client connections are shut down, every TAP is removed and the socket file
//! deleted.

mod admin;
pub mod agent;
mod links;

pub use admin::{
    AdminError, SocketGroup, IDLE_TIMEOUT, MAX_CLIENTS, MAX_REQUEST, REQUEST_DEADLINE,
    WRITE_TIMEOUT,
};
pub use agent::{Agent, AgentConfig};
pub use links::Links;

use crate::client::socket_path;
use admin::AdminServer;
use anyhow::Context;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
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
    /// Run the underlay filter where the kernel takes it (`--underlay-filter`).
    pub underlay_filter: bool,
    /// How long workers keep polling after traffic before they sleep (`--busy-poll`).
    pub busy_poll: Duration,
    /// The control plane, when the daemon takes part in overlays (`--local-ip`).
    pub agent: Option<AgentConfig>,
    /// A group (name or gid) whose members may use the admin socket like root
    /// (`--socket-group`): the socket is then 0660 with that group instead of 0600.
    pub socket_group: Option<String>,
    /// Serve Docker's drivers (`--docker`); needs the control plane.
    pub docker: Option<crate::docker::DockerOptions>,
}

/// How long shutdown waits for client threads busy inside a request, after their
/// connections were shut down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(options: &Options) -> anyhow::Result<()> {
    // Before anything opens a file: the soft limit may be far below what the hard one allows.
    admin::raise_fd_limit();
    let group = options
        .socket_group
        .as_deref()
        .map(SocketGroup::resolve)
        .transpose()?;
    // 0755 whatever the umask: others may look (and reach a --socket-group socket), only
    // root may write; the socket and the endpoint record carry their own narrower modes.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&options.run_dir)
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
        underlay_filter: options.underlay_filter,
        busy_poll: options.busy_poll,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::start(&config)
        .with_context(|| format!("starting the data plane on UDP port {}", options.port))?;
    let listener = admin::bind(&path, group.as_ref())?;
    tracing::info!(
        socket = %path.display(),
        mode = if group.is_some() { "0660" } else { "0600" },
        group = group.as_ref().map(|g| g.name.as_str()),
        port = options.port,
        threads = options.threads,
        "vxtap daemon running"
    );

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
    let docker = match (&options.docker, &agent) {
        (Some(docker), Some((agent, _))) => Some(crate::docker::start(
            Arc::clone(agent),
            docker,
            &options.run_dir,
            Arc::clone(&stop),
        )?),
        (Some(_), None) => anyhow::bail!("--docker needs the control plane (--local-ip)"),
        (None, _) => None,
    };
    let server = AdminServer::new(
        listener,
        group,
        Arc::clone(&links),
        agent.as_ref().map(|(a, _)| Arc::clone(a)),
    );
    let served = server.run(&stop);
    // Whatever ended the loop, clean up: no client may hold the shutdown.
    stop.store(true, Ordering::SeqCst);

    tracing::info!("shutting down");
    let busy = server.disconnect_all(SHUTDOWN_GRACE);
    if busy > 0 {
        tracing::warn!(
            busy,
            "admin connections still inside a request at shutdown; not waiting for them"
        );
    }
    drop(server);
    drop(docker);
    let _ = ticker.join();
    if let Some((agent, thread)) = agent {
        let _ = thread.join();
        drop(agent);
    }
    // Remove the links under the lock, whoever still holds a reference to it.
    let names: Vec<String> = {
        let mut links = links.lock().unwrap_or_else(PoisonError::into_inner);
        let names = links.names().map(str::to_owned).collect();
        links.close();
        names
    };
    tracing::info!(removed = ?names, "links removed");
    match Arc::try_unwrap(links) {
        Ok(links) => links
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .shutdown(),
        // A client thread still busy holds it: its workers end with the process.
        Err(_) => tracing::warn!("data plane left to stop with the process"),
    }
    let removed = match std::fs::remove_file(&path) {
        // Someone removed it (or the whole run directory) already: nothing left to do.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    };
    served?;
    removed
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

//! Docker's libnetwork remote network driver and remote IPAM driver, served by the daemon
//! (`vxtap daemon ... --docker`): `docker network create -d vxtap --ipam-driver vxtap` and
//! `docker run --network`, across hosts, without swarm.
//!
//! Docker discovers the plugin by its socket, `PLUGIN_DIR/vxtap.sock`
//! (`/run/docker/plugins` by default), and speaks JSON over HTTP to it ([`protocol`]). The
//! daemon answers from the same store, links and plumbing as `vxtap connect` ([`driver`]),
//! and talks to the local engine's API ([`engine`]) to learn names Docker never sends a
//! driver and to create every vxtap network in the local engine ([`sync`]). What must
//! survive a restart of the daemon is kept in `RUN_DIR/docker.json` ([`state`]).

pub mod driver;
pub mod engine;
pub mod names;
pub mod protocol;
pub mod state;
pub mod sync;

use crate::daemon::agent::Agent;
use crate::http::{Handler, Request, Response, Server};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// The plugin socket's file name: Docker names the plugin after it.
pub const SOCKET_NAME: &str = "vxtap.sock";
/// Where Docker looks for plugin sockets.
pub const DEFAULT_PLUGIN_DIR: &str = "/run/docker/plugins";
/// The local engine's API.
pub const DEFAULT_ENGINE: &str = "unix:///var/run/docker.sock";

/// How the daemon serves Docker.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Where the plugin socket goes (`--docker-plugin-dir`).
    pub plugin_dir: PathBuf,
    /// The local engine (`--docker-host`).
    pub engine: String,
}

/// The plugin, serving until dropped.
pub struct Docker {
    server: Option<Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Plugin {
    driver: driver::Driver,
}

impl Handler for Plugin {
    fn handle(&self, request: &Request) -> Response {
        if request.method != "POST" {
            return Response {
                status: 405,
                body: protocol::error(protocol::Api::Network, "vxtap's plugin API takes POST")
                    .to_string()
                    .into_bytes(),
            };
        }
        Response {
            status: 200,
            body: self
                .driver
                .serve(&request.path, &request.body)
                .to_string()
                .into_bytes(),
        }
    }
}

/// Starts serving Docker for `agent`: loads the driver state from `run_dir`, starts the
/// sync thread (which ends when `stop` is set) and binds the plugin socket.
///
/// # Errors
///
/// An unreadable driver state, a bad `--docker-host`, or a socket that cannot be bound
/// (another daemon serves it).
pub fn start(
    agent: Arc<Agent>,
    options: &DockerOptions,
    run_dir: &Path,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Docker> {
    let state = Arc::new(Mutex::new(state::DriverState::load(run_dir)?));
    let engine = engine::Engine::new(&options.engine)?;
    let (jobs, receiver) = std::sync::mpsc::channel();
    let mut sync = sync::Sync::new(Arc::clone(&agent), engine, Arc::clone(&state));
    // Before Docker can call: after a reboot emptied RUN_DIR, Docker still has the networks.
    sync.remap_now();
    let thread = std::thread::Builder::new()
        .name("vxtap-docker".into())
        .spawn(move || sync.run(&receiver, &stop))
        .context("starting the Docker sync thread")?;
    let plugin = Plugin {
        driver: driver::Driver::new(agent, state, jobs),
    };
    let path = options.plugin_dir.join(SOCKET_NAME);
    let server = Server::bind(&path, 0o600, Arc::new(plugin))
        .with_context(|| format!("serving Docker on {}", path.display()))?;
    tracing::info!(socket = %path.display(), engine = %options.engine, "Docker plugin serving (driver and IPAM: vxtap)");
    Ok(Docker {
        server: Some(server),
        thread: Some(thread),
    })
}

impl Drop for Docker {
    fn drop(&mut self) {
        // The socket first, so Docker stops calling; then the sync thread, told by `stop`.
        drop(self.server.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! The Docker driver's background work, on one thread that holds no lock while it talks to
//! the engine (the engine calls back into the plugin while it serves):
//!
//! - **Naming networks.** Docker never tells a driver a network's name. After
//!   `CreateNetwork`, the engine is asked for it until it has committed the network; then the
//!   network's store record is written under that name. If the store refuses it (another
//!   host took the name, the VNI or the subnet meanwhile), the network is removed from the
//!   engine again and the reason logged: nothing half-made.
//! - **Naming endpoints.** After `Join`, the engine is asked which container holds the
//!   endpoint, and its name and aliases on that network are published, so other hosts'
//!   resolvers answer them.
//! - **Spreading networks.** Every vxtap network in the store is created in this engine
//!   (driver and IPAM option `vxtap.network=ID`), under its name, and vxtap networks gone from
//!   the store are removed from it. This runs when the agent's view of the store changes and
//!   every few seconds, always from a listing of its own, never from a stale view.

use super::driver::lock;
use super::engine::{Engine, EngineError, EngineNetwork};
use super::protocol::OPT_NETWORK;
use super::state::DriverState;
use crate::daemon::agent::{Agent, AgentError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a name is looked for before it is given up.
const NAMING_DEADLINE: Duration = Duration::from_secs(120);
/// Networks are spread at least this often.
const SPREAD_EVERY: Duration = Duration::from_secs(5);

/// Work for the sync thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Find the name of the network Docker created with this id, and write its record.
    NameNetwork {
        /// Docker's (and vxtap's) id.
        docker: String,
    },
    /// Find the container behind an endpoint and publish its names.
    NameEndpoint {
        /// Docker's network id.
        docker_network: String,
        /// Docker's endpoint id.
        docker_endpoint: String,
        /// vxtap's endpoint key.
        key: String,
    },
}

enum Outcome {
    Done,
    Retry,
}

struct Pending {
    job: Job,
    since: Instant,
    next: Instant,
}

/// The thread's state.
pub struct Sync {
    agent: Arc<Agent>,
    engine: Engine,
    state: Arc<Mutex<DriverState>>,
    /// Problems already logged, so a lasting one is logged once: key -> message.
    warned: BTreeMap<String, String>,
}

impl Sync {
    /// The sync work for `agent`'s host and `engine`.
    pub fn new(agent: Arc<Agent>, engine: Engine, state: Arc<Mutex<DriverState>>) -> Sync {
        Sync {
            agent,
            engine,
            state,
            warned: BTreeMap::new(),
        }
    }

    /// Runs until `stop`: takes jobs from `jobs`, retries them, spreads networks.
    pub fn run(mut self, jobs: &Receiver<Job>, stop: &AtomicBool) {
        let mut pending: Vec<Pending> = lock(&self.state)
            .saved
            .unnamed
            .keys()
            .map(|docker| Pending {
                job: Job::NameNetwork {
                    docker: docker.clone(),
                },
                since: Instant::now(),
                next: Instant::now(),
            })
            .collect();
        let mut spread_at = Instant::now();
        let mut seen: Option<*const crate::cluster::Snapshot> = None;
        while !stop.load(Ordering::SeqCst) {
            match jobs.recv_timeout(Duration::from_millis(50)) {
                Ok(job) => pending.push(Pending {
                    job,
                    since: Instant::now(),
                    next: Instant::now(),
                }),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            let mut i = 0;
            while i < pending.len() {
                let p = &mut pending[i];
                if p.next > now {
                    i += 1;
                    continue;
                }
                match self.attempt(&p.job) {
                    Outcome::Done => {
                        pending.swap_remove(i);
                        continue;
                    }
                    Outcome::Retry if now.duration_since(p.since) > NAMING_DEADLINE => {
                        self.give_up(&p.job);
                        pending.swap_remove(i);
                        continue;
                    }
                    Outcome::Retry => {
                        let pause = if now.duration_since(p.since) < Duration::from_secs(3) {
                            Duration::from_millis(50)
                        } else {
                            Duration::from_millis(500)
                        };
                        p.next = now + pause;
                    }
                }
                i += 1;
            }
            let latest = Arc::as_ptr(&self.agent.latest());
            if seen != Some(latest) || now >= spread_at {
                seen = Some(latest);
                spread_at = now + SPREAD_EVERY;
                if let Err(e) = self.spread() {
                    self.warn_once("spread", &e);
                } else {
                    self.warned.remove("spread");
                }
            }
        }
    }

    fn warn_once(&mut self, key: &str, message: &str) {
        if self.warned.get(key).map(String::as_str) != Some(message) {
            tracing::warn!(error = %message, "Docker sync");
            self.warned.insert(key.to_owned(), message.to_owned());
        }
    }

    fn attempt(&mut self, job: &Job) -> Outcome {
        match job {
            Job::NameNetwork { docker } => self.name_network(docker),
            Job::NameEndpoint {
                docker_network,
                docker_endpoint,
                key,
            } => self.name_endpoint(docker_network, docker_endpoint, key),
        }
    }

    fn give_up(&mut self, job: &Job) {
        match job {
            Job::NameNetwork { docker } => {
                // The engine never committed it (the create failed after our part): forget it.
                let mut state = lock(&self.state);
                state.saved.unnamed.remove(docker);
                state.saved.networks.remove(docker);
                if let Err(e) = state.save() {
                    tracing::error!(error = %e, "saving the Docker driver state");
                }
                tracing::warn!(docker_id = %docker, "the engine never showed a network it asked vxtap to create; forgotten");
            }
            Job::NameEndpoint { key, .. } => {
                tracing::warn!(endpoint = %key, "the engine never showed the container of an endpoint; it keeps its provisional name");
            }
        }
    }

    fn name_network(&mut self, docker: &str) -> Outcome {
        let Some(mut request) = lock(&self.state).saved.unnamed.get(docker).cloned() else {
            return Outcome::Done;
        };
        let name = match self.engine.network(docker) {
            Ok(Some((name, _))) => name,
            Ok(None) => return Outcome::Retry,
            Err(e) => {
                self.warn_once("engine", &e.to_string());
                return Outcome::Retry;
            }
        };
        request.name = name;
        match self.agent.docker_create_network(&request, docker) {
            Ok(network) => {
                let mut state = lock(&self.state);
                state.saved.unnamed.remove(docker);
                if let Err(e) = state.save() {
                    tracing::error!(error = %e, "saving the Docker driver state");
                }
                tracing::info!(name = %network.name, id = %network.id, "Docker network published to the store");
                Outcome::Done
            }
            Err(AgentError::Cluster(e)) => {
                tracing::error!(name = %request.name, error = %e, "a network Docker created cannot join vxtap's store; removing it from Docker");
                {
                    let mut state = lock(&self.state);
                    state.saved.unnamed.remove(docker);
                    state.saved.networks.remove(docker);
                    if let Err(e) = state.save() {
                        tracing::error!(error = %e, "saving the Docker driver state");
                    }
                }
                if let Err(e) = self.engine.remove_network(docker) {
                    tracing::error!(error = %e, "removing the network from Docker");
                }
                Outcome::Done
            }
            Err(e) => {
                self.warn_once("store", &e.to_string());
                Outcome::Retry
            }
        }
    }

    fn name_endpoint(&mut self, docker_network: &str, docker_endpoint: &str, key: &str) -> Outcome {
        if lock(&self.state)
            .saved
            .endpoints
            .get(docker_endpoint)
            .map(String::as_str)
            != Some(key)
        {
            return Outcome::Done;
        }
        let found = (|| -> Result<Option<(String, Vec<String>)>, EngineError> {
            let Some((_, attached)) = self.engine.network(docker_network)? else {
                return Ok(None);
            };
            let Some(a) = attached.iter().find(|a| a.endpoint == docker_endpoint) else {
                return Ok(None);
            };
            Ok(self
                .engine
                .container_names(&a.container, docker_endpoint)?
                .map(|names| (a.container.clone(), names)))
        })();
        let (container, names) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return Outcome::Retry,
            Err(e) => {
                self.warn_once("engine", &e.to_string());
                return Outcome::Retry;
            }
        };
        match self.agent.docker_rename(key, &names, &container) {
            Ok(_) | Err(AgentError::Dataplane(_)) => Outcome::Done,
            Err(e) => {
                self.warn_once("store", &e.to_string());
                Outcome::Retry
            }
        }
    }

    /// Creates every store network missing from the engine, removes vxtap networks the store
    /// no longer has.
    fn spread(&mut self) -> Result<(), String> {
        let snapshot = self.agent.snapshot().map_err(|e| e.to_string())?;
        let engine_networks = self.engine.vxtap_networks().map_err(|e| e.to_string())?;
        let (mapped, unnamed) = {
            let state = lock(&self.state);
            (
                state.saved.networks.clone(),
                state.saved.unnamed.keys().cloned().collect::<BTreeSet<_>>(),
            )
        };
        let vxtap_id = |n: &EngineNetwork| {
            mapped
                .get(&n.id)
                .or_else(|| n.options.get(OPT_NETWORK))
                .cloned()
        };
        let mut present = BTreeSet::new();
        for n in &engine_networks {
            let Some(id) = vxtap_id(n) else { continue };
            present.insert(id.clone());
            if snapshot.networks.contains_key(&id) || unnamed.contains(&n.id) {
                continue;
            }
            match self.engine.remove_network(&n.id) {
                Ok(()) => {
                    tracing::info!(name = %n.name, "network gone from the store: removed from Docker");
                    self.warned.remove(&n.id);
                }
                Err(e) => self.warn_once(&n.id, &format!("removing {}: {e}", n.name)),
            }
        }
        for network in snapshot.networks.values() {
            if present.contains(&network.id) {
                continue;
            }
            match self.engine.create_network(network) {
                Ok(docker) => {
                    tracing::info!(name = %network.name, docker_id = %docker, "network created in Docker");
                    self.warned.remove(&network.id);
                }
                Err(e) => self.warn_once(&network.id, &e.to_string()),
            }
        }
        Ok(())
    }
}

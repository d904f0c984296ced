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
/// Claims are checked for ones Docker no longer refers to this often.
const COLLECT_EVERY: Duration = Duration::from_secs(10);
/// How long an address claimed for Docker may go without an endpoint of Docker's before it
/// is released (the gap between `RequestAddress` and `CreateEndpoint`, or between
/// `DeleteEndpoint` and `ReleaseAddress`, is milliseconds).
const CLAIM_GRACE: Duration = Duration::from_secs(60);

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
    /// Try again later.
    Retry,
    /// The engine says it has no such network: try again, and give up once it has said so
    /// for [`NAMING_DEADLINE`].
    Absent,
}

struct Pending {
    job: Job,
    since: Instant,
    /// Since when the engine has answered that the network does not exist, without a break.
    absent_since: Option<Instant>,
    next: Instant,
}

impl Pending {
    fn new(job: Job) -> Pending {
        Pending {
            job,
            since: Instant::now(),
            absent_since: None,
            next: Instant::now(),
        }
    }
}

/// The thread's state.
pub struct Sync {
    agent: Arc<Agent>,
    engine: Engine,
    state: Arc<Mutex<DriverState>>,
    /// Problems already logged, so a lasting one is logged once: key -> message.
    warned: BTreeMap<String, String>,
    /// Local claims no Docker endpoint refers to, by store key, since when.
    unreferenced: BTreeMap<String, Instant>,
}

impl Sync {
    /// The sync work for `agent`'s host and `engine`.
    pub fn new(agent: Arc<Agent>, engine: Engine, state: Arc<Mutex<DriverState>>) -> Sync {
        Sync {
            agent,
            engine,
            state,
            warned: BTreeMap::new(),
            unreferenced: BTreeMap::new(),
        }
    }

    /// The naming left undone when the daemon stopped: networks waiting for their record,
    /// and endpoints still under their provisional names.
    fn unfinished(&self) -> Vec<Pending> {
        let state = lock(&self.state);
        let networks = state.saved.unnamed.keys().map(|docker| Job::NameNetwork {
            docker: docker.clone(),
        });
        let endpoints = state
            .saved
            .endpoints
            .iter()
            .filter_map(|(docker_endpoint, key)| {
                let e = self.agent.local_endpoint_by_key(key)?;
                if !crate::daemon::agent::is_provisional(&e) {
                    return None;
                }
                let docker_network = state
                    .saved
                    .networks
                    .iter()
                    .find(|(_, vxtap)| **vxtap == e.network)?
                    .0
                    .clone();
                Some(Job::NameEndpoint {
                    docker_network,
                    docker_endpoint: docker_endpoint.clone(),
                    key: key.clone(),
                })
            });
        networks.chain(endpoints).map(Pending::new).collect()
    }

    /// Runs until `stop`: takes jobs from `jobs`, retries them, spreads networks.
    pub fn run(mut self, jobs: &Receiver<Job>, stop: &AtomicBool) {
        let mut pending = self.unfinished();
        let mut spread_at = Instant::now();
        let mut collect_at = Instant::now() + COLLECT_EVERY;
        let mut seen: Option<u64> = None;
        while !stop.load(Ordering::SeqCst) {
            match jobs.recv_timeout(Duration::from_millis(50)) {
                Ok(job) => pending.push(Pending::new(job)),
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
                let outcome = self.attempt(&p.job);
                p.absent_since = match outcome {
                    Outcome::Absent => Some(p.absent_since.unwrap_or(now)),
                    _ => None,
                };
                let expired = match (&p.job, p.absent_since) {
                    // A network is forgotten only once the engine has said for long enough
                    // that it does not have it, never because the engine or the store
                    // could not be reached.
                    (Job::NameNetwork { .. }, absent) => {
                        absent.is_some_and(|t| now.duration_since(t) > NAMING_DEADLINE)
                    }
                    (Job::NameEndpoint { .. }, _) => now.duration_since(p.since) > NAMING_DEADLINE,
                };
                if matches!(outcome, Outcome::Done) || expired {
                    if expired {
                        self.give_up(&p.job);
                    }
                    pending.swap_remove(i);
                    continue;
                }
                let pause = if now.duration_since(p.since) < Duration::from_secs(3) {
                    Duration::from_millis(50)
                } else {
                    Duration::from_millis(500)
                };
                p.next = now + pause;
                i += 1;
            }
            let generation = self.agent.generation();
            if seen != Some(generation) || now >= spread_at {
                seen = Some(generation);
                spread_at = now + SPREAD_EVERY;
                if let Err(e) = self.spread() {
                    self.warn_once("spread", &e);
                } else {
                    self.warned.remove("spread");
                }
            }
            if now >= collect_at {
                collect_at = now + COLLECT_EVERY;
                self.collect(now);
            }
        }
    }

    /// Releases this host's Docker claims that no Docker endpoint has referred to for
    /// [`CLAIM_GRACE`]: Docker asked for an address and never used it (dockerd died in
    /// between), or its release failed (the store was unreachable); Docker does not ask
    /// again.
    fn collect(&mut self, now: Instant) {
        let referenced: BTreeSet<String> = lock(&self.state)
            .saved
            .endpoints
            .values()
            .cloned()
            .collect();
        let claims = self.agent.docker_claims();
        let current: BTreeSet<String> = claims.iter().map(|e| e.key()).collect();
        self.unreferenced
            .retain(|key, _| current.contains(key) && !referenced.contains(key));
        for e in claims.iter().filter(|e| !referenced.contains(&e.key())) {
            let since = *self.unreferenced.entry(e.key()).or_insert(now);
            if now.duration_since(since) < CLAIM_GRACE {
                continue;
            }
            match self.agent.docker_release(&e.network, e.ip) {
                Ok(()) => {
                    tracing::warn!(ip = %e.ip, name = %e.name, "released an address no Docker endpoint used");
                    self.unreferenced.remove(&e.key());
                }
                Err(err) => self.warn_once(&e.key(), &format!("releasing {}: {err}", e.ip)),
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
            Ok(None) => return Outcome::Absent,
            Err(e) => {
                self.warn_once("engine", &e.to_string());
                return Outcome::Retry;
            }
        };
        request.name = name;
        match self.agent.docker_create_network(&request, docker) {
            Ok(network) => {
                let still_wanted = {
                    let mut state = lock(&self.state);
                    let wanted = state.saved.unnamed.remove(docker).is_some();
                    if let Err(e) = state.save() {
                        tracing::error!(error = %e, "saving the Docker driver state");
                    }
                    wanted
                };
                if still_wanted {
                    tracing::info!(name = %network.name, id = %network.id, "Docker network published to the store");
                } else {
                    // Docker removed it while its record was being written.
                    if let Err(e) = self.agent.docker_remove_network(docker) {
                        tracing::error!(name = %network.name, error = %e, "removing the record of a network Docker removed meanwhile");
                    }
                }
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
        self.remap(&snapshot, &engine_networks);
        let (mapped, unnamed) = {
            let state = lock(&self.state);
            (
                state.saved.networks.clone(),
                state.saved.unnamed.keys().cloned().collect::<BTreeSet<_>>(),
            )
        };
        let mut present = BTreeSet::new();
        for n in &engine_networks {
            // Mapped, or made by vxtap for a network since gone from the store.
            let Some(id) = mapped.get(&n.id).or_else(|| n.options.get(OPT_NETWORK)) else {
                continue;
            };
            present.insert(id.clone());
            if snapshot.networks.contains_key(id) || unnamed.contains(&n.id) {
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

    /// Maps the engine's networks back to the store's before Docker calls (see [`remap`]);
    /// an engine or store that does not answer yet is left to the first spread.
    ///
    /// [`remap`]: Self::remap
    pub fn remap_now(&mut self) {
        let snapshot = self.agent.snapshot();
        let engine_networks = self.engine.vxtap_networks();
        if let (Ok(snapshot), Ok(engine_networks)) = (snapshot, engine_networks) {
            self.remap(&snapshot, &engine_networks);
        }
    }

    /// Maps the engine's vxtap networks that the driver state does not know (it lives in
    /// RUN_DIR, which a reboot empties, while Docker keeps its networks) back to the store's:
    /// one vxtap created carries `vxtap.network=ID`; one made here by `docker network create`
    /// has the store's id itself.
    fn remap(&mut self, snapshot: &crate::cluster::Snapshot, engine_networks: &[EngineNetwork]) {
        let mut state = lock(&self.state);
        let mut changed = false;
        for n in engine_networks {
            if state.saved.networks.contains_key(&n.id) {
                continue;
            }
            let id = n
                .options
                .get(OPT_NETWORK)
                .filter(|id| snapshot.networks.contains_key(*id))
                .or_else(|| snapshot.networks.contains_key(&n.id).then_some(&n.id));
            if let Some(id) = id {
                tracing::info!(name = %n.name, docker_id = %n.id, "Docker network mapped to the store's again");
                state.saved.networks.insert(n.id.clone(), id.clone());
                changed = true;
            }
        }
        if changed {
            if let Err(e) = state.save() {
                tracing::error!(error = %e, "saving the Docker driver state");
            }
        }
    }
}

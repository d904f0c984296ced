//! The control-plane agent: keeps this host's overlay namespaces in step with the store.
//!
//! It owns the local endpoints (those plumbed here, recorded in `RUN_DIR/endpoints.json` so
//! they survive a restart and can be published again after a lost etcd lease), the overlay
//! namespaces under `RUN_DIR/netns/`, and the remote entries programmed into each overlay's
//! link (a static fdb entry and an ARP proxy entry per remote endpoint). A loop lists the
//! store, reconciles, and applies each watch event; requests (`network ...`, `connect`,
//! `disconnect`) change the store and plumb synchronously, rolling back on failure. Network
//! create and remove take the cluster lock (a subnet overlap is no single key); connects and
//! disconnects take none: they claim their IP and name with create-if-absent txns
//! ([`claim`]), so hosts connect in parallel and nothing cluster-wide is held while a
//! container is plumbed.
//!
//! When the store is unreachable nothing is torn down: forwarding keeps the last programmed
//! state until the store answers again, and requests fail with a clear error.

mod claim;
mod cni;
mod docker;
mod reconcile;
mod view;

pub use docker::{is_docker, is_provisional, tag_of, DOCKER_NETNS};

use super::links::Links;
use crate::api::{DropCount, NetworkView, RecordStats, RefusedRecord, Reply, Request};
use crate::cluster::validate::{self, Reason, Rejection};
use crate::cluster::{
    self, ClusterError, Endpoint, EndpointRequest, Network, NetworkRequest, Snapshot,
};
use crate::plumbing::{self, overlay, PlumbingError};
use crate::store::{Listing, Store, StoreError, Watch, WatchEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use view::{Lister, View};
use vxtap_dataplane::io::netns::NetnsId;

/// How often at most every hosts file is rewritten while changes stream in: a file holds
/// every name of its network, so rewriting all of them on each change would cost this host
/// O(endpoints x local containers) per change. An isolated change is written at once.
const HOSTS_EVERY: Duration = Duration::from_secs(1);

/// How often at most each host runs `bridge -batch` for the br0 entries of remote endpoints
/// while changes stream in (one process per overlay each time).
const BR0_EVERY: Duration = Duration::from_millis(250);

/// A watch event on a key: its key, creation revision and value (`None`: deleted).
type Change = (String, crate::store::Revision, Option<Vec<u8>>);

/// How long a request waits for the cluster lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between attempts to reach an unreachable store.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Who this host is in the overlay.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Host name (`--host`).
    pub host: String,
    /// VTEP address (`--local-ip`).
    pub vtep: Ipv4Addr,
    /// Store URL (`--store`).
    pub store_url: String,
    /// Store security options (`--store-ca`, `--store-user`, ...).
    pub store_options: crate::store::StoreOptions,
    /// Run directory: overlay namespaces and the local endpoint record live here.
    pub run_dir: PathBuf,
    /// Serve names in every overlay namespace (at [`crate::dns::RESOLVER_ADDR`]), forwarding
    /// what the store does not own to these servers (`--docker`).
    pub resolver: Option<Vec<std::net::SocketAddr>>,
}

/// Why an overlay request failed. Nothing was left half-made.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The model refused it.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store has not been reached since the daemon started.
    #[error("store {0} is unreachable (the daemon keeps retrying)")]
    NoStore(String),
    /// A namespace or link step failed.
    #[error(transparent)]
    Plumbing(#[from] PlumbingError),
    /// The data plane refused a link or table change.
    #[error("data plane: {0}")]
    Dataplane(String),
    /// The container namespace does not exist.
    #[error("network namespace {0:?} not found")]
    UnknownNetns(String),
    /// No random id could be drawn.
    #[error("drawing a random id: {0}")]
    Random(std::io::Error),
}

/// One overlay network plumbed on this host.
#[derive(Debug)]
struct Overlay {
    network: Network,
    netns: PathBuf,
    link: String,
    /// Remote MAC -> VTEP, as programmed.
    fdb: BTreeMap<String, Ipv4Addr>,
    /// Remote IP -> MAC, as programmed.
    neigh: BTreeMap<Ipv4Addr, String>,
    /// Remote MACs programmed in br0's table behind the TAP.
    bridged: BTreeSet<String>,
    /// The resolver answering in the overlay namespace, when names are served; dropping
    /// the overlay stops it.
    resolver: Option<Arc<crate::dns::Resolver>>,
}

#[derive(Debug, Default)]
struct State {
    /// Endpoints plumbed on this host, by store key.
    local: BTreeMap<String, Endpoint>,
    /// Overlays by network id.
    overlays: BTreeMap<String, Overlay>,
    /// Hosts files we wrote, with their content.
    hosts_files: BTreeMap<PathBuf, String>,
    /// The store's session epoch when we last published.
    published_epoch: Option<u64>,
    /// Whether the hosts files lag the accepted records.
    hosts_stale: bool,
    /// When every hosts file was last brought up to date.
    hosts_written: Option<Instant>,
    /// br0 static entries of remote endpoints not applied yet, per network: (add, delete).
    br0_pending: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// When queued br0 entries were last applied.
    br0_flushed: Option<Instant>,
}

/// Store records refused by [`cluster::validate`]: each refused value is logged and counted
/// once, however often the store is listed.
#[derive(Debug, Default)]
struct RecordChecks {
    /// Endpoints accepted so far, to refuse overwrites in place.
    pins: validate::Pins,
    /// The refusals of the last listing, by (key, reason, value fingerprint).
    current: BTreeMap<(String, Reason, u64), Rejection>,
    /// Distinct refused records since the daemon started, by reason.
    counts: BTreeMap<Reason, u64>,
}

impl RecordChecks {
    /// Checks `listing`, logs and counts what is newly refused, and returns the accepted
    /// records.
    fn check(&mut self, listing: &crate::store::Listing) -> Snapshot {
        let checked = validate::check(listing, &self.pins);
        let mut current = BTreeMap::new();
        for r in checked.rejected {
            let id = (r.key.clone(), r.reason, r.fingerprint);
            if !self.current.contains_key(&id) {
                *self.counts.entry(r.reason).or_default() += 1;
                if r.reason.is_conflict() {
                    tracing::warn!(key = %validate::escape(&r.key), reason = %r.reason, detail = %r.detail, "store record conflicts with an older one; the first claim wins, this one is not programmed");
                } else {
                    tracing::warn!(key = %validate::escape(&r.key), reason = %r.reason, detail = %r.detail, "store record refused; it is not programmed");
                }
            }
            current.insert(id, r);
        }
        self.current = current;
        self.pins = checked.pins;
        checked.snapshot
    }

    fn stats(&self) -> RecordStats {
        let count = |conflicts: bool| {
            Reason::ALL
                .iter()
                .filter(|r| r.is_conflict() == conflicts)
                .map(|r| DropCount {
                    reason: r.name().to_owned(),
                    count: self.counts.get(r).copied().unwrap_or(0),
                })
                .collect()
        };
        RecordStats {
            refused: count(false),
            conflicts: count(true),
            current: self
                .current
                .values()
                .map(|r| RefusedRecord {
                    key: validate::escape(&r.key),
                    reason: r.reason.name().to_owned(),
                    detail: r.detail.clone(),
                })
                .collect(),
        }
    }
}

impl State {
    /// The networks this host serves: those of its local endpoints.
    fn served(&self) -> BTreeSet<String> {
        self.local.values().map(|e| e.network.clone()).collect()
    }

    /// The local endpoint of `container` on network `network_id`. The same namespace named
    /// twice (`/var/run/netns/x`, `/run/netns/x`, a symlink, `/proc/PID/ns/net`) is one
    /// container: namespaces are compared by identity, and by path only when one is gone.
    fn local_endpoint(&self, network_id: &str, container: &Container) -> Option<&Endpoint> {
        self.local.values().find(|e| {
            e.network == network_id
                && netns_path(&e.netns).is_ok_and(|path| container.is(&Container::lookup(path)))
        })
    }
}

/// How a container's interface is made, beyond the network's defaults.
#[derive(Debug, Default)]
struct Interface {
    /// Its name (default: the first free `ethN`).
    name: Option<String>,
    /// Its MTU, at most the network's (default: the network's).
    mtu: Option<u32>,
}

/// A container namespace as a request names it: its path, and its identity when it exists.
#[derive(Debug)]
struct Container {
    path: PathBuf,
    id: Option<NetnsId>,
}

impl Container {
    /// `path` and the identity of the network namespace there, if it is one.
    fn lookup(path: PathBuf) -> Container {
        let id = netns_id_at(&path);
        Container { path, id }
    }

    fn is(&self, other: &Container) -> bool {
        match (self.id, other.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.path == other.path,
        }
    }
}

/// The identity of the network namespace at `path`, or `None` if there is none there (or it
/// is some other kind of file or namespace). The opener never blocks: it checks the path is
/// on nsfs before it opens it, and opens without waiting (a FIFO cannot stall it).
fn netns_id_at(path: &Path) -> Option<NetnsId> {
    vxtap_dataplane::io::netns::open(path)
        .ok()
        .map(|file| file.id())
}

/// The agent. Shared by the reconcile loop and the admin connections.
pub struct Agent {
    config: AgentConfig,
    links: Arc<Mutex<Links>>,
    store: RwLock<Option<Arc<dyn Store>>>,
    state: Mutex<State>,
    /// What the checks of store records remember between listings. A lock of its own, never
    /// held across I/O, so `stats` answers while a request waits on the store.
    records: Mutex<RecordChecks>,
    /// The records accepted at the last check, for readers that must not wait on the store
    /// (the resolvers).
    latest: Arc<RwLock<Arc<Snapshot>>>,
    /// Counts the changes of `latest`: readers that act on changes compare it.
    generation: std::sync::atomic::AtomicU64,
    /// The overlays' resolvers by network id, for `stats` (which must not wait for the
    /// state): the overlay holds each, so a torn-down one no longer upgrades.
    resolvers: Mutex<BTreeMap<String, std::sync::Weak<crate::dns::Resolver>>>,
    /// Serialises CNI requests around `RUN_DIR/cni.json`.
    cni: Mutex<()>,
    started: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The overlay namespace name of a network: Docker's `1-<id>` shape, with our prefix.
fn overlay_name(network_id: &str) -> String {
    format!("ov-{}", network_id.get(..12).unwrap_or(network_id))
}

fn link_name(vni: u32) -> String {
    format!("vx-{vni}")
}

fn netns_path(netns: &str) -> Result<PathBuf, AgentError> {
    vxtap_dataplane::io::netns::resolve(netns)
        .map_err(|_| AgentError::UnknownNetns(netns.to_owned()))
}

impl Agent {
    /// Starts the agent: opens the store (an unreachable store is retried by the loop; a
    /// malformed URL is an error), reads the local endpoint record, and removes overlay
    /// namespaces that no local endpoint needs any more.
    ///
    /// # Errors
    ///
    /// An invalid store URL or unusable store directory, or an unreadable endpoint record.
    pub fn start(config: AgentConfig, links: Arc<Mutex<Links>>) -> anyhow::Result<Arc<Agent>> {
        crate::cluster::check_name("host", &config.host)
            .map_err(|e| anyhow::anyhow!("invalid --host: {e}"))?;
        let store = match crate::store::open_with(&config.store_url, &config.store_options) {
            Ok(store) => Some(Arc::from(store)),
            Err(e @ StoreError::Unreachable { .. }) => {
                tracing::warn!(error = %e, "store unreachable at start; retrying in the background");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let local = read_record(&record_path(&config.run_dir), &config.host, config.vtep)?;
        let agent = Arc::new(Agent {
            links,
            store: RwLock::new(store),
            state: Mutex::new(State {
                local,
                ..State::default()
            }),
            records: Mutex::new(RecordChecks::default()),
            latest: Arc::new(RwLock::new(Arc::new(Snapshot::default()))),
            generation: std::sync::atomic::AtomicU64::new(0),
            resolvers: Mutex::new(BTreeMap::new()),
            cni: Mutex::new(()),
            started: now_secs(),
            config,
        });
        agent.remove_stale_overlays();
        Ok(agent)
    }

    fn overlay_dir(&self) -> PathBuf {
        self.config.run_dir.join("netns")
    }

    /// Removes bound namespaces under RUN_DIR/netns that no local endpoint needs (left by a
    /// daemon killed between a disconnect and the teardown).
    fn remove_stale_overlays(&self) {
        let wanted: BTreeSet<String> = lock(&self.state)
            .local
            .values()
            .map(|e| overlay_name(&e.network))
            .collect();
        let Ok(dir) = std::fs::read_dir(self.overlay_dir()) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("ov-") && !wanted.contains(&name) {
                tracing::info!(netns = %name, "removing overlay namespace no endpoint needs");
                if let Err(e) = plumbing::netns::remove(&entry.path()) {
                    tracing::warn!(error = %e, "removing stale overlay namespace");
                }
            }
        }
    }

    fn store(&self) -> Result<Arc<dyn Store>, AgentError> {
        self.store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| AgentError::NoStore(self.config.store_url.clone()))
    }

    /// The store, opening it if the daemon has not reached it yet.
    fn store_or_open(&self) -> Result<Arc<dyn Store>, StoreError> {
        if let Ok(store) = self.store() {
            return Ok(store);
        }
        let store: Arc<dyn Store> = Arc::from(crate::store::open_with(
            &self.config.store_url,
            &self.config.store_options,
        )?);
        *self.store.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&store));
        tracing::info!(store = %self.config.store_url, "store reached");
        Ok(store)
    }

    /// The records of `listing` that pass the checks, against the endpoints this host
    /// accepted before (so an overwrite in place keeps the pinned endpoint). Everything that
    /// programs this host's tables goes through here.
    pub(super) fn check_records(&self, listing: &crate::store::Listing) -> Snapshot {
        let snapshot = lock(&self.records).check(listing);
        let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
        if **latest != snapshot {
            *latest = Arc::new(snapshot.clone());
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        snapshot
    }

    /// Counters of the store records this host refused, and the ones refused now.
    pub fn record_stats(&self) -> RecordStats {
        lock(&self.records).stats()
    }

    /// What the resolvers of the overlays here have done, by network name.
    pub fn resolver_stats(&self) -> Vec<crate::api::ResolverCounters> {
        let latest = self.latest();
        let mut resolvers = lock(&self.resolvers);
        resolvers.retain(|_, r| r.strong_count() > 0);
        resolvers
            .iter()
            .filter_map(|(id, r)| {
                Some(crate::api::ResolverCounters {
                    network: latest
                        .networks
                        .get(id)
                        .map_or_else(|| id.clone(), |n| n.name.clone()),
                    stats: r.upgrade()?.stats(),
                })
            })
            .collect()
    }

    /// Serves one overlay request.
    ///
    /// # Errors
    ///
    /// Whatever refused it; nothing changed.
    pub fn handle(&self, request: Request) -> Result<Reply, AgentError> {
        match request {
            Request::NetworkCreate { request } => self.network_create(&request).map(Reply::Network),
            Request::NetworkList => self.network_list().map(Reply::Networks),
            Request::NetworkInspect { name } => self.network_inspect(&name).map(Reply::Network),
            Request::NetworkRm { name } => self.network_rm(&name).map(|()| Reply::Done),
            Request::HostList => {
                let snapshot = Snapshot::from_listing(&self.store()?.list(cluster::HOSTS)?);
                Ok(Reply::Hosts(snapshot.hosts.into_values().collect()))
            }
            Request::Connect {
                network,
                netns,
                ip,
                name,
            } => self
                .connect(&network, &netns, ip, name.as_deref(), &Interface::default())
                .map(Reply::Endpoint),
            Request::Disconnect { network, netns } => {
                self.disconnect(&network, &netns).map(|()| Reply::Done)
            }
            Request::CniAdd {
                attachment,
                network,
                netns,
                ip,
                name,
                mtu,
            } => self
                .cni_add(&attachment, &network, &netns, ip, &name, mtu)
                .map(|added| Reply::CniAdded(Box::new(added))),
            Request::CniDel { attachment } => self.cni_del(&attachment).map(|()| Reply::Done),
            Request::CniCheck {
                attachment,
                netns,
                address,
                routes,
            } => self
                .cni_check(&attachment, &netns, &address, &routes)
                .map(|()| Reply::Done),
            Request::CniGc { valid } => self.cni_gc(&valid).map(|()| Reply::Done),
            other => Err(AgentError::Dataplane(format!(
                "not an overlay request: {other:?}"
            ))),
        }
    }

    fn network_create(&self, request: &NetworkRequest) -> Result<NetworkView, AgentError> {
        let store = self.store()?;
        // The state before the lock: a connect holds the state while it commits, and on a
        // dir store a commit waits for the lock's flock.
        let served = lock(&self.state).served();
        let mut locked = store.lock(LOCK_TIMEOUT)?;
        let snapshot =
            self.check_records(&read_scope(&mut |p: &str| locked.list(p), &served, None)?);
        let id = cluster::new_id().map_err(AgentError::Random)?;
        let network = cluster::plan_network(&snapshot, request, id, now_secs())?;
        Self::create_network(locked.as_mut(), &network, &snapshot)?;
        tracing::info!(name = %network.name, id = %network.id, vni = network.vni, subnet = %network.subnet, "network created");
        Ok(NetworkView {
            network,
            endpoints: Vec::new(),
        })
    }

    fn network_list(&self) -> Result<Vec<NetworkView>, AgentError> {
        let store = self.store()?;
        let snapshot = self.check_records(&read_all(&mut |p: &str| store.list(p))?);
        let mut views: Vec<NetworkView> = snapshot
            .networks
            .values()
            .map(|n| view(&snapshot, n))
            .collect();
        views.sort_by(|a, b| a.network.name.cmp(&b.network.name));
        Ok(views)
    }

    fn network_inspect(&self, name: &str) -> Result<NetworkView, AgentError> {
        let store = self.store()?;
        let served = lock(&self.state).served();
        let snapshot = self.check_records(&read_scope(
            &mut |p: &str| store.list(p),
            &served,
            Some(name),
        )?);
        Ok(view(&snapshot, snapshot.require_network(name)?))
    }

    fn network_rm(&self, name: &str) -> Result<(), AgentError> {
        let store = self.store()?;
        let served = lock(&self.state).served();
        let mut locked = store.lock(LOCK_TIMEOUT)?;
        let snapshot = self.check_records(&read_scope(
            &mut |p: &str| locked.list(p),
            &served,
            Some(name),
        )?);
        let network = cluster::plan_network_removal(&snapshot, name)?;
        Self::remove_network(locked.as_mut(), network, &snapshot)?;
        tracing::info!(name = %network.name, id = %network.id, "network removed");
        Ok(())
    }

    fn connect(
        &self,
        network: &str,
        netns: &str,
        ip: Option<Ipv4Addr>,
        name: Option<&str>,
        interface: &Interface,
    ) -> Result<Endpoint, AgentError> {
        // Checked before anything is locked: a path that is not a namespace (a FIFO, a
        // device) is refused here, never opened while the state is locked.
        let container = Container::lookup(netns_path(netns)?);
        if container.id.is_none() {
            return Err(AgentError::UnknownNetns(netns.to_owned()));
        }
        let store = self.store()?;
        let began = Instant::now();
        // The state orders this host's requests; no cluster-wide lock is taken.
        let mut state = lock(&self.state);
        let waited = began.elapsed();
        let snapshot = self.planning_snapshot(store.as_ref(), &state, network)?;
        let network = snapshot.require_network(network)?.clone();
        let default_name = container
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let request = EndpointRequest {
            name: name.map_or(default_name, str::to_owned),
            ip,
            netns: netns.to_owned(),
            host: self.config.host.clone(),
            vtep: self.config.vtep,
        };
        if let Some(e) = state.local_endpoint(&network.id, &container) {
            return Err(ClusterError::AlreadyConnected {
                netns: netns.to_owned(),
                network: network.name.clone(),
                endpoint: e.name.clone(),
            }
            .into());
        }
        let mtu = interface.mtu.unwrap_or(network.mtu);
        if mtu > network.mtu || mtu < cluster::MIN_MTU {
            return Err(AgentError::Dataplane(format!(
                "MTU {mtu} is not in {}-{}, the network's",
                cluster::MIN_MTU,
                network.mtu
            )));
        }
        // Reserve the IP and name first: from here on, a failure releases them.
        let mut endpoint = self.claim_endpoint(
            store.as_ref(),
            &state,
            &snapshot,
            &network,
            &request,
            &|_| {},
            cluster::claims::endpoint_reservation,
        )?;
        let reserved = began.elapsed();

        let had_overlay = state.overlays.contains_key(&network.id);
        let undo = |agent: &Agent, state: &mut State, endpoint: &Endpoint| {
            if !had_overlay {
                agent.teardown(state, &network.id);
            }
            agent.release_after_failure(store.as_ref(), endpoint);
        };
        if let Err(e) = self.ensure_overlay(&mut state, &network) {
            undo(self, &mut state, &endpoint);
            return Err(e);
        }
        // An overlay already here is kept in step by the watch; a queued br0 deletion goes
        // now, in case it is of the MAC this container is about to take.
        if had_overlay {
            self.flush_br0(&mut state, true);
        } else {
            self.sync_entries(&mut state, &network.id, &snapshot);
        }
        let Some(overlay_ns) = state.overlays.get(&network.id).map(|o| o.netns.clone()) else {
            undo(self, &mut state, &endpoint);
            return Err(AgentError::Dataplane("overlay vanished".to_owned()));
        };
        let tag = endpoint.id.get(..8).unwrap_or(&endpoint.id).to_owned();
        let link = overlay::ContainerLink {
            tag: &tag,
            container: &container.path,
            mac: &endpoint.mac,
            ip: endpoint.ip,
            prefix: network.subnet.prefix_len(),
            mtu,
            ifname: interface.name.as_deref(),
        };
        let overlaid = began.elapsed();
        endpoint.ifname = match overlay::connect_container(&overlay_ns, &link) {
            Ok(ifname) => ifname,
            Err(e) => {
                undo(self, &mut state, &endpoint);
                return Err(e.into());
            }
        };
        let plumbed = began.elapsed();
        if let Err(e) = self.publish_local(&mut state, store.as_ref(), &snapshot, &endpoint) {
            if let Err(e) = overlay::disconnect_container(&container.path, &endpoint.ifname) {
                tracing::error!(error = %e, "rolling back the container interface");
            }
            undo(self, &mut state, &endpoint);
            return Err(e);
        }
        // The container's own hosts file now; the others on the network learn its name
        // when the watch brings its record back.
        let published = began.elapsed();
        self.write_hosts_files(&mut state, &snapshot, Some(&endpoint.netns));
        // Milliseconds since the request began at the end of each step.
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            network = %network.name, name = %endpoint.name, ip = %endpoint.ip, netns,
            ifname = %endpoint.ifname,
            ms.locked = format!("{:.1}", ms(waited)),
            ms.reserved = format!("{:.1}", ms(reserved)),
            ms.overlay = format!("{:.1}", ms(overlaid)),
            ms.plumbed = format!("{:.1}", ms(plumbed)),
            ms.published = format!("{:.1}", ms(published)),
            ms.done = format!("{:.1}", ms(began.elapsed())),
            "connected"
        );
        Ok(endpoint)
    }

    /// Removes the local `endpoint` (whose container namespace is at `container`): from
    /// the store first (if it refuses, nothing changed anywhere), then the local record, the
    /// container's interface (if the namespace is still there), and the overlay when no
    /// local endpoint needs it any more.
    fn remove_endpoint(
        &self,
        store: &dyn Store,
        state: &mut State,
        snapshot: &Snapshot,
        endpoint: &Endpoint,
        container: &Path,
    ) -> Result<(), AgentError> {
        self.release_endpoint(store, endpoint)?;
        state.local.remove(&endpoint.key());
        if let Err(e) = self.save_record(state) {
            tracing::error!(error = %e, "updating the endpoint record after disconnect");
        }
        if let Err(e) = overlay::disconnect_container(container, &endpoint.ifname) {
            tracing::warn!(error = %e, "removing the container interface");
        }
        if !state.local.values().any(|e| e.network == endpoint.network) {
            self.teardown(state, &endpoint.network);
        }
        // Its hosts file goes now (no local endpoint names it); the others lose its name
        // with the next refresh, once the store's deletion is seen.
        self.write_hosts_files(state, snapshot, None);
        Ok(())
    }

    fn disconnect(&self, network: &str, netns: &str) -> Result<(), AgentError> {
        let container = Container::lookup(netns_path(netns)?);
        let store = self.store()?;
        let mut state = lock(&self.state);
        let snapshot = self.planning_snapshot(store.as_ref(), &state, network)?;
        let network = snapshot.require_network(network)?.clone();
        let Some(endpoint) = state.local_endpoint(&network.id, &container).cloned() else {
            return Err(ClusterError::NotConnected {
                netns: netns.to_owned(),
                network: network.name.clone(),
            }
            .into());
        };
        self.remove_endpoint(
            store.as_ref(),
            &mut state,
            &snapshot,
            &endpoint,
            &container.path,
        )?;
        tracing::info!(network = %network.name, name = %endpoint.name, netns, "disconnected");
        Ok(())
    }

    /// Lists what this host reads, publishes what is missing, and reconciles once.
    fn sync_once(&self, store: &dyn Store) -> Result<View, StoreError> {
        let mut view = self.read_view(store)?;
        // Twice at most: a second listing shows what publishing wrote, and publishing never
        // writes again what the store already holds as written.
        for _ in 0..2 {
            if !self.publish(store, &view.listing)? {
                break;
            }
            view = self.read_view(store)?;
        }
        self.apply_view(&view);
        tracing::debug!(
            entries = view.listing.entries.len(),
            bytes = view.bytes(),
            networks = view.networks.len(),
            revision = view.listing.revision,
            "store listed"
        );
        Ok(view)
    }

    /// Lists the global records and the endpoints of the networks served here.
    fn read_view(&self, store: &dyn Store) -> Result<View, StoreError> {
        let served = lock(&self.state).served();
        View::read(&mut |prefix: &str| store.list(prefix), &served)
    }

    /// Checks the records of `view` and brings the overlays in line with them.
    /// Applies a batch of endpoint changes one by one ([`validate::apply_endpoint_change`])
    /// and programs only what they change: an fdb, ARP proxy and br0 entry per remote
    /// endpoint added or removed, and the hosts files of this host's containers on those
    /// networks. Returns false when a change is not plain (a conflict, a refusal, a network
    /// or host record): the caller then checks the whole view, which also repairs anything
    /// applied before that change.
    fn apply_changes(&self, changes: &[Change]) -> bool {
        let applied = {
            let mut records = lock(&self.records);
            let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
            let snapshot = Arc::make_mut(&mut latest);
            let nothing_refused = records.current.is_empty();
            let mut applied = Vec::new();
            let mut plain = true;
            for (key, created, value) in changes {
                match validate::apply_endpoint_change(
                    snapshot,
                    &mut records.pins,
                    key,
                    *created,
                    value.as_deref(),
                    nothing_refused,
                ) {
                    Ok(done) => applied.extend(done),
                    Err(why) => {
                        tracing::debug!(key = %validate::escape(key), ?why, "not a plain change; checking every record");
                        plain = false;
                        break;
                    }
                }
            }
            if !applied.is_empty() {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            if !plain {
                return false;
            }
            applied
        };
        if applied.is_empty() {
            return true;
        }
        let mut state = lock(&self.state);
        self.program_remote(&mut state, &applied);
        self.flush_br0(&mut state, false);
        let touched: BTreeSet<&str> = applied
            .iter()
            .map(|a| match a {
                validate::Applied::Added(e) | validate::Applied::Removed(e) => e.network.as_str(),
            })
            .collect();
        let named_here = state
            .local
            .values()
            .any(|e| !is_docker(e) && touched.contains(e.network.as_str()));
        if named_here {
            state.hosts_stale = true;
            self.refresh_hosts_files(&mut state);
        }
        true
    }

    fn apply_view(&self, view: &View) {
        let snapshot = self.check_records(&view.listing);
        let mut state = lock(&self.state);
        self.reconcile(&mut state, &snapshot);
    }

    /// The reconcile loop; returns when `stop` is set.
    ///
    /// It lists what this host reads once, then applies the watch's events one batch at a
    /// time. It lists again only when the watch says changes were missed (`Resync`: etcd
    /// compacted past it), when the watch breaks (the store went away: forwarding keeps the
    /// last programmed state meanwhile), when the session was renewed or one of this host's
    /// own records was deleted (they must be written again), or when the networks served
    /// here changed (a first or last local endpoint on a network). There is no periodic
    /// re-listing: while the watch is healthy, etcd reports every change in order.
    pub fn run(&self, stop: &AtomicBool) {
        let mut backoff = Duration::from_millis(100);
        let mut outage: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            let attempt = self.store_or_open().and_then(|store| {
                let view = self.sync_once(store.as_ref())?;
                let watch =
                    crate::store::merged::watch_prefixes(store.as_ref(), view.watch_from())?;
                Ok((store, view, watch))
            });
            let (store, mut view, mut watch) = match attempt {
                Ok(ok) => ok,
                Err(e) => {
                    if outage.is_none() {
                        tracing::warn!(error = %e, "store unreachable; forwarding on the last known state");
                        outage = Some(Instant::now());
                    }
                    sleep_unless(stop, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if let Some(since) = outage.take() {
                tracing::info!(after = ?since.elapsed(), "store reachable again; resynchronised");
            }
            backoff = Duration::from_millis(100);
            self.follow(store.as_ref(), &mut view, watch.as_mut(), stop);
        }
    }

    /// Applies the watch's changes to `view` and the overlays, batch by batch, until the view
    /// must be listed again (see [`run`](Self::run)) or `stop` is set.
    fn follow(&self, store: &dyn Store, view: &mut View, watch: &mut dyn Watch, stop: &AtomicBool) {
        let epoch = store.session_epoch();
        while !stop.load(Ordering::SeqCst) {
            let first = match watch.next(Duration::from_millis(250)) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    let mut state = lock(&self.state);
                    self.flush_br0(&mut state, false);
                    self.refresh_hosts_files(&mut state);
                    drop(state);
                    if store.session_epoch() != epoch {
                        tracing::info!("store session renewed; publishing again");
                        return;
                    }
                    if lock(&self.state).served() != view.networks {
                        tracing::debug!("the networks served here changed; listing again");
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store watch ended");
                    return;
                }
            };
            let (batch, complete) = gather(watch, first, SETTLE_DEADLINE);
            let mut changes: Vec<Change> = Vec::new();
            let mut own = false;
            for event in batch {
                let change = match &event {
                    WatchEvent::Changed {
                        key,
                        value,
                        created,
                        ..
                    } => {
                        own |= self.own_record_disturbed(key, value.as_deref());
                        Some((key.clone(), *created, value.clone()))
                    }
                    WatchEvent::Resync => None,
                };
                match view.apply(event) {
                    Ok(true) => changes.extend(change),
                    Ok(false) => {}
                    Err(stale) => {
                        tracing::info!(?stale, "store view is stale; listing again");
                        return;
                    }
                }
            }
            // Each change on its own when that is plain, else the whole view checked again.
            if !changes.is_empty() && !self.apply_changes(&changes) {
                self.apply_view(view);
            }
            // A record of this host deleted or rewritten by someone else: written back as
            // this host has it (publishing compares byte for byte, so our own writes coming
            // back write nothing).
            if own {
                if let Err(e) = self.publish(store, &view.listing) {
                    tracing::warn!(error = %e, "publishing this host's records");
                    return;
                }
            }
            if !complete {
                return;
            }
        }
    }

    /// Whether `key` is this host's record or one of its local endpoints, and `value` (its
    /// new value, `None`: deleted) is not what this host wrote there: then someone else
    /// deleted or rewrote it, and it is written back. Our own writes coming back are not.
    fn own_record_disturbed(&self, key: &str, value: Option<&[u8]>) -> bool {
        let ours = if key.strip_prefix(cluster::HOSTS) == Some(self.config.host.as_str()) {
            Some(to_json(&self.host_record()))
        } else {
            lock(&self.state).local.get(key).map(to_json)
        };
        ours.is_some_and(|ours| value != Some(ours.as_slice()))
    }

    /// This host's record, as it publishes it.
    fn host_record(&self) -> cluster::Host {
        cluster::Host {
            name: self.config.host.clone(),
            vtep: self.config.vtep,
            pid: std::process::id(),
            started: self.started,
        }
    }
}

/// Reads what a request needs through `list`: the global records, and the endpoints of the
/// networks in `served` and of `network` (a name, an id or an id prefix, resolved against the
/// networks listed, as the request will resolve it).
///
/// # Errors
///
/// The first listing that failed.
fn read_scope(
    list: &mut Lister<'_>,
    served: &BTreeSet<String>,
    network: Option<&str>,
) -> Result<Listing, StoreError> {
    let mut networks = served.clone();
    if let Some(name) = network {
        let listed = list(cluster::NETWORKS)?;
        if let Some(n) = Snapshot::from_listing(&listed).network(name) {
            networks.insert(n.id.clone());
        }
    }
    Ok(View::read(list, &networks)?.listing)
}

/// Every network, host and endpoint record, for the commands that show them all.
///
/// # Errors
///
/// The first listing that failed.
fn read_all(list: &mut Lister<'_>) -> Result<Listing, StoreError> {
    let mut all = Listing::default();
    for prefix in [cluster::NETWORKS, cluster::HOSTS, cluster::ENDPOINTS] {
        let listing = list(prefix)?;
        all.entries.extend(listing.entries);
        all.revision = all.revision.max(listing.revision);
    }
    all.entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(all)
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let deadline = Instant::now() + total;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn view(snapshot: &Snapshot, network: &Network) -> NetworkView {
    let mut endpoints: Vec<Endpoint> = snapshot.endpoints_of(&network.id).cloned().collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    NetworkView {
        network: network.clone(),
        endpoints,
    }
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Our own model types always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

fn record_path(run_dir: &Path) -> PathBuf {
    run_dir.join("endpoints.json")
}

/// The local endpoints recorded in `path`: only those of this host and VTEP, each passing the
/// store's field rules, since they are published as they are.
fn read_record(
    path: &Path,
    host: &str,
    vtep: Ipv4Addr,
) -> anyhow::Result<BTreeMap<String, Endpoint>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let endpoints: Vec<Endpoint> = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not an endpoint record: {e}", path.display()))?;
    let mut local = BTreeMap::new();
    for e in endpoints {
        if e.host != host || e.vtep != vtep {
            tracing::warn!(record = %path.display(), endpoint = %validate::escape(&e.name), host = %validate::escape(&e.host), vtep = %e.vtep, "ignoring a local endpoint recorded for another host or VTEP");
            continue;
        }
        // Held to the store's rules too: what is published from here must pass them.
        match validate::check_endpoint(&e) {
            Ok(()) => {
                local.insert(e.key(), e);
            }
            Err(rejection) => {
                tracing::warn!(record = %path.display(), endpoint = %validate::escape(&e.name), reason = %rejection.reason, detail = %rejection.detail, "ignoring a local endpoint that breaks the rules")
            }
        }
    }
    Ok(local)
}

/// How long a burst of changes may hold back the first of them: a steady stream of writes
/// must not delay every change behind it (one endpoint waited 8 s behind such a stream when
/// every burst was re-listed).
const SETTLE_DEADLINE: Duration = Duration::from_millis(50);

/// How long the watch must be quiet for a batch to end before its deadline.
const SETTLE_QUIET: Duration = Duration::from_millis(2);

/// Gathers a burst of changes into one batch, so that checking and reconciling (which cost
/// in proportion to what this host reads) run once per burst rather than once per key: takes
/// `first` and the changes that follow it less than [`SETTLE_QUIET`] apart, for at most
/// `deadline` in all. Returns the batch and whether the watch can go on: a `Resync` ends the
/// batch (it is in it) and so does an error, which a finished watch repeats at once for ever
/// (draining those would spin).
fn gather(watch: &mut dyn Watch, first: WatchEvent, deadline: Duration) -> (Vec<WatchEvent>, bool) {
    let start = Instant::now();
    let mut batch = vec![first];
    if matches!(batch[0], WatchEvent::Resync) {
        return (batch, false);
    }
    while let Some(left) = deadline.checked_sub(start.elapsed()) {
        match watch.next(left.min(SETTLE_QUIET)) {
            Ok(Some(event)) => {
                let resync = matches!(event, WatchEvent::Resync);
                batch.push(event);
                if resync {
                    return (batch, false);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "store watch ended");
                return (batch, false);
            }
        }
    }
    (batch, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: usize) -> WatchEvent {
        WatchEvent::Changed {
            key: format!("networks/x{n}"),
            value: None,
            revision: 1,
            created: 0,
        }
    }

    /// A watch that hands out `changes` changes, then repeats `then` without waiting, as a
    /// finished etcd watch does.
    struct Scripted {
        changes: usize,
        then: fn() -> Result<Option<WatchEvent>, StoreError>,
        calls: usize,
    }

    impl Watch for Scripted {
        fn next(&mut self, _: Duration) -> Result<Option<WatchEvent>, StoreError> {
            self.calls += 1;
            assert!(
                self.calls < 1000,
                "gathering keeps draining a finished watch"
            );
            if self.changes > 0 {
                self.changes -= 1;
                return Ok(Some(change(self.calls)));
            }
            (self.then)()
        }
    }

    #[test]
    fn gathering_stops_at_quiet_resync_or_error() {
        let quiet: fn() -> _ = || Ok(None);
        let resync: fn() -> _ = || Ok(Some(WatchEvent::Resync));
        let broken: fn() -> _ = || {
            Err(StoreError::Unreachable {
                url: "etcd://x".into(),
                reason: "gone".into(),
            })
        };
        for (then, batch_len, goes_on) in [(quiet, 4, true), (resync, 5, false), (broken, 4, false)]
        {
            let mut watch = Scripted {
                changes: 3,
                then,
                calls: 0,
            };
            let (batch, complete) = gather(&mut watch, change(0), SETTLE_DEADLINE);
            assert_eq!(watch.calls, 4, "three changes, then one more call");
            assert_eq!(
                batch.len(),
                batch_len,
                "the first, three changes, and a Resync if any"
            );
            assert_eq!(complete, goes_on);
        }
        let mut watch = Scripted {
            changes: 3,
            then: quiet,
            calls: 0,
        };
        let (batch, complete) = gather(&mut watch, WatchEvent::Resync, SETTLE_DEADLINE);
        assert_eq!((batch.len(), complete, watch.calls), (1, false, 0));
    }

    /// A watch that never goes quiet: a change per call, each a millisecond after the last.
    struct Endless {
        calls: usize,
    }

    impl Watch for Endless {
        fn next(&mut self, _: Duration) -> Result<Option<WatchEvent>, StoreError> {
            self.calls += 1;
            assert!(
                self.calls < 1000,
                "gathering never stopped for a steady stream"
            );
            std::thread::sleep(Duration::from_millis(1));
            Ok(Some(change(self.calls)))
        }
    }

    #[test]
    fn a_steady_stream_of_changes_is_cut_at_the_deadline() {
        let mut watch = Endless { calls: 0 };
        let (batch, complete) = gather(&mut watch, change(0), SETTLE_DEADLINE);
        // Without the deadline the stream would run into the assertion in `next`; with it,
        // the batch ends after about 50 calls and the watch goes on.
        assert!(complete);
        assert!(batch.len() > 1 && batch.len() == watch.calls + 1);
    }
}

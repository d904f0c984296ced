//! `vxtap sim`: stands in for many hosts at once, for scale tests and the control-plane
//! benchmark. It writes N simulated hosts into a real etcd with vxtap's own schema: each
//! host's record (`hosts/NAME`) and its E endpoints (`endpoints/NET/ID`) bound to a lease
//! of that host's own, as a real daemon's session keys are. One thread keeps every lease
//! alive (one keep-alive per lease per TTL/3, sent together in a few streams). Real daemons
//! on the same etcd see the simulated hosts as peers and program their endpoints.
//!
//! Simulated endpoints take addresses from the top of the subnet downwards; real `connect`
//! allocates from the bottom, so the two do not collide until the subnet is full. Their
//! VTEPs (`--vtep-base` + index + 1) belong to no machine: traffic to them goes nowhere.
//!
//! After populating it prints `ready HOSTS ENDPOINTS NETWORK_ID` and then reads commands on
//! stdin, one per line, answering each with one line on stdout (`ok ...` or `err ...`):
//!
//! - `add HOST`: a new endpoint on host HOST (index from 0) →
//!   `ok KEY IP MAC T`, T the wall-clock time (seconds since the epoch) just before the write;
//! - `del KEY` → `ok T`, T just before the delete;
//! - `kill HOST`: stop refreshing HOST's lease → `ok LAST_REFRESH TTL`, LAST_REFRESH the time
//!   its last successful refresh was answered (its keys expire TTL seconds after that);
//! - `ping` → `ok`; `quit` (or the end of stdin): revoke every lease → `ok`, then exit.
//!
//! It writes only the keys of its simulated hosts (and, with `--create-network`, one network
//! record) and deletes only those; it never takes the cluster lock.

mod plan;
mod process;

pub use plan::{
    endpoint_record, host_name, host_record, host_vtep, mac_text, parse_command, SimCommand,
    SimHost, TopDown,
};
pub use process::{parse_time, Added, Killed, SimProcess, ANSWER_TIMEOUT, READY_TIMEOUT};

use crate::cluster::{self, Endpoint, Network, NetworkRequest, Snapshot};
use crate::store::etcd::{leases::MAX_TXN_PUTS, EtcdStore};
use crate::store::{Store, StoreError};
use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `vxtap sim`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// The etcd to write into: etcd://HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// The network (name or id) the simulated endpoints join. It must exist, unless
    /// --create-network is given.
    #[arg(long)]
    pub network: String,
    /// Create the network (a valid record, written as `network create` would) if no
    /// network has that name.
    #[arg(long)]
    pub create_network: bool,
    /// --create-network: its subnet (default: the next free /24).
    #[arg(long)]
    pub subnet: Option<String>,
    /// --create-network: its VNI (default: the next free one).
    #[arg(long)]
    pub vni: Option<u32>,
    /// Simulated hosts.
    #[arg(long, default_value_t = 100)]
    pub hosts: usize,
    /// Endpoints per simulated host.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// TTL of each simulated host's lease, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub ttl: u64,
    /// Host names are PREFIX-00001, PREFIX-00002, ...
    #[arg(long, default_value = "sim")]
    pub host_prefix: String,
    /// VTEPs are this address + 1, + 2, ... (no machine has them).
    #[arg(long, default_value = "100.64.0.0")]
    pub vtep_base: Ipv4Addr,
}

/// Why the simulator failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Only etcd has leases.
    #[error("--store {0}: the simulator needs an etcd store (etcd://HOST:PORT)")]
    NotEtcd(String),
    /// A store operation failed.
    #[error("{what}: {source}")]
    Store {
        /// What was being done.
        what: String,
        /// Why.
        source: StoreError,
    },
    /// The network does not exist, or cannot be created.
    #[error("network {name:?}: {source}")]
    Network {
        /// The name given.
        name: String,
        /// Why.
        source: cluster::ClusterError,
    },
    /// The flags cannot work (no room for the endpoints, bad names).
    #[error("{0}")]
    Shape(String),
    /// Reading stdin, writing stdout, the random source or a thread.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

fn store_error(what: impl Into<String>) -> impl FnOnce(StoreError) -> SimError {
    let what = what.into();
    move |source| SimError::Store { what, source }
}

/// Microseconds since the Unix epoch, now.
fn wall_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// What the command loop and the lease keeper share.
#[derive(Debug)]
struct State {
    hosts: Vec<HostState>,
    addresses: TopDown,
}

#[derive(Debug)]
struct HostState {
    sim: SimHost,
    /// Refreshed by the keeper; false after `kill`.
    alive: bool,
    /// Wall-clock micros when its last refresh was answered.
    last_refresh: u128,
}

/// Runs the simulator: populate, keep leases alive, serve stdin until `quit` or its end,
/// revoke every lease.
///
/// # Errors
///
/// See [`SimError`]; leases granted before a failure are revoked on the way out.
pub fn run(args: &SimArgs) -> Result<(), SimError> {
    if !args.store.starts_with("etcd://") {
        return Err(SimError::NotEtcd(args.store.clone()));
    }
    cluster::check_name("host", &args.host_prefix).map_err(|_| {
        SimError::Shape(format!(
            "--host-prefix {:?} is not a valid host name",
            args.host_prefix
        ))
    })?;
    let store = EtcdStore::open(&args.store).map_err(store_error("opening the store"))?;
    let listing = store.list("").map_err(store_error("listing the store"))?;
    let snapshot = Snapshot::from_listing(&listing);
    let network = find_or_create_network(&store, &snapshot, args)?;
    let taken = snapshot.endpoints_of(&network.id).map(|e| e.ip);
    let addresses = TopDown::new(&network, taken);
    let state = Arc::new(Mutex::new(State {
        hosts: Vec::with_capacity(args.hosts),
        addresses,
    }));
    let ttl = Duration::from_secs(args.ttl);
    let outcome = populate(&store, &network, args, &state, ttl).and_then(|endpoints| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {} {endpoints} {}", args.hosts, network.id)
            .and_then(|()| out.flush())
            .map_err(|source| SimError::Io {
                what: "writing stdout",
                source,
            })?;
        drop(out);
        serve(&store, &network, &state, ttl)
    });
    revoke_all(&store, &state);
    outcome
}

/// The network `args.network` names, created first with `--create-network`.
fn find_or_create_network(
    store: &EtcdStore,
    snapshot: &Snapshot,
    args: &SimArgs,
) -> Result<Network, SimError> {
    if let Some(network) = snapshot.network(&args.network) {
        return Ok(network.clone());
    }
    let network_error = |source| SimError::Network {
        name: args.network.clone(),
        source,
    };
    if !args.create_network {
        return Err(network_error(cluster::ClusterError::UnknownNetwork(
            args.network.clone(),
        )));
    }
    let request = NetworkRequest {
        name: args.network.clone(),
        subnet: args.subnet.clone(),
        gateway: None,
        vni: args.vni,
        mtu: None,
    };
    let id = cluster::new_id().map_err(|source| SimError::Io {
        what: "reading the random source",
        source,
    })?;
    let created = u64::try_from(wall_micros() / 1_000_000).unwrap_or(0);
    let network = cluster::plan_network(snapshot, &request, id, created).map_err(network_error)?;
    let value = serde_json::to_vec(&network).map_err(|e| SimError::Shape(e.to_string()))?;
    store
        .put_with_lease(&network.key(), &value, 0)
        .map_err(store_error(format!("writing network {}", network.name)))?;
    eprintln!(
        "vxtap sim: created network {} ({}, VNI {}, {})",
        network.name, network.id, network.vni, network.subnet
    );
    Ok(network)
}

/// Grants every host its lease and writes its record and endpoints, up to
/// [`MAX_TXN_PUTS`] puts per txn; starts nothing. Returns the number of endpoints written.
fn populate(
    store: &EtcdStore,
    network: &Network,
    args: &SimArgs,
    state: &Mutex<State>,
    ttl: Duration,
) -> Result<usize, SimError> {
    let start = Instant::now();
    let pid = std::process::id();
    let started = u64::try_from(wall_micros() / 1_000_000).unwrap_or(0);
    let mut pending: Vec<(String, Vec<u8>, i64)> = Vec::new();
    let mut written = 0;
    let flush = |pending: &mut Vec<(String, Vec<u8>, i64)>| -> Result<(), SimError> {
        let batch: Vec<(&str, &[u8], i64)> = pending
            .iter()
            .map(|(k, v, l)| (k.as_str(), v.as_slice(), *l))
            .collect();
        store
            .put_all_with_lease(&batch)
            .map_err(store_error("writing simulated hosts"))?;
        pending.clear();
        Ok(())
    };
    for index in 0..args.hosts {
        let name = host_name(&args.host_prefix, index);
        let vtep = host_vtep(args.vtep_base, index)
            .ok_or_else(|| SimError::Shape(format!("no VTEP left for host {index}")))?;
        let lease = store
            .grant_lease(ttl)
            .map_err(store_error("granting a lease"))?;
        let record = host_record(name, vtep, pid, started);
        let mut sim = SimHost {
            record,
            lease,
            endpoints: 0,
        };
        pending.push((sim.record.key(), to_json(&sim.record)?, lease));
        let mut endpoints = Vec::with_capacity(args.endpoints);
        {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            for _ in 0..args.endpoints {
                endpoints.push(new_endpoint(&mut state.addresses, network, &mut sim)?);
            }
            state.hosts.push(HostState {
                sim,
                alive: true,
                last_refresh: wall_micros(),
            });
        }
        for e in endpoints {
            pending.push((e.key(), to_json(&e)?, lease));
            written += 1;
        }
        if pending.len() + args.endpoints + 1 > MAX_TXN_PUTS {
            flush(&mut pending)?;
        }
    }
    if !pending.is_empty() {
        flush(&mut pending)?;
    }
    eprintln!(
        "vxtap sim: {} hosts, {written} endpoints written in {} ms",
        args.hosts,
        start.elapsed().as_millis()
    );
    Ok(written)
}

/// A new endpoint record on `host`, with the highest free address.
fn new_endpoint(
    addresses: &mut TopDown,
    network: &Network,
    host: &mut SimHost,
) -> Result<Endpoint, SimError> {
    let ip = addresses.take().ok_or_else(|| {
        SimError::Shape(format!(
            "subnet {} of network {} is full",
            network.subnet, network.name
        ))
    })?;
    let id = cluster::new_id().map_err(|source| SimError::Io {
        what: "reading the random source",
        source,
    })?;
    let endpoint = endpoint_record(network, &host.record, host.endpoints, ip, id);
    host.endpoints += 1;
    Ok(endpoint)
}

fn to_json<T: serde::Serialize>(record: &T) -> Result<Vec<u8>, SimError> {
    serde_json::to_vec(record).map_err(|e| SimError::Shape(format!("encoding a record: {e}")))
}

/// Keeps the leases alive from one thread while it answers stdin.
fn serve(
    store: &EtcdStore,
    network: &Network,
    state: &Mutex<State>,
    ttl: Duration,
) -> Result<(), SimError> {
    let stop = AtomicBool::new(false);
    // Held by the keeper for a whole round, so that `kill` cannot slip between the round's
    // snapshot of live leases and its request.
    let round = Mutex::new(());
    std::thread::scope(|scope| {
        let keeper = std::thread::Builder::new()
            .name("vxtap-sim-keeper".to_owned())
            .spawn_scoped(scope, || keep_alive(store, state, &round, &stop, ttl))
            .map_err(|source| SimError::Io {
                what: "starting the lease keeper",
                source,
            })?;
        let outcome = commands(store, network, state, &round, ttl);
        stop.store(true, Ordering::SeqCst);
        if keeper.join().is_err() {
            eprintln!("vxtap sim: the lease keeper panicked");
        }
        outcome
    })
}

/// Keep-alive streams per round for leases a stream left unanswered.
const KEEPALIVE_TRIES: usize = 5;

/// The keeper: every TTL/3, refreshes every live lease in as few requests as it can.
fn keep_alive(
    store: &EtcdStore,
    state: &Mutex<State>,
    round: &Mutex<()>,
    stop: &AtomicBool,
    ttl: Duration,
) {
    let period = ttl / 3;
    let mut next = Instant::now() + period;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        let _round = round.lock().unwrap_or_else(PoisonError::into_inner);
        let leases: Vec<(usize, i64)> = {
            let state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.alive)
                .map(|(i, h)| (i, h.sim.lease))
                .collect()
        };
        // Leases a stream left unanswered are sent again at once, a few times.
        let mut pending = leases;
        let mut failed = None;
        for _ in 0..KEEPALIVE_TRIES {
            if pending.is_empty() {
                break;
            }
            let ids: Vec<i64> = pending.iter().map(|&(_, lease)| lease).collect();
            match store.keep_leases_alive(&ids) {
                Ok(ttls) => {
                    let answered = wall_micros();
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    let mut unanswered = Vec::new();
                    for (&(index, lease), ttl) in pending.iter().zip(ttls) {
                        match ttl {
                            None => unanswered.push((index, lease)),
                            Some(ttl) if ttl <= 0 => {
                                eprintln!(
                                    "vxtap sim: lease {lease} of {} expired",
                                    state.hosts[index].sim.record.name
                                );
                                state.hosts[index].alive = false;
                            }
                            Some(_) => state.hosts[index].last_refresh = answered,
                        }
                    }
                    pending = unanswered;
                }
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        match failed {
            None if pending.is_empty() => next = now + period,
            None => {
                eprintln!(
                    "vxtap sim: {} leases left unanswered after {KEEPALIVE_TRIES} keep-alive streams",
                    pending.len()
                );
                next = now + Duration::from_millis(250).min(period);
            }
            Some(err) => {
                eprintln!("vxtap sim: refreshing {} leases: {err}", pending.len());
                next = now + Duration::from_millis(250).min(period);
            }
        }
    }
}

/// Reads commands from stdin until `quit` or its end.
fn commands(
    store: &EtcdStore,
    network: &Network,
    state: &Mutex<State>,
    round: &Mutex<()>,
    ttl: Duration,
) -> Result<(), SimError> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.map_err(|source| SimError::Io {
            what: "reading stdin",
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let (answer, quit) = match parse_command(&line) {
            Ok(SimCommand::Quit) => ("ok".to_owned(), true),
            Ok(command) => (answer(store, network, state, round, ttl, command), false),
            Err(why) => (format!("err {why}"), false),
        };
        writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .map_err(|source| SimError::Io {
                what: "writing stdout",
                source,
            })?;
        if quit {
            break;
        }
    }
    Ok(())
}

/// Carries out one command; its answer line.
fn answer(
    store: &EtcdStore,
    network: &Network,
    state: &Mutex<State>,
    round: &Mutex<()>,
    ttl: Duration,
    command: SimCommand,
) -> String {
    match command {
        SimCommand::Ping | SimCommand::Quit => "ok".to_owned(),
        SimCommand::Add(index) => {
            let prepared = {
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                let State { hosts, addresses } = &mut *state;
                match hosts.get_mut(index) {
                    None => Err(format!("no simulated host {index}")),
                    Some(host) => new_endpoint(addresses, network, &mut host.sim)
                        .map(|e| (e, host.sim.lease))
                        .map_err(|e| e.to_string()),
                }
            };
            let (endpoint, lease) = match prepared {
                Ok(prepared) => prepared,
                Err(why) => return format!("err {why}"),
            };
            let value = match to_json(&endpoint) {
                Ok(value) => value,
                Err(e) => return format!("err {e}"),
            };
            let key = endpoint.key();
            let before = wall_micros();
            match store.put_with_lease(&key, &value, lease) {
                Ok(()) => format!(
                    "ok {key} {} {} {}",
                    endpoint.ip,
                    endpoint.mac,
                    plan::seconds_text(before)
                ),
                Err(e) => format!("err {e}"),
            }
        }
        SimCommand::Del(key) => {
            if !key.starts_with(cluster::ENDPOINTS) {
                return format!("err {key:?} is not an endpoint key");
            }
            let before = wall_micros();
            match store.delete_key(&key) {
                Ok(true) => format!("ok {}", plan::seconds_text(before)),
                Ok(false) => format!("err no key {key}"),
                Err(e) => format!("err {e}"),
            }
        }
        SimCommand::Kill(index) => {
            let _round = round.lock().unwrap_or_else(PoisonError::into_inner);
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            match state.hosts.get_mut(index) {
                None => format!("err no simulated host {index}"),
                Some(host) => {
                    host.alive = false;
                    format!(
                        "ok {} {}",
                        plan::seconds_text(host.last_refresh),
                        ttl.as_secs()
                    )
                }
            }
        }
    }
}

/// Revokes every simulated host's lease (and so deletes their keys).
fn revoke_all(store: &EtcdStore, state: &Mutex<State>) {
    let leases: Vec<i64> = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .hosts
        .iter()
        .map(|h| h.sim.lease)
        .collect();
    for lease in leases {
        if let Err(e) = store.revoke_lease(lease) {
            eprintln!("vxtap sim: revoking lease {lease}: {e}");
        }
    }
}

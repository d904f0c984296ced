//! Reconciliation: bringing this host's overlays in line with the store. Overlay namespaces
//! with br0 and the TAP link, the static fdb and ARP proxy entries of every remote endpoint,
//! the containers' hosts files, and publishing this host's own records.

use super::{
    link_name, lock, overlay_name, record_path, to_json, Agent, AgentError, Overlay, State,
};
use crate::api::{FdbMode, FdbSpec, LinkSpec, Request};
use crate::cluster::validate::Applied;
use crate::cluster::{Endpoint, Host, Network, Snapshot};
use crate::plumbing::{self, hosts, overlay};
use crate::store::{Committed, Lifetime, Listing, Store, StoreError, Txn};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

/// What a hosts file's lines come from: the networks whose endpoints it names, and local
/// endpoints the records do not show yet (address, name).
type Lines = (BTreeSet<String>, BTreeSet<(Ipv4Addr, String)>);

fn overlay_ip(path: &std::path::Path, args: &[&str]) -> Result<(), plumbing::PlumbingError> {
    plumbing::ip(path, args).map(|_| ())
}

impl Agent {
    /// Creates or adopts the overlay namespace, br0 and the TAP link of `network`.
    pub(super) fn ensure_overlay(
        &self,
        state: &mut State,
        network: &Network,
    ) -> Result<(), AgentError> {
        let path = self.overlay_dir().join(overlay_name(&network.id));
        let link = link_name(network.vni);
        let present = state.overlays.contains_key(&network.id);
        let link_alive = lock(&self.links).contains(&link);
        if present && link_alive && plumbing::netns::is_bound(&path) {
            if let Some(o) = state.overlays.get_mut(&network.id) {
                if o.resolver.is_none() {
                    o.resolver = self.start_resolver(&path, &network.id);
                }
            }
            return Ok(());
        }
        plumbing::netns::create(&path)?;
        overlay::ensure_bridge(
            &path,
            network.gateway,
            network.subnet.prefix_len(),
            network.mtu,
        )?;
        if !link_alive {
            let spec = LinkSpec {
                name: link.clone(),
                vni: network.vni,
                local: Some(self.config.vtep),
                dstport: lock(&self.links).port(),
                netns: Some(path.to_string_lossy().into_owned()),
                proxy: true,
                learning: false,
                ageing: 300,
                maxaddress: 1024,
                mtu: network.mtu,
                admit_any: false,
                offload: true,
            };
            // The TAP is made with the links lock released: `stats` and ageing go on.
            crate::daemon::links::apply(&self.links, Request::LinkAdd { spec })
                .map_err(|e| AgentError::Dataplane(e.to_string()))?;
        }
        if let Err(e) = overlay::attach(&path, &link) {
            let _ = lock(&self.links).handle(Request::LinkDel { name: link.clone() });
            return Err(e.into());
        }
        let resolver = self.start_resolver(&path, &network.id);
        tracing::info!(network = %network.name, netns = %path.display(), link = %link, adopted = present, resolver = resolver.is_some(), "overlay ready");
        // A new link starts with empty tables: forget what the old one had.
        state.overlays.insert(
            network.id.clone(),
            Overlay {
                network: network.clone(),
                netns: path,
                link,
                fdb: BTreeMap::new(),
                neigh: BTreeMap::new(),
                bridged: BTreeSet::new(),
                resolver,
            },
        );
        Ok(())
    }

    /// Starts the resolver of the overlay namespace at `path` (network `network_id`), when
    /// names are served: its address on `lo`, then its sockets. A failure is logged, not
    /// fatal: forwarding does not depend on it, and the next reconcile tries again.
    fn start_resolver(
        &self,
        path: &std::path::Path,
        network_id: &str,
    ) -> Option<Arc<crate::dns::Resolver>> {
        let upstreams = self.config.resolver.as_ref()?;
        let listen = crate::dns::RESOLVER_ADDR;
        let address = format!("{}/32", listen.ip());
        let started = overlay_ip(path, &["addr", "replace", &address, "dev", "lo"])
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let names = crate::docker::names::OverlayNames {
                    network: network_id.to_owned(),
                    host: self.config.host.clone(),
                    latest: Arc::clone(&self.latest),
                };
                let config = crate::dns::ResolverConfig {
                    listen,
                    upstreams: upstreams.clone(),
                    ttl: 0,
                };
                crate::dns::Resolver::start(path, config, Arc::new(names))
                    .map_err(|e| e.to_string())
            });
        match started {
            Ok(resolver) => {
                let resolver = Arc::new(resolver);
                super::lock(&self.resolvers)
                    .insert(network_id.to_owned(), Arc::downgrade(&resolver));
                Some(resolver)
            }
            Err(e) => {
                tracing::warn!(netns = %path.display(), error = %e, "starting the overlay's resolver");
                None
            }
        }
    }

    /// Removes the overlay of `network_id`: its link (TAP) and its namespace (br0 and the
    /// overlay ends of any veth go with it).
    pub(super) fn teardown(&self, state: &mut State, network_id: &str) {
        let path = self.overlay_dir().join(overlay_name(network_id));
        if let Some(mut o) = state.overlays.remove(network_id) {
            if let Err(e) = lock(&self.links).handle(Request::LinkDel {
                name: o.link.clone(),
            }) {
                tracing::warn!(link = %o.link, error = %e, "removing overlay link");
            }
            // Stopping a resolver waits for its threads (a forward may be pending): not
            // while the state is locked.
            if let Some(resolver) = o.resolver.take() {
                let stopped = std::thread::Builder::new()
                    .name("vxtap-dns-stop".into())
                    .spawn(move || drop(resolver));
                if let Err(e) = stopped {
                    tracing::warn!(error = %e, "stopping a resolver on a thread of its own; stopping it here");
                }
            }
        }
        if let Err(e) = plumbing::netns::remove(&path) {
            tracing::warn!(error = %e, "removing overlay namespace");
        } else {
            tracing::info!(netns = %path.display(), "overlay removed");
        }
    }

    /// Programs every remote endpoint of the network as a static fdb entry plus an ARP proxy
    /// entry, and removes entries of endpoints that are gone.
    pub(super) fn sync_entries(&self, state: &mut State, network_id: &str, snapshot: &Snapshot) {
        // The whole network is compared below, queued br0 changes included.
        state.br0_pending.remove(network_id);
        let Some(o) = state.overlays.get_mut(network_id) else {
            return;
        };
        let remote: Vec<&Endpoint> = snapshot
            .endpoints_of(network_id)
            .filter(|e| e.host != self.config.host)
            .collect();
        let want_fdb: BTreeMap<String, Ipv4Addr> =
            remote.iter().map(|e| (e.mac.clone(), e.vtep)).collect();
        let want_neigh: BTreeMap<Ipv4Addr, String> =
            remote.iter().map(|e| (e.ip, e.mac.clone())).collect();
        let mut links = lock(&self.links);
        let mut apply = |request: Request| -> bool {
            match links.handle(request) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(link = %o.link, error = %e, "programming the overlay");
                    false
                }
            }
        };
        for (mac, _) in o
            .fdb
            .clone()
            .iter()
            .filter(|(m, _)| !want_fdb.contains_key(*m))
        {
            let entry = FdbSpec {
                mac: mac.clone(),
                dev: o.link.clone(),
                dst: None,
                vni: None,
                port: None,
            };
            if apply(Request::FdbDel { entry }) {
                o.fdb.remove(mac);
            }
        }
        for (ip, _) in o
            .neigh
            .clone()
            .iter()
            .filter(|(i, _)| !want_neigh.contains_key(*i))
        {
            if apply(Request::NeighDel {
                ip: *ip,
                dev: o.link.clone(),
            }) {
                o.neigh.remove(ip);
            }
        }
        for (mac, vtep) in &want_fdb {
            if o.fdb.get(mac) != Some(vtep) {
                let entry = FdbSpec {
                    mac: mac.clone(),
                    dev: o.link.clone(),
                    dst: Some(*vtep),
                    vni: None,
                    port: None,
                };
                if apply(Request::FdbAdd {
                    entry,
                    mode: FdbMode::Replace,
                }) {
                    o.fdb.insert(mac.clone(), *vtep);
                }
            }
        }
        for (ip, mac) in &want_neigh {
            if o.neigh.get(ip) != Some(mac)
                && apply(Request::NeighAdd {
                    ip: *ip,
                    mac: mac.clone(),
                    dev: o.link.clone(),
                })
            {
                o.neigh.insert(*ip, mac.clone());
            }
        }
        drop(links);
        let add: Vec<&str> = want_fdb
            .keys()
            .filter(|m| !o.bridged.contains(*m))
            .map(String::as_str)
            .collect();
        let del: Vec<&str> = o
            .bridged
            .iter()
            .filter(|m| !want_fdb.contains_key(*m))
            .map(String::as_str)
            .collect();
        match overlay::bridge_remote(&o.netns, &o.link, &add, &del) {
            Ok(()) => o.bridged = want_fdb.keys().cloned().collect(),
            Err(e) => {
                tracing::warn!(link = %o.link, error = %e, "programming br0 for remote endpoints")
            }
        }
        o.network = snapshot
            .networks
            .get(network_id)
            .cloned()
            .unwrap_or_else(|| o.network.clone());
    }

    /// Brings every overlay in line with `snapshot` and the local endpoints.
    pub(super) fn reconcile(&self, state: &mut State, snapshot: &Snapshot) {
        let wanted: BTreeSet<String> = state.local.values().map(|e| e.network.clone()).collect();
        for id in &wanted {
            let Some(network) = snapshot.networks.get(id) else {
                tracing::warn!(network = %id, "a local endpoint's network is not in the store");
                continue;
            };
            match self.ensure_overlay(state, network) {
                Ok(()) => self.sync_entries(state, id, snapshot),
                Err(e) => {
                    tracing::error!(network = %network.name, error = %e, "setting up the overlay")
                }
            }
        }
        let unwanted: Vec<String> = state
            .overlays
            .keys()
            .filter(|id| !wanted.contains(*id))
            .cloned()
            .collect();
        for id in unwanted {
            self.teardown(state, &id);
        }
        self.write_hosts_files(state, snapshot, None);
    }

    /// Rewrites every hosts file from the accepted records if they lag them and the last
    /// rewrite is [`super::HOSTS_EVERY`] old.
    pub(super) fn refresh_hosts_files(&self, state: &mut State) {
        let due = state
            .hosts_written
            .is_none_or(|at| at.elapsed() >= super::HOSTS_EVERY);
        if state.hosts_stale && due {
            let snapshot = self.latest();
            self.write_hosts_files(state, &snapshot, None);
        }
    }

    /// Programs the remote endpoints added or removed by `applied` into the overlays of
    /// their networks served here, as [`Self::sync_entries`] would for the whole network:
    /// the link's fdb and ARP proxy at once; br0's static entries are queued for
    /// [`Self::flush_br0`].
    pub(super) fn program_remote(&self, state: &mut State, applied: &[Applied]) {
        let mut links = lock(&self.links);
        for change in applied {
            let (e, present) = match change {
                Applied::Added(e) => (e, true),
                Applied::Removed(e) => (e, false),
            };
            if e.host == self.config.host {
                continue;
            }
            let Some(o) = state.overlays.get_mut(&e.network) else {
                continue;
            };
            let mut apply = |request: Request| -> bool {
                match links.handle(request) {
                    Ok(_) => true,
                    Err(err) => {
                        tracing::warn!(link = %o.link, error = %err, "programming the overlay");
                        false
                    }
                }
            };
            let (add, del) = state.br0_pending.entry(e.network.clone()).or_default();
            if present {
                let entry = FdbSpec {
                    mac: e.mac.clone(),
                    dev: o.link.clone(),
                    dst: Some(e.vtep),
                    vni: None,
                    port: None,
                };
                if apply(Request::FdbAdd {
                    entry,
                    mode: FdbMode::Replace,
                }) {
                    o.fdb.insert(e.mac.clone(), e.vtep);
                }
                let neigh = Request::NeighAdd {
                    ip: e.ip,
                    mac: e.mac.clone(),
                    dev: o.link.clone(),
                };
                if apply(neigh) {
                    o.neigh.insert(e.ip, e.mac.clone());
                }
                del.remove(&e.mac);
                add.insert(e.mac.clone());
            } else {
                let entry = FdbSpec {
                    mac: e.mac.clone(),
                    dev: o.link.clone(),
                    dst: None,
                    vni: None,
                    port: None,
                };
                if o.fdb.contains_key(&e.mac) && apply(Request::FdbDel { entry }) {
                    o.fdb.remove(&e.mac);
                }
                let neigh = Request::NeighDel {
                    ip: e.ip,
                    dev: o.link.clone(),
                };
                if o.neigh.get(&e.ip) == Some(&e.mac) && apply(neigh) {
                    o.neigh.remove(&e.ip);
                }
                add.remove(&e.mac);
                del.insert(e.mac.clone());
            }
        }
    }

    /// Applies the queued br0 entries of remote endpoints ([`Self::program_remote`]), one
    /// `bridge -batch` per overlay, at most every [`super::BR0_EVERY`] unless `now`: a
    /// stream of changes costs each host a few processes a second, not one per change.
    /// Forwarding does not wait for them: until its static entry is there, br0 floods a
    /// frame for a remote MAC to the TAP too.
    pub(super) fn flush_br0(&self, state: &mut State, now: bool) {
        let due = state
            .br0_flushed
            .is_none_or(|at| at.elapsed() >= super::BR0_EVERY);
        if state.br0_pending.is_empty() || !(now || due) {
            return;
        }
        state.br0_flushed = Some(std::time::Instant::now());
        for (network, (add, del)) in std::mem::take(&mut state.br0_pending) {
            let Some(o) = state.overlays.get_mut(&network) else {
                continue;
            };
            let add_refs: Vec<&str> = add.iter().map(String::as_str).collect();
            let del_refs: Vec<&str> = del.iter().map(String::as_str).collect();
            match overlay::bridge_remote(&o.netns, &o.link, &add_refs, &del_refs) {
                Ok(()) => {
                    for mac in del {
                        o.bridged.remove(&mac);
                    }
                    o.bridged.extend(add);
                }
                Err(e) => {
                    tracing::warn!(link = %o.link, error = %e, "programming br0 for remote endpoints")
                }
            }
        }
    }

    /// Writes `/etc/netns/NAME/hosts` for every named namespace with a local endpoint, and
    /// removes the ones we wrote for namespaces that have none left; with `only`, just the
    /// file of that namespace (as an endpoint names it), removing nothing.
    pub(super) fn write_hosts_files(
        &self,
        state: &mut State,
        snapshot: &Snapshot,
        only: Option<&str>,
    ) {
        // Per file: its namespace's name and what its lines are made of (the networks of its
        // endpoints, and those endpoints themselves, which the store may not show yet).
        let mut files: BTreeMap<PathBuf, (String, Lines)> = BTreeMap::new();
        // Docker containers resolve names through Docker's DNS and vxtap's resolver.
        let wanted = |e: &&Endpoint| !super::is_docker(e) && only.is_none_or(|n| e.netns == n);
        for e in state.local.values().filter(wanted) {
            let Some(path) = hosts::path_for(&e.netns) else {
                continue;
            };
            let (_, (networks, own)) = files
                .entry(path)
                .or_insert_with(|| (e.netns.clone(), Lines::default()));
            networks.insert(e.network.clone());
            let shown = snapshot
                .endpoints
                .get(&(e.network.clone(), e.id.clone()))
                .is_some_and(|s| s.name == e.name && s.ip == e.ip);
            if !shown {
                own.insert((e.ip, e.name.clone()));
            }
        }
        // Containers on the same networks share their lines: rendered once.
        let mut bodies: BTreeMap<&Lines, String> = BTreeMap::new();
        for (_, lines) in files.values() {
            bodies.entry(lines).or_insert_with(|| {
                let (networks, own) = lines;
                let mut peers: Vec<(Ipv4Addr, String)> = own.iter().cloned().collect();
                for network in networks {
                    peers.extend(snapshot.endpoints_of(network).flat_map(|p| {
                        std::iter::once(&p.name)
                            .chain(&p.aliases)
                            .map(|name| (p.ip, name.clone()))
                    }));
                }
                hosts::body(&peers)
            });
        }
        for (path, (netns, lines)) in &files {
            let content = hosts::with_header(netns, &bodies[lines]);
            if state.hosts_files.get(path) == Some(&content) {
                continue;
            }
            // Readable by every process in the container, as /etc/hosts is.
            match plumbing::write_atomically(path, content.as_bytes(), 0o644) {
                Ok(()) => {
                    state.hosts_files.insert(path.clone(), content);
                }
                Err(e) => tracing::warn!(error = %e, "writing a hosts file"),
            }
        }
        if only.is_some() {
            return;
        }
        state.hosts_stale = false;
        state.hosts_written = Some(std::time::Instant::now());
        let stale: Vec<PathBuf> = state
            .hosts_files
            .keys()
            .filter(|p| !files.contains_key(*p))
            .cloned()
            .collect();
        for path in stale {
            if let Err(e) = hosts::remove(&path) {
                tracing::warn!(error = %e, "removing a hosts file");
            }
            state.hosts_files.remove(&path);
        }
    }

    pub(super) fn save_record(&self, state: &State) -> Result<(), AgentError> {
        let endpoints: Vec<&Endpoint> = state.local.values().collect();
        // root's alone: it is published to the store after a restart.
        Ok(plumbing::write_atomically(
            &record_path(&self.config.run_dir),
            &to_json(&endpoints),
            0o600,
        )?)
    }

    /// What this host has to write: whether its host record is as the store holds it, and
    /// the local endpoints the store does not hold as written (all of them once per session).
    /// Compared with what the store holds byte for byte, not with what passed the checks: a
    /// record of ours that the checks refuse (an older record holds its MAC, say) is not
    /// written again and again; the refusal is logged and counted.
    fn unpublished<'a>(
        state: &'a State,
        listing: &Listing,
        epoch: u64,
        host: &Host,
    ) -> (bool, Vec<&'a Endpoint>) {
        let session_fresh = state.published_epoch == Some(epoch);
        let stored = |key: &str| {
            listing
                .entries
                .iter()
                .find(|entry| entry.key == key)
                .map(|entry| entry.value.as_slice())
        };
        let missing = state
            .local
            .values()
            .filter(|e| !session_fresh || stored(&e.key()) != Some(to_json(*e).as_slice()))
            .collect();
        let host_ok = session_fresh && stored(&host.key()) == Some(to_json(host).as_slice());
        (host_ok, missing)
    }

    /// Publishes this host and every local endpoint the store does not hold as written (after
    /// a restart, or after the session expired). Returns whether it wrote anything: an
    /// endpoint it cannot publish (its network is gone, its name, IP or MAC taken) is skipped
    /// and writes nothing, so the caller does not list and publish again for ever.
    ///
    /// No cluster lock: each endpoint is written with its claims ([`claims`]), created if
    /// missing (so a store written before claims is migrated by its hosts as they start)
    /// and refused if another endpoint holds them. The state is held throughout, so a
    /// disconnect meanwhile is not undone.
    pub(super) fn publish(&self, store: &dyn Store, listing: &Listing) -> Result<bool, StoreError> {
        let epoch = store.session_epoch();
        let host = self.host_record();
        let mut state = lock(&self.state);
        let (host_ok, missing) = Self::unpublished(&state, listing, epoch, &host);
        if host_ok && missing.is_empty() {
            return Ok(false);
        }
        // Again from the store: the listing may be older than the state.
        let listing = super::read_scope(&mut |p: &str| store.list(p), &state.served(), None)?;
        let current = self.check_records(&listing);
        let (host_ok, missing) = Self::unpublished(&state, &listing, epoch, &host);
        let mut wrote = false;
        if !host_ok {
            let txn = Txn::new().put(host.key(), &to_json(&host), Lifetime::Session);
            store.commit(&txn)?;
            wrote = true;
        }
        for e in missing {
            if !current.networks.contains_key(&e.network) {
                tracing::warn!(endpoint = %e.name, network = %e.network, "not republishing: the network is gone from the store");
                continue;
            }
            // Records from before claims hold no claim: check them as before.
            let clash = current
                .endpoints_of(&e.network)
                .find(|o| o.id != e.id && (o.ip == e.ip || o.name == e.name || o.mac == e.mac));
            if let Some(o) = clash {
                tracing::error!(endpoint = %e.name, ip = %e.ip, other = %o.name, other_host = %o.host, "not republishing: its name, IP or MAC was taken while it was away");
                continue;
            }
            match super::claim::republish(store, e)? {
                Committed::Done { .. } => {
                    wrote = true;
                    tracing::info!(endpoint = %e.name, ip = %e.ip, "endpoint published");
                }
                Committed::Conflict { key, found } => {
                    let holder = found.map(|f| String::from_utf8_lossy(&f.value).into_owned());
                    tracing::error!(endpoint = %e.name, ip = %e.ip, claim = %key, holder = ?holder, "not republishing: its name or IP was claimed while it was away");
                }
            }
        }
        state.published_epoch = Some(epoch);
        Ok(wrote)
    }
}

//! What the Docker driver asks of the agent: networks created and removed in the store,
//! addresses claimed and released (an endpoint record per address, so two hosts never hand
//! out the same one), the veth pair Docker moves into the container, and the container's
//! names once Docker has told them.
//!
//! Same rules as `connect`: the store's cluster lock before the agent's state, records
//! checked like everything else read from the store, nothing left half-made on failure.

use super::{lock, now_secs, read_scope, Agent, AgentError, State};
use crate::cluster::{self, Endpoint, EndpointRequest, Network, NetworkRequest};
use crate::plumbing::overlay;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The namespace field of a Docker endpoint: `docker:` and the container's id once known.
pub const DOCKER_NETNS: &str = "docker:";

/// Whether `e` was made for Docker.
pub fn is_docker(e: &Endpoint) -> bool {
    e.netns.starts_with(DOCKER_NETNS)
}

/// The name a Docker endpoint has until Docker says which container holds it: unique
/// because its IP is.
fn provisional_name(ip: Ipv4Addr) -> String {
    format!("docker-{}", ip.to_string().replace('.', "-"))
}

/// Whether Docker endpoint `e` still has its provisional name (its container not known).
pub fn is_provisional(e: &Endpoint) -> bool {
    is_docker(e) && e.aliases.is_empty() && e.name == provisional_name(e.ip)
}

/// The veth tag of an endpoint: its id's first 8 digits.
pub fn tag_of(e: &Endpoint) -> &str {
    e.id.get(..8).unwrap_or(&e.id)
}

impl Agent {
    /// The store's records that pass the checks, listed now.
    ///
    /// # Errors
    ///
    /// The store is unreachable.
    pub fn snapshot(&self) -> Result<cluster::Snapshot, AgentError> {
        let store = self.store()?;
        let served = lock(&self.state).served();
        Ok(self.check_records(&read_scope(&mut |p: &str| store.list(p), &served, None)?))
    }

    /// The records that passed the checks at the last listing, without asking the store.
    pub fn latest(&self) -> Arc<cluster::Snapshot> {
        Arc::clone(
            &self
                .latest
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// How often the accepted records changed since the daemon started: a reader that acts
    /// on changes compares it with what it saw last.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Checks that a network like `request` could be created now, writing nothing.
    ///
    /// # Errors
    ///
    /// What `network create` would refuse (VNI in use, overlapping subnet, ...).
    pub fn docker_check_network(
        &self,
        request: &NetworkRequest,
        id: &str,
    ) -> Result<(), AgentError> {
        let snapshot = self.snapshot()?;
        cluster::plan_network(&snapshot, request, id.to_owned(), now_secs())?;
        Ok(())
    }

    /// Creates network `id` as `request` asks, under the cluster lock. A network that already
    /// exists with this id is returned as it is (a retry).
    ///
    /// # Errors
    ///
    /// What `network create` refuses, or the store's failure.
    pub fn docker_create_network(
        &self,
        request: &NetworkRequest,
        id: &str,
    ) -> Result<Network, AgentError> {
        let store = self.store()?;
        // The state before the lock, as in `network create`.
        let served = lock(&self.state).served();
        let mut locked = store.lock(super::LOCK_TIMEOUT)?;
        let snapshot =
            self.check_records(&read_scope(&mut |p: &str| locked.list(p), &served, None)?);
        if let Some(n) = snapshot.networks.get(id) {
            return Ok(n.clone());
        }
        let network = cluster::plan_network(&snapshot, request, id.to_owned(), now_secs())?;
        Self::create_network(locked.as_mut(), &network, &snapshot)?;
        tracing::info!(name = %network.name, id = %network.id, vni = network.vni, subnet = %network.subnet, "network created for Docker");
        Ok(network)
    }

    /// Removes network `id` from the store, refused while it has endpoints on any host.
    /// Returns the network removed, or `None` if the store holds none with this id.
    ///
    /// # Errors
    ///
    /// `NetworkInUse`, or the store's failure.
    pub fn docker_remove_network(&self, id: &str) -> Result<Option<Network>, AgentError> {
        let store = self.store()?;
        let served = lock(&self.state).served();
        let mut locked = store.lock(super::LOCK_TIMEOUT)?;
        let snapshot = self.check_records(&read_scope(
            &mut |p: &str| locked.list(p),
            &served,
            Some(id),
        )?);
        if !snapshot.networks.contains_key(id) {
            return Ok(None);
        }
        let network = cluster::plan_network_removal(&snapshot, id)?.clone();
        Self::remove_network(locked.as_mut(), &network, &snapshot)?;
        tracing::info!(name = %network.name, id = %network.id, "network removed by Docker");
        Ok(Some(network))
    }

    /// Claims an address on network `network_id` for a Docker container: `ip`, or the first
    /// free one. The claim is an endpoint record of this host, published at once.
    ///
    /// # Errors
    ///
    /// `UnknownNetwork`, `IpOutside`, `DuplicateIp`, `Exhausted`, or the store's failure.
    pub fn docker_claim(
        &self,
        network_id: &str,
        ip: Option<Ipv4Addr>,
    ) -> Result<Endpoint, AgentError> {
        let store = self.store()?;
        let mut state = lock(&self.state);
        let view = self.planning_snapshot(store.as_ref(), &state, network_id)?;
        let network = view.require_network(network_id)?.clone();
        let id = cluster::new_id().map_err(AgentError::Random)?;
        let request = EndpointRequest {
            // Replaced once the IP is known; random, so it clashes with no name.
            name: format!("docker-claim-{}", id.get(..16).unwrap_or(&id)),
            ip,
            netns: format!("{DOCKER_NETNS}{}", id.get(..12).unwrap_or(&id)),
            host: self.config.host.clone(),
            vtep: self.config.vtep,
        };
        // Named after its address until Docker names it (a name another endpoint holds is
        // refused by the claim).
        let endpoint = self.claim_endpoint(
            store.as_ref(),
            &state,
            &view,
            &network,
            &request,
            &|e| {
                e.name = provisional_name(e.ip);
                e.ifname = "eth".to_owned();
            },
            cluster::claims::endpoint_txn,
        )?;
        state.local.insert(endpoint.key(), endpoint.clone());
        if let Err(e) = self.save_record(&state) {
            state.local.remove(&endpoint.key());
            self.release_after_failure(store.as_ref(), &endpoint);
            return Err(e);
        }
        tracing::info!(network = %network.name, ip = %endpoint.ip, "address claimed for Docker");
        Ok(endpoint)
    }

    /// This host's Docker claims.
    pub fn docker_claims(&self) -> Vec<Endpoint> {
        lock(&self.state)
            .local
            .values()
            .filter(|e| is_docker(e))
            .cloned()
            .collect()
    }

    /// This host's Docker endpoint with address `ip` on network `network_id`.
    pub fn docker_endpoint(&self, network_id: &str, ip: Ipv4Addr) -> Option<Endpoint> {
        lock(&self.state)
            .local
            .values()
            .find(|e| e.network == network_id && e.ip == ip && is_docker(e))
            .cloned()
    }

    /// This host's endpoint stored under `key`.
    pub fn local_endpoint_by_key(&self, key: &str) -> Option<Endpoint> {
        lock(&self.state).local.get(key).cloned()
    }

    /// The network of this host's endpoints whose subnet is `subnet`, as its overlay was
    /// set up (for a network whose record is already gone).
    pub fn local_network_with(&self, subnet: crate::cluster::ipam::Subnet) -> Option<String> {
        lock(&self.state)
            .overlays
            .values()
            .find(|o| o.network.subnet == subnet)
            .map(|o| o.network.id.clone())
    }

    /// The gateway of network `id` as its overlay here was set up.
    pub fn overlay_gateway(&self, id: &str) -> Option<Ipv4Addr> {
        lock(&self.state)
            .overlays
            .get(id)
            .map(|o| o.network.gateway)
    }

    /// Releases this host's claim of `ip` on `network_id`: its record leaves the store, and
    /// the overlay goes when no local endpoint needs it. A claim already gone is fine.
    ///
    /// # Errors
    ///
    /// The store's failure (the claim stays).
    pub fn docker_release(&self, network_id: &str, ip: Ipv4Addr) -> Result<(), AgentError> {
        let Some(endpoint) = self.docker_endpoint(network_id, ip) else {
            return Ok(());
        };
        let store = self.store()?;
        let mut state = lock(&self.state);
        self.release_endpoint(store.as_ref(), &endpoint)?;
        state.local.remove(&endpoint.key());
        if let Err(e) = self.save_record(&state) {
            tracing::error!(error = %e, "updating the endpoint record after a release");
        }
        self.docker_teardown_if_unused(&mut state, &endpoint);
        tracing::info!(ip = %endpoint.ip, name = %endpoint.name, "address released by Docker");
        Ok(())
    }

    fn docker_teardown_if_unused(&self, state: &mut State, endpoint: &Endpoint) {
        self.remove_veth(endpoint);
        if !state.local.values().any(|e| e.network == endpoint.network) {
            self.teardown(state, &endpoint.network);
        }
    }

    /// Makes the veth pair of the claimed endpoint `endpoint` (and its overlay, if this is
    /// the network's first endpoint here); its inner end is named by
    /// [`overlay::docker_veth_names`], for Docker to move.
    ///
    /// # Errors
    ///
    /// The overlay or a plumbing step failed; nothing new is left.
    pub fn docker_plumb(&self, endpoint: &Endpoint) -> Result<(), AgentError> {
        let snapshot = self.snapshot()?;
        let network = snapshot.require_network(&endpoint.network)?.clone();
        let mut state = lock(&self.state);
        if !state.local.contains_key(&endpoint.key()) {
            return Err(AgentError::Dataplane(format!(
                "address {} on network {} was released meanwhile",
                endpoint.ip, network.name
            )));
        }
        let had_overlay = state.overlays.contains_key(&network.id);
        self.ensure_overlay(&mut state, &network).inspect_err(|_| {
            if !had_overlay {
                self.teardown(&mut state, &network.id);
            }
        })?;
        self.sync_entries(&mut state, &network.id, &snapshot);
        let netns = state
            .overlays
            .get(&network.id)
            .map(|o| o.netns.clone())
            .ok_or_else(|| AgentError::Dataplane("overlay vanished".to_owned()))?;
        overlay::docker_veth(&netns, tag_of(endpoint), &endpoint.mac, network.mtu)?;
        Ok(())
    }

    /// Removes the veth pair of `endpoint` (Docker's DeleteEndpoint); the claim stays until
    /// Docker releases the address.
    pub fn docker_unplumb(&self, endpoint: &Endpoint) {
        let _state = lock(&self.state);
        self.remove_veth(endpoint);
    }

    /// Removes `endpoint`'s veth pair, whether or not its overlay has been set up again
    /// since the daemon started (the namespace's path is known either way).
    fn remove_veth(&self, endpoint: &Endpoint) {
        let netns = self
            .overlay_dir()
            .join(super::overlay_name(&endpoint.network));
        if let Err(e) = overlay::remove_docker_veth(&netns, tag_of(endpoint)) {
            tracing::warn!(error = %e, "removing a Docker endpoint's veth pair");
        }
    }

    /// Names this host's Docker endpoint `key` after its container: `names[0]` (the
    /// container's name) becomes its name unless another endpoint of the network holds it,
    /// and every name becomes an alias. `container` is the container's id.
    ///
    /// # Errors
    ///
    /// The endpoint is gone, or the store failed.
    pub fn docker_rename(
        &self,
        key: &str,
        names: &[String],
        container: &str,
    ) -> Result<Endpoint, AgentError> {
        let store = self.store()?;
        let mut state = lock(&self.state);
        let Some(old) = state.local.get(key).cloned() else {
            return Err(AgentError::Dataplane(
                "the endpoint was released meanwhile".to_owned(),
            ));
        };
        let snapshot = self.planning_snapshot(store.as_ref(), &state, &old.network)?;
        let mut seen = std::collections::BTreeSet::new();
        let names: Vec<String> = names
            .iter()
            .filter(|n| cluster::check_name("alias", n).is_ok() && seen.insert(n.as_str()))
            .take(crate::cluster::validate::MAX_ALIASES)
            .cloned()
            .collect();
        let name = names
            .first()
            .filter(|n| {
                !snapshot
                    .endpoints_of(&old.network)
                    .any(|o| o.id != old.id && o.name == **n)
            })
            .cloned()
            .unwrap_or_else(|| old.name.clone());
        let mut renamed = Endpoint {
            name,
            aliases: names,
            netns: format!("{DOCKER_NETNS}{}", container.get(..12).unwrap_or(container)),
            ..old.clone()
        };
        if renamed == old {
            return Ok(old);
        }
        self.commit_rename(store.as_ref(), &snapshot, &old, &mut renamed)?;
        state.local.insert(key.to_owned(), renamed.clone());
        if let Err(e) = self.save_record(&state) {
            tracing::error!(error = %e, "saving the endpoint record after a rename");
        }
        tracing::info!(ip = %renamed.ip, name = %renamed.name, aliases = ?renamed.aliases, "Docker endpoint named");
        Ok(renamed)
    }

    /// Commits the rename of `old` to `renamed` (name, aliases and namespace only). A new
    /// name another endpoint claimed meanwhile is given up: `renamed` keeps `old`'s name. A
    /// record from before claims has its claims written first.
    fn commit_rename(
        &self,
        store: &dyn crate::store::Store,
        snapshot: &cluster::Snapshot,
        old: &Endpoint,
        renamed: &mut Endpoint,
    ) -> Result<(), AgentError> {
        use crate::cluster::claims;
        use crate::store::Committed;
        let ip_claim = claims::ip_claim(&old.network, old.ip);
        let new_name = claims::name_claim(&old.network, &renamed.name);
        // At most: claim an old record, then give up a taken name, then done.
        for _ in 0..3 {
            let txn = claims::rename_txn(old, renamed).ok_or_else(|| {
                AgentError::Dataplane("a rename may change only names and the namespace".into())
            })?;
            match store.commit(&txn)? {
                Committed::Done { .. } => return Ok(()),
                Committed::Conflict { key, found: None } if key == ip_claim => {
                    super::claim::refused(super::claim::republish(store, old)?, snapshot)?;
                }
                Committed::Conflict { key, .. } if key == new_name && renamed.name != old.name => {
                    tracing::info!(name = %renamed.name, "the name is another endpoint's; keeping the address's");
                    renamed.name = old.name.clone();
                }
                conflict => super::claim::refused(conflict, snapshot)?,
            }
        }
        Err(AgentError::Dataplane(format!(
            "renaming {} kept conflicting",
            old.name
        )))
    }
}

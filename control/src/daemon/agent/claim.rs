//! Writing endpoints without the cluster lock: a connect plans from what this host already
//! knows, then claims its IP and name with create-if-absent txns ([`claims`]); the store,
//! not a lock holder's read, tells two hosts claiming the same address apart. Hosts connect
//! in parallel, and nothing is locked cluster-wide while a container is plumbed.

use super::{read_scope, Agent, AgentError, State};
use crate::cluster::{self, claims, ClusterError, Endpoint, EndpointRequest, Network, Snapshot};
use crate::store::{Committed, Store, Txn};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// How many addresses a connect claims before it gives up: each lost claim means another
/// host took that address at the same moment, and the next try starts at a random place.
const CLAIM_ATTEMPTS: usize = 8;

/// The error a conflict means, its holder named from `snapshot`.
pub(super) fn refused(committed: Committed, snapshot: &Snapshot) -> Result<(), AgentError> {
    match committed {
        Committed::Done { .. } => Ok(()),
        Committed::Conflict { key, found } => {
            Err(claims::conflict_error(&key, found.as_ref(), snapshot).into())
        }
    }
}

/// The `attempt`th random search start of endpoint id `id` (64 hex digits, random).
fn search_start(id: &str, attempt: usize) -> u32 {
    let digits = id.get(attempt * 8 % 64..).and_then(|s| s.get(..8));
    digits
        .and_then(|d| u32::from_str_radix(d, 16).ok())
        .unwrap_or(0)
}

impl Agent {
    /// What a request on network `network` (name or id) plans from: this host's view when it
    /// serves the network already (kept current by the watch: no store read, no copy), else
    /// the store's records of that network. The newest of this host's own endpoints may not
    /// be in it yet: [`local_ips`] gives their addresses to avoid. A view that is a little
    /// behind is safe: a claim it missed makes the commit fail, not the store inconsistent.
    ///
    /// # Errors
    ///
    /// The store's failure when the network has to be read.
    pub(super) fn planning_snapshot(
        &self,
        store: &dyn Store,
        state: &State,
        network: &str,
    ) -> Result<Arc<Snapshot>, AgentError> {
        let latest = self.latest();
        let served = latest
            .network(network)
            .is_some_and(|n| state.overlays.contains_key(&n.id));
        if served {
            return Ok(latest);
        }
        drop(latest);
        Ok(Arc::new(self.check_records(&read_scope(
            &mut |p: &str| store.list(p),
            &state.served(),
            Some(network),
        )?)))
    }

    /// Plans an endpoint for `request` on `network` from `snapshot`, lets `finish` complete
    /// it, and commits `txn` of it (a reservation, or the endpoint with its claims). An
    /// allocated IP lost to another host's claim is planned again, away from it and from a
    /// random start; a requested IP or a name that is taken is an error. Returns the
    /// endpoint the store now holds claims for.
    ///
    /// # Errors
    ///
    /// What planning refuses, the conflict's error, `Exhausted` after [`CLAIM_ATTEMPTS`]
    /// lost races, or the store's failure.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn claim_endpoint(
        &self,
        store: &dyn Store,
        state: &State,
        snapshot: &Snapshot,
        network: &Network,
        request: &EndpointRequest,
        finish: &dyn Fn(&mut Endpoint),
        txn: fn(&Endpoint) -> Txn,
    ) -> Result<Endpoint, AgentError> {
        let id = cluster::new_id().map_err(AgentError::Random)?;
        // This host's own endpoints, which the view may not show yet, and then the addresses
        // found claimed meanwhile.
        let mut lost: Vec<Ipv4Addr> = local_ips(state, &network.id);
        for attempt in 0..CLAIM_ATTEMPTS {
            // The first try takes the lowest free address, as Docker does.
            let start = if attempt == 0 {
                0
            } else {
                search_start(&id, attempt)
            };
            let mut endpoint = cluster::plan_endpoint_avoiding(
                snapshot,
                network,
                request,
                id.clone(),
                &lost,
                start,
            )?;
            finish(&mut endpoint);
            match store.commit(&txn(&endpoint))? {
                Committed::Done { .. } => return Ok(endpoint),
                Committed::Conflict { key, .. }
                    if request.ip.is_none()
                        && key == claims::ip_claim(&network.id, endpoint.ip) =>
                {
                    tracing::debug!(ip = %endpoint.ip, "address claimed elsewhere meanwhile; trying another");
                    lost.push(endpoint.ip);
                }
                conflict => {
                    refused(conflict, snapshot)?;
                }
            }
        }
        Err(ClusterError::Exhausted("IP (every address tried was claimed meanwhile)").into())
    }

    /// Publishes the local endpoint `endpoint` (its claims name it): records it in
    /// `RUN_DIR/endpoints.json`, then writes its record and claims again under this session
    /// (claims found gone, as after a lost session, are created again). If either fails, the
    /// local record is rolled back.
    ///
    /// # Errors
    ///
    /// A claim found held by another endpoint, or the store's or the file's failure.
    pub(super) fn publish_local(
        &self,
        state: &mut State,
        store: &dyn Store,
        snapshot: &Snapshot,
        endpoint: &Endpoint,
    ) -> Result<(), AgentError> {
        let key = endpoint.key();
        state.local.insert(key.clone(), endpoint.clone());
        let published = self
            .save_record(state)
            .and_then(|()| refused(republish(store, endpoint)?, snapshot));
        if published.is_err() {
            state.local.remove(&key);
            if let Err(e) = self.save_record(state) {
                tracing::error!(error = %e, "rolling back the endpoint record");
            }
        }
        published
    }

    /// Removes `endpoint`'s record from the store and releases the claims that still name
    /// it (claims it never had, written before claims, or lost, are left alone).
    ///
    /// # Errors
    ///
    /// The store's failure: then nothing was removed.
    pub(super) fn release_endpoint(
        &self,
        store: &dyn Store,
        endpoint: &Endpoint,
    ) -> Result<(), AgentError> {
        let committed = claims::commit_adapting(
            &claims::endpoint_claims(endpoint),
            claims::any,
            |lost| claims::endpoint_removal(endpoint, lost),
            |txn| store.commit(txn),
        )?;
        refused(committed, &Snapshot::default())
    }

    /// [`Self::release_endpoint`] on a path that is already failing: logged, not returned.
    pub(super) fn release_after_failure(&self, store: &dyn Store, endpoint: &Endpoint) {
        if let Err(e) = self.release_endpoint(store, endpoint) {
            tracing::error!(endpoint = %endpoint.name, ip = %endpoint.ip, error = %e, "releasing the claims of a failed connect; they go with this host's session");
        }
    }

    /// Removes `network` (its record and the claims naming it) under the cluster lock
    /// holder `locked`, refused while any endpoint of it is in the store.
    ///
    /// # Errors
    ///
    /// `NetworkInUse` (the store found an endpoint), or the store's failure.
    pub(super) fn remove_network(
        locked: &mut dyn crate::store::Locked,
        network: &Network,
        snapshot: &Snapshot,
    ) -> Result<(), AgentError> {
        let committed = claims::commit_adapting(
            &claims::network_claims(network),
            claims::any,
            |lost| claims::network_removal(network, lost),
            |txn| locked.commit(txn),
        )?;
        refused(committed, snapshot)
    }

    /// Creates `network` (its record, VNI and name claims) under the cluster lock holder
    /// `locked`, after the caller checked its subnet against the others.
    ///
    /// # Errors
    ///
    /// `VniInUse`, `NetworkExists`, or the store's failure.
    pub(super) fn create_network(
        locked: &mut dyn crate::store::Locked,
        network: &Network,
        snapshot: &Snapshot,
    ) -> Result<(), AgentError> {
        refused(locked.commit(&claims::network_txn(network))?, snapshot)
    }
}

/// Writes the local `endpoint`'s record and claims again under this session: claims found
/// missing are created, a claim another endpoint holds is the conflict.
///
/// # Errors
///
/// The store's failure.
pub(super) fn republish(
    store: &dyn Store,
    endpoint: &Endpoint,
) -> Result<Committed, crate::store::StoreError> {
    claims::commit_adapting(
        &claims::endpoint_claims(endpoint),
        claims::missing,
        |absent| claims::endpoint_republish_txn(endpoint, absent),
        |txn| store.commit(txn),
    )
}

/// The addresses of this host's endpoints on network `network_id`.
fn local_ips(state: &State, network_id: &str) -> Vec<Ipv4Addr> {
    state
        .local
        .values()
        .filter(|e| e.network == network_id)
        .map(|e| e.ip)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_starts_come_from_the_id_and_never_panic() {
        let id = "0000000100000002000000030000000400000005000000060000000700000008";
        assert_eq!(search_start(id, 1), 2);
        assert_eq!(search_start(id, 7), 8);
        assert_eq!(search_start(id, 8), 1, "wraps around the id");
        assert_eq!(search_start("short", 1), 0);
        assert_eq!(search_start("zzzzzzzzzzzzzzzzzz", 1), 0);
    }
}

//! The calls Docker makes, served: each decoded by [`protocol`], checked, and turned into
//! store and plumbing work by the agent.
//!
//! What each call does:
//! - `RequestPool`: reserves a subnet (the one asked for, or the next free one) against the
//!   store and the pools being created here; the pool id is the subnet. With the IPAM option
//!   `vxtap.network=ID` it is the pool of that existing network.
//! - `RequestAddress`: the gateway is checked and reserved with the pool; a container's
//!   address is claimed in the store at once (an endpoint record of this host), so no other
//!   host can hand it out.
//! - `CreateNetwork`: checks what a new network would be (VNI, subnet, MTU, options) and
//!   accepts it; its store record is written once the engine has committed the network and
//!   tells its name ([`super::sync`]). With `vxtap.network=ID` it attaches this engine to an
//!   existing network (that is how vxtap creates networks in other hosts' engines).
//! - `CreateEndpoint` makes the veth pair (and the overlay); `Join` hands Docker the inner
//!   end and the gateway, then the container's names are looked up
//!   and published; `DeleteEndpoint` removes the pair; `ReleaseAddress` drops the claim.
//! - `DeleteNetwork` removes the network from the store, refused while any host has
//!   endpoints on it.

use super::protocol::{self, Api, Call, CreateNetwork, Refused, RequestPool};
use super::state::DriverState;
use super::sync::Job;
use crate::cluster::ipam::{self, Subnet};
use crate::cluster::{validate, ClusterError, Network, NetworkRequest, Snapshot};
use crate::daemon::agent::{Agent, AgentError};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long `RequestAddress` waits for a network created a moment ago to reach the store.
const NAMING_WAIT: Duration = Duration::from_secs(10);

/// The driver: serves both protocols.
pub struct Driver {
    agent: Arc<Agent>,
    state: Arc<Mutex<DriverState>>,
    jobs: Sender<Job>,
}

fn refused(e: impl std::fmt::Display) -> Refused {
    Refused(e.to_string())
}

impl From<AgentError> for Refused {
    fn from(e: AgentError) -> Refused {
        refused(e)
    }
}

impl From<ClusterError> for Refused {
    fn from(e: ClusterError) -> Refused {
        refused(e)
    }
}

/// Locks `m`, whatever a panicking holder left.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Driver {
    /// A driver over `agent`, remembering in `state`, handing slow work to the sync thread.
    pub fn new(agent: Arc<Agent>, state: Arc<Mutex<DriverState>>, jobs: Sender<Job>) -> Driver {
        Driver { agent, state, jobs }
    }

    /// Serves `body` posted to `path`: the JSON answer, an error in the form the call's
    /// protocol reads when refused.
    pub fn serve(&self, path: &str, body: &[u8]) -> Value {
        let api = protocol::api_of(path).unwrap_or(Api::Network);
        let answer = protocol::decode(path, body)
            .inspect_err(|e| tracing::info!(path = %validate::escape(path), error = %e, "Docker call refused"))
            .and_then(|call| {
            let name = format!("{call:?}");
            let answer = self.call(call);
            match &answer {
                Ok(_) => tracing::debug!(call = %name, "Docker call served"),
                Err(e) => tracing::info!(call = %name, error = %e, "Docker call refused"),
            }
            answer
        });
        answer.unwrap_or_else(|e| protocol::error(api, &e.0))
    }

    fn call(&self, call: Call) -> Result<Value, Refused> {
        match call {
            Call::Activate => Ok(protocol::activated()),
            Call::NetworkCapabilities => Ok(protocol::network_capabilities()),
            Call::IpamCapabilities => Ok(protocol::ipam_capabilities()),
            Call::AddressSpaces => Ok(protocol::address_spaces()),
            Call::RequestPool(request) => self.request_pool(&request),
            Call::ReleasePool { pool } => {
                if let Ok(subnet) = pool.parse::<Subnet>() {
                    lock(&self.state).pools.remove(&subnet);
                }
                Ok(protocol::empty())
            }
            Call::RequestAddress {
                pool,
                address,
                gateway,
            } => self.request_address(&pool, address, gateway),
            Call::ReleaseAddress { pool, address } => self.release_address(&pool, address),
            Call::CreateNetwork(request) => self.create_network(&request),
            Call::DeleteNetwork { network } => self.delete_network(&network),
            Call::CreateEndpoint {
                network,
                endpoint,
                address,
                mac,
            } => self.create_endpoint(&network, &endpoint, address.as_deref(), mac.as_deref()),
            Call::Join { network, endpoint } => self.join(&network, &endpoint),
            Call::DeleteEndpoint { endpoint, .. } => {
                let key = lock(&self.state).saved.endpoints.get(&endpoint).cloned();
                if let Some(e) = key.and_then(|key| self.agent.local_endpoint_by_key(&key)) {
                    self.agent.docker_unplumb(&e);
                }
                let mut state = lock(&self.state);
                if state.saved.endpoints.remove(&endpoint).is_some() {
                    state.save().map_err(refused)?;
                }
                Ok(protocol::empty())
            }
            Call::NetworkNothing("EndpointOperInfo") => Ok(protocol::oper_info()),
            Call::NetworkNothing(_) => Ok(protocol::empty()),
        }
    }

    fn request_pool(&self, request: &RequestPool) -> Result<Value, Refused> {
        let snapshot = self.agent.snapshot()?;
        if let Some(id) = &request.attach {
            let network = attached(&snapshot, id)?;
            if request.subnet.is_some_and(|s| s != network.subnet) {
                return Err(refused(format!(
                    "vxtap network {} has subnet {}",
                    network.name, network.subnet
                )));
            }
            return Ok(protocol::pool(&network.subnet));
        }
        let mut state = lock(&self.state);
        state.expire_pools(Instant::now());
        let reserved = state.reserved_subnets();
        let subnet = match request.subnet {
            Some(subnet) => {
                crate::cluster::check_subnet_free(&snapshot, subnet)?;
                if let Some(other) = reserved.iter().find(|r| r.overlaps(&subnet)) {
                    return Err(refused(format!(
                        "subnet {subnet} overlaps {other}, which a network being created here holds"
                    )));
                }
                subnet
            }
            None => {
                let taken: Vec<Subnet> = snapshot
                    .networks
                    .values()
                    .map(|n| n.subnet)
                    .chain(reserved)
                    .collect();
                ipam::next_subnet(taken.iter()).ok_or(ClusterError::Exhausted("subnet"))?
            }
        };
        state.pools.insert(subnet, (Instant::now(), None));
        Ok(protocol::pool(&subnet))
    }

    fn request_address(
        &self,
        pool: &str,
        address: Option<Ipv4Addr>,
        gateway: bool,
    ) -> Result<Value, Refused> {
        let subnet: Subnet = pool
            .parse()
            .map_err(|_| refused(format!("vxtap: unknown pool {}", validate::escape(pool))))?;
        let prefix = subnet.prefix_len();
        if gateway {
            let snapshot = self.agent.snapshot()?;
            if let Some(network) = snapshot.networks.values().find(|n| n.subnet == subnet) {
                if address.is_some_and(|a| a != network.gateway) {
                    return Err(refused(format!(
                        "the gateway of vxtap network {} is {}",
                        network.name, network.gateway
                    )));
                }
                return Ok(protocol::address(network.gateway, prefix));
            }
            let gateway = address.unwrap_or_else(|| subnet.first_host());
            if !subnet.is_host(gateway) {
                return Err(ClusterError::GatewayOutside { gateway, subnet }.into());
            }
            let mut state = lock(&self.state);
            match state.pools.get_mut(&subnet) {
                Some(reserved) => reserved.1 = Some(gateway),
                None => return Err(refused(format!("vxtap: pool {subnet} was not requested"))),
            }
            return Ok(protocol::address(gateway, prefix));
        }
        if lock(&self.state).pools.contains_key(&subnet) {
            // Before CreateNetwork, Docker asks only for the gateway and --aux-address ones.
            return Err(refused("vxtap does not support --aux-address"));
        }
        let network = self.network_with(subnet)?;
        let endpoint = self.agent.docker_claim(&network.id, address)?;
        Ok(protocol::address(endpoint.ip, prefix))
    }

    /// The store's network with `subnet`, waiting a little for one created here a moment ago
    /// (its record is written once Docker has committed it).
    fn network_with(&self, subnet: Subnet) -> Result<Network, Refused> {
        let deadline = Instant::now() + NAMING_WAIT;
        loop {
            let snapshot = self.agent.snapshot()?;
            if let Some(n) = snapshot.networks.values().find(|n| n.subnet == subnet) {
                return Ok(n.clone());
            }
            let waiting = lock(&self.state)
                .saved
                .unnamed
                .values()
                .any(|r| r.subnet.as_deref() == Some(&subnet.to_string()));
            if !waiting || Instant::now() >= deadline {
                return Err(refused(format!(
                    "no vxtap network has subnet {subnet} (was it removed?)"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn release_address(&self, pool: &str, address: Ipv4Addr) -> Result<Value, Refused> {
        let Ok(subnet) = pool.parse::<Subnet>() else {
            return Ok(protocol::empty());
        };
        // The network's own record, or failing that (it is being removed) a local claim.
        let network = self
            .agent
            .snapshot()?
            .networks
            .values()
            .find(|n| n.subnet == subnet)
            .map(|n| n.id.clone())
            .or_else(|| self.agent.local_network_with(subnet));
        if let Some(network) = network {
            self.agent.docker_release(&network, address)?;
        }
        Ok(protocol::empty())
    }

    fn create_network(&self, request: &CreateNetwork) -> Result<Value, Refused> {
        if let Some(id) = &request.attach {
            let snapshot = self.agent.snapshot()?;
            let network = attached(&snapshot, id)?;
            let differs = request.subnet != network.subnet
                || request.gateway.is_some_and(|g| g != network.gateway)
                || request.vni.is_some_and(|v| v != network.vni)
                || request.mtu.is_some_and(|m| m != network.mtu);
            if differs {
                return Err(refused(format!(
                    "vxtap network {} is {} gateway {} VNI {} MTU {}: leave out other settings",
                    network.name, network.subnet, network.gateway, network.vni, network.mtu
                )));
            }
            let mut state = lock(&self.state);
            let before = state
                .saved
                .networks
                .insert(request.network.clone(), network.id.clone());
            if let Err(e) = state.save() {
                match before {
                    Some(old) => state.saved.networks.insert(request.network.clone(), old),
                    None => state.saved.networks.remove(&request.network),
                };
                return Err(refused(e));
            }
            tracing::info!(network = %network.name, docker_id = %request.network, "Docker network attached");
            return Ok(protocol::empty());
        }
        // Checked as 64 hex digits when decoded.
        let id = &request.network;
        let plan = NetworkRequest {
            // Until Docker tells the name: a valid name no network has.
            name: format!("docker-{}", &id[..12]),
            subnet: Some(request.subnet.to_string()),
            gateway: request.gateway,
            vni: request.vni,
            mtu: request.mtu,
        };
        self.agent.docker_check_network(&plan, id)?;
        {
            let mut state = lock(&self.state);
            state.saved.unnamed.insert(id.clone(), plan);
            state.saved.networks.insert(id.clone(), id.clone());
            if let Err(e) = state.save() {
                state.saved.unnamed.remove(id);
                state.saved.networks.remove(id);
                return Err(refused(e));
            }
            state.pools.remove(&request.subnet);
        }
        self.send(Job::NameNetwork { docker: id.clone() });
        Ok(protocol::empty())
    }

    /// Docker removes the network from its engine whatever a remote driver answers (it
    /// honours only "forbidden" errors, which a plugin cannot send), so the mapping goes in
    /// any case. The store keeps the network while any host has endpoints on it (or cannot
    /// be reached); the refusal is logged by both, and the sync thread creates the network
    /// in this engine again, since it still exists.
    fn delete_network(&self, docker: &str) -> Result<Value, Refused> {
        let (vxtap, unnamed) = {
            let mut state = lock(&self.state);
            let vxtap = state.saved.networks.remove(docker);
            let unnamed = state.saved.unnamed.remove(docker).is_some();
            if vxtap.is_some() || unnamed {
                state.save().map_err(refused)?;
            }
            (vxtap, unnamed)
        };
        if let (Some(vxtap), false) = (vxtap, unnamed) {
            if let Err(e) = self.agent.docker_remove_network(&vxtap) {
                tracing::warn!(error = %e, "Docker removed a network from its engine that stays in the store; it will be created there again");
                return Err(e.into());
            }
        }
        Ok(protocol::empty())
    }

    fn vxtap_network(&self, docker: &str) -> Result<String, Refused> {
        lock(&self.state)
            .saved
            .networks
            .get(docker)
            .cloned()
            .ok_or_else(|| {
                refused(format!(
                    "vxtap knows no Docker network {}",
                    validate::escape(docker)
                ))
            })
    }

    fn create_endpoint(
        &self,
        docker_network: &str,
        docker_endpoint: &str,
        address: Option<&str>,
        mac: Option<&str>,
    ) -> Result<Value, Refused> {
        let network = self.vxtap_network(docker_network)?;
        let address = address.ok_or_else(|| refused("vxtap: the endpoint has no IPv4 address"))?;
        let (ip, _) = protocol::cidr_address(address)?;
        let endpoint = self.agent.docker_endpoint(&network, ip).ok_or_else(|| {
            refused(format!(
                "vxtap: address {ip} was not claimed through vxtap's IPAM (use --ipam-driver vxtap)"
            ))
        })?;
        if mac.is_some_and(|m| !m.eq_ignore_ascii_case(&endpoint.mac)) {
            return Err(refused(format!(
                "vxtap derives each MAC from its IP ({} for {ip}): leave out --mac-address",
                endpoint.mac
            )));
        }
        self.agent.docker_plumb(&endpoint)?;
        let mut state = lock(&self.state);
        state
            .saved
            .endpoints
            .insert(docker_endpoint.to_owned(), endpoint.key());
        if let Err(e) = state.save() {
            drop(state);
            self.agent.docker_unplumb(&endpoint);
            return Err(refused(e));
        }
        // Docker fails the endpoint ("driver modified interface MAC address") when a driver
        // answers a MAC it was given, even the same one.
        Ok(if mac.is_some() {
            protocol::empty()
        } else {
            protocol::endpoint(&endpoint.mac)
        })
    }

    fn join(&self, docker_network: &str, docker_endpoint: &str) -> Result<Value, Refused> {
        let network = self.vxtap_network(docker_network)?;
        let key = lock(&self.state)
            .saved
            .endpoints
            .get(docker_endpoint)
            .cloned()
            .ok_or_else(|| refused("vxtap knows no such endpoint"))?;
        let endpoint = self
            .agent
            .local_endpoint_by_key(&key)
            .ok_or_else(|| refused("vxtap: the endpoint's address was released"))?;
        let gateway = self
            .agent
            .latest()
            .networks
            .get(&network)
            .map(|n| n.gateway)
            .or_else(|| self.agent.overlay_gateway(&network))
            .ok_or_else(|| refused("vxtap: the network is not in the store"))?;
        let (_, inner) =
            crate::plumbing::overlay::docker_veth_names(crate::daemon::agent::tag_of(&endpoint));
        self.send(Job::NameEndpoint {
            docker_network: docker_network.to_owned(),
            docker_endpoint: docker_endpoint.to_owned(),
            key,
        });
        Ok(protocol::joined(&inner, gateway))
    }

    fn send(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            tracing::warn!("the Docker sync thread is gone; names are not looked up");
        }
    }
}

/// The store's network `id`, for `vxtap.network=ID`.
fn attached<'a>(snapshot: &'a Snapshot, id: &str) -> Result<&'a Network, Refused> {
    snapshot
        .networks
        .get(id)
        .ok_or_else(|| refused(format!("no vxtap network has id {}", validate::escape(id))))
}

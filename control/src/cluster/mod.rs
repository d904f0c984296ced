//! The overlay model the store holds: networks, endpoints and hosts, how they are keyed, and
//! the checks that keep them consistent (no overlapping subnets, unique VNIs, names and IPs).
//!
//! Everything here is pure: it reads a [`Snapshot`] and returns a new record or a
//! [`ClusterError`]. A snapshot holds only records that passed [`validate`]: the store is
//! untrusted input. The daemon lists, plans with these functions and writes the result
//! either under the store's cluster lock or, without it, as a txn that also takes the
//! [`claims`] of what must be unique (IP, name, VNI, network name), so two hosts can never
//! hand out the same IP or VNI.

pub mod claims;
pub mod ipam;
pub mod validate;

use crate::store::Listing;
use ipam::Subnet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Key prefix of networks: `networks/ID`.
pub const NETWORKS: &str = "networks/";
/// Key prefix of endpoints: `endpoints/NETWORK_ID/ENDPOINT_ID`.
pub const ENDPOINTS: &str = "endpoints/";
/// Key prefix of hosts: `hosts/NAME`.
pub const HOSTS: &str = "hosts/";

/// Default overlay MTU: 1500 minus the 50 bytes of VXLAN over IPv4.
pub const DEFAULT_MTU: u32 = 1450;
/// Smallest MTU accepted (IPv4's minimum).
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted: the inner frame must fit a 64 KiB UDP datagram.
pub const MAX_MTU: u32 = 65_535 - 8 - 20 - 8 - 14;

/// An overlay network, the same on every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex digits, like Docker's network ids.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// Its IPv4 subnet.
    pub subnet: Subnet,
    /// The gateway address, held by `br0` in every host's overlay namespace.
    pub gateway: Ipv4Addr,
    /// MTU of the TAP, the bridge and every container interface.
    pub mtu: u32,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

/// A container's attachment to a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 64 hex digits.
    pub id: String,
    /// The network's id.
    pub network: String,
    /// Name, unique within the network; resolvable from its containers.
    pub name: String,
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// MAC, derived from the IP (02:42:...).
    pub mac: String,
    /// Host whose daemon plumbed it.
    pub host: String,
    /// That host's VTEP address.
    pub vtep: Ipv4Addr,
    /// The container's network namespace as given (a name under /var/run/netns, or a path).
    pub netns: String,
    /// Interface name inside the container (`eth0`, `eth1`, ...).
    pub ifname: String,
    /// More names it answers to (Docker's container name and `--network-alias` names). Not
    /// unique: an alias on several endpoints resolves to all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A daemon taking part in the overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Host name (`--host`).
    pub name: String,
    /// VTEP address (`--local-ip`).
    pub vtep: Ipv4Addr,
    /// Daemon pid, for humans.
    pub pid: u32,
    /// When the daemon started, seconds since the Unix epoch.
    pub started: u64,
}

impl Network {
    /// Its store key.
    pub fn key(&self) -> String {
        format!("{NETWORKS}{}", self.id)
    }

    /// The first 12 digits of its id, as `network ls` shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

impl Endpoint {
    /// Its store key.
    pub fn key(&self) -> String {
        format!("{ENDPOINTS}{}/{}", self.network, self.id)
    }
}

impl Host {
    /// Its store key.
    pub fn key(&self) -> String {
        format!("{HOSTS}{}", self.name)
    }
}

/// Everything the store holds that passed [`validate`], decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
    /// Endpoints by (network id, endpoint id).
    pub endpoints: BTreeMap<(String, String), Endpoint>,
    /// Hosts by name.
    pub hosts: BTreeMap<String, Host>,
}

impl Snapshot {
    /// The records of `listing` that pass [`validate::check`] with no pins; the refused ones
    /// are dropped. The agent, which logs and counts refusals, calls `validate::check`.
    pub fn from_listing(listing: &Listing) -> Snapshot {
        validate::check(listing, &validate::Pins::default()).snapshot
    }

    /// The network called `name`, or whose full id or unique id prefix (at least 12 digits)
    /// is `name`.
    pub fn network(&self, name: &str) -> Option<&Network> {
        if let Some(n) = self.networks.values().find(|n| n.name == name) {
            return Some(n);
        }
        if name.len() >= 12 {
            let mut matches = self.networks.values().filter(|n| n.id.starts_with(name));
            if let (Some(n), None) = (matches.next(), matches.next()) {
                return Some(n);
            }
        }
        None
    }

    /// [`network`](Self::network), or `UnknownNetwork`.
    ///
    /// # Errors
    ///
    /// `UnknownNetwork` when no network has that name or id.
    pub fn require_network(&self, name: &str) -> Result<&Network, ClusterError> {
        self.network(name)
            .ok_or_else(|| ClusterError::UnknownNetwork(name.to_owned()))
    }

    /// Endpoints of network `id`, by endpoint id.
    pub fn endpoints_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints
            .range((id.to_owned(), String::new())..)
            .take_while(move |((network, _), _)| network == id)
            .map(|(_, e)| e)
    }
}

/// What `network create` asks for; unset fields are allocated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    /// Name.
    pub name: String,
    /// Subnet (`--subnet`).
    pub subnet: Option<String>,
    /// Gateway (`--gateway`).
    pub gateway: Option<Ipv4Addr>,
    /// VNI (`--vni`).
    pub vni: Option<u32>,
    /// MTU (`--mtu`).
    pub mtu: Option<u32>,
}

/// Why a network or endpoint change was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// A name breaks the naming rules.
    #[error("invalid {what} name {name:?}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    InvalidName {
        /// `network` or `endpoint`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A network with that name exists.
    #[error("network {0:?} already exists")]
    NetworkExists(String),
    /// The subnet is malformed.
    #[error(transparent)]
    Subnet(#[from] ipam::SubnetError),
    /// The subnet overlaps another network's.
    #[error("subnet {subnet} overlaps network {other:?} ({other_subnet})")]
    SubnetOverlap {
        /// The requested subnet.
        subnet: Subnet,
        /// The network that has it.
        other: String,
        /// Its subnet.
        other_subnet: Subnet,
    },
    /// The gateway is not a host address of the subnet.
    #[error("gateway {gateway} is not a usable address of subnet {subnet}")]
    GatewayOutside {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Subnet,
    },
    /// A gateway without a subnet.
    #[error("--gateway needs --subnet")]
    GatewayWithoutSubnet,
    /// The VNI is out of range.
    #[error("VNI {0} is out of range (1-16777215)")]
    VniRange(u32),
    /// The VNI is in use.
    #[error("VNI {vni} is already used by network {other:?}")]
    VniInUse {
        /// The VNI.
        vni: u32,
        /// The network that has it.
        other: String,
    },
    /// The MTU is out of range.
    #[error("MTU {0} is out of range ({MIN_MTU}-{MAX_MTU})")]
    MtuRange(u32),
    /// No subnet or VNI left to allocate.
    #[error("no free {0} left to allocate")]
    Exhausted(&'static str),
    /// No such network.
    #[error("network {0:?} not found")]
    UnknownNetwork(String),
    /// `network rm` of a network with endpoints.
    #[error("network {name:?} has {count} endpoint(s) ({names}); disconnect them first")]
    NetworkInUse {
        /// The network.
        name: String,
        /// How many endpoints.
        count: usize,
        /// Their names.
        names: String,
    },
    /// The IP is taken.
    #[error("IP {ip} is already used by endpoint {other:?} on network {network:?}")]
    DuplicateIp {
        /// The IP.
        ip: Ipv4Addr,
        /// Who has it.
        other: String,
        /// The network.
        network: String,
    },
    /// The endpoint name is taken.
    #[error("endpoint name {name:?} is already used on network {network:?}")]
    DuplicateName {
        /// The name.
        name: String,
        /// The network.
        network: String,
    },
    /// The IP is outside the subnet, or is its network, broadcast or gateway address.
    #[error(
        "IP {ip} is not a free host address of network {network:?} ({subnet}, gateway {gateway})"
    )]
    IpOutside {
        /// The IP.
        ip: Ipv4Addr,
        /// The network.
        network: String,
        /// Its subnet.
        subnet: Subnet,
        /// Its gateway.
        gateway: Ipv4Addr,
    },
    /// The container already has an endpoint on the network.
    #[error("{netns} is already connected to network {network:?} (endpoint {endpoint:?})")]
    AlreadyConnected {
        /// The namespace.
        netns: String,
        /// The network.
        network: String,
        /// The endpoint.
        endpoint: String,
    },
    /// A txn was refused on a store key that no other error describes: a claim found
    /// released or taken by someone else while releasing it, or an id that collides.
    #[error("store key {key} is held by {holder}")]
    Claimed {
        /// The key.
        key: String,
        /// What it held (escaped), or `nothing`.
        holder: String,
    },
    /// The container has no endpoint on the network on this host.
    #[error("{netns} is not connected to network {network:?} on this host")]
    NotConnected {
        /// The namespace.
        netns: String,
        /// The network.
        network: String,
    },
}

/// Checks a network or endpoint name: it ends up in keys, /etc/hosts and messages.
///
/// # Errors
///
/// `InvalidName`.
pub fn check_name(what: &'static str, name: &str) -> Result<(), ClusterError> {
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ClusterError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

/// Checks that `subnet` overlaps no network of `snapshot`.
///
/// # Errors
///
/// `SubnetOverlap`, naming the first network it overlaps.
pub fn check_subnet_free(snapshot: &Snapshot, subnet: Subnet) -> Result<(), ClusterError> {
    match snapshot
        .networks
        .values()
        .find(|n| n.subnet.overlaps(&subnet))
    {
        Some(other) => Err(ClusterError::SubnetOverlap {
            subnet,
            other: other.name.clone(),
            other_subnet: other.subnet,
        }),
        None => Ok(()),
    }
}

/// Plans `network create`: validates the request against `snapshot` and allocates what was
/// not given. `id` and `created` come from the caller so that this stays deterministic.
///
/// # Errors
///
/// Every [`ClusterError`] that applies to networks.
pub fn plan_network(
    snapshot: &Snapshot,
    request: &NetworkRequest,
    id: String,
    created: u64,
) -> Result<Network, ClusterError> {
    check_name("network", &request.name)?;
    if snapshot.networks.values().any(|n| n.name == request.name) {
        return Err(ClusterError::NetworkExists(request.name.clone()));
    }
    let mtu = request.mtu.unwrap_or(DEFAULT_MTU);
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(ClusterError::MtuRange(mtu));
    }
    let vni = match request.vni {
        Some(vni) => {
            if vni == 0 || vni > ipam::MAX_VNI {
                return Err(ClusterError::VniRange(vni));
            }
            if let Some(other) = snapshot.networks.values().find(|n| n.vni == vni) {
                return Err(ClusterError::VniInUse {
                    vni,
                    other: other.name.clone(),
                });
            }
            vni
        }
        None => {
            let taken: Vec<u32> = snapshot.networks.values().map(|n| n.vni).collect();
            ipam::next_vni(&taken).ok_or(ClusterError::Exhausted("VNI"))?
        }
    };
    let subnet = match &request.subnet {
        Some(s) => {
            let subnet: Subnet = s.parse()?;
            check_subnet_free(snapshot, subnet)?;
            subnet
        }
        None => {
            if request.gateway.is_some() {
                return Err(ClusterError::GatewayWithoutSubnet);
            }
            ipam::next_subnet(snapshot.networks.values().map(|n| &n.subnet))
                .ok_or(ClusterError::Exhausted("subnet"))?
        }
    };
    let gateway = request.gateway.unwrap_or_else(|| subnet.first_host());
    if !subnet.is_host(gateway) {
        return Err(ClusterError::GatewayOutside { gateway, subnet });
    }
    Ok(Network {
        id,
        name: request.name.clone(),
        vni,
        subnet,
        gateway,
        mtu,
        created,
    })
}

/// Plans `network rm`.
///
/// # Errors
///
/// `UnknownNetwork`, or `NetworkInUse` while it has endpoints.
pub fn plan_network_removal<'a>(
    snapshot: &'a Snapshot,
    name: &str,
) -> Result<&'a Network, ClusterError> {
    let network = snapshot.require_network(name)?;
    let endpoints: Vec<&str> = snapshot
        .endpoints_of(&network.id)
        .map(|e| e.name.as_str())
        .collect();
    if !endpoints.is_empty() {
        return Err(ClusterError::NetworkInUse {
            name: network.name.clone(),
            count: endpoints.len(),
            names: endpoints.join(", "),
        });
    }
    Ok(network)
}

/// Who is connecting, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRequest {
    /// Endpoint name.
    pub name: String,
    /// Requested IP; allocated when unset.
    pub ip: Option<Ipv4Addr>,
    /// The container namespace as given.
    pub netns: String,
    /// This host.
    pub host: String,
    /// This host's VTEP.
    pub vtep: Ipv4Addr,
}

/// Plans `connect`: checks the name and IP against the network's endpoints and allocates
/// the IP when not given. The interface name is left empty; the daemon picks it.
///
/// # Errors
///
/// `InvalidName`, `AlreadyConnected`, `DuplicateName`, `DuplicateIp`, `IpOutside`, or
/// `Exhausted` when the subnet is full.
pub fn plan_endpoint(
    snapshot: &Snapshot,
    network: &Network,
    request: &EndpointRequest,
    id: String,
) -> Result<Endpoint, ClusterError> {
    plan_endpoint_avoiding(snapshot, network, request, id, &[], 0)
}

/// [`plan_endpoint`], for a connect whose first claim lost a race: an allocated IP is not
/// one of `avoid` (addresses found claimed though the snapshot does not show them yet), and
/// is searched from the `start`th host address up ([`ipam::free_address`]).
///
/// # Errors
///
/// As [`plan_endpoint`].
pub fn plan_endpoint_avoiding(
    snapshot: &Snapshot,
    network: &Network,
    request: &EndpointRequest,
    id: String,
    avoid: &[Ipv4Addr],
    start: u32,
) -> Result<Endpoint, ClusterError> {
    check_name("endpoint", &request.name)?;
    let existing: Vec<&Endpoint> = snapshot.endpoints_of(&network.id).collect();
    if let Some(e) = existing
        .iter()
        .find(|e| e.host == request.host && e.netns == request.netns)
    {
        return Err(ClusterError::AlreadyConnected {
            netns: request.netns.clone(),
            network: network.name.clone(),
            endpoint: e.name.clone(),
        });
    }
    if existing.iter().any(|e| e.name == request.name) {
        return Err(ClusterError::DuplicateName {
            name: request.name.clone(),
            network: network.name.clone(),
        });
    }
    let ip = match request.ip {
        Some(ip) => {
            if !network.subnet.is_host(ip) || ip == network.gateway {
                return Err(ClusterError::IpOutside {
                    ip,
                    network: network.name.clone(),
                    subnet: network.subnet,
                    gateway: network.gateway,
                });
            }
            if let Some(other) = existing.iter().find(|e| e.ip == ip) {
                return Err(ClusterError::DuplicateIp {
                    ip,
                    other: other.name.clone(),
                    network: network.name.clone(),
                });
            }
            ip
        }
        None => {
            let mut taken: std::collections::HashSet<Ipv4Addr> = existing
                .iter()
                .map(|e| e.ip)
                .chain(avoid.iter().copied())
                .collect();
            taken.insert(network.gateway);
            ipam::free_address(&network.subnet, &taken, start)
                .ok_or(ClusterError::Exhausted("IP"))?
        }
    };
    let mac = ipam::mac_for(ip)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(Endpoint {
        id,
        network: network.id.clone(),
        name: request.name.clone(),
        ip,
        mac,
        host: request.host.clone(),
        vtep: request.vtep,
        netns: request.netns.clone(),
        ifname: String::new(),
        aliases: Vec::new(),
    })
}

/// A fresh random id: 64 hex digits from the kernel's random source.
///
/// # Errors
///
/// The random source cannot be read.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    let filled = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
    if filled != bytes.len() {
        return Err(std::io::Error::other("short read from getrandom"));
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests;

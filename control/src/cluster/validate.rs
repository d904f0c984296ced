//! Store records are untrusted input: every field read from the store is checked as strictly
//! as the CLI checks what a user types, and records that contradict older ones are refused.
//!
//! The store is shared by every host, and without etcd auth anyone who reaches it can write.
//! A record that does not pass is never programmed and never blocks the others: it becomes a
//! [`Rejection`] with a [`Reason`], which the agent logs once and counts.
//!
//! What a record may claim:
//! - **Fields**: ids are 64 lowercase hex digits; names follow [`super::check_name`]; VNIs lie
//!   in 1-16777215; subnets parse; gateways are host addresses of their subnet; MTUs are in
//!   range; an endpoint's IP is a host address of its network's subnet and not the gateway;
//!   its MAC is unicast and not all zeros, written as vxtap writes it; its VTEP is a unicast
//!   address; its interface name is a valid Linux interface name; its namespace is printable.
//! - **Keys**: a record lives under the key its content names (`networks/ID`,
//!   `endpoints/NETWORK/ID`, `hosts/NAME`), so one record cannot pose as another. Keys under
//!   `claims/` ([`super::claims`]) are known and skipped: they are not records, they only
//!   order writers, and a reader decides conflicts from the records themselves.
//! - **Hosts own their endpoints**: an endpoint names its host, that host's record must exist,
//!   and the endpoint's VTEP must be the one the host record gives.
//! - **First claim wins**: within a network, an endpoint whose IP, MAC or name is held by an
//!   older endpoint is refused (a conflict); across networks, a network whose name or VNI is
//!   held by an older network, or whose subnet overlaps an older one's, is refused. "Older"
//!   is the store's own creation order ([`Entry::created`]: etcd's `create_revision`, which a
//!   writer cannot choose), ties broken by key.
//! - **No rewriting in place**: a writer can overwrite an existing key, which keeps its
//!   creation revision. Networks never change once written, and neither does what an endpoint
//!   says about where traffic goes (its IP, MAC, host and VTEP), so each host pins the ones it
//!   accepted ([`Pins`]); while a key lives, another value under it is refused (as `rebound`,
//!   or for what is wrong with it) and the pinned record stays programmed. Only an endpoint's
//!   names (its name and aliases) and its descriptive fields (namespace, interface) may change
//!   in place: Docker tells the owning host a container's name only after its address was
//!   claimed. A renamed endpoint keeps its age, so first claim still wins on names. A host
//!   that starts after such an overwrite cannot tell: only etcd auth stops a writer from
//!   rewriting records (see the README's security model). Host records do change (a restarted
//!   daemon writes its new pid), so they are not pinned: a host record rewritten with another
//!   VTEP makes that host's endpoints fail `vtep_mismatch` (they go unreachable; they are
//!   never sent to the new VTEP).
//!
//! Everything here is pure and deterministic: the same listing and pins give the same result.

use super::claims::CLAIMS;
use super::ipam;
use super::{check_name, Endpoint, Host, Network, Snapshot, ENDPOINTS, HOSTS, NETWORKS};
use super::{MAX_MTU, MIN_MTU};
use crate::store::{Entry, Listing, Revision};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use vxtap_dataplane::wire::MacAddr;

/// Why a store record was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The value is not the JSON of a record of its kind.
    Undecodable,
    /// The key is not the one the record's content names.
    KeyMismatch,
    /// A key under no prefix the model knows.
    UnknownPrefix,
    /// An id that is not 64 lowercase hex digits.
    InvalidId,
    /// A network, endpoint or host name that breaks the naming rules.
    InvalidName,
    /// A VNI outside 1-16777215.
    InvalidVni,
    /// A gateway that is not a host address of its subnet.
    InvalidGateway,
    /// An MTU out of range.
    InvalidMtu,
    /// An endpoint IP outside its network's subnet, or the gateway.
    InvalidIp,
    /// A MAC that does not parse, is multicast or all zeros, or is not written canonically.
    InvalidMac,
    /// A VTEP that is not a unicast address.
    InvalidVtep,
    /// An interface or namespace name that cannot be one.
    InvalidInterface,
    /// An endpoint of a network the store does not hold (or holds only as a refused record).
    UnknownNetwork,
    /// An endpoint whose host has no record.
    UnknownHost,
    /// An endpoint whose VTEP is not its host's.
    VtepMismatch,
    /// A network name held by an older network.
    NameConflict,
    /// A VNI held by an older network.
    VniConflict,
    /// A subnet overlapping an older network's.
    SubnetConflict,
    /// An endpoint name held by an older endpoint of the network.
    EndpointNameConflict,
    /// An IP held by an older endpoint of the network.
    IpConflict,
    /// A MAC held by an older endpoint of the network.
    MacConflict,
    /// An endpoint key overwritten in place with a different endpoint.
    Rebound,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 22] = [
        Reason::Undecodable,
        Reason::KeyMismatch,
        Reason::UnknownPrefix,
        Reason::InvalidId,
        Reason::InvalidName,
        Reason::InvalidVni,
        Reason::InvalidGateway,
        Reason::InvalidMtu,
        Reason::InvalidIp,
        Reason::InvalidMac,
        Reason::InvalidVtep,
        Reason::InvalidInterface,
        Reason::UnknownNetwork,
        Reason::UnknownHost,
        Reason::VtepMismatch,
        Reason::NameConflict,
        Reason::VniConflict,
        Reason::SubnetConflict,
        Reason::EndpointNameConflict,
        Reason::IpConflict,
        Reason::MacConflict,
        Reason::Rebound,
    ];

    /// The counter's name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::KeyMismatch => "key_mismatch",
            Reason::UnknownPrefix => "unknown_prefix",
            Reason::InvalidId => "invalid_id",
            Reason::InvalidName => "invalid_name",
            Reason::InvalidVni => "invalid_vni",
            Reason::InvalidGateway => "invalid_gateway",
            Reason::InvalidMtu => "invalid_mtu",
            Reason::InvalidIp => "invalid_ip",
            Reason::InvalidMac => "invalid_mac",
            Reason::InvalidVtep => "invalid_vtep",
            Reason::InvalidInterface => "invalid_interface",
            Reason::UnknownNetwork => "unknown_network",
            Reason::UnknownHost => "unknown_host",
            Reason::VtepMismatch => "vtep_mismatch",
            Reason::NameConflict => "name_conflict",
            Reason::VniConflict => "vni_conflict",
            Reason::SubnetConflict => "subnet_conflict",
            Reason::EndpointNameConflict => "endpoint_name_conflict",
            Reason::IpConflict => "ip_conflict",
            Reason::MacConflict => "mac_conflict",
            Reason::Rebound => "rebound",
        }
    }

    /// Whether the record is well-formed but contradicts an older one.
    pub fn is_conflict(self) -> bool {
        matches!(
            self,
            Reason::NameConflict
                | Reason::VniConflict
                | Reason::SubnetConflict
                | Reason::EndpointNameConflict
                | Reason::IpConflict
                | Reason::MacConflict
                | Reason::Rebound
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A record that was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Its store key.
    pub key: String,
    /// Why.
    pub reason: Reason,
    /// What exactly, for the log: the offending value (escaped) or the older record it
    /// conflicts with.
    pub detail: String,
    /// A fingerprint of the refused value, so a host reports each refused value once however
    /// often it lists.
    pub fingerprint: u64,
}

/// The networks and endpoints a host accepted, by key, with the creation revision they were
/// accepted at. Both are immutable in vxtap: a network or an endpoint is created and deleted,
/// never changed, so any other value under a pinned key is an overwrite in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    networks: BTreeMap<String, (Revision, Network)>,
    endpoints: BTreeMap<String, (Revision, Endpoint)>,
}

impl Pins {
    /// How many records are pinned.
    pub fn len(&self) -> usize {
        self.networks.len() + self.endpoints.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A record a host pins: what it says about itself in a refusal.
trait Pinned: Clone + PartialEq {
    fn summary(&self) -> String;
    /// Whether `new` may stand in for `self` under the same key: nothing that decides where
    /// traffic goes has changed.
    fn same_binding(&self, new: &Self) -> bool {
        self == new
    }
}

impl Pinned for Network {
    fn summary(&self) -> String {
        format!(
            "{} VNI {} {} gateway {} MTU {}",
            escape(&self.name),
            self.vni,
            self.subnet,
            self.gateway,
            self.mtu
        )
    }
}

impl Pinned for Endpoint {
    fn summary(&self) -> String {
        format!(
            "{} {} {} on {} ({})",
            escape(&self.name),
            self.ip,
            escape(&self.mac),
            escape(&self.host),
            self.vtep
        )
    }

    fn same_binding(&self, new: &Self) -> bool {
        (
            &self.id,
            &self.network,
            self.ip,
            &self.mac,
            &self.host,
            self.vtep,
        ) == (&new.id, &new.network, new.ip, &new.mac, &new.host, new.vtep)
    }
}

/// What `entry` may stand for given the record pinned under its key: the pinned record when
/// the key still holds the creation it was pinned at but another value (refused as
/// `rebound`, or for what is wrong with the new value), else `decoded` as it is.
fn keep_pinned<T: Pinned>(
    entry: &Entry,
    pinned: Option<&(Revision, T)>,
    decoded: Result<T, Refusal>,
    rejected: &mut Vec<Rejection>,
) -> Option<T> {
    match (pinned, decoded) {
        (Some((created, old)), decoded) if *created == entry.created => match decoded {
            Ok(new) if old.same_binding(&new) => Some(new),
            Ok(new) => {
                let detail = format!(
                    "overwritten in place: was {}, now {}",
                    old.summary(),
                    new.summary()
                );
                rejected.push(rejection(entry, Reason::Rebound, detail));
                Some(old.clone())
            }
            Err((reason, detail)) => {
                rejected.push(rejection(entry, reason, detail));
                Some(old.clone())
            }
        },
        (_, Ok(new)) => Some(new),
        (_, Err((reason, detail))) => {
            rejected.push(rejection(entry, reason, detail));
            None
        }
    }
}

/// What a listing yields once checked.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// The accepted records.
    pub snapshot: Snapshot,
    /// Everything refused, in key order.
    pub rejected: Vec<Rejection>,
    /// The pins to check the next listing against.
    pub pins: Pins,
}

/// Checks every record of `listing`, given the endpoints this host accepted before.
pub fn check(listing: &Listing, pins: &Pins) -> Checked {
    let mut rejected = Vec::new();
    let mut networks: Vec<(&Entry, Network)> = Vec::new();
    let mut hosts: Vec<(&Entry, Host)> = Vec::new();
    let mut endpoints: Vec<(&Entry, Endpoint)> = Vec::new();
    for entry in &listing.entries {
        // A running host keeps what it accepted under a key while the key lives.
        if entry.key.starts_with(NETWORKS) {
            let decoded = decode::<Network>(entry).and_then(|n| check_network(&n).map(|()| n));
            let pinned = pins.networks.get(&entry.key);
            if let Some(n) = keep_pinned(entry, pinned, decoded, &mut rejected) {
                networks.push((entry, n));
            }
        } else if entry.key.starts_with(ENDPOINTS) {
            let decoded =
                decode::<Endpoint>(entry).and_then(|e| check_endpoint_fields(&e).map(|()| e));
            let pinned = pins.endpoints.get(&entry.key);
            if let Some(e) = keep_pinned(entry, pinned, decoded, &mut rejected) {
                endpoints.push((entry, e));
            }
        } else if entry.key.starts_with(HOSTS) {
            match decode::<Host>(entry).and_then(|h| check_host(&h).map(|()| h)) {
                Ok(h) => hosts.push((entry, h)),
                Err((reason, detail)) => rejected.push(rejection(entry, reason, detail)),
            }
        } else if !entry.key.starts_with(CLAIMS) {
            rejected.push(rejection(entry, Reason::UnknownPrefix, String::new()));
        }
    }

    let mut snapshot = Snapshot::default();
    let mut new_pins = Pins::default();
    // Oldest first, so the first claim wins.
    networks.sort_by(|a, b| age(a.0).cmp(&age(b.0)));
    for (entry, n) in networks {
        match network_conflict(&snapshot, &n) {
            Some((reason, detail)) => rejected.push(rejection(entry, reason, detail)),
            None => {
                new_pins
                    .networks
                    .insert(entry.key.clone(), (entry.created, n.clone()));
                snapshot.networks.insert(n.id.clone(), n);
            }
        }
    }
    for (_, h) in hosts {
        snapshot.hosts.insert(h.name.clone(), h);
    }

    let mut claims = endpoints;
    claims.sort_by(|a, b| age(a.0).cmp(&age(b.0)));
    let mut held: HashMap<(&str, Held), String> = HashMap::new();
    let mut accepted: Vec<(&Entry, Endpoint)> = Vec::new();
    for (entry, e) in &claims {
        if let Err((reason, detail)) = check_endpoint_against(&snapshot, e) {
            rejected.push(rejection(entry, reason, detail));
            continue;
        }
        let mac = e.mac.clone();
        let wanted = [
            (Held::Ip(e.ip), Reason::IpConflict),
            (Held::Mac(mac), Reason::MacConflict),
            (Held::Name(e.name.clone()), Reason::EndpointNameConflict),
        ];
        let conflict = wanted.iter().find_map(|(what, reason)| {
            held.get(&(e.network.as_str(), what.clone()))
                .map(|holder| (*reason, what, holder))
        });
        if let Some((reason, what, holder)) = conflict {
            rejected.push(rejection(
                entry,
                reason,
                format!("{what} is held by the older endpoint {holder}"),
            ));
            continue;
        }
        for (what, _) in wanted {
            held.insert((e.network.as_str(), what), e.key());
        }
        accepted.push((entry, e.clone()));
    }
    for (entry, e) in accepted {
        new_pins
            .endpoints
            .insert(entry.key.clone(), (entry.created, e.clone()));
        snapshot
            .endpoints
            .insert((e.network.clone(), e.id.clone()), e);
    }
    rejected.sort_by(|a, b| a.key.cmp(&b.key).then(a.reason.cmp(&b.reason)));
    Checked {
        snapshot,
        rejected,
        pins: new_pins,
    }
}

/// Why [`apply_endpoint_change`] left a change to the whole check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPlain {
    /// A network or host record (endpoints may depend on it).
    NotAnEndpoint,
    /// A deletion while some record is refused (it may win now).
    RefusedRecords,
    /// A key already accepted, written again.
    Rewritten,
    /// The record would be refused for this reason.
    Refused(Reason),
    /// It holds an IP, MAC or name another endpoint of its network holds.
    Conflict,
}

/// An endpoint change [`apply_endpoint_change`] applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A new endpoint, accepted.
    Added(Endpoint),
    /// An accepted endpoint whose record was deleted.
    Removed(Endpoint),
}

/// Applies one watch event on endpoint record `key` (created at `created`; `value` `None`
/// for a deletion) to what [`check`] accepted (`snapshot`, `pins`), giving what [`check`] of
/// the whole listing with that change would give, when that is plain:
/// - a new key whose record passes every check and holds no IP, MAC or name another
///   endpoint of its network holds: it is the newest claim, so it changes nothing else;
/// - the deletion of an accepted endpoint, when `nothing_refused` (no record is refused at
///   the moment: a refused one might win what the deleted one held);
/// - the deletion of a key nobody accepted, when `nothing_refused`: nothing to do.
///
/// Anything else (an overwrite in place, a refusal, a conflict, a record of another kind)
/// returns `None` and may have changed nothing: check the whole listing then. A
/// deletion's `Applied` is `None` when nothing was accepted under the key. Costs one decode
/// and one pass over the endpoints of the network, without allocating.
pub fn apply_endpoint_change(
    snapshot: &mut Snapshot,
    pins: &mut Pins,
    key: &str,
    created: Revision,
    value: Option<&[u8]>,
    nothing_refused: bool,
) -> Result<Option<Applied>, NotPlain> {
    if !key.starts_with(ENDPOINTS) {
        return Err(NotPlain::NotAnEndpoint);
    }
    let Some(value) = value else {
        if !nothing_refused {
            return Err(NotPlain::RefusedRecords);
        }
        let Some((_, e)) = pins.endpoints.remove(key) else {
            return Ok(None);
        };
        snapshot
            .endpoints
            .remove(&(e.network.clone(), e.id.clone()));
        return Ok(Some(Applied::Removed(e)));
    };
    if pins.endpoints.contains_key(key) {
        return Err(NotPlain::Rewritten);
    }
    let entry = Entry {
        key: key.to_owned(),
        value: value.to_vec(),
        created,
    };
    let e = decode::<Endpoint>(&entry)
        .and_then(|e| check_endpoint_fields(&e).map(|()| e))
        .map_err(|(reason, _)| NotPlain::Refused(reason))?;
    check_endpoint_against(snapshot, &e).map_err(|(reason, _)| NotPlain::Refused(reason))?;
    let holds_anything = snapshot
        .endpoints_of(&e.network)
        .any(|o| o.ip == e.ip || o.mac == e.mac || o.name == e.name);
    if holds_anything {
        return Err(NotPlain::Conflict);
    }
    pins.endpoints.insert(entry.key, (created, e.clone()));
    snapshot
        .endpoints
        .insert((e.network.clone(), e.id.clone()), e.clone());
    Ok(Some(Applied::Added(e)))
}

/// What an endpoint holds within its network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Held {
    Ip(Ipv4Addr),
    Mac(String),
    Name(String),
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Held::Ip(ip) => write!(f, "IP {ip}"),
            Held::Mac(mac) => write!(f, "MAC {mac}"),
            Held::Name(name) => write!(f, "name {name}"),
        }
    }
}

fn age(entry: &Entry) -> (Revision, &str) {
    (entry.created, entry.key.as_str())
}

fn rejection(entry: &Entry, reason: Reason, detail: String) -> Rejection {
    Rejection {
        key: entry.key.clone(),
        reason,
        detail,
        fingerprint: fingerprint(&entry.value),
    }
}

type Refusal = (Reason, String);

fn decode<T: serde::de::DeserializeOwned + Keyed>(entry: &Entry) -> Result<T, Refusal> {
    let record: T = serde_json::from_slice(&entry.value).map_err(|e| {
        let mut detail = e.to_string();
        detail.truncate(200);
        (Reason::Undecodable, escape(&detail))
    })?;
    let key = record.key();
    if key != entry.key {
        return Err((
            Reason::KeyMismatch,
            format!("its content names {}", escape(&key)),
        ));
    }
    Ok(record)
}

trait Keyed {
    fn key(&self) -> String;
}

impl Keyed for Network {
    fn key(&self) -> String {
        Network::key(self)
    }
}

impl Keyed for Endpoint {
    fn key(&self) -> String {
        Endpoint::key(self)
    }
}

impl Keyed for Host {
    fn key(&self) -> String {
        Host::key(self)
    }
}

/// The checks of one endpoint on its own (everything but its network, host and claims), for
/// endpoints that come from elsewhere than a listing, such as the daemon's local record.
///
/// # Errors
///
/// The refusal, with an empty key.
pub fn check_endpoint(e: &Endpoint) -> Result<(), Rejection> {
    check_endpoint_fields(e).map_err(|(reason, detail)| Rejection {
        key: String::new(),
        reason,
        detail,
        fingerprint: 0,
    })
}

/// Whether `id` is what [`super::new_id`] makes: 64 lowercase hex digits.
pub fn is_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_id(id: &str) -> Result<(), Refusal> {
    if is_id(id) {
        Ok(())
    } else {
        Err((Reason::InvalidId, escape(id)))
    }
}

fn check_named(what: &'static str, name: &str) -> Result<(), Refusal> {
    check_name(what, name).map_err(|_| (Reason::InvalidName, escape(name)))
}

/// The checks of one network record on its own, as `network create` checks a request.
fn check_network(n: &Network) -> Result<(), Refusal> {
    check_id(&n.id)?;
    check_named("network", &n.name)?;
    if n.vni == 0 || n.vni > ipam::MAX_VNI {
        return Err((Reason::InvalidVni, n.vni.to_string()));
    }
    // The subnet's own rules (prefix length, no host bits) are enforced when it decodes.
    if !n.subnet.is_host(n.gateway) {
        return Err((
            Reason::InvalidGateway,
            format!("{} is not a host address of {}", n.gateway, n.subnet),
        ));
    }
    if !(MIN_MTU..=MAX_MTU).contains(&n.mtu) {
        return Err((Reason::InvalidMtu, n.mtu.to_string()));
    }
    Ok(())
}

fn check_host(h: &Host) -> Result<(), Refusal> {
    check_named("host", &h.name)?;
    check_vtep(h.vtep)
}

/// A VTEP must be an address a host can have and send from.
fn check_vtep(vtep: Ipv4Addr) -> Result<(), Refusal> {
    if vtep.is_unspecified() || vtep.is_multicast() || vtep.is_broadcast() || vtep.is_loopback() {
        Err((Reason::InvalidVtep, vtep.to_string()))
    } else {
        Ok(())
    }
}

/// Whether `mac` is a unicast, non-zero MAC written as vxtap writes it (lowercase, colons).
pub fn is_endpoint_mac(mac: &str) -> bool {
    mac.parse::<MacAddr>()
        .is_ok_and(|m| m.is_unicast() && m.to_string() == mac)
}

/// Whether `name` can be a Linux interface name (`IFNAMSIZ` minus the NUL, no `/`, `:` or
/// white space, not `.` or `..`).
pub fn is_ifname(name: &str) -> bool {
    (1..16).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Longest namespace argument kept (a path under /proc or /var/run/netns is far shorter).
const MAX_NETNS_LEN: usize = 4096;

/// Most aliases an endpoint may carry (Docker's container name, its short id and a few
/// `--network-alias` names fit easily).
pub const MAX_ALIASES: usize = 32;

/// The checks of one endpoint record that need no other record.
fn check_endpoint_fields(e: &Endpoint) -> Result<(), Refusal> {
    check_id(&e.id)?;
    check_id(&e.network)?;
    check_named("endpoint", &e.name)?;
    check_named("host", &e.host)?;
    if !is_endpoint_mac(&e.mac) {
        return Err((Reason::InvalidMac, escape(&e.mac)));
    }
    check_vtep(e.vtep)?;
    if e.aliases.len() > MAX_ALIASES {
        return Err((
            Reason::InvalidName,
            format!("{} aliases, at most {MAX_ALIASES}", e.aliases.len()),
        ));
    }
    for alias in &e.aliases {
        check_named("endpoint alias", alias)?;
    }
    if !is_ifname(&e.ifname) {
        return Err((Reason::InvalidInterface, escape(&e.ifname)));
    }
    let printable = e.netns.chars().all(|c| !c.is_control());
    if e.netns.is_empty() || e.netns.len() > MAX_NETNS_LEN || !printable {
        return Err((Reason::InvalidInterface, escape(&e.netns)));
    }
    Ok(())
}

/// The checks of an endpoint against its network and host.
fn check_endpoint_against(snapshot: &Snapshot, e: &Endpoint) -> Result<(), Refusal> {
    let Some(network) = snapshot.networks.get(&e.network) else {
        return Err((Reason::UnknownNetwork, e.network.clone()));
    };
    if !network.subnet.is_host(e.ip) || e.ip == network.gateway {
        return Err((
            Reason::InvalidIp,
            format!(
                "{} is not a host address of {} other than its gateway {}",
                e.ip, network.subnet, network.gateway
            ),
        ));
    }
    match snapshot.hosts.get(&e.host) {
        None => Err((Reason::UnknownHost, e.host.clone())),
        Some(h) if h.vtep != e.vtep => Err((
            Reason::VtepMismatch,
            format!("VTEP {} but host {} has {}", e.vtep, h.name, h.vtep),
        )),
        Some(_) => Ok(()),
    }
}

/// Why `n` cannot join the networks accepted so far, if it cannot.
fn network_conflict(snapshot: &Snapshot, n: &Network) -> Option<Refusal> {
    snapshot.networks.values().find_map(|other| {
        if other.name == n.name {
            Some((
                Reason::NameConflict,
                format!("name {} is held by the older network {}", n.name, other.id),
            ))
        } else if other.vni == n.vni {
            Some((
                Reason::VniConflict,
                format!("VNI {} is held by the older network {}", n.vni, other.name),
            ))
        } else if other.subnet.overlaps(&n.subnet) {
            Some((
                Reason::SubnetConflict,
                format!(
                    "subnet {} overlaps {} of the older network {}",
                    n.subnet, other.subnet, other.name
                ),
            ))
        } else {
            None
        }
    })
}

/// The most characters of a store value [`escape`] keeps: a whole key (an endpoint key is 139).
const MAX_ESCAPED: usize = 160;

/// `s` with control characters and non-ASCII escaped, at most [`MAX_ESCAPED`] characters:
/// safe to log.
pub fn escape(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_ESCAPED)
        .flat_map(char::escape_default)
        .collect();
    if s.chars().count() > MAX_ESCAPED {
        out.push_str("...");
    }
    out
}

/// FNV-1a: cheap, stable, and only used to tell values apart in the log.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::DEFAULT_MTU;

    const NET: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn network(id: &str, name: &str, vni: u32, subnet: &str) -> Network {
        let subnet: crate::cluster::ipam::Subnet = subnet.parse().unwrap();
        Network {
            id: id.to_owned(),
            name: name.to_owned(),
            vni,
            subnet,
            gateway: subnet.first_host(),
            mtu: DEFAULT_MTU,
            created: 1,
        }
    }

    fn host(name: &str, vtep: [u8; 4]) -> Host {
        Host {
            name: name.to_owned(),
            vtep: Ipv4Addr::from(vtep),
            pid: 1,
            started: 1,
        }
    }

    fn endpoint(id_digit: char, name: &str, ip: [u8; 4], host: &str, vtep: [u8; 4]) -> Endpoint {
        let ip = Ipv4Addr::from(ip);
        Endpoint {
            id: id_digit.to_string().repeat(64),
            network: NET.to_owned(),
            name: name.to_owned(),
            ip,
            mac: format!(
                "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
                ip.octets()[0],
                ip.octets()[1],
                ip.octets()[2],
                ip.octets()[3]
            ),
            host: host.to_owned(),
            vtep: Ipv4Addr::from(vtep),
            netns: format!("ns-{name}"),
            ifname: "eth0".to_owned(),
            aliases: Vec::new(),
        }
    }

    fn entry(key: String, value: Vec<u8>, created: Revision) -> Entry {
        Entry {
            key,
            value,
            created,
        }
    }

    /// A store with network NET (10.0.0.0/24), hosts h1 (198.18.0.1) and h2 (198.18.0.2),
    /// plus `extra`.
    fn listing(extra: Vec<Entry>) -> Listing {
        let n = network(NET, "net", 42, "10.0.0.0/24");
        let mut entries = vec![
            entry(n.key(), serde_json::to_vec(&n).unwrap(), 1),
            {
                let h = host("h1", [198, 18, 0, 1]);
                entry(h.key(), serde_json::to_vec(&h).unwrap(), 2)
            },
            {
                let h = host("h2", [198, 18, 0, 2]);
                entry(h.key(), serde_json::to_vec(&h).unwrap(), 3)
            },
        ];
        entries.extend(extra);
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Listing {
            entries,
            revision: 100,
        }
    }

    fn put(e: &Endpoint, created: Revision) -> Entry {
        entry(e.key(), serde_json::to_vec(e).unwrap(), created)
    }

    fn reasons(checked: &Checked) -> Vec<(String, Reason)> {
        checked
            .rejected
            .iter()
            .map(|r| (r.key.clone(), r.reason))
            .collect()
    }

    #[test]
    fn good_records_pass() {
        let a = endpoint('1', "a", [10, 0, 0, 2], "h1", [198, 18, 0, 1]);
        let b = endpoint('2', "b", [10, 0, 0, 3], "h2", [198, 18, 0, 2]);
        let checked = check(&listing(vec![put(&a, 10), put(&b, 11)]), &Pins::default());
        assert_eq!(reasons(&checked), []);
        assert_eq!(checked.snapshot.networks.len(), 1);
        assert_eq!(checked.snapshot.hosts.len(), 2);
        assert_eq!(checked.snapshot.endpoints.len(), 2);
        // The network and both endpoints.
        assert_eq!(checked.pins.len(), 3);
    }

    /// Each malformed endpoint is refused for its own reason, and the good one beside them is
    /// still accepted.
    #[test]
    fn every_field_is_checked_and_bad_records_block_nothing() {
        let good = endpoint('1', "good", [10, 0, 0, 2], "h1", [198, 18, 0, 1]);
        let base = || endpoint('2', "bad", [10, 0, 0, 9], "h2", [198, 18, 0, 2]);
        let cases: Vec<(Endpoint, Reason)> = vec![
            (
                Endpoint {
                    name: "x\n10.79.0.66 bank.example".into(),
                    ..base()
                },
                Reason::InvalidName,
            ),
            (
                Endpoint {
                    name: "a".repeat(65),
                    ..base()
                },
                Reason::InvalidName,
            ),
            (
                Endpoint {
                    mac: "00:00:00:00:00:00".into(),
                    ..base()
                },
                Reason::InvalidMac,
            ),
            (
                Endpoint {
                    mac: "ff:ff:ff:ff:ff:ff".into(),
                    ..base()
                },
                Reason::InvalidMac,
            ),
            (
                Endpoint {
                    mac: "03:42:0a:00:00:09".into(),
                    ..base()
                },
                Reason::InvalidMac,
            ),
            (
                Endpoint {
                    mac: "02:42:0A:00:00:09".into(),
                    ..base()
                },
                Reason::InvalidMac,
            ),
            (
                Endpoint {
                    mac: "bogus".into(),
                    ..base()
                },
                Reason::InvalidMac,
            ),
            (
                Endpoint {
                    ip: Ipv4Addr::new(10, 79, 0, 66),
                    ..base()
                },
                Reason::InvalidIp,
            ),
            (
                Endpoint {
                    ip: Ipv4Addr::new(10, 0, 0, 1),
                    ..base()
                },
                Reason::InvalidIp,
            ),
            (
                Endpoint {
                    ip: Ipv4Addr::new(10, 0, 0, 255),
                    ..base()
                },
                Reason::InvalidIp,
            ),
            (
                Endpoint {
                    vtep: Ipv4Addr::new(224, 0, 0, 1),
                    ..base()
                },
                Reason::InvalidVtep,
            ),
            (
                Endpoint {
                    vtep: Ipv4Addr::UNSPECIFIED,
                    ..base()
                },
                Reason::InvalidVtep,
            ),
            (
                Endpoint {
                    vtep: Ipv4Addr::new(198, 18, 0, 66),
                    ..base()
                },
                Reason::VtepMismatch,
            ),
            (
                Endpoint {
                    host: "h9".into(),
                    vtep: Ipv4Addr::new(198, 18, 0, 66),
                    ..base()
                },
                Reason::UnknownHost,
            ),
            (
                Endpoint {
                    host: "h2/../x".into(),
                    ..base()
                },
                Reason::InvalidName,
            ),
            (
                Endpoint {
                    ifname: "eth0/../../x".into(),
                    ..base()
                },
                Reason::InvalidInterface,
            ),
            (
                Endpoint {
                    ifname: String::new(),
                    ..base()
                },
                Reason::InvalidInterface,
            ),
            (
                Endpoint {
                    netns: "c1\nx".into(),
                    ..base()
                },
                Reason::InvalidInterface,
            ),
            (
                Endpoint {
                    network: "b".repeat(64),
                    ..base()
                },
                Reason::UnknownNetwork,
            ),
            (
                Endpoint {
                    network: "NET".into(),
                    ..base()
                },
                Reason::InvalidId,
            ),
        ];
        for (bad, reason) in cases {
            let checked = check(
                &listing(vec![put(&good, 5), put(&bad, 4)]),
                &Pins::default(),
            );
            assert_eq!(
                reasons(&checked),
                [(bad.key(), reason)],
                "{bad:?} should be refused as {reason}"
            );
            assert_eq!(checked.snapshot.endpoints.len(), 1, "{bad:?}");
            assert!(
                checked.snapshot.endpoints.values().all(|e| *e == good),
                "the good endpoint must survive {bad:?}"
            );
        }
    }

    #[test]
    fn undecodable_misfiled_and_stray_records_are_refused() {
        let n = network(NET, "net", 42, "10.0.0.0/24");
        let checked = check(
            &listing(vec![
                entry(format!("endpoints/{NET}/x"), b"{not json".to_vec(), 9),
                // A record filed under another key is not trusted.
                entry(
                    format!("networks/{}", "b".repeat(64)),
                    serde_json::to_vec(&n).unwrap(),
                    9,
                ),
                entry("stray".into(), vec![], 9),
            ]),
            &Pins::default(),
        );
        let mut got = reasons(&checked);
        got.sort();
        assert_eq!(
            got,
            [
                (format!("endpoints/{NET}/x"), Reason::Undecodable),
                (format!("networks/{}", "b".repeat(64)), Reason::KeyMismatch),
                ("stray".to_owned(), Reason::UnknownPrefix),
            ]
        );
        assert_eq!(checked.snapshot.networks.len(), 1);
    }

    /// Claims are neither records nor refusals, whatever they hold; a key that only looks
    /// like one (`claimsx/...`, `claims` alone) is still refused.
    #[test]
    fn claims_are_known_and_skipped() {
        let plain = check(&listing(vec![]), &Pins::default());
        let checked = check(
            &listing(vec![
                entry(format!("claims/{NET}/ip/10.0.0.2"), b"garbage".to_vec(), 9),
                entry(format!("claims/{NET}/name/web"), vec![], 9),
                entry("claims/vni/42".into(), b"{not json".to_vec(), 9),
                entry("claims/network-name/net".into(), b"networks/x".to_vec(), 9),
                entry("claimsx/a".into(), vec![], 9),
                entry("claims".into(), vec![], 9),
            ]),
            &Pins::default(),
        );
        let mut got = reasons(&checked);
        got.sort();
        assert_eq!(
            got,
            [
                ("claims".to_owned(), Reason::UnknownPrefix),
                ("claimsx/a".to_owned(), Reason::UnknownPrefix),
            ]
        );
        assert_eq!(checked.snapshot, plain.snapshot);
    }

    #[test]
    fn malformed_networks_are_refused() {
        let base = || network(&"b".repeat(64), "other", 43, "10.0.1.0/24");
        let cases = [
            (
                Network {
                    name: "a b".into(),
                    ..base()
                },
                Reason::InvalidName,
            ),
            (Network { vni: 0, ..base() }, Reason::InvalidVni),
            (
                Network {
                    vni: 1 << 24,
                    ..base()
                },
                Reason::InvalidVni,
            ),
            (
                Network {
                    gateway: Ipv4Addr::new(10, 0, 2, 1),
                    ..base()
                },
                Reason::InvalidGateway,
            ),
            (Network { mtu: 10, ..base() }, Reason::InvalidMtu),
            (
                Network {
                    id: "B".repeat(64),
                    ..base()
                },
                Reason::InvalidId,
            ),
            (
                Network {
                    name: "net".into(),
                    ..base()
                },
                Reason::NameConflict,
            ),
            (Network { vni: 42, ..base() }, Reason::VniConflict),
            (
                Network {
                    subnet: "10.0.0.0/16".parse().unwrap(),
                    gateway: Ipv4Addr::new(10, 0, 0, 1),
                    ..base()
                },
                Reason::SubnetConflict,
            ),
        ];
        for (bad, reason) in cases {
            let value = serde_json::to_vec(&bad).unwrap();
            let checked = check(
                &listing(vec![entry(bad.key(), value, 50)]),
                &Pins::default(),
            );
            assert_eq!(reasons(&checked), [(bad.key(), reason)], "{bad:?}");
            assert_eq!(checked.snapshot.networks.len(), 1);
        }
        // A subnet with host bits set does not even decode.
        let mut raw = serde_json::to_value(base()).unwrap();
        raw["subnet"] = "10.0.1.7/24".into();
        let checked = check(
            &listing(vec![entry(base().key(), raw.to_string().into_bytes(), 50)]),
            &Pins::default(),
        );
        assert_eq!(reasons(&checked), [(base().key(), Reason::Undecodable)]);
    }

    /// An endpoint claiming a held IP or MAC with its own VTEP (a hijack) is refused, however
    /// its key sorts; the older claim keeps being programmed.
    #[test]
    fn the_first_claim_wins() {
        let victim = endpoint('5', "victim", [10, 0, 0, 2], "h1", [198, 18, 0, 1]);
        for thief_digit in ['0', '9'] {
            let thief = Endpoint {
                id: thief_digit.to_string().repeat(64),
                name: "thief".into(),
                host: "h2".into(),
                vtep: Ipv4Addr::new(198, 18, 0, 2),
                ..victim.clone()
            };
            let checked = check(
                &listing(vec![put(&victim, 10), put(&thief, 11)]),
                &Pins::default(),
            );
            assert_eq!(reasons(&checked), [(thief.key(), Reason::IpConflict)]);
            let kept: Vec<&Endpoint> = checked.snapshot.endpoints.values().collect();
            assert_eq!(kept, [&victim]);
            // The older one wins whichever it is.
            let checked = check(
                &listing(vec![put(&victim, 12), put(&thief, 11)]),
                &Pins::default(),
            );
            assert_eq!(reasons(&checked), [(victim.key(), Reason::IpConflict)]);
        }
        // A MAC alone, and a name alone.
        let mac_thief = Endpoint {
            id: "6".repeat(64),
            name: "m".into(),
            ip: Ipv4Addr::new(10, 0, 0, 7),
            ..victim.clone()
        };
        let name_thief = Endpoint {
            id: "7".repeat(64),
            ip: Ipv4Addr::new(10, 0, 0, 8),
            mac: "02:42:0a:00:00:08".into(),
            ..victim.clone()
        };
        let checked = check(
            &listing(vec![
                put(&victim, 10),
                put(&mac_thief, 11),
                put(&name_thief, 12),
            ]),
            &Pins::default(),
        );
        assert_eq!(
            reasons(&checked),
            [
                (mac_thief.key(), Reason::MacConflict),
                (name_thief.key(), Reason::EndpointNameConflict)
            ]
        );
        assert_eq!(checked.snapshot.endpoints.len(), 1);
    }

    /// An overwrite in place keeps its key's creation revision; the pinned endpoint stays.
    #[test]
    fn overwrites_in_place_are_refused_while_pinned() {
        let victim = endpoint('5', "victim", [10, 0, 0, 2], "h1", [198, 18, 0, 1]);
        let first = check(&listing(vec![put(&victim, 10)]), &Pins::default());
        assert_eq!(first.pins.len(), 2);
        let rewritten = Endpoint {
            host: "h2".into(),
            vtep: Ipv4Addr::new(198, 18, 0, 2),
            ..victim.clone()
        };
        let second = check(&listing(vec![put(&rewritten, 10)]), &first.pins);
        assert_eq!(reasons(&second), [(victim.key(), Reason::Rebound)]);
        let kept: Vec<&Endpoint> = second.snapshot.endpoints.values().collect();
        assert_eq!(kept, [&victim]);
        // The same value written again (a republish) is no rebinding.
        let third = check(&listing(vec![put(&victim, 10)]), &second.pins);
        assert_eq!(reasons(&third), []);
        // Deleted and created anew, the key is a new claim.
        let gone = check(&listing(vec![]), &third.pins);
        assert_eq!(gone.pins.len(), 1, "only the network is left pinned");
        let fresh = check(&listing(vec![put(&rewritten, 30)]), &gone.pins);
        assert_eq!(reasons(&fresh), []);
        // Without pins (a host that starts later) the overwrite cannot be told apart.
        let later = check(&listing(vec![put(&rewritten, 10)]), &Pins::default());
        assert_eq!(reasons(&later), []);
    }

    /// The owner may rename its endpoint in place (Docker names a container only after its
    /// address is claimed): names, aliases, namespace and interface change, the binding does
    /// not, so the new value is accepted and keeps its age. Bad aliases are refused.
    #[test]
    fn renames_in_place_are_accepted_and_aliases_checked() {
        let e = endpoint('5', "docker-10-0-0-2", [10, 0, 0, 2], "h1", [198, 18, 0, 1]);
        let first = check(&listing(vec![put(&e, 10)]), &Pins::default());
        let renamed = Endpoint {
            name: "bbox1".into(),
            aliases: vec!["web".into(), "0123456789ab".into()],
            netns: "docker:0123456789ab".into(),
            ifname: "eth".into(),
            ..e.clone()
        };
        let second = check(&listing(vec![put(&renamed, 10)]), &first.pins);
        assert_eq!(reasons(&second), []);
        let kept: Vec<&Endpoint> = second.snapshot.endpoints.values().collect();
        assert_eq!(kept, [&renamed]);
        for aliases in [
            vec!["bad name".to_owned()],
            vec!["a".to_owned(); MAX_ALIASES + 1],
        ] {
            let bad = Endpoint {
                aliases,
                ..renamed.clone()
            };
            let third = check(&listing(vec![put(&bad, 10)]), &second.pins);
            assert_eq!(reasons(&third), [(e.key(), Reason::InvalidName)]);
            let kept: Vec<&Endpoint> = third.snapshot.endpoints.values().collect();
            assert_eq!(kept, [&renamed], "the pinned value stays");
        }
    }

    /// Networks never change either: a rewritten network (say, a new subnet that would make
    /// every endpoint's IP invalid) keeps the pinned one, and so do its endpoints; garbage
    /// written over a pinned key is refused for what it is and the pinned record stays.
    #[test]
    fn pinned_networks_and_garbage_over_pins_keep_what_was_accepted() {
        let a = endpoint('1', "a", [10, 0, 0, 2], "h1", [198, 18, 0, 1]);
        let first = check(&listing(vec![put(&a, 10)]), &Pins::default());
        assert_eq!(first.pins.len(), 2);
        let moved = network(NET, "net", 42, "10.9.0.0/24");
        let mut l = listing(vec![put(&a, 10)]);
        let key = moved.key();
        let slot = l.entries.iter_mut().find(|e| e.key == key).unwrap();
        slot.value = serde_json::to_vec(&moved).unwrap();
        let second = check(&l, &first.pins);
        assert_eq!(reasons(&second), [(key.clone(), Reason::Rebound)]);
        assert_eq!(second.snapshot, first.snapshot);
        // Garbage over the endpoint, and over the network.
        let mut l = listing(vec![entry(a.key(), b"{garbage".to_vec(), 10)]);
        let slot = l.entries.iter_mut().find(|e| e.key == key).unwrap();
        slot.value = b"null".to_vec();
        let third = check(&l, &second.pins);
        let mut got = reasons(&third);
        got.sort();
        assert_eq!(
            got,
            [
                (a.key(), Reason::Undecodable),
                (key.clone(), Reason::Undecodable)
            ]
        );
        assert_eq!(third.snapshot, first.snapshot);
        // Created anew, the network is a new claim.
        let mut l = listing(vec![]);
        let slot = l.entries.iter_mut().find(|e| e.key == key).unwrap();
        slot.value = serde_json::to_vec(&moved).unwrap();
        slot.created = 99;
        let fresh = check(&l, &third.pins);
        assert_eq!(reasons(&fresh), []);
        assert_eq!(fresh.snapshot.networks[NET].subnet, moved.subnet);
    }

    #[test]
    fn endpoints_of_a_refused_network_are_refused() {
        let dup = network(&"b".repeat(64), "net", 43, "10.0.1.0/24");
        let e = Endpoint {
            network: dup.id.clone(),
            ..endpoint('1', "a", [10, 0, 1, 2], "h1", [198, 18, 0, 1])
        };
        let checked = check(
            &listing(vec![
                entry(dup.key(), serde_json::to_vec(&dup).unwrap(), 50),
                put(&e, 51),
            ]),
            &Pins::default(),
        );
        let mut got = reasons(&checked);
        got.sort();
        assert_eq!(
            got,
            [
                (e.key(), Reason::UnknownNetwork),
                (dup.key(), Reason::NameConflict)
            ]
        );
    }

    #[test]
    fn reasons_are_listed_once_with_unique_names() {
        let names: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        assert_eq!(escape("a\nb\u{1b}"), "a\\nb\\u{1b}");
        assert_eq!(escape(&"x".repeat(200)).len(), MAX_ESCAPED + 3);
    }

    /// Every change applied incrementally gives what checking the whole listing gives; the
    /// cases that are not plain are left to the whole check.
    #[test]
    fn incremental_changes_match_the_whole_check() {
        let a = endpoint('1', "a", [10, 0, 0, 2], "h1", [198, 18, 0, 1]);
        let b = endpoint('2', "b", [10, 0, 0, 3], "h2", [198, 18, 0, 2]);
        let start = check(&listing(vec![put(&a, 10)]), &Pins::default());
        assert!(start.rejected.is_empty());
        let (mut snapshot, mut pins) = (start.snapshot.clone(), start.pins.clone());

        // A new endpoint.
        let b_value = serde_json::to_vec(&b).unwrap();
        let applied =
            apply_endpoint_change(&mut snapshot, &mut pins, &b.key(), 11, Some(&b_value), true);
        assert_eq!(applied, Ok(Some(Applied::Added(b.clone()))));
        let whole = check(&listing(vec![put(&a, 10), put(&b, 11)]), &start.pins);
        assert_eq!((&snapshot, &pins), (&whole.snapshot, &whole.pins));

        // Its deletion.
        let applied = apply_endpoint_change(&mut snapshot, &mut pins, &b.key(), 0, None, true);
        assert_eq!(applied, Ok(Some(Applied::Removed(b.clone()))));
        let whole = check(&listing(vec![put(&a, 10)]), &whole.pins);
        assert_eq!((&snapshot, &pins), (&whole.snapshot, &whole.pins));
        // A deletion of what nobody accepted changes nothing.
        let applied = apply_endpoint_change(&mut snapshot, &mut pins, &b.key(), 0, None, true);
        assert_eq!(applied, Ok(None));
        assert_eq!((&snapshot, &pins), (&whole.snapshot, &whole.pins));

        // Not plain: left to the whole check, with nothing changed.
        let before = (snapshot.clone(), pins.clone());
        let same_ip = endpoint('3', "c", [10, 0, 0, 2], "h2", [198, 18, 0, 2]);
        let same_mac = Endpoint {
            ip: Ipv4Addr::new(10, 0, 0, 7),
            ..endpoint('3', "c", [10, 0, 0, 2], "h2", [198, 18, 0, 2])
        };
        let same_name = endpoint('3', "a", [10, 0, 0, 8], "h2", [198, 18, 0, 2]);
        let unknown_host = endpoint('3', "c", [10, 0, 0, 9], "h9", [198, 18, 0, 9]);
        let rewritten = Endpoint {
            name: "renamed".to_owned(),
            ..a.clone()
        };
        for (e, why) in [
            (&same_ip, NotPlain::Conflict),
            (&same_mac, NotPlain::Conflict),
            (&same_name, NotPlain::Conflict),
            (&unknown_host, NotPlain::Refused(Reason::UnknownHost)),
            (&rewritten, NotPlain::Rewritten),
        ] {
            let value = serde_json::to_vec(e).unwrap();
            let applied =
                apply_endpoint_change(&mut snapshot, &mut pins, &e.key(), 12, Some(&value), true);
            assert_eq!(applied, Err(why), "{e:?}");
            assert_eq!((&snapshot, &pins), (&before.0, &before.1));
        }
        for (key, value) in [
            (b.key(), &b"not json"[..]),
            (format!("{ENDPOINTS}{NET}/{}", "9".repeat(64)), &b_value[..]),
            (format!("{NETWORKS}{NET}"), &b_value[..]),
        ] {
            let applied =
                apply_endpoint_change(&mut snapshot, &mut pins, &key, 12, Some(value), true);
            assert!(applied.is_err(), "{key}");
        }
        // A deletion while something is refused: the refused one may win now.
        let applied = apply_endpoint_change(&mut snapshot, &mut pins, &a.key(), 0, None, false);
        assert_eq!(applied, Err(NotPlain::RefusedRecords));
        assert_eq!((&snapshot, &pins), (&before.0, &before.1));
    }
}

//! Claims: the uniqueness a connect or a network create must hold, as store keys taken by
//! create-if-absent txns ([`Store::commit`](crate::store::Store::commit)) instead of a check
//! made under the cluster lock. Two hosts connecting different containers then never wait for
//! each other, and two hosts claiming the same IP are told apart by the store itself.
//!
//! The keys live under the top-level prefix [`CLAIMS`], outside `networks/`, `hosts/` and
//! `endpoints/NET/`, so a host listing or watching those never reads a claim:
//! - `claims/NET_ID/ip/A.B.C.D`: an endpoint's IP within its network. It covers the MAC as
//!   well: every endpoint vxtap writes has the MAC [`super::ipam::mac_for`] derives from its IP
//!   (`02:42` and the four octets, a one-to-one map): [`super::plan_endpoint`] is the only
//!   place an endpoint is made, it sets `mac` from the IP, and the Docker driver refuses a
//!   `--mac-address` other than the derived one. Two endpoints with distinct IPs therefore
//!   have distinct MACs.
//! - `claims/NET_ID/name/NAME`: an endpoint's name within its network.
//! - `claims/vni/N`: a network's VNI.
//! - `claims/network-name/NAME`: a network's name.
//!
//! A claim's value is the key of the record that holds it (`endpoints/NET_ID/ID`,
//! `networks/ID`), so a refused claim says who holds it ([`conflict_error`]), and a release
//! is conditioned on the claim still naming the releaser, so nobody releases what another
//! holds. Endpoint claims are written with the endpoint record, in the same txn and with the
//! same [`Lifetime::Session`], so they appear and vanish together: a host whose session ends
//! frees its endpoints' IPs and names with them. Network claims are permanent, as networks
//! are.
//!
//! What claims do not cover: overlapping subnets (a range is no single key: `network create`
//! keeps the cluster lock for that check and writes the network with
//! [`Locked::commit`](crate::store::Locked::commit)); a container connected twice to one
//! network (a question for its own host); and records written without claims (by a vxtap
//! from before claims). Readers still apply [`super::validate`]'s first-claim-wins, and a
//! writer still checks its snapshot before it claims; claims make the write itself safe.
//!
//! Everything here is pure: it builds [`Txn`]s and reads conflicts; the caller commits.

use super::{ClusterError, Endpoint, Network, Snapshot, ENDPOINTS, NETWORKS};
use crate::store::{Committed, Condition, Entry, Lifetime, Txn};
use std::net::Ipv4Addr;

/// The prefix of every claim key.
pub const CLAIMS: &str = "claims/";

/// The claim on `ip` within network `network_id`.
pub fn ip_claim(network_id: &str, ip: Ipv4Addr) -> String {
    format!("{CLAIMS}{network_id}/ip/{ip}")
}

/// The claim on endpoint name `name` within network `network_id`.
pub fn name_claim(network_id: &str, name: &str) -> String {
    format!("{CLAIMS}{network_id}/name/{name}")
}

/// The claim on VNI `vni`.
pub fn vni_claim(vni: u32) -> String {
    format!("{CLAIMS}vni/{vni}")
}

/// The claim on network name `name`.
pub fn network_name_claim(name: &str) -> String {
    format!("{CLAIMS}network-name/{name}")
}

/// The claims `endpoint` holds: its IP's and its name's.
pub fn endpoint_claims(endpoint: &Endpoint) -> [String; 2] {
    [
        ip_claim(&endpoint.network, endpoint.ip),
        name_claim(&endpoint.network, &endpoint.name),
    ]
}

/// The claims `network` holds: its VNI's and its name's.
pub fn network_claims(network: &Network) -> [String; 2] {
    [vni_claim(network.vni), network_name_claim(&network.name)]
}

/// Our own model types always serialise.
fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Publishes a new endpoint: creates its IP and name claims and its record, all with
/// [`Lifetime::Session`], provided its network still exists. On a conflict nothing was
/// written; [`conflict_error`] says why. Conditions, in the order a conflict reports them:
/// the IP claim, the name claim, the network record, the endpoint record.
pub fn endpoint_txn(endpoint: &Endpoint) -> Txn {
    let key = endpoint.key();
    let [ip, name] = endpoint_claims(endpoint);
    Txn::new()
        .create(ip, key.as_bytes(), Lifetime::Session)
        .create(name, key.as_bytes(), Lifetime::Session)
        .require(
            format!("{NETWORKS}{}", endpoint.network),
            Condition::Present,
        )
        .create(key, &to_json(endpoint), Lifetime::Session)
}

/// Reserves a new endpoint's IP and name before its container is plumbed: creates both
/// claims (valued with the endpoint's record key, [`Lifetime::Session`]), provided the
/// network still exists; writes no record. Once plumbed, [`endpoint_republish_txn`] writes
/// the record (the claims name it); if plumbing fails, [`endpoint_removal`] releases them.
/// A host that dies in between leaves claims that vanish with its session. Conditions, in
/// the order a conflict reports them: the IP claim, the name claim, the network record.
pub fn endpoint_reservation(endpoint: &Endpoint) -> Txn {
    let key = endpoint.key();
    let [ip, name] = endpoint_claims(endpoint);
    Txn::new()
        .create(ip, key.as_bytes(), Lifetime::Session)
        .create(name, key.as_bytes(), Lifetime::Session)
        .require(
            format!("{NETWORKS}{}", endpoint.network),
            Condition::Present,
        )
}

/// Publishes a local endpoint again: each claim not in `absent` must name the endpoint and
/// is written again (bound to this session), each claim in `absent` is created
/// (create-if-absent), and the record is written. So a host republishing after a restart
/// commits this with `absent` empty, and on a conflict on a claim found missing commits
/// again with it added ([`commit_adapting`] does that loop); a claim found naming another
/// endpoint means the endpoint lost it while its host was away. This is also how a store
/// written before claims is migrated: every host claims its own endpoints when it starts.
pub fn endpoint_republish_txn(endpoint: &Endpoint, absent: &[String]) -> Txn {
    let key = endpoint.key();
    let mut txn = Txn::new();
    for claim in endpoint_claims(endpoint) {
        txn = if absent.contains(&claim) {
            txn.create(claim, key.as_bytes(), Lifetime::Session)
        } else {
            txn.require(claim.clone(), Condition::Value(key.clone().into_bytes()))
                .put(claim, key.as_bytes(), Lifetime::Session)
        };
    }
    txn.put(key, &to_json(endpoint), Lifetime::Session)
}

/// Commits the txn `build` makes from the claims set aside so far, learning them from
/// conflicts: a conflict on one of `claims` whose holder `set_aside` accepts adds the claim
/// and commits again, at most once per claim. For [`endpoint_republish_txn`], set aside the
/// claims found missing (they are to be created). For [`endpoint_removal`] and
/// [`network_removal`], set aside every claim that does not name the record (missing: a
/// record from before claims, or released already; another holder: lost meanwhile), so
/// the record goes and nobody else's claim does. Any other conflict is the answer.
///
/// # Errors
///
/// What `commit` returns.
pub fn commit_adapting<E>(
    claims: &[String],
    set_aside: impl Fn(Option<&Entry>) -> bool,
    build: impl Fn(&[String]) -> Txn,
    mut commit: impl FnMut(&Txn) -> Result<Committed, E>,
) -> Result<Committed, E> {
    let mut aside: Vec<String> = Vec::new();
    loop {
        match commit(&build(&aside))? {
            Committed::Conflict { key, found }
                if claims.contains(&key) && !aside.contains(&key) && set_aside(found.as_ref()) =>
            {
                aside.push(key);
            }
            answer => return Ok(answer),
        }
    }
}

/// For [`commit_adapting`]: set aside the claims found missing.
pub fn missing(found: Option<&Entry>) -> bool {
    found.is_none()
}

/// For [`commit_adapting`]: set aside every claim found not naming the record (removals).
pub fn any(_found: Option<&Entry>) -> bool {
    true
}

/// Removes an endpoint: deletes its record and releases its claims, each release
/// conditioned on the claim still naming the endpoint. Claims in `lost` (found not naming
/// it, by an earlier attempt's conflict) are left alone. So a disconnect commits this with
/// `lost` empty, and on a conflict on claim `k` commits again with `k` added (at most twice
/// more: an endpoint has two claims); the record is deleted unconditionally, as a delete of
/// a missing key does nothing.
pub fn endpoint_removal(endpoint: &Endpoint, lost: &[String]) -> Txn {
    let key = endpoint.key();
    let mut txn = Txn::new();
    for claim in endpoint_claims(endpoint) {
        if !lost.contains(&claim) {
            txn = txn
                .require(claim.clone(), Condition::Value(key.clone().into_bytes()))
                .delete(claim);
        }
    }
    txn.delete(key)
}

/// Rewrites endpoint `old` as `renamed`, which may differ from it only in its name, aliases,
/// namespace and interface (what [`super::validate`] lets change in place: Docker names an
/// endpoint after its address was claimed); `None` if anything else differs. Applies only
/// while `old`'s IP claim names it, which holds exactly while its record is the one this
/// host published (claims and record are written and removed together, and endpoint ids are
/// random, so a record deleted and written again is another endpoint). A new name is claimed
/// (create-if-absent) and the old name released in the same txn; a conflict on the new
/// name's claim is a [`ClusterError::DuplicateName`]: keep the old name.
///
/// Why the IP claim and not the record's creation revision: a host learns its record's
/// revision only from etcd's answer or a listing (the dir backend's creation stamp is not
/// its revision, and watch events carry none), while the claim's value is known up front.
pub fn rename_txn(old: &Endpoint, renamed: &Endpoint) -> Option<Txn> {
    let same_binding = Endpoint {
        name: old.name.clone(),
        aliases: old.aliases.clone(),
        netns: old.netns.clone(),
        ifname: old.ifname.clone(),
        ..renamed.clone()
    } == *old;
    if !same_binding {
        return None;
    }
    let key = old.key();
    let mine = || Condition::Value(key.clone().into_bytes());
    let mut txn = Txn::new().require(ip_claim(&old.network, old.ip), mine());
    if renamed.name != old.name {
        let old_name = name_claim(&old.network, &old.name);
        txn = txn
            .create(
                name_claim(&old.network, &renamed.name),
                key.as_bytes(),
                Lifetime::Session,
            )
            .require(old_name.clone(), mine())
            .delete(old_name);
    }
    Some(txn.put(key.clone(), &to_json(renamed), Lifetime::Session))
}

/// Creates a network: its VNI and name claims and its record, permanent, all
/// create-if-absent. Conditions, in the order a conflict reports them: the VNI claim, the
/// name claim, the record. Overlapping subnets are not claims: commit this through
/// [`Locked::commit`](crate::store::Locked::commit) after checking the subnet under the lock.
pub fn network_txn(network: &Network) -> Txn {
    let key = network.key();
    let [vni, name] = network_claims(network);
    Txn::new()
        .create(vni, key.as_bytes(), Lifetime::Permanent)
        .create(name, key.as_bytes(), Lifetime::Permanent)
        .create(key, &to_json(network), Lifetime::Permanent)
}

/// Removes a network: its record and its claims (each conditioned on naming it; claims in
/// `lost` are left alone, as in [`endpoint_removal`]), provided no endpoint of it exists; a
/// conflict on `endpoints/NET_ID` ([`ClusterError::NetworkInUse`]) names one. Since
/// [`endpoint_txn`] requires the network record, a connect and a removal racing cannot leave
/// an endpoint of a removed network: one of the two txns is refused.
pub fn network_removal(network: &Network, lost: &[String]) -> Txn {
    let key = network.key();
    let mut txn = Txn::new().require(
        format!("{ENDPOINTS}{}", network.id),
        Condition::NothingUnder,
    );
    for claim in network_claims(network) {
        if !lost.contains(&claim) {
            txn = txn
                .require(claim.clone(), Condition::Value(key.clone().into_bytes()))
                .delete(claim);
        }
    }
    txn.require(key.clone(), Condition::Present).delete(key)
}

/// The [`ClusterError`] for a conflict on `key` where the store held `found`, naming the
/// holder from `snapshot` (a holder the snapshot does not know yet is named by its short
/// id). Works for every txn of this module:
/// - IP claim: `DuplicateIp`; name claim: `DuplicateName`;
/// - VNI claim: `VniInUse`; network name claim: `NetworkExists`;
/// - the network record missing: `UnknownNetwork`;
/// - endpoints under a network being removed: `NetworkInUse`;
/// - anything else (a claim found released, an id that collides): `Claimed`.
pub fn conflict_error(key: &str, found: Option<&Entry>, snapshot: &Snapshot) -> ClusterError {
    let holder = found.map(|entry| String::from_utf8_lossy(&entry.value).into_owned());
    let segments: Vec<&str> = key.split('/').collect();
    let network_name = |id: &str| {
        snapshot
            .networks
            .get(id)
            .map_or_else(|| short(id), |n| n.name.clone())
    };
    match (segments.as_slice(), &holder) {
        (["claims", "vni", vni], Some(holder)) => match vni.parse() {
            Ok(vni) => ClusterError::VniInUse {
                vni,
                other: holder_name(holder, snapshot),
            },
            Err(_) => claimed(key, found),
        },
        (["claims", "network-name", name], Some(_)) => {
            ClusterError::NetworkExists((*name).to_owned())
        }
        (["claims", network, "ip", ip], Some(holder)) => match ip.parse() {
            Ok(ip) => ClusterError::DuplicateIp {
                ip,
                other: holder_name(holder, snapshot),
                network: network_name(network),
            },
            Err(_) => claimed(key, found),
        },
        (["claims", network, "name", name], Some(_)) => ClusterError::DuplicateName {
            name: (*name).to_owned(),
            network: network_name(network),
        },
        (["networks", id], None) => ClusterError::UnknownNetwork(network_name(id)),
        (["endpoints", id], Some(_)) => ClusterError::NetworkInUse {
            name: network_name(id),
            // At least the one found; the snapshot may know more.
            count: snapshot.endpoints_of(id).count().max(1),
            names: found
                .map(|entry| holder_name(&entry.key, snapshot))
                .unwrap_or_default(),
        },
        _ => claimed(key, found),
    }
}

/// `Claimed`, for a conflict no other error describes.
fn claimed(key: &str, found: Option<&Entry>) -> ClusterError {
    ClusterError::Claimed {
        key: key.to_owned(),
        holder: found.map_or_else(
            || "nothing".to_owned(),
            |entry| super::validate::escape(&String::from_utf8_lossy(&entry.value)),
        ),
    }
}

/// The name of the record whose key is `holder` (`endpoints/NET/ID`, `networks/ID`), from
/// `snapshot`, or its short id if the snapshot does not hold it.
fn holder_name(holder: &str, snapshot: &Snapshot) -> String {
    let segments: Vec<&str> = holder.split('/').collect();
    match segments.as_slice() {
        ["endpoints", network, id] => snapshot
            .endpoints
            .get(&((*network).to_owned(), (*id).to_owned()))
            .map_or_else(|| short(id), |e| e.name.clone()),
        ["networks", id] => snapshot
            .networks
            .get(*id)
            .map_or_else(|| short(id), |n| n.name.clone()),
        _ => super::validate::escape(holder),
    }
}

/// The first 12 characters of an id, escaped (it came from the store).
fn short(id: &str) -> String {
    super::validate::escape(id.get(..12).unwrap_or(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ipam, plan_endpoint, EndpointRequest, Host, DEFAULT_MTU};
    use crate::store::dir::DirStore;
    use crate::store::{check_key, Committed, Listing, Store};

    const NET: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn network(id: &str, name: &str, vni: u32, subnet: &str) -> Network {
        let subnet: ipam::Subnet = subnet.parse().unwrap();
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

    /// An endpoint as `plan_endpoint` makes it (its MAC derived from its IP).
    fn endpoint(id_digit: char, name: &str, ip: [u8; 4]) -> Endpoint {
        let n = network(NET, "net", 42, "10.0.0.0/24");
        let request = EndpointRequest {
            name: name.to_owned(),
            ip: Some(Ipv4Addr::from(ip)),
            netns: format!("ns-{name}"),
            host: "h1".to_owned(),
            vtep: Ipv4Addr::new(198, 18, 0, 1),
        };
        let mut e = plan_endpoint(
            &Snapshot::default(),
            &n,
            &request,
            id_digit.to_string().repeat(64),
        )
        .unwrap();
        e.ifname = "eth0".to_owned();
        e
    }

    /// Whether a conflict's `found` is a claim naming `holder` (a record's key).
    fn held_by(found: Option<&Entry>, holder: &str) -> bool {
        found.is_some_and(|entry| entry.value == holder.as_bytes())
    }

    fn store() -> (tempfile::TempDir, DirStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn commit(store: &DirStore, txn: &Txn) -> Committed {
        store.commit(txn).unwrap()
    }

    fn assert_done(store: &DirStore, txn: &Txn) {
        match commit(store, txn) {
            Committed::Done { .. } => {}
            other => panic!("{txn:?}: {other:?}"),
        }
    }

    /// The conflict of `txn`, as the error a user sees.
    fn refused(store: &DirStore, txn: &Txn) -> (String, ClusterError) {
        match commit(store, txn) {
            Committed::Conflict { key, found } => {
                let snapshot = snapshot(&store.list("").unwrap());
                let error = conflict_error(&key, found.as_ref(), &snapshot);
                (key, error)
            }
            other => panic!("{txn:?}: expected a conflict, got {other:?}"),
        }
    }

    /// The records of `listing`, with the host every test endpoint names.
    fn snapshot(listing: &Listing) -> Snapshot {
        let mut listing = listing.clone();
        let host = Host {
            name: "h1".to_owned(),
            vtep: Ipv4Addr::new(198, 18, 0, 1),
            pid: 1,
            started: 1,
        };
        listing.entries.push(Entry {
            key: host.key(),
            value: to_json(&host),
            created: 1,
        });
        Snapshot::from_listing(&listing)
    }

    fn keys(store: &DirStore, prefix: &str) -> Vec<String> {
        store
            .list(prefix)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.key)
            .collect()
    }

    #[test]
    fn claim_keys_are_store_keys_outside_the_records() {
        let e = endpoint('1', "web.1_a-b", [10, 0, 0, 2]);
        let n = network(NET, "net-1", 16_777_215, "10.0.0.0/24");
        let all = [endpoint_claims(&e).to_vec(), network_claims(&n).to_vec()].concat();
        assert_eq!(
            all,
            [
                format!("claims/{NET}/ip/10.0.0.2"),
                format!("claims/{NET}/name/web.1_a-b"),
                "claims/vni/16777215".to_owned(),
                "claims/network-name/net-1".to_owned(),
            ]
        );
        for key in &all {
            check_key(key).unwrap();
            for records in [NETWORKS, ENDPOINTS, super::super::HOSTS] {
                assert!(!key.starts_with(records), "{key}");
            }
        }
    }

    /// The IP claim covers the MAC: the MAC of every planned endpoint is the one
    /// `ipam::mac_for` derives from its IP, and distinct IPs give distinct MACs.
    #[test]
    fn the_mac_follows_from_the_ip() {
        let subnet: ipam::Subnet = "10.0.0.0/24".parse().unwrap();
        let mut macs = std::collections::BTreeSet::new();
        for ip in subnet.hosts().skip(1) {
            let e = endpoint('1', "e", ip.octets());
            let derived: Vec<String> = ipam::mac_for(ip)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(e.mac, derived.join(":"));
            assert!(macs.insert(e.mac), "{ip}");
        }
    }

    #[test]
    fn networks_claim_their_vni_and_name() {
        let (_dir, store) = store();
        let net = network(NET, "net", 42, "10.0.0.0/24");
        assert_done(&store, &network_txn(&net));
        let same_name = network(&"b".repeat(64), "net", 43, "10.0.1.0/24");
        assert_eq!(
            refused(&store, &network_txn(&same_name)),
            (
                "claims/network-name/net".to_owned(),
                ClusterError::NetworkExists("net".to_owned())
            )
        );
        let same_vni = network(&"b".repeat(64), "other", 42, "10.0.1.0/24");
        assert_eq!(
            refused(&store, &network_txn(&same_vni)),
            (
                "claims/vni/42".to_owned(),
                ClusterError::VniInUse {
                    vni: 42,
                    other: "net".to_owned()
                }
            )
        );
        assert_eq!(keys(&store, NETWORKS), [net.key()]);
        // A removal frees both claims.
        assert_done(&store, &network_removal(&net, &[]));
        assert_eq!(keys(&store, ""), Vec::<String>::new());
        assert_done(&store, &network_txn(&same_vni));
    }

    #[test]
    fn endpoints_claim_their_ip_and_name() {
        let (_dir, store) = store();
        assert_done(
            &store,
            &network_txn(&network(NET, "net", 42, "10.0.0.0/24")),
        );
        let a = endpoint('1', "a", [10, 0, 0, 2]);
        assert_done(&store, &endpoint_txn(&a));
        let same_ip = endpoint('2', "b", [10, 0, 0, 2]);
        assert_eq!(
            refused(&store, &endpoint_txn(&same_ip)),
            (
                ip_claim(NET, a.ip),
                ClusterError::DuplicateIp {
                    ip: a.ip,
                    other: "a".to_owned(),
                    network: "net".to_owned()
                }
            )
        );
        let same_name = endpoint('2', "a", [10, 0, 0, 3]);
        assert_eq!(
            refused(&store, &endpoint_txn(&same_name)),
            (
                name_claim(NET, "a"),
                ClusterError::DuplicateName {
                    name: "a".to_owned(),
                    network: "net".to_owned()
                }
            )
        );
        // Readers of the records never see a claim.
        assert_eq!(keys(&store, &format!("{ENDPOINTS}{NET}/")), [a.key()]);
        // The record is written as the endpoint, and passes the reader's checks.
        let listing = store.list("").unwrap();
        assert_eq!(
            snapshot(&listing).endpoints.values().collect::<Vec<_>>(),
            [&a]
        );

        // Released, the IP and the name can be claimed again.
        assert_done(&store, &endpoint_removal(&a, &[]));
        assert_eq!(
            keys(&store, CLAIMS),
            [
                network_claims(&network(NET, "net", 42, "10.0.0.0/24"))[1].clone(),
                vni_claim(42)
            ]
        );
        assert_done(&store, &endpoint_txn(&same_ip));
    }

    #[test]
    fn only_the_holder_releases_a_claim() {
        let (_dir, store) = store();
        assert_done(
            &store,
            &network_txn(&network(NET, "net", 42, "10.0.0.0/24")),
        );
        let holder = endpoint('1', "a", [10, 0, 0, 2]);
        assert_done(&store, &endpoint_txn(&holder));
        // Another endpoint with the same IP and name (its claims were lost) disconnects:
        // each claim it tries to release is someone else's, so it leaves them.
        let stranger = endpoint('2', "a", [10, 0, 0, 2]);
        let mut lost = Vec::new();
        loop {
            match commit(&store, &endpoint_removal(&stranger, &lost)) {
                Committed::Done { .. } => break,
                Committed::Conflict { key, found } => {
                    assert!(held_by(found.as_ref(), &holder.key()), "{key}");
                    assert!(!held_by(found.as_ref(), &stranger.key()), "{key}");
                    lost.push(key);
                }
            }
            assert!(lost.len() <= 2, "{lost:?}");
        }
        assert_eq!(lost, endpoint_claims(&stranger));
        let claims: Vec<String> = keys(&store, &format!("{CLAIMS}{NET}/"));
        assert_eq!(claims, endpoint_claims(&holder));
        assert_eq!(keys(&store, ENDPOINTS), [holder.key()]);
    }

    #[test]
    fn a_refresh_rewrites_only_what_is_still_held() {
        let (_dir, store) = store();
        assert_done(
            &store,
            &network_txn(&network(NET, "net", 42, "10.0.0.0/24")),
        );
        let a = endpoint('1', "a", [10, 0, 0, 2]);
        assert_done(&store, &endpoint_txn(&a));
        // A second publish finds its own claim: held by itself, so a refresh applies.
        match commit(&store, &endpoint_txn(&a)) {
            Committed::Conflict { found, .. } => assert!(held_by(found.as_ref(), &a.key())),
            other => panic!("{other:?}"),
        }
        assert_done(&store, &endpoint_republish_txn(&a, &[]));
        assert_done(&store, &endpoint_removal(&a, &[]));
        match commit(&store, &endpoint_republish_txn(&a, &[])) {
            Committed::Conflict { key, found: None } => assert_eq!(key, ip_claim(NET, a.ip)),
            other => panic!("{other:?}"),
        }
        assert_eq!(keys(&store, ENDPOINTS), Vec::<String>::new());
    }

    #[test]
    fn renames_move_the_name_claim() {
        let (_dir, store) = store();
        assert_done(
            &store,
            &network_txn(&network(NET, "net", 42, "10.0.0.0/24")),
        );
        let a = endpoint('1', "docker-10-0-0-2", [10, 0, 0, 2]);
        let b = endpoint('2', "b", [10, 0, 0, 3]);
        assert_done(&store, &endpoint_txn(&a));
        assert_done(&store, &endpoint_txn(&b));
        let named = Endpoint {
            name: "web".to_owned(),
            aliases: vec!["web".to_owned(), "w".to_owned()],
            netns: "docker:0123456789ab".to_owned(),
            ..a.clone()
        };
        assert_done(&store, &rename_txn(&a, &named).unwrap());
        let claims = keys(&store, &format!("{CLAIMS}{NET}/name/"));
        assert_eq!(claims, [name_claim(NET, "b"), name_claim(NET, "web")]);
        let listing = store.list(&format!("{ENDPOINTS}{NET}/")).unwrap();
        assert_eq!(listing.entries[0].value, to_json(&named));
        // The old name is free again; a rename onto a held name is refused, changing nothing.
        let c = endpoint('3', "docker-10-0-0-2", [10, 0, 0, 4]);
        assert_done(&store, &endpoint_txn(&c));
        let onto_b = Endpoint {
            name: "b".to_owned(),
            ..named.clone()
        };
        assert_eq!(
            refused(&store, &rename_txn(&named, &onto_b).unwrap()).1,
            ClusterError::DuplicateName {
                name: "b".to_owned(),
                network: "net".to_owned()
            }
        );
        // Aliases alone change in place; a rename of a released endpoint is refused.
        let aliased = Endpoint {
            aliases: vec![],
            ..named.clone()
        };
        assert_done(&store, &rename_txn(&named, &aliased).unwrap());
        assert_done(&store, &endpoint_removal(&aliased, &[]));
        assert!(matches!(
            commit(&store, &rename_txn(&aliased, &named).unwrap()),
            Committed::Conflict { found: None, .. }
        ));
        assert_eq!(keys(&store, ENDPOINTS), [b.key(), c.key()]);
        // What says where traffic goes is not a rename.
        for moved in [
            Endpoint {
                ip: Ipv4Addr::new(10, 0, 0, 9),
                ..a.clone()
            },
            Endpoint {
                mac: "02:42:0a:00:00:09".to_owned(),
                ..a.clone()
            },
            Endpoint {
                host: "h2".to_owned(),
                ..a.clone()
            },
            Endpoint {
                vtep: Ipv4Addr::new(198, 18, 0, 2),
                ..a.clone()
            },
            Endpoint {
                id: "9".repeat(64),
                ..a.clone()
            },
        ] {
            assert_eq!(rename_txn(&a, &moved), None, "{moved:?}");
        }
    }

    /// A connect and a network removal racing: whichever commits second is refused.
    #[test]
    fn connects_and_network_removals_exclude_each_other() {
        let (_dir, store) = store();
        let net = network(NET, "net", 42, "10.0.0.0/24");
        assert_done(&store, &network_txn(&net));
        let a = endpoint('1', "a", [10, 0, 0, 2]);
        assert_done(&store, &endpoint_txn(&a));
        match refused(&store, &network_removal(&net, &[])).1 {
            ClusterError::NetworkInUse { name, names, .. } => {
                assert_eq!((name.as_str(), names.as_str()), ("net", "a"))
            }
            other => panic!("{other:?}"),
        }
        assert_done(&store, &endpoint_removal(&a, &[]));
        assert_done(&store, &network_removal(&net, &[]));
        assert_eq!(
            refused(&store, &endpoint_txn(&a)),
            (
                net.key(),
                ClusterError::UnknownNetwork(NET[..12].to_owned())
            )
        );
        assert_eq!(keys(&store, ""), Vec::<String>::new());
    }

    #[test]
    fn other_conflicts_name_the_key_and_escape_the_holder() {
        let found = Entry {
            key: "claims/vni/x".to_owned(),
            value: b"\x1b[31mred".to_vec(),
            created: 1,
        };
        for key in [
            "claims/vni/x",
            "claims/n/ip/nope",
            "endpoints/n/e",
            "hosts/h",
        ] {
            match conflict_error(key, Some(&found), &Snapshot::default()) {
                ClusterError::Claimed { key: got, holder } => {
                    assert_eq!(got, key);
                    assert!(!holder.contains('\x1b'), "{holder}");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        assert_eq!(
            conflict_error("claims/n/ip/10.0.0.2", None, &Snapshot::default()),
            ClusterError::Claimed {
                key: "claims/n/ip/10.0.0.2".to_owned(),
                holder: "nothing".to_owned()
            }
        );
        // A holder the snapshot does not know is named by its short id.
        let holder = Entry {
            key: String::new(),
            value: format!("endpoints/{NET}/{}", "7".repeat(64)).into_bytes(),
            created: 1,
        };
        match conflict_error(
            &ip_claim(NET, Ipv4Addr::new(10, 0, 0, 2)),
            Some(&holder),
            &Snapshot::default(),
        ) {
            ClusterError::DuplicateIp { other, network, .. } => {
                assert_eq!((other, network), ("7".repeat(12), NET[..12].to_owned()))
            }
            other => panic!("{other:?}"),
        }
    }

    /// A record written before claims (just the record, no claims) is migrated by its host
    /// republishing it: the loop learns both claims are missing and creates them; a claim
    /// another endpoint took meanwhile is not overwritten; removal of an unclaimed record
    /// and of an unclaimed network works too.
    #[test]
    fn republishing_claims_old_records_and_never_takes_a_claim_away() {
        let (_dir, store) = store();
        let net = network(NET, "net", 42, "10.0.0.0/24");
        // A network and an endpoint from before claims: records only.
        let old_layout = Txn::new()
            .put(net.key(), &to_json(&net), Lifetime::Permanent)
            .put(
                endpoint('1', "a", [10, 0, 0, 2]).key(),
                &to_json(&endpoint('1', "a", [10, 0, 0, 2])),
                Lifetime::Session,
            );
        assert_done(&store, &old_layout);
        let a = endpoint('1', "a", [10, 0, 0, 2]);
        let mut attempts = 0;
        let answer = commit_adapting(
            &endpoint_claims(&a),
            missing,
            |absent| endpoint_republish_txn(&a, absent),
            |txn| {
                attempts += 1;
                store.commit(txn)
            },
        )
        .unwrap();
        assert!(matches!(answer, Committed::Done { .. }), "{answer:?}");
        assert_eq!(attempts, 3, "one conflict per missing claim, then done");
        assert_eq!(
            keys(&store, CLAIMS),
            [ip_claim(NET, a.ip), name_claim(NET, "a")]
        );
        // Republishing again needs one commit: both claims name it now.
        assert_done(&store, &endpoint_republish_txn(&a, &[]));

        // Another endpoint holding the IP: republishing is refused, naming the holder.
        let b = endpoint('2', "b", [10, 0, 0, 3]);
        let mut a_moved = a.clone();
        a_moved.id = "3".repeat(64);
        assert_done(&store, &endpoint_txn(&b));
        let taken = Endpoint {
            ip: b.ip,
            mac: b.mac.clone(),
            ..a_moved
        };
        let answer = commit_adapting(
            &endpoint_claims(&taken),
            missing,
            |absent| endpoint_republish_txn(&taken, absent),
            |txn| store.commit(txn),
        )
        .unwrap();
        match answer {
            Committed::Conflict { key, found } => {
                assert_eq!(key, ip_claim(NET, b.ip));
                assert!(held_by(found.as_ref(), &b.key()));
            }
            other => panic!("{other:?}"),
        }
        assert!(!keys(&store, ENDPOINTS).contains(&taken.key()));

        // An unclaimed network is removed once its endpoints are gone.
        for e in [&a, &b] {
            let answer = commit_adapting(
                &endpoint_claims(e),
                any,
                |lost| endpoint_removal(e, lost),
                |txn| store.commit(txn),
            )
            .unwrap();
            assert!(matches!(answer, Committed::Done { .. }), "{answer:?}");
        }
        let answer = commit_adapting(
            &network_claims(&net),
            any,
            |lost| network_removal(&net, lost),
            |txn| store.commit(txn),
        )
        .unwrap();
        assert!(matches!(answer, Committed::Done { .. }), "{answer:?}");
        assert_eq!(keys(&store, ""), Vec::<String>::new());
    }

    /// A reservation holds the IP and name without a record; the refresh publishes the
    /// record; a second reservation of either is refused; a release frees both.
    #[test]
    fn a_reservation_claims_before_the_record_exists() {
        let (_dir, store) = store();
        assert_done(
            &store,
            &network_txn(&network(NET, "net", 42, "10.0.0.0/24")),
        );
        let a = endpoint('1', "a", [10, 0, 0, 2]);
        assert_done(&store, &endpoint_reservation(&a));
        assert_eq!(
            keys(&store, ENDPOINTS),
            Vec::<String>::new(),
            "no record yet"
        );
        let same_ip = endpoint('2', "b", [10, 0, 0, 2]);
        assert_eq!(
            refused(&store, &endpoint_reservation(&same_ip)).0,
            ip_claim(NET, a.ip)
        );
        let same_name = endpoint('2', "a", [10, 0, 0, 3]);
        assert_eq!(
            refused(&store, &endpoint_reservation(&same_name)).0,
            name_claim(NET, "a")
        );
        assert_done(&store, &endpoint_republish_txn(&a, &[]));
        assert_eq!(keys(&store, ENDPOINTS), [a.key()]);
        assert_done(&store, &endpoint_removal(&a, &[]));
        assert_eq!(
            keys(&store, &format!("{CLAIMS}{NET}/")),
            Vec::<String>::new()
        );
        let unknown = Endpoint {
            network: "b".repeat(64),
            ..a
        };
        assert_eq!(
            refused(&store, &endpoint_reservation(&unknown)).0,
            format!("{NETWORKS}{}", "b".repeat(64))
        );
    }
}

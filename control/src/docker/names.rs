//! What vxtap's resolver answers in an overlay namespace: the names of the endpoints of the
//! networks the asking container is on, from the store's checked records. Pure.
//!
//! Docker's embedded DNS answers the containers of its own engine and forwards every other
//! name to the resolver (`daemon.json`'s `dns`), from the container's own namespace, so the
//! query arrives from the container's address on the network whose overlay it reached. A
//! Docker container's endpoints on one host share their `docker:ID` namespace field, so the
//! container's other networks are found from that one address, as Docker scopes names to a
//! container's networks. A name is an endpoint's name, one of its aliases (Docker's
//! container name and `--network-alias` names), or either followed by `.NETWORK`; an alias
//! held by several endpoints answers all of them.

use crate::cluster::{Endpoint, Snapshot};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, PoisonError, RwLock};

/// The names one overlay namespace's resolver answers: those of network `network` as host
/// `host` last read them from the store.
pub struct OverlayNames {
    /// The overlay's network id.
    pub network: String,
    /// This host.
    pub host: String,
    /// The agent's latest checked snapshot.
    pub latest: Arc<RwLock<Arc<Snapshot>>>,
}

impl OverlayNames {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.latest.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl crate::dns::Names for OverlayNames {
    fn lookup(&self, client: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>> {
        let snapshot = self.snapshot();
        let networks = client_networks(&snapshot, &self.network, &self.host, client);
        resolve(&snapshot, &networks, name)
    }

    fn reverse(&self, client: Ipv4Addr, ip: Ipv4Addr) -> Option<String> {
        let snapshot = self.snapshot();
        let networks = client_networks(&snapshot, &self.network, &self.host, client);
        reverse(&snapshot, &networks, ip)
    }
}

/// The ids of the networks whose names `client`, an address on network `network` arriving
/// at host `host`'s overlay, may resolve: that network, and every other network its
/// container is on here.
pub fn client_networks(
    snapshot: &Snapshot,
    network: &str,
    host: &str,
    client: Ipv4Addr,
) -> Vec<String> {
    let mut networks = BTreeSet::from([network.to_owned()]);
    let asking = snapshot
        .endpoints_of(network)
        .find(|e| e.ip == client && e.host == host);
    if let Some(asking) =
        asking.filter(|e| e.netns.len() > crate::daemon::agent::DOCKER_NETNS.len())
    {
        networks.extend(
            snapshot
                .endpoints
                .values()
                .filter(|e| e.host == host && e.netns == asking.netns)
                .map(|e| e.network.clone()),
        );
    }
    networks.into_iter().collect()
}

fn answers_to(e: &Endpoint, name: &str) -> bool {
    e.name.eq_ignore_ascii_case(name) || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// The addresses of `name` on `networks` (ids), or `None` if no endpoint there answers to it.
pub fn resolve(snapshot: &Snapshot, networks: &[String], name: &str) -> Option<Vec<Ipv4Addr>> {
    let mut found = BTreeSet::new();
    for id in networks {
        let Some(network) = snapshot.networks.get(id) else {
            continue;
        };
        // NAME.NETWORK asks this network only.
        let scoped = name
            .len()
            .checked_sub(network.name.len() + 1)
            .filter(|&at| {
                name.as_bytes()[at] == b'.' && name[at + 1..].eq_ignore_ascii_case(&network.name)
            })
            .map(|at| &name[..at]);
        for e in snapshot.endpoints_of(id) {
            if answers_to(e, name) || scoped.is_some_and(|s| answers_to(e, s)) {
                found.insert(e.ip);
            }
        }
    }
    (!found.is_empty()).then(|| found.into_iter().collect())
}

/// The name of `ip` on `networks`, as `NAME.NETWORK`, if an endpoint there has it.
pub fn reverse(snapshot: &Snapshot, networks: &[String], ip: Ipv4Addr) -> Option<String> {
    networks.iter().find_map(|id| {
        let network = snapshot.networks.get(id)?;
        snapshot
            .endpoints_of(id)
            .find(|e| e.ip == ip)
            .map(|e| format!("{}.{}", e.name, network.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Network;

    fn network(digit: char, name: &str, subnet: &str) -> Network {
        let subnet: crate::cluster::ipam::Subnet = subnet.parse().unwrap();
        Network {
            id: digit.to_string().repeat(64),
            name: name.into(),
            vni: 1,
            subnet,
            gateway: subnet.first_host(),
            mtu: 1450,
            created: 0,
        }
    }

    fn endpoint(
        net: &Network,
        n: u8,
        name: &str,
        host: &str,
        netns: &str,
        aliases: &[&str],
    ) -> Endpoint {
        let base = net.subnet.base().octets();
        Endpoint {
            id: format!("{n:064x}"),
            network: net.id.clone(),
            name: name.into(),
            ip: Ipv4Addr::new(base[0], base[1], base[2], n),
            mac: String::new(),
            host: host.into(),
            vtep: Ipv4Addr::new(198, 18, 0, 1),
            netns: netns.into(),
            ifname: "eth".into(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn answers_names_aliases_and_scoped_names_of_the_clients_networks() {
        let a = network('a', "ov_net1", "10.0.0.0/24");
        let b = network('b', "ov_net2", "10.0.1.0/24");
        let c = network('c', "other", "10.0.2.0/24");
        let mut s = Snapshot::default();
        for n in [&a, &b, &c] {
            s.networks.insert(n.id.clone(), n.clone());
        }
        let eps = [
            // bbox3 on h1 is on ov_net1 and ov_net2.
            endpoint(&a, 2, "bbox3", "h1", "docker:c3", &["bbox3", "web"]),
            endpoint(&b, 2, "bbox3", "h1", "docker:c3", &["bbox3"]),
            endpoint(&a, 3, "bbox2", "h2", "docker:c2", &["bbox2", "web"]),
            endpoint(&b, 4, "db", "h2", "docker:c4", &["db"]),
            endpoint(&c, 5, "secret", "h2", "docker:c5", &["secret"]),
            // A container on h1 that shares no network with bbox3 but a namespace field
            // with an endpoint elsewhere must not widen the scope.
            endpoint(&a, 9, "lone", "h2", "docker:c3", &[]),
        ];
        for e in eps {
            s.endpoints.insert((e.network.clone(), e.id.clone()), e);
        }
        let ip = |net: &Network, n: u8| {
            let b = net.subnet.base().octets();
            Ipv4Addr::new(b[0], b[1], b[2], n)
        };
        let nets = client_networks(&s, &a.id, "h1", ip(&a, 2));
        assert_eq!(nets, [a.id.clone(), b.id.clone()]);
        assert_eq!(resolve(&s, &nets, "bbox2"), Some(vec![ip(&a, 3)]));
        assert_eq!(resolve(&s, &nets, "BBOX2"), Some(vec![ip(&a, 3)]));
        assert_eq!(
            resolve(&s, &nets, "db"),
            Some(vec![ip(&b, 4)]),
            "through its other network"
        );
        assert_eq!(resolve(&s, &nets, "db.ov_net2"), Some(vec![ip(&b, 4)]));
        assert_eq!(
            resolve(&s, &nets, "db.ov_net1"),
            None,
            "db is not on ov_net1"
        );
        assert_eq!(
            resolve(&s, &nets, "web"),
            Some(vec![ip(&a, 2), ip(&a, 3)]),
            "an alias answers all holders"
        );
        assert_eq!(
            resolve(&s, &nets, "secret"),
            None,
            "isolated networks stay isolated"
        );
        assert_eq!(resolve(&s, &nets, "example.com"), None);
        assert_eq!(
            reverse(&s, &nets, ip(&a, 3)),
            Some("bbox2.ov_net1".to_owned())
        );
        assert_eq!(reverse(&s, &nets, ip(&c, 5)), None);
        // A client the store does not know sees its network only.
        let stranger = client_networks(&s, &a.id, "h1", ip(&a, 77));
        assert_eq!(stranger, std::slice::from_ref(&a.id));
        assert_eq!(resolve(&s, &stranger, "db"), None);
    }
}

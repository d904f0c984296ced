//! Fuzz check for the store record decoder (`vxtap::cluster::validate`): any set of keys and
//! values, as anyone who reaches an etcd without auth can write them.
//!
//! Input: records separated by the byte `0xff` (never in a JSON value). Each record's first
//! byte picks its kind (low two bits: network, endpoint, host, or a key taken from the value
//! up to the first `=`) and its creation revision (the other six bits); the rest is the value.
//! A network, endpoint or host record is filed under the key its value names when the value
//! decodes, so the deep checks run; otherwise under a fixed key of its kind.
//!
//! Properties:
//! - nothing panics;
//! - every record is accepted or refused, exactly once (claim keys are no records and are
//!   passed over);
//! - every accepted record passes an independent re-check of the rules (fields, its network
//!   and host, no IP, MAC or name held twice in a network, no network name or VNI held twice,
//!   no overlapping subnets);
//! - checking is deterministic, and checking the same listing again against the pins it made
//!   refuses nothing new and accepts the same records;
//! - every accepted network and endpoint rewritten in place (same key and creation, any other
//!   value) is refused and the accepted record stays;
//! - a hosts file rendered from the accepted endpoints has exactly one line per endpoint.

use std::collections::{BTreeMap, BTreeSet};
use vxtap::cluster::validate::{self, Reason};
use vxtap::cluster::{check_name, Endpoint, Host, Network, MAX_MTU, MIN_MTU};
use vxtap::plumbing::hosts;
use vxtap::store::{Entry, Listing};
use vxtap_dataplane::wire::MacAddr;

fn key_of(kind: u8, value: &[u8]) -> String {
    match kind {
        0 => serde_json::from_slice::<Network>(value)
            .map(|n| n.key())
            .unwrap_or_else(|_| format!("networks/{}", "a".repeat(64))),
        1 => serde_json::from_slice::<Endpoint>(value)
            .map(|e| e.key())
            .unwrap_or_else(|_| format!("endpoints/{}/{}", "a".repeat(64), "b".repeat(64))),
        2 => serde_json::from_slice::<Host>(value)
            .map(|h| h.key())
            .unwrap_or_else(|_| "hosts/h".to_owned()),
        _ => {
            let end = value.iter().position(|&b| b == b'=').unwrap_or(value.len());
            String::from_utf8_lossy(&value[..end]).into_owned()
        }
    }
}

/// The listing the input describes: keys unique (the last record of a key wins), sorted.
fn listing(data: &[u8]) -> Listing {
    let mut by_key: BTreeMap<String, Entry> = BTreeMap::new();
    for record in data.split(|&b| b == 0xff) {
        let Some((&head, value)) = record.split_first() else {
            continue;
        };
        let key = key_of(head & 3, value);
        let entry = Entry {
            key: key.clone(),
            value: value.to_vec(),
            created: i64::from(head >> 2),
        };
        by_key.insert(key, entry);
    }
    Listing {
        entries: by_key.into_values().collect(),
        revision: 1000,
    }
}

/// Checks what `data` describes; panics when a property breaks.
pub fn store_records(data: &[u8]) {
    let listing = listing(data);
    let checked = validate::check(&listing, &validate::Pins::default());
    let s = &checked.snapshot;

    // Every record accounted for, once.
    let refused: BTreeSet<&str> = checked.rejected.iter().map(|r| r.key.as_str()).collect();
    let accepted = s.networks.len() + s.endpoints.len() + s.hosts.len();
    assert_eq!(refused.len(), checked.rejected.len(), "a key refused twice");
    // Claim keys (`claims/...`) are no records: the checks pass over them.
    let records = listing
        .entries
        .iter()
        .filter(|e| !e.key.starts_with(vxtap::cluster::claims::CLAIMS))
        .count();
    assert_eq!(accepted + refused.len(), records);

    // Networks.
    for (id, n) in &s.networks {
        assert_eq!(id, &n.id);
        assert!(validate::is_id(&n.id));
        assert!(check_name("network", &n.name).is_ok(), "{n:?}");
        assert!((1..=0x00ff_ffff).contains(&n.vni), "{n:?}");
        assert!(n.subnet.is_host(n.gateway), "{n:?}");
        assert!((MIN_MTU..=MAX_MTU).contains(&n.mtu), "{n:?}");
        for other in s.networks.values().filter(|o| o.id != n.id) {
            assert_ne!(other.name, n.name);
            assert_ne!(other.vni, n.vni);
            assert!(!other.subnet.overlaps(&n.subnet), "{n:?} {other:?}");
        }
    }
    // Hosts.
    for (name, h) in &s.hosts {
        assert_eq!(name, &h.name);
        assert!(check_name("host", &h.name).is_ok());
        assert!(!h.vtep.is_unspecified() && !h.vtep.is_multicast() && !h.vtep.is_loopback());
    }
    // Endpoints.
    let mut held = BTreeSet::new();
    for ((network, id), e) in &s.endpoints {
        assert_eq!((network, id), (&e.network, &e.id));
        assert!(validate::is_id(&e.id) && validate::is_id(&e.network));
        assert!(check_name("endpoint", &e.name).is_ok(), "{e:?}");
        let mac: MacAddr = e.mac.parse().expect("an accepted MAC parses");
        assert!(mac.is_unicast(), "{e:?}");
        assert!(validate::is_ifname(&e.ifname), "{e:?}");
        let n = s
            .networks
            .get(&e.network)
            .expect("an accepted endpoint's network");
        assert!(n.subnet.is_host(e.ip) && e.ip != n.gateway, "{e:?}");
        let h = s.hosts.get(&e.host).expect("an accepted endpoint's host");
        assert_eq!(h.vtep, e.vtep);
        assert!(held.insert((e.network.clone(), "ip", e.ip.to_string())));
        assert!(held.insert((e.network.clone(), "mac", e.mac.clone())));
        assert!(held.insert((e.network.clone(), "name", e.name.clone())));
    }

    // Deterministic, and stable against its own pins.
    let again = validate::check(&listing, &validate::Pins::default());
    assert_eq!(again.snapshot, checked.snapshot);
    assert_eq!(again.rejected, checked.rejected);
    let pinned = validate::check(&listing, &checked.pins);
    assert_eq!(pinned.snapshot, checked.snapshot);
    assert!(pinned.rejected.iter().all(|r| r.reason != Reason::Rebound));
    assert_eq!(pinned.rejected, checked.rejected);

    // Every accepted network and endpoint rewritten in place (same key, same creation), with
    // a value taken from the input: what was accepted stays, and each rewrite that changed
    // the value is refused.
    let accepted_keys: BTreeSet<String> = s
        .networks
        .values()
        .map(Network::key)
        .chain(s.endpoints.values().map(Endpoint::key))
        .collect();
    let mut rewritten = listing.clone();
    let mut changed = BTreeSet::new();
    for (i, entry) in rewritten.entries.iter_mut().enumerate() {
        if accepted_keys.contains(&entry.key) {
            let mut value = data.get(i..).unwrap_or_default().to_vec();
            value.truncate(64);
            if value != entry.value {
                changed.insert(entry.key.clone());
            }
            entry.value = value;
        }
    }
    let after = validate::check(&rewritten, &checked.pins);
    for n in s.networks.values() {
        assert_eq!(
            after.snapshot.networks.get(&n.id),
            Some(n),
            "a pinned network moved"
        );
    }
    for (k, e) in &s.endpoints {
        // Still programmed unless its network or host went (hosts are not pinned, and a
        // network stays pinned, so only a host can).
        match after.snapshot.endpoints.get(k) {
            Some(kept) => assert_eq!(kept, e, "a pinned endpoint moved"),
            None => assert!(
                after.rejected.iter().any(|r| r.key == e.key()),
                "an endpoint vanished without a refusal"
            ),
        }
    }
    for key in &changed {
        assert!(
            after.rejected.iter().any(|r| &r.key == key),
            "a rewrite of {key} was not refused"
        );
    }

    // Names cannot add lines to a hosts file.
    let peers: Vec<_> = s
        .endpoints
        .values()
        .map(|e| (e.ip, e.name.clone()))
        .collect();
    let unique: BTreeSet<_> = peers.iter().collect();
    let text = hosts::render("c", &peers);
    assert_eq!(text.lines().count(), 3 + unique.len(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_listing_is_accepted_whole() {
        let net = r#"{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","name":"n","vni":42,"subnet":"10.0.0.0/24","gateway":"10.0.0.1","mtu":1450,"created":1}"#;
        let host = r#"{"name":"h1","vtep":"198.18.0.1","pid":1,"started":1}"#;
        let ep = r#"{"id":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","network":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","name":"c1","ip":"10.0.0.2","mac":"02:42:0a:00:00:02","host":"h1","vtep":"198.18.0.1","netns":"c1","ifname":"eth0"}"#;
        let mut data = vec![0u8];
        data.extend_from_slice(net.as_bytes());
        data.extend_from_slice(&[0xff, 2]);
        data.extend_from_slice(host.as_bytes());
        data.extend_from_slice(&[0xff, 1 | 4]);
        data.extend_from_slice(ep.as_bytes());
        let l = listing(&data);
        assert_eq!(l.entries.len(), 3);
        let checked = validate::check(&l, &validate::Pins::default());
        assert_eq!(checked.rejected, []);
        assert_eq!(checked.snapshot.endpoints.len(), 1);
        store_records(&data);
    }
}

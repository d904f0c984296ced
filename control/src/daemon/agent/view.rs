//! What one host reads of the store, and how it keeps it current.
//!
//! A host needs the global records (`networks/`, `hosts/`: one record per network and per
//! host) and the endpoints of the networks it has local endpoints on (`endpoints/NETWORK/`),
//! never the endpoints of networks it does not serve. A [`View`] is those prefixes, listed
//! once, then changed event by event from a watch started at each listing's revision: a
//! change costs a host the size of the change, not the size of the store. Only a `Resync`
//! (etcd compacted past the watch), a broken watch, an event out of order, or a change of the
//! networks served lists again.

use crate::cluster::{ENDPOINTS, HOSTS, NETWORKS};
use crate::store::{Entry, Listing, Revision, StoreError, WatchEvent};
use std::collections::BTreeSet;

/// Lists one prefix (a store, or a store under its cluster lock).
pub(super) type Lister<'a> = dyn FnMut(&str) -> Result<Listing, StoreError> + 'a;

/// The prefixes a host reads, and their entries.
#[derive(Debug, Clone, Default)]
pub(super) struct View {
    /// Every entry read, sorted by key: what the record checks take.
    pub listing: Listing,
    /// The network ids whose endpoints are read.
    pub networks: BTreeSet<String>,
    /// Each prefix read, with the last revision seen for it (its listing's, then its events').
    prefixes: Vec<(String, Revision)>,
}

/// An event that cannot be applied: the view must be listed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stale {
    /// A change with a revision below one already applied under its prefix.
    OutOfOrder {
        /// The key changed.
        key: String,
        /// Its revision.
        revision: Revision,
        /// The last revision applied under its prefix.
        seen: Revision,
    },
    /// The store said changes may have been missed.
    Resync,
}

/// The prefix of network `id`'s endpoints.
pub(super) fn endpoints_prefix(id: &str) -> String {
    format!("{ENDPOINTS}{id}/")
}

impl View {
    /// Lists the global records and the endpoints of `networks` through `list`.
    ///
    /// # Errors
    ///
    /// The first listing that failed.
    pub fn read(list: &mut Lister<'_>, networks: &BTreeSet<String>) -> Result<View, StoreError> {
        let prefixes: Vec<String> = [NETWORKS.to_owned(), HOSTS.to_owned()]
            .into_iter()
            .chain(networks.iter().map(|id| endpoints_prefix(id)))
            .collect();
        let mut view = View {
            networks: networks.clone(),
            ..View::default()
        };
        for prefix in prefixes {
            let listing = list(&prefix)?;
            view.listing.entries.extend(listing.entries);
            view.listing.revision = view.listing.revision.max(listing.revision);
            view.prefixes.push((prefix, listing.revision));
        }
        view.listing.entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(view)
    }

    /// Each prefix with the revision to watch it from.
    pub fn watch_from(&self) -> &[(String, Revision)] {
        &self.prefixes
    }

    /// Applies one watch event. Returns whether it changed the entries (a key outside every
    /// prefix, or a write of the value held, changes nothing).
    ///
    /// # Errors
    ///
    /// [`Stale`]: the view no longer follows the store; list again.
    pub fn apply(&mut self, event: WatchEvent) -> Result<bool, Stale> {
        let (key, value, revision, created) = match event {
            WatchEvent::Resync => return Err(Stale::Resync),
            WatchEvent::Changed {
                key,
                value,
                revision,
                created,
            } => (key, value, revision, created),
        };
        let Some((_, seen)) = self
            .prefixes
            .iter_mut()
            .find(|(prefix, _)| key.starts_with(prefix.as_str()))
        else {
            return Ok(false);
        };
        if revision < *seen {
            return Err(Stale::OutOfOrder {
                key,
                revision,
                seen: *seen,
            });
        }
        *seen = revision;
        self.listing.revision = self.listing.revision.max(revision);
        let entries = &mut self.listing.entries;
        let at = entries.binary_search_by(|e| e.key.as_str().cmp(&key));
        Ok(match (at, value) {
            (Ok(i), Some(value)) => {
                let entry = &mut entries[i];
                let changed = entry.value != value || entry.created != created;
                entry.value = value;
                entry.created = created;
                changed
            }
            (Err(i), Some(value)) => {
                entries.insert(
                    i,
                    Entry {
                        key,
                        value,
                        created,
                    },
                );
                true
            }
            (Ok(i), None) => {
                entries.remove(i);
                true
            }
            (Err(_), None) => false,
        })
    }

    /// How many bytes of values it holds (for logs).
    pub fn bytes(&self) -> usize {
        self.listing
            .entries
            .iter()
            .map(|e| e.key.len() + e.value.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A store of `entries`, listed at `revision`; records every prefix listed.
    fn lister<'a>(
        entries: &'a BTreeMap<&str, &str>,
        revision: Revision,
        asked: &'a mut Vec<String>,
    ) -> impl FnMut(&str) -> Result<Listing, StoreError> + 'a {
        move |prefix: &str| {
            asked.push(prefix.to_owned());
            Ok(Listing {
                entries: entries
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| Entry {
                        key: (*k).to_owned(),
                        value: v.as_bytes().to_vec(),
                        created: 1,
                    })
                    .collect(),
                revision,
            })
        }
    }

    fn changed(key: &str, value: Option<&str>, revision: Revision) -> WatchEvent {
        WatchEvent::Changed {
            key: key.to_owned(),
            value: value.map(|v| v.as_bytes().to_vec()),
            revision,
            created: if value.is_some() { revision } else { 0 },
        }
    }

    fn keys(view: &View) -> Vec<&str> {
        view.listing
            .entries
            .iter()
            .map(|e| e.key.as_str())
            .collect()
    }

    #[test]
    fn reads_the_global_records_and_the_networks_served_only() {
        let store = BTreeMap::from([
            ("networks/n1", "a"),
            ("networks/n2", "b"),
            ("hosts/h1", "c"),
            ("endpoints/n1/e1", "d"),
            ("endpoints/n2/e2", "e"),
            ("claims/n2/ip/10.0.0.2", "f"),
        ]);
        let mut asked = Vec::new();
        let view = View::read(
            &mut lister(&store, 7, &mut asked),
            &BTreeSet::from(["n1".to_owned()]),
        )
        .unwrap();
        assert_eq!(asked, ["networks/", "hosts/", "endpoints/n1/"]);
        assert_eq!(
            keys(&view),
            ["endpoints/n1/e1", "hosts/h1", "networks/n1", "networks/n2"]
        );
        assert_eq!(view.watch_from().len(), 3);
        assert!(view.watch_from().iter().all(|(_, r)| *r == 7));
    }

    #[test]
    fn applies_events_in_place_and_ignores_other_networks() {
        let store = BTreeMap::from([("networks/n1", "a"), ("endpoints/n1/e1", "d")]);
        let mut asked = Vec::new();
        let mut view = View::read(
            &mut lister(&store, 7, &mut asked),
            &BTreeSet::from(["n1".to_owned()]),
        )
        .unwrap();
        assert!(view
            .apply(changed("endpoints/n1/e0", Some("x"), 8))
            .unwrap());
        assert!(!view
            .apply(changed("endpoints/n2/e9", Some("y"), 9))
            .unwrap());
        // The same value and creation again (the dir backend may report a write twice).
        let again = WatchEvent::Changed {
            key: "endpoints/n1/e0".to_owned(),
            value: Some(b"x".to_vec()),
            revision: 9,
            created: 8,
        };
        assert!(!view.apply(again).unwrap());
        assert!(view.apply(changed("endpoints/n1/e1", None, 10)).unwrap());
        assert!(!view.apply(changed("endpoints/n1/e1", None, 11)).unwrap());
        assert!(view.apply(changed("hosts/h2", Some("h"), 12)).unwrap());
        assert_eq!(keys(&view), ["endpoints/n1/e0", "hosts/h2", "networks/n1"]);
        assert_eq!(view.listing.revision, 12);
        let e0 = &view.listing.entries[0];
        assert_eq!((e0.value.as_slice(), e0.created), (&b"x"[..], 8));
    }

    #[test]
    fn an_event_out_of_order_or_a_resync_makes_it_stale() {
        let store = BTreeMap::from([("networks/n1", "a")]);
        let mut asked = Vec::new();
        let mut view = View::read(&mut lister(&store, 7, &mut asked), &BTreeSet::new()).unwrap();
        assert!(view.apply(changed("networks/n2", Some("b"), 9)).unwrap());
        assert_eq!(
            view.apply(changed("networks/n3", Some("c"), 8)),
            Err(Stale::OutOfOrder {
                key: "networks/n3".to_owned(),
                revision: 8,
                seen: 9
            })
        );
        // Another prefix has its own order: hosts/ was listed at 7.
        assert!(view.apply(changed("hosts/h", Some("h"), 8)).unwrap());
        assert_eq!(view.apply(WatchEvent::Resync), Err(Stale::Resync));
    }
}

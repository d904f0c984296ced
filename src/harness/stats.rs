//! Reading counters out of `vxtap stats -j`:
//! `{"links": [{name, vni, tap_rx_frames, ..., drops: [{reason, count}]}],
//!   "global": {udp_rx_datagrams, udp_rx_oversize, drops: [...], events_lost}}`.
//!
//! Every getter panics with the JSON it looked at when a field is missing, so a renamed
//! counter fails the tests that rely on it instead of reading as zero.

use serde_json::Value;
use std::collections::BTreeMap;
use vxtap_dataplane::DropReason;

/// The stats object of link `name`.
///
/// # Panics
///
/// If there is no such link.
pub fn link<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["links"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no link {name:?} in stats: {stats:#}"))
}

/// Counter `field` of link `name` (`tap_rx_frames`, `arp_replies`, ...).
pub fn link_counter(stats: &Value, name: &str, field: &str) -> u64 {
    link(stats, name)[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {field:?} on link {name:?}: {stats:#}"))
}

/// Global counter `field` (`udp_rx_datagrams`, ...).
pub fn global_counter(stats: &Value, field: &str) -> u64 {
    stats["global"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no global counter {field:?}: {stats:#}"))
}

fn drops(list: &Value) -> BTreeMap<String, u64> {
    list.as_array()
        .unwrap_or_else(|| panic!("drops is not a list: {list:#}"))
        .iter()
        .map(|d| {
            let reason = d["reason"].as_str().expect("a reason name").to_owned();
            let count = d["count"].as_u64().expect("a count");
            (reason, count)
        })
        .collect()
}

/// Drops of link `name`, by reason name.
pub fn link_drops(stats: &Value, name: &str) -> BTreeMap<String, u64> {
    drops(&link(stats, name)["drops"])
}

/// Drops that belong to no link, by reason name.
pub fn global_drops(stats: &Value) -> BTreeMap<String, u64> {
    drops(&stats["global"]["drops"])
}

/// One link's drop count for `reason`.
pub fn link_drop(stats: &Value, name: &str, reason: DropReason) -> u64 {
    *link_drops(stats, name)
        .get(reason.name())
        .unwrap_or_else(|| panic!("no drop reason {reason} on link {name:?}: {stats:#}"))
}

/// The global drop count for `reason`.
pub fn global_drop(stats: &Value, reason: DropReason) -> u64 {
    *global_drops(stats)
        .get(reason.name())
        .unwrap_or_else(|| panic!("no global drop reason {reason}: {stats:#}"))
}

/// `after - before` for every reason in `DropReason::ALL` (missing reasons panic).
pub fn drop_deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<&'static str, i64> {
    DropReason::ALL
        .iter()
        .map(|reason| {
            let get = |m: &BTreeMap<String, u64>| {
                *m.get(reason.name())
                    .unwrap_or_else(|| panic!("drop reason {reason} missing from {m:?}"))
                    as i64
            };
            (reason.name(), get(after) - get(before))
        })
        .collect()
}

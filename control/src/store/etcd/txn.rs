//! [`Store::commit`](crate::store::Store::commit) on etcd: one etcd txn per commit, without
//! the cluster lock.
//!
//! Each [`Condition`] becomes one `Compare`: `Absent` is create_revision = 0, `Present`
//! create_revision > 0, `Created(r)` create_revision = r, `Value(v)` value = v (which etcd
//! counts as false on a missing key), `NothingUnder` create_revision = 0 over the prefix's
//! range (true when no key is in it). The writes become the `success` branch: puts (bound to
//! the session lease when their lifetime is `Session`) and deletes. The `failure` branch
//! reads every conditioned key (one key of a prefix), so a refused txn tells in the same
//! round trip which condition failed and what the key held: etcd runs the branch at the
//! compares' revision, and the first condition that does not hold on what it read is the
//! one reported.
//!
//! A commit through the cluster lock ([`Locked::commit`](crate::store::Locked::commit)) adds
//! one compare, the lock key's create_revision is the holding's, and one read of the lock
//! key, so a holder that lost the lock writes nothing and gets `LockLost`.
//!
//! etcd bounds compares, success ops and failure ops to `--max-txn-ops` each (128 by
//! default); [`Txn::check`] refuses txns over [`MAX_TXN_OPS`](crate::store::MAX_TXN_OPS)
//! (127, leaving room for the lock's compare) before anything is sent. A txn that finds the
//! session lease gone starts a new session (as a session put under the lock does) and is sent
//! once more: etcd refused it whole, so nothing was applied.

use super::{json, relative, Shared, LOCK_KEY, ROOT};
use crate::store::{Committed, Condition, Entry, Lifetime, StoreError, Txn, Write};
use serde_json::{json, Value};

/// Runs `txn` (see the module docs); with `lock`, only while the cluster lock key still has
/// that create_revision.
pub(super) fn commit(
    shared: &Shared,
    txn: &Txn,
    lock: Option<i64>,
) -> Result<Committed, StoreError> {
    txn.check(&shared.url)?;
    let session = txn.writes().iter().any(|write| {
        matches!(
            write,
            Write::Put {
                lifetime: Lifetime::Session,
                ..
            }
        )
    });
    let mut lease = if session { shared.session_lease()? } else { 0 };
    // At most twice: once more with a new session if the session lease was gone.
    loop {
        let answer = shared.call::<json::TxnResponse>("/v3/kv/txn", &request(txn, lease, lock));
        match answer {
            Ok(answer) if answer.succeeded => {
                return Ok(Committed::Done {
                    revision: answer.header.revision,
                })
            }
            Ok(answer) => return conflict(&shared.url, txn, lock, &answer),
            Err(err) if err.is_lease_not_found() && lease != 0 => {
                let renewed = shared.renew_session(lease)?;
                if renewed == lease {
                    return Err(shared.error(err));
                }
                tracing::warn!(url = %shared.url, "the session lease was gone; started a new session");
                lease = renewed;
            }
            Err(err) => return Err(shared.error(err)),
        }
    }
}

/// The etcd key of relative `key`.
fn full(key: &str) -> Vec<u8> {
    format!("{ROOT}{key}").into_bytes()
}

/// The etcd range `[key/, end)` of everything under relative `key`.
fn prefix_range(key: &str) -> (Vec<u8>, Vec<u8>) {
    let prefix = format!("{ROOT}{key}/").into_bytes();
    let end = json::prefix_end(&prefix);
    (prefix, end)
}

/// The `Compare` of one condition.
fn compare(key: &str, condition: &Condition) -> Value {
    let on_create = |result: &str, revision: i64| {
        json!({
            "target": "CREATE",
            "result": result,
            "key": json::encode(&full(key)),
            "create_revision": revision.to_string(),
        })
    };
    match condition {
        Condition::Absent => on_create("EQUAL", 0),
        Condition::Present => on_create("GREATER", 0),
        Condition::Created(revision) if *revision > 0 => on_create("EQUAL", *revision),
        // No key has such a creation revision: a compare that is always false.
        Condition::Created(_) => on_create("LESS", 0),
        Condition::Value(value) => json!({
            "target": "VALUE",
            "result": "EQUAL",
            "key": json::encode(&full(key)),
            "value": json::encode(value),
        }),
        Condition::NothingUnder => {
            let (prefix, end) = prefix_range(key);
            json!({
                "target": "CREATE",
                "result": "EQUAL",
                "key": json::encode(&prefix),
                "range_end": json::encode(&end),
                "create_revision": "0",
            })
        }
    }
}

/// The read of the failure branch for one condition.
fn read(key: &str, condition: &Condition) -> Value {
    match condition {
        Condition::NothingUnder => {
            let (prefix, end) = prefix_range(key);
            json!({ "request_range": {
                "key": json::encode(&prefix),
                "range_end": json::encode(&end),
                "limit": "1",
            }})
        }
        _ => json!({ "request_range": { "key": json::encode(&full(key)) } }),
    }
}

/// The `TxnRequest` of `txn`, session puts bound to `lease`, guarded by the lock holding
/// `lock` if given.
fn request(txn: &Txn, lease: i64, lock: Option<i64>) -> Value {
    let mut compare: Vec<Value> = txn
        .conditions()
        .iter()
        .map(|(key, condition)| compare(key, condition))
        .collect();
    let success: Vec<Value> = txn
        .writes()
        .iter()
        .map(|write| match write {
            Write::Put {
                key,
                value,
                lifetime,
            } => {
                let mut put = json!({
                    "key": json::encode(&full(key)),
                    "value": json::encode(value),
                });
                if *lifetime == Lifetime::Session && lease != 0 {
                    put["lease"] = json!(lease.to_string());
                }
                json!({ "request_put": put })
            }
            Write::Delete { key } => {
                json!({ "request_delete_range": { "key": json::encode(&full(key)) } })
            }
        })
        .collect();
    let mut failure: Vec<Value> = txn
        .conditions()
        .iter()
        .map(|(key, condition)| read(key, condition))
        .collect();
    if let Some(revision) = lock {
        compare.push(json!({
            "target": "CREATE",
            "result": "EQUAL",
            "key": json::encode(LOCK_KEY.as_bytes()),
            "create_revision": revision.to_string(),
        }));
        failure.push(json!({ "request_range": {
            "key": json::encode(LOCK_KEY.as_bytes()),
            "keys_only": true,
        }}));
    }
    json!({ "compare": compare, "success": success, "failure": failure })
}

/// The [`Committed::Conflict`] of a refused txn, from its failure branch's reads; `LockLost`
/// if only the lock guard failed.
fn conflict(
    url: &str,
    txn: &Txn,
    lock: Option<i64>,
    answer: &json::TxnResponse,
) -> Result<Committed, StoreError> {
    let protocol = |reason: String| StoreError::Protocol {
        url: url.to_owned(),
        reason,
    };
    let reads = txn.conditions().len() + usize::from(lock.is_some());
    if answer.responses.len() != reads {
        return Err(protocol(format!(
            "a refused txn with {} conditions answered {} reads",
            txn.conditions().len(),
            answer.responses.len()
        )));
    }
    let mut found = Vec::with_capacity(answer.responses.len());
    let mut lock_revision = None;
    for (i, response) in answer.responses.iter().enumerate() {
        let Some(range) = &response.response_range else {
            return Err(protocol(
                "a refused txn answered something else than a read".to_owned(),
            ));
        };
        if i == txn.conditions().len() {
            lock_revision = Some(range.kvs.first().map_or(0, |kv| kv.create_revision));
            break;
        }
        let entry = match range.kvs.first() {
            Some(kv) => Some(Entry {
                // A key under a prefix that breaks the key rules is still a key there.
                key: relative(url, &kv.key)?
                    .unwrap_or_else(|| String::from_utf8_lossy(&kv.key).into_owned()),
                value: kv.value.clone(),
                created: kv.create_revision,
            }),
            None => None,
        };
        found.push(entry);
    }
    match txn.first_failure(|i, _, _| found.get_mut(i).and_then(Option::take)) {
        Some((key, found)) => Ok(Committed::Conflict {
            key: key.to_owned(),
            found,
        }),
        None if lock.is_some() && lock_revision != lock => Err(StoreError::LockLost {
            url: url.to_owned(),
        }),
        None => Err(protocol(
            "etcd refused a txn whose every condition held on what it read".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_one_compare_write_and_read_per_item() {
        let txn = Txn::new()
            .create("c/a", b"v", Lifetime::Session)
            .require("c/b", Condition::Value(b"w".to_vec()))
            .require("c/d", Condition::Created(9))
            .require("c/e", Condition::Present)
            .require("c/f", Condition::NothingUnder)
            .require("c/g", Condition::Created(0))
            .put("c/p", b"q", Lifetime::Permanent)
            .delete("c/x");
        let request = request(&txn, 42, None);
        let key = |k: &str| json!(json::encode(k.as_bytes()));
        assert_eq!(
            request["compare"],
            json!([
                {"target": "CREATE", "result": "EQUAL", "key": key("/vxtap/v1/c/a"), "create_revision": "0"},
                {"target": "VALUE", "result": "EQUAL", "key": key("/vxtap/v1/c/b"), "value": key("w")},
                {"target": "CREATE", "result": "EQUAL", "key": key("/vxtap/v1/c/d"), "create_revision": "9"},
                {"target": "CREATE", "result": "GREATER", "key": key("/vxtap/v1/c/e"), "create_revision": "0"},
                {"target": "CREATE", "result": "EQUAL", "key": key("/vxtap/v1/c/f/"),
                 "range_end": key("/vxtap/v1/c/f0"), "create_revision": "0"},
                {"target": "CREATE", "result": "LESS", "key": key("/vxtap/v1/c/g"), "create_revision": "0"},
            ])
        );
        assert_eq!(
            request["success"],
            json!([
                {"request_put": {"key": key("/vxtap/v1/c/a"), "value": key("v"), "lease": "42"}},
                {"request_put": {"key": key("/vxtap/v1/c/p"), "value": key("q")}},
                {"request_delete_range": {"key": key("/vxtap/v1/c/x")}},
            ])
        );
        let failure = request["failure"].as_array().unwrap();
        assert_eq!(failure.len(), 6);
        assert_eq!(
            failure[4],
            json!({"request_range": {"key": key("/vxtap/v1/c/f/"),
                                     "range_end": key("/vxtap/v1/c/f0"), "limit": "1"}})
        );
    }

    #[test]
    fn a_refused_txn_names_the_first_failing_condition() {
        let txn = Txn::new().create("c/a", b"mine", Lifetime::Session).create(
            "c/b",
            b"mine",
            Lifetime::Session,
        );
        // A failure branch in the gateway's shape for this txn, c/b held by "theirs".
        let answer: json::TxnResponse = json::decode(
            br#"{"header":{"revision":"9"},"responses":[{"response_range":{"header":{"revision":"9"}}},{"response_range":{"header":{"revision":"9"},"kvs":[{"key":"L3Z4dGFwL3YxL2MvYg==","create_revision":"8","mod_revision":"8","version":"1","value":"dGhlaXJz"}],"count":"1"}}]}"#,
        )
        .unwrap();
        match conflict("etcd://x:1", &txn, None, &answer).unwrap() {
            Committed::Conflict { key, found } => {
                assert_eq!(key, "c/b");
                let found = found.unwrap();
                assert_eq!(
                    (found.key.as_str(), found.value.as_slice(), found.created),
                    ("c/b", &b"theirs"[..], 8)
                );
            }
            other => panic!("{other:?}"),
        }
        // Reads that contradict the refusal, or are missing, are protocol errors.
        let nothing: json::TxnResponse =
            json::decode(br#"{"responses":[{"response_range":{}},{"response_range":{}}]}"#)
                .unwrap();
        assert!(matches!(
            conflict("etcd://x:1", &txn, None, &nothing),
            Err(StoreError::Protocol { .. })
        ));
        let short: json::TxnResponse = json::decode(br#"{"responses":[]}"#).unwrap();
        assert!(matches!(
            conflict("etcd://x:1", &txn, None, &short),
            Err(StoreError::Protocol { .. })
        ));
        // Through the lock: every condition held, the lock key is another holding's.
        let lost: json::TxnResponse = json::decode(
            br#"{"responses":[{"response_range":{}},{"response_range":{}},{"response_range":{"kvs":[{"key":"L3Z4dGFwL3YxLmxvY2s=","create_revision":"12"}]}}]}"#,
        )
        .unwrap();
        assert!(matches!(
            conflict("etcd://x:1", &txn, Some(11), &lost),
            Err(StoreError::LockLost { .. })
        ));
        assert!(matches!(
            conflict("etcd://x:1", &txn, Some(12), &lost),
            Err(StoreError::Protocol { .. })
        ));
        let guarded = request(&txn, 0, Some(11));
        assert_eq!(guarded["compare"].as_array().unwrap().len(), 3);
        assert_eq!(guarded["compare"][2]["create_revision"], json!("11"));
        assert_eq!(guarded["failure"].as_array().unwrap().len(), 3);
    }
}

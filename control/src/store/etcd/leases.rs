//! Leases held by the caller rather than by the store's session: grant one, write keys
//! bound to it (one at a time or up to [`MAX_TXN_PUTS`] in one txn), refresh many in one
//! request, revoke. `vxtap sim` uses this to stand in for hundreds of hosts, each with a
//! lease of its own, the way real daemons hold their session keys.
//!
//! Nothing here refreshes a lease on its own: a lease that the caller stops refreshing
//! expires after its TTL, and its keys go with it. Keys are relative (checked with
//! [`check_key`]) and live under the store's root, like every other key.

use super::{auth, http, json, CallError, EtcdStore, Shared, ROOT};
use crate::store::{check_key, Revision, StoreError};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// The most operations etcd takes in one txn by default (`--max-txn-ops`).
pub const MAX_TXN_PUTS: usize = 128;

/// The most leases refreshed by one keep-alive request: bounds the request and its answer.
const MAX_KEEPALIVES_PER_REQUEST: usize = 500;

impl EtcdStore {
    /// Grants a new lease of `ttl` (whole seconds, rounded up); its ID.
    ///
    /// # Errors
    ///
    /// `Unreachable`, or `Protocol` when etcd refuses the grant.
    pub fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        self.shared.grant(ttl)
    }

    /// Writes `key` (relative) bound to `lease` (0: no lease, the key is permanent).
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `Unreachable`, or `Protocol` (for a lease that does not exist, too).
    pub fn put_with_lease(&self, key: &str, value: &[u8], lease: i64) -> Result<(), StoreError> {
        self.put_all_with_lease(&[(key, value, lease)]).map(|_| ())
    }

    /// Writes every `(key, value, lease)` of `entries` in one txn: all or nothing. At most
    /// [`MAX_TXN_PUTS`] entries. Returns the revision of the write.
    ///
    /// # Errors
    ///
    /// `InvalidKey` (nothing is sent), `Protocol` for more than [`MAX_TXN_PUTS`] entries
    /// or a lease that does not exist, `Unreachable`.
    pub fn put_all_with_lease(
        &self,
        entries: &[(&str, &[u8], i64)],
    ) -> Result<Revision, StoreError> {
        if entries.len() > MAX_TXN_PUTS {
            return Err(StoreError::Protocol {
                url: self.shared.url.clone(),
                reason: format!(
                    "{} puts in one txn, etcd takes at most {MAX_TXN_PUTS}",
                    entries.len()
                ),
            });
        }
        let mut success = Vec::with_capacity(entries.len());
        for &(key, value, lease) in entries {
            check_key(key)?;
            let mut put = json!({
                "key": json::encode(format!("{ROOT}{key}").as_bytes()),
                "value": json::encode(value),
            });
            if lease != 0 {
                put["lease"] = json!(lease.to_string());
            }
            success.push(json!({ "request_put": put }));
        }
        let txn: json::TxnResponse = self
            .shared
            .call("/v3/kv/txn", &json!({ "success": success }))
            .map_err(|err| self.shared.error(err))?;
        Ok(txn.header.revision)
    }

    /// Deletes `key` (relative); whether it existed.
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `Unreachable`, `Protocol`.
    pub fn delete_key(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let answer: json::DeleteRangeResponse = self
            .shared
            .call(
                "/v3/kv/deleterange",
                &json!({ "key": json::encode(format!("{ROOT}{key}").as_bytes()) }),
            )
            .map_err(|err| self.shared.error(err))?;
        Ok(answer.deleted > 0)
    }

    /// Refreshes `lease`; its remaining TTL in seconds, 0 if it no longer exists.
    ///
    /// # Errors
    ///
    /// `Unreachable`, `Protocol`.
    pub fn keep_lease_alive(&self, lease: i64) -> Result<i64, StoreError> {
        self.shared.keep_lease_alive(lease)
    }

    /// Refreshes every lease of `leases` over as few requests as it can (one keep-alive
    /// stream per [`MAX_KEEPALIVES_PER_REQUEST`] leases); the remaining TTL of each, in
    /// seconds, in the same order: 0 for a lease that no longer exists, `None` for one the
    /// stream did not answer (the gateway may end a stream when the request body ends,
    /// before every answer is out): send those again.
    ///
    /// # Errors
    ///
    /// `Unreachable`, or `Protocol` when an answer does not decode.
    pub fn keep_leases_alive(&self, leases: &[i64]) -> Result<Vec<Option<i64>>, StoreError> {
        let mut ttls = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(MAX_KEEPALIVES_PER_REQUEST) {
            let answered = self
                .shared
                .keep_many_alive(chunk)
                .map_err(|err| self.shared.error(err))?;
            ttls.extend(chunk.iter().map(|lease| answered.get(lease).copied()));
        }
        Ok(ttls)
    }

    /// Revokes `lease`, deleting its keys; a lease already gone is fine.
    ///
    /// # Errors
    ///
    /// `Unreachable`, `Protocol`.
    pub fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        self.shared.revoke(lease)
    }
}

impl Shared {
    /// One keep-alive stream carrying a request per lease of `leases`: the gateway sends
    /// each message on to etcd, which answers each in turn and ends the stream when the
    /// request body ends. The TTL etcd reported per lease ID.
    fn keep_many_alive(&self, leases: &[i64]) -> Result<HashMap<i64, i64>, CallError> {
        let mut body = String::with_capacity(leases.len() * 32);
        for &lease in leases {
            body.push_str(&json::request::lease(lease).to_string());
            body.push('\n');
        }
        let response = self.authorized(|token| {
            self.client
                .post(
                    "/v3/lease/keepalive",
                    body.as_bytes(),
                    token.map(auth::Token::as_str),
                    http::Replay::Safe,
                )
                .map_err(CallError::Http)
        })?;
        if response.status != 200 {
            return Err(super::status_error(response.status, &response.body));
        }
        keep_alive_answers(&response.body)
    }
}

/// The TTL per lease ID of a keep-alive stream's answer (`{"result": ...}` messages, one
/// after the other). A lease that no longer exists is answered with TTL 0.
fn keep_alive_answers(body: &[u8]) -> Result<HashMap<i64, i64>, CallError> {
    let mut ttls = HashMap::new();
    let messages = serde_json::Deserializer::from_slice(body)
        .into_iter::<json::StreamMessage<json::LeaseResponse>>();
    for message in messages {
        let message = message.map_err(|err| CallError::Decode(err.to_string()))?;
        match (message.result, message.error) {
            (Some(answer), _) => {
                ttls.insert(answer.id, answer.ttl);
            }
            (None, error) => return Err(super::stream_error(error.as_ref())),
        }
    }
    Ok(ttls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_stream_of_keep_alive_answers() {
        // Two answers as the gateway streams them: a live lease and one that is gone.
        let body = br#"{"result":{"header":{"revision":"4"},"ID":"7587899092336470533","TTL":"10"}}
{"result":{"header":{"revision":"4"},"ID":"12345"}}
"#;
        let ttls = keep_alive_answers(body).unwrap();
        assert_eq!(ttls.get(&7_587_899_092_336_470_533), Some(&10));
        assert_eq!(ttls.get(&12345), Some(&0));
        assert!(keep_alive_answers(b"").unwrap().is_empty());
    }

    #[test]
    fn refuses_a_stream_error_and_garbage() {
        let body = br#"{"result":{"ID":"1","TTL":"3"}}{"error":{"grpc_code":14,"http_code":503,"message":"transport closing"}}"#;
        assert!(matches!(
            keep_alive_answers(body),
            Err(CallError::Status { code: 14, .. })
        ));
        assert!(matches!(
            keep_alive_answers(b"{\"result\": nope"),
            Err(CallError::Decode(_))
        ));
    }
}

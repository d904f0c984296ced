//! The messages of etcd's JSON gRPC gateway (`/v3/...`), as etcd 3.4 writes and reads them.
//!
//! The gateway renders protobuf through `jsonpb`: `bytes` fields (keys, values) are base64,
//! `int64` fields (revisions, lease IDs, TTLs) are JSON *strings*, and fields holding their
//! zero value are left out (an empty value, a `false` `succeeded`, a lease `TTL` of 0, the
//! `PUT` event type). Every response type here therefore defaults every field, and decodes
//! int64s from a string or a number. Streaming endpoints (`/v3/watch`, `/v3/lease/keepalive`)
//! wrap each message as `{"result": ...}` or `{"error": ...}`.
//!
//! This module only converts; it never does I/O and never interprets keys beyond base64.
//! The shapes were captured from a real etcd 3.4.23; the tests replay those bytes.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::{json, Value};

/// Standard base64 (what Go's `encoding/base64.StdEncoding` writes), accepting a missing
/// padding too: decoding is lenient, encoding always pads.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `bytes` as the gateway expects a `bytes` field.
pub(crate) fn encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The `range_end` that selects every key starting with `prefix`: the prefix with its last
/// byte below 0xff incremented and everything after it dropped. A prefix of only 0xff bytes
/// (or an empty one) has no upper bound: etcd spells that `"\0"`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Decodes a response body into `T`; the error says what did not fit.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| {
        format!(
            "{err} in {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })
}

/// An int64 field: a JSON string (what jsonpb writes) or a number.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Text(String),
        Number(i64),
    }
    match Int64::deserialize(deserializer)? {
        Int64::Number(n) => Ok(n),
        Int64::Text(text) => text
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an int64"))),
    }
}

/// A `bytes` field: base64 text.
fn bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    BASE64
        .decode(text.as_bytes())
        .map_err(|err| serde::de::Error::custom(format!("{text:?} is not base64: {err}")))
}

/// `etcdserverpb.ResponseHeader`, the part we use.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Header {
    /// The store revision when the request was applied.
    #[serde(deserialize_with = "int64")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct KeyValue {
    #[serde(deserialize_with = "bytes")]
    pub key: Vec<u8>,
    #[serde(deserialize_with = "bytes")]
    pub value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    pub create_revision: i64,
    #[serde(deserialize_with = "int64")]
    pub mod_revision: i64,
    #[serde(deserialize_with = "int64")]
    pub lease: i64,
}

/// `RangeResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<KeyValue>,
    /// More keys are in the range than the request's `limit` let through.
    pub more: bool,
}

/// `DeleteRangeResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DeleteRangeResponse {
    pub header: Header,
    #[serde(deserialize_with = "int64")]
    pub deleted: i64,
}

/// One entry of `TxnResponse.responses` (a protobuf `oneof`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ResponseOp {
    pub response_range: Option<RangeResponse>,
    pub response_delete_range: Option<DeleteRangeResponse>,
}

/// `TxnResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// `LeaseGrantResponse` and `LeaseKeepAliveResponse` (same fields).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LeaseResponse {
    #[serde(rename = "ID", deserialize_with = "int64")]
    pub id: i64,
    /// Seconds left; 0 (absent) when the lease does not exist.
    #[serde(rename = "TTL", deserialize_with = "int64")]
    pub ttl: i64,
    /// Set by a grant that failed.
    pub error: String,
}

/// `mvccpb.Event`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Event {
    /// `"DELETE"`, or absent for a put.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub kv: KeyValue,
}

/// `WatchResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WatchResponse {
    pub header: Header,
    pub created: bool,
    pub canceled: bool,
    #[serde(deserialize_with = "int64")]
    pub compact_revision: i64,
    pub cancel_reason: String,
    pub events: Vec<Event>,
}

/// One message of a streaming endpoint: `{"result": T}` or `{"error": {...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamMessage<T> {
    pub result: Option<T>,
    pub error: Option<Value>,
}

/// The body of a failed unary call: `{"error": "...", "message": "...", "code": N}`, `code`
/// being the gRPC status code.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorBody {
    pub message: String,
    pub code: i64,
}

/// A `Compare` of a txn: `key`'s create_revision equals `revision` (0: it does not exist).
fn create_revision_is(key: &[u8], revision: i64) -> Value {
    json!({
        "target": "CREATE",
        "result": "EQUAL",
        "key": encode(key),
        "create_revision": revision.to_string(),
    })
}

/// `PutRequest`; `lease` 0 means none.
fn put(key: &[u8], value: &[u8], lease: i64) -> Value {
    let mut request = json!({ "key": encode(key), "value": encode(value) });
    if lease != 0 {
        request["lease"] = json!(lease.to_string());
    }
    request
}

/// Request bodies, built as the gateway reads them.
pub(crate) mod request {
    use super::*;

    /// `RangeRequest` for the one key `key`, without its value.
    pub(crate) fn key_only(key: &[u8]) -> Value {
        json!({ "key": encode(key), "keys_only": true })
    }

    /// `RangeRequest` for at most `limit` keys from `from` (included) to `end` (excluded),
    /// as of `revision` (0: the latest).
    pub(crate) fn range_page(from: &[u8], end: &[u8], limit: usize, revision: i64) -> Value {
        let mut request = json!({
            "key": encode(from),
            "range_end": encode(end),
            "limit": limit.to_string(),
        });
        if revision != 0 {
            request["revision"] = json!(revision.to_string());
        }
        request
    }

    /// A txn creating `key` (bound to `lease`) unless it exists.
    pub(crate) fn create(key: &[u8], value: &[u8], lease: i64) -> Value {
        json!({
            "compare": [create_revision_is(key, 0)],
            "success": [{ "request_put": put(key, value, lease) }],
        })
    }

    /// A txn writing `key` if `guard` still has create_revision `revision`.
    pub(crate) fn guarded_put(
        guard: &[u8],
        revision: i64,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Value {
        json!({
            "compare": [create_revision_is(guard, revision)],
            "success": [{ "request_put": put(key, value, lease) }],
        })
    }

    /// A txn deleting `key` if `guard` still has create_revision `revision`.
    pub(crate) fn guarded_delete(guard: &[u8], revision: i64, key: &[u8]) -> Value {
        json!({
            "compare": [create_revision_is(guard, revision)],
            "success": [{ "request_delete_range": { "key": encode(key) } }],
        })
    }

    /// `LeaseGrantRequest`.
    pub(crate) fn grant(ttl_seconds: i64) -> Value {
        json!({ "TTL": ttl_seconds.to_string() })
    }

    /// `LeaseKeepAliveRequest` and `LeaseRevokeRequest`.
    pub(crate) fn lease(id: i64) -> Value {
        json!({ "ID": id.to_string() })
    }

    /// A `WatchRequest` creating a watch on every key starting with `prefix`, from
    /// revision `start`.
    pub(crate) fn watch(prefix: &[u8], start: i64) -> Value {
        json!({ "create_request": {
            "key": encode(prefix),
            "range_end": encode(&prefix_end(prefix)),
            "start_revision": start.to_string(),
        }})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from etcd 3.4.23 (curl against the gateway). RANGE joins the kvs of two
    // captured answers (one key with a value, one with an empty value) into one answer.
    const RANGE: &str = r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"3","raft_term":"2"},"kvs":[{"key":"L3Z4dGFwL3YxL2E=","create_revision":"2","mod_revision":"2","version":"1","value":"aGVsbG8="},{"key":"L3Z4dGFwL3YxL2U=","create_revision":"3","mod_revision":"3","version":"1"}],"count":"2"}"#;
    const EMPTY_RANGE: &str = r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"2","raft_term":"2"}}"#;
    const TXN_OK: &str = r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"6","raft_term":"2"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"6"}}},{"response_delete_range":{"header":{"revision":"6"},"deleted":"1"}}]}"#;
    const TXN_FAILED: &str = r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"6","raft_term":"2"}}"#;
    const TXN_DELETE_NOTHING: &str = r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"6","raft_term":"2"},"succeeded":true,"responses":[{"response_delete_range":{"header":{"revision":"6"}}}]}"#;
    const WATCH_CREATED: &str = r#"{"result":{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"6","raft_term":"2"},"created":true}}"#;
    const WATCH_EVENTS: &str = r#"{"result":{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"6","raft_term":"2"},"events":[{"kv":{"key":"L3Z4dGFwL3YxL2U=","create_revision":"3","mod_revision":"3","version":"1"}},{"type":"DELETE","kv":{"key":"L3Z4dGFwL3YxL2U=","mod_revision":"4"}},{"kv":{"key":"L3Z4dGFwL3YxL3g=","create_revision":"6","mod_revision":"6","version":"1","value":"dg=="}}]}}"#;
    const WATCH_COMPACTED: &str = r#"{"result":{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","raft_term":"2"},"canceled":true,"compact_revision":"7"}}"#;
    const GRANT: &str = r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"1","raft_term":"2"},"ID":"7587899092336470533","TTL":"5"}"#;
    const KEEPALIVE_GONE: &str = r#"{"result":{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"4","raft_term":"2"},"ID":"12345"}}"#;
    const LEASE_NOT_FOUND: &str = r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/vxtap/v1/"), b"/vxtap/v10");
        assert_eq!(prefix_end(b"/vxtap/v1/networks/"), b"/vxtap/v1/networks0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"a\xfe\xff\xff"), b"a\xff");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn decodes_a_range() {
        let range: RangeResponse = decode(RANGE.as_bytes()).unwrap();
        assert_eq!(range.header.revision, 3);
        assert_eq!(range.kvs.len(), 2);
        assert_eq!(range.kvs[0].key, b"/vxtap/v1/a");
        assert_eq!(range.kvs[0].value, b"hello");
        assert_eq!(range.kvs[1].key, b"/vxtap/v1/e");
        assert_eq!(range.kvs[1].value, b"", "an empty value is left out");
        assert_eq!(range.kvs[1].create_revision, 3);

        let empty: RangeResponse = decode(EMPTY_RANGE.as_bytes()).unwrap();
        assert_eq!(empty.header.revision, 2);
        assert!(empty.kvs.is_empty());
    }

    #[test]
    fn decodes_txns() {
        let ok: TxnResponse = decode(TXN_OK.as_bytes()).unwrap();
        assert!(ok.succeeded);
        assert_eq!(ok.header.revision, 6);
        assert_eq!(ok.responses.len(), 2);
        assert_eq!(
            ok.responses[1]
                .response_delete_range
                .as_ref()
                .unwrap()
                .deleted,
            1
        );

        let failed: TxnResponse = decode(TXN_FAILED.as_bytes()).unwrap();
        assert!(!failed.succeeded, "a false `succeeded` is left out");

        let nothing: TxnResponse = decode(TXN_DELETE_NOTHING.as_bytes()).unwrap();
        assert!(nothing.succeeded);
        assert_eq!(
            nothing.responses[0]
                .response_delete_range
                .as_ref()
                .unwrap()
                .deleted,
            0
        );
    }

    #[test]
    fn decodes_watch_messages() {
        let created: StreamMessage<WatchResponse> = decode(WATCH_CREATED.as_bytes()).unwrap();
        let created = created.result.unwrap();
        assert!(created.created && !created.canceled && created.events.is_empty());

        let events: StreamMessage<WatchResponse> = decode(WATCH_EVENTS.as_bytes()).unwrap();
        let events = events.result.unwrap().events;
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].kind, None);
        assert_eq!(events[0].kv.value, b"");
        assert_eq!(events[1].kind.as_deref(), Some("DELETE"));
        assert_eq!(events[1].kv.mod_revision, 4);
        assert_eq!(events[2].kv.key, b"/vxtap/v1/x");
        assert_eq!(events[2].kv.value, b"v");

        let compacted: StreamMessage<WatchResponse> = decode(WATCH_COMPACTED.as_bytes()).unwrap();
        let compacted = compacted.result.unwrap();
        assert!(compacted.canceled);
        assert_eq!(compacted.compact_revision, 7);
    }

    #[test]
    fn decodes_leases_and_errors() {
        let grant: LeaseResponse = decode(GRANT.as_bytes()).unwrap();
        assert_eq!((grant.id, grant.ttl), (7587899092336470533, 5));
        let gone: StreamMessage<LeaseResponse> = decode(KEEPALIVE_GONE.as_bytes()).unwrap();
        let gone = gone.result.unwrap();
        assert_eq!(
            (gone.id, gone.ttl),
            (12345, 0),
            "a missing TTL means no such lease"
        );
        let error: ErrorBody = decode(LEASE_NOT_FOUND.as_bytes()).unwrap();
        assert_eq!(error.code, 5);
        assert_eq!(error.message, "etcdserver: requested lease not found");
    }

    #[test]
    fn refuses_malformed_answers() {
        for bad in [
            r#"{"header":{"revision":"x"}}"#,
            r#"{"header":{"revision":"9223372036854775808"}}"#,
            r#"{"kvs":[{"key":"not base64!"}]}"#,
            r#"{"kvs":{"key":"L3Z4"}}"#,
            r#"{"header":"#,
            "",
        ] {
            assert!(
                decode::<RangeResponse>(bad.as_bytes()).is_err(),
                "{bad:?} accepted"
            );
        }
        // Numbers are accepted as well as strings, and unknown fields are ignored.
        let range: RangeResponse = decode(br#"{"header":{"revision":7},"later":[1,2]}"#).unwrap();
        assert_eq!(range.header.revision, 7);
    }

    #[test]
    fn requests_use_base64_and_string_int64s() {
        let txn = request::guarded_put(b"/vxtap/v1.lock", 5, b"/vxtap/v1/x", b"v", 42);
        assert_eq!(
            txn,
            json!({
                "compare": [{"target": "CREATE", "result": "EQUAL",
                             "key": "L3Z4dGFwL3YxLmxvY2s=", "create_revision": "5"}],
                "success": [{"request_put": {"key": "L3Z4dGFwL3YxL3g=", "value": "dg==",
                                              "lease": "42"}}],
            })
        );
        let watch = request::watch(b"/vxtap/v1/", 3);
        assert_eq!(
            watch["create_request"]["range_end"],
            json!("L3Z4dGFwL3YxMA==")
        );
        assert_eq!(watch["create_request"]["start_revision"], json!("3"));
        assert!(request::create(b"k", b"", 0)["success"][0]["request_put"]
            .get("lease")
            .is_none());
    }
}

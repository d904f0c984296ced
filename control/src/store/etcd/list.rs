//! Listing a prefix in pages: at most [`EtcdOptions::list_page`](super::EtcdOptions) keys
//! per range request, each page continuing after the last key of the one before, every
//! page read at the revision of the first, so that the listing is one consistent snapshot
//! however long it takes and however many writes land meanwhile.
//!
//! No answer has to fit in memory whole: each page is decoded on its own, under the HTTP
//! body cap. A page whose answer breaks the cap (large values) is asked for again with
//! half the limit, down to one key. If etcd compacts the pinned revision between two pages
//! the listing starts over at the newest revision, a bounded number of times.
//!
//! etcd 3.4 walks its key index over the rest of the range for every page, whatever the
//! limit, so a listing of n keys in pages of p costs etcd about n²/2p index steps: larger
//! pages are cheaper for etcd, smaller ones for the client's peak memory.

use super::http::{self, HttpError};
use super::{json, CallError, Shared, ROOT};
use crate::store::{Entry, Listing, StoreError};

/// How many times a listing starts over after its revision was compacted.
pub(super) const COMPACTED_RESTARTS: u32 = 3;

/// What etcd says about a range at a revision it has compacted away.
const COMPACTED: &str = "required revision has been compacted";

/// Why one consistent listing failed.
enum ListError {
    /// The pinned revision was compacted between two pages: start again.
    Compacted,
    Store(StoreError),
}

/// Why one page failed.
enum PageError {
    /// Its answer is over the body cap.
    TooLarge,
    Compacted,
    Call(CallError),
}

impl Shared {
    /// Every entry under the relative `prefix` (already checked), sorted by key.
    pub(super) fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let start = format!("{ROOT}{prefix}").into_bytes();
        let end = json::prefix_end(&start);
        let mut restarts = 0;
        loop {
            match self.list_snapshot(&start, &end) {
                Ok(listing) => return Ok(listing),
                Err(ListError::Store(err)) => return Err(err),
                Err(ListError::Compacted) if restarts < COMPACTED_RESTARTS => {
                    restarts += 1;
                    tracing::debug!(url = %self.url, prefix, restarts,
                        "the listing's revision was compacted; listing again");
                }
                Err(ListError::Compacted) => {
                    return Err(StoreError::ListingCompacted {
                        url: self.url.clone(),
                        prefix: prefix.to_owned(),
                        attempts: restarts + 1,
                    })
                }
            }
        }
    }

    /// One listing of `[start, end)`, in pages, at the revision of the first page.
    fn list_snapshot(&self, start: &[u8], end: &[u8]) -> Result<Listing, ListError> {
        let mut limit = self.options.list_page.max(1);
        let mut from = start.to_vec();
        // 0 asks for the newest revision: the first page's answer fixes it.
        let mut revision = 0;
        let mut entries = Vec::new();
        loop {
            let request = json::request::range_page(&from, end, limit, revision);
            let page = match self.range_page(&request) {
                Ok(page) => page,
                Err(PageError::TooLarge) if limit > 1 => {
                    limit = (limit / 2).max(1);
                    tracing::debug!(url = %self.url, limit, "a page was too large; asking for fewer keys");
                    continue;
                }
                Err(PageError::TooLarge) => {
                    return Err(ListError::Store(StoreError::Protocol {
                        url: self.url.clone(),
                        reason: format!(
                            "the key after {:?} has a value over {} bytes",
                            String::from_utf8_lossy(&from),
                            http::MAX_BODY
                        ),
                    }))
                }
                Err(PageError::Compacted) => return Err(ListError::Compacted),
                Err(PageError::Call(err)) => return Err(ListError::Store(self.error(err))),
            };
            if revision == 0 {
                revision = page.header.revision;
            }
            let next = page.kvs.last().map(|kv| {
                let mut next = kv.key.clone();
                next.push(0);
                next
            });
            for kv in page.kvs {
                if let Some(key) = self.relative(&kv.key).map_err(ListError::Store)? {
                    entries.push(Entry {
                        key,
                        value: kv.value,
                        created: kv.create_revision,
                    });
                }
            }
            match (page.more, next) {
                (false, _) => break,
                (true, Some(next)) if next.as_slice() > from.as_slice() => from = next,
                (true, _) => {
                    return Err(ListError::Store(StoreError::Protocol {
                        url: self.url.clone(),
                        reason: "a range answer says more keys follow but does not advance"
                            .to_owned(),
                    }))
                }
            }
        }
        // etcd answers in key order; sorting again costs one pass over sorted runs.
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Listing { entries, revision })
    }

    /// One page: the decoded range answer.
    fn range_page(&self, request: &serde_json::Value) -> Result<json::RangeResponse, PageError> {
        match self.call_replayable("/v3/kv/range", request) {
            Ok(page) => Ok(page),
            Err(CallError::Http(HttpError::TooLarge { .. })) => Err(PageError::TooLarge),
            Err(CallError::Status { message, .. }) if message.contains(COMPACTED) => {
                Err(PageError::Compacted)
            }
            Err(err) => Err(PageError::Call(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::{read_body, read_request_head};
    use crate::store::etcd::{http::Timeouts, EtcdOptions};
    use serde_json::{json, Value};
    use std::io::{BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicI64, AtomicU64};
    use std::sync::Mutex;
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// What etcd 3.4.23 answered (HTTP 400) to a range at a compacted revision.
    const COMPACTED_ANSWER: &str = r#"{"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11}"#;

    /// An answer of the fake gateway.
    enum Answer {
        /// The keys (relative), whether more follow, and the revision.
        Page(&'static [&'static str], bool, i64),
        Compacted,
        /// A chunk announced over the 64 MiB cap.
        Oversized,
    }

    /// A fake gateway on 127.0.0.1 answering the `n`th range request with `script(n)`,
    /// until the client goes; its thread returns the requests it got.
    fn gateway(
        script: impl Fn(usize) -> Answer + Send + 'static,
    ) -> (String, JoinHandle<Vec<Value>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            // The client reconnects after an oversized answer (its connection is not reused).
            'connections: loop {
                let (socket, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(socket.try_clone().unwrap());
                let mut writer = socket;
                while let Ok(head) = read_request_head(&mut reader) {
                    let body = read_body(&mut reader, head.framing, 1 << 20).unwrap();
                    if body == b"{}" {
                        break 'connections; // The test is done.
                    }
                    requests.push(serde_json::from_slice::<Value>(&body).unwrap());
                    let answer = match script(requests.len() - 1) {
                        Answer::Page(keys, more, revision) => {
                            let kvs: Vec<Value> = keys
                                .iter()
                                .map(|key| json!({
                                    "key": json::encode(format!("{ROOT}{key}").as_bytes()),
                                    "value": json::encode(key.as_bytes()),
                                    "create_revision": "2",
                                }))
                                .collect();
                            let body = json!({
                                "header": {"revision": revision.to_string()},
                                "kvs": kvs, "more": more,
                            })
                            .to_string();
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                        }
                        Answer::Compacted => format!(
                            "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{COMPACTED_ANSWER}",
                            COMPACTED_ANSWER.len()
                        ),
                        Answer::Oversized => {
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4c6652d\r\n{".to_owned()
                        }
                    };
                    writer.write_all(answer.as_bytes()).unwrap();
                }
            }
            requests
        });
        (endpoint, server)
    }

    fn shared(endpoint: &str, list_page: usize) -> Shared {
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(5),
        };
        Shared {
            url: format!("etcd://{endpoint}"),
            client: http::Client::new(vec![endpoint.to_owned()], timeouts, None),
            options: EtcdOptions {
                list_page,
                ..EtcdOptions::default()
            },
            lease: AtomicI64::new(0),
            epoch: AtomicU64::new(0),
            renewing: Mutex::new(()),
            lock_leases: Mutex::new(Vec::new()),
            auth: None,
        }
    }

    /// Ends the fake gateway and returns the range requests it got.
    fn finish(shared: &Shared, server: JoinHandle<Vec<Value>>) -> Vec<Value> {
        let _ = shared
            .client
            .post("/done", b"{}", None, http::Replay::OnlyIfUnsent);
        server.join().unwrap()
    }

    fn keys(listing: &Listing) -> Vec<&str> {
        listing.entries.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn pages_continue_after_the_last_key_at_the_first_revision() {
        let (endpoint, server) = gateway(|n| match n {
            0 => Answer::Page(&["a", "b"], true, 10),
            1 => Answer::Page(&["c", "d"], true, 11),
            _ => Answer::Page(&["e"], false, 12),
        });
        let shared = shared(&endpoint, 2);
        let listing = shared.list("").unwrap();
        assert_eq!(keys(&listing), ["a", "b", "c", "d", "e"]);
        assert_eq!(listing.revision, 10, "the first page's revision");
        let requests = finish(&shared, server);
        assert_eq!(requests.len(), 3);
        assert!(
            requests[0].get("revision").is_none(),
            "the first page reads the newest"
        );
        assert_eq!(requests[1]["revision"], "10");
        assert_eq!(requests[2]["revision"], "10");
        assert_eq!(requests[1]["key"], json::encode(b"/vxtap/v1/b\0"));
        assert_eq!(requests[2]["key"], json::encode(b"/vxtap/v1/d\0"));
        assert!(requests
            .iter()
            .all(|r| r["limit"] == "2" && r["range_end"] == json::encode(b"/vxtap/v10")));
    }

    #[test]
    fn a_compacted_revision_starts_the_listing_over() {
        let (endpoint, server) = gateway(|n| match n {
            0 => Answer::Page(&["a", "b"], true, 10),
            1 => Answer::Compacted,
            2 => Answer::Page(&["a", "b"], true, 12),
            _ => Answer::Page(&["c"], false, 13),
        });
        let shared = shared(&endpoint, 2);
        let listing = shared.list("").unwrap();
        assert_eq!(keys(&listing), ["a", "b", "c"]);
        assert_eq!(listing.revision, 12);
        let requests = finish(&shared, server);
        assert_eq!(requests.len(), 4);
        assert!(
            requests[2].get("revision").is_none(),
            "started over at the newest"
        );
        assert_eq!(requests[3]["revision"], "12");
    }

    #[test]
    fn a_listing_compacted_every_time_gives_up() {
        let (endpoint, server) = gateway(|n| {
            if n % 2 == 0 {
                Answer::Page(&["x/a"], true, 10)
            } else {
                Answer::Compacted
            }
        });
        let shared = shared(&endpoint, 1);
        match shared.list("x/") {
            Err(StoreError::ListingCompacted {
                prefix, attempts, ..
            }) => {
                assert_eq!(prefix, "x/");
                assert_eq!(attempts, COMPACTED_RESTARTS + 1);
            }
            other => panic!("{other:?}"),
        }
        let requests = finish(&shared, server);
        assert_eq!(requests.len() as u32, 2 * (COMPACTED_RESTARTS + 1));
    }

    #[test]
    fn a_page_over_the_cap_is_asked_again_with_half_the_keys() {
        let (endpoint, server) = gateway(|n| match n {
            0 | 1 => Answer::Oversized,
            2 => Answer::Page(&["a", "b"], true, 10),
            3 => Answer::Oversized,
            _ => Answer::Page(&["c"], false, 10),
        });
        let shared = shared(&endpoint, 8);
        let listing = shared.list("").unwrap();
        assert_eq!(keys(&listing), ["a", "b", "c"]);
        let requests = finish(&shared, server);
        let limits: Vec<&str> = requests
            .iter()
            .map(|r| r["limit"].as_str().unwrap())
            .collect();
        assert_eq!(limits, ["8", "4", "2", "2", "1"]);
        assert_eq!(requests[4]["key"], json::encode(b"/vxtap/v1/b\0"));

        // One key over the cap is an error, not a loop.
        let (endpoint, server) = gateway(|_| Answer::Oversized);
        let shared = super::tests::shared(&endpoint, 2);
        assert!(matches!(shared.list(""), Err(StoreError::Protocol { .. })));
        assert_eq!(finish(&shared, server).len(), 2);
    }
}

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

//! The cluster lock on etcd, and the writes made while holding it.
//!
//! Taking the lock creates [`LOCK_KEY`] in a txn that compares its create_revision with 0
//! (it does not exist), attached to a lease of its own (`lock_ttl`, refreshed by the store's
//! keeper while the attempt waits and while the lock is held). The txn's revision is the
//! key's create_revision: it identifies this holding. Others poll every 25 ms until the
//! key is gone or their timeout passes.
//!
//! Every write through [`EtcdLocked`] is a txn guarded by "the lock key still has my
//! create_revision", so a holder whose lease expired (a long pause, a partition) and whose
//! lock someone else took since writes nothing and gets `LockLost`. Dropping the handle
//! deletes the key (guarded the same way) and revokes the lease. A holder that crashed, or
//! whose store handle was dropped, stops refreshing the lease and the lock frees itself
//! within `lock_ttl`.

use super::{json, txn, CallError, Shared, LOCK_KEY, ROOT};
use crate::store::{
    check_key, check_prefix, Committed, Lifetime, Listing, Locked, StoreError, Txn,
};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

/// How often a waiting holder tries again.
const POLL: Duration = Duration::from_millis(25);

/// The cluster lock, held. Dropping it releases the lock.
#[derive(Debug)]
pub(super) struct EtcdLocked<'a> {
    shared: &'a Shared,
    /// The lease the lock key is attached to.
    lease: i64,
    /// The lock key's create_revision while we hold it.
    revision: i64,
}

impl<'a> EtcdLocked<'a> {
    /// Takes the lock, waiting at most `timeout`.
    pub(super) fn acquire(shared: &'a Shared, timeout: Duration) -> Result<Self, StoreError> {
        let start = Instant::now();
        let mut lease = grant_lock_lease(shared)?;
        // Who holds it, for a person looking at etcd.
        let holder = format!(
            "{} pid {}",
            rustix::system::uname().nodename().to_string_lossy(),
            std::process::id()
        );
        loop {
            let attempt: Result<json::TxnResponse, CallError> = shared.call(
                "/v3/kv/txn",
                &json::request::create(LOCK_KEY.as_bytes(), holder.as_bytes(), lease),
            );
            match attempt {
                Ok(txn) if txn.succeeded => {
                    return Ok(EtcdLocked {
                        shared,
                        lease,
                        revision: txn.header.revision,
                    })
                }
                Ok(_) => {}
                // Our lease expired while we waited (etcd was out of reach for a while).
                Err(err) if err.is_lease_not_found() => {
                    forget_lock_lease(shared, lease);
                    lease = grant_lock_lease(shared)?;
                    continue;
                }
                Err(err) => {
                    release_lock_lease(shared, lease);
                    return Err(shared.error(err));
                }
            }
            let waited = start.elapsed();
            if waited >= timeout {
                release_lock_lease(shared, lease);
                return Err(StoreError::LockTimeout {
                    url: shared.url.clone(),
                    waited,
                });
            }
            std::thread::sleep(POLL.min(timeout - waited));
        }
    }

    /// Runs the guarded txn `request`; it did nothing (`succeeded` false) if the lock is no
    /// longer ours.
    fn guarded(&self, request: &serde_json::Value) -> Result<json::TxnResponse, CallError> {
        self.shared.call("/v3/kv/txn", request)
    }

    fn lost(&self) -> StoreError {
        StoreError::LockLost {
            url: self.shared.url.clone(),
        }
    }
}

impl Locked for EtcdLocked<'_> {
    fn list(&mut self, prefix: &str) -> Result<Listing, StoreError> {
        check_prefix(prefix)?;
        self.shared.list(prefix)
    }

    fn put(&mut self, key: &str, value: &[u8], lifetime: Lifetime) -> Result<(), StoreError> {
        check_key(key)?;
        let path = format!("{ROOT}{key}");
        let mut lease = match lifetime {
            Lifetime::Permanent => 0,
            Lifetime::Session => self.shared.session_lease()?,
        };
        // At most twice: once more with a new session if the session lease was gone.
        loop {
            let request = json::request::guarded_put(
                LOCK_KEY.as_bytes(),
                self.revision,
                path.as_bytes(),
                value,
                lease,
            );
            match self.guarded(&request) {
                Ok(txn) if txn.succeeded => return Ok(()),
                Ok(_) => return Err(self.lost()),
                Err(err) if err.is_lease_not_found() && lease != 0 => {
                    let renewed = self.shared.renew_session(lease)?;
                    if renewed == lease {
                        return Err(self.shared.error(err));
                    }
                    tracing::warn!(url = %self.shared.url, "the session lease was gone; started a new session");
                    lease = renewed;
                }
                Err(err) => return Err(self.shared.error(err)),
            }
        }
    }

    fn delete(&mut self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let path = format!("{ROOT}{key}");
        let request =
            json::request::guarded_delete(LOCK_KEY.as_bytes(), self.revision, path.as_bytes());
        let txn = self
            .guarded(&request)
            .map_err(|err| self.shared.error(err))?;
        if !txn.succeeded {
            return Err(self.lost());
        }
        match txn
            .responses
            .first()
            .and_then(|r| r.response_delete_range.as_ref())
        {
            Some(deleted) => Ok(deleted.deleted > 0),
            None => Err(StoreError::Protocol {
                url: self.shared.url.clone(),
                reason: "a delete txn that succeeded without a delete response".to_owned(),
            }),
        }
    }

    fn commit(&mut self, txn: &Txn) -> Result<Committed, StoreError> {
        self.commit_guarded(txn)
    }
}

impl EtcdLocked<'_> {
    /// See [`Locked::commit`]: the txn also compares the lock key with this holding.
    fn commit_guarded(&self, txn: &Txn) -> Result<Committed, StoreError> {
        txn::commit(self.shared, txn, Some(self.revision))
    }
}

impl Drop for EtcdLocked<'_> {
    fn drop(&mut self) {
        let request =
            json::request::guarded_delete(LOCK_KEY.as_bytes(), self.revision, LOCK_KEY.as_bytes());
        if let Err(err) = self.guarded(&request) {
            // The revoke below deletes the key too; if both fail, the lease expires.
            tracing::warn!(url = %self.shared.url, error = %self.shared.error(err), "releasing the cluster lock");
        }
        release_lock_lease(self.shared, self.lease);
    }
}

/// Grants a lease for a lock attempt and has the keeper refresh it.
fn grant_lock_lease(shared: &Shared) -> Result<i64, StoreError> {
    let lease = shared.grant(shared.options.lock_ttl)?;
    shared
        .lock_leases
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(lease);
    Ok(lease)
}

/// Stops refreshing `lease`.
fn forget_lock_lease(shared: &Shared, lease: i64) {
    shared
        .lock_leases
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|&l| l != lease);
}

/// Stops refreshing `lease` and revokes it (best effort: otherwise it expires).
fn release_lock_lease(shared: &Shared, lease: i64) {
    forget_lock_lease(shared, lease);
    if let Err(err) = shared.revoke(lease) {
        tracing::warn!(url = %shared.url, lease, error = %err, "revoking the lock lease");
    }
}

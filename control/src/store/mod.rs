//! The cluster store: where networks, endpoints and hosts live, shared by every host's daemon.
//!
//! One trait, [`Store`], and two backends:
//! - [`dir`]: a directory on this machine (`--store dir:PATH`), the embedded default. Several
//!   daemons on one machine share it; writes are atomic renames, mutations are serialised by
//!   an `flock`, and changes are noticed through inotify.
//! - [`etcd`]: etcd v3 (`--store etcd://HOST:PORT[,HOST:PORT...]`, or `etcds://` for TLS),
//!   keys under `/vxtap/v1/`. Session keys are tied to a lease the store keeps alive.
//!
//! [`StoreOptions`] (module [`options`]) carry the security options of `etcds://`: the CA
//! that etcd's certificate must chain to, a client certificate, an etcd user and password.
//!
//! The store is a small key-value space. Keys are relative (`networks/ID`), made of
//! `/`-separated segments of `[A-Za-z0-9._-]` (never empty, `.` or `..`); values are opaque
//! bytes (the daemon writes JSON). Mutations run either inside [`Store::lock`], a
//! cluster-wide lock, so that "check, then write" is safe across hosts, or as a
//! [`Store::commit`] of a [`Txn`] (module [`txn`]): conditions and writes applied together or
//! not at all, without the cluster lock, so that hosts claiming different keys (an IP, a
//! name) never wait for each other and two hosts claiming the same key are told apart by the
//! store itself. Readers never lock: [`Store::list`] returns a consistent snapshot of one
//! prefix, and [`Store::watch`] reports changes after it.
//!
//! [`conformance`] is the shared test suite both backends pass. This module never interprets
//! values; the network model lives in `crate::cluster`.

pub mod conformance;
pub mod dir;
pub mod etcd;
pub mod merged;
pub mod options;
pub mod txn;

pub use options::{Password, SecurityError, StoreOptions};
pub use txn::{Committed, Condition, Txn, Write, MAX_TXN_OPS};

use std::time::Duration;

/// A store revision: etcd's revision, or the dir backend's mutation counter. It only grows.
pub type Revision = i64;

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative key, e.g. `networks/3f2a...`.
    pub key: String,
    /// The value as written.
    pub value: Vec<u8>,
    /// When the key was created, in the store's own order (etcd: its `create_revision`; dir:
    /// the nanosecond timestamp of its first write, kept when it is overwritten). A writer
    /// cannot choose it on etcd; an overwrite keeps it. Older keys compare lower.
    pub created: Revision,
}

/// Every entry under a prefix, as of one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Entries sorted by key.
    pub entries: Vec<Entry>,
    /// The store revision the listing reflects.
    pub revision: Revision,
}

/// How long a written key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Until deleted.
    Permanent,
    /// Until deleted, or until this store handle's session ends: on etcd, the key is attached
    /// to the handle's lease and disappears when the lease expires (the process died or lost
    /// the store for longer than the TTL). The dir backend has no sessions: such keys are
    /// permanent there.
    Session,
}

/// A change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// `key` was written (`value` is `Some`) or deleted (`None`) at `revision`.
    Changed {
        /// The relative key.
        key: String,
        /// The new value, `None` for a delete.
        value: Option<Vec<u8>>,
        /// The revision of the change (on the dir backend, a ceiling: at or above it).
        revision: Revision,
        /// When the key was created, as [`Entry::created`] gives it; 0 for a delete.
        created: Revision,
    },
    /// Changes may have been missed (etcd compacted past the watch's revision, the connection
    /// was re-established, the inotify queue overflowed): list again and watch from the new
    /// listing's revision.
    Resync,
}

/// A stream of changes under one prefix.
pub trait Watch: Send {
    /// The next change, waiting at most `timeout`; `Ok(None)` when nothing happened in time.
    ///
    /// # Errors
    ///
    /// The store became unreachable; the caller lists again (with back-off) and starts a new
    /// watch. A watch that returned an error is finished.
    fn next(&mut self, timeout: Duration) -> Result<Option<WatchEvent>, StoreError>;
}

/// Mutations, available only while the cluster-wide lock is held. Dropping it releases the
/// lock.
pub trait Locked {
    /// Entries under `prefix` as of now (reads inside the lock see every earlier write).
    ///
    /// # Errors
    ///
    /// The store is unreachable or unreadable.
    fn list(&mut self, prefix: &str) -> Result<Listing, StoreError>;

    /// Writes `key`, creating or replacing it atomically: readers see the old value or the
    /// new one, never a mix.
    ///
    /// # Errors
    ///
    /// An invalid key, an unreachable store, or a lock that was lost (etcd lease expired):
    /// then nothing was written.
    fn put(&mut self, key: &str, value: &[u8], lifetime: Lifetime) -> Result<(), StoreError>;

    /// Deletes `key`; `Ok(false)` if it did not exist.
    ///
    /// # Errors
    ///
    /// As for [`put`](Self::put).
    fn delete(&mut self, key: &str) -> Result<bool, StoreError>;

    /// [`Store::commit`] while holding the lock: the txn applies only if the lock is still
    /// held (etcd: one more compare, on the lock key), so a lock holder can check what
    /// claims cannot express (overlapping subnets) and write claims and records together.
    /// Use this, not [`Store::commit`], while holding the lock: on the dir backend a commit
    /// from the same process would wait for the flock it holds.
    ///
    /// # Errors
    ///
    /// As for [`Store::commit`], and `LockLost` (nothing written) if the lock was lost.
    fn commit(&mut self, txn: &Txn) -> Result<Committed, StoreError>;
}

/// A cluster store backend.
pub trait Store: Send + Sync {
    /// The URL it was opened from (`dir:/var/lib/vxtap`, `etcd://10.0.0.1:2379`).
    fn url(&self) -> String;

    /// Entries under `prefix` (`""` for everything, else a key ending in `/`), sorted by key,
    /// as of one revision.
    ///
    /// # Errors
    ///
    /// The store is unreachable or unreadable.
    fn list(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Changes under `prefix` after `after` (a listing's revision). Changes made after the
    /// listing are reported even if they happened before `watch` was called (etcd: watch
    /// from `after + 1`; dir: inotify is armed first, then a counter past `after` gives `Resync`).
    ///
    /// # Errors
    ///
    /// The store is unreachable.
    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>, StoreError>;

    /// Takes the cluster-wide lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// `LockTimeout` if another holder keeps it, or an unreachable store.
    fn lock(&self, timeout: Duration) -> Result<Box<dyn Locked + '_>, StoreError>;

    /// Runs `txn` atomically, without the cluster lock: if every condition holds, every write
    /// is applied, all at one revision; otherwise nothing is written and the answer is
    /// [`Committed::Conflict`], naming the first failing condition's key and what it held
    /// (see the module [`txn`]). [`Lifetime::Session`] puts are bound to this handle's
    /// session, as with [`Locked::put`] (on etcd, a lease found gone starts a new session and
    /// the txn is sent once more).
    ///
    /// A commit does not wait for the cluster lock and is not excluded by it: the lock only
    /// orders its own holders. Uniqueness that commits enforce must therefore be claimed by
    /// commits everywhere. On the dir backend a commit takes the directory's flock (waiting at
    /// most 10 s, then `LockTimeout`), so a thread holding [`Store::lock`] on a dir store must
    /// not call this (it would wait for itself): it calls [`Locked::commit`].
    ///
    /// # Errors
    ///
    /// Before anything is sent: `InvalidKey`, `TxnRepeatedKey` (a key with two conditions or
    /// two writes) or `TxnTooBig` (more than [`MAX_TXN_OPS`] conditions or writes). Then
    /// whatever the backend reports; `Unreachable` (etcd) or `Io` (dir) leave the outcome
    /// unknown: the txn may have been applied. Committing the same create-if-absent txn again
    /// tells: a `Conflict` whose `found` holds one's own value means the first one went
    /// through.
    fn commit(&self, txn: &Txn) -> Result<Committed, StoreError>;

    /// Counts sessions: it starts at 0 and goes up each time the backend had to start a new
    /// one because the old one expired (etcd: the lease was gone when the store came back).
    /// Keys written with [`Lifetime::Session`] before that are gone; the caller writes them
    /// again. Always 0 on backends without sessions.
    fn session_epoch(&self) -> u64;
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend or is malformed.
    #[error(
        "invalid store URL {url:?}: {reason} (expected dir:PATH, etcd://HOST:PORT[,HOST:PORT...] \
         or, over TLS, etcds://HOST:PORT[,HOST:PORT...])"
    )]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key that breaks the key rules.
    #[error("invalid store key {key:?}")]
    InvalidKey {
        /// The key.
        key: String,
    },
    /// The store cannot be reached (etcd down, connection refused, timeout).
    #[error("store {url} is unreachable: {reason}")]
    Unreachable {
        /// The store URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The lock is held by someone else for longer than the timeout.
    #[error("store {url}: timed out after {waited:?} waiting for the cluster lock")]
    LockTimeout {
        /// The store URL.
        url: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock was lost while held (its lease expired); nothing was written.
    #[error("store {url}: the cluster lock was lost")]
    LockLost {
        /// The store URL.
        url: String,
    },
    /// A file or directory of the dir backend could not be read or written.
    #[error("store {url}: {action} {path}: {source}")]
    Io {
        /// The store URL.
        url: String,
        /// What was being done (`writing`, `reading`, `locking`).
        action: &'static str,
        /// The file concerned.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A txn with more conditions or more writes than etcd's default `--max-txn-ops` allows;
    /// nothing was sent. Split it, or claim fewer keys at once.
    #[error(
        "store {url}: a txn with {conditions} conditions and {writes} writes is too big: at \
         most {max} of each (etcd's --max-txn-ops)"
    )]
    TxnTooBig {
        /// The store URL.
        url: String,
        /// How many conditions it had.
        conditions: usize,
        /// How many writes it had.
        writes: usize,
        /// The most allowed of each ([`MAX_TXN_OPS`]).
        max: usize,
    },
    /// A txn with two conditions or two writes on one key; nothing was sent.
    #[error("store {url}: a txn names key {key:?} twice (two conditions or two writes)")]
    TxnRepeatedKey {
        /// The store URL.
        url: String,
        /// The key.
        key: String,
    },
    /// The store answered something that does not follow its protocol.
    #[error("store {url}: unexpected answer: {reason}")]
    Protocol {
        /// The store URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The security options do not fit the URL, or a file they name cannot be used.
    #[error("store {url}: {source}")]
    Security {
        /// The store URL.
        url: String,
        /// What is wrong (boxed: it is large, and rare).
        source: Box<SecurityError>,
    },
    /// TLS with an endpoint failed: its certificate was refused, it refused ours, or it
    /// does not speak TLS.
    #[error(
        "store {url}: TLS handshake with {endpoint} failed: {source}{}",
        etcd::tls_hint(source, *client_cert)
    )]
    Tls {
        /// The store URL.
        url: String,
        /// The endpoint (`HOST:PORT`).
        endpoint: String,
        /// What rustls reported (boxed: it is large, and rare).
        source: Box<rustls::Error>,
        /// Whether a client certificate was offered.
        client_cert: bool,
    },
    /// The TLS peer reset the connection right after the handshake without a readable
    /// alert, which is how etcd refusing a client certificate looks when its alert is lost.
    #[error(
        "store {url}: TLS handshake with {endpoint} failed: the peer closed the connection \
         right after the handshake ({source}); etcd does this when it refuses the client \
         certificate: give --store-cert/--store-key signed by etcd's --trusted-ca-file"
    )]
    TlsClosed {
        /// The store URL.
        url: String,
        /// The endpoint.
        endpoint: String,
        /// The reset.
        source: std::io::Error,
    },
    /// etcd serves TLS where a plain `etcd://` URL was given.
    #[error("store {url}: {endpoint} speaks TLS (HTTPS): use etcds:// with --store-ca")]
    TlsExpected {
        /// The store URL.
        url: String,
        /// The endpoint.
        endpoint: String,
    },
    /// etcd (3.4.23's gateway, with auth on) refused a client certificate that has a
    /// CommonName.
    #[error(
        "store {url}: etcd refuses client certificates with a CommonName once authentication \
         is on: issue vxtap's --store-cert without a CN (etcd would take the CN for a user name)"
    )]
    CommonNameRefused {
        /// The store URL.
        url: String,
    },
    /// etcd refused the user name and password.
    #[error("store {url}: authentication failed for user {user:?}: {reason}")]
    AuthFailed {
        /// The store URL.
        url: String,
        /// The user.
        user: String,
        /// etcd's message.
        reason: String,
    },
    /// etcd has authentication on and no user was given.
    #[error(
        "store {url}: etcd requires authentication ({reason}): give --store-user and a \
         password"
    )]
    AuthRequired {
        /// The store URL.
        url: String,
        /// etcd's message.
        reason: String,
    },
    /// A user was given, but etcd has authentication off.
    #[error(
        "store {url}: --store-user {user:?} was given but etcd has authentication disabled \
         (etcdctl auth enable)"
    )]
    AuthNotEnabled {
        /// The store URL.
        url: String,
        /// The user.
        user: String,
    },
    /// etcd refused a request for lack of permission.
    #[error(
        "store {url}: permission denied{} ({reason}): vxtap's etcd role needs readwrite on \
         the prefix /vxtap/v1",
        user.as_deref().map(|u| format!(" for user {u:?}")).unwrap_or_default()
    )]
    PermissionDenied {
        /// The store URL.
        url: String,
        /// The user, if one was given.
        user: Option<String>,
        /// etcd's message.
        reason: String,
    },
    /// A paged listing kept losing its revision to compaction between pages.
    #[error(
        "store {url}: listing {prefix:?} failed {attempts} times: etcd compacted the revision          being listed before the last page was read"
    )]
    ListingCompacted {
        /// The store URL.
        url: String,
        /// The relative prefix listed.
        prefix: String,
        /// How many listings were started.
        attempts: u32,
    },
}

/// Opens a store from its URL (`dir:PATH`, `etcd://HOST:PORT[,HOST:PORT...]` or
/// `etcds://...`) without security options.
///
/// # Errors
///
/// As for [`open_with`].
pub fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    open_with(url, &StoreOptions::default())
}

/// Opens a store from its URL with `options`.
///
/// A dir store's directory is created if missing. An etcd store is contacted at once
/// (authenticating, if a user is given), so an unreachable etcd, a refused certificate or a
/// wrong password is reported here rather than at the first request.
///
/// # Errors
///
/// `InvalidUrl`; `Security` when the options do not fit the URL (any option with `dir:` or
/// plain `etcd://`, `etcds://` without a CA, half a client certificate, a user without a
/// password) or name an unusable file; or whatever opening the backend reports.
pub fn open_with(url: &str, options: &StoreOptions) -> Result<Box<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("dir:") {
        if path.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                reason: "empty path".to_owned(),
            });
        }
        options
            .check_not_etcd()
            .map_err(|source| StoreError::Security {
                url: url.to_owned(),
                source: Box::new(source),
            })?;
        return Ok(Box::new(dir::DirStore::open(std::path::Path::new(path))?));
    }
    if url.starts_with("etcd://") || url.starts_with("etcds://") {
        return Ok(Box::new(etcd::EtcdStore::open_secured(
            url,
            etcd::EtcdOptions::default(),
            options,
        )?));
    }
    Err(StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: "unknown scheme".to_owned(),
    })
}

/// Checks a relative key against the key rules (see the module docs).
///
/// # Errors
///
/// `InvalidKey`.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let valid = !key.is_empty()
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
        })
    }
}

/// Checks a prefix: `""` (everything), or a valid key followed by `/` (everything below it).
///
/// # Errors
///
/// `InvalidKey`.
pub fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    match prefix.strip_suffix('/') {
        Some(key) => check_key(key),
        None => Err(StoreError::InvalidKey {
            key: prefix.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_rules() {
        for good in ["networks/abc", "a", "endpoints/n1/e-1.x_y", "hosts/h1"] {
            check_key(good).unwrap();
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", ".", "a b", "a/é", "x/./y"] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
        check_prefix("").unwrap();
        check_prefix("networks/").unwrap();
        check_prefix("endpoints/n1/").unwrap();
        assert!(check_prefix("/").is_err());
        assert!(check_prefix("networks").is_err());
    }

    #[test]
    fn open_refuses_unknown_urls() {
        for url in ["", "dir:", "consul://x:1", "/var/lib/vxtap", "etcd:/x"] {
            match open(url) {
                Err(StoreError::InvalidUrl { .. }) => {}
                Err(other) => panic!("{url:?}: unexpected error {other}"),
                Ok(_) => panic!("{url:?} opened"),
            }
        }
        let err = open("consul://x:1").err().expect("refused");
        assert!(err.to_string().contains("etcds://"), "{err}");
    }

    #[test]
    fn open_refuses_options_that_do_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let with_ca = StoreOptions {
            ca: Some("ca.pem".into()),
            ..StoreOptions::default()
        };
        let dir_url = format!("dir:{}", dir.path().display());
        // Nothing listens on port 1: the checks come before any connection.
        for url in [dir_url.as_str(), "etcd://127.0.0.1:1"] {
            match open_with(url, &with_ca) {
                Err(StoreError::Security { url: got, .. }) => assert_eq!(got, url),
                Err(other) => panic!("{url:?}: unexpected error {other}"),
                Ok(_) => panic!("{url:?} opened"),
            }
        }
        let err = open_with("etcd://127.0.0.1:1", &with_ca)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("use etcds://") || err.to_string().contains("etcds://"));
        match open("etcds://127.0.0.1:1") {
            Err(StoreError::Security { source, .. }) if matches!(*source, SecurityError::NoCa) => {}
            Err(other) => panic!("etcds:// without a CA: unexpected error {other}"),
            Ok(_) => panic!("etcds:// without a CA opened"),
        }
        let missing_ca = StoreOptions {
            ca: Some(dir.path().join("no-such-ca.pem")),
            ..StoreOptions::default()
        };
        let err = open_with("etcds://127.0.0.1:1", &missing_ca)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("no-such-ca.pem"), "{err}");
    }
}

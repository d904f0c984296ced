//! The etcd v3 backend (`etcd://HOST:PORT[,HOST:PORT...]`, or `etcds://` over TLS), spoken
//! through etcd's JSON gRPC gateway over HTTP/1.1, so vxtap needs no gRPC stack, no async
//! runtime and no protoc.
//!
//! Layout in etcd:
//! - every key lives at `/vxtap/v1/` + its relative key; [`Store::list`] is a series of
//!   range requests over the prefix, in pages pinned to one revision (module `list`),
//!   [`Store::watch`] one streaming `/v3/watch` over it;
//! - the cluster lock is the key `/vxtap/v1.lock`, *outside* the data prefix so that no
//!   listing or watch of `""` ever shows it and no relative key can collide with it.
//!
//! Sessions: opening the store grants a lease of `session_ttl` (10 s by default); a keeper
//! thread refreshes it every TTL/3, retrying every 250 ms while etcd cannot be reached and
//! never panicking. [`Session`](super::Lifetime::Session) keys are attached to that lease.
//! If etcd reports the lease gone (it expired while we could not reach etcd), a new one is
//! granted and [`Store::session_epoch`] goes up, telling the daemon to write its session
//! keys again. A session write that finds the lease gone does the same and then writes.
//! Dropping the store stops the keeper but does not revoke the lease: a daemon restarting
//! quickly finds its keys still there, and otherwise they expire on their own. A deliberate
//! leave calls [`EtcdStore::revoke_session`].
//!
//! Endpoints are tried in order, starting with the last one that answered; the next one is
//! tried when a connection cannot be made. The lock and its guarded writes live in `lock`,
//! lock-free txns ([`Store::commit`]) in `txn`, the watch in `watch`, HTTP in `http` and the gateway's message shapes in `json`. Nothing
//! here panics on what etcd sends: answers that do not fit are [`StoreError::Protocol`];
//! connection failures (and etcd saying it has no leader) are [`StoreError::Unreachable`].
//!
//! This module must never block forever: every request has a connect and a read timeout,
//! and the watch stream, which has none, is torn down by dropping its [`Watch`](super::Watch).
//!
//! # Security
//!
//! `etcds://` speaks TLS (module `tls`): etcd's certificate must chain to `--store-ca` and
//! name the URL's host; `--store-cert`/`--store-key` answer etcd's `--client-cert-auth`.
//! With `--store-user` the store authenticates at open and sends etcd's token with every
//! request (module `auth`), renewing it once when etcd calls it stale. Opening also reads
//! the lock key, so missing credentials or a role without access fail at open. Refusals
//! are typed: [`StoreError::Tls`], [`StoreError::AuthFailed`],
//! [`StoreError::AuthRequired`], [`StoreError::PermissionDenied`].
//!
//! vxtap needs readwrite on the key prefix `/vxtap/v1`, which covers both the data under
//! `/vxtap/v1/` and the lock key `/vxtap/v1.lock`, and nothing else. With etcdctl (run with
//! the root user's credentials and the TLS flags of your cluster):
//!
//! ```text
//! etcdctl user add root                      # etcd refuses `auth enable` without root
//! etcdctl role add vxtap
//! etcdctl role grant-permission vxtap readwrite /vxtap/v1 --prefix=true
//! etcdctl user add vxtap                     # asks for the password
//! etcdctl user grant-role vxtap vxtap
//! etcdctl auth enable
//! ```
//!
//! and etcd started with `--client-cert-auth --trusted-ca-file CA --cert-file CERT
//! --key-file KEY --listen-client-urls https://IP:2379 --advertise-client-urls
//! https://IP:2379`. With auth on, a client without the role can neither write vxtap's keys
//! nor take its lock. The tests (`tests/etcd_security.rs`) make the same users and roles
//! through etcd's JSON gateway, not with etcdctl. vxtap's client certificate must have no
//! CommonName: etcd 3.4.23's gateway refuses one once auth is on
//! ([`StoreError::CommonNameRefused`]).

mod auth;
mod http;
mod json;
pub mod leases;
mod list;
mod lock;
pub(crate) mod tls;
mod txn;
mod watch;

pub(crate) use tls::tls_hint;

use super::{check_key, check_prefix, Listing, Locked, Revision, Store, StoreError, StoreOptions};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the data lives in etcd: `ROOT` + relative key.
const ROOT: &str = "/vxtap/v1/";
/// The cluster lock (outside `ROOT`: see the module docs).
const LOCK_KEY: &str = "/vxtap/v1.lock";
/// How soon the keeper retries a refresh that failed.
const RETRY: Duration = Duration::from_millis(250);

/// gRPC status codes that mean "etcd is there but cannot serve now" (no leader, timeout).
const GRPC_DEADLINE_EXCEEDED: i64 = 4;
const GRPC_NOT_FOUND: i64 = 5;
const GRPC_UNAVAILABLE: i64 = 14;

/// What etcd 3.4.23's gateway answers (HTTP 400, plain text) when auth is on and the client
/// certificate has a CommonName: it refuses to let the CN stand for a user.
const COMMON_NAME_REFUSED: &str = "CommonName of client sending a request against gateway";

/// What etcd 3.4 says when a token expired, or when users or roles changed since it was
/// issued: authenticating again fixes both.
const STALE_TOKEN: [&str; 2] = ["invalid auth token", "revision of auth store is old"];

/// Tunables of an [`EtcdStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdOptions {
    /// TTL of the session lease (rounded up to whole seconds; etcd may raise very short TTLs
    /// to its minimum). Session keys outlive a dead process by at most this.
    pub session_ttl: Duration,
    /// TTL of the lease that holds the cluster lock: how long a crashed holder blocks others.
    pub lock_ttl: Duration,
    /// TCP connect timeout, per endpoint address.
    pub connect_timeout: Duration,
    /// Timeout of each read or write of a request (the watch stream excepted).
    pub request_timeout: Duration,
    /// Most keys per range request when listing (at least 1): a listing is paged, every
    /// page read at the first one's revision. A page whose answer is over the 64 MiB body
    /// cap is asked for again with half as many keys.
    pub list_page: usize,
}

impl Default for EtcdOptions {
    fn default() -> EtcdOptions {
        EtcdOptions {
            session_ttl: Duration::from_secs(10),
            lock_ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            list_page: 1000,
        }
    }
}

/// A handle on an etcd cluster. See the module docs.
#[derive(Debug)]
pub struct EtcdStore {
    shared: Arc<Shared>,
    /// Dropping it stops the keeper.
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<JoinHandle<()>>,
}

/// What the store, its keeper thread and its lock handles share.
#[derive(Debug)]
struct Shared {
    url: String,
    client: http::Client,
    options: EtcdOptions,
    /// The current session lease (0 after [`EtcdStore::revoke_session`]).
    lease: AtomicI64,
    epoch: AtomicU64,
    /// Serialises replacing the session lease, so that two threads noticing its loss grant
    /// one new lease, not two.
    renewing: Mutex<()>,
    /// Leases of lock attempts and held locks, refreshed by the keeper.
    lock_leases: Mutex<Vec<i64>>,
    /// The user and its token, with `--store-user`.
    auth: Option<auth::Auth>,
}

/// Why a gateway call failed, before it becomes a [`StoreError`].
#[derive(Debug)]
enum CallError {
    Http(http::HttpError),
    /// A non-200 answer, with the gRPC status it carries.
    Status {
        status: u16,
        code: i64,
        message: String,
    },
    /// A 200 answer that does not decode.
    Decode(String),
}

impl CallError {
    /// The lease named in the request does not exist (expired or revoked).
    fn is_lease_not_found(&self) -> bool {
        matches!(self, CallError::Status { code, message, .. }
            if *code == GRPC_NOT_FOUND && message.contains("lease not found"))
    }

    /// etcd refused the token as expired or stale: authenticating again fixes it.
    fn is_stale_token(&self) -> bool {
        matches!(self, CallError::Status { message, .. }
            if STALE_TOKEN.iter().any(|stale| message.contains(stale)))
    }
}

/// Whether `url` is `etcds://` (TLS), and its endpoints (`HOST:PORT`).
fn parse_url(url: &str) -> Result<(bool, Vec<String>), StoreError> {
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let (tls, rest) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => {
            return Err(invalid(
                "an etcd URL starts with etcd:// or etcds://".to_owned(),
            ))
        }
    };
    if rest.is_empty() {
        return Err(invalid("no endpoint".to_owned()));
    }
    let endpoints = rest
        .split(',')
        .map(|endpoint| {
            let (host, port) = endpoint
                .rsplit_once(':')
                .ok_or_else(|| invalid(format!("endpoint {endpoint:?} has no port")))?;
            let valid_host = !host.is_empty()
                && !host.contains(['/', '@', '?', '#', ' '])
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
            if !valid_host {
                return Err(invalid(format!("endpoint {endpoint:?} has no valid host")));
            }
            match port.parse::<u16>() {
                Ok(port) if port != 0 => Ok(endpoint.to_owned()),
                _ => Err(invalid(format!("endpoint {endpoint:?} has no valid port"))),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok((tls, endpoints))
}

/// Whole seconds, rounded up, at least 1: lease TTLs are in seconds.
fn ttl_seconds(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(seconds.max(1)).unwrap_or(i64::MAX)
}

impl EtcdStore {
    /// Opens `etcd://HOST:PORT[,HOST:PORT...]` with default options.
    ///
    /// # Errors
    ///
    /// `InvalidUrl`, or `Unreachable` when no endpoint answers (etcd is contacted once, to
    /// grant the session lease).
    pub fn open(url: &str) -> Result<EtcdStore, StoreError> {
        EtcdStore::open_with(url, EtcdOptions::default())
    }

    /// Opens `url` with `options`.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn open_with(url: &str, options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        EtcdStore::open_secured(url, options, &StoreOptions::default())
    }

    /// Opens `url` (`etcd://` or `etcds://`) with `options` and the security options
    /// `security`: TLS settings, and a user to authenticate as (see the module docs).
    ///
    /// # Errors
    ///
    /// `InvalidUrl`; `Security` for options that do not fit the URL or unusable files;
    /// `Tls` when a handshake is refused; `AuthFailed` for a wrong user or password,
    /// `AuthNotEnabled` for a user given to an etcd without auth; `AuthRequired` or
    /// `PermissionDenied` when the lock key cannot be read; `Unreachable` when no endpoint
    /// answers.
    pub fn open_secured(
        url: &str,
        options: EtcdOptions,
        security: &StoreOptions,
    ) -> Result<EtcdStore, StoreError> {
        let (tls, endpoints) = parse_url(url)?;
        let insecure = |source| StoreError::Security {
            url: url.to_owned(),
            source: Box::new(source),
        };
        security.check_etcd(tls).map_err(insecure)?;
        let tls = if tls {
            Some(tls::client_config(security).map_err(insecure)?)
        } else {
            None
        };
        let client = http::Client::new(
            endpoints,
            http::Timeouts {
                connect: options.connect_timeout,
                request: options.request_timeout,
            },
            tls,
        );
        let auth = match (&security.user, &security.password) {
            (Some(user), Some(password)) => Some(auth::Auth::new(user.clone(), password.clone())),
            _ => None,
        };
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            client,
            options,
            lease: AtomicI64::new(0),
            epoch: AtomicU64::new(0),
            renewing: Mutex::new(()),
            lock_leases: Mutex::new(Vec::new()),
            auth,
        });
        shared.token().map_err(|err| shared.error(err))?;
        // Credentials and permissions are checked now rather than at the first write.
        let _: json::RangeResponse = shared
            .call_replayable(
                "/v3/kv/range",
                &json::request::key_only(LOCK_KEY.as_bytes()),
            )
            .map_err(|err| shared.error(err))?;
        let lease = shared.grant(options.session_ttl)?;
        shared.lease.store(lease, Ordering::SeqCst);
        let (stop, stopped) = mpsc::channel();
        let keeper_shared = Arc::clone(&shared);
        let keeper = std::thread::Builder::new()
            .name("vxtap-etcd-keeper".to_owned())
            .spawn(move || keep_alive(&keeper_shared, &stopped))
            .map_err(|err| StoreError::Unreachable {
                url: url.to_owned(),
                reason: format!("cannot start the lease keeper thread: {err}"),
            })?;
        Ok(EtcdStore {
            shared,
            stop: Some(stop),
            keeper: Some(keeper),
        })
    }

    /// How many auth tokens this handle obtained from etcd: 1 after opening with a user, one
    /// more each time etcd called the token expired or stale; 0 without a user.
    pub fn authentications(&self) -> u64 {
        self.shared
            .auth
            .as_ref()
            .map_or(0, auth::Auth::authentications)
    }

    /// How many bytes this handle read from etcd so far: the heads and bodies of every
    /// answer (with their chunk framing), watch streams included, lease keep-alives too.
    pub fn bytes_received(&self) -> u64 {
        self.shared.client.bytes_received()
    }

    /// How many connections to etcd this handle opened so far (each watch opens one of
    /// its own; other requests reuse idle connections).
    pub fn connections_opened(&self) -> u64 {
        self.shared.client.connections_opened()
    }

    /// The session lease ID: session keys are attached to it (0 after
    /// [`revoke_session`](Self::revoke_session)).
    pub fn session_lease(&self) -> i64 {
        self.shared.lease.load(Ordering::SeqCst)
    }

    /// Ends the session now: revokes the lease, which deletes every key written with
    /// [`Lifetime::Session`](super::Lifetime::Session) through this handle. For a clean,
    /// deliberate leave; a later session write starts a new session (and a new epoch).
    ///
    /// # Errors
    ///
    /// `Unreachable` (the session then stays as it was), or `Protocol`.
    pub fn revoke_session(&self) -> Result<(), StoreError> {
        let _renewing = self
            .shared
            .renewing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let lease = self.shared.lease.load(Ordering::SeqCst);
        if lease != 0 {
            self.shared.revoke(lease)?;
            self.shared.lease.store(0, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Closing the channel wakes the keeper, which returns (after the request it may be
        // in, bounded by the timeouts). The session lease is left to expire: see the docs.
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            if keeper.join().is_err() {
                tracing::error!(url = %self.shared.url, "the etcd lease keeper panicked");
            }
        }
    }
}

impl Store for EtcdStore {
    fn url(&self) -> String {
        self.shared.url.clone()
    }

    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        check_prefix(prefix)?;
        self.shared.list(prefix)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn super::Watch>, StoreError> {
        check_prefix(prefix)?;
        Ok(Box::new(watch::EtcdWatch::start(
            &self.shared,
            prefix,
            after,
        )?))
    }

    fn lock(&self, timeout: Duration) -> Result<Box<dyn Locked + '_>, StoreError> {
        Ok(Box::new(lock::EtcdLocked::acquire(&self.shared, timeout)?))
    }

    fn commit(&self, txn: &super::Txn) -> Result<super::Committed, StoreError> {
        txn::commit(&self.shared, txn, None)
    }

    fn session_epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::SeqCst)
    }
}

/// The keeper thread: refreshes the session lease every TTL/3 and the lock leases every
/// lock TTL/3, retrying failures every [`RETRY`], until `stop` closes.
fn keep_alive(shared: &Shared, stop: &mpsc::Receiver<()>) {
    let session_period = shared.options.session_ttl / 3;
    let lock_period = shared.options.lock_ttl / 3;
    let mut next_session = Instant::now() + session_period;
    let mut next_lock = Instant::now() + lock_period;
    loop {
        let due = next_session.min(next_lock);
        match stop.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        if now >= next_session {
            next_session = match shared.refresh_session() {
                Ok(()) => now + session_period,
                Err(err) => {
                    tracing::debug!(url = %shared.url, error = %err, "refreshing the session");
                    now + RETRY.min(session_period)
                }
            };
        }
        if now >= next_lock {
            next_lock = match shared.refresh_lock_leases() {
                Ok(()) => now + lock_period,
                Err(err) => {
                    tracing::debug!(url = %shared.url, error = %err, "refreshing the lock lease");
                    now + RETRY.min(lock_period)
                }
            };
        }
    }
}

impl Shared {
    /// `POST path` with `body`; the decoded 200 answer, or why there is none. Not sent a
    /// second time once sent whole (see `http`'s docs): for writes.
    fn call<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, CallError> {
        let request = body.to_string();
        self.authorized(|token| self.post(path, &request, token, http::Replay::OnlyIfUnsent))
    }

    /// [`call`](Self::call) for a read, or a call whose repetition is harmless: may be sent
    /// again on a new connection when a kept one turns out closed.
    fn call_replayable<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, CallError> {
        let request = body.to_string();
        self.authorized(|token| self.post(path, &request, token, http::Replay::Safe))
    }

    /// One `POST` with `token`; the decoded 200 answer.
    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        request: &str,
        token: Option<&auth::Token>,
        replay: http::Replay,
    ) -> Result<T, CallError> {
        let response = self
            .client
            .post(
                path,
                request.as_bytes(),
                token.map(auth::Token::as_str),
                replay,
            )
            .map_err(CallError::Http)?;
        if response.status != 200 {
            return Err(status_error(response.status, &response.body));
        }
        json::decode(&response.body).map_err(CallError::Decode)
    }

    /// A call to a streaming endpoint with a single message: its single answer. Used for
    /// lease keep-alives, which are harmless to repeat.
    fn call_once<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, CallError> {
        let request = body.to_string();
        self.authorized(|token| {
            let message: json::StreamMessage<T> =
                self.post(path, &request, token, http::Replay::Safe)?;
            match (message.result, message.error) {
                (Some(result), _) => Ok(result),
                (None, error) => Err(stream_error(error.as_ref())),
            }
        })
    }

    /// Runs `attempt` with the current token (none without a user), and once more with a
    /// new one if etcd called it stale. A refused request was not applied, so sending it
    /// again is safe.
    fn authorized<T>(
        &self,
        attempt: impl Fn(Option<&auth::Token>) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let Some(token) = self.token()? else {
            return attempt(None);
        };
        match attempt(Some(&token)) {
            Err(err) if err.is_stale_token() => {
                let fresh = self.renew_token(&token)?;
                attempt(Some(&fresh))
            }
            other => other,
        }
    }

    /// The current auth token (authenticating if there is none yet); `None` without a user.
    fn token(&self) -> Result<Option<auth::Token>, CallError> {
        self.auth
            .as_ref()
            .map(|auth| auth.token(&self.client))
            .transpose()
    }

    /// A new token in place of `stale`.
    fn renew_token(&self, stale: &auth::Token) -> Result<auth::Token, CallError> {
        match &self.auth {
            Some(auth) => {
                tracing::debug!(url = %self.url, "etcd refused the auth token as stale; authenticating again");
                auth.renew(&self.client, stale)
            }
            None => Ok(stale.clone()),
        }
    }

    /// The configured user, if any.
    fn user(&self) -> Option<&str> {
        self.auth.as_ref().map(|auth| auth.user.as_str())
    }

    /// The [`StoreError`] for a failed call.
    fn error(&self, err: CallError) -> StoreError {
        store_error(&self.url, self.user(), err)
    }

    /// See [`relative`].
    fn relative(&self, key: &[u8]) -> Result<Option<String>, StoreError> {
        relative(&self.url, key)
    }

    /// Grants a lease of `ttl`.
    fn grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let grant: json::LeaseResponse = self
            .call_replayable("/v3/lease/grant", &json::request::grant(ttl_seconds(ttl)))
            .map_err(|err| self.error(err))?;
        if !grant.error.is_empty() || grant.id == 0 {
            return Err(StoreError::Protocol {
                url: self.url.clone(),
                reason: format!("lease grant refused: {:?}", grant.error),
            });
        }
        Ok(grant.id)
    }

    /// Refreshes `lease`; its remaining TTL in seconds, 0 if it no longer exists.
    fn keep_lease_alive(&self, lease: i64) -> Result<i64, StoreError> {
        let answer: json::LeaseResponse = self
            .call_once("/v3/lease/keepalive", &json::request::lease(lease))
            .map_err(|err| self.error(err))?;
        Ok(answer.ttl)
    }

    /// Revokes `lease` (and so deletes its keys); a lease already gone is fine.
    fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        match self.call::<Value>("/v3/lease/revoke", &json::request::lease(lease)) {
            Ok(_) => Ok(()),
            Err(err) if err.is_lease_not_found() => Ok(()),
            Err(err) => Err(self.error(err)),
        }
    }

    /// One keeper round for the session lease.
    fn refresh_session(&self) -> Result<(), StoreError> {
        let lease = self.lease.load(Ordering::SeqCst);
        if lease == 0 {
            return Ok(()); // Revoked on purpose: nothing to keep.
        }
        if self.keep_lease_alive(lease)? <= 0 {
            tracing::warn!(url = %self.url, lease, "the session lease expired; starting a new session");
            self.renew_session(lease)?;
        }
        Ok(())
    }

    /// Replaces the session lease `stale` (expired, revoked, or 0) with a new one and
    /// starts a new epoch, unless another thread already did; returns the current lease.
    fn renew_session(&self, stale: i64) -> Result<i64, StoreError> {
        let _renewing = self.renewing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.lease.load(Ordering::SeqCst);
        if current != stale {
            return Ok(current);
        }
        let lease = self.grant(self.options.session_ttl)?;
        self.lease.store(lease, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(lease)
    }

    /// The lease session keys are written with, starting a new session after a revoke.
    fn session_lease(&self) -> Result<i64, StoreError> {
        match self.lease.load(Ordering::SeqCst) {
            0 => self.renew_session(0),
            lease => Ok(lease),
        }
    }

    /// One keeper round for the lock leases. A lease found gone is left alone: the lock it
    /// held is gone with it, and its holder's next write reports `LockLost`.
    fn refresh_lock_leases(&self) -> Result<(), StoreError> {
        let leases = self
            .lock_leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for lease in leases {
            self.keep_lease_alive(lease)?;
        }
        Ok(())
    }
}

/// The [`StoreError`] for a failed call to the store at `url`, made as `user` (if any).
fn store_error(url: &str, user: Option<&str>, err: CallError) -> StoreError {
    let url = url.to_owned();
    match err {
        CallError::Http(http::HttpError::Malformed { endpoint, reason }) => StoreError::Protocol {
            url,
            reason: format!("{endpoint}: {reason}"),
        },
        CallError::Http(err @ http::HttpError::TooLarge { .. }) => StoreError::Protocol {
            url,
            reason: err.to_string(),
        },
        CallError::Http(http::HttpError::Tls {
            endpoint,
            source,
            client_cert,
        }) => StoreError::Tls {
            url,
            endpoint,
            source: Box::new(source),
            client_cert,
        },
        CallError::Http(http::HttpError::TlsClosed { endpoint, source }) => StoreError::TlsClosed {
            url,
            endpoint,
            source,
        },
        CallError::Http(http::HttpError::TlsExpected { endpoint }) => {
            StoreError::TlsExpected { url, endpoint }
        }
        CallError::Status { message, .. } if message.contains(COMMON_NAME_REFUSED) => {
            StoreError::CommonNameRefused { url }
        }
        CallError::Status { message, .. } if message.contains("authentication failed") => {
            StoreError::AuthFailed {
                url,
                user: user.unwrap_or_default().to_owned(),
                reason: message,
            }
        }
        CallError::Status { message, .. } if message.contains("authentication is not enabled") => {
            StoreError::AuthNotEnabled {
                url,
                user: user.unwrap_or_default().to_owned(),
            }
        }
        CallError::Status { message, .. } if message.contains("permission denied") => {
            StoreError::PermissionDenied {
                url,
                user: user.map(str::to_owned),
                reason: message,
            }
        }
        CallError::Status { message, .. }
            if message.contains("user name is empty")
                || (user.is_none() && message.contains("invalid auth token")) =>
        {
            StoreError::AuthRequired {
                url,
                reason: message,
            }
        }
        CallError::Status { message, .. } if message.contains("invalid auth token") => {
            StoreError::AuthFailed {
                url,
                user: user.unwrap_or_default().to_owned(),
                reason: format!("{message}, even after authenticating again"),
            }
        }
        CallError::Http(err) => StoreError::Unreachable {
            url,
            reason: err.to_string(),
        },
        CallError::Status {
            status,
            code,
            message,
        } if status == 503 || code == GRPC_UNAVAILABLE || code == GRPC_DEADLINE_EXCEEDED => {
            StoreError::Unreachable {
                url,
                reason: format!("{message} (HTTP {status})"),
            }
        }
        CallError::Status {
            status,
            code,
            message,
        } => StoreError::Protocol {
            url,
            reason: format!("HTTP {status}, gRPC code {code}: {message}"),
        },
        CallError::Decode(reason) => StoreError::Protocol { url, reason },
    }
}

/// The relative key of an etcd key under [`ROOT`] (from the store at `url`); `None` (with a warning) for a key
/// that someone else wrote there and that breaks the key rules.
fn relative(url: &str, key: &[u8]) -> Result<Option<String>, StoreError> {
    let Some(relative) = key.strip_prefix(ROOT.as_bytes()) else {
        return Err(StoreError::Protocol {
            url: url.to_owned(),
            reason: format!(
                "key {:?} is outside the range asked for",
                String::from_utf8_lossy(key)
            ),
        });
    };
    match std::str::from_utf8(relative) {
        Ok(relative) if check_key(relative).is_ok() => Ok(Some(relative.to_owned())),
        _ => {
            tracing::warn!(url = %url, key = %String::from_utf8_lossy(key),
                "ignoring a key that breaks the key rules");
            Ok(None)
        }
    }
}

/// The error of a non-200 answer (`{"error", "message", "code"}` when etcd wrote it).
fn status_error(status: u16, body: &[u8]) -> CallError {
    match json::decode::<json::ErrorBody>(body) {
        Ok(error) => CallError::Status {
            status,
            code: error.code,
            message: error.message,
        },
        Err(_) => CallError::Status {
            status,
            code: 0,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

/// The error of a stream message without a result: `{"error": {"grpc_code": N, "message":
/// "..."}}` from the gateway, or something stranger.
fn stream_error(error: Option<&Value>) -> CallError {
    match error {
        Some(error) => CallError::Status {
            status: error["http_code"]
                .as_u64()
                .and_then(|code| u16::try_from(code).ok())
                .unwrap_or(200),
            code: error["grpc_code"].as_i64().unwrap_or(0),
            message: error["message"]
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned),
        },
        None => CallError::Decode("a stream message with neither result nor error".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("etcd://10.0.0.1:2379").unwrap(),
            (false, vec!["10.0.0.1:2379".to_owned()])
        );
        assert_eq!(
            parse_url("etcd://a:1,etcd-2.example:2379,[fd00::1]:2379")
                .unwrap()
                .1,
            ["a:1", "etcd-2.example:2379", "[fd00::1]:2379"]
        );
        assert_eq!(
            parse_url("etcds://10.0.0.1:2379,10.0.0.2:2379").unwrap(),
            (
                true,
                vec!["10.0.0.1:2379".to_owned(), "10.0.0.2:2379".to_owned()]
            )
        );
        for bad in [
            "etcd://",
            "etcd://host",
            "etcd://host:",
            "etcd://host:0",
            "etcd://host:65536",
            "etcd://:2379",
            "etcd://a:1,",
            "etcd://a:1/path",
            "etcd://user@a:1",
            "etcd://fd00::1:2379",
            "http://a:1",
            "etcds://",
            "etcds://host",
            "https://a:1",
        ] {
            match parse_url(bad) {
                Err(StoreError::InvalidUrl { url, .. }) => assert_eq!(url, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn ttls_round_up_to_seconds() {
        assert_eq!(ttl_seconds(Duration::from_secs(10)), 10);
        assert_eq!(ttl_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn lock_key_is_outside_the_data() {
        assert!(!LOCK_KEY.starts_with(ROOT));
        let end = json::prefix_end(ROOT.as_bytes());
        assert!(
            !(ROOT.as_bytes() <= LOCK_KEY.as_bytes() && LOCK_KEY.as_bytes() < end.as_slice()),
            "a range over the data would include the lock"
        );
    }

    #[test]
    fn classifies_errors() {
        let shared = Shared {
            url: "etcd://x:1".to_owned(),
            client: http::Client::new(
                vec!["x:1".to_owned()],
                http::Timeouts {
                    connect: Duration::from_secs(1),
                    request: Duration::from_secs(1),
                },
                None,
            ),
            options: EtcdOptions::default(),
            lease: AtomicI64::new(0),
            epoch: AtomicU64::new(0),
            renewing: Mutex::new(()),
            lock_leases: Mutex::new(Vec::new()),
            auth: None,
        };
        let not_found = status_error(
            404,
            br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        );
        assert!(not_found.is_lease_not_found());
        assert!(matches!(
            shared.error(not_found),
            StoreError::Protocol { .. }
        ));
        let no_leader = status_error(
            503,
            br#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#,
        );
        assert!(!no_leader.is_lease_not_found());
        assert!(matches!(
            shared.error(no_leader),
            StoreError::Unreachable { .. }
        ));
        let garbage = status_error(502, b"<html>bad gateway</html>");
        assert!(matches!(shared.error(garbage), StoreError::Protocol { .. }));
        let stream = stream_error(Some(&serde_json::json!(
            {"grpc_code": 14, "http_code": 503, "message": "transport closing"}
        )));
        assert!(matches!(
            shared.error(stream),
            StoreError::Unreachable { .. }
        ));
        assert!(matches!(
            shared.error(stream_error(None)),
            StoreError::Protocol { .. }
        ));
        assert!(matches!(
            shared.relative(b"/elsewhere/a"),
            Err(StoreError::Protocol { .. })
        ));
        assert_eq!(
            shared.relative(b"/vxtap/v1/a/b").unwrap().as_deref(),
            Some("a/b")
        );
        assert_eq!(shared.relative(b"/vxtap/v1/a b").unwrap(), None);
        assert_eq!(shared.relative(b"/vxtap/v1/\xff").unwrap(), None);
    }
}

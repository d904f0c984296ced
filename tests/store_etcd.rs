//! The etcd store backend against a real etcd (`/usr/bin/etcd`), each test with an etcd of its
//! own in a network namespace of its own.
//!
//! etcd listens on 127.0.0.1 of the test's namespace, and the whole test body runs inside
//! that namespace (`Netns::run_in`; the store's threads inherit it), so no packet touches the
//! root namespace. These tests need root: without it they fail, they never pass silently.
//! Waits are bounded; the only timing checked is that an outage is reported within a bound.

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use vxtap::store::etcd::{EtcdOptions, EtcdStore};
use vxtap::store::{conformance, Committed, Lifetime, Listing, Store, StoreError, Txn, WatchEvent};
use vxtap_suite::harness::etcd::Etcd;
use vxtap_suite::harness::NetnsExt;
use vxtap_suite::harness::{require_root, wait_until, Netns};

/// How long an expected change may take to show (lease expiry included).
const WAIT: Duration = Duration::from_secs(20);

/// A namespace with etcd on its 127.0.0.1. Drop order (etcd, then the namespace) is the
/// reverse of the tuple's.
fn etcd_in_netns() -> (Netns, Etcd) {
    require_root();
    let ns = Netns::unique("etcd");
    let etcd = Etcd::start(&ns, Ipv4Addr::LOCALHOST);
    (ns, etcd)
}

fn open(etcd: &Etcd) -> EtcdStore {
    EtcdStore::open(&etcd.url())
        .unwrap_or_else(|e| panic!("open {}: {e}\n{}", etcd.url(), etcd.log()))
}

fn open_with(etcd: &Etcd, options: EtcdOptions) -> EtcdStore {
    EtcdStore::open_with(&etcd.url(), options)
        .unwrap_or_else(|e| panic!("open {}: {e}\n{}", etcd.url(), etcd.log()))
}

fn put(store: &dyn Store, key: &str, value: &[u8], lifetime: Lifetime) {
    let mut locked = store.lock(WAIT).expect("lock");
    locked.put(key, value, lifetime).expect("put");
}

fn list(store: &dyn Store, prefix: &str) -> Listing {
    store.list(prefix).expect("list")
}

fn keys(listing: &Listing) -> Vec<&str> {
    listing.entries.iter().map(|e| e.key.as_str()).collect()
}

/// The next watch event, waiting at most [`WAIT`].
fn next_event(watch: &mut dyn vxtap::store::Watch) -> WatchEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no watch event within {WAIT:?}");
        if let Some(event) = watch.next(left).expect("watch") {
            return event;
        }
    }
}

/// Runs `f` on another thread and waits at most `limit` for its result: for calls that must
/// fail fast while etcd is down.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

fn expect_unreachable<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Unreachable { .. }) => {}
        other => panic!("{what} while etcd is down: expected Unreachable, got {other:?}"),
    }
}

#[test]
fn conformance_suite() {
    let (ns, etcd) = etcd_in_netns();
    let url = etcd.url();
    ns.run_in(|| {
        conformance::run_all(&|| {
            Box::new(EtcdStore::open(&url).unwrap_or_else(|e| panic!("open {url}: {e}")))
                as Box<dyn Store>
        });
    });
}

#[test]
fn unreachable_at_open_and_fail_over_to_the_next_endpoint() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        // Nothing listens on port 1 in this namespace.
        match EtcdStore::open("etcd://127.0.0.1:1") {
            Err(StoreError::Unreachable { url, reason }) => {
                assert_eq!(url, "etcd://127.0.0.1:1");
                assert!(reason.contains("127.0.0.1:1"), "reason: {reason}");
            }
            other => panic!("open of a closed port: {other:?}"),
        }
        let url = format!(
            "etcd://127.0.0.1:1,{}",
            etcd.url().trim_start_matches("etcd://")
        );
        let store = EtcdStore::open(&url).expect("open with a dead first endpoint");
        put(&store, "failover/k", b"v", Lifetime::Permanent);
        assert_eq!(keys(&list(&store, "failover/")), ["failover/k"]);
        assert_eq!(store.url(), url);
    });
}

#[test]
fn session_keys_expire_after_the_handle_is_dropped() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let options = EtcdOptions {
            session_ttl: Duration::from_secs(2),
            ..EtcdOptions::default()
        };
        let writer = open_with(&etcd, options);
        put(&writer, "hosts/a", b"alive", Lifetime::Session);
        put(&writer, "networks/n", b"kept", Lifetime::Permanent);
        let reader = open(&etcd);
        assert_eq!(keys(&list(&reader, "")), ["hosts/a", "networks/n"]);
        // While the writer lives, the keeper holds the session beyond its TTL.
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            keys(&list(&reader, "")),
            ["hosts/a", "networks/n"],
            "expired while alive"
        );
        drop(writer);
        assert!(
            wait_until(WAIT, || keys(&list(&reader, "")) == ["networks/n"]),
            "session key still there after its handle was dropped: {:?}",
            keys(&list(&reader, ""))
        );
    });
}

#[test]
fn revoke_session_removes_session_keys_at_once() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let store = open(&etcd);
        let first = store.session_lease();
        assert_ne!(first, 0);
        put(&store, "hosts/a", b"alive", Lifetime::Session);
        put(&store, "networks/n", b"kept", Lifetime::Permanent);
        store.revoke_session().expect("revoke_session");
        assert_eq!(store.session_lease(), 0);
        let other = open(&etcd);
        assert_eq!(keys(&list(&other, "")), ["networks/n"]);
        // A later session write starts a new session.
        put(&store, "hosts/a", b"back", Lifetime::Session);
        assert_eq!(store.session_epoch(), 1);
        assert_ne!(store.session_lease(), first);
        assert_eq!(keys(&list(&other, "")), ["hosts/a", "networks/n"]);
    });
}

#[test]
fn a_lost_session_lease_starts_a_new_epoch() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let options = EtcdOptions {
            session_ttl: Duration::from_secs(3),
            ..EtcdOptions::default()
        };
        let store = open_with(&etcd, options);
        put(&store, "hosts/a", b"alive", Lifetime::Session);
        // The lease vanishes behind the store's back, as if it had expired during an outage.
        let lease = store.session_lease();
        let (status, body) = etcd.post("/v3/lease/revoke", &json!({"ID": lease.to_string()}));
        assert_eq!(status, 200, "{body}");
        assert!(
            wait_until(WAIT, || store.session_epoch() == 1),
            "the keeper did not start a new session"
        );
        assert_ne!(store.session_lease(), lease);
        assert_eq!(
            keys(&list(&store, "")),
            Vec::<&str>::new(),
            "the session key survived"
        );
        // The daemon writes its session keys again, on the new lease.
        put(&store, "hosts/a", b"again", Lifetime::Session);
        assert_eq!(keys(&list(&store, "")), ["hosts/a"]);

        // A session put that finds the lease gone renews it at once and still writes.
        let lease = store.session_lease();
        etcd.post("/v3/lease/revoke", &json!({"ID": lease.to_string()}));
        put(&store, "hosts/b", b"written", Lifetime::Session);
        assert_eq!(store.session_epoch(), 2);
        assert_eq!(keys(&list(&store, "")), ["hosts/b"]);
    });
}

/// etcd refuses a txn over its default `--max-txn-ops` (128): the limit `Txn::check`
/// enforces (127, one kept for the lock's compare) is real.
#[test]
fn etcd_refuses_txns_over_128_ops() {
    use base64::Engine as _;
    let base64_of = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (_ns, etcd) = etcd_in_netns();
    let compare = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| {
                let key = format!("/vxtap/v1/big/{i}");
                json!({"target": "CREATE", "result": "EQUAL", "create_revision": "0",
                       "key": base64_of(key.as_bytes())})
            })
            .collect()
    };
    let (status, body) = etcd.post("/v3/kv/txn", &json!({"compare": compare(128)}));
    assert_eq!(status, 200, "128 compares: {body}");
    let (status, body) = etcd.post("/v3/kv/txn", &json!({"compare": compare(129)}));
    assert_ne!(status, 200, "129 compares were accepted: {body}");
    assert!(body.to_string().contains("too many operations"), "{body}");
}

/// Session puts of a commit are bound to the session lease: they vanish with it, and a
/// commit that finds the lease gone starts a new session and still applies.
#[test]
fn committed_session_keys_live_and_die_with_the_session() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let store = open(&etcd);
        let claim = |key: &str| {
            Txn::new()
                .create(format!("claims/{key}"), b"mine", Lifetime::Session)
                .create(format!("kept/{key}"), b"mine", Lifetime::Permanent)
        };
        let commit = |txn: &Txn| match store.commit(txn) {
            Ok(Committed::Done { revision }) => revision,
            other => panic!("commit: {other:?}"),
        };
        commit(&claim("a"));
        let other = open(&etcd);
        assert_eq!(keys(&list(&other, "")), ["claims/a", "kept/a"]);
        store.revoke_session().expect("revoke_session");
        assert_eq!(
            keys(&list(&other, "")),
            ["kept/a"],
            "the session claim survived"
        );

        // The lease vanishes behind the store's back: the commit renews it and applies.
        commit(&claim("b"));
        assert_eq!(store.session_epoch(), 1);
        let lease = store.session_lease();
        let (status, body) = etcd.post("/v3/lease/revoke", &json!({"ID": lease.to_string()}));
        assert_eq!(status, 200, "{body}");
        let revision = commit(&claim("c"));
        assert_eq!(store.session_epoch(), 2);
        assert_ne!(store.session_lease(), lease);
        let listing = list(&other, "");
        assert_eq!(keys(&listing), ["claims/c", "kept/a", "kept/b", "kept/c"]);
        // Every key a commit creates has the commit's revision as its creation revision.
        assert!(listing
            .entries
            .iter()
            .filter(|e| e.key.ends_with("/c"))
            .all(|e| e.created == revision));
    });
}

#[test]
fn compaction_past_a_watch_start_gives_resync() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let store = open(&etcd);
        put(&store, "c/k", b"0", Lifetime::Permanent);
        let listing = list(&store, "c/");
        // A watch that is running when the history is compacted is not disturbed.
        let mut running = store.watch("c/", listing.revision).expect("watch");
        put(&store, "c/k", b"1", Lifetime::Permanent);
        put(&store, "c/k", b"2", Lifetime::Permanent);
        for value in [b"1", b"2"] {
            match next_event(&mut *running) {
                WatchEvent::Changed {
                    key, value: got, ..
                } => {
                    assert_eq!((key.as_str(), got.as_deref()), ("c/k", Some(&value[..])));
                }
                other => panic!("running watch: {other:?}"),
            }
        }
        let compacted = etcd.compact();
        assert!(compacted > listing.revision + 1);

        let mut late = store.watch("c/", listing.revision).expect("watch");
        assert_eq!(next_event(&mut *late), WatchEvent::Resync);
        assert_eq!(
            next_event(&mut *late),
            WatchEvent::Resync,
            "a resynced watch is finished"
        );

        // After listing again, a new watch works.
        let fresh = list(&store, "c/");
        assert_eq!(fresh.entries[0].value, b"2");
        let mut again = store.watch("c/", fresh.revision).expect("watch");
        put(&store, "c/k", b"3", Lifetime::Permanent);
        assert!(matches!(
            next_event(&mut *again),
            WatchEvent::Changed { ref value, .. } if value.as_deref() == Some(&b"3"[..])
        ));
        // The watch that was running all along saw that write too.
        assert!(matches!(
            next_event(&mut *running),
            WatchEvent::Changed { ref value, .. } if value.as_deref() == Some(&b"3"[..])
        ));
    });
}

#[test]
fn outage_is_reported_and_survived() {
    let (ns, mut etcd) = etcd_in_netns();
    let url = etcd.url();
    let bound = Duration::from_secs(6);
    ns.run_in(|| {
        let store = std::sync::Arc::new(open(&etcd));
        put(&*store, "hosts/a", b"alive", Lifetime::Session);
        put(&*store, "networks/n", b"kept", Lifetime::Permanent);
        let listing = list(&*store, "");
        let mut watch = store.watch("", listing.revision).expect("watch");

        etcd.stop();

        let s = store.clone();
        expect_unreachable(within(bound, "list", move || s.list("")), "list");
        let s = store.clone();
        expect_unreachable(
            within(bound, "lock", move || {
                s.lock(Duration::from_secs(1)).map(drop)
            }),
            "lock",
        );
        let u = url.clone();
        expect_unreachable(
            within(bound, "open", move || EtcdStore::open(&u).map(drop)),
            "open",
        );
        let failed = within(bound, "watch", move || {
            let deadline = Instant::now() + WAIT;
            loop {
                match watch.next(Duration::from_millis(100)) {
                    Ok(None) if Instant::now() < deadline => {}
                    other => return other.map(|_| ()),
                }
            }
        });
        expect_unreachable(failed, "the watch");

        etcd.start_again();

        // The old handle works again, and so does a new one.
        let fresh = open(&etcd);
        assert!(
            wait_until(WAIT, || store.list("").is_ok()),
            "the old handle does not work after the restart"
        );
        put(&*store, "networks/m", b"after", Lifetime::Permanent);
        let listing = list(&fresh, "");
        assert!(keys(&listing).contains(&"networks/m"));
        assert!(keys(&listing).contains(&"networks/n"));
        // etcd refreshes leases when it restarts: the session key is still there, or the
        // store noticed the lease was gone and started a new session.
        assert!(
            keys(&listing).contains(&"hosts/a") || store.session_epoch() > 0,
            "the session key vanished but the epoch stayed {}",
            store.session_epoch()
        );
        // The session is kept alive again: a session key (the old one if it survived,
        // written again on the new session otherwise) outlives another session TTL.
        if store.session_epoch() > 0 {
            put(&*store, "hosts/a", b"again", Lifetime::Session);
        }
        std::thread::sleep(EtcdOptions::default().session_ttl + Duration::from_secs(1));
        assert_eq!(
            keys(&list(&fresh, "hosts/")),
            ["hosts/a"],
            "the session key did not outlive a TTL after the restart (epoch {})",
            store.session_epoch()
        );
    });
}

#[test]
fn lock_of_a_vanished_holder_frees_after_its_ttl() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let options = EtcdOptions {
            lock_ttl: Duration::from_secs(2),
            ..EtcdOptions::default()
        };
        let crashed = open_with(&etcd, options);
        let waiter = open(&etcd);
        // A holder that never releases: its handle forgets the lock, then goes away (so
        // nothing refreshes the lock's lease any more).
        std::mem::forget(crashed.lock(WAIT).expect("lock"));
        match waiter.lock(Duration::from_millis(200)) {
            Err(StoreError::LockTimeout { .. }) => {}
            other => panic!("lock while held: {:?}", other.map(drop)),
        }
        drop(crashed);
        let mut locked = waiter
            .lock(WAIT)
            .expect("the lock was not freed by its lease");
        locked.put("k", b"v", Lifetime::Permanent).expect("put");
    });
}

#[test]
fn second_holder_times_out_while_the_first_holds() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let a = open(&etcd);
        let b = open(&etcd);
        let leases_before = lease_count(&etcd);
        let held = a.lock(WAIT).expect("lock");
        for _ in 0..3 {
            match b.lock(Duration::from_millis(300)) {
                Err(StoreError::LockTimeout { url, waited }) => {
                    assert_eq!(url, b.url());
                    assert!(waited >= Duration::from_millis(300));
                }
                other => panic!("second holder: {:?}", other.map(drop)),
            }
        }
        // The attempts gave their leases back: only the holder's is left.
        assert_eq!(lease_count(&etcd), leases_before + 1);
        drop(held);
        drop(b.lock(WAIT).expect("lock after release"));
        assert_eq!(lease_count(&etcd), leases_before, "a lock lease leaked");
    });
}

#[test]
fn a_holder_that_lost_the_lock_writes_nothing() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let a = open(&etcd);
        let b = open(&etcd);
        let mut stale = a.lock(WAIT).expect("lock");
        stale.put("k", b"a1", Lifetime::Permanent).expect("put");
        // The lock key disappears (as when its lease expires during a long pause)...
        let (status, body) = etcd.post(
            "/v3/kv/deleterange",
            &json!({"key": "L3Z4dGFwL3YxLmxvY2s="}), // "/vxtap/v1.lock"
        );
        assert_eq!((status, &body["deleted"]), (200, &json!("1")), "{body}");
        // ... and someone else takes it.
        let mut current = b.lock(WAIT).expect("lock");
        match stale.put("k", b"a2", Lifetime::Permanent) {
            Err(StoreError::LockLost { .. }) => {}
            other => panic!("put by the stale holder: {other:?}"),
        }
        match stale.delete("k") {
            Err(StoreError::LockLost { .. }) => {}
            other => panic!("delete by the stale holder: {other:?}"),
        }
        // A commit through the stale lock writes nothing either, even with its own
        // conditions holding.
        let claim = Txn::new().create("claims/x", b"a", Lifetime::Session);
        match stale.commit(&claim) {
            Err(StoreError::LockLost { .. }) => {}
            other => panic!("commit by the stale holder: {other:?}"),
        }
        assert!(list(&b, "claims/").entries.is_empty());
        match current.commit(&claim) {
            Ok(Committed::Done { .. }) => {}
            other => panic!("commit by the current holder: {other:?}"),
        }
        // Releasing the stale handle leaves the current holder's lock alone.
        drop(stale);
        match a.lock(Duration::from_millis(200)) {
            Err(StoreError::LockTimeout { .. }) => {}
            other => panic!("lock while b holds it: {:?}", other.map(drop)),
        }
        current.put("k", b"b1", Lifetime::Permanent).expect("put");
        drop(current);
        let listing = list(&a, "");
        assert_eq!(keys(&listing), ["claims/x", "k"]);
        assert_eq!(listing.entries[1].value, b"b1");
    });
}

/// How many leases etcd holds.
fn lease_count(etcd: &Etcd) -> usize {
    let (status, body) = etcd.post("/v3/lease/leases", &json!({}));
    assert_eq!(status, 200, "{body}");
    body["leases"].as_array().map_or(0, Vec::len)
}

/// Writes `count` keys `PREFIX/kNNNNNNN` with `value` straight through the gateway, in txns
/// of `batch` puts (etcd's `--max-txn-ops` is 128), from `threads` threads.
fn write_keys(etcd: &Etcd, prefix: &str, count: usize, value: &[u8], batch: usize, threads: usize) {
    use base64::Engine as _;
    let base64 = base64::engine::general_purpose::STANDARD;
    let value = base64.encode(value);
    let batches: Vec<(usize, usize)> = (0..count)
        .step_by(batch)
        .map(|start| (start, (start + batch).min(count)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(start, end)) = batches.get(index) else {
                    return;
                };
                let puts: Vec<_> = (start..end)
                    .map(|n| {
                        let key = format!("/vxtap/v1/{prefix}/k{n:07}");
                        json!({"request_put": {"key": base64.encode(key), "value": value}})
                    })
                    .collect();
                let (status, body) = etcd.post("/v3/kv/txn", &json!({ "success": puts }));
                assert_eq!(status, 200, "{body}");
            });
        }
    });
}

/// The keys `PREFIX/k0000000` .. of [`write_keys`].
fn written_keys(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}/k{n:07}")).collect()
}

#[test]
fn requests_reuse_connections_and_count_bytes() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let store = open(&etcd);
        let opened = store.connections_opened();
        let before = store.bytes_received();
        for n in 0..20 {
            put(&store, &format!("reuse/k{n}"), b"v", Lifetime::Permanent);
            assert_eq!(list(&store, "reuse/").entries.len(), n + 1);
        }
        assert!(store.bytes_received() > before);
        // 20 locks, puts, unlocks and lists on the connection that opened the store; at
        // most one more if the lease keeper refreshed at the same moment.
        let made = store.connections_opened() - opened;
        assert!(made <= 1, "{made} connections for 80 requests");

        // A restarted etcd closed every kept connection: the next requests still work.
        let mut etcd = etcd;
        etcd.stop();
        etcd.start_again();
        assert!(
            wait_until(WAIT, || store.list("reuse/").is_ok()),
            "etcd answers again"
        );
        assert_eq!(list(&store, "reuse/").entries.len(), 20);
        put(&store, "reuse/after", b"v", Lifetime::Permanent);
    });
}

#[test]
fn lists_in_pages_at_one_revision() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let store = open_with(
            &etcd,
            EtcdOptions {
                list_page: 3,
                ..EtcdOptions::default()
            },
        );
        write_keys(&etcd, "paged", 100, b"v", 16, 2);
        put(&store, "paged0", b"after the prefix", Lifetime::Permanent);
        put(&store, "other/x", b"before the prefix", Lifetime::Permanent);
        let listing = list(&store, "paged/");
        assert_eq!(keys(&listing), written_keys("paged", 100));
        let whole = open(&etcd).list("").expect("list");
        assert_eq!(whole.entries.len(), 102);
        assert_eq!(list(&store, "").entries, whole.entries);

        // Keys written while a paged listing runs are not in it: every page is read at the
        // first one's revision. The writer's keys sort after the listed ones, so pages
        // reach them; the listing is repeated until a write landed during one.
        let writer = open(&etcd);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    put(
                        &writer,
                        &format!("paged/z{n:06}"),
                        b"new",
                        Lifetime::Permanent,
                    );
                    n += 1;
                }
            });
            let mut raced = false;
            for _ in 0..50 {
                let listing = list(&store, "paged/");
                let later = list(&store, "paged/");
                let at_revision: Vec<_> = later
                    .entries
                    .iter()
                    .filter(|entry| entry.created <= listing.revision)
                    .collect();
                assert_eq!(
                    listing.entries.iter().collect::<Vec<_>>(),
                    at_revision,
                    "the listing is the store at its revision"
                );
                let first = listing.entries.first().map_or(0, |entry| entry.created);
                // A key created after the listing's revision but before the listing read
                // past it would have been seen without the pinned revision.
                raced = later
                    .entries
                    .iter()
                    .any(|entry| entry.created > listing.revision && entry.created > first);
                if raced {
                    break;
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(raced, "no write landed during a listing in 50 tries");
        });
    });
}

/// A listing of about 96 MiB of JSON (1200 values of 60 KB, base64 in the answer): a page
/// of 1000 keys is over the 64 MiB body cap, so the listing halves its page and finishes.
#[test]
fn lists_past_the_body_cap() {
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let value = vec![b'x'; 60_000];
        write_keys(&etcd, "big", 1200, &value, 16, 2);
        let store = open(&etcd);
        let before = store.bytes_received();
        let listing = list(&store, "big/");
        assert_eq!(keys(&listing), written_keys("big", 1200));
        assert!(listing.entries.iter().all(|entry| entry.value == value));
        let read = store.bytes_received() - before;
        assert!(read > 96_000_000, "{read} bytes read");
    });
}

/// One million keys list correctly. Slow (minutes): `benches/control.sh` runs it with
/// `cargo test --release --test store_etcd -- --ignored lists_a_million_keys --nocapture`,
/// which prints how long writing and listing took.
#[test]
#[ignore = "a benchmark: writes a million keys"]
fn lists_a_million_keys() {
    const KEYS: usize = 1_000_000;
    let (ns, etcd) = etcd_in_netns();
    ns.run_in(|| {
        let started = Instant::now();
        write_keys(&etcd, "million", KEYS, &[b'v'; 100], 128, 8);
        let written = started.elapsed();
        let store = open(&etcd);
        let started = Instant::now();
        let listing = list(&store, "million/");
        let listed = started.elapsed();
        assert_eq!(listing.entries.len(), KEYS);
        assert!(listing
            .entries
            .iter()
            .zip(written_keys("million", KEYS))
            .all(|(entry, key)| entry.key == key && entry.value == [b'v'; 100]));
        println!(
            "wrote {KEYS} keys in {written:?}; listed them in {listed:?}, {} bytes read",
            store.bytes_received()
        );
    });
}

//! The conformance suite every [`Store`] backend passes: the dir backend in
//! `control/tests/store_dir.rs`, etcd in its own test.
//!
//! [`run_all`] takes a function that opens a new, independent handle on one store, as a second
//! host would open it, and runs every check in turn. The store must be empty when it starts;
//! each check then works under a prefix of its own (`c-put/`, `c-watch/`, ...), so the checks do
//! not see each other's keys. Each check is also a `pub fn`, so a failure names it; a check
//! panics with a message saying what the backend did wrong.
//!
//! What the suite pins down, beyond the trait docs:
//! - keys in listings and watch events are full relative keys (`c-put/a`, not `a`), exactly as
//!   written; values are exact bytes, including empty and non-UTF-8 values;
//! - a watch reports each change once, in order; changes made between a listing and a watch
//!   started from that listing's revision come as `Changed` or `Resync`, never lost;
//! - a write raises the listing revision;
//! - the lock excludes every other holder: other handles, other threads on the same handle;
//! - a commit ([`Store::commit`], checks in [`commit`]) applies whole or not at all, a
//!   create-if-absent has exactly one winner however many handles race for it, and a refused
//!   commit names its key and holder.
//!
//! It never asserts on timings: every wait is bounded and generous (a failure takes
//! [`EVENT_WAIT`]), and a passing run takes a few seconds. It never relies on a backend
//! reporting a write of an unchanged value (dir coalesces those) or on keys that are also
//! prefixes of other keys (`a` and `a/b`, which the dir backend cannot hold at once).
//!
//! This module is test support compiled into the library so integration tests of both
//! backends share it; nothing at run time calls it.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use super::{Entry, Lifetime, Listing, Locked, Store, StoreError, Watch, WatchEvent};

pub mod commit;

/// How long a check waits for an event or a lock it expects before failing.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

/// How long a check waits for a lock it expects to be refused.
const SHORT_LOCK: Duration = Duration::from_millis(100);

/// One check: it opens the handles it needs with the function given.
pub type Check = fn(&dyn Fn() -> Box<dyn Store>);

/// Every check but the commit ones ([`COMMIT_CHECKS`]) with its name, in the order
/// [`run_all`] runs them: the first needs the store empty; the others use prefixes of their
/// own.
pub const CHECKS: &[(&str, Check)] = &[
    ("empty_store_lists_nothing", empty_store_lists_nothing),
    ("put_then_list", put_then_list),
    ("replace_overwrites", replace_overwrites),
    ("delete_reports_existence", delete_reports_existence),
    ("prefixes_are_isolated", prefixes_are_isolated),
    ("invalid_keys_are_refused", invalid_keys_are_refused),
    (
        "writes_are_shared_between_handles",
        writes_are_shared_between_handles,
    ),
    ("revisions_increase", revisions_increase),
    (
        "watch_reports_changes_in_order",
        watch_reports_changes_in_order,
    ),
    (
        "watch_stays_inside_its_prefix",
        watch_stays_inside_its_prefix,
    ),
    ("watch_on_everything", watch_on_everything),
    (
        "watch_reports_changes_between_list_and_watch",
        watch_reports_changes_between_list_and_watch,
    ),
    (
        "watch_converges_after_a_burst",
        watch_converges_after_a_burst,
    ),
    ("quiet_watch_times_out", quiet_watch_times_out),
    ("lock_excludes_other_handles", lock_excludes_other_handles),
    (
        "lock_excludes_threads_sharing_a_handle",
        lock_excludes_threads_sharing_a_handle,
    ),
    (
        "lock_serialises_create_if_absent",
        lock_serialises_create_if_absent,
    ),
    (
        "lock_makes_read_modify_write_safe",
        lock_makes_read_modify_write_safe,
    ),
    ("readers_see_whole_values", readers_see_whole_values),
    ("session_keys_are_visible", session_keys_are_visible),
    (
        "watch_events_carry_the_creation_stamp",
        watch_events_carry_the_creation_stamp,
    ),
];

/// The checks of [`Store::commit`], which [`run_all`] runs after [`CHECKS`].
pub const COMMIT_CHECKS: &[(&str, Check)] = &[
    ("commit_creates_once", commit::commit_creates_once),
    ("commit_is_all_or_nothing", commit::commit_is_all_or_nothing),
    ("commit_conditions", commit::commit_conditions),
    (
        "commit_race_has_one_winner",
        commit::commit_race_has_one_winner,
    ),
    ("commit_refuses_bad_txns", commit::commit_refuses_bad_txns),
    (
        "commit_writes_are_watched",
        commit::commit_writes_are_watched,
    ),
];

/// Runs every check of [`CHECKS`], then of [`COMMIT_CHECKS`], in turn.
///
/// # Panics
///
/// On the first check that fails, with its name and what went wrong.
pub fn run_all(open: &dyn Fn() -> Box<dyn Store>) {
    run(CHECKS, open);
    run(COMMIT_CHECKS, open);
}

/// Runs `checks` in turn (each one's prefix must be empty).
///
/// # Panics
///
/// On the first check that fails, with its name and what went wrong.
pub fn run(checks: &[(&str, Check)], open: &dyn Fn() -> Box<dyn Store>) {
    for (name, check) in checks {
        let started = Instant::now();
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| check(open))) {
            let reason = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("store conformance check {name} failed: {reason}");
        }
        tracing::debug!(check = name, elapsed = ?started.elapsed(), "store conformance check passed");
    }
}

/// A fresh store lists nothing, under `""` or under any prefix.
///
/// # Panics
///
/// If anything is listed; run it first, on an empty store.
pub fn empty_store_lists_nothing(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    assert_entries(&list(&*store, ""), &[], "a fresh store, prefix \"\"");
    assert_entries(
        &list(&*store, "c-none/"),
        &[],
        "a fresh store, prefix c-none/",
    );
    let mut locked = lock(&*store);
    let listing = locked
        .list("")
        .unwrap_or_else(|e| panic!("{}: Locked::list(\"\") failed: {e}", store.url()));
    assert_entries(&listing, &[], "a fresh store, Locked::list(\"\")");
}

/// Puts are listed sorted by key, with exact bytes (binary, empty, large), by the lock's own
/// `list` at once and by the handle's `list` after the lock is dropped.
///
/// # Panics
///
/// If a listing differs from what was written.
pub fn put_then_list(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    let large = pattern(b'L', 64 * 1024);
    // Written out of order: the listing sorts them.
    let writes: [(&str, &[u8]); 6] = [
        ("c-put/z", b"last"),
        ("c-put/binary", &binary),
        ("c-put/empty", b""),
        ("c-put/sub/nested", b"{\"json\":true}\n"),
        ("c-put/a.b_c-d", b"punctuation"),
        ("c-put/large", &large),
    ];
    let expected = sorted(&writes);
    {
        let mut locked = lock(&*store);
        for (key, value) in writes {
            put(&mut *locked, key, value);
        }
        let inside = locked
            .list("c-put/")
            .unwrap_or_else(|e| panic!("Locked::list(c-put/) failed: {e}"));
        assert_entries(&inside, &expected, "Locked::list right after the puts");
    }
    assert_entries(
        &list(&*store, "c-put/"),
        &expected,
        "list after the lock is dropped",
    );
    assert_entries(
        &list(&*store, "c-put/sub/"),
        &[("c-put/sub/nested", b"{\"json\":true}\n")],
        "list of a nested prefix",
    );
}

/// A second put replaces the value, also with a shorter one.
///
/// # Panics
///
/// If the old value, or a mix of both, is listed.
pub fn replace_overwrites(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    let mut locked = lock(&*store);
    put(&mut *locked, "c-replace/k", b"a rather long first value");
    put(&mut *locked, "c-replace/k", b"short");
    drop(locked);
    assert_entries(
        &list(&*store, "c-replace/"),
        &[("c-replace/k", b"short")],
        "after replacing with a shorter value",
    );
}

/// `delete` returns true for an existing key, then false; false for a key never written and
/// for a key that only exists as the parent of other keys, which it leaves alone.
///
/// # Panics
///
/// On a wrong answer or a wrong listing.
pub fn delete_reports_existence(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    let mut locked = lock(&*store);
    put(&mut *locked, "c-delete/k", b"v");
    put(&mut *locked, "c-delete/dir/child", b"c");
    assert!(
        delete(&mut *locked, "c-delete/k"),
        "delete of an existing key returned false"
    );
    assert!(
        !delete(&mut *locked, "c-delete/k"),
        "a second delete of the same key returned true"
    );
    assert!(
        !delete(&mut *locked, "c-delete/never"),
        "delete of a key never written returned true"
    );
    assert!(
        !delete(&mut *locked, "c-delete/dir"),
        "delete of c-delete/dir, which only exists as a parent of c-delete/dir/child, returned true"
    );
    drop(locked);
    assert_entries(
        &list(&*store, "c-delete/"),
        &[("c-delete/dir/child", b"c")],
        "after the deletes",
    );
}

/// A prefix lists only keys below it: `a/` does not list `ab/x` or `a-b`, and lists nested
/// keys (`a/sub/k`).
///
/// # Panics
///
/// If a listing strays outside its prefix or misses a nested key.
pub fn prefixes_are_isolated(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    let writes: [(&str, &[u8]); 5] = [
        ("c-prefix/a/k", b"1"),
        ("c-prefix/a/sub/k", b"2"),
        ("c-prefix/ab/k", b"3"),
        ("c-prefix/a-b", b"4"),
        ("c-prefix-sibling/k", b"5"),
    ];
    let mut locked = lock(&*store);
    for (key, value) in writes {
        put(&mut *locked, key, value);
    }
    drop(locked);
    assert_entries(
        &list(&*store, "c-prefix/a/"),
        &[("c-prefix/a/k", b"1"), ("c-prefix/a/sub/k", b"2")],
        "prefix c-prefix/a/",
    );
    assert_entries(
        &list(&*store, "c-prefix/ab/"),
        &[("c-prefix/ab/k", b"3")],
        "prefix c-prefix/ab/",
    );
    assert_entries(
        &list(&*store, "c-prefix/a/sub/"),
        &[("c-prefix/a/sub/k", b"2")],
        "prefix c-prefix/a/sub/",
    );
    assert_entries(
        &list(&*store, "c-prefix/"),
        &sorted(&writes[..4]),
        "prefix c-prefix/",
    );
    assert_entries(
        &list(&*store, "c-prefix/k/"),
        &[],
        "a prefix with nothing below it",
    );
}

/// Invalid keys and prefixes are refused with `InvalidKey` by every method, and nothing is
/// written. The list includes names a backend might use internally (`~lock`).
///
/// # Panics
///
/// If a bad key is accepted, refused with another error, or changes the store.
pub fn invalid_keys_are_refused(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    let bad_keys = [
        "",
        "/",
        "/c-invalid/a",
        "c-invalid/",
        "c-invalid//a",
        "c-invalid/../x",
        "..",
        ".",
        "c-invalid/./x",
        "c-invalid/a b",
        "c-invalid/é",
        "~lock",
        "c-invalid/~tmp",
        "c-invalid/a\0",
        "c-invalid\\a",
    ];
    let bad_prefixes = [
        "/",
        "c-invalid",
        "c-invalid//",
        "../",
        "c-invalid/../",
        "~/",
        "/c-invalid/",
    ];
    let before = list(&*store, "");
    {
        let mut locked = lock(&*store);
        for key in bad_keys {
            expect_invalid(
                locked.put(key, b"x", Lifetime::Permanent).map(drop),
                "put",
                key,
            );
            expect_invalid(
                locked.put(key, b"x", Lifetime::Session).map(drop),
                "put (session)",
                key,
            );
            expect_invalid(locked.delete(key).map(drop), "delete", key);
        }
        for prefix in bad_prefixes {
            expect_invalid(locked.list(prefix).map(drop), "Locked::list", prefix);
        }
    }
    for prefix in bad_prefixes {
        expect_invalid(store.list(prefix).map(drop), "list", prefix);
        expect_invalid(store.watch(prefix, 0).map(drop), "watch", prefix);
    }
    assert_eq!(
        list(&*store, "").entries,
        before.entries,
        "refused writes changed the store"
    );
}

/// A write through one handle is listed by another, and a delete through the second is seen
/// by the first.
///
/// # Panics
///
/// If a handle does not see the other's writes.
pub fn writes_are_shared_between_handles(open: &dyn Fn() -> Box<dyn Store>) {
    let a = open();
    let b = open();
    put_one(&*a, "c-shared/k", b"from a");
    assert_entries(
        &list(&*b, "c-shared/"),
        &[("c-shared/k", b"from a")],
        "handle b after a's put",
    );
    {
        let mut locked = lock(&*b);
        assert!(
            delete(&mut *locked, "c-shared/k"),
            "b could not delete a's key"
        );
    }
    assert_entries(&list(&*a, "c-shared/"), &[], "handle a after b's delete");
}

/// Every put and delete raises the listing revision, also as seen by another handle.
///
/// # Panics
///
/// If a listing after a write does not have a higher revision than one before it.
pub fn revisions_increase(open: &dyn Fn() -> Box<dyn Store>) {
    let a = open();
    let b = open();
    let r0 = list(&*b, "c-revision/").revision;
    put_one(&*a, "c-revision/k", b"1");
    let r1 = list(&*b, "c-revision/").revision;
    assert!(r1 > r0, "revision went from {r0} to {r1} across a put");
    {
        let mut locked = lock(&*a);
        assert!(
            delete(&mut *locked, "c-revision/k"),
            "delete of c-revision/k returned false"
        );
    }
    let r2 = list(&*b, "c-revision/").revision;
    assert!(r2 > r1, "revision went from {r1} to {r2} across a delete");
    let everything = list(&*b, "").revision;
    assert!(
        everything >= r2,
        "listing \"\" has revision {everything}, before {r2}"
    );
}

/// A watch on handle B reports the puts, replaces and deletes made through handle A, once
/// each, in order, with full keys, exact values and revisions after the listing it started
/// from.
///
/// # Panics
///
/// On a missing, extra, reordered or wrong event.
pub fn watch_reports_changes_in_order(open: &dyn Fn() -> Box<dyn Store>) {
    let a = open();
    let b = open();
    let listing = list(&*b, "c-watch/");
    let mut watch = watch(&*b, "c-watch/", listing.revision);
    let binary: Vec<u8> = (0..=255u8).collect();

    // One change at a time: each is reported before the next is made.
    let steps: [(&str, Option<&[u8]>); 5] = [
        ("c-watch/k", Some(b"v1")),
        ("c-watch/k", Some(b"v2, longer")),
        ("c-watch/k", Some(b"")),
        ("c-watch/k", None),
        ("c-watch/bin", Some(&binary)),
    ];
    for (key, value) in steps {
        {
            let mut locked = lock(&*a);
            match value {
                Some(value) => put(&mut *locked, key, value),
                None => assert!(delete(&mut *locked, key), "delete of {key} returned false"),
            }
        }
        expect_changed(&mut *watch, key, value, listing.revision);
    }

    // Several changes under one lock: reported in the order they were made, once each.
    let burst: [(&str, Option<&[u8]>); 4] = [
        ("c-watch/x1", Some(b"one")),
        ("c-watch/x2", Some(b"two")),
        ("c-watch/bin", None),
        ("c-watch/x3", Some(b"three")),
    ];
    {
        let mut locked = lock(&*a);
        for (key, value) in burst {
            match value {
                Some(value) => put(&mut *locked, key, value),
                None => assert!(delete(&mut *locked, key), "delete of {key} returned false"),
            }
        }
    }
    for (key, value) in burst {
        expect_changed(&mut *watch, key, value, listing.revision);
    }

    // Nothing more: the next event is the marker written now.
    put_one(&*a, "c-watch/marker", b"m");
    expect_changed(&mut *watch, "c-watch/marker", Some(b"m"), listing.revision);
}

/// A watch reports nothing outside its prefix (`a/` does not see `ab/x`, `a-b` or the level
/// above) but does see nested keys (`a/sub/k`); it works on a prefix with nothing below it yet.
///
/// # Panics
///
/// On an event outside the prefix or a missing nested one.
pub fn watch_stays_inside_its_prefix(open: &dyn Fn() -> Box<dyn Store>) {
    let a = open();
    let b = open();
    let listing = list(&*b, "c-scope/a/");
    assert_entries(&listing, &[], "c-scope/a/ before the check");
    let mut watch = watch(&*b, "c-scope/a/", listing.revision);
    {
        let mut locked = lock(&*a);
        put(&mut *locked, "c-scope/ab/x", b"outside");
        put(&mut *locked, "c-scope/a-b", b"outside");
        put(&mut *locked, "c-scope/x", b"outside");
        put(&mut *locked, "c-scope-sibling/a/x", b"outside");
    }
    put_one(&*a, "c-scope/a/sub/deeper/k", b"nested");
    expect_changed(
        &mut *watch,
        "c-scope/a/sub/deeper/k",
        Some(b"nested"),
        listing.revision,
    );
    put_one(&*a, "c-scope/ab/y", b"outside");
    put_one(&*a, "c-scope/a/k", b"direct");
    expect_changed(
        &mut *watch,
        "c-scope/a/k",
        Some(b"direct"),
        listing.revision,
    );
}

/// A watch on `""` sees keys under any prefix.
///
/// # Panics
///
/// If the change is not reported.
pub fn watch_on_everything(open: &dyn Fn() -> Box<dyn Store>) {
    let a = open();
    let b = open();
    let listing = list(&*b, "");
    let mut watch = watch(&*b, "", listing.revision);
    put_one(&*a, "c-everything/deep/k", b"v");
    // Other writers may share the store when a check runs alone: skip their keys.
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        match next_event(&mut *watch, deadline, "c-everything/deep/k") {
            WatchEvent::Changed { key, value, .. } if key == "c-everything/deep/k" => {
                assert_eq!(
                    value.as_deref(),
                    Some(&b"v"[..]),
                    "value of c-everything/deep/k"
                );
                break;
            }
            WatchEvent::Changed { key, .. } if !key.starts_with("c-everything/") => {}
            other => panic!("watch on \"\": expected c-everything/deep/k, got {other:?}"),
        }
    }
}

/// Changes made after a listing but before the watch started from its revision are reported,
/// as `Changed` or as `Resync`; so is a change made once the watch runs.
///
/// # Panics
///
/// If a change is lost.
pub fn watch_reports_changes_between_list_and_watch(open: &dyn Fn() -> Box<dyn Store>) {
    let a = open();
    let b = open();
    let listing = list(&*b, "c-gap/");
    put_one(&*a, "c-gap/early", b"made before the watch");
    let mut watch = watch(&*b, "c-gap/", listing.revision);
    let deadline = Instant::now() + EVENT_WAIT;
    match next_event(&mut *watch, deadline, "c-gap/early") {
        WatchEvent::Resync => {
            let again = list(&*b, "c-gap/");
            assert_entries(
                &again,
                &[("c-gap/early", b"made before the watch")],
                "listing after Resync",
            );
            // The caller would watch from the new listing; so does the rest of the check.
            watch = self::watch(&*b, "c-gap/", again.revision);
        }
        WatchEvent::Changed { key, value, .. } => {
            assert_eq!(key, "c-gap/early", "first event of the watch");
            assert_eq!(
                value.as_deref(),
                Some(&b"made before the watch"[..]),
                "value of c-gap/early"
            );
        }
    }
    put_one(&*a, "c-gap/late", b"made after the watch");
    expect_changed(
        &mut *watch,
        "c-gap/late",
        Some(b"made after the watch"),
        listing.revision,
    );
}

/// After a burst of quick writes to one key (no waiting between them), the watch's last
/// report of that key is the last value written: a backend may skip intermediate values, not
/// the final one, and never reports them out of order.
///
/// # Panics
///
/// If the watch ends on a stale value or goes back to an older one.
pub fn watch_converges_after_a_burst(open: &dyn Fn() -> Box<dyn Store>) {
    const WRITES: usize = 30;
    let a = open();
    let b = open();
    let listing = list(&*b, "c-burst/");
    let mut watch = watch(&*b, "c-burst/", listing.revision);
    for i in 0..WRITES {
        put_one(&*a, "c-burst/k", format!("{i:04}").as_bytes());
    }
    put_one(&*a, "c-burst/marker", b"end");
    let deadline = Instant::now() + EVENT_WAIT;
    let mut last_seen: Option<usize> = None;
    loop {
        match next_event(&mut *watch, deadline, "c-burst/marker") {
            WatchEvent::Changed { key, value, .. } if key == "c-burst/k" => {
                let value = value.unwrap_or_else(|| panic!("c-burst/k reported deleted"));
                let i: usize = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("c-burst/k has a value never written: {value:?}"));
                if let Some(previous) = last_seen {
                    assert!(
                        i > previous,
                        "c-burst/k went from write {previous} back to {i}"
                    );
                }
                last_seen = Some(i);
            }
            WatchEvent::Changed { key, value, .. } if key == "c-burst/marker" => {
                assert_eq!(
                    value.as_deref(),
                    Some(&b"end"[..]),
                    "value of c-burst/marker"
                );
                break;
            }
            other => panic!("burst: unexpected event {other:?}"),
        }
    }
    assert_eq!(
        last_seen,
        Some(WRITES - 1),
        "the watch's last report of c-burst/k is not the last write"
    );
}

/// `next` on a watch of a quiet prefix returns `Ok(None)`, in bounded time.
///
/// # Panics
///
/// On an event, an error, or a wait far beyond the timeout.
pub fn quiet_watch_times_out(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    let listing = list(&*store, "c-quiet/");
    let mut watch = watch(&*store, "c-quiet/", listing.revision);
    for timeout in [Duration::ZERO, Duration::from_millis(50)] {
        let started = Instant::now();
        match watch.next(timeout) {
            Ok(None) => {}
            other => panic!("next({timeout:?}) on a quiet prefix returned {other:?}"),
        }
        let waited = started.elapsed();
        assert!(
            waited < timeout + EVENT_WAIT,
            "next({timeout:?}) returned after {waited:?}"
        );
    }
}

/// While one handle holds the lock, another's `lock` times out with `LockTimeout`; once the
/// first is dropped, the other gets it.
///
/// # Panics
///
/// If the lock is shared, or not handed over.
pub fn lock_excludes_other_handles(open: &dyn Fn() -> Box<dyn Store>) {
    let a = open();
    let b = open();
    let held = lock(&*a);
    expect_lock_timeout(b.lock(SHORT_LOCK).map(drop), "a second handle");
    drop(held);
    let mut locked = lock(&*b);
    put(&mut *locked, "c-lock/holder", b"b");
    drop(locked);
    // And back: a's handle is still usable.
    drop(lock(&*a));
}

/// Two threads sharing one handle exclude each other too: the lock is per call, not per
/// handle.
///
/// # Panics
///
/// If the second thread gets the lock while the first holds it.
pub fn lock_excludes_threads_sharing_a_handle(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    let held = lock(&*store);
    thread::scope(|scope| {
        let outcome = scope.spawn(|| store.lock(SHORT_LOCK).map(drop)).join();
        match outcome {
            Ok(result) => expect_lock_timeout(result, "another thread on the same handle"),
            Err(_) => panic!("the thread taking the lock panicked"),
        }
    });
    drop(held);
    drop(lock(&*store));
}

/// Threads on separate handles each doing lock, list, create-if-absent on one key create it
/// exactly once.
///
/// # Panics
///
/// If the key is created more than once, or not at all.
pub fn lock_serialises_create_if_absent(open: &dyn Fn() -> Box<dyn Store>) {
    const THREADS: usize = 6;
    let handles: Vec<Box<dyn Store>> = (0..THREADS).map(|_| open()).collect();
    let created = AtomicUsize::new(0);
    let start = Barrier::new(THREADS);
    thread::scope(|scope| {
        let mut threads = Vec::new();
        for (i, store) in handles.iter().enumerate() {
            let (created, start) = (&created, &start);
            threads.push(scope.spawn(move || {
                start.wait();
                let mut locked = lock(&**store);
                let listing = locked
                    .list("c-once/")
                    .unwrap_or_else(|e| panic!("thread {i}: Locked::list failed: {e}"));
                if listing.entries.is_empty() {
                    put(&mut *locked, "c-once/key", format!("thread {i}").as_bytes());
                    created.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        join_all(threads);
    });
    assert_eq!(created.load(Ordering::SeqCst), 1, "creations of c-once/key");
    let listing = list(&*handles[0], "c-once/");
    assert_eq!(
        listing.entries.len(),
        1,
        "entries under c-once/: {:?}",
        listing.entries
    );
}

/// Threads on separate handles incrementing a counter key under the lock lose no update.
///
/// # Panics
///
/// If the final count is not the number of increments.
pub fn lock_makes_read_modify_write_safe(open: &dyn Fn() -> Box<dyn Store>) {
    const THREADS: usize = 4;
    const ROUNDS: usize = 5;
    let handles: Vec<Box<dyn Store>> = (0..THREADS).map(|_| open()).collect();
    thread::scope(|scope| {
        let mut threads = Vec::new();
        for store in &handles {
            threads.push(scope.spawn(move || {
                for _ in 0..ROUNDS {
                    let mut locked = lock(&**store);
                    let listing = locked
                        .list("c-counter/")
                        .unwrap_or_else(|e| panic!("Locked::list(c-counter/) failed: {e}"));
                    let n = match listing.entries.as_slice() {
                        [] => 0,
                        [entry] => parse_count(entry),
                        more => panic!("c-counter/ holds {} keys", more.len()),
                    };
                    put(&mut *locked, "c-counter/n", (n + 1).to_string().as_bytes());
                }
            }));
        }
        join_all(threads);
    });
    let listing = list(&*handles[0], "c-counter/");
    let total = match listing.entries.as_slice() {
        [entry] => parse_count(entry),
        other => panic!("c-counter/ holds {other:?}"),
    };
    assert_eq!(
        total,
        THREADS * ROUNDS,
        "increments under the lock were lost"
    );
}

/// Readers listing while a writer replaces a large value (256 KiB of `A`, then of `B`, ...)
/// only ever see one whole value, and never a missing key.
///
/// # Panics
///
/// On a torn, truncated or missing value.
pub fn readers_see_whole_values(open: &dyn Fn() -> Box<dyn Store>) {
    const SIZE: usize = 256 * 1024;
    const WRITES: usize = 16;
    const READERS: usize = 2;
    let writer = open();
    let readers: Vec<Box<dyn Store>> = (0..READERS).map(|_| open()).collect();
    put_one(&*writer, "c-large/v", &pattern(b'A', SIZE));
    let done = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    thread::scope(|scope| {
        let mut threads = Vec::new();
        for reader in &readers {
            let (done, reads) = (&done, &reads);
            threads.push(scope.spawn(move || {
                // At least one read after the writer is done, so every reader reads.
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let listing = list(&**reader, "c-large/");
                    match listing.entries.as_slice() {
                        [entry] if entry.key == "c-large/v" => check_whole(&entry.value, SIZE),
                        other => panic!(
                            "a reader saw {} entries under c-large/ during a replace",
                            other.len()
                        ),
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                    if finished {
                        break;
                    }
                }
            }));
        }
        {
            // Set even if the writer panics, so the readers stop.
            let _done = SetOnDrop(&done);
            for i in 0..WRITES {
                let byte = if i % 2 == 0 { b'B' } else { b'A' };
                put_one(&*writer, "c-large/v", &pattern(byte, SIZE));
            }
        }
        join_all(threads);
    });
    assert!(
        reads.load(Ordering::SeqCst) >= READERS,
        "the readers did not read"
    );
}

/// A key written with `Lifetime::Session` is listed by other handles while its writer lives,
/// and a fresh handle's session epoch is 0.
///
/// # Panics
///
/// If the key is not visible or the epoch is not 0.
pub fn session_keys_are_visible(open: &dyn Fn() -> Box<dyn Store>) {
    let a = open();
    let b = open();
    assert_eq!(a.session_epoch(), 0, "session epoch of a fresh handle");
    {
        let mut locked = lock(&*a);
        locked
            .put("c-session/host", b"alive", Lifetime::Session)
            .unwrap_or_else(|e| panic!("session put of c-session/host failed: {e}"));
    }
    assert_entries(
        &list(&*b, "c-session/"),
        &[("c-session/host", b"alive")],
        "another handle",
    );
    assert_entries(
        &list(&*a, "c-session/"),
        &[("c-session/host", b"alive")],
        "the writer",
    );
    {
        let mut locked = lock(&*a);
        assert!(
            delete(&mut *locked, "c-session/host"),
            "delete of a session key returned false"
        );
    }
    assert_entries(
        &list(&*b, "c-session/"),
        &[],
        "after deleting the session key",
    );
    assert_eq!(a.session_epoch(), 0, "session epoch after normal use");
}

/// A watch event for a write carries the key's creation stamp, the one a listing gives it, and
/// an overwrite keeps it; a delete carries 0. Incremental readers check first claims with it.
///
/// # Panics
///
/// If an event's stamp differs from the listing's.
pub fn watch_events_carry_the_creation_stamp(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    put_one(&*store, "c-created/k", b"1");
    let listing = list(&*store, "c-created/");
    let created = match listing.entries.as_slice() {
        [entry] if entry.key == "c-created/k" => entry.created,
        other => panic!("expected c-created/k alone, listed {other:?}"),
    };
    let mut watch = watch(&*store, "c-created/", listing.revision);
    put_one(&*store, "c-created/k", b"2");
    match next_event(&mut *watch, Instant::now() + EVENT_WAIT, "c-created/k") {
        WatchEvent::Changed {
            key,
            value,
            created: stamp,
            ..
        } => {
            assert_eq!(
                (key.as_str(), value.as_deref()),
                ("c-created/k", Some(&b"2"[..]))
            );
            assert_eq!(
                stamp, created,
                "an overwrite's event has another creation stamp"
            );
        }
        WatchEvent::Resync => panic!("a watch from a fresh listing said Resync"),
    }
    {
        let mut locked = lock(&*store);
        assert!(delete(&mut *locked, "c-created/k"), "delete returned false");
    }
    match next_event(&mut *watch, Instant::now() + EVENT_WAIT, "c-created/k") {
        WatchEvent::Changed {
            value: None,
            created: 0,
            ..
        } => {}
        other => panic!("a delete came as {}", show_event(&other)),
    }
}

/// Joins scoped threads, raising the first one's panic as it was (with its message).
fn join_all<T>(threads: Vec<thread::ScopedJoinHandle<'_, T>>) -> Vec<T> {
    threads
        .into_iter()
        .map(|thread| {
            thread
                .join()
                .unwrap_or_else(|panic| panic::resume_unwind(panic))
        })
        .collect()
}

/// Sets a flag when dropped, also while unwinding.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn list(store: &dyn Store, prefix: &str) -> Listing {
    let listing = store
        .list(prefix)
        .unwrap_or_else(|e| panic!("{}: list({prefix:?}) failed: {e}", store.url()));
    let keys: Vec<&str> = listing.entries.iter().map(|e| e.key.as_str()).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "list({prefix:?}) is not sorted: {keys:?}"
    );
    assert!(
        keys.iter().all(|k| k.starts_with(prefix)),
        "list({prefix:?}) returned keys outside the prefix: {keys:?}"
    );
    listing
}

fn watch(store: &dyn Store, prefix: &str, after: i64) -> Box<dyn Watch> {
    store
        .watch(prefix, after)
        .unwrap_or_else(|e| panic!("{}: watch({prefix:?}, {after}) failed: {e}", store.url()))
}

fn lock(store: &dyn Store) -> Box<dyn Locked + '_> {
    store
        .lock(EVENT_WAIT)
        .unwrap_or_else(|e| panic!("{}: lock failed: {e}", store.url()))
}

fn put(locked: &mut dyn Locked, key: &str, value: &[u8]) {
    locked
        .put(key, value, Lifetime::Permanent)
        .unwrap_or_else(|e| panic!("put of {key} failed: {e}"));
}

fn delete(locked: &mut dyn Locked, key: &str) -> bool {
    locked
        .delete(key)
        .unwrap_or_else(|e| panic!("delete of {key} failed: {e}"))
}

/// Takes the lock, writes one key, drops the lock.
fn put_one(store: &dyn Store, key: &str, value: &[u8]) {
    let mut locked = lock(store);
    put(&mut *locked, key, value);
}

/// The next event before `deadline`, or a panic saying what was awaited.
fn next_event(watch: &mut dyn Watch, deadline: Instant, awaited: &str) -> WatchEvent {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("no watch event within {EVENT_WAIT:?} while waiting for {awaited}");
        }
        match watch.next(left) {
            Ok(Some(event)) => return event,
            Ok(None) => {}
            Err(e) => panic!("watch failed while waiting for {awaited}: {e}"),
        }
    }
}

/// The next event must be exactly this change, with a revision after `after`.
fn expect_changed(watch: &mut dyn Watch, key: &str, value: Option<&[u8]>, after: i64) {
    let event = next_event(watch, Instant::now() + EVENT_WAIT, key);
    match &event {
        WatchEvent::Changed {
            key: got_key,
            value: got_value,
            revision,
            ..
        } if got_key == key && got_value.as_deref() == value => {
            assert!(
                *revision > after,
                "event for {key} has revision {revision}, not after {after}"
            );
        }
        _ => panic!(
            "expected Changed {{ key: {key:?}, value: {:?} }}, got {}",
            value.map(show),
            show_event(&event)
        ),
    }
}

fn expect_invalid(result: Result<(), StoreError>, what: &str, key: &str) {
    match result {
        Err(StoreError::InvalidKey { .. }) => {}
        Err(other) => panic!("{what} of invalid key {key:?}: expected InvalidKey, got {other}"),
        Ok(()) => panic!("{what} of invalid key {key:?} was accepted"),
    }
}

fn expect_lock_timeout(result: Result<(), StoreError>, who: &str) {
    match result {
        Err(StoreError::LockTimeout { .. }) => {}
        Err(other) => panic!("lock by {who} while held: expected LockTimeout, got {other}"),
        Ok(()) => panic!("{who} got the lock while another holder had it"),
    }
}

fn assert_entries(listing: &Listing, expected: &[(&str, &[u8])], context: &str) {
    let got: Vec<(&str, &[u8])> = listing
        .entries
        .iter()
        .map(|Entry { key, value, .. }| (key.as_str(), value.as_slice()))
        .collect();
    if got != expected {
        let show_all = |entries: &[(&str, &[u8])]| -> Vec<String> {
            entries
                .iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect()
        };
        panic!(
            "{context}: listed {:?}, expected {:?}",
            show_all(&got),
            show_all(expected)
        );
    }
}

fn sorted<'a>(writes: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
    let mut entries = writes.to_vec();
    entries.sort_by_key(|(key, _)| *key);
    entries
}

fn pattern(byte: u8, len: usize) -> Vec<u8> {
    vec![byte; len]
}

fn check_whole(value: &[u8], size: usize) {
    let first = value.first().copied();
    let uniform = value.iter().all(|b| Some(*b) == first);
    assert!(
        value.len() == size && uniform && matches!(first, Some(b'A' | b'B')),
        "a reader saw a torn value: {} bytes, starting {}",
        value.len(),
        show(&value[..value.len().min(16)])
    );
}

fn parse_count(entry: &Entry) -> usize {
    std::str::from_utf8(&entry.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{} holds {}, not a count", entry.key, show(&entry.value)))
}

/// A value for a failure message: text if it is short UTF-8, else its length and first bytes.
fn show(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if text.len() <= 64 => format!("{text:?}"),
        _ => format!(
            "<{} bytes: {:02x?}...>",
            value.len(),
            &value[..value.len().min(8)]
        ),
    }
}

fn show_event(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Resync => "Resync".to_owned(),
        WatchEvent::Changed {
            key,
            value,
            revision,
            ..
        } => format!(
            "Changed {{ key: {key:?}, value: {:?}, revision: {revision} }}",
            value.as_deref().map(show)
        ),
    }
}

//! The conformance checks of [`Store::commit`]: create-if-absent, all-or-nothing, every kind
//! of condition, conflicts that name the key and its holder, many threads racing for the same
//! keys, refused txns, session puts, and watches seeing a commit's writes.
//!
//! Each check works under a prefix of its own (`c-txn-...`), like the rest of the suite.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use super::{assert_entries, join_all, list, next_event, show, show_event, watch, EVENT_WAIT};
use crate::store::{
    Committed, Condition, Entry, Lifetime, Revision, Store, StoreError, Txn, WatchEvent,
    MAX_TXN_OPS,
};

/// Commits `txn`, panicking on an error.
fn commit(store: &dyn Store, txn: &Txn, what: &str) -> Committed {
    store
        .commit(txn)
        .unwrap_or_else(|e| panic!("{}: commit of {what} failed: {e}", store.url()))
}

/// Commits `txn`, which must apply; its revision.
fn done(store: &dyn Store, txn: &Txn, what: &str) -> Revision {
    match commit(store, txn, what) {
        Committed::Done { revision } => revision,
        other => panic!("commit of {what}: expected Done, got {other:?}"),
    }
}

/// Commits `txn`, which must be refused on `key`; what `key` held.
fn conflict(store: &dyn Store, txn: &Txn, key: &str, what: &str) -> Option<Entry> {
    match commit(store, txn, what) {
        Committed::Conflict { key: got, found } if got == key => found,
        other => panic!("commit of {what}: expected a conflict on {key}, got {other:?}"),
    }
}

/// The entry of `key` as a listing of its parent gives it.
fn entry(store: &dyn Store, key: &str) -> Option<Entry> {
    let (parent, _) = key.rsplit_once('/').unwrap_or(("", key));
    let prefix = if parent.is_empty() {
        String::new()
    } else {
        format!("{parent}/")
    };
    list(store, &prefix)
        .entries
        .into_iter()
        .find(|e| e.key == key)
}

/// A create-if-absent applies once, at a revision that the next listing reaches; a second
/// one, from another handle, is refused naming the key and what the first wrote.
///
/// # Panics
///
/// If the second create applies, or the conflict does not name the key and its value.
pub fn commit_creates_once(open: &dyn Fn() -> Box<dyn Store>) {
    let (a, b) = (open(), open());
    let before = list(&*a, "c-txn-once/").revision;
    let first = Txn::new().create("c-txn-once/k", b"first", Lifetime::Permanent);
    let revision = done(&*a, &first, "the first create");
    assert!(
        revision > before,
        "the create's revision {revision} is not after the listing's {before}"
    );
    let listing = list(&*b, "c-txn-once/");
    assert_entries(&listing, &[("c-txn-once/k", b"first")], "after the create");
    assert!(
        listing.revision >= revision,
        "a listing after the commit has revision {}, below the commit's {revision}",
        listing.revision
    );
    let second = Txn::new().create("c-txn-once/k", b"second", Lifetime::Permanent);
    let found = conflict(&*b, &second, "c-txn-once/k", "the second create")
        .unwrap_or_else(|| panic!("the conflict on c-txn-once/k found no value"));
    assert_eq!(
        (found.key.as_str(), found.value.as_slice()),
        ("c-txn-once/k", &b"first"[..]),
        "the conflict does not show the holder"
    );
    assert_eq!(
        Some(found.created),
        entry(&*a, "c-txn-once/k").map(|e| e.created),
        "the conflict's creation stamp is not the key's"
    );
    assert_entries(
        &list(&*a, "c-txn-once/"),
        &[("c-txn-once/k", b"first")],
        "after the refused create",
    );
}

/// A txn with one held key writes nothing, whichever condition failed, and reports the
/// first failing condition in the order they were added.
///
/// # Panics
///
/// If a refused txn wrote anything, or the wrong key is reported.
pub fn commit_is_all_or_nothing(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    done(
        &*store,
        &Txn::new().create("c-txn-all/held", b"holder", Lifetime::Permanent),
        "the holder",
    );
    let claim = Txn::new()
        .create("c-txn-all/a", b"mine", Lifetime::Permanent)
        .create("c-txn-all/held", b"mine", Lifetime::Permanent)
        .create("c-txn-all/b", b"mine", Lifetime::Permanent)
        .delete("c-txn-all/other");
    let found = conflict(&*store, &claim, "c-txn-all/held", "a claim of a held key");
    assert_eq!(
        found.map(|e| e.value),
        Some(b"holder".to_vec()),
        "the conflict's holder"
    );
    assert_entries(
        &list(&*store, "c-txn-all/"),
        &[("c-txn-all/held", b"holder")],
        "after a refused three-key claim",
    );
    // The first failing condition is reported, not the first in key order.
    let claim = Txn::new()
        .require("c-txn-all/z", Condition::Present)
        .create("c-txn-all/held", b"mine", Lifetime::Permanent);
    assert_eq!(
        conflict(
            &*store,
            &claim,
            "c-txn-all/z",
            "a claim with two failing conditions"
        ),
        None
    );
    // Without the held key, the same claim applies whole.
    let claim = Txn::new()
        .create("c-txn-all/a", b"mine", Lifetime::Permanent)
        .create("c-txn-all/b", b"mine", Lifetime::Permanent)
        .delete("c-txn-all/held");
    done(&*store, &claim, "a claim of free keys");
    assert_entries(
        &list(&*store, "c-txn-all/"),
        &[("c-txn-all/a", b"mine"), ("c-txn-all/b", b"mine")],
        "after the claim",
    );
}

/// Every kind of condition: a delete conditioned on the value (a release that only the
/// holder can make), a rewrite conditioned on the creation stamp, presence, and an empty
/// prefix; deleting a missing key is not an error.
///
/// # Panics
///
/// If a condition is judged wrongly.
pub fn commit_conditions(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    let k = "c-txn-cond/k";
    done(
        &*store,
        &Txn::new().create(k, b"one", Lifetime::Permanent),
        "the create",
    );
    // A release by someone who does not hold it.
    let release = |value: &[u8]| {
        Txn::new()
            .require(k, Condition::Value(value.to_vec()))
            .delete(k)
    };
    let found = conflict(
        &*store,
        &release(b"two"),
        k,
        "a release with the wrong value",
    );
    assert_eq!(found.map(|e| e.value), Some(b"one".to_vec()));
    done(&*store, &release(b"one"), "a release with the right value");
    assert_entries(&list(&*store, "c-txn-cond/"), &[], "after the release");
    assert_eq!(
        conflict(&*store, &release(b"one"), k, "a release of a deleted key"),
        None,
        "a value condition on a missing key"
    );
    let present =
        Txn::new()
            .require(k, Condition::Present)
            .put("c-txn-cond/x", b"", Lifetime::Permanent);
    assert_eq!(conflict(&*store, &present, k, "a Present on nothing"), None);

    // A rewrite conditioned on the creation stamp keeps the stamp; a stale stamp is refused.
    done(
        &*store,
        &Txn::new().create(k, b"again", Lifetime::Permanent),
        "the second create",
    );
    let created = entry(&*store, k)
        .unwrap_or_else(|| panic!("{k} not listed"))
        .created;
    let rewrite = |stamp: Revision, value: &[u8]| {
        Txn::new()
            .require(k, Condition::Created(stamp))
            .put(k, value, Lifetime::Permanent)
    };
    let found = conflict(
        &*store,
        &rewrite(created + 1, b"stale"),
        k,
        "a rewrite with a wrong creation stamp",
    );
    assert_eq!(found.map(|e| e.created), Some(created));
    done(
        &*store,
        &rewrite(created, b"rewritten"),
        "a rewrite with the right stamp",
    );
    let now = entry(&*store, k).unwrap_or_else(|| panic!("{k} not listed"));
    assert_eq!(
        (now.value.as_slice(), now.created),
        (&b"rewritten"[..], created),
        "the rewrite"
    );
    done(
        &*store,
        &Txn::new().require(k, Condition::Present).delete(k),
        "a delete of a present key",
    );

    // Nothing under a prefix: refused while a key lives there, naming it.
    let empty = Txn::new()
        .require("c-txn-cond/dir", Condition::NothingUnder)
        .put("c-txn-cond/flag", b"empty", Lifetime::Permanent);
    done(&*store, &empty, "a NothingUnder on an empty prefix");
    done(
        &*store,
        &Txn::new().create("c-txn-cond/dir/inside", b"i", Lifetime::Permanent),
        "a key under the prefix",
    );
    let found = conflict(
        &*store,
        &empty,
        "c-txn-cond/dir",
        "a NothingUnder on a used prefix",
    )
    .unwrap_or_else(|| panic!("the NothingUnder conflict found nothing"));
    assert_eq!(found.key, "c-txn-cond/dir/inside");
    // A delete of a missing key applies (and deletes nothing).
    done(
        &*store,
        &Txn::new()
            .delete("c-txn-cond/dir/inside")
            .delete("c-txn-cond/missing"),
        "deletes, one of a missing key",
    );
    assert_entries(
        &list(&*store, "c-txn-cond/"),
        &[("c-txn-cond/flag", b"empty")],
        "at the end",
    );
}

/// What one racing thread did: its number, the keys it won, and the keys it lost with the
/// holder each conflict named.
type Race = (usize, Vec<usize>, Vec<(usize, Vec<u8>)>);

/// Threads on separate handles racing to claim overlapping keys: every key has exactly one
/// winner, the store holds the winner's value, and every loser was told the winner.
///
/// # Panics
///
/// If a key was won twice or never, or a conflict names someone who did not win.
pub fn commit_race_has_one_winner(open: &dyn Fn() -> Box<dyn Store>) {
    const THREADS: usize = 8;
    const CLAIMS: usize = 50;
    const KEYS: usize = 100;
    let handles: Vec<Box<dyn Store>> = (0..THREADS).map(|_| open()).collect();
    let start = Barrier::new(THREADS);
    // Thread t claims keys 12t .. 12t+49 (mod 100): neighbours overlap on 38 keys.
    let results: Vec<Race> = thread::scope(|scope| {
        let threads = handles
            .iter()
            .enumerate()
            .map(|(t, store)| {
                let start = &start;
                scope.spawn(move || {
                    let me = format!("thread {t}").into_bytes();
                    let (mut won, mut lost) = (Vec::new(), Vec::new());
                    start.wait();
                    for i in 0..CLAIMS {
                        let k = (t * 12 + i) % KEYS;
                        let txn =
                            Txn::new().create(format!("c-txn-race/{k}"), &me, Lifetime::Session);
                        match commit(&**store, &txn, "a racing claim") {
                            Committed::Done { .. } => won.push(k),
                            Committed::Conflict { key, found } => {
                                assert_eq!(key, format!("c-txn-race/{k}"), "thread {t}");
                                let holder = found.unwrap_or_else(|| {
                                    panic!("thread {t}: a conflict on {key} with no holder")
                                });
                                lost.push((k, holder.value));
                            }
                        }
                    }
                    (t, won, lost)
                })
            })
            .collect();
        join_all(threads)
    });
    let mut winner: BTreeMap<usize, usize> = BTreeMap::new();
    let mut claimed = BTreeSet::new();
    for (t, won, lost) in &results {
        for k in won {
            claimed.insert(*k);
            if let Some(other) = winner.insert(*k, *t) {
                panic!("c-txn-race/{k} was won by thread {other} and thread {t}");
            }
        }
        claimed.extend(lost.iter().map(|(k, _)| *k));
    }
    assert_eq!(
        winner.len(),
        claimed.len(),
        "winners vs distinct keys claimed"
    );
    for (t, _, lost) in &results {
        for (k, holder) in lost {
            let expected = format!("thread {}", winner[k]).into_bytes();
            assert_eq!(
                holder,
                &expected,
                "thread {t} lost c-txn-race/{k} to {}, but thread {} won it",
                show(holder),
                winner[k]
            );
        }
    }
    let listing = list(&*handles[0], "c-txn-race/");
    assert_eq!(listing.entries.len(), claimed.len(), "keys listed");
    for e in &listing.entries {
        let k: usize = e.key["c-txn-race/".len()..]
            .parse()
            .unwrap_or_else(|_| panic!("stray key {}", e.key));
        assert_eq!(
            e.value,
            format!("thread {}", winner[&k]).into_bytes(),
            "{}",
            e.key
        );
    }
}

/// Bad txns are refused before anything is written: invalid keys and prefixes with
/// `InvalidKey`, a key named twice with `TxnRepeatedKey`, more than [`MAX_TXN_OPS`]
/// conditions or writes with `TxnTooBig`. A txn of exactly the maximum applies, and is
/// refused whole when its last key is held.
///
/// # Panics
///
/// If a bad txn is accepted or changes the store, or the biggest allowed one fails.
pub fn commit_refuses_bad_txns(open: &dyn Fn() -> Box<dyn Store>) {
    let store = open();
    let before = list(&*store, "");
    for key in [
        "",
        "/c-txn-bad/a",
        "c-txn-bad/",
        "c-txn-bad//a",
        "c-txn-bad/../x",
        "~lock",
        "c-txn-bad/a b",
    ] {
        for txn in [
            Txn::new().create(key, b"x", Lifetime::Permanent),
            Txn::new().put(key, b"x", Lifetime::Session),
            Txn::new().delete(key),
            Txn::new().require(key, Condition::Present).put(
                "c-txn-bad/ok",
                b"x",
                Lifetime::Permanent,
            ),
            Txn::new()
                .put("c-txn-bad/ok", b"x", Lifetime::Permanent)
                .require(key, Condition::NothingUnder),
        ] {
            match store.commit(&txn) {
                Err(StoreError::InvalidKey { .. }) => {}
                other => panic!("commit of {txn:?}: expected InvalidKey, got {other:?}"),
            }
        }
    }
    let twice = Txn::new()
        .put("c-txn-bad/a", b"1", Lifetime::Permanent)
        .delete("c-txn-bad/a");
    match store.commit(&twice) {
        Err(StoreError::TxnRepeatedKey { key, .. }) => assert_eq!(key, "c-txn-bad/a"),
        other => panic!("a txn writing one key twice: expected TxnRepeatedKey, got {other:?}"),
    }
    let mut biggest = Txn::new();
    for i in 0..MAX_TXN_OPS {
        biggest = biggest.create(format!("c-txn-big/{i:03}"), b"x", Lifetime::Session);
    }
    for too_big in [
        biggest
            .clone()
            .put("c-txn-bad/extra", b"x", Lifetime::Permanent),
        biggest
            .clone()
            .require("c-txn-bad/extra", Condition::Absent),
    ] {
        match store.commit(&too_big) {
            Err(StoreError::TxnTooBig { max, .. }) => assert_eq!(max, MAX_TXN_OPS),
            other => panic!("a txn over {MAX_TXN_OPS} ops: expected TxnTooBig, got {other:?}"),
        }
    }
    assert_eq!(
        list(&*store, "").entries,
        before.entries,
        "refused txns changed the store"
    );
    let last = format!("c-txn-big/{:03}", MAX_TXN_OPS - 1);
    done(
        &*store,
        &Txn::new().create(last.as_str(), b"held", Lifetime::Permanent),
        "the holder of the last key",
    );
    let found = conflict(
        &*store,
        &biggest,
        &last,
        "the biggest txn, its last key held",
    );
    assert_eq!(found.map(|e| e.value), Some(b"held".to_vec()));
    assert_eq!(
        list(&*store, "c-txn-big/").entries.len(),
        1,
        "a refused big txn wrote"
    );
    done(
        &*store,
        &Txn::new()
            .require(last.as_str(), Condition::Present)
            .delete(last.as_str()),
        "the release of the last key",
    );
    done(&*store, &biggest, "the biggest txn allowed");
    assert_eq!(list(&*store, "c-txn-big/").entries.len(), MAX_TXN_OPS);
}

/// Session puts of a commit are listed by other handles while the writer lives, and a watch
/// from a listing sees every write of a later commit, each at a revision after the listing's.
///
/// # Panics
///
/// If a write is missed or comes with an old revision.
pub fn commit_writes_are_watched(open: &dyn Fn() -> Box<dyn Store>) {
    let (writer, reader) = (open(), open());
    done(
        &*writer,
        &Txn::new().create("c-txn-watch/gone", b"soon", Lifetime::Permanent),
        "the key to delete",
    );
    let listing = list(&*reader, "c-txn-watch/");
    let mut watcher = watch(&*reader, "c-txn-watch/", listing.revision);
    let txn = Txn::new()
        .create("c-txn-watch/a", b"1", Lifetime::Session)
        .create("c-txn-watch/b", b"2", Lifetime::Session)
        .require("c-txn-watch/gone", Condition::Value(b"soon".to_vec()))
        .delete("c-txn-watch/gone");
    done(&*writer, &txn, "a commit of three writes");
    assert_entries(
        &list(&*reader, "c-txn-watch/"),
        &[("c-txn-watch/a", b"1"), ("c-txn-watch/b", b"2")],
        "another handle, after the commit",
    );
    assert_eq!(
        writer.session_epoch(),
        0,
        "session epoch after a session commit"
    );
    let mut expected: BTreeMap<&str, Option<&[u8]>> = [
        ("c-txn-watch/a", Some(&b"1"[..])),
        ("c-txn-watch/b", Some(&b"2"[..])),
        ("c-txn-watch/gone", None),
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + EVENT_WAIT;
    while !expected.is_empty() {
        let event = next_event(&mut *watcher, deadline, "the commit's writes");
        match &event {
            WatchEvent::Changed {
                key,
                value,
                revision,
                ..
            } if expected.get(key.as_str()) == Some(&value.as_deref()) => {
                assert!(
                    *revision > listing.revision,
                    "{} is not after the listing's revision {}",
                    show_event(&event),
                    listing.revision
                );
                expected.remove(key.as_str());
            }
            _ => panic!(
                "while waiting for {:?}: unexpected {}",
                expected.keys().collect::<Vec<_>>(),
                show_event(&event)
            ),
        }
    }
}

/// A commit through the cluster lock ([`Locked::commit`](crate::store::Locked::commit))
/// applies and conflicts as [`Store::commit`] does, its writes are read by the lock's own
/// listing, and the lock is free again once dropped.
///
/// # Panics
///
/// If a commit under the lock fails or is judged wrongly.
pub fn locked_commit_applies_under_the_lock(open: &dyn Fn() -> Box<dyn Store>) {
    let (a, b) = (open(), open());
    {
        let mut locked = super::lock(&*a);
        let claim = Txn::new()
            .require("c-txn-locked/dir", Condition::NothingUnder)
            .create("c-txn-locked/k", b"under lock", Lifetime::Session);
        match locked.commit(&claim) {
            Ok(Committed::Done { .. }) => {}
            other => panic!("a commit under the lock: expected Done, got {other:?}"),
        }
        let listing = locked
            .list("c-txn-locked/")
            .unwrap_or_else(|e| panic!("Locked::list failed: {e}"));
        assert_entries(
            &listing,
            &[("c-txn-locked/k", b"under lock")],
            "the lock's own listing",
        );
        match locked.commit(&claim) {
            Ok(Committed::Conflict { key, found }) => {
                assert_eq!(key, "c-txn-locked/k");
                assert_eq!(found.map(|e| e.value), Some(b"under lock".to_vec()));
            }
            other => panic!("a second claim under the lock: expected a conflict, got {other:?}"),
        }
        let too_big =
            (0..=MAX_TXN_OPS).fold(Txn::new(), |txn, i| txn.delete(format!("c-txn-locked/{i}")));
        assert!(
            matches!(locked.commit(&too_big), Err(StoreError::TxnTooBig { .. })),
            "a too big txn under the lock"
        );
    }
    // The lock was released: a commit without it and another lock both go through.
    done(
        &*b,
        &Txn::new().create("c-txn-locked/after", b"", Lifetime::Permanent),
        "a commit after the lock was dropped",
    );
    drop(super::lock(&*b));
}

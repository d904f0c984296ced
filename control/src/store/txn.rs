//! Transactions without the cluster lock: [`Txn`], what [`Store::commit`](super::Store::commit)
//! runs, and [`Committed`], what it answers.
//!
//! A txn is a list of conditions on keys (a key is absent, present, has a given creation
//! stamp or a given value; nothing lives under a prefix) and a list of writes (puts and
//! deletes). A backend checks every condition and, if all hold, applies every write, as one
//! atomic step: no reader and no other txn sees some writes without the others, and no write
//! lands between the check and the writes. If a condition fails, nothing is written and the
//! answer names the first failing condition (in the order they were added) with what its key
//! held at that moment, so a create-if-absent that loses says who holds the key.
//!
//! This module is pure: it builds and checks txns, and decides whether a condition holds for
//! an entry. The backends do the I/O (`dir` under its flock, `etcd` as one etcd txn).

use super::{check_key, check_prefix, Entry, Lifetime, Revision, StoreError};
use std::collections::HashSet;

/// The most conditions, and the most writes, one txn may hold: one below etcd's default
/// `--max-txn-ops` (128), which bounds the compares and each branch of an etcd txn
/// separately; the one left is for the lock's compare of
/// [`Locked::commit`](super::Locked::commit). A bigger txn is refused with
/// [`StoreError::TxnTooBig`] before anything is sent, on every backend, so code tested on
/// `dir` does not fail on etcd.
pub const MAX_TXN_OPS: usize = 127;

/// What a key (or a prefix) must be for a txn to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist: create-if-absent.
    Absent,
    /// The key exists, whatever it holds.
    Present,
    /// The key exists and was created at this [`Entry::created`] (as a listing gave it): it
    /// was not deleted and created again since.
    Created(Revision),
    /// The key exists and holds exactly these bytes.
    Value(Vec<u8>),
    /// No key lives under the key taken as a prefix (`K/...`); `K` itself is not looked at.
    NothingUnder,
}

impl Condition {
    /// Whether the condition holds when its key holds `found` (`None`: no such key). For
    /// [`NothingUnder`](Condition::NothingUnder), `found` is any one entry under the prefix.
    pub fn holds(&self, found: Option<&Entry>) -> bool {
        match (self, found) {
            (Condition::Absent | Condition::NothingUnder, found) => found.is_none(),
            (Condition::Present, found) => found.is_some(),
            (Condition::Created(created), Some(entry)) => entry.created == *created,
            (Condition::Value(value), Some(entry)) => entry.value == *value,
            (Condition::Created(_) | Condition::Value(_), None) => false,
        }
    }
}

/// One write of a txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Creates or replaces `key`.
    Put {
        /// The relative key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// How long it lives.
        lifetime: Lifetime,
    },
    /// Deletes `key` (nothing happens if it does not exist).
    Delete {
        /// The relative key.
        key: String,
    },
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }
}

/// Conditions and writes applied together or not at all (see the module docs). Built with
/// the chaining methods:
///
/// ```
/// use vxtap::store::{Condition, Lifetime, Txn};
/// let txn = Txn::new()
///     .create("claims/vni/42", b"networks/abc", Lifetime::Permanent)
///     .require("networks/abc", Condition::Absent)
///     .put("networks/abc", b"{}", Lifetime::Permanent);
/// assert_eq!(txn.conditions().len(), 2);
/// assert_eq!(txn.writes().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    conditions: Vec<(String, Condition)>,
    writes: Vec<Write>,
}

impl Txn {
    /// An empty txn (committing it changes nothing).
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a condition on `key` (for [`Condition::NothingUnder`], on everything under
    /// `key/`).
    #[must_use]
    pub fn require(mut self, key: impl Into<String>, condition: Condition) -> Txn {
        self.conditions.push((key.into(), condition));
        self
    }

    /// Puts `key` if it does not exist yet: [`Condition::Absent`] and a put.
    #[must_use]
    pub fn create(self, key: impl Into<String>, value: &[u8], lifetime: Lifetime) -> Txn {
        let key = key.into();
        self.require(key.clone(), Condition::Absent)
            .put(key, value, lifetime)
    }

    /// Puts `key` (creating or replacing it).
    #[must_use]
    pub fn put(mut self, key: impl Into<String>, value: &[u8], lifetime: Lifetime) -> Txn {
        self.writes.push(Write::Put {
            key: key.into(),
            value: value.to_vec(),
            lifetime,
        });
        self
    }

    /// Deletes `key`.
    #[must_use]
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.writes.push(Write::Delete { key: key.into() });
        self
    }

    /// The conditions, in the order they were added (the order they are reported in).
    pub fn conditions(&self) -> &[(String, Condition)] {
        &self.conditions
    }

    /// The writes, in the order they were added.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// Whether it has neither conditions nor writes.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.writes.is_empty()
    }

    /// Checks the txn before a backend runs it (for the store at `url`): every key follows
    /// the key rules, no key has two conditions or two writes, and neither list is longer
    /// than [`MAX_TXN_OPS`].
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `TxnRepeatedKey` or `TxnTooBig`.
    pub fn check(&self, url: &str) -> Result<(), StoreError> {
        if self.conditions.len() > MAX_TXN_OPS || self.writes.len() > MAX_TXN_OPS {
            return Err(StoreError::TxnTooBig {
                url: url.to_owned(),
                conditions: self.conditions.len(),
                writes: self.writes.len(),
                max: MAX_TXN_OPS,
            });
        }
        let mut seen = HashSet::new();
        for (key, condition) in &self.conditions {
            match condition {
                Condition::NothingUnder => check_prefix(&format!("{key}/"))?,
                _ => check_key(key)?,
            }
            // A prefix condition and a key condition on one name are different things.
            let nothing_under = matches!(condition, Condition::NothingUnder);
            if !seen.insert((key.as_str(), nothing_under)) {
                return Err(repeated(url, key));
            }
        }
        let mut written = HashSet::new();
        for write in &self.writes {
            check_key(write.key())?;
            // etcd refuses a txn that writes one key twice ("duplicate key given in txn").
            if !written.insert(write.key()) {
                return Err(repeated(url, write.key()));
            }
        }
        Ok(())
    }

    /// The first condition that fails, given what `found` says each key holds (for a prefix
    /// condition, `found` gives any one entry under it), with what was found; `None` if all
    /// hold.
    pub fn first_failure(
        &self,
        mut found: impl FnMut(usize, &str, &Condition) -> Option<Entry>,
    ) -> Option<(&str, Option<Entry>)> {
        self.conditions
            .iter()
            .enumerate()
            .find_map(|(i, (key, condition))| {
                let entry = found(i, key, condition);
                (!condition.holds(entry.as_ref())).then_some((key.as_str(), entry))
            })
    }
}

fn repeated(url: &str, key: &str) -> StoreError {
    StoreError::TxnRepeatedKey {
        url: url.to_owned(),
        key: key.to_owned(),
    }
}

/// What a committed txn did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Every condition held and every write was applied, at `revision` (etcd: the txn's
    /// revision, which is also the `created` of every key it created; dir: the mutation
    /// counter after it, or the current counter for a txn without writes).
    Done {
        /// The store revision the txn was applied at.
        revision: Revision,
    },
    /// The condition on `key` failed (the first failing one, in the order added); nothing
    /// was written.
    Conflict {
        /// The condition's key (for [`Condition::NothingUnder`], the prefix without its
        /// trailing `/`).
        key: String,
        /// What `key` held when the condition was checked: `None` if it did not exist. For
        /// a prefix condition, one entry found under it.
        found: Option<Entry>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &[u8], created: Revision) -> Entry {
        Entry {
            key: "k".to_owned(),
            value: value.to_vec(),
            created,
        }
    }

    #[test]
    fn conditions_hold_as_documented() {
        let e = entry(b"v", 7);
        let cases: [(Condition, bool, bool); 6] = [
            // (condition, holds on a missing key, holds on `e`)
            (Condition::Absent, true, false),
            (Condition::Present, false, true),
            (Condition::Created(7), false, true),
            (Condition::Created(8), false, false),
            (Condition::Value(b"v".to_vec()), false, true),
            (Condition::Value(b"w".to_vec()), false, false),
        ];
        for (condition, on_missing, on_entry) in cases {
            assert_eq!(
                condition.holds(None),
                on_missing,
                "{condition:?} on nothing"
            );
            assert_eq!(
                condition.holds(Some(&e)),
                on_entry,
                "{condition:?} on {e:?}"
            );
        }
        assert!(Condition::NothingUnder.holds(None));
        assert!(!Condition::NothingUnder.holds(Some(&e)));
    }

    #[test]
    fn checks_keys_repeats_and_size() {
        let url = "dir:/x";
        Txn::new().check(url).unwrap();
        Txn::new()
            .create("a/b", b"", Lifetime::Session)
            .require("a", Condition::NothingUnder)
            .delete("c")
            .check(url)
            .unwrap();
        for bad in [
            Txn::new().require("a//b", Condition::Absent),
            Txn::new().put("/a", b"", Lifetime::Permanent),
            Txn::new().delete(""),
            Txn::new().require("a/", Condition::NothingUnder),
        ] {
            assert!(
                matches!(bad.check(url), Err(StoreError::InvalidKey { .. })),
                "{bad:?}"
            );
        }
        let twice = Txn::new().put("a", b"1", Lifetime::Permanent).delete("a");
        match twice.check(url) {
            Err(StoreError::TxnRepeatedKey { key, .. }) => assert_eq!(key, "a"),
            other => panic!("{other:?}"),
        }
        let twice = Txn::new()
            .require("a", Condition::Present)
            .require("a", Condition::Value(vec![]));
        assert!(matches!(
            twice.check(url),
            Err(StoreError::TxnRepeatedKey { .. })
        ));
        let mut big = Txn::new();
        for i in 0..MAX_TXN_OPS {
            big = big.create(format!("k/{i}"), b"", Lifetime::Permanent);
        }
        big.check(url).unwrap();
        let big = big.delete("one-more");
        match big.check(url) {
            Err(StoreError::TxnTooBig {
                conditions,
                writes,
                max,
                ..
            }) => assert_eq!(
                (conditions, writes, max),
                (MAX_TXN_OPS, MAX_TXN_OPS + 1, MAX_TXN_OPS)
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_failing_condition_is_reported() {
        let txn = Txn::new()
            .require("a", Condition::Absent)
            .require("b", Condition::Absent)
            .require("c", Condition::Present);
        let held = |_: usize, key: &str, _: &Condition| (key != "a").then(|| entry(b"x", 1));
        let (key, found) = txn.first_failure(held).unwrap();
        assert_eq!(key, "b");
        assert_eq!(found.unwrap().value, b"x");
        assert_eq!(
            txn.first_failure(|_, key, _| (key == "c").then(|| entry(b"", 1))),
            None
        );
    }
}

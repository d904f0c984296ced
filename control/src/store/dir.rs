//! The directory backend (`--store dir:PATH`): the cluster store as files in one directory,
//! shared by the daemons of one machine.
//!
//! Key `a/b/c` is the file `PATH/a/b/c`. Its value is replaced atomically: written to a
//! temporary file in the same directory, synced, renamed over the key, and the directory
//! synced, so a reader sees the old value or the new one. Names the backend uses for itself
//! start with `~`, which no key segment can hold: `~lock`, `~rev`, `~txn`, and the temporary
//! files.
//! Listing skips every name that is not a valid key segment, and anything that is not a
//! regular file or a directory.
//!
//! Mutations hold `flock(LOCK_EX)` on `PATH/~lock`, one open file description per
//! [`Store::lock`] call, so handles and threads of one process exclude each other as well as
//! other processes; the kernel releases it when its holder dies.
//!
//! Revisions come from the counter `PATH/~rev`, which every mutation raises twice under the
//! lock, like a sequence lock: to an odd value before it touches a key, to the next even value
//! after. A listing is taken between two reads of an even, unchanged counter, so it is one
//! consistent snapshot with that revision. A watch arms inotify first, then reads the
//! counter: a change it could have missed (renamed before a directory was watched) raised the
//! counter before the rename, so the counter is past the listing's revision and the watch
//! reports [`WatchEvent::Resync`] first.
//!
//! A [`Store::commit`] takes the same flock, checks its conditions against the files, and
//! then applies its writes as one mutation. Each write is its own rename, so to stay atomic
//! across a crash the writes are first saved, synced, as the journal `PATH/~txn` (renamed
//! into place, so it is whole or absent), then applied, then the journal is removed. Readers
//! never see part of a commit (the counter is odd while it is applied, so listings retry).
//! A crash mid-commit leaves some writes applied, the counter odd and the journal in place;
//! the next holder of the flock (a lock or a commit, from any process) applies the journal
//! again before anything else, which completes the commit: puts and deletes are idempotent,
//! and nothing else wrote in between. A crash before the journal was renamed leaves nothing
//! applied. A commit that fails with an I/O error while applying (a full disk) leaves its
//! journal too: the next holder completes it, so its outcome is unknown to its caller, as
//! the trait says.
//!
//! Limits, all documented at the trait or below: no sessions (`Lifetime::Session` keys are
//! permanent, the session epoch is always 0); a key cannot also be the parent of other keys
//! (`a` and `a/b`), since one name cannot be a file and a directory; a watch reports the state
//! of a key when it reads the event, so it may skip intermediate values of a key written
//! several times quickly and reports a write that leaves the value unchanged at most once.
//! This module never interprets values and never removes directories.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::fs::{Access, FlockOperation};
use rustix::io::{retry_on_intr, Errno};

use super::{
    check_key, check_prefix, Committed, Condition, Entry, Lifetime, Listing, Locked, Revision,
    Store, StoreError, Txn, Watch, WatchEvent, Write,
};

/// The lock file, flocked by every mutation.
const LOCK_FILE: &str = "~lock";
/// The revision counter, replaced by rename.
const REVISION_FILE: &str = "~rev";
/// Where the next revision is written before it is renamed over [`REVISION_FILE`].
const REVISION_TEMP: &str = "~rev.tmp";
/// The journal of the commit under way (see the module docs).
const JOURNAL_FILE: &str = "~txn";
/// Where the journal is written before it is renamed over [`JOURNAL_FILE`].
const JOURNAL_TEMP: &str = "~txn.tmp";
/// How long a commit waits for the flock.
const COMMIT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Where a value is written before it is renamed over its key, in the key's directory. One
/// name is enough: only the lock holder writes, and a file left by a crash is overwritten.
const VALUE_TEMP: &str = "~tmp";

/// The store directory and the directories below it: the owner's alone (root's, for a
/// daemon), since anyone who can write a record can steer traffic.
const DIR_MODE: u32 = 0o700;
/// Every file of the store.
const FILE_MODE: u32 = 0o600;

/// How often an unlocked listing retries when a mutation ran while it read.
const LIST_ATTEMPTS: u32 = 20;
/// The longest pause between two attempts to take the lock or to list.
const MAX_PAUSE: Duration = Duration::from_millis(10);

/// What a watch asks inotify for, on every directory it watches.
const WATCH_MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::ONLYDIR);

/// A store in a directory of this machine.
#[derive(Debug)]
pub struct DirStore {
    /// The directory, absolute and resolved at open.
    root: PathBuf,
    /// `dir:` and the path as given.
    url: String,
}

impl DirStore {
    /// Opens the store in `path`, creating the directory (and its parents) if missing.
    ///
    /// # Errors
    ///
    /// `Io` if `path` exists but is not a directory, or cannot be created, resolved or
    /// written to.
    pub fn open(path: &Path) -> Result<DirStore, StoreError> {
        let url = format!("dir:{}", path.display());
        let fail = |action, source| io_error(&url, action, path, source);
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                let source =
                    io::Error::new(ErrorKind::NotADirectory, "it exists and is not a directory");
                return Err(fail("opening the store directory", source));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(path)
                    .map_err(|e| fail("creating the store directory", e))?;
            }
            Err(e) => return Err(fail("opening the store directory", e)),
        }
        let root = fs::canonicalize(path).map_err(|e| fail("resolving the store directory", e))?;
        rustix::fs::access(&root, Access::WRITE_OK | Access::EXEC_OK)
            .map_err(|e| fail("checking write access to the store directory", e.into()))?;
        restrict(&root).map_err(|e| fail("restricting the store directory to its owner", e))?;
        let store = DirStore { root, url };
        // Created once here, never removed: a lock file that is replaced splits the lock.
        store.open_lock_file()?;
        Ok(store)
    }

    fn fail(&self, action: &'static str, path: &Path, source: io::Error) -> StoreError {
        io_error(&self.url, action, path, source)
    }

    fn open_lock_file(&self) -> Result<File, StoreError> {
        let path = self.root.join(LOCK_FILE);
        match File::open(&path) {
            Ok(file) => Ok(file),
            // Read-only when it exists, so closing it makes no IN_CLOSE_WRITE for watchers.
            Err(e) if e.kind() == ErrorKind::NotFound => OpenOptions::new()
                .append(true)
                .create(true)
                .mode(FILE_MODE)
                .open(&path)
                .map_err(|e| self.fail("creating the lock file", &path, e)),
            Err(e) => Err(self.fail("opening the lock file", &path, e)),
        }
    }

    /// The revision counter: 0 before the first mutation, odd while one is under way.
    fn read_revision(&self) -> Result<Revision, StoreError> {
        let path = self.root.join(REVISION_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(self.fail("reading the revision counter", &path, e)),
        };
        match text.trim().parse::<Revision>() {
            Ok(revision) if revision >= 0 => Ok(revision),
            _ => {
                let source = io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{text:?} is not a revision"),
                );
                Err(self.fail("reading the revision counter", &path, source))
            }
        }
    }

    /// Replaces the counter atomically (readers do not lock). Only the lock holder calls it.
    fn write_revision(&self, revision: Revision) -> Result<(), StoreError> {
        let temp = self.root.join(REVISION_TEMP);
        // Synced so that a crash cannot leave an empty counter; the rename is not, because a
        // counter that goes back in a crash matters to nobody: every watcher died with it.
        write_synced(&temp, revision.to_string().as_bytes(), None)
            .map_err(|e| self.fail("writing the revision counter", &temp, e))?;
        let path = self.root.join(REVISION_FILE);
        fs::rename(&temp, &path).map_err(|e| self.fail("replacing the revision counter", &path, e))
    }

    /// Every key under `prefix` (already checked), sorted.
    fn walk(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        let dir = self.root.join(prefix.trim_end_matches('/'));
        self.walk_dir(&dir, prefix, &mut entries)?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    fn walk_dir(
        &self,
        dir: &Path,
        key_prefix: &str,
        out: &mut Vec<Entry>,
    ) -> Result<(), StoreError> {
        let children = match fs::read_dir(dir) {
            Ok(children) => children,
            // No key was ever written below it, or it is a key itself.
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(self.fail("listing", dir, e)),
        };
        for child in children {
            let child = child.map_err(|e| self.fail("listing", dir, e))?;
            let name = child.file_name();
            let Some(name) = name.to_str().filter(|name| is_segment(name)) else {
                continue;
            };
            let path = child.path();
            let file_type = match child.file_type() {
                Ok(file_type) => file_type,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(self.fail("listing", &path, e)),
            };
            let key = format!("{key_prefix}{name}");
            if file_type.is_dir() {
                self.walk_dir(&path, &format!("{key}/"), out)?;
            } else if file_type.is_file() {
                match read_entry(&path) {
                    Ok((value, created)) => out.push(Entry {
                        key,
                        value,
                        created,
                    }),
                    // Deleted since readdir: the counter tells the caller to list again.
                    Err(e) if is_missing(&e) => {}
                    Err(e) => return Err(self.fail("reading", &path, e)),
                }
            }
        }
        Ok(())
    }

    /// Creates the directories `key` needs, syncing the parent of each one created.
    fn make_parents(&self, key: &str) -> Result<(), StoreError> {
        let mut dir = self.root.clone();
        let Some((parents, _)) = key.rsplit_once('/') else {
            return Ok(());
        };
        for segment in parents.split('/') {
            let parent = dir.clone();
            dir.push(segment);
            match fs::DirBuilder::new().mode(DIR_MODE).create(&dir) {
                Ok(()) => sync_dir(&parent).map_err(|e| self.fail("syncing", &parent, e))?,
                Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let source = io::Error::new(
                        ErrorKind::NotADirectory,
                        format!(
                            "key {key:?} needs it to be a directory, but it is a key: the dir \
                             backend cannot hold a key and keys below it"
                        ),
                    );
                    return Err(self.fail("creating the directory", &dir, source));
                }
                Err(e) => return Err(self.fail("creating the directory", &dir, e)),
            }
        }
        Ok(())
    }

    /// Writes `value` to a temporary file beside `key` and renames it over the key.
    fn replace(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let path = self.root.join(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let temp = dir.join(VALUE_TEMP);
        // An overwrite keeps the key's creation stamp (its first write's mtime).
        let created = match fs::symlink_metadata(&path) {
            Ok(meta) => Some(
                meta.modified()
                    .map_err(|e| self.fail("reading", &path, e))?,
            ),
            Err(e) if is_missing(&e) => None,
            Err(e) => return Err(self.fail("reading", &path, e)),
        };
        write_synced(&temp, value, created).map_err(|e| self.fail("writing", &temp, e))?;
        if let Err(e) = fs::rename(&temp, &path) {
            // The rename's error is the one to report; a temporary file left behind is
            // ignored by readers and overwritten by the next write.
            let _ = fs::remove_file(&temp);
            let e = if e.kind() == ErrorKind::IsADirectory
                || e.kind() == ErrorKind::DirectoryNotEmpty
            {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{e}: keys below {key:?} exist, and the dir backend cannot hold a key \
                         and keys below it"
                    ),
                )
            } else {
                e
            };
            return Err(self.fail("replacing", &path, e));
        }
        sync_dir(&dir).map_err(|e| self.fail("syncing", &dir, e))
    }

    /// Deletes `key` if it is a file; `Ok(false)` if there is none.
    fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.root.join(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => return Ok(false),
            Err(e) => return Err(self.fail("deleting", &path, e)),
        }
        let dir = path.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(|e| self.fail("syncing", dir, e))?;
        Ok(true)
    }

    /// Whether `key` is a file now (only directories and missing names are not).
    fn holds(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.root.join(key);
        match fs::symlink_metadata(&path) {
            Ok(meta) => Ok(!meta.is_dir()),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(self.fail("reading", &path, e)),
        }
    }
}

impl Store for DirStore {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        check_prefix(prefix)?;
        let mut pause = Duration::from_millis(1);
        let mut attempt = 1;
        loop {
            let before = self.read_revision()?;
            let entries = self.walk(prefix)?;
            let after = self.read_revision()?;
            if before == after && before % 2 == 0 {
                return Ok(Listing {
                    entries,
                    revision: before,
                });
            }
            if attempt == LIST_ATTEMPTS {
                // Writers kept coming (or a holder died mid-mutation, leaving the counter odd
                // until the next lock). The entries may mix two states, but every mutation
                // that started after `before` was read has a revision above the one returned,
                // so a watch from it still reports all of them.
                tracing::debug!(store = %self.url, "listing while the store kept changing");
                return Ok(Listing {
                    entries,
                    revision: before - before % 2,
                });
            }
            attempt += 1;
            thread::sleep(pause);
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>, StoreError> {
        check_prefix(prefix)?;
        Ok(Box::new(DirWatch::start(self, prefix, after)?))
    }

    fn lock(&self, timeout: Duration) -> Result<Box<dyn Locked + '_>, StoreError> {
        Ok(Box::new(self.acquire(timeout)?))
    }

    fn commit(&self, txn: &Txn) -> Result<Committed, StoreError> {
        txn.check(&self.url)?;
        let mut locked = self.acquire(COMMIT_LOCK_TIMEOUT)?;
        self.commit_locked(&mut locked, txn)
    }

    fn session_epoch(&self) -> u64 {
        0
    }
}

impl DirStore {
    /// Runs `txn` (checked) under the flock `locked` holds (see the module docs).
    fn commit_locked(
        &self,
        locked: &mut DirLocked<'_>,
        txn: &Txn,
    ) -> Result<Committed, StoreError> {
        let mut error = None;
        let failure = txn.first_failure(|_, key, condition| {
            let found = match condition {
                Condition::NothingUnder => {
                    self.walk(&format!("{key}/")).map(|e| e.into_iter().next())
                }
                _ => self.entry(key),
            };
            found.unwrap_or_else(|e| {
                error.get_or_insert(e);
                None
            })
        });
        if let Some(e) = error {
            return Err(e);
        }
        if let Some((key, found)) = failure {
            return Ok(Committed::Conflict {
                key: key.to_owned(),
                found,
            });
        }
        if txn.writes().is_empty() {
            return Ok(Committed::Done {
                revision: locked.revision,
            });
        }
        self.check_writable(txn.writes())?;
        let journal = Journal::of(txn.writes());
        self.write_journal(&journal)?;
        locked.mutate(|store| store.apply(&journal))?;
        self.remove_journal();
        Ok(Committed::Done {
            revision: locked.revision,
        })
    }

    /// Takes the flock, waiting at most `timeout`; closes a mutation a dead holder left open
    /// and completes its journal (see the module docs).
    fn acquire(&self, timeout: Duration) -> Result<DirLocked<'_>, StoreError> {
        let file = self.open_lock_file()?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match retry_on_intr(|| {
                rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive)
            }) {
                Ok(()) => break,
                Err(Errno::WOULDBLOCK) => {}
                Err(e) => {
                    let path = self.root.join(LOCK_FILE);
                    return Err(self.fail("locking", &path, e.into()));
                }
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(StoreError::LockTimeout {
                    url: self.url.clone(),
                    waited,
                });
            }
            thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(MAX_PAUSE);
        }
        let mut revision = self.read_revision()?;
        if revision % 2 == 1 {
            // The last holder died mid-mutation: close its revision so listings settle.
            revision += 1;
            self.write_revision(revision)?;
        }
        let mut locked = DirLocked {
            store: self,
            _lock: file,
            revision,
        };
        if let Some(journal) = self.read_journal()? {
            tracing::warn!(store = %self.url, writes = journal.writes.len(),
                "completing a commit that a crash or an I/O error interrupted");
            locked.mutate(|store| store.apply(&journal))?;
            self.remove_journal();
        }
        Ok(locked)
    }

    /// `key`'s entry now; `None` if it does not exist (or is a directory).
    fn entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let path = self.root.join(key);
        match read_entry(&path) {
            Ok((value, created)) => Ok(Some(Entry {
                key: key.to_owned(),
                value,
                created,
            })),
            Err(e) if is_missing(&e) || e.kind() == ErrorKind::IsADirectory => Ok(None),
            Err(e) => Err(self.fail("reading", &path, e)),
        }
    }

    /// Refuses, before anything is written, puts that [`Self::replace`] would fail on for
    /// their shape: a key that is a directory, a key below a key, in the store or in `writes`.
    fn check_writable(&self, writes: &[Write]) -> Result<(), StoreError> {
        let puts: Vec<&str> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Put { key, .. } => Some(key.as_str()),
                Write::Delete { .. } => None,
            })
            .collect();
        for key in &puts {
            let nested = |message: String| {
                let source = io::Error::new(ErrorKind::NotADirectory, message);
                Err(self.fail("checking the txn's keys", &self.root.join(key), source))
            };
            if let Some(below) = puts
                .iter()
                .find(|other| other.starts_with(&format!("{key}/")))
            {
                return nested(format!(
                    "the txn puts {key:?} and {below:?}: the dir backend cannot hold a key \
                     and keys below it"
                ));
            }
            let mut prefix = String::new();
            for segment in key.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(segment);
                let last = prefix.len() == key.len();
                match fs::symlink_metadata(self.root.join(&prefix)) {
                    Ok(meta) if last && meta.is_dir() => {
                        return nested(format!(
                            "keys below {key:?} exist: the dir backend cannot hold a key and \
                             keys below it"
                        ))
                    }
                    Ok(meta) if !last && !meta.is_dir() => {
                        return nested(format!(
                            "{prefix:?} is a key: the dir backend cannot hold a key and keys \
                             below it"
                        ))
                    }
                    Ok(_) => {}
                    Err(e) if is_missing(&e) => break,
                    Err(e) => return Err(self.fail("reading", &self.root.join(&prefix), e)),
                }
            }
        }
        Ok(())
    }

    /// Applies the journal's writes (idempotent: applying it twice leaves what once does).
    fn apply(&self, journal: &Journal) -> Result<(), StoreError> {
        for write in &journal.writes {
            match &write.value {
                Some(value) => {
                    self.make_parents(&write.key)?;
                    self.replace(&write.key, value)?;
                }
                // A directory is not a key: deleting it deletes nothing, as `Locked::delete`.
                None if self.holds(&write.key)? => {
                    self.remove(&write.key)?;
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Saves `journal`, synced, renamed into place, and the rename synced.
    fn write_journal(&self, journal: &Journal) -> Result<(), StoreError> {
        let temp = self.root.join(JOURNAL_TEMP);
        let bytes = serde_json::to_vec(journal)
            .map_err(|e| self.fail("encoding the txn journal", &temp, io::Error::other(e)))?;
        write_synced(&temp, &bytes, None).map_err(|e| self.fail("writing", &temp, e))?;
        let path = self.root.join(JOURNAL_FILE);
        fs::rename(&temp, &path).map_err(|e| self.fail("replacing", &path, e))?;
        sync_dir(&self.root).map_err(|e| self.fail("syncing", &self.root, e))
    }

    /// The journal a commit left, if any. One that does not decode (someone wrote it by
    /// hand: ours are renamed into place whole) is an error naming it, not ignored: writes
    /// it holds may be half applied.
    fn read_journal(&self) -> Result<Option<Journal>, StoreError> {
        let path = self.root.join(JOURNAL_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.fail("reading", &path, e)),
        };
        let garbled = |reason: String| {
            let source = io::Error::new(
                ErrorKind::InvalidData,
                format!("{reason}: check the keys it names, then remove it"),
            );
            self.fail("reading the txn journal", &path, source)
        };
        let journal: Journal =
            serde_json::from_slice(&bytes).map_err(|e| garbled(e.to_string()))?;
        for write in &journal.writes {
            check_key(&write.key).map_err(|e| garbled(e.to_string()))?;
        }
        Ok(Some(journal))
    }

    /// Removes the journal of a commit that was applied. A journal left behind does no
    /// harm: the next holder applies it again, and nothing changed in between.
    fn remove_journal(&self) {
        let path = self.root.join(JOURNAL_FILE);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "removing the txn journal; the next lock applies it again");
        }
    }
}

/// The writes of a commit, saved before they are applied (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Journal {
    writes: Vec<JournalWrite>,
}

/// One write: a put of `value`, or a delete when it is `None`. Lifetimes do not matter here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct JournalWrite {
    key: String,
    value: Option<Vec<u8>>,
}

impl Journal {
    fn of(writes: &[Write]) -> Journal {
        Journal {
            writes: writes
                .iter()
                .map(|write| match write {
                    Write::Put { key, value, .. } => JournalWrite {
                        key: key.clone(),
                        value: Some(value.clone()),
                    },
                    Write::Delete { key } => JournalWrite {
                        key: key.clone(),
                        value: None,
                    },
                })
                .collect(),
        }
    }
}

/// The lock held: an flocked open file description of `~lock`, released when dropped.
struct DirLocked<'a> {
    store: &'a DirStore,
    _lock: File,
    /// The counter, even; nobody else changes it while the lock is held.
    revision: Revision,
}

impl DirLocked<'_> {
    /// Runs one mutation between the two counter bumps (see the module docs).
    fn mutate<T>(
        &mut self,
        change: impl FnOnce(&DirStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.store.write_revision(self.revision + 1)?;
        let outcome = change(self.store);
        // Closed even when the change failed, so listings do not wait for it; if closing
        // fails too, the change's error is the one to report, and the next lock closes it.
        let closed = self.store.write_revision(self.revision + 2);
        let value = outcome?;
        closed?;
        self.revision += 2;
        Ok(value)
    }
}

impl Locked for DirLocked<'_> {
    fn list(&mut self, prefix: &str) -> Result<Listing, StoreError> {
        check_prefix(prefix)?;
        Ok(Listing {
            entries: self.store.walk(prefix)?,
            revision: self.revision,
        })
    }

    /// `Lifetime::Session` is permanent here: the dir backend has no sessions.
    fn put(&mut self, key: &str, value: &[u8], _lifetime: Lifetime) -> Result<(), StoreError> {
        check_key(key)?;
        self.mutate(|store| {
            store.make_parents(key)?;
            store.replace(key, value)
        })
    }

    fn delete(&mut self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        if !self.store.holds(key)? {
            return Ok(false);
        }
        self.mutate(|store| store.remove(key))
    }

    fn commit(&mut self, txn: &Txn) -> Result<Committed, StoreError> {
        txn.check(&self.store.url)?;
        let store = self.store;
        store.commit_locked(self, txn)
    }
}

/// A watch: inotify on every directory under the prefix, and on the directories leading to
/// it, so that the prefix's directory is watched as soon as it appears.
struct DirWatch {
    store: DirStore,
    prefix: String,
    inotify: OwnedFd,
    /// Watched directories by watch descriptor, as paths relative to the root (`""`, `a/b`).
    dirs: HashMap<i32, String>,
    /// The root's watch descriptor: when it goes, so did the store.
    root_wd: i32,
    pending: VecDeque<WatchEvent>,
    /// The last state reported per key, so that several events for one write (or a key
    /// read after it changed again) give one report.
    reported: HashMap<String, Option<Vec<u8>>>,
    buffer: Vec<MaybeUninit<u8>>,
}

impl DirWatch {
    /// Arms inotify, then compares the counter with `after` (see the module docs).
    fn start(store: &DirStore, prefix: &str, after: Revision) -> Result<DirWatch, StoreError> {
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| store.fail("starting inotify for", &store.root, e.into()))?;
        let mut watch = DirWatch {
            store: DirStore {
                root: store.root.clone(),
                url: store.url.clone(),
            },
            prefix: prefix.to_owned(),
            inotify,
            dirs: HashMap::new(),
            root_wd: -1,
            pending: VecDeque::new(),
            reported: HashMap::new(),
            buffer: vec![MaybeUninit::uninit(); 16 * 1024],
        };
        watch.arm("", false)?;
        match watch.dirs.iter().find(|(_, rel)| rel.is_empty()) {
            Some((wd, _)) => watch.root_wd = *wd,
            None => {
                let source = io::Error::new(ErrorKind::NotFound, "the store directory is gone");
                return Err(store.fail("watching", &store.root, source));
            }
        }
        if store.read_revision()? > after {
            watch.pending.push_back(WatchEvent::Resync);
        }
        Ok(watch)
    }

    /// Whether directory `rel` holds keys under the prefix.
    fn is_inside(&self, rel: &str) -> bool {
        dir_is_inside(&self.prefix, rel)
    }

    /// Watches directory `rel` if it matters: everything below it when it is inside the
    /// prefix (reporting the keys found when `scan`, for a directory that appeared after the
    /// watch started), else the next directory on the way to the prefix.
    fn arm(&mut self, rel: &str, scan: bool) -> Result<(), StoreError> {
        let Some(next) = dir_role(&self.prefix, rel) else {
            return Ok(());
        };
        let path = self.store.root.join(rel);
        let wd = match inotify::add_watch(&self.inotify, &path, WATCH_MASK) {
            Ok(wd) => wd,
            // Not there (yet), or a key: its parent's watch reports when a directory appears.
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(self.store.fail("watching", &path, e.into())),
        };
        self.dirs.insert(wd, rel.to_owned());
        if let Some(next) = next {
            return self.arm(&join(rel, next), scan);
        }
        let children = match fs::read_dir(&path) {
            Ok(children) => children,
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(self.store.fail("listing", &path, e)),
        };
        for child in children {
            let child = child.map_err(|e| self.store.fail("listing", &path, e))?;
            let name = child.file_name();
            let Some(name) = name.to_str().filter(|name| is_segment(name)) else {
                continue;
            };
            let child_rel = join(rel, name);
            match child.file_type() {
                Ok(file_type) if file_type.is_dir() => self.arm(&child_rel, scan)?,
                Ok(file_type) if file_type.is_file() && scan => self.report(&child_rel)?,
                Ok(_) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(self.store.fail("listing", &child.path(), e)),
            }
        }
        Ok(())
    }

    /// Reports `key`'s current state if it differs from the last one reported. The revision
    /// is filled in by [`Self::read_events`] once the batch is done.
    fn report(&mut self, key: &str) -> Result<(), StoreError> {
        let path = self.store.root.join(key);
        let (state, created) = match read_entry(&path) {
            Ok((value, created)) => (Some(value), created),
            Err(e) if is_missing(&e) || e.kind() == ErrorKind::IsADirectory => (None, 0),
            Err(e) => return Err(self.store.fail("reading", &path, e)),
        };
        if self.reported.get(key) != Some(&state) {
            self.reported.insert(key.to_owned(), state.clone());
            self.pending.push_back(WatchEvent::Changed {
                key: key.to_owned(),
                value: state,
                revision: 0,
                created,
            });
        }
        Ok(())
    }

    /// Turns one inotify event into reports.
    fn handle(&mut self, wd: i32, flags: ReadFlags, name: Option<&str>) -> Result<(), StoreError> {
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            self.pending.push_back(WatchEvent::Resync);
            self.reported.clear();
            return Ok(());
        }
        let Some(rel) = self.dirs.get(&wd).cloned() else {
            return Ok(());
        };
        if flags.contains(ReadFlags::IGNORED) {
            self.dirs.remove(&wd);
            if wd == self.root_wd {
                let source = io::Error::new(ErrorKind::NotFound, "the store directory was removed");
                return Err(self.store.fail("watching", &self.store.root, source));
            }
            return Ok(());
        }
        let Some(name) = name.filter(|name| is_segment(name)) else {
            return Ok(());
        };
        let child = join(&rel, name);
        if flags.contains(ReadFlags::ISDIR) {
            if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                self.arm(&child, true)?;
            } else if flags.contains(ReadFlags::MOVED_FROM) && self.is_inside(&child) {
                // Keys moved away with their directory are not reported one by one.
                self.pending.push_back(WatchEvent::Resync);
                self.reported.clear();
            }
            return Ok(());
        }
        if self.is_inside(&rel) {
            self.report(&child)?;
        }
        Ok(())
    }

    /// Reads every queued inotify event and turns them into reports.
    fn read_events(&mut self) -> Result<(), StoreError> {
        let mut events = Vec::new();
        let mut reader = inotify::Reader::new(&self.inotify, &mut self.buffer);
        loop {
            match reader.next() {
                Ok(event) => events.push((
                    event.wd(),
                    event.events(),
                    event
                        .file_name()
                        .and_then(|name| name.to_str().ok())
                        .map(str::to_owned),
                )),
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                Err(e) => {
                    return Err(self.store.fail(
                        "reading inotify events for",
                        &self.store.root,
                        e.into(),
                    ))
                }
            }
        }
        let first = self.pending.len();
        for (wd, flags, name) in events {
            self.handle(wd, flags, name.as_deref())?;
        }
        if self.pending.len() > first {
            // Read after the values, and rounded up past a mutation under way, so it is never
            // below the revision of the state reported.
            let counter = self.store.read_revision()?;
            let revision = counter + counter % 2;
            for event in self.pending.range_mut(first..) {
                if let WatchEvent::Changed { revision: r, .. } = event {
                    *r = revision;
                }
            }
        }
        Ok(())
    }
}

impl Watch for DirWatch {
    /// Reports each change of a key under the prefix as the key's state when the event was
    /// read: intermediate values of quick successive writes may be skipped, never the last.
    /// The revision is the counter read after the value, at or above the change's own.
    fn next(&mut self, timeout: Duration) -> Result<Option<WatchEvent>, StoreError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            self.read_events()?;
            if !self.pending.is_empty() {
                continue;
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Ok(None);
            }
            // A wait too long for a timespec is as good as forever.
            let wait = Timespec::try_from(left).ok();
            let mut fds = [PollFd::new(&self.inotify, PollFlags::IN)];
            retry_on_intr(|| rustix::event::poll(&mut fds, wait.as_ref())).map_err(|e| {
                self.store
                    .fail("waiting for inotify events for", &self.store.root, e.into())
            })?;
        }
    }
}

/// What to do with directory `rel` for a watch of `prefix`: `None` if it does not matter,
/// `Some(None)` if it is inside the prefix (watch it and everything below), `Some(Some(next))`
/// if it leads to the prefix's directory, `next` being the following segment.
fn dir_role<'p>(prefix: &'p str, rel: &str) -> Option<Option<&'p str>> {
    if dir_is_inside(prefix, rel) {
        return Some(None);
    }
    let target = prefix.trim_end_matches('/');
    let rest = if rel.is_empty() {
        target
    } else {
        target.strip_prefix(rel)?.strip_prefix('/')?
    };
    rest.split('/').next().map(Some)
}

/// Whether directory `rel` (`""` for the root) is the prefix's directory or below it.
fn dir_is_inside(prefix: &str, rel: &str) -> bool {
    prefix.is_empty() || (!rel.is_empty() && format!("{rel}/").starts_with(prefix))
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    }
}

/// Whether a file name can be part of a key: temporary and internal names (`~...`) cannot.
fn is_segment(name: &str) -> bool {
    !name.contains('/') && check_key(name).is_ok()
}

/// Errors meaning "no such file here": gone, or a path through a file.
fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Writes `bytes` to `path` (mode 0600), with `modified` as its mtime if given, and syncs it.
fn write_synced(path: &Path, bytes: &[u8], modified: Option<SystemTime>) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    // A file left by a crash keeps its old mode: make sure.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)?;
    if let Some(modified) = modified {
        file.set_modified(modified)?;
    }
    file.sync_data()
}

/// A key's value and its creation stamp: the mtime in nanoseconds since the epoch, which
/// [`DirStore::replace`] carries over when it overwrites the key.
fn read_entry(path: &Path) -> io::Result<(Vec<u8>, Revision)> {
    let mut file = File::open(path)?;
    let modified = file.metadata()?.modified()?;
    let mut value = Vec::new();
    io::Read::read_to_end(&mut file, &mut value)?;
    let created = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Ok((value, created))
}

/// Makes the store directory its owner's alone (0700), saying so if it was wider. A directory
/// that belongs to another user is refused: that user could write records.
fn restrict(root: &Path) -> io::Result<()> {
    let meta = fs::metadata(root)?;
    let ours = rustix::process::geteuid().as_raw();
    if meta.uid() != ours {
        return Err(io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "it belongs to uid {}, not to uid {ours} that runs vxtap: whoever owns the store can write records",
                meta.uid()
            ),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != DIR_MODE {
        tracing::warn!(path = %root.display(), mode = format!("{mode:o}"), "the store directory was open to others; restricting it to 0700");
        fs::set_permissions(root, fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Makes a rename or unlink in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_error(url: &str, action: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        url: url.to_owned(),
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, DirStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn commits_pass_the_conformance_checks() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::run(super::super::conformance::COMMIT_CHECKS, &|| {
            Box::new(DirStore::open(dir.path()).unwrap()) as Box<dyn Store>
        });
    }

    /// A crash after the journal was renamed into place, with some writes applied and the
    /// counter odd: the next holder completes the commit, closes the counter and removes
    /// the journal.
    #[test]
    fn a_commit_interrupted_by_a_crash_is_completed_by_the_next_holder() {
        let (dir, store) = store();
        {
            let mut locked = store.lock(Duration::from_secs(5)).unwrap();
            locked.put("c/old", b"o", Lifetime::Permanent).unwrap();
        }
        let txn = Txn::new()
            .create("c/a", b"1", Lifetime::Permanent)
            .create("c/b", b"2", Lifetime::Permanent)
            .delete("c/old");
        store.write_journal(&Journal::of(txn.writes())).unwrap();
        // The crash: the counter odd, `c/a` written, the rest not.
        fs::write(dir.path().join(REVISION_FILE), "3").unwrap();
        fs::create_dir_all(dir.path().join("c")).unwrap();
        fs::write(dir.path().join("c/a"), "1").unwrap();
        {
            let mut locked = store.lock(Duration::from_secs(5)).unwrap();
            let keys: Vec<(String, Vec<u8>)> = locked
                .list("c/")
                .unwrap()
                .entries
                .into_iter()
                .map(|e| (e.key, e.value))
                .collect();
            assert_eq!(
                keys,
                [
                    ("c/a".to_owned(), b"1".to_vec()),
                    ("c/b".to_owned(), b"2".to_vec())
                ]
            );
        }
        assert!(!dir.path().join(JOURNAL_FILE).exists());
        assert_eq!(store.read_revision().unwrap(), 6);
        // A garbled journal is reported, naming it, rather than skipped.
        fs::write(dir.path().join(JOURNAL_FILE), "{").unwrap();
        let error = store.commit(&Txn::new()).unwrap_err().to_string();
        assert!(
            error.contains("~txn") && error.contains("remove it"),
            "{error}"
        );
        fs::write(
            dir.path().join(JOURNAL_FILE),
            r#"{"writes":[{"key":"../x","value":null}]}"#,
        )
        .unwrap();
        let error = store.commit(&Txn::new()).unwrap_err().to_string();
        assert!(error.contains("../x"), "{error}");
    }

    /// Puts the dir backend cannot hold are refused before anything is written.
    #[test]
    fn a_commit_of_a_key_and_keys_below_it_writes_nothing() {
        let (_dir, store) = store();
        store
            .commit(&Txn::new().put("k", b"file", Lifetime::Permanent))
            .unwrap();
        for txn in [
            Txn::new().put("fresh", b"x", Lifetime::Permanent).put(
                "k/below",
                b"x",
                Lifetime::Permanent,
            ),
            Txn::new()
                .put("n/a", b"x", Lifetime::Permanent)
                .put("n", b"x", Lifetime::Permanent),
            Txn::new()
                .put("fresh", b"x", Lifetime::Permanent)
                .put("n/a", b"x", Lifetime::Permanent)
                .put("n/a/b", b"x", Lifetime::Permanent),
        ] {
            let error = store.commit(&txn).unwrap_err().to_string();
            assert!(
                error.contains("cannot hold a key and keys below it"),
                "{error}"
            );
            let keys: Vec<String> = store
                .list("")
                .unwrap()
                .entries
                .into_iter()
                .map(|e| e.key)
                .collect();
            assert_eq!(keys, ["k"], "{txn:?}");
        }
        store
            .commit(&Txn::new().put("d/e", b"x", Lifetime::Permanent))
            .unwrap();
        let error = store
            .commit(&Txn::new().put("d", b"x", Lifetime::Permanent))
            .unwrap_err()
            .to_string();
        assert!(error.contains("keys below \"d\" exist"), "{error}");
        // A delete of a directory deletes nothing, as `Locked::delete`.
        assert!(matches!(
            store.commit(&Txn::new().delete("d")).unwrap(),
            Committed::Done { .. }
        ));
        assert_eq!(store.list("d/").unwrap().entries.len(), 1);
    }

    #[test]
    fn internal_names_are_never_segments() {
        for name in [
            LOCK_FILE,
            REVISION_FILE,
            REVISION_TEMP,
            VALUE_TEMP,
            JOURNAL_FILE,
            JOURNAL_TEMP,
        ] {
            assert!(!is_segment(name), "{name}");
        }
        for name in ["a", ".hidden", "x-1_2.json"] {
            assert!(is_segment(name), "{name}");
        }
        for name in ["", ".", "..", "a b", "a/b", "é"] {
            assert!(!is_segment(name), "{name:?}");
        }
    }

    #[test]
    fn directories_are_classified_against_the_prefix() {
        // Everything is inside the empty prefix.
        assert_eq!(dir_role("", ""), Some(None));
        assert_eq!(dir_role("", "a/b"), Some(None));
        // The way to a/b/, the prefix's directory and below, and the rest.
        assert_eq!(dir_role("a/b/", ""), Some(Some("a")));
        assert_eq!(dir_role("a/b/", "a"), Some(Some("b")));
        assert_eq!(dir_role("a/b/", "a/b"), Some(None));
        assert_eq!(dir_role("a/b/", "a/b/c"), Some(None));
        assert_eq!(dir_role("a/b/", "a/bc"), None);
        assert_eq!(dir_role("a/b/", "ab"), None);
        assert_eq!(dir_role("a/b/", "x"), None);
        assert!(!dir_is_inside("a/", ""));
        assert!(!dir_is_inside("a/", "ab"));
        assert!(dir_is_inside("a/", "a"));
    }

    #[test]
    fn each_mutation_raises_the_counter_by_two() {
        let (_dir, store) = store();
        assert_eq!(store.read_revision().unwrap(), 0);
        {
            let mut locked = store.lock(Duration::from_secs(5)).unwrap();
            locked.put("k", b"v", Lifetime::Permanent).unwrap();
            assert_eq!(locked.list("").unwrap().revision, 2);
            // A delete of nothing changes nothing.
            assert!(!locked.delete("missing").unwrap());
            assert!(locked.delete("k").unwrap());
        }
        assert_eq!(store.list("").unwrap().revision, 4);
    }

    #[test]
    fn an_odd_counter_left_by_a_dead_holder_is_closed_by_the_next_lock() {
        let (dir, store) = store();
        fs::write(dir.path().join(REVISION_FILE), "7").unwrap();
        // Listing does not wait forever for the dead mutation, and its revision stays below
        // that mutation's.
        assert_eq!(store.list("").unwrap().revision, 6);
        drop(store.lock(Duration::from_secs(5)).unwrap());
        assert_eq!(store.read_revision().unwrap(), 8);
        assert_eq!(store.list("").unwrap().revision, 8);
    }

    #[test]
    fn a_garbled_counter_is_an_error_naming_the_file() {
        let (dir, store) = store();
        fs::write(dir.path().join(REVISION_FILE), "seven").unwrap();
        let error = store.list("").unwrap_err().to_string();
        assert!(error.contains("~rev") && error.contains("seven"), "{error}");
    }

    #[test]
    fn a_queue_overflow_means_resync() {
        let (_dir, store) = store();
        let mut watch = DirWatch::start(&store, "a/", 0).unwrap();
        watch.reported.insert("a/k".to_owned(), None);
        watch.handle(-1, ReadFlags::QUEUE_OVERFLOW, None).unwrap();
        assert_eq!(
            watch.next(Duration::ZERO).unwrap(),
            Some(WatchEvent::Resync)
        );
        assert!(watch.reported.is_empty());
    }

    #[test]
    fn a_key_and_keys_below_it_are_refused_clearly() {
        let (_dir, store) = store();
        let mut locked = store.lock(Duration::from_secs(5)).unwrap();
        locked.put("a", b"file", Lifetime::Permanent).unwrap();
        let error = locked
            .put("a/b", b"x", Lifetime::Permanent)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cannot hold a key and keys below it"),
            "{error}"
        );
        locked.put("c/d", b"x", Lifetime::Permanent).unwrap();
        let error = locked
            .put("c", b"x", Lifetime::Permanent)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cannot hold a key and keys below it"),
            "{error}"
        );
        // Both refusals left the store as it was, and listings settle.
        drop(locked);
        let keys: Vec<String> = store
            .list("")
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["a", "c/d"]);
        assert_eq!(store.list("").unwrap().revision % 2, 0);
    }
}

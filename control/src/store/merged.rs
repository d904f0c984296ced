//! One [`Watch`] over several prefixes: a host follows the global records and the endpoints of
//! the networks it serves, which are not one contiguous range of keys.
//!
//! Each prefix gets the backend's own watch, started from the revision its listing was taken
//! at, and a thread that forwards its events into one channel. Events of one prefix keep their
//! order; events of different prefixes interleave as they arrive, which is all a reader of
//! independent key ranges needs. The first `Resync` or error of any prefix finishes the merged
//! watch, and every later `next` repeats it, as a single watch does. Dropping it stops the
//! threads (each within one poll interval) and joins them.

use super::{Revision, Store, StoreError, Watch, WatchEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a forwarding thread looks at the stop flag while its watch is quiet.
const POLL: Duration = Duration::from_millis(200);

/// Why a merged watch finished, repeated by every later `next`.
#[derive(Debug, Clone)]
enum Finished {
    Resync,
    Failed(String),
}

/// Watches every `(prefix, after)` of `prefixes` as one stream. One prefix is the backend's
/// own watch, with no thread.
///
/// # Errors
///
/// Starting any of the watches failed (the ones started are stopped again).
pub fn watch_prefixes(
    store: &dyn Store,
    prefixes: &[(String, Revision)],
) -> Result<Box<dyn Watch>, StoreError> {
    if let [(prefix, after)] = prefixes {
        return store.watch(prefix, *after);
    }
    let watches = prefixes
        .iter()
        .map(|(prefix, after)| store.watch(prefix, *after))
        .collect::<Result<Vec<_>, _>>()?;
    let (sender, events) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let mut merged = Merged {
        url: store.url(),
        events,
        stop: Arc::clone(&stop),
        pumps: Vec::new(),
        finished: None,
    };
    for watch in watches {
        let sender = sender.clone();
        let stop = Arc::clone(&stop);
        let pump = std::thread::Builder::new()
            .name("vxtap-watch".to_owned())
            .spawn(move || forward(watch, &sender, &stop))
            .map_err(|err| StoreError::Unreachable {
                url: merged.url.clone(),
                reason: format!("cannot start a watch thread: {err}"),
            })?;
        merged.pumps.push(pump);
    }
    Ok(Box::new(merged))
}

/// Forwards `watch`'s events until it finishes, the reader goes away, or `stop` is set.
fn forward(
    mut watch: Box<dyn Watch>,
    sender: &Sender<Result<WatchEvent, StoreError>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let next = watch.next(POLL);
        let last = matches!(next, Ok(Some(WatchEvent::Resync)) | Err(_));
        let sent = match next {
            Ok(None) => Ok(()),
            Ok(Some(event)) => sender.send(Ok(event)),
            Err(err) => sender.send(Err(err)),
        };
        if last || sent.is_err() {
            return;
        }
    }
}

/// See [`watch_prefixes`].
struct Merged {
    url: String,
    events: Receiver<Result<WatchEvent, StoreError>>,
    stop: Arc<AtomicBool>,
    pumps: Vec<JoinHandle<()>>,
    finished: Option<Finished>,
}

impl Merged {
    fn repeat(&self, finished: &Finished) -> Result<Option<WatchEvent>, StoreError> {
        match finished {
            Finished::Resync => Ok(Some(WatchEvent::Resync)),
            Finished::Failed(reason) => Err(StoreError::Unreachable {
                url: self.url.clone(),
                reason: format!("the watch ended: {reason}"),
            }),
        }
    }
}

impl Watch for Merged {
    fn next(&mut self, timeout: Duration) -> Result<Option<WatchEvent>, StoreError> {
        if let Some(finished) = &self.finished {
            return self.repeat(finished);
        }
        match self.events.recv_timeout(timeout) {
            Ok(Ok(WatchEvent::Resync)) => {
                self.finished = Some(Finished::Resync);
                Ok(Some(WatchEvent::Resync))
            }
            Ok(Ok(event)) => Ok(Some(event)),
            Ok(Err(err)) => {
                self.finished = Some(Finished::Failed(err.to_string()));
                Err(err)
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            // Every forwarder is gone without a word: cannot happen while they run, since
            // each sends why it stops; treat it as a broken watch all the same.
            Err(RecvTimeoutError::Disconnected) => {
                let finished = Finished::Failed("every watch thread stopped".to_owned());
                let result = self.repeat(&finished);
                self.finished = Some(finished);
                result
            }
        }
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for pump in self.pumps.drain(..) {
            if pump.join().is_err() {
                tracing::error!(url = %self.url, "a watch thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{dir::DirStore, Lifetime};

    fn put(store: &dyn Store, key: &str, value: &[u8]) {
        let mut locked = store.lock(Duration::from_secs(5)).unwrap();
        locked.put(key, value, Lifetime::Permanent).unwrap();
    }

    /// The next change, skipping quiet intervals, within 10 s.
    fn next_change(watch: &mut dyn Watch) -> (String, Option<Vec<u8>>) {
        for _ in 0..50 {
            match watch.next(Duration::from_millis(200)).unwrap() {
                Some(WatchEvent::Changed { key, value, .. }) => return (key, value),
                Some(WatchEvent::Resync) => panic!("unexpected Resync"),
                None => {}
            }
        }
        panic!("no change within 10 s");
    }

    #[test]
    fn merges_prefixes_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        put(&store, "a/seed", b"0");
        put(&store, "b/seed", b"0");
        let a = store.list("a/").unwrap().revision;
        let b = store.list("b/").unwrap().revision;
        let mut watch =
            watch_prefixes(&store, &[("a/".to_owned(), a), ("b/".to_owned(), b)]).unwrap();
        put(&store, "c/other", b"x");
        put(&store, "a/k", b"1");
        assert_eq!(
            next_change(&mut *watch),
            ("a/k".to_owned(), Some(b"1".to_vec()))
        );
        put(&store, "b/k", b"2");
        assert_eq!(
            next_change(&mut *watch),
            ("b/k".to_owned(), Some(b"2".to_vec()))
        );
        assert_eq!(watch.next(Duration::from_millis(300)).unwrap(), None);
    }

    /// A watch that reports one error.
    struct Failing;

    impl Watch for Failing {
        fn next(&mut self, _: Duration) -> Result<Option<WatchEvent>, StoreError> {
            Err(StoreError::Unreachable {
                url: "test".to_owned(),
                reason: "gone".to_owned(),
            })
        }
    }

    #[test]
    fn an_error_finishes_the_merged_watch_for_good() {
        let (sender, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let pump_stop = Arc::clone(&stop);
        let pump = std::thread::spawn(move || forward(Box::new(Failing), &sender, &pump_stop));
        let mut merged = Merged {
            url: "test".to_owned(),
            events,
            stop,
            pumps: vec![pump],
            finished: None,
        };
        for _ in 0..3 {
            let err = merged.next(Duration::from_secs(5)).unwrap_err();
            assert!(err.to_string().contains("gone"), "{err}");
        }
    }
}

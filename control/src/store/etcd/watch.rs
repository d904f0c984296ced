//! Watching a prefix on etcd: one streaming `POST /v3/watch`, read by a thread that feeds a
//! channel, so [`Watch::next`] can give up after its timeout without disturbing the stream.
//!
//! The watch starts at `after + 1` and is confirmed (`created`) before
//! [`EtcdWatch::start`] returns. Puts and deletes become [`WatchEvent::Changed`]; a watch
//! that etcd cancels because the start revision was compacted becomes [`WatchEvent::Resync`]
//! and ends (every later `next` says `Resync` again: only a new listing and a new watch
//! recover). A broken stream (etcd stopped, connection reset, TCP keep-alive gave up) is
//! `Unreachable`, and every later `next` fails the same way. Dropping the watch shuts the
//! socket down, which ends the reader thread, and joins it (under TLS too: the raw socket
//! under the TLS stream is shut down).
//!
//! With a user, the watch request carries the auth token. etcd 3.4 checks it only when the
//! watch is created, and refuses a stale token there as "permission denied" (a cancelled
//! watch), so a refused creation is tried once more with a new token before it is
//! reported; a watch that was created keeps streaming after its token expires.

use super::json::{self, StreamMessage, WatchResponse};
use super::{auth, relative, status_error, store_error, stream_error, CallError, Shared, ROOT};
use crate::store::{Revision, StoreError, Watch, WatchEvent};
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// A stream of decoded watch messages.
type Messages = Box<dyn Iterator<Item = serde_json::Result<StreamMessage<WatchResponse>>> + Send>;

/// What one watch message means.
#[derive(Debug, Default, PartialEq, Eq)]
struct Step {
    /// The watch is now established.
    created: bool,
    /// Changes, in order; a final `Resync` if the watch was cancelled by compaction.
    events: Vec<WatchEvent>,
    /// The stream carries nothing more for us.
    end: bool,
}

/// Why an attempt to start a watch failed.
#[derive(Debug)]
enum Refused {
    /// etcd called the token stale: worth one more attempt with a new one.
    Stale(StoreError),
    /// etcd cancelled the watch for lack of permission, which is also how it refuses an
    /// expired token at creation.
    Denied(StoreError),
    /// Anything else.
    Other(StoreError),
}

impl Refused {
    fn into_error(self) -> StoreError {
        match self {
            Refused::Stale(err) | Refused::Denied(err) | Refused::Other(err) => err,
        }
    }
}

impl From<StoreError> for Refused {
    fn from(err: StoreError) -> Refused {
        match err {
            StoreError::PermissionDenied { .. } => Refused::Denied(err),
            err => Refused::Other(err),
        }
    }
}

/// Why a watch stopped, repeated by every `next` after it did.
#[derive(Debug, Clone)]
enum Finished {
    Resync,
    Failed(String),
}

/// A watch on etcd. See the module docs.
#[derive(Debug)]
pub(super) struct EtcdWatch {
    url: String,
    /// `None` only while dropping.
    events: Option<Receiver<Result<WatchEvent, StoreError>>>,
    socket: TcpStream,
    reader: Option<JoinHandle<()>>,
    finished: Option<Finished>,
}

impl EtcdWatch {
    /// Starts a watch on the relative `prefix` (already checked) after revision `after`.
    pub(super) fn start(
        shared: &Shared,
        prefix: &str,
        after: Revision,
    ) -> Result<EtcdWatch, StoreError> {
        let token = shared.token().map_err(|err| shared.error(err))?;
        match EtcdWatch::start_with(shared, prefix, after, token.as_ref()) {
            Err(Refused::Stale(_) | Refused::Denied(_)) if token.is_some() => {
                let stale = token.as_ref().map(|t| shared.renew_token(t));
                let fresh = stale.transpose().map_err(|err| shared.error(err))?;
                EtcdWatch::start_with(shared, prefix, after, fresh.as_ref())
                    .map_err(Refused::into_error)
            }
            result => result.map_err(Refused::into_error),
        }
    }

    /// One attempt at [`start`](Self::start) with `token`.
    fn start_with(
        shared: &Shared,
        prefix: &str,
        after: Revision,
        token: Option<&auth::Token>,
    ) -> Result<EtcdWatch, Refused> {
        let url = shared.url.clone();
        let key = format!("{ROOT}{prefix}");
        let start = after.saturating_add(1).max(1);
        let request = json::request::watch(key.as_bytes(), start).to_string();
        let stream = shared
            .client
            .post_streaming(
                "/v3/watch",
                request.as_bytes(),
                token.map(auth::Token::as_str),
            )
            .map_err(|err| Refused::Other(shared.error(CallError::Http(err))))?;
        if stream.status != 200 {
            let mut body = Vec::new();
            // Best effort: the status alone is enough to refuse.
            let _ = stream.body.take(64 * 1024).read_to_end(&mut body);
            let err = status_error(stream.status, &body);
            return Err(if err.is_stale_token() {
                Refused::Stale(shared.error(err))
            } else {
                Refused::Other(shared.error(err))
            });
        }
        let socket = stream.socket;
        let mut messages: Messages = Box::new(
            serde_json::Deserializer::from_reader(stream.body)
                .into_iter::<StreamMessage<WatchResponse>>(),
        );
        let (sender, events) = mpsc::channel();
        // Until `created`, reads time out after the request timeout.
        let end = loop {
            let step = next_step(&mut messages, &url).map_err(|err| match err {
                StoreError::PermissionDenied { url, reason, .. } => StoreError::PermissionDenied {
                    url,
                    user: shared.user().map(str::to_owned),
                    reason,
                },
                err => err,
            })?;
            for event in step.events {
                // The receiver is right here: sending cannot fail.
                let _ = sender.send(Ok(event));
            }
            if step.created || step.end {
                break step.end;
            }
        };
        let reader = if end {
            None
        } else {
            socket
                .set_read_timeout(None)
                .map_err(|err| unreachable(&url, format!("setting up the watch socket: {err}")))?;
            let thread_url = url.clone();
            let thread = std::thread::Builder::new()
                .name("vxtap-etcd-watch".to_owned())
                .spawn(move || pump(messages, &sender, &thread_url))
                .map_err(|err| unreachable(&url, format!("cannot start a watch thread: {err}")))?;
            Some(thread)
        };
        Ok(EtcdWatch {
            url,
            events: Some(events),
            socket,
            reader,
            finished: None,
        })
    }

    fn finished_error(&self, reason: &str) -> StoreError {
        unreachable(&self.url, format!("the watch has ended: {reason}"))
    }
}

impl Watch for EtcdWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<WatchEvent>, StoreError> {
        match &self.finished {
            Some(Finished::Resync) => return Ok(Some(WatchEvent::Resync)),
            Some(Finished::Failed(reason)) => return Err(self.finished_error(reason)),
            None => {}
        }
        let Some(events) = &self.events else {
            return Err(self.finished_error("dropped"));
        };
        match events.recv_timeout(timeout) {
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
            Err(RecvTimeoutError::Disconnected) => {
                let reason = "the watch stream ended".to_owned();
                self.finished = Some(Finished::Failed(reason.clone()));
                Err(unreachable(&self.url, reason))
            }
        }
    }
}

impl Drop for EtcdWatch {
    fn drop(&mut self) {
        // First the receiver, so the reader cannot block on it; then the socket, which wakes
        // the reader with an end of stream or an error.
        drop(self.events.take());
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            if reader.join().is_err() {
                tracing::error!(url = %self.url, "an etcd watch thread panicked");
            }
        }
    }
}

/// The reader thread: forwards events until the stream ends, fails or the watch is dropped.
fn pump(mut messages: Messages, sender: &Sender<Result<WatchEvent, StoreError>>, url: &str) {
    loop {
        match next_step(&mut messages, url) {
            Ok(step) => {
                for event in step.events {
                    if sender.send(Ok(event)).is_err() {
                        return; // The watch was dropped.
                    }
                }
                if step.end {
                    return;
                }
            }
            Err(err) => {
                let _ = sender.send(Err(err));
                return;
            }
        }
    }
}

/// Reads and translates the next message.
fn next_step(messages: &mut Messages, url: &str) -> Result<Step, StoreError> {
    match messages.next() {
        None => Err(unreachable(url, "the watch stream ended".to_owned())),
        Some(Err(err)) => Err(stream_failure(url, err)),
        Some(Ok(message)) => translate(message, url),
    }
}

/// What a decoding failure of the stream means: a connection problem, or a peer that does
/// not speak the protocol.
fn stream_failure(url: &str, err: serde_json::Error) -> StoreError {
    if err.is_io() {
        let err = io::Error::from(err);
        if err.kind() == io::ErrorKind::InvalidData {
            StoreError::Protocol {
                url: url.to_owned(),
                reason: format!("watch stream: {err}"),
            }
        } else {
            unreachable(url, format!("watch stream: {err}"))
        }
    } else if err.is_eof() {
        unreachable(url, "the watch stream ended inside a message".to_owned())
    } else {
        StoreError::Protocol {
            url: url.to_owned(),
            reason: format!("watch stream: {err}"),
        }
    }
}

/// The meaning of one watch message.
fn translate(message: StreamMessage<WatchResponse>, url: &str) -> Result<Step, StoreError> {
    let response = match message.result {
        Some(response) => response,
        None => return Err(store_error(url, None, stream_error(message.error.as_ref()))),
    };
    let mut step = Step {
        created: response.created,
        ..Step::default()
    };
    for event in response.events {
        let Some(key) = relative(url, &event.kv.key)? else {
            continue;
        };
        let (value, created) = match event.kind.as_deref() {
            None | Some("PUT") => (Some(event.kv.value), event.kv.create_revision),
            Some("DELETE") => (None, 0),
            Some(other) => {
                return Err(StoreError::Protocol {
                    url: url.to_owned(),
                    reason: format!("watch event of unknown type {other:?}"),
                })
            }
        };
        step.events.push(WatchEvent::Changed {
            key,
            value,
            revision: event.kv.mod_revision,
            created,
        });
    }
    if response.canceled {
        if response.compact_revision > 0 {
            step.events.push(WatchEvent::Resync);
            step.end = true;
        } else if response.cancel_reason.contains("permission denied") {
            return Err(StoreError::PermissionDenied {
                url: url.to_owned(),
                user: None,
                reason: response.cancel_reason,
            });
        } else {
            return Err(StoreError::Protocol {
                url: url.to_owned(),
                reason: format!("etcd cancelled the watch: {:?}", response.cancel_reason),
            });
        }
    }
    Ok(step)
}

fn unreachable(url: &str, reason: String) -> StoreError {
    StoreError::Unreachable {
        url: url.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "etcd://127.0.0.1:2379";

    /// A watch stream as etcd 3.4.23 sent it (the de-chunked body): created, a batch of
    /// history, then the watch cancelled by a compaction.
    const STREAM: &str = concat!(
        r#"{"result":{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"6","raft_term":"2"},"created":true}}"#,
        "\n",
        r#"{"result":{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"6","raft_term":"2"},"events":[{"kv":{"key":"L3Z4dGFwL3YxL2U=","create_revision":"3","mod_revision":"3","version":"1"}},{"type":"DELETE","kv":{"key":"L3Z4dGFwL3YxL2U=","mod_revision":"4"}},{"kv":{"key":"L3Z4dGFwL3YxL3g=","create_revision":"6","mod_revision":"6","version":"1","value":"dg=="}}]}}"#,
        "\n",
        r#"{"result":{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","raft_term":"2"},"canceled":true,"compact_revision":"7"}}"#,
        "\n",
    );

    fn messages(text: &'static str) -> Messages {
        Box::new(
            serde_json::Deserializer::from_reader(text.as_bytes())
                .into_iter::<StreamMessage<WatchResponse>>(),
        )
    }

    #[test]
    fn translates_a_stream() {
        let mut stream = messages(STREAM);
        let created = next_step(&mut stream, URL).unwrap();
        assert_eq!(
            created,
            Step {
                created: true,
                ..Step::default()
            }
        );
        let history = next_step(&mut stream, URL).unwrap();
        assert_eq!(
            history.events,
            [
                WatchEvent::Changed {
                    key: "e".to_owned(),
                    value: Some(Vec::new()),
                    revision: 3,
                    created: 3,
                },
                WatchEvent::Changed {
                    key: "e".to_owned(),
                    value: None,
                    revision: 4,
                    created: 0,
                },
                WatchEvent::Changed {
                    key: "x".to_owned(),
                    value: Some(b"v".to_vec()),
                    revision: 6,
                    created: 6,
                },
            ]
        );
        assert!(!history.end);
        let compacted = next_step(&mut stream, URL).unwrap();
        assert_eq!(compacted.events, [WatchEvent::Resync]);
        assert!(compacted.end);
        assert!(matches!(
            next_step(&mut stream, URL),
            Err(StoreError::Unreachable { .. })
        ));
    }

    #[test]
    fn stream_failures_are_classified() {
        // Cut inside a message: the connection broke.
        let mut cut = messages(r#"{"result":{"header":{"revision":"6"},"crea"#);
        assert!(matches!(
            next_step(&mut cut, URL),
            Err(StoreError::Unreachable { .. })
        ));
        for bad in [
            r#"{"result":{"events":[{"type":"EXPLODE","kv":{"key":"L3Z4dGFwL3YxL3g="}}]}}"#,
            r#"{"result":{"events":[{"kv":{"key":"L290aGVyL3g="}}]}}"#,
            r#"{"result":{"canceled":true,"cancel_reason":"mvcc: required revision is a future revision"}}"#,
            r#"{"result":{"events":"nope"}}"#,
            "<html>",
            r#"{"error":{"grpc_code":3,"http_code":400,"message":"bad"}}"#,
        ] {
            let mut stream = messages(bad);
            assert!(
                matches!(
                    next_step(&mut stream, URL),
                    Err(StoreError::Protocol { .. })
                ),
                "{bad}"
            );
        }
        // What etcd 3.4.23 sends when the token lacks read permission on the prefix.
        let mut denied = messages(
            r#"{"result":{"header":{"revision":"5"},"created":true,"canceled":true,"cancel_reason":"etcdserver: permission denied"}}"#,
        );
        assert!(matches!(
            next_step(&mut denied, URL),
            Err(StoreError::PermissionDenied { .. })
        ));
        // What etcd 3.4.23 sends on its watch streams when it shuts down (SIGTERM).
        let mut closing = messages(
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing","http_status":"Service Unavailable"}}"#,
        );
        assert!(matches!(
            next_step(&mut closing, URL),
            Err(StoreError::Unreachable { .. })
        ));
    }

    #[test]
    fn skips_keys_that_break_the_rules() {
        // "/vxtap/v1/a b" then "/vxtap/v1/ok".
        let mut stream = messages(
            r#"{"result":{"events":[{"kv":{"key":"L3Z4dGFwL3YxL2EgYg==","mod_revision":"2"}},{"kv":{"key":"L3Z4dGFwL3YxL29r","mod_revision":"3","value":"MQ=="}}]}}"#,
        );
        let step = next_step(&mut stream, URL).unwrap();
        assert_eq!(
            step.events,
            [WatchEvent::Changed {
                key: "ok".to_owned(),
                value: Some(b"1".to_vec()),
                revision: 3,
                created: 0,
            }]
        );
    }
}

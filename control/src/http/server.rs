//! An HTTP/1.1 server on a unix socket, for Docker's plugin protocols: every request is
//! read whole (head and body), handed to a [`Handler`], and its [`Response`] is sent as
//! `application/json` with a `Content-Length`.
//!
//! - Binding: the socket gets its mode between `bind` and `listen`, so it never accepts
//!   anyone under a wider mode. A socket file left by a dead daemon (nobody answers) is
//!   replaced; one that answers is another daemon's, and binding fails. The parent
//!   directory is made (0755, less the umask) if missing.
//! - Connections: one thread each, at most [`MAX_CONNECTIONS`]. Up to as many again get a
//!   short-lived thread that reads their request head and answers 503 (answering before the
//!   request arrives would race with the client's write); past that a connection is closed
//!   unanswered. Keep-alive is the default, as Go's client expects: a connection ends on
//!   `Connection: close`, after an HTTP/1.0 request, when idle for [`IDLE_TIMEOUT`] (long,
//!   because a server closing an idle connection races with the client's next request on
//!   it), or on any request the server refuses.
//! - Limits per request: the head is at most 64 KiB (431), the body at most [`MAX_BODY`]
//!   (413), both must arrive within [`REQUEST_DEADLINE`] of the request's first byte (408),
//!   and the answer must be taken within [`WRITE_TIMEOUT`]. The deadlines are the time
//!   left, not a fresh time-out per read, so a trickle cannot stretch them. A malformed
//!   request is answered 400; each refusal closes the connection, since what follows it
//!   cannot be trusted to start a request. Refusals carry Docker's plugin error shape,
//!   `{"Err": "..."}`, so the engine shows why.
//! - `Expect: 100-continue` is honoured: `100 Continue` once the head is accepted, or the
//!   refusal instead.
//! - Dropping the [`Server`] stops accepting, shuts every connection down (ending blocked
//!   reads and writes), waits up to a second for their threads (a handler still running
//!   finishes on its own), and removes the socket file if it is still the one bound.
//!
//! The handler runs on the connection's thread; a panic in it is caught and answered 500.
//! This module never interprets a body, and never frames an answer by closing the
//! connection: every answer but a 204 or 304 (which have no content) has a `Content-Length`.

mod connection;

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// Largest request body accepted, de-chunked.
const MAX_BODY: usize = 1024 * 1024;
/// How long a request (head and body) may take to arrive, from its first byte.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may stay silent between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a client may take to accept one answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections beyond [`MAX_CONNECTIONS`] that are answered 503 at once.
const MAX_REFUSING: usize = MAX_CONNECTIONS;
/// How long a connection being refused may take to send its request head.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);
/// How long dropping the server waits for connection threads.
const DROP_WAIT: Duration = Duration::from_secs(1);
/// How long the accept loop rests after an `accept` failure (out of fds, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections waiting in the kernel for `accept`.
const BACKLOG: i32 = 128;

/// A request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (`POST`).
    pub method: String,
    /// The request target as sent: the path, with the query if there is one
    /// (`/NetworkDriver.CreateEndpoint`).
    pub path: String,
    /// The body, de-chunked; empty when there is none.
    pub body: Vec<u8>,
}

/// A handler's answer: always sent as `application/json` with a `Content-Length` (without
/// a body for 204 and 304, and to `HEAD`). A status outside 200..=599 is a handler bug and
/// is sent as 500.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// What serves the requests; called on each connection's thread, so concurrently.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `request`.
    fn handle(&self, request: &Request) -> Response;
}

/// Why a server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Something answers on the socket: another daemon serves it.
    #[error("{}: another process is serving this socket", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// The path exists and is not a socket; it is left alone.
    #[error("{}: exists and is not a socket", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A step of setting up the socket failed.
    #[error("{step} {}: {source}", path.display())]
    Socket {
        /// What was being done.
        step: &'static str,
        /// The socket (or its directory).
        path: PathBuf,
        /// What happened.
        source: io::Error,
    },
}

/// The limits a server applies; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    connections: usize,
    request: Duration,
    idle: Duration,
    write: Duration,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        connections: MAX_CONNECTIONS,
        request: REQUEST_DEADLINE,
        idle: IDLE_TIMEOUT,
        write: WRITE_TIMEOUT,
    };
}

/// An HTTP server on a unix socket; see the module docs. Serves until dropped.
pub struct Server {
    path: PathBuf,
    /// The socket file's device and inode, so dropping removes only the file it bound.
    file: (u64, u64),
    shared: Arc<Shared>,
    /// Closing it wakes the accept thread (the read end sees a hang-up).
    wake: Option<OwnedFd>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("path", &self.path).finish()
    }
}

impl Server {
    /// Binds a unix socket at `path` with file mode `mode` (0o660, say) and serves `handler`
    /// on it. A stale socket file nobody answers on is replaced; the parent directory is
    /// made (0755) if missing.
    ///
    /// # Errors
    ///
    /// `InUse` if a process answers on `path`, `NotASocket` if `path` is some other file,
    /// `Socket` naming the step that failed otherwise (the socket file is removed again).
    pub fn bind(path: &Path, mode: u32, handler: Arc<dyn Handler>) -> Result<Server, ServerError> {
        Server::bind_with(path, mode, handler, Limits::DEFAULT)
    }

    fn bind_with(
        path: &Path,
        mode: u32,
        handler: Arc<dyn Handler>,
        limits: Limits,
    ) -> Result<Server, ServerError> {
        let fail = |step, source: io::Error| ServerError::Socket {
            step,
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| fail("creating the directory of", e))?;
        }
        clear_stale(path)?;
        let listener = listen(path, mode)?;
        let setup = (|| {
            let metadata = std::fs::symlink_metadata(path).map_err(|e| fail("checking", e))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| fail("configuring", e))?;
            let (wake_read, wake_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| fail("making the wake-up pipe for", e.into()))?;
            let shared = Arc::new(Shared {
                handler,
                limits,
                table: Mutex::default(),
                left: Condvar::new(),
            });
            let accepting = Arc::clone(&shared);
            let accept = std::thread::Builder::new()
                .name("vxtap-http-accept".into())
                .spawn(move || accept_loop(&listener, &wake_read, &accepting))
                .map_err(|e| fail("starting the accept thread for", e))?;
            Ok(Server {
                path: path.to_owned(),
                file: (metadata.dev(), metadata.ino()),
                shared,
                wake: Some(wake_write),
                accept: Some(accept),
            })
        })();
        if setup.is_err() {
            remove_socket_file(path);
        }
        setup
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop();
        drop(self.wake.take());
        if let Some(accept) = self.accept.take() {
            if accept.join().is_err() {
                tracing::warn!(path = %self.path.display(), "the HTTP accept thread panicked");
            }
        }
        let busy = self.shared.wait_empty(DROP_WAIT);
        if busy > 0 {
            tracing::info!(
                path = %self.path.display(),
                busy,
                "HTTP connections still inside the handler at shutdown; they end on their own"
            );
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(metadata) if (metadata.dev(), metadata.ino()) == self.file => {
                remove_socket_file(&self.path);
            }
            Ok(_) => tracing::info!(
                path = %self.path.display(),
                "the socket file was replaced by another; leaving it"
            ),
            Err(e) => {
                tracing::info!(path = %self.path.display(), error = %e, "socket file gone before shutdown")
            }
        }
    }
}

fn remove_socket_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "removing the HTTP socket file");
    }
}

/// Removes a socket file at `path` that nobody answers on; refuses one that answers and any
/// other kind of file.
fn clear_stale(path: &Path) -> Result<(), ServerError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Socket {
                step: "checking",
                path: path.to_owned(),
                source,
            })
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_owned(),
        });
    }
    match answers(path) {
        Ok(true) => Err(ServerError::InUse {
            path: path.to_owned(),
        }),
        Ok(false) => {
            std::fs::remove_file(path).map_err(|source| ServerError::Socket {
                step: "removing the stale socket",
                path: path.to_owned(),
                source,
            })?;
            tracing::info!(path = %path.display(), "removed a stale socket nobody answered on");
            Ok(())
        }
        Err(source) => Err(ServerError::Socket {
            step: "checking who answers on",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether a process listens on the socket at `path`. The connection attempt does not
/// wait: a listener whose backlog is full (a hung daemon) still counts as one.
fn answers(path: &Path) -> io::Result<bool> {
    use rustix::io::Errno;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let address = SocketAddrUnix::new(path)?;
    loop {
        return match rustix::net::connect(&socket, &address) {
            Ok(()) | Err(Errno::AGAIN) => Ok(true),
            Err(Errno::CONNREFUSED) => Ok(false),
            Err(Errno::INTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// A listening socket at `path` with file mode `mode`, given before `listen`.
fn listen(path: &Path, mode: u32) -> Result<UnixListener, ServerError> {
    crate::unix_listener::listen(path, BACKLOG, |path| {
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode)).map_err(|e| ("chmod of", e))
    })
    .map_err(|(step, source)| ServerError::Socket {
        step,
        path: path.to_owned(),
        source,
    })
}

/// What the accept thread and the connection threads share.
struct Shared {
    handler: Arc<dyn Handler>,
    limits: Limits,
    table: Mutex<Table>,
    /// Signalled whenever a connection leaves the table.
    left: Condvar,
}

/// The open connections, so that dropping the server can end them all.
#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Connection>,
    /// The server is being dropped: no more connections.
    stopping: bool,
    /// Connections refused since the limit was reached, while it is.
    at_capacity: Option<u64>,
}

struct Connection {
    socket: Arc<UnixStream>,
    /// Only being answered 503.
    refusing: bool,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves or refuses a new connection on a thread of its own.
    fn admit(self: &Arc<Shared>, stream: UnixStream) {
        let mut table = self.table();
        if table.stopping {
            return;
        }
        let refusing = table.open.values().filter(|c| c.refusing).count();
        let serving = table.open.len() - refusing;
        let refuse = serving >= self.limits.connections;
        if refuse {
            let refused = table.at_capacity.get_or_insert_with(|| {
                tracing::warn!(
                    connections = self.limits.connections,
                    "HTTP socket: connection limit reached; answering 503 until some close"
                );
                0
            });
            *refused += 1;
            if refusing >= MAX_REFUSING {
                // Closed unanswered: a thread per refusal must stay bounded too.
                return;
            }
        } else if let Some(refused) = table.at_capacity.take() {
            tracing::info!(refused, "HTTP socket: below the connection limit again");
        }
        let socket = Arc::new(stream);
        let id = table.next;
        table.next += 1;
        table.open.insert(
            id,
            Connection {
                socket: Arc::clone(&socket),
                refusing: refuse,
            },
        );
        drop(table);
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("vxtap-http".into())
            .spawn(move || {
                let leave = Leave { shared, id };
                let shared = &leave.shared;
                if refuse {
                    connection::answer_busy(&socket, &shared.limits);
                } else {
                    connection::serve(&socket, shared.handler.as_ref(), &shared.limits);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread for an HTTP connection");
            self.remove(id);
        }
    }

    fn remove(&self, id: u64) {
        self.table().open.remove(&id);
        self.left.notify_all();
    }

    /// Admits no more connections and shuts every open one down: blocked reads see the
    /// end, blocked writes fail.
    fn stop(&self) {
        let mut table = self.table();
        table.stopping = true;
        for connection in table.open.values() {
            if let Err(e) = connection.socket.shutdown(Shutdown::Both) {
                // ENOTCONN: the client left first; the thread ends on its own.
                tracing::debug!(error = %e, "shutting an HTTP connection down");
            }
        }
    }

    /// Waits until every connection has left the table, at most `limit`; returns how many
    /// are still in it.
    fn wait_empty(&self, limit: Duration) -> usize {
        let (table, _) = self
            .left
            .wait_timeout_while(self.table(), limit, |t| !t.open.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        table.open.len()
    }
}

/// Takes a connection out of the table when its thread ends, however it ends.
struct Leave {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.shared.remove(self.id);
    }
}

/// Accepts connections until `wake` hangs up or becomes readable.
fn accept_loop(listener: &UnixListener, wake: &OwnedFd, shared: &Arc<Shared>) {
    use rustix::event::{PollFd, PollFlags};
    let mut failing = false;
    loop {
        let mut fds = [
            PollFd::new(listener, PollFlags::IN),
            PollFd::new(wake, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for HTTP connections");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        match listener.accept() {
            // Linux does not pass the listener's O_NONBLOCK on to accepted sockets.
            Ok((stream, _)) => {
                if failing {
                    tracing::info!("accepting HTTP connections again");
                    failing = false;
                }
                shared.admit(stream);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Out of fds, say: the listener stays readable, so rest instead of spinning.
                if failing {
                    tracing::debug!(error = %e, "accepting an HTTP connection");
                } else {
                    tracing::warn!(error = %e, "accepting an HTTP connection; retrying");
                    failing = true;
                }
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{wire, UnixClient};
    use std::io::{BufReader, Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// A bound on any wait in these tests: far above what each needs.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// `docker network create` as Go's client sends it: `Content-Length`.
    const GO_WITH_LENGTH: &[u8] = include_bytes!("testdata/go-network-create-length.http");
    /// `docker load` from a pipe, same client: a chunked body.
    const GO_CHUNKED: &[u8] = include_bytes!("testdata/go-image-load-chunked.http");
    /// The CLI's version probe: `HEAD`.
    const GO_HEAD: &[u8] = include_bytes!("testdata/go-head-ping.http");

    /// Answers what it was asked, as JSON, except on a few paths that misbehave on purpose.
    #[derive(Default)]
    struct Echo {
        calls: AtomicUsize,
    }

    impl Handler for Echo {
        fn handle(&self, request: &Request) -> Response {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match request.path.as_str() {
                "/panic" => panic!("a handler bug, on purpose"),
                "/status-1" => Response {
                    status: 1,
                    body: Vec::new(),
                },
                "/nothing" => Response {
                    status: 204,
                    body: b"dropped".to_vec(),
                },
                _ => Response {
                    status: 200,
                    body: serde_json::json!({
                        "method": request.method,
                        "path": request.path,
                        "body": String::from_utf8_lossy(&request.body),
                    })
                    .to_string()
                    .into_bytes(),
                },
            }
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        echo: Arc<Echo>,
        server: Server,
    }

    fn start(limits: Limits) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let echo = Arc::new(Echo::default());
        let path = dir.path().join("plugin.sock");
        let server = Server::bind_with(&path, 0o660, echo.clone(), limits).unwrap();
        Fixture { dir, echo, server }
    }

    fn connect(server: &Server) -> UnixStream {
        let stream = UnixStream::connect(server.path()).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// One answer's status and body. The body is read by its framing, so what follows it
    /// on the connection stays for the next answer.
    fn answer(reader: &mut BufReader<&UnixStream>) -> (u16, Vec<u8>) {
        let head = wire::read_response_head(reader).unwrap();
        let body = wire::read_body(reader, head.framing, 16 * 1024 * 1024).unwrap();
        (head.status, body)
    }

    fn json(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).unwrap()
    }

    /// Whether the server has ended the connection: the next read sees the end.
    fn ended(reader: &mut BufReader<&UnixStream>) -> bool {
        let mut rest = Vec::new();
        match reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            // The server closed with our unread bytes in its buffer.
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    #[test]
    fn keeps_a_connection_alive_for_several_requests() {
        let fixture = start(Limits::DEFAULT);
        let stream = connect(&fixture.server);
        let mut reader = BufReader::new(&stream);

        (&stream).write_all(GO_WITH_LENGTH).unwrap();
        let (status, body) = answer(&mut reader);
        assert_eq!(status, 200);
        let echoed = json(&body);
        assert_eq!(echoed["path"], "/v1.41/networks/create");
        assert_eq!(
            json(echoed["body"].as_str().unwrap().as_bytes())["Name"],
            "demo"
        );

        (&stream).write_all(GO_CHUNKED).unwrap();
        let (status, body) = answer(&mut reader);
        assert_eq!(
            (status, json(&body)["body"].clone()),
            (200, "not a tar".into())
        );

        // HEAD: a length, no body; the next answer must parse right after the head.
        (&stream).write_all(GO_HEAD).unwrap();
        let head = wire::read_response_head(&mut reader).unwrap();
        assert_eq!(head.status, 200);
        assert!(matches!(head.framing, wire::Framing::Length(n) if n > 0));

        // Two requests in one write, as a pipelining client sends them.
        let pipelined = b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n\
            POST /NetworkDriver.GetCapabilities HTTP/1.1\r\nHost: plugin\r\nContent-Length: 2\r\n\r\n{}";
        (&stream).write_all(pipelined).unwrap();
        let first = answer(&mut reader);
        let second = answer(&mut reader);
        assert_eq!(json(&first.1)["path"], "/Plugin.Activate");
        assert_eq!(json(&second.1)["path"], "/NetworkDriver.GetCapabilities");
        assert_eq!(json(&second.1)["body"], "{}");

        // 204 goes without a length or a body, and the connection goes on.
        (&stream)
            .write_all(b"DELETE /nothing HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(answer(&mut reader), (204, Vec::new()));
        assert_eq!(json(&answer(&mut reader).1)["path"], "/after");
        assert_eq!(fixture.echo.calls.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_connection() {
        let fixture = start(Limits::DEFAULT);
        for request in [
            &b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            b"GET /a HTTP/1.0\r\n\r\n",
        ] {
            let stream = connect(&fixture.server);
            let mut reader = BufReader::new(&stream);
            (&stream).write_all(request).unwrap();
            assert_eq!(answer(&mut reader).0, 200);
            assert!(ended(&mut reader), "{:?}", String::from_utf8_lossy(request));
        }
    }

    #[test]
    fn answers_100_continue_or_the_refusal_instead() {
        let fixture = start(Limits::DEFAULT);
        let stream = connect(&fixture.server);
        let mut reader = BufReader::new(&stream);
        (&stream)
            .write_all(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .unwrap();
        let interim = wire::read_response_head(&mut reader).unwrap();
        assert_eq!(interim.status, 100);
        (&stream).write_all(b"{}").unwrap();
        assert_eq!(answer(&mut reader).0, 200);

        let too_big = format!(
            "POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        (&stream).write_all(too_big.as_bytes()).unwrap();
        assert_eq!(answer(&mut reader).0, 413);
        assert!(ended(&mut reader));
        assert_eq!(fixture.echo.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_connection_over_the_limit_gets_503() {
        let fixture = start(Limits::DEFAULT);
        let request = b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let open: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let stream = connect(&fixture.server);
                (&stream).write_all(request).unwrap();
                assert_eq!(answer(&mut BufReader::new(&stream)).0, 200);
                stream
            })
            .collect();
        let extra = connect(&fixture.server);
        (&extra).write_all(request).unwrap();
        let mut reader = BufReader::new(&extra);
        let (status, body) = answer(&mut reader);
        assert_eq!(status, 503);
        assert!(json(&body)["Err"].as_str().unwrap().contains("busy"));
        assert!(ended(&mut reader));

        // One leaves; its place is taken by the next (once its thread has seen it go).
        drop(open);
        let started = Instant::now();
        loop {
            let stream = connect(&fixture.server);
            (&stream).write_all(request).unwrap();
            match answer(&mut BufReader::new(&stream)).0 {
                200 => break,
                status => assert_eq!(status, 503),
            }
            assert!(
                started.elapsed() < PATIENCE,
                "still refused after the others left"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            fixture.echo.calls.load(Ordering::SeqCst),
            MAX_CONNECTIONS + 1
        );
    }

    #[test]
    fn a_body_over_1_mib_gets_413() {
        let fixture = start(Limits::DEFAULT);
        let client =
            UnixClient::from_url(fixture.server.path().to_str().unwrap(), PATIENCE).unwrap();
        // The server answers before it has read the body, and closes; the client reads
        // that answer rather than report its write failing.
        let reply = client.post_json("/x", &vec![b' '; MAX_BODY + 1]).unwrap();
        assert_eq!(reply.status, 413);
        assert!(json(&reply.body)["Err"].as_str().unwrap().contains("1 MiB"));
        let reply = client.post_json("/x", &vec![b' '; MAX_BODY]).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(
            json(&reply.body)["body"].as_str().map(str::len),
            Some(MAX_BODY)
        );

        // Chunked, so no length says it up front: cut off one byte past the cap.
        let stream = connect(&fixture.server);
        let chunk = vec![b'x'; 64 * 1024];
        let writer = std::thread::spawn({
            let stream = stream.try_clone().unwrap();
            move || -> io::Result<()> {
                (&stream).write_all(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")?;
                for _ in 0..=MAX_BODY / chunk.len() {
                    (&stream).write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                    (&stream).write_all(&chunk)?;
                    (&stream).write_all(b"\r\n")?;
                }
                (&stream).write_all(b"0\r\n\r\n")
            }
        });
        let mut reader = BufReader::new(&stream);
        assert_eq!(answer(&mut reader).0, 413);
        assert!(ended(&mut reader));
        // The writer may or may not have finished before the server closed.
        let _ = writer.join().unwrap();
        assert_eq!(fixture.echo.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn malformed_requests_get_400_and_the_connection_ends() {
        let fixture = start(Limits::DEFAULT);
        let big_head = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &vec![b'a'; 70 * 1024]].concat();
        for (bad, status) in [
            (&b"GARBAGE\r\n\r\n"[..], 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
            ),
            (&big_head, 431),
        ] {
            let stream = connect(&fixture.server);
            (&stream).write_all(bad).unwrap();
            let mut reader = BufReader::new(&stream);
            let (got, body) = answer(&mut reader);
            assert_eq!(got, status, "{:?}", String::from_utf8_lossy(&bad[..20]));
            assert!(json(&body)["Err"].is_string());
            assert!(ended(&mut reader));
        }
        assert_eq!(fixture.echo.calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_handler_panic_or_impossible_status_is_a_500_and_service_goes_on() {
        let fixture = start(Limits::DEFAULT);
        let stream = connect(&fixture.server);
        let mut reader = BufReader::new(&stream);
        (&stream)
            .write_all(b"POST /panic HTTP/1.1\r\n\r\nPOST /status-1 HTTP/1.1\r\n\r\nPOST /fine HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(answer(&mut reader).0, 500);
        assert_eq!(answer(&mut reader).0, 500);
        assert_eq!(answer(&mut reader).0, 200);
    }

    #[test]
    fn a_stalled_client_blocks_nobody_and_runs_out_of_time() {
        let fixture = start(Limits {
            request: Duration::from_millis(300),
            idle: Duration::from_secs(1),
            ..Limits::DEFAULT
        });
        // Half a body, then nothing.
        let stalled = connect(&fixture.server);
        (&stalled)
            .write_all(b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        // Connected, silent: closed when idle, unanswered.
        let silent = connect(&fixture.server);
        let client =
            UnixClient::from_url(fixture.server.path().to_str().unwrap(), PATIENCE).unwrap();
        for _ in 0..3 {
            assert_eq!(client.get("/other").unwrap().status, 200);
        }
        let mut reader = BufReader::new(&stalled);
        let (status, body) = answer(&mut reader);
        assert_eq!(status, 408);
        assert!(json(&body)["Err"].as_str().unwrap().contains("in time"));
        assert!(ended(&mut reader));
        assert!(ended(&mut BufReader::new(&silent)));
        assert_eq!(fixture.echo.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn dropping_the_server_removes_the_socket_and_ends_every_connection() {
        let fixture = start(Limits::DEFAULT);
        let path = fixture.server.path().to_owned();
        let idle = connect(&fixture.server);
        (&idle).write_all(b"GET /a HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(answer(&mut BufReader::new(&idle)).0, 200);
        let midway = connect(&fixture.server);
        (&midway)
            .write_all(b"POST /b HTTP/1.1\r\nContent-Le")
            .unwrap();
        let echo = fixture.echo;
        // The handler is held by the test, the server, and each connection thread through
        // the server's shared state: once only the test holds it, every thread has ended.
        drop(fixture.server);
        assert!(!path.exists());
        assert!(UnixStream::connect(&path).is_err());
        assert!(ended(&mut BufReader::new(&idle)));
        assert!(ended(&mut BufReader::new(&midway)));
        let started = Instant::now();
        while Arc::strong_count(&echo) > 1 {
            assert!(
                started.elapsed() < PATIENCE,
                "connection threads outlived the server"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(fixture.dir);
    }

    #[test]
    fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
        let fixture = start(Limits::DEFAULT);
        let path = fixture.server.path().to_owned();
        let second = Server::bind(&path, 0o660, Arc::new(Echo::default()));
        assert!(
            matches!(second, Err(ServerError::InUse { .. })),
            "{second:?}"
        );
        // The refusal left the live one alone.
        let client = UnixClient::from_url(path.to_str().unwrap(), PATIENCE).unwrap();
        assert_eq!(client.get("/still").unwrap().status, 200);

        let stale = fixture.dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let echo = Arc::new(Echo::default());
        let replaced = Server::bind(&stale, 0o600, echo.clone()).unwrap();
        let client = UnixClient::from_url(stale.to_str().unwrap(), PATIENCE).unwrap();
        assert_eq!(client.get("/new").unwrap().status, 200);
        assert_eq!(echo.calls.load(Ordering::SeqCst), 1);
        let mode = std::fs::metadata(&stale).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(replaced);

        let file = fixture.dir.path().join("file");
        std::fs::write(&file, "keep me").unwrap();
        let refused = Server::bind(&file, 0o660, Arc::new(Echo::default()));
        assert!(
            matches!(refused, Err(ServerError::NotASocket { .. })),
            "{refused:?}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[test]
    fn bind_makes_the_directory_and_gives_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/docker/plugins/vxtap.sock");
        let server = Server::bind(&path, 0o660, Arc::new(Echo::default())).unwrap();
        assert_eq!(server.path(), path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        for made in ["run", "run/docker", "run/docker/plugins"] {
            let metadata = std::fs::metadata(dir.path().join(made)).unwrap();
            assert!(metadata.is_dir());
            assert_eq!(
                metadata.permissions().mode() & 0o022,
                0,
                "{made} writable by others"
            );
        }
        let client = UnixClient::from_url(&format!("unix://{}", path.display()), PATIENCE).unwrap();
        assert_eq!(
            client.post_json("/Plugin.Activate", b"").unwrap().status,
            200
        );
    }
}

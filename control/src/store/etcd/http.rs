//! A small HTTP/1.1 client for etcd's gateway: `POST` a JSON body, read a JSON answer or a
//! stream of them, over `std::net::TcpStream`, in clear or through rustls (`etcds://`).
//!
//! Why hand-written rather than `ureq`: the watch needs a response body that stays open for
//! hours, is read by a thread with no timeout, and can be torn down from another thread
//! (`shutdown` on a clone of the socket) when the watch is dropped; the session needs short
//! connect and request timeouts and TCP keep-alive so a vanished peer is noticed. That is
//! direct with a `TcpStream` we own, and the protocol subset etcd uses is small: answers
//! framed by `Content-Length`, chunked encoding (with trailers, which the gateway sends
//! after errors) or the end of the connection.
//!
//! # Persistent connections
//!
//! Unary requests ([`Client::post`]) reuse connections: after an answer has been read to
//! its end, its connection goes back to a small pool of idle ones (at most [`MAX_IDLE`]
//! per client, each remembering its endpoint), unless the server said `Connection: close`,
//! framed the answer by closing the connection, or sent bytes beyond it. TLS connections
//! are pooled the same way (the handshake is the expensive part). A pooled connection is
//! checked before reuse with a non-blocking `peek`: readable means the server closed it (or
//! sent something unasked for), and it is dropped. Streams ([`Client::post_streaming`],
//! the watch) always get a connection of their own, never pooled.
//!
//! The peek cannot close the race with a server that closes an idle connection just as a
//! request is written. When a request on a *reused* connection fails before a single byte
//! of the answer arrived (end of file, reset or broken pipe; not a timeout, which says the
//! server is there but slow), the idle connections to that endpoint are dropped and the
//! request is sent once more on a fresh connection, but only when that cannot apply it
//! twice:
//! - the request had not been written whole when writing failed: a server cannot act on a
//!   request whose `Content-Length` body it has not received;
//! - or the caller says it is [`Replay::Safe`]: a read (range), or a call whose repetition
//!   is harmless (a lease keep-alive; a lease grant, whose spare lease expires unused).
//!
//! A write (put, txn, delete, revoke) that was sent whole is never sent again: the server
//! may have applied it before it closed, and the caller gets the error as before.
//!
//! Endpoints are tried in order, starting with the last one that answered; the next one is
//! tried only when a connection cannot be made, since a request that was sent may have been
//! applied. The message syntax and framing are [`crate::http::wire`]'s, shared with the
//! Docker transport and tested there on captured bytes; malformed framing is an `io::Error`
//! of kind `InvalidData`, reported as [`HttpError::Malformed`].
//!
//! With TLS, each connection wraps the `TcpStream` in a `rustls::StreamOwned` and completes
//! the handshake before the request is written; the raw socket stays reachable through a
//! clone, so a stream can still be shut down from another thread. Failures that rustls
//! reports (a certificate refused either way, a peer that does not speak TLS) are
//! [`HttpError::Tls`], not connection trouble. A request may carry an `Authorization`
//! header (etcd's auth token). This module knows nothing of etcd's messages.
//!
//! The client counts the connections it opened and the bytes it read (heads, bodies and
//! their chunk framing, streams included), for benchmarks and tests.

use crate::http::wire::{
    read_body, read_response_head, too_large, Body, Framing, TooLarge, NOTHING_ANSWERED,
};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The largest body we buffer by default: far above any answer vxtap provokes, low enough
/// that a broken peer cannot exhaust memory. Listings page to stay under it.
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;

/// The most idle connections a client keeps.
pub(crate) const MAX_IDLE: usize = 4;

/// Whether a request may be sent a second time after a reused connection failed before
/// any byte of the answer (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// A read, or a call whose repetition is harmless (lease keep-alive, lease grant).
    Safe,
    /// A write: sent again only if writing it failed before it was sent whole.
    OnlyIfUnsent,
}
/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// No endpoint accepted a connection: nothing was sent.
    #[error("cannot connect: {reasons}")]
    Connect {
        /// One `endpoint: reason` per endpoint tried.
        reasons: String,
    },
    /// The connection failed after the request started (reset, closed, timed out).
    #[error("{endpoint}: {source}")]
    Io {
        /// The endpoint talked to.
        endpoint: String,
        /// What happened.
        source: io::Error,
    },
    /// The answer is not HTTP/1.1 as we know it.
    #[error("{endpoint}: malformed HTTP answer: {reason}")]
    Malformed {
        /// The endpoint talked to.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// TLS failed: a certificate was refused (ours or the server's), or the peer does not
    /// speak TLS.
    #[error("{endpoint}: TLS handshake failed: {source}")]
    Tls {
        /// The endpoint talked to.
        endpoint: String,
        /// What rustls reported.
        source: rustls::Error,
        /// Whether we offered a client certificate.
        client_cert: bool,
    },
    /// The answer's body is longer than the cap the caller set.
    #[error("{endpoint}: the answer is larger than {limit} bytes")]
    TooLarge {
        /// The endpoint talked to.
        endpoint: String,
        /// The cap, in bytes.
        limit: usize,
    },
    /// The TLS peer reset the connection right after the handshake, before answering, and
    /// said nothing readable: in TLS 1.3 that is how a server refusing the client's
    /// certificate looks when its alert is lost with the reset.
    #[error("{endpoint}: TLS peer closed the connection right after the handshake: {source}")]
    TlsClosed {
        /// The endpoint talked to.
        endpoint: String,
        /// The reset or broken pipe.
        source: io::Error,
    },
    /// A plain-HTTP request reached an endpoint that serves HTTPS (Go's servers, etcd's
    /// included, answer it with a 400 saying so).
    #[error("{endpoint}: the endpoint speaks TLS")]
    TlsExpected {
        /// The endpoint talked to.
        endpoint: String,
    },
}

/// The rustls error inside an I/O error, if rustls produced it.
fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

impl HttpError {
    fn from_io(endpoint: &str, source: io::Error) -> HttpError {
        if let Some(tls) = rustls_error(&source) {
            return HttpError::Tls {
                endpoint: endpoint.to_owned(),
                source: tls.clone(),
                client_cert: false,
            };
        }
        if source.kind() == io::ErrorKind::InvalidData {
            HttpError::Malformed {
                endpoint: endpoint.to_owned(),
                reason: source.to_string(),
            }
        } else {
            HttpError::Io {
                endpoint: endpoint.to_owned(),
                source,
            }
        }
    }
}

/// Timeouts of a [`Client`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Per endpoint address, for the TCP handshake.
    pub connect: Duration,
    /// For each read or write of a request and its answer.
    pub request: Duration,
}

/// A complete answer.
#[derive(Debug)]
pub(crate) struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// An answer whose body is read as it arrives.
pub(crate) struct Stream {
    /// The HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Body<BufReader<Connection>>,
    /// The raw socket (a clone, under TLS too): to change its timeouts, or to shut it down
    /// from another thread.
    pub socket: TcpStream,
}

/// The transport of a [`Connection`].
enum Transport {
    /// `etcd://`.
    Plain(TcpStream),
    /// `etcds://`, handshake done.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// One connection to an endpoint: plain, or TLS over the same kind of socket. Reading it
/// adds to its client's count of bytes received.
pub(crate) struct Connection {
    transport: Transport,
    /// The client's count of bytes received.
    received: Arc<AtomicU64>,
}

impl Connection {
    /// The TCP socket under it.
    fn socket(&self) -> &TcpStream {
        match &self.transport {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => tls.get_ref(),
        }
    }

    /// Whether an idle connection can carry another request: nothing is waiting to be
    /// read on it. Readable means the server closed it (end of file or a reset), or sent
    /// something nobody asked for (a TLS alert announcing the close, say): either way it is
    /// done.
    fn is_idle_and_open(&self) -> bool {
        let socket = self.socket();
        if socket.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let open =
            matches!(socket.peek(&mut byte), Err(err) if err.kind() == io::ErrorKind::WouldBlock);
        socket.set_nonblocking(false).is_ok() && open
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = match &mut self.transport {
            Transport::Plain(socket) => socket.read(buf)?,
            Transport::Tls(tls) => tls.read(buf)?,
        };
        self.received.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.transport {
            Transport::Plain(socket) => socket.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Plain(socket) => socket.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

/// An idle connection in the pool, and the index of its endpoint.
struct Idle {
    endpoint: usize,
    connection: Connection,
}

/// Where an exchange on a connection failed, which decides whether it may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Writing the request failed: it was not sent whole.
    Writing,
    /// The connection ended (end of file, reset) before the first byte of the answer.
    NothingAnswered,
    /// Later, or a timeout: the server may have acted on the request.
    Answering,
}

/// A failed exchange: the error and where it happened.
struct Failure {
    error: HttpError,
    stage: Stage,
}

/// Talks to a list of `HOST:PORT` endpoints.
pub(crate) struct Client {
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    timeouts: Timeouts,
    /// TLS settings for `etcds://`; `None` for plain HTTP.
    tls: Option<Arc<ClientConfig>>,
    /// Connections that answered in full and may carry another request, oldest first.
    idle: Mutex<Vec<Idle>>,
    /// Connections opened (TCP connects that succeeded, TLS handshakes included).
    opened: AtomicU64,
    /// Bytes read from every connection (heads, bodies, streams).
    received: Arc<AtomicU64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .field("preferred", &self.preferred)
            .field("tls", &self.tls.is_some())
            .field("opened", &self.opened)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `endpoints` (at least one, each `HOST:PORT`), over TLS if `tls` is set.
    pub(crate) fn new(
        endpoints: Vec<String>,
        timeouts: Timeouts,
        tls: Option<Arc<ClientConfig>>,
    ) -> Client {
        Client {
            endpoints,
            preferred: AtomicUsize::new(0),
            timeouts,
            tls,
            idle: Mutex::new(Vec::new()),
            opened: AtomicU64::new(0),
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many connections this client opened so far.
    pub(crate) fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// How many bytes this client read so far, over every connection.
    pub(crate) fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// `POST path` with a JSON `body` (and `Authorization: token` if given); the whole
    /// answer, whatever its status, its body at most [`MAX_BODY`].
    pub(crate) fn post(
        &self,
        path: &str,
        body: &[u8],
        token: Option<&str>,
        replay: Replay,
    ) -> Result<Response, HttpError> {
        self.post_capped(path, body, token, replay, MAX_BODY)
    }

    /// [`post`](Self::post) with a body of at most `max_body` bytes: a longer one is
    /// [`HttpError::TooLarge`] (and its connection is not reused).
    pub(crate) fn post_capped(
        &self,
        path: &str,
        body: &[u8],
        token: Option<&str>,
        replay: Replay,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        let (connection, index, reused) = match self.take_idle() {
            Some((connection, index)) => (connection, index, true),
            None => {
                let (connection, index) = self.connect()?;
                (connection, index, false)
            }
        };
        let failure = match self.exchange(connection, index, path, body, token, max_body) {
            Ok(response) => return Ok(response),
            Err(failure) => failure,
        };
        let retry = match failure.stage {
            Stage::Writing => true,
            Stage::NothingAnswered => replay == Replay::Safe,
            Stage::Answering => false,
        };
        if !(reused && retry) {
            return Err(failure.error);
        }
        // The server closed a connection we had kept: the others to it are likely closed
        // too (a restart, an idle timeout).
        tracing::debug!(endpoint = %self.endpoints[index], error = %failure.error,
            "a kept connection failed before the answer; sending again on a new one");
        self.drop_idle(index);
        let (connection, index) = self.connect()?;
        self.exchange(connection, index, path, body, token, max_body)
            .map_err(|failure| failure.error)
    }

    /// Writes one request on `connection` (to endpoint `index`) and reads its answer; puts
    /// the connection back in the pool if it can carry another.
    fn exchange(
        &self,
        mut connection: Connection,
        index: usize,
        path: &str,
        body: &[u8],
        token: Option<&str>,
        max_body: usize,
    ) -> Result<Response, Failure> {
        let endpoint = self.endpoints[index].as_str();
        if let Err(error) = self.write_request(&mut connection, endpoint, path, body, token, false)
        {
            return Err(Failure {
                error,
                stage: Stage::Writing,
            });
        }
        let mut reader = BufReader::new(connection);
        let nothing = |err: io::Error| Failure {
            stage: if is_closed(&err) {
                Stage::NothingAnswered
            } else {
                Stage::Answering
            },
            error: self.read_error(endpoint, err),
        };
        match reader.fill_buf() {
            Ok([]) => {
                return Err(nothing(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    NOTHING_ANSWERED,
                )))
            }
            Ok(_) => {}
            Err(err) => return Err(nothing(err)),
        }
        let answered = |err: io::Error| Failure {
            stage: Stage::Answering,
            error: match too_large(&err) {
                Some(TooLarge::Body { limit }) => HttpError::TooLarge {
                    endpoint: endpoint.to_owned(),
                    limit,
                },
                _ => self.read_error(endpoint, err),
            },
        };
        let head = read_response_head(&mut reader).map_err(answered)?;
        let body = read_body(&mut reader, head.framing, max_body).map_err(answered)?;
        let response = Response {
            status: head.status,
            body,
        };
        if self.tls.is_none() && says_tls_expected(&response) {
            return Err(Failure {
                error: HttpError::TlsExpected {
                    endpoint: endpoint.to_owned(),
                },
                stage: Stage::Answering,
            });
        }
        let reusable =
            !head.close && head.framing != Framing::UntilClose && reader.buffer().is_empty();
        if reusable {
            self.put_idle(index, reader.into_inner());
        }
        Ok(response)
    }

    /// `POST path` with a JSON `body` (and `Authorization: token` if given); the status and
    /// the body as a reader, for answers that stream. Reads time out after the request
    /// timeout until the caller changes that through [`Stream::socket`]. The stream has a
    /// connection of its own, closed with it.
    pub(crate) fn post_streaming(
        &self,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<Stream, HttpError> {
        let (mut connection, index) = self.connect()?;
        let endpoint = self.endpoints[index].as_str();
        self.write_request(&mut connection, endpoint, path, body, token, true)?;
        let result = (|| -> io::Result<Stream> {
            let clone = connection.socket().try_clone()?;
            let mut reader = BufReader::new(connection);
            let head = read_response_head(&mut reader)?;
            Ok(Stream {
                status: head.status,
                body: Body::new(reader, head.framing),
                socket: clone,
            })
        })();
        result.map_err(|err| self.read_error(endpoint, err))
    }

    /// The error of a failed read of an answer. etcd 3.4 closes a plain-HTTP connection to
    /// its TLS port without a word; a plain connection closed before any answer says that
    /// this may be why (it may also be an etcd shutting down, so it stays a connection
    /// failure).
    fn read_error(&self, endpoint: &str, err: io::Error) -> HttpError {
        if self.tls.is_none()
            && err.kind() == io::ErrorKind::UnexpectedEof
            && err.to_string() == NOTHING_ANSWERED
        {
            return HttpError::Io {
                endpoint: endpoint.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{NOTHING_ANSWERED} (if it serves TLS, use etcds://)"),
                ),
            };
        }
        self.with_client_cert(HttpError::from_io(endpoint, err))
    }

    /// Writes the request (head and body in one buffer, so one write for a small request).
    /// `close` asks the server to close the connection after answering (streams).
    fn write_request(
        &self,
        connection: &mut Connection,
        endpoint: &str,
        path: &str,
        body: &[u8],
        token: Option<&str>,
        close: bool,
    ) -> Result<(), HttpError> {
        let authorization = token
            .map(|token| format!("Authorization: {token}\r\n"))
            .unwrap_or_default();
        let connection_field = if close { "Connection: close\r\n" } else { "" };
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\n{authorization}Content-Length: {}\r\n\
             {connection_field}\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let mut write = || -> io::Result<()> {
            connection.write_all(&request)?;
            connection.flush()
        };
        if let Err(err) = write() {
            let err = refusal_behind(connection).unwrap_or(err);
            if self.tls.is_some() && is_reset(&err) {
                return Err(HttpError::TlsClosed {
                    endpoint: endpoint.to_owned(),
                    source: err,
                });
            }
            return Err(self.with_client_cert(HttpError::from_io(endpoint, err)));
        }
        Ok(())
    }

    /// An idle connection to the preferred endpoint that is still open, newest first;
    /// closed ones met on the way are dropped.
    fn take_idle(&self) -> Option<(Connection, usize)> {
        let preferred = self.preferred.load(Ordering::Relaxed);
        loop {
            let idle = {
                let mut pool = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let position = pool.iter().rposition(|idle| idle.endpoint == preferred)?;
                pool.remove(position)
            };
            if idle.connection.is_idle_and_open() {
                return Some((idle.connection, idle.endpoint));
            }
        }
    }

    /// Keeps `connection` (to endpoint `index`) for another request, dropping the oldest
    /// idle one if the pool is full.
    fn put_idle(&self, index: usize, connection: Connection) {
        let mut pool = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() >= MAX_IDLE {
            pool.remove(0);
        }
        pool.push(Idle {
            endpoint: index,
            connection,
        });
    }

    /// Drops the idle connections to endpoint `index`.
    fn drop_idle(&self, index: usize) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|idle| idle.endpoint != index);
    }

    /// A new connection to the first endpoint that accepts one, starting with the preferred
    /// one, and that endpoint's index. A TLS handshake refused by every endpoint is
    /// reported as such (the first one), not as a connection failure.
    fn connect(&self) -> Result<(Connection, usize), HttpError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut reasons = Vec::new();
        let mut refused = None;
        for offset in 0..self.endpoints.len() {
            let index = (first + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            let attempt = connect_one(endpoint, self.timeouts).and_then(|socket| match &self.tls {
                None => Ok(Transport::Plain(socket)),
                Some(config) => handshake(endpoint, socket, config),
            });
            match attempt {
                Ok(transport) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    let connection = Connection {
                        transport,
                        received: Arc::clone(&self.received),
                    };
                    return Ok((connection, index));
                }
                Err(err) => {
                    if let (None, Some(tls)) = (&refused, rustls_error(&err)) {
                        refused = Some(HttpError::Tls {
                            endpoint: endpoint.clone(),
                            source: tls.clone(),
                            client_cert: false,
                        });
                    }
                    reasons.push(format!("{endpoint}: {err}"));
                }
            }
        }
        Err(refused.map_or_else(
            || HttpError::Connect {
                reasons: reasons.join("; "),
            },
            |err| self.with_client_cert(err),
        ))
    }

    /// `err`, saying whether this client offers a client certificate if it is a TLS error.
    fn with_client_cert(&self, err: HttpError) -> HttpError {
        match err {
            HttpError::Tls {
                endpoint, source, ..
            } => HttpError::Tls {
                endpoint,
                source,
                client_cert: self
                    .tls
                    .as_ref()
                    .is_some_and(|config| config.client_auth_cert_resolver.has_certs()),
            },
            other => other,
        }
    }
}

/// Whether `err` says the peer closed the connection (end of file, reset, broken pipe).
fn is_closed(err: &io::Error) -> bool {
    is_reset(err) || err.kind() == io::ErrorKind::UnexpectedEof
}

/// A connection reset or broken pipe.
fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Why a TLS peer closed on us, if it said so. In TLS 1.3 the client's handshake ends
/// before the server has checked the client's certificate; a server that refuses it sends
/// an alert and closes, and the request written meanwhile fails with a broken pipe or a
/// reset while the alert waits unread in the socket. One read brings it out.
fn refusal_behind(connection: &mut Connection) -> Option<io::Error> {
    let Transport::Tls(tls) = &mut connection.transport else {
        return None;
    };
    let mut byte = [0u8; 1];
    match tls.read(&mut byte) {
        Err(err) if rustls_error(&err).is_some() => Some(err),
        _ => None,
    }
}

/// Whether a plain-HTTP answer is Go's "Client sent an HTTP request to an HTTPS server".
fn says_tls_expected(response: &Response) -> bool {
    response.status == 400
        && String::from_utf8_lossy(&response.body).contains("HTTP request to an HTTPS server")
}

/// Runs the TLS handshake on `socket` (bounded by its timeouts).
fn handshake(
    endpoint: &str,
    mut socket: TcpStream,
    config: &Arc<ClientConfig>,
) -> io::Result<Transport> {
    let name = super::tls::server_name(endpoint).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the host is not a valid TLS server name",
        )
    })?;
    let mut tls = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    while tls.is_handshaking() {
        tls.complete_io(&mut socket)?;
    }
    Ok(Transport::Tls(Box::new(StreamOwned::new(tls, socket))))
}

/// Connects to one `HOST:PORT`, trying each address it resolves to.
fn connect_one(endpoint: &str, timeouts: Timeouts) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for address in endpoint.to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, timeouts.connect) {
            Ok(socket) => {
                socket.set_nodelay(true)?;
                socket.set_read_timeout(Some(timeouts.request))?;
                socket.set_write_timeout(Some(timeouts.request))?;
                keep_alive(&socket)?;
                return Ok(socket);
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// TCP keep-alive, so a watch on a peer that vanished (powered off, partitioned) ends in an
/// error after about 11 s of silence instead of waiting forever.
fn keep_alive(socket: &TcpStream) -> io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(socket, true)?;
    sockopt::set_tcp_keepidle(socket, Duration::from_secs(5))?;
    sockopt::set_tcp_keepintvl(socket, Duration::from_secs(2))?;
    sockopt::set_tcp_keepcnt(socket, 3)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::{read_body, read_request_head};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    /// What the test server does with one request.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Action {
        /// Answers `200` with a length and keeps the connection.
        Answer,
        /// Answers with `Connection: close` and closes.
        AnswerAndClose,
        /// Answers without framing (the body ends with the connection) and closes.
        AnswerUntilClose,
        /// Answers, then closes at once, as an idle timeout would later.
        AnswerThenDrop,
        /// Reads the request and closes without a word.
        Drop,
    }

    const BODY: &[u8] = b"{\"ok\":true}";

    /// What the test server saw: each connection's request bodies, and how many bytes it
    /// wrote.
    type Seen = (Vec<Vec<Vec<u8>>>, u64);

    /// A local HTTP server handling `connections` connections one after the other, the
    /// `n`th request overall getting `script(n)`; its thread returns each connection's
    /// request bodies and how many bytes it wrote.
    fn serve(
        connections: usize,
        script: impl Fn(usize) -> Action + Send + 'static,
    ) -> (String, JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut written = 0u64;
            let mut requests = 0;
            for _ in 0..connections {
                let (socket, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(socket.try_clone().unwrap());
                let mut writer = socket;
                let mut bodies = Vec::new();
                // Until the client closes it.
                while let Ok(head) = read_request_head(&mut reader) {
                    bodies.push(read_body(&mut reader, head.framing, 1 << 20).unwrap());
                    let action = script(requests);
                    requests += 1;
                    let answer = match action {
                        Action::Answer | Action::AnswerThenDrop => {
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", BODY.len())
                        }
                        Action::AnswerAndClose => format!(
                            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                            BODY.len()
                        ),
                        Action::AnswerUntilClose => "HTTP/1.1 200 OK\r\n\r\n".to_owned(),
                        Action::Drop => break,
                    };
                    let mut bytes = answer.into_bytes();
                    bytes.extend_from_slice(BODY);
                    writer.write_all(&bytes).unwrap();
                    written += bytes.len() as u64;
                    if action != Action::Answer {
                        break;
                    }
                }
                seen.push(bodies);
            }
            (seen, written)
        });
        (endpoint, server)
    }

    fn client(endpoint: String) -> Client {
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(5),
        };
        Client::new(vec![endpoint], timeouts, None)
    }

    fn post(client: &Client, body: &str, replay: Replay) -> Result<Response, HttpError> {
        client.post("/v3/kv/range", body.as_bytes(), None, replay)
    }

    /// Waits until the server's close of the idle connection has reached the client.
    fn until_closed(client: &Client) {
        let pool = client.idle.lock().unwrap();
        let socket = pool[0].connection.socket();
        let mut byte = [0u8; 1];
        assert_eq!(socket.peek(&mut byte).unwrap(), 0, "the server closed it");
    }

    #[test]
    fn requests_share_one_connection() {
        let (endpoint, server) = serve(1, |_| Action::Answer);
        let client = client(endpoint);
        for n in 0..10 {
            let response = post(&client, &format!("{{\"n\":{n}}}"), Replay::OnlyIfUnsent).unwrap();
            assert_eq!((response.status, response.body.as_slice()), (200, BODY));
        }
        assert_eq!(client.connections_opened(), 1);
        let received = client.bytes_received();
        drop(client);
        let (seen, written) = server.join().unwrap();
        assert_eq!(seen.len(), 1, "one connection accepted");
        assert_eq!(seen[0].len(), 10, "ten requests on it");
        assert_eq!(seen[0][9], b"{\"n\":9}");
        assert_eq!(received, written, "every byte the server wrote is counted");
    }

    #[test]
    fn answers_that_close_are_not_reused() {
        let (endpoint, server) = serve(3, |n| match n {
            0 => Action::AnswerAndClose,
            1 => Action::AnswerUntilClose,
            _ => Action::Answer,
        });
        let client = client(endpoint);
        for _ in 0..3 {
            let response = post(&client, "{}", Replay::OnlyIfUnsent).unwrap();
            assert_eq!(response.body, BODY);
        }
        assert_eq!(client.connections_opened(), 3);
        drop(client);
        let (seen, _) = server.join().unwrap();
        assert_eq!(seen.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
    }

    #[test]
    fn a_connection_the_server_closed_while_idle_is_not_used() {
        let (endpoint, server) = serve(2, |n| match n {
            0 => Action::AnswerThenDrop,
            _ => Action::Answer,
        });
        let client = client(endpoint);
        post(&client, "{}", Replay::OnlyIfUnsent).unwrap();
        until_closed(&client);
        // A write, which is never sent twice: the closed connection must be noticed
        // before the request goes out.
        let response = post(&client, "{\"second\":1}", Replay::OnlyIfUnsent).unwrap();
        assert_eq!(response.body, BODY);
        assert_eq!(client.connections_opened(), 2);
        drop(client);
        let (seen, _) = server.join().unwrap();
        assert_eq!(seen[1], [b"{\"second\":1}".to_vec()]);
    }

    #[test]
    fn a_kept_connection_closed_under_a_request_retries_only_what_is_safe() {
        // The server reads the second request on the kept connection and closes without
        // answering: the race the peek cannot see.
        let (endpoint, server) = serve(2, |n| match n {
            1 => Action::Drop,
            _ => Action::Answer,
        });
        let reader = client(endpoint);
        post(&reader, "{}", Replay::Safe).unwrap();
        let response = post(&reader, "{\"read\":1}", Replay::Safe).unwrap();
        assert_eq!(
            response.body, BODY,
            "a read is sent again on a new connection"
        );
        assert_eq!(reader.connections_opened(), 2);
        drop(reader);
        let (seen, _) = server.join().unwrap();
        assert_eq!(seen[0].len(), 2);
        assert_eq!(seen[1], [b"{\"read\":1}".to_vec()]);

        let (endpoint, server) = serve(1, |n| match n {
            1 => Action::Drop,
            _ => Action::Answer,
        });
        let writer = client(endpoint);
        post(&writer, "{}", Replay::OnlyIfUnsent).unwrap();
        match post(&writer, "{\"write\":1}", Replay::OnlyIfUnsent) {
            Err(HttpError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof, "{source}");
            }
            other => panic!("a write sent whole must not be sent again: {other:?}"),
        }
        assert_eq!(writer.connections_opened(), 1);
        drop(writer);
        let (seen, _) = server.join().unwrap();
        assert_eq!(seen, [vec![b"{}".to_vec(), b"{\"write\":1}".to_vec()]]);
    }

    #[test]
    fn bodies_over_the_cap_are_refused() {
        let (endpoint, server) = serve(2, |_| Action::Answer);
        let client = client(endpoint);
        match client.post_capped("/", b"{}", None, Replay::Safe, BODY.len() - 1) {
            Err(HttpError::TooLarge { limit, .. }) => assert_eq!(limit, BODY.len() - 1),
            other => panic!("{other:?}"),
        }
        let response = client
            .post_capped("/", b"{}", None, Replay::Safe, BODY.len())
            .unwrap();
        assert_eq!(response.body, BODY);
        assert_eq!(
            client.connections_opened(),
            2,
            "a refused answer is not reused"
        );
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn the_pool_is_bounded() {
        let (endpoint, server) = serve(1, |_| Action::Answer);
        let client = client(endpoint);
        post(&client, "{}", Replay::Safe).unwrap();
        let (connection, index) = client.take_idle().unwrap();
        for _ in 0..MAX_IDLE + 2 {
            let clone = Connection {
                transport: Transport::Plain(connection.socket().try_clone().unwrap()),
                received: Arc::clone(&client.received),
            };
            client.put_idle(index, clone);
        }
        assert_eq!(client.idle.lock().unwrap().len(), MAX_IDLE);
        drop(connection);
        drop(client);
        server.join().unwrap();
    }
}

//! A small HTTP/1.1 client for etcd's gateway: `POST` a JSON body, read a JSON answer or a
//! stream of them, over `std::net::TcpStream`, in clear or through rustls (`etcds://`).
//!
//! Why hand-written rather than `ureq`: the watch needs a response body that stays open for
//! hours, is read by a thread with no timeout, and can be torn down from another thread
//! (`shutdown` on a clone of the socket) when the watch is dropped; the session needs short
//! connect and request timeouts and TCP keep-alive so a vanished peer is noticed. That is
//! direct with a `TcpStream` we own, and the protocol subset etcd uses is small: one request
//! per connection (`Connection: close`), answers framed by `Content-Length`, chunked encoding
//! (with trailers, which the gateway sends after errors) or the end of the connection.
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

use crate::http::wire::{read_body, read_response_head, Body, NOTHING_ANSWERED};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The largest body we buffer: far above any answer vxtap provokes, low enough that a
/// broken peer cannot exhaust memory.
const MAX_BODY: usize = 64 * 1024 * 1024;

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

/// One connection to an endpoint: plain, or TLS over the same kind of socket.
pub(crate) enum Connection {
    /// `etcd://`.
    Plain(TcpStream),
    /// `etcds://`, handshake done.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Connection {
    /// The TCP socket under it.
    fn socket(&self) -> &TcpStream {
        match self {
            Connection::Plain(socket) => socket,
            Connection::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(socket) => socket.read(buf),
            Connection::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(socket) => socket.write(buf),
            Connection::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Connection::Plain(socket) => socket.flush(),
            Connection::Tls(tls) => tls.flush(),
        }
    }
}

/// Talks to a list of `HOST:PORT` endpoints.
#[derive(Debug)]
pub(crate) struct Client {
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    timeouts: Timeouts,
    /// TLS settings for `etcds://`; `None` for plain HTTP.
    tls: Option<Arc<ClientConfig>>,
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
        }
    }

    /// `POST path` with a JSON `body` (and `Authorization: token` if given); the whole
    /// answer, whatever its status.
    pub(crate) fn post(
        &self,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<Response, HttpError> {
        let (connection, endpoint) = self.send(path, body, token)?;
        let mut reader = BufReader::new(connection);
        let mut read = || -> io::Result<Response> {
            let head = read_response_head(&mut reader)?;
            let body = read_body(&mut reader, head.framing, MAX_BODY)?;
            Ok(Response {
                status: head.status,
                body,
            })
        };
        match read() {
            Ok(response) if self.tls.is_none() && says_tls_expected(&response) => {
                Err(HttpError::TlsExpected {
                    endpoint: endpoint.to_owned(),
                })
            }
            Ok(response) => Ok(response),
            Err(err) => Err(self.read_error(endpoint, err)),
        }
    }

    /// `POST path` with a JSON `body` (and `Authorization: token` if given); the status and
    /// the body as a reader, for answers that stream. Reads time out after the request
    /// timeout until the caller changes that through [`Stream::socket`].
    pub(crate) fn post_streaming(
        &self,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<Stream, HttpError> {
        let (connection, endpoint) = self.send(path, body, token)?;
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

    /// Connects (with fail-over) and writes the request.
    fn send(
        &self,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<(Connection, &str), HttpError> {
        let (mut connection, endpoint) = self.connect()?;
        let authorization = token
            .map(|token| format!("Authorization: {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\n{authorization}Content-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        let mut write = || -> io::Result<()> {
            connection.write_all(request.as_bytes())?;
            connection.write_all(body)?;
            connection.flush()
        };
        if let Err(err) = write() {
            let err = refusal_behind(&mut connection).unwrap_or(err);
            if self.tls.is_some() && is_reset(&err) {
                return Err(HttpError::TlsClosed {
                    endpoint: endpoint.to_owned(),
                    source: err,
                });
            }
            return Err(self.with_client_cert(HttpError::from_io(endpoint, err)));
        }
        Ok((connection, endpoint))
    }

    /// A connection to the first endpoint that accepts one, starting with the preferred one.
    /// A TLS handshake refused by every endpoint is reported as such (the first one), not as
    /// a connection failure.
    fn connect(&self) -> Result<(Connection, &str), HttpError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut reasons = Vec::new();
        let mut refused = None;
        for offset in 0..self.endpoints.len() {
            let index = (first + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            let attempt = connect_one(endpoint, self.timeouts).and_then(|socket| match &self.tls {
                None => Ok(Connection::Plain(socket)),
                Some(config) => handshake(endpoint, socket, config),
            });
            match attempt {
                Ok(connection) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((connection, endpoint));
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
    let Connection::Tls(tls) = connection else {
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
) -> io::Result<Connection> {
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
    Ok(Connection::Tls(Box::new(StreamOwned::new(tls, socket))))
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

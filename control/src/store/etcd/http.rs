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
//! applied. Parsing is generic over `BufRead` so it is tested on captured bytes; malformed
//! framing is an `io::Error` of kind `InvalidData`, reported as [`HttpError::Malformed`].
//!
//! With TLS, each connection wraps the `TcpStream` in a `rustls::StreamOwned` and completes
//! the handshake before the request is written; the raw socket stays reachable through a
//! clone, so a stream can still be shut down from another thread. Failures that rustls
//! reports (a certificate refused either way, a peer that does not speak TLS) are
//! [`HttpError::Tls`], not connection trouble. A request may carry an `Authorization`
//! header (etcd's auth token). This module knows nothing of etcd's messages.

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The largest response head (status line and headers) we accept.
const MAX_HEAD: usize = 64 * 1024;
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

fn malformed(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
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
            let head = read_head(&mut reader)?;
            let body = read_body(&mut reader, &head)?;
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
            let head = read_head(&mut reader)?;
            Ok(Stream {
                status: head.status,
                body: Body::new(reader, &head),
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

/// What [`read_head`] says when the peer closed before a single byte of the answer.
const NOTHING_ANSWERED: &str = "the connection was closed without an answer";

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

/// The parts of a response head that frame the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
}

/// One line ending in CRLF (or a bare LF), without it; counts against `budget`.
fn read_line<R: BufRead>(reader: &mut R, budget: &mut usize) -> io::Result<String> {
    let mut line = Vec::new();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX);
    let read = reader.by_ref().take(limit).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the answer was complete",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(if read as u64 >= limit {
            malformed("header line too long")
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line")
        });
    }
    *budget -= read;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| malformed("a header line is not UTF-8"))
}

/// Reads the status line and the headers.
pub(crate) fn read_head<R: BufRead>(reader: &mut R) -> io::Result<Head> {
    let mut budget = MAX_HEAD;
    if reader.fill_buf()?.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            NOTHING_ANSWERED,
        ));
    }
    let status_line = read_line(reader, &mut budget)?;
    let mut words = status_line.split(' ');
    let version = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(malformed(format!("status line {status_line:?}")));
    }
    let status = words
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..=999).contains(code))
        .ok_or_else(|| malformed(format!("status line {status_line:?}")))?;
    let mut head = Head {
        status,
        chunked: false,
        content_length: None,
    };
    loop {
        let line = read_line(reader, &mut budget)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(format!("header line {line:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse()
                .map_err(|_| malformed(format!("Content-Length {value:?}")))?;
            head.content_length = Some(length);
        }
    }
    Ok(head)
}

/// Reads the whole body that `head` announces.
pub(crate) fn read_body<R: BufRead>(reader: &mut R, head: &Head) -> io::Result<Vec<u8>> {
    if let Some(length) = head.content_length.filter(|_| !head.chunked) {
        if length > MAX_BODY {
            return Err(malformed(format!("a body of {length} bytes")));
        }
    }
    let mut body = Vec::new();
    let limit = MAX_BODY as u64 + 1;
    Body::new(reader, head).take(limit).read_to_end(&mut body)?;
    if body.len() > MAX_BODY {
        return Err(malformed("a body over 64 MiB"));
    }
    if let Some(length) = head.content_length.filter(|_| !head.chunked) {
        if body.len() < length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the body was complete",
            ));
        }
    }
    Ok(body)
}

/// A response body as framed by its head: chunked, of a known length, or up to the end of
/// the connection.
pub(crate) enum Body<R> {
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked<R>),
    /// `Content-Length`.
    Length(io::Take<R>),
    /// Until the peer closes.
    UntilClose(R),
}

impl<R: BufRead> Body<R> {
    /// The body that `head` announces, read from `reader`.
    pub(crate) fn new(reader: R, head: &Head) -> Body<R> {
        if head.chunked {
            Body::Chunked(Chunked::new(reader))
        } else if let Some(length) = head.content_length {
            Body::Length(reader.take(length as u64))
        } else {
            Body::UntilClose(reader)
        }
    }
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Chunked(chunked) => chunked.read(buf),
            Body::Length(take) => take.read(buf),
            Body::UntilClose(reader) => reader.read(buf),
        }
    }
}

/// Decodes `Transfer-Encoding: chunked` (RFC 9112 section 7.1): `SIZE[;ext]CRLF DATA CRLF`
/// repeated, then `0 CRLF`, optional trailer lines and an empty line. Reads return 0 after
/// the last chunk; a connection that ends before it is `UnexpectedEof`.
pub(crate) struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    remaining: usize,
    /// The last chunk and the trailers have been read.
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    pub(crate) fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            remaining: 0,
            done: false,
        }
    }

    /// Reads a chunk-size line; at the last chunk, the trailers too.
    fn next_chunk(&mut self) -> io::Result<()> {
        let mut budget = MAX_HEAD;
        let line = read_line(&mut self.inner, &mut budget)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .ok()
            .filter(|&size| size <= MAX_BODY && !line.is_empty())
            .ok_or_else(|| malformed(format!("chunk size line {line:?}")))?;
        if size == 0 {
            while !read_line(&mut self.inner, &mut budget)?.is_empty() {}
            self.done = true;
        }
        self.remaining = size;
        Ok(())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.remaining == 0 {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let want = buf.len().min(self.remaining);
        let read = self.inner.read(&mut buf[..want])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunk",
            ));
        }
        self.remaining -= read;
        if self.remaining == 0 {
            let mut budget = 2;
            if !read_line(&mut self.inner, &mut budget)?.is_empty() {
                return Err(malformed("chunk data longer than its size"));
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error answer captured from etcd 3.4.23 (`/v3/kv/put` with an unknown lease).
    const CHUNKED_WITH_TRAILER: &[u8] = b"HTTP/1.1 404 Not Found\r\n\
        Access-Control-Allow-Origin: *\r\n\
        Content-Type: application/json\r\n\
        Trailer: Grpc-Trailer-Content-Type\r\n\
        Date: Sun, 22 Nov 2026 23:45:45 GMT\r\n\
        Transfer-Encoding: chunked\r\n\
        \r\n\
        6c\r\n\
        {\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: requested lease not found\",\"code\":5}\r\n\
        0\r\n\
        Grpc-Trailer-Content-Type: application/grpc\r\n\
        \r\n";

    /// A successful range, captured the same way.
    const WITH_LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\n\
        Content-Type: application/json\r\n\
        Grpc-Metadata-Content-Type: application/grpc\r\n\
        Content-Length: 114\r\n\
        \r\n\
        {\"header\":{\"cluster_id\":\"14841639068965178418\",\"member_id\":\"10276657743932975437\",\"revision\":\"2\",\"raft_term\":\"2\"}}";

    /// The start of a watch stream: one JSON message per chunk, each ending in a newline.
    const WATCH_STREAM: &[u8] = b"HTTP/1.1 200 OK\r\n\
        Content-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\n\
        \r\n\
        8d\r\n\
        {\"result\":{\"header\":{\"cluster_id\":\"14841639068965178418\",\"member_id\":\"10276657743932975437\",\"revision\":\"6\",\"raft_term\":\"2\"},\"created\":true}}\n\r\n";

    fn parse(bytes: &[u8]) -> io::Result<(Head, Vec<u8>)> {
        let mut reader = bytes;
        let head = read_head(&mut reader)?;
        let body = read_body(&mut reader, &head)?;
        Ok((head, body))
    }

    #[test]
    fn reads_chunked_bodies_with_trailers() {
        let (head, body) = parse(CHUNKED_WITH_TRAILER).unwrap();
        assert_eq!(head.status, 404);
        assert!(head.chunked);
        assert_eq!(body.len(), 0x6c);
        assert!(body.starts_with(b"{\"error\"") && body.ends_with(b"\"code\":5}"));
    }

    #[test]
    fn reads_bodies_with_a_length() {
        let (head, body) = parse(WITH_LENGTH).unwrap();
        assert_eq!((head.status, head.content_length), (200, Some(114)));
        assert_eq!(body.len(), 114);
        // A body cut short is an EOF error, not a short answer.
        let cut = &WITH_LENGTH[..WITH_LENGTH.len() - 1];
        assert_eq!(parse(cut).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn streams_stop_with_eof_inside_a_chunk_or_before_the_next() {
        let mut reader = WATCH_STREAM;
        let head = read_head(&mut reader).unwrap();
        let mut body = Body::new(reader, &head);
        let mut message = vec![0; 0x8d];
        body.read_exact(&mut message).unwrap();
        assert!(message.ends_with(b"}}\n"));
        let mut more = [0; 8];
        assert_eq!(
            body.read(&mut more).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof,
            "a stream without its last chunk ended early"
        );

        let cut = &WATCH_STREAM[..WATCH_STREAM.len() - 20];
        let mut reader = cut;
        let head = read_head(&mut reader).unwrap();
        let mut body = Vec::new();
        let err = Body::new(reader, &head).read_to_end(&mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn chunks_split_across_reads() {
        let bytes = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n";
        let mut decoded = Vec::new();
        let mut chunked = Chunked::new(BufReader::with_capacity(3, &bytes[..]));
        let mut buf = [0; 2];
        loop {
            let n = chunked.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            decoded.extend_from_slice(&buf[..n]);
        }
        assert_eq!(decoded, b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "{:?}: {err}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD]].concat();
        assert_eq!(parse(&long).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(parse(b"").unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn reads_until_close_without_framing() {
        let (head, body) = parse(b"HTTP/1.0 200 OK\r\n\r\n{}").unwrap();
        assert_eq!(
            (head.status, head.content_length, head.chunked),
            (200, None, false)
        );
        assert_eq!(body, b"{}");
    }
}

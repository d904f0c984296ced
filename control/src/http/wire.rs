//! HTTP/1.1 message syntax and framing (RFC 9112), shared by every HTTP peer vxtap has: the
//! etcd client, the Docker engine client and the plugin server. It reads request heads,
//! response heads and bodies (`Content-Length`, `Transfer-Encoding: chunked` with trailers,
//! or up to the end of the connection) from any `BufRead`, so it is tested on captured bytes.
//!
//! Public for the fuzz checks (`vxtap-suite`), which feed it arbitrary bytes; the Docker
//! transport's own API is [`super::Server`] and [`super::UnixClient`].
//!
//! It owns no socket, no clock and no thread: time limits belong to the readers it is
//! given. Everything it reads is untrusted: heads are capped at [`MAX_HEAD`], bodies at the
//! cap the caller passes, and malformed framing is an `io::Error` of kind `InvalidData`.
//! A cap that was hit is that kind too, carrying a [`TooLarge`] that [`too_large`] finds, so
//! a server can answer 413 or 431 instead of 400.
//!
//! It is strict where leniency lets a request be read two ways (request smuggling): a
//! request with both `Content-Length` and `Transfer-Encoding`, differing `Content-Length`s,
//! a transfer coding other than `chunked`, a folded or otherwise malformed header line, a
//! CR inside a line, or a target that is not a path is refused, not guessed at. It accepts
//! bare LF line ends and empty lines before a request line, as RFC 9112 allows.

use std::io::{self, BufRead, Read};

/// The largest head (start line and header fields) read, requests and responses alike.
pub const MAX_HEAD: usize = 64 * 1024;
/// The largest chunk believed: a bigger one is [`TooLarge::Body`], whatever the body cap.
const MAX_CHUNK: u64 = 64 * 1024 * 1024;

/// What [`read_response_head`] says when the peer closed before a single byte of the answer.
pub const NOTHING_ANSWERED: &str = "the connection was closed without an answer";

/// A size cap that a message broke; found in an `io::Error` by [`too_large`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    /// The start line and header fields together.
    #[error("a head over {}", size(*.limit))]
    Head {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The body, de-chunked.
    #[error("a body over {}", size(*.limit))]
    Body {
        /// The cap, in bytes.
        limit: usize,
    },
}

impl From<TooLarge> for io::Error {
    fn from(too_large: TooLarge) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, too_large)
    }
}

/// The cap that `error` reports breaking, if it is one.
pub fn too_large(error: &io::Error) -> Option<TooLarge> {
    error.get_ref()?.downcast_ref::<TooLarge>().copied()
}

/// `bytes` in the largest binary unit that divides it.
fn size(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

fn malformed(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length`, or no body at all (0).
    Length(u64),
    /// Until the peer closes: a response with neither header.
    UntilClose,
}

/// The parts of a request head that a server acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The request target in origin form: a path, with its query if any.
    pub target: String,
    /// How the body is delimited: never [`Framing::UntilClose`].
    pub framing: Framing,
    /// The client wants the connection closed after the answer: `Connection: close`, or
    /// HTTP/1.0 (whose keep-alive extension is not offered).
    pub close: bool,
    /// `Expect: 100-continue` on HTTP/1.1: the client waits for `100 Continue` (or a final
    /// answer) before it sends the body.
    pub expect_continue: bool,
}

/// The parts of a response head that a client acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// The server closes the connection after this answer: `Connection: close`, or an
    /// HTTP/1.0 answer (whose keep-alive extension we never ask for). A client keeping
    /// connections alive must not send another request on it.
    pub close: bool,
}

/// One line ending in CRLF (or a bare LF), without it; counts against `budget`, and breaking
/// it is [`TooLarge::Head`] of `MAX_HEAD`.
fn read_line<R: BufRead>(reader: &mut R, budget: &mut usize) -> io::Result<String> {
    if *budget == 0 {
        return Err(TooLarge::Head { limit: MAX_HEAD }.into());
    }
    let mut line = Vec::new();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX);
    let read = reader.by_ref().take(limit).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the message was complete",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(if read as u64 >= limit {
            TooLarge::Head { limit: MAX_HEAD }.into()
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line")
        });
    }
    *budget -= read;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| malformed("a line of the head is not UTF-8"))
}

/// Whether `byte` may be part of a token (RFC 9110 section 5.6.2): method and field names.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn is_token(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(is_token_byte)
}

/// What the header fields say about framing and the connection.
#[derive(Debug, Default)]
struct Fields {
    /// Every transfer coding named, in order, lower-cased.
    transfer_codings: Vec<String>,
    content_length: Option<u64>,
    /// `Connection` names `close`.
    close: bool,
    /// `Expect: 100-continue`.
    expect_continue: bool,
}

impl Fields {
    /// The framing the fields announce, if they announce one.
    fn framing(&self) -> io::Result<Option<Framing>> {
        match (self.transfer_codings.as_slice(), self.content_length) {
            ([], None) => Ok(None),
            ([], Some(length)) => Ok(Some(Framing::Length(length))),
            ([only], _) if only == "chunked" => Ok(Some(Framing::Chunked)),
            (codings, _) => Err(malformed(format!(
                "Transfer-Encoding {:?}: only chunked is supported",
                codings.join(", ")
            ))),
        }
    }
}

/// Reads header field lines up to the empty line that ends the head.
fn read_fields<R: BufRead>(reader: &mut R, budget: &mut usize) -> io::Result<Fields> {
    let mut fields = Fields::default();
    loop {
        let line = read_line(reader, budget)?;
        if line.is_empty() {
            return Ok(fields);
        }
        let (name, value) = line
            .split_once(':')
            .filter(|(name, _)| is_token(name))
            .ok_or_else(|| malformed(format!("header line {line:?}")))?;
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(malformed(format!("header line {line:?}")));
        }
        let value = value.trim_matches([' ', '\t']);
        let elements = || {
            value
                .split(',')
                .map(|element| element.trim_matches([' ', '\t']))
                .filter(|element| !element.is_empty())
        };
        if name.eq_ignore_ascii_case("transfer-encoding") {
            fields
                .transfer_codings
                .extend(elements().map(str::to_ascii_lowercase));
        } else if name.eq_ignore_ascii_case("content-length") {
            // `5, 5` is one length said twice; `5, 6` is two messages' worth of doubt.
            for element in value.split(',').map(|e| e.trim_matches([' ', '\t'])) {
                let length = element
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| element.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| malformed(format!("Content-Length {value:?}")))?;
                if fields.content_length.is_some_and(|known| known != length) {
                    return Err(malformed("differing Content-Length fields"));
                }
                fields.content_length = Some(length);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            fields.close |= elements().any(|option| option.eq_ignore_ascii_case("close"));
        } else if name.eq_ignore_ascii_case("expect") {
            fields.expect_continue |= value.eq_ignore_ascii_case("100-continue");
        }
    }
}

/// Reads a status line and the header fields.
pub fn read_response_head<R: BufRead>(reader: &mut R) -> io::Result<ResponseHead> {
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
        .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| *code >= 100)
        .ok_or_else(|| malformed(format!("status line {status_line:?}")))?;
    let http_1_0 = version == "HTTP/1.0";
    let fields = read_fields(reader, &mut budget)?;
    // RFC 9112 section 6.3: these never have a body, whatever the fields say; otherwise a
    // transfer coding overrides a length.
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        fields.framing()?.unwrap_or(Framing::UntilClose)
    };
    Ok(ResponseHead {
        status,
        framing,
        close: fields.close || http_1_0,
    })
}

/// Reads a request line and the header fields. Empty lines before the request line are
/// skipped; a connection closed before any byte of a request is `UnexpectedEof`.
pub fn read_request_head<R: BufRead>(reader: &mut R) -> io::Result<RequestHead> {
    let mut budget = MAX_HEAD;
    let request_line = loop {
        let line = read_line(reader, &mut budget)?;
        if !line.is_empty() {
            break line;
        }
    };
    let bad_line = || malformed(format!("request line {request_line:?}"));
    let words: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = words.as_slice() else {
        return Err(bad_line());
    };
    if !is_token(method) {
        return Err(bad_line());
    }
    // Origin form only: a proxy's absolute form or OPTIONS' `*` has no business here.
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad_line());
    }
    let http_1_1 = match *version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(bad_line()),
    };
    let fields = read_fields(reader, &mut budget)?;
    if !fields.transfer_codings.is_empty() && fields.content_length.is_some() {
        return Err(malformed(
            "both Transfer-Encoding and Content-Length: the body could be read two ways",
        ));
    }
    if !http_1_1 && !fields.transfer_codings.is_empty() {
        return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"));
    }
    Ok(RequestHead {
        method: (*method).to_owned(),
        target: (*target).to_owned(),
        // A request with neither field has no body (RFC 9112 section 6.3).
        framing: fields.framing()?.unwrap_or(Framing::Length(0)),
        close: fields.close || !http_1_1,
        // RFC 9110 section 10.1.1: ignored in an HTTP/1.0 request.
        expect_continue: fields.expect_continue && http_1_1,
    })
}

/// Reads the whole body that `framing` delimits, at most `max` bytes of it: a longer one is
/// [`TooLarge::Body`], refused before reading when a length says so up front.
pub fn read_body<R: BufRead>(reader: &mut R, framing: Framing, max: usize) -> io::Result<Vec<u8>> {
    let max_u64 = u64::try_from(max).unwrap_or(u64::MAX);
    if let Framing::Length(length) = framing {
        if length > max_u64 {
            return Err(TooLarge::Body { limit: max }.into());
        }
    }
    let mut body = Vec::new();
    Body::new(reader, framing)
        .take(max_u64.saturating_add(1))
        .read_to_end(&mut body)?;
    if body.len() > max {
        return Err(TooLarge::Body { limit: max }.into());
    }
    if let Framing::Length(length) = framing {
        if (body.len() as u64) < length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the body was complete",
            ));
        }
    }
    Ok(body)
}

/// A body as its head frames it, read as it arrives.
pub enum Body<R> {
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked<R>),
    /// `Content-Length`.
    Length(io::Take<R>),
    /// Until the peer closes.
    UntilClose(R),
}

impl<R: BufRead> Body<R> {
    /// The body that `framing` delimits, read from `reader`.
    pub fn new(reader: R, framing: Framing) -> Body<R> {
        match framing {
            Framing::Chunked => Body::Chunked(Chunked::new(reader)),
            Framing::Length(length) => Body::Length(reader.take(length)),
            Framing::UntilClose => Body::UntilClose(reader),
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
/// the last chunk; a connection that ends before it is `UnexpectedEof`. Trailers are read
/// and dropped.
pub struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    remaining: u64,
    /// The last chunk and the trailers have been read.
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    /// The de-chunked body that `inner` carries.
    pub fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            remaining: 0,
            done: false,
        }
    }

    /// Reads a chunk-size line; at the last chunk, the trailers too.
    fn next_chunk(&mut self) -> io::Result<()> {
        let mut budget = MAX_HEAD;
        let oversized = |err: io::Error| match too_large(&err) {
            Some(_) => malformed("a chunk size line or trailers over 64 KiB"),
            None => err,
        };
        let line = read_line(&mut self.inner, &mut budget).map_err(oversized)?;
        let size = line
            .split(';')
            .next()
            .unwrap_or_default()
            .trim_matches([' ', '\t']);
        let size = Some(size)
            .filter(|size| !size.is_empty() && size.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|size| u64::from_str_radix(size, 16).ok())
            .ok_or_else(|| malformed(format!("chunk size line {line:?}")))?;
        if size > MAX_CHUNK {
            // Well formed, but the body is over the cap whatever the reader's own: etcd's
            // gateway sends a whole answer as one chunk, and its reader wants to know that
            // it was too large rather than broken.
            return Err(TooLarge::Body {
                limit: MAX_CHUNK as usize,
            }
            .into());
        }
        if size == 0 {
            while !read_line(&mut self.inner, &mut budget)
                .map_err(oversized)?
                .is_empty()
            {}
            self.done = true;
        }
        self.remaining = size;
        Ok(())
    }

    /// Reads the line end after a chunk's data.
    fn end_of_chunk(&mut self) -> io::Result<()> {
        let mut byte = [0u8; 1];
        self.inner.read_exact(&mut byte)?;
        if byte[0] == b'\r' {
            self.inner.read_exact(&mut byte)?;
        }
        if byte[0] == b'\n' {
            Ok(())
        } else {
            Err(malformed("chunk data longer than its size"))
        }
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
        let want = usize::try_from(self.remaining).map_or(buf.len(), |left| buf.len().min(left));
        let read = self.inner.read(&mut buf[..want])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunk",
            ));
        }
        self.remaining -= read as u64;
        if self.remaining == 0 {
            self.end_of_chunk()?;
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

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

    /// `GET /v1.41/networks` answered by Docker 20.10.24 with seven networks (host, none and
    /// five bridges): chunked.
    const ENGINE_NETWORKS: &[u8] = include_bytes!("testdata/engine-networks-chunked.http");
    /// `POST /v1.41/networks/create` answered by the same engine: 201 with a length.
    const ENGINE_CREATED: &[u8] = include_bytes!("testdata/engine-network-create-201.http");
    /// `DELETE /v1.41/networks/NAME` answered by the same engine: 204, no framing fields.
    const ENGINE_DELETED: &[u8] = include_bytes!("testdata/engine-network-delete-204.http");

    /// `docker network create` as the Docker 28.2.2 CLI (Go's net/http client) sends it:
    /// `Content-Length`, a JSON body ending in a newline.
    const GO_WITH_LENGTH: &[u8] = include_bytes!("testdata/go-network-create-length.http");
    /// `docker load` from a pipe, same client: a body of unknown length goes chunked.
    const GO_CHUNKED: &[u8] = include_bytes!("testdata/go-image-load-chunked.http");
    /// The CLI's version probe, same client: `HEAD`, no body.
    const GO_HEAD: &[u8] = include_bytes!("testdata/go-head-ping.http");

    const MAX_BODY: usize = 64 * 1024 * 1024;

    fn parse(bytes: &[u8]) -> io::Result<(ResponseHead, Vec<u8>)> {
        let mut reader = bytes;
        let head = read_response_head(&mut reader)?;
        let body = read_body(&mut reader, head.framing, MAX_BODY)?;
        Ok((head, body))
    }

    /// Reads one request (head and body, at most `max`) from `reader`.
    fn request<R: BufRead>(reader: &mut R, max: usize) -> io::Result<(RequestHead, Vec<u8>)> {
        let head = read_request_head(reader)?;
        let body = read_body(reader, head.framing, max)?;
        Ok((head, body))
    }

    #[test]
    fn reads_chunked_bodies_with_trailers() {
        let (head, body) = parse(CHUNKED_WITH_TRAILER).unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(body.len(), 0x6c);
        assert!(body.starts_with(b"{\"error\"") && body.ends_with(b"\"code\":5}"));
    }

    #[test]
    fn reads_bodies_with_a_length() {
        let (head, body) = parse(WITH_LENGTH).unwrap();
        assert_eq!((head.status, head.framing), (200, Framing::Length(114)));
        assert_eq!(body.len(), 114);
        // A body cut short is an EOF error, not a short answer.
        let cut = &WITH_LENGTH[..WITH_LENGTH.len() - 1];
        assert_eq!(parse(cut).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn reads_the_docker_engines_answers() {
        let (head, body) = parse(ENGINE_NETWORKS).unwrap();
        assert_eq!((head.status, head.framing), (200, Framing::Chunked));
        let networks: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(networks.as_array().map(Vec::len), Some(7));

        let (head, body) = parse(ENGINE_CREATED).unwrap();
        assert_eq!(head.status, 201);
        let created: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(created["Id"].as_str().map(str::len), Some(64));

        // No Content-Length and `Connection: close`, yet a 204 ends at its head.
        let (head, body) = parse(ENGINE_DELETED).unwrap();
        assert_eq!((head.status, head.framing), (204, Framing::Length(0)));
        assert!(body.is_empty());
        assert!(head.close, "the engine said Connection: close");
    }

    #[test]
    fn a_chunk_over_the_cap_is_too_large_not_malformed() {
        // etcd's gateway sends an 80 MB range answer as one chunk.
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4c6652d\r\n{";
        let err = parse(answer).unwrap_err();
        assert_eq!(
            too_large(&err),
            Some(TooLarge::Body {
                limit: MAX_CHUNK as usize
            })
        );
    }

    #[test]
    fn responses_say_whether_the_connection_stays_open() {
        let (head, _) = parse(WITH_LENGTH).unwrap();
        assert!(!head.close, "HTTP/1.1 without Connection: close stays open");
        let (head, _) = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(head.close, "HTTP/1.0 closes");
        let (head, _) =
            parse(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        assert!(head.close);
    }

    #[test]
    fn streams_stop_with_eof_inside_a_chunk_or_before_the_next() {
        let mut reader = WATCH_STREAM;
        let head = read_response_head(&mut reader).unwrap();
        let mut body = Body::new(reader, head.framing);
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
        let head = read_response_head(&mut reader).unwrap();
        let mut body = Vec::new();
        let err = Body::new(reader, head.framing)
            .read_to_end(&mut body)
            .unwrap_err();
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
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nab\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8000000000\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
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
        let err = parse(&long).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(too_large(&err), Some(TooLarge::Head { limit: MAX_HEAD }));
        assert_eq!(err.to_string(), "a head over 64 KiB");
        let err = parse(b"").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(err.to_string(), NOTHING_ANSWERED);
    }

    #[test]
    fn reads_until_close_without_framing() {
        let (head, body) = parse(b"HTTP/1.0 200 OK\r\n\r\n{}").unwrap();
        assert_eq!((head.status, head.framing), (200, Framing::UntilClose));
        assert_eq!(body, b"{}");
    }

    #[test]
    fn reads_go_clients_requests() {
        let mut reader = GO_WITH_LENGTH;
        let (head, body) = request(&mut reader, 1024).unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/v1.41/networks/create");
        assert_eq!(head.framing, Framing::Length(257));
        assert!(!head.close && !head.expect_continue);
        let network: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(network["Name"], "demo");
        assert!(reader.is_empty());

        let mut reader = GO_CHUNKED;
        let (head, body) = request(&mut reader, 1024).unwrap();
        assert_eq!(
            (head.method.as_str(), head.target.as_str()),
            ("POST", "/v1.41/images/load?quiet=1")
        );
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(body, b"not a tar");
        assert!(reader.is_empty());

        let mut reader = GO_HEAD;
        let (head, body) = request(&mut reader, 1024).unwrap();
        assert_eq!(
            (head.method.as_str(), head.target.as_str(), head.framing),
            ("HEAD", "/_ping", Framing::Length(0))
        );
        assert!(body.is_empty() && reader.is_empty());
    }

    #[test]
    fn reads_pipelined_requests_one_after_another() {
        let stream = [GO_HEAD, GO_CHUNKED, GO_WITH_LENGTH, b"\r\n", GO_HEAD].concat();
        // A small buffer, so heads and bodies straddle refills.
        let mut reader = BufReader::with_capacity(7, stream.as_slice());
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (head, body) = request(&mut reader, 1024).unwrap();
            seen.push((head.target, body.len()));
        }
        assert_eq!(
            seen,
            [
                ("/_ping".to_owned(), 0),
                ("/v1.41/images/load?quiet=1".to_owned(), 9),
                ("/v1.41/networks/create".to_owned(), 257),
                ("/_ping".to_owned(), 0),
            ]
        );
        let end = read_request_head(&mut reader).unwrap_err();
        assert_eq!(end.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn reads_what_decides_the_connection() {
        let head = |bytes: &[u8]| read_request_head(&mut &bytes[..]).unwrap();
        let close = head(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(close.close);
        let old = head(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
        assert!(old.close && !old.expect_continue);
        let expect = head(b"PUT /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
        assert!(expect.expect_continue && !expect.close);
        assert_eq!(expect.framing, Framing::Length(3));
        // Bare LF line ends, a length said twice alike, optional whitespace.
        let lenient = head(b"POST /a?b=c HTTP/1.1\nContent-Length:  4 , 4\t\n\n");
        assert_eq!(lenient.framing, Framing::Length(4));
    }

    #[test]
    fn refuses_ambiguous_or_malformed_requests() {
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"POST / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            b"POST / HTTP/1.1\r\nX : a\r\n\r\n",
            b"POST / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"POST / HTTP/1.1\r\n: a\r\n\r\n",
            b"POST  / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1 \r\n\r\n",
            b"POST /a b HTTP/1.1\r\n\r\n",
            b"POST http://x/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"POST / HTTP/2.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"P(ST / HTTP/1.1\r\n\r\n",
            b"POST /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            b"GET /\r\n\r\n",
        ] {
            let result = read_request_head(&mut &bad[..]);
            let err = result.expect_err(&String::from_utf8_lossy(bad));
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "{:?}: {err}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(too_large(&err), None);
        }
        for cut in [&b""[..], b"GET / HT", b"GET / HTTP/1.1\r\nHost: x\r\n"] {
            let err = read_request_head(&mut &cut[..]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{cut:?}");
        }
    }

    #[test]
    fn request_caps_are_told_apart_from_malformed_ones() {
        let big_head = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD]].concat();
        let err = read_request_head(&mut big_head.as_slice()).unwrap_err();
        assert_eq!(too_large(&err), Some(TooLarge::Head { limit: MAX_HEAD }));
        // Many small fields add up to the same cap.
        let many = [
            b"GET / HTTP/1.1\r\n".as_slice(),
            &b"X-Field: 0123456789\r\n".repeat(MAX_HEAD / 20),
            b"\r\n",
        ]
        .concat();
        let err = read_request_head(&mut many.as_slice()).unwrap_err();
        assert_eq!(too_large(&err), Some(TooLarge::Head { limit: MAX_HEAD }));
        // Empty lines before the request line count too.
        let blank = b"\r\n".repeat(MAX_HEAD);
        let err = read_request_head(&mut blank.as_slice()).unwrap_err();
        assert_eq!(too_large(&err), Some(TooLarge::Head { limit: MAX_HEAD }));

        let max = 1024 * 1024;
        // A length over the cap is refused before a byte of the body is read.
        let announced = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", max + 1);
        let mut reader = announced.as_bytes();
        let err = request(&mut reader, max).unwrap_err();
        assert_eq!(too_large(&err), Some(TooLarge::Body { limit: max }));
        assert_eq!(err.to_string(), "a body over 1 MiB");
        let exact = [
            announced
                .replace(&(max + 1).to_string(), &max.to_string())
                .as_bytes(),
            &vec![b'x'; max],
        ]
        .concat();
        let (_, body) = request(&mut exact.as_slice(), max).unwrap();
        assert_eq!(body.len(), max);
        // A chunked body over the cap is stopped one byte past it, whatever its chunks say.
        let chunked = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
            format!("{:x}\r\n", max).as_bytes(),
            &vec![b'x'; max],
            b"\r\n1\r\ny\r\n0\r\n\r\n",
        ]
        .concat();
        let err = request(&mut chunked.as_slice(), max).unwrap_err();
        assert_eq!(too_large(&err), Some(TooLarge::Body { limit: max }));
        let one_chunk = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
            format!("{:x}\r\n", max + 1).as_bytes(),
            &vec![b'x'; max + 1],
            b"\r\n0\r\n\r\n",
        ]
        .concat();
        let err = request(&mut one_chunk.as_slice(), max).unwrap_err();
        assert_eq!(too_large(&err), Some(TooLarge::Body { limit: max }));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        // A deterministic byte soup (xorshift), cut at every length: each parse ends in an
        // error or a message, never a panic or a hang.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut soup = Vec::new();
        for _ in 0..4096 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let byte = match state % 8 {
                0 => b'\r',
                1 => b'\n',
                2 => b' ',
                3 => b':',
                _ => (state >> 8) as u8,
            };
            soup.push(byte);
        }
        for start in (0..soup.len()).step_by(61) {
            let bytes = [b"POST / HTTP/1.1\r\n".as_slice(), &soup[start..]].concat();
            let _ = request(&mut bytes.as_slice(), 1024);
            let _ = request(&mut &soup[start..], 1024);
            let _ = parse(&soup[start..]);
        }
    }
}

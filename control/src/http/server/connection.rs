//! One connection's HTTP exchange: wait for a request (idle time-out), read it whole within
//! the request deadline, call the handler, write its answer within the write time-out;
//! again until the connection ends. And the short exchange of a connection refused as busy.
//!
//! It never touches the server's table of connections: the caller does, around it.

use super::{Handler, Limits, Request, Response, MAX_BODY, REFUSAL_DEADLINE};
use crate::http::wire::{self, TooLarge};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads from a socket until a deadline: each read waits only for the time left.
struct DeadlineReader {
    socket: Arc<UnixStream>,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self
                .deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
                .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))?;
            self.socket.set_read_timeout(Some(left))?;
            match (&*self.socket).read(buf) {
                Err(e) if is_transient(&e) => {}
                result => return result,
            }
        }
    }
}

/// A socket time-out or interruption: the caller looks at its deadline and tries again.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Why a connection stops being served.
enum End {
    /// The client closed it or the server shut it down, between requests.
    Closed,
    /// No request began within the idle time-out.
    Idle,
    /// A request the server refuses, with the status to answer.
    Refused { status: u16, reason: String },
    /// The socket failed, or the peer left mid-request: nobody to answer.
    Broken(io::Error),
}

impl End {
    /// The end that a failed read of a request means.
    fn of_request(e: io::Error) -> End {
        let refused = |status, reason: String| End::Refused { status, reason };
        match wire::too_large(&e) {
            Some(TooLarge::Head { .. }) => refused(431, format!("request head too large: {e}")),
            Some(TooLarge::Body { .. }) => refused(413, format!("request body too large: {e}")),
            None => match e.kind() {
                io::ErrorKind::InvalidData => refused(400, format!("malformed request: {e}")),
                io::ErrorKind::TimedOut => refused(408, "request not complete in time".to_owned()),
                _ => End::Broken(e),
            },
        }
    }
}

/// One request read, and whether the connection ends after its answer.
struct Incoming {
    request: Request,
    close: bool,
    /// When its first byte arrived.
    started: Instant,
}

/// Serves requests on one connection until it ends.
pub(super) fn serve(socket: &Arc<UnixStream>, handler: &dyn Handler, limits: &Limits) {
    let mut reader = BufReader::new(DeadlineReader {
        socket: Arc::clone(socket),
        deadline: Instant::now(),
    });
    loop {
        let incoming = match next_request(&mut reader, socket, limits) {
            Ok(incoming) => incoming,
            Err(end) => {
                match end {
                    End::Closed => tracing::trace!("HTTP connection closed"),
                    End::Idle => tracing::debug!("idle HTTP connection closed"),
                    End::Broken(e) => tracing::debug!(error = %e, "HTTP connection broken"),
                    End::Refused { status, reason } => {
                        tracing::info!(status, %reason, "HTTP request refused; closing");
                        let response = Response {
                            status,
                            body: error_body(&reason),
                        };
                        if let Err(e) = send(socket, &response, false, true, limits.write) {
                            tracing::debug!(error = %e, "answering a refused HTTP request");
                        }
                    }
                }
                return;
            }
        };
        let Incoming {
            request,
            close,
            started,
        } = incoming;
        let response = call(handler, &request);
        let head_only = request.method == "HEAD";
        let sent = send(socket, &response, head_only, close, limits.write);
        tracing::debug!(
            method = %request.method,
            path = %request.path,
            status = response.status,
            duration = ?started.elapsed(),
            "HTTP request"
        );
        if let Err(e) = sent {
            tracing::debug!(error = %e, "HTTP client did not take its answer; closing");
            return;
        }
        if close {
            return;
        }
    }
}

/// Waits (idle time-out) for the next request and reads it whole (request deadline).
fn next_request(
    reader: &mut BufReader<DeadlineReader>,
    socket: &UnixStream,
    limits: &Limits,
) -> Result<Incoming, End> {
    reader.get_mut().deadline = Instant::now() + limits.idle;
    match reader.fill_buf() {
        Ok([]) => return Err(End::Closed),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(End::Idle),
        Err(e) => return Err(End::Broken(e)),
    }
    let started = Instant::now();
    reader.get_mut().deadline = started + limits.request;
    let head = wire::read_request_head(reader).map_err(End::of_request)?;
    if let wire::Framing::Length(length) = head.framing {
        if length > MAX_BODY as u64 {
            return Err(End::of_request(TooLarge::Body { limit: MAX_BODY }.into()));
        }
    }
    if head.expect_continue && head.framing != wire::Framing::Length(0) {
        let deadline = Instant::now() + limits.write;
        write_within(socket, b"HTTP/1.1 100 Continue\r\n\r\n", deadline).map_err(End::Broken)?;
    }
    let body = wire::read_body(reader, head.framing, MAX_BODY).map_err(End::of_request)?;
    Ok(Incoming {
        request: Request {
            method: head.method,
            path: head.target,
            body,
        },
        close: head.close,
        started,
    })
}

/// The handler's answer to `request`; 500 if it panics or answers an impossible status.
fn call(handler: &dyn Handler, request: &Request) -> Response {
    match panic::catch_unwind(AssertUnwindSafe(|| handler.handle(request))) {
        Ok(response) if (200..=599).contains(&response.status) => response,
        Ok(response) => {
            tracing::warn!(
                method = %request.method,
                path = %request.path,
                status = response.status,
                "the HTTP handler answered an impossible status; sending 500"
            );
            Response {
                status: 500,
                body: error_body("the handler answered an impossible status"),
            }
        }
        Err(_) => {
            tracing::error!(
                method = %request.method,
                path = %request.path,
                "the HTTP handler panicked; answering 500"
            );
            Response {
                status: 500,
                body: error_body("internal error"),
            }
        }
    }
}

/// Docker's plugin error shape, `{"Err":"..."}`.
fn error_body(message: &str) -> Vec<u8> {
    serde_json::json!({ "Err": message })
        .to_string()
        .into_bytes()
}

/// Writes `response` (its head only if `head_only`, as to `HEAD`), which the client must
/// take within `timeout`.
fn send(
    socket: &UnixStream,
    response: &Response,
    head_only: bool,
    close: bool,
    timeout: Duration,
) -> io::Result<()> {
    let bytes = encode(response, head_only, close);
    write_within(socket, &bytes, Instant::now() + timeout)
}

/// The bytes of `response`.
fn encode(response: &Response, head_only: bool, close: bool) -> Vec<u8> {
    let status = response.status;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    // RFC 9110 sections 15.3.5 and 15.4.5: neither has content, nor a length for it.
    let bodyless = status == 204 || status == 304;
    if !bodyless {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !bodyless && !head_only {
        bytes.extend_from_slice(&response.body);
    }
    bytes
}

/// The reason phrase of the statuses a JSON API answers; empty (allowed) for the rest.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes all of `bytes` before `deadline`.
fn write_within(socket: &UnixStream, bytes: &[u8], deadline: Instant) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "answer not taken in time"))?;
        socket.set_write_timeout(Some(left))?;
        match (&*socket).write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answers a connection over the limit with 503 once its request head is in (or has not
/// come within a second), and closes it.
pub(super) fn answer_busy(socket: &Arc<UnixStream>, limits: &Limits) {
    let mut reader = BufReader::new(DeadlineReader {
        socket: Arc::clone(socket),
        deadline: Instant::now() + REFUSAL_DEADLINE,
    });
    if let Err(e) = wire::read_request_head(&mut reader) {
        tracing::debug!(error = %e, "reading the head of a request refused as busy");
    }
    let response = Response {
        status: 503,
        body: error_body(&format!(
            "busy: {} connections are open; try again later",
            limits.connections
        )),
    };
    if let Err(e) = send(socket, &response, false, true, REFUSAL_DEADLINE) {
        tracing::debug!(error = %e, "answering a connection refused as busy");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &[u8]) -> Response {
        Response {
            status,
            body: body.to_vec(),
        }
    }

    #[test]
    fn answers_are_json_with_a_length() {
        assert_eq!(
            encode(&response(200, b"{}"), false, false),
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert_eq!(
            encode(&response(413, b"{}"), false, true),
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        // To HEAD: the length of what GET would send, not the body.
        assert_eq!(
            encode(&response(200, b"{}"), true, false),
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        );
        // 204 and 304 have no content and say no length; a status without a known reason
        // keeps the space before the empty phrase.
        assert_eq!(
            encode(&response(204, b"x"), false, false),
            b"HTTP/1.1 204 No Content\r\n\r\n"
        );
        assert_eq!(
            encode(&response(299, b""), false, false),
            b"HTTP/1.1 299 \r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn refusals_carry_dockers_error_shape() {
        let body: serde_json::Value =
            serde_json::from_slice(&error_body("a \"quoted\" reason")).unwrap();
        assert_eq!(body, serde_json::json!({ "Err": "a \"quoted\" reason" }));
        let end = End::of_request(TooLarge::Body { limit: MAX_BODY }.into());
        assert!(matches!(end, End::Refused { status: 413, .. }));
        let end = End::of_request(TooLarge::Head { limit: 65536 }.into());
        assert!(matches!(end, End::Refused { status: 431, .. }));
        let end = End::of_request(io::Error::new(io::ErrorKind::InvalidData, "bad"));
        assert!(matches!(end, End::Refused { status: 400, .. }));
        let end = End::of_request(io::Error::new(io::ErrorKind::TimedOut, "late"));
        assert!(matches!(end, End::Refused { status: 408, .. }));
        let end = End::of_request(io::ErrorKind::UnexpectedEof.into());
        assert!(matches!(end, End::Broken(_)));
    }
}

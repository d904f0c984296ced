//! A client for an HTTP API on a unix socket (the Docker engine's `/var/run/docker.sock`):
//! `GET`, `POST` of JSON and `DELETE`, each answer read whole.
//!
//! One connection per request, closed after it (`Connection: close`): the engine is local
//! and cheap to reach, and a fresh connection leaves no idle one to go stale or to race
//! with the engine closing it. `Host: localhost`, as the engine ignores it. The connection
//! is made with the time-out as its bound (a unix `connect` waits while the listener's
//! backlog is full), and each read and write is bounded by it too. Answers are framed by
//! `Content-Length`, chunked encoding or the end of the connection ([`super::wire`]), and
//! their bodies are capped at [`MAX_BODY`].
//!
//! A server may answer before it has read the whole request (a 413, say) and close; the
//! write then fails, and the answer waiting in the socket is read and returned rather than
//! the write error, as Go's client does.
//!
//! Query strings are the caller's to build; [`query_escape`] escapes one value. This module
//! knows nothing of Docker's messages.

use super::wire;
use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest answer body read: a `GET /networks` or `/containers/ID/json` on a busy host
/// is a few hundred KiB.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is neither `unix:///PATH` nor `/PATH`.
    #[error("{url:?} is not a unix socket address: use unix:///PATH/TO/SOCKET or /PATH/TO/SOCKET")]
    Url {
        /// The address given.
        url: String,
    },
    /// The request path is not one (a caller's bug: it must be escaped).
    #[error("{path:?} is not a request path: it must start with '/' and be printable ASCII without spaces")]
    Path {
        /// The path given.
        path: String,
    },
    /// No connection could be made: nothing was sent.
    #[error("cannot connect to {}: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// What happened.
        source: io::Error,
    },
    /// The connection failed or timed out after the request started.
    #[error("{request} on {}: {source}", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The method and path.
        request: String,
        /// What happened.
        source: io::Error,
    },
    /// The answer is not HTTP/1.1 as we know it, or is too large.
    #[error("{request} on {}: malformed HTTP answer: {reason}", socket.display())]
    Malformed {
        /// The socket.
        socket: PathBuf,
        /// The method and path.
        request: String,
        /// What was wrong.
        reason: String,
    },
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// A client for the HTTP API on one unix socket; see the module docs.
#[derive(Debug, Clone)]
pub struct UnixClient {
    socket: PathBuf,
    timeout: Duration,
}

impl UnixClient {
    /// A client for the socket that `url` names: `unix:///var/run/docker.sock` or an
    /// absolute path. `timeout` bounds the connection and each read and write (a zero one
    /// counts as 1 ms).
    ///
    /// # Errors
    ///
    /// `Url` for any other form (`tcp://`, `http://`, a relative path), naming the accepted
    /// ones.
    pub fn from_url(url: &str, timeout: Duration) -> Result<UnixClient, ClientError> {
        let path = url.strip_prefix("unix://").unwrap_or(url);
        if !path.starts_with('/') {
            return Err(ClientError::Url {
                url: url.to_owned(),
            });
        }
        Ok(UnixClient {
            socket: PathBuf::from(path),
            timeout: timeout.max(Duration::from_millis(1)),
        })
    }

    /// The socket talked to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET path`.
    ///
    /// # Errors
    ///
    /// See [`ClientError`]; any status is a [`Reply`].
    pub fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON `body`.
    ///
    /// # Errors
    ///
    /// See [`ClientError`]; any status is a [`Reply`].
    pub fn post_json(&self, path: &str, body: &[u8]) -> Result<Reply, ClientError> {
        self.request("POST", path, Some(body))
    }

    /// `DELETE path`.
    ///
    /// # Errors
    ///
    /// See [`ClientError`]; any status is a [`Reply`].
    pub fn delete(&self, path: &str) -> Result<Reply, ClientError> {
        self.request("DELETE", path, None)
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, ClientError> {
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::Path {
                path: path.to_owned(),
            });
        }
        let request = format!("{method} {path}");
        let fail = |source: io::Error| {
            if source.kind() == io::ErrorKind::InvalidData {
                ClientError::Malformed {
                    socket: self.socket.clone(),
                    request: request.clone(),
                    reason: source.to_string(),
                }
            } else {
                ClientError::Io {
                    socket: self.socket.clone(),
                    request: request.clone(),
                    source,
                }
            }
        };
        let stream = self.connect().map_err(|source| ClientError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        let framing = body.map_or_else(String::new, |body| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
        });
        let mut message = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: vxtap\r\n\
             Accept: application/json\r\n{framing}Connection: close\r\n\r\n"
        )
        .into_bytes();
        message.extend_from_slice(body.unwrap_or_default());
        let written = (&stream).write_all(&message);
        let read = || -> io::Result<Reply> {
            let mut reader = BufReader::new(&stream);
            let head = wire::read_response_head(&mut reader)?;
            let body = wire::read_body(&mut reader, head.framing, MAX_BODY)?;
            Ok(Reply {
                status: head.status,
                body,
            })
        };
        match written {
            Ok(()) => read().map_err(fail),
            // An answer sent before the server stopped reading is the better news.
            Err(write) if is_closed(&write) => read().map_err(|_| fail(write)),
            Err(write) => Err(fail(write)),
        }
    }

    /// A connection to the socket, its `connect` bounded by the time-out (which a unix
    /// socket takes from the send time-out), reads and writes too.
    fn connect(&self) -> io::Result<UnixStream> {
        use rustix::net::sockopt::{set_socket_timeout, Timeout};
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        set_socket_timeout(&socket, Timeout::Send, Some(self.timeout))?;
        set_socket_timeout(&socket, Timeout::Recv, Some(self.timeout))?;
        let address = SocketAddrUnix::new(self.socket.as_path())?;
        loop {
            match rustix::net::connect(&socket, &address) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the listener's backlog stayed full",
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(UnixStream::from(socket))
    }
}

/// The peer closed (or reset) the connection under a write.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// `s` percent-encoded for a query string (or a path segment): every byte of its UTF-8 but
/// RFC 3986's unreserved ones (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`.
pub fn query_escape(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut escaped = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            escaped.push(char::from(byte));
        } else {
            escaped.push('%');
            escaped.push(char::from(HEX[usize::from(byte >> 4)]));
            escaped.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Handler, Request, Response, Server};
    use std::io::{BufRead, Read};
    use std::os::unix::net::UnixListener;
    use std::sync::Arc;
    use std::thread::JoinHandle;

    /// A bound on any wait in these tests: far above what each needs.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// `GET /v1.41/networks` answered by Docker 20.10.24: chunked.
    const ENGINE_NETWORKS: &[u8] = include_bytes!("testdata/engine-networks-chunked.http");
    /// `DELETE /v1.41/networks/NAME` answered by the same engine: 204.
    const ENGINE_DELETED: &[u8] = include_bytes!("testdata/engine-network-delete-204.http");

    /// Answers with the request's parts.
    struct Echo;

    impl Handler for Echo {
        fn handle(&self, request: &Request) -> Response {
            Response {
                status: if request.method == "DELETE" { 404 } else { 200 },
                body: format!(
                    "{} {} {}",
                    request.method,
                    request.path,
                    String::from_utf8_lossy(&request.body)
                )
                .into_bytes(),
            }
        }
    }

    /// A socket that takes one connection, reads one request head, answers `answer` and
    /// closes; the thread returns the head it read.
    fn answer_once(dir: &Path, answer: &'static [u8]) -> (PathBuf, JoinHandle<String>) {
        let path = dir.join("engine.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut reader = std::io::BufReader::new(&stream);
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") {
                if reader.read_line(&mut head).unwrap() == 0 {
                    break;
                }
            }
            (&stream).write_all(answer).unwrap();
            head
        });
        (path, thread)
    }

    #[test]
    fn takes_unix_urls_and_absolute_paths_only() {
        let client = UnixClient::from_url("unix:///var/run/docker.sock", PATIENCE).unwrap();
        assert_eq!(client.socket(), Path::new("/var/run/docker.sock"));
        let client = UnixClient::from_url("/run/docker.sock", PATIENCE).unwrap();
        assert_eq!(client.socket(), Path::new("/run/docker.sock"));
        for bad in [
            "tcp://127.0.0.1:2375",
            "http://localhost/",
            "unix://docker.sock",
            "docker.sock",
            "unix://",
            "",
        ] {
            let err = UnixClient::from_url(bad, PATIENCE).unwrap_err();
            assert!(matches!(err, ClientError::Url { .. }), "{bad}");
            let message = err.to_string();
            assert!(
                message.contains("unix:///") && message.contains(" /PATH"),
                "{message}"
            );
        }
    }

    #[test]
    fn escapes_all_but_unreserved_bytes() {
        assert_eq!(query_escape("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(
            query_escape(r#"{"name":{"vx tap":true}}"#),
            "%7B%22name%22%3A%7B%22vx%20tap%22%3Atrue%7D%7D"
        );
        assert_eq!(query_escape("a/b?c=d&e+f%"), "a%2Fb%3Fc%3Dd%26e%2Bf%25");
        assert_eq!(query_escape("é\u{1F600}"), "%C3%A9%F0%9F%98%80");
        assert_eq!(query_escape(""), "");
    }

    #[test]
    fn gets_posts_and_deletes_through_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::bind(&dir.path().join("api.sock"), 0o600, Arc::new(Echo)).unwrap();
        let url = format!("unix://{}", server.path().display());
        let client = UnixClient::from_url(&url, PATIENCE).unwrap();
        let reply = client.get("/networks?filters=%7B%7D").unwrap();
        assert_eq!(
            (reply.status, reply.body.as_slice()),
            (200, &b"GET /networks?filters=%7B%7D "[..])
        );
        let reply = client
            .post_json("/networks/create", br#"{"Name":"n"}"#)
            .unwrap();
        assert_eq!(reply.body, br#"POST /networks/create {"Name":"n"}"#);
        let reply = client.delete("/networks/abc").unwrap();
        assert_eq!(
            (reply.status, reply.body.as_slice()),
            (404, &b"DELETE /networks/abc "[..])
        );
    }

    #[test]
    fn sends_a_plain_request_and_reads_the_engines_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (path, engine) = answer_once(dir.path(), ENGINE_NETWORKS);
        let client = UnixClient::from_url(path.to_str().unwrap(), PATIENCE).unwrap();
        let reply = client.get("/v1.41/networks").unwrap();
        assert_eq!(reply.status, 200);
        let networks: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(networks.as_array().map(Vec::len), Some(7));
        let head = engine.join().unwrap();
        assert_eq!(
            head,
            "GET /v1.41/networks HTTP/1.1\r\nHost: localhost\r\nUser-Agent: vxtap\r\n\
             Accept: application/json\r\nConnection: close\r\n\r\n"
        );
        std::fs::remove_file(&path).unwrap();

        let (path, engine) = answer_once(dir.path(), ENGINE_DELETED);
        let client = UnixClient::from_url(path.to_str().unwrap(), PATIENCE).unwrap();
        let reply = client.delete("/v1.41/networks/abc").unwrap();
        assert_eq!((reply.status, reply.body.len()), (204, 0));
        assert!(engine
            .join()
            .unwrap()
            .starts_with("DELETE /v1.41/networks/abc HTTP/1.1\r\n"));
    }

    #[test]
    fn errors_say_which_socket_and_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.sock");
        let client = UnixClient::from_url(missing.to_str().unwrap(), PATIENCE).unwrap();
        let err = client.get("/x").unwrap_err();
        assert!(matches!(&err, ClientError::Connect { socket, .. } if *socket == missing));
        assert!(err.to_string().contains("missing.sock"), "{err}");

        for bad in ["networks", "/a b", "/\u{e9}", "/a\r\nX: y"] {
            let err = client.get(bad).unwrap_err();
            assert!(matches!(err, ClientError::Path { .. }), "{bad:?}");
        }

        let (path, engine) = answer_once(dir.path(), b"SSH-2.0-OpenSSH_9.2\r\n");
        let client = UnixClient::from_url(path.to_str().unwrap(), PATIENCE).unwrap();
        let err = client.post_json("/x", b"{}").unwrap_err();
        assert!(matches!(&err, ClientError::Malformed { request, .. } if request == "POST /x"));
        assert!(err.to_string().contains("engine.sock"), "{err}");
        engine.join().unwrap();
        std::fs::remove_file(&path).unwrap();

        // A length over the cap is refused before the body is read.
        let (path, engine) = answer_once(
            dir.path(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 16777217\r\n\r\n",
        );
        let client = UnixClient::from_url(path.to_str().unwrap(), PATIENCE).unwrap();
        let err = client.get("/x").unwrap_err();
        assert!(err.to_string().contains("a body over 16 MiB"), "{err}");
        engine.join().unwrap();
        std::fs::remove_file(&path).unwrap();

        // An answer cut short.
        let (path, engine) = answer_once(
            dir.path(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
        );
        let client = UnixClient::from_url(path.to_str().unwrap(), PATIENCE).unwrap();
        let err = client.get("/x").unwrap_err();
        assert!(
            matches!(&err, ClientError::Io { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof),
            "{err}"
        );
        engine.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let client =
            UnixClient::from_url(path.to_str().unwrap(), Duration::from_millis(200)).unwrap();
        let err = client.get("/x").unwrap_err();
        match &err {
            ClientError::Io { source, .. } => assert!(
                matches!(
                    source.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "{err}"
            ),
            other => panic!("{other}"),
        }
        // The request was sent whole before the wait.
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut sent = String::new();
        (&stream).read_to_string(&mut sent).unwrap();
        assert!(sent.starts_with("GET /x HTTP/1.1\r\n") && sent.ends_with("\r\n\r\n"));
    }
}

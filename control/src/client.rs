//! Sends one request to the daemon's admin socket and reads its response.

use crate::api::{Reply, Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a request did not get an answer, or got a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("vxtap daemon is not running (no socket at {path}; start it with `vxtap daemon`)")]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The socket is there but this user may not connect to it.
    #[error("permission denied connecting to {path}: the admin socket is for root (and the group given to `vxtap daemon --socket-group`, if any)")]
    PermissionDenied {
        /// The socket path tried.
        path: PathBuf,
    },
    /// Talking to the daemon failed midway.
    #[error("talking to the daemon at {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The daemon sent something that is not a response.
    #[error("the daemon at {path} sent an unreadable response: {source}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// The daemon refused the request; nothing changed.
    #[error("{0}")]
    Refused(String),
}

/// The admin socket inside a run directory.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("vxtap.sock")
}

/// Sends `request` to the daemon listening in `run_dir` and returns its reply.
pub fn call(run_dir: &Path, request: &Request) -> Result<Reply, ClientError> {
    let path = socket_path(run_dir);
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning { path: path.clone() }
        }
        std::io::ErrorKind::PermissionDenied => {
            ClientError::PermissionDenied { path: path.clone() }
        }
        _ => io(e),
    })?;
    // Link creation opens TAP queues in another namespace; generous, but never forever.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|source| ClientError::Protocol {
        path: path.clone(),
        source,
    })?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    match serde_json::from_str(&answer).map_err(|source| ClientError::Protocol {
        path: path.clone(),
        source,
    })? {
        Response::Ok(reply) => Ok(reply),
        Response::Error(message) => Err(ClientError::Refused(message)),
    }
}

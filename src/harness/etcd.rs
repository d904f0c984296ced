//! [`Etcd`]: a real single-member etcd (`/usr/bin/etcd`, Debian's `etcd-server`) running in a
//! test's network namespace, for the etcd store backend's integration tests.
//!
//! It listens on `IP:2379` (clients) and `IP:2380` (peers) inside the namespace, keeps its
//! data in a temporary directory that survives [`Etcd::stop`] / [`Etcd::start_again`] (so a
//! restart keeps keys and leases), and logs to `etcd.log` there, which a failing start
//! prints. [`Etcd::post`] talks to its JSON gateway from inside the namespace, for what the
//! store API does not offer (compaction, deleting the lock key behind a holder's back).
//! Dropping the guard kills etcd and removes the directory. Nothing here touches the root
//! namespace: every connection is made from a thread inside the test's namespace.

use super::cmd;
use super::netns::Netns;
use super::sys;
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary the tests run.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";
/// Client and peer ports inside the namespace.
pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// How long etcd may take to answer after starting, or to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A single-member etcd in a network namespace.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    netns_name: String,
    netns_path: PathBuf,
    ip: Ipv4Addr,
}

impl Etcd {
    /// Starts etcd in `ns`, listening on `ip` (an address of `ns`, e.g. 127.0.0.1 on its
    /// `lo`), and waits (bounded) until it serves requests.
    ///
    /// # Panics
    ///
    /// Without root, without `/usr/bin/etcd`, or if etcd exits or does not answer in time;
    /// the message holds its log.
    pub fn start(ns: &Netns, ip: Ipv4Addr) -> Etcd {
        super::require_root();
        assert!(
            Path::new(ETCD_BINARY).is_file(),
            "{ETCD_BINARY} is missing: install etcd-server (apt-get install etcd-server)"
        );
        let dir = tempfile::Builder::new()
            .prefix("vxtap-etcd-")
            .tempdir_in("/tmp")
            .expect("a directory for etcd under /tmp");
        let mut etcd = Etcd {
            child: None,
            dir,
            netns_name: ns.name().to_owned(),
            netns_path: ns.path().to_owned(),
            ip,
        };
        etcd.launch();
        etcd
    }

    /// Starts etcd again after [`stop`](Self::stop), with the same data and addresses.
    ///
    /// # Panics
    ///
    /// As for [`start`](Self::start), or if it is still running.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "etcd in {} is still running",
            self.netns_name
        );
        self.launch();
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd.log");
        let client = format!("http://{}:{CLIENT_PORT}", self.ip);
        let peer = format!("http://{}:{PEER_PORT}", self.ip);
        // As `Netns::command`: `ip` execs etcd, so the child's pid is etcd's.
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns_name, ETCD_BINARY])
            .arg("--name=vxtap-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=vxtap-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd.log"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start `{}`: {err}", cmd::describe(&command)));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if matches!(
                self.try_post("/v3/kv/range", &json!({"key": "AA=="})),
                Ok((200, _))
            ) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "etcd in {} exited ({status}) before serving:\n{}",
                        self.netns_name,
                        self.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd in {} did not serve within {START_TIMEOUT:?}:\n{}",
                self.netns_name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The store URL: `etcd://IP:2379`.
    pub fn url(&self) -> String {
        format!("etcd://{}:{CLIENT_PORT}", self.ip)
    }

    /// Whether it runs (between `start` and `stop`).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops etcd with SIGTERM (SIGKILL if it does not exit in time) and waits for it. Its
    /// data stays for [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = sys::signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Compacts the history up to the current revision (physically, so watches from older
    /// revisions are cancelled at once); returns that revision.
    ///
    /// # Panics
    ///
    /// If etcd refuses.
    pub fn compact(&self) -> i64 {
        let revision = self.revision();
        let (status, body) = self.post(
            "/v3/kv/compaction",
            &json!({"revision": revision.to_string(), "physical": true}),
        );
        assert_eq!(status, 200, "compacting to {revision}: {body}");
        revision
    }

    /// The current store revision.
    ///
    /// # Panics
    ///
    /// If etcd does not answer.
    pub fn revision(&self) -> i64 {
        let (status, body) = self.post("/v3/kv/range", &json!({"key": "AA=="}));
        assert_eq!(status, 200, "reading the revision: {body}");
        body["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {body}"))
    }

    /// `POST path` with `body` to the gateway, from inside the namespace: the status and the
    /// decoded answer.
    ///
    /// # Panics
    ///
    /// If etcd cannot be reached or answers something that is not JSON.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.try_post(path, body)
            .unwrap_or_else(|err| panic!("POST {path} to etcd in {}: {err}", self.netns_name))
    }

    fn try_post(&self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let address = SocketAddr::from((self.ip, CLIENT_PORT));
        let request = body.to_string();
        let answer = vxtap_dataplane::io::netns::run_in(&self.netns_path, || {
            let mut socket = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
            socket.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                socket,
                "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{request}",
                request.len()
            )?;
            let mut answer = Vec::new();
            socket.read_to_end(&mut answer)?;
            Ok::<_, std::io::Error>(answer)
        })
        .map_err(|err| err.to_string())?
        .map_err(|err| err.to_string())?;
        parse_answer(&answer)
    }

    /// What it has logged so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Splits a complete HTTP/1.1 answer (read until the peer closed) into its status and its
/// JSON body, de-chunking it if need be.
fn parse_answer(answer: &[u8]) -> Result<(u16, Value), String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut decoded = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest
                .split_once("\r\n")
                .ok_or_else(|| format!("bad chunking in {body:?}"))?;
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| format!("bad chunk size in {body:?}"))?;
            if size == 0 {
                break;
            }
            let chunk = after
                .get(..size)
                .ok_or_else(|| format!("short chunk in {body:?}"))?;
            decoded.push_str(chunk);
            rest = after.get(size + 2..).unwrap_or_default();
        }
        decoded
    } else {
        body.to_owned()
    };
    let value = serde_json::from_str(&body).map_err(|err| format!("{err} in {body:?}"))?;
    Ok((status, value))
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The TempDir removes the data and the log.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(plain).unwrap(), (200, json!({})));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
            8\r\n{\"code\":\r\n2\r\n5}\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n";
        assert_eq!(parse_answer(chunked).unwrap(), (404, json!({"code": 5})));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}

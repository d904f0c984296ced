//! The admin socket `RUN_DIR/vxtap.sock`: who may connect and what they may ask, how many
//! clients are served at once, and how long each one may take.
//!
//! - The socket is created mode 0600 (root only), or 0660 with group G for `--socket-group
//!   G`, whatever the umask: bound, given its mode, and only then listening, so it is never
//!   connectable with a wider mode.
//! - Every connection's peer is identified (`SO_PEERCRED`, `SO_PEERGROUPS`): uid 0 and members
//!   of G may ask anything; anyone else who can connect may only read (see
//!   [`Request::is_mutation`]).
//! - One thread per client, at most [`MAX_CLIENTS`]; a client beyond that gets a one-line
//!   error and is closed. A request line may be [`MAX_REQUEST`] bytes long, must start within
//!   [`IDLE_TIMEOUT`] and be complete within [`REQUEST_DEADLINE`] of its first byte; each
//!   answer must be taken within [`WRITE_TIMEOUT`]. Threads rather than a poll loop because
//!   a request may take long (a TAP made in a namespace, a store round trip) and blocking
//!   code serves it as it is, while the cap bounds what clients can cost.
//! - When the process runs out of file descriptors, a reserved spare fd lets the accept loop
//!   take each waiting connection, answer it with an error and close it, instead of spinning
//!   on `EMFILE`; the condition is logged when it starts and when it clears.
//! - At shutdown every client connection is shut down, so no client (one that never reads
//!   its answers, say) can hold the daemon.
//!
//! This module never changes links or the overlay itself: requests go to
//! [`links::apply`] or to the agent.

use super::agent::Agent;
use super::links::{self, Links};
use crate::api::{Reply, Request, Response};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most admin connections served at once.
pub const MAX_CLIENTS: usize = 64;
/// Longest request line accepted, newline excluded.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a connection may stay silent between requests before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request line may take to arrive, from its first byte.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client may take to accept one answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the accept loop waits for a connection before looking at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(250);
/// How long the accept loop rests after an `accept` failure it cannot answer.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
/// How long `accept` must not have run out of fds before the condition counts as over.
const FD_RECOVERY: Duration = Duration::from_secs(1);
/// Connections waiting in the kernel for `accept`.
const BACKLOG: i32 = 128;

/// Why the admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `--socket-group` names no group.
    #[error("unknown group {0:?} (not a number, and not a name in /etc/group)")]
    UnknownGroup(String),
    /// /etc/group could not be read to look a group name up.
    #[error("reading /etc/group to look up group {name:?}")]
    GroupFile {
        /// The name looked up.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// A step of creating the socket failed.
    #[error("{step} admin socket {}", path.display())]
    Socket {
        /// What was being done (`"binding"`, `"chmod of"`, ...).
        step: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// The spare fd kept for running out of fds could not be opened.
    #[error("opening /dev/null as a spare file descriptor")]
    Spare(#[source] io::Error),
}

/// The group whose members may do anything through the socket (`--socket-group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    /// As given (a name or a number), for messages.
    pub name: String,
    /// Its gid.
    pub gid: u32,
}

impl SocketGroup {
    /// Looks `arg` up: a number is a gid, anything else a name in /etc/group.
    ///
    /// # Errors
    ///
    /// `UnknownGroup`, or `GroupFile` if /etc/group cannot be read.
    pub fn resolve(arg: &str) -> Result<SocketGroup, AdminError> {
        if let Ok(gid) = arg.parse::<u32>() {
            return Ok(SocketGroup {
                name: arg.to_owned(),
                gid,
            });
        }
        let groups =
            std::fs::read_to_string("/etc/group").map_err(|source| AdminError::GroupFile {
                name: arg.to_owned(),
                source,
            })?;
        find_group(&groups, arg)
            .map(|gid| SocketGroup {
                name: arg.to_owned(),
                gid,
            })
            .ok_or_else(|| AdminError::UnknownGroup(arg.to_owned()))
    }
}

/// The gid of group `name` in the text of an /etc/group file (`name:x:gid:members`).
fn find_group(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.trim().parse().ok()
    })
}

/// Creates the listening admin socket at `path`: mode 0600, or 0660 owned by `group`,
/// whatever the umask. The mode is set between `bind` and `listen`, while a connection to
/// the file is still refused, so it never accepts anyone with a wider mode.
///
/// # Errors
///
/// `Socket`, naming the step that failed; the socket file is removed again then.
pub fn bind(path: &Path, group: Option<&SocketGroup>) -> Result<UnixListener, AdminError> {
    crate::unix_listener::listen(path, BACKLOG, |path| {
        let mode = match group {
            Some(group) => {
                rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(group.gid)))
                    .map_err(|e| ("chown of", e))?;
                0o660
            }
            None => 0o600,
        };
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode)).map_err(|e| ("chmod of", e))
    })
    .map_err(|(step, source)| AdminError::Socket {
        step,
        path: path.to_owned(),
        source,
    })
}

/// Raises the soft limit on open files to the hard limit, so the admin socket, TAP queues
/// and store connections have all the room the administrator allows; logs both values.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    if limit.current == limit.maximum {
        tracing::info!(
            soft = %show(limit.current),
            hard = %show(limit.maximum),
            "open-file limit"
        );
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            was = %show(limit.current),
            soft = %show(limit.maximum),
            hard = %show(limit.maximum),
            "raised the open-file limit to the hard limit"
        ),
        Err(e) => tracing::warn!(
            soft = %show(limit.current),
            hard = %show(limit.maximum),
            error = %e,
            "cannot raise the open-file limit"
        ),
    }
}

/// What a peer may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anything: uid 0 or a member of the socket group.
    Full,
    /// Only requests that change nothing.
    ReadOnly,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
struct Peer {
    pid: i32,
    uid: u32,
    access: Access,
}

/// Identifies the peer of `stream` from the credentials the kernel recorded at `connect`.
fn identify(stream: &UnixStream, group: Option<&SocketGroup>) -> io::Result<Peer> {
    let (pid, uid, gid) = vxtap_dataplane::io::socket_peer_cred(stream)?;
    let member = match group {
        Some(group) => {
            gid == group.gid
                || vxtap_dataplane::io::socket_peer_groups(stream)?.contains(&group.gid)
        }
        None => false,
    };
    Ok(Peer {
        pid,
        uid,
        access: if uid == 0 || member {
            Access::Full
        } else {
            Access::ReadOnly
        },
    })
}

/// The connections being served, so shutdown can end them all.
#[derive(Default)]
struct Clients {
    table: Mutex<ClientTable>,
    /// Signalled whenever a connection leaves the table.
    left: Condvar,
}

#[derive(Default)]
struct ClientTable {
    next: u64,
    open: HashMap<u64, Arc<UnixStream>>,
}

impl Clients {
    fn table(&self) -> std::sync::MutexGuard<'_, ClientTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.table().open.len()
    }

    fn insert(&self, stream: Arc<UnixStream>) -> u64 {
        let mut table = self.table();
        let id = table.next;
        table.next += 1;
        table.open.insert(id, stream);
        id
    }

    fn remove(&self, id: u64) {
        self.table().open.remove(&id);
        self.left.notify_all();
    }

    /// Shuts every open connection down: blocked reads see the end, blocked writes fail.
    fn shutdown_all(&self) {
        for stream in self.table().open.values() {
            if let Err(e) = stream.shutdown(Shutdown::Both) {
                // ENOTCONN: the client left first; the thread ends on its own.
                tracing::debug!(error = %e, "shutting an admin connection down");
            }
        }
    }

    /// Waits until every connection's thread has ended, at most `limit`; returns how many
    /// are still running.
    fn wait_empty(&self, limit: Duration) -> usize {
        let (table, _) = self
            .left
            .wait_timeout_while(self.table(), limit, |t| !t.open.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        table.open.len()
    }
}

/// The admin socket and the clients it serves.
pub struct AdminServer {
    listener: UnixListener,
    group: Option<SocketGroup>,
    clients: Arc<Clients>,
    links: Arc<Mutex<Links>>,
    agent: Option<Arc<Agent>>,
}

/// How the accept loop is doing, for logging each condition once when it starts and once
/// when it clears.
#[derive(Default)]
struct Refusals {
    /// Connections refused (or left waiting) since the process ran out of fds, and when it
    /// last did, while it is.
    out_of_fds: Option<(u64, Instant)>,
    /// Connections refused since the client cap was reached, while it is.
    at_capacity: Option<u64>,
}

impl AdminServer {
    /// Serves `listener` (made by [`bind`]) for `links` and, with the control plane on,
    /// `agent`.
    pub fn new(
        listener: UnixListener,
        group: Option<SocketGroup>,
        links: Arc<Mutex<Links>>,
        agent: Option<Arc<Agent>>,
    ) -> AdminServer {
        AdminServer {
            listener,
            group,
            clients: Arc::default(),
            links,
            agent,
        }
    }

    /// Accepts connections until `stop` is set.
    ///
    /// # Errors
    ///
    /// `Spare` if the spare fd cannot be opened at the start.
    pub fn run(&self, stop: &AtomicBool) -> Result<(), AdminError> {
        let mut spare = Some(spare_fd().map_err(AdminError::Spare)?);
        let mut refusals = Refusals::default();
        while !stop.load(Ordering::SeqCst) {
            if !readable(&self.listener, ACCEPT_POLL) || stop.load(Ordering::SeqCst) {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Cleared only once it has stayed away a while: at the limit, each
                    // client that leaves frees one fd for one accept, which is no recovery.
                    if let Some((refused, last)) = refusals.out_of_fds {
                        if last.elapsed() >= FD_RECOVERY {
                            tracing::info!(
                                refused,
                                "admin socket: file descriptors available again"
                            );
                            refusals.out_of_fds = None;
                        }
                    }
                    if spare.is_none() {
                        spare = spare_fd().ok();
                    }
                    self.admit(stream, &mut refusals);
                }
                Err(e) if out_of_fds(&e) => {
                    let (refused, last) = refusals.out_of_fds.get_or_insert_with(|| {
                        tracing::warn!(
                            error = %e,
                            "admin socket: out of file descriptors; answering new connections \
                             with an error until some close"
                        );
                        (0, Instant::now())
                    });
                    *refused += 1;
                    *last = Instant::now();
                    // Give the spare up for one accept, answer, close, take it back.
                    if spare.take().is_some() {
                        match self.listener.accept() {
                            Ok((stream, _)) => refuse(
                                &stream,
                                "the vxtap daemon is out of file descriptors; try again later",
                            ),
                            // Another thread took the freed fd first: counted above, and
                            // the backoff below waits; trace only, or the log would repeat
                            // the condition that was logged once.
                            Err(e) => tracing::trace!(error = %e, "accepting with the spare fd"),
                        }
                        spare = spare_fd().ok();
                    }
                    if spare.is_none() {
                        // Someone else took the freed fd: wait for the limit to ease rather
                        // than spin on a listener that stays readable.
                        std::thread::sleep(ACCEPT_BACKOFF);
                        spare = spare_fd().ok();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an admin connection");
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
        Ok(())
    }

    /// Serves `stream` on a thread of its own, unless the cap is reached or the peer cannot
    /// be identified.
    fn admit(&self, stream: UnixStream, refusals: &mut Refusals) {
        if self.clients.len() >= MAX_CLIENTS {
            let refused = refusals.at_capacity.get_or_insert_with(|| {
                tracing::warn!(
                    clients = MAX_CLIENTS,
                    "admin socket: client limit reached; refusing new connections until some close"
                );
                0
            });
            *refused += 1;
            refuse(
                &stream,
                &format!("busy: {MAX_CLIENTS} admin connections are open; try again later"),
            );
            return;
        }
        if let Some(refused) = refusals.at_capacity.take() {
            tracing::info!(refused, "admin socket: below the client limit again");
        }
        let peer = match identify(&stream, self.group.as_ref()) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "cannot identify an admin client; closing its connection");
                return;
            }
        };
        let stream = Arc::new(stream);
        let id = self.clients.insert(Arc::clone(&stream));
        let clients = Arc::clone(&self.clients);
        let links = Arc::clone(&self.links);
        let agent = self.agent.clone();
        let group = self.group.clone();
        let spawned = std::thread::Builder::new()
            .name("vxtap-admin".into())
            .spawn(move || {
                let context = Context {
                    peer,
                    group: group.as_ref(),
                    links: &links,
                    agent: agent.as_deref(),
                };
                serve(&stream, &context);
                clients.remove(id);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread for an admin connection");
            self.clients.remove(id);
        }
    }

    /// Ends every client connection and waits (at most `limit`) for their threads; returns
    /// how many are still running (busy inside a request).
    pub fn disconnect_all(&self, limit: Duration) -> usize {
        self.clients.shutdown_all();
        self.clients.wait_empty(limit)
    }
}

/// The spare fd: one slot given up to accept-and-refuse while the process is out of fds.
fn spare_fd() -> io::Result<File> {
    File::open("/dev/null")
}

fn out_of_fds(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
    )
}

/// Whether `listener` has a connection waiting, after at most `timeout`.
fn readable(listener: &UnixListener, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        listener,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(n) => n > 0,
        // A signal: look at the stop flag, then wait again.
        Err(rustix::io::Errno::INTR) => false,
        Err(e) => {
            tracing::warn!(error = %e, "waiting for admin connections");
            std::thread::sleep(ACCEPT_BACKOFF);
            false
        }
    }
}

/// Answers a connection that will not be served with one error line, without waiting on it,
/// and closes it.
fn refuse(stream: &UnixStream, message: &str) {
    let line = answer_line(&Response::Error(message.to_owned()));
    // A fresh connection's buffer is empty, so the line fits; a full one is dropped.
    let written = stream
        .set_nonblocking(true)
        .and_then(|()| (&*stream).write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::debug!(error = %e, "answering a refused admin connection");
    }
}

fn answer_line(response: &Response) -> String {
    let mut line = serde_json::to_string(response).unwrap_or_else(|e| {
        // Serialising our own types cannot fail; say so rather than panic if it does.
        format!(r#"{{"error":"cannot encode the answer: {e}"}}"#)
    });
    line.push('\n');
    line
}

/// What one connection's thread works with.
struct Context<'a> {
    peer: Peer,
    group: Option<&'a SocketGroup>,
    links: &'a Mutex<Links>,
    agent: Option<&'a Agent>,
}

/// Why a connection stops reading requests.
#[derive(Debug)]
enum ReadEnd {
    /// The client closed it, or the daemon shut it down.
    Closed,
    /// No request began within `IDLE_TIMEOUT`.
    Idle,
    /// A request took longer than `REQUEST_DEADLINE`.
    Late,
    /// A line longer than `MAX_REQUEST`.
    TooLong,
    /// The socket failed.
    Io(io::Error),
}

/// Answers every request on one connection until it ends or breaks a limit.
fn serve(stream: &UnixStream, context: &Context<'_>) {
    let mut received = Vec::new();
    loop {
        let line = match read_request(stream, &mut received) {
            Ok(line) => line,
            Err(end) => {
                let message = match &end {
                    ReadEnd::TooLong => Some(format!(
                        "request longer than {MAX_REQUEST} bytes; closing the connection"
                    )),
                    ReadEnd::Late => Some(format!(
                        "request not complete within {} s; closing the connection",
                        REQUEST_DEADLINE.as_secs()
                    )),
                    ReadEnd::Closed | ReadEnd::Idle | ReadEnd::Io(_) => None,
                };
                match &end {
                    ReadEnd::Io(e) => {
                        tracing::debug!(uid = context.peer.uid, pid = context.peer.pid, error = %e, "admin connection failed");
                    }
                    other => {
                        tracing::debug!(uid = context.peer.uid, pid = context.peer.pid, end = ?other, "admin connection ends");
                    }
                }
                if let Some(message) = message {
                    tracing::info!(uid = context.peer.uid, pid = context.peer.pid, "{message}");
                    if let Err(e) = write_answer(stream, &Response::Error(message)) {
                        tracing::debug!(error = %e, "answering a closed admin connection");
                    }
                }
                return;
            }
        };
        let response = respond(&line, context);
        if let Err(e) = write_answer(stream, &response) {
            tracing::info!(uid = context.peer.uid, pid = context.peer.pid, error = %e, "admin client did not take its answer; closing the connection");
            return;
        }
    }
}

/// Reads one request line (newline excluded) out of `received` and the socket, within the
/// idle time-out and the request deadline. Bytes after the line stay in `received`.
fn read_request(stream: &UnixStream, received: &mut Vec<u8>) -> Result<Vec<u8>, ReadEnd> {
    let mut started = (!received.is_empty()).then(Instant::now);
    let idle_until = Instant::now() + IDLE_TIMEOUT;
    let mut scanned = 0;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = received[scanned..].iter().position(|&b| b == b'\n') {
            let end = scanned + at;
            if end > MAX_REQUEST {
                return Err(ReadEnd::TooLong);
            }
            let mut line: Vec<u8> = received.drain(..=end).collect();
            line.pop();
            return Ok(line);
        }
        scanned = received.len();
        if received.len() > MAX_REQUEST {
            return Err(ReadEnd::TooLong);
        }
        let deadline = started.map_or(idle_until, |t| t + REQUEST_DEADLINE);
        let now = Instant::now();
        if now >= deadline {
            return Err(if started.is_some() {
                ReadEnd::Late
            } else {
                ReadEnd::Idle
            });
        }
        // The time left, not a fresh time-out per read: a trickle cannot stretch it.
        stream
            .set_read_timeout(Some(deadline - now))
            .map_err(ReadEnd::Io)?;
        match (&*stream).read(&mut chunk) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => {
                started.get_or_insert_with(Instant::now);
                received.extend_from_slice(&chunk[..n]);
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(ReadEnd::Io(e)),
        }
    }
}

/// A socket time-out or interruption: the caller looks at its deadline and tries again.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Writes one answer line, which the client must take within `WRITE_TIMEOUT`.
fn write_answer(stream: &UnixStream, response: &Response) -> io::Result<()> {
    let line = answer_line(response);
    let mut rest = line.as_bytes();
    let deadline = Instant::now() + WRITE_TIMEOUT;
    while !rest.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("answer not taken within {} s", WRITE_TIMEOUT.as_secs()),
            ));
        }
        stream.set_write_timeout(Some(deadline - now))?;
        match (&*stream).write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The response to one request line from `context.peer`.
fn respond(line: &[u8], context: &Context<'_>) -> Response {
    let request = match serde_json::from_slice::<Request>(line) {
        Ok(request) => request,
        Err(e) => return Response::Error(format!("malformed request: {e}")),
    };
    tracing::debug!(?request, uid = context.peer.uid, "admin request");
    if request.is_mutation() && context.peer.access == Access::ReadOnly {
        let message = permission_denied(&request, context.group);
        tracing::info!(uid = context.peer.uid, pid = context.peer.pid, "{message}");
        return Response::Error(message);
    }
    let result = match context.agent {
        Some(agent) if request.is_overlay() => agent.handle(request).map_err(|e| e.to_string()),
        _ => links::apply(context.links, request)
            .map(|reply| with_record_stats(reply, context.agent))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(reply) => Response::Ok(reply),
        Err(e) => {
            tracing::info!(error = %e, "request refused");
            Response::Error(e)
        }
    }
}

/// `stats` of a daemon running the control plane also counts the store records it refused,
/// and what its resolvers did.
fn with_record_stats(reply: Reply, agent: Option<&Agent>) -> Reply {
    match (reply, agent) {
        (
            Reply::Stats {
                links,
                global,
                records: None,
                ..
            },
            Some(agent),
        ) => Reply::Stats {
            links,
            global,
            records: Some(agent.record_stats()),
            resolvers: agent.resolver_stats(),
        },
        (reply, _) => reply,
    }
}

/// The one-line refusal of a change asked by someone who may only read.
fn permission_denied(request: &Request, group: Option<&SocketGroup>) -> String {
    match group {
        Some(group) => format!(
            "permission denied: `{}` needs root or group {}",
            request.name(),
            group.name
        ),
        None => format!("permission denied: `{}` needs root", request.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_by_name_in_etc_group() {
        let file = "root:x:0:\nwheel:x:10:alice,bob\nvxtap:x:990:\nbroken\n";
        assert_eq!(find_group(file, "vxtap"), Some(990));
        assert_eq!(find_group(file, "wheel"), Some(10));
        assert_eq!(find_group(file, "whee"), None);
        assert_eq!(find_group(file, "broken"), None);
        assert_eq!(SocketGroup::resolve("4242").unwrap().gid, 4242);
        assert!(matches!(
            SocketGroup::resolve("no-such-group-vxtap"),
            Err(AdminError::UnknownGroup(_))
        ));
    }

    #[test]
    fn a_request_must_arrive_whole_and_in_time() {
        let (client, server) = UnixStream::pair().unwrap();
        // Two requests in one write: both come out, in order.
        (&client)
            .write_all(b"{\"a\":1}\n{\"b\":2}\n{\"c\"")
            .unwrap();
        let mut received = Vec::new();
        assert_eq!(read_request(&server, &mut received).unwrap(), b"{\"a\":1}");
        assert_eq!(read_request(&server, &mut received).unwrap(), b"{\"b\":2}");
        // An over-long line is refused without waiting for its end.
        let (client, server) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = (&client).write_all(&vec![b'x'; MAX_REQUEST + 10]);
            client
        });
        let mut received = Vec::new();
        assert!(matches!(
            read_request(&server, &mut received),
            Err(ReadEnd::TooLong)
        ));
        drop(server);
        drop(writer.join().unwrap());
        // A closed connection ends the loop.
        let (client, server) = UnixStream::pair().unwrap();
        drop(client);
        assert!(matches!(
            read_request(&server, &mut Vec::new()),
            Err(ReadEnd::Closed)
        ));
    }

    #[test]
    fn refusals_name_the_command_and_who_may() {
        let request = Request::LinkDel { name: "x".into() };
        assert_eq!(
            permission_denied(&request, None),
            "permission denied: `link del` needs root"
        );
        let group = SocketGroup {
            name: "vxtap".into(),
            gid: 990,
        };
        assert_eq!(
            permission_denied(&request, Some(&group)),
            "permission denied: `link del` needs root or group vxtap"
        );
    }
}

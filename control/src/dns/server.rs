//! [`Resolver`]: the sockets and threads that serve one overlay namespace's DNS.
//!
//! The listening UDP socket and TCP listener are made inside the overlay namespace (on a
//! helper thread, [`vxtap_dataplane::io::netns::run_in`]); everything else, forwarding
//! sockets included, belongs to the caller's namespace. Threads:
//!
//! - one UDP thread: reads queries, answers what [`decide`] answers on the spot, and hands
//!   each forward to a thread of its own;
//! - one forwarding thread per query being forwarded, at most [`MAX_PENDING_FORWARDS`] over
//!   UDP and TCP together; past that a query gets SERVFAIL at once (counted `overloaded`);
//! - one TCP accept thread, and one thread per TCP connection, at most
//!   [`MAX_TCP_CONNECTIONS`]; a connection past that is closed at once (`tcp_refused`). A
//!   connection may stay silent [`TCP_IDLE_TIMEOUT`] between messages, must send each
//!   message within [`TCP_MESSAGE_TIMEOUT`] of its first byte, and take each answer within
//!   [`TCP_WRITE_TIMEOUT`]; it is closed after a message that earns no answer.
//!
//! Every thread waits through `poll` on its socket and the resolver's stop eventfd, so
//! dropping the [`Resolver`] wakes them all; the drop returns once they have all ended,
//! and with them every socket.

use super::decide::{decide, Decision, Names};
use super::message::{self, Query, Rcode};
use super::upstream::{self, ForwardError, Transport};
use super::wait::{self, Stop, Waited};
use rustix::event::PollFlags;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vxtap_dataplane::io::IoError;

/// Most queries being forwarded at once, over UDP and TCP together.
pub const MAX_PENDING_FORWARDS: usize = 64;
/// Most TCP connections served at once.
pub const MAX_TCP_CONNECTIONS: usize = 16;
/// How long a TCP connection may stay silent between messages.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TCP message may take to arrive, from its first byte.
pub const TCP_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TCP client may take to accept an answer.
pub const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the UDP and accept loops rest after a failure (out of fds, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
/// The longest a drop waits for forwarding and connection threads; they see the stop
/// signal at once, so this only bounds a bug.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Where the resolver listens, where it forwards to, and the TTL of its own answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// UDP and TCP address inside the overlay namespace (169.254.53.53:53).
    pub listen: SocketAddrV4,
    /// The host's resolvers, tried in order (see [`super::upstreams_from_resolv_conf`]).
    /// Reached from the caller's namespace.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of the records the resolver answers itself.
    pub ttl: u32,
}

/// What the resolver has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolverStats {
    /// Messages received, over UDP and TCP.
    pub queries: u64,
    /// Answered from [`Names`] (addresses, NODATA, PTR).
    pub answered: u64,
    /// Answered with an error code of the resolver's own: FORMERR, NOTIMP, or SERVFAIL for
    /// a name from [`Names`] that is not a name.
    pub errors: u64,
    /// Forwarded, and an upstream's answer relayed.
    pub forwarded: u64,
    /// Forwarded, no upstream answered in time: SERVFAIL sent.
    pub upstream_failures: u64,
    /// Not forwarded because [`MAX_PENDING_FORWARDS`] were pending (or no thread could be
    /// started): SERVFAIL sent.
    pub overloaded: u64,
    /// Dropped without an answer: shorter than a header, or a response.
    pub malformed: u64,
    /// TCP connections closed at once because [`MAX_TCP_CONNECTIONS`] were open.
    pub tcp_refused: u64,
    /// UDP answers the kernel would not send.
    pub send_failures: u64,
}

/// Why the resolver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// The namespace could not be opened or entered.
    #[error(transparent)]
    Netns(IoError),
    /// A listening socket could not be made.
    #[error("binding DNS {protocol} {addr} in network namespace {}", netns.display())]
    Bind {
        /// `"UDP"` or `"TCP"`.
        protocol: &'static str,
        /// The address.
        addr: SocketAddrV4,
        /// The namespace.
        netns: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// The stop eventfd could not be made, or a socket not made non-blocking.
    #[error("setting up the DNS resolver for {addr}")]
    Setup {
        /// The address it would have served.
        addr: SocketAddrV4,
        /// What the kernel said.
        source: io::Error,
    },
    /// A thread could not be started.
    #[error("starting the DNS resolver's {role} thread")]
    Thread {
        /// Which thread.
        role: &'static str,
        /// Why.
        source: io::Error,
    },
}

#[derive(Debug, Default)]
struct Counters {
    queries: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    forwarded: AtomicU64,
    upstream_failures: AtomicU64,
    overloaded: AtomicU64,
    malformed: AtomicU64,
    tcp_refused: AtomicU64,
    send_failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A count of running threads of one kind, with a cap, that a drop can wait to reach zero.
#[derive(Debug)]
struct Gate {
    limit: usize,
    active: Mutex<usize>,
    idle: Condvar,
}

/// One place taken in a [`Gate`], given back on drop.
struct Pass(Arc<Gate>);

impl Gate {
    fn new(limit: usize) -> Arc<Gate> {
        Arc::new(Gate {
            limit,
            active: Mutex::new(0),
            idle: Condvar::new(),
        })
    }

    fn enter(self: &Arc<Self>) -> Option<Pass> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if *active >= self.limit {
            return None;
        }
        *active += 1;
        Some(Pass(self.clone()))
    }

    /// Waits until nobody holds a pass, or `limit` passes; whether idle.
    fn wait_idle(&self, limit: Duration) -> bool {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let (active, _) = self
            .idle
            .wait_timeout_while(active, limit, |active| *active > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *active == 0
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut active = self.0.active.lock().unwrap_or_else(PoisonError::into_inner);
        *active -= 1;
        if *active == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// What every thread of one resolver shares.
struct Shared {
    config: ResolverConfig,
    names: Arc<dyn Names>,
    udp: UdpSocket,
    stop: Stop,
    counters: Counters,
    forwards: Arc<Gate>,
    connections: Arc<Gate>,
}

/// A DNS resolver serving one overlay namespace; see the module docs. Dropping it stops
/// every thread and closes every socket before the drop returns.
pub struct Resolver {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Binds `config.listen` (UDP and TCP) inside the network namespace `netns` (a path
    /// like /run/netns/x or /proc/PID/ns/net) and starts serving; forwarding sockets stay
    /// in the caller's namespace.
    ///
    /// # Errors
    ///
    /// `Netns` if the namespace cannot be entered, `Bind` if the address is taken or not
    /// there, `Setup` or `Thread` if the kernel refuses an eventfd or a thread.
    pub fn start(
        netns: &Path,
        config: ResolverConfig,
        names: Arc<dyn Names>,
    ) -> Result<Resolver, ResolverError> {
        let addr = config.listen;
        let bind_error = |protocol| {
            move |source| ResolverError::Bind {
                protocol,
                addr,
                netns: netns.to_owned(),
                source,
            }
        };
        let (udp, tcp) = vxtap_dataplane::io::netns::run_in(netns, || {
            let udp = UdpSocket::bind(addr).map_err(bind_error("UDP"))?;
            let tcp = TcpListener::bind(addr).map_err(bind_error("TCP"))?;
            Ok((udp, tcp))
        })
        .map_err(ResolverError::Netns)??;
        let setup = |source| ResolverError::Setup { addr, source };
        udp.set_nonblocking(true).map_err(setup)?;
        tcp.set_nonblocking(true).map_err(setup)?;
        let stop = Stop::new().map_err(setup)?;
        let mut resolver = Resolver {
            shared: Arc::new(Shared {
                config,
                names,
                udp,
                stop,
                counters: Counters::default(),
                forwards: Gate::new(MAX_PENDING_FORWARDS),
                connections: Gate::new(MAX_TCP_CONNECTIONS),
            }),
            threads: Vec::new(),
        };
        // From here on a failure drops `resolver`, which stops what has started.
        let shared = resolver.shared.clone();
        resolver
            .threads
            .push(spawn("vxtap-dns-udp", move || serve_udp(&shared))?);
        let shared = resolver.shared.clone();
        resolver
            .threads
            .push(spawn("vxtap-dns-tcp", move || serve_tcp(&shared, &tcp))?);
        Ok(resolver)
    }

    /// The counters so far.
    pub fn stats(&self) -> ResolverStats {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ResolverStats {
            queries: get(&c.queries),
            answered: get(&c.answered),
            errors: get(&c.errors),
            forwarded: get(&c.forwarded),
            upstream_failures: get(&c.upstream_failures),
            overloaded: get(&c.overloaded),
            malformed: get(&c.malformed),
            tcp_refused: get(&c.tcp_refused),
            send_failures: get(&c.send_failures),
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.shared.stop.signal();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a DNS resolver thread panicked");
            }
        }
        for (gate, what) in [
            (&self.shared.forwards, "forwarding"),
            (&self.shared.connections, "TCP connection"),
        ] {
            if !gate.wait_idle(SHUTDOWN_WAIT) {
                tracing::error!(listen = %self.shared.config.listen, "DNS {what} threads still running after the stop");
            }
        }
    }
}

fn spawn(
    role: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, ResolverError> {
    std::thread::Builder::new()
        .name(role.to_owned())
        .spawn(f)
        .map_err(|source| ResolverError::Thread { role, source })
}

/// The UDP thread: every datagram decided, answered or handed to a forwarding thread.
fn serve_udp(shared: &Arc<Shared>) {
    let mut buf = vec![0u8; message::TCP_LIMIT];
    // The flag too, not only the eventfd: a flood never lets `recv_from` block.
    while !shared.stop.is_set() {
        match shared.udp.recv_from(&mut buf) {
            Ok((n, from)) => udp_query(shared, &buf[..n], from),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match wait::wait(&shared.udp, PollFlags::IN, None, &shared.stop) {
                    Ok(Waited::Ready | Waited::TimedOut) => {}
                    Ok(Waited::Stopped) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "waiting for DNS queries");
                        if shared.stop.sleep(ACCEPT_BACKOFF) {
                            return;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Not ICMP errors (an unconnected socket without IP_RECVERR gets none): the
            // kernel short of memory, say. Rest instead of spinning on it.
            Err(e) => {
                tracing::warn!(error = %e, "receiving a DNS query");
                if shared.stop.sleep(ACCEPT_BACKOFF) {
                    return;
                }
            }
        }
    }
}

fn client_ip(addr: SocketAddr) -> Ipv4Addr {
    match addr.ip() {
        IpAddr::V4(ip) => ip,
        // The sockets are IPv4: only a mapped address could appear.
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

fn udp_query(shared: &Arc<Shared>, bytes: &[u8], from: SocketAddr) {
    let c = &shared.counters;
    bump(&c.queries);
    let decision = decide(
        bytes,
        &*shared.names,
        client_ip(from),
        shared.config.ttl,
        message::UDP_LIMIT,
    );
    match decision {
        Decision::Answer(reply) => {
            bump(&c.answered);
            send_udp(shared, &reply, from);
        }
        Decision::Error(_, reply) => {
            bump(&c.errors);
            send_udp(shared, &reply, from);
        }
        Decision::Drop(_) => bump(&c.malformed),
        Decision::Forward(query) => {
            let Some(pass) = shared.forwards.enter() else {
                bump(&c.overloaded);
                send_udp(shared, &message::error(&query, Rcode::ServFail), from);
                return;
            };
            let bytes = bytes.to_vec();
            let thread = {
                let shared = shared.clone();
                let query = query.clone();
                std::thread::Builder::new()
                    .name("vxtap-dns-fwd".to_owned())
                    .spawn(move || {
                        if let Some(reply) = forward(&shared, &bytes, &query, Transport::Udp) {
                            send_udp(&shared, &reply, from);
                        }
                        // The pass last: once it is back, a drop may take the sockets
                        // to be closed.
                        drop(shared);
                        drop(pass);
                    })
            };
            if let Err(e) = thread {
                tracing::warn!(error = %e, "no thread to forward a DNS query");
                bump(&c.overloaded);
                send_udp(shared, &message::error(&query, Rcode::ServFail), from);
            }
        }
    }
}

/// Forwards `query` and counts how it went: the reply to send (the upstream's answer or
/// SERVFAIL), or `None` when the resolver is stopping.
fn forward(shared: &Shared, bytes: &[u8], query: &Query, transport: Transport) -> Option<Vec<u8>> {
    let upstreams = &shared.config.upstreams;
    match upstream::forward(bytes, query, upstreams, transport, &shared.stop) {
        Ok(reply) => {
            bump(&shared.counters.forwarded);
            Some(reply)
        }
        Err(ForwardError::NoAnswer) => {
            bump(&shared.counters.upstream_failures);
            Some(message::error(query, Rcode::ServFail))
        }
        Err(ForwardError::Stopped) => None,
    }
}

fn send_udp(shared: &Shared, reply: &[u8], to: SocketAddr) {
    // Non-blocking: a full send buffer loses this answer (counted), never stalls the rest.
    if let Err(e) = shared.udp.send_to(reply, to) {
        bump(&shared.counters.send_failures);
        tracing::debug!(error = %e, %to, "sending a DNS answer");
    }
}

/// The TCP accept thread.
fn serve_tcp(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stop.is_set() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let Some(pass) = shared.connections.enter() else {
                    bump(&shared.counters.tcp_refused);
                    continue;
                };
                let thread = {
                    let shared = shared.clone();
                    std::thread::Builder::new()
                        .name("vxtap-dns-conn".to_owned())
                        .spawn(move || {
                            serve_connection(&shared, &stream, client_ip(peer));
                            // The pass last, as for a forward.
                            drop(stream);
                            drop(shared);
                            drop(pass);
                        })
                };
                if let Err(e) = thread {
                    tracing::warn!(error = %e, "no thread for a DNS TCP connection");
                    bump(&shared.counters.tcp_refused);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match wait::wait(listener, PollFlags::IN, None, &shared.stop) {
                    Ok(Waited::Ready | Waited::TimedOut) => {}
                    Ok(Waited::Stopped) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "waiting for DNS TCP connections");
                        if shared.stop.sleep(ACCEPT_BACKOFF) {
                            return;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of fds, typically: the connection stays queued, so rest instead of
                // spinning on it.
                tracing::warn!(error = %e, "accepting a DNS TCP connection");
                if shared.stop.sleep(ACCEPT_BACKOFF) {
                    return;
                }
            }
        }
    }
}

/// One TCP connection: messages answered in turn until the client closes, stays silent,
/// sends something unanswerable or the resolver stops.
fn serve_connection(shared: &Shared, stream: &TcpStream, client: Ipv4Addr) {
    let c = &shared.counters;
    if let Err(e) = stream.set_nonblocking(true) {
        tracing::debug!(error = %e, "a DNS TCP connection");
        return;
    }
    loop {
        let idle = Instant::now() + TCP_IDLE_TIMEOUT;
        let bytes = match wait::read_frame(stream, idle, TCP_MESSAGE_TIMEOUT, &shared.stop) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, %client, "reading a DNS TCP message");
                return;
            }
        };
        bump(&c.queries);
        let reply = match decide(
            &bytes,
            &*shared.names,
            client,
            shared.config.ttl,
            message::TCP_LIMIT,
        ) {
            Decision::Answer(reply) => {
                bump(&c.answered);
                reply
            }
            Decision::Error(_, reply) => {
                bump(&c.errors);
                reply
            }
            Decision::Drop(_) => {
                bump(&c.malformed);
                return;
            }
            Decision::Forward(query) => match shared.forwards.enter() {
                Some(_pass) => match forward(shared, &bytes, &query, Transport::Tcp) {
                    Some(reply) => reply,
                    None => return,
                },
                None => {
                    bump(&c.overloaded);
                    message::error(&query, Rcode::ServFail)
                }
            },
        };
        let deadline = Instant::now() + TCP_WRITE_TIMEOUT;
        if let Err(e) = wait::write_frame(stream, &reply, deadline, &shared.stop) {
            tracing::debug!(error = %e, %client, "writing a DNS TCP answer");
            return;
        }
    }
}

//! The overlay DNS resolver (`vxtap::dns::Resolver`) for real: its sockets in an "overlay"
//! namespace on 169.254.53.53:53, its forwarding sockets in a "host" namespace (the one the
//! test starts it from, as the daemon would), and fake upstream servers on that host's
//! loopback: one that answers every query with 192.0.2.1 over UDP and TCP, one that never
//! answers, and an address where nothing listens.
//!
//! - names the store owns: A, NODATA for AAAA, PTR, the client's address handed to `Names`,
//!   and an answer too long for UDP cut with TC over UDP and whole over TCP;
//! - other names forwarded over UDP and TCP and the upstream's answer relayed with the
//!   client's ID; upstreams tried in order past one that refuses and one that never answers;
//!   SERVFAIL when none answers;
//! - junk dropped and counted, FORMERR for a query that does not read;
//! - a drop that returns at once with a forward pending and a TCP client connected, closes
//!   both and frees the address; start-up errors that say what failed.
//!
//! Needs root (it creates namespaces); every test fails loudly without it. Each test has its
//! own namespaces; nothing is sent outside them. The only time bounds are generous liveness
//! bounds, and one drop that must not wait out the upstream timeouts.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vxtap::dns::message::{self, Response, TYPE_A, TYPE_AAAA, TYPE_PTR};
use vxtap::dns::{
    Names, Resolver, ResolverConfig, ResolverError, FORWARD_DEADLINE, RESOLVER_ADDR,
    UPSTREAM_TIMEOUT,
};
use vxtap_suite::harness::netns::unique_prefix;
use vxtap_suite::harness::Netns;
use vxtap_suite::harness::NetnsExt;

/// The client container's address, on the overlay namespace's `lo`.
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
/// What the answering upstream says for every name.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The answering upstream, on the host namespace's loopback.
const GOOD: &str = "127.0.0.1:53";
/// An upstream that reads queries and never answers.
const SILENT: &str = "127.0.0.2:53";
/// An address where nothing listens: the kernel refuses at once.
const DOWN: &str = "127.0.0.3:53";
/// Liveness bound for any one answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a test address")
}

/// The store's names: `web` and its reverse, and `many` (60 addresses, too many for 512
/// bytes). Remembers every lookup with its client.
#[derive(Default)]
struct Store {
    lookups: Mutex<Vec<(Ipv4Addr, String)>>,
}

impl Names for Store {
    fn lookup(&self, client: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>> {
        self.lookups.lock().unwrap().push((client, name.to_owned()));
        match name {
            "web" | "web.mynet" => Some(vec![Ipv4Addr::new(10, 0, 0, 2)]),
            "many" => Some((0..60).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect()),
            _ => None,
        }
    }

    fn reverse(&self, client: Ipv4Addr, ip: Ipv4Addr) -> Option<String> {
        self.lookups.lock().unwrap().push((client, ip.to_string()));
        (ip == Ipv4Addr::new(10, 0, 0, 2)).then(|| "web.mynet".to_owned())
    }
}

/// A query as glibc sends it: RD, one question, class IN.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("a short label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// The answering upstream's reply to `query` (which has nothing after its question), built
/// by hand: QR and RA set, one A record for the question name.
fn upstream_reply(query: &[u8]) -> Vec<u8> {
    let mut reply = query.to_vec();
    reply[2] |= 0x80;
    reply[3] |= 0x80;
    reply[6..8].copy_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
    reply.extend_from_slice(&UPSTREAM_ANSWER.octets());
    reply
}

/// Every query a fake upstream received: which upstream, the bytes.
type Seen = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// Fake upstream servers in the host namespace: `GOOD` over UDP and TCP, `SILENT` over UDP.
struct Upstreams {
    stop: Arc<AtomicBool>,
    seen: Seen,
    threads: Vec<JoinHandle<()>>,
}

impl Upstreams {
    fn start(host: &Netns) -> Upstreams {
        let (good, silent, tcp) = host.run_in(|| {
            (
                UdpSocket::bind(GOOD).expect("binding the fake upstream"),
                UdpSocket::bind(SILENT).expect("binding the silent upstream"),
                TcpListener::bind(GOOD).expect("binding the fake TCP upstream"),
            )
        });
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Seen = Arc::default();
        let mut threads = Vec::new();
        for (socket, answers) in [(good, true), (silent, false)] {
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let (stop, seen) = (stop.clone(), seen.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                let me = socket.local_addr().unwrap();
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    seen.lock().unwrap().push((me, buf[..n].to_vec()));
                    if answers {
                        socket.send_to(&upstream_reply(&buf[..n]), from).unwrap();
                    }
                }
            }));
        }
        tcp.set_nonblocking(true).unwrap();
        let (stop2, seen2) = (stop.clone(), seen.clone());
        threads.push(std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(ANSWER_LIMIT)).unwrap();
                let query = read_frame(&mut stream);
                seen2.lock().unwrap().push((addr(GOOD), query.clone()));
                write_frame(&mut stream, &upstream_reply(&query));
            }
        }));
        Upstreams {
            stop,
            seen,
            threads,
        }
    }

    /// The queries `upstream` received.
    fn seen_by(&self, upstream: &str) -> Vec<Vec<u8>> {
        let upstream = addr(upstream);
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(to, _)| *to == upstream)
            .map(|(_, q)| q.clone())
            .collect()
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).expect("a TCP message length");
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).expect("a TCP message");
    message
}

fn write_frame(stream: &mut TcpStream, message: &[u8]) {
    let mut framed = u16::try_from(message.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed).expect("writing a TCP message");
}

/// A host namespace with the fake upstreams, and an overlay namespace with the resolver's
/// address and the client's on its `lo`.
struct Setup {
    upstreams: Upstreams,
    overlay: Netns,
    host: Netns,
}

impl Setup {
    fn new() -> Setup {
        let prefix = unique_prefix();
        let host = Netns::new(&prefix, "host");
        let overlay = Netns::new(&prefix, "ov");
        overlay.ip(&[
            "addr",
            "add",
            &format!("{}/32", RESOLVER_ADDR.ip()),
            "dev",
            "lo",
        ]);
        overlay.ip(&["addr", "add", &format!("{CLIENT}/32"), "dev", "lo"]);
        let upstreams = Upstreams::start(&host);
        Setup {
            upstreams,
            overlay,
            host,
        }
    }

    /// Starts a resolver in the overlay namespace from the host namespace.
    fn try_resolver(
        &self,
        upstreams: &[&str],
        names: Arc<dyn Names>,
    ) -> Result<Resolver, ResolverError> {
        let config = ResolverConfig {
            listen: RESOLVER_ADDR,
            upstreams: upstreams.iter().map(|u| addr(u)).collect(),
            ttl: 600,
        };
        let path = self.overlay.path().to_owned();
        self.host
            .run_in(move || Resolver::start(&path, config, names))
    }

    fn resolver(&self, upstreams: &[&str], names: Arc<dyn Names>) -> Resolver {
        self.try_resolver(upstreams, names)
            .unwrap_or_else(|e| panic!("starting the resolver: {e}"))
    }

    /// A UDP socket of the client container.
    fn client(&self) -> UdpSocket {
        let socket = self
            .overlay
            .run_in(|| UdpSocket::bind((CLIENT, 0)).expect("binding the client"));
        socket.set_read_timeout(Some(ANSWER_LIMIT)).unwrap();
        socket
    }

    /// A TCP connection of the client container to the resolver.
    fn tcp_client(&self) -> TcpStream {
        let stream = self.overlay.run_in(|| {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
            .expect("a TCP socket");
            socket
                .bind(&SocketAddr::from((CLIENT, 0)).into())
                .expect("binding the TCP client");
            socket
                .connect(&SocketAddr::from(RESOLVER_ADDR).into())
                .expect("connecting to the resolver over TCP");
            TcpStream::from(socket)
        });
        stream.set_read_timeout(Some(ANSWER_LIMIT)).unwrap();
        stream
    }

    /// Sends `bytes` over UDP from a fresh client socket and returns the answer.
    fn ask(&self, bytes: &[u8]) -> Vec<u8> {
        ask_on(&self.client(), bytes)
    }

    /// Sends `bytes` over a fresh TCP connection and returns the answer.
    fn ask_tcp(&self, bytes: &[u8]) -> Vec<u8> {
        let mut stream = self.tcp_client();
        write_frame(&mut stream, bytes);
        read_frame(&mut stream)
    }
}

fn ask_on(socket: &UdpSocket, bytes: &[u8]) -> Vec<u8> {
    socket
        .send_to(bytes, RESOLVER_ADDR)
        .expect("sending a query");
    let mut buf = vec![0u8; 65_535];
    let n = socket.recv(&mut buf).expect("an answer within the limit");
    buf.truncate(n);
    buf
}

fn response(bytes: &[u8]) -> Response {
    message::parse_response(bytes).unwrap_or_else(|e| panic!("not a response ({e}): {bytes:?}"))
}

fn addresses(r: &Response) -> Vec<Ipv4Addr> {
    r.answers
        .iter()
        .filter(|a| a.rtype == TYPE_A)
        .map(|a| Ipv4Addr::new(a.data[0], a.data[1], a.data[2], a.data[3]))
        .collect()
}

#[test]
fn owned_names_are_answered_over_udp_and_tcp() {
    let setup = Setup::new();
    let store = Arc::new(Store::default());
    let resolver = setup.resolver(&[GOOD], store.clone());

    let r = response(&setup.ask(&query(0x1111, "WEB", TYPE_A)));
    assert_eq!(r.header.id, 0x1111);
    assert_eq!(r.header.rcode(), 0);
    assert!(r.header.authoritative() && r.header.recursion_available());
    assert_eq!(addresses(&r), [Ipv4Addr::new(10, 0, 0, 2)]);
    assert_eq!(r.answers[0].ttl, 600);
    assert_eq!(
        store.lookups.lock().unwrap()[0],
        (CLIENT, "web".to_owned()),
        "Names saw the client's address and the name in lowercase"
    );

    let r = response(&setup.ask(&query(0x1112, "web", TYPE_AAAA)));
    assert_eq!((r.header.rcode(), r.answers.len()), (0, 0), "NODATA");

    let r = response(&setup.ask(&query(0x1113, "2.0.0.10.in-addr.arpa", TYPE_PTR)));
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].rtype, TYPE_PTR);
    assert_eq!(r.answers[0].data, b"\x03web\x05mynet\x00");

    // 60 addresses do not fit 512 bytes: cut with TC over UDP, whole over TCP.
    let udp = setup.ask(&query(0x1114, "many", TYPE_A));
    assert!(udp.len() <= 512);
    let r = response(&udp);
    assert!(r.header.truncated());
    assert!(addresses(&r).len() < 60);
    let r = response(&setup.ask_tcp(&query(0x1115, "many", TYPE_A)));
    assert_eq!(r.header.id, 0x1115);
    assert!(!r.header.truncated());
    let expected: Vec<_> = (0..60).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect();
    assert_eq!(addresses(&r), expected);

    // Two queries on one TCP connection.
    let mut stream = setup.tcp_client();
    for id in [0x2001, 0x2002] {
        write_frame(&mut stream, &query(id, "web.mynet", TYPE_A));
        let r = response(&read_frame(&mut stream));
        assert_eq!(
            (r.header.id, addresses(&r)),
            (id, vec![Ipv4Addr::new(10, 0, 0, 2)])
        );
    }

    let stats = resolver.stats();
    assert_eq!((stats.queries, stats.answered), (7, 7), "{stats:?}");
    assert_eq!(stats.forwarded, 0);
    assert!(
        setup.upstreams.seen_by(GOOD).is_empty(),
        "an owned name went upstream"
    );
}

#[test]
fn other_names_are_forwarded_with_the_clients_id() {
    let setup = Setup::new();
    let resolver = setup.resolver(&[GOOD], Arc::new(Store::default()));

    let sent = query(0xbeef, "Example.COM", TYPE_A);
    let answer = setup.ask(&sent);
    let r = response(&answer);
    assert_eq!(r.header.id, 0xbeef);
    assert_eq!(addresses(&r), [UPSTREAM_ANSWER]);
    // The upstream got the query as sent, case included, under an ID of the resolver's.
    let seen = setup.upstreams.seen_by(GOOD);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0][2..], sent[2..]);
    // The answer is the upstream's, byte for byte, with the client's ID.
    let upstream = upstream_reply(&seen[0]);
    assert_eq!(answer[2..], upstream[2..]);

    // A reverse name the store does not own goes upstream too.
    let r = response(&setup.ask(&query(0xbef0, "3.0.0.10.in-addr.arpa", TYPE_PTR)));
    assert_eq!(r.header.id, 0xbef0);

    let r = response(&setup.ask_tcp(&query(0xcafe, "example.org", TYPE_A)));
    assert_eq!(r.header.id, 0xcafe);
    assert_eq!(addresses(&r), [UPSTREAM_ANSWER]);
    assert_eq!(setup.upstreams.seen_by(GOOD).len(), 3);

    let stats = resolver.stats();
    assert_eq!((stats.queries, stats.forwarded), (3, 3), "{stats:?}");
    assert_eq!(stats.upstream_failures, 0);
}

#[test]
fn upstreams_are_tried_in_order_and_servfail_ends_it() {
    let setup = Setup::new();
    // Refused at once, then silent for UPSTREAM_TIMEOUT, then an answer.
    let resolver = setup.resolver(&[DOWN, SILENT, GOOD], Arc::new(Store::default()));
    let r = response(&setup.ask(&query(0x3001, "example.net", TYPE_A)));
    assert_eq!((r.header.id, r.header.rcode()), (0x3001, 0));
    assert_eq!(addresses(&r), [UPSTREAM_ANSWER]);
    assert_eq!(setup.upstreams.seen_by(SILENT).len(), 1);
    assert_eq!(setup.upstreams.seen_by(GOOD).len(), 1);
    assert_eq!(resolver.stats().forwarded, 1);
    drop(resolver);

    // None answers: SERVFAIL, over UDP and TCP, within the forward deadline and a margin.
    let resolver = setup.resolver(&[DOWN, SILENT], Arc::new(Store::default()));
    let started = Instant::now();
    let r = response(&setup.ask(&query(0x3002, "example.net", TYPE_A)));
    assert_eq!((r.header.id, r.header.rcode()), (0x3002, 2));
    assert_eq!(
        r.question.expect("SERVFAIL echoes the question").name,
        "example.net"
    );
    let r = response(&setup.ask_tcp(&query(0x3003, "example.net", TYPE_A)));
    assert_eq!((r.header.id, r.header.rcode()), (0x3003, 2));
    assert!(
        started.elapsed() < 2 * FORWARD_DEADLINE + ANSWER_LIMIT,
        "SERVFAIL took {:?}",
        started.elapsed()
    );
    let stats = resolver.stats();
    assert_eq!(
        (stats.upstream_failures, stats.forwarded),
        (2, 0),
        "{stats:?}"
    );
    drop(resolver);

    // Only a refusing upstream: SERVFAIL without waiting out any timeout.
    let resolver = setup.resolver(&[DOWN], Arc::new(Store::default()));
    let r = response(&setup.ask(&query(0x3004, "example.net", TYPE_A)));
    assert_eq!(r.header.rcode(), 2);
    assert_eq!(resolver.stats().upstream_failures, 1);
}

#[test]
fn junk_is_dropped_and_counted() {
    let setup = Setup::new();
    let resolver = setup.resolver(&[GOOD], Arc::new(Store::default()));
    let client = setup.client();
    // Too short for a header, and a response (QR set) sent as a query: no answer.
    client.send_to(b"\x12\x34\x01", RESOLVER_ADDR).unwrap();
    let mut response_as_query = upstream_reply(&query(0x4001, "web", TYPE_A));
    response_as_query[3] = 0x80;
    client.send_to(&response_as_query, RESOLVER_ADDR).unwrap();
    // A query that does not read (two questions): FORMERR.
    let mut two = query(0x4002, "web", TYPE_A);
    two[5] = 2;
    let r = response(&ask_on(&client, &two));
    assert_eq!((r.header.id, r.header.rcode()), (0x4002, 1));
    // The next answer on the socket is the next query's: the junk got none.
    let r = response(&ask_on(&client, &query(0x4003, "web", TYPE_A)));
    assert_eq!(r.header.id, 0x4003);
    // Junk over TCP: dropped, and the connection closed.
    let mut stream = setup.tcp_client();
    write_frame(&mut stream, b"\x00\x01");
    let mut rest = Vec::new();
    assert_eq!(
        stream.read_to_end(&mut rest).expect("a closed connection"),
        0
    );

    let stats = resolver.stats();
    assert_eq!(stats.queries, 5, "{stats:?}");
    assert_eq!(stats.malformed, 3, "{stats:?}");
    assert_eq!((stats.errors, stats.answered), (1, 1), "{stats:?}");
    assert!(setup.upstreams.seen_by(GOOD).is_empty());
}

#[test]
fn drop_stops_at_once_and_frees_the_address() {
    let setup = Setup::new();
    // Every forward waits out the silent upstream three times, up to the forward deadline.
    let resolver = setup.resolver(&[SILENT, SILENT, SILENT], Arc::new(Store::default()));
    let client = setup.client();
    client
        .send_to(&query(0x5001, "example.com", TYPE_A), RESOLVER_ADDR)
        .unwrap();
    let mut idle = setup.tcp_client();
    // Proof that the forward is under way and the connection accepted: the silent upstream
    // has the query, and a query on the connection is answered.
    assert!(vxtap_suite::harness::wait_until(ANSWER_LIMIT, || {
        !setup.upstreams.seen_by(SILENT).is_empty()
    }));
    write_frame(&mut idle, &query(0x5002, "web", TYPE_A));
    assert_eq!(response(&read_frame(&mut idle)).header.id, 0x5002);

    let started = Instant::now();
    drop(resolver);
    let took = started.elapsed();
    // Waiting for the forward or the idle connection would take UPSTREAM_TIMEOUT or more.
    assert!(took < UPSTREAM_TIMEOUT, "the drop took {took:?}");
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).expect("a closed connection"), 0);

    // The address is free for UDP and TCP, and for another resolver.
    setup.overlay.run_in(|| {
        UdpSocket::bind(RESOLVER_ADDR).expect("UDP 169.254.53.53:53 free again");
        TcpListener::bind(RESOLVER_ADDR).expect("TCP 169.254.53.53:53 free again");
    });
    let again = setup.resolver(&[GOOD], Arc::new(Store::default()));
    let r = response(&setup.ask(&query(0x5003, "web", TYPE_A)));
    assert_eq!(r.header.id, 0x5003);
    drop(again);
}

#[test]
fn start_up_errors_say_what_failed() {
    let setup = Setup::new();
    let first = setup.resolver(&[GOOD], Arc::new(Store::default()));
    match setup.try_resolver(&[GOOD], Arc::new(Store::default())) {
        Err(ResolverError::Bind { protocol, addr, .. }) => {
            assert_eq!((protocol, addr), ("UDP", RESOLVER_ADDR));
        }
        other => panic!("a second resolver on the same address: {other:?}"),
    }
    drop(first);
    // A namespace without the address.
    let path = setup.host.path().to_owned();
    let config = ResolverConfig {
        listen: RESOLVER_ADDR,
        upstreams: vec![],
        ttl: 1,
    };
    let err = Resolver::start(&path, config.clone(), Arc::new(Store::default())).unwrap_err();
    assert!(
        matches!(
            err,
            ResolverError::Bind {
                protocol: "UDP",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    // Not a namespace.
    let err = Resolver::start(
        std::path::Path::new("/proc/self/status"),
        config,
        Arc::new(Store::default()),
    )
    .unwrap_err();
    assert!(matches!(err, ResolverError::Netns(_)), "{err:?}");
}
